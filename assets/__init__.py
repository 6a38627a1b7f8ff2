"""Dagster assets of mangacolor: thin wrappers that read through the store, call `mangacolor`, write, log, return metadata."""

import warnings

import dagster as dg

# Observable source assets (how sources are fingerprinted per title) are beta and partitioned asset
# checks (per evaluation set) a preview in Dagster 1.x; we rely on both knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
