"""The store-level steps of the synthetic pages: quarantine, source ids carried along, the xDoG cache, model rows."""

import numpy as np
import pandas as pd
import pytest
import torch

from mangacolor.io.images import encode_png, read_image
from mangacolor.io.store import Store, sha256_bytes
from mangacolor.stages.synthetic import RefinerPairs, translate_stage, xdog_stage
from mangacolor.stages.common import model_weights, write_model
from mangacolor.synthetic.xdog import PRESETS, xdog
from mangacolor.io.weights import load_weights, save_weights


def _page(seed: int, shape=(48, 32, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    page = np.full(shape, 255, np.uint8)
    page[8:30, 6:26] = rng.integers(0, 200, shape[2:], dtype=np.uint8)  # a filled shape with a hard edge
    return page


def _rows(store: Store, pages: dict[str, bytes]) -> pd.DataFrame:
    rows = []
    for name, data in pages.items():
        path = store.path("in", name)
        store.write_bytes(path, data)
        rows.append({"id": f"t/{name}", "title": "t", "page": name, "uri": path, "sha256": sha256_bytes(data)})
    return pd.DataFrame(rows)


def test_xdog_stage_quarantines_what_it_cannot_read_and_keeps_the_colour_page_id(tmp_path):
    store = Store(tmp_path)
    rows = _rows(store, {"001.png": encode_png(_page(0)), "002.png": b"<html>not a page</html>"})
    writer = store.begin("xdog_pages", "t")
    summary = xdog_stage(rows, store, writer, PRESETS["alacgan"])
    _, vdir, frame = writer.commit()
    assert (summary.ok, summary.quarantined) == (1, 1)
    ok = frame[frame["status"] == "ok"].iloc[0]
    assert ok["source_id"] == "t/001.png" and ok["source_sha256"] == rows.iloc[0]["sha256"]
    np.testing.assert_array_equal(read_image(store.read_bytes(f"{vdir}/{ok['path']}"), mode="L"), xdog(_page(0), "alacgan"))
    bad = frame[frame["status"] != "ok"].iloc[0]
    assert bad["id"] == "t/002.png" and "HTML" in bad["reason"]


def test_translate_stage_carries_source_ids_and_quarantines_unreadable_pages(tmp_path):
    store = Store(tmp_path)
    rows = _rows(store, {"a.png": encode_png(_page(1)[..., 0]), "b.png": b"\x89PNG\r\n\x1a\n truncated"})
    rows["source_id"] = ["colour/a", "colour/b"]
    rows["source_sha256"] = ["sa", "sb"]
    writer = store.begin("refined_pages", "t")
    summary = translate_stage(rows, store, writer, lambda pages: [255 - p for p in pages])
    _, vdir, frame = writer.commit()
    assert (summary.ok, summary.quarantined) == (1, 1)
    frame = frame.set_index("id")
    assert frame.loc["t/a.png", "source_id"] == "colour/a" and frame.loc["t/a.png", "source_sha256"] == "sa"
    out = read_image(store.read_bytes(f"{vdir}/{frame.loc['t/a.png', 'path']}"), mode="L")
    np.testing.assert_array_equal(out, 255 - _page(1)[..., 0])
    assert frame.loc["t/b.png", "status"] == "quarantined" and frame.loc["t/b.png", "source_id"] == "colour/b"
    assert "png" in frame.loc["t/b.png", "reason"].lower()


def test_translate_stage_stops_on_a_network_error_instead_of_quarantining_the_title(tmp_path):
    store = Store(tmp_path)
    rows = _rows(store, {"a.png": encode_png(_page(1)[..., 0])})

    def broken(pages):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        translate_stage(rows, store, store.begin("refined_pages", "t"), broken)


def test_refiner_pairs_compute_xdog_once_and_read_it_back(tmp_path):
    store = Store(tmp_path / "store")
    real = _page(3)[..., 0]
    rows = _rows(store, {"r.png": encode_png(real)})
    pairs = RefinerPairs(store, rows, PRESETS["generic"], tmp_path / "cache")
    pairs.prepare()
    cached = list((tmp_path / "cache").glob("*.png"))
    assert len(cached) == 1
    cached[0].write_bytes(encode_png(np.zeros_like(real)))  # a second read must come from the cache
    line, page = pairs[0]
    np.testing.assert_array_equal(page, real)
    assert line.max() == 0 and xdog(real, PRESETS["generic"]).max() == 255


def test_model_rows_name_every_training_page_and_the_weights_load_back(tmp_path):
    store = Store(tmp_path / "store")
    weights = save_weights(tmp_path / "w.safetensors", {"x": torch.arange(3.0)}, metadata={"steps": 2})
    train = pd.DataFrame([{"id": f"bw/{i}", "title": "bw", "page": str(i), "sha256": f"s{i}"} for i in (1, 2)])
    writer = store.begin("refiner_model")
    write_model(writer, weights, {"train": train})
    _, _, frame = writer.commit()
    assert list(frame["role"]) == ["weights", "train", "train"]
    assert set(frame.loc[frame["role"] == "train", "page_id"]) == {"bw/1", "bw/2"}
    with model_weights(store, "refiner_model") as path:
        state, meta = load_weights(path)
    assert torch.equal(state["x"], torch.arange(3.0)) and meta["steps"] == 2


def test_colour_pages_are_jittered_before_xdog_per_page_and_reproducibly(tmp_path):
    """Appendix B: colour jitter of the colour page before the synthetic preprocessing; the draw depends on the page alone."""
    from mangacolor.data.augment import color_page_jitter
    from mangacolor.stages.synthetic import page_seed

    store = Store(tmp_path)
    pages = {f"{i:03d}.png": encode_png(_page(i, (64, 48, 3))) for i in range(4)}
    rows = _rows(store, pages)
    jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}
    outputs = {}
    for name, chosen in (("jittered", rows), ("again", rows), ("fewer", rows.iloc[1:])):
        writer = store.begin(f"xdog_{name}", "t")
        xdog_stage(chosen, store, writer, PRESETS["alacgan"], color_jitter=jitter)
        _, vdir, frame = writer.commit()
        outputs[name] = {r["id"]: read_image(store.read_bytes(f"{vdir}/{r['path']}"), mode="L") for r in frame.to_dict("records")}
    for page_id, out in outputs["jittered"].items():
        colour = read_image(store.read_bytes(rows.set_index("id").loc[page_id, "uri"]), mode="RGB")
        expected = xdog(color_page_jitter(**jitter)(colour, seed=page_seed(page_id)), PRESETS["alacgan"])
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(out, outputs["again"][page_id])
        if page_id in outputs["fewer"]:
            np.testing.assert_array_equal(out, outputs["fewer"][page_id])
    # the jitter reaches the line art: some page differs from the xDoG of its unjittered colour page
    assert any(not np.array_equal(out, xdog(_page(int(pid[2:5]), (64, 48, 3)), PRESETS["alacgan"]))
               for pid, out in outputs["jittered"].items())
