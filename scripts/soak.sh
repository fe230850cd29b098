#!/usr/bin/env bash
# The soak test (issue 17 item 1; docs/TESTING.md "Soak"): the C, Python and
# Lua echo servers and the Lua HTTP example, each under tests/soak/soak.py's mix of steady, resetting,
# half-open, slowloris, never-reading and storming clients on 127.0.0.1,
# sampled every second (RSS, fds, threads: CSV and PNG per server in OUT),
# then SIGTERM under full load. Fails when a bound, a byte, a probe or the
# exit status is off. Builds what it needs first: the release preset
# (echo_server, the Lua module) and the Python extension, as bench/ does.
# Usage: scripts/soak.sh [--minutes N] [--servers c,python,lua,lua-http,aiohttp] [--out DIR]
#                        [--valgrind]
# (default 10 minutes, every server but aiohttp-asyncio, the aiohttp
# example on asyncio's own loop, and leaky; build-soak/; --valgrind: only the C
# server, under valgrind memcheck, no leak allowed at the SIGTERM exit.)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,13p' "$0"; exit 0 ;; esac

# prlimit is util-linux's; matplotlib draws the charts (Debian's, for
# /usr/bin/python3); the extension needs swig and Python's headers. Warnings
# are errors, as in CI.
scripts/setup.sh lua5.4 liblua5.4-dev swig python3-dev python3-setuptools \
  python3-matplotlib valgrind util-linux python3-aiohttp
cmake --preset release -DTREADLE_WERROR=ON >/dev/null
cmake --build --preset release -j "$(nproc)" --target echo_server treadle_lua >/dev/null
TREADLE_WERROR=1 PYTHON=/usr/bin/python3 scripts/build_python.sh >/dev/null
exec /usr/bin/python3 tests/soak/soak.py "$@"
