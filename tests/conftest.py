"""Shared fixtures: a small demo corpus generated once per session, and a project-like tmp layout."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: one thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from mangacolor.data.demo_corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo_data")
    generate_demo_corpus(root, seed=0)
    return root
