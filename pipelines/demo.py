"""`mangacolor demo`: the whole asset graph, in-process, on the generated demo corpus.

Uses the project-local instance (`.dagster_home/`, so `mangacolor ui` shows the same runs), the
artifact folder and the SQLite MLflow store of the embedded defaults. Partitioned assets run once
per title partition; consecutive assets that share a partitioning run in the same Dagster run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mangacolor.config import PROJECT_ROOT, load_preset

HOME = PROJECT_ROOT / ".dagster_home"


def prepare_dagster_home(home: Path = HOME) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parent / "dagster.yaml"  # shipped with the package
    dst = home / "dagster.yaml"
    if not dst.exists() or dst.read_text() != src.read_text():
        shutil.copyfile(src, dst)
    return home


def ensure_demo_corpus(preset: dict, seed: int) -> Path:
    from mangacolor.demo.corpus import generate_demo_corpus

    root = Path(str(PROJECT_ROOT / preset.get("demo_data", "demo_data")))
    marker = root / "README.txt"
    if not marker.exists():
        corpus = preset.get("demo_corpus", {})
        print(f"generating the demo corpus in {root} (seed {seed}) ...", flush=True)
        t = time.perf_counter()
        generate_demo_corpus(root, seed=seed if seed is not None else corpus.get("seed", 0), scale=corpus.get("scale", 1.0))
        print(f"  done in {time.perf_counter() - t:.1f} s", flush=True)
    return root


@dataclass
class Batch:
    partitions_def: object
    keys: list = field(default_factory=list)


def plan_batches(defs, selection) -> list[Batch]:
    """Selected asset keys in dependency order, grouped into runs that share a partitioning.

    Among the assets that are ready, unpartitioned ones go first (a split or a trained model that
    per-title stages report against), then the partitioning of the previous batch, so one run per
    title covers as many per-title stages as possible.
    """
    graph = defs.resolve_asset_graph()
    selected = {k for k in selection.resolve(graph) if graph.get(k).is_materializable}
    parents = {k: {p for p in graph.get(k).parent_keys if p in selected} for k in selected}
    done: set = set()
    batches: list[Batch] = []
    while len(done) < len(selected):
        ready = sorted((k for k in selected - done if parents[k] <= done), key=lambda k: k.to_user_string())
        last = batches[-1].partitions_def if batches else None

        def rank(k):
            pdef = graph.get(k).partitions_def
            return (pdef is not None, pdef != last)

        key = min(ready, key=rank)
        pdef = graph.get(key).partitions_def
        if batches and batches[-1].partitions_def == pdef:
            batches[-1].keys.append(key)
        else:
            batches.append(Batch(pdef, [key]))
        done.add(key)
    return batches


def _materialize(dg, label, i, n, keys, partition, instance, resources, all_assets, run_config, done) -> bool:
    t = time.perf_counter()
    print(f"[{i}/{n}] {label} ...", end="", flush=True)
    try:
        result = dg.materialize(all_assets, selection=keys, partition_key=partition, instance=instance,
                                resources=resources, run_config=run_config, tags={"mangacolor/launched_by": "demo"})
    except Exception as exc:  # noqa: BLE001 - report any failure and exit non-zero
        print(f" FAILED after {time.perf_counter() - t:.1f} s\n{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return False
    print(f" ok ({time.perf_counter() - t:.1f} s)", flush=True)
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        entry = done.setdefault(mat.asset_key.to_user_string(), {"partitions": 0, "metadata": {}})
        entry["partitions"] += 1 if mat.partition else 0
        for k, v in mat.metadata.items():
            # Counts add up over a title's partitions; other figures are shown for unpartitioned assets only.
            if isinstance(getattr(v, "value", None), int) and not isinstance(v.value, bool):
                entry["metadata"][k] = entry["metadata"].get(k, 0) + v.value if mat.partition else v.value
            elif isinstance(getattr(v, "value", None), float) and not mat.partition:
                entry["metadata"][k] = v.value
    return True


def run_demo(select: str | None = None, preset: str = "demo", seed: int = 0, quiet_logs: bool = True) -> int:
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home())
    os.environ.setdefault("MANGACOLOR_PRESET", preset)
    import dagster as dg

    from assets.ingest import register_and_observe
    from assets.scrape import register_web_titles
    from pipelines.definitions import build_definitions, executable_defs
    from pipelines.demo_site import demo_site, scrape_run_config

    loaded = load_preset(preset)
    ensure_demo_corpus(loaded, seed)
    defs = build_definitions(preset=preset)
    resources = defs.resources
    instance = dg.DagsterInstance.get()
    from pipelines.deploy import apply_pool_limits, pool_limits

    apply_pool_limits(instance, pool_limits())  # gpu = the GPUs here (1 on a CPU)
    all_assets = executable_defs(defs)
    graph = defs.resolve_asset_graph()
    selection = dg.AssetSelection.from_string(select) if select else dg.AssetSelection.all()
    logs = {"loggers": {"console": {"config": {"log_level": "WARNING" if quiet_logs else "INFO"}}}}
    done: dict[str, dict] = {}
    start = time.perf_counter()

    # The crawl comes first: a scraped title becomes a colour/black-and-white title once it is in the store.
    scrape_key = dg.AssetKey("scraped_pages")
    web_titles = register_web_titles(instance, loaded) if scrape_key in selection.resolve(graph) else []
    if web_titles:
        with tempfile.TemporaryDirectory(prefix="mangacolor-site-") as site_dir, demo_site(site_dir) as url:
            print(f"serving the demo web gallery at {url}", flush=True)
            for i, title in enumerate(web_titles, 1):
                if not _materialize(dg, f"scraped_pages [{title}]", i, len(web_titles), [scrape_key], title, instance,
                                    resources, all_assets, {**logs, **scrape_run_config(url)}, done):
                    return 1

    titles = register_and_observe(instance, loaded)
    print(f"new titles: {len(titles['color'])} colour, {len(titles['bw'])} black-and-white", flush=True)
    batches = plan_batches(defs, selection - dg.AssetSelection.assets(scrape_key))
    jobs = [(b, p) for b in batches for p in (b.partitions_def.get_partition_keys(dynamic_partitions_store=instance) if b.partitions_def else [None])]
    print(f"materializing {sum(len(b.keys) for b in batches)} assets in {len(jobs)} runs", flush=True)
    for i, (batch, partition) in enumerate(jobs, 1):
        label = ", ".join(k.to_user_string() for k in batch.keys) + (f" [{partition}]" if partition else "")
        if not _materialize(dg, label, i, len(jobs), batch.keys, partition, instance, resources, all_assets, logs, done):
            return 1
    _summary(done, loaded, time.perf_counter() - start, resources)
    _colorize_one_page(resources, loaded)
    return 0


def _colorize_one_page(resources, preset: dict) -> None:
    """End the demo the way a user starts: colorize a black-and-white page with the registered model."""
    store = resources["store"].get()
    if store.latest_version("colorizer_final") is None:
        return
    from mangacolor.inference.bundle import ModelBundle
    from mangacolor.io.images import encode_png, read_image

    bundle_dir = Path(store.latest_dir("colorizer_final")) / "bundle"
    if not store.is_local or not bundle_dir.exists():
        return
    page_path = sorted((Path(preset["demo_data"]) / "bw").glob("*/001.png"))[0]
    bundle = ModelBundle.load(bundle_dir)
    page = read_image(page_path, mode="L")
    out = PROJECT_ROOT / "artifacts" / "demo_output" / f"{page_path.parent.name}_{page_path.stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode_png(bundle.colorize(page, draft=bundle.drafts(page)[0])))
    print(f"\ncolorized {page_path} -> {out}")
    print(f"  (your own pages: uv run mangacolor colorize PAGE_OR_FOLDER -o OUT --model {bundle_dir})")


def _summary(done: dict, preset: dict, seconds: float, resources) -> None:
    print("\nmaterialized:")
    for key, entry in done.items():
        parts = f" ({entry['partitions']} partitions)" if entry["partitions"] else ""
        figures = ", ".join(f"{k}={v:g}" for k, v in list(entry["metadata"].items())[:6])
        print(f"  {key}{parts}: {figures}")
    print(f"\nall done in {seconds:.0f} s")
    print(f"artifacts: {resources['store'].artifact_root}")
    print(f"look at them:\n  uv run mangacolor ui          # Dagster UI on http://127.0.0.1:3000 (DAGSTER_HOME={HOME})")
    print(f"  uv run mlflow ui --backend-store-uri {resources['mlflow'].tracking_uri}")
