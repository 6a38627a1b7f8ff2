"""Device choice: on a multi-GPU host each process gets its own GPU index (mangacolor/device.py `gpu_index`)."""

import multiprocessing
import time

import pytest

from mangacolor.device import gpu_index


def _claim(lock_dir: str, hold_s: float, out) -> None:
    out.put(gpu_index(2, lock_dir))
    time.sleep(hold_s)


def test_two_processes_on_one_host_get_different_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("MANGACOLOR_GPU_SLOT", raising=False)
    ctx = multiprocessing.get_context("fork")  # separate processes, as two runs are; fork spares the imports
    out = ctx.Queue()
    first = ctx.Process(target=_claim, args=(str(tmp_path), 60, out))
    first.start()
    assert out.get(timeout=30) == 0
    second = ctx.Process(target=_claim, args=(str(tmp_path), 0, out))
    second.start()
    assert out.get(timeout=30) == 1
    second.join()
    first.kill()
    first.join()
    # The first process is gone: its GPU is free again.
    third = ctx.Process(target=_claim, args=(str(tmp_path), 0, out))
    third.start()
    assert out.get(timeout=30) == 0
    third.join()


@pytest.mark.parametrize(("env", "expected"), [({"MANGACOLOR_GPU_SLOT": "3"}, 3), ({"LOCAL_RANK": "1"}, 1), ({}, 0)])
def test_an_assigned_slot_or_torchrun_rank_wins(env, expected, tmp_path, monkeypatch):
    for var in ("MANGACOLOR_GPU_SLOT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert gpu_index(4 if env else 1, str(tmp_path)) == expected
