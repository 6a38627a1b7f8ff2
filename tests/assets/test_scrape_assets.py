"""`scraped_pages` materialized in-process against the demo gallery served on 127.0.0.1, then ingested as colour pages."""

import hashlib

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from assets.ingest import register_and_observe
from assets.scrape import register_web_titles
from mangacolor.cli import main as cli_main
from mangacolor.config import load_preset
from mangacolor.demo import sitegen
from mangacolor.data.sources import SourceConfig, list_titles
from mangacolor.data.web import web_titles
from mangacolor.io.store import Store
from pipelines.definitions import executable_defs
from pipelines.demo_site import DEMO_SITE_YAML, build_demo_site, scrape_run_config
from tests.assets.conftest import build, materialize_partitions

PROXY_VARS = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
PAGES = 4  # chapter 1: pages 1-3, chapter 2: page 1
SIZE = (192, 128)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def defs(project, monkeypatch):
    import assets.scrape
    from pipelines import definitions

    if assets.scrape not in definitions.ASSET_MODULES:  # until the lead registers the module
        monkeypatch.setattr(definitions, "ASSET_MODULES", [*definitions.ASSET_MODULES, assets.scrape])
    return build(project)


@pytest.fixture()
def site(tmp_path, monkeypatch):
    for var in PROXY_VARS + ["MANGACOLOR_ARTIFACT_ROOT"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "work"))
    root = tmp_path / "site"
    pages = build_demo_site(root, pages_per_title=PAGES, size=SIZE)
    log: list[sitegen.ServedRequest] = []
    with sitegen.serve_site(root, request_log=log) as url:
        yield {"url": url, "log": log, "pages": pages, "root": root}


def _scrape(defs, instance, title, url):
    result = dg.materialize(executable_defs(defs), selection=["scraped_pages"], partition_key=title, instance=instance,
                            resources=defs.resources, run_config=scrape_run_config(url))
    assert result.success
    (mat,) = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return {k: v.value for k, v in mat.metadata.items()}, mat.tags["dagster/data_version"]


def test_scrape_ingest_and_a_changed_page_makes_exactly_its_title_stale(project, defs, site, capsys):
    instance = dg.DagsterInstance.ephemeral()
    preset = load_preset(project["preset"])
    store = Store(project["artifacts"])
    assert register_web_titles(instance, preset) == ["glass-comet", "sky-courier"]
    assert register_web_titles(instance, preset) == []

    meta, version = _scrape(defs, instance, "sky-courier", site["url"])
    frame = store.latest_manifest("scraped_pages", "sky-courier")
    vdir = store.latest_dir("scraped_pages", "sky-courier")
    assert version == store.latest_version("scraped_pages", "sky-courier")
    assert frame["page"].tolist() == ["001/001", "001/002", "001/003", "002/001"]
    assert (frame["status"] == "ok").all() and frame["http_status"].tolist() == [200] * PAGES
    assert frame["source_uri"].tolist() == [f"{site['url']}titles/sky-courier/ch-{c}/page-{p}.png"
                                           for c, p in [("001", 1), ("001", 2), ("001", 3), ("002", 1)]]
    assert frame["etag"].str.startswith('"').all() and frame["fetched_at"].str.endswith("+00:00").all()
    assert frame["last_modified"].notna().all() and (frame["role"] == "color").all()
    assert [store.read_bytes(f"{vdir}/{p}") for p in frame["path"]] == site["pages"]["sky-courier"]
    assert (frame["width"] == SIZE[1]).all() and (frame["height"] == SIZE[0]).all()
    assert meta["pages_ok"] == PAGES and meta["pages_downloaded"] == PAGES and meta["pages_not_modified"] == 0
    assert meta["requests"] >= PAGES + 1 and meta["bytes_downloaded"] == sum(map(len, site["pages"]["sky-courier"]))

    # Again: the persistent crawl folder turns every request into a conditional one, all answered 304.
    site["log"].clear()
    meta, again = _scrape(defs, instance, "sky-courier", site["url"])
    assert site["log"] and all(e.status == 304 and "If-None-Match" in e.headers for e in site["log"])
    assert again == version and store.latest_version("scraped_pages", "sky-courier") == version
    assert meta["pages_not_modified"] == PAGES and meta["pages_downloaded"] == 0 and meta["bytes_downloaded"] == 0

    _scrape(defs, instance, "glass-comet", site["url"])
    # The CLI crawls into the same folder by default, so it too only revalidates.
    site["log"].clear()
    assert cli_main(["scrape", str(DEMO_SITE_YAML), "--title", "glass-comet", "--base-url", site["url"], "--quiet"]) == 0
    assert f"{PAGES} pages ok ({PAGES} unchanged since the last crawl)" in capsys.readouterr().out
    assert all(e.status == 304 for e in site["log"])

    # A colour source reads the scraped titles; a black-and-white one does not.
    web = SourceConfig(name="web", role="color", kind="scraped", uri=str(project["artifacts"] / "scraped_pages"))
    assert list_titles(web) == ["glass-comet", "sky-courier"]
    assert list_titles(web.model_copy(update={"role": "bw"})) == []
    new = register_and_observe(instance, preset)
    assert {"glass-comet", "sky-courier"} <= set(new["color"]) and not {"glass-comet", "sky-courier"} & set(new["bw"])
    materialize_partitions(defs, instance, ["color_pages"], ["sky-courier", "glass-comet"])
    pages = store.latest_manifest("color_pages", "sky-courier")
    assert (pages["status"] == "ok").all() and pages["source_uri"].tolist() == frame["source_uri"].tolist()
    assert pages["sha256"].tolist() == [sha(p) for p in site["pages"]["sky-courier"]]
    assert pages["id"].tolist()[0] == "sky-courier/001/001"

    graph = defs.resolve_asset_graph()

    def status(key, partition):
        return CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance)).get_status(dg.AssetKey(key), partition)

    assert status("color_pages", "sky-courier") == StaleStatus.FRESH
    assert status("color_pages", "glass-comet") == StaleStatus.FRESH

    # The site changes one page: only it downloads, a new version is committed, and after the
    # sensor's observation exactly that title's colour pages are stale.
    changed = sitegen.demo_color_pages(["a-new-page"], 1, size=SIZE)["a-new-page"][0]
    (site["root"] / "titles" / "sky-courier" / "ch-002" / "page-1.png").write_bytes(changed)
    site["log"].clear()
    meta, newer = _scrape(defs, instance, "sky-courier", site["url"])
    assert [e.path for e in site["log"] if e.status == 200] == ["/titles/sky-courier/ch-002/page-1.png"]
    assert newer != version and meta["pages_downloaded"] == 1 and meta["pages_not_modified"] == PAGES - 1
    assert store.latest_manifest("scraped_pages", "sky-courier")["sha256"].iloc[-1] == sha(changed)
    assert status("color_pages", "sky-courier") == StaleStatus.FRESH  # not until the source is observed
    register_and_observe(instance, preset)
    assert status("color_pages", "sky-courier") == StaleStatus.STALE
    assert status("color_pages", "glass-comet") == StaleStatus.FRESH


def test_a_title_in_two_sites_is_prefixed_with_the_site_name(tmp_path):
    raw = yaml.safe_load(DEMO_SITE_YAML.read_text())
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**raw, "name": "mirror", "titles": {"sky-courier": "t/sky/", "solo": "t/solo/"}}))
    preset = {"web_sources": [{"name": "a", "role": "color", "site": str(DEMO_SITE_YAML)},
                              {"name": "b", "role": "bw", "site": str(other)}]}
    titles = web_titles(preset)
    assert sorted(titles) == ["demo-site.sky-courier", "glass-comet", "mirror.sky-courier", "solo"]
    assert titles["mirror.sky-courier"].title == "sky-courier" and titles["mirror.sky-courier"].role == "bw"
    assert titles["mirror.sky-courier"].site().start_url("sky-courier").endswith("/t/sky/")
