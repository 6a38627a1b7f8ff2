"""Bad input never stops a title and is never lost: each odd file is read correctly or quarantined with its reason."""

import io
import os
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mangacolor.data.ingest import ingest_items
from mangacolor.data.sources import SourceConfig, danbooru_selection, iter_items, list_titles, title_fingerprint
from mangacolor.io.images import encode_jpeg, encode_png
from mangacolor.io.store import Store
from tests.io.test_images import _bomb_png


def drawn_page(seed: int, h=96, w=64) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(12):
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.rectangle(img, p1, p2, color, -1 if rng.random() < 0.5 else 2)
    return img


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture()
def messy_source(tmp_path):
    title = tmp_path / "src" / "messy_title"
    title.mkdir(parents=True)
    good = encode_png(drawn_page(1))
    (title / "001.png").write_bytes(good)
    (title / "002.png").write_bytes(good[: len(good) // 3])                      # truncated
    (title / "003.png").write_bytes(b"")                                         # zero bytes
    (title / "004.png").write_bytes(b"just some text, not a picture\n")          # text named .png
    grey16 = (drawn_page(2)[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO(); Image.fromarray(grey16).save(buf, format="PNG")
    (title / "005.png").write_bytes(buf.getvalue())                              # 16-bit: a real page
    rgba = np.dstack([drawn_page(3), np.full((96, 64), 200, np.uint8)])
    buf = io.BytesIO(); Image.fromarray(rgba, "RGBA").convert("P").save(buf, format="PNG")
    (title / "006.png").write_bytes(buf.getvalue())                              # palette: a real page
    buf = io.BytesIO(); Image.fromarray(drawn_page(4)).convert("CMYK").save(buf, format="JPEG")
    (title / "007.jpg").write_bytes(buf.getvalue())                              # CMYK JPEG: a real page
    (title / "008.png").write_bytes(encode_png(np.zeros((1, 1, 3), np.uint8)))   # 1x1
    (title / "009.png").write_bytes(_bomb_png(30_000, 30_000))                   # decompression bomb
    (title / "010.jpg").write_bytes(encode_jpeg(drawn_page(1), 80))              # near-duplicate of 001
    (title / "notes.txt").write_bytes(b"scan notes")                             # non-image file
    (title / "chapter_02.cbz").write_bytes(_zip({
        "01.png": encode_png(drawn_page(5)),
        "../../escape.png": encode_png(drawn_page(6)),
        "/abs/evil.png": encode_png(drawn_page(7)),
        "inner.cbz": _zip({"x.png": encode_png(drawn_page(8))}),
        "readme.html": b"<html></html>",
        "02.png": encode_png(drawn_page(9)),
    }))
    return SourceConfig(name="messy", role="bw", uri=str(tmp_path / "src"))


def test_every_bad_case_is_read_or_quarantined_with_reason(messy_source, tmp_path):
    store = Store(tmp_path / "artifacts")
    writer = store.begin("bw_pages", "messy_title")
    items = list(iter_items(messy_source, "messy_title"))
    summary = ingest_items(items, writer)
    version, vdir, frame = writer.commit()
    by_page = frame.set_index("page")
    ok = set(frame.loc[frame.status == "ok", "page"])
    assert ok == {"001", "005", "006", "007", "chapter_02/01", "chapter_02/02"}
    reasons = by_page["reason"].to_dict()
    assert "corrupt png" in reasons["002"]
    assert "empty file" in reasons["003"]
    assert "not an image" in reasons["004"]
    assert "too small" in reasons["008"]
    assert "decompression bomb" in reasons["009"]
    assert "near-duplicate of messy_title/001" in reasons["010"]
    assert "not an image file" in reasons["notes.txt"]
    assert "unsafe member path" in reasons["chapter_02/../../escape"]
    assert "unsafe member path" in reasons["chapter_02/abs/evil"]
    assert "nested archive" in reasons["chapter_02/inner"]
    assert "not an image member" in reasons["chapter_02/readme"]
    assert summary.ok == 6 and summary.quarantined == len(frame) - 6
    # Nothing is lost: every quarantined file that had bytes is kept under quarantine/.
    for row in frame[(frame.status == "quarantined") & frame.path.notna()].itertuples():
        assert row.path.startswith("quarantine/") and os.path.exists(os.path.join(vdir, row.path))
    # 16-bit, palette and CMYK pages were decoded with their real size.
    assert by_page.loc["005", "width"] == 64 and by_page.loc["007", "height"] == 96
    # Nothing was written outside the artifact root.
    written = {os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs}
    assert all(p.startswith(("artifacts/", "src/")) for p in written)


def test_fingerprint_changes_with_exactly_the_changed_title(tmp_path):
    for t in ("a", "b"):
        (tmp_path / t).mkdir()
        (tmp_path / t / "001.png").write_bytes(encode_png(drawn_page(ord(t))))
    cfg = SourceConfig(name="s", role="color", uri=str(tmp_path))
    assert list_titles(cfg) == ["a", "b"]
    before = {t: title_fingerprint(cfg, t) for t in "ab"}
    (tmp_path / "a" / "001.png").write_bytes(encode_png(drawn_page(99)))
    after = {t: title_fingerprint(cfg, t) for t in "ab"}
    assert before["a"] != after["a"] and before["b"] == after["b"]


def test_danbooru_tag_filter_selects_the_papers_tags():
    table = pd.DataFrame({"id": [1, 2, 3, 4], "file": ["1.png", "2.png", "3.png", "4.png"],
                          "tags": ["1girl colored", "monochrome sketch", "comic translated", "colorized highres"]})
    assert list(danbooru_selection(table, ["colored", "colorized", "comic"])["id"]) == [1, 3, 4]


def test_loose_cbz_is_a_title(tmp_path):
    (tmp_path / "volume_one.cbz").write_bytes(_zip({"p2.png": encode_png(drawn_page(1)), "p10.png": encode_png(drawn_page(2))}))
    cfg = SourceConfig(name="s", role="bw", uri=str(tmp_path))
    assert list_titles(cfg) == ["volume_one"]
    assert [i.page for i in iter_items(cfg, "volume_one")] == ["p2", "p10"]  # natural order
