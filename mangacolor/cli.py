"""The `mangacolor` command for people who use the library and the trained model.

Commands here need no orchestrator; `mangacolor demo` and `mangacolor ui` (in `pipelines/cli.py`)
drive the Dagster graph and are added to the same command line by the project's entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    from mangacolor.inference.batch import BatchOptions, StopRun, one_line, run_units
    from mangacolor.inference.hints import HintError, hint_for, hint_source
    from mangacolor.inference.pages import InputError, plan_outputs, read_page

    try:
        if args.samples < 1:
            raise InputError(f"--samples must be at least 1, got {args.samples}")
        units = plan_outputs(args.inputs, *_out_arg(args), samples=args.samples)
        reference = read_page(args.reference, "reference", mode="RGB") if args.reference else None
        hints = hint_source(args.hints)
    except (InputError, HintError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mangacolor.inference.api import Colorizer  # torch: only once the inputs are known to be usable

    try:
        colorizer = Colorizer.load(args.model, args.device, args.mode)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    lock = None
    if args.lock_palette is not None and colorizer.bundle.drafting is not None:
        from mangacolor.drafting.sampling import PaletteLock

        # One CLS vector for every page: the chapter keeps one palette (paper §III-A).
        lock = PaletteLock.from_seed(colorizer.bundle.drafting, args.lock_palette)

    def colour(grey, rel: str):
        hint = hint_for(hints, rel) if hints is not None and hints.is_dir() else hints
        try:
            out = colorizer.colorize(grey, hints=hint, reference=reference, samples=args.samples,
                                     seed=args.draft_seed, lock=lock)
        except InputError as exc:
            raise StopRun(str(exc)) from None
        return out if isinstance(out, list) else [out]

    return run_units(units, colour, BatchOptions(args.out, args.samples, args.overwrite, args.force, args.quiet), "coloured")


def _cmd_serve(args: argparse.Namespace) -> int:
    from mangacolor.serve import serve

    try:
        serve(args.model, host=args.host, port=args.port, device=args.device, mode=args.mode)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _out_arg(args: argparse.Namespace) -> tuple[Path, bool]:
    """`-o` as a Path, and whether it was written as a folder (`out.png/`: the slash a Path drops)."""
    raw = str(args.out)
    args.out = Path(raw)
    return args.out, raw.endswith(("/", os.sep))


def _cmd_import_weights(args: argparse.Namespace) -> int:
    """Exit codes: 0 bundle written (and registered with --register), 2 a file that is not what was expected (one line)."""
    wanted = {"GENERATOR_FILE": "generator.zip", "--extractor": "extractor.pth (or generator.zip)", "--denoiser": "net_rgb.pth"}
    for flag, path in (("GENERATOR_FILE", args.generator), ("--extractor", args.extractor), ("--denoiser", args.denoiser)):
        if path is not None and not Path(path).expanduser().is_file():  # checked before torch loads
            print(f"error: {flag} {path}: no such file; expected the 2021 release's {wanted[flag]}, linked from the README "
                  "of https://github.com/qweasdd/manga-colorization-v2 (README § Colour real pages now)", file=sys.stderr)
            return 2
    from mangacolor.inference.imported import import_mc2, register_imported

    try:
        out = import_mc2(args.generator, args.out, extractor=args.extractor, denoiser=args.denoiser,
                         size=args.size or None, denoise_sigma=args.denoise_sigma)
    except ValueError as exc:  # WeightsFileError included
        from mangacolor.inference.batch import one_line

        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"bundle written: {out} (use it with `mangacolor colorize --model {out}` or `mangacolor serve --model {out}`)")
    if args.register:
        from mangacolor.config import PROJECT_ROOT

        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
        version = register_imported(out)
        print(f"registered: models:/{version.name}/{version.version} (no alias: never the main model's candidate or champion)")
    return 0


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
    from mangacolor.inference.batch import BatchOptions, one_line, run_units
    from mangacolor.inference.pages import InputError, plan_outputs
    from mangacolor.synthetic.xdog import xdog

    try:
        units = plan_outputs(args.inputs, *_out_arg(args))
        config = _xdog_config(args.preset)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    options = BatchOptions(args.out, overwrite=args.overwrite, force=args.force, quiet=args.quiet, wants_rgb=args.wants_rgb)
    return run_units(units, lambda page, rel: [xdog(page, config)], options, "drawn as xDoG line art")


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
    p.add_argument("--model", default=None, help="bundle folder or MLflow URI (default: the registry's champion, else its candidate)")
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

    p = sub.add_parser("import-weights", help="a model bundle from the authors' 2021 release (manga-colorization-v2)",
                       description="Turn the 2021 release's generator.zip into a bundle that colorize, serve, the Python API "
                                   "and the registry use (README § Colour real pages now). Exit codes: 0 written, 2 a file "
                                   "that is not what was expected (one line naming what differs).")
    p.add_argument("source", choices=["mc2"], help="mc2: manga-colorization-v2 (Golyadkin & Makarov, 2021)")
    p.add_argument("generator", metavar="GENERATOR_FILE", help="the release's generator.zip (a torch.save'd state dict)")
    p.add_argument("--extractor", default=None, metavar="FILE",
                   help="the release's extractor.pth (line-art tag-prediction SE-ResNeXt-50): kept as encoder_init.safetensors "
                        "for training (colorizer.encoder_init)")
    p.add_argument("--denoiser", default=None, metavar="FILE", help="the release's FFDNet net_rgb.pth: pages are denoised first, as the release does")
    p.add_argument("--denoise-sigma", type=float, default=25.0, help="the denoiser's noise level (of 255; the release's 25)")
    p.add_argument("--size", type=int, default=576,
                   help="colour at the release's size: portrait pages SIZE wide, landscape 1.5×SIZE high, colours then carried "
                        "onto the page's own ink at its own size (default 576, the release's; 0: the page's own size)")
    p.add_argument("--register", action="store_true", help="also register it in MLflow as mangacolor-colorizer-mc2 (no alias)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="BUNDLE_DIR")
    p.set_defaults(func=_cmd_import_weights)

    p = sub.add_parser("serve", help="a hint page in the browser: upload a page, paint hints, see colorings side by side")
    p.add_argument("--model", default=None, help="bundle folder or MLflow URI (default: the registry's champion, else its candidate)")
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
