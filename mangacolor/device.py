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


_CLAIMED: dict[str, object] = {}  # the lock file this process holds, so it keeps its GPU for its lifetime


def gpu_index(count: int, lock_dir: str | None = None, wait_s: float = 3600.0) -> int:
    """Which of `count` visible GPUs this process uses, so that two runs on one host do not share cuda:0.

    In order: MANGACOLOR_GPU_SLOT (set by whoever assigns slots); LOCAL_RANK (a `torchrun` process);
    one visible GPU (Kubernetes or CUDA_VISIBLE_DEVICES already assigned it: index 0); else the first
    GPU whose lock file (MANGACOLOR_GPU_LOCK_DIR, default the temp folder) no other process holds,
    kept until this process exits. The `gpu` pool has one slot per GPU, so a free one exists; if
    none is free yet (a run that ended is still releasing it) this waits.
    """
    for var in ("MANGACOLOR_GPU_SLOT", "LOCAL_RANK"):
        if os.environ.get(var):
            return int(os.environ[var]) % max(1, count)
    if count <= 1:
        return 0
    if "index" in _CLAIMED:
        return int(_CLAIMED["index"])
    import fcntl

    folder = Path(lock_dir or os.environ.get("MANGACOLOR_GPU_LOCK_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(count):
            f = open(folder / f"mangacolor-gpu-{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            f.write(str(os.getpid()))
            f.flush()
            _CLAIMED.update(index=i, file=f)
            return i
        if time.monotonic() > deadline:
            raise RuntimeError(f"all {count} GPUs are held by other processes (lock files in {folder})")
        time.sleep(1.0)


def resolve_device(name: str = "auto", precision: str = "auto", seed: int = 0) -> DeviceSpec:
    """`name`: auto | cpu | cuda | cuda:N | mps. `precision`: auto | fp32 | bf16 | fp16.

    auto precision is bf16 autocast on GPUs that support it, fp16 on older GPUs, fp32 on CPU.
    `auto` and `cuda` pick this process's GPU on a multi-GPU host (`gpu_index`).
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda" and torch.cuda.is_available():
        name = f"cuda:{gpu_index(torch.cuda.device_count())}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine; use 'auto' or 'cpu'")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of auto, {', '.join(dtypes)}; got {precision!r}")
    return DeviceSpec(device=device, amp_dtype=dtypes[precision], seed=seed)
