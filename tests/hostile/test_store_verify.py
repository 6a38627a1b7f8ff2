"""`mangacolor store verify` stays in the store (issue 22, item 5): whatever a store folder holds, every
finding is one line, the exit code is 1, and nothing outside the store is opened.

Each test writes a real version through the store, then tampers with it as a hostile or careless
user could: manifest paths out of the folder, symlinks to devices, malformed metadata, a LATEST that
is a folder or not text, stray folders.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mangacolor.cli import main as cli_main
from mangacolor.io.store import FILES_KEY, LATEST, MANIFEST, Store, verify

from .conftest import sha256_tree


def _store(tmp_path: Path) -> tuple[Store, Path]:
    store = Store(tmp_path / "store")
    with store.begin("pages", "demo") as w:
        for i in range(2):
            w.add({"id": f"demo/{i}", "path": w.write(f"p/{i}.png", f"page {i}".encode()), "status": "ok"})
        _, vdir, _ = w.commit()
    return store, Path(vdir)


def _rewrite_manifest(vdir: Path, paths: list | None = None, files_meta: bytes | None = None) -> None:
    table = pq.read_table(vdir / MANIFEST)
    if paths is not None:
        table = table.set_column(table.column_names.index("path"), "path", pa.array(paths, pa.string()))
    meta = dict(table.schema.metadata or {})
    if files_meta is not None:
        meta[FILES_KEY] = files_meta
    pq.write_table(table.replace_schema_metadata(meta), vdir / MANIFEST)


def _verify(root: Path, capsys) -> tuple[int, list[str]]:
    code = cli_main(["store", "verify", "--root", str(root)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    bad = [line for line in out.splitlines() if line.startswith("BAD ")]
    assert len(out.splitlines()) == len(bad) + 1  # one line per finding and the summary
    return code, bad


def _outside_store(opened: list[str], root: Path) -> list[str]:
    tmp = root.parent
    return [p for p in opened if p.startswith(str(tmp)) and not p.startswith(str(root))] + \
           [p for p in opened if p.startswith(("/etc", "/dev"))]


def test_a_manifest_path_out_of_the_version_folder_is_tampered_and_not_read(tmp_path, capsys, opened):
    """Before: `../../../../etc/hostname` was read and passed as present (a row path: existence only)."""
    store, vdir = _store(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the store's")
    depth = len(vdir.relative_to(tmp_path).parts)
    _rewrite_manifest(vdir, paths=["../" * depth + "secret.txt", "../../../../etc/hostname"],
                      files_meta=json.dumps({"/etc/hostname": "0" * 64}).encode())
    opened.clear()
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1
    assert len(bad) == 3 and all("tampered" in line and "outside the version folder" in line for line in bad)
    assert _outside_store(opened, tmp_path / "store") == []


def test_a_file_symlinked_to_a_device_is_not_followed(tmp_path, capsys, opened):
    """Before: a file swapped for a symlink to /dev/zero was read until MemoryError."""
    store, vdir = _store(tmp_path)
    (vdir / "p" / "0.png").unlink()
    (vdir / "p" / "0.png").symlink_to("/dev/zero")
    (vdir / "p" / "sub").symlink_to(tmp_path)  # a folder link too: p/sub/... would lead out
    _rewrite_manifest(vdir, paths=["p/0.png", "p/sub/secret"])
    opened.clear()
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and len(bad) == 2
    assert all("tampered" in line and "symlink" in line for line in bad)
    assert _outside_store(opened, tmp_path / "store") == []


@pytest.mark.parametrize("meta, what", [(b"{not json", "not JSON"), (b"5", "int"), (b'["a"]', "list"),
                                        (b'{"p/0.png": 5}', "dict"), (b"[" * 100_000, "not JSON")])
def test_malformed_file_lists_are_findings(tmp_path, capsys, meta, what):
    """Before: bad JSON raised JSONDecodeError, metadata `5` AttributeError, out of the command."""
    store, vdir = _store(tmp_path)
    _rewrite_manifest(vdir, files_meta=meta)
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and len(bad) == 1 and "malformed manifest" in bad[0] and what in bad[0]


def test_a_manifest_that_is_no_parquet_or_a_fifo_is_a_finding(tmp_path, capsys):
    store, vdir = _store(tmp_path)
    (vdir / MANIFEST).write_bytes(b"PAR1 but nothing more")
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and "unreadable manifest" in bad[0]
    (vdir / MANIFEST).unlink()
    os.mkfifo(vdir / MANIFEST)  # would block a reader that opens it
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and "not a regular file" in bad[0]


@pytest.mark.parametrize("latest", ["folder", "binary", "nonsense", "empty"])
def test_a_malformed_latest_is_a_finding(tmp_path, capsys, latest):
    """Before: a LATEST that is a folder raised IsADirectoryError, one not UTF-8 UnicodeDecodeError."""
    store, vdir = _store(tmp_path)
    pointer = vdir.parent / LATEST
    pointer.unlink()
    if latest == "folder":
        pointer.mkdir()
    else:
        pointer.write_bytes({"binary": b"\xff\xfe\x00garbage", "nonsense": b"../../etc", "empty": b""}[latest])
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and len(bad) == 1 and "LATEST" in bad[0]


@pytest.mark.parametrize("where", ["root", "asset", "partition"])
def test_stray_folders_with_spaces_are_findings(tmp_path, capsys, where):
    """Before: `my backup/` at the root or a partition folder with a space: ValueError or
    FileNotFoundError from the store's path checks, out of the command."""
    store, vdir = _store(tmp_path)
    parent = {"root": tmp_path / "store", "asset": vdir.parent.parent, "partition": vdir.parent}[where]
    (parent / "my backup").mkdir()
    (parent / "my backup" / "notes.txt").write_text("x")
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and len(bad) == 1 and "stray folder" in bad[0] and "my backup" in bad[0]


def test_a_name_with_a_newline_stays_on_one_line(tmp_path, capsys):
    store, vdir = _store(tmp_path)
    (vdir.parent / "evil\nBAD everything is fine").mkdir()
    code, bad = _verify(tmp_path / "store", capsys)
    assert code == 1 and len(bad) == 1 and "\\n" in bad[0]


def test_a_killed_commits_temporary_latest_is_swept_with_the_staging(tmp_path):
    """Before: `.tmp-…-LATEST` of a killed commit stayed for ever (only `.staging-` was swept)."""
    store, vdir = _store(tmp_path)
    partition = vdir.parent
    old = partition / ".tmp-0123456789abcdef0123456789abcdef-LATEST"
    fresh = partition / ".tmp-fedcba9876543210fedcba9876543210-LATEST"
    old.write_text("deadbeef")
    fresh.write_text("deadbeef")
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    with store.begin("pages", "demo"):
        pass
    assert not old.exists() and fresh.exists()  # a fresh one may be another writer's, mid-rename


PATHS = st.one_of(st.text(max_size=40), st.sampled_from(["..", "/etc/passwd", "p/../../x", "p//0.png", "./p/0.png",
                                                        "p/0.png\x00", "C:\\x", "p/0.png"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(paths=st.lists(st.one_of(st.none(), PATHS), min_size=2, max_size=2),
       meta=st.one_of(st.binary(max_size=60), st.dictionaries(PATHS, st.one_of(st.text(max_size=64), st.integers()),
                                                                  max_size=3).map(lambda d: json.dumps(d).encode())))
def test_any_manifest_is_checked_without_leaving_the_store(tmp_path_factory, paths, meta):
    root = tmp_path_factory.mktemp("verify")
    store, vdir = _store(root)
    before = sha256_tree(root / "store")
    _rewrite_manifest(vdir, paths=paths, files_meta=meta)
    checked, problems = verify(Store(root / "store"))
    assert checked == 1
    for p in problems:
        assert "\n" not in str(p)
        if "tampered" in p.what:
            assert "not read" in p.what or "not followed" in p.what
    after = sha256_tree(root / "store")
    assert {k: v for k, v in after.items() if k != str(vdir.relative_to(root / "store") / MANIFEST)} == \
           {k: v for k, v in before.items() if k != str(vdir.relative_to(root / "store") / MANIFEST)}
