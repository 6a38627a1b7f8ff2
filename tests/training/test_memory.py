"""The paper's batch in memory (mangacolor/training/memory.py): step 1 trained on a batch of 4 in micro-batches of 1
(gradients added up, D's power iteration once per call of the step) ends with the weights of the whole batch at once,
and recomputing the generator's activations changes nothing. Tiny networks, 4 steps, fp32 on the CPU."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mangacolor.device import DeviceSpec
from mangacolor.tracking import NullTracker
from tests.training.killdrill import _colour_pages


def _train(out, **memory) -> dict[str, torch.Tensor]:
    from mangacolor.data.augment import paired_augmentation
    from mangacolor.models.colorizer import ColorizerConfig
    from mangacolor.models.discriminator import DiscriminatorConfig
    from mangacolor.training.colorizer import BwDataset, ColorizerTrainConfig, PairDataset, augment_from_paired, train_colorizer

    torch.set_num_threads(1)
    bw, colour = _colour_pages(8, 0)
    drafts = list(np.random.default_rng(1).integers(0, 256, (len(bw), 16, 16, 3), dtype=np.uint8))
    real_bw, _ = _colour_pages(8, 2)
    cfg = ColorizerTrainConfig(generator=ColorizerConfig.tiny(), discriminator=DiscriminatorConfig.tiny(), crop=(32, 32), batch_size=4,
                               epochs=3, allow_random_vgg=True, perceptual_layers=("relu1_2",), max_steps=4, log_every=2,
                               checkpoint_every=100, num_workers=0, **memory)
    result = train_colorizer(cfg, PairDataset(bw, colour, drafts), BwDataset(real_bw), out, DeviceSpec(torch.device("cpu"), None, seed=7),
                             NullTracker(), step="adapt", snapshot_every=100,
                             augment=augment_from_paired(paired_augmentation(crop_hw=(32, 32), seed=0)))
    return {f"g.{k}": v for k, v in load_file(str(result.generator)).items()} | {
        f"d.{k}": v for k, v in load_file(str(result.discriminator)).items()}


def _diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_micro_batches_of_one_train_the_weights_of_the_whole_batch(tmp_path):
    whole = _train(tmp_path / "whole", batchnorm="frozen")
    micro = _train(tmp_path / "micro", batchnorm="frozen", micro_batch=1)
    recomputed = _train(tmp_path / "recomputed", batchnorm="frozen", micro_batch=1, checkpointing=True)
    # Float rounding only (2.8e-7 measured): the gradient of the batch mean summed in another order.
    assert _diff(whole, micro) <= 1e-5
    assert _diff(micro, recomputed) <= 1e-6
    assert _diff(whole, _train(tmp_path / "batch-norm", batchnorm="batch")) > 1e-3  # the frozen statistics are not a no-op


def test_micro_batches_need_frozen_batch_norm(tmp_path):
    with pytest.raises(ValueError, match="batchnorm: frozen"):
        _train(tmp_path / "x", micro_batch=2)
    with pytest.raises(ValueError, match="does not split"):
        _train(tmp_path / "y", micro_batch=3, batchnorm="frozen")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_channels_last_trains_the_same_weights(tmp_path):
    """The layout GPUs train in (on by default there), run here on the CPU: no layer depends on the memory layout."""
    plain = _train(tmp_path / "plain", batchnorm="frozen", channels_last=False)
    assert _diff(plain, _train(tmp_path / "last", batchnorm="frozen", channels_last=True)) <= 1e-5
