"""Matching a black-and-white page with its colour version (paper §IV-A-2, "Data matching").

The paper pairs pages from different sources through their black pixels: the colour page's black
line art *is* the black-and-white page, so after cutting a few rows/columns off the colour page and
resizing it to the black-and-white size, every pixel that is black in colour must be black in
black-and-white too. The error is how far the black-and-white pixels under the colour "black mask"
are from black; the crop/scale with the smallest error is the alignment, and a pair whose best error
is above a threshold is not a pair at all.

Real scans also come at another resolution than the colour page (0.25x-4x, any ratio, resized
with any filter), with white margins of up to a fifth of a side, a few degrees askew, with JPEG
noise, screentone (moire when the scan is coarser than the tone) where the colour page has flat
colour, and different balloon text. So the alignment here is an affine map colour ->
black-and-white (scale, translation, small rotation), found coarse to fine; the search is global
(every scale the page sizes and margins allow, every rotation within ~3 degrees, every
translation), so nothing needs to start near the identity:

1. ink maps: colour "black" = pixels whose brightest channel is below `ink_level` (step 3 of the
   paper); black-and-white line ink = dark pixels minus small connected components (screentone
   dots, which the colour page replaced by flat colour), used only to find the coarse placement;
2. a grid search over scale (2% steps from 0.58x to 1.2x the pages' size ratio, i.e. any resolution
   ratio and margins up to 20% of each side) x rotation (-2, 0, 2 degrees; the refinement recovers
   the rest) on a ~128 px pyramid level, where every
   translation is scored at once by a cross-correlation of the colour ink with the high-passed bw
   line ink (evenly dark areas, i.e. dense tone, hatching and fills, must not attract the colour
   ink), per unit of colour ink that lands inside the page. A placement must also cover
   `min_bw_overlap` of the bw page's ink: a scan's margins are blank paper, and without that rule
   a colour page shrunk into one dense panel scores best (found scales sat at the bottom of the
   range, 0.58x the true one);
3. refinement that minimises the paper's error itself: the (blurred) whiteness of the bw page
   under the colour page's black pixels, a robust sum over a sample of those pixels, by
   Levenberg-Marquardt on every finer pyramid level up to full resolution (a similarity on coarse
   levels, an affine map on fine ones), starting at the search's own resolution, with the
   coarser levels high-passed as the search's map is (`_whiteness_pyramid`). It looks only
   where the colour page is black, so screentone, hatching and black fills that exist only in
   black-and-white cannot pull it, which a correlation such as ECC cannot promise; it ends
   sub-pixel (crop within ~0.1-0.4 px). The paper's own model, a plain resize of the whole page,
   is refined as one more candidate when the search found nothing near it;
4. the decision, steps 4-5 of the paper at the bw page's own resolution, normalised so one
   threshold works for light and dark pages and for any scanner: mean whiteness (measured from
   the page's own black, its darkest percentile, to white, after a `tolerance_px` minimum filter
   that forgives a pixel of misregistration and anti-aliasing) under the warped colour black
   mask, divided by the mean whiteness of the bw page under the colour page's footprint, i.e.
   what a random mask would score. When the scan is coarser than the colour page (scale < 0.8),
   the colour black mask is area-averaged to the scan's grid first and a scan pixel that is a
   fraction m colour black is only expected to be that dark (whiteness beyond 1 - m, per unit of
   m, counts): a thin line is only grey in a coarse scan. That error is stricter, so it has its own
   threshold (`coarse_threshold`, 0.13; the result's `threshold` says which applied). A placement
   that leaves more than a fifth of the bw page's line ink outside the colour page is no match.
   On `benchmarks/matching.py --hard`'s pairs (resizes and scans at 0.25x-4x, any filter, JPEG at
   both ends, 200 pairs) same pages score up to 0.19 (0.24 where the colour page is ~4x coarser
   than the scan) and 0.09 on coarse scans, other pages of the title 0.44+ and 0.17+; the default
   threshold is 0.25. When the best coarse
   placement fails, the next `candidates` are refined too, so a rejection costs about four times
   a match.

The result is given both as the affine `transform` (2x3, colour pixel centres -> black-and-white
pixel centres, what `cv2.warpAffine` takes) and in the paper's terms:

- `scale`: black-and-white pixels per colour pixel (sqrt of the determinant of the linear part);
- `crop` = [top, left, bottom, right]: how many colour pixels lie beyond the black-and-white page's
  edges, measured along the page's axes through the middle of each edge, i.e. the rows/columns the
  paper cuts off before resizing. Negative values mean the black-and-white page extends beyond the
  colour page (its white scan margins); then the colour page is padded with white, not cut.
  With no rotation, `bw_x = (colour_x - left) * scale_x` in edge coordinates, exactly crop + resize.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class MatchConfig:
    # colour pixel is "black" (line art) when max(R, G, B) < ink_level
    ink_level: int = 80
    # black-and-white pixel is ink when below bw_ink_level
    bw_ink_level: int = 128
    # connected dark components smaller than this fraction of the page's short side, squared, are
    # screentone dots or specks, not line art (only for the search maps, never for the error)
    dot_size: float = 0.012
    # scale search range, relative to the size ratios of the two pages (bw size / colour size);
    # the ratio itself may be anything (0.25x-4x resolution), the range covers white margins of up
    # to 20% of each side (drawing = 60% of the scan: 0.6x) and trimmed colour borders (1.2x)
    scale_range: tuple[float, float] = (0.58, 1.2)
    scale_step: float = 0.02
    # coarse rotations tried; the refinement recovers up to ~2.5 degrees from each, so these cover
    # scans up to ~3 degrees askew; add e.g. (-6, 6) for pages photographed askew (and raise the max)
    rotations_deg: tuple[float, ...] = (-2.0, 0.0, 2.0)
    max_rotation_deg: float = 3.5
    # |scale_x / scale_y - 1| or shear above this is a diverged fit, not a scan
    max_anisotropy: float = 0.04
    coarse_side: int = 128
    # sigma (coarse pixels) of the local mean removed from the bw ink map before the coarse search
    coarse_highpass: float = 3.0
    # the refinement runs up to this resolution (longer side) and uses at most this many colour
    # black pixels; it is sparse, so full resolution is affordable
    refine_side: int = 2048
    refine_points: int = 30000
    refine_iterations: int = 40
    refine_sigma: float = 1.5
    final_sigma: float = 0.5
    # sigma (level pixels) of the local mean removed from the coarser refinement levels' darkness
    refine_highpass: float = 3.0
    # fit a full affine map (anisotropic scale, shear) on the finest level and on levels at least
    # this large; a similarity below
    affine: bool = True
    affine_side: int = 400
    # residual whiteness at which a colour black pixel counts half (robust weights)
    robust_scale: float = 0.3
    # alternative coarse peaks refined when the best one does not match (different pages pay this)
    candidates: int = 3
    # at least this fraction of the colour ink must land inside the black-and-white page (search
    # and decision: the paper's colour page is only trimmed by "several rows and columns")
    min_overlap: float = 0.6
    # and at least this fraction of the black-and-white page's line ink must lie under the colour
    # page: a scan's margins are blank paper (a little room for trimmed borders and scanner shadows)
    min_bw_overlap: float = 0.8
    # the error's minimum filter radius, in bw pixels
    tolerance_px: int = 1
    # the scan's black: this percentile of its pixels, at most max_black (a page with no solid ink)
    black_percentile: float = 1.0
    max_black: float = 0.35
    threshold: float = 0.25
    # the threshold when the bw scan is coarser than 0.8x the colour page: there the error counts
    # only the whiteness a partly black pixel cannot explain (`_error`), same pages score up to
    # ~0.09 at 0.25x-0.75x and another page of the title 0.17+, so the full-resolution 0.25 would
    # be lax
    coarse_threshold: float = 0.13
    # a page with less black ink than this fraction of its area cannot be matched reliably
    min_ink_fraction: float = 0.002


@dataclass
class MatchResult:
    """What `match_pages` found.

    error: the normalised error that is compared with `threshold` (module docstring; inf when
    nothing could be measured); raw_error: the paper's own, mean bw whiteness under the colour
    black mask; baseline: the same mean under the whole colour footprint, the normaliser;
    coverage: fraction of the colour page's black pixels that land on the bw page; bw_coverage:
    fraction of the bw page's line ink that lies under the colour page;
    transform: colour pixel centres -> bw pixel centres (2x3, for cv2.warpAffine); scale_xy: bw
    pixels per colour pixel along the colour page's x and y axes; reason: why not matched.
    """

    matched: bool
    error: float
    crop: list[float]
    scale: float
    rotation_deg: float
    transform: list[list[float]]
    threshold: float
    raw_error: float = math.nan
    baseline: float = math.nan
    coverage: float = math.nan
    bw_coverage: float = math.nan
    scale_xy: list[float] = field(default_factory=lambda: [math.nan, math.nan])
    reason: str = ""

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.transform, dtype=np.float64)

    def to_json(self) -> dict:
        """The result as a plain dict of Python floats/lists (what manifests store).

        A page that could not be measured (blank, no placement) has error inf and NaN geometry;
        Python's json writes those as Infinity/NaN, and `float()` of every number still works.
        """
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Ink maps


def color_black_mask(color: np.ndarray, cfg: MatchConfig) -> np.ndarray:
    """Step 3 of the paper: the colour page's black pixels (float32 0/1, ready to resample)."""
    brightest = cv2.max(cv2.max(color[..., 0], color[..., 1]), color[..., 2])
    return (brightest < cfg.ink_level).astype(np.float32)


def bw_line_ink(bw: np.ndarray, cfg: MatchConfig) -> np.ndarray:
    """Dark pixels of the black-and-white page that belong to lines or fills, not to screentone
    (float32 0/1)."""
    dark = (bw < cfg.bw_ink_level).astype(np.uint8)
    min_area = max(3, int(round((cfg.dot_size * min(bw.shape)) ** 2)))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_area).astype(np.uint8)
    keep[0] = 0
    return keep.astype(np.float32)[labels]


# ----------------------------------------------------------------------------------------------
# Coordinates: 3x3 homogeneous matrices on pixel-centre coordinates (OpenCV's convention).


def _resize_map(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Pixel-centre coordinates of an image -> those of its resized copy."""
    fy, fx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)


def _h(m23: np.ndarray) -> np.ndarray:
    return np.vstack([m23, [0.0, 0.0, 1.0]])


def _downscale(img: np.ndarray, side: float) -> np.ndarray:
    """Area-resize so the longer side is `side` (never upscales)."""
    h, w = img.shape[:2]
    f = min(1.0, side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _describe(A: np.ndarray, color_hw, bw_hw) -> tuple[list[float], float, float, list[float]]:
    """The paper's terms (crop, scale) and the rotation of a colour -> bw affine map."""
    A = np.asarray(A, np.float64)[:2]
    lin = A[:, :2]
    scale = math.sqrt(abs(np.linalg.det(lin)))
    rotation = math.degrees(math.atan2(lin[1, 0], lin[0, 0]))
    scale_xy = [float(np.hypot(*lin[:, 0])), float(np.hypot(*lin[:, 1]))]
    inv = np.linalg.inv(_h(A))
    hb, wb = bw_hw
    hc, wc = color_hw

    def to_color_edge(x_edge, y_edge):
        p = inv @ np.array([x_edge - 0.5, y_edge - 0.5, 1.0])
        return p[0] + 0.5, p[1] + 0.5

    top = to_color_edge(wb / 2, 0)[1]
    left = to_color_edge(0, hb / 2)[0]
    bottom = hc - to_color_edge(wb / 2, hb)[1]
    right = wc - to_color_edge(wb, hb / 2)[0]
    return [float(top), float(left), float(bottom), float(right)], scale, rotation, scale_xy


def _plausible(A: np.ndarray, s_lo: float, s_hi: float, cfg: MatchConfig) -> bool:
    lin = A[:2, :2]
    if not np.all(np.isfinite(A)) or np.linalg.det(lin) <= 0:
        return False
    sx, sy = np.hypot(*lin[:, 0]), np.hypot(*lin[:, 1])
    s = math.sqrt(sx * sy)
    rot = math.degrees(math.atan2(lin[1, 0], lin[0, 0]))
    shear = abs(float(lin[:, 0] @ lin[:, 1])) / (sx * sy)
    return (
        0.97 * s_lo <= s <= 1.03 * s_hi
        and abs(rot) <= cfg.max_rotation_deg
        and abs(sx / sy - 1) <= cfg.max_anisotropy
        and shear <= cfg.max_anisotropy
    )


# ----------------------------------------------------------------------------------------------
# Search


def _ink_inside(tpl: np.ndarray, shape, pad: tuple[int, int], page_hw: tuple[int, int]) -> np.ndarray:
    """For every template position of matchTemplate over the padded page: the template's total
    inside the unpadded page rectangle (a box sum, so an integral image instead of a second
    cross-correlation)."""
    th, tw = tpl.shape
    S = cv2.integral(tpl.astype(np.float64))
    iy, ix = np.arange(shape[0]), np.arange(shape[1])
    r0, r1 = np.clip(pad[0] - iy, 0, th), np.clip(pad[0] + page_hw[0] - iy, 0, th)
    c0, c1 = np.clip(pad[1] - ix, 0, tw), np.clip(pad[1] + page_hw[1] - ix, 0, tw)
    return S[np.ix_(r1, c1)] - S[np.ix_(r0, c1)] - S[np.ix_(r1, c0)] + S[np.ix_(r0, c0)]


def _coarse_candidates(c_ink, b_ink, s_lo, s_hi, cfg) -> list[tuple[float, np.ndarray]]:
    """Grid search over scale x rotation; every translation at once by cross-correlation.

    Returns (score, 3x3 colour full-res -> bw full-res) for the best, distinct peaks.
    """
    b_small = _downscale(b_ink, cfg.coarse_side)
    to_b = _resize_map(b_ink.shape, b_small.shape)
    s_mid = math.sqrt(s_lo * s_hi)
    # colour at roughly the bw level's density, so the per-candidate warp only changes scale a little
    f = s_mid * b_small.shape[1] / b_ink.shape[1]
    c_small = _downscale(c_ink, f * max(c_ink.shape))
    to_c = _resize_map(c_ink.shape, c_small.shape)
    b_small = cv2.GaussianBlur(b_small, (0, 0), 1.0)
    # the bw ink a placement leaves outside the colour page's footprint (its bounding canvas): a
    # scan's margins are blank, so a colour page shrunk into one dark panel is no placement
    b_total = float(b_small.sum())
    b_sum = cv2.integral(b_small.astype(np.float64))
    # high-pass: lines stay, evenly dark areas (dense tone, hatching, fills) go to ~0, so they no
    # longer attract the colour ink the way they would in a plain overlap count
    b_small = b_small - cv2.GaussianBlur(b_small, (0, 0), cfg.coarse_highpass)
    c_small = cv2.GaussianBlur(c_small, (0, 0), 1.0)

    n_scales = max(1, int(math.ceil(math.log(s_hi / s_lo) / math.log1p(cfg.scale_step))) + 1)
    scales = np.geomspace(s_lo, s_hi, n_scales)
    rotations = [r for r in cfg.rotations_deg if abs(r) <= cfg.max_rotation_deg] or [0.0]

    # Each candidate is a scale and rotation; the template is the colour ink warped by it onto its
    # own bounding canvas, slid over the bw map padded with zeros to find the translation.
    hc, wc = c_small.shape

    def template(s: float, r: float):
        rot = np.array([[math.cos(math.radians(r)), -math.sin(math.radians(r))],
                        [math.sin(math.radians(r)), math.cos(math.radians(r))]])
        # a similarity at full resolution; the two small images' rounded sizes make it
        # slightly anisotropic here, and must not make it anisotropic there
        lin = to_b[:2, :2] @ (s * rot) @ np.linalg.inv(to_c[:2, :2])
        corners = np.array([[-0.5, -0.5], [wc - 0.5, -0.5], [-0.5, hc - 0.5], [wc - 0.5, hc - 0.5]])
        pts = corners @ lin.T
        lo = np.floor(pts.min(axis=0))
        hi = np.ceil(pts.max(axis=0))
        M = np.hstack([lin, (-lo - 0.5)[:, None]])
        return M, (int(hi[0] - lo[0]), int(hi[1] - lo[1]))

    hb, wb = b_small.shape
    # pad for the largest template any (scale, rotation) can make
    sizes = [template(s_hi, r)[1] for r in rotations]
    tw, th = max(z[0] for z in sizes), max(z[1] for z in sizes)
    margin = 0.2 * max(hb, wb)
    py = int(math.ceil(margin + max(0, (th - hb) / 2))) + 1
    px = int(math.ceil(margin + max(0, (tw - wb) / 2))) + 1
    ink_pad = cv2.copyMakeBorder(b_small, py, py, px, px, cv2.BORDER_CONSTANT, value=0)

    def bw_ink_under(size: tuple[int, int], shape) -> np.ndarray:
        """For every template position: the fraction of the bw ink under the template's canvas."""
        tw, th = size
        iy, ix = np.arange(shape[0]) - py, np.arange(shape[1]) - px
        r0, r1 = np.clip(iy, 0, hb), np.clip(iy + th, 0, hb)
        c0, c1 = np.clip(ix, 0, wb), np.clip(ix + tw, 0, wb)
        inside = b_sum[np.ix_(r1, c1)] - b_sum[np.ix_(r0, c1)] - b_sum[np.ix_(r1, c0)] + b_sum[np.ix_(r0, c0)]
        return inside / max(b_total, 1e-6)

    def evaluate(s: float, r: float) -> tuple[float, np.ndarray]:
        M, size = template(s, r)
        tpl = cv2.warpAffine(c_small, M, size, flags=cv2.INTER_LINEAR)
        total = float(tpl.sum())
        if total <= 0:
            return -math.inf, np.eye(3)
        hit = cv2.matchTemplate(ink_pad, tpl, cv2.TM_CCORR)
        den = _ink_inside(tpl, hit.shape, (py, px), (hb, wb))
        # bw line ink per unit of colour ink inside the page; positions that push the colour page
        # off the bw page are excluded rather than rewarded
        ok = (den >= cfg.min_overlap * total) & (bw_ink_under(size, hit.shape) >= cfg.min_bw_overlap)
        score = np.where(ok, hit / np.maximum(den, 1e-6), -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
        T = _h(M)
        T[0, 2] += ix - px
        T[1, 2] += iy - py
        return float(score[iy, ix]), np.linalg.inv(to_b) @ T @ to_c

    # Every scale at the first rotation (0 by default), then the other rotations only around the
    # best few scales: a page a few degrees askew still scores highest near its own scale upright,
    # and this costs half of the full grid.
    upright = min(rotations, key=abs)
    first = [evaluate(s, upright) for s in scales]
    found = list(first)
    others = [r for r in rotations if r != upright]
    if others:
        best = sorted(range(len(scales)), key=lambda i: -first[i][0])
        seeds: list[int] = []
        for i in best:
            if all(abs(i - j) > 1 for j in seeds):
                seeds.append(i)
            if len(seeds) >= cfg.candidates:
                break
        near = sorted({j for i in seeds for j in (i - 1, i, i + 1) if 0 <= j < len(scales)})
        found += [evaluate(scales[j], r) for j in near for r in others]

    found.sort(key=lambda t: -t[0])
    distinct: list[tuple[float, np.ndarray]] = []
    centre = np.array([c_ink.shape[1] / 2, c_ink.shape[0] / 2, 1.0])
    tol = 4.0 * b_ink.shape[1] / b_small.shape[1]
    for score, A in found:
        if not math.isfinite(score):
            continue
        if all(np.linalg.norm((A @ centre - B @ centre)[:2]) > tol for _, B in distinct):
            distinct.append((score, A))
        if len(distinct) >= cfg.candidates:
            break
    return distinct


def _ink_points(c_mask: np.ndarray, n_max: int) -> np.ndarray:
    """Up to n_max colour black pixels (x, y), evenly spread over the page (deterministic)."""
    ys, xs = np.nonzero(c_mask)
    step = max(1, len(xs) // n_max)
    return np.stack([xs[::step], ys[::step]], axis=1).astype(np.float64)


def _sample(maps: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bilinear samples of each channel at points (x, y); outside the page is white and flat."""
    n = len(xy)
    cols = 256  # remap wants a 2-D map with fewer than 32767 rows
    rows = -(-n // cols)
    grid = np.full((rows * cols, 2), -1e4, np.float32)
    grid[:n] = xy
    grid = grid.reshape(rows, cols, 2)
    out = cv2.remap(maps, grid, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(1.0, 0.0, 0.0))
    out = out.reshape(-1, 3)[:n].astype(np.float64)
    return out[:, 0], out[:, 1], out[:, 2]


def _levenberg_marquardt(M: np.ndarray, q: np.ndarray, maps: np.ndarray, cfg: MatchConfig, iterations: int,
                         affine: bool) -> np.ndarray:
    """Minimise sum_i log(1 + (white(M q_i) / tau)^2) over the 2x3 map M on one pyramid level.

    The residual cannot reach zero (blurred lines are grey, some colour ink has no bw
    counterpart), so plain Gauss-Newton overshoots; each step is damped and kept only if the
    cost falls.
    """
    tau = cfg.robust_scale

    def evaluate(M):
        r, gx, gy = _sample(maps, q @ M[:, :2].T + M[:, 2])
        return float(np.log1p((r / tau) ** 2).sum()), r, gx, gy

    cost, r, gx, gy = evaluate(M)
    lam = 1e-3
    for _ in range(iterations):
        w = 1.0 / (1.0 + (r / tau) ** 2)
        if affine:
            J = np.column_stack([gx * q[:, 0], gx * q[:, 1], gx, gy * q[:, 0], gy * q[:, 1], gy])
        else:  # similarity steps: [[a, -b, tx], [b, a, ty]]
            J = np.column_stack([gx * q[:, 0] + gy * q[:, 1], gy * q[:, 0] - gx * q[:, 1], gx, gy])
        H = J.T @ (J * w[:, None])
        g = J.T @ (w * r)
        damping = np.diag(np.diag(H)) + 1e-12 * np.eye(len(g))
        for _ in range(8):
            step = -np.linalg.solve(H + lam * damping, g)
            if affine:
                delta = step.reshape(2, 3)
            else:
                delta = np.array([[step[0], -step[1], step[2]], [step[1], step[0], step[3]]])
            trial = evaluate(M + delta)
            if trial[0] < cost:
                break
            lam *= 4.0
        else:
            return M  # no step lowers the cost: converged
        M = M + delta
        cost, r, gx, gy = trial
        lam = max(lam / 3.0, 1e-6)
        # largest displacement of a point by this step, in level pixels (q lies in [-1, 1])
        if np.abs(delta[:, :2]).sum(axis=1).max() + np.abs(delta[:, 2]).max() < 0.01:
            break
    return M


def _whiteness_pyramid(bw: np.ndarray, cfg: MatchConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(full-res -> level map, [whiteness, d/dx, d/dy]) from the coarse level up to refine_side.

    Area-downscaling turns screentone and hatching into an even grey while lines thinner than a
    level pixel fade, so on coarse levels the grey, not the lines, attracts the colour ink and a
    right placement slides into the darkest panels, shrinking to 0.6-0.8x its scale. So the
    coarsest level is never smaller than the search's (`coarse_side`, which already placed the
    page to about a pixel), and every level but the finest is high-passed like the search's map
    (darkness above its local mean, `refine_highpass` level pixels): even tone goes white, lines
    and the edges of tone and fills (which lie on lines) stay dark.

    Each level is blurred by `refine_sigma` of its own pixels, so a line one or two level pixels
    away from a colour black pixel still has a slope towards it. The finest level is blurred
    less (`final_sigma`): a wide blur mixes the screentone beside a panel border into the border's
    valley and pulls the page inwards (a 0.15% scale bias at sigma 1.5, 0.04% at 0.5).
    """
    hb, wb = bw.shape
    sides = [min(cfg.refine_side, max(hb, wb))]
    while sides[-1] // 2 >= cfg.coarse_side:
        sides.append(sides[-1] // 2)
    white = bw.astype(np.float32) / 255.0
    levels = []
    for side in reversed(sides):
        lvl = _downscale(white, side)
        to_b = _resize_map((hb, wb), lvl.shape)
        if side != sides[0] and cfg.refine_highpass > 0:
            dark = 1.0 - lvl
            lvl = 1.0 - np.clip(dark - cv2.GaussianBlur(dark, (0, 0), cfg.refine_highpass), 0.0, 1.0)
        lvl = cv2.GaussianBlur(lvl, (0, 0), cfg.refine_sigma if side != sides[0] else cfg.final_sigma)
        grad_x = cv2.Sobel(lvl, cv2.CV_32F, 1, 0, ksize=3) / 8
        grad_y = cv2.Sobel(lvl, cv2.CV_32F, 0, 1, ksize=3) / 8
        levels.append((to_b, cv2.merge([lvl, grad_x, grad_y])))
    return levels


def _refine(A: np.ndarray, points: np.ndarray, pyramid, s_lo, s_hi, cfg) -> np.ndarray:
    """Coarse-to-fine minimisation of the paper's error; a level's answer is kept only if plausible."""
    # condition the normal equations: points in [-1, 1]
    centre = points.mean(axis=0)
    spread = float(np.abs(points - centre).max()) or 1.0
    q = (points - centre) / spread
    N = np.array([[1 / spread, 0, -centre[0] / spread], [0, 1 / spread, -centre[1] / spread], [0, 0, 1]])
    for level, (to_b, maps) in enumerate(pyramid):
        M = (to_b @ A @ np.linalg.inv(N))[:2]
        # a scan's anisotropy or shear is only measurable on fine levels; coarse ones fit a similarity
        finest = level == len(pyramid) - 1
        affine = cfg.affine and (finest or max(maps.shape[:2]) >= cfg.affine_side)
        # coarse levels travel, fine levels polish: halve the iteration budget on the way up
        M = _levenberg_marquardt(M, q, maps, cfg, max(5, cfg.refine_iterations >> level), affine)
        candidate = np.linalg.inv(to_b) @ _h(M) @ N
        if _plausible(candidate, s_lo, s_hi, cfg):
            A = candidate  # else this level diverged; the finer ones start again from the last good
    return A


def _whiteness(bw: np.ndarray, cfg: MatchConfig) -> np.ndarray:
    """How far each bw pixel is from the page's own black (0) towards white (1), after a minimum
    filter: a colour black pixel one pixel off its bw line still counts.

    A scan's ink is not 0 (grey paper, scanner gain, JPEG): black is the darkest percentile of the
    page, at most `max_black`. The filter does not grow when the colour page is coarser than the
    scan: a wider minimum turns every screentone black, and a decoy page covered in tone then
    scores like a match.
    """
    k = 2 * cfg.tolerance_px + 1
    counts = np.cumsum(cv2.calcHist([bw], [0], None, [256], [0, 256]).ravel())
    black = min(float(np.searchsorted(counts, cfg.black_percentile / 100 * bw.size)) / 255.0, cfg.max_black)
    white = cv2.erode(bw, np.ones((k, k), np.uint8)).astype(np.float32) / 255.0
    return np.clip((white - black) / (1.0 - black), 0.0, 1.0)


def _error(A: np.ndarray, c_mask: np.ndarray, white: np.ndarray,
           b_ink: np.ndarray) -> tuple[float, float, float, float, float]:
    """Steps 4-5 of the paper at the bw page's resolution.

    Returns (normalised error, raw error, baseline, coverage, bw coverage); coverage is the
    fraction of the colour page's black pixels that land on the bw page, so a placement that
    pushes most of the ink off the page (and so measures almost nothing) can be refused; bw
    coverage the fraction of the bw page's line ink under the colour page, so one that shrinks
    the colour page into a dark corner of the scan, whose margins would then hold ink, can be too.

    When the bw page is coarser than the colour page the mask is area-averaged first: a colour line
    thinner than a bw pixel is only grey in the scan, so a bw pixel counts as under the black mask
    when most of its area is colour black, not when its centre happens to hit a thin line.
    """
    hb, wb = white.shape
    n_color = cv2.countNonZero(c_mask)
    scale = math.sqrt(abs(np.linalg.det(A[:2, :2])))
    if scale < 0.8:
        small = cv2.resize(c_mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        A = A @ np.linalg.inv(_resize_map(c_mask.shape, small.shape))
        c_mask = small
    warped = cv2.warpAffine(c_mask, A[:2], (wb, hb), flags=cv2.INTER_LINEAR)
    mask = (warped > 0.5).astype(np.uint8)
    under = white
    if scale < 0.8:
        # a bw pixel that is a fraction m colour black can only be that dark: count the whiteness
        # beyond 1 - m, per unit of m (1 for a pixel with no ink at all, as at full resolution)
        under = np.clip(white - (1.0 - warped), 0.0, 1.0) / np.maximum(warped, 0.5)
    footprint = cv2.warpAffine(np.ones_like(c_mask), A[:2], (wb, hb), flags=cv2.INTER_LINEAR)
    footprint = (footprint > 0.5).astype(np.uint8)
    n = cv2.countNonZero(mask)
    if n == 0 or cv2.countNonZero(footprint) == 0:
        return math.inf, math.inf, math.nan, 0.0, 0.0
    # coverage: the mask's ink that lands on the page over what would land on an unbounded page
    inside = float(cv2.warpAffine(c_mask, A[:2], (wb, hb), flags=cv2.INTER_LINEAR).sum())
    total = float(c_mask.sum()) * abs(np.linalg.det(A[:2, :2]))
    coverage = min(1.0, inside / max(total, 1e-6)) if n_color else 0.0
    bw_coverage = float(b_ink[footprint > 0].sum()) / max(float(b_ink.sum()), 1.0)
    raw = cv2.mean(under, mask=mask)[0]
    baseline = cv2.mean(white, mask=footprint)[0]
    return raw / max(baseline, 1e-3), raw, baseline, coverage, bw_coverage


def _validate(bw: np.ndarray, color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bw = np.asarray(bw)
    color = np.asarray(color)
    if bw.dtype != np.uint8 or color.dtype != np.uint8:
        raise ValueError(
            f"match_pages expects uint8 pages, got bw {bw.dtype} and colour {color.dtype}; "
            "read them with mangacolor.io.images.read_image"
        )
    if bw.ndim == 3:
        bw = cv2.cvtColor(bw, cv2.COLOR_RGB2GRAY)
    if color.ndim == 2:
        color = np.repeat(color[..., None], 3, axis=2)
    if bw.ndim != 2 or color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(
            f"match_pages expects bw HxW and colour HxWx3, got {bw.shape} and {color.shape}"
        )
    if min(bw.shape) < 16 or min(color.shape[:2]) < 16:
        raise ValueError(f"pages too small to match: bw {bw.shape}, colour {color.shape[:2]}")
    return bw, color


def _unmatched(reason: str, cfg: MatchConfig) -> MatchResult:
    nan = math.nan
    return MatchResult(
        matched=False, error=math.inf, crop=[nan] * 4, scale=nan, rotation_deg=nan,
        transform=[[nan] * 3, [nan] * 3], threshold=cfg.threshold, reason=reason,
    )


def match_pages(bw: np.ndarray, color: np.ndarray, cfg: MatchConfig | None = None) -> MatchResult:
    """Align a colour page onto a black-and-white page and say whether they are the same page.

    `bw` is HxW uint8 (HxWx3 is converted), `color` HxWx3 uint8 (RGB or BGR: only the brightest
    channel is used). Never raises for blank or unrelated pages: they come back unmatched with
    a `reason`.
    """
    cfg = cfg or MatchConfig()
    bw, color = _validate(bw, color)
    c_mask = color_black_mask(color, cfg)
    c_frac = cv2.countNonZero(c_mask) / c_mask.size
    if c_frac < cfg.min_ink_fraction:
        return _unmatched(f"colour page has almost no black pixels ({c_frac:.2%})", cfg)
    b_ink = bw_line_ink(bw, cfg)
    b_frac = cv2.countNonZero(b_ink) / b_ink.size
    if b_frac < cfg.min_ink_fraction:
        return _unmatched(f"black-and-white page has almost no line ink ({b_frac:.2%})", cfg)

    (hb, wb), (hc, wc) = bw.shape, color.shape[:2]
    ratios = (wb / wc, hb / hc)
    s_lo, s_hi = min(ratios) * cfg.scale_range[0], max(ratios) * cfg.scale_range[1]

    candidates = [A for _, A in _coarse_candidates(c_mask, b_ink, s_lo, s_hi, cfg)]
    # the paper's own model, a plain resize of the whole page, is refined too when the two pages
    # have the same shape and no peak is near it: a colour page that lost its thin lines to the
    # downscale may correlate best elsewhere
    plain = _resize_map((hc, wc), (hb, wb))
    centre = np.array([wc / 2, hc / 2, 1.0])
    near = [np.linalg.norm((A @ centre - plain @ centre)[:2]) < 0.02 * max(hb, wb)
            and abs(np.linalg.det(A[:2, :2]) / np.linalg.det(plain[:2, :2]) - 1) < 0.04 for A in candidates]
    if abs(ratios[0] / ratios[1] - 1) <= cfg.max_anisotropy and not any(near):
        candidates.append(plain)

    white = _whiteness(bw, cfg)
    points = _ink_points(c_mask, cfg.refine_points)
    pyramid = _whiteness_pyramid(bw, cfg)
    best = None
    for A0 in candidates:
        A = _refine(A0, points, pyramid, s_lo, s_hi, cfg)
        err, raw, base, coverage, bw_coverage = _error(A, c_mask, white, b_ink)
        if coverage < cfg.min_overlap or bw_coverage < cfg.min_bw_overlap:
            err = math.inf  # nothing much was measured, or the scan's margins hold ink: no match
        threshold = cfg.coarse_threshold if math.sqrt(abs(np.linalg.det(A[:2, :2]))) < 0.8 else cfg.threshold
        # compared by margin to its own threshold, so coarse and fine placements rank fairly
        if best is None or err - threshold < best[0] - best[-1]:
            best = (err, raw, base, coverage, bw_coverage, A, threshold)
        if err <= threshold:
            break  # matched pairs stop at the first peak; only rejections try the others

    err, raw, base, coverage, bw_coverage, A, threshold = best
    crop, scale, rotation, scale_xy = _describe(A, (hc, wc), (hb, wb))
    matched = bool(err <= threshold)
    if matched:
        reason = ""
    elif coverage < cfg.min_overlap:
        reason = f"only {coverage:.0%} of the colour page's black pixels fall on the black-and-white page"
    elif bw_coverage < cfg.min_bw_overlap:
        reason = f"only {bw_coverage:.0%} of the black-and-white page's line ink lies under the colour page"
    else:
        reason = f"error {err:.3f} above threshold {threshold}"
    return MatchResult(
        matched=matched, error=float(err), crop=crop, scale=float(scale), rotation_deg=float(rotation),
        transform=A[:2].tolist(), threshold=threshold, raw_error=float(raw), baseline=float(base),
        coverage=float(coverage), bw_coverage=float(bw_coverage), scale_xy=scale_xy, reason=reason,
    )


def warp_color_to_bw(color: np.ndarray, result: MatchResult, bw_shape: tuple[int, ...]) -> np.ndarray:
    """The colour page resampled onto the bw page's pixel grid (a training pair's target).

    Areas of the bw page the colour page does not cover are white, like the scan's margins.
    """
    if not np.all(np.isfinite(result.matrix)):
        raise ValueError(f"cannot warp with an unmeasured match result ({result.reason})")
    hb, wb = bw_shape[:2]
    A = _h(result.matrix)
    src = color
    scale = math.sqrt(abs(np.linalg.det(A[:2, :2])))
    if scale < 0.8:
        # area-downscale first: warpAffine's bilinear sampling would alias the screen-like detail
        src = cv2.resize(color, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        A = A @ np.linalg.inv(_resize_map(color.shape[:2], src.shape[:2]))
    border = (255,) * (src.shape[2] if src.ndim == 3 else 1)
    return cv2.warpAffine(src, A[:2], (wb, hb), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


@dataclass
class TitleMatch:
    bw_id: Hashable
    color_id: Hashable | None
    result: MatchResult

    def to_json(self) -> dict:
        return {"bw_id": self.bw_id, "color_id": self.color_id, **self.result.to_json()}


def match_title(
    bw_pages: dict[Hashable, np.ndarray],
    color_pages: dict[Hashable, np.ndarray],
    cfg: MatchConfig | None = None,
    neighbours: int = 1,
) -> list[TitleMatch]:
    """Match every bw page of a title with a colour page; one TitleMatch per bw page, in id order.

    A bw page is tried first against the colour page with the same id, then (when that fails and
    `neighbours` > 0) against the colour pages up to `neighbours` places before and after that
    position in the sorted colour ids, nearest first: two sources of a title are often offset by a
    cover or an inserted page. The first match wins and a colour page is used at most once. An
    unmatched bw page reports its lowest-error attempt (matched=False), or color_id None when there
    was nothing left to compare with.
    """
    cfg = cfg or MatchConfig()
    color_ids = sorted(color_pages)
    used: set = set()
    out = []
    for bw_id in sorted(bw_pages):
        # where bw_id sits among the colour ids; with no same id, neighbours start on either side
        pos = bisect.bisect_left(color_ids, bw_id)
        same = pos < len(color_ids) and color_ids[pos] == bw_id
        order = [pos] if same else []
        for d in range(1, neighbours + 1):
            order += [pos - d, pos + d] if same else [pos - d, pos + d - 1]
        tries = [color_ids[j] for j in order if 0 <= j < len(color_ids) and color_ids[j] not in used]
        best: tuple[Hashable, MatchResult] | None = None
        for cid in tries:
            res = match_pages(bw_pages[bw_id], color_pages[cid], cfg)
            if best is None or res.error < best[1].error:
                best = (cid, res)
            if res.matched:
                break
        if best is None:
            out.append(TitleMatch(bw_id, None, _unmatched("no colour page left to compare with", cfg)))
            continue
        if best[1].matched:
            used.add(best[0])
        out.append(TitleMatch(bw_id, best[0], best[1]))
    return out
