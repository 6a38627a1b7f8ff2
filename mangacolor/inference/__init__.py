"""Colorizing pages with a trained model: `Colorizer` is the Python API (see api.py and the README).

`Colorizer` is imported on first use (PEP 562), so the parts that only check inputs (`pages`, `hints`) load
without torch: the CLI says "no such file" at once instead of after the 8 s torch import.
"""

from mangacolor.inference.pages import InputError

__all__ = ["Colorizer", "InputError"]


def __getattr__(name: str):
    if name == "Colorizer":
        from mangacolor.inference.api import Colorizer

        return Colorizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
