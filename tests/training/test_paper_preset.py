"""`configs/paper.yaml` is the paper: the generator in the authors' layout, the training canvas of Appendix B,
StyleGAN2 that starts from a user-placed checkpoint of the common port (§IV-C-1) unless told `scratch`, and
the colorizer's encoder from the user-placed line-art SE-ResNeXt-50 (§III-B) unless told `imagenet`/`scratch`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mangacolor.config import load_preset, stage_config
from mangacolor.stages.drafting import stylegan_config
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, build_encoder, build_generator, encoder_reductions
from mangacolor.tracking import NullTracker
from mangacolor.stages.colorization.config import ColorizationConfig
from mangacolor.training.stylegan import train_stylegan
from tests.training.test_stylegan_training import CPU, TINY, images


@pytest.fixture(scope="module")
def paper():
    return load_preset("paper")


def test_the_paper_preset_uses_the_papers_generator_layout_and_canvas(paper):
    cfg = stage_config(paper, "colorizer", ColorizationConfig)
    gen = cfg.generator_config()
    assert gen.encoder == "seresnext50" and gen.encoder_maxpool is False
    assert cfg.page_canvas() == (768, 512) and tuple(cfg.crop) == (768, 512)
    assert cfg.train_config("step1", "adapt").generator.encoder_maxpool is False
    # what that layout means: no stem max-pool, so the encoder taps sit at 1/2, 1/2, 1/4, 1/8 (tiny widths, same code)
    paper_layout = ColorizationGenerator(ColorizerConfig.tiny(layout="paper"))
    fast_layout = ColorizationGenerator(ColorizerConfig.tiny(layout="fast"))
    assert encoder_reductions(paper_layout.encoder) == [2, 2, 4, 8]
    assert encoder_reductions(fast_layout.encoder) == [2, 4, 8, 16]


def test_a_layout_name_and_a_contradicting_field_are_refused():
    with pytest.raises(ValueError, match="layout 'paper' sets encoder_maxpool=False"):
        ColorizerConfig.from_dict({"layout": "paper", "encoder_maxpool": True})
    with pytest.raises(ValueError, match="must be one of"):
        ColorizerConfig.from_dict({"layout": "fastest"})


def test_stylegan_in_the_paper_preset_refuses_to_start_without_its_checkpoint(paper, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty ~: no checkpoint placed
    cfg, _ = stylegan_config(paper)
    assert cfg.init_checkpoint.endswith("stylegan2-danbooru-256.pt")
    small = dataclasses.replace(TINY, iterations=1, init_checkpoint=cfg.init_checkpoint)
    with pytest.raises(FileNotFoundError) as err:
        train_stylegan(small, images(), tmp_path / "run", CPU, NullTracker())
    message = str(err.value)
    assert str(tmp_path / "home" / ".cache/torch/hub/checkpoints/stylegan2-danbooru-256.pt") in message
    assert "rosinality/stylegan2-pytorch" in message and "convert_weight.py" in message and "'scratch'" in message
    assert not (tmp_path / "run" / "generator.safetensors").exists()

    scratch = dataclasses.replace(small, init_checkpoint="scratch")  # the explicit opt-out trains
    assert train_stylegan(scratch, images(), tmp_path / "scratch", CPU, NullTracker())["steps"] == 1


# --- the colorizer's starting points: the line-art SE-ResNeXt-50 (encoder_init) or the whole 2021 generator (init)


def _pages():
    from mangacolor.training.colorizer import BwDataset, PairDataset

    bw, colour = np.full((64, 48), 200, np.uint8), np.full((64, 48, 3), 120, np.uint8)
    return PairDataset([bw], [colour]), BwDataset([bw])


def _release_encoder_file(path, with_generator_keys: bool):
    """A random SE-ResNeXt-50 (the 2021 layout's three stages) saved by the 2021 release's names: Tag2Pix's
    `selayer.conv1/2`, as extractor.pth, or prefixed `encoder.` among other generator tensors, as generator.zip."""
    torch.manual_seed(5)
    encoder = build_encoder("seresnext50", maxpool=False)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k.replace(".se.fc1.", ".selayer.conv1.").replace(".se.fc2.", ".selayer.conv2."): v
             for k, v in encoder.state_dict().items()}
    if with_generator_keys:
        state = {**{f"encoder.{k}": v for k, v in state.items()}, "to0.0.weight": torch.zeros(32, 5, 3, 3)}
    torch.save(state, path)
    return encoder.state_dict()


def test_the_paper_preset_refuses_to_train_the_colorizer_without_its_encoder_file(paper, tmp_path, monkeypatch):
    from mangacolor.training.colorizer import train_colorizer

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty ~: nothing placed
    cfg = stage_config(paper, "colorizer", ColorizationConfig)
    tcfg = cfg.train_config("step1", "adapt")
    assert tcfg.generator.encoder_weights == "~/.cache/torch/hub/checkpoints/extractor.pth"
    pairs, real = _pages()
    with pytest.raises(FileNotFoundError) as err:
        train_colorizer(tcfg, pairs, real, tmp_path / "run", CPU, NullTracker())
    message = str(err.value)
    assert str(tmp_path / "home" / ".cache/torch/hub/checkpoints/extractor.pth") in message
    assert "tag prediction on line art" in message and "qweasdd/manga-colorization" in message
    assert "imagenet" in message and "scratch" in message
    assert not (tmp_path / "run" / "generator.safetensors").exists()
    # The opt-outs say where the encoder starts instead.
    imagenet = stage_config({**paper, "colorizer": {**paper["colorizer"], "encoder_init": "imagenet"}}, "colorizer", ColorizationConfig)
    assert imagenet.generator_config().encoder_weights.endswith("seresnext50_32x4d.safetensors")
    scratch = stage_config({**paper, "colorizer": {**paper["colorizer"], "encoder_init": "scratch"}}, "colorizer", ColorizationConfig)
    assert scratch.train_config("step1", "adapt").generator.encoder_weights is None


@pytest.mark.parametrize("source", ["extractor.pth", "generator.zip"])
def test_the_paper_preset_loads_the_encoder_file_key_by_key(paper, tmp_path, source):
    expected = _release_encoder_file(tmp_path / source, with_generator_keys=source == "generator.zip")
    cfg = stage_config({**paper, "colorizer": {**paper["colorizer"], "encoder_init": str(tmp_path / source)}},
                       "colorizer", ColorizationConfig)
    generator = build_generator(cfg.train_config("step1", "adapt").generator)
    loaded = generator.encoder.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_colorizer_init_mc2_starts_step_1_from_the_2021_generator(paper, tmp_path):
    from tests.models.release2021 import random_release_state

    state = random_release_state(seed=4)
    torch.save(state, tmp_path / "generator.zip")
    cfg = stage_config({**paper, "colorizer": {**paper["colorizer"], "init": f"mc2:{tmp_path / 'generator.zip'}"}},
                       "colorizer", ColorizationConfig)
    tcfg = cfg.train_config("step1", "adapt")
    assert tcfg.init == f"mc2:{tmp_path / 'generator.zip'}" and tcfg.generator.page_unit_range
    assert cfg.train_config("step2", "self_train").init is None
    generator = build_generator(tcfg.generator, tcfg.init)
    ours = generator.state_dict()
    assert torch.equal(ours["tunnels.1.blocks.3.se.excite.weight"], state["tunnel3.2.3.selayer.conv2.weight"])
    assert torch.equal(ours["cue.0.0.weight"][:, :5], state["to0.0.weight"]) and not ours["cue.0.0.weight"][:, 5:].any()
    with pytest.raises(ValueError, match="mc2:PATH"):
        stage_config({**paper, "colorizer": {**paper["colorizer"], "init": "generator.zip"}}, "colorizer", ColorizationConfig)
    fast = stage_config({**paper, "colorizer": {**paper["colorizer"], "generator": {"layout": "fast"},
                                                "init": f"mc2:{tmp_path / 'generator.zip'}"}}, "colorizer", ColorizationConfig)
    with pytest.raises(ValueError, match="needs the 2021 model's generator"):
        build_generator(fast.generator_config(), fast.init)
