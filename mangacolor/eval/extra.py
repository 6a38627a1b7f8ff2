"""CLIP-IS and an aesthetic score: the reference-free scores recent colorization benchmarks report beside FID.

Both need pretrained weights that nothing here downloads; a user places them and names them in the preset
(`evaluation.clip_is_weights`, `evaluation.aesthetic_weights`):

- CLIP-IS: the Inception Score computed on CLIP's zero-shot class probabilities instead of Inception's.
  The file is a `torch.save`d dict {"visual": state dict of timm's `vit_large_patch14_clip_224.openai`
  image tower, "text_embeddings": (K, 768) normalised class-prompt embeddings}; convert it once from
  OpenAI's ViT-L/14 (open_clip or the `clip` package: `model.visual` and `encode_text(prompts)`).
- aesthetic: the LAION aesthetic predictor v2 (an MLP on normalised ViT-L/14 image embeddings,
  `sac+logos+ava1-l14-linearMSE.pth` from github.com/christophschuhmann/improved-aesthetic-predictor)
  plus the same CLIP image tower: {"visual": ..., "mlp": the predictor's state dict}.

Not configured: the report lists the score as absent. Configured but missing or malformed: a
`WeightsNotFoundError` that names the file and how to make it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mangacolor.eval.inception import WeightsNotFoundError

CLIP_ARCH = "vit_large_patch14_clip_224.openai"
HOW_TO = {
    "clip_is": ("a torch.save'd dict {'visual': timm " + CLIP_ARCH + " image-tower state dict, 'text_embeddings': (K, 768) "
                "normalised class-prompt embeddings}, converted once from OpenAI's ViT-L/14 (open_clip: model.visual, "
                "encode_text)"),
    "aesthetic": ("a torch.save'd dict {'visual': timm " + CLIP_ARCH + " image-tower state dict, 'mlp': the LAION aesthetic "
                  "predictor v2 state dict (sac+logos+ava1-l14-linearMSE.pth, github.com/christophschuhmann/"
                  "improved-aesthetic-predictor)}"),
}
NEEDS = {"clip_is": ("visual", "text_embeddings"), "aesthetic": ("visual", "mlp")}


def aesthetic_mlp(dim: int = 768) -> nn.Sequential:
    """The LAION aesthetic predictor v2 layout (layers.* keys of its checkpoint; dropout is inert at eval)."""
    return nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2), nn.Linear(128, 64),
                         nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_user_weights(kind: str, path: str | Path) -> dict:
    """The checkpoint dict of a CLIP-IS / aesthetic file, or a WeightsNotFoundError saying what to place where."""
    if kind not in HOW_TO:
        raise ValueError(f"unknown score {kind!r}; expected one of {sorted(HOW_TO)}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsNotFoundError(f"{kind} weights not found at {file} (preset evaluation.{kind}_weights): expected {HOW_TO[kind]}; "
                                   f"or set evaluation.{kind}_weights: null to report {kind} as absent")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same instruction
        raise WeightsNotFoundError(f"{file} is not a readable PyTorch checkpoint ({exc}); expected {HOW_TO[kind]}") from exc
    missing = [k for k in NEEDS[kind] if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise WeightsNotFoundError(f"{file} lacks {missing} for {kind}: expected {HOW_TO[kind]}")
    return ckpt


class ClipScorer:
    """CLIP-IS and/or the aesthetic score of uint8 RGB pages, from user-placed weights."""

    def __init__(self, kind: str, path: str | Path, device: str = "cpu"):
        import timm

        ckpt = load_user_weights(kind, path)
        self.kind = kind
        self.visual = timm.create_model(CLIP_ARCH, pretrained=False, num_classes=0)
        try:
            self.visual.load_state_dict(ckpt["visual"])
        except RuntimeError as exc:
            raise WeightsNotFoundError(f"{path}: 'visual' is not a {CLIP_ARCH} image tower ({exc}); expected {HOW_TO[kind]}") from exc
        self.visual = self.visual.to(device).eval().requires_grad_(False)
        self.device = device
        cfg = self.visual.pretrained_cfg
        self.mean = torch.tensor(cfg.get("mean", (0.4815, 0.4578, 0.4082))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.2686, 0.2613, 0.2758))).view(1, 3, 1, 1)
        if kind == "clip_is":
            self.text = torch.as_tensor(ckpt["text_embeddings"]).float()
        else:
            self.mlp = aesthetic_mlp(self.visual.num_features)
            self.mlp.load_state_dict({k.removeprefix("layers."): v for k, v in ckpt["mlp"].items()})
            self.mlp.eval()

    @torch.no_grad()
    def embed(self, pages: list[np.ndarray]) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pages])
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
        e = self.visual(((x - self.mean) / self.std).to(self.device)).float().cpu()
        return e / e.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def per_page(self, pages: list[np.ndarray]) -> np.ndarray:
        """Per page: the aesthetic score (N,), or CLIP's zero-shot class probabilities (N, K) for CLIP-IS."""
        e = self.embed(pages)
        if self.kind == "aesthetic":
            return self.mlp(e)[:, 0].numpy()
        return torch.softmax(100.0 * e @ self.text.T, dim=1).numpy()

    def reduce(self, rows: list[np.ndarray]) -> float:
        """The set's score from the per-page values of all batches."""
        values = np.concatenate(rows)
        if self.kind == "aesthetic":
            return float(values.mean())
        return inception_score(values)

    def score(self, pages: list[np.ndarray]) -> float:
        return self.reduce([self.per_page(pages)])


def inception_score(p: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, K)."""
    p = np.clip(np.asarray(p, np.float64), 1e-12, None)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(axis=1).mean()))


def extra_metric_notes(clip_is_weights: str | None, aesthetic_weights: str | None) -> dict[str, str]:
    """What a report says about CLIP-IS and the aesthetic score before scoring: absent (not configured) or
    the file it will load. A configured file that is missing raises here, before any page is colorized."""
    out = {}
    for kind, path in (("clip_is", clip_is_weights), ("aesthetic", aesthetic_weights)):
        if path is None:
            out[kind] = f"absent (no user-placed weights: set evaluation.{kind}_weights to {HOW_TO[kind]})"
        else:
            load_user_weights(kind, path)
            out[kind] = f"from {path}"
    return out
