#!/usr/bin/env bash
# Full-size measurements for a machine with a GPU, in one go:
#   1. the 24-epoch timed training (`python -m fastcifar.train --amp`) once per seed,
#   2. the benchmark suite (`pytest benchmarks --benchmark`, full size on CUDA),
#   3. one summary: mean ± std test accuracy and median time over the seeds, then the suite's
#      table; both are saved in benchmarks/results/ and BENCHMARKS.md is regenerated from them.
#
# Usage: benchmarks/run_gpu.sh [SEEDS] [DATA_DIR]
#   SEEDS     number of seeds, 0..SEEDS-1 (default 3)
#   DATA_DIR  folder holding CIFAR-10 (default: $FASTCIFAR_DATA, else ~/.cache/fastcifar)
# Environment: PYTHON (default python), RUNS_DIR (default runs), TRAIN_ARGS (extra flags for
# fastcifar.train, e.g. "--loader ffcv"), PYTEST_ARGS (extra flags for pytest, e.g.
# "--bench-autotune"), ALLOW_CPU=1 (dry-run the plumbing without a GPU, with tiny TRAIN_ARGS).
set -euo pipefail

SEEDS="${1:-${SEEDS:-3}}"
DATA_DIR="${2:-${DATA_DIR:-}}"
PYTHON="${PYTHON:-python}"
RUNS_DIR="${RUNS_DIR:-runs}"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a PYTEST_EXTRA <<< "${PYTEST_ARGS:-}"

if ! [[ "$SEEDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "run_gpu.sh: SEEDS must be a positive integer, got '$SEEDS'" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
has_cuda() { "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; }
if [[ "${ALLOW_CPU:-0}" != 1 ]] && ! has_cuda; then
    echo "run_gpu.sh: $PYTHON sees no CUDA device; on a CPU run: pytest benchmarks --benchmark" >&2
    exit 2
fi

data_args=()
if [[ -n "$DATA_DIR" ]]; then
    data_args=(--data-dir "$DATA_DIR")
fi

run_dirs=()
for ((seed = 0; seed < SEEDS; seed++)); do
    out="$RUNS_DIR/gpu-seed-$seed"
    echo "== seed $seed -> $out"
    start=$(date +%s.%N)
    # ${array[@]+...} keeps empty arrays legal under `set -u` on bash < 4.4.
    "$PYTHON" -m fastcifar.train --amp --seed "$seed" --out "$out" \
        ${data_args[@]+"${data_args[@]}"} ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"}
    # The whole command's wall time (start-up, LR range test, compilation, evaluation included).
    awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", end - start }' \
        > "$out/wall_seconds.txt"
    run_dirs+=("$out")
done

echo "== benchmark suite"
"$PYTHON" -m pytest benchmarks --benchmark ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}

echo "== summary"
"$PYTHON" -m benchmarks.summarize_runs "${run_dirs[@]}" --save-dir benchmarks/results \
    --command "benchmarks/run_gpu.sh $SEEDS ${DATA_DIR} (TRAIN_ARGS='${TRAIN_ARGS:-}')"
latest_suite=$(ls -t benchmarks/results/*.md 2> /dev/null | head -n 1 || true)
if [[ -n "$latest_suite" ]]; then
    echo
    cat "$latest_suite"
fi
"$PYTHON" -m benchmarks.publish
