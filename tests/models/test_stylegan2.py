"""StyleGAN2 (mangacolor/models/stylegan2.py): sizes, the modulated conv, resampling, losses, port weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mangacolor.models.stylegan2 import (
    Blur,
    ModulatedConv2d,
    StyleGAN2Config,
    Upsample,
    blur_kernel,
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
    generator_from_state,
    generator_state,
    load_port_checkpoint,
    mixing_noise,
)
from mangacolor.io.weights import count_parameters

TINY = StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8)


def test_paper_sizes_have_the_ports_parameter_counts():
    cfg = StyleGAN2Config()  # 256 px, multiplier 2
    with torch.device("meta"):
        g, d = cfg.generator(), cfg.discriminator()
    assert count_parameters(g) == 30_034_338
    assert count_parameters(g.style) == 2_101_248
    assert count_parameters(d) == 28_864_129
    assert g.n_latent == cfg.n_latent == 14
    assert g.channels[64] == 512 and g.channels[128] == 256 and g.channels[256] == 128


def _per_sample_reference(conv: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The textbook definition: build each sample's weight, convolve that sample alone."""
    outs = []
    for b in range(x.shape[0]):
        s = conv.modulation(style[b : b + 1])[0]  # (in,)
        w = conv.weight[0] * conv.scale * s.view(1, -1, 1, 1)
        if conv.demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if conv.upsample:
            y = F.conv_transpose2d(x[b : b + 1], w.transpose(0, 1), stride=2)
            # blur each channel with the 4x4 [1,3,3,1] kernel (gain 4), padding 1
            k = blur_kernel(4.0).view(1, 1, 4, 4)
            y = torch.cat([F.conv2d(y[:, c : c + 1], k, padding=1) for c in range(y.shape[1])], dim=1)
        else:
            y = F.conv2d(x[b : b + 1], w, padding=conv.kernel_size // 2)
        outs.append(y)
    return torch.cat(outs)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_equals_explicit_per_sample_weights(upsample, demodulate, fused):
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, style_dim=7, demodulate=demodulate, upsample=upsample)
    with torch.no_grad():
        conv.modulation.bias.normal_()  # styles far from the identity scaling
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 7)
    with torch.no_grad():
        expected = _per_sample_reference(conv, x, style)
        got = conv(x, style, fused=fused)
    assert got.shape == ((3, 5, 16, 16) if upsample else (3, 5, 8, 8))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_modulated_conv_gradients_agree_between_paths():
    torch.manual_seed(1)
    conv = ModulatedConv2d(4, 4, 3, style_dim=5, upsample=True)
    x, style = torch.randn(2, 4, 6, 6), torch.randn(2, 5)
    grads = []
    for fused in (True, False):
        conv.zero_grad()
        conv(x, style, fused=fused).square().sum().backward()
        grads.append([p.grad.clone() for p in conv.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_upsample_is_zero_insertion_then_padded_blur():
    """Same alignment as upfirdn2d(up=2, pad=(2, 1)) with the [1,3,3,1] kernel x 4."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 5)
    up = torch.zeros(2, 3, 10, 10)
    up[..., ::2, ::2] = x
    k = blur_kernel(4.0).view(1, 1, 4, 4).expand(3, 1, 4, 4)
    expected = F.conv2d(F.pad(up, (2, 1, 2, 1)), k, groups=3)
    torch.testing.assert_close(Upsample()(x), expected)


def test_blur_is_the_normalised_binomial_filter():
    k = blur_kernel()
    assert k.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(k[0], torch.tensor([1.0, 3.0, 3.0, 1.0]) / 64)
    # A constant image stays constant away from the zero padding.
    y = Blur(pad=1)(torch.ones(1, 2, 8, 8))
    assert y.shape == (1, 2, 7, 7)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.ones(1, 2, 3, 3))


def test_generator_forward_mixing_truncation_and_synthesis():
    torch.manual_seed(3)
    g = TINY.generator().eval()
    z = [torch.randn(2, 16), torch.randn(2, 16)]
    image, latents = g(z, return_latents=True, inject_index=2, randomize_noise=False)
    assert image.shape == (2, 3, 16, 16) and latents.shape == (2, g.n_latent, 16)
    w0, w1 = g.get_latent(z[0]), g.get_latent(z[1])
    torch.testing.assert_close(latents[:, :2], w0[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(latents[:, 2:], w1[:, None].expand(-1, g.n_latent - 2, -1))
    # synthesis(W+) is the same function, fused or not
    with torch.no_grad():
        torch.testing.assert_close(g.synthesis(latents, randomize_noise=False), image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g.synthesis(latents, randomize_noise=False, fused=False), image, rtol=1e-4, atol=1e-5)
    # truncation 0 maps every z onto the truncation latent: identical images
    mean = g.mean_latent(64, torch.Generator().manual_seed(0))
    same, _ = g([torch.randn(3, 16)], truncation=0.0, truncation_latent=mean, randomize_noise=False)
    torch.testing.assert_close(same[0], same[2])


def test_discriminator_shapes_and_odd_batch():
    torch.manual_seed(4)
    d = TINY.discriminator()
    assert d(torch.randn(4, 3, 16, 16)).shape == (4, 1)
    assert d(torch.randn(6, 3, 16, 16)).shape == (6, 1)  # 6 is not a multiple of the group of 4


def test_logistic_losses_known_values():
    zero = torch.zeros(5, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    assert g_nonsaturating_loss(torch.full((2, 1), 30.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    torch.manual_seed(5)
    a = torch.randn(3, 4, 4, requires_grad=True)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    pred = (a * x).flatten(1).sum(1, keepdim=True)  # D(x) = <a, x>, grad_x D = a
    r1 = d_r1_loss(pred, x)
    assert r1.item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)
    r1.backward()  # d|a|^2/da = 2a: the penalty is differentiable in D's weights
    torch.testing.assert_close(a.grad, 2 * a.detach())


def test_r1_of_a_quadratic_discriminator():
    torch.manual_seed(6)
    a = torch.randn(1, 2, 3, 3, requires_grad=True)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    pred = (a * x.pow(2)).flatten(1).sum(1, keepdim=True)  # grad_x D = 2 a x
    r1 = d_r1_loss(pred, x)
    expected = (2 * a * x).pow(2).flatten(1).sum(1).mean()
    assert r1.item() == pytest.approx(expected.item(), rel=1e-5)
    r1.backward()
    torch.testing.assert_close(a.grad, (8 * a * x.pow(2)).mean(0, keepdim=True).detach(), rtol=1e-5, atol=1e-6)


def test_path_length_penalty_value_and_gradient_on_a_linear_generator():
    torch.manual_seed(7)
    b, n_latent, dim, decay, prev_mean = 2, 3, 4, 0.01, 0.3
    s = torch.tensor(1.7, requires_grad=True)
    latents = torch.randn(b, n_latent, dim, requires_grad=True)
    fake = s * latents.reshape(b, 1, n_latent, dim)  # image = s * w, so J^T y = s * y
    y = torch.randn(b, 1, n_latent, dim)
    penalty, new_mean, lengths = g_path_regularize(fake, latents, prev_mean, decay, noise=y)

    q = torch.sqrt(y.reshape(b, n_latent, dim).pow(2).sum(2).mean(1))  # ||y|| per sample, as a path length
    s0 = s.item()
    torch.testing.assert_close(lengths.detach(), s0 * q)
    mean = prev_mean + decay * (s0 * q.mean() - prev_mean)
    assert new_mean.item() == pytest.approx(mean.item(), rel=1e-6)
    assert penalty.item() == pytest.approx(((s0 * q - mean) ** 2).mean().item(), rel=1e-5)
    # d/ds mean_b (s q_b - m(s))^2 with m(s) = prev + decay (s mean(q) - prev)
    expected_grad = (2 * (s0 * q - mean) * (q - decay * q.mean())).mean()
    penalty.backward()
    assert s.grad.item() == pytest.approx(expected_grad.item(), rel=1e-4)


def test_mixing_noise_probability():
    g = torch.Generator().manual_seed(0)
    counts = [len(mixing_noise(2, 8, 0.9, generator=g)) for _ in range(400)]
    assert set(counts) == {1, 2}
    assert 0.85 < counts.count(2) / 400 < 0.95
    assert all(len(mixing_noise(2, 8, 0.0)) == 1 for _ in range(5))


def _port_generator_keys(size: int, n_mlp: int) -> set[str]:
    """The key names of the port's Generator.state_dict(), written from its module layout."""
    keys = {f"style.{i}.{p}" for i in range(1, n_mlp + 1) for p in ("weight", "bias")}
    keys.add("input.input")
    conv = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
    rgb = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias"]
    keys |= {f"conv1.{k}" for k in conv} | {f"to_rgb1.{k}" for k in rgb}
    log_size = int(math.log2(size))
    for j in range(log_size - 2):
        keys |= {f"convs.{2 * j}.{k}" for k in conv + ["conv.blur.kernel"]}
        keys |= {f"convs.{2 * j + 1}.{k}" for k in conv}
        keys |= {f"to_rgbs.{j}.{k}" for k in rgb + ["upsample.kernel"]}
    keys |= {f"noises.noise_{i}" for i in range((log_size - 2) * 2 + 1)}
    return keys


def _port_discriminator_keys(size: int) -> set[str]:
    keys = {"convs.0.0.weight", "convs.0.1.bias"}
    for i in range(1, int(math.log2(size)) - 1):
        keys |= {f"convs.{i}.conv1.0.weight", f"convs.{i}.conv1.1.bias", f"convs.{i}.conv2.0.kernel",
                 f"convs.{i}.conv2.1.weight", f"convs.{i}.conv2.2.bias", f"convs.{i}.skip.0.kernel",
                 f"convs.{i}.skip.1.weight"}
    keys |= {"final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
             "final_linear.1.weight", "final_linear.1.bias"}
    return keys


def test_state_dict_keys_are_the_ports():
    g, d = TINY.generator(), TINY.discriminator()
    assert set(g.state_dict()) == _port_generator_keys(16, 2)
    assert set(d.state_dict()) == _port_discriminator_keys(16)
    assert g.state_dict()["convs.0.conv.weight"].shape == (1, 8, 8, 3, 3)
    assert g.state_dict()["to_rgbs.0.upsample.kernel"].shape == (4, 4)
    assert g.state_dict()["to_rgb1.bias"].shape == (1, 3, 1, 1)


def test_port_checkpoint_round_trip(tmp_path):
    torch.manual_seed(8)
    source = TINY.generator()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the init values
    latent_avg = torch.randn(1, 16)
    path = tmp_path / "port.pt"
    torch.save({"g": source.state_dict(), "d": TINY.discriminator().state_dict(), "g_ema": source.state_dict(),
                "latent_avg": latent_avg[0]}, path)

    loaded, avg = load_port_checkpoint(path, size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8)
    torch.testing.assert_close(avg, latent_avg)
    w = torch.randn(2, source.n_latent, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.synthesis(w, randomize_noise=False), source.synthesis(w, randomize_noise=False))

    # our own format keeps the same keys plus latent_avg and the config
    state, meta = generator_state(loaded, avg)
    again, avg2 = generator_from_state(state, meta)
    torch.testing.assert_close(avg2, avg)
    assert again.config == loaded.config


def test_port_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / "port.pt"
    torch.save({"g_ema": TINY.generator().state_dict()}, path)
    with pytest.raises(ValueError, match="size"):
        load_port_checkpoint(path, size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8)
    with pytest.raises(FileNotFoundError, match="stylegan2-pytorch"):
        load_port_checkpoint(tmp_path / "missing.pt")
