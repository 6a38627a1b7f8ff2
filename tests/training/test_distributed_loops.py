"""Data-parallel training equals one process, for every training loop.

Each loop of tests/training/killdrill.py (tiny networks, generated data, 6 steps, fp32) runs once in
one process at global batch B and once under `torchrun --nproc_per_node 2` (gloo, B/2 per process,
mangacolor/training/distributed.py); the final weights must agree to 1e-4, and only rank 0 may have
written the checkpoints. Both runs go in one subprocess each, all loops in a row, side by side.
What is left is float rounding (benchmarks/distributed.py says why and prints the figure per stage).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.killdrill import DDP_BATCH, max_abs_diff

ROOT = Path(__file__).resolve().parents[2]
# The inversion encoder is the drafting network's loop with colour input: one of the two is enough.
GLOBAL_BATCH = {loop: batch for loop, batch in DDP_BATCH.items() if loop != "inversion_encoder"}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    loops = [f"{loop}:{batch}" for loop, batch in GLOBAL_BATCH.items()]
    drill = ["-m", "tests.training.killdrill", "--fp32", *loops]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    one = subprocess.Popen([sys.executable, *drill, str(root / "one")], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *drill,
                            str(root / "two")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, proc in (("1 process", one), ("torchrun", two)):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} failed:\n{out[-4000:]}"
    return root


# CUT: its PatchNCE gradients did not split over the batch (a channels-last gradient into PyTorch's CPU
# backward gave a 1-image batch other gradients; fixed in mangacolor/models/cut.py). Its conv biases in front
# of InstanceNorm have zero gradient in exact arithmetic, so Adam, which normalises the gradient, moves them
# by up to lr per step on rounding noise in either run: 1 vs 2 processes then differ by up to 2 x lr x steps
# (1.7e-3 measured, benchmarks/distributed.py --stage cut; that those biases carry it is the likely cause,
# not yet checked weight by weight). A gradient that fails to split again shows far above that.
TOLERANCES = {"cut": 5e-3}


@pytest.mark.parametrize("loop", list(GLOBAL_BATCH))
def test_two_processes_train_the_weights_of_one(runs, loop):
    weights = sorted(p.relative_to(runs / "one") for p in (runs / "one" / loop).glob("*.safetensors"))
    assert weights, f"{loop}: the 1-process run wrote no weights"
    diffs = {str(w): max_abs_diff(runs / "one" / w, runs / "two" / w) for w in weights}
    assert max(diffs.values()) <= TOLERANCES.get(loop, TOLERANCE), f"{loop}: 1 vs 2 processes differ by {diffs}"

    # Rank 0 alone checkpoints (every step here), and says so.
    states = sorted((runs / "two" / loop).rglob("checkpoints/step-*/state.json"))
    assert states, f"{loop}: no checkpoint under torchrun"
    assert all(json.loads(p.read_text())["extra"]["written_by"] == {"rank": 0, "world_size": 2} for p in states)


def test_two_nodes_train_step1_to_the_weights_of_one_process(runs, tmp_path):
    """Two `torchrun` agents on 127.0.0.1 (--nnodes 2 --nproc-per-node 1) meet through a c10d rendezvous, as the pods
    of a multi-node Job meet at node 0's address, and train the colorizer's step 1 as the one process did."""
    from tests.training.killdrill import local_nodes

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    nodes = local_nodes(2, 1, ["-m", "tests.training.killdrill", "--fp32", f"colorizer_adapt:{GLOBAL_BATCH['colorizer_adapt']}",
                               str(tmp_path / "nodes")], env, ROOT)
    for node in nodes:
        out, _ = node.communicate(timeout=600)
        assert node.returncode == 0, out[-4000:]
    for name in ("generator.safetensors", "discriminator.safetensors"):
        diff = max_abs_diff(runs / "one" / "colorizer_adapt" / name, tmp_path / "nodes" / name)
        assert diff <= TOLERANCE, f"{name}: 1 process vs 2 nodes differ by {diff}"
    states = sorted((tmp_path / "nodes").rglob("checkpoints/step-*/state.json"))
    assert states and all(json.loads(p.read_text())["extra"]["written_by"] == {"rank": 0, "world_size": 2} for p in states)
