"""Peak memory of the evaluation path does not grow with the number of pages (issue: bounded memory).

    uv run python benchmarks/eval_memory.py [--small 200] [--large 2000] [--features tiny|inception] [--json PATH]

Writes `--large` generated 768x512 "colorized" pages, their true colour pages (every `--paired-every`-th
page has one, as only matched pairs do in a real holdout) and 100 reference colour pages as PNG files in
a store folder, then, for each size in a fresh subprocess, runs the evaluation path of `fid_report`
on the first N pages exactly as the asset does: pages read lazily from the store
(`sets.LazyPages`), streamed through `report.StreamScorer` in batches (features + FID/KID with
intervals + paired metrics CIEDE2000 / LPIPS / PSNR / SSIM), reference features from
`report.reference_features` (cached by content). It reports the process's peak RSS
(`resource.getrusage`, ru_maxrss). Target: rss_mb_large <= 1.3 x rss_mb_small.

`--features tiny` (default) uses a small random-init convolutional feature network (256-d) instead of
the 24M-parameter FID Inception, which takes ~0.2 s a page on this CPU; the memory question is the
same (features are kept, pages are not), and `--features inception` measures with the real network.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

H, W = 768, 512
N_REFERENCE = 100


class TinyFeatures(nn.Module):
    """A random-init stand-in for the FID Inception: Nx3x299x299 in [-1, 1] -> Nx256."""

    description = "tiny random-init conv features (benchmark stand-in for the FID Inception)"
    random_init = True

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 32, 7, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 5, stride=4), nn.ReLU(),
                                     nn.Conv2d(64, 256, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def page(i: int, kind: str) -> np.ndarray:
    """A cheap deterministic page: flat colour blocks (a panel layout) with some ink-like lines."""
    rng = np.random.default_rng([i, {"out": 0, "truth": 1, "ref": 2}[kind]])
    blocks = rng.integers(60, 256, (6, 4, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(blocks, H // 6, axis=0), W // 4, axis=1)
    img[rng.integers(0, H, 20)] = 0
    img[:, rng.integers(0, W, 12)] = 0
    if kind == "out":  # a colorization: the truth's layout with shifted colours
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
    return img


def write_pages(root: Path, n: int, paired_every: int) -> dict:
    from mangacolor.io.images import encode_png

    root.mkdir(parents=True, exist_ok=True)
    uris = {"out": [], "truth": [], "ref": []}
    for kind, count in (("out", n), ("ref", N_REFERENCE)):
        for i in range(count):
            path = root / kind / f"{i:05d}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_png(page(i if kind == "ref" else i, kind)))
            uris[kind].append(str(path))
    for i in range(n):
        if i % paired_every:
            uris["truth"].append(None)
            continue
        path = root / "truth" / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(page(i, "truth")))
        uris["truth"].append(str(path))
    return uris


def measure(root: Path, n: int, features: str, paired_every: int) -> dict:
    """The evaluation path on the first `n` pages; runs in a fresh process (see main)."""
    import pandas as pd

    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import build_inception
    from mangacolor.eval.report import EvaluationConfig, StreamScorer, reference_features
    from mangacolor.eval.sets import LazyPages, content_key
    from mangacolor.io.store import Store

    uris = json.loads((root / "uris.json").read_text())
    store = Store(str(root))
    cfg = EvaluationConfig(inception="random", fid_method="eig", n_boot=100, kid_subsets=50, kid_subset_size=100, batch_size=8)
    network = TinyFeatures() if features == "tiny" else build_inception("random")
    extractor = FeatureExtractor(network, batch_size=cfg.batch_size, cache_dir=root / f"cache-{features}-{n}")
    ref_rows = pd.DataFrame({"uri": uris["ref"]})
    t0 = time.perf_counter()
    ref_feats = reference_features(extractor, LazyPages(store, uris["ref"], "RGB"), cfg.batch_size, content_key(ref_rows))
    outputs = LazyPages(store, uris["out"][:n], "RGB")
    truths = LazyPages(store, uris["truth"][:n], "RGB")
    scorer = StreamScorer(extractor, ref_feats, cfg, truths, n)
    batches = ((idx, [outputs[i] for i in idx]) for idx in (range(s, min(s + cfg.batch_size, n)) for s in range(0, n, cfg.batch_size)))
    _, report, paired = scorer.score(batches)
    return {"pages": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.perf_counter() - t0,
            "fid": report.fid, "kid": report.kid_mean, "n_paired": paired["n_pairs"], "ciede2000": paired.get("ciede2000")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--features", choices=["tiny", "inception"], default="tiny")
    ap.add_argument("--paired-every", type=int, default=10, help="every k-th page has a true colour page (paired metrics)")
    ap.add_argument("--work", default=None, help="folder for the generated pages (default: a temporary one)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("MANGACOLOR_THREADS", "1")))
    if args.child is not None:
        print(json.dumps(measure(Path(args.work), args.child, args.features, args.paired_every)))
        return 0

    with tempfile.TemporaryDirectory(prefix="mangacolor-evalmem-") as tmp:
        root = Path(args.work or tmp)
        t = time.perf_counter()
        uris = write_pages(root, args.large, args.paired_every)
        (root / "uris.json").write_text(json.dumps(uris))
        print(f"wrote {args.large} pages of {W}x{H} (+{N_REFERENCE} reference) in {time.perf_counter() - t:.0f} s", flush=True)
        results = {}
        for n in (args.small, args.large):
            cmd = [sys.executable, __file__, "--child", str(n), "--work", str(root), "--features", args.features,
                   "--paired-every", str(args.paired_every)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[n]
            print(f"{n:5d} pages: peak RSS {r['rss_mb']:.0f} MB, {r['seconds']:.0f} s, FID {r['fid']:.2f}, "
                  f"{r['n_paired']} paired pages (CIEDE2000 {r['ciede2000']:.2f})", flush=True)
    small, large = results[args.small], results[args.large]
    ratio = large["rss_mb"] / small["rss_mb"]
    print(f"rss_mb_large / rss_mb_small = {ratio:.3f} (target <= 1.3); features: {args.features}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "pages_small": args.small, "rss_mb_small": round(small["rss_mb"], 1),
            "pages_large": args.large, "rss_mb_large": round(large["rss_mb"], 1),
            "ratio": round(ratio, 3), "features": args.features, "seconds_small": round(small["seconds"], 1),
            "seconds_large": round(large["seconds"], 1), "paired_pages_large": large["n_paired"],
        }, indent=2))
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
