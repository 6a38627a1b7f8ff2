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


def _claim_many(lock_dir: str, n: int, hold_s: float, out) -> None:
    from mangacolor.device import claim_gpus

    out.put(claim_gpus(n, 4, lock_dir, wait_s=30))
    time.sleep(hold_s)


def test_a_launching_run_holds_all_its_ranks_gpus_and_a_second_run_gets_the_others(tmp_path):
    """The asset process claims a GPU for each rank it starts (they get them as CUDA_VISIBLE_DEVICES): another run on
    the host never picks one of them, as it did when the asset locked one GPU and its ranks used 0..N-1."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    launcher = ctx.Process(target=_claim_many, args=(str(tmp_path), 3, 60, out))
    launcher.start()
    assert out.get(timeout=30) == [0, 1, 2]
    other = ctx.Process(target=_claim_many, args=(str(tmp_path), 1, 0, out))
    other.start()
    assert out.get(timeout=30) == [3]
    other.join()
    launcher.kill()
    launcher.join()


def test_a_gpu_asked_for_and_absent_is_an_error_not_a_cpu_run(monkeypatch):
    """In a pod the NVIDIA runtime gave a GPU to, CUDA missing means a driver too old for the locked torch (or a broken
    runtime): `auto` must not quietly train on the CPU."""
    import torch

    from mangacolor.device import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-6f3a")
    with pytest.raises(RuntimeError, match=r"NVIDIA_VISIBLE_DEVICES=GPU-6f3a.*driver >= 580"):
        resolve_device("auto")
    with pytest.raises(RuntimeError, match="driver >= 580"):
        resolve_device("cuda")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")  # the runtime's "no GPU"
    assert resolve_device("auto").device.type == "cpu"


def test_bf16_where_it_would_be_emulated_runs_in_fp32_with_a_warning(monkeypatch):
    import torch

    from mangacolor.device import resolve_device

    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    native = torch.cpu._is_avx512_bf16_supported()
    if native:  # this CPU has bf16 instructions: kept
        assert resolve_device("cpu", "bf16").amp_dtype == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # a CPU without them
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with pytest.warns(UserWarning, match="emulate"):
        assert resolve_device("cpu", "bf16").amp_dtype is None
