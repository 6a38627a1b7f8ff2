"""Per-page work spread over worker processes, in same-size batches, streamed in a fixed order.

A per-page stage (xDoG of every colour page, the refiner or CUT over every page of a title) cuts its
pages into work units (`size_batches`: pages of one size, at most `batch_size` a unit) and hands
them to `map_batches`, which
- loads each unit (reads and decodes its pages) in `torch.utils.data.DataLoader` worker processes,
  a bounded number of units ahead (`prefetch_factor` per worker), so at most
  (workers · prefetch_factor + 1) units are decoded at any moment, whatever the number of pages;
- applies the work either in the same workers (the CPU: processes are the parallelism) or in the
  calling process (a GPU: one forward pass per unit, while the workers decode the next units);
- yields the results in the order of the units, so what a stage writes does not depend on the
  number of workers.

Workers: `None` means `MANGACOLOR_WORKERS` if set, else one per core but one, at most 8
(`resolve_workers`: the one place every loader, stage and loop decides its worker count). They are forked on Linux, so the functions may close
over a store and a model; elsewhere they must be picklable. PyTorch runs each worker on one
intra-op thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "MANGACOLOR_WORKERS"
# What a `num_workers` / `workers` setting of a preset section means when it is null.
WORKERS_HELP = "worker processes that read pages (null: MANGACOLOR_WORKERS, else cores - 1, at most 8)"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """`MANGACOLOR_WORKERS` if set, else one worker per core but one (for the process that drives them), at most 8."""
    env = os.environ.get(WORKERS_ENV)
    if env not in (None, ""):
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be a whole number of data-loading workers, got {env!r}") from None
        if n < 0:
            raise ValueError(f"{WORKERS_ENV} must be 0 or more, got {n}")
        return n
    return max(0, min(8, available_cores() - 1))


def resolve_workers(workers: int | None, what: str = "num_workers") -> int:
    """A configured worker count, or `default_workers()` for None; a negative one is an error naming `what`."""
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"{what} must be 0 or more, got {workers}")
    return workers


def size_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Indices 0..n-1 grouped by key (a page size), each group cut into runs of at most `batch_size`.

    Groups come in the order of their first index and keep index order inside, so the plan depends
    only on the keys and `batch_size`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [idx[s:s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


class _Mapped(Dataset):
    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any]):
        self.fn, self.items = fn, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.fn(self.items[int(i)])


def _as_is(x: Any) -> Any:
    # DataLoader's default would turn numpy arrays into tensors.
    return x


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None,
                prefetch_factor: int = 2) -> Iterator[R]:
    """fn(item) for each item, in order, computed in `workers` processes (0: here), a bounded number ahead."""
    workers = min(resolve_workers(workers, "workers"), len(items))
    if workers == 0:
        yield from (fn(item) for item in items)
        return
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    yield from DataLoader(
        _Mapped(fn, items),
        batch_size=None,  # one item is one unit of work
        sampler=range(len(items)),
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=prefetch_factor,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(0),  # never draw from the global torch RNG
    )


def map_batches(load: Callable[[T], Any], apply: Callable[[Any], R], batches: Sequence[T], *,
                workers: int | None = None, apply_in_workers: bool = True, prefetch_factor: int = 2) -> Iterator[R]:
    """apply(load(batch)) for each batch, in order: `load` always in the workers, `apply` there too or here.

    `apply_in_workers=False` is for a network on a GPU: one process owns the device and runs each
    batch while the workers decode the next ones.
    """
    if apply_in_workers:
        yield from ordered_map(lambda batch: apply(load(batch)), batches, workers, prefetch_factor)
    else:
        for loaded in ordered_map(load, batches, workers, prefetch_factor):
            result = apply(loaded)
            del loaded  # not alive while the next batch is decoded
            yield result
