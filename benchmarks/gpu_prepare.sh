#!/usr/bin/env bash
# Run HERE (the CPU machine) before a GPU check. The GPU machine has CuPy, PyTorch with
# CUDA, pytest, hypothesis, Pillow, onnx and onnxruntime, but not array-api-compat or
# array-api-strict, and no internet: this puts their wheels (pure Python, for the Python
# 3.12 there) into .whl/, which git ignores and the device run carries. See docs/gpu.md, "The GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "array-api-compat==1.16.0" "array-api-strict==2.6.1"
ls -l .whl
