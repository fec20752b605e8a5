"""One epoch of a run: one row of metrics.csv, one entry of the checkpoint's history, one line
of the log, one point of the curves and of TensorBoard. Written here once, read by all of them.

The test columns (and the evaluation's seconds) are None after an epoch that --eval-every did
not evaluate; the TTA columns are None without --tta. A checkpoint keeps rows as dictionaries
(`to_dict`), as it always has, and reads them back with `of`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class MetricsRow:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    test_loss_tta: float | None
    test_accuracy_tta: float | None
    lr: float
    epoch_seconds: float
    images_per_second: float
    eval_seconds: float | None  # None: not evaluated

    @property
    def evaluated(self) -> bool:
        return self.test_loss is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, values: dict[str, Any]) -> MetricsRow:
        """A row from a checkpoint's dictionary (a missing TTA or evaluation column: None)."""
        return cls(**{item.name: values.get(item.name) for item in fields(cls)})


METRIC_COLUMNS = tuple(item.name for item in fields(MetricsRow))  # metrics.csv's, in order
TIMING_COLUMNS = ("epoch_seconds", "images_per_second", "eval_seconds")
