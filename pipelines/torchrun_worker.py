"""One rank of a training asset launched with `torchrun` through Dagster Pipes (assets/launch.py).

    python -m torch.distributed.run --nproc-per-node N -m pipelines.torchrun_worker SPEC

SPEC is a local path (a folder the asset shares) or a store URI (`s3://…/.launches/<stage>/<run>/spec.json`: a
training pod). Every rank rebuilds the stage's plan from the store (same rows, same config) and trains its
shard of each global batch; rank 0 alone opens the Pipes session, logs progress and metrics to Dagster and to
the asset's MLflow run, writes the checkpoints and weights, and reports the materialization metadata. When
the spec came through the store, rank 0 also puts the files its result names there (`stages.launch.publish`):
the pod's folders die with it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fsspec
import torch

from assets.resources import DeviceResource, SettingsResource
from mangacolor.config import work_dir
from mangacolor.io.store import Store
from mangacolor.stages import launch
from mangacolor.tracking import MlflowTracker, NullTracker
from mangacolor.training import distributed


def read_spec(ref: str) -> dict:
    with fsspec.open(ref, "rb") as f:
        spec = json.loads(f.read())
    if spec.get("stage") not in launch.STAGES:  # before the process group starts
        raise KeyError(f"{ref}: unknown stage {spec.get('stage')!r}; expected one of {sorted(launch.STAGES)}")
    return spec


def work_folder(spec: dict) -> Path:
    """The stage's work folder in this process: the same path below this pod's work folder as below the asset's."""
    where = spec["work"]
    return work_dir() / where["below_work_dir"] if "below_work_dir" in where else Path(where["path"])


def _common(spec: dict):
    """(store, settings, device spec) as the asset built them, the run's Launchpad settings included."""
    settings = SettingsResource(**{**spec["settings"], "artifact_root": spec["artifact_root"]})
    st = Store(spec["artifact_root"], spec.get("storage_options") or None)
    device = DeviceResource(**{k: v for k, v in spec["device"].items() if v is not None}).spec()
    return st, settings, device


def _train(spec: dict, tracker, progress):
    """The stage of `spec` in this rank (mangacolor/stages/launch.py), with the store, settings and device the asset had."""
    st, settings, device = _common(spec)
    return st, launch.run(spec["stage"], st, settings.load(), spec["titles"], work_folder(spec), device, tracker, progress,
                          **spec.get("args", {}))


def _device_type(spec: dict) -> str:
    name = spec["device"].get("name") or "auto"
    if not (name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())):
        return "cpu"
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.device_count() < ranks_here:  # N ranks on fewer GPUs would share one: NCCL refuses ("duplicate GPU")
        raise RuntimeError(f"{ranks_here} ranks on this node but {torch.cuda.device_count()} GPU(s) visible: the pod must hold "
                           "one GPU per rank (assets/launch.py asks for them; check the pod's nvidia.com/gpu)")
    return "cuda"


def main(spec_ref: str) -> None:
    spec = read_spec(spec_ref)
    with distributed.process_group(_device_type(spec)) as ctx:
        if not ctx.is_main:
            _train(spec, NullTracker(), None)
            return
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            # The run stays open in the launching asset: log to it through a client, flush, leave it running.
            tracker = MlflowTracker(spec["mlflow"]["run_id"], tracking_uri=spec["mlflow"]["tracking_uri"])
            pipes.log.info(f"torchrun: {ctx.world_size} processes, backend {torch.distributed.get_backend() if ctx.enabled else 'none'}")
            st, result = _train(spec, tracker, pipes.log.info)
            tracker.flush()
            raw = launch.to_json(result)
            if spec.get("transfer") == "store":
                raw = launch.publish(raw, work_folder(spec), st, spec["results"])
            pipes.report_asset_materialization(metadata={
                "train_result": {"raw_value": raw, "type": "json"},
                "world_size": ctx.world_size,
                "ddp_backend": torch.distributed.get_backend() if ctx.enabled else "none",
                "launched_with": "torchrun",
                "reported_by_rank": ctx.rank,
            })


if __name__ == "__main__":
    main(sys.argv[1])
