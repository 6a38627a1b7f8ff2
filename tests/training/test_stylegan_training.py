"""StyleGAN2 training loop (mangacolor/training/stylegan.py): runs, logs, resumes exactly, starts from port weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mangacolor.device import DeviceSpec
from mangacolor.models.stylegan2 import StyleGAN2Config, load_generator
from mangacolor.tracking import NullTracker
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_weights
from mangacolor.training.stylegan import StyleGANTrainConfig, learning_rate, train_stylegan

CPU = DeviceSpec(torch.device("cpu"), None, seed=3)
TINY = StyleGANTrainConfig(
    size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8, batch_size=4, iterations=6, lr=2e-3,
    d_reg_every=2, g_reg_every=2, log_every=1, sample_every=3, checkpoint_every=2, n_samples=2, truncations=(1.0, 0.5),
)


def images(n: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


class Interrupted(Exception):
    pass


def test_learning_rate_decays_from_lr_to_a_tenth():
    cfg = StyleGANTrainConfig(iterations=101, lr=1e-3)
    lrs = [learning_rate(cfg, s) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert StyleGANTrainConfig().batch_size == 32 and StyleGANTrainConfig().iterations == 700_000


def test_training_runs_regularises_logs_and_saves_a_loadable_generator(tmp_path):
    tracker = NullTracker()
    result = train_stylegan(TINY, images(), tmp_path, CPU, tracker)
    assert result["steps"] == 6 and result["resumed_from"] is None
    for key in ("d_loss", "g_loss", "r1", "path_loss", "mean_path_length"):
        assert all(np.isfinite(tracker.series(key))) and tracker.series(key)
    assert len(tracker.series("r1")) == 3 and len(tracker.series("path_loss")) == 3  # every 2nd step
    assert set(tracker.images) == {"samples/step_00000003.png", "samples/step_00000006.png"}
    assert tracker.images["samples/step_00000006.png"].shape == (2 * 16, 2 * 16, 3)  # truncations x samples
    assert tracker.params["batch_size"] == 4

    generator, latent_avg = load_generator(result["generator"])
    assert latent_avg.shape == (1, 16)
    with torch.no_grad():
        out = generator.synthesis(latent_avg[:, None].expand(1, generator.n_latent, -1), randomize_noise=False)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    # the EMA generator moved away from the initialisation
    init = StyleGAN2Config(16, 16, 2, 1, 8)
    torch.manual_seed(CPU.seed)
    fresh = init.generator()
    assert not torch.equal(fresh.style[1].weight, generator.style[1].weight)


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    straight = train_stylegan(TINY, images(), tmp_path / "a", CPU, NullTracker())

    def stop_after_first_checkpoint(message: str) -> None:
        if message == "checkpoint step 2":
            raise Interrupted

    with pytest.raises(Interrupted):
        train_stylegan(TINY, images(), tmp_path / "b", CPU, NullTracker(), progress=stop_after_first_checkpoint)
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = train_stylegan(TINY, images(), tmp_path / "b", CPU, NullTracker())
    assert resumed["resumed_from"] == 2

    a = load_weights(Checkpointer(tmp_path / "a" / "checkpoints").latest() / "weights.safetensors")[0]
    b = load_weights(Checkpointer(tmp_path / "b" / "checkpoints").latest() / "weights.safetensors")[0]
    assert set(a) == set(b) and any(k.startswith("d.") for k in a) and any(k.startswith("g_ema.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(load_weights(straight["generator"])[0]["latent_avg"], load_weights(resumed["generator"])[0]["latent_avg"])


def test_starts_from_a_port_checkpoint(tmp_path):
    torch.manual_seed(0)
    nets = TINY.networks()
    g_ema, d = nets.generator(), nets.discriminator()
    path = tmp_path / "pretrained.pt"
    torch.save({"g": g_ema.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(), "latent_avg": torch.zeros(16)}, path)
    cfg = dataclasses.replace(TINY, iterations=0, init_checkpoint=str(path))
    result = train_stylegan(cfg, images(), tmp_path / "run", CPU, NullTracker())
    state, _ = load_weights(result["generator"])
    for key, value in g_ema.state_dict().items():
        assert torch.equal(state[key], value), key


class Stream:
    """Iterable without __len__/__getitem__, like a folder reader."""

    def __iter__(self):
        yield from images(5)  # not a multiple of the batch: it is cycled


def test_streamed_images_and_bad_input(tmp_path):
    cfg = dataclasses.replace(TINY, iterations=2, checkpoint_every=10)
    assert train_stylegan(cfg, Stream(), tmp_path / "s", CPU, NullTracker())["steps"] == 2
    with pytest.raises(ValueError, match="re-iterable"):
        train_stylegan(cfg, iter(images(5)), tmp_path / "o", CPU, NullTracker())
    wrong = [np.zeros((20, 16, 3), np.uint8)] * 4
    with pytest.raises(ValueError, match=r"\(16, 16, 3\)"):
        train_stylegan(cfg, wrong, tmp_path / "w", CPU, NullTracker())
