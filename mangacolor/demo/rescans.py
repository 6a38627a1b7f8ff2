"""Hard re-scans of demo-corpus pages with a known transform (tests and benchmarks of the matcher).

A colour page drawn by the demo corpus's renderer and a black-and-white scan of the same drawing
(re-lettered, as another edition would be) taken at another resolution (0.25x-4x the colour page),
with wide white margins, a rotation of a few degrees, scanner blur and noise, JPEG compression and
the screentone resampled to the scan's grid (moire when the scan is coarser than the tone).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mangacolor.demo.corpus import render_page


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


def scan_pair(seed: int, ratio: float, rotation_deg: float = 0.0, margins=(0.0, 0.0, 0.0, 0.0),
              color_size: tuple[int, int] = (384, 256), jpeg: int = 80, layout_seed: int | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bw scan uint8, colour page RGB uint8, true 2x3 colour -> scan).

    The page is drawn once at the finer of the two resolutions, so the screentone is as fine as a
    printed page's and a coarser scan resamples it (area averaging, then the scanner's blur).
    layout_seed: draw the scan from another page (a decoy) of the same series instead.
    """
    state = np.random.default_rng([seed, 14])
    art = int(state.integers(2**62))
    letters = [np.random.default_rng(int(state.integers(2**62))) for _ in range(2)]
    hc, wc = color_size
    fine = max(1.0, ratio)
    # the scan's drawing is rendered at the finer of the two resolutions
    fine_hw = (int(round(hc * fine)), int(round(wc * fine)))
    # the drawing changes with the size it is rendered at, so both editions are rendered at the
    # finer resolution and the colour page is area-resized from there
    color = render_page(np.random.default_rng(art), size=fine_hw, hue=20.0, text_rng=letters[0]).color
    if fine_hw != tuple(color_size):
        color = cv2.resize(color, (wc, hc), interpolation=cv2.INTER_AREA)
    bw_art = np.random.default_rng(art if layout_seed is None else layout_seed)
    bw_src = render_page(bw_art, size=fine_hw, hue=20.0, text_rng=letters[1]).bw
    A, (hb, wb) = scan_transform(color_size, ratio, rotation_deg, margins)
    # colour -> bw_src is a pure resize by `fine`; warp bw_src by A composed with its inverse
    to_src = np.array([[fine, 0, 0.5 * fine - 0.5], [0, fine, 0.5 * fine - 0.5], [0, 0, 1]])
    W = np.vstack([A, [0, 0, 1]]) @ np.linalg.inv(to_src)
    if ratio < 1:  # area-average first, as a scanner's sensor does, then place
        W_scale = math.sqrt(abs(np.linalg.det(W[:2, :2])))
        small = cv2.resize(bw_src, None, fx=W_scale, fy=W_scale, interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / bw_src.shape[1], small.shape[0] / bw_src.shape[0]
        to_small = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
        W = W @ np.linalg.inv(to_small)
        bw_src = small
    rng = np.random.default_rng([seed, 15])
    scan = cv2.warpAffine(bw_src, W[:2], (wb, hb), flags=cv2.INTER_LINEAR, borderValue=255)
    scan = cv2.GaussianBlur(scan.astype(np.float32), (0, 0), 0.6)
    scan = np.clip(scan * 0.93 + 12 + rng.normal(0, 4, scan.shape), 0, 255).astype(np.uint8)
    scan = cv2.imdecode(cv2.imencode(".jpg", scan, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_GRAYSCALE)
    color = cv2.imdecode(cv2.imencode(".jpg", color[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                         cv2.IMREAD_COLOR)[..., ::-1]
    return scan, np.ascontiguousarray(color), A


def corner_error(found: np.ndarray, true: np.ndarray, color_hw) -> float:
    """Largest displacement (scan pixels) between where the two maps send the colour page's corners."""
    h, w = color_hw
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    return float(np.abs(np.asarray(found)[:2] @ corners - np.asarray(true)[:2] @ corners).max())
