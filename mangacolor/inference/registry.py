"""The MLflow model registry for colorizer bundles: names, versions, aliases.

A registered version is an MLflow pyfunc model whose artifact is the bundle folder
(`mangacolor.inference.bundle`, which this module builds on), so
`mlflow.pyfunc.load_model("models:/mangacolor-colorizer@champion")` colorizes a page and
`mangacolor colorize --model models:/...` uses the same files.

Only the full method is registered as `mangacolor-colorizer`, and only it carries the aliases
`candidate` (every new version) and `champion` (moved by evaluation to a candidate that passed its
gate). An ablation variant (`colorizer.variant` in the preset: no_drafts, no_adaptation, ...) is
registered under its own name, `mangacolor-colorizer-<variant>`, with its `variant` tag, so no
switch in a preset can make a variant the candidate or the champion.

Errors of the tracking store are errors: only "this alias (or model) does not exist" reads as
"no such version yet".
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from mangacolor.config import MODEL_NAME
from mangacolor.inference.bundle import ModelBundle

FULL = "full"
MAIN_ALIASES = ("candidate", "champion")


def model_name(variant: str = FULL, base: str = MODEL_NAME) -> str:
    """The registered-model name of a variant: the full method is `base`, an ablation `base-<variant>`."""
    if variant == FULL:
        return base
    return f"{base}-{re.sub(r'[^A-Za-z0-9_]+', '-', variant).strip('-')}"


class ColorizerModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a bundle: input a DataFrame with a `page_path` column, output colour PNG paths."""

    def load_context(self, context):
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        from mangacolor.io.images import encode_png, read_image

        out_dir = Path(tempfile.mkdtemp(prefix="mangacolor-"))
        paths = []
        for i, p in enumerate(model_input["page_path"]):
            page = read_image(p, mode="L")
            drafts = self.bundle.drafts(page)
            target = out_dir / f"{i:05d}.png"
            target.write_bytes(encode_png(self.bundle.colorize(page, draft=drafts[0])))
            paths.append(str(target))
        return paths


def register_bundle(bundle_dir: str | Path, name: str | None = None, alias: str | None = "candidate",
                    tags: dict | None = None, client: mlflow.MlflowClient | None = None):
    """Log the bundle as a pyfunc model in the active run and register it; returns the ModelVersion.

    The active run and the registry are those of the fluent scope the caller opened
    (`mangacolor.tracking.active_run`); `client` (the same store) sets the alias.

    The variant comes from `tags["variant"]` (default "full"). A variant other than the full method
    goes to `model_name(variant)` and gets none of the main aliases (`alias` is ignored for it);
    asking to register it under the main name is a ValueError.
    """
    tags = {"variant": FULL, **(tags or {})}
    variant = str(tags["variant"])
    name = name or model_name(variant)
    if variant != FULL and name == MODEL_NAME:
        raise ValueError(f"variant {variant!r} cannot be registered as {MODEL_NAME!r}: that name is the full method's "
                         f"(register it as {model_name(variant)!r})")
    if variant != FULL and alias in MAIN_ALIASES:
        alias = None
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ColorizerModel(),
        artifacts={"bundle": str(bundle_dir)},
        # Explicit requirements: inferring them would import and pip-freeze the whole environment.
        pip_requirements=["torch", "numpy", "opencv-python-headless", "safetensors", "timm", "pillow"],
    )
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    if alias:
        (client or mlflow.MlflowClient()).set_registered_model_alias(name, alias, version.version)
    return version


def logged_model_id(version) -> str | None:
    """The MLflow 3 logged model behind a registered version: `version.model_id`, or its `models:/<model_id>`
    source (the SQL registry store keeps the source but not the id)."""
    if getattr(version, "model_id", None):
        return version.model_id
    found = re.fullmatch(r"models:/(m-[0-9a-f]+)", version.source or "")
    return found.group(1) if found else None


def log_version_metrics(client: mlflow.MlflowClient, run_id: str, version, metrics: dict[str, float],
                        step: int = 0) -> None:
    """Log evaluation metrics of a registered version in `run_id`, linked to the version's logged model.

    MLflow 3 keeps a version's metrics on its LoggedModel (`version.model_id`), so the registry page of
    the version and `client.get_logged_model(version.model_id).metrics` show them. The version number
    is tagged on the run as well (`evaluated.<name>`), for stores whose versions predate logged models.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    model_id = logged_model_id(version)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step, model_id=model_id) for k, v in metrics.items()])
    client.set_tag(run_id, f"evaluated.{version.name}", str(version.version))


def _missing(exc: MlflowException) -> bool:
    """True for the registry's own "no such alias / no such model" answers, False for every other failure."""
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc)


def version_by_alias(alias: str, name: str = MODEL_NAME, client: mlflow.MlflowClient | None = None):
    """The ModelVersion behind an alias, or None when the alias (or the model) does not exist yet.

    Any other error of the tracking store (unreachable, locked, a broken schema) is raised.
    """
    client = client or mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def default_model() -> str:
    """The model `mangacolor colorize`, `mangacolor serve` and `Colorizer.from_registry()` use when none is named:
    the registry's champion, else its candidate (what `mangacolor demo` registers before any promotion).

    The registry is MLFLOW_TRACKING_URI's, else the project's `mlflow.db` (where the demo and the assets
    register). No version with either alias is a FileNotFoundError saying what to do."""
    import os

    from mangacolor.config import PROJECT_ROOT

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    for alias in ("champion", "candidate"):
        if version_by_alias(alias) is not None:
            return f"models:/{MODEL_NAME}@{alias}"
    raise FileNotFoundError(f"no model given and no registered {MODEL_NAME} with the alias champion or candidate "
                            "(run `mangacolor demo`, or pass a bundle folder or a models:/ URI)")


def variant_of(version) -> str:
    return (version.tags or {}).get("variant", FULL)


def promote(version: str | int, name: str = MODEL_NAME, alias: str = "champion",
            client: mlflow.MlflowClient | None = None) -> None:
    """Point `alias` at `version`; a main alias only ever names a version of the full method."""
    client = client or mlflow.MlflowClient()
    if alias in MAIN_ALIASES:
        mv = client.get_model_version(name, str(version))
        if name != MODEL_NAME or variant_of(mv) != FULL:
            raise ValueError(f"{name} v{version} is the {variant_of(mv)!r} variant: only the full method of {MODEL_NAME} "
                             f"can be {alias!r}")
    client.set_registered_model_alias(name, alias, str(version))


def variant_models(client: mlflow.MlflowClient | None = None, base: str = MODEL_NAME) -> dict[str, object]:
    """The latest version of each variant registered under its own name (`base-<variant>`), by variant tag."""
    client = client or mlflow.MlflowClient()
    latest: dict[str, object] = {}
    for rm in client.search_registered_models(filter_string=f"name LIKE '{base}-%'"):
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            v = variant_of(mv)
            if v != FULL and (v not in latest or int(mv.version) > int(latest[v].version)):
                latest[v] = mv
    return latest
