#!/usr/bin/env bash
# Runs the benchmark suite against ../shared/bench's peers and writes
# bench/report/REPORT.md, its PNG charts and raw.jsonl (bench/report.py).
#
#   scripts/bench_report.sh [--quick] [more bench/report.py options]
#
# Installs the Debian packages that are missing (scripts/setup.sh), copies
# ../shared/bench (read-only) to build-bench/peers and builds there each
# peer not built yet, builds treadle's release preset (treadle_bench,
# echo_server, the Lua module) and the Python extension, then runs
# bench/report.py. A peer that does not build is left out of the report,
# which says so. Build logs: build-bench/logs. The default run takes about
# 17 minutes on 2 cores, --quick under 3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
peers=$root/build-bench/peers
logs=$root/build-bench/logs

scripts/setup.sh python3-matplotlib python3-uvloop swig python3-dev lua5.4 \
  liblua5.4-dev lua-cqueues lua-luv golang-go libuv1-dev librust-tokio-dev

mkdir -p "$logs"
if [ ! -d "$peers" ]; then
  cp -r "$root/../shared/bench" "$peers"
  chmod -R u+w "$peers"
fi

# build_peer NAME DIR "OUTPUTS" COMMAND...: runs COMMAND in $peers/DIR
# unless every output (relative to $peers) is already there.
build_peer() {
  local name=$1 dir=$2 outputs=$3 out
  shift 3
  for out in $outputs; do
    [ -x "$peers/$out" ] || {
      echo "treadle: building $name (log: $logs/build-$name.log)"
      (cd "$peers/$dir" && "$@") >"$logs/build-$name.log" 2>&1 ||
        echo "treadle: $name did not build; the report leaves it out"
      return 0
    }
  done
}
cargo=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
export GOPROXY=off GOFLAGS=-mod=mod GOCACHE=$root/build-bench/gocache
build_peer echoload echoload echoload/echoload make
build_peer c-epoll servers/c-epoll servers/c-epoll/echo_epoll make
build_peer libuv servers/libuv servers/libuv/echo_uv make
build_peer tokio rust \
  "rust/target/release/echo_tokio rust/target/release/micro_tokio" \
  "$cargo" build --release --offline
build_peer go go "go/echo_go go/micro_go" \
  sh -c 'go build -o echo_go ./echo && go build -o micro_go ./micro'

echo "treadle: building the release preset and the Python extension" \
  "(logs: $logs/build-treadle.log, build-python.log)"
{
  cmake --preset release &&
    cmake --build --preset release -j "$(nproc)" \
      --target treadle_bench echo_server treadle_lua
} >"$logs/build-treadle.log" 2>&1 || {
  tail -n 20 "$logs/build-treadle.log"
  exit 1
}
scripts/build_python.sh >"$logs/build-python.log" 2>&1 || {
  tail -n 20 "$logs/build-python.log"
  exit 1
}

export TREADLE_PEERS_DIR=$peers
exec /usr/bin/python3 bench/report.py "$@"
