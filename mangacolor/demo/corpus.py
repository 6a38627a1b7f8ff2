"""The generated demo corpus: manga-like pages made from a seed, so tests and the demo need no download.

docs/architecture.md § Demo data. The paper trains on scraped colour manga, Danbooru illustrations, black-and-white
titles, matched black-and-white/colour pairs (§IV-A-2, "Data matching") and tests on Manga109; this
module draws a small stand-in for each, with numpy and OpenCV primitives only.

A page is one scene rasterised twice. Panels (a grid with slanted gutters, one wide panel across
the middle of a double spread) hold perspective streets, interiors, skies, speed lines and
characters (ellipse heads, hair masses with strands, eyes, torsos), then speech balloons with
columns of stroke glyphs. Every filled shape writes a region label and erases the ink below it
before drawing its outline, so occlusion is right in both renderings:

- colour: a flat colour per region, a darker crescent on the side away from the light, gradients
  on skies, times the ink;
- black-and-white: per region a screentone "sheet" (halftone dots at a few frequencies, dot
  gradients, hatching, solid black) drawn as real ink patterns, hatching in the shadows, times the
  same ink. It is *not* a grey conversion of the colour page: a blue and a red shirt of the same
  luminance can get different tones, and tones are high-frequency dot patterns.

The ink (line art, panel borders, balloon outlines, text) is identical in both: where `ink` is 255
both renderings are 0.

Layout on disk, written by `generate_demo_corpus(out_dir, seed, scale)` (the ingest relies on it):

    OUT/
      README.txt                          one paragraph: what this is, the seed and the scale
      color/<title>/<NNN>.png             colour-only titles azure_tide, crimson_oath, verdant_sky;
                                          8 RGB pages each, 256x384 (w x h), except 002: a
                                          512x384 double-page spread with a panel across the fold
      bw/<title>/<NNN>.png                black-and-white-only titles night_harbor, paper_moon,
                                          stone_garden (grey PNG, 8 pages each, 002 a spread);
                                          night_harbor uses the "bold" tone style (coarse dots, black
                                          fills, cross-hatching), the others the "fine" one
      archives/iron_lantern/chapter_01.cbz   a black-and-white title as a CBZ chapter: stored members
                                          001.png .. 006.png, nothing else, fixed timestamps
      pairs/color/ember_blade/<NNN>.png   10 colour pages (RGB PNG, 256x384)
      pairs/bw/ember_blade/<NNN>.jpg      their black-and-white versions re-scanned (grey JPEG,
                                          quality 85-92): different balloon text, white margins or
                                          trimmed borders, scale 0.9-1.1, rotation <= 1 degree, blur
                                          and noise. The last 20% (pages 009 and 010) are decoys: the
                                          re-scan of an unrelated page, which must not match.
      pairs/truth.json                    {"pages": [...], ...}, one entry per page, see below
      manga109/books.txt                  one title per line: OldSchoolDetective
      manga109/images/OldSchoolDetective/<NNN>.jpg
                                          6 grey JPEG double-page scans 512x384 in an older style
                                          (two facing pages, hatching, few tones, thick lines),
                                          numbered from 000 like the real Manga109
      danbooru/images/<id>.png            12 single illustrations (RGB PNG, 256 or 320 a side)
      danbooru/metadata.parquet           columns id (int64), file ("images/<id>.png"), tags
                                          (space-separated, Danbooru style), rating ("g"/"s"),
                                          width, height; rows sorted by id. Exactly the images
                                          tagged colored, colorized or comic are in colour; the
                                          others are monochrome/greyscale or sketch.

<NNN> is the 1-based page number with three digits ("001"), except Manga109's 0-based names.
`scale` multiplies every page count (at least 1 each, the pairs at least 3 with one decoy);
pages are seeded by (seed, part, title, page), so a larger corpus contains the smaller one's
pages (only which pair pages are decoys moves with the count).

pairs/truth.json, per page: {"page", "color", "bw", "matched", "size", "scale", "rotation_deg",
"crop", "offset", "affine", "quality"}. For a matched page the black-and-white scan was made as

    bw_scan = noise(blur(cv2.warpAffine(bw_of_colour_page, affine, (W, H), INTER_LINEAR,
                                        border = white 255)))

where `size` = [H, W] is the scan's size and `affine` (2x3) maps colour-page pixel centres to scan
pixel centres (OpenCV's convention, what `cv2.warpAffine` takes, see `pair_affine`). In edge
coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)) the map is a rotation about the scan's centre
after a uniform scaling: x_bw - c_bw = scale * R(rotation_deg) (x_col - c_col), with
c_bw = (W/2, H/2), c_col = ((left + Wc - right)/2, (top + Hc - bottom)/2) for the colour page's
size (Hc, Wc) and the crop below, R = [[cos, -sin], [sin, cos]], so rotation_deg = atan2(affine[1][0], affine[0][0]) (clockwise as
displayed, since y points down) and scale = sqrt(det(affine[:, :2])). The paper's terms:

- `crop` = [top, left, bottom, right]: how many colour-page pixels lie beyond the scan's edges,
  measured along the scan's axes through the middle of each edge (edge midpoint mapped back to the
  colour page). Positive: that border of the colour page was trimmed; negative: the scan has a
  white margin there. Without rotation: crop the colour page by it (pad white where negative),
  resize to `size`, and the ink coincides.
- `offset` = [dy, dx]: where the colour page's top-left corner lands in the scan (edge
  coordinates).

Decoy pages have "matched": false and null geometry. Every value is a float rounded to 1e-6.
Colours are a function of content, so a colorizer can learn them from the black-and-white page:
one skin colour, one sky, a cast of recurring characters per title (`cast`: hair, eyes, clothes, each
with one screentone), scenery coloured by (title hue, kind, tone) (`scenery`); a title without a hue
in COLOR_TITLES gets one from its name (`title_hue`). `holdout_pages` draws pages outside the corpus
with their true colours, for scoring a colorizer.

Same seed, same bytes: PNG and JPEG from fixed encoder settings, no timestamps, sorted listings.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mangacolor.io.images import encode_jpeg, encode_png

PAGE_SIZE = (384, 256)  # (h, w): the paper's 3:2 portrait pages, small
SPREAD_SIZE = (384, 512)
README_MARKER = "mangacolor demo corpus"

COLOR_TITLES = {"azure_tide": 210.0, "crimson_oath": 350.0, "verdant_sky": 130.0}  # title -> hue
BW_TITLES = {"night_harbor": "bold", "paper_moon": "fine", "stone_garden": "fine"}  # title -> tones
ARCHIVE_TITLE = "iron_lantern"
PAIR_TITLE = "ember_blade"
MANGA109_TITLE = "OldSchoolDetective"
PAGES_PER_TITLE = 8
SPREAD_PAGE = "002"  # chapters open on a double spread; fixed so a larger corpus keeps the smaller one's pages
ARCHIVE_PAGES = 6
PAIR_PAGES = 10
MANGA109_PAGES = 6
DANBOORU_IMAGES = 12

_SHIFT = 4  # OpenCV fixed-point bits: coordinates are drawn with 1/16 px precision
_BALLOON = 1  # region label of balloon interiors; 0 is the paper outside the panels


# ----------------------------------------------------------------------------------------------
# What a render returns


@dataclass(frozen=True)
class PageLayout:
    """Where things are on a page: enough to test against, not to re-render."""

    size: tuple[int, int]
    style: str
    tone: str
    spread: bool
    panels: tuple[tuple[tuple[float, float], ...], ...]  # polygons, (x, y) corners
    balloons: tuple[tuple[float, float, float, float], ...]  # (cx, cy, ax, ay)
    heads: tuple[tuple[float, float, float], ...]  # (cx, cy, r) of every character head
    kinds: tuple[str, ...]  # region label -> what it is ("paper", "balloon", "skin", "sky", ...)


@dataclass(frozen=True)
class PageRender:
    color: np.ndarray  # HxWx3 uint8 RGB
    bw: np.ndarray  # HxW uint8: ink + screentone, the black-and-white edition of the same page
    ink: np.ndarray  # HxW uint8 line-art coverage (255 = black in both renderings)
    regions: np.ndarray  # HxW uint16 region labels, see layout.kinds
    tone: np.ndarray  # HxW float32 screentone coverage of the bw page before ink (0 = paper)
    layout: PageLayout


# ----------------------------------------------------------------------------------------------
# Screentone sheets: a mangaka's tone stock, as coverage maps in [0, 1]


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


@lru_cache(maxsize=1)
def _dot_quantiles() -> np.ndarray:
    # The distribution of cos(u)+cos(v) over a period does not depend on the period: tabulate the
    # threshold that gives each coverage once, then any coverage map is one np.interp.
    t = (np.arange(256, dtype=np.float64) + 0.5) / 256 * 2 * np.pi
    f = (np.cos(t)[:, None] + np.cos(t)[None, :]).ravel()
    return np.quantile(f, np.linspace(0, 1, 257))


def _dots(h: int, w: int, period: float, angle: float, coverage) -> np.ndarray:
    """Halftone dots: black where cos(u)+cos(v) is above the threshold giving `coverage`."""
    yy, xx = _grid(h, w)
    a = math.radians(angle)
    u = (xx * math.cos(a) + yy * math.sin(a)) * (2 * np.pi / period)
    v = (-xx * math.sin(a) + yy * math.cos(a)) * (2 * np.pi / period)
    f = np.cos(u) + np.cos(v)
    cov = np.clip(np.asarray(coverage, dtype=np.float32), 0.0, 1.0)
    thr = np.interp(1.0 - cov, np.linspace(0, 1, 257), _dot_quantiles()).astype(np.float32)
    # a soft edge about one pixel wide, like a scanned dot
    gain = period / (2 * np.pi) * 1.2
    return np.clip((f - thr) * gain + 0.5, 0.0, 1.0).astype(np.float32)


def _hatch(h: int, w: int, spacing: float, angle: float, width: float, wobble: float = 0.0) -> np.ndarray:
    yy, xx = _grid(h, w)
    a = math.radians(angle)
    d = xx * math.cos(a) + yy * math.sin(a)
    if wobble:  # hand-drawn lines are not ruled
        d = d + wobble * np.sin((-xx * math.sin(a) + yy * math.cos(a)) * 0.11)
    g = np.mod(d / spacing, 1.0)
    dist = np.minimum(g, 1.0 - g) * spacing
    return np.clip(width / 2 - dist + 0.5, 0.0, 1.0).astype(np.float32)


# Tone styles: sheet names a region can get; "shadow" is what the dark side of a shape gets.
TONE_STYLES = ("fine", "bold", "hatch")


def _tone_sheets(style: str, h: int, w: int, v: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Coverage maps for one page. `v` is the vertical position inside each panel (0 top, 1 bottom)."""
    zero = np.zeros((h, w), np.float32)
    if style == "fine":
        p = float(rng.choice([4.0, 4.5, 5.0]))
        return {
            "white": zero,
            "light": _dots(h, w, p, 45, 0.12),
            "mid": _dots(h, w, p, 45, 0.3),
            "dark": _dots(h, w, p * 0.85, 45, 0.55),
            "gradient": _dots(h, w, p, 45, 0.6 * (1 - v) ** 1.6),
            "texture": _hatch(h, w, 3.2, 60, 1.0),
            "solid": np.ones((h, w), np.float32),
            "shadow": _dots(h, w, p * 0.85, 45, 0.35),
        }
    if style == "bold":
        p = float(rng.choice([7.0, 8.0]))
        return {
            "white": zero,
            "light": _dots(h, w, p, 30, 0.22),
            "mid": _dots(h, w, p, 30, 0.45),
            "dark": np.ones((h, w), np.float32),
            "gradient": _dots(h, w, p, 30, 0.85 * v**1.3),
            "texture": np.maximum(_hatch(h, w, 5, 45, 1.4), _hatch(h, w, 5, -45, 1.4)),
            "solid": np.ones((h, w), np.float32),
            "shadow": np.maximum(_hatch(h, w, 4, 45, 1.3), _hatch(h, w, 4, -45, 1.3)),
        }
    if style == "hatch":
        return {
            "white": zero,
            "light": _hatch(h, w, 5, 70, 1.0, wobble=0.8),
            "mid": _hatch(h, w, 3.5, 45, 1.2, wobble=0.8),
            "dark": np.maximum(_hatch(h, w, 3.5, 45, 1.3, 0.8), _hatch(h, w, 3.5, -45, 1.3, 0.8)),
            "gradient": _hatch(h, w, 4, 0, 1.0, wobble=1.0) * (v < 0.45),
            "texture": _dots(h, w, 5, 45, 0.2),
            "solid": np.ones((h, w), np.float32),
            "shadow": _hatch(h, w, 3, 30, 1.1, wobble=0.6),
        }
    raise ValueError(f"demo_corpus: unknown tone style {style!r}; expected one of {TONE_STYLES}")


# ----------------------------------------------------------------------------------------------
# Colours


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[h % 360.0, s, v]]], np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0] * 255.0


HAIR_COLORS = {
    "black_hair": (100, 100, 128),  # lighter than ink: line art stays the only black in colour
    "brown_hair": (140, 96, 64),
    "blonde_hair": (246, 214, 120),
    "blue_hair": (90, 130, 220),
    "pink_hair": (240, 150, 190),
    "red_hair": (200, 70, 60),
    "white_hair": (232, 234, 240),
    "green_hair": (100, 170, 110),
}
EYE_COLORS = {"blue_eyes": 220.0, "green_eyes": 130.0, "red_eyes": 0.0, "brown_eyes": 28.0, "purple_eyes": 280.0}
EYE_TONES = {"blue_eyes": "mid", "green_eyes": "dark", "red_eyes": "solid", "brown_eyes": "dark", "purple_eyes": "mid"}
SKIN = (250, 216, 190)  # one skin colour: a colorizer can learn it from the face's shape
SKY = (208.0, 0.4, 0.96)  # hue, saturation, value: every sky is the same blue, pale towards the horizon
# A hair colour is drawn with one screentone, as a mangaka keeps one tone per character: the black-and-white
# page then says which colour the hair is, and the colour is a learnable function of the page.
HAIR_TONES = {
    "black_hair": "solid", "brown_hair": "dark", "blonde_hair": "white", "blue_hair": "mid",
    "pink_hair": "light", "red_hair": "texture", "white_hair": "white", "green_hair": "gradient",
}
# Scenery: the colour of a region is a function of the title's hue, the kind of region and its tone, so
# pages of one title share a palette (hue offset, saturation, value per tone sheet).
_TONE_SHIFT = {"white": 0.0, "light": 25.0, "mid": -30.0, "dark": 55.0, "solid": -60.0, "texture": 90.0, "gradient": 0.0}
_KIND_SV = {"ground": (0.2, 0.78), "wall": (0.18, 0.93), "floor": (0.4, 0.72), "building": (0.18, 0.82),
            "window": (0.35, 0.88), "effect": (0.25, 1.0), "backdrop": (0.22, 0.92), "bokeh": (0.25, 1.0)}
_KIND_HUE = {"ground": 30.0, "floor": 30.0, "window": 205.0}  # fixed hues: earth and glass look alike in every title
CAST_SIZE = 3


@dataclass(frozen=True)
class Character:
    """One member of a title's cast: looks the same on every page it appears on."""

    hair: str
    eyes: str
    long_hair: bool
    clothes: tuple[float, float, float]  # hsv
    clothes_tone: str


def title_hue(title: str) -> float:
    """The dominant hue of a title without one in COLOR_TITLES: a function of its name."""
    return COLOR_TITLES.get(title, float(zlib.crc32(title.encode("utf-8")) % 360))


@lru_cache(maxsize=64)
def cast(hue: float) -> tuple[Character, ...]:
    """The recurring characters of the title whose hue is `hue` (a pure function of it)."""
    rng = np.random.default_rng([int(round(hue * 1000)) % 2**32, 7])
    hairs = rng.choice(sorted(HAIR_COLORS), size=CAST_SIZE, replace=False)
    out = []
    for hair in hairs:
        clothes_hue = hue + rng.uniform(-35, 35) if rng.random() < 0.7 else rng.uniform(0, 360)
        out.append(Character(str(hair), str(rng.choice(sorted(EYE_COLORS))), bool(rng.random() < 0.5),
                             (float(clothes_hue), float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.68, 0.92))),
                             str(rng.choice(["white", "light", "mid", "dark", "texture"]))))
    return tuple(out)


def scenery(hue: float, kind: str, tone: str) -> np.ndarray:
    """The colour of a scenery region of `kind` drawn with `tone` in a title of hue `hue`."""
    s, v = _KIND_SV[kind]
    return _hsv(_KIND_HUE.get(kind, hue) + _TONE_SHIFT[tone], s, v)


# ----------------------------------------------------------------------------------------------
# Drawing: every filled shape labels its region and erases the ink below it before its outline


def _fx(pts) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _ellipse(cx, cy, a, b, angle=0.0, t0=0.0, t1=360.0, n=40) -> np.ndarray:
    t = np.radians(np.linspace(t0, t1, n))
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bezier(p0, p1, p2, n=10) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


class _Canvas:
    """Region labels + ink of one page, with a label table (kind, colour, tone sheet, shaded)."""

    def __init__(self, h: int, w: int, line: int, detail: int = 1):
        self.h, self.w, self.line, self.detail = h, w, line, detail
        self.regions = np.zeros((h, w), np.uint16)
        self.ink = np.zeros((h, w), np.uint8)
        self.kinds: list[str] = ["paper", "balloon"]
        self.colors: list[np.ndarray] = [np.full(3, 255.0), np.full(3, 255.0)]
        self.tones: list[str] = ["white", "white"]
        self.shaded: list[bool] = [False, False]
        self.graded: list[bool] = [False, False]

    def scratch(self) -> "_Canvas":
        """An empty canvas sharing this one's label table: a panel is drawn there, then clipped in."""
        other = _Canvas(self.h, self.w, self.line, self.detail)
        other.kinds, other.colors, other.tones, other.shaded, other.graded = self.kinds, self.colors, self.tones, self.shaded, self.graded
        return other

    def label(self, kind: str, rgb, tone: str, shaded: bool = False, graded: bool = False) -> int:
        self.kinds.append(kind)
        self.colors.append(np.asarray(rgb, np.float64))
        self.tones.append(tone)
        self.shaded.append(shaded)
        self.graded.append(graded)
        return len(self.kinds) - 1

    def shape(self, pts, label: int, thick: int | None = None) -> None:
        p = _fx(pts)
        cv2.fillPoly(self.regions, [p], int(label), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.ink, [p], 0, cv2.LINE_8, _SHIFT)
        t = self.line if thick is None else thick
        if t > 0:
            cv2.polylines(self.ink, [p], True, 255, int(t), cv2.LINE_AA, _SHIFT)

    def stroke(self, pts, thick: int = 1, closed: bool = False) -> None:
        cv2.polylines(self.ink, [_fx(pts)], closed, 255, int(thick), cv2.LINE_AA, _SHIFT)

    def strokes(self, segments: np.ndarray, thick: int = 1) -> None:
        """Many straight strokes at once: segments (N, 2, 2)."""
        if len(segments):
            cv2.polylines(self.ink, list(_fx(segments).reshape(-1, 2, 1, 2)), False, 255, int(thick), cv2.LINE_AA, _SHIFT)

    def wedges(self, tris: np.ndarray) -> None:
        """Tapered speed lines: filled triangles (N, 3, 2)."""
        if len(tris):
            cv2.fillPoly(self.ink, list(_fx(tris).reshape(-1, 3, 1, 2)), 255, cv2.LINE_AA, _SHIFT)


# ----------------------------------------------------------------------------------------------
# Panels


def _corner(hline, vline) -> tuple[float, float]:
    """Intersection of y = a + b*x and x = c + d*y."""
    a, b = hline
    c, d = vline
    x = (c + d * a) / (1 - d * b)
    return x, a + b * x


def _panel_grid(rng: np.random.Generator, h: int, w: int, style: str, spread: bool) -> list[np.ndarray]:
    """Rows with (sometimes slanted) gutters, each cut into 1-3 panels; quads as (4, 2) arrays."""
    classic = style == "classic"
    m = 0.05 * w if not spread else 0.025 * w
    g = 7.0 if classic else 6.0
    n_rows = int(rng.choice([3, 4] if classic else [2, 3, 3, 4]))
    weights = rng.uniform(0.7, 1.3, n_rows)
    ys = m + np.concatenate([[0], np.cumsum(weights / weights.sum())]) * (h - 2 * m)
    slant = 0.0 if classic else 0.45
    # row boundary i: y = a + b*x, slanted boundaries pivot about the page centre
    hlines = []
    for i, y in enumerate(ys):
        b = rng.uniform(-0.12, 0.12) if 0 < i < n_rows and rng.random() < slant else 0.0
        hlines.append((y - b * w / 2, b))
    wide_row = int(rng.integers(n_rows)) if spread else -1
    quads = []
    for r in range(n_rows):
        top, bot = hlines[r], hlines[r + 1]
        n_cols = 1 if r == wide_row else int(rng.choice([1, 2, 2, 3] if not spread else [2, 3, 4]))
        if n_cols == 2:
            cuts = rng.uniform(0.28, 0.72, 1)
        else:  # roughly equal columns
            cuts = np.linspace(0, 1, n_cols + 1)[1:-1] + rng.uniform(-0.06, 0.06, n_cols - 1)
        xs = np.concatenate([[m], m + cuts * (w - 2 * m), [w - m]])
        ymid = (top[0] + bot[0]) / 2 + (top[1] + bot[1]) / 2 * w / 2
        vlines = []
        for j, x in enumerate(xs):
            d = rng.uniform(-0.15, 0.15) if 0 < j < n_cols and rng.random() < slant else 0.0
            vlines.append((x - d * ymid, d))
        for c in range(n_cols):
            # gutters: shift the inner boundaries half a gutter into the neighbouring panel
            t = (top[0] + (g / 2 if r > 0 else 0), top[1])
            bo = (bot[0] - (g / 2 if r < n_rows - 1 else 0), bot[1])
            le = (vlines[c][0] + (g / 2 if c > 0 else 0), vlines[c][1])
            ri = (vlines[c + 1][0] - (g / 2 if c < n_cols - 1 else 0), vlines[c + 1][1])
            quads.append(np.array([_corner(t, le), _corner(t, ri), _corner(bo, ri), _corner(bo, le)]))
    return quads


# ----------------------------------------------------------------------------------------------
# Panel contents


@dataclass
class _Style:
    name: str  # "modern" or "classic"
    line: int  # outline thickness
    detail: int  # strands, windows, text
    hue: float  # the title's dominant hue, degrees


def _pick_tone(rng, options: list[str], p=None) -> str:
    return str(rng.choice(options, p=p))


def _background(cv: _Canvas, rng, box, st: _Style, kind: str) -> float:
    """Fill the panel background; returns the horizon y (characters stand on it)."""
    x0, y0, x1, y1 = box
    pw, ph = x1 - x0, y1 - y0
    big = np.array([[x0 - 40, y0 - 40], [x1 + 40, y0 - 40], [x1 + 40, y1 + 40], [x0 - 40, y1 + 40]])
    classic = st.name == "classic"
    if kind in ("street", "interior"):
        hy = y0 + ph * rng.uniform(0.3, 0.55)
        vx = rng.uniform(x0 + 0.25 * pw, x1 - 0.25 * pw)
        if kind == "street":
            upper = cv.label("sky", _hsv(*SKY), "gradient", graded=True)
            t = _pick_tone(rng, ["white", "light"])
            lower = cv.label("ground", scenery(st.hue, "ground", t), t)
        else:
            t = _pick_tone(rng, ["light", "texture", "white"])
            upper = cv.label("wall", scenery(st.hue, "wall", t), t)
            t = _pick_tone(rng, ["mid", "light"])
            lower = cv.label("floor", scenery(st.hue, "floor", t), t)
        cv.shape(big, upper, 0)
        cv.shape([[x0 - 40, hy], [x1 + 40, hy], [x1 + 40, y1 + 40], [x0 - 40, y1 + 40]], lower, 0)
        cv.stroke([[x0 - 40, hy], [x1 + 40, hy]], cv.line if classic else 1)
        # one-point perspective: everything recedes to (vx, hy)
        rays = np.linspace(-1.2, 1.2, int(rng.integers(5, 10)))
        ends = np.stack([vx + rays * pw * 1.5, np.full_like(rays, y1 + 30)], axis=1)
        cv.strokes(np.stack([np.tile([vx, hy], (len(rays), 1)), ends], axis=1), 1)
        if kind == "street":
            for side in (-1, 1):
                near_x = x0 - 5 if side < 0 else x1 + 5
                far_x = vx + side * pw * rng.uniform(0.08, 0.2)
                top_near = y0 - rng.uniform(0, 0.3) * ph
                bot_near = y1 + 10

                def on(y_near, x):  # the point at x on the line from (near_x, y_near) to the vanishing point
                    return y_near + (hy - y_near) * (x - near_x) / (vx - near_x)

                t = _pick_tone(rng, ["light", "mid", "texture"])
                lab = cv.label("building", scenery(st.hue, "building", t), t)
                cv.shape([[near_x, top_near], [far_x, on(top_near, far_x)], [far_x, on(bot_near, far_x)], [near_x, bot_near]], lab)
                # windows: columns compress towards the vanishing point
                k = int(rng.integers(3, 6))
                fr = np.linspace(0.1, 0.9, k) ** 0.7
                xs = near_x + (far_x - near_x) * fr
                rows = np.linspace(0.15, 0.7, int(rng.integers(2, 5)))
                t = _pick_tone(rng, ["dark", "solid", "mid"])
                win = cv.label("window", scenery(st.hue, "window", t), t)
                for r0 in rows:
                    ya = top_near + (bot_near - top_near) * r0
                    yb = ya + (bot_near - top_near) * 0.08
                    for xa, xb in zip(xs[:-1], xs[:-1] + np.diff(xs) * 0.55):
                        cv.shape([[xa, on(ya, xa)], [xb, on(ya, xb)], [xb, on(yb, xb)], [xa, on(yb, xa)]], win, cv.detail)
        else:
            t = _pick_tone(rng, ["gradient", "white"])
            win = cv.label("window", scenery(st.hue, "window", t), t, graded=True)
            wx, wy = rng.uniform(x0, x1 - 0.3 * pw), y0 + ph * rng.uniform(0.05, 0.15)
            ww, wh = pw * rng.uniform(0.2, 0.35), (hy - wy) * 0.7
            cv.shape([[wx, wy], [wx + ww, wy], [wx + ww, wy + wh], [wx, wy + wh]], win)
            cv.strokes(np.array([[[wx + ww / 2, wy], [wx + ww / 2, wy + wh]], [[wx, wy + wh / 2], [wx + ww, wy + wh / 2]]]), cv.detail)
        return hy
    if kind == "sky":
        sky = cv.label("sky", _hsv(*SKY), "gradient", graded=True)
        cv.shape(big, sky, 0)
        cloud = cv.label("cloud", (250, 251, 255), "white", shaded=True)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(x0, x1), rng.uniform(y0, y0 + 0.6 * ph), rng.uniform(0.05, 0.1) * min(pw, 1.5 * ph)
            offs = rng.uniform(-1.3, 1.3, (4, 2)) * [r, 0.5 * r]
            for dx, dy in offs[np.argsort(offs[:, 1])[::-1]]:
                cv.shape(_ellipse(cx + dx, cy + dy, r, r * 0.8), cloud, cv.detail)
        return y1 - 0.1 * ph
    if kind in ("speed", "burst"):
        t = _pick_tone(rng, ["white", "gradient"])
        bg = cv.label("effect", scenery(st.hue, "effect", t), t, graded=True)
        cv.shape(big, bg, 0)
        n = int(rng.integers(50, 110))
        if kind == "burst":  # concentration lines towards a focus
            fx, fy = rng.uniform(x0 + 0.3 * pw, x1 - 0.3 * pw), rng.uniform(y0 + 0.3 * ph, y1 - 0.3 * ph)
            ang = rng.uniform(0, 2 * np.pi, n)
            r_out = math.hypot(pw, ph)
            r_in = rng.uniform(0.35, 0.75, n) * 0.5 * math.hypot(pw, ph)
            width = rng.uniform(0.01, 0.035, n)
            tris = np.stack([
                np.stack([fx + r_out * np.cos(ang - width), fy + r_out * np.sin(ang - width)], 1),
                np.stack([fx + r_out * np.cos(ang + width), fy + r_out * np.sin(ang + width)], 1),
                np.stack([fx + r_in * np.cos(ang), fy + r_in * np.sin(ang)], 1),
            ], axis=1)
        else:  # parallel motion lines from one side
            ys = rng.uniform(y0, y1, n)
            length = rng.uniform(0.3, 0.9, n) * pw
            half = rng.uniform(0.5, 1.6, n)
            tris = np.stack([
                np.stack([np.full(n, x1 + 5), ys - half], 1),
                np.stack([np.full(n, x1 + 5), ys + half], 1),
                np.stack([x1 - length, ys], 1),
            ], axis=1)
        cv.wedges(tris)
        return y1 - 0.05 * ph
    # "plain": a flat background, sometimes with hand hatching strokes in the corner
    t = _pick_tone(rng, ["white", "light", "gradient", "texture"])
    bg = cv.label("backdrop", scenery(st.hue, "backdrop", t), t, graded=True)
    cv.shape(big, bg, 0)
    if classic or rng.random() < 0.4:
        n = int(rng.integers(8, 20))
        sx = x0 + rng.uniform(0, 0.5) * pw + np.arange(n) * rng.uniform(2.5, 4)
        sy = y0 + rng.uniform(0.05, 0.3) * ph
        ln = rng.uniform(0.15, 0.3) * ph
        cv.strokes(np.stack([np.stack([sx, np.full(n, sy)], 1), np.stack([sx - ln * 0.4, np.full(n, sy + ln)], 1)], 1), 1)
    return y1 - 0.05 * ph


def _character(cv: _Canvas, rng, cx: float, cy: float, r: float, st: _Style, hair_name: str | None = None,
               eye_name: str | None = None, long_hair: bool | None = None) -> dict:
    """A bust: back hair, torso, neck, head, bangs, eyes. Returns the traits drawn (for tags)."""
    classic = st.name == "classic"
    who = cast(st.hue)[int(rng.integers(CAST_SIZE))]  # one of the title's recurring characters
    hair_name = hair_name or who.hair
    eye_name = eye_name or who.eyes
    long_hair = who.long_hair if long_hair is None else long_hair
    hair = cv.label("hair", HAIR_COLORS[hair_name], HAIR_TONES[hair_name], shaded=True)
    skin = cv.label("skin", SKIN, "white", shaded=True)
    clothes = cv.label("clothes", _hsv(*who.clothes), who.clothes_tone, shaded=True)
    tilt = rng.uniform(-10, 10)
    lw = 1 if r < 16 else cv.line + (1 if r > 40 else 0)

    if long_hair:
        drop = r * rng.uniform(1.6, 3.0)
        back = np.concatenate([_ellipse(cx, cy - 0.1 * r, 1.2 * r, 1.15 * r, tilt, 180, 360, 20),
                               [[cx + 1.3 * r, cy + drop], [cx - 1.3 * r, cy + drop]]])
        cv.shape(back, hair, lw)
    sw = r * rng.uniform(1.5, 2.1)
    torso = [[cx - 0.45 * r, cy + 1.25 * r], [cx + 0.45 * r, cy + 1.25 * r], [cx + sw, cy + 1.8 * r],
             [cx + sw * 1.15, cy + 6 * r], [cx - sw * 1.15, cy + 6 * r], [cx - sw, cy + 1.8 * r]]
    cv.shape(torso, clothes, lw)
    cv.stroke([[cx - 0.45 * r, cy + 1.25 * r], [cx, cy + 1.9 * r], [cx + 0.45 * r, cy + 1.25 * r]], cv.detail)  # collar
    cv.stroke([[cx - sw * 0.55, cy + 2.6 * r], [cx - sw * 0.6, cy + 4.5 * r]], cv.detail)  # fold
    neck = [[cx - 0.3 * r, cy + 0.6 * r], [cx + 0.3 * r, cy + 0.6 * r], [cx + 0.32 * r, cy + 1.35 * r], [cx - 0.32 * r, cy + 1.35 * r]]
    cv.shape(neck, skin, cv.detail)
    face = np.concatenate([_ellipse(cx, cy, r, 1.05 * r, tilt, 180, 360, 24),
                           _ellipse(cx, cy, r, 1.2 * r, tilt, 0, 180, 24)])
    cv.shape(face, skin, lw)
    # bangs: a cap over the top of the head with a zigzag lower edge
    n_spikes = int(rng.integers(3, 6)) if not classic else 2
    xs = np.linspace(cx - 1.08 * r, cx + 1.08 * r, 2 * n_spikes + 1)
    ys = np.where(np.arange(len(xs)) % 2 == 1, cy + rng.uniform(0.0, 0.25, len(xs)) * r, cy - rng.uniform(0.2, 0.4, len(xs)) * r)
    ys[0] = ys[-1] = cy + 0.1 * r
    cap = np.concatenate([_ellipse(cx, cy - 0.08 * r, 1.12 * r, 1.1 * r, tilt, 180, 360, 24), np.stack([xs, ys], 1)[::-1]])
    cv.shape(cap, hair, lw)
    crown = np.array([cx + rng.uniform(-0.3, 0.3) * r, cy - 1.05 * r])
    for x_tip, y_tip in zip(xs[1::2], ys[1::2]):  # strands from the crown towards each spike
        mid = (crown + [x_tip, y_tip]) / 2 + [rng.uniform(-0.25, 0.25) * r, -0.1 * r]
        cv.stroke(_bezier(crown, mid, [x_tip, y_tip - 0.25 * r]), 1)
    ey = cy + 0.42 * r
    fine = 1 if r < 30 else 2
    for side in (-1, 1):
        ex = cx + side * 0.42 * r
        if classic or r < 18:
            # small ink eyes: the older style, and figures too small for irises
            cv2.fillPoly(cv.ink, [_fx(_ellipse(ex, ey, 0.06 * r, 0.1 * r, 0, 0, 360, 10))], 255, cv2.LINE_AA, _SHIFT)
            cv.stroke([[ex - 0.18 * r, ey - 0.25 * r], [ex + 0.18 * r, ey - 0.28 * r]], fine)  # brow
            continue
        white = cv.label("eye_white", (255, 255, 255), "white")
        cv.shape(_ellipse(ex, ey, 0.19 * r, 0.22 * r, 0, 0, 360, 16), white, 1)
        iris = cv.label("iris", _hsv(EYE_COLORS[eye_name], 0.6, 0.8), EYE_TONES[eye_name], shaded=True)
        cv.shape(_ellipse(ex + side * 0.03 * r, ey + 0.03 * r, 0.12 * r, 0.18 * r, 0, 0, 360, 14), iris, 0 if r < 20 else 1)
        pupil = _ellipse(ex + side * 0.03 * r, ey + 0.05 * r, 0.06 * r, 0.09 * r, 0, 0, 360, 10)
        cv2.fillPoly(cv.ink, [_fx(pupil)], 255, cv2.LINE_AA, _SHIFT)
        cv.stroke(_ellipse(ex, ey + 0.05 * r, 0.22 * r, 0.27 * r, 0, 195, 345, 10), fine + 1)  # upper lid
    my = cy + 0.85 * r
    cv.stroke(_ellipse(cx, my - 0.08 * r, 0.14 * r, 0.08 * r, 0, 20, 160, 8), cv.detail)
    cv.stroke([[cx + 0.03 * r, cy + 0.6 * r], [cx - 0.04 * r, cy + 0.68 * r]], 1)  # nose
    return {"hair": hair_name, "eyes": eye_name, "long_hair": long_hair}


def _panel(cv: _Canvas, rng, quad: np.ndarray, st: _Style, heads: list) -> None:
    x0, y0 = quad.min(0)
    x1, y1 = quad.max(0)
    box = (x0, y0, x1, y1)
    pw, ph = x1 - x0, y1 - y0
    wide = pw > 1.6 * ph
    kinds = ["street", "interior", "sky", "speed", "burst", "plain", "closeup"]
    p = [0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.2] if not wide else [0.35, 0.2, 0.2, 0.1, 0.05, 0.1, 0.0]
    kind = str(rng.choice(kinds, p=p))
    ground = _background(cv, rng, box, st, "plain" if kind == "closeup" else kind)
    if kind == "closeup":
        r = min(pw, ph) * rng.uniform(0.28, 0.38)
        cx, cy = rng.uniform(x0 + 0.35 * pw, x1 - 0.35 * pw), max(y0 + 1.1 * r, y0 + ph * rng.uniform(0.4, 0.5))
        _character(cv, rng, cx, cy, r, st)
        heads.append((cx, cy, r))
        return
    n = int(rng.choice([0, 1, 1, 2])) if kind != "sky" else int(rng.choice([0, 1]))
    r = min(ph * rng.uniform(0.13, 0.2), pw * 0.2)
    slots = np.sort(rng.choice(np.linspace(0.25, 0.75, 3), size=n, replace=False)) if n else []
    for s in slots:
        cx = x0 + s * pw + rng.uniform(-0.05, 0.05) * pw
        # foreground figures: the whole head inside the panel, the body cut by its bottom edge
        cy = max(y0 + 1.35 * r, min(ground, y1) - rng.uniform(1.2, 2.2) * r)
        _character(cv, rng, cx, cy, r, st)
        heads.append((cx, cy, r))


# ----------------------------------------------------------------------------------------------
# Balloons and glyph text


def _balloon_at(rng, head, w: int, h: int, x_lo: float = 0.0) -> tuple[float, float, float, float]:
    """A balloon beside the head, inside the page (or inside [x_lo, x_lo + w) of a spread)."""
    hx, hy, hr = head
    ax = float(np.clip(rng.uniform(0.07, 0.1) * w * (1.3 if w > h else 1.0), 14, 34))
    ay = ax * rng.uniform(1.25, 1.6)
    side = 1 if hx - x_lo < w / 2 else -1
    cx = float(np.clip(hx + side * (hr + ax * 1.1), x_lo + ax + 4, x_lo + w - ax - 4))
    cy = float(np.clip(hy - hr * rng.uniform(0.2, 1.0), ay + 4, h - ay - 4))
    return cx, cy, ax, ay


def _overlaps(b, others) -> bool:
    return any(((b[0] - o[0]) / (b[2] + o[2])) ** 2 + ((b[1] - o[1]) / (b[3] + o[3])) ** 2 < 1.0 for o in others)


def _balloon(cv: _Canvas, balloon, head) -> None:
    cx, cy, ax, ay = balloon
    hx, hy, hr = head
    ell = _ellipse(cx, cy, ax, ay, 0, 0, 360, 48)
    # tail: base inside the balloon, tip between balloon and head
    to = np.array([hx - cx, hy - cy])
    to /= max(np.linalg.norm(to), 1e-6)
    perp = np.array([-to[1], to[0]])
    base = np.array([cx, cy]) + to * np.array([ax, ay]) * 0.75
    tip = np.array([cx, cy]) + to * (np.array([ax, ay]) + 0.6 * hr + 6)
    tail = np.array([base - perp * 0.3 * ax, tip, base + perp * 0.3 * ax])
    t = 2 * cv.line + 1  # the fills erase the inner half of the outline
    cv2.polylines(cv.ink, [_fx(ell)], True, 255, t, cv2.LINE_AA, _SHIFT)
    cv2.polylines(cv.ink, [_fx(tail)], False, 255, t, cv2.LINE_AA, _SHIFT)
    for poly in (ell, tail):
        cv2.fillPoly(cv.ink, [_fx(poly)], 0, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(cv.regions, [_fx(poly)], _BALLOON, cv2.LINE_8, _SHIFT)


# Glyph strokes join points of a 3x3 grid, like the radicals of kana and kanji.
_GLYPH_GRID = np.array([[x, y] for y in (0.0, 0.5, 1.0) for x in (0.0, 0.5, 1.0)])


def _glyph_text(cv: _Canvas, rng, balloon, cell: float) -> None:
    """Vertical columns of stroke glyphs, right to left, inside the balloon's inscribed box."""
    cx, cy, ax, ay = balloon
    bw_, bh = 1.25 * ax, 1.3 * ay
    n_cols = max(1, int(bw_ // (cell * 1.35)))
    n_rows = max(1, int(bh // (cell * 1.15)))
    x_right = cx + (n_cols * cell * 1.35) / 2 - cell
    segs = []
    for c in range(n_cols):
        rows = int(rng.integers(max(1, n_rows // 2), n_rows + 1))
        for k in range(rows):
            ox, oy = x_right - c * cell * 1.35, cy - bh / 2 + k * cell * 1.15 + 0.1 * cell
            n_str = int(rng.integers(2, 5))
            a = rng.integers(0, 9, n_str)
            b = (a + rng.integers(1, 9, n_str)) % 9
            p = np.stack([_GLYPH_GRID[a], _GLYPH_GRID[b]], axis=1) * (cell * 0.8) + [ox, oy]
            segs.append(p)
    if segs:
        cv.strokes(np.concatenate(segs), 1)


# ----------------------------------------------------------------------------------------------
# Rasterising: regions -> colour and screentone


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = a[y + dy, x + dx], edges repeated."""
    h, w = a.shape
    ys = np.clip(np.arange(h) + dy, 0, h - 1)
    xs = np.clip(np.arange(w) + dx, 0, w - 1)
    return a[ys][:, xs]


def _finish(cv: _Canvas, rng, tone_style: str, v: np.ndarray, light_d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    regions = cv.regions
    shaded = np.array(cv.shaded)[regions]
    # the dark side: pixels whose neighbour away from the light belongs to another region
    shade = shaded & (_shift(regions, light_d, light_d) != regions)
    colors = np.array(cv.colors, np.float32)
    graded = np.array(cv.graded)[regions]
    color = colors[regions]
    color *= np.where(shade, 0.74, 1.0)[..., None]
    lift = np.where(graded, 0.55 * v**1.5, 0.0)[..., None]  # skies pale towards the horizon
    color += (255.0 - color) * lift
    sheets = _tone_sheets(tone_style, cv.h, cv.w, v, rng)
    names = sorted(sheets)
    stack = np.stack([sheets[n] for n in names])
    idx = np.array([names.index(t) for t in cv.tones])[regions]
    tone = np.take_along_axis(stack, idx[None], 0)[0]
    tone = np.maximum(tone, shade * sheets["shadow"])
    a = cv.ink.astype(np.float32) / 255.0
    color_u8 = np.clip(np.rint(color * (1 - a)[..., None]), 0, 255).astype(np.uint8)
    bw_u8 = np.clip(np.rint(255.0 * (1 - tone) * (1 - a)), 0, 255).astype(np.uint8)
    return color_u8, bw_u8, tone


def _render(rng, style: str, size: tuple[int, int], spread: bool, tone: str, hue: float, text_rng) -> PageRender:
    h, w = size
    st = _Style(style, line=2, detail=1, hue=hue)
    cv = _Canvas(h, w, line=st.line)
    v = np.zeros((h, w), np.float32)
    if style == "classic" and spread:
        # an old scan of two facing pages: each half has its own grid
        quads = _panel_grid(rng, h, w // 2, style, False)
        quads += [q + [w // 2, 0] for q in _panel_grid(rng, h, w - w // 2, style, False)]
    else:
        quads = _panel_grid(rng, h, w, style, spread)
    heads: list = []
    yy, _ = _grid(h, w)
    for quad in quads:
        scratch = cv.scratch()
        _panel(scratch, rng, quad, st, heads)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [_fx(quad)], 1, cv2.LINE_8, _SHIFT)
        m = mask.astype(bool)
        cv.regions[m] = scratch.regions[m]
        cv.ink[m] = scratch.ink[m]
        y0, y1 = quad[:, 1].min(), quad[:, 1].max()
        v[m] = np.clip((yy - y0) / max(y1 - y0, 1.0), 0.0, 1.0)[m]
    for quad in quads:
        cv2.polylines(cv.ink, [_fx(quad)], True, 255, st.line + (1 if style == "classic" else 0), cv2.LINE_AA, _SHIFT)
    if style == "classic" and spread:  # the binding: a shadow line between the facing pages
        cv.stroke([[w / 2, 0], [w / 2, h]], 1)
    balloons = []
    order = rng.permutation(len(heads))
    for i in order[:4]:
        if style == "classic" and spread:  # facing pages: a balloon stays on its page
            half = w // 2
            b = _balloon_at(rng, heads[i], half, h, x_lo=0.0 if heads[i][0] < half else half)
        else:
            b = _balloon_at(rng, heads[i], w, h)
        if rng.random() < 0.8 and not _overlaps(b, balloons):
            _balloon(cv, b, heads[i])
            balloons.append(b)
    if not balloons:  # every page talks: a narration balloon
        head = (w * rng.uniform(0.3, 0.7), h * 0.3, 20.0)
        balloons.append(_balloon_at(rng, head, w, h))
        _balloon(cv, balloons[0], head)
    for b in balloons:
        _glyph_text(cv, text_rng, b, cell=7.0 if style == "modern" else 7.5)
    color, bw, tone_cov = _finish(cv, rng, tone, v, light_d=int(rng.integers(4, 7)))
    layout = PageLayout(
        size=(h, w), style=style, tone=tone, spread=spread,
        panels=tuple(tuple(map(tuple, q.round(2).tolist())) for q in quads),
        balloons=tuple(tuple(round(float(x), 2) for x in b) for b in balloons),
        heads=tuple(tuple(round(float(x), 2) for x in hd) for hd in heads),
        kinds=tuple(cv.kinds),
    )
    return PageRender(color=color, bw=bw, ink=cv.ink.copy(), regions=cv.regions.copy(), tone=tone_cov, layout=layout)


def render_page(
    rng: np.random.Generator,
    style: str = "modern",
    size: tuple[int, int] | None = None,
    spread: bool = False,
    tone: str | None = None,
    hue: float | None = None,
    text_rng: np.random.Generator | None = None,
) -> PageRender:
    """One manga page drawn from `rng`: colour and black-and-white renderings with the same ink.

    style: "modern" (slanted panels, big eyes, fine tones) or "classic" (regular grid, thick lines,
    hatching; a classic spread is two facing pages). size: (h, w), default 384x256, or 384x512 for
    a spread. tone: a TONE_STYLES name (default "fine" for modern, "hatch" for classic). hue: the
    title's dominant hue in degrees. text_rng: draws only the balloon text, so the same `rng` state
    with another `text_rng` gives the same page with different text (a re-lettered edition).
    """
    if style not in ("modern", "classic"):
        raise ValueError(f"corpus.render_page: style {style!r}; expected 'modern' or 'classic'")
    size = size or (SPREAD_SIZE if spread else PAGE_SIZE)
    tone = tone or ("hatch" if style == "classic" else "fine")
    if tone not in TONE_STYLES:
        raise ValueError(f"corpus.render_page: tone {tone!r}; expected one of {TONE_STYLES}")
    # drawn even when text_rng is given, so the art does not depend on where the text comes from
    text_seed = int(rng.integers(2**62))
    hue = float(rng.uniform(0, 360)) if hue is None else float(hue)
    return _render(rng, style, size, spread, tone, hue, text_rng or np.random.default_rng(text_seed))


def render_illustration(
    rng: np.random.Generator, size: tuple[int, int] = (320, 256), hue: float | None = None
) -> tuple[PageRender, dict]:
    """A single-character picture (Danbooru-like), not a page. Returns the render and its traits."""
    h, w = size
    hue = float(rng.uniform(0, 360)) if hue is None else float(hue)
    st = _Style("modern", line=2, detail=1, hue=hue)
    cv = _Canvas(h, w, st.line)
    bg = cv.label("backdrop", scenery(hue + 180, "backdrop", "gradient"), "gradient", graded=True)
    cv.shape([[-10, -10], [w + 10, -10], [w + 10, h + 10], [-10, h + 10]], bg, 0)
    deco = cv.label("bokeh", scenery(hue, "bokeh", "light"), "light")
    for _ in range(int(rng.integers(4, 9))):
        cv.shape(_ellipse(rng.uniform(0, w), rng.uniform(0, h * 0.6), *(rng.uniform(6, 18),) * 2), deco, 1)
    r = min(h, w) * rng.uniform(0.2, 0.25)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h * rng.uniform(0.32, 0.4)
    traits = _character(cv, rng, cx, cy, r, st)
    yy, _ = _grid(h, w)
    color, bw, tone_cov = _finish(cv, rng, "fine", (yy / h).astype(np.float32), light_d=int(rng.integers(4, 8)))
    layout = PageLayout((h, w), "modern", "fine", False, (), (), ((cx, cy, r),), tuple(cv.kinds))
    return PageRender(color, bw, cv.ink.copy(), cv.regions.copy(), tone_cov, layout), traits


# ----------------------------------------------------------------------------------------------
# Re-scanned pairs (paper §IV-A-2)


def pair_affine(truth: dict) -> np.ndarray:
    """The 2x3 colour-pixel-centre -> scan-pixel-centre map of a truth.json entry (for cv2.warpAffine)."""
    return np.asarray(truth["affine"], np.float64)


def _rescan_affine(color_hw, crop, scale: float, rotation_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Nominal crop amounts (ints) + scale + rotation -> (2x3 pixel-centre affine, scan size)."""
    hc, wc = color_hw
    top, left, bottom, right = crop
    kept_h, kept_w = hc - top - bottom, wc - left - right
    hb, wb = int(round(scale * kept_h)), int(round(scale * kept_w))
    c_col = np.array([left + kept_w / 2, top + kept_h / 2])
    c_bw = np.array([wb / 2, hb / 2])
    t = math.radians(rotation_deg)
    lin = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    # edge coordinates: x_bw = lin (x_col - c_col) + c_bw; pixel centres sit at +0.5
    trans = c_bw - lin @ c_col
    trans_px = trans + lin @ [0.5, 0.5] - 0.5
    return np.hstack([lin, trans_px[:, None]]), (hb, wb)


def describe_affine(affine: np.ndarray, color_hw, bw_hw) -> dict:
    """scale, rotation_deg, crop and offset (module docstring) of a colour -> scan affine."""
    lin = affine[:, :2]
    full = np.vstack([affine, [0, 0, 1]])
    inv = np.linalg.inv(full)
    hb, wb = bw_hw
    hc, wc = color_hw

    def back(x_edge, y_edge):
        p = inv @ [x_edge - 0.5, y_edge - 0.5, 1.0]
        return p[0] + 0.5, p[1] + 0.5

    crop = [back(wb / 2, 0)[1], back(0, hb / 2)[0], hc - back(wb / 2, hb)[1], wc - back(wb, hb / 2)[0]]
    corner = full @ [-0.5, -0.5, 1.0]  # colour edge (0, 0) is pixel-centre (-0.5, -0.5)
    return {
        "scale": math.sqrt(abs(np.linalg.det(lin))),
        "rotation_deg": math.degrees(math.atan2(lin[1, 0], lin[0, 0])),
        "crop": crop,
        "offset": [corner[1] + 0.5, corner[0] + 0.5],
    }


def rescan(bw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A black-and-white page as it comes back from a scanner; returns (scan, truth geometry)."""
    hc, wc = bw.shape
    # mostly white margins (negative), sometimes a trimmed border
    crop = [int(rng.integers(-16, 9)) for _ in range(4)]
    scale = float(rng.uniform(0.9, 1.1))
    rotation = float(rng.uniform(-1.0, 1.0))
    affine, (hb, wb) = _rescan_affine((hc, wc), crop, scale, rotation)
    scan = cv2.warpAffine(bw, affine, (wb, hb), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    scan = cv2.GaussianBlur(scan.astype(np.float32), (0, 0), rng.uniform(0.4, 0.7))
    paper = rng.uniform(0.95, 1.0)  # slightly grey paper, never whiter than white
    scan = scan * paper + rng.normal(0, 3.0, scan.shape)
    scan = np.clip(np.rint(scan), 0, 255).astype(np.uint8)
    geometry = describe_affine(affine, (hc, wc), (hb, wb))
    geometry["affine"] = affine.tolist()
    geometry["size"] = [hb, wb]
    return scan, geometry


# ----------------------------------------------------------------------------------------------
# The corpus on disk


def _rng(seed: int, *names: str) -> np.random.Generator:
    """One independent stream per (seed, part, title, page): adding pages never moves the others."""
    key = [zlib.crc32(n.encode("utf-8")) for n in names]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *key]))


def _count(base: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(round(base * scale)))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _round(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def _cbz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # no timestamps
            info.compress_type = zipfile.ZIP_STORED  # PNGs are already compressed
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def _title_pages(root: Path, part: str, title: str, n: int, seed: int, style: str, tone: str | None,
                 hue: float | None, kind: str) -> None:
    for i in range(n):
        page = f"{i + 1:03d}"
        r = render_page(_rng(seed, part, title, page), style=style, spread=(page == SPREAD_PAGE), tone=tone, hue=hue)
        data = encode_png(r.color) if kind == "color" else encode_png(r.bw)
        _write(root / part / title / f"{page}.png", data)


def _pairs(root: Path, n: int, seed: int) -> list[dict]:
    n_decoys = max(1, int(round(n * 0.2)))
    hue = 20.0
    entries = []
    for i in range(n):
        page = f"{i + 1:03d}"
        state = _rng(seed, "pairs", PAIR_TITLE, page)
        art_seed = int(state.integers(2**62))
        color = render_page(np.random.default_rng(art_seed), hue=hue, text_rng=np.random.default_rng(int(state.integers(2**62))))
        decoy = i >= n - n_decoys
        if decoy:  # the scan of some other page of the same series
            bw_page = render_page(_rng(seed, "pairs", PAIR_TITLE, page, "decoy"), hue=hue).bw
        else:  # the same drawing, lettered by another translator
            bw_page = render_page(np.random.default_rng(art_seed), hue=hue, text_rng=np.random.default_rng(int(state.integers(2**62)))).bw
        scan, geometry = rescan(bw_page, state)
        quality = int(state.integers(85, 93))
        _write(root / "pairs" / "color" / PAIR_TITLE / f"{page}.png", encode_png(color.color))
        _write(root / "pairs" / "bw" / PAIR_TITLE / f"{page}.jpg", encode_jpeg(scan, quality))
        entry = {"page": page, "color": f"color/{PAIR_TITLE}/{page}.png", "bw": f"bw/{PAIR_TITLE}/{page}.jpg",
                 "matched": not decoy, "size": geometry["size"], "quality": quality}
        for k in ("scale", "rotation_deg", "crop", "offset", "affine"):
            entry[k] = None if decoy else geometry[k]
        entries.append(_round(entry))
    return entries


_DANBOORU_KINDS = ("colored", "monochrome", "colorized", "sketch", "comic", "greyscale")


def _danbooru(root: Path, n: int, seed: int) -> list[dict]:
    rows = []
    for i in range(n):
        kind = _DANBOORU_KINDS[i % len(_DANBOORU_KINDS)]
        r = _rng(seed, "danbooru", str(i))
        id_ = 1_000_000 + 400_000 * i + int(r.integers(400_000))  # increasing, like upload order
        size = [(320, 256), (256, 256), (256, 320)][int(r.integers(3))]
        tags = []
        if kind in ("colorized", "comic"):
            # a coloured manga panel or a short colour comic
            page = render_page(r, size=size, hue=float(r.uniform(0, 360)))
            rgb = page.color
            tags += ["comic", "2koma"] if kind == "comic" else ["colorized", "manga"]
        else:
            pic, traits = render_illustration(r, size=size)
            tags += ["1girl" if traits["long_hair"] else "1boy", "solo", "upper_body",
                     "long_hair" if traits["long_hair"] else "short_hair", "looking_at_viewer"]
            if kind == "colored":
                rgb = pic.color
                tags += ["colored", traits["hair"], traits["eyes"], "gradient_background"]
            elif kind == "sketch":
                grey = np.clip(np.rint(255 - 0.8 * pic.ink.astype(np.float32)), 0, 255).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=2)
                tags += ["sketch", "lineart", "monochrome"]
            else:
                rgb = np.repeat(pic.bw[..., None], 3, axis=2)
                tags += ["monochrome", "greyscale", "screentone"] if kind == "monochrome" else ["greyscale", "monochrome"]
        file = f"images/{id_}.png"
        _write(root / "danbooru" / file, encode_png(rgb))
        rows.append({"id": id_, "file": file, "tags": " ".join(sorted(set(tags))),
                     "rating": str(r.choice(["g", "s"], p=[0.8, 0.2])), "width": size[1], "height": size[0]})
    return rows


def _prepare(out: Path) -> Path:
    """A staging folder next to `out`; refuses to replace a folder that is not a demo corpus."""
    if out.exists():
        entries = list(out.iterdir())
        readme = out / "README.txt"
        ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_MARKER)
        if entries and not ours:
            raise FileExistsError(
                f"demo_corpus: {out} exists and is not a demo corpus (no {README_MARKER!r} README.txt); "
                "choose an empty or new folder"
            )
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def holdout_pages(n: int, seed: int = 0, titles: dict[str, float] | None = None, size: tuple[int, int] | None = None):
    """`n` pages of the colour titles that the corpus never contains, with their true colours.

    Yields (title, page, bw, color): the black-and-white edition (HxW uint8) and the colour edition
    (HxWx3 uint8) of the same drawing, pixel-aligned; titles take turns. Drawn from their own stream
    (seed, "holdout", title, page), so no page of `generate_demo_corpus` at any scale is among them.
    """
    titles = dict(sorted((titles or COLOR_TITLES).items()))
    names = list(titles)
    for i in range(n):
        title = names[i % len(names)]
        page = f"{i // len(names) + 1:03d}"
        r = render_page(_rng(seed, "holdout", title, page), tone="fine", hue=titles[title], size=size)
        yield title, page, r.bw, r.color


def generate_demo_corpus(out_dir: str | Path, seed: int = 0, scale: float = 1.0) -> dict:
    """Write the demo corpus (layout in the module docstring) and return what it holds.

    Deterministic: the same seed and scale give the same bytes. The corpus is built in a staging
    folder and moved into place at the end, so a reader never sees half of it; an existing demo
    corpus at `out_dir` is replaced, any other non-empty folder is refused.
    """
    if seed < 0:
        raise ValueError(f"demo_corpus: seed must be >= 0, got {seed}")
    if not scale > 0:
        raise ValueError(f"demo_corpus: scale must be > 0, got {scale}")
    out = Path(out_dir).resolve()
    root = _prepare(out)
    n_pages = _count(PAGES_PER_TITLE, scale)
    for title, hue in sorted(COLOR_TITLES.items()):
        _title_pages(root, "color", title, n_pages, seed, "modern", "fine", hue, "color")
    for title, tone in sorted(BW_TITLES.items()):
        _title_pages(root, "bw", title, n_pages, seed, "modern", tone, title_hue(title), "bw")

    n_archive = _count(ARCHIVE_PAGES, scale)
    members = {}
    for i in range(n_archive):
        page = f"{i + 1:03d}"
        members[f"{page}.png"] = encode_png(render_page(_rng(seed, "archives", ARCHIVE_TITLE, page), tone="fine", hue=title_hue(ARCHIVE_TITLE)).bw)
    _write(root / "archives" / ARCHIVE_TITLE / "chapter_01.cbz", _cbz(members))

    n_pairs = _count(PAIR_PAGES, scale, minimum=3)
    truth = {"title": PAIR_TITLE, "seed": seed, "pages": _pairs(root, n_pairs, seed)}
    _write(root / "pairs" / "truth.json", (json.dumps(truth, indent=1, sort_keys=True) + "\n").encode())

    n_m109 = _count(MANGA109_PAGES, scale)
    _write(root / "manga109" / "books.txt", f"{MANGA109_TITLE}\n".encode())
    for i in range(n_m109):
        page = f"{i:03d}"
        r = render_page(_rng(seed, "manga109", MANGA109_TITLE, page), style="classic", spread=True, tone="hatch",
                      hue=title_hue(MANGA109_TITLE))
        _write(root / "manga109" / "images" / MANGA109_TITLE / f"{page}.jpg", encode_jpeg(r.bw, 90))

    n_dan = _count(DANBOORU_IMAGES, scale)
    rows = _danbooru(root, n_dan, seed)
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _write(root / "danbooru" / "metadata.parquet", buf.getvalue())

    counts = {
        "color": n_pages * len(COLOR_TITLES),
        "bw": n_pages * len(BW_TITLES),
        "archives": n_archive,
        "pairs": n_pairs,
        "manga109": n_m109,
        "danbooru": n_dan,
    }
    titles = {
        "color": sorted(COLOR_TITLES),
        "bw": sorted(BW_TITLES),
        "archives": [ARCHIVE_TITLE],
        "pairs": [PAIR_TITLE],
        "manga109": [MANGA109_TITLE],
        "danbooru": ["danbooru"],
    }
    readme = (
        f"{README_MARKER}, generated by mangacolor.demo.corpus with seed {seed} and scale {scale}. "
        f"Manga-like pages drawn from the seed (no downloads): {counts['color']} colour pages in "
        f"{len(COLOR_TITLES)} titles (color/), {counts['bw']} black-and-white pages rendered as ink and "
        f"screentone in {len(BW_TITLES)} titles (bw/), a {n_archive}-page chapter archive "
        f"(archives/{ARCHIVE_TITLE}/chapter_01.cbz), {n_pairs} colour pages of {PAIR_TITLE} with re-scanned "
        f"black-and-white versions and their ground-truth alignment (pairs/, truth.json; the last "
        f"{n_pairs - sum(e['matched'] for e in truth['pages'])} are decoys), {n_m109} double-page scans of "
        f"a Manga109-like title in an older style (manga109/) and {n_dan} tagged Danbooru-like "
        f"illustrations (danbooru/). The same seed gives the same bytes; see the module docstring for "
        f"the exact layout and how the pairs were made.\n"
    )
    _write(root / "README.txt", readme.encode())
    if out.exists():
        shutil.rmtree(out)
    os.replace(root, out)
    return {"out_dir": str(out), "seed": seed, "scale": scale, "counts": counts, "titles": titles}
