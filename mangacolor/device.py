"""Where and how tensors run: device, autocast precision and seed, chosen in one place.

Training and inference functions take a `DeviceSpec` instead of branching on `torch.cuda` all
over; the Dagster device resource and the CLI both build one with `resolve_device`.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

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


def resolve_device(name: str = "auto", precision: str = "auto", seed: int = 0) -> DeviceSpec:
    """`name`: auto | cpu | cuda | cuda:N | mps. `precision`: auto | fp32 | bf16 | fp16.

    auto precision is bf16 autocast on GPUs that support it, fp16 on older GPUs, fp32 on CPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
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
