"""The Dagster `Definitions` of mangacolor: assets, checks, sensors, schedules and the local resources.

Local defaults need nothing installed: artifacts under `<project>/artifacts`, MLflow in
`<project>/mlflow.db`. Environment variables switch a deployment without code changes:
MANGACOLOR_PRESET (demo | paper | a YAML path), MANGACOLOR_ARTIFACT_ROOT (a folder or s3://...),
MLFLOW_TRACKING_URI, MANGACOLOR_DEVICE / MANGACOLOR_PRECISION / MANGACOLOR_THREADS, MANGACOLOR_GPUS /
MANGACOLOR_NNODES / MANGACOLOR_LAUNCHER / MANGACOLOR_IMAGE (the GPUs a training asset may take, and where). Per run, the Launchpad's `resources: settings: config:` picks the preset,
the colorizer's variant switches and each training stage's length (assets/resources.py); each asset's
code version follows the preset sections it reads (assets/versions.py).
"""

from __future__ import annotations

import os

import dagster as dg

from assets import colorization, digests, drafting, evaluation, ingest, scrape, synthetic
from assets.launch import TorchrunResource
from assets.versions import with_code_versions
from assets.resources import DeviceResource, MlflowResource, SettingsResource, StoreResource, default_tracking_uri
from mangacolor.config import PROJECT_ROOT, load_preset
from pipelines import deploy

ASSET_MODULES = [ingest, digests, scrape, synthetic, drafting, colorization, evaluation]


def build_resources(preset: str | None = None, artifact_root: str | None = None, tracking_uri: str | None = None) -> dict:
    preset = preset or os.environ.get("MANGACOLOR_PRESET", "demo")
    loaded = load_preset(preset, **({"artifact_root": artifact_root} if artifact_root else {}))
    root = loaded["artifact_root"]
    device = loaded.get("device", {})
    return {
        # Shows the preset's variant switches and training lengths in the Launchpad, changeable per run.
        "settings": SettingsResource.showing(preset, artifact_root),
        "store": StoreResource(artifact_root=root),
        "device": DeviceResource(
            device=os.environ.get("MANGACOLOR_DEVICE", device.get("name", "auto")),
            precision=os.environ.get("MANGACOLOR_PRECISION", device.get("precision", "auto")),
            seed=int(device.get("seed", 0)),
            threads=int(os.environ["MANGACOLOR_THREADS"]) if os.environ.get("MANGACOLOR_THREADS") else device.get("threads"),
        ),
        # MANGACOLOR_GPUS / MANGACOLOR_NNODES (or the preset's device.gpus / nnodes): a training stage whose batch
        # splits over more than one of them launches torchrun through Pipes (assets/launch.py).
        "torchrun": TorchrunResource.from_deployment(loaded),
        "mlflow": MlflowResource(
            tracking_uri=tracking_uri or default_tracking_uri(PROJECT_ROOT),
            # None: a tracking server picks the artifact store; a SQLite store gets mlartifacts/ beside it.
            artifact_location=os.environ.get("MANGACOLOR_MLFLOW_ARTIFACTS"),
        ),
    }


def build_definitions(**resource_overrides) -> dg.Definitions:
    resources = build_resources(**resource_overrides)
    # Each asset's code version digests the preset sections it reads (assets/versions.py): an edited
    # section shows its assets, and what is built from them, as stale.
    loaded = with_code_versions(list(dg.load_assets_from_modules(ASSET_MODULES)), resources["settings"].load())
    checks = dg.load_asset_checks_from_modules(ASSET_MODULES)
    sensors = [ingest.title_sensor, evaluation.new_model_version_sensor]
    automation = dg.AutomationConditionSensorDefinition(
        "eager_data_stages", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.STOPPED,
        description="Materializes the cheap data stages when their inputs change (training stages run on request).",
    )
    return dg.Definitions(
        executor=deploy.executor(),
        assets=loaded,
        asset_checks=checks,
        jobs=[scrape.scrape_job, evaluation.evaluate_model_job, evaluation.promote_model_job, evaluation.reevaluate_manga109_job,
              evaluation.benchmark_job],
        schedules=[scrape.nightly_scrape, evaluation.manga109_weekly],
        sensors=[*sensors, automation],
        resources=resources,
    )


def executable_defs(defs: dg.Definitions) -> list:
    """Assets and their checks, as `dagster.materialize` wants them (it runs a selected asset's checks too)."""
    return [*defs.assets, *(defs.asset_checks or [])]


defs = build_definitions()
