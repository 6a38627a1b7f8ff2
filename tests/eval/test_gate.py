"""The promotion gate (mangacolor/eval/gate.py) on hand-made reports."""

from __future__ import annotations

import math

import pytest

from mangacolor.eval.gate import decide_promotion, gate, set_verdict


def report(fid, ci=None, kid=0.01, kid_ci=None, **kw):
    base = {"fid": fid, "fid_ci": ci, "kid_mean": kid, "kid_ci": kid_ci, "feature_extractor": "net", "resize": "bilinear-torch",
            "fid_method": "eig", "n_a": 100, "n_b": 50}
    return {**base, **kw}


def test_a_candidate_clearly_worse_than_the_champion_fails():
    passed, reason = gate(report(30.0, (28.0, 33.0)), report(20.0, (18.0, 23.0)))
    assert not passed and "worse beyond the interval" in reason


@pytest.mark.parametrize("candidate", [report(15.0, (13.0, 17.0)), report(22.0, (19.5, 26.0))], ids=["better", "overlapping"])
def test_better_or_not_clearly_worse_candidates_pass(candidate):
    passed, reason = gate(candidate, report(20.0, (18.0, 23.0)))
    assert passed and "not worse" in reason


def test_first_model_passes_and_says_there_was_no_champion():
    passed, reason = gate(report(50.0, (45.0, 55.0)), None)
    assert passed and "no champion yet" in reason


def test_margin_and_kid_metric():
    cand, champ = report(24.0, (23.5, 25.0)), report(20.0, (18.0, 23.0))
    assert not gate(cand, champ)[0]
    assert gate(cand, champ, margin=1.0)[0]
    # The same pair judged by KID, whose intervals overlap.
    cand["kid_ci"], champ["kid_ci"] = (0.010, 0.030), (0.012, 0.020)
    assert gate(cand, champ, metric="kid")[0]
    cand["kid_ci"] = (0.025, 0.030)
    assert not gate(cand, champ, metric="kid")[0]


def test_point_estimates_without_intervals_are_strict():
    assert not gate(report(20.5), report(20.0))[0]
    assert gate(report(19.9), report(20.0))[0]


@pytest.mark.parametrize("change", [{"feature_extractor": "other"}, {"n_b": 49}, {"resize": "bicubic-clean"}])
def test_reports_computed_differently_are_not_compared(change):
    passed, reason = gate(report(10.0, (9.0, 11.0), **change), report(20.0, (18.0, 23.0)))
    assert not passed and "not comparable" in reason


def test_a_broken_candidate_fails():
    assert not gate(report(math.nan, (1.0, 2.0)), None)[0]


def stored(cand_v, champ_v, cand_fid, champ_fid=20.0):
    rows = {"candidate/auto": report(cand_fid, (cand_fid - 2, cand_fid + 2))}
    if champ_v is not None:
        rows["champion/auto"] = report(champ_fid, (champ_fid - 2, champ_fid + 2))
    return {"candidate": {"version": cand_v, "row": "candidate/auto"},
            "champion": {"version": champ_v, "row": "champion/auto" if champ_v else None}, "rows": rows}


def test_set_verdict_reads_the_stored_record():
    assert not set_verdict(stored("2", "1", 30.0))[0]
    assert set_verdict(stored("2", "1", 15.0))[0]
    assert set_verdict(stored("2", None, 15.0))[0]
    same = stored("2", "2", 15.0)
    assert set_verdict(same) == (True, "candidate v2 is the champion already")


def test_promotion_needs_every_set_passing_for_the_same_candidate_and_current_champion():
    sets = ["holdout", "manga109"]
    good = decide_promotion({"holdout": stored("3", "1", 15.0), "manga109": stored("3", "1", 18.0)}, sets, "1")
    assert good.promote and good.version == "3"
    one_worse = decide_promotion({"holdout": stored("3", "1", 15.0), "manga109": stored("3", "1", 40.0)}, sets, "1")
    assert not one_worse.promote and "worse" in one_worse.reasons["manga109"]
    waiting = decide_promotion({"holdout": stored("3", "1", 15.0), "manga109": None}, sets, "1")
    assert not waiting.promote and "no fid_report[manga109]" in waiting.reasons["manga109"]
    mixed = decide_promotion({"holdout": stored("3", "1", 15.0), "manga109": stored("2", "1", 15.0)}, sets, "1")
    assert not mixed.promote and "different candidates" in mixed.summary
    stale = decide_promotion({"holdout": stored("3", "1", 15.0)}, ["holdout"], "2")
    assert not stale.promote and "re-evaluate" in stale.reasons["holdout"]
    first = decide_promotion({"holdout": stored("1", None, 50.0)}, ["holdout"], None)
    assert first.promote and first.version == "1"
    already = decide_promotion({"holdout": stored("1", "1", 50.0)}, ["holdout"], "1")
    assert not already.promote and "champion already" in already.summary
