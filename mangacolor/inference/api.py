"""The Python API: what `mangacolor colorize` does, for one page at a time, from Python.

    from mangacolor.inference import Colorizer

    colorizer = Colorizer.from_registry("models:/mangacolor-colorizer@champion")   # or .from_bundle("bundle/")
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
from mangacolor.inference.pages import InputError
from mangacolor.io.images import ImageError, read_image

DEFAULT_MODEL = "models:/mangacolor-colorizer@champion"


def read_page(page, what: str = "page", mode: str = "L") -> np.ndarray:
    """A path or an array -> uint8 array (grey for mode "L", RGB for "RGB"); InputError otherwise."""
    if isinstance(page, (str, Path)):
        path = Path(page)
        if not path.is_file():
            raise InputError(f"{path}: no such {what} file (expected an image file: PNG, JPEG, WebP, ...)")
        try:
            return read_image(path, mode=mode)
        except ImageError as exc:
            raise InputError(f"{path}: not a usable {what} image ({exc.reason})") from None
    if not isinstance(page, np.ndarray) or page.ndim not in (2, 3) or (page.ndim == 3 and page.shape[2] not in (1, 3, 4)):
        raise InputError(f"{what}: expected a path or a uint8 array (H, W) or (H, W, 3); got "
                         f"{getattr(page, 'shape', type(page).__name__)}")
    arr = np.asarray(page)
    if arr.dtype != np.uint8:
        raise InputError(f"{what}: expected a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if mode == "L" and arr.ndim == 3:
        return (arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    if mode == "RGB" and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3]) if mode == "RGB" else arr


class Colorizer:
    """A loaded model bundle with the CLI's defaults: exact inference up to `MAX_LONG_SIDE`, larger
    pages coloured at that size with their chroma moved onto the original ink."""

    def __init__(self, bundle: ModelBundle, mode: str = "exact", options: InferenceOptions | None = None):
        if options is None and mode not in PRESETS:
            raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(PRESETS)}")
        self.bundle = bundle
        self.options = options or PRESETS[mode]

    @classmethod
    def from_registry(cls, uri: str = DEFAULT_MODEL, device: str = "cpu", mode: str = "exact") -> "Colorizer":
        """A registered version (`models:/name@alias`, `models:/name/3`, `runs:/...`) from MLflow
        (`MLFLOW_TRACKING_URI`)."""
        return cls(ModelBundle.load(uri, device=device), mode)

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


__all__ = ["Colorizer", "DEFAULT_MODEL", "InputError", "read_page"]
