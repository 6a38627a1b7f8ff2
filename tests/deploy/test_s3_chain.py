"""The demo graph's training chain on S3, as a cluster runs it: the artifact store and MLflow's artifacts on an
S3-compatible server (moto's, on 127.0.0.1), and every page read in 2 `DataLoader` workers forked from a
process that already used the store (training loaders, per-page stages, evaluation batches). Two tiny steps
per training stage, one for each loader worker: what is tested is that every stage reads and writes through
s3fs from any process, not what it learns.
"""

import json
import uuid

import dagster as dg
import pytest
import torch
import yaml

from tests.deploy.conftest import s3_env, s3_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TITLES = ["ember_blade"]  # one title of matched pairs: colour pages, black-and-white pages and the fine-tune's pairs
CHAIN = ["xdog_pages", "refiner_model", "refined_pages", "cut_model", "synthetic_bw_pages",
         "blurred_color_pages", "stylegan", "inversion_encoder", "coloring_drafts", "drafting_network", "bw_page_drafts",
         "colorizer_step1_snapshots", "colorizer_step1_finetuned", "selected_snapshots", "pseudolabels", "colorizer_step2",
         "drafting_network_final", "colorizer_final"]
ONE_STEP = {"log_every": 1, "sample_every": 100, "checkpoint_every": 1}
TINY_PSP = {"input_size": 16, "widths": [4, 8, 8, 16], "units": [1, 1, 1, 1], "se_reduction": 4, "batch_size": 2, "epochs": 1,
            "lr": 0.001, "lambda_lpips": 0, "n_samples": 1, **ONE_STEP}


def _tiny(preset: dict) -> dict:
    """Every training stage two steps of a tiny network (a step for each of the 2 loader workers); pages at their demo size."""
    preset["refiner"] = {"model": {"widths": [4, 8], "encoder_blocks": [1, 1], "decoder_blocks": [1], "cardinality": 2, "se_reduction": 4},
                         "steps": 2, "batch_size": 2, "crop_hw": [32, 32], "lambda_per": 0, **ONE_STEP}
    preset["cut"] = {"model": {"ngf": 4, "n_blocks": 1, "ndf": 4, "d_layers": 1, "nce_layers": ["input", "down1", "res1"], "nce_dim": 8,
                               "n_patches": 8}, "steps": 2, "crop": 32, **ONE_STEP}
    preset["synthetic_gap"] = {"inception": "none", "max_pages": 2}
    preset["stylegan"] = {"size": 16, "style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "channel_max": 8, "batch_size": 2,
                          "iterations": 2, "n_samples": 2, "truncations": [1.0], "d_reg_every": 2, "g_reg_every": 2, **ONE_STEP,
                          "report": {"fid_samples": 4, "inception": "random", "fid_method": "eig", "kid_subsets": 2, "n_boot": 0,
                                     "batch_size": 4, "truncations": [1.0], "grid_columns": 2}}
    preset["inversion_encoder"] = preset["drafting_network"] = TINY_PSP
    preset["coloring_drafts"] = {"size": 64, "batch_size": 2}
    c = preset["colorizer"]
    c |= {"crop": [32, 32], "sample_count": 1, "checkpoint_every": 1, "log_every": 1}
    c["step1"] |= {"batch_size": 2, "max_steps": 2, "snapshots": 1}
    c["finetune"] |= {"batch_size": 2, "max_steps": 2}
    c["step2"] |= {"batch_size": 2, "max_steps": 2}
    c["selection"] |= {"keep": 1, "validation_pages": 2, "reference_pages": 2, "long_side": 64, "kid_subsets": 2, "kid_subset_size": 2}
    c["pseudolabels"] |= {"colorings_per_page": 1, "max_pages": 2, "long_side": 64}
    preset["evaluation"]["max_reference_pages"] = 4
    return preset


def test_training_chain_with_the_store_and_mlflow_on_s3_and_two_loader_workers(tmp_path, monkeypatch, s3_env, demo_corpus):  # noqa: F811
    from mangacolor.config import PRESET_DIR
    from mangacolor.io.store import Store, verify
    from pipelines.definitions import build_definitions, executable_defs
    from pipelines.demo import plan_batches

    _, s3 = s3_env
    root = f"mangacolor/chain-{uuid.uuid4().hex[:8]}"
    preset = _tiny(yaml.safe_load((PRESET_DIR / "demo.yaml").read_text()))
    preset |= {"demo_data": str(demo_corpus), "artifact_root": f"s3://{root}/artifacts"}
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    for key, value in {"MANGACOLOR_WORKERS": "2", "MANGACOLOR_DEVICE": "cpu", "MANGACOLOR_THREADS": "1",
                       "MANGACOLOR_WORK_DIR": str(tmp_path / "work"), "MANGACOLOR_MLFLOW_ARTIFACTS": f"s3://{root}/mlartifacts"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MANGACOLOR_ARTIFACT_ROOT", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no user VGG: a random LPIPS trunk
    defs = build_definitions(preset=str(tmp_path / "preset.yaml"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("color_titles", TITLES)
    instance.add_dynamic_partitions("bw_titles", TITLES)
    everything = executable_defs(defs)

    def run(keys, partition=None):
        result = dg.materialize(everything, selection=keys, partition_key=partition, instance=instance, resources=defs.resources)
        assert result.success, f"{keys} [{partition}] failed"
        return result

    for role in ("color", "bw"):
        run([f"{role}_pages"], TITLES[0])
    run(["page_pairs", "page_splits"])
    # The training chain in dependency order, a per-title run for each title of the partitioned stages.
    metadata = {}
    for batch in plan_batches(defs, dg.AssetSelection.assets(*CHAIN)):
        for partition in (TITLES if batch.partitions_def else [None]):
            for event in run(batch.keys, partition).get_asset_materialization_events():
                mat = event.event_specific_data.materialization
                metadata[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}

    assert set(CHAIN) <= set(metadata)
    store = Store(f"s3://{root}/artifacts")
    for asset in CHAIN:
        assert store.partitions(asset), f"{asset}: nothing committed on S3"
    checked, problems = verify(store, CHAIN)
    assert checked >= len(CHAIN) and problems == []
    assert metadata["colorizer_step1_snapshots"]["steps"] == 2 and metadata["refiner_model"]["steps"] == 2
    # MLflow's artifacts of the training runs are on S3 too.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mangacolor", Prefix=f"{root.split('/', 1)[1]}/mlartifacts/")["Contents"]]
    assert any(k.endswith("/weights/generator.safetensors") for k in keys), keys[:20]
    final = store.latest_manifest("colorizer_final")
    assert "bundle/bundle.json" in set(final["path"]) or any("bundle" in str(p) for p in final["path"]), json.dumps(list(final["path"]))
