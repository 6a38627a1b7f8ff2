"""Evaluation assets (README § The asset graph, "evaluation"; paper §V, Tables 1, 3 and 4).

`fid_report` [holdout | manga109] scores the registered models in automatic mode against the
colour training pages (mangacolor/eval/report.py): the `candidate` with its drafts and with an
empty draft, the `champion` when it is another version, and the latest version of each ablation
variant. Its blocking check `candidate_not_worse` applies the gate (mangacolor/eval/gate.py).

Promotion is a separate asset, `champion_model`, downstream of `fid_report`, in its own job
(`promote_model`): the sensor requests it once per candidate version, after that version's
evaluation runs (one per set) have finished. It re-derives the decision from the stored reports of
every gating set, so it cannot promote a candidate that failed on any set, or one that was compared
with a champion that has changed since, whether the sensor or a person launches it.

`inference_benchmark` times the candidate like Table 4 on every device present.

Automation: `new_model_version_sensor` (running by default) polls the MLflow registry and, for each
new version, requests `evaluate_model` for both sets with that version in the run config (so the
report scores exactly it, whatever `@candidate` names when the run starts), `benchmark_model`, and
later one `promote_model`; `manga109_weekly` (cron and status from the preset's `evaluation.schedule`,
running by default, skipping while no champion or Manga109 pages exist) re-evaluates the champion on Manga109.
"""


import functools
import io
import json
import os
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from mangacolor import config as mc_config
from mangacolor.config import MODEL_NAME
from mangacolor.data.splits import holdout_pages, training_pages
from mangacolor.eval import sets as eval_sets
from mangacolor.eval.gate import decide_promotion, set_verdict
from mangacolor.eval.leakage import leaked_pages, trained_pages
from mangacolor.eval.schedule import ScheduleConfig, preset_schedule

if TYPE_CHECKING:
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.report import EvaluationConfig

from .common import gpu_asset, stage_asset
from .metadata import samples_md, table_value, version_metadata
from .digests import digest_key
from .ingest import color_pages, manga109_pages, page_splits
from .resources import DeviceResource, MlflowResource, SettingsResource, StoreResource

GROUP = "evaluation"
REPORT_COLUMNS = ["row", "fid", "fid_lo", "fid_hi", "kid", "ciede2000", "lpips", "psnr", "ssim"]
OWNERS = ["team:evaluation"]
EVAL_SETS = dg.StaticPartitionsDefinition(list(eval_sets.EVAL_SETS))
COLORIZER_FINAL = dg.AssetKey("colorizer_final")


class EvaluateConfig(dg.Config):
    """Which registered version `fid_report` scores as the one under test (the sensor sets it; null: `@candidate` now)."""

    model_name: str = Field(MODEL_NAME, description=f"{MODEL_NAME}, or a variant's own model {MODEL_NAME}-<variant>")
    model_version: str | None = Field(None, description="the version to evaluate; null: whatever the alias 'candidate' names at run time")

    def pinned(self) -> dict[str, str] | None:
        return {self.model_name: self.model_version} if self.model_version else None


def _config(settings: SettingsResource) -> "EvaluationConfig":
    from mangacolor.eval import report

    return mc_config.stage_config(settings.load(), "evaluation", report.EvaluationConfig)


@functools.lru_cache(maxsize=2)
def _inception(weights: str, device: str):
    # Building the 24M-parameter network takes seconds: once per process and device.
    from mangacolor.eval.inception import build_inception

    return build_inception(weights, device)


def _extractor(cfg: "EvaluationConfig", device, store: StoreResource, log) -> "FeatureExtractor":
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import WeightsNotFoundError

    try:
        network = _inception(cfg.inception, str(device))
    except WeightsNotFoundError as exc:
        raise dg.Failure(f"fid_report needs the FID Inception weights (preset evaluation.inception={cfg.inception!r}): {exc}") from exc
    # Content-addressed feature cache under the store: re-evaluation computes only new images.
    cache = store.get().uri(".cache", "fid_features")
    return FeatureExtractor(network, resize=cfg.resize, batch_size=cfg.batch_size, device=device, cache_dir=cache,
                            storage_options=store.storage_options or None, progress=log)


def _read_record(st, set_name: str) -> dict | None:
    if st.latest_version("fid_report", set_name) is None:
        return None
    return json.loads(st.read_bytes(f"{st.latest_dir('fid_report', set_name)}/report.json"))


def _samples(pages: list[np.ndarray], samples: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    strip = []
    for i in range(min(2, len(pages))):
        strip.append(pages[i])
        strip += [outs[i] for outs in samples.values() if i < len(outs)]
    return strip


# --- fid_report --------------------------------------------------------------------------------


REPORT_METRICS = ("fid", "fid_lo", "fid_hi", "kid", "kid_lo", "kid_hi", "ciede2000", "lpips", "psnr", "ssim", "clip_is", "aesthetic")


def _log_model_metrics(tracker, models, lines: dict, set_name: str) -> None:
    """Each registered version's rows also as metrics of its logged model (`<set>/<mode>/<metric>`), so the
    registry shows a version's evaluations; the run keeps them under the role (`candidate/auto/fid`)."""
    from mangacolor.inference.registry import log_version_metrics

    for m in models:
        if not m.uri.startswith("models:/"):
            continue
        name, version = m.uri[len("models:/"):].rsplit("/", 1)
        values = {f"{set_name}/{row.split('/', 1)[1]}/{k}": lines[row][k] for row in m.rows() if row in lines
                  for k in REPORT_METRICS if lines[row].get(k) is not None and np.isfinite(lines[row][k])}
        if values:
            log_version_metrics(tracker.client, tracker.run_id, tracker.client.get_model_version(name, version), values)


@gpu_asset(GROUP, "evaluation", owners=OWNERS, partitions_def=EVAL_SETS,
    deps=[COLORIZER_FINAL, page_splits, manga109_pages, dg.AssetDep(color_pages, partition_mapping=dg.AllPartitionMapping()),
          digest_key("color_pages")],
    kinds=("parquet", "pytorch"),
    description="FID/KID with bootstrap intervals of the registered models in automatic mode (candidate, champion, "
                "ablation variants) on the holdout or Manga109, beside the paper's Tables 1 and 3.",
)
def fid_report(context: dg.AssetExecutionContext, config: EvaluateConfig, settings: SettingsResource, store: StoreResource,
               device: DeviceResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.stages.evaluation import write_report
    from mangacolor.eval import report
    from mangacolor.eval.candidates import models_to_evaluate
    from mangacolor.eval.inception import WeightsNotFoundError
    from mangacolor.inference.bundle import ModelBundle

    cfg, st, spec, set_name = _config(settings), store.get(), device.spec(), context.partition_key
    try:
        page_rows = eval_sets.evaluation_rows(st, set_name, cfg.max_pages, cfg.seed)
        ref_rows = eval_sets.reference_rows(st, cfg.reference_exclude_titles, cfg.max_reference_pages, cfg.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"fid_report[{set_name}]: {exc}") from exc
    params = {**cfg.model_dump(mode="json", exclude={"benchmark", "schedule"}), "set": set_name}
    with mlflow.run(context, params=params) as tracker:
        try:
            models = models_to_evaluate(tracker.client, pinned=config.pinned())
        except LookupError as exc:
            raise dg.Failure(str(exc)) from exc
        context.log.info("evaluating " + ", ".join(f"{m.name} v{m.version} ({m.variant})" for m in models if m.modes))
        loaded = [(m, ModelBundle.load(m.uri, spec.device) if m.modes else None) for m in models]
        # Streamed: pages are read a batch at a time; only features and per-page numbers are kept.
        pages = eval_sets.LazyPages(st, page_rows["uri"], "L")
        truths = eval_sets.LazyPages(st, eval_sets.matched_truth_uris(st, page_rows), "RGB")
        try:
            result = report.evaluate_models(loaded, pages, eval_sets.LazyPages(st, ref_rows["uri"], "RGB"),
                                            _extractor(cfg, spec.device, store, context.log.info), cfg, set_name,
                                            eval_sets.reference_description(cfg.reference_exclude_titles), context.log.info,
                                            truths=truths, reference_key=eval_sets.content_key(ref_rows))
        except WeightsNotFoundError as exc:
            raise dg.Failure(f"fid_report[{set_name}]: {exc}") from exc
        passed, reason = result.gate_verdict(cfg.gate.metric, cfg.gate.margin)
        markdown = result.markdown(f"{'passes' if passed else 'FAILS'}: {reason}")
        record = result.to_json()
        blob = json.dumps(record, indent=1, default=str)

        version, vdir = write_report(st, set_name, page_rows, result.table, markdown, blob)
        _log_report(tracker, result, models, set_name, markdown, blob)
    meta = _report_metadata(st, version, vdir, result, record, passed, reason, page_rows, ref_rows, tracker,
                            _samples(pages[: cfg.n_samples], result.samples))
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


def _log_report(tracker, result, models, set_name: str, markdown: str, blob: str) -> None:
    """Every row's numbers as metrics of the run (and of each registered version's logged model), the report as text."""
    from mangacolor.eval import report

    lines = {line["row"]: line for line in result.table.to_dict("records")}
    for row, line in lines.items():
        tracker.log_metrics({f"{row}/{k}": line[k] for k in REPORT_METRICS if line.get(k) is not None and np.isfinite(line[k])})
    _log_model_metrics(tracker, models, lines, set_name)
    tracker.log_text("report.md", markdown)
    tracker.log_text("report.json", blob)
    tracker.set_tags({"random_init": str(result.random_init)} | ({"fid_note": report.RANDOM_INIT_NOTE} if result.random_init else {}))


def _report_metadata(st, version: str, vdir: str, result, record: dict, passed: bool, reason: str, page_rows, ref_rows, tracker,
                     shown: list) -> dict:
    """fid_report's metadata: the candidate's numbers, the gate's verdict, where the whole report is."""
    from mangacolor.eval import report

    # The model under test: the candidate, or (no candidate yet) the one pinned model scored alone, e.g. an import.
    under_test = record["candidate"]["row"] or next(iter(record["rows"]))
    cand = record["rows"][under_test]
    meta = {
        **version_metadata(st, version, vdir),
        # Our rows only; the report beside the paper's Tables 1 and 3 and every column are in the store.
        "report": table_value(result.table[[c for c in REPORT_COLUMNS if c in result.table]]),
        "report_full": dg.MetadataValue.path(st.uri(st.relative(f"{vdir}/report.md"))),
        "metrics_full": dg.MetadataValue.path(st.uri(st.relative(f"{vdir}/metrics.parquet"))),
        "random_init": result.random_init,
        "candidate_version": record["candidate"]["version"] or "none",
        "evaluated_row": under_test,
        "champion_version": record["champion"]["version"] or "none",
        "candidate_fid": float(cand["fid"]),
        "candidate_kid": float(cand["kid_mean"]),
        "paired_pages": int(cand["paired"].get("n_pairs", 0)),
        **{f"candidate_{m}": float(cand["paired"][m]) for m in ("ciede2000", "lpips", "psnr", "ssim") if cand["paired"].get("n_pairs")},
        "clip_is": result.extra.get("clip_is", ""),
        "aesthetic": result.extra.get("aesthetic", ""),
        "gate_passed": passed,
        "gate_reason": reason,
        "pages": len(page_rows),
        "reference_pages": len(ref_rows),
        "features_computed": result.features_computed,
        "features_cached": result.features_cached,
        "feature_extractor": cand["feature_extractor"],
        "resize": cand["resize"],
        "fid_method": cand["fid_method"],
        "mlflow_run_id": tracker.run_id,
        "samples": samples_md(st, vdir, shown, "page | " + " | ".join(result.samples)),
    }
    if result.random_init:
        meta["random_init_note"] = report.RANDOM_INIT_NOTE
    return meta


@dg.asset_check(asset=fid_report, blocking=True, partitions_def=EVAL_SETS,
                description="The candidate is not worse than the champion beyond the bootstrap interval (mangacolor/eval/gate.py).")
def candidate_not_worse(context: dg.AssetCheckExecutionContext, settings: SettingsResource, store: StoreResource) -> dg.AssetCheckResult:
    cfg = _config(settings)
    record = _read_record(store.get(), context.partition_key)
    if record is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no fid_report for this set"})
    passed, reason = set_verdict(record, cfg.gate.metric, cfg.gate.margin)
    return dg.AssetCheckResult(passed=passed, description=reason, metadata={
        "reason": reason, "metric": cfg.gate.metric, "margin": cfg.gate.margin,
        "candidate_version": record["candidate"]["version"] or "none", "champion_version": record["champion"]["version"] or "none",
    })


@dg.asset_check(asset=fid_report, blocking=True, partitions_def=EVAL_SETS,
                description="No evaluated page is in the train split of page_splits, and none was ever trained on: every "
                            "committed version of every training asset (refiner, CUT, colorizer steps, fine-tune) is read, "
                            "by page id and by content.")
def holdout_disjoint_eval(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    st, set_name = store.get(), context.partition_key
    evaluated_rows = st.latest_manifest("fid_report", set_name)
    evaluated = set(evaluated_rows["id"])
    splits = st.latest_manifest("page_splits")
    leaked = evaluated & set(training_pages(splits)["id"])
    outside = evaluated - set(holdout_pages(splits)["id"]) if set_name == "holdout" else set()
    trained = leaked_pages(evaluated_rows, trained_pages(st))
    return dg.AssetCheckResult(passed=not leaked and not outside and trained.empty, metadata={
        "evaluated": len(evaluated), "in_train_split": len(leaked), "holdout_set_pages_outside_holdout": len(outside),
        "trained_on": len(trained),
        "trained_on_by": dg.MetadataValue.json(trained.head(20).to_dict("records")),
        "examples": dg.MetadataValue.json(sorted(leaked | outside | set(trained["id"]))[:10]),
    })


@dg.asset_check(asset=fid_report, blocking=True, partitions_def=EVAL_SETS,
                description="A report made with the random-init Inception says so in its markdown and metadata.")
def random_init_flagged(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    from mangacolor.eval import report

    st, set_name = store.get(), context.partition_key
    record = _read_record(st, set_name)
    markdown = st.read_bytes(f"{st.latest_dir('fid_report', set_name)}/report.md").decode()
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=fid_report.key, asset_partitions=[set_name]), limit=1).records
    meta = records[0].asset_materialization.metadata if records else {}
    flag = getattr(meta.get("random_init"), "value", None)
    note = getattr(meta.get("random_init_note"), "value", "")
    random_rows = any(r["random_init"] for r in record["rows"].values())
    ok = flag == random_rows and (not random_rows or (report.RANDOM_INIT_NOTE in markdown and note == report.RANDOM_INIT_NOTE))
    return dg.AssetCheckResult(passed=ok, metadata={"random_init": random_rows, "metadata_flag": str(flag),
                                                    "markdown_says_so": report.RANDOM_INIT_NOTE in markdown})


# --- promotion ---------------------------------------------------------------------------------


@stage_asset(GROUP, "model", owners=OWNERS, kinds=("mlflow",), deps=[fid_report],
    description="The `champion` alias of the registered colorizer: moved to the candidate only when its reports on every "
                "gating set (evaluation.gate.sets) pass the gate against the current champion.",
)
def champion_model(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                   mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.inference.registry import promote, version_by_alias

    cfg, st = _config(settings), store.get()
    reports = {s: _read_record(st, s) for s in cfg.gate.sets}
    with mlflow.run(context, params={"gate": cfg.gate.model_dump(mode="json")}) as tracker:
        current = version_by_alias("champion", client=tracker.client)
        before = str(current.version) if current is not None else None
        decision = decide_promotion(reports, cfg.gate.sets, before, cfg.gate.metric, cfg.gate.margin)
        if decision.promote:
            promote(decision.version, client=tracker.client)
            tracker.client.set_model_version_tag(MODEL_NAME, decision.version, "promoted_by_dagster_run", context.run.run_id)
        after = decision.version if decision.promote else before
        tracker.log_text("decision.json", json.dumps({"promote": decision.promote, "version": decision.version,
                                                      "reasons": decision.reasons}, indent=1))
    context.log.info(f"champion_model: {decision.summary}")
    return dg.MaterializeResult(
        metadata={"champion_version": after or "none", "previous_champion": before or "none", "promoted": decision.promote,
                  "decision": decision.summary, "reasons": dg.MetadataValue.json(decision.reasons)},
        data_version=dg.DataVersion(f"champion-v{after}"),
    )


# --- inference_benchmark -----------------------------------------------------------------------


@gpu_asset(GROUP, "evaluation", owners=OWNERS, deps=[COLORIZER_FINAL],
    description="Seconds per page for preprocessing (drafting network + StyleGAN) and colorization, median of N runs, "
                "and peak memory, on every device present, beside the paper's Table 4.",
)
def inference_benchmark(context: dg.AssetExecutionContext, settings: SettingsResource, store: StoreResource,
                        mlflow: MlflowResource) -> dg.MaterializeResult:
    from mangacolor.eval.benchmark import benchmark_table, run_benchmarks
    from mangacolor.inference.bundle import ModelBundle
    from mangacolor.io.bundle import download_bundle
    from mangacolor.inference.registry import version_by_alias
    from mangacolor.stages.evaluation import benchmark_markdown, write_benchmark

    cfg, st = _config(settings), store.get()
    with mlflow.run(context, params=cfg.benchmark.model_dump(mode="json")) as tracker:
        model = version_by_alias("candidate", client=tracker.client) or version_by_alias("champion", client=tracker.client)
        if model is None:
            raise dg.Failure(f"no {MODEL_NAME} version has the alias 'candidate' or 'champion': materialize colorizer_final first")
        path = download_bundle(f"models:/{MODEL_NAME}/{model.version}")
        results = run_benchmarks(lambda d: ModelBundle.load(path, d), cfg.benchmark, cfg.inference_options(), context.log.info)
        table_frame = benchmark_table(results)
        markdown = benchmark_markdown(f"{MODEL_NAME} v{model.version}", table_frame)
        version, vdir = write_benchmark(st, results, markdown, str(model.version))
        for r in results:
            key = f"{r['device']}_{r['width']}x{r['height']}"
            tracker.log_metrics({f"{key}/{k}": r[k] for k in ("preprocessing_s", "colorization_s", "total_s",
                                                               "preprocessing_peak_mb", "colorization_peak_mb") if np.isfinite(r[k])})
        tracker.log_text("benchmark.md", markdown)
    meta = {**version_metadata(st, version, vdir), "model_version": str(model.version), "table": table_value(table_frame),
            "table_full": dg.MetadataValue.path(st.uri(st.relative(f"{vdir}/benchmark.md"))), "mlflow_run_id": tracker.run_id}
    for r in results:
        key = f"{r['device']}_{r['width']}x{r['height']}"
        meta[f"{key}_colorization_s"] = float(r["colorization_s"])
        if r["has_drafting"]:
            meta[f"{key}_preprocessing_s"] = float(r["preprocessing_s"])
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


@dg.asset_check(asset=inference_benchmark, description="Every configured page size was measured on every device present.")
def benchmark_complete(settings: SettingsResource, store: StoreResource) -> dg.AssetCheckResult:
    from mangacolor.eval.benchmark import available_devices

    cfg, st = _config(settings), store.get()
    frame = pd.read_parquet(io.BytesIO(st.read_bytes(f"{st.latest_dir('inference_benchmark')}/benchmark.parquet")))
    want = {(d, int(s.size[0]), int(s.size[1])) for d in available_devices(cfg.benchmark.devices) for s in cfg.benchmark.sizes}
    got = {(r.device, int(r.height), int(r.width)) for r in frame.itertuples() if np.isfinite(r.colorization_s) and r.colorization_s > 0}
    return dg.AssetCheckResult(passed=want <= got, metadata={"missing": dg.MetadataValue.json(sorted(map(list, want - got)))})


# --- jobs, sensor, schedule --------------------------------------------------------------------

evaluate_model_job = dg.define_asset_job(
    "evaluate_model", selection=dg.AssetSelection.assets(fid_report),
    description="Score the registered models on one set (run config `ops: fid_report: config: model_version` names the "
                "version under test; null: the `candidate` alias at run time). Promotion is `promote_model`, once per version.",
)
promote_model_job = dg.define_asset_job(
    "promote_model", selection=dg.AssetSelection.assets(champion_model),
    description="Move the `champion` alias to the candidate if its stored reports on every gating set pass the gate.",
)
reevaluate_manga109_job = dg.define_asset_job(
    "reevaluate_manga109", selection=dg.AssetSelection.assets(fid_report),
    description="Re-score the champion (and the current candidate and variants) on Manga109; promotes nothing.",
)
benchmark_job = dg.define_asset_job("benchmark_model", selection=dg.AssetSelection.assets(inference_benchmark))
VERSION_TAGS = ("mangacolor/model_name", "mangacolor/model_version")


def _read_cursor(cursor: str | None) -> tuple[dict[str, int], list[str]]:
    """(highest version seen per registered model, candidate versions whose evaluation runs have not all finished)."""
    if not cursor:
        return {}, []
    if not cursor.startswith("{"):
        return {MODEL_NAME: int(cursor)}, []  # the oldest cursor: one integer
    raw = json.loads(cursor)
    if "seen" not in raw:
        return raw, []  # an older cursor: the seen dict alone
    return raw["seen"], list(raw.get("pending", []))


def _evaluations_finished(instance: dg.DagsterInstance, version: str) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name=evaluate_model_job.name,
                                           tags=dict(zip(VERSION_TAGS, (MODEL_NAME, version)))))
    return len(runs) >= len(EVAL_SETS.get_partition_keys()) and all(r.is_finished for r in runs)


@dg.sensor(jobs=[evaluate_model_job, promote_model_job, benchmark_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"A new version of {MODEL_NAME} in the MLflow registry: evaluate exactly that version on both sets "
                       f"(one run per set, the version in its run config), benchmark it, and once both evaluation runs have "
                       f"finished request one `promote_model` run; a new version of a variant ({MODEL_NAME}-<variant>): "
                       "evaluate both sets, where that version is a row beside the candidate. Cursor (JSON): the highest "
                       "version seen per registered model, and the versions waiting for promotion.")
def new_model_version_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    from mangacolor.eval.candidates import latest_versions

    latest = latest_versions(mlflow.client())
    seen, pending = _read_cursor(context.cursor)
    new = {name: v for name, v in latest.items() if v > int(seen.get(name, 0))}
    requests = []
    for name, version in sorted(new.items()):
        tags = dict(zip(VERSION_TAGS, (name, str(version))))
        prefix = f"v{version}" if name == MODEL_NAME else f"{name}-v{version}"
        config = dg.RunConfig(ops={fid_report.node_def.name: EvaluateConfig(model_name=name, model_version=str(version))})
        requests += [dg.RunRequest(job_name=evaluate_model_job.name, partition_key=p, run_key=f"{prefix}-{p}", tags=tags,
                                   run_config=config)
                     for p in EVAL_SETS.get_partition_keys()]
        if name == MODEL_NAME:
            requests.append(dg.RunRequest(job_name=benchmark_job.name, run_key=f"{prefix}-benchmark", tags=tags))
            pending.append(str(version))
    # Promotion reads the reports of every gating set: one run, after the evaluation runs of that version.
    for version in [v for v in pending if _evaluations_finished(context.instance, v)]:
        requests.append(dg.RunRequest(job_name=promote_model_job.name, run_key=f"v{version}-promote",
                                      tags=dict(zip(VERSION_TAGS, (MODEL_NAME, version)))))
        pending.remove(version)
    cursor = json.dumps({"seen": {**seen, **latest}, "pending": pending}, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"no new version of {MODEL_NAME} or its variants (latest {latest}, seen {seen}"
                                           + (f"; waiting for the evaluation runs of v{', v'.join(pending)})" if pending else ")"),
                               cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _preset_schedule() -> ScheduleConfig:
    """The schedule section of the preset the deployment runs (MANGACOLOR_PRESET), defaults otherwise."""
    try:
        return preset_schedule(mc_config.load_preset(os.environ.get("MANGACOLOR_PRESET", "demo")))
    except (FileNotFoundError, ValueError):
        return ScheduleConfig()


def build_manga109_schedule(cfg: ScheduleConfig) -> dg.ScheduleDefinition:
    status = dg.DefaultScheduleStatus.RUNNING if cfg.status == "RUNNING" else dg.DefaultScheduleStatus.STOPPED

    @dg.schedule(name="manga109_weekly", job=reevaluate_manga109_job, cron_schedule=cfg.cron,
                 execution_timezone=cfg.timezone, default_status=status,
                 description="Re-evaluate the champion on Manga109 (fid_report[manga109]); skips while there is no "
                             "champion or no Manga109 pages.")
    def manga109_weekly(context: dg.ScheduleEvaluationContext, mlflow: MlflowResource, store: StoreResource):
        # No champion yet is a skip; an unreachable or broken tracking store is an error.
        from mangacolor.inference.registry import version_by_alias

        champion = version_by_alias("champion", MODEL_NAME, mlflow.client())
        if champion is None:
            return dg.SkipReason(f"no {MODEL_NAME} version has the alias 'champion' yet")
        if store.get().latest_version("manga109_pages") is None:
            return dg.SkipReason("manga109_pages has no committed version: configure `manga109:` in the preset and materialize it")
        return dg.RunRequest(partition_key="manga109", tags={"mangacolor/champion_version": str(champion.version)})

    return manga109_weekly


manga109_weekly = build_manga109_schedule(_preset_schedule())
