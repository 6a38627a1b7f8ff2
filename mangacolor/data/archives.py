"""Chapter archives (CBZ / ZIP) read safely: members are data, never paths.

A member name never reaches the filesystem; members with `..` or absolute paths, nested archives,
non-image members and members whose declared size is absurd are reported with a reason instead of
being read, so the ingest can quarantine them and go on with the rest of the chapter. A member
that cannot be read back (damaged compressed data, a bad CRC, a size in its headers that its data
does not have, an unsupported compression or encryption) is reported the same way: one bad
member never fails the chapter.

Members are read one at a time and inflated in pieces, the size counted as it grows
(`mangacolor.io.limits`): a member whose headers understate what it inflates to costs at most a
piece of memory before it is refused, and a chapter never has more than one member in memory.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mangacolor.io.limits import (MAX_ARCHIVE_BYTES, MAX_COMPRESSION_RATIO, MAX_MEMBER_BYTES, READ_CHUNK, FileTooLarge,
                                  open_regular, read_capped)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
ARCHIVE_EXTENSIONS = {".cbz", ".zip"}
# What a damaged archive or member makes zipfile and its decompressors raise.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError,
               NotImplementedError, struct.error, OverflowError, UnicodeDecodeError, KeyError, IndexError)
try:  # the optional decompressors have their own errors
    import bz2  # noqa: F401
    import lzma

    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python without lzma
    pass


class MemberError(ValueError):
    """A member that cannot be read back within its limits; the message is the manifest's reason."""


@dataclass
class Member:
    name: str
    data: bytes | None
    reason: str | None = None


def natural_key(name: str) -> list:
    """Sort `page2` before `page10`, as readers expect."""
    # A run of 4,300 digits or more is past what int() converts (a member name can be 65,535 long): it sorts last.
    return [(int(t) if len(t) < 4300 else float("inf")) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not read as a page (unsafe name, nested archive, absurd size, not an image), or None."""
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return f"unsafe member path {name!r} (absolute or '..')"
    ext = _ext(name)
    if ext in ARCHIVE_EXTENSIONS:
        return f"nested archive {name!r}: extract it and add it as its own chapter"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"member {name!r} declares {info.file_size:,} bytes (limit {MAX_MEMBER_BYTES:,})"
    if info.compress_size and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO:
        return f"member {name!r} compression ratio {info.file_size / info.compress_size:.0f}:1 looks like a zip bomb"
    if ext not in IMAGE_EXTENSIONS:
        return f"not an image member {name!r}"
    return None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """One member's bytes, inflated in pieces and refused as soon as they pass `limit` or the size the
    archive declares; `MemberError` says why (a damaged member, a bad CRC, a size its headers lie about)."""
    name = info.filename
    try:
        with zf.open(info) as f:
            blob = read_capped(f, min(limit, info.file_size), f"member {name!r}")
    except FileTooLarge as exc:
        raise MemberError(f"member {name!r} inflates past {min(limit, info.file_size):,} bytes ({exc.reason})") from None
    except _ZIP_ERRORS as exc:
        raise MemberError(f"corrupt member {name!r}: {type(exc).__name__}: {exc}") from None
    if len(blob) != info.file_size:
        raise MemberError(f"member {name!r} declares {info.file_size:,} bytes but holds {len(blob):,}: damaged archive")
    return blob


def copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, limit: int = MAX_MEMBER_BYTES) -> None:
    """Stream one member into `out` in pieces, with `read_member`'s limits (no member is held whole)."""
    name, size = info.filename, 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(READ_CHUNK):
                size += len(chunk)
                if size > min(limit, info.file_size):
                    raise MemberError(f"member {name!r} inflates past {min(limit, info.file_size):,} bytes")
                out.write(chunk)
    except _ZIP_ERRORS as exc:
        if isinstance(exc, MemberError):
            raise
        raise MemberError(f"corrupt member {name!r}: {type(exc).__name__}: {exc}") from None


class _OwnedZip(zipfile.ZipFile):
    """A ZipFile over a file object it closes with itself (ZipFile leaves a file it was given open)."""

    def __init__(self, f: BinaryIO):
        self._owned = f
        super().__init__(f)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._owned.close()


def open_archive(source: bytes | str | Path | BinaryIO) -> zipfile.ZipFile:
    """A CBZ/ZIP from its bytes, a path or a seekable binary file; ValueError naming why it is
    unreadable. A path must be a regular file (`open_regular`: a FIFO is refused, not waited on)."""
    if isinstance(source, (str, Path)):
        f = open_regular(source, MAX_ARCHIVE_BYTES, "chapter archive")
        try:
            return _OwnedZip(f)
        except _ZIP_ERRORS as exc:
            f.close()
            raise ValueError(f"not a readable zip/cbz archive: {type(exc).__name__}: {exc}") from exc
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source)
    except _ZIP_ERRORS as exc:
        raise ValueError(f"not a readable zip/cbz archive: {type(exc).__name__}: {exc}") from exc


def archive_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The file members of a chapter in reading order (folders and macOS resource forks left out)."""
    infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    return sorted(infos, key=lambda i: natural_key(i.filename))


def read_archive(source: bytes | str | Path | BinaryIO) -> Iterator[Member]:
    """Every file member of a CBZ/ZIP in reading order, with its bytes or the reason it was refused.

    The archive is opened at once (ValueError when it cannot be read at all); members are then read
    one at a time as the iterator is consumed, so only one is ever in memory."""
    zf = open_archive(source)
    try:
        infos = archive_members(zf)
    except _ZIP_ERRORS as exc:
        zf.close()
        raise ValueError(f"not a readable zip/cbz archive: {type(exc).__name__}: {exc}") from exc
    return _members(zf, infos)


def _members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> Iterator[Member]:
    with zf:
        for info in infos:
            problem = member_problem(info)
            if problem:
                yield Member(info.filename, None, problem)
                continue
            try:
                blob = read_member(zf, info)
            except MemberError as exc:
                yield Member(info.filename, None, str(exc))
                continue
            yield Member(info.filename, blob)
            del blob
