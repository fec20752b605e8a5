"""One Cycle: LRMIN at step 0, LRMAX at the first step of epoch 5 (of 24), LRMIN at the end."""

from __future__ import annotations

import pytest
import torch

from fastcifar.schedule import one_cycle_lrs, one_cycle_schedule

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
