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
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
