"""FID / KID numerics, bootstrap, feature cache and report (mangacolor/eval/fid.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from tests.eval.eval_helpers import PoolingNetwork, random_pages

from mangacolor.eval import fid as fidlib
from mangacolor.eval.fid import (
    FeatureExtractor,
    bootstrap_ci,
    compute_fid_kid,
    feature_stats,
    fid_from_features,
    fid_weighted,
    frechet_distance,
    kid,
    metric_report,
)
from mangacolor.eval.inception import build_inception
from mangacolor.io.images import encode_png


def reference_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    """The published formula, written out independently of the library (docs/architecture.md § FID)."""
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    mu1, mu2 = fa.mean(axis=0), fb.mean(axis=0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    root = scipy.linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(root).all():
        eye = np.eye(s1.shape[0]) * 1e-6
        root = scipy.linalg.sqrtm((s1 + eye).dot(s2 + eye))
    root = np.real(root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def _features(n, d, seed, shift=0.0, rank=None):
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.normal(size=(n, d)) + shift
    # Features confined to a `rank`-dimensional subspace: singular covariances, as with few pages.
    basis = rng.normal(size=(rank, d))
    return rng.normal(size=(n, rank)) @ basis + shift


@pytest.mark.parametrize(
    "fa, fb",
    [
        (_features(300, 16, 0), _features(250, 16, 1, shift=0.3)),
        (_features(6, 32, 2), _features(5, 32, 3, shift=0.1)),  # n < d: rank-deficient covariances
        (_features(40, 24, 4, rank=5), _features(40, 24, 5, rank=5, shift=0.2)),  # singular product
    ],
    ids=["full-rank", "fewer-samples-than-dims", "low-rank-subspace"],
)
def test_distance_equals_reference_formula(fa, fb):
    expected = reference_fid(fa, fb)
    assert frechet_distance(*feature_stats(fa), *feature_stats(fb)) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert fid_from_features(fa, fb, "sqrtm") == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # The sqrtm-free form used by the bootstrap is the same quantity.
    assert fid_from_features(fa, fb, "eig") == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_non_finite_root_falls_back_to_eps_identity(monkeypatch):
    # scipy >= 1.16 rarely returns a non-finite root for a PSD product, so force the branch: the
    # first call fails, the retry must be on (Σ1 + 1e-6 I)(Σ2 + 1e-6 I).
    fa, fb = _features(6, 8, 10), _features(6, 8, 11, shift=0.5)
    real_sqrtm = scipy.linalg.sqrtm
    seen = []

    def flaky_sqrtm(a, *args, **kwargs):
        seen.append(a.copy())
        return np.full_like(a, np.nan) if len(seen) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fidlib.linalg, "sqrtm", flaky_sqrtm)
    got = frechet_distance(*feature_stats(fa), *feature_stats(fb))
    monkeypatch.undo()

    assert len(seen) == 2
    (mu1, s1), (mu2, s2) = feature_stats(fa), feature_stats(fb)
    eye = np.eye(8) * 1e-6
    np.testing.assert_allclose(seen[1], (s1 + eye) @ (s2 + eye), rtol=1e-12)
    root = np.real(real_sqrtm((s1 + eye) @ (s2 + eye)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got != pytest.approx(reference_fid(fa, fb), rel=1e-9)  # the offset really was used


def test_large_imaginary_component_is_an_error(monkeypatch):
    fa, fb = _features(10, 4, 0), _features(10, 4, 1)
    monkeypatch.setattr(fidlib.linalg, "sqrtm", lambda a, *_, **__: np.eye(4) * (1 + 0.01j))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(*feature_stats(fa), *feature_stats(fb))
    monkeypatch.setattr(fidlib.linalg, "sqrtm", lambda a, *_, **__: np.eye(4) * (1 + 1e-5j))
    assert np.isfinite(frechet_distance(*feature_stats(fa), *feature_stats(fb)))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    feats = _features(400, 16, 7)
    noise = np.random.default_rng(8).normal(size=feats.shape)
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    values = [fid_from_features(feats, feats + sigma * noise) for sigma in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[0] > 0


@pytest.fixture(scope="module")
def inception_extractor():
    return FeatureExtractor(build_inception("random"), batch_size=3)


def test_random_inception_fid_zero_on_self_and_grows_with_pixel_noise(inception_extractor):
    pages = random_pages(2, size=(40, 32), seed=3)
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 255, size=p.shape) for p in pages]
    noisy = lambda s: [np.clip(p + s * z, 0, 255).astype(np.uint8) for p, z in zip(pages, noise)]  # noqa: E731
    feats = inception_extractor(pages + noisy(0.08) + noisy(0.4))  # two forwards of 3 images
    clean, mild, strong = feats[:2], feats[2:4], feats[4:]
    assert feats.shape == (6, 2048) and np.isfinite(feats).all()
    # "eig": the reference's sqrtm of a 2048x2048 product takes minutes on a 2-core CPU, and the
    # two are shown equal above.
    scale = np.trace(np.cov(clean, rowvar=False))
    assert abs(fid_from_features(clean, clean, "eig")) < 1e-9 * scale
    f_mild, f_strong = fid_from_features(clean, mild, "eig"), fid_from_features(clean, strong, "eig")
    assert 1e-6 * scale < f_mild < f_strong


def test_kid_is_unbiased_on_one_distribution():
    rng = np.random.default_rng(0)
    unbiased, biased = [], []
    for _ in range(40):
        x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
        unbiased.append(kid(x, y, subsets=1, subset_size=30, seed=1)[0])
        kxx, kyy, kxy = (fidlib.polynomial_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())  # the V-statistic, diagonal included
    se = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * se
    assert np.mean(biased) > 10 * se  # the test can tell an unbiased estimator from a biased one
    shifted = kid(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 0.5, subsets=20, subset_size=30)
    assert shifted[0] > 10 * se


def _unbiased_within(k: np.ndarray, owner: np.ndarray) -> float:
    """Mean kernel value over pairs of rows that come from different pages."""
    return float(k[owner[:, None] != owner[None, :]].mean())


def test_bootstrap_counts_match_materialised_resamples():
    fa, fb = _features(25, 12, 0), _features(20, 12, 1, shift=0.2)
    rng = np.random.default_rng(5)
    ca, cb = rng.multinomial(25, np.ones(25) / 25), rng.multinomial(20, np.ones(20) / 20)
    xr, yr = np.repeat(fa, ca, axis=0), np.repeat(fb, cb, axis=0)

    # FID: a page drawn twice counts twice, exactly as in the materialised resample.
    assert fid_weighted(fa, fb, ca, cb) == pytest.approx(reference_fid(xr, yr), rel=1e-6)

    # KID: a page drawn twice is still one page, so pairs of a page with its own copy are left out.
    k = fidlib.polynomial_kernel
    expected = (
        _unbiased_within(k(xr, xr), np.repeat(np.arange(25), ca))
        + _unbiased_within(k(yr, yr), np.repeat(np.arange(20), cb))
        - 2 * k(xr, yr).mean()
    )
    grams = fidlib._Grams(fa, fb)
    assert grams.mmd2_weighted(ca, cb) == pytest.approx(expected, rel=1e-9)
    # With every page drawn once it is the plain unbiased estimate.
    assert grams.mmd2_weighted(np.ones(25), np.ones(20)) == pytest.approx(
        _unbiased_within(k(fa, fa), np.arange(25)) + _unbiased_within(k(fb, fb), np.arange(20)) - 2 * k(fa, fb).mean(),
        rel=1e-9,
    )


def test_bootstrap_interval_spreads_and_one_sided_is_narrower():
    fa, fb = _features(60, 6, 0), _features(60, 6, 1, shift=0.5)
    lo, hi = bootstrap_ci(fa, fb, "fid", n_boot=200, seed=0)
    lo_b, hi_b = bootstrap_ci(fa, fb, "fid", n_boot=200, seed=0, resample="b")
    assert lo < hi and lo_b < hi_b
    assert hi_b - lo_b < hi - lo
    k_lo, k_hi = bootstrap_ci(fa, fb, "kid", n_boot=200, seed=0)
    assert k_lo < kid(fa, fb, subsets=1, subset_size=60)[0] < k_hi
    assert bootstrap_ci(fa, fb, "fid", n_boot=50, seed=3) == bootstrap_ci(fa, fb, "fid", n_boot=50, seed=3)


def test_feature_cache_avoids_recomputation(tmp_path):
    net = PoolingNetwork()
    pages = random_pages(5, seed=1)
    ex = FeatureExtractor(net, batch_size=2, cache_dir=tmp_path / "cache")
    first = ex(pages)
    assert (net.images_seen, net.calls) == (5, 3)

    more = random_pages(2, seed=2)
    messages = []
    ex.progress = messages.append
    second = ex(pages + more)
    assert net.images_seen == 7  # only the two new pages went through the network
    np.testing.assert_array_equal(second[:5], first)
    assert messages[-1] == "features: 7/7 images (5 of this chunk cached)"
    assert (ex.n_computed, ex.n_cached) == (7, 5)

    # A fresh extractor on the same folder (another run) computes nothing.
    net2 = PoolingNetwork()
    again = FeatureExtractor(net2, batch_size=2, cache_dir=tmp_path / "cache")(pages + more)
    assert net2.images_seen == 0
    np.testing.assert_array_equal(again, second)

    # A damaged entry is a miss, recomputed and rewritten, never an error.
    victim = sorted((tmp_path / "cache").rglob("*.npy"))[0]
    victim.write_bytes(b"not an array")
    net4 = PoolingNetwork()
    repaired = FeatureExtractor(net4, cache_dir=tmp_path / "cache")(pages + more)
    assert net4.images_seen == 1
    np.testing.assert_array_equal(repaired, second)
    assert np.load(victim).shape == (48,)

    # The resize is part of the key: a different resize is a different feature.
    net3 = PoolingNetwork()
    FeatureExtractor(net3, resize="bicubic-clean", cache_dir=tmp_path / "cache")(pages[:1])
    assert net3.images_seen == 1


def test_encoded_files_and_bytes_share_cache_entries(tmp_path):
    net = PoolingNetwork()
    pages = random_pages(2, seed=4)
    blobs = [encode_png(p) for p in pages]
    paths = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"p{i}.png"
        path.write_bytes(blob)
        paths.append(path)
    ex = FeatureExtractor(net, cache_dir=f"memory://fid-cache-{tmp_path.name}")  # an fsspec URL, not a folder
    from_bytes = ex(blobs)
    from_files = ex(paths)
    assert net.images_seen == 2
    np.testing.assert_array_equal(from_bytes, from_files)
    # PNG is lossless: the decoded file gives the array's features.
    np.testing.assert_allclose(FeatureExtractor(PoolingNetwork())(pages), from_files, atol=1e-6)


def test_report_names_resize_extractor_and_random_init():
    net = PoolingNetwork()
    a, b = random_pages(12, seed=1), random_pages(10, seed=2)
    report = compute_fid_kid(a, b, FeatureExtractor(net), kid_subsets=5, kid_subset_size=8, n_boot=20)
    assert (report.n_a, report.n_b) == (12, 10)
    assert report.fid > 0 and report.fid_ci[0] < report.fid_ci[1]
    assert report.kid_ci[0] < report.kid_ci[1]
    md = report.to_markdown()
    assert "bilinear-torch" in md and PoolingNetwork.description in md
    assert "random-init Inception: not comparable to published FID" in md
    assert report.to_dict()["random_init"] is True
    same = metric_report(np.ones((3, 4)) * np.arange(3)[:, None], np.ones((3, 4)) * np.arange(3)[:, None],
                         feature_extractor="x", resize="bicubic-clean", random_init=False, n_boot=0, kid_subset_size=3)
    assert same.fid == pytest.approx(0.0, abs=1e-9) and same.fid_ci is None
    assert "random-init" not in same.to_markdown() and "bicubic-clean" in same.to_markdown()
