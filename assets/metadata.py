"""Materialization metadata: its shapes, kept small enough for the UI to read, and what every training asset shows.

A materialization event is stored with every run and shown in the asset's page: tables show at most
`TABLE_ROWS` rows (the whole table stays in the store, its path beside it), sample grids are kept as
PNG in the version folder and shown by a small JPEG (at most `THUMBNAIL_BYTES`), manifests are
described by Dagster's standard keys (`dagster/row_count`, `dagster/uri`, `dagster/column_schema`),
and an MLflow run is a link into the MLflow UI.
"""

import base64
import io
import json
import math
import os
import posixpath
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image

from mangacolor.io.images import encode_png, read_image, thumbnail_grid
from mangacolor.io.store import MANIFEST

TABLE_ROWS = 50
# JPEG bytes of one thumbnail (4 KB: 5.5 KB as the base64 inside the event); the thumbnails of one event
# share IMAGE_BYTES_PER_EVENT, so an event stays under 20 KB with its column schema, tables and numbers.
THUMBNAIL_BYTES = 4 * 1024
IMAGE_BYTES_PER_EVENT = 6 * 1024
METADATA_DIR = "metadata"  # inside a version folder: what the metadata shows in full (not in the manifest)
MLFLOW_UI_DEFAULT = "http://127.0.0.1:5000"


def _column_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(c), _column_type(frame[c].dtype)) for c in frame.columns])


def _cell(value):
    """A table cell Dagster stores: str, int, float, bool or None (NaN -> None, the rest as text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # arrays, lists: not a scalar
        pass
    return str(value)


def table_value(frame: pd.DataFrame, limit: int = TABLE_ROWS) -> dg.MetadataValue:
    """The first `limit` rows of `frame` as a Dagster table (schema from its dtypes)."""
    records = [dg.TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in frame.head(limit).to_dict("records")]
    return dg.MetadataValue.table(records, schema=column_schema(frame))


def table_metadata(name: str, frame: pd.DataFrame, full: str | None = None, limit: int = TABLE_ROWS) -> dict:
    """`name`: at most `limit` rows; `name_rows`: how many there are; `name_full`: where all of them are."""
    meta = {name: table_value(frame, limit), f"{name}_rows": len(frame)}
    if full is not None:
        meta[f"{name}_full"] = dg.MetadataValue.path(full)
    return meta


def manifest_metadata(uri: str, frame: pd.DataFrame) -> dict:
    """Dagster's standard keys for a committed manifest: rows, where the version is, its columns."""
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/uri": dg.MetadataValue.text(uri),
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(frame)),
    }


def thumbnail_jpeg(grid: np.ndarray, max_bytes: int = THUMBNAIL_BYTES) -> bytes:
    """`grid` as a JPEG of at most `max_bytes`: lower quality first, then halve the size until it fits."""
    img = Image.fromarray(grid if grid.ndim == 3 else np.repeat(grid[..., None], 3, axis=2)).convert("RGB")
    img.thumbnail((512, 256), Image.Resampling.LANCZOS)
    while True:
        for quality in (80, 65, 50, 35):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        if min(img.size) <= 8:
            raise ValueError(f"cannot encode a {img.size} thumbnail in {max_bytes} bytes")
        img = img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.LANCZOS)


def image_budget(images_in_event: int) -> int:
    """The JPEG bytes each of `images_in_event` thumbnails of one event may take."""
    return min(THUMBNAIL_BYTES, IMAGE_BYTES_PER_EVENT // max(1, images_in_event))


def thumbnail_md(grid: np.ndarray, caption: str = "", stored: str | None = None, max_bytes: int = THUMBNAIL_BYTES) -> dg.MetadataValue:
    """Markdown with a small inline JPEG of `grid` and, when given, where the full grid is stored."""
    b64 = base64.b64encode(thumbnail_jpeg(grid, max_bytes)).decode()
    where = f"\n\nfull grid: `{stored}`" if stored else ""
    return dg.MetadataValue.md(f"{caption}\n\n![samples](data:image/jpeg;base64,{b64}){where}")


def samples_md(store, version_dir: str, images: list[np.ndarray], caption: str = "", name: str = "samples",
               height: int = 96, max_bytes: int = THUMBNAIL_BYTES) -> dg.MetadataValue:
    """The grid of `images` kept as `metadata/{name}.png` in the version folder, shown by a small thumbnail.

    The version folder is sealed already: the file sits beside the manifest's files without changing
    the data version (`mangacolor store verify` checks only what the manifest lists)."""
    if not images:
        return dg.MetadataValue.md("_no images_")
    grid = thumbnail_grid(images, height=height)
    path = posixpath.join(version_dir, METADATA_DIR, f"{name}.png")
    store.write_bytes(path, encode_png(grid, compression=9))
    return thumbnail_md(grid, caption, store.uri(store.relative(path)), max_bytes)


def mlflow_run_url(experiment_id: str, run_id: str, base: str | None = None) -> str:
    base = (base or os.environ.get("MANGACOLOR_MLFLOW_UI") or MLFLOW_UI_DEFAULT).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_run_link(tracking_uri: str, run_id: str) -> dg.MetadataValue:
    """A link to `run_id` in the MLflow UI (MANGACOLOR_MLFLOW_UI, default the local `mlflow ui`)."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    return dg.MetadataValue.url(mlflow_run_url(experiment_id, run_id))


# --- a version, and what a training asset shows ------------------------------------------------------


def version_metadata(store, version: str, version_dir: str) -> dict:
    """The version written: its data version, its folder and Dagster's row count, URI and column schema of its manifest."""
    uri = store.uri(store.relative(version_dir))
    return {"data_version": version, "uri": dg.MetadataValue.path(uri),
            **manifest_metadata(uri, store.read_manifest(version_dir))}


def manifest_uri(store, version_dir: str) -> str:
    """Where the whole table of a version is: its manifest (metadata tables show at most 50 of its rows)."""
    return store.uri(store.relative(f"{version_dir}/{MANIFEST}"))


def recorded_result(store, recorded, **more) -> dg.MaterializeResult:
    """The materialization of a version a stage recorded (`mangacolor.stages.common.Recorded`): its facts as metadata."""
    return dg.MaterializeResult(metadata={**version_metadata(store, recorded.version, recorded.folder), **recorded.facts, **more},
                                data_version=dg.DataVersion(recorded.version))


def fallback_metadata(fallbacks: list[str], tracker=None) -> dict:
    """Metadata and MLflow tags saying which upstream asset was stood in for (none: `fallbacks: none`)."""
    text = "; ".join(fallbacks) if fallbacks else "none"
    if tracker is not None:
        tracker.set_tags({"fallbacks": text[:5000], "fallback": str(bool(fallbacks)).lower()})
    listed = "\n".join(f"- {f}" for f in fallbacks) if fallbacks else "_none: every upstream asset was materialized_"
    return {"fallback": bool(fallbacks), "fallbacks": dg.MetadataValue.md(listed)}


def notes_md(notes: list[str]) -> dg.MetadataValue:
    """A stage's notes as a markdown list (`_none_` without any)."""
    return dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "_none_")


def training_grid(store, version_dir: str, image, caption: str, name: str = "samples", height: int = 384,
                  max_bytes: int = THUMBNAIL_BYTES) -> dg.MetadataValue:
    """A training loop's sample grid (an array, a local file or a store path) kept in the version folder, shown small."""
    if isinstance(image, (str, Path)):  # a local file (the loop's samples) or a path in the store
        image = read_image(Path(image).read_bytes() if Path(image).is_file() else store.read_bytes(str(image)))
    return samples_md(store, version_dir, [image], caption, name, min(height, image.shape[0]), max_bytes)


def log_training_pages(tracker, store, **roles: pd.DataFrame) -> None:
    """The page ids a stage trained on, by role (an MLflow artifact), and each role's rows as a training dataset input."""
    ids = {role: sorted(map(str, rows["bw_id" if "bw_id" in rows else "id"].unique())) for role, rows in roles.items()}
    tracker.log_text("training_pages.json", json.dumps(ids, indent=1))
    for role, rows in roles.items():
        tracker.log_dataset(rows, name=role, source=store.uri())


def model_result(store, asset: str, weights: str, inputs: dict[str, pd.DataFrame], tracker, meta: dict,
                 row_meta: dict | None = None, grids: dict | None = None) -> dg.MaterializeResult:
    """A trained network's version: its weights and the ids of every training page (by role) into the store and
    MLflow; `meta` first, then the version's; `grids`: metadata key -> (images, caption, height) of its sample grids."""
    from mangacolor.stages.common import WEIGHTS_PATH, write_model

    tracker.log_artifact(weights, "weights")
    log_training_pages(tracker, store, **inputs)
    writer = store.begin(asset)
    write_model(writer, weights, inputs, row_meta)
    version, vdir, _ = writer.seal()
    grids = grids or {}
    meta = {**{f"{role}_pages": len(rows) for role, rows in inputs.items()}, **meta, **version_metadata(store, version, vdir),
            "weights": dg.MetadataValue.path(store.uri(store.relative(f"{vdir}/{WEIGHTS_PATH}"))),
            "mlflow_run_id": tracker.run_id,
            **{key: samples_md(store, vdir, images, caption, key, height, image_budget(len(grids)))
               for key, (images, caption, height) in grids.items()}}
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


def colorizer_result(store, recorded, result, resumed: int, tracker, launched: dict, fallback: dict, caption: str,
                     **more) -> dg.MaterializeResult:
    """A colorizer training step's version (`recorded`: the stage's Recorded) with the loop's result and its sample grid."""
    meta = {
        **version_metadata(store, recorded.version, recorded.folder),
        "steps": result.steps,
        "resumed_from_step": resumed,
        **{k: float(v) for k, v in result.final_metrics.items()},
        "perceptual_random_vgg": result.perceptual_random,
        "mlflow_run_id": tracker.run_id,
        **launched,
        **recorded.facts,
        **fallback,
        **more,
    }
    if recorded.samples:
        meta["samples"] = training_grid(store, recorded.folder, recorded.samples, caption)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(recorded.version))
