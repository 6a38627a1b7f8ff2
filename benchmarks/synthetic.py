"""Speed and memory of the synthetic black-and-white page steps (paper §IV-A-3): xDoG, refiner, CUT.

    uv run python benchmarks/synthetic.py                      # CPU, defaults below
    uv run python benchmarks/synthetic.py --device cuda --model-size 1654x1170
    uv run python benchmarks/synthetic.py --stages-only --json out.json   # the per-title stage figures only

Prints pages/s of xDoG for each parameter set on a 1654x1170 page (H x W), and inference pages/s
of the refiner and the CUT generator with their paper-size default configs. On a CPU the networks
run at --model-size (default 768x512, the training crop) because a whole page takes tens of
seconds there; the size used is printed with every figure.

Then the per-title stages as the assets run them, on a real store of generated --stage-size colour
pages (default 768x512):
- pages/s of `xdog_stage` + `translate_stage` (the demo-size refiner) over --speed-pages pages
  with 1 worker process and with --workers (default: `MANGACOLOR_WORKERS`, else cores - 1, at
  least 2);
- the peak RSS (ru_maxrss) of a fresh process that runs xDoG, the refiner and the synthetic gap
  of each step (weight-free statistics, every page compared) over a title of --small (20) and of
  --large (200) pages, in that process (0 workers, so the peak is all in one figure). Target:
  rss_mb_large <= 1.3 x rss_mb_small.
JSON (--json PATH): {"workers", "speed_pages", "pages_per_s_1", "pages_per_s_workers", "pages_small",
"rss_mb_small", "pages_large", "rss_mb_large", "baseline_rss_mb_small", "baseline_rss_mb_large", "stage_size"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mangacolor.io.store import ok_rows  # noqa: E402
from mangacolor.io.images import encode_png  # noqa: E402
from mangacolor.io.store import Store, sha256_bytes  # noqa: E402
from mangacolor.models.cut import CUTConfig, ResnetGenerator, apply_cut  # noqa: E402
from mangacolor.models.refiner import Refiner, RefinerConfig, pad_to_multiple, refine, refine_batch  # noqa: E402
from mangacolor.io.weights import count_parameters
from mangacolor.stages import synthetic as synth  # noqa: E402
from mangacolor.synthetic.xdog import PRESETS, xdog  # noqa: E402


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


# --- the per-title stages ----------------------------------------------------------------------------

DEMO_REFINER = RefinerConfig(widths=(8, 16), encoder_blocks=(1, 1), decoder_blocks=(1,), cardinality=2, se_reduction=4)


def write_title(store: Store, n: int, hw: tuple[int, int]) -> pd.DataFrame:
    """n generated colour pages of one title in the store, one at a time; their manifest-like rows."""
    rows = []
    for i in range(n):
        data = encode_png(page(*hw, seed=i))
        path = store.path("color_pages", "bench", f"{i:04d}.png")
        store.write_bytes(path, data)
        rows.append({"id": f"bench/{i:04d}", "title": "bench", "page": f"{i:04d}.png", "uri": path, "sha256": sha256_bytes(data)})
    return pd.DataFrame(rows)


def run_stages(store: Store, rows: pd.DataFrame, workers: int, gap: bool) -> None:
    """xDoG, then the refiner over the xDoG pages (then the gap of each step against the colour pages)."""
    xcfg = synth.XDoGStageConfig(preset="generic").xdog_config()
    writer = store.begin("xdog_pages", "bench")
    synth.xdog_stage(rows, store, writer, xcfg, workers=workers)
    _, xdir, _ = writer.commit()
    xrows = ok_rows(store, "xdog_pages", ["bench"])
    torch.manual_seed(0)
    model = Refiner(DEMO_REFINER).eval()
    writer = store.begin("refined_pages", "bench")
    synth.translate_stage(xrows, store, writer, lambda p: refine_batch(model, p), workers=workers)
    writer.commit()
    if gap:
        cfg = synth.GapConfig(inception="none", max_pages=None)
        real = synth.gap_pages(store, rows, cfg)  # stands in for the real pages: the memory question is the same
        steps = {a: synth.gap_pages(store, ok_rows(store, a, ["bench"]), cfg) for a in ("xdog_pages", "refined_pages")}
        synth.gaps_by_step(steps, real, cfg)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, hw: tuple[int, int]) -> dict:
    """In a fresh process: make a title of n pages, then run the stages with 0 workers; peak RSS before and after."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        rows = write_title(store, n, hw)
        baseline = peak_rss_mb()
        t = time.perf_counter()
        run_stages(store, rows, workers=0, gap=True)
        return {"pages": n, "baseline_rss_mb": baseline, "rss_mb": peak_rss_mb(), "s": time.perf_counter() - t}


def stage_figures(args) -> dict:
    from mangacolor.io.pagemap import default_workers

    hw = args.stage_size
    workers = args.workers or max(2, default_workers())
    speed = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        rows = write_title(store, args.speed_pages, hw)
        for w in (1, workers):
            t = time.perf_counter()
            run_stages(store, rows, workers=w, gap=False)
            speed[w] = args.speed_pages / (time.perf_counter() - t)
            print(f"xdog_stage + translate_stage, {args.speed_pages} pages {hw[0]}x{hw[1]}, {w} worker(s): "
                  f"{speed[w]:.2f} pages/s", flush=True)
    rss = {}
    for n in (args.small, args.large):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--stage-size", f"{hw[0]}x{hw[1]}"],
                             capture_output=True, text=True, check=True)
        rss[n] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rss[n]
        print(f"title of {n} pages {hw[0]}x{hw[1]} (xDoG, refiner, gap by step; 0 workers): peak RSS {r['rss_mb']:.0f} MB "
              f"({r['baseline_rss_mb']:.0f} MB after imports and page generation, {r['s']:.1f} s)", flush=True)
    small, large = rss[args.small], rss[args.large]
    print(f"rss_mb_large / rss_mb_small = {large['rss_mb'] / small['rss_mb']:.3f} (target <= 1.3)")
    return {"workers": workers, "speed_pages": args.speed_pages, "pages_per_s_1": speed[1], "pages_per_s_workers": speed[workers],
            "pages_small": args.small, "rss_mb_small": small["rss_mb"], "pages_large": args.large, "rss_mb_large": large["rss_mb"],
            "baseline_rss_mb_small": small["baseline_rss_mb"], "baseline_rss_mb_large": large["baseline_rss_mb"],
            "stage_size": list(hw), "cores": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xdog-size", type=parse_hw, default=(1654, 1170), help="H x W of the xDoG page")
    ap.add_argument("--model-size", type=parse_hw, default=None, help="H x W for the networks (default: 768x512 on CPU, 1654x1170 on GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages-only", action="store_true", help="only the per-title stage figures")
    ap.add_argument("--no-stages", action="store_true", help="only the xDoG and network figures")
    ap.add_argument("--stage-size", type=parse_hw, default=(768, 512), help="H x W of the generated pages of the stage figures")
    ap.add_argument("--speed-pages", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="write the stage figures here")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, args.stage_size)))
        return
    if not args.stages_only:
        kernels(args)
    if not args.no_stages:
        figures = stage_figures(args)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))


def kernels(args) -> None:
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
