"""Training-time augmentations of the paper's Appendix B, one albumentations pipeline for every stage.

Appendix B: horizontal flip (p 0.5); random mirror padding of at most 15 px followed by a random
crop of 768x512 (portrait 3:2, which trained better than 512x512 squares); colour jitter of
brightness, contrast and saturation on the network's input; with p 0.03 the network's input is not
the synthetic black-and-white page but the weighted grey conversion of the colour page. A second
colour jitter is applied to colour pages *before* the synthetic preprocessing (xDoG -> refiner ->
CUT), so that no colour feature survives into the synthetic pages: that one is `color_page_jitter`.

One page transform (Appendix B's remark that 512x512 crops cut "scenes near the image edges"): the
whole page is first brought to the training canvas keeping its aspect (`data/canvas.py canvas_size`: scaled so it
covers the canvas, 768x512 for the paper, so a double spread stays twice as wide and a page's height
always maps to the canvas height), then flipped, mirror-padded and cropped. The input, the target,
the colour page and the coloring draft all go through the very same transform: the whole-page draft
(a 256x256 StyleGAN image of the page stretched to a square) is first stretched back onto the
page's canvas size, so after the crop it lies on the region it colours (`to_canvas`).

Spatial transforms must hit the input, the target, the colour page and the draft identically, colour
jitter only the input. Albumentations applies pixel-level transforms to every "image" target and only
spatial ones to "mask" targets, so the target and the colour page travel as mask-typed targets.

Albumentations 2 seeds each transform of a Compose with the *same* seed, so two transforms with
probabilities draw the same uniform number (a grey substitution would then always come with a
flip). One generator shared by all transforms (`set_random_state`) keeps the draws independent.
"""

from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

from mangacolor.data.canvas import PAPER_CROP_HW, to_canvas

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, the "weighted sum of the channels"
def weighted_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 HxW with the BT.601 weights."""
    if rgb.ndim == 2:
        return rgb
    w = np.asarray(GREY_WEIGHTS, dtype=np.float32)
    return np.clip(np.rint(rgb[..., :3].astype(np.float32) @ w), 0, 255).astype(np.uint8)


class GreySubstitution(A.DualTransform):
    """Replace the network input by the weighted grey conversion of the colour page (Appendix B).

    Reads the colour page from the `color_for_grey` target, which has already been flipped,
    padded and cropped like the input, so the substitute stays aligned with the target.
    """

    def __init__(self, p: float = 0.03):
        super().__init__(p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        colour = data.get("color_for_grey")
        return {"grey": None if colour is None else weighted_grey(colour)}

    def apply(self, img: np.ndarray, grey: np.ndarray | None = None, **params: Any) -> np.ndarray:
        if grey is None:
            return img
        if img.ndim == 3 and img.shape[2] == 3:
            return np.repeat(grey[..., None], 3, axis=2)
        return grey.reshape(img.shape)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return mask

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class PairedAugmentation:
    """callable(input=..., target=..., color_for_grey=None, draft=None, seed=None) -> {"input", "target", "grey"[, "draft"]}.

    `input`: the network input (uint8 HxW or HxWxC); `target`: what the network should produce
    (any channels, same HxW); `color_for_grey`: the colour page aligned with the input, the source
    of the grey substitution (without it the substitution is skipped); `draft`: the whole-page
    coloring draft (any size), returned in crop coordinates under "draft". `grey` in the result tells
    whether the input was substituted. With a `canvas` (H, W) every image is first brought to the
    page's canvas size (`to_canvas`); without one pages are cropped at their own size. Deterministic:
    the sequence of results depends only on the seed given at construction; `seed=` on a call
    re-seeds first (for loops that resume mid-way).
    """

    def __init__(
        self,
        crop_hw: tuple[int, int] = PAPER_CROP_HW,
        max_pad: int = 15,
        flip_p: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        jitter_p: float = 1.0,
        grey_p: float = 0.03,
        seed: int = 0,
        canvas: tuple[int, int] | None = None,
    ):
        h, w = crop_hw
        mirror = cv2.BORDER_REFLECT_101
        self.crop_hw = (int(h), int(w))
        self.canvas = None if canvas is None else (int(canvas[0]), int(canvas[1]))
        self.compose = A.Compose(
            [
                A.HorizontalFlip(p=flip_p),
                A.CropAndPad(px=(0, max_pad), keep_size=False, sample_independently=True, border_mode=mirror, p=1.0 if max_pad > 0 else 0.0),
                # Pages smaller than the crop are mirrored out to it rather than rejected.
                A.PadIfNeeded(min_height=h, min_width=w, border_mode=mirror, position="center"),
                A.RandomCrop(height=h, width=w),
                GreySubstitution(p=grey_p),
                A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=0.0, p=jitter_p),
            ],
            additional_targets={"target": "mask", "color_for_grey": "mask", "draft": "mask"},
            save_applied_params=True,
        )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, *, input: np.ndarray, target: np.ndarray, color_for_grey: np.ndarray | None = None,
                 draft: np.ndarray | None = None, seed: int | None = None) -> dict:
        if seed is not None:
            self.reseed(seed)
        data = {"image": input, "target": target}
        if color_for_grey is not None:
            data["color_for_grey"] = color_for_grey
        if draft is not None:
            data["draft"] = draft
        if self.canvas is not None or draft is not None:
            data = to_canvas({"input": data.pop("image"), **data}, self.canvas)
            data = {"image": data.pop("input"), **data}
        out = self.compose(**data)
        applied = {name for name, _ in out.get("applied_transforms", [])}
        result = {
            "input": out["image"],
            "target": out["target"],
            "grey": color_for_grey is not None and GreySubstitution.__name__ in applied,
            "flipped": "HorizontalFlip" in applied,
        }
        if draft is not None:
            result["draft"] = out["draft"]
        return result


def paired_augmentation(crop_hw: tuple[int, int] = PAPER_CROP_HW, seed: int = 0, **kwargs) -> PairedAugmentation:
    """The Appendix B pipeline; keyword arguments as in `PairedAugmentation`."""
    return PairedAugmentation(crop_hw=crop_hw, seed=seed, **kwargs)


class ColorPageJitter:
    """Brightness / contrast / saturation jitter of a colour page before the synthetic preprocessing."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, p: float = 1.0, seed: int = 0):
        self.compose = A.Compose([A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=0.0, p=p)])
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.reseed(seed)
        return self.compose(image=image)["image"]


def color_page_jitter(seed: int = 0, **kwargs) -> ColorPageJitter:
    return ColorPageJitter(seed=seed, **kwargs)
