"""`configs/paper.yaml` is the paper: the generator in the authors' layout, the training canvas of Appendix B,
and StyleGAN2 that starts from a user-placed checkpoint of the common port (§IV-C-1) unless told `scratch`."""

from __future__ import annotations

import dataclasses

import pytest

from mangacolor.config import load_preset, stage_config
from mangacolor.stages.drafting import stylegan_config
from mangacolor.models.colorizer import ColorizationGenerator, ColorizerConfig, encoder_reductions
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
