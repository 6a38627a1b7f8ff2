"""Training loop of the xDoG refiner (paper §IV-A-3, step 2).

Pairs are (xDoG of a real black-and-white page, that page): the refiner learns to put back what
xDoG strips (screentone, solid blacks, greys), and is then applied to xDoG of colour pages.

Loss: λ_L1·L1 + λ_per·perceptual, the weights of the colorization network (Appendix D: 10 and 1).
An adversarial term is available (`adversarial=True`) but off by default: input and target are
pixel-aligned (one is computed from the other), so the supervised terms already define the answer,
and matching the real pixel distribution is the job of CUT at step 3; a discriminator here would
only add a second network and its instability to a stage whose output is translated again.

The perceptual loss is a minimal VGG16 feature L1 kept in this file (the grey page is replicated to
three channels); it reads torchvision's `vgg16-397923af.pth` from the torch hub cache when present.

Every random choice of step s (which pairs, the augmentation) is drawn from a generator seeded by
(seed, s), so a run resumed from a checkpoint makes exactly the steps the interrupted run would have.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from torch import nn

from mangacolor.data.augment import paired_augmentation
from mangacolor.device import DeviceSpec
from mangacolor.models.cut import PatchDiscriminator, lsgan_d_loss, lsgan_g_loss
from mangacolor.models.refiner import Refiner, RefinerConfig
from mangacolor.tracking import Tracker
from mangacolor.training import distributed
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_configured, save_weights
from mangacolor.training.loader import LoaderFields, step_batches
from mangacolor.training.loop import FiniteLosses, LoopTail

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# torchvision's VGG16 `features`: numbers are conv widths, "M" a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RefinerTrainConfig(LoaderFields):
    model_config = ConfigDict(extra="forbid")

    model: RefinerConfig = RefinerConfig()
    steps: int = 20_000
    batch_size: int = 8
    crop_hw: tuple[int, int] = (384, 256)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lambda_l1: float = 10.0
    lambda_per: float = 1.0
    # relu1_2, relu2_2, relu3_3, relu4_3 of torchvision's VGG16 `features`
    perceptual_layers: tuple[int, ...] = (3, 8, 15, 22)
    vgg_weights: str = "auto"  # "auto": the torch hub cache file if present, else random + warning; a path; "random"
    adversarial: bool = False
    lambda_adv: float = 0.1
    d_lr: float = 4e-4
    checkpoint_every: int = 500
    log_every: int = 50
    sample_every: int = 1000
    seed: int = 0


# --- perceptual loss -----------------------------------------------------------------------------


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` (same parameter names), returning the chosen ReLU outputs."""

    def __init__(self, taps: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        last = max(taps)
        self.features = nn.Sequential(*layers[: last + 1])
        self.taps = tuple(sorted(taps))

    def forward(self, x):
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def vgg16_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


class VGGPerceptual(nn.Module):
    """L1 between VGG16 features of two grey images in [-1, 1] (frozen network)."""

    def __init__(self, layers: tuple[int, ...] = (3, 8, 15, 22), weights: str = "auto"):
        super().__init__()
        self.vgg = VGG16Features(layers)
        path = vgg16_weights_path() if weights == "auto" else None if weights == "random" else Path(weights)
        if path is not None and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.vgg.load_state_dict({k: v for k, v in state.items() if k in self.vgg.state_dict()})
            self.pretrained = True
        elif weights == "auto" or weights == "random":
            if weights == "auto":
                warnings.warn(
                    f"VGG16 weights not found at {path}: the perceptual loss uses a randomly initialised VGG16. "
                    f"For real training put {VGG16_FILE} there (download {VGG16_URL}).",
                    stacklevel=2,
                )
            self.pretrained = False
        else:
            raise FileNotFoundError(
                f"VGG16 weights file {path} does not exist: put torchvision's {VGG16_FILE} there "
                f"(download {VGG16_URL}) or set vgg_weights to 'auto' or 'random'"
            )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x, y):
        def prep(t):
            t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t
            return ((t + 1) / 2 - self.mean) / self.std

        fx, fy = self.vgg(prep(x)), self.vgg(prep(y))
        return sum(F.l1_loss(a, b) for a, b in zip(fx, fy)) / len(fx)


# --- data ----------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, *more: int) -> int:
    return int(np.random.SeedSequence([seed, step, *more]).generate_state(1)[0])


def _batch(cfg: RefinerTrainConfig, pairs: Sequence, augment, step: int,
           positions: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s batch, or only the `positions` of it that this process computes (DDP)."""
    rng = np.random.default_rng(step_seed(cfg.seed, step))
    chosen = rng.integers(len(pairs), size=cfg.batch_size)
    xs, ys = [], []
    for i in range(cfg.batch_size) if positions is None else positions:
        idx = chosen[i]
        xdog_page, real_page = pairs[int(idx)]
        if xdog_page.ndim != 2 or xdog_page.shape != real_page.shape:
            raise ValueError(
                f"refiner pair {idx}: expected two aligned uint8 HxW grey pages, got {xdog_page.shape} and {real_page.shape}"
            )
        out = augment(input=xdog_page, target=real_page, seed=step_seed(cfg.seed, step, i))
        xs.append(out["input"])
        ys.append(out["target"])

    def stack(arrs):
        t = torch.from_numpy(np.stack(arrs)).float().div(127.5).sub(1.0)
        return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)

    return stack(xs), stack(ys)


def sample_strip(*images: torch.Tensor, rows: int = 4) -> np.ndarray:
    """uint8 grid: one row per batch item, the given tensors side by side."""
    cols = [((t[:rows].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for t in images]
    grid = torch.cat([torch.cat(list(c[:, 0]), dim=0) for c in cols], dim=1)
    return grid.numpy()


# --- loop ----------------------------------------------------------------------------------------


def train_refiner(
    cfg: RefinerTrainConfig,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    out_dir: str | Path,
    device: DeviceSpec,
    tracker: Tracker,
    progress: Callable[[str], None] | None = None,
    dist: distributed.DistContext | None = None,
) -> dict:
    """Train (or resume training) the refiner; returns {"weights": path, "step": n, "metrics": {...}}.

    `pairs`: a sequence of aligned (xDoG page, real page) uint8 HxW arrays, read on access.
    `out_dir` holds `checkpoints/` and the final `refiner.safetensors`. Under `torchrun` (`dist`,
    default the initialised process group) each process takes its positions of every step's global
    batch, gradients are averaged, and rank 0 alone logs and writes (mangacolor/training/distributed.py).
    """
    if len(pairs) == 0:
        raise ValueError("train_refiner: no (xDoG, real) pairs to train on")
    out_dir = Path(out_dir)
    dist, dev, tracker, progress = distributed.for_loop(device.device, tracker, progress, dist)
    positions = dist.positions(cfg.batch_size)
    torch.manual_seed(cfg.seed)
    model = Refiner(cfg.model).to(dev)
    perceptual = VGGPerceptual(cfg.perceptual_layers, cfg.vgg_weights).to(dev) if cfg.lambda_per > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    modules, optimizers = {"g": model}, {"g": opt}
    if cfg.adversarial:
        disc = PatchDiscriminator(cfg.model.out_channels).to(dev)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
        modules["d"], optimizers["d"] = disc, opt_d
    scaler = torch.amp.GradScaler(dev.type, enabled=device.amp_dtype == torch.float16)
    augment = paired_augmentation(cfg.crop_hw, brightness=0, contrast=0, saturation=0, jitter_p=0.0, grey_p=0.0, seed=cfg.seed)

    optimizers["scaler"] = scaler
    ckpt = Checkpointer(out_dir / "checkpoints")
    restored = ckpt.restore(modules, optimizers)
    start = restored["step"] if restored else 0
    tracker.log_params({"stage": "refiner", **cfg.model_dump(mode="json"), "perceptual_pretrained": bool(perceptual and perceptual.pretrained)})
    if progress:
        progress(f"refiner: {'resuming at step ' + str(start) if start else 'starting'} of {cfg.steps}")

    tail = LoopTail(cfg.steps, dist, tracker, cfg.log_every, cfg.checkpoint_every, cfg.sample_every, progress)
    finite = FiniteLosses("refiner")
    metrics: dict[str, float] = {}
    batches = step_batches(lambda s: _batch(cfg, pairs, augment, s, positions), start, cfg.steps, dev, cfg.num_workers, cfg.prefetch_factor)
    for step, (x, y) in batches:
        with device.autocast():
            fake = model(x)
        if cfg.adversarial:
            with device.autocast():
                loss_d = lsgan_d_loss(disc(y), disc(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            dist.average_gradients(disc)
            scaler.step(opt_d)
        with device.autocast():
            l1 = F.l1_loss(fake.float(), y)
            per = perceptual(fake.float(), y) if perceptual is not None else torch.zeros((), device=dev)
            loss = cfg.lambda_l1 * l1 + cfg.lambda_per * per
            if cfg.adversarial:
                disc.requires_grad_(False)
                adv = lsgan_g_loss(disc(fake))
                disc.requires_grad_(True)
                loss = loss + cfg.lambda_adv * adv
        finite.add(loss)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        dist.average_gradients(model)
        scaler.step(opt)
        scaler.update()

        done = step + 1
        if tail.due(done, cfg.log_every) or tail.due(done, cfg.checkpoint_every):
            finite.check(done)
        metrics = tail(
            done,
            lambda: dist.mean({"refiner/loss": loss.item(), "refiner/l1": l1.item(), "refiner/perceptual": per.item()}
                              | ({"refiner/adv": adv.item(), "refiner/d": loss_d.item()} if cfg.adversarial else {})),
            lambda _: f"refiner step {done}/{cfg.steps} loss {loss.item():.4f}",
            lambda: tracker.log_image(f"refiner/samples_{done:08d}.png", sample_strip(x, fake, y)),
            lambda: ckpt.save(done, modules, optimizers, extra={"stage": "refiner", **distributed.written_by(dist)}),
        ) or metrics

    weights = out_dir / "refiner.safetensors"
    if dist.is_main:
        save_weights(weights, model, metadata={"config": asdict(cfg.model), "steps": cfg.steps})
    return {"weights": str(weights), "step": cfg.steps, "metrics": metrics}


def load_refiner(path: str | Path, device: torch.device | str = "cpu") -> Refiner:
    """A trained refiner from `refiner.safetensors` (its config is stored in the file's metadata)."""
    return load_configured(path, RefinerConfig, Refiner, "train_refiner", device)
