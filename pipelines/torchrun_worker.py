"""One rank of a training asset launched with `torchrun` through Dagster Pipes (assets/launch.py).

    python -m torch.distributed.run --nproc_per_node N -m pipelines.torchrun_worker SPEC.json

Every rank rebuilds the stage's plan from the store (same rows, same config) and trains its shard of
each global batch; rank 0 alone opens the Pipes session, logs progress and metrics to Dagster and to
the asset's MLflow run, writes the checkpoints and weights, and reports the materialization metadata.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import mlflow
import torch

from assets import colorization
from assets.resources import DeviceResource, SettingsResource
from mangacolor.io.store import Store
from mangacolor.tracking import MlflowTracker, NullTracker
from mangacolor.training import distributed


def _step1(spec: dict, tracker, progress):
    settings = SettingsResource(**{**spec.get("settings", {"preset": spec["preset"]}), "artifact_root": spec["artifact_root"]})
    cfg = colorization._config(settings)
    st = Store(spec["artifact_root"], spec.get("storage_options") or None)
    device = DeviceResource(**{k: v for k, v in spec["device"].items() if v is not None}).spec()
    tcfg, step, pairs, real, every = colorization.step1_plan(st, cfg, spec["titles"])
    return colorization.train_step1(st, cfg, tcfg, step, pairs, real, every, Path(spec["work"]), device, tracker, progress)


STAGES = {"colorizer_step1_snapshots": _step1}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    train = STAGES[spec["stage"]]
    name = spec["device"].get("name") or "auto"
    device_type = "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"
    with distributed.process_group(device_type) as ctx:
        if not ctx.is_main:
            train(spec, NullTracker(), None)
            return
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            mlflow.set_tracking_uri(spec["mlflow"]["tracking_uri"])
            with mlflow.start_run(run_id=spec["mlflow"]["run_id"]):
                pipes.log.info(f"torchrun: {ctx.world_size} processes, backend {torch.distributed.get_backend() if ctx.enabled else 'none'}")
                result = train(spec, MlflowTracker(spec["mlflow"]["run_id"]), pipes.log.info)
            raw = dataclasses.asdict(result)
            raw = {**raw, "generator": str(result.generator), "discriminator": str(result.discriminator) if result.discriminator else None}
            pipes.report_asset_materialization(metadata={
                "train_result": {"raw_value": raw, "type": "json"},
                "world_size": ctx.world_size,
                "ddp_backend": torch.distributed.get_backend() if ctx.enabled else "none",
                "launched_with": "torchrun",
                "reported_by_rank": ctx.rank,
            })


if __name__ == "__main__":
    main(sys.argv[1])
