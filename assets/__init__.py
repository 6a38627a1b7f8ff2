"""Dagster assets of mangacolor: thin wrappers that read through the store, call `mangacolor`, write, log, return metadata."""

import warnings

import dagster as dg

# Two Dagster features we rely on knowingly. Each filter names its one warning, so any other Beta or
# Preview warning (a new feature used by accident) still shows:
# - observable source assets give each title's source, and the fan-in digests, a data version without
#   materializing anything (assets/ingest.py, assets/digests.py);
warnings.filterwarnings("ignore", message=r"Function `observable_source_asset` is currently in beta", category=dg.BetaWarning)
# - partitioned asset checks judge each evaluation set of `fid_report` on its own (assets/evaluation.py).
warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
                        category=dg.PreviewWarning)
