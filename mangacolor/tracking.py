"""Experiment tracking seen by the training loops: a tiny protocol, MLflow behind it in production.

Loops call `tracker.log_metrics(...)` and never import mlflow, so a test passes a `NullTracker`
and asserts on what was logged, and the Dagster assets pass an `MlflowTracker` bound to the one
run of their materialization.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_image(self, name: str, image: np.ndarray) -> None: ...
    def log_text(self, name: str, text: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...


class NullTracker:
    """Keeps everything in memory: for tests and for library use without MLflow."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.images: dict[str, np.ndarray] = {}
        self.texts: dict[str, str] = {}
        self.artifacts: list[str] = []

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


class MlflowTracker:
    """Logs to the active MLflow run (the caller opens and closes it)."""

    def __init__(self, run_id: str | None = None):
        import mlflow

        self._mlflow = mlflow
        self.run_id = run_id

    def log_params(self, params):
        flat = flatten_params(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics, step=None):
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, name, image):
        self._mlflow.log_image(np.asarray(image), artifact_file=name if "." in name else f"{name}.png")

    def log_text(self, name, text):
        self._mlflow.log_text(text, name)

    def log_artifact(self, path, artifact_path=None):
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dir_as_artifacts(tracker: Tracker, directory: Path, artifact_path: str) -> None:
    with tempfile.TemporaryDirectory():
        for p in sorted(Path(directory).rglob("*")):
            if p.is_file():
                tracker.log_artifact(p, artifact_path)
