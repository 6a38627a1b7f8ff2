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
import posixpath
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


def _colorizer_config(stage: str, preset: dict):
    from mangacolor.stages.colorization.config import colorization_config

    section, step = {"colorizer_step1_snapshots": ("step1", "adapt"), "colorizer_step1_finetuned": ("finetune", "finetune"),
                     "colorizer_step2": ("step2", "self_train")}[stage]
    return colorization_config(preset).train_config(section, step)


def global_batch(stage: str, preset: dict) -> int:
    """The global batch `stage` splits over its ranks, as its loop will read it from `preset`."""
    from mangacolor.config import stage_config

    if stage.startswith("colorizer_"):
        return _colorizer_config(stage, preset).batch_size
    if stage == "stylegan":
        return drafting.stylegan_config(preset)[0].batch_size
    if stage in ("inversion_encoder", "drafting_network", "drafting_network_final"):
        return drafting.psp_config(preset, "inversion_encoder" if stage == "inversion_encoder" else "drafting_network", 1).batch_size
    if stage == "refiner_model":
        from mangacolor.training.refiner import RefinerTrainConfig

        return stage_config(preset, "refiner", RefinerTrainConfig).batch_size
    if stage == "cut_model":
        from mangacolor.training.cut import CUTTrainConfig

        return stage_config(preset, "cut", CUTTrainConfig).batch_size
    raise KeyError(f"unknown training stage {stage!r}; expected one of {sorted(STAGES)}")


def ranks(stage: str, preset: dict, gpus: int, nnodes: int = 1) -> tuple[int, int]:
    """(processes per node, nodes) that train `stage` on at most `gpus` GPUs per node and `nnodes` nodes.

    The one rule for how many GPUs a stage takes: its global batch splits evenly over its ranks (each rank computes
    its rows of every step), so a stage never runs more ranks than its batch allows. The most ranks that divide the
    batch are taken, on as few nodes as that needs: CUT's batch of 1 trains in one process whatever the GPUs; the
    paper's step 1 (batch 4) on 8 GPUs takes 4 of them. A colorizer stage's micro-batches must split each rank's
    rows evenly too."""
    if gpus < 1 or nnodes < 1:
        raise ValueError(f"gpus and nnodes must be 1 or more, got gpus={gpus}, nnodes={nnodes}")
    batch = global_batch(stage, preset)
    micro = _colorizer_config(stage, preset).micro_batch if stage.startswith("colorizer_") else None

    def fits(world: int) -> bool:  # the batch splits over the ranks, and each rank's rows over its micro-batches
        return batch % world == 0 and (micro is None or batch // world <= micro or (batch // world) % micro == 0)

    best = (1, 1)
    for nodes in range(1, nnodes + 1):
        for per_node in range(1, gpus + 1):
            if fits(per_node * nodes) and per_node * nodes > best[0] * best[1]:
                best = (per_node, nodes)
    return best


def run(stage: str, store, preset: dict, titles: list[str], work: Path, spec, tracker, progress, **args) -> Any:
    """Stage `stage` in this process, as a rank of a launched run does."""
    fn = STAGES[stage]
    if stage not in WITH_TEMPORARY_FOLDER:
        return fn(store, preset, titles, work, spec, tracker, progress, **args)
    with tempfile.TemporaryDirectory() as folder:
        return fn(store, preset, titles, work, spec, tracker, progress, Path(folder), **args)


# A path in a launched run's work folder, in the JSON rank 0 reports when the work folder is not shared
# (a training pod): the file travels through the store and lands at the same place in the asset's work folder.
IN_WORK = "@work/"


def publish(raw: Any, work: Path, store, prefix: str) -> Any:
    """`raw` (JSON) with every path into `work` replaced by `IN_WORK` + its relative path, the files (or folders) it names
    copied to `prefix` in the store: what rank 0 of a pod does before it reports."""
    root = Path(work).resolve()

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value.startswith("/"):
            path = Path(value).resolve()
            if path.is_relative_to(root) and path.exists():
                rel = path.relative_to(root)
                for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
                    store.write_bytes(store.path(prefix, f.relative_to(root).as_posix()), f.read_bytes())
                return IN_WORK + rel.as_posix()
        return value

    return walk(raw)


def fetch(raw: Any, work: Path, store, prefix: str) -> Any:
    """The inverse of `publish` in the asset's process: the files under `prefix` moved into `work`, `IN_WORK` paths
    made paths in it."""
    base = store.path(prefix)
    if store.exists(base):
        for remote in store.fs.find(base):
            local = Path(work) / posixpath.relpath(remote, base)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(store.read_bytes(remote))
        store.fs.rm(base, recursive=True)  # weights are big; the spec beside them stays for whoever debugs the launch

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value.startswith(IN_WORK):
            return str(Path(work) / value[len(IN_WORK):])
        return value

    return walk(raw)


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
