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
import pandas as pd
from pydantic import Field

from mangacolor.config import MODEL_NAME
from mangacolor.data.splits import holdout_pages
from mangacolor.io.images import read_image
from mangacolor.io.store import ok_rows, sha256_bytes

from .common import (
    checkpoint_dir, color_titles, commits_last, progress_logger, resumed_from, version_metadata, work_dir,
)
from .metadata import THUMBNAIL_BYTES, image_budget, samples_md, table_value
from .digests import digest_key
from .ingest import bw_pages, color_pages, page_pairs, page_splits
from .launch import GPU_OP_TAGS, TRAINING_RETRY, TorchrunResource, run_stage
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
WEIGHTS = "weights/model.safetensors"


# --- shared by the stages --------------------------------------------------------------------------


def _color_titles(context, st) -> list[str]:
    known = context.instance.get_dynamic_partitions(color_titles.name)
    return [t for t in known if st.latest_version("color_pages", t)]


def _fallback_meta(fallbacks: list[str], tracker=None) -> dict:
    """Metadata and MLflow tags saying which upstream asset was stood in for (none: `fallbacks: none`)."""
    text = "; ".join(fallbacks) if fallbacks else "none"
    if tracker is not None:
        tracker.set_tags({"fallbacks": text[:5000], "fallback": str(bool(fallbacks)).lower()})
    listed = "\n".join(f"- {f}" for f in fallbacks) if fallbacks else "_none: every upstream asset was materialized_"
    return {"fallback": bool(fallbacks), "fallbacks": dg.MetadataValue.md(listed)}


def _grid(st, vdir: str, image, caption: str, name: str = "samples", height: int = 384,
          max_bytes: int = THUMBNAIL_BYTES) -> dg.MetadataValue:
    """A training loop's sample grid (an array, a local file or a store path) kept in the version folder, shown small."""
    if isinstance(image, (str, Path)):  # a local file (the loop's samples) or a path in the store
        image = read_image(Path(image).read_bytes() if Path(image).is_file() else st.read_bytes(str(image)))
    return samples_md(st, vdir, [image], caption, name, min(height, image.shape[0]), max_bytes)


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


def _weights_row(writer, data: bytes, **more) -> str:
    path = writer.write(WEIGHTS, data)
    writer.add({"id": "weights", "title": None, "page": None, "path": path, "sha256": sha256_bytes(data),
                "status": "ok", "reason": None, "role": "weights", **more})
    return path


def _log_training_pages(tracker, st, **roles: pd.DataFrame) -> None:
    """The page ids a stage trained on (an MLflow artifact), and each role's rows as a training dataset input."""
    ids = {role: sorted(map(str, rows["bw_id" if "bw_id" in rows else "id"].unique())) for role, rows in roles.items()}
    tracker.log_text("training_pages.json", json.dumps(ids, indent=1))
    for role, rows in roles.items():
        tracker.log_dataset(rows, name=role, source=st.uri())


def _train_metadata(st, version, vdir, result, resumed: int, tracker) -> dict:
    return {
        **version_metadata(st, version, vdir),
        "steps": result.steps,
        "resumed_from_step": resumed,
        **{k: float(v) for k, v in result.final_metrics.items()},
        "perceptual_random_vgg": result.perceptual_random,
        "mlflow_run_id": tracker.run_id,
    }


# --- step 1: adversarial domain adaptation -----------------------------------------------------------


@dg.asset(
    deps=[SYNTHETIC, *SYNTHETIC_LOWER, DRAFTS, BW_DRAFTS, COLOR, BW, page_splits, *FAN_IN_DIGESTS],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "training"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch"},
    description="Step 1 (§III, eq. 2–3): synthetic pairs supervised and adversarially, real black-and-white pages of the "
                "train split adversarially with their drafts (domain adaptation, eq. 9); several generator snapshots with "
                "sample grids. Preset `colorizer:`.",
)
@commits_last
def colorizer_step1_snapshots(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                              device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key, colorization_config, stage_flags
    from mangacolor.stages.colorization.data import add_training_rows, rows_digest
    from mangacolor.stages.colorization.train import step1_plan, train_step1, write_snapshots

    st, spec, cfg = store.get(), device.spec(), colorization_config(settings.load())
    flags = cfg.variant
    titles = _color_titles(context, st)
    plan = step1_plan(st, cfg, titles)
    _, step, pairs, real, every = plan
    work = checkpoint_dir(context, checkpoint_key(cfg, "step1", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                   real=rows_digest(real, ("id", "sha256", "draft_uri"))))
    resumed = resumed_from(work)
    params = {"stage": {"name": "step1", "loop_step": step, "variant": flags.name(), "synthetic_pairs": len(pairs.rows),
                        "real_pages": len(real), "snapshot_every": every, "bw_source": pairs.bw_source, "drafts": pairs.drafts,
                        "device": spec.description}}
    with mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = _fallback_meta(pairs.fallbacks, tracker)
        result, launched = run_stage(context, torchrun, "colorizer_step1_snapshots", partial(train_step1, plan=plan), tracker=tracker,
                                     mlflow=mlflow, settings=settings, store=store, device=device, work=work, titles=titles)
        tracker.log_artifact(result.generator, "weights")  # the last snapshot; the others stay in the store
        _log_training_pages(tracker, st, real_bw=real, synthetic=pairs.rows)
        writer = st.begin("colorizer_step1_snapshots")
        write_snapshots(writer, result.snapshots)
        add_training_rows(writer, "real_bw", real)
        add_training_rows(writer, "synthetic", pairs.rows)
        version, vdir, frame = writer.seal(salt=stage_flags(cfg, "step1"))
    shots = frame[frame["role"] == "snapshot"]
    last = shots.iloc[-1]
    meta = {
        **_train_metadata(st, version, vdir, result, resumed, tracker),
        **launched,
        "variant": flags.name(),
        "loop_step": step,
        "snapshots": len(shots),
        "snapshot_steps": dg.MetadataValue.json([int(s) for s in shots["step"]]),
        "synthetic_pairs": len(pairs.rows),
        "synthetic_drafts": int(pairs.rows["draft_uri"].notna().sum()),
        "real_pages": len(real),
        "real_drafts": int(real["draft_uri"].notna().sum()) if "draft_uri" in real else 0,
        "bw_source_by_title": dg.MetadataValue.json(pairs.bw_source),
        **fallback,
        "samples": _grid(st, vdir, f"{vdir}/{last['samples_path']}", f"step {int(last['step'])}: synthetic rows bw | colorized | "
                                                                     "colour, then real rows bw | colorized (no hint, no draft)"),
    }
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- the end of step 1: fine-tune on matched real pairs (Appendix D) ----------------------------------


@dg.asset(
    deps=[colorizer_step1_snapshots, page_pairs, DRAFTS],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "training"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch"},
    description="The end of step 1 (Appendix D: 'in the first step, we fine-tune the model with a paired dataset of real data "
                "after training', at most two epochs): every step-1 snapshot fine-tuned on the matched real page pairs, "
                "continuing the cue schedule of its epochs. These are the snapshots that are ranked and make pseudolabels.",
)
@commits_last
def colorizer_step1_finetuned(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                              device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key, colorization_config, stage_flags
    from mangacolor.stages.common import to_local
    from mangacolor.stages.colorization.data import REAL_ROLES, add_training_rows, matched_pairs, rows_digest, stored_snapshots
    from mangacolor.stages.colorization.train import finetune_train, write_snapshots

    st, spec, cfg = store.get(), device.spec(), colorization_config(settings.load())
    flags = cfg.variant
    vdir1, shots = stored_snapshots(st, "colorizer_step1_snapshots")
    pairs = matched_pairs(st, flags.use_drafts)
    work = checkpoint_dir(context, checkpoint_key(cfg, "finetune", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                   init=rows_digest(shots.assign(id=shots["step"].astype(str)))))
    fallbacks = list(pairs.fallbacks)
    if pairs.rows.empty:
        context.log.warning("page_pairs has no matched pair: the step-1 snapshots pass through without the fine-tune")
        fallbacks.append("no matched page pairs: snapshots not fine-tuned")
    params = {"stage": {"name": "finetune", "variant": flags.name(), "matched_pairs": len(pairs.rows),
                        "snapshots": [int(s) for s in shots["step"]], "device": spec.description}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = _fallback_meta(fallbacks, tracker)
        # Without matched pairs the snapshots pass through here: nothing to launch.
        tuned, launched = run_stage(context, torchrun if len(pairs.rows) else None, "colorizer_step1_finetuned",
                                    partial(finetune_train, tmp=Path(tmp)), tracker=tracker, mlflow=mlflow, settings=settings,
                                    store=store, device=device, work=work)
        tracker.log_dataset(pairs.rows, name="matched_bw", source=st.uri())
        for snap, row in zip(tuned, shots.itertuples()):
            if not snap.samples:  # passed through: the step-1 grid
                snap.samples = str(to_local(st, f"{vdir1}/{row.samples_path}", Path(tmp) / f"{snap.step}.png"))
        writer = st.begin("colorizer_step1_finetuned")
        write_snapshots(writer, tuned)
        # The weights carry what step 1 read too: the holdout check looks here as well.
        step1 = st.read_manifest(vdir1)
        for row in step1[step1["role"].isin(REAL_ROLES)].to_dict("records"):
            writer.add(row)
        add_training_rows(writer, "matched_bw", pairs.rows, id_column="bw_id")
        version, vdir, _ = writer.seal(salt=stage_flags(cfg, "finetune"))
    steps = sum(t.finetune_steps for t in tuned)
    meta = {
        **version_metadata(st, version, vdir),
        "variant": flags.name(),
        "snapshots": len(tuned),
        "snapshot_steps": dg.MetadataValue.json([t.step for t in tuned]),
        "matched_pairs": len(pairs.rows),
        "finetune_steps": steps,
        "finetune_steps_per_snapshot": tuned[0].finetune_steps if tuned else 0,
        "resumed_from_step": max((t.resumed_from for t in tuned), default=0),
        **launched,
        **fallback,
        "mlflow_run_id": tracker.run_id,
    }
    if tuned and tuned[-1].samples:
        meta["samples"] = _grid(st, vdir, tuned[-1].samples, "matched pairs: bw | colorized | colour")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- snapshot selection -------------------------------------------------------------------------------


class SnapshotSelection(dg.Config):
    override: list[int] | None = Field(
        None, description="Snapshot steps (column `step` of the ranking) to use instead of the automatic choice, best first.")


@dg.asset(
    deps=[colorizer_step1_finetuned, COLOR, BW, page_splits],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "selection"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch"},
    description="The fine-tuned step-1 snapshots ranked by KID/FID of their colorings of a validation slice of real training pages against "
                "colour pages (the paper's authors chose by eye); the best are kept for pseudolabels. Run config `override` picks by hand.",
)
@commits_last
def selected_snapshots(context: dg.AssetExecutionContext, config: SnapshotSelection, settings: SettingsResource,
                       store: StoreResource, device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import colorization_config
    from mangacolor.stages.common import to_local
    from mangacolor.eval.inception import WeightsNotFoundError
    from mangacolor.stages.colorization.data import ranked_rows, real_training_rows, stored_snapshots
    from mangacolor.stages.colorization.selection import choose, feature_extractor, rank_snapshots, write_selection

    st, spec, cfg = store.get(), device.spec(), colorization_config(settings.load())
    sel = cfg.selection
    vdir1, shots = stored_snapshots(st, "colorizer_step1_finetuned")
    validation_rows = real_training_rows(st, sel.validation_pages, cfg.seed + 1)
    validation = [read_image(st.read_bytes(u), mode="L") for u in validation_rows["uri"]]
    colour = ranked_rows(ok_rows(st, "color_pages", _color_titles(context, st)), cfg.seed, "reference").head(sel.reference_pages)
    reference = [st.read_bytes(u) for u in colour["uri"]]
    try:
        extractor = feature_extractor(sel, spec.device, work_dir() / "fid_features")
    except WeightsNotFoundError as exc:
        if not config.override:
            raise dg.Failure(f"cannot rank snapshots: {exc} — or pick them by hand with the run config `override`") from exc
        context.log.warning(f"snapshots not scored ({exc}); using the override")
        extractor = None
    params = {"stage": {"name": "selection", **sel.model_dump(mode="json"), "override": config.override}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        local = [(int(r.step), int(r.epoch), to_local(st, f"{vdir1}/{r.path}", Path(tmp) / f"{int(r.step)}.safetensors"))
                 for r in shots.itertuples()]
        ranking = rank_snapshots(local, validation, reference, sel, spec.device, extractor, context.log.info, spec.autocast,
                                        cfg.page_canvas())
        chosen = choose(ranking.table, sel.keep, config.override)
        tags = {"metric": sel.metric, "selected_steps": json.dumps(chosen), "override": str(bool(config.override)).lower(),
                "random_init": str(ranking.random_init).lower(), "feature_extractor": ranking.feature_extractor}
        if ranking.random_init:
            tags["fid_note"] = RANDOM_INIT_NOTE
        tracker.set_tags(tags)
        for row in ranking.table.to_dict("records"):
            tracker.log_metrics({k: row[k] for k in ("fid", "kid_mean", "kid_std") if not math.isnan(row[k])}, step=int(row["step"]))
        writer = st.begin("selected_snapshots")
        grids = write_selection(writer, ranking, chosen, {step: path for step, _, path in local}, validation)
        version, vdir, _ = writer.seal(salt=json.dumps({"selected": chosen, "validation": list(validation_rows["id"])}))
    ranking_table = ranking.table.assign(selected=ranking.table["step"].isin(chosen))
    meta = {
        **version_metadata(st, version, vdir),
        "selected_steps": dg.MetadataValue.json(chosen),
        "override": bool(config.override),
        "metric": sel.metric,
        "ranking": table_value(ranking_table),
        "validation_pages": len(validation),
        "reference_pages": len(reference),
        "feature_extractor": ranking.feature_extractor,
        "random_init": ranking.random_init,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in ranking.notes) or "_none_"),
        "mlflow_run_id": tracker.run_id,
        **{f"grid_step_{s}": _grid(st, vdir, g, f"snapshot step {s} (rank {int(ranking_table.loc[ranking_table.step == s, 'rank'].iloc[0])}): "
                                                "real page | coloring", f"grid_step_{s}", 256, image_budget(len(grids)))
           for s, g in grids.items()},
    }
    if ranking.random_init:
        meta["fid_note"] = RANDOM_INIT_NOTE
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- pseudolabels (§IV-B-3) ---------------------------------------------------------------------------


@dg.asset(
    deps=[selected_snapshots, page_splits, BW, STYLEGAN, INVERSION],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "data"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "parquet"},
    description="Pseudolabels for self-training: the selected snapshots colorize every real training page several times "
                "(distinct snapshots, then drafts from the inversion encoder mixed with random CLS vectors); PNGs + manifest.",
)
@commits_last
def pseudolabels(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                 device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import colorization_config
    from mangacolor.stages.common import to_local
    from mangacolor.stages.colorization.bundle import stored_inversion
    from mangacolor.stages.colorization.data import chosen_snapshots, real_training_rows
    from mangacolor.stages.colorization.pseudolabels import make_pseudolabels

    st, spec, cfg = store.get(), device.spec(), colorization_config(settings.load())
    flags = cfg.variant
    writer = st.begin("pseudolabels")
    if not flags.self_training:
        version, vdir, _ = writer.seal(salt="self_training: false")
        return dg.MaterializeResult(metadata={**version_metadata(st, version, vdir), "skipped": True, "variant": flags.name(),
                                              "note": "colorizer.variant.self_training is false: no pseudolabels"},
                                    data_version=dg.DataVersion(version))
    real = real_training_rows(st, cfg.pseudolabels.max_pages, cfg.seed)
    chosen = chosen_snapshots(st)
    fallbacks = []
    params = {"stage": {"name": "pseudolabels", **cfg.pseudolabels.model_dump(mode="json"), "pages": len(real),
                        "snapshots": [int(s) for s in chosen["step"]]}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        inversion = stored_inversion(st, spec.device) if flags.use_drafts else None
        if flags.use_drafts and inversion is None:
            fallbacks.append("inversion_encoder not materialized: colorings differ by snapshot only, no drafts")
        snapshots = [(int(r.step), to_local(st, r.uri, Path(tmp) / f"{int(r.step)}.safetensors")) for r in chosen.itertuples()]
        summary = make_pseudolabels(st, real, snapshots, writer, cfg.pseudolabels, spec.device, inversion, cfg.seed,
                                           progress_logger(context, len(real), "pseudolabels"), spec.autocast, cfg.page_canvas())
        fallback = _fallback_meta(fallbacks, tracker)
        version, vdir, frame = writer.seal(salt=json.dumps({"snapshots": [s for s, _ in snapshots], "use_drafts": flags.use_drafts}))
        tracker.log_metrics({"pages": summary.pages, "colorings": summary.colorings, "per_page": summary.per_page,
                             "quarantined": summary.quarantined})
        if summary.quarantined:
            context.log.warning(f"pseudolabels: {summary.quarantined} unreadable pages quarantined (reasons in the manifest)")
    labelled = frame[frame["status"] == "ok"] if len(frame) else frame
    first = labelled[labelled["bw_id"] == labelled["bw_id"].iloc[0]].sort_values("coloring") if len(labelled) else labelled
    shown = [read_image(st.read_bytes(first["source_uri"].iloc[0]))] if len(first) else []
    shown += [read_image(st.read_bytes(f"{vdir}/{p}")) for p in first["path"]]
    shown += [read_image(st.read_bytes(f"{vdir}/{p}")) for p in first["draft_path"] if isinstance(p, str)]
    meta = {
        **version_metadata(st, version, vdir),
        "pages": summary.pages,
        "quarantined": summary.quarantined,
        "colorings": summary.colorings,
        "colorings_per_page": summary.per_page,
        "snapshots": dg.MetadataValue.json([s for s, _ in snapshots]),
        "draft_source": summary.draft_source,
        "variant": flags.name(),
        **fallback,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in summary.notes) or "_none_"),
        "mlflow_run_id": tracker.run_id,
        "samples": samples_md(st, vdir, shown, f"{first['bw_id'].iloc[0] if len(first) else ''}: page | its colorings | their drafts"),
    }
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- step 2: self-training ----------------------------------------------------------------------------


@dg.asset(
    deps=[pseudolabels, selected_snapshots, SYNTHETIC, *SYNTHETIC_LOWER, DRAFTS, COLOR, BW, page_splits],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "training"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch"},
    description="Step 2 (§III): self-training on synthetic pairs plus pseudolabelled real pages, all supervised, the adversarial "
                "loss on both together with real colour pages as D's real side (λ_syn 1.2, batch 8): the final colorizer. With "
                "`variant.self_training: false`, step 1's best fine-tuned snapshot passes through.",
)
@commits_last
def colorizer_step2(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import checkpoint_key, colorization_config, stage_flags
    from mangacolor.stages.colorization.train import step2_train
    from mangacolor.stages.colorization.data import REAL_ROLES, add_training_rows, chosen_snapshots, pseudolabel_pairs, rows_digest, synthetic_pairs

    st, spec, cfg = store.get(), device.spec(), colorization_config(settings.load())
    flags = cfg.variant
    best = chosen_snapshots(st).iloc[0]
    writer = st.begin("colorizer_step2")
    if not flags.self_training:
        data = st.read_bytes(best["uri"])
        _weights_row(writer, data, source=f"selected_snapshots step {int(best['step'])}")
        # The weights are step 1's: so are the real pages they saw (the holdout check reads them here).
        step1 = st.latest_manifest("colorizer_step1_finetuned")
        for row in step1[step1["role"].isin(REAL_ROLES)].to_dict("records"):
            writer.add(row)
        version, vdir, _ = writer.seal(salt="self_training: false")
        note = f"variant.self_training is false: step 1's best snapshot (step {int(best['step'])}) passes through"
        return dg.MaterializeResult(metadata={**version_metadata(st, version, vdir), "skipped": True, "variant": flags.name(), "note": note},
                                    data_version=dg.DataVersion(version))
    titles = _color_titles(context, st)
    pairs = synthetic_pairs(st, titles, flags.use_drafts, flags.synthetic)
    pseudo = pseudolabel_pairs(st, flags.use_drafts)
    if pseudo.empty:
        raise dg.Failure("pseudolabels is empty: materialize pseudolabels (with variant.self_training true) first")
    init = cfg.step2.init == "best_snapshot"
    work = checkpoint_dir(context, checkpoint_key(cfg, "step2", pairs=rows_digest(pairs.rows, ("id", "sha256", "draft_uri")),
                                                   pseudo=rows_digest(pseudo), init=best["sha256"] if init else None))
    resumed = resumed_from(work)
    params = {"stage": {"name": "step2", "variant": flags.name(), "synthetic_pairs": len(pairs.rows), "pseudolabels": len(pseudo),
                        "real_pages": int(pseudo["bw_id"].nunique()), "init": cfg.step2.init, "device": spec.description}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags(cfg.variant.tags())
        fallback = _fallback_meta(pairs.fallbacks, tracker)
        result, launched = run_stage(context, torchrun, "colorizer_step2", partial(step2_train, tmp=Path(tmp)), tracker=tracker,
                                     mlflow=mlflow, settings=settings, store=store, device=device, work=work, titles=titles)
        tracker.log_artifact(result.generator, "weights")
        _log_training_pages(tracker, st, pseudolabel_bw=pseudo, synthetic=pairs.rows)
        _weights_row(writer, Path(result.generator).read_bytes())
        add_training_rows(writer, "pseudolabel_bw", pseudo, id_column="bw_id")
        add_training_rows(writer, "synthetic", pairs.rows)
        version, vdir, _ = writer.seal(salt=stage_flags(cfg, "step2"))
    meta = {
        **_train_metadata(st, version, vdir, result, resumed, tracker),
        **launched,
        "variant": flags.name(),
        "synthetic_pairs": len(pairs.rows),
        "pseudolabels": len(pseudo),
        "real_pages": int(pseudo["bw_id"].nunique()),
        "init": cfg.step2.init + (f" (step {int(best['step'])})" if init else ""),
        **fallback,
        "weights": dg.MetadataValue.path(st.uri(st.relative(f"{vdir}/{WEIGHTS}"))),
    }
    if result.snapshots:
        meta["samples"] = _grid(st, vdir, result.snapshots[-1].samples, "bw | colorized | target (synthetic and pseudolabelled rows)")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- fine-tune, bundle, registry ----------------------------------------------------------------------


@dg.asset(
    deps=[colorizer_step2, STYLEGAN, DRAFTING, DRAFTING_FINAL, INVERSION],
    group_name=GROUP,
    owners=OWNERS, tags={"stage": GROUP, "role": "model"},
    kinds={"pytorch", "mlflow"},
    description="The final colorizer: step 2's generator (step 1 ended with the matched-pair fine-tune, Appendix D) written as a "
                f"model bundle (colorizer + StyleGAN + drafting + inversion, and the training canvas) and registered as {MODEL_NAME} with alias 'candidate' "
                f"(an ablation variant as {MODEL_NAME}-<variant>, without aliases).",
)
@commits_last
def colorizer_final(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.colorization.config import colorization_config
    from mangacolor.stages.common import to_local
    from mangacolor.registry import register_bundle
    from mangacolor.stages.colorization.bundle import make_bundle, random_init_flags, write_folder

    st, cfg = store.get(), colorization_config(settings.load())
    flags = cfg.variant
    step2_dir = st.latest_dir("colorizer_step2")
    random_init = random_init_flags(cfg, st)
    params = {"stage": {"name": "final", "variant": flags.name(), "canvas": list(cfg.page_canvas())}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.run(context, params=params) as tracker:
        tracker.set_tags({**cfg.variant.tags(), **{f"random_init.{k}": str(v).lower() for k, v in random_init.items()}})
        generator = to_local(st, f"{step2_dir}/{WEIGHTS}", Path(tmp) / "colorizer.safetensors")
        inputs = {a: st.latest_version(a) for a in ("colorizer_step2", "colorizer_step1_finetuned", "page_pairs", "stylegan",
                                                     "drafting_network", "drafting_network_final", "inversion_encoder")}
        info = {"colorizer_config": cfg.generator_config().to_dict(), "canvas": list(cfg.page_canvas()), "variant": flags.name(),
                "flags": flags.model_dump(), "dagster_run_id": context.run.run_id, "mlflow_run_id": tracker.run_id,
                "inputs": inputs, "random_init": random_init, "fallbacks": []}
        bundle_dir, parts, notes = make_bundle(st, generator, flags, Path(tmp), info)
        shown = _bundle_samples(st, bundle_dir)
        fallback = _fallback_meta(notes, tracker)
        writer = st.begin("colorizer_final")
        write_folder(writer, bundle_dir, "bundle", "bundle")
        version, vdir, _ = writer.seal(salt=flags.name())
        tags = {**cfg.variant.tags(), "dagster.run_id": context.run.run_id, "data_version": version,
                "random_init": str(any(random_init.values())).lower(), **{f"random_init.{k}": str(v).lower() for k, v in random_init.items()}}
        model = register_bundle(bundle_dir, tags=tags, client=tracker.client)
    bundle_uri = st.uri(st.relative(f"{vdir}/bundle"))
    meta = {
        **version_metadata(st, version, vdir),
        "registered_model": model.name,  # the full method: MODEL_NAME; a variant: its own name, no alias
        "registered_version": int(model.version),
        "model_uri": f"models:/{model.name}/{model.version}",
        "alias": "candidate" if model.name == MODEL_NAME else "none",
        "bundle_uri": dg.MetadataValue.path(bundle_uri),
        "bundle_parts": dg.MetadataValue.json(parts),
        "variant": flags.name(),
        "canvas": dg.MetadataValue.json(list(cfg.page_canvas())),
        "random_init": dg.MetadataValue.json(random_init),
        **fallback,
        "mlflow_run_id": tracker.run_id,
        "samples": samples_md(st, vdir, shown, "holdout pages: page | colorized by this bundle (no hints)", height=192),
    }
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


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
