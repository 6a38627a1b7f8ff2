"""Pages, folders and chapter archives turned into output images page by page: the engine of `mangacolor colorize`
and `mangacolor xdog`.

`run_units` walks the units `pages.plan_outputs` made: it skips pages whose outputs exist (a run picks up
where the last one stopped), copies pages already in colour unless told otherwise, writes every output
atomically (a chapter archive is assembled from its finished pages at the end), reports an unreadable
page and goes on, shows progress, and stops after the page in hand on Ctrl-C.
"""

from __future__ import annotations

import errno
import os
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
    """An input error met in the middle of a run (a hint that does not fit a page), or an output that
    cannot be written (no space, no permission): stop, exit 2."""


class PageFailed(Exception):
    """One page's output cannot be written (its name is too long): that page fails, the run goes on."""


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
    import cv2
    from tqdm import tqdm

    from mangacolor.data.archives import MemberError, read_member
    from mangacolor.inference.pages import ArchiveJob, count_pages, encode_as, is_colour_page, sample_path
    from mangacolor.io.files import write_atomic
    from mangacolor.io.images import ImageError, read_image
    from mangacolor.io.limits import MAX_FILE_BYTES, read_regular

    def write(target: Path, data: bytes) -> None:
        """An output error is the run's end (one line, exit 2), except a name too long for the file
        system, which fails that page alone."""
        try:
            write_atomic(target, data)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise PageFailed(f"{target}: name too long for the file system ({len(os.fsencode(target.name))} bytes)") from None
            raise StopRun(f"cannot write {target}: {exc.strerror or exc}; pages finished before are kept") from None

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
                    write(t, data)
            return
        if not opts.force and is_colour_page(rgb):
            for t in targets:
                write(t, data if Path(name).suffix.lower() == t.suffix.lower() else encode_as(rgb, t.name))
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
            write(t, encode_as(img, t.name))
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
                            data = read_regular(unit.source, MAX_FILE_BYTES, "page image")
                        except OSError as exc:
                            report(f"{unit.source}: unreadable ({getattr(exc, 'reason', None) or exc.strerror or exc})")
                        else:
                            rel = unit.target.relative_to(opts.out) if unit.target.is_relative_to(opts.out) else unit.source.name
                            try:
                                one_page(data, str(unit.source), str(rel), targets, in_archive=False)
                            except PageFailed as exc:
                                report(str(exc))
                    tick()
                    continue
                job = ArchiveJob(unit, samples)
                if not opts.overwrite and all(t.exists() for t in job.targets()):
                    stats["existing"] += count_pages(unit)
                    tick(count_pages(unit))
                    continue
                try:
                    zf = job.open()
                except (ValueError, OSError) as exc:  # ArchiveJob.open: ValueError when it cannot be read
                    report(f"{unit.source}: {one_line(exc)}")
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
                            try:  # inflated in pieces: a member that lies about its size costs a piece
                                data = read_member(zf, zf.getinfo(m.name))
                            except MemberError as exc:
                                data = None
                                report(f"{unit.source}: {exc}")
                                m.problem = f"corrupt member {m.name!r}"
                            if data is not None:
                                try:
                                    one_page(data, f"{unit.source}:{m.name}", f"{unit.source.stem}/{m.name}", parts, in_archive=True)
                                except PageFailed as exc:
                                    report(str(exc))
                        tick()
                    if not any(m.is_page and not m.problem for m in job.members):
                        report(f"{unit.source}: no readable page in the chapter; nothing written for it")
                        continue
                    try:
                        for why in job.assemble(zf):
                            bar.write(f"left out of {unit.target.name}: {why}", file=sys.stderr)
                    except OSError as exc:
                        raise StopRun(f"cannot write {unit.target}: {exc.strerror or exc}; pages finished before are kept") from None
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
