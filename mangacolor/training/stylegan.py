"""Training the Coloring Latent Space: StyleGAN2 on blurred colour pages (paper §IV-B-1, Appendix D).

Recipe (docs/architecture.md § StyleGAN2, the port's defaults unless the paper says otherwise):
  - non-saturating logistic loss; lazy R1 on reals (gamma 10) every 16 D steps, weighted
    gamma/2 * 16; path-length regularisation every 4 G steps (weight 2, half batch, EMA 0.01);
  - style mixing with probability 0.9; G EMA with beta = 0.5 ** (batch / 10,000) per step, i.e.
    0.5 ** (32 / 10,000) at batch 32, a half-life of 10k images whatever the batch;
  - Adam, betas (0, 0.99), both raised to and lr multiplied by k / (k + 1) for lazy
    regularisation every k steps;
  - paper: batch 32, lr 1e-3, 700k iterations "with a gradual learning rate decrease". The paper
    does not give the schedule: we use a cosine decay from `lr` to `lr_final_fraction` * lr (10%)
    over `iterations`. It is a pure function of the step, so resuming needs no scheduler state.
Starts from a checkpoint of the common PyTorch port (`init_checkpoint`), as the paper did: §IV-C-1
reports that training from random weights "failed to learn our dataset" and the chosen generator
started from one pretrained on Danbooru. `init_checkpoint: scratch` (or None, the library default used
by the demo and tests) trains from random weights on purpose; a named file that is missing is an error
that says where to get one (`SCRATCH`, `_init_from`).

The loop: build, restore the newest checkpoint (if any), iterate, log, sample, checkpoint; at the
end the EMA generator and its average latent are written with `save_weights`. Everything random
comes from the seeded global RNG (saved in checkpoints) or from generators derived from the seed
and the step, so an interrupted run that resumes ends with the same weights as one that did not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mangacolor.device import DeviceSpec, seed_everything
from mangacolor.io.images import from_tensor
from mangacolor.models.stylegan2 import (
    Discriminator,
    Generator,
    StyleGAN2Config,
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
    generator_state,
    load_generator,
    load_port_state_dict,
    mixing_noise,
)
from mangacolor.tracking import Tracker
from mangacolor.training import distributed
from mangacolor.training.checkpoint import Checkpointer
from mangacolor.io.weights import save_weights
from mangacolor.training.loader import LoaderSettings, step_batches
from mangacolor.training.loop import LoopTail

GENERATOR_FILE = "generator.safetensors"


@dataclass
class StyleGANTrainConfig(LoaderSettings):
    # networks (256 px, config-f)
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512
    # optimisation (paper, Appendix D)
    batch_size: int = 32
    iterations: int = 700_000
    lr: float = 1e-3
    lr_final_fraction: float = 0.1  # cosine decay to 10% of lr at the last iteration
    # regularisation (StyleGAN2)
    r1_gamma: float = 10.0
    d_reg_every: int = 16
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    g_reg_every: int = 4
    mixing_prob: float = 0.9
    ema_kimg: float = 10.0  # G EMA half-life in thousands of images
    hflip: bool = True
    # start / bookkeeping
    init_checkpoint: str | None = None  # a port .pt (g, d, g_ema), our generator .safetensors, or "scratch" (None: scratch)
    log_every: int = 100
    sample_every: int = 5000
    checkpoint_every: int = 2000
    n_samples: int = 8
    truncations: tuple[float, ...] = (1.0, 0.7, 0.5)

    def networks(self) -> StyleGAN2Config:
        return StyleGAN2Config(self.size, self.style_dim, self.n_mlp, self.channel_multiplier, self.channel_max)


def learning_rate(cfg: StyleGANTrainConfig, step: int) -> float:
    """Cosine decay from cfg.lr to cfg.lr * cfg.lr_final_fraction over cfg.iterations."""
    t = min(step / max(1, cfg.iterations - 1), 1.0)
    return cfg.lr * (cfg.lr_final_fraction + (1 - cfg.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def reg_ratio(every: int) -> float:
    return every / (every + 1) if every > 0 else 1.0


@torch.no_grad()
def accumulate(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.mul_(decay).add_(p.detach(), alpha=1 - decay)


@dataclass
class StyleGANState:
    """What one training step reads and updates."""

    g: Generator
    d: Discriminator
    g_ema: Generator
    g_optim: torch.optim.Optimizer
    d_optim: torch.optim.Optimizer
    mean_path_length: float = 0.0


def build_state(cfg: StyleGANTrainConfig, device: torch.device) -> StyleGANState:
    nets = cfg.networks()
    g, d, g_ema = nets.generator().to(device), nets.discriminator().to(device), nets.generator().to(device)
    g_ema.load_state_dict(g.state_dict())
    g_ema.eval().requires_grad_(False)
    g_r, d_r = reg_ratio(cfg.g_reg_every), reg_ratio(cfg.d_reg_every)
    g_optim = torch.optim.Adam(g.parameters(), lr=cfg.lr * g_r, betas=(0.0, 0.99**g_r))
    d_optim = torch.optim.Adam(d.parameters(), lr=cfg.lr * d_r, betas=(0.0, 0.99**d_r))
    return StyleGANState(g, d, g_ema, g_optim, d_optim)


SCRATCH = "scratch"


def missing_init_message(path: Path, cfg: StyleGANTrainConfig | None = None) -> str:
    size = f"{cfg.size} px, channel_multiplier {cfg.channel_multiplier}" if cfg else "the preset's size and channel_multiplier"
    return (f"StyleGAN2 init_checkpoint not found: {path}. The paper's generator started from one pretrained on Danbooru "
            "(§IV-C-1: from random weights it 'failed to learn our dataset'). Place there a checkpoint of the common PyTorch "
            f"port, rosinality/stylegan2-pytorch (a .pt dict with 'g_ema', optionally 'g' and 'd'; {size}): e.g. a Danbooru "
            "StyleGAN2 such as Gwern's, converted from NVIDIA's .pkl with the port's `python convert_weight.py --repo "
            "stylegan2 network.pkl`, or one trained with the port. Or set stylegan.init_checkpoint to its path, or to "
            f"'{SCRATCH}' to train from random weights on purpose.")


def _init_from(state: StyleGANState, path: str, cfg: StyleGANTrainConfig | None = None) -> None:
    """Start from a pretrained generator: a port checkpoint gives g, d and g_ema when it has them."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(missing_init_message(p, cfg))
    if p.suffix in (".pt", ".pth"):
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        if "g_ema" not in ckpt:
            raise KeyError(f"{p}: expected the port's checkpoint dict with 'g_ema', found {sorted(ckpt)}")
        load_port_state_dict(state.g_ema, ckpt["g_ema"], f"{p}[g_ema]")
        load_port_state_dict(state.g, ckpt.get("g", ckpt["g_ema"]), f"{p}[g]")
        if "d" in ckpt:
            load_port_state_dict(state.d, ckpt["d"], f"{p}[d]")
    else:
        generator, _ = load_generator(p)
        state.g.load_state_dict(generator.state_dict())
        state.g_ema.load_state_dict(generator.state_dict())


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _draw(g: Generator, batch: int, cfg: StyleGANTrainConfig, device: torch.device,
          dist: distributed.DistContext) -> dict:
    """The random inputs of one generator pass over a global batch of `batch`: z (mixed with
    probability `mixing_prob`), the mixing point and the noise maps, drawn at the global size from the
    global RNG (which every rank seeds alike) and cut to this rank's rows, so that N processes draw
    what one process does. Keyword arguments of `g(...)`."""
    styles = [dist.shard(z) for z in mixing_noise(batch, cfg.style_dim, cfg.mixing_prob, device)]
    inject = int(torch.randint(1, g.n_latent, ()).item()) if len(styles) > 1 else None
    noise = [dist.shard(torch.randn(batch, 1, *getattr(g.noises, f"noise_{i}").shape[-2:], device=device))
             for i in range(g.num_layers)]
    return {"styles": styles, "inject_index": inject, "noise": noise}


def stylegan_step(state: StyleGANState, real: torch.Tensor, step: int, cfg: StyleGANTrainConfig,
                  spec: DeviceSpec, dist: distributed.DistContext = distributed.SINGLE) -> dict[str, float]:
    """One D step (+ lazy R1), one G step (+ lazy path length), the EMA update. Returns metrics (tensors on the
    device: reading one is a host sync, which the loop does at its logging steps only).

    `real` is this process's rows of the step's global batch (all of it for one process). Under
    `torchrun` gradients are averaged and the path-length mean is taken over the global batch; the
    discriminator's minibatch-stddev groups equal one process's when each process has at least
    `stddev_group` (4) images (rows are strided across processes).
    """
    g, d = state.g, state.d
    batch, device = real.shape[0] * dist.world_size, real.device
    lr = learning_rate(cfg, step)
    for group in state.g_optim.param_groups:
        group["lr"] = lr * reg_ratio(cfg.g_reg_every)
    for group in state.d_optim.param_groups:
        group["lr"] = lr * reg_ratio(cfg.d_reg_every)
    metrics: dict[str, float] = {"lr": lr}

    # Discriminator.
    _set_requires_grad(g, False)
    _set_requires_grad(d, True)
    with spec.autocast():
        with torch.no_grad():
            fake, _ = g(**_draw(g, batch, cfg, device, dist))
        real_pred, fake_pred = d(real), d(fake)
        d_loss = d_logistic_loss(real_pred, fake_pred)
    d.zero_grad(set_to_none=True)
    d_loss.backward()
    dist.average_gradients(d)
    state.d_optim.step()
    metrics.update(d_loss=d_loss.detach(), real_score=real_pred.detach().float().mean(), fake_score=fake_pred.detach().float().mean())

    # Lazy regularisers, in the same precision as the main passes (as StyleGAN2-ADA does); the
    # penalties themselves are reduced in fp32.
    if cfg.d_reg_every > 0 and step % cfg.d_reg_every == 0:
        real_req = real.detach().float().requires_grad_(True)
        with spec.autocast():
            real_pred = d(real_req)
        r1 = d_r1_loss(real_pred, real_req)
        d.zero_grad(set_to_none=True)
        # 0 * pred keeps every D output in the graph, as the port does.
        (cfg.r1_gamma / 2 * r1 * cfg.d_reg_every + 0 * real_pred[0, 0]).backward()
        dist.average_gradients(d)
        state.d_optim.step()
        metrics["r1"] = r1.detach()

    # Generator.
    _set_requires_grad(g, True)
    _set_requires_grad(d, False)
    with spec.autocast():
        fake, _ = g(**_draw(g, batch, cfg, device, dist))
        g_loss = g_nonsaturating_loss(d(fake))
    g.zero_grad(set_to_none=True)
    g_loss.backward()
    dist.average_gradients(g)
    state.g_optim.step()
    metrics["g_loss"] = g_loss.detach()

    if cfg.g_reg_every > 0 and step % cfg.g_reg_every == 0:
        path_batch = max(1, batch // cfg.path_batch_shrink)
        with spec.autocast():
            fake, latents = g(**_draw(g, path_batch, cfg, device, dist), return_latents=True)
        y = dist.shard(torch.randn(path_batch, *fake.shape[1:], device=device, dtype=fake.dtype))
        _, _, path_lengths = g_path_regularize(fake, latents, state.mean_path_length, cfg.path_decay,
                                               noise=y / math.sqrt(fake.shape[2] * fake.shape[3]))
        # The moving average moves by the global batch's mean path length (through the all-reduce, as
        # g_path_regularize's own mean is differentiated for one process).
        mean_path = state.mean_path_length + cfg.path_decay * (dist.global_mean(path_lengths) - state.mean_path_length)
        path_loss = (path_lengths - mean_path).pow(2).mean()
        g.zero_grad(set_to_none=True)
        (cfg.path_regularize * cfg.g_reg_every * path_loss + 0 * fake[0, 0, 0, 0]).backward()
        dist.average_gradients(g)
        state.g_optim.step()
        # A Python float: identical whether the run was resumed (from JSON) or not.
        state.mean_path_length = float(mean_path)
        metrics.update(path_loss=path_loss.detach(), mean_path_length=state.mean_path_length,
                       path_length=path_lengths.detach().mean())

    accumulate(state.g_ema, g, 0.5 ** (batch / (cfg.ema_kimg * 1000)))
    return metrics


# --------------------------------------------------------------------------------------------
# Data


def _image_tensor(item, size: int, where: str) -> torch.Tensor:
    if isinstance(item, (tuple, list)):
        item = item[0]
    t = torch.as_tensor(np.asarray(item)) if not isinstance(item, torch.Tensor) else item
    if t.dtype == torch.uint8:
        if t.shape != (size, size, 3):
            raise ValueError(f"{where}: expected a uint8 image of shape ({size}, {size}, 3), got {tuple(t.shape)}; "
                             "resize the blurred colour pages to the StyleGAN size first")
        return t.permute(2, 0, 1).float().div(127.5).sub(1.0)
    if t.shape != (3, size, size):
        raise ValueError(f"{where}: expected uint8 (H, W, 3) or float (3, {size}, {size}) in [-1, 1], got {tuple(t.shape)}")
    return t.float()


_END = object()


class _RealBatches:
    """Batch for step i, computed from i alone for indexable datasets (shuffled per epoch with a
    generator seeded by (seed, epoch)); iterables are cycled and skipped forward on resume."""

    def __init__(self, images, batch: int, size: int, seed: int, hflip: bool):
        self.images, self.batch, self.size, self.seed, self.hflip = images, batch, size, seed, hflip
        self.indexable = hasattr(images, "__getitem__") and hasattr(images, "__len__")
        if self.indexable and len(images) == 0:
            raise ValueError("train_stylegan: the image dataset is empty")
        self._iter = None
        self._consumed = 0
        self._perm_epoch, self._perm = -1, None

    def _indexed(self, n: int):
        epoch, pos = divmod(n, len(self.images))
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_epoch, self._perm = epoch, torch.randperm(len(self.images), generator=g)
        idx = int(self._perm[pos])
        return self.images[idx], f"image {idx}"

    def _streamed(self, n: int):
        if self._iter is None or n < self._consumed:
            self._iter, self._consumed = iter(self.images), 0
        while self._consumed <= n:
            item = next(self._iter, _END)
            if item is _END:
                # Start over; a one-shot iterator (a generator object) cannot, and says so.
                self._iter = iter(self.images)
                item = next(self._iter, _END)
                if item is _END:
                    raise ValueError(f"train_stylegan: the image stream ended after {self._consumed} images; pass a "
                                     "re-iterable (a list, a Dataset, or an object whose __iter__ starts over)")
            self._consumed += 1
        return item, f"image #{n}"

    def __call__(self, step: int, device: torch.device, positions: list[int] | None = None) -> torch.Tensor:
        """Step `step`'s batch, or only its `positions` (this process's rows under `torchrun`)."""
        rows = list(range(self.batch)) if positions is None else list(positions)
        out = []
        for j in rows:
            n = step * self.batch + j
            item, where = self._indexed(n) if self.indexable else self._streamed(n)
            out.append(_image_tensor(item, self.size, where))
        real = torch.stack(out)
        if self.hflip:
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            flip = (torch.rand(self.batch, generator=g) < 0.5)[rows]
            real[flip] = real[flip].flip(-1)
        return real.to(device)


# --------------------------------------------------------------------------------------------
# Samples


@torch.no_grad()
def sample_grid(g_ema: Generator, z: torch.Tensor, truncations: Iterable[float], seed: int = 0) -> np.ndarray:
    """uint8 grid: one row per truncation psi, one column per z. Uses no global RNG."""
    mean = g_ema.mean_latent(4096, torch.Generator().manual_seed(seed))
    rows = []
    for psi in truncations:
        w = g_ema.get_latent(z)
        w = mean + psi * (w - mean)
        images = g_ema.synthesis(w.unsqueeze(1).expand(-1, g_ema.n_latent, -1), randomize_noise=False)
        rows.append(np.concatenate([from_tensor(im) for im in images], axis=1))
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------------------------


def train_stylegan(cfg: StyleGANTrainConfig, images, out_dir: str | Path, device: DeviceSpec, tracker: Tracker,
                   progress: Callable[[str], None] | None = None, dist: distributed.DistContext | None = None) -> dict:
    """Train (or resume training) StyleGAN2 on `images` (a map-style dataset or an iterable of uint8
    (size, size, 3) arrays). Writes checkpoints under out_dir/checkpoints and the EMA generator to
    out_dir/generator.safetensors. Returns paths and the final metrics.

    Under `torchrun` (`dist`, default the initialised process group) each process reads its rows of
    every step's global batch (see `stylegan_step`) and rank 0 alone logs and writes."""
    dist, dev, tracker, progress = distributed.for_loop(device.device, tracker, progress, dist)
    positions = dist.positions(cfg.batch_size)
    dist.positions(max(1, cfg.batch_size // cfg.path_batch_shrink))  # the path-length batch must split too
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    spec = DeviceSpec(dev, device.amp_dtype, device.seed)
    if spec.amp_dtype == torch.float16:
        # No loss scaling here: fp16 gradients of the R1 / path terms underflow. bf16 or fp32 only.
        say("train_stylegan: fp16 autocast is not supported, running in fp32")
        spec = DeviceSpec(spec.device, None, spec.seed)
    checkpointer = Checkpointer(out_dir / "checkpoints")
    if cfg.init_checkpoint and cfg.init_checkpoint != SCRATCH and checkpointer.latest() is None:
        if not Path(cfg.init_checkpoint).expanduser().exists():  # say so before building anything
            raise FileNotFoundError(missing_init_message(Path(cfg.init_checkpoint).expanduser(), cfg))
    seed_everything(spec.seed)
    state = build_state(cfg, spec.device)
    modules = {"g": state.g, "d": state.d, "g_ema": state.g_ema}
    optimizers = {"g_optim": state.g_optim, "d_optim": state.d_optim}

    restored = checkpointer.restore(modules, optimizers)
    if restored is None:
        start = 0
        if cfg.init_checkpoint and cfg.init_checkpoint != SCRATCH:
            _init_from(state, cfg.init_checkpoint, cfg)
            say(f"initialised from {cfg.init_checkpoint}")
    else:
        start = restored["step"]
        state.mean_path_length = float(restored["extra"].get("mean_path_length", 0.0))
        say(f"resumed from {restored['path']} at step {start}")
    tracker.log_params({"stage": "stylegan", **asdict(cfg), "device": spec.description})

    batches = _RealBatches(images, cfg.batch_size, cfg.size, spec.seed, cfg.hflip)
    sample_z = torch.randn(cfg.n_samples, cfg.style_dim, generator=torch.Generator().manual_seed(spec.seed)).to(spec.device)
    tail = LoopTail(cfg.iterations, dist, tracker, cfg.log_every, cfg.checkpoint_every, cfg.sample_every, say)

    def logged() -> dict[str, float]:
        metrics["images_per_s"] = images_done / max(1e-9, time.perf_counter() - t0)
        return dist.mean(metrics)

    def checkpoint() -> None:
        checkpointer.save(done, modules, optimizers, {"mean_path_length": state.mean_path_length, **distributed.written_by(dist)})
        say(f"checkpoint step {done}")

    metrics: dict[str, float] = {}
    t0, images_done = time.perf_counter(), 0
    cpu = torch.device("cpu")
    # A streamed (non-indexable) source has one position, kept in this process: no workers then.
    workers = cfg.num_workers if batches.indexable else 0
    for step, real in step_batches(lambda s: batches(s, cpu, positions), start, cfg.iterations, spec.device, workers,
                                   cfg.prefetch_factor):
        metrics = stylegan_step(state, real, step, cfg, spec, dist)
        images_done += cfg.batch_size
        done = step + 1
        metrics = tail(done, logged, lambda m: f"step {done}/{cfg.iterations} d_loss {m['d_loss']:.3f} g_loss {m['g_loss']:.3f}",
                       lambda: tracker.log_image(f"samples/step_{done:08d}.png",
                                                 sample_grid(state.g_ema, sample_z, cfg.truncations, spec.seed)),
                       checkpoint) or metrics

    generator_path = out_dir / GENERATOR_FILE
    if dist.is_main:
        latent_avg = state.g_ema.mean_latent(4096, torch.Generator().manual_seed(spec.seed))
        tensors, metadata = generator_state(state.g_ema, latent_avg)
        save_weights(generator_path, tensors, {**metadata, "steps": cfg.iterations})
    return {
        "generator": str(generator_path),
        "checkpoints": str(checkpointer.directory),
        "steps": cfg.iterations,
        "resumed_from": restored["step"] if restored else None,
        "metrics": metrics,
    }
