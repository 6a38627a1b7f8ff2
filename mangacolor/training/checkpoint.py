"""The one checkpoint format of mangacolor: every training loop saves and resumes through it.

A checkpoint is a folder `step-00001234/` holding
  - `weights.safetensors`: every module's state dict, keys prefixed by the module's name (`g.`, `d.`),
  - `optim.pt`: the state dicts of the optimisers, the GradScaler and the learning-rate schedulers
    (anything with `state_dict()` / `load_state_dict()`; plain tensors and numbers: loads with
    `weights_only=True`),
  - `state.json`: step (which is also the data position: every loop's batch s is a function of
    (seed, s), see `loader.py`), caller's extra state and the Python / NumPy RNG states,
  - `rng.safetensors`: the torch CPU (and CUDA) RNG states.
It is written under a temporary name, fsynced and renamed into place, so a run killed mid-save
leaves the previous checkpoint intact; `restore` picks the newest complete one, and when that one
cannot be read (a damaged disk, a truncated copy) it warns and falls back to the one before.

On a cluster the local folder dies with its pod: with MANGACOLOR_WORK_MIRROR set (an fsspec URL such
as s3://bucket/work, beside the artifact root) every checkpoint under the work folder (MANGACOLOR_WORK_DIR,
else the project's `.cache/`) is also uploaded to the same relative path there, `state.json` last, and a Checkpointer that finds no local
checkpoint downloads the newest complete one, so a step retried on a fresh pod resumes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mangacolor.config import WORK_DIR_ENV, work_dir
from mangacolor.io.files import fsync_dir

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"


def _flatten(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    flat = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            # safetensors refuses shared or non-contiguous storage: save an independent copy.
            flat[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    return flat


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    np_state = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return state, tensors


def _set_rng_state(state: dict, tensors: dict[str, torch.Tensor]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint could not be read; an older one (or none) was used."""


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(folder)


MIRROR_ENV = "MANGACOLOR_WORK_MIRROR"


def default_mirror(directory: Path) -> str | None:
    """MANGACOLOR_WORK_MIRROR + the directory's path below the work folder (`mangacolor.config.work_dir`:
    MANGACOLOR_WORK_DIR, else the project's `.cache/`), when the mirror is set; None without one.

    A folder outside the work folder has no place in the mirror: a warning says so, since a fresh pod
    will not find what it holds."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return None
    work = work_dir()
    try:
        rel = Path(directory).resolve().relative_to(work.resolve())
    except ValueError:
        log.warning("%s is not below the work folder %s: it is not mirrored to %s (set %s to a folder that holds it)",
                    directory, work, mirror, WORK_DIR_ENV)
        return None
    return f"{mirror.rstrip('/')}/{rel.as_posix()}"


class Checkpointer:
    """Save / restore training state in `directory`, keeping the newest `keep_last` checkpoints.

    `optimizers` may hold any object with `state_dict()` / `load_state_dict()`: optimisers, the
    `GradScaler` (its scale and growth tracker decide which fp16 steps are skipped) and LR schedulers.
    `mirror`: an fsspec URL that holds a copy of every checkpoint (default: `default_mirror`).
    """

    def __init__(self, directory: str | Path, keep_last: int = 2, mirror: str | None = None):
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.mirror = mirror or default_mirror(self.directory)

    def _remote(self):
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.mirror)
        return fs, root.rstrip("/")

    def _push(self, folder: Path, pruned: list[str]) -> None:
        fs, root = self._remote()
        target = f"{root}/{folder.name}"
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for p in sorted(files, key=lambda p: p.name == "state.json"):  # the marker last
            fs.put_file(str(p), f"{target}/{p.name}")
        for name in pruned:
            if fs.exists(f"{root}/{name}"):
                fs.rm(f"{root}/{name}", recursive=True)

    def _pull(self) -> None:
        """Download the newest complete mirrored checkpoint into an empty local folder."""
        fs, root = self._remote()
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
        except FileNotFoundError:
            return
        steps = sorted((n for n in names if n.startswith("step-") and fs.exists(f"{root}/{n}/state.json")),
                       key=lambda n: int(n.split("-")[1]))
        if not steps:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pull-", dir=self.directory))
        try:
            for remote in fs.ls(f"{root}/{steps[-1]}", detail=False):
                fs.get_file(remote, str(tmp / remote.rstrip("/").rsplit("/", 1)[-1]))
            os.replace(tmp, self.directory / steps[-1])
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def checkpoints(self) -> list[Path]:
        found = self._local()
        if not found and self.mirror:
            self._pull()
            found = self._local()
        return found

    def _local(self) -> list[Path]:
        if not self.directory.exists():
            return []
        done = [p for p in self.directory.glob("step-*") if (p / "state.json").exists()]
        return sorted(done, key=lambda p: int(p.name.split("-")[1]))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(
        self,
        step: int,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, Any] | None = None,
        extra: dict | None = None,
    ) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.directory))
        try:
            save_file(_flatten(modules), str(tmp / WEIGHTS))
            torch.save({k: o.state_dict() for k, o in (optimizers or {}).items()}, tmp / "optim.pt")
            rng, rng_tensors = _rng_state()
            save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
            # state.json last: its presence marks a complete checkpoint.
            (tmp / "state.json").write_text(json.dumps({"step": step, "extra": extra or {}, "rng": rng}))
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        pruned = self.checkpoints()[: -self.keep_last] if self.keep_last > 0 else []
        for old in pruned:
            shutil.rmtree(old, ignore_errors=True)
        if self.mirror:
            self._push(final, [p.name for p in pruned])
        return final

    def _read(self, path: Path) -> tuple[dict, dict, dict, dict]:
        """Everything of one checkpoint, read before anything is loaded (a damaged file raises here)."""
        flat = load_file(str(path / WEIGHTS))
        opt_states = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        state = json.loads((path / "state.json").read_text())
        rng = load_file(str(path / "rng.safetensors"))
        if not isinstance(state, dict) or not {"step", "extra", "rng"} <= set(state):
            raise ValueError("state.json lacks step / extra / rng")
        return flat, opt_states, state, rng

    def restore(
        self,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, Any] | None = None,
        restore_rng: bool = True,
    ) -> dict | None:
        """Load the newest readable checkpoint into `modules` / `optimizers`; None when there is none.

        A checkpoint whose files cannot be read is skipped with a `CheckpointFallbackWarning` naming it
        and the error; one that reads but does not fit the modules (another configuration) is an error.
        """
        for path in reversed(self.checkpoints()):
            try:
                flat, opt_states, state, rng = self._read(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file means: try the one before
                warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); falling back to the one before",
                              CheckpointFallbackWarning, stacklevel=2)
                continue
            break
        else:
            if self.checkpoints():
                warnings.warn(f"no readable checkpoint in {self.directory}: starting from scratch",
                              CheckpointFallbackWarning, stacklevel=2)
            return None
        for name, module in modules.items():
            prefix = f"{name}."
            module_state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            if not module_state and any(True for _ in module.state_dict()):
                raise KeyError(f"checkpoint {path} has no weights for module {name!r} (has: {sorted({k.split('.')[0] for k in flat})})")
            module.load_state_dict(module_state)
        for name, opt in (optimizers or {}).items():
            if name in opt_states:
                opt.load_state_dict(opt_states[name])
        if restore_rng:
            _set_rng_state(state["rng"], rng)
        return {"step": state["step"], "extra": state["extra"], "path": str(path)}
