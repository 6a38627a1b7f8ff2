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
import tempfile
from pathlib import Path

import torch

from assets.resources import DeviceResource, SettingsResource
from mangacolor.io.store import Store
from mangacolor.stages import drafting, synthetic
from mangacolor.stages.colorization import train
from mangacolor.tracking import MlflowTracker, NullTracker
from mangacolor.training import distributed


def _common(spec: dict):
    """(store, settings, device spec) as the asset built them, the run's Launchpad settings included."""
    settings = SettingsResource(**{**spec.get("settings", {"preset": spec["preset"]}), "artifact_root": spec["artifact_root"]})
    st = Store(spec["artifact_root"], spec.get("storage_options") or None)
    device = DeviceResource(**{k: v for k, v in spec["device"].items() if v is not None}).spec()
    return st, settings, device


def _stage(train, tmp: bool = False):
    """A stage whose asset calls `launch.run_stage(..., train, ...)`: the same call, in this rank (`tmp`: with
    a temporary folder of this rank's own, for the local copies of its input weights)."""
    def run(spec: dict, tracker, progress):
        st, settings, device = _common(spec)
        args = (st, settings.load(), spec["titles"], Path(spec["work"]), device, tracker, progress)
        if not tmp:
            return train(*args, **spec.get("args", {}))
        with tempfile.TemporaryDirectory() as folder:
            return train(*args, Path(folder), **spec.get("args", {}))
    return run


# Stage name (the asset's) -> fn(spec, tracker, progress) returning the loop's result (dataclasses, lists, dicts).
STAGES = {
    "colorizer_step1_snapshots": _stage(train.train_step1),
    "colorizer_step1_finetuned": _stage(train.finetune_train, tmp=True),
    "colorizer_step2": _stage(train.step2_train, tmp=True),
    "stylegan": _stage(drafting.stylegan_train),
    "inversion_encoder": _stage(drafting.encoder_train),
    "drafting_network": _stage(drafting.encoder_train),
    "drafting_network_final": _stage(drafting.encoder_train),
    "refiner_model": _stage(synthetic.refiner_train),
    "cut_model": _stage(synthetic.cut_train),
}


def as_json(result):
    """The loop's result as JSON for the Pipes report: dataclasses as dicts, paths as strings."""
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    elif isinstance(result, (list, tuple)):
        result = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in result]
    return json.loads(json.dumps(result, default=str))


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
            # The run stays open in the launching asset: log to it through a client, flush, leave it running.
            tracker = MlflowTracker(spec["mlflow"]["run_id"], tracking_uri=spec["mlflow"]["tracking_uri"])
            pipes.log.info(f"torchrun: {ctx.world_size} processes, backend {torch.distributed.get_backend() if ctx.enabled else 'none'}")
            result = train(spec, tracker, pipes.log.info)
            tracker.flush()
            pipes.report_asset_materialization(metadata={
                "train_result": {"raw_value": as_json(result), "type": "json"},
                "world_size": ctx.world_size,
                "ddp_backend": torch.distributed.get_backend() if ctx.enabled else "none",
                "launched_with": "torchrun",
                "reported_by_rank": ctx.rank,
            })


if __name__ == "__main__":
    main(sys.argv[1])
