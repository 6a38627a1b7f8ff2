"""The loops' common tail (mangacolor/training/loop.py): log, sample, checkpoint at their intervals and at the last step."""

from mangacolor.tracking import NullTracker
from mangacolor.training import distributed
from mangacolor.training.loop import LoopTail


def _run(rank: int) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    # rank 1 of 2 without a process group: `mean` is never called here, only is_main matters
    tail = LoopTail(total=7, dist=distributed.DistContext(rank=rank, world_size=2), tracker=NullTracker(), log_every=2,
                    checkpoint_every=3, sample_every=5, say=lambda msg: events.append(("say", int(msg))))
    for done in range(1, 8):
        logged = tail(done, lambda: events.append(("log", done)) or {"loss": 1.0}, lambda m: str(done),
                      lambda: events.append(("sample", done)), lambda: events.append(("checkpoint", done)))
        assert (logged == {"loss": 1.0}) == (done % 2 == 0 or done == 7)
    return events


def test_the_tail_logs_samples_and_checkpoints_in_that_order_at_intervals_and_at_the_end():
    assert _run(0) == [("log", 2), ("say", 2), ("checkpoint", 3), ("log", 4), ("say", 4), ("sample", 5),
                       ("log", 6), ("say", 6), ("checkpoint", 6), ("log", 7), ("say", 7), ("sample", 7), ("checkpoint", 7)]


def test_only_rank_0_samples_and_checkpoints_every_rank_logs():
    assert _run(1) == [("log", 2), ("say", 2), ("log", 4), ("say", 4), ("log", 6), ("say", 6), ("log", 7), ("say", 7)]


def test_non_finite_losses_are_caught_at_the_check_not_by_reading_every_step():
    """The loops hand their losses over as tensors and check them at logging and checkpoint steps (a host sync there
    only): a nan at step 3 stops the run at the check of step 4, before its checkpoint."""
    import pytest
    import torch

    from mangacolor.training.loop import FiniteLosses

    watch = FiniteLosses("refiner")
    for loss in (1.0, 2.0):
        watch.add(torch.tensor(loss))
    watch.check(2)
    watch.add(torch.tensor(float("nan")))
    watch.add(torch.tensor(0.5))
    with pytest.raises(FloatingPointError, match="refiner loss became inf or nan between steps 3 and 4"):
        watch.check(4)
