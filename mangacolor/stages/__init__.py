"""The paper's stages over the store: store rows in → a loop or a network → a new store version out.

One module per stage (`synthetic`, `drafting`, `colorization/`), called by the thin Dagster assets and,
for the training stages, by the torchrun worker (`launch`), so a whole stage also runs without an
orchestrator. A stage reads manifests (`mangacolor.io.store`), builds the loop's config from the
preset's section, runs a loop of `mangacolor.training` (or a trained network page by page) and writes
a version with one manifest row per page or file; what it returns is what the asset shows as metadata.
"""


class StageInputError(ValueError):
    """A stage cannot start: what it reads has not been materialized (the message says what to materialize).

    The assets turn it into a `dagster.Failure` with the same message (assets/common.py `commits_last`)."""
