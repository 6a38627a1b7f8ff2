"""What every hostile-input test checks besides the exit code and the message: the originals are
byte-identical afterwards (sha256), nothing outside the expected places was written, and nothing
outside them was opened (a Python audit hook sees every `open` of this process)."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

_RECORDERS: list[list[str]] = []
_GUARD = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _RECORDERS and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        with _GUARD:
            for rec in _RECORDERS:
                rec.append(path)


_installed = False


@pytest.fixture()
def opened():
    """Paths this process opens while the test runs (absolute where they were given absolute)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)  # audit hooks stay for the process: one, muted when no test records
        _installed = True
    paths: list[str] = []
    with _GUARD:
        _RECORDERS.append(paths)
    yield paths
    with _GUARD:
        _RECORDERS.remove(paths)


def sha256_tree(root: Path) -> dict[str, str]:
    """Every file under `root` (symlinks as their target text) with its sha256: what must not change."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file() and path.stat().st_size > 64 * 2**20:  # a sparse giant: hashing it would take minutes
                st = path.stat()
                out[rel] = f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def one_line(text: str) -> str:
    """The single non-empty line of `text` (what an error must be), failing the test otherwise."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """A random-init model bundle (the colorizer alone): what the CLI cases that need a model load."""
    from tests.eval.bundles import tiny_bundle

    return tiny_bundle(tmp_path_factory.mktemp("hostile-bundle"))
