"""The blurred colour pages the Coloring Latent Space is learned from (paper §III-A, §IV-B-1).

StyleGAN2 is trained on colour pages resized to 256x256 and "highly blurred": the drafting network
can only project a page onto colour blobs (§IV-C-2, Fig. 3), so the generator must draw nothing
sharper, or the projected codes fall outside the latent distribution and style mixing breaks. The
paper picks "the minimum blur level that can be reproduced by the projection method" and does not
give it as a number; ours is a Gaussian of `sigma` pixels at 256 px.

Default sigma = 8 px at 256 (full width at half maximum about 19 px, 3% of the page side): ink
lines (1-3 px at 256), screentone dots and balloon text disappear, while the panel layout (panels
are 60-120 px at 256) and each panel's dominant colours stay - the "panels with blurry colour
blobs" of §IV-C-2. A smaller sigma leaves ink and text that the encoders cannot reproduce; a much
larger one merges panels into one flat colour, the "almost monochrome" draft the paper warns about.

Pages are resized to a square first (the paper's 256x256 X_res / Y_res: the aspect ratio is not
kept; drafts are resized back onto the page by the colorizer), then blurred with mirrored borders
so page margins do not darken.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class BlurConfig(BaseModel):
    """Preset section `blur:`."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(256, ge=8, description="side of the square blurred page (the paper: 256)")
    sigma: float = Field(8.0, ge=0, description="Gaussian sigma in pixels at `size` (0: resize only)")


def to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3]
    raise ValueError(f"expected a uint8 page HxW, HxWx3 or HxWx4, got shape {image.shape}")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size without keeping the aspect ratio: area averaging down, cubic up."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    shrink = size < h or size < w
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def blur_page(image: np.ndarray, size: int = 256, sigma: float = 8.0) -> np.ndarray:
    """uint8 page (any size, grey or colour) -> uint8 (size, size, 3) blurred colour page."""
    if image.dtype != np.uint8:
        raise ValueError(f"blur_page: expected a uint8 image, got {image.dtype}")
    square = resize_square(to_rgb(image), size)
    if sigma <= 0:
        return np.ascontiguousarray(square)
    # Float in, rounded out: uint8 Gaussian filtering in OpenCV uses fixed point and drifts the mean.
    blurred = cv2.GaussianBlur(square.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def detail_energy(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the luma: how much line and texture detail a page has."""
    grey = cv2.cvtColor(to_rgb(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3)).mean())


def detail_kept(original: np.ndarray, blurred: np.ndarray) -> float:
    """Fraction of the page's detail energy left after blurring, both measured at the blurred size."""
    reference = resize_square(to_rgb(original), blurred.shape[0])
    base = detail_energy(reference)
    return detail_energy(blurred) / base if base > 0 else 0.0
