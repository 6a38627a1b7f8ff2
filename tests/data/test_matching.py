"""Page matching (paper §IV-A-2): known transforms recovered, different pages rejected.

The pages are drawn here with cv2 so every test knows the exact colour -> bw transform: panels,
ellipses, lines and black fills as ink; the colour version adds flat fills; the bw version adds
screentone, different balloon text, and is "re-scanned" (scale, rotation, white margins, noise,
JPEG quality 88).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from mangacolor.data.matching import MatchConfig, match_pages, match_title, warp_color_to_bw
from mangacolor.io.images import read_image
from mangacolor.demo.rescans import corner_error as scan_corner_error
from mangacolor.demo.rescans import real_pair, scan_pair


# ----------------------------------------------------------------------------------------------
# Synthetic pages with a known transform


def draw_page(layout_seed: int, content_seed: int, h: int, w: int):
    """(colour RGB page, ink-only page, screentone region mask, balloon) on the same grid."""
    lay = np.random.default_rng(layout_seed)
    rng = np.random.default_rng(content_seed)
    color = np.full((h, w, 3), 255, np.uint8)
    ink = np.full((h, w), 255, np.uint8)
    tone = np.zeros((h, w), np.uint8)
    t = max(1, round(w / 160))
    gutter = max(3, w // 40)
    rows = int(lay.integers(2, 4))
    ys = [gutter, *(np.sort(lay.uniform(0.2, 0.8, rows - 1)) * h).astype(int), h - gutter]
    panels = []
    for r in range(rows):
        cols = int(lay.integers(1, 3) if w < 1.2 * h else lay.integers(2, 4))
        xs = [gutter, *(np.sort(lay.uniform(0.25, 0.75, cols - 1)) * w).astype(int), w - gutter]
        for c in range(cols):
            panels.append((xs[c] + gutter // 2, ys[r] + gutter // 2, xs[c + 1] - gutter // 2, ys[r + 1] - gutter // 2))

    def clip(img, box, value):
        x0, y0, x1, y1 = box
        img[:y0], img[y1:], img[:, :x0], img[:, x1:] = value, value, value, value

    for box in panels:
        x0, y0, x1, y1 = box
        pw, ph = x1 - x0, y1 - y0
        cv2.rectangle(color, (x0, y0), (x1, y1), tuple(int(v) for v in rng.integers(120, 256, 3)), -1)
        if rng.random() < 0.5:
            cv2.rectangle(tone, (x0, y0), (x1, y1), 1, -1)
        if pw >= 12 and ph >= 12:
            for _ in range(rng.integers(2, 5)):
                centre = (int(rng.integers(x0, x1)), int(rng.integers(y0, y1)))
                axes = (int(rng.integers(pw // 10 + 2, pw // 3 + 3)), int(rng.integers(ph // 10 + 2, ph // 3 + 3)))
                angle = float(rng.uniform(0, 180))
                region = np.zeros((h, w), np.uint8)
                cv2.ellipse(region, centre, axes, angle, 0, 360, 1, -1)
                clip(region, box, 0)
                color[region > 0] = tuple(int(v) for v in rng.integers(90, 256, 3))
                tone[region > 0] = rng.random() < 0.4
                outline = np.full((h, w), 255, np.uint8)
                cv2.ellipse(outline, centre, axes, angle, 0, 360, 0, t, cv2.LINE_AA)
                clip(outline, box, 255)
                np.minimum(ink, outline, out=ink)
            for _ in range(rng.integers(2, 6)):
                p = rng.integers([x0, y0], [x1, y1], (2, 2))
                cv2.line(ink, (int(p[0, 0]), int(p[0, 1])), (int(p[1, 0]), int(p[1, 1])), 0, t, cv2.LINE_AA)
            if rng.random() < 0.5:  # a black fill: hair, a shadow
                centre = (int(rng.integers(x0 + pw // 4, x1 - pw // 4 + 1)),
                          int(rng.integers(y0 + ph // 4, y1 - ph // 4 + 1)))
                cv2.circle(ink, centre, max(2, min(pw, ph) // 10), 0, -1, cv2.LINE_AA)
        cv2.rectangle(ink, (x0, y0), (x1, y1), 0, t)

    x0, y0, x1, y1 = panels[int(rng.integers(len(panels)))]
    balloon = ((x0 + x1) // 2, (y0 + y1) // 2, max(6, (x1 - x0) // 5), max(8, (y1 - y0) // 4))
    bx, by, bax, bay = balloon
    cv2.ellipse(color, (bx, by), (bax, bay), 0, 0, 360, (255, 255, 255), -1)
    cv2.ellipse(ink, (bx, by), (bax, bay), 0, 0, 360, 255, -1)
    tone[by - bay:by + bay, bx - bax:bx + bax] = 0
    cv2.ellipse(ink, (bx, by), (bax, bay), 0, 0, 360, 0, t, cv2.LINE_AA)
    return np.minimum(color, ink[..., None]), ink, tone, balloon


def draw_text(img, balloon, seed, value):
    """Glyph-like scribbles in the balloon: each source has its own translation and lettering."""
    rng = np.random.default_rng(seed)
    bx, by, bax, bay = balloon
    gh = max(3, bay // 4)
    for col in (-1, 0, 1):
        x, y = bx + col * max(3, bax // 3), by - bay // 2
        while y < by + bay // 2 - gh:
            p = rng.integers(-gh // 2, gh // 2 + 1, (3, 2)) + np.array([x, y + gh // 2])
            cv2.polylines(img, [p.astype(np.int32)], False, value, 1, cv2.LINE_AA)
            y += gh + 1


def screentone(tone, h, w):
    period = max(3, round(w / 90))
    yy, xx = np.mgrid[:h, :w]
    dots = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period * 0.3) ** 2
    return np.where(dots & (tone > 0), 40, 255).astype(np.uint8)


def rescan_transform(h, w, scale, rot_deg, margins):
    """colour -> bw 2x3 (pixel centres) and bw size: scale and rotate about the page centre,
    then place with [top, left, bottom, right] white margins."""
    m = np.asarray(margins, float)
    hb, wb = int(round(h * scale + m[0] + m[2])), int(round(w * scale + m[1] + m[3]))
    c, s = math.cos(math.radians(rot_deg)) * scale, math.sin(math.radians(rot_deg)) * scale
    L = np.array([[c, -s], [s, c]])
    centre_c = np.array([(w - 1) / 2, (h - 1) / 2])
    centre_b = np.array([m[1] + (w * scale - 1) / 2, m[0] + (h * scale - 1) / 2])
    return np.hstack([L, (centre_b - L @ centre_c)[:, None]]), (hb, wb)


def crop_resize_transform(h, w, crop, bw_hw):
    """The paper's model: cut [top, left, bottom, right] off the colour page, resize to bw size."""
    t, l, b, r = crop
    hb, wb = bw_hw
    sx, sy = wb / (w - l - r), hb / (h - t - b)
    # edge coordinates u_bw = (u_c - left) * s, written for pixel centres (u = x + 0.5)
    return np.array([[sx, 0, (0.5 - l) * sx - 0.5], [0, sy, (0.5 - t) * sy - 0.5]]), (hb, wb)


def make_pair(seed, size=(384, 256), layout_seed=None, transform=None, jpeg=88):
    """(bw uint8, colour RGB uint8, true colour -> bw 2x3). Default: a random re-scan."""
    h, w = size
    rng = np.random.default_rng(seed + 7)
    color, ink, tone, balloon = draw_page(seed if layout_seed is None else layout_seed, seed, h, w)
    draw_text(color, balloon, seed + 1000, (0, 0, 0))
    bw_src = np.minimum(ink, screentone(tone, h, w))
    draw_text(bw_src, balloon, seed + 2000, 0)
    if transform is None:
        margins = rng.uniform(0.0, 0.06, 4) * [h, w, h, w]
        transform = rescan_transform(h, w, rng.uniform(0.9, 1.1), rng.uniform(-1, 1), margins)
    A, (hb, wb) = transform
    bw = cv2.warpAffine(bw_src, A, (wb, hb), flags=cv2.INTER_LINEAR, borderValue=255)
    noise = np.random.default_rng(seed + 3000).normal(0, 6, bw.shape)
    # paper is not white and ink is not black in a scan
    bw = np.clip(bw * 0.93 + 12 + noise, 0, 255).astype(np.uint8)
    bw = cv2.imdecode(cv2.imencode(".jpg", bw, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_GRAYSCALE)
    return bw, color, A


def corner_error(found: np.ndarray, true: np.ndarray, color_hw) -> float:
    """Largest displacement (bw pixels) between where the two maps send the colour page's corners."""
    h, w = color_hw
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    return float(np.abs(found @ corners - true @ corners).max())


def paper_terms(A, color_hw, bw_hw):
    """crop/scale of a transform computed independently of the matcher, for rotation-free maps
    and (up to the rotation's small effect) for rotated ones: where bw edge midpoints land."""
    inv = np.linalg.inv(np.vstack([A, [0, 0, 1]]))
    hb, wb = bw_hw
    hc, wc = color_hw

    def back(xe, ye):
        p = inv @ [xe - 0.5, ye - 0.5, 1]
        return p[0] + 0.5, p[1] + 0.5

    crop = [back(wb / 2, 0)[1], back(0, hb / 2)[0], hc - back(wb / 2, hb)[1], wc - back(wb, hb / 2)[0]]
    return crop, math.sqrt(abs(np.linalg.det(A[:, :2])))


CFG = MatchConfig()


# ----------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize(
    "seed,size",
    [(1, (384, 256)), (2, (384, 256)), (3, (384, 256)), (4, (384, 512)), (5, (840, 600))],
    ids=["portrait1", "portrait2", "portrait3", "double-spread", "portrait-840"],
)
def test_recovers_rescan_transform(seed, size):
    bw, color, A = make_pair(seed, size=size)
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert res.error < CFG.threshold / 3
    true_crop, true_scale = paper_terms(A, color.shape[:2], bw.shape)
    assert np.allclose(res.crop, true_crop, atol=2.0), (res.crop, true_crop)
    assert res.scale == pytest.approx(true_scale, rel=0.01)
    assert res.rotation_deg == pytest.approx(math.degrees(math.atan2(A[1, 0], A[0, 0])), abs=0.2)
    assert corner_error(res.matrix, A, color.shape[:2]) < 1.5


def test_recovers_a_scan_with_wide_margins():
    """9% white margins on every side: the bw page is 1.18x the drawing; still found."""
    h, w = 384, 256
    transform = rescan_transform(h, w, 0.94, -0.6, [0.09 * h, 0.09 * w, 0.09 * h, 0.09 * w])
    bw, color, A = make_pair(13, size=(h, w), transform=transform)
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert corner_error(res.matrix, A, color.shape[:2]) < 1.5


def test_recovers_paper_crop_and_resize():
    """The paper's own situation: the colour page has extra rows/columns at its edges, cut off before
    an (slightly anisotropic) resize; `crop` must give back exactly those rows/columns."""
    h, w = 400, 280
    crop = [14, 6, 9, 11]
    transform = crop_resize_transform(h, w, crop, (372, 252))
    bw, color, A = make_pair(11, size=(h, w), transform=transform)
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert np.allclose(res.crop, crop, atol=2.0), res.crop
    sx, sy = A[0, 0], A[1, 1]
    assert res.scale == pytest.approx(math.sqrt(sx * sy), rel=0.01)
    assert res.scale_xy == pytest.approx([sx, sy], rel=0.01)


def test_crop_is_the_margin_in_colour_pixels_without_rotation():
    """A bw page that is the colour page shrunk 10% and pasted with white margins: the crop is the
    margins (negative: padding), in colour pixels."""
    h, w = 384, 256
    margins = [20, 8, 12, 16]
    transform = rescan_transform(h, w, 0.9, 0.0, margins)
    bw, color, _ = make_pair(12, size=(h, w), transform=transform)
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert np.allclose(res.crop, [-m / 0.9 for m in margins], atol=2.0), res.crop
    assert res.scale == pytest.approx(0.9, rel=0.01)


def test_rejects_different_pages_with_a_clear_margin():
    matched_errors, other_errors = [], []
    for seed in (21, 22):
        bw, color, _ = make_pair(seed)
        matched_errors.append(match_pages(bw, color, CFG).error)
        other_bw, _, _ = make_pair(seed + 100)
        # a decoy: same panel layout, different drawings (the hardest "other page")
        decoy_bw, _, _ = make_pair(seed + 200, layout_seed=seed)
        for other in (other_bw, decoy_bw):
            res = match_pages(other, color, CFG)
            assert not res.matched
            assert "threshold" in res.reason
            other_errors.append(res.error)
    assert max(matched_errors) < CFG.threshold / 3, matched_errors
    assert min(other_errors) > 1.5 * CFG.threshold, other_errors


def test_blank_pages_are_unmatched_with_a_reason():
    bw, color, _ = make_pair(31)
    blank_color = np.full_like(color, 250)
    blank_bw = np.full_like(bw, 235)
    cases = ((bw, blank_color, "colour"), (blank_bw, color, "black-and-white"), (blank_bw, blank_color, "colour"))
    for b, c, word in cases:
        res = match_pages(b, c, CFG)
        assert not res.matched
        assert word in res.reason and "almost no" in res.reason
        assert math.isinf(res.error)
        info = res.to_json()
        json.dumps(info)  # still serialisable (Infinity/NaN), and every number still a float
        assert {"matched", "error", "crop", "scale"} <= info.keys()
        assert float(info["error"]) == math.inf


def test_to_json_and_warp_give_an_aligned_training_pair():
    bw, color, _ = make_pair(41)
    res = match_pages(bw, color, CFG)
    info = json.loads(json.dumps(res.to_json()))
    assert info["matched"] is True and len(info["crop"]) == 4 and info["threshold"] == CFG.threshold
    assert np.asarray(info["transform"]).shape == (2, 3)

    aligned = warp_color_to_bw(color, res, bw.shape)
    assert aligned.shape == (*bw.shape, 3) and aligned.dtype == np.uint8
    black = aligned.max(axis=2) < 60
    # the warped colour ink sits on bw ink; shifted by 5 px it would not
    bw_ink = bw < 128
    hits, shifted = bw_ink[black].mean(), bw_ink[np.roll(black, 5, axis=1)].mean()
    assert hits > 0.9 and shifted < 0.6, (hits, shifted)
    # the scan margins stay paper-white
    assert aligned[0, :].min() > 240 or aligned[:, 0].min() > 240


def test_colour_page_at_twice_the_resolution():
    """Sources differ in resolution too: a 768 px colour page against a ~390 px scan."""
    h, w = 768, 512
    transform = rescan_transform(h, w, 0.48, 0.4, [6, 4, 10, 2])
    bw, color, A = make_pair(14, size=(h, w), transform=transform)
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert res.scale == pytest.approx(0.48, rel=0.01)
    assert corner_error(res.matrix, A, color.shape[:2]) < 1.0
    aligned = warp_color_to_bw(color, res, bw.shape)  # the area-downscaling path
    black = aligned.max(axis=2) < 60
    assert (bw < 128)[black].mean() > 0.9


def test_match_title_pairs_by_id_and_recovers_an_offset_by_one():
    pages = {seed: make_pair(seed) for seed in (51, 52, 53)}
    lonely_bw, _, _ = make_pair(59)
    # the colour source has a cover first, so its ids run one ahead of the bw ids from page 2 on
    bw_pages = {"001": pages[51][0], "002": pages[52][0], "003": pages[53][0], "004": lonely_bw}
    color_pages = {"001": pages[51][1], "002": make_pair(58)[1], "003": pages[52][1], "004": pages[53][1]}
    got = {m.bw_id: m for m in match_title(bw_pages, color_pages, CFG, neighbours=1)}
    assert [got[k].color_id for k in ("001", "002", "003")] == ["001", "003", "004"]
    assert all(got[k].result.matched for k in ("001", "002", "003"))
    assert not got["004"].result.matched
    assert got["002"].to_json()["color_id"] == "003"
    # without neighbours only same ids are compared
    plain = {m.bw_id: m for m in match_title(bw_pages, color_pages, CFG, neighbours=0)}
    assert plain["001"].result.matched and not plain["002"].result.matched


def test_rejects_wrong_input_types_with_a_clear_error():
    bw, color, _ = make_pair(61)
    with pytest.raises(ValueError, match="uint8"):
        match_pages(bw.astype(np.float32), color)
    with pytest.raises(ValueError, match="HxW"):
        match_pages(bw[..., None, None], color)


def test_demo_corpus_pairs_precision_recall_and_geometry(demo_corpus):
    """The demo corpus's matched title: pages 001-008 are re-scans, 009-010 decoys.

    truth.json's `crop` and `scale` are defined exactly as ours (demo_corpus docstring: crop is the
    colour pixels beyond the scan's edges along the scan's axes through each edge's middle, negative
    for white margins; scale = sqrt(det(affine[:, :2])); affine maps colour pixel centres to scan
    pixel centres), so they are compared without conversion.
    """
    root = demo_corpus / "pairs"
    truth = {e["page"]: e for e in json.loads((root / "truth.json").read_text())["pages"]}
    bw_pages = {p: read_image(root / e["bw"], mode="L") for p, e in truth.items()}
    color_pages = {p: read_image(root / e["color"], mode="RGB") for p, e in truth.items()}
    found = match_title(bw_pages, color_pages, CFG, neighbours=1)

    predicted = {(m.bw_id, m.color_id) for m in found if m.result.matched}
    actual = {(p, p) for p, e in truth.items() if e["matched"]}
    assert len(actual) >= 3 and len(actual) < len(truth)  # the corpus has both kinds
    precision = len(predicted & actual) / max(1, len(predicted))
    recall = len(predicted & actual) / len(actual)
    assert (precision, recall) == (1.0, 1.0), sorted(predicted ^ actual)

    for m in found:
        e = truth[m.bw_id]
        if not e["matched"]:
            assert m.result.error > 1.5 * CFG.threshold
            continue
        assert np.allclose(m.result.crop, e["crop"], atol=1.0), (m.bw_id, m.result.crop, e["crop"])
        assert m.result.scale == pytest.approx(e["scale"], rel=0.005)
        assert m.result.rotation_deg == pytest.approx(e["rotation_deg"], abs=0.1)
        assert corner_error(m.result.matrix, np.asarray(e["affine"]), color_pages[m.bw_id].shape[:2]) < 1.0


# ----------------------------------------------------------------------------------------------
# Real scans (issue 14): any resolution ratio, wide margins, a few degrees askew, JPEG, moire

HARD_SCANS = [
    # (resolution ratio scan/colour, rotation degrees, margins [top, left, bottom, right] of the scan's side)
    (0.25, 2.5, (0.12, 0.15, 0.11, 0.19)),
    (0.5, -2.8, (0.02, 0.13, 0.13, 0.12)),
    (1.0, 3.0, (0.2, 0.2, 0.2, 0.2)),
    (2.0, -2.1, (0.09, 0.16, 0.05, 0.01)),
    (4.0, 0.8, (0.19, 0.09, 0.19, 0.1)),
]


def _colour_size(ratio):
    # a 4x finer colour page is a 768 px one against a ~200 px scan; a 4x finer scan is ~1800 px
    return (768, 512) if ratio < 1 else (384, 256)


@pytest.mark.parametrize("ratio,rotation,margins", HARD_SCANS, ids=[f"{r}x" for r, _, _ in HARD_SCANS])
def test_matches_scans_at_other_resolutions_with_margins_and_rotation(ratio, rotation, margins):
    """A demo-corpus page against its re-lettered scan at 0.25x-4x the colour resolution, white
    margins up to 20% of a side, up to 3 degrees askew, JPEG-compressed, screentone resampled."""
    bw, color, A = scan_pair(3, ratio, rotation, margins, color_size=_colour_size(ratio))
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert res.scale == pytest.approx(ratio, rel=0.01)
    assert res.rotation_deg == pytest.approx(rotation, abs=0.2)
    assert scan_corner_error(res.matrix, A, color.shape[:2]) < 1.0


@pytest.mark.parametrize("ratio", [0.25, 1.0, 2.0])
def test_rejects_other_pages_of_the_series_at_other_resolutions(ratio):
    """Precision: the scan of another page of the same title (same hue, same renderer) never matches."""
    bw, color, _ = scan_pair(4, ratio, 1.5, (0.1, 0.05, 0.1, 0.05), color_size=_colour_size(ratio), layout_seed=77)
    res = match_pages(bw, color, CFG)
    assert not res.matched and "threshold" in res.reason, (res.error, res.reason)


# ----------------------------------------------------------------------------------------------
# Plain resizes as real sources make them (issue 20): the artwork is finer than either edition,
# each edition is resized from it with its own filter, the bw side is ink + halftone screentone,
# the colour side flat fills and shading; both JPEG. Before the fix each of these found a wrong
# scale (error 0.7-0.8, or a "match" at 0.6x the true scale).

PLAIN_RESIZES = [
    # (ratio bw/colour, colour page (h, w), (bw filter, colour filter), artwork / finer edition, seed)
    (0.4, (512, 336), ("bicubic", "lanczos"), 2.0, 1),
    (1.3, (480, 320), ("lanczos", "bicubic"), 1.6, 2),
    (1.9, (384, 256), ("bicubic", "lanczos"), 1.5, 2),
    (2.1, (384, 256), ("bicubic", "lanczos"), 2.0, 2),
    (3.7, (288, 192), ("lanczos", "bicubic"), 1.6, 1),
]


def _plain_resize(ratio, size, filters, supersample, seed, layout_seed=None):
    return scan_pair(seed, ratio, color_size=size, jpeg=75, color_jpeg=75, supersample=supersample,
                     filters=filters, tone="bold", scanner=False, layout_seed=layout_seed)


@pytest.mark.parametrize("ratio,size,filters,supersample,seed", PLAIN_RESIZES,
                         ids=[f"{r}x-{f[0]}-{f[1]}" for r, _, f, _, _ in PLAIN_RESIZES])
def test_matches_a_plain_resize_at_non_integer_ratios(ratio, size, filters, supersample, seed):
    bw, color, A = _plain_resize(ratio, size, filters, supersample, seed)
    assert (A[0, 1], A[1, 0]) == (0, 0)  # a plain resize: the truth is the resize map of the two sizes
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert res.scale == pytest.approx(math.sqrt(A[0, 0] * A[1, 1]), rel=0.005)
    assert abs(res.rotation_deg) < 0.1
    assert scan_corner_error(res.matrix, A, color.shape[:2]) < 1.5


@pytest.mark.parametrize("ratio,size,filters,supersample,seed", [PLAIN_RESIZES[0], PLAIN_RESIZES[2]],
                         ids=["0.4x", "1.9x"])
def test_rejects_a_plain_resize_of_another_page(ratio, size, filters, supersample, seed):
    """The same conditions, the scan drawn from another page of the series: never a match."""
    decoy, color, _ = _plain_resize(ratio, size, filters, supersample, seed, layout_seed=99)
    res = match_pages(decoy, color, CFG)
    assert not res.matched and res.error > 1.5 * res.threshold, (res.error, res.reason)


def test_rejects_a_colour_page_shrunk_into_one_dark_panel():
    """A decoy scan covered in dense screentone: a colour page shrunk into one of its panels once
    scored 0.149 under the 0.15 threshold. A scan's margins are blank, so a placement that leaves
    the scan's ink outside the colour page is none."""
    decoy, color, _, _ = real_pair(2, 0.4, decoy=True)
    res = match_pages(decoy, color, CFG)
    assert not res.matched, (res.error, res.scale, res.reason)
    bw, _, A, _ = real_pair(2, 0.4)
    res = match_pages(bw, color, CFG)
    assert res.matched and scan_corner_error(res.matrix, A, color.shape[:2]) < 1.5, res.reason


def test_matches_a_scan_whose_ink_is_grey():
    """A scan's ink is not 0 (grey paper, scanner gain, blur on 1.6 px lines, JPEG 67): the error is
    measured from the page's own black, so a hatched page scanned this way still matches."""
    bw, color, A, cond = real_pair(1, 1.0)
    assert cond["tone"] == "hatch" and cond["rotation_deg"] != 0
    assert np.percentile(bw, 1) > 10  # the scan's black is grey
    res = match_pages(bw, color, CFG)
    assert res.matched, res.reason
    assert scan_corner_error(res.matrix, A, color.shape[:2]) < 1.0
