"""Evaluation assets materialized in-process on the demo corpus, against a real (SQLite) MLflow registry.

Tiny bundles stand in for `colorizer_final`: registered like it does (alias `candidate`, tags
`variant` and `dagster.run_id`) and written as a store version holding `bundle/`. Their quality is
set by hand (tests/eval/bundles.py): the random-init generator's grey mush is far worse, even under
the random-init Inception, than a generator that passes the page through.
"""

import io
import json

import dagster as dg
import mlflow
import pandas as pd
import pytest
import yaml
from tests.assets.conftest import build, materialize_partitions
from tests.eval.bundles import tiny_bundle

from assets.ingest import register_and_observe
from assets.resources import MlflowResource, StoreResource
from mangacolor.config import load_preset
from mangacolor.eval.report import RANDOM_INIT_NOTE
from mangacolor.io.store import Store
from mangacolor.inference.registry import MODEL_NAME, logged_model_id, promote, register_bundle, version_by_alias
from pipelines.definitions import executable_defs

BW_TITLES = ["night_harbor", "paper_moon"]


@pytest.fixture()
def env(project, tmp_path, monkeypatch):
    import assets.evaluation
    from pipelines import definitions

    if assets.evaluation not in definitions.ASSET_MODULES:  # until the lead registers the module
        monkeypatch.setattr(definitions, "ASSET_MODULES", [*definitions.ASSET_MODULES, assets.evaluation])
    monkeypatch.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", (tmp_path / "mlartifacts").as_uri())
    return {**project, "mlartifacts": (tmp_path / "mlartifacts").as_uri(), "bundles": tmp_path / "bundles"}


def _preset(env, **gate):
    with open(env["preset"]) as f:
        preset = yaml.safe_load(f)
    preset["evaluation"] = {
        **preset["evaluation"], "max_pages": 3, "max_reference_pages": 5, "n_boot": 20, "kid_subsets": 5, "n_samples": 1,
        "gate": {"metric": "fid", "margin": 0.0, "sets": gate.get("sets", ["holdout", "manga109"])},
        "benchmark": {"sizes": [{"size": [64, 48], "runs": 2, "warmup": 0}, {"size": [96, 64], "runs": 1, "warmup": 0}],
                      "devices": ["cpu"]},
    }
    with open(env["preset"], "w") as f:
        yaml.safe_dump(preset, f)
    return build(env)


def _ingest(defs, instance, env):
    register_and_observe(instance, load_preset(env["preset"]))
    materialize_partitions(defs, instance, ["color_pages"], ["azure_tide"])
    materialize_partitions(defs, instance, ["bw_pages"], BW_TITLES)
    assert dg.materialize(executable_defs(defs), selection=["page_splits", "manga109_pages"], instance=instance,
                          resources=defs.resources).success


def _register(env, kind: str, variant: str = "full", alias: str | None = "candidate") -> str:
    """What colorizer_final does: a store version holding bundle/, registered with its tags."""
    mlflow.set_tracking_uri(env["tracking_uri"])
    if mlflow.get_experiment_by_name("mangacolor") is None:
        mlflow.create_experiment("mangacolor", artifact_location=env["mlartifacts"])
    mlflow.set_experiment("mangacolor")
    folder = tiny_bundle(env["bundles"] / f"{kind}-{variant}-{alias}", kind)
    writer = Store(env["artifacts"]).begin("colorizer_final")
    for f in sorted(folder.iterdir()):
        writer.write(f"bundle/{f.name}", f.read_bytes())
    writer.add({"id": "bundle", "status": "ok", "sha256": kind})
    writer.commit(salt=f"{kind}:{variant}")
    with mlflow.start_run():
        return str(register_bundle(folder, alias=alias, tags={"variant": variant, "dagster.run_id": "test"}).version)


def _alias(alias: str) -> str | None:
    mv = version_by_alias(alias)
    return None if mv is None else str(mv.version)


def _run(defs, instance, keys, partition=None, ok=True):
    result = dg.materialize(executable_defs(defs), selection=keys, partition_key=partition, instance=instance,
                            resources=defs.resources, raise_on_error=False)
    assert result.success == ok
    metadata = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        metadata[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    return metadata, checks


def test_reports_for_both_sets_and_the_benchmark_are_written_flagged_and_cached(env):
    defs = _preset(env)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, env)
    v1 = _register(env, "random")
    variant = _register(env, "page", variant="no_drafts", alias=None)

    for set_name in ("holdout", "manga109"):
        meta, checks = _run(defs, instance, ["fid_report"], set_name)
        assert checks == {"candidate_not_worse": True, "holdout_disjoint_eval": True, "random_init_flagged": True}
        m = meta["fid_report"]
        assert m["random_init"] is True and m["random_init_note"] == RANDOM_INIT_NOTE
        assert m["candidate_version"] == v1 and m["champion_version"] == "none" and m["pages"] == 3
        report = Store(env["artifacts"]).read_bytes(m["report_full"]).decode()
        assert RANDOM_INIT_NOTE in report and "paper (their data, their Inception)" in report
        assert [r.data["row"] for r in m["report"].records] and m["report"].records[0].data["fid"] > 0

    st = Store(env["artifacts"])
    for set_name in ("holdout", "manga109"):
        vdir = st.latest_dir("fid_report", set_name)
        table = pd.read_parquet(io.BytesIO(st.read_bytes(f"{vdir}/metrics.parquet")))
        assert list(table["row"]) == ["candidate/auto", "candidate/empty_draft", "no_drafts/auto"]
        assert table.set_index("row").loc["no_drafts/auto", "version"] == variant
        assert table["fid"].notna().all() and table["random_init"].all()
        markdown = st.read_bytes(f"{vdir}/report.md").decode()
        assert markdown.index(RANDOM_INIT_NOTE) < markdown.index("| source")
        assert "bilinear-torch" in markdown and "eigenvalue form" in markdown and "Our (without drafting network)" in markdown
        # the field's protocol: paired metrics where true colours are known (no matched pair is held out here), and
        # CLIP-IS / aesthetic reported absent rather than skipped silently
        assert "Paired metrics" in markdown and "none of the evaluated pages has a matched true colour page" in markdown
        assert "clip_is: absent" in markdown and "aesthetic: absent" in markdown
        assert {"ciede2000", "lpips", "psnr", "ssim", "n_paired"} <= set(table.columns) and (table["n_paired"] == 0).all()
    # The page-preserving variant beats the random-init candidate on the holdout.
    holdout = pd.read_parquet(io.BytesIO(st.read_bytes(f"{st.latest_dir('fid_report', 'holdout')}/metrics.parquet"))).set_index("row")
    assert holdout.loc["no_drafts/auto", "fid_hi"] < holdout.loc["candidate/auto", "fid_lo"]

    meta, checks = _run(defs, instance, ["inference_benchmark", "champion_model"])
    bench = meta["inference_benchmark"]
    assert checks == {"benchmark_complete": True}
    assert bench["cpu_48x64_colorization_s"] > 0 and bench["cpu_64x96_colorization_s"] > 0
    published = " ".join(str(r.data) for r in bench["table"].records)  # the paper's rows beside ours
    assert "2.56" in published and "0.68" in published
    assert meta["champion_model"]["promoted"] and _alias("champion") == v1  # the variant is never promoted

    # Re-evaluation: every feature comes from the cache under the store; the candidate is the champion now.
    again, checks = _run(defs, instance, ["fid_report"], "holdout")
    assert again["fid_report"]["features_computed"] == 0 and again["fid_report"]["features_cached"] > 0
    assert again["fid_report"]["champion_version"] == v1 and "champion already" in again["fid_report"]["gate_reason"]
    assert checks["candidate_not_worse"]

    client = mlflow.MlflowClient(env["tracking_uri"])
    runs = client.search_runs([mlflow.get_experiment_by_name("mangacolor").experiment_id],
                              "tags.`dagster.asset_key` = 'fid_report'")
    assert len(runs) == 3 and all(r.data.tags["fid_note"] == RANDOM_INIT_NOTE for r in runs)
    assert {"candidate/auto/fid", "no_drafts/auto/fid_hi"} <= set(runs[0].data.metrics)
    # The registered candidate shows its evaluation: the numbers are on its logged model too.
    cand = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert "holdout/auto/fid" in {m.key for m in client.get_logged_model(logged_model_id(cand)).metrics}

    # A forced leak: an (older) version of a training stage recorded an evaluated holdout page. The split
    # says nothing (the page is still in the holdout), the record of what was trained on does.
    evaluated = st.latest_manifest("fid_report", "holdout")["id"].iloc[0]
    writer = st.begin("colorizer_step1_snapshots")
    writer.add({"id": f"real_bw:{evaluated}", "status": "ok", "role": "real_bw", "page_id": evaluated})
    writer.commit()
    writer = st.begin("colorizer_step1_snapshots")  # a later version without it: history still counts
    writer.add({"id": "real_bw:other", "status": "ok", "role": "real_bw", "page_id": "other"})
    writer.commit()
    _, checks = _run(defs, instance, ["fid_report"], "holdout", ok=False)
    assert checks["holdout_disjoint_eval"] is False


def test_gate_promotes_a_better_candidate_and_blocks_a_worse_one(env):
    defs = _preset(env, sets=["holdout"])
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, env)
    evaluate = ["fid_report", "champion_model"]  # the evaluate_model job

    first = _register(env, "random")
    meta, checks = _run(defs, instance, evaluate, "holdout")
    assert checks["candidate_not_worse"] and meta["champion_model"]["promoted"]
    assert _alias("champion") == first

    better = _register(env, "page")
    meta, checks = _run(defs, instance, evaluate, "holdout")
    assert checks["candidate_not_worse"] and meta["fid_report"]["champion_version"] == first
    assert _alias("champion") == better

    worse = _register(env, "random")
    meta, checks = _run(defs, instance, evaluate, "holdout", ok=False)
    assert checks["candidate_not_worse"] is False and "champion_model" not in meta  # blocked before promotion
    assert "worse beyond the interval" in meta["fid_report"]["gate_reason"]
    assert _alias("champion") == better and _alias("candidate") == worse

    # Materializing champion_model on its own re-reads the stored report and still refuses.
    meta, _ = _run(defs, instance, ["champion_model"])
    assert not meta["champion_model"]["promoted"] and _alias("champion") == better
    record = json.loads(Store(env["artifacts"]).read_bytes(f"{Store(env['artifacts']).latest_dir('fid_report', 'holdout')}/report.json"))
    assert record["candidate"]["version"] == worse and record["champion"]["version"] == better


def _skipped(result) -> bool:
    return isinstance(result, dg.SkipReason) or (not result.run_requests and bool(result.skip_reason))


def test_sensor_requests_evaluation_of_new_versions_and_schedule_reevaluates_the_champion(env):
    from assets.evaluation import build_manga109_schedule, manga109_weekly, new_model_version_sensor
    from mangacolor.eval.report import ScheduleConfig

    instance = dg.DagsterInstance.ephemeral()
    resources = {"mlflow": MlflowResource(tracking_uri=env["tracking_uri"], artifact_location=env["mlartifacts"]),
                 "store": StoreResource(artifact_root=str(env["artifacts"]))}

    def tick(cursor):
        return new_model_version_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))

    def weekly():
        return manga109_weekly(dg.build_schedule_context(instance=instance, resources=resources))

    assert _skipped(tick(None))  # nothing registered yet
    assert isinstance(weekly(), dg.SkipReason)
    v1 = _register(env, "random")
    result = tick(None)
    assert json.loads(result.cursor) == {"seen": {MODEL_NAME: int(v1)}, "pending": [v1]}
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("benchmark_model", None), ("evaluate_model", "holdout"), ("evaluate_model", "manga109")]
    assert _skipped(tick(result.cursor)) and _skipped(tick(v1))  # an older integer cursor
    assert _skipped(tick(json.dumps({MODEL_NAME: int(v1)})))  # an older cursor: the seen versions alone
    # A variant, registered under its own name: evaluated on both sets (a row beside the candidate), not benchmarked.
    v2 = _register(env, "page", variant="no_adaptation", alias=None)
    variant = tick(result.cursor)
    assert json.loads(variant.cursor)["seen"] == {MODEL_NAME: int(v1), f"{MODEL_NAME}-no_adaptation": int(v2)}
    assert sorted((r.job_name, r.partition_key) for r in variant.run_requests) == [
        ("evaluate_model", "holdout"), ("evaluate_model", "manga109")]
    assert {r.run_config["ops"]["fid_report"]["config"]["model_version"] for r in variant.run_requests} == {v2}

    promote(v1)
    skipped = weekly()
    assert isinstance(skipped, dg.SkipReason) and "manga109_pages" in skipped.skip_message
    writer = Store(env["artifacts"]).begin("manga109_pages")
    writer.add({"id": "m/001", "status": "ok", "sha256": "x"})
    writer.commit()
    request = weekly()
    assert request.partition_key == "manga109" and request.tags["mangacolor/champion_version"] == v1
    assert manga109_weekly.job_name == "reevaluate_manga109" and manga109_weekly.cron_schedule == "0 4 * * 1"
    stopped = build_manga109_schedule(ScheduleConfig(cron="30 2 * * *", status="STOPPED"))
    assert stopped.cron_schedule == "30 2 * * *" and stopped.default_status == dg.DefaultScheduleStatus.STOPPED
    assert MODEL_NAME == "mangacolor-colorizer"


def test_sensor_runs_evaluate_the_version_it_saw_and_promote_it_once(env):
    """@candidate moves on before the evaluation runs start: they still score the version the sensor saw,
    and `champion_model` runs once, after both, not in each set's run."""
    from assets.evaluation import new_model_version_sensor

    defs = _preset(env)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, env)

    def tick(cursor):
        return new_model_version_sensor(dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                resources={"mlflow": defs.resources["mlflow"]}))

    v1 = _register(env, "page")
    first = tick(None)
    evaluations = [r for r in first.run_requests if r.job_name == "evaluate_model"]
    v2 = _register(env, "random")  # registered (and made the candidate) before the runs start
    assert _alias("candidate") == v2
    waiting = tick(first.cursor)
    assert not [r for r in waiting.run_requests if r.job_name == "promote_model"]  # v1's evaluations have not run

    for request in evaluations:
        result = defs.get_job_def("evaluate_model").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config, tags=request.tags)
        materialized = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
        assert set(materialized) == {"fid_report"}  # no promotion inside a set's run
        meta = materialized["fid_report"].event_specific_data.materialization.metadata
        assert meta["candidate_version"].value == v1, request.partition_key
    promotions = [r for r in tick(waiting.cursor).run_requests if r.job_name == "promote_model"]
    assert [(r.run_key, r.tags["mangacolor/model_version"]) for r in promotions] == [(f"v{v1}-promote", v1)]

    result = defs.get_job_def("promote_model").execute_in_process(instance=instance, tags=promotions[0].tags)
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key.to_user_string() == "champion_model" and _alias("champion") == v1


def test_an_imported_model_is_scored_alone_while_there_is_no_candidate(env):
    """The 2021 release imported and registered as mangacolor-colorizer-mc2 (no alias), before the pipeline
    has trained anything: fid_report pinned to it scores it like a candidate; nothing can be promoted."""
    defs = _preset(env)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, env)
    mlflow.set_tracking_uri(env["tracking_uri"])
    mlflow.create_experiment("mangacolor", artifact_location=env["mlartifacts"])  # as _register does
    mlflow.set_experiment("mangacolor")
    folder = tiny_bundle(env["bundles"] / "mc2", "page")
    from mangacolor.inference.imported import register_imported

    info = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**info, "variant": "mc2"}))
    mc2 = register_imported(folder)
    assert mc2.name == f"{MODEL_NAME}-mc2" and _alias("candidate") is None
    config = {"ops": {"fid_report": {"config": {"model_name": mc2.name, "model_version": str(mc2.version)}}}}
    result = dg.materialize(executable_defs(defs), selection=["fid_report"], partition_key="holdout", instance=instance,
                            resources=defs.resources, run_config=config, raise_on_error=False)
    meta = {k: getattr(v, "value", v) for k, v in result.get_asset_materialization_events()[0]
            .event_specific_data.materialization.metadata.items()}
    assert meta["evaluated_row"] == "mc2/auto" and meta["candidate_version"] == "none" and meta["candidate_fid"] > 0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["candidate_not_worse"].passed is False  # no candidate row: nothing the gate could promote
    assert _alias("champion") is None
