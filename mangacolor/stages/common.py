"""What several stages share: local copies of store files."""

from __future__ import annotations

from pathlib import Path

from mangacolor.io.store import Store


def to_local(store: Store, uri: str, target: Path) -> Path:
    """A local copy of a store file at `target` (its folder is made); returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(store.read_bytes(uri))
    return target
