"""The `mangacolor` command for people who use the library and the trained model.

Commands here need no orchestrator; `mangacolor demo` and `mangacolor ui` (in `pipelines/cli.py`)
drive the Dagster graph and are added to the same command line by the project's entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from mangacolor.data.demo_corpus import generate_demo_corpus

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
    return scrape_cli(args.config, args.title, out, progress=not args.quiet, base_url=args.base_url)


def _cmd_colorize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mangacolor.inference.bundle import ModelBundle
    from mangacolor.inference.colorize import PRESETS
    from mangacolor.inference.pages import iter_input_pages, pack_cbz
    from mangacolor.io.images import encode_png, read_image

    try:
        bundle = ModelBundle.load(_default_model(args.model), device=args.device)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = PRESETS[args.mode]
    reference = read_image(args.reference) if args.reference else None
    hints = Path(args.hints) if args.hints else None
    lock = None
    if args.lock_palette is not None and bundle.drafting is not None:
        from mangacolor.drafting.sampling import PaletteLock

        # One CLS vector for every page: the chapter keeps one palette (paper §III-A).
        lock = PaletteLock.from_seed(bundle.drafting, args.lock_palette)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pages = list(iter_input_pages([Path(p) for p in args.inputs]))
    written, skipped, groups = 0, 0, set()
    for item in tqdm(pages, desc="colorize", unit="page", disable=args.quiet):
        if item.page is None:
            print(f"skipped {item.name}: {item.problem}", file=sys.stderr)
            skipped += 1
            continue
        hint = None
        if hints is not None:
            hint_file = hints if hints.is_file() else hints / f"{item.name}.png"
            if hint_file.exists():
                hint = read_image(hint_file.read_bytes(), mode=None)
                hint = _as_rgba(hint)
        seed = args.draft_seed
        drafts = bundle.drafts(item.page, n=args.samples, seed=seed if (seed is not None or args.samples > 1) else None,
                               reference=reference, lock=lock)
        target_dir = out / item.group if item.group else out
        target_dir.mkdir(parents=True, exist_ok=True)
        if item.group:
            groups.add(item.group)
        for k, draft in enumerate(drafts):
            suffix = f"_s{k + 1}" if len(drafts) > 1 else ""
            result = bundle.colorize(item.page, hint=hint, draft=draft, options=options)
            target = target_dir / f"{item.name}{suffix}.png"
            tmp = target.with_suffix(".png.tmp")
            tmp.write_bytes(encode_png(result))
            tmp.replace(target)
            written += 1
    for g in sorted(groups):
        pack_cbz(out / g, out / f"{g}.cbz")
    print(f"wrote {written} coloured page(s) to {out}" + (f", skipped {skipped}" if skipped else ""))
    return 0 if written else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from mangacolor.serve import serve

    try:
        serve(args.model, host=args.host, port=args.port, device=args.device, mode=args.mode)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _as_rgba(img):
    import numpy as np

    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 3:
        # An RGB hint image: white means "no hint", everything else is a colour cue.
        mask = (img.min(axis=2) < 250).astype(np.uint8) * 255
        img = np.dstack([img, mask])
    return img


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


def build_parser(prog: str = "mangacolor") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Manga page colorization via a coloring latent space (Golyadkin & Makarov 2023).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the demo corpus (deterministic from --seed)")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply page counts (bigger benchmark corpora)")
    p.set_defaults(func=_cmd_demo_data)

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
    p.set_defaults(func=_cmd_scrape)
    p = sub.add_parser("colorize", help="colorize a page, a folder or a chapter archive (CBZ/ZIP)")
    p.add_argument("inputs", nargs="+", type=Path, help="page images, folders or .cbz/.zip chapters")
    p.add_argument("-o", "--out", required=True, type=Path)
    p.add_argument("--model", default=None, help="bundle folder or MLflow URI (default: models:/mangacolor-colorizer@champion)")
    p.add_argument("--hints", default=None, help="RGBA (alpha = where) or RGB (non-white = where) hint image, or a folder of them by page name")
    p.add_argument("--draft-seed", type=int, default=None, help="sample the coloring draft with this seed (style mixing)")
    p.add_argument("--samples", type=int, default=1, help="several sampled colorings per page")
    p.add_argument("--reference", default=None, help="take the colours from this colour image")
    p.add_argument("--lock-palette", type=int, default=None, metavar="SEED", help="one palette for every page (a fixed mixing vector)")
    p.add_argument("--mode", choices=["exact", "bf16", "fast"], default="exact", help="fast: working size + chroma upsampling onto the original ink")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_colorize)

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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
