"""xDoG finds the edges of drawn shapes, and odd pages neither crash nor pass silently."""

import cv2
import numpy as np
import pytest

from mangacolor.synthetic.xdog import PRESETS, XDoGConfig, XDoGError, otsu_threshold, xdog

TOLERANCE_PX = 2
INK = 200  # anything visibly darker than paper counts as a detected line
DISK = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * TOLERANCE_PX + 1, 2 * TOLERANCE_PX + 1))


def precision_recall(out: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Precision: share of ink pixels within 2 px of a true edge; recall: share of true edge pixels
    within 2 px of ink."""
    ink = out < INK
    near_edge = cv2.dilate(edges.astype(np.uint8), DISK) > 0
    near_ink = cv2.dilate(ink.astype(np.uint8), DISK) > 0
    precision = (ink & near_edge).sum() / max(1, ink.sum())
    recall = (edges & near_ink).sum() / max(1, edges.sum())
    return float(precision), float(recall)


def line_art_page():
    """Ink outlines over light colour fills, like a colour manga panel: the edges are the strokes."""
    img = np.full((120, 160, 3), 255, np.uint8)
    cv2.rectangle(img, (10, 10), (60, 50), (230, 200, 150), -1)
    cv2.rectangle(img, (10, 10), (60, 50), (0, 0, 0), 2)
    cv2.circle(img, (110, 40), 25, (250, 180, 180), -1)
    cv2.circle(img, (110, 40), 25, (0, 0, 0), 2)
    cv2.line(img, (20, 110), (150, 70), (0, 0, 0), 1)
    cv2.ellipse(img, (60, 90), (30, 15), 20, 0, 360, (20, 20, 20), 2)
    return img, img.min(axis=2) < 60


def filled_shapes_page():
    """Dark flat fills without outlines: the edges are the shapes' boundaries."""
    img = np.full((120, 160, 3), 255, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    cv2.rectangle(img, (10, 10), (60, 50), (40, 40, 40), -1)
    cv2.rectangle(mask, (10, 10), (60, 50), 255, -1)
    cv2.circle(img, (110, 40), 25, (90, 20, 20), -1)
    cv2.circle(mask, (110, 40), 25, 255, -1)
    pts = np.array([[20, 110], [70, 70], [90, 110]])
    cv2.fillPoly(img, [pts], (20, 60, 90))
    cv2.fillPoly(mask, [pts], 255)
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return img, edges


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_finds_ink_lines_of_a_drawn_page(preset):
    img, edges = line_art_page()
    out = xdog(img, preset)
    assert out.shape == img.shape[:2] and out.dtype == np.uint8
    precision, recall = precision_recall(out, edges)
    assert precision >= 0.9 and recall >= 0.9, (preset, precision, recall)


@pytest.mark.parametrize("preset", ["authors2021", "alacgan"])
def test_outlines_dark_fills(preset):
    # The "generic" set (γ 0.98, k 1.6) only answers to ink-strength edges on [0, 1] intensities,
    # so it is held to the line-art test only.
    img, edges = filled_shapes_page()
    precision, recall = precision_recall(xdog(img, preset), edges)
    assert precision >= 0.9 and recall >= 0.8, (preset, precision, recall)


def test_flat_areas_are_paper_and_background_stays_white():
    img, edges = line_art_page()
    out = xdog(img, "authors2021")
    far = cv2.dilate(edges.astype(np.uint8), DISK, iterations=2) == 0
    assert (out[far] == 255).all()


@pytest.mark.parametrize("preset", ["authors2021", "alacgan"])
def test_strips_give_the_same_page_as_one_pass(preset):
    img, _ = line_art_page()
    whole = xdog(img, XDoGConfig.preset(preset, max_working_pixels=10**9))
    strips = xdog(img, XDoGConfig.preset(preset, max_working_pixels=20_000))
    recomputed = xdog(img, XDoGConfig.preset(preset, max_working_pixels=20_000, max_cache_pixels=0))
    assert np.array_equal(whole, strips)
    assert np.array_equal(whole, recomputed)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_pages_come_out_blank(preset, value):
    out = xdog(np.full((40, 30, 3), value, np.uint8), preset)
    assert (out == 255).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (1, 200), (200, 1), (2, 2, 3)])
def test_tiny_pages_do_not_crash(preset, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = xdog(img, preset)
    assert out.shape == shape[:2] and out.dtype == np.uint8


def test_huge_pages_are_processed_in_bounded_strips():
    # 4000 rows at 7x would be a 28000 x 168 float image per buffer; the budget keeps strips small.
    tall = np.full((4000, 24), 255, np.uint8)
    tall[25::50, :] = 0
    cfg = XDoGConfig.preset("authors2021", max_working_pixels=200_000)
    out = xdog(tall, cfg)
    assert out.shape == tall.shape
    assert (out[25::50] < INK).mean() > 0.9  # every ruled line found
    wide = np.full((12, 6000), 255, np.uint8)
    wide[:, 20::40] = 0
    out = xdog(wide, XDoGConfig.preset("generic", max_working_pixels=30_000))
    assert out.shape == wide.shape and (out[6, 20::40] < INK).all()


def test_accepts_grey_rgba_and_float_pages():
    img, _ = line_art_page()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    ref = xdog(grey, "alacgan", rng=np.random.default_rng(1))
    assert np.array_equal(ref, xdog(grey[..., None], "alacgan", rng=np.random.default_rng(1)))
    assert np.array_equal(xdog(img, "generic"), xdog(rgba, "generic"))  # opaque alpha changes nothing
    assert np.array_equal(xdog(grey, "generic"), xdog(grey.astype(np.float32) / 255.0, "generic"))
    transparent = np.zeros((20, 20, 4), np.uint8)  # fully transparent = paper, not black
    assert (xdog(transparent, "authors2021") == 255).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 10), np.uint8),
        np.zeros((10, 0, 3), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.full((4, 4), np.nan, np.float32),
        np.zeros((4, 4), np.int64),
    ],
)
def test_unprocessable_input_raises_xdog_error_with_a_reason(bad):
    with pytest.raises(XDoGError) as err:
        xdog(bad, "generic")
    assert err.value.reason


def test_sigma_set_is_drawn_per_page_deterministically():
    img, _ = filled_shapes_page()
    assert np.array_equal(xdog(img, "alacgan"), xdog(img, "alacgan"))
    outs = {xdog(img, "alacgan", rng=np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(outs) > 1  # different σ from the set give different line weights


def test_otsu_threshold_splits_two_modes():
    hist = np.zeros(256, np.int64)
    hist[20] = 100
    hist[230] = 300
    t = otsu_threshold(hist)
    assert 20 <= t < 230
    single = np.zeros(256, np.int64)
    single[255] = 10
    assert otsu_threshold(single) < 255  # a blank page stays paper


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match="authors2021"):
        XDoGConfig.preset("nope")
