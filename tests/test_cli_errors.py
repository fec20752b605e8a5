"""Bad values on the command line, or in the config, give one clear error line and exit status 2,
before any work is done (no folder created, no data loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fastcifar
from fastcifar import evaluate, find_lr, predict, train
from fastcifar.records.config import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, command) -> str:
    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["--batch-size", "many"], "--batch-size: must be an integer, got 'many'"),
        (["--lr-max", "-0.1"], "--lr-max: must be a finite positive number, got -0.1"),
        (["--lr-max", "inf"], "--lr-max: must be a finite positive number, got inf"),
        (["--lr-max", "nan"], "--lr-max: must be a finite positive number, got nan"),
        (["--lr-min", "1e400"], "--lr-min: must be a finite positive number, got 1e400"),
        (["--epochs", "0"], "--epochs: must be a positive integer, got 0"),
        (["--epochs", "100000000"], "epochs must be at most 10,000, got 100,000,000"),
        (["--batch-size", "100000"], "--batch-size must be at most 50,000, got 100,000"),
        (["--seed", "-1"], "--seed: must be an integer from 0 to 4294967295, got -1"),
        (["--loader", "pillow"], "--loader: invalid choice: 'pillow'"),
        (["--device", "mps"], "unknown device 'mps': fastcifar runs on cpu, cuda or cuda:N"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", ""], "unknown device ''"),
        (["--device", "cuda:abc"], "unknown device 'cuda:abc'"),
        (["--compile-mode", "fastest"], "--compile-mode: invalid choice: 'fastest'"),
        (
            ["--resume", "x", "--epochs", "3"],
            "--resume continues with the run's recorded config; drop --epochs",
        ),
    ],
)
def test_bad_flag_values_are_one_clear_line(capsys, argv, message, tmp_path):
    error = one_line_error(capsys, lambda: train.main([*argv, "--out", str(tmp_path / "run")]))
    assert message in error
    assert not (tmp_path / "run").exists()


def test_lr_min_above_lr_max_is_refused_before_any_work(capsys, tmp_path):
    error = one_line_error(
        capsys,
        lambda: train.main(
            ["--lr-max", "0.1", "--lr-min", "0.2", "--data-dir", str(tmp_path / "none")]
        ),
    )
    assert error == "error: --lr-min (0.2) must not exceed --lr-max (0.1)\n"
    assert not (tmp_path / "none").exists()


def test_every_lr_of_a_sweep_is_checked(capsys):
    error = one_line_error(capsys, lambda: train.main(["--lr-max", "0.4,0.01", "--lr-min", "0.05"]))
    assert "--lr-min (0.05) must not exceed --lr-max (0.01)" in error


def test_find_lr_rejects_a_bad_sweep(capsys):
    error = one_line_error(capsys, lambda: find_lr.main(["--start-lr", "1", "--end-lr", "0.5"]))
    assert "0 < --range-test-start-lr < --range-test-end-lr" in error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loader": "torchvision"}, "unknown loader 'torchvision'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr_max": -1.0}, "lr_max must be a finite positive number"),
        ({"lr_max": float("inf")}, "lr_max must be a finite positive number"),
        ({"lr_max": 0.1, "lr_min": 0.5}, "must not exceed lr_max"),
        ({"lr_min": 0.01}, "lr_min needs lr_max"),
        ({"train_subset": 100}, "must be at least batch_size"),
        ({"compile_mode": "fastest"}, "unknown compile mode 'fastest'"),
        ({"peak_fraction": 1.5}, "peak_fraction must lie in"),
        ({"seed": 2**40}, "seed must be an integer from 0 to"),
        ({"device": "mps"}, "unknown device 'mps'"),
        ({"checkpoint_every": 0}, "checkpoint_every must be a positive integer"),
        ({"epochs": "24"}, "epochs must be a positive integer, got '24'"),
        ({"range_test": False}, r"range_test=False needs lr_max"),
        ({"lr_max": (0.1, 0.2, 0.1)}, "lr_max names one LR twice"),
    ],
)
def test_config_rejects_values_that_cannot_work(values, message):
    from fastcifar.system.caller import called_from_python

    with called_from_python(data=False, model=False), pytest.raises(ConfigError, match=message):
        TrainConfig(**values)  # as fit builds it: the messages name keywords


def test_config_round_trips_through_its_recorded_form():
    config = TrainConfig(epochs=3, lr_max=0.2, amp=True, test_subset=100)
    assert TrainConfig.from_dict({**config.to_dict(), "removed_in_future": 1}) == config


def test_a_recorded_config_of_the_wrong_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="must be a table of settings"):
        TrainConfig.from_dict(["epochs", 3])


def test_evaluate_and_predict_refuse_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert "is not a run folder" in one_line_error(capsys, lambda: evaluate.main([str(tmp_path)]))
    error = one_line_error(capsys, lambda: predict.main([str(tmp_path), str(tmp_path / "cat.png")]))
    assert "cat.png: no such file" in error
    assert "holds no image files" in one_line_error(  # a folder stands for its images
        capsys, lambda: predict.main([str(tmp_path), str(tmp_path)])
    )


def test_evaluate_names_the_tta_settings_as_its_caller_writes_them(capsys, tmp_path):
    """The command names flags; Python names keywords (checked before the run is read)."""
    error = one_line_error(capsys, lambda: evaluate.main([str(tmp_path), "--tta-translate"]))
    assert "--tta-translate adds shifted copies to the flip TTA: it needs --tta too" in error
    with pytest.raises(ConfigError, match=r"^tta_translate adds .*: it needs tta too$"):
        fastcifar.evaluate(tmp_path, tta_translate=True)


def test_evaluate_refuses_a_batch_size_of_zero(capsys, tmp_path):
    error = one_line_error(capsys, lambda: evaluate.main([str(tmp_path), "--batch-size", "0"]))
    assert "--batch-size: must be a positive integer, got 0" in error


@pytest.mark.parametrize(
    "module", ["train", "find_lr", "evaluate", "predict", "summary", "explain"]
)
def test_help_never_imports_torch(module):
    """--help answers without importing torch (which takes seconds)."""
    code = (
        f"import sys\nfrom fastcifar import {module}\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        f"try:\n    {module}.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported by --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    sections = [
        line for line in result.stdout.splitlines() if line[:1].isalpha() and line[-1:] == ":"
    ]
    assert len(sections) == len(set(sections)), sections  # each group of flags once


@pytest.mark.parametrize("key", ["data_dir", "beton_dir"])
def test_a_path_setting_that_is_no_path_is_one_line(capsys, tmp_path, key):
    config = tmp_path / "run.toml"
    config.write_text(f"{key} = 5\n")
    error = one_line_error(capsys, lambda: train.main(["--print-config", "--config", str(config)]))
    assert f"--{key.replace('_', '-')} must be a folder's path, got 5" in error
    with pytest.raises(ConfigError, match=f"^{key} must be a folder's path, got 5$"):
        fastcifar.estimate(**{key: 5})


def test_a_run_or_folder_named_by_a_number_is_a_config_error(tmp_path):
    """From Python, a number where a folder's path belongs: one ConfigError, not a TypeError."""
    import numpy as np
    from PIL import Image

    cat = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(cat)
    for call, message in [
        (lambda: fastcifar.fit(out=5), "out must be a folder's path, got 5"),
        (lambda: fastcifar.fit(resume=5), "resume must be a folder's path, got 5"),
        (lambda: fastcifar.evaluate(5), "a run is named by its folder's path, got 5"),
        (lambda: fastcifar.predict(5, [cat]), "a run is named by its folder's path, got 5"),
        (lambda: fastcifar.load_run(5), "a run is named by its folder's path, got 5"),
    ]:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            call()
