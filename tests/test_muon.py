"""--optimizer muon (engine/muon.py): the convolution filters step by torch.optim.Muon on
matrices that share their memory, rescaled first; every other parameter by SGD; one optimizer
for the schedule, the range test and checkpoints; and the airbench-muon recipe, resumed
bit-identically on a slice."""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn
from torch.optim import _muon

from fastcifar.engine import muon, schedule
from fastcifar.engine import step as engine
from fastcifar.engine.airbench_net import AirbenchNet
from fastcifar.engine.model import step_gflop
from fastcifar.engine.muon import orthogonalise_fp32
from fastcifar.engine.schedule import MuonSettings, make_optimizer, one_cycle_schedule
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, exit_code, finished_run, signal_after

DATA = synthetic_cifar(64, 32)
SLICE = ["--recipe", "airbench-muon", "--epochs", "2", "--train-subset", "48", "--batch-size",
         "16", "--test-subset", "32", "--no-plots", "--device", "cpu",
         "--whitening-bias-epochs", "1", *NARROW]  # fmt: skip
ORIGINAL_STEP = engine.training_step
LR, MOMENTUM, DECAY = 0.1, 0.9, 1e-3
MUON = MuonSettings(lr_scale=0.5, momentum=0.6)


def small_net(channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    return net.to(memory_format=torch.channels_last) if channels_last else net


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 3, 6, 6, generator=generator),
             torch.randint(0, 4, (16,), generator=generator)) for _ in range(count)]  # fmt: skip


def train(net: nn.Module, optimizer: torch.optim.Optimizer, data: list) -> None:
    for images, labels in data:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()


def muon_optimizer(net: nn.Module) -> torch.optim.Optimizer:
    return make_optimizer(net, lr=LR, momentum=MOMENTUM, weight_decay=DECAY, muon=MUON)


@pytest.fixture
def native_bf16(monkeypatch):
    """torch's own bf16 Newton-Schulz iteration, whatever this CPU runs natively."""
    monkeypatch.setattr(schedule, "cpu_bf16_support", lambda: (True, "as on an AMX CPU"))


def test_filters_step_by_muon_on_their_rescaled_matrix_and_the_rest_by_sgd(native_bf16):
    net, reference = small_net(), small_net()
    optimizer = muon_optimizer(net)
    conv = reference[0]
    others = [p for p in reference.parameters() if p is not conv.weight]
    sgd = torch.optim.SGD(others, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=DECAY)
    matrix = nn.Parameter(conv.weight.detach().reshape(8, -1).clone())
    muon = torch.optim.Muon([matrix], lr=LR * MUON.lr_scale, momentum=MUON.momentum,
                            nesterov=True, weight_decay=0.0, ns_steps=3)  # fmt: skip
    for images, labels in batches(3):
        train(net, optimizer, [(images, labels)])
        sgd.zero_grad()
        conv.weight.grad = None
        nn.functional.cross_entropy(reference(images), labels).backward()
        sgd.step()
        with torch.no_grad():  # rescaled to norm sqrt(out), then Muon's step
            matrix.mul_(8**0.5 / matrix.norm())
        matrix.grad = conv.weight.grad.reshape(8, -1)
        muon.step()
        with torch.no_grad():
            conv.weight.copy_(matrix.view_as(conv.weight))
    for mine, expected in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, expected)
    assert not torch.equal(net[0].weight, small_net()[0].weight)  # it did move


def test_the_fp32_newton_schulz_iteration_is_torchs_without_its_bf16_rounding():
    coefficients = (_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C)
    grad = torch.randn(24, 72, generator=torch.Generator().manual_seed(3))
    for matrix in (grad, grad.T):  # wide, and tall (iterated on its transpose)
        ours = orthogonalise_fp32(matrix, coefficients, 3, 1e-7)
        torchs = _muon._zeropower_via_newtonschulz(matrix, coefficients, 3, 1e-7)
        assert ours.dtype == torch.float32 and torchs.dtype == torch.bfloat16
        torch.testing.assert_close(ours, torchs.float(), atol=2e-2, rtol=0)
        assert not torch.equal(ours, torchs.float())


def test_a_cpu_without_native_bf16_iterates_in_fp32_and_torch_is_left_as_it_was(monkeypatch):
    taken, torchs = [], _muon._zeropower_via_newtonschulz

    def counted(*args):
        taken.append(args[0].shape)
        return orthogonalise_fp32(*args)

    monkeypatch.setattr(muon, "orthogonalise_fp32", counted)
    for native in (True, False):
        monkeypatch.setattr(schedule, "cpu_bf16_support", lambda native=native: (native, "test"))
        net, taken[:] = small_net(), []
        optimizer = muon_optimizer(net)
        assert optimizer.newton_schulz_fp32 is not native
        train(net, optimizer, batches(2))
        assert taken == ([] if native else [torch.Size([8, 27])] * 2)
        assert _muon._zeropower_via_newtonschulz is torchs


def test_a_channels_last_filter_steps_its_own_memory_alike():
    flat, last = small_net(), small_net(channels_last=True)
    assert last[0].weight.is_contiguous(memory_format=torch.channels_last)
    memory = last[0].weight.data_ptr()
    train(flat, muon_optimizer(flat), batches(3))
    train(last, muon_optimizer(last), batches(3))
    assert last[0].weight.data_ptr() == memory
    # Muon orthogonalises in bf16: another column order rounds differently, by ~1e-3.
    torch.testing.assert_close(last[0].weight, flat[0].weight, atol=5e-3, rtol=0)
    assert not torch.equal(last[0].weight, small_net(channels_last=True)[0].weight)


def test_a_filter_whose_memory_moved_is_refused_not_stepped_silently():
    net = small_net()
    optimizer = muon_optimizer(net)
    net[0].weight.data = net[0].weight.data.to(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="a filter's memory is not its Muon matrix's"):
        train(net, optimizer, batches(1))


def test_its_state_dict_resumes_the_steps_bit_identically():
    whole = small_net()
    train(whole, muon_optimizer(whole), batches(3))
    first = small_net()
    optimizer = muon_optimizer(first)
    train(first, optimizer, batches(2))
    saved = optimizer.state_dict()
    assert set(saved) == {"sgd", "muon", "muon_group"}
    resumed = small_net()
    resumed.load_state_dict(first.state_dict())
    again = muon_optimizer(resumed)
    again.load_state_dict(saved)
    train(resumed, again, batches(3)[2:])
    for mine, expected in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(mine, expected)
    with pytest.raises(ValueError, match="not of --optimizer muon"):
        again.load_state_dict(torch.optim.SGD(small_net().parameters(), lr=1).state_dict())


def test_the_schedule_sets_the_filters_lr_at_their_multiple():
    net = small_net()
    optimizer = muon_optimizer(net)
    schedule = one_cycle_schedule(optimizer, lr_min=0.01, lr_max=LR, total_steps=10,
                                  peak_fraction=0.3)  # fmt: skip
    for images, labels in batches(4):
        train(net, optimizer, [(images, labels)])
        schedule.step()
    sgd_lr, muon_lr = optimizer.param_groups[0]["lr"], optimizer.param_groups[-1]["lr"]
    assert muon_lr == pytest.approx(MUON.lr_scale * sgd_lr) and muon_lr != LR * MUON.lr_scale
    train(net, optimizer, batches(1))
    assert optimizer.muon.param_groups[0]["lr"] == muon_lr


@pytest.mark.parametrize("loaded", [False, True])
def test_the_lr_set_on_its_groups_is_the_lr_sgd_steps_with_even_after_a_load(loaded):
    # A run loads a state dict before its schedule exists (its warm-up is rolled back, a
    # resume restores one): torch's load gives the SGD half new group dicts, which the
    # schedule would no longer reach.
    net = small_net()
    optimizer = muon_optimizer(net)
    train(net, optimizer, batches(1))
    if loaded:
        optimizer.load_state_dict(optimizer.state_dict())
    for group in optimizer.param_groups[:-1]:
        group["lr"] = 0.0  # as a schedule sets it
    others = [p for p in net.parameters() if p.ndim != 4]
    before = [p.detach().clone() for p in others]
    filters = net[0].weight.detach().clone()
    train(net, optimizer, batches(2)[1:])
    assert all(torch.equal(p, b) for p, b in zip(others, before, strict=True))
    assert not torch.equal(net[0].weight, filters)  # Muon's group kept its LR
    assert optimizer.sgd.param_groups[0] is optimizer.param_groups[0]


def test_a_network_without_filters_or_with_cycled_momentum_is_one_clear_error():
    with pytest.raises(ConfigError, match="steps convolution filters: this network has none"):
        make_optimizer(nn.Linear(4, 2), lr=LR, muon=MUON)
    with pytest.raises(ConfigError, match="--cycle-momentum cannot be combined with --optimizer"):
        TrainConfig.from_dict({"optimizer": "muon", "cycle_momentum": True})
    with pytest.raises(ConfigError, match="unknown optimizer 'adam': choose one of sgd, muon"):
        TrainConfig.from_dict({"optimizer": "adam"})
    with pytest.raises(ConfigError, match="--muon-lr-scale must be a finite positive"):
        TrainConfig.from_dict({"muon_lr_scale": 0.0})


def test_the_recipe_trains_within_the_muon_records_compute():
    config = TrainConfig.from_dict({"recipe": "airbench-muon"})
    assert (config.optimizer, config.model, config.lookahead) == ("muon", "airbench", None)
    images = config.epochs * (50_000 // config.batch_size) * config.batch_size
    pflop = images * step_gflop(AirbenchNet(), 1, torch.device("cpu")) / 1e6
    assert pflop <= 0.29, f"{pflop:.3f} PFLOP"


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return finished_run(tmp_path_factory, "airbench-muon", SLICE, DATA)


def test_a_stopped_run_of_the_recipe_resumes_bit_identical(whole, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, 4, signal.SIGTERM)  # inside epoch 2
    assert exit_code([*SLICE, "--out", str(out)], DATA) == 143
    stopped = torch.load(out / "checkpoint.pt", weights_only=True)["parts"]["optimizer"]
    assert stopped["muon"]["state"], "Muon's momentum was not checkpointed"
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert exit_code(["--resume", str(out)], DATA) == 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    uninterrupted = torch.load(whole / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)
