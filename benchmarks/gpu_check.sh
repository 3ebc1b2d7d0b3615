#!/usr/bin/env bash
# GPU check: run on a machine with CUDA, CuPy and PyTorch but no internet, from the
# repository root. Carry array-api-compat and array-api-strict as wheels in .whl/ (on the
# CPU machine: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl
# array-api-compat array-api-strict). Writes everything under $OUT (default: gpu-results/), at most
# 8 files, within about five minutes:
#   env.txt         GPU, driver, library versions, `xpcnn info`
#   pytest-gpu.txt  the gpu-marked tests (CuPy and torch-on-CUDA rows of the test matrix)
#   parity.txt      `xpcnn parity` tables: numpy vs cupy and numpy vs torch:cuda, both presets, both dtypes
#   parity.jsonl    the same reports as JSON, one per line
#   train.txt       a short CuPy training run of lenet (bundled subset, one epoch) and its summary
#   bench.md        the CuPy vs torch-CUDA throughput table (benchmarks/bench.py --gpu), if present
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import sys, numpy, cupy, torch, array_api_compat; print("python", sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda, "array_api_compat", array_api_compat.__version__)'
  python3 -m xpcnn.cli info
} >"$OUT/env.txt" 2>&1

timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests >"$OUT/pytest-gpu.txt" 2>&1
echo "pytest exit $?" >>"$OUT/pytest-gpu.txt"

: >"$OUT/parity.txt"
: >"$OUT/parity.jsonl"
for other in cupy torch:cuda; do
  for model in tutorial lenet; do
    for dtype in float32 float64; do
      args=(--backends "numpy,$other" --model "$model" --dtype "$dtype" --steps 5)
      { echo "== xpcnn parity ${args[*]}"; timeout 60 python3 -m xpcnn.cli parity "${args[@]}"; echo "exit $?"; } >>"$OUT/parity.txt" 2>&1
      timeout 60 python3 -m xpcnn.cli parity "${args[@]}" --json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >>"$OUT/parity.jsonl" 2>>"$OUT/parity.txt"
    done
  done
done

rm -rf /tmp/xpcnn-gpu-run
{
  timeout 120 python3 -m xpcnn.cli train --backend cupy --model lenet --epochs 1 --no-download --no-progress --no-plots --out /tmp/xpcnn-gpu-run
  echo "exit $?"
  cat /tmp/xpcnn-gpu-run/summary.json
} >"$OUT/train.txt" 2>&1

if [ -f benchmarks/bench.py ]; then
  timeout 120 python3 benchmarks/bench.py --gpu --repeats 3 >"$OUT/bench.md" 2>&1
fi
echo "done: $(ls "$OUT")"
