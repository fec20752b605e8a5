"""`benchmarks/run_gpu.sh DATA_DIR OUT_DIR [STAGE ...]` does its work here: every number this
project needs, from one short lease of a bare GPU machine (no internet, no FFCV or DALI, maybe
no git).

Stages, in order of value: `seeds` (5 seeds x 24 epochs with flip TTA) -> `suite` (the
benchmark suite's GPU rows) -> `sweep` (3 LRMAX values x 1 seed) -> `tests` (pytest -m cuda) ->
`first-conv` (benchmarks/first_conv.py on the GPU: what the 3 -> 64 conv costs of a step).
Each runs in a process of its own under its own time limit, inside one budget (8 minutes of
wall time by default, compilation included): a stage that no longer fits is skipped and says
so, and a failing or timed-out stage takes nothing else down. DATA_DIR and the CUDA device are
checked first, before anything compiles.

Run folders live in a working folder outside OUT_DIR. After every stage OUT_DIR is rewritten
whole, so that what finished is on disk even if the machine is taken away: summary.md (one
table), results.json (every number, per-run rows, provenance), log.txt (every stage's output)
and runs.tgz (the run folders without weights): 4 files, none in a sub-folder, each checked to
be under 16 MiB; once a run of `seeds` or `sweep` is complete, the recipe records of
benchmarks/recipe_records.py as well (their table in summary.md, their curves in
test_accuracy.png), as a CPU's recipe runs are recorded. `python -m benchmarks.publish --import
OUT_DIR/results.json` files them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import gpu_summary

ROOT = Path(__file__).resolve().parents[1]
OUT_FILES = ("summary.md", "results.json", "log.txt", "runs.tgz")
PLOTS = ("test_accuracy.png",)  # once a recipe run is complete
MAX_FILE_BYTES = 16 * 2**20
# What each stage is expected to take on an H200 (projected from issue #16's figure of ~8 s of
# training per 24-epoch run, ~3.4 ms/step, plus about a minute of compilation per process;
# first-conv: importing torch and CUDA, then ~300 eager steps of a few ms; no GPU has run them
# yet), and the most it may take. A stage starts only if its estimate fits.
ESTIMATES = {"seeds": 150, "suite": 150, "sweep": 90, "tests": 90, "first-conv": 40}
CAPS = {"seeds": 300, "suite": 240, "sweep": 180, "tests": 180, "first-conv": 120}
STAGES = tuple(ESTIMATES)
PREFLIGHT_SECONDS = 180  # importing torch, hashing 180 MB, initialising CUDA: well under


@dataclass
class StageResult:
    name: str
    status: str  # passed, failed, timed out, skipped
    seconds: float = 0.0
    exit_code: int | None = None
    note: str = ""


def stage_commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    python = args.python
    train = [
        python,
        "-m",
        "fastcifar.train",
        "--data-dir",
        str(args.data),
        "--amp",
        "--no-plots",
        *shlex.split(args.train_args),
    ]
    return {
        "seeds": [*train, "--out", str(work / "seeds"), "--seeds", str(args.seeds), "--tta"],
        "suite": [
            python,
            "-m",
            "pytest",
            "benchmarks",
            "-q",
            "-p",
            "no:cacheprovider",
            "--bench-results",
            str(work / "suite"),
            "-k",
            args.suite_k,
            *shlex.split(args.suite_args),
        ],
        "sweep": [
            *train,
            "--out",
            str(work / "sweep"),
            "--lr-max",
            args.sweep,
            "--seeds",
            str(args.sweep_seeds),
            "--range-test",
        ],
        "tests": [
            python,
            "-m",
            "pytest",
            "tests",
            "-m",
            "cuda",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            f"--junitxml={work / 'cuda-tests.xml'}",
        ],
        "first-conv": [
            python,
            "-m",
            "benchmarks.first_conv",
            "--out",
            str(work / "first-conv" / gpu_summary.FIRST_CONV_FILE),
            *shlex.split(args.conv_args),
        ],
    }


def preflight(data: Path, allow_cpu: bool, python: str) -> str | None:
    """One line when DATA_DIR is not the complete CIFAR-10 or no CUDA device is seen."""
    check = (
        "import sys, torch\n"
        "from fastcifar.data.source import load_cifar10\n"
        "from fastcifar.errors import UserError\n"
        f"try:\n    data = load_cifar10({str(data)!r}, download=False)\n"
        "except UserError as error:\n    sys.exit(f'DATA_DIR: {error}')\n"
        "if (len(data.train), len(data.test)) != (50000, 10000):\n"
        "    sys.exit(f'DATA_DIR: {len(data.train)} training and {len(data.test)} test images')\n"
        f"if not {allow_cpu} and not torch.cuda.is_available():\n"
        "    sys.exit('this python sees no CUDA device (ALLOW_CPU=1 dry-runs on the CPU)')\n"
    )
    try:
        result = subprocess.run([python, "-c", check], cwd=ROOT, capture_output=True, text=True,
                                env=_environment(), timeout=PREFLIGHT_SECONDS)  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"checking DATA_DIR and the GPU took over {PREFLIGHT_SECONDS} s (a hung driver?)"
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"the check exited {result.returncode}"


def _environment() -> dict[str, str]:
    path = (
        f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"
        if os.environ.get("PYTHONPATH")
        else str(ROOT)
    )
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_stage(name: str, command: list[str], left: float, log: Path) -> StageResult:
    """The stage's command under min(its cap, the budget left); its output to stdout and to
    `log`. A stage that overruns is stopped (SIGTERM, then SIGKILL) with everything it began."""
    if left < ESTIMATES[name]:
        return StageResult(
            name, "skipped", note=f"needs ~{ESTIMATES[name]} s, {left:.0f} s of the budget left"
        )
    limit = min(CAPS[name], left)
    print(f"== {name}: {shlex.join(command)} (limit {limit:.0f} s)", flush=True)
    start = time.monotonic()
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        copier = threading.Thread(target=_copy, args=(process.stdout, sink), daemon=True)
        copier.start()
        try:
            code = process.wait(timeout=limit)
            status = "passed" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(process)
            code, status = process.returncode, "timed out"
        copier.join(timeout=10)
    seconds = time.monotonic() - start
    note = f"stopped at its limit of {limit:.0f} s" if status == "timed out" else ""
    print(f"== {name}: {status} (exit {code}) after {seconds:.0f} s", flush=True)
    return StageResult(name, status, seconds, code, note)


def _copy(stream: Any, sink: Any) -> None:
    for line in stream:
        sys.stdout.write(line)
        sink.write(line)
    sys.stdout.flush()


def _stop(process: subprocess.Popen) -> None:
    for number, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, number)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def write_out(out: Path, work: Path, results: list[StageResult], meta: dict[str, Any]) -> None:
    """OUT rewritten whole from what the stages left in `work` (see the module docstring).
    Whatever fails in the summing up, the stages' outcomes and logs still come back."""
    try:
        markdown, payload = gpu_summary.collect(work, [asdict(r) for r in results], meta)
    except Exception as error:  # torch broken or missing is exactly when this must still work
        rows = [f"| {r.name} | {r.status} {r.note} |" for r in results]
        head = [
            f"GPU check: the summary failed ({error!r})",
            "",
            "| Stage | Outcome |",
            "|---|---|",
        ]
        markdown = "\n".join([*head, *rows]) + "\n"
        payload = {"meta": meta, "stages": [asdict(r) for r in results], "error": repr(error)}
    (out / "summary.md").write_text(markdown + recipe_records_of(work, out))
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    logs = [
        work / "logs" / f"{r.name}.log"
        for r in results
        if (work / "logs" / f"{r.name}.log").is_file()
    ]
    (out / "log.txt").write_text(
        "".join(f"== {p.stem}\n{p.read_text()}\n" for p in logs)[-MAX_FILE_BYTES // 2 :]
    )
    pack_runs(work, out / "runs.tgz")
    for name in OUT_FILES + PLOTS:
        if (out / name).is_file() and (out / name).stat().st_size > MAX_FILE_BYTES:
            (out / name).write_text(f"left out: over {MAX_FILE_BYTES} bytes\n")


def recipe_records(work: Path, out: Path) -> str:
    """The recipe records of the complete runs of `seeds` and `sweep` (work/recipe, packed with
    the runs), their curves as OUT's test_accuracy.png; their table for summary.md."""
    from benchmarks.recipe_records import write_records

    stages = [
        work / name for name in ("seeds", "sweep") if (work / name / "summary.json").is_file()
    ]
    rows = write_records(stages, work / "recipe") if stages else []
    if not rows:
        return ""
    shutil.copy2(work / "recipe" / "test_accuracy.png", out / "test_accuracy.png")
    return (
        "\nRecipe runs (benchmarks/recipe_records.py):\n\n"
        + (work / "recipe" / "recipe.md").read_text()
    )


def recipe_records_of(work: Path, out: Path) -> str:
    try:
        return recipe_records(work, out)
    except Exception as error:  # the stages' outcomes come back whatever fails here
        return f"\nRecipe records failed: {error!r}\n"


def pack_runs(work: Path, target: Path) -> None:
    """The run folders' records (JSON, CSV, the logs), never weights or checkpoints."""
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix in (".json", ".csv", ".log", ".xml", ".md"):
                tar.add(path, arcname=str(path.relative_to(work)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES + PLOTS:  # an earlier try's, never anything else that OUT holds
        (out / name).unlink(missing_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="fastcifar-gpu-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "benchmarks/run_gpu.sh DATA OUT " + " ".join(args.stages),
        "budget_seconds": args.budget,
        "work": str(work),
    }
    problem = preflight(args.data, args.allow_cpu, args.python)
    if problem is not None:
        print(f"run_gpu.sh: {problem}", file=sys.stderr, flush=True)
        write_out(out, work, [StageResult("preflight", "failed", note=problem)], meta)
        return 2
    commands = stage_commands(args, work)
    results: list[StageResult] = []
    for name in args.stages:
        shutil.rmtree(work / name, ignore_errors=True)  # a run folder of an earlier try
        left = args.budget - (time.monotonic() - started)
        results.append(run_stage(name, commands[name], left, work / "logs" / f"{name}.log"))
        write_out(out, work, results, meta)  # what finished is on disk at once
    print((out / "summary.md").read_text(), flush=True)
    return 0 if all(r.status in ("passed", "skipped") for r in results) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    environment = os.environ.get
    parser = argparse.ArgumentParser(
        prog="benchmarks/run_gpu.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", type=Path, help="folder holding cifar-10-batches-bin/")
    parser.add_argument(
        "out", type=Path, help="what comes back: summary.md, results.json, log.txt, runs.tgz"
    )
    parser.add_argument("stages", nargs="*", help=f"some of {', '.join(STAGES)} (default: all)")
    parser.add_argument("--python", default=environment("PYTHON", "python3"))
    parser.add_argument("--budget", type=float, default=float(environment("BUDGET_S", "480")))
    parser.add_argument("--work", default=environment("WORK"))
    parser.add_argument("--allow-cpu", action="store_true", default=environment("ALLOW_CPU") == "1")
    parser.add_argument("--seeds", type=int, default=int(environment("SEEDS", "5")))
    parser.add_argument("--sweep", default=environment("SWEEP", "0.05,0.2,0.4"))
    parser.add_argument("--sweep-seeds", type=int, default=int(environment("SWEEP_SEEDS", "1")))
    parser.add_argument("--train-args", default=environment("TRAIN_ARGS", ""))
    parser.add_argument("--suite-args", default=environment("SUITE_ARGS", "--benchmark"))
    parser.add_argument("--conv-args", default=environment("CONV_ARGS", "--repeats 20"))
    parser.add_argument(
        "--suite-k",
        default=environment("SUITE_K", "reference or torch-amp-cl-reduce-overhead or throughput"),
    )
    args = parser.parse_args(argv)
    unknown = [stage for stage in args.stages if stage not in STAGES]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGES)}")
    args.stages = args.stages or list(STAGES)
    # The stages run from the repository root: paths are the caller's, made absolute first.
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.work = str(Path(args.work).resolve()) if args.work else None
    return args


if __name__ == "__main__":
    raise SystemExit(main())
