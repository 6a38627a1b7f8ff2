"""Training cues: the Appendix D schedule, AlacGAN-style hint simulation, empty cues."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mangacolor.training.cues import (
    CUE_SCHEDULE,
    CueConfig,
    HintConfig,
    cue_probabilities,
    empty_cues,
    sample_cues,
    simulate_hint,
    truncated_normal,
)

APPENDIX_D = {1: (0.3, 0.0), 2: (0.6, 0.0), 3: (0.3, 0.4), 4: (0.5, 0.8), 5: (0.5, 0.8), 15: (0.5, 0.8)}


def batch(b=100, h=8, w=12, seed=0, draft=True):
    g = torch.Generator().manual_seed(seed)
    out = {"color": torch.rand(b, 3, h, w, generator=g) * 2 - 1}
    if draft:
        out["draft"] = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    return out


def test_schedule_is_appendix_d():
    for epoch, probs in APPENDIX_D.items():
        assert cue_probabilities(epoch) == probs
    assert len(CUE_SCHEDULE) == 4
    with pytest.raises(ValueError, match="1-based"):
        cue_probabilities(0)


@pytest.mark.parametrize("epoch", [1, 2, 3, 4, 7])
def test_sampled_proportions_follow_the_schedule(epoch):
    rng = torch.Generator().manual_seed(epoch)
    # dense hints make every hinted page visibly hinted, so the tensors can be counted too
    cfg = CueConfig(hint=HintConfig(p_dense=1.0))
    n_hint = n_draft = n = 0
    data = batch(b=200)
    for _ in range(20):
        cues = sample_cues(data, epoch, rng, cfg)
        hinted = cues.hint[:, 3].flatten(1).amax(1) > 0
        drafted = cues.draft.flatten(1).abs().amax(1) > 0
        assert torch.equal(hinted, cues.has_hint) and torch.equal(drafted, cues.has_draft)
        n_hint += int(hinted.sum())
        n_draft += int(drafted.sum())
        n += hinted.numel()
    p_hint, p_draft = APPENDIX_D.get(epoch, (0.5, 0.8))
    tol = 4 * math.sqrt(0.25 / n)  # four standard errors at worst-case variance
    assert abs(n_hint / n - p_hint) < tol
    assert abs(n_draft / n - p_draft) < tol


def test_cue_contents():
    rng = torch.Generator().manual_seed(0)
    data = batch(b=64, h=16, w=24)
    cues = sample_cues(data, 4, rng, CueConfig(hint=HintConfig(sigma=0.05, max_recrop=0.0)))
    assert cues.hint.shape == (64, 4, 16, 24) and cues.draft.shape == (64, 3, 16, 24)
    mask = cues.hint[:, 3:]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # no recrop and full resolution: a hint point carries the page's own colour, elsewhere zero
    assert torch.allclose(cues.hint[:, :3], data["color"] * mask, atol=1e-5)
    assert (cues.hint[~cues.has_hint] == 0).all()  # empty hint = zeros
    # a used draft is the page-size bilinear resize of the given one; an unused one is zeros
    resized = F.interpolate(data["draft"], size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(cues.draft[cues.has_draft], resized[cues.has_draft])
    assert (cues.draft[~cues.has_draft] == 0).all()


def test_hint_density_and_grid():
    """Mask = uniform ≥ X with X ~ N(1, σ) truncated to [0, 1]: E[density] = E[1 − X] = σ·√(2/π)."""
    rng = torch.Generator().manual_seed(0)
    colour = torch.rand(64, 3, 64, 96) * 2 - 1
    cfg = HintConfig(sigma=0.005, resolution=0.25, p_dense=0.0)
    hint = simulate_hint(colour, cfg, rng)
    mask = hint[:, 3]
    density = mask[:, ::4, ::4].mean().item()
    assert abs(density - 0.005 * math.sqrt(2 / math.pi)) < 0.0015
    # at 1/4 resolution each hint point covers a 4×4 block of the page
    blocks = mask.unfold(1, 4, 4).unfold(2, 4, 4)
    assert ((blocks.amin((-1, -2)) == blocks.amax((-1, -2)))).all()
    # recropped colours: a hint on a flat-colour page still has exactly that colour
    flat = torch.tensor([0.2, -0.4, 0.6]).view(1, 3, 1, 1).expand(4, 3, 32, 48).contiguous()
    h = simulate_hint(flat, HintConfig(sigma=0.05), rng)
    on = h[:, 3:]
    assert on.sum() > 0
    assert torch.allclose(h[:, :3], flat * on, atol=1e-5)


def test_truncated_normal_stays_in_range_with_the_right_mean():
    rng = torch.Generator().manual_seed(0)
    x = truncated_normal(50_000, 1.0, 0.0005, 0.0, 1.0, rng)
    assert x.min() >= 0 and x.max() <= 1
    assert abs((1 - x).mean().item() - 0.0005 * math.sqrt(2 / math.pi)) < 2e-5


def test_real_pages_get_no_hint_and_cues_are_reproducible():
    data = batch(b=50)
    bw_only = {"bw": data["color"][:, :1], "draft": data["draft"]}
    a = sample_cues(bw_only, 4, torch.Generator().manual_seed(3), hints=False)
    assert not a.has_hint.any() and (a.hint == 0).all()
    assert a.has_draft.any()
    b = sample_cues(bw_only, 4, torch.Generator().manual_seed(3), hints=False)
    assert torch.equal(a.draft, b.draft) and torch.equal(a.has_draft, b.has_draft)
    # pages without a draft (has_draft False in the batch) never get one
    none = sample_cues(bw_only | {"has_draft": torch.zeros(50, dtype=torch.bool)}, 4, torch.Generator().manual_seed(3), hints=False)
    assert not none.has_draft.any() and (none.draft == 0).all()
    empty = empty_cues(2, 8, 12)
    assert (empty.hint == 0).all() and (empty.draft == 0).all()
