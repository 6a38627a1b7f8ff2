"""The evaluation stage over the store: what `fid_report` (paper Tables 1 and 3) and `inference_benchmark` (Table 4) write."""

from __future__ import annotations

import hashlib
import io
import json

import pandas as pd

from mangacolor.io.store import Store


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def write_report(st: Store, set_name: str, page_rows: pd.DataFrame, table: pd.DataFrame, markdown: str, blob: str) -> tuple[str, str]:
    """A `fid_report` version of one evaluation set: a row per evaluated page, the metrics table, the report as
    markdown and JSON (`blob`, whose hash is the version's salt). Returns (version, folder)."""
    writer = st.begin("fid_report", set_name)
    for row in page_rows.to_dict("records"):
        writer.add({k: row.get(k) for k in ("id", "title", "page", "width", "height", "sha256")} | {"source_uri": row["uri"], "status": "ok"})
    writer.write("metrics.parquet", _parquet(table))
    writer.write("report.md", markdown.encode())
    writer.write("report.json", blob.encode())
    version, vdir, _ = writer.seal(salt=hashlib.sha256(blob.encode()).hexdigest())
    return version, vdir


def benchmark_markdown(model: str, table: pd.DataFrame) -> str:
    """The benchmark table beside the paper's Table 4, and how to read it."""
    return (f"## Inference benchmark: {model}\n\n" + table.to_markdown(index=False) +
            "\n\nPaper rows: one 512×768 page on their GPU; ours: median of the timed runs after warm-up, "
            "preprocessing = drafting network + StyleGAN draft, colorization = generator from uint8 page to uint8 page; "
            "memory: CUDA tensors, or CPU resident-set growth (a lower bound, see mangacolor/eval/benchmark.py).")


def write_benchmark(st: Store, results: list[dict], markdown: str, model_version: str) -> tuple[str, str]:
    """An `inference_benchmark` version: a row per (device, page size), the results as parquet, the markdown table.
    Returns (version, folder)."""
    writer = st.begin("inference_benchmark")
    for r in results:
        blob = json.dumps(r, sort_keys=True, default=str).encode()
        writer.add({"id": f"{r['device']}/{r['width']}x{r['height']}", "sha256": hashlib.sha256(blob).hexdigest(), "status": "ok",
                    "width": r["width"], "height": r["height"]})
    writer.write("benchmark.parquet", _parquet(pd.DataFrame(results)))
    writer.write("benchmark.md", markdown.encode())
    version, vdir, _ = writer.seal(salt=model_version)
    return version, vdir
