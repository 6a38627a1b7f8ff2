"""`title_sensor` ticks on the demo corpus: metadata fingerprints, observations only for changed titles
(the cursor), vanished titles removed from the partitions. Page reads are counted at fsspec's local file."""

import contextlib
import shutil
from pathlib import Path

import dagster as dg
from fsspec.implementations.local import LocalFileOpener

from assets.ingest import PARTITIONS, register_and_observe, title_sensor
from assets.resources import SettingsResource, StoreResource
from mangacolor.config import load_preset
from mangacolor.io.images import encode_png, read_image


@contextlib.contextmanager
def page_reads(root: Path):
    """Bytes read through fsspec from files under `root` (the source pages), by path."""
    seen: dict[str, int] = {}
    original = LocalFileOpener.read

    def read(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        if str(self.path).startswith(str(root)):
            seen[self.path] = seen.get(self.path, 0) + len(data)
        return data

    LocalFileOpener.read = read
    try:
        yield seen
    finally:
        LocalFileOpener.read = original


def _tick(instance, project, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"settings": SettingsResource(preset=project["preset"]),
                                                 "store": StoreResource(artifact_root=str(project["artifacts"]))})
    result = title_sensor(context)
    for request in result.dynamic_partitions_requests or []:  # what the daemon does with them
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    observed = sorted((e.asset_key.to_user_string(), e.partition) for e in result.asset_events)
    return result, observed


def _requests(result, kind) -> dict[str, list[str]]:
    return {r.partitions_def_name: sorted(r.partition_keys) for r in result.dynamic_partitions_requests or [] if isinstance(r, kind)}


def test_a_tick_reads_no_page_observes_only_what_changed_and_drops_vanished_titles(project):
    instance = dg.DagsterInstance.ephemeral()
    data = project["data"]

    first, observed = _tick(instance, project, None)
    colour = sorted(instance.get_dynamic_partitions("color_titles"))
    assert "azure_tide" in colour and ("color_sources", "azure_tide") in observed
    sources = [o for o in observed if o[0].endswith("_sources")]
    assert len(sources) == len(colour) + len(instance.get_dynamic_partitions("bw_titles"))
    assert ("bw_pages_digest", None) in observed and len(observed) == len(sources) + 6  # the fan-in digests, once

    with page_reads(data) as reads:
        quiet, observed = _tick(instance, project, first.cursor)
    assert observed == [] and not _requests(quiet, dg.AddDynamicPartitionsRequest) and reads == {}
    assert quiet.cursor == first.cursor

    page = data / "color" / "azure_tide" / "003.png"
    img = read_image(page)
    img[:20, :20] = 0
    page.write_bytes(encode_png(img))
    with page_reads(data) as reads:
        changed, observed = _tick(instance, project, quiet.cursor)
    assert observed == [("color_sources", "azure_tide")] and reads == {}
    data_version = changed.asset_events[0].tags["dagster/data_version"]
    assert data_version != [e for e in first.asset_events if e.partition == "azure_tide"][0].tags["dagster/data_version"]

    shutil.rmtree(data / "color" / "verdant_sky")
    gone, observed = _tick(instance, project, changed.cursor)
    assert _requests(gone, dg.DeleteDynamicPartitionsRequest) == {"color_titles": ["verdant_sky"]} and observed == []
    assert "verdant_sky" not in instance.get_dynamic_partitions("color_titles")
    assert set(instance.get_dynamic_partitions("color_titles")) == set(colour) - {"verdant_sky"}


def test_the_demo_runner_shares_the_tick_and_its_cursor(project):
    instance = dg.DagsterInstance.ephemeral()
    preset = load_preset(project["preset"])
    assert "azure_tide" in register_and_observe(instance, preset)["color"]
    seen = len(instance.fetch_observations(dg.AssetKey("color_sources"), limit=1000).records)
    assert seen == len(instance.get_dynamic_partitions(PARTITIONS["color"].name))
    with page_reads(project["data"]) as reads:
        assert register_and_observe(instance, preset) == {"color": [], "bw": []}
    assert reads == {} and len(instance.fetch_observations(dg.AssetKey("color_sources"), limit=1000).records) == seen


def test_a_fan_in_stage_goes_stale_past_dagsters_100_partition_limit(project):
    """120 black-and-white titles (bw_pages written to the store and reported, no per-title runs: cheap),
    page_splits materialized for real, then one title changes: page_splits is stale through bw_pages_digest,
    although Dagster no longer follows the 120 partition edges."""
    from dagster._core.definitions.data_version import (
        SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD, CachingStaleStatusResolver, StaleStatus)
    from dagster._core.loader import LoadingContextForTest

    from assets.digests import digest_observations
    from mangacolor.io.store import Store
    from pipelines.definitions import executable_defs
    from tests.assets.conftest import build

    titles = [f"t{i:03d}" for i in range(120)]
    assert len(titles) > SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD
    defs = build(project)
    instance = dg.DagsterInstance.ephemeral()
    store = Store(project["artifacts"])
    instance.add_dynamic_partitions("bw_titles", titles)

    def commit(title: str, sha: str) -> None:
        writer = store.begin("bw_pages", title)
        writer.add({"id": f"{title}/001", "title": title, "page": "001", "path": "001.png", "sha256": sha, "status": "ok"})
        version, _, _ = writer.commit()
        instance.report_runless_asset_event(dg.AssetMaterialization("bw_pages", partition=title, tags={"dagster/data_version": version}))

    def observe_digests(state: dict) -> dict:
        events, state = digest_observations(store, state)
        for event in events:
            instance.report_runless_asset_event(event)
        return state

    for title in titles:
        commit(title, "a")
    state = observe_digests({})
    assert dg.materialize(executable_defs(defs), selection=["page_splits"], instance=instance, resources=defs.resources).success
    graph = defs.resolve_asset_graph()

    def resolver():
        return CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))

    assert resolver().get_status(dg.AssetKey("page_splits")) == StaleStatus.FRESH
    commit("t007", "b")
    assert observe_digests(state) != state
    assert resolver().get_status(dg.AssetKey("page_splits")) == StaleStatus.STALE
    causes = {c.dependency.asset_key.to_user_string() for c in resolver().get_stale_causes(dg.AssetKey("page_splits")) if c.dependency}
    assert causes == {"bw_pages_digest"}  # not bw_pages[t007]: Dagster skipped the 120 partition edges
