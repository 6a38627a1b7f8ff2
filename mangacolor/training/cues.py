"""Colour cues for training the colorization network: simulated hints and the draft schedule.

Hints (paper §III-B, "we employ the method proposed in [10] to simulate color hints"; AlacGAN's
recipe, docs/architecture.md § Colorization network lineage): per image a threshold X is drawn from a
normal of mean 1 truncated to [0, 1], and a hint point is placed wherever a uniform draw is ≥ X, on a
grid at a fraction of the page resolution, so that a page gets tens to hundreds of points. The
colours come from a slightly re-cropped and resized copy of the colour page, so a point's colour is
near, not exactly at, the pixel it marks — as a user's click would be. With a small probability
the hint is dense (every position), which teaches the network to follow a fully specified colouring.
Defaults follow the authors' 2021 model (full resolution, σ = 0.0005, 1% dense); AlacGAN used
1/4 resolution and σ = 0.005.

The hint tensor has 4 channels: RGB × mask (RGB in [-1, 1]) and the mask in {0, 1}. An empty hint
is all zeros; an empty draft is all zeros too (mid-grey in [-1, 1]), which is what the network sees at
inference when the user gives no draft.

Schedule (Appendix D): the probability that a page gets hints / a draft depends on the epoch, so the
discriminator is not overpowered early by cue-fed colorizations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CueStage:
    """From `first_epoch` on (1-based), hints with probability `p_hint`, drafts with `p_draft`."""

    first_epoch: int
    p_hint: float
    p_draft: float


# Appendix D, items 1–4.
CUE_SCHEDULE: tuple[CueStage, ...] = (
    CueStage(first_epoch=1, p_hint=0.3, p_draft=0.0),
    CueStage(first_epoch=2, p_hint=0.6, p_draft=0.0),
    CueStage(first_epoch=3, p_hint=0.3, p_draft=0.4),
    CueStage(first_epoch=4, p_hint=0.5, p_draft=0.8),
)


@dataclass(frozen=True)
class HintConfig:
    mean: float = 1.0
    sigma: float = 0.0005
    resolution: float = 1.0  # hint grid size as a fraction of the page (AlacGAN: 0.25)
    p_dense: float = 0.01  # chance that a hinted page gets every position as hint
    max_recrop: float = 0.03  # colours come from a copy cropped by up to this fraction per side


@dataclass(frozen=True)
class CueConfig:
    hint: HintConfig = field(default_factory=HintConfig)
    schedule: tuple[CueStage, ...] = CUE_SCHEDULE

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cues:
    hint: torch.Tensor  # (B, 4, H, W): RGB × mask, mask
    draft: torch.Tensor  # (B, 3, H, W), zeros where absent
    has_hint: torch.Tensor  # (B,) bool: the page was chosen for hints
    has_draft: torch.Tensor  # (B,) bool


def cue_probabilities(epoch: int, schedule: tuple[CueStage, ...] = CUE_SCHEDULE) -> tuple[float, float]:
    """(p_hint, p_draft) at a 1-based epoch: the last stage whose first epoch has been reached."""
    if epoch < 1:
        raise ValueError(f"epochs are 1-based (Appendix D counts from the first epoch); got {epoch}")
    stage = schedule[0]
    for s in schedule:
        if epoch >= s.first_epoch:
            stage = s
    return stage.p_hint, stage.p_draft


def truncated_normal(n: int, mean: float, sigma: float, low: float, high: float, rng: torch.Generator) -> torch.Tensor:
    """Exact inverse-CDF sample of N(mean, sigma²) restricted to [low, high]."""
    a, b = (0.5 * (1 + math.erf((x - mean) / (sigma * math.sqrt(2)))) for x in (low, high))
    u = a + (b - a) * torch.rand(n, generator=rng, dtype=torch.float64)
    return (mean + sigma * torch.special.ndtri(u)).clamp(low, high).float()


def simulate_hint(color: torch.Tensor, config: HintConfig, rng: torch.Generator, dense: torch.Tensor | None = None) -> torch.Tensor:
    """AlacGAN-style hint for each page of `color` (B,3,H,W) in [-1, 1] -> (B,4,H,W) on its device.

    `dense` (B,) bool forces a full mask for those pages.
    """
    b, _, h, w = color.shape
    gh, gw = max(1, round(h * config.resolution)), max(1, round(w * config.resolution))
    threshold = truncated_normal(b, config.mean, config.sigma, 0.0, 1.0, rng)
    mask = (torch.rand(b, 1, gh, gw, generator=rng) >= threshold.view(b, 1, 1, 1)).float()
    if dense is not None:
        mask[dense] = 1.0
    src = color.detach().float().cpu()
    mh, mw = int(h * config.max_recrop), int(w * config.max_recrop)
    crops = torch.randint(0, 2**31 - 1, (b, 4), generator=rng)
    colours = []
    for i in range(b):
        top, bottom = int(crops[i, 0]) % (mh + 1), int(crops[i, 1]) % (mh + 1)
        left, right = int(crops[i, 2]) % (mw + 1), int(crops[i, 3]) % (mw + 1)
        patch = src[i : i + 1, :, top : h - bottom, left : w - right]
        colours.append(F.interpolate(patch, size=(gh, gw), mode="bilinear", align_corners=False, antialias=True))
    hint = torch.cat([torch.cat(colours) * mask, mask], dim=1)
    if (gh, gw) != (h, w):
        hint = F.interpolate(hint, size=(h, w), mode="nearest")
    return hint.to(color.device, color.dtype)


def resize_draft(draft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The 256×256 StyleGAN draft to the page size (bilinear: drafts are blurred by design)."""
    if draft.shape[-2:] == tuple(size):
        return draft
    return F.interpolate(draft.float(), size=size, mode="bilinear", align_corners=False).to(draft.dtype)


def sample_cues(
    batch: dict[str, torch.Tensor],
    epoch: int,
    rng: torch.Generator,
    config: CueConfig = CueConfig(),
    hints: bool = True,
) -> Cues:
    """Cues for one batch at a 1-based `epoch` of the Appendix D schedule.

    `batch["color"]` (B,3,H,W) gives the hint colours (a real black-and-white page in step 1 has no
    colour: pass `hints=False` and `batch["bw"]` for its size; it always gets an empty hint, Ĥ of
    eq. 9). `batch["draft"]` (B,3,h,w), when present, is used with the schedule's draft probability;
    `batch["has_draft"]` (B,) bool marks pages whose draft is missing. All randomness comes from `rng`.
    """
    ref = batch["color"] if "color" in batch else batch["bw"]
    b, _, h, w = ref.shape
    p_hint, p_draft = cue_probabilities(epoch, config.schedule)
    draws = torch.rand(b, 3, generator=rng)
    has_hint = (draws[:, 0] < p_hint) if hints else torch.zeros(b, dtype=torch.bool)
    dense = has_hint & (draws[:, 2] < config.hint.p_dense)
    has_draft = draws[:, 1] < p_draft
    if "draft" not in batch:
        has_draft[:] = False
    elif "has_draft" in batch:
        has_draft &= batch["has_draft"].cpu().bool()

    hint = ref.new_zeros(b, 4, h, w)
    if has_hint.any():
        idx = has_hint.nonzero().squeeze(1)
        hint[idx.to(ref.device)] = simulate_hint(batch["color"][idx.to(ref.device)], config.hint, rng, dense[idx])
    draft = ref.new_zeros(b, 3, h, w)
    if has_draft.any():
        idx = has_draft.nonzero().squeeze(1).to(ref.device)
        draft[idx] = resize_draft(batch["draft"][idx], (h, w)).to(ref.dtype)
    return Cues(hint=hint, draft=draft, has_hint=has_hint, has_draft=has_draft)


def empty_cues(batch_size: int, height: int, width: int, device: torch.device | str = "cpu") -> Cues:
    """No hint, no draft: the network's fully automatic mode."""
    return Cues(
        hint=torch.zeros(batch_size, 4, height, width, device=device),
        draft=torch.zeros(batch_size, 3, height, width, device=device),
        has_hint=torch.zeros(batch_size, dtype=torch.bool),
        has_draft=torch.zeros(batch_size, dtype=torch.bool),
    )


__all__ = [
    "CUE_SCHEDULE",
    "CueConfig",
    "CueStage",
    "Cues",
    "HintConfig",
    "cue_probabilities",
    "empty_cues",
    "resize_draft",
    "sample_cues",
    "simulate_hint",
    "truncated_normal",
]
