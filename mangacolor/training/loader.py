"""Training batches built in `torch.utils.data.DataLoader` workers, as a pure function of (seed, step).

Every training loop describes its data as `make(step) -> batch`: which pages, which crops, flips,
augmentations and cues of step s come from generators seeded by (seed, s) inside `make`, never from
a worker's or the main process's global RNG. `step_batches` then iterates the steps start..stop-1
through a `DataLoader` whose item s is `make(s)`: pages are decoded and augmented in worker
processes, several steps ahead (`prefetch_factor` per worker), into pinned memory when the device
is a GPU, and the loop gets exactly the batches a single-process run would, in order. A resumed run
starts the loader at its checkpoint's step, so the data position is the step itself.

Workers: `num_workers=None` means `MANGACOLOR_WORKERS` if set, else min(8, cores available - 1)
(`mangacolor.io.pagemap.resolve_workers`, the one place that decides).
They are forked on Linux (so `make` may close over lists of pages and models without pickling);
elsewhere `make` must be picklable. Each runs OpenCV on one thread, set in the parent around the fork
(`mangacolor.io.pagemap.start_workers`): reconfiguring OpenCV's pool in a forked child can wait forever
on the parent's condition variables.

Batches should leave the workers compact: a worker's batch is copied into shared memory and mapped
by the loop, so float pages with page-size cue planes cost the loop in copying what the workers
saved in decoding. The colorizer's step-1 batch at paper size is 138 MB as float pages, 4-channel
hints and page-size drafts, and 12.6 MB as its workers ship it (uint8 pages, hint points:
`colorizer.StepBatch`), made float on the training device by `colorizer.expand_batch`. A dataclass
batch derives from `Pinnable` so that the loader pins it for the copy to a GPU. There is no cache of
decoded pages: at the paper's 100,000 pages a worker would almost never draw a page twice.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pydantic import BaseModel
from torch.utils.data import DataLoader, Dataset

from mangacolor.io.pagemap import resolve_workers, start_workers

@dataclass
class LoaderSettings:
    """How a loop reads its batches; every loop's config has these (`LoaderFields` for the pydantic ones)."""

    num_workers: int | None = None  # DataLoader worker processes; None: mangacolor.io.pagemap.resolve_workers
    prefetch_factor: int = 2  # batches each worker prepares ahead


class LoaderFields(BaseModel):
    """`LoaderSettings` for a loop config that is a pydantic model (CUT, the refiner)."""

    num_workers: int | None = None
    prefetch_factor: int = 2


class StepBatches(Dataset):
    """Item s is the batch of training step s, `make(s)`."""

    def __init__(self, make: Callable[[int], Any], stop: int):
        self.make, self.stop = make, stop

    def __len__(self) -> int:
        return self.stop

    def __getitem__(self, step: int) -> Any:
        return self.make(int(step))


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`fn` applied to every tensor in nested dicts / lists / tuples / dataclasses; anything else kept."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: map_tensors(getattr(batch, f.name), fn)
                                             for f in dataclasses.fields(batch) if f.init})
    return batch


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors in nested dicts / lists / tuples / dataclasses moved to `device`; anything else kept."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


class Pinnable:
    """Mixin for a dataclass batch: the `DataLoader`'s pin-memory thread pins every tensor in it
    (it pins only tensors, dicts and sequences by itself, and would leave a dataclass in pageable memory)."""

    def pin_memory(self) -> Any:
        return map_tensors(self, torch.Tensor.pin_memory)


def step_loader(make: Callable[[int], Any], start: int, stop: int, device: torch.device,
                num_workers: int | None = None, prefetch_factor: int = 2) -> DataLoader:
    """The `DataLoader` over steps start..stop-1 (see the module docstring)."""
    workers = min(resolve_workers(num_workers), max(0, stop - start))
    context = None
    if workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
    return DataLoader(
        StepBatches(make, stop),
        batch_size=None,  # make(s) is already the whole batch
        sampler=range(start, stop),
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        prefetch_factor=prefetch_factor if workers > 0 else None,
        multiprocessing_context=context,
        # A private generator: creating the iterator must not draw from the global torch RNG,
        # which the loops' checkpoints save and restore.
        generator=torch.Generator().manual_seed(0),
    )


def step_batches(make: Callable[[int], Any], start: int, stop: int, device: torch.device,
                 num_workers: int | None = None, prefetch_factor: int = 2) -> Iterator[tuple[int, Any]]:
    """(step, batch on `device`) for step = start..stop-1, batches built by `make` in workers."""
    device = torch.device(device)
    loader = step_loader(make, start, stop, device, num_workers, prefetch_factor)
    pinned = loader.pin_memory
    for step, batch in zip(range(start, stop), start_workers(loader)):
        yield step, to_device(batch, device, non_blocking=pinned)
