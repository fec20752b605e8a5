"""Bad values on the command line, or in the config, give one clear error line and exit status 2."""

from __future__ import annotations

import pytest

from fastcifar import evaluate, find_lr, predict, train
from fastcifar.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["--batch-size", "many"], "--batch-size: must be an integer, got 'many'"),
        (["--lr-max", "-0.1"], "--lr-max: must be a positive number, got -0.1"),
        (["--epochs", "0"], "--epochs: must be a positive integer, got 0"),
        (["--loader", "pillow"], "--loader: invalid choice: 'pillow'"),
    ],
)
def test_bad_flag_values_are_one_clear_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1


def test_lr_min_above_lr_max_is_refused_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--lr-max", "0.1", "--lr-min", "0.2", "--data-dir", str(tmp_path / "none")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: lr_min (0.2) must not exceed lr_max (0.1)\n"
    assert not (tmp_path / "none").exists()


def test_find_lr_rejects_a_bad_sweep(capsys):
    with pytest.raises(SystemExit) as exit_info:
        find_lr.main(["--start-lr", "1", "--end-lr", "0.5"])
    assert exit_info.value.code == 2
    assert "range_test_start_lr < range_test_end_lr" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loader": "torchvision"}, "unknown loader 'torchvision'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr_max": -1.0}, "lr_max must be positive"),
        ({"lr_max": 0.1, "lr_min": 0.5}, "must not exceed lr_max"),
        ({"lr_min": 0.01}, "lr_min needs lr_max"),
        ({"train_subset": 100}, "must be at least batch_size"),
        ({"compile_mode": "fastest"}, "unknown compile mode 'fastest'"),
        ({"peak_fraction": 1.5}, "peak_fraction must lie in"),
    ],
)
def test_config_rejects_values_that_cannot_work(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_config_round_trips_through_its_recorded_form():
    config = TrainConfig(epochs=3, lr_max=0.2, amp=True)
    assert TrainConfig.from_dict({**config.to_dict(), "removed_in_future": 1}) == config


def test_evaluate_and_predict_refuse_a_folder_that_is_not_a_run(capsys, tmp_path):
    for command in (
        lambda: evaluate.main([str(tmp_path)]),
        lambda: predict.main([str(tmp_path), str(tmp_path / "cat.png")]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            command()
        assert exit_info.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert "is not a finished run folder" in errors[0]
    assert "cat.png: no such file" in errors[1]
