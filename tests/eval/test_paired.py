"""Paired metrics recover known answers: identical pages, a known colour shift, a worse colorization."""

import math

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab

from mangacolor.eval.paired import PairedMetrics, ciede2000, psnr, ssim


@pytest.fixture(scope="module")
def metrics():
    return PairedMetrics(lpips_max_side=64)


def _page(seed=0, h=48, w=32):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 50, (h // 8, w // 8, 3)), 0, 255).repeat(8, 0).repeat(8, 1).astype(np.uint8)


def test_identical_pages_are_a_perfect_score(metrics):
    page = _page()
    s = metrics.score(page, page)
    assert s["ciede2000"] == 0.0 and math.isinf(s["psnr"]) and s["ssim"] == pytest.approx(1.0)
    assert s["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_a_known_lightness_shift_gives_its_delta_e():
    # a flat mid-grey page and the same page 10 L* units lighter: for neutral colours CIEDE2000 reduces to
    # ΔL' / S_L with S_L = 1 + 0.015 (L̄ - 50)² / sqrt(20 + (L̄ - 50)²)
    lab = np.zeros((16, 16, 3))
    lab[..., 0] = 50.0
    a = np.clip(np.rint(lab2rgb(lab) * 255), 0, 255).astype(np.uint8)
    lab[..., 0] = 60.0
    b = np.clip(np.rint(lab2rgb(lab) * 255), 0, 255).astype(np.uint8)
    la, lb = rgb2lab(a)[0, 0, 0], rgb2lab(b)[0, 0, 0]  # after uint8 rounding
    mean_l = (la + lb) / 2
    expected = abs(lb - la) / (1 + 0.015 * (mean_l - 50) ** 2 / math.sqrt(20 + (mean_l - 50) ** 2))
    assert ciede2000(b, a) == pytest.approx(expected, rel=1e-3)
    assert 9 < ciede2000(b, a) < 10.5
    # and the library agrees with itself on a coloured pair
    assert ciede2000(b, a) == pytest.approx(float(deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean()))


def test_psnr_of_a_constant_offset_and_ssim_order():
    page = _page(1)
    shifted = np.clip(page.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((shifted.astype(float) - page) ** 2)
    assert psnr(shifted, page) == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-6)
    noisy = np.clip(page + np.random.default_rng(2).normal(0, 40, page.shape), 0, 255).astype(np.uint8)
    assert ssim(shifted, page) > ssim(noisy, page)


def test_worse_colorizations_score_worse_and_summary_has_intervals(metrics):
    metrics.rows = []
    for seed in range(4):
        true = _page(seed)
        grey = np.repeat(true.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
        close = np.clip(true.astype(int) + 3, 0, 255).astype(np.uint8)
        s_close, s_grey = metrics.score(close, true), metrics.score(grey, true)
        assert s_close["ciede2000"] < s_grey["ciede2000"] and s_close["lpips"] < s_grey["lpips"]
        metrics.add(grey, true)
    summary = metrics.summary(n_boot=50)
    assert summary["n_pairs"] == 4 and summary["lpips_trunk"] in ("imagenet", "random")
    for m in ("ciede2000", "lpips", "psnr", "ssim"):
        assert summary[f"{m}_lo"] <= summary[m] <= summary[f"{m}_hi"]


def test_pages_of_different_sizes_are_refused(metrics):
    with pytest.raises(ValueError, match="one size"):
        metrics.score(_page(0, 48, 32), _page(0, 32, 32))
