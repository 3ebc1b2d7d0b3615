#!/usr/bin/env bash
# GPU check: run THERE (the GPU machine), from the repository root, with .whl/ carried
# (benchmarks/gpu_prepare.sh makes it here). See docs/gpu.md, "The GPU check". Within about 8
# minutes its steps write these files in a folder of their own, and after each step it packs them into
# $OUT (default gpu-results/) as summary.md, env.txt and results.tar.gz (all of them), since a device
# run brings back at most 8 files of its $OUT:
#   env.txt        GPU, libraries, DLPack round trip, xpcnn's CUDA kernels compiled once (the preflight;
#                  kernels that do not compile are skipped, and the rest runs CuPy's own path)
#   pytest-kernels.txt  CuPy's CUDA kernels (tests/kernels/test_cupy.py) against CuPy's standard path,
#                  first: every later step runs through them
#   bench.md       CuPy (directly and as CUDA graphs) vs PyTorch-CUDA (and xpcnn on torch:cuda) throughput,
#                  kernels per step, memory: the issue's measure, before the slower checks
#   parity.txt     layer-by-layer parity: numpy vs cupy, numpy vs torch:cuda, cupy vs torch:cuda,
#   parity.jsonl   both presets, float32 and float64, plus 5 training steps (and as JSON)
#   pytest-graphs.txt  the tests of steps recorded as CUDA graphs (tests/train/test_step.py, tests/test_backend.py)
#   train.txt      one epoch of lenet on cupy and on torch:cuda, with and without CUDA graphs
#   products.md    each matrix product of a lenet and a resnet20 step: CuPy's product kernel vs cuBLAS
#   pytest-gpu.txt the other gpu-marked tests, which FAIL (not skip) when CUDA is unusable
#   bench-residual.md  bench.md's tables for resnet20 and cifar, if time is left
#   summary.md     all of it on one page: commit it as benchmarks/results/gpu-<date>.md
# Without a usable CUDA device it stops after the preflight, within seconds, exit 3.
set -u
OUT=${OUT:-gpu-results}
WORK=$(mktemp -d)  # where the steps write; pack brings it to $OUT
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore XPCNN_REQUIRE_GPU=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: could not install the carried wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-470}))
left() { echo $((DEADLINE - SECONDS)); }
step() {  # step NAME SECONDS COMMAND...: run with a time-out that never passes the deadline
  local name=$1 limit=$2; shift 2
  if [ "$(left)" -lt 10 ]; then echo "gpu_check: no time left for $name" >&2; return 0; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "gpu_check: $name (up to $limit s)" >&2
  timeout "$limit" "$@"
  echo "gpu_check: $name exit $?" >&2
  python3 benchmarks/gpu_steps.py pack "$WORK" "$OUT"
}

python3 benchmarks/gpu_steps.py preflight "$WORK" || { cp "$WORK/env.txt" "$OUT/"; exit 3; }
python3 benchmarks/gpu_steps.py pack "$WORK" "$OUT"
if [ -e "$WORK/kernels-failed.txt" ]; then  # the preflight says why (env.txt): the rest measures CuPy's own path
  export XPCNN_CUPY=0
else
  # A fresh machine compiles CuPy's own kernels for the reference path as well: minutes, at worst.
  step kernels 150 sh -c "python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels/test_cupy.py \
    >'$WORK/pytest-kernels.txt' 2>&1"
fi
# The issue's measure (throughput ratios, kernels per step) before the slower checks
step bench 120 sh -c "python3 benchmarks/bench.py --gpu --repeats 3 >'$WORK/bench.md' 2>&1"
step parity 150 python3 benchmarks/gpu_steps.py parity "$WORK"
# The tests of steps recorded as CUDA graphs (new on CuPy)
step graphs 90 sh -c "python3 -m pytest -q -m gpu -p no:cacheprovider tests/train/test_step.py tests/test_backend.py \
  >'$WORK/pytest-graphs.txt' 2>&1"
step train 90 python3 benchmarks/gpu_steps.py train "$WORK"
step products 40 python3 benchmarks/gpu_steps.py products "$WORK"
step pytest 120 sh -c "python3 -m pytest -q -m gpu -p no:cacheprovider --ignore=tests/kernels/test_cupy.py \
  --ignore=tests/train/test_step.py --ignore=tests/test_backend.py tests >'$WORK/pytest-gpu.txt' 2>&1"
# Last, with whatever time is left: the residual presets' throughput (minutes on a GPU's first compile).
step residual 120 sh -c "python3 benchmarks/bench.py --gpu --presets resnet20,cifar --repeats 2 >'$WORK/bench-residual.md' 2>&1"
echo "gpu_check: done in $SECONDS s: $(ls "$WORK" | tr '\n' ' ')in $OUT/results.tar.gz" >&2
