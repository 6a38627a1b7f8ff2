"""Colorization training loop (steps 1, 2, fine-tune) and its losses, on a tiny network and tiny pages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mangacolor.io.images import read_image
from mangacolor.losses.colorization import (
    STEP1_WEIGHTS,
    STEP2_WEIGHTS,
    LossWeights,
    PerceptualLoss,
    d_adversarial_loss,
    discriminator_loss,
    g_adversarial_loss,
    generator_loss,
)
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.discriminator import DiscriminatorConfig
from mangacolor.tracking import NullTracker
from mangacolor.io.weights import load_weights
from mangacolor.training.colorizer import (
    BwDataset,
    ColorizerTrainConfig,
    PairDataset,
    augment_from_paired,
    train_colorizer,
)

pytestmark = pytest.mark.filterwarnings("ignore:perceptual loss uses a RANDOMLY")


def pages(n: int, seed: int, h: int = 32, w: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Flat-colour blocks with a black outline; bw = their grey version."""
    rng = np.random.default_rng(seed)
    bws, colours = [], []
    for _ in range(n):
        c = np.empty((h, w, 3), np.uint8)
        c[:] = rng.integers(0, 256, 3)
        y, x = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
        c[y : y + h // 3, x : x + w // 3] = rng.integers(0, 256, 3)
        c[y - 1, x - 1 : x + w // 3 + 1] = 0
        colours.append(c)
        bws.append(c.mean(2).astype(np.uint8))
    return bws, colours


def config(**kw) -> ColorizerTrainConfig:
    base = dict(
        generator=ColorizerConfig.tiny(),
        discriminator=DiscriminatorConfig.tiny(),
        crop=(32, 32),
        batch_size=2,
        allow_random_vgg=True,
        perceptual_layers=("relu1_2", "relu2_2"),
        log_every=1,
        checkpoint_every=2,
    )
    base.update(kw)
    return ColorizerTrainConfig(**base)


def drafts(n: int, seed: int) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def test_adversarial_losses_are_eq_8_to_11():
    zero = torch.zeros(4)
    assert d_adversarial_loss(zero, zero).item() == pytest.approx(2 * math.log(2))  # D = 1/2 on both
    assert g_adversarial_loss(zero).item() == pytest.approx(math.log(2))  # −log D(G)
    assert g_adversarial_loss(zero, saturating=True).item() == pytest.approx(-math.log(2))  # log(1 − D(G))
    big = torch.full((4,), 20.0)
    assert d_adversarial_loss(big, -big).item() < 1e-6  # a perfect discriminator pays nothing

    # step 1: L_D = L_syn + 0.7 L_real, L_G = 10 MAE + 1.5 adv_syn + 0.4 adv_real (no perceptual here)
    fake, target = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    w = LossWeights(**{**STEP1_WEIGHTS.to_dict(), "per": 0.0})
    total, parts = generator_loss(w, fake, target, None, zero, zero)
    assert total.item() == pytest.approx(10 * 1.0 + (1.5 + 0.4) * math.log(2), rel=1e-6)
    d_total, _ = discriminator_loss(STEP1_WEIGHTS, zero, zero, zero)
    assert d_total.item() == pytest.approx(1.7 * 2 * math.log(2), rel=1e-6)
    # step 2: one adversarial term over synthetic and real together, λ 1.2
    total2, parts2 = generator_loss(LossWeights(**{**STEP2_WEIGHTS.to_dict(), "per": 0.0}), fake, target, None, zero, zero)
    assert "g_adv_real" not in parts2 and total2.item() == pytest.approx(10 + 1.2 * math.log(2), rel=1e-6)


def test_perceptual_loss_needs_its_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        PerceptualLoss(vgg_weights=tmp_path / "vgg16-397923af.pth")
    with pytest.warns(UserWarning, match="RANDOMLY"):
        loss = PerceptualLoss(("relu1_2",), vgg_weights=tmp_path / "none.pth", allow_random=True)
    assert loss.random_init
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert loss(x, x).item() == 0 and loss(x, -x).item() > 0
    # a torchvision-format file (features.* plus a classifier we skip) loads and is used
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()} | {"classifier.0.bias": torch.zeros(3)}
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    loaded = PerceptualLoss(("relu1_2",), vgg_weights=path)
    assert not loaded.random_init
    assert torch.equal(loaded.vgg[0].weight, features[0].weight)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def test_finetune_overfits_one_batch(tmp_path):
    """Supervised only (MAE + perceptual), one batch of two pages: the MAE falls at least tenfold."""
    bw, colour = pages(2, seed=0)
    tracker = NullTracker()
    result = train_colorizer(
        config(epochs=100, lr_g=1e-3, checkpoint_every=1000),
        PairDataset(bw, colour), None, tmp_path, "cpu", tracker, step="finetune", snapshot_every=10**6,
    )
    mae = tracker.series("g_mae")
    assert len(mae) == 100 and result.steps == 100
    assert mae[0] / np.mean(mae[-5:]) >= 10, f"MAE {mae[0]:.3f} -> {np.mean(mae[-5:]):.3f}"
    assert result.discriminator is None and "g_adv_syn" not in tracker.metrics[-1][1]
    assert result.perceptual_random


class Interrupt(Exception):
    pass


def adapt_run(out_dir, interrupt_at: int | None = None):
    bw, colour = pages(4, seed=1)
    real, _ = pages(3, seed=2)
    tracker = NullTracker()

    def progress(msg: str) -> None:
        if interrupt_at is not None and f"step {interrupt_at}/" in msg:
            raise Interrupt(msg)

    result = train_colorizer(
        config(epochs=3),  # 2 steps per epoch: epochs 1–3 cover the schedule's no-draft and draft stages
        PairDataset(bw, colour, drafts(4, 3)), BwDataset(real, drafts(3, 4)),
        out_dir, "cpu", tracker, progress, step="adapt", snapshot_every=2,
    )
    return result, tracker


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield adapt_run(tmp_path_factory.mktemp("adapt_full"))
    finally:
        torch.use_deterministic_algorithms(prev)


def test_adapt_step_logs_adversarial_terms_and_snapshots(uninterrupted):
    result, tracker = uninterrupted
    assert result.steps == 6
    last = tracker.metrics[-1][1]
    for key in ("g_mae", "g_per", "g_adv_syn", "g_adv_real", "d_adv_syn", "d_adv_real"):
        assert key in last and math.isfinite(last[key])
    assert [s.step for s in result.snapshots] == [2, 4, 6]
    for snap in result.snapshots:
        grid = read_image(snap.samples)
        assert grid.ndim == 3 and grid.shape[0] > 32  # rows of pairs and real pages
        build_generator(ColorizerConfig.tiny(), snap.weights)  # loadable
    _, meta = load_weights(result.generator)
    assert meta["generator_config"]["encoder"] == "tiny"
    assert len(tracker.images) == 3


def test_resumed_run_ends_with_the_same_weights(uninterrupted, tmp_path):
    full, full_tracker = uninterrupted
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(Interrupt):
            adapt_run(tmp_path, interrupt_at=3)  # dies after step 3; last checkpoint at step 2
        resumed, tracker = adapt_run(tmp_path)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert tracker.params["resumed_at"] == 2
    for name in ("generator", "discriminator"):
        a, _ = load_weights(getattr(full, name))
        b, _ = load_weights(getattr(resumed, name))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert tracker.metrics == full_tracker.metrics[2:]
    assert [s.step for s in resumed.snapshots] == [2, 4, 6]


def test_self_training_needs_pseudolabels_and_trains_on_both(tmp_path):
    bw, colour = pages(2, seed=5)
    real, pseudo = pages(2, seed=6)
    with pytest.raises(ValueError, match="pseudolabels"):
        train_colorizer(config(), PairDataset(bw, colour), BwDataset(real), tmp_path, "cpu", NullTracker(), step="self_train")
    tracker = NullTracker()
    result = train_colorizer(
        config(max_steps=2, batch_size=None), PairDataset(bw, colour), PairDataset(real, pseudo),
        tmp_path / "s2", "cpu", tracker, step="self_train",
    )
    assert tracker.params["batch_size"] == 8 and result.steps == 2  # Appendix D: batch 8 in step 2
    last = tracker.metrics[-1][1]
    assert "g_adv_syn" in last and "g_adv_real" not in last and "d_adv_real" not in last


def test_paired_augmentation_plugs_in(tmp_path):
    from mangacolor.data.augment import paired_augmentation

    bw, colour = pages(2, seed=7, h=40, w=36)
    real, _ = pages(2, seed=8, h=40, w=36)
    tracker = NullTracker()
    result = train_colorizer(
        config(max_steps=1), PairDataset(bw, colour), BwDataset(real), tmp_path, "cpu", tracker,
        step="adapt", augment=augment_from_paired(paired_augmentation(crop_hw=(32, 32), max_pad=4)),
    )
    assert result.steps == 1 and math.isfinite(tracker.metrics[-1][1]["g_total"])


# ---------------------------------------------------------------------------------------------
# The cue schedule's epoch: the network's own epochs, across stages (Appendix D)
# ---------------------------------------------------------------------------------------------


def test_cue_epoch_counts_the_epochs_the_weights_were_trained():
    from mangacolor.training.colorizer import cue_epoch

    assert [cue_epoch(0, it, 2) for it in range(6)] == [1, 1, 2, 2, 3, 3]  # a new network starts at epoch 1
    assert [cue_epoch(15, it, 2) for it in range(4)] == [16, 16, 17, 17]  # the fine-tune after 15 epochs of step 1


def test_an_epoch_covers_every_pages_canvas_once():
    """Appendix B's 768x512 crop of the 768x512 canvas: one crop per page, so 2 epochs of 6 pairs at batch
    4 are 2 steps each. A 96x96 crop of a 384x256 canvas sees a page's area in 11 crops: 16 steps."""
    from mangacolor.training.colorizer import epoch_steps

    assert epoch_steps(6, 4, (768, 512), (768, 512)) == 1
    assert epoch_steps(6, 4, (384, 256), (96, 96)) == 6 * 11 // 4
    assert epoch_steps(1, 8, (64, 64), (64, 64)) == 1  # never zero


def test_a_finetune_continues_the_schedule_of_its_weights_and_sees_drafts(tmp_path):
    """Drafts only from the third epoch: two epochs of training see none; the one-epoch fine-tune from
    those weights is in its third epoch, so every page gets its draft (a restarted count would give none)."""
    from mangacolor.training.cues import CueConfig, CueStage
    from mangacolor.training.colorizer import weights_epochs

    cues = CueConfig(schedule=(CueStage(1, 0.0, 0.0), CueStage(3, 0.0, 1.0)))
    bw, colour = pages(4, seed=9)
    data = PairDataset(bw, colour, drafts(4, 10))
    first, tracker1 = None, NullTracker()
    first = train_colorizer(config(epochs=2, cues=cues), data, None, tmp_path / "a", "cpu", tracker1, step="finetune")
    assert tracker1.series("cue_epoch") == [1, 1, 2, 2] and set(tracker1.series("drafts")) == {0.0}
    assert weights_epochs(first.generator) == 2 and weights_epochs(first.snapshots[0].weights) == 1

    tracker2 = NullTracker()
    second = train_colorizer(config(epochs=1, cues=cues), data, None, tmp_path / "b", "cpu", tracker2, step="finetune",
                             init_weights=first.generator)
    assert tracker2.params["epochs_before"] == 2
    assert tracker2.series("cue_epoch") == [3, 3] and set(tracker2.series("drafts")) == {1.0}
    assert weights_epochs(second.generator) == 3


def test_real_pages_in_step_1_get_their_drafts_per_the_schedule(tmp_path):
    from mangacolor.training.cues import CueConfig, CueStage

    bw, colour = pages(2, seed=11)
    real, _ = pages(2, seed=12)
    tracker = NullTracker()
    train_colorizer(config(max_steps=2, cues=CueConfig(schedule=(CueStage(1, 0.0, 1.0),))), PairDataset(bw, colour),
                    BwDataset(real, drafts(2, 13)), tmp_path, "cpu", tracker, step="adapt")
    assert tracker.series("real_drafts") == [1.0, 1.0]


def test_step_2s_discriminator_takes_real_colour_pages_not_pseudolabels_as_real(tmp_path, monkeypatch):
    """In self-training D's "real" images are the colour pages of the synthetic pairs (eq. 10), never a pseudolabel."""
    from mangacolor.models import discriminator as dmod

    bw, colour = pages(2, seed=14)
    real, pseudo = pages(2, seed=15)
    pseudo = [np.full_like(p, 3) for p in pseudo]  # pseudolabels: one value no colour page has
    seen = []
    forward = dmod.ColorizationDiscriminator.forward

    def spy(self, y):
        seen.append(y.detach().clone())
        return forward(self, y)

    monkeypatch.setattr(dmod.ColorizationDiscriminator, "forward", spy)
    train_colorizer(config(max_steps=2, batch_size=4), PairDataset(bw, colour), PairDataset(real, pseudo),
                    tmp_path, "cpu", NullTracker(), step="self_train")
    first_calls_per_step = seen[0::3]  # D(real), D(fake.detach()), D(fake) per step
    pseudo_value = 3 / 127.5 - 1
    for y in first_calls_per_step:
        assert not torch.isclose(y, torch.tensor(pseudo_value)).flatten(1).all(1).any()
