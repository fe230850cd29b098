#!/usr/bin/env bash
# Builds the Python extension in place (bindings/python/treadle/_core*.so)
# for the tests and examples, with the interpreter in $PYTHON (default:
# Debian's /usr/bin/python3, which sees Debian's pytest and uvloop).
# Extra arguments go to build_ext (e.g. --debug).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/usr/bin/python3}"
"$PYTHON" setup.py -q build_ext --inplace --build-temp "build-python/$("$PYTHON" -c 'import sys; print(sys.implementation.cache_tag + getattr(sys, "abiflags", ""))')" "$@"
