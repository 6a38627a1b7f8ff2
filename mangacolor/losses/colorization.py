"""Losses of the colorization network (paper §III-B, eq. 2–3; Appendix C, eq. 6–11; Appendix D weights).

    L_G = λ_L1·MAE + λ_per·L_per + λ_syn·L_Gadv^syn + λ_real^G·L_Gadv^real          (eq. 2)
    L_D = L_Dadv^syn + λ_real^D·L_Dadv^real                                        (eq. 3)

MAE (eq. 7) is the mean absolute error over 3·H·W; the perceptual loss (eq. 6) is, per VGG16 layer,
the squared error summed over the feature map and divided by C·H·W (a mean), summed over layers
relu1_2, relu2_2, relu3_3, relu4_3 (Johnson et al.'s choice for VGG16; the paper does not list them).

The adversarial terms are the "classic" GAN loss of eq. 8–11 in its numerically safe logit form:
−log D(Y) − log(1 − D(G)) = BCE(logit_Y, 1) + BCE(logit_G, 0). For the generator, eq. 8 literally
minimises log(1 − D(G)), which has no gradient while D confidently rejects the colorization; by
default we use the non-saturating −log D(G) that Goodfellow et al. recommend in the same paper (same
fixed point), and `LossWeights.saturating_g=True` gives the literal form.

In step 2 (self-training) there is no separate real term: the adversarial loss is computed on the
synthetic and the pseudolabelled real colorizations together, weighted by λ_syn.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Index in torchvision's vgg16().features of each ReLU we can tap.
VGG16_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossWeights:
    """λ's of eq. 2–3. Zero switches a term off (and skips computing it)."""

    l1: float = 10.0
    per: float = 1.0
    syn: float = 1.5  # λ_synthetic: G and D adversarial terms on colorized synthetic pages
    real_g: float = 0.4  # λ_real^G
    real_d: float = 0.7  # λ_real^D
    saturating_g: bool = False  # True: eq. 8 literally, log(1 − D(G)); False: −log D(G)

    def to_dict(self) -> dict:
        return asdict(self)


STEP1_WEIGHTS = LossWeights(l1=10.0, per=1.0, syn=1.5, real_g=0.4, real_d=0.7)
STEP2_WEIGHTS = LossWeights(l1=10.0, per=1.0, syn=1.2, real_g=0.0, real_d=0.0)
FINETUNE_WEIGHTS = LossWeights(l1=10.0, per=1.0, syn=0.0, real_g=0.0, real_d=0.0)


# ---------------------------------------------------------------------------------------------
# Pixel and perceptual terms
# ---------------------------------------------------------------------------------------------


def mae_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 7: mean |G(X, H, S) − Y| over channels and pixels (and the batch)."""
    return (fake - target).abs().mean()


def default_vgg16_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def load_vgg16_features(weights: str | Path | None = None, allow_random: bool = False) -> tuple[nn.Sequential, bool]:
    """torchvision VGG16 `features` with ImageNet weights from a user-placed file.

    Returns (features, is_random). With no file and `allow_random`, the network is randomly
    initialised and a warning says so: fine for tests and the demo, meaningless as a perceptual loss.
    """
    from torchvision.models.vgg import cfgs, make_layers

    path = Path(weights).expanduser() if weights else default_vgg16_path()
    # Only the convolutional part: the classifier would be 124 M parameters we never use.
    features = make_layers(cfgs["D"])
    if path.exists():
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            features.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a torchvision VGG16 state dict ({VGG16_FILE}): {err}") from err
        return features, False
    if not allow_random:
        raise FileNotFoundError(
            f"VGG16 weights for the perceptual loss not found at {path}. Download torchvision's {VGG16_FILE} "
            f"({VGG16_URL}) on a machine with internet and copy it to {default_vgg16_path()} "
            "(or set the perceptual loss's `vgg_weights` path). For tests or the demo, allow_random=True "
            "runs with a random VGG16 instead."
        )
    msg = f"perceptual loss uses a RANDOMLY initialised VGG16 ({path} not found): not the paper's loss"
    warnings.warn(msg, stacklevel=2)
    log.warning(msg)
    return features, True


class PerceptualLoss(nn.Module):
    """Eq. 6: Σ_l mean((V_l(Ŷ) − V_l(Y))²) over VGG16 layers; images in [-1, 1]. Frozen, eval mode."""

    def __init__(
        self,
        layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        vgg_weights: str | Path | None = None,
        allow_random: bool = False,
    ):
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_RELU]
        if unknown:
            raise ValueError(f"unknown VGG16 layers {unknown}; expected names from {list(VGG16_RELU)}")
        features, self.random_init = load_vgg16_features(vgg_weights, allow_random)
        self.taps = sorted(VGG16_RELU[name] for name in layers)
        self.vgg = features[: self.taps[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # frozen: no dropout/BN in VGG16 features anyway, but keep it explicit
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.features(target)
        return sum(F.mse_loss(f, t) for f, t in zip(self.features(fake), target_feats))


# ---------------------------------------------------------------------------------------------
# Adversarial terms (eq. 8–11), on logits
# ---------------------------------------------------------------------------------------------


def g_adversarial_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Eq. 8/9. Non-saturating −log D(G) by default; `saturating` gives log(1 − D(G)) literally."""
    if saturating:
        return -F.softplus(fake_logits).mean()  # log(1 − σ(l)) = −softplus(l)
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 10/11: −log D(Y) − log(1 − D(G))."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(
    weights: LossWeights,
    fake: torch.Tensor | None,
    target: torch.Tensor | None,
    perceptual: nn.Module | None = None,
    fake_logits_syn: torch.Tensor | None = None,
    fake_logits_real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 2. `fake`/`target`: the supervised pairs (synthetic; in step 2 also pseudolabelled real).

    `fake_logits_syn`: D on the supervised colorizations (step 2: synthetic and real together);
    `fake_logits_real`: D on colorized real pages with an empty hint (step 1 only).
    Returns (total, parts); parts are detached scalars (no device sync until they are logged).
    """
    total = torch.zeros((), device=(fake if fake is not None else fake_logits_real).device)
    parts: dict[str, float] = {}
    if fake is not None and weights.l1:
        mae = mae_loss(fake, target)
        total = total + weights.l1 * mae
        parts["g_mae"] = mae.detach()
    if fake is not None and weights.per:
        if perceptual is None:
            raise ValueError("LossWeights.per > 0 needs a PerceptualLoss module")
        per = perceptual(fake, target)
        total = total + weights.per * per
        parts["g_per"] = per.detach()
    if fake_logits_syn is not None and weights.syn:
        adv = g_adversarial_loss(fake_logits_syn, weights.saturating_g)
        total = total + weights.syn * adv
        parts["g_adv_syn"] = adv.detach()
    if fake_logits_real is not None and weights.real_g:
        adv = g_adversarial_loss(fake_logits_real, weights.saturating_g)
        total = total + weights.real_g * adv
        parts["g_adv_real"] = adv.detach()
    parts["g_total"] = total.detach()
    return total, parts


def discriminator_loss(
    weights: LossWeights,
    real_logits: torch.Tensor,
    fake_logits_syn: torch.Tensor,
    fake_logits_real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 3: L_Dadv^syn + λ_real^D·L_Dadv^real; both terms score the same real colour pages Y."""
    syn = d_adversarial_loss(real_logits, fake_logits_syn)
    total = syn
    parts = {"d_adv_syn": syn.detach()}
    if fake_logits_real is not None and weights.real_d:
        real = d_adversarial_loss(real_logits, fake_logits_real)
        total = total + weights.real_d * real
        parts["d_adv_real"] = real.detach()
    parts["d_total"] = total.detach()
    parts["d_real_prob"] = torch.sigmoid(real_logits).mean().detach()
    parts["d_fake_prob"] = torch.sigmoid(fake_logits_syn).mean().detach()
    return total, parts


__all__ = [
    "FINETUNE_WEIGHTS",
    "LossWeights",
    "PerceptualLoss",
    "STEP1_WEIGHTS",
    "STEP2_WEIGHTS",
    "d_adversarial_loss",
    "discriminator_loss",
    "g_adversarial_loss",
    "generator_loss",
    "load_vgg16_features",
    "mae_loss",
]
