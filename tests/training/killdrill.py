"""The training loops at tiny sizes, for the kill drills (tests/training/test_kill_drills.py).

Each entry of `LOOPS` runs one training loop on generated data into `out_dir` (checkpoints under
`out_dir/checkpoints`, a checkpoint every step) and returns the final weights files; `batch`
overrides the loop's global batch (the distributed equivalence test and benchmarks/distributed.py
run these same loops in 1 and N processes). By hand:

    uv run python -m tests.training.killdrill colorizer_adapt /tmp/drill --workers 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mangacolor.device import DeviceSpec
from mangacolor.tracking import NullTracker

FP16 = torch.float16


@dataclass(frozen=True)
class Drill:
    steps: int
    run: Callable[[Path, int, DeviceSpec, Callable[[str], None]], list[Path]]
    amp: torch.dtype | None = None  # autocast precision of the drill (fp16 exercises the GradScaler)


def grey_pages(n: int, seed: int, hw=(40, 36)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.where(rng.random(hw) < 0.3, 40, 230).astype(np.uint8) for _ in range(n)]


def refiner(out: Path, workers: int, spec: DeviceSpec, progress, batch: int = 2) -> list[Path]:
    from mangacolor.models.refiner import TINY
    from mangacolor.training.refiner import RefinerTrainConfig, train_refiner

    real = grey_pages(3, 0)
    pairs = [(np.where(r < 128, 0, 255).astype(np.uint8), r) for r in real]
    cfg = RefinerTrainConfig(model=TINY, steps=6, batch_size=batch, crop_hw=(32, 24), lambda_per=0.0,
                             checkpoint_every=1, log_every=1, sample_every=100, lr=1e-3, num_workers=workers)
    return [Path(train_refiner(cfg, pairs, out, spec, NullTracker(), progress)["weights"])]


def cut(out: Path, workers: int, spec: DeviceSpec, progress, batch: int = 1) -> list[Path]:
    from mangacolor.models.cut import TINY
    from mangacolor.training.cut import CUTTrainConfig, train_cut

    cfg = CUTTrainConfig(model=TINY, steps=6, batch_size=batch, crop=32, checkpoint_every=1, log_every=1, sample_every=100, num_workers=workers)
    return [Path(train_cut(cfg, grey_pages(3, 1), grey_pages(3, 2), out, spec, NullTracker(), progress)["weights"])]


def stylegan(out: Path, workers: int, spec: DeviceSpec, progress, batch: int = 4) -> list[Path]:
    from mangacolor.training.stylegan import StyleGANTrainConfig, train_stylegan

    cfg = StyleGANTrainConfig(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8, batch_size=batch, iterations=6,
                              lr=2e-3, d_reg_every=2, g_reg_every=2, log_every=1, sample_every=100, checkpoint_every=1,
                              n_samples=2, truncations=(1.0,), num_workers=workers)
    images = list(np.random.default_rng(3).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    return [Path(train_stylegan(cfg, images, out, spec, NullTracker(), progress)["generator"])]


def _generator_file(folder: Path) -> Path:
    """A frozen tiny StyleGAN2 generator (the same bytes every time) for the pSp encoders."""
    from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
    from mangacolor.io.weights import save_weights

    path = folder / "frozen_generator.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        g = StyleGAN2Config(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8).generator()
        save_weights(path, *generator_state(g, g.mean_latent(64, torch.Generator().manual_seed(0))))
    return path


def _psp(out: Path, workers: int, spec: DeviceSpec, progress, input_nc: int, batch: int = 2) -> list[Path]:
    from mangacolor.training.psp import PSpTrainConfig, train_psp

    g = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(max(4, batch)):
        colour = F.interpolate(torch.rand(1, 3, 4, 4, generator=g) * 2 - 1, size=(32, 32), mode="bilinear", align_corners=False)[0]
        grey = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])[None]
        pairs.append((grey if input_nc == 1 else colour, colour))
    cfg = PSpTrainConfig(input_nc=input_nc, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4, batch_size=batch,
                         epochs=3, lr=1e-3, lambda_lpips=0.0, log_every=1, sample_every=100, checkpoint_every=1, n_samples=1,
                         num_workers=workers)
    return [Path(train_psp(cfg, pairs, _generator_file(out.parent), out, spec, NullTracker(), progress)["encoder"])]


def drafting_network(out, workers, spec, progress, batch: int = 2):
    return _psp(out, workers, spec, progress, input_nc=1, batch=batch)


def inversion_encoder(out, workers, spec, progress, batch: int = 2):
    return _psp(out, workers, spec, progress, input_nc=3, batch=batch)


def _colour_pages(n: int, seed: int, h: int = 40, w: int = 36) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    colours = []
    for _ in range(n):
        c = np.empty((h, w, 3), np.uint8)
        c[:] = rng.integers(0, 256, 3)
        y, x = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
        c[y : y + h // 3, x : x + w // 3] = rng.integers(0, 256, 3)
        colours.append(c)
    return [c.mean(2).astype(np.uint8) for c in colours], colours


def _colorizer(out: Path, workers: int, spec: DeviceSpec, progress, step: str, batch: int = 2) -> list[Path]:
    from mangacolor.data.augment import paired_augmentation
    from mangacolor.models.colorizer import ColorizerConfig
    from mangacolor.models.discriminator import DiscriminatorConfig
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, augment_from_paired, train_colorizer

    bw, colour = _colour_pages(max(4, batch), 0)
    drafts = list(np.random.default_rng(1).integers(0, 256, (len(bw), 16, 16, 3), dtype=np.uint8))
    synthetic = PairDataset(bw, colour, drafts)
    real_bw, real_colour = _colour_pages(4, 2)
    real = PairDataset(real_bw, real_colour) if step == "self_train" else BwDataset(real_bw)
    cfg = ColorizerTrainConfig(generator=ColorizerConfig.tiny(), discriminator=DiscriminatorConfig.tiny(), crop=(32, 32),
                               batch_size=batch, epochs=3, allow_random_vgg=True, perceptual_layers=("relu1_2",), max_steps=6,
                               log_every=1, checkpoint_every=1, num_workers=workers)
    augment = augment_from_paired(paired_augmentation(crop_hw=(32, 32), seed=0))
    result = train_colorizer(cfg, synthetic, None if step == "finetune" else real, out, spec, NullTracker(), progress,
                             step=step, snapshot_every=3, augment=augment)
    return [result.generator] + ([result.discriminator] if result.discriminator is not None else [])


LOOPS: dict[str, Drill] = {
    "refiner": Drill(6, refiner, FP16),
    "cut": Drill(6, cut, FP16),
    "stylegan": Drill(6, stylegan),
    "inversion_encoder": Drill(6, inversion_encoder),
    "drafting_network": Drill(6, drafting_network),
    "colorizer_adapt": Drill(6, lambda o, w, s, p, **kw: _colorizer(o, w, s, p, "adapt", **kw)),
    "colorizer_self_train": Drill(6, lambda o, w, s, p, **kw: _colorizer(o, w, s, p, "self_train", **kw)),
    "colorizer_finetune": Drill(6, lambda o, w, s, p, **kw: _colorizer(o, w, s, p, "finetune", **kw)),
}


# Global batch of each loop in the 1-vs-N-process comparisons (2 per process and more where a loop needs it):
# StyleGAN2's minibatch-stddev groups 4 images, and with 4 per process they are the groups of one process
# (rows are strided over processes). The two pSp encoders are one loop (input_nc 1 or 3).
DDP_BATCH = {"colorizer_adapt": 4, "colorizer_self_train": 4, "colorizer_finetune": 4, "stylegan": 8,
             "drafting_network": 4, "inversion_encoder": 4, "refiner": 2, "cut": 2}


def local_nodes(nnodes: int, nproc_per_node: int, args: list[str], env: dict, cwd: Path) -> list:
    """`torchrun` as `nnodes` "nodes" on 127.0.0.1, `nproc_per_node` processes each, meeting through a c10d rendezvous
    as the pods of a multi-node training Job do (assets/launch.py `pod_command`): node 0 hosts the rendezvous store
    (`is_host`), the others join it. One Popen per node, `args` after torchrun's own."""
    import socket
    import subprocess
    import sys
    import uuid

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", uuid.uuid4().hex[:12], "--local-addr", "127.0.0.1"]
    env = {**env, "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", "lo")}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *rdzv, "--rdzv-conf", f"is_host={str(node == 0).lower()}",
                              *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for node in range(nnodes)]


def max_abs_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between the floating-point tensors of two safetensors files."""
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        raise ValueError(f"{a} and {b} hold different tensors")
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())


def run(loop: str, out_dir: Path, workers: int = 0, step_delay: float = 0.0, batch: int | None = None,
        fp32: bool = False, say: Callable[[str], None] | None = None, device: str = "cpu") -> list[Path]:
    """Run (or resume) one drill loop; `step_delay` seconds of sleep per progress message (kill window);
    `batch`: the global batch (default: the drill's); `fp32`: without the drill's autocast; `say`: gets the
    loop's progress messages ("resuming at step ..."); `device`: cpu or cuda (benchmarks/gpu_check.py)."""
    import warnings

    torch.set_num_threads(1)
    drill = LOOPS[loop]
    spec = DeviceSpec(torch.device(device), None if fp32 else drill.amp, seed=7)

    def progress(message: str) -> None:
        if say is not None:
            say(message)
        if step_delay:
            time.sleep(step_delay)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init VGG and friends
        return drill.run(Path(out_dir), workers, spec, progress, **({"batch": batch} if batch else {}))


def main() -> None:
    """One loop into OUT_DIR, or several (OUT_DIR/<loop>); under `torchrun`, as one rank of a gloo group."""
    from mangacolor.training import distributed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", nargs="+", help=f"LOOP or LOOP:BATCH (global batch), LOOP one of {', '.join(LOOPS)}")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--fp32", action="store_true", help="no autocast (the drills' fp16 exercises the GradScaler)")
    parser.add_argument("--verbose", action="store_true", help="print the loops' progress messages")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    runs = [(name, int(batch) if batch else None) for name, _, batch in (entry.partition(":") for entry in args.loop)]
    unknown = [name for name, _ in runs if name not in LOOPS]
    if unknown:
        parser.error(f"unknown loop {unknown[0]!r}; choose from {', '.join(LOOPS)}")
    with distributed.process_group("cpu"):
        for loop, batch in runs:
            out = args.out_dir / loop if len(runs) > 1 else args.out_dir
            say = (lambda m: print(m, flush=True)) if args.verbose else None
            for path in run(loop, out, args.workers, args.step_delay, batch, args.fp32, say, args.device):
                print(path)


if __name__ == "__main__":
    main()
