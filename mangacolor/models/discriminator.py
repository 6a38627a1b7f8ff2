"""The colorization network's discriminator (paper §III-B-2): AlacGAN's, with spectral normalisation.

D(Y) -> one logit per image: "is this a real colour page?". Unconditional, as the paper's eq. 10–11
need: it sees only RGB, so the same D judges colorized synthetic pages and colorized real pages.

Layout (AlacGAN's NetD, SE blocks as in the authors' 2021 model): a 7×7 stem and a strided 4×4
conv to 1/2, then stages of SE-ResNeXt bottlenecks, each ending in a strided block (4×4 grouped
conv, average-pooled shortcut) that halves the size, 1×1 convs widening between stages, and a
global average pool + linear head so any page size gives one logit. Every convolution and the
linear layer carry `torch.nn.utils.parametrizations.spectral_norm` (Miyato et al.): the paper's
one change, which keeps the classic (non-WGAN) loss stable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 3
    stem_width: int = 64
    stage_widths: tuple[int, ...] = (64, 128, 256, 512, 512)  # one stage per halving after the stem
    blocks_per_stage: int = 1  # stride-1 blocks before each stage's strided block
    cardinality: int = 8
    se_reduction: int = 16
    power_iterations: int = 1  # spectral-norm power iterations per training forward

    @classmethod
    def tiny(cls, **overrides) -> "DiscriminatorConfig":
        base = dict(stem_width=16, stage_widths=(16, 32, 32), cardinality=4, se_reduction=4)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)


def xavier_spectral_norm(layer: nn.Conv2d | nn.Linear, power_iterations: int) -> nn.Module:
    """Xavier init (Appendix D), then spectral norm; in this order, so that the power iteration's
    vectors, warmed up at registration, belong to the weight that is trained."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer, n_power_iterations=power_iterations)


class SNConv2d(nn.Module):
    """Conv2d whose weight is divided by its largest singular value (estimated by power iteration)."""

    def __init__(self, *args, power_iterations: int = 1, **kwargs):
        super().__init__()
        self.conv = xavier_spectral_norm(nn.Conv2d(*args, **kwargs), power_iterations)

    def forward(self, x):
        return self.conv(x)


class SNSqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int, power_iterations: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = SNConv2d(channels, hidden, 1, power_iterations=power_iterations)
        self.excite = SNConv2d(hidden, channels, 1, power_iterations=power_iterations)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(s))))


class SNBottleneck(nn.Module):
    """SE-ResNeXt bottleneck; with stride 2 the grouped conv is 4×4 and the shortcut average-pools."""

    def __init__(self, channels: int, cardinality: int, stride: int, se_reduction: int, power_iterations: int):
        super().__init__()
        mid = channels // 2
        pi = power_iterations
        self.reduce = SNConv2d(channels, mid, 1, bias=False, power_iterations=pi)
        self.conv = SNConv2d(mid, mid, 2 + stride, stride=stride, padding=1, groups=cardinality, bias=False, power_iterations=pi)
        self.expand = SNConv2d(mid, channels, 1, bias=False, power_iterations=pi)
        self.se = SNSqueezeExcitation(channels, se_reduction, pi)
        self.shortcut = nn.AvgPool2d(2) if stride == 2 else nn.Identity()

    def forward(self, x):
        y = F.leaky_relu(self.reduce(x), 0.2)
        y = F.leaky_relu(self.conv(y), 0.2)
        return self.shortcut(x) + self.se(self.expand(y))


class ColorizationDiscriminator(nn.Module):
    """D(Y): RGB page (B,3,H,W) in [-1, 1] -> logits (B,). H, W: multiples of 2^(1 + stages)."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        c, pi = config, config.power_iterations
        self.stem = nn.Sequential(
            SNConv2d(c.in_channels, c.stem_width, 7, padding=3, bias=False, power_iterations=pi),
            nn.LeakyReLU(0.2),
            SNConv2d(c.stem_width, c.stem_width, 4, stride=2, padding=1, bias=False, power_iterations=pi),
            nn.LeakyReLU(0.2),
        )
        layers: list[nn.Module] = []
        width = c.stem_width
        for stage_width in c.stage_widths:
            if stage_width != width:
                layers += [SNConv2d(width, stage_width, 1, bias=False, power_iterations=pi), nn.LeakyReLU(0.2)]
                width = stage_width
            layers += [SNBottleneck(width, c.cardinality, 1, c.se_reduction, pi) for _ in range(c.blocks_per_stage)]
            layers.append(SNBottleneck(width, c.cardinality, 2, c.se_reduction, pi))
        self.trunk = nn.Sequential(*layers)
        self.head = xavier_spectral_norm(nn.Linear(width, 1), pi)
        self.multiple = 2 ** (1 + len(c.stage_widths))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem(y))
        return self.head(x.mean((2, 3))).squeeze(1)


def spectral_norms(module: nn.Module) -> dict[str, float]:
    """Largest singular value of every (normalised) conv / linear weight, reshaped to (out, -1)."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            out[name] = float(torch.linalg.matrix_norm(w, ord=2))
    return out


__all__ = ["ColorizationDiscriminator", "DiscriminatorConfig", "SNBottleneck", "spectral_norms"]
