"""The final colorizer as users get it: step 2's generator with the drafting networks, as a model bundle.

The drafting parts come from the store: the second-round drafting network when it exists, the
inversion encoder, and the one StyleGAN both decode through; a part that is missing or was
trained against another generator is left out and said so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from mangacolor.io.store import Store, VersionWriter, sha256_bytes
from mangacolor.stages.colorization.config import ColorizationConfig, VariantFlags


def stored_inversion(store: Store, device: torch.device):
    """The latest `inversion_encoder` with the StyleGAN it was trained against, or None if it has no version."""
    if store.latest_version("inversion_encoder") is None:
        return None
    from mangacolor.stages.drafting import load_stored_psp

    return load_stored_psp(store, "inversion_encoder", device)[0].requires_grad_(False)


def drafting_files(store: Store, target: Path) -> tuple[dict[str, Path], list[str]]:
    """Local copies of the bundle's drafting parts: {stylegan, drafting, inversion} -> file, and notes.

    Both encoders must decode through one generator (a bundle holds one StyleGAN): the one the
    drafting network was trained against; an inversion encoder trained against another is left out.
    """
    from mangacolor.stages.drafting import generator_path, weights_row

    encoders, notes = {}, []
    # The drafting network's second round (synthetic pairs + pseudolabelled real pages, §III) when it
    # exists, else its first (synthetic pairs only).
    drafting = "drafting_network_final" if store.latest_version("drafting_network_final") else "drafting_network"
    if drafting == "drafting_network" and store.latest_version("drafting_network"):
        notes.append("drafting_network_final not materialized: the bundle drafts with the first-round drafting network")
    for part, asset in (("drafting", drafting), ("inversion", "inversion_encoder")):
        if store.latest_version(asset) is None:
            notes.append(f"{asset} not materialized: bundle without {part}")
            continue
        vdir, row = weights_row(store, asset)
        encoders[part] = (f"{vdir}/{row['path']}", row.get("stylegan_version"))
    if not encoders:
        return {}, notes
    gan_version = next(iter(encoders.values()))[1]
    target.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, (uri, version) in encoders.items():
        if version != gan_version:
            notes.append(f"{part} was trained against stylegan {version}, the drafting network against {gan_version}: bundle without {part}")
            continue
        files[part] = target / f"{part}.safetensors"
        files[part].write_bytes(store.read_bytes(uri))
    files["stylegan"] = target / "stylegan.safetensors"
    files["stylegan"].write_bytes(store.read_bytes(generator_path(store, gan_version)))
    return files, notes


def make_bundle(store: Store, colorizer: Path, flags: VariantFlags, target: Path, info: dict) -> tuple[Path, list[str], list[str]]:
    """The model bundle of a colorizer in `target`/bundle: with the drafting parts unless the variant has no
    drafts. Returns (bundle folder, parts, notes saying which parts are missing and why)."""
    from mangacolor.io.bundle import write_bundle

    files, notes = {"colorizer": colorizer}, []
    if flags.use_drafts:
        parts, notes = drafting_files(store, target / "drafting")
        files |= parts
        if "drafting" not in files:
            notes.append("bundle colorizes with an empty draft (no drafting network)")
    info = {**info, "fallbacks": [*info.get("fallbacks", []), *notes]}
    return write_bundle(target / "bundle", files, info), sorted(files), notes


def write_folder(writer: VersionWriter, folder: Path, prefix: str, role: str) -> None:
    """Every file of a local folder into the version under `prefix/`, one manifest row each."""
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        data = f.read_bytes()
        writer.add({"id": f"{role}:{f.name}", "title": None, "page": None, "path": writer.write(f"{prefix}/{f.name}", data),
                    "sha256": sha256_bytes(data), "status": "ok", "reason": None, "role": role})


def random_init_flags(cfg: ColorizationConfig, store: Store) -> dict[str, bool]:
    """Which pretrained networks of the paper this model stood in for with random ones."""
    from mangacolor.losses.colorization import default_vgg16_path

    vgg_file = Path(cfg.vgg_weights).expanduser() if cfg.vgg_weights else default_vgg16_path()
    uses_vgg = any(getattr(cfg, s).losses.get("per", 1.0) for s in ("step1", "step2", "finetune"))
    inception = False
    if store.latest_version("selected_snapshots"):
        frame = store.latest_manifest("selected_snapshots")
        inception = bool(frame.get("random_init", pd.Series([False])).astype(bool).any())
    return {"encoder": cfg.generator_config().encoder_weights is None, "vgg": bool(uses_vgg and not vgg_file.exists()),
            "inception_selection": inception}


BUNDLE_INPUTS = ("colorizer_step2", "colorizer_step1_finetuned", "page_pairs", "stylegan", "drafting_network",
                 "drafting_network_final", "inversion_encoder")


def bundle_info(store: Store, cfg: ColorizationConfig, random_init: dict[str, bool], **run_ids: str) -> dict:
    """What a bundle's bundle.json says of it besides its files: the generator's config, the training canvas, the
    variant, the runs that made it (`run_ids`), the store versions it was made from, and which networks were
    random stand-ins."""
    return {"colorizer_config": cfg.generator_config().to_dict(), "canvas": list(cfg.page_canvas()), "variant": cfg.variant.name(),
            "flags": cfg.variant.model_dump(), **run_ids, "inputs": {a: store.latest_version(a) for a in BUNDLE_INPUTS},
            "random_init": random_init, "fallbacks": []}
