"""Per-page work spread over worker processes, in batches, streamed in a fixed order: the one page mapper.

`ordered_map` is the engine: fn(item) for each item, computed in DataLoader worker processes a bounded
number ahead, yielded in item order. Two ways of batching use it:

`map_batches`, for units planned before reading. A per-page stage (xDoG of every colour page, the
refiner or CUT over every page of a title) cuts its pages into work units (`size_batches`: pages of
one size, at most `batch_size` a unit) and hands them to `map_batches`, which
- loads each unit (reads and decodes its pages) in `torch.utils.data.DataLoader` worker processes,
  a bounded number of units ahead (`prefetch_factor` per worker), so at most
  (workers · prefetch_factor + 1) units are decoded at any moment, whatever the number of pages;
- applies the work either in the same workers (the CPU: processes are the parallelism) or in the
  calling process (a GPU: one forward pass per unit, while the workers decode the next units);
- yields the results in the order of the units, so what a stage writes does not depend on the
  number of workers.

`map_pages`, for batches known only after reading (the pages' working sizes): each row is loaded in
the workers, then grouped here by a key into batches for a network, and handed back as `Mapped` rows
in row order, an unreadable page with its reason. `OutputThread` writes what comes out in a background
thread, in order, while the network runs on.

Workers: `None` means `MANGACOLOR_WORKERS` if set, else one per core but one, at most 8
(`resolve_workers`: the one place every loader, stage and loop decides its worker count). They are forked on Linux, so the functions may close
over a store and a model; elsewhere they must be picklable. PyTorch runs each worker on one
intra-op thread, and OpenCV too (`start_workers`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from mangacolor.io.images import ImageError

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


class _Calls(Dataset):
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
    yield from start_workers(DataLoader(
        _Calls(fn, items),
        batch_size=None,  # one item is one unit of work
        sampler=range(len(items)),
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=prefetch_factor,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(0),  # never draw from the global torch RNG
    ))


def start_workers(loader: DataLoader) -> Iterator:
    """`iter(loader)`, its worker processes forked while OpenCV runs on one thread, so each starts with one.

    A worker is one of many processes on the machine's cores: an OpenCV thread pool the size of the machine in
    each (8 ranks x 8 workers x 16 cores) only makes them wait on each other. Set in the parent around the fork, not
    in the child, where reconfiguring a pool the parent was using can wait forever on its lock; the parent keeps
    its own setting."""
    if loader.num_workers == 0:
        return iter(loader)
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)  # the workers fork here
    finally:
        cv2.setNumThreads(threads)


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


# --- batches known only after reading: rows loaded in workers, grouped here ------------------------


@dataclass
class Mapped:
    """One row of `map_pages`: `value` what `load` made of it and `result` what `run` made of that,
    or `reason` (the ImageError message) when the page could not be read."""

    index: int
    row: dict
    value: object = None
    result: object = None
    reason: str | None = None


class _Loads:
    """load(row) -> (value, None), or (None, reason) for a page `load` cannot read."""

    def __init__(self, load: Callable[[dict], object]):
        self.load = load

    def __call__(self, row: dict) -> tuple[object, str | None]:
        try:
            return self.load(row), None
        except ImageError as exc:
            return None, exc.reason


def map_pages(rows: list[dict], load: Callable[[dict], object], run: Callable[[list], list], batch_size: int,
              num_workers: int | None = None, group: Callable[[object], object] = lambda value: None,
              waiting: int | None = None) -> Iterator[Mapped]:
    """Every row through `load` (in workers: read, decode, resize) and `run` (here: the network, on
    batches of up to `batch_size` values of one `group`, e.g. one input size), as `Mapped` in row order.

    What a row gets does not depend on `num_workers` or `batch_size` beyond the network's own float
    rounding across batch shapes. Pages of several sizes wait in one batch per group; once `waiting`
    (default 4 x batch_size) pages wait, the fullest group runs early, so memory stays bounded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
    resolve_workers(num_workers)  # a bad count is an error before any page is read
    waiting = waiting or 4 * batch_size
    groups: dict[object, list[Mapped]] = {}
    done: dict[int, Mapped] = {}
    following = 0

    def flush(key) -> None:
        batch = groups.pop(key)
        for item, result in zip(batch, run([item.value for item in batch]), strict=True):
            item.result = result
            done[item.index] = item

    for i, (value, reason) in enumerate(ordered_map(_Loads(load), rows, num_workers, prefetch_factor=4)):
        item = Mapped(i, rows[i], value, reason=reason)
        if reason is not None:
            done[i] = item
        else:
            key = group(value)
            groups.setdefault(key, []).append(item)
            if len(groups[key]) >= batch_size:
                flush(key)
            elif sum(map(len, groups.values())) >= waiting:
                flush(max(groups, key=lambda k: len(groups[k])))
        while following in done:
            yield done.pop(following)
            following += 1
    for key in sorted(groups, key=lambda k: groups[k][0].index):
        flush(key)
    while following in done:
        yield done.pop(following)
        following += 1


class OutputThread:
    """Runs `fn(*args)` calls in one background thread, in the order given (PNG encoding and store writes
    overlap the network); at most `depth` wait; an error raised there is raised here."""

    def __init__(self, depth: int = 32):
        self.pool, self.pending, self.depth = ThreadPoolExecutor(1, thread_name_prefix="page-writer"), deque(), depth

    def submit(self, fn: Callable, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while self.pending and (len(self.pending) > self.depth or self.pending[0].done()):
            self.pending.popleft().result()

    def __enter__(self) -> OutputThread:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while self.pending:
                future = self.pending.popleft()
                if exc_type is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self.pool.shutdown(wait=True)
