"""What the third first-hour pass found, each fixed: a config dict refuses keys it does not
know, the range test refuses a sweep whose loss never fell, a short EMA run is not at chance,
and a plan in which every run diverged is diverged, as a single run would be."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

import fastcifar
from fastcifar.engine.lr_range_test import lr_range_test
from fastcifar.engine.step import StepContext
from fastcifar.errors import ConfigError, RangeTestError
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, WIDTH, exit_code

DATA = synthetic_cifar(64, 32)


def test_a_typo_in_a_config_dict_is_refused_with_a_suggestion():
    with pytest.raises(
        ConfigError, match="config: unknown setting 'epochz'; did you mean 'epochs'"
    ):
        fastcifar.fit(config={"epochz": 3})
    with pytest.raises(ConfigError, match="'quiet' is a run option, not a training setting"):
        fastcifar.fit(config={"quiet": True, "epochs": 1})


def test_a_sweep_whose_loss_never_fell_is_refused_not_read_at_its_start():
    weight = nn.Parameter(torch.zeros(1))
    calls = []

    def rising(images, labels):  # the loss only grows as the LR does, slowly: no blow-up
        calls.append(1)
        return weight.sum() * 0 + 1.0 + 0.01 * len(calls), torch.tensor(0)

    ctx = StepContext(rising, torch.optim.SGD([weight], lr=0.1))
    batches = [(torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64))]
    with pytest.raises(RangeTestError, match="found no valley: the smoothed loss was lowest at"):
        lr_range_test(ctx, batches, restore=nn.Linear(1, 1), steps=20)


def test_every_run_of_a_plan_diverging_exits_as_diverged(tmp_path, capsys):
    out = tmp_path / "plan"
    argv = [*TWO_EPOCHS, "--lr-max", "1e6", "--seeds", "2", "--out", str(out)]
    assert exit_code(argv, DATA) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["reason"] == "diverged: every run of the plan diverged (seeds [0, 1])"
    assert summary["groups"][0]["diverged_seeds"] == [0, 1]
    capsys.readouterr()
    assert exit_code(["--resume", str(out)], DATA) == 2
    assert "diverged (diverged: every run" in capsys.readouterr().err


# --- the README ----------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_is_short_and_names_no_internal_tracking_or_lent_machine():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert not re.search(r"\bissues? \d+|#\d+\b|gpu-stage|in three parts", text, re.IGNORECASE)
    assert "GPU: not measured yet" in text


def test_the_readmes_first_five_minutes_run_as_written_on_a_few_images(tmp_path, capsys):
    text = README.read_text()
    section = text[text.index("## The first five minutes") :]
    (slice_args,) = re.findall(r'^make train ARGS="([^"]+)"$', section, re.MULTILINE)[:1]
    argv = shlex.split(slice_args)
    smaller = {"--train-subset": "64", "--batch-size": "16", "--test-subset": "32"}
    argv = [smaller.get(before, value) for before, value in zip(["", *argv], argv, strict=False)]
    out = tmp_path / "slice"
    assert exit_code([*argv, "--device", "cpu", "--out", str(out)], DATA) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["lr_source"]["lr_max"] != "given"
    printed = capsys.readouterr().out
    assert re.search(r"^test accuracy \d+\.\d\d% \| training .* \| run folder: ", printed, re.M)
    # Its next commands, on the folder it wrote (the data of one's own passed again).
    assert fastcifar.evaluate(out, tta=True, data=DATA).tta_accuracy is not None


# --- signatures ----------------------------------------------------------------------------------


def test_the_python_functions_show_every_keyword():
    import inspect
    import pydoc

    fit = inspect.signature(fastcifar.fit).parameters
    assert {"epochs", "lr_max", "recipe", "ghost_bn", "out", "max_time", "quiet"} <= set(fit)
    assert fit["epochs"].default == 24 and fit["epochs"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in fit.values())
    assert "label_smoothing (default 0.0)" in fastcifar.fit.__doc__
    found = inspect.signature(fastcifar.find_lr).parameters
    assert "range_test_steps" in found and "test_subset" in found  # fit's settings, accepted
    assert "time_budget" in inspect.signature(fastcifar.estimate).parameters
    for function, keywords in ((fastcifar.evaluate, ("tta", "test_subset", "tta_translate")),
                               (fastcifar.predict, ("top", "resize")),
                               (fastcifar.export, ("format", "out"))):  # fmt: skip
        assert set(keywords) <= set(inspect.signature(function).parameters)
        shown = pydoc.render_doc(function, renderer=pydoc.plaintext)
        assert all(f"{keyword}:" in shown for keyword in keywords), shown[:400]


# --- evaluate and predict check what their commands check ---------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from tests.runs import finished_run

    return finished_run(tmp_path_factory, "checks", TWO_EPOCHS, DATA)


def test_a_run_at_another_width_loads_with_its_network_passed_again(small_run):
    """The width is the run's: its network, given to load_run, loads its weights."""
    network = fastcifar.ResNet9(width=WIDTH)
    loaded = fastcifar.load_run(small_run, model=network)
    assert loaded.model.fc.in_features == 8 * WIDTH
    assert torch.equal(loaded.model.fc.weight, fastcifar.load_run(small_run).model.fc.weight)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: fastcifar.evaluate(run, test_subset=-1, data=DATA),
         "test_subset must be a positive integer or 'all', got -1"),
        (lambda run: fastcifar.evaluate(run, test_subet=10, data=DATA),
         "evaluate() has no setting 'test_subet'; did you mean 'test_subset'?"),
        (lambda run: fastcifar.evaluate(run, tta="yes", data=DATA),
         "tta must be True or False, got 'yes'"),
        (lambda run: fastcifar.evaluate(run, batch_size=0, data=DATA),
         "batch_size must be a positive integer, got 0"),
        (lambda run: fastcifar.predict(run, DATA.test.images[:2], top=0),
         "top must be a positive integer, got 0"),
        (lambda run: fastcifar.predict(run, DATA.test.images[:2], resize="zoom"),
         "resize must be one of squash, crop, got 'zoom'"),
        (lambda run: fastcifar.export(run, fromat="onnx"),
         "export() has no setting 'fromat'; did you mean 'format'?"),
        (lambda run: fastcifar.export(run, test_subset=-1, data=DATA),
         "test_subset must be a positive integer or 'all', got -1"),
        (lambda run: fastcifar.export(run, test_subset=5.5, data=DATA),
         "test_subset must be a positive integer or 'all', got 5.5"),
        (lambda run: fastcifar.export(run, allow_incomplete="no", data=DATA),
         "allow_incomplete must be True or False, got 'no'"),
        (lambda run: fastcifar.evaluate(run, data_dir=5),
         "data_dir must be a folder's path, got 5"),
        (lambda run: fastcifar.export(run, data_dir=3),
         "data_dir must be a folder's path, got 3"),
    ],
)  # fmt: skip
def test_evaluate_and_predict_refuse_what_their_commands_refuse(small_run, call, message):
    with pytest.raises(ConfigError) as error:
        call(small_run)
    assert str(error.value) == message


# --- one message style: flags on the command line, keywords in Python ---------------------------


@pytest.mark.parametrize(
    ("flags", "keywords", "command_says", "python_says"),
    [
        (["--lr-min", "0.5", "--lr-max", "0.1"], {"lr_min": 0.5, "lr_max": 0.1},
         "--lr-min (0.5) must not exceed --lr-max (0.1)",
         "lr_min (0.5) must not exceed lr_max (0.1)"),
        (["--train-subset", "100", "--batch-size", "512"], {"train_subset": 100},
         "--train-subset (100) must be at least --batch-size (512)",
         "train_subset (100) must be at least batch_size (512)"),
        (["--ema", "1.5"], {"ema": 1.5}, "--ema must lie in (0, 1)", "ema must lie in (0, 1)"),
        (["--start-lr", "1", "--end-lr", "0.1"],
         {"range_test_start_lr": 1.0, "range_test_end_lr": 0.1},
         "0 < --range-test-start-lr < --range-test-end-lr",
         "0 < range_test_start_lr < range_test_end_lr"),
        (["--no-flip", "--tta"], {"flip": "none", "tta": True},
         "(--flip none) never saw: add --no-tta", "(flip='none') never saw: add tta=False"),
    ],
)  # fmt: skip
def test_a_refusal_names_settings_as_its_caller_wrote_them(
    flags, keywords, command_says, python_says, tmp_path, capsys
):
    assert exit_code([*flags, "--out", str(tmp_path / "cli")]) == 2
    error = capsys.readouterr().err
    assert command_says in error and error.count("\n") == 1, error
    with pytest.raises(ConfigError) as refused:
        fastcifar.fit(out=str(tmp_path / "python"), **keywords)
    assert python_says in str(refused.value)
    assert "--" not in str(refused.value)


def test_a_value_of_the_wrong_type_is_shown_as_given():
    with pytest.raises(ConfigError, match=r"lr_max must be a finite positive number, got '0\.1'"):
        fastcifar.fit(lr_max="0.1")


def test_a_missing_gpu_is_named_in_the_callers_words(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"CUDA is not available: use device='cpu'$"):
        fastcifar.fit(device="cuda", epochs=2, train_subset=48, batch_size=16, lr_max=0.1,
                      data=DATA, out=str(tmp_path / "python"))  # fmt: skip
    argv = [*TWO_EPOCHS[:-2], "--device", "cuda", "--out", str(tmp_path / "c")]
    assert exit_code(argv, DATA) == 2
    assert capsys.readouterr().err.endswith("CUDA is not available: use --device cpu\n")


def test_a_run_without_its_config_json_is_refused_not_read_as_cifar(small_run, tmp_path):
    import shutil

    from fastcifar.errors import RunFolderError

    for damage in ("missing", "a directory"):
        copy = tmp_path / damage.replace(" ", "-")
        shutil.copytree(small_run, copy)
        (copy / "config.json").unlink()
        if damage == "a directory":
            (copy / "config.json").mkdir()
        with pytest.raises(RunFolderError, match=r"config\.json is missing or not a file"):
            fastcifar.evaluate(copy, data=DATA)


def test_an_unfinished_run_is_refused_with_one_resume_call(tmp_path, monkeypatch):
    from fastcifar.errors import LimitReached, RunFolderError

    out = tmp_path / "stopped"
    with pytest.raises(LimitReached):
        fastcifar.fit(data=DATA, out=str(out), max_steps=2, epochs=2, train_subset=48,
                      batch_size=16, lr_max=0.05, plots=False, device="cpu")  # fmt: skip
    with pytest.raises(RunFolderError) as refused:
        fastcifar.evaluate(out, data=DATA)
    message = str(refused.value)
    assert message.count("resume") == 2 and message.count("fastcifar.fit(resume=") == 1, message
    assert "--" not in message and "allow_incomplete=True" in message


def test_a_resume_of_a_folder_in_use_is_refused_before_it_says_anything(tmp_path, capsys):
    from fastcifar.records.run_folder import RunFolder

    out = tmp_path / "run"
    assert exit_code([*TWO_EPOCHS, "--max-steps", "1", "--out", str(out)], DATA) == 0
    (out / "checkpoint.pt").unlink()  # as if killed before its first checkpoint
    capsys.readouterr()
    held = RunFolder.reopen(out)  # another process writes it
    try:
        assert exit_code(["--resume", str(out)], DATA) == 2
    finally:
        held.release()
    captured = capsys.readouterr()
    assert "is in use by another fastcifar process" in captured.err
    assert "starts over" not in captured.out + captured.err
