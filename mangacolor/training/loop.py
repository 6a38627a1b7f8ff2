"""The end of a training step, the same in every loop: log, sample, checkpoint.

Nothing here waits for the device between those steps: a loop hands over its losses as tensors (reading one is a
host sync that stalls a GPU's queue), and `FiniteLosses` checks that they stayed finite at the logging and
checkpoint steps, before anything is saved. At its interval, and at the last step, each of the three happens in
this order: the step's metrics are
logged (every rank takes part, since they are averaged over the processes by the loop's `metrics`), a
sample image is kept and a checkpoint saved (rank 0 alone). A loop describes each as a function of the
step it just finished and calls its `LoopTail` once per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mangacolor.tracking import Tracker
from mangacolor.training import distributed


@dataclass
class LoopTail:
    total: int  # the loop's last step: everything happens there whatever the intervals
    dist: distributed.DistContext
    tracker: Tracker
    log_every: int
    checkpoint_every: int
    sample_every: int | None = None
    say: Callable[[str], None] | None = None  # progress messages (None on ranks other than 0)

    def due(self, done: int, every: int | None) -> bool:
        """Whether something at interval `every` happens after step `done` (1-based)."""
        return every is not None and (done % every == 0 or done == self.total)

    def __call__(self, done: int, metrics: Callable[[], dict[str, float]], message: Callable[[dict[str, float]], str] | None = None,
                 sample: Callable[[], None] | None = None, checkpoint: Callable[[], None] | None = None) -> dict[str, float] | None:
        """After step `done`: log `metrics()` (and say `message(metrics)`), then `sample()`, then `checkpoint()`,
        each when due. Returns the metrics logged, None when it was not the logging step."""
        logged = None
        if self.due(done, self.log_every):
            logged = metrics()
            self.tracker.log_metrics(logged, step=done)
            if self.say is not None and message is not None:
                self.say(message(logged))
        if sample is not None and self.dist.is_main and self.due(done, self.sample_every):
            sample()
        if checkpoint is not None and self.dist.is_main and self.due(done, self.checkpoint_every):
            checkpoint()
        return logged


class FiniteLosses:
    """Whether every loss since the last check was finite, kept on the device and checked (a host sync) only when
    `check` is called: at a loop's logging and checkpoint steps, so a diverged run never writes a checkpoint."""

    def __init__(self, what: str):
        self.what, self.ok, self.since = what, None, 1

    def add(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach())
        self.ok = finite if self.ok is None else self.ok & finite

    def check(self, done: int) -> None:
        if self.ok is not None and not bool(self.ok):
            raise FloatingPointError(f"{self.what} loss became inf or nan between steps {self.since} and {done}; "
                                     "lower lr or use fp32")
        self.ok, self.since = None, done + 1
