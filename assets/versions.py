"""Code versions: which preset sections shape each asset, and the `code_version` Dagster compares for staleness.

An asset's code version is a digest of (the package version, the preset sections in `SECTIONS` below
as canonical JSON, the code versions of the assets it reads). Editing `refiner:` in the preset
therefore gives `refiner_model` a new code version and, through the chain, everything built from it
(`refined_pages`, `cut_model`, `synthetic_bw_pages`, the drafting networks trained on synthetic pages,
the colorizer stages, the evaluation): Dagster shows exactly those as stale ("has a new code version")
and "Materialize unsynced" reruns them. Dagster itself compares an asset only with its direct inputs'
data versions, so without the chain the downstream assets would turn stale one level at a time, as
each upstream is rematerialized.

Sections left out on purpose: `sources`, `manga109`, `web_sources` and `demo_data` (data, versioned by the
observable source assets), `device` (where it runs, not what), `artifact_root`, and `synthetic_gap`
(metadata only). A dotted name (`evaluation.benchmark`) versions one subsection.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable, Mapping

import dagster as dg

# asset -> the preset sections its computation reads. The one place that says so (README § Staleness).
SECTIONS: dict[str, tuple[str, ...]] = {
    "color_pages": ("ingest",),
    "bw_pages": ("ingest",),
    "manga109_pages": (),
    "page_pairs": ("matching",),
    "page_splits": ("splits",),
    "scraped_pages": (),
    "xdog_pages": ("xdog",),
    "refiner_model": ("refiner", "xdog"),
    "refined_pages": ("refiner",),
    "cut_model": ("cut",),
    "synthetic_bw_pages": ("cut",),
    "blurred_color_pages": ("blur",),
    "stylegan": ("stylegan",),
    "inversion_encoder": ("inversion_encoder", "blur"),
    "drafting_network": ("drafting_network", "blur"),
    "drafting_network_final": ("drafting_network", "blur"),
    "coloring_drafts": ("coloring_drafts", "blur"),
    "bw_page_drafts": ("coloring_drafts", "blur"),
    "colorizer_step1_snapshots": ("colorizer",),
    "colorizer_step1_finetuned": ("colorizer",),
    "selected_snapshots": ("colorizer",),
    "pseudolabels": ("colorizer",),
    "colorizer_step2": ("colorizer",),
    "colorizer_final": ("colorizer",),
    "fid_report": ("evaluation",),
    "champion_model": ("evaluation.gate",),
    "inference_benchmark": ("evaluation.benchmark",),
}


def package_version() -> str:
    try:
        return importlib.metadata.version("mangacolor")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def section_value(preset: Mapping, section: str):
    """The value of `section` (dotted for a subsection) in the loaded preset; None where absent."""
    value = preset
    for part in section.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _digest(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_versions(preset: Mapping, parents: Mapping[str, Iterable[str]], version: str | None = None) -> dict[str, str]:
    """The code version of every asset in `parents` (asset -> the assets it reads), parents first.

    An asset missing from SECTIONS raises: a new asset must say which sections it reads (possibly none).
    """
    version = version or package_version()
    missing = sorted(a for a in parents if a not in SECTIONS)
    if missing:
        raise KeyError(f"assets/versions.py SECTIONS has no entry for {missing}: add the preset sections each reads (or ())")
    out: dict[str, str] = {}

    def visit(asset: str, path: tuple[str, ...] = ()) -> str:
        if asset not in out:
            if asset in path:
                raise ValueError(f"dependency cycle through {asset}")
            inputs = {p: visit(p, (*path, asset)) for p in sorted(parents[asset]) if p in parents}
            out[asset] = _digest({"package": version, "sections": {s: section_value(preset, s) for s in SECTIONS[asset]},
                                  "inputs": inputs})
        return out[asset]

    for asset in parents:
        visit(asset)
    return out


def with_code_versions(assets: list, preset: Mapping) -> list:
    """`assets` (as `load_assets_from_modules` returns them) with the code version of each materializable asset set."""
    parents: dict[str, list[str]] = {}
    for a in assets:
        if isinstance(a, dg.AssetsDefinition) and a.is_materializable:
            for spec in a.specs:
                parents[spec.key.to_user_string()] = [d.asset_key.to_user_string() for d in spec.deps]
    versions = code_versions(preset, parents)

    def set_version(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(code_version=versions[spec.key.to_user_string()])

    return [a.map_asset_specs(set_version) if isinstance(a, dg.AssetsDefinition) and a.is_materializable else a
            for a in assets]
