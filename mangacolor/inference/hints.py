"""Colour hints as artists give them, turned into the RGBA image the generator takes (paper §III-B).

Three forms, all in the page's own pixel coordinates and resized with the page:

- an RGBA image whose alpha marks the hints (alpha > 127), in any colour, white included;
- an RGB image (or an RGBA one that is opaque everywhere): every pixel that is not white is a hint;
- a JSON list of points `[{"x": 120, "y": 80, "rgb": [230, 40, 40], "radius": 12}, ...]` (a file or
  the list itself): discs of that colour; `radius` is optional (8 px), `rgb` may be `"#e62828"`.

A hint image of another size than the page is scaled to it when its aspect ratio matches (within
2%, a hint drawn on a downscaled copy of the page); anything else is a `HintError` that names the
file and what was expected. Hint JSON is a stranger's text: any shape of it (nested 200,000 deep,
an integer of 5,000 digits, a NaN or a 3e9 radius, a million points) is a `HintError`, within the
limits of `mangacolor.io.limits`.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mangacolor.io.images import ImageError, read_image
from mangacolor.io.limits import MAX_HINT_JSON_BYTES, MAX_HINT_POINTS, MAX_HINT_RADIUS, MAX_JSON_INT_DIGITS, Refused, read_regular

DEFAULT_RADIUS = 8
POINT_FORMAT = 'a JSON list of points [{"x": X, "y": Y, "rgb": [R, G, B], "radius": R}]'


class HintError(ValueError):
    """Hints that cannot be used; the message is one line naming the source and what was expected."""


def _colour(value, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3 and all(
        isinstance(v, (int, float)) and 0 <= v <= 255 for v in value
    ):
        return tuple(int(round(v)) for v in value)  # type: ignore[return-value]
    raise HintError(f'{where}: "rgb" must be [r, g, b] with values 0-255 or "#rrggbb", got {_short(value)}')


def _short(value, n: int = 80) -> str:
    """A value as it may appear in a one-line message: its repr, cut to `n` characters."""
    text = reprlib.repr(value)  # bounded depth and length, whatever the value holds
    return text if len(text) <= n else text[: n - 1] + "…"


def _refuse_constant(name: str):
    raise HintError(f"{name} is not a number a hint can have")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise HintError(f"an integer of {len(text.lstrip('-')):,} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def parse_hint_json(text: str | bytes, source: str = "hints"):
    """Hint JSON text -> its value, once every point in it passed `parse_points`; any other text is a
    one-line HintError."""
    if len(text) > MAX_HINT_JSON_BYTES:
        raise HintError(f"{source}: {len(text):,} bytes of JSON, over the {MAX_HINT_JSON_BYTES:,}-byte limit; expected {POINT_FORMAT}")
    try:
        value = json.loads(text, parse_int=_int, parse_constant=_refuse_constant)
    except HintError as exc:
        raise HintError(f"{source}: not usable JSON ({exc}); expected {POINT_FORMAT}") from None
    except RecursionError:
        raise HintError(f"{source}: not usable JSON (nested too deeply); expected {POINT_FORMAT}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise HintError(f"{source}: not readable JSON ({' '.join(str(exc).split())[:200]}); expected {POINT_FORMAT}") from None
    parse_points(value, source)
    return value


def read_hint_json(path: str | Path):
    """A .json hint file -> its checked JSON value (`parse_hint_json`; at most `MAX_HINT_JSON_BYTES`
    read, FIFOs and devices refused)."""
    try:
        data = read_regular(path, MAX_HINT_JSON_BYTES, "hint JSON file")
    except Refused as exc:
        raise HintError(f"{path}: {exc.reason}") from None
    except OSError as exc:
        raise HintError(f"{path}: unreadable ({exc.strerror or exc})") from None
    return parse_hint_json(data, str(path))


def _number(value, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HintError(f"{where}: {name} must be a number, got {_short(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise HintError(f"{where}: {name} must be a number, got {_short(value)}") from None
    if not math.isfinite(number):
        raise HintError(f"{where}: {name} must be a finite number, got {_short(value)}")
    return number


def parse_points(points, source: str = "hints") -> list[tuple[float, float, tuple[int, int, int], float]]:
    """Hint points as JSON gives them -> [(x, y, (r, g, b), radius)], every value checked (finite
    numbers, a radius in (0, MAX_HINT_RADIUS], at most MAX_HINT_POINTS points); the page's size is
    checked when they are drawn (`points_to_rgba`)."""
    if isinstance(points, dict) and "points" in points:
        points = points["points"]
    if not isinstance(points, list):
        raise HintError(f"{source}: expected {POINT_FORMAT}, got {type(points).__name__}")
    if len(points) > MAX_HINT_POINTS:
        raise HintError(f"{source}: {len(points):,} points, more than the {MAX_HINT_POINTS:,} a hint file may have")
    out = []
    for i, p in enumerate(points):
        where = f"{source}: point {i}"
        if not isinstance(p, dict) or not {"x", "y", "rgb"} <= p.keys():
            raise HintError(f"{where}: expected {{\"x\", \"y\", \"rgb\": [r, g, b], \"radius\"}}, got {_short(p)}")
        x, y = _number(p["x"], "x", where), _number(p["y"], "y", where)
        radius = _number(p.get("radius", DEFAULT_RADIUS), "radius", where)
        if not 0 < radius <= MAX_HINT_RADIUS:
            raise HintError(f"{where}: radius must be > 0 and at most {MAX_HINT_RADIUS:,} px, got {radius:g}")
        out.append((x, y, _colour(p["rgb"], where), radius))
    return out


def points_to_rgba(points, size: tuple[int, int], source: str = "hints") -> np.ndarray:
    """Rasterise hint points (page pixel coordinates) into an (H,W,4) uint8 hint image."""
    h, w = size
    rgba = np.zeros((h, w, 4), np.uint8)
    for i, (x, y, colour, radius) in enumerate(parse_points(points, source)):
        if not (0 <= x < w and 0 <= y < h):
            raise HintError(f"{source}: point {i}: ({x:g}, {y:g}) lies outside the {w}×{h} page")
        cv2.circle(rgba, (int(round(x)), int(round(y))), max(0, int(round(radius)) - 1), (*colour, 255), thickness=-1)
    return rgba


def rgba_from_image(img: np.ndarray) -> np.ndarray:
    """An (H,W,4) hint image, alpha 255 on hints and 0 elsewhere: alpha > 127 of an RGBA image, or
    'not white' for RGB and opaque RGBA."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise HintError(f"a hint image must be RGB or RGBA (H, W, 3|4); got shape {img.shape}")
    if img.shape[2] == 4 and img[..., 3].min() < 255:
        on = img[..., 3] > 127
        return np.dstack([img[..., :3] * on[..., None], on * 255]).astype(np.uint8)
    rgb = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    mask = (rgb.min(axis=2) < 250).astype(np.uint8) * 255
    return np.dstack([rgb, mask])


def resize_hint_array(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`resize_hint` for a uint8 (H,W,4) hint image: downscaling keeps every hint point (a cell is
    hinted if any pixel in it was, with their mean colour); upscaling is nearest-neighbour."""
    h, w = size
    if rgba.shape[:2] == (h, w):
        return rgba
    mask = (rgba[..., 3] > 127).astype(np.float32)
    if h * w >= rgba.shape[0] * rgba.shape[1]:
        out = cv2.resize(np.dstack([rgba[..., :3], (mask * 255).astype(np.uint8)]), (w, h), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(out)
    m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
    rgb = cv2.resize(rgba[..., :3].astype(np.float32) * mask[..., None], (w, h), interpolation=cv2.INTER_AREA)
    rgb = rgb / np.maximum(m, 1e-6)[..., None]
    on = m > 0
    return np.dstack([(rgb * on[..., None]).clip(0, 255).round().astype(np.uint8), on.astype(np.uint8) * 255])


def read_hint_file(path: str | Path):
    """A hint file's content: the checked points of a .json file (`read_hint_json`), or the pixels of an image;
    a file that is not one of them is a `HintError` naming it."""
    path = Path(path)
    if not path.exists():  # a FIFO or a device is refused by the readers below, unread
        raise HintError(f"{path}: no such hint file (expected an RGBA/RGB image or {POINT_FORMAT})")
    if path.suffix.lower() == ".json":
        return read_hint_json(path)
    try:
        return read_image(path, mode="RGBA")
    except ImageError as exc:
        raise HintError(f"{path}: {exc.reason}; expected an RGBA/RGB hint image or {POINT_FORMAT}") from None


def hint_source(hints: str | Path | None) -> Path | None:
    """A `--hints` argument checked before any page is read: None, a folder of per-page hint files (`hint_for`),
    or one hint file (read again for each page, so its errors name it)."""
    if hints is None:
        return None
    path = Path(hints)
    if path.is_dir():
        return path
    if not path.exists():
        raise HintError(f"{path}: no such hint file or folder (expected an RGBA/RGB hint image or {POINT_FORMAT}, "
                        "or a folder of them named like the pages)")
    read_hint_file(path)
    return path


def hint_for(folder: Path, rel: str) -> Path | None:
    """The hint file of a page in a hint folder: same relative path (or file name), .png, .json or .webp."""
    for stem in (Path(rel).with_suffix(""), Path(Path(rel).name).with_suffix("")):
        for ext in (".png", ".json", ".webp"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


def load_hints(hints, size: tuple[int, int]) -> np.ndarray | None:
    """Any accepted hint form -> (H,W,4) uint8 at the page's `size` (H, W), or None for no hints.

    `hints`: None; a path to an image or a .json file; an (H,W,3|4) uint8 array; a list of point dicts.
    """
    if hints is None:
        return None
    source = "hints"
    if isinstance(hints, (str, Path)):
        source = str(hints)
        hints = read_hint_file(hints)
    if isinstance(hints, (list, dict)):
        return points_to_rgba(hints, size, source)
    if not isinstance(hints, np.ndarray):
        raise HintError(f"{source}: expected an image array, a path or {POINT_FORMAT}; got {type(hints).__name__}")
    rgba = rgba_from_image(hints)
    hh, hw = rgba.shape[:2]
    h, w = size
    if (hh, hw) != (h, w):
        if abs(hw / hh - w / h) > 0.02 * (w / h):
            raise HintError(f"{source}: the hint image is {hw}×{hh} but the page is {w}×{h}; "
                            "expected a hint image the page's size or of its aspect ratio")
        rgba = resize_hint_array(rgba, (h, w))
    return rgba


__all__ = ["HintError", "hint_for", "hint_source", "load_hints", "parse_hint_json", "parse_points", "points_to_rgba",
           "read_hint_file", "read_hint_json", "rgba_from_image"]
