"""What `mangacolor colorize` (and `mangacolor xdog`) read and write: pages, folders, chapter archives.

Where outputs go:

- one input image and `-o NAME.png` (any image extension) -> that file; one archive and
  `-o NAME.cbz` -> that archive;
- otherwise `-o` is a folder that mirrors the inputs' relative paths: a folder input's files keep
  their path below it (`in/ch1/001.png` -> `OUT/ch1/001.png`), a single file lands in `OUT/`, and
  several inputs keep their paths below their common parent folder, so nothing collides;
- an archive gives an archive of the same name with the same member names, in the same order,
  non-image members (`ComicInfo.xml`) copied as they are.

A page keeps its file name and format (PNG, JPEG, WebP); other formats (BMP, GIF, TIFF) become PNG.
Every file is written atomically (temporary file, then rename), so an interrupted run leaves only
whole files; archive pages are kept in a hidden `.NAME.cbz.parts/` folder until the archive is
assembled, so a re-run goes on where the last one stopped. Pages are decoded one at a time.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mangacolor.data.archives import ARCHIVE_EXTENSIONS, IMAGE_EXTENSIONS, member_problem, natural_key
from mangacolor.io.images import ImageError, encode_jpeg, encode_png, read_image

KEPT_FORMATS = {".png", ".jpg", ".jpeg", ".webp"}
INPUT_KINDS = "a page image (PNG, JPEG, WebP, ...), a folder of pages or a .cbz/.zip chapter"


class InputError(ValueError):
    """A page, reference, hint or input path that cannot be used: one line naming it and what was
    expected (the CLI prints it and exits with code 2)."""


def read_page(page, what: str = "page", mode: str = "L") -> np.ndarray:
    """A path or an array -> uint8 array (grey for mode "L", RGB for "RGB"); InputError otherwise."""
    if isinstance(page, (str, Path)):
        path = Path(page)
        if not path.is_file():
            raise InputError(f"{path}: no such {what} file (expected an image file: PNG, JPEG, WebP, ...)")
        try:
            return read_image(path, mode=mode)
        except ImageError as exc:
            raise InputError(f"{path}: not a usable {what} image ({exc.reason})") from None
    if not isinstance(page, np.ndarray) or page.ndim not in (2, 3) or (page.ndim == 3 and page.shape[2] not in (1, 3, 4)):
        raise InputError(f"{what}: expected a path or a uint8 array (H, W) or (H, W, 3); got "
                         f"{getattr(page, 'shape', type(page).__name__)}")
    arr = np.asarray(page)
    if arr.dtype != np.uint8:
        raise InputError(f"{what}: expected a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if mode == "L" and arr.ndim == 3:
        return (arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    if mode == "RGB" and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3]) if mode == "RGB" else arr


@dataclass
class Unit:
    """One input file and where its output goes: a page image or a chapter archive."""

    kind: str  # "page" | "archive"
    source: Path
    target: Path
    problem: str | None = None  # e.g. two inputs that would write the same output


def output_name(name: str) -> str:
    """The output file name of a page: same name and format, PNG for formats we do not write."""
    p = Path(name)
    return name if p.suffix.lower() in KEPT_FORMATS else str(p.with_suffix(".png"))


def sample_path(target: Path, k: int, samples: int) -> Path:
    return target if samples == 1 else target.with_name(f"{target.stem}_s{k + 1}{target.suffix}")


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "page" if ext in IMAGE_EXTENSIONS else "archive" if ext in ARCHIVE_EXTENSIONS else None


def plan_outputs(inputs: list[Path], out: Path) -> list[Unit]:
    """Every input file with its output path (rules in the module docstring). Raises InputError."""
    inputs = [Path(p) for p in inputs]
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder (expected {INPUT_KINDS})")
        if p.is_file() and _kind(p) is None:
            raise InputError(f"{p}: not a page or a chapter (expected {INPUT_KINDS})")
    out_ext = out.suffix.lower()
    single = len(inputs) == 1 and inputs[0].is_file()
    if out_ext in IMAGE_EXTENSIONS or out_ext in ARCHIVE_EXTENSIONS:
        want = "page" if out_ext in IMAGE_EXTENSIONS else "archive"
        if single and _kind(inputs[0]) == want:
            target = out if want == "archive" or out_ext in KEPT_FORMATS else out.with_suffix(".png")
            return [Unit(want, inputs[0], target)]
        if not out.is_dir():
            what = "one image file" if want == "page" else "one chapter archive"
            raise InputError(f"-o {out}: names {what}, but the input is not a single "
                             f"{'page image' if want == 'page' else 'archive'}; give a folder to write into")
    if len(inputs) == 1:
        base = inputs[0] if inputs[0].is_dir() else inputs[0].parent
    else:
        base = Path(os.path.commonpath([str(p.resolve().parent) for p in inputs]))
    units, seen = [], {}
    for p in inputs:
        files = [p] if p.is_file() else sorted(
            (f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
             and _kind(f) is not None),
            key=lambda f: natural_key(str(f.relative_to(p))))
        for f in files:
            rel = f.resolve().relative_to(base.resolve()) if len(inputs) > 1 else f.relative_to(base)
            kind = _kind(f)
            target = out / (output_name(str(rel)) if kind == "page" else rel)
            unit = Unit(kind, f, target)
            if target in seen:
                unit.problem = f"would overwrite {target}, the output of {seen[target]}"
            seen.setdefault(target, f)
            units.append(unit)
    return units


def count_pages(unit: Unit) -> int:
    if unit.kind == "page":
        return 1
    try:
        with zipfile.ZipFile(unit.source) as zf:
            return sum(1 for i in zf.infolist() if not i.is_dir() and Path(i.filename).suffix.lower() in IMAGE_EXTENSIONS)
    except (zipfile.BadZipFile, OSError):
        return 0


def is_colour_page(rgb: np.ndarray, min_fraction: float = 0.02, min_chroma: float = 15.0, max_cast: float = 30.0) -> bool:
    """True when more than `min_fraction` of the page has a colour of its own: CIELAB chroma more than
    `min_chroma` away from a cast that scales with lightness (yellowed paper, a scanner's tint: fitted
    as a*, b* linear in L* over the page, and removed). A "cast" stronger than `max_cast` is no paper
    tint: a page of two flat colours fits the line exactly, and its pixels count by their own chroma."""
    if rgb.ndim == 2:
        return False
    small = rgb[..., :3]
    if max(small.shape[:2]) > 512:  # also averages away JPEG chroma noise around the ink
        s = 512 / max(small.shape[:2])
        small = cv2.resize(small, (max(1, round(small.shape[1] * s)), max(1, round(small.shape[0] * s))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float32)
    ab = lab[:, 1:] - 128
    design = np.stack([lab[:, 0] / 255, np.ones(len(lab), np.float32)], axis=1)
    cast, *_ = np.linalg.lstsq(design, ab, rcond=None)
    predicted = design @ cast
    residual = ab - predicted
    coloured = (np.hypot(residual[:, 0], residual[:, 1]) > min_chroma) | (np.hypot(predicted[:, 0], predicted[:, 1]) > max_cast)
    return float(coloured.mean()) > min_fraction


def encode_as(arr: np.ndarray, name: str) -> bytes:
    """Image bytes in the format the file name asks for (PNG unless .jpg/.jpeg/.webp)."""
    ext = Path(name).suffix.lower()
    if ext in (".jpg", ".jpeg"):
        return encode_jpeg(arr, quality=95)
    if ext == ".webp":
        bgr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 95])
        if ok:
            return buf.tobytes()
    return encode_png(arr)


@dataclass
class ArchiveMember:
    index: int
    name: str
    out_name: str
    is_page: bool
    problem: str | None = None


@dataclass
class ArchiveJob:
    """A chapter archive coloured page by page into `.NAME.parts/` folders, then assembled."""

    unit: Unit
    samples: int = 1
    members: list[ArchiveMember] = field(default_factory=list)

    def open(self) -> zipfile.ZipFile:
        zf = zipfile.ZipFile(self.unit.source)
        self.members = []
        for i, info in enumerate(x for x in zf.infolist() if not x.is_dir()):
            problem = member_problem(info)
            is_page = problem is None
            if problem and problem.startswith("not an image member"):
                problem = None  # ComicInfo.xml and friends: copied as they are
            self.members.append(ArchiveMember(i, info.filename, output_name(info.filename) if is_page else info.filename,
                                              is_page, problem))
        return zf

    def targets(self) -> list[Path]:
        return [sample_path(self.unit.target, k, self.samples) for k in range(self.samples)]

    def part(self, member: ArchiveMember, k: int) -> Path:
        target = self.targets()[k]
        return target.parent / f".{target.name}.parts" / f"{member.index:05d}{Path(member.out_name).suffix.lower()}"

    def assemble(self, zf: zipfile.ZipFile) -> None:
        """Write each sample's archive (same member names and order), then drop its parts folder."""
        for k, target in enumerate(self.targets()):
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                    for m in self.members:
                        if m.problem:
                            continue  # reported when read; never copied (unsafe paths, bombs)
                        info = zipfile.ZipInfo(m.out_name, date_time=(1980, 1, 1, 0, 0, 0))
                        info.compress_type = zipfile.ZIP_STORED if m.is_page else zipfile.ZIP_DEFLATED
                        out.writestr(info, self.part(m, k).read_bytes() if m.is_page else zf.read(m.name))
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            shutil.rmtree(target.parent / f".{target.name}.parts", ignore_errors=True)


__all__ = [
    "ArchiveJob",
    "InputError",
    "Unit",
    "count_pages",
    "encode_as",
    "is_colour_page",
    "output_name",
    "plan_outputs",
    "sample_path",
]
