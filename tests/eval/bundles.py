"""Tiny model bundles for evaluation tests: random, or with hand-set weights of known quality.

`kind="random"`: the tiny generator as initialised (a near-uniform grey mush).
`kind="page"`: the cue branch copies the page into the exit, which outputs it lightly tinted:
line art kept, so its colorizations look far more like pages than the mush does.
With `drafting=True` the bundle also holds a tiny StyleGAN2 and pSp drafting encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mangacolor.io.bundle import write_bundle
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.io.weights import save_weights

TINY_GAN = StyleGAN2Config(size=32, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=8)
TINY_ENCODER = EncoderConfig(input_nc=1, input_size=32, widths=(4, 4, 8, 8), units=(1, 1, 1, 1), se_reduction=4)


def _page_preserving(generator) -> None:
    with torch.no_grad():
        first, second = generator.cue[0][0], generator.cue[0][2]
        for conv in (first, second):
            conv.weight.zero_()
            conv.bias.zero_()
        first.weight[0, 0, 1, 1] = 1.0
        first.bias[0] = 1.0  # x0[0] = page + 1 >= 0, so the leaky ReLUs pass it unchanged
        second.weight[0, 0, 1, 1] = 1.0
        exit_conv = generator.exit
        exit_conv.weight.zero_()
        x0_channel = exit_conv.weight.shape[1] - first.out_channels
        for rgb, tint in enumerate((0.15, 0.0, -0.15)):
            exit_conv.weight[rgb, x0_channel, 1, 1] = 1.5
            exit_conv.bias[rgb] = -1.5 + tint


def tiny_bundle(out_dir: str | Path, kind: str = "random", drafting: bool = False, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = ColorizerConfig.tiny()
    generator = build_generator(cfg)
    if kind == "page":
        _page_preserving(generator)
    elif kind != "random":
        raise ValueError(kind)
    files = {"colorizer": save_weights(out / "parts" / "g.safetensors", generator, {"config": cfg.to_dict()})}
    if drafting:
        gan = TINY_GAN.generator()
        latent_avg = gan.mean_latent(64, torch.Generator().manual_seed(seed))
        files["stylegan"] = save_weights(out / "parts" / "s.safetensors", *generator_state(gan, latent_avg))
        psp = PSp(TINY_ENCODER, gan, latent_avg)
        files["drafting"] = save_weights(out / "parts" / "d.safetensors", *psp.encoder_state())
    return write_bundle(out / "bundle", files, {"test_kind": kind})
