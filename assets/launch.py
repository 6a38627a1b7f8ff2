"""Launching a training asset on several GPUs: `torchrun` through Dagster Pipes (docs/architecture.md § Several GPUs).

With `gpus: N > 1` (or `nnodes > 1`) a training asset does not train in its own process: it starts
`torchrun` (`PipesSubprocessClient` on a machine, `PipesK8sClient` as a pod on Kubernetes) running
`pipelines/torchrun_worker.py` (the stages of mangacolor/stages/launch.py), one process per GPU,
data-parallel (mangacolor/training/distributed.py: NCCL on GPUs, gloo on the CPU). Every rank derives the same rows from the store; rank 0 alone
checkpoints, logs to the asset's MLflow run and reports the materialization metadata back through
Pipes, which the asset merges with what it writes to the store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg

WORKER = "pipelines.torchrun_worker"


class TorchrunResource(dg.ConfigurableResource):
    """How many processes train one asset, and where they run.

    `gpus`: processes per node (one per GPU; on the CPU, gloo processes). `nnodes` > 1 needs
    `rdzv_endpoint` (host:port of node 0) and runs on Kubernetes (`launcher: k8s`), one pod per node.
    """

    gpus: int = 1
    nnodes: int = 1
    launcher: str = "subprocess"  # subprocess | k8s
    rdzv_endpoint: str | None = None
    k8s_image: str | None = None
    k8s_namespace: str | None = None
    env: dict[str, str] = {}

    def launches(self) -> bool:
        return self.gpus > 1 or self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        if self.nnodes > 1:
            if not self.rdzv_endpoint:
                raise dg.Failure(f"nnodes={self.nnodes} needs torchrun.rdzv_endpoint (host:port of node 0)")
            rdzv = ["--nnodes", str(self.nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", self.rdzv_endpoint]
        else:
            rdzv = ["--standalone"]
        return ["-m", "torch.distributed.run", *rdzv, "--nproc_per_node", str(self.gpus)]

    def run(self, context: dg.AssetExecutionContext, spec: dict, work: Path) -> dg.PipesClientCompletedInvocation:
        spec_path = work / "torchrun_spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        args = [*self.torchrun_args(), "-m", WORKER, str(spec_path)]
        if self.launcher == "subprocess":
            env = {**os.environ, **self.env}
            return dg.PipesSubprocessClient(cwd=str(Path(__file__).resolve().parents[1])).run(
                context=context, command=[sys.executable, *args], env=env)
        if self.launcher == "k8s":
            return self.k8s_client().run(context=context, image=self.k8s_image, command=["python", *args],
                                         namespace=self.k8s_namespace, env=self.env, base_pod_spec=self.pod_spec())
        raise dg.Failure(f"torchrun.launcher must be 'subprocess' or 'k8s'; got {self.launcher!r}")

    def pod_spec(self) -> dict:
        """One pod with `gpus` GPUs; the work folder must be a volume (or the store) shared with the asset's pod."""
        limits = {"nvidia.com/gpu": str(self.gpus)}
        return {"containers": [{"resources": {"limits": limits, "requests": limits}}], "restart_policy": "Never"}

    @staticmethod
    def k8s_client():
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient()


def train_stage(context: dg.AssetExecutionContext, torchrun: TorchrunResource, stage: str, mlflow_run_id: str, tracking_uri: str,
                preset: str, store, titles: list[str], device, work: Path, **args) -> tuple[Any, dict]:
    """Train `stage` (a name in mangacolor/stages/launch.py's STAGES) under `torchrun`: (the loop's result
    as rank 0 reported it, as JSON; the metadata rank 0 reported). `args`: JSON the stage's worker reads."""
    spec = {"stage": stage, "preset": preset, "artifact_root": store.artifact_root,
            "storage_options": dict(store.storage_options or {}), "titles": titles, "args": args,
            "work": str(work), "mlflow": {"tracking_uri": tracking_uri, "run_id": mlflow_run_id},
            # The run's settings as launched (Launchpad overrides included), not just the preset's name.
            "settings": context.resources.settings.model_dump(mode="json"),
            "device": {"name": device.device, "precision": device.precision, "seed": device.seed, "threads": device.threads}}
    context.log.info(f"launching torchrun for {stage}: {torchrun.nnodes} node(s) x {torchrun.gpus} process(es)")
    invocation = torchrun.run(context, spec, work)
    meta = dict(invocation.get_materialize_result().metadata or {})
    raw = meta.pop("train_result")
    return (raw.value if isinstance(raw, dg.JsonMetadataValue) else raw), meta


def run_stage(context: dg.AssetExecutionContext, torchrun: TorchrunResource | None, stage: str, train, *, tracker, mlflow,
              settings, store, device, work: Path, titles=(), **args) -> tuple[Any, dict]:
    """`train(store, preset, titles, work, device spec, tracker, progress, **args)` in this process, or under
    `torchrun` when `torchrun.launches()` (each rank runs the stage `stage` of mangacolor/stages/launch.py, the same
    function): (the loop's result as it returns it; the metadata rank 0 reported, {} in this process).
    `torchrun` None: in this process."""
    if torchrun is not None and torchrun.launches():
        from mangacolor.stages.launch import from_json

        raw, meta = train_stage(context, torchrun, stage, tracker.run_id, mlflow.tracking_uri, settings.preset, store,
                                list(titles), device, work, **args)
        return from_json(stage, raw), meta
    return train(store.get(), settings.load(), list(titles), work, device.spec(), tracker, context.log.info, **args), {}


# --- what a GPU asset asks of the cluster ----------------------------------------------------------------

# A retried training step resumes from its last checkpoint (kept under the artifact root or its mirror):
# a lost pod or a preempted node costs the steps since that checkpoint, not the run.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def gpu_op_tags(gpus: int | None = None) -> dict:
    """`dagster-k8s/config` for a GPU asset: its pod requests `gpus` GPUs (MANGACOLOR_GPUS, default 1)."""
    gpus = gpus or int(os.environ.get("MANGACOLOR_GPUS") or 1)
    limits = {"nvidia.com/gpu": str(gpus)}
    return {"dagster-k8s/config": {"container_config": {"resources": {"limits": limits, "requests": limits}},
                                   "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                                         "effect": "NoSchedule"}]}}}


GPU_OP_TAGS = gpu_op_tags()
