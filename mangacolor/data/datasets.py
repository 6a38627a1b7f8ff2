"""Datasets over store manifests: what every training stage iterates.

Pages are read lazily through the store (local folder or object store) with the one image reader,
so a 100k-page training set is never held in memory and a DataLoader's workers each open it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from mangacolor.io.images import read_image
from mangacolor.io.store import Store


class ManifestImages(torch.utils.data.Dataset):
    """uint8 pages (HxW for mode "L", HxWx3 for "RGB") from manifest rows, optionally transformed."""

    def __init__(self, store: Store, rows: pd.DataFrame, mode: str = "RGB", transform: Callable[[np.ndarray], object] | None = None,
                 uri_column: str = "uri"):
        self.store = store
        self.uris = list(rows[uri_column])
        self.ids = list(rows["id"])
        self.mode = mode
        self.transform = transform

    def __len__(self) -> int:
        return len(self.uris)

    def read(self, i: int) -> np.ndarray:
        return read_image(self.store.read_bytes(self.uris[i]), mode=self.mode)

    def __getitem__(self, i: int):
        img = self.read(i)
        return self.transform(img) if self.transform else img
