"""The one atomic file writer of mangacolor: a reader (or a run killed mid-write) sees the old file or
the new one, never half of one.

The data goes to a uniquely named temporary file beside the target (so two writers of one file never
share it), which then replaces the target in one rename; `durable` also fsyncs the file and its
folder, for what must survive a power cut (the store's manifests and LATEST pointers).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # a temporary file's name starts so; one left behind is a killed writer's (the store sweeps them)


@contextmanager
def atomic_path(target: str | Path, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `target` to write to; it replaces `target` when the block ends without an
    error, and is removed when it raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(target.parent / temp_name(target))
    try:
        yield Path(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def temp_name(target: Path) -> str:
    """A unique temporary name beside `target` (created with the usual permissions: mkstemp's would be
    0600), `.tmp-<uuid>-NAME`, or `.tmp-<uuid>` where that would pass the file system's name limit (a
    255-byte page name is a valid target, its temporary name must be one too)."""
    name = f"{TMP_PREFIX}{uuid.uuid4().hex}-{target.name}"
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return name if len(os.fsencode(name)) <= limit else name[: len(TMP_PREFIX) + 32]


def write_atomic(target: str | Path, data: bytes, durable: bool = False) -> Path:
    """Write `data` to `target` atomically (see the module docstring); returns the target."""
    with atomic_path(target, durable) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so a rename inside it is on disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
