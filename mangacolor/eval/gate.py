"""The promotion gate: a new model replaces the champion only if it is not clearly worse (paper §V).

The paper ranks models by FID (Tables 1 and 3). A gate on point estimates would block a good model
for noise on a few hundred pages, so it compares *intervals*: the candidate fails when even the
lower end of its FID interval lies above the upper end of the champion's,

    fail  ⇔  candidate.fid_ci[0] > champion.fid_ci[1] + margin

i.e. the candidate is worse beyond what page-sampling noise explains. Intervals are the page
bootstraps of `mangacolor.eval.fid` with the reference set held fixed (`resample="b"`); both models
are scored on the same pages against the same reference, so FID's small-sample upward bias is the
same on both sides and cancels in the comparison. `metric="kid"` applies the same rule to KID's
interval (unbiased, preferable below a few hundred pages). `margin` is in the metric's own units
(0 = any clear regression fails). Without intervals (`n_boot = 0`) the point estimates are
compared, which is strict: any increase beyond `margin` fails.

Reports computed differently cannot be compared: a different feature network, resize, FID method,
reference set size or page count fails the gate with the reason, instead of passing silently.

`decide_promotion` turns the stored reports of every gating set into one decision, so the
`champion_model` asset and its check agree on what "passed" means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

GATE_METRICS = {"fid": ("fid", "fid_ci"), "kid": ("kid_mean", "kid_ci")}
# What must match for two reports to be comparable.
COMPARABLE_KEYS = ("feature_extractor", "resize", "fid_method", "n_a", "n_b")


def _as_dict(report) -> dict:
    if report is None:
        return None
    if isinstance(report, Mapping):
        return dict(report)
    if hasattr(report, "to_dict"):
        return report.to_dict()
    raise TypeError(f"expected a MetricReport or its dict, got {type(report).__name__}")


def gate(candidate, champion, metric: str = "fid", margin: float = 0.0) -> tuple[bool, str]:
    """(passed, reason) for a candidate report against the champion's (MetricReport or dict).

    No champion: passes (the first registered model becomes the champion).
    """
    if metric not in GATE_METRICS:
        raise ValueError(f"gate metric must be one of {sorted(GATE_METRICS)}, got {metric!r}")
    cand, champ = _as_dict(candidate), _as_dict(champion)
    if cand is None:
        return False, "no candidate report"
    value_key, ci_key = GATE_METRICS[metric]
    name = metric.upper()
    value = cand.get(value_key)
    if value is None or not math.isfinite(float(value)):
        return False, f"candidate {name} is not a finite number ({value})"
    if champ is None:
        return True, f"no champion yet: the candidate ({name} {value:.4g}) becomes the first champion"
    differ = [f"{k}: {cand.get(k)!r} vs {champ.get(k)!r}" for k in COMPARABLE_KEYS if cand.get(k) != champ.get(k)]
    if differ:
        return False, "reports are not comparable (" + "; ".join(differ) + "): evaluate both models in one run"
    c_ci, h_ci = cand.get(ci_key), champ.get(ci_key)
    if c_ci is not None and h_ci is not None and all(math.isfinite(float(x)) for x in (*c_ci, *h_ci)):
        lo, hi = float(c_ci[0]), float(h_ci[1])
        shown = f"candidate {name} {value:.4g} [{c_ci[0]:.4g}, {c_ci[1]:.4g}] vs champion {champ[value_key]:.4g} [{h_ci[0]:.4g}, {h_ci[1]:.4g}]"
        if lo > hi + margin:
            return False, f"worse beyond the interval: {shown} (candidate's lower bound above the champion's upper bound{f' + {margin}' if margin else ''})"
        return True, f"not worse beyond the interval: {shown}"
    ref = float(champ[value_key])
    shown = f"candidate {name} {value:.4g} vs champion {ref:.4g} (no intervals: point estimates)"
    if value > ref + margin:
        return False, f"worse: {shown}"
    return True, f"not worse: {shown}"


# --- one decision over the gating sets ----------------------------------------------------------


@dataclass
class PromotionDecision:
    promote: bool
    version: str | None  # the candidate version the decision is about
    reasons: dict[str, str] = field(default_factory=dict)  # per set, plus "summary"

    @property
    def summary(self) -> str:
        return self.reasons.get("summary", "")


def set_verdict(report: dict, metric: str = "fid", margin: float = 0.0) -> tuple[bool, str]:
    """The gate on one stored evaluation (`report.json` written by `mangacolor.eval.report`)."""
    cand, champ = report.get("candidate") or {}, report.get("champion") or {}
    rows = report.get("rows") or {}
    if not cand.get("row") or cand["row"] not in rows:
        return False, "the report has no candidate row"
    if champ.get("version") is not None and str(champ["version"]) == str(cand.get("version")):
        return True, f"candidate v{cand['version']} is the champion already"
    champion_row = rows.get(champ.get("row")) if champ.get("row") else None
    if champ.get("version") is not None and champion_row is None:
        return False, f"the report names champion v{champ['version']} but holds no row for it"
    return gate(rows[cand["row"]], champion_row, metric, margin)


def decide_promotion(reports: Mapping[str, dict | None], sets: Sequence[str], current_champion: str | None,
                     metric: str = "fid", margin: float = 0.0) -> PromotionDecision:
    """Promote only when every gating set has a report for the same candidate version, made against
    the champion that is still current, and every one of them passes the gate."""
    reasons: dict[str, str] = {}
    versions = set()
    ok = True
    for s in sets:
        report = reports.get(s)
        if report is None:
            ok, reasons[s] = False, f"no fid_report[{s}] yet"
            continue
        cand_v = (report.get("candidate") or {}).get("version")
        champ_v = (report.get("champion") or {}).get("version")
        versions.add(None if cand_v is None else str(cand_v))
        if (None if champ_v is None else str(champ_v)) != (None if current_champion is None else str(current_champion)):
            ok, reasons[s] = False, f"report compared with champion v{champ_v}, but the champion is now v{current_champion}: re-evaluate"
            continue
        passed, why = set_verdict(report, metric, margin)
        reasons[s] = why
        ok &= passed
    if len(versions) > 1:
        ok = False
        reasons["summary"] = f"the sets were evaluated for different candidates ({sorted(map(str, versions))}): waiting for every set's report of the newest"
        return PromotionDecision(False, None, reasons)
    version = next(iter(versions), None)
    if version is None:
        return PromotionDecision(False, None, {**reasons, "summary": "no candidate evaluated"})
    if ok and current_champion is not None and str(current_champion) == version:
        return PromotionDecision(False, version, {**reasons, "summary": f"v{version} is the champion already"})
    reasons["summary"] = (f"promote v{version} to champion" if ok else
                          f"keep champion v{current_champion}: candidate v{version} did not pass on every set")
    return PromotionDecision(ok, version, reasons)
