"""Colorizing pages with a trained model: `Colorizer` is the Python API (see api.py and the README)."""

from mangacolor.inference.api import Colorizer, InputError

__all__ = ["Colorizer", "InputError"]
