"""The colorization network's training stages: step 1, its matched-pair fine-tune, step 2 (paper §III, Appendix D).

Each runs `mangacolor.training.colorizer.train_colorizer` on what `data` reads, with the loop's config
derived from the preset section (`config`), and records its generator snapshots with their sample grids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from mangacolor.io.store import VersionWriter, sha256_bytes
from mangacolor.stages.colorization.config import total_steps


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
