"""Experiment tracking seen by the training loops: a tiny protocol, MLflow behind it in production.

Loops call `tracker.log_metrics(...)` and never import mlflow, so a test passes a `NullTracker`
and asserts on what was logged, and the Dagster assets pass an `MlflowTracker` bound to the one
run of their materialization.

`MlflowTracker` logs through an explicit `MlflowClient` built from a tracking URI, never through the
process-wide URI, so two stores in one process each get their own runs. The few MLflow calls that only
exist in the fluent API (`mlflow.pyfunc.log_model`, `mlflow.register_model`, system metrics) run
inside `fluent_scope`, which points the process-wide URIs at one store for the block and restores them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_image(self, name: str, image: np.ndarray) -> None: ...
    def log_text(self, name: str, text: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...


class NullTracker:
    """Keeps everything in memory: for tests and for library use without MLflow."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.images: dict[str, np.ndarray] = {}
        self.texts: dict[str, str] = {}
        self.artifacts: list[str] = []
        self.tags: dict[str, str] = {}
        self.datasets: dict[str, tuple[str, str, int]] = {}

    def set_tags(self, tags):
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_dataset(self, frame, name, source, context="training"):
        self.datasets[name] = (source, context, len(frame))

    def flush(self):
        pass

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_image(self, name, image):
        self.images[name] = np.asarray(image)

    def log_text(self, name, text):
        self.texts[name] = text

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(str(path))

    def series(self, key: str) -> list[float]:
        return [m[key] for _, m in self.metrics if key in m]


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat `a.b.c` keys with string values, as MLflow params want."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:6000]
    return flat


def _json_cell(value):
    """A manifest cell as MLflow's dataset schema takes it: text, None, or the JSON text of anything else."""
    return value if value is None or isinstance(value, str) else json.dumps(value, default=str)


class MlflowTracker:
    """Logs to one MLflow run through an explicit client (the caller opens and closes the run).

    Metrics are logged asynchronously (`synchronous=False`) and waited for by `flush()`, which the
    run's owner calls before it ends the run. `prefix` (a partition key and "/") goes in front of every
    key and artifact path, so the partitions of one materialization share a run without clashing.
    """

    def __init__(self, run_id: str, client=None, tracking_uri: str | None = None, prefix: str = "",
                 synchronous: bool = False):
        import mlflow

        self.client = client or mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.prefix = prefix
        self.synchronous = synchronous
        self.experiment_id: str | None = None
        self._pending: list = []

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(self._key(k), v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics, step=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(self._key(k), float(v), now, step or 0) for k, v in metrics.items()]
        pending = self.client.log_batch(self.run_id, metrics=batch, synchronous=self.synchronous)
        if pending is not None:
            self._pending.append(pending)

    def set_tags(self, tags):
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(self._key(k), str(v)[:5000]) for k, v in tags.items()])

    def log_image(self, name, image):
        self.client.log_image(self.run_id, np.asarray(image), artifact_file=self._key(name if "." in name else f"{name}.png"))

    def log_text(self, name, text):
        self.client.log_text(self.run_id, text, self._key(name))

    def log_artifact(self, path, artifact_path=None):
        target = "/".join(p for p in (self.prefix.rstrip("/"), artifact_path) if p) or None
        self.client.log_artifact(self.run_id, str(path), artifact_path=target)

    def log_dataset(self, frame, name: str, source: str, context: str = "training") -> None:
        """A manifest as an MLflow dataset input of the run (`mlflow.data.from_pandas` + a context tag)."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        import pandas as pd

        frame = frame.reset_index(drop=True)
        for column in frame.columns:
            # Text columns as plain Python objects: MLflow's digest compares cell types, which Arrow-backed
            # string columns (a manifest read back from Parquet) refuse, and that failed a whole training
            # asset. Lists/dicts in a cell become JSON text, as the schema wants; missing values None.
            if frame[column].dtype == object or isinstance(frame[column].dtype, (pd.StringDtype, pd.ArrowDtype)):
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None).map(_json_cell)
        with warnings.catch_warnings():
            # MLflow registers its local artifact source twice and warns, on every path, that the two
            # (identical) readings are ambiguous; either is right.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            dataset = mlflow.data.from_pandas(frame, source=source, name=self._key(name))
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])

    def flush(self) -> None:
        """Wait for every asynchronous metric batch; raises the first logging error."""
        pending, self._pending = self._pending, []
        for op in pending:
            op.wait()


# --- where runs go ------------------------------------------------------------------------------------

SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc")
# Guards the process-wide MLflow URIs while a fluent block runs (re-entrant: a block may nest in a run).
_FLUENT_LOCK = threading.RLock()


def is_server(tracking_uri: str) -> bool:
    """True for a tracking server (http(s), Databricks): it decides where artifacts go."""
    return urlparse(tracking_uri).scheme in SERVER_SCHEMES


def artifact_location(tracking_uri: str, configured: str | None = None) -> str | None:
    """The artifact location to create an experiment with; None leaves it to the tracking server.

    An explicitly configured location wins. A server (`mlflow server --artifacts-destination` or
    `--default-artifact-root`) picks its own, so we pass none. For a local SQLite store the artifacts
    go in `mlartifacts/` beside the database file; any other database store keeps MLflow's default.
    """
    if configured:
        return configured
    if is_server(tracking_uri):
        return None
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = tracking_uri[len("sqlite:///"):]
        if db and db != ":memory:":
            return (Path(db).resolve().parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client, name: str, configured_artifacts: str | None = None) -> str:
    """The id of experiment `name` in the client's store, created (see `artifact_location`) when missing."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, configured_artifacts))
    except MlflowException:
        found = client.get_experiment_by_name(name)  # created meanwhile by a concurrent step
        if found is None:
            raise
        return found.experiment_id


def find_or_create_run(client, experiment_id: str, tags: dict[str, str], key_tags: tuple[str, ...], run_name: str) -> str:
    """The run whose `key_tags` equal those in `tags`, else a new one; concurrent creators settle on the oldest."""

    def matching():
        query = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in key_tags)
        return client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"], max_results=5)

    found = matching()
    if found:
        return found[0].info.run_id
    mine = client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
    oldest = matching()[0].info.run_id
    if oldest != mine:  # another step created it first: use theirs
        client.delete_run(mine)
    return oldest


@contextlib.contextmanager
def fluent_scope(tracking_uri: str, registry_uri: str | None = None):
    """Point the process-wide tracking and registry URIs at one store for the block, then restore them.

    Held under a process lock, so two stores used from two threads wait for each other instead of
    logging into each other's store. The module variables are read directly because the public getters
    resolve defaults (and `set_tracking_uri(None)` would drop an inherited MLFLOW_TRACKING_URI).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _FLUENT_LOCK:
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri,
                 os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
        try:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri or tracking_uri)
            yield
        finally:
            tracking_utils._tracking_uri = saved[0]
            registry_utils._registry_uri = saved[1]
            for name, value in (("MLFLOW_TRACKING_URI", saved[2]), ("MLFLOW_REGISTRY_URI", saved[3])):
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def system_metrics_enabled() -> bool:
    """System metrics (CPU, memory, GPU) need psutil; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns them off."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0", "no"):
        return False
    return importlib.util.find_spec("psutil") is not None


@contextlib.contextmanager
def active_run(client, run_id: str, registry_uri: str | None = None, system_metrics: bool | None = None,
               prefix: str = ""):
    """Make `run_id` the active fluent run of the client's store for the block; yields its `MlflowTracker`.

    The run ends FINISHED, or FAILED when the block raises; pending asynchronous metrics are flushed
    first. System metrics are sampled while the block runs when `system_metrics_enabled()`.
    """
    import mlflow

    system_metrics = system_metrics_enabled() if system_metrics is None else system_metrics
    # Another store's run may be open in this thread (a run of store A opening one of store B): resume beside it.
    nested = mlflow.active_run() is not None
    with (fluent_scope(client.tracking_uri, registry_uri),
          mlflow.start_run(run_id=run_id, nested=nested, log_system_metrics=system_metrics)):
        tracker = MlflowTracker(run_id, client, prefix=prefix)
        try:
            yield tracker
        finally:
            tracker.flush()


def log_dir_as_artifacts(tracker: Tracker, directory: Path, artifact_path: str) -> None:
    with tempfile.TemporaryDirectory():
        for p in sorted(Path(directory).rglob("*")):
            if p.is_file():
                tracker.log_artifact(p, artifact_path)
