"""Page geometry shared by training and inference: the training canvas, the working size, resizing.

Appendix B trains on whole pages brought to a 3:2 canvas (768x512) keeping their aspect, then cropped;
a page is colorized on the same canvas, at most a working long side, and the colours are brought back
to the page's own size. This module has no heavy imports (cv2 and NumPy), so inference can use it
without loading the augmentation pipeline.
"""

from __future__ import annotations

import cv2
import numpy as np

PAPER_CROP_HW = (768, 512)
PAPER_CANVAS_HW = PAPER_CROP_HW  # Appendix B: whole pages on the 3:2 canvas, then the 768x512 crop


def canvas_size(height: int, width: int, canvas: tuple[int, int] = PAPER_CANVAS_HW) -> tuple[int, int]:
    """(h, w) of a page scaled, keeping its aspect, so that it just covers the canvas (H, W).

    A 3:2 portrait page becomes the canvas; an A4-like page a few pixels wider; a double spread
    keeps its aspect (twice as wide), at the same scale as the single pages of its book.
    """
    ch, cw = canvas
    s = max(ch / height, cw / width)
    return max(ch, round(height * s)), max(cw, round(width * s))


def working_size(height: int, width: int, long_side: int | None, canvas: tuple[int, int] | None = None) -> tuple[int, int]:
    """The size the generator runs at: the page on its training canvas (if any), then at most `long_side`."""
    if canvas is not None:
        height, width = canvas_size(height, width, canvas)
    if long_side is None or max(height, width) <= long_side:
        return height, width
    s = long_side / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def resize_to(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 image resized to (h, w): area filter when shrinking, bilinear when enlarging."""
    if image.shape[:2] == tuple(hw):
        return image
    shrink = hw[0] * hw[1] < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(*hw, *image.shape[2:]) if image.ndim == 3 else out


def to_canvas(sample: dict[str, np.ndarray], canvas: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Every image of a page sample on the page's canvas size (`canvas_size` of its "bw"/"input").

    Page-aligned images (any key) are resized to it; the whole-page draft ("draft", any size, the
    StyleGAN draft is square) is stretched to it too, which undoes the squeeze into 256x256 and puts
    each draft pixel back over the part of the page it was made from. canvas None: the page's own size
    (only the draft is brought onto the page).
    """
    page = sample["bw"] if "bw" in sample else sample["input"]
    hw = page.shape[:2] if canvas is None else canvas_size(*page.shape[:2], canvas)
    return {k: (resize_to(v, hw) if v is not None else None) for k, v in sample.items()}
