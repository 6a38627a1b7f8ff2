"""The readers under bad input (issue 11, point 4): the image reader, the archive reader, the source listing.

Property-based (hypothesis): whatever the bytes, a reader returns a page or a reason (the quarantine
path), nothing else escapes; the listing never reads a byte from outside its source, and the ingest
never writes outside the artifact root. Plus the named cases: damaged deflate data (zlib.error),
members whose declared sizes lie, symlinks to files and folders outside the source.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mangacolor.data.archives import read_archive
from mangacolor.data.ingest import ingest_items
from mangacolor.data.sources import SourceConfig, iter_items, list_titles, title_fingerprint
from mangacolor.io.images import ImageError, encode_jpeg, encode_png, read_image
from mangacolor.io.store import Store

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RNG = np.random.default_rng(11)
PNG = encode_png(RNG.integers(0, 255, (20, 16, 3), dtype=np.uint8))
GREY_PNG = encode_png(RNG.integers(0, 255, (16, 12), dtype=np.uint8))
JPEG = encode_jpeg(RNG.integers(0, 255, (24, 16, 3), dtype=np.uint8))
# Outside the source: a perfectly good page, so reading it would be noticed (it would be ingested).
SECRET = encode_png(np.full((16, 16, 3), (1, 2, 3), np.uint8))


# --- strategies --------------------------------------------------------------------------------


@st.composite
def damaged(draw, base=st.sampled_from([PNG, GREY_PNG, JPEG])) -> bytes:
    """A real image hurt the ways files get hurt: truncated, bytes flipped, junk inserted."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "zero_run"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "cut":
            del data[at:]
        elif op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at + draw(st.integers(1, 64))] = b"\0" * 8
    return bytes(data)


image_bytes = st.one_of(st.binary(max_size=256), damaged(), st.sampled_from([PNG, GREY_PNG, JPEG]))

MEMBER_NAMES = ["001.png", "002.jpg", "sub/003.png", "../evil.png", "/abs.png", "C:/win.png", "inner.cbz",
                "notes.txt", "__MACOSX/._001.png", "010.png", "page 4.PNG"]


@st.composite
def archives(draw) -> tuple[bytes, dict[str, bytes], bool]:
    """(zip bytes, intact image members by name, whether the bytes were damaged afterwards)."""
    names = draw(st.lists(st.sampled_from(MEMBER_NAMES), min_size=1, max_size=5, unique=True))
    buf = io.BytesIO()
    members = {}
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            data = draw(st.one_of(st.sampled_from([PNG, JPEG]), damaged(), st.binary(max_size=64)))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
            members[name] = data
    raw = bytearray(buf.getvalue())
    hurt = draw(st.sampled_from(["none", "size_lie", "local_size_lie", "flip", "cut", "deflate_garbage"]))
    if hurt in ("size_lie", "local_size_lie"):
        sig, offset = (b"PK\x01\x02", 24) if hurt == "size_lie" else (b"PK\x03\x04", 22)
        starts = [i for i in range(len(raw)) if raw.startswith(sig, i)]
        at = draw(st.sampled_from(starts)) + offset
        raw[at:at + 4] = struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
    elif hurt == "flip" and raw:
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    elif hurt == "cut":
        del raw[draw(st.integers(0, len(raw))):]
    elif hurt == "deflate_garbage":
        starts = [i for i in range(len(raw)) if raw.startswith(b"PK\x03\x04", i)]
        at = draw(st.sampled_from(starts))
        n, extra = struct.unpack("<HH", raw[at + 26:at + 30])
        data_at = at + 30 + n + extra
        raw[data_at:data_at + 4] = b"\xff\xff\xff\xff"  # an invalid deflate block type: zlib.error
    return bytes(raw), members, hurt != "none"


# --- the image reader ---------------------------------------------------------------------------


@FUZZ
@given(image_bytes)
def test_image_reader_returns_a_page_or_a_reason(data):
    try:
        page = read_image(data)
    except ImageError as exc:
        assert exc.reason and "\n" not in exc.reason.strip()
        return
    assert page.dtype == np.uint8 and page.ndim == 3 and page.shape[2] == 3 and min(page.shape[:2]) >= 8


# --- the archive reader -------------------------------------------------------------------------


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return bytearray(buf.getvalue())


def _garbage_deflate_case() -> tuple[bytes, dict[str, bytes], bool]:
    """A deflated member whose data starts with an invalid block type (zipfile raises zlib.error)."""
    raw = _zip({"001.png": PNG, "002.jpg": JPEG})
    at = raw.index(b"PK\x03\x04")
    n, extra = struct.unpack("<HH", raw[at + 26:at + 30])
    raw[at + 30 + n + extra] = 0xFF
    return bytes(raw), {"001.png": PNG, "002.jpg": JPEG}, True


@FUZZ
@given(archives())
@example(_garbage_deflate_case())
def test_archive_reader_reads_what_it_can_and_gives_a_reason_for_the_rest(case):
    raw, members, damaged_after = case
    try:
        out = read_archive(raw)
    except ValueError as exc:  # the whole archive is unreadable: the ingest quarantines it with this reason
        assert "zip" in str(exc)
        return
    for m in out:
        assert (m.data is None) == (m.reason is not None)
        assert ".." not in m.name.split("/") or m.data is None
        if m.data is not None and not damaged_after:
            assert m.data == members[m.name]  # an intact member comes back byte for byte
        if m.data is not None and m.name in members:
            assert len(m.data) == len(members[m.name]) or damaged_after


def test_damaged_deflate_member_is_quarantined_and_the_rest_read():
    raw, _, _ = _garbage_deflate_case()  # BTYPE 11 in the first member: "invalid block type" from zlib
    out = {m.name: m for m in read_archive(raw)}
    assert out["001.png"].data is None and "corrupt member" in out["001.png"].reason
    assert out["002.jpg"].data == JPEG


def test_member_whose_declared_size_lies_is_quarantined():
    raw = _zip({"001.png": PNG, "002.png": JPEG}, method=zipfile.ZIP_STORED)
    cd = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, len(PNG) + 1000)  # central directory: uncompressed size
    out = {m.name: m for m in read_archive(bytes(raw))}
    assert out["001.png"].data is None and out["001.png"].reason
    assert out["002.png"].data == JPEG


# --- the source listing and the ingest ----------------------------------------------------------


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        for name in files + dirs:
            p = Path(folder, name)
            if p == skip:
                continue
            st_ = p.lstat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns) if not p.is_dir() or p.is_symlink() else (0, 0)
    return out


ENTRY_KINDS = ["png", "jpeg", "damaged", "garbage", "text", "zip", "link_out_file", "link_out_dir", "link_in",
               "link_dangling", "link_out_zip", "folder"]


@st.composite
def source_trees(draw) -> list[tuple[str, str, object]]:
    """(title, entry name, kind) plus what the kind needs: the layout of a messy source folder."""
    entries = []
    for t in range(draw(st.integers(1, 2))):
        for i in range(draw(st.integers(1, 5))):
            kind = draw(st.sampled_from(ENTRY_KINDS))
            payload = draw(damaged()) if kind == "damaged" else draw(archives()) if kind == "zip" else draw(st.binary(max_size=32))
            entries.append((f"title{t}", f"{i:03d}", kind, payload))
    title_link = draw(st.booleans())  # one more title that is itself a symlink out of the source
    return entries, title_link


def _build(base: Path, entries, title_link: bool) -> None:
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.png").write_bytes(SECRET)
    (outside / "dir" / "secret.png").write_bytes(SECRET)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("001.png", SECRET)
    (outside / "secret.cbz").write_bytes(buf.getvalue())
    src = base / "src"
    for title, name, kind, payload in entries:
        folder = src / title
        folder.mkdir(parents=True, exist_ok=True)
        if kind in ("png", "jpeg"):
            (folder / f"{name}.{'png' if kind == 'png' else 'jpg'}").write_bytes(PNG if kind == "png" else JPEG)
        elif kind in ("damaged", "garbage"):
            (folder / f"{name}.png").write_bytes(payload)
        elif kind == "text":
            (folder / f"{name}.txt").write_bytes(payload)
        elif kind == "zip":
            (folder / f"{name}.cbz").write_bytes(payload[0])
        elif kind == "link_out_file":
            os.symlink(outside / "secret.png", folder / f"{name}.png")
        elif kind == "link_out_dir":
            os.symlink(outside / "dir", folder / name)
        elif kind == "link_out_zip":
            os.symlink(outside / "secret.cbz", folder / f"{name}.cbz")
        elif kind == "link_in":
            (folder / f"{name}-real.png").write_bytes(PNG)
            os.symlink(f"{name}-real.png", folder / f"{name}.png")
        elif kind == "link_dangling":
            os.symlink(base / "nowhere.png", folder / f"{name}.png")
        else:
            (folder / name).mkdir()
            (folder / name / "001.png").write_bytes(GREY_PNG)
    src.mkdir(exist_ok=True)
    if title_link:
        os.symlink(outside / "dir", src / "linked_title")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source_trees())
def test_listing_and_ingest_never_read_outside_the_source_nor_write_outside_the_store(tree):
    entries, title_link = tree
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _build(base, entries, title_link)
        artifacts = base / "artifacts"
        before = _snapshot(base, artifacts)
        cfg = SourceConfig(name="fuzz", role="bw", uri=str(base / "src"))
        store = Store(artifacts)
        titles = list_titles(cfg)
        for title in titles:
            items = list(iter_items(cfg, title))  # listing: nothing escapes
            title_fingerprint(cfg, title)
            for item in items:
                assert item.load is not None or item.problem, item
                if item.load is not None and item.problem is None:
                    try:
                        assert item.load() != SECRET
                    except OSError:
                        pass  # refused or unreadable: the ingest quarantines it
            with store.begin("bw_pages", title) as writer:
                summary = ingest_items(iter_items(cfg, title), writer, dedup_distance=None)
                _, vdir, frame = writer.commit()
            assert summary.ok + summary.quarantined == len(items)
            for p in Path(vdir).rglob("*"):
                assert not p.is_file() or p.read_bytes() != SECRET
            escaped = frame[frame["reason"].fillna("").str.contains("outside the source")]
            assert escaped["path"].isna().all()  # no bytes kept for them either
        assert _snapshot(base, artifacts) == before  # nothing outside the artifact root was written


def test_symlinks_out_of_the_source_are_quarantined_with_a_reason(tmp_path):
    entries = [("t", "000", "png", b""), ("t", "001", "link_out_file", b""), ("t", "002", "link_out_dir", b""),
               ("t", "003", "link_out_zip", b""), ("t", "004", "link_in", b"")]
    _build(tmp_path, entries, title_link=True)
    cfg = SourceConfig(name="links", role="bw", uri=str(tmp_path / "src"))
    items = {i.page: i for t in list_titles(cfg) for i in iter_items(cfg, t)}
    for page in ("001", "002", "003", "linked_title"):
        assert items[page].load is None and "symlink pointing outside the source" in items[page].problem, page
    assert items["000"].problem is None and items["000"].load() == PNG
    assert items["004"].problem is None and items["004"].load() == PNG  # a link that stays inside is fine
    store = Store(tmp_path / "artifacts")
    writer = store.begin("bw_pages", "t")
    summary = ingest_items(iter_items(cfg, "t"), writer, dedup_distance=None)
    _, _, frame = writer.commit()
    assert summary.ok == 3 and summary.quarantined == 3  # 000, 004 and 004-real read; the three links refused
    assert not any(b == SECRET for b in (p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file()))


@pytest.mark.parametrize("swap_to", ["file", "dir"])
def test_a_link_swapped_in_after_listing_is_refused_when_read(tmp_path, swap_to):
    (tmp_path / "src" / "t").mkdir(parents=True)
    page = tmp_path / "src" / "t" / "001.png"
    page.write_bytes(PNG)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "001.png").write_bytes(SECRET)
    cfg = SourceConfig(name="race", role="bw", uri=str(tmp_path / "src"))
    item = next(iter_items(cfg, "t"))
    page.unlink()
    if swap_to == "file":
        os.symlink(tmp_path / "out" / "001.png", page)
    else:
        (tmp_path / "src" / "t").rename(tmp_path / "src" / "t_old")
        os.symlink(tmp_path / "out", tmp_path / "src" / "t")
    with pytest.raises(PermissionError, match="outside the source"):
        item.load()
