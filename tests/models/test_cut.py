"""CUT pieces: PatchNCE against a hand computation, lazy heads, generator taps, PatchGAN reach."""

import math

import numpy as np
import pytest
import torch

from mangacolor.models.cut import (
    TINY,
    CUTConfig,
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    apply_cut,
    build,
    lsgan_d_loss,
    lsgan_g_loss,
    nce_loss,
    patch_nce_loss,
)
from mangacolor.training.cut import CUTTrainConfig, cut_optimizers


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_patch_nce_matches_hand_computation():
    tau = 0.07
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # 1 image, 2 positions, 2-d unit features
    k = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]])
    # Row 0: logits (q0·k0, q0·k1)/τ = (0.6, 1.0)/τ, positive 0. Row 1: (0.8, 0.0)/τ, positive 1.
    row0 = -0.6 / tau + math.log(math.exp(0.6 / tau) + math.exp(1.0 / tau))
    row1 = -0.0 / tau + math.log(math.exp(0.8 / tau) + math.exp(0.0 / tau))
    expected = (row0 + row1) / 2
    assert patch_nce_loss(q, k, tau).item() == pytest.approx(expected, rel=1e-5)
    # Identical unit features: each row is log(1 + e^{-1/τ}), nearly zero.
    eye = torch.eye(2)[None]
    assert patch_nce_loss(eye, eye, tau).item() == pytest.approx(math.log1p(math.exp(-1 / tau)), abs=1e-6)


def test_patch_nce_negatives_come_from_the_same_image_only():
    q = torch.nn.functional.normalize(torch.randn(3, 5, 4), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(3, 5, 4), dim=-1)
    per_image = [patch_nce_loss(q[i : i + 1], k[i : i + 1]).item() for i in range(3)]
    assert patch_nce_loss(q, k).item() == pytest.approx(sum(per_image) / 3, rel=1e-5)


def test_patch_nce_keys_are_detached():
    q = torch.nn.functional.normalize(torch.randn(1, 4, 3), dim=-1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(1, 4, 3), dim=-1).requires_grad_()
    patch_nce_loss(q, k).backward()
    assert q.grad is not None and k.grad is None


def _texture(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False) * 2 - 1


def test_nce_is_lower_for_a_content_keeping_translation_than_for_shuffled_patches():
    torch.manual_seed(0)
    G, _, F = build(TINY)
    x = _texture()
    keep = 0.7 * x + 0.1  # a tone change keeps every patch where it was
    blocks = x.unfold(2, 8, 8).unfold(3, 8, 8)  # 1,1,4,4,8,8
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = blocks.reshape(1, 1, 16, 8, 8)[:, :, order].reshape(1, 1, 4, 4, 8, 8)
    shuffled = shuffled.permute(0, 1, 2, 4, 3, 5).reshape(1, 1, 32, 32)
    with torch.no_grad():
        l_keep = nce_loss(G, F, x, keep, 0.07, generator=torch.Generator().manual_seed(2)).item()
        l_shuffle = nce_loss(G, F, x, shuffled, 0.07, generator=torch.Generator().manual_seed(2)).item()
    assert l_keep < 0.5 * l_shuffle, (l_keep, l_shuffle)


def test_heads_are_created_by_the_first_forward_and_join_the_optimiser():
    torch.manual_seed(0)
    G, D, F = build(TINY)
    assert not F.built and len(list(F.parameters())) == 0
    with pytest.raises(RuntimeError, match="first forward"):
        cut_optimizers(G, D, F, CUTTrainConfig(model=TINY))
    feats = G.encode(_texture())
    F(feats)
    assert F.built and len(F.mlps) == len(TINY.nce_layers)
    assert [mlp[0].in_features for mlp in F.mlps] == [1, 8, 16, 16, 16]  # input, 2·ngf, 4·ngf, blocks
    opts = cut_optimizers(G, D, F, CUTTrainConfig(model=TINY))
    in_f = {id(p) for group in opts["f"].param_groups for p in group["params"]}
    assert in_f == {id(p) for p in F.parameters()} and len(in_f) == 4 * len(TINY.nce_layers)


def test_sampler_uses_the_same_positions_and_returns_unit_vectors():
    F = PatchSampleMLP(nce_dim=8, n_patches=10)
    a = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    out, ids = F(a, generator=torch.Generator().manual_seed(0))
    assert [o.shape for o in out] == [(2, 10, 8), (2, 4, 8)]  # capped at H·W positions
    assert all(torch.allclose(o.norm(dim=-1), torch.ones(o.shape[:2])) for o in out)
    out2, ids2 = F([t.clone() for t in a], patch_ids=ids)
    assert all(torch.equal(i, j) for i, j in zip(ids, ids2))
    assert all(torch.allclose(o, o2) for o, o2 in zip(out, out2))


def test_generator_shapes_and_taps():
    cfg = CUTConfig(ngf=4, n_blocks=6)
    G = ResnetGenerator(cfg)
    x = torch.randn(2, 1, 64, 48)
    assert G(x).shape == x.shape
    feats = G.encode(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(1, 64, 48), (8, 32, 24), (16, 16, 12), (16, 16, 12), (16, 16, 12)]
    assert torch.equal(feats[0], x)
    assert len(G.encode(x, ("down1",))) == 1
    with pytest.raises(ValueError, match="res1..res6"):
        ResnetGenerator(CUTConfig(ngf=4, n_blocks=6, nce_layers=("input", "res7")))


def test_patchgan_sees_70x70():
    D = PatchDiscriminator(1, ndf=4, n_layers=3)
    # InstanceNorm's statistics span the whole input; the reach of the convolutions is the patch.
    for i, layer in enumerate(D.model):
        if isinstance(layer, torch.nn.InstanceNorm2d):
            D.model[i] = torch.nn.Identity()
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    out = D(x)
    cy, cx = out.shape[2] // 2, out.shape[3] // 2
    out[0, 0, cy, cx].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_lsgan_losses():
    ones, zeros = torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)
    assert lsgan_d_loss(ones, zeros).item() == 0 and lsgan_g_loss(ones).item() == 0
    assert lsgan_d_loss(zeros, ones).item() == pytest.approx(1.0) and lsgan_g_loss(zeros).item() == pytest.approx(1.0)


def test_fastcut_preset():
    f = CUTConfig.fastcut()
    assert (f.nce_idt, f.lambda_nce, CUTConfig().nce_idt, CUTConfig().lambda_nce) == (False, 10.0, True, 1.0)


@pytest.mark.parametrize("hw", [(37, 23), (3, 5), (1, 1), (64, 64)])
def test_apply_cut_keeps_any_page_size(hw):
    G = ResnetGenerator(TINY)
    page = np.random.default_rng(0).integers(0, 256, hw, dtype=np.uint8)
    out = apply_cut(G, page)
    assert out.shape == hw and out.dtype == np.uint8
