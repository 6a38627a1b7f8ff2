"""The colorization stages around `train_colorizer`: their config, their data, snapshot ranking, pseudolabels.

Paper §III (training scheme), §III-B, §IV-B-3 and Appendices C–D. The Dagster assets of the
colorization group (assets/colorization.py) each call one function of this module, so the whole
two-step scheme also runs without an orchestrator:

1. step 1, adversarial domain adaptation: synthetic black-and-white pages with their colour pages
   (and the colour page's coloring draft) supervised, real black-and-white pages of the train split
   (with their drafting-network drafts, S of eq. 9) adversarially; several generator snapshots;
   then, still in step 1 (Appendix D: "in the first step, we fine-tune the model with a paired dataset
   of real data after training"), each snapshot is fine-tuned for at most two epochs on the matched
   real page pairs (`finetune_snapshots`);
2. snapshot selection: the paper's authors judged snapshots by eye; we rank the fine-tuned snapshots
   by a distribution distance (KID or FID) between their colorings of real training pages and colour
   pages, and let a person override the ranking;
3. pseudolabels: the selected snapshots colorize the real training pages, several distinct
   colorings per page. §IV-B-3: "coloring drafts for color images and self-training colorings are
   generated using the GAN inversion model rather than the drafting model": each snapshot's automatic
   coloring is inverted into the Coloring Latent Space, its draft is what step 2 sees with it, and
   further colorings follow drafts whose colour rows (the fine half of W+) are mixed with random
   CLS vectors, so the labels differ in palette and teach the network to follow a draft;
4. step 2, self-training on synthetic pairs plus pseudolabelled real pages: the final colorizer
   (§III: "in the end, we train the drafting network and colorization network independently in a
   supervised manner with synthetic data and real data with pseudolabels"). The drafting network's
   second round trains on the same pseudolabels (mangacolor/drafting/pages.py).

Real black-and-white pages come only from `training_pages(page_splits)`; every stage records the
ids it read, so an asset check can prove the holdout was never trained on.

Ablations are switches of the same stages (`VariantFlags`, Tables 1 and 3): the synthetic data level
(xDoG only, + refiner, + CUT), without drafts, without adversarial adaptation, without self-training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field, field_validator
from torch.utils.data import Dataset

from mangacolor.data.splits import holdout_pages, training_pages
from mangacolor.io.images import encode_png, from_tensor, read_image, thumbnail_grid, to_tensor
from mangacolor.io.store import Store, VersionWriter, ok_rows, sha256_bytes
from mangacolor.losses.colorization import LossWeights
from mangacolor.models.colorizer import ColorizerConfig, build_generator, colorize
from mangacolor.models.discriminator import DiscriminatorConfig
from mangacolor.training.checkpoint import load_weights
from mangacolor.training.colorizer import STEP_DEFAULTS, ColorizerTrainConfig, Step, epoch_steps
from mangacolor.training.cues import CueConfig, CueStage, HintConfig

# Roles of manifest rows that name a real black-and-white page a stage read (the holdout check's input).
REAL_ROLES = ("real_bw", "pseudolabel_bw", "matched_bw")


# ---------------------------------------------------------------------------------------------
# Configuration (preset section `colorizer:`)
# ---------------------------------------------------------------------------------------------


# Table 3's synthetic data levels: the asset whose pages are the synthetic black-and-white side, and
# the lower levels a title falls back to while its own level is not materialized.
SYNTHETIC_LEVELS = {"cut": ("synthetic_bw_pages", "refined_pages", "xdog_pages"),
                    "refined": ("refined_pages", "xdog_pages"), "xdog": ("xdog_pages",)}


class VariantFlags(BaseModel):
    """The ablations of Tables 1 and 3 as switches of the same stages."""

    synthetic: Literal["xdog", "refined", "cut"] = Field(
        "cut", description="Table 3: synthetic pages from xDoG only, xDoG + refiner, or xDoG + refiner + CUT (the method)")
    use_drafts: bool = Field(True, description="false: trained and shipped without drafts (Table 1, 'without drafting network')")
    adversarial_adaptation: bool = Field(True, description="false: step 1 without real pages (no λ_real terms; no real page is read)")
    self_training: bool = Field(True, description="false: no pseudolabels; the final fine-tune starts from step 1's best snapshot")

    def name(self) -> str:
        """The registry's `variant` tag: "full", or the switched-off parts joined by '+'."""
        off = [f"synthetic_{self.synthetic}"] if self.synthetic != "cut" else []
        off += [tag for flag, tag in ((self.use_drafts, "no_drafts"), (self.adversarial_adaptation, "no_adaptation"),
                                      (self.self_training, "no_self_training")) if not flag]
        return "+".join(off) or "full"


class StepSection(BaseModel):
    """One training step; None: Appendix D's value for the step (`STEP_DEFAULTS`)."""

    epochs: int | None = None
    batch_size: int | None = None
    max_steps: int | None = Field(None, description="stop early (demo); null: the full epochs")
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    losses: dict = Field(default_factory=dict, description="λ's overriding the step's Appendix D weights, e.g. {per: 0}")


class Step1Section(StepSection):
    snapshots: int = Field(5, ge=1, description="generator snapshots (with sample grids) spread evenly over the run")


class Step2Section(StepSection):
    init: Literal["scratch", "best_snapshot"] = Field(
        "scratch", description="scratch: a new network as in step 1 (the paper trains it anew); best_snapshot: continue from step 1's best")


class SelectionConfig(BaseModel):
    """Ranking of the step-1 snapshots (the paper's authors picked them by eye)."""

    metric: Literal["kid", "fid"] = Field("kid", description="KID is unbiased on small page sets; FID is reported beside it")
    keep: int = Field(2, ge=1, description="snapshots that make pseudolabels")
    validation_pages: int = Field(16, ge=2, description="real training pages each snapshot colorizes")
    reference_pages: int = Field(64, ge=2, description="colour pages the colorings are compared with")
    long_side: int | None = Field(None, description="colorize validation pages at this long side (null: their own size)")
    inception: str = Field("auto", description="auto (user-placed FID Inception file) | random (demo: not comparable to published FID) | a path")
    resize: str = "bilinear-torch"
    fid_method: Literal["sqrtm", "eig"] = "eig"
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    batch_size: int = 8


class PseudolabelConfig(BaseModel):
    colorings_per_page: int = Field(3, ge=1, description="distinct colorings per real page (snapshots, then inverted drafts mixed with random CLS)")
    max_pages: int | None = Field(None, description="cap on the real training pages labelled (null: all)")
    long_side: int | None = Field(None, description="colorize pages at this long side, labels resized back (null: own size)")
    batch_size: int = Field(4, ge=1, description="pages of one working size colorized at once")
    num_workers: int | None = Field(None, ge=0, description="page-reading worker processes (null: MANGACOLOR_WORKERS or cores - 1, at most 8)")


class ColorizationConfig(BaseModel):
    """Preset section `colorizer:` — every setting of the colorization stages."""

    variant: VariantFlags = Field(default_factory=VariantFlags)
    generator: dict = Field(default_factory=dict, description="ColorizerConfig fields; `tiny: true` starts from ColorizerConfig.tiny()")
    encoder_init: str | None = Field(
        None, description="the encoder's start: a state-dict file (the paper's: the line-art tag-prediction SE-ResNeXt-50, "
                          "the 2021 release's extractor.pth or the encoder of its generator.zip), 'imagenet' "
                          "(generator.encoder_weights, else timm's ImageNet file in the torch cache) or 'scratch' (random); "
                          "null: generator.encoder_weights as given")
    init: str | None = Field(None, description="mc2:PATH: step 1 starts from the whole 2021 generator (its generator.zip; "
                                               "draft inputs zero), in the paper layout, the page read in [0, 1]")
    discriminator: dict = Field(default_factory=dict, description="DiscriminatorConfig fields; `tiny: true` starts from DiscriminatorConfig.tiny()")
    cues: dict = Field(default_factory=dict, description="{hint: HintConfig fields, schedule: [{first_epoch, p_hint, p_draft}, ...]}")
    crop: tuple[int, int] = (768, 512)
    canvas: tuple[int, int] | None = Field(None, description="(H, W) every page is brought to, keeping its aspect, before the crop "
                                                             "(Appendix B: the 3:2 canvas, 768x512); null: the crop. Inference uses it too")
    augment: dict | None = Field(default_factory=dict, description="paired_augmentation keywords (Appendix B); null: plain random crops")
    betas: tuple[float, float] = (0.5, 0.999)
    perceptual_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    sample_count: int = 4
    max_real_pages: int | None = Field(None, description="cap on the real training pages step 1 reads (null: all)")
    num_workers: int | None = Field(None, ge=0, description="data-loading worker processes (null: MANGACOLOR_WORKERS or cores - 1, at most 8)")
    prefetch_factor: int = Field(2, ge=1, description="batches each worker prepares ahead")
    step1: Step1Section = Field(default_factory=Step1Section)
    step2: Step2Section = Field(default_factory=lambda: Step2Section(batch_size=8))
    finetune: StepSection = Field(default_factory=lambda: StepSection(epochs=2))
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    pseudolabels: PseudolabelConfig = Field(default_factory=PseudolabelConfig)

    @field_validator("init")
    @classmethod
    def _init_is_mc2(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("mc2:"):
            raise ValueError(f"colorizer.init must be mc2:PATH (the 2021 release's generator.zip) or null, got {value!r}")
        return value

    def generator_config(self) -> ColorizerConfig:
        g = dict(self.generator)
        config = ColorizerConfig.tiny(**_tuples(g)) if g.pop("tiny", False) else ColorizerConfig.from_dict(g)
        if self.encoder_init == "scratch":
            config = dataclasses.replace(config, encoder_weights=None)
        elif self.encoder_init == "imagenet":
            config = dataclasses.replace(config, encoder_weights=config.encoder_weights or IMAGENET_ENCODER)
        elif self.encoder_init is not None:
            config = dataclasses.replace(config, encoder_weights=self.encoder_init)
        if self.init is not None:
            config = dataclasses.replace(config, page_unit_range=True)  # as the 2021 weights read the page
        return config

    def discriminator_config(self) -> DiscriminatorConfig:
        d = dict(self.discriminator)
        return DiscriminatorConfig.tiny(**_tuples(d)) if d.pop("tiny", False) else DiscriminatorConfig(**_tuples(d))

    def cue_config(self) -> CueConfig:
        hint = HintConfig(**self.cues.get("hint", {}))
        schedule = self.cues.get("schedule")
        if schedule is None:
            return CueConfig(hint=hint)
        return CueConfig(hint=hint, schedule=tuple(CueStage(**s) for s in schedule))

    def train_config(self, section: Literal["step1", "step2", "finetune"], step: Step) -> ColorizerTrainConfig:
        """The loop's config for one stage; `step` picks Appendix D's defaults that the section leaves open."""
        s: StepSection = getattr(self, section)
        epochs, batch, weights = STEP_DEFAULTS[step]
        return ColorizerTrainConfig(
            generator=self.generator_config(),
            init=self.init if section == "step1" else None,
            discriminator=self.discriminator_config(),
            cues=self.cue_config(),
            losses=LossWeights(**{**weights.to_dict(), **s.losses}),
            epochs=s.epochs or epochs,
            batch_size=s.batch_size or batch,
            crop=tuple(self.crop),
            canvas=self.page_canvas(),
            lr_g=s.lr_g,
            lr_d=s.lr_d,
            betas=tuple(self.betas),
            perceptual_layers=tuple(self.perceptual_layers),
            vgg_weights=self.vgg_weights,
            allow_random_vgg=self.allow_random_vgg,
            seed=self.seed,
            max_steps=s.max_steps,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            sample_count=self.sample_count,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor,
        )

    def augmentation(self):
        """The Appendix B pipeline as the loop's `augment`, or None for plain random crops."""
        if self.augment is None:
            return None
        from mangacolor.data.augment import paired_augmentation
        from mangacolor.training.colorizer import augment_from_paired

        return augment_from_paired(paired_augmentation(crop_hw=tuple(self.crop), seed=self.seed, canvas=self.page_canvas(),
                                                       **self.augment))

    def page_canvas(self) -> tuple[int, int]:
        """The training canvas (H, W): what a page is scaled to cover in training and in use."""
        return tuple(self.canvas or self.crop)


# `encoder_init: imagenet` without a generator.encoder_weights: timm's ImageNet SE-ResNeXt-50 in the torch cache.
IMAGENET_ENCODER = "~/.cache/torch/hub/checkpoints/seresnext50_32x4d.safetensors"


def _tuples(d: dict) -> dict:
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v for k, v in d.items()}


def total_steps(cfg: ColorizerTrainConfig, step: Step, n_supervised: int) -> int:
    """The step count `train_colorizer` will run (same formula), to spread snapshots over it."""
    epochs, batch, _ = cfg.resolved(step)
    n = epochs * epoch_steps(n_supervised, batch, tuple(cfg.canvas or cfg.crop), tuple(cfg.crop))
    return min(n, cfg.max_steps) if cfg.max_steps is not None else n


def snapshot_every(cfg: ColorizerTrainConfig, step: Step, n_supervised: int, snapshots: int) -> int:
    return max(1, math.ceil(total_steps(cfg, step, n_supervised) / snapshots))


# ---------------------------------------------------------------------------------------------
# Pages from the store
# ---------------------------------------------------------------------------------------------


class StoreImages(Sequence):
    """Images named by store URIs, decoded on access (None entries stay None)."""

    def __init__(self, store: Store, uris: Sequence[str | None], mode: str):
        self.store, self.uris, self.mode = store, list(uris), mode

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i):
        uri = self.uris[i]
        return None if uri is None or (isinstance(uri, float) and math.isnan(uri)) else read_image(self.store.read_bytes(uri), mode=self.mode)


def _fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    return image if image.shape[:2] == hw else cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


class StorePairs(Dataset):
    """bw/colour(/draft) samples as `train_colorizer` wants them, read through the store.

    A colour page of another size than its black-and-white page (a synthetic page a few pixels off)
    is resized onto it, so crops cut the same window from both.
    """

    def __init__(self, store: Store, rows: pd.DataFrame):
        self.bw = StoreImages(store, rows["bw_uri"], "L")
        self.color = StoreImages(store, rows["color_uri"], "RGB")
        self.drafts = StoreImages(store, rows["draft_uri"] if "draft_uri" in rows else [None] * len(rows), "RGB")

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        bw = self.bw[i]
        sample = {"bw": bw, "color": _fit(self.color[i], bw.shape[:2])}
        draft = self.drafts[i]
        if draft is not None:
            sample["draft"] = draft
        return sample


class StoreBw(Dataset):
    """Real black-and-white pages (step 1's adversarial domain), with their drafting-network drafts
    (`draft_uri`, S of eq. 9) where the rows have them."""

    def __init__(self, store: Store, rows: pd.DataFrame):
        self.bw = StoreImages(store, rows["uri"], "L")
        self.drafts = StoreImages(store, rows["draft_uri"] if "draft_uri" in rows else [None] * len(rows), "RGB")

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        sample = {"bw": self.bw[i]}
        draft = self.drafts[i]
        if draft is not None:
            sample["draft"] = draft
        return sample


def ranked_rows(frame: pd.DataFrame, seed: int, salt: str) -> pd.DataFrame:
    """Rows in a fixed pseudo-random order (hash of id), stable when other pages come or go."""
    key = frame["id"].map(lambda i: hashlib.sha256(f"{seed}:{salt}:{i}".encode()).hexdigest())
    return frame.assign(_k=key).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def real_training_rows(store: Store, max_pages: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The ok black-and-white pages of the train split with their store `uri`; the holdout is never among them."""
    store.latest_dir("page_splits")  # a clear error when there is no split yet
    train_ids = training_split_ids(store)
    pages = ok_rows(store, "bw_pages")
    rows = pages[pages["id"].isin(train_ids)].drop_duplicates("id")
    rows = ranked_rows(rows, seed, "real")
    return (rows.head(max_pages) if max_pages is not None else rows).sort_values("id").reset_index(drop=True)


def with_page_drafts(store: Store, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`rows` of real pages with `draft_uri`: their drafts from the latest `bw_page_drafts` (the drafting
    network's S for eq. 9), None where a page has none. Returns (rows, fallback notes)."""
    rows = rows.assign(draft_uri=None)
    if store.latest_version("bw_page_drafts") is None:
        return rows, ["bw_page_drafts not materialized: real pages get empty drafts"] if len(rows) else []
    drafts = ok_rows(store, "bw_page_drafts")
    by_page = dict(zip(drafts["page_id"], drafts["uri"]))
    rows["draft_uri"] = [by_page.get(i) for i in rows["id"]]
    missing = int(rows["draft_uri"].isna().sum())
    return rows, [f"{missing} of {len(rows)} real pages have no draft in bw_page_drafts"] if missing else []


def rows_digest(rows: pd.DataFrame, columns: Sequence[str] = ("id", "sha256")) -> str:
    h = hashlib.sha256()
    for values in rows[[c for c in columns if c in rows]].itertuples(index=False):
        h.update("|".join(map(str, values)).encode() + b"\n")
    return h.hexdigest()[:12]


@dataclass
class PairInputs:
    """Supervised pairs and how they were made: per title, the black-and-white source used."""

    rows: pd.DataFrame  # id, title, page, source_id, bw_uri, color_uri, draft_uri, sha256
    bw_source: dict[str, str]  # title -> synthetic_bw_pages | refined_pages | xdog_pages | grey
    drafts: str  # coloring_drafts | none (use_drafts false) | missing (no coloring_drafts)
    notes: list[str] = field(default_factory=list)
    wanted: str = "synthetic_bw_pages"  # the asset of the variant's synthetic level

    @property
    def fallbacks(self) -> list[str]:
        """What stands in for an upstream asset that has not been materialized yet."""
        out = [f"{t}: {s} instead of {self.wanted}" for t, s in sorted(self.bw_source.items()) if s != self.wanted]
        if self.drafts == "missing":
            out.append("coloring_drafts not materialized: empty drafts")
        return out + self.notes


def _drafts_by_source(store: Store, titles: Sequence[str]) -> dict[str, str]:
    have = [t for t in titles if store.latest_version("coloring_drafts", t)]
    if not have:
        return {}
    rows = ok_rows(store, "coloring_drafts", have)
    key = rows["source_id"] if "source_id" in rows else rows["id"]
    return dict(zip(key, rows["uri"]))


def synthetic_pairs(store: Store, titles: Sequence[str], use_drafts: bool, level: str = "cut") -> PairInputs:
    """Synthetic black-and-white page ↔ its colour page (+ that page's coloring draft), over `titles`.

    `level` (Table 3): "cut" reads `synthetic_bw_pages`, "refined" `refined_pages`, "xdog"
    `xdog_pages`. A title without its level's pages falls back to the levels below it, then to the
    grey conversion of its colour pages; `PairInputs.fallbacks` says which, for metadata and tags.
    """
    if level not in SYNTHETIC_LEVELS:
        raise ValueError(f"synthetic level must be one of {sorted(SYNTHETIC_LEVELS)}, got {level!r}")
    frames, source = [], {}
    wanted = SYNTHETIC_LEVELS[level][0]
    for title in titles:
        color = ok_rows(store, "color_pages", [title]).set_index("id")
        for asset in SYNTHETIC_LEVELS[level]:
            if store.latest_version(asset, title):
                bw = ok_rows(store, asset, [title])
                src_id = bw["source_id"] if "source_id" in bw else bw["id"]
                bw = bw.assign(source_id=src_id)
                bw = bw[bw["source_id"].isin(color.index)]
                frames.append(pd.DataFrame({
                    "id": bw["id"].values, "title": title, "page": bw["page"].values, "source_id": bw["source_id"].values,
                    "bw_uri": bw["uri"].values, "color_uri": color.loc[bw["source_id"], "uri"].values,
                    "sha256": bw["sha256"].values,
                }))
                source[title] = asset
                break
        else:
            source[title] = "grey"  # read_image(mode="L") of the colour page is its grey conversion
            frames.append(pd.DataFrame({
                "id": color.index.values, "title": title, "page": color["page"].values, "source_id": color.index.values,
                "bw_uri": color["uri"].values, "color_uri": color["uri"].values, "sha256": color["sha256"].values,
            }))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["id", "title", "page", "source_id", "bw_uri", "color_uri", "sha256"])
    drafts_state, notes = "none", []
    rows["draft_uri"] = None
    if use_drafts:
        by_source = _drafts_by_source(store, titles)
        drafts_state = "coloring_drafts" if by_source else "missing"
        rows["draft_uri"] = [by_source.get(s) for s in rows["source_id"]]
        missing = int(rows["draft_uri"].isna().sum())
        if by_source and missing:
            notes.append(f"{missing} of {len(rows)} synthetic pairs have no coloring draft (their titles' drafts are not materialized)")
    return PairInputs(rows.sort_values(["title", "id"]).reset_index(drop=True), source, drafts_state, notes, wanted)


def training_split_ids(store: Store) -> set[str]:
    """Ids of the black-and-white pages of the train split of the latest `page_splits` (empty without one)."""
    if store.latest_version("page_splits") is None:
        return set()
    splits = store.latest_manifest("page_splits")
    return set(training_pages(splits)["id"]) - set(holdout_pages(splits)["id"])


def matched_pairs(store: Store, use_drafts: bool) -> PairInputs:
    """The matched real page pairs of `page_pairs` (bw page, colour page aligned onto it) for the fine-tune.

    Only pairs whose black-and-white page is in the train split of `page_splits`: a split made before a
    colour title paired with existing pages may hold one of them in the holdout, and the fine-tune must
    not train on a page the holdout FID is measured on. `notes` says how many were left out.
    """
    empty = PairInputs(pd.DataFrame(columns=["id", "bw_id", "bw_uri", "color_uri", "draft_uri", "sha256"]), {}, "none")
    if store.latest_version("page_pairs") is None:
        return empty
    vdir = store.latest_dir("page_pairs")
    pairs = store.read_manifest(vdir)
    pairs = pairs[pairs["matched"].astype(bool) & (pairs["status"] == "ok")]
    train = training_split_ids(store)
    outside = pairs[~pairs["bw_id"].isin(train)]
    pairs = pairs[pairs["bw_id"].isin(train)]
    notes = []
    if store.latest_version("page_splits") is None and len(outside):
        notes.append(f"page_splits not materialized: {len(outside)} matched pairs left out (no train split to check them against)")
    elif len(outside):
        notes.append(f"{len(outside)} matched pairs left out: their black-and-white page is not in the train split of page_splits "
                     f"({', '.join(sorted(map(str, outside['bw_id']))[:5])}); re-materialize page_splits to train on them")
    rows = pd.DataFrame({
        "id": pairs["id"].values, "title": pairs["title"].values, "page": pairs["page"].values,
        "bw_id": pairs["bw_id"].values, "source_id": pairs["color_id"].values,
        "bw_uri": pairs["bw_uri"].values, "color_uri": [f"{vdir}/{p}" for p in pairs["path"]], "sha256": pairs["sha256"].values,
    })
    rows["draft_uri"] = None
    drafts_state = "none"
    if use_drafts:
        by_source = _drafts_by_source(store, sorted(set(rows["title"])))
        drafts_state = "coloring_drafts" if by_source else "missing"
        rows["draft_uri"] = [by_source.get(s) for s in rows["source_id"]]
    return PairInputs(rows.sort_values("id").reset_index(drop=True), {}, drafts_state, notes)


def pseudolabel_pairs(store: Store, use_drafts: bool) -> pd.DataFrame:
    """Rows of the latest `pseudolabels`: real bw page, its pseudolabel and the draft it goes with."""
    vdir = store.latest_dir("pseudolabels")
    frame = store.read_manifest(vdir)
    if "bw_id" not in frame:  # a version made with self_training off holds no labels
        return pd.DataFrame(columns=["id", "title", "page", "bw_id", "bw_uri", "color_uri", "draft_uri", "sha256"])
    frame = frame[frame["status"] == "ok"]
    bw = ok_rows(store, "bw_pages").drop_duplicates("id").set_index("id")
    drafts = [f"{vdir}/{p}" if use_drafts and isinstance(p, str) else None for p in frame.get("draft_path", [None] * len(frame))]
    return pd.DataFrame({
        "id": frame["id"].values, "title": frame["title"].values, "page": frame["page"].values, "bw_id": frame["bw_id"].values,
        "bw_uri": bw.loc[frame["bw_id"], "uri"].values, "color_uri": [f"{vdir}/{p}" for p in frame["path"]],
        "draft_uri": drafts, "sha256": frame["sha256"].values,
    })


# ---------------------------------------------------------------------------------------------
# Model files written by other stages
# ---------------------------------------------------------------------------------------------

def stored_inversion(store: Store, device: torch.device):
    """The latest `inversion_encoder` with the StyleGAN it was trained against, or None if it has no version."""
    if store.latest_version("inversion_encoder") is None:
        return None
    from mangacolor.drafting.pages import load_stored_psp

    return load_stored_psp(store, "inversion_encoder", device)[0].requires_grad_(False)


def drafting_files(store: Store, target: Path) -> tuple[dict[str, Path], list[str]]:
    """Local copies of the bundle's drafting parts: {stylegan, drafting, inversion} -> file, and notes.

    Both encoders must decode through one generator (a bundle holds one StyleGAN): the one the
    drafting network was trained against; an inversion encoder trained against another is left out.
    """
    from mangacolor.drafting.pages import generator_path, weights_row

    encoders, notes = {}, []
    # The drafting network's second round (synthetic pairs + pseudolabelled real pages, §III) when it
    # exists, else its first (synthetic pairs only).
    drafting = "drafting_network_final" if store.latest_version("drafting_network_final") else "drafting_network"
    if drafting == "drafting_network" and store.latest_version("drafting_network"):
        notes.append("drafting_network_final not materialized: the bundle drafts with the first-round drafting network")
    for part, asset in (("drafting", drafting), ("inversion", "inversion_encoder")):
        if store.latest_version(asset) is None:
            notes.append(f"{asset} not materialized: bundle without {part}")
            continue
        vdir, row = weights_row(store, asset)
        encoders[part] = (f"{vdir}/{row['path']}", row.get("stylegan_version"))
    if not encoders:
        return {}, notes
    gan_version = next(iter(encoders.values()))[1]
    target.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, (uri, version) in encoders.items():
        if version != gan_version:
            notes.append(f"{part} was trained against stylegan {version}, the drafting network against {gan_version}: bundle without {part}")
            continue
        files[part] = target / f"{part}.safetensors"
        files[part].write_bytes(store.read_bytes(uri))
    files["stylegan"] = target / "stylegan.safetensors"
    files["stylegan"].write_bytes(store.read_bytes(generator_path(store, gan_version)))
    return files, notes


def make_bundle(store: Store, colorizer: Path, flags: VariantFlags, target: Path, info: dict) -> tuple[Path, list[str], list[str]]:
    """The model bundle of a colorizer in `target`/bundle: with the drafting parts unless the variant has no
    drafts. Returns (bundle folder, parts, notes saying which parts are missing and why)."""
    from mangacolor.inference.bundle import write_bundle

    files, notes = {"colorizer": colorizer}, []
    if flags.use_drafts:
        parts, notes = drafting_files(store, target / "drafting")
        files |= parts
        if "drafting" not in files:
            notes.append("bundle colorizes with an empty draft (no drafting network)")
    info = {**info, "fallbacks": [*info.get("fallbacks", []), *notes]}
    return write_bundle(target / "bundle", files, info), sorted(files), notes


def write_folder(writer: VersionWriter, folder: Path, prefix: str, role: str) -> None:
    """Every file of a local folder into the version under `prefix/`, one manifest row each."""
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        data = f.read_bytes()
        writer.add({"id": f"{role}:{f.name}", "title": None, "page": None, "path": writer.write(f"{prefix}/{f.name}", data),
                    "sha256": sha256_bytes(data), "status": "ok", "reason": None, "role": role})


def load_generator(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A colorizer generator from weights saved by `train_colorizer` (its config is in the metadata)."""
    _, meta = load_weights(path)
    if "generator_config" not in meta:
        raise KeyError(f"{path}: no 'generator_config' in the weights' metadata; expected a file written by train_colorizer")
    return build_generator(ColorizerConfig.from_dict(meta["generator_config"]), path).to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Colorizing pages with a snapshot
# ---------------------------------------------------------------------------------------------


def _scaled(page: np.ndarray, long_side: int | None, canvas: tuple[int, int] | None = None) -> np.ndarray:
    from mangacolor.data.augment import resize_to
    from mangacolor.inference.colorize import working_size

    return resize_to(page, working_size(*page.shape[:2], long_side, canvas))


def colorize_grey(generator: torch.nn.Module, page: np.ndarray, draft: torch.Tensor | None = None,
                  long_side: int | None = None, autocast=contextlib.nullcontext, canvas: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 grey page -> uint8 RGB at the page's size; empty hint, optional draft (1,3,h,w) in [-1, 1].

    The generator sees the page on the training `canvas` (the scale it was trained at), at most
    `long_side` long; the colouring is resized back onto the page.
    """
    small = _scaled(page, long_side, canvas)
    device = next(generator.parameters()).device
    with autocast():
        out = colorize(generator, to_tensor(small)[None].to(device), draft=None if draft is None else draft.to(device))
    rgb = from_tensor(out[0].float().cpu())
    return _fit(rgb, page.shape[:2])


# ---------------------------------------------------------------------------------------------
# Snapshot ranking (replaces the paper's manual choice)
# ---------------------------------------------------------------------------------------------


@dataclass
class Ranking:
    table: pd.DataFrame  # step, epoch, fid, kid_mean, kid_std, rank (1 = best)
    colorings: dict[int, list[np.ndarray]]  # snapshot step -> its colorings of the validation pages
    feature_extractor: str
    random_init: bool
    notes: list[str]


def feature_extractor(cfg: SelectionConfig, device: torch.device, cache_dir: str | Path | None = None):
    """The FID/KID feature network of `cfg.inception`; raises WeightsNotFoundError naming the missing file."""
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import build_inception

    return FeatureExtractor(build_inception(cfg.inception), resize=cfg.resize, batch_size=cfg.batch_size,
                            device=device, cache_dir=cache_dir)


def rank_snapshots(
    snapshots: Sequence[tuple[int, int, Path]],
    validation: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    cfg: SelectionConfig,
    device: torch.device,
    extractor=None,
    progress: Callable[[str], None] | None = None,
    autocast=contextlib.nullcontext,
    canvas: tuple[int, int] | None = None,
) -> Ranking:
    """Colorize `validation` (real grey pages) with each snapshot (step, epoch, weights) and rank the
    snapshots by `cfg.metric` of their colorings against `reference` colour pages (lower is better).

    Without an `extractor` (`feature_extractor(cfg, ...)`) the colorings are made but not scored:
    every metric is NaN and the ranking falls back to the latest snapshot first.
    """
    from mangacolor.eval.fid import metric_report

    say = progress or (lambda _m: None)
    ref_feats = extractor(list(reference)) if extractor is not None else None
    rows, colorings, notes = [], {}, set()
    for step, epoch, path in snapshots:
        generator = load_generator(path, device)
        pages = [colorize_grey(generator, p, long_side=cfg.long_side, autocast=autocast, canvas=canvas) for p in validation]
        colorings[step] = pages
        row = {"step": step, "epoch": epoch, "fid": float("nan"), "kid_mean": float("nan"), "kid_std": float("nan")}
        if extractor is not None:
            report = metric_report(ref_feats, extractor(pages), feature_extractor=extractor.description, resize=extractor.resize,
                                   random_init=extractor.random_init, kid_subsets=cfg.kid_subsets,
                                   kid_subset_size=cfg.kid_subset_size, n_boot=0, fid_method=cfg.fid_method)
            notes.update(report.notes)
            row |= {"fid": report.fid, "kid_mean": report.kid_mean, "kid_std": report.kid_std}
        rows.append(row)
        say(f"snapshot step {step}: fid {row['fid']:.3f} kid {row['kid_mean']:.5f}")
    table = pd.DataFrame(rows)
    key = "kid_mean" if cfg.metric == "kid" else "fid"
    # Ties (and NaNs) go to the later snapshot: it has seen more data.
    order = table.assign(_nan=table[key].isna()).sort_values(["_nan", key, "step"], ascending=[True, True, False])
    table["rank"] = 0
    table.loc[order.index, "rank"] = range(1, len(table) + 1)
    if extractor is None:
        return Ranking(table.sort_values("rank").reset_index(drop=True), colorings, "none", False, ["not scored: no feature network"])
    return Ranking(table.sort_values("rank").reset_index(drop=True), colorings, extractor.description,
                   extractor.random_init, sorted(notes))


def choose(ranking: pd.DataFrame, keep: int, override: Sequence[int] | None) -> list[int]:
    """The snapshot steps to keep: the person's `override` (snapshot steps) or the `keep` best ranked."""
    known = list(ranking["step"])
    if override:
        unknown = [s for s in override if s not in known]
        if unknown:
            raise ValueError(f"override names snapshot steps {unknown}, but the snapshots are at steps {sorted(known)}")
        return list(dict.fromkeys(int(s) for s in override))
    return [int(s) for s in ranking.sort_values("rank")["step"].head(keep)]


def write_selection(writer: VersionWriter, ranking: Ranking, chosen: Sequence[int], weights: dict[int, Path],
                    validation: Sequence[np.ndarray], grid_pages: int = 4) -> dict[int, np.ndarray]:
    """One manifest row per snapshot (its scores, rank, grid; weights copied in when chosen); returns the grids.

    `order` is the position among the chosen (0 = best, the one step 2 and the fine-tune start from).
    """
    grids = {}
    for row in ranking.table.to_dict("records"):
        step = int(row["step"])
        grids[step] = grid = coloring_grid(validation[:grid_pages], ranking.colorings[step][:grid_pages])
        grid_png = encode_png(grid)
        out = {"id": f"snapshot:{step:08d}", "title": None, "page": None, "status": "ok", "reason": None, "role": "ranking",
               **{k: (int(v) if k in ("step", "epoch", "rank") else float(v)) for k, v in row.items()},
               "selected": step in chosen, "order": chosen.index(step) if step in chosen else None,
               "grid_path": writer.write(f"grids/step-{step:08d}.png", grid_png), "path": None, "sha256": sha256_bytes(grid_png),
               "random_init": ranking.random_init, "feature_extractor": ranking.feature_extractor}
        if step in chosen:
            data = Path(weights[step]).read_bytes()
            out |= {"path": writer.write(f"weights/step-{step:08d}.safetensors", data), "sha256": sha256_bytes(data)}
        writer.add(out)
    return grids


def coloring_grid(pages: Sequence[np.ndarray], colorings: Sequence[np.ndarray], height: int = 128) -> np.ndarray:
    """Each page beside its coloring, the pairs side by side: one strip per snapshot."""
    tiles = [t for pair in zip(pages, colorings) for t in pair]
    return thumbnail_grid(tiles, height=height)


# ---------------------------------------------------------------------------------------------
# Pseudolabels (§III training scheme, §IV-B-3)
# ---------------------------------------------------------------------------------------------


def _page_seed(seed: int, page_id: str, k: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{page_id}:{k}".encode()).digest()[:4], "little")


@dataclass
class PseudolabelSummary:
    pages: int
    colorings: int
    per_page: int
    draft_source: str  # inversion_encoder | none
    notes: list[str]
    quarantined: int = 0


@dataclass
class _Page:
    """What a reading worker hands over: the page at the generator's working size, and its own size."""

    id: str
    small: np.ndarray
    shape: tuple[int, int]


@dataclass
class _Coloring:
    k: int
    step: int
    kind: str
    label: np.ndarray
    draft: np.ndarray | None


def _colorize_batch(generator: torch.nn.Module, pages: Sequence[_Page], draft: torch.Tensor | None, autocast) -> list[np.ndarray]:
    """`colorize_grey` of pages of one working size at once: uint8 RGB, each at its page's size."""
    device = next(generator.parameters()).device
    bw = torch.stack([to_tensor(p.small) for p in pages]).to(device)
    with autocast():
        out = colorize(generator, bw, draft=None if draft is None else draft.to(device))
    return [_fit(from_tensor(o.float().cpu()), p.shape) for o, p in zip(out, pages)]


def _pseudolabel_batch(pages: Sequence[_Page], generators, per_page: int, inversion, seed: int, device, autocast) -> list[list[_Coloring]]:
    """The `per_page` colorings of each of `pages` (one working size), made a batch at a time (see make_pseudolabels)."""
    from mangacolor.drafting.sampling import mix

    s = len(generators)
    out: list[list[_Coloring]] = [[] for _ in pages]
    w_base: list[torch.Tensor | None] = []
    for k in range(per_page):
        step, generator = generators[k % s]
        drafts = None
        if k < s:
            labels = _colorize_batch(generator, pages, None, autocast)
            kind, w_plus = "auto", None
            if inversion is not None:
                with torch.no_grad():
                    w_plus = inversion.encode(torch.cat([inversion.prepare(to_tensor(label)[None].to(device)) for label in labels]))
                    drafts = inversion.synthesize(w_plus)
                kind = "auto+inverted_draft"
            w_base.append(w_plus)
        else:
            # Seeded by (seed, page, k): the same CLS vector whatever batch the page falls in.
            z = torch.cat([torch.randn(1, inversion.decoder.style_dim, generator=torch.Generator().manual_seed(_page_seed(seed, p.id, k)))
                           for p in pages]).to(device)
            with torch.no_grad():
                drafts = inversion.synthesize(mix(w_base[k % s], inversion.decoder.get_latent(z)))
            labels = _colorize_batch(generator, pages, drafts, autocast)
            kind = "mixed_draft"
        for j, label in enumerate(labels):
            out[j].append(_Coloring(k, int(step), kind, label, None if drafts is None else from_tensor(drafts[j].float().cpu())))
    return out


def make_pseudolabels(
    store: Store,
    pages: pd.DataFrame,
    snapshots: Sequence[tuple[int, Path]],
    writer: VersionWriter,
    cfg: PseudolabelConfig,
    device: torch.device,
    inversion=None,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    autocast=contextlib.nullcontext,
    canvas: tuple[int, int] | None = None,
) -> PseudolabelSummary:
    """Colorize each real page (rows with id, title, page, uri) `cfg.colorings_per_page` times.

    Coloring k of a page is made by snapshot k mod S. The first S are the snapshots' automatic
    colorings (empty hint and draft); with an inversion encoder each is inverted into W+ and its
    draft stored beside it (what step 2 feeds with that label, as the colour pages' drafts are
    their inversions). Colorings k ≥ S need drafts to differ: the k-th inverted W+ gets its colour
    rows from a random CLS vector and the snapshot colorizes the page with that draft. Without an
    inversion encoder a page gets at most S colorings, one per snapshot.

    Pages are read and brought to the working size in `cfg.num_workers` worker processes and
    colorized `cfg.batch_size` pages of one working size at a time; labels are encoded and written
    in page order by a background thread. An unreadable page is quarantined with its reason.
    """
    from mangacolor.drafting.pages import OutputThread, map_pages

    generators = [(step, load_generator(path, device)) for step, path in snapshots]
    s = len(generators)
    per_page = cfg.colorings_per_page if inversion is not None else min(cfg.colorings_per_page, s)
    notes = []
    if per_page < cfg.colorings_per_page:
        notes.append(f"{per_page} colorings per page instead of {cfg.colorings_per_page}: without the inversion encoder "
                     "colorings can only differ by snapshot")
    summary = PseudolabelSummary(0, 0, per_page, "inversion_encoder" if inversion is not None else "none", notes)

    def load(row: dict) -> _Page:
        page = read_image(store.read_bytes(row["uri"]), mode="L")
        return _Page(row["id"], _scaled(page, cfg.long_side, canvas), page.shape[:2])

    def run(batch: list[_Page]) -> list[list[_Coloring]]:
        return _pseudolabel_batch(batch, generators, per_page, inversion, seed, device, autocast)

    def write(row: dict, page: _Page, colorings: list[_Coloring]) -> None:
        for c in colorings:
            data = encode_png(c.label)
            stem = f"{row['title']}/{row['page']}-{c.k}"
            out = {"id": f"{row['id']}#{c.k}", "title": row["title"], "page": row["page"], "source_uri": row["uri"],
                   "path": writer.write(f"labels/{stem}.png", data), "width": page.shape[1], "height": page.shape[0],
                   "sha256": sha256_bytes(data), "status": "ok", "reason": None, "role": "pseudolabel_bw",
                   "bw_id": row["id"], "page_id": row["id"], "snapshot": c.step, "coloring": c.k, "kind": c.kind, "draft_path": None}
            if c.draft is not None:
                out["draft_path"] = writer.write(f"drafts/{stem}.png", encode_png(c.draft))
            writer.add(out)
            summary.colorings += 1
        summary.pages += 1

    def quarantine(row: dict, reason: str) -> None:
        writer.add({"id": row["id"], "title": row["title"], "page": row["page"], "source_uri": row["uri"], "path": None,
                    "status": "quarantined", "reason": reason, "bw_id": row["id"]})
        summary.quarantined += 1

    records = pages.to_dict("records")
    with OutputThread() as output:
        for n, item in enumerate(map_pages(records, load, run, cfg.batch_size, cfg.num_workers, group=lambda p: p.small.shape), 1):
            if item.reason is None:
                output.submit(write, item.row, item.value, item.result)
            else:
                output.submit(quarantine, item.row, item.reason)
            if progress is not None:
                progress(n, item.row["id"])
    return summary


# ---------------------------------------------------------------------------------------------
# The end of step 1: the snapshots fine-tuned on matched real pairs (Appendix D)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Recording what a stage read
# ---------------------------------------------------------------------------------------------


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


def add_training_rows(writer: VersionWriter, role: str, rows: pd.DataFrame, id_column: str = "id") -> None:
    """One manifest row per page a stage trained on, so its data version and the holdout check see them."""
    for row in rows.sort_values(id_column).drop_duplicates(id_column).to_dict("records"):
        writer.add({"id": f"{role}:{row[id_column]}", "title": row.get("title"), "page": row.get("page"), "path": None,
                    "sha256": row.get("sha256"), "status": "ok", "reason": None, "role": role, "page_id": row[id_column]})


def trained_real_ids(manifest: pd.DataFrame) -> set[str]:
    """The real black-and-white page ids a stage's manifest says it read."""
    if "role" not in manifest or "page_id" not in manifest:
        return set()
    return set(manifest.loc[manifest["role"].isin(REAL_ROLES), "page_id"].dropna())


__all__ = [
    "ColorizationConfig",
    "FinetunedSnapshot",
    "PairInputs",
    "PrefixedTracker",
    "SYNTHETIC_LEVELS",
    "PseudolabelConfig",
    "REAL_ROLES",
    "Ranking",
    "SelectionConfig",
    "StepSection",
    "StoreBw",
    "StorePairs",
    "VariantFlags",
    "add_training_rows",
    "choose",
    "colorize_grey",
    "coloring_grid",
    "feature_extractor",
    "finetune_snapshots",
    "drafting_files",
    "load_generator",
    "make_bundle",
    "make_pseudolabels",
    "matched_pairs",
    "pseudolabel_pairs",
    "rank_snapshots",
    "ranked_rows",
    "real_training_rows",
    "rows_digest",
    "snapshot_every",
    "synthetic_pairs",
    "total_steps",
    "trained_real_ids",
    "stored_inversion",
    "write_folder",
    "write_selection",
    "with_page_drafts",
    "write_snapshots",
]
