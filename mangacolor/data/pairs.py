"""Build the matched black-and-white/colour training pairs of a set of titles (paper §IV-A-2).

Pages are paired by title and page name; each candidate is aligned by `matching.match_pages` and
kept when its error is under the threshold. Matched pairs store the colour page warped onto the
black-and-white page's pixel grid (what fine-tuning trains on); rejected candidates stay in the
manifest with their best error, so a threshold can be revisited without re-running the search.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from mangacolor.data.matching import MatchConfig, match_pages, warp_color_to_bw
from mangacolor.io.images import ImageError, encode_png, read_image
from mangacolor.io.store import Store, VersionWriter, safe_part, sha256_bytes


def match_pairs(
    bw: pd.DataFrame,
    color: pd.DataFrame,
    store: Store,
    writer: VersionWriter,
    cfg: dict | None = None,
    progress: Callable[[int, str], None] | None = None,
    n_samples: int = 3,
) -> tuple[dict, list[np.ndarray]]:
    """bw / color: ok manifest rows with `title`, `page`, `id`, `uri`. Writes aligned colour pages."""
    mcfg = MatchConfig(**(cfg or {}))
    color_by_key = {(r.title, r.page): r for r in color.itertuples()}
    stats = {"candidates": 0, "matched": 0, "rejected": 0}
    samples: list[np.ndarray] = []
    for n, b in enumerate(bw.sort_values("id").itertuples(), 1):
        c = color_by_key.get((b.title, b.page))
        if c is None:
            continue
        stats["candidates"] += 1
        row = {"id": b.id, "title": b.title, "page": b.page, "bw_id": b.id, "color_id": c.id,
               "bw_uri": b.uri, "source_uri": c.uri}
        try:
            bw_img = read_image(store.read_bytes(b.uri), mode="L")
            color_img = read_image(store.read_bytes(c.uri), mode="RGB")
        except ImageError as exc:
            row.update(status="quarantined", reason=exc.reason, matched=False)
            writer.add(row)
            continue
        result = match_pages(bw_img, color_img, mcfg)
        info = result.to_json()
        row.update(matched=bool(info["matched"]), error=float(info["error"]), scale=float(info["scale"]),
                   crop=json.dumps(info["crop"]), rotation_deg=float(info.get("rotation_deg", 0.0)),
                   transform=json.dumps(info.get("transform")), height=bw_img.shape[0], width=bw_img.shape[1])
        if result.matched:
            aligned = warp_color_to_bw(color_img, result, bw_img.shape[:2])
            data = encode_png(aligned)
            row.update(path=writer.write(f"pairs/{safe_part(b.title)}/{safe_part(b.page)}.png", data),
                       sha256=sha256_bytes(data), status="ok", reason=None)
            stats["matched"] += 1
            if len(samples) < n_samples * 2:
                samples += [bw_img, aligned]
        else:
            reason = getattr(result, "reason", None) or f"alignment error {result.error:.4f} above threshold {info.get('threshold')}"
            row.update(status="rejected", reason=reason, sha256=None, path=None)
            stats["rejected"] += 1
        writer.add(row)
        if progress:
            progress(n, b.id)
    return stats, samples
