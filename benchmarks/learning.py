"""Does training make pages better coloured? The whole chain on the demo corpus, scored against true colours.

    uv run python benchmarks/learning.py [--preset small] [--holdout 24] [--budget-s 1500] [--json out.json]

The demo corpus draws every page twice, in colour and in black and white, and its colours are a function
of content (mangacolor/demo/corpus.py: one skin, one sky, a cast per title, scenery by title palette), so
a colorizer can learn them. This script:

1. generates the corpus and materializes the asset graph in-process with the preset (ingest → synthetic
   pages → Coloring Latent Space and drafting networks → colorization step 1 → selection → pseudolabels
   → step 2 / fine-tune → the registered bundle), exactly the assets `mangacolor demo` runs;
2. draws `--holdout` pages of the colour titles that the corpus does not contain (`holdout_pages`) and
   colorizes their black-and-white editions in several ways (rows below);
3. scores each way against the true colour pages with paired metrics (mangacolor/eval/paired.py:
   CIEDE2000 and SSIM/PSNR from scikit-image, LPIPS from the lpips package) and FID/KID against the
   true colour pages (mangacolor/eval/fid.py; random-init Inception and, without the AlexNet file in
   the torch hub cache, a random-init LPIPS trunk: both rank methods of this run, nothing more);
4. retrains the colorization group once per Table 3 variant (a preset override of `colorizer.variant`)
   while the wall budget allows, and scores each variant's bundle the same way.

Rows: untrained (the same generator architecture, random init), grey (the page copied to RGB),
auto_empty_draft, auto_method (the drafting network's draft), oracle_draft (the draft of the true colour
page through the inversion encoder), hints_1pct (1% of the pixels given as true-colour hints, empty
draft), then one `variant_*` row per variant (auto mode with the variant's own drafts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

# Table 3's switches as preset overrides of `colorizer.variant`. A switch the build does not have (its field
# is not in VariantFlags) is reported as unavailable instead of silently training the main model again.
VARIANTS = [
    ("variant_synthetic_xdog", "synthetic", "xdog"),
    ("variant_synthetic_refined", "synthetic", "refined"),
    ("variant_synthetic_cut", "synthetic", "cut"),
    ("variant_no_adaptation", "adversarial_adaptation", False),
    ("variant_no_self_training", "self_training", False),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def variant_field(key: str) -> str | None:
    """The VariantFlags field a switch maps to: exact name, else the one field containing it (e.g.
    'synthetic' -> 'synthetic_level'); None when this build has no such switch."""
    from mangacolor.stages.colorization.config import VariantFlags

    fields = list(VariantFlags.model_fields)
    if key in fields:
        return key
    matches = [f for f in fields if key in f]
    return matches[0] if len(matches) == 1 else None


# ---------------------------------------------------------------------------------------------
# Training: the asset graph, in-process
# ---------------------------------------------------------------------------------------------


class Chain:
    def __init__(self, work: Path, preset: str, seed: int, scale: float, reuse: bool = False):
        from mangacolor.config import resolve_preset_path
        from mangacolor.demo.corpus import generate_demo_corpus

        self.work = work
        data = work / "demo_data"
        if not reuse:
            log(f"generating the demo corpus (scale {scale}) in {data}")
            generate_demo_corpus(data, seed=seed, scale=scale)
        self.base = yaml.safe_load(resolve_preset_path(preset).read_text())
        self.base |= {"demo_data": str(data), "artifact_root": str(work / "artifacts")}
        os.environ.pop("MANGACOLOR_ARTIFACT_ROOT", None)
        os.environ["MANGACOLOR_WORK_DIR"] = str(work / "scratch")
        os.environ["MANGACOLOR_MLFLOW_ARTIFACTS"] = (work / "mlartifacts").as_uri()
        self.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        import dagster as dg

        self.instance = dg.DagsterInstance.ephemeral()
        self.defs = self.definitions(self.base)

    def definitions(self, preset: dict):
        from pipelines.definitions import build_definitions

        path = self.work / f"preset-{len(list(self.work.glob('preset-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(preset))
        return build_definitions(preset=str(path), artifact_root=str(self.work / "artifacts"), tracking_uri=self.tracking_uri)

    def materialize(self, defs, selection) -> float:
        """Materialize `selection` (an AssetSelection) in dependency order, per partition; seconds taken."""
        import dagster as dg

        from pipelines.definitions import executable_defs
        from pipelines.demo import plan_batches

        t0 = time.perf_counter()
        batches = plan_batches(defs, selection)
        logs = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        for batch in batches:
            parts = batch.partitions_def.get_partition_keys(dynamic_partitions_store=self.instance) if batch.partitions_def else [None]
            for p in parts:
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = dg.materialize(executable_defs(defs), selection=batch.keys, partition_key=p, instance=self.instance,
                                            resources=defs.resources, run_config=logs, raise_on_error=True)
                assert result.success
                names = ", ".join(k.to_user_string() for k in batch.keys)
                log(f"  {names}{f' [{p}]' if p else ''}: {time.perf_counter() - t:.0f} s")
        return time.perf_counter() - t0

    def register(self) -> None:
        """The titles as dynamic partitions of this run's (ephemeral) instance: a --reuse run needs them too."""
        from assets.ingest import register_and_observe
        from mangacolor.config import load_preset

        register_and_observe(self.instance, load_preset(self.work / "preset-0.yaml"))

    def train_all(self) -> float:
        import dagster as dg

        self.register()
        skip = dg.AssetSelection.assets("scraped_pages") | dg.AssetSelection.groups("evaluation")
        return self.materialize(self.defs, dg.AssetSelection.all() - skip)

    def train_variant(self, field: str, value) -> float:
        import dagster as dg

        preset = json.loads(json.dumps(self.base))
        preset.setdefault("colorizer", {}).setdefault("variant", {})[field] = value
        defs = self.definitions(preset)
        return self.materialize(defs, dg.AssetSelection.groups("colorization"))

    def bundle(self, main: bool = False):
        """The latest colorizer_final's bundle; `main`: the main model's, which a variant trained after it
        has replaced as latest in the store (its folder is kept in `main_bundle.txt` of the work folder)."""
        from mangacolor.inference.bundle import ModelBundle
        from mangacolor.io.store import Store

        pointer = self.work / "main_bundle.txt"
        if main and pointer.exists():
            folder = Path(pointer.read_text().strip())
        else:
            folder = Path(Store(str(self.work / "artifacts")).latest_dir("colorizer_final")) / "bundle"
        return ModelBundle.load(folder)

    def keep_main_bundle(self) -> None:
        from mangacolor.io.store import Store

        folder = Path(Store(str(self.work / "artifacts")).latest_dir("colorizer_final")) / "bundle"
        (self.work / "main_bundle.txt").write_text(str(folder))


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def untrained_like(bundle, seed: int = 0):
    """The bundle's generator with every layer re-initialised (fixed seed): the network before training."""
    import copy

    net = copy.deepcopy(bundle.generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    out = copy.copy(bundle)
    out.generator = net.eval().requires_grad_(False)
    out._prepared = {}
    return out


def oracle_draft(bundle, color: np.ndarray):
    """The draft of the true colour page: inversion encoder -> W+ -> the Coloring Latent Space."""
    from mangacolor.io.images import to_tensor

    if bundle.inversion is None:
        return None
    with torch.inference_mode():
        image, _ = bundle.inversion(to_tensor(color)[None].to(bundle.device))
    return image


def hints(color: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """RGBA hint image: `fraction` of the pixels, chosen at random, carry their true colour."""
    h, w = color.shape[:2]
    rng = np.random.default_rng(seed)
    rgba = np.zeros((h, w, 4), np.uint8)
    idx = rng.choice(h * w, max(1, int(round(fraction * h * w))), replace=False)
    ys, xs = np.unravel_index(idx, (h, w))
    rgba[ys, xs, :3] = color[ys, xs]
    rgba[ys, xs, 3] = 255
    return rgba


def row_outputs(name: str, bundle, untrained, bw: np.ndarray, color: np.ndarray, seed: int) -> np.ndarray | None:
    if name == "grey":
        return np.repeat(bw[..., None], 3, axis=2)
    if name == "untrained":
        return untrained.colorize(bw)
    if name == "auto_empty_draft":
        return bundle.colorize(bw)
    if name == "auto_method" or name.startswith("variant_"):
        return bundle.colorize(bw, draft=bundle.drafts(bw)[0])
    if name == "oracle_draft":
        draft = oracle_draft(bundle, color)
        return None if draft is None else bundle.colorize(bw, draft=draft)
    if name == "hints_1pct":
        return bundle.colorize(bw, hint=hints(color, 0.01, seed))
    raise ValueError(name)


def score(names: list[str], bundle, untrained, holdout, extractor, paired_factory, ref_feats) -> list[dict]:
    from mangacolor.eval.fid import metric_report

    rows = []
    for name in names:
        paired = paired_factory()
        outputs = []
        for i, (_, _, bw, color) in enumerate(holdout):
            out = row_outputs(name, bundle, untrained, bw, color, seed=i)
            if out is None:
                break
            paired.add(out, color)
            outputs.append(out)
        if not outputs:
            log(f"  {name}: not available (the bundle has no inversion encoder)")
            continue
        summary = paired.summary(n_boot=200)
        fk = metric_report(ref_feats, extractor(outputs), feature_extractor=extractor.description, resize=extractor.resize,
                           random_init=extractor.random_init, kid_subsets=20, kid_subset_size=min(len(outputs), 100),
                           n_boot=0, fid_method="eig")
        row = {"name": name, **{m: summary[m] for m in ("ciede2000", "lpips", "psnr", "ssim")}, "fid": fk.fid, "kid": fk.kid_mean,
               "intervals": {m: [summary[f"{m}_lo"], summary[f"{m}_hi"]] for m in ("ciede2000", "lpips", "psnr", "ssim")}}
        rows.append(row)
        log(f"  {name:28s} ΔE00 {row['ciede2000']:6.2f}  LPIPS {row['lpips']:.3f}  PSNR {row['psnr']:5.2f}  "
            f"SSIM {row['ssim']:.3f}  FID {row['fid']:7.1f}  KID {row['kid']:.4f}")
    return rows


def expectations(rows: list[dict]) -> list[str]:
    by = {r["name"]: r for r in rows}

    def better(a, b, metrics=("ciede2000", "lpips")):
        if a not in by or b not in by:
            return f"{a} vs {b}: not measured"
        ok = all(by[a][m] < by[b][m] for m in metrics)
        return f"{'PASS' if ok else 'FAIL'}: {a} beats {b} on {'+'.join(metrics)} " + \
            ", ".join(f"{m} {by[a][m]:.3f} vs {by[b][m]:.3f}" for m in metrics)

    lines = [better("auto_method", "untrained"), better("auto_method", "grey"), better("hints_1pct", "auto_empty_draft"),
             better("oracle_draft", "auto_empty_draft")]
    if "auto_method" in by and "auto_empty_draft" in by:
        ok = by["auto_method"]["ciede2000"] <= by["auto_empty_draft"]["ciede2000"]
        lines.append(f"{'PASS' if ok else 'FAIL'}: auto_method no worse than auto_empty_draft on ciede2000 "
                     f"({by['auto_method']['ciede2000']:.3f} vs {by['auto_empty_draft']['ciede2000']:.3f})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="the training preset (size knob: demo is a smoke run, small the figure)")
    ap.add_argument("--scale", type=float, default=1.0, help="demo corpus scale (page counts)")
    ap.add_argument("--holdout", type=int, default=24, help="scored pages outside the corpus")
    ap.add_argument("--budget-s", type=float, default=1500.0,
                    help="wall budget: variants are trained only while the elapsed time plus the main run's colorization time fits")
    ap.add_argument("--variants", default="all", help="comma-separated variant row names, 'all' or 'none'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="keep the run's files here (default: a temporary folder, removed)")
    ap.add_argument("--reuse", action="store_true", help="--work already holds a trained chain: score it (and train variants) only")
    ap.add_argument("--colorizer-steps", default=None,
                    help="STEP1,STEP2,FINETUNE max_steps overriding the preset's colorizer (with --reuse: retrain the colorization group only)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("MANGACOLOR_THREADS", "1")
    torch.set_num_threads(int(os.environ["MANGACOLOR_THREADS"]))

    from mangacolor.demo.corpus import holdout_pages
    from mangacolor.eval.fid import FeatureExtractor
    from mangacolor.eval.inception import build_inception
    from mangacolor.eval.paired import PairedMetrics

    t0 = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mangacolor-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        chain = Chain(work, args.preset, args.seed, args.scale, reuse=args.reuse)
        if args.colorizer_steps:
            steps = [int(x) for x in args.colorizer_steps.split(",")]
            section = chain.base.setdefault("colorizer", {})
            for name, n in zip(("step1", "step2", "finetune"), steps):
                section.setdefault(name, {})["max_steps"] = n
            chain.defs = chain.definitions(chain.base)
        train_s = 0.0
        if args.reuse:
            chain.register()  # the variants' runs need the titles too
        if not args.reuse:
            log(f"training the whole chain ({args.preset} preset)")
            train_s = chain.train_all()
            log(f"chain trained in {train_s:.0f} s")
        elif args.colorizer_steps:
            import dagster as dg

            log(f"retraining the colorization group with max_steps {args.colorizer_steps}")
            train_s = chain.materialize(chain.defs, dg.AssetSelection.groups("colorization"))
        if train_s or not (work / "main_bundle.txt").exists():  # the main model was (re)trained just now
            chain.keep_main_bundle()
        bundle = chain.bundle(main=True)
        untrained = untrained_like(bundle, args.seed)
        holdout = list(holdout_pages(args.holdout, seed=args.seed))
        extractor = FeatureExtractor(build_inception("random"), batch_size=8)
        ref_feats = extractor([c for *_, c in holdout])
        lpips_cache: dict = {}

        def paired_factory():
            if "m" not in lpips_cache:
                lpips_cache["m"] = PairedMetrics(seed=args.seed)
            lpips_cache["m"].rows = []
            return lpips_cache["m"]

        log(f"scoring {len(holdout)} holdout pages against their true colours")
        names = ["untrained", "grey", "auto_empty_draft", "auto_method", "oracle_draft", "hints_1pct"]
        rows = score(names, bundle, untrained, holdout, extractor, paired_factory, ref_feats)
        lpips_trunk = lpips_cache["m"].lpips_trunk

        wanted = [v for v in VARIANTS if args.variants == "all" or v[0] in args.variants.split(",")]
        skipped = []
        colorization_s = None
        for name, key, value in wanted:
            field = variant_field(key)
            if field is None:
                skipped.append(f"{name}: this build has no `colorizer.variant` switch for {key!r}")
                log(f"  {name}: not available in this build (no VariantFlags field for {key!r})")
                continue
            elapsed = time.perf_counter() - t0
            if colorization_s is not None and elapsed + colorization_s * 1.2 > args.budget_s:
                skipped.append(f"{name}: over the wall budget ({elapsed:.0f} s elapsed of {args.budget_s:.0f} s)")
                log(f"  {name}: skipped, over the wall budget")
                continue
            log(f"training {name} ({field} = {value})")
            colorization_s = chain.train_variant(field, value)
            rows += score([name], chain.bundle(), untrained, holdout, extractor, paired_factory, ref_feats)

        wall = time.perf_counter() - t0
        checks = expectations(rows)
        report = {
            "rows": rows,
            "wall_s": round(wall, 1),
            "train_s": round(train_s, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, {platform.platform()}",
            "preset": args.preset,
            "holdout_pages": len(holdout),
            "notes": [extractor.description, f"LPIPS AlexNet trunk: {lpips_trunk}"
                      + (" (random-init: ranks methods of this run only)" if lpips_trunk == "random" else ""),
                      "FID/KID against the holdout pages' true colours; FID on a few dozen pages is biased upwards",
                      *skipped],
            "expectations": checks,
        }
        print("\n| row | ΔE00 ↓ | LPIPS ↓ | PSNR ↑ | SSIM ↑ | FID ↓ | KID ↓ |\n| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['name']} | {r['ciede2000']:.2f} | {r['lpips']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['fid']:.1f} | {r['kid']:.4f} |")
        print(f"\nwall: {wall:.0f} s (training {train_s:.0f} s); {report['machine']}")
        for line in report["notes"] + checks:
            print(f"- {line}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
