"""Train / holdout split of the black-and-white pages (paper §IV-D: 5,000 held-out pages).

The holdout is drawn once from a fixed seed and is never read by adversarial adaptation or
self-training; `training_pages` is the one function those stages use to get their pages, and the
asset check compares exactly its output with the holdout.
"""

from __future__ import annotations

import hashlib

import pandas as pd


def _rank(page_id: str, seed: int) -> str:
    # Hash ranking instead of a shuffled list: adding a title leaves every other page's split unchanged.
    return hashlib.sha256(f"{seed}:{page_id}".encode()).hexdigest()


def make_splits(pages: pd.DataFrame, seed: int, holdout_fraction: float, holdout_count: int | None = None,
                exclude_from_holdout: set[str] | None = None, paired_holdout_fraction: float = 0.0) -> pd.DataFrame:
    """pages: rows with `id` (status ok only). Returns the rows with a `split` column (train / holdout).

    Pages in `exclude_from_holdout` (the matched pairs, used for fine-tuning) go to train, except a
    `paired_holdout_fraction` of them (by the same hash rank): held out, they are the pages whose true
    colours the evaluation knows (paired metrics).
    """
    exclude = exclude_from_holdout or set()
    frame = pages.copy()
    frame["rank"] = frame["id"].map(lambda i: _rank(i, seed))
    eligible = frame[~frame["id"].isin(exclude)].sort_values("rank")
    n = holdout_count if holdout_count is not None else int(round(len(eligible) * holdout_fraction))
    n = min(n, len(eligible))
    holdout_ids = set(eligible["id"].iloc[:n])
    paired = frame[frame["id"].isin(exclude)].sort_values("rank")
    holdout_ids |= set(paired["id"].iloc[: int(round(len(paired) * paired_holdout_fraction))])
    frame["split"] = frame["id"].map(lambda i: "holdout" if i in holdout_ids else "train")
    return frame.drop(columns=["rank"]).sort_values("id").reset_index(drop=True)


def training_pages(splits: pd.DataFrame) -> pd.DataFrame:
    """The black-and-white pages adaptation and self-training may read."""
    return splits[splits["split"] == "train"].reset_index(drop=True)


def holdout_pages(splits: pd.DataFrame) -> pd.DataFrame:
    return splits[splits["split"] == "holdout"].reset_index(drop=True)
