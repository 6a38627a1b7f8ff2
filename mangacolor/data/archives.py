"""Chapter archives (CBZ / ZIP) read safely: members are data, never paths.

A member name never reaches the filesystem; members with `..` or absolute paths, nested archives,
non-image members and members whose declared size is absurd are reported with a reason instead of
being read, so the ingest can quarantine them and go on with the rest of the chapter. A member
that cannot be read back (damaged compressed data, a bad CRC, a size in its headers that its data
does not have, an unsupported compression or encryption) is reported the same way: one bad
member never fails the chapter.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
ARCHIVE_EXTENSIONS = {".cbz", ".zip"}
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200
# What a damaged archive or member makes zipfile and its decompressors raise.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError,
               NotImplementedError, struct.error, OverflowError, UnicodeDecodeError, KeyError, IndexError)
try:  # the optional decompressors have their own errors
    import bz2  # noqa: F401
    import lzma

    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python without lzma
    pass


@dataclass
class Member:
    name: str
    data: bytes | None
    reason: str | None = None


def natural_key(name: str) -> list:
    """Sort `page2` before `page10`, as readers expect."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return f"unsafe member path {name!r} (absolute or '..')"
    ext = _ext(name)
    if ext in ARCHIVE_EXTENSIONS:
        return f"nested archive {name!r}: extract it and add it as its own chapter"
    if ext not in IMAGE_EXTENSIONS:
        return f"not an image member {name!r}"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"member {name!r} declares {info.file_size:,} bytes (limit {MAX_MEMBER_BYTES:,})"
    if info.compress_size and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO:
        return f"member {name!r} compression ratio {info.file_size / info.compress_size:.0f}:1 looks like a zip bomb"
    return None


def read_archive(data: bytes) -> list[Member]:
    """Every file member of a CBZ/ZIP in reading order, with its bytes or the reason it was refused."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    except _ZIP_ERRORS as exc:
        raise ValueError(f"not a readable zip/cbz archive: {type(exc).__name__}: {exc}") from exc
    out = []
    with zf:
        for info in sorted(infos, key=lambda i: natural_key(i.filename)):
            problem = member_problem(info)
            if problem:
                out.append(Member(info.filename, None, problem))
                continue
            try:
                with zf.open(info) as f:
                    blob = f.read(MAX_MEMBER_BYTES + 1)
            except _ZIP_ERRORS as exc:
                out.append(Member(info.filename, None, f"corrupt member {info.filename!r}: {type(exc).__name__}: {exc}"))
                continue
            if len(blob) > MAX_MEMBER_BYTES:
                out.append(Member(info.filename, None, f"member {info.filename!r} exceeds {MAX_MEMBER_BYTES:,} bytes"))
                continue
            if len(blob) != info.file_size:
                out.append(Member(info.filename, None, f"member {info.filename!r} declares {info.file_size:,} bytes "
                                                       f"but holds {len(blob):,}: damaged archive"))
                continue
            out.append(Member(info.filename, blob))
    return out
