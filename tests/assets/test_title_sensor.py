"""`title_sensor` ticks on the demo corpus: metadata fingerprints, observations only for changed titles
(the cursor), vanished titles removed from the partitions. Page reads are counted at fsspec's local file."""

import contextlib
import shutil
from pathlib import Path

import dagster as dg
from fsspec.implementations.local import LocalFileOpener

from assets.ingest import PARTITIONS, register_and_observe, title_sensor
from assets.resources import SettingsResource
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
                                      resources={"settings": SettingsResource(preset=project["preset"])})
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
    assert len(observed) == len(colour) + len(instance.get_dynamic_partitions("bw_titles"))

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
