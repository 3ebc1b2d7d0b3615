#!/usr/bin/env bash
# The package as users get it (CI runs this after the tests): build the wheel and the
# sdist, check their metadata, install the wheel alone into a fresh virtual environment,
# and train and evaluate offline from it, outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m pip install -q build twine
python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
python -m twine check --strict "$work"/dist/*
tar tzf "$work"/dist/xpcnn-*.tar.gz >"$work/sdist.txt"
for member in LICENSE CHANGELOG.md tests/test_codebase.py docs/python.md benchmarks/gpu_check.sh \
    xpcnn/datasets/data/mnist-subset.npz xpcnn/kernels/cupy.cu; do
  grep -q "/$member\$" "$work/sdist.txt" || { echo "check_package: the sdist lacks $member" >&2; exit 1; }
done

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/xpcnn-*.whl
"$work/venv/bin/python" -c "import importlib.resources as r; assert (r.files('xpcnn.kernels') / 'cupy.cu').is_file()" \
  || { echo "check_package: the wheel lacks xpcnn/kernels/cupy.cu (CuPy's kernels)" >&2; exit 1; }
cd "$work"  # away from the checkout: what runs is the installed wheel
env -u XPCNN_DATA_DIR XDG_CACHE_HOME="$work/cache" "$work/venv/bin/xpcnn" train --no-download --limit 2000 \
  --epochs 1 --out run --no-progress
env -u XPCNN_DATA_DIR XDG_CACHE_HOME="$work/cache" "$work/venv/bin/xpcnn" evaluate run/checkpoint.npz --no-download \
  --json
"$work/venv/bin/python" - <<'PY'
import importlib.metadata as metadata
import xpcnn

assert xpcnn.__file__.startswith(__import__("sys").prefix), xpcnn.__file__
meta = metadata.metadata("xpcnn")
assert meta["License-Expression"] == "MIT" and any("LICENSE" in f.name for f in metadata.files("xpcnn")), meta
assert meta["Version"] == xpcnn.__version__
print(f"check_package: xpcnn {xpcnn.__version__} from the wheel trains offline; licence {meta['License-Expression']}")
PY
