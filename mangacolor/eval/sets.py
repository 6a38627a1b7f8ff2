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
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mangacolor.data.splits import holdout_pages
from mangacolor.io.images import read_image
from mangacolor.io.store import UNPARTITIONED, Store, ok_rows

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


class LazyPages(Sequence):
    """Pages of a list of store URIs, decoded only when indexed (evaluation streams them in batches).

    A URI may be None (no page there: `present(i)` is False and indexing gives None), e.g. the true
    colour page of an evaluated page that has none."""

    def __init__(self, store: Store, uris: Sequence[str | None], mode: str):
        self.store, self.uris, self.mode = store, list(uris), mode

    def __len__(self) -> int:
        return len(self.uris)

    def present(self, i: int) -> bool:
        return self.uris[i] is not None

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        uri = self.uris[i]
        return None if uri is None else read_image(self.store.read_bytes(uri), mode=self.mode)


def content_key(rows: pd.DataFrame) -> str:
    """A digest of a page set's content (the manifests' sha256 column, in order): the reference
    features are cached under it and reused while the reference pages do not change."""
    digests = rows["sha256"] if "sha256" in rows else rows["uri"]
    return hashlib.sha256("\n".join(map(str, digests)).encode()).hexdigest()


def matched_truth_uris(store: Store, rows: pd.DataFrame) -> list[str | None]:
    """For each evaluated black-and-white page, the URI of its true colour page aligned to it (the
    matched pair written by `page_pairs`), or None. Only held-out matched pairs can appear here
    (`splits.paired_holdout_fraction`)."""
    if store.latest_version("page_pairs") is None:
        return [None] * len(rows)
    pairs = store.latest_manifest("page_pairs")
    if "path" not in pairs:
        return [None] * len(rows)
    vdir = store.latest_dir("page_pairs")
    matched = pairs[(pairs.get("matched", False) == True) & pairs["path"].notna()]  # noqa: E712 - a pandas mask
    by_bw = {r.bw_id: f"{vdir}/{r.path}" for r in matched.itertuples()}
    return [by_bw.get(i) for i in rows["id"]]
