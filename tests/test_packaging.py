"""A non-editable install: `uv build` the wheel, install it into a fresh virtualenv, run the command.

The installed package must find its presets (shipped inside the wheel) and write nothing into
site-packages: run-time state (artifacts, mlflow.db, caches) goes under the current directory.
Dependencies are installed at the versions of uv.lock from uv's cache (hard links, seconds); only
when the cache lacks one does uv ask the package index.
SLOW: about 30 s on an idle 2-core machine, up to ~3 min on a loaded one (a build, an install of ~200
cached packages, three commands importing uncompiled sources); it stays in the suite on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv (the project's installer) on PATH")


def _uv(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["uv", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if not p.is_dir()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wheel")
    built = _uv("build", "--wheel", "--out-dir", str(tmp / "dist"), str(REPO), cwd=tmp)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("mangacolor-*.whl")
    locked = _uv("export", "--project", str(REPO), "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q", cwd=tmp)
    assert locked.returncode == 0, locked.stderr[-2000:]
    (tmp / "requirements.txt").write_text(locked.stdout)
    venv = tmp / "venv"
    made = _uv("venv", "-q", "--python", sys.executable, str(venv), cwd=tmp)
    assert made.returncode == 0, made.stderr
    install = ["pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", "requirements.txt", str(wheel)]
    done = _uv(*install[:2], "--offline", *install[2:], cwd=tmp)
    if done.returncode != 0:  # a package missing from the cache: the index has it
        done = _uv(*install, cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    return {"venv": venv, "site": site, "tmp": tmp}


def _run(installed, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # Nothing of this checkout or this test session may leak in: no PYTHONPATH, no project variables.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MANGACOLOR_", "MLFLOW_", "DAGSTER_", "PYTHON", "VIRTUAL_ENV", "UV_"))}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "MANGACOLOR_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(installed["venv"] / "bin" / "mangacolor"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_an_installed_wheel_finds_its_presets_and_writes_nothing_into_site_packages(installed):
    site, work = installed["site"], installed["tmp"] / "work"
    work.mkdir()
    assert not (site / "mangacolor" / "__init__.py").is_symlink() and (site / "mangacolor" / "configs" / "demo.yaml").is_file()
    before = _snapshot(site)

    helped = _run(installed, "--help", cwd=work)
    assert helped.returncode == 0 and "colorize" in helped.stdout, helped.stderr[-2000:]

    shown = _run(installed, "preset", "demo", cwd=work)
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = dict(line[2:].split(": ", 1) for line in shown.stdout.splitlines() if line.startswith("# "))
    assert Path(lines["preset"]) == site / "mangacolor" / "configs" / "demo.yaml"
    assert lines["run-time state under"].startswith(str(work.resolve()))
    assert lines["default MLflow store"] == f"sqlite:///{work.resolve() / 'mlflow.db'}"
    assert f"artifact_root: {work.resolve() / 'artifacts'}" in shown.stdout
    assert f"site: {site / 'mangacolor' / 'configs' / 'sites' / 'demo_site.yaml'}" in shown.stdout

    missing = _run(installed, "preset", "no-such-preset", cwd=work)
    assert missing.returncode != 0 and "one of: demo, paper" in missing.stderr

    assert _snapshot(site) == before
    ours = [site, *(site / name for name in ("mangacolor", "assets", "pipelines"))]
    state = ("mlflow.db", "mlruns", "mlartifacts", "artifacts", ".cache", ".dagster_home", "demo_data")
    assert not [folder / name for folder in ours for name in state if (folder / name).exists()]
