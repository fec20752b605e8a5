"""Grad-CAM of mistakes: valid maps on the ResNet9, maps that point at the evidence, a model left as
it was found, a grid PNG, and a one-line error when grad-cam is missing."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastcifar.engine.model import build_model
from fastcifar.errors import MissingBackendError
from fastcifar.outputs.gradcam import gradcam_heatmaps, grid_title, plot_gradcam_grid

needs_grad_cam = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_grad_cam") is None, reason="pip install .[gradcam]"
)

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
RED, BLUE = 0, 1


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(torch.device("cpu"))  # channels_last, as the trainer builds it


def normalised_images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, 3, 32, 32, generator=generator)
    return images.contiguous(memory_format=torch.channels_last)


def hook_count(model: nn.Module) -> int:
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, name)) for module in model.modules() for name in hooks)


def colour_detector() -> nn.Sequential:
    """Class RED scores the mean redness of the image, class BLUE its mean blueness."""
    detector = nn.Conv2d(3, 2, kernel_size=1, bias=False)
    classifier = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        detector.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]).view(2, 3, 1, 1))
        classifier.weight.copy_(torch.eye(2))
    return nn.Sequential(detector, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)


def red_left_blue_right() -> torch.Tensor:
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, 8:24, 2:14] = 1.0  # a red patch in the left half
    image[0, 2, 8:24, 18:30] = 1.0  # a blue patch in the right half
    return image


@needs_grad_cam
def test_heat_maps_are_finite_and_in_the_unit_range_one_per_image(resnet):
    heat = gradcam_heatmaps(resnet, normalised_images(5), targets=[0, 1, 2, 3, 9])
    assert heat.shape == (5, 32, 32) and heat.dtype == np.float32
    assert np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0


@needs_grad_cam
def test_batching_does_not_change_the_maps(resnet):
    images, targets = normalised_images(3), [4, 1, 7]
    whole = gradcam_heatmaps(resnet, images, targets, batch_size=64)
    in_pieces = gradcam_heatmaps(resnet, images, targets, batch_size=2)
    np.testing.assert_allclose(in_pieces, whole, atol=1e-5)


@needs_grad_cam
def test_the_model_is_left_as_it_was_found(resnet):
    resnet.train()
    resnet.fc.weight.requires_grad_(False)
    earlier_gradient = torch.ones_like(resnet.prep[0].weight)
    resnet.prep[0].weight.grad = earlier_gradient
    flags = [p.requires_grad for p in resnet.parameters()]
    running_mean = resnet.prep[1].running_mean.clone()
    try:
        with torch.no_grad():  # as an evaluation loop would call it
            gradcam_heatmaps(resnet, normalised_images(3), targets=[1, 2, 3])
        assert hook_count(resnet) == 0
        assert [p.requires_grad for p in resnet.parameters()] == flags
        assert all(module.training for module in resnet.modules())
        assert resnet.prep[0].weight.grad is earlier_gradient
        assert all(p.grad is None for p in list(resnet.parameters())[1:])
        torch.testing.assert_close(resnet.prep[1].running_mean, running_mean)  # ran in eval mode
    finally:
        resnet.eval()
        resnet.fc.weight.requires_grad_(True)
        resnet.prep[0].weight.grad = None


@needs_grad_cam
def test_maps_can_be_asked_for_inside_a_bfloat16_autocast(resnet):
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a --amp evaluation would be
        heat = gradcam_heatmaps(resnet, normalised_images(2), targets=[0, 1])
    assert heat.shape == (2, 32, 32) and np.isfinite(heat).all()


@needs_grad_cam
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_maps_on_cuda_are_valid_and_leave_no_hooks():
    model = build_model(torch.device("cuda"))
    images = normalised_images(3).cuda()
    heat = gradcam_heatmaps(model, images, targets=[0, 5, 9])
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert hook_count(model) == 0


@needs_grad_cam
def test_a_class_index_out_of_range_raises_and_leaves_no_hooks(resnet):
    with pytest.raises(IndexError):
        gradcam_heatmaps(resnet, normalised_images(2), targets=[0, 10])
    assert hook_count(resnet) == 0


@needs_grad_cam
def test_the_map_for_a_class_lies_where_the_evidence_for_that_class_is():
    model, image = colour_detector(), red_left_blue_right()
    red = gradcam_heatmaps(model, image, [RED], target_layer=model[0])[0]
    blue = gradcam_heatmaps(model, image, [BLUE], target_layer=model[0])[0]
    assert red[:, :16].sum() > 0.99 * red.sum() > 0
    assert blue[:, 16:].sum() > 0.99 * blue.sum() > 0


@needs_grad_cam
def test_an_image_without_evidence_gets_an_all_zero_map():
    model = colour_detector()
    heat = gradcam_heatmaps(model, torch.zeros(1, 3, 32, 32), [RED], target_layer=model[0])
    assert np.array_equal(heat, np.zeros((1, 32, 32), dtype=np.float32))


@needs_grad_cam
def test_the_compiled_wrapper_is_refused_without_an_explicit_layer(resnet):
    with pytest.raises(ValueError, match="plain ResNet9"):
        gradcam_heatmaps(torch.compile(resnet), normalised_images(1), targets=[0])


def test_one_target_per_image_is_required(resnet):
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        gradcam_heatmaps(resnet, normalised_images(2), targets=[0])


def test_a_missing_grad_cam_names_the_extra_to_install(resnet, monkeypatch):
    loaded = [name for name in sys.modules if name.startswith("pytorch_grad_cam.")]
    for name in ["pytorch_grad_cam", *loaded]:
        monkeypatch.setitem(sys.modules, name, None)  # None makes `import` fail
    with pytest.raises(MissingBackendError, match=r"pip install -e '\.\[gradcam\]'"):
        gradcam_heatmaps(resnet, normalised_images(1), targets=[0])


def grid_inputs(count: int) -> dict:
    generator = np.random.default_rng(2)
    return {
        "images": generator.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
        "heatmaps": generator.random((count, 32, 32), dtype=np.float32),
        "labels": np.arange(count) % 5,
        "predictions": (np.arange(count) + 1) % 5,
        "class_names": CLASS_NAMES,
    }


@pytest.mark.parametrize("count", [7, 0])
def test_the_grid_is_written_as_a_png(count, tmp_path):
    path = tmp_path / "gradcam.png"
    written = plot_gradcam_grid(**grid_inputs(count), path=path, total_wrong=count, total=100)
    assert written == path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["gradcam.png"]  # no temporary file left


def test_the_grid_title_counts_the_shown_the_wrong_and_the_test_images():
    assert grid_title(24, 612, 10_000) == (
        "Grad-CAM of misclassified test images: 24 shown of 612 wrong (of 10,000)\n"
        "heat = evidence for the predicted class"
    )
    assert grid_title(0, 0, 10_000) == "Grad-CAM: no misclassified test images (of 10,000)"


def test_the_grid_needs_one_heat_map_label_and_prediction_per_image(tmp_path):
    inputs = grid_inputs(3) | {"labels": np.zeros(2, dtype=int)}
    with pytest.raises(ValueError, match="3 images, 3 heat maps, 2 labels"):
        plot_gradcam_grid(**inputs, path=tmp_path / "g.png", total_wrong=3, total=10)
