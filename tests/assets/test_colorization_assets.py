"""The colorization chain materialized in-process on the demo corpus, with no synthetic or drafting asset
materialized: the fallbacks (grey pages, empty drafts, no inversion encoder) must carry it to a registered
bundle. Tiny networks, a few steps per stage; assertions on what was written, the registry and MLflow."""

import importlib
import shutil
import warnings

import dagster as dg
import mlflow
import numpy as np
import pytest
import yaml

from assets.ingest import register_and_observe
from mangacolor.config import PRESET_DIR, load_preset
from mangacolor.inference.bundle import ModelBundle
from mangacolor.io.images import read_image
from mangacolor.io.store import Store
from mangacolor.inference.registry import MODEL_NAME
from mangacolor.io.weights import load_weights
from tests.stages.test_colorization import store_drafting_models

CHAIN = ["colorizer_step1_snapshots", "colorizer_step1_finetuned", "selected_snapshots", "pseudolabels", "colorizer_step2",
         "colorizer_final"]
# The demo section made smaller still: four step-1 steps (two snapshots), pages colorized at 96 px.
TEST_SECTION = {
    "generator": {"tiny": True}, "discriminator": {"tiny": True},
    "cues": {"schedule": [{"first_epoch": 1, "p_hint": 0.3, "p_draft": 0.5}]},
    "crop": [64, 64], "augment": {"max_pad": 4}, "allow_random_vgg": True,
    "checkpoint_every": 10, "log_every": 1, "sample_count": 2,
    "step1": {"batch_size": 2, "max_steps": 4, "snapshots": 2, "lr_g": 5e-4, "lr_d": 2e-3, "losses": {"per": 0}},
    "step2": {"batch_size": 4, "max_steps": 2, "init": "best_snapshot", "losses": {"per": 0}},
    "finetune": {"epochs": 2, "batch_size": 2, "max_steps": 1, "losses": {"per": 0}},
    "selection": {"metric": "kid", "keep": 2, "validation_pages": 3, "reference_pages": 4, "long_side": 96,
                  "inception": "random", "kid_subsets": 5, "kid_subset_size": 10},
    "pseudolabels": {"colorings_per_page": 3, "max_pages": 4, "long_side": 96},
}


def _write_section(project, **changes) -> None:
    """Set the preset's `colorizer:` section to the test's, with `changes` merged into its sub-sections."""
    with open(project["preset"]) as f:
        preset = yaml.safe_load(f)
    section = preset["colorizer"] if "colorizer_test" in preset else dict(TEST_SECTION)
    for key, value in changes.items():
        section[key] = {**section.get(key, {}), **value} if isinstance(value, dict) else value
    preset["colorizer"], preset["colorizer_test"] = section, True
    with open(project["preset"], "w") as f:
        yaml.safe_dump(preset, f)


def _definitions(project) -> dg.Definitions:
    """ingest + colorization (+ synthetic / drafting when they exist, never materialized here)."""
    from pipelines.definitions import build_resources

    modules = [importlib.import_module("assets.ingest"), importlib.import_module("assets.colorization")]
    for name in ("assets.synthetic", "assets.drafting"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        resources=build_resources(preset=project["preset"], artifact_root=str(project["artifacts"]), tracking_uri=project["tracking_uri"]),
    )


def _run(defs, instance, keys, partition=None, run_config=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=keys, partition_key=partition, instance=instance,
                            resources=defs.resources, run_config=run_config)
    assert result.success
    return result


def _metadata(result, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, demo_corpus):
    """Ingest, then the whole chain once for the module: (definitions, instance, project, result)."""
    root = tmp_path_factory.mktemp("colorization")
    data = root / "demo_data"
    shutil.copytree(demo_corpus, data)
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
    preset |= {"demo_data": str(data), "artifact_root": str(root / "artifacts")}
    (root / "preset.yaml").write_text(yaml.safe_dump(preset))
    project = {"root": root, "data": data, "preset": str(root / "preset.yaml"), "artifacts": root / "artifacts",
               "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
        mp.setenv("MANGACOLOR_WORK_DIR", str(root / "work"))
        mp.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", (root / "mlartifacts").as_uri())
        _write_section(project)
        defs = _definitions(project)
        instance = dg.DagsterInstance.ephemeral()
        register_and_observe(instance, load_preset(project["preset"]))
        for role in ("color", "bw"):
            for title in instance.get_dynamic_partitions(f"{role}_titles"):
                _run(defs, instance, [f"{role}_pages"], title)
        _run(defs, instance, ["page_pairs", "page_splits"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = _run(defs, instance, CHAIN)
        yield defs, instance, project, result


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_chain_trains_selects_pseudolabels_and_registers_a_bundle_without_upstream_models(chain):
    _, _, project, result = chain
    meta = {key: _metadata(result, key) for key in CHAIN}
    store = Store(project["artifacts"])
    splits = store.latest_manifest("page_splits")
    holdout = set(splits.loc[splits.split == "holdout", "id"])
    train = set(splits.loc[splits.split == "train", "id"])
    assert holdout

    # Step 1: two snapshots with weights and sample grids; the real pages it read are train pages, all of them.
    step1_dir = store.latest_dir("colorizer_step1_snapshots")
    step1 = store.read_manifest(step1_dir)
    shots = step1[step1.role == "snapshot"]
    assert list(shots.step) == [2, 4]
    for row in shots.itertuples():
        _, weights_meta = load_weights(f"{step1_dir}/{row.path}")
        assert weights_meta["generator_config"]["encoder"] == "tiny"
        assert read_image(f"{step1_dir}/{row.samples_path}").shape[0] > 64
    real_read = set(step1.loc[step1.role == "real_bw", "page_id"])
    assert real_read == train and not real_read & holdout

    # The fallbacks are stated: grey pages for every title, empty drafts, no inversion encoder, no drafting bundle.
    assert meta["colorizer_step1_snapshots"]["fallback"] is True
    assert set(meta["colorizer_step1_snapshots"]["bw_source_by_title"].values()) == {"grey"}
    assert "coloring_drafts not materialized" in meta["colorizer_step1_snapshots"]["fallbacks"]
    assert "bw_page_drafts not materialized: real pages get empty drafts" in meta["colorizer_step1_snapshots"]["fallbacks"]
    assert "inversion_encoder not materialized" in meta["pseudolabels"]["fallbacks"]
    assert "drafting_network not materialized" in meta["colorizer_final"]["fallbacks"]
    client = mlflow.MlflowClient(project["tracking_uri"])
    step1_run = client.get_run(meta["colorizer_step1_snapshots"]["mlflow_run_id"])
    assert step1_run.data.tags["fallback"] == "true" and "grey instead of synthetic_bw_pages" in step1_run.data.tags["fallbacks"]
    assert step1_run.data.params["step"] == "adapt" and "g_adv_real" in step1_run.data.metrics

    # The end of step 1 (Appendix D): every snapshot fine-tuned on the matched pairs, continuing its epochs' cue schedule.
    tuned_dir = store.latest_dir("colorizer_step1_finetuned")
    tuned = store.read_manifest(tuned_dir)
    tuned_shots = tuned[tuned.role == "snapshot"].set_index("step")
    assert list(tuned_shots.index) == [2, 4] and (tuned_shots.finetune_steps == 1).all()
    assert meta["colorizer_step1_finetuned"]["matched_pairs"] > 0
    for step, row in tuned_shots.iterrows():
        _, tuned_meta = load_weights(f"{tuned_dir}/{row.path}")
        assert tuned_meta["train_step"] == "finetune"
        assert row.sha256 != shots.set_index("step").loc[step, "sha256"]
    assert set(tuned.loc[tuned.role == "matched_bw", "page_id"]) <= train

    # Selection: every fine-tuned snapshot scored by the labelled random-init Inception, the best two kept with their grids.
    ranking = store.latest_manifest("selected_snapshots")
    assert set(ranking.loc[ranking.selected, "sha256"]) <= set(tuned_shots.sha256)
    assert sorted(ranking.step) == [2, 4] and ranking.selected.all() and np.isfinite(ranking.kid_mean).all()
    assert meta["selected_snapshots"]["random_init"] is True and "not comparable" in meta["selected_snapshots"]["fid_note"]
    assert {"grid_step_2", "grid_step_4"} <= set(meta["selected_snapshots"])

    # Pseudolabels: several colorings per page (one per snapshot without an inversion encoder), train pages only.
    labels_dir = store.latest_dir("pseudolabels")
    labels = store.read_manifest(labels_dir)
    per_page = labels.groupby("bw_id").size()
    assert len(per_page) == 4 and (per_page == 2).all() and set(per_page.index) <= train
    assert set(labels.snapshot) == {2, 4} and set(labels.coloring) == {0, 1}
    page = labels.iloc[0]
    assert read_image(f"{labels_dir}/{page.path}").shape[:2] == (page.height, page.width)

    # Step 2 trained on exactly the pseudolabelled pages; both holdout checks ran and passed.
    step2 = store.latest_manifest("colorizer_step2")
    assert set(step2.loc[step2.role == "pseudolabel_bw", "page_id"]) == set(per_page.index)
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    for key in ("colorizer_step1_snapshots", "colorizer_step1_finetuned", "colorizer_step2"):
        assert checks[(key, "holdout_never_trained")].passed

    # The registered candidate: tagged, and its bundle colorizes a page at the page's size.
    final = meta["colorizer_final"]
    version = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert int(version.version) == final["registered_version"]
    assert version.tags["variant"] == "full" and version.tags["random_init.encoder"] == "true"
    assert version.tags["dagster.run_id"] == result.run_id
    bundle = ModelBundle.load(final["bundle_uri"])
    assert bundle.drafting is None  # no drafting network yet: automatic colorization with an empty draft
    assert bundle.info["canvas"] == [64, 64]  # the test section's crop: inference brings pages to it
    # The bundle's colorizer is step 2's generator (the fine-tune no longer runs after self-training).
    assert (store.latest_manifest("colorizer_step2").set_index("id").loc["weights", "sha256"]
            == store.latest_manifest("colorizer_final").set_index("id").loc["bundle:colorizer.safetensors", "sha256"])
    bw = read_image(project["data"] / "bw" / "night_harbor" / "001.png", mode="L")
    out = bundle.colorize(bw, draft=bundle.drafts(bw)[0])
    assert out.shape == (*bw.shape, 3) and out.dtype == np.uint8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_finetune_comes_before_pseudolabels_in_the_asset_graph():
    """Appendix D: step 1 = adaptation, then the matched-pair fine-tune; the snapshots that rank and label come after it;
    step 2 is last. And the drafting network's second round follows the pseudolabels, its first precedes step 1."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()

    def ancestors(key: str) -> set[str]:
        seen, todo = set(), [dg.AssetKey(key)]
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent.to_user_string() not in seen:
                    seen.add(parent.to_user_string())
                    todo.append(parent)
        return seen

    assert "colorizer_step1_snapshots" in ancestors("colorizer_step1_finetuned")
    assert "colorizer_step1_finetuned" in ancestors("selected_snapshots")
    assert "colorizer_step1_finetuned" in ancestors("pseudolabels")
    assert "pseudolabels" in ancestors("colorizer_step2") and "colorizer_step2" in ancestors("colorizer_final")
    assert not {"colorizer_step2", "pseudolabels"} & ancestors("colorizer_step1_finetuned")
    assert {"drafting_network", "bw_page_drafts"} <= ancestors("colorizer_step1_snapshots")
    assert "pseudolabels" in ancestors("drafting_network_final") and "drafting_network_final" in ancestors("colorizer_final")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_override_variant_switch_and_a_retried_finetune_that_resumes(chain, monkeypatch):
    defs, instance, project, _ = chain
    monkeypatch.setenv("MANGACOLOR_WORK_DIR", str(project["root"] / "work"))
    monkeypatch.setenv("MANGACOLOR_MLFLOW_ARTIFACTS", (project["root"] / "mlartifacts").as_uri())
    client = mlflow.MlflowClient(project["tracking_uri"])

    # A person overrides the ranking from the launchpad: only the first snapshot.
    picked = _run(defs, instance, ["selected_snapshots"], run_config={"ops": {"selected_snapshots": {"config": {"override": [2]}}}})
    assert _metadata(picked, "selected_snapshots")["selected_steps"] == [2]

    # Variant "no_self_training": no pseudolabels, step 2 passes the chosen snapshot through. The drafting
    # stage's models are in the store now (tiny ones, written as its assets write them): the bundle ships them.
    store_drafting_models(Store(project["artifacts"]), project["root"])
    _write_section(project, variant={"self_training": False})
    result = _run(defs, instance, CHAIN[3:])
    assert _metadata(result, "pseudolabels")["skipped"] is True
    assert _metadata(result, "colorizer_step2")["skipped"] is True
    store = Store(project["artifacts"])
    best = store.latest_manifest("selected_snapshots").sort_values("order").iloc[0]
    assert best.step == 2 and store.latest_manifest("selected_snapshots").selected.sum() == 1
    assert store.latest_manifest("colorizer_step2").set_index("id").loc["weights", "sha256"] == best.sha256
    first = _metadata(result, "colorizer_final")
    assert first["bundle_parts"] == ["colorizer", "drafting", "inversion", "stylegan"]
    bundle = ModelBundle.load(first["bundle_uri"])
    bw = read_image(project["data"] / "bw" / "night_harbor" / "001.png", mode="L")
    assert bundle.colorize(bw, draft=bundle.drafts(bw)[0]).shape == (*bw.shape, 3)
    # A variant is registered under its own name and never takes the main model's `candidate`.
    candidate_before = client.get_model_version_by_alias(MODEL_NAME, "candidate").version
    assert first["registered_model"] == f"{MODEL_NAME}-no_self_training" and first["alias"] == "none"
    assert client.get_model_version(first["registered_model"], str(first["registered_version"])).tags["variant"] == "no_self_training"

    # More fine-tune steps, same config otherwise: the retry resumes each snapshot from the first run's checkpoint.
    _write_section(project, finetune={"max_steps": 2})
    again = _metadata(_run(defs, instance, ["colorizer_step1_finetuned"]), "colorizer_step1_finetuned")
    assert again["resumed_from_step"] == 1 and again["finetune_steps_per_snapshot"] == 2
    assert client.get_run(again["mlflow_run_id"]).data.params["snapshot-2.resumed_at"] == "1"
    final = _metadata(_run(defs, instance, ["colorizer_final"]), "colorizer_final")
    assert final["registered_version"] == first["registered_version"] + 1
    assert client.get_model_version_by_alias(MODEL_NAME, "candidate").version == candidate_before


def test_the_holdout_check_fails_when_a_stage_recorded_a_holdout_page(chain):
    from assets.colorization import holdout_never_trained_step2
    from assets.resources import StoreResource

    _, _, project, _ = chain
    store = Store(project["artifacts"])
    resource = StoreResource(artifact_root=str(project["artifacts"]))
    assert holdout_never_trained_step2(store=resource).passed
    leaked = _train_on_a_holdout_page(store, "colorizer_step2", "pseudolabel_bw")
    result = holdout_never_trained_step2(store=resource)
    assert not result.passed and result.metadata["leaked_ids"].value == [leaked]


def test_the_fine_tune_has_a_blocking_holdout_check(chain):
    from assets.colorization import holdout_never_trained_step1_finetuned
    from assets.resources import StoreResource

    _, _, project, result = chain
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    assert checks[("colorizer_step1_finetuned", "holdout_never_trained")]
    assert all(spec.blocking for spec in holdout_never_trained_step1_finetuned.check_specs)
    store = Store(project["artifacts"])
    leaked = _train_on_a_holdout_page(store, "colorizer_step1_finetuned", "matched_bw")
    failed = holdout_never_trained_step1_finetuned(store=StoreResource(artifact_root=str(project["artifacts"])))
    assert not failed.passed and failed.metadata["leaked_ids"].value == [leaked]


def _train_on_a_holdout_page(store, asset: str, role: str) -> str:
    """A new version of `asset` whose manifest says it also trained on a holdout page (as `role`); returns that page."""
    splits = store.latest_manifest("page_splits")
    leaked = splits.loc[splits.split == "holdout", "id"].iloc[0]
    writer = store.begin(asset)
    for row in store.latest_manifest(asset).to_dict("records"):
        writer.add(row)
    writer.add({"id": f"{role}:{leaked}", "status": "ok", "role": role, "page_id": leaked})
    writer.commit()
    return leaked
