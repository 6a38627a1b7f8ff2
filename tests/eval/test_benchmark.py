"""Inference benchmark (mangacolor/eval/benchmark.py): what is timed, how often, and memory."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tests.eval.bundles import tiny_bundle

from mangacolor.eval import benchmark as bench
from mangacolor.inference.bundle import ModelBundle


def test_warmup_runs_are_not_timed():
    calls = []
    times, _, method, out = bench._timed(lambda: calls.append(1) or len(calls), torch.device("cpu"), n_runs=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and out == 5
    assert method in ("rss-sampled", "ru_maxrss-lifetime")


def test_cpu_peak_memory_sees_a_large_temporary_allocation():
    import mmap

    with bench._PeakRSS() as peak:
        # 64 MiB of fresh pages from the kernel: a malloc'd block could reuse memory an earlier test in
        # this worker freed but which stayed resident, and then the resident size would not move.
        block = mmap.mmap(-1, 64 * 2**20)
        view = np.frombuffer(block, np.uint8)
        view[:] = 1  # every page touched
        # Held until the sampling thread has seen it (at most 5 s): on a busy machine the thread can
        # wait for a core. A sampler that never sees it fails below.
        deadline = time.monotonic() + 5
        while peak.method == "rss-sampled" and peak.megabytes < 48 and time.monotonic() < deadline:
            time.sleep(0.01)
        del view
        block.close()
    if peak.method == "rss-sampled":
        assert peak.megabytes >= 48


def test_benchmark_times_drafting_and_colorization_separately(tmp_path):
    with_drafting = ModelBundle.load(tiny_bundle(tmp_path / "d", drafting=True))
    r = bench.inference_benchmark(with_drafting, "cpu", n_runs=2, size=(96, 64), warmup=0)
    assert r["has_drafting"] and (r["height"], r["width"]) == (96, 64)
    assert len(r["preprocessing_runs_s"]) == len(r["colorization_runs_s"]) == 2
    assert r["preprocessing_s"] > 0 and r["colorization_s"] > 0
    assert r["total_s"] == r["preprocessing_s"] + r["colorization_s"]
    assert math.isfinite(r["colorization_peak_mb"])

    plain = ModelBundle.load(tiny_bundle(tmp_path / "p"))
    p = bench.inference_benchmark(plain, "cpu", n_runs=1, size=(64, 64), warmup=0)
    assert not p["has_drafting"] and math.isnan(p["preprocessing_s"]) and p["total_s"] == p["colorization_s"]

    table = bench.benchmark_table([r, p])
    assert list(table["source"]).count("ours") == 2
    paper = table[table["model"] == "Our (the paper)"].iloc[0]
    assert (paper["preprocessing s"], paper["colorization s"]) == (2.56, 0.68)
    assert table.iloc[-1]["preprocessing s"].startswith("—")


def test_run_benchmarks_measures_each_size_on_each_present_device(tmp_path):
    path = tiny_bundle(tmp_path / "b")
    cfg = bench.BenchmarkConfig(sizes=[{"size": (64, 48), "runs": 1, "warmup": 0}, {"size": (96, 64), "runs": 2, "warmup": 0}],
                                devices=["cpu", "cuda"])
    results = bench.run_benchmarks(lambda device: ModelBundle.load(path, device), cfg)
    devices = bench.available_devices(["cuda"])
    assert [(r["device"], r["height"]) for r in results] == [(d, h) for d in devices for h in (64, 96)]
