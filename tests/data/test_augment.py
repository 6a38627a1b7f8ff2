"""Appendix B augmentations: aligned flips and crops, exact crop size, the 3% grey substitution."""

import numpy as np
import pytest

from mangacolor.data.augment import color_page_jitter, paired_augmentation, weighted_grey


def colour_page(h=40, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def no_jitter(**kw):
    return dict(brightness=0, contrast=0, saturation=0, jitter_p=0.0, **kw)


def test_flip_pad_and_crop_hit_input_and_target_identically():
    colour = colour_page()
    aug = paired_augmentation((32, 24), seed=1, **no_jitter(grey_p=0.0))
    for _ in range(50):
        out = aug(input=weighted_grey(colour), target=colour)
        assert np.array_equal(weighted_grey(out["target"]), out["input"])


def test_flip_happens_about_half_the_time_and_independently_of_grey_substitution():
    # Crop = page and no padding: every result is the page or its mirror image.
    colour = colour_page(24, 16)
    aug = paired_augmentation((24, 16), seed=2, max_pad=0, **no_jitter(grey_p=0.5))
    flips, grey_flips, greys = 0, 0, 0
    n = 400
    for _ in range(n):
        out = aug(input=np.zeros((24, 16), np.uint8), target=colour, color_for_grey=colour)
        flipped = np.array_equal(out["target"], colour[:, ::-1])
        assert flipped or np.array_equal(out["target"], colour)
        flips += flipped
        greys += out["grey"]
        grey_flips += flipped and out["grey"]
    assert 0.4 < flips / n < 0.6
    # Albumentations 2 seeds every transform alike; with its default seeding a grey substitution
    # (p < 0.5) would always come with a flip. Shared generator: about half of them do.
    assert 0.3 < grey_flips / greys < 0.7


@pytest.mark.parametrize("page_hw", [(40, 30), (10, 7), (32, 24), (200, 9)])
def test_crop_size_is_exact_even_for_small_pages(page_hw):
    colour = colour_page(*page_hw)
    aug = paired_augmentation((32, 24), seed=3)
    for _ in range(5):
        out = aug(input=weighted_grey(colour), target=colour, color_for_grey=colour)
        assert out["input"].shape == (32, 24) and out["target"].shape == (32, 24, 3)
        assert out["input"].dtype == np.uint8


def test_grey_substitution_rate_and_alignment():
    colour = colour_page()
    synthetic = np.full((40, 30), 7, np.uint8)  # a value no grey conversion of `colour` produces everywhere
    aug = paired_augmentation((32, 24), seed=4, **no_jitter())
    n, hits = 5000, 0
    for _ in range(n):
        out = aug(input=synthetic, target=colour, color_for_grey=colour)
        if out["grey"]:
            hits += 1
            assert np.array_equal(out["input"], weighted_grey(out["target"]))
        else:
            assert (out["input"] == 7).all()
    assert 0.022 < hits / n < 0.038  # p = 0.03; ±0.008 is 3.3 binomial standard deviations


def test_no_colour_page_no_substitution():
    aug = paired_augmentation((16, 16), seed=5, **no_jitter(grey_p=1.0))
    out = aug(input=np.full((20, 20), 9, np.uint8), target=colour_page(20, 20))
    assert not out["grey"] and (out["input"] == 9).all()


def test_jitter_changes_the_input_only():
    colour = colour_page(24, 16)
    aug = paired_augmentation((24, 16), seed=6, max_pad=0, flip_p=0.0, grey_p=0.0, brightness=0.4, contrast=0.4, saturation=0.4)
    changed = 0
    for _ in range(10):
        out = aug(input=colour.copy(), target=colour.copy())
        assert np.array_equal(out["target"], colour)
        changed += not np.array_equal(out["input"], colour)
    assert changed >= 8


def test_deterministic_given_a_seed():
    colour = colour_page()
    runs = []
    for seed in (7, 7, 8):
        aug = paired_augmentation((32, 24), seed=seed)
        runs.append([aug(input=weighted_grey(colour), target=colour, color_for_grey=colour)["input"] for _ in range(3)])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))
    aug = paired_augmentation((32, 24), seed=0)
    a = aug(input=weighted_grey(colour), target=colour, seed=123)["input"]
    aug(input=weighted_grey(colour), target=colour)
    assert np.array_equal(a, aug(input=weighted_grey(colour), target=colour, seed=123)["input"])


def test_weighted_grey_uses_bt601_weights():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    assert weighted_grey(px).tolist() == [[76, 150, 29, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]]


def test_colour_page_jitter_is_seeded_and_keeps_the_page_shape():
    colour = colour_page()
    a = color_page_jitter(seed=1)(colour)
    b = color_page_jitter(seed=1)(colour)
    assert a.shape == colour.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, colour)


# --- one page transform for page, target and draft (Appendix B) -------------------------------------

import cv2  # noqa: E402

from mangacolor.data.canvas import canvas_size  # noqa: E402
from mangacolor.training.colorizer import random_crop  # noqa: E402

DRAFT_SIGMA = 3.0  # px at the page's own scale


def smooth_colour_page(h, w, seed, cells=(7, 5)):
    """A page of large colour regions: what drafts describe (a blur of it is still informative)."""
    grid = np.random.default_rng(seed).integers(0, 256, (*cells, 3), dtype=np.uint8)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def whole_page_draft(page):
    """A stand-in for the StyleGAN draft: the blurred page squeezed into 256x256, as coloring_drafts stores it."""
    return cv2.resize(cv2.GaussianBlur(page, (0, 0), DRAFT_SIGMA), (256, 256), interpolation=cv2.INTER_AREA)


def correlation(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def draft_of_the_crop(target, page_hw, canvas):
    """The draft made from the crop's own part of the page, at the crop's scale."""
    scale = canvas_size(*page_hw, canvas)[0] / page_hw[0]
    return cv2.GaussianBlur(target, (0, 0), DRAFT_SIGMA * scale)


@pytest.mark.parametrize("page_hw", [(600, 400), (400, 1200)])  # a portrait page, a double spread
def test_the_draft_under_the_crop_is_the_draft_of_that_part_of_the_page(page_hw):
    canvas, crop = (192, 128), (96, 64)
    aug = paired_augmentation(crop, seed=11, canvas=canvas, **no_jitter(grey_p=0.0))
    flips = set()
    for seed in range(12):
        page = smooth_colour_page(*page_hw, seed)
        out = aug(input=weighted_grey(page), target=page, color_for_grey=page, draft=whole_page_draft(page))
        assert out["input"].shape == crop and out["draft"].shape == (*crop, 3)
        assert correlation(out["draft"], draft_of_the_crop(out["target"], page_hw, canvas)) >= 0.95
        # and the old way (the whole-page draft stretched onto the crop) is not
        stretched = cv2.resize(whole_page_draft(page), crop[::-1], interpolation=cv2.INTER_LINEAR)
        assert correlation(stretched, draft_of_the_crop(out["target"], page_hw, canvas)) < 0.8
        flips.add(out["flipped"])
    assert flips == {True, False}


def test_double_spreads_keep_their_aspect_on_the_canvas():
    assert canvas_size(1200, 800) == (768, 512)  # a 3:2 page is the canvas
    assert canvas_size(1200, 1600) == (768, 1024)  # a spread: same height, twice the width
    assert canvas_size(1414, 1000) == (768, 543)  # A4: covers the canvas, a little wider


def test_a_flipped_page_gets_a_flipped_draft():
    page = smooth_colour_page(300, 200, seed=3)
    kw = dict(seed=0, canvas=(96, 64), max_pad=0, **no_jitter(grey_p=0.0))
    plain = paired_augmentation((96, 64), flip_p=0.0, **kw)(input=weighted_grey(page), target=page, draft=whole_page_draft(page))
    flipped = paired_augmentation((96, 64), flip_p=1.0, **kw)(input=weighted_grey(page), target=page, draft=whole_page_draft(page))
    assert flipped["flipped"] and not plain["flipped"]
    assert np.array_equal(flipped["target"], plain["target"][:, ::-1])
    assert np.array_equal(flipped["draft"], plain["draft"][:, ::-1])
    assert correlation(flipped["draft"], plain["draft"]) < 0.9  # the page is not symmetric: the flip matters


def test_the_loops_plain_crop_moves_the_draft_with_the_page():
    page_hw, canvas, crop = (600, 400), (192, 128), (96, 64)
    rng = np.random.default_rng(0)
    for seed in range(6):
        page = smooth_colour_page(*page_hw, seed)
        out = random_crop({"bw": weighted_grey(page), "color": page, "draft": whole_page_draft(page)}, crop, rng, canvas)
        assert out["draft"].shape == (*crop, 3)
        assert correlation(out["draft"], draft_of_the_crop(out["color"], page_hw, canvas)) >= 0.95
