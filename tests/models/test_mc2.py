"""The 2021 release imported as a bundle colours as the 2021 model does; wrong files are one line, exit 2.

The 2021 side is `tests/models/release2021.py`: a functional forward written from the 2021
architecture that reads a state dict by the 2021 names, fed a random state dict with exactly the
2021 generator's keys, dtypes and shapes (the listing in tests/models/data), saved as the release
saves it (`torch.save(state_dict)`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mangacolor.cli import main
from mangacolor.inference import Colorizer
from mangacolor.models.colorizer import release_padding
from mangacolor.models.mc2 import load_release_denoiser, release_shapes, release_size
from tests.models.release2021 import (
    random_ffdnet_state,
    random_release_state,
    release_colorize,
    release_denoise,
    release_keys,
)

H, W = 96, 64  # a portrait page; the bundle is imported with --size 64, so the release would not resize it


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    state = random_release_state(seed=0)
    path = tmp_path_factory.mktemp("release") / "generator.zip"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def bundle(release_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "mc2"
    assert main(["import-weights", "mc2", str(release_file[0]), "--size", str(W), "-o", str(out)]) == 0
    return out


def _page() -> np.ndarray:
    rng = np.random.default_rng(3)
    page = np.full((H, W), 235, np.uint8)
    page[10:40, 8:50] = 40
    page[50:90, 20:60] = (rng.random((40, 40)) * 255).astype(np.uint8)  # a screentone-like patch
    return page


def _hint() -> np.ndarray:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[15:25, 12:22] = (230, 40, 40, 255)
    rgba[60:70, 30:40] = (40, 90, 220, 255)
    return rgba


def test_our_idea_of_the_2021_state_dict_is_the_listing():
    listing = release_keys()
    assert {k: shape for k, (_, shape) in listing.items()} == release_shapes()
    assert len(listing) == 645


@pytest.mark.parametrize("with_hint", [False, True], ids=["no-hint", "hint"])
def test_imported_bundle_colours_as_the_2021_model(release_file, bundle, with_hint):
    _, state = release_file
    page, hint = _page(), (_hint() if with_hint else None)
    expected = release_colorize(state, page, hint, size=W) * 255
    assert expected.std() > 10, "the random 2021 model must not be saturated, or the comparison means nothing"
    ours = Colorizer.from_bundle(bundle).colorize(page, hints=hint).astype(np.float32)
    assert ours.shape == (H, W, 3)
    close = np.abs(ours - expected) <= 1.0  # within 1/255 (ours is rounded to uint8)
    assert close.mean() >= 0.99, f"{close.mean():.4f} of the values within 1/255, max diff {np.abs(ours - expected).max():.2f}"


def test_a_hint_changes_the_2021_colours(release_file):
    _, state = release_file
    plain, hinted = (release_colorize(state, _page(), h, size=W) for h in (None, _hint()))
    assert np.abs(plain - hinted).max() * 255 > 2  # so the hint test above compares something hint-dependent


def test_the_bundle_records_the_release_page_handling(bundle):
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["variant"] == "mc2" and info["fit_width"] == W and info["pad_mode"] == "mc2"
    assert "denoiser" not in info["files"]
    options = Colorizer.from_bundle(bundle).bundle.inference_options()
    assert options.fit_width == W and options.pad_mode == "mc2"


def test_release_page_geometry():
    assert release_size(1200, 800) == (864, 576)  # portrait: 576 wide
    assert release_size(800, 1200) == (864, 1296)  # landscape: 864 high
    assert release_padding(864, 576) == (32, 0)  # a multiple of 32 still gains 32 rows, as in the release
    assert release_padding(850, 576) == (14, 0) and release_padding(864, 1300) == (0, 12)


@pytest.mark.parametrize("case", ["not-a-state-dict", "missing-keys", "other-shape", "extra-key"])
def test_a_wrong_generator_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    bad = tmp_path / "generator.zip"
    # Expanded zero tensors: every key at its shape, for a few bytes each.
    cheap = {k: torch.zeros((), dtype=dt).expand(shape) for k, (dt, shape) in release_keys().items()}
    if case == "not-a-state-dict":
        bad.write_text("<html>Google Drive: virus scan warning</html>")
    elif case == "missing-keys":
        del cheap["tunnel3.2.4.conv_conv.weight"]
        torch.save(cheap, bad)
    elif case == "other-shape":
        cheap["tunnel4.0.weight"] = torch.zeros(()).expand(512, 1024, 3, 3)
        torch.save(cheap, bad)
    else:
        cheap["colorConv.0.weight"] = torch.zeros(3)
        torch.save(cheap, bad)
    code = main(["import-weights", "mc2", str(bad), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(bad) in err
    named = {"not-a-state-dict": "not a PyTorch state dict", "missing-keys": "tunnel3.2.4.conv_conv.weight",
             "other-shape": "tunnel4.0.weight is 512x1024x3x3, expected 512x1152x3x3", "extra-key": "colorConv.0.weight"}
    assert named[case] in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_denoiser_file_is_one_line_naming_where_it_comes_from(release_file, tmp_path, capsys):
    code = main(["import-weights", "mc2", str(release_file[0]), "--denoiser", str(tmp_path / "net_rgb.pth"), "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "net_rgb.pth" in err and "manga-colorization-v2" in err


def test_denoiser_file_is_checked_key_by_key(tmp_path):
    from mangacolor.models.ffdnet import FFDNet
    from mangacolor.models.mc2 import WeightsFileError

    state = {f"module.intermediate_dncnn.itermediate_dncnn.{k[len('body.'):]}": v for k, v in FFDNet(3).state_dict().items()}
    torch.save(state, tmp_path / "net_rgb.pth")
    assert load_release_denoiser(tmp_path / "net_rgb.pth").channels == 3
    state.pop("module.intermediate_dncnn.itermediate_dncnn.5.weight")
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsFileError, match="itermediate_dncnn|5.weight"):
        load_release_denoiser(tmp_path / "broken.pth")


def test_colorize_a_folder_and_a_cbz_with_the_imported_bundle(bundle, tmp_path):
    import zipfile

    import cv2

    pages = tmp_path / "chapter"
    pages.mkdir()
    cv2.imwrite(str(pages / "001.png"), _page())
    cv2.imwrite(str(pages / "002.png"), cv2.resize(_page(), (50, 70)))  # resized to the release's width first
    cbz = tmp_path / "chapter.cbz"
    with zipfile.ZipFile(cbz, "w") as zf:
        for p in sorted(pages.iterdir()):
            zf.write(p, p.name)
    assert main(["colorize", str(pages), "--model", str(bundle), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert main(["colorize", str(cbz), "--model", str(bundle), "-o", str(tmp_path / "out.cbz"), "--quiet"]) == 0
    first = cv2.imread(str(tmp_path / "out" / "001.png"))
    expected = Colorizer.from_bundle(bundle).colorize(_page())
    assert np.abs(first[..., ::-1].astype(int) - expected).max() <= 1
    assert cv2.imread(str(tmp_path / "out" / "002.png")).shape == (70, 50, 3)
    with zipfile.ZipFile(tmp_path / "out.cbz") as zf:
        assert sorted(zf.namelist()) == ["001.png", "002.png"]


def test_ffdnet_is_the_published_forward(tmp_path):
    torch.save(random_ffdnet_state(1), tmp_path / "net_rgb.pth")
    from mangacolor.models.ffdnet import denoise_page

    page = _page()[:, :63]  # an odd width: the last column is repeated for the 2x2 split
    ours = denoise_page(load_release_denoiser(tmp_path / "net_rgb.pth"), page, 25)
    theirs = release_denoise(random_ffdnet_state(1), page, 25)
    assert np.abs(theirs.astype(int) - page).max() > 2  # it changes the page
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and (ours == theirs).mean() > 0.99


def test_import_with_denoiser_and_extractor(release_file, tmp_path):
    from safetensors.torch import load_file

    generator, state = release_file
    torch.save(random_ffdnet_state(2, strength=2), tmp_path / "net_rgb.pth")
    out = tmp_path / "mc2-denoised"
    # The encoder part of generator.zip stands in for extractor.pth (the issue names both sources).
    assert main(["import-weights", "mc2", str(generator), "--denoiser", str(tmp_path / "net_rgb.pth"),
                 "--extractor", str(generator), "--size", str(W), "-o", str(out)]) == 0
    info = json.loads((out / "bundle.json").read_text())
    assert info["denoise_sigma"] == 25 and info["files"]["denoiser"] == "denoiser.safetensors"
    # The extractor is kept with timm's names, every tensor the release's encoder.* one.
    init = load_file(out / info["encoder_init"])
    assert torch.equal(init["layer2.1.se.fc1.weight"], state["encoder.layer2.1.selayer.conv1.weight"])
    assert all(torch.equal(init[k], state["encoder." + k.replace(".se.fc", ".selayer.conv")]) for k in init)
    # Denoised first, as the release does by default.
    page = _page()
    expected = release_colorize(state, release_denoise(random_ffdnet_state(2, strength=2), page), size=W) * 255
    ours = Colorizer.from_bundle(out).colorize(page).astype(np.float32)
    assert (np.abs(ours - expected) <= 1.0).mean() >= 0.99
    not_denoised = release_colorize(state, page, size=W) * 255
    assert (np.abs(ours - not_denoised) <= 1.0).mean() < 0.9  # the comparison sees the denoiser
