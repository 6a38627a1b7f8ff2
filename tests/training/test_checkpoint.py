import random

import numpy as np
import pytest
import torch

from mangacolor.training.checkpoint import Checkpointer, load_weights, save_weights


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _train(model, opt, steps, ckpt=None, start=0, save_every=None):
    for step in range(start, steps):
        x = torch.randn(16, 4)
        noise = np.random.randn() + random.random()
        loss = ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ckpt and save_every and (step + 1) % save_every == 0:
            ckpt.save(step + 1, {"m": model}, {"opt": opt})


def _seed():
    torch.manual_seed(0); np.random.seed(0); random.seed(0)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    _seed()
    ref = _model(); ref_opt = torch.optim.Adam(ref.parameters(), 1e-2)
    _train(ref, ref_opt, 10)

    _seed()
    m = _model(); opt = torch.optim.Adam(m.parameters(), 1e-2)
    ck = Checkpointer(tmp_path)
    _train(m, opt, 6, ck, save_every=3)  # "interrupted" after step 6

    m2 = _model(); opt2 = torch.optim.Adam(m2.parameters(), 1e-2)
    state = Checkpointer(tmp_path).restore({"m": m2}, {"opt": opt2})
    assert state["step"] == 6
    _train(m2, opt2, 10, start=state["step"])
    for a, b in zip(ref.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_keeps_only_last_checkpoints_and_ignores_incomplete(tmp_path):
    m = _model()
    ck = Checkpointer(tmp_path, keep_last=2)
    for s in (1, 2, 3):
        ck.save(s, {"m": m}, extra={"epoch": s})
    assert [p.name for p in ck.checkpoints()] == ["step-00000002", "step-00000003"]
    (tmp_path / "step-00000009").mkdir()  # a crash mid-save leaves no state.json
    assert ck.restore({"m": _model()})["extra"] == {"epoch": 3}


def test_restore_names_missing_module(tmp_path):
    Checkpointer(tmp_path).save(1, {"g": _model()})
    with pytest.raises(KeyError, match="no weights for module 'd'"):
        Checkpointer(tmp_path).restore({"d": _model()})


def test_weights_round_trip_with_metadata(tmp_path):
    m = _model()
    save_weights(tmp_path / "w.safetensors", m, {"config": {"width": 8}, "random_init": True})
    state, meta = load_weights(tmp_path / "w.safetensors")
    assert meta == {"config": {"width": 8}, "random_init": True}
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_weights(tmp_path / "missing.safetensors")
