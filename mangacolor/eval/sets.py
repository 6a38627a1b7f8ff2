"""The pages each evaluation set holds, and the colour pages they are compared with (paper §V).

- `holdout`: the black-and-white pages of the holdout split (`page_splits`, paper §IV-D: pages
  never read by adaptation or self-training). The paper's "Our dataset" column.
- `manga109`: the Manga109 pages (`manga109_pages`), styles the models never saw.

Reference (the "real" side of FID) is the same for both sets: the colour training distribution,
i.e. every ok page of `color_pages` (web and folder titles, Danbooru illustrations, the colour side
of matched pairs), minus titles the preset excludes. The paper compares both sets with the colour
pages it trained on; Manga109 has no colour version. Matched-pair colour pages may stay in: their
black-and-white pages always go to the train split, so no holdout page's own colouring is in the
reference. Every set is subsampled deterministically (by a hash of page id and seed) when the
preset caps its size, so adding pages keeps most of the chosen ones and their cached features.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mangacolor.data.datasets import ok_rows
from mangacolor.data.splits import holdout_pages
from mangacolor.io.images import read_image
from mangacolor.io.store import UNPARTITIONED, Store

EVAL_SETS = ("holdout", "manga109")
SET_DESCRIPTIONS = {
    "holdout": "black-and-white pages of the holdout split (never read by adaptation or self-training); the paper's 'Our dataset'",
    "manga109": "Manga109 pages (styles unseen in training)",
}
REFERENCE_DESCRIPTION = (
    "colour training pages (every ok page of color_pages{excluded}): the paper compares both sets with "
    "its colour training distribution, Manga109 has no colour version"
)


def subsample(rows: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most `n` rows, chosen by a hash of (seed, id): stable as pages are added, sorted by id."""
    rows = rows.sort_values("id").reset_index(drop=True)
    if n is None or len(rows) <= n:
        return rows
    rank = rows["id"].map(lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return rows.loc[rank.sort_values().index[:n]].sort_values("id").reset_index(drop=True)


def evaluation_rows(store: Store, set_name: str, max_pages: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Manifest rows (with an absolute `uri`) of the black-and-white pages of one evaluation set."""
    if set_name == "holdout":
        splits = store.latest_manifest("page_splits")
        rows = holdout_pages(splits)
        if "uri" not in rows:
            raise ValueError("page_splits manifest has no `uri` column: re-materialize page_splits")
    elif set_name == "manga109":
        rows = ok_rows(store, "manga109_pages", [UNPARTITIONED])
    else:
        raise ValueError(f"unknown evaluation set {set_name!r}; expected one of {EVAL_SETS}")
    if len(rows) == 0:
        raise ValueError(f"evaluation set {set_name!r} is empty: {SET_DESCRIPTIONS[set_name]}")
    return subsample(rows, max_pages, seed)


def reference_rows(store: Store, exclude_titles: list[str] | None = None, max_pages: int | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """The colour reference pages (see the module docstring)."""
    rows = ok_rows(store, "color_pages")
    if exclude_titles:
        rows = rows[~rows["title"].isin(exclude_titles)]
    if len(rows) < 2:
        raise ValueError(f"need at least 2 colour reference pages, found {len(rows)}: materialize color_pages first")
    return subsample(rows, max_pages, seed)


def reference_description(exclude_titles: list[str] | None = None) -> str:
    excluded = f" except titles {', '.join(exclude_titles)}" if exclude_titles else ""
    return REFERENCE_DESCRIPTION.format(excluded=excluded)


def read_pages(store: Store, rows: pd.DataFrame, mode: str) -> list[np.ndarray]:
    """uint8 pages ("L": HxW grey, "RGB": HxWx3) of manifest rows, in row order."""
    return [read_image(store.read_bytes(uri), mode=mode) for uri in rows["uri"]]
