"""Training loop of CUT, refined xDoG pages -> real black-and-white pages (paper §IV-A-3, step 3).

As in the paper: random 64x64 crops (CUT then learns local pixel statistics, not page layout),
batch 1, Adam 2e-4 with betas (0.5, 0.999) for G, D and the PatchNCE heads, LSGAN, λ_GAN 1,
λ_NCE 1 with the identity term on target crops (FastCUT: `CUTConfig.fastcut()`). The trained
generator is applied to whole pages with `apply_cut`.

The PatchNCE heads take their sizes from the first batch's features, so the loop runs one forward
before it creates their optimiser (CUT's "data-dependent initialisation"); a resumed run does the
same before loading the checkpoint, which then overwrites the freshly made heads.

Crops, flips and the sampled patch positions of step s come from generators seeded by (seed, s):
a run resumed from a checkpoint makes exactly the steps the interrupted run would have made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import ConfigDict

from mangacolor.device import DeviceSpec
from mangacolor.models.cut import (
    CUTConfig, PatchSampleMLP, ResnetGenerator, apply_cut, build, lsgan_d_loss, lsgan_g_loss, nce_loss,
)
from mangacolor.tracking import Tracker
from mangacolor.training import distributed
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import load_configured, save_weights
from mangacolor.training.loader import LoaderFields, step_batches
from mangacolor.training.loop import FiniteLosses, LoopTail
from mangacolor.training.refiner import sample_strip, step_seed

__all__ = ["CUTTrainConfig", "train_cut", "apply_cut", "load_cut_generator", "cut_optimizers", "random_crops"]


class CUTTrainConfig(LoaderFields):
    model_config = ConfigDict(extra="forbid")

    model: CUTConfig = CUTConfig()
    steps: int = 200_000
    batch_size: int = 1
    crop: int = 64
    flip: bool = True
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    checkpoint_every: int = 2000
    log_every: int = 100
    sample_every: int = 2000
    seed: int = 0


def random_crops(pages: Sequence[np.ndarray], n: int, size: int, rng: np.random.Generator, flip: bool) -> torch.Tensor:
    """n random size x size crops of random pages as an (n, 1, size, size) tensor in [-1, 1].

    Pages smaller than a crop are mirrored out to it (tiny pages happen in real folders).
    """
    crops = []
    for idx in rng.integers(len(pages), size=n):
        page = pages[int(idx)]
        if page.ndim != 2 or page.dtype != np.uint8:
            raise ValueError(f"CUT pages must be uint8 HxW grey arrays; page {idx} is {page.dtype} {page.shape}")
        h, w = page.shape
        if h < size or w < size:
            page = cv2.copyMakeBorder(page, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
            h, w = page.shape
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = page[y : y + size, x : x + size]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
    return torch.from_numpy(np.stack(crops)).float().div(127.5).sub(1.0)[:, None]


def cut_optimizers(G: ResnetGenerator, D: torch.nn.Module, F_mlp: PatchSampleMLP, cfg: CUTTrainConfig) -> dict[str, torch.optim.Optimizer]:
    if not F_mlp.built:
        raise RuntimeError("cut_optimizers: the PatchNCE heads are created by their first forward; run one before making the optimisers")
    return {
        "g": torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas),
        "d": torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas),
        "f": torch.optim.Adam(F_mlp.parameters(), lr=cfg.lr, betas=cfg.betas),
    }


def train_cut(
    cfg: CUTTrainConfig,
    source_pages: Sequence[np.ndarray],
    target_pages: Sequence[np.ndarray],
    out_dir: str | Path,
    device: DeviceSpec,
    tracker: Tracker,
    progress: Callable[[str], None] | None = None,
    dist: distributed.DistContext | None = None,
) -> dict:
    """Train (or resume) CUT from `source_pages` (refined xDoG) to `target_pages` (real), uint8 HxW.

    Returns {"weights": path of cut_generator.safetensors, "step": n, "metrics": {...}}. Under
    `torchrun` (`dist`, default the initialised process group) each process keeps its rows of every
    step's global batch of crops (crops are cheap; the patch positions are shared), gradients are
    averaged, and rank 0 alone logs and writes (mangacolor/training/distributed.py).
    """
    if len(source_pages) == 0 or len(target_pages) == 0:
        raise ValueError(f"train_cut needs pages on both sides; got {len(source_pages)} source and {len(target_pages)} target pages")
    out_dir = Path(out_dir)
    dist, dev, tracker, progress = distributed.for_loop(device.device, tracker, progress, dist)
    dist.positions(cfg.batch_size)  # a global batch that does not split is an error before any work
    m = cfg.model
    torch.manual_seed(cfg.seed)
    G, D, F_mlp = build(m)
    G, D, F_mlp = G.to(dev), D.to(dev), F_mlp.to(dev)

    def crops(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(step_seed(cfg.seed, step))
        a = random_crops(source_pages, cfg.batch_size, cfg.crop, rng, cfg.flip)
        b = random_crops(target_pages, cfg.batch_size, cfg.crop, rng, cfg.flip)
        return dist.shard(a), dist.shard(b)

    # Data-dependent initialisation: the heads' sizes come from a first forward.
    with torch.no_grad():
        F_mlp(G.encode(crops(0)[0].to(dev)), generator=torch.Generator().manual_seed(cfg.seed))
    optimizers = cut_optimizers(G, D, F_mlp, cfg)
    modules = {"g": G, "d": D, "f": F_mlp}
    scaler = torch.amp.GradScaler(dev.type, enabled=device.amp_dtype == torch.float16)

    ckpt = Checkpointer(out_dir / "checkpoints")
    restored = ckpt.restore(modules, optimizers | {"scaler": scaler})
    start = restored["step"] if restored else 0
    tracker.log_params({"stage": "cut", **cfg.model_dump(mode="json")})
    if progress:
        progress(f"cut: {'resuming at step ' + str(start) if start else 'starting'} of {cfg.steps}")

    tail = LoopTail(cfg.steps, dist, tracker, cfg.log_every, cfg.checkpoint_every, cfg.sample_every, progress)
    finite = FiniteLosses("CUT generator")
    metrics: dict[str, float] = {}
    for step, (real_a, real_b) in step_batches(crops, start, cfg.steps, dev, cfg.num_workers, cfg.prefetch_factor):
        patches = torch.Generator().manual_seed(step_seed(cfg.seed, step, 1))
        n = real_a.shape[0]
        with device.autocast():
            # One pass for the translation and the identity: InstanceNorm keeps the halves independent.
            fake = G(torch.cat([real_a, real_b]) if m.nce_idt else real_a)
        fake_b = fake[:n]

        D.requires_grad_(True)
        with device.autocast():
            loss_d = lsgan_d_loss(D(real_b), D(fake_b.detach()))
        optimizers["d"].zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        dist.average_gradients(D)
        scaler.step(optimizers["d"])

        D.requires_grad_(False)
        with device.autocast():
            loss_gan = lsgan_g_loss(D(fake_b))
            loss_nce = nce_loss(G, F_mlp, real_a, fake_b, m.tau, generator=patches)
            if m.nce_idt:
                loss_nce_y = nce_loss(G, F_mlp, real_b, fake[n:], m.tau, generator=patches)
                nce_both = 0.5 * (loss_nce + loss_nce_y)
            else:
                nce_both = loss_nce
            loss_g = m.lambda_gan * loss_gan + m.lambda_nce * nce_both
        finite.add(loss_g)
        optimizers["g"].zero_grad(set_to_none=True)
        optimizers["f"].zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        dist.average_gradients(G)
        dist.average_gradients(F_mlp)
        scaler.step(optimizers["g"])
        scaler.step(optimizers["f"])
        scaler.update()

        done = step + 1
        if tail.due(done, cfg.log_every) or tail.due(done, cfg.checkpoint_every):
            finite.check(done)
        metrics = tail(
            done,
            lambda: dist.mean({"cut/d": loss_d.item(), "cut/g_gan": loss_gan.item(), "cut/nce": loss_nce.item()}
                              | ({"cut/nce_idt": loss_nce_y.item()} if m.nce_idt else {})),
            lambda _: f"cut step {done}/{cfg.steps} nce {loss_nce.item():.4f} d {loss_d.item():.4f}",
            lambda: tracker.log_image(f"cut/samples_{done:08d}.png", sample_strip(real_a, fake_b, real_b)),
            lambda: ckpt.save(done, modules, optimizers | {"scaler": scaler}, extra={"stage": "cut", **distributed.written_by(dist)}),
        ) or metrics

    weights = out_dir / "cut_generator.safetensors"
    if dist.is_main:
        save_weights(weights, G, metadata={"config": asdict(m), "steps": cfg.steps})
    return {"weights": str(weights), "step": cfg.steps, "metrics": metrics}


def load_cut_generator(path: str | Path, device: torch.device | str = "cpu") -> ResnetGenerator:
    """The trained generator from `cut_generator.safetensors` (config from the file's metadata)."""
    return load_configured(path, CUTConfig, ResnetGenerator, "train_cut", device)
