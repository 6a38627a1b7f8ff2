"""The Launchpad: preset, variant switches and training lengths chosen per run, the preset's values shown as defaults."""

import dagster as dg
import mlflow

from assets.resources import SettingsResource
from pipelines.definitions import executable_defs
from tests.assets import test_synthetic_assets as synthetic
from tests.assets.test_synthetic_assets import _ingest

defs_for = synthetic.defs_for  # the fixture: the demo preset with tiny synthetic sections

LAUNCH = {"resources": {"settings": {"config": {"refiner": {"steps": 3}}}}}


def _launchpad_default(defs: dg.Definitions, *path: str):
    """The default the Launchpad shows under `resources: settings: config: <path>` (Dagster's own run config schema)."""
    config_type = defs.resolve_implicit_global_asset_job_def().run_config_schema.config_type
    section = config_type.fields["resources"].config_type.fields["settings"].config_type.fields["config"].config_type.fields[path[0]]
    value = section.default_value
    for name in path[1:]:
        value = value[name]
    return value


def test_the_launchpad_shows_the_presets_values_and_a_run_overrides_them(project, defs_for, tmp_path):
    defs = defs_for(refiner_steps=40)
    assert _launchpad_default(defs, "refiner", "steps") == 40
    assert _launchpad_default(defs, "colorizer", "variant", "synthetic") == "cut"
    assert _launchpad_default(defs, "colorizer", "step1", "max_steps") == 60
    assert _launchpad_default(defs, "preset") == project["preset"]
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, project, [])

    result = dg.materialize(executable_defs(defs), selection=["refiner_model"], instance=instance, resources=defs.resources,
                            run_config=LAUNCH)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}
    assert meta["steps"] == 3  # not the preset's 40 (and the run config left `preset` out: still the project's)
    run = mlflow.MlflowClient(project["tracking_uri"]).get_run(meta["mlflow_run_id"])
    assert run.data.params["steps"] == "3"
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "work").rglob("step-*"))
    assert saved and saved[-1] == 3  # the last checkpoint written is step 3


def test_a_changed_field_applies_on_top_of_the_preset_the_run_picks():
    shown = SettingsResource.showing("demo")
    assert shown.overrides() == {} and shown.load()["refiner"]["steps"] == 40

    def launch(**config):
        return SettingsResource(**{**shown.model_dump(), **config})

    paper = launch(preset="paper")  # the fields still show demo's values: paper keeps its own
    assert paper.load()["refiner"]["steps"] == 20000 and paper.load()["colorizer"]["step1"].get("max_steps") is None
    assert launch(preset="paper", refiner={"steps": 3}).load()["refiner"]["steps"] == 3
    ablation = launch(colorizer={**shown.colorizer.model_dump(mode="json"),
                                 "variant": {"synthetic": "xdog", "use_drafts": False, "adversarial_adaptation": True,
                                             "self_training": True}})
    assert ablation.overrides() == {"colorizer": {"variant": {"synthetic": "xdog", "use_drafts": False}}}
    variant = ablation.load()["colorizer"]["variant"]
    assert variant == {"synthetic": "xdog", "use_drafts": False, "adversarial_adaptation": True, "self_training": True}
    assert ablation.load()["colorizer"]["step1"]["max_steps"] == 60  # the rest of the section is the preset's
