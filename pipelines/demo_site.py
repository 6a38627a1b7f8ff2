"""The demo's web source: the generated gallery of configs/sites/demo_site.yaml, built and served on 127.0.0.1.

`mangacolor demo` wraps its run in `demo_site(...)`, so `scraped_pages` crawls a real HTTP server
(robots.txt, ETags, 304s) without the internet. The site's pages are colour manga pages drawn by
the demo corpus renderer, deterministic from the seed, so they are ingested like any colour title.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mangacolor.config import PRESET_DIR
from mangacolor.demo import sitegen
from mangacolor.data.scraper import load_site_config
from mangacolor.data.web import web_titles

DEMO_SITE_YAML = PRESET_DIR / "sites" / "demo_site.yaml"


def build_demo_site(root_dir: str | Path, site_yaml: str | Path = DEMO_SITE_YAML, pages_per_title: int = 6,
                    seed: int = 0, size: tuple[int, int] | None = None) -> dict[str, list[bytes]]:
    """Write the static gallery for every title of `site_yaml`; returns the pages served per title."""
    cfg = load_site_config(site_yaml)
    pages = sitegen.demo_color_pages(list(cfg.titles), pages_per_title, seed, size)
    starts = sitegen.build_site(root_dir, pages)
    for title, start in starts.items():
        if cfg.start_url(title) != cfg.base_url + start:
            raise ValueError(f"{site_yaml}: titles[{title!r}] must be {start!r} to match the generated site")
    return pages


@contextmanager
def demo_site(tmp_dir: str | Path, site_yaml: str | Path = DEMO_SITE_YAML, pages_per_title: int = 6,
              seed: int = 0) -> Iterator[str]:
    """Build the gallery in `tmp_dir` and serve it until the block ends; yields the base URL.

    127.0.0.1 is added to NO_PROXY meanwhile, so a configured HTTP proxy never sees the crawl.
    """
    build_demo_site(tmp_dir, site_yaml, pages_per_title, seed)
    saved = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    for k, v in saved.items():
        os.environ[k] = ",".join(filter(None, [v, "127.0.0.1"]))
    try:
        with sitegen.serve_site(tmp_dir) as base_url:
            yield base_url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def web_titles_from_preset(preset: dict) -> list[str]:
    """The `web_titles` partition keys of the preset's web sources."""
    return sorted(web_titles(preset))


def scrape_run_config(base_url: str) -> dict:
    """Run config that points `scraped_pages` at the served demo site."""
    return {"ops": {"scraped_pages": {"config": {"base_url": base_url}}}}
