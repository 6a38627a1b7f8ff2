"""The per-title synthetic stages spread over processes and batches: same files whatever the spread, bounded memory."""

import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from mangacolor.io.images import encode_png, read_image
from mangacolor.io.store import Store, sha256_bytes
from mangacolor.models.refiner import Refiner, RefinerConfig, refine_batch
from mangacolor.stages import synthetic as synth
from mangacolor.synthetic.xdog import PRESETS

SHAPES = [(40, 32), (40, 32), (24, 48), (40, 32), (24, 48), (40, 32), (33, 17)]


def _page(seed: int, shape, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    page = np.full(shape + ((channels,) if channels else ()), 255, np.uint8)
    h, w = shape
    page[h // 5: h // 2, w // 6: w // 2] = rng.integers(0, 200, (channels,) if channels else (), dtype=np.uint8)
    page[h // 2:, :] = rng.integers(0, 256, page[h // 2:, :].shape, dtype=np.uint8)  # texture for the network
    return page


def _title(store: Store, channels: int | None, sizes_in_manifest: bool = True) -> pd.DataFrame:
    rows = []
    for i, shape in enumerate(SHAPES):
        data = encode_png(_page(i, shape, channels))
        path = store.path("in", f"{i:03d}.png")
        store.write_bytes(path, data)
        row = {"id": f"t/{i:03d}", "title": "t", "page": f"{i:03d}.png", "uri": path, "sha256": sha256_bytes(data)}
        if sizes_in_manifest:
            row |= {"height": shape[0], "width": shape[1]}
        rows.append(row)
    broken = store.path("in", "999.png")
    store.write_bytes(broken, b"\x89PNG\r\n\x1a\n cut short")
    rows.append({"id": "t/999", "title": "t", "page": "999.png", "uri": broken, "sha256": "x", "height": 40, "width": 32})
    return pd.DataFrame(rows)


def _written(store: Store, asset: str, run) -> tuple[str, dict[str, bytes], pd.DataFrame]:
    writer = store.begin(asset, "t")
    run(writer)
    version, vdir, frame = writer.commit()
    ok = frame[frame["status"] == "ok"]
    return version, {r.id: store.read_bytes(f"{vdir}/{r.path}") for r in ok.itertuples()}, frame


def _refiner() -> Refiner:
    torch.manual_seed(0)
    return Refiner(RefinerConfig(widths=(4, 8), encoder_blocks=(1, 1), decoder_blocks=(1,), cardinality=2, se_reduction=2))


def test_xdog_stage_writes_the_same_files_with_any_number_of_workers(tmp_path):
    store = Store(tmp_path)
    rows = _title(store, 3)
    jitter = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}
    runs = {w: _written(store, f"xdog_{w}", lambda writer, w=w: synth.xdog_stage(
        rows, store, writer, PRESETS["alacgan"], color_jitter=jitter, workers=w)) for w in (0, 2)}
    (v0, files0, frame0), (v2, files2, frame2) = runs[0], runs[2]
    assert v0 == v2 and files0 == files2 and len(files0) == len(SHAPES)
    pd.testing.assert_frame_equal(frame0, frame2)
    assert frame0.set_index("id").loc["t/999", "status"] == "quarantined"


def test_translate_stage_output_does_not_depend_on_workers_or_batch_size(tmp_path):
    """CPU path (network in the workers, one page a pass): byte-identical files for any spread."""
    store = Store(tmp_path)
    rows = _title(store, None)
    model = _refiner()

    def net(pages):
        return refine_batch(model, pages)

    versions = set()
    files = {}
    for workers, batch in ((0, 1), (2, 3), (1, 8)):
        version, files[workers], frame = _written(store, "refined", lambda writer: synth.translate_stage(
            rows, store, writer, net, batch_size=batch, workers=workers))
        versions.add(version)
        assert list(frame["id"]) == sorted(rows["id"])  # manifest rows in id order, not in batch order
    assert len(versions) == 1 and files[0] == files[2] == files[1]
    out = read_image(files[0]["t/006"], mode="L")
    assert out.shape == SHAPES[6] and not np.array_equal(out, _page(6, SHAPES[6]))


def test_batched_translate_stage_runs_one_forward_per_same_size_batch_on_the_cpu_too(tmp_path):
    """The GPU path (batched=True) on the CPU: same files for any worker count, within one grey level of page by page."""
    store = Store(tmp_path)
    rows = _title(store, None, sizes_in_manifest=False)  # sizes learnt on decoding: a unit is split by size
    model = _refiner()
    forwards = []

    def net(pages):
        assert len({p.shape for p in pages}) == 1
        forwards.append(len(pages))
        return refine_batch(model, pages)

    _, batched0, _ = _written(store, "b0", lambda w: synth.translate_stage(rows, store, w, net, batch_size=8, workers=0, batched=True))
    assert sorted(forwards) == [1, 2, 4]  # 7 readable pages of three sizes, one forward pass per size
    _, batched2, _ = _written(store, "b2", lambda w: synth.translate_stage(rows, store, w, net, batch_size=2, workers=2, batched=True))
    _, single, _ = _written(store, "s", lambda w: synth.translate_stage(rows, store, w, net, batch_size=2, workers=0))
    assert batched0.keys() == batched2.keys() == single.keys()
    for page_id in single:
        a, b, c = (read_image(f[page_id], mode="L").astype(int) for f in (batched0, batched2, single))
        assert np.abs(a - c).max() <= 1 and np.abs(b - c).max() <= 1
        assert (a != c).mean() <= 0.01


class _CountingReader:
    """The real `read_image`, counting how many decoded pages are alive at once."""

    def __init__(self):
        self.live = self.peak = self.calls = 0

    def _gone(self):
        self.live -= 1

    def __call__(self, *args, **kwargs):
        page = read_image(*args, **kwargs)
        self.calls += 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(page, self._gone)
        return page


@pytest.mark.parametrize("batched", [True, False])
def test_a_title_is_never_decoded_at_once(tmp_path, monkeypatch, batched):
    store = Store(tmp_path)
    rows = _title(store, None)
    reader = _CountingReader()
    monkeypatch.setattr(synth, "read_image", reader)
    model = _refiner()
    summary = synth.translate_stage(rows, store, store.begin("refined", "t"), lambda pages: refine_batch(model, pages),
                                    batch_size=2, workers=0, batched=batched)
    assert summary.ok == len(SHAPES) and reader.calls == len(SHAPES)
    assert reader.peak <= 2, f"{reader.peak} pages decoded at once with batch_size 2"
    assert reader.live == 0

    reader.peak = 0
    synth.xdog_stage(rows, store, store.begin("xdog", "t"), PRESETS["alacgan"], workers=0)
    assert reader.peak == 1


def test_gap_pages_are_chosen_from_the_manifest_and_read_one_at_a_time(tmp_path, monkeypatch):
    import mangacolor.data.datasets as datasets

    store = Store(tmp_path)
    rows = _title(store, None).iloc[:-1]
    reader = _CountingReader()
    monkeypatch.setattr(datasets, "read_image", reader)
    cfg = synth.GapConfig(inception="none", max_pages=4, seed=3)
    chosen = synth.gap_pages(store, rows, cfg)
    assert len(chosen) == 4 and reader.calls == 0
    eager = [read_image(store.read_bytes(u), mode="L") for u in rows.sort_values("id")["uri"]]
    lazy = synth.stage_gap(chosen, chosen, cfg)
    assert reader.peak <= 2 and reader.calls >= 4  # a loop holds its last page while it reads the next; never all 4
    # the same draw as subsampling the decoded pages
    assert lazy == pytest.approx(synth.stage_gap(eager, eager, cfg))
