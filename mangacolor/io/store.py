"""Artifact storage: one layout, atomic writes and parquet manifests, over any fsspec filesystem.

Layout: `{root}/{asset}/{partition}/{data_version}/` holds an asset's files and `manifest.parquet`
(one row per item). A materialization writes into a staging folder, derives the data version
from the content it wrote, moves the folder to its version name and writes the manifest last: the
manifest is the commit point, so a reader never sees half an output. `{asset}/{partition}/LATEST`
names the newest committed version, for readers that run outside Dagster (the CLI, benchmarks).

`root` is a local path or any fsspec URL (`s3://bucket/prefix`, `memory://x`).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.parquet"
LATEST = "LATEST"
UNPARTITIONED = "all"

# The columns every manifest has; stages add their own after these.
MANIFEST_COLUMNS = ["id", "title", "page", "source_uri", "path", "width", "height", "sha256", "status", "reason"]

_SAFE_PART = re.compile(r"^\.?[A-Za-z0-9][A-Za-z0-9._=+-]{0,200}$")


def safe_part(name: str) -> str:
    """A path component derived from untrusted text (titles, page names): never `..`, `/` or empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name)).strip("._")
    if not cleaned:
        cleaned = "x" + hashlib.sha256(str(name).encode()).hexdigest()[:12]
    return cleaned[:200]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_version(rows: Iterable[dict], salt: str = "") -> str:
    """A data version from what was written: stable under row order, changes with any byte."""
    h = hashlib.sha256(salt.encode())
    for key in sorted(f"{r.get('id')}|{r.get('sha256')}|{r.get('status')}|{r.get('reason') or ''}" for r in rows):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class Store:
    """A folder of artifacts on any fsspec filesystem."""

    def __init__(self, root: str | Path, storage_options: dict | None = None):
        self.root_uri = str(root).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_uri, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # --- paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Absolute path inside the store; every part is checked so nothing escapes the root."""
        clean = []
        for part in parts:
            for piece in str(part).split("/"):
                if piece in ("", "."):
                    continue
                if piece == ".." or not _SAFE_PART.match(piece):
                    raise ValueError(f"unsafe path component {piece!r} in {parts!r}: use safe_part() on untrusted names")
                clean.append(piece)
        return posixpath.join(self.root, *clean) if clean else self.root

    def uri(self, *parts: str) -> str:
        p = self.path(*parts)
        if self.is_local:
            return p
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return f"{protocol}://{p}"

    def relative(self, path: str) -> str:
        return posixpath.relpath(self._strip(path), self.root)

    def _strip(self, path_or_uri: str) -> str:
        return self.fs._strip_protocol(path_or_uri) if "://" in path_or_uri else path_or_uri

    # --- bytes -------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic write of an absolute store path (from `path()`)."""
        if self.is_local:
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            # An object-store PUT is atomic per object; the manifest written last commits a version.
            self.fs.pipe_file(path, data)

    def read_bytes(self, path_or_uri: str) -> bytes:
        return self.fs.cat_file(self._strip(path_or_uri))

    def exists(self, path: str) -> bool:
        return self.fs.exists(self._strip(path))

    def move_tree(self, src: str, dst: str) -> None:
        """Rename a folder (local: one atomic rename; object stores: copy each object, then delete)."""
        if self.is_local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
            return
        for path in self.fs.find(src):
            self.fs.copy(path, posixpath.join(dst, posixpath.relpath(path, src)))
        self.fs.rm(src, recursive=True)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    # --- manifests and versions ---------------------------------------------------------------
    def write_manifest(self, version_dir: str, frame: pd.DataFrame) -> str:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), buf)
        target = posixpath.join(version_dir, MANIFEST)
        self.write_bytes(target, buf.getvalue())
        return target

    def read_manifest(self, version_dir_or_manifest: str) -> pd.DataFrame:
        target = version_dir_or_manifest
        if not target.endswith(".parquet"):
            target = posixpath.join(target, MANIFEST)
        if not self.exists(target):
            raise FileNotFoundError(f"no manifest at {target}: materialize the upstream asset first")
        return pd.read_parquet(io.BytesIO(self.read_bytes(target)))

    def latest_version(self, asset: str, partition: str = UNPARTITIONED) -> str | None:
        pointer = self.path(asset, safe_part(partition), LATEST)
        if not self.exists(pointer):
            return None
        return self.read_bytes(pointer).decode().strip() or None

    def latest_dir(self, asset: str, partition: str = UNPARTITIONED) -> str:
        version = self.latest_version(asset, partition)
        if version is None:
            raise FileNotFoundError(
                f"asset {asset!r} partition {partition!r} has no committed version under {self.uri(asset)}: materialize it first"
            )
        return self.path(asset, safe_part(partition), version)

    def latest_manifest(self, asset: str, partition: str = UNPARTITIONED) -> pd.DataFrame:
        return self.read_manifest(self.latest_dir(asset, partition))

    def partitions(self, asset: str) -> list[str]:
        base = self.path(asset)
        if not self.exists(base):
            return []
        out = []
        for p in self.fs.ls(base, detail=False):
            name = posixpath.basename(p.rstrip("/"))
            if self.exists(posixpath.join(self._strip(p), LATEST)):
                out.append(name)
        return sorted(out)

    def begin(self, asset: str, partition: str = UNPARTITIONED) -> "VersionWriter":
        return VersionWriter(self, asset, safe_part(partition))


@dataclass
class VersionWriter:
    """Collects one materialization's files in a staging folder, then commits them as a version."""

    store: Store
    asset: str
    partition: str
    staging: str = field(init=False)
    rows: list[dict] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.staging = self.store.path(self.asset, self.partition, f".staging-{uuid.uuid4().hex[:12]}")

    def write(self, relpath: str, data: bytes) -> str:
        """Write a file into the staging folder; returns the path relative to the version folder."""
        parts = [safe_part(p) for p in relpath.split("/") if p]
        self.store.write_bytes(posixpath.join(self.staging, *parts), data)
        return "/".join(parts)

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def commit(self, extra_frame_columns: list[str] | None = None, salt: str = "") -> tuple[str, str, pd.DataFrame]:
        """Move staging to `{data_version}/`, write the manifest last, point LATEST at it.

        Returns (data_version, version_dir, manifest frame)."""
        store = self.store
        version = content_version(self.rows, salt=salt)
        final = store.path(self.asset, self.partition, version)
        frame = pd.DataFrame(self.rows)
        for col in MANIFEST_COLUMNS + list(extra_frame_columns or []):
            if col not in frame.columns:
                frame[col] = pd.Series([None] * len(frame), dtype="object")
        ordered = MANIFEST_COLUMNS + [c for c in frame.columns if c not in MANIFEST_COLUMNS]
        frame = frame[ordered]
        if store.exists(posixpath.join(final, MANIFEST)):
            # Same content already committed (a re-run): keep it, drop the staging copy.
            if store.exists(self.staging):
                store.fs.rm(self.staging, recursive=True)
        else:
            if store.exists(self.staging):
                if store.exists(final):
                    store.fs.rm(final, recursive=True)
                store.move_tree(self.staging, final)
            store.write_manifest(final, frame)
        store.write_text(store.path(self.asset, self.partition, LATEST), version)
        return version, final, frame

    def abort(self) -> None:
        if self.store.exists(self.staging):
            self.store.fs.rm(self.staging, recursive=True)
