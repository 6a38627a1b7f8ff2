"""The trained model as users get it, loaded: a bundle folder (mangacolor/io/bundle.py: the colorizer, and
optionally the StyleGAN, drafting and inversion networks) as networks ready to colour pages.

Without the drafting networks the bundle still colorizes, with an empty draft (the paper's
"empty draft" row). The same folder is what `colorizer_final` registers in MLflow, so
`models:/mangacolor-colorizer@champion` and a local path load the same way. The registry
(`mangacolor.inference.registry`, which imports this module and never the other way round) decides
names, versions and aliases.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mangacolor.io.bundle import BUNDLE_JSON, resolve_bundle_path
from mangacolor.io.images import from_tensor, to_tensor

# bundle.json keys that set inference options (a bundle imported from the 2021 release sets both).
OPTION_KEYS = ("fit_width", "pad_mode")


@dataclass
class ModelBundle:
    """Loaded networks plus the ways to get a draft: automatic, sampled, from a reference, locked."""

    generator: torch.nn.Module
    info: dict
    drafting: torch.nn.Module | None = None
    inversion: torch.nn.Module | None = None
    denoiser: torch.nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _prepared: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, location: str | Path, device: str | torch.device = "cpu") -> "ModelBundle":
        from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig
        from mangacolor.models.psp import load_psp
        from mangacolor.io.weights import load_weights

        path = resolve_bundle_path(location)
        info = json.loads((path / BUNDLE_JSON).read_text())
        files = info["files"]
        state, meta = load_weights(path / files["colorizer"])
        config = ColorizerConfig.from_dict(meta.get("config") or info.get("colorizer_config") or {})
        generator = ColorizationGenerator(config)  # every weight comes from the bundle: no encoder file to look for
        generator.load_state_dict(state)
        drafting = inversion = None
        if "stylegan" in files and "drafting" in files:
            drafting = load_psp(path / files["drafting"], path / files["stylegan"])
        if "stylegan" in files and "inversion" in files:
            inversion = load_psp(path / files["inversion"], path / files["stylegan"])
        denoiser = None
        if "denoiser" in files:
            from mangacolor.models.ffdnet import FFDNet

            d_state, d_meta = load_weights(path / files["denoiser"])
            denoiser = FFDNet(int((d_meta.get("config") or {}).get("channels", 3)))
            denoiser.load_state_dict(d_state)
        device = torch.device(device)
        nets = [n.to(device).eval() for n in (generator, drafting, inversion, denoiser) if n is not None]
        for n in nets:
            n.requires_grad_(False)
        return cls(generator, info, drafting, inversion, denoiser, device)

    # --- drafts (§III-A): a 256x256 colour image in [-1, 1] ------------------------------------
    def _bw_tensor(self, page: np.ndarray) -> torch.Tensor:
        return to_tensor(page)[None].to(self.device)

    def drafts(self, page: np.ndarray, n: int = 1, seed: int | None = None, reference: np.ndarray | None = None,
               lock=None) -> list[torch.Tensor | None]:
        """`n` drafts of a grey page, each (1, 3, S, S) in [-1, 1]: the drafting network's own (seed None,
        n 1), sampled by style mixing with random CLS vectors (seed), coloured after a reference image,
        or with a palette locked across pages (`lock`, a `sampling.PaletteLock`). None without drafting."""
        if self.drafting is None:
            return [None] * n
        from mangacolor.drafting import sampling

        x = self._bw_tensor(page)
        with torch.inference_mode():
            if reference is not None:
                if self.inversion is None:
                    raise ValueError("this bundle has no inversion encoder: a reference image needs one")
                ref = to_tensor(reference)[None].to(self.device)
                return [sampling.reference_draft(self.drafting, self.inversion, x, ref)] * n
            if lock is not None:
                return [sampling.locked_drafts(self.drafting, [x[0]], lock)[0][None]] * n
            if seed is None and n == 1:
                return [sampling.draft(self.drafting, x)]
            gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
            out = sampling.sample_drafts(self.drafting, x[0], n, generator=gen)
            return [out[i : i + 1] for i in range(out.shape[0])]

    def inference_options(self, options=None):
        """`options` (default: exact) with the canvas the colorizer was trained on, from bundle.json."""
        from mangacolor.inference.colorize import InferenceOptions

        options = options or InferenceOptions()
        canvas = self.info.get("canvas")
        if options.canvas is None and canvas:
            options = dataclasses.replace(options, canvas=(int(canvas[0]), int(canvas[1])))
        defaults = InferenceOptions()
        chosen = {k: self.info[k] for k in OPTION_KEYS if self.info.get(k) is not None and getattr(options, k) == getattr(defaults, k)}
        return dataclasses.replace(options, **chosen) if chosen else options

    def denoise(self, page: np.ndarray) -> np.ndarray:
        """The page through the bundle's denoiser at its `denoise_sigma` (the 2021 release's pre-step); as is without one."""
        sigma = float(self.info.get("denoise_sigma", 25))
        if self.denoiser is None or sigma <= 0:
            return page
        from mangacolor.models.ffdnet import denoise_page

        return denoise_page(self.denoiser, page, sigma)

    def colorize(self, page: np.ndarray, hint: np.ndarray | None = None, draft: torch.Tensor | None = None,
                 options=None) -> np.ndarray:
        """One page (uint8 grey or RGB) -> uint8 RGB at the page's resolution, run on the training canvas."""
        from mangacolor.inference.colorize import colorize_page, grey_page, prepare_generator

        options = self.inference_options(options)
        key = repr(options)
        if key not in self._prepared:
            # BN folding / channels-last make a modified copy: prepare once per options.
            self._prepared[key] = prepare_generator(self.generator, options, self.device)  # a copy
        draft_img = from_tensor(draft[0].float().cpu()) if draft is not None else None
        if self.denoiser is not None:
            page = self.denoise(grey_page(page))
        return colorize_page(self._prepared[key], page, hint=hint, draft=draft_img, options=options)


def draft_to_uint8(draft: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    if size is not None:
        draft = F.interpolate(draft.float(), size=size, mode="bilinear", align_corners=False)
    return from_tensor(draft[0].cpu())
