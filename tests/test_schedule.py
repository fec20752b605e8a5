"""One Cycle: LRMIN at step 0, LRMAX at the first step of epoch 5 (of 24), LRMIN at the end."""

from __future__ import annotations

import pytest
import torch

from fastcifar.engine.schedule import one_cycle_lr, one_cycle_schedule, schedule_points


def one_cycle_lrs(*, lr_min, lr_max, total_steps, peak_fraction):
    """Every step's LR as OneCycleLR itself sets it, on a throwaway optimizer."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr_max)
    scheduler = one_cycle_schedule(
        optimizer,
        lr_min=lr_min,
        lr_max=lr_max,
        total_steps=total_steps,
        peak_fraction=peak_fraction,
    )
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


STEPS_PER_EPOCH = 97  # 50,000 // 512


def test_the_recipe_schedule_hits_its_three_anchors():
    lrs = one_cycle_lrs(
        lr_min=0.02, lr_max=0.4, total_steps=24 * STEPS_PER_EPOCH, peak_fraction=5 / 24
    )
    assert lrs[0] == pytest.approx(0.02)
    assert lrs[5 * STEPS_PER_EPOCH] == pytest.approx(0.4)
    assert max(lrs) == pytest.approx(0.4)
    assert lrs.index(max(lrs)) == 5 * STEPS_PER_EPOCH
    assert lrs[-1] == pytest.approx(0.02)


def test_the_schedule_is_linear_between_the_anchors():
    lrs = torch.tensor(
        one_cycle_lrs(
            lr_min=0.01, lr_max=0.5, total_steps=24 * STEPS_PER_EPOCH, peak_fraction=5 / 24
        ),
        dtype=torch.float64,
    )
    peak = 5 * STEPS_PER_EPOCH
    rising, falling = lrs[: peak + 1].diff(), lrs[peak:].diff()
    torch.testing.assert_close(rising, torch.full_like(rising, (0.5 - 0.01) / peak))
    torch.testing.assert_close(
        falling, torch.full_like(falling, -(0.5 - 0.01) / (len(lrs) - 1 - peak))
    )


def test_short_runs_keep_the_peak_at_the_same_fraction():
    lrs = one_cycle_lrs(lr_min=0.01, lr_max=0.1, total_steps=48, peak_fraction=5 / 24)
    assert lrs.index(max(lrs)) == 10 and lrs[0] == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(0.01)


def test_momentum_cycles_against_the_lr_when_asked():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = one_cycle_schedule(
        optimizer,
        lr_min=0.01,
        lr_max=0.1,
        total_steps=24,
        peak_fraction=5 / 24,
        cycle_momentum=True,
    )
    momenta = []
    for _ in range(24):
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert momenta[0] == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85)
    assert momenta.index(min(momenta)) == 5


def test_too_few_steps_is_an_error():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="at least 3 steps"):
        one_cycle_schedule(optimizer, lr_min=0.01, lr_max=0.1, total_steps=2, peak_fraction=0.2)


@pytest.mark.parametrize(
    ("total", "fraction"), [(24 * STEPS_PER_EPOCH, 5 / 24), (48, 5 / 24), (7, 0.5)]
)
def test_the_direct_formula_equals_onecyclelr_at_every_step(total, fraction):
    shape = dict(lr_min=0.016, lr_max=0.4, total_steps=total, peak_fraction=fraction)
    expected = one_cycle_lrs(**shape)
    assert [one_cycle_lr(step, **shape) for step in range(total)] == pytest.approx(
        expected, rel=1e-12
    )


def test_plot_points_of_an_absurdly_long_schedule_stay_few_and_keep_the_peak():
    total = 10_000 * STEPS_PER_EPOCH
    steps, lrs = schedule_points(lr_min=0.01, lr_max=0.4, total_steps=total, peak_fraction=5 / 24)
    assert len(steps) <= 2001 and steps[0] == 0 and steps[-1] == total - 1
    assert max(lrs) == pytest.approx(0.4) and lrs[0] == pytest.approx(0.01)
