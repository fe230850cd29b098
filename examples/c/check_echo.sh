#!/usr/bin/env bash
# Runs an echo example as its comment says and checks what it says: the
# server starts ("listening on ..."), the client's echo comes back, and
# SIGINT stops the server with "bye" and status 0 (and, for Unix, its
# socket file is gone). Every wait is bounded. ctest runs:
#   examples/c/check_echo.sh udp build/examples/c/udp_echo
#   examples/c/check_echo.sh unix build/examples/c/unix_echo
set -euo pipefail

kind=$1
exe=$2
dir=$(mktemp -d)
log=$dir/server.log
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

case $kind in
udp) "$exe" 0 >"$log" 2>&1 & ;;
unix) "$exe" "$dir/echo.sock" >"$log" 2>&1 & ;;
*) echo "usage: $0 udp|unix EXE"; exit 2 ;;
esac
pid=$!
addr=
for _ in $(seq 300); do
  addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$log" 2>/dev/null || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "no 'listening on' line:"; cat "$log"; exit 1; }

if [ "$kind" = udp ]; then
  out=$(timeout 60 "$exe" --client "${addr##*:}" 50)
  [ "$out" = "50/50 echoed" ] || { echo "client said: $out"; exit 1; }
else
  [ -S "$addr" ] || { echo "$addr is not a socket"; exit 1; }
  out=$(timeout 60 "$exe" --client "$addr" "hello, unix")
  [ "$out" = "echoed: hello, unix" ] || { echo "client said: $out"; exit 1; }
  # A second server on the same path: in use while the first one lives.
  if timeout 10 "$exe" "$addr" >"$dir/second.log" 2>&1; then
    echo "a second server bound a live path"; exit 1
  fi
  grep -q "address already in use" "$dir/second.log" ||
    { echo "second server said:"; cat "$dir/second.log"; exit 1; }
fi

# A background job of a script starts with SIGINT ignored; treadle's
# signal listener takes SIGINT over all the same.
kill -INT "$pid"
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
status=0
wait "$pid" || status=$?
pid=
cat "$log"
[ "$status" -eq 0 ] || { echo "exit status $status after SIGINT"; exit 1; }
grep -qx bye "$log" || { echo "no 'bye' after SIGINT"; exit 1; }
if [ "$kind" = unix ] && [ -e "$addr" ]; then
  echo "$addr is still there after the server closed"; exit 1
fi
echo "$kind echo: ok"
