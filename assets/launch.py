"""Where a GPU asset computes, and launching a training asset on several GPUs (docs/architecture.md § Several GPUs).

How many GPUs: the deployment offers `gpus` per node on `nnodes` nodes (MANGACOLOR_GPUS / MANGACOLOR_NNODES, else
the preset's `device:` section: `deployment()`); a training stage takes the most of them its global batch
splits over (`mangacolor.stages.launch.ranks`: CUT's batch of 1 trains in one process, the paper's step 1 on 4 of
8 GPUs); an inference asset takes one. The same count decides the asset pod's request (`gpu_asset_args`), the
ranks `torchrun` starts and the `gpu` pool's slots the run holds (`gpu_slots`: one slot per GPU).

A stage with more than one rank does not train in the asset's process: the asset starts `torchrun` running
`pipelines/torchrun_worker.py` through Dagster Pipes, one process per GPU, data-parallel (NCCL on GPUs, gloo on
the CPU); rank 0 alone checkpoints, logs to the asset's MLflow run and reports back.
- `launcher: subprocess`: `torchrun --standalone` beside the asset, on the GPUs the asset's pod (or machine) holds.
- `launcher: k8s`: a Kubernetes Job built by dagster-k8s's own `construct_dagster_k8s_job` from the executor's
  settings (deploy/executor.yaml: image pull policy, service account, secrets, environment) and deploy/gpu.yaml
  (GPUs, CPU and memory per GPU, an in-memory /dev/shm, tolerations, node selector): the training pods hold the
  GPUs, the asset's pod none. Several nodes are an indexed Job (completion mode Indexed, one pod per node) whose
  pods meet at pod 0 through a headless service (`torchrun --rdzv-backend c10d --rdzv-endpoint <job>-0.<job>`).
  An indexed Job is core Kubernetes (batch/v1) and dagster-k8s builds it; JobSet and Kubeflow's TrainJob would
  need their controllers installed in the cluster for what one Service adds here.
  The spec goes to the pods and the results come back through the store (`.launches/` under the artifact
  root), since the pods share no folder with the asset; checkpoints reach a retried pod through
  MANGACOLOR_WORK_MIRROR.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

WORKER = "pipelines.torchrun_worker"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
POOL = "gpu"
# What a pod that holds no GPU but starts a training Job asks for (it waits and copies results).
LAUNCHER_POD = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def gpu_pods(path: Path = DEPLOY / "gpu.yaml") -> dict:
    """deploy/gpu.yaml: per-GPU CPU, memory and /dev/shm, tolerations, node selector and the rendezvous port."""
    return yaml.safe_load(Path(path).read_text())


def deployment(preset: dict | None = None) -> dict:
    """The GPUs this deployment offers a training asset, as the environment or the preset's `device:` section says:
    {gpus (per node), nnodes, launcher, image}. The one reading: the asset pods' requests, the `torchrun` resource and
    the pool slots all come from it."""
    if preset is None:
        from mangacolor.config import load_preset

        preset = load_preset(os.environ.get("MANGACOLOR_PRESET", "demo"))
    device = preset.get("device") or {}
    return {"gpus": int(os.environ.get("MANGACOLOR_GPUS") or device.get("gpus") or 1),
            "nnodes": int(os.environ.get("MANGACOLOR_NNODES") or device.get("nnodes") or 1),
            "launcher": os.environ.get("MANGACOLOR_LAUNCHER") or device.get("launcher") or "subprocess",
            "image": os.environ.get("MANGACOLOR_IMAGE") or device.get("image")}


class TorchrunResource(dg.ConfigurableResource):
    """How many processes train one asset, and where they run.

    `gpus`: GPUs per node a training asset may take (one process each; on the CPU, gloo processes); `nnodes` > 1
    needs `launcher: k8s` (one pod per node). `transfer`: how the spec and the results travel between the asset
    and the ranks: `local` (a folder both see: the same machine), `store` (through the artifact store: a pod);
    None: `store` for k8s, `local` otherwise. `k8s_image`: the training pods' image (default MANGACOLOR_IMAGE, else the
    image Dagster runs this code in, DAGSTER_CURRENT_IMAGE)."""

    gpus: int = 1
    nnodes: int = 1
    launcher: str = "subprocess"  # subprocess | k8s
    transfer: str | None = None  # local | store
    k8s_image: str | None = None
    k8s_namespace: str | None = None
    env: dict[str, str] = {}

    @classmethod
    def from_deployment(cls, preset: dict | None = None, **more) -> "TorchrunResource":
        d = deployment(preset)
        return cls(gpus=d["gpus"], nnodes=d["nnodes"], launcher=d["launcher"], k8s_image=d["image"], **more)

    def plan(self, stage: str, preset: dict) -> tuple[int, int]:
        """(processes per node, nodes) for `stage` under `preset` (mangacolor.stages.launch.ranks)."""
        from mangacolor.stages.launch import ranks

        if self.launcher not in ("subprocess", "k8s"):
            raise dg.Failure(f"torchrun.launcher must be 'subprocess' or 'k8s'; got {self.launcher!r}")
        if self.nnodes > 1 and self.launcher != "k8s":
            raise dg.Failure(f"nnodes={self.nnodes} needs launcher 'k8s' (MANGACOLOR_LAUNCHER=k8s): one machine cannot start "
                             "the other nodes' processes")
        return ranks(stage, preset, self.gpus, self.nnodes)

    def launches(self, stage: str, preset: dict) -> bool:
        per_node, nodes = self.plan(stage, preset)
        return per_node * nodes > 1

    def transfer_mode(self) -> str:
        mode = self.transfer or ("store" if self.launcher == "k8s" else "local")
        if mode not in ("local", "store"):
            raise dg.Failure(f"torchrun.transfer must be 'local' or 'store'; got {mode!r}")
        return mode

    def image(self) -> str:
        image = self.k8s_image or os.environ.get("MANGACOLOR_IMAGE") or os.environ.get("DAGSTER_CURRENT_IMAGE")
        if not image:
            raise dg.Failure("launcher 'k8s' needs the training pods' image: set MANGACOLOR_IMAGE (or device.image in the "
                             "preset) to the image built from the repository's Dockerfile, e.g. registry.example.org/mangacolor:TAG")
        return image


def torchrun_command(per_node: int, nodes: int, rdzv_endpoint: str | None, spec_ref: str, rdzv_id: str = "mangacolor") -> list[str]:
    """`python -m torch.distributed.run ... -m pipelines.torchrun_worker SPEC` (arguments after `python`): standalone on
    one node, a c10d rendezvous at `rdzv_endpoint` (node 0's address) on several."""
    if nodes > 1:
        rdzv = ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(rdzv_endpoint), "--rdzv-id", rdzv_id]
    else:
        rdzv = ["--standalone"]
    return ["-m", "torch.distributed.run", *rdzv, "--nproc-per-node", str(per_node), "-m", WORKER, spec_ref]


def pod_command(per_node: int, nodes: int, rdzv_endpoint: str | None, spec_ref: str, rdzv_id: str) -> list[str]:
    """The training pod's command. On several nodes pod 0 (the indexed Job's JOB_COMPLETION_INDEX 0) hosts the c10d
    rendezvous store, said outright (`is_host`): torch would otherwise infer it by resolving the endpoint's DNS name,
    which a pod that has just started may not resolve yet, and then no pod would host it."""
    import shlex

    args = torchrun_command(per_node, nodes, rdzv_endpoint, spec_ref, rdzv_id)
    if nodes == 1:
        return ["python", *args]
    host = '"is_host=$([ "$JOB_COMPLETION_INDEX" = 0 ] && echo true || echo false)"'
    at = args.index("--nproc-per-node")
    line = " ".join([*map(shlex.quote, ["python", *args[:at]]), "--rdzv-conf", host, *map(shlex.quote, args[at:])])
    return ["sh", "-c", "exec " + line]


# --- what a GPU asset asks of the cluster ----------------------------------------------------------------

# A retried training step resumes from its last checkpoint (kept under the artifact root or its mirror):
# a lost pod or a preempted node costs the steps since that checkpoint, not the run.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def _times(quantity: str, n: int) -> str:
    """A Kubernetes quantity times n ("96Gi" x 4 = "384Gi", "10" x 4 = "40")."""
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity))
    if not m:
        raise ValueError(f"deploy/gpu.yaml: {quantity!r} is not a Kubernetes quantity such as 96Gi or 10")
    value = Decimal(m.group(1)) * n
    return f"{value.normalize():f}{m.group(2)}"


def gpu_pod_config(gpus: int, pods: dict | None = None) -> dict:
    """`dagster-k8s/config` of a pod that holds `gpus` GPUs: the GPUs, per-GPU CPU and memory, an in-memory /dev/shm,
    the GPU nodes' tolerations and node selector (deploy/gpu.yaml). 0 GPUs: a small pod that only launches."""
    if gpus < 1:
        return {"container_config": {"resources": LAUNCHER_POD}}
    pods = pods or gpu_pods()
    per = pods["per_gpu"]
    amounts = {"nvidia.com/gpu": str(gpus), "cpu": _times(per["cpu"], gpus), "memory": _times(per["memory"], gpus)}
    pod_spec = {"tolerations": list(pods.get("tolerations") or []),
                "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": _times(per["shm"], gpus)}}]}
    if pods.get("node_selector"):
        pod_spec["node_selector"] = dict(pods["node_selector"])
    return {"container_config": {"resources": {"requests": amounts, "limits": dict(amounts)},
                                 "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}]},
            "pod_spec_config": pod_spec}


@functools.lru_cache(maxsize=4)
def _deployed_preset(name: str) -> dict:
    from mangacolor.config import load_preset

    return load_preset(name)


def asset_gpus(asset: str, preset: dict | None = None, torchrun: TorchrunResource | None = None) -> tuple[int, int]:
    """(GPUs the asset's own pod holds, GPUs the run holds in all) for `asset` in this deployment.

    An inference asset: one GPU in its pod. A training stage: the ranks its batch allows (`TorchrunResource.plan`), in
    its own pod with the subprocess launcher, in the training pods (none in its own) with the k8s launcher."""
    if preset is None:
        preset = _deployed_preset(os.environ.get("MANGACOLOR_PRESET", "demo"))
    torchrun = torchrun or TorchrunResource.from_deployment(preset)
    if torchrun.gpus * torchrun.nnodes == 1:
        return 1, 1  # (without reading the stages' batches: their configs import torch, which the code server need not)
    from mangacolor.stages.launch import STAGES

    if asset not in STAGES:
        return 1, 1
    per_node, nodes = torchrun.plan(asset, preset)
    held = per_node * nodes
    return (0 if held > 1 and torchrun.launcher == "k8s" else per_node), held


def gpu_asset_args(asset: str) -> dict:
    """`pool` and `op_tags` of the GPU asset `asset` (`dg.asset(**gpu_asset_args(name))`): its pod requests the GPUs it
    holds (`asset_gpus`); a run that holds one GPU takes one slot of the `gpu` pool through Dagster, a run that holds
    several takes that many itself (`gpu_slots`), so the pool counts GPUs."""
    pod, held = asset_gpus(asset)
    return {"pool": POOL if held == 1 else None,
            "op_tags": {"dagster-k8s/config": gpu_pod_config(pod), "mangacolor/gpus": str(held)}}


@contextlib.contextmanager
def gpu_slots(context: dg.AssetExecutionContext, n: int, pool: str = POOL, poll_s: float = 2.0):
    """Hold `n` slots of the `gpu` pool for the block (a run that holds `n` GPUs), freed after it.

    Dagster gives a step one slot; a launching asset has no pool of its own and claims its GPUs here, under a
    one-claimer lock (`{pool}/claims`, one slot) so that two such runs never hold part of what each needs. A pool
    with fewer than `n` slots can never run it: that is an error naming the fix."""
    storage = context.instance.event_log_storage
    if n <= 1 or not storage.supports_global_concurrency_limits:
        yield
        return
    if pool not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(pool)
    if pool not in storage.get_concurrency_keys():  # no limit, no default: the pool is unlimited
        yield
        return
    slots = storage.get_concurrency_info(pool).slot_count
    if slots < n:
        raise dg.Failure(f"the {pool!r} pool has {slots} slot(s) and this run holds {n} GPUs: give the pool one slot per GPU "
                         f"(MANGACOLOR_GPUS_TOTAL, then `mangacolor pools deploy/pools.yaml`)")
    lock = f"{pool}/claims"
    if lock not in storage.get_concurrency_keys():
        storage.set_concurrency_slots(lock, 1)
    run_id, step = context.run.run_id, str(context.op_handle)
    keys = [f"{step}[gpu {i + 1}/{n}]" for i in range(n)]

    def claim(key: str, name: str) -> None:
        while not storage.claim_concurrency_slot(key, run_id, name).is_claimed:
            time.sleep(poll_s)

    try:
        claim(lock, f"{step}[claims]")
        try:
            for name in keys:
                claim(pool, name)
        finally:
            storage.free_concurrency_slot_for_step(run_id, f"{step}[claims]")
        context.log.info(f"holding {n} slots of the {pool!r} pool, one per GPU")
        yield
    finally:
        for name in keys:
            storage.free_concurrency_slot_for_step(run_id, name)


# --- the training Job on Kubernetes -------------------------------------------------------------------------


def job_name(asset: str, run_id: str, attempt: int = 0) -> str:
    """A DNS-1123 name of at most 52 characters: with an index suffix it stays a pod hostname."""
    base = asset.replace("_", "-")[:30].strip("-")
    return f"mc-{base}-{run_id[:8]}" + (f"-{attempt}" if attempt else "")


def executor_settings(path: Path = DEPLOY / "executor.yaml") -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def training_job(name: str, image: str, per_node: int, nodes: int, spec_ref: str, env: dict[str, str],
                 executor: dict | None = None, pods: dict | None = None):
    """(the training Job, its headless Service or None) as dagster-k8s constructs them: the executor's pull policy,
    service account, secrets and environment (deploy/executor.yaml, its step settings under ours), `per_node` GPUs per
    pod with their CPU, memory, /dev/shm, tolerations and node selector (`gpu_pod_config`), `nodes` pods as an indexed
    Job meeting at pod 0 through the Service."""
    import kubernetes
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
    from dagster_k8s.models import k8s_model_from_dict

    executor = executor_settings() if executor is None else executor
    pods = pods or gpu_pods()
    port = int(pods.get("rdzv_port", 29400))
    rdzv = f"{name}-0.{name}:{port}" if nodes > 1 else None
    own = gpu_pod_config(per_node, pods)
    own["container_config"]["command"] = pod_command(per_node, nodes, rdzv, spec_ref, rdzv_id=name)
    if nodes > 1:
        own["container_config"]["ports"] = [{"name": "rdzv", "container_port": port}]
        own["pod_spec_config"]["subdomain"] = name  # pod i answers at <name>-i.<name>
    own["job_spec_config"] = {"completions": nodes, "parallelism": nodes, "completion_mode": "Indexed", "backoff_limit": 0}
    context = K8sContainerContext(
        image_pull_policy=executor.get("image_pull_policy"), image_pull_secrets=executor.get("image_pull_secrets"),
        service_account_name=executor.get("service_account_name"), env_config_maps=executor.get("env_config_maps"),
        env_secrets=executor.get("env_secrets"), env_vars=executor.get("env_vars"), volume_mounts=executor.get("volume_mounts"),
        volumes=executor.get("volumes"), labels=executor.get("labels"), namespace=executor.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor.get("step_k8s_config") or {}),
    ).merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(own)))
    config = DagsterK8sJobConfig(job_image=image, image_pull_policy=executor.get("image_pull_policy"))
    labels = {"mangacolor/launch": name}
    job = construct_dagster_k8s_job(config, args=None, job_name=name, pod_name=name, component="training",
                                    user_defined_k8s_config=context.run_k8s_config, labels=labels,
                                    env_vars=[{"name": k, "value": v} for k, v in env.items()])
    if nodes == 1:
        return job, None
    service = k8s_model_from_dict(kubernetes.client.V1Service, {
        "api_version": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        # Headless, and answering before the pods are ready: the rendezvous happens while they start.
        "spec": {"cluster_ip": "None", "selector": labels, "publish_not_ready_addresses": True,
                 "ports": [{"name": "rdzv", "port": port, "target_port": port}]},
    })
    return job, service


def run_k8s_job(context: dg.AssetExecutionContext, job, service, namespace: str | None, nodes: int,
                poll_s: float = 10.0) -> dg.PipesClientCompletedInvocation:
    """Create the Job (and Service), stream pod 0's log as the Pipes channel (rank 0 reports there), wait for every
    pod to succeed, then delete both."""
    import kubernetes
    from dagster_k8s.client import DagsterKubernetesClient, WaitForPodState
    from dagster_k8s.pipes import PipesK8sPodLogsMessageReader
    from dagster_k8s.utils import detect_current_namespace

    if os.getenv("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()
    else:
        kubernetes.config.load_kube_config()
    client = DagsterKubernetesClient.production_client()
    namespace = namespace or detect_current_namespace(None) or "default"
    name = job.metadata.name
    reader = PipesK8sPodLogsMessageReader()
    with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(), message_reader=reader) as session:
        container = job.spec.template.spec.containers[0]
        container.env = [*(container.env or []),
                         *(kubernetes.client.V1EnvVar(name=k, value=v) for k, v in session.get_bootstrap_env_vars().items())]
        if service is not None:
            client.core_api.create_namespaced_service(namespace, service)
        client.batch_api.create_namespaced_job(namespace, job)
        try:
            pods = client.wait_for_job_to_have_pods(name, namespace, wait_time_between_attempts=poll_s)
            first = next((p for p in pods if (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") == "0"),
                         pods[0]).metadata.name
            client.wait_for_pod(first, namespace, wait_for_state=WaitForPodState.Ready, wait_time_between_attempts=poll_s)
            reader.consume_pod_logs(context=context, core_api=client.core_api, namespace=namespace, pod_name=first)
            # No time limit: StyleGAN2's 700k iterations take days (a retried step resumes from the mirror anyway).
            client.wait_for_job_success(name, namespace, wait_timeout=0, wait_time_between_attempts=poll_s, num_pods_to_wait_for=nodes)
        finally:
            client.delete_job(name, namespace)
            if service is not None:
                with contextlib.suppress(kubernetes.client.ApiException):
                    client.core_api.delete_namespaced_service(service.metadata.name, namespace)
    return dg.PipesClientCompletedInvocation(session)


# --- an asset's training, here or launched ----------------------------------------------------------------


def _visible_gpus(context: dg.AssetExecutionContext, device, n: int) -> dict:
    """CUDA_VISIBLE_DEVICES for `n` ranks on this machine: the GPUs this run claimed (`mangacolor.device.claim_gpus`),
    so that another run on a multi-GPU host does not pick them. Nothing on the CPU."""
    if not str(device.device).startswith(("cuda", "auto")):
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    from mangacolor.device import claim_gpus

    claimed = claim_gpus(n, torch.cuda.device_count())
    # Indices into what this process sees: through its own CUDA_VISIBLE_DEVICES when one is set.
    seen = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return {"CUDA_VISIBLE_DEVICES": ",".join(seen[i] if seen else str(i) for i in claimed)}


def train_stage(context: dg.AssetExecutionContext, torchrun: TorchrunResource, stage: str, mlflow_run_id: str, tracking_uri: str,
                preset: dict, store, titles: list[str], device, work: Path, **args) -> tuple[Any, dict]:
    """Train `stage` (a name in mangacolor/stages/launch.py's STAGES) under `torchrun`: (the loop's result as rank 0
    reported it, as JSON, its paths in `work`; the metadata rank 0 reported). `args`: JSON the stage's worker reads."""
    from mangacolor.config import work_dir
    from mangacolor.stages.launch import fetch

    per_node, nodes = torchrun.plan(stage, preset)
    st, transfer = store.get(), torchrun.transfer_mode()
    try:  # below the work folder: each pod finds (and mirrors) it at the same place below its own
        where = {"below_work_dir": Path(work).resolve().relative_to(work_dir().resolve()).as_posix()}
    except ValueError:
        if transfer == "store":
            raise dg.Failure(f"{work} is not below the work folder {work_dir()}: a training pod would not find it") from None
        where = {"path": str(work)}
    launch = f".launches/{stage}/{context.run.run_id}"
    spec = {"stage": stage, "artifact_root": store.artifact_root, "storage_options": dict(store.storage_options or {}),
            "titles": titles, "args": args, "work": where, "transfer": transfer, "results": f"{launch}/results",
            "mlflow": {"tracking_uri": tracking_uri, "run_id": mlflow_run_id},
            # The run's settings as launched (Launchpad overrides included), not just the preset's name.
            "settings": context.resources.settings.model_dump(mode="json"),
            "device": {"name": device.device, "precision": device.precision, "seed": device.seed, "threads": device.threads}}
    if transfer == "store":
        spec_ref = st.uri(launch, "spec.json")
        st.write_text(st.path(launch, "spec.json"), json.dumps(spec, indent=1))
    else:
        Path(work).mkdir(parents=True, exist_ok=True)
        spec_ref = str(Path(work) / "torchrun_spec.json")
        Path(spec_ref).write_text(json.dumps(spec, indent=1))
    context.log.info(f"launching torchrun for {stage}: {nodes} node(s) x {per_node} process(es) ({torchrun.launcher})")
    with gpu_slots(context, per_node * nodes):
        if torchrun.launcher == "k8s":
            name = job_name(stage, context.run.run_id, context.retry_number)
            job, service = training_job(name, torchrun.image(), per_node, nodes, spec_ref, torchrun.env)
            invocation = run_k8s_job(context, job, service, torchrun.k8s_namespace or executor_settings().get("job_namespace"), nodes)
        else:
            env = {**os.environ, **_visible_gpus(context, device, per_node), **torchrun.env}
            invocation = dg.PipesSubprocessClient(cwd=str(Path(__file__).resolve().parents[1])).run(
                context=context, command=[sys.executable, *torchrun_command(per_node, 1, None, spec_ref)], env=env)
    meta = dict(invocation.get_materialize_result().metadata or {})
    raw = meta.pop("train_result")
    raw = raw.value if isinstance(raw, dg.JsonMetadataValue) else raw
    if transfer == "store":
        raw = fetch(raw, Path(work), st, spec["results"])
    return raw, meta


def run_stage(context: dg.AssetExecutionContext, torchrun: TorchrunResource | None, stage: str, train, *, tracker, mlflow,
              settings, store, device, work: Path, titles=(), **args) -> tuple[Any, dict]:
    """`train(store, preset, titles, work, device spec, tracker, progress, **args)` in this process, or under
    `torchrun` when the stage takes more than one rank (`TorchrunResource.plan`: each rank runs the stage `stage` of
    mangacolor/stages/launch.py, the same function): (the loop's result as it returns it; the metadata rank 0
    reported, {} in this process). `torchrun` None: in this process."""
    preset = settings.load()
    if torchrun is not None and torchrun.launches(stage, preset):
        from mangacolor.stages.launch import from_json

        raw, meta = train_stage(context, torchrun, stage, tracker.run_id, mlflow.tracking_uri, preset, store,
                                list(titles), device, work, **args)
        return from_json(stage, raw), meta
    return train(store.get(), preset, list(titles), work, device.spec(), tracker, context.log.info, **args), {}
