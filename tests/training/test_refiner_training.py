"""Refiner training: a resumed run ends where an uninterrupted one does; losses and samples are logged."""

import numpy as np
import pytest
import torch

from mangacolor.device import DeviceSpec
from mangacolor.models.refiner import TINY, refine
from mangacolor.tracking import NullTracker
from mangacolor.io.weights import load_weights
from mangacolor.training.refiner import VGG16_FILE, RefinerTrainConfig, VGG16Features, VGGPerceptual, load_refiner, train_refiner
from tests.training.crashing import CrashAfter

CPU = DeviceSpec(torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_pairs(n=3, hw=(40, 36)):
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(n):
        real = np.where(rng.random(hw) < 0.3, 40, 230).astype(np.uint8)
        sparse = np.where(real < 128, 0, 255).astype(np.uint8)
        sparse[rng.random(hw) < 0.5] = 255  # xDoG keeps only part of the ink
        pairs.append((sparse, real))
    return pairs


def config(**kw):
    base = dict(model=TINY, steps=4, batch_size=2, crop_hw=(32, 24), perceptual_layers=(3,), vgg_weights="random", checkpoint_every=2, log_every=1, sample_every=2, lr=1e-3)
    return RefinerTrainConfig(**{**base, **kw})


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        pairs = make_pairs()
        straight = train_refiner(config(), pairs, tmp_path / "a", CPU, NullTracker())
        # 2 pairs per step: the crash hits step 3, after the checkpoint of step 2.
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_refiner(config(), CrashAfter(pairs, 5), tmp_path / "b", CPU, NullTracker())
        messages = []
        resumed = train_refiner(config(), pairs, tmp_path / "b", CPU, NullTracker(), messages.append)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "resuming at step 2" in messages[0]
    a, _ = load_weights(straight["weights"])
    b, _ = load_weights(resumed["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = train_refiner(config(steps=2), pairs, tmp_path / "c", CPU, NullTracker())
    c, _ = load_weights(fresh["weights"])
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the comparison can tell runs apart


def test_logs_losses_samples_and_writes_loadable_weights(tmp_path):
    tracker = NullTracker()
    result = train_refiner(config(steps=2, adversarial=True), make_pairs(), tmp_path, CPU, tracker)
    assert len(tracker.series("refiner/l1")) == 2 and len(tracker.series("refiner/adv")) == 2
    assert tracker.params["stage"] == "refiner" and tracker.params["perceptual_pretrained"] is False
    strip = tracker.images["refiner/samples_00000002.png"]
    assert strip.dtype == np.uint8 and strip.shape == (2 * 32, 3 * 24)  # rows: batch; columns: in | out | target
    model = load_refiner(result["weights"])
    assert refine(model, make_pairs(1, (13, 9))[0][0]).shape == (13, 9)


def test_perceptual_reads_the_torch_cache_file_or_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.warns(UserWarning, match=VGG16_FILE):
        assert VGGPerceptual((3,), "auto").pretrained is False
    with pytest.raises(FileNotFoundError, match=VGG16_FILE):
        VGGPerceptual((3,), str(tmp_path / "missing.pth"))
    # A file laid out like torchvision's (features.N.weight ...) is picked up from the cache.
    source = VGG16Features((3,))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / VGG16_FILE)
    loss = VGGPerceptual((3,), "auto")
    assert loss.pretrained
    assert torch.equal(loss.vgg.features[0].weight, source.features[0].weight)
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    assert loss(x, x).item() == 0 and loss(x, -x).item() > 0
