"""The page mapper (mangacolor/io/pagemap.py): rows and units come back in order, whatever the workers and batches."""

import pytest

from mangacolor.io.images import ImageError
from mangacolor.io.pagemap import map_pages, size_batches


def test_map_pages_keeps_row_order_across_groups_workers_and_unreadable_rows():
    rows = [{"id": i, "size": i % 3} for i in range(11)]

    def load(row):
        if row["id"] == 4:
            raise ImageError("not a page")
        return row["id"], row["size"]

    batches = []

    def run(values):
        assert len({size for _, size in values}) == 1  # one group per batch
        batches.append(len(values))
        return [i * 10 for i, _ in values]

    for workers, batch_size, waiting in ((0, 1, None), (2, 3, None), (2, 3, 4)):
        batches.clear()
        out = list(map_pages(rows, load, run, batch_size, workers, group=lambda v: v[1], waiting=waiting))
        assert [m.index for m in out] == list(range(11))
        assert [m.result for m in out] == [None if i == 4 else i * 10 for i in range(11)]
        assert out[4].reason == "not a page" and out[4].value is None
        assert max(batches) <= batch_size and sum(batches) == 10
    with pytest.raises(ValueError, match="batch_size"):
        list(map_pages(rows, load, run, 0, 0))


def test_size_batches_group_by_size_and_cut_at_batch_size():
    keys = ["a", "b", "a", "a", "b", "c", "a"]
    assert size_batches(keys, 2) == [[0, 2], [3, 6], [1, 4], [5]]
    with pytest.raises(ValueError, match="batch_size"):
        size_batches(keys, 0)


def _opencv_threads(_item) -> int:
    import cv2

    return cv2.getNumThreads()


def test_workers_run_opencv_on_one_thread_and_the_parent_keeps_its_own():
    """Each worker is one of many processes on the cores: OpenCV's pool the size of the machine in each only makes them
    wait on each other. Set in the parent around the fork (a child reconfiguring its parent's pool can hang)."""
    import cv2
    import torch

    from mangacolor.io.pagemap import ordered_map
    from mangacolor.training.loader import step_batches

    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    try:
        assert list(ordered_map(_opencv_threads, list(range(4)), workers=2)) == [1, 1, 1, 1]
        steps = [int(batch) for _, batch in step_batches(lambda s: torch.tensor(_opencv_threads(s)), 0, 4, torch.device("cpu"), 2)]
        assert steps == [1, 1, 1, 1]
        assert cv2.getNumThreads() == 4
    finally:
        cv2.setNumThreads(before)
