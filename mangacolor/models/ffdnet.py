"""FFDNet (Zhang, Zuo & Zhang 2018), the denoiser the 2021 release runs on a page before colouring it.

FFDNet estimates the noise of an image given its standard deviation σ: the image is split into its
four 2×2 sub-images (pixel unshuffle, channel c·4 + 2·row + column), a constant noise map σ (one
channel per image channel) is put in front of them, a plain CNN (3×3 convs without bias; batch norm
and ReLU between) predicts the sub-images' noise, and pixel shuffle puts it back together. The
denoised image is the input minus that noise, clamped to [0, 1]. Colour: 96 features, 12 convs;
grey: 64 features, 15 convs. The release uses the colour network (`net_rgb.pth`) on the grey page
repeated three times, at σ = 25 (of 255).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_SIZES = {3: (96, 12), 1: (64, 15)}  # channels -> (features, convs)
MAX_SIDE = 1200  # the release denoises pages at most this long (area-downscaled first)


class FFDNet(nn.Module):
    def __init__(self, channels: int = 3):
        super().__init__()
        if channels not in _SIZES:
            raise ValueError(f"FFDNet has a colour (3) and a grey (1) network, not {channels} channels")
        features, convs = _SIZES[channels]
        self.channels = channels
        layers: list[nn.Module] = [nn.Conv2d(5 * channels, features, 3, padding=1, bias=False), nn.ReLU()]
        for _ in range(convs - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU()]
        layers.append(nn.Conv2d(features, 4 * channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The noise in `x` (B,C,H,W) in [0, 1], H and W even; `sigma` (B,) in the same units."""
        sub = F.pixel_unshuffle(x, 2)
        noise_map = sigma.to(x.dtype).view(-1, 1, 1, 1).expand(x.shape[0], self.channels, *sub.shape[-2:])
        return F.pixel_shuffle(self.body(torch.cat([noise_map, sub], dim=1)), 2)


def denoise_page(model: FFDNet, page: np.ndarray, sigma: float = 25.0) -> np.ndarray:
    """A uint8 grey page (H, W) denoised as the release does it, back at (H, W).

    Pages longer than `MAX_SIDE` are denoised at that size (area filter) and brought back
    (bilinear); odd sides get their last row or column repeated for the 2×2 split. The release keeps
    the first channel of its BGR result, i.e. the network's third (blue) output channel: so do we.
    """
    h, w = page.shape[:2]
    img = page
    if max(h, w) > MAX_SIDE:
        ratio = max(h, w) / MAX_SIDE
        img = cv2.resize(page, (int(w / ratio), int(h / ratio)), interpolation=cv2.INTER_AREA)
    p = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(img)).to(p.device, torch.float32).div(255)[None, None]
    x = x.expand(1, model.channels, *x.shape[-2:])
    ih, iw = x.shape[-2:]
    x = F.pad(x, (0, iw % 2, 0, ih % 2), mode="replicate")
    with torch.inference_mode():
        out = (x - model(x, torch.full((1,), sigma / 255, device=p.device))).clamp(0, 1)
    out = (out[0, -1, :ih, :iw] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()  # truncated, as the release
    if out.shape != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


__all__ = ["FFDNet", "MAX_SIDE", "denoise_page"]
