"""Materialization metadata that the UI can read: small events, tables of at most 50 rows, thumbnails
kept in the store, Dagster's standard manifest keys and a link to the MLflow run."""

import base64
import io
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._serdes import serialize_value
from PIL import Image

from assets.ingest import register_and_observe
from assets.metadata import (
    THUMBNAIL_BYTES, manifest_metadata, mlflow_run_link, mlflow_run_url, samples_md, table_metadata, thumbnail_jpeg,
)
from mangacolor.config import load_preset
from mangacolor.io.images import read_image
from mangacolor.io.store import UNPARTITIONED, Store
from pipelines.definitions import executable_defs
from tests.assets.conftest import build, materialize_partitions

EVENT_LIMIT = 20 * 1024


def _manifest(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"t/{i:05d}" for i in range(n)], "page": np.arange(n), "error": rng.random(n),
                         "matched": rng.random(n) > 0.5, "reason": [None if i % 3 else "damaged" for i in range(n)]})


def _noisy_grid(width: int = 768, height: int = 512) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _data_uri_image(markdown: str) -> Image.Image:
    payload = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1)
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_a_large_table_shows_fifty_rows_and_counts_all():
    frame = _manifest(10_000)
    meta = table_metadata("pairs", frame, "file:///store/page_pairs/all/v1/manifest.parquet")
    shown = meta["pairs"]
    assert isinstance(shown, dg.TableMetadataValue)
    assert len(shown.records) == 50 and meta["pairs_rows"] == 10_000
    assert [c.name for c in shown.schema.columns] == ["id", "page", "error", "matched", "reason"]
    assert [c.type for c in shown.schema.columns] == ["string", "int", "float", "bool", "string"]
    first = shown.records[0].data
    assert first == {"id": "t/00000", "page": 0, "error": pytest.approx(frame["error"][0]), "matched": bool(frame["matched"][0]),
                     "reason": "damaged"}
    assert shown.records[1].data["reason"] is None
    assert meta["pairs_full"].value.endswith("manifest.parquet")
    assert len(serialize_value(shown)) < EVENT_LIMIT // 2

    standard = manifest_metadata("file:///store/page_pairs/all/v1", frame)
    assert standard["dagster/row_count"].value == 10_000
    assert standard["dagster/uri"].value == "file:///store/page_pairs/all/v1"
    assert [c.name for c in standard["dagster/column_schema"].schema.columns] == list(frame.columns)


def test_thumbnail_of_a_page_grid_fits_its_budget_and_decodes():
    data = thumbnail_jpeg(_noisy_grid())  # noise: the worst case for JPEG
    assert len(data) <= THUMBNAIL_BYTES
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG" and img.width >= 64 and abs(img.width / img.height - 1.5) < 0.05
    with pytest.raises(ValueError, match="cannot encode"):
        thumbnail_jpeg(_noisy_grid(), max_bytes=100)


def test_samples_are_kept_in_the_version_folder_and_shown_small(tmp_path):
    store = Store(tmp_path / "artifacts")
    vdir = store.path("some_asset", UNPARTITIONED, "v1")
    pages = [_noisy_grid(256, 384), _noisy_grid(256, 384)[..., 0]]
    value = samples_md(store, vdir, pages, "page | grey", height=512)
    assert len(value.value.encode()) <= THUMBNAIL_BYTES * 4 / 3 + 200  # base64 of at most 8 KB plus the caption
    assert value.value.startswith("page | grey")
    assert _data_uri_image(value.value).size[0] > 0
    stored = store.path("some_asset", UNPARTITIONED, "v1", "metadata", "samples.png")
    assert store.uri(store.relative(stored)) in value.value
    grid = read_image(store.read_bytes(stored))
    assert grid.shape[0] == 512 and grid.shape[1] > 2 * 340  # the full grid, not the thumbnail
    assert samples_md(store, vdir, []).value == "_no images_"


def test_mlflow_run_link_opens_the_run_in_the_ui(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("links", artifact_location=str(tmp_path / "mlruns"))
    run = client.create_run(experiment)
    monkeypatch.delenv("MANGACOLOR_MLFLOW_UI", raising=False)
    link = mlflow_run_link(uri, run.info.run_id)
    assert isinstance(link, dg.UrlMetadataValue)
    assert link.value == f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.info.run_id}"
    monkeypatch.setenv("MANGACOLOR_MLFLOW_UI", "https://mlflow.example.org/")
    assert mlflow_run_url("7", "abc") == "https://mlflow.example.org/#/experiments/7/runs/abc"


def test_ingest_events_are_small_and_describe_their_manifests(project):
    """The ingest stages of one title on the demo corpus: every event <= 20 KB, with row count, URI, schema, tables."""
    defs = build(project)
    instance = dg.DagsterInstance.ephemeral()
    register_and_observe(instance, load_preset(project["preset"]))
    materialize_partitions(defs, instance, ["color_pages"], ["ember_blade"])
    materialize_partitions(defs, instance, ["bw_pages"], ["ember_blade"])
    result = dg.materialize(executable_defs(defs), selection=["page_pairs", "page_splits"], instance=instance, resources=defs.resources)
    assert result.success
    store = Store(project["artifacts"])
    events = {}
    for key in ("color_pages", "bw_pages", "page_pairs", "page_splits"):
        records = instance.fetch_materializations(dg.AssetKey(key), limit=10).records
        assert len(records) == 1, key
        events[key] = records[0].event_log_entry
    for key, entry in events.items():
        size = len(serialize_value(entry).encode())
        assert size <= EVENT_LIMIT, f"{key}: {size} bytes"
        meta = entry.asset_materialization.metadata
        partition = entry.asset_materialization.partition or UNPARTITIONED
        vdir = store.latest_dir(key, partition)
        manifest = store.read_manifest(vdir)
        assert meta["dagster/row_count"].value == len(manifest) > 0, key
        assert meta["dagster/uri"].value == store.uri(store.relative(vdir)), key
        assert [c.name for c in meta["dagster/column_schema"].schema.columns] == list(manifest.columns), key
    pairs = events["page_pairs"].asset_materialization.metadata
    assert isinstance(pairs["pairs"], dg.TableMetadataValue)
    assert len(pairs["pairs"].records) == min(50, pairs["pairs_rows"].value) > 0
    assert pairs["pairs_full"].value == store.uri(store.relative(f"{store.latest_dir('page_pairs')}/manifest.parquet"))
    for key in ("color_pages", "page_pairs"):
        samples = events[key].asset_materialization.metadata["samples"].value
        assert _data_uri_image(samples).size[0] > 0
        stored = re.search(r"full grid: `([^`]+)`", samples).group(1)
        assert stored.endswith("/metadata/samples.png") and read_image(store.read_bytes(stored)).shape[0] >= 96
    assert isinstance(events["color_pages"].asset_materialization.metadata["quarantine"], dg.TableMetadataValue)
