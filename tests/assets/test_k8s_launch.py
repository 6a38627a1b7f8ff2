"""The Kubernetes side of launching, read without a cluster: the training Job and Service exactly as dagster-k8s
constructs them (`assets.launch.training_job`), the GPUs each asset's pod and its training pods request, and how
many ranks a stage takes."""

import subprocess

import dagster as dg
import kubernetes
import pytest

from assets.launch import TorchrunResource, asset_gpus, gpu_asset_args, gpu_pods, training_job
from mangacolor.config import load_preset
from mangacolor.stages.launch import ranks

DEPLOYMENT_ENV = {"MANGACOLOR_PRESET": "paper", "MANGACOLOR_EXECUTOR": "k8s", "MANGACOLOR_ARTIFACT_ROOT": "s3://mangacolor/artifacts",
                  "MLFLOW_TRACKING_URI": "http://mlflow.mangacolor.svc:5000", "MANGACOLOR_MLFLOW_ARTIFACTS": "s3://mangacolor/mlartifacts",
                  "MANGACOLOR_WORK_MIRROR": "s3://mangacolor/work", "MANGACOLOR_GPUS": "8", "MANGACOLOR_LAUNCHER": "k8s",
                  "MANGACOLOR_IMAGE": "registry.example.org/mangacolor:1.2"}
SPEC = "s3://mangacolor/artifacts/.launches/colorizer_step1_snapshots/0a1b2c3d/spec.json"
NAME = "mc-colorizer-step1-snapshots-0a1b2c3d"


@pytest.fixture()
def deployment_env(monkeypatch):
    """The environment of an asset's pod, as deploy/executor.yaml passes it."""
    for key, value in DEPLOYMENT_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("MANGACOLOR_NNODES", "DAGSTER_CURRENT_IMAGE"):
        monkeypatch.delenv(key, raising=False)


def _plain(obj) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)


def test_the_training_pod_gets_image_environment_secrets_gpus_resources_and_shm(deployment_env):
    pods = {**gpu_pods(), "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    job, service = training_job(NAME, "registry.example.org/mangacolor:1.2", 4, 1, SPEC, {"DAGSTER_PIPES_CONTEXT": "x"}, pods=pods)
    assert service is None
    manifest = _plain(job)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.org/mangacolor:1.2" and container["imagePullPolicy"] == "IfNotPresent"
    # One node: torchrun standalone, one process per GPU, the spec read from the store.
    assert container["command"] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                                    "-m", "pipelines.torchrun_worker", SPEC]
    # The deployment's environment, secrets and service account (deploy/executor.yaml), and the Pipes bootstrap.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: env[k] for k in DEPLOYMENT_ENV} == DEPLOYMENT_ENV and env["DAGSTER_PIPES_CONTEXT"] == "x"
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["mangacolor-postgres", "mangacolor-s3"]
    assert pod["serviceAccountName"] == "mangacolor"
    # 4 GPUs, and per GPU 10 CPUs and 96 GiB, requested and limited (deploy/gpu.yaml).
    amounts = {"nvidia.com/gpu": "4", "cpu": "40", "memory": "384Gi"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    # An in-memory /dev/shm for loader batches and NCCL.
    (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["restartPolicy"] == "Never" and manifest["spec"]["backoffLimit"] == 0 and manifest["spec"]["completions"] == 1


def test_several_nodes_are_an_indexed_job_meeting_through_a_headless_service(deployment_env):
    job, service = training_job(NAME, "registry.example.org/mangacolor:1.2", 8, 2, SPEC, {})
    spec = _plain(job)["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 2 and spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    shell, flag, line = container["command"]
    assert (shell, flag) == ("sh", "-c") and line.startswith("exec python -m torch.distributed.run ")
    # Pod 0 of the indexed Job answers at <job>-0.<service>: the rendezvous every node's torchrun meets at, hosted by
    # pod 0 (its completion index), whether or not its DNS name resolves yet.
    for pod_index, hosts in (("0", "true"), ("1", "false")):
        argv = subprocess.run(["sh", "-c", line.replace("exec python", "printf '%s\\n'", 1)], env={"JOB_COMPLETION_INDEX": pod_index},
                              capture_output=True, text=True, check=True).stdout.splitlines()
        assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--nproc-per-node") + 1] == "8"
        assert argv[argv.index("--rdzv-backend") + 1] == "c10d" and argv[argv.index("--rdzv-endpoint") + 1] == f"{NAME}-0.{NAME}:29400"
        assert argv[argv.index("--rdzv-conf") + 1] == f"is_host={hosts}" and argv[-1] == SPEC
    assert pod["subdomain"] == NAME
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    svc = _plain(service)
    assert svc["kind"] == "Service" and svc["metadata"]["name"] == NAME
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    labels = spec["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["port"] == 29400 and container["ports"][0]["containerPort"] == 29400


def test_the_training_pods_need_an_image(deployment_env, monkeypatch):
    monkeypatch.delenv("MANGACOLOR_IMAGE")
    with pytest.raises(dg.Failure, match="MANGACOLOR_IMAGE"):
        TorchrunResource(launcher="k8s").image()
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "registry.example.org/mangacolor:code")  # the image Dagster runs this code in
    assert TorchrunResource(launcher="k8s").image() == "registry.example.org/mangacolor:code"
    assert TorchrunResource(launcher="k8s", k8s_image="mine:2").image() == "mine:2"


def test_gpus_are_requested_once_by_the_pods_that_train(deployment_env, monkeypatch):
    """Launched on Kubernetes the asset's pod holds no GPU and the training pods hold the ranks' GPUs; launched beside
    the asset (subprocess) its own pod holds them. Never both."""
    paper = load_preset("paper")
    k8s = TorchrunResource(gpus=8, launcher="k8s")
    assert asset_gpus("colorizer_step1_snapshots", paper, k8s) == (0, 4)  # batch 4: 4 ranks, in the Job
    assert asset_gpus("stylegan", paper, k8s) == (0, 8)
    assert asset_gpus("cut_model", paper, k8s) == (1, 1)  # batch 1: trains in its own pod, on one GPU
    assert asset_gpus("refined_pages", paper, k8s) == (1, 1)  # inference: one GPU
    local = TorchrunResource(gpus=8, launcher="subprocess")
    assert asset_gpus("colorizer_step1_snapshots", paper, local) == (4, 4)

    launching = gpu_asset_args("colorizer_step1_snapshots")
    assert launching["pool"] is None and launching["op_tags"]["mangacolor/gpus"] == "4"  # it claims 4 slots itself
    assert "nvidia.com/gpu" not in str(launching["op_tags"]["dagster-k8s/config"])
    inference = gpu_asset_args("pseudolabels")
    assert inference["pool"] == "gpu" and inference["op_tags"]["dagster-k8s/config"]["container_config"]["resources"]["limits"][
        "nvidia.com/gpu"] == "1"


def test_a_stage_takes_no_more_ranks_than_its_batch_allows():
    paper = load_preset("paper")
    assert ranks("cut_model", paper, 8) == (1, 1)  # the paper's CUT: batch 1
    assert ranks("colorizer_step1_snapshots", paper, 8) == (4, 1)  # step 1: batch 4
    assert ranks("colorizer_step2", paper, 8) == (8, 1)
    assert ranks("stylegan", paper, 8, nnodes=2) == (8, 2)  # batch 32 over 16 ranks
    odd = {**paper, "refiner": {**paper["refiner"], "batch_size": 6}}
    assert ranks("refiner_model", odd, 4) == (3, 1)  # the most ranks that divide the batch
    with pytest.raises(dg.Failure, match="launcher 'k8s'"):
        TorchrunResource(gpus=8, nnodes=2).plan("stylegan", paper)
