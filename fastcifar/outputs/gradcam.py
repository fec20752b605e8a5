"""Grad-CAM (Selvaraju et al., 2017) of misclassified test images: where in each image the network
found the evidence for the class it wrongly predicted.

The maps come from the optional grad-cam package (`pip install -e '.[gradcam]'`, module
`pytorch_grad_cam`), imported only when a map is asked for, so the core install does not need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from fastcifar.data.dataset import Dataset
from fastcifar.engine.airbench_net import AirbenchNet
from fastcifar.engine.evaluation import Evaluation
from fastcifar.engine.model import ResNet9
from fastcifar.errors import MissingBackendError
from fastcifar.outputs.plots import GRID_COLUMNS, image_grid, mistakes_shown, save_figure

SHOWN = 24  # mistakes in a grid
HEAT_OPACITY = 0.45  # enough colour to read the map, enough image left to recognise the object


def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM weighs: `layer2` of the ResNet9 (256 x 8 x 8).

    layer3, the last convolutional block that the Grad-CAM paper would pick, is only 4 x 4: its
    maps are centred blobs that look alike (correlation with the mean map 0.63; layer2: 0.26).
    layer2, the last 8 x 8 map, is at least as faithful: cutting out the 8 x 8 window of most
    heat (as the training's cutout does) lowered the predicted class's probability by 0.103
    with layer2's maps, 0.099 with layer3's, 0.088 with layer1's, 0.050 with prep's (which trace
    edges) and 0.038 for a random window. Measured on 300 mistakes among test images 0-1,499 of
    a ResNet9 at 64.6% test accuracy (3 epochs on 10,240 images; 2-core CPU, torch 2.14.1).
    """
    if isinstance(model, AirbenchNet):  # its last map with room to look: 256 x 7 x 7
        return model.groups[1]
    if not isinstance(model, ResNet9):
        raise ValueError(
            f"no default Grad-CAM layer for {type(model).__name__}: pass target_layer, or the "
            "plain ResNet9 or AirbenchNet rather than its torch.compile wrapper"
        )
    return model.layer2


def gradcam_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    target_layer: nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM heat maps, (N, H, W) float32 in [0, 1], one per image for its class in `targets`.

    `images` are normalised (N, 3, H, W) tensors on the model's device. For a mistake, pass the
    *predicted* class: the map then shows what the network took as evidence for its wrong
    answer, which is what explains the mistake; the true class's map shows only what it found
    too weak. `model` must be the plain module, never its torch.compile wrapper: Grad-CAM hooks a
    layer of the module, and a compiled graph runs without calling it. The model is used in
    eval mode (BatchNorm statistics untouched); its modes, requires_grad flags, gradients and
    hooks are as before when this returns.
    """
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets: give one per image")
    grad_cam, classifier_target = import_grad_cam()
    layer = default_target_layer(model) if target_layer is None else target_layer
    maps = [np.zeros((0, *images.shape[-2:]), dtype=np.float32)]
    # grad-cam hands activations to NumPy, which has no bfloat16: no autocast, even inside --amp.
    no_autocast = torch.autocast(images.device.type, enabled=False)
    with _left_as_found(model), torch.enable_grad(), no_autocast:
        cam = grad_cam(model=model, target_layers=[layer])
        try:
            for start in range(0, len(images), batch_size):
                # The parameters are frozen, so the gradient Grad-CAM needs flows from the input.
                batch = images[start : start + batch_size].detach().clone().requires_grad_(True)
                classes = [classifier_target(int(t)) for t in targets[start : start + batch_size]]
                maps.append(cam(input_tensor=batch, targets=classes))
        finally:
            # Not `with cam:`: its __exit__ prints and swallows an IndexError (e.g. a class
            # index out of range) instead of raising it.
            cam.activations_and_grads.release()
    heat = np.concatenate(maps).astype(np.float32)
    # grad-cam's min-max scaling turns a NaN or infinite activation into a NaN map: plot 0 there.
    return np.clip(np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


def import_grad_cam():
    """grad-cam's GradCAM and ClassifierOutputTarget; MissingBackendError when it cannot load
    (called before a run starts when --gradcam is asked for, not after hours of training)."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as error:  # also a cv2 that misses a system library such as libGL
        raise MissingBackendError(
            f"grad-cam is not installed or cannot load ({error}): pip install -e '.[gradcam]'"
        ) from error
    return GradCAM, ClassifierOutputTarget


@contextlib.contextmanager
def _left_as_found(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; every module's mode and parameter's requires_grad
    and .grad restored afterwards (grad-cam calls model.eval() and model.zero_grad())."""
    modes = {module: module.training for module in model.modules()}
    parameters = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    model.eval()
    for parameter, _, _ in parameters:
        # Weight gradients are not needed: skipping them saves the backward pass most of its work.
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for parameter, requires_grad, grad in parameters:
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad


def plot_gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    total_wrong: int,
    total: int,
) -> Path:
    """A PNG grid of uint8 (N, H, W, 3) images under their heat maps, titled 'true → predicted'."""
    if not len(images) == len(heatmaps) == len(labels) == len(predictions):
        raise ValueError(
            f"{len(images)} images, {len(heatmaps)} heat maps, {len(labels)} labels and "
            f"{len(predictions)} predictions: give one of each per image"
        )
    title = grid_title(len(images), total_wrong, total)
    if len(images) == 0:
        figure = Figure(figsize=(GRID_COLUMNS * 1.6, 0.8))
        figure.text(0.5, 0.5, title, ha="center", va="center", fontsize=9)
        return save_figure(figure, path)
    figure = image_grid(
        images, labels, predictions, class_names, title, heatmaps, overlay_opacity=HEAT_OPACITY
    )
    return save_figure(figure, path)


def grid_title(shown: int, total_wrong: int, total: int) -> str:
    """The grid's headline: how many mistakes it shows, of how many, of how many test images."""
    if total_wrong == 0:
        return f"Grad-CAM: no misclassified test images (of {total:,})"
    return (
        f"Grad-CAM of misclassified test images: {mistakes_shown(shown, total_wrong, total)}"
        "\nheat = evidence for the predicted class"
    )


def explain_mistakes(
    model: nn.Module, data: Dataset, evaluation: Evaluation, path: Path, count: int = SHOWN
) -> Path:
    """Grad-CAM of the first `count` misclassified test images of `evaluation` (of `data`), as a
    PNG grid at `path`."""
    from fastcifar.data.normalisation import to_batch

    labels = evaluation.labels.numpy()
    predictions = evaluation.headline().predictions.numpy()
    wrong = np.flatnonzero(labels != predictions)
    shown = wrong[:count]
    images = data.test.images[shown]
    device = next(model.parameters()).device
    heatmaps = np.zeros((0, *images.shape[1:3]), dtype=np.float32)
    if len(shown):
        batch = to_batch(images, device, data.normalisation)
        heatmaps = gradcam_heatmaps(model, batch, predictions[shown].tolist())
    return plot_gradcam_grid(
        images,
        heatmaps,
        labels[shown],
        predictions[shown],
        list(data.class_names),
        path,
        total_wrong=len(wrong),
        total=len(labels),
    )
