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
from mangacolor.stages.colorization.config import ColorizationConfig, colorization_config, snapshot_every, stage_flags
from mangacolor.stages.colorization.data import (
    REAL_ROLES, PairInputs,
    StoreBw,
    StorePairs,
    chosen_snapshots,
    matched_pairs,
    pseudolabel_pairs,
    stored_snapshots,
    synthetic_pairs,
    with_page_drafts,
)
from mangacolor.stages.common import real_training_rows
from mangacolor.stages.common import Recorded, add_training_rows, to_local, write_weights
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
                                 step="finetune", init_weights=path, snapshot_every=cfg.total_steps("finetune", len(pairs)),
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


def step2_pairs(st: Store, cfg: ColorizationConfig, titles: list[str]) -> tuple[PairInputs, pd.DataFrame]:
    """Step 2's synthetic pairs of `titles` and pseudolabelled real pages; no pseudolabels is an error saying what to do."""
    pairs = synthetic_pairs(st, titles, cfg.variant.use_drafts, cfg.variant.synthetic)
    pseudo = pseudolabel_pairs(st, cfg.variant.use_drafts)
    if pseudo.empty:
        raise StageInputError("pseudolabels is empty: materialize pseudolabels (with variant.self_training true) first")
    return pairs, pseudo


def step2_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress, tmp: Path) -> ColorizerTrainResult:
    """Step 2's loop (the initial weights, when it starts from the best snapshot, are copied into `tmp`)."""
    cfg = colorization_config(preset)
    pairs, pseudo = step2_pairs(st, cfg, titles)
    tcfg = cfg.train_config("step2", "self_train")
    init = to_local(st, chosen_snapshots(st).iloc[0]["uri"], tmp / "init.safetensors") if cfg.step2.init == "best_snapshot" else None
    return train_colorizer(tcfg, StorePairs(st, pairs.rows), StorePairs(st, pseudo), work, spec, tracker,
                           progress=progress, step="self_train", init_weights=init,
                           snapshot_every=tcfg.total_steps("self_train", len(pairs.rows) + len(pseudo)),
                           augment=cfg.augmentation())


# --- what each step writes to the store ------------------------------------------------------------


def record_step1(st: Store, cfg: ColorizationConfig, plan: Step1Plan, result: ColorizerTrainResult) -> Recorded:
    """Step 1's version: its snapshots with their sample grids, and the pages it read."""
    writer = st.begin("colorizer_step1_snapshots")
    write_snapshots(writer, result.snapshots)
    add_training_rows(writer, "real_bw", plan.real)
    add_training_rows(writer, "synthetic", plan.pairs.rows)
    version, vdir, frame = writer.seal(salt=stage_flags(cfg, "step1"))
    shots, real, rows = frame[frame["role"] == "snapshot"], plan.real, plan.pairs.rows
    return Recorded(version, vdir, {
        "variant": cfg.variant.name(), "loop_step": plan.step, "snapshots": len(shots),
        "snapshot_steps": [int(s) for s in shots["step"]], "synthetic_pairs": len(rows),
        "synthetic_drafts": int(rows["draft_uri"].notna().sum()), "real_pages": len(real),
        "real_drafts": int(real["draft_uri"].notna().sum()) if "draft_uri" in real else 0,
        "bw_source_by_title": plan.pairs.bw_source,
    }, f"{vdir}/{shots.iloc[-1]['samples_path']}")


def record_finetune(st: Store, cfg: ColorizationConfig, tuned: list[FinetunedSnapshot], pairs: PairInputs, tmp: Path) -> Recorded:
    """The fine-tuned snapshots' version; a snapshot that passed through keeps its step-1 grid (copied into `tmp`)."""
    vdir1, shots = stored_snapshots(st, "colorizer_step1_snapshots")
    for snap, row in zip(tuned, shots.itertuples()):
        if not snap.samples:  # passed through: the step-1 grid
            snap.samples = str(to_local(st, f"{vdir1}/{row.samples_path}", tmp / f"{snap.step}.png"))
    writer = st.begin("colorizer_step1_finetuned")
    write_snapshots(writer, tuned)
    # The weights carry what step 1 read too: the holdout check looks here as well.
    step1 = st.read_manifest(vdir1)
    for row in step1[step1["role"].isin(REAL_ROLES)].to_dict("records"):
        writer.add(row)
    add_training_rows(writer, "matched_bw", pairs.rows, id_column="bw_id")
    version, vdir, _ = writer.seal(salt=stage_flags(cfg, "finetune"))
    return Recorded(version, vdir, {
        "variant": cfg.variant.name(), "snapshots": len(tuned), "snapshot_steps": [t.step for t in tuned],
        "matched_pairs": len(pairs.rows), "finetune_steps": sum(t.finetune_steps for t in tuned),
        "finetune_steps_per_snapshot": tuned[0].finetune_steps if tuned else 0,
        "resumed_from_step": max((t.resumed_from for t in tuned), default=0),
    }, tuned[-1].samples if tuned and tuned[-1].samples else None)


def record_step2(st: Store, cfg: ColorizationConfig, result: ColorizerTrainResult, pairs: PairInputs, pseudo: pd.DataFrame,
                 best: pd.Series) -> Recorded:
    """Step 2's version: the final generator's weights and the pages it read."""
    writer = st.begin("colorizer_step2")
    write_weights(writer, Path(result.generator).read_bytes())
    add_training_rows(writer, "pseudolabel_bw", pseudo, id_column="bw_id")
    add_training_rows(writer, "synthetic", pairs.rows)
    version, vdir, _ = writer.seal(salt=stage_flags(cfg, "step2"))
    init = cfg.step2.init == "best_snapshot"
    return Recorded(version, vdir, {
        "variant": cfg.variant.name(), "synthetic_pairs": len(pairs.rows), "pseudolabels": len(pseudo),
        "real_pages": int(pseudo["bw_id"].nunique()), "init": cfg.step2.init + (f" (step {int(best['step'])})" if init else ""),
    }, result.snapshots[-1].samples if result.snapshots else None)


def pass_step2_through(st: Store, cfg: ColorizationConfig, best: pd.Series) -> Recorded:
    """Step 2 without self-training: step 1's best snapshot is the final generator."""
    writer = st.begin("colorizer_step2")
    write_weights(writer, st.read_bytes(best["uri"]), source=f"selected_snapshots step {int(best['step'])}")
    # The weights are step 1's: so are the real pages they saw (the holdout check reads them here).
    step1 = st.latest_manifest("colorizer_step1_finetuned")
    for row in step1[step1["role"].isin(REAL_ROLES)].to_dict("records"):
        writer.add(row)
    version, vdir, _ = writer.seal(salt="self_training: false")
    note = f"variant.self_training is false: step 1's best snapshot (step {int(best['step'])}) passes through"
    return Recorded(version, vdir, {"skipped": True, "variant": cfg.variant.name(), "note": note})
