"""pSp training (mangacolor/training/psp.py): overfits a batch, resumes exactly, builds LPIPS offline."""

from __future__ import annotations

import dataclasses
import logging
import socket

import pytest
import torch
import torch.nn.functional as F

from mangacolor.device import DeviceSpec
from mangacolor.models.psp import load_psp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.tracking import NullTracker
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_weights, save_weights
from mangacolor.training.psp import PSpTrainConfig, build_lpips, train_psp

CPU = DeviceSpec(torch.device("cpu"), None, seed=5)
TINY = PSpTrainConfig(
    input_nc=1, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4,
    batch_size=4, epochs=30, lr=1e-3, log_every=1, sample_every=15, checkpoint_every=4, n_samples=2,
)


@pytest.fixture(autouse=True)
def offline_empty_hub(tmp_path, monkeypatch):
    """No user VGG file and no network: what a fresh CI machine sees."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    connect = socket.socket.connect

    def refuse_network(sock, *args, **kwargs):
        # Local (AF_UNIX) sockets stay: the loader's worker processes pass tensors through them.
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return connect(sock, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", refuse_network)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return hub


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


def test_lpips_reads_the_users_vgg_file_when_present(offline_empty_hub):
    model, trunk = build_lpips("vgg")
    assert trunk == "random"
    # a torchvision-format file (features.* keys) in the hub cache is picked up, nothing else needed
    convs = {f"features.{idx}": layer for s in (m for n, m in model.net.named_children() if n.startswith("slice"))
             for idx, layer in s.named_children() if isinstance(layer, torch.nn.Conv2d)}
    state = {}
    for i, (name, layer) in enumerate(convs.items()):
        state[f"{name}.weight"] = torch.full_like(layer.weight, 0.001 * (i + 1))
        state[f"{name}.bias"] = torch.full_like(layer.bias, -0.01 * (i + 1))
    (offline_empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(state, offline_empty_hub / "checkpoints" / "vgg16-397923af.pth")
    loaded, trunk = build_lpips("vgg")
    assert trunk == "imagenet"
    got = {f"features.{idx}": layer for s in (m for n, m in loaded.net.named_children() if n.startswith("slice"))
           for idx, layer in s.named_children() if isinstance(layer, torch.nn.Conv2d)}
    assert len(got) == 13
    for name, layer in got.items():
        assert torch.equal(layer.weight, state[f"{name}.weight"]) and torch.equal(layer.bias, state[f"{name}.bias"])
    # the calibrated linear layers come from the lpips package, not from random init
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.lin0.model[-1].weight.min() >= 0  # LPIPS weights are non-negative by construction
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        build_lpips("vgg", offline_empty_hub / "elsewhere.pth")


def test_empty_dataset_is_refused(tmp_path, generator_file):
    with pytest.raises(ValueError, match="empty"):
        train_psp(TINY, [], generator_file, tmp_path, CPU, NullTracker())
