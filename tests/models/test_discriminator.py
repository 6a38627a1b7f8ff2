"""Colorization discriminator: one logit per page, spectral normalisation on every layer."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from mangacolor.models.discriminator import ColorizationDiscriminator, DiscriminatorConfig, spectral_norms


def layers(d: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in d.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_one_logit_per_page_at_any_multiple_size():
    torch.manual_seed(0)
    d = ColorizationDiscriminator(DiscriminatorConfig.tiny())
    assert d.multiple == 16
    for hw in [(64, 96), (96, 64), (48, 48)]:
        out = d(torch.rand(3, 3, *hw) * 2 - 1)
        assert out.shape == (3,)
        assert torch.isfinite(out).all()


def test_every_conv_and_linear_has_largest_singular_value_one():
    torch.manual_seed(0)
    d = ColorizationDiscriminator(DiscriminatorConfig.tiny())
    found = layers(d)
    assert len(found) > 20 and any(isinstance(m, nn.Linear) for m in found.values())
    assert all(parametrize.is_parametrized(m, "weight") for m in found.values()), "a layer lacks spectral norm"
    # Negative control: the raw (trainable) weights are far from unit norm, so the check below is not vacuous.
    raw = [float(torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().reshape(m.weight.shape[0], -1), ord=2))
           for m in found.values()]
    assert max(abs(s - 1) for s in raw) > 0.3

    x = torch.rand(2, 3, 32, 48) * 2 - 1
    for _ in range(20):  # each training forward runs one power iteration per layer
        d(x)
    d.eval()
    sigma = spectral_norms(d)
    assert set(sigma) == set(found)
    worst = max(sigma, key=lambda k: abs(sigma[k] - 1))
    assert abs(sigma[worst] - 1) < 0.02, f"{worst}: largest singular value {sigma[worst]:.4f}"


def test_paper_size_discriminator_builds_and_runs():
    torch.manual_seed(0)
    d = ColorizationDiscriminator(DiscriminatorConfig())
    assert d.multiple == 64
    n = sum(p.numel() for p in d.parameters())
    assert 1e6 < n < 5e6
    assert d(torch.zeros(1, 3, 64, 128)).shape == (1,)


def test_every_layer_of_generator_and_discriminator_starts_from_xavier():
    """Appendix D: "we initialize the weights with Xavier initialization" — every conv / linear weight of the
    colorizer (encoder included, until a pretrained file overwrites it) and of the discriminator."""
    import math

    from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig

    torch.manual_seed(0)
    nets = {"generator": ColorizationGenerator(ColorizerConfig.tiny()),
            "discriminator": ColorizationDiscriminator(DiscriminatorConfig.tiny())}
    checked = 0
    for net in nets.values():
        for name, m in net.named_modules():
            if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                continue
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert w.abs().max() <= bound + 1e-6, name
            if w.numel() >= 256:  # enough values to see the uniform's spread, not a smaller default init
                assert w.std() > 0.8 * bound / math.sqrt(3), name
            if m.bias is not None:
                assert (m.bias == 0).all(), name
            checked += 1
    assert checked > 40
