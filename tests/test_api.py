"""fastcifar from Python: fit, find_lr, estimate and load_run with the command's settings and run
folders; data and models of one's own (any class count, no download); the GPU loader in a loop
of one's own; TOML configs (the import rules: test_layers)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastcifar
from fastcifar.data.source import default_data_dir
from fastcifar.engine import step as engine
from fastcifar.errors import ConfigError, DataError, Interrupted, LimitReached, RunFolderError
from fastcifar.records.config import TrainConfig
from fastcifar.records.config_file import read_toml
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.conftest import real_cifar_dir
from tests.runs import WIDTH, exit_code, signal_after

ROOT = Path(__file__).resolve().parents[1]
DATA = synthetic_cifar(64, 32)
QUICK = dict(epochs=1, train_subset=48, batch_size=16, test_subset=32, device="cpu", plots=False,
             width=WIDTH)  # fmt: skip
OWN_MODEL = dict(QUICK, width=64)  # a model of one's own has its own width


class TinyNet(nn.Module):
    """Three convolutions and a classifier: a model of one's own."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class NeedsDepth(TinyNet):
    """A constructor that needs more than the class count."""

    def __init__(self, depth: int, num_classes: int = 4) -> None:
        super().__init__(num_classes)


class OfWidth(nn.Module):
    """One class, many networks: its width is an argument."""

    def __init__(self, width: int, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveMaxPool2d(1), nn.Flatten())  # fmt: skip
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_fit_returns_the_result_and_writes_the_run_folder(tmp_path):
    result = fastcifar.fit(**QUICK, lr_max=0.4, lr_min=0.04, data=DATA, out=str(tmp_path / "r"))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert result.status == "complete" and result.folder == tmp_path / "r"
    assert result.accuracy == summary["final_test_accuracy"] and result.tta_accuracy is None
    assert (result.lr_min, result.lr_max) == (0.04, 0.4)
    assert result.train_seconds > 0 and result.wall_seconds >= result.train_seconds
    assert not result.model.training
    saved = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in result.model.state_dict().items())


def test_the_one_line_fit_works_as_a_new_user_types_it(tmp_path):
    if real_cifar_dir() is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10: a new user's first line reads it")
    line = (
        "import fastcifar; r = fastcifar.fit(epochs=1, train_subset=192, test_subset=100, "
        "batch_size=64, device='cpu', lr_max=0.4, lr_min=0.04, plots=False); print(r.accuracy)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", line], cwd=tmp_path,
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(result.stdout.strip().splitlines()[-1])
    # An eager run without plots loads neither matplotlib nor the inductor: 1.4 s of its
    # start-up on a 2-core CPU.
    imported = {row.rsplit("|", 1)[-1].strip() for row in result.stderr.splitlines()}
    assert not imported & {"matplotlib", "torch._inductor.compile_fx"}
    (folder,) = (tmp_path / "runs").iterdir()
    assert accuracy == json.loads((folder / "summary.json").read_text())["final_test_accuracy"]


def four_classes():
    return synthetic_cifar(96, 40, classes=4)


def test_an_aggregate_tells_one_class_built_at_two_widths_apart(tmp_path, capsys):
    """Both are tests.test_api.OfWidth: their parameters' shapes, recorded as a digest, are
    what keeps a 4-wide and an 8-wide network out of one mean +- std."""
    from fastcifar import aggregate

    settings = dict(OWN_MODEL, train_subset=48, test_subset=40, lr_max=0.05, data=four_classes())
    for name, width, seed in (("a", 4, 0), ("b", 4, 1), ("c", 8, 1)):
        fastcifar.fit(**settings, seed=seed, model=OfWidth(width), out=str(tmp_path / name))
    records = {n: json.loads((tmp_path / n / "config.json").read_text()) for n in "abc"}
    assert {r["model"] for r in records.values()} == {"tests.test_api.OfWidth"}
    digests = [records[n]["architecture"] for n in "abc"]
    assert digests[0] == digests[1] != digests[2] and re.fullmatch("[0-9a-f]{16}", digests[2])
    aggregate.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")])
    together = json.loads((tmp_path / "ab" / "config.json").read_text())
    assert together["architecture"] == digests[0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        aggregate.main([str(tmp_path / "a"), str(tmp_path / "c")])
    refused = (f"{tmp_path / 'c'} differs from {tmp_path / 'a'} in model's parameter shapes "
               f"(digest {digests[2]}, not {digests[0]}): an aggregate takes")  # fmt: skip
    assert refused in capsys.readouterr().err
    # A folder recorded before the digest, named first, does not wave the two widths through.
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "b", old)
    (old / "config.json").write_text(json.dumps({**records["b"], "architecture": None}))
    with pytest.raises(SystemExit):
        aggregate.main([str(old), str(tmp_path / "a"), str(tmp_path / "c")])
    assert refused in capsys.readouterr().err


def test_the_architecture_digest_takes_a_modules_extra_state():
    """A module of one's own may keep extra state that is no tensor: digested by its type."""
    from fastcifar.engine.model import architecture_of

    class WithExtraState(OfWidth):
        def get_extra_state(self) -> dict:
            return {"version": 2}

        def set_extra_state(self, state: dict) -> None:
            self.version = state["version"]

    digest = architecture_of(WithExtraState(4))
    assert re.fullmatch("[0-9a-f]{16}", digest) and digest != architecture_of(OfWidth(4))
    assert digest == architecture_of(WithExtraState(4)) != architecture_of(WithExtraState(8))


def stopped_in_epoch_2(monkeypatch, out: Path, **extra) -> str:
    """A 2-epoch fit on four_classes() interrupted at its 8th step; its folder."""
    settings = dict(QUICK, epochs=2, train_subset=96, test_subset=40, lr_max=0.05, **extra)
    signal_after(monkeypatch, 8)
    with pytest.raises(Interrupted):
        fastcifar.fit(**settings, data=four_classes(), out=str(out))
    return str(out)


def test_a_model_of_ones_own_on_four_classes_trains_and_resumes_bit_identically(
    tmp_path, monkeypatch
):
    settings = dict(OWN_MODEL, epochs=2, train_subset=96, test_subset=40, lr_max=0.05)
    whole = fastcifar.fit(**settings, model=TinyNet, data=four_classes(), out=str(tmp_path / "a"))
    assert whole.summary.class_names == ["0", "1", "2", "3"]
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    assert record["model"] == "tests.test_api.TinyNet" and record["data"]["source"] == "arrays"
    original = signal_after(monkeypatch, 8)  # inside epoch 2 (6 steps an epoch)
    with pytest.raises(Interrupted):
        fastcifar.fit(**settings, model=TinyNet, data=four_classes(), out=str(tmp_path / "b"))
    monkeypatch.setattr(engine, "training_step", original)
    with pytest.raises(ConfigError, match=r"resume it from Python with fastcifar\.fit"):
        fastcifar.fit(resume=str(tmp_path / "b"), data=four_classes())  # the model is missing
    resumed = fastcifar.fit(resume=str(tmp_path / "b"), model=TinyNet, data=four_classes())
    assert resumed.summary.resumed
    ours, theirs = resumed.model.state_dict(), whole.model.state_dict()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    with pytest.raises(ConfigError, match=r"^model NeedsDepth needs depth, which fastcifar"):
        fastcifar.load_run(tmp_path / "b", model=NeedsDepth)
    loaded = fastcifar.load_run(tmp_path / "b", model=TinyNet)
    assert loaded.class_names == ("0", "1", "2", "3")
    same = fastcifar.evaluate(loaded, data=four_classes())
    other = fastcifar.evaluate(loaded, data=synthetic_cifar(96, 40, seed=1, classes=4))
    assert "SHA-256" not in same.which  # other images are said to be other, and recorded so
    assert (same.to_dict()["other_images"], other.to_dict()["other_images"]) == (False, True)
    assert other.which.endswith("(not the images the run was trained on: their SHA-256 differs "
                                "from its record)")  # fmt: skip
    probabilities = loaded.predict_proba(four_classes().test.images[:5])
    assert probabilities.shape == (5, 4) and torch.allclose(probabilities.sum(1), torch.ones(5))
    one = four_classes().test.images[0]
    assert torch.equal(loaded.predict_proba(one), loaded.predict_proba(one[None]))  # N = 1
    assert loaded.predict_proba(torch.from_numpy(one).permute(2, 0, 1)).shape == (1, 4)
    with pytest.raises(DataError) as refused:
        loaded.predict_proba(np.zeros((32, 32), np.uint8))
    message = str(refused.value)
    assert message.startswith("images must be (N, 32, 32, 3)") and "images images" not in message
    assert "or one image, (32, 32, 3)" in message


def test_a_width_with_a_model_of_ones_own_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ConfigError) as refused:
        fastcifar.fit(**QUICK, lr_max=0.05, model=TinyNet, data=four_classes(), out=str(out))
    assert str(refused.value) == (
        f"width {WIDTH} sets the channels of the named networks; a model of one's own sets its "
        "own: leave width at 64"
    )
    assert not out.exists()


class NoParameters(nn.Module):
    """Logits straight from the pixels: nothing for an optimizer to train."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()

    def forward(self, images):
        return images.flatten(1)[:, :4]


def test_a_model_class_that_needs_more_than_the_class_count_is_refused_before_a_run(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^model NeedsDepth needs depth, which fastcifar"):
        fastcifar.fit(**OWN_MODEL, lr_max=0.05, model=NeedsDepth, data=four_classes(),
                      out=str(out))  # fmt: skip
    assert not out.exists()


def test_a_model_with_nothing_to_train_is_one_config_error(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"^the model has no trainable parameters"):
        fastcifar.fit(**OWN_MODEL, lr_max=0.05, model=NoParameters, data=four_classes(),
                      out=str(out))  # fmt: skip
    with pytest.raises(ConfigError, match=r"^the model has no trainable parameters"):
        fastcifar.estimate(**OWN_MODEL, lr_max=0.05, model=NoParameters, data=four_classes())


def test_data_given_and_a_data_set_named_too_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "r"
    for also in (
        {"dataset": "cifar100"},
        {"dataset": "cifar10"},  # the default, named: still a second source
        {"data_dir": str(tmp_path)},
        {"config": {"dataset": "cifar100"}},
        {"config": {"data_dir": str(tmp_path)}},
    ):
        with pytest.raises(
            ConfigError, match=r"^data= gives the data itself, and (dataset|data_dir)"
        ):
            fastcifar.fit(**QUICK, lr_max=0.05, data=four_classes(), out=str(out), **also)
    assert not out.exists()


def test_resuming_on_other_data_is_refused(tmp_path, monkeypatch):
    run = stopped_in_epoch_2(monkeypatch, tmp_path / "b")
    with pytest.raises(DataError, match="trained on other data"):
        fastcifar.fit(resume=run, data=synthetic_cifar(96, 40, seed=9, classes=4))


def test_a_resume_with_data_or_a_model_the_run_did_not_have_is_refused(tmp_path, monkeypatch):
    run = stopped_in_epoch_2(monkeypatch, tmp_path / "r")
    with pytest.raises(ConfigError, match="trained the recipe's ResNet9: resume it without model="):
        fastcifar.fit(resume=run, data=four_classes(), model=TinyNet)
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    record["data"].update(source="cifar10", folder="/data/cifar10")  # as a CIFAR-10 run has it
    (tmp_path / "r" / "config.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="CIFAR-10 from its data folder: resume it without data="):
        fastcifar.fit(resume=run, data=four_classes())


def test_seeds_from_python_return_the_aggregate_and_every_run(tmp_path):
    result = fastcifar.fit(**QUICK, lr_max=0.05, seeds=2, tta=True, data=DATA, out=str(tmp_path))
    (group,) = result.groups
    assert [run.summary.config["seed"] for run in result.runs] == [0, 1]
    assert result.accuracy == group["accuracy"]["mean"]
    assert result.tta_accuracy == group["accuracy_tta"]["mean"]
    assert not result.runs[1].model.training  # read back from its folder


def test_find_lr_and_estimate_from_python(tmp_path):
    found = fastcifar.find_lr(**QUICK, range_test_steps=5, data=DATA, out=str(tmp_path / "lr"))
    assert 0 < found.lr_min < found.lr_max and len(found.curve.lrs) == 5
    assert found.folder == tmp_path / "lr" and (found.folder / "lr_range_test.json").is_file()
    with pytest.raises(
        RunFolderError, match=r"holds a run \(status: complete\): choose another out$"
    ):
        fastcifar.find_lr(**QUICK, range_test_steps=5, data=DATA, out=str(tmp_path / "lr"))
    cost = fastcifar.estimate(**QUICK, data=DATA)
    assert cost.seconds_per_step > 0 and cost.total > cost.training > 0
    assert cost.range_test > 0  # no LRMAX given: the range test is part of the cost


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epoch": 2}, "unknown setting 'epoch'; did you mean 'epochs'?"),
        ({"lr_max": [0.1, -1.0]}, "lr_max must be a finite positive number"),
        ({"max_time": 0}, "max_time must be a positive number of seconds"),
    ],
)
def test_bad_settings_from_python_are_one_config_error(values, message):
    with pytest.raises(ConfigError, match=message):
        fastcifar.fit(**values, data=DATA)


def test_settings_from_a_numpy_sweep_are_the_numbers_they_hold():
    from fastcifar.api import make_request

    request = make_request(
        epochs=np.int64(3), amp=np.bool_(False), lr_max=np.linspace(0.1, 0.4, 4)[[0, 3]],
        max_steps=np.int32(7), batch_size=np.int64(32), train_subset=np.int64(64), data=DATA,
    )  # fmt: skip
    config, options = request.config, request.options
    assert (config.batch_size, config.train_subset) == (32, 64)
    assert type(config.batch_size) is int and type(config.train_subset) is int
    assert (config.epochs, config.amp, config.lr_max, options.max_steps) == (
        3,
        False,
        (0.1, 0.4),
        7,
    )
    assert all(type(v) in (int, bool) for v in (config.epochs, config.amp, options.max_steps))
    assert all(type(lr) is float for lr in config.lr_max)
    assert json.loads(json.dumps(config.to_dict()))["lr_max"] == [0.1, 0.4]  # recorded plainly
    assert TrainConfig(lr_max=np.array([0.3])).lr_max == 0.3  # an array of one: that LRMAX
    with pytest.raises(ConfigError, match=r"epochs must be a positive integer, got 0$"):
        fastcifar.fit(epochs=np.int64(0), data=DATA)


@pytest.mark.parametrize(
    ("seeds", "instead"),
    [
        ([0, 1, 2], "for [0, 1, 2] give seed=0 and seeds=3"),
        (np.arange(3, 5), "for [3, 4] give seed=3 and seeds=2"),
        ([2, 1, 0], "for [2, 1, 0] give seed=0 and seeds=3"),
        (
            (1, 5),
            "for seeds apart, train each with its own seed and combine the runs with "
            "python -m fastcifar.aggregate",
        ),
    ],
)
def test_a_list_of_seeds_is_told_how_to_say_it(seeds, instead):
    with pytest.raises(ConfigError) as refused:
        fastcifar.fit(seeds=seeds, data=DATA)
    assert str(refused.value) == f"seeds is how many seeds to train, from seed on: {instead}"


def test_a_list_of_one_lrmax_is_that_lrmax_given(tmp_path):
    cost = fastcifar.estimate(**QUICK, lr_max=[0.05], data=DATA)
    assert cost.range_test == 0
    result = fastcifar.fit(**QUICK, lr_max=(0.05,), data=DATA, out=str(tmp_path / "r"))
    assert result.lr_max == 0.05 and result.summary.lr_source["lr_max"] == "given"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((np.zeros((4, 28, 28, 3), np.uint8), [0] * 4, np.zeros((2, 32, 32, 3), np.uint8), [0, 1]),
         r"train images must be \(N, 32, 32, 3\)"),
        ((np.zeros((4, 32, 32, 3)) + 2.0, [0] * 4, np.zeros((2, 32, 32, 3)), [0, 1]),
         r"floats must lie in \[0, 1\]"),
        ((np.zeros((4, 32, 32, 3), np.uint8), [0] * 3, np.zeros((2, 32, 32, 3), np.uint8), [0, 1]),
         "4 images but 3 labels"),
        ({"train": None}, "needs 'train' and 'test'"),
        ((np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 2, 9], np.zeros((2, 32, 32, 3), np.uint8),
          [9, 10]), "test label.s. 10 never occur in the training split"),
        ((np.zeros((4, 32, 32, 3), np.uint8), [0] * 4, np.zeros((2, 32, 32, 3), np.uint8), [0, 0]),
         "every training label is 0: one class leaves nothing to classify"),
        ((np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 10**6, 1], np.zeros((2, 32, 32, 3), np.uint8),
          [0, 1]), r"1,000,001 classes, and 999,998 classes have no training image \(2, 3, 4, 5, "
         r"6, ...\)"),
        ((np.zeros((4, 32, 32, 3), np.uint8), [1, 2, 3, 1], np.zeros((2, 32, 32, 3), np.uint8),
          [1, 2]), r"4 classes, and 1 class has no training image \(0\): labels must be 0 to K-1, "
         r"each with training images \(labels counted from 1\? subtract 1\)$"),
        ({"train": (np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 2, 3]),
          "test": (np.zeros((2, 32, 32, 3), np.uint8), [0, 1]), "class_names": ["a", "b"]},
         "labels go up to 3 but 2 class name.s. were given"),
        ({"train": (np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 2, 0]),
          "test": (np.zeros((2, 32, 32, 3), np.uint8), [0, 1]), "class_names": "cat"},
         "class_names must be a list of names, got 'cat'"),
        ({"train": (np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 2, 0]),
          "test": (np.zeros((2, 32, 32, 3), np.uint8), [0, 1]), "class_names": ["a", "b", "a"]},
         "class_names names 'a' more than once"),
        ({"train": (np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1]),
          "test": (np.zeros((2, 32, 32, 3), np.uint8), [0, 1]), "class_names": list("abcd")},
         "labels go up to 1 but 4 class name.s. were given: one name per class"),
        ({"train": (np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1]),
          "test": (np.zeros((2, 32, 32, 3), np.uint8), [0, 1]), "class_names": {"a", "b"}},
         "class_names must be a list of names, got"),
    ],
)  # fmt: skip
def test_data_of_ones_own_that_cannot_work_is_one_data_error(data, message):
    with pytest.raises(DataError, match=message):
        fastcifar.fit(**QUICK, data=data)


def test_a_batch_larger_than_the_training_split_is_named_as_the_cause(tmp_path, capsys):
    """Not "0 batches make 0 steps: raise epochs": the batch size is what is wrong, and Python
    is told its keyword, the command line its flag."""
    too_large = {**QUICK, "batch_size": 1000, "train_subset": None}
    for call in (fastcifar.fit, fastcifar.estimate, fastcifar.find_lr):
        with pytest.raises(ConfigError, match=r"^batch_size 1000 is larger than the 96 training"):
            call(**too_large, data=four_classes())
    argv = ["--batch-size", "1000", "--device", "cpu", "--out", str(tmp_path / "r")]
    for command in ([], ["--estimate"]):
        with pytest.raises(SystemExit):
            train_main([*argv, *command], data=four_classes())
        assert "--batch-size 1000 is larger than the 96 training images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fastcifar.find_lr.main(argv, data=four_classes())
    assert "--batch-size 1000 is larger than the 96 training images" in capsys.readouterr().err


def test_tensors_in_nchw_or_floats_are_taken_as_they_come():
    images = torch.rand(48, 3, 32, 32)
    dataset = fastcifar.as_dataset((images, torch.arange(48) % 3, images[:8], torch.arange(8) % 3))
    assert dataset.train.images.shape == (48, 32, 32, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.class_names == ("0", "1", "2") and dataset.normalisation.mean != (125.31,)


def test_the_gpu_loader_serves_a_training_loop_of_ones_own():
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(64) % 10
    loader = fastcifar.CifarTensorLoader.from_arrays(images, labels, batch_size=16, device="cpu")
    model = fastcifar.ResNet9(width=WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    epochs = []
    for _ in range(2):
        served = []
        for batch, targets in loader:
            assert batch.shape == (16, 3, 32, 32)
            assert batch.is_contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(batch), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            served += targets.tolist()
        epochs.append(served)
    assert len(epochs[0]) == 64 and epochs[0] != epochs[1]  # a new seeded order each epoch
    assert sorted(epochs[0]) == sorted(labels.tolist())
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        fastcifar.CifarTensorLoader.from_arrays(images, labels, device="tpu")


def test_print_config_then_config_reproduces_the_run(tmp_path, capsys):
    flags = ["--epochs", "1", "--train-subset", "48", "--batch-size", "16", "--test-subset",
             "32", "--lr-max", "0.05", "--no-plots", "--device", "cpu",
             "--label-smoothing", "0.1", "--width", str(WIDTH)]  # fmt: skip
    train_main([*flags, "--out", str(tmp_path / "flags")], data=DATA)
    capsys.readouterr()
    train_main([*flags, "--print-config"])
    toml = tmp_path / "run.toml"
    toml.write_text(capsys.readouterr().out)
    written = toml.read_text()
    assert "label_smoothing = 0.1" in written and f"\nwidth = {WIDTH}\n" in written
    train_main(["--config", str(toml), "--out", str(tmp_path / "file")], data=DATA)
    first = json.loads((tmp_path / "flags" / "config.json").read_text())
    second = json.loads((tmp_path / "file" / "config.json").read_text())
    assert first == second
    train_main(["--config", str(toml), "--epochs", "2", "--print-config"])  # flags override
    assert "\nepochs = 2\n" in capsys.readouterr().out


def test_print_config_keeps_a_data_folder_given_and_leaves_none_given_to_the_reader(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("FASTCIFAR_DATA", raising=False)
    train_main(["--print-config"])
    text = capsys.readouterr().out
    assert "\n# data_dir = (default)\n" in text  # not this machine's cache folder
    toml = tmp_path / "run.toml"
    toml.write_text(text)
    monkeypatch.setenv("FASTCIFAR_DATA", str(tmp_path / "elsewhere"))  # where it is read
    read_back = TrainConfig.from_dict(read_toml(toml), "the file")
    assert default_data_dir(read_back.data_dir) == tmp_path / "elsewhere"
    monkeypatch.chdir(tmp_path)
    train_main(["--data-dir", "data", "--print-config"])  # relative: made absolute
    assert f"\ndata_dir = {json.dumps(str(tmp_path / 'data'))}\n" in capsys.readouterr().out


def test_a_config_file_with_an_unknown_setting_is_one_line(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text("epoch = 3\n")
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", str(toml)])
    assert exit_info.value.code == 2
    assert "unknown setting 'epoch'; did you mean 'epochs'?" in capsys.readouterr().err


def test_the_public_names_resolve_and_find_lr_is_both_command_and_function():
    for name in fastcifar.__all__:
        assert getattr(fastcifar, name) is not None, name
    assert callable(fastcifar.find_lr) and callable(fastcifar.find_lr.main)
    with pytest.raises(AttributeError):
        fastcifar.no_such_name  # noqa: B018


def test_the_interrupt_of_fit_is_an_exception_not_an_exit(tmp_path, monkeypatch):
    signal_after(monkeypatch, 2, signal.SIGINT)
    with pytest.raises(Interrupted) as stopped:
        fastcifar.fit(**QUICK, lr_max=0.05, data=DATA, out=str(tmp_path / "r"))
    assert stopped.value.exit_code == 130 and "fastcifar.fit(resume=" in str(stopped.value)


def test_a_stop_of_fit_says_the_call_that_resumes_it_and_pasting_that_call_works(tmp_path):
    """Python's words, not the command line's: max_steps=8, and fit(resume=...) naming the data
    and the model to pass again; pasted (with them filled in), it finishes the run exactly."""
    settings = dict(OWN_MODEL, epochs=2, train_subset=96, test_subset=40, lr_max=0.05)
    whole = fastcifar.fit(**settings, model=TinyNet, data=four_classes(), out=str(tmp_path / "a"))
    with pytest.raises(LimitReached) as stopped:
        fastcifar.fit(**settings, model=TinyNet, data=four_classes(), out=str(tmp_path / "b"),
                      max_steps=8)  # fmt: skip
    message = str(stopped.value)
    assert "stopped at max_steps=8 at step 2/6 of epoch 2" in message and "--" not in message
    call = re.search(r"resume with (fastcifar\.fit\(.*\))$", message).group(1)
    assert "data=<the same data>" in call and "model=<the same model>" in call
    pasted = call.replace("<the same data>", "four_classes()").replace(
        "<the same model>", "TinyNet"
    )
    resumed = eval(
        pasted, {"fastcifar": fastcifar, "four_classes": four_classes, "TinyNet": TinyNet}
    )
    assert resumed.summary.resumed
    ours, theirs = resumed.model.state_dict(), whole.model.state_dict()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_the_command_line_keeps_its_own_resume_line(tmp_path, capsys):
    """The same stop, started from the shell (train.main), prints the command to paste."""
    out = tmp_path / "c"
    argv = ["--epochs", "2", "--train-subset", "96", "--batch-size", "16", "--test-subset", "40",
            "--lr-max", "0.05", "--no-plots", "--device", "cpu", "--max-steps", "8",
            "--out", str(out)]  # fmt: skip
    assert exit_code(argv, four_classes()) == 0
    printed = capsys.readouterr()
    assert "stopped at --max-steps 8" in printed.err + printed.out
    assert f"-m fastcifar.train --resume {out}" in printed.err + printed.out


def test_resume_from_python_takes_no_other_settings(tmp_path):
    with pytest.raises(ConfigError, match="resume continues with the run's recorded config; drop"):
        fastcifar.fit(resume=str(tmp_path), epochs=30)
    with pytest.raises(ConfigError, match="drop config"):
        fastcifar.fit({"epochs": 3}, resume=str(tmp_path))


def test_a_multi_run_resumed_on_other_data_is_refused(tmp_path, monkeypatch):
    run = stopped_in_epoch_2(monkeypatch, tmp_path / "p", seeds=2)
    with pytest.raises(DataError, match="trained on other data"):
        fastcifar.fit(resume=run, data=synthetic_cifar(96, 40, seed=9, classes=4))


def test_a_plan_restarted_by_torchrun_without_out_finds_its_folder(tmp_path, monkeypatch):
    """torchrun --max-restarts, no --out: the folder is named by torchrun's run id, for every
    kind of run, so that a restart finds what it continues."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    fastcifar.fit(**QUICK, lr_max=0.05, seeds=2, data=DATA)
    assert (tmp_path / "runs" / "torchrun-job42" / "seed-1" / "model.pt").is_file()


def test_a_quiet_fit_prints_nothing_and_writes_the_same_run_folder(tmp_path, capsys):
    settings = dict(QUICK, lr_max=0.05, data=four_classes())
    fastcifar.fit(**settings, out=str(tmp_path / "loud"))
    assert "test accuracy" in capsys.readouterr().out
    result = fastcifar.fit(**settings, out=str(tmp_path / "quiet"), quiet=True)
    printed = capsys.readouterr()
    assert printed.out == "" and "epoch" not in printed.err
    assert result.status == "complete" and 0 <= result.accuracy <= 1
    assert sorted(p.name for p in (tmp_path / "quiet").iterdir()) == sorted(
        p.name for p in (tmp_path / "loud").iterdir()
    )
    assert "quiet" not in json.loads((tmp_path / "quiet" / "config.json").read_text())["config"]


def test_the_readmes_training_loop_of_ones_own_runs_as_written():
    """docs/python.md's hand-written loop, on a few synthetic images: one epoch, smaller
    batches."""
    readme = (ROOT / "docs" / "python.md").read_text()
    start = readme.index("# a training loop of one's own")
    code = readme[start : readme.index("```", start)]
    assert "normalisation=train.options.normalisation" in code  # the point of the example
    code = code.replace("epochs = 24", "epochs = 1").replace("batch_size=512", "batch_size=32")
    data = synthetic_cifar(64, 40)
    printed = []
    namespace = {
        "x_train": data.train.images, "y_train": data.train.labels,
        "x_test": data.test.images, "y_test": data.test.labels,
        "print": printed.append,
    }  # fmt: skip
    exec(compile(code, "docs/python.md", "exec"), namespace)
    assert len(printed) == 1 and re.fullmatch(r"epoch 1: test accuracy \d+\.\d\d%", printed[0])
