"""The colorization network's generator (paper §III-B-1), and `colorize` for pages of any size.

G(X, H, S) -> Ŷ: a black-and-white page X (1 channel), a colour hint H (4 channels: RGB × mask, mask)
and a coloring draft S (3 channels, the StyleGAN draft resized to the page) give an RGB page in
[-1, 1]. The layout is the authors' 2021 model, itself AlacGAN's (docs/architecture.md § Colorization
network lineage), with the paper's two changes: the draft joins the hint branch, and the decoder's
"tunnels" are made of SE-ResNeXt bottlenecks.

    X ───────────────► SE-ResNeXt-50 encoder ──► taps f_k at 1/2, 1/4, 1/8 and the output at 1/16
    concat(X, H, S) ─► cue branch (cue[0] … cue[4]) ─► x_0 at full size, aux at the encoder output size
    tunnel at 1/16 (aux + output) ─PixelShuffle─► tunnel at 1/8 (+ f at 1/8) ─► … ─► exit (+ x_0) ─► tanh

Encoder depth (named layouts, `LAYOUTS`). "paper": the 2021 model removes the stem max-pool, so its
taps are at 1/2, 1/2, 1/4, 1/8 and its tunnels run one octave higher, and its exit is a 3×3 conv to
32 channels then a 1×1 conv to RGB: the 2021 generator plus the draft's three input channels, so the
authors' release loads into it tensor for tensor (`mangacolor.models.mc2`); 807 GFLOPs per 512×768
page by PyTorch's FLOP counter (the 2021 forward also runs its guide decoder: 850). The `paper`
preset uses it. "fast": the dataclass default keeps timm's stock strides (taps at 1/2, 1/4, 1/8,
output at 1/16, `encoder_maxpool=True`) and a one-conv exit: the same blocks and widths at under a
third of the operations (251 GFLOPs, benchmarks/colorize.py), the deepest tunnel's twenty blocks see
a 4× larger part of the page, and any timm or ImageNet SE-ResNeXt-50 checkpoint maps onto the
encoder key for key.

Weights. The encoder is loaded from a user-placed file (the paper used one pretrained for tag
prediction on line art; an ImageNet checkpoint also works); every other layer gets Xavier init
(Appendix D). Without a file the encoder is random and a warning says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

log = logging.getLogger(__name__)

# AlacGAN's dilation pattern for the tunnels above the deepest one: a growing, then shrinking
# receptive field without extra downsampling.
_MID_DILATIONS = (1, 1, 2, 2, 4, 4, 2, 1)


@dataclass(frozen=True)
class ColorizerConfig:
    """Every shape-defining number of the generator. Decoder lists run deepest scale first."""

    encoder: str = "seresnext50"  # "seresnext50" (paper) | "tiny" (same timm code, narrow, for tests)
    encoder_weights: str | None = None  # state-dict file for the encoder; None = random (warned)
    encoder_maxpool: bool = True  # False = the 2021 model's taps (4× the FLOPs), see module docstring and LAYOUTS
    in_cues: int = 1 + 4 + 3  # X, H (RGB × mask, mask), S
    cue_widths: tuple[int, ...] = (32, 64, 92, 128, 128)  # to_0 at full size, then one per halving
    tunnel_widths: tuple[int, ...] = (512, 256, 128, 64)
    tunnel_dilations: tuple[tuple[int, ...], ...] = ((1,) * 20, _MID_DILATIONS, _MID_DILATIONS, (1, 2, 4, 2, 1))
    tunnel_cardinality: tuple[int, ...] = (32, 32, 32, 16)
    se_reduction: int = 16
    exit_width: int | None = None  # None: one 3×3 conv to RGB; N: the 2021 exit (3×3 conv to N, leaky ReLU, 1×1 to RGB)
    page_unit_range: bool = False  # True: the page enters the network in [0, 1], as the 2021 model's ToTensor gives it

    @staticmethod
    def resolve_layout(d: dict) -> dict:
        """Fields with a named `layout` ("paper" | "fast", see LAYOUTS) turned into the fields it sets."""
        d = dict(d)
        name = d.pop("layout", None)
        if name is None:
            return d
        if name not in LAYOUTS:
            raise ValueError(f"generator layout must be one of {sorted(LAYOUTS)}, got {name!r}")
        for key, value in LAYOUTS[name].items():
            if key in d and d[key] != value:
                raise ValueError(f"generator layout {name!r} sets {key}={value}, but the config also says {key}={d[key]}")
            d[key] = value
        return d

    @classmethod
    def tiny(cls, **overrides) -> "ColorizerConfig":
        """A few-hundred-thousand-parameter generator with the paper's structure: tests and demo."""
        base = dict(
            encoder="tiny",
            cue_widths=(8, 16, 16, 32, 32),
            tunnel_widths=(64, 32, 32, 16),
            tunnel_dilations=((1, 1), (1, 2), (1, 2), (1,)),
            tunnel_cardinality=(8, 4, 4, 2),
            se_reduction=4,
        )
        base.update(cls.resolve_layout(overrides))
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ColorizerConfig":
        d = cls.resolve_layout(d)
        for key in ("cue_widths", "tunnel_widths", "tunnel_cardinality"):
            if key in d:
                d[key] = tuple(d[key])
        if "tunnel_dilations" in d:
            d["tunnel_dilations"] = tuple(tuple(x) for x in d["tunnel_dilations"])
        return cls(**d)


# Named generator layouts. "paper": the authors' (no stem max-pool, taps one octave finer, their
# two-conv exit; ~800 GFLOPs per 768x512 page); "fast": timm's stock strides, under a third of the operations, at a
# quality cost that benchmarks/learning.py measures.
LAYOUTS: dict[str, dict] = {"paper": {"encoder_maxpool": False, "exit_width": 32}, "fast": {"encoder_maxpool": True}}


# ---------------------------------------------------------------------------------------------
# Encoder: timm's SE-ResNeXt, one input channel, cut after stage 3.
# ---------------------------------------------------------------------------------------------

_TIMM_NAME = "seresnext50_32x4d"
_ENCODER_KWARGS = {
    "seresnext50": {},
    # Same timm class and block as the paper's encoder, one block per stage and a sixteenth of the
    # width: tests exercise the real code path in milliseconds.
    "tiny": {"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64), "cardinality": 4, "base_width": 8},
}


def build_encoder(name: str, maxpool: bool = True) -> nn.Module:
    """timm feature extractor returning [stem (1/2), stage 1, stage 2, stage 3] feature maps."""
    import timm

    if name not in _ENCODER_KWARGS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(_ENCODER_KWARGS)}")
    encoder = timm.create_model(
        _TIMM_NAME, pretrained=False, features_only=True, in_chans=1, out_indices=(0, 1, 2, 3), **_ENCODER_KWARGS[name]
    )
    if not maxpool:
        encoder.maxpool = nn.Identity()
    return encoder


def encoder_reductions(encoder: nn.Module) -> list[int]:
    reductions = list(encoder.feature_info.reduction())
    if isinstance(getattr(encoder, "maxpool", None), nn.Identity):
        reductions = [reductions[0]] + [r // 2 for r in reductions[1:]]
    return reductions


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints often wrap the weights: {"state_dict": ...} or {"model": ...}.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load an SE-ResNeXt-50 state dict (timm / ImageNet / tag-prediction) into the encoder.

    Keys may carry a `module.`, `model.`, `encoder.` or `backbone.` prefix; the classifier and stage
    4 are ignored. The 2021 release's names (Tag2Pix's SE-ResNeXt: `selayer.conv1/2` for timm's
    `se.fc1/2`) are read too, so its `extractor.pth` and the encoder part of its `generator.zip` load
    key by key (other tensors of a whole generator are ignored). A 3-channel stem is folded into our 1-channel one by summing over its input
    channels, which gives a grey image the response the RGB filter gave to that grey as colour.
    Returns the names of the encoder parameters the file did not provide (running stats included).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"encoder weights not found: {path}. Expected an SE-ResNeXt-50 32x4d state dict (.pth or .safetensors): "
            "the paper's, pretrained for tag prediction on line art (the 2021 release's extractor.pth, linked from the "
            "README of github.com/qweasdd/manga-colorization, or the encoder of its generator.zip, linked from "
            "github.com/qweasdd/manga-colorization-v2: README § Colour real pages now), or timm's ImageNet "
            "'seresnext50_32x4d' model.safetensors from its Hugging Face page. Copy it there, or point "
            "colorizer.encoder_init (ColorizerConfig.encoder_weights) at it, or set colorizer.encoder_init: imagenet "
            "or scratch to start elsewhere."
        )
    state = _read_state_dict(path)
    own = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "model.", "encoder.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        key = key.replace(".selayer.conv1.", ".se.fc1.").replace(".selayer.conv2.", ".se.fc2.")
        if key in own:
            mapped[key] = value
    stem = mapped.get("conv1.weight")
    if stem is not None and stem.shape[1] != own["conv1.weight"].shape[1]:
        mapped["conv1.weight"] = stem.sum(dim=1, keepdim=True)
    wrong = [k for k, v in mapped.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(
            f"{path}: {len(wrong)} tensors do not fit the '{_TIMM_NAME}' encoder (first: {wrong[0]} "
            f"{tuple(mapped[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}); is it an SE-ResNeXt-50 32x4d checkpoint?"
        )
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    weights_missing = [k for k in missing if k.endswith("weight")]
    if len(weights_missing) > len(own) // 4:
        raise ValueError(
            f"{path}: only {len(mapped)} of {len(own)} encoder tensors found (missing e.g. {weights_missing[:3]}); "
            f"expected timm '{_TIMM_NAME}' key names (conv1.weight, layer1.0.conv1.weight, ...)"
        )
    encoder.load_state_dict(mapped, strict=False)
    if missing:
        log.warning("encoder weights %s lacked %d tensors (left at init): %s", path, len(missing), missing[:5])
    return missing


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=bias)


class SqueezeExcitation(nn.Module):
    """Channel gate from the global mean (Hu et al.): the "SE" the paper adds to the decoder blocks."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(s))))


class SEResNeXtBottleneck(nn.Module):
    """1×1 reduce to half width, grouped (dilated) 3×3, 1×1 expand, SE gate, identity shortcut."""

    def __init__(self, channels: int, cardinality: int, dilation: int = 1, se_reduction: int = 16):
        super().__init__()
        mid = channels // 2
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.conv = conv3x3(mid, mid, dilation=dilation, groups=cardinality, bias=False)
        self.expand = nn.Conv2d(mid, channels, 1, bias=False)
        self.se = SqueezeExcitation(channels, se_reduction)

    def forward(self, x):
        y = F.leaky_relu(self.reduce(x), 0.2)
        y = F.leaky_relu(self.conv(y), 0.2)
        return x + self.se(self.expand(y))


class Tunnel(nn.Module):
    """One decoder scale: merge the inputs, run SE-ResNeXt blocks, upsample ×2 by PixelShuffle.

    Output has `width // 2` channels at twice the input size (conv to 2·width, then shuffle by 2).
    """

    def __init__(self, c_in: int, width: int, dilations: tuple[int, ...], cardinality: int, se_reduction: int):
        super().__init__()
        self.merge = conv3x3(c_in, width)
        self.blocks = nn.Sequential(*[SEResNeXtBottleneck(width, cardinality, d, se_reduction) for d in dilations])
        self.to_up = conv3x3(width, 2 * width)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        x = self.blocks(F.leaky_relu(self.merge(x), 0.2))
        return F.leaky_relu(self.up(self.to_up(x)), 0.2)


class CueBlock(nn.Sequential):
    """Two 3×3 convs with leaky ReLU; the first strides by 2 except at full size (to_0)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(conv3x3(c_in, c_out, stride=stride), nn.LeakyReLU(0.2), conv3x3(c_out, c_out), nn.LeakyReLU(0.2))


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


class ColorizationGenerator(nn.Module):
    """G(X, H, S): page (B,1,H,W), hint (B,4,H,W), draft (B,3,H,W), all in [-1, 1] (mask in {0, 1}).

    H and W must be multiples of `self.multiple`; `colorize` pads any other size.
    """

    def __init__(self, config: ColorizerConfig = ColorizerConfig()):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, config.encoder_maxpool)
        channels = list(self.encoder.feature_info.channels())
        reductions = encoder_reductions(self.encoder)
        deepest = reductions[-1]
        n_down = int(math.log2(deepest))
        if len(config.cue_widths) < n_down + 1:
            raise ValueError(f"cue_widths needs {n_down + 1} entries for an encoder output at 1/{deepest}")
        self.multiple = deepest

        # Cue branch: concat(X, H, S) down to the encoder output size; to_0 also feeds the exit.
        widths = config.cue_widths[: n_down + 1]
        self.cue = nn.ModuleList([CueBlock(config.in_cues, widths[0], 1)])
        self.cue.extend(CueBlock(a, b, 2) for a, b in zip(widths[:-1], widths[1:]))

        # One tunnel per encoder scale, deepest first; skips are every encoder tap at that scale.
        scales = sorted(set(reductions), reverse=True)
        if len(config.tunnel_widths) < len(scales):
            raise ValueError(f"tunnel_widths needs {len(scales)} entries for encoder scales {scales}")
        self.skip_index = [[i for i, r in enumerate(reductions) if r == s] for s in scales]
        self.tunnels = nn.ModuleList()
        c_up = widths[-1]  # the deepest tunnel's extra input is the cue branch
        for k, s in enumerate(scales):
            c_in = c_up + sum(channels[i] for i in self.skip_index[k])
            width = config.tunnel_widths[k]
            self.tunnels.append(
                Tunnel(c_in, width, config.tunnel_dilations[k], config.tunnel_cardinality[k], config.se_reduction)
            )
            c_up = width // 2
        if scales[-1] != 2:
            raise ValueError(f"the last encoder scale must be 1/2 (the exit is one shuffle above it); got {scales}")
        if config.exit_width is None:
            self.exit = conv3x3(c_up + widths[0], 3)
        else:
            self.exit = nn.Sequential(conv3x3(c_up + widths[0], config.exit_width), nn.LeakyReLU(0.2),
                                      nn.Conv2d(config.exit_width, 3, 1))
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier for every layer (Appendix D); `load_encoder_weights` then overwrites the encoder."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # Activation checkpointing: in training, keep only each cue block's, tunnel's (and, when no batch norm updates
    # its statistics, the encoder's) inputs and recompute the rest in the backward pass. Same result, a fraction
    # of the memory, about a third more compute (mangacolor/training/memory.py).
    checkpointing: bool = False

    def _run(self, module: nn.Module, *args: torch.Tensor):
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, bw: torch.Tensor, hint: torch.Tensor, draft: torch.Tensor) -> torch.Tensor:
        if self.config.page_unit_range:
            bw = bw * 0.5 + 0.5
        cues = torch.cat([bw, hint, draft], dim=1)
        x0 = self._run(self.cue[0], cues)
        aux = x0
        for block in self.cue[1:]:
            aux = self._run(block, aux)
        # Recomputing a batch norm in training mode would update its running statistics twice.
        encoder_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.encoder.modules())
        feats = self.encoder(bw) if encoder_bn else self._run(self.encoder, bw)
        x = aux
        for tunnel, skips in zip(self.tunnels, self.skip_index):
            x = self._run(tunnel, torch.cat([x, *(feats[i] for i in skips)], dim=1))
        return torch.tanh(self.exit(torch.cat([x, x0], dim=1)))


def build_generator(config: ColorizerConfig, weights: str | Path | None = None) -> ColorizationGenerator:
    """The generator with the right weights: a full checkpoint, else the encoder file, else random.

    `weights` is a safetensors file written by `save_weights` (its metadata may hold the config), or
    "mc2:PATH", the 2021 release's generator.zip (`mangacolor.models.mc2`: the paper layout only).
    """
    generator = ColorizationGenerator(config)
    if weights is not None and str(weights).startswith("mc2:"):
        from mangacolor.models.mc2 import release_generator_state

        generator.load_state_dict(release_generator_state(str(weights)[len("mc2:"):], config))
    elif weights is not None:
        from mangacolor.io.weights import load_weights

        state, _ = load_weights(weights)
        generator.load_state_dict(state)
    elif config.encoder_weights:
        load_encoder_weights(generator.encoder, config.encoder_weights)
    else:
        log.warning(
            "colorizer encoder is randomly initialised (ColorizerConfig.encoder_weights is None): "
            "the paper starts from a pretrained SE-ResNeXt-50; results are not comparable to it"
        )
    return generator


# ---------------------------------------------------------------------------------------------
# Any page size
# ---------------------------------------------------------------------------------------------


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    if mode == "reflect" and (pad[1] >= x.shape[-1] or pad[3] >= x.shape[-2]):
        mode = "replicate"  # reflect cannot pad by more than the size itself (tiny pages)
    return F.pad(x, pad, mode=mode) if any(pad) else x


def release_padding(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """(rows, columns) the 2021 release adds below and right of a page: its long-side axis (the
    height, or the width of a landscape page) always grows, by 1 to `multiple` (a whole `multiple`
    when it is one already), the other side to the next multiple (after its resize it is one)."""
    if height < width:
        return -height % multiple, multiple - width % multiple
    return multiple - height % multiple, -width % multiple


def _pad_with_maximum(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Rows below filled with each column's maximum, then columns right with each row's (numpy's 'maximum')."""
    if rows:
        x = torch.cat([x, x.amax(dim=-2, keepdim=True).expand(*x.shape[:-2], rows, x.shape[-1])], dim=-2)
    if cols:
        x = torch.cat([x, x.amax(dim=-1, keepdim=True).expand(*x.shape[:-1], cols)], dim=-1)
    return x


PAD_MODES = ("reflect", "mc2")


def colorize(
    generator: nn.Module,
    bw: torch.Tensor,
    hint: torch.Tensor | None = None,
    draft: torch.Tensor | None = None,
    multiple: int = 32,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """Colorize pages of any size and aspect: (B,1,H,W) in [-1, 1] -> (B,3,H,W) in [-1, 1].

    `hint` (B,4,H,W) defaults to empty (zeros); `draft` (B,3,h,w) of any size (StyleGAN drafts are
    256×256) is resized to the page, and defaults to empty (zeros, i.e. mid-grey). The inputs are
    padded right and bottom to a multiple of `multiple` and the output is cropped back: the page by
    reflection (`pad_mode` "reflect": the network sees no artificial border) or as the 2021 release
    pads it ("mc2": `release_padding`, filled with each column's or row's brightest value); the hint
    with zeros, so padding adds no hints.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    b, _, h, w = bw.shape
    if hint is None:
        hint = bw.new_zeros(b, 4, h, w)
    if draft is None:
        draft = bw.new_zeros(b, 3, h, w)
    elif draft.shape[-2:] != (h, w):
        draft = F.interpolate(draft.float(), size=(h, w), mode="bilinear", align_corners=False).to(bw.dtype)
    multiple = max(multiple, getattr(generator, "multiple", 1))
    if pad_mode == "mc2":
        rows, cols = release_padding(h, w, multiple)
        page = _pad_with_maximum(bw, rows, cols)
    else:
        rows, cols = -h % multiple, -w % multiple
        page = _pad(bw, (0, cols, 0, rows), "reflect")
    pad = (0, cols, 0, rows)
    with torch.no_grad():
        out = generator(page, _pad(hint, pad, "constant"), _pad(draft, pad, "reflect"))
    return out[..., :h, :w]


def count_gflops(generator: nn.Module, height: int = 768, width: int = 512, batch: int = 1) -> float:
    """Forward GFLOPs for one (height × width) page, as PyTorch's FLOP counter counts them (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(generator.parameters())
    bw = torch.zeros(batch, 1, height, width, device=p.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        generator(bw, bw.new_zeros(batch, 4, height, width), bw.new_zeros(batch, 3, height, width))
    return counter.get_total_flops() / 1e9


__all__ = [
    "LAYOUTS",
    "PAD_MODES",
    "ColorizerConfig",
    "ColorizationGenerator",
    "SEResNeXtBottleneck",
    "SqueezeExcitation",
    "Tunnel",
    "build_encoder",
    "build_generator",
    "colorize",
    "count_gflops",
    "load_encoder_weights",
    "release_padding",
]
