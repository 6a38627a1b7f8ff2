"""What the colorization stages read from the store and record of it (paper §III training scheme).

Synthetic pairs (Table 3's level of each title, with fallbacks), the real black-and-white pages of
the train split (never the holdout) with their drafting-network drafts, the matched real pairs of
the fine-tune, the pseudolabelled pages of step 2; datasets that decode them on access; and the
manifest rows by which every stage records the pages it read, which the holdout check compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from mangacolor.io.images import read_image
from mangacolor.io.store import Store, ok_rows
from mangacolor.stages.colorization.config import SYNTHETIC_LEVELS
from mangacolor.stages.common import training_split_ids

# Roles of manifest rows that name a real black-and-white page a stage read (the holdout check's input).
REAL_ROLES = ("real_bw", "pseudolabel_bw", "matched_bw")


class StoreImages(Sequence):
    """Images named by store URIs, decoded on access (None entries stay None)."""

    def __init__(self, store: Store, uris: Sequence[str | None], mode: str):
        self.store, self.uris, self.mode = store, list(uris), mode

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i):
        uri = self.uris[i]
        return None if uri is None or (isinstance(uri, float) and math.isnan(uri)) else read_image(self.store.read_bytes(uri), mode=self.mode)


def fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    return image if image.shape[:2] == hw else cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


class StorePairs(Dataset):
    """bw/colour(/draft) samples as `train_colorizer` wants them, read through the store.

    A colour page of another size than its black-and-white page (a synthetic page a few pixels off)
    is resized onto it, so crops cut the same window from both.
    """

    def __init__(self, store: Store, rows: pd.DataFrame):
        self.bw = StoreImages(store, rows["bw_uri"], "L")
        self.color = StoreImages(store, rows["color_uri"], "RGB")
        self.drafts = StoreImages(store, rows["draft_uri"] if "draft_uri" in rows else [None] * len(rows), "RGB")

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        bw = self.bw[i]
        sample = {"bw": bw, "color": fit(self.color[i], bw.shape[:2])}
        draft = self.drafts[i]
        if draft is not None:
            sample["draft"] = draft
        return sample


class StoreBw(Dataset):
    """Real black-and-white pages (step 1's adversarial domain), with their drafting-network drafts
    (`draft_uri`, S of eq. 9) where the rows have them."""

    def __init__(self, store: Store, rows: pd.DataFrame):
        self.bw = StoreImages(store, rows["uri"], "L")
        self.drafts = StoreImages(store, rows["draft_uri"] if "draft_uri" in rows else [None] * len(rows), "RGB")

    def __len__(self) -> int:
        return len(self.bw)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        sample = {"bw": self.bw[i]}
        draft = self.drafts[i]
        if draft is not None:
            sample["draft"] = draft
        return sample


def with_page_drafts(store: Store, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`rows` of real pages with `draft_uri`: their drafts from the latest `bw_page_drafts` (the drafting
    network's S for eq. 9), None where a page has none. Returns (rows, fallback notes)."""
    rows = rows.assign(draft_uri=None)
    if store.latest_version("bw_page_drafts") is None:
        return rows, ["bw_page_drafts not materialized: real pages get empty drafts"] if len(rows) else []
    drafts = ok_rows(store, "bw_page_drafts")
    by_page = dict(zip(drafts["page_id"], drafts["uri"]))
    rows["draft_uri"] = [by_page.get(i) for i in rows["id"]]
    missing = int(rows["draft_uri"].isna().sum())
    return rows, [f"{missing} of {len(rows)} real pages have no draft in bw_page_drafts"] if missing else []


@dataclass
class PairInputs:
    """Supervised pairs and how they were made: per title, the black-and-white source used."""

    rows: pd.DataFrame  # id, title, page, source_id, bw_uri, color_uri, draft_uri, sha256
    bw_source: dict[str, str]  # title -> synthetic_bw_pages | refined_pages | xdog_pages | grey
    drafts: str  # coloring_drafts | none (use_drafts false) | missing (no coloring_drafts)
    notes: list[str] = field(default_factory=list)
    wanted: str = "synthetic_bw_pages"  # the asset of the variant's synthetic level

    @property
    def fallbacks(self) -> list[str]:
        """What stands in for an upstream asset that has not been materialized yet."""
        out = [f"{t}: {s} instead of {self.wanted}" for t, s in sorted(self.bw_source.items()) if s != self.wanted]
        if self.drafts == "missing":
            out.append("coloring_drafts not materialized: empty drafts")
        return out + self.notes


def _drafts_by_source(store: Store, titles: Sequence[str]) -> dict[str, str]:
    have = [t for t in titles if store.latest_version("coloring_drafts", t)]
    if not have:
        return {}
    rows = ok_rows(store, "coloring_drafts", have)
    key = rows["source_id"] if "source_id" in rows else rows["id"]
    return dict(zip(key, rows["uri"]))


def synthetic_pairs(store: Store, titles: Sequence[str], use_drafts: bool, level: str = "cut") -> PairInputs:
    """Synthetic black-and-white page ↔ its colour page (+ that page's coloring draft), over `titles`.

    `level` (Table 3): "cut" reads `synthetic_bw_pages`, "refined" `refined_pages`, "xdog"
    `xdog_pages`. A title without its level's pages falls back to the levels below it, then to the
    grey conversion of its colour pages; `PairInputs.fallbacks` says which, for metadata and tags.
    """
    if level not in SYNTHETIC_LEVELS:
        raise ValueError(f"synthetic level must be one of {sorted(SYNTHETIC_LEVELS)}, got {level!r}")
    frames, source = [], {}
    wanted = SYNTHETIC_LEVELS[level][0]
    for title in titles:
        color = ok_rows(store, "color_pages", [title]).set_index("id")
        for asset in SYNTHETIC_LEVELS[level]:
            if store.latest_version(asset, title):
                bw = ok_rows(store, asset, [title])
                src_id = bw["source_id"] if "source_id" in bw else bw["id"]
                bw = bw.assign(source_id=src_id)
                bw = bw[bw["source_id"].isin(color.index)]
                frames.append(pd.DataFrame({
                    "id": bw["id"].values, "title": title, "page": bw["page"].values, "source_id": bw["source_id"].values,
                    "bw_uri": bw["uri"].values, "color_uri": color.loc[bw["source_id"], "uri"].values,
                    "sha256": bw["sha256"].values,
                }))
                source[title] = asset
                break
        else:
            source[title] = "grey"  # read_image(mode="L") of the colour page is its grey conversion
            frames.append(pd.DataFrame({
                "id": color.index.values, "title": title, "page": color["page"].values, "source_id": color.index.values,
                "bw_uri": color["uri"].values, "color_uri": color["uri"].values, "sha256": color["sha256"].values,
            }))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["id", "title", "page", "source_id", "bw_uri", "color_uri", "sha256"])
    drafts_state, notes = "none", []
    rows["draft_uri"] = None
    if use_drafts:
        by_source = _drafts_by_source(store, titles)
        drafts_state = "coloring_drafts" if by_source else "missing"
        rows["draft_uri"] = [by_source.get(s) for s in rows["source_id"]]
        missing = int(rows["draft_uri"].isna().sum())
        if by_source and missing:
            notes.append(f"{missing} of {len(rows)} synthetic pairs have no coloring draft (their titles' drafts are not materialized)")
    return PairInputs(rows.sort_values(["title", "id"]).reset_index(drop=True), source, drafts_state, notes, wanted)


def matched_pairs(store: Store, use_drafts: bool) -> PairInputs:
    """The matched real page pairs of `page_pairs` (bw page, colour page aligned onto it) for the fine-tune.

    Only pairs whose black-and-white page is in the train split of `page_splits`: a split made before a
    colour title paired with existing pages may hold one of them in the holdout, and the fine-tune must
    not train on a page the holdout FID is measured on. `notes` says how many were left out.
    """
    empty = PairInputs(pd.DataFrame(columns=["id", "bw_id", "bw_uri", "color_uri", "draft_uri", "sha256"]), {}, "none")
    if store.latest_version("page_pairs") is None:
        return empty
    vdir = store.latest_dir("page_pairs")
    pairs = store.read_manifest(vdir)
    pairs = pairs[pairs["matched"].astype(bool) & (pairs["status"] == "ok")]
    train = training_split_ids(store)
    outside = pairs[~pairs["bw_id"].isin(train)]
    pairs = pairs[pairs["bw_id"].isin(train)]
    notes = []
    if store.latest_version("page_splits") is None and len(outside):
        notes.append(f"page_splits not materialized: {len(outside)} matched pairs left out (no train split to check them against)")
    elif len(outside):
        notes.append(f"{len(outside)} matched pairs left out: their black-and-white page is not in the train split of page_splits "
                     f"({', '.join(sorted(map(str, outside['bw_id']))[:5])}); re-materialize page_splits to train on them")
    rows = pd.DataFrame({
        "id": pairs["id"].values, "title": pairs["title"].values, "page": pairs["page"].values,
        "bw_id": pairs["bw_id"].values, "source_id": pairs["color_id"].values,
        "bw_uri": pairs["bw_uri"].values, "color_uri": [f"{vdir}/{p}" for p in pairs["path"]], "sha256": pairs["sha256"].values,
    })
    rows["draft_uri"] = None
    drafts_state = "none"
    if use_drafts:
        by_source = _drafts_by_source(store, sorted(set(rows["title"])))
        drafts_state = "coloring_drafts" if by_source else "missing"
        rows["draft_uri"] = [by_source.get(s) for s in rows["source_id"]]
    return PairInputs(rows.sort_values("id").reset_index(drop=True), {}, drafts_state, notes)


def pseudolabel_pairs(store: Store, use_drafts: bool) -> pd.DataFrame:
    """Rows of the latest `pseudolabels`: real bw page, its pseudolabel and the draft it goes with."""
    vdir = store.latest_dir("pseudolabels")
    frame = store.read_manifest(vdir)
    if "bw_id" not in frame:  # a version made with self_training off holds no labels
        return pd.DataFrame(columns=["id", "title", "page", "bw_id", "bw_uri", "color_uri", "draft_uri", "sha256"])
    frame = frame[frame["status"] == "ok"]
    bw = ok_rows(store, "bw_pages").drop_duplicates("id").set_index("id")
    drafts = [f"{vdir}/{p}" if use_drafts and isinstance(p, str) else None for p in frame.get("draft_path", [None] * len(frame))]
    return pd.DataFrame({
        "id": frame["id"].values, "title": frame["title"].values, "page": frame["page"].values, "bw_id": frame["bw_id"].values,
        "bw_uri": bw.loc[frame["bw_id"], "uri"].values, "color_uri": [f"{vdir}/{p}" for p in frame["path"]],
        "draft_uri": drafts, "sha256": frame["sha256"].values,
    })


def trained_real_ids(manifest: pd.DataFrame) -> set[str]:
    """The real black-and-white page ids a stage's manifest says it read."""
    if "role" not in manifest or "page_id" not in manifest:
        return set()
    return set(manifest.loc[manifest["role"].isin(REAL_ROLES), "page_id"].dropna())


def stored_snapshots(store: Store, asset: str) -> tuple[str, pd.DataFrame]:
    """(version dir, snapshot rows by step) of the latest version of a snapshot asset (step 1, its fine-tune)."""
    vdir = store.latest_dir(asset)
    frame = store.read_manifest(vdir)
    return vdir, frame[frame["role"] == "snapshot"].sort_values("step")


def chosen_snapshots(store: Store) -> pd.DataFrame:
    """The selected snapshots of the latest `selected_snapshots`, best first, with their weights' uri."""
    vdir = store.latest_dir("selected_snapshots")
    frame = store.read_manifest(vdir)
    chosen = frame[frame["selected"].astype(bool)].sort_values("order")
    return chosen.assign(uri=[f"{vdir}/{p}" for p in chosen["path"]])
