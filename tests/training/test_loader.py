"""Training batches through DataLoader workers: the same batches in the same order whatever the workers."""

import numpy as np
import pytest
import torch

from mangacolor.training.loader import step_batches, step_loader
from mangacolor.io.pagemap import default_workers


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


# ---------------------------------------------------------------------------------------------
# The colorizer's step batches: compact in the worker, expanded on the device
# ---------------------------------------------------------------------------------------------


def colorizer_data(step_two: bool = False, paper_hints: bool = False, size: tuple[int, int] = (40, 30)):
    """StepData over tiny random pages: 3:2 crops of 60% of the page, drafts on 2 pages of 3."""
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, StepData
    from mangacolor.training.cues import CueConfig, HintConfig

    rng = np.random.default_rng(0)
    page = lambda *c: rng.integers(0, 256, (*size, *c), dtype=np.uint8)  # noqa: E731
    drafts = [page(3)[:16, :16] if i % 3 else None for i in range(6)]  # some pages without a draft
    pairs = PairDataset([page() for _ in range(6)], [page(3) for _ in range(6)], drafts)
    real = BwDataset([page() for _ in range(6)], [page(3)[:16, :16] for _ in range(6)])
    # Unless the paper's hints are asked for: many hint points and often dense, to exercise the hints.
    hints = HintConfig() if paper_hints else HintConfig(sigma=0.3, p_dense=0.3)
    crop = (size[0] * 3 // 5, size[0] * 2 // 5)
    cfg = ColorizerTrainConfig(crop=crop, cues=CueConfig(hint=hints))
    return StepData(cfg, pairs, None if step_two else real, batch_size=4, steps_per_epoch=1, canvas=size,
                    real_colour=pairs if step_two else None)


def float_batch(make, it: int) -> tuple:
    """The batch as StepData built it before batches were compact: float pages and full-size cues, made in the worker."""
    from mangacolor.io.images import to_tensor
    from mangacolor.training.colorizer import cue_epoch
    from mangacolor.training.cues import Cues, sample_cues

    def pages(dataset, salt):
        samples = make.samples(dataset, it, salt)
        batch = {"bw": torch.stack([to_tensor(s["bw"]) for s in samples])}
        if all("color" in s for s in samples):
            batch["color"] = torch.stack([to_tensor(s["color"]) for s in samples])
        if any("draft" in s for s in samples):
            h, w = next(s["draft"].shape[:2] for s in samples if "draft" in s)
            batch["draft"] = torch.stack([to_tensor(s["draft"]) if "draft" in s else torch.zeros(3, h, w) for s in samples])
            batch["has_draft"] = torch.tensor(["draft" in s for s in samples])
        return batch

    def cues(batch, salt, hints=True):
        epoch = cue_epoch(0, it, make.steps_per_epoch)
        one = [sample_cues({k: v[j:j + 1] for k, v in batch.items()}, epoch, make.cue_rng(it, salt, j), make.cfg.cues, hints)
               for j in range(make.batch_size)]
        return Cues(*(torch.cat([getattr(c, f) for c in one]) for f in ("hint", "draft", "has_hint", "has_draft")))

    pairs = pages(make.supervised, 0)
    real = pages(make.unpaired_real, 1) if make.unpaired_real is not None else None
    y_real = pages(make.real_colour, 2)["color"] if make.real_colour is not None else None
    return pairs, cues(pairs, 0), real, cues(real, 1, hints=False) if real is not None else None, y_real


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif a is None:
        assert b is None
    else:  # Cues
        for f in ("hint", "draft", "has_hint", "has_draft"):
            assert_same(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("step_two", [False, True])
def test_a_compact_step_batch_expands_to_exactly_the_float_batch(step_two):
    from mangacolor.training.colorizer import expand_batch

    make = colorizer_data(step_two)
    hinted = drafted = dense = 0
    for it in range(5, 9):  # epochs >= 4: hints and drafts both in play
        compact, reference = make(it), float_batch(make, it)
        assert compact.pairs["bw"].dtype == torch.uint8 and compact.pairs["color"].dtype == torch.uint8
        expanded = expand_batch(compact, torch.device("cpu"))
        for got, want in zip(expanded, reference):
            assert_same(got, want)
        cues = reference[1]
        hinted += int(cues.has_hint.sum())
        drafted += int(cues.has_draft.sum())
        dense += int((cues.hint[:, 3].flatten(1).mean(1) == 1).sum())
    assert hinted and drafted and dense  # the comparison covered sparse hints, dense hints and drafts


def test_a_step_batch_pickles_to_under_an_eighth_of_the_float_batch():
    """What a loader worker sends the training process is the pickled batch (IPC): uint8 pages and the hint
    points alone, not float pages, 4-channel hints and page-size drafts (paper cue settings, 120x80 crops)."""
    import pickle

    make = colorizer_data(paper_hints=True, size=(200, 150))
    for it in range(5, 8):
        shipped, before = len(pickle.dumps(make(it))), len(pickle.dumps(float_batch(make, it)))
        assert shipped * 8 < before, (shipped, before)


def test_step_batches_from_two_workers_are_the_ones_built_in_the_main_process():
    from mangacolor.training.colorizer import expand_batch

    make = colorizer_data()
    for it, batch in step_batches(make, 5, 8, torch.device("cpu"), num_workers=2):
        for got, want in zip(expand_batch(batch, torch.device("cpu")), expand_batch(make(it), torch.device("cpu"))):
            assert_same(got, want)
