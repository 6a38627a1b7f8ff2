"""How fast FID features are extracted here: images/s through the FID InceptionV3 at 299x299.

Uses the random-init network (speed does not depend on the weights, and no weights file is
needed). Prints two figures: the network alone on ready 299x299 batches, and the whole extractor
path from uint8 512x768 pages (resize included, no cache), plus the machine they were taken on.

    uv run python benchmarks/fid.py                  # CPU, batch 8
    uv run python benchmarks/fid.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from mangacolor.device import resolve_device
from mangacolor.eval.fid import FeatureExtractor
from mangacolor.eval.inception import build_inception


def machine(spec) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{spec.description}; CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; load average {load:.1f}"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--precision", default="fp32", help="fp32 (what FID uses) | bf16 | fp16 | auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches (after one warm-up batch)")
    parser.add_argument("--resize", default="bilinear-torch")
    args = parser.parse_args()

    spec = resolve_device(args.device, args.precision)
    net = build_inception("random", device=spec.device)
    print(f"machine: {machine(spec)}")
    print(f"network: {net.description}; batch {args.batch_size}; resize {args.resize}")

    x = torch.rand(args.batch_size, 3, 299, 299, device=spec.device) * 2 - 1
    with torch.no_grad(), spec.autocast():
        net(x)  # warm-up: allocator, cuDNN algorithm choice
        sync(spec.device)
        start = time.perf_counter()
        for _ in range(args.batches):
            net(x)
        sync(spec.device)
    network_rate = args.batches * args.batch_size / (time.perf_counter() - start)
    print(f"network only (299x299 batches ready): {network_rate:.2f} images/s")

    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 256, size=(768, 512, 3), dtype=np.uint8) for _ in range(args.batch_size * (args.batches + 1))]
    extractor = FeatureExtractor(net, resize=args.resize, batch_size=args.batch_size, device=spec.device, amp_dtype=spec.amp_dtype)
    extractor(pages[: args.batch_size])  # warm-up
    start = time.perf_counter()
    extractor(pages[args.batch_size :])
    sync(spec.device)
    page_rate = args.batches * args.batch_size / (time.perf_counter() - start)
    print(f"extractor from uint8 512x768 pages (hash + resize + network): {page_rate:.2f} images/s")


if __name__ == "__main__":
    main()
