"""Shared fixtures: a small demo corpus generated once per session, and a project-like tmp layout."""

from __future__ import annotations

import socket

import pytest
import torch

# Tests use tiny tensors: one thread avoids OpenMP spin-up costs and oversubscription on 2-core CI.
torch.set_num_threads(1)

# The files that take a minute or more (`uv run pytest` prints the slowest tests) go first, so the
# pytest-xdist workers, which take whole files in order, do not end with one of them while the other
# worker idles. Order within a file is kept; every worker computes the same order. (xdist would sort the
# files by their number of tests instead: pyproject's addopts turn that off with --no-loadscope-reorder.)
# The Dagster UI test leads: it is the longest, and mostly waits on its servers' runs, so the other
# worker's files fill its time.
SLOW_FILES = ["test_dagster_ui.py", "assets/test_torchrun_launch.py", "training/test_distributed_loops.py",
              "test_serve.py", "inference/test_colorize_cli.py", "assets/test_colorization_assets.py",
              "assets/test_evaluation_assets.py", "assets/test_drafting_assets.py"]


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
        return SLOW_FILES.index(path) if path in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: files and tests keep their order otherwise


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from mangacolor.demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo_data")
    generate_demo_corpus(root, seed=0)
    return root


@pytest.fixture()
def offline_empty_hub(tmp_path, monkeypatch):
    """No user VGG file and no network: what a fresh CI machine sees."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    connect = socket.socket.connect

    def refuse_network(sock, *args, **kwargs):
        # Local (AF_UNIX) sockets stay: the loader's worker processes pass tensors through them.
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return connect(sock, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", refuse_network)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return hub


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests, even when another test changed it: a second
    OpenMP thread only contends on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
