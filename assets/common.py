"""Small helpers every asset uses: metadata thumbnails, partition definitions, progress logging."""


import base64

import dagster as dg
import numpy as np

from mangacolor.io.images import encode_png, thumbnail_grid

color_titles = dg.DynamicPartitionsDefinition(name="color_titles")
bw_titles = dg.DynamicPartitionsDefinition(name="bw_titles")


def thumbnails_md(images: list[np.ndarray], caption: str = "", height: int = 96) -> dg.MetadataValue:
    """A strip of small PNGs inlined as base64 markdown, so the UI shows samples without any server."""
    if not images:
        return dg.MetadataValue.md("_no images_")
    png = encode_png(thumbnail_grid(images, height=height), compression=9)
    b64 = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"{caption}\n\n![samples](data:image/png;base64,{b64})")


def progress_logger(context: dg.AssetExecutionContext, total: int | None, label: str, every: int = 10):
    def report(n: int, item: str) -> None:
        if n == 1 or n % every == 0 or (total is not None and n == total):
            context.log.info(f"{label}: {n}/{total if total is not None else '?'} ({item})")

    return report


def version_metadata(store, version: str, version_dir: str) -> dict:
    return {"data_version": version, "uri": dg.MetadataValue.path(store.uri(store.relative(version_dir)))}
