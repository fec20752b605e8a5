"""The torch loader's compiled augmentation is exactly its eager definition, a compiler that
fails costs speed, not the run, and a training run, or a loader of one's own, compiles it only
where that pays (and never without augmentation)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fastcifar.data.augmentation import SPEC, AugmentationSpec
from fastcifar.data.loaders import LoaderOptions, base, compile_pays, make_loader, torch_loader
from fastcifar.records.config import TrainConfig
from fastcifar.system.distributed import Distributed
from fastcifar.training.trainer import _train_loader
from tests.cifar_files import random_split, synthetic_cifar


def epoch(compile_augmentation: bool, seed: int = 5, spec: AugmentationSpec = SPEC) -> list:
    """An epoch of 200 random images in batches of 64: the last batch is a partial one."""
    options = LoaderOptions(
        batch_size=64,
        device=torch.device("cpu"),
        augment=True,
        shuffle=True,
        seed=seed,
        compile_augmentation=compile_augmentation,
        spec=spec,
    )
    return [images for images, _ in make_loader("torch", random_split(200, seed=1), options)]


SPECS = {
    "recipe": SPEC,
    "reflect": replace(SPEC, pad_mode="reflect"),
    "pad-2-cutout-5-no-flip": AugmentationSpec(pad=2, cutout_size=5, flip_mode="none"),
    "no-crop-no-cutout-no-flip": AugmentationSpec(pad=0, cutout_size=0, flip_mode="none"),
    "pad-3-cutout-5-reflect": AugmentationSpec(pad=3, cutout_size=5, pad_mode="reflect"),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_compiled_augmentation_equals_the_eager_one(spec):
    """Each spec tests/test_loaders.py checks the eager form against (which its CPU loaders
    run), compiled: so the compiled form meets them too."""
    for compiled, eager in zip(epoch(True, spec=spec), epoch(False, spec=spec), strict=True):
        torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch_loader, "compiled_augment_batch", lambda: broken)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler.*running it eagerly"):
        fallen_back = epoch(True)
    for got, expected in zip(fallen_back, epoch(False), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_run_compiles_the_augmentation_where_it_pays():
    """On the CPU a slice augments eagerly and a recipe-sized run compiles (the numbers are in
    loaders/base.py); a compiled model always brings it along, and so does a GPU."""
    data, cpu = synthetic_cifar(64, 8), torch.device("cpu")

    def augment(**settings):
        return _train_loader(TrainConfig(**settings), data, cpu, Distributed())._augment

    assert augment(epochs=24) is torch_loader.augment_batch  # 1,536 images
    assert augment(epochs=6250) is torch_loader.compiled_augment_batch()  # 400,000
    assert augment(epochs=24, compile=True) is torch_loader.compiled_augment_batch()
    assert compile_pays(torch.device("cuda"), 64, model_compiled=False)
    assert not compile_pays(cpu, base.COMPILE_PAYS_FROM - 1, model_compiled=False)


def test_a_loader_of_ones_own_compiles_where_a_recipe_run_of_its_images_would_pay():
    """On the CPU: a few images augment eagerly, CIFAR-10's size compiles (24 epochs of 16,667
    images reach COMPILE_PAYS_FROM), and the caller's word wins either way."""

    def augment(count: int, **settings):
        images = np.zeros((count, 32, 32, 3), np.uint8)
        loader = torch_loader.CifarTensorLoader.from_arrays(
            images, np.arange(count) % 10, device="cpu", **settings
        )
        return loader._augment

    compiled = torch_loader.compiled_augment_batch()
    assert augment(64) is torch_loader.augment_batch
    assert augment(16_667) is compiled and augment(16_666) is torch_loader.augment_batch
    assert augment(64, compile_augmentation=True) is compiled
    assert augment(16_667, compile_augmentation=False) is torch_loader.augment_batch
    assert TrainConfig().epochs == base.ASSUMED_EPOCHS  # the recipe's length, as it says
    assert augment(16_667, augment=False) is torch_loader.augment_batch  # nothing to compile
