"""Shared pieces for the evaluation tests: a cheap stand-in for the Inception network, test pages."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PoolingNetwork(nn.Module):
    """Nx3x299x299 -> Nx48: 4x4 average pooling of each channel. Counts calls and images seen.

    Cheap enough for cache and report tests, and still a function of the pixels, so different
    images get different features.
    """

    description = "test pooling network (4x4 average pool)"
    random_init = True

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images_seen += x.shape[0]
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def random_pages(n: int, size=(40, 32), seed: int = 0, channels: int | None = 3) -> list[np.ndarray]:
    """Smooth random uint8 images: blobs of colour, distinct per seed."""
    rng = np.random.default_rng(seed)
    shape = (size[0] // 8, size[1] // 8) + ((channels,) if channels else ())
    pages = []
    for _ in range(n):
        coarse = rng.uniform(0, 255, size=shape).astype(np.float32)
        fine = np.kron(coarse, np.ones((8, 8, 1) if channels else (8, 8), dtype=np.float32))
        pages.append(np.clip(fine + rng.normal(0, 8, size=fine.shape), 0, 255).astype(np.uint8))
    return pages
