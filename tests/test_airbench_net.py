"""The second network (airbench94's, engine/airbench_net.py) and its recipe: its layer table and
parameters, named by --model and fit(model=...), built and recorded as the ResNet9 is, and a
stopped run of its recipe resumed bit-identically."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from fastcifar.engine import step as engine
from fastcifar.engine.airbench_net import AirbenchNet
from fastcifar.engine.model import parameter_count, step_gflop
from fastcifar.engine.schedule import make_optimizer, one_cycle_lr, one_cycle_schedule
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.summary import main as summary_main
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, WIDTH, exit_code, finished_run, signal_after

DATA = synthetic_cifar(64, 32)
# The recipe on a slice: its network, optimiser, schedule and augmentation, on 48 images.
# The whitening bias frozen after epoch 1, so that the stop below (in epoch 2) resumes frozen.
SLICE = ["--recipe", "airbench", "--epochs", "2", "--train-subset", "48", "--batch-size", "16",
         "--test-subset", "32", "--no-plots", "--device", "cpu",
         "--whitening-bias-epochs", "1", *NARROW]  # fmt: skip
ORIGINAL_STEP = engine.training_step


def test_the_network_has_the_papers_shapes_and_parameters():
    model = AirbenchNet()
    assert parameter_count(model) == 1_972_792
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    # 0.35 PFLOP for 10 epochs of 48 batches of 1024 (airbench94: 0.36 for its 9.9 epochs).
    per_image = step_gflop(model, 1, torch.device("cpu"))
    assert 0.34 < per_image * 1e9 * 48 * 1024 * 10 / 1e15 < 0.36


def test_the_layer_table_describes_it(capsys):
    summary_main(["--model", "airbench"])
    table = capsys.readouterr().out
    assert "Whitening 2x2     24 x 31 x 31             312       2     1" in table
    assert "Group 3           256 x 3 x 3        1,180,672      51     8" in table
    assert "Total                                1,972,792" in table


def test_a_width_scales_the_groups_and_leaves_the_whitening(capsys):
    summary_main(["--model", "airbench", "--width", "16"])
    table = capsys.readouterr().out
    assert "Whitening 2x2     24 x 31 x 31             312       2     1" in table
    # Group 3 at 64 channels: 2 x (3 x 3 x 64 x 64 + 2 x 64) parameters.
    assert "Group 3           64 x 3 x 3            73,984      51     8" in table
    model = AirbenchNet(width=16)
    assert model.fc.in_features == 64 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_network_is_named_by_flag_keyword_and_recipe():
    from fastcifar.api import make_request

    assert TrainConfig.from_dict({"recipe": "airbench"}).model == "airbench"
    assert (
        make_request(model="airbench", whitening_init=True, train_subset=512).config.model
        == "airbench"
    )
    assert (
        make_request(model="airbench", whitening_init=True, train_subset=512).model is None
    )  # not one's own
    with pytest.raises(ConfigError, match="unknown model 'resnet50': choose one of resnet9, "):
        TrainConfig.from_dict({"model": "resnet50"})


def test_the_network_needs_its_whitening_and_a_resume_takes_no_other_model(tmp_path):
    from fastcifar.api import make_request

    with pytest.raises(ConfigError, match="--model airbench starts from a fixed whitening layer"):
        TrainConfig.from_dict({"model": "airbench"})
    with pytest.raises(ConfigError, match="model"):  # not silently dropped beside resume
        make_request(resume=str(tmp_path), model="airbench")


def test_grad_cam_looks_at_its_7_by_7_map():
    from fastcifar.outputs.gradcam import default_target_layer

    model = AirbenchNet()
    assert default_target_layer(model) is model.groups[1]


def test_the_cycle_can_end_below_lrmin():
    """airbench's 0.2 -> 1 -> 0.07: LRMIN = LRMAX / 5, the end LRMIN / (0.2 / 0.07)."""
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, lr=1.0)
    shape = dict(lr_min=0.3, lr_max=1.5, total_steps=20, peak_fraction=0.23,
                 final_divisor=0.2 / 0.07)  # fmt: skip
    scheduler = one_cycle_schedule(optimizer, **shape)
    for step in range(20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(one_cycle_lr(step, **shape))
        optimizer.step()
        scheduler.step()
    assert one_cycle_lr(19, **shape) == pytest.approx(1.5 * 0.07)
    with pytest.raises(ConfigError, match="lr-final-divisor must be a finite number >= 1"):
        TrainConfig.from_dict({"lr_final_divisor": 0.5})


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory, "airbench", SLICE, DATA)


def test_a_run_of_the_recipe_records_its_network(whole):
    record = json.loads((whole / "config.json").read_text())
    assert record["model"] == "AirbenchNet" and record["config"]["model"] == "airbench"
    assert record["config"]["width"] == WIDTH
    weights = torch.load(whole / "model.pt", weights_only=True)
    assert torch.equal(weights["groups.0.2.weight"], torch.ones(WIDTH))  # frozen BN scales
    from fastcifar import load_run

    assert isinstance(load_run(whole).model, AirbenchNet)  # read back without being told


def test_a_stopped_run_of_the_recipe_resumes_bit_identical(whole, tmp_path, monkeypatch):
    out = tmp_path / "run"
    signal_after(monkeypatch, 4, signal.SIGTERM)  # inside epoch 2
    assert exit_code([*SLICE, "--out", str(out)], DATA) == 143
    stopped = torch.load(out / "checkpoint.pt", weights_only=True)["parts"]
    assert stopped["whitening_bias"] == {"epochs": 1, "frozen": True}
    monkeypatch.setattr(engine, "training_step", ORIGINAL_STEP)
    assert exit_code(["--resume", str(out)], DATA) == 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    uninterrupted = torch.load(whole / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)


def test_only_a_first_convolution_with_a_bias_has_a_whitening_bias(tmp_path):
    from tests.runs import TWO_EPOCHS

    argv = [*TWO_EPOCHS, "--whitening-bias-epochs", "1", "--out", str(tmp_path / "run")]
    assert exit_code(argv, DATA) == 2  # the ResNet9's first convolution has none


def test_the_whitening_bias_trains_its_epochs_then_stays():
    from fastcifar.training.whitening_bias import WhiteningBias

    model = AirbenchNet()
    part = WhiteningBias(model, epochs=3)
    for epoch in (1, 2):
        part.end_of_epoch(epoch)
        assert model.whiten.bias.requires_grad
    part.end_of_epoch(3)
    assert not model.whiten.bias.requires_grad and part.state_dict()["frozen"]
    again = WhiteningBias(model, epochs=3)  # the next run of a plan trains it again
    assert model.whiten.bias.requires_grad
    again.load_state_dict({"epochs": 3, "frozen": True})  # a resume past epoch 3
    assert not model.whiten.bias.requires_grad


def test_the_whitening_bias_can_train_at_a_multiple_of_the_lr_with_the_same_decay_per_step():
    from fastcifar.engine.model import ResNet9
    from fastcifar.engine.schedule import ParameterGroups

    model = AirbenchNet()
    groups = ParameterGroups(bn_bias_lr_scale=8.0, whitening_bias_lr_scale=4.0).groups(model, 0.01)
    (own,) = [g for g in groups if any(p is model.whiten.bias for p in g["params"])]
    assert own["params"] == [model.whiten.bias] and own["lr_scale"] == 4.0
    assert own["weight_decay"] == pytest.approx(0.01 / 4.0)
    plain = ParameterGroups(bn_bias_lr_scale=8.0).groups(model, 0.01)
    (other,) = [g for g in plain if any(p is model.whiten.bias for p in g["params"])]
    assert other["lr_scale"] == 1.0 and len(other["params"]) > 1  # with the other biases
    with pytest.raises(ConfigError, match="--whitening-bias-lr-scale needs a network whose"):
        ParameterGroups(whitening_bias_lr_scale=2.0).groups(ResNet9(), 0.01)
    muon = TrainConfig.from_dict({"recipe": "airbench-muon"})
    assert muon.whitening_bias_lr_scale == muon.bn_bias_lr_scale == pytest.approx(60.75, rel=1e-3)


def test_a_run_recorded_before_its_recipe_changed_reads_back_as_it_ran():
    from fastcifar.records.config_record import ConfigRecord, RunKind

    recorded = TrainConfig.from_dict({"recipe": "airbench"}).to_dict()
    del recorded["pad_mode"]  # written before the setting existed: its padding was the mean
    config = ConfigRecord(RunKind.RUN, recorded).train_config
    assert config.pad_mode == "mean" and config.recipe == "airbench" and config.epochs == 10
    assert TrainConfig.from_dict({"recipe": "airbench"}).pad_mode == "reflect"  # a new run
