"""Summary statistics of repeated runs: mean, sample std, min, max and a t-distribution
confidence interval of the mean.

The Student-t quantile is computed here (its density integrated by Simpson's rule, inverted by
bisection: about 1e-9 accurate) because the only library with it, SciPy, is not a dependency
and is not installed on the GPU machines that run the multi-seed benchmark.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

SIMPSON_INTERVALS = 4000


def t_density(x: float, dof: int) -> float:
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    return math.exp(log_norm - (dof + 1) / 2 * math.log1p(x * x / dof))


def t_cdf(x: float, dof: int) -> float:
    """P(T <= x) for Student's t with `dof` degrees of freedom."""
    if x < 0:
        return 1.0 - t_cdf(-x, dof)
    step = x / SIMPSON_INTERVALS
    total = t_density(0.0, dof) + t_density(x, dof)
    for i in range(1, SIMPSON_INTERVALS):
        total += (4 if i % 2 else 2) * t_density(i * step, dof)
    return 0.5 + total * step / 3


def t_quantile(probability: float, dof: int) -> float:
    """The x with P(T <= x) = probability, for 0.5 <= probability < 1."""
    if not 0.5 <= probability < 1 or dof < 1:
        raise ValueError(f"need 0.5 <= probability < 1 and dof >= 1, got {probability}, {dof}")
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < probability:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, dof) < probability else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Aggregate:
    count: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one value
    min: float
    max: float
    ci95_low: float | None  # 95% confidence interval of the mean (t-distribution); None for n = 1
    ci95_high: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, scale: float = 100.0, unit: str = "%") -> str:
        text = f"{scale * self.mean:.2f}{unit} ± {scale * self.std:.2f}{unit} (n = {self.count}"
        if self.ci95_low is not None:
            text += f", 95% CI {scale * self.ci95_low:.2f}–{scale * self.ci95_high:.2f}{unit}"
        return text + f", min {scale * self.min:.2f}, max {scale * self.max:.2f})"


def aggregate(values: Sequence[float], low: float = -math.inf, high: float = math.inf) -> Aggregate:
    """Statistics of `values`; the confidence interval is clamped to [low, high], the range
    the quantity can take (an accuracy's interval never reaches below 0% or above 100%)."""
    if not values:
        raise ValueError("no values to aggregate")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Aggregate(1, mean, 0.0, values[0], values[0], None, None)
    std = statistics.stdev(values)
    half_width = t_quantile(0.975, len(values) - 1) * std / math.sqrt(len(values))
    return Aggregate(
        len(values),
        mean,
        std,
        min(values),
        max(values),
        max(low, mean - half_width),
        min(high, mean + half_width),
    )
