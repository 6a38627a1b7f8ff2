"""Wall and CPU time of each drafting asset on the demo corpus with the demo preset (or another one).

    uv run python benchmarks/drafting_assets.py [--preset demo] [--threads 1]

Generates the demo corpus into a temporary folder, ingests every colour title, then materializes
blurred_color_pages (every title), stylegan, inversion_encoder, drafting_network and coloring_drafts
(every title) in-process, and prints one line per asset. Nothing is written into the project.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import dagster as dg
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="drafting-bench-"))
    os.environ["MANGACOLOR_WORK_DIR"] = str(tmp / "work")
    os.environ["MANGACOLOR_MLFLOW_ARTIFACTS"] = (tmp / "mlartifacts").as_uri()
    os.environ["MANGACOLOR_DEVICE"] = args.device
    os.environ.pop("MANGACOLOR_ARTIFACT_ROOT", None)

    import assets.drafting
    import assets.ingest
    from mangacolor.config import load_preset, resolve_preset_path
    from mangacolor.demo.corpus import generate_demo_corpus
    from pipelines.definitions import build_resources

    generate_demo_corpus(tmp / "demo_data", seed=0)
    preset = yaml.safe_load(resolve_preset_path(args.preset).read_text())
    preset.update(demo_data=str(tmp / "demo_data"), artifact_root=str(tmp / "artifacts"), web_sources=[])
    preset["sources"] = [s for s in preset.get("sources", []) if s.get("kind") != "scraped"]
    path = tmp / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    resources = build_resources(preset=str(path), artifact_root=str(tmp / "artifacts"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    modules = [assets.ingest, assets.drafting]
    all_assets = dg.load_assets_from_modules(modules)
    instance = dg.DagsterInstance.ephemeral()
    assets.ingest.register_and_observe(instance, load_preset(str(path)))
    titles = instance.get_dynamic_partitions("color_titles")

    def run(key: str, partitions: list[str | None]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for p in partitions:
            result = dg.materialize(all_assets, selection=[key], partition_key=p, instance=instance, resources=resources)
            assert result.success, key
        print(f"{key:<22} {len(partitions)} materialization(s)  wall {time.perf_counter() - wall:6.1f} s  "
              f"cpu {time.process_time() - cpu:6.1f} s", flush=True)

    print(f"preset {args.preset}, {len(titles)} colour titles, torch threads {torch.get_num_threads()}, device {args.device}")
    run("color_pages", titles)
    run("blurred_color_pages", titles)
    run("stylegan", [None])
    run("inversion_encoder", [None])
    run("drafting_network", [None])
    run("coloring_drafts", titles)


if __name__ == "__main__":
    main()
