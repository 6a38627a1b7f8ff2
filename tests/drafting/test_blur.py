"""The blur of the Coloring Latent Space's training pages: ink and text go, panel colours stay."""

import numpy as np
import pytest

from mangacolor.drafting.blur import BlurConfig, blur_page, detail_kept


def _page(h: int = 384, w: int = 256) -> np.ndarray:
    """White page, a red panel, a blue panel, thin black ink lines and a dot screentone."""
    page = np.full((h, w, 3), 255, np.uint8)
    page[20:200, 16:240] = (220, 40, 40)
    page[220:370, 16:240] = (40, 60, 210)
    for offset in range(3):
        page[offset::24, :] = 0  # 3 px ink lines across the page (2 px at 256)
    page[230:360:4, 30:120:4] = 0  # screentone dots
    return page


def test_page_becomes_a_square_colour_image_of_the_configured_size():
    out = blur_page(_page(), size=64, sigma=2.0)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    grey = blur_page(_page()[..., 0], size=32, sigma=1.0)
    assert grey.shape == (32, 32, 3) and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_flat_page_stays_flat_and_mean_colour_is_kept():
    flat = np.full((300, 200, 3), (10, 150, 250), np.uint8)
    assert (blur_page(flat, 256, 8.0) == np.array([10, 150, 250], np.uint8)).all()  # mirrored borders: no dark margin
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = blur_page(noisy, 256, 8.0)
    assert np.abs(out.astype(float).mean((0, 1)) - noisy.astype(float).mean((0, 1))).max() < 1.0
    assert out.std() < noisy.std() / 10


def test_default_blur_erases_ink_lines_but_keeps_each_panels_colour():
    cfg = BlurConfig()
    assert (cfg.size, cfg.sigma) == (256, 8.0)
    page = _page()
    out = blur_page(page, cfg.size, cfg.sigma).astype(int)
    sharp = blur_page(page, cfg.size, 0.0).astype(int)
    # An ink line in the white gutter is a deep dip before blurring and nearly gone after.
    gutter_rows = sharp[:, 250]  # right margin, white except the ink lines
    assert gutter_rows.min() < 60 and out[:, 250].min() > 170
    # Panel centres keep their dominant colour: red stays red, blue stays blue.
    red, blue = out[73, 128], out[196, 128]
    assert red[0] > 150 and red[0] - red[2] > 100
    assert blue[2] > 150 and blue[2] - blue[0] > 100


def test_detail_falls_as_sigma_grows():
    page = _page()
    kept = [detail_kept(page, blur_page(page, 256, s)) for s in (0.0, 1.0, 4.0, 8.0)]
    assert kept[0] == pytest.approx(1.0)
    assert kept[0] > kept[1] > kept[2] > kept[3] and kept[3] < 0.05


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        blur_page(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="HxW"):
        blur_page(np.zeros((8, 8, 2), np.uint8))
