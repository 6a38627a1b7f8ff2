"""One rank of a training asset launched with `torchrun` through Dagster Pipes (assets/launch.py).

    python -m torch.distributed.run --nproc_per_node N -m pipelines.torchrun_worker SPEC.json

Every rank rebuilds the stage's plan from the store (same rows, same config) and trains its shard of
each global batch; rank 0 alone opens the Pipes session, logs progress and metrics to Dagster and to
the asset's MLflow run, writes the checkpoints and weights, and reports the materialization metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from assets.resources import DeviceResource, SettingsResource
from mangacolor.io.store import Store
from mangacolor.stages import launch
from mangacolor.tracking import MlflowTracker, NullTracker
from mangacolor.training import distributed


def _common(spec: dict):
    """(store, settings, device spec) as the asset built them, the run's Launchpad settings included."""
    settings = SettingsResource(**{**spec.get("settings", {"preset": spec["preset"]}), "artifact_root": spec["artifact_root"]})
    st = Store(spec["artifact_root"], spec.get("storage_options") or None)
    device = DeviceResource(**{k: v for k, v in spec["device"].items() if v is not None}).spec()
    return st, settings, device


def _train(spec: dict, tracker, progress):
    """The stage of `spec` in this rank (mangacolor/stages/launch.py), with the store, settings and device the asset had."""
    st, settings, device = _common(spec)
    return launch.run(spec["stage"], st, settings.load(), spec["titles"], Path(spec["work"]), device, tracker, progress,
                      **spec.get("args", {}))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["stage"] not in launch.STAGES:  # before the process group starts
        raise KeyError(f"{spec_path}: unknown stage {spec['stage']!r}; expected one of {sorted(launch.STAGES)}")
    name = spec["device"].get("name") or "auto"
    device_type = "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"
    with distributed.process_group(device_type) as ctx:
        if not ctx.is_main:
            _train(spec, NullTracker(), None)
            return
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            # The run stays open in the launching asset: log to it through a client, flush, leave it running.
            tracker = MlflowTracker(spec["mlflow"]["run_id"], tracking_uri=spec["mlflow"]["tracking_uri"])
            pipes.log.info(f"torchrun: {ctx.world_size} processes, backend {torch.distributed.get_backend() if ctx.enabled else 'none'}")
            result = _train(spec, tracker, pipes.log.info)
            tracker.flush()
            pipes.report_asset_materialization(metadata={
                "train_result": {"raw_value": launch.to_json(result), "type": "json"},
                "world_size": ctx.world_size,
                "ddp_backend": torch.distributed.get_backend() if ctx.enabled else "none",
                "launched_with": "torchrun",
                "reported_by_rank": ctx.rank,
            })


if __name__ == "__main__":
    main(sys.argv[1])
