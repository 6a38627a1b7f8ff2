"""How far synthetic black-and-white pages are from real ones, measured without network weights.

The paper makes its training inputs by turning colour pages into black-and-white ones (xDoG,
refinement, CUT: §IV-A-3) and argues that the closer they look to real printed pages, the better the
colorizer transfers. FID needs the Inception weights, which tests and the demo do not have; these
statistics need nothing and measure what distinguishes a printed page from a grey conversion:

- `hist_w1`: Wasserstein-1 distance between the sets' mean 32-bin grey-level histograms, with grey
  levels on [0, 1] (0 for identical distributions, at most 31/32). Each page counts once,
  whatever its size.
- halftone energy (`halftone_index`): printing makes grey out of black dots on white paper, a grey
  conversion makes it out of grey pixels. In windows whose mean m is mid-grey, a binary pattern has
  variance m(1 − m) and a flat grey has none, so the local variance divided by m(1 − m) is 1 for
  screentone and 0 for flat grey. Averaged over mid-grey windows of a page, then over pages. Line-art
  edges also count as mid-grey windows with full variance; they appear on both sides of the
  comparison, so they shift both sets alike.
- ink coverage: the fraction of pixels darker than a threshold (128 by default).

`synthetic_gap` combines them into one scalar, `gap` = the mean of the three differences
(`hist_w1`, |Δ halftone|, |Δ ink|); each lies in [0, 1] in its natural unit (a distance between
distributions on [0, 1], differences of fractions), so none needs a data-dependent rescaling and the
gap of a set with itself is exactly 0. With a feature extractor it adds FID and KID.
Statistics depend on resolution (the window is in pixels): compare sets at the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

HIST_BINS = 32
INK_THRESHOLD = 128
HALFTONE_WINDOW = 7
MID_GREY = (0.15, 0.85)


def _grey(page: np.ndarray) -> np.ndarray:
    page = np.asarray(page)
    if page.dtype != np.uint8:
        raise TypeError(f"pages must be uint8 arrays, got dtype {page.dtype}")
    if page.ndim == 3 and page.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(page), cv2.COLOR_RGB2GRAY)
    if page.ndim == 3 and page.shape[2] == 1:
        return page[..., 0]
    if page.ndim != 2:
        raise ValueError(f"pages must be HxW (or HxWx3) uint8 arrays, got shape {page.shape}")
    return page


def grey_histogram(page: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Normalised histogram of grey levels in `bins` equal bins over 0..255."""
    if 256 % bins:
        raise ValueError(f"bins must divide 256, got {bins}")
    counts = np.bincount(_grey(page).ravel() // (256 // bins), minlength=bins)
    return counts / counts.sum()


def mean_histogram(pages: Sequence[np.ndarray], bins: int = HIST_BINS) -> np.ndarray:
    if len(pages) == 0:
        raise ValueError("empty page set")
    return np.mean([grey_histogram(p, bins) for p in pages], axis=0)


def histogram_w1(hist_a: np.ndarray, hist_b: np.ndarray) -> float:
    """Wasserstein-1 between two histograms of equal bins over [0, 1]: Σ|CDF_a − CDF_b| · bin width."""
    return float(np.abs(np.cumsum(hist_a) - np.cumsum(hist_b)).sum() / len(hist_a))


def ink_coverage(page: np.ndarray, threshold: int = INK_THRESHOLD) -> float:
    """Fraction of pixels darker than `threshold`."""
    return float((_grey(page) < threshold).mean())


def halftone_index(page: np.ndarray, window: int = HALFTONE_WINDOW, mid_grey: tuple[float, float] = MID_GREY) -> float:
    """Mean of local variance / m(1 − m) over windows whose mean m is mid-grey; NaN if there are none."""
    x = _grey(page).astype(np.float32) / 255.0
    box = dict(ddepth=-1, ksize=(window, window), normalize=True, borderType=cv2.BORDER_REFLECT)
    m = cv2.boxFilter(x, **box)
    var = np.clip(cv2.boxFilter(x * x, **box) - m * m, 0.0, None)
    mask = (m >= mid_grey[0]) & (m <= mid_grey[1])
    if not mask.any():
        return float("nan")
    ratio = var[mask] / (m[mask] * (1.0 - m[mask]))
    return float(np.clip(ratio, 0.0, 1.0).mean())


def _set_halftone(pages: Sequence[np.ndarray], window: int) -> float:
    values = np.array([halftone_index(p, window) for p in pages])
    # A set without any mid-grey area has no tone to be made of dots: count it as no halftone.
    return float(np.nanmean(values)) if np.isfinite(values).any() else 0.0


def synthetic_gap(
    synth_pages: Sequence[np.ndarray],
    real_pages: Sequence[np.ndarray],
    extractor=None,
    *,
    ink_threshold: int = INK_THRESHOLD,
    window: int = HALFTONE_WINDOW,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    fid_method: str = "eig",
    seed: int = 0,
) -> dict:
    """Weight-free domain-gap statistics of synthetic vs real black-and-white pages (see module doc).

    Returns `gap` and its components, per-set values, and with `extractor` (a
    `mangacolor.eval.fid.FeatureExtractor`) `fid`, `kid_mean`, `kid_std` and what they were computed
    with. `fid_method="eig"` by default: this is a diagnostic, not a number to compare with papers.
    """
    if len(synth_pages) == 0 or len(real_pages) == 0:
        raise ValueError(f"need pages on both sides, got {len(synth_pages)} synthetic and {len(real_pages)} real")
    hist_w1 = histogram_w1(mean_histogram(synth_pages), mean_histogram(real_pages))
    halftone_synth, halftone_real = _set_halftone(synth_pages, window), _set_halftone(real_pages, window)
    ink_synth = float(np.mean([ink_coverage(p, ink_threshold) for p in synth_pages]))
    ink_real = float(np.mean([ink_coverage(p, ink_threshold) for p in real_pages]))
    out = {
        "hist_w1": hist_w1,
        "halftone_synth": halftone_synth,
        "halftone_real": halftone_real,
        "halftone_diff": abs(halftone_synth - halftone_real),
        "ink_synth": ink_synth,
        "ink_real": ink_real,
        "ink_diff": abs(ink_synth - ink_real),
        "n_synth": len(synth_pages),
        "n_real": len(real_pages),
    }
    out["gap"] = float(np.mean([out["hist_w1"], out["halftone_diff"], out["ink_diff"]]))
    if extractor is not None:
        from mangacolor.eval.fid import compute_fid_kid

        report = compute_fid_kid(
            [_grey(p) for p in real_pages],
            [_grey(p) for p in synth_pages],
            extractor,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            n_boot=0,
            seed=seed,
            fid_method=fid_method,
        )
        out.update(
            fid=report.fid,
            kid_mean=report.kid_mean,
            kid_std=report.kid_std,
            feature_extractor=report.feature_extractor,
            resize=report.resize,
            random_init=report.random_init,
        )
    return out
