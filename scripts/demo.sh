#!/usr/bin/env bash
# Builds treadle and runs the demo (examples/c/sleep_demo.c).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target sleep_demo
exec build/examples/c/sleep_demo
