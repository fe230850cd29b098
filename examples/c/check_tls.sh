#!/usr/bin/env bash
# Runs the TLS examples together, with a certificate made here (the
# openssl command) in a temp directory, and checks what they say: the
# server starts ("listening on ..."); a client that trusts the certificate
# gets its line echoed, over TLS 1.3 with ALPN "echo"; a client that
# trusts only the system's store is refused (verification), and so is one
# asking for another name; --insecure passes; SIGINT stops the server with
# "bye" and status 0. Every wait is bounded. ctest runs:
#   examples/c/check_tls.sh build/examples/c/tls_echo_server build/examples/c/tls_client
set -euo pipefail

server=$1
client=$2
dir=$(mktemp -d)
log=$dir/server.log
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

"$server" "$dir/cert.pem" "$dir/key.pem" 0 >"$log" 2>&1 &
pid=$!
addr=
for _ in $(seq 300); do
  addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$log" 2>/dev/null || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "no 'listening on' line:"; cat "$log"; exit 1; }
port=${addr##*:}

run_client() { timeout 60 "$client" "$@" 2>"$dir/client.err"; }

out=$(run_client --ca "$dir/cert.pem" --name localhost 127.0.0.1 "$port" \
  "hello, tls")
[ "$out" = "hello, tls" ] || { echo "client said: $out"; cat "$dir/client.err"; exit 1; }
grep -q "TLS 1.3 with CN=localhost, ALPN echo, certificate trusted" \
  "$dir/client.err" || { echo "client reported:"; cat "$dir/client.err"; exit 1; }

# Verification is on by default: the system's store does not know it.
if run_client --name localhost 127.0.0.1 "$port" >/dev/null; then
  echo "a client without the CA was served"; exit 1
fi
grep -q "certificate verify failed: self-signed certificate" "$dir/client.err" ||
  { echo "client without the CA said:"; cat "$dir/client.err"; exit 1; }
# Another name.
if run_client --ca "$dir/cert.pem" --name example.com 127.0.0.1 "$port" \
  >/dev/null; then
  echo "a client asking for another name was served"; exit 1
fi
grep -q "hostname mismatch" "$dir/client.err" ||
  { echo "client with another name said:"; cat "$dir/client.err"; exit 1; }
# Turned off explicitly.
out=$(run_client --insecure 127.0.0.1 "$port" again)
[ "$out" = again ] || { echo "insecure client said: $out"; exit 1; }
grep -q "certificate NOT trusted" "$dir/client.err" ||
  { echo "insecure client reported:"; cat "$dir/client.err"; exit 1; }

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
grep -qx "connection: TLS 1.3, server name localhost, ALPN echo" "$log" ||
  { echo "the server did not report the handshake"; exit 1; }
grep -q "^handshake failed: " "$log" ||
  { echo "the server did not report a refused handshake"; exit 1; }
echo "tls echo: ok"
