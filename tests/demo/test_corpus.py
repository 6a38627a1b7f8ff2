"""The generated demo corpus: deterministic, laid out as documented, and manga-like where it matters.

The corpus itself comes from the session fixture `demo_corpus` (tests/conftest.py, seed 0, scale 1),
so the whole suite generates it once.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mangacolor.demo import corpus as dc
from mangacolor.data.phash import dhash, hamming
from mangacolor.io.images import read_image

PAPER_TAGS = {"colored", "colorized", "comic"}


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def color_ink(rgb: np.ndarray) -> np.ndarray:
    """Line art of a colour page: no region colour is darker than this, only ink is."""
    return (rgb.max(axis=2) < 80).astype(np.uint8)


def high_freq(x: np.ndarray, mask: np.ndarray) -> float:
    x = x.astype(np.float32)
    return float(np.abs(x - cv2.GaussianBlur(x, (0, 0), 2.0))[mask].mean())


@pytest.fixture(scope="module")
def small_corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("small_corpora")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        dc.generate_demo_corpus(base / name, seed=seed, scale=0.25)
    return base


def test_layout_is_the_documented_one(demo_corpus: Path):
    files = set(tree_hashes(demo_corpus))
    pages = [f"{i:03d}" for i in range(1, dc.PAGES_PER_TITLE + 1)]
    expected = {"README.txt", "pairs/truth.json", "manga109/books.txt", "danbooru/metadata.parquet",
                f"archives/{dc.ARCHIVE_TITLE}/chapter_01.cbz"}
    expected |= {f"color/{t}/{p}.png" for t in dc.COLOR_TITLES for p in pages}
    expected |= {f"bw/{t}/{p}.png" for t in dc.BW_TITLES for p in pages}
    expected |= {f"pairs/color/{dc.PAIR_TITLE}/{i:03d}.png" for i in range(1, dc.PAIR_PAGES + 1)}
    expected |= {f"pairs/bw/{dc.PAIR_TITLE}/{i:03d}.jpg" for i in range(1, dc.PAIR_PAGES + 1)}
    expected |= {f"manga109/images/{dc.MANGA109_TITLE}/{i:03d}.jpg" for i in range(dc.MANGA109_PAGES)}
    table = pd.read_parquet(demo_corpus / "danbooru" / "metadata.parquet")
    expected |= {f"danbooru/{f}" for f in table["file"]}
    assert files == expected
    assert len(table) == dc.DANBOORU_IMAGES
    assert (demo_corpus / "manga109" / "books.txt").read_text().split() == [dc.MANGA109_TITLE]
    assert (demo_corpus / "README.txt").read_text().startswith(dc.README_MARKER)

    # every title has portrait pages and exactly one double-page spread; bw titles are grey files
    for part, titles in (("color", dc.COLOR_TITLES), ("bw", dc.BW_TITLES)):
        for t in titles:
            shapes = [read_image(p, mode=None).shape for p in sorted((demo_corpus / part / t).glob("*.png"))]
            assert shapes.count(dc.SPREAD_SIZE + ((3,) if part == "color" else ())) == 1
            assert shapes.count(dc.PAGE_SIZE + ((3,) if part == "color" else ())) == len(shapes) - 1
    for p in (demo_corpus / "manga109" / "images" / dc.MANGA109_TITLE).iterdir():
        assert read_image(p, mode=None).shape == dc.SPREAD_SIZE


def test_same_seed_same_bytes_other_seed_other_pages(demo_corpus, small_corpora):
    a, b, c = (tree_hashes(small_corpora / n) for n in "abc")
    assert a == b
    pages = [k for k in a if k.endswith((".png", ".jpg", ".cbz")) and not k.startswith("danbooru/")]
    assert pages and all(k in c and a[k] != c[k] for k in pages)
    assert {k for k in a if k.startswith("danbooru/")} != {k for k in c if k.startswith("danbooru/")}
    # pages are seeded by name: the small corpus is a prefix of the full one
    full = tree_hashes(demo_corpus)
    for name in ("color/azure_tide/001.png", "bw/night_harbor/002.png", "pairs/color/ember_blade/003.png"):
        assert a[name] == full[name]


def test_generate_refuses_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        dc.generate_demo_corpus(tmp_path, seed=0, scale=0.1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_pages_of_a_title_are_not_near_duplicates(demo_corpus):
    # the ingest drops pages within 16 bits of an earlier one; every generated page must survive
    for part, titles in (("color", dc.COLOR_TITLES), ("bw", dc.BW_TITLES)):
        for t in titles:
            hashes = [dhash(read_image(p)) for p in sorted((demo_corpus / part / t).glob("*.png"))]
            assert min(hamming(x, y) for x, y in itertools.combinations(hashes, 2)) > 32


@pytest.mark.parametrize("style,tone,spread", [("modern", "fine", False), ("modern", "bold", True), ("classic", "hatch", True)])
def test_ink_is_identical_and_bw_is_screentone_not_grey(style, tone, spread):
    r = dc.render_page(np.random.default_rng(7), style=style, tone=tone, spread=spread)
    h, w = dc.SPREAD_SIZE if spread else dc.PAGE_SIZE
    assert r.color.shape == (h, w, 3) and r.bw.shape == r.ink.shape == (h, w)
    solid = r.ink == 255
    assert solid.mean() > 0.02
    assert r.color[solid].max() == 0 and r.bw[solid].max() == 0
    # away from the ink, the colour page has no black: the ink is recoverable from colour alone
    assert (r.color.max(axis=2)[r.ink == 0] >= 80).all()

    grey = cv2.cvtColor(r.color, cv2.COLOR_RGB2GRAY)
    local = cv2.GaussianBlur(r.tone, (0, 0), 2.0)  # screentone regions: neither paper nor solid black
    toned = (local > 0.05) & (local < 0.95) & (r.ink == 0)
    assert toned.mean() > 0.03
    assert high_freq(r.bw, toned) > 3 * high_freq(grey, toned)
    assert abs(np.corrcoef(r.bw[toned].astype(float), grey[toned].astype(float))[0, 1]) < 0.45


def test_text_rng_changes_only_the_lettering():
    a = dc.render_page(np.random.default_rng(3), text_rng=np.random.default_rng(1))
    b = dc.render_page(np.random.default_rng(3), text_rng=np.random.default_rng(2))
    assert a.layout.balloons == b.layout.balloons
    differs = a.ink != b.ink
    assert differs.any()
    in_balloon = a.regions == 1  # label 1: balloon interiors
    assert a.layout.kinds[1] == "balloon"
    assert in_balloon[differs].all()
    assert np.array_equal(a.color[~in_balloon], b.color[~in_balloon])


def _truth(demo_corpus):
    return json.loads((demo_corpus / "pairs" / "truth.json").read_text())["pages"]


def _warp_ink(demo_corpus, e, affine):
    color = read_image(demo_corpus / "pairs" / e["color"])
    bw = read_image(demo_corpus / "pairs" / e["bw"], mode="L")
    assert list(bw.shape) == e["size"]
    warped = cv2.warpAffine(color_ink(color) * 255, affine, (bw.shape[1], bw.shape[0])) > 127
    # one pixel of tolerance for blur, JPEG and anti-aliasing
    dark = cv2.erode(bw, np.ones((3, 3), np.uint8)) < 100
    return float(dark[warped].mean())


def test_truth_geometry_puts_colour_ink_on_the_scan_ink(demo_corpus):
    truth = _truth(demo_corpus)
    assert [e["page"] for e in truth] == [f"{i:03d}" for i in range(1, dc.PAIR_PAGES + 1)]
    assert [e["matched"] for e in truth] == [True] * (dc.PAIR_PAGES - 2) + [False] * 2
    for e in truth:
        if not e["matched"]:
            assert e["affine"] is None and e["crop"] is None
            continue
        assert 0.9 <= e["scale"] <= 1.1 and abs(e["rotation_deg"]) <= 1.0
        affine = dc.pair_affine(e)
        hit = _warp_ink(demo_corpus, e, affine)
        assert hit > 0.95, e["page"]
        # a 3-pixel or 2% error lands visibly off the lines: the check can tell
        shifted = affine.copy()
        shifted[:, 2] += (3.0, -3.0)
        assert _warp_ink(demo_corpus, e, shifted) < hit - 0.1
        scaled = affine.copy()
        scaled[:, :2] *= 1.02
        assert _warp_ink(demo_corpus, e, scaled) < hit - 0.1


def test_truth_crop_scale_rotation_define_the_affine(demo_corpus):
    """Rebuild the affine from the paper's terms alone, as the module docstring defines them."""
    hc, wc = dc.PAGE_SIZE
    for e in _truth(demo_corpus):
        if not e["matched"]:
            continue
        top, left, bottom, right = e["crop"]
        s, t = e["scale"], math.radians(e["rotation_deg"])
        hb, wb = e["size"]
        lin = s * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        c_col = np.array([(left + wc - right) / 2, (top + hc - bottom) / 2])
        trans = np.array([wb / 2, hb / 2]) - lin @ c_col
        trans_px = trans + lin @ [0.5, 0.5] - 0.5  # edge -> pixel-centre coordinates
        rebuilt = np.hstack([lin, trans_px[:, None]])
        np.testing.assert_allclose(rebuilt, dc.pair_affine(e), atol=1e-3)
        # the kept part of the colour page, scaled, is the scan (up to rounding and the tilt)
        assert abs((hc - top - bottom) * s * math.cos(t) - hb) < 1.0
        assert abs((wc - left - right) * s * math.cos(t) - wb) < 1.0
        corner = rebuilt @ [-0.5, -0.5, 1.0] + 0.5
        np.testing.assert_allclose(e["offset"], corner[::-1], atol=1e-3)


def test_pair_scan_is_not_a_grey_conversion(demo_corpus):
    for e in _truth(demo_corpus)[:3]:
        color = read_image(demo_corpus / "pairs" / e["color"])
        bw = read_image(demo_corpus / "pairs" / e["bw"], mode="L").astype(np.float32)
        h, w = e["size"]
        affine = dc.pair_affine(e)
        grey = cv2.warpAffine(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), affine, (w, h), borderValue=255).astype(np.float32)
        near_ink = cv2.dilate(cv2.warpAffine(color_ink(color) * 255, affine, (w, h)), np.ones((5, 5), np.uint8)) > 0
        inside = cv2.warpAffine(np.full(color.shape[:2], 255, np.uint8), affine, (w, h)) == 255

        def tone_stats(scan):
            local = cv2.GaussianBlur(scan, (0, 0), 2.0)
            toned = inside & ~near_ink & (local > 40) & (local < 215)
            return toned.mean(), np.corrcoef(scan[toned], grey[toned])[0, 1], high_freq(scan, toned), high_freq(grey, toned)

        frac, corr, hf_scan, hf_grey = tone_stats(bw)
        assert frac > 0.03
        assert corr < 0.45 and hf_scan > 3 * hf_grey
        # control: a grey conversion with scanner noise fails both
        fake = np.clip(grey + np.random.default_rng(0).normal(0, 3, grey.shape), 0, 255).astype(np.float32)
        _, corr_fake, hf_fake, _ = tone_stats(fake)
        assert corr_fake > 0.9 and hf_fake < 3 * hf_grey


def test_danbooru_tag_filter_selects_exactly_the_colour_images(demo_corpus):
    root = demo_corpus / "danbooru"
    table = pd.read_parquet(root / "metadata.parquet")
    assert list(table.columns) == ["id", "file", "tags", "rating", "width", "height"]
    assert table["id"].is_unique and table["id"].is_monotonic_increasing
    assert set(table["rating"]) <= {"g", "s"}
    selected = set(table[table["tags"].map(lambda t: bool(PAPER_TAGS & set(t.split())))]["id"])
    colourful = set()
    for row in table.itertuples():
        img = read_image(root / row.file)
        assert img.shape == (row.height, row.width, 3)
        chroma = img.max(axis=2).astype(int) - img.min(axis=2)
        if chroma.mean() > 20:
            colourful.add(row.id)
        else:
            assert chroma.max() == 0  # monochrome, greyscale and sketches are truly grey
            assert {"monochrome", "greyscale", "sketch"} & set(row.tags.split())
    assert selected == colourful
    assert 0 < len(selected) < len(table)


def test_cbz_chapter_has_the_pages_in_order(demo_corpus):
    data = (demo_corpus / "archives" / dc.ARCHIVE_TITLE / "chapter_01.cbz").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [f"{n:03d}.png" for n in range(1, dc.ARCHIVE_PAGES + 1)]
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        pages = [read_image(zf.read(i), mode=None) for i in infos]
    assert all(p.ndim == 2 for p in pages)
    assert len({hashlib.sha256(p.tobytes()).hexdigest() for p in pages}) == len(pages)


def test_colours_are_a_function_of_content():
    """What a colorizer must learn is there to learn: a title's characters keep their hair (and its screentone)
    on every page, skin and sky are one colour, and pages of a title share its palette."""
    hue = dc.COLOR_TITLES["azure_tide"]
    # a region's flat colour, or 0.74 of it on the shaded side
    hair_colours = {tuple(np.rint(np.float32(dc.HAIR_COLORS[c.hair]) * np.float32(f)).astype(np.float64))
                    for c in dc.cast(hue) for f in (1.0, 0.74)}
    skin_colours = {tuple(np.rint(np.float32(dc.SKIN) * np.float32(f)).astype(np.float64)) for f in (1.0, 0.74)}
    seen_hair, seen_skin = set(), set()
    for page in range(4):
        r = dc.render_page(dc._rng(0, "color", "azure_tide", f"{page:03d}"), hue=hue)
        for label, kind in enumerate(r.layout.kinds):
            where = (r.regions == label) & (r.ink == 0)
            if kind not in ("hair", "skin") or where.sum() < 50:
                continue
            colours, counts = np.unique(r.color[where].reshape(-1, 3), axis=0, return_counts=True)
            flat = tuple(colours[counts.argmax()].astype(np.float64))
            (seen_hair if kind == "hair" else seen_skin).add(flat)
    assert seen_hair and seen_hair <= hair_colours
    assert seen_skin and seen_skin <= skin_colours
    # a cast is a pure function of the title, and hair colours map to one tone each
    assert dc.cast(hue) == dc.cast(float(hue)) and len({c.hair for c in dc.cast(hue)}) == dc.CAST_SIZE
    assert set(dc.HAIR_TONES) == set(dc.HAIR_COLORS)
    assert dc.title_hue("night_harbor") == dc.title_hue("night_harbor") != dc.title_hue("paper_moon")


def test_holdout_pages_are_aligned_pairs_outside_the_corpus(demo_corpus):
    pages = list(dc.holdout_pages(4, seed=0))
    assert [t for t, *_ in pages] == sorted(dc.COLOR_TITLES) + [sorted(dc.COLOR_TITLES)[0]]
    corpus = {hashlib.sha256(read_image(p).tobytes()).hexdigest() for p in (demo_corpus / "color").rglob("*.png")}
    for _, _, bw, color in pages:
        assert bw.shape == color.shape[:2]
        assert hashlib.sha256(color.tobytes()).hexdigest() not in corpus
        ink = color.max(axis=2) == 0  # full ink: black in the colour edition
        assert ink.mean() > 0.02 and (bw[ink] < 10).all()  # the same drawing: black in the other edition too
