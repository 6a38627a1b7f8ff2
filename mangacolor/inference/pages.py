"""What `mangacolor colorize` reads and writes: a page, a folder of pages, or a chapter archive.

Inputs are expanded to pages in reading order; a file that is not a usable page is reported and
skipped, never fatal. Outputs mirror the input: `OUT/<page>.png` for pages and folders, and for a
chapter archive `OUT/<chapter>/<page>.png` plus a colour `OUT/<chapter>.cbz`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mangacolor.data.archives import ARCHIVE_EXTENSIONS, IMAGE_EXTENSIONS, natural_key, read_archive
from mangacolor.io.images import ImageError, read_image
from mangacolor.io.store import safe_part


@dataclass
class InputPage:
    group: str | None  # the chapter archive it came from, if any
    name: str
    page: np.ndarray | None
    problem: str | None = None


def iter_input_pages(paths: list[Path]) -> Iterator[InputPage]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")),
                           key=lambda p: natural_key(str(p.relative_to(path))))
            yield from iter_input_pages(files)
        elif path.suffix.lower() in ARCHIVE_EXTENSIONS:
            try:
                members = read_archive(path.read_bytes())
            except ValueError as exc:
                yield InputPage(path.stem, path.name, None, str(exc))
                continue
            for m in members:
                name = safe_part(Path(m.name).stem)
                if m.data is None:
                    yield InputPage(path.stem, name, None, m.reason)
                    continue
                try:
                    yield InputPage(path.stem, name, read_image(m.data, mode="L"))
                except ImageError as exc:
                    yield InputPage(path.stem, name, None, exc.reason)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            try:
                yield InputPage(None, safe_part(path.stem), read_image(path, mode="L"))
            except ImageError as exc:
                yield InputPage(None, path.name, None, exc.reason)
        elif not path.exists():
            yield InputPage(None, str(path), None, "no such file or folder")


def pack_cbz(folder: Path, target: Path) -> Path:
    """A chapter archive of the PNGs in `folder`, in reading order, with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.glob("*.png"), key=lambda p: natural_key(p.name)):
            info = zipfile.ZipInfo(p.name, date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, p.read_bytes())
    tmp = target.with_suffix(".cbz.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)
    return target
