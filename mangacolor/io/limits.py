"""What a file from a stranger may cost us, stated once: the CLI, the hint page, chapter archives and the
ingest all read untrusted bytes through these limits and these two readers.

A page, a hint or a chapter may come from anyone (a download, an upload to the hint page, a crawled
site, a folder a user points us at). Each limit below bounds the memory or time one such file can
take, and is checked before the cost is paid: a file's size before its bytes are read, an image's
pixel count from its header before it is decoded, an archive member's size while it is inflated.
Anything that is not a regular file (a FIFO, `/dev/zero`, a socket) is refused before a byte is
read, so it can neither block a reader nor feed it forever.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

# A 600 dpi double-page scan is about 10k x 7k; anything far beyond that is a bomb, not a page.
MAX_PIXELS = 80_000_000
# Pages, hint images and references are read whole: a file this large is no page.
MAX_FILE_BYTES = 256 * 2**20
# One chapter-archive member once inflated; its compressed size may be at most this many times smaller.
MAX_MEMBER_BYTES = 256 * 2**20
MAX_COMPRESSION_RATIO = 200
# A chapter archive file is read member by member, never whole: this only bounds the time one takes.
MAX_ARCHIVE_BYTES = 16 * 2**30
# One upload to the hint page (`mangacolor serve`), checked by the server before the file is stored.
MAX_UPLOAD_BYTES = 64 * 2**20
# Hint JSON: the file, the number of points, the digits of one integer and a disc's radius in pixels.
MAX_HINT_JSON_BYTES = 8 * 2**20
MAX_HINT_POINTS = 100_000
MAX_JSON_INT_DIGITS = 30
MAX_HINT_RADIUS = 10_000

READ_CHUNK = 2**20  # streamed reads (archive members, hashing) go in pieces this large


class Refused(OSError):
    """A file refused before it is read; `reason` says why without the path (for manifests), the
    message names the path too."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # the message is not the constructor's argument list (a worker process sends these back)
        return type(self), (self.path, self.reason)


class NotARegularFile(Refused):
    """A path that is a FIFO, a device, a socket or a folder where a file was expected."""


class FileTooLarge(Refused):
    """A file (or archive member) larger than its limit."""


def file_kind(mode: int) -> str:
    """What a stat mode says the path is, in words ("FIFO", "character device", ...)."""
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: str | Path, limit: int = MAX_FILE_BYTES, what: str = "file") -> BinaryIO:
    """Open `path` for reading only if it is a regular file of at most `limit` bytes.

    The file is opened without blocking (a FIFO with no writer would block `open`) and then checked
    through its descriptor, so a path swapped between the check and the read cannot slip through."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno is not None and os.path.exists(path) and not os.path.isfile(path):
            raise NotARegularFile(path, f"not a regular file ({_kind_of(path)}); expected a {what}") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(path, f"not a regular file ({file_kind(st.st_mode)}); expected a {what}")
        if st.st_size > limit:
            raise FileTooLarge(path, f"{st.st_size:,} bytes, over the {limit:,}-byte limit for a {what}")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f


def read_regular(path: str | Path, limit: int = MAX_FILE_BYTES, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`NotARegularFile`, `FileTooLarge` otherwise)."""
    with open_regular(path, limit, what) as f:
        # Its size and one byte more (a read of `limit` bytes would allocate `limit` bytes up front).
        data = f.read(os.fstat(f.fileno()).st_size + 1)
        if len(data) <= limit:
            data += f.read(limit + 1 - len(data)) if f.peek(1) else b""
    if len(data) > limit:  # it grew after it was checked
        raise FileTooLarge(path, f"more than the {limit:,}-byte limit for a {what}")
    return data


def read_capped(f: BinaryIO, limit: int, name: str) -> bytes:
    """Read a stream to its end in `READ_CHUNK` pieces, refusing it as soon as it passes `limit` bytes
    (what an inflating archive member is read with: its size is checked as it grows, not after)."""
    # BytesIO hands its buffer out without a copy (a list of pieces joined at the end would hold the
    # member twice).
    out = io.BytesIO()
    while chunk := f.read(READ_CHUNK):
        if out.tell() + len(chunk) > limit:
            raise FileTooLarge(name, f"more than the {limit:,}-byte limit once inflated")
        out.write(chunk)
    return out.getvalue()


def _kind_of(path: str | Path) -> str:
    try:
        return file_kind(os.stat(path).st_mode)
    except OSError:
        return "unreadable"
