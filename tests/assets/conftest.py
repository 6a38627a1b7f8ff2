"""A throwaway project for asset tests: a copy of the demo corpus, a preset pointing at it, an artifact root."""

import shutil
from pathlib import Path

import pytest
import yaml

from mangacolor.config import PRESET_DIR


@pytest.fixture()
def project(tmp_path, demo_corpus):
    data = tmp_path / "demo_data"
    shutil.copytree(demo_corpus, data)
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
    preset["demo_data"] = str(data)
    preset["artifact_root"] = str(tmp_path / "artifacts")
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    return {"root": tmp_path, "data": data, "preset": str(path), "artifacts": tmp_path / "artifacts",
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def build(project):
    from pipelines.definitions import build_definitions

    return build_definitions(preset=project["preset"], artifact_root=str(project["artifacts"]), tracking_uri=project["tracking_uri"])


def materialize_partitions(defs, instance, keys, partitions):
    import dagster as dg

    from pipelines.definitions import executable_defs

    for p in partitions:
        dg.materialize(executable_defs(defs), selection=keys, partition_key=p, instance=instance, resources=defs.resources)
