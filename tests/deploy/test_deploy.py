"""The cluster deployment of deploy/: its files validate, and an instance built from deploy/dagster.yaml on a
real PostgreSQL materializes the ingest group with artifacts and MLflow artifacts on an S3-compatible server,
and runs two materializations that want the `gpu` pool one after the other."""

import json
import multiprocessing
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.deploy import DEPLOY, apply_pool_limits, pool_limits

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
INGEST = ["color_pages", "bw_pages", "manga109_pages", "page_pairs", "page_splits"]


def _pg_env(monkeypatch, url: str) -> None:
    from urllib.parse import urlparse

    u = urlparse(url)
    for key, value in {"DAGSTER_PG_HOST": u.hostname, "DAGSTER_PG_PORT": str(u.port), "DAGSTER_PG_USERNAME": u.username,
                       "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": u.path.lstrip("/"), "MANGACOLOR_LOG_BUCKET": "mangacolor"}.items():
        monkeypatch.setenv(key, value)


def _home(tmp_path: Path) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml; compute logs local unless dagster-aws is installed (it is not a dependency)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    try:
        import dagster_aws  # noqa: F401
    except ImportError:
        config["compute_logs"] = {"module": "dagster.core.storage.local_compute_log_manager", "class": "LocalComputeLogManager",
                                  "config": {"base_dir": str(tmp_path / "logs")}}
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def test_deploy_files_load_and_validate(monkeypatch, postgres_url):
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import k8s_job_executor

    _pg_env(monkeypatch, postgres_url)
    config, _ = dagster_instance_config(str(DEPLOY))  # raises on any schema error
    assert "postgres_db" in config["storage"]["postgres"]
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"

    executor = yaml.safe_load((DEPLOY / "executor.yaml").read_text())
    assert validate_config(k8s_job_executor.config_schema.config_type, executor).success

    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlHost"] and values["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["MANGACOLOR_EXECUTOR"] == "k8s" and env["MANGACOLOR_ARTIFACT_ROOT"].startswith("s3://")

    monkeypatch.setenv("MANGACOLOR_GPUS_TOTAL", "4")
    assert pool_limits() == {"gpu": 4, "crawl": 1}

    # Every GPU asset asks Kubernetes for a GPU, every training asset retries.
    from pipelines.definitions import build_definitions

    monkeypatch.setenv("MANGACOLOR_EXECUTOR", "k8s")
    defs = build_definitions()
    gpu_assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool == "gpu"]
    assert len(gpu_assets) >= 10
    for a in gpu_assets:
        k8s = a.op.tags["dagster-k8s/config"]
        limits = (json.loads(k8s) if isinstance(k8s, str) else k8s)["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1", a.key
    retried = {a.key.to_user_string() for a in gpu_assets if a.op.retry_policy}
    assert {"stylegan", "colorizer_step1_snapshots", "colorizer_step1_finetuned", "colorizer_step2", "drafting_network_final", "cut_model"} <= retried
    assert defs.executor.name == "k8s"


def test_ingest_on_postgres_with_artifacts_and_mlflow_on_s3(tmp_path, monkeypatch, postgres_url, s3_env, demo_corpus):
    import mlflow
    import psycopg2

    from assets.ingest import register_and_observe
    from assets.resources import MlflowResource
    from mangacolor.config import PRESET_DIR, load_preset
    from mangacolor.io.store import Store
    from pipelines.definitions import build_definitions, executable_defs

    _, s3 = s3_env
    _pg_env(monkeypatch, postgres_url)
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path)))
    monkeypatch.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text()) | {"demo_data": str(demo_corpus), "artifact_root": "s3://mangacolor/artifacts"}
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    defs = build_definitions(preset=str(tmp_path / "preset.yaml"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    register_and_observe(instance, load_preset(str(tmp_path / "preset.yaml")))
    color, bw = instance.get_dynamic_partitions("color_titles"), instance.get_dynamic_partitions("bw_titles")
    runs = []
    for role, titles in (("color", color), ("bw", bw)):
        for title in titles[:1]:  # one partition of each: every asset of the group, less time
            runs.append(dg.materialize(executable_defs(defs), selection=[f"{role}_pages"], partition_key=title, instance=instance,
                                       resources=defs.resources))
    runs.append(dg.materialize(executable_defs(defs), selection=["manga109_pages", "page_pairs", "page_splits"], instance=instance,
                               resources=defs.resources))
    assert all(r.success for r in runs)

    # Runs and events are in PostgreSQL, artifacts in the bucket.
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs where status = 'SUCCESS'")
        assert cur.fetchone()[0] >= len(runs)
        cur.execute("select count(distinct asset_key) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cur.fetchone()[0] == len(INGEST)
    store = Store("s3://mangacolor/artifacts")
    splits = store.latest_manifest("page_splits")
    assert set(splits["split"]) == {"train", "holdout"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mangacolor", Prefix="artifacts/page_splits/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)

    # MLflow artifacts of a materialization land on S3 (the experiment's artifact location).
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"

    @dg.asset
    def tracked(mlflow: MlflowResource):
        with mlflow.run(dg.AssetExecutionContext.get()) as tracker:
            tracker.log_text("hello.txt", "on s3")

    res = MlflowResource(tracking_uri=tracking, experiment="deploy-test", artifact_location="s3://mangacolor/mlartifacts")
    assert dg.materialize([tracked], instance=instance, resources={"mlflow": res}).success
    client = mlflow.MlflowClient(tracking)  # the assets' own store, not the process-wide one
    run = client.search_runs([client.get_experiment_by_name("deploy-test").experiment_id])[0]
    assert run.info.artifact_uri.startswith("s3://mangacolor/mlartifacts/")
    objects = s3.list_objects_v2(Bucket="mangacolor", Prefix="mlartifacts/")["Contents"]
    assert any(o["Key"].endswith("/hello.txt") for o in objects)


def test_the_image_and_the_chart_values_fit_the_deployment():
    """The Dockerfile is the README's set-up (uv, the lock, bytecode compiled once) on the project's Python; the Helm
    values name the chart's own keys and every variable the executor passes on is set in the code server."""
    import re
    import tomllib

    root = DEPLOY.parent
    docker = (root / "Dockerfile").read_text()
    assert "pip install --no-cache-dir uv" in docker
    assert docker.count("uv sync --frozen --compile-bytecode --no-dev") == 2
    python = re.search(r"^FROM python:(\d+\.\d+)", docker, re.M).group(1)
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"].startswith(f">={python}")
    assert "uv sync --compile-bytecode" in (root / "README.md").read_text()

    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    # The chart reads the password from the key `postgresql-password` of global.postgresqlSecretName; ours exists beforehand.
    assert values["global"]["postgresqlSecretName"] and values["generatePostgresqlPasswordSecret"] is False
    env = {e["name"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    executor = yaml.safe_load((DEPLOY / "executor.yaml").read_text())
    assert set(executor["env_vars"]) <= env  # dagster-k8s fails a step whose env_vars name an unset variable
    assert {"MANGACOLOR_GPUS_TOTAL", "MANGACOLOR_IMAGE", "MANGACOLOR_WORK_MIRROR"} <= env


# --- two runs wanting the gpu pool ----------------------------------------------------------------------


@dg.asset(pool="gpu")
def gpu_step(context: dg.AssetExecutionContext) -> None:
    start = time.time()
    time.sleep(1.0)
    out = Path(context.run.tags["out"])
    out.write_text(json.dumps({"start": start, "end": time.time()}))


def _run_gpu_step(home: str, env: dict, out: str) -> None:
    import os

    os.environ.update(env, DAGSTER_HOME=home)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([gpu_step], instance=instance, tags={"out": out}).success


def _gpu_instance(tmp_path, monkeypatch, postgres_url, gpus: int) -> tuple[str, dict]:
    """(DAGSTER_HOME, environment for a run process) of an instance on PostgreSQL whose gpu pool has `gpus` slots."""
    import os

    _pg_env(monkeypatch, postgres_url)
    home = _home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MANGACOLOR_GPUS_TOTAL", str(gpus))
    with dg.DagsterInstance.get() as instance:
        apply_pool_limits(instance, pool_limits())
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == gpus
    return str(home), {k: v for k, v in os.environ.items() if k.startswith(("DAGSTER_PG_", "MANGACOLOR_LOG"))}


def _two_runs(target, home: str, env: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Two runs of `target` at once, each in a process of its own as runs are: what each wrote, in start order."""
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"run{i}.json") for i in range(2)]
    procs = [ctx.Process(target=target, args=(home, env, o)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    first, second = sorted((json.loads(Path(o).read_text()) for o in outs), key=lambda t: t["start"])
    return first, second


def test_two_runs_wanting_the_gpu_pool_run_one_after_the_other(tmp_path, monkeypatch, postgres_url):
    a, b = _two_runs(_run_gpu_step, *_gpu_instance(tmp_path, monkeypatch, postgres_url, 1), tmp_path)
    assert b["start"] >= a["end"], f"the gpu pool let two runs overlap: {a} {b}"


@dg.asset
def three_gpu_step(context: dg.AssetExecutionContext) -> None:
    """What a launching asset does: it has no pool of its own and holds one slot of `gpu` per GPU of its ranks."""
    from assets.launch import gpu_slots

    with gpu_slots(context, int(context.run.tags["gpus"]), poll_s=0.2):
        start = time.time()
        held = context.instance.event_log_storage.get_concurrency_info("gpu").active_slot_count
        time.sleep(1.0)
        Path(context.run.tags["out"]).write_text(json.dumps({"start": start, "end": time.time(), "held": held}))


def _run_three_gpu_step(home: str, env: dict, out: str, gpus: int = 3) -> None:
    import os

    os.environ.update(env, DAGSTER_HOME=home)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([three_gpu_step], instance=instance, tags={"out": out, "gpus": str(gpus)}, raise_on_error=False)
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        if failures:
            Path(out + ".error").write_text("".join(str(e.event_specific_data.error.message) for e in failures))


def test_a_run_holds_a_slot_of_the_gpu_pool_per_gpu(tmp_path, monkeypatch, postgres_url):
    """4 GPUs, two runs of 3 each: one after the other, each holding 3 slots; a run wanting 5 can never run: an error."""
    home, env = _gpu_instance(tmp_path, monkeypatch, postgres_url, 4)
    a, b = _two_runs(_run_three_gpu_step, home, env, tmp_path)
    assert a["held"] == b["held"] == 3
    assert b["start"] >= a["end"], f"two 3-GPU runs overlapped on 4 GPUs: {a} {b}"
    too_many = str(tmp_path / "five.json")
    _run_three_gpu_step(home, env, too_many, gpus=5)
    assert "has 4 slot(s) and this run holds 5 GPUs" in Path(too_many + ".error").read_text()
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").active_slot_count == 0  # all freed


def test_the_gpu_pool_is_not_sized_from_a_pod_without_gpus(monkeypatch):
    """`mangacolor pools` runs in the code server's pod, which holds no GPU: 'auto' there would give the whole cluster
    one slot. It says what to set instead."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("MANGACOLOR_GPUS_TOTAL", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(ValueError, match="MANGACOLOR_GPUS_TOTAL"):
        pool_limits()
    monkeypatch.setenv("MANGACOLOR_GPUS_TOTAL", "16")
    assert pool_limits()["gpu"] == 16
