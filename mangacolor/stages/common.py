"""What several stages share: the pages of the train split, digests of what a stage trains on, the part of a
config a checkpoint depends on, and model weights in the store.

A trained model's version holds its weights (`weights/model.safetensors`, a manifest row of role
`weights`) and one manifest row per page it trained on, by role (`add_training_rows`): the rows make
the data version depend on what the model saw, and let the holdout check prove the holdout was never
among them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from mangacolor.data.splits import holdout_pages, training_pages
from mangacolor.io.store import Store, VersionWriter, content_version, ok_rows, sha256_bytes

WEIGHTS_PATH = "weights/model.safetensors"


@dataclass
class PageSummary:
    """What a per-page stage did: pages written, pages quarantined (with their reason in the manifest), and a few
    images to show (the stage decides which)."""

    ok: int = 0
    quarantined: int = 0
    shown: list = field(default_factory=list)


class Recorded(NamedTuple):
    """A version a stage wrote: its data version and folder, what it holds (plain values an asset shows as
    metadata), and a sample grid to show (a local file or a store path; None: none)."""

    version: str
    folder: str
    facts: dict
    samples: str | None = None


# --- the pages of the train split ------------------------------------------------------------------


def training_split_ids(store: Store) -> set[str]:
    """Ids of the black-and-white pages of the train split of the latest `page_splits` (empty without one)."""
    if store.latest_version("page_splits") is None:
        return set()
    splits = store.latest_manifest("page_splits")
    return set(training_pages(splits)["id"]) - set(holdout_pages(splits)["id"])


def ranked_rows(frame: pd.DataFrame, seed: int, salt: str) -> pd.DataFrame:
    """Rows in a fixed pseudo-random order (hash of id), stable when other pages come or go."""
    key = frame["id"].map(lambda i: hashlib.sha256(f"{seed}:{salt}:{i}".encode()).hexdigest())
    return frame.assign(_k=key).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def real_training_rows(store: Store, max_pages: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The ok black-and-white pages of the train split with their store `uri`, by id; the holdout is never among them.

    `max_pages`: at most that many, drawn by `seed` (a draw that keeps its pages when others come or go).
    Pages added after the split was made are in neither split and are left out until it is re-made.
    """
    store.latest_dir("page_splits")  # a clear error when there is no split yet
    train_ids = training_split_ids(store)
    pages = ok_rows(store, "bw_pages")
    rows = pages[pages["id"].isin(train_ids)].drop_duplicates("id")
    rows = ranked_rows(rows, seed, "real")
    return (rows.head(max_pages) if max_pages is not None else rows).sort_values("id").reset_index(drop=True)


# --- what a stage trains on, and what its checkpoints depend on -------------------------------------


def rows_digest(rows: pd.DataFrame, columns: Sequence[str] = ("id", "sha256")) -> str:
    """Which rows (ids, content, inputs: `columns`, those present) a stage trains on, as a short digest.

    The store's own data-version hash (`content_version`) of those columns: the order of the rows does not
    matter, and a missing value and a null one are the same."""
    present = [c for c in columns if c in rows]
    return content_version(rows[present].to_dict("records"))


def checkpoint_key(cfg, loop_only: Iterable[str] = (), **more) -> dict:
    """What decides whether a checkpoint can be resumed: a config (a dataclass or a pydantic model) minus the
    loop-only settings (those that do not change what is computed, such as logging intervals), plus `more`."""
    values = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg.model_dump(mode="json")
    skip = set(loop_only)
    return {**{k: v for k, v in values.items() if k not in skip}, **more}


# --- model weights in the store ----------------------------------------------------------------------


def write_weights(writer: VersionWriter, data: bytes, **more) -> str:
    """The weights file of a model version, with its manifest row (role `weights`, plus `more`); returns its path."""
    path = writer.write(WEIGHTS_PATH, data)
    writer.add({"id": "weights", "title": None, "page": None, "path": path, "sha256": sha256_bytes(data),
                "status": "ok", "reason": None, "role": "weights", **more})
    return path


def add_training_rows(writer: VersionWriter, role: str, rows: pd.DataFrame, id_column: str = "id") -> None:
    """One manifest row per page a stage trained on, so its data version and the holdout check see them."""
    for row in rows.sort_values(id_column).drop_duplicates(id_column).to_dict("records"):
        writer.add({"id": f"{role}:{row[id_column]}", "title": row.get("title"), "page": row.get("page"), "path": None,
                    "sha256": row.get("sha256"), "status": "ok", "reason": None, "role": role, "page_id": row[id_column]})


def write_model(writer: VersionWriter, weights: str | Path, inputs: dict[str, pd.DataFrame], metadata: dict | None = None) -> None:
    """A model asset's version: the weights file plus one manifest row per training page, by role."""
    write_weights(writer, Path(weights).read_bytes(), **(metadata or {}))
    for role, rows in inputs.items():
        add_training_rows(writer, role, rows)


def weights_row(store: Store, asset: str) -> tuple[str, dict]:
    """(version dir, the weights row) of the latest version of a model asset written by `write_model`."""
    vdir = store.latest_dir(asset)
    frame = store.read_manifest(vdir)
    found = frame[frame["role"] == "weights"] if "role" in frame else frame.iloc[0:0]
    if found.empty:
        raise FileNotFoundError(f"{vdir}: no weights row in the manifest; re-materialize {asset}")
    return vdir, found.iloc[0].to_dict()


@contextmanager
def local_file(store: Store, path: str) -> Iterator[Path]:
    """A local path for a store file (object stores: a temporary copy)."""
    if store.is_local:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} is missing from the store: re-materialize the asset that wrote it")
        yield Path(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(store.read_bytes(path))
        yield local


@contextmanager
def model_weights(store: Store, asset: str) -> Iterator[Path]:
    """A local path to the latest weights of a model asset written by `write_model` (copied from object stores)."""
    vdir, row = weights_row(store, asset)
    with local_file(store, f"{vdir}/{row['path']}") as path:
        yield path


def to_local(store: Store, uri: str, target: Path) -> Path:
    """A local copy of a store file at `target` (its folder is made); returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(store.read_bytes(uri))
    return target
