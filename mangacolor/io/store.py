"""Artifact storage: one layout, atomic writes and parquet manifests, over any fsspec filesystem.

Layout: `{root}/{asset}/{partition}/{data_version}/` holds an asset's files and `manifest.parquet`
(one row per item). A materialization goes through three steps:

1. stage: files go into `.staging-<time>-<id>/` of the partition, invisible to every reader;
2. seal (`VersionWriter.seal`): the data version is derived from every column of every row and the
   sha256 of every file written, the staging folder becomes `{data_version}/` and its manifest is
   written last. A sealed version is complete and immutable, but nothing reads it yet;
3. commit (`VersionWriter.commit`): `{asset}/{partition}/LATEST` names the version. An asset does
   this as its very last step, after its metadata, MLflow and registry calls, so a run that fails
   before the end leaves LATEST where it was.

Seal and commit run under a per-partition lock (`Store.lock`: `fcntl` on local disk, an in-process
lock for `memory://`, on S3 a lease object created with a conditional PUT, renewed while held and
broken only by a conditional delete once expired: `S3Lease`), so two writers of one partition each
end with a complete version and LATEST names one of them. On local disk the
files, the folders and LATEST are fsynced at those points. A failed writer removes its staging
folder (`with store.begin(...) as writer:`), and staging folders older than `STALE_STAGING_S`
(left by killed processes) are swept when the next writer of the partition begins.
`verify` (the `mangacolor store verify` command) checks every manifest's files against their sha256.

`root` is a local path or any fsspec URL (`s3://bucket/prefix`, `memory://x`).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import errno
import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mangacolor.io.files import TMP_PREFIX, fsync_dir, write_atomic
from mangacolor.io.limits import READ_CHUNK

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
LATEST = "LATEST"
UNPARTITIONED = "all"
STAGING_PREFIX = ".staging-"
# Lock files live beside the assets, so a partition folder holds only versions, staging and LATEST.
LOCKS_DIR = ".locks"
# Parquet schema metadata key: {relative path: sha256} of every file the writer wrote.
FILES_KEY = b"mangacolor.files"
# A staging folder this old belongs to a process that died; the next writer of the partition removes it.
STALE_STAGING_S = float(os.environ.get("MANGACOLOR_STALE_STAGING_S", 24 * 3600))
LOCK_TIMEOUT_S = float(os.environ.get("MANGACOLOR_LOCK_TIMEOUT_S", 600))
# An S3 lock not renewed for this long is from a dead writer and may be broken; a live holder renews
# it every quarter of this, whatever it is doing (sealing a large version takes minutes).
LOCK_LEASE_S = float(os.environ.get("MANGACOLOR_LOCK_LEASE_S", 60))

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


def _canonical(value):
    """A JSON-able, type-stable form of a manifest value (numpy and pandas scalars, NaN as null)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else repr(value)
    if isinstance(value, bytes):
        return "sha256:" + sha256_bytes(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [_canonical(v) for v in (sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items)]
    if isinstance(value, (_dt.datetime, _dt.date, pd.Timestamp)):
        return value.isoformat()
    return str(value)


def content_version(rows: Iterable[dict], salt: str = "", files: dict[str, str] | None = None,
                    exclude: Iterable[str] = ()) -> str:
    """A data version from what was written: every column of every row and the sha256 of every file.

    Stable under row order and column order; a missing column and a null one are the same. Any value
    a reader may use (a split assignment, a score, a reason) changes it. `exclude` names columns that
    record the event, not the content (a fetch time), and must not make an unchanged output new.
    """
    skip = set(exclude)
    h = hashlib.sha256(salt.encode())
    lines = []
    for r in rows:
        canon = {str(k): _canonical(v) for k, v in r.items() if k not in skip}
        lines.append(json.dumps({k: v for k, v in canon.items() if v is not None}, sort_keys=True, separators=(",", ":")))
    for line in sorted(lines):
        h.update(line.encode())
        h.update(b"\n")
    for rel, sha in sorted((files or {}).items()):
        h.update(f"file:{rel}:{sha}\n".encode())
    return h.hexdigest()[:16]


def in_this_process(fs):
    """`fs`, or, in a forked child of the process that opened it (a `DataLoader` worker), an equal filesystem of the
    child's own: an asynchronous one (s3fs) refuses to run in a child ("not fork-safe")."""
    if getattr(fs, "_pid", None) in (None, os.getpid()):
        return fs
    return type(fs)(*fs.storage_args, **fs.storage_options)


_MEMORY_LOCKS: dict[str, threading.RLock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()


# The writers begun inside the innermost `commit_scope` of this thread/task.
_SCOPE: contextvars.ContextVar[list | None] = contextvars.ContextVar("mangacolor_writers", default=None)


@contextlib.contextmanager
def commit_scope() -> Iterator[list]:
    """Writers begun inside commit when the block ends without an error, and are aborted when it raises.

    What an asset runs in: it stages and seals its output, computes metadata, logs to MLflow and
    registers models inside the block; LATEST moves only after all of that succeeded. A writer that
    was begun but never sealed is aborted either way."""
    writers: list[VersionWriter] = []
    token = _SCOPE.set(writers)
    try:
        yield writers
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        _SCOPE.reset(token)
    try:
        for w in writers:
            if w.sealed is not None and not w.committed:
                w.commit()
    finally:
        for w in writers:
            if not w.committed:
                w.abort()


class LockTimeout(TimeoutError):
    """Another writer held a partition's lock for longer than the timeout."""


class LockLost(RuntimeError):
    """Our lease on a partition's lock was broken (we could not renew it in time): stop before LATEST."""


class _Held:
    """A lock that cannot be lost while its holder lives (fcntl, in-process)."""

    lost = False

    def check(self) -> None:
        pass


_HELD = _Held()


class S3Lease:
    """A partition lock on S3: an object created with `If-None-Match: *`, whose body names its owner
    (a random token) and when it was last renewed.

    The holder renews it every `lease_s / 4` with `If-Match: <its ETag>` (each body is new, so each
    renewal has a new ETag), from a thread that runs whatever the holder is doing. A waiter breaks the
    lock only when it expired, by the holder's stamp or because its ETag stayed the same for `lease_s`
    of the waiter's own clock, and only with `DeleteObject If-Match: <the ETag it judged>`: if
    another waiter broke it and made its own in between, that lock has another ETag and the delete
    fails. So two waiters that both see one stale lock can never both hold it.
    """

    def __init__(self, fs, path: str, uri: str, lease_s: float | None = None):
        self.fs, self.path, self.uri = fs, path, uri
        self.lease_s = LOCK_LEASE_S if lease_s is None else lease_s
        self.bucket, self.key, _ = fs.split_path(path)
        self.token = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        self._renewals += 1
        return json.dumps({"owner": self.token, "pid": os.getpid(), "host": os.uname().nodename, "renewed_at": time.time(),
                           "lease_s": self.lease_s, "n": self._renewals}).encode()

    def _get(self) -> tuple[bytes, str]:
        """The lock's body and ETag from one GET (two requests could pair one lock's body with another's ETag)."""
        async def get():
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            try:
                return await resp["Body"].read(), resp["ETag"]
            finally:
                resp["Body"].close()

        from fsspec.asyn import sync

        return sync(self.fs.loop, get)

    def acquire(self, deadline: float, timeout_s: float) -> None:
        seen: tuple[str, float] | None = None  # (ETag, when we first saw it): expiry by our own clock
        while True:
            try:
                self.etag = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=self._body(),
                                            IfNoneMatch="*")["ETag"]
                break
            except FileExistsError:
                pass
            try:
                body, etag = self._get()
            except FileNotFoundError:
                continue  # released or broken in between: try again at once
            held = _lock_body(body)
            if held.get("owner") == self.token:  # our PUT got through, its answer was lost and retried
                self.etag = etag
                break
            now = time.monotonic()
            if seen is None or seen[0] != etag:
                seen = (etag, now)
            lease = held.get("lease_s", self.lease_s)
            if time.time() - held.get("renewed_at", time.time()) > lease or now - seen[1] > lease:
                try:
                    self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=etag)
                    log.warning("broke the expired lock %s (owner %s, pid %s on %s)", self.uri, held.get("owner"),
                                held.get("pid"), held.get("host"))
                except (FileNotFoundError, OSError):
                    pass  # someone else broke it first, or it was renewed: its ETag changed
                continue
            if now > deadline:
                raise LockTimeout(f"{self.uri}: another writer held the lock for over {timeout_s:g} s "
                                  f"(pid {held.get('pid')} on {held.get('host')})")
            time.sleep(0.1)
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.etag = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=self._body(),
                                            IfMatch=self.etag)["ETag"]
                last = time.monotonic()
            except (FileNotFoundError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL or time.monotonic() - last > self.lease_s:
                    self.lost = True  # broken by a waiter (412/404), or unrenewed past the lease
                    log.error("lost the lock %s: %s", self.uri, exc)
                    return

    def check(self) -> None:
        if self.lost:
            raise LockLost(f"{self.uri}: the lock was taken from this writer (it could not renew its lease of "
                           f"{self.lease_s:g} s); nothing was committed, materialize again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost or self.etag is None:
            return
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except (FileNotFoundError, OSError) as exc:  # not ours any more: someone else's lock stays
            log.warning("lock %s was no longer ours at release: %s", self.uri, exc)


def _lock_body(body: bytes) -> dict:
    """A lock object's fields, those that are malformed left out (the lock then expires by ETag age)."""
    try:
        held = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(held, dict):
        return {}
    out = {k: held[k] for k in ("owner", "pid", "host") if isinstance(held.get(k), (str, int))}
    for k in ("renewed_at", "lease_s", "at"):
        if isinstance(held.get(k), (int, float)) and math.isfinite(held[k]) and held[k] > 0:
            out[k] = float(held[k])
    if "at" in out:  # a lock of an older mangacolor: stamped once, when taken
        out.setdefault("renewed_at", out.pop("at"))
    return out


class Store:
    """A folder of artifacts on any fsspec filesystem."""

    def __init__(self, root: str | Path, storage_options: dict | None = None):
        self.root_uri = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {})
        fs, self.root = self._open()
        self.root = self.root.rstrip("/")
        self.is_local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _open(self):
        """The filesystem of this process. Listings are never cached: LATEST, a new partition or a lock written by
        another process (a pod, the sensor's next tick in a long-lived code server) must be seen at once."""
        protocol = self.root_uri.split("://", 1)[0] if "://" in self.root_uri else "file"
        options = self.storage_options if protocol in ("file", "local", "memory") else \
            {"use_listings_cache": False, **self.storage_options}
        self._fs, root = fsspec.core.url_to_fs(self.root_uri, **options)
        self._pid = os.getpid()
        return self._fs, root

    @property
    def fs(self):
        """This process's filesystem: a forked child (a `DataLoader` worker) opens its own, since an
        asynchronous one (s3fs) refuses to run in a child of the process that used it."""
        if self._pid != os.getpid():
            self._open()
        return self._fs

    def __getstate__(self) -> dict:
        # A spawned process (or a pickled closure) opens its own filesystem too.
        return {k: v for k, v in self.__dict__.items() if k != "_fs"} | {"_pid": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

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
    def write_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        """Atomic write of an absolute store path (from `path()`); `durable`: fsynced with its folder."""
        if self.is_local:
            write_atomic(path, data, durable)
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

    def write_text(self, path: str, text: str, durable: bool = False) -> None:
        self.write_bytes(path, text.encode(), durable)

    def sync_tree(self, path: str) -> None:
        """Local disk: fsync every file and folder under `path` (object stores are durable per PUT)."""
        if not self.is_local or not os.path.isdir(path):
            return
        for folder, _, files in os.walk(path):
            for name in files:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(folder)

    # --- the per-partition lock ----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, asset: str, partition: str = UNPARTITIONED, timeout_s: float | None = None) -> Iterator["S3Lease | _Held"]:
        """Exclusive access to one partition's versions and LATEST, across processes.

        Local disk: `fcntl.flock` on `{root}/.locks/{asset}/{partition}.lock` (released by the kernel when a holder
        dies). `memory://`: a lock of this process (the filesystem lives in it). S3: a lease object
        (`S3Lease`: an owner token, renewed while held, broken only by a conditional delete once it
        expired). Yields the hold; `.lost` is True when it was taken from a holder that stopped renewing.
        """
        path = self.path(LOCKS_DIR, asset, safe_part(partition) + ".lock")
        timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        if self.is_local:
            import fcntl

            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise LockTimeout(f"{path}: another writer held the lock for over {timeout_s:g} s") from None
                        time.sleep(0.02)
                yield _HELD
            finally:
                os.close(fd)  # closing releases the flock
            return
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if protocol == "memory":
            with _MEMORY_LOCKS_GUARD:
                lk = _MEMORY_LOCKS.setdefault(path, threading.RLock())
            if not lk.acquire(timeout=timeout_s):
                raise LockTimeout(f"memory://{path}: another writer held the lock for over {timeout_s:g} s")
            try:
                yield _HELD
            finally:
                lk.release()
            return
        if protocol not in ("s3", "s3a"):
            raise NotImplementedError(f"{self.root_uri}: a lock on {protocol}:// needs conditional requests; the store "
                                      "knows them on local disk and S3 (s3://) only")
        lease = S3Lease(self.fs, path, f"{self.uri(self.relative(path))}")
        lease.acquire(deadline, timeout_s)
        try:
            yield lease
        finally:
            lease.release()

    def sweep_staging(self, asset: str, partition: str = UNPARTITIONED, max_age_s: float | None = None) -> list[str]:
        """Remove staging folders and temporary files (`.tmp-…-LATEST`) older than `max_age_s`: their
        writer died. Returns what was removed."""
        max_age_s = STALE_STAGING_S if max_age_s is None else max_age_s
        base = self.path(asset, safe_part(partition))
        if not self.exists(base):
            return []
        removed = []
        now = time.time()
        for info in self.fs.ls(base, detail=True):
            entry = str(info["name"])
            name = posixpath.basename(entry.rstrip("/"))
            if name.startswith(STAGING_PREFIX):
                started = _staging_time(name)
            elif name.startswith(TMP_PREFIX) and info.get("type") != "directory":
                started = _modified(info)  # an atomic write's temporary file (`write_bytes`)
            else:
                continue
            if started is not None and now - started > max_age_s:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(self._strip(entry), recursive=True)
                    removed.append(name)
        if removed:
            log.info("removed %d stale staging folder(s) of %s/%s: %s", len(removed), asset, partition, removed)
        return removed

    # --- manifests and versions ---------------------------------------------------------------
    def write_manifest(self, version_dir: str, frame: pd.DataFrame, files: dict[str, str] | None = None,
                       durable: bool = False) -> str:
        """The manifest; `files` ({relative path: sha256}) goes into its schema metadata for `verify`."""
        buf = io.BytesIO()
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        if files is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), FILES_KEY: json.dumps(files, sort_keys=True).encode()})
        pq.write_table(table, buf)
        target = posixpath.join(version_dir, MANIFEST)
        self.write_bytes(target, buf.getvalue(), durable)
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

    def assets(self) -> list[str]:
        if not self.exists(self.root):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and self.fs.isdir(posixpath.join(self.root, n)))

    def versions(self, asset: str, partition: str) -> list[str]:
        """Every sealed version folder of a partition (those with a manifest), committed or not."""
        base = self.path(asset, safe_part(partition))
        out = []
        for p in self.fs.ls(base, detail=False):
            name = posixpath.basename(p.rstrip("/"))
            if not name.startswith(".") and name != LATEST and self.exists(posixpath.join(self._strip(p), MANIFEST)):
                out.append(name)
        return sorted(out)

    def begin(self, asset: str, partition: str = UNPARTITIONED, unversioned: Iterable[str] = ()) -> "VersionWriter":
        """A writer for one new version; `unversioned`: columns that record the event, not the content."""
        try:
            self.sweep_staging(asset, partition)
        except OSError as exc:  # a sweep must never stop a materialization
            log.warning("could not sweep stale staging of %s/%s: %s", asset, partition, exc)
        return VersionWriter(self, asset, safe_part(partition), tuple(unversioned))


def _modified(info: dict) -> float | None:
    """An entry's modification time (epoch seconds) from an fsspec listing: `mtime` locally,
    `LastModified` on object stores; None when the listing has neither."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def _staging_time(name: str) -> float | None:
    """Start time (epoch seconds) encoded in a staging folder's name, or None for other names."""
    m = re.match(rf"^{re.escape(STAGING_PREFIX)}(\d+)-", name)
    return int(m.group(1)) / 1e3 if m else None


@dataclass
class VersionWriter:
    """Collects one materialization's files in a staging folder, then seals and commits them as a version.

    Use it as a context manager so a failure removes the staging folder:

        with store.begin("asset", partition) as writer:
            writer.write(...); writer.add(row)
            version, vdir, frame = writer.seal()     # complete and immutable, not read by anyone yet
            ...metadata, MLflow, registry...
            writer.commit()                          # LATEST -> version: the last step
    """

    store: Store
    asset: str
    partition: str
    unversioned: tuple[str, ...] = ()
    staging: str = field(init=False)
    rows: list[dict] = field(default_factory=list, init=False)
    files: dict[str, str] = field(default_factory=dict, init=False)
    sealed: tuple[str, str, pd.DataFrame] | None = field(default=None, init=False)
    committed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.staging = self.store.path(self.asset, self.partition, f"{STAGING_PREFIX}{int(time.time() * 1e3)}-{uuid.uuid4().hex[:12]}")
        scope = _SCOPE.get()
        if scope is not None:
            scope.append(self)

    def __enter__(self) -> "VersionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()

    def write(self, relpath: str, data: bytes) -> str:
        """Write a file into the staging folder; returns the path relative to the version folder."""
        parts = [safe_part(p) for p in relpath.split("/") if p]
        self.store.write_bytes(posixpath.join(self.staging, *parts), data)
        rel = "/".join(parts)
        self.files[rel] = sha256_bytes(data)
        return rel

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def seal(self, extra_frame_columns: list[str] | None = None, salt: str = "") -> tuple[str, str, pd.DataFrame]:
        """Derive the version, move staging to `{data_version}/` and write its manifest last; LATEST stays.

        Returns (data_version, version_dir, manifest frame). Under the partition lock: a version that is
        already complete is kept (same content, a re-run or a concurrent writer) and our copy dropped;
        a version folder without a manifest is the remains of a crash and is replaced."""
        if self.sealed is not None:
            return self.sealed
        store = self.store
        version = content_version(self.rows, salt=salt, files=self.files, exclude=self.unversioned)
        final = store.path(self.asset, self.partition, version)
        frame = pd.DataFrame(self.rows)
        for col in MANIFEST_COLUMNS + list(extra_frame_columns or []):
            if col not in frame.columns:
                frame[col] = pd.Series([None] * len(frame), dtype="object")
        ordered = MANIFEST_COLUMNS + [c for c in frame.columns if c not in MANIFEST_COLUMNS]
        frame = frame[ordered]
        with store.lock(self.asset, self.partition) as held:
            if store.exists(posixpath.join(final, MANIFEST)):
                self.abort()
            else:
                if store.exists(final):
                    store.fs.rm(final, recursive=True)
                if store.exists(self.staging):
                    store.sync_tree(self.staging)
                    held.check()
                    store.move_tree(self.staging, final)
                held.check()
                store.write_manifest(final, frame, files=self.files, durable=True)
                if store.is_local:
                    fsync_dir(os.path.dirname(final))
        self.sealed = (version, final, frame)
        return self.sealed

    def commit(self, extra_frame_columns: list[str] | None = None, salt: str = "") -> tuple[str, str, pd.DataFrame]:
        """Point LATEST at the version (sealing it first if `seal` was not called): the commit point.

        Returns (data_version, version_dir, manifest frame)."""
        version, final, frame = self.seal(extra_frame_columns, salt)
        store = self.store
        with store.lock(self.asset, self.partition) as held:
            if not store.exists(posixpath.join(final, MANIFEST)):
                raise FileNotFoundError(f"{store.uri(store.relative(final))} lost its manifest before commit; materialize again")
            held.check()
            store.write_text(store.path(self.asset, self.partition, LATEST), version, durable=True)
        self.committed = True
        return version, final, frame

    def abort(self) -> None:
        """Remove the staging folder (a sealed version stays: complete, and named by no LATEST)."""
        if self.store.exists(self.staging):
            self.store.fs.rm(self.staging, recursive=True)


# --- checking what is stored ------------------------------------------------------------------------


@dataclass
class Problem:
    asset: str
    partition: str
    version: str
    path: str
    what: str

    def __str__(self) -> str:
        # Names come from a listing of whatever the folder holds: a newline in one must not split the report.
        asset, partition, version, path = (x if x.isprintable() else repr(x) for x in (self.asset, self.partition, self.version, self.path))
        return f"{asset}/{partition}/{version}: {path}: {' '.join(self.what.split())}"


def verify(store: Store, assets: Iterable[str] | None = None) -> tuple[int, list[Problem]]:
    """Check every sealed version's files (exist, sha256 as written) and every LATEST pointer.

    Returns (manifests checked, problems). Files are those the writer recorded in the manifest's
    metadata, plus every row's `path` (manifests written before that metadata existed: existence only).
    What it reads stays in the store, whatever the store holds: a manifest path that leads out of its
    version folder, or through a symlink, is reported as tampered and not read; files are hashed in
    pieces; a folder, a LATEST or a manifest that is not what the store writes is a problem, not a crash."""
    problems: list[Problem] = []
    checked = 0
    if assets:
        names = list(assets)
    else:
        names = [n for n, kind in _listing(store, store.root) if not n.startswith(".") and kind != "file"]
    links = {n for n, kind in _listing(store, store.root) if kind == "link"}
    for asset in names:
        if asset in links:
            problems.append(Problem(asset, "-", "-", asset, "tampered: a symlink where an asset folder belongs; not followed"))
            continue
        if safe_part(asset) != asset:
            problems.append(Problem(asset, "-", "-", asset, "stray folder: not an asset of the store (its name is not one the store writes)"))
            continue
        base = store.path(asset)
        if not store.exists(base):
            problems.append(Problem(asset, "-", "-", store.uri(asset), "no such asset in the store"))
            continue
        for partition, kind in _listing(store, base):
            if kind == "link":
                problems.append(Problem(asset, partition, "-", partition, "tampered: a symlink where a partition folder belongs; not followed"))
            if partition.startswith(".") or kind != "dir":
                continue
            if safe_part(partition) != partition:
                problems.append(Problem(asset, partition, "-", partition, "stray folder: not a partition (its name is not one the store writes)"))
                continue
            n, found = _verify_partition(store, asset, partition)
            checked += n
            problems += found
    return checked, problems


def _listing(store: Store, path: str) -> list[tuple[str, str]]:
    """(name, "dir" | "file" | "link") of every entry of `path` (local symlinks are "link": not followed)."""
    if not store.exists(path):
        return []
    out = []
    for info in store.fs.ls(path, detail=True):
        name = posixpath.basename(str(info["name"]).rstrip("/"))
        if store.is_local and os.path.islink(os.path.join(path, name)):
            out.append((name, "link"))
        else:
            out.append((name, "dir" if info.get("type") == "directory" else "file"))
    return out


_VERSION = re.compile(r"^[0-9a-f]{16}$")


def _verify_partition(store: Store, asset: str, partition: str) -> tuple[int, list[Problem]]:
    base = store.path(asset, partition)
    problems: list[Problem] = []
    versions = []
    for name, kind in _listing(store, base):
        if name.startswith(".") or name == LATEST:
            continue
        if kind == "link":
            problems.append(Problem(asset, partition, name, name, "tampered: a symlink where a version folder belongs; not followed"))
        if kind != "dir":
            continue  # stray files are no version; the store never reads them
        if safe_part(name) != name:
            problems.append(Problem(asset, partition, name, name, "stray folder: not a version (its name is not one the store writes)"))
        elif store.exists(posixpath.join(base, name, MANIFEST)):
            versions.append(name)
    latest, why = _read_latest(store, posixpath.join(base, LATEST))
    if why:
        problems.append(Problem(asset, partition, "-", LATEST, why))
    elif latest is not None and latest not in versions:
        problems.append(Problem(asset, partition, latest[:40], LATEST, "names a version with no manifest"))
    for version in sorted(versions):
        problems += _verify_version(store, asset, partition, version)
    return len(versions), problems


def _read_latest(store: Store, pointer: str) -> tuple[str | None, str | None]:
    """(version named by LATEST or None when there is none, what is wrong with it or None)."""
    if not store.exists(pointer):
        return None, None
    if store.fs.isdir(pointer):
        return None, "malformed LATEST: a folder; the store writes a file naming a version"
    try:
        with _open_stored(store, pointer) as f:
            raw = f.read(257)
    except OSError as exc:
        return None, f"malformed LATEST: {exc.strerror or exc}; the store writes a file naming a version"
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "malformed LATEST: not UTF-8 text; the store writes a version name"
    if len(raw) > 256 or safe_part(text) != text or not text:
        return None, f"malformed LATEST: {text[:40]!r} is no version name"
    return text, None


def _tampered(store: Store, vdir: str, rel: str) -> str | None:
    """Why the manifest path `rel` must not be read (it leaves the version folder), or None."""
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        return f"tampered: path {rel[:80]!r} leads outside the version folder; not read"
    if store.is_local:
        real_vdir = os.path.realpath(vdir)
        if os.path.realpath(os.path.join(vdir, *parts)) != os.path.join(real_vdir, *parts):
            return f"tampered: {rel[:80]!r} goes through a symlink; not followed"
    return None


def _open_stored(store: Store, path: str):
    """A stored file opened for `verify`: on local disk a regular file only, its last component not
    followed if a symlink (`_tampered` checks the folders above), a FIFO or device refused unread."""
    if not store.is_local:
        return store.fs.open(path, "rb")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _file_sha256(store: Store, path: str) -> str:
    """sha256 of a stored file, read in pieces (`_open_stored`). Raises OSError."""
    h = hashlib.sha256()
    with _open_stored(store, path) as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manifest_files(table: pa.Table) -> dict[str, str] | str:
    """The manifest's {relative path: sha256}, or what is malformed about it."""
    meta = table.schema.metadata or {}
    if FILES_KEY not in meta:
        return {}
    try:
        files = json.loads(meta[FILES_KEY])
    except (ValueError, RecursionError) as exc:
        return f"malformed manifest: its file list is not JSON ({' '.join(str(exc).split())[:120]})"
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return f"malformed manifest: its file list is {type(files).__name__}, not {{path: sha256}}"
    return files


def _verify_version(store: Store, asset: str, partition: str, version: str) -> list[Problem]:
    vdir = store.path(asset, partition, version)
    manifest = posixpath.join(vdir, MANIFEST)
    if store.is_local and (why := _tampered(store, vdir, MANIFEST)):
        return [Problem(asset, partition, version, MANIFEST, why)]
    try:
        with _open_stored(store, manifest) as f:
            table = pq.read_table(f)
        files = _manifest_files(table)
        if isinstance(files, str):
            return [Problem(asset, partition, version, MANIFEST, files)]
        column = table.column("path").to_pylist() if "path" in table.column_names else []
    except Exception as exc:  # noqa: BLE001 - any unreadable manifest is a finding, not a crash
        return [Problem(asset, partition, version, MANIFEST, f"unreadable manifest: {' '.join(str(exc).split())[:200]}")]
    rows_paths = [p for p in column if isinstance(p, str) and p]
    out = []
    for rel in sorted(set(files) | set(rows_paths)):
        if why := _tampered(store, vdir, rel):
            out.append(Problem(asset, partition, version, rel[:80], why))
            continue
        try:
            sha = _file_sha256(store, posixpath.join(vdir, *rel.split("/")))
        except FileNotFoundError:
            out.append(Problem(asset, partition, version, rel, "missing"))
            continue
        except OSError as exc:
            why = {errno.ELOOP: "tampered: a symlink; not followed",
                   errno.EINVAL: "tampered: not a regular file (a folder, FIFO or device); not read"}.get(
                exc.errno, f"unreadable ({exc.strerror or exc})")
            out.append(Problem(asset, partition, version, rel, why))
            continue
        if rel in files and sha != files[rel]:
            out.append(Problem(asset, partition, version, rel, f"sha256 {sha[:12]}… != {files[rel][:12]}… in the manifest"))
    return out


def ok_rows(store: Store, asset: str, partitions: list[str] | None = None, version_dirs: dict[str, str] | None = None) -> pd.DataFrame:
    """The `status == ok` rows of the latest version of each partition, with an absolute `uri` column."""
    partitions = store.partitions(asset) if partitions is None else partitions
    frames = []
    for p in partitions:
        vdir = (version_dirs or {}).get(p) or store.latest_dir(asset, p)
        f = store.read_manifest(vdir)
        f = f[f["status"] == "ok"].copy()
        f["uri"] = [f"{vdir}/{rel}" for rel in f["path"]]
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["id", "title", "page", "uri"])
    return pd.concat(frames, ignore_index=True)
