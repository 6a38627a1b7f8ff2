"""The paper's batch in GPU memory: micro-batches with gradient accumulation, and frozen batch-norm statistics.

The paper trains step 1 at batch 4 on 768x512 crops on one A100 80 GB. A step holds the graphs of 4 synthetic and
4 real pages at once; split into micro-batches, a step runs each micro-batch's forward and backward in turn and
adds up their gradients before the one optimiser step, so only one micro-batch's graph is alive at a time. Each
micro-batch's loss is its mean divided by the number of micro-batches: summed, the gradients are the batch's.

Two things depend on which rows share a forward pass, and are made not to:
- batch-norm statistics. A micro-batch's mean and variance are not the batch's, so micro-batches need
  `batchnorm: frozen`: batch norm then normalises with its running statistics (the pretrained encoder's) and
  keeps them, as detection networks are fine-tuned at one or two images per GPU. The same setting with and
  without micro-batches gives the same weights.
- spectral normalisation's power iteration, one per training forward of the discriminator: it runs on the
  first micro-batch only, and each later micro-batch's n-th call of the discriminator normalises with the
  vectors the first one's n-th call left (`PowerIterationReplay`), as the whole batch's n-th call does.
Activation checkpointing (`ColorizationGenerator.checkpointing`) recomputes the generator's activations in the
backward pass instead of keeping them, for another large cut in what a micro-batch holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mangacolor.training.loader import map_tensors


def micro_slices(rows: int, micro_batch: int | None) -> list[slice]:
    """The row slices of a per-process batch of `rows` in micro-batches of `micro_batch` (None or >= rows: one)."""
    if micro_batch is None or micro_batch >= rows:
        return [slice(0, rows)]
    if micro_batch < 1 or rows % micro_batch:
        raise ValueError(f"micro_batch {micro_batch} does not split the per-process batch of {rows} rows evenly: use a "
                         f"divisor of {rows} (the global batch over the processes)")
    return [slice(i, i + micro_batch) for i in range(0, rows, micro_batch)]


def rows(batch: Any, part: slice) -> Any:
    """The rows `part` of every tensor in nested dicts / dataclasses / sequences (None and the rest kept)."""
    return map_tensors(batch, lambda t: t[part])


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that always normalises with its running statistics and never updates them; its affine weights
    still train. Same parameters and buffers as `nn.BatchNorm2d`, so checkpoints and weights files load both ways."""

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


def freeze_batchnorm(module: nn.Module) -> int:
    """Turn every `BatchNorm2d` of `module` into a `FrozenBatchNorm2d` in place; returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = FrozenBatchNorm2d
            m.train(False)
            n += 1
    return n


class PowerIterationReplay:
    """Calls of a spectrally normalised module in micro-batches, normalised as in one batch.

    With the whole batch, the step's n-th call of the discriminator runs one power iteration and normalises every
    row with its result. Here the first micro-batch's calls iterate (training mode) and keep the vectors each left;
    a later micro-batch's n-th call normalises with those vectors and iterates no more (evaluation mode: the
    discriminator has no other layer that differs). `finish` leaves the vectors of the last call, as one batch does.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.vectors = [b for name, b in module.named_buffers() if name.endswith(("._u", "._v"))]
        self.after: list[list[torch.Tensor]] = []
        self.micro, self.call = 0, 0

    def next_micro_batch(self, index: int) -> None:
        self.micro, self.call = index, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        call, self.call = self.call, self.call + 1
        if self.micro == 0:
            self.module.train(True)
            out = self.module(x)
            self.after.append([b.detach().clone() for b in self.vectors])
            return out
        with torch.no_grad():
            for b, saved in zip(self.vectors, self.after[call]):
                b.copy_(saved)
        self.module.train(False)
        return self.module(x)

    def finish(self) -> None:
        if self.after:
            with torch.no_grad():
                for b, saved in zip(self.vectors, self.after[-1]):
                    b.copy_(saved)
        self.module.train(True)
        self.after, self.micro, self.call = [], 0, 0
