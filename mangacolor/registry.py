"""The MLflow model registry for colorizer bundles: register, alias, download.

A registered version is an MLflow pyfunc model whose artifact is the bundle folder
(`mangacolor.inference.bundle`), so `mlflow.pyfunc.load_model("models:/mangacolor-colorizer@champion")`
colorizes a page and `mangacolor colorize --model models:/...` uses the same files. The registry
builds on `mangacolor.inference.bundle` (bundles, and fetching one behind a model URI), never the
other way round. New versions get
the alias `candidate`; evaluation moves `champion` only to a candidate that passes its gate.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc

from mangacolor.inference.bundle import ModelBundle, download_bundle  # noqa: F401 - download_bundle re-exported

MODEL_NAME = "mangacolor-colorizer"


class ColorizerModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a bundle: input a DataFrame with a `page_path` column, output colour PNG paths."""

    def load_context(self, context):
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        import tempfile

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


def register_bundle(bundle_dir: str | Path, name: str = MODEL_NAME, alias: str | None = "candidate",
                    tags: dict | None = None):
    """Log the bundle as a pyfunc model in the active run and register it; returns the ModelVersion."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ColorizerModel(),
        artifacts={"bundle": str(bundle_dir)},
        # Explicit requirements: inferring them would import and pip-freeze the whole environment.
        pip_requirements=["torch", "numpy", "opencv-python-headless", "safetensors", "timm", "pillow"],
    )
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client = mlflow.MlflowClient()
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def version_by_alias(alias: str, name: str = MODEL_NAME):
    """The ModelVersion behind an alias, or None if the alias is not set."""
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def promote(version: str | int, name: str = MODEL_NAME, alias: str = "champion") -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))
