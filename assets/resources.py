"""Dagster resources: the store, the device, MLflow and the preset, each a thin shell over the library.

Local defaults (a project-local artifact folder, a SQLite MLflow store) come from
`pipelines/definitions.py`; a deployment swaps them by environment (`MANGACOLOR_ARTIFACT_ROOT=s3://...`,
`MLFLOW_TRACKING_URI=...`) without touching an asset.
"""


import contextlib
import json
import os
from pathlib import Path
from enum import Enum
from typing import TYPE_CHECKING, Any

import dagster as dg
import pydantic
from pydantic import Field

from mangacolor import config as mc_config
from mangacolor.io.store import Store
from mangacolor.tracking import active_run, find_or_create_run, get_or_create_experiment

if TYPE_CHECKING:
    from mangacolor.device import DeviceSpec


class StoreResource(dg.ConfigurableResource):
    """Where artifacts live: a local folder or any fsspec URL (s3://bucket/prefix)."""

    artifact_root: str
    storage_options: dict[str, Any] = {}

    def get(self) -> Store:
        return Store(self.artifact_root, self.storage_options or None)


class DeviceResource(dg.ConfigurableResource):
    """cuda / mps / cpu, autocast precision and seed for every GPU-resourced asset."""

    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    threads: int | None = None  # CPU threads for torch; 1 is much faster on a machine other jobs share

    def spec(self) -> "DeviceSpec":
        from mangacolor.device import resolve_device  # torch: imported by the run that computes, not by the code location

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return resolve_device(self.device, self.precision, self.seed)


class Synthetic(str, Enum):
    xdog = "xdog"
    refined = "refined"
    cut = "cut"


class VariantSwitches(dg.Config):
    """colorizer.variant: the ablations of Tables 1 and 3 (null: the preset's value)."""

    synthetic: Synthetic | None = Field(None, description="synthetic pages step 1 and 2 train on")
    use_drafts: bool | None = Field(None, description="coloring drafts as a cue (Table 3 'w/o drafts': false)")
    adversarial_adaptation: bool | None = Field(None, description="real pages in step 1's adversarial loss")
    self_training: bool | None = Field(None, description="step 2 on pseudolabels; false: step 1's best snapshot is final")


class Steps(dg.Config):
    steps: int | None = Field(None, ge=1, description="optimizer steps (null: the preset's)")


class Iterations(dg.Config):
    iterations: int | None = Field(None, ge=1, description="training iterations (null: the preset's)")


class Epochs(dg.Config):
    epochs: int | None = Field(None, ge=1, description="epochs (null: the preset's)")


class ColorizerStage(dg.Config):
    epochs: int | None = Field(None, ge=1, description="epochs (null: the preset's)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (null: the preset's)")


class ColorizerSwitches(dg.Config):
    variant: VariantSwitches = VariantSwitches()
    step1: ColorizerStage = ColorizerStage()
    finetune: ColorizerStage = ColorizerStage()
    step2: ColorizerStage = ColorizerStage()


class SettingsResource(dg.ConfigurableResource):
    """The preset (configs/<name>.yaml or a path) every stage reads its typed config from, with per-run changes.

    In the Launchpad (`resources: settings: config:`) a run picks the preset, the colorizer's variant
    switches and each training stage's length; the fields show the values of the preset the deployment
    loaded (`defaults_from`). A field changed from that value is applied on top of whichever preset
    the run picked; a field left as shown, or null, keeps the picked preset's own value.
    """

    preset: str = Field("demo", description="demo | paper | small | a YAML path")
    artifact_root: str | None = None
    defaults_from: str | None = Field(None, description="the preset whose values the fields below show (set by the deployment)")
    shown: str | None = Field(None, description="those values as JSON, as the deployment loaded them (set by the deployment): "
                                                "a field differs from what was shown, not from the preset file as it is now")
    refiner: Steps = Steps()
    cut: Steps = Steps()
    stylegan: Iterations = Iterations()
    inversion_encoder: Epochs = Epochs()
    drafting_network: Epochs = Epochs()
    colorizer: ColorizerSwitches = ColorizerSwitches()

    @classmethod
    def showing(cls, preset: str, artifact_root: str | None = None) -> "SettingsResource":
        """The resource with the fields filled from `preset`'s values, so the Launchpad shows them as defaults."""
        loaded = mc_config.load_preset(preset, **({"artifact_root": artifact_root} if artifact_root else {}))
        values = {section: _pick(loaded.get(section) or {}, _fields(model)) for section, model in _switches(cls).items()}
        as_json = json.dumps(values, sort_keys=True)
        # Dagster fills a field that a run's config leaves out from the class's default, not from the values
        # configured here: subclasses whose defaults are this preset's keep them in a partial run config.
        shown = pydantic.create_model(
            cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__,
            preset=(str, Field(preset, description=cls.model_fields["preset"].description)),
            artifact_root=(str | None, artifact_root), defaults_from=(str | None, Field(preset, description=cls.model_fields["defaults_from"].description)),
            shown=(str | None, Field(as_json, description=cls.model_fields["shown"].description)),
            **{section: (sub := _with_defaults(model, values[section]), sub()) for section, model in _switches(cls).items()})
        return shown(preset=preset, artifact_root=artifact_root, defaults_from=preset, shown=as_json, **values)

    def overrides(self) -> dict:
        """The fields that differ from `defaults_from`'s values (all set fields without it), nested as the preset."""
        # Against what the Launchpad showed: the preset file may have changed since the deployment loaded it
        # (an edited section must not be undone by the stale value a run left as shown).
        if self.shown:
            base = json.loads(self.shown)
        else:
            base = mc_config.load_preset(self.defaults_from) if self.defaults_from else {}
        out: dict = {}
        for section in _switches(type(self)):
            changed = _changed(getattr(self, section).model_dump(mode="json"), base.get(section) or {})
            if changed:
                out[section] = changed
        return out

    def load(self) -> dict:
        return mc_config.load_preset(self.preset, overrides=self.overrides(),
                                     **({"artifact_root": self.artifact_root} if self.artifact_root else {}))


def _switches(cls) -> dict:
    return {name: f.annotation for name, f in cls.model_fields.items() if isinstance(f.annotation, type)
            and issubclass(f.annotation, dg.Config)}


def _with_defaults(model, values: dict):
    """A subclass of the Config class `model` whose field defaults are `values` (nested classes likewise)."""
    fields = {}
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, dg.Config):
            sub = _with_defaults(f.annotation, values.get(name) or {})
            fields[name] = (sub, sub())
        else:
            fields[name] = (f.annotation, Field(values.get(name), description=f.description, ge=_ge(f), validate_default=True))
    return pydantic.create_model(model.__name__, __base__=model, __module__=model.__module__, __doc__=model.__doc__, **fields)


def _ge(field):
    return next((m.ge for m in field.metadata if hasattr(m, "ge")), None)


def _fields(model) -> dict:
    """{field: nested fields or None} of a Config class."""
    out = {}
    for name, f in model.model_fields.items():
        nested = isinstance(f.annotation, type) and issubclass(f.annotation, dg.Config)
        out[name] = _fields(f.annotation) if nested else None
    return out


def _pick(values: dict, fields: dict) -> dict:
    return {k: _pick(values.get(k) or {}, sub) if sub is not None else values.get(k) for k, sub in fields.items()}


def _changed(values: dict, base: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            sub = _changed(v, base.get(k) or {} if isinstance(base, dict) else {})
            if sub:
                out[k] = sub
        elif v is not None and (not isinstance(base, dict) or base.get(k) != v):
            out[k] = v
    return out


class MlflowResource(dg.ConfigurableResource):
    """MLflow at `tracking_uri` (and `registry_uri`, default the same), reached through an explicit client.

    Training and evaluation assets get one MLflow run per materialization. Per-page stages
    (`run(..., per_materialization=True)`) share one run across the partitions a Dagster backfill (or
    run) materializes: found or created by the tag `dagster_run_id` (the backfill id when there is one)
    and the asset key, with each partition's params, metrics and artifacts under its partition key.
    `artifact_location` None: the server decides (http(s) tracking URI), or `mlartifacts/` beside a
    SQLite store (`mangacolor.tracking.artifact_location`).
    """

    tracking_uri: str
    registry_uri: str | None = None
    experiment: str = "mangacolor"
    artifact_location: str | None = None
    system_metrics: bool | None = None  # None: on when psutil is installed (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false: off)

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    def experiment_id(self, client=None) -> str:
        return get_or_create_experiment(client or self.client(), self.experiment, self.artifact_location)

    @contextlib.contextmanager
    def run(self, context: dg.AssetExecutionContext, params: dict | None = None, per_materialization: bool = False):
        """Open the run of this materialization; tags tie it to the Dagster run, asset and partition.

        Yields an `MlflowTracker` (`tracker.run_id`, `tracker.experiment_id`); inside the block the
        run is also the active fluent run of this store (`mangacolor.tracking.active_run`).
        """
        client = self.client()
        experiment_id = self.experiment_id(client)
        key = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        group = context.run.tags.get("dagster/backfill") or context.run.run_id
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": key}
        if per_materialization:
            tags["dagster_run_id"] = group
            name = f"{key}-{group[:8]}"
            run_id = find_or_create_run(client, experiment_id, tags, ("dagster_run_id", "dagster.asset_key"), name)
            prefix = f"{partition}/" if partition else ""
        else:
            if partition:
                tags["dagster.partition"] = partition
            name = f"{key}" + (f"[{partition}]" if partition else "") + f"-{context.run.run_id[:8]}"
            run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
            prefix = ""
        with active_run(client, run_id, self.registry_uri, self.system_metrics, prefix=prefix) as tracker:
            tracker.experiment_id = experiment_id
            if per_materialization and partition:
                tracker.set_tags({"dagster.run_id": context.run.run_id})
            if params:
                tracker.log_params(params)
            yield tracker


def default_tracking_uri(project: Path) -> str:
    # MLflow wants an absolute sqlite URI: four slashes for an absolute path.
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project / 'mlflow.db').resolve()}"
