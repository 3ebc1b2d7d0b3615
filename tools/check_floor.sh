#!/usr/bin/env bash
# The oldest NumPy and array-api-compat that pyproject.toml says xpcnn works with (the
# ">=" floors of its dependencies, installed exactly), in a fresh environment, running the
# tests of the array code: layers, networks, backends, NumPy's kernels, gradient checks.
# A floor that is too low fails here rather than on a user's machine (array-api-compat
# 1.11 to 1.15 cannot reshape a torch tensor without a copy).
set -euo pipefail
cd "$(dirname "$0")/.."

floors=$(python3 -c '
import sys, tomllib  # Python 3.11, as CI has
with open("pyproject.toml", "rb") as handle:
    needs = [d.split(";")[0].strip() for d in tomllib.load(handle)["project"]["dependencies"]]
unchecked = [d for d in needs if ">=" not in d or "," in d]
if unchecked:
    sys.exit(f"check_floor: {unchecked[0]} is no single floor (NAME>=VERSION) this script can install")
print(" ".join(d.replace(">=", "==") for d in needs))')
echo "check_floor: $floors"
python3 -m venv .floor-venv
# shellcheck disable=SC1091
. .floor-venv/bin/activate
pip install -q -e . pytest hypothesis array-api-strict numba torch==2.13.0 $floors
python -c 'import numpy, array_api_compat; print(f"check_floor: numpy {numpy.__version__}, array-api-compat {array_api_compat.__version__}")'
python -m pytest -q -p no:cacheprovider -m "not slow" tests/layers tests/test_model.py tests/test_backend.py \
  tests/kernels/test_numpy.py tests/kernels/test_numba.py tests/diagnostics/test_gradcheck.py
