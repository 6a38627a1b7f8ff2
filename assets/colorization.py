"""Colorization assets (README § The asset graph, "colorization"; paper §III, §III-B, §IV-B-3, Appendices C–D).

Appendix D's order: step 1 is `colorizer_step1_snapshots` (adversarial domain adaptation, several
snapshots; real pages carry their drafting-network drafts from `bw_page_drafts`) then
`colorizer_step1_finetuned` (each snapshot fine-tuned for at most two epochs on the matched
`page_pairs`, "in the first step ... after training"); only then `selected_snapshots` (the fine-tuned
snapshots ranked by KID/FID of their colorings of real training pages; a person may override) ->
`pseudolabels` (several colorings per real training page) -> step 2, `colorizer_step2`
(self-training) -> `colorizer_final` (step 2's generator with the drafting networks, written as a
model bundle and registered in MLflow: the full method as `mangacolor-colorizer@candidate`, an
ablation variant under its own name `mangacolor-colorizer-<variant>`, no alias).

The logic lives in mangacolor/stages/colorization/; the preset section `colorizer:` holds
every setting, and the ablations are its `variant:` switches (synthetic: xdog | refined | cut,
use_drafts, adversarial_adaptation, self_training), recorded as the registered version's `variant` tag.

Upstream assets that have not been materialized yet are replaced, and every output says so (metadata
`fallbacks`, MLflow tag `fallbacks`): a title without `synthetic_bw_pages` trains on its `xdog_pages`
or on the grey conversion of its colour pages; without `coloring_drafts` drafts are empty; without
`inversion_encoder` pseudolabels differ only by snapshot; without `stylegan`/`drafting_network` the
bundle colorizes with an empty draft.

Real black-and-white pages are read only through `training_pages(page_splits)` (the matched pairs of the
fine-tune too); the blocking check `holdout_never_trained` compares the ids step 1, step 2 and the
fine-tune recorded with the holdout.
"""


import json
import math
import tempfile
from functools import partial
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from mangacolor.config import MODEL_NAME
from mangacolor.data.splits import holdout_pages
from mangacolor.io.images import read_image
from mangacolor.io.store import ok_rows

from .common import checkpoint_dir, color_titles, gpu_asset, progress_logger, resumed_from, stage_asset, work_dir
from .metadata import (
    colorizer_result, fallback_metadata, image_budget, log_training_pages, notes_md, recorded_result, samples_md, table_value,
    training_grid, version_metadata,
)
from .digests import digest_key
from .ingest import bw_pages, color_pages, page_pairs, page_splits
from .launch import TorchrunResource, run_stage
from .resources import DeviceResource, MlflowResource, SettingsResource, StoreResource

GROUP = "colorization"
OWNERS = ["team:ml"]
RANDOM_INIT_NOTE = "random-init Inception: not comparable to published FID"
ALL = dg.AllPartitionMapping()
# Upstream assets of other modules, by key: the graph is complete when they are loaded, and the
# stages fall back (and say so) while they have no materialization.
SYNTHETIC = dg.AssetDep("synthetic_bw_pages", partition_mapping=ALL)
# Table 3's lower synthetic levels (variant.synthetic: xdog | refined) read these instead.
SYNTHETIC_LOWER = [dg.AssetDep("refined_pages", partition_mapping=ALL), dg.AssetDep("xdog_pages", partition_mapping=ALL)]
BW_DRAFTS = dg.AssetKey("bw_page_drafts")
DRAFTS = dg.AssetDep("coloring_drafts", partition_mapping=ALL)
STYLEGAN, INVERSION, DRAFTING = dg.AssetKey("stylegan"), dg.AssetKey("inversion_encoder"), dg.AssetKey("drafting_network")
DRAFTING_FINAL = dg.AssetKey("drafting_network_final")
COLOR = dg.AssetDep(color_pages, partition_mapping=ALL)
BW = dg.AssetDep(bw_pages, partition_mapping=ALL)
# Past 100 titles Dagster drops the partitioned edges above from staleness: these digests keep step 1 stale-aware.
FAN_IN_DIGESTS = [digest_key(a) for a in ("synthetic_bw_pages", "coloring_drafts", "color_pages", "bw_pages")]


# --- shared by the stages --------------------------------------------------------------------------


def _inputs(settings: SettingsResource, store: StoreResource, device: DeviceResource | None = None):
    """(store, device spec or None, the preset's `colorizer:` section): what every colorization asset starts from."""
    from mangacolor.stages.colorization.config import colorization_config

    return store.get(), device.spec() if device is not None else None, colorization_config(settings.load())


def _color_titles(context, st) -> list[str]:
    known = context.instance.get_dynamic_partitions(color_titles.name)
    return [t for t in known if st.latest_version("color_pages", t)]


def _bundle_samples(st, bundle_dir: Path, n: int = 2) -> list[np.ndarray]:
    """Holdout pages (never trained on) coloured by the bundle just written, each beside its page: what a user gets."""
    from mangacolor.inference.api import Colorizer

    if st.latest_version("page_splits") is None:
        return []
    held = set(holdout_pages(st.latest_manifest("page_splits"))["id"])
    pages = ok_rows(st, "bw_pages")
    pages = pages[pages["id"].isin(held)].drop_duplicates("id").sort_values("id").head(n)
    colorizer = Colorizer.from_bundle(bundle_dir)
    shown = []
    for uri in pages["uri"]:
        page = read_image(st.read_bytes(uri), mode="L")
        shown += [page, colorizer.colorize(page)]
    return shown


# --- step 1: adversarial domain adaptation -----------------------------------------------------------


@gpu_asset(GROUP, "training",
    deps=[SYNTHETIC, *SYNTHETIC_LOWER, DRAFTS, BW_DRAFTS, COLOR, BW, page_splits, *FAN_IN_DIGESTS],
    description="Step 1 (§III, eq. 2–3): synthetic pairs supervised and adversarially, real black-and-white pages of the "
                "train split adversarially with their drafts (domain adaptation, eq. 9); several generator snapshots with "
                "sample grids. Preset `colorizer:`.",
)
def colorizer_step1_snapshots(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                              device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key
    from mangacolor.stages.colorization.train import record_step1, step1_plan, train_step1
    from mangacolor.stages.common import rows_digest

    st, spec, cfg = _inputs(settings, store, device)
    titles = _color_titles(context, st)
    plan = step1_plan(st, cfg, titles)
    pairs, real = plan.pairs, plan.real
    work = checkpoint_dir(context, checkpoint_key(cfg, "step1", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                  real=rows_digest(real, ("id", "sha256", "draft_uri"))))
    resumed = resumed_from(work)
    params = {"stage": {"name": "step1", "loop_step": plan.step, "variant": cfg.variant.name(), "synthetic_pairs": len(pairs.rows),
                        "real_pages": len(real), "snapshot_every": plan.snapshot_every, "bw_source": pairs.bw_source,
                        "drafts": pairs.drafts, "device": spec.description}}
    with mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = fallback_metadata(pairs.fallbacks, tracker)
        result, launched = run_stage(context, torchrun, "colorizer_step1_snapshots", partial(train_step1, plan=plan), tracker=tracker,
                                     mlflow=mlflow, settings=settings, store=store, device=device, work=work, titles=titles)
        tracker.log_artifact(result.generator, "weights")  # the last snapshot; the others stay in the store
        log_training_pages(tracker, st, real_bw=real, synthetic=pairs.rows)
        recorded = record_step1(st, cfg, plan, result)
    last = recorded.facts["snapshot_steps"][-1]
    return colorizer_result(st, recorded, result, resumed, tracker, launched, fallback,
                            f"step {last}: synthetic rows bw | colorized | colour, then real rows bw | colorized (no hint, no draft)")


# --- the end of step 1: fine-tune on matched real pairs (Appendix D) ----------------------------------


@gpu_asset(GROUP, "training", deps=[colorizer_step1_snapshots, page_pairs, DRAFTS],
    description="The end of step 1 (Appendix D: 'in the first step, we fine-tune the model with a paired dataset of real data "
                "after training', at most two epochs): every step-1 snapshot fine-tuned on the matched real page pairs, "
                "continuing the cue schedule of its epochs. These are the snapshots that are ranked and make pseudolabels.",
)
def colorizer_step1_finetuned(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                              device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key
    from mangacolor.stages.colorization.data import matched_pairs, stored_snapshots
    from mangacolor.stages.colorization.train import finetune_train, record_finetune
    from mangacolor.stages.common import rows_digest

    st, spec, cfg = _inputs(settings, store, device)
    _, shots = stored_snapshots(st, "colorizer_step1_snapshots")
    pairs = matched_pairs(st, cfg.variant.use_drafts)
    work = checkpoint_dir(context, checkpoint_key(cfg, "finetune", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                  init=rows_digest(shots.assign(id=shots["step"].astype(str)))))
    fallbacks = list(pairs.fallbacks)
    if pairs.rows.empty:
        context.log.warning("page_pairs has no matched pair: the step-1 snapshots pass through without the fine-tune")
        fallbacks.append("no matched page pairs: snapshots not fine-tuned")
    params = {"stage": {"name": "finetune", "variant": cfg.variant.name(), "matched_pairs": len(pairs.rows),
                        "snapshots": [int(s) for s in shots["step"]], "device": spec.description}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = fallback_metadata(fallbacks, tracker)
        # Without matched pairs the snapshots pass through here: nothing to launch.
        tuned, launched = run_stage(context, torchrun if len(pairs.rows) else None, "colorizer_step1_finetuned",
                                    partial(finetune_train, tmp=Path(tmp)), tracker=tracker, mlflow=mlflow, settings=settings,
                                    store=store, device=device, work=work)
        tracker.log_dataset(pairs.rows, name="matched_bw", source=st.uri())
        recorded = record_finetune(st, cfg, tuned, pairs, Path(tmp))
        meta = {**version_metadata(st, recorded.version, recorded.folder), **recorded.facts, **launched, **fallback,
                "mlflow_run_id": tracker.run_id}
        if recorded.samples:
            meta["samples"] = training_grid(st, recorded.folder, recorded.samples, "matched pairs: bw | colorized | colour")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(recorded.version))


# --- snapshot selection -------------------------------------------------------------------------------


class SnapshotSelection(dg.Config):
    override: list[int] | None = Field(
        None, description="Snapshot steps (column `step` of the ranking) to use instead of the automatic choice, best first.")


@gpu_asset(GROUP, "selection", deps=[colorizer_step1_finetuned, COLOR, BW, page_splits],
    description="The fine-tuned step-1 snapshots ranked by KID/FID of their colorings of a validation slice of real training pages against "
                "colour pages (the paper's authors chose by eye); the best are kept for pseudolabels. Run config `override` picks by hand.",
)
def selected_snapshots(context: dg.AssetExecutionContext, config: SnapshotSelection, settings: SettingsResource,
                       store: StoreResource, device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.data import stored_snapshots
    from mangacolor.stages.colorization.selection import choose, rank_snapshots, record_selection
    from mangacolor.stages.common import ranked_rows, real_training_rows, to_local

    st, spec, cfg = _inputs(settings, store, device)
    sel = cfg.selection
    vdir1, shots = stored_snapshots(st, "colorizer_step1_finetuned")
    validation_rows = real_training_rows(st, sel.validation_pages, cfg.seed + 1)
    validation = [read_image(st.read_bytes(u), mode="L") for u in validation_rows["uri"]]
    colour = ranked_rows(ok_rows(st, "color_pages", _color_titles(context, st)), cfg.seed, "reference").head(sel.reference_pages)
    reference = [st.read_bytes(u) for u in colour["uri"]]
    extractor = _selection_extractor(context, sel, spec, config.override)
    params = {"stage": {"name": "selection", **sel.model_dump(mode="json"), "override": config.override}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        local = [(int(r.step), int(r.epoch), to_local(st, f"{vdir1}/{r.path}", Path(tmp) / f"{int(r.step)}.safetensors"))
                 for r in shots.itertuples()]
        ranking = rank_snapshots(local, validation, reference, sel, spec.device, extractor, context.log.info, spec.autocast,
                                 cfg.page_canvas())
        chosen = choose(ranking.table, sel.keep, config.override)
        _log_ranking(tracker, ranking, chosen, sel.metric, bool(config.override))
        recorded, table, grids = record_selection(st, ranking, chosen, {step: path for step, _, path in local}, validation,
                                                  validation_rows["id"], sel.metric, bool(config.override))
    rank = dict(zip(table["step"], table["rank"]))
    meta = {**version_metadata(st, recorded.version, recorded.folder), **recorded.facts, "ranking": table_value(table),
            "reference_pages": len(reference), "notes": notes_md(ranking.notes), "mlflow_run_id": tracker.run_id,
            **{f"grid_step_{s}": training_grid(st, recorded.folder, g, f"snapshot step {s} (rank {int(rank[s])}): real page | coloring",
                                               f"grid_step_{s}", 256, image_budget(len(grids))) for s, g in grids.items()},
            **({"fid_note": RANDOM_INIT_NOTE} if ranking.random_init else {})}
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(recorded.version))


def _selection_extractor(context, sel, spec, override):
    """The snapshots' feature network; without its weights only a hand-picked `override` can go on (unscored)."""
    from mangacolor.eval.inception import WeightsNotFoundError
    from mangacolor.stages.colorization.selection import feature_extractor

    try:
        return feature_extractor(sel, spec.device, work_dir() / "fid_features")
    except WeightsNotFoundError as exc:
        if not override:
            raise dg.Failure(f"cannot rank snapshots: {exc} — or pick them by hand with the run config `override`") from exc
        context.log.warning(f"snapshots not scored ({exc}); using the override")
        return None


def _log_ranking(tracker, ranking, chosen: list[int], metric: str, override: bool) -> None:
    tags = {"metric": metric, "selected_steps": json.dumps(chosen), "override": str(override).lower(),
            "random_init": str(ranking.random_init).lower(), "feature_extractor": ranking.feature_extractor}
    tracker.set_tags(tags | ({"fid_note": RANDOM_INIT_NOTE} if ranking.random_init else {}))
    for row in ranking.table.to_dict("records"):
        tracker.log_metrics({k: row[k] for k in ("fid", "kid_mean", "kid_std") if not math.isnan(row[k])}, step=int(row["step"]))


# --- pseudolabels (§IV-B-3) ---------------------------------------------------------------------------


@gpu_asset(GROUP, "data", deps=[selected_snapshots, page_splits, BW, STYLEGAN, INVERSION], kinds=("parquet", "pytorch"),
    description="Pseudolabels for self-training: the selected snapshots colorize every real training page several times "
                "(distinct snapshots, then drafts from the inversion encoder mixed with random CLS vectors); PNGs + manifest.",
)
def pseudolabels(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                 device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.bundle import stored_inversion
    from mangacolor.stages.colorization.data import chosen_snapshots
    from mangacolor.stages.colorization.pseudolabels import first_page_labels, make_pseudolabels, pseudolabel_facts, skip_pseudolabels
    from mangacolor.stages.common import real_training_rows, to_local

    st, spec, cfg = _inputs(settings, store, device)
    flags = cfg.variant
    if not flags.self_training:
        return recorded_result(st, skip_pseudolabels(st, cfg))
    real = real_training_rows(st, cfg.pseudolabels.max_pages, cfg.seed)
    chosen = chosen_snapshots(st)
    params = {"stage": {"name": "pseudolabels", **cfg.pseudolabels.model_dump(mode="json"), "pages": len(real),
                        "snapshots": [int(s) for s in chosen["step"]]}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        inversion = stored_inversion(st, spec.device) if flags.use_drafts else None
        missing = flags.use_drafts and inversion is None
        snapshots = [(int(r.step), to_local(st, r.uri, Path(tmp) / f"{int(r.step)}.safetensors")) for r in chosen.itertuples()]
        writer = st.begin("pseudolabels")
        summary = make_pseudolabels(st, real, snapshots, writer, cfg.pseudolabels, spec.device, inversion, cfg.seed,
                                    progress_logger(context, len(real), "pseudolabels"), spec.autocast, cfg.page_canvas())
        fallback = fallback_metadata(["inversion_encoder not materialized: colorings differ by snapshot only, no drafts"] * missing, tracker)
        version, vdir, frame = writer.seal(salt=json.dumps({"snapshots": [s for s, _ in snapshots], "use_drafts": flags.use_drafts}))
        tracker.log_metrics({"pages": summary.pages, "colorings": summary.colorings, "per_page": summary.per_page,
                             "quarantined": summary.quarantined})
        if summary.quarantined:
            context.log.warning(f"pseudolabels: {summary.quarantined} unreadable pages quarantined (reasons in the manifest)")
    meta = {**version_metadata(st, version, vdir), **pseudolabel_facts(summary, [s for s, _ in snapshots], flags.name()), **fallback,
            "notes": notes_md(summary.notes), "mlflow_run_id": tracker.run_id,
            "samples": samples_md(st, vdir, *first_page_labels(st, vdir, frame))}
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- step 2: self-training ----------------------------------------------------------------------------


@gpu_asset(GROUP, "training",
    deps=[pseudolabels, selected_snapshots, SYNTHETIC, *SYNTHETIC_LOWER, DRAFTS, COLOR, BW, page_splits],
    description="Step 2 (§III): self-training on synthetic pairs plus pseudolabelled real pages, all supervised, the adversarial "
                "loss on both together with real colour pages as D's real side (λ_syn 1.2, batch 8): the final colorizer. With "
                "`variant.self_training: false`, step 1's best fine-tuned snapshot passes through.",
)
def colorizer_step2(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key
    from mangacolor.stages.colorization.data import chosen_snapshots
    from mangacolor.stages.colorization.train import pass_step2_through, record_step2, step2_pairs, step2_train
    from mangacolor.stages.common import WEIGHTS_PATH, rows_digest

    st, spec, cfg = _inputs(settings, store, device)
    flags = cfg.variant
    best = chosen_snapshots(st).iloc[0]
    if not flags.self_training:
        return recorded_result(st, pass_step2_through(st, cfg, best))
    titles = _color_titles(context, st)
    pairs, pseudo = step2_pairs(st, cfg, titles)
    work = checkpoint_dir(context, checkpoint_key(cfg, "step2", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                  pseudo=rows_digest(pseudo),
                                                  init=best["sha256"] if cfg.step2.init == "best_snapshot" else None))
    resumed = resumed_from(work)
    params = {"stage": {"name": "step2", "variant": flags.name(), "synthetic_pairs": len(pairs.rows), "pseudolabels": len(pseudo),
                        "real_pages": int(pseudo["bw_id"].nunique()), "init": cfg.step2.init, "device": spec.description}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = fallback_metadata(pairs.fallbacks, tracker)
        result, launched = run_stage(context, torchrun, "colorizer_step2", partial(step2_train, tmp=Path(tmp)), tracker=tracker,
                                     mlflow=mlflow, settings=settings, store=store, device=device, work=work, titles=titles)
        tracker.log_artifact(result.generator, "weights")
        log_training_pages(tracker, st, pseudolabel_bw=pseudo, synthetic=pairs.rows)
        recorded = record_step2(st, cfg, result, pairs, pseudo, best)
    weights = dg.MetadataValue.path(st.uri(st.relative(f"{recorded.folder}/{WEIGHTS_PATH}")))
    return colorizer_result(st, recorded, result, resumed, tracker, launched, fallback,
                            "bw | colorized | target (synthetic and pseudolabelled rows)", weights=weights)


# --- fine-tune, bundle, registry ----------------------------------------------------------------------


@stage_asset(GROUP, "model", owners=OWNERS, kinds=("mlflow", "pytorch"),
    deps=[colorizer_step2, STYLEGAN, DRAFTING, DRAFTING_FINAL, INVERSION],
    description="The final colorizer: step 2's generator (step 1 ended with the matched-pair fine-tune, Appendix D) written as a "
                f"model bundle (colorizer + StyleGAN + drafting + inversion, and the training canvas) and registered as {MODEL_NAME} with alias 'candidate' "
                f"(an ablation variant as {MODEL_NAME}-<variant>, without aliases).",
)
def colorizer_final(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.inference.registry import register_bundle
    from mangacolor.stages.colorization.bundle import bundle_info, make_bundle, random_init_flags, write_folder
    from mangacolor.stages.common import WEIGHTS_PATH, Recorded, to_local

    st, _, cfg = _inputs(settings, store)
    flags, random_init = cfg.variant, random_init_flags(cfg, st)
    random_tags = {f"random_init.{k}": str(v).lower() for k, v in random_init.items()}
    params = {"stage": {"name": "final", "variant": flags.name(), "canvas": list(cfg.page_canvas())}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags({**flags.tags(), **random_tags})
        generator = to_local(st, f"{st.latest_dir('colorizer_step2')}/{WEIGHTS_PATH}", Path(tmp) / "colorizer.safetensors")
        info = bundle_info(st, cfg, random_init, dagster_run_id=context.run.run_id, mlflow_run_id=tracker.run_id)
        bundle_dir, parts, notes = make_bundle(st, generator, flags, Path(tmp), info)
        shown = _bundle_samples(st, bundle_dir)
        fallback = fallback_metadata(notes, tracker)
        writer = st.begin("colorizer_final")
        write_folder(writer, bundle_dir, "bundle", "bundle")
        version, vdir, _ = writer.seal(salt=flags.name())
        model = register_bundle(bundle_dir, client=tracker.client, tags={
            **flags.tags(), "dagster.run_id": context.run.run_id, "data_version": version,
            "random_init": str(any(random_init.values())).lower(), **random_tags})
    return recorded_result(st, Recorded(version, vdir, {
        "registered_model": model.name,  # the full method: MODEL_NAME; a variant: its own name, no alias
        "registered_version": int(model.version), "model_uri": f"models:/{model.name}/{model.version}",
        "alias": "candidate" if model.name == MODEL_NAME else "none",
        "bundle_uri": dg.MetadataValue.path(st.uri(st.relative(f"{vdir}/bundle"))),
        "bundle_parts": parts, "variant": flags.name(), "canvas": list(cfg.page_canvas()), "random_init": random_init, **fallback,
        "mlflow_run_id": tracker.run_id,
        "samples": samples_md(st, vdir, shown, "holdout pages: page | colorized by this bundle (no hints)", height=192)}))


# --- the holdout never reaches step 1, step 2 or the fine-tune -------------------------------------------------------


def _holdout_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    key = asset.key.to_user_string()

    @dg.asset_check(asset=asset, name="holdout_never_trained", blocking=True,
                    description=f"The real black-and-white pages {key} trained on (its manifest) are disjoint from the holdout of page_splits.")
    def check(store: StoreResource) -> dg.AssetCheckResult:
        from mangacolor.stages.colorization.data import trained_real_ids

        st = store.get()
        trained = trained_real_ids(st.latest_manifest(key))
        held = set(holdout_pages(st.latest_manifest("page_splits"))["id"])
        leaked = sorted(trained & held)
        return dg.AssetCheckResult(passed=not leaked, metadata={"real_pages_trained": len(trained), "holdout": len(held),
                                                               "leaked": len(leaked), "leaked_ids": dg.MetadataValue.json(leaked[:50])})

    return check


holdout_never_trained_step1 = _holdout_check(colorizer_step1_snapshots)
holdout_never_trained_step1_finetuned = _holdout_check(colorizer_step1_finetuned)
holdout_never_trained_step2 = _holdout_check(colorizer_step2)
