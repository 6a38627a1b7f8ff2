"""MLflow as the assets use it: an explicit client per store, one run per materialization, dataset inputs,
asynchronous metrics flushed at run end, and evaluation metrics on the registered version (real SQLite stores)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from assets.resources import MlflowResource
from mangacolor.inference.registry import log_version_metrics, logged_model_id, register_bundle
from mangacolor.tracking import active_run, artifact_location, system_metrics_enabled


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """One empty, migrated MLflow database: each store below starts as a copy (creating one costs seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, migrated):
    def make(name: str) -> str:
        (tmp_path / name).mkdir()
        shutil.copy(migrated, tmp_path / name / "mlflow.db")
        return f"sqlite:///{tmp_path / name / 'mlflow.db'}"

    return make


def _runs(uri: str, experiment: str = "mangacolor"):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@dg.asset
def tracked(mlflow: MlflowResource) -> None:
    with mlflow.run(dg.AssetExecutionContext.get(), params={"lr": 0.1}) as tracker:
        for step in range(40):
            tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        tracker.log_dataset(pd.DataFrame({"id": ["p1", "p2"], "uri": ["/s/p1.png", "/s/p2.png"], "page": [1, None]}),
                            name="train", source="/s")
        mlflow_fluent_param = __import__("mlflow")  # a fluent call inside the run goes to this resource's store
        mlflow_fluent_param.log_param("fluent", "yes")


def test_two_tracking_uris_in_one_process_each_get_their_own_runs(tmp_path, monkeypatch, store):
    elsewhere = "sqlite:///" + str(tmp_path / "elsewhere.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    before = mlflow.get_tracking_uri()  # the environment's, or one an earlier test of this process set
    a, b = store("a"), store("b")
    for uri in (a, b, a):
        assert dg.materialize([tracked], resources={"mlflow": MlflowResource(tracking_uri=uri)}).success
    runs_a, runs_b = _runs(a), _runs(b)
    assert (len(runs_a), len(runs_b)) == (2, 1)
    for run in runs_a + runs_b:
        assert run.data.params == {"lr": "0.1", "fluent": "yes"}
        assert run.info.status == "FINISHED"
    # The process-wide URI and the environment's are what they were, and nothing went to the environment's store.
    assert mlflow.get_tracking_uri() == before and os.environ["MLFLOW_TRACKING_URI"] == elsewhere
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_client_of_another_store_inside_an_open_run_logs_there(store):
    a, b = store("a"), store("b")
    res_a, res_b = MlflowResource(tracking_uri=a), MlflowResource(tracking_uri=b)
    ca, cb = res_a.client(), res_b.client()
    run_a = ca.create_run(res_a.experiment_id(ca)).info.run_id
    run_b = cb.create_run(res_b.experiment_id(cb)).info.run_id
    with active_run(ca, run_a, system_metrics=False) as ta:
        with active_run(cb, run_b, system_metrics=False) as tb:
            tb.log_metrics({"m": 2.0})
            mlflow.log_param("where", "b")  # fluent: the innermost scope
        ta.log_metrics({"m": 1.0})
        mlflow.log_param("where", "a")
    assert ca.get_run(run_a).data.metrics == {"m": 1.0} and ca.get_run(run_a).data.params == {"where": "a"}
    assert cb.get_run(run_b).data.metrics == {"m": 2.0} and cb.get_run(run_b).data.params == {"where": "b"}


def test_async_step_metrics_are_all_there_when_the_run_ends_and_the_manifest_is_a_training_input(store):
    uri = store("s")
    assert dg.materialize([tracked], resources={"mlflow": MlflowResource(tracking_uri=uri)}).success
    (run,) = _runs(uri)
    client = mlflow.MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(40))
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "train" and '"/s"' in inp.dataset.source
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert "num_rows" in inp.dataset.profile and '"num_rows": 2' in inp.dataset.profile


def test_a_parquet_manifest_from_a_local_folder_logs_as_an_input_without_mlflows_ambiguous_source_warning(store, tmp_path):
    import warnings

    from mangacolor.tracking import MlflowTracker

    uri = store("w")
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("w"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        frame = pd.DataFrame({"id": pd.Series(["a", None], dtype="string[pyarrow]"), "tags": [["x"], None], "n": [1, 2]})
        MlflowTracker(run.info.run_id, client=client).log_dataset(frame, name="train", source=str(tmp_path))
        # No rows in a text column (a variant without real pages): MLflow's own digest fails on it, and
        # that once failed the whole training asset.
        empty = pd.DataFrame({"id": pd.Series([], dtype="str"), "n": pd.Series([], dtype=int)})
        MlflowTracker(run.info.run_id, client=client).log_dataset(empty, name="real", source=str(tmp_path))
    assert not [w for w in seen if "interpreted in multiple ways" in str(w.message)]
    inputs = {inp.dataset.name: inp for inp in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"train", "real"} and str(tmp_path) in inputs["train"].dataset.source
    assert '"num_rows": 0' in inputs["real"].dataset.profile


def test_artifact_location_is_left_to_a_server_and_beside_a_local_sqlite_store(tmp_path, store):
    # Starting `mlflow server` took > 90 s on the shared 2-core machine (DB migrations + app import),
    # so the server case is the decision; the SQLite case is a real store.
    assert artifact_location("http://127.0.0.1:5000") is None
    assert artifact_location("https://mlflow.example.org") is None
    assert artifact_location("postgresql://u@h/db") is None
    assert artifact_location("http://127.0.0.1:5000", "s3://bucket/mlartifacts") == "s3://bucket/mlartifacts"
    uri = store("local")
    assert artifact_location(uri) == (tmp_path / "local" / "mlartifacts").as_uri()
    res = MlflowResource(tracking_uri=uri)
    exp = res.client().get_experiment(res.experiment_id())
    assert exp.artifact_location == (tmp_path / "local" / "mlartifacts").as_uri()
    client = res.client()
    run_id = client.create_run(exp.experiment_id).info.run_id
    with active_run(client, run_id, system_metrics=False) as tracker:
        tracker.log_text("note.txt", "hello")
    assert (tmp_path / "local" / "mlartifacts" / run_id / "artifacts" / "note.txt").read_text() == "hello"


def test_system_metrics_follow_psutil_and_the_off_switch(monkeypatch):
    import importlib.util

    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    assert system_metrics_enabled() == (importlib.util.find_spec("psutil") is not None)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    assert system_metrics_enabled() is False


pages = dg.StaticPartitionsDefinition(["t1", "t2", "t3"])


@dg.asset(partitions_def=pages)
def per_page(mlflow: MlflowResource) -> None:
    context = dg.AssetExecutionContext.get()
    with mlflow.run(context, params={"model": "v1"}, per_materialization=True) as tracker:
        tracker.log_metrics({"gap": float(len(context.partition_key))})
        tracker.set_tags({"note": context.partition_key})


def test_per_page_stage_logs_one_run_per_materialization_not_per_partition(store):
    uri = store("p")
    res = {"mlflow": MlflowResource(tracking_uri=uri)}
    instance = dg.DagsterInstance.ephemeral()
    for key in ("t1", "t2"):  # two partitions of one backfill
        assert dg.materialize([per_page], partition_key=key, resources=res, instance=instance,
                              tags={"dagster/backfill": "bf1"}).success
    (run,) = _runs(uri)
    assert run.data.tags["dagster_run_id"] == "bf1"
    assert run.data.params == {"t1/model": "v1", "t2/model": "v1"}
    assert run.data.metrics == {"t1/gap": 2.0, "t2/gap": 2.0}
    assert run.data.tags["t1/note"] == "t1" and run.data.tags["t2/note"] == "t2"
    # Another materialization (a run outside the backfill) is another MLflow run.
    assert dg.materialize([per_page], partition_key="t3", resources=res, instance=instance).success
    assert len(_runs(uri)) == 2


@pytest.fixture
def bundle_folder(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text("{}")
    return folder


def test_evaluation_metrics_show_on_the_registered_version(store, bundle_folder):
    uri = store("r")
    res = MlflowResource(tracking_uri=uri)
    client = res.client()
    train = client.create_run(res.experiment_id(client)).info.run_id
    with active_run(client, train, system_metrics=False) as tracker:
        version = register_bundle(bundle_folder, client=tracker.client)
    assert mlflow.get_tracking_uri() != uri  # the registration went through the scope, not the process URI
    evaluation = client.create_run(res.experiment_id(client)).info.run_id
    mv = client.get_model_version(version.name, version.version)
    log_version_metrics(client, evaluation, mv, {"holdout/auto/fid": 41.5, "holdout/auto/kid": 0.02})
    model = client.get_logged_model(logged_model_id(mv))
    shown = {m.key: (m.value, m.run_id) for m in model.metrics}
    assert shown == {"holdout/auto/fid": (41.5, evaluation), "holdout/auto/kid": (0.02, evaluation)}
    assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": version.name, "version": version.version}]
    assert model.source_run_id == train
    assert client.get_run(evaluation).data.tags[f"evaluated.{version.name}"] == str(version.version)
