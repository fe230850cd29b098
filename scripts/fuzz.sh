#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang, ASan and UBSan
# (in build-fuzz/) and runs each for N seconds (default 60), starting from
# its seed corpus in tests/fuzz/corpus/<target>; prints the executions per
# target. New inputs that found coverage go to build-fuzz/corpus/<target>
# (copy the interesting ones into tests/fuzz/corpus to keep them); a crash
# leaves build-fuzz/crash-* and fails the script.
# Usage: scripts/fuzz.sh [--seconds N] [TARGET...]
#   (targets: wheel addr lua_value until shdict python)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
  --seconds) seconds="$2"; shift 2 ;;
  --seconds=*) seconds="${1#--seconds=}"; shift ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=(wheel addr lua_value until shdict python)

# libclang-rt-14-dev holds the ASan, UBSan and libFuzzer runtimes (clang-14
# only recommends it, so an install without recommends lacks it).
# The python target embeds Debian's libpython (python3-dev) and imports
# the extension (swig, setuptools, libssl-dev) and test_fuzz_args (pytest).
scripts/setup.sh clang-14 libclang-rt-14-dev libfuzzer-14-dev lua5.4 liblua5.4-dev \
  python3-dev python3-setuptools python3-pytest swig libssl-dev
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang-14 \
  -DPython3_EXECUTABLE=/usr/bin/python3 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTREADLE_FUZZ=ON \
  -DTREADLE_SANITIZE=address,undefined -DTREADLE_WERROR=ON \
  -DTREADLE_BUILD_TESTS=OFF -DTREADLE_BUILD_EXAMPLES=OFF \
  -DTREADLE_BUILD_BENCH=OFF -DTREADLE_BUILD_LUA=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" \
  --target "${targets[@]/#/fuzz-}" >/dev/null

# fuzz-python's extension: built as the targets are (clang, ASan, UBSan,
# coverage), its symbols served by the binary's sanitizer runtime, in
# build-fuzz/python beside a copy of the package's Python files. Not with
# -Werror: clang finds a warning in bindings/python that gcc does not.
if [[ " ${targets[*]} " == *" python "* ]]; then
  CC=clang-14 LDSHARED="clang-14 -shared" \
    CFLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    LDFLAGS="-fsanitize=address,undefined" TREADLE_WERROR=0 \
    /usr/bin/python3 setup.py -q build_ext --build-lib build-fuzz/python \
    --build-temp build-fuzz/python-obj --parallel "$(nproc)" >build-fuzz/python-build.log 2>&1 ||
    { tail -n 20 build-fuzz/python-build.log; exit 1; }
  cp bindings/python/treadle/*.py build-fuzz/python/treadle/
fi

summary=()
for t in "${targets[@]}"; do
  echo "=== fuzz: $t for ${seconds}s"
  work="build-fuzz/corpus/$t"
  mkdir -p "$work"
  log="build-fuzz/fuzz-$t.log"
  # -max_len 4096: the targets' programs need no more. Leaks are errors
  # (LeakSanitizer runs after every input that allocated, and at exit),
  # python's too: PYTHONMALLOC=malloc lets ASan see Python's memory, and
  # what the interpreter keeps stays reachable.
  vars=()
  [ "$t" = python ] &&
    vars=(PYTHONPATH=python:../tests/fuzz:../tests/python PYTHONMALLOC=malloc)
  if ! (cd build-fuzz && env "${vars[@]}" "./tests/fuzz/fuzz-$t" -max_total_time="$seconds" \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="./$t-" \
        "corpus/$t" "../tests/fuzz/corpus/$t") >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED (input saved as build-fuzz/$t-crash-*; log $log)"
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  summary+=("$t: $runs executions in ${seconds}s")
  echo "fuzz: $t: $runs executions in ${seconds}s"
done
echo "=== fuzz summary"
printf '%s\n' "${summary[@]}"
echo "${#targets[@]} passed, 0 failed"
