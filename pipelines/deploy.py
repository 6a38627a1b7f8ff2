"""Cluster settings the instance file cannot hold: per-pool slot limits and the Kubernetes executor.

`deploy/dagster.yaml` (PostgreSQL, S3 compute logs, queued runs) and `deploy/helm-values.yaml` hold
the instance; Dagster keeps per-pool limits in its storage, so `apply_pool_limits` (CLI: `mangacolor
pools deploy/pools.yaml`) writes them there: `gpu` = the GPUs available, so two materializations
never share a GPU; pools not listed use the instance's `default_limit`. `executor()` chooses
`k8s_job_executor` (configured by `deploy/executor.yaml`) when MANGACOLOR_EXECUTOR=k8s.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def gpus_available() -> int:
    """GPUs for the `gpu` pool (one slot per GPU): MANGACOLOR_GPUS_TOTAL, else the GPUs this machine sees, else 1 (a CPU
    runs one). In a Kubernetes pod the GPUs are the cluster's, not this pod's (which holds none: it runs the code
    server or this command): MANGACOLOR_GPUS_TOTAL is required there."""
    if os.environ.get("MANGACOLOR_GPUS_TOTAL"):
        return int(os.environ["MANGACOLOR_GPUS_TOTAL"])
    import torch

    seen = torch.cuda.device_count()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not seen:
        raise ValueError("the gpu pool's size 'auto' counts this machine's GPUs, and this pod has none: set MANGACOLOR_GPUS_TOTAL "
                         "to the GPUs of the cluster's GPU nodes (deploy/helm-values.yaml sets it)")
    return max(1, seen)


def pool_limits(path: str | Path = DEPLOY / "pools.yaml") -> dict[str, int]:
    """Slots per pool from a pools file: an int, or {env: NAME, default: int | auto} (auto: GPUs available)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    limits = {}
    for pool, value in raw.items():
        if isinstance(value, dict):
            got = os.environ.get(value.get("env", ""), "") or value.get("default", "auto")
            value = gpus_available() if got == "auto" else got
        try:
            limits[pool] = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: pool {pool!r} needs a whole number of slots, got {value!r}") from None
        if limits[pool] < 1:
            raise ValueError(f"{path}: pool {pool!r} needs at least 1 slot, got {limits[pool]}")
    return limits


def apply_pool_limits(instance: dg.DagsterInstance, limits: dict[str, int]) -> None:
    for pool, slots in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, slots)


def executor() -> dg.ExecutorDefinition | None:
    """k8s_job_executor, configured from deploy/executor.yaml, when MANGACOLOR_EXECUTOR=k8s; Dagster's in-process
    executor (each run's steps in the run's own process: no process start per step on a small machine) when
    MANGACOLOR_EXECUTOR=in_process; else Dagster's default."""
    kind = os.environ.get("MANGACOLOR_EXECUTOR", "default")
    if kind == "default":
        return None
    if kind == "in_process":
        return dg.in_process_executor
    if kind != "k8s":
        raise ValueError(f"MANGACOLOR_EXECUTOR must be 'default', 'in_process' or 'k8s'; got {kind!r}")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(yaml.safe_load((DEPLOY / "executor.yaml").read_text()))
