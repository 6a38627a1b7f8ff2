"""The `mangacolor` command for people who use the library and the trained model.

Commands here need no orchestrator; `mangacolor demo` and `mangacolor ui` (in `pipelines/cli.py`)
drive the Dagster graph and are added to the same command line by the project's entry point.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from mangacolor.demo.corpus import generate_demo_corpus

    summary = generate_demo_corpus(args.out, seed=args.seed, scale=args.scale)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    from mangacolor.data.matching import MatchConfig, match_pages
    from mangacolor.io.images import ImageError, read_image

    try:
        bw = read_image(args.bw, mode="L")
        color = read_image(args.color, mode="RGB")
    except ImageError as exc:
        print(f"error: cannot read page: {exc.reason}", file=sys.stderr)
        return 2
    cfg = MatchConfig(threshold=args.threshold) if args.threshold is not None else MatchConfig()
    result = match_pages(bw, color, cfg)
    print(json.dumps(result.to_json()))
    return 0


def _cmd_scrape(args: argparse.Namespace) -> int:
    from mangacolor.data.scraper import load_site_config, scrape_cli
    from mangacolor.data.web import default_crawl_dir

    out = args.out
    if out is None:
        # The folder `scraped_pages` crawls into, so the CLI and Dagster share ETags and files.
        try:
            out = default_crawl_dir(load_site_config(args.config).name)
        except (FileNotFoundError, ValueError) as exc:
            print(f"mangacolor scrape: {exc}", file=sys.stderr)
            return 2
    return scrape_cli(args.config, args.title, out, progress=not args.quiet, base_url=args.base_url, wait_s=args.wait)


def _cmd_store_verify(args: argparse.Namespace) -> int:
    from mangacolor.io.store import Store, verify

    root = args.root
    if root is None:
        from mangacolor.config import load_preset

        root = load_preset(args.preset)["artifact_root"]
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(root))
    if not fs.isdir(path):  # checked before Store(), which would create a local root
        print(f"mangacolor store verify: no artifact store at {root}", file=sys.stderr)
        return 2
    store = Store(root)
    checked, problems = verify(store, args.asset or None)
    for problem in problems:
        print(f"BAD {problem}")
    print(f"{checked} manifests checked under {store.root_uri}: " + (f"{len(problems)} problem(s)" if problems else "all files present, sha256 match"))
    return 1 if problems else 0


def _cmd_colorize(args: argparse.Namespace) -> int:
    """Exit codes: 0 every page done, 1 some pages failed (reported, the rest written), 2 an input,
    reference, hint, model or output that cannot be used (one line, nothing started; or a disk that
    filled up, finished pages kept), 130 interrupted."""
    from mangacolor.inference.hints import HintError
    from mangacolor.inference.pages import InputError, plan_outputs, read_page

    try:
        if args.samples < 1:
            raise InputError(f"--samples must be at least 1, got {args.samples}")
        units = plan_outputs(args.inputs, *_out_arg(args), samples=args.samples)
        reference = read_page(args.reference, "reference", mode="RGB") if args.reference else None
        hints = _hint_source(args.hints)
    except (InputError, HintError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mangacolor.inference.api import Colorizer  # torch: only once the inputs are known to be usable

    try:
        colorizer = Colorizer(_load_bundle(args.model, args.device), args.mode)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    lock = None
    if args.lock_palette is not None and colorizer.bundle.drafting is not None:
        from mangacolor.drafting.sampling import PaletteLock

        # One CLS vector for every page: the chapter keeps one palette (paper §III-A).
        lock = PaletteLock.from_seed(colorizer.bundle.drafting, args.lock_palette)

    def colour(grey, rel: str):
        hint = _hint_for(hints, rel) if hints is not None and hints.is_dir() else hints
        try:
            out = colorizer.colorize(grey, hints=hint, reference=reference, samples=args.samples,
                                     seed=args.draft_seed, lock=lock)
        except InputError as exc:
            raise _Fatal(str(exc)) from None
        return out if isinstance(out, list) else [out]

    return _run_units(units, colour, args, what="coloured")


def _cmd_serve(args: argparse.Namespace) -> int:
    from mangacolor.serve import serve

    try:
        serve(args.model, host=args.host, port=args.port, device=args.device, mode=args.mode)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


class _Fatal(Exception):
    """An input error met in the middle of a run (a hint that does not fit a page), or an output that
    cannot be written (no space, no permission): stop, exit 2."""


class _PageFailed(Exception):
    """One page's output cannot be written (its name is too long): that page fails, the run goes on."""


def _out_arg(args: argparse.Namespace) -> tuple[Path, bool]:
    """`-o` as a Path, and whether it was written as a folder (`out.png/`: the slash a Path drops)."""
    raw = str(args.out)
    args.out = Path(raw)
    return args.out, raw.endswith(("/", os.sep))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _load_bundle(model: str | None, device: str):
    from mangacolor.inference.bundle import ModelBundle

    return ModelBundle.load(_default_model(model), device=device)


HINT_FORMS = 'an RGBA/RGB hint image or a .json list of points [{"x": X, "y": Y, "rgb": [R, G, B], "radius": R}]'


def _hint_source(hints: str | None):
    """--hints checked before any page is read: None, a folder of per-page hint files, or one hint file
    (read again for each page, so its errors name it)."""
    if hints is None:
        return None
    from mangacolor.inference.hints import HintError, read_hint_json
    from mangacolor.io.images import ImageError, read_image

    path = Path(hints)
    if path.is_dir():
        return path
    if not path.exists():  # a FIFO or a device is refused by the readers below, unread
        raise HintError(f"{path}: no such hint file or folder (expected {HINT_FORMS}, or a folder of them named like the pages)")
    if path.suffix.lower() == ".json":
        read_hint_json(path)  # every point checked now: a bad one stops the run before any page is written
        return path
    try:
        read_image(path, mode="RGBA")
        return path
    except ImageError as exc:
        raise HintError(f"{path}: {exc.reason}; expected {HINT_FORMS}") from None


def _hint_for(folder: Path, rel: str) -> Path | None:
    """The hint file of a page in a hint folder: same relative path (or file name), .png or .json."""
    for stem in (Path(rel).with_suffix(""), Path(Path(rel).name).with_suffix("")):
        for ext in (".png", ".json", ".webp"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


@contextmanager
def _stop_between_pages():
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


def _run_units(units, process, args: argparse.Namespace, what: str) -> int:
    """Turn each page of `units` into the images `process(page, rel_name)` returns (page: grey, or RGB
    with `args.wants_rgb`), with progress
    (pages/s, ETA), resume, colour-page pass-through, atomic writes and a summary line; shared by
    `colorize` and `xdog`."""
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
                raise _PageFailed(f"{target}: name too long for the file system ({len(os.fsencode(target.name))} bytes)") from None
            raise _Fatal(f"cannot write {target}: {exc.strerror or exc}; pages finished before are kept") from None

    samples = getattr(args, "samples", 1)
    stats = {"done": 0, "copied": 0, "existing": 0, "failed": 0}
    bar = tqdm(total=sum(count_pages(u) for u in units), unit="page", disable=args.quiet, dynamic_ncols=True,
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
        if not args.force and is_colour_page(rgb):
            for t in targets:
                write(t, data if Path(name).suffix.lower() == t.suffix.lower() else encode_as(rgb, t.name))
            stats["copied"] += 1
            return
        page = rgb if getattr(args, "wants_rgb", False) else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        del rgb
        try:
            outs = process(page, rel)
        except _Fatal:
            raise
        except Exception as exc:  # one bad page never ends the chapter
            report(f"{name}: {type(exc).__name__}: {_one_line(exc)}")
            return
        for t, img in zip(targets, outs):
            write(t, encode_as(img, t.name))
        stats["done"] += 1

    def tick(pages: int = 1) -> None:
        bar.update(pages)
        if stop.is_set():
            raise KeyboardInterrupt

    with _stop_between_pages() as stop:
        try:
            for unit in units:
                if unit.problem:
                    report(f"{unit.source}: {unit.problem}")
                    tick(count_pages(unit))
                    continue
                if unit.kind == "page":
                    targets = [sample_path(unit.target, k, samples) for k in range(samples)]
                    if not args.overwrite and all(t.exists() for t in targets):
                        stats["existing"] += 1
                    else:
                        try:
                            data = read_regular(unit.source, MAX_FILE_BYTES, "page image")
                        except OSError as exc:
                            report(f"{unit.source}: unreadable ({getattr(exc, 'reason', None) or exc.strerror or exc})")
                        else:
                            rel = unit.target.relative_to(args.out) if unit.target.is_relative_to(args.out) else unit.source.name
                            try:
                                one_page(data, str(unit.source), str(rel), targets, in_archive=False)
                            except _PageFailed as exc:
                                report(str(exc))
                    tick()
                    continue
                job = ArchiveJob(unit, samples)
                if not args.overwrite and all(t.exists() for t in job.targets()):
                    stats["existing"] += count_pages(unit)
                    tick(count_pages(unit))
                    continue
                try:
                    zf = job.open()
                except (ValueError, OSError) as exc:
                    report(f"{unit.source}: {_one_line(exc)}")
                    continue
                with zf:
                    for m in job.members:
                        if m.problem:
                            bar.write(f"left out of {unit.target.name}: {m.problem}", file=sys.stderr)
                        if not m.is_page:
                            continue
                        parts = [job.part(m, k) for k in range(samples)]
                        if not args.overwrite and all(p.exists() for p in parts):
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
                                except _PageFailed as exc:
                                    report(str(exc))
                        tick()
                    if not any(m.is_page and not m.problem for m in job.members):
                        report(f"{unit.source}: no readable page in the chapter; nothing written for it")
                        continue
                    try:
                        for why in job.assemble(zf):
                            bar.write(f"left out of {unit.target.name}: {why}", file=sys.stderr)
                    except OSError as exc:
                        raise _Fatal(f"cannot write {unit.target}: {exc.strerror or exc}; pages finished before are kept") from None
        except _Fatal as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: {stats['done'] + stats['copied']} page(s) finished this run are kept under {args.out}; "
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
    print(f"{', '.join(parts)} -> {args.out}")
    return 1 if stats["failed"] else 0


def _default_model(model: str | None) -> str:
    if model:
        return model
    import os

    from mangacolor.config import PROJECT_ROOT

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    from mangacolor.registry import MODEL_NAME, version_by_alias

    for alias in ("champion", "candidate"):
        if version_by_alias(alias) is not None:
            return f"models:/{MODEL_NAME}@{alias}"
    raise FileNotFoundError("no --model given and no registered mangacolor-colorizer (run `mangacolor demo` or pass a bundle folder)")


def _cmd_preset(args: argparse.Namespace) -> int:
    import yaml

    from mangacolor.config import PRESET_DIR, PROJECT_ROOT, load_preset, resolve_preset_path

    preset = load_preset(args.name)
    print(f"# preset: {resolve_preset_path(args.name)}\n# presets folder: {PRESET_DIR}\n# run-time state under: {PROJECT_ROOT} "
          f"(MANGACOLOR_HOME moves it)\n# default MLflow store: sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    print(yaml.safe_dump(preset, sort_keys=False), end="")
    return 0


def _add_io_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="page images, folders of them, or .cbz/.zip chapters")
    p.add_argument("-o", "--out", required=True,
                   help="an image file for one input page (or a .cbz for one chapter); otherwise a folder that "
                        "mirrors the inputs' relative paths, archives written as archives (a trailing / makes it a "
                        "folder). Never an input, a folder holding one, or a folder inside an input folder")
    p.add_argument("--overwrite", action="store_true", help="redo pages whose output already exists (default: skip them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_xdog(args: argparse.Namespace) -> int:
    from mangacolor.inference.pages import InputError, plan_outputs
    from mangacolor.synthetic.xdog import xdog

    try:
        units = plan_outputs(args.inputs, *_out_arg(args))
        config = _xdog_config(args.preset)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return _run_units(units, lambda page, rel: [xdog(page, config)], args, what="drawn as xDoG line art")


def _xdog_config(name: str):
    from mangacolor.synthetic.xdog import PRESETS, XDoGConfig

    if name in PRESETS:
        return XDoGConfig.preset(name)
    from mangacolor.config import load_preset, stage_config
    from mangacolor.stages.synthetic import XDoGStageConfig

    try:
        preset = load_preset(name)
    except (FileNotFoundError, OSError) as exc:
        raise ValueError(f"--preset {name}: not a project preset or an xDoG parameter set "
                         f"(expected demo, paper, a YAML path, or one of {sorted(PRESETS)})") from exc
    return stage_config(preset, "xdog", XDoGStageConfig).xdog_config()


def build_parser(prog: str = "mangacolor") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Manga page colorization via a coloring latent space (Golyadkin & Makarov 2023).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the demo corpus (deterministic from --seed)")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply page counts (bigger benchmark corpora)")
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("preset", help="print a preset as the stages will read it (placeholders filled) and where run-time state goes")
    p.add_argument("name", nargs="?", default="demo", help="demo | paper | a YAML path")
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("match", help="align a black-and-white page with its colour version; prints one JSON object")
    p.add_argument("bw", type=Path)
    p.add_argument("color", type=Path)
    p.add_argument("--threshold", type=float, default=None)
    p.set_defaults(func=_cmd_match)

    p = sub.add_parser("scrape", help="crawl one title of a web gallery (resumable; re-runs download only what changed)")
    p.add_argument("config", type=Path, help="site description YAML, e.g. configs/sites/demo_site.yaml")
    p.add_argument("--title", required=True, help="a title named in the site description's `titles:`")
    p.add_argument("--out", type=Path, default=None,
                   help="crawl folder (default: $MANGACOLOR_WORK_DIR or .cache, then crawl/<site name>); "
                        "the manifest goes to OUT/manifests/<title>/manifest.parquet")
    p.add_argument("--base-url", default=None, help="crawl the site at this address instead of its base_url")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="when another crawl of the site is running, wait this long for it (default: fail at once)")
    p.set_defaults(func=_cmd_scrape)
    p = sub.add_parser("store", help="inspect the artifact store")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    p = store_sub.add_parser("verify", help="check that every manifest's files exist with their sha256; exit 1 if not")
    p.add_argument("--asset", action="append", default=None, help="only this asset (repeatable; default: all)")
    p.add_argument("--root", default=None, help="artifact root: a folder or fsspec URL (default: the preset's, or $MANGACOLOR_ARTIFACT_ROOT)")
    p.add_argument("--preset", default="demo", help="preset whose artifact_root is used when --root is not given")
    p.set_defaults(func=_cmd_store_verify)

    p = sub.add_parser("colorize", help="colorize a page, a folder or chapter archives (CBZ/ZIP)",
                       description="Colour black-and-white pages. Inputs are never written: an -o that is an input, "
                                   "holds one or lies in an input folder is refused. Exit codes: 0 done, 1 some pages "
                                   "failed (reported; the others are written), 2 an input, reference, hint, model or "
                                   "output that cannot be used (or a full disk), 130 interrupted (finished pages are "
                                   "kept; run again to go on).")
    _add_io_arguments(p)
    p.add_argument("--model", default=None, help="bundle folder or MLflow URI (default: models:/mangacolor-colorizer@champion)")
    p.add_argument("--hints", default=None,
                   help="hint image (RGBA: alpha marks the hints, any colour; RGB: every non-white pixel), a .json list of "
                        'points [{"x", "y", "rgb": [r, g, b], "radius"}], or a folder of them named like the pages')
    p.add_argument("--draft-seed", type=int, default=None, help="sample the coloring draft with this seed (style mixing)")
    p.add_argument("--samples", type=int, default=1, help="several sampled colorings per page (NAME_s1.png, ...)")
    p.add_argument("--reference", default=None, help="take the colours from this colour image")
    p.add_argument("--lock-palette", type=int, default=None, metavar="SEED", help="one palette for every page (a fixed mixing vector)")
    p.add_argument("--mode", choices=["exact", "bf16", "fast"], default="exact",
                   help="exact: the page's own size up to 1536 px a side (larger pages: working size + chroma onto "
                        "the original ink); bf16: same in bf16; fast: working size 512")
    p.add_argument("--force", action="store_true", help="also colour pages that are already in colour (default: copied as they are)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_colorize)

    p = sub.add_parser("xdog", help="xDoG line art of colour pages: a page, a folder or chapter archives",
                       description="The synthetic black-and-white pages' first step (paper §IV-A-3). Outputs follow "
                                   "the same rules as `colorize`.")
    _add_io_arguments(p)
    p.add_argument("--preset", default="paper",
                   help="a project preset (demo, paper or a YAML path: its `xdog:` section) or an xDoG parameter set "
                        "(authors2021, alacgan, generic); default paper = authors2021, the paper's [38]")
    p.set_defaults(func=_cmd_xdog, force=True, wants_rgb=True)

    p = sub.add_parser("serve", help="a hint page in the browser: upload a page, paint hints, see colorings side by side")
    p.add_argument("--model", default=None, help="bundle folder or MLflow URI (default: models:/mangacolor-colorizer@champion)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--mode", choices=["exact", "bf16", "fast"], default="exact")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # before or after the page loop, which reports what it kept
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
