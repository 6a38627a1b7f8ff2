"""Training assets launched as `torchrun` with 2 gloo processes through Dagster Pipes: step 1 (the
colorizer loop) and the refiner (a loop the worker runs through `launch.run_stage`, like StyleGAN2, the
pSp encoders and CUT), the refiner as a training pod runs it: in a work folder of its own, spec and results
through the store. Each materializes, rank 0's metadata arrives in Dagster, rank 0 alone logs to MLflow and
writes the checkpoints. That 1 and 2 processes train the same weights is tests/training/test_distributed_loops.py;
the Kubernetes manifests are tests/assets/test_k8s_launch.py."""

import json
import shutil

import dagster as dg
import mlflow
import pytest
import yaml

from assets.ingest import register_and_observe
from assets.launch import TorchrunResource
from mangacolor.config import PRESET_DIR, load_preset
from mangacolor.io.store import Store
from tests.assets.test_colorization_assets import _definitions, _metadata, _run, _write_section

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_step1_and_refiner_under_torchrun_materialize_with_rank0_reporting(tmp_path, demo_corpus, monkeypatch):
    data = tmp_path / "demo_data"
    shutil.copytree(demo_corpus, data)
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text()) | {"demo_data": str(data), "artifact_root": str(tmp_path / "art")}
    preset["refiner"] |= {"steps": 2, "batch_size": 2, "crop_hw": [64, 48], "checkpoint_every": 1, "log_every": 1, "sample_every": 2}
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    project = {"preset": str(tmp_path / "preset.yaml"), "artifacts": tmp_path / "art", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    monkeypatch.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", (tmp_path / "mlartifacts").as_uri())
    _write_section(project, step1={"batch_size": 2, "max_steps": 2, "snapshots": 1, "lr_g": 5e-4, "lr_d": 2e-3, "losses": {"per": 0}},
                   checkpoint_every=1)
    defs = _definitions(project)
    instance = dg.DagsterInstance.ephemeral()
    register_and_observe(instance, load_preset(project["preset"]))
    for role in ("color", "bw"):  # one title each: enough pages for a step, less time
        _run(defs, instance, [f"{role}_pages"], instance.get_dynamic_partitions(f"{role}_titles")[0])
    _run(defs, instance, ["page_splits"])

    resources = {**defs.resources, "torchrun": TorchrunResource(gpus=2, env={"OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1"})}
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=["colorizer_step1_snapshots"], instance=instance,
                            resources=resources)
    assert result.success
    meta = _metadata(result, "colorizer_step1_snapshots")
    # Reported by rank 0 through Pipes, merged with what the asset wrote.
    assert meta["world_size"] == 2 and meta["ddp_backend"] == "gloo" and meta["reported_by_rank"] == 0
    assert meta["launched_with"] == "torchrun" and meta["steps"] == 2 and meta["snapshots"] == 1
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("torchrun: 2 processes, backend gloo" in m for m in logs)

    step1 = Store(project["artifacts"]).latest_manifest("colorizer_step1_snapshots")
    assert (step1.role == "snapshot").sum() == 1

    # Checkpoints: written by rank 0 of 2, one per step (keep_last=2).
    states = sorted((tmp_path / "work").rglob("checkpoints/step-*/state.json"))
    assert [p.parent.name for p in states] == ["step-00000001", "step-00000002"]
    assert all(json.loads(p.read_text())["extra"]["written_by"] == {"rank": 0, "world_size": 2} for p in states)

    # MLflow: the asset's run holds each step's metrics once (rank 0 only), and the weights artifact.
    client = mlflow.MlflowClient(project["tracking_uri"])
    history = client.get_metric_history(meta["mlflow_run_id"], "g_mae")
    assert sorted(m.step for m in history) == [1, 2]
    assert [a.path for a in client.list_artifacts(meta["mlflow_run_id"], "weights")] == ["weights/generator.safetensors"]

    # The refiner, launched as on Kubernetes: the ranks share no folder with the asset (their own work folder, as a
    # training pod has), so the spec reaches them and the weights come back through the store.
    pod = tmp_path / "pod"
    as_a_pod = {**resources, "torchrun": TorchrunResource(gpus=2, transfer="store", env={
        "OMP_NUM_THREADS": "1", "MANGACOLOR_THREADS": "1", "MANGACOLOR_WORK_DIR": str(pod)})}
    refined = dg.materialize([*defs.assets, *defs.asset_checks], selection=["refiner_model"], instance=instance, resources=as_a_pod)
    assert refined.success
    meta = _metadata(refined, "refiner_model")
    assert meta["world_size"] == 2 and meta["ddp_backend"] == "gloo" and meta["reported_by_rank"] == 0 and meta["steps"] == 2
    store = Store(project["artifacts"])
    assert store.latest_version("refiner_model")
    (launch,) = store.fs.glob(store.path(".launches", "refiner_model") + "/*")
    assert store.exists(f"{launch}/spec.json")  # kept; the results were copied into the asset's work folder and removed
    assert not store.exists(f"{launch}/results")
    states = sorted(p for p in pod.rglob("checkpoints/step-*/state.json") if json.loads(p.read_text())["extra"].get("stage") == "refiner")
    assert [p.parent.name for p in states] == ["step-00000001", "step-00000002"]
    assert all(json.loads(p.read_text())["extra"]["written_by"] == {"rank": 0, "world_size": 2} for p in states)
    # The asset's own work folder got the weights from the store, and no checkpoint: those stayed with the "pod".
    assert list((tmp_path / "work").rglob("refiner_model/**/refiner.safetensors"))
    assert not [p for p in (tmp_path / "work").rglob("checkpoints/refiner_model/**/state.json")]
    assert sorted(m.step for m in client.get_metric_history(meta["mlflow_run_id"], "refiner/loss")) == [1, 2]
