"""Network weights on disk: one safetensors file per network, its config in the file's metadata.

`save_weights` writes a state dict atomically (mangacolor/io/files.py) with metadata values stored as
JSON strings; `load_weights` reads one back; `load_configured` rebuilds a module whose file carries its
config. The training loops write these files, and the models, the stages and inference read them, so
this lives at the ground floor. `count_parameters` is how the project counts a network's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mangacolor.io.files import atomic_path


def save_weights(path: str | Path, module_or_state: torch.nn.Module | dict, metadata: dict | None = None) -> Path:
    """Atomically write a state dict as safetensors; metadata values are stored as JSON strings."""
    path = Path(path)
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
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


def count_parameters(module: torch.nn.Module) -> int:
    """The number of values in a network's parameters (buffers not counted)."""
    return sum(p.numel() for p in module.parameters())
