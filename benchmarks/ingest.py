"""Ingest and matching throughput on this machine: pages/s for ingest, pairs/s for matching.

    uv run python benchmarks/ingest.py [--scale 1.0] [--repeat 3]

Generates a demo corpus (scale multiplies page counts), ingests every colour and black-and-white
title through the same code the assets run (decode, hash, dHash, quarantine, write to a local
store), then matches the re-scanned pairs. Prints medians over --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from mangacolor.config import load_preset
from mangacolor.demo.corpus import generate_demo_corpus
from mangacolor.data.ingest import ingest_items
from mangacolor.data.matching import match_pages
from mangacolor.data.sources import iter_items, preset_sources, titles_by_role
from mangacolor.io.images import read_image
from mangacolor.io.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mangacolor-bench-"))
    generate_demo_corpus(work / "demo_data", seed=0, scale=args.scale)
    preset = load_preset("demo", overrides={"demo_data": str(work / "demo_data")}, demo_data=str(work / "demo_data"))
    srcs = preset_sources(preset)

    ingest_rates = []
    for r in range(args.repeat):
        store = Store(work / f"artifacts{r}")
        n, t = 0, time.perf_counter()
        for role in ("color", "bw"):
            for title, cfgs in titles_by_role(srcs, role).items():
                w = store.begin(f"{role}_pages", title)
                s = ingest_items([i for c in cfgs for i in iter_items(c, title)], w)
                w.commit()
                n += s.ok + s.quarantined
        ingest_rates.append(n / (time.perf_counter() - t))

    pairs_dir = work / "demo_data" / "pairs"
    pages = sorted(p.stem for p in (pairs_dir / "bw").glob("*/*.jpg"))
    title = next((pairs_dir / "bw").iterdir()).name
    loaded = [(read_image(pairs_dir / "bw" / title / f"{p}.jpg", "L"), read_image(pairs_dir / "color" / title / f"{p}.png")) for p in pages]
    match_rates = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        for bw, color in loaded:
            match_pages(bw, color)
        match_rates.append(len(loaded) / (time.perf_counter() - t))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"ingest:   {statistics.median(ingest_rates):.1f} pages/s (median of {args.repeat}, {n} pages, demo size)")
    print(f"matching: {statistics.median(match_rates):.2f} pairs/s (median of {args.repeat}, {len(loaded)} pairs, "
          f"{loaded[0][0].shape[1]}x{loaded[0][0].shape[0]} px)")


if __name__ == "__main__":
    main()
