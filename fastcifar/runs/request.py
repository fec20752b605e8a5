"""One call of fit (or of `python -m fastcifar.train`) as a `Request`: what to train and how,
checked on its settings alone before torch loads any data."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastcifar.data.dataset import Dataset
from fastcifar.data.spec import SPECS
from fastcifar.engine.model import ModelChoice, check_model, check_width
from fastcifar.errors import ConfigError
from fastcifar.records.config import RunOptions, TrainConfig


@dataclass(frozen=True)
class Request:
    """One call of `fit` or of `python -m fastcifar.train`: what to train and how."""

    config: TrainConfig
    options: RunOptions = field(default_factory=RunOptions)
    data: Dataset | None = None  # data of one's own (see dataset.as_dataset); None: CIFAR-10
    model: ModelChoice = None  # None: the ResNet9

    def check(self) -> None:
        """What needs only the settings, before torch loads any data: One Cycle's length, the
        optional extras asked for, a model that Grad-CAM can explain."""
        spec = SPECS.get(self.config.dataset)  # None: a folder, counted once it is read
        images = self.config.train_subset or (
            len(self.data.train)
            if self.data is not None
            else spec.train_images
            if spec is not None
            else None
        )
        if images is not None:
            self.config.training_steps(images)
        check_model(self.model)
        check_width(self.model, self.config.width)
        if self.config.gradcam:
            if self.model is not None:
                raise ConfigError("--gradcam explains the ResNet9 only, not a model of one's own")
            from fastcifar.outputs.gradcam import import_grad_cam

            import_grad_cam()
        if self.config.tensorboard:
            from fastcifar.outputs.tensorboard_log import import_summary_writer

            import_summary_writer()
