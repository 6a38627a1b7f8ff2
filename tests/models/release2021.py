"""The 2021 release's generator for the tests, written from its published description, independent of ours.

`release_keys()` reads the state dict's every key, dtype and shape from the reference listing
(`tests/models/data/mc2-generator-state-dict.tsv`, listed from a randomly initialised instance of
manga-colorization-v2's `Colorizer().generator`); `random_release_state` fills them with random
values; `release_forward` is a plain functional forward that consumes that state dict by its own
names (the 2021 architecture: SE-ResNeXt encoder without stem max-pool, cue convs to0-to3, tunnels
4, 3, 2 of SE-ResNeXt bottlenecks with PixelShuffle, exit, tanh); `release_colorize` is the
release's page handling around it (resize to `size` wide, pad below with each column's maximum,
ToTensor, hint in [-1, 1] × mask plus the mask, output * 0.5 + 0.5, crop).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

TSV = Path(__file__).parent / "data" / "mc2-generator-state-dict.tsv"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def release_keys() -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    out = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, dtype, shape = line.split("\t")
        out[key] = (DTYPES[dtype], () if shape == "scalar" else tuple(int(s) for s in shape.split("x")))
    return out


def random_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with the listing's keys, dtypes and shapes, scaled so activations stay in range
    (weights ~ N(0, 1/fan_in), batch-norm statistics around identity) and the output is not saturated."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, (dtype, shape) in release_keys().items():
        if dtype == torch.int64:
            state[key] = torch.tensor(100, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # batch-norm weight
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


# --- the 2021 forward, by the 2021 names -------------------------------------------------------------


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"],
                        training=False, eps=1e-5)


def _se(x, sd, name):
    s = x.mean((2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"]))
    return x * torch.sigmoid(F.conv2d(s, sd[f"{name}.conv2.weight"], sd[f"{name}.conv2.bias"]))


def _groups(weight):
    return weight.shape[0] // weight.shape[1]


def _encoder_block(x, sd, name, stride):
    y = F.relu(_bn(F.conv2d(x, sd[f"{name}.conv1.weight"]), sd, f"{name}.bn1"))
    w2 = sd[f"{name}.conv2.weight"]
    y = F.relu(_bn(F.conv2d(y, w2, stride=stride, padding=1, groups=_groups(w2)), sd, f"{name}.bn2"))
    y = _se(_bn(F.conv2d(y, sd[f"{name}.conv3.weight"]), sd, f"{name}.bn3"), sd, f"{name}.selayer")
    if f"{name}.downsample.0.weight" in sd:
        x = _bn(F.conv2d(x, sd[f"{name}.downsample.0.weight"], stride=stride), sd, f"{name}.downsample.1")
    return F.relu(y + x)


def _n_blocks(sd, prefix):
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def _encoder(x, sd):
    x1 = F.relu(_bn(F.conv2d(x, sd["encoder.conv1.weight"], stride=2, padding=3), sd, "encoder.bn1"))  # no max-pool
    feats, x = [x1], x1
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2)):
        for i in range(_n_blocks(sd, f"encoder.{layer}.")):
            x = _encoder_block(x, sd, f"encoder.{layer}.{i}", stride if i == 0 else 1)
        feats.append(x)
    return feats  # x1 (stem, 1/2), x2 (1/2), x3 (1/4), x4 (1/8)


def _cue(x, sd, name, stride):
    x = F.leaky_relu(F.conv2d(x, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], stride=stride, padding=1), 0.2)
    return F.leaky_relu(F.conv2d(x, sd[f"{name}.2.weight"], sd[f"{name}.2.bias"], padding=1), 0.2)


def _bottleneck(x, sd, name, dilation):
    y = F.leaky_relu(F.conv2d(x, sd[f"{name}.conv_reduce.weight"]), 0.2)
    w = sd[f"{name}.conv_conv.weight"]
    y = F.leaky_relu(F.conv2d(y, w, padding=dilation, dilation=dilation, groups=_groups(w)), 0.2)
    return x + _se(F.conv2d(y, sd[f"{name}.conv_expand.weight"]), sd, f"{name}.selayer")


TUNNEL_DILATIONS = {"tunnel4": (1,) * 20, "tunnel3": (1, 1, 2, 2, 4, 4, 2, 1), "tunnel2": (1, 1, 2, 2, 4, 4, 2, 1)}


def _tunnel(x, sd, name):
    x = F.leaky_relu(F.conv2d(x, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], padding=1), 0.2)
    for i, d in enumerate(TUNNEL_DILATIONS[name]):
        x = _bottleneck(x, sd, f"{name}.2.{i}", d)
    x = F.conv2d(x, sd[f"{name}.3.weight"], sd[f"{name}.3.bias"], padding=1)
    return F.leaky_relu(F.pixel_shuffle(x, 2), 0.2)


def release_forward(sd: dict[str, torch.Tensor], sketch: torch.Tensor) -> torch.Tensor:
    """(B, 5, H, W): page in [0, 1], hint RGB in [-1, 1] × mask, mask -> (B, 3, H, W) tanh."""
    x0 = _cue(sketch, sd, "to0", 1)
    aux = _cue(_cue(_cue(x0, sd, "to1", 2), sd, "to2", 2), sd, "to3", 2)
    x1, x2, x3, x4 = _encoder(sketch[:, :1], sd)
    out = _tunnel(torch.cat([x4, aux], 1), sd, "tunnel4")
    x = _tunnel(torch.cat([out, x3], 1), sd, "tunnel3")
    x = _tunnel(torch.cat([x, x2, x1], 1), sd, "tunnel2")
    x = F.conv2d(F.leaky_relu(F.conv2d(torch.cat([x, x0], 1), sd["exit.0.weight"], sd["exit.0.bias"], padding=1), 0.2),
                 sd["exit.2.weight"], sd["exit.2.bias"])
    return torch.tanh(x)


def release_colorize(sd: dict[str, torch.Tensor], page: np.ndarray, hint_rgba: np.ndarray | None = None,
                     size: int = 576) -> np.ndarray:
    """A portrait uint8 grey page as the release colours it without its denoiser: float RGB in [0, 1],
    at the resized page's size (size wide)."""
    h, w = page.shape
    assert h >= w, "portrait pages only"
    height = int(np.ceil(h / (w / size)))
    img = cv2.resize(page, (size, height), interpolation=cv2.INTER_AREA)
    pad = 32 - height % 32  # the release always pads, by a whole 32 when the height is a multiple of it
    img = np.pad(img, ((0, pad), (0, 0)), "maximum")
    x = torch.from_numpy(img).float()[None, None] / 255
    hint = torch.zeros(1, 4, *img.shape)
    if hint_rgba is not None:
        assert hint_rgba.shape[:2] == (height, size)
        mask = torch.from_numpy(hint_rgba[..., 3] > 127).float()
        rgb = (torch.from_numpy(hint_rgba[..., :3]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        hint[0, :3, :height] = rgb * mask
        hint[0, 3, :height] = mask
    with torch.no_grad():
        out = release_forward(sd, torch.cat([x, hint], 1))
    return (out[0].permute(1, 2, 0) * 0.5 + 0.5)[:height].numpy()


# --- the release's denoiser: FFDNet (colour network) at sigma 25, by its own names -------------------

FFDNET_PREFIX = "module.intermediate_dncnn.itermediate_dncnn."  # net_rgb.pth was saved from DataParallel


def random_ffdnet_state(seed: int = 0, strength: float = 0.5) -> dict[str, torch.Tensor]:
    """FFDNet-RGB's keys: conv 15->96, ten (conv 96->96, BN), conv 96->12; small weights (a mild denoiser)."""
    g = torch.Generator().manual_seed(seed)
    state, i = {}, 0
    convs = [(96, 15)] + [(96, 96)] * 10 + [(12, 96)]
    for n, (c_out, c_in) in enumerate(convs):
        state[f"{FFDNET_PREFIX}{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) / math.sqrt(c_in * 9) * (strength if n == len(convs) - 1 else 0.5)
        if 0 < n < len(convs) - 1:
            bn = f"{FFDNET_PREFIX}{i + 1}"
            state[f"{bn}.weight"] = torch.rand(c_out, generator=g) * 0.5 + 0.5
            state[f"{bn}.bias"] = torch.randn(c_out, generator=g) * 0.05
            state[f"{bn}.running_mean"] = torch.randn(c_out, generator=g) * 0.05
            state[f"{bn}.running_var"] = torch.rand(c_out, generator=g) + 0.5
            state[f"{bn}.num_batches_tracked"] = torch.tensor(10)
            i += 3
        else:
            i += 2
    return state


def release_denoise(sd: dict[str, torch.Tensor], page: np.ndarray, sigma: float = 25) -> np.ndarray:
    """The release's denoising of a uint8 grey page (at most 1200 px long): FFDNet's published forward with
    its explicit 2x2 de-interleaving ([0,0], [0,1], [1,0], [1,1]), then the first channel of the BGR result."""
    assert max(page.shape) <= 1200
    x = torch.from_numpy(np.repeat(page[None], 3, 0)).float()[None] / 255
    h, w = page.shape
    if h % 2:
        x = torch.cat([x, x[:, :, -1:]], 2)
    if w % 2:
        x = torch.cat([x, x[:, :, :, -1:]], 3)
    n, c, hh, ww = x.shape
    offsets = [(0, 0), (0, 1), (1, 0), (1, 1)]
    down = torch.zeros(n, 4 * c, hh // 2, ww // 2)
    for idx, (i, j) in enumerate(offsets):
        down[:, idx::4] = x[:, :, i::2, j::2]
    y = torch.cat([torch.full((n, c, hh // 2, ww // 2), sigma / 255), down], 1)
    layers = sorted({int(k[len(FFDNET_PREFIX):].split(".")[0]) for k in sd})
    with torch.no_grad():
        for i in layers:
            name = f"{FFDNET_PREFIX}{i}"
            if f"{name}.running_mean" in sd:
                y = F.relu(_bn(y, sd, name))
            else:
                y = F.conv2d(y, sd[f"{name}.weight"], padding=1)
                if i == 0:
                    y = F.relu(y)
    noise = torch.zeros_like(x)
    for idx, (i, j) in enumerate(offsets):
        noise[:, :, i::2, j::2] = y[:, idx::4]
    out = (x - noise).clamp(0, 1)[0, :, :h, :w]
    bgr = out.flip(0).permute(1, 2, 0).numpy()
    return (bgr * 255).clip(0, 255).astype(np.uint8)[..., 0]
