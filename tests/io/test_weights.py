"""Weights files (mangacolor/io/weights.py) and the atomic writer under them (mangacolor/io/files.py)."""

import os

import pytest
import torch

from mangacolor.io.files import write_atomic
from mangacolor.io.weights import count_parameters, load_weights, save_weights


def test_weights_round_trip_with_metadata(tmp_path):
    m = torch.nn.Linear(4, 8)
    save_weights(tmp_path / "w.safetensors", m, {"config": {"width": 8}, "random_init": True})
    state, meta = load_weights(tmp_path / "w.safetensors")
    assert meta == {"config": {"width": 8}, "random_init": True}
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_count_parameters_counts_parameters_not_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    assert count_parameters(net) == 4 * 8 + 8 + 8 + 8


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "page.png"
    write_atomic(target, b"old")
    write_atomic(target, b"new", durable=True)
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the usual permissions, not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["page.png"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
