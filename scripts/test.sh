#!/usr/bin/env bash
# Builds and runs every test: the C suite under ctest on the plain build,
# then again under AddressSanitizer+UBSan, ThreadSanitizer and valgrind
# memcheck. Pass preset names to run only those (default asan tsan valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(default asan tsan valgrind)
jobs="$(nproc)"
for p in "${presets[@]}"; do
  echo "=== treadle: $p"
  cmake --preset "$p" >/dev/null
  cmake --build --preset "$p" -j "$jobs"
  ctest --preset "$p" -j "$jobs"
done
echo "=== treadle: all tests passed (${presets[*]})"
