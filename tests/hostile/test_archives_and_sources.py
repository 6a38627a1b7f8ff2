"""Chapter archives and source folders under hostile input (issue 22, items 2 and 3): a member that
inflates past what it declares, members too large to hold together, FIFOs, devices and sparse
giants where pages belong. Memory is measured with tracemalloc (every bytes object the readers
allocate), at sizes a test can afford; benchmarks/hostile_memory.py measures the full-size cases.
"""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mangacolor.data.archives import read_archive
from mangacolor.data.ingest import ingest_items
from mangacolor.data.sources import SourceConfig, iter_items
from mangacolor.io.images import ImageError, encode_png, read_image
from mangacolor.io.limits import MAX_FILE_BYTES
from mangacolor.io.store import Store

PAGE = encode_png(np.tile(np.arange(64, dtype=np.uint8), (48, 1)))
MiB = 2**20


def understated_member(inflated: int, declared: int = 1000, name: str = "002.png") -> bytes:
    """A zip whose member `name` declares `declared` bytes but inflates to `inflated` zero bytes
    (streamed through zlib: the zeros are never in memory), between two good pages."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, parts, left = bytes(MiB), [], inflated
    while left:
        parts.append(comp.compress(block[: min(left, MiB)]))
        left -= min(left, MiB)
    parts.append(comp.flush())
    data = b"".join(parts)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("001.png", PAGE)
        zf.writestr(zipfile.ZipInfo(name), b"")  # a placeholder whose headers are rewritten below
        zf.writestr("003.png", PAGE)
    raw = bytearray(buf.getvalue())
    # Rebuild with the deflated bytes in place of the placeholder, and the sizes the attacker chose.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist():
            if info.filename != name:
                zf.writestr(info, PAGE)
                continue
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size, info.compress_size, info.CRC = declared, len(data), 0
            zf.fp.write(info.FileHeader())
            zf.fp.write(data)
            info.header_offset = zf.fp.tell() - len(data) - len(info.FileHeader())
            zf.filelist.append(info)
            zf.NameToInfo[info.filename] = info
            zf.start_dir = zf.fp.tell()
    return out.getvalue()


def peak_traced(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_member_that_inflates_past_what_it_declares_costs_a_piece_not_its_size():
    """Before: the member was read with one `read(256 MiB + 1)`, so zlib inflated 64 MiB (3 GiB in
    the issue's probe) before its size and CRC were checked."""
    raw = understated_member(64 * MiB)
    members, peak = peak_traced(lambda: [(m.name, m.data is None, m.reason) for m in read_archive(raw)])
    assert [n for n, _, _ in members] == ["001.png", "002.png", "003.png"]
    bad = members[1]
    assert bad[1] and ("corrupt member" in bad[2] or "inflates past" in bad[2]) and not members[0][1] and not members[2][1]
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB"


def test_a_chapter_has_one_member_in_memory_at_a_time():
    """Before: `read_archive` returned every member's bytes at once (six 240 MB members: 1.75 GB)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(6):
            zf.writestr(f"{i:03d}.png", rng.integers(0, 256, 8 * MiB, dtype=np.uint8).tobytes())
    path_bytes = buf.getvalue()

    def consume() -> int:
        total = 0
        for m in read_archive(path_bytes):
            total += len(m.data)
        return total

    total, peak = peak_traced(consume)
    assert total == 48 * MiB
    assert peak < 2.5 * 8 * MiB, f"{peak / MiB:.0f} MiB for 8 MiB members"


def test_any_member_declaring_too_much_is_refused_unread_image_or_not():
    """Before: a non-image member (ComicInfo.xml) was "not an image" before its size was looked at,
    and the CLI copied such members whole into the output chapter."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ComicInfo.xml", b"\0" * (4 * MiB))  # 4 MiB of zeros: a 1000:1 ratio
    out = list(read_archive(buf.getvalue()))
    assert out[0].data is None and "zip bomb" in out[0].reason


def _blocked_reader_guard(fifos: list[Path]):
    """Unblock a reader stuck on one of `fifos` (the code before this issue opened them), so a failing
    test ends instead of leaving a thread blocked for ever."""
    for fifo in fifos:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass


def test_a_fifo_or_device_in_a_source_folder_is_quarantined_not_waited_on(tmp_path):
    """Before: `fs.cat_file` opened the FIFO and waited for a writer for ever; the loader never returned."""
    title = tmp_path / "src" / "title-a"
    title.mkdir(parents=True)
    (title / "001.png").write_bytes(PAGE)
    os.mkfifo(title / "002.png")
    os.mkfifo(title / "003.cbz")
    (title / "004.png").symlink_to("/dev/zero")  # a device: read for ever
    store = Store(tmp_path / "store")
    cfg = SourceConfig(name="s", role="bw", uri=str(tmp_path / "src"))
    result = {}

    def ingest() -> None:
        with store.begin("bw_pages", "title-a") as w:
            result["summary"] = ingest_items(list(iter_items(cfg, "title-a")), w)
            result["frame"] = w.seal()[2]

    thread = threading.Thread(target=ingest, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        _blocked_reader_guard([title / "002.png", title / "003.cbz"])
    assert not thread.is_alive(), "the ingest blocked on a FIFO"
    frame = result["frame"].set_index("page")
    assert frame.loc["001", "status"] == "ok"
    for page in ("002", "003", "004"):
        assert frame.loc[page, "status"] == "quarantined"
    assert "not a regular file (FIFO)" in frame.loc["002", "reason"]
    assert "not a regular file (FIFO)" in frame.loc["003", "reason"]
    assert "symlink pointing outside the source" in frame.loc["004", "reason"] or "character device" in frame.loc["004", "reason"]


def test_a_sparse_giant_is_refused_by_its_size_before_a_byte_is_read(tmp_path):
    """Before: a 30 GiB sparse file was read whole (MemoryError); now its size refuses it."""
    giant = tmp_path / "giant.png"
    with open(giant, "wb") as f:
        f.write(PAGE[:64])
        f.truncate(30 * 2**30)
    _, peak = peak_traced(lambda: pytest.raises(ImageError, read_image, giant))
    with pytest.raises(ImageError, match=f"over the {MAX_FILE_BYTES:,}-byte limit"):
        read_image(giant)
    assert peak < MiB


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null"])
def test_read_image_refuses_what_is_not_a_regular_file(tmp_path, special):
    path = tmp_path / "p.png"
    if special == "fifo":
        os.mkfifo(path)
    else:
        path = Path(special)
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(path)
