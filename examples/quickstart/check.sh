#!/usr/bin/env bash
# Runs a quick start as the README does and checks what it says: plain, the
# spawned task's result; with --echo 0, one line echoed back through the
# server, then "bye" and exit status 0 after a SIGINT. Every wait is
# bounded. ctest runs it on the C quick start:
#   examples/quickstart/check.sh build/examples/quickstart/quickstart
set -euo pipefail

out=$(timeout 30 "$@")
[[ $out == *"the spawned task slept 10 ms and returned 42"* ]] ||
  { echo "unexpected output: $out"; exit 1; }

log=$(mktemp)
"$@" --echo 0 >"$log" 2>&1 &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true; rm -f "$log"' EXIT
port=
for _ in $(seq 300); do
  port=$(sed -n 's/^echo server on 127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "no 'echo server on' line:"; cat "$log"; exit 1; }

exec 3<>"/dev/tcp/127.0.0.1/$port"
echo "hello, treadle" >&3
reply=
read -r -t 10 reply <&3 || true
exec 3>&-
[ "$reply" = "hello, treadle" ] || { echo "echoed: '$reply'"; exit 1; }

# A background job of a script starts with SIGINT ignored; treadle's
# signal listener takes SIGINT over all the same, as it must in a terminal.
kill -INT "$pid"
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && { echo "still running 30 s after SIGINT"; kill -KILL "$pid"; }
status=0
wait "$pid" || status=$?
cat "$log"
[ "$status" -eq 0 ] || { echo "exit status $status after SIGINT"; exit 1; }
grep -qx bye "$log" || { echo "no 'bye' after SIGINT"; exit 1; }
echo "quickstart: ok"
