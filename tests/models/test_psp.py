"""pSp encoder (mangacolor/models/psp.py): the paper-size layout, W+ around the average latent, frozen decoder."""

from __future__ import annotations

import pytest
import torch

from mangacolor.models.psp import PSp, EncoderConfig, GradualStyleEncoder
from mangacolor.models.stylegan2 import StyleGAN2Config

GEN = StyleGAN2Config(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8)
ENC = EncoderConfig(input_nc=1, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 2, 1), se_reduction=4)


def tiny_psp(seed: int = 0, input_nc: int = 1) -> PSp:
    torch.manual_seed(seed)
    g = GEN.generator()
    cfg = EncoderConfig(input_nc, ENC.input_size, ENC.widths, ENC.units, ENC.se_reduction)
    return PSp(cfg, g, g.mean_latent(64, torch.Generator().manual_seed(seed)))


def test_paper_encoder_layout_on_meta_device():
    taps = []
    with torch.device("meta"):
        enc = GradualStyleEncoder(EncoderConfig(input_nc=1), n_styles=14, style_dim=512)
        for i in enc.tap_index[1:]:
            enc.body[i].register_forward_hook(lambda m, inp, out: taps.append(tuple(out.shape)))
        w = enc(torch.empty(2, 1, 256, 256))
    assert len(enc.body) == 3 + 4 + 14 + 3
    assert w.shape == (2, 14, 512)
    # feature pyramid taps: 128 ch at 1/4, 256 at 1/8, 512 at 1/16
    assert taps == [(2, 128, 64, 64), (2, 256, 32, 32), (2, 512, 16, 16)]
    # map2style depth: log2 of the map it reads (16, 32, 64 px -> 4, 5, 6 stride-2 convs)
    n_convs = [sum(isinstance(m, torch.nn.Conv2d) for m in block.convs) for block in enc.styles]
    assert n_convs == [4] * 3 + [5] * 4 + [6] * 7


def test_w_plus_is_offset_from_the_average_latent():
    psp = tiny_psp().eval()
    for block in psp.encoder.styles:
        torch.nn.init.zeros_(block.linear.weight)
        torch.nn.init.zeros_(block.linear.bias)
    image, w_plus = psp(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert image.shape == (2, 3, 32, 32) and w_plus.shape == (2, psp.n_latent, 16)
    torch.testing.assert_close(w_plus, psp.latent_avg.expand(2, psp.n_latent, -1))


def test_only_the_encoder_learns_and_the_decoder_stays_in_eval():
    psp = tiny_psp().train()
    assert psp.encoder.training and not psp.decoder.training
    image, _ = psp(torch.rand(2, 1, 32, 32) * 2 - 1)
    image.square().mean().backward()
    assert all(p.grad is None for p in psp.decoder.parameters())
    grads = [p.grad for p in psp.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_inputs_are_converted_to_the_encoder_channels_and_size():
    psp = tiny_psp().eval()
    grey = torch.rand(1, 1, 48, 40) * 2 - 1
    colour = grey.expand(-1, 3, -1, -1)
    assert psp.prepare(grey).shape == (1, 1, 32, 32)
    # a grey page given as RGB is the same page
    torch.testing.assert_close(psp.prepare(colour), psp.prepare(grey), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        psp.prepare(torch.zeros(1, 2, 32, 32))
    colour_psp = tiny_psp(input_nc=3).eval()
    assert colour_psp.prepare(grey).shape == (1, 3, 32, 32)


def test_encoder_state_round_trip():
    psp = tiny_psp(seed=1).eval()
    state, meta = psp.encoder_state()
    again = PSp.from_state(state, meta, psp.decoder).eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], psp(x)[0])
    other = StyleGAN2Config(size=32, style_dim=16, n_mlp=3, channel_multiplier=1, channel_max=8).generator()
    with pytest.raises(ValueError, match="trained for generator"):
        PSp.from_state(state, meta, other)
