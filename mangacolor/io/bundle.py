"""The model bundle as a folder: which files it holds, writing one, and finding one behind a model URI.

    bundle/
      bundle.json              which files are present, the colorizer config, inference options, provenance
      colorizer.safetensors    the colorization generator (§III-B)
      stylegan.safetensors     the Coloring Latent Space generator (§III-A), optional
      drafting.safetensors     pSp encoder black-and-white -> W+ (drafts, sampling), optional
      inversion.safetensors    pSp encoder colour -> W+ (reference images), optional
      denoiser.safetensors     FFDNet run on the page first (`denoise_sigma` in bundle.json), optional

The colorization stage writes bundles (`write_bundle`), inference loads them
(`mangacolor.inference.bundle.ModelBundle`), and the registry stores them in MLflow; this module is
the layout they share, below all three.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

BUNDLE_JSON = "bundle.json"
PARTS = ("colorizer", "stylegan", "drafting", "inversion", "denoiser")


def write_bundle(out_dir: str | Path, files: dict[str, str | Path], info: dict | None = None) -> Path:
    """Copy the weight files of `files` (part -> path) into a bundle folder with its bundle.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "colorizer" not in files:
        raise ValueError("a bundle needs at least the colorizer weights")
    present = {}
    for part, path in files.items():
        if part not in PARTS:
            raise ValueError(f"unknown bundle part {part!r}; expected one of {PARTS}")
        if path is None:
            continue
        target = out / f"{part}.safetensors"
        shutil.copyfile(path, target)
        present[part] = target.name
    (out / BUNDLE_JSON).write_text(json.dumps({"files": present, **(info or {})}, indent=2, default=str))
    return out


def download_bundle(model_uri: str) -> Path:
    """Local path of the bundle folder behind a registry or run model URI (MLflow downloads it)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    for c in (local / "artifacts" / "bundle", local / "bundle", local):
        if (c / BUNDLE_JSON).exists():
            return c
    found = list(local.rglob(BUNDLE_JSON))
    if found:
        return found[0].parent
    raise FileNotFoundError(f"{model_uri}: downloaded to {local} but no {BUNDLE_JSON} inside")


def resolve_bundle_path(location: str | Path) -> Path:
    """A local bundle folder, or an MLflow model URI (`models:/name@alias`, `runs:/...`) downloaded first."""
    text = str(location)
    if text.startswith(("models:/", "runs:/")):
        return download_bundle(text)
    path = Path(text)
    if path.is_file() and path.name == BUNDLE_JSON:
        path = path.parent
    if not (path / BUNDLE_JSON).exists():
        raise FileNotFoundError(
            f"{path}: not a mangacolor model bundle (no {BUNDLE_JSON}). Pass the folder written by the "
            "colorizer_final asset, or a registry URI such as models:/mangacolor-colorizer@champion"
        )
    return path
