"""Typed configuration: one class per stage, presets as YAML data (`configs/demo.yaml`, `configs/paper.yaml`).

The CLI and the Dagster assets read the same preset through `load_preset`, so a stage behaves the
same whether it runs from `mangacolor ...` or from the UI. Stage classes that belong to a network
(StyleGAN, pSp, the colorizer, CUT) live beside their training loop; the preset holds one section
per stage and `stage_config(preset, name, cls)` validates it.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field

_SOURCE_TREE = Path(__file__).resolve().parent.parent
MODEL_NAME = "mangacolor-colorizer"  # the full method's registered model; a variant registers as MODEL_NAME-<variant>


def _project_root() -> Path:
    """Where run-time state goes (artifacts, mlflow.db, .cache, .dagster_home, demo_data).

    MANGACOLOR_HOME when set; the source checkout when the package runs from one (an editable
    install); otherwise the current directory, so an installed wheel never writes into site-packages.
    """
    if os.environ.get("MANGACOLOR_HOME"):
        return Path(os.environ["MANGACOLOR_HOME"]).expanduser().resolve()
    if (_SOURCE_TREE / "pyproject.toml").is_file() and (_SOURCE_TREE / "configs").is_dir():
        return _SOURCE_TREE
    return Path.cwd().resolve()


def _preset_dir() -> Path:
    """The presets: `configs/` of the checkout, or the copy shipped inside the wheel (`mangacolor/configs`)."""
    if (_SOURCE_TREE / "configs").is_dir() and (_SOURCE_TREE / "pyproject.toml").is_file():
        return _SOURCE_TREE / "configs"
    return Path(str(importlib.resources.files("mangacolor") / "configs"))


PROJECT_ROOT = _project_root()
PRESET_DIR = _preset_dir()
WORK_DIR_ENV = "MANGACOLOR_WORK_DIR"


def work_dir() -> Path:
    """The local folder of run-time state (checkpoints, feature caches, crawl state): MANGACOLOR_WORK_DIR, else
    `.cache/` of the project. What lies below it is mirrored to MANGACOLOR_WORK_MIRROR when that is set."""
    return Path(os.environ.get(WORK_DIR_ENV) or PROJECT_ROOT / ".cache")

T = TypeVar("T")


class IngestConfig(BaseModel):
    dedup_distance: int | None = Field(16, description="max dHash-256 bit distance of a near-duplicate; null disables")


class SplitConfig(BaseModel):
    seed: int = 0
    holdout_fraction: float = Field(0.2, ge=0, lt=1, description="used when holdout_count is null")
    holdout_count: int | None = Field(None, description="paper: 5,000 black-and-white pages")
    paired_holdout_fraction: float = Field(0.0, ge=0, lt=1, description="matched pairs held out (never fine-tuned on) so "
                                           "fid_report can score pages against their true colours; 0: all pairs train, as the paper")


class DemoDataConfig(BaseModel):
    seed: int = 0
    scale: float = 1.0


def resolve_preset_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(q.stem for q in PRESET_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no preset {name_or_path!r}: expected a YAML file path or one of: {known}")


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in variables.items():
            value = value.replace("{" + key + "}", repl)
        return value
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def load_preset(name_or_path: str | Path = "demo", overrides: dict | None = None, **variables: str) -> dict:
    """The preset as a dict, `{project}`/`{presets}`/`{demo_data}`/`{artifact_root}` placeholders filled, overrides merged.

    `artifact_root` is resolved once, so sources that read other assets' output (`kind: scraped`)
    and the store agree: an explicit `artifact_root=` variable wins, then MANGACOLOR_ARTIFACT_ROOT,
    then the preset's own `artifact_root`.
    """
    path = resolve_preset_path(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    merged = _deep_merge(raw, overrides or {})
    variables.setdefault("project", str(PROJECT_ROOT))
    variables.setdefault("presets", str(PRESET_DIR))
    variables.setdefault("demo_data", str(Path(merged.get("demo_data", "demo_data")).expanduser()
                                          if Path(merged.get("demo_data", "demo_data")).is_absolute()
                                          else PROJECT_ROOT / merged.get("demo_data", "demo_data")))
    if not variables.get("artifact_root"):
        root = os.environ.get("MANGACOLOR_ARTIFACT_ROOT") or merged.get("artifact_root", "{project}/artifacts")
        variables["artifact_root"] = _substitute(str(root), {k: v for k, v in variables.items() if k != "artifact_root"})
    merged["artifact_root"] = variables["artifact_root"]
    return _substitute(merged, variables)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def stage_config(preset: dict, section: str, cls: type[T]) -> T:
    """Validate one preset section into its stage class (pydantic model or dataclass)."""
    values = preset.get(section) or {}
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return cls.model_validate(values)
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"preset section {section!r}: unknown keys {sorted(unknown)} for {cls.__name__} (known: {sorted(names)})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return cls(**values)


class WebSourceConfig(BaseModel):
    """A crawled gallery (`web_sources:` in a preset): its site description feeds `scraped_pages`."""

    name: str
    role: Literal["color", "bw"]
    site: str = Field(description="path of the site description YAML (see configs/sites/demo_site.yaml)")


def web_sources(preset: dict) -> list[WebSourceConfig]:
    return [WebSourceConfig.model_validate(s) for s in preset.get("web_sources") or []]
