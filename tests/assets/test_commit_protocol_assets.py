"""The commit protocol through real assets (issue 11, points 1 and 2), materialized in-process.

page_splits: its version follows the split assignment. inference_benchmark: when its MLflow step
fails after the output was written, LATEST stays where it was and no staging folder is left.
"""

import dagster as dg
import pytest
from tests.assets.conftest import build, materialize_partitions
from tests.assets.test_evaluation_assets import _preset, _register, env  # noqa: F401 - env is a fixture

from assets.ingest import register_and_observe
from mangacolor.config import load_preset
from mangacolor.io.store import Store, verify
from pipelines.definitions import executable_defs


def test_page_splits_asset_version_follows_the_split_when_pairs_change(project):
    """The issue's case: a new matched pair moves a holdout page to train; page_splits must get a new version."""
    defs = build(project)
    instance = dg.DagsterInstance.ephemeral()
    register_and_observe(instance, load_preset(project["preset"]))
    materialize_partitions(defs, instance, ["bw_pages"], ["night_harbor"])
    run = lambda: dg.materialize(executable_defs(defs), selection=["page_splits"], instance=instance,  # noqa: E731
                                 resources=defs.resources)
    assert run().success
    store = Store(project["artifacts"])
    before_version = store.latest_version("page_splits")
    before = store.latest_manifest("page_splits")
    held = before.loc[before["split"] == "holdout", "id"].iloc[0]
    pairs = store.begin("page_pairs")  # a colour title arrived whose page pairs with a holdout page
    pairs.add({"id": f"pair/{held}", "bw_id": held, "matched": True, "status": "ok", "sha256": "p"})
    pairs.commit()
    assert run().success
    after = store.latest_manifest("page_splits")
    assert list(after["id"]) == list(before["id"])
    assert after.set_index("id").loc[held, "split"] == "train"
    assert store.latest_version("page_splits") != before_version



def test_mlflow_failure_after_writing_leaves_latest_and_no_staging(env, monkeypatch):
    defs = _preset(env)
    instance = dg.DagsterInstance.ephemeral()
    _register(env, "random")
    run = lambda: dg.materialize(executable_defs(defs), selection=["inference_benchmark"], instance=instance,  # noqa: E731
                                 resources=defs.resources, raise_on_error=False)
    assert run().success
    store = Store(env["artifacts"])
    before = store.latest_version("inference_benchmark")

    from mangacolor.tracking import MlflowTracker

    def tracking_down(self, name, text):
        raise ConnectionError("MLflow tracking server went away")

    # The benchmark's files are written and sealed, then logging its report to MLflow fails.
    monkeypatch.setattr(MlflowTracker, "log_text", tracking_down)
    result = run()
    assert not result.success
    assert "MLflow tracking server went away" in str(result.all_events)
    assert store.latest_version("inference_benchmark") == before
    assert not list(env["artifacts"].rglob(".staging-*"))
    assert verify(store)[1] == []
