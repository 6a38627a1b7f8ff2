"""Automatic-mode FID reports of bundles (mangacolor/eval/report.py) with a cheap feature network."""

from __future__ import annotations

import numpy as np
import pytest
from tests.eval.bundles import tiny_bundle
from tests.eval.eval_helpers import PoolingNetwork, random_pages

from mangacolor.eval.candidates import EvalModel
from mangacolor.eval.fid import FeatureExtractor
from mangacolor.eval.report import (
    PAPER_SOURCE,
    RANDOM_INIT_NOTE,
    EvaluationConfig,
    colorize_for_eval,
    evaluate_bundle,
    evaluate_models,
    fid_table,
)
from mangacolor.inference.bundle import ModelBundle

CFG = EvaluationConfig(inception="random", fid_method="eig", n_boot=10, kid_subsets=5, n_samples=2)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "random": ModelBundle.load(tiny_bundle(root / "r", "random")),
        "page": ModelBundle.load(tiny_bundle(root / "p", "page")),
        "drafting": ModelBundle.load(tiny_bundle(root / "d", "random", drafting=True)),
    }


def grey_pages(n: int, seed: int = 0, size=(64, 48)) -> list[np.ndarray]:
    return random_pages(n, size=size, seed=seed, channels=None)


def extractor(cache_dir=None) -> FeatureExtractor:
    return FeatureExtractor(PoolingNetwork(), batch_size=4, cache_dir=cache_dir)


def test_colorization_keeps_page_size_or_fits_the_long_side(bundles):
    pages = grey_pages(2)
    out = colorize_for_eval(bundles["random"], pages)
    assert [o.shape for o in out] == [(64, 48, 3)] * 2 and out[0].dtype == np.uint8
    small = colorize_for_eval(bundles["random"], pages, long_side=32)
    assert small[0].shape == (32, 24, 3)
    with pytest.raises(ValueError, match="mode must be one of"):
        colorize_for_eval(bundles["random"], pages, mode="hinted")


def test_draft_mode_matters_only_with_a_drafting_network(bundles):
    pages = grey_pages(2, seed=1)
    with_draft = bundles["drafting"]
    assert np.abs(colorize_for_eval(with_draft, pages, "auto")[0].astype(int) - colorize_for_eval(with_draft, pages, "empty_draft")[0]).mean() > 0.5
    plain = bundles["random"]
    assert np.array_equal(colorize_for_eval(plain, pages, "auto")[0], colorize_for_eval(plain, pages, "empty_draft")[0])


def test_a_model_scored_against_its_own_outputs_has_zero_fid(bundles):
    pages = grey_pages(6, seed=2)
    own = colorize_for_eval(bundles["page"], pages)
    ex = extractor()
    same = evaluate_bundle(bundles["page"], pages, own, ex, n_boot=5, kid_subsets=5, fid_method="eig")
    other = evaluate_bundle(bundles["page"], pages, random_pages(6, size=(64, 48), seed=9), ex, n_boot=5, kid_subsets=5, fid_method="eig")
    assert abs(same.fid) < 1e-6 and other.fid > 1.0
    assert same.n_a == same.n_b == 6 and same.resample == "b"
    assert "empty" in same.notes[0]  # no drafting network: the automatic mode used an empty draft
    assert RANDOM_INIT_NOTE in same.to_markdown()


def _models(bundles):
    cand = EvalModel("candidate", "candidate", "2", "full", "unused", ("auto", "empty_draft"))
    champ = EvalModel("champion", "champion", "1", "full", "unused")
    return [(cand, bundles["drafting"]), (champ, bundles["page"])]


def test_models_are_scored_in_one_pass_and_laid_beside_the_paper(bundles):
    pages, reference = grey_pages(5, seed=3), random_pages(6, size=(64, 48), seed=4)
    result = evaluate_models(_models(bundles), pages, reference, extractor(), CFG, "holdout", "test reference")
    assert list(result.table["row"]) == ["candidate/auto", "candidate/empty_draft", "champion/auto"]
    assert result.table["fid"].notna().all() and (result.table["fid_lo"] <= result.table["fid_hi"]).all()
    record = result.to_json()
    assert record["candidate"] == {"version": "2", "row": "candidate/auto", "variant": "full"}
    assert record["champion"] == {"version": "1", "row": "champion/auto"}
    assert record["random_init"] and record["note"] == RANDOM_INIT_NOTE
    assert len(result.samples["champion/auto"]) == 2

    table = fid_table(result.table)
    models = list(table["model"])
    at = models.index("Our (512 CLS)")
    assert models[at + 1].startswith("candidate v2 (full), automatic draft")
    assert models[at + 2].startswith("champion v1")
    assert models[models.index("Our (with empty coloring draft)") + 1].startswith("candidate v2 (full), empty draft")
    paper = table[table["source"] == PAPER_SOURCE].set_index("model")
    assert paper.loc["[38] (the authors' 2021 model)", "FID Manga109"] == "21.02"
    assert paper.loc["+adversarial domain adaptation", "FID holdout (paper: their dataset)"] == "12.61"
    md = result.markdown("a gate line")
    assert md.index(RANDOM_INIT_NOTE) < md.index("|")  # said before any number
    assert "bilinear-torch" in md and "eigenvalue form" in md and "a gate line" in md


def test_a_candidate_that_is_the_champion_is_recorded_not_scored_twice(bundles):
    cand = EvalModel("candidate", "candidate", "4", "full", "unused", ("auto",))
    champ = EvalModel("champion", "champion", "4", "full", "unused", ())
    result = evaluate_models([(cand, bundles["random"]), (champ, None)], grey_pages(3), random_pages(4, size=(64, 48)),
                             extractor(), CFG, "manga109")
    assert list(result.table["row"]) == ["candidate/auto"]
    assert result.to_json()["champion"] == {"version": "4", "row": None}
    assert result.gate_verdict() == (True, "candidate v4 is the champion already")


def test_fid_table_merges_the_two_sets_of_one_model():
    base = {"name": "candidate", "version": "3", "variant": "no_drafts", "mode": "auto", "paper_row": "Our (without drafting network)",
            "kid": 0.01, "kid_lo": 0.005, "kid_hi": 0.02}
    lines = [{**base, "set": "holdout", "fid": 40.0, "fid_lo": 38.0, "fid_hi": 45.0},
             {**base, "set": "manga109", "fid": 50.0, "fid_lo": 47.0, "fid_hi": 55.5}]
    table = fid_table(lines)
    ours = table[table["source"] == "ours"]
    assert len(ours) == 1
    row = ours.iloc[0]
    assert row["FID holdout (paper: their dataset)"] == "40.00 [38.00, 45.00]" and row["FID Manga109"] == "50.00 [47.00, 55.50]"
    assert row["KID×10³ holdout"] == "10.00 [5.00, 20.00]"
    assert table.index[table["model"] == "Our (without drafting network)"][0] + 1 == ours.index[0]


def test_re_evaluation_recomputes_only_new_images(bundles, tmp_path):
    pages, reference = grey_pages(4, seed=5), random_pages(5, size=(64, 48), seed=6)
    first = evaluate_models(_models(bundles)[1:], pages, reference, extractor(tmp_path / "cache"), CFG, "holdout")
    assert first.features_computed == 5 + 4 and first.features_cached == 0
    again = evaluate_models(_models(bundles), pages, reference, extractor(tmp_path / "cache"), CFG, "holdout")
    # Only the new model's colorizations (auto and empty draft differ: it has a drafting network).
    assert again.features_cached == 5 + 4 and again.features_computed == 2 * 4
    assert again.table.set_index("row").loc["champion/auto", "fid"] == pytest.approx(first.table.iloc[0]["fid"])


class _Lazy:
    """A page sequence that decodes on indexing and counts how many pages it handed out at once."""

    def __init__(self, pages):
        self.pages, self.reads = pages, 0

    def __len__(self):
        return len(self.pages)

    def __getitem__(self, i):
        self.reads += 1
        return self.pages[i].copy()


def test_streaming_gives_the_in_memory_fid_and_paired_metrics_on_pages_with_truth(bundles):
    from mangacolor.eval.fid import metric_report

    pages, reference = grey_pages(7, seed=11), random_pages(6, size=(64, 48), seed=12)
    cfg = CFG.model_copy(update={"batch_size": 2})
    ex = extractor()
    # the in-memory path: every output kept, features of all of them at once
    outputs = colorize_for_eval(bundles["page"], pages)
    expected = metric_report(ex(reference), ex(outputs), feature_extractor=ex.description, resize=ex.resize, random_init=True,
                             kid_subsets=CFG.kid_subsets, kid_subset_size=CFG.kid_subset_size, n_boot=CFG.n_boot,
                             resample="b", seed=CFG.seed, fid_method=CFG.fid_method)
    model = EvalModel("candidate", "candidate", "1", "full", "unused", ("auto",))
    truths = [outputs[0], None, None, np.full_like(outputs[3], 128), None, None, None]  # two pages with known colours
    lazy = _Lazy(pages)
    result = evaluate_models([(model, bundles["page"])], lazy, _Lazy(reference), ex, cfg, "holdout", truths=truths)
    line = result.table.iloc[0]
    assert line["fid"] == pytest.approx(expected.fid, rel=1e-6) and line["kid"] == pytest.approx(expected.kid_mean, rel=1e-6)
    assert lazy.reads == len(pages)  # each page read once, in batches
    paired = result.paired["candidate/auto"]
    assert paired["n_pairs"] == 2 == line["n_paired"]
    # page 0's truth is its own colorization (ΔE 0), page 3's a flat grey: the mean is page 3's half
    from mangacolor.eval.paired import ciede2000

    assert paired["ciede2000"] == pytest.approx(ciede2000(outputs[3], truths[3]) / 2, rel=1e-6)
    record = result.to_json()
    assert record["rows"]["candidate/auto"]["paired"]["n_pairs"] == 2
    md = result.markdown()
    assert "Paired metrics on 2 evaluated pages" in md and "CIEDE2000" in md
    assert "clip_is: absent" in md and "aesthetic: absent" in md  # no user-placed weights: said, not silently skipped


def test_reference_features_are_cached_by_content(bundles, tmp_path):
    from mangacolor.eval.report import reference_features

    reference = random_pages(5, size=(64, 48), seed=13)
    first = extractor(tmp_path / "cache")
    feats = reference_features(first, reference, 2, content_key="ref-v1")
    again = extractor(tmp_path / "cache")
    lazy = _Lazy(reference)
    cached = reference_features(again, lazy, 2, content_key="ref-v1")
    assert np.array_equal(feats, cached) and again.n_computed == 0 and lazy.reads == 0  # one file read, no page decoded


def test_configured_but_missing_score_weights_fail_with_what_to_place(bundles, tmp_path):
    from mangacolor.eval.inception import WeightsNotFoundError

    cfg = CFG.model_copy(update={"aesthetic_weights": str(tmp_path / "aesthetic.pt")})
    model = EvalModel("candidate", "candidate", "1", "full", "unused", ("auto",))
    with pytest.raises(WeightsNotFoundError, match=r"aesthetic weights not found at .*aesthetic\.pt.*LAION aesthetic predictor"):
        evaluate_models([(model, bundles["page"])], grey_pages(2), random_pages(3, size=(64, 48)), extractor(), cfg, "holdout")
    (tmp_path / "aesthetic.pt").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(WeightsNotFoundError, match="not a readable PyTorch checkpoint"):
        evaluate_models([(model, bundles["page"])], grey_pages(2), random_pages(3, size=(64, 48)), extractor(), cfg, "holdout")
