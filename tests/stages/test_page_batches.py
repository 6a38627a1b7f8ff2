"""Per-page stages read pages in DataLoader workers and run their networks on batches (issue 13):
what they write must not depend on the number of workers or the batch size, and an unreadable page
is still quarantined with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mangacolor.device import DeviceSpec
from mangacolor.stages.drafting import DraftsConfig, drafts_stage, page_drafts_stage
from mangacolor.io.images import ImageError, encode_png, read_image
from mangacolor.io.store import Store
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.stages.colorization.bundle import stored_inversion
from mangacolor.stages.colorization.config import PseudolabelConfig
from mangacolor.stages.colorization.pseudolabels import make_pseudolabels
from tests.stages.test_colorization import GEN, _snapshots, store_drafting_models

pytestmark = pytest.mark.filterwarnings("ignore:colorizer encoder is randomly")
SPEC = DeviceSpec(torch.device("cpu"), None, seed=0)
BROKEN = b"<html>not a page</html>"


def _reason(data: bytes) -> str:
    try:
        read_image(data)
    except ImageError as exc:
        return exc.reason
    raise AssertionError("expected an unreadable page")


REASON = _reason(BROKEN)


def _same_outputs(store: Store, a: pd.DataFrame, adir: str, b: pd.DataFrame, bdir: str, columns: list[str]) -> None:
    """Same rows in the same order; every written PNG equal up to one grey level after decoding."""
    assert a[columns].equals(b[columns])
    for path_column in [c for c in ("path", "draft_path") if c in a]:
        for pa, pb in zip(a[path_column], b[path_column]):
            assert (pa is None or pa != pa) == (pb is None or pb != pb)
            if isinstance(pa, str):
                x, y = read_image(store.read_bytes(f"{adir}/{pa}")), read_image(store.read_bytes(f"{bdir}/{pb}"))
                assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).max() <= 1, pa


def _bw_rows(store: Store, tmp_path, sizes) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for n, (h, w) in enumerate(sizes):
        uri = store.path("bw", f"{n:03d}.png")
        store.write_bytes(uri, encode_png(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        rows.append({"id": f"t/{n:03d}", "title": "t", "page": f"{n:03d}.png", "uri": uri})
    (tmp_path / "broken.png").write_bytes(BROKEN)
    rows.append({"id": "t/002b", "title": "t", "page": "002b.png", "uri": str(tmp_path / "broken.png")})
    return pd.DataFrame(rows)


def test_drafts_do_not_depend_on_workers_or_batch_size(tmp_path):
    store = Store(tmp_path / "store")
    torch.manual_seed(0)
    g = GEN.generator()
    latent = g.mean_latent(64, torch.Generator().manual_seed(0))
    encoder = EncoderConfig(input_nc=1, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4)
    drafting = PSp(encoder, g, latent).eval()
    inversion = PSp(EncoderConfig(**{**encoder.__dict__, "input_nc": 3}), g, latent).eval()
    rows = _bw_rows(store, tmp_path, [(48, 32), (40, 60), (32, 32), (50, 40), (36, 36)])
    colour = rows.assign(source_uri=rows["uri"], source_id=rows["id"])  # grey pages read as RGB stand in for colour pages

    results = {}
    for workers, batch in ((0, 1), (2, 3)):
        writer = store.begin("bw_page_drafts", f"w{workers}")
        summary = page_drafts_stage(rows, store, writer, drafting, SPEC, input_size=32, batch_size=batch, num_workers=workers)
        _, vdir, frame = writer.commit()
        assert (summary.ok, summary.quarantined) == (5, 1)
        cwriter = store.begin("coloring_drafts", f"w{workers}")
        csummary = drafts_stage(colour, store, cwriter, inversion, DraftsConfig(size=24, batch_size=batch, num_workers=workers),
                                SPEC, input_size=32)
        _, cdir, cframe = cwriter.commit()
        assert (csummary.ok, csummary.quarantined) == (5, 1)
        results[workers] = (vdir, frame, cdir, cframe, store.read_bytes(f"{cdir}/latents.safetensors"))

    (adir, a, acdir, ac, alat), (bdir, b, bcdir, bc, blat) = results[0], results[2]
    _same_outputs(store, a, adir, b, bdir, ["id", "page_id", "status", "width", "height"])
    _same_outputs(store, ac, acdir, bc, bcdir, ["id", "source_id", "status", "latent_key"])
    assert np.allclose(ac["mse_to_blurred"].dropna(), bc["mse_to_blurred"].dropna(), atol=1e-3)
    from safetensors.torch import load

    la, lb = load(alat), load(blat)
    assert sorted(la) == sorted(lb) and all(torch.allclose(la[k], lb[k], atol=1e-4) for k in la)
    bad = a.set_index("id").loc["t/002b"]
    assert bad["status"] == "quarantined" and bad["reason"] == REASON


def test_pseudolabels_do_not_depend_on_workers_or_batch_size(tmp_path):
    store = Store(tmp_path / "store")
    store_drafting_models(store, tmp_path)
    inversion = stored_inversion(store, torch.device("cpu"))
    snapshots = _snapshots(tmp_path)
    # Two page sizes: pages are batched by working size, each label comes back at its page's size.
    rows = _bw_rows(store, tmp_path, [(48, 40), (32, 64), (48, 40), (32, 64), (48, 40)])
    frames = {}
    for workers, batch in ((0, 1), (2, 3)):
        writer = store.begin("pseudolabels", f"w{workers}")
        cfg = PseudolabelConfig(colorings_per_page=3, batch_size=batch, num_workers=workers)
        summary = make_pseudolabels(store, rows, snapshots, writer, cfg, torch.device("cpu"), inversion)
        _, vdir, frame = writer.commit()
        assert (summary.pages, summary.colorings, summary.quarantined) == (5, 15, 1)
        frames[workers] = vdir, frame
    (adir, a), (bdir, b) = frames[0], frames[2]
    _same_outputs(store, a, adir, b, bdir, ["id", "bw_id", "status", "width", "height", "snapshot", "coloring", "kind"])
    ok = a[a.status == "ok"]
    assert set(zip(ok.height, ok.width)) == {(48, 40), (32, 64)}
    bad = a.set_index("id").loc["t/002b"]
    assert bad["status"] == "quarantined" and bad["reason"] == REASON
