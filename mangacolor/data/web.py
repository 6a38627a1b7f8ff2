"""Web sources in the store: one crawl of a title, committed as a version of `scraped_pages`.

The paper's colour pages were scraped from the web (§IV-A-1, Appendix B). The crawler
(`mangacolor.data.scraper`) keeps its state in a persistent local crawl folder per site
(`crawl.sqlite` and the downloaded files), so conditional requests and resume work from one run to
the next; this module turns the crawl of one title into a store version: the ok pages under
`pages/`, one manifest row per page with its URL, HTTP status, ETag, Last-Modified and fetch time,
and quarantined pages with their reason. The version is the content hash of (page id, sha256,
status, reason and every other column except when and how a page was fetched: `UNVERSIONED_COLUMNS`),
so a re-crawl that only got 304s commits the version that is already there.

The `scraped` source kind (`mangacolor.data.sources`) reads these versions back, so a web title is
ingested like any other title, and a newly committed crawl changes exactly that title's fingerprint.

Partition keys: a title is named as in its site description (`titles:`); a title name that two
sites share is prefixed with the site's name (`<site>.<title>`) so neither shadows the other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mangacolor.config import web_sources, work_dir
from mangacolor.data.scraper import Fetcher, PageRecord, SiteConfig, crawl_title, load_site_config
from mangacolor.io.images import ImageError, read_image
from mangacolor.io.store import VersionWriter, safe_part, sha256_bytes


@dataclass(frozen=True)
class WebTitle:
    """One crawled title of a preset's `web_sources`: its partition key and where it comes from."""

    key: str
    source: str
    role: str
    site_path: Path
    site_name: str
    title: str

    def site(self, base_url: str | None = None) -> SiteConfig:
        cfg = load_site_config(self.site_path)
        return cfg.with_base_url(base_url) if base_url else cfg


def web_titles(preset: dict) -> dict[str, WebTitle]:
    """Partition key -> title, for every title of every site in the preset's `web_sources`."""
    found = []
    for src in web_sources(preset):
        site = load_site_config(src.site)
        found.extend((src, site, title) for title in site.titles)
    shared = Counter(title for _, _, title in found)
    out: dict[str, WebTitle] = {}
    for src, site, title in found:
        key = safe_part(title if shared[title] == 1 else f"{site.name}.{title}")
        if key in out:
            raise ValueError(
                f"web_sources: title {title!r} of {src.site} and {out[key].title!r} of {out[key].site_path} both become "
                f"partition {key!r}; rename one in its site description (or list each site once)")
        out[key] = WebTitle(key, src.name, src.role, Path(src.site), site.name, title)
    return out


def default_crawl_dir(site_name: str) -> Path:
    """The persistent crawl folder of a site: the work folder (`config.work_dir`)/crawl/<site>."""
    return work_dir() / "crawl" / safe_part(site_name)


# When and how a page was fetched, not what it is: a re-crawl that changes only these keeps the version.
UNVERSIONED_COLUMNS = ("fetched_at", "http_status", "etag", "last_modified")


@dataclass
class ScrapeSummary:
    pages_ok: int = 0
    quarantined: int = 0
    downloaded: int = 0  # pages whose bytes came in this crawl (HTTP 200)
    not_modified: int = 0  # pages revalidated with a 304
    bytes_downloaded: int = 0
    requests: int = 0  # every request sent: robots.txt, HTML, pages, retries
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (page, reason) of quarantined pages
    refresh_failed: list[tuple[str, str]] = field(default_factory=list)  # (page, why) of ok pages kept from an earlier crawl
    samples: list[np.ndarray] = field(default_factory=list)


def _page_name(record: PageRecord) -> str:
    # Chapter labels come from the site's URLs; the page number is ours. Page 0 is a whole chapter
    # whose HTML could not be read.
    return f"{record.chapter}/{record.page:03d}" if record.page else f"{record.chapter}/chapter"


def scrape_title(
    site: SiteConfig,
    title: WebTitle,
    crawl_dir: str | Path,
    writer: VersionWriter,
    progress: Callable[[PageRecord, int, int], None] | None = None,
    n_samples: int = 4,
    wait_s: float = 0.0,
) -> ScrapeSummary:
    """Crawl `title` into `crawl_dir` (incrementally) and write its pages and rows into `writer`.

    Raises scraper.CrawlError when the title's start page cannot be read. The caller commits.
    """
    fetcher = Fetcher(site)
    records = crawl_title(site, title.title, crawl_dir, progress, fetcher=fetcher, wait_s=wait_s)
    summary = ScrapeSummary(requests=len(fetcher.request_log))
    used: set[str] = set()
    for r in records:
        page = _page_name(r)
        while page in used:
            page += "_"
        used.add(page)
        row = {"id": f"{title.key}/{page}", "title": title.key, "page": page, "source_uri": r.url,
               "sha256": r.sha256, "status": r.status, "reason": r.reason, "role": title.role,
               "site": title.site_name, "site_title": title.title, "chapter": r.chapter,
               "chapter_index": r.chapter_index, "page_number": r.page, "http_status": r.http_status,
               "etag": r.etag, "last_modified": r.last_modified, "fetched_at": r.fetched_at,
               "refresh_error": r.refresh_error}
        if r.status == "ok":
            data = (Path(crawl_dir) / r.path).read_bytes()
            try:
                if sha256_bytes(data) != r.sha256:
                    raise ImageError(f"crawl file {r.path} changed after it was fetched; crawl again")
                img = read_image(data)
            except ImageError as exc:
                row["status"], row["reason"] = "quarantined", exc.reason
                row["path"] = writer.write(f"quarantine/{safe_part(page.replace('/', '-'))}.bin", data)
            else:
                row["height"], row["width"] = img.shape[:2]
                row["bytes"] = len(data)
                ext = r.path.rsplit(".", 1)[-1]
                row["path"] = writer.write(f"pages/{safe_part(page.replace('/', '-'))}.{ext}", data)
                if len(summary.samples) < n_samples:
                    summary.samples.append(img)
        if row["status"] == "ok" and r.refresh_error:
            summary.refresh_failed.append((page, r.refresh_error))
        if row["status"] == "ok":
            summary.pages_ok += 1
            if r.http_status == 304:
                summary.not_modified += 1
            else:
                summary.downloaded += 1
                summary.bytes_downloaded += row["bytes"]
        else:
            summary.quarantined += 1
            summary.reasons.append((page, row["reason"]))
        writer.add(row)
    return summary
