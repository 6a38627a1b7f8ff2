"""Coloring drafts from a page: one, many (style mixing), from a reference image, or palette-locked.

Paper §III-A and §IV-C-3: the drafting network maps a black-and-white page into W+ of the Coloring
Latent Space and the frozen StyleGAN2 draws a blurred coloring from it. Replacing some W+ rows by
the mapping of a random z ("style mixing with a random CLS vector") samples other colorings of the
same page; replacing them by the W+ of a colour reference (from the inversion encoder) transfers
its palette; keeping one replacement vector for every page of a chapter locks its palette.

Which rows to replace: the fine ones, `fine_layers(n_latent)` = the upper half of W+ (rows 7-13 at
256 px: the 64-256 px convs and their ToRGBs). In StyleGAN the coarse rows (4-32 px) set layout
and shapes and the fine rows the colour scheme and micro-structure (Karras et al. 2019, §3.1 style
mixing; the paper's Fig. 11 shows page structure kept while colours follow the mixed image), and
the draft must keep the page's panels where the page has them. That split is learned: on an
untrained generator, fine-row mixing changes the palette but keeps only part of the structure
(tests/drafting/test_sampling.py measures it).

Pages are float tensors in [-1, 1], (C, H, W) or (B, C, H, W), 1 or 3 channels, any size (the
encoder resizes); drafts come back in the same batch form at the generator's resolution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from mangacolor.models.psp import PSp


def fine_layers(n_latent: int) -> range:
    """The W+ rows that carry colour: the upper half (64 px and up at 256 px)."""
    return range(n_latent // 2, n_latent)


def _batched(page: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if page.ndim == 3:
        return page[None], True
    if page.ndim == 4:
        return page, False
    raise ValueError(f"expected a page tensor (C, H, W) or a batch (B, C, H, W), got shape {tuple(page.shape)}")


def _device(psp: PSp) -> torch.device:
    return psp.latent_avg.device


@contextlib.contextmanager
def _inference(*psps: PSp):
    """Eval mode (BatchNorm running statistics) and no autograd, restoring the callers' modes."""
    modes = [p.training for p in psps]
    try:
        with torch.no_grad():
            yield [p.eval() for p in psps]
    finally:
        for p, mode in zip(psps, modes):
            p.train(mode)


def _rows(mix_layers: Iterable[int] | None, n_latent: int) -> list[int]:
    rows = list(fine_layers(n_latent) if mix_layers is None else mix_layers)
    bad = [r for r in rows if not 0 <= r < n_latent]
    if bad:
        raise ValueError(f"mix_layers {bad} outside W+ rows 0..{n_latent - 1}")
    return rows


def mix(w_plus: torch.Tensor, w_mix: torch.Tensor, mix_layers: Iterable[int] | None = None) -> torch.Tensor:
    """W+ with rows `mix_layers` replaced by `w_mix`: (style_dim), (B, style_dim) or a W+ (B, n, style_dim)."""
    rows = _rows(mix_layers, w_plus.shape[1])
    out = w_plus.clone()
    if w_mix.ndim == 3:
        out[:, rows] = w_mix[:, rows].to(out)
    else:
        out[:, rows] = w_mix.reshape(-1, 1, w_plus.shape[2]).to(out)
    return out


def draft(psp: PSp, bw_page: torch.Tensor) -> torch.Tensor:
    """The drafting network's own coloring draft of a page."""
    pages, single = _batched(bw_page)
    with _inference(psp):
        image, _ = psp(pages.to(_device(psp)))
    return image[0] if single else image


def sample_drafts(psp: PSp, bw_page: torch.Tensor, n: int, generator: torch.Generator | None = None,
                  mix_layers: Iterable[int] | None = None) -> torch.Tensor:
    """`n` drafts of one page (C, H, W): its W+ with the `mix_layers` rows (default: `fine_layers`)
    replaced by mapping(z) for n random z. Returns (n, 3, S, S)."""
    if bw_page.ndim != 3:
        raise ValueError(f"sample_drafts: expected one page (C, H, W), got shape {tuple(bw_page.shape)}")
    z = torch.randn(n, psp.decoder.style_dim, generator=generator).to(_device(psp))
    with _inference(psp):
        w_page = psp.encode(bw_page[None].to(_device(psp)))
        w = psp.decoder.get_latent(z)
        return psp.synthesize(mix(w_page.expand(n, -1, -1), w, mix_layers))


def reference_draft(drafting_psp: PSp, inversion_psp: PSp, bw_page: torch.Tensor, reference_color_image: torch.Tensor,
                    mix_layers: Iterable[int] | None = None) -> torch.Tensor:
    """A draft of the page with the palette of a colour reference: the reference's W+ (inversion
    encoder) supplies the `mix_layers` rows. Both encoders must share one generator."""
    if drafting_psp.n_latent != inversion_psp.n_latent:
        raise ValueError("reference_draft: drafting and inversion networks use generators with different W+ sizes "
                         f"({drafting_psp.n_latent} vs {inversion_psp.n_latent}); both must decode into the same CLS")
    pages, single = _batched(bw_page)
    refs, _ = _batched(reference_color_image)
    with _inference(drafting_psp, inversion_psp):
        w_page = drafting_psp.encode(pages.to(_device(drafting_psp)))
        w_ref = inversion_psp.encode(refs.to(_device(inversion_psp))).to(w_page)
        if w_ref.shape[0] == 1:
            w_ref = w_ref.expand(w_page.shape[0], -1, -1)
        image = drafting_psp.synthesize(mix(w_page, w_ref, mix_layers))
    return image[0] if single else image


@dataclass
class PaletteLock:
    """One mixing vector for many pages: the same colour scheme across a chapter (paper §III-A).

    `w` is a point of W (style_dim,) or a W+ (n_latent, style_dim) whose `mix_layers` rows are used.
    Build it from a seed (`from_seed`) or from a reference image's W+ (`from_reference`).
    """

    w: torch.Tensor
    mix_layers: tuple[int, ...]

    @classmethod
    def from_seed(cls, psp: PSp, seed: int, mix_layers: Iterable[int] | None = None) -> PaletteLock:
        z = torch.randn(1, psp.decoder.style_dim, generator=torch.Generator().manual_seed(seed))
        with _inference(psp):
            w = psp.decoder.get_latent(z.to(_device(psp)))[0]
        return cls(w.cpu(), tuple(_rows(mix_layers, psp.n_latent)))

    @classmethod
    def from_reference(cls, inversion_psp: PSp, reference_color_image: torch.Tensor,
                       mix_layers: Iterable[int] | None = None) -> PaletteLock:
        refs, _ = _batched(reference_color_image)
        with _inference(inversion_psp):
            w_plus = inversion_psp.encode(refs[:1].to(_device(inversion_psp)))[0]
        return cls(w_plus.cpu(), tuple(_rows(mix_layers, inversion_psp.n_latent)))

    def apply(self, w_plus: torch.Tensor) -> torch.Tensor:
        w = self.w if self.w.ndim == 1 else self.w[None]
        return mix(w_plus, w.to(w_plus), self.mix_layers)


def locked_drafts(psp: PSp, pages: Sequence[torch.Tensor] | torch.Tensor, lock: PaletteLock,
                  batch_size: int = 8) -> list[torch.Tensor]:
    """Drafts of every page with the palette fixed by `lock`. Pages may differ in size."""
    out: list[torch.Tensor] = []
    pages = list(pages)
    with _inference(psp):
        for i in range(0, len(pages), batch_size):
            chunk = torch.cat([psp.prepare(_batched(p)[0].to(_device(psp))) for p in pages[i : i + batch_size]])
            out.extend(psp.synthesize(lock.apply(psp.encode(chunk))).unbind(0))
    return out
