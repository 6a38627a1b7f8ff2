"""Ingest assets (DESIGN.md § asset graph, "ingest"): pages in, bad files quarantined, pairs matched, split fixed.

`color_sources` / `bw_sources` are observed (a content hash per title), so a changed page makes
exactly its title's `color_pages` / `bw_pages` partition and what depends on it stale.
"""


import hashlib

import dagster as dg
import pandas as pd

from mangacolor import config as mc_config
from mangacolor.data.datasets import ok_rows
from mangacolor.data.ingest import ingest_items
from mangacolor.data.sources import iter_items, list_titles, title_fingerprint, titles_by_role
from mangacolor.data.splits import holdout_pages, make_splits, training_pages
from mangacolor.io.images import read_image

from .common import bw_titles, color_titles, commits_last, progress_logger, thumbnails_md, version_metadata
from .resources import SettingsResource, StoreResource

EAGER = dg.AutomationCondition.eager()


def _fingerprints(sources_for_title, title: str) -> str:
    h = hashlib.sha256()
    for cfg in sources_for_title:
        h.update(f"{cfg.name}:{title_fingerprint(cfg, title)}".encode())
    return h.hexdigest()[:16]


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
        "quarantine": dg.MetadataValue.md(bad.to_markdown(index=False) if len(bad) else "_none_"),
        "samples": thumbnails_md(_sample_images(store, version_dir, frame)),
    }


def _make_ingest(role: str, partitions_def: dg.DynamicPartitionsDefinition):
    source_key = f"{role}_sources"
    label = {"color": "colour", "bw": "black-and-white"}[role]

    @dg.observable_source_asset(
        name=source_key,
        partitions_def=partitions_def,
        group_name="ingest",
        description=f"The configured {label} sources, observed per title by content hash (a changed page changes the version).",
    )
    def observe(context, settings: SettingsResource) -> dg.DataVersionsByPartition:
        by_title = titles_by_role(mc_config.sources(settings.load()), role)
        known = context.instance.get_dynamic_partitions(partitions_def.name)
        return dg.DataVersionsByPartition({t: _fingerprints(by_title[t], t) for t in known if t in by_title})

    @dg.asset(
        name=f"{role}_pages",
        partitions_def=partitions_def,
        deps=[observe],
        group_name="ingest",
        automation_condition=EAGER,
        kinds={"python", "parquet"},
        description=f"Validated {label} pages of one title with a parquet manifest; unreadable, odd and near-duplicate files quarantined with their reason.",
    )
    @commits_last
    def pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
        preset = settings.load()
        title = context.partition_key
        cfgs = titles_by_role(mc_config.sources(preset), role).get(title)
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


@dg.asset(
    group_name="ingest",
    automation_condition=EAGER,
    kinds={"python", "parquet"},
    description="Manga109 pages read from the official layout (books.txt, images/<title>/<NNN>.jpg): the unseen-style evaluation set.",
)
@commits_last
def manga109_pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
    preset = settings.load()
    cfg = mc_config.manga109_source(preset)
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


@dg.asset(
    group_name="ingest",
    deps=[color_pages, bw_pages],
    automation_condition=EAGER,
    kinds={"python", "parquet"},
    description="The paper's matched black-and-white/colour pairs (§IV-A-2): titles present in both roles, each page aligned by its ink, with alignment and error; rejected candidates kept with their best error.",
)
@commits_last
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
            "pairs": dg.MetadataValue.md(table.to_markdown(index=False) if len(table) else "_none_"),
            "samples": thumbnails_md(samples, "black-and-white | aligned colour"),
        },
        data_version=dg.DataVersion(version),
    )


@dg.asset(
    group_name="ingest",
    deps=[bw_pages, page_pairs],
    automation_condition=EAGER,
    kinds={"python", "parquet"},
    description="Train / holdout split of the black-and-white pages by a fixed seed; the holdout is never read by adaptation or self-training (matched pairs train, but for `paired_holdout_fraction` of them).",
)
@commits_last
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


def source_observations(preset: dict, known: dict[str, set[str]] | None = None):
    """(new titles per role, one observation per title carrying its content hash as data version)."""
    srcs = mc_config.sources(preset)
    new_titles, events = {}, []
    for role in ("color", "bw"):
        found = titles_by_role(srcs, role)
        new_titles[role] = sorted(set(found) - (known or {}).get(role, set()))
        for title, cfgs in found.items():
            events.append(dg.AssetObservation(
                asset_key=f"{role}_sources", partition=title,
                tags={"dagster/data_version": _fingerprints(cfgs, title)},
            ))
    return new_titles, events


PARTITIONS = {"color": color_titles, "bw": bw_titles}


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a title partition when a new title appears in a source, and observes every source by content hash.")
def title_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource) -> dg.SensorResult:
    from assets.scrape import web_title_requests

    preset = settings.load()
    known = {role: set(context.instance.get_dynamic_partitions(p.name)) for role, p in PARTITIONS.items()}
    new, events = source_observations(preset, known)
    requests = [PARTITIONS[role].build_add_request(titles) for role, titles in new.items() if titles]
    requests += web_title_requests(set(context.instance.get_dynamic_partitions("web_titles")), preset)
    return dg.SensorResult(dynamic_partitions_requests=requests, asset_events=events)


def register_and_observe(instance: dg.DagsterInstance, preset: dict) -> dict[str, list[str]]:
    """What the sensor does, run directly: add every title as a partition and record its content hash."""
    new, events = source_observations(preset)
    for role, titles in new.items():
        instance.add_dynamic_partitions(PARTITIONS[role].name, titles)
    for event in events:
        instance.report_runless_asset_event(event)
    return new
