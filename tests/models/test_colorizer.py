"""Colorization generator: shapes, any page size, encoder weight loading, and that hints steer colour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch

from mangacolor.models.colorizer import (
    ColorizationGenerator,
    ColorizerConfig,
    build_generator,
    colorize,
    load_encoder_weights,
)


def tiny(**kw) -> ColorizationGenerator:
    torch.manual_seed(0)
    return ColorizationGenerator(ColorizerConfig.tiny(**kw))


def test_forward_shape_range_and_taps():
    g = tiny()
    assert g.multiple == 16  # encoder output at 1/16 with the stock stem max-pool
    bw = torch.rand(2, 1, 64, 96) * 2 - 1
    out = g(bw, torch.zeros(2, 4, 64, 96), torch.zeros(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    assert out.abs().max() <= 1
    # the 2021 layout (no max-pool) has two taps at 1/2 and one tunnel fewer
    g2021 = tiny(encoder_maxpool=False)
    assert g2021.multiple == 8 and len(g2021.tunnels) == 3 and g2021.skip_index[-1] == [0, 1]
    assert g2021(bw, torch.zeros(2, 4, 64, 96), torch.zeros(2, 3, 64, 96)).shape == (2, 3, 64, 96)


@pytest.mark.parametrize("hw", [(97, 131), (131, 97), (64, 96), (33, 17)])
def test_colorize_returns_input_size(hw):
    g = tiny().eval()
    bw = torch.rand(1, 1, *hw) * 2 - 1
    draft = torch.rand(1, 3, 256, 256) * 2 - 1  # StyleGAN draft size, resized to the page
    out = colorize(g, bw, draft=draft)
    assert out.shape == (1, 3, *hw)
    assert torch.isfinite(out).all()


def test_colorize_without_padding_is_the_plain_forward():
    g = tiny().eval()
    bw = torch.rand(1, 1, 64, 32) * 2 - 1
    with torch.no_grad():
        direct = g(bw, torch.zeros(1, 4, 64, 32), torch.zeros(1, 3, 64, 32))
    assert torch.equal(colorize(g, bw), direct)


def test_encoder_loads_rgb_checkpoint_by_summing_the_stem(tmp_path):
    # An "ImageNet" checkpoint: same timm architecture with a 3-channel stem, DataParallel prefix.
    torch.manual_seed(1)
    rgb = timm.create_model("seresnext50_32x4d", pretrained=False, in_chans=3, num_classes=10,
                            layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), cardinality=4, base_width=8)
    state = {f"module.{k}": v for k, v in rgb.state_dict().items()}
    path = tmp_path / "encoder.pth"
    torch.save(state, path)

    g = tiny()
    missing = load_encoder_weights(g.encoder, path)
    assert missing == []
    assert torch.allclose(g.encoder.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(g.encoder.layer2[0].conv2.weight, rgb.layer2[0].conv2.weight)

    with pytest.raises(FileNotFoundError, match="encoder weights not found.*encoder_weights"):
        load_encoder_weights(g.encoder, tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError):
        build_generator(ColorizerConfig.tiny(encoder_weights=str(tmp_path / "absent.pth")))


def test_random_encoder_is_warned(caplog):
    with caplog.at_level("WARNING"):
        build_generator(ColorizerConfig.tiny())
    assert "randomly initialised" in caplog.text


def _lab(rgb_pm1: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(((rgb_pm1 + 1) / 2).astype(np.float32).clip(0, 1), cv2.COLOR_RGB2Lab)


def test_dense_hint_sets_the_colour_of_its_region():
    """Two pages with the same ink, one wanted red and one blue inside a square: only the hint tells
    them apart, so a generator that fits both must be reading the hint. ΔE76 in CIELAB < 5 inside
    the square (measured ≈ 0.2; trained with the hints zeroed, ≈ 117)."""
    size, lo, hi = 32, 8, 24
    bw = torch.full((1, 1, size, size), 0.6)
    bw[..., lo - 1, lo - 1 : hi + 1] = bw[..., hi, lo - 1 : hi + 1] = -1.0  # ink outline
    bw[..., lo - 1 : hi + 1, lo - 1] = bw[..., lo - 1 : hi + 1, hi] = -1.0
    bw[..., lo:hi, lo:hi] = 0.0
    colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])  # red, blue in [-1, 1]
    target = bw.repeat(2, 3, 1, 1).clone()
    hint = torch.zeros(2, 4, size, size)
    for i, c in enumerate(colours):
        target[i, :, lo:hi, lo:hi] = c.view(3, 1, 1)
        hint[i, :3, lo:hi, lo:hi] = c.view(3, 1, 1)
        hint[i, 3, lo:hi, lo:hi] = 1.0
    bws, draft = bw.repeat(2, 1, 1, 1), torch.zeros(2, 3, size, size)

    g = tiny()
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    for _ in range(100):
        loss = (g(bws, hint, draft) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    g.eval()
    out = colorize(g, bws, hint, draft)
    inner = slice(lo + 2, hi - 2)
    for i, c in enumerate(colours):
        got = _lab(out[i, :, inner, inner].permute(1, 2, 0).numpy()).reshape(-1, 3).mean(0)
        want = _lab(c.view(1, 1, 3).numpy())[0, 0]
        delta_e = float(np.linalg.norm(got - want))
        assert delta_e < 5, f"page {i}: ΔE76 {delta_e:.1f} between output and hint colour"
    # swapping the hints swaps the colours: the hint, not the page index, decides
    swapped = colorize(g, bws, hint.flip(0), draft)
    assert swapped[0, 2, inner, inner].mean() > swapped[0, 0, inner, inner].mean()  # page 0 now blue
