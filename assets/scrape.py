"""The `scraped_pages` asset (README § The asset graph, "ingest"): web galleries crawled politely into the store.

One partition per crawled title (`web_titles`, added by `register_web_titles` from the preset's
`web_sources`). A materialization crawls the title incrementally (a persistent crawl folder keeps
ETags and files, so a re-crawl sends conditional requests) and commits the ok pages with their URL,
HTTP status, ETag and fetch time. The `scraped` source kind reads the latest version, so the
title sensor's observation of `color_sources` / `bw_sources` changes for exactly the title whose
crawl brought new bytes, and only its `color_pages` / `bw_pages` go stale.

Crawling is on request (or `nightly_scrape`, stopped by default), never eager: it talks to
someone else's server.
"""


import dagster as dg
import pandas as pd
from pydantic import Field

from mangacolor.data.scraper import CrawlError, PageRecord
from mangacolor.data.web import UNVERSIONED_COLUMNS, default_crawl_dir, scrape_title, web_titles

from .common import mirrored_dir, stage_asset, web_titles as web_titles_partitions
from .metadata import manifest_uri, samples_md, table_metadata, version_metadata
from .resources import SettingsResource, StoreResource

OWNERS = ["team:data"]


class ScrapeConfig(dg.Config):
    base_url: str | None = Field(
        None, description="crawl the site at this address instead of its base_url (the demo's local server binds a free port)")


def _progress(context: dg.AssetExecutionContext, label: str, every: int = 10):
    def report(record: PageRecord, done: int, total: int) -> None:
        if done == 1 or done % every == 0 or done == total:
            context.log.info(f"{label}: {done}/{total} pages ({record.status}: {record.url})")

    return report


@stage_asset("ingest", "data", owners=OWNERS, kinds=("parquet", "python"), partitions_def=web_titles_partitions,
    description="Pages of one web title crawled by the polite, resumable scraper, with URL, HTTP status, ETag and fetch time per page; refused or broken pages quarantined with their reason.",
)
def scraped_pages(context: dg.AssetExecutionContext, config: ScrapeConfig, settings: SettingsResource,
                  store: StoreResource) -> dg.MaterializeResult:
    key = context.partition_key
    title = web_titles(settings.load()).get(key)
    if title is None:
        raise dg.Failure(f"web title {key!r} is in no site of the preset's web_sources any more; remove the partition or restore the site")
    site = title.site(config.base_url)
    crawl_dir = default_crawl_dir(site.name)
    context.log.info(f"crawling {title.title!r} from {site.start_url(title.title)} (crawl state in {crawl_dir})")
    st = store.get()
    writer = st.begin("scraped_pages", key, unversioned=UNVERSIONED_COLUMNS)
    try:
        with mirrored_dir(crawl_dir):  # on a cluster the crawl state outlives the pod
            summary = scrape_title(site, title, crawl_dir, writer, _progress(context, f"scraped_pages[{key}]"))
    except CrawlError as exc:
        writer.abort()
        raise dg.Failure(str(exc)) from exc
    if summary.pages_ok == 0:
        writer.abort()
        reasons = "; ".join(f"{p}: {r}" for p, r in summary.reasons[:5]) or "no page links found"
        raise dg.Failure(f"no usable page for {key!r} ({reasons}); check chapter_link / page_image in {title.site_path}")
    version, vdir, frame = writer.seal()
    context.log.info(f"{key}: {summary.pages_ok} pages ok ({summary.not_modified} unchanged, {summary.downloaded} downloaded), "
                     f"{summary.quarantined} quarantined, {summary.requests} requests")
    bad = frame[frame["status"] != "ok"][["page", "source_uri", "reason"]]
    return dg.MaterializeResult(
        metadata={
            **version_metadata(st, version, vdir),
            "start_url": dg.MetadataValue.url(site.start_url(title.title)),
            "pages_ok": summary.pages_ok,
            "quarantined": summary.quarantined,
            "requests": summary.requests,
            "pages_downloaded": summary.downloaded,
            "pages_not_modified": summary.not_modified,
            "bytes_downloaded": summary.bytes_downloaded,
            **table_metadata("refresh_failed", pd.DataFrame(summary.refresh_failed, columns=["page", "reason"]).assign(
                kept="last good copy")),
            **table_metadata("quarantine", bad, manifest_uri(st, vdir)),
            "samples": samples_md(st, vdir, summary.samples),
        },
        data_version=dg.DataVersion(version),
    )


def register_web_titles(instance: dg.DagsterInstance, preset: dict) -> list[str]:
    """Add a `web_titles` partition for every title of the preset's web sources; returns the new ones."""
    known = set(instance.get_dynamic_partitions(web_titles_partitions.name))
    new = sorted(set(web_titles(preset)) - known)
    if new:
        instance.add_dynamic_partitions(web_titles_partitions.name, new)
    return new


def web_title_requests(known: set[str], preset: dict) -> list[dg.AddDynamicPartitionsRequest]:
    """For the title sensor: the request adding web titles that are not partitions yet (or none)."""
    new = sorted(set(web_titles(preset)) - known)
    return [web_titles_partitions.build_add_request(new)] if new else []


scrape_job = dg.define_asset_job("scrape_web_titles", selection=[scraped_pages],  # partitioned by its asset
                                 description="Crawl web titles again (conditional requests: only changed pages download).")


@dg.schedule(job=scrape_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Re-crawls every web title nightly; the title sensor then marks what changed stale.")
def nightly_scrape(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for key in context.instance.get_dynamic_partitions(web_titles_partitions.name):
        yield dg.RunRequest(run_key=f"{key}:{day}", partition_key=key)

