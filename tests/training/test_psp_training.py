"""pSp training (mangacolor/training/psp.py): overfits a batch, resumes exactly, offline."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from mangacolor.device import DeviceSpec
from mangacolor.models.psp import load_psp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.tracking import NullTracker
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_weights, save_weights
from mangacolor.training.psp import PSpTrainConfig, train_psp

CPU = DeviceSpec(torch.device("cpu"), None, seed=5)
TINY = PSpTrainConfig(
    input_nc=1, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4,
    batch_size=4, epochs=30, lr=1e-3, log_every=1, sample_every=15, checkpoint_every=4, n_samples=2,
)


pytestmark = pytest.mark.usefixtures("offline_empty_hub")  # tests/conftest.py: no VGG file, no network


@pytest.fixture()
def generator_file(tmp_path):
    torch.manual_seed(0)
    g = StyleGAN2Config(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8).generator()
    path = tmp_path / "generator.safetensors"
    save_weights(path, *generator_state(g, g.mean_latent(64, torch.Generator().manual_seed(0))))
    return path


def pairs(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(black-and-white page, blurred colour page): smooth colour fields and their luminance."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        colour = F.interpolate(torch.rand(1, 3, 4, 4, generator=g) * 2 - 1, size=(32, 32), mode="bilinear", align_corners=False)[0]
        grey = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])[None]
        out.append((grey, colour))
    return out


def test_loss_falls_when_overfitting_one_batch(tmp_path, generator_file, caplog):
    tracker = NullTracker()
    with caplog.at_level(logging.WARNING):
        result = train_psp(TINY, pairs(), generator_file, tmp_path / "run", CPU, tracker)
    losses = tracker.series("loss")
    assert len(losses) == 30  # one batch per epoch
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"loss {first:.4f} -> {last:.4f}; lpips trunk {result['lpips_trunk']}")
    assert last < 0.6 * first
    assert tracker.series("lpips") and tracker.series("mse")
    assert result["lpips_trunk"] == "random" and "random-init VGG (LPIPS)" in caplog.text
    assert tracker.params["lpips_trunk"] == "random"
    assert tracker.images["drafts/step_00000030.png"].shape == (3 * 32, 2 * 32, 3)

    psp = load_psp(result["encoder"], generator_file).eval()
    image, w_plus = psp(pairs()[0][0][None])
    assert image.shape == (1, 3, 32, 32) and w_plus.shape == (1, psp.n_latent, 16)


class Interrupted(Exception):
    pass


def test_resumed_run_ends_with_the_same_weights(tmp_path, generator_file):
    cfg = dataclasses.replace(TINY, epochs=3, batch_size=2, lambda_w_norm=0.01)  # 2 steps per epoch, 6 steps
    data = pairs()
    train_psp(cfg, data, generator_file, tmp_path / "a", CPU, NullTracker())

    def stop(message: str) -> None:
        if message == "checkpoint step 4":
            raise Interrupted

    with pytest.raises(Interrupted):
        train_psp(cfg, data, generator_file, tmp_path / "b", CPU, NullTracker(), progress=stop)
    torch.manual_seed(999)
    resumed = train_psp(cfg, data, generator_file, tmp_path / "b", CPU, NullTracker())
    assert resumed["resumed_from"] == 4

    a = load_weights(Checkpointer(tmp_path / "a" / "checkpoints").latest() / "weights.safetensors")[0]
    b = load_weights(Checkpointer(tmp_path / "b" / "checkpoints").latest() / "weights.safetensors")[0]
    assert set(a) == set(b) and any("running_mean" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_empty_dataset_is_refused(tmp_path, generator_file):
    with pytest.raises(ValueError, match="empty"):
        train_psp(TINY, [], generator_file, tmp_path, CPU, NullTracker())
