"""The training stages by name: what a training asset runs in its own process, and what the `torchrun` worker
(pipelines/torchrun_worker.py) runs in every rank when the asset launches it on several GPUs.

Every stage is called as `train(store, preset, titles, work, device spec, tracker, progress, **args)` and
derives its rows from the store, so every rank sees the same rows; the colorizer's fine-tune and step 2
also take a temporary folder of the process's own for the local copies of their input weights. Rank 0
reports the loop's result as JSON (`to_json`); the asset gets it back as the loop returned it
(`from_json`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mangacolor.stages import drafting, synthetic
from mangacolor.stages.colorization import train

STAGES: dict[str, Callable[..., Any]] = {
    "colorizer_step1_snapshots": train.train_step1,
    "colorizer_step1_finetuned": train.finetune_train,
    "colorizer_step2": train.step2_train,
    "stylegan": drafting.stylegan_train,
    "inversion_encoder": drafting.encoder_train,
    "drafting_network": drafting.encoder_train,
    "drafting_network_final": drafting.encoder_train,
    "refiner_model": synthetic.refiner_train,
    "cut_model": synthetic.cut_train,
}
# The stages that copy input weights into a temporary folder of the process's own.
WITH_TEMPORARY_FOLDER = {"colorizer_step1_finetuned", "colorizer_step2"}


def run(stage: str, store, preset: dict, titles: list[str], work: Path, spec, tracker, progress, **args) -> Any:
    """Stage `stage` in this process, as a rank of a launched run does."""
    fn = STAGES[stage]
    if stage not in WITH_TEMPORARY_FOLDER:
        return fn(store, preset, titles, work, spec, tracker, progress, **args)
    with tempfile.TemporaryDirectory() as folder:
        return fn(store, preset, titles, work, spec, tracker, progress, Path(folder), **args)


def to_json(result: Any) -> Any:
    """The loop's result as JSON for the report of rank 0: dataclasses as dicts, paths as strings."""
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    elif isinstance(result, (list, tuple)):
        result = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in result]
    return json.loads(json.dumps(result, default=str))


def from_json(stage: str, raw: Any) -> Any:
    """The loop's result of `stage` from the JSON rank 0 reported: what the stage returns in this process."""
    from mangacolor.training.colorizer import ColorizerTrainResult, Snapshot

    if stage in ("colorizer_step1_snapshots", "colorizer_step2"):
        return ColorizerTrainResult(
            generator=Path(raw["generator"]), discriminator=Path(raw["discriminator"]) if raw["discriminator"] else None,
            snapshots=[Snapshot(**s) for s in raw["snapshots"]], steps=raw["steps"], final_metrics=raw["final_metrics"],
            perceptual_random=raw["perceptual_random"])
    if stage == "colorizer_step1_finetuned":
        return [train.FinetunedSnapshot(**t) for t in raw]
    return raw  # the other loops return JSON-able dicts
