"""The FID InceptionV3: weight-file layout, weight lookup, random init and input handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mangacolor.eval.inception import (
    WEIGHTS_ENV,
    WEIGHTS_FILE,
    WeightsNotFoundError,
    build_inception,
    locate_weights,
    prepare_images,
)

# Parameters of pytorch-fid's FIDInceptionV3: torchvision's InceptionV3 without the auxiliary
# classifier, with a 1008-way head. The often quoted 27,161,264 is torchvision's ImageNet model:
# it includes AuxLogits (98,560 + 2,459,136 + 769,000 = 3,326,696 parameters) and a 1000-way head,
# so 27,161,264 - 3,326,696 + 8 * (2048 + 1) = 23,850,960.
FID_INCEPTION_PARAMS = 23_850_960
TORCHVISION_IMAGENET_PARAMS = 27_161_264

# A handful of entries of pt_inception-2015-12-05-6726825d.pth, with their shapes.
KNOWN_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.bn.weight": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def net():
    return build_inception("random")


def test_state_dict_matches_the_standard_file_layout(net):
    state = net.state_dict()
    for key, shape in KNOWN_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert sum(p.numel() for p in net.parameters()) == FID_INCEPTION_PARAMS
    # 94 conv units (conv weight; bn weight, bias, running mean, running var, batch counter) + fc.
    assert len(state) == 94 * 6 + 2


def test_layout_equals_the_skeleton_pytorch_fid_loads_the_file_into(net):
    # pytorch-fid builds torchvision's Inception3(num_classes=1008, aux_logits=False), swaps the
    # blocks for their FID variants (same parameters) and loads the file strictly into it.
    inception_mod = pytest.importorskip("torchvision.models.inception")
    with torch.device("meta"):  # shapes only: skip initialising 50M parameters
        skeleton = inception_mod.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        imagenet = inception_mod.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    assert ours == theirs
    assert sum(p.numel() for p in imagenet.parameters()) == TORCHVISION_IMAGENET_PARAMS


def test_weights_file_loads_strictly_from_each_search_place(net, tmp_path, monkeypatch):
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    file = tmp_path / "explicit" / WEIGHTS_FILE
    file.parent.mkdir()
    torch.save(state, file)
    probe = "Mixed_6b.branch7x7_2.conv.weight"

    loaded = build_inception(file)
    assert loaded.random_init is False and "pt_inception-2015-12-05" in loaded.description
    assert torch.equal(loaded.state_dict()[probe], state[probe])

    monkeypatch.setenv(WEIGHTS_ENV, str(file))
    assert locate_weights() == file
    monkeypatch.delenv(WEIGHTS_ENV)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / WEIGHTS_FILE).symlink_to(file)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert torch.equal(build_inception("auto").state_dict()[probe], state[probe])

    del state["fc.bias"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(WeightsNotFoundError, match="layout"):
        build_inception(broken)


def test_missing_weights_error_names_the_file_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(WeightsNotFoundError) as err:
        build_inception("auto")
    message = str(err.value)
    assert WEIGHTS_FILE in message
    assert str(tmp_path / "empty-hub" / "checkpoints" / WEIGHTS_FILE) in message
    assert "pytorch-fid" in message and WEIGHTS_ENV in message

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        locate_weights()
    with pytest.raises(FileNotFoundError, match="given.pth"):
        locate_weights(tmp_path / "given.pth")


def test_random_init_is_fixed_labelled_and_leaves_global_rng_alone(net):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    other = build_inception("random")
    assert torch.equal(torch.rand(3), expected_next)
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch1x1.conv.weight", "fc.weight"):
        assert torch.equal(other.state_dict()[key], net.state_dict()[key])
    assert net.random_init is True
    assert "random-init Inception" in net.description and "not comparable to published FID" in net.description
    assert not torch.equal(build_inception("random", seed=1).state_dict()["fc.weight"], net.state_dict()["fc.weight"])


def test_prepare_images_scales_resizes_and_names_its_resize():
    white = np.full((20, 30), 255, np.uint8)
    black = np.zeros((50, 10, 3), np.uint8)
    x = prepare_images([white, black])
    assert x.shape == (2, 3, 299, 299)
    # Interpolating a constant may round by an ulp depending on the kernel the CPU picks.
    assert torch.allclose(x[0], torch.ones_like(x[0]), atol=1e-5) and torch.allclose(x[1], -torch.ones_like(x[1]), atol=1e-5)

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    bilinear, bicubic = prepare_images([ramp], "bilinear-torch"), prepare_images([ramp], "bicubic-clean")
    assert bilinear.min() >= -1 and bicubic.max() <= 1
    assert not torch.allclose(bilinear, bicubic)  # the resize is a real choice, hence named in reports
    with pytest.raises(ValueError, match="unknown resize"):
        prepare_images([ramp], "nearest")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prepare_images([ramp * 2 - 1])


def test_forward_gives_distinct_2048_d_features(net):
    rng = np.random.default_rng(0)
    grey = (rng.uniform(size=(24, 32)) * 255).astype(np.uint8)
    colour = rng.uniform(size=(3, 32, 24)).astype(np.float32)
    with torch.no_grad():
        feats = net(prepare_images([grey, torch.from_numpy(colour)]))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert feats.std() > 0.01 and (feats[0] - feats[1]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="prepare_images"):
        net(torch.zeros(1, 3, 64, 64))
