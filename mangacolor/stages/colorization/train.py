"""The colorization network's training stages: step 1, its matched-pair fine-tune, step 2 (paper §III, Appendix D).

Each runs `mangacolor.training.colorizer.train_colorizer` on what `data` reads, with the loop's config
derived from the preset section (`config`), and records its generator snapshots with their sample grids.
`train_step1`, `finetune_train` and `step2_train` are what the assets run in their own process and the
`torchrun` worker in every rank (mangacolor/stages/launch.py): each derives its rows from the store, so
every process of a launched run sees the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from torch.utils.data import Dataset

from mangacolor.io.store import Store, VersionWriter, sha256_bytes
from mangacolor.stages import StageInputError
from mangacolor.stages.colorization.config import ColorizationConfig, colorization_config, snapshot_every, total_steps
from mangacolor.stages.colorization.data import (
    PairInputs, StoreBw, StorePairs, chosen_snapshots, matched_pairs, pseudolabel_pairs, real_training_rows,
    stored_snapshots, synthetic_pairs, with_page_drafts,
)
from mangacolor.stages.common import to_local
from mangacolor.training.colorizer import ColorizerTrainConfig, ColorizerTrainResult, Step, train_colorizer


class PrefixedTracker:
    """A tracker that files everything of one sub-run under `prefix/` (several loops, one MLflow run)."""

    def __init__(self, tracker, prefix: str):
        self.tracker, self.prefix = tracker, prefix

    def log_params(self, params):
        self.tracker.log_params({self.prefix: params})

    def log_metrics(self, metrics, step=None):
        self.tracker.log_metrics({f"{self.prefix}/{k}": v for k, v in metrics.items()}, step=step)

    def log_image(self, name, image):
        self.tracker.log_image(f"{self.prefix}/{name}", image)

    def log_text(self, name, text):
        self.tracker.log_text(f"{self.prefix}/{name}", text)

    def log_artifact(self, path, artifact_path=None):
        self.tracker.log_artifact(path, f"{self.prefix}/{artifact_path}" if artifact_path else self.prefix)


@dataclass
class FinetunedSnapshot:
    step: int  # the step-1 snapshot it started from (the name the ranking and the override use)
    epoch: int
    weights: str
    samples: str
    finetune_steps: int
    resumed_from: int


def finetune_snapshots(cfg, snapshots: Sequence[tuple[int, int, Path]], pairs: Dataset, work: Path, device, tracker,
                       progress: Callable[[str], None] | None = None, augment=None) -> list[FinetunedSnapshot]:
    """Each step-1 snapshot (step, epoch, weights) fine-tuned on the matched real pairs, supervised, for the
    configured (at most two) epochs: the last part of step 1, before snapshots make pseudolabels.

    Each run continues the cue schedule where its snapshot left it (`cue_epoch`) and resumes from its
    own checkpoints under `work/step-N`. Without pairs the snapshots pass through unchanged.
    """
    from mangacolor.training.checkpoint import Checkpointer
    from mangacolor.training.colorizer import train_colorizer

    out = []
    for step, epoch, path in snapshots:
        if len(pairs) == 0:
            out.append(FinetunedSnapshot(step, epoch, str(path), "", 0, 0))
            continue
        folder = Path(work) / f"step-{step:08d}"
        latest = Checkpointer(folder / "checkpoints").latest()
        resumed = int(latest.name.split("-")[1]) if latest else 0
        result = train_colorizer(cfg, pairs, None, folder, device, PrefixedTracker(tracker, f"snapshot-{step}"), progress,
                                 step="finetune", init_weights=path, snapshot_every=total_steps(cfg, "finetune", len(pairs)),
                                 augment=augment)
        out.append(FinetunedSnapshot(step, epoch, str(result.generator), result.snapshots[-1].samples, result.steps, resumed))
    return out


def write_snapshots(writer: VersionWriter, snapshots: Sequence) -> None:
    """Generator snapshots (`train_colorizer`'s `Snapshot`s, or `FinetunedSnapshot`s) with their sample grids, one row each."""
    for snap in sorted({s.step: s for s in snapshots}.values(), key=lambda s: s.step):
        data = Path(snap.weights).read_bytes()
        folder = f"snapshots/step-{snap.step:08d}"
        writer.add({"id": f"snapshot:{snap.step:08d}", "title": None, "page": None, "sha256": sha256_bytes(data), "status": "ok",
                    "reason": None, "role": "snapshot", "step": snap.step, "epoch": snap.epoch,
                    "finetune_steps": getattr(snap, "finetune_steps", 0),
                    "path": writer.write(f"{folder}/generator.safetensors", data),
                    "samples_path": writer.write(f"{folder}/samples.png", Path(snap.samples).read_bytes()) if snap.samples else None})


# --- step 1: adversarial domain adaptation -----------------------------------------------------------


class Step1Plan(NamedTuple):
    """What step 1 trains on and how."""

    config: ColorizerTrainConfig
    step: Step  # the loop's step: "adapt", or "finetune" without adversarial adaptation
    pairs: PairInputs
    real: pd.DataFrame
    snapshot_every: int


def step1_plan(st: Store, cfg: ColorizationConfig, titles: list[str]) -> Step1Plan:
    """Step 1's loop config, loop step, synthetic pairs of `titles`, real rows and snapshot interval."""
    flags = cfg.variant
    pairs = synthetic_pairs(st, titles, flags.use_drafts, flags.synthetic)
    if pairs.rows.empty:
        raise StageInputError("no colour pages to pair: materialize color_pages (and synthetic_bw_pages) for at least one title")
    tcfg = cfg.train_config("step1", "adapt")
    if flags.adversarial_adaptation:
        step, real = "adapt", real_training_rows(st, cfg.max_real_pages, cfg.seed)
        if flags.use_drafts:
            real, notes = with_page_drafts(st, real)
            pairs.notes.extend(notes)
    else:
        # Without adaptation no real page may even pass through the network (its batch-norm
        # statistics would adapt): the loop's supervised mode with the synthetic adversarial term only.
        step, real = "finetune", real_training_rows(st, 0)
        tcfg = replace(tcfg, losses=replace(tcfg.losses, real_g=0.0, real_d=0.0))
    every = snapshot_every(tcfg, step, len(pairs.rows), cfg.step1.snapshots)
    return Step1Plan(tcfg, step, pairs, real, every)


def train_step1(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress,
                plan: Step1Plan | None = None) -> ColorizerTrainResult:
    """Step 1's loop (`plan`: the asset's, already derived; None: derived here, as every torchrun rank does)."""
    cfg = colorization_config(preset)
    tcfg, step, pairs, real, every = plan or step1_plan(st, cfg, titles)
    return train_colorizer(tcfg, StorePairs(st, pairs.rows), StoreBw(st, real) if len(real) else None, work,
                           spec, tracker, progress=progress, step=step, snapshot_every=every, augment=cfg.augmentation())


# --- the end of step 1: fine-tune on matched real pairs (Appendix D) ----------------------------------


def finetune_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress,
                   tmp: Path) -> list[FinetunedSnapshot]:
    """The fine-tune of every step-1 snapshot (each copied into `tmp`; the fine-tuned weights go to the shared `work`)."""
    cfg = colorization_config(preset)
    vdir1, shots = stored_snapshots(st, "colorizer_step1_snapshots")
    pairs = matched_pairs(st, cfg.variant.use_drafts)
    local = [(int(r.step), int(r.epoch), to_local(st, f"{vdir1}/{r.path}", tmp / f"{int(r.step)}.safetensors"))
             for r in shots.itertuples()]
    return finetune_snapshots(cfg.train_config("finetune", "finetune"), local, StorePairs(st, pairs.rows), work,
                              spec, tracker, progress=progress, augment=cfg.augmentation())


# --- step 2: self-training ----------------------------------------------------------------------------


def step2_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress, tmp: Path) -> ColorizerTrainResult:
    """Step 2's loop (the initial weights, when it starts from the best snapshot, are copied into `tmp`)."""
    cfg = colorization_config(preset)
    flags = cfg.variant
    pairs = synthetic_pairs(st, titles, flags.use_drafts, flags.synthetic)
    pseudo = pseudolabel_pairs(st, flags.use_drafts)
    tcfg = cfg.train_config("step2", "self_train")
    init = to_local(st, chosen_snapshots(st).iloc[0]["uri"], tmp / "init.safetensors") if cfg.step2.init == "best_snapshot" else None
    return train_colorizer(tcfg, StorePairs(st, pairs.rows), StorePairs(st, pseudo), work, spec, tracker,
                           progress=progress, step="self_train", init_weights=init,
                           snapshot_every=total_steps(tcfg, "self_train", len(pairs.rows) + len(pseudo)),
                           augment=cfg.augmentation())
