"""Training batches through DataLoader workers: the same batches in the same order whatever the workers."""

import numpy as np
import pytest
import torch

from mangacolor.training.loader import default_workers, step_batches, step_loader


def make(step: int) -> dict:
    # A pure function of the step, with a decode-like numpy part and a torch part.
    rng = np.random.default_rng([5, step])
    g = torch.Generator().manual_seed(step)
    return {"x": torch.from_numpy(rng.integers(0, 256, (2, 8, 8), dtype=np.uint8)), "y": torch.rand(3, generator=g), "step": step}


def test_batches_are_equal_with_0_and_2_workers_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    serial = list(step_batches(make, 3, 9, torch.device("cpu"), num_workers=0))
    parallel = list(step_batches(make, 3, 9, torch.device("cpu"), num_workers=2))
    assert torch.rand(1) == expected_next  # iterating drew nothing from the global RNG (checkpoints save it)
    assert [s for s, _ in parallel] == [s for s, _ in serial] == list(range(3, 9))
    for (_, a), (_, b) in zip(serial, parallel):
        assert a["step"] == b["step"] and torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])


def test_worker_count_and_prefetch_come_from_config_or_environment(monkeypatch):
    monkeypatch.setenv("MANGACOLOR_WORKERS", "3")
    assert default_workers() == 3
    loader = step_loader(make, 0, 10, torch.device("cpu"), prefetch_factor=4)
    assert loader.num_workers == 3 and loader.prefetch_factor == 4 and not loader.pin_memory
    assert step_loader(make, 0, 10, torch.device("cpu"), num_workers=0).num_workers == 0
    monkeypatch.delenv("MANGACOLOR_WORKERS")
    assert 0 <= default_workers() <= 8
    monkeypatch.setenv("MANGACOLOR_WORKERS", "many")
    with pytest.raises(ValueError, match="MANGACOLOR_WORKERS must be a whole number"):
        default_workers()


def test_an_error_in_a_worker_reaches_the_loop():
    def bad(step: int):
        if step == 2:
            raise ValueError("page 7 is not an image")
        return torch.zeros(1)

    with pytest.raises(ValueError, match="page 7 is not an image"):
        list(step_batches(bad, 0, 4, torch.device("cpu"), num_workers=1))
