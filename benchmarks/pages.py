"""Benchmark: pages per second of the per-page drafting stages, read in 0 vs N DataLoader workers,
through the networks at batch 1 vs 8 (issue 13 point 1).

- drafts: `page_drafts_stage` (bw_page_drafts): a black-and-white page PNG read and resized to the
  encoder's 256x256 in the workers, pSp encoder + StyleGAN2 synthesis on batches, the draft PNG
  written by the output thread;
- pseudolabels: `make_pseudolabels`: each page read and brought to its working size in the workers,
  colorized by two snapshots (3 colorings: 2 automatic, each inverted into W+ for its draft, and one
  from a mixed draft), every label and draft PNG written by the output thread.

Pages are demo-corpus renderings (`--page` H W, default 1024x720) written once into a temporary
store. Networks are randomly initialised, at `--scale small` (StyleGAN2 64 px, tiny encoder and
colorizer: the demo's sizes, the CPU's time goes to reading and writing as much as to the networks)
or `--scale paper` (StyleGAN2 256 px config-f, pSp IR-SE-50, the paper's colorizer: slow on a CPU).
Each setting is timed over `--pages` pages after one warm-up page of the same stage. Besides pages/s
(wall clock) it prints the CPU seconds per page of this process and its workers together: on a
shared machine the wall clock mostly measures the other users, the CPU time much less.

    uv run python benchmarks/pages.py                          # small networks, 0 vs cores workers
    uv run python benchmarks/pages.py --pages 32 --json out.json
    uv run python benchmarks/pages.py --scale paper --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mangacolor.demo.corpus import render_page
from mangacolor.device import DeviceSpec
from mangacolor.stages.drafting import page_drafts_stage
from mangacolor.io.images import encode_png
from mangacolor.io.store import Store
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.models.stylegan2 import StyleGAN2Config
from mangacolor.stages.colorization.config import PseudolabelConfig
from mangacolor.stages.colorization.pseudolabels import make_pseudolabels
from mangacolor.io.weights import save_weights
from mangacolor.io.pagemap import available_cores


def write_pages(store: Store, n: int, hw: tuple[int, int]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        uri = store.path("bw_pages", "t", f"{i:04d}.png")
        store.write_bytes(uri, encode_png(render_page(rng, "modern" if i % 2 else "classic", size=hw).bw))
        rows.append({"id": f"t/{i:04d}", "title": "t", "page": f"{i:04d}.png", "uri": uri})
    return pd.DataFrame(rows)


def networks(scale: str, device: torch.device, folder: Path):
    torch.manual_seed(0)
    if scale == "paper":
        gan, encoder, colorizer = StyleGAN2Config(), EncoderConfig(), ColorizerConfig()
    else:
        gan = StyleGAN2Config(size=64, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=64)
        encoder, colorizer = EncoderConfig(input_size=64, widths=(8, 16, 32, 64), units=(1, 1, 1, 1), se_reduction=4), ColorizerConfig.tiny()
    g = gan.generator()
    latent = g.mean_latent(256, torch.Generator().manual_seed(0))
    drafting = PSp(EncoderConfig(**{**encoder.__dict__, "input_nc": 1}), g, latent).to(device).eval()
    inversion = PSp(EncoderConfig(**{**encoder.__dict__, "input_nc": 3}), g, latent).to(device).eval().requires_grad_(False)
    snapshots = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        snapshots.append((seed, save_weights(folder / f"snapshot{seed}.safetensors", build_generator(colorizer),
                                             {"generator_config": colorizer.to_dict()})))
    return drafting, inversion, snapshots


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, reaped at the end of a stage)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pages_per_second(run, rows: pd.DataFrame) -> tuple[float, float]:
    """(pages/s wall clock, CPU seconds per page over all processes) of `run` on rows[1:], after a warm-up on rows[:1]."""
    run(rows.iloc[:1], "warm-up")
    t0, c0 = time.perf_counter(), cpu_seconds()
    run(rows.iloc[1:], "timed")
    n = len(rows) - 1
    return n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=17, help="pages per setting (the first one warms up)")
    ap.add_argument("--workers", type=int, default=available_cores(), help="workers of the second setting (default: the cores)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--page", type=int, nargs=2, default=(1024, 720), metavar=("H", "W"))
    ap.add_argument("--long-side", type=int, default=512, help="pseudolabels' working long side (the paper's canvas is 768x512)")
    ap.add_argument("--scale", choices=("small", "paper"), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stages", nargs="+", default=["drafts", "pseudolabels"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.getLogger(build_generator.__module__).setLevel(logging.ERROR)  # random networks on purpose: speed only
    device = torch.device(args.device)
    spec = DeviceSpec(device, None, seed=0)
    out = {"pages": args.pages - 1, "workers": args.workers, "batch": args.batch, "scale": args.scale, "device": str(device),
           "page_hw": list(args.page), "cores": available_cores()}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        rows = write_pages(store, args.pages, tuple(args.page))
        drafting, inversion, snapshots = networks(args.scale, device, Path(tmp))
        size = drafting.encoder.config.input_size

        def drafts(workers: int, batch: int):
            def run(part, name):
                writer = store.begin("bw_page_drafts", f"{name}-{workers}-{batch}")
                page_drafts_stage(part, store, writer, drafting, spec, size, batch, num_workers=workers)
                writer.abort()
            return run

        def pseudolabels(workers: int, batch: int):
            cfg = PseudolabelConfig(colorings_per_page=3, long_side=args.long_side, batch_size=batch, num_workers=workers)

            def run(part, name):
                writer = store.begin("pseudolabels", f"{name}-{workers}-{batch}")
                make_pseudolabels(store, part, snapshots, writer, cfg, device, inversion, autocast=spec.autocast)
                writer.abort()
            return run

        for stage in args.stages:
            make = {"drafts": drafts, "pseudolabels": pseudolabels}[stage]
            figures, cpu_s = {}, {}
            for workers in (0, args.workers):
                for batch in (1, args.batch):
                    rate, cpu = pages_per_second(make(workers, batch), rows)
                    figures[f"w{workers}_b{batch}"], cpu_s[f"w{workers}_b{batch}"] = rate, cpu
                    print(f"{stage}: {workers} workers, batch {batch}: {rate:.2f} pages/s ({cpu:.2f} CPU s per page, "
                          f"all processes)", flush=True)
            base = figures["w0_b1"]
            best = max(figures, key=figures.get)
            print(f"{stage}: best {best} = {figures[best] / base:.2f}x the 0-worker batch-1 rate")
            out[stage] = {k: round(v, 3) for k, v in figures.items()}
            out[f"{stage}_cpu_s_per_page"] = {k: round(v, 3) for k, v in cpu_s.items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
