"""What a GPU machine does at the paper's sizes, in under 8 minutes: the figures DESIGN.md's GPU targets ask for.

    uv run python benchmarks/gpu_check.py --json gpu.json        # on a machine with an NVIDIA GPU
    uv run python benchmarks/gpu_check.py --cpu-smoke --json o.json  # the same code at tiny sizes on the CPU

Prints, with random-init networks on generated pages (speed and memory, not quality):
- the device: GPU, NVIDIA driver, torch and the CUDA it was built for, whether bf16 is native;
- step 1 of the colorizer (adversarial adaptation) at the paper's size, 768x512 crops, batch 4, in the
  device's autocast precision: seconds per step and peak GPU memory with 0 and with 8 `DataLoader` workers, and
  how busy the GPU was meanwhile (`nvidia-smi` sampled every 200 ms);
  step 1 again in micro-batches of 1 with activation checkpointing (`micro_batch`, `checkpointing`): what
  that saves and costs;
- StyleGAN2 training images/s at 256 px, channel multiplier 2, batch 32 (the paper's);
- colorized pages/s at 512x768 in bf16, batched (the generator alone: pages in, colour out, on the device);
- the kill-and-resume difference: the step-1 drill (tests/training/killdrill.py) SIGKILLed after a checkpoint and
  resumed on this device, against a run never killed (0 on the CPU; on a GPU, cuDNN's kernel choice can leave
  float rounding).
Each part has its share of the time budget and is skipped, saying so, once the budget is spent. `--cpu-smoke`
runs every part at tiny sizes with 0 and 2 workers (the test suite runs it); a section's failure is printed and
recorded, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 8 * 60


def sizes(smoke: bool) -> dict:
    from mangacolor.models.colorizer import ColorizerConfig
    from mangacolor.models.discriminator import DiscriminatorConfig

    if smoke:
        return {"crop": (64, 48), "page": (80, 64), "batch": 2, "generator": ColorizerConfig.tiny(), "discriminator": DiscriminatorConfig.tiny(),
                "warmup": 1, "steps": 2, "workers": (0, 2), "stylegan": {"size": 16, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 1,
                                                                          "channel_max": 8, "batch_size": 4},
                "stylegan_steps": (1, 2), "colorize": {"hw": (96, 64), "batch": 4, "runs": 2}}
    return {"crop": (768, 512), "page": (1024, 704), "batch": 4, "generator": ColorizerConfig(), "discriminator": DiscriminatorConfig(),
            "warmup": 3, "steps": 9, "workers": (0, 8), "stylegan": {"size": 256, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2,
                                                                      "channel_max": 512, "batch_size": 32},
            "stylegan_steps": (4, 16), "colorize": {"hw": (768, 512), "batch": 32, "runs": 10}}


# --- the machine ---------------------------------------------------------------------------------------


def _nvidia_smi(*query: str) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [v.strip() for v in out.splitlines()[0].split(",")] if out.strip() else None


def device_info(device: torch.device) -> dict:
    from mangacolor.device import bf16_native

    info = {"device": str(device), "torch": torch.__version__, "torch_cuda": torch.version.cuda, "python": platform.python_version(),
            "bf16_native": bf16_native(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        smi = _nvidia_smi("name", "driver_version", "memory.total") or [None, None, None]
        info |= {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                 "driver": smi[1], "cudnn": torch.backends.cudnn.version(), "gpus_visible": torch.cuda.device_count()}
    else:
        info |= {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return info


class GpuBusy:
    """The GPU's utilisation (%), sampled by `nvidia-smi` every 200 ms while the block runs; None without one."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.proc = device, [], None

    def __enter__(self) -> "GpuBusy":
        exe = shutil.which("nvidia-smi")
        if self.device.type == "cuda" and exe:
            index = os.environ.get("CUDA_VISIBLE_DEVICES", str(self.device.index or 0)).split(",")[self.device.index or 0]
            self.proc = subprocess.Popen([exe, "-i", index, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def start(self) -> None:
        self.samples.clear()  # only what comes after: the steps, not the set-up

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


# --- the parts ----------------------------------------------------------------------------------------------


def _pages(n: int, hw: tuple[int, int], seed: int) -> tuple[list, list]:
    """Pages with panels and flat colours: cheap to make, shaped like the real ones."""
    rng = np.random.default_rng(seed)
    h, w = hw
    bw, colour = [], []
    for _ in range(n):
        c = np.empty((h, w, 3), np.uint8)
        c[:] = rng.integers(150, 256, 3)
        for _ in range(6):
            y, x = int(rng.integers(0, h - h // 4)), int(rng.integers(0, w - w // 4))
            c[y:y + h // 4, x:x + w // 4] = rng.integers(0, 256, 3)
        colour.append(c)
        bw.append(c.mean(2).astype(np.uint8))
    return bw, colour


def step1(size: dict, workers: int, spec, out: Path, micro_batch: int | None = None, checkpointing: bool = False) -> dict:
    """Seconds per step-1 step, peak memory and GPU busy % at `size`, after `warmup` untimed steps."""
    from mangacolor.tracking import NullTracker
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, train_colorizer

    bw, colour = _pages(16, size["page"], 0)
    drafts = [c[::4, ::4].copy() for c in colour]
    real_bw, _ = _pages(16, size["page"], 1)
    total = size["warmup"] + size["steps"]
    cfg = ColorizerTrainConfig(generator=size["generator"], discriminator=size["discriminator"], crop=size["crop"], batch_size=size["batch"],
                               allow_random_vgg=True, max_steps=total, log_every=size["warmup"], checkpoint_every=10**9, num_workers=workers,
                               micro_batch=micro_batch, checkpointing=checkpointing, batchnorm="frozen" if micro_batch else "batch")
    device = spec.device
    stamps: list[tuple[float, int]] = []

    with GpuBusy(device) as busy:
        def progress(message: str) -> None:
            m = re.search(r"step (\d+)/", message)
            if m:
                _sync(device)
                stamps.append((time.perf_counter(), int(m.group(1))))
                if len(stamps) == 1:
                    busy.start()
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)

        t0 = time.perf_counter()
        train_colorizer(cfg, PairDataset(bw, colour, drafts), BwDataset(real_bw), out, spec, NullTracker(), progress, step="adapt",
                        snapshot_every=10**9)
        wall = time.perf_counter() - t0
    if len(stamps) >= 2:
        (t_a, s_a), (t_b, s_b) = stamps[0], stamps[-1]
        per_step = (t_b - t_a) / max(1, s_b - s_a)
    else:
        per_step = wall / total
    return {"workers": workers, "s_per_step": round(per_step, 4), "peak_memory_gb": _peak_gb(device), "gpu_busy_pct": busy.mean,
            "micro_batch": micro_batch, "checkpointing": checkpointing}


def stylegan_rate(size: dict, spec, out: Path) -> dict:
    from mangacolor.tracking import NullTracker
    from mangacolor.training.stylegan import StyleGANTrainConfig, train_stylegan

    s = size["stylegan"]
    warm, timed = size["stylegan_steps"]
    images = list(np.random.default_rng(0).integers(0, 256, (64, s["size"], s["size"], 3), dtype=np.uint8))
    stamps: list[tuple[float, int]] = []

    def progress(message: str) -> None:
        m = re.search(r"(?:step|iteration|it) (\d+)", message)
        if m:
            _sync(spec.device)
            stamps.append((time.perf_counter(), int(m.group(1))))

    cfg = StyleGANTrainConfig(**s, iterations=warm + timed, log_every=warm, sample_every=10**9, checkpoint_every=10**9, n_samples=2,
                              truncations=(1.0,), num_workers=4 if spec.device.type == "cuda" else 0)
    t0 = time.perf_counter()
    train_stylegan(cfg, images, out, spec, NullTracker(), progress)
    wall = time.perf_counter() - t0
    if len(stamps) >= 2:
        seconds, steps = stamps[-1][0] - stamps[0][0], stamps[-1][1] - stamps[0][1]
    else:
        seconds, steps = wall, warm + timed
    return {"batch": s["batch_size"], "size": s["size"], "images_per_s": round(s["batch_size"] * steps / seconds, 2),
            "s_per_step": round(seconds / steps, 4), "peak_memory_gb": _peak_gb(spec.device)}


def colorize_rate(size: dict, spec) -> dict:
    """Pages/s of the paper's generator on batches of 512x768 pages in bf16 (or fp32 where bf16 is not native)."""
    from mangacolor.device import bf16_native
    from mangacolor.inference.colorize import InferenceOptions, colorize_pages, prepare_generator
    from mangacolor.models.colorizer import build_generator

    c = size["colorize"]
    device = spec.device
    amp = torch.bfloat16 if bf16_native(device) else None
    options = InferenceOptions(amp_dtype=amp)
    generator = prepare_generator(build_generator(size["generator"]), options, device)
    h, w = c["hw"]
    batch = c["batch"]
    while True:  # the largest batch that fits, halving from the configured one
        try:
            bw = torch.rand(batch, 1, h, w, device=device) * 2 - 1
            draft = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
            colorize_pages(generator, bw, draft=draft, options=options)  # kernel choice, allocator
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(c["runs"]):
        colorize_pages(generator, bw, draft=draft, options=options)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"hw": [h, w], "batch": batch, "precision": "bf16" if amp else "fp32", "pages_per_s": round(c["runs"] * batch / seconds, 2),
            "peak_memory_gb": _peak_gb(device)}


def kill_resume(device: torch.device, out: Path) -> dict:
    """The step-1 drill on this device: never killed, then SIGKILLed after its 2nd checkpoint and resumed."""
    from tests.training.killdrill import max_abs_diff, run

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    drill = [sys.executable, "-m", "tests.training.killdrill", "colorizer_adapt", "--fp32", "--device", device.type]
    run("colorizer_adapt", out / "straight", fp32=True, device=device.type)  # here; the killed one in a process of its own
    killed = subprocess.Popen([*drill, str(out / "killed"), "--step-delay", "0.5"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while killed.poll() is None and time.monotonic() < deadline:
        if len(list((out / "killed" / "checkpoints").glob("step-*/state.json"))) >= 2:
            break
        time.sleep(0.05)
    at = max((int(p.parent.name.split("-")[1]) for p in (out / "killed" / "checkpoints").glob("step-*/state.json")), default=0)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    subprocess.run([*drill, str(out / "killed")], cwd=ROOT, env=env, check=True, capture_output=True)
    diffs = {p.name: max_abs_diff(p, out / "killed" / p.name) for p in sorted((out / "straight").glob("*.safetensors"))}
    return {"killed_after_checkpoint": at, "max_abs_diff": max(diffs.values()), "by_file": diffs}


# --- the run --------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not the figures")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default 480)")
    args = parser.parse_args()
    start = time.monotonic()

    from mangacolor.device import resolve_device

    if args.cpu_smoke:
        torch.set_num_threads(int(os.environ.get("MANGACOLOR_THREADS", "1")))
        spec = resolve_device("cpu", "fp32", seed=0)
    else:
        if not torch.cuda.is_available():
            smi = _nvidia_smi("name", "driver_version")
            seen = f"nvidia-smi sees {smi[0]} with driver {smi[1]}" if smi else "nvidia-smi finds no GPU"
            print(f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA device; {seen}. The lock's CUDA 13 "
                  "build needs an NVIDIA driver >= 580. On a machine without a GPU: --cpu-smoke", file=sys.stderr)
            return 2
        spec = resolve_device("cuda", "auto", seed=0)
    size = sizes(args.cpu_smoke)
    report: dict = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "device": device_info(spec.device),
                    "precision": str(spec.amp_dtype or "fp32").replace("torch.", "")}
    print(json.dumps(report["device"]), flush=True)
    failed = []
    # (name, share of the budget it may start before, function)
    parts = [("step1", 0.45, lambda out: [step1(size, w, spec, out / f"w{w}") for w in size["workers"]]),
             # The same batch in micro-batches of 1 with the generator's activations recomputed: the memory it saves.
             ("step1_micro", 0.6, lambda out: step1(size, size["workers"][-1], spec, out, micro_batch=1, checkpointing=True)),
             ("stylegan", 0.7, lambda out: stylegan_rate(size, spec, out)),
             ("colorize", 0.8, lambda out: colorize_rate(size, spec)),
             ("kill_resume", 0.85, lambda out: kill_resume(spec.device, out))]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, share, run in parts:
            spent = time.monotonic() - start
            if spent > share * args.budget:
                report[name] = {"skipped": f"{spent:.0f} s of the {args.budget:.0f} s budget spent"}
                print(f"{name}: skipped ({report[name]['skipped']})", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                report[name] = run(Path(tmp) / name)
            except torch.OutOfMemoryError as exc:
                report[name] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
                failed.append(name)
            except Exception as exc:  # noqa: BLE001 - a part's failure is a finding; the other parts still run
                report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
                failed.append(name)
            if spec.device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(report[name])}", flush=True)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["failed"] = failed
    print(f"gpu_check: {report['seconds']} s, {'all parts ran' if not failed else 'FAILED: ' + ', '.join(failed)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
