"""Benchmark: step-1 colorizer batches per second, built on the main thread vs in DataLoader workers.

A batch is exactly what `train_colorizer` step 1 ("adapt") asks its loader for (`StepData`): four
synthetic pairs and four real black-and-white pages, read from PNG files and decoded, augmented with
the paper preset's Appendix B pipeline (pad, flip, colour jitter, 3% grey inputs) to 768×512 crops,
with the last Appendix D cue stage (hints p=0.5, drafts p=0.8; drafts 256×256 PNGs) sampled on top.
Pages are demo-corpus renderings at 1024×720 written once to a temporary folder. A batch is timed as the
loader delivers it: uint8 pages and sparse hints (`StepBatch`); making it float on the device
(`expand_batch`) is the training loop's work, not counted in either setting.

The machine is shared and its load drifts, so the two settings are measured in interleaved rounds
(0 workers, then N workers, then N, then 0, ...), each on fresh steps with a fresh loader whose
first batch (worker start-up) is not timed; the JSON has the medians over rounds and every round.

It also estimates how many such batches a GPU would consume: the paper-size generator's forward
GFLOPs per 768×512 page (PyTorch's FLOP counter, as benchmarks/colorize.py counts them) × 3 (forward
and backward) × batch 4 is one step's generator work; an H100 SXM at `--peak-tflops` (989 TFLOP/s
dense bf16) × `--utilisation` (40%) sustained runs `gpu_steps_per_s_needed` such steps per second.
Only the generator on the synthetic batch is counted (step 1 also runs it on the real batch, plus
the discriminator and VGG16), so the figure overstates the step rate, i.e. the data rate needed.

    uv run python benchmarks/dataloader.py                     # ~4 min on 2 busy cores
    uv run python benchmarks/dataloader.py --rounds 5 --batches 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mangacolor.config import load_preset
from mangacolor.demo.corpus import render_page
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, count_gflops
from mangacolor.stages.colorization.config import ColorizationConfig
from mangacolor.training.colorizer import BwDataset, PairDataset, StepData, expand_batch
from mangacolor.training.loader import step_loader
from mangacolor.io.pagemap import available_cores

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


def cpu_seconds() -> float:
    """CPU time of this process and of its ended, reaped children (the loader's workers once it is gone)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def batches_per_second(make: StepData, first: int, count: int, workers: int, prefetch: int) -> tuple[float, float]:
    """(batches per second, CPU seconds per batch) of a fresh loader over steps first..first+count.

    Its first batch (worker start-up, the first decode) is drawn before the clock starts; the CPU time
    (main process and workers together, whatever else runs on the machine) covers all count+1 batches."""
    cpu0 = cpu_seconds()
    loader = step_loader(make, first, first + count + 1, torch.device("cpu"), num_workers=workers, prefetch_factor=prefetch)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(count):
        next(it)
    rate = count / (time.perf_counter() - t0)
    del it, loader  # the workers end (and are reaped) here, not during the next measurement
    return rate, (cpu_seconds() - cpu0) / (count + 1)


def interleaved(make: StepData, count: int, rounds: int, workers: int, prefetch: int, say=print) -> dict[int, list]:
    """`rounds` rounds of (0 workers, `workers` workers), each round on new steps, the order alternating
    (A B, B A, ...) so that a change in the machine's load hits both settings alike.
    {0: [(rate, cpu), ...], workers: [...]}."""
    runs: dict[int, list] = {0: [], workers: []}
    first = 3
    for r in range(rounds):
        for n in ((0, workers) if r % 2 == 0 else (workers, 0)):
            runs[n].append(batches_per_second(make, first, count, n, prefetch))
            first += count + 1
        (x, cx), (y, cy) = runs[0][-1], runs[workers][-1]
        say(f"round {r + 1}/{rounds}: 0 workers {x:.3f} batches/s ({cx:.2f} CPU s/batch), {workers} workers "
            f"{y:.3f} batches/s ({cy:.2f} CPU s/batch): {y / x:.2f}x")
    return runs


def generator_gflops(h: int = 768, w: int = 512) -> float:
    try:
        with torch.device("meta"):
            generator = ColorizationGenerator(ColorizerConfig())
    except Exception:  # noqa: BLE001 - some init does not run on meta: count on the CPU
        generator = ColorizationGenerator(ColorizerConfig())
    return count_gflops(generator, h, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=16, help="batches timed per setting and round (after one warm-up batch)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both settings; the medians are reported")
    ap.add_argument("--workers", type=int, default=available_cores(),
                    help="loader workers of the second setting (default: the cores available; the benchmark's main "
                         "process only receives batches, where a training loop would keep one core for itself)")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16 peak")
    ap.add_argument("--utilisation", type=float, default=0.4, help="sustained fraction of the peak")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.batches < 1 or args.rounds < 1 or args.workers < 1:
        ap.error("--batches, --rounds and --workers must be 1 or more")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    section = ColorizationConfig(**load_preset("paper")["colorizer"])
    cfg = section.train_config("step1", "adapt")
    batch = cfg.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        synthetic, real = write_pages(Path(tmp), args.pages)
        # steps_per_epoch 1 and steps from 3 on: epoch >= 4, the last (heaviest) cue stage.
        make = StepData(cfg, synthetic, real, batch, steps_per_epoch=1, augment=section.augmentation())
        sample = make(3)
        assert sample.pairs["bw"].shape == (batch, 1, 768, 512) and sample.real["bw"].shape == (batch, 1, 768, 512)
        shipped = len(pickle.dumps(sample)) / 1e6
        expanded = len(pickle.dumps(expand_batch(sample, torch.device("cpu")))) / 1e6
        print(f"step-1 batch: {batch} pairs + {batch} real pages, 768x512 crops of {PAGE_HW[0]}x{PAGE_HW[1]} PNG pages, "
              f"hints {int(sample.cues.has_hint.sum())}/{batch}, drafts {int(sample.cues.has_draft.sum())}/{batch} in the "
              f"first batch; a worker ships {shipped:.1f} MB (uint8 pages, sparse hints), {expanded:.1f} MB once expanded "
              f"to float on the device")
        runs = interleaved(make, args.batches, args.rounds, args.workers, args.prefetch)
    serial, parallel = [r for r, _ in runs[0]], [r for r, _ in runs[args.workers]]
    x, y = statistics.median(serial), statistics.median(parallel)
    ratio = statistics.median(b / a for a, b in zip(serial, parallel))
    cpu_x, cpu_y = (statistics.median(c for _, c in runs[n]) for n in (0, args.workers))
    print(f"median of {args.rounds} rounds x {args.batches} batches: 0 workers (main thread) {x:.2f} batches/s, "
          f"{args.workers} workers {y:.2f} batches/s ({y / x:.2f}x; median of the per-round ratios {ratio:.2f}x)")
    print(f"CPU per batch (main process + workers, independent of the machine's load): {cpu_x:.2f} s on the main "
          f"thread, {cpu_y:.2f} s with {args.workers} workers; with {args.workers} idle cores the workers could deliver "
          f"up to {args.workers * cpu_x / cpu_y:.2f}x")

    gflops = generator_gflops()
    sustained = args.peak_tflops * args.utilisation
    z = sustained * 1e12 / (3 * gflops * 1e9 * batch)
    print(f"paper generator: {gflops:.0f} GFLOPs forward per 768x512 page; a step at batch {batch} (forward + backward, "
          f"x3) = {3 * gflops * batch / 1e3:.2f} TFLOP; assumed H100 SXM at {args.peak_tflops:.0f} TFLOP/s (dense bf16) x "
          f"{args.utilisation:.0%} utilisation = {sustained:.0f} TFLOP/s sustained -> {z:.1f} steps/s needed, i.e. "
          f"{z / max(y, 1e-9):.1f}x what {args.workers} workers deliver here ({z / y * args.workers:.0f} such workers)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "workers": args.workers, "batches_per_s_0": round(x, 4), "batches_per_s_workers": round(y, 4),
            "gpu_steps_per_s_needed": round(z, 3), "ratio": round(y / x, 3), "ratio_median_per_round": round(ratio, 3),
            "rounds_batches_per_s_0": [round(v, 4) for v in serial],
            "rounds_batches_per_s_workers": [round(v, 4) for v in parallel],
            "batches_per_round": args.batches, "cpu_s_per_batch_0": round(cpu_x, 3),
            "cpu_s_per_batch_workers": round(cpu_y, 3), "shipped_mb_per_batch": round(shipped, 2),
            "expanded_mb_per_batch": round(expanded, 2), "generator_gflops_per_page": round(gflops, 1),
            "assumed_tflops_peak": args.peak_tflops, "assumed_utilisation": args.utilisation,
            "assumed_tflops_sustained": sustained}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
