"""benchmarks/run_gpu.sh against the conditions of a lent GPU machine: what comes back (at most
8 files, 16 MiB each, no deeper than 2 folders, safe names), a commit without git; the table
built from what the stages leave; and the whole command dry-run end to end on the CPU with a
CUDA-tests stage that fails. What it does when the machine lacks something or time runs out:
test_gpu_run_limits.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmarks import gpu_run, gpu_summary, publish
from fastcifar.outputs.statistics import aggregate
from tests.cifar_files import real_cifar_dir

ROOT = Path(__file__).resolve().parents[1]
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def multi_run(folder: Path, groups: list[tuple[float, list[float]]], found: float | None) -> None:
    folder.mkdir(parents=True)
    summary = {
        "status": "complete",
        "device_name": "NVIDIA H100",
        "range_test": {"lr_min": 0.01, "lr_max": found} if found else None,
        "groups": [
            {
                "lr_max": lr,
                "accuracy": aggregate(values).to_dict(),
                "accuracy_tta": aggregate([v + 0.005 for v in values]).to_dict(),
                "runs": [
                    {"total_train_seconds": 7.0 + i, "wall_seconds": 9.0 + i}
                    for i, _ in enumerate(values)
                ],
            }
            for lr, values in groups
        ],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "seed-0").mkdir()
    run = {"config": {"seed": 0}, "status": "complete", "final_test_accuracy": 0.94}
    (folder / "seed-0" / "summary.json").write_text(json.dumps(run))


JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_cuda" name="test_a"/>
<testcase classname="tests.test_cuda" name="test_b"><skipped message="needs two GPUs"/></testcase>
<testcase classname="tests.test_cuda" name="test_c"><failure message="x"/></testcase>
</testsuite></testsuites>"""


def test_the_summary_table_reports_every_stage(tmp_path):
    multi_run(tmp_path / "seeds", [(0.4, [0.94, 0.941, 0.939, 0.942, 0.938])], found=0.4)
    multi_run(tmp_path / "sweep", [(0.1, [0.93, 0.931]), (0.4, [0.94, 0.942])], found=0.4)
    (tmp_path / "cuda-tests.xml").write_text(JUNIT)
    stages = [
        {"name": "seeds", "status": "passed", "seconds": 140.0, "exit_code": 0, "note": ""},
        {
            "name": "suite",
            "status": "timed out",
            "seconds": 240.0,
            "exit_code": -15,
            "note": "stopped at its limit of 240 s",
        },
        {
            "name": "sweep",
            "status": "skipped",
            "seconds": 0.0,
            "exit_code": None,
            "note": "needs ~90 s, 12 s of the budget left",
        },
        {"name": "tests", "status": "failed", "seconds": 80.0, "exit_code": 1, "note": ""},
        {"name": "first-conv", "status": "passed", "seconds": 30.0, "exit_code": 0, "note": ""},
    ]
    conv_table = "NVIDIA H100, batch 512\n\n| Variant | Seconds | Share of the step |\n"
    (tmp_path / "first-conv").mkdir()
    (tmp_path / "first-conv" / gpu_summary.FIRST_CONV_FILE).write_text(conv_table)
    markdown, payload = gpu_summary.collect(tmp_path, stages, {"command": "run_gpu.sh"})
    assert markdown.startswith("GPU check on NVIDIA H100 (commit ")
    assert "suite: timed out in 240 s (stopped at its limit of 240 s)" in markdown
    assert "sweep: skipped (needs ~90 s, 12 s of the budget left)" in markdown
    assert (
        "| Test accuracy, 5 seeds (LRMAX 0.4 found by the range test) | 94.00% ± 0.16%" in markdown
    )
    assert "| … with flip TTA | 94.50% ± 0.16%" in markdown
    assert "median 9.00 s (min 7.00, max 11.00); wall per run median 11.00 s" in markdown
    assert "0.1: 93.05% ± 0.07; 0.4: 94.10% ± 0.14" in markdown
    assert (
        "| CUDA tests (`pytest -m cuda`) | FAILED; passed 1: test_a; skipped 1: test_b; "
        "failed 1: test_c |"
    ) in markdown
    assert "first-conv: passed in 30 s" in markdown
    assert f"The first convolution (benchmarks/first_conv.py):\n\n{conv_table}" in markdown
    assert payload["first_conv"] == conv_table
    assert payload["seed_runs"][0]["final_test_accuracy"] == 0.94
    assert payload["tests"]["skipped"] == ["test_b"]
    assert payload["meta"]["source"]["commit"] and payload["meta"]["versions"]["torch"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payload))
    filed = publish.import_gpu_results(results, tmp_path / "filed")
    date = payload["meta"]["date"]
    assert [p.name for p in filed] == [
        f"nvidia-h100-{date}-training.json",
        f"first-conv-nvidia-h100-{date}.md",
    ]
    text = publish.render(tmp_path / "filed")
    assert "### Full 24-epoch training" in text and "94.00% ± 0.16%" in text
    assert f"`first-conv-nvidia-h100-{date}.md`" in text and text.count(conv_table) == 1


def test_paths_are_the_callers_and_out_loses_only_an_earlier_trys_files(tmp_path):
    """Started elsewhere, run_gpu.sh reads relative paths from there, and clears only its own
    four files out of OUT (an OUT of `.` must not lose the files it holds)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.md").write_text("an earlier try")
    env = {**os.environ, "PYTHON": sys.executable, "ALLOW_CPU": "1", "WORK": "work"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/run_gpu.sh"), "nowhere", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path / 'nowhere'}" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert "preflight: failed" in (out / "summary.md").read_text()
    assert (tmp_path / "work" / "logs").is_dir()


def standin_python(folder: Path) -> Path:
    """A python whose CUDA tests fail (like a GPU that fails them), otherwise the real one."""
    script = folder / "python-standin"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ " $* " == *" -m pytest tests -m cuda "* ]]; then\n'
        '    echo "stand-in: every CUDA test fails"; exit 1\nfi\n'
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(0o755)
    return script


def without_git(folder: Path) -> str:
    """A PATH with every program of this one but git."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            target = bin_dir / program.name
            if not program.name.startswith("git") and not target.exists():
                target.symlink_to(program)
    assert shutil.which("git", path=str(bin_dir)) is None
    return str(bin_dir)


def test_the_commit_comes_from_git_else_the_stamp_else_is_unknown(tmp_path, monkeypatch):
    from fastcifar.records.provenance import source_commit

    monkeypatch.delenv("FASTCIFAR_COMMIT", raising=False)
    tree = tmp_path / "copied-tree"  # a copy without .git, as on the GPU machine
    tree.mkdir()
    assert source_commit(tree)["commit"] == "unknown"
    (tree / ".provenance.json").write_text('{"commit": "abc1234", "dirty": true}')
    monkeypatch.setenv("PATH", without_git(tmp_path))
    assert source_commit(tree) == {"commit": "abc1234", "dirty": True, "from": ".provenance.json"}
    monkeypatch.undo()
    monkeypatch.delenv("FASTCIFAR_COMMIT", raising=False)
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    # A stamp left behind on the development machine never outlives its commit.
    assert source_commit(tree) == {"commit": head.stdout.strip(), "dirty": False, "from": "git"}


def test_the_prepared_gpu_command_dry_runs_on_the_cpu(tmp_path):
    data = real_cifar_dir()
    if data is None:
        pytest.skip("set FASTCIFAR_DATA to the real CIFAR-10 to dry-run benchmarks/run_gpu.sh")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PATH": without_git(tmp_path),
        "FASTCIFAR_COMMIT": "feedbee",
        "ALLOW_CPU": "1",
        "PYTHON": str(standin_python(tmp_path)),
        "WORK": str(work),
        "SEEDS": "2",
        "SWEEP": "0.02,0.05",
        "SUITE_ARGS": "",
        "SUITE_K": "reference",
        "CONV_ARGS": "--batch-size 8 --repeats 1",
        "TRAIN_ARGS": "--device cpu --epochs 1 --train-subset 48 --batch-size 16 "
        "--test-subset 32 --range-test-steps 4 --width 8",
        "PEER_ARGS": "--device cpu --train-subset 256 --test-subset 100 --peer-epochs 1 "
        "--peer-batch 256 --epochs 1 --batch-size 64",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/run_gpu.sh"), str(data), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # tests failed
    summary = (out / "summary.md").read_text()
    assert "| Test accuracy, 2 seeds" in summary and "| LR sweep" in summary
    assert "| CUDA tests (`pytest -m cuda`) | failed: no test report |" in summary
    assert "seeds: passed" in summary and "tests: failed" in summary
    assert "first-conv: passed" in summary and "| first conv, fp32 |" in summary
    assert "peer: passed" in summary and "| airbench94 (peer) | 0 |" in summary
    payload = json.loads((out / "results.json").read_text())
    assert payload["meta"]["source"] == {"commit": "feedbee", "dirty": False, "from": "environment"}
    assert payload["suite"]["epochs"], "the suite's rows"
    assert [row["seed"] for row in payload["seed_runs"]] == [0, 1]
    assert "batch 8, channels_last, eager" in payload["first_conv"]
    # What comes back: at most 8 files of at most 16 MiB, no deeper than 2 folders, safe names.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(gpu_run.OUT_FILES + gpu_run.PLOTS)
    assert "Recipe runs" in summary and "| seeds-seed-0 |" in summary  # as a CPU run records
    for path in files:
        assert path.stat().st_size <= 16 * 2**20 and len(path.relative_to(out).parts) <= 3
        assert all(SAFE_NAME.fullmatch(part) for part in path.relative_to(out).parts)
    with tarfile.open(out / "runs.tgz") as tar:
        names = tar.getnames()
        run = json.load(tar.extractfile("seeds/seed-0/summary.json"))
    assert not any(name.endswith((".pt", ".png")) for name in names)
    assert "recipe/recipe.md" in names and "recipe/seeds-seed-1/metrics.csv" in names
    assert run["provenance"]["commit"] == "feedbee"  # the training JSON, without git
    assert run["checkpoints_written"] == 1  # an epoch of seconds: one checkpoint, at the end


def test_the_stages_run_the_cuda_tests_first_and_their_estimates_fit_the_budget():
    assert gpu_run.STAGES[0] == "tests"
    assert sum(gpu_run.ESTIMATES.values()) <= gpu_run.parse_args(["d", "o"]).budget


def test_the_gpu_procedure_lists_every_stage_in_order_with_its_estimate():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| .* \| ~(\d+) s \|$", text, re.MULTILINE)
    assert rows == [(name, str(gpu_run.ESTIMATES[name])) for name in gpu_run.STAGES]
