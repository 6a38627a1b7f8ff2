"""Drafting assets: the Coloring Latent Space and its encoders (README § The asset graph, "drafting";
paper §III-A, §IV-B-1/2, §IV-C-1/2, Appendix D).

`blurred_color_pages` -> `stylegan` -> `inversion_encoder` (colour -> W+) and `drafting_network`
(black-and-white -> W+); `coloring_drafts` are the drafts of the colour training pages made with the
inversion encoder, each with its W+ code and the `source_id` of its colour page, for the colorizer;
`bw_page_drafts` the drafts of the real black-and-white training pages made with the drafting network
(step 1's S for real pages, eq. 9). The drafting network trains twice: first on synthetic pairs only
(step 1 needs its drafts before any pseudolabel exists), then as `drafting_network_final` on synthetic
pairs plus the pseudolabelled real pages (§III), which is the one the model bundle ships.
The per-title stages are partitioned like `color_pages`; the three networks train on request on the
GPU pool, each in one MLflow run, resuming from their checkpoints when retried with the same config.
"""



import dagster as dg

from mangacolor import config as mc_config
from mangacolor.drafting.blur import BlurConfig
from mangacolor.io.store import ok_rows

from .common import checkpoint_dir, color_titles, gpu_asset, progress_logger, resumed_from, stage_asset, work_dir
from .metadata import model_result, samples_md, version_metadata
from .digests import digest_key
from .ingest import bw_pages, color_pages, page_splits
from .launch import TorchrunResource, run_stage
from .resources import DeviceResource, MlflowResource, SettingsResource, StoreResource

EAGER = dg.AutomationCondition.eager()
OWNERS = ["team:ml"]
GROUP = "drafting"
LPIPS_RANDOM_NOTE = "random-init VGG (LPIPS): the perceptual term compares random features, not the paper's loss"


def _materialized_titles(context, st, asset: str) -> list[str]:
    known = context.instance.get_dynamic_partitions(color_titles.name)
    titles = [t for t in known if st.latest_version(asset, t)]
    if missing := sorted(set(known) - set(titles)):
        context.log.warning(f"{asset} not materialized for {missing}: training without those titles")
    if not titles:
        raise dg.Failure(f"no {asset} to train on: materialize it for at least one colour title")
    return titles


# --- blurred pages ---------------------------------------------------------------------------------


@stage_asset(GROUP, "data", owners=OWNERS, kinds=("parquet", "python"), partitions_def=color_titles, deps=[color_pages],
    automation_condition=EAGER,
    description="Colour pages of a title resized to 256x256 and strongly blurred (§III-A): what StyleGAN learns and the encoders' targets; preset section `blur:`.",
)
def blurred_color_pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.MaterializeResult:
    from mangacolor.stages import drafting

    st, title = store.get(), context.partition_key
    cfg = mc_config.stage_config(settings.load(), "blur", BlurConfig)
    rows = ok_rows(st, "color_pages", [title])
    writer = st.begin("blurred_color_pages", title)
    summary = drafting.blur_stage(rows, st, writer, cfg, progress_logger(context, len(rows), f"blurred_color_pages[{title}]"))
    version, vdir, _ = writer.seal(salt=cfg.model_dump_json())
    kept = sum(summary.detail_kept) / len(summary.detail_kept) if summary.detail_kept else None
    context.log.info(f"{title}: {summary.ok} pages blurred (sigma {cfg.sigma} px at {cfg.size}), {summary.quarantined} quarantined")
    return dg.MaterializeResult(
        metadata={
            "pages_ok": summary.ok, "quarantined": summary.quarantined, "size": cfg.size, "sigma_px": cfg.sigma,
            "detail_kept": dg.MetadataValue.float(kept) if kept is not None else dg.MetadataValue.null(),
            **version_metadata(st, version, vdir),
            "samples": samples_md(st, vdir, summary.shown, "colour page | blurred (pairs)"),
        },
        data_version=dg.DataVersion(version),
    )


# --- the Coloring Latent Space ---------------------------------------------------------------------


@gpu_asset(GROUP, "training", deps=[blurred_color_pages, digest_key("blurred_color_pages")],
    description="StyleGAN2 on the blurred colour pages of every colour title (§IV-B-1, Appendix D): its W+ is the Coloring Latent Space; preset section `stylegan:` (`init_checkpoint`: a port .pt to start from, as the paper did from Danbooru).",
)
def stylegan(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
             device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.models.stylegan2 import load_generator
    from mangacolor.stages import drafting
    from mangacolor.stages.common import checkpoint_key, rows_digest

    preset, st, spec = settings.load(), store.get(), device.spec()
    cfg, report_cfg = drafting.stylegan_config(preset)
    titles = _materialized_titles(context, st, "blurred_color_pages")
    rows = drafting.blurred_rows(st, titles)
    images = drafting.SquarePages(st, list(rows["uri"]), cfg.size)
    digest = rows_digest(rows, ("id", "sha256", "input_uri"))
    work = checkpoint_dir(context, checkpoint_key(cfg, drafting.STYLEGAN_LOOP_ONLY, pages=digest))
    resumed = resumed_from(work)
    params = {"train_pages": len(rows), "train_pages_digest": digest, "resumed_from_step": resumed,
              "report": report_cfg.model_dump(mode="json")}
    with mlflow.run(context, params=params) as tracker:
        result, launched = run_stage(context, torchrun, "stylegan", drafting.stylegan_train, tracker=tracker, mlflow=mlflow, settings=settings,
                                     store=store, device=device, work=work, titles=titles)
        g_ema, _ = load_generator(result["generator"])
        report = drafting.generator_report(g_ema.to(spec.device), images, report_cfg, spec.device,
                                           work_dir() / "fid_features", context.log.debug)
        meta = {"steps": result["steps"], "size": cfg.size, **launched, **{k: float(v) for k, v in result["metrics"].items()},
                **_report_metadata(tracker, report.metrics, report.grid, result["steps"])}
        grids = {"samples": (report.fakes[:8] + report.reals[:8], "generated (8) | blurred pages (8)", 64),
                 "truncation_grid": ([report.grid], f"rows: truncation psi {report_cfg.truncations}", 256)}
        return model_result(st, "stylegan", result["generator"], {"train": rows}, tracker, {"resumed_from_step": resumed, **meta},
                            {"steps": result["steps"], "size": cfg.size}, grids)


def _report_metadata(tracker, m, grid, steps: int) -> dict:
    """The generator's FID/KID report (`stages.drafting.generator_report`) into MLflow and the metadata."""
    from mangacolor.stages.drafting import RANDOM_INIT_NOTE

    note = {"fid_note": RANDOM_INIT_NOTE} if m.random_init else {}
    tracker.log_metrics({"fid": m.fid, "kid": m.kid_mean, "kid_std": m.kid_std}, step=steps)
    tracker.log_text("fid_report.md", m.to_markdown())
    tracker.log_image("truncation_grid.png", grid)
    tracker.set_tags({"fid_features": m.feature_extractor, "random_init_inception": str(m.random_init)} | note)
    return {"fid": m.fid, "kid": m.kid_mean, "fid_samples": m.n_b, "fid_features": m.feature_extractor,
            "random_init": m.random_init, "fid_report": dg.MetadataValue.md(m.to_markdown()), **note}


# --- the two encoders into W+ ----------------------------------------------------------------------


def _train_encoder(context, settings, store, device, mlflow, torchrun, asset: str, input_nc: int,
                   section: str | None = None, pseudolabels: bool = False) -> dg.MaterializeResult:
    from mangacolor.models.psp import load_psp
    from mangacolor.stages import drafting
    from mangacolor.stages.common import checkpoint_key, local_file, rows_digest, weights_row

    preset, st, spec = settings.load(), store.get(), device.spec()
    titles = _materialized_titles(context, st, "blurred_color_pages")
    cfg, blur, rows, pairs, grey, no_pseudo = drafting.encoder_plan(st, preset, titles, input_nc, section or asset, pseudolabels)
    notes = {}
    if grey:
        notes["input_note"] = drafting.GREY_FALLBACK_NOTE
        notes["grey_titles"] = dg.MetadataValue.json(grey)
        context.log.warning(f"{drafting.GREY_FALLBACK_NOTE} for {grey}")
    if no_pseudo:
        notes["pseudolabel_note"] = "no pseudolabels (self-training off or not materialized): synthetic pairs only"
        context.log.warning(notes["pseudolabel_note"])
    _, gen_row = weights_row(st, "stylegan")
    gen_version = st.latest_version("stylegan")
    digest = rows_digest(rows, ("id", "sha256", "input_uri"))
    work = checkpoint_dir(context, checkpoint_key(cfg, drafting.PSP_LOOP_ONLY, pages=digest, stylegan=gen_version,
                                                           **({"blur": blur.model_dump()} if pseudolabels else {})))
    resumed = resumed_from(work)
    kinds = rows["input_kind"].value_counts().to_dict()
    params = {"train_pages": len(rows), "train_pages_digest": digest, "stylegan_version": gen_version,
              "resumed_from_step": resumed, "inputs": kinds}
    with mlflow.run(context, params=params) as tracker:
        result, launched = run_stage(context, torchrun, asset, drafting.encoder_train, tracker=tracker, mlflow=mlflow, settings=settings,
                                     store=store, device=device, work=work, titles=titles, input_nc=input_nc,
                                     section=section or asset, pseudolabels=pseudolabels, generator=gen_version)
        with local_file(st, drafting.generator_path(st, gen_version)) as gen_path:
            psp = load_psp(result["encoder"], gen_path).to(spec.device)
        random_lpips = result["lpips_trunk"] == "random"
        tracker.set_tags({"lpips_trunk": result["lpips_trunk"]} | ({"lpips_note": LPIPS_RANDOM_NOTE} if random_lpips else {})
                  | ({"input_note": notes["input_note"]} if "input_note" in notes else {}))
        meta = {
            "steps": result["steps"], "input_nc": input_nc, "inputs": dg.MetadataValue.json(kinds), **launched,
            **{k: float(v) for k, v in result["metrics"].items()},
            "lpips_trunk": result["lpips_trunk"], "random_init": random_lpips,
            **({"lpips_note": LPIPS_RANDOM_NOTE} if random_lpips else {}), **notes,
            "stylegan_version": gen_version,
        }
        grids = {"samples": (drafting.preview_triples(psp, pairs, spec), "input page | blurred target | draft (triples)", 96)}
        return model_result(st, asset, result["encoder"], {"train": rows}, tracker, {"resumed_from_step": resumed, **meta},
                            {"steps": result["steps"], "stylegan_version": gen_version, "input_nc": input_nc,
                             "lpips_trunk": result["lpips_trunk"], "generator_steps": gen_row.get("steps")}, grids)


def _encoder(asset: str, input_nc: int, deps: list, description: str, section: str | None = None,
             pseudolabels: bool = False) -> dg.AssetsDefinition:
    """A pSp encoder asset (`_train_encoder`): the inversion encoder, the drafting network and its second round."""

    @gpu_asset(GROUP, "training", name=asset, deps=deps, description=description)
    def encoder(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
        return _train_encoder(context, settings, store, device, mlflow, torchrun, asset, input_nc, section, pseudolabels)

    return encoder


inversion_encoder = _encoder(
    "inversion_encoder", 3, [stylegan, blurred_color_pages, color_pages],
    "GAN inversion (§IV-B-2): pSp from a colour page to W+ of the frozen `stylegan`, trained with 1·MSE + 0.5·LPIPS against the "
    "blurred page; makes the drafts of colour pages. Preset section `inversion_encoder:`.")
drafting_network = _encoder(
    "drafting_network", 1, [stylegan, blurred_color_pages, "synthetic_bw_pages", digest_key("synthetic_bw_pages")],
    "The drafting network (§III-A eq. 1, §IV-B-2): pSp from a black-and-white page to W+ of the frozen `stylegan`, trained on "
    "synthetic pages (grey conversions where `synthetic_bw_pages` is missing, said in the metadata) against the blurred "
    "colour page. Preset section `drafting_network:`.")
drafting_network_final = _encoder(
    "drafting_network_final", 1, [stylegan, blurred_color_pages, "synthetic_bw_pages", "pseudolabels"],
    "The drafting network's second round (§III: 'in the end, we train the drafting network ... with synthetic data and "
    "real data with pseudolabels'): pSp from a black-and-white page to W+, trained on the synthetic pairs plus the real "
    "training pages with their pseudolabels (blurred like the colour pages). The model bundle ships this one. "
    "Preset section `drafting_network:`.", section="drafting_network", pseudolabels=True)


# --- drafts of the real black-and-white training pages ---------------------------------------------


@gpu_asset(GROUP, "data",
    deps=[drafting_network, dg.AssetDep(bw_pages, partition_mapping=dg.AllPartitionMapping()), page_splits],
    kinds=("parquet", "pytorch"),
    description="Coloring drafts of the real black-and-white training pages (train split only) made with the first-round "
                "drafting network: the S that step 1 gives real pages (eq. 9). 256x256 PNG per page, `page_id` names it.",
)
def bw_page_drafts(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                   device: DeviceResource) -> dg.MaterializeResult:
    from mangacolor.stages import drafting
    from mangacolor.stages.common import real_training_rows

    preset, st, spec = settings.load(), store.get(), device.spec()
    cfg = mc_config.stage_config(preset, "coloring_drafts", drafting.DraftsConfig)
    blur_size = mc_config.stage_config(preset, "blur", BlurConfig).size
    psp, versions = drafting.load_stored_psp(st, "drafting_network", spec.device)
    rows = real_training_rows(st)
    writer = st.begin("bw_page_drafts")
    summary = drafting.page_drafts_stage(rows, st, writer, psp, spec, blur_size, cfg.batch_size,
                                         progress_logger(context, len(rows), "bw_page_drafts"), num_workers=cfg.num_workers)
    version, vdir, _ = writer.seal(salt=versions["encoder_version"])
    return dg.MaterializeResult(
        metadata={"pages_ok": summary.ok, "quarantined": summary.quarantined, **versions, **version_metadata(st, version, vdir),
                  "samples": samples_md(st, vdir, summary.shown, "real page | its draft (pairs)")},
        data_version=dg.DataVersion(version),
    )


# --- drafts of the colour training pages -----------------------------------------------------------


@gpu_asset(GROUP, "data", partitions_def=color_titles, deps=[inversion_encoder, blurred_color_pages, color_pages],
    automation_condition=EAGER, kinds=("parquet", "pytorch"),
    description="Coloring drafts of a title's colour pages made with the inversion encoder (§IV-B-3), 256x256 PNG plus each page's W+ (latents.safetensors); `source_id` pairs a draft with its colour page. Preset section `coloring_drafts:`.",
)
def coloring_drafts(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    device: DeviceResource) -> dg.MaterializeResult:
    from mangacolor.stages import drafting

    preset, st, spec, title = settings.load(), store.get(), device.spec(), context.partition_key
    cfg = mc_config.stage_config(preset, "coloring_drafts", drafting.DraftsConfig)
    blur_size = mc_config.stage_config(preset, "blur", BlurConfig).size
    psp, versions = drafting.load_stored_psp(st, "inversion_encoder", spec.device)
    rows = drafting.blurred_rows(st, [title])
    writer = st.begin("coloring_drafts", title)
    summary = drafting.drafts_stage(rows, st, writer, psp, cfg, spec, blur_size,
                                    progress_logger(context, len(rows), f"coloring_drafts[{title}]"))
    # How pages are batched and read does not change what is written: not part of the version.
    version, vdir, _ = writer.seal(salt=f"{versions['encoder_version']}:{cfg.model_dump_json(exclude={'batch_size', 'num_workers'})}")
    mse = sum(summary.mse) / len(summary.mse) if summary.mse else None
    return dg.MaterializeResult(
        metadata={
            "pages_ok": summary.ok, "quarantined": summary.quarantined, "size": cfg.size,
            "w_plus_shape": dg.MetadataValue.json(list(summary.latent_shape or [])),
            "mse_to_blurred": dg.MetadataValue.float(mse) if mse is not None else dg.MetadataValue.null(),
            **versions, **version_metadata(st, version, vdir),
            "samples": samples_md(st, vdir, summary.shown, "colour page | blurred | draft (triples)"),
        },
        data_version=dg.DataVersion(version),
    )
