"""Bundles made from weights trained elsewhere: today the authors' 2021 release (manga-colorization-v2).

    mangacolor import-weights mc2 generator.zip [--extractor extractor.pth] [--denoiser net_rgb.pth] -o mc2-bundle/

The bundle holds our `paper`-layout generator with the 2021 weights (`mangacolor.models.mc2`: the
draft input added with zero weights, so it colours as the 2021 model does), the release's page
handling as inference options (`fit_width`: its colorization width, 576; `pad_mode: mc2`), and,
with `--denoiser`, the release's FFDNet pre-step at σ 25. `--extractor` adds the line-art
tag-prediction SE-ResNeXt-50 as `encoder_init.safetensors` (timm's names): the encoder start the
paper names, for training (`colorizer.encoder_init` in configs/paper.yaml). Every file is checked
before anything is written; a wrong one is a `WeightsFileError` whose one line names what differs.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from mangacolor.models.mc2 import RELEASE_SIZE, RELEASE_URL, SOURCE, WeightsFileError

VARIANT = "mc2"  # registered as mangacolor-colorizer-mc2 (mangacolor.inference.registry.model_name)
EXTRACTOR_WHERE = ("expected the 2021 release's extractor.pth (the SE-ResNeXt-50 pretrained for tag prediction on line "
                   f"art) or its generator.zip, linked from the README of {RELEASE_URL}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_extractor(path: str | Path):
    """The encoder (2021 `paper` layout) loaded from an extractor file, key by key; (encoder, tensors it lacked)."""
    from mangacolor.models.colorizer import build_encoder, load_encoder_weights

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such file; {EXTRACTOR_WHERE}")
    encoder = build_encoder("seresnext50", maxpool=False)
    try:
        missing = load_encoder_weights(encoder, path)
    except Exception as exc:  # unreadable, other keys or shapes: one line
        raise WeightsFileError(f"{' '.join(str(exc).split())}; {EXTRACTOR_WHERE}") from None
    return encoder, missing


def import_mc2(generator_file: str | Path, out_dir: str | Path, extractor: str | Path | None = None,
               denoiser: str | Path | None = None, size: int | None = RELEASE_SIZE, denoise_sigma: float = 25.0) -> Path:
    """Write a bundle folder from the 2021 release's files; returns it. `size` None: colour at the page's own size."""
    from mangacolor.io.bundle import write_bundle
    from mangacolor.models.mc2 import load_release_denoiser, load_release_generator, mc2_config
    from mangacolor.io.weights import save_weights

    if size is not None and (size <= 0 or size % 32):
        raise ValueError(f"--size must be a positive multiple of 32 (the release's 576), got {size}")
    generator_file = Path(generator_file).expanduser()
    generator, _ = load_release_generator(generator_file)
    den = load_release_denoiser(Path(denoiser).expanduser()) if denoiser is not None else None
    encoder, lacked = check_extractor(extractor) if extractor is not None else (None, [])
    out = Path(out_dir)
    config = mc2_config()
    info = {
        "source": SOURCE, "source_url": RELEASE_URL, "variant": VARIANT,
        "source_files": {"generator": {"name": generator_file.name, "sha256": _sha256(generator_file)}},
        "colorizer_config": config.to_dict(),
        "fit_width": size, "pad_mode": "mc2",
        "note": "the 2021 model (no coloring drafts): our paper-layout generator with zero-initialised draft inputs",
    }
    with tempfile.TemporaryDirectory(prefix=".import-", dir=out.parent if out.parent.exists() else None) as tmp:
        files = {"colorizer": save_weights(Path(tmp) / "colorizer.safetensors", generator, {"config": config.to_dict()})}
        if den is not None:
            files["denoiser"] = save_weights(Path(tmp) / "denoiser.safetensors", den, {"config": {"channels": den.channels}})
            info["denoise_sigma"] = denoise_sigma
            info["source_files"]["denoiser"] = {"name": Path(denoiser).name, "sha256": _sha256(Path(denoiser).expanduser())}
        if encoder is not None:
            init = save_weights(Path(tmp) / "encoder_init.safetensors", encoder, {"source": Path(extractor).name})
            info["encoder_init"] = init.name
            info["source_files"]["extractor"] = {"name": Path(extractor).name, "sha256": _sha256(Path(extractor).expanduser()),
                                                 "tensors_missing": len(lacked)}
        write_bundle(out, files, info)
        if encoder is not None:
            shutil.copyfile(init, out / init.name)
    return out


def register_imported(bundle_dir: str | Path, client=None):
    """Register an imported bundle as `mangacolor-colorizer-<variant>` (its `variant` tag, no alias: never
    candidate or champion of the main model); returns the ModelVersion."""
    import json
    import os

    import mlflow

    from mangacolor.io.bundle import BUNDLE_JSON
    from mangacolor.inference.registry import register_bundle
    from mangacolor.tracking import active_run, get_or_create_experiment

    info = json.loads((Path(bundle_dir) / BUNDLE_JSON).read_text())
    variant = str(info.get("variant") or VARIANT)
    client = client or mlflow.MlflowClient()
    # The pipeline's experiment and artifact place (pipelines/definitions.py), so the import sits beside its runs.
    experiment = get_or_create_experiment(client, "mangacolor", os.environ.get("MANGACOLOR_MLFLOW_ARTIFACTS"))
    run_id = client.create_run(experiment, run_name=f"import-{variant}", tags={"variant": variant}).info.run_id
    with active_run(client, run_id, system_metrics=False) as tracker:
        tracker.log_params({"source": info.get("source"), "fit_width": info.get("fit_width"),
                            "denoise_sigma": info.get("denoise_sigma")})
        tags = {"variant": variant, "source": str(info.get("source")), "imported": "true"}
        return register_bundle(bundle_dir, tags=tags, alias=None, client=client)


__all__ = ["VARIANT", "check_extractor", "import_mc2", "register_imported"]
