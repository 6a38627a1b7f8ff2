"""Dagster resources: the store, the device, MLflow and the preset, each a thin shell over the library.

Local defaults (a project-local artifact folder, a SQLite MLflow store) come from
`pipelines/definitions.py`; a deployment swaps them by environment (`MANGACOLOR_ARTIFACT_ROOT=s3://...`,
`MLFLOW_TRACKING_URI=...`) without touching an asset.
"""


import contextlib
import os
from pathlib import Path
from typing import Any

import dagster as dg

from mangacolor import config as mc_config
from mangacolor.device import DeviceSpec, resolve_device
from mangacolor.io.store import Store
from mangacolor.tracking import active_run, find_or_create_run, get_or_create_experiment


class StoreResource(dg.ConfigurableResource):
    """Where artifacts live: a local folder or any fsspec URL (s3://bucket/prefix)."""

    artifact_root: str
    storage_options: dict[str, Any] = {}

    def get(self) -> Store:
        return Store(self.artifact_root, self.storage_options or None)


class DeviceResource(dg.ConfigurableResource):
    """cuda / mps / cpu, autocast precision and seed for every GPU-resourced asset."""

    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    threads: int | None = None  # CPU threads for torch; 1 is much faster on a machine other jobs share

    def spec(self) -> DeviceSpec:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return resolve_device(self.device, self.precision, self.seed)


class SettingsResource(dg.ConfigurableResource):
    """The preset (configs/<name>.yaml or a path) every stage reads its typed config from."""

    preset: str = "demo"
    artifact_root: str | None = None

    def load(self) -> dict:
        return mc_config.load_preset(self.preset, **({"artifact_root": self.artifact_root} if self.artifact_root else {}))


class MlflowResource(dg.ConfigurableResource):
    """MLflow at `tracking_uri` (and `registry_uri`, default the same), reached through an explicit client.

    Training and evaluation assets get one MLflow run per materialization. Per-page stages
    (`run(..., per_materialization=True)`) share one run across the partitions a Dagster backfill (or
    run) materializes: found or created by the tag `dagster_run_id` (the backfill id when there is one)
    and the asset key, with each partition's params, metrics and artifacts under its partition key.
    `artifact_location` None: the server decides (http(s) tracking URI), or `mlartifacts/` beside a
    SQLite store (`mangacolor.tracking.artifact_location`).
    """

    tracking_uri: str
    registry_uri: str | None = None
    experiment: str = "mangacolor"
    artifact_location: str | None = None
    system_metrics: bool | None = None  # None: on when psutil is installed (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false: off)

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    def experiment_id(self, client=None) -> str:
        return get_or_create_experiment(client or self.client(), self.experiment, self.artifact_location)

    @contextlib.contextmanager
    def run(self, context: dg.AssetExecutionContext, params: dict | None = None, per_materialization: bool = False):
        """Open the run of this materialization; tags tie it to the Dagster run, asset and partition.

        Yields an `MlflowTracker` (`tracker.run_id`, `tracker.experiment_id`); inside the block the
        run is also the active fluent run of this store (`mangacolor.tracking.active_run`).
        """
        client = self.client()
        experiment_id = self.experiment_id(client)
        key = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        group = context.run.tags.get("dagster/backfill") or context.run.run_id
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": key}
        if per_materialization:
            tags["dagster_run_id"] = group
            name = f"{key}-{group[:8]}"
            run_id = find_or_create_run(client, experiment_id, tags, ("dagster_run_id", "dagster.asset_key"), name)
            prefix = f"{partition}/" if partition else ""
        else:
            if partition:
                tags["dagster.partition"] = partition
            name = f"{key}" + (f"[{partition}]" if partition else "") + f"-{context.run.run_id[:8]}"
            run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
            prefix = ""
        with active_run(client, run_id, self.registry_uri, self.system_metrics, prefix=prefix) as tracker:
            tracker.experiment_id = experiment_id
            if per_materialization and partition:
                tracker.set_tags({"dagster.run_id": context.run.run_id})
            if params:
                tracker.log_params(params)
            yield tracker


def default_tracking_uri(project: Path) -> str:
    # MLflow wants an absolute sqlite URI: four slashes for an absolute path.
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project / 'mlflow.db').resolve()}"
