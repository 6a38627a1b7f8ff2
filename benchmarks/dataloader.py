"""Benchmark: step-1 colorizer batches per second, built on the main thread vs in DataLoader workers.

A batch is exactly what `train_colorizer` step 1 ("adapt") asks its loader for (`StepData`): four
synthetic pairs and four real black-and-white pages, read from PNG files and decoded, augmented with
the paper preset's Appendix B pipeline (pad, flip, colour jitter, 3% grey inputs) to 768×512 crops,
with the last Appendix D cue stage (hints p=0.5, drafts p=0.8; drafts 256×256 PNGs) sampled on top.
Pages are demo-corpus renderings at 1024×720 written once to a temporary folder.

It also estimates how many such batches a GPU would consume: the paper-size generator's forward
GFLOPs per 768×512 page (PyTorch's FLOP counter, as benchmarks/colorize.py counts them) × 3 (forward
and backward) × batch 4 is one step's generator work; an H100 SXM at `--peak-tflops` (989 TFLOP/s
dense bf16) × `--utilisation` (40%) sustained runs `gpu_steps_per_s_needed` such steps per second.
Only the generator on the synthetic batch is counted (step 1 also runs it on the real batch, plus
the discriminator and VGG16), so the figure overstates the step rate, i.e. the data rate needed.

    uv run python benchmarks/dataloader.py                     # ~2 min on 2 busy cores
    uv run python benchmarks/dataloader.py --batches 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mangacolor.config import load_preset
from mangacolor.demo.corpus import render_page
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, count_gflops
from mangacolor.training.colorization_stages import ColorizationConfig
from mangacolor.training.colorizer import BwDataset, PairDataset, StepData
from mangacolor.training.loader import available_cores, step_loader

PAGE_HW = (1024, 720)


def write_pages(folder: Path, n: int, seed: int = 0) -> tuple[PairDataset, BwDataset]:
    """n synthetic pairs (bw, colour, draft) and n real black-and-white pages as PNG files."""
    rng = np.random.default_rng(seed)
    bw, colour, drafts, real = [], [], [], []
    for i in range(n):
        page = render_page(rng, "modern" if i % 2 else "classic", size=PAGE_HW)
        other = render_page(rng, "classic" if i % 2 else "modern", size=PAGE_HW)
        paths = [folder / f"{i}_bw.png", folder / f"{i}_color.png", folder / f"{i}_draft.png", folder / f"{i}_real.png"]
        cv2.imwrite(str(paths[0]), page.bw)
        cv2.imwrite(str(paths[1]), cv2.cvtColor(page.color, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(paths[2]), cv2.resize(cv2.cvtColor(page.color, cv2.COLOR_RGB2BGR), (256, 256), interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(paths[3]), other.bw)
        bw.append(paths[0]), colour.append(paths[1]), drafts.append(paths[2]), real.append(paths[3])
    return PairDataset(bw, colour, drafts), BwDataset(real)


def batches_per_second(make: StepData, first: int, count: int, workers: int, prefetch: int) -> float:
    loader = step_loader(make, first, first + count + 1, torch.device("cpu"), num_workers=workers, prefetch_factor=prefetch)
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not counted
    t0 = time.perf_counter()
    for _ in range(count):
        next(it)
    return count / (time.perf_counter() - t0)


def generator_gflops(h: int = 768, w: int = 512) -> float:
    try:
        with torch.device("meta"):
            generator = ColorizationGenerator(ColorizerConfig())
    except Exception:  # noqa: BLE001 - some init does not run on meta: count on the CPU
        generator = ColorizationGenerator(ColorizerConfig())
    return count_gflops(generator, h, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30, help="batches timed per setting (after one warm-up batch)")
    ap.add_argument("--workers", type=int, default=available_cores(),
                    help="loader workers of the second setting (default: the cores available; the benchmark's main "
                         "process only receives batches, where a training loop would keep one core for itself)")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16 peak")
    ap.add_argument("--utilisation", type=float, default=0.4, help="sustained fraction of the peak")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    section = ColorizationConfig(**load_preset("paper")["colorizer"])
    cfg = section.train_config("step1", "adapt")
    batch = cfg.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        synthetic, real = write_pages(Path(tmp), args.pages)
        # steps_per_epoch 1 and steps from 3 on: epoch >= 4, the last (heaviest) cue stage.
        make = StepData(cfg, synthetic, real, batch, steps_per_epoch=1, augment=section.augmentation())
        pairs, cues, real_batch, _ = make(3)
        assert pairs["bw"].shape == (batch, 1, 768, 512) and real_batch["bw"].shape == (batch, 1, 768, 512), pairs["bw"].shape
        print(f"step-1 batch: {batch} pairs + {batch} real pages, 768x512 crops of {PAGE_HW[0]}x{PAGE_HW[1]} PNG pages, "
              f"hints {int(cues.has_hint.sum())}/{batch}, drafts {int(cues.has_draft.sum())}/{batch} in the first batch")
        x = batches_per_second(make, 3, args.batches, 0, args.prefetch)
        print(f"0 workers (main thread): {x:.2f} batches/s")
        y = batches_per_second(make, 3, args.batches, args.workers, args.prefetch)
        print(f"{args.workers} workers: {y:.2f} batches/s ({y / x:.2f}x)")

    gflops = generator_gflops()
    sustained = args.peak_tflops * args.utilisation
    z = sustained * 1e12 / (3 * gflops * 1e9 * batch)
    print(f"paper generator: {gflops:.0f} GFLOPs forward per 768x512 page; a step at batch {batch} (forward + backward, "
          f"x3) = {3 * gflops * batch / 1e3:.2f} TFLOP; H100 at {args.peak_tflops:.0f} TFLOP/s x {args.utilisation:.0%} = "
          f"{sustained:.0f} TFLOP/s sustained -> {z:.1f} steps/s needed, i.e. {z / max(y, 1e-9):.1f}x what {args.workers} "
          f"workers deliver here ({z / y * args.workers:.0f} such workers)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"workers": args.workers, "batches_per_s_0": round(x, 4), "batches_per_s_workers": round(y, 4),
                                         "gpu_steps_per_s_needed": round(z, 3), "generator_gflops_per_page": round(gflops, 1),
                                         "assumed_tflops_sustained": sustained}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
