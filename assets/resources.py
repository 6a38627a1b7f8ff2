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
from mangacolor.tracking import MlflowTracker


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
    """One MLflow run per materialization of a training or evaluation asset."""

    tracking_uri: str
    experiment: str = "mangacolor"
    artifact_location: str | None = None

    def _setup(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            mlflow.create_experiment(self.experiment, artifact_location=self.artifact_location)
        mlflow.set_experiment(self.experiment)
        return mlflow

    @contextlib.contextmanager
    def run(self, context: dg.AssetExecutionContext, params: dict | None = None):
        """Open the run of this materialization; tags tie it to the Dagster run, asset and partition."""
        mlflow = self._setup()
        key = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": key}
        if partition:
            tags["dagster.partition"] = partition
        name = f"{key}" + (f"[{partition}]" if partition else "") + f"-{context.run.run_id[:8]}"
        with mlflow.start_run(run_name=name, tags=tags) as active:
            tracker = MlflowTracker(active.info.run_id)
            if params:
                tracker.log_params(params)
            yield tracker


def default_tracking_uri(project: Path) -> str:
    # MLflow wants an absolute sqlite URI: four slashes for an absolute path.
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project / 'mlflow.db').resolve()}"
