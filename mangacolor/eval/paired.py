"""Paired metrics: a colorized page scored against its true colours (the field's protocol next to §V's FID).

FID and KID compare two *sets* of pages; where the true colour version of each black-and-white page
is known (matched pairs, the generated demo pages) a colorization can also be scored page by page:

- CIEDE2000: mean colour difference in CIELAB over the page's pixels (scikit-image's
  `deltaE_ciede2000`; 0 = same colours, ~2.3 = just noticeable), the measure closest to "are the
  colours right";
- PSNR and SSIM on RGB (scikit-image, data range 255; identical pages give PSNR = inf);
- LPIPS (the `lpips` package, AlexNet variant with its calibrated linear layers). The AlexNet trunk is
  read from the torch hub cache (`alexnet-owt-7be5be79.pth`); without it the trunk is random-init and
  every summary says so ("lpips_trunk": "random") — then LPIPS only ranks methods of one run.

`PairedMetrics` streams: `add(pred, target)` scores one pair and keeps four numbers, so memory does
not grow with the pages' size; `summary()` gives per-metric means with bootstrap intervals over pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

METRICS = ("ciede2000", "lpips", "psnr", "ssim")
LOWER_IS_BETTER = {"ciede2000": True, "lpips": True, "psnr": False, "ssim": False}


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"paired metrics take uint8 RGB (or grey) pages, got {image.dtype} {image.shape}")
    return image


def ciede2000(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 between two uint8 RGB pages of one size."""
    return float(deltaE_ciede2000(rgb2lab(_rgb(target)), rgb2lab(_rgb(pred))).mean())


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    pred, target = _rgb(pred), _rgb(target)
    if np.array_equal(pred, target):
        return math.inf  # scikit-image divides by zero here; the answer is the same
    return float(peak_signal_noise_ratio(target, pred, data_range=255))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    return float(structural_similarity(_rgb(target), _rgb(pred), channel_axis=2, data_range=255))


@dataclass
class PairedMetrics:
    """Streaming paired scores over (colorized, true colour) page pairs. `lpips_max_side` bounds the
    side LPIPS runs at (pages are area-downscaled first; None: full size)."""

    lpips_weights: str | None = None
    device: str = "cpu"
    lpips_max_side: int | None = 512
    seed: int = 0
    rows: list[tuple[float, float, float, float]] = field(default_factory=list)

    def __post_init__(self):
        from mangacolor.losses.lpips import build_lpips

        # a random trunk must be the same random trunk in every run: seed it without touching the caller's RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._lpips, self.lpips_trunk = build_lpips("alex", self.lpips_weights)
        self._lpips = self._lpips.to(self.device)

    @torch.no_grad()
    def lpips(self, pred: np.ndarray, target: np.ndarray) -> float:
        import cv2

        pair = []
        for image in (_rgb(pred), _rgb(target)):
            h, w = image.shape[:2]
            if self.lpips_max_side and max(h, w) > self.lpips_max_side:
                s = self.lpips_max_side / max(h, w)
                image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            pair.append(torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(self.device))
        return float(self._lpips(pair[0], pair[1]).mean())

    def score(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """The four metrics of one pair (same size, uint8 RGB or grey)."""
        if pred.shape[:2] != target.shape[:2]:
            raise ValueError(f"a colorized page {pred.shape[:2]} and its true colours {target.shape[:2]} must have one size")
        return {"ciede2000": ciede2000(pred, target), "lpips": self.lpips(pred, target),
                "psnr": psnr(pred, target), "ssim": ssim(pred, target)}

    def add(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        s = self.score(pred, target)
        self.rows.append(tuple(s[m] for m in METRICS))
        return s

    def summary(self, n_boot: int = 200, seed: int = 0) -> dict:
        """{metric: mean, metric_lo / metric_hi: 95% bootstrap interval over pages, n_pairs, lpips_trunk}."""
        out: dict = {"n_pairs": len(self.rows), "lpips_trunk": self.lpips_trunk}
        if not self.rows:
            return out | {m: float("nan") for m in METRICS}
        table = np.asarray(self.rows, np.float64)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(table), (n_boot, len(table))) if n_boot else None
        for j, m in enumerate(METRICS):
            col = np.where(np.isinf(table[:, j]), 100.0, table[:, j]) if m == "psnr" else table[:, j]  # inf PSNR: capped at 100 dB
            out[m] = float(col.mean())
            if idx is not None:
                boots = col[idx].mean(axis=1)
                out[f"{m}_lo"], out[f"{m}_hi"] = float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))
        return out
