"""Fan-in staleness that does not stop at 100 titles: one digest per per-title asset that a stage fans in.

Dagster computes staleness across a partitioned -> unpartitioned edge only while the upstream asset
has fewer than 100 partitions (`SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD` in
dagster/_core/definitions/data_version.py); past that, `page_pairs`, `page_splits`, `cut_model`,
`stylegan`, `drafting_network`, colorizer step 1 and `fid_report` would silently stay "fresh" when
a title changes. So each per-title asset that is fanned in has an unpartitioned observable source
asset, `<asset>_digest`, whose data version is a digest of the committed versions of all its
partitions (the store's `LATEST` pointers: content-derived data versions). The fan-in stages depend
on these digests too; an unpartitioned -> unpartitioned edge is always counted, whatever the number
of titles. Each per-title asset records its digest right after it commits (`report_digest`, called by
`assets.common.commits_last` once LATEST has moved), so a
fan-in stage that runs next reads it as its input version; `title_sensor` also observes the digests
on each tick (only when changed, by its cursor), which catches concurrent commits and changes made
outside a run. Cost: one listing and one small read per title of the asset, never a page.
"""

from __future__ import annotations

import hashlib
import posixpath

import dagster as dg

from mangacolor.io.store import LATEST, Store

from .resources import StoreResource

FANNED_IN = {
    "color_pages": "ingest", "bw_pages": "ingest",
    "refined_pages": "synthetic", "synthetic_bw_pages": "synthetic",
    "blurred_color_pages": "drafting", "coloring_drafts": "drafting",
}


def digest_key(asset: str) -> dg.AssetKey:
    return dg.AssetKey(f"{asset}_digest")


def store_digest(store: Store, asset: str) -> str:
    """A digest of (partition, committed version) over every partition of `asset` in the store.

    One listing and one batch of small reads (the `LATEST` pointers; fsspec fetches them concurrently
    on object stores); no page is read."""
    h = hashlib.sha256(asset.encode())
    pointers = sorted(store.fs.glob(posixpath.join(store.path(asset), "*", LATEST)))
    versions = store.fs.cat(pointers) if pointers else {}
    for path in pointers:
        partition = posixpath.basename(posixpath.dirname(path))
        data = versions.get(path) or versions.get(store._strip(path)) or b""
        h.update(f"\n{partition}={data.decode().strip()}".encode())
    return h.hexdigest()[:16]


def report_digest(context: dg.AssetExecutionContext, store: Store, asset: str) -> None:
    """After a per-title asset commits: record its new digest, so a fan-in stage that runs next sees it."""
    if asset in FANNED_IN:
        context.log_event(dg.AssetObservation(asset_key=digest_key(asset), tags={"dagster/data_version": store_digest(store, asset)}))


def _digest_asset(asset: str, group: str) -> dg.SourceAsset:
    @dg.observable_source_asset(
        name=f"{asset}_digest", group_name=group,
        description=f"Digest of the committed versions of every partition of {asset}: keeps the stages that read all of "
                    "its titles stale-aware past Dagster's 100-partition limit (see assets/digests.py).",
    )
    def observe(store: StoreResource) -> dg.DataVersion:
        return dg.DataVersion(store_digest(store.get(), asset))

    return observe


DIGESTS = [_digest_asset(asset, group) for asset, group in FANNED_IN.items()]


def digest_observations(store: Store, previous: dict[str, str]) -> tuple[list[dg.AssetObservation], dict[str, str]]:
    """Observations of the digests that differ from `previous` (asset -> digest), and the new state."""
    state = {asset: store_digest(store, asset) for asset in FANNED_IN}
    events = [dg.AssetObservation(asset_key=digest_key(a), tags={"dagster/data_version": d}) for a, d in state.items()
              if previous.get(a) != d]
    return events, state
