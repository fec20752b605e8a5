#!/usr/bin/env bash
# The one prepared command for a bare GPU machine (PyTorch, numpy, tqdm, matplotlib, pytest and
# pytest-benchmark preinstalled; no internet). It installs nothing, runs from the source tree,
# reads CIFAR-10 from DATA_DIR and writes everything into OUT_DIR:
#
#   tests    pytest -m cuda                                   -> cuda-tests.log, cuda-tests.status
#   seeds    5 seeds x 24 epochs, --amp, compiled once        -> seeds/ (aggregate summary.json)
#   sweep    LRMAX 0.05 .. 0.8, 2 seeds each, range test marked -> sweep/
#   suite    the benchmark suite's GPU rows                   -> suite/
#   summary  one table                                        -> summary.md, results/*.json
#
# Usage: benchmarks/run_gpu.sh DATA_DIR OUT_DIR [STAGE ...]   (default: every stage, in order)
# Environment: PYTHON (python), SEEDS (5), SWEEP (0.05,0.1,0.2,0.4,0.8), SWEEP_SEEDS (2),
#   TRAIN_ARGS (extra flags for fastcifar.train), SUITE_ARGS (--benchmark; empty: smoke mode),
#   SUITE_K (which suite rows), ALLOW_CPU=1 (the dry run CI does on CPU with tiny TRAIN_ARGS).
# Expected on an H100 (estimated, not yet measured): tests ~2 min, seeds ~2 min, sweep ~3 min,
# suite ~2 min. Each stage is a separate command, so a short device lease can run them apart.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: benchmarks/run_gpu.sh DATA_DIR OUT_DIR [tests|seeds|sweep|suite|summary ...]" >&2
    exit 2
fi
DATA_DIR=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
shift 2
STAGES=("$@")
[[ ${#STAGES[@]} -gt 0 ]] || STAGES=(tests seeds sweep suite summary)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
SEEDS="${SEEDS:-5}"
SWEEP="${SWEEP:-0.05,0.1,0.2,0.4,0.8}"
SWEEP_SEEDS="${SWEEP_SEEDS:-2}"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a SUITE_EXTRA <<< "${SUITE_ARGS---benchmark}"
# The rows the targets are about: the reference pipeline, the fastest configuration and the
# loaders; every compiled row costs about a minute of compilation.
SUITE_K="${SUITE_K:-reference or torch-amp-cl-reduce-overhead or throughput}"

if [[ "${ALLOW_CPU:-0}" != 1 ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "run_gpu.sh: $PYTHON sees no CUDA device (ALLOW_CPU=1 dry-runs it on the CPU)" >&2
    exit 2
fi

timed() {  # timed NAME COMMAND...: runs it, logs to OUT/NAME.log, prints its wall time
    local name=$1 start status
    shift
    start=$(date +%s)
    echo "== $name: $*"
    set +e
    "$@" 2>&1 | tee "$OUT/$name.log"
    status=${PIPESTATUS[0]}
    set -e
    echo "== $name: exit $status after $(( $(date +%s) - start )) s"
    return "$status"
}

train() {  # train NAME FLAGS...: a (multi-)run into OUT/NAME, replacing an earlier one
    local name=$1
    shift
    timed "$name" "$PYTHON" -m fastcifar.train --amp --data-dir "$DATA_DIR" --out "$OUT/$name" \
        --overwrite "$@" ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"}
}

for stage in "${STAGES[@]}"; do
    case "$stage" in
        tests)
            status=0
            timed cuda-tests "$PYTHON" -m pytest tests -m cuda -q -p no:cacheprovider || status=$?
            # 5: nothing collected/ran (no GPU in a dry run) is not a failure of the code.
            echo "$status" > "$OUT/cuda-tests.status"
            [[ $status -eq 0 || $status -eq 5 ]] ;;
        seeds) train seeds --seeds "$SEEDS" ;;
        sweep) train sweep --lr-max "$SWEEP" --seeds "$SWEEP_SEEDS" ;;
        suite)
            timed suite "$PYTHON" -m pytest benchmarks -q -p no:cacheprovider \
                --bench-results "$OUT/suite" -k "$SUITE_K" ${SUITE_EXTRA[@]+"${SUITE_EXTRA[@]}"} ;;
        summary)
            "$PYTHON" -m benchmarks.gpu_summary "$OUT" --command "benchmarks/run_gpu.sh DATA OUT ${STAGES[*]}" ;;
        *)
            echo "run_gpu.sh: unknown stage '$stage' (tests, seeds, sweep, suite, summary)" >&2
            exit 2 ;;
    esac
done
