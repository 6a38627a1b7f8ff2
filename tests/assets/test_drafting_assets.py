"""The drafting stage materialized in-process on the demo corpus (two colour titles, tiny networks, a few
steps): blurred pages -> StyleGAN2 -> inversion encoder and drafting network -> coloring drafts.
Assertions on manifests, weights, metadata and MLflow runs."""

import dagster as dg
import mlflow
import numpy as np
import pytest
import torch
import yaml

import assets.drafting
import assets.ingest
from mangacolor.device import DeviceSpec
from mangacolor.stages.drafting import GREY_FALLBACK_NOTE, RANDOM_INIT_NOTE, invert_pages, load_latents, load_stored_psp
from mangacolor.drafting.blur import resize_square
from mangacolor.io.images import read_image
from mangacolor.io.store import Store
from mangacolor.models.psp import load_psp
from mangacolor.models.stylegan2 import load_generator
from mangacolor.stages.common import model_weights
from pipelines.definitions import build_resources

TITLES = ["azure_tide", "crimson_oath"]
TINY_STYLEGAN = {
    "size": 16, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 8, "batch_size": 4, "lr": 0.002,
    "d_reg_every": 2, "g_reg_every": 2, "log_every": 1, "sample_every": 100, "checkpoint_every": 2, "n_samples": 2,
    "truncations": [1.0, 0.5],
    "report": {"fid_samples": 6, "inception": "random", "fid_method": "eig", "kid_subsets": 2, "n_boot": 0, "batch_size": 6,
               "truncations": [1.0, 0.0], "grid_columns": 2},
}
TINY_PSP = {"input_size": 16, "widths": [4, 8, 8, 16], "units": [1, 1, 1, 1], "se_reduction": 4, "batch_size": 4,
            "epochs": 1, "lr": 0.001, "log_every": 1, "sample_every": 100, "checkpoint_every": 2, "n_samples": 2}
N_LATENT, STYLE_DIM = 6, 16  # 2 * log2(16) - 2 rows of W+ at 16 px


@pytest.fixture()
def make_defs(project, tmp_path, monkeypatch):
    """Definitions of the ingest and drafting modules only (no synthetic stage: the grey fallback is taken)."""
    monkeypatch.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", (tmp_path / "mlartifacts").as_uri())
    monkeypatch.setenv("MANGACOLOR_DEVICE", "cpu")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no user VGG file: random LPIPS trunk

    def make(iterations: int) -> dg.Definitions:
        with open(project["preset"]) as f:
            preset = yaml.safe_load(f)
        preset["stylegan"] = {**TINY_STYLEGAN, "iterations": iterations}
        preset["inversion_encoder"] = preset["drafting_network"] = TINY_PSP
        preset["coloring_drafts"] = {"size": 256, "batch_size": 3}
        with open(project["preset"], "w") as f:
            yaml.safe_dump(preset, f)
        modules = [assets.ingest, assets.drafting]
        return dg.Definitions(
            assets=dg.load_assets_from_modules(modules),
            resources=build_resources(preset=project["preset"], artifact_root=str(project["artifacts"]),
                                      tracking_uri=project["tracking_uri"]),
        )

    return make


def _materialize(defs, instance, key: str, partition: str | None = None) -> dict:
    result = dg.materialize(list(defs.assets), selection=[key], partition_key=partition, instance=instance, resources=defs.resources)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def test_drafting_stage_end_to_end_with_resume_and_grey_fallback(project, make_defs):
    defs = make_defs(iterations=2)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("color_titles", TITLES)
    store = Store(project["artifacts"])
    blurred = {}
    for title in TITLES:
        _materialize(defs, instance, "color_pages", title)
        blurred[title] = _materialize(defs, instance, "blurred_color_pages", title)

    # Blurred pages: one per colour page, square, almost no ink detail left, paired by source_id.
    colour = store.latest_manifest("color_pages", TITLES[0])
    colour = colour[colour["status"] == "ok"]
    frame = store.latest_manifest("blurred_color_pages", TITLES[0])
    assert set(frame["source_id"]) == set(colour["id"]) and (frame["status"] == "ok").all()
    page = read_image(store.read_bytes(f"{store.latest_dir('blurred_color_pages', TITLES[0])}/{frame.iloc[0]['path']}"))
    assert page.shape == (256, 256, 3)
    assert blurred[TITLES[0]]["sigma_px"] == 8.0 and blurred[TITLES[0]]["detail_kept"] < 0.2
    assert "data:image/jpeg;base64" in blurred[TITLES[0]]["samples"] and "/metadata/samples.png" in blurred[TITLES[0]]["samples"]

    # StyleGAN: 2 iterations, then a retry with 4 resumes from the step-2 checkpoint.
    first = _materialize(defs, instance, "stylegan")
    assert first["steps"] == 2 and first["resumed_from_step"] == 0
    defs = make_defs(iterations=4)
    sg = _materialize(defs, instance, "stylegan")
    assert sg["steps"] == 4 and sg["resumed_from_step"] == 2
    assert sg["fid_note"] == RANDOM_INIT_NOTE and sg["random_init"] is True and np.isfinite(sg["fid"])
    assert sg["train_pages"] == 16
    with model_weights(store, "stylegan") as path:
        generator, latent_avg = load_generator(path)
        generator_file = str(path)
    assert generator.size == 16 and latent_avg.shape == (1, STYLE_DIM)

    client = mlflow.MlflowClient(project["tracking_uri"])
    run = client.get_run(sg["mlflow_run_id"])
    assert sg["mlflow_run"] == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert run.data.params["size"] == "16" and run.data.params["resumed_from_step"] == "2"
    assert run.data.tags["fid_note"] == RANDOM_INIT_NOTE and "fid" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "g_loss")] == [3, 4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"weights", "truncation_grid.png", "fid_report.md"} <= artifacts

    # The two encoders into W+ of that generator.
    inv = _materialize(defs, instance, "inversion_encoder")
    dra = _materialize(defs, instance, "drafting_network")
    assert inv["input_nc"] == 3 and dra["input_nc"] == 1
    assert "input_note" not in inv and dra["input_note"] == GREY_FALLBACK_NOTE and dra["grey_titles"] == TITLES
    for meta, nc in ((inv, 3), (dra, 1)):
        assert meta["lpips_trunk"] == "random" and "random-init VGG" in meta["lpips_note"]
        with model_weights(store, "inversion_encoder" if nc == 3 else "drafting_network") as path:
            psp = load_psp(path, generator_file)
        assert psp.input_nc == nc and psp.n_latent == N_LATENT
        run = client.get_run(meta["mlflow_run_id"])
        assert run.data.params["input_nc"] == str(nc) and run.data.tags["lpips_trunk"] == "random"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]  # 16 pages / batch 4
    assert client.get_run(dra["mlflow_run_id"]).data.tags["input_note"] == GREY_FALLBACK_NOTE

    # Coloring drafts of the colour pages, made with the inversion encoder, each with its W+.
    drafts = _materialize(defs, instance, "coloring_drafts", TITLES[0])
    assert drafts["pages_ok"] == len(colour) and drafts["w_plus_shape"] == [N_LATENT, STYLE_DIM]
    vdir = store.latest_dir("coloring_drafts", TITLES[0])
    manifest = store.latest_manifest("coloring_drafts", TITLES[0]).sort_values("id")
    assert set(manifest["source_id"]) == set(colour["id"]) and (manifest["status"] == "ok").all()
    latents = load_latents(store, vdir)
    assert set(latents) == set(manifest["latent_key"])
    assert all(w.shape == (N_LATENT, STYLE_DIM) for w in latents.values())
    assert read_image(store.read_bytes(f"{vdir}/{manifest.iloc[0]['path']}")).shape == (256, 256, 3)
    # Each stored code is the inversion of its own colour page (not of a neighbour in the batch).
    psp, versions = load_stored_psp(store, "inversion_encoder")
    assert versions["stylegan_version"] == store.latest_version("stylegan")
    rows = manifest.iloc[:2]
    pages = [resize_square(read_image(store.read_bytes(uri)), 256) for uri in rows["source_uri"]]
    _, codes = invert_pages(psp, pages, DeviceSpec(torch.device("cpu")))
    for code, key in zip(codes, rows["latent_key"]):
        torch.testing.assert_close(code, latents[key], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(latents[rows.iloc[0]["latent_key"]], latents[rows.iloc[1]["latent_key"]])
