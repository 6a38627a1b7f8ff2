"""The code location loads without torch or MLflow.

Every Dagster run's process, the daemon's code server and each reload import `pipelines.definitions`; with
torch and MLflow at the top of the asset modules that took 25 s of CPU per process on the 2-core machine, and
every ingest run paid it. The assets import them when they compute.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "mlflow", "lpips", "albumentations", "scipy")


def test_the_code_location_loads_without_torch_or_mlflow():
    code = ("import sys; import pipelines.definitions as d; d.defs.resolve_asset_graph(); d.defs.resolve_all_job_defs(); "
            "d.defs.resolve_schedule_def('manga109_weekly'); d.defs.resolve_sensor_def('title_sensor'); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"loading the code location imported {done.stdout.strip()}"


def test_dg_check_defs_passes_on_this_layout(tmp_path):
    """`uv run dg check defs` works here (pyproject.toml [tool.dg]: the project's Definitions are
    pipelines/definitions.py's), as Dagster users expect of a project; so do `dg list defs` and `dg dev`."""
    import os

    dg = Path(sys.executable).with_name("dg")  # dagster-dg-cli of the dev group, in this environment
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DAGSTER_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}
    check = subprocess.run([str(dg), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
