"""Training loop of the colorization network: the paper's steps 1 and 2 and the final fine-tune.

Paper §III (training scheme), §III-B eq. 2–3, §IV-B-3 and Appendix D:

- step="adapt" (step 1, adversarial domain adaptation): synthetic black-and-white pages with their
  colour originals are learnt supervised (MAE + perceptual) and adversarially; real black-and-white
  pages, colorized with an empty hint, are judged by the same discriminator (λ_real^G, λ_real^D).
  Several generator snapshots are saved, each with a sample grid, for a person to pick from.
- step="self_train" (step 2): synthetic pairs plus real pages with pseudolabels (colorings by the
  picked snapshots), all supervised, with the adversarial loss on both together; batch 8.
- step="finetune": supervised only, on real matched page pairs, at most two epochs.

Adam, lr 1e-4 (G) / 4e-4 (D) ("imbalanced learning rate", §IV-B-3), Xavier init, 15 epochs of
batch 4 in step 1, the cue schedule of Appendix D. Every random choice of a step (which pages,
crops, cues) is drawn from generators seeded by (seed, step), so a run resumed from a checkpoint
replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from mangacolor.device import DeviceSpec
from mangacolor.io.files import write_atomic
from mangacolor.io.images import encode_png, from_tensor, read_image, thumbnail_grid
from mangacolor.losses.colorization import (
    FINETUNE_WEIGHTS,
    STEP1_WEIGHTS,
    STEP2_WEIGHTS,
    LossWeights,
    PerceptualLoss,
    discriminator_loss,
    generator_loss,
)
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.discriminator import ColorizationDiscriminator, DiscriminatorConfig
from mangacolor.tracking import NullTracker, Tracker
from mangacolor.training import distributed
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import save_weights
from mangacolor.training.cues import CueConfig, Cues, resize_draft, sample_cues
from mangacolor.training.loader import LoaderSettings, Pinnable, step_batches
from mangacolor.training.loop import LoopTail
from mangacolor.training.memory import PowerIterationReplay, freeze_batchnorm, micro_slices, rows

log = logging.getLogger(__name__)

Step = Literal["adapt", "self_train", "finetune"]
# A sample is a dict of uint8 arrays: "bw" HxW, "color" HxWx3 (pairs), "draft" hxwx3 (optional).
Sample = dict[str, np.ndarray]
# Augmentation: takes a sample and the step's NumPy generator, returns a sample whose "bw" and "color"
# have the training crop size. The paper's pipeline (flip, mirror pad + crop, colour jitter, 3% grey
# inputs) lives in mangacolor/data/augment.py; without one, `random_crop` below is used.
Augment = Callable[[Sample, np.random.Generator], Sample]

# Appendix D: (epochs, batch size, loss weights) per step. Step 2's epochs are not given: as step 1.
STEP_DEFAULTS: dict[str, tuple[int, int, LossWeights]] = {
    "adapt": (15, 4, STEP1_WEIGHTS),
    "self_train": (15, 8, STEP2_WEIGHTS),
    "finetune": (2, 4, FINETUNE_WEIGHTS),
}


def page_canvas(canvas: tuple[int, int] | None, crop: tuple[int, int]) -> tuple[int, int]:
    """The training canvas (H, W): `canvas`, or the crop when there is none (the one place that decides)."""
    return tuple(canvas or crop)


@dataclass
class ColorizerTrainConfig(LoaderSettings):
    generator: ColorizerConfig = field(default_factory=ColorizerConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    cues: CueConfig = field(default_factory=CueConfig)
    losses: LossWeights | None = None  # None: the step's weights from Appendix D
    epochs: int | None = None  # None: the step's default (STEP_DEFAULTS)
    batch_size: int | None = None
    crop: tuple[int, int] = (768, 512)  # (H, W): Appendix B trains on 3:2 portrait crops
    canvas: tuple[int, int] | None = None  # pages brought to this canvas before cropping; None: the crop
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.999)  # not in the paper; the usual GAN choice
    perceptual_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    vgg_weights: str | None = None  # None: ~/.cache/torch/hub/checkpoints/vgg16-397923af.pth
    allow_random_vgg: bool = False  # tests / demo only: random VGG16 when the file is missing
    seed: int = 0
    max_steps: int | None = None  # stop early (demo, tests); None: the full epochs
    checkpoint_every: int = 500
    log_every: int = 10
    sample_count: int = 4  # pages per sample grid
    # The paper's batch in GPU memory (mangacolor/training/memory.py): rows per forward/backward, the step's
    # gradients added up over its micro-batches (None: the whole per-process batch at once); the generator's
    # activations recomputed in the backward pass; batch norm on running statistics (needed by micro-batches).
    micro_batch: int | None = None
    checkpointing: bool = False
    batchnorm: Literal["batch", "frozen"] = "batch"
    # Channels-last weights and activations: the layout GPU convolutions run fastest in (tensor cores); None: on CUDA.
    channels_last: bool | None = None
    init: str | None = None  # "mc2:PATH": a fresh step 1 starts from the whole 2021 generator (build_generator)

    def resolved(self, step: Step) -> tuple[int, int, LossWeights]:
        if step not in STEP_DEFAULTS:
            raise ValueError(f"step must be one of {list(STEP_DEFAULTS)}; got {step!r}")
        epochs, batch, weights = STEP_DEFAULTS[step]
        return self.epochs or epochs, self.batch_size or batch, self.losses or weights

    def page_canvas(self) -> tuple[int, int]:
        """The canvas (H, W) pages are brought to before the crop."""
        return page_canvas(self.canvas, self.crop)

    def steps_per_epoch(self, step: Step, n_supervised: int) -> int:
        """Steps of one epoch over `n_supervised` pairs (`epoch_steps`)."""
        _, batch, _ = self.resolved(step)
        return epoch_steps(n_supervised, batch, self.page_canvas(), self.crop)

    def total_steps(self, step: Step, n_supervised: int) -> int:
        """The steps `train_colorizer` runs: the step's epochs, at most `max_steps`."""
        epochs, _, _ = self.resolved(step)
        n = epochs * self.steps_per_epoch(step, n_supervised)
        return min(n, self.max_steps) if self.max_steps is not None else n

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _load(item: np.ndarray | str | Path, mode: str) -> np.ndarray:
    return item if isinstance(item, np.ndarray) else read_image(item, mode=mode)


class PairDataset(Dataset):
    """Aligned black-and-white / colour pages (synthetic pairs, pseudolabels, matched real pairs).

    Each list holds uint8 arrays or image paths (read on access); `drafts` optional, None entries allowed.
    """

    def __init__(self, bw: Sequence, color: Sequence, drafts: Sequence | None = None):
        if len(bw) != len(color) or (drafts is not None and len(drafts) != len(bw)):
            raise ValueError(f"PairDataset: {len(bw)} bw pages, {len(color)} colour pages, drafts {len(drafts or [])}")
        self.bw, self.color, self.drafts = bw, color, drafts

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> Sample:
        sample = {"bw": _load(self.bw[i], "L"), "color": _load(self.color[i], "RGB")}
        if self.drafts is not None and self.drafts[i] is not None:
            sample["draft"] = _load(self.drafts[i], "RGB")
        return sample


class BwDataset(Dataset):
    """Real black-and-white pages without colour (step 1's adversarial domain)."""

    def __init__(self, bw: Sequence, drafts: Sequence | None = None):
        self.bw, self.drafts = bw, drafts

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> Sample:
        sample = {"bw": _load(self.bw[i], "L")}
        if self.drafts is not None and self.drafts[i] is not None:
            sample["draft"] = _load(self.drafts[i], "RGB")
        return sample


def random_crop(sample: Sample, size: tuple[int, int], rng: np.random.Generator | None,
                canvas: tuple[int, int] | None = None) -> Sample:
    """The plain page transform: page on its canvas, mirror-pad if smaller than `size`, then crop
    (random, or centred when rng is None).

    The same window is cut from "bw", "color" and the whole-page "draft", which is first stretched
    onto the page (`mangacolor.data.canvas.to_canvas`), so the draft stays on the region it colours.
    """
    from mangacolor.data.canvas import to_canvas

    sample = to_canvas(sample, canvas)
    h, w = sample["bw"].shape[:2]
    th, tw = size
    ph, pw = max(0, th - h), max(0, tw - w)
    out = dict(sample)
    if rng is None:
        top, left = (h + ph - th) // 2, (w + pw - tw) // 2
    else:
        top, left = int(rng.integers(0, h + ph - th + 1)), int(rng.integers(0, w + pw - tw + 1))
    for key in ("bw", "color", "draft"):
        if key in sample:
            a = sample[key]
            if ph or pw:
                pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (a.ndim - 2)
                a = np.pad(a, pad, mode="symmetric")
            out[key] = a[top : top + th, left : left + tw]
    return out


def augment_from_paired(augmentation: Callable[..., dict]) -> Augment:
    """Adapt `mangacolor.data.augment.PairedAugmentation` (keyword call with a seed) to `Augment`.

    The colour page is the target and the source of the 3% grey substitution; a page without
    colour (real black-and-white) is its own dummy target. The draft goes through the same transform.
    """

    def apply(sample: Sample, rng: np.random.Generator) -> Sample:
        seed = int(rng.integers(2**31 - 1))
        draft = {"draft": sample["draft"]} if sample.get("draft") is not None else {}
        if "color" in sample:
            out = augmentation(input=sample["bw"], target=sample["color"], color_for_grey=sample["color"], seed=seed, **draft)
            return sample | {"bw": out["input"], "color": out["target"]} | ({"draft": out["draft"]} if draft else {})
        out = augmentation(input=sample["bw"], target=sample["bw"], seed=seed, **draft)
        return sample | {"bw": out["input"]} | ({"draft": out["draft"]} if draft else {})

    return apply


def _stream_indices(n: int, start: int, count: int, seed: int, salt: int) -> list[int]:
    """Items start..start+count of an endless sequence of shuffles of range(n), shuffle k seeded by (seed, salt, k)."""
    out = []
    for pos in range(start, start + count):
        k, j = divmod(pos, n)
        perm = np.random.default_rng([seed, salt, k]).permutation(n)
        out.append(int(perm[j]))
    return out


def _chw(arr: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> uint8 CxHxW (no copy beyond making it contiguous)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def _unit(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> float in [-1, 1], computed as `to_tensor` does (so the values are the same)."""
    return t.float().div(127.5).sub(1.0).to(dtype)


def compact_pages(samples: list[Sample]) -> dict[str, Any]:
    """uint8 samples -> the batch as a loader worker ships it: uint8 "bw" (B,1,H,W) and "color" (B,3,H,W),
    "draft" a list of uint8 (3,h,w) drafts at their own size (None where absent) with "has_draft" (B,) bool.
    `expand_pages` makes it the float batch the networks take."""
    batch: dict[str, Any] = {"bw": torch.stack([_chw(s["bw"]) for s in samples])}
    if all("color" in s for s in samples):
        batch["color"] = torch.stack([_chw(s["color"]) for s in samples])
    if any("draft" in s for s in samples):
        batch["draft"] = [_chw(s["draft"]) if "draft" in s else None for s in samples]
        batch["has_draft"] = torch.tensor(["draft" in s for s in samples])
    return batch


def expand_pages(batch: dict[str, Any], device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A `compact_pages` batch -> float tensors in [-1, 1] on `device`; drafts stacked with a validity mask."""
    out = {"bw": _unit(batch["bw"].to(device), dtype)}
    if "color" in batch:
        out["color"] = _unit(batch["color"].to(device), dtype)
    if "draft" in batch:
        # Drafts from different sources (stored inversions, pseudolabel drafts) may differ in size;
        # the generator resizes them to the page anyway, so bring a batch to its largest.
        h = max(d.shape[-2] for d in batch["draft"] if d is not None)
        w = max(d.shape[-1] for d in batch["draft"] if d is not None)
        drafts = []
        for d in batch["draft"]:
            d = _unit(d.to(device)) if d is not None else torch.zeros(3, h, w, device=device)
            if d.shape[-2:] != (h, w):
                d = torch.nn.functional.interpolate(d[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            drafts.append(d.to(dtype))
        out["draft"] = torch.stack(drafts)
        out["has_draft"] = batch["has_draft"]
    return out


def collate(samples: list[Sample], device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 samples -> float tensors in [-1, 1] on `device`; drafts stacked with a validity mask."""
    return expand_pages(compact_pages(samples), device)


@dataclass
class CompactCues:
    """A batch's cues as a loader worker ships them: which pages got a hint and a draft, and the hint
    points alone (a hint is a few hundred points on a 768×512 page). `expand_cues` rebuilds `Cues`."""

    has_hint: torch.Tensor  # (B,) bool
    has_draft: torch.Tensor  # (B,) bool
    hint_at: torch.Tensor  # (N,) int64: flat (page, y, x) index of each hint point
    hint_rgb: torch.Tensor  # (N, 3) float32: its colour in [-1, 1]


def compact_cues(cues: Cues, first: int = 0) -> CompactCues:
    """`Cues` -> `CompactCues`, pages numbered from `first` (the hint's mask channel is exactly 0 or 1)."""
    b, _, h, w = cues.hint.shape
    flat = cues.hint.detach().float().cpu().reshape(b, 4, h * w)
    page, pos = (flat[:, 3] != 0).nonzero(as_tuple=True)
    return CompactCues(cues.has_hint.cpu(), cues.has_draft.cpu(), (page + first) * (h * w) + pos,
                       flat[page, :3, pos].contiguous())


def expand_cues(cues: CompactCues, pages: dict[str, torch.Tensor]) -> Cues:
    """`CompactCues` -> the full `Cues` on `pages`' device: the hint painted back from its points,
    the drafts of the pages that get one resized to the page (as `sample_cues` does)."""
    b, _, h, w = pages["bw"].shape
    device, dtype = pages["bw"].device, pages["bw"].dtype
    hint = torch.zeros(b, 4, h * w, device=device, dtype=dtype)
    at = cues.hint_at.to(device)
    page, pos = at // (h * w), at % (h * w)
    hint[page, :3, pos] = cues.hint_rgb.to(device, dtype)
    hint[page, 3, pos] = 1.0
    draft = torch.zeros(b, 3, h, w, device=device, dtype=dtype)
    if cues.has_draft.any():
        idx = cues.has_draft.nonzero().squeeze(1).to(device)
        draft[idx] = resize_draft(pages["draft"][idx], (h, w)).to(dtype)
    return Cues(hint=hint.view(b, 4, h, w), draft=draft, has_hint=cues.has_hint, has_draft=cues.has_draft)


@dataclass
class StepBatch(Pinnable):
    """One training step's data as `StepData` builds it in a loader worker: uint8 pages, sparse hints.

    A tenth of the float batch's bytes, so shipping it from a worker costs little; `expand_batch`
    turns it into the float batch on the training device."""

    pairs: dict[str, Any]  # compact_pages
    cues: CompactCues
    real: dict[str, Any] | None = None
    real_cues: CompactCues | None = None
    y_real: torch.Tensor | None = None  # uint8 (B,3,H,W)


def expand_batch(batch: StepBatch, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple:
    """(pairs, cues, real, real_cues, y_real) as float tensors on `device`: the batch the loop trains on."""
    pairs = expand_pages(batch.pairs, device, dtype)
    cues = expand_cues(batch.cues, pairs)
    real = real_cues = None
    if batch.real is not None:
        real = expand_pages(batch.real, device, dtype)
        real_cues = expand_cues(batch.real_cues, real)
    y_real = _unit(batch.y_real.to(device), dtype) if batch.y_real is not None else None
    return pairs, cues, real, real_cues, y_real


@dataclass
class StepData:
    """The data of training step `it`, from (seed, it) alone: what `train_colorizer` asks its loader workers for.

    Returns a `StepBatch` (`expand_batch` makes it float tensors on the device): the supervised batch and
    its cues; for step 1 the real black-and-white batch with its cues: empty hint, draft per the schedule
    (None otherwise); for step 2 the colour pages the discriminator sees as real (None: the batch's own
    colour targets).
    """

    cfg: ColorizerTrainConfig
    supervised: Dataset
    unpaired_real: Dataset | None
    batch_size: int
    steps_per_epoch: int
    augment: Augment | None = None
    canvas: tuple[int, int] | None = None
    epochs_before: int = 0
    positions: tuple[int, ...] | None = None  # this process's positions in the global batch (DDP); None: all
    real_colour: Dataset | None = None  # step 2: colour pages D sees as real (never pseudolabels)

    def samples(self, dataset: Dataset, it: int, salt: int) -> list[Sample]:
        """This process's items of step `it`'s global batch, each drawn and augmented from (seed, it, salt, position)."""
        cfg, samples = self.cfg, []
        chosen = _stream_indices(len(dataset), it * self.batch_size, self.batch_size, cfg.seed, salt)
        for j in self.shard():
            item_rng = np.random.default_rng([cfg.seed, it, salt, j])
            sample = dataset[chosen[j]]
            sample = self.augment(sample, item_rng) if self.augment is not None else random_crop(sample, cfg.crop, item_rng, self.canvas)
            samples.append(sample)
        return samples

    def load(self, dataset: Dataset, it: int, salt: int) -> dict[str, Any]:
        return compact_pages(self.samples(dataset, it, salt))

    def cue_rng(self, it: int, salt: int, position: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.default_rng([self.cfg.seed, it, salt, position, 1]).integers(2**62)))

    def cues(self, batch: dict[str, Any], it: int, epoch: int, salt: int, hints: bool = True) -> CompactCues:
        """Cues item by item, each from its own (seed, it, salt, position) generator: the same whatever the sharding.

        The drafts drawn here are resized to the page on the device (`expand_cues`), not in the worker."""
        per_item = []
        for k, j in enumerate(self.shard()):
            one = {"bw": _unit(batch["bw"][k:k + 1])}
            if "color" in batch:
                one["color"] = _unit(batch["color"][k:k + 1])
            if "draft" in batch:
                # Only whether the page has a draft enters the draws; its resized copy is not kept.
                one["draft"], one["has_draft"] = torch.zeros(1, 3, 1, 1), batch["has_draft"][k:k + 1]
            per_item.append(compact_cues(sample_cues(one, epoch, self.cue_rng(it, salt, j), self.cfg.cues, hints=hints), k))
        return CompactCues(*(torch.cat([getattr(c, f.name) for c in per_item]) for f in dataclasses.fields(CompactCues)))

    def shard(self) -> tuple[int, ...]:
        return tuple(self.positions) if self.positions is not None else tuple(range(self.batch_size))

    def __call__(self, it: int) -> StepBatch:
        epoch = cue_epoch(self.epochs_before, it, self.steps_per_epoch)
        pairs = self.load(self.supervised, it, 0)
        batch = StepBatch(pairs, self.cues(pairs, it, epoch, 0))
        if self.unpaired_real is not None:
            batch.real = self.load(self.unpaired_real, it, 1)
            batch.real_cues = self.cues(batch.real, it, epoch, 1, hints=False)  # Ĥ: empty hint, S per the schedule (eq. 9)
        if self.real_colour is not None:
            batch.y_real = self.load(self.real_colour, it, 2)["color"]
        return batch


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    step: int
    epoch: int
    weights: str
    samples: str


@dataclass
class ColorizerTrainResult:
    generator: Path
    discriminator: Path | None
    snapshots: list[Snapshot]
    steps: int
    final_metrics: dict[str, float]
    perceptual_random: bool


def sample_grid(generator: nn.Module, pairs: dict[str, torch.Tensor] | None, real: dict[str, torch.Tensor] | None) -> np.ndarray:
    """Rows of [bw, colorized, target] for pairs and [bw, colorized] for real pages; no hints, no draft."""
    was_training = generator.training
    generator.eval()
    rows = []
    with torch.no_grad():
        for batch in (pairs, real):
            if batch is None:
                continue
            bw = batch["bw"]
            zeros_h = bw.new_zeros(bw.shape[0], 4, *bw.shape[-2:])
            fake = generator(bw, zeros_h, bw.new_zeros(bw.shape[0], 3, *bw.shape[-2:]))
            for i in range(bw.shape[0]):
                tiles = [from_tensor(bw[i]), from_tensor(fake[i])]
                if "color" in batch:
                    tiles.append(from_tensor(batch["color"][i]))
                rows.append(thumbnail_grid(tiles, height=192))
    generator.train(was_training)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def epoch_steps(pages: int, batch_size: int, canvas: tuple[int, int], crop: tuple[int, int]) -> int:
    """Steps in one epoch: every training page's canvas covered once by crops.

    Appendix B crops 768x512 out of the 768x512 canvas (plus a <= 15 px mirror pad), so there an epoch
    is one crop per page, as the paper counts it. A preset that crops a small window out of a larger
    canvas (the demo's 64x64 out of 384x256) sees a page's area only once every canvas/crop crops;
    counting pages alone would make its "2 epochs" of fine-tuning a twelfth of the paper's.
    """
    crops_per_page = max(1, round(canvas[0] * canvas[1] / (crop[0] * crop[1])))
    return max(1, pages * crops_per_page // batch_size)


def cue_epoch(epochs_before: int, it: int, steps_per_epoch: int) -> int:
    """The 1-based epoch of Appendix D's cue schedule at loop step `it`.

    The schedule describes the life of one network: "at the first epoch ... on the fourth epoch and
    beyond". So its epoch counts every epoch the weights have been trained, across stages: a stage
    that starts from trained weights (the fine-tune after step 1, step 2 from a snapshot) continues
    their count (`epochs_before`, whole epochs, from the weights' metadata), and only a new network
    starts at epoch 1. The two-epoch fine-tune after 15 epochs of step 1 thus trains at epochs 16–17
    with the schedule's last row, drafts included.
    """
    return int(epochs_before) + it // steps_per_epoch + 1


def weights_epochs(path: str | Path | None) -> int:
    """Whole epochs the generator in `path` was trained (its `epochs_trained` metadata); 0 for None or an older file."""
    if path is None or str(path).startswith("mc2:"):
        return 0
    from mangacolor.io.weights import load_weights

    _, meta = load_weights(path)
    return int(math.floor(float(meta.get("epochs_trained", 0)) + 1e-9))


def _as_spec(device: DeviceSpec | torch.device | str, seed: int) -> DeviceSpec:
    if isinstance(device, DeviceSpec):
        return device
    return DeviceSpec(device=torch.device(device), amp_dtype=None, seed=seed)


@dataclass
class _Networks:
    """What one step of `train_colorizer` updates: the generator, the discriminator (None without adversarial
    terms), the perceptual loss (None without λ_per), their optimisers and the fp16 GradScaler."""

    generator: nn.Module
    discriminator: nn.Module | None
    perceptual: PerceptualLoss | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler

    def modules(self) -> dict[str, nn.Module]:
        return {"g": self.generator} | ({"d": self.discriminator} if self.discriminator is not None else {})

    def optimizers(self) -> dict[str, Any]:
        # The scaler is saved with the optimisers: its scale decides which fp16 steps are skipped.
        return {"g": self.opt_g} | ({"d": self.opt_d} if self.opt_d is not None else {}) | {"scaler": self.scaler}

    @property
    def perceptual_random(self) -> bool:
        return bool(self.perceptual is not None and self.perceptual.random_init)


def _build(cfg: ColorizerTrainConfig, weights: LossWeights, init_weights, spec: DeviceSpec, dev: torch.device,
           dist: distributed.DistContext) -> _Networks:
    """The networks and optimisers, seeded first so that the Xavier init (and so a fresh run) is reproducible."""
    torch.manual_seed(cfg.seed)
    generator = build_generator(cfg.generator, init_weights)
    if cfg.batchnorm == "frozen":
        freeze_batchnorm(generator)  # running statistics: nothing to synchronise over processes either
    else:
        generator = distributed.sync_batchnorm(generator, dist, dev)
    layout = torch.channels_last if (cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda") else torch.preserve_format
    generator = generator.to(dev, memory_format=layout).train()
    generator.checkpointing = cfg.checkpointing
    adversarial = weights.syn > 0 or weights.real_g > 0
    discriminator = ColorizationDiscriminator(cfg.discriminator).to(dev, memory_format=layout).train() if adversarial else None
    perceptual = PerceptualLoss(cfg.perceptual_layers, cfg.vgg_weights, cfg.allow_random_vgg).to(dev) if weights.per else None
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas) if discriminator is not None else None
    return _Networks(generator, discriminator, perceptual, opt_g, opt_d,
                     torch.amp.GradScaler(dev.type, enabled=spec.amp_dtype == torch.float16))


def _datasets(step: Step, synthetic_pairs: Dataset, real_bw: Dataset | None) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """(supervised pairs, unpaired real pages, real colour pages D sees) of a step; see `train_colorizer`."""
    if step == "adapt" and (real_bw is None or len(real_bw) == 0):
        raise ValueError("step 'adapt' needs real black-and-white pages (real_bw) for adversarial adaptation")
    if step == "self_train":
        if real_bw is None or "color" not in real_bw[0]:
            raise ValueError("step 'self_train' needs real pages with pseudolabels: pass a PairDataset as real_bw")
        supervised: Dataset = ConcatDataset([synthetic_pairs, real_bw])
    else:
        supervised = synthetic_pairs
    if len(supervised) == 0:
        raise ValueError(f"step {step!r}: no training pairs")
    # D's "real" side is real colour pages (eq. 10): in step 2 the colour pages of the synthetic pairs,
    # never the pseudolabels, which are the generator's own colorings.
    return supervised, real_bw if step == "adapt" else None, synthetic_pairs if step == "self_train" else None


def _train_step(nets: _Networks, weights: LossWeights, batch: StepBatch, spec: DeviceSpec, dev: torch.device,
                dist: distributed.DistContext, micro_batch: int | None = None) -> tuple[dict[str, Any], Cues, Cues | None, bool]:
    """One discriminator step (eq. 3) and one generator step (eq. 2) on `batch`, in micro-batches of `micro_batch` rows
    when that splits it (`_micro_step`). Returns (loss parts, the pairs' cues, the real pages' cues, whether real pages
    went through G)."""
    pairs, cues, real, real_cues, y_real = expand_batch(batch, dev)
    slices = micro_slices(pairs["bw"].shape[0], micro_batch)
    if len(slices) > 1:
        return _micro_step(nets, weights, (pairs, cues, real, real_cues, y_real), slices, spec, dist)
    generator, discriminator, scaler = nets.generator, nets.discriminator, nets.scaler
    with spec.autocast():
        fake = generator(pairs["bw"], cues.hint, cues.draft)
    fake_real = None
    if real is not None:
        with spec.autocast():
            fake_real = generator(real["bw"], real_cues.hint, real_cues.draft)

    # Discriminator: real colour pages against detached colorizations (eq. 3).
    parts: dict[str, Any] = {}
    if discriminator is not None:
        discriminator.requires_grad_(True)
        if y_real is None:
            y_real = pairs["color"]
        with spec.autocast():
            d_loss, d_parts = discriminator_loss(
                weights,
                discriminator(y_real),
                discriminator(fake.detach()),
                discriminator(fake_real.detach()) if fake_real is not None else None,
            )
        nets.opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        dist.average_gradients(discriminator)
        scaler.step(nets.opt_d)
        parts.update(d_parts)
        discriminator.requires_grad_(False)  # G's step needs gradients through D, not into it

    # Generator (eq. 2).
    with spec.autocast():
        g_loss, g_parts = generator_loss(
            weights,
            fake,
            pairs["color"],
            nets.perceptual,
            discriminator(fake) if discriminator is not None else None,
            discriminator(fake_real) if (discriminator is not None and fake_real is not None) else None,
        )
    nets.opt_g.zero_grad(set_to_none=True)
    scaler.scale(g_loss).backward()
    dist.average_gradients(generator)
    scaler.step(nets.opt_g)
    scaler.update()
    parts.update(g_parts)
    return parts, cues, real_cues, fake_real is not None


def _micro_step(nets: _Networks, weights: LossWeights, expanded: tuple, slices: list[slice], spec: DeviceSpec,
                dist: distributed.DistContext) -> tuple[dict[str, Any], Cues, Cues | None, bool]:
    """`_train_step` one micro-batch at a time: each micro-batch's loss over their number, backward, the gradients
    added up, one optimiser step per network; only one micro-batch's graph is alive at a time. D's step needs the
    colorizations before G's step needs them with their graph (and D updated), so G runs twice per micro-batch,
    the first time without a graph. D's spectral norm iterates as with the whole batch (`PowerIterationReplay`)."""
    pairs, cues, real, real_cues, y_real = expanded
    generator, scaler = nets.generator, nets.scaler
    discriminator = PowerIterationReplay(nets.discriminator) if nets.discriminator is not None else None
    k = len(slices)
    parts: dict[str, Any] = {}

    def add(more: dict) -> None:
        for key, value in more.items():
            parts[key] = parts.get(key, 0) + (value.detach() if torch.is_tensor(value) else value) / k

    def colorize(part: slice):
        p, c = rows(pairs, part), rows(cues, part)
        fake = generator(p["bw"], c.hint, c.draft)
        fake_real = None
        if real is not None:
            rc = rows(real_cues, part)
            fake_real = generator(rows(real, part)["bw"], rc.hint, rc.draft)
        return p, fake, fake_real

    if discriminator is not None:
        nets.discriminator.requires_grad_(True)
        nets.opt_d.zero_grad(set_to_none=True)
        for i, part in enumerate(slices):
            discriminator.next_micro_batch(i)
            with torch.no_grad(), spec.autocast():
                p, fake, fake_real = colorize(part)
            with spec.autocast():
                d_loss, d_parts = discriminator_loss(
                    weights, discriminator(rows(y_real, part) if y_real is not None else p["color"]), discriminator(fake),
                    discriminator(fake_real) if fake_real is not None else None)
            scaler.scale(d_loss / k).backward()
            add(d_parts)
        discriminator.finish()
        dist.average_gradients(nets.discriminator)
        scaler.step(nets.opt_d)
        nets.discriminator.requires_grad_(False)

    nets.opt_g.zero_grad(set_to_none=True)
    for i, part in enumerate(slices):
        if discriminator is not None:
            discriminator.next_micro_batch(i)
        with spec.autocast():
            p, fake, fake_real = colorize(part)
            g_loss, g_parts = generator_loss(
                weights, fake, p["color"], nets.perceptual, discriminator(fake) if discriminator is not None else None,
                discriminator(fake_real) if (discriminator is not None and fake_real is not None) else None)
        scaler.scale(g_loss / k).backward()
        add(g_parts)
        del fake, fake_real, g_loss  # the micro-batch's graph goes before the next one's is built
    if discriminator is not None:
        discriminator.finish()
    dist.average_gradients(generator)
    scaler.step(nets.opt_g)
    scaler.update()
    return parts, cues, real_cues, real is not None


def train_colorizer(
    cfg: ColorizerTrainConfig,
    synthetic_pairs: Dataset,
    real_bw: Dataset | None,
    out_dir: str | Path,
    device: DeviceSpec | torch.device | str,
    tracker: Tracker,
    progress: Callable[[str], None] | None = None,
    step: Step = "adapt",
    init_weights: str | Path | None = None,
    snapshot_every: int | None = None,
    augment: Augment | None = None,
    epochs_before: int | None = None,
    dist: distributed.DistContext | None = None,
) -> ColorizerTrainResult:
    """Train (or resume training) one step of the colorization network; see the module docstring.

    `synthetic_pairs`: the supervised pairs (for "finetune", the matched real page pairs).
    `real_bw`: "adapt": real black-and-white pages; "self_train": real pages with pseudolabels
    (a pair dataset); "finetune": unused. `init_weights`: a generator safetensors file to start from, or
    "mc2:PATH", the 2021 release's generator (default for "adapt": `cfg.init`; else Xavier + the configured
    encoder file). `snapshot_every`: steps between generator snapshots
    with sample grids (default: one per epoch). `epochs_before`: whole epochs the starting weights were
    trained (default: read from `init_weights`' metadata, 0 for a new network), see `cue_epoch`.
    Output files go under `out_dir`: checkpoints/,
    snapshots/step-N/{generator.safetensors, samples.png}, generator.safetensors, discriminator.safetensors.

    Under `torchrun` (`dist`, default: the initialised process group) each process computes its shard
    of every step's global batch and gradients are averaged (mangacolor/training/distributed.py);
    rank 0 alone logs, snapshots and checkpoints, and `out_dir` must be shared by the processes.
    """
    spec = _as_spec(device, cfg.seed)
    dist = dist or distributed.current()
    dev = distributed.local_device(spec.device, dist)
    canvas = cfg.page_canvas()
    if not dist.is_main:
        tracker, progress = NullTracker(), None
    epochs, batch_size, weights = cfg.resolved(step)
    out_dir = Path(out_dir)
    say = progress or (lambda _msg: None)
    supervised, unpaired_real, real_colour = _datasets(step, synthetic_pairs, real_bw)
    if init_weights is None and cfg.init and step == "adapt":
        init_weights = cfg.init  # the 2021 generator as step 1's start (colorizer.init: mc2:PATH)
    if epochs_before is None:
        epochs_before = weights_epochs(init_weights)
    if len(micro_slices(len(dist.positions(batch_size)), cfg.micro_batch)) > 1 and cfg.batchnorm != "frozen":
        raise ValueError(f"micro_batch {cfg.micro_batch} splits the batch, and batch-norm statistics over a micro-batch are "
                         "not the batch's: set batchnorm: frozen in the step's section (mangacolor/training/memory.py)")
    nets = _build(cfg, weights, init_weights, spec, dev, dist)
    steps_per_epoch, total_steps = cfg.steps_per_epoch(step, len(supervised)), cfg.total_steps(step, len(supervised))
    snapshot_every = snapshot_every or steps_per_epoch

    checkpointer = Checkpointer(out_dir / "checkpoints")
    state = checkpointer.restore(nets.modules(), nets.optimizers())
    start = state["step"] if state else 0
    snapshots = [Snapshot(**s) for s in state["extra"].get("snapshots", [])] if state else []
    if state:
        log.info("colorizer %s: resumed from %s at step %d", step, state["path"], start)
        say(f"colorizer {step}: resumed from {state['path']} at step {start}/{total_steps}")
    tracker.log_params({"step": step, "epochs": epochs, "batch_size": batch_size, "total_steps": total_steps,
                        "loss_weights": weights.to_dict(), "config": cfg.to_dict(), "resumed_at": start,
                        "epochs_before": epochs_before})
    if nets.perceptual_random:
        tracker.log_text("WARNING_random_vgg.txt", "perceptual loss used a random VGG16: not the paper's loss\n")

    def fixed_batch(dataset: Dataset | None) -> dict[str, torch.Tensor] | None:
        if dataset is None:
            return None
        n = min(cfg.sample_count, len(dataset))
        return collate([random_crop(dataset[i], cfg.crop, None, canvas) for i in range(n)], dev)

    grid_pairs, grid_real = (fixed_batch(supervised), fixed_batch(unpaired_real)) if dist.is_main else (None, None)
    # Every random choice of an item is seeded by (seed, step, stream, position in the global batch),
    # so one process and N processes, each computing its positions, draw the same batch.
    make = StepData(cfg, supervised, unpaired_real, batch_size, steps_per_epoch, augment, canvas, epochs_before,
                    dist.positions(batch_size), real_colour)

    def save_snapshot(it: int, epoch: int) -> None:
        folder = out_dir / "snapshots" / f"step-{it:08d}"
        meta = {"generator_config": cfg.generator.to_dict(), "step": it, "epoch": epoch, "train_step": step,
                "epochs_trained": epochs_before + it / steps_per_epoch}
        save_weights(folder / "generator.safetensors", nets.generator, meta)
        grid = sample_grid(nets.generator, grid_pairs, grid_real)
        write_atomic(folder / "samples.png", encode_png(grid))
        tracker.log_image(f"samples/step-{it:08d}.png", grid)
        snapshots.append(Snapshot(it, epoch, str(folder / "generator.safetensors"), str(folder / "samples.png")))

    def checkpoint(it: int) -> None:
        checkpointer.save(it, nets.modules(), nets.optimizers(), {"snapshots": [dataclasses.asdict(s) for s in snapshots],
                                                                  **distributed.written_by(dist)})

    def metrics(parts: dict, epoch: int, c_epoch: int, cues: Cues, real_cues: Cues | None) -> dict[str, float]:
        return dist.mean({k: float(v) for k, v in parts.items()}) | {
            "epoch": float(epoch), "cue_epoch": float(c_epoch), "drafts": float(cues.has_draft.float().mean()),
            "hints": float(cues.has_hint.float().mean())} | (
            {"real_drafts": float(real_cues.has_draft.float().mean())} if real_cues is not None else {})

    tail = LoopTail(total_steps, dist, tracker, cfg.log_every, cfg.checkpoint_every, snapshot_every, say)
    parts: dict[str, Any] = {}
    for it, step_batch in step_batches(make, start, total_steps, dev, cfg.num_workers, cfg.prefetch_factor):
        parts, cues, real_cues, with_real = _train_step(nets, weights, step_batch, spec, dev, dist, cfg.micro_batch)
        done, epoch = it + 1, it // steps_per_epoch + 1
        c_epoch = cue_epoch(epochs_before, it, steps_per_epoch)
        tail(done, lambda: metrics(parts, epoch, c_epoch, cues, real_cues if with_real else None),
             lambda m: f"colorizer {step}: step {done}/{total_steps} epoch {epoch} " + " ".join(
                 f"{k}={v:.4f}" for k, v in m.items() if k in ("g_mae", "g_total", "d_total")),
             lambda: save_snapshot(done, epoch), lambda: checkpoint(done))

    return _save_final(cfg, nets, out_dir, step, total_steps, epochs_before + total_steps / steps_per_epoch, snapshots,
                       parts, dist)


def _save_final(cfg: ColorizerTrainConfig, nets: _Networks, out_dir: Path, step: Step, total_steps: int, epochs_trained: float,
                snapshots: list[Snapshot], parts: dict, dist: distributed.DistContext) -> ColorizerTrainResult:
    """The trained generator (and discriminator) beside the checkpoints; rank 0 alone writes."""
    meta = {"generator_config": cfg.generator.to_dict(), "steps": total_steps, "train_step": step,
            "epochs_trained": epochs_trained, "perceptual_random": nets.perceptual_random}
    g_path, d_path = out_dir / "generator.safetensors", None
    if dist.is_main:
        save_weights(g_path, nets.generator, meta)
    if nets.discriminator is not None and dist.is_main:
        d_path = save_weights(out_dir / "discriminator.safetensors", nets.discriminator,
                              {"discriminator_config": cfg.discriminator.to_dict(), "steps": total_steps})
    return ColorizerTrainResult(
        generator=g_path,
        discriminator=d_path,
        snapshots=snapshots,
        steps=total_steps,
        final_metrics={k: float(v) for k, v in parts.items()},
        perceptual_random=nets.perceptual_random,
    )


__all__ = [
    "Augment",
    "BwDataset",
    "ColorizerTrainConfig",
    "CompactCues",
    "ColorizerTrainResult",
    "PairDataset",
    "STEP_DEFAULTS",
    "Snapshot",
    "StepBatch",
    "StepData",
    "augment_from_paired",
    "collate",
    "cue_epoch",
    "epoch_steps",
    "expand_batch",
    "random_crop",
    "sample_grid",
    "train_colorizer",
    "weights_epochs",
]
