"""pixel2style2pixel (pSp): the drafting network and the inversion encoder (paper §III-A, §IV-B-2).

Both map a 256x256 page into W+ of the Coloring Latent Space StyleGAN2 and let the frozen generator
draw the coloring draft from it: the drafting network reads a black-and-white page (`input_nc=1`),
the inversion encoder a colour page (`input_nc=3`). Trained with lambda_MSE * MSE + lambda_LPIPS *
LPIPS against the blurred colour page (Appendix C eq. 4-5, Appendix D), see
`mangacolor/training/psp.py`.

Architecture, as in the pSp "gradual style encoder" (docs/architecture.md § pSp encoder):
  - input layer: 3x3 conv (no bias) + BatchNorm + PReLU, `input_nc` channels in;
  - IR-SE-50 body: four stages of `bottleneck_IR_SE` units ([3, 4, 14, 3], widths 64/128/256/512),
    each stage starting with stride 2;
  - a feature pyramid over the taps at 1/4, 1/8 and 1/16 of the input: top-down bilinear
    up-sampling plus 1x1 lateral convs;
  - one `GradualStyleBlock` ("map2style") per W+ row: stride-2 3x3 convs with leaky ReLU down to
    1x1, then an equalised linear layer. Rows 0-2 read the coarsest map, 3-6 the middle, 7+ the
    finest;
  - the result is added to the generator's average latent (pSp's `start_from_latent_avg`).
`EncoderConfig` holds the widths and depths so that tests can build a tiny encoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mangacolor.models.stylegan2 import EqualLinear, Generator, StyleGAN2Config

COARSE_STYLES = 3  # W+ rows 0-2 come from the 1/16 map (4-8 px of the generator: layout)
MIDDLE_STYLES = 7  # rows 3-6 from the 1/8 map; the rest (fine detail and colour) from the 1/4 map


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the gradual style encoder; the defaults are pSp's IR-SE-50 at 256x256."""

    input_nc: int = 1
    input_size: int = 256
    widths: tuple[int, ...] = (64, 128, 256, 512)
    units: tuple[int, ...] = (3, 4, 14, 3)
    se_reduction: int = 16

    def __post_init__(self):
        if len(self.widths) != 4 or len(self.units) != 4:
            raise ValueError(f"EncoderConfig: widths and units need 4 stages, got {self.widths} / {self.units}")
        if self.input_size % 16 or self.input_size < 16:
            raise ValueError(f"EncoderConfig: input_size must be a multiple of 16 (taps at 1/16), got {self.input_size}")


class SEModule(nn.Module):
    """Squeeze-and-excitation: channel gates from the globally pooled features."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN -> SE, plus a shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se_reduction: int = 16):
        super().__init__()
        if in_channel == depth:
            # Subsampling without parameters when only the stride changes.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """map2style: log2(spatial) stride-2 convs with leaky ReLU to 1x1, then EqualLinear -> one style."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        n_down = int(math.log2(spatial))
        layers: list[nn.Module] = []
        for i in range(max(1, n_down)):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return self.linear(x.mean(dim=(2, 3)))  # 1x1 already at the expected size; mean guards odd inputs


class GradualStyleEncoder(nn.Module):
    """Image (B, input_nc, S, S) in [-1, 1] -> W+ offsets (B, n_styles, style_dim)."""

    def __init__(self, config: EncoderConfig, n_styles: int, style_dim: int):
        super().__init__()
        self.config = config
        self.n_styles = n_styles
        w = config.widths
        self.input_layer = nn.Sequential(nn.Conv2d(config.input_nc, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.PReLU(w[0]))

        units: list[nn.Module] = []
        in_channel = w[0]
        self.tap_index: list[int] = []  # index of the last unit of each stage
        for depth, n_units in zip(w, config.units):
            for u in range(n_units):
                units.append(BottleneckIRSE(in_channel, depth, 2 if u == 0 else 1, config.se_reduction))
                in_channel = depth
            self.tap_index.append(len(units) - 1)
        self.body = nn.Sequential(*units)

        pyramid = w[3]
        s = config.input_size
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            spatial = s // 16 if i < COARSE_STYLES else s // 8 if i < MIDDLE_STYLES else s // 4
            self.styles.append(GradualStyleBlock(pyramid, style_dim, spatial))
        self.latlayer1 = nn.Conv2d(w[2], pyramid, 1)
        self.latlayer2 = nn.Conv2d(w[1], pyramid, 1)

    @staticmethod
    def _upsample_add(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.tap_index[1:]:
                taps[self.tap_index.index(i)] = x
        c1, c2, c3 = taps[1], taps[2], taps[3]  # 1/4, 1/8, 1/16
        p2 = self._upsample_add(c3, self.latlayer1(c2))
        p1 = self._upsample_add(p2, self.latlayer2(c1))
        sources = [c3] * COARSE_STYLES + [p2] * (MIDDLE_STYLES - COARSE_STYLES) + [p1] * max(0, self.n_styles - MIDDLE_STYLES)
        return torch.stack([block(src) for block, src in zip(self.styles, sources)], dim=1)


class PSp(nn.Module):
    """Encoder + frozen StyleGAN2 generator: `forward(x) -> (draft image, W+)`.

    Inputs of another size are resized to `encoder.input_size` (bilinear, antialiased); the draft
    comes out at the generator's resolution. `latent_avg` (1, style_dim) is the generator's average
    w, the point the encoder's offsets start from. The decoder uses its fixed noise maps, so the
    same page always gives the same draft.
    """

    def __init__(self, encoder_config: EncoderConfig, decoder: Generator, latent_avg: torch.Tensor):
        super().__init__()
        self.encoder = GradualStyleEncoder(encoder_config, decoder.n_latent, decoder.style_dim)
        self.decoder = decoder
        self.decoder.requires_grad_(False)
        self.decoder.eval()
        self.register_buffer("latent_avg", latent_avg.detach().reshape(1, 1, -1).clone())

    @property
    def input_nc(self) -> int:
        return self.encoder.config.input_nc

    @property
    def n_latent(self) -> int:
        return self.decoder.n_latent

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoder.eval()  # the decoder is frozen in every mode
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Batch (B, C, H, W) in [-1, 1] -> the encoder's channels and size."""
        c = self.input_nc
        if x.shape[1] == 3 and c == 1:
            x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        elif x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != c:
            raise ValueError(f"PSp: expected pages with 1 or 3 channels, got shape {tuple(x.shape)}")
        s = self.encoder.config.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pages -> W+ (B, n_latent, style_dim)."""
        return self.encoder(self.prepare(x)) + self.latent_avg

    def synthesize(self, w_plus: torch.Tensor) -> torch.Tensor:
        return self.decoder.synthesis(w_plus, randomize_noise=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_plus = self.encode(x)
        return self.synthesize(w_plus), w_plus

    def encoder_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, metadata) for `save_weights`: the encoder only (the decoder is saved by StyleGAN
        training) plus `latent_avg`, and both configs."""
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state["latent_avg"] = self.latent_avg.reshape(1, -1)
        return state, {"encoder": asdict(self.encoder.config), "stylegan2": asdict(self.decoder.config)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], metadata: dict, decoder: Generator,
                   source: str = "weights") -> PSp:
        """Inverse of `encoder_state`, given the generator it was trained with."""
        if "encoder" not in metadata:
            raise KeyError(f"{source}: no 'encoder' config in the metadata; expected weights saved by "
                           "mangacolor.training.psp (PSp.encoder_state)")
        if "stylegan2" in metadata and StyleGAN2Config(**metadata["stylegan2"]) != decoder.config:
            raise ValueError(f"{source}: encoder was trained for generator {metadata['stylegan2']}, "
                             f"got {asdict(decoder.config)}")
        enc = metadata["encoder"]
        config = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in enc.items()})
        psp = cls(config, decoder, state["latent_avg"])
        psp.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
        return psp


def load_psp(path, generator_path) -> PSp:
    """A trained drafting/inversion network (in eval mode): encoder weights (.safetensors) written
    by `mangacolor.training.psp` + the generator file it was trained with."""
    from mangacolor.models.stylegan2 import load_generator
    from mangacolor.io.weights import load_weights

    decoder, _ = load_generator(generator_path)
    state, metadata = load_weights(path)
    return PSp.from_state(state, metadata, decoder, str(path)).eval()
