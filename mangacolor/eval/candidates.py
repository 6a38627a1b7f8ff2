"""Which registered models an evaluation scores: the candidate, the champion, the ablation variants.

Versions of `mangacolor-colorizer` carry a `variant` tag: "full" (the method) or an ablation
("no_drafts", "no_adaptation", "no_self_training": the rows of the paper's Tables 1 and 3 that
leave a part out). An evaluation scores

- the `candidate` alias in the automatic mode and with an empty draft (Table 1's "with empty
  coloring draft" row: the same model, its drafting network unused);
- the `champion` alias, when it is another version, so the gate compares two models scored in the
  same run on the same pages (when it is the candidate it is listed with no modes: recorded, not
  scored twice);
- the latest version of every other variant present.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from mangacolor.registry import MODEL_NAME

MODES = ("auto", "empty_draft")
VARIANTS = ("full", "no_drafts", "no_adaptation", "no_self_training")


@dataclass(frozen=True)
class EvalModel:
    name: str  # row prefix: "candidate", "champion" or the variant tag
    role: str  # "candidate" | "champion" | "variant"
    version: str | None
    variant: str
    uri: str  # models:/name/version, or a local bundle folder
    modes: tuple[str, ...] = ("auto",)

    def rows(self) -> list[str]:
        return [f"{self.name}/{m}" for m in self.modes]


def _alias(client: mlflow.MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def _variant(mv) -> str:
    return (mv.tags or {}).get("variant", "full")


def models_to_evaluate(client: mlflow.MlflowClient | None = None, name: str = MODEL_NAME) -> list[EvalModel]:
    """The models one evaluation run scores (see the module docstring); LookupError without a candidate."""
    client = client or mlflow.MlflowClient()
    cand = _alias(client, name, "candidate")
    if cand is None:
        raise LookupError(
            f"no version of {name!r} has the alias 'candidate' in the MLflow registry at {mlflow.get_tracking_uri()}: "
            "materialize colorizer_final first (it registers the bundle as the candidate)"
        )
    out = [EvalModel("candidate", "candidate", str(cand.version), _variant(cand), f"models:/{name}/{cand.version}", MODES)]
    champ = _alias(client, name, "champion")
    if champ is not None:
        # The candidate may be the champion already: recorded, not scored twice (no modes).
        same = str(champ.version) == str(cand.version)
        out.append(EvalModel("champion", "champion", str(champ.version), _variant(champ), f"models:/{name}/{champ.version}",
                             () if same else ("auto",)))
    scored = {m.version for m in out}
    latest: dict[str, object] = {}
    for mv in client.search_model_versions(f"name='{name}'"):
        v = _variant(mv)
        if v != "full" and (v not in latest or int(mv.version) > int(latest[v].version)):
            latest[v] = mv
    for v in sorted(latest):
        mv = latest[v]
        if str(mv.version) not in scored:
            out.append(EvalModel(v, "variant", str(mv.version), v, f"models:/{name}/{mv.version}"))
    return out


def latest_version(client: mlflow.MlflowClient, name: str = MODEL_NAME) -> int | None:
    """The highest version number registered under `name` (None if there is none yet)."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    return max((int(mv.version) for mv in versions), default=None)
