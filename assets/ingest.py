"""Ingest assets (README § The asset graph, "ingest"): pages in, bad files quarantined, pairs matched, split fixed.

`color_sources` / `bw_sources` are observed (a fingerprint of each title's file metadata), so a changed
page makes exactly its title's `color_pages` / `bw_pages` partition and what depends on it stale.
`title_sensor` and the demo runner share one tick (`source_tick`): new titles become partitions,
vanished ones are removed, and only titles whose fingerprint changed since the cursor are observed.
"""


import json
import os
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from mangacolor import config as mc_config
from mangacolor.data.ingest import ingest_items
from mangacolor.data.sources import (
    iter_items, list_titles, manga109_source, preset_sources, scan_changes, scan_sources, titles_by_role,
)
from mangacolor.data.splits import holdout_pages, make_splits, training_pages
from mangacolor.io.images import read_image
from mangacolor.io.store import Store, ok_rows

from .common import bw_titles, color_titles, commits_last, progress_logger, stage_asset
from .metadata import manifest_uri, samples_md, table_metadata, version_metadata
from .digests import digest_key, digest_observations
from .resources import SettingsResource, StoreResource

EAGER = dg.AutomationCondition.eager()
OWNERS = ["team:data"]


def _sample_images(store, version_dir: str, frame: pd.DataFrame, n: int = 4) -> list:
    ok = frame[frame["status"] == "ok"].head(n)
    return [read_image(store.read_bytes(f"{version_dir}/{p}")) for p in ok["path"]]


def _ingest_metadata(store, version, version_dir, frame, summary) -> dict:
    bad = frame[frame["status"] != "ok"][["page", "reason"]]
    return {
        **version_metadata(store, version, version_dir),
        "pages_ok": summary.ok,
        "quarantined": summary.quarantined,
        "near_duplicates": summary.duplicates,
        **table_metadata("quarantine", bad, manifest_uri(store, version_dir)),
        "samples": samples_md(store, version_dir, _sample_images(store, version_dir, frame)),
    }


def _make_ingest(role: str, partitions_def: dg.DynamicPartitionsDefinition):
    source_key = f"{role}_sources"
    label = {"color": "colour", "bw": "black-and-white"}[role]

    @dg.observable_source_asset(
        name=source_key,
        partitions_def=partitions_def,
        group_name="ingest",
        description=f"The configured {label} sources, observed per title by a fingerprint of its files' metadata "
                    "(size, mtime or ETag): a changed, added or removed page changes the version.",
    )
    def observe(context, settings: SettingsResource) -> dg.DataVersionsByPartition:
        prints = scan_sources(preset_sources(settings.load()), (role,)).fingerprints[role]
        known = context.instance.get_dynamic_partitions(partitions_def.name)
        return dg.DataVersionsByPartition({t: prints[t] for t in known if t in prints})

    @dg.asset(
        name=f"{role}_pages",
        partitions_def=partitions_def,
        deps=[observe],
        group_name="ingest",
        owners=OWNERS, tags={"stage": "ingest", "role": "data"},
        automation_condition=EAGER,
        kinds={"python", "parquet"},
        description=f"Validated {label} pages of one title with a parquet manifest; unreadable, odd and near-duplicate files quarantined with their reason.",
    )
    @commits_last
    def pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
        preset = settings.load()
        title = context.partition_key
        cfgs = titles_by_role(preset_sources(preset), role).get(title)
        if not cfgs:
            raise dg.Failure(f"title {title!r} is in no configured {label} source any more; remove the partition or restore the source")
        st = store.get()
        writer = st.begin(f"{role}_pages", title)
        ingest_cfg = mc_config.stage_config(preset, "ingest", mc_config.IngestConfig)
        items = [item for cfg in cfgs for item in iter_items(cfg, title)]
        summary = ingest_items(items, writer, ingest_cfg.dedup_distance, progress_logger(context, len(items), f"{role}_pages[{title}]"))
        version, vdir, frame = writer.seal()
        context.log.info(f"{title}: {summary.ok} pages ok, {summary.quarantined} quarantined")
        return dg.MaterializeResult(metadata=_ingest_metadata(st, version, vdir, frame, summary), data_version=dg.DataVersion(version))

    return observe, pages


color_sources, color_pages = _make_ingest("color", color_titles)
bw_sources, bw_pages = _make_ingest("bw", bw_titles)


@stage_asset("ingest", "data", owners=OWNERS, kinds=("parquet", "python"), automation_condition=EAGER,
    description="Manga109 pages read from the official layout (books.txt, images/<title>/<NNN>.jpg): the unseen-style evaluation set.",
)
def manga109_pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
    preset = settings.load()
    cfg = manga109_source(preset)
    if cfg is None:
        raise dg.Failure("preset has no `manga109: {uri: ...}` section; point it at your Manga109 folder")
    st = store.get()
    writer = st.begin("manga109_pages")
    items = [item for title in list_titles(cfg) for item in iter_items(cfg, title)]
    summary = ingest_items(items, writer, None, progress_logger(context, len(items), "manga109_pages"))
    version, vdir, frame = writer.seal()
    meta = _ingest_metadata(st, version, vdir, frame, summary)
    meta["titles"] = int(frame["title"].nunique()) if len(frame) else 0
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


@stage_asset("ingest", "data", owners=OWNERS, kinds=("parquet", "python"),
    deps=[color_pages, bw_pages, digest_key("color_pages"), digest_key("bw_pages")], automation_condition=EAGER,
    description="The paper's matched black-and-white/colour pairs (§IV-A-2): titles present in both roles, each page aligned by its ink, with alignment and error; rejected candidates kept with their best error.",
)
def page_pairs(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
    from mangacolor.data.pairs import match_pairs

    st = store.get()
    preset = settings.load()
    both = sorted(set(st.partitions("color_pages")) & set(st.partitions("bw_pages")))
    writer = st.begin("page_pairs")
    color = ok_rows(st, "color_pages", both)
    bw = ok_rows(st, "bw_pages", both)
    stats, samples = match_pairs(bw, color, st, writer, preset.get("matching") or {}, progress_logger(context, len(bw), "page_pairs"))
    version, vdir, frame = writer.seal()
    table = frame[["id", "matched", "error", "scale"]] if len(frame) else frame
    return dg.MaterializeResult(
        metadata={
            **version_metadata(st, version, vdir),
            "titles": dg.MetadataValue.json(both),
            "candidates": stats["candidates"],
            "matched": stats["matched"],
            "rejected": stats["rejected"],
            **table_metadata("pairs", table, manifest_uri(st, vdir)),
            "samples": samples_md(st, vdir, samples, "black-and-white | aligned colour"),
        },
        data_version=dg.DataVersion(version),
    )


@stage_asset("ingest", "data", owners=OWNERS, kinds=("parquet", "python"),
    deps=[bw_pages, page_pairs, digest_key("bw_pages")], automation_condition=EAGER,
    description="Train / holdout split of the black-and-white pages by a fixed seed; the holdout is never read by adaptation or self-training (matched pairs train, but for `paired_holdout_fraction` of them).",
)
def page_splits(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
    st = store.get()
    cfg = mc_config.stage_config(settings.load(), "splits", mc_config.SplitConfig)
    pages = ok_rows(st, "bw_pages", st.partitions("bw_pages"))
    pairs = st.latest_manifest("page_pairs") if st.latest_version("page_pairs") else pd.DataFrame(columns=["bw_id", "matched"])
    paired = set(pairs.loc[pairs["matched"].astype(bool), "bw_id"]) if len(pairs) else set()
    frame = make_splits(pages, cfg.seed, cfg.holdout_fraction, cfg.holdout_count, exclude_from_holdout=paired,
                        paired_holdout_fraction=cfg.paired_holdout_fraction)
    writer = st.begin("page_splits")
    for row in frame.to_dict("records"):
        writer.add(row)
    version, vdir, _ = writer.seal(salt=f"{cfg.seed}:{cfg.holdout_fraction}:{cfg.holdout_count}:{cfg.paired_holdout_fraction}")
    counts = frame["split"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={**version_metadata(st, version, vdir), "train": int(counts.get("train", 0)), "holdout": int(counts.get("holdout", 0))},
        data_version=dg.DataVersion(version),
    )


@dg.asset_check(asset=page_splits, blocking=True, description="The holdout never appears in what adaptation or self-training read.")
def holdout_disjoint(store: StoreResource) -> dg.AssetCheckResult:
    st = store.get()
    splits = st.latest_manifest("page_splits")
    leaked = set(training_pages(splits)["id"]) & set(holdout_pages(splits)["id"])
    return dg.AssetCheckResult(passed=not leaked, metadata={"leaked": len(leaked), "holdout": int((splits["split"] == "holdout").sum())})


PARTITIONS = {"color": color_titles, "bw": bw_titles}


@dataclass
class SourceTick:
    """One look at the sources: partitions to add and remove, observations to record, the next cursor."""

    new: dict[str, list[str]]
    vanished: dict[str, list[str]]
    observations: list[dg.AssetObservation]
    cursor: str
    failed: dict[str, list[str]]

    def partition_requests(self) -> list:
        adds = [PARTITIONS[role].build_add_request(titles) for role, titles in self.new.items() if titles]
        return adds + [PARTITIONS[role].build_delete_request(titles) for role, titles in self.vanished.items() if titles]


def source_tick(preset: dict, known: dict[str, set[str]], cursor: str | None, store=None) -> SourceTick:
    """What the sensor and the demo runner do on each look (one implementation for both).

    Fingerprints come from object metadata; only titles that are new or whose fingerprint differs
    from the cursor's get an observation, so an unchanged source costs one listing and writes nothing.
    Titles that no source holds any more leave the partitions, unless a source of that role could not
    be listed (then that role is left as it was and the cursor keeps its old fingerprints).
    """
    previous = json.loads(cursor) if cursor else {}
    scan = scan_sources(preset_sources(preset))
    changes = scan_changes(scan, previous, known)
    events = [dg.AssetObservation(asset_key=f"{role}_sources", partition=title, tags={"dagster/data_version": fp})
              for role, titles in changes.changed.items() for title, fp in titles.items()]
    state = {role: (previous.get(role, {}) if scan.failed.get(role) else prints) for role, prints in scan.fingerprints.items()}
    if store is not None:  # the fan-in digests (assets/digests.py), observed only when changed
        digest_events, state["digests"] = digest_observations(store, previous.get("digests", {}))
        events += digest_events
    return SourceTick(changes.new, changes.vanished, events, json.dumps(state, sort_keys=True), scan.failed)


def _known(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    return {role: set(instance.get_dynamic_partitions(p.name)) for role, p in PARTITIONS.items()}


@dg.sensor(minimum_interval_seconds=int(os.environ.get("MANGACOLOR_SENSOR_INTERVAL", 60)), default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a title partition when a new title appears in a source, removes one whose title is gone, and "
                       "observes a title only when its fingerprint (file metadata, no page bytes) changed, and the fan-in "
                       "digests when they changed. Cursor: the fingerprints and digests.")
def title_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource, store: StoreResource) -> dg.SensorResult:
    from assets.scrape import web_title_requests

    preset = settings.load()
    tick = source_tick(preset, _known(context.instance), context.cursor, store.get())
    for role, problems in tick.failed.items():
        for problem in problems:
            context.log.warning(f"{role} source not listed, its titles left as they were: {problem}")
    requests = tick.partition_requests() + web_title_requests(set(context.instance.get_dynamic_partitions("web_titles")), preset)
    return dg.SensorResult(dynamic_partitions_requests=requests, asset_events=tick.observations, cursor=tick.cursor)


CURSOR_KEY = "mangacolor/title_sensor_cursor"


def register_and_observe(instance: dg.DagsterInstance, preset: dict) -> dict[str, list[str]]:
    """The sensor's tick run directly (the demo runner, tests): same adds, removals and observations.

    The cursor is kept in the instance's key-value store, so a second demo run observes only what changed."""
    cursor = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    tick = source_tick(preset, _known(instance), cursor, Store(preset["artifact_root"]))
    for role, titles in tick.new.items():
        instance.add_dynamic_partitions(PARTITIONS[role].name, titles)
    for role, titles in tick.vanished.items():
        for title in titles:
            instance.delete_dynamic_partition(PARTITIONS[role].name, title)
    for event in tick.observations:
        instance.report_runless_asset_event(event)
    instance.run_storage.set_cursor_values({CURSOR_KEY: tick.cursor})
    return tick.new
