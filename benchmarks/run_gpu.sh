#!/usr/bin/env bash
# The one prepared command for a bare, time-boxed GPU machine: every number this project needs,
# in order of value, within a budget (benchmarks/gpu_run.py says how). It installs nothing and
# runs from the source tree, reads CIFAR-10 from DATA_DIR, works in a folder outside OUT_DIR and
# leaves exactly four files in OUT_DIR: summary.md, results.json, log.txt, runs.tgz.
#
# Usage: benchmarks/run_gpu.sh DATA_DIR OUT_DIR [seeds|suite|sweep|tests|first-conv|peer ...]
#   (default: all)
# Environment: PYTHON (python3), BUDGET_S (500), SEEDS (5), SWEEP (0.05,0.2,0.4), SWEEP_SEEDS (1),
#   PEER_SEEDS (1), PEER_ARGS (flags for benchmarks/peer.py; --device cuda),
#   TRAIN_ARGS (extra flags for fastcifar.train), SUITE_ARGS (--benchmark; empty: smoke mode),
#   SUITE_K (which suite rows), CONV_ARGS (flags for benchmarks/first_conv.py; --repeats 20),
#   WORK (the working folder), ALLOW_CPU=1 (a dry run on the CPU),
#   FASTCIFAR_COMMIT (the commit, where git and .provenance.json are both missing).
set -uo pipefail
# No cd: DATA_DIR and OUT_DIR are read from where the command was started.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "run_gpu.sh: no $PYTHON here: set PYTHON to the interpreter that has torch" >&2
    exit 2
fi
export PYTHON PYTHONUNBUFFERED=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m benchmarks.gpu_run "$@"
