"""`benchmarks/run_gpu.sh DATA_DIR OUT_DIR [STAGE ...]` does its work here: every number this
project needs, from one short lease of a bare GPU machine (no internet, no FFCV or DALI, maybe
no git).

Stages: `tests` (pytest -m cuda: each loader on the GPU, CUDA graphs captured once and never
skipped) first, so that a slow first compile cannot crowd out the proof; then, in order of
value, `seeds` (5 seeds x 24 epochs with flip TTA) -> `suite` (the benchmark suite's GPU rows)
-> `sweep` (3 LRMAX values x 1 seed) -> `first-conv` (benchmarks/first_conv.py on the GPU: what
the 3 -> 64 conv costs of a step) -> `peer` (benchmarks/peer.py: airbench94's published code
beside fastcifar's airbench recipe, time to 94%; needs the `airbench` package). Each runs in
a process of its own under its own time limit, inside one budget (500 s of wall time by
default, compilation included): a stage that no
longer fits is skipped and says so, and a failing or timed-out stage takes nothing else down.

A preflight comes first (seconds): DATA_DIR and the CUDA device are checked; a one-op function
is compiled with torch.compile, and where that fails (no C compiler, no Python headers: Triton
cannot build its launcher) every stage runs eagerly (`--no-compile`; the tests and the suite
without their compiled cases), which the summary and the screen say; and each stage's Python
packages are looked up (importlib.util.find_spec), a stage whose packages are missing being
skipped with their names instead of crashing. FASTCIFAR_GPU_RUN_SIMULATE (comma-separated:
`no-compiler`, `missing=MODULE`) makes the preflight see either failure, for dry runs on a CPU.

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
# What each stage is expected to take on an H100/H200, and the most it may take; a stage starts
# only if its estimate fits what is left of the budget. Projections, not measurements (no GPU
# has run this script yet): ~3.4 ms/step for the recipe with CUDA graphs (a plain reference
# script of it on an H200, torch 2.11), so ~8 s of training per 24-epoch run, plus about a
# minute of compilation per process; tests: 7 CUDA tests, one compiled run among them;
# first-conv: importing torch and CUDA, then ~300 eager steps of a few ms; peer: the paper's
# 3.3 s run, then fastcifar's airbench recipe, compiled (about a minute). Their sum (500 s)
# fits the default budget of 500 s, which leaves 100 s of the lender's 10-minute command for the
# preflight and the packing. Every stage's real seconds are recorded (results.json `stages`,
# summary.md): the next GPU run plans from those.
ESTIMATES = {"tests": 90, "seeds": 120, "suite": 120, "sweep": 80, "first-conv": 30, "peer": 60}
CAPS = {"tests": 180, "seeds": 300, "suite": 240, "sweep": 180, "first-conv": 120, "peer": 180}
STAGES = tuple(ESTIMATES)
PREFLIGHT_SECONDS = 180  # importing torch, hashing 180 MB, initialising CUDA: well under
# The packages each stage's process imports besides torch: fastcifar's own at module level
# (numpy, tqdm for progress, matplotlib and pillow for plots and images), torchvision for the
# suite's reference pipeline, pytest-benchmark's fixture.
FASTCIFAR_NEEDS = ("numpy", "tqdm", "matplotlib", "PIL")
STAGE_MODULES = {
    "tests": ("pytest", *FASTCIFAR_NEEDS),
    "seeds": FASTCIFAR_NEEDS,
    "suite": ("pytest", "pytest_benchmark", "torchvision", *FASTCIFAR_NEEDS),
    "sweep": FASTCIFAR_NEEDS,
    "first-conv": ("numpy",),
    "peer": ("airbench", "torchvision", *FASTCIFAR_NEEDS),
}
SIMULATE = "FASTCIFAR_GPU_RUN_SIMULATE"


@dataclass
class StageResult:
    name: str
    status: str  # passed, failed, timed out, skipped
    seconds: float = 0.0
    exit_code: int | None = None
    note: str = ""


def stage_commands(
    args: argparse.Namespace, work: Path, compiles: bool = True
) -> dict[str, list[str]]:
    """Each stage's command; without a working torch.compile, the eager forms: training with
    --no-compile, the tests without those marked `compiles`, the suite's eager rows only."""
    python = args.python
    eager = [] if compiles else ["--no-compile"]
    train = [
        python,
        "-m",
        "fastcifar.train",
        "--data-dir",
        str(args.data),
        "--amp",
        "--no-plots",
        *eager,
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
            args.suite_k if compiles else f"({args.suite_k}) and (reference or eager)",
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
            "cuda" if compiles else "cuda and not compiles",
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
        "peer": [
            python,
            "-m",
            "benchmarks.peer",
            "--data-dir",
            str(args.data),
            "--out",
            str(work / "peer"),
            "--seeds",
            str(args.peer_seeds),
            *shlex.split(args.peer_args),
        ],
    }


@dataclass
class Preflight:
    problem: str | None = None  # DATA_DIR or the device: nothing can run
    compile_error: str | None = None  # torch.compile failed: every stage runs eagerly
    missing: tuple[str, ...] = ()  # Python packages this machine lacks

    @property
    def compiles(self) -> bool:
        return self.compile_error is None

    def missing_for(self, stage: str) -> list[str]:
        return [name for name in STAGE_MODULES[stage] if name in self.missing]


# Runs in the stages' own Python: the data, the device, a one-op compile, the packages.
PREFLIGHT_CHECK = """
import importlib.util, json, os, sys, torch
from fastcifar.data.source import load_cifar10
from fastcifar.errors import UserError
data_dir, allow_cpu, modules = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split(",")
simulated = [part for part in os.environ.get(SIMULATE, "").split(",") if part]
try:
    data = load_cifar10(data_dir, download=False)
except UserError as error:
    sys.exit(f"DATA_DIR: {error}")
if (len(data.train), len(data.test)) != (50000, 10000):
    sys.exit(f"DATA_DIR: {len(data.train)} training and {len(data.test)} test images")
if not allow_cpu and not torch.cuda.is_available():
    sys.exit("this python sees no CUDA device (ALLOW_CPU=1 dry-runs on the CPU)")
device = "cuda" if torch.cuda.is_available() else "cpu"
compile_error = None
try:
    if "no-compiler" in simulated:
        raise RuntimeError("simulated by FASTCIFAR_GPU_RUN_SIMULATE=no-compiler")
    twice_plus_one = torch.compile(lambda x: x * 2 + 1)
    if twice_plus_one(torch.ones(8, device=device)).sum().item() != 24:
        raise RuntimeError("the compiled function computed a wrong result")
except Exception as error:
    compile_error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
hidden = {part.split("=", 1)[1] for part in simulated if part.startswith("missing=")}
missing = [m for m in modules if m in hidden or importlib.util.find_spec(m) is None]
print(json.dumps({"compile_error": compile_error, "missing": missing}))
""".replace("SIMULATE", repr(SIMULATE))


def preflight(data: Path, allow_cpu: bool, python: str) -> Preflight:
    """DATA_DIR is the complete CIFAR-10 and a CUDA device is seen (else `problem`, one line);
    whether torch.compile works and which stage packages are missing (module docstring)."""
    modules = sorted({name for names in STAGE_MODULES.values() for name in names})
    command = [python, "-c", PREFLIGHT_CHECK, str(data), "1" if allow_cpu else "0",
               ",".join(modules)]  # fmt: skip
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env=_environment(), timeout=PREFLIGHT_SECONDS)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Preflight(f"checking DATA_DIR and the GPU took over {PREFLIGHT_SECONDS} s")
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return Preflight(lines[-1] if lines else f"the check exited {result.returncode}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return Preflight(None, found["compile_error"], tuple(found["missing"]))


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


def write_out(
    out: Path, work: Path, results: list[StageResult], meta: dict[str, Any], records: str = ""
) -> None:
    """OUT rewritten whole from what the stages left in `work` (see the module docstring), with
    `records` (recipe_records_of's table) below the summary. Whatever fails in the summing up,
    the stages' outcomes and logs still come back."""
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
    (out / "summary.md").write_text(markdown + records)
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
    checked = preflight(args.data, args.allow_cpu, args.python)
    if checked.problem is not None:
        print(f"run_gpu.sh: {checked.problem}", file=sys.stderr, flush=True)
        write_out(out, work, [StageResult("preflight", "failed", note=checked.problem)], meta)
        return 2
    meta["compile"] = "works" if checked.compiles else f"failed ({checked.compile_error})"
    meta["missing_packages"] = list(checked.missing)
    if not checked.compiles:
        eager = "every stage runs eagerly (--no-compile; compiled tests and suite rows left out)"
        print(f"run_gpu.sh: torch.compile fails here ({checked.compile_error}): {eager}")
    commands = stage_commands(args, work, checked.compiles)
    results: list[StageResult] = []
    records = ""
    for name in args.stages:
        shutil.rmtree(work / name, ignore_errors=True)  # a run folder of an earlier try
        left = args.budget - (time.monotonic() - started)
        missing = checked.missing_for(name)
        if missing:
            note = f"needs {', '.join(missing)}, not installed for {args.python}"
            print(f"== {name}: skipped: {note}", flush=True)
            results.append(StageResult(name, "skipped", note=note))
        else:
            results.append(run_stage(name, commands[name], left, work / "logs" / f"{name}.log"))
        if name in ("seeds", "sweep"):  # the records change only with these stages' runs
            records = recipe_records_of(work, out)
        write_out(out, work, results, meta, records)  # what finished is on disk at once
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
    parser.add_argument("--budget", type=float, default=float(environment("BUDGET_S", "500")))
    parser.add_argument("--work", default=environment("WORK"))
    parser.add_argument("--allow-cpu", action="store_true", default=environment("ALLOW_CPU") == "1")
    parser.add_argument("--seeds", type=int, default=int(environment("SEEDS", "5")))
    parser.add_argument("--sweep", default=environment("SWEEP", "0.05,0.2,0.4"))
    parser.add_argument("--sweep-seeds", type=int, default=int(environment("SWEEP_SEEDS", "1")))
    parser.add_argument("--train-args", default=environment("TRAIN_ARGS", ""))
    parser.add_argument("--suite-args", default=environment("SUITE_ARGS", "--benchmark"))
    parser.add_argument("--conv-args", default=environment("CONV_ARGS", "--repeats 20"))
    parser.add_argument("--peer-seeds", type=int, default=int(environment("PEER_SEEDS", "1")))
    parser.add_argument("--peer-args", default=environment("PEER_ARGS", "--device cuda"))
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
