#!/usr/bin/env bash
# Builds and runs every test: the C suite under ctest on the plain build,
# then again under AddressSanitizer+UBSan, ThreadSanitizer and valgrind
# memcheck; then the Python suite (tests/python, pytest) on Debian's python3,
# its debug interpreter, and with the extension under ASan+UBSan and TSan;
# and each libFuzzer target for 30 s (scripts/fuzz.sh); and a short soak
# (scripts/soak.sh: each echo server and the Lua HTTP one 24 s under
# hostile load, then the C echo server 20 s under valgrind; under 3
# minutes). Pass names to run only those
# (default asan tsan valgrind fuzz python python-dbg python-asan
# python-tsan soak). Compiler warnings are errors here
# (TREADLE_WERROR), as in CI, which runs this script.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Lua module and its tests need lua5.4 and its headers; its console
# edits lines with GNU readline; the REPL tests drive a pseudo-terminal with
# pexpect; TLS needs libssl-dev, and its example's test the openssl command;
# require "treadle.ngx" digests with OpenSSL, and its tests run Debian's
# OpenResty client libraries against redis-server and memcached; the model
# checks (tests/model) are relacy's, in C++; the fuzz targets
# (scripts/fuzz.sh) need clang and its libFuzzer; the soak charts
# matplotlib.
scripts/setup.sh lua5.4 liblua5.4-dev libreadline-dev python3-pytest python3-pexpect \
  libssl-dev openssl libpcre2-dev redis-server memcached lua-nginx-redis lua-nginx-memcached lua-nginx-dns lua-nginx-websocket lua-nginx-redis-connector \
  g++ relacy-dev clang-14 libclang-rt-14-dev libfuzzer-14-dev python3-matplotlib

presets=("$@")
[ ${#presets[@]} -eq 0 ] &&
  presets=(default asan tsan valgrind fuzz python python-dbg python-asan
           python-tsan soak)
jobs="$(nproc)"
for p in "${presets[@]}"; do
  echo "=== treadle: $p"
  case "$p" in
  fuzz) scripts/fuzz.sh --seconds 30 ;;
  soak)
    # not aiohttp: its heap grows for its first ~90 s (imports, caches),
    # longer than the RSS bound's first half in a 24 s run
    scripts/soak.sh --minutes 0.4 --servers c,python,lua,lua-http --out build-soak/ci
    scripts/soak.sh --minutes 0.34 --valgrind --out build-soak/ci
    ;;
  python) scripts/test_python.sh plain ;;
  python-*) scripts/test_python.sh "${p#python-}" ;;
  *)
    cmake --preset "$p" -DTREADLE_WERROR=ON >/dev/null
    cmake --build --preset "$p" -j "$jobs"
    ctest --preset "$p" -j "$jobs"
    ;;
  esac
done
echo "=== treadle: all tests passed (${presets[*]})"
