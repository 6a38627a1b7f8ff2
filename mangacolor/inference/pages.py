"""What `mangacolor colorize` (and `mangacolor xdog`) read and write: pages, folders, chapter archives.

Where outputs go:

- one input image and `-o NAME.png` (any image extension) -> that file; one archive and
  `-o NAME.cbz` -> that archive;
- otherwise `-o` is a folder that mirrors the inputs' relative paths: a folder input's files keep
  their path below it (`in/ch1/001.png` -> `OUT/ch1/001.png`), a single file lands in `OUT/`, and
  several inputs keep their paths below their common parent folder, so nothing collides;
- an archive gives an archive of the same name with the same member names, in the same order,
  non-image members (`ComicInfo.xml`) copied as they are.

Inputs are read-only to us. An `-o` that is an input, contains an input, or lies inside an input
folder is refused before anything is written (`--overwrite` included), and so is an output that a
symlink in the output folder would lead onto an input: the originals are never replaced, and an
output is never read back as an input by the next run. A path ending in `/` is a folder, whatever
its extension. Inputs are regular files and folders: a FIFO or a device is refused unread, and a
symlink inside an input folder that leads out of it is reported and not read.

A page keeps its file name and format (PNG, JPEG, WebP); other formats (BMP, GIF, TIFF) become PNG.
Every file is written atomically (temporary file, then rename), so an interrupted run leaves only
whole files; archive pages are kept in a hidden `.NAME.cbz.parts/` folder until the archive is
assembled, so a re-run goes on where the last one stopped. Pages are decoded one at a time.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mangacolor.data.archives import (ARCHIVE_EXTENSIONS, IMAGE_EXTENSIONS, MemberError, copy_member, member_problem,
                                      natural_key, open_archive)
from mangacolor.io.limits import MAX_ARCHIVE_BYTES, file_kind, open_regular
from mangacolor.io.files import atomic_path
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


def plan_outputs(inputs: list[Path], out: Path, out_is_folder: bool = False, samples: int = 1) -> list[Unit]:
    """Every input file with its output path (rules in the module docstring). Raises InputError.

    `out_is_folder`: `-o` was written with a trailing `/` (argparse's Path drops it). Outputs that
    cannot be written at all (a file where a folder goes, no permission, a read-only file system) are
    refused here, before anything is written; an output name too long for the file system is that
    unit's problem."""
    units = _plan(inputs, Path(out), out_is_folder)
    _check_writable(Path(out))
    for u in units:
        longest = max((sample_path(u.target, k, samples) for k in range(samples)), key=lambda t: len(os.fsencode(t.name)))
        if u.problem is None and len(os.fsencode(longest.name)) > _name_max(Path(out)):
            u.problem = f"output name {longest.name[:40]}… is {len(os.fsencode(longest.name))} bytes, more than the file system allows"
    return units


def _name_max(out: Path) -> int:
    try:
        return os.pathconf(_existing_ancestor(out), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(out: Path) -> None:
    """InputError when nothing can be written at `out`: a file where a folder must be, no permission,
    a read-only file system (checked on the nearest folder that exists)."""
    anc = _existing_ancestor(out if out.is_dir() else out.parent)
    if not anc.is_dir():
        raise InputError(f"-o {out}: {anc} is a {file_kind(anc.stat().st_mode)}, not a folder; give a path in a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(anc).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        why = "is on a read-only file system" if readonly else "is not writable by this user (permission denied)"
        raise InputError(f"-o {out}: {anc} {why}; give a folder you can write in")


def _plan(inputs: list[Path], out: Path, out_is_folder: bool) -> list[Unit]:
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder (expected {INPUT_KINDS})")
        mode = p.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"{p}: not a regular file ({file_kind(mode)}); expected {INPUT_KINDS}")
        if p.is_file() and _kind(p) is None:
            raise InputError(f"{p}: not a page or a chapter (expected {INPUT_KINDS})")
    out_ext = out.suffix.lower()
    single = len(inputs) == 1 and inputs[0].is_file()
    if not out_is_folder and not out.is_dir() and (out_ext in IMAGE_EXTENSIONS or out_ext in ARCHIVE_EXTENSIONS):
        want = "page" if out_ext in IMAGE_EXTENSIONS else "archive"
        if single and _kind(inputs[0]) == want:
            target = out if want == "archive" or out_ext in KEPT_FORMATS else out.with_suffix(".png")
            units = [Unit(want, inputs[0], target)]
            _refuse_overlap(inputs, out, units)
            return units
        what = "one image file" if want == "page" else "one chapter archive"
        raise InputError(f"-o {out}: names {what}, but the input is not a single "
                         f"{'page image' if want == 'page' else 'archive'}; give a folder to write into")
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: an existing {file_kind(out.stat().st_mode)}, where a folder to write into is needed; "
                         "give a folder (new or existing)")
    if len(inputs) == 1:
        base = inputs[0] if inputs[0].is_dir() else inputs[0].parent
    else:  # by the paths as given: a symlink among the inputs keeps its own name
        base = Path(os.path.commonpath([os.path.abspath(p.parent) for p in inputs]))
    units, seen = [], {}
    for p in inputs:
        for f, problem in ([(p, None)] if p.is_file() else _walk(p)):
            rel = Path(os.path.abspath(f)).relative_to(base) if len(inputs) > 1 else f.relative_to(base)
            kind = _kind(f)
            target = out / (output_name(str(rel)) if kind == "page" else rel)
            unit = Unit(kind, f, target, problem)
            if problem is None:
                if target in seen:
                    unit.problem = f"would overwrite {target}, the output of {seen[target]}"
                seen.setdefault(target, f)
            units.append(unit)
    _refuse_overlap(inputs, out, units)
    return units


def _walk(folder: Path):
    """(file, problem) for the pages and chapters of an input folder in reading order; hidden paths
    skipped. A symlink that leads out of the folder, or a FIFO or device, comes with its problem
    and is never read."""
    real_root = os.path.realpath(folder)
    found = []
    for f in folder.rglob("*"):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        is_link = f.is_symlink()
        if not is_link and f.is_dir():
            continue
        if _kind(f) is None and not (is_link and f.is_dir()):
            continue
        problem = None
        if is_link and os.path.commonpath([real_root, os.path.realpath(f)]) != real_root:
            problem = f"symlink to {os.path.realpath(f)}, outside the input folder {folder}: not read"
        elif f.is_dir():
            continue  # a link to a folder inside this one: its files are listed where they are
        elif not f.exists():
            problem = "broken symlink: not read"
        elif not stat.S_ISREG(f.stat().st_mode):
            problem = f"not a regular file ({file_kind(f.stat().st_mode)}): not read"
        found.append((f, problem))
    return sorted(found, key=lambda item: natural_key(str(item[0].relative_to(folder))))


def _inside(path: str, folder: str) -> bool:
    return path == folder or os.path.commonpath([path, folder]) == folder


def _refuse_overlap(inputs: list[Path], out: Path, units: list[Unit]) -> None:
    """InputError when writing the outputs could change an input or be read back as one (the rules
    of the module docstring), checked on real paths (symlinks resolved) before anything is written."""
    real_out = os.path.realpath(out)
    for p in inputs:
        real = os.path.realpath(p)
        if real == real_out or (out.exists() and os.path.samefile(out, p)):
            raise InputError(f"-o {out}: is the input {p}; writing there would replace the original "
                             f"(--overwrite too): choose another {'folder' if p.is_dir() else 'file name'}")
        if _inside(real, real_out):
            raise InputError(f"-o {out}: contains the input {p}; outputs could replace originals: choose a folder "
                             "outside the inputs")
        if p.is_dir() and _inside(real_out, real):
            raise InputError(f"-o {out}: lies inside the input folder {p}, which is read: its outputs would be read "
                             "back as inputs by the next run; choose a folder outside it")
    sources = {os.path.realpath(u.source) for u in units if u.problem is None}
    folders = [os.path.realpath(p) for p in inputs if p.is_dir()]
    for u in units:
        parent = os.path.realpath(u.target.parent)
        real_target = os.path.join(parent, u.target.name)
        if real_target in sources or any(_inside(parent, f) for f in folders):
            raise InputError(f"-o {out}: {u.target} leads (through a symlink) to {real_target}, into the inputs; "
                             "choose an output folder without links into them")


def count_pages(unit: Unit) -> int:
    if unit.kind == "page" or unit.problem:
        return 1 if unit.kind == "page" else 0
    try:
        with open_regular(unit.source, MAX_ARCHIVE_BYTES, "chapter archive") as f, zipfile.ZipFile(f) as zf:
            return sum(1 for i in zf.infolist() if not i.is_dir() and Path(i.filename).suffix.lower() in IMAGE_EXTENSIONS)
    except (zipfile.BadZipFile, OSError, ValueError):
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
        """The archive, its members listed (ValueError when it cannot be read, a FIFO included)."""
        zf = open_archive(self.unit.source)
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

    def assemble(self, zf: zipfile.ZipFile) -> list[str]:
        """Write each sample's archive (same member names and order), then drop its parts folder.

        A page with no part (its colouring failed) goes in as it was, so the chapter keeps its page
        count; a member that cannot be copied within its limits is left out. Returns what was left out."""
        left_out: list[str] = []
        for k, target in enumerate(self.targets()):
            with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                for m in self.members:
                    if m.problem:
                        continue  # reported when read; never copied (unsafe paths, bombs)
                    part = self.part(m, k)
                    info = zipfile.ZipInfo(m.out_name if part.exists() or not m.is_page else m.name,
                                           date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_STORED if m.is_page else zipfile.ZIP_DEFLATED
                    if m.is_page and part.exists():
                        out.writestr(info, part.read_bytes())
                        continue
                    # The original member, streamed through a spooled copy: never held whole, and one
                    # that breaks its limits half-way leaves no half member in the chapter.
                    with tempfile.SpooledTemporaryFile(8 * 2**20) as spool:
                        try:
                            copy_member(zf, zf.getinfo(m.name), spool)
                        except MemberError as exc:
                            left_out.append(str(exc))
                            continue
                        spool.seek(0)
                        with out.open(info, "w") as dst:
                            shutil.copyfileobj(spool, dst, 2**20)
            shutil.rmtree(target.parent / f".{target.name}.parts", ignore_errors=True)
        return left_out


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
