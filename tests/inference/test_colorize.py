"""Page colorization: exact and fast modes keep the page size; chroma transfer recovers a known page."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mangacolor.inference.colorize import (
    PRESETS,
    InferenceOptions,
    colorize_page,
    colorize_pages,
    hint_from_rgba,
    prepare_generator,
    resize_hint,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, colorize


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    g = ColorizationGenerator(ColorizerConfig.tiny())
    g.train()
    with torch.no_grad():  # give batch norm non-trivial running statistics to fold
        for _ in range(3):
            g(torch.rand(2, 1, 32, 32) * 2 - 1, torch.zeros(2, 4, 32, 32), torch.zeros(2, 3, 32, 32))
    return g.eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("hw", [(97, 131), (131, 97), (600, 250)])
def test_colorize_page_keeps_the_page_size(generator, preset, hw):
    opts = PRESETS[preset]
    model = prepare_generator(generator, opts)
    page = np.random.default_rng(0).integers(0, 256, hw, dtype=np.uint8)
    hint = np.zeros((*hw, 4), np.uint8)
    hint[10:14, 20:24] = (255, 0, 0, 255)
    out = colorize_page(model, page, hint=hint, draft=np.full((256, 256, 3), 128, np.uint8), options=opts)
    assert out.shape == (*hw, 3) and out.dtype == np.uint8


def test_prepared_model_computes_the_same_function(generator):
    x = torch.rand(1, 1, 50, 70) * 2 - 1
    ref = colorize(generator, x)
    folded = colorize_pages(prepare_generator(generator, InferenceOptions()), x)
    assert (folded - ref).abs().max() < 1e-4
    # prepare_generator leaves the original untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())


class KnownPage(nn.Module):
    """A stand-in generator that 'colorizes' perfectly: returns the known page at the asked size."""

    def __init__(self, page: torch.Tensor):
        super().__init__()
        self.register_buffer("page", page)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, bw, hint, draft):
        return F.interpolate(self.page, size=bw.shape[-2:], mode="area") * self.scale


def test_working_size_chroma_transfer_recovers_ink_detail():
    """Colour page = smooth chroma + an ink pattern in luminance; its grey version is the input.
    Run at half size, transfer chroma: the result must match the full page far better than plain
    upsampling of the half-size output (which blurs the ink)."""
    h, w = 192, 128
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ink = ((torch.sin(xx * 90) > 0.7) | (torch.sin(yy * 70) > 0.8)).float()
    y = 0.75 - 0.55 * ink
    cb, cr = 0.12 * torch.cos(3 * xx), 0.1 * torch.sin(2 * yy + 1)
    page01 = ycbcr_to_rgb(torch.stack([y, cb, cr])[None]).clamp(0, 1)
    page = page01 * 2 - 1
    bw = rgb_to_ycbcr(page01)[:, :1] * 2 - 1  # the grey page is exactly the colour page's luminance

    opts = InferenceOptions(working_long_side=96, channels_last=False, fold_batchnorm=False)
    model = KnownPage(page).eval()
    out = colorize_pages(model, bw, options=opts)
    naive = F.interpolate(colorize(model, F.interpolate(bw, size=(96, 64), mode="area")), size=(h, w), mode="bilinear")

    def psnr(a):
        return 10 * torch.log10(4 / (a - page).pow(2).mean()).item()

    assert out.shape == page.shape
    assert psnr(out) > 35, psnr(out)
    assert psnr(out) > psnr(naive) + 10, (psnr(out), psnr(naive))


def test_hints_survive_downscaling():
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[5, 7] = (255, 0, 0, 255)  # one pixel: would vanish under plain area or nearest resizing
    rgba[40:44, 28:32] = (0, 0, 255, 200)  # exactly one 4×4 cell of the 1/4 grid
    hint = hint_from_rgba(rgba)
    assert hint.shape == (1, 4, 64, 48) and hint[0, 3].sum() == 17
    small = resize_hint(hint, (16, 12))
    assert small[0, 3, 1, 1] == 1 and torch.allclose(small[0, :3, 1, 1], torch.tensor([1.0, -1.0, -1.0]))
    assert small[0, 3, 10, 7] == 1 and torch.allclose(small[0, :3, 10, 7], torch.tensor([-1.0, -1.0, 1.0]))
    assert small[0, 3].sum() == 2
    with pytest.raises(ValueError, match="RGBA"):
        hint_from_rgba(rgba[..., :3])


@pytest.mark.parametrize("hw, seen", [((300, 200), (96, 64)), ((300, 400), (96, 128)), ((60, 40), (96, 64))])
def test_pages_are_colorized_on_the_training_canvas(generator, hw, seen):
    """A page reaches the generator at the scale training showed it (page height -> canvas height,
    spreads twice as wide), and comes back at its own size."""
    sizes = []
    hook = generator.register_forward_pre_hook(lambda _m, args: sizes.append(tuple(args[0].shape[-2:])))
    try:
        page = np.random.default_rng(1).integers(0, 256, hw, dtype=np.uint8)
        out = colorize_page(generator, page, options=InferenceOptions(canvas=(96, 64), channels_last=False, fold_batchnorm=False))
    finally:
        hook.remove()
    assert out.shape == (*hw, 3)
    padded = tuple(-(-s // 32) * 32 for s in seen)  # colorize pads to the generator's multiple
    assert sizes == [padded]


class Recording(KnownPage):
    """KnownPage that also records the sizes the generator was run at."""

    def __init__(self, page):
        super().__init__(page)
        self.sizes = []

    def forward(self, bw, hint, draft):
        self.sizes.append(tuple(bw.shape[-2:]))
        return super().forward(bw, hint, draft)


def test_large_pages_are_coloured_at_the_working_size_with_the_original_ink():
    """A page above `max_long_side` never reaches the generator at full size, comes back at full size,
    with its fine ink (the strip-wise chroma transfer equals the whole-page one)."""
    h, w = 640, 384  # the working size 160×96 needs no padding, so KnownPage's output lines up
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ink = ((torch.sin(xx * 300) > 0.7) | (torch.sin(yy * 250) > 0.8)).float()  # 1-2 px lines
    page01 = ycbcr_to_rgb(torch.stack([0.8 - 0.6 * ink, 0.12 * torch.cos(3 * xx), 0.1 * torch.sin(2 * yy + 1)])[None]).clamp(0, 1)
    grey = (rgb_to_ycbcr(page01)[0, 0].numpy() * 255).round().astype(np.uint8)
    truth = (page01[0].permute(1, 2, 0).numpy() * 255).round()
    model = Recording(page01 * 2 - 1).eval()
    out = colorize_page(model, grey, options=InferenceOptions(max_long_side=160, channels_last=False, fold_batchnorm=False))
    assert out.shape == (h, w, 3)
    assert model.sizes == [(160, 96)]
    psnr = 10 * np.log10(255**2 / ((out - truth) ** 2).mean())
    assert psnr > 30, psnr

    from mangacolor.inference.colorize import transfer_chroma, transfer_chroma_strips

    rng = np.random.default_rng(0)
    small_rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    full = rng.integers(0, 256, (97, 61), dtype=np.uint8)
    strips = transfer_chroma_strips(small_rgb, small, full, rows=16)
    t = lambda a: torch.from_numpy(a).float().div(127.5).sub(1)
    whole = transfer_chroma(t(small_rgb).permute(2, 0, 1)[None], t(small)[None, None], t(full)[None, None])
    whole = ((whole[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(strips.astype(float) - whole).max() <= 1
