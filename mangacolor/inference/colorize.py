"""Colorizing pages with a trained generator, exactly or fast (paper §III-B; docs/architecture.md § Targets).

Exact mode runs the generator on the page at its own size, as the paper does. The fast modes trade
a measured amount of fidelity for time on CPUs (figures: benchmarks/colorize.py):

- channels-last memory format and batch-norm folded into the encoder's convolutions: same maths,
  oneDNN's faster kernels;
- bf16 autocast: on CPUs with AVX512-BF16 or AMX the convolutions run at about twice the rate;
- a working size: the generator runs on the page scaled so its long side is `working_long_side`,
  and only the colour is taken from it. Colour varies slowly in a manga page while the ink carries
  the fine detail, so the output's chroma (YCbCr Cb, Cr) is upsampled bilinearly, and its luminance
  is the upsampled luminance plus the detail the downscaling removed from the original page
  (original − upsample(downsample(original))), scaled by `luma_detail`. Lines stay as sharp as in
  the input, but so do screentones, which a colorizer at full size tends to paint over; and the
  network sees ink and tones at a scale it was not trained on. On a briefly trained model this
  moved colours by a mean ΔE76 of about 20 from the full-size output (bf16 alone: 0.2): prefer the
  "bf16" preset until a trained model shows the working size costs less.

The training canvas: a model trained on pages brought to a canvas (Appendix B: 768x512, keeping the
page's aspect, `mangacolor.data.canvas.canvas_size`) colorizes a page brought to the same canvas, so
ink and screentones reach it at the scale it learnt them; the colour is then carried back to the
page's own size like the working size's. `ModelBundle` fills `canvas` from the bundle.

Pages above a working size (`max_long_side`, 1536 px in the CLI's presets and the `Colorizer` API)
take the same working-size path, never the generator at full resolution: a 600 dpi scan
(6000×4000) would need about 20 GiB of activations (1.3 GiB measured at 1536×1024, paper-size
generator) and many minutes per page on a CPU. The default is this chroma
transfer rather than tiles with overlap: the generator sees the whole page at once, so a
character's colours cannot change from one tile to the next, memory and time are bounded whatever
the scan's resolution, and the ink (the part people read) keeps the scan's own pixels; tiles would
cost the full-resolution compute (about 15× a 1536×1024 page for 6000×4000) and show each tile only
a part of the page. `colorize_page` does the transfer on horizontal strips of the full-resolution
page (`transfer_chroma_strips`), so its memory is the working-size run plus a few strips. Measured
(benchmarks/colorize.py): a 6000×4000 page through `mangacolor colorize` peaks at 2.41 GiB RSS; on a
768×1152 demo page and a briefly trained paper-size model, working sizes 2× and 3× smaller are
ΔE76 20.6 and 23.9 from the own-size output, and their error to the true colours is 36.5 and 38.4
against the own-size output's 33.5 (a briefly trained model is scale-sensitive; re-measure with a
trained one).

Hints and drafts: a hint is given as an RGBA image the size of the page (alpha > 127 marks hint
pixels, RGB their colour), a draft as any RGB image (resized to the page).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mangacolor.data.canvas import working_size
from mangacolor.inference.hints import resize_hint_array
from mangacolor.io.images import from_tensor, to_tensor
from mangacolor.models.colorizer import colorize


@dataclass(frozen=True)
class InferenceOptions:
    working_long_side: int | None = None  # None: run at the page's own size
    channels_last: bool = True
    amp_dtype: torch.dtype | None = None  # torch.bfloat16: bf16 autocast
    fold_batchnorm: bool = True
    luma_detail: float = 1.0  # working size only: how much of the page's own fine detail to add back
    multiple: int = 32
    canvas: tuple[int, int] | None = None  # (H, W) the model was trained on: pages are brought to it first
    max_long_side: int | None = None  # colorize_page: pages larger than this take the working-size path
    fit_width: int | None = None  # colorize_page: the 2021 release's size (mangacolor.models.mc2.release_size)
    pad_mode: str = "reflect"  # "mc2": pad as the 2021 release (mangacolor.models.colorizer.release_padding)


# Pages above this long side are coloured at it and their chroma moved onto the original ink. 1536 px
# keeps the paper-size generator under ~2.5 GiB peak on CPU (benchmarks/colorize.py --page-size).
MAX_LONG_SIDE = 1536


# "bf16" (the page's own size) is the fast mode to use: a mean ΔE76 of 0.2 from exact, 1/5 of the
# 2021 layout's fp32 time on one core (benchmarks/colorize.py). "fast" adds a working size: several
# times faster again, but a network trained at page scale sees ink and screentone at a scale it was
# not trained on, and on a briefly trained model its colours moved by ΔE76 ≈ 20 (module docstring).
PRESETS: dict[str, InferenceOptions] = {
    "exact": InferenceOptions(max_long_side=MAX_LONG_SIDE),
    "bf16": InferenceOptions(amp_dtype=torch.bfloat16, max_long_side=MAX_LONG_SIDE),
    "fast": InferenceOptions(working_long_side=512, amp_dtype=torch.bfloat16, max_long_side=MAX_LONG_SIDE),
}


# ---------------------------------------------------------------------------------------------
# Model preparation
# ---------------------------------------------------------------------------------------------


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    return torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each BatchNorm that directly follows a conv into it (eval only). Returns how many.

    Covers the timm ResNet family's patterns: `convN` + `bnN` siblings and `downsample = [conv, bn]`.
    """
    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        for name, child in children.items():
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn = children.get("bn" + name[4:])
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(parent, name, _fuse(child, bn))
                    setattr(parent, "bn" + name[4:], nn.Identity())
                    folded += 1
        if isinstance(parent, nn.Sequential) and len(parent) == 2:
            conv, bn = parent[0], parent[1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent[0], parent[1] = _fuse(conv, bn), nn.Identity()
                folded += 1
    return folded


def prepare_generator(generator: nn.Module, options: InferenceOptions = InferenceOptions(), device: torch.device | str = "cpu") -> nn.Module:
    """An eval-mode copy of the generator laid out for `options` (the original is left untouched)."""
    model = copy.deepcopy(generator).eval().to(device)
    if options.fold_batchnorm:
        fold_batchnorm(model)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Colour-space helpers (tensors in [0, 1])
# ---------------------------------------------------------------------------------------------


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601, as JPEG: (B,3,H,W) in [0, 1] -> Y in [0, 1], Cb/Cr centred on 0."""
    r, g, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564, (r - y) * 0.713], dim=1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    y, cb, cr = ycc.unbind(1)
    return torch.stack([y + 1.403 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.773 * cb], dim=1)


def transfer_chroma(small_rgb: torch.Tensor, bw_small: torch.Tensor, bw_full: torch.Tensor, detail: float = 1.0) -> torch.Tensor:
    """Working-size colorization -> full size: upsampled chroma on the original page's detail.

    All in [-1, 1]: `small_rgb` (B,3,h,w) the generator's output for `bw_small` (B,1,h,w), the
    page downscaled from `bw_full` (B,1,H,W). `detail` scales the fine detail added back to the
    luminance (1: all of it; 0: plain upsampling). Returns (B,3,H,W) in [-1, 1].
    """
    size = bw_full.shape[-2:]
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    ycc = up(rgb_to_ycbcr((small_rgb.float() + 1) / 2))
    ink = (bw_full.float() - up(bw_small.float())) / 2  # the detail the downscaling blurred away
    y = ycc[:, :1] + detail * ink
    return (ycbcr_to_rgb(torch.cat([y, ycc[:, 1:]], dim=1)).clamp(0, 1) * 2 - 1).to(bw_full.dtype)


def transfer_chroma_strips(small_rgb: np.ndarray, small_grey: np.ndarray, page: np.ndarray, detail: float = 1.0,
                           rows: int = 256) -> np.ndarray:
    """`transfer_chroma` on uint8 arrays, one strip of `rows` full-resolution rows at a time.

    `small_rgb` (h,w,3) is the colorization of `small_grey` (h,w), the page `page` (H,W) downscaled.
    Bilinear upsampling with the same half-pixel convention as F.interpolate(align_corners=False),
    so the result matches `transfer_chroma`; memory is O(rows × W), not O(H × W) floats.
    """
    H, W = page.shape
    h, w = small_grey.shape
    ycc = rgb_to_ycbcr(torch.from_numpy(small_rgb).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    small = np.ascontiguousarray(np.dstack([ycc, small_grey.astype(np.float32) / 255]))  # Y, Cb, Cr, grey
    map_x = np.broadcast_to(((np.arange(W, dtype=np.float32) + 0.5) * (w / W) - 0.5).clip(0, w - 1), (rows, W))
    out = np.empty((H, W, 3), np.uint8)
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        ys = ((np.arange(r0, r1, dtype=np.float32) + 0.5) * (h / H) - 0.5).clip(0, h - 1)
        map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (r1 - r0, W)))
        up = cv2.remap(small, np.ascontiguousarray(map_x[: r1 - r0]), map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        y = up[..., 0] + detail * (page[r0:r1].astype(np.float32) / 255 - up[..., 3])
        cb, cr = up[..., 1], up[..., 2]
        rgb = np.dstack([y + 1.403 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.773 * cb])
        out[r0:r1] = (rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return out


def resize_hint(hint: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Downscale a (B,4,H,W) hint so no hint point vanishes: a cell is hinted if any pixel in it
    was, with the mean colour of its hinted pixels."""
    if hint.shape[-2:] == tuple(size):
        return hint
    mask = F.interpolate(hint[:, 3:], size=size, mode="area")
    rgb = F.interpolate(hint[:, :3], size=size, mode="area") / mask.clamp_min(1e-6)
    on = (mask > 0).to(hint.dtype)
    return torch.cat([rgb * on, on], dim=1)


def hint_from_rgba(rgba: np.ndarray) -> torch.Tensor:
    """User hint image (H,W,4) uint8 -> (1,4,H,W): RGB in [-1, 1] × mask, mask = alpha > 127."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"a hint must be an RGBA image (H, W, 4); got shape {rgba.shape}")
    mask = torch.from_numpy(rgba[..., 3] > 127).float()[None, None]
    rgb = to_tensor(rgba[..., :3])[None]
    return torch.cat([rgb * mask, mask], dim=1)


# ---------------------------------------------------------------------------------------------
# Colorizing
# ---------------------------------------------------------------------------------------------


def colorize_pages(
    generator: nn.Module,
    bw: torch.Tensor,
    hint: torch.Tensor | None = None,
    draft: torch.Tensor | None = None,
    options: InferenceOptions = InferenceOptions(),
) -> torch.Tensor:
    """(B,1,H,W) pages in [-1, 1] -> (B,3,H,W) colorizations, with `options` applied.

    `generator` should come from `prepare_generator(…, options)`; inputs go to its device.
    """
    p = next(generator.parameters())
    bw = bw.to(p.device, torch.float32)
    h, w = bw.shape[-2:]
    wh, ww = working_size(h, w, options.working_long_side, options.canvas)
    if (wh, ww) == (h, w):
        small = bw
    else:
        small = F.interpolate(bw, size=(wh, ww), mode="area" if wh * ww < h * w else "bilinear")
    if hint is not None:
        hint = resize_hint(hint.to(p.device, torch.float32), (wh, ww))
    if draft is not None:
        draft = draft.to(p.device, torch.float32)
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    args = [t.contiguous(memory_format=fmt) if t is not None else None for t in (small, hint, draft)]
    amp = (
        torch.autocast(device_type=p.device.type, dtype=options.amp_dtype)
        if options.amp_dtype is not None
        else torch.autocast(device_type=p.device.type, enabled=False)
    )
    with torch.inference_mode(), amp:
        out = colorize(generator, *args, multiple=options.multiple, pad_mode=options.pad_mode).float()
    if (wh, ww) != (h, w):
        out = transfer_chroma(out, small, bw, options.luma_detail)
    return out.contiguous()


def grey_page(page: np.ndarray) -> np.ndarray:
    """uint8 (H,W) as it is; (H,W,3|4) to grey by BT.601 luma."""
    if page.ndim == 3:
        page = (page[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    return page


def colorize_page(
    generator: nn.Module,
    page: np.ndarray,
    hint: np.ndarray | None = None,
    draft: np.ndarray | None = None,
    options: InferenceOptions = InferenceOptions(),
) -> np.ndarray:
    """One page: uint8 (H,W) grey (or (H,W,3), converted to grey) -> uint8 (H,W,3) colour.

    `hint`: RGBA uint8 (H,W,4) or None; `draft`: uint8 RGB of any size or None.
    """
    page = grey_page(page)
    if hint is not None and hint.shape[:2] != page.shape[:2]:
        raise ValueError(f"hint is {hint.shape[1]}×{hint.shape[0]} but the page is {page.shape[1]}×{page.shape[0]}")
    if options.fit_width is not None:
        from mangacolor.models.mc2 import release_size

        wh, ww = release_size(*page.shape[:2], options.fit_width)
    else:
        sides = [s for s in (options.working_long_side, options.max_long_side) if s is not None]
        wh, ww = working_size(*page.shape[:2], min(sides) if sides else None)
    if (wh, ww) != page.shape[:2]:
        # Large page (or the 2021 release's size): colour at the working size, chroma onto the original
        # ink, strip by strip.
        small = cv2.resize(page, (ww, wh), interpolation=cv2.INTER_AREA)
        small_hint = resize_hint_array(hint, (wh, ww)) if hint is not None else None
        exact = replace(options, working_long_side=None, max_long_side=None, fit_width=None)
        rgb = colorize_page(generator, small, hint=small_hint, draft=draft, options=exact)
        return transfer_chroma_strips(rgb, small, page, options.luma_detail)
    out = colorize_pages(
        generator,
        to_tensor(page)[None],
        hint_from_rgba(hint) if hint is not None else None,
        to_tensor(draft)[None] if draft is not None else None,
        options,
    )
    return from_tensor(out[0])


__all__ = [
    "InferenceOptions",
    "MAX_LONG_SIDE",
    "PRESETS",
    "colorize_page",
    "colorize_pages",
    "fold_batchnorm",
    "grey_page",
    "hint_from_rgba",
    "prepare_generator",
    "resize_hint",
    "rgb_to_ycbcr",
    "resize_hint_array",
    "transfer_chroma",
    "transfer_chroma_strips",
    "ycbcr_to_rgb",
]
