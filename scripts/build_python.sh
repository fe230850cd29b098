#!/usr/bin/env bash
# Builds the Python extension in place (bindings/python/treadle/_core*.so)
# for the tests and examples, with the interpreter in $PYTHON (default:
# Debian's /usr/bin/python3, which sees Debian's pytest and uvloop).
# Objects go to $BUILD_TEMP (default build-python/<interpreter tag>); extra
# arguments go to build_ext (e.g. --force). CFLAGS/LDFLAGS are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/usr/bin/python3}"
tag="$("$PYTHON" -c 'import sys; print(sys.implementation.cache_tag + sys.abiflags)')"
"$PYTHON" setup.py -q build_ext --inplace --build-temp "${BUILD_TEMP:-build-python/$tag}" "$@"
