"""Where pages come from: configured sources, listed by title, read as untrusted bytes.

A source is data in a preset (`SourceConfig`): a folder or any fsspec URL prefix with one folder
per title (CBZ/ZIP chapter archives inside are expanded), a Danbooru-style metadata table filtered
by tags, the official Manga109 layout, or the store folder of the `scraped_pages` asset (`scraped`:
the latest crawl of each title, so a newly committed crawl changes that title's fingerprint).
Every kind yields `SourceItem`s: a title, a page name, the URI it came from and a loader; an item
that cannot even be loaded carries the reason instead. On local disk a symlink (to a file or a
folder) that leads outside the source's folder is never followed: it is listed with its reason and
no loader, and every loader checks again just before it reads, so no byte from outside a source
reaches the store.
The black-and-white and colour ingests, the sensor that discovers titles and the observation that
fingerprints titles all go through `list_titles` / `iter_items` / `title_fingerprint`; `scan_sources`
and `scan_changes` are the one tick the sensor and the demo runner share. Fingerprints come from
object metadata (size and mtime, or ETag), never from page bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import fsspec
import pandas as pd
from pydantic import BaseModel, Field

from mangacolor.data.archives import (ARCHIVE_EXTENSIONS, IMAGE_EXTENSIONS, MemberError, archive_members, member_problem,
                                      natural_key, open_archive, read_member)
from mangacolor.io.limits import MAX_ARCHIVE_BYTES, MAX_FILE_BYTES, NotARegularFile, open_regular, read_regular
from mangacolor.io.store import in_this_process

PAPER_DANBOORU_TAGS = ["colored", "colorized", "comic"]


class SourceConfig(BaseModel):
    """One place pages come from. `role` says which ingest reads it."""

    name: str
    role: Literal["color", "bw"]
    kind: Literal["folder", "danbooru", "manga109", "scraped"] = "folder"
    uri: str = Field(description="local folder or fsspec URL prefix (s3://bucket/prefix)")
    storage_options: dict = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=lambda: list(PAPER_DANBOORU_TAGS), description="danbooru: keep images with any of these tags")
    title: str = Field("danbooru", description="danbooru: the partition its images form")
    titles: list[str] | None = Field(None, description="only these titles (default: all found)")


@dataclass
class SourceItem:
    title: str
    page: str
    source_uri: str
    load: Callable[[], bytes] | None
    problem: str | None = None


def preset_sources(preset: dict) -> list[SourceConfig]:
    """The preset's `sources:` section."""
    return [SourceConfig.model_validate(s) for s in preset.get("sources", [])]


def manga109_source(preset: dict) -> SourceConfig | None:
    """The preset's `manga109:` section as a black-and-white source of the Manga109 layout (None: not configured)."""
    m = preset.get("manga109")
    if not m:
        return None
    return SourceConfig(name="manga109", role="bw", kind="manga109", uri=m["uri"], storage_options=m.get("storage_options", {}))


def _fs(cfg: SourceConfig):
    """The source's filesystem, its listings fresh: a long-lived code server's sensor must see a title added since its
    last tick (s3fs would otherwise answer from the listing it cached then)."""
    fs, root = fsspec.core.url_to_fs(cfg.uri, **cfg.storage_options)
    fs.invalidate_cache()
    return fs, root.rstrip("/")


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def _stem(name: str) -> str:
    base = posixpath.basename(name)
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def _escapes(fs, root: str, path: str) -> str | None:
    """Why `path` must not be read (it leads, through a symlink, outside `root`), or None."""
    if not _is_local(fs):
        return None  # object stores have no symlinks
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return f"symlink pointing outside the source ({posixpath.basename(path)} -> {real})"


def _open(fs, root: str, path: str, limit: int = MAX_FILE_BYTES, what: str = "page file"):
    """`path` opened for reading, re-checking just before that it still stays inside `root`; on local
    disk only a regular file of at most `limit` bytes (a FIFO would block the reader, a device feed it
    forever). Object stores: reads are capped where they are made."""
    why = _escapes(fs, root, path)
    if why:
        raise PermissionError(why)
    if _is_local(fs):
        return open_regular(path, limit, what)
    return in_this_process(fs).open(path, "rb")


def _loader(fs, root: str, path: str) -> Callable[[], bytes]:
    """Read `path` (see `_open`): at most `MAX_FILE_BYTES`, else OSError."""

    def load() -> bytes:
        if _is_local(fs):
            why = _escapes(fs, root, path)
            if why:
                raise PermissionError(why)
            return read_regular(path, MAX_FILE_BYTES, "page file")
        # In this process's own filesystem: loaders run in forked workers too (s3fs refuses its parent's).
        with in_this_process(fs).open(path, "rb") as f:  # an object store's file reads at most what the object holds
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise OSError(f"{path}: more than the {MAX_FILE_BYTES:,}-byte limit for a page")
        return data

    return load


def _member_loader(fs, root: str, path: str, name: str) -> Callable[[], bytes]:
    """Read one member of the archive at `path`, when asked: the archive is opened again for it, so a
    chapter never has more than one member in memory."""

    def load() -> bytes:
        with _open(fs, root, path, MAX_ARCHIVE_BYTES, "chapter archive") as f:
            zf = open_archive(f)
            with zf:
                try:
                    return read_member(zf, zf.getinfo(name))
                except (MemberError, KeyError) as exc:
                    raise OSError(str(exc)) from None

    return load


def _full_uri(fs, path: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def list_titles(cfg: SourceConfig) -> list[str]:
    if cfg.kind == "danbooru":
        titles = [cfg.title]
    elif cfg.kind == "scraped":
        titles = _scraped_titles(cfg)
    elif cfg.kind == "manga109":
        fs, root = _fs(cfg)
        books = posixpath.join(root, "books.txt")
        if not fs.exists(books):
            raise FileNotFoundError(f"{cfg.uri}: no books.txt; expected the Manga109 layout (books.txt, images/<title>/<NNN>.jpg)")
        titles = [t.strip() for t in fs.cat_file(books).decode("utf-8-sig").splitlines() if t.strip()]
    else:
        fs, root = _fs(cfg)
        if not fs.exists(root):
            raise FileNotFoundError(f"source {cfg.name!r}: {cfg.uri} does not exist")
        titles = []
        for entry in fs.ls(root, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if name.startswith("."):
                continue
            if entry["type"] == "directory" or (entry.get("islink") and fs.isdir(entry["name"])):
                titles.append(name)  # a linked folder is listed, so its ingest can say why it is refused
            elif _ext(name) in ARCHIVE_EXTENSIONS:
                titles.append(_stem(name))
    if cfg.titles is not None:
        titles = [t for t in titles if t in cfg.titles]
    return sorted(set(titles), key=natural_key)


def _archive_items(fs, root: str, path: str, title: str, prefix: str) -> Iterator[SourceItem]:
    uri = _full_uri(fs, path)
    if why := _escapes(fs, root, path):
        yield SourceItem(title, prefix or _stem(path), uri, None, problem=why)
        return
    try:
        with _open(fs, root, path, MAX_ARCHIVE_BYTES, "chapter archive") as f, open_archive(f) as zf:
            members = [(info.filename, member_problem(info)) for info in archive_members(zf)]
    except NotARegularFile as exc:
        yield SourceItem(title, prefix or _stem(path), uri, None, problem=exc.reason)
        return
    except (ValueError, OSError) as exc:
        # The archive's bytes go to quarantine with the reason (the loader still refuses to leave the source).
        yield SourceItem(title, prefix or _stem(path), uri, _loader(fs, root, path), problem=str(exc))
        return
    for name, problem in members:
        # A member name is untrusted text: it names the page, it never becomes a path.
        stem = posixpath.splitext(name)[0].lstrip("/\\")
        page = posixpath.join(prefix, stem) if prefix else stem
        yield SourceItem(title, page, f"{uri}#{name}", None if problem else _member_loader(fs, root, path, name), problem=problem)


def _folder_items(cfg: SourceConfig, title: str) -> Iterator[SourceItem]:
    fs, root = _fs(cfg)
    base = posixpath.join(root, title)
    if not fs.isdir(base):
        for ext in sorted(ARCHIVE_EXTENSIONS):
            if fs.exists(base + ext):
                yield from _archive_items(fs, root, base + ext, title, "")
                return
        raise FileNotFoundError(f"source {cfg.name!r}: no title {title!r} under {cfg.uri}")
    if why := _escapes(fs, root, base):
        # The title folder itself is a symlink out of the source: nothing of it is read.
        yield SourceItem(title, title, _full_uri(fs, base), None, problem=why)
        return
    files = sorted(fs.find(base), key=natural_key)
    for path in files:
        rel = posixpath.relpath(path, base)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        ext = _ext(rel)
        if why := _escapes(fs, root, path):
            yield SourceItem(title, posixpath.splitext(rel)[0] if ext else rel, _full_uri(fs, path), None, problem=why)
        elif ext in ARCHIVE_EXTENSIONS:
            yield from _archive_items(fs, root, path, title, posixpath.splitext(rel)[0])
        elif ext in IMAGE_EXTENSIONS:
            yield SourceItem(title, posixpath.splitext(rel)[0], _full_uri(fs, path), _loader(fs, root, path))
        else:
            yield SourceItem(title, rel, _full_uri(fs, path), _loader(fs, root, path),
                             problem=f"not an image file ({ext or 'no extension'})")


def read_table(fs, path: str) -> pd.DataFrame:
    data = fs.cat_file(path)
    return pd.read_parquet(io.BytesIO(data)) if path.endswith(".parquet") else pd.read_csv(io.BytesIO(data))


def danbooru_selection(table: pd.DataFrame, tags: list[str]) -> pd.DataFrame:
    """Rows whose space-separated `tags` contain any of `tags` (the paper: colored, colorized, comic)."""
    wanted = set(tags)
    keep = table["tags"].fillna("").map(lambda t: bool(wanted & set(str(t).split())))
    return table[keep].sort_values("id", key=lambda s: s.astype(str).map(natural_key))


def _danbooru_items(cfg: SourceConfig) -> Iterator[SourceItem]:
    fs, root = _fs(cfg)
    for name in ("metadata.parquet", "metadata.csv"):
        table_path = posixpath.join(root, name)
        if fs.exists(table_path):
            break
    else:
        raise FileNotFoundError(f"{cfg.uri}: no metadata.parquet or metadata.csv (columns id, file, tags)")
    table = read_table(fs, table_path)
    missing = {"id", "file", "tags"} - set(table.columns)
    if missing:
        raise ValueError(f"{table_path}: metadata table lacks columns {sorted(missing)}")
    for row in danbooru_selection(table, cfg.tags).itertuples():
        rel = str(row.file)
        if rel.startswith("/") or ".." in rel.split("/"):
            yield SourceItem(cfg.title, str(row.id), rel, None, problem=f"unsafe file path {rel!r} in metadata table")
            continue
        path = posixpath.join(root, rel)
        why = _escapes(fs, root, path)
        yield SourceItem(cfg.title, str(row.id), _full_uri(fs, path), None if why else _loader(fs, root, path), problem=why)


def _manga109_items(cfg: SourceConfig, title: str) -> Iterator[SourceItem]:
    fs, root = _fs(cfg)
    base = posixpath.join(root, "images", title)
    if not fs.isdir(base):
        raise FileNotFoundError(f"{cfg.uri}: books.txt lists {title!r} but images/{title}/ is missing")
    for path in sorted(fs.find(base), key=natural_key):
        rel = posixpath.relpath(path, base)
        if _ext(rel) in IMAGE_EXTENSIONS:
            why = _escapes(fs, root, path)
            yield SourceItem(title, posixpath.splitext(rel)[0], _full_uri(fs, path), None if why else _loader(fs, root, path),
                             problem=why)


def _scraped_latest(fs, root: str, title: str) -> str | None:
    """The latest committed version folder of one title of `scraped_pages`, or None."""
    pointer = posixpath.join(root, title, "LATEST")
    if not fs.exists(pointer):
        return None
    version = fs.cat_file(pointer).decode().strip()
    vdir = posixpath.join(root, title, version)
    return vdir if version and fs.exists(posixpath.join(vdir, "manifest.parquet")) else None


def _scraped_manifest(fs, vdir: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(fs.cat_file(posixpath.join(vdir, "manifest.parquet"))), columns=columns)


def _scraped_titles(cfg: SourceConfig) -> list[str]:
    # Nothing crawled yet is not an error: the asset writes this folder on its first run.
    fs, root = _fs(cfg)
    if not fs.exists(root):
        return []
    titles = []
    for entry in fs.ls(root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        vdir = None if name.startswith(".") else _scraped_latest(fs, root, name)
        # One store folder holds every web source's crawls: a colour source reads only colour crawls.
        if vdir is not None and cfg.role in set(_scraped_manifest(fs, vdir, ["role"])["role"]):
            titles.append(name)
    return titles


def _scraped_items(cfg: SourceConfig, title: str) -> Iterator[SourceItem]:
    fs, root = _fs(cfg)
    vdir = _scraped_latest(fs, root, title)
    if vdir is None:
        raise FileNotFoundError(f"source {cfg.name!r}: no committed crawl of {title!r} under {cfg.uri}; materialize scraped_pages[{title}]")
    frame = _scraped_manifest(fs, vdir)
    for row in frame[frame["status"] == "ok"].itertuples():
        path = posixpath.join(vdir, row.path)
        yield SourceItem(title, str(row.page), str(row.source_uri), lambda p=path: in_this_process(fs).cat_file(p))


def iter_items(cfg: SourceConfig, title: str) -> Iterator[SourceItem]:
    """The pages of one title of one source, in reading order."""
    if cfg.kind == "danbooru":
        yield from _danbooru_items(cfg)
    elif cfg.kind == "scraped":
        yield from _scraped_items(cfg, title)
    elif cfg.kind == "manga109":
        yield from _manga109_items(cfg, title)
    else:
        yield from _folder_items(cfg, title)


def _stamp(info: dict) -> str:
    """What says an object changed, from its metadata only: ETag (object stores), else mtime, plus size."""
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return f"{info.get('size')}|{key}={info[key]}"
    return f"{info.get('size')}|"


def _stamps(fs, base: str) -> list[str]:
    """`relative path|size|stamp` of every file under `base` (one listing, no file opened)."""
    if not fs.exists(base):
        return []
    if not fs.isdir(base):
        return [f"{posixpath.basename(base)}|{_stamp(fs.info(base))}"]
    found = fs.find(base, detail=True)
    return sorted(f"{posixpath.relpath(path, base)}|{_stamp(info)}" for path, info in found.items()
                  if info.get("type") != "directory")


def title_fingerprint(cfg: SourceConfig, title: str) -> str:
    """A fingerprint of everything a title's ingest would read, from object metadata (size, mtime or
    ETag), never from page bytes: one listing per title, so a tick over 100,000 pages on S3 reads
    no page. It changes when a file is added, removed, resized or rewritten (a new mtime/ETag).
    Scraped titles: the crawl's committed version (the `LATEST` pointer, a few bytes)."""
    h = hashlib.sha256(f"{cfg.kind}\0".encode())
    fs, root = _fs(cfg)
    if cfg.kind == "scraped":
        h.update(str(_scraped_latest(fs, root, title)).encode())
    elif cfg.kind == "danbooru":
        # The selection depends on the metadata table, the pages on the files it names: both by metadata.
        lines = _stamps(fs, root)
    elif cfg.kind == "manga109":
        lines = _stamps(fs, posixpath.join(root, "images", title))
    else:
        base = posixpath.join(root, title)
        lines = _stamps(fs, base) or [s for ext in sorted(ARCHIVE_EXTENSIONS) for s in _stamps(fs, base + ext)]
        if not lines:
            raise FileNotFoundError(f"source {cfg.name!r}: no title {title!r} under {cfg.uri}")
    if cfg.kind != "scraped":
        for line in lines:
            if not any(part.startswith(".") for part in line.split("|", 1)[0].split("/")):
                h.update(line.encode() + b"\n")
    return h.hexdigest()[:16]


@dataclass
class SourceScan:
    """One look at every source of a preset: per role, per title, the combined fingerprint."""

    fingerprints: dict[str, dict[str, str]]  # role -> title -> fingerprint
    failed: dict[str, list[str]]  # role -> "source: error" of the sources that could not be listed


def scan_sources(sources: list[SourceConfig], roles: tuple[str, ...] = ("color", "bw")) -> SourceScan:
    """Fingerprint every title of every source (metadata only). A source that cannot be listed is
    reported in `failed`, and its role's titles must then not be taken as gone."""
    prints: dict[str, dict[str, str]] = {r: {} for r in roles}
    parts: dict[tuple[str, str], list[str]] = {}
    failed: dict[str, list[str]] = {r: [] for r in roles}
    for cfg in sources:
        if cfg.role not in roles:
            continue
        try:
            for title in list_titles(cfg):
                parts.setdefault((cfg.role, title), []).append(f"{cfg.name}:{title_fingerprint(cfg, title)}")
        except (OSError, ValueError) as exc:
            failed[cfg.role].append(f"{cfg.name}: {exc}")
    for (role, title), items in parts.items():
        prints[role][title] = hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
    return SourceScan(prints, failed)


@dataclass
class ScanChanges:
    """What changed since the previous scan (the sensor's cursor), per role."""

    new: dict[str, list[str]]  # titles never seen as partitions
    changed: dict[str, dict[str, str]]  # title -> fingerprint, for titles new or different since the cursor
    vanished: dict[str, list[str]]  # partitions no source holds any more (only for roles whose sources all listed)


def scan_changes(scan: SourceScan, previous: dict[str, dict[str, str]], partitions: dict[str, set[str]]) -> ScanChanges:
    new, changed, vanished = {}, {}, {}
    for role, prints in scan.fingerprints.items():
        before = previous.get(role, {})
        known = partitions.get(role, set())
        new[role] = sorted(set(prints) - known, key=natural_key)
        changed[role] = {t: fp for t, fp in sorted(prints.items()) if before.get(t) != fp or t not in known}
        if scan.failed.get(role):
            # A source of this role could not be listed: its titles are unknown, not gone or changed.
            new[role], changed[role], vanished[role] = [], {}, []
        else:
            vanished[role] = sorted(known - set(prints), key=natural_key)
    return ScanChanges(new, changed, vanished)


def titles_by_role(sources: list[SourceConfig], role: str) -> dict[str, list[SourceConfig]]:
    """title -> the sources of `role` that hold it (a title may be split over several sources)."""
    out: dict[str, list[SourceConfig]] = {}
    for cfg in sources:
        if cfg.role != role:
            continue
        for title in list_titles(cfg):
            out.setdefault(title, []).append(cfg)
    return out
