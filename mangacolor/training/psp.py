"""Training the drafting network and the inversion encoder: pSp into the Coloring Latent Space
(paper §III-A eq. 1, §IV-B-2, Appendix C eq. 4-5, Appendix D).

Both are a gradual style encoder in front of the frozen StyleGAN2 generator (`mangacolor/models/psp.py`),
trained on pairs (input page, blurred colour page) with

    L_draft = lambda_MSE * MSE(S(X), Y) + lambda_LPIPS * LPIPS(S(X), Y),   lambda = 1 and 0.5,

Adam at lr 1e-4, batch 8, 12 epochs. The drafting network reads synthetic black-and-white pages
(`input_nc=1`), the inversion encoder colour pages (`input_nc=3`, GAN inversion). LPIPS is the
`lpips` package's VGG variant (mangacolor/losses/lpips.py): its VGG16 trunk comes from the torch hub
cache or stays random with a warning, and the returned dict says which. Nothing is downloaded.

Straight-line loop: build, restore the newest checkpoint, iterate over epochs of shuffled pairs
(the shuffle of epoch e is seeded by (seed, e), so a resumed run sees the same batches), log,
sample, checkpoint; the encoder is written with `save_weights` at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mangacolor.device import DeviceSpec, seed_everything
from mangacolor.io.images import from_tensor, to_tensor
from mangacolor.losses.lpips import build_lpips
from mangacolor.models.psp import PSp, EncoderConfig
from mangacolor.models.stylegan2 import load_generator
from mangacolor.tracking import Tracker
from mangacolor.training import distributed
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import save_weights
from mangacolor.training.loader import LoaderSettings, step_batches
from mangacolor.training.loop import LoopTail

ENCODER_FILE = "encoder.safetensors"


@dataclass
class PSpTrainConfig(LoaderSettings):
    # encoder (pSp IR-SE-50 by default)
    input_nc: int = 1  # 1: drafting network (black-and-white pages); 3: inversion encoder (colour pages)
    input_size: int = 256
    widths: tuple[int, ...] = (64, 128, 256, 512)
    units: tuple[int, ...] = (3, 4, 14, 3)
    se_reduction: int = 16
    # optimisation (paper, Appendix D)
    batch_size: int = 8
    epochs: int = 12
    lr: float = 1e-4
    lambda_mse: float = 1.0
    lambda_lpips: float = 0.5
    lambda_w_norm: float = 0.0  # pSp's ||w - w_avg|| regulariser; the paper does not use it
    lpips_net: str = "vgg"
    vgg_weights: str | None = None  # trunk file; None: the torch hub cache (losses/lpips.py TRUNK_FILES)
    # bookkeeping
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    n_samples: int = 4

    def encoder(self) -> EncoderConfig:
        return EncoderConfig(self.input_nc, self.input_size, tuple(self.widths), tuple(self.units), self.se_reduction)


def _as_tensor(item, where: str) -> torch.Tensor:
    if isinstance(item, torch.Tensor) and item.is_floating_point():
        return item.float()
    arr = item.numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if arr.dtype != np.uint8:
        raise ValueError(f"{where}: expected a float tensor (C, H, W) in [-1, 1] or a uint8 array, got {arr.dtype}")
    return to_tensor(arr)


def _load_pair(pairs, index: int, psp: PSp, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair `index` as CPU tensors (1, C, H, W): the input at the encoder's size, the target at the generator's."""
    x, y = pairs[index]
    x = psp.prepare(_as_tensor(x, f"pair {index} input")[None])
    y = _as_tensor(y, f"pair {index} target")[None]
    if y.shape[1] != 3:
        raise ValueError(f"pair {index}: target must be a colour image (3 channels), got shape {tuple(y.shape[1:])}")
    if y.shape[-2:] != (size, size):
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x, y


def draft_loss(image: torch.Tensor, target: torch.Tensor, w_plus: torch.Tensor, latent_avg: torch.Tensor,
               cfg: PSpTrainConfig, lpips_model: nn.Module | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 1: lambda_MSE * MSE + lambda_LPIPS * LPIPS (+ optional W-norm). The parts stay tensors on the device,
    read (a host sync) only when the loop logs them."""
    image = image.float()
    mse = F.mse_loss(image, target)
    loss = cfg.lambda_mse * mse
    parts = {"mse": mse.detach()}
    if cfg.lambda_lpips > 0 and lpips_model is not None:
        lp = lpips_model(image, target).mean()
        loss = loss + cfg.lambda_lpips * lp
        parts["lpips"] = lp.detach()
    if cfg.lambda_w_norm > 0:
        w_norm = (w_plus.float() - latent_avg).norm(dim=(1, 2)).mean()
        loss = loss + cfg.lambda_w_norm * w_norm
        parts["w_norm"] = w_norm.detach()
    parts["loss"] = loss.detach()
    return loss, parts


@torch.no_grad()
def _sample_strip(psp: PSp, xs: torch.Tensor, ys: torch.Tensor) -> np.ndarray:
    """Rows: input page, target, draft."""
    was_training = psp.training
    psp.eval()
    drafts, _ = psp(xs)
    psp.train(was_training)
    size = drafts.shape[-1]
    inputs = F.interpolate(xs, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    rows = [np.concatenate([from_tensor(im) for im in batch], axis=1) for batch in (inputs, ys, drafts)]
    return np.concatenate(rows, axis=0)


def train_psp(cfg: PSpTrainConfig, pairs, generator_weights: str | Path, out_dir: str | Path, device: DeviceSpec,
              tracker: Tracker, progress: Callable[[str], None] | None = None,
              dist: distributed.DistContext | None = None) -> dict:
    """Train (or resume) a pSp encoder on `pairs` (a map-style dataset of (input page, blurred colour
    target)) against the frozen generator in `generator_weights` (our .safetensors or a port .pt).
    Writes checkpoints under out_dir/checkpoints and out_dir/encoder.safetensors.

    Under `torchrun` (`dist`, default the initialised process group) each process loads its positions
    of every step's global batch, the encoder's batch norm uses global statistics, gradients are
    averaged, and rank 0 alone logs and writes (mangacolor/training/distributed.py)."""
    dist, dev, tracker, progress = distributed.for_loop(device.device, tracker, progress, dist)
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    spec = DeviceSpec(dev, device.amp_dtype, device.seed)
    seed_everything(spec.seed)
    n_pairs = len(pairs)
    if n_pairs == 0:
        raise ValueError("train_psp: the dataset of pairs is empty")

    decoder, latent_avg = load_generator(generator_weights)
    psp = PSp(cfg.encoder(), decoder, latent_avg)
    psp.encoder = distributed.sync_batchnorm(psp.encoder, dist, spec.device)
    psp = psp.to(spec.device)
    psp.train()
    lpips_model, trunk = build_lpips(cfg.lpips_net, cfg.vgg_weights) if cfg.lambda_lpips > 0 else (None, "unused")
    if lpips_model is not None:
        lpips_model.to(spec.device)
    optim = torch.optim.Adam(psp.encoder.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(spec.device.type, enabled=spec.amp_dtype == torch.float16)
    states = {"optim": optim, "scaler": scaler}

    checkpointer = Checkpointer(out_dir / "checkpoints")
    restored = checkpointer.restore({"encoder": psp.encoder}, states)
    start = restored["step"] if restored else 0
    if restored:
        say(f"resumed from {restored['path']} at step {start}")
    tracker.log_params({"stage": f"psp_input{cfg.input_nc}", **asdict(cfg), "lpips_trunk": trunk,
                        "generator_weights": str(generator_weights), "device": spec.description})

    batch = min(cfg.batch_size, n_pairs)
    positions = dist.positions(batch)
    steps_per_epoch = n_pairs // batch  # the last partial batch is dropped: BatchNorm dislikes tiny ones
    total = cfg.epochs * steps_per_epoch
    size = decoder.size
    shown = [_load_pair(pairs, i, psp, size) for i in range(min(cfg.n_samples, n_pairs) if dist.is_main else 1)]
    sample_x = torch.cat([x for x, _ in shown]).to(spec.device)
    sample_y = torch.cat([y for _, y in shown]).to(spec.device)

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The batch of a step: positions in the shuffle of its epoch, seeded by (seed, epoch).
        epoch, pos = divmod(step, steps_per_epoch)
        perm = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch))
        chosen = perm[pos * batch : (pos + 1) * batch]
        loaded = [_load_pair(pairs, int(chosen[j]), psp, size) for j in positions]
        return torch.cat([a for a, _ in loaded]), torch.cat([b for _, b in loaded])

    tail = LoopTail(total, dist, tracker, cfg.log_every, cfg.checkpoint_every, cfg.sample_every, say)

    def metrics() -> dict[str, float]:
        parts["images_per_s"] = seen / max(1e-9, time.perf_counter() - t0)
        parts["epoch"] = done / steps_per_epoch
        return dist.mean(parts)

    def checkpoint() -> None:
        checkpointer.save(done, {"encoder": psp.encoder}, states, distributed.written_by(dist))
        say(f"checkpoint step {done}")

    parts: dict[str, float] = {}
    t0, seen = time.perf_counter(), 0
    for step, (x, y) in step_batches(make, start, total, spec.device, cfg.num_workers, cfg.prefetch_factor):
        with spec.autocast():
            image, w_plus = psp(x)
            loss, parts = draft_loss(image, y, w_plus, psp.latent_avg, cfg, lpips_model)
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        dist.average_gradients(psp.encoder)
        scaler.step(optim)
        scaler.update()
        seen += batch

        done = step + 1
        parts = tail(done, metrics, lambda m: f"step {done}/{total} loss {m['loss']:.4f}",
                     lambda: tracker.log_image(f"drafts/step_{done:08d}.png", _sample_strip(psp, sample_x, sample_y)),
                     checkpoint) or parts

    encoder_path = out_dir / ENCODER_FILE
    if dist.is_main:
        tensors, metadata = psp.encoder_state()
        save_weights(encoder_path, tensors, {**metadata, "lpips_trunk": trunk, "generator_weights": str(generator_weights),
                                             "steps": total})
    return {
        "encoder": str(encoder_path),
        "checkpoints": str(checkpointer.directory),
        "steps": total,
        "resumed_from": start if restored else None,
        "lpips_trunk": trunk,
        "metrics": parts,
    }
