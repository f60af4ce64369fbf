#!/usr/bin/env bash
# The GPU checks of issue 10, in one run of about 5 minutes on one GPU (each step has its own time limit,
# 8 minutes in all):
#   1. the CUDA tests (every test whose name says cuda, in the files that have them),
#   2. scripts/bench_transform.py with its CUDA rows (target: >= 50x torchvision's per-image PIL at 224x224),
#   3. scripts/gpu_search_slice.py: reduced CIFAR-10 with WRN-40-2, images per second of phase 1 (child
#      training) and phase 2 (policy scoring), and the fraction of the time the GPU waits on the host.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default: $OUT, else runs/gpu-check). It writes 7 files there:
#   env.txt, cuda_tests.txt, bench_transform.{txt,json}, gpu_search_slice.{txt,json}, summary.json
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
# PYTHON picks the interpreter (default python3). Packages the machine lacks (jsonschema on a bare CUDA
# image) are installed from WHEELS (default .wheels) when that folder exists, without an index.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu-check}}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.wheels}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import jsonschema" 2>/dev/null && [ -d "$WHEELS" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" jsonschema
fi
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse HEAD 2>/dev/null || echo "no git"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    nproc
} >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

declare -A STATUS
step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to OUT_DIR/NAME.txt and the console
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    STATUS[$name]=${PIPESTATUS[0]}
    echo "== $name: exit ${STATUS[$name]}"
}

step cuda_tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda \
    tests/test_transforms.py tests/test_transforms_device.py tests/test_density.py tests/test_train.py tests/test_data.py
step bench_transform 150 "$PY" scripts/bench_transform.py --threads "$(nproc)" --repeats 5 \
    --json "$OUT_DIR/bench_transform.json"
step gpu_search_slice 180 "$PY" scripts/gpu_search_slice.py --out "$OUT_DIR"

failed=0
summary="{"
for name in cuda_tests bench_transform gpu_search_slice; do
    summary+="\"$name\": ${STATUS[$name]}, "
    [ "${STATUS[$name]}" -eq 0 ] || failed=1
done
summary+="\"out\": \"$OUT_DIR\"}"
echo "$summary" >"$OUT_DIR/summary.json"
echo "exit statuses: $summary"
exit "$failed"
