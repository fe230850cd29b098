#!/usr/bin/env bash
# Builds the Python extension in place and runs tests/python under pytest.
#   scripts/test_python.sh [plain|dbg|asan|tsan]
# plain: Debian's python3. dbg: Debian's debug interpreter (python3-dbg),
# whose refcount checks and asserts catch reference bugs. asan / tsan: the
# extension built with AddressSanitizer+UBSan or ThreadSanitizer, the
# runtime preloaded into the (uninstrumented) interpreter. Compiler and SWIG
# warnings are errors (TREADLE_WERROR, read by setup.py), as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-plain}"
scripts/setup.sh swig python3-dev python3-setuptools python3-pytest python3-dbg python3-pexpect libssl-dev \
  libpython3.11-testsuite python3-uvloop python3-aiohttp python3-websockets python3-httpx python3-anyio python3-aiosqlite
py=/usr/bin/python3
export TREADLE_WERROR=1
env=()
case "$mode" in
plain) ;;
dbg) py=/usr/bin/python3-dbg ;;
asan)
  export CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  export LDFLAGS="-fsanitize=address,undefined"
  env=(LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
       ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
       PYTHONMALLOC=malloc TREADLE_SANITIZER=asan)
  ;;
tsan)
  export CFLAGS="-fsanitize=thread" LDFLAGS="-fsanitize=thread"
  env=(LD_PRELOAD="$(gcc -print-file-name=libtsan.so)"
       TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0:suppressions=$PWD/tests/tsan.supp" TREADLE_SANITIZER=tsan)
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
# Each mode builds in its own temp dir; a sanitizer's or the debug build
# is replaced by the plain one afterwards, which the examples expect.
rm -f bindings/python/treadle/_core*.so
if [ "$mode" != plain ]; then
  # --force: setuptools keeps the last build's .so in its build_lib, and
  # without it would copy that (the sanitizer's) back into place.
  trap 'rm -f bindings/python/treadle/_core*.so; env -u CFLAGS -u LDFLAGS scripts/build_python.sh --force >/dev/null' EXIT
fi
PYTHON="$py" BUILD_TEMP="build-python/$mode" scripts/build_python.sh --force
env "${env[@]}" PYTHONPATH=bindings/python "$py" -m pytest tests/python -q -p no:cacheprovider
# CPython's asyncio tests on treadle's loop against asyncio's own (about
# 90 s for both loops on a 2-core machine; tests/python/asyncio_conformance).
if [ "$mode" = plain ]; then
  time "$py" tests/python/asyncio_conformance/run.py
fi
