"""benchmarks/gpu_check.py, the check a GPU machine runs first, at tiny sizes on the CPU (`--cpu-smoke`): every part
runs and reports, so the first session with a GPU spends its minutes measuring, not debugging."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_part_at_tiny_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and report["failed"] == []
    assert {"torch", "torch_cuda", "bf16_native"} <= set(report["device"])
    runs = {r["workers"]: r for r in report["step1"]}
    assert set(runs) == {0, 2} and all(r["s_per_step"] > 0 for r in runs.values())
    assert report["step1_micro"]["micro_batch"] == 1 and report["step1_micro"]["checkpointing"] is True
    assert report["stylegan"]["images_per_s"] > 0 and report["colorize"]["pages_per_s"] > 0
    # Killed after a checkpoint and resumed on the CPU: the weights of a run never killed, bit for bit.
    assert report["kill_resume"]["killed_after_checkpoint"] >= 1 and report["kill_resume"]["max_abs_diff"] == 0.0
