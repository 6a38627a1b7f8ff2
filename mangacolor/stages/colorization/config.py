"""The colorization stages' settings: preset section `colorizer:` (paper §III, Appendix D; ablations of Tables 1 and 3).

`ColorizationConfig` holds every setting of the stages; `train_config` derives the loop's
`ColorizerTrainConfig` for one step from it. The ablations are switches of the same stages
(`VariantFlags`): the synthetic data level (xDoG only, + refiner, + CUT), without drafts, without
adversarial adaptation, without self-training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from mangacolor.config import stage_config
from mangacolor.io.pagemap import WORKERS_HELP
from mangacolor.losses.colorization import LossWeights
from mangacolor.models.colorizer import ColorizerConfig
from mangacolor.models.discriminator import DiscriminatorConfig
from mangacolor.stages import common
from mangacolor.training.colorizer import STEP_DEFAULTS, ColorizerTrainConfig, Step, page_canvas
from mangacolor.training.cues import CueConfig, CueStage, HintConfig

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

    def tags(self) -> dict[str, str]:
        """The switches as MLflow tags (and the registered version's `variant` tag)."""
        return {"variant": self.name(), "synthetic": self.synthetic, "use_drafts": str(self.use_drafts).lower(),
                "adversarial_adaptation": str(self.adversarial_adaptation).lower(), "self_training": str(self.self_training).lower()}


class StepSection(BaseModel):
    """One training step; None: Appendix D's value for the step (`STEP_DEFAULTS`)."""

    epochs: int | None = None
    batch_size: int | None = None
    max_steps: int | None = Field(None, description="stop early (demo); null: the full epochs")
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    losses: dict = Field(default_factory=dict, description="λ's overriding the step's Appendix D weights, e.g. {per: 0}")
    # The batch in GPU memory (mangacolor/training/memory.py): the step's result is the same, its memory smaller.
    micro_batch: int | None = Field(None, ge=1, description="rows per forward/backward, gradients added up over the step "
                                                            "(null: the whole per-GPU batch); needs batchnorm: frozen")
    checkpointing: bool = Field(False, description="recompute the generator's activations in the backward pass")
    batchnorm: Literal["batch", "frozen"] = Field("batch", description="frozen: normalise with the encoder's running statistics")
    channels_last: bool | None = Field(None, description="channels-last layout for the networks (null: on a GPU)")


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
    num_workers: int | None = Field(None, ge=0, description=WORKERS_HELP)


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
    num_workers: int | None = Field(None, ge=0, description=WORKERS_HELP)
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
        """The loop's config for one stage, derived from this one: every loop field this section or the whole
        `colorizer:` section has (the section's first), the networks and cues built from their dicts, and
        Appendix D's values of `step` where the section leaves epochs, batch size or loss weights open."""
        s: StepSection = getattr(self, section)
        epochs, batch, weights = STEP_DEFAULTS[step]
        loop_fields = {f.name for f in dataclasses.fields(ColorizerTrainConfig)}
        values = {name: getattr(self, name) for name in loop_fields & set(type(self).model_fields)}
        values |= {name: getattr(s, name) for name in loop_fields & set(type(s).model_fields)}
        return ColorizerTrainConfig(**values | {
            "generator": self.generator_config(),
            "discriminator": self.discriminator_config(),
            "cues": self.cue_config(),
            "init": self.init if section == "step1" else None,  # colorizer.init: mc2:PATH starts step 1 only
            "losses": LossWeights(**{**weights.to_dict(), **s.losses}),
            "epochs": s.epochs or epochs,
            "batch_size": s.batch_size or batch,
            "canvas": self.page_canvas(),
        })

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
        return page_canvas(self.canvas, self.crop)


# `encoder_init: imagenet` without a generator.encoder_weights: timm's ImageNet SE-ResNeXt-50 in the torch cache.
IMAGENET_ENCODER = "~/.cache/torch/hub/checkpoints/seresnext50_32x4d.safetensors"


def _tuples(d: dict) -> dict:
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v for k, v in d.items()}


def snapshot_every(cfg: ColorizerTrainConfig, step: Step, n_supervised: int, snapshots: int) -> int:
    """The interval that spreads `snapshots` generator snapshots evenly over the steps `train_colorizer` will run."""
    return max(1, math.ceil(cfg.total_steps(step, n_supervised) / snapshots))


SECTION = "colorizer"
# Loop settings that do not change what a stage computes: a retry with other values resumes.
NOT_IN_CHECKPOINT_KEY = {"max_steps", "log_every", "checkpoint_every", "sample_count"}
# The variant switches that change what each training stage computes (the rest act downstream of it),
# so flipping `self_training` reuses step 1's checkpoints and store version.
STAGE_FLAGS = {"step1": ("synthetic", "use_drafts", "adversarial_adaptation"), "step2": ("synthetic", "use_drafts"),
               "finetune": ("synthetic", "use_drafts", "adversarial_adaptation")}


def colorization_config(preset: dict) -> ColorizationConfig:
    """The preset's `colorizer:` section."""
    return stage_config(preset, SECTION, ColorizationConfig)


def stage_flags(cfg: ColorizationConfig, section: str) -> str:
    """The variant switches that shape one training stage (`section`: step1 | finetune | step2), as text."""
    return ",".join(f"{f}={getattr(cfg.variant, f)}" for f in STAGE_FLAGS[section])


def checkpoint_key(cfg: ColorizationConfig, section: str, **inputs) -> dict:
    """The config that shapes one training stage, plus digests of its inputs."""
    shared = common.checkpoint_key(cfg, NOT_IN_CHECKPOINT_KEY | {"variant", "step1", "step2", "finetune", "selection", "pseudolabels"})
    stage = common.checkpoint_key(getattr(cfg, section), NOT_IN_CHECKPOINT_KEY)
    return {**shared, section: stage, "flags": stage_flags(cfg, section), **inputs}
