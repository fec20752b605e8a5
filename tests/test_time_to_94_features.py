"""The training features of the fast recipe, each on the engine's seams: alternating flips in
the augmentation spec, flip + translate TTA, BatchNorm scales frozen and biases at a multiple of
the LR, lookahead on the after-step hook, and `--recipe` presets; a stopped run with every one
of them on resumes bit-identical."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fastcifar.cli import given
from fastcifar.data.augmentation import AugmentationSpec, draw_epoch
from fastcifar.engine import step as engine
from fastcifar.engine.evaluation import EvalForward, shifted_pair
from fastcifar.engine.model import ResNet9
from fastcifar.engine.schedule import (
    ParameterGroups,
    freeze_bn_scales,
    make_optimizer,
    one_cycle_schedule,
)
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.records.metrics_row import TIMING_COLUMNS
from fastcifar.records.recipes import RECIPES
from fastcifar.system.device import Precision
from fastcifar.train import build_parser
from fastcifar.train import main as train_main
from fastcifar.training.lookahead import Lookahead
from fastcifar.training.trainer import augmentation_spec
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, WIDTH, exit_code, finished_run, signal_after

DATA = synthetic_cifar(64, 32)
EVERYTHING = [*TWO_EPOCHS, "--flip", "alternating", "--ghost-bn", "8", "--freeze-bn-scale",
              "--bn-bias-lr-scale", "8", "--no-bias-decay", "--lookahead", "2",
              "--bn-reestimate", "2", "--whitening-init", "--dirac-init",
              "--label-smoothing", "0.2", "--tta", "--tta-translate",
              "--pad-mode", "reflect"]  # fmt: skip
ORIGINAL_STEP = engine.training_step


# --- alternating flips -------------------------------------------------------------------------


def test_alternating_flips_reverse_every_image_each_epoch_and_keep_the_other_draws():
    spec = AugmentationSpec(flip_mode="alternating")
    epochs = [draw_epoch(1000, 7, epoch, shuffle=True, spec=spec) for epoch in range(4)]
    first = epochs[0].flip
    assert 0.4 < first.mean() < 0.6  # random in the first epoch
    for epoch, draws in enumerate(epochs):
        assert np.array_equal(draws.flip, first ^ bool(epoch % 2))
        plain = draw_epoch(1000, 7, epoch, shuffle=True)
        for name in ("crop_row", "crop_col", "cutout_row", "cutout_col", "order"):
            assert np.array_equal(getattr(draws, name), getattr(plain, name))


def test_no_flips_means_none_and_random_flips_change_per_epoch():
    assert not draw_epoch(
        500, 0, 3, shuffle=True, spec=AugmentationSpec(flip_mode="none")
    ).flip.any()
    random = [draw_epoch(1000, 7, epoch, shuffle=True).flip for epoch in range(2)]
    assert 0.3 < np.mean(random[0] ^ random[1]) < 0.7  # independent, not alternating


def test_the_torch_loader_serves_the_alternating_flips(tmp_path):
    from fastcifar.data.loaders import LoaderOptions, make_loader

    split = DATA.train
    served = []
    for mode in ("random", "alternating"):
        options = LoaderOptions(
            batch_size=16, device=torch.device("cpu"), augment=True, shuffle=False,
            spec=AugmentationSpec(flip_mode=mode, cutout_size=0, pad=0),
            compile_augmentation=False,
        )  # fmt: skip
        loader = make_loader("torch", split, options)
        served.append([next(iter(loader))[0] for _ in range(2)])  # epochs 0 and 1
    alternating = served[1]
    # Without crop and cutout, epoch 1 is epoch 0 mirrored, image for image.
    torch.testing.assert_close(alternating[1], alternating[0].flip(3))
    assert not torch.equal(served[0][1], served[0][0].flip(3))


def test_reflected_padding_is_a_setting_and_an_unknown_mode_is_one_clear_error(capsys):
    args = build_parser().parse_args(["--pad-mode", "reflect"])
    assert augmentation_spec(TrainConfig.from_dict(given(args, TrainConfig))).reflect
    assert augmentation_spec(TrainConfig()).pad_mode == "mean"  # the assignment's
    assert TrainConfig.from_dict({"recipe": "airbench"}).pad_mode == "reflect"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--pad-mode", "edge"])
    assert "--pad-mode: invalid choice: 'edge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown padding mode 'edge': choose one of mean, refl"):
        TrainConfig.from_dict({"pad_mode": "edge"})


# --- flip + translate TTA ----------------------------------------------------------------------


def test_the_shifted_copies_move_one_pixel_with_reflected_edges():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    up_left, down_right = shifted_pair(images)
    torch.testing.assert_close(up_left[:, :, :4, :4], images[:, :, 1:, 1:])
    torch.testing.assert_close(down_right[:, :, 1:, 1:], images[:, :, :4, :4])
    torch.testing.assert_close(up_left[:, :, 4, :4], images[:, :, 3, 1:])  # reflected row
    assert up_left.is_contiguous(memory_format=torch.channels_last)


def test_flip_translate_tta_averages_six_views_half_and_half():
    torch.manual_seed(0)
    model = ResNet9().eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    forward = EvalForward(model, Precision("cpu", None), tta=True, translate=True)
    outputs = forward(images, labels)

    def pair(x):
        return (model(x) + model(x.flip(3))) / 2

    with torch.no_grad():
        expected = (pair(images) + (pair(shifted_pair(images)[0]) + pair(shifted_pair(images)[1]))
                    / 2) / 2  # fmt: skip
    assert torch.equal(outputs[3], expected.argmax(dim=1))
    loss = nn.functional.cross_entropy(expected, labels, reduction="sum")
    torch.testing.assert_close(outputs[2][0].float(), loss, rtol=1e-4, atol=1e-4)
    flip_only = EvalForward(model, Precision("cpu", None), tta=True)(images, labels)
    assert len(flip_only) == 4 and not torch.equal(flip_only[2], outputs[2])


def test_translate_without_tta_is_refused():
    with pytest.raises(ConfigError, match=r"tta.translate .* needs (--)?tta"):
        TrainConfig(tta_translate=True)


# --- BatchNorm scales and biases ---------------------------------------------------------------


def test_frozen_scales_leave_the_optimizer_and_stay_one():
    torch.manual_seed(0)
    model = ResNet9()
    freeze_bn_scales(model)
    optimizer = make_optimizer(model, lr=0.1, groups=ParameterGroups(freeze_bn_scale=True))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.prep[1].weight) not in in_optimizer
    model(torch.randn(8, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert torch.equal(model.prep[1].weight, torch.ones(64))
    assert sum(p.numel() for p in model.parameters()) == 6_573_130  # the network is unchanged


def test_batchnorm_biases_train_at_a_multiple_of_the_lr_with_the_same_decay_per_step():
    model = ResNet9()
    groups = ParameterGroups(bn_bias_lr_scale=64.0, bias_decay=False)
    optimizer = make_optimizer(model, lr=0.1, weight_decay=5e-4, groups=groups)
    weights, biases, others = optimizer.param_groups
    assert {id(p) for p in biases["params"]} == {
        id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    }
    assert biases["lr"] == pytest.approx(6.4) and biases["weight_decay"] == 0.0
    assert weights["weight_decay"] == 5e-4 and others["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in weights["params"])
    schedule = one_cycle_schedule(
        optimizer, lr_min=0.01, lr_max=0.4, total_steps=10, peak_fraction=0.3
    )
    for _ in range(3):
        optimizer.step()
        schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.4, 25.6, 0.4])
    decayed = make_optimizer(model, lr=0.1, groups=ParameterGroups(bn_bias_lr_scale=64.0))
    assert decayed.param_groups[1]["weight_decay"] == pytest.approx(5e-4 / 64)


def test_the_default_layout_is_one_group_as_before():
    assert len(make_optimizer(ResNet9(), lr=0.1).param_groups) == 1


# --- lookahead ---------------------------------------------------------------------------------


def test_lookahead_pulls_every_k_steps_and_at_the_last_with_a_rising_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    lookahead = Lookahead(model, every=2, total_steps=5)
    assert lookahead.decay(5) == pytest.approx(0.95**2)
    assert lookahead.decay(1) == pytest.approx(0.95**2 / 125)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead.after_step(0)  # step 1 of 5: no pull
    assert model.weight.item() == 1.0
    lookahead.after_step(1)  # step 2: slow = d * 0 + (1 - d) * 1, weights = slow
    pulled = 1 - lookahead.decay(2)
    assert model.weight.item() == pytest.approx(pulled)
    assert lookahead.slow["weight"].item() == pytest.approx(pulled)
    lookahead.after_step(4)  # the last step pulls too
    assert model.weight.item() == pytest.approx(pulled)  # the weights had not moved
    restored = Lookahead(model, every=2, total_steps=5)
    restored.load_state_dict(lookahead.state_dict())
    assert torch.equal(restored.slow["weight"], lookahead.slow["weight"])
    with pytest.raises(ValueError, match="another schedule"):
        Lookahead(model, every=3, total_steps=5).load_state_dict(lookahead.state_dict())


# --- recipes -----------------------------------------------------------------------------------


def test_a_recipe_sets_its_settings_and_flags_override_them():
    fast = TrainConfig.from_dict({"recipe": "fast"})
    for name, value in RECIPES["fast"].settings.items():
        assert getattr(fast, name) == value
    assert TrainConfig.from_dict({"recipe": "fast", "epochs": 9}).epochs == 9
    assert TrainConfig.from_dict({}) == TrainConfig()  # assignment: the defaults
    with pytest.raises(ConfigError, match="unknown recipe 'fastest': choose one of assignment"):
        TrainConfig.from_dict({"recipe": "fastest"})


def test_print_config_shows_what_a_recipe_chose(capsys):
    train_main(["--recipe", "fast", "--epochs", "10", "--print-config"])
    printed = capsys.readouterr().out
    chosen = ['recipe = "fast"', "epochs = 10", "lookahead = 5", 'flip = "alternating"',
              "bn_bias_lr_scale = 64.0", "tta_translate = true",
              "label_smoothing = 0.2"]  # fmt: skip
    assert set(chosen) <= set(printed.splitlines())


def test_a_recipes_feature_can_be_switched_off_by_flag_keyword_and_file(capsys, tmp_path):
    from fastcifar.api import make_request
    from fastcifar.records.config_file import read_toml

    args = build_parser().parse_args(["--recipe", "fast", "--no-lookahead", "--no-ema"])
    assert TrainConfig.from_dict(given(args, TrainConfig)).lookahead is None
    assert make_request(recipe="fast", lookahead=None, train_subset=512).config.lookahead is None
    # --print-config writes it so that --config reads the same run back.
    train_main(["--recipe", "fast", "--no-lookahead", "--print-config"])
    printed = capsys.readouterr().out
    assert "lookahead = false" in printed.splitlines()
    (tmp_path / "fast.toml").write_text(printed)
    again = TrainConfig.from_dict(read_toml(tmp_path / "fast.toml"))
    assert again.lookahead is None and again.recipe == "fast" and again.freeze_bn_scale


def test_the_recipe_keyword_reaches_fit():
    from fastcifar.api import make_request

    request = make_request(recipe="fast", train_subset=512)
    assert request.config.lookahead == 5 and request.config.recipe == "fast"


# --- a run with all of them --------------------------------------------------------------------


def metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(handle)]  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory, "features", EVERYTHING, DATA)


def test_a_run_records_its_features_and_its_tta_level(whole):
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["headline"] == "flip + translate TTA"
    assert summary["config"]["lookahead"] == 2 and summary["config"]["flip"] == "alternating"
    assert summary["config"]["pad_mode"] == "reflect"
    weights = torch.load(whole / "model.pt", weights_only=True)
    assert torch.equal(weights["prep.1.weight"], torch.ones(WIDTH))  # frozen scales


def test_a_stopped_run_with_every_feature_resumes_bit_identical(whole, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, 4, signal.SIGTERM)  # inside epoch 2
    assert exit_code([*EVERYTHING, "--out", str(out)], DATA) == 143
    parts = torch.load(out / "checkpoint.pt", weights_only=True)["parts"]
    assert parts["lookahead"]["every"] == 2
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert exit_code(["--resume", str(out)], DATA) == 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    uninterrupted = torch.load(whole / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)
    assert metrics(out) == metrics(whole)


# --- ghost BatchNorm ---------------------------------------------------------------------------


def test_ghost_batchnorm_normalises_each_sub_batch_by_its_own_statistics():
    from fastcifar.engine.ghost_batchnorm import GhostBatchNorm2d, convert

    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-1, 1)
    ghost = convert(nn.Sequential(nn.BatchNorm2d(3)), 2)[0]
    ghost.load_state_dict(plain.state_dict())
    assert isinstance(ghost, GhostBatchNorm2d)
    x = torch.randn(6, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    halves = [nn.functional.batch_norm(part, None, None, plain.weight, plain.bias, True)
              for part in x.split(2)]  # fmt: skip
    torch.testing.assert_close(ghost(x), torch.cat(halves), rtol=1e-4, atol=1e-5)
    # The same in either memory format, and the gradients are those of the split batch.
    for memory_format in (torch.channels_last, torch.contiguous_format):
        probe = x.detach().contiguous(memory_format=memory_format).requires_grad_()
        reference = x.detach().clone().requires_grad_()
        weights = torch.randn_like(x)
        (ghost(probe) * weights).sum().backward()
        split = [nn.functional.batch_norm(part, None, None, plain.weight, plain.bias, True)
                 for part in reference.split(2)]  # fmt: skip
        (torch.cat(split) * weights).sum().backward()
        torch.testing.assert_close(probe.grad, reference.grad, rtol=1e-4, atol=1e-5)
    ghost.running_mean.zero_()
    ghost.num_batches_tracked.zero_()
    ghost(x)
    # Running statistics: one move per step, towards the sub-batches' mean statistics.
    means = torch.stack([part.mean(dim=(0, 2, 3)) for part in x.split(2)]).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.1 * means)
    assert ghost.num_batches_tracked.item() == 1
    ghost.eval()
    plain.load_state_dict(ghost.state_dict())
    torch.testing.assert_close(ghost(x), plain.eval()(x))  # evaluation: plain BatchNorm


def test_ghost_batchnorm_keeps_the_network_and_its_state_dict():
    from fastcifar.engine.ghost_batchnorm import convert

    model = ResNet9()
    keys = list(model.state_dict())
    convert(model, 32)
    assert list(model.state_dict()) == keys
    assert sum(p.numel() for p in model.parameters()) == 6_573_130
    with pytest.raises(ConfigError, match=r"ghost.bn \(48\) must divide (--)?batch.size \(512\)"):
        TrainConfig(ghost_bn=48)


# --- BatchNorm statistics re-estimated after the last epoch ---------------------------------------


class FakeLoader:
    """Four fixed batches of 8 images, whatever the epoch (the re-estimate sets one)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(3)
        self.batches = [(torch.randn(8, 3, 4, 4, generator=generator) * (1 + i), None)
                        for i in range(4)]  # fmt: skip
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("ghost", [None, 4])
def test_the_reestimate_is_the_exact_average_over_its_batches_after_the_last_epoch(ghost):
    from types import SimpleNamespace

    from fastcifar.engine.ghost_batchnorm import convert
    from fastcifar.training.bn_reestimate import BatchNormReestimate

    model = nn.Sequential(nn.BatchNorm2d(3))
    if ghost:
        convert(model, ghost)
    loader = FakeLoader()
    trainer = SimpleNamespace(model=model, train_loader=loader, config=TrainConfig(epochs=5),
                              precision=Precision("cpu", None))  # fmt: skip
    part = BatchNormReestimate(trainer, batches=3)
    part.end_of_epoch(4)
    assert model[0].num_batches_tracked.item() == 0 and loader.epochs == []  # not the last
    model.eval()
    part.end_of_epoch(5)
    assert loader.epochs == [5] and not model.training  # the epoch after the last; mode kept
    used = [images for images, _ in loader.batches[:3]]
    groups = [part for images in used for part in images.split(ghost or 8)]
    means = torch.stack([g.mean(dim=(0, 2, 3)) for g in groups]).mean(0)
    variances = torch.stack([g.var(dim=(0, 2, 3), unbiased=True) for g in groups]).mean(0)
    torch.testing.assert_close(model[0].running_mean, means)
    torch.testing.assert_close(model[0].running_var, variances)
    assert model[0].momentum == 0.1  # given back
    with pytest.raises(ValueError, match="another number of batches"):
        BatchNormReestimate(trainer, batches=4).load_state_dict(part.state_dict())


def test_the_reestimate_and_an_average_are_refused_together():
    with pytest.raises(ConfigError, match=r"--bn-reestimate re-estimates the live weights"):
        TrainConfig(bn_reestimate=10, ema=0.99)


# --- whitening and dirac initialisation -----------------------------------------------------------


def test_whitening_and_dirac_start_the_convolutions_and_keep_the_network():
    from fastcifar.engine.initialisation import initialise, whitening_filters

    torch.manual_seed(0)
    model, random = ResNet9(), ResNet9()
    random.load_state_dict(model.state_dict())
    images = DATA.train.images
    initialise(model, whitening=True, dirac=True, images=images, normalisation=DATA.normalisation)
    assert sum(p.numel() for p in model.parameters()) == 6_573_130
    first = model.prep[0].weight
    torch.testing.assert_close(first[:54], whitening_filters(images, DATA.normalisation, 3))
    torch.testing.assert_close(first[54:], random.prep[0].weight[54:])  # beyond 2 x 27: drawn
    torch.testing.assert_close(first[1], -first[0])  # each filter and its negative
    # The whitened patches of the images it was computed on: unit variance, uncorrelated.
    mean = torch.tensor(DATA.normalisation.mean).view(1, 3, 1, 1)
    std = torch.tensor(DATA.normalisation.std).view(1, 3, 1, 1)
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std
    out = nn.functional.conv2d(pixels, first[0:54:2]).permute(1, 0, 2, 3).reshape(27, -1)
    covariance = torch.cov(out.double())
    assert covariance.diag()[:8].sub(1).abs().max() < 0.05  # the leading, well-measured ones
    assert (covariance - torch.diag(covariance.diag())).abs().max() < 0.05
    # Dirac: a convolution with as many outputs as inputs or more starts as the identity on
    # its first filters; the first convolution is the whitening's.
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv is not model.prep[0]:
            identity = torch.zeros_like(conv.weight[: conv.in_channels])
            nn.init.dirac_(identity)
            assert torch.equal(conv.weight[: conv.in_channels], identity), name
