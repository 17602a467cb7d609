#!/usr/bin/env bash
# The GPU measurements in one command, training throughput first (paper preset, bf16-mixed).
#
#   benchmarks/bench_train_gpu.sh                       # on a CUDA machine: updates RESULTS.md
#   DEVICE=cpu benchmarks/bench_train_gpu.sh --quick    # smoke test of the same commands on a CPU
#
# Extra arguments (--quick, --results PATH) go to every script. PYTHON picks the
# interpreter (default: .venv/bin/python if it exists, else python3). Each script writes
# its own "<name>_cuda" section of RESULTS.md, next to the CPU numbers. About 2 minutes
# on one H100, plus about 65 s to generate the built-in data set if data/builtin is missing.
#
# Throughput, latency and memory use bf16 autocast (--amp); Matrix NMS runs in float32.
#
# bench_model.py and bench_targets.py also take --device cuda; every script writes a
# "<name>_cuda" section on a GPU, so CPU and GPU numbers stand side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
set -x
"$PYTHON" benchmarks/bench_train.py --device "$DEVICE" --amp --presets paper cpu "$@"
"$PYTHON" benchmarks/bench_latency.py --device "$DEVICE" --amp "$@"
"$PYTHON" benchmarks/bench_data.py --device "$DEVICE" --amp "$@"
"$PYTHON" benchmarks/bench_matrix_nms.py --device "$DEVICE" "$@"
