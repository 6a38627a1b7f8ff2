"""Memory of one step-1 step at the paper's size, and what it predicts for a GPU.

    uv run python benchmarks/step1_memory.py                       # micro-batch 1 + checkpointing, 768x512, batch 4
    uv run python benchmarks/step1_memory.py --crop 384 256 --json o.json

One step of the colorizer's step 1 (adversarial adaptation: 4 synthetic pairs and 4 real pages, the paper's
generator, discriminator and VGG perceptual loss, random-init weights) through `train_colorizer`, on the CPU in
fp32, in micro-batches of `--micro-batch` with activation checkpointing (mangacolor/training/memory.py), while
the process's resident set size is sampled every 20 ms. Printed:
- RSS before the step (libraries, pages, nothing of the networks yet), the peak during it, and the networks'
  own bytes: weights (generator, discriminator, VGG), gradients and Adam's two moments of G and D;
- the activations one micro-batch holds at the peak: peak - before - the networks' bytes present then
  (weights, both gradients, D's Adam moments: G's are made after its backward), an upper bound since the
  C allocator keeps freed memory;
- the prediction for bf16 on 80 GB and 40 GB GPUs: activations about 0.55x in bf16 autocast (bf16 convolution
  outputs, fp32 norms and losses), the networks' bytes as measured (fp32 master weights), 2 GB for the CUDA
  context and cuDNN workspaces; how many pages per micro-batch fit.
A step at the paper's size takes minutes on a 2-core CPU: run it when the machine is quiet, and read the load
it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 2**30
BF16_ACTIVATIONS = 0.55  # bf16 autocast keeps conv outputs in bf16, norms, softmax-free losses and reductions in fp32
CUDA_OVERHEAD_GB = 2.0  # CUDA context, cuDNN workspaces, allocator fragmentation


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS(threading.Thread):
    def __init__(self, every_s: float = 0.02):
        super().__init__(daemon=True)
        self.every_s, self.peak, self.running = every_s, rss(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(self.every_s)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, rss())


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, nargs=2, default=(768, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("MANGACOLOR_THREADS", "2")))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mangacolor.losses.colorization import PerceptualLoss
    from mangacolor.models.colorizer import ColorizerConfig, build_generator
    from mangacolor.models.discriminator import ColorizationDiscriminator, DiscriminatorConfig
    from mangacolor.tracking import NullTracker
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, train_colorizer

    h, w = args.crop
    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.batch)]
    bw = [p.mean(2).astype(np.uint8) for p in pages]
    drafts = [p[::3, ::3].copy() for p in pages]
    checkpointing = not args.no_checkpointing
    cfg = ColorizerTrainConfig(generator=ColorizerConfig(), discriminator=DiscriminatorConfig(), crop=(h, w), batch_size=args.batch,
                               allow_random_vgg=True, max_steps=1, log_every=1, checkpoint_every=10**9, num_workers=0,
                               micro_batch=args.micro_batch, checkpointing=checkpointing, batchnorm="frozen")
    # The networks' own bytes, from networks built as the loop builds them, on the meta device (no memory).
    with torch.device("meta"):
        g, d = build_generator(cfg.generator), ColorizationDiscriminator(cfg.discriminator)
        vgg = PerceptualLoss(cfg.perceptual_layers, cfg.vgg_weights, allow_random=True)
    weights = param_bytes(g) + param_bytes(d) + param_bytes(vgg)
    grads, adam_d, adam_g = param_bytes(g) + param_bytes(d), 2 * param_bytes(d), 2 * param_bytes(g)
    load = os.getloadavg()
    before = rss()
    sampler = PeakRSS()
    sampler.start()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_colorizer(cfg, PairDataset(bw, pages, drafts), BwDataset(bw), tmp, torch.device("cpu"), NullTracker(), step="adapt",
                        snapshot_every=10**9)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    at_peak = weights + grads + adam_d
    activations = peak - before - at_peak
    static_gpu = (weights + grads + adam_d + adam_g) / GB + CUDA_OVERHEAD_GB
    per_page_bf16 = activations / args.micro_batch / GB * BF16_ACTIVATIONS
    fits = {f"{gb}GB": int((gb - static_gpu) // per_page_bf16) for gb in (80, 40)}
    figures = {
        "crop": [h, w], "batch": args.batch, "micro_batch": args.micro_batch, "checkpointing": checkpointing, "threads": args.threads,
        "seconds": round(seconds, 1), "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
        "rss_before_gb": round(before / GB, 2), "peak_rss_gb": round(peak / GB, 2),
        "weights_gb": round(weights / GB, 3), "grads_gb": round(grads / GB, 3), "adam_gb": round((adam_g + adam_d) / GB, 3),
        "activations_per_micro_batch_gb": round(activations / GB, 2),
        "predicted_bf16_gpu": {"static_gb": round(static_gpu, 1), "activations_per_page_gb": round(per_page_bf16, 2),
                               "pages_per_micro_batch_that_fit": fits,
                               "step_peak_gb_at_this_micro_batch": round(static_gpu + per_page_bf16 * args.micro_batch, 1),
                               "step_peak_gb_whole_batch_checkpointed": round(static_gpu + per_page_bf16 * args.batch, 1)},
    }
    print(f"one step-1 step at {h}x{w}, batch {args.batch}, micro-batch {args.micro_batch}, "
          f"checkpointing {'on' if checkpointing else 'off'}, fp32 on the CPU ({args.threads} threads): {seconds:.0f} s "
          f"(load {load[0]:.1f} before, {figures['load_after'][0]:.1f} after)")
    print(f"RSS before {before / GB:.2f} GB, peak {peak / GB:.2f} GB; weights {weights / GB:.3f} GB, gradients "
          f"{grads / GB:.3f} GB, Adam {(adam_g + adam_d) / GB:.3f} GB")
    print(f"activations of one micro-batch at the peak: {activations / GB:.2f} GB fp32")
    print(f"predicted for bf16 on a GPU: {static_gpu:.1f} GB static + {per_page_bf16:.2f} GB per page of a micro-batch -> "
          f"{figures['predicted_bf16_gpu']['step_peak_gb_at_this_micro_batch']} GB at micro-batch {args.micro_batch}; "
          f"the whole batch of {args.batch} in one micro-batch: {figures['predicted_bf16_gpu']['step_peak_gb_whole_batch_checkpointed']} GB; "
          f"pages per micro-batch that fit: {fits['80GB']} on 80 GB, {fits['40GB']} on 40 GB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
