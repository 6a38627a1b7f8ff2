"""The Python API: what `mangacolor colorize` does, for one page at a time, from Python.

    from mangacolor.inference import Colorizer

    colorizer = Colorizer.from_registry()   # the registry's champion, else its candidate; or a models:/ URI, or .from_bundle("bundle/")
    rgb = colorizer.colorize("page.png")                                              # (H, W, 3) uint8
    rgb = colorizer.colorize(page_array, hints=[{"x": 120, "y": 80, "rgb": [230, 40, 40], "radius": 12}])
    rgb = colorizer.colorize("page.png", hints="hints.png", reference="colours.png")
    four = colorizer.colorize("page.png", samples=4, seed=1)                          # list of 4 arrays

Inputs that cannot be used raise `InputError` (a ValueError) whose one-line message names the input
and what was expected; the CLI turns it into exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mangacolor.inference.bundle import ModelBundle
from mangacolor.inference.colorize import PRESETS, InferenceOptions
from mangacolor.inference.hints import HintError, load_hints
from mangacolor.inference.pages import InputError, read_page


class Colorizer:
    """A loaded model bundle with the CLI's defaults: exact inference up to `MAX_LONG_SIDE`, larger
    pages coloured at that size with their chroma moved onto the original ink."""

    def __init__(self, bundle: ModelBundle, mode: str = "exact", options: InferenceOptions | None = None):
        if options is None and mode not in PRESETS:
            raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(PRESETS)}")
        self.bundle = bundle
        self.options = options or PRESETS[mode]

    @classmethod
    def from_registry(cls, uri: str | None = None, device: str = "cpu", mode: str = "exact") -> "Colorizer":
        """A registered version (`models:/name@alias`, `models:/name/3`, `runs:/...`) from MLflow
        (`MLFLOW_TRACKING_URI`); None: the registry's champion, else its candidate (`registry.default_model`)."""
        return cls.load(uri, device, mode)

    @classmethod
    def load(cls, model: str | Path | None = None, device: str = "cpu", mode: str = "exact") -> "Colorizer":
        """A bundle folder or a model URI, as the CLI's `--model` takes them; None: the registry's champion, else
        its candidate (`mangacolor.inference.registry.default_model`: MLflow is imported only then)."""
        if model is None:
            from mangacolor.inference.registry import default_model

            model = default_model()
        return cls(ModelBundle.load(model, device=device), mode)

    @property
    def takes_reference(self) -> bool:
        """Whether the model can take its colours from a reference image (it has an inversion encoder)."""
        return self.bundle.inversion is not None

    @classmethod
    def from_bundle(cls, path: str | Path, device: str = "cpu", mode: str = "exact") -> "Colorizer":
        """A bundle folder as written by the `colorizer_final` asset."""
        return cls(ModelBundle.load(path, device=device), mode)

    def colorize(self, page, hints=None, reference=None, samples: int = 1, seed: int | None = None,
                 lock=None) -> np.ndarray | list[np.ndarray]:
        """Colour one page.

        page: uint8 grey or RGB array, or an image path. hints: an RGBA/RGB array or image path, a
        .json path or a list of point dicts (mangacolor.inference.hints). reference: a colour image
        (array or path) whose colours the page takes. samples > 1: that many sampled colourings
        (draft seeds from `seed`, default 0). lock: a `sampling.PaletteLock` shared across pages.
        Returns an (H, W, 3) uint8 array, or a list of `samples` of them when samples > 1.
        """
        if samples < 1:
            raise InputError(f"samples must be >= 1, got {samples}")
        grey = read_page(page)
        ref = read_page(reference, "reference", mode="RGB") if reference is not None else None
        try:
            hint = load_hints(hints, grey.shape[:2])
        except HintError as exc:
            raise InputError(str(exc)) from None
        sample_seed = seed if (seed is not None or samples > 1) else None
        try:
            drafts = self.bundle.drafts(grey, n=samples, seed=sample_seed, reference=ref, lock=lock)
        except ValueError as exc:  # e.g. a reference image for a bundle without an inversion encoder
            raise InputError(str(exc)) from None
        outs = [self.bundle.colorize(grey, hint=hint, draft=d, options=self.options) for d in drafts]
        return outs[0] if samples == 1 else outs


__all__ = ["Colorizer", "InputError", "read_page"]
