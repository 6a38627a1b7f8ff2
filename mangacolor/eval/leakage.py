"""Which real black-and-white pages any training stage ever read, and which evaluated pages are among them.

The holdout FID (paper §IV-D, §V) is honest only when no evaluated page reached any training stage.
Every training asset records the real pages it trained on as manifest rows (`role`, `page_id`,
`sha256`); `TRAINED_ROLES` says which roles of which asset are real pages. `trained_pages` reads
those rows from every committed version of every training asset, not only the latest: the champion
that an evaluation scores may come from an older version, and a page that moved from the train
split into the holdout was still seen by the models trained before the move.
"""

from __future__ import annotations

import posixpath

import pandas as pd

from mangacolor.io.store import MANIFEST, UNPARTITIONED, Store

# asset -> the manifest roles that are real black-and-white pages it trained on
TRAINED_ROLES: dict[str, tuple[str, ...]] = {
    "refiner_model": ("train",),  # xDoG(real page) -> real page
    "cut_model": ("target",),  # the real domain of CUT
    "colorizer_step1_snapshots": ("real_bw",),  # adversarial adaptation
    "colorizer_step1_finetuned": ("real_bw", "matched_bw"),  # the matched-pair fine-tune ends step 1 (App. D)
    "colorizer_step2": ("real_bw", "pseudolabel_bw", "matched_bw"),  # self-training (step 1's pages passed through)
    # drafting_network_final trains on the pseudolabels of the pages colorizer_step2 records as pseudolabel_bw.
}


def committed_versions(store: Store, asset: str, partition: str = UNPARTITIONED) -> list[str]:
    """Every committed version folder of one partition of an asset (those with a manifest), sorted."""
    base = store.path(asset, partition)
    if not store.exists(base):
        return []
    out = []
    for entry in store.fs.ls(base, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if not name.startswith(".") and store.exists(posixpath.join(store._strip(entry), MANIFEST)):
            out.append(posixpath.join(base, name))
    return sorted(out)


def trained_rows(manifest: pd.DataFrame, roles: tuple[str, ...]) -> pd.DataFrame:
    """The rows of a training asset's manifest that name a real page it trained on: page_id, sha256."""
    if "role" not in manifest or "page_id" not in manifest:
        return pd.DataFrame(columns=["page_id", "sha256"])
    rows = manifest[manifest["role"].isin(roles) & manifest["page_id"].notna()]
    sha = rows["sha256"] if "sha256" in rows else pd.Series([None] * len(rows), index=rows.index)
    return pd.DataFrame({"page_id": rows["page_id"].astype(str).values, "sha256": sha.values})


def trained_pages(store: Store, assets: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """Every real page any committed version of any training asset trained on: asset, version, page_id, sha256."""
    frames = []
    for asset, roles in (assets or TRAINED_ROLES).items():
        for vdir in committed_versions(store, asset):
            rows = trained_rows(store.read_manifest(vdir), roles)
            frames.append(rows.assign(asset=asset, version=posixpath.basename(vdir)))
    if not frames:
        return pd.DataFrame(columns=["page_id", "sha256", "asset", "version"])
    return pd.concat(frames, ignore_index=True)


def leaked_pages(evaluated: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """Evaluated rows (`id`, `sha256`) that a training stage read, by id or by content; with `asset` naming one stage."""
    by_id = trained.drop_duplicates("page_id").set_index("page_id")["asset"]
    shas = trained.dropna(subset=["sha256"]).drop_duplicates("sha256").set_index("sha256")["asset"]
    rows = []
    for row in evaluated.to_dict("records"):
        asset = by_id.get(str(row["id"])) or (shas.get(row.get("sha256")) if row.get("sha256") else None)
        if asset is not None:
            rows.append({"id": str(row["id"]), "asset": asset})
    return pd.DataFrame(rows, columns=["id", "asset"])
