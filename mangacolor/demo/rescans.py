"""Hard re-scans of demo-corpus pages with a known transform (tests and benchmarks of the matcher).

A colour page drawn by the demo corpus's renderer and a black-and-white scan of the same drawing
(re-lettered, as another edition would be) taken at another resolution (0.25x-4x the colour page),
with wide white margins, a rotation of a few degrees, scanner blur and noise, JPEG compression and
the screentone resampled to the scan's grid (moire when the scan is coarser than the tone).

`real_pair` draws what real sources do on top (issue 20): the artwork exists at a resolution at
least as fine as either edition, and each edition is a resize of it by a non-integer factor with
its own resampling filter (area, bilinear, bicubic, Lanczos or nearest), so the colour page's thin
lines are grey and the black-and-white page's screentone aliases into moire; both ends are JPEG;
the tone style varies; and a pair is either a plain resize (no margins, rotation or scanner) or a
scan.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mangacolor.demo.corpus import TONE_STYLES, render_page

FILTERS = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}


def scan_transform(color_hw, ratio: float, rotation_deg: float, margins) -> tuple[np.ndarray, tuple[int, int]]:
    """colour pixel centres -> scan pixel centres (2x3) and the scan's (h, w).

    The drawing is scaled by `ratio`, rotated about its centre, and placed so its rotated bounding
    box has `margins` = [top, left, bottom, right] white margins, each a fraction of the scan's side.
    """
    hc, wc = color_hw
    t = math.radians(rotation_deg)
    L = ratio * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = np.array([[0, 0], [wc, 0], [0, hc], [wc, hc]], float) @ L.T
    box_w, box_h = np.ptp(corners[:, 0]), np.ptp(corners[:, 1])
    top, left, bottom, right = margins
    wb = int(round(box_w / (1 - left - right)))
    hb = int(round(box_h / (1 - top - bottom)))
    # edge coordinates: the box's corner goes to (left * wb, top * hb)
    shift = np.array([left * wb, top * hb]) - corners.min(axis=0)
    # pixel centres: x_edge = x + 0.5 on both sides
    trans = shift + L @ [0.5, 0.5] - 0.5
    return np.hstack([L, trans[:, None]]), (hb, wb)


def _resize_map(src_hw, dst_hw) -> np.ndarray:
    """3x3: pixel centres of an image -> those of its resize to dst_hw."""
    fy, fx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip (colour pages as RGB, with the encoder's usual 4:2:0 chroma)."""
    if img.ndim == 2:
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
    bgr = cv2.imdecode(cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


def scan_pair(seed: int, ratio: float, rotation_deg: float = 0.0, margins=(0.0, 0.0, 0.0, 0.0),
              color_size: tuple[int, int] = (384, 256), jpeg: int = 80, layout_seed: int | None = None,
              *, color_jpeg: int = 90, supersample: float = 1.0, filters: tuple[str, str] = ("area", "area"),
              tone: str = "fine", scanner: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bw scan uint8, colour page RGB uint8, true 2x3 colour -> scan).

    The page is drawn once at `supersample` times the finer of the two resolutions, so the
    screentone is as fine as a printed page's and each edition resamples it: the colour page is
    resized from there with filters[1], the scan with filters[0] (then rotated and placed with
    bilinear sampling when there is a rotation or margin). scanner: blur, grey paper and noise on
    the scan; without it, no margins and no rotation, the scan is a plain resize of the drawing and
    the truth is the exact resize map between the two pages' sizes. jpeg, color_jpeg: qualities of
    the two ends. layout_seed: draw the scan from another page (a decoy) of the same series instead.
    """
    state = np.random.default_rng([seed, 14])
    art = int(state.integers(2**62))
    letters = [np.random.default_rng(int(state.integers(2**62))) for _ in range(2)]
    hc, wc = color_size
    fine = max(1.0, ratio) * supersample
    # the drawing changes with the size it is rendered at, so both editions are rendered at the
    # finer resolution and each is resized from there
    fine_hw = (int(round(hc * fine)), int(round(wc * fine)))
    color = render_page(np.random.default_rng(art), size=fine_hw, hue=20.0, tone=tone, text_rng=letters[0]).color
    if fine_hw != tuple(color_size):
        color = cv2.resize(color, (wc, hc), interpolation=FILTERS[filters[1]])
    bw_art = np.random.default_rng(art if layout_seed is None else layout_seed)
    bw_src = render_page(bw_art, size=fine_hw, hue=20.0, tone=tone, text_rng=letters[1]).bw
    plain = rotation_deg == 0 and not any(margins)
    if plain:  # one resize, as an editor or a downloader does it
        A, (hb, wb) = scan_transform(color_size, ratio, 0.0, margins)
        A = _resize_map(color_size, (hb, wb))[:2]
        scan = bw_src if (hb, wb) == fine_hw else cv2.resize(bw_src, (wb, hb), interpolation=FILTERS[filters[0]])
    else:
        A, (hb, wb) = scan_transform(color_size, ratio, rotation_deg, margins)
        # colour -> bw_src is a pure resize by `fine`; warp bw_src by A composed with its inverse
        W = np.vstack([A, [0, 0, 1]]) @ np.linalg.inv(_resize_map(color_size, fine_hw))
        W_scale = math.sqrt(abs(np.linalg.det(W[:2, :2])))
        if W_scale < 1 or filters[0] != "area":  # resample to the scan's grid first, as a sensor does
            small = cv2.resize(bw_src, None, fx=W_scale, fy=W_scale, interpolation=FILTERS[filters[0]])
            W = W @ np.linalg.inv(_resize_map(bw_src.shape, small.shape))
            bw_src = small
        scan = cv2.warpAffine(bw_src, W[:2], (wb, hb), flags=cv2.INTER_LINEAR, borderValue=255)
    if scanner:
        rng = np.random.default_rng([seed, 15])
        scan = cv2.GaussianBlur(scan.astype(np.float32), (0, 0), 0.6)
        scan = np.clip(scan * 0.93 + 12 + rng.normal(0, 4, scan.shape), 0, 255).astype(np.uint8)
    return _jpeg(scan, jpeg), _jpeg(color, color_jpeg), A


# the resolution ratios (scan / colour) of `benchmarks/matching.py --hard`: powers of two and the
# non-integer ratios real sources have (1.3, 1.9 and 2.1 were real pages that failed, issue 20)
HARD_RATIOS = (0.25, 0.4, 0.5, 0.75, 1.0, 1.3, 1.9, 2.1, 3.7, 4.0)


def real_pair(seed: int, ratio: float, decoy: bool = False, plain: bool | None = None,
              color_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(bw, colour, true 2x3, conditions): a pair drawn as real sources make them (module docstring).

    Everything but the ratio is drawn from `seed`: the artwork's resolution (1-1.6x the finer
    edition, whose lines are then 1.25-2 px wide like a real page's at scan resolution; finer, every
    line would be a hairline that the scanner's blur greys), each end's filter and JPEG quality
    (60-92), the tone style, and for a scan (`plain` False; by default every other seed) a rotation
    within 3 degrees and margins up to 20% of each side. decoy: the scan is another page of the
    same title (same conditions), which must not match. color_size: by default the demo's small
    pages (fast, for tests); `benchmarks/matching.py --hard` passes real page sizes.
    """
    rng = np.random.default_rng([seed, 20, int(round(ratio * 1000))])
    names = list(FILTERS)
    plain = seed % 2 == 0 if plain is None else plain
    conditions = {
        "filters": (names[int(rng.integers(len(names)))], names[int(rng.integers(len(names)))]),
        "supersample": float(rng.uniform(1.0, 1.6)),
        "jpeg": int(rng.integers(60, 93)),
        "color_jpeg": int(rng.integers(60, 93)),
        "tone": TONE_STYLES[int(rng.integers(len(TONE_STYLES)))],
        "rotation_deg": 0.0 if plain else float(rng.uniform(-3, 3)),
        "margins": (0.0,) * 4 if plain else tuple(float(m) for m in rng.uniform(0, 0.2, 4)),
    }
    if color_size is None:
        # a coarse scan against a finer colour page; a fine scan against a demo-size colour page
        color_size = (768, 512) if ratio < 1 else (384, 256)
    bw, color, A = scan_pair(
        seed, ratio, conditions["rotation_deg"], conditions["margins"], color_size=color_size,
        jpeg=conditions["jpeg"], layout_seed=10_000 + seed if decoy else None, color_jpeg=conditions["color_jpeg"],
        supersample=conditions["supersample"], filters=conditions["filters"], tone=conditions["tone"],
        scanner=not plain,
    )
    return bw, color, A, conditions


def corner_error(found: np.ndarray, true: np.ndarray, color_hw) -> float:
    """Largest displacement (scan pixels) between where the two maps send the colour page's corners."""
    h, w = color_hw
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    return float(np.abs(np.asarray(found)[:2] @ corners - np.asarray(true)[:2] @ corners).max())
