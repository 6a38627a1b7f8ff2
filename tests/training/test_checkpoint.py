import random

import numpy as np
import pytest
import torch

from mangacolor.training.checkpoint import Checkpointer


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


def test_grad_scaler_and_scheduler_state_come_back(tmp_path):
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    for _ in range(5):
        loss = m(torch.randn(2, 4)).sum() * (float("inf") if _ == 0 else 1.0)  # one overflow: the scale backs off
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    Checkpointer(tmp_path).save(5, {"m": m}, {"opt": opt, "scaler": scaler, "sched": sched})

    m2 = _model()
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    scaler2 = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    assert Checkpointer(tmp_path).restore({"m": m2}, {"opt": opt2, "scaler": scaler2, "sched": sched2})["step"] == 5
    assert scaler2.get_scale() == scaler.get_scale() == 1024.0  # 1024 -> 512 (overflow) -> 1024 (3 good steps)
    assert scaler2.state_dict() == scaler.state_dict() and scaler2.state_dict()["_growth_tracker"] == 1
    assert sched2.state_dict() == sched.state_dict() and sched2.last_epoch == 5
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.1 * 0.5**2


@pytest.mark.parametrize("damage", ["truncated weights", "garbage optimiser", "missing rng", "bad json"])
def test_unreadable_latest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    m = _model()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    ck = Checkpointer(tmp_path, keep_last=3)
    ck.save(1, {"m": m}, {"opt": opt}, extra={"at": 1})
    at_step_1 = {k: v.clone() for k, v in m.state_dict().items()}
    _train(m, opt, 2)
    latest = ck.save(2, {"m": m}, {"opt": opt}, extra={"at": 2})
    if damage == "truncated weights":
        data = (latest / "weights.safetensors").read_bytes()
        (latest / "weights.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage optimiser":
        (latest / "optim.pt").write_bytes(b"\x00not a torch file")
    elif damage == "missing rng":
        (latest / "rng.safetensors").unlink()
    else:
        (latest / "state.json").write_text("{\"step\": 2, \"ext")

    fresh = _model()
    with pytest.warns(UserWarning, match=r"(?s)step-00000002 is unreadable .*falling back to the one before"):
        restored = ck.restore({"m": fresh}, {"opt": torch.optim.Adam(fresh.parameters(), 1e-2)})
    assert restored["step"] == 1 and restored["extra"] == {"at": 1}
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in at_step_1.items())


def test_no_readable_checkpoint_starts_from_scratch_with_a_warning(tmp_path):
    m = _model()
    ck = Checkpointer(tmp_path)
    path = ck.save(1, {"m": m})
    (path / "weights.safetensors").write_bytes(b"")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.warns(UserWarning, match="starting from scratch"):
        assert ck.restore({"m": m}) is None
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
