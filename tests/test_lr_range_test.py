"""The LR range test on two curves with a known answer. Full-batch gradient descent on least
squares diverges for LR > 2/L (L = largest eigenvalue of the Hessian): the LRMAX found must lie
below 2/L and within 10x of it. The custom ResNet on the full CIFAR-10 does not blow up, and its
recorded curve must read LRMAX on the plateau around Page's 0.4. LRMIN below LRMAX; and every
piece of state must be restored afterwards."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch

from fastcifar.engine.lr_range_test import lr_range_test, suggest_bounds
from fastcifar.engine.step import StepContext
from fastcifar.errors import RangeTestError


def sweep(model, optimizer, batches, loss_fn, **options):
    """The range test on a plain model and loss (the trainer passes its compiled TrainForward)."""

    def forward(inputs, targets):
        return loss_fn(model(inputs), targets), torch.zeros((), dtype=torch.int64)

    model.train()
    return lr_range_test(StepContext(forward, optimizer), batches, restore=model, **options)


def least_squares(spread_decades: float, rows: int = 512, columns: int = 32, seed: int = 0):
    """(X, y, L): a regression whose Hessian X^T X / n has eigenvalues spread over some decades."""
    generator = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(rows, columns, generator=generator))
    right, _ = torch.linalg.qr(torch.randn(columns, columns, generator=generator))
    singular = torch.logspace(0, -spread_decades, columns) * math.sqrt(rows)
    x = left @ torch.diag(singular) @ right.T
    y = x @ (3 * torch.randn(columns, generator=generator))
    y += 0.1 * torch.randn(rows, generator=generator)
    return x, y, torch.linalg.eigvalsh(x.T @ x / rows).max().item()


def half_squared_error(prediction, target):
    return 0.5 * ((prediction.squeeze(1) - target) ** 2).mean()


@pytest.mark.parametrize("spread_decades", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("steps", [100, 300])
def test_lr_max_lies_below_the_divergence_point_and_within_10x(spread_decades, steps):
    x, y, curvature = least_squares(spread_decades)
    model = torch.nn.Linear(x.shape[1], 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = sweep(
        model,
        optimizer,
        [(x, y)],
        half_squared_error,
        start_lr=1e-4 / curvature,
        end_lr=100 / curvature,
        steps=steps,
    )
    divergence = 2 / curvature
    assert divergence / 10 < result.lr_max < divergence
    assert result.lr_min < result.lr_max
    assert "diverged" in result.stop_reason  # the sweep went past 2/L and stopped itself
    assert result.blow_up_lr > divergence
    assert result.lr_max == pytest.approx(result.blow_up_lr / 10)  # the floor lags past 2/L
    assert "blow-up / 10" in result.lr_max_method


def test_the_cifar10_curve_reads_lrmax_at_its_valley_floor_on_the_plateau():
    """The recorded losses of a real range test (tests/data: the custom ResNet, full CIFAR-10,
    bf16), replayed step by step through the sweep: the loss rises past LR 0.3 but never blows
    up, so LRMAX is the valley floor, 0.433, next to Page's hand-tuned 0.4 (a tenth of it cost
    1.25 points of accuracy in 24 epochs)."""
    recorded = json.loads(
        (Path(__file__).parent / "data/cifar10_range_test_seed0.json").read_text()
    )
    weight = torch.nn.Parameter(torch.zeros(()))
    step = iter(recorded["losses"])

    def replay(inputs, targets):
        return weight * 0 + next(step), torch.zeros((), dtype=torch.int64)

    holder = torch.nn.Module()
    holder.weight = weight
    result = lr_range_test(
        StepContext(replay, torch.optim.SGD([weight], lr=1.0)),
        [(torch.zeros(1), torch.zeros(1))],
        restore=holder,
        start_lr=recorded["start_lr"],
        end_lr=recorded["end_lr"],
        steps=len(recorded["losses"]),
    )
    assert result.stop_reason == "completed the sweep" and result.blow_up_lr is None
    assert result.lr_max == pytest.approx(recorded["recorded_floor_lr"])
    assert 0.3 < result.lr_max < 0.6  # the plateau: Page's 0.4 reached 93.70% here
    assert result.lr_min < result.lr_max / 25  # onset of the fall, well below the peak


def test_every_piece_of_state_is_restored():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    batches = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(3)]
    loss = torch.nn.functional.cross_entropy(model(batches[0][0]), batches[0][1])
    loss.backward()
    optimizer.step()  # creates momentum buffers, which must survive the test untouched
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_optimizer = optimizer.state_dict()
    momentum_before = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    # Random labels: the loss may never fall, and the refusal of such a sweep restores too.
    with contextlib.suppress(RangeTestError):
        sweep(model, optimizer, batches, torch.nn.functional.cross_entropy, steps=20)
    for key, value in model.state_dict().items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(value, before_model[key])
    assert optimizer.param_groups[0]["lr"] == before_optimizer["param_groups"][0]["lr"] == 0.05
    for parameter, buffer in zip(model.parameters(), momentum_before, strict=True):
        torch.testing.assert_close(optimizer.state[parameter]["momentum_buffer"], buffer)


def test_sweep_stops_at_a_non_finite_loss():
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    calls = []

    def loss_fn(prediction, target):
        calls.append(1)
        loss = ((prediction - target) ** 2).mean()
        return loss * (float("nan") if len(calls) > 10 else 1.0)

    batches = [(torch.ones(4, 1), torch.zeros(4, 1))]
    result = sweep(model, optimizer, batches, loss_fn, steps=50)
    assert len(result.lrs) == 10 and "not finite" in result.stop_reason
    assert result.blow_up_lr == pytest.approx(1e-4 * (10 / 1e-4) ** (10 / 49))  # the 11th step's
    assert result.lr_max <= result.blow_up_lr / 10


def test_flat_curve_falls_back_to_the_documented_divisor():
    lrs = [10 ** (i / 10 - 4) for i in range(30)]
    lr_max, lr_min, _, how_min = suggest_bounds(lrs, [2.3] * 30, lr_min_divisor=25)
    assert lr_min == pytest.approx(lr_max / 25) and "no onset" in how_min


def test_onset_and_floor_are_read_off_the_curve():
    lrs = [10 ** (i / 10 - 4) for i in range(50)]
    smoothed = [2.0] * 10 + [2.0 - 0.05 * i for i in range(30)] + [0.5 + 0.3 * i for i in range(10)]
    lr_max, lr_min, how_max, _ = suggest_bounds(lrs, smoothed, lr_min_divisor=25)
    floor = min(range(50), key=smoothed.__getitem__)
    assert lr_max == pytest.approx(lrs[floor]) and how_max.startswith("valley floor")
    assert lr_min == pytest.approx(lrs[12])  # first point 5% of the way down the 1.5 fall


def test_lrmax_is_the_floor_but_a_decade_below_a_blow_up():
    lrs = [10 ** (i / 10 - 4) for i in range(50)]
    smoothed = [2.0] * 10 + [2.0 - 0.1 * i for i in range(10)] + [1.1 + 0.01 * i for i in range(30)]
    floor = 19  # LR 0.0079
    far, _, how_far, _ = suggest_bounds(lrs, smoothed, 25, blow_up_lr=lrs[45])  # blew up at 3.2
    assert far == pytest.approx(lrs[floor]) and how_far.startswith("valley floor")
    near, _, how_near, _ = suggest_bounds(lrs, smoothed, 25, blow_up_lr=lrs[25])  # at 0.032
    assert near == pytest.approx(lrs[25] / 10) and how_near.startswith("blow-up / 10")


def test_a_stop_request_ends_the_sweep_and_still_restores_the_weights():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    asked = []

    def stop_requested():
        asked.append(1)
        return len(asked) == 3

    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    with pytest.raises(RuntimeError, match="stopped"):
        sweep(
            model,
            optimizer,
            batches,
            torch.nn.functional.cross_entropy,
            steps=20,
            stop_requested=stop_requested,
            interrupted=lambda: RuntimeError("stopped"),
        )
    assert len(asked) == 3
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


@pytest.mark.parametrize("signalled", [False, True])
def test_the_deadline_ends_the_sweep_and_a_signal_outranks_it(signalled):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []

    def late():
        steps.append(1)
        return len(steps) >= 2

    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    expected = "a signal" if signalled else "time is up"
    with pytest.raises(RuntimeError, match=expected):
        sweep(model, optimizer, batches, torch.nn.functional.cross_entropy, steps=20,
              stop_requested=lambda: signalled and len(steps) >= 1,  # asked before late()
              interrupted=lambda: RuntimeError("a signal"),
              out_of_time=late, time_is_up=lambda: RuntimeError("time is up"))  # fmt: skip
    assert len(steps) == 2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_another_ranks_deadline_stops_this_rank_at_the_same_step():
    """Two ranks: the other one's clock passes --max-time at step 3, this one's never does;
    the summed vote stops both there, as a limit (not a signal)."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    votes = []

    def with_the_other_rank(values):  # its loss equal to ours, its flags: late from step 3
        votes.append(values.tolist())
        other = torch.stack([values[0], values.new_zeros(()), values.new_tensor(len(votes) >= 3)])
        return values + other

    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    with pytest.raises(RuntimeError, match="time is up"):
        sweep(model, optimizer, batches, torch.nn.functional.cross_entropy, steps=20, ranks=2,
              sum_over_ranks=with_the_other_rank, interrupted=lambda: RuntimeError("a signal"),
              time_is_up=lambda: RuntimeError("time is up"))  # fmt: skip
    assert len(votes) == 3 and all(vote[1:] == [0.0, 0.0] for vote in votes)  # ours: neither


def test_a_sweep_that_diverges_at_once_is_one_clear_error():
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def exploding(prediction, target):
        return ((prediction - target) ** 2).mean() * float("inf")

    with pytest.raises(RangeTestError, match="diverged at its first step"):
        sweep(model, optimizer, [(torch.ones(4, 1), torch.zeros(4, 1))], exploding, steps=5)


def test_the_sweep_trains_even_when_the_model_was_left_in_eval_mode():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    model.eval()
    modes = []

    def forward(inputs, targets):
        modes.append(model.training)
        return torch.nn.functional.cross_entropy(model(inputs), targets), torch.zeros(())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    lr_range_test(StepContext(forward, optimizer), batches, restore=model, steps=3)
    assert modes == [True, True, True]
