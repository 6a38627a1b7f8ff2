"""The crawler keeps what it has (issue 11, point 3): transient failures on a re-crawl, and two crawls at once.

Against the generated gallery served on 127.0.0.1 (mangacolor.demo.sitegen), whose `faults` make
chosen pages time out, reset the connection, answer 503 or 429 on the second crawl.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mangacolor.data import scraper
from mangacolor.demo import sitegen
from mangacolor.data.scraper import CrawlBusy, SiteConfig, crawl_title
from mangacolor.data.web import WebTitle, scrape_title
from mangacolor.io.store import Store, sha256_bytes

DEMO_YAML = Path(__file__).resolve().parents[2] / "configs" / "sites" / "demo_site.yaml"
PROXY_VARS = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
FAULTS = {1: "timeout", 2: "reset", 3: "503"}  # chapter 1's pages; chapter 2's first page gets 429


def _config(base_url: str) -> SiteConfig:
    cfg = scraper.load_site_config(DEMO_YAML).with_base_url(base_url)
    return SiteConfig.model_validate({**cfg.model_dump(), "timeout_s": 0.4, "retries": 1, "backoff": 0.0,
                                      "rate_limit_per_s": 50.0})


@pytest.fixture()
def site(tmp_path, monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "site"
    sitegen.build_site(root, sitegen.demo_pages(["sky-courier"], pages_per_title=6))
    faults: dict[str, str] = {}
    log: list[sitegen.ServedRequest] = []
    with sitegen.serve_site(root, request_log=log, slow_s=1.0, faults=faults) as url:
        yield {"url": url, "faults": faults, "log": log, "cfg": _config(url)}


def _page_path(page: int, chapter: int = 1) -> str:
    return f"/titles/sky-courier/ch-{chapter:03d}/page-{page}.png"


def test_transient_failures_on_a_recrawl_keep_the_last_good_copy(site, tmp_path):
    crawl = tmp_path / "crawl"
    site["faults"][_page_path(3, chapter=2)] = "503"  # a page that has never succeeded yet
    first = {(r.chapter_index, r.page): r for r in crawl_title(site["cfg"], "sky-courier", crawl)}
    assert first[(2, 3)].status == "quarantined" and "HTTP 503" in first[(2, 3)].reason  # nothing to keep
    assert all(r.status == "ok" for k, r in first.items() if k != (2, 3)) and len(first) == 6
    site["faults"].clear()

    for page, kind in FAULTS.items():
        site["faults"][_page_path(page)] = kind
    site["faults"][_page_path(1, chapter=2)] = "429"
    second = {(r.chapter_index, r.page): r for r in crawl_title(site["cfg"], "sky-courier", crawl)}

    expected = {(1, 1): "timeout", (1, 2): "connection", (1, 3): "HTTP 503", (2, 1): "HTTP 429"}
    for key, why in expected.items():
        r = second[key]
        assert r.status == "ok", (key, r.reason)
        assert r.sha256 == first[key].sha256 and r.path == first[key].path
        assert why in r.refresh_error
        assert sha256_bytes((crawl / r.path).read_bytes()) == r.sha256  # the file is still there
    untouched = [r for k, r in second.items() if k not in expected]
    assert untouched and all(r.status == "ok" and r.refresh_error is None for r in untouched)

    # Into the store: the version keeps every page, and its manifest says which refresh failed.
    store = Store(tmp_path / "artifacts")
    title = WebTitle("sky-courier", "web", "color", DEMO_YAML, "demo", "sky-courier")
    writer = store.begin("scraped_pages", "sky-courier")
    summary = scrape_title(site["cfg"], title, crawl, writer)
    _, vdir, frame = writer.commit()
    assert summary.pages_ok == 6 and summary.quarantined == 0
    assert len(summary.refresh_failed) == len(expected)
    failed = frame[frame["refresh_error"].notna()]
    assert sorted(failed["page"]) == ["001/001", "001/002", "001/003", "002/001"]
    assert all(Path(vdir, p).is_file() for p in frame["path"])

    # The site recovers: the next crawl refreshes normally and the notes are gone.
    site["faults"].clear()
    third = crawl_title(site["cfg"], "sky-courier", crawl)
    assert all(r.status == "ok" and r.refresh_error is None for r in third)

    # A definite answer still counts: the site took a page down (404), so it leaves the crawl.
    (tmp_path / "site" / "titles/sky-courier/ch-001/page-3.png").unlink()
    fourth = {(r.chapter_index, r.page): r for r in crawl_title(site["cfg"], "sky-courier", crawl)}
    assert fourth[(1, 3)].status == "quarantined" and "HTTP 404" in fourth[(1, 3)].reason
    assert not (crawl / first[(1, 3)].path).exists()


def test_two_crawls_of_one_site_at_once_the_second_fails_clearly_or_waits(site, tmp_path):
    crawl = tmp_path / "crawl"
    site["faults"][_page_path(1)] = "timeout"  # keeps the first crawl busy for a while
    started = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        def progress(record, done, total):
            started.set()

        results["first"] = crawl_title(site["cfg"], "sky-courier", crawl, progress)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    with pytest.raises(CrawlBusy, match=r"another crawl is using .*crawl \(pid \d+, title 'sky-courier'"):
        crawl_title(site["cfg"], "sky-courier", crawl)
    # Waiting instead: the second crawl (its own User-Agent) sends nothing until the first has finished.
    other = SiteConfig.model_validate({**site["cfg"].model_dump(), "user_agent": "second-crawl"})
    second = crawl_title(other, "sky-courier", crawl, wait_s=60)
    thread.join(60)
    first_times = [r.t for r in site["log"] if r.headers.get("User-Agent") != "second-crawl"]
    second_times = [r.t for r in site["log"] if r.headers.get("User-Agent") == "second-crawl"]
    assert second_times and max(first_times) < min(second_times)
    assert len(results["first"]) == 6 and len(second) == 6
    ok = [r for r in second if (r.chapter_index, r.page) != (1, 1)]  # (1, 1) never answered in time
    assert len(ok) == 5 and all(r.status == "ok" for r in ok)
    # Every page file the index calls ok is on disk: neither crawl removed the other's files.
    assert all((crawl / r.path).is_file() for r in ok)


def test_cli_reports_a_running_crawl_and_exits_1(site, tmp_path, capsys):
    crawl = tmp_path / "crawl"
    with scraper.crawl_lock(crawl, "sky-courier"):
        code = scraper.scrape_cli(DEMO_YAML, "sky-courier", crawl, progress=False, base_url=site["url"])
    assert code == 1
    assert "another crawl is using" in capsys.readouterr().err
    assert not [r for r in site["log"] if "/titles/" in r.path]  # nothing was requested
