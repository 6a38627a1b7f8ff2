"""Where and how tensors run: device, autocast precision and seed, chosen in one place.

Training and inference functions take a `DeviceSpec` instead of branching on `torch.cuda` all
over; the Dagster device resource and the CLI both build one with `resolve_device`.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class DeviceSpec:
    device: torch.device
    amp_dtype: torch.dtype | None = None
    seed: int = 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def description(self) -> str:
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32"
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return f"{name} ({amp})"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_CLAIMED: dict[int, object] = {}  # GPU index -> the lock file this process holds, so it keeps the GPU for its lifetime


def claim_gpus(n: int, count: int, lock_dir: str | None = None, wait_s: float = 3600.0) -> list[int]:
    """`n` of the `count` visible GPUs for this process and the ranks it starts, held until it exits (the ones it
    already holds first): a GPU is this process's while it holds its lock file (MANGACOLOR_GPU_LOCK_DIR, default the
    temp folder), so two runs on one host never share one. The `gpu` pool has one slot per GPU, so enough are free
    or soon will be (a run that ended is still releasing them): this waits."""
    if n > count:
        raise RuntimeError(f"{n} GPUs wanted, {count} visible: this machine cannot run that many ranks "
                           "(MANGACOLOR_GPUS, or the preset's device.gpus, is larger than its GPUs)")
    import fcntl

    folder = Path(lock_dir or os.environ.get("MANGACOLOR_GPU_LOCK_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(count):
            if len(_CLAIMED) >= n:
                break
            if i in _CLAIMED:
                continue
            f = open(folder / f"mangacolor-gpu-{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            f.write(str(os.getpid()))
            f.flush()
            _CLAIMED[i] = f
        if len(_CLAIMED) >= n:
            return sorted(_CLAIMED)[:n]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} of {count} GPUs wanted, other processes hold the rest (lock files in {folder})")
        time.sleep(1.0)


def gpu_index(count: int, lock_dir: str | None = None, wait_s: float = 3600.0) -> int:
    """Which of `count` visible GPUs this process uses, so that two runs on one host do not share cuda:0.

    In order: MANGACOLOR_GPU_SLOT (set by whoever assigns slots); LOCAL_RANK (a `torchrun` process);
    one visible GPU (Kubernetes or CUDA_VISIBLE_DEVICES already assigned it: index 0); else the first
    GPU no other process holds (`claim_gpus`).
    """
    for var in ("MANGACOLOR_GPU_SLOT", "LOCAL_RANK"):
        if os.environ.get(var):
            return int(os.environ[var]) % max(1, count)
    if count <= 1:
        return 0
    return claim_gpus(1, count, lock_dir, wait_s)[0]


def gpu_expected() -> str | None:
    """Why this process should see a GPU (a container the NVIDIA runtime gave GPUs to), or None."""
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if visible and visible.lower() not in ("void", "none"):
        return f"NVIDIA_VISIBLE_DEVICES={visible}"
    return None


def _no_cuda_error(asked: str) -> RuntimeError:
    import torch

    return RuntimeError(
        f"a GPU was asked for ({asked}) but CUDA is not available to torch {torch.__version__} (built for CUDA "
        f"{torch.version.cuda or 'none: a CPU build'}): the uv.lock pins a CUDA 13 build of torch, which needs an "
        "NVIDIA driver >= 580 on the node (`nvidia-smi` shows it). Update the driver or run where one is; "
        "MANGACOLOR_DEVICE=cpu runs on the CPU on purpose")


def bf16_native(device: torch.device) -> bool:
    """bf16 runs in hardware here (an Ampere or newer GPU; a CPU with AVX512-BF16 or AMX), not emulated in fp32 steps
    that are slower than fp32 itself."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_device(name: str = "auto", precision: str = "auto", seed: int = 0) -> DeviceSpec:
    """`name`: auto | cpu | cuda | cuda:N | mps. `precision`: auto | fp32 | bf16 | fp16.

    auto precision is bf16 autocast on GPUs that run it natively, fp16 on older GPUs, fp32 on CPU; bf16 asked for
    where it would be emulated (slower than fp32) is fp32, with a warning. `auto` and `cuda` pick this process's GPU
    on a multi-GPU host (`gpu_index`). A GPU asked for and not there is an error, never a silent CPU run: `cuda`,
    or `auto` in a container the NVIDIA runtime gave GPUs to (`gpu_expected`).
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif (why := gpu_expected()) is not None:
            raise _no_cuda_error(f"device auto in a container with {why}")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise _no_cuda_error(f"device {name!r}")
    if name == "cuda":
        name = f"cuda:{gpu_index(torch.cuda.device_count())}"
    device = torch.device(name)
    if device.type == "cuda":
        # Convolutions of one shape, again and again: let cuDNN pick its fastest algorithm once per shape.
        torch.backends.cudnn.benchmark = True
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if bf16_native(device) else "fp16"
        else:
            precision = "fp32"
    elif precision == "bf16" and not bf16_native(device):
        warnings.warn(f"bf16 asked for on {device}, which would emulate it (slower than fp32 there): running in fp32",
                      stacklevel=2)
        precision = "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of auto, {', '.join(dtypes)}; got {precision!r}")
    return DeviceSpec(device=device, amp_dtype=dtypes[precision], seed=seed)
