"""Which pages the drafting stage trains on: pairs by source_id, the grey fallback, and the configs."""

import numpy as np
import pandas as pd
import pytest

from mangacolor.io.store import ok_rows
from mangacolor.drafting.blur import BlurConfig
from mangacolor.stages.drafting import DraftPairs, SquarePages, blur_stage, drafting_rows, inversion_rows, psp_config, stylegan_config
from mangacolor.io.images import encode_png
from mangacolor.io.store import Store, sha256_bytes


def _commit(store: Store, asset: str, title: str, pages: dict[str, np.ndarray], **columns) -> None:
    writer = store.begin(asset, title)
    for name, image in pages.items():
        data = encode_png(image)
        path = writer.write(f"pages/{name}.png", data)
        writer.add({"id": f"{title}/{name}", "title": title, "page": f"{name}.png", "path": path, "sha256": sha256_bytes(data),
                    "status": "ok", "reason": None, **{k: v.format(title=title, name=name) for k, v in columns.items()}})
    writer.commit()


@pytest.fixture()
def store(tmp_path):
    st = Store(tmp_path / "artifacts")
    rng = np.random.default_rng(0)
    for title in ("a", "b"):
        pages = {n: rng.integers(0, 256, (48, 32, 3), dtype=np.uint8) for n in ("001", "002")}
        _commit(st, "color_pages", title, pages)
        writer = st.begin("blurred_color_pages", title)
        blur_stage(ok_rows(st, "color_pages", [title]), st, writer, BlurConfig(size=16, sigma=1.0))
        writer.commit()
    # Title "a" has synthetic pages for one of its two colour pages; "b" has none.
    _commit(st, "synthetic_bw_pages", "a", {"001": np.full((48, 32), 7, np.uint8)}, source_id="{title}/{name}")
    return st


def test_drafting_network_reads_synthetic_pages_by_source_id_and_grey_conversions_elsewhere(store):
    rows, grey_titles = drafting_rows(store, ["a", "b"])
    kinds = dict(zip(rows["id"], rows["input_kind"]))
    assert kinds == {"a/001": "synthetic", "a/002": "grey", "b/001": "grey", "b/002": "grey"}
    assert grey_titles == ["b"]  # "a" has synthetic pages, one page short
    pairs = DraftPairs(store, rows, "L", size=24)
    x, y = pairs[list(rows["id"]).index("a/001")]
    assert x.shape == (24, 24) and (x == 7).all()  # the synthetic page, not the colour page
    assert y.shape == (24, 24, 3)
    x_grey, _ = pairs[list(rows["id"]).index("b/001")]
    assert x_grey.shape == (24, 24) and x_grey.std() > 0  # the colour page's luma


def test_inversion_encoder_reads_the_colour_page_each_blurred_page_was_made_from(store):
    rows = inversion_rows(store, ["a"])
    assert list(rows["source_id"]) == ["a/001", "a/002"]
    x, y = DraftPairs(store, rows, "RGB", size=16)[1]
    assert x.shape == y.shape == (16, 16, 3)
    colour = ok_rows(store, "color_pages", ["a"]).set_index("id")["uri"]
    assert list(rows["input_uri"]) == [colour["a/001"], colour["a/002"]]
    assert SquarePages(store, list(rows["uri"]), 8)[0].shape == (8, 8, 3)


def test_configs_fix_the_encoders_input_channels_and_split_the_report_section():
    preset = {"stylegan": {"size": 32, "report": {"fid_samples": 5}}, "drafting_network": {"epochs": 2}}
    train, report = stylegan_config(preset)
    assert train.size == 32 and report.fid_samples == 5
    assert psp_config(preset, "drafting_network", 1).input_nc == 1 and psp_config(preset, "inversion_encoder", 3).input_nc == 3
    with pytest.raises(ValueError, match="input_nc"):
        psp_config({"inversion_encoder": {"input_nc": 1}}, "inversion_encoder", 3)
    with pytest.raises(ValueError, match="unknown keys"):
        stylegan_config({"stylegan": {"sise": 32}})


def test_second_round_adds_real_pages_with_their_pseudolabels_blurred_like_colour_pages(store):
    """§III: in the end the drafting network trains on synthetic pairs and real pages with pseudolabels."""
    from mangacolor.drafting.blur import blur_page
    from mangacolor.stages.drafting import pseudolabel_draft_rows

    assert pseudolabel_draft_rows(store).empty  # no pseudolabels yet: synthetic pairs only
    real = np.random.default_rng(1).integers(0, 256, (48, 32), dtype=np.uint8)
    label = np.random.default_rng(2).integers(0, 256, (48, 32, 3), dtype=np.uint8)
    _commit(store, "bw_pages", "r", {"001": real})
    writer = store.begin("pseudolabels")
    data = encode_png(label)
    writer.add({"id": "r/001#0", "title": "r", "page": "001.png", "source_uri": ok_rows(store, "bw_pages", ["r"])["uri"][0],
                "path": writer.write("labels/r/001-0.png", data), "sha256": sha256_bytes(data), "status": "ok", "reason": None,
                "bw_id": "r/001"})
    writer.commit()
    pseudo = pseudolabel_draft_rows(store)
    assert list(pseudo["id"]) == ["r/001#0"] and pseudo["blur_target"].all()
    x, y = DraftPairs(store, pseudo, "L", size=16, sigma=1.0)[0]
    assert x.shape == (16, 16) and np.array_equal(y, blur_page(label, 16, 1.0))  # the label blurred as blurred_color_pages


def test_real_page_drafts_are_the_drafting_networks_drafts_of_each_page(store, tmp_path):
    """bw_page_drafts' library part: one draft per readable real page, named by page_id; a broken page is quarantined."""
    import torch

    from mangacolor.device import DeviceSpec
    from mangacolor.stages.drafting import invert_pages, page_drafts_stage
    from mangacolor.io.images import read_image
    from mangacolor.models.psp import EncoderConfig, PSp
    from tests.stages.test_colorization import GEN

    torch.manual_seed(0)
    g = GEN.generator()
    psp = PSp(EncoderConfig(input_nc=1, input_size=32, widths=(4, 8, 8, 16), units=(1, 1, 1, 1), se_reduction=4), g,
              g.mean_latent(64, torch.Generator().manual_seed(0))).eval()
    rng = np.random.default_rng(3)
    _commit(store, "bw_pages", "r", {"001": rng.integers(0, 256, (48, 32), dtype=np.uint8),
                                     "002": rng.integers(0, 256, (40, 60), dtype=np.uint8)})
    rows = ok_rows(store, "bw_pages", ["r"])
    broken = rows.iloc[:1].assign(id="r/003", uri=str(tmp_path / "missing.png"))
    (tmp_path / "missing.png").write_bytes(b"<html>not a page</html>")
    spec = DeviceSpec(torch.device("cpu"), None, seed=0)
    writer = store.begin("bw_page_drafts")
    summary = page_drafts_stage(pd.concat([rows, broken]), store, writer, psp, spec, input_size=32)
    _, vdir, frame = writer.commit()
    assert (summary.ok, summary.quarantined) == (2, 1)
    ok = frame[frame.status == "ok"].set_index("page_id")
    page = read_image(store.read_bytes(rows.set_index("id").loc["r/002", "uri"]), mode="L")
    from mangacolor.drafting.blur import resize_square

    expected, _ = invert_pages(psp, [resize_square(page, 32)], spec)
    np.testing.assert_array_equal(read_image(store.read_bytes(f"{vdir}/{ok.loc['r/002', 'path']}")), expected[0])
    assert frame.set_index("id").loc["r/003", "status"] == "quarantined"
