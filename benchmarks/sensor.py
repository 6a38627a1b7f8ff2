"""One `title_sensor` tick over a 5,000-page source: page bytes read and seconds, nothing changed vs one page changed.

    uv run python benchmarks/sensor.py [--pages 5000] [--titles 100] [--json PATH]

Writes a folder source of `--titles` titles holding `--pages` small PNG pages in all, points a preset
at it, runs the real sensor (Dagster's `build_sensor_context`, an ephemeral instance) once to fill
its cursor, then times one tick with nothing changed and one tick after one page was rewritten.
Page bytes are counted at fsspec's local file reads under the source folder. Target: no page bytes
read when nothing changed (fingerprints come from file metadata), one observation when one page changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fsspec.implementations.local import LocalFileOpener  # noqa: E402

from mangacolor.config import PRESET_DIR  # noqa: E402
from mangacolor.io.images import encode_png  # noqa: E402


class PageReads:
    """Counts bytes read through fsspec from files under a folder."""

    def __init__(self, root: Path):
        self.root, self.bytes, self._original = str(root), 0, LocalFileOpener.read

    def __enter__(self):
        original, counter = self._original, self

        def read(opener, *args, **kwargs):
            data = original(opener, *args, **kwargs)
            if str(opener.path).startswith(counter.root):
                counter.bytes += len(data)
            return data

        LocalFileOpener.read = read
        return self

    def __exit__(self, *exc):
        LocalFileOpener.read = self._original


def make_source(root: Path, pages: int, titles: int) -> Path:
    rng = np.random.default_rng(0)
    per_title = -(-pages // titles)
    written = 0
    for t in range(titles):
        folder = root / f"title_{t:04d}"
        folder.mkdir(parents=True)
        for p in range(min(per_title, pages - written)):
            (folder / f"{p:03d}.png").write_bytes(encode_png(rng.integers(0, 256, (32, 24), dtype=np.uint8)))
            written += 1
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=5000)
    ap.add_argument("--titles", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    import dagster as dg

    from assets.ingest import title_sensor
    from assets.resources import SettingsResource, StoreResource

    work = Path(tempfile.mkdtemp(prefix="mangacolor-sensor-"))
    source = make_source(work / "bw", args.pages, args.titles)
    preset = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
    preset |= {"sources": [{"name": "bench", "role": "bw", "uri": str(source)}], "web_sources": [], "artifact_root": str(work / "artifacts")}
    (work / "preset.yaml").write_text(yaml.safe_dump(preset))
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          resources={"settings": SettingsResource(preset=str(work / "preset.yaml")),
                                                     "store": StoreResource(artifact_root=str(work / "artifacts"))})
        with PageReads(source) as reads:
            t = time.perf_counter()
            result = title_sensor(context)
            seconds = time.perf_counter() - t
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result, seconds, reads.bytes

    first, s_first, _ = tick(None)
    unchanged, s_unchanged, bytes_unchanged = tick(first.cursor)
    page = source / "title_0000" / "000.png"
    page.write_bytes(encode_png(np.zeros((32, 24), np.uint8)))
    changed, s_changed, bytes_changed = tick(unchanged.cursor)
    figures = {"bytes_read_unchanged": bytes_unchanged, "s_unchanged": round(s_unchanged, 3), "s_one_changed": round(s_changed, 3)}
    print(f"source: {args.pages} pages in {args.titles} titles ({work})")
    print(f"first tick (fills the cursor): {s_first:.2f} s, {len(first.asset_events)} observations")
    print(f"nothing changed: {s_unchanged:.2f} s, {bytes_unchanged} page bytes read, {len(unchanged.asset_events)} observations")
    print(f"one page changed: {s_changed:.2f} s, {bytes_changed} page bytes read, observed "
          f"{[e.partition for e in changed.asset_events]}")
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
