"""FID's InceptionV3: the network whose pool3 features every published FID is computed from.

The paper reports FID (Table 1 and 3, §V); to compare with it our features must come from the same
network as everybody else's: the PyTorch port of the 2015-12-05 TensorFlow Inception graph that
pytorch-fid ships as `pt_inception-2015-12-05-6726825d.pth` (1008-class head, 2048-d pool3). It
differs from torchvision's ImageNet InceptionV3 in three places, all in pooling: the 3x3 average
pools of the A, C and first E blocks leave padding out of the average (TensorFlow's SAME pooling),
and the last E block max-pools. Module and parameter names follow that file, so it loads with
`load_state_dict(strict=True)`.

Inputs are resized to 299x299 by a *named* resize, because the resize alone moves FID by whole
points (docs/architecture.md § FID): `bilinear-torch` is pytorch-fid's (float bilinear, no antialias),
`bicubic-clean` is float bicubic with antialias, close to clean-fid's. Reports name the one used.

Weights are never downloaded: `build_inception("auto")` reads a file the user placed, and
`build_inception("random")` gives a fixed-seed random network for tests and the demo, whose FIDs
are internally consistent but not comparable to published numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
WEIGHTS_ENV = "MANGACOLOR_INCEPTION_WEIGHTS"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's head: 1000 ImageNet classes plus 8 unused ones
RANDOM_SEED = 0

PRETRAINED_DESCRIPTION = "FID InceptionV3 (pt_inception-2015-12-05, pool3 2048-d)"


def random_description(seed: int = RANDOM_SEED) -> str:
    return f"random-init Inception (seed {seed}): not comparable to published FID"


# --- building blocks ----------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """The TF graph's unit: convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow averages only the pixels inside the image at borders; PyTorch's default counts zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(tf_avg_pool(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class FIDInceptionC(nn.Module):
    """17x17 block (Mixed_6b..e): 7x7 convolutions factorised into 1x7 and 7x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = conv(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(tf_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for conv in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class FIDInceptionE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c): split 1x3 / 3x1 branches; `pool` is "avg" in 7b, "max" in 7c.

    The max pool in Mixed_7c is a quirk of the TF graph that the FID weights were trained with.
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d3 = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], dim=1)
        pooled = tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d3, self.branch_pool(pooled)], dim=1)


# --- the network --------------------------------------------------------------------------------


# The Inception blocks in forward order; their attribute names are the weight file's key prefixes.
MIXED_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                "Mixed_7a", "Mixed_7b", "Mixed_7c")  # fmt: skip


class FIDInceptionV3(nn.Module):
    """299x299 RGB in [-1, 1] -> 2048-d pool3 features. `fc` is kept only so the standard file loads.

    Feature map sizes: 299 -> 149 -> 147 -> 147 -> 73 (pool) -> 73 -> 71 -> 35 (pool) -> Mixed_5*
    at 35 -> Mixed_6* at 17 -> Mixed_7* at 8 -> global average.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)  # -> 256 channels
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)  # -> 288
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)  # -> 288
        self.Mixed_6a = InceptionB(288)  # -> 768
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)  # -> 1280
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")  # -> 2048
        self.Mixed_7c = FIDInceptionE(2048, pool="max")  # -> 2048
        self.fc = nn.Linear(FEATURE_DIM, num_classes)
        # Set by build_inception; a bare module does not know where its weights came from.
        self.random_init = True
        self.description = "FIDInceptionV3 (weights not loaded)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE) or x.shape[1] != 3:
            raise ValueError(
                f"FIDInceptionV3 expects Nx3x{INPUT_SIZE}x{INPUT_SIZE} in [-1, 1], got {tuple(x.shape)}: "
                "pass images through prepare_images() first"
            )
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in MIXED_BLOCKS:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008-way head (for Inception Score style checks; FID does not use it)."""
        return self.fc(self.forward(x))


# --- weights ------------------------------------------------------------------------------------


class WeightsNotFoundError(FileNotFoundError):
    """The FID Inception weights file is not where we looked; the message says how to get it."""


def weights_search_path(path: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where `build_inception("auto")` looks, first match wins: (how the place was chosen, file)."""
    if path is not None:
        return [("explicit path argument", Path(path).expanduser())]
    if os.environ.get(WEIGHTS_ENV):
        return [(f"${WEIGHTS_ENV}", Path(os.environ[WEIGHTS_ENV]).expanduser())]
    return [("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE)]


def locate_weights(path: str | Path | None = None) -> Path:
    """The weights file, or WeightsNotFoundError naming the file, the places searched and the fix.

    An explicit path or the environment variable is taken as the user's decision: when it points at
    nothing we say so instead of silently falling back to another copy.
    """
    places = weights_search_path(path)
    for _, candidate in places:
        if candidate.is_file():
            return candidate
    searched = "\n".join(f"  - {where}: {p}" for where, p in places)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    raise WeightsNotFoundError(
        f"FID Inception weights file {WEIGHTS_FILE} not found. Searched:\n{searched}\n"
        f"Get it on a machine with internet access (it is the pytorch-fid GitHub release asset "
        f"'{WEIGHTS_FILE}', {WEIGHTS_URL}, about 92 MB) and put it at {hub_file}, or set "
        f"${WEIGHTS_ENV} to its path. For tests and the demo use build_inception('random') "
        f"(its FID is not comparable to published numbers)."
    )


def _init_random(net: nn.Module, seed: int) -> None:
    """He-normal convolutions and identity batch norms from a private generator.

    He scaling keeps activations O(1) through the 40-odd layers of the deepest path, so random
    features still differ between images instead of collapsing to zero; the private generator leaves
    the caller's global RNG untouched and makes the network the same on every machine.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * math.prod(module.kernel_size)
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.01, generator=gen)
                module.bias.zero_()


def build_inception(
    weights: str | Path = "auto", device: torch.device | str = "cpu", seed: int = RANDOM_SEED
) -> FIDInceptionV3:
    """The FID network in eval mode. `weights`: "auto" (search, see `locate_weights`), "random"
    (fixed-seed random init, for tests and the demo) or a path to the .pth file.

    The result carries `.random_init` and `.description`; reports copy both.
    """
    # Built on the meta device: no throwaway default init of 24M parameters, no use of global RNG.
    with torch.device("meta"):
        net = FIDInceptionV3()
    net = net.to_empty(device="cpu")
    _init_random(net, seed)
    if str(weights) == "random":
        net.random_init = True
        net.description = random_description(seed)
    else:
        file = locate_weights(None if str(weights) == "auto" else weights)
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated download or an HTML error page saved under the name
            raise WeightsNotFoundError(
                f"{file} exists but is not a readable PyTorch state dict ({exc}); re-download {WEIGHTS_FILE} "
                f"from {WEIGHTS_URL}"
            ) from exc
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsNotFoundError(
                f"{file} does not hold the FID Inception weights (expected the layout of {WEIGHTS_FILE}): {exc}"
            ) from exc
        net.random_init = False
        net.description = PRETRAINED_DESCRIPTION
    return net.to(device).eval().requires_grad_(False)


# --- inputs -------------------------------------------------------------------------------------


def _resize_bilinear_torch(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)


def _resize_bicubic_clean(x: torch.Tensor) -> torch.Tensor:
    # Antialiased bicubic on floats, clipped back to the image range as clean-fid does.
    y = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp(0.0, 1.0)


RESIZES = {"bilinear-torch": _resize_bilinear_torch, "bicubic-clean": _resize_bicubic_clean}


def _to_unit_float(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image -> 1x3xHxW float in [0, 1]. numpy: HxW or HxWxC; torch: CxHxW. Grey is repeated."""
    if isinstance(image, np.ndarray):
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3:
            raise ValueError(f"expected an HxW or HxWxC image array, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image[None] if image.ndim == 2 else image
        if t.ndim != 3:
            raise ValueError(f"expected a CxHxW image tensor, got shape {tuple(image.shape)}")
    else:
        raise TypeError(f"expected a numpy array or torch tensor image, got {type(image).__name__}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]: "
                "convert [-1, 1] network outputs with mangacolor.io.images.from_tensor first"
            )
    else:
        raise TypeError(f"images must be uint8 or float in [0, 1], got dtype {t.dtype}")
    channels = t.shape[0]
    if channels == 1:
        t = t.expand(3, -1, -1)
    elif channels == 4:
        raise ValueError("RGBA image: composite it onto paper first (read_image does this)")
    elif channels != 3:
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    return t[None]


def prepare_images(
    images: Sequence[np.ndarray | torch.Tensor], resize: str = "bilinear-torch", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images of any size -> Nx3x299x299 float in [-1, 1].

    Each image is resized on its own, so a batch may mix page sizes.
    """
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; choose one of {', '.join(RESIZES)}")
    fn = RESIZES[resize]
    out = [fn(_to_unit_float(img).to(device)) for img in images]
    return torch.cat(out, dim=0).mul(2.0).sub(1.0)
