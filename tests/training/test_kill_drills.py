"""Kill drills: every training loop, SIGKILLed at a random step and restarted, ends bit-identical.

Each drill runs the loop (tests/training/killdrill.py, tiny sizes, a checkpoint every step) three
times in forked child processes: once straight through with no loader workers (the reference), once
with loader workers until SIGKILL arrives at a random moment after a random checkpoint, and once more
in the same folder, which resumes. The final weights must equal the reference bit for bit. The
refiner and CUT drills run in fp16 autocast, so their GradScaler (which skips the first steps while
its scale backs off) must be restored too; the colorizer's step 1 drill uses two workers, so it also
shows that the number of workers does not change what is trained.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# Imported here, once, so the forked children do not each pay for it.
import mangacolor.data.augment  # noqa: F401
import mangacolor.training.colorizer  # noqa: F401
import mangacolor.training.cut  # noqa: F401
import mangacolor.training.psp  # noqa: F401
import mangacolor.training.refiner  # noqa: F401
import mangacolor.training.stylegan  # noqa: F401
from tests.training import killdrill

FORK = multiprocessing.get_context("fork")
STEP_DELAY = 0.1  # seconds a killed run sleeps per step, so the kill lands before the run ends
WORKERS = {"colorizer_adapt": 2}  # the others use one worker


def _child(loop: str, out: Path, workers: int, delay: float) -> None:
    torch.set_num_threads(1)
    killdrill.run(loop, out, workers, delay)


def _run(loop: str, out: Path, workers: int, delay: float = 0.0):
    proc = FORK.Process(target=_child, args=(loop, out, workers, delay))
    proc.start()
    return proc


def _finished(proc, timeout: float = 540) -> None:
    proc.join(timeout)
    assert proc.exitcode == 0, f"drill child ended with exit code {proc.exitcode} (see its traceback above)"


def _latest_step(folder: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in folder.glob("step-*") if (p / "state.json").exists()]
    return max(steps, default=0)


def _weights(files: list[Path]) -> dict[str, torch.Tensor]:
    out = {}
    for f in files:
        out |= {f"{f.name}:{k}": v for k, v in load_file(str(f)).items()}
    return out


FINAL_FILES = {
    "refiner": ["refiner.safetensors"],
    "cut": ["cut_generator.safetensors"],
    "stylegan": ["generator.safetensors"],
    "inversion_encoder": ["encoder.safetensors"],
    "drafting_network": ["encoder.safetensors"],
    "colorizer_adapt": ["generator.safetensors", "discriminator.safetensors"],
    "colorizer_self_train": ["generator.safetensors", "discriminator.safetensors"],
    "colorizer_finetune": ["generator.safetensors"],
}


@pytest.mark.parametrize("loop", list(killdrill.LOOPS))
def test_sigkill_and_restart_ends_bit_identical(loop, tmp_path):
    drill = killdrill.LOOPS[loop]
    workers = WORKERS.get(loop, 1)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _run(loop, straight, workers=0)
    _finished(reference)

    kill_after = random.randint(1, drill.steps - 2)  # a checkpoint exists, and at least two steps remain
    victim = _run(loop, killed, workers, STEP_DELAY)
    deadline = time.monotonic() + 540
    while _latest_step(killed / "checkpoints") < kill_after:
        assert victim.is_alive(), f"{loop}: the run ended (exit code {victim.exitcode}) before checkpoint {kill_after}"
        assert time.monotonic() < deadline, f"{loop}: no checkpoint {kill_after} within 540 s"
        time.sleep(0.005)
    time.sleep(random.uniform(0, STEP_DELAY))  # anywhere in the step: computing, saving, sleeping
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert victim.exitcode == -signal.SIGKILL
    files = FINAL_FILES[loop]
    assert not (killed / files[0]).exists(), f"{loop}: the run finished before the kill; the drill tested nothing"
    resumed_from = _latest_step(killed / "checkpoints")

    _finished(_run(loop, killed, workers))

    want, got = _weights([straight / f for f in files]), _weights([killed / f for f in files])
    assert sorted(got) == sorted(want)
    different = [k for k in want if want[k].dtype != got[k].dtype or not torch.equal(want[k], got[k])]
    identical = not different
    print(f"\nKILL DRILL | {loop} | killed after checkpoint {resumed_from} of {drill.steps} (target {kill_after}) "
          f"| workers {workers} | {'fp16' if drill.amp else 'fp32'} | identical: {'yes' if identical else 'no'}")
    assert identical, f"{loop}: resumed run differs from the straight run in {len(different)} tensors, e.g. {different[:3]}"
