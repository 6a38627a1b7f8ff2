"""Weight-free domain-gap statistics (mangacolor/eval/gap.py) on pages with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from tests.eval.eval_helpers import PoolingNetwork

from mangacolor.eval.fid import FeatureExtractor
from mangacolor.eval.gap import (
    grey_histogram,
    halftone_index,
    histogram_w1,
    ink_coverage,
    mean_histogram,
    synthetic_gap,
)


def drawn_page() -> np.ndarray:
    page = np.full((100, 120), 255, np.uint8)
    cv2.rectangle(page, (10, 20), (39, 39), 0, thickness=-1)  # 30 x 20 = 600 px of solid ink
    page[70, 5:105] = 30  # a 100 px line, dark
    page[80:90, 60:70] = 200  # light grey: not ink
    return page


def dot_screen(size=(96, 96), period=4, dot=2) -> np.ndarray:
    """Printed 25% grey: square black dots on white paper."""
    page = np.full(size, 255, np.uint8)
    for y in range(0, size[0], period):
        for x in range(0, size[1], period):
            page[y : y + dot, x : x + dot] = 0
    return page


def test_ink_coverage_of_a_drawn_page():
    assert ink_coverage(drawn_page()) == pytest.approx(700 / 12000)
    assert ink_coverage(drawn_page(), threshold=20) == pytest.approx(600 / 12000)
    assert ink_coverage(np.full((8, 8), 255, np.uint8)) == 0.0


def test_halftone_energy_separates_dots_from_flat_grey():
    screen = dot_screen()
    flat = np.full_like(screen, int(screen.mean()))  # the same grey, made of grey pixels
    assert halftone_index(screen) > 0.95
    assert halftone_index(flat) == pytest.approx(0.0, abs=1e-6)
    blurred = [halftone_index(cv2.GaussianBlur(screen, (0, 0), s)) for s in (0.5, 1.0)]
    assert halftone_index(screen) > blurred[0] > blurred[1] > 0.01  # softer dots, less halftone energy
    assert np.isnan(halftone_index(np.full((32, 32), 255, np.uint8)))  # no grey at all: undefined


def test_histogram_distance_zero_for_identical_and_grows_with_shift():
    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 200, size=(40, 30), dtype=np.uint8) for _ in range(3)]
    base = mean_histogram(pages)
    assert histogram_w1(base, mean_histogram([p.copy() for p in pages])) == 0.0
    shifted = [mean_histogram([(p + s).astype(np.uint8) for p in pages]) for s in (16, 48)]
    d16, d48 = histogram_w1(base, shifted[0]), histogram_w1(base, shifted[1])
    assert 0 < d16 < d48
    assert d16 == pytest.approx(16 / 256, abs=1 / 32)  # W1 of a pure shift is the shift
    black, white = np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)
    assert histogram_w1(grey_histogram(black), grey_histogram(white)) == pytest.approx(31 / 32)


def test_synthetic_gap_is_zero_on_itself_and_sees_grey_conversions():
    real = [dot_screen(), drawn_page()]
    grey_converted = [np.full((96, 96), int(real[0].mean()), np.uint8), drawn_page()]
    same = synthetic_gap(real, [p.copy() for p in real])
    assert same["gap"] == 0.0 and same["hist_w1"] == 0.0
    gap = synthetic_gap(grey_converted, real)
    assert gap["halftone_real"] > gap["halftone_synth"]
    assert gap["halftone_diff"] > 0.2 and gap["ink_diff"] > 0.1 and gap["hist_w1"] > 0.1
    parts = [gap["hist_w1"], gap["halftone_diff"], gap["ink_diff"]]
    assert gap["gap"] == pytest.approx(np.mean(parts))
    assert (gap["n_synth"], gap["n_real"]) == (2, 2)
    assert "fid" not in gap


def test_synthetic_gap_adds_fid_and_kid_with_an_extractor():
    real = [dot_screen(period=p) for p in (4, 5, 6)]
    synth = [np.full((96, 96), v, np.uint8) for v in (150, 190, 220)]
    net = PoolingNetwork()
    out = synthetic_gap(synth, real, FeatureExtractor(net), kid_subsets=4)
    assert net.images_seen == 6
    assert out["fid"] > 0 and np.isfinite(out["kid_mean"])
    assert out["random_init"] is True and out["resize"] == "bilinear-torch"
    with pytest.raises(ValueError, match="need pages"):
        synthetic_gap([], real)
