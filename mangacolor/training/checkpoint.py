"""The one checkpoint format of mangacolor: every training loop saves and resumes through it.

A checkpoint is a folder `step-00001234/` holding
  - `weights.safetensors`: every module's state dict, keys prefixed by the module's name (`g.`, `d.`),
  - `optim.pt`: optimiser state dicts (plain tensors and numbers: loads with `weights_only=True`),
  - `state.json`: step, caller's extra state and the Python / NumPy RNG states,
  - `rng.safetensors`: the torch CPU (and CUDA) RNG states.
It is written under a temporary name and renamed into place, so a run killed mid-save leaves the
previous checkpoint intact; `restore` picks the newest complete one.

On a cluster the local folder dies with its pod: with MANGACOLOR_WORK_MIRROR set (an fsspec URL such
as s3://bucket/work, beside the artifact root) every checkpoint under MANGACOLOR_WORK_DIR is also
uploaded to the same relative path there, `state.json` last, and a Checkpointer that finds no local
checkpoint downloads the newest complete one, so a step retried on a fresh pod resumes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "weights.safetensors"


def _flatten(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    flat = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            # safetensors refuses shared or non-contiguous storage: save an independent copy.
            flat[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    return flat


def save_weights(path: str | Path, module_or_state: torch.nn.Module | dict, metadata: dict | None = None) -> Path:
    """Atomically write a state dict as safetensors; metadata values are stored as JSON strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by `save_weights`: (state dict, metadata)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path} (expected a .safetensors file written by mangacolor)")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    return load_file(str(path)), meta


def load_configured(path: str | Path, config_cls, build, writer: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A module saved by `save_weights(..., metadata={"config": asdict(cfg)})`: rebuilt from its config, in eval mode.

    `build(config)` makes the empty module; `writer` names the function that writes such files, for the error.
    """
    state, meta = load_weights(path)
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' in the safetensors metadata; expected a file written by {writer}")
    # JSON turns tuples into lists; the frozen config dataclasses want tuples back.
    cfg = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    module = build(cfg)
    module.load_state_dict(state)
    return module.to(device).eval()


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


def default_mirror(directory: Path) -> str | None:
    """MANGACOLOR_WORK_MIRROR + the directory's path below MANGACOLOR_WORK_DIR, when both are set and it lies there."""
    mirror, work = os.environ.get("MANGACOLOR_WORK_MIRROR"), os.environ.get("MANGACOLOR_WORK_DIR")
    if not mirror or not work:
        return None
    try:
        rel = Path(directory).resolve().relative_to(Path(work).resolve())
    except ValueError:
        return None
    return f"{mirror.rstrip('/')}/{rel.as_posix()}"


class Checkpointer:
    """Save / restore training state in `directory`, keeping the newest `keep_last` checkpoints.

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
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
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
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        pruned = self.checkpoints()[: -self.keep_last] if self.keep_last > 0 else []
        for old in pruned:
            shutil.rmtree(old, ignore_errors=True)
        if self.mirror:
            self._push(final, [p.name for p in pruned])
        return final

    def restore(
        self,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        restore_rng: bool = True,
    ) -> dict | None:
        """Load the newest checkpoint into `modules` / `optimizers`; None when there is none."""
        path = self.latest()
        if path is None:
            return None
        flat = load_file(str(path / WEIGHTS))
        for name, module in modules.items():
            prefix = f"{name}."
            state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            if not state and any(True for _ in module.state_dict()):
                raise KeyError(f"checkpoint {path} has no weights for module {name!r} (has: {sorted({k.split('.')[0] for k in flat})})")
            module.load_state_dict(state)
        opt_states = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        for name, opt in (optimizers or {}).items():
            if name in opt_states:
                opt.load_state_dict(opt_states[name])
        state = json.loads((path / "state.json").read_text())
        if restore_rng:
            _set_rng_state(state["rng"], load_file(str(path / "rng.safetensors")))
        return {"step": state["step"], "extra": state["extra"], "path": str(path)}
