"""Which registered models an evaluation scores: the candidate, the champion, the ablation variants.

Versions of `mangacolor-colorizer` are the full method; an ablation ("no_drafts", "no_adaptation",
"no_self_training": the rows of the paper's Tables 1 and 3 that leave a part out) is registered as
`mangacolor-colorizer-<variant>` with its `variant` tag (`mangacolor.inference.registry`). An evaluation scores

- the `candidate` alias in the automatic mode and with an empty draft (Table 1's "with empty
  coloring draft" row: the same model, its drafting network unused);
- the `champion` alias, when it is another version, so the gate compares two models scored in the
  same run on the same pages (when it is the candidate it is listed with no modes: recorded, not
  scored twice);
- the latest version of every variant present (older stores may hold variants under the main name,
  told apart by their tag: those count too, never as candidate or champion). A model imported from
  elsewhere is one of them: the 2021 release's is `mangacolor-colorizer-mc2`, tag `mc2`
  (`mangacolor.inference.imported`). Pinned while the pipeline has no candidate yet, it is scored alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from mangacolor.inference.registry import FULL, MODEL_NAME, variant_models, variant_of, version_by_alias

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


def _variant(mv) -> str:
    return variant_of(mv)


def _pinned_row(client: mlflow.MlflowClient, model_name: str, version: str) -> EvalModel:
    mv = client.get_model_version(model_name, version)
    return EvalModel(_variant(mv), "variant", str(mv.version), _variant(mv), f"models:/{mv.name}/{mv.version}")


def models_to_evaluate(client: mlflow.MlflowClient | None = None, name: str = MODEL_NAME,
                       pinned: dict[str, str] | None = None) -> list[EvalModel]:
    """The models one evaluation run scores (see the module docstring); LookupError without a candidate.

    `pinned` ({registered model name: version}) names the exact version to score instead of the one an
    alias or "latest" points to now: `{name: v}` is the candidate, `{name-<variant>: v}` that variant's row.
    """
    client = client or mlflow.MlflowClient()
    pinned = dict(pinned or {})
    cand = client.get_model_version(name, pinned.pop(name)) if name in pinned else version_by_alias("candidate", name, client)
    if cand is None and pinned:
        # A model registered under its own name (an imported one, such as the 2021 release's
        # mangacolor-colorizer-mc2) is scored on its own while the pipeline has no candidate yet.
        return [_pinned_row(client, model_name, version) for model_name, version in pinned.items()]
    if cand is None:
        raise LookupError(
            f"no version of {name!r} has the alias 'candidate' in the MLflow registry at {mlflow.get_tracking_uri()}: "
            "materialize colorizer_final first (it registers the bundle as the candidate)"
        )
    out = [EvalModel("candidate", "candidate", str(cand.version), _variant(cand), f"models:/{name}/{cand.version}", MODES)]
    champ = version_by_alias("champion", name, client)
    if champ is not None:
        # The candidate may be the champion already: recorded, not scored twice (no modes).
        same = str(champ.version) == str(cand.version)
        out.append(EvalModel("champion", "champion", str(champ.version), _variant(champ), f"models:/{name}/{champ.version}",
                             () if same else ("auto",)))
    scored = {m.version for m in out}
    latest: dict[str, object] = {}
    for mv in client.search_model_versions(f"name='{name}'"):  # variants registered before they had their own names
        v = _variant(mv)
        if v != FULL and str(mv.version) not in scored and (v not in latest or int(mv.version) > int(latest[v].version)):
            latest[v] = mv
    latest.update(variant_models(client, name))
    for model_name, version in pinned.items():
        mv = client.get_model_version(model_name, version)
        latest[_variant(mv)] = mv
    for v in sorted(latest):
        mv = latest[v]
        out.append(EvalModel(v, "variant", str(mv.version), v, f"models:/{mv.name}/{mv.version}"))
    return out


def latest_versions(client: mlflow.MlflowClient, name: str = MODEL_NAME) -> dict[str, int]:
    """The highest version of the full method and of each variant's own registered model, by model name."""
    names = [name] + [rm.name for rm in client.search_registered_models(filter_string=f"name LIKE '{name}-%'")]
    found = {n: latest_version(client, n) for n in names}
    return {n: v for n, v in found.items() if v is not None}


def latest_version(client: mlflow.MlflowClient, name: str = MODEL_NAME) -> int | None:
    """The highest version number registered under `name` (None if there is none yet)."""
    versions = client.search_model_versions(f"name='{name}'")  # none registered: an empty list, not an error
    return max((int(mv.version) for mv in versions), default=None)
