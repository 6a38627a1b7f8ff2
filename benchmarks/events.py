"""The largest materialization events of a Dagster instance: what every page of the UI loads.

    uv run python benchmarks/events.py [--home .dagster_home] [--top 5] [--json PATH]

Reads every asset's materializations from the instance (default: the project's `.dagster_home`, where
`mangacolor demo` records its runs) and prints the largest by serialized size (the bytes of the event
as the event log stores it), with the asset, the partition and the largest metadata entries. Target:
every event at most 20 KB (issue 15: thumbnails kept in the store, tables of at most 50 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LIMIT_BYTES = 20 * 1024


def materialization_sizes(instance) -> list[dict]:
    """One row per materialization event: asset, partition, serialized bytes, the three largest metadata entries."""
    from dagster._serdes import serialize_value

    rows = []
    for key in instance.get_asset_keys():
        cursor = None
        while True:
            result = instance.fetch_materializations(key, limit=200, cursor=cursor)
            for record in result.records:
                entry = record.event_log_entry
                mat = entry.asset_materialization
                entries = sorted(((len(serialize_value(v).encode()), k) for k, v in mat.metadata.items()), reverse=True)
                rows.append({"asset": key.to_user_string(), "partition": mat.partition, "run_id": entry.run_id,
                             "bytes": len(serialize_value(entry).encode()),
                             "largest_entries": [{"key": k, "bytes": n} for n, k in entries[:3]]})
            if not result.has_more:
                break
            cursor = result.cursor
    return sorted(rows, key=lambda r: r["bytes"], reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=str(Path(__file__).resolve().parent.parent / ".dagster_home"),
                        help="DAGSTER_HOME of the instance (default: the project's, as `mangacolor demo` uses)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    if not (home / "dagster.yaml").exists() and not any(home.glob("*")):
        print(f"error: no Dagster instance at {home}; run `uv run mangacolor demo` first or pass --home", file=sys.stderr)
        return 2
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        rows = materialization_sizes(instance)
    if not rows:
        print(f"error: no materialization events in {home}", file=sys.stderr)
        return 2
    over = [r for r in rows if r["bytes"] > LIMIT_BYTES]
    print(f"{len(rows)} materialization events in {home}; {len(over)} over {LIMIT_BYTES} bytes")
    print(f"largest: {rows[0]['bytes']} bytes  {rows[0]['asset']}" + (f" [{rows[0]['partition']}]" if rows[0]["partition"] else ""))
    print(f"\ntop {args.top}:")
    for r in rows[: args.top]:
        where = r["asset"] + (f" [{r['partition']}]" if r["partition"] else "")
        parts = ", ".join(f"{e['key']} {e['bytes']}" for e in r["largest_entries"])
        print(f"  {r['bytes']:>8} bytes  {where:<40} ({parts})")
    if args.json:
        figures = {"home": str(home), "events": len(rows), "limit_bytes": LIMIT_BYTES, "over_limit": len(over),
                   "largest": rows[0], "top": rows[: args.top],
                   "largest_by_asset": {a: max(r["bytes"] for r in rows if r["asset"] == a) for a in sorted({r["asset"] for r in rows})}}
        Path(args.json).write_text(json.dumps(figures, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
