"""The refiner UNet: shapes, padding for any page size, and that it can learn (overfits one batch)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mangacolor.models.refiner import TINY, Refiner, RefinerConfig, SEResNeXtBottleneck, multiple, refine


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_output_matches_input_and_stays_in_tanh_range():
    cfg = RefinerConfig(widths=(4, 8, 16), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1), cardinality=2, se_reduction=2)
    model = Refiner(cfg)
    x = torch.randn(2, 1, 32, 24)
    y = model(x)
    assert y.shape == x.shape and y.abs().max() < 1
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 24))


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (37, 23), (16, 16)])
def test_refine_pads_and_crops_back_any_page(hw):
    model = Refiner(TINY)
    page = np.random.default_rng(0).integers(0, 256, hw, dtype=np.uint8)
    out = refine(model, page)
    assert out.shape == hw and out.dtype == np.uint8
    assert model.training  # refine restores the mode it found


def test_padding_does_not_change_the_valid_region_much_for_a_fully_convolutional_net():
    # A page already at a multiple and the same page inside a larger padded call agree on most pixels
    # (only the global SE gates differ), which is what makes whole-page inference sensible.
    torch.manual_seed(0)
    model = Refiner(TINY)
    page = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    full = refine(model, page).astype(int)
    crop = refine(model, page[:31, :31]).astype(int)
    assert np.abs(full[:24, :24] - crop[:24, :24]).mean() < 8


def test_bottleneck_is_residual_and_keeps_shape():
    block = SEResNeXtBottleneck(16, cardinality=4, se_reduction=4)
    x = torch.randn(1, 16, 8, 8)
    assert block(x).shape == x.shape
    assert block.grouped.groups == 4


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = Refiner(TINY)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 1, 32, 32, generator=g) > 0.8).float() * -2 + 1  # sparse ink on paper, like xDoG
    y = F.avg_pool2d(x, 5, 1, 2).clamp(-1, 1) * 0.8  # denser, greyer, like a real page
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = F.l1_loss(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first, (first, loss.item())


def test_config_checks_block_counts():
    with pytest.raises(ValueError, match="decoder_blocks"):
        RefinerConfig(widths=(8, 16), encoder_blocks=(1, 1), decoder_blocks=(1, 1))
    assert multiple(RefinerConfig()) == 8
