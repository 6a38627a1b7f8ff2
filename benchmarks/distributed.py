"""Data-parallel training equals one process: the colorizer's step 1, 1 process vs `torchrun` with N.

Runs a few steps of step 1 (adversarial domain adaptation, full Appendix B augmentation, cues and
drafts) on generated pages with the tiny networks, on the CPU: once in this process at global batch
B, once as `torchrun --nproc_per_node N` (gloo) at the same global batch (B/N per process), and
prints the largest absolute difference between the final weights of the two runs.

    uv run python benchmarks/distributed.py                       # 2 processes, 4 steps, batch 4
    uv run python benchmarks/distributed.py --json out.json       # also writes {"nproc", "max_abs_diff", ...}

What is left is float rounding: the gradient of the global mean is summed in another order (each
process sums its shard, then the all-reduce adds the shards), and the batch-norm statistics of the
encoder are computed from all-reduced sums (mangacolor/training/distributed.py) instead of PyTorch's
one-pass kernel. Adam divides by the root of the squared gradient, so a parameter whose gradient is
pure rounding noise can move by up to lr per step in either run: the tolerance is a few multiples of
1e-6 for lr 1e-4 and a handful of steps, and grows with lr × steps. Without the global batch-norm
statistics the difference is orders of magnitude larger (`--no-sync-bn` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def pages(n: int, seed: int, h: int = 80, w: int = 64):
    rng = np.random.default_rng(seed)
    bws, colours = [], []
    for _ in range(n):
        c = np.empty((h, w, 3), np.uint8)
        c[:] = rng.integers(0, 256, 3)
        y, x = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
        c[y : y + h // 3, x : x + w // 3] = rng.integers(0, 256, 3)
        c[y - 1, x - 1 : x + w // 3 + 1] = 0
        colours.append(c)
        bws.append(c.mean(2).astype(np.uint8))
    return bws, colours


def train(out_dir: Path, steps: int, batch: int, lr: float) -> None:
    from mangacolor.data.augment import paired_augmentation
    from mangacolor.models.colorizer import ColorizerConfig
    from mangacolor.models.discriminator import DiscriminatorConfig
    from mangacolor.tracking import NullTracker
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, augment_from_paired, train_colorizer
    from mangacolor.training.cues import CueConfig, CueStage

    bw, colour = pages(12, 0)
    real, _ = pages(8, 1)
    drafts = list(np.random.default_rng(2).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    cfg = ColorizerTrainConfig(
        generator=ColorizerConfig.tiny(), discriminator=DiscriminatorConfig.tiny(), crop=(64, 64), batch_size=batch,
        allow_random_vgg=True, perceptual_layers=("relu1_2", "relu2_2"), lr_g=lr, lr_d=4 * lr, max_steps=steps,
        checkpoint_every=steps, log_every=steps, cues=CueConfig(schedule=(CueStage(first_epoch=1, p_hint=0.5, p_draft=0.5),)),
    )
    augment = augment_from_paired(paired_augmentation(crop_hw=(64, 64), max_pad=4, seed=0))
    train_colorizer(cfg, PairDataset(bw, colour, drafts), BwDataset(real), out_dir, "cpu", NullTracker(), step="adapt",
                    augment=augment)


def max_abs_diff(a: Path, b: Path) -> dict[str, float]:
    from safetensors.torch import load_file

    out = {}
    for name in ("generator", "discriminator"):
        x, y = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        out[name] = max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="global batch (divisible by --nproc)")
    parser.add_argument("--lr", type=float, default=1e-4, help="generator lr (the paper's); D gets 4x")
    parser.add_argument("--no-sync-bn", action="store_true", help="per-process batch-norm statistics, to see what they cost")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MANGACOLOR_THREADS", "1")))

    if args.worker:  # one rank of the torchrun run
        from mangacolor.training import distributed

        if args.no_sync_bn:
            distributed.sync_batchnorm = lambda module, ctx, device: module
        with distributed.process_group("cpu"):
            train(args.worker, args.steps, args.batch, args.lr)
        return

    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        t0 = time.perf_counter()
        train(one, args.steps, args.batch, args.lr)
        t1 = time.perf_counter()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", __file__,
               "--worker", str(many), "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr)]
        if args.no_sync_bn:
            cmd.append("--no-sync-bn")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run(cmd, check=True, env=env)
        t2 = time.perf_counter()
        diffs = max_abs_diff(one, many)
    d = max(diffs.values())
    print(f"step 1, {args.steps} steps at global batch {args.batch}, lr {args.lr:g}: 1 process {t1 - t0:.1f} s, "
          f"torchrun --nproc_per_node {args.nproc} (gloo) {t2 - t1:.1f} s")
    print(f"max |w_1proc - w_{args.nproc}proc| = {d:.3g} (generator {diffs['generator']:.3g}, discriminator "
          f"{diffs['discriminator']:.3g}); target <= 1e-4: {'met' if d <= 1e-4 else 'NOT met'}"
          + ("; per-process batch-norm statistics (--no-sync-bn)" if args.no_sync_bn else ""))
    if args.json:
        args.json.write_text(json.dumps({"nproc": args.nproc, "max_abs_diff": d, "max_abs_diff_generator": diffs["generator"],
                                         "max_abs_diff_discriminator": diffs["discriminator"], "steps": args.steps,
                                         "global_batch": args.batch, "lr_g": args.lr, "sync_batchnorm": not args.no_sync_bn,
                                         "seconds_1proc": round(t1 - t0, 2), "seconds_nproc": round(t2 - t1, 2)}, indent=1))


if __name__ == "__main__":
    main()
