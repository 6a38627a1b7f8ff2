"""Benchmark: one 512×768 page through the colorization generator on this machine's CPU.

Prints, for the paper-size generator (our default layout) and the authors' 2021 layout:
parameters, GFLOPs (PyTorch's FLOP counter), the median time per page of each inference mode,
its achieved GFLOP/s, and its quality cost against our fp32 full-size output of the same model
(PSNR and mean CIELAB ΔE76); next to it, a plain 2048² fp32 matmul's GFLOP/s measured in the same run.

The model is briefly trained first (`--train-steps`, MAE on 192×128 crops of 512×768 demo-corpus
pages, whose black-and-white side has ink and screentone; random-init encoder) so that its output
is a colouring rather than init noise. The quality figures are a proxy, not FID (FID needs the
trained model and the holdout: the fid_report asset); the error against the page's true colours is
printed too, but a briefly trained model is far from them in every mode.

Timing: every mode runs once per round and rounds are interleaved, per thread count (default 1
and all cores). On a machine shared with other jobs the one-thread figures are the stable ones: a
second OpenMP thread stalls whenever the other core is busy.

    uv run python benchmarks/colorize.py                 # full run: ~15 min on 2 busy cores
    uv run python benchmarks/colorize.py --train-steps 0 --runs 3 --threads 1 --skip-2021

Large pages (`--page-size 6000x4000`, width × height): a demo page scaled to that size is written as a
PNG and coloured by the real command (`mangacolor colorize PAGE -o OUT.png`, paper-size generator,
random-init weights: memory and time do not depend on the weights) in a child process; prints the
child's peak RSS and seconds (target: peak RSS ≤ 4 GiB).

Quality cost of the large-page path (`--transfer-cost`): one mid-size demo page coloured by the
briefly trained paper-size generator at its own size, and through the large-page path at smaller
working sizes (colour at the working size, chroma moved onto the original ink); prints ΔE76 and PSNR
of each against the full-size output.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import cv2
import numpy as np
import torch

from mangacolor.demo.corpus import render_page
from mangacolor.data.canvas import working_size
from mangacolor.inference.colorize import InferenceOptions, colorize_pages, prepare_generator
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, count_gflops
from mangacolor.io.weights import count_parameters


def demo_page(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A demo-corpus page: (black-and-white with ink and screentone, its colour version)."""
    page = render_page(rng, size=(h, w))
    return page.bw, page.color


def to_batch(arrays: list[np.ndarray]) -> torch.Tensor:
    t = torch.from_numpy(np.stack(arrays)).float().div(127.5).sub(1)
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


def brief_training(generator: torch.nn.Module, steps: int, h: int, w: int, seed: int = 0) -> float:
    """MAE-only Adam steps, batch 2, on random 192×128 crops of h×w demo pages (crops, not downscaled
    pages: ink and screentone keep the scale they have on the page benchmarked); returns the last MAE."""
    rng = np.random.default_rng(seed)
    book = [demo_page(rng, h, w) for _ in range(8)]
    opt = torch.optim.Adam(generator.parameters(), lr=3e-4, betas=(0.5, 0.999))
    generator.train()
    loss = torch.tensor(float("nan"))
    for i in range(steps):
        crops = []
        for _ in range(2):
            grey, colour = book[int(rng.integers(len(book)))]
            y, x = int(rng.integers(0, h - 192 + 1)), int(rng.integers(0, w - 128 + 1))
            crops.append((grey[y : y + 192, x : x + 128], colour[y : y + 192, x : x + 128]))
        bw, color = to_batch([c[0] for c in crops]), to_batch([c[1] for c in crops])
        zeros = lambda c: bw.new_zeros(bw.shape[0], c, *bw.shape[-2:])
        loss = (generator(bw, zeros(4), zeros(3)) - color).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % 25 == 0:
            print(f"  brief training step {i + 1}/{steps}: MAE {loss.item():.3f}", flush=True)
    return float(loss)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).pow(2).mean().item()  # [-1, 1] -> [0, 1] scale
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def delta_e(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean CIELAB ΔE76 between two (1,3,H,W) images in [-1, 1]."""
    lab = [cv2.cvtColor(((t[0].permute(1, 2, 0).float().numpy() + 1) / 2).clip(0, 1), cv2.COLOR_RGB2Lab) for t in (a, b)]
    return float(np.linalg.norm(lab[0] - lab[1], axis=2).mean())


def large_page(size: str, threads: int) -> None:
    """Peak RSS and seconds of `mangacolor colorize` on one page of `size` (W x H)."""
    import os
    import resource
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from mangacolor.io.bundle import write_bundle
    from mangacolor.io.images import encode_png
    from mangacolor.io.weights import save_weights

    w, h = (int(v) for v in size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mangacolor-bench-") as tmp:
        tmp = Path(tmp)
        cfg = ColorizerConfig()
        weights = save_weights(tmp / "c.safetensors", ColorizationGenerator(cfg), {"config": cfg.to_dict()})
        bundle = write_bundle(tmp / "bundle", {"colorizer": weights})
        small = demo_page(np.random.default_rng(5), 768, 512)[0]
        page = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        (tmp / "page.png").write_bytes(encode_png(page))
        del page
        env = {**os.environ, "MANGACOLOR_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "mangacolor.cli", "colorize", str(tmp / "page.png"), "-o", str(tmp / "out.png"),
               "--model", str(bundle), "--quiet"]
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
        if r.returncode != 0:
            raise SystemExit(f"colorize failed ({r.returncode}): {r.stderr[-2000:]}")
        from mangacolor.io.images import read_image

        out_shape = read_image(tmp / "out.png").shape
    print(f"page {w}×{h} (W×H), paper-size generator, {threads} thread(s): `mangacolor colorize` peak RSS "
          f"{peak:.2f} GiB (target ≤ 4), {seconds:.0f} s wall (model load, decode, colour at 1536 px, "
          f"chroma transfer, PNG encode); output {out_shape[1]}×{out_shape[0]}")


def transfer_cost(h: int, w: int, train_steps: int, working: list[int]) -> None:
    """ΔE76 / PSNR of the large-page path at each working long side against the page's own size."""
    from mangacolor.inference.colorize import colorize_page

    generator = ColorizationGenerator(ColorizerConfig())
    if train_steps:
        t = time.perf_counter()
        mae = brief_training(generator, train_steps, h, w)
        print(f"brief training: {train_steps} steps in {time.perf_counter() - t:.0f} s, final MAE {mae:.3f}")
    grey, colour = demo_page(np.random.default_rng(123), h, w)
    exact_opts = InferenceOptions()
    model = prepare_generator(generator.eval(), exact_opts)
    t = time.perf_counter()
    full = colorize_page(model, grey, options=exact_opts)
    print(f"page {w}×{h}: own size {time.perf_counter() - t:.0f} s; ΔE76 to the page's true colours {delta_e(to_batch([full]), to_batch([colour])):.2f}")
    for side in working:
        opts = InferenceOptions(max_long_side=side)
        t = time.perf_counter()
        out = colorize_page(model, grey, options=opts)
        sec = time.perf_counter() - t
        a, b = to_batch([out]), to_batch([full])
        print(f"  working long side {side:5d} ({max(h, w) / side:.1f}× smaller): {sec:4.0f} s, vs own size "
              f"PSNR {psnr(a, b):5.1f} dB, ΔE76 {delta_e(a, b):5.2f} | vs true colours ΔE76 {delta_e(a, to_batch([colour])):5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page-size", default=None, metavar="WxH", help="only the large-page run: peak RSS and seconds")
    ap.add_argument("--transfer-cost", action="store_true", help="only the large-page path's quality cost")
    ap.add_argument("--working", default="768,512", help="--transfer-cost: working long sides to compare")
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", default=f"1,{torch.get_num_threads()}",
                    help="comma-separated thread counts to time with (the brief training uses the smallest)")
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--skip-2021", action="store_true", help="do not time the 2021 layout (850-GFLOP class)")
    args = ap.parse_args()
    thread_counts = sorted({int(t) for t in str(args.threads).split(",")})
    if args.page_size:
        large_page(args.page_size, min(thread_counts))
        return
    if args.transfer_cost:
        torch.set_num_threads(min(thread_counts))
        torch.manual_seed(0)
        transfer_cost(args.height, args.width, args.train_steps, [int(v) for v in args.working.split(",")])
        return
    # One thread for the brief training: on a shared 2-core machine a second OpenMP thread waiting at
    # barriers for a busy core made the same step several times slower (measured here).
    torch.set_num_threads(min(thread_counts))
    torch.manual_seed(0)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    h, w = args.height, args.width

    print(f"colorization generator, one {w}×{h} page, CPU, threads {thread_counts}, torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")

    generator = ColorizationGenerator(ColorizerConfig())
    gflops = count_gflops(generator, h, w)
    print(f"ours (paper default): {count_parameters(generator) / 1e6:.1f} M params, {gflops:.0f} GFLOPs per page")
    if args.train_steps:
        t = time.perf_counter()
        mae = brief_training(generator, args.train_steps, h, w)
        print(f"brief training: {args.train_steps} steps in {time.perf_counter() - t:.0f} s, final MAE {mae:.3f}")
    generator.eval()

    grey, colour = demo_page(np.random.default_rng(123), h, w)  # not one of the training pages
    bw, truth = to_batch([grey]), to_batch([colour])
    modes = {
        "fp32 (contiguous, BN unfolded)": InferenceOptions(channels_last=False, fold_batchnorm=False),
        "fp32 channels-last + BN folded": InferenceOptions(),
        "bf16 channels-last": InferenceOptions(amp_dtype=torch.bfloat16),
        "fp32, working long side 512 + chroma": InferenceOptions(working_long_side=512),
        "bf16, working long side 512 + chroma": InferenceOptions(working_long_side=512, amp_dtype=torch.bfloat16),
        "bf16, working 512 + chroma, no detail": InferenceOptions(working_long_side=512, amp_dtype=torch.bfloat16, luma_detail=0.0),
        "bf16, working long side 384 + chroma": InferenceOptions(working_long_side=384, amp_dtype=torch.bfloat16),
    }
    # Every timed thing runs once per round, rounds interleaved: on a machine shared with other jobs
    # each mode then sees the same mix of load, so the ratios hold even when absolute times wander.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    jobs = {"matmul 2048² fp32": lambda: a @ b}
    work = {"matmul 2048² fp32": 2 * 2048**3 / 1e9}
    if not args.skip_2021:
        g2021 = ColorizationGenerator(ColorizerConfig(encoder_maxpool=False))
        work["2021 layout fp32 channels-last"] = count_gflops(g2021, h, w)
        print(f"2021 layout (reference): {count_parameters(g2021) / 1e6:.1f} M params, "
              f"{work['2021 layout fp32 channels-last']:.0f} GFLOPs per page")
        m2021 = prepare_generator(g2021, InferenceOptions())
        jobs["2021 layout fp32 channels-last"] = lambda: colorize_pages(m2021, bw, options=InferenceOptions())
    outputs = {}
    for name, opts in modes.items():
        model = prepare_generator(generator, opts)
        jobs[name] = lambda model=model, opts=opts: colorize_pages(model, bw, options=opts)
        outputs[name] = jobs[name]()  # also the warm-up
        wh, ww = working_size(h, w, opts.working_long_side)
        work[name] = gflops * (-(-wh // 32) * 32) * (-(-ww // 32) * 32) / (h * w)
    reference = outputs["fp32 (contiguous, BN unfolded)"]
    print(f"  {'quality':40s} vs fp32 full size: PSNR, ΔE76 | vs the page's true colours: ΔE76")
    for name, o in outputs.items():
        print(f"  {name:40s} {psnr(o, reference):5.1f} dB, {delta_e(o, reference):5.2f} | {delta_e(o, truth):5.2f}")
    print("  int8: n/a (torch.ao dynamic quantization covers nn.Linear; the generator is all convolutions)")
    for threads in thread_counts:
        time_jobs(jobs, work, threads, args.runs, skip_2021=args.skip_2021, modes=list(modes))


def time_jobs(jobs: dict, work: dict, threads: int, runs: int, skip_2021: bool, modes: list[str]) -> None:
    torch.set_num_threads(threads)
    print(f"--- {threads} thread(s) ---")
    for fn in jobs.values():
        fn()
    times = {name: [] for name in jobs}
    for r in range(runs):
        for name, fn in jobs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        print(f"  round {r + 1}/{runs} done", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"  {'':40s} {'median ms':>9s} {'min ms':>8s} {'GFLOP':>6s} {'GFLOP/s':>8s}")
    for name in jobs:
        print(f"  {name:40s} {med[name] * 1e3:9.0f} {best[name] * 1e3:8.0f} {work[name]:6.0f} {work[name] / med[name]:8.1f}")
    mm = work["matmul 2048² fp32"] / med["matmul 2048² fp32"]
    exact = "fp32 channels-last + BN folded"
    print(f"  fp32 path efficiency: {work[exact] / med[exact]:.1f} GFLOP/s = {100 * work[exact] / med[exact] / mm:.0f}% "
          f"of the matmul's {mm:.1f} GFLOP/s (medians; with the minima: "
          f"{100 * (work[exact] / best[exact]) / (work['matmul 2048² fp32'] / best['matmul 2048² fp32']):.0f}%)")
    if not skip_2021:
        ref = "2021 layout fp32 channels-last"
        for name in modes:
            print(f"  {name:40s} = 1/{med[ref] / med[name]:.1f} of the 2021 layout's fp32 time (target ≤ 1/3)")

if __name__ == "__main__":
    main()
