"""The drafting stage over store manifests (paper §III-A, §IV-B-1/2, §IV-C-1/2): what the drafting assets call.

1. `blur_stage`: every colour page resized to 256x256 and blurred (`mangacolor.drafting.blur`); rows
   keep `source_id` / `source_uri`, the colour page they were made from.
2. StyleGAN2 is trained on `SquarePages` of those pages (`mangacolor.training.stylegan`); its EMA
   generator is measured by `generator_report` (FID/KID against the blurred pages, a truncation grid).
3. Two pSp encoders into its W+ (`mangacolor.training.psp`), both on `DraftPairs` whose target is
   the blurred colour page: the inversion encoder reads the colour page (`inversion_rows`), the
   drafting network a black-and-white version of it (`drafting_rows`: the synthetic page made from
   it, or its grey conversion when there is none).
4. `drafts_stage`: coloring drafts of the colour training pages made with the *inversion* encoder
   (§IV-B-3: the drafting network would overfit its own training pages), each with its W+ code;
   `page_drafts_stage`: drafts of the real black-and-white training pages made with the drafting
   network, the S that step 1 gives real pages (eq. 9).
5. the drafting network's second round (§III: "in the end, we train the drafting network ... with
   synthetic data and real data with pseudolabels"): `pseudolabel_draft_rows` adds the real pages
   with their pseudolabels, blurred as the colour pages are, to the synthetic pairs. The first round
   (synthetic pairs only) exists because step 1 needs drafts of real pages before any pseudolabel:
   drafting_network -> bw_page_drafts -> step 1 -> pseudolabels -> drafting_network_final.

Both draft stages read pages in DataLoader worker processes and run the encoder and StyleGAN
synthesis on batches (`mangacolor.io.pagemap.map_pages`); PNGs are encoded and written in a background thread, in page
order, so what is written does not depend on the number of workers or the batch size.

Every encoder input is resized to the paper's 256x256 first (X_res, Y_res of Appendix C); the
encoder itself then resizes to its `input_size`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import save as save_safetensors

from mangacolor.config import stage_config
from mangacolor.device import DeviceSpec
from mangacolor.drafting.blur import BlurConfig, blur_page, detail_kept, resize_square
from mangacolor.io.pagemap import WORKERS_HELP, Mapped, OutputThread, map_pages
from mangacolor.io.images import ImageError, encode_png, from_tensor, read_image, to_tensor
from mangacolor.io.store import UNPARTITIONED, Store, VersionWriter, ok_rows, safe_part, sha256_bytes
from mangacolor.models.psp import PSp, load_psp
from mangacolor.stages.common import WEIGHTS_PATH, PageSummary, local_file, weights_row
from mangacolor.models.stylegan2 import Generator
from mangacolor.training.psp import PSpTrainConfig
from mangacolor.training.stylegan import StyleGANTrainConfig, sample_grid

RANDOM_INIT_NOTE = "random-init Inception: not comparable to published FID"
GREY_FALLBACK_NOTE = "trained on grey conversions: synthetic_bw_pages not materialized"
LATENTS_FILE = "latents.safetensors"
# Loop settings that do not change what a step computes: a retry with other values (or more steps) resumes.
STYLEGAN_LOOP_ONLY = {"iterations", "log_every", "sample_every", "checkpoint_every", "n_samples", "truncations"}
PSP_LOOP_ONLY = {"epochs", "log_every", "sample_every", "checkpoint_every", "n_samples"}


# --- configuration -------------------------------------------------------------------------------


class GeneratorReportConfig(BaseModel):
    """Preset `stylegan.report:`: how the trained generator is measured and shown."""

    model_config = ConfigDict(extra="forbid")

    fid_samples: int = Field(1000, ge=2, description="generated images, and at most as many blurred pages")
    inception: str = Field("auto", description="auto (user-placed FID weights), random (demo/tests) or a .pth path")
    resize: str = "bilinear-torch"
    fid_method: str = "sqrtm"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    n_boot: int = 0
    batch_size: int = 16
    truncations: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.5, 0.0])
    grid_columns: int = 6
    seed: int = 0


class DraftsConfig(BaseModel):
    """Preset section `coloring_drafts:`."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(256, description="side of the stored draft PNG (the paper's S is 256x256)")
    batch_size: int = Field(8, ge=1, description="pages through the encoder and StyleGAN synthesis at once")
    num_workers: int | None = Field(None, ge=0, description=WORKERS_HELP)


def stylegan_config(preset: dict) -> tuple[StyleGANTrainConfig, GeneratorReportConfig]:
    """The `stylegan:` section: training fields (StyleGANTrainConfig) plus its `report:` subsection."""
    section = dict(preset.get("stylegan") or {})
    report = GeneratorReportConfig.model_validate(section.pop("report", None) or {})
    return stage_config({"stylegan": section}, "stylegan", StyleGANTrainConfig), report


def psp_config(preset: dict, section: str, input_nc: int) -> PSpTrainConfig:
    """A pSp section with the input channels its role fixes (3: inversion encoder, 1: drafting network)."""
    cfg = stage_config(preset, section, PSpTrainConfig)
    given = (preset.get(section) or {}).get("input_nc")
    if given is not None and given != input_nc:
        raise ValueError(f"preset section {section!r}: input_nc is {input_nc} for this network, got {given}; remove the key")
    return dataclasses.replace(cfg, input_nc=input_nc)


# --- 1. blurred pages ----------------------------------------------------------------------------


@dataclass
class StageSummary(PageSummary):
    detail_kept: list[float] = field(default_factory=list)  # per blurred page: how much detail the blur kept


def _page_name(row: dict, used: set[str]) -> str:
    name = safe_part(str(row["page"]).replace("/", "-").rsplit(".", 1)[0])
    while name in used:
        name += "_"
    used.add(name)
    return name


def blur_stage(rows: pd.DataFrame, store: Store, writer: VersionWriter, cfg: BlurConfig,
               progress: Callable[[int, str], None] | None = None, n_shown: int = 3) -> StageSummary:
    """Blurred (size x size) colour page per ok row of `color_pages`; unreadable pages are quarantined."""
    summary, used = StageSummary(), set()
    for n, row in enumerate(rows.sort_values("id").to_dict("records"), 1):
        out = {"id": row["id"], "title": row["title"], "page": row["page"], "source_uri": row["uri"],
               "source_id": row["id"], "source_sha256": row.get("sha256")}
        try:
            page = read_image(store.read_bytes(row["uri"]), mode="RGB")
            blurred = blur_page(page, cfg.size, cfg.sigma)
        except ImageError as exc:
            writer.add({**out, "status": "quarantined", "reason": exc.reason})
            summary.quarantined += 1
        else:
            data = encode_png(blurred)
            path = writer.write(f"pages/{_page_name(row, used)}.png", data)
            kept = detail_kept(page, blurred)
            writer.add({**out, "path": path, "width": cfg.size, "height": cfg.size, "sha256": sha256_bytes(data),
                        "status": "ok", "reason": None, "detail_kept": kept})
            summary.ok += 1
            summary.detail_kept.append(kept)
            if len(summary.shown) < 2 * n_shown:
                summary.shown += [page, blurred]
        if progress:
            progress(n, row["id"])
    return summary


# --- datasets ------------------------------------------------------------------------------------


class SquarePages(torch.utils.data.Dataset):
    """uint8 (size, size, 3) pages from store uris: StyleGAN's training images.

    Decoded pages are kept in memory while they fit in `cache_bytes` (the demo's whole set does),
    so the thousands of reads of a training run hit the store once per page.
    """

    def __init__(self, store: Store, uris: list[str], size: int, cache_bytes: int = 512 * 2**20):
        self.store, self.uris, self.size = store, list(uris), size
        self._cache: dict[int, np.ndarray] | None = {} if len(self.uris) * size * size * 3 <= cache_bytes else None

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image = resize_square(read_image(self.store.read_bytes(self.uris[i]), mode="RGB"), self.size)
        if self._cache is not None:
            self._cache[i] = image
        return image


class DraftPairs(torch.utils.data.Dataset):
    """(input page, blurred colour page), both uint8 resized to size x size: pSp's training pairs.

    `input_mode` "RGB" for the inversion encoder, "L" for the drafting network (a colour input read
    with "L" is its grey conversion, ITU-R 601 luma).
    """

    def __init__(self, store: Store, rows: pd.DataFrame, input_mode: str, size: int = 256, sigma: float = 8.0):
        self.store, self.size, self.input_mode, self.sigma = store, size, input_mode, sigma
        self.input_uris, self.target_uris = list(rows["input_uri"]), list(rows["uri"])
        self.ids = list(rows["id"])
        # Rows whose target is a sharp colouring (a pseudolabel) are blurred like blurred_color_pages.
        self.blur = list(rows["blur_target"].fillna(False).astype(bool)) if "blur_target" in rows else [False] * len(rows)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        x = resize_square(read_image(self.store.read_bytes(self.input_uris[i]), mode=self.input_mode), self.size)
        y = read_image(self.store.read_bytes(self.target_uris[i]), mode="RGB")
        y = blur_page(y, self.size, self.sigma) if self.blur[i] else resize_square(y, self.size)
        return x, y


def blurred_rows(store: Store, titles: list[str]) -> pd.DataFrame:
    """Ok rows of `blurred_color_pages` for `titles`, sorted by id, with `uri`."""
    rows = ok_rows(store, "blurred_color_pages", titles)
    return rows.sort_values("id").reset_index(drop=True)


def inversion_rows(store: Store, titles: list[str]) -> pd.DataFrame:
    """Inversion encoder pairs: the colour page each blurred page was made from -> that blurred page."""
    rows = blurred_rows(store, titles)
    rows["input_uri"] = rows["source_uri"]
    rows["input_kind"] = "colour"
    return rows


def drafting_rows(store: Store, titles: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Drafting network pairs: the synthetic black-and-white page made from a colour page -> its blurred page.

    A title without `synthetic_bw_pages` (or a page without a synthetic version) falls back to the grey
    conversion of the colour page. Returns (rows, titles that fell back entirely).
    """
    rows = blurred_rows(store, titles)
    synthetic = [t for t in titles if store.latest_version("synthetic_bw_pages", t)]
    by_source: dict[str, str] = {}
    if synthetic:
        syn = ok_rows(store, "synthetic_bw_pages", synthetic)
        by_source = dict(zip(syn["source_id"], syn["uri"]))
    rows["input_uri"] = [by_source.get(s, u) for s, u in zip(rows["source_id"], rows["source_uri"])]
    rows["input_kind"] = ["synthetic" if s in by_source else "grey" for s in rows["source_id"]]
    grey_titles = sorted(set(rows.loc[rows["input_kind"] == "grey", "title"]) - set(synthetic))
    return rows, grey_titles


def pseudolabel_draft_rows(store: Store) -> pd.DataFrame:
    """Drafting-network pairs from the latest `pseudolabels`: real black-and-white page -> its pseudolabel,
    blurred on reading (`blur_target`). Empty when there are none (self-training off)."""
    columns = ["id", "title", "page", "input_uri", "uri", "sha256", "input_kind", "blur_target"]
    if store.latest_version("pseudolabels") is None:
        return pd.DataFrame(columns=columns)
    vdir = store.latest_dir("pseudolabels")
    frame = store.read_manifest(vdir)
    if "bw_id" not in frame:
        return pd.DataFrame(columns=columns)
    frame = frame[frame["status"] == "ok"]
    return pd.DataFrame({"id": frame["id"].values, "title": frame["title"].values, "page": frame["page"].values,
                         "input_uri": frame["source_uri"].values, "uri": [f"{vdir}/{p}" for p in frame["path"]],
                         "sha256": frame["sha256"].values, "input_kind": "pseudolabel", "blur_target": True})[columns]


# --- 2. the generator's report -------------------------------------------------------------------


@dataclass
class GeneratorReport:
    metrics: object  # mangacolor.eval.fid.MetricReport
    reals: list[np.ndarray]
    fakes: list[np.ndarray]
    grid: np.ndarray


@torch.no_grad()
def generate(g_ema: Generator, n: int, seed: int = 0, batch_size: int = 16, truncation: float = 1.0) -> list[np.ndarray]:
    """n uint8 images from seeded z (no global RNG)."""
    device = g_ema.input.input.device
    z = torch.randn(n, g_ema.style_dim, generator=torch.Generator().manual_seed(seed))
    mean = g_ema.mean_latent(4096, torch.Generator().manual_seed(seed)) if truncation < 1 else None
    out = []
    for i in range(0, n, batch_size):
        images, _ = g_ema([z[i : i + batch_size].to(device)], truncation=truncation, truncation_latent=mean,
                          randomize_noise=False)
        out += [from_tensor(im) for im in images]
    return out


def generator_report(g_ema: Generator, reals: torch.utils.data.Dataset, cfg: GeneratorReportConfig,
                     device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> GeneratorReport:
    """FID/KID of `cfg.fid_samples` generated images against as many blurred pages (at the generator's
    size, drawn by a fixed seed), and a truncation grid (one row per psi)."""
    from mangacolor.eval.fid import FeatureExtractor, compute_fid_kid
    from mangacolor.eval.inception import build_inception

    g_ema = g_ema.eval()
    n_real = min(cfg.fid_samples, len(reals))
    if n_real < 2:
        raise ValueError(f"generator_report: need at least 2 blurred pages to compare with, got {len(reals)}")
    pick = np.sort(np.random.default_rng(cfg.seed).choice(len(reals), n_real, replace=False))
    real_images = [reals[int(i)] for i in pick]
    fakes = generate(g_ema, cfg.fid_samples, cfg.seed, cfg.batch_size)
    extractor = FeatureExtractor(build_inception(cfg.inception), resize=cfg.resize, batch_size=cfg.batch_size,
                                 device=device, cache_dir=cache_dir, progress=progress)
    metrics = compute_fid_kid(real_images, fakes, extractor, kid_subsets=cfg.kid_subsets,
                              kid_subset_size=cfg.kid_subset_size, n_boot=cfg.n_boot, seed=cfg.seed,
                              fid_method=cfg.fid_method)
    z = torch.randn(cfg.grid_columns, g_ema.style_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    grid = sample_grid(g_ema, z.to(g_ema.input.input.device), cfg.truncations, cfg.seed)
    return GeneratorReport(metrics, real_images, fakes, grid)


# --- 4. coloring drafts --------------------------------------------------------------------------


@torch.no_grad()
def invert_pages(psp: PSp, pages: list[np.ndarray], spec: DeviceSpec, batch_size: int = 8) -> tuple[list[np.ndarray], torch.Tensor]:
    """Pages (uint8, any size) -> (drafts uint8 at the generator's size, W+ (N, n_latent, style_dim) fp32 on CPU)."""
    psp = psp.eval()
    drafts, codes = [], []
    for i in range(0, len(pages), batch_size):
        chunk = pages[i : i + batch_size]
        if len({p.shape for p in chunk}) == 1:  # one size (the stages resize first): one transfer, one resize
            x = torch.stack([to_tensor(p) for p in chunk])
            if spec.device.type == "cuda":
                x = x.pin_memory()
            batch = psp.prepare(x.to(spec.device, non_blocking=True))
        else:
            batch = torch.cat([psp.prepare(to_tensor(p)[None].to(spec.device)) for p in chunk])
        with spec.autocast():
            images, w_plus = psp(batch)
        drafts += [from_tensor(im) for im in images]
        codes.append(w_plus.float().cpu())
    empty = torch.zeros(0, psp.n_latent, psp.decoder.style_dim)
    return drafts, (torch.cat(codes) if codes else empty)


def preview_triples(psp: PSp, pairs: DraftPairs, spec: DeviceSpec, n: int = 3) -> list[np.ndarray]:
    """[input, blurred target, draft] for the first n pairs, flattened: what an encoder's metadata shows."""
    shown = [pairs[i] for i in range(min(n, len(pairs)))]
    drafts, _ = invert_pages(psp, [x for x, _ in shown], spec)
    return [image for (x, y), d in zip(shown, drafts) for image in (x, y, d)]


@dataclass
class DraftSummary(PageSummary):
    mse: list[float] = field(default_factory=list)  # per draft: its mean squared error to the blurred page
    latent_shape: tuple[int, int] | None = None


def _drafted(records: list[dict], load: Callable[[dict], tuple], psp: PSp, spec: DeviceSpec, batch_size: int,
             num_workers: int | None, writer: VersionWriter, summary: DraftSummary, finish: Callable[[Mapped], None],
             progress: Callable[[int, str], None] | None) -> None:
    """The loop both draft stages share: `load(row)` (in workers) gives a tuple whose first item is the
    encoder's input, resized; batches go through `psp`; `finish(item)` (in the output thread, in row
    order) writes a drafted page, whose `result` is (draft, W+). Unreadable pages are quarantined."""

    def run(values: list[tuple]) -> list:
        drafts, codes = invert_pages(psp, [v[0] for v in values], spec, len(values))
        return list(zip(drafts, codes))

    def quarantine(item: Mapped) -> None:
        writer.add({**item.row["out"], "status": "quarantined", "reason": item.reason})
        summary.quarantined += 1

    with OutputThread() as output:
        for n, item in enumerate(map_pages(records, load, run, batch_size, num_workers), 1):
            output.submit(finish if item.reason is None else quarantine, item)
            if progress:
                progress(n, item.row["id"])


def drafts_stage(rows: pd.DataFrame, store: Store, writer: VersionWriter, psp: PSp, cfg: DraftsConfig,
                 spec: DeviceSpec, input_size: int = 256, progress: Callable[[int, str], None] | None = None,
                 n_shown: int = 3) -> DraftSummary:
    """Drafts of the colour pages behind `rows` (blurred_color_pages rows: `source_uri`, `source_id`, `uri`).

    Writes `drafts/<page>.png` (cfg.size square) per page and one `latents.safetensors` with a
    (n_latent, style_dim) W+ per page under the key in the row's `latent_key`. `mse_to_blurred` is
    the draft's mean squared error to the blurred page in [0, 1] units. Pages are read in
    `cfg.num_workers` workers and inverted `cfg.batch_size` at a time.
    """
    summary, used = DraftSummary(), set()
    latents: dict[str, torch.Tensor] = {}
    records = [{**row, "out": {"id": row["id"], "title": row["title"], "page": row["page"], "source_uri": row["source_uri"],
                               "source_id": row["source_id"], "source_sha256": row.get("source_sha256"), "blurred_uri": row["uri"]}}
               for row in rows.sort_values("id").to_dict("records")]

    def load(row: dict) -> tuple[np.ndarray, np.ndarray]:
        page = read_image(store.read_bytes(row["source_uri"]), mode="RGB")
        target = read_image(store.read_bytes(row["uri"]), mode="RGB")
        return resize_square(page, input_size), resize_square(target, cfg.size)

    def finish(item: Mapped) -> None:
        (page, target), (small, code) = item.value, item.result
        name = _page_name(item.row["out"], used)
        draft = resize_square(small, cfg.size)
        data = encode_png(draft)
        path = writer.write(f"drafts/{name}.png", data)
        latents[name] = code.contiguous()
        mse = float(np.mean((draft.astype(np.float32) / 255 - target.astype(np.float32) / 255) ** 2))
        writer.add({**item.row["out"], "path": path, "width": cfg.size, "height": cfg.size, "sha256": sha256_bytes(data),
                    "status": "ok", "reason": None, "latent_path": LATENTS_FILE, "latent_key": name, "mse_to_blurred": mse})
        summary.ok += 1
        summary.mse.append(mse)
        summary.latent_shape = tuple(code.shape)
        if len(summary.shown) < 3 * n_shown:
            summary.shown += [page, target, draft]

    _drafted(records, load, psp, spec, cfg.batch_size, cfg.num_workers, writer, summary, finish, progress)
    if latents:
        writer.write(LATENTS_FILE, save_safetensors(latents))
    return summary


def page_drafts_stage(rows: pd.DataFrame, store: Store, writer: VersionWriter, psp: PSp, spec: DeviceSpec,
                      input_size: int = 256, batch_size: int = 8, progress: Callable[[int, str], None] | None = None,
                      n_shown: int = 3, num_workers: int | None = None) -> DraftSummary:
    """Drafts of black-and-white pages (rows: id, title, page, uri) by the drafting network, one 256 px PNG each.

    `page_id` names the page; an unreadable page is quarantined with its reason. Pages are read in
    `num_workers` workers (None: `MANGACOLOR_WORKERS` or the cores) and drafted `batch_size` at a time.
    """
    summary, used = DraftSummary(), set()
    records = [{**row, "out": {"id": row["id"], "title": row["title"], "page": row["page"], "page_id": row["id"],
                               "source_uri": row["uri"]}}
               for row in rows.sort_values("id").to_dict("records")]

    def load(row: dict) -> tuple[np.ndarray]:
        return (resize_square(read_image(store.read_bytes(row["uri"]), mode="L"), input_size),)

    def finish(item: Mapped) -> None:
        (page,), (draft, _) = item.value, item.result
        out = item.row["out"]
        data = encode_png(draft)
        path = writer.write(f"drafts/{safe_part(str(out['title']))}/{_page_name(out, used)}.png", data)
        writer.add({**out, "path": path, "width": draft.shape[1], "height": draft.shape[0], "sha256": sha256_bytes(data),
                    "status": "ok", "reason": None})
        summary.ok += 1
        if len(summary.shown) < 2 * n_shown:
            summary.shown += [page, draft]

    _drafted(records, load, psp, spec, batch_size, num_workers, writer, summary, finish, progress)
    return summary


def load_latents(store: Store, version_dir: str, path: str = LATENTS_FILE) -> dict[str, torch.Tensor]:
    """The W+ codes of a `coloring_drafts` version, by `latent_key`."""
    from safetensors.torch import load

    return load(store.read_bytes(f"{version_dir}/{path}"))


# --- the trained networks: what the assets run in their process and the torchrun worker in every rank ----


def stylegan_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress) -> dict:
    """The StyleGAN2 loop on the blurred pages of `titles`."""
    from mangacolor.training.stylegan import train_stylegan

    cfg, _ = stylegan_config(preset)
    rows = blurred_rows(st, titles)
    return train_stylegan(cfg, SquarePages(st, list(rows["uri"]), cfg.size), work, spec, tracker, progress=progress)


def encoder_plan(st: Store, preset: dict, titles: list[str], input_nc: int, section: str, pseudolabels: bool):
    """(loop config, blur config, training rows, pairs, titles read as grey pages, pseudolabels missing) of a pSp encoder."""
    cfg = psp_config(preset, section, input_nc)
    blur = stage_config(preset, "blur", BlurConfig)
    grey, no_pseudo = [], False
    if input_nc == 3:
        rows = inversion_rows(st, titles)
    else:
        rows, grey = drafting_rows(st, titles)
        if pseudolabels:
            pseudo = pseudolabel_draft_rows(st)
            no_pseudo = pseudo.empty
            rows = pd.concat([rows.assign(blur_target=False), pseudo], ignore_index=True)
    pairs = DraftPairs(st, rows, "RGB" if input_nc == 3 else "L", blur.size, blur.sigma)
    return cfg, blur, rows, pairs, grey, no_pseudo


def encoder_train(st: Store, preset: dict, titles: list[str], work: Path, spec, tracker, progress, input_nc: int, section: str,
                  pseudolabels: bool, generator: str) -> dict:
    """The pSp loop against the stylegan version `generator`."""
    from mangacolor.training.psp import train_psp

    cfg, _, _, pairs, _, _ = encoder_plan(st, preset, titles, input_nc, section, pseudolabels)
    with local_file(st, generator_path(st, generator)) as gen_path:
        return train_psp(cfg, pairs, gen_path, work, spec, tracker, progress=progress)


# --- models in the store -------------------------------------------------------------------------


def generator_path(store: Store, version: str) -> str:
    return store.path("stylegan", UNPARTITIONED, version, WEIGHTS_PATH)


def load_stored_psp(store: Store, asset: str, device: torch.device | str = "cpu") -> tuple[PSp, dict[str, str]]:
    """The latest `inversion_encoder` / `drafting_network` with the very generator it was trained against."""
    vdir, row = weights_row(store, asset)
    version = row.get("stylegan_version")
    if not version:
        raise KeyError(f"{vdir}: the weights row names no stylegan_version; re-materialize {asset}")
    with local_file(store, f"{vdir}/{row['path']}") as enc, local_file(store, generator_path(store, version)) as gen:
        psp = load_psp(enc, gen)
    return psp.to(device).eval(), {"encoder_version": store.relative(vdir).split("/")[-1], "stylegan_version": version}

