"""Small helpers every asset uses: partition definitions, the commit wrapper, progress logging, version metadata."""


import functools
import contextlib
import hashlib
import json
import posixpath
from pathlib import Path

import dagster as dg

from mangacolor.config import work_dir  # noqa: F401  (the assets' work folder)

from mangacolor.io.store import commit_scope
from mangacolor.stages import StageInputError

from .launch import TRAINING_RETRY, gpu_asset_args
from .metadata import mlflow_run_link

color_titles = dg.DynamicPartitionsDefinition(name="color_titles")
bw_titles = dg.DynamicPartitionsDefinition(name="bw_titles")
# Crawled titles of the preset's `web_sources` (assets/scrape.py `register_web_titles` adds them).
web_titles = dg.DynamicPartitionsDefinition(name="web_titles")


def commits_last(fn):
    """Under `@dg.asset`: the store versions the asset sealed become LATEST only after it returned.

    The asset body stages and seals (`writer.seal()`), then computes metadata, logs to MLflow and
    registers models; if any of that raises, the staging folders are removed and LATEST stays. A stage's
    `StageInputError` (an input not materialized yet) becomes a `dagster.Failure` with its message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with commit_scope() as writers:
            try:
                result = with_mlflow_link(fn(*args, **kwargs), kwargs.get("mlflow"))
            except StageInputError as exc:  # a stage's missing input: a failure with what to materialize, not a crash
                raise dg.Failure(str(exc)) from exc
        context = kwargs.get("context", args[0] if args else None)
        from .digests import report_digest  # digests needs resources, which need this module

        for asset in dict.fromkeys(w.asset for w in writers if w.committed):
            report_digest(context, writers[0].store, asset)  # fan-in stages see the committed versions
        return result

    return wrapper


def stage_asset(group: str, role: str, description: str, *, gpu: bool = False, owners=("team:ml",), kinds=("pytorch",), **more):
    """`@dg.asset` + `@commits_last` with the group, owners and stage/role tags of an asset's group; `gpu`: see
    `gpu_asset`. `more`: other `dg.asset` arguments (deps, partitions_def, automation_condition, ...)."""

    def decorate(fn):
        gpus = {**gpu_asset_args(more.get("name", fn.__name__)), "retry_policy": TRAINING_RETRY if role == "training" else None} if gpu else {}
        return dg.asset(group_name=group, owners=list(owners), tags={"stage": group, "role": role}, kinds=set(kinds),
                        description=description, **gpus, **more)(commits_last(fn))

    return decorate


def gpu_asset(group: str, role: str, description: str, **more):
    """`stage_asset` for an asset that runs on a GPU: the GPUs its pod requests and the `gpu` pool's slots it holds (one
    per GPU, `assets.launch.gpu_asset_args`), and retries that resume from the last checkpoint for a training asset
    (role "training")."""
    return stage_asset(group, role, description, gpu=True, **more)


def with_mlflow_link(result, mlflow):
    """`mlflow_run`: a link to the result's `mlflow_run_id` in the MLflow UI, found through the asset's MLflow resource."""
    if not isinstance(result, dg.MaterializeResult) or mlflow is None or "mlflow_run_id" not in (result.metadata or {}):
        return result
    run_id = result.metadata["mlflow_run_id"]
    run_id = getattr(run_id, "value", run_id)
    return result._replace(metadata={**result.metadata, "mlflow_run": mlflow_run_link(mlflow.tracking_uri, run_id)})


def progress_logger(context: dg.AssetExecutionContext, total: int | None, label: str, every: int = 10):
    def report(n: int, item: str) -> None:
        if n == 1 or n % every == 0 or (total is not None and n == total):
            context.log.info(f"{label}: {n}/{total if total is not None else '?'} ({item})")

    return report


def resumed_from(work: Path) -> int:
    """The step a training asset's checkpoints in `work` resume from (0: a fresh start)."""
    from mangacolor.training.checkpoint import Checkpointer

    latest = Checkpointer(work / "checkpoints").latest()
    return int(latest.name.split("-")[1]) if latest else 0


def checkpoint_dir(context: dg.AssetExecutionContext, config: dict) -> Path:
    """Where a training asset keeps its resumable checkpoints: stable across retries of the same config.

    A retried or re-launched materialization with the same resolved config finds the checkpoints of
    the interrupted one and resumes; a changed config starts fresh. MANGACOLOR_WORK_DIR moves it.
    """
    base = work_dir()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    partition = context.partition_key if context.has_partition_key else "all"
    path = base / "checkpoints" / context.asset_key.to_user_string() / partition / digest
    path.mkdir(parents=True, exist_ok=True)
    return path


def holdout_check(asset, roles: tuple[str, ...], name: str = "holdout_never_trained") -> dg.AssetChecksDefinition:
    """A blocking check: the real pages a training asset recorded (manifest rows of `roles`) avoid the holdout."""
    from mangacolor.data.splits import holdout_pages
    from mangacolor.eval.leakage import trained_rows

    from .resources import StoreResource

    key = asset.key.to_user_string()

    @dg.asset_check(asset=asset, name=name, blocking=True,
                    description=f"The real black-and-white pages {key} trained on (its manifest) are disjoint from the holdout of page_splits.")
    def check(store: StoreResource) -> dg.AssetCheckResult:
        st = store.get()
        trained = set(trained_rows(st.latest_manifest(key), roles)["page_id"])
        held = set(holdout_pages(st.latest_manifest("page_splits"))["id"])
        leaked = sorted(trained & held)
        return dg.AssetCheckResult(passed=not leaked, metadata={"real_pages_trained": len(trained), "holdout": len(held),
                                                               "leaked": len(leaked), "leaked_ids": dg.MetadataValue.json(leaked[:50])})

    return check
@contextlib.contextmanager
def mirrored_dir(local: Path):
    """A work folder (crawl state, caches) kept beside the artifacts: with MANGACOLOR_WORK_MIRROR set, an
    empty local folder is first filled from its mirror (the same path below the work folder), and
    what the block leaves there is uploaded after it, even when it fails, so a step retried on a fresh
    pod starts from where the last one got. Checkpoints mirror themselves (mangacolor/training/checkpoint.py)."""
    from mangacolor.training.checkpoint import default_mirror

    remote = default_mirror(local)
    if remote is None:
        yield local
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(remote)
    local.mkdir(parents=True, exist_ok=True)
    if not any(local.iterdir()) and fs.exists(root):
        for path in fs.find(root):
            target = local / posixpath.relpath(path, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(target))
    try:
        yield local
    finally:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")
