"""Shared fixtures: a small demo corpus generated once per session, and a project-like tmp layout."""

from __future__ import annotations

import pytest
import torch

# Tests use tiny tensors: one thread avoids OpenMP spin-up costs and oversubscription on 2-core CI.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from mangacolor.demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo_data")
    generate_demo_corpus(root, seed=0)
    return root
