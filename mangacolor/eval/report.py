"""FID reports of trained models in automatic mode, beside the paper's Tables 1 and 3 (paper §V).

The paper scores every model "in fully automatic mode, i.e. without user input like color hints"
by FID against real colour pages, on its holdout and on Manga109. `evaluate_bundle` does the same
for one bundle: each black-and-white page is colorized without hints, with the draft its drafting
network makes ("auto") or with an empty draft ("empty_draft", Table 1's "with empty coloring draft"
row), and the colorizations are scored against the reference colour pages by FID and KID with
page-bootstrap intervals (`mangacolor.eval.fid`; the reference set is held fixed, `resample="b"`,
because every model of a report is compared with the same one).

`evaluate_models` scores several models in one pass over shared reference features and returns an
`EvaluationResult` (a table, a JSON record for the gate, a markdown report). It streams: pages are
read, colorized and turned into features a batch at a time, the reference features are cached by the
reference pages' content, and pages whose true colours are known (matched holdout pairs) also get the
paired metrics the field reports (CIEDE2000, LPIPS, PSNR, SSIM, mangacolor/eval/paired.py); `fid_table` lays our
rows next to the published ones, each labelled with where it comes from. The published numbers
were computed on the authors' data with the pretrained FID Inception: orderings compare, values do
not. Reports made with the random-init Inception say so on their first line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mangacolor.eval.benchmark import BenchmarkConfig
from mangacolor.eval.candidates import MODES, EvalModel
from mangacolor.eval.fid import FID_METHODS, FeatureExtractor, MetricReport, metric_report
from mangacolor.eval.schedule import ScheduleConfig
from mangacolor.eval.sets import SET_DESCRIPTIONS
from mangacolor.inference.colorize import InferenceOptions, colorize_page, prepare_generator

RANDOM_INIT_NOTE = "random-init Inception: not comparable to published FID"
PAPER_SOURCE = "paper (their data, their Inception)"
OURS_SOURCE = "ours"


# --- the published numbers (docs/architecture.md § Numbers to compare with) ---------------------


@dataclass(frozen=True)
class PaperRow:
    table: str
    model: str
    holdout: float  # the paper's "Our dataset" column
    manga109: float


PAPER_ROWS = [
    PaperRow("Table 1", "Pix2Pix", 30.21, 34.48),
    PaperRow("Table 1", "AlacGAN", 24.17, 29.4),
    PaperRow("Table 1", "ScreenStyle", 23.16, 22.12),
    PaperRow("Table 1", "[38] (the authors' 2021 model)", 19.48, 21.02),
    PaperRow("Table 1", "Our (without drafting network)", 17.00, 20.59),
    PaperRow("Table 1", "Our (with empty coloring draft)", 14.53, 20.11),
    PaperRow("Table 1", "Our (512 CLS)", 12.04, 18.36),
    PaperRow("Table 1", "Our (1024 CLS)", 12.10, 18.52),
    PaperRow("Table 3", "No domain adaptation", 24.19, 27.39),
    PaperRow("Table 3", "+data generation step 2", 17.03, 20.74),
    PaperRow("Table 3", "+data generation step 3", 16.70, 20.55),
    PaperRow("Table 3", "+adversarial domain adaptation", 12.61, 18.70),
    PaperRow("Table 3", "+self-training (our)", 12.04, 18.36),
]

# (variant tag, mode) -> the paper row it reproduces. "no_adaptation" is trained on all three
# synthetic-data steps without adversarial adaptation or self-training: Table 3's "+data
# generation step 3" row; "no_self_training" stops after adversarial adaptation.
PAPER_ROW_FOR = {
    ("full", "auto"): "Our (512 CLS)",
    ("full", "empty_draft"): "Our (with empty coloring draft)",
    ("no_drafts", "auto"): "Our (without drafting network)",
    ("no_drafts", "empty_draft"): "Our (without drafting network)",
    ("no_self_training", "auto"): "+adversarial domain adaptation",
    # Table 3 is cumulative: its "+data generation step 3" row has neither adaptation nor self-training.
    ("no_adaptation+no_self_training", "auto"): "+data generation step 3",
}


# --- configuration (preset section `evaluation:`) ------------------------------------------------


class GateConfig(BaseModel):
    metric: Literal["fid", "kid"] = "fid"
    margin: float = Field(0.0, description="in the metric's units; see mangacolor.eval.gate")
    sets: list[str] = Field(default_factory=lambda: ["holdout", "manga109"], description="sets a candidate must pass on to be promoted")


class EvaluationConfig(BaseModel):
    inception: str = Field("auto", description='"auto" (the FID weights file), "random" (demo/tests) or a path')
    resize: str = "bilinear-torch"
    fid_method: str = Field("sqrtm", description=f"one of {FID_METHODS}")
    n_boot: int = Field(100, ge=0)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = 16
    long_side: int | None = Field(None, description="pages scaled down to this long side before colorizing; null: own size")
    working_long_side: int | None = Field(None, description="InferenceOptions.working_long_side; null: exact")
    max_pages: int | None = Field(None, description="cap on pages per evaluation set (deterministic subsample)")
    max_reference_pages: int | None = None
    reference_exclude_titles: list[str] = Field(default_factory=list)
    n_samples: int = 3
    seed: int = 0
    paired: bool = Field(True, description="paired metrics (CIEDE2000, LPIPS, PSNR, SSIM) on evaluated pages whose true colours are known")
    lpips_weights: str | None = Field(None, description="AlexNet trunk for LPIPS (null: torch hub cache, else random-init and said so)")
    clip_is_weights: str | None = Field(None, description="user-placed CLIP weights for CLIP-IS (mangacolor/eval/extra.py); null: absent")
    aesthetic_weights: str | None = Field(None, description="user-placed aesthetic predictor weights (mangacolor/eval/extra.py); null: absent")
    gate: GateConfig = Field(default_factory=GateConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    def inference_options(self) -> InferenceOptions:
        return InferenceOptions(working_long_side=self.working_long_side)


# --- colorize and score ------------------------------------------------------------------------


def fit_long_side(page: np.ndarray, long_side: int | None) -> np.ndarray:
    """The page scaled down (area filter) so its long side is at most `long_side`."""
    h, w = page.shape[:2]
    if long_side is None or max(h, w) <= long_side:
        return page
    s = long_side / max(h, w)
    return cv2.resize(page, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def effective_mode(bundle, mode: str) -> str:
    """Without drafting networks the automatic mode is the empty-draft mode."""
    return mode if bundle.drafting is not None else "empty_draft"


def colorize_for_eval(bundle, pages: Sequence[np.ndarray], mode: str = "auto", long_side: int | None = None,
                      options: InferenceOptions = InferenceOptions(),
                      progress: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Automatic colorization (no hints) of uint8 grey pages: uint8 RGB pages of the same sizes."""
    from mangacolor.inference.bundle import draft_to_uint8

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if hasattr(bundle, "inference_options"):
        options = bundle.inference_options(options)  # the canvas the model was trained on
    generator = prepare_generator(bundle.generator, options, bundle.device)
    use_draft = effective_mode(bundle, mode) == "auto"
    out = []
    for i, page in enumerate(pages):
        page = fit_long_side(page, long_side)
        if hasattr(bundle, "denoise"):
            page = bundle.denoise(page)  # a bundle's pre-step (the 2021 release's denoiser), as when colouring
        draft = draft_to_uint8(bundle.drafts(page)[0]) if use_draft else None
        out.append(colorize_page(generator, page, draft=draft, options=options))
        if progress and ((i + 1) % 10 == 0 or i + 1 == len(pages)):
            progress(f"colorized {i + 1}/{len(pages)} pages ({mode})")
    return out


def _score(ref_feats: np.ndarray, outputs: list[np.ndarray], extractor: FeatureExtractor, *, n_boot: int,
           kid_subsets: int, kid_subset_size: int, fid_method: str, seed: int) -> MetricReport:
    return metric_report(
        ref_feats, extractor(outputs), feature_extractor=extractor.description, resize=extractor.resize,
        random_init=extractor.random_init, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
        n_boot=n_boot, resample="b", seed=seed, fid_method=fid_method,
    )


def evaluate_bundle(bundle, pages: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None,
                    extractor: FeatureExtractor, mode: str = "auto", *, long_side: int | None = None,
                    options: InferenceOptions = InferenceOptions(), n_boot: int = 100, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, fid_method: str = "sqrtm", seed: int = 0,
                    reference_features: np.ndarray | None = None,
                    progress: Callable[[str], None] | None = None) -> MetricReport:
    """FID/KID of `bundle`'s automatic colorizations of `pages` (uint8 grey) against `reference`
    (uint8 RGB colour pages; or pass their `reference_features` to reuse them)."""
    if reference_features is None:
        if reference is None:
            raise ValueError("pass the reference pages or their features")
        reference_features = extractor(reference)
    outputs = colorize_for_eval(bundle, pages, mode, long_side, options, progress)
    report = _score(reference_features, outputs, extractor, n_boot=n_boot, kid_subsets=kid_subsets,
                    kid_subset_size=kid_subset_size, fid_method=fid_method, seed=seed)
    report.notes.insert(0, _mode_note(bundle, mode))
    return report


def _mode_note(bundle, mode: str) -> str:
    if mode == "auto" and bundle.drafting is None:
        return "automatic mode, no hints; the bundle has no drafting network, so the draft is empty"
    return {"auto": "automatic mode, no hints, the drafting network's draft",
            "empty_draft": "automatic mode, no hints, an empty draft"}[mode]


# --- several models in one pass ------------------------------------------------------------------


@dataclass
class EvaluationResult:
    set_name: str
    models: list[EvalModel]
    reports: dict[str, MetricReport]  # by row name, e.g. "candidate/auto"
    table: pd.DataFrame  # one line per row: the numbers, for parquet and MLflow
    samples: dict[str, list[np.ndarray]] = field(default_factory=dict)
    features_computed: int = 0
    features_cached: int = 0
    reference: str = ""
    paired: dict[str, dict] = field(default_factory=dict)  # row -> PairedMetrics.summary() (n_pairs 0: no truth)
    extra: dict[str, str] = field(default_factory=dict)  # CLIP-IS / aesthetic: "absent: ..." or a note

    @property
    def random_init(self) -> bool:
        return any(r.random_init for r in self.reports.values())

    def _model(self, role: str) -> EvalModel | None:
        return next((m for m in self.models if m.role == role), None)

    def to_json(self) -> dict:
        """The record the gate and `champion_model` read back (store `report.json`)."""
        cand, champ = self._model("candidate"), self._model("champion")
        rows = {}
        for line in self.table.to_dict("records"):
            rows[line["row"]] = {**self.reports[line["row"]].to_dict(),
                                 **{k: line[k] for k in ("name", "role", "version", "variant", "mode", "effective_mode")},
                                 "paired": self.paired.get(line["row"], {})}
        return {
            "set": self.set_name,
            "random_init": self.random_init,
            "note": RANDOM_INIT_NOTE if self.random_init else "",
            "reference": self.reference,
            "candidate": {"version": cand.version if cand else None, "row": "candidate/auto" if cand else None,
                          "variant": cand.variant if cand else None},
            "champion": {"version": champ.version if champ else None,
                         "row": "champion/auto" if "champion/auto" in self.reports else None},
            "rows": rows,
            "extra_metrics": self.extra,
        }

    def gate_verdict(self, metric: str = "fid", margin: float = 0.0) -> tuple[bool, str]:
        from mangacolor.eval.gate import set_verdict

        return set_verdict(self.to_json(), metric, margin)

    def markdown(self, gate_line: str | None = None) -> str:
        first = next(iter(self.reports.values()))
        lines = [f"## FID report: {self.set_name} ({first.n_b} pages) vs {first.n_a} reference colour pages", ""]
        if self.random_init:
            lines += [f"**{RANDOM_INIT_NOTE}.** These numbers rank our models against each other only.", ""]
        method = "scipy sqrtm (reference)" if first.fid_method == "sqrtm" else "eigenvalue form (same quantity, ~1e-6 relative)"
        lines += [
            f"- set: {SET_DESCRIPTIONS.get(self.set_name, self.set_name)}",
            f"- reference: {self.reference}",
            "- mode: fully automatic (no colour hints), as the paper's Tables 1 and 3",
            f"- features: {first.feature_extractor}; resize to 299×299: `{first.resize}`; FID square root: {method}",
            f"- intervals: 95%, {first.n_boot} page-bootstrap replicates of the evaluated pages (reference fixed)"
            if first.n_boot else "- intervals: none (n_boot = 0)",
        ]
        if first.n_b < 2000:
            lines.append(f"- FID on {first.n_b} pages is biased upwards (it needs thousands): compare models by their intervals and KID")
        if gate_line:
            lines.append(f"- gate (candidate vs champion): {gate_line}")
        lines += ["", fid_table(self.table).to_markdown(index=False), "",
                  f"Rows marked '{PAPER_SOURCE}' are the published figures (the authors' data and the pretrained "
                  "FID Inception): compare the ordering of rows, not the values."]
        lines += ["", *paired_markdown(self.paired)]
        if self.extra:
            lines += ["", *[f"- {name}: {note}" for name, note in self.extra.items()]]
        return "\n".join(lines)


def features_in_batches(extractor: FeatureExtractor, images: Sequence, batch_size: int) -> np.ndarray:
    """Features of a (possibly lazy) sequence of images, `batch_size` decoded at a time: only features stay."""
    chunks = [extractor([images[j] for j in range(i, min(i + batch_size, len(images)))]) for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def reference_features(extractor: FeatureExtractor, reference: Sequence, batch_size: int,
                       content_key: str | None = None) -> np.ndarray:
    """Features of the reference pages, cached as one array under `content_key` (e.g. a digest of the
    pages' sha256s) in the extractor's cache, so later reports on the same reference read one file."""
    if content_key is None or extractor.cache is None:
        return features_in_batches(extractor, reference, batch_size)
    key = extractor.cache_key(f"reference-set|{content_key}")
    hit = extractor.cache.get_many([key]).get(key)
    if hit is not None and hit.ndim == 2 and len(hit) == len(reference):
        extractor.n_cached += len(hit)
        return hit
    feats = features_in_batches(extractor, reference, batch_size)
    extractor.cache.put(key, feats)
    return feats


def _fit_truth(truth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    return truth if truth.shape[:2] == (h, w) else cv2.resize(truth, (w, h), interpolation=cv2.INTER_AREA)


def evaluate_models(models: Sequence[tuple[EvalModel, object]], pages: Sequence[np.ndarray],
                    reference: Sequence[np.ndarray] | None, extractor: FeatureExtractor, config: EvaluationConfig,
                    set_name: str, reference_note: str = "",
                    progress: Callable[[str], None] | None = None, *, truths: Sequence[np.ndarray | None] | None = None,
                    reference_key: str | None = None, ref_feats: np.ndarray | None = None) -> EvaluationResult:
    """Score every (model, loaded bundle) in each of its modes against one set of reference features.

    Streams: `pages`, `reference` and `truths` may be lazy sequences (read on indexing, e.g.
    `sets.LazyPages`); pages are colorized `config.batch_size` at a time and only their features, four
    paired numbers per page and the first `n_samples` outputs are kept, so memory does not grow with
    the number of pages. `truths[i]` is page i's true colour page (uint8 RGB) or None; where given, the
    paired metrics (mangacolor/eval/paired.py) are reported next to FID/KID. A bundle without drafting
    networks gives the same pages in both modes: they are colorized once.
    """
    from mangacolor.eval.extra import extra_metric_notes

    extra = extra_metric_notes(config.clip_is_weights, config.aesthetic_weights)  # a configured, missing file fails here
    computed0, cached0 = extractor.n_computed, extractor.n_cached
    bs = max(1, config.batch_size)
    if ref_feats is None:
        if reference is None:
            raise ValueError("pass the reference pages or their features")
        ref_feats = reference_features(extractor, reference, bs, reference_key)
    options = config.inference_options()
    scorer = StreamScorer(extractor, ref_feats, config, truths, len(pages))
    reports, samples, lines, paired = {}, {}, [], {}
    done: dict[tuple[int, str], tuple[list[np.ndarray], MetricReport, dict]] = {}
    for model, bundle in models:
        for mode in model.modes:
            row = f"{model.name}/{mode}"
            eff = effective_mode(bundle, mode)
            if (id(bundle), eff) not in done:
                if progress:
                    progress(f"{set_name}: {row} (v{model.version}, {model.variant})")
                batches = ((idx, colorize_for_eval(bundle, [pages[i] for i in idx], mode, config.long_side, options))
                           for idx in (range(s, min(s + bs, len(pages))) for s in range(0, len(pages), bs)))
                done[(id(bundle), eff)] = scorer.score(batches, progress)
            kept, base, summary = done[(id(bundle), eff)]
            report = MetricReport(**{**base.to_dict(), "notes": [_mode_note(bundle, mode), *base.notes]})
            reports[row], samples[row], paired[row] = report, kept, summary
            lines.append(_table_line(set_name, row, model, mode, eff, report) | _paired_columns(summary))
    return EvaluationResult(set_name, list(m for m, _ in models), reports, pd.DataFrame(lines), samples,
                            extractor.n_computed - computed0, extractor.n_cached - cached0, reference_note, paired,
                            extra)


class StreamScorer:
    """FID/KID, paired metrics and the optional CLIP-IS / aesthetic score of one set of outputs, fed in
    batches: keeps the features, a few numbers per page and the first `n_samples` outputs only."""

    def __init__(self, extractor: FeatureExtractor, ref_feats: np.ndarray, config: EvaluationConfig,
                 truths: Sequence[np.ndarray | None] | None, n_pages: int):
        from mangacolor.eval.extra import ClipScorer
        from mangacolor.eval.paired import PairedMetrics

        self.extractor, self.ref_feats, self.config, self.truths = extractor, ref_feats, config, truths
        # which pages have a true colour page: asked once, without reading the pages
        present = getattr(truths, "present", None) or (lambda i: truths[i] is not None)
        self.with_truth = {i for i in range(n_pages) if present(i)} if config.paired and truths is not None else set()
        self.paired = PairedMetrics(lpips_weights=config.lpips_weights, seed=config.seed) if self.with_truth else None
        self.scorers = {kind: ClipScorer(kind, path) for kind, path in (("clip_is", config.clip_is_weights),
                                                                       ("aesthetic", config.aesthetic_weights)) if path}

    def score(self, batches, progress: Callable[[str], None] | None = None) -> tuple[list[np.ndarray], MetricReport, dict]:
        """`batches`: iterable of (page indices, uint8 RGB outputs). Returns (samples, FID/KID report, paired summary)."""
        cfg = self.config
        feats, kept, extra_rows = [], [], {kind: [] for kind in self.scorers}
        if self.paired is not None:
            self.paired.rows = []
        n = 0
        for idx, outputs in batches:
            feats.append(self.extractor(outputs))
            for kind, scorer in self.scorers.items():
                extra_rows[kind].append(scorer.per_page(outputs))
            for i, out in zip(idx, outputs):
                if i in self.with_truth:
                    self.paired.add(out, _fit_truth(self.truths[i], out.shape))
            kept += outputs[: max(0, cfg.n_samples - len(kept))]
            n += len(outputs)
            if progress and (n % (10 * len(outputs)) < len(outputs)):
                progress(f"colorized and scored {n} pages")
        report = metric_report(self.ref_feats, np.concatenate(feats), feature_extractor=self.extractor.description,
                               resize=self.extractor.resize, random_init=self.extractor.random_init,
                               kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                               n_boot=cfg.n_boot, resample="b", seed=cfg.seed, fid_method=cfg.fid_method)
        summary = self.paired.summary(cfg.n_boot, cfg.seed) if self.paired is not None else {"n_pairs": 0}
        summary |= {kind: self.scorers[kind].reduce(v) for kind, v in extra_rows.items()}
        return kept, report, summary


PAIRED_METRICS = ("ciede2000", "lpips", "psnr", "ssim")


def _paired_columns(summary: dict) -> dict:
    nan = float("nan")
    out = {"n_paired": int(summary.get("n_pairs", 0)), "clip_is": summary.get("clip_is", nan), "aesthetic": summary.get("aesthetic", nan)}
    for m in PAIRED_METRICS:
        out[m], out[f"{m}_lo"], out[f"{m}_hi"] = (summary.get(m, nan), summary.get(f"{m}_lo", nan), summary.get(f"{m}_hi", nan))
    return out


def paired_markdown(paired: dict[str, dict]) -> list[str]:
    """The paired-metrics table of a report (rows with matched true colours only)."""
    rows = {r: s for r, s in paired.items() if s.get("n_pairs")}
    if not rows:
        return ["Paired metrics (CIEDE2000, LPIPS, PSNR, SSIM): none of the evaluated pages has a matched true colour page."]
    first = next(iter(rows.values()))
    lines = [f"### Paired metrics on {first['n_pairs']} evaluated pages with matched true colours (95% page-bootstrap intervals)", "",
             "| row | CIEDE2000 ↓ | LPIPS ↓ | PSNR dB ↑ | SSIM ↑ |", "| --- | --- | --- | --- | --- |"]
    for row, s in rows.items():
        lines.append(f"| {row} | " + " | ".join(_fmt(s[m], s.get(f"{m}_lo"), s.get(f"{m}_hi")) for m in PAIRED_METRICS) + " |")
    if first.get("lpips_trunk") == "random":
        lines += ["", "LPIPS uses a random-init AlexNet trunk (alexnet-owt-7be5be79.pth not in the torch hub cache): it ranks rows of this report only."]
    return lines


def _table_line(set_name: str, row: str, model: EvalModel, mode: str, eff: str, r: MetricReport) -> dict:
    nan = float("nan")
    return {
        "set": set_name, "row": row, "name": model.name, "role": model.role, "version": model.version,
        "variant": model.variant, "mode": mode, "effective_mode": eff,
        "fid": r.fid, "fid_lo": r.fid_ci[0] if r.fid_ci else nan, "fid_hi": r.fid_ci[1] if r.fid_ci else nan,
        "kid": r.kid_mean, "kid_std": r.kid_std,
        "kid_lo": r.kid_ci[0] if r.kid_ci else nan, "kid_hi": r.kid_ci[1] if r.kid_ci else nan,
        "n_reference": r.n_a, "n_pages": r.n_b, "feature_extractor": r.feature_extractor, "resize": r.resize,
        "fid_method": r.fid_method, "n_boot": r.n_boot, "random_init": r.random_init,
        "paper_row": PAPER_ROW_FOR.get((model.variant, mode), ""),
    }


# --- our rows beside the paper's -----------------------------------------------------------------


def _fmt(value: float, lo: float, hi: float, scale: float = 1.0) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    text = f"{value * scale:.2f}"
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo * scale:.2f}, {hi * scale:.2f}]"
    return text


def _label(line: dict) -> str:
    version = f" v{line['version']}" if line.get("version") not in (None, "") else ""
    mode = {"auto": "automatic draft", "empty_draft": "empty draft"}.get(line["mode"], line["mode"])
    if line.get("effective_mode") and line["effective_mode"] != line["mode"]:
        mode += " (no drafting network: empty draft)"
    return f"{line['name']}{version} ({line['variant']}), {mode}"


def fid_table(rows: pd.DataFrame | Sequence[dict]) -> pd.DataFrame:
    """The paper's Tables 1 and 3 with our rows (from one or both sets) under the row each reproduces.

    `rows`: `EvaluationResult.table` lines (columns set, name, version, variant, mode, fid, fid_lo,
    fid_hi, kid, kid_lo, kid_hi, paper_row); lines of the same model and mode from the holdout and
    Manga109 reports merge into one. Our intervals are 95% page-bootstrap intervals.
    """
    frame = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    cols = ["source", "table", "model", "FID holdout (paper: their dataset)", "FID Manga109", "KID×10³ holdout", "KID×10³ Manga109"]
    ours: dict[tuple, dict] = {}
    for line in frame.to_dict("records"):
        key = (line["name"], line.get("version"), line["mode"])
        entry = ours.setdefault(key, {"source": OURS_SOURCE, "table": "", "model": _label(line),
                                      "paper_row": line.get("paper_row") or "", **{c: "—" for c in cols[3:]}})
        set_col = "holdout" if line["set"] == "holdout" else "Manga109"
        fid_col = cols[3] if set_col == "holdout" else cols[4]
        entry[fid_col] = _fmt(line["fid"], line.get("fid_lo"), line.get("fid_hi"))
        entry[f"KID×10³ {set_col}"] = _fmt(line["kid"], line.get("kid_lo"), line.get("kid_hi"), 1e3)
    out, placed = [], set()
    for p in PAPER_ROWS:
        out.append({"source": PAPER_SOURCE, "table": p.table, "model": p.model, cols[3]: f"{p.holdout:.2f}",
                    cols[4]: f"{p.manga109:.2f}", cols[5]: "—", cols[6]: "—"})
        for key, entry in ours.items():
            if key not in placed and entry["paper_row"] == p.model:
                out.append(entry)
                placed.add(key)
    out += [e for k, e in ours.items() if k not in placed]
    return pd.DataFrame(out)[cols]


def fid_table_markdown(rows) -> str:
    return fid_table(rows).to_markdown(index=False)


__all__ = [
    "EvaluationConfig", "EvaluationResult", "GateConfig", "PAPER_ROWS", "RANDOM_INIT_NOTE", "ScheduleConfig",
    "colorize_for_eval", "evaluate_bundle", "evaluate_models", "features_in_batches", "fid_table", "fid_table_markdown",
    "paired_markdown", "reference_features", "StreamScorer",
]
