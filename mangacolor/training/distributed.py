"""Data-parallel training over several processes (`torchrun`): ranks, batch shards, averaged gradients.

The paper trains on one GPU; at its data size (≈100k pages, 700k StyleGAN2 iterations) several GPUs
shorten the wait without changing what is learnt. Each process takes a shard of every step's global
batch, computes its gradients, and the gradients are averaged over processes before the optimiser
step: the arithmetic of PyTorch's DistributedDataParallel. The colorization loop runs the generator
twice and the discriminator three times before one backward, which DDP's wrapper does not allow, so
the averaging is done here, explicitly, one flattened all-reduce per module. Batch-norm statistics
are computed over the global batch as well (`SyncBatchNorm` on GPUs, `GlooSyncBatchNorm` on the CPU,
where PyTorch's has no kernel), so N processes at a global batch B compute what one process does.

NCCL on GPUs, gloo on the CPU. `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; without them
everything here is a no-op and a loop runs as one process.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


# Its replacement (_functional_collectives) is private; this one is exact (gradients checked against one process).
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits among the data-parallel workers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone checkpoints, writes weights and reports metrics."""
        return self.rank == 0

    def positions(self, batch_size: int) -> list[int]:
        """Which positions of a step's global batch this process computes (strided, like DistributedSampler)."""
        if batch_size % self.world_size:
            raise ValueError(f"global batch {batch_size} does not split over {self.world_size} processes; "
                             f"use a batch size divisible by the number of GPUs")
        return list(range(self.rank, batch_size, self.world_size))

    def average_gradients(self, module: nn.Module) -> None:
        """Mean of every parameter's gradient over the processes (what DDP's reducer computes)."""
        if not self.enabled:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # unused this step in this process: contributes zeros, as in DDP
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows (`positions`) of a tensor holding a step's global batch."""
        if not self.enabled:
            return batch
        return batch[self.positions(batch.shape[0])]

    def global_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over the global batch of per-item `values`, differentiable through the all-reduce."""
        if not self.enabled:
            return values.mean()
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(values.sum()) / (values.numel() * self.world_size)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Metrics averaged over the processes (each saw a shard of the batch), as floats (a tensor's value is read
        here, at the logging step, not every step)."""
        if not self.enabled or not values:
            return {k: float(v) for k, v in values.items()}
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.cpu().tolist())}

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = DistContext()


def current() -> DistContext:
    """The context of an initialised process group, else one process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def init_from_env(device_type: str) -> DistContext:
    """Join the process group `torchrun` describes in the environment: NCCL for cuda, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return current()


@contextlib.contextmanager
def process_group(device_type: str):
    """`init_from_env` for the duration of a block; the group is destroyed after it."""
    ctx = init_from_env(device_type)
    try:
        yield ctx
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm with statistics over the batch of every process, for CPU tensors.

    PyTorch's `SyncBatchNorm` runs on GPUs only. Sums and sums of squares are all-reduced with the
    autograd-aware collective, so gradients flow through the global statistics as in `SyncBatchNorm`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = x.new_tensor([x.numel() / c])
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        y = (x - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def sync_batchnorm(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by one whose statistics cover the global batch (no-op for one process)."""
    if not ctx.enabled:
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlooSyncBatchNorm):
            sync = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(device=next(child.parameters(), torch.empty(0)).device)
            setattr(module, name, sync)
        else:
            sync_batchnorm(child, ctx, device)
    return module


def for_loop(device: torch.device, tracker, progress, dist: DistContext | None = None):
    """What a training loop needs to run as one rank: (context, this rank's device, tracker, progress).

    `dist` defaults to the initialised process group (one process without one). Ranks other than 0
    get a tracker and progress that do nothing: rank 0 alone logs.
    """
    from mangacolor.tracking import NullTracker

    ctx = dist or current()
    dev = local_device(torch.device(device), ctx)
    if not ctx.is_main:
        tracker, progress = NullTracker(), None
    return ctx, dev, tracker, progress


def written_by(ctx: DistContext) -> dict:
    """Checkpoint `extra` naming the rank that wrote it (rank 0 alone writes)."""
    return {"written_by": {"rank": ctx.rank, "world_size": ctx.world_size}}


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per process: `cuda` becomes `cuda:LOCAL_RANK` (the launcher hides the others or not)."""
    if device.type == "cuda" and ctx.enabled:
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    return device


__all__ = ["DistContext", "GlooSyncBatchNorm", "SINGLE", "current", "for_loop", "init_from_env", "local_device",
           "process_group", "sync_batchnorm", "written_by"]
