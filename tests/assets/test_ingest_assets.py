"""Ingest assets materialized in-process on the demo corpus; assertions on what was written."""

import dagster as dg
import numpy as np
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from assets.ingest import register_and_observe
from mangacolor.config import load_preset
from mangacolor.io.images import encode_png, read_image
from mangacolor.io.store import Store
from pipelines.definitions import executable_defs
from tests.assets.conftest import build, materialize_partitions

INGEST = ["color_pages", "bw_pages", "page_pairs", "page_splits", "manga109_pages"]


def _materialize_ingest(defs, instance):
    titles = {r: instance.get_dynamic_partitions(f"{r}_titles") for r in ("color", "bw")}
    materialize_partitions(defs, instance, ["color_pages"], titles["color"])
    materialize_partitions(defs, instance, ["bw_pages"], titles["bw"])
    return dg.materialize(executable_defs(defs), selection=["page_pairs", "page_splits", "manga109_pages"],
                          instance=instance, resources=defs.resources)


def test_ingest_graph_writes_manifests_pairs_and_split(project):
    defs = build(project)
    instance = dg.DagsterInstance.ephemeral()
    new = register_and_observe(instance, load_preset(project["preset"]))
    assert new["color"] == ["azure_tide", "crimson_oath", "danbooru", "ember_blade", "verdant_sky"]
    assert "iron_lantern" in new["bw"]  # the CBZ chapter title
    result = _materialize_ingest(defs, instance)
    assert result.success
    store = Store(project["artifacts"])
    danbooru = store.latest_manifest("color_pages", "danbooru")
    assert 0 < len(danbooru) < 12  # tag filter dropped the monochrome/sketch illustrations
    pairs = store.latest_manifest("page_pairs")
    assert pairs["matched"].sum() >= 7 and (~pairs["matched"].astype(bool)).sum() >= 1
    aligned = read_image(store.read_bytes(f"{store.latest_dir('page_pairs')}/{pairs[pairs.matched].iloc[0].path}"))
    assert aligned.shape[:2] == (int(pairs[pairs.matched].iloc[0].height), int(pairs[pairs.matched].iloc[0].width))
    splits = store.latest_manifest("page_splits")
    held = set(splits.loc[splits.split == "holdout", "id"])
    matched = set(pairs.loc[pairs.matched.astype(bool), "bw_id"])
    # the demo preset holds out a quarter of the matched pairs (paired_holdout_fraction): fid_report's paired test set
    assert held and len(held & matched) == round(len(matched) * 0.25)
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    m109 = store.latest_manifest("manga109_pages")
    assert (m109.status == "ok").all() and (m109.width > m109.height).all()  # double-page spreads


def test_changed_page_makes_exactly_its_title_and_downstream_stale(project):
    defs = build(project)
    instance = dg.DagsterInstance.ephemeral()
    preset = load_preset(project["preset"])
    register_and_observe(instance, preset)
    assert _materialize_ingest(defs, instance).success
    graph = defs.resolve_asset_graph()

    def status(key, partition=None):
        return CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance)).get_status(dg.AssetKey(key), partition)

    assert status("color_pages", "azure_tide") == StaleStatus.FRESH
    assert status("page_pairs") == StaleStatus.FRESH

    page = project["data"] / "color" / "azure_tide" / "003.png"
    img = read_image(page)
    img[:20, :20] = 0
    page.write_bytes(encode_png(img))
    register_and_observe(instance, preset)

    assert status("color_pages", "azure_tide") == StaleStatus.STALE
    assert status("color_pages", "crimson_oath") == StaleStatus.FRESH
    assert status("bw_pages", "night_harbor") == StaleStatus.FRESH
    # Dagster reports a partitioned -> unpartitioned dependency as stale once the upstream
    # partition has a new data version, i.e. after the changed title is re-ingested.
    materialize_partitions(defs, instance, ["color_pages"], ["azure_tide"])
    assert status("color_pages", "azure_tide") == StaleStatus.FRESH
    assert status("page_pairs") == StaleStatus.STALE
    causes = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance)).get_stale_causes(dg.AssetKey("page_pairs"))
    # ... and through color_pages_digest, the edge that still holds past 100 titles (assets/digests.py).
    assert {(c.dependency.asset_key.to_user_string(), c.dependency.partition_key) for c in causes} == {
        ("color_pages", "azure_tide"), ("color_pages_digest", None)}
    assert status("color_pages", "crimson_oath") == StaleStatus.FRESH


def test_definitions_validate_from_the_workspace():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
