"""Speed of the synthetic black-and-white page steps (paper §IV-A-3): xDoG, refiner, CUT.

    uv run python benchmarks/synthetic.py                      # CPU, defaults below
    uv run python benchmarks/synthetic.py --device cuda --model-size 1654x1170

Prints pages/s of xDoG for each parameter set on a 1654x1170 page (H x W), and inference pages/s
of the refiner and the CUT generator with their paper-size default configs. On a CPU the networks
run at --model-size (default 768x512, the training crop) because a whole page takes tens of
seconds there; the size used is printed with every figure.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mangacolor.models.cut import CUTConfig, ResnetGenerator, apply_cut
from mangacolor.models.refiner import Refiner, RefinerConfig, count_parameters, pad_to_multiple, refine
from mangacolor.synthetic.xdog import PRESETS, xdog


def page(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A colour page with panels, ink strokes, fills and noise, so xDoG has real work to do."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(60):
        x0, y0 = int(rng.integers(w)), int(rng.integers(h))
        x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), int(rng.integers(1, 4)))
    for _ in range(200):
        p = rng.integers(0, [w, h], size=(2, 2))
        cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), (0, 0, 0), 1, cv2.LINE_AA)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def rate(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: allocator, kernels, lazy imports
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return repeats / (time.perf_counter() - t)


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def parse_hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xdog-size", type=parse_hw, default=(1654, 1170), help="H x W of the xDoG page")
    ap.add_argument("--model-size", type=parse_hw, default=None, help="H x W for the networks (default: 768x512 on CPU, 1654x1170 on GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model_hw = args.model_size or ((1654, 1170) if device.type == "cuda" else (768, 512))
    torch.set_grad_enabled(False)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)")
    h, w = args.xdog_size
    colour = page(h, w)
    for name in PRESETS:
        r = rate(lambda: xdog(colour, name), args.repeats)
        print(f"xdog {name:12s} {h}x{w}: {r:6.2f} pages/s ({1000 / r:7.1f} ms/page)")

    grey = page(*model_hw, seed=1)[..., 0]
    nets = {
        "refiner (RefinerConfig())": (Refiner(RefinerConfig()), None),
        "cut generator (CUTConfig())": (ResnetGenerator(CUTConfig()), 4),
    }
    for label, (net, mult) in nets.items():
        net = net.to(device).eval()
        x, _ = pad_to_multiple(torch.zeros(1, 1, *model_hw, device=device), mult or 8)
        flops = gflops(net, x)
        if mult is None:
            fn = lambda: refine(net, grey, device=device, amp_dtype=amp)  # noqa: E731
        else:
            fn = lambda: apply_cut(net, grey, device=device, amp_dtype=amp)  # noqa: E731
        r = rate(fn, args.repeats, sync)
        print(
            f"{label:30s} {model_hw[0]}x{model_hw[1]} on {device.type} {args.precision}: {r:7.3f} pages/s "
            f"({1000 / r:8.1f} ms/page, {count_parameters(net) / 1e6:.2f} M params, {flops:.0f} GFLOP/page)"
        )


if __name__ == "__main__":
    main()
