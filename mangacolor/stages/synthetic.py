"""The synthetic black-and-white pages over store manifests (paper §IV-A-3, steps 1-3): what the assets call.

The three steps turn every colour page into a black-and-white page that looks printed, so that the
colorizer gets (synthetic black-and-white, colour) training pairs:

1. `xdog_stage`: xDoG line art of each colour page (`mangacolor.synthetic.xdog`), after a colour
   jitter of the colour page (Appendix B: "we apply this augmentation to the color images before
   preprocessing", so that no colour feature survives into the synthetic pages), seeded by the page id.
2. the refiner, trained on `RefinerPairs` = (xDoG of a real black-and-white page, that page), then
   applied to the step-1 pages with `translate_stage`.
3. CUT, trained on crops of the refined pages (source) and of real pages (target), then applied to
   whole refined pages with `translate_stage`.

Every output row keeps `source_id`, the id of the colour page it was made from, so later stages
pair a synthetic page with its colour page. Real pages come from `training_bw_rows`: the train
split only, the holdout is never read. `stage_gap` measures how far a stage's pages are from those
real pages (`mangacolor.eval.gap.synthetic_gap`), so each step's progress is a number.

The per-title stages stream: pages are decoded in worker processes a few units ahead
(`mangacolor.io.pagemap`), run through xDoG or the network (on a GPU in same-size batches, on the
CPU in the workers), and each output is written as it comes, so memory does not grow with the
pages of a title; `gap_pages` chooses the compared pages from the manifest before reading any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mangacolor.config import stage_config
from mangacolor.data.datasets import ManifestImages
from mangacolor.eval.gap import synthetic_gap
from mangacolor.io.files import write_atomic
from mangacolor.io.images import ImageError, encode_png, read_image
from mangacolor.io.pagemap import WORKERS_HELP, OutputThread, map_batches, size_batches
from mangacolor.io.store import Store, VersionWriter, ok_rows, safe_part, sha256_bytes
from mangacolor.stages.common import PageSummary, model_weights, real_training_rows
from mangacolor.synthetic.xdog import PRESETS, XDoGConfig, XDoGError, xdog

# --- configuration -------------------------------------------------------------------------------


class XDoGStageConfig(BaseModel):
    """Preset section `xdog:`: which parameter set of `mangacolor.synthetic.xdog.PRESETS`, and changes to it."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("authors2021", description="authors2021 (the paper's [38]), alacgan or generic")
    overrides: dict[str, float | int | bool | list[float]] = Field(default_factory=dict, description="e.g. {sigma: 0.6}")
    color_jitter: dict[str, float] | None = Field(
        default_factory=lambda: {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
        description="Appendix B: brightness/contrast/saturation jitter of each colour page before xDoG (the paper gives no "
                    "magnitudes: those of the input jitter); null: none")

    def xdog_config(self) -> XDoGConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"preset section xdog: unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.overrides.items()}
        try:
            return XDoGConfig.preset(self.preset, **values)
        except TypeError as exc:
            raise ValueError(f"preset section xdog.overrides: {exc}; known keys are the fields of XDoGConfig") from exc


class GapConfig(BaseModel):
    """Preset section `synthetic_gap:`: how each synthetic stage is compared with the real pages."""

    model_config = ConfigDict(extra="forbid")

    inception: str = Field("auto", description="auto (user-placed FID weights), random (demo/tests), a .pth path, or none")
    max_pages: int | None = Field(500, description="pages per side, drawn by a fixed seed (FID features are the slow part)")
    fid_method: Literal["eig", "sqrtm"] = "eig"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = 8
    seed: int = 0


# --- which pages -----------------------------------------------------------------------------------


def training_bw_rows(store: Store) -> pd.DataFrame:
    """The ok black-and-white pages of the train split (`page_splits`), with `uri`, by id; never the holdout."""
    rows = real_training_rows(store)
    if rows.empty:
        raise ValueError("no black-and-white training pages: materialize bw_pages and page_splits first")
    return rows


def subsample(rows: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most n rows, the same ones for the same input (sorted by id, then a seeded draw)."""
    rows = rows.sort_values("id").reset_index(drop=True)
    if n is None or len(rows) <= n:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    return rows.iloc[keep].reset_index(drop=True)


def read_grey(store: Store, rows: pd.DataFrame) -> list[np.ndarray]:
    return [read_image(store.read_bytes(uri), mode="L") for uri in rows["uri"]]


def gap_pages(store: Store, rows: pd.DataFrame, cfg: GapConfig) -> ManifestImages:
    """The grey pages `stage_gap` compares: chosen from the manifest first (`cfg.max_pages` by `cfg.seed`,
    the draw `stage_gap` would make), then read on access, so a title is never decoded at once."""
    return ManifestImages(store, subsample(rows, cfg.max_pages, cfg.seed), mode="L")


# --- the per-page stages ---------------------------------------------------------------------------


class PageStageConfig(BaseModel):
    """Preset section `synthetic_pages:`: how the per-title stages spread their pages over processes and batches.

    What the stages write does not depend on these (`tests/stages/test_synthetic_page_stages.py`), except
    that a batched forward pass on a GPU may round a pixel differently (±1 grey level) from one page
    at a time, as floating-point sums in another order do.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1, description="pages of one size per forward pass of the refiner / CUT on a GPU, "
                                                 "and per unit of work of a worker")
    workers: int | None = Field(None, ge=0, description=WORKERS_HELP + "; on the CPU they also run xDoG or the network")


@dataclass
class _Done:
    """One page's outcome: PNG bytes and size (made in a worker), the page itself (a network here: encoded by the
    writer thread), or why it was quarantined."""

    index: int
    data: bytes | None = None
    shape: tuple[int, int] | None = None
    reason: str | None = None
    page: np.ndarray | None = None


def _jobs(rows: pd.DataFrame) -> list[dict]:
    """The ok rows in id order, each with its output row stub (`out`) and a unique file `name`."""
    jobs, used = [], set()
    for row in rows.sort_values("id").to_dict("records"):
        name = safe_part(str(row["page"]).replace("/", "-").rsplit(".", 1)[0])
        while name in used:
            name += "_"
        used.add(name)
        # The chain keeps the colour page's identity: step 1 reads colour rows, later steps carry it over.
        source_id = row.get("source_id") or row["id"]
        source_sha = row.get("source_sha256") or row.get("sha256")
        out = {"id": row["id"], "title": row["title"], "page": row["page"], "source_uri": row["uri"],
               "source_id": source_id, "source_sha256": source_sha}
        jobs.append({"row": row, "out": out, "name": name})
    return jobs


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)


def _finish(index: int, page: np.ndarray) -> _Done:
    return _Done(index, encode_png(page), (int(page.shape[0]), int(page.shape[1])))


def _write(jobs: list[dict], results, writer: VersionWriter,
           progress: Callable[[int, str], None] | None) -> PageSummary:
    """Write each page as its batch arrives, encoded (when a network here made it) and stored by a writer thread while
    the next batch runs; the manifest rows go in id order at the end (they are small)."""
    summary, rows, n = PageSummary(), {}, 0

    def store(done: _Done, job: dict) -> None:
        data = done.data if done.data is not None else encode_png(done.page)
        path = writer.write(f"pages/{job['name']}.png", data)
        shape = done.shape or (int(done.page.shape[0]), int(done.page.shape[1]))
        rows[done.index] = {**job["out"], "path": path, "height": shape[0], "width": shape[1], "sha256": sha256_bytes(data),
                            "status": "ok", "reason": None}

    with OutputThread() as output:
        for done_batch in results:
            for done in done_batch:
                job = jobs[done.index]
                if done.data is None and done.page is None:
                    rows[done.index] = {**job["out"], "status": "quarantined", "reason": done.reason}
                    summary.quarantined += 1
                else:
                    output.submit(store, done, job)
                    summary.ok += 1
                n += 1
                if progress:
                    progress(n, job["out"]["id"])
    for i in sorted(rows):
        writer.add(rows[i])
    return summary


def page_seed(page_id: str, salt: str = "color_jitter") -> int:
    """A seed for one page's random choices: the same page gets the same draw whatever else is in its title."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{page_id}".encode()).digest()[:4], "little")


def xdog_stage(rows: pd.DataFrame, store: Store, writer: VersionWriter, config: XDoGConfig,
               progress: Callable[[int, str], None] | None = None, color_jitter: dict | None = None,
               workers: int | None = None) -> PageSummary:
    """Step 1: xDoG of each colour page (ok rows of `color_pages`, with `uri`); what xDoG refuses is quarantined.

    `color_jitter` (ColorPageJitter keywords; None: none) jitters each colour page first, seeded by its id.
    Pages are read, jittered, drawn and encoded in `workers` processes (`mangacolor.io.pagemap`), one
    page a unit, and written here as they come: a title is never in memory at once.
    """
    jitter = None
    if color_jitter is not None:
        from mangacolor.data.augment import color_page_jitter

        jitter = color_page_jitter(**color_jitter)
    jobs = _jobs(rows)

    def make(batch: list[int]) -> list[_Done]:
        done = []
        for i in batch:
            row = jobs[i]["row"]
            try:
                image = read_image(store.read_bytes(row["uri"]), mode=None)
                if jitter is not None:
                    rgb = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
                    image = jitter(np.ascontiguousarray(rgb), seed=page_seed(str(row["id"])))
                done.append(_finish(i, xdog(image, config)))
            except (ImageError, XDoGError) as exc:
                done.append(_Done(i, reason=_reason(exc)))
        return done

    batches = [[i] for i in range(len(jobs))]
    return _write(jobs, map_batches(lambda batch: batch, make, batches, workers=workers), writer, progress)


def translate_stage(rows: pd.DataFrame, store: Store, writer: VersionWriter,
                    network: Callable[[list[np.ndarray]], list[np.ndarray]],
                    progress: Callable[[int, str], None] | None = None, *, batch_size: int = 8,
                    workers: int | None = None, batched: bool = False) -> PageSummary:
    """Steps 2 and 3: a page->page network (uint8 HxW pages of one size in, as many out) over the grey pages of the previous step.

    Pages are grouped by size (the manifest's `height`/`width`; a unit whose pages turn out to differ
    is split by size) into units of at most `batch_size`, decoded in `workers` processes and written
    as they come. `batched` (a GPU): the network runs here, one forward pass per unit. Otherwise (the
    CPU) it runs in the workers, one page a pass, so the pages written do not depend on `batch_size`
    or `workers` at all.

    An unreadable page is quarantined; a network error (out of memory, a broken model) stops the
    stage, because it would otherwise quarantine every page of the title for one cause.
    """
    jobs = _jobs(rows)
    sizes = [(j["row"].get("height"), j["row"].get("width")) for j in jobs]
    batches = size_batches([None if any(pd.isna(v) for v in hw) else hw for hw in sizes], batch_size)

    def load(batch: list[int]) -> list[tuple[int, np.ndarray | None, str | None]]:
        loaded = []
        for i in batch:
            try:
                loaded.append((i, read_image(store.read_bytes(jobs[i]["row"]["uri"]), mode="L"), None))
            except ImageError as exc:
                loaded.append((i, None, _reason(exc)))
        return loaded

    def apply(loaded: list[tuple[int, np.ndarray | None, str | None]]) -> list[_Done]:
        done = {i: _Done(i, reason=reason) for i, page, reason in loaded if page is None}
        by_size: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, page, _ in loaded:
            if page is not None:
                by_size.setdefault(page.shape, []).append((i, page))
        for group in by_size.values():
            if batched:  # here, beside the GPU: the writer thread encodes
                outs = network([page for _, page in group])
                done |= {i: _Done(i, page=out) for (i, _), out in zip(group, outs)}
            else:  # in a worker: encoded there, in parallel
                outs = [network([page])[0] for _, page in group]
                done |= {i: _finish(i, out) for (i, _), out in zip(group, outs)}
        return [done[i] for i, _, _ in loaded]

    results = map_batches(load, apply, batches, workers=workers, apply_in_workers=not batched)
    return _write(jobs, results, writer, progress)


# --- the refiner's pairs ---------------------------------------------------------------------------


class RefinerPairs(Sequence):
    """(xDoG of a real black-and-white page, that page) as aligned uint8 HxW arrays, read on access.

    The xDoG side is cached as PNG under `cache_dir`, keyed by the page's content and the xDoG
    parameters: the paper's 7x upscaled xDoG costs seconds a page, so it is computed once per page
    (`prepare`) and a resumed training run finds it again.
    """

    def __init__(self, store: Store, rows: pd.DataFrame, config: XDoGConfig, cache_dir: str | Path):
        self.store = store
        self.ids = list(rows["id"])
        self.uris = list(rows["uri"])
        self.shas = list(rows["sha256"]) if "sha256" in rows else [None] * len(rows)
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.tag = hashlib.sha256(repr(config).encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.uris)

    def _cached(self, i: int, data: bytes) -> Path:
        sha = self.shas[i] or sha256_bytes(data)
        return self.cache_dir / f"{sha[:32]}-{self.tag}.png"

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        data = self.store.read_bytes(self.uris[i])
        real = read_image(data, mode="L")
        path = self._cached(i, data)
        if path.exists():
            line = read_image(path, mode="L")
        else:
            line = xdog(real, self.config)
            write_atomic(path, encode_png(line))
        return line, real

    def prepare(self, progress: Callable[[int, str], None] | None = None) -> None:
        """Compute every missing xDoG now rather than inside the training loop."""
        for i in range(len(self)):
            self[i]
            if progress:
                progress(i + 1, self.ids[i])


# --- the trained steps: what the assets run in their process and the torchrun worker in every rank ----

# Loop settings of the refiner and CUT that do not change what a step computes: a retry (or more `steps`)
# with other values resumes.
LOOP_ONLY = {"steps", "log_every", "sample_every", "checkpoint_every"}


def translate_pages(preset: dict, spec, rows: pd.DataFrame, st: Store, writer: VersionWriter,
                    network: Callable[[list[np.ndarray]], list[np.ndarray]],
                    progress: Callable[[int, str], None] | None = None) -> PageSummary:
    """`translate_stage` as the preset's `synthetic_pages:` asks: batches through the network on a GPU, processes on the CPU."""
    import torch

    spread = stage_config(preset, "synthetic_pages", PageStageConfig)
    return translate_stage(rows, st, writer, network, progress, batch_size=spread.batch_size, workers=spread.workers,
                           batched=torch.device(spec.device).type != "cpu")


# Steps 2 and 3 over one title: the asset translated -> (the previous step's asset, the model asset that translates).
TRANSLATIONS = {"refined_pages": ("xdog_pages", "refiner_model"), "synthetic_bw_pages": ("refined_pages", "cut_model")}


def _network(model_asset: str, weights: Path, spec) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The trained refiner or CUT generator in `weights` as a page -> page function of a batch of one size."""
    if model_asset == "refiner_model":
        from mangacolor.models.refiner import refine_batch
        from mangacolor.training.refiner import load_refiner

        model = load_refiner(weights, spec.device)
        return lambda pages: refine_batch(model, pages, amp_dtype=spec.amp_dtype)
    from mangacolor.models.cut import apply_cut_batch
    from mangacolor.training.cut import load_cut_generator

    generator = load_cut_generator(weights, spec.device)
    return lambda pages: apply_cut_batch(generator, pages, amp_dtype=spec.amp_dtype)


def translate_title(st: Store, preset: dict, spec, asset: str, title: str,
                    progress: Callable[[int], Callable[[int, str], None] | None] = lambda total: None) -> tuple[VersionWriter, PageSummary]:
    """Step 2 (`refined_pages`) or 3 (`synthetic_bw_pages`) of one title: the previous step's pages through the latest
    trained network, written to a new version of `asset` (not sealed). `progress(total)` gives the page progress."""
    source, model_asset = TRANSLATIONS[asset]
    rows = ok_rows(st, source, [title])
    with model_weights(st, model_asset) as path:
        network = _network(model_asset, path, spec)
    writer = st.begin(asset, title)
    return writer, translate_pages(preset, spec, rows, st, writer, network, progress(len(rows)))


def refiner_pairs(st: Store, preset: dict, work: Path):
    """(loop config, xDoG config, training rows, (xDoG, page) pairs cached under `work`) of the refiner."""
    from mangacolor.training.refiner import RefinerTrainConfig

    cfg = stage_config(preset, "refiner", RefinerTrainConfig)
    xcfg = stage_config(preset, "xdog", XDoGStageConfig)
    rows = training_bw_rows(st)
    return cfg, xcfg, rows, RefinerPairs(st, rows, xcfg.xdog_config(), work / "xdog")


def refiner_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress) -> dict:
    """The refiner loop (the asset has prepared the xDoG cache under `work`)."""
    from mangacolor.training.refiner import train_refiner

    cfg, _, _, pairs = refiner_pairs(st, preset, work)
    return train_refiner(cfg, pairs, work, spec, tracker, progress=progress)


def cut_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress) -> dict:
    """The CUT loop from the refined pages of `titles` to the real training pages."""
    from mangacolor.training.cut import CUTTrainConfig, train_cut

    cfg = stage_config(preset, "cut", CUTTrainConfig)
    source, target = ok_rows(st, "refined_pages", titles), training_bw_rows(st)
    return train_cut(cfg, ManifestImages(st, source, mode="L"), ManifestImages(st, target, mode="L"), work, spec, tracker,
                     progress=progress)


# --- models in the store -------------------------------------------------------------------------


# --- how far from real pages ---------------------------------------------------------------------


def stage_gap(synth: Sequence[np.ndarray], real: Sequence[np.ndarray], cfg: GapConfig, extractor=None) -> dict:
    """`synthetic_gap` of synthetic vs real grey pages, subsampled to `cfg.max_pages` a side by `cfg.seed`."""
    def pick(pages):
        if cfg.max_pages is None or len(pages) <= cfg.max_pages:
            return pages  # a lazy sequence (`gap_pages`) stays lazy
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(pages), cfg.max_pages, replace=False))
        return [pages[i] for i in keep]

    return synthetic_gap(pick(synth), pick(real), extractor, kid_subsets=cfg.kid_subsets,
                         kid_subset_size=cfg.kid_subset_size, fid_method=cfg.fid_method, seed=cfg.seed)


GAP_COLUMNS = ("gap", "hist_w1", "halftone_diff", "ink_diff", "fid", "kid_mean")


def gaps_by_step(steps: dict[str, Sequence[np.ndarray]], real: Sequence[np.ndarray], cfg: GapConfig, extractor=None) -> pd.DataFrame:
    """One row per step (in order), `stage_gap` against the same real pages: does each step bring the pages closer?"""
    return pd.DataFrame([{"step": name, **stage_gap(pages, real, cfg, extractor)} for name, pages in steps.items()])


def gap_extractor(cfg: GapConfig, device="cpu", cache_dir: str | Path | None = None):
    """The FID feature extractor `cfg.inception` asks for, or None for weight-free statistics only."""
    if cfg.inception == "none":
        return None
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import build_inception

    return FeatureExtractor(build_inception(cfg.inception), batch_size=cfg.batch_size, device=device, cache_dir=cache_dir)


# --- the same page through every step --------------------------------------------------------------


def stage_strip(store: Store, stages: Sequence[tuple[str, str]], ids: Sequence[str],
                extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """For each page id: its image in each (asset, partition) that has it, then `extra[id]`, in order."""
    found: list[dict[str, str]] = []
    for asset, partition in stages:
        try:
            rows = ok_rows(store, asset, [partition])
        except FileNotFoundError:
            continue
        found.append(dict(zip(rows["id"], rows["uri"])))
    images = []
    for page_id in ids:
        for uris in found:
            if page_id in uris:
                images.append(read_image(store.read_bytes(uris[page_id]), mode=None))
        if extra and page_id in extra:
            images.append(extra[page_id])
    return images
