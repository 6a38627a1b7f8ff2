"""Ingest: source pages -> validated, de-duplicated pages in the store with a manifest.

Every item of a title is read as untrusted bytes. A page that decodes (16-bit, palette, alpha and
CMYK files included) is kept byte-for-byte under `pages/`; anything else, and near-duplicates of an
earlier page, are kept under `quarantine/` with the reason in the manifest. Nothing is dropped and
one bad file never stops the title.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mangacolor.data.phash import DuplicateFinder, dhash
from mangacolor.data.sources import SourceItem
from mangacolor.io.images import ImageError, read_image, sniff_format
from mangacolor.io.store import VersionWriter, safe_part, sha256_bytes


@dataclass
class IngestSummary:
    ok: int = 0
    quarantined: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict:
        return {"ok": self.ok, "quarantined": self.quarantined, "near_duplicates": self.duplicates}


def ingest_items(
    items: Iterable[SourceItem],
    writer: VersionWriter,
    dedup_distance: int | None = 16,
    progress: Callable[[int, str], None] | None = None,
) -> IngestSummary:
    summary = IngestSummary()
    finder = DuplicateFinder(dedup_distance) if dedup_distance is not None else None
    used_names: set[str] = set()
    for n, item in enumerate(items, 1):
        name = safe_part(item.page.replace("/", "-"))
        while name in used_names:
            name += "_"
        used_names.add(name)
        row = {"id": f"{item.title}/{item.page}", "title": item.title, "page": item.page, "source_uri": item.source_uri}
        data: bytes | None = None
        reason = item.problem
        if reason is None:
            try:
                data = item.load()
            except OSError as exc:
                reason = f"unreadable source: {exc}"
        if data is not None:
            row["sha256"] = sha256_bytes(data)
            row["bytes"] = len(data)
        if reason is None:
            try:
                img = read_image(data)
                row["height"], row["width"] = img.shape[:2]
                h = dhash(img)
                row["phash"] = f"{h:064x}"
                dup = finder.check(row["id"], h) if finder else None
                if dup is not None:
                    reason = f"near-duplicate of {dup[0]} (hash distance {dup[1]})"
                    summary.duplicates += 1
            except ImageError as exc:
                reason = exc.reason
        if reason is None:
            ext = {"jpeg": "jpg"}.get(sniff_format(data), sniff_format(data))
            row["path"] = writer.write(f"pages/{name}.{ext}", data)
            row["status"], row["reason"] = "ok", None
            summary.ok += 1
        else:
            if data is not None:
                row["path"] = writer.write(f"quarantine/{name}.bin", data)
            row["status"], row["reason"] = "quarantined", reason
            summary.quarantined += 1
        writer.add(row)
        if progress:
            progress(n, row["id"])
    return summary
