"""The xDoG refiner: step 2 of the synthetic black-and-white pages (paper §IV-A-3).

xDoG line art is much sparser than real manga (no screentone, no solid blacks, no grey), so a
network learns the map xDoG(real black-and-white page) -> real black-and-white page and is then
applied to xDoG of the colour pages. The paper only says its architecture "is similar to the
colorization network"; this is that family at a smaller size: a UNet whose encoder stages are
strided convs followed by SE-ResNeXt bottlenecks, whose decoder upsamples with PixelShuffle and
concatenates the encoder's skips, 1 grey channel in, 1 grey channel out through tanh.

Shapes: the input side must be divisible by `multiple(cfg)` = 2 ** (len(widths) - 1); `refine`
pads a page of any size to that and crops the result back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RefinerConfig:
    # Channels per scale, full resolution first; one stride-2 stage per extra entry.
    widths: tuple[int, ...] = (32, 64, 128, 256)
    # SE-ResNeXt bottlenecks after each encoder stage / in each decoder stage (same scales).
    encoder_blocks: tuple[int, ...] = (1, 1, 2, 4)
    decoder_blocks: tuple[int, ...] = (1, 1, 2)
    cardinality: int = 8  # groups of the 3x3 conv in a bottleneck
    se_reduction: int = 16
    in_channels: int = 1
    out_channels: int = 1

    def __post_init__(self):
        if len(self.encoder_blocks) != len(self.widths) or len(self.decoder_blocks) != len(self.widths) - 1:
            raise ValueError(
                f"RefinerConfig: need one encoder_blocks entry per width ({len(self.widths)}) and one "
                f"decoder_blocks entry per upsampling ({len(self.widths) - 1}); got {self.encoder_blocks}, {self.decoder_blocks}"
            )


TINY = RefinerConfig(widths=(8, 16), encoder_blocks=(1, 1), decoder_blocks=(1,), cardinality=2, se_reduction=4)


def multiple(cfg: RefinerConfig) -> int:
    return 2 ** (len(cfg.widths) - 1)


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class SqueezeExcite(nn.Module):
    """Channel attention: global average -> bottleneck MLP -> sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SEResNeXtBottleneck(nn.Module):
    """1x1 reduce -> grouped 3x3 -> 1x1 expand -> SE, added to the input (no normalisation, as in
    the AlacGAN-lineage generators: statistics of a page should not depend on the batch)."""

    def __init__(self, channels: int, cardinality: int, se_reduction: int, dilation: int = 1):
        super().__init__()
        inner = max(cardinality, (channels // 2) // cardinality * cardinality)
        self.reduce = nn.Conv2d(channels, inner, 1)
        self.grouped = nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, groups=cardinality)
        self.expand = nn.Conv2d(inner, channels, 1)
        self.se = SqueezeExcite(channels, se_reduction)
        self.act = act()

    def forward(self, x):
        y = self.act(self.reduce(x))
        y = self.act(self.grouped(y))
        y = self.se(self.expand(y))
        return self.act(x + y)


def tunnel(channels: int, n: int, cfg: RefinerConfig) -> nn.Sequential:
    return nn.Sequential(*[SEResNeXtBottleneck(channels, cfg.cardinality, cfg.se_reduction) for _ in range(n)])


class Down(nn.Module):
    """Stride-2 conv to the next width, then a tunnel of bottlenecks."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, cfg: RefinerConfig):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)
        self.act = act()
        self.blocks = tunnel(c_out, n_blocks, cfg)

    def forward(self, x):
        return self.blocks(self.act(self.conv(x)))


class Up(nn.Module):
    """PixelShuffle x2 to the skip's width, concatenate the skip, fuse, then a tunnel."""

    def __init__(self, c_in: int, c_skip: int, n_blocks: int, cfg: RefinerConfig):
        super().__init__()
        self.expand = nn.Conv2d(c_in, c_skip * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.fuse = nn.Conv2d(2 * c_skip, c_skip, 3, padding=1)
        self.act = act()
        self.blocks = tunnel(c_skip, n_blocks, cfg)

    def forward(self, x, skip):
        x = self.act(self.shuffle(self.expand(x)))
        x = self.act(self.fuse(torch.cat([x, skip], dim=1)))
        return self.blocks(x)


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig = RefinerConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, w[0], 3, padding=1), act(), tunnel(w[0], cfg.encoder_blocks[0], cfg))
        self.down = nn.ModuleList(Down(w[i - 1], w[i], cfg.encoder_blocks[i], cfg) for i in range(1, len(w)))
        self.up = nn.ModuleList(Up(w[i], w[i - 1], cfg.decoder_blocks[i - 1], cfg) for i in reversed(range(1, len(w))))
        self.to_page = nn.Conv2d(w[0], cfg.out_channels, 3, padding=1)
        init_weights(self)

    def forward(self, x):
        m = multiple(self.cfg)
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"Refiner input sides must be divisible by {m}, got {tuple(x.shape[-2:])}; use refine() to pad")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.up:
            h = up(h, skips.pop())
        return torch.tanh(self.to_page(h))


def init_weights(module: nn.Module) -> None:
    """Xavier initialisation, as for every model of the paper (Appendix D)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, m: int, min_size: int = 1) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of an NCHW tensor to a multiple of m, at least min_size a side
    (replicate, so the margin of a page stays paper and adds no edge)."""
    h, w = x.shape[-2:]
    th = max(h + (-h) % m, min_size + (-min_size) % m)
    tw = max(w + (-w) % m, min_size + (-min_size) % m)
    if th > h or tw > w:
        x = F.pad(x, (0, tw - w, 0, th - h), mode="replicate")
    return x, (h, w)


@torch.no_grad()
def refine(
    model: nn.Module,
    page: np.ndarray,
    multiple_of: int | None = None,
    min_size: int = 1,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Run a fully convolutional page->page network on one uint8 HxW page; returns uint8 HxW.

    Pads to `multiple_of` (default: the model's own multiple), and to at least `min_size` a side,
    then crops back, so any page size works. Used for the refiner here and for the CUT generator
    (`mangacolor.models.cut.apply_cut`).
    """
    return refine_batch(model, [page], multiple_of, min_size, device, amp_dtype)[0]


@torch.no_grad()
def refine_batch(
    model: nn.Module,
    pages: list[np.ndarray],
    multiple_of: int | None = None,
    min_size: int = 1,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> list[np.ndarray]:
    """`refine` of several uint8 HxW pages of one size in one forward pass (one batch on the device)."""
    if not pages:
        return []
    for page in pages:
        if page.ndim != 2 or page.dtype != np.uint8:
            raise ValueError(f"refine expects a uint8 HxW grey page, got {page.dtype} {page.shape}")
    if len({page.shape for page in pages}) > 1:
        # Padding a page to another's size would change its instance-norm statistics, so its output.
        raise ValueError(f"refine_batch needs pages of one size, got {sorted({page.shape for page in pages})}")
    if multiple_of is None:
        multiple_of = multiple(model.cfg) if isinstance(getattr(model, "cfg", None), RefinerConfig) else 1
    if device is None:
        device = next(model.parameters()).device
    x = torch.from_numpy(np.stack(pages)).to(device=device, dtype=torch.float32)[:, None] / 127.5 - 1.0
    x, (h, w) = pad_to_multiple(x, max(1, multiple_of), min_size)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            y = model(x)
    finally:
        model.train(was_training)
    y = y[:, 0, :h, :w].float().clamp(-1, 1)
    return list(((y + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy())

