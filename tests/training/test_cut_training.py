"""CUT training: resume gives the same weights, the lazy heads are optimised, whole pages translate."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mangacolor.device import DeviceSpec
from mangacolor.models.cut import TINY, CUTConfig
from mangacolor.tracking import NullTracker
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_weights
from mangacolor.training.cut import CUTTrainConfig, apply_cut, load_cut_generator, random_crops, train_cut
from tests.training.crashing import CrashAfter

CPU = DeviceSpec(torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def pages(n, seed, hw=(48, 40)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, hw, dtype=np.uint8) for _ in range(n)]


def config(**kw):
    base = dict(model=TINY, steps=4, crop=32, checkpoint_every=2, log_every=1, sample_every=2)
    return CUTTrainConfig(**{**base, **kw})


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    src, tgt = pages(3, 0), pages(3, 1)
    torch.use_deterministic_algorithms(True)
    try:
        straight = train_cut(config(), src, tgt, tmp_path / "a", CPU, NullTracker())
        # One source crop for the heads' first forward, then one per step: the crash hits step 3.
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_cut(config(), CrashAfter(src, 3), tgt, tmp_path / "b", CPU, NullTracker())
        messages = []
        resumed = train_cut(config(), src, tgt, tmp_path / "b", CPU, NullTracker(), messages.append)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "resuming at step 2" in messages[0]
    a, _ = load_weights(straight["weights"])
    b, _ = load_weights(resumed["weights"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    fa = load_file(str(Checkpointer(tmp_path / "a" / "checkpoints").latest() / "weights.safetensors"))
    fb = load_file(str(Checkpointer(tmp_path / "b" / "checkpoints").latest() / "weights.safetensors"))
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)  # D and heads too


def test_heads_are_trained_and_losses_logged(tmp_path):
    tracker = NullTracker()
    train_cut(config(steps=2, checkpoint_every=1), pages(2, 0), pages(2, 1), tmp_path, CPU, tracker)
    step1, step2 = Checkpointer(tmp_path / "checkpoints").checkpoints()
    w1 = load_file(str(step1 / "weights.safetensors"))
    w2 = load_file(str(step2 / "weights.safetensors"))
    heads = [k for k in w1 if k.startswith("f.")]
    assert len(heads) == 4 * len(TINY.nce_layers)
    assert any(not torch.equal(w1[k], w2[k]) for k in heads)  # the heads' optimiser steps them
    assert {"cut/d", "cut/g_gan", "cut/nce", "cut/nce_idt"} <= set(tracker.metrics[-1][1])
    assert tracker.images["cut/samples_00000002.png"].shape == (32, 3 * 32)


def test_fastcut_trains_without_identity_and_translates_whole_pages(tmp_path):
    tracker = NullTracker()
    fast = CUTConfig.fastcut(**{k: getattr(TINY, k) for k in ("ngf", "n_blocks", "ndf", "d_layers", "nce_layers", "nce_dim", "n_patches")})
    small = pages(2, 0, hw=(20, 12))  # smaller than a crop: mirrored out
    result = train_cut(config(model=fast, steps=1), small, pages(1, 1), tmp_path, CPU, tracker)
    assert "cut/nce_idt" not in tracker.metrics[-1][1]
    G = load_cut_generator(result["weights"])
    assert G.cfg.lambda_nce == 10.0 and not G.cfg.nce_idt
    page = pages(1, 2, hw=(70, 45))[0]
    out = apply_cut(G, page)
    assert out.shape == page.shape and out.dtype == np.uint8


def test_random_crops_are_seeded_and_sized():
    src = pages(2, 0, hw=(20, 50))
    a = random_crops(src, 3, 32, np.random.default_rng(0), flip=True)
    b = random_crops(src, 3, 32, np.random.default_rng(0), flip=True)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    with pytest.raises(ValueError, match="uint8 HxW"):
        random_crops([np.zeros((40, 40, 3), np.uint8)], 1, 32, np.random.default_rng(0), flip=False)
