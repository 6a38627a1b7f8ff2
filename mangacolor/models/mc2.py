"""The authors' 2021 release (manga-colorization-v2, `generator.zip`) as our `paper`-layout generator.

The paper's colorization network is the 2021 model plus the coloring draft, so the 2021 generator
maps onto ours tensor for tensor (docs/architecture.md § Colorization network lineage):

    2021 name                          ours                                   change
    encoder.*  (selayer.conv1/2)       encoder.*  (se.fc1/2, timm's names)     renamed
    to0 … to3                          cue.0 … cue.3                           to0's first conv gains 3 zero
                                                                              input columns: the draft
    tunnel4, tunnel3, tunnel2          tunnels.0, 1, 2 (merge, blocks, to_up)  merge columns reordered to
                                                                              our concatenation order
    exit                               exit (the `paper` layout's exit_width)  same
    to4, tunnel1, deconv_for_decoder   —                                       unused by the 2021 forward
                                                                              (deconv_for_decoder is its
                                                                              training-time guide decoder)

The 2021 model reads the page in [0, 1] (`ColorizerConfig.page_unit_range`), the hint as RGB in
[-1, 1] times the mask plus the mask (ours too), and answers tanh in [-1, 1] (ours too). Because the
draft's input columns are zero, the imported network colours exactly as the 2021 one until it is
trained with drafts. `tests/models/test_mc2.py` checks this against a plain re-implementation of the
2021 forward that reads the 2021 state dict by its own names.

The release also fixes how a page reaches the network (`colorizator.py`, `utils/utils.py`): it is
resized so a portrait page is `size` (576) wide and a landscape one 1.5 × `size` high (area filter),
and padded below (or right) by 1-32 rows of each column's brightest value (`release_size`,
`mangacolor.models.colorizer.release_padding`); an imported bundle records both
(`InferenceOptions.fit_width`, `pad_mode`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, CueBlock, Tunnel
from mangacolor.models.ffdnet import FFDNet

SOURCE = "manga-colorization-v2 (Golyadkin & Makarov, 2021)"
RELEASE_URL = "https://github.com/qweasdd/manga-colorization-v2"
DENOISER_WHERE = (f"expected the release's denoiser net_rgb.pth (FFDNet, colour network), linked from the README of "
                  f"{RELEASE_URL}")
WHERE = (f"expected the 2021 release's generator.zip (torch.save of Colorizer().generator.state_dict()), linked from "
         f"the README of {RELEASE_URL}")
RELEASE_SIZE = 576  # the release's default colorization width (`MangaColorizator.set_image`)


def mc2_config() -> ColorizerConfig:
    """Our generator in the 2021 model's shape: the `paper` layout, the page read in [0, 1]."""
    return ColorizerConfig.from_dict({"layout": "paper", "page_unit_range": True})


class WeightsFileError(ValueError):
    """A weights file that is not what was expected; the message is one line naming what differs."""


# ---------------------------------------------------------------------------------------------
# Names: ours -> 2021
# ---------------------------------------------------------------------------------------------

_BLOCK_PARTS = {"reduce": "conv_reduce", "conv": "conv_conv", "expand": "conv_expand",
                "se.squeeze": "selayer.conv1", "se.excite": "selayer.conv2"}
_TUNNEL_RE = re.compile(r"tunnels\.(\d+)\.(merge|to_up|blocks\.(\d+)\.(reduce|conv|expand|se\.squeeze|se\.excite))\.(weight|bias)$")


def release_name(ours: str) -> str:
    """The 2021 state-dict key of one of our `paper`-layout keys."""
    if ours.startswith("encoder."):
        return ours.replace(".se.fc1.", ".selayer.conv1.").replace(".se.fc2.", ".selayer.conv2.")
    m = re.fullmatch(r"cue\.(\d+)\.(\d+)\.(weight|bias)", ours)
    if m:
        return f"to{m[1]}.{m[2]}.{m[3]}"
    m = _TUNNEL_RE.fullmatch(ours)
    if m:
        tunnel = f"tunnel{4 - int(m[1])}"  # the 2021 model numbers its tunnels from the finest scale
        if m[2] == "merge":
            return f"{tunnel}.0.{m[5]}"
        if m[2] == "to_up":
            return f"{tunnel}.3.{m[5]}"
        return f"{tunnel}.2.{m[3]}.{_BLOCK_PARTS[m[4]]}.{m[5]}"
    if ours.startswith("exit."):
        return ours
    raise KeyError(f"no 2021 counterpart for {ours!r}")


def _meta_generator(config: ColorizerConfig) -> ColorizationGenerator:
    with torch.device("meta"):  # shapes and names only: no memory, no init cost
        return ColorizationGenerator(config)


def _unused_release_shapes(config: ColorizerConfig) -> dict[str, tuple[int, ...]]:
    """The 2021 tensors its forward never reads: to4, the finest tunnel (tunnel1), the guide decoder."""
    with torch.device("meta"):
        to4 = CueBlock(config.cue_widths[3], 256, 2)
        tunnel1 = Tunnel(64 + config.cue_widths[0], config.tunnel_widths[3], config.tunnel_dilations[3],
                         config.tunnel_cardinality[3], config.se_reduction)
    shapes = {f"to4.{k}": tuple(v.shape) for k, v in to4.state_dict().items()}
    for k, v in tunnel1.state_dict().items():
        shapes[release_name(f"tunnels.3.{k}")] = tuple(v.shape)
    # ConvTranspose2d weights are (in, out, k, k): 256 -> 128 -> 64 -> 32 -> RGB.
    for i, (c_in, c_out) in zip((0, 2, 4, 6), ((256, 128), (128, 64), (64, 32), (32, 3))):
        shapes[f"deconv_for_decoder.{i}.weight"] = (c_in, c_out, 3, 3)
        shapes[f"deconv_for_decoder.{i}.bias"] = (c_out,)
    return shapes


def release_shapes(config: ColorizerConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Every key of the 2021 generator's state dict with its shape (645 entries)."""
    config = config or mc2_config()
    ours = _meta_generator(config).state_dict()
    shapes = {release_name(k): tuple(v.shape) for k, v in ours.items()}
    shapes["to0.0.weight"] = (shapes["to0.0.weight"][0], 5, 3, 3)  # no draft columns
    for name, (a, b) in _merge_columns(config).items():
        shapes[name] = (shapes[name][0], b, *shapes[name][2:])
    shapes.update(_unused_release_shapes(config))
    return shapes


def _merge_columns(config: ColorizerConfig) -> dict[str, tuple[list[int], int]]:
    """For each used tunnel's merge conv: (our input columns as indices into the 2021 columns, their count).

    The 2021 forward concatenates [layer3, cue] (tunnel4), [up, layer2] (tunnel3), [up, layer1, stem]
    (tunnel2); ours always [up (or cue), the encoder taps of that scale in encoder order].
    """
    gen = _meta_generator(config)
    taps = list(gen.encoder.feature_info.channels())  # stem, layer1, layer2, layer3
    release_order = {0: ("tap3", "up"), 1: ("up", "tap2"), 2: ("up", "tap1", "tap0")}
    out = {}
    for k, skips in enumerate(gen.skip_index):
        width = {"up": config.cue_widths[len(gen.cue) - 1] if k == 0 else config.tunnel_widths[k - 1] // 2}
        width.update({f"tap{i}": taps[i] for i in range(len(taps))})
        start, offset = {}, 0
        for part in release_order[k]:
            start[part] = offset
            offset += width[part]
        columns = []
        for part in ("up", *(f"tap{i}" for i in skips)):
            columns += range(start[part], start[part] + width[part])
        out[release_name(f"tunnels.{k}.merge.weight")] = (columns, offset)
    return out


# ---------------------------------------------------------------------------------------------
# Reading and checking a release file
# ---------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path, what: str = WHERE) -> dict[str, torch.Tensor]:
    """A `torch.save`d state dict (tensors only: `weights_only=True`), `module.`/`generator.` prefixes dropped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such file; {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch errors all mean "not a plain state dict"
        reason = " ".join(str(exc).split())[:160]
        raise WeightsFileError(f"{path}: not a PyTorch state dict that loads without code ({type(exc).__name__}: {reason}); "
                               f"{what}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path}: holds {type(state).__name__}, not a state dict of tensors; {what}")
    for prefix in ("module.", "generator."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_release_state(state: dict[str, torch.Tensor], path: str | Path, expected: dict[str, tuple[int, ...]] | None = None) -> None:
    """Raise `WeightsFileError` (one line) unless `state` has the 2021 generator's keys and shapes."""
    expected = expected or release_shapes()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsFileError(f"{path}: {len(missing)} of the 2021 generator's {len(expected)} tensors are missing "
                               f"(first: {missing[0]}); {WHERE}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsFileError(f"{path}: {len(extra)} tensors the 2021 generator does not have (first: {extra[0]}); {WHERE}")
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if wrong:
        k = wrong[0]
        shape = lambda s: "x".join(map(str, s)) or "scalar"
        raise WeightsFileError(f"{path}: {len(wrong)} tensors differ in shape from the 2021 generator's (first: {k} is "
                               f"{shape(state[k].shape)}, expected {shape(expected[k])}); {WHERE}")


def convert_release_state(state: dict[str, torch.Tensor], config: ColorizerConfig | None = None) -> dict[str, torch.Tensor]:
    """The 2021 state dict as our generator's (`mc2_config()`): renamed, merge columns reordered, zero draft columns."""
    config = config or mc2_config()
    ours = _meta_generator(config).state_dict()
    merges = _merge_columns(config)
    out = {}
    for key, meta in ours.items():
        name = release_name(key)
        if name not in state:  # num_batches_tracked of an old save
            out[key] = torch.zeros((), dtype=meta.dtype)
            continue
        value = state[name].to(meta.dtype) if meta.dtype.is_floating_point else state[name]
        if name in merges:
            value = value[:, merges[name][0]]
        if key == "cue.0.0.weight":
            value = torch.cat([value, value.new_zeros(value.shape[0], meta.shape[1] - value.shape[1], *value.shape[2:])], dim=1)
        if tuple(value.shape) != tuple(meta.shape):
            raise AssertionError(f"{key}: converted to {tuple(value.shape)}, ours is {tuple(meta.shape)}")
        out[key] = value.contiguous()
    return out


def release_generator_state(path: str | Path, config: ColorizerConfig) -> dict[str, torch.Tensor]:
    """Our state dict for `config` from the 2021 generator at `path` (checked first): a training start
    (`colorizer.init: mc2:PATH`). `config` must be the 2021 shape (`mc2_config()`, any encoder file)."""
    import dataclasses

    expected = dataclasses.replace(mc2_config(), encoder_weights=config.encoder_weights)
    if config != expected:
        differs = [f for f in expected.to_dict() if getattr(config, f) != getattr(expected, f)]
        raise ValueError(f"colorizer.init mc2:{path} needs the 2021 model's generator (generator: {{layout: paper}} "
                         f"with the paper's widths, the page in [0, 1]); this config differs in {', '.join(differs)}")
    state = read_state_dict(path)
    check_release_state(state, path, release_shapes(config))
    return convert_release_state(state, config)


def load_release_generator(path: str | Path) -> tuple[ColorizationGenerator, dict[str, torch.Tensor]]:
    """Our generator holding the 2021 weights of `path` (checked first), and the release's own state dict."""
    config = mc2_config()
    state = read_state_dict(path)
    check_release_state(state, path, release_shapes(config))
    generator = ColorizationGenerator(config)
    generator.load_state_dict(convert_release_state(state, config))
    return generator.eval(), state


def load_release_denoiser(path: str | Path) -> FFDNet:
    """The release's FFDNet (`net_rgb.pth`, or the grey `net_gray.pth`) checked key by key against ours."""
    state = read_state_dict(path, DENOISER_WHERE)
    prefix = "intermediate_dncnn.itermediate_dncnn."  # the release's (and FFDNet's own) module names
    if not all(k.startswith(prefix) for k in state):
        other = next(k for k in state if not k.startswith(prefix))
        raise WeightsFileError(f"{path}: {other} is not an FFDNet tensor (expected {prefix}N.weight ...); {DENOISER_WHERE}")
    state = {"body." + k[len(prefix):]: v for k, v in state.items()}
    first = state.get("body.0.weight")
    channels = first.shape[1] // 5 if first is not None and first.ndim == 4 else 3
    model = FFDNet(channels if channels in (1, 3) else 3)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        what = (f"{len(missing)} FFDNet tensors missing (first: {missing[0]})" if missing else
                f"{len(extra)} tensors FFDNet does not have (first: {extra[0]})" if extra else
                f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}")
        raise WeightsFileError(f"{path}: {what}; {DENOISER_WHERE}")
    model.load_state_dict({k: state.get(k, v) for k, v in expected.items()})
    return model.eval()


def release_size(height: int, width: int, size: int = RELEASE_SIZE) -> tuple[int, int]:
    """(h, w) the release resizes a page to: `size` wide (portrait), or 1.5 × `size` high (landscape)."""
    if height < width:
        tall = int(size * 1.5)
        return tall, int(math.ceil(width / (height / tall)))
    return int(math.ceil(height / (width / size))), size


__all__ = [
    "RELEASE_SIZE",
    "WeightsFileError",
    "check_release_state",
    "convert_release_state",
    "load_release_denoiser",
    "load_release_generator",
    "mc2_config",
    "read_state_dict",
    "release_generator_state",
    "release_name",
    "release_shapes",
    "release_size",
]
