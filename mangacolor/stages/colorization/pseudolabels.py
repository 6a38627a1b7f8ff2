"""Pseudolabels for self-training (paper §III training scheme, §IV-B-3).

The selected snapshots colorize the real training pages, several distinct colorings per page: each
snapshot's automatic coloring is inverted into the Coloring Latent Space (its draft is what step 2
sees with it), and further colorings follow drafts whose colour rows are mixed with random CLS
vectors, so the labels differ in palette and teach the network to follow a draft.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mangacolor.io.images import encode_png, from_tensor, read_image, to_tensor
from mangacolor.io.store import Store, VersionWriter, sha256_bytes
from mangacolor.models.colorizer import colorize
from mangacolor.stages.colorization.config import PseudolabelConfig
from mangacolor.stages.colorization.data import fit
from mangacolor.stages.colorization.selection import load_generator, scaled_page
from mangacolor.stages.common import Recorded


def _page_seed(seed: int, page_id: str, k: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{page_id}:{k}".encode()).digest()[:4], "little")


@dataclass
class PseudolabelSummary:
    pages: int
    colorings: int
    per_page: int
    draft_source: str  # inversion_encoder | none
    notes: list[str]
    quarantined: int = 0


@dataclass
class _Page:
    """What a reading worker hands over: the page at the generator's working size, and its own size."""

    id: str
    small: np.ndarray
    shape: tuple[int, int]


@dataclass
class _Coloring:
    k: int
    step: int
    kind: str
    label: np.ndarray
    draft: np.ndarray | None


def _colorize_batch(generator: torch.nn.Module, pages: Sequence[_Page], draft: torch.Tensor | None, autocast) -> list[np.ndarray]:
    """`colorize_grey` of pages of one working size at once: uint8 RGB, each at its page's size."""
    device = next(generator.parameters()).device
    bw = torch.stack([to_tensor(p.small) for p in pages]).to(device)
    with autocast():
        out = colorize(generator, bw, draft=None if draft is None else draft.to(device))
    return [fit(from_tensor(o.float().cpu()), p.shape) for o, p in zip(out, pages)]


def _pseudolabel_batch(pages: Sequence[_Page], generators, per_page: int, inversion, seed: int, device, autocast) -> list[list[_Coloring]]:
    """The `per_page` colorings of each of `pages` (one working size), made a batch at a time (see make_pseudolabels)."""
    from mangacolor.drafting.sampling import mix

    s = len(generators)
    out: list[list[_Coloring]] = [[] for _ in pages]
    w_base: list[torch.Tensor | None] = []
    for k in range(per_page):
        step, generator = generators[k % s]
        drafts = None
        if k < s:
            labels = _colorize_batch(generator, pages, None, autocast)
            kind, w_plus = "auto", None
            if inversion is not None:
                with torch.no_grad():
                    w_plus = inversion.encode(torch.cat([inversion.prepare(to_tensor(label)[None].to(device)) for label in labels]))
                    drafts = inversion.synthesize(w_plus)
                kind = "auto+inverted_draft"
            w_base.append(w_plus)
        else:
            # Seeded by (seed, page, k): the same CLS vector whatever batch the page falls in.
            z = torch.cat([torch.randn(1, inversion.decoder.style_dim, generator=torch.Generator().manual_seed(_page_seed(seed, p.id, k)))
                           for p in pages]).to(device)
            with torch.no_grad():
                drafts = inversion.synthesize(mix(w_base[k % s], inversion.decoder.get_latent(z)))
            labels = _colorize_batch(generator, pages, drafts, autocast)
            kind = "mixed_draft"
        for j, label in enumerate(labels):
            out[j].append(_Coloring(k, int(step), kind, label, None if drafts is None else from_tensor(drafts[j].float().cpu())))
    return out


def make_pseudolabels(
    store: Store,
    pages: pd.DataFrame,
    snapshots: Sequence[tuple[int, Path]],
    writer: VersionWriter,
    cfg: PseudolabelConfig,
    device: torch.device,
    inversion=None,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    autocast=contextlib.nullcontext,
    canvas: tuple[int, int] | None = None,
) -> PseudolabelSummary:
    """Colorize each real page (rows with id, title, page, uri) `cfg.colorings_per_page` times.

    Coloring k of a page is made by snapshot k mod S. The first S are the snapshots' automatic
    colorings (empty hint and draft); with an inversion encoder each is inverted into W+ and its
    draft stored beside it (what step 2 feeds with that label, as the colour pages' drafts are
    their inversions). Colorings k ≥ S need drafts to differ: the k-th inverted W+ gets its colour
    rows from a random CLS vector and the snapshot colorizes the page with that draft. Without an
    inversion encoder a page gets at most S colorings, one per snapshot.

    Pages are read and brought to the working size in `cfg.num_workers` worker processes and
    colorized `cfg.batch_size` pages of one working size at a time; labels are encoded and written
    in page order by a background thread. An unreadable page is quarantined with its reason.
    """
    from mangacolor.io.pagemap import OutputThread, map_pages

    generators = [(step, load_generator(path, device)) for step, path in snapshots]
    s = len(generators)
    per_page = cfg.colorings_per_page if inversion is not None else min(cfg.colorings_per_page, s)
    notes = []
    if per_page < cfg.colorings_per_page:
        notes.append(f"{per_page} colorings per page instead of {cfg.colorings_per_page}: without the inversion encoder "
                     "colorings can only differ by snapshot")
    summary = PseudolabelSummary(0, 0, per_page, "inversion_encoder" if inversion is not None else "none", notes)

    def load(row: dict) -> _Page:
        page = read_image(store.read_bytes(row["uri"]), mode="L")
        return _Page(row["id"], scaled_page(page, cfg.long_side, canvas), page.shape[:2])

    def run(batch: list[_Page]) -> list[list[_Coloring]]:
        return _pseudolabel_batch(batch, generators, per_page, inversion, seed, device, autocast)

    def write(row: dict, page: _Page, colorings: list[_Coloring]) -> None:
        for c in colorings:
            data = encode_png(c.label)
            stem = f"{row['title']}/{row['page']}-{c.k}"
            out = {"id": f"{row['id']}#{c.k}", "title": row["title"], "page": row["page"], "source_uri": row["uri"],
                   "path": writer.write(f"labels/{stem}.png", data), "width": page.shape[1], "height": page.shape[0],
                   "sha256": sha256_bytes(data), "status": "ok", "reason": None, "role": "pseudolabel_bw",
                   "bw_id": row["id"], "page_id": row["id"], "snapshot": c.step, "coloring": c.k, "kind": c.kind, "draft_path": None}
            if c.draft is not None:
                out["draft_path"] = writer.write(f"drafts/{stem}.png", encode_png(c.draft))
            writer.add(out)
            summary.colorings += 1
        summary.pages += 1

    def quarantine(row: dict, reason: str) -> None:
        writer.add({"id": row["id"], "title": row["title"], "page": row["page"], "source_uri": row["uri"], "path": None,
                    "status": "quarantined", "reason": reason, "bw_id": row["id"]})
        summary.quarantined += 1

    records = pages.to_dict("records")
    with OutputThread() as output:
        for n, item in enumerate(map_pages(records, load, run, cfg.batch_size, cfg.num_workers, group=lambda p: p.small.shape), 1):
            if item.reason is None:
                output.submit(write, item.row, item.value, item.result)
            else:
                output.submit(quarantine, item.row, item.reason)
            if progress is not None:
                progress(n, item.row["id"])
    return summary


def skip_pseudolabels(st: Store, cfg) -> Recorded:
    """`pseudolabels` without self-training: an empty version that says so."""
    version, vdir, _ = st.begin("pseudolabels").seal(salt="self_training: false")
    return Recorded(version, vdir, {"skipped": True, "variant": cfg.variant.name(),
                                    "note": "colorizer.variant.self_training is false: no pseudolabels"})


def pseudolabel_facts(summary: PseudolabelSummary, snapshots: Sequence[int], variant: str) -> dict:
    """What a `pseudolabels` version holds (`snapshots`: the steps of the snapshots that made it)."""
    return {"pages": summary.pages, "quarantined": summary.quarantined, "colorings": summary.colorings,
            "colorings_per_page": summary.per_page, "snapshots": list(snapshots), "draft_source": summary.draft_source,
            "variant": variant}


def first_page_labels(st: Store, vdir: str, frame: pd.DataFrame) -> tuple[list[np.ndarray], str]:
    """The first labelled page of a version, its colorings and their drafts, with a caption: what the asset shows."""
    labelled = frame[frame["status"] == "ok"] if len(frame) else frame
    first = labelled[labelled["bw_id"] == labelled["bw_id"].iloc[0]].sort_values("coloring") if len(labelled) else labelled
    shown = [read_image(st.read_bytes(first["source_uri"].iloc[0]))] if len(first) else []
    shown += [read_image(st.read_bytes(f"{vdir}/{p}")) for p in first["path"]]
    shown += [read_image(st.read_bytes(f"{vdir}/{p}")) for p in first["draft_path"] if isinstance(p, str)]
    return shown, f"{first['bw_id'].iloc[0] if len(first) else ''}: page | its colorings | their drafts"
