"""LPIPS built offline: the `lpips` package's calibrated linear layers (they ship inside the package) on an
ImageNet trunk read from torchvision's file in the torch hub cache, or a configured path.

A missing default file leaves the trunk random with a logged "random-init" warning, and `build_lpips`
says which trunk it got; a configured path that is missing is an error naming the file and where to
get it. Nothing is downloaded. The pSp loop trains with the VGG variant (paper eq. 1); the paired
evaluation reports the AlexNet variant, as published LPIPS figures do.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# torchvision's ImageNet trunks, by the lpips `net` name: file in the torch hub cache and its URL.
TRUNK_FILES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


def build_lpips(net: str = "vgg", weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """LPIPS with the package's calibrated linear layers and the ImageNet trunk read from `weights`
    or, by default, the torch hub cache; a missing default file gives a random trunk and a warning.
    Returns (frozen module in eval mode, "imagenet" | "random")."""
    import lpips

    if net not in TRUNK_FILES:
        raise ValueError(f"lpips_net must be one of {sorted(TRUNK_FILES)}, got {net!r}")
    with warnings.catch_warnings():
        # pnet_rand=True makes lpips build the torchvision trunk without weights (no download);
        # torchvision warns about the legacy `pretrained` argument lpips passes.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    model.load_state_dict(lin_state, strict=False)

    filename, url = TRUNK_FILES[net]
    path = Path(weights).expanduser() if weights else Path(torch.hub.get_dir()) / "checkpoints" / filename
    if weights and not path.exists():
        raise FileNotFoundError(f"LPIPS trunk weights not found at {path} (configured vgg_weights): expected "
                                f"torchvision's {filename}, downloadable from {url} on a machine with internet")
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        loaded = 0
        for slice_ in (m for name, m in model.net.named_children() if name.startswith("slice")):
            for idx, layer in slice_.named_children():
                if isinstance(layer, nn.Conv2d):
                    layer.weight.data.copy_(state[f"features.{idx}.weight"])
                    layer.bias.data.copy_(state[f"features.{idx}.bias"])
                    loaded += 1
        if loaded == 0:
            raise ValueError(f"{path}: no convolution of the {net} trunk found in it; expected torchvision's {filename}")
        trunk = "imagenet"
    else:
        name, why = {"vgg": ("VGG", "for the paper's loss"), "alex": ("AlexNet", "for LPIPS figures comparable to published ones")}[net]
        log.warning("random-init %s (LPIPS): %s not found, so the LPIPS term compares random features. "
                    "Download %s on a machine with internet and copy it there (or configure its path) %s.",
                    name, path, url, why)
        trunk = "random"
    model.eval().requires_grad_(False)
    return model, trunk
