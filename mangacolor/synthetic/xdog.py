"""xDoG line extraction: step 1 of the synthetic black-and-white pages (paper §IV-A-3, ref. [54]).

The extended difference of Gaussians of Winnemöller et al. (2012), on a grey page in [0, 1]:

    D = G_σ − γ·G_{kσ}
    T = 1                        where D ≥ ε
    T = 1 + tanh(φ·(D − ε))      elsewhere

Flat areas of any tone give D = (1 − γ)·v ≥ 0 > ε, so they come out as paper; ink appears on the
dark side of every edge. The paper uses "parameters similar to [38]", the authors' 2021 code:
σ 0.5, k 8, γ 0.95, φ 89.25, ε −0.1 on a 7× upscaled page, then an Otsu threshold and an area
downscale back to the page size (the `authors2021` preset). Two other parameter sets seen for
anime line art are here too (`alacgan`, `generic`); see docs/architecture.md § xDoG.

σ is in pixels of the working image (the upscaled one when `upscale` > 1): that is what makes the
upscale worth doing, since the lines come out thinner than one page pixel and the area downscale
turns them into anti-aliased strokes.

A 7× upscaled 1654×1170 page is 95 M pixels, so the page is processed in horizontal strips that
overlap by the filters' reach; the result equals processing the whole page at once. Otsu needs a
histogram of the whole page, so with `otsu` the strips are visited twice (the quantised T of the
first pass is kept when it fits in `max_cache_pixels` bytes, recomputed otherwise).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import cv2
import numpy as np


class XDoGError(ValueError):
    """A page xDoG cannot process; `reason` is short and goes into the quarantine manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class XDoGConfig:
    sigma: float | tuple[float, ...] = 0.8  # a tuple is a set to draw σ from, once per page
    k: float = 1.6
    gamma: float = 0.98
    phi: float = 200.0
    epsilon: float = -0.1
    upscale: int = 1  # work on an image this many times larger, then area-downscale back
    otsu: bool = False  # binarise the working image with Otsu's threshold before the downscale
    truncate: float = 3.0  # Gaussian kernels reach truncate·σ; the strips overlap by that much
    max_working_pixels: int = 16_000_000  # upper bound on one strip's working image (float32 each)
    max_cache_pixels: int = 256_000_000  # keep pass-1 results (uint8) for Otsu below this size

    @classmethod
    def preset(cls, name: str, **overrides) -> XDoGConfig:
        if name not in PRESETS:
            raise KeyError(f"unknown xDoG preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def __post_init__(self):
        sigmas = self.sigma if isinstance(self.sigma, tuple) else (self.sigma,)
        if not sigmas or any(s <= 0 for s in sigmas) or self.k <= 0:
            raise ValueError(f"xDoG needs σ > 0 and k > 0, got σ={self.sigma}, k={self.k}")
        if not isinstance(self.upscale, int) or self.upscale < 1:
            raise ValueError(f"xDoG upscale must be a positive int (strips stay block-aligned), got {self.upscale!r}")


PRESETS: dict[str, XDoGConfig] = {
    "authors2021": XDoGConfig(sigma=0.5, k=8.0, gamma=0.95, phi=89.25, epsilon=-0.1, upscale=7, otsu=True),
    "alacgan": XDoGConfig(sigma=(0.3, 0.4, 0.5), k=4.5, gamma=0.95, phi=1e9, epsilon=-0.1),
    "generic": XDoGConfig(sigma=0.8, k=1.6, gamma=0.98, phi=200.0, epsilon=-0.1),
}


def to_grey(image: np.ndarray) -> np.ndarray:
    """Any page array -> float32 HxW in [0, 1]. Raises XDoGError for what is not a page."""
    if not isinstance(image, np.ndarray):
        raise XDoGError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise XDoGError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise XDoGError(f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        x = image.astype(np.float32) / 65535.0
    elif image.dtype == np.bool_:
        x = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise XDoGError("image holds NaN or infinite values")
        x = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise XDoGError(f"unsupported dtype {image.dtype} (expected uint8, uint16, bool or float in [0, 1])")
    if x.ndim == 3:
        if x.shape[2] == 4:
            # Transparent areas are paper: composite onto white.
            alpha = x[..., 3:]
            x = x[..., :3] * alpha + (1.0 - alpha)
        x = cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(x)


def _blur(x: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    radius = max(1, math.ceil(truncate * sigma))
    size = 2 * radius + 1
    return cv2.GaussianBlur(x, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def xdog_response(grey: np.ndarray, sigma: float, cfg: XDoGConfig) -> np.ndarray:
    """T of the formula above for a float32 grey image at working resolution, in [0, 1]."""
    g1 = _blur(grey, sigma, cfg.truncate)
    g2 = _blur(grey, cfg.k * sigma, cfg.truncate)
    # φ·(D − ε) in one OpenCV pass, then 1 + tanh(min(·, 0)), which is exactly 1 where D ≥ ε:
    # both branches of the formula without boolean indexing of a 95 M pixel strip.
    z = cv2.addWeighted(g1, cfg.phi, g2, -cfg.gamma * cfg.phi, -cfg.epsilon * cfg.phi)
    np.minimum(z, 0.0, out=z)
    np.tanh(z, out=z)
    z += 1.0
    return z


def _to_uint8(t: np.ndarray) -> np.ndarray:
    """[0, 1] float32 -> uint8, rounded and saturated (OpenCV: one pass, no temporaries)."""
    return cv2.convertScaleAbs(t, alpha=255.0)


def otsu_threshold(hist: np.ndarray) -> int:
    """Otsu's threshold on a 256-bin histogram: values > threshold are paper."""
    hist = hist.astype(np.float64)
    total = hist.sum()
    levels = np.arange(hist.size, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * levels)
    mean_total = m0[-1] / total
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    if between.max() <= 0:
        # One grey level only (a blank page): no split exists, keep it as it is.
        return 127
    return int(np.argmax(between))


def _sigma_for(image: np.ndarray, cfg: XDoGConfig, rng: np.random.Generator | None) -> float:
    if not isinstance(cfg.sigma, tuple):
        return float(cfg.sigma)
    if rng is None:
        # Same page, same σ: the data version of an xDoG page must not depend on luck.
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(image).data))
    return float(cfg.sigma[int(rng.integers(len(cfg.sigma)))])


def xdog(
    image: np.ndarray,
    config: XDoGConfig | str = "authors2021",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """xDoG line art of a page: uint8 HxW, 255 = paper, 0 = ink, the size of the input.

    `image`: uint8 (or uint16 / float in [0, 1]) grey, RGB or RGBA. `rng` draws σ when the config
    holds a set of σ; without one the draw is seeded by the page's content. Raises XDoGError only
    for what has no pixels or no meaning (0-size, NaN, odd shapes); blank and tiny pages work.
    """
    cfg = XDoGConfig.preset(config) if isinstance(config, str) else config
    grey = to_grey(image)
    sigma = _sigma_for(image, cfg, rng)
    height, width = grey.shape
    u = cfg.upscale

    # Strip geometry in page rows: the margin covers the wider Gaussian plus bicubic support.
    reach = math.ceil(cfg.truncate * cfg.k * sigma) + math.ceil(cfg.truncate * sigma)
    margin = math.ceil(reach / u) + 2
    rows = max(1, cfg.max_working_pixels // (width * u * u) - 2 * margin)
    strips = [(r0, min(height, r0 + rows)) for r0 in range(0, height, rows)]

    def working(r0: int, r1: int) -> np.ndarray:
        s0, s1 = max(0, r0 - margin), min(height, r1 + margin)
        part = grey[s0:s1]
        if u > 1:
            part = cv2.resize(part, (width * u, (s1 - s0) * u), interpolation=cv2.INTER_CUBIC)
        t = xdog_response(part, sigma, cfg)
        return t[(r0 - s0) * u : (r1 - s0) * u]

    def downscale(t: np.ndarray, r0: int, r1: int) -> np.ndarray:
        # Integer factor: INTER_AREA is the exact block mean.
        return t if u == 1 else cv2.resize(t, (width, r1 - r0), interpolation=cv2.INTER_AREA)

    out = np.empty((height, width), dtype=np.uint8)
    if not cfg.otsu:
        for r0, r1 in strips:
            out[r0:r1] = _to_uint8(downscale(working(r0, r1), r0, r1))
        return out

    keep = height * width * u * u <= cfg.max_cache_pixels
    cache: list[np.ndarray | None] = []
    hist = np.zeros(256, dtype=np.int64)
    for r0, r1 in strips:
        q = _to_uint8(working(r0, r1))
        # calcHist counts in float32, exact below 2**24 per bin: strips stay under that by default.
        hist += cv2.calcHist([q], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        cache.append(q if keep else None)
    threshold = otsu_threshold(hist)
    for (r0, r1), q in zip(strips, cache):
        if q is None:
            q = _to_uint8(working(r0, r1))
        _, binary = cv2.threshold(q, threshold, 255, cv2.THRESH_BINARY)
        out[r0:r1] = downscale(binary, r0, r1)
    return out
