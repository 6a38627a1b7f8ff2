"""The web crawler against the generated gallery served on 127.0.0.1 (mangacolor.demo.sitegen)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import statistics
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from mangacolor.data import scraper
from mangacolor.demo import sitegen
from mangacolor.data.scraper import CrawlIndex, Fetcher, Response, SiteConfig, crawl_title

DEMO_YAML = Path(__file__).resolve().parents[2] / "configs" / "sites" / "demo_site.yaml"
PROXY_VARS = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
SLOW_S = 1.2
TIMEOUT_S = 0.4


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def site_pages() -> dict[str, list[bytes]]:
    pages = sitegen.demo_pages(["sky-courier", "glass-comet", "trap-house"], pages_per_title=6)
    pages["glass-comet"] = pages["glass-comet"][:4]
    pages["trap-house"] = pages["trap-house"][:2]
    return pages


def config(base_url: str, **updates) -> SiteConfig:
    cfg = scraper.load_site_config(DEMO_YAML).with_base_url(base_url)
    values = {**cfg.model_dump(), "timeout_s": TIMEOUT_S,
              "titles": {**cfg.titles, "trap-house": "titles/trap-house/"}, **updates}
    return SiteConfig.model_validate(values)


def image_paths(entries) -> list[str]:
    return [e.path for e in entries if e.path.endswith(".png")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One served gallery for the read-only tests; its request log is shared, so tests slice it."""
    root = tmp_path_factory.mktemp("site")
    pages = site_pages()
    sitegen.build_site(root, pages, trap_chapter_for="trap-house")
    log: list[sitegen.ServedRequest] = []
    with pytest.MonkeyPatch.context() as mp:
        for var in PROXY_VARS:  # the crawl must talk to 127.0.0.1 directly
            mp.delenv(var, raising=False)
        with sitegen.serve_site(root, request_log=log, slow_s=SLOW_S) as base_url:
            yield {"url": base_url, "log": log, "pages": pages, "root": root}


@pytest.fixture(scope="module")
def clean_crawl(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    before = len(site["log"])
    fetcher = Fetcher(config(site["url"]))
    records = crawl_title(fetcher.cfg, "sky-courier", out, fetcher=fetcher)
    return {"records": records, "served": site["log"][before:], "fetcher": fetcher, "out": out}


@pytest.fixture(scope="module")
def trap_crawl(site, tmp_path_factory):
    base = tmp_path_factory.mktemp("traps")
    out = base / "deep" / "er" / "out"  # so that ../../ from out_dir would still land inside `base`
    before = len(site["log"])
    records = crawl_title(config(site["url"]), "trap-house", out)
    return {"records": {(r.chapter_index, r.page): r for r in records}, "served": site["log"][before:],
            "out": out, "base": base}


# --- the site description and the pure helpers ----------------------------------------------------


def test_site_description_is_validated_data(tmp_path):
    cfg = scraper.load_site_config(DEMO_YAML)
    assert cfg.start_url("glass-comet") == "http://127.0.0.1:8000/titles/glass-comet/"
    assert cfg.user_agent.startswith("mangacolor-scraper/") and "(+http" in cfg.user_agent

    bad = tmp_path / "bad.yaml"
    for change, message in [
        ({"page_image": r"/page-(\d+"}, "regular expression"),
        ({"page_image": r"/page-\d+\.png$"}, "no (?P<page>"),  # ordered by number without the group
        ({"css_selector": "img.page"}, "css_selector"),  # unknown keys are refused, not ignored
        ({"titles": {"x": "http://elsewhere.example/x/"}}, "not base_url's"),
        ({"rate_limit_per_s": 0}, "rate_limit_per_s"),
    ]:
        bad.write_text(yaml.safe_dump({**yaml.safe_load(DEMO_YAML.read_text()), **change}))
        with pytest.raises(ValueError) as err:
            scraper.load_site_config(bad)
        assert str(bad) in str(err.value) and message in str(err.value), change
    with pytest.raises(FileNotFoundError, match="demo_site.yaml"):
        scraper.load_site_config(tmp_path / "missing.yaml")


def test_links_are_extracted_deduplicated_and_ordered():
    html = """<html><head><base href="/t/x/"></head><body>
      <a href="ch-10/">10</a> <a href="ch-2/#top">2</a> <a href="/t/x/ch-2/">2 again</a>
      <a href="javascript:void(0)">js</a> <a href="ch-1/index.html">1</a> <a href="/about">about</a>
      <img src="/logo.png"> <img data-src="p/page-3.png" src="spinner.gif"> <img src="p/page-1.png">
      </body></html>"""
    anchors, images = scraper.extract_links(html, "http://h:1/somewhere/else.html")
    pattern = r"/ch-(?P<chapter>\d+)/(?:index\.html)?$"
    by_doc = [u for u, _ in scraper.select_links(anchors, pattern, "document", "chapter")]
    by_num = [u for u, _ in scraper.select_links(anchors, pattern, "number", "chapter")]
    assert by_doc == ["http://h:1/t/x/ch-10/", "http://h:1/t/x/ch-2/", "http://h:1/t/x/ch-1/index.html"]
    assert by_num == ["http://h:1/t/x/ch-1/index.html", "http://h:1/t/x/ch-2/", "http://h:1/t/x/ch-10/"]
    pages = scraper.select_links(images, r"/page-(?P<page>\d+)\.png$", "number", "page")
    assert [u for u, _ in pages] == ["http://h:1/t/x/p/page-1.png", "http://h:1/t/x/p/page-3.png"]


@pytest.mark.parametrize("url", [
    "http://h/../../etc/passwd.png", "http://h/%2e%2e/%2e%2e/etc/passwd.png", "http://h/a/..%2f..%2fx.png",
    "http://h/C:\\Windows\\x.png", "http://h/\u2215etc\u2215passwd.png", "http://h/" + "a" * 5000 + ".png",
])
def test_local_names_never_come_from_the_url(url):
    name = scraper.local_name(url, "png")
    assert re.fullmatch(r"[0-9a-f]{32}\.png", name)
    with pytest.raises(ValueError, match="extension"):
        scraper.local_name(url, "png/../../x")


def _encoded(fmt: str) -> bytes:
    img = np.full((16, 16, 3), 200, np.uint8)
    if fmt == "gif":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="GIF")
        return buf.getvalue()
    return cv2.imencode("." + fmt, img)[1].tobytes()


def test_image_checks_keep_real_images_and_name_the_problem_otherwise():
    def check(body: bytes, ctype: str | None):
        return scraper.check_image(Response("http://h/x", 200, {"content-type": ctype} if ctype else {}, body))

    for fmt, ctype, ext in [("png", "image/png", "png"), ("jpg", "image/jpeg", "jpg"),
                            ("webp", "image/webp", "webp"), ("gif", "image/gif", "gif"),
                            ("jpg", "image/png", "jpg"), ("png", "application/octet-stream", "png")]:
        assert check(_encoded(fmt), ctype) == (ext, None), (fmt, ctype)
    page = b"<!DOCTYPE html><html><body>login</body></html>"
    assert "HTML" in check(page, "image/png")[1]
    assert "not one of" in check(_encoded("png"), "text/plain")[1]
    assert "not PNG/JPEG/WebP/GIF" in check(b"\x00\x01garbage" * 10, "image/png")[1]
    assert "undecodable" in check(_encoded("png")[:60], "image/png")[1]


# --- crawling the served site -----------------------------------------------------------------------


def test_crawl_gets_exactly_the_allowed_pages_in_order(site, clean_crawl):
    records, out = clean_crawl["records"], clean_crawl["out"]
    assert [(r.chapter, r.page) for r in records] == [("001", 1), ("001", 2), ("001", 3),
                                                      ("002", 1), ("002", 2), ("002", 3)]
    assert all(r.status == "ok" and r.http_status == 200 and r.reason is None for r in records)
    source = site["pages"]["sky-courier"]
    assert [(out / r.path).read_bytes() for r in records] == source  # byte for byte, in reading order
    assert [r.sha256 for r in records] == [sha(p) for p in source]
    assert all(r.etag and r.last_modified and r.fetched_at.endswith("+00:00") for r in records)

    served = clean_crawl["served"]
    paths = [e.path for e in served]
    assert paths.count("/robots.txt") == 1
    assert not [p for p in paths if p.startswith("/drafts/")]  # the robots-forbidden preview chapter
    assert "/static/logo.png" not in paths and "/titles/glass-comet/" not in paths
    assert all(e.headers["User-Agent"].startswith("mangacolor-scraper/") for e in served)


def test_crawl_spaces_request_starts_by_the_rate_limit(clean_crawl):
    interval = 1.0 / clean_crawl["fetcher"].cfg.rate_limit_per_s
    starts = [t for t, _ in clean_crawl["fetcher"].request_log]
    assert len(starts) >= 10
    gaps = np.diff(starts)
    assert gaps.min() >= interval - 1e-6, gaps  # the client's own clock: exact
    # The server's clock sees the same spacing, blurred only by thread scheduling.
    arrivals = [e.t for e in clean_crawl["served"]]
    assert len(arrivals) == len(starts)
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * interval - 0.05
    assert statistics.median(np.diff(arrivals)) >= 0.9 * interval


def test_bad_responses_are_quarantined_with_reasons(trap_crawl):
    rec, served = trap_crawl["records"], trap_crawl["served"]
    trap = max(c for c, _ in rec)

    def requests_to(path):
        return [e for e in served if e.path == path]

    assert rec[(trap, 1)].status == "ok"
    # 429 then success, the retry no sooner than the Retry-After: 1 the server asked for.
    assert rec[(trap, 2)].status == "ok" and rec[(trap, 2)].http_status == 200
    first, second = requests_to("/_special/retry/page-2.png")
    assert (first.status, second.status) == (429, 200) and second.t - first.t >= 0.99
    assert rec[(trap, 3)].status == "quarantined" and "timeout" in rec[(trap, 3)].reason
    assert len(requests_to("/_special/slow/page-3.png")) == 3  # retried twice
    assert rec[(trap, 4)].status == "quarantined" and "HTML" in rec[(trap, 4)].reason
    assert "redirect to host 'localhost' refused" in rec[(trap, 5)].reason
    assert not requests_to("/_special/landing/page-5.png")
    assert rec[(trap, 6)].status == "ok"  # a same-host redirect is followed
    assert "robots.txt" in rec[(trap, 7)].reason and not requests_to("/drafts/page-7.png")
    assert "too large" in rec[(trap, 10)].reason
    assert rec[(trap, 11)].reason == "HTTP 503 after 3 attempts" and rec[(trap, 11)].http_status == 503
    quarantined = [r for r in rec.values() if r.status == "quarantined"]
    assert all(r.path is None and r.sha256 is None and r.reason for r in quarantined)
    assert len(quarantined) == 6 and not list((trap_crawl["out"] / "pages").glob("*.tmp*"))


def test_malicious_urls_never_write_outside_out_dir(trap_crawl):
    rec, out, base = trap_crawl["records"], trap_crawl["out"], trap_crawl["base"]
    trap = max(c for c, _ in rec)
    assert rec[(trap, 8)].url.endswith("/../../etc/page-8.png")
    assert rec[(trap, 9)].url.endswith("/%2e%2e/%2e%2e/etc/page-9.png")
    for page in (8, 9):
        assert rec[(trap, page)].status == "ok"  # the server did send an image: it is kept, safely named
        assert re.fullmatch(r"pages/[0-9a-f]{32}\.png", rec[(trap, page)].path)
    written = [p for p in base.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert not [p for p in base.rglob("*") if p.name in ("etc", "passwd") or "page-" in p.name or "%" in p.name]


def test_redirect_to_a_listed_host_is_followed(site):
    try:
        if socket.gethostbyname("localhost") != "127.0.0.1":
            pytest.skip("localhost does not resolve to 127.0.0.1 here")
    except OSError:
        pytest.skip("localhost does not resolve here")
    fetcher = Fetcher(config(site["url"], allowed_hosts=["localhost"]))
    resp = fetcher.get(site["url"] + "_special/away/page-5.png")
    assert resp.error is None and resp.status == 200 and resp.url.startswith("http://localhost:")
    assert scraper.check_image(resp) == ("png", None)
    # robots.txt is read per host: the redirect target's own robots.txt was fetched too.
    assert [u for _, u in fetcher.request_log if u.endswith("/robots.txt")] == [
        site["url"] + "robots.txt", resp.url.split("/_special")[0] + "/robots.txt"]


def test_second_run_only_revalidates_and_a_changed_page_is_fetched_again(tmp_path, monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    pages = site_pages()
    sitegen.build_site(tmp_path / "site", pages)
    log: list[sitegen.ServedRequest] = []
    out = tmp_path / "out"
    with sitegen.serve_site(tmp_path / "site", request_log=log) as base_url:
        cfg = config(base_url)
        first = crawl_title(cfg, "glass-comet", out)
        stamps = {r.path: os.stat(out / r.path).st_mtime_ns for r in first}
        log.clear()
        second = crawl_title(cfg, "glass-comet", out)
        assert log and all("If-None-Match" in e.headers and "If-Modified-Since" in e.headers for e in log)
        assert all(e.status == 304 for e in log)
        key = lambda rs: [(r.url, r.sha256, r.path, r.status) for r in rs]  # noqa: E731
        assert key(second) == key(first)
        assert all(r.http_status == 304 for r in second)
        assert {r.path: os.stat(out / r.path).st_mtime_ns for r in second} == stamps  # nothing rewritten

        changed = sitegen.demo_page(31337)
        (tmp_path / "site" / "titles" / "glass-comet" / "ch-002" / "page-1.png").write_bytes(changed)
        log.clear()
        third = crawl_title(cfg, "glass-comet", out)
    assert [e.path for e in log if e.status == 200] == ["/titles/glass-comet/ch-002/page-1.png"]
    assert [r.sha256 != s.sha256 for r, s in zip(third, second)] == [False, False, False, True]
    assert third[3].sha256 == sha(changed) and (out / third[3].path).read_bytes() == changed


def test_interrupted_crawl_resumes_without_downloading_finished_pages(site, tmp_path):
    out = tmp_path / "out"
    seen = []

    def stop_after_two(record, done, total):
        seen.append((record.page, done, total))
        if done == 2:
            raise KeyboardInterrupt

    before = len(site["log"])
    with pytest.raises(KeyboardInterrupt):
        crawl_title(config(site["url"]), "sky-courier", out, stop_after_two)
    downloaded = set(image_paths(e for e in site["log"][before:] if e.status == 200))
    assert 2 <= len(downloaded) < 6 and seen[-1][2] == 6

    index = CrawlIndex(out)
    committed = {r for r in downloaded if (index.get(site["url"] + r.lstrip("/")) or {}).get("status") == "ok"}
    index.close()
    assert committed == downloaded  # every page that came in was committed before the crawl stopped

    before = len(site["log"])
    records = crawl_title(config(site["url"]), "sky-courier", out)
    again = image_paths(site["log"][before:])
    assert not set(again) & downloaded and len(again) == 6 - len(downloaded)
    assert [(out / r.path).read_bytes() for r in records] == site["pages"]["sky-courier"]


def test_scrape_cli_writes_a_manifest_and_reports_bad_arguments(site, tmp_path, capsys):
    out = tmp_path / "out"
    assert scraper.scrape_cli(DEMO_YAML, "glass-comet", out, progress=False, base_url=site["url"]) == 0
    frame = pd.read_parquet(out / "manifests" / "glass-comet" / "manifest.parquet")
    assert list(frame.columns) == list(scraper.records_frame([]).columns)
    assert len(frame) == 4 and (frame["status"] == "ok").all() and frame["http_status"].tolist() == [200] * 4
    assert frame["page"].tolist() == [1, 2, 3, 1]
    assert "4 pages ok" in capsys.readouterr().out

    assert scraper.scrape_cli(DEMO_YAML, "no-such-title", out, progress=False, base_url=site["url"]) == 2
    assert "no-such-title" in capsys.readouterr().err
    assert scraper.scrape_cli(tmp_path / "nope.yaml", "glass-comet", out, progress=False) == 2
