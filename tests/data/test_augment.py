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
