"""Snapshot selection: the step-1 snapshots ranked by the colorings they make (replaces the paper's choice by eye).

Each fine-tuned snapshot colorizes a validation slice of real training pages; the snapshots are
ranked by KID (or FID) of those colorings against colour pages, and a person may override the
choice. `load_generator` and `colorize_grey` are how a snapshot colours a page here and in
the pseudolabels.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mangacolor.io.images import encode_png, from_tensor, thumbnail_grid, to_tensor
from mangacolor.io.store import Store, VersionWriter, sha256_bytes
from mangacolor.io.weights import load_weights
from mangacolor.models.colorizer import ColorizerConfig, build_generator, colorize
from mangacolor.stages.colorization.config import SelectionConfig
from mangacolor.stages.colorization.data import fit
from mangacolor.stages.common import Recorded


def load_generator(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A colorizer generator from weights saved by `train_colorizer` (its config is in the metadata)."""
    _, meta = load_weights(path)
    if "generator_config" not in meta:
        raise KeyError(f"{path}: no 'generator_config' in the weights' metadata; expected a file written by train_colorizer")
    return build_generator(ColorizerConfig.from_dict(meta["generator_config"]), path).to(device).eval().requires_grad_(False)


def scaled_page(page: np.ndarray, long_side: int | None, canvas: tuple[int, int] | None = None) -> np.ndarray:
    from mangacolor.data.canvas import resize_to, working_size

    return resize_to(page, working_size(*page.shape[:2], long_side, canvas))


def colorize_grey(generator: torch.nn.Module, page: np.ndarray, draft: torch.Tensor | None = None,
                  long_side: int | None = None, autocast=contextlib.nullcontext, canvas: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 grey page -> uint8 RGB at the page's size; empty hint, optional draft (1,3,h,w) in [-1, 1].

    The generator sees the page on the training `canvas` (the scale it was trained at), at most
    `long_side` long; the colouring is resized back onto the page.
    """
    small = scaled_page(page, long_side, canvas)
    device = next(generator.parameters()).device
    with autocast():
        out = colorize(generator, to_tensor(small)[None].to(device), draft=None if draft is None else draft.to(device))
    rgb = from_tensor(out[0].float().cpu())
    return fit(rgb, page.shape[:2])


@dataclass
class Ranking:
    table: pd.DataFrame  # step, epoch, fid, kid_mean, kid_std, rank (1 = best)
    colorings: dict[int, list[np.ndarray]]  # snapshot step -> its colorings of the validation pages
    feature_extractor: str
    random_init: bool
    notes: list[str]


def feature_extractor(cfg: SelectionConfig, device: torch.device, cache_dir: str | Path | None = None):
    """The FID/KID feature network of `cfg.inception`; raises WeightsNotFoundError naming the missing file."""
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import build_inception

    return FeatureExtractor(build_inception(cfg.inception), resize=cfg.resize, batch_size=cfg.batch_size,
                            device=device, cache_dir=cache_dir)


def rank_snapshots(
    snapshots: Sequence[tuple[int, int, Path]],
    validation: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    cfg: SelectionConfig,
    device: torch.device,
    extractor=None,
    progress: Callable[[str], None] | None = None,
    autocast=contextlib.nullcontext,
    canvas: tuple[int, int] | None = None,
) -> Ranking:
    """Colorize `validation` (real grey pages) with each snapshot (step, epoch, weights) and rank the
    snapshots by `cfg.metric` of their colorings against `reference` colour pages (lower is better).

    Without an `extractor` (`feature_extractor(cfg, ...)`) the colorings are made but not scored:
    every metric is NaN and the ranking falls back to the latest snapshot first.
    """
    from mangacolor.eval.fid import metric_report

    say = progress or (lambda _m: None)
    ref_feats = extractor(list(reference)) if extractor is not None else None
    rows, colorings, notes = [], {}, set()
    for step, epoch, path in snapshots:
        generator = load_generator(path, device)
        pages = [colorize_grey(generator, p, long_side=cfg.long_side, autocast=autocast, canvas=canvas) for p in validation]
        colorings[step] = pages
        row = {"step": step, "epoch": epoch, "fid": float("nan"), "kid_mean": float("nan"), "kid_std": float("nan")}
        if extractor is not None:
            report = metric_report(ref_feats, extractor(pages), feature_extractor=extractor.description, resize=extractor.resize,
                                   random_init=extractor.random_init, kid_subsets=cfg.kid_subsets,
                                   kid_subset_size=cfg.kid_subset_size, n_boot=0, fid_method=cfg.fid_method)
            notes.update(report.notes)
            row |= {"fid": report.fid, "kid_mean": report.kid_mean, "kid_std": report.kid_std}
        rows.append(row)
        say(f"snapshot step {step}: fid {row['fid']:.3f} kid {row['kid_mean']:.5f}")
    table = pd.DataFrame(rows)
    key = "kid_mean" if cfg.metric == "kid" else "fid"
    # Ties (and NaNs) go to the later snapshot: it has seen more data.
    order = table.assign(_nan=table[key].isna()).sort_values(["_nan", key, "step"], ascending=[True, True, False])
    table["rank"] = 0
    table.loc[order.index, "rank"] = range(1, len(table) + 1)
    if extractor is None:
        return Ranking(table.sort_values("rank").reset_index(drop=True), colorings, "none", False, ["not scored: no feature network"])
    return Ranking(table.sort_values("rank").reset_index(drop=True), colorings, extractor.description,
                   extractor.random_init, sorted(notes))


def choose(ranking: pd.DataFrame, keep: int, override: Sequence[int] | None) -> list[int]:
    """The snapshot steps to keep: the person's `override` (snapshot steps) or the `keep` best ranked."""
    known = list(ranking["step"])
    if override:
        unknown = [s for s in override if s not in known]
        if unknown:
            raise ValueError(f"override names snapshot steps {unknown}, but the snapshots are at steps {sorted(known)}")
        return list(dict.fromkeys(int(s) for s in override))
    return [int(s) for s in ranking.sort_values("rank")["step"].head(keep)]


def write_selection(writer: VersionWriter, ranking: Ranking, chosen: Sequence[int], weights: dict[int, Path],
                    validation: Sequence[np.ndarray], grid_pages: int = 4) -> dict[int, np.ndarray]:
    """One manifest row per snapshot (its scores, rank, grid; weights copied in when chosen); returns the grids.

    `order` is the position among the chosen (0 = best, the one step 2 and the fine-tune start from).
    """
    grids = {}
    for row in ranking.table.to_dict("records"):
        step = int(row["step"])
        grids[step] = grid = coloring_grid(validation[:grid_pages], ranking.colorings[step][:grid_pages])
        grid_png = encode_png(grid)
        out = {"id": f"snapshot:{step:08d}", "title": None, "page": None, "status": "ok", "reason": None, "role": "ranking",
               **{k: (int(v) if k in ("step", "epoch", "rank") else float(v)) for k, v in row.items()},
               "selected": step in chosen, "order": chosen.index(step) if step in chosen else None,
               "grid_path": writer.write(f"grids/step-{step:08d}.png", grid_png), "path": None, "sha256": sha256_bytes(grid_png),
               "random_init": ranking.random_init, "feature_extractor": ranking.feature_extractor}
        if step in chosen:
            data = Path(weights[step]).read_bytes()
            out |= {"path": writer.write(f"weights/step-{step:08d}.safetensors", data), "sha256": sha256_bytes(data)}
        writer.add(out)
    return grids


def coloring_grid(pages: Sequence[np.ndarray], colorings: Sequence[np.ndarray], height: int = 128) -> np.ndarray:
    """Each page beside its coloring, the pairs side by side: one strip per snapshot."""
    tiles = [t for pair in zip(pages, colorings) for t in pair]
    return thumbnail_grid(tiles, height=height)


def record_selection(st: Store, ranking: Ranking, chosen: list[int], weights: dict[int, Path], validation: Sequence[np.ndarray],
                     validation_ids: Sequence[str], metric: str, override: bool) -> tuple[Recorded, pd.DataFrame, dict[int, np.ndarray]]:
    """The `selected_snapshots` version: (its Recorded, the ranking with a `selected` column, each snapshot's grid)."""
    writer = st.begin("selected_snapshots")
    grids = write_selection(writer, ranking, chosen, weights, validation)
    version, vdir, _ = writer.seal(salt=json.dumps({"selected": chosen, "validation": list(validation_ids)}))
    table = ranking.table.assign(selected=ranking.table["step"].isin(chosen))
    return Recorded(version, vdir, {
        "selected_steps": list(chosen), "override": override, "metric": metric, "validation_pages": len(validation),
        "feature_extractor": ranking.feature_extractor, "random_init": ranking.random_init,
    }), table, grids
