"""Perceptual hashes for near-duplicate pages (the same scan uploaded twice, re-encoded).

A difference hash of the grey page at 17x16 (256 bits) survives re-compression and small rescaling but not a
different page; two pages within a few bits of Hamming distance are near-duplicates.
"""

from __future__ import annotations

import cv2
import numpy as np


def dhash(image: np.ndarray, size: int = 16) -> int:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (size + 1, size), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return int(bin(a ^ b).count("1"))


class DuplicateFinder:
    """Remembers the pages seen so far; `check` answers the id of an earlier near-duplicate."""

    def __init__(self, max_distance: int = 16):
        self.max_distance = max_distance
        self.seen: list[tuple[int, str]] = []

    def check(self, page_id: str, h: int) -> tuple[str, int] | None:
        for other, other_id in self.seen:
            d = hamming(h, other)
            if d <= self.max_distance:
                return other_id, d
        self.seen.append((h, page_id))
        return None
