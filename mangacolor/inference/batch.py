"""Pages, folders and chapter archives turned into output images page by page: the engine of `mangacolor colorize`
and `mangacolor xdog`.

`run_units` walks the units `pages.plan_outputs` made: it skips pages whose outputs exist (a run picks up
where the last one stopped), copies pages already in colour unless told otherwise, writes every output
atomically (a chapter archive is assembled from its finished pages at the end), reports an unreadable
page and goes on, shows progress, and stops after the page in hand on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BatchOptions:
    out: Path  # the output file or folder the units were planned for
    samples: int = 1  # outputs per page (NAME_s1.png, ...)
    overwrite: bool = False  # redo pages whose outputs exist
    force: bool = False  # process pages that are already in colour (default: copied as they are)
    quiet: bool = False  # no progress bar
    wants_rgb: bool = False  # `process` gets RGB pages (default: grey)


class StopRun(Exception):
    """An input error met in the middle of a run (a hint that does not fit a page): stop, exit 2."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextmanager
def stop_between_pages():
    """Ctrl-C asks the page loop to stop after the page in hand; a second Ctrl-C stops at once.

    Python raises KeyboardInterrupt in whatever Python code the main thread runs next, and when that
    is a finalizer or a library's catch-all the interrupt is printed as "ignored" and lost (the chapter
    could be lost). A flag the loop reads between pages cannot be lost that way. Where SIGINT is ignored
    (started with `nohup` or as a background job of a script, which inherit SIG_IGN) it stays ignored,
    and outside the main thread (no handler can be set there) the flag is never raised."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield asked
        return

    def on_sigint(signum, frame):
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def run_units(units, process, opts: BatchOptions, what: str) -> int:
    """Turn each page of `units` (`pages.plan_outputs`) into the images `process(page, rel_name)` returns (page:
    grey, or RGB with `opts.wants_rgb`), with progress (pages/s, ETA), resume, colour-page pass-through, atomic
    writes and a summary line; `what` names the work in it ("coloured"). Returns the exit code: 0 every page
    done, 1 some failed (reported, the rest written), 2 `process` raised `StopRun`, 130 interrupted."""
    import zipfile

    import cv2
    from tqdm import tqdm

    from mangacolor.inference.pages import ArchiveJob, count_pages, encode_as, is_colour_page, sample_path
    from mangacolor.io.files import write_atomic
    from mangacolor.io.images import ImageError, read_image

    samples = opts.samples
    stats = {"done": 0, "copied": 0, "existing": 0, "failed": 0}
    bar = tqdm(total=sum(count_pages(u) for u in units), unit="page", disable=opts.quiet, dynamic_ncols=True,
               bar_format="{desc}: {n_fmt}/{total_fmt} pages |{bar}| {rate_noinv_fmt}, ETA {remaining}", desc=what)

    def report(msg: str) -> None:
        stats["failed"] += 1
        bar.write(f"skipped {msg}", file=sys.stderr)

    def one_page(data: bytes, name: str, rel: str, targets: list[Path], in_archive: bool) -> None:
        try:
            rgb = read_image(data, mode="RGB")
        except ImageError as exc:
            report(f"{name}: {exc.reason}")
            if in_archive:  # the chapter keeps its page count: the original bytes go in unchanged
                for t in targets:
                    write_atomic(t, data)
            return
        if not opts.force and is_colour_page(rgb):
            for t in targets:
                write_atomic(t, data if Path(name).suffix.lower() == t.suffix.lower() else encode_as(rgb, t.name))
            stats["copied"] += 1
            return
        page = rgb if opts.wants_rgb else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        del rgb
        try:
            outs = process(page, rel)
        except StopRun:
            raise
        except Exception as exc:  # one bad page never ends the chapter
            report(f"{name}: {type(exc).__name__}: {one_line(exc)}")
            return
        for t, img in zip(targets, outs):
            write_atomic(t, encode_as(img, t.name))
        stats["done"] += 1

    def tick(pages: int = 1) -> None:
        bar.update(pages)
        if stop.is_set():
            raise KeyboardInterrupt

    with stop_between_pages() as stop:
        try:
            for unit in units:
                if unit.problem:
                    report(f"{unit.source}: {unit.problem}")
                    tick(count_pages(unit))
                    continue
                if unit.kind == "page":
                    targets = [sample_path(unit.target, k, samples) for k in range(samples)]
                    if not opts.overwrite and all(t.exists() for t in targets):
                        stats["existing"] += 1
                    else:
                        try:
                            data = unit.source.read_bytes()
                        except OSError as exc:
                            report(f"{unit.source}: unreadable ({exc.strerror or exc})")
                        else:
                            rel = unit.target.relative_to(opts.out) if unit.target.is_relative_to(opts.out) else unit.source.name
                            one_page(data, str(unit.source), str(rel), targets, in_archive=False)
                    tick()
                    continue
                job = ArchiveJob(unit, samples)
                if not opts.overwrite and all(t.exists() for t in job.targets()):
                    stats["existing"] += count_pages(unit)
                    tick(count_pages(unit))
                    continue
                try:
                    zf = job.open()
                except (zipfile.BadZipFile, OSError) as exc:
                    report(f"{unit.source}: not a readable zip/cbz archive ({one_line(exc)})")
                    continue
                with zf:
                    for m in job.members:
                        if m.problem:
                            bar.write(f"left out of {unit.target.name}: {m.problem}", file=sys.stderr)
                        if not m.is_page:
                            continue
                        parts = [job.part(m, k) for k in range(samples)]
                        if not opts.overwrite and all(p.exists() for p in parts):
                            stats["existing"] += 1
                        else:
                            try:
                                data = zf.read(m.name)
                            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
                                data = None
                                report(f"{unit.source}:{m.name}: corrupt member ({one_line(exc)})")
                                m.problem = f"corrupt member {m.name!r}"
                            if data is not None:
                                one_page(data, f"{unit.source}:{m.name}", f"{unit.source.stem}/{m.name}", parts, in_archive=True)
                        tick()
                    job.assemble(zf)
        except StopRun as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: {stats['done'] + stats['copied']} page(s) finished this run are kept under {opts.out}; "
                  "run the same command again to go on", file=sys.stderr)
            return 130
    bar.close()
    parts = [f"{stats['done']} page(s) {what}"]
    if stats["copied"]:
        parts.append(f"{stats['copied']} already in colour, copied (--force to process them)")
    if stats["existing"]:
        parts.append(f"{stats['existing']} already done, skipped (--overwrite to redo)")
    if stats["failed"]:
        parts.append(f"{stats['failed']} failed")
    print(f"{', '.join(parts)} -> {opts.out}")
    return 1 if stats["failed"] else 0
