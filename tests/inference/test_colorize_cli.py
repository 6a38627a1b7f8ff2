"""`mangacolor colorize` on a page, a folder and a chapter archive, with samples, a reference and a locked palette."""

import io
import zipfile

import numpy as np
import pytest
import torch

from mangacolor.cli import main
from mangacolor.drafting.sampling import PaletteLock
from mangacolor.inference.bundle import ModelBundle, write_bundle
from mangacolor.io.images import encode_png, read_image
from mangacolor.models.colorizer import ColorizerConfig, build_generator
from mangacolor.models.psp import EncoderConfig, PSp
from mangacolor.models.stylegan2 import StyleGAN2Config, generator_state
from mangacolor.training.checkpoint import save_weights


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    cfg = ColorizerConfig.tiny()
    colorizer = save_weights(tmp / "c.safetensors", build_generator(cfg), {"config": cfg.to_dict()})
    sg_cfg = StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=32)
    g = sg_cfg.generator()
    latent_avg = g.mean_latent(64) if hasattr(g, "mean_latent") else torch.zeros(1, 32)
    stylegan = save_weights(tmp / "g.safetensors", *generator_state(g, latent_avg))
    enc_cfg = EncoderConfig(input_nc=1, input_size=32, widths=(8, 8, 16, 32), units=(1, 1, 1, 1), se_reduction=4)
    drafting = save_weights(tmp / "d.safetensors", *PSp(enc_cfg, g, latent_avg).encoder_state())
    inv_cfg = EncoderConfig(input_nc=3, input_size=32, widths=(8, 8, 16, 32), units=(1, 1, 1, 1), se_reduction=4)
    inversion = save_weights(tmp / "i.safetensors", *PSp(inv_cfg, g, latent_avg).encoder_state())
    return write_bundle(tmp / "bundle", {"colorizer": colorizer, "stylegan": stylegan, "drafting": drafting, "inversion": inversion})


def _page(h=80, w=56, seed=0):
    rng = np.random.default_rng(seed)
    page = np.full((h, w), 255, np.uint8)
    page[rng.integers(0, h, 200), rng.integers(0, w, 200)] = 0
    return page


def test_page_folder_and_archive(bundle, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p1.png").write_bytes(encode_png(_page(80, 56)))
    (tmp_path / "in" / "spread.png").write_bytes(encode_png(_page(61, 97, 1)))  # landscape, odd size
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("001.png", encode_png(_page(seed=2)))
        zf.writestr("002.png", encode_png(_page(seed=3)))
    (tmp_path / "ch1.cbz").write_bytes(buf.getvalue())
    rc = main(["colorize", str(tmp_path / "in"), str(tmp_path / "ch1.cbz"), "-o", str(tmp_path / "out"),
               "--model", str(bundle), "--quiet"])
    assert rc == 0
    assert read_image(tmp_path / "out" / "p1.png").shape == (80, 56, 3)
    assert read_image(tmp_path / "out" / "spread.png").shape == (61, 97, 3)
    assert not (tmp_path / "out" / "broken.png").exists()  # skipped with a message, not fatal
    assert sorted(p.name for p in (tmp_path / "out" / "ch1").iterdir()) == ["001.png", "002.png"]
    with zipfile.ZipFile(tmp_path / "out" / "ch1.cbz") as zf:
        assert zf.namelist() == ["001.png", "002.png"]


def test_samples_differ_and_palette_lock_is_shared(bundle, tmp_path):
    page = tmp_path / "p.png"
    page.write_bytes(encode_png(_page()))
    assert main(["colorize", str(page), "-o", str(tmp_path / "s"), "--model", str(bundle), "--samples", "3",
                 "--draft-seed", "7", "--quiet"]) == 0
    outs = [read_image(tmp_path / "s" / f"p_s{k}.png").astype(int) for k in (1, 2, 3)]
    assert np.abs(outs[0] - outs[1]).mean() > 0.05 and np.abs(outs[1] - outs[2]).mean() > 0.05
    b = ModelBundle.load(bundle)
    d1 = b.drafts(_page(seed=1), seed=None)[0]
    lock = PaletteLock.from_seed(b.drafting, 3)
    locked = [b.drafts(_page(seed=s), lock=lock)[0] for s in (1, 2)]
    assert not torch.allclose(d1, locked[0])  # the lock changes the draft's colours
    assert main(["colorize", str(page), "-o", str(tmp_path / "l"), "--model", str(bundle), "--lock-palette", "3", "--quiet"]) == 0


def test_reference_image_and_hints(bundle, tmp_path):
    page = tmp_path / "p.png"
    page.write_bytes(encode_png(_page()))
    ref = tmp_path / "ref.png"
    ref.write_bytes(encode_png(np.full((40, 40, 3), (200, 30, 30), np.uint8)))
    hint = np.zeros((80, 56, 4), np.uint8)
    hint[10:30, 10:30] = (0, 0, 255, 255)
    (tmp_path / "hint.png").write_bytes(encode_png(hint[..., :3]))
    rc = main(["colorize", str(page), "-o", str(tmp_path / "r"), "--model", str(bundle), "--reference", str(ref),
               "--hints", str(tmp_path / "hint.png"), "--quiet"])
    assert rc == 0 and read_image(tmp_path / "r" / "p.png").shape == (80, 56, 3)


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["colorize", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope")]) == 2
    assert "not a mangacolor model bundle" in capsys.readouterr().err
