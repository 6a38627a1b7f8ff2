"""Inference time and memory of a model bundle, measured the way the paper's Table 4 splits it (§V).

Table 4 times one 512×768 page in two parts, because a user who refines colours with hints pays the
first once and the second at every edit:

- preprocessing: the drafting network (black-and-white page -> W+) and the StyleGAN synthesis of
  the coloring draft (`ModelBundle.drafts`);
- colorization: the generator on the page with its draft, from the uint8 page to the uint8 colour
  page (`colorize_page`, tensor conversion included, as a user sees it).

Each part is timed `n_runs` times after `warmup` untimed runs (allocator, oneDNN/cuDNN kernel
choice) and reported as the median, with every run kept. CUDA work is synchronised before each
clock read. Peak memory per part, over its warm-up and timed runs, above what was allocated before
(the loaded weights): on CUDA `torch.cuda.max_memory_allocated` (tensors only, reset before the
part); on CPU the process's resident set size sampled every few milliseconds, minus the RSS before
the part (torch's CPU allocator is invisible to tracemalloc). The CPU figure is a lower bound in a
long-lived process: memory the C allocator kept from earlier work is reused without growing the RSS.
A bundle without drafting networks has no preprocessing; its colorization uses an empty draft.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from mangacolor.inference.colorize import InferenceOptions, colorize_page, prepare_generator

PAPER_SIZE = (768, 512)  # (height, width): the paper's "512×768" page
# Table 4 (seconds, one 512×768 page, GeForce GTX 1060 + Core i5-8300H).
PAPER_TABLE4 = [
    ("Style2Paints", 1.94, 8.17),
    ("[38] (the authors' 2021 model)", 3.52, 0.73),
    ("Our (the paper)", 2.56, 0.68),
]
PAPER_HARDWARE = "GeForce GTX 1060 + Core i5-8300H"


class BenchmarkSize(BaseModel):
    size: tuple[int, int] = Field(PAPER_SIZE, description="(height, width) of the test page")
    runs: int = Field(5, ge=1)
    warmup: int = Field(1, ge=0)


class BenchmarkConfig(BaseModel):
    sizes: list[BenchmarkSize] = Field(default_factory=lambda: [BenchmarkSize()])
    devices: list[str] = Field(default_factory=lambda: ["cpu", "cuda"], description="those present are measured")
    seed: int = 0


# --- memory -------------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _PeakRSS:
    """Peak resident set size while the block runs, sampled by a thread (Linux /proc).

    Off Linux, falls back to `ru_maxrss` (the process's lifetime peak: an upper bound, said so).
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.method = "rss-sampled" if _rss_bytes() is not None else "ru_maxrss-lifetime"
        self.peak = self.base = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() or 0)
            time.sleep(self.interval)

    def __enter__(self):
        if self.method == "rss-sampled":
            self.base = self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.method == "rss-sampled":
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:
            import resource

            scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux/BSD
            self.peak, self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 0

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


class _PeakCuda:
    method = "cuda-max-allocated"

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device)

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


def _peak(device: torch.device):
    return _PeakCuda(device) if device.type == "cuda" else _PeakRSS()


# --- timing -------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, n_runs: int, warmup: int) -> tuple[list[float], float, str, object]:
    """Run `fn` warmup + n_runs times; (seconds per timed run, peak MB over warm-up and timed runs, memory method, last result)."""
    out = None
    times = []
    # Memory over the warm-up too: one-time buffers (kernel workspaces, weight re-layouts) are part of
    # what inference costs, and a warmed allocator would otherwise hide a run's working set.
    with _peak(device) as peak:
        for _ in range(warmup):
            out = fn()
        for _ in range(n_runs):
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    return times, peak.megabytes, peak.method, out


def benchmark_page(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A page-like grey uint8 test page: white paper, ink strokes and a screentone patch."""
    h, w = size
    rng = np.random.default_rng(seed)
    page = np.full((h, w), 245, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    page[((yy // 4 + xx // 4) % 2 == 0) & (yy < h // 2)] = 200
    for _ in range(40):
        y, x = rng.integers(0, h), rng.integers(0, w)
        page[max(0, y - 1) : y + 2, x : min(w, x + int(rng.integers(10, w // 2)))] = 20
    return page


def _move(bundle, device: torch.device):
    """The bundle's networks on `device` (moved in place; the bundle object is returned updated)."""
    for net in (bundle.generator, bundle.drafting, bundle.inversion):
        if net is not None:
            net.to(device)
    bundle.device = device
    return bundle


def inference_benchmark(bundle, device: torch.device | str = "cpu", n_runs: int = 5,
                        size: tuple[int, int] = PAPER_SIZE, warmup: int = 1,
                        options: InferenceOptions = InferenceOptions(), seed: int = 0) -> dict:
    """Median seconds and peak memory of preprocessing and colorization of one `size` (H, W) page.

    `bundle` is a `mangacolor.inference.bundle.ModelBundle`; its networks are moved to `device`.
    """
    from mangacolor.inference.bundle import draft_to_uint8

    device = torch.device(device)
    bundle = _move(bundle, device)
    page = benchmark_page(tuple(size), seed)
    has_drafting = bundle.drafting is not None
    pre_times, pre_mb, method, drafts = _timed(lambda: bundle.drafts(page), device, n_runs, warmup) if has_drafting \
        else ([], float("nan"), None, [None])
    draft = draft_to_uint8(drafts[0]) if drafts[0] is not None else None
    generator = prepare_generator(bundle.generator, options, device)
    col_times, col_mb, method, out = _timed(lambda: colorize_page(generator, page, draft=draft, options=options),
                                            device, n_runs, warmup)
    if out.shape[:2] != tuple(size):
        raise RuntimeError(f"colorization returned {out.shape[:2]} for a {tuple(size)} page")
    pre = statistics.median(pre_times) if pre_times else float("nan")
    col = statistics.median(col_times)
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "height": int(size[0]),
        "width": int(size[1]),
        "n_runs": n_runs,
        "warmup": warmup,
        "has_drafting": has_drafting,
        "preprocessing_s": pre,
        "colorization_s": col,
        "total_s": (0.0 if not has_drafting else pre) + col,
        "preprocessing_runs_s": pre_times,
        "colorization_runs_s": col_times,
        "preprocessing_peak_mb": pre_mb,
        "colorization_peak_mb": col_mb,
        "memory_method": method,
        "amp_dtype": str(options.amp_dtype).replace("torch.", "") if options.amp_dtype else "fp32",
        "working_long_side": options.working_long_side,
    }


def available_devices(wanted: list[str]) -> list[str]:
    """The configured devices that exist here (CPU always)."""
    present = {"cpu"}
    if torch.cuda.is_available():
        present.add("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        present.add("mps")
    return [d for d in dict.fromkeys(["cpu", *wanted]) if d in present]


def run_benchmarks(load_bundle: Callable[[str], object], config: BenchmarkConfig,
                   options: InferenceOptions = InferenceOptions(),
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every configured size on every present device; `load_bundle(device)` gives a fresh bundle there."""
    results = []
    for device in available_devices(config.devices):
        bundle = load_bundle(device)
        for item in config.sizes:
            r = inference_benchmark(bundle, device, item.runs, tuple(item.size), item.warmup, options, config.seed)
            results.append(r)
            if progress:
                progress(f"benchmark {device} {item.size[1]}×{item.size[0]}: preprocessing {r['preprocessing_s']:.3f} s, "
                         f"colorization {r['colorization_s']:.3f} s (median of {item.runs})")
    return results


def benchmark_table(results: list[dict]) -> pd.DataFrame:
    """Our measurements under the paper's Table 4 rows, one table (seconds per page, medians)."""
    rows = [{"source": f"paper ({PAPER_HARDWARE})", "model": m, "device": "GPU+CPU", "page (W×H)": "512×768",
             "preprocessing s": pre, "colorization s": col, "peak MB above start (pre / col)": "—"} for m, pre, col in PAPER_TABLE4]
    for r in results:
        pre = "— (no drafting network)" if not r["has_drafting"] else round(r["preprocessing_s"], 4)
        mem = f"{r['preprocessing_peak_mb']:.0f} / {r['colorization_peak_mb']:.0f} ({r['memory_method']})"
        rows.append({"source": "ours", "model": "candidate", "device": f"{r['device']} ({r['device_name']}, {r['threads']} threads)",
                     "page (W×H)": f"{r['width']}×{r['height']}", "preprocessing s": pre,
                     "colorization s": round(r["colorization_s"], 4), "peak MB above start (pre / col)": mem})
    return pd.DataFrame(rows)
