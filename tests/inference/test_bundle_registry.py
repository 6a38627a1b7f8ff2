"""A bundle written by training loads back, registers in a real (SQLite) MLflow registry and colorizes."""

import mlflow
import numpy as np
import pytest
import torch

from mangacolor.inference.bundle import ModelBundle
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.inference.registry import MODEL_NAME, promote, register_bundle, version_by_alias
from mangacolor.io.bundle import download_bundle, write_bundle
from mangacolor.io.weights import save_weights


@pytest.fixture()
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    cfg = ColorizerConfig.tiny()
    gen = build_generator(cfg)
    weights = save_weights(tmp_path / "g.safetensors", gen, {"config": cfg.to_dict()})
    return write_bundle(tmp_path / "bundle", {"colorizer": weights}, {"random_init_backbones": True})


def test_bundle_colorizes_at_input_size_without_drafting(bundle_dir):
    bundle = ModelBundle.load(bundle_dir)
    page = np.full((70, 45), 255, np.uint8)
    page[20:40, 10:30] = 0
    assert bundle.drafts(page) == [None]
    out = bundle.colorize(page)
    assert out.shape == (70, 45, 3) and out.dtype == np.uint8


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a mangacolor model bundle"):
        ModelBundle.load(tmp_path)


def test_register_alias_download_and_promote(bundle_dir, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        v1 = register_bundle(bundle_dir)
    assert version_by_alias("candidate").version == v1.version
    assert version_by_alias("champion") is None
    promote(v1.version)
    assert version_by_alias("champion").version == v1.version
    local = download_bundle(f"models:/{MODEL_NAME}@champion")
    assert (local / "colorizer.safetensors").exists()
    out = ModelBundle.load(f"models:/{MODEL_NAME}@candidate").colorize(np.zeros((33, 33), np.uint8))
    assert out.shape == (33, 33, 3)


def test_a_variant_is_registered_under_its_own_name_and_never_takes_a_main_alias(bundle_dir, tmp_path):
    from mangacolor.eval.candidates import models_to_evaluate

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        full = register_bundle(bundle_dir, tags={"variant": "full"})
        variant = register_bundle(bundle_dir, tags={"variant": "no_drafts"})  # the default alias is "candidate"
        both = register_bundle(bundle_dir, tags={"variant": "no_adaptation+no_self_training"})
        with pytest.raises(ValueError, match="cannot be registered as 'mangacolor-colorizer'"):
            register_bundle(bundle_dir, name=MODEL_NAME, tags={"variant": "no_drafts"})
    assert variant.name == f"{MODEL_NAME}-no_drafts" and both.name == f"{MODEL_NAME}-no_adaptation-no_self_training"
    client = mlflow.MlflowClient()
    assert [mv.version for mv in client.search_model_versions(f"name='{MODEL_NAME}'")] == [full.version]
    assert version_by_alias("candidate").version == full.version
    assert client.get_registered_model(variant.name).aliases == {}
    with pytest.raises(ValueError, match="only the full method"):
        promote(variant.version, name=variant.name)
    assert version_by_alias("champion") is None
    # Evaluation finds the variants under their own names, as rows beside the candidate.
    rows = {m.name: m for m in models_to_evaluate(client)}
    assert rows["candidate"].version == str(full.version)
    assert rows["no_drafts"].uri == f"models:/{MODEL_NAME}-no_drafts/{variant.version}" and rows["no_drafts"].role == "variant"
    assert ModelBundle.load(rows["no_drafts"].uri).colorize(np.zeros((20, 20), np.uint8)).shape == (20, 20, 3)


def test_a_broken_tracking_store_is_an_error_not_no_champion(bundle_dir, tmp_path):
    import sqlite3

    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        register_bundle(bundle_dir)
    assert version_by_alias("champion") is None  # a genuine "alias not found"
    assert version_by_alias("champion", name="never-registered") is None
    with sqlite3.connect(db) as con:  # the store breaks (a failed migration, a half-restored backup)
        con.execute("DROP TABLE registered_model_aliases")
    with pytest.raises(mlflow.exceptions.MlflowException, match="registered_model_aliases"):
        version_by_alias("champion")


def test_an_imported_model_registers_under_its_own_name_and_is_evaluable_without_a_candidate(bundle_dir, tmp_path):
    import json

    from mangacolor.eval.candidates import models_to_evaluate
    from mangacolor.inference.imported import register_imported

    info = json.loads((bundle_dir / "bundle.json").read_text())
    (bundle_dir / "bundle.json").write_text(json.dumps({**info, "variant": "mc2", "source": "manga-colorization-v2"}))
    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    mc2 = register_imported(bundle_dir, client=client)
    assert mc2.name == f"{MODEL_NAME}-mc2" and mc2.tags["variant"] == "mc2"
    assert client.get_registered_model(mc2.name).aliases == {}
    assert version_by_alias("candidate") is None and version_by_alias("champion") is None
    with pytest.raises(ValueError, match="only the full method"):
        promote(mc2.version, name=mc2.name)
    # No pipeline candidate yet: fid_report pinned to the import scores it alone.
    with pytest.raises(LookupError):
        models_to_evaluate(client)
    alone = models_to_evaluate(client, pinned={mc2.name: str(mc2.version)})
    assert [(m.name, m.role, m.uri) for m in alone] == [("mc2", "variant", f"models:/{MODEL_NAME}-mc2/{mc2.version}")]
    assert ModelBundle.load(alone[0].uri).colorize(np.zeros((20, 20), np.uint8)).shape == (20, 20, 3)
    # Once the pipeline registers a candidate, the import is a row beside it, never the candidate.
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        full = register_bundle(bundle_dir, tags={"variant": "full"})
    rows = {m.name: m for m in models_to_evaluate(client)}
    assert rows["candidate"].version == str(full.version) and rows["mc2"].role == "variant"
