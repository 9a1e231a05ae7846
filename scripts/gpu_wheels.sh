#!/bin/sh
# Wheels of what lcdata needs and the GPU image (PyTorch 2.11 + CUDA 13, Python 3.12) lacks: polars (with its
# runtime) and zstandard, at the versions of this checkout's venv, into .whl/ (ignored by git). They travel with
# the working tree to a machine without network (about 58 MiB); there, before `make gpu-check`:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# Usage: sh scripts/gpu_wheels.sh [PYTHON]   (PYTHON: the interpreter whose versions to copy; default .venv/bin/python)
set -eu
py=${1:-.venv/bin/python}
pins=$("$py" - <<'PY'
from importlib.metadata import PackageNotFoundError, version
out = []
for name in ("polars", "polars-runtime-32", "zstandard"):
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:  # polars before 1.34 ships as one wheel, without a separate runtime
        pass
print(" ".join(out))
PY
)
echo "gpu_wheels: $pins"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins
du -sh .whl
