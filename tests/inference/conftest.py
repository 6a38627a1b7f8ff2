"""A tiny model bundle (random-init colorizer, StyleGAN and both pSp encoders) shared by the inference tests."""

import pytest
import torch

from mangacolor.io.bundle import write_bundle
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.io.weights import save_weights


def make_bundle(tmp, colorizer_module=None):
    torch.manual_seed(0)
    cfg = ColorizerConfig.tiny()
    colorizer = save_weights(tmp / "c.safetensors", colorizer_module or build_generator(cfg), {"config": cfg.to_dict()})
    sg_cfg = StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=32)
    g = sg_cfg.generator()
    latent_avg = g.mean_latent(64) if hasattr(g, "mean_latent") else torch.zeros(1, 32)
    stylegan = save_weights(tmp / "g.safetensors", *generator_state(g, latent_avg))
    enc_cfg = EncoderConfig(input_nc=1, input_size=32, widths=(8, 8, 16, 32), units=(1, 1, 1, 1), se_reduction=4)
    drafting = save_weights(tmp / "d.safetensors", *PSp(enc_cfg, g, latent_avg).encoder_state())
    inv_cfg = EncoderConfig(input_nc=3, input_size=32, widths=(8, 8, 16, 32), units=(1, 1, 1, 1), se_reduction=4)
    inversion = save_weights(tmp / "i.safetensors", *PSp(inv_cfg, g, latent_avg).encoder_state())
    return write_bundle(tmp / "bundle", {"colorizer": colorizer, "stylegan": stylegan, "drafting": drafting, "inversion": inversion})


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))
