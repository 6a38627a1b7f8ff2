"""Editing one preset section makes exactly the assets it shapes, and what is built from them, stale.

Nothing trains: every asset of the real Definitions gets one materialization reported into a fresh
instance, with the code version and input data versions Dagster itself records for a run (one title,
both evaluation sets). Then the preset copy is edited, the Definitions rebuilt from it, and Dagster's
own stale-status resolver (the one behind the UI's "Unsynced" badges) is asked about every asset.
"""

import dagster as dg
import pytest
import yaml
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG, DATA_VERSION_TAG, INPUT_DATA_VERSION_TAG_PREFIX, INPUT_EVENT_POINTER_TAG_PREFIX,
    CachingStaleStatusResolver, StaleStatus,
)

from assets.common import bw_titles, color_titles, web_titles
from assets.versions import SECTIONS, code_versions
from mangacolor.config import PRESET_DIR
from pipelines.definitions import build_definitions
from dagster._time import get_current_datetime

# What an edit of `refiner:` invalidates: the refiner, everything built from refined pages (CUT and
# the synthetic pages, the drafting networks trained on them and the black-and-white drafts they make),
# the colorizer stages and the evaluation of the model they make.
REFINER_DOWNSTREAM = {
    "refiner_model", "refined_pages[t1]", "cut_model", "synthetic_bw_pages[t1]", "drafting_network", "drafting_network_final",
    "bw_page_drafts", "colorizer_step1_snapshots", "colorizer_step1_finetuned", "selected_snapshots", "pseudolabels",
    "colorizer_step2", "colorizer_final", "fid_report[holdout]", "fid_report[manga109]", "champion_model", "inference_benchmark",
}


@pytest.fixture()
def preset_copy(tmp_path):
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
    preset["artifact_root"] = str(tmp_path / "artifacts")
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def _defs(path, tmp_path) -> dg.Definitions:
    return build_definitions(preset=str(path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _edit(path, section: str, key: str, value) -> None:
    preset = yaml.safe_load(path.read_text())
    preset[section][key] = value
    path.write_text(yaml.safe_dump(preset))


def _resolver(instance, graph) -> CachingStaleStatusResolver:
    """Dagster's stale-status resolver, as the UI's "Unsynced" badges use it."""
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def _partitions(node, instance) -> list[str | None]:
    return node.partitions_def.get_partition_keys(dynamic_partitions_store=instance) if node.partitions_def else [None]


def _report_everything(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[tuple[dg.AssetKey, str | None]]:
    """One materialization per asset partition, parents first, tagged as a Dagster run would tag it."""
    graph = defs.resolve_asset_graph()
    order: list[dg.AssetKey] = []

    def visit(key):
        if key not in order:
            for parent in sorted(graph.get(key).parent_keys):
                visit(parent)
            order.append(key)

    for key in sorted(graph.get_all_asset_keys()):
        visit(key)
    reported = []
    for key in order:
        node = graph.get(key)
        if node.is_external:
            continue
        resolver = _resolver(instance, graph)
        tags = {CODE_VERSION_TAG: node.code_version}
        for parent in node.parent_keys:
            partitions = _partitions(graph.get(parent), instance)
            records = [r for p in partitions if (r := instance.get_latest_data_version_record(parent, graph.get(parent).is_external, p))]
            record = max(records, key=lambda r: r.storage_id, default=None)  # the newest input read, of any partition
            version = resolver.get_current_data_version(parent, partitions[0]).value
            tags[f"{INPUT_DATA_VERSION_TAG_PREFIX}/{parent.to_user_string()}"] = version
            tags[f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{parent.to_user_string()}"] = str(record.storage_id) if record else "NULL"
        for partition in _partitions(node, instance):
            version = f"{key.to_user_string()}-{partition}-1"
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=key, partition=partition, tags={**tags, DATA_VERSION_TAG: version}))
            reported.append((key, partition))
    return reported


def _stale(defs: dg.Definitions, instance, reported) -> set[str]:
    resolver = _resolver(instance, defs.resolve_asset_graph())
    status = {(k, p): resolver.get_status(k, p) for k, p in reported}
    assert StaleStatus.MISSING not in status.values()
    return {k.to_user_string() + (f"[{p}]" if p else "") for (k, p), s in status.items() if s == StaleStatus.STALE}


def test_editing_a_preset_section_makes_exactly_its_assets_and_their_downstream_stale(preset_copy, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    for partitions in (color_titles, bw_titles, web_titles):
        instance.add_dynamic_partitions(partitions.name, ["t1"])
    reported = _report_everything(_defs(preset_copy, tmp_path), instance)
    assert len(reported) == len(SECTIONS) + 1  # fid_report has two partitions, every other asset one
    assert _stale(_defs(preset_copy, tmp_path), instance, reported) == set()  # rebuilt from the same preset: all synced

    _edit(preset_copy, "refiner", "steps", 41)
    defs = _defs(preset_copy, tmp_path)
    assert _stale(defs, instance, reported) == REFINER_DOWNSTREAM
    causes = _resolver(instance, defs.resolve_asset_graph()).get_stale_causes(dg.AssetKey("colorizer_final"))
    assert [c.reason for c in causes] == ["has a new code version"]

    _edit(preset_copy, "refiner", "steps", 40)  # undone: nothing left to rerun
    assert _stale(_defs(preset_copy, tmp_path), instance, reported) == set()

    _edit(preset_copy, "stylegan", "iterations", 61)  # StyleGAN feeds the drafting side, not the synthetic pages
    stale = _stale(_defs(preset_copy, tmp_path), instance, reported)
    assert {"stylegan", "inversion_encoder", "drafting_network", "coloring_drafts[t1]", "colorizer_final"} <= stale
    assert not stale & {"refiner_model", "cut_model", "xdog_pages[t1]", "page_splits", "color_pages[t1]"}


def test_code_version_follows_the_package_version_and_only_the_named_sections():
    parents = {"xdog_pages": [], "refiner_model": [], "refined_pages": ["xdog_pages", "refiner_model"]}
    preset = {"xdog": {"preset": "alacgan"}, "refiner": {"steps": 40}, "device": {"name": "cpu"}}
    base = code_versions(preset, parents, "0.1.0")
    assert code_versions(preset, parents, "0.2.0").keys() == base.keys()
    assert all(a != b for a, b in zip(code_versions(preset, parents, "0.2.0").values(), base.values()))
    assert code_versions({**preset, "device": {"name": "cuda"}}, parents, "0.1.0") == base  # where it runs: not a version
    changed = code_versions({**preset, "refiner": {"steps": 3}}, parents, "0.1.0")
    assert {a for a in base if base[a] != changed[a]} == {"refiner_model", "refined_pages"}
    with pytest.raises(KeyError, match="no entry for \\['new_asset'\\]"):
        code_versions(preset, {"new_asset": []})
