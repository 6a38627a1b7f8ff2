"""Synthetic black-and-white pages (README § The asset graph, "synthetic"; paper §IV-A-3, steps 1-3).

`xdog_pages` -> `refiner_model` -> `refined_pages` -> `cut_model` -> `synthetic_bw_pages`.
The per-title stages are partitioned like `color_pages` and eager; the two models are trained on
request on the GPU pool. Each per-title stage's metadata carries `synthetic_gap`, the distance of
its pages to the real black-and-white pages of the train split (weight-free statistics, plus
FID/KID when the preset's `synthetic_gap.inception` names a network), next to the gaps of the
earlier steps of the same title, so the table shows whether each step brings the pages closer;
and a strip of the same pages through every step so far. Output rows keep `source_id`, the colour
page each synthetic page was made from.
"""


import functools

import dagster as dg
import pandas as pd

from mangacolor import config as mc_config
from mangacolor.eval.leakage import TRAINED_ROLES
from mangacolor.io.images import read_image
from mangacolor.io.store import ok_rows

from .common import (
    checkpoint_dir, color_titles, gpu_asset, holdout_check, progress_logger, resumed_from, stage_asset, work_dir,
)
from .metadata import manifest_uri, model_result, samples_md, table_metadata, table_value, version_metadata
from .digests import digest_key
from .launch import TorchrunResource, run_stage
from .ingest import bw_pages, color_pages, page_splits
from .resources import DeviceResource, MlflowResource, SettingsResource, StoreResource

EAGER = dg.AutomationCondition.eager()
OWNERS = ["team:ml"]
GROUP = "synthetic"
RANDOM_INIT_NOTE = "random-init Inception: not comparable to published FID"
STEP_NAMES = {"color_pages": "colour", "xdog_pages": "xDoG", "refined_pages": "refined", "synthetic_bw_pages": "CUT"}


# --- shared by the stages --------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _extractor(gap_cfg_json: str, device: str, cache_dir: str):
    from mangacolor.stages import synthetic as synth

    return synth.gap_extractor(synth.GapConfig.model_validate_json(gap_cfg_json), device, cache_dir)


def _gap_metadata(context, st, steps: dict[str, pd.DataFrame], preset: dict, device: str, tracker=None) -> dict:
    """`synthetic_gap` of the last step's pages (ok manifest rows with `uri`) against the real training pages,
    and of the earlier steps beside it. Pages are chosen from the manifests first and read on access."""
    from mangacolor.eval.inception import WeightsNotFoundError
    from mangacolor.stages import synthetic as synth

    if st.latest_version("page_splits") is None:
        return {"synthetic_gap_note": "page_splits not materialized yet: no real pages to compare with"}
    steps = {name: rows for name, rows in steps.items() if len(rows)}
    if not steps:
        return {"synthetic_gap_note": "no ok pages to compare"}
    cfg = mc_config.stage_config(preset, "synthetic_gap", synth.GapConfig)
    real = synth.gap_pages(st, synth.training_bw_rows(st), cfg)
    steps = {name: synth.gap_pages(st, rows, cfg) for name, rows in steps.items()}
    meta = {}
    try:
        extractor = _extractor(cfg.model_dump_json(), device, str(work_dir() / "fid_features"))
    except WeightsNotFoundError as exc:
        # A metric must not fail the data stage: weight-free statistics only, and say how to get FID.
        context.log.warning(f"synthetic_gap without FID/KID: {exc}")
        extractor, meta["fid_note"] = None, str(exc)
    table = synth.gaps_by_step(steps, real, cfg, extractor)
    shown = table[["step", *[c for c in synth.GAP_COLUMNS if c in table]]]
    last = table.iloc[-1]
    numbers = {k: float(v) for k, v in last.items() if k not in ("step", "feature_extractor", "resize", "random_init")}
    context.log.info("synthetic_gap by step:\n" + shown.to_string(index=False))
    meta |= {
        "synthetic_gap": numbers["gap"],
        "synthetic_gap_by_step": table_value(shown),
        "synthetic_gap_details": dg.MetadataValue.json(numbers),
    }
    if "fid" in last:
        meta |= {"fid": numbers["fid"], "kid": numbers["kid_mean"], "fid_features": last["feature_extractor"],
                 "random_init": bool(last["random_init"])}
        if last["random_init"]:
            meta["fid_note"] = RANDOM_INIT_NOTE
    if tracker is not None:
        for row in shown.to_dict("records"):
            tracker.log_metrics({f"synthetic_gap/{row['step']}/{c}": float(v) for c, v in row.items() if c != "step"})
        if meta.get("random_init"):
            tracker.set_tags({"fid_note": RANDOM_INIT_NOTE})
    return meta


def _strip(st, title: str, steps: list[str], ids: list[str], extra: dict | None = None,
           extra_name: str = "CUT") -> tuple[list, str]:
    """The pages `ids` through colour and each step, side by side (`extra`: one more image per id, named `extra_name`),
    with their caption."""
    from mangacolor.stages import synthetic as synth

    stages = ["color_pages", *steps]
    names = [STEP_NAMES[a] for a in stages] + ([extra_name] if extra else [])
    images = synth.stage_strip(st, [(a, title) for a in stages], ids, extra)
    return images, f"{' | '.join(names)} — {', '.join(ids)}"


def _loop_metadata(result: dict, resumed: int, launched: dict) -> dict:
    """The refiner's or CUT's loop result as metadata: steps, the step it resumed from, its last metrics."""
    return {"steps": result["step"], "resumed_from_step": resumed,
            **{k.replace("/", "_"): float(v) for k, v in result["metrics"].items()}, **launched}


def _page_stage_result(context, st, asset: str, writer, summary, preset, device: str, tracker=None) -> dg.MaterializeResult:
    """Commit a per-title stage, then measure it (and the steps before it) against the real pages."""
    version, vdir, frame = writer.seal()
    title = context.partition_key
    chain = ["xdog_pages", "refined_pages", "synthetic_bw_pages"]
    steps = chain[: chain.index(asset) + 1]
    ok = frame[frame["status"] == "ok"].sort_values("id")
    # This step's pages from the sealed version: LATEST still names the previous one until the asset returns.
    pages = {STEP_NAMES[a]: ok_rows(st, a, [title], version_dirs={title: vdir} if a == asset else None) for a in steps}
    bad = frame[frame["status"] != "ok"][["id", "reason"]]
    meta = {
        "pages_ok": summary.ok,
        "quarantined": summary.quarantined,
        **version_metadata(st, version, vdir),
        **_gap_metadata(context, st, pages, preset, device, tracker),
        **table_metadata("quarantine", bad, manifest_uri(st, vdir)),
        # This step's pages from the sealed version: LATEST still names the previous one until the asset returns.
        "samples": samples_md(st, vdir, *_strip(st, title, steps[:-1], list(ok["id"][:2]),
                                               {r.id: read_image(st.read_bytes(f"{vdir}/{r.path}"), mode=None) for r in ok.head(2).itertuples()},
                                               STEP_NAMES[asset])),
    }
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


# --- step 1 ----------------------------------------------------------------------------------------


@stage_asset(GROUP, "data", owners=OWNERS, kinds=("parquet", "python"), partitions_def=color_titles, deps=[color_pages],
    automation_condition=EAGER,
    description="xDoG line art of every colour page of a title (§IV-A-3 step 1, preset section `xdog:`), each colour page "
                "colour-jittered first (Appendix B, `xdog.color_jitter`); pages xDoG refuses are quarantined.",
)
def xdog_pages(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
               device: DeviceResource) -> dg.MaterializeResult:
    from mangacolor.stages import synthetic as synth

    preset, st, title = settings.load(), store.get(), context.partition_key
    cfg = mc_config.stage_config(preset, "xdog", synth.XDoGStageConfig)
    rows = ok_rows(st, "color_pages", [title])
    writer = st.begin("xdog_pages", title)
    spread = mc_config.stage_config(preset, "synthetic_pages", synth.PageStageConfig)
    summary = synth.xdog_stage(rows, st, writer, cfg.xdog_config(), progress_logger(context, len(rows), f"xdog_pages[{title}]"),
                               color_jitter=cfg.color_jitter, workers=spread.workers)
    context.log.info(f"{title}: xDoG ({cfg.preset}) of {summary.ok} pages, {summary.quarantined} quarantined")
    return _page_stage_result(context, st, "xdog_pages", writer, summary, preset, str(device.spec().device))


# --- step 2 ----------------------------------------------------------------------------------------


@gpu_asset(GROUP, "training", deps=[bw_pages, page_splits],
    description="The xDoG refiner (§IV-A-3 step 2): learns xDoG(real black-and-white page) -> that page on the train split (never the holdout); preset section `refiner:`.",
)
def refiner_model(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                  device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.models.refiner import refine
    from mangacolor.stages import synthetic as synth
    from mangacolor.stages.common import checkpoint_key, rows_digest
    from mangacolor.training.refiner import RefinerTrainConfig, load_refiner

    preset, st, spec = settings.load(), store.get(), device.spec()
    cfg = mc_config.stage_config(preset, "refiner", RefinerTrainConfig)
    xcfg = mc_config.stage_config(preset, "xdog", synth.XDoGStageConfig)
    rows = synth.training_bw_rows(st)
    digest = rows_digest(rows)
    work = checkpoint_dir(context, checkpoint_key(cfg, synth.LOOP_ONLY, xdog=xcfg.model_dump(mode="json"), pages=digest))
    _, _, _, pairs = synth.refiner_pairs(st, preset, work)
    pairs.prepare(progress_logger(context, len(pairs), "xDoG of the real training pages"))
    resumed = resumed_from(work)
    params = {"xdog": xcfg.model_dump(mode="json"), "train_pages": len(rows), "train_pages_digest": digest,
              "resumed_from_step": resumed, "device": spec.description}
    with mlflow.run(context, params=params) as tracker:
        result, launched = run_stage(context, torchrun, "refiner_model", synth.refiner_train, tracker=tracker, mlflow=mlflow,
                                     settings=settings, store=store, device=device, work=work)
        model = load_refiner(result["weights"], spec.device)
        shown = []
        for line, real in (pairs[i] for i in range(min(2, len(pairs)))):
            shown += [line, refine(model, line, amp_dtype=spec.amp_dtype), real]
        samples = (shown, "xDoG(real) | refined | real — " + ", ".join(pairs.ids[:2]), 96)
        return model_result(st, "refiner_model", result["weights"], {"train": rows}, tracker, _loop_metadata(result, resumed, launched),
                            {"steps": result["step"]}, {"samples": samples})


def _translation(asset: str, deps: list, description: str) -> dg.AssetsDefinition:
    """`refined_pages` and `synthetic_bw_pages`, one asset written once: a title's pages of the step before through the
    latest trained network (`mangacolor.stages.synthetic.translate_title`), measured against the real pages."""

    @gpu_asset(GROUP, "data", name=asset, partitions_def=color_titles, deps=deps, automation_condition=EAGER,
        kinds=("parquet", "pytorch"),
        description=description,
    )
    def translation(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                    device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        from mangacolor.stages.synthetic import TRANSLATIONS, translate_title

        preset, st, spec, title = settings.load(), store.get(), device.spec(), context.partition_key
        writer, summary = translate_title(st, preset, spec, asset, title,
                                          lambda total: progress_logger(context, total, f"{asset}[{title}]"))
        model_asset = TRANSLATIONS[asset][1]
        with mlflow.run(context, params={model_asset: st.latest_version(model_asset)}, per_materialization=True) as tracker:
            return _page_stage_result(context, st, asset, writer, summary, preset, str(spec.device), tracker)

    return translation


refined_pages = _translation(
    "refined_pages", [xdog_pages, refiner_model],
    "xDoG pages of a title through the trained refiner (§IV-A-3 step 2): denser, closer to printed pages.")


# --- step 3 ----------------------------------------------------------------------------------------


@gpu_asset(GROUP, "training",
    deps=[refined_pages, bw_pages, page_splits, digest_key("refined_pages"), digest_key("bw_pages")],
    description="CUT (§IV-A-3 step 3) on 64x64 crops: refined pages of every colour title -> real black-and-white pages of the train split; preset section `cut:`.",
)
def cut_model(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
              device: DeviceResource, mlflow: MlflowResource, torchrun: TorchrunResource) -> dg.MaterializeResult:
    from mangacolor.models.cut import apply_cut
    from mangacolor.stages import synthetic as synth
    from mangacolor.stages.common import checkpoint_key, rows_digest
    from mangacolor.training.cut import CUTTrainConfig, load_cut_generator

    preset, st, spec = settings.load(), store.get(), device.spec()
    cfg = mc_config.stage_config(preset, "cut", CUTTrainConfig)
    known = context.instance.get_dynamic_partitions(color_titles.name)
    titles = [t for t in known if st.latest_version("refined_pages", t)]
    missing = sorted(set(known) - set(titles))
    if missing:
        context.log.warning(f"refined_pages not materialized for {missing}: CUT trains without those titles")
    source, target = ok_rows(st, "refined_pages", titles), synth.training_bw_rows(st)
    if source.empty:
        raise dg.Failure("no refined pages to translate: materialize refined_pages for at least one colour title")
    work = checkpoint_dir(context, checkpoint_key(cfg, synth.LOOP_ONLY, source=rows_digest(source), target=rows_digest(target)))
    resumed = resumed_from(work)
    params = {"source_titles": titles, "source_pages": len(source), "target_pages": len(target),
              "target_pages_digest": rows_digest(target), "resumed_from_step": resumed, "device": spec.description}
    with mlflow.run(context, params=params) as tracker:
        result, launched = run_stage(context, torchrun, "cut_model", synth.cut_train, tracker=tracker, mlflow=mlflow, settings=settings,
                                     store=store, device=device, work=work, titles=titles)
        G = load_cut_generator(result["weights"], spec.device)
        first = source.sort_values("id").iloc[0]
        translated = {first["id"]: apply_cut(G, read_image(st.read_bytes(first["uri"]), mode="L"), amp_dtype=spec.amp_dtype)}
        samples = (*_strip(st, first["title"], ["xdog_pages", "refined_pages"], [first["id"]], translated), 96)
        return model_result(st, "cut_model", result["weights"], {"source": source, "target": target}, tracker,
                            _loop_metadata(result, resumed, launched), {"steps": result["step"]}, {"samples": samples})


synthetic_bw_pages = _translation(
    "synthetic_bw_pages", [refined_pages, cut_model],
    "The synthetic black-and-white pages (§IV-A-3 step 3): refined pages translated by CUT, whole pages at once; "
    "`source_id` names the colour page.")


# --- the holdout never trains the refiner or CUT ------------------------------------------------------

holdout_never_trained_refiner = holdout_check(refiner_model, TRAINED_ROLES["refiner_model"])
holdout_never_trained_cut = holdout_check(cut_model, TRAINED_ROLES["cut_model"])
