"""LPIPS built offline (mangacolor/losses/lpips.py)."""

import pytest
import torch

from mangacolor.losses.lpips import build_lpips


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
