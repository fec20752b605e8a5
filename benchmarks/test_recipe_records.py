"""The recipe records (benchmarks/recipe_records.py) of tiny runs: what a CPU's complete
recipe runs and run_gpu.sh's seeds and sweep stages leave in benchmarks/results/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.recipe_records import command_of, main, row_of, write_records
from fastcifar.train import main as train_main
from tests.cifar_files import synthetic_cifar
from tests.runs import NARROW, exit_code

DATA = synthetic_cifar(64, 32)
# Two epochs of two steps: the least a run of One Cycle takes (and enough for --eval-every 2).
TINY = ["--epochs", "2", "--train-subset", "32", "--batch-size", "16", "--test-subset", "32",
        "--device", "cpu", "--tta", "--range-test-steps", "4", "--no-plots", *NARROW]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    train_main([*TINY, "--out", str(root / "found")], data=DATA)
    train_main([*TINY, "--lr-max", "0.05", "--eval-every", "2", "--out", str(root / "given")],
               data=DATA)  # fmt: skip
    train_main([*TINY, "--lr-max", "0.05", "--seeds", "2", "--out", str(root / "seeds")],
               data=DATA)  # fmt: skip
    stopped = [*TINY, "--lr-max", "0.05", "--max-steps", "2", "--out", str(root / "stopped")]
    assert exit_code(stopped, DATA) == 0
    return root


def test_complete_runs_are_recorded_with_a_table_and_one_curve_plot(runs, tmp_path, capsys):
    out = tmp_path / "records"
    main(
        [str(runs / name) for name in ("found", "given", "seeds", "stopped")] + ["--out", str(out)]
    )
    table = capsys.readouterr().out
    names = ["found", "given", "seeds-seed-0", "seeds-seed-1"]  # the stopped run is no record
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    for name in names:
        kept = {p.name for p in (out / name).iterdir()}
        assert {"config.json", "summary.json", "metrics.csv"} <= kept
        assert not {"model.pt", "checkpoint.pt"} & kept
    assert "lr_range_test.json" in {p.name for p in (out / "found").iterdir()}
    assert (out / "test_accuracy.png").stat().st_size > 1000
    assert (out / "accuracy_by_compute.png").stat().st_size > 1000
    lines = table.splitlines()
    assert len(lines) == 2 + len(names) and (out / "recipe.md").read_text() == table
    found = next(line for line in lines if line.startswith("| found |"))
    assert "(found by the range test)" in found and "%" in found
    resumed = tmp_path / "resumed"  # its bounds read back from the range test's file
    shutil.copytree(runs / "found", resumed)
    summary = json.loads((resumed / "summary.json").read_text())
    summary["lr_source"] = {k: v for k, v in summary["lr_source"].items() if "seconds" not in k}
    (resumed / "summary.json").write_text(json.dumps(summary))
    assert row_of(resumed, "resumed")["bounds"] == "found by the range test"
    given = next(line for line in lines if line.startswith("| given |"))
    assert "(given)" in given and "--lr-max 0.05 " in given and "--eval-every 2 " in given
    assert "| given | 2 | " in given and "(flip TTA) |" in given  # epochs, the TTA's kind
    # 2 epochs of 32 images of the ResNet9 at width 8: 0.0367 GFLOP each (2.28 at width 64).
    pflop = float(given.split(" | ")[5])
    assert pflop == pytest.approx(64 * 0.0367e-6, rel=0.01)


def test_a_recipe_runs_command_is_its_name_and_what_differs_from_it():
    from fastcifar.records.config import TrainConfig

    recorded = TrainConfig.from_dict({"recipe": "fast", "epochs": 10}).to_dict()
    assert command_of(recorded) == "python -m fastcifar.train --recipe fast --epochs 10"
    # Recorded before the preset took up the initialisations, which did not exist then: the
    # command says they were off, so that it still trains that run.
    older = {k: v for k, v in recorded.items() if k not in ("whitening_init", "dirac_init")}
    assert command_of(older) == (
        "python -m fastcifar.train --recipe fast --epochs 10 --no-whitening-init --no-dirac-init"
    )


def test_a_recipes_feature_switched_off_is_in_the_command():
    from fastcifar.records.config import TrainConfig

    recorded = TrainConfig.from_dict({"recipe": "fast", "lookahead": None}).to_dict()
    assert command_of(recorded) == "python -m fastcifar.train --recipe fast --no-lookahead"


def test_a_variant_is_a_training_setting_off_its_recipe_other_than_length_and_seed():
    from benchmarks.recipe_records import variant_of
    from fastcifar.records.config import TrainConfig

    def variant(**values):
        return variant_of(TrainConfig.from_dict({"recipe": "fast", **values}).to_dict())

    assert variant(epochs=10, seed=3) == []  # the preset at another length: not a variant
    assert variant(tta=False, tta_translate=False, eval_every=1) == []  # trained alike
    assert variant(lookahead=None, flip="random") == ["lookahead", "flip"]
    assert variant_of(TrainConfig.from_dict({"epochs": 12, "tta": True}).to_dict()) == []


def test_training_pflop_counts_the_network_the_run_trained():
    from benchmarks.recipe_records import training_pflop
    from fastcifar.records.config_record import RunKind, Status
    from fastcifar.records.summary import Summary

    def pflop(model: str, **width: int) -> float:
        summary = Summary(RunKind.RUN, Status.COMPLETE, {"model": model, **width},
                          class_names=list("0123456789"), train_examples_per_epoch=1000,
                          epochs_completed=1)  # fmt: skip
        return training_pflop(summary)

    # A config without "width" (recorded before the setting) is the network at 64.
    assert pflop("airbench") == pytest.approx(1000 * 3 * 0.2363e9 / 1e15, rel=0.01)
    assert pflop("resnet9") / pflop("airbench") == pytest.approx(3.2, rel=0.05)
    assert pflop("resnet9", width=64) == pflop("resnet9")
    # At 1/8 the width, ~1/64 of the convolutions' arithmetic (the first layer's input stays 3).
    assert pflop("resnet9") / pflop("resnet9", width=8) == pytest.approx(62, rel=0.02)


def test_nothing_complete_is_one_line(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(runs / "stopped"), "--out", str(tmp_path / "none")])
    assert exit_info.value.code == 2
    assert "no complete run among them" in capsys.readouterr().err
    assert write_records([runs / "stopped"], tmp_path / "none") == []


def test_the_command_shows_the_recipe_settings_that_differ_from_the_defaults():
    command = command_of({"tta": True, "lr_max": 0.4, "seed": 0, "data_dir": "/data",
                          "plots": False, "amp": None, "channels_last": False})  # fmt: skip
    assert command == "python -m fastcifar.train --lr-max 0.4 --tta --no-channels-last"


def test_benchmarks_md_shows_the_recorded_recipe_runs_or_says_there_are_none(runs, tmp_path):
    from benchmarks import publish

    results = tmp_path / "results"
    results.mkdir()
    assert "None is recorded yet" in publish.render(results)
    write_records([runs / "given"], results / "cpu-recipe-test-cpu-2026-12-05")
    text = publish.render(results)
    assert "None is recorded yet" not in text and "### cpu-recipe-test-cpu-2026-12-05" in text
    assert "| given |" in text and "The first convolution" in text
    assert "Time to 94%" not in text  # no shorter runs recorded yet
    write_records([runs / "found"], results / "cpu-time-to-94-test-cpu-2026-12-07")
    text = publish.render(results)
    assert "## Time to 94%: shorter runs and the `fast` recipe" in text
    assert "### cpu-time-to-94-test-cpu-2026-12-07" in text and "| found | 2 |" in text
    assert "The peer, side by side" not in text  # none recorded yet
    peer = results / "cpu-peer-test-cpu-2026-12-07"
    peer.mkdir()
    (peer / "results.md").write_text("| side | seed |\n|---|---:|\n| airbench94 (peer) | 0 |\n")
    (peer / "results.json").write_text(json.dumps({"machine": {"torch": "2.14.1"}}))
    (peer / "step_pairs.json").write_text(
        json.dumps(
            {
                "step_pairs": {
                    "peer": [2.0, 2.5, 3.0],
                    "fastcifar": [2.1, 2.6, 9.0],
                    "batch": 1024,
                    "precision": "fp32",
                }
            }
        )
    )
    text = publish.render(results)
    assert "### cpu-peer-test-cpu-2026-12-07" in text and "| airbench94 (peer) | 0 |" in text
    assert "torch 2.14.1" in text and "airbench94 2.500 s, fastcifar 2.600 s (medians)" in text


RECORDS = Path(__file__).parent / "results/cpu-time-to-94-intel-xeon-amx-2-cores-2026-12-07"
# The ablation README quotes: each feature's run without it, against `fast` seed 0 with all.
ABLATION = {
    "label smoothing": "fast-no-smoothing-12ep-seed0",
    "the BatchNorm options (frozen scales, 64× bias LR)": "fast-bn-trained-12ep-seed0",
    "the initialisations": "fast-12ep-seed-0",
    "alternating flips": "fast-random-flip-12ep-seed0",
    "lookahead": "fast-no-lookahead-12ep-seed0",
}


def _tta(run: str) -> float:
    return json.loads((RECORDS / run / "summary.json").read_text())["final_test_accuracy_tta"]


@pytest.mark.parametrize(("feature", "run"), ABLATION.items())
def test_what_readme_says_each_feature_bought_is_the_records(feature, run):
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    bought = 100 * (_tta("fast-init-12ep-seed0") - _tta(run))
    assert f"{feature} {bought:+.2f} pp" in readme
