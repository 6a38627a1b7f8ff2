"""Data-parallel training equals one process: each training loop, 1 process vs `torchrun` with N.

Runs a training loop for 6 steps on generated data with tiny networks on the CPU (fp32): once in
this process at global batch B, once as `torchrun --nproc_per_node N` (gloo) at the same global
batch (B/N per process), and prints the largest absolute difference between the final weights of
the two runs. The loops and their data are the kill drills' (tests/training/killdrill.py), which
the equivalence test (tests/training/test_distributed_loops.py) runs too.

    uv run python benchmarks/distributed.py                          # step 1, 2 processes
    uv run python benchmarks/distributed.py --stage all --json o.json  # every loop; {"nproc", "max_abs_diff", "stages"}
    uv run python benchmarks/distributed.py --nnodes 2 --json o.json   # step 1 on 2 "nodes" x 1 process

`--nnodes N` starts N `torchrun` agents on 127.0.0.1 that meet through a c10d rendezvous (`--rdzv-backend
c10d --rdzv-endpoint 127.0.0.1:PORT`), as the nodes of a multi-node Job meet at node 0's address:
what differs from one node is the rendezvous and the ranks' placement, not the arithmetic.

Stages: step1 (colorizer, adversarial adaptation with cues and drafts), finetune, step2 (colorizer
fine-tune and self-training), stylegan, drafting (the pSp drafting network; the inversion encoder
is the same loop with colour input), refiner, cut.

What is left is float rounding: the gradient of the global mean is summed in another order (each
process sums its shard, then the all-reduce adds the shards), and batch-norm statistics (colorizer
encoder, pSp encoder) are computed from all-reduced sums (mangacolor/training/distributed.py)
instead of PyTorch's one-pass kernel. Adam divides by the root of the squared gradient, so a
parameter whose gradient is pure rounding noise (a bias in front of a normalisation) can move by up
to lr per step in either run: the tolerance is a few multiples of 1e-6 for lr 1e-4 and a handful of
steps, and grows with lr x steps. Without the global batch-norm statistics the difference is orders
of magnitude larger (`--no-sync-bn` shows it).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training import killdrill  # noqa: E402
from tests.training.killdrill import DDP_BATCH, max_abs_diff  # noqa: E402

STAGES = {"step1": "colorizer_adapt", "finetune": "colorizer_finetune", "step2": "colorizer_self_train", "stylegan": "stylegan",
          "drafting": "drafting_network", "refiner": "refiner", "cut": "cut"}


def train(stage: str, out: Path, batch: int) -> list[Path]:
    return killdrill.run(STAGES[stage], out / stage, batch=batch, fp32=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", choices=[*STAGES, "all"],
                        help="loop to compare (repeat for several; default step1)")
    parser.add_argument("--nproc", type=int, help="processes per node (default 2 on one node, 1 per node with --nnodes)")
    parser.add_argument("--nnodes", type=int, default=1, help="torchrun agents on 127.0.0.1 meeting through a c10d rendezvous")
    parser.add_argument("--batch", type=int, help="global batch (divisible by --nproc); default: each stage's test batch")
    parser.add_argument("--no-sync-bn", action="store_true", help="per-process batch-norm statistics, to see what they cost")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    nproc = args.nproc or (2 if args.nnodes == 1 else 1)
    world = nproc * args.nnodes
    stages = list(STAGES) if "all" in (args.stage or []) else (args.stage or ["step1"])
    batch = {s: args.batch or DDP_BATCH[STAGES[s]] for s in stages}
    torch.set_num_threads(int(os.environ.get("MANGACOLOR_THREADS", "1")))

    if args.worker:  # one rank of the torchrun run
        from mangacolor.training import distributed

        if args.no_sync_bn:
            distributed.sync_batchnorm = lambda module, ctx, device: module
        with distributed.process_group("cpu"):
            for s in stages:
                train(s, args.worker, batch[s])
        return

    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        for s in stages:
            t0 = time.perf_counter()
            weights = train(s, one, batch[s])
            t1 = time.perf_counter()
            worker = [__file__, "--worker", str(many), "--stage", s] + (["--batch", str(args.batch)] if args.batch else [])
            if args.no_sync_bn:
                worker.append("--no-sync-bn")
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            if args.nnodes == 1:
                subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker],
                               check=True, env=env, cwd=ROOT)
            else:
                for node in killdrill.local_nodes(args.nnodes, nproc, worker, env, ROOT):
                    out, _ = node.communicate()
                    if node.returncode:
                        raise SystemExit(f"a torchrun node failed:\n{out[-4000:]}")
            t2 = time.perf_counter()
            diffs = {w.name: max_abs_diff(w, many / w.relative_to(one)) for w in weights}
            d = max(diffs.values())
            figures[s] = {"max_abs_diff": d, "by_file": diffs, "global_batch": batch[s], "steps": killdrill.LOOPS[STAGES[s]].steps,
                          "seconds_1proc": round(t1 - t0, 2), "seconds_nproc": round(t2 - t1, 2)}
            how = f"--nproc_per_node {nproc}" if args.nnodes == 1 else f"--nnodes {args.nnodes} --nproc-per-node {nproc} (c10d)"
            print(f"{s}: {figures[s]['steps']} steps at global batch {batch[s]}: 1 process {t1 - t0:.1f} s, torchrun "
                  f"{how} (gloo) {t2 - t1:.1f} s; max |w_1proc - w_{world}proc| = {d:.3g} "
                  f"({', '.join(f'{k} {v:.3g}' for k, v in diffs.items())})", flush=True)
    worst = max(f["max_abs_diff"] for f in figures.values())
    print(f"max_abs_diff over {', '.join(stages)}: {worst:.3g}; target <= 1e-4: {'met' if worst <= 1e-4 else 'NOT met'}"
          + ("; per-process batch-norm statistics (--no-sync-bn)" if args.no_sync_bn else ""))
    if args.json:
        args.json.write_text(json.dumps({"nproc": nproc, "nnodes": args.nnodes, "world_size": world, "max_abs_diff": worst,
                                         "sync_batchnorm": not args.no_sync_bn,
                                         "stages": figures}, indent=1))


if __name__ == "__main__":
    main()
