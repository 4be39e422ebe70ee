#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a shared, noisy machine
# where requests/s and CPU time are not. A sidecar (one worker thread) forwards HTTP/1.1
# keep-alive requests from h2load to nginx; it runs twice, with N and with 2N requests, and the
# difference divided by N is the cost of one request without start-up and shutdown.
#
#   benches/instructions.sh [REQUESTS]           (default 2000)
#   PILOTFISH_BIN=PATH benches/instructions.sh   measures that binary instead of this checkout
#   KEEP=DIR benches/instructions.sh              keeps the callgrind profiles (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}

packages=()
for p in nginx:nginx-light h2load:nghttp2-client valgrind:valgrind; do
  command -v "${p%%:*}" >/dev/null || packages+=("${p#*:}")
done
if ((${#packages[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
if [[ -z ${PILOTFISH_BIN:-} ]]; then
  cargo build --release -q
  PILOTFISH_BIN=target/release/pilotfish
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [[ -n ${KEEP:-} ]] && cp "$work"/callgrind.* "$KEEP"/; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
backend=$(port)

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$backend; location / { return 200 "hello from the backend\n"; } }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$backend"

# Total instructions of one sidecar run that forwards $1 requests.
count() {
  local sidecar admin out
  sidecar=$(port)
  admin=$(port)
  cat >"$work/sidecar.yaml" <<CONF
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: bench}
spec:
  admin: 127.0.0.1:$admin
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:$backend}]
  localPort: $sidecar
CONF
  out="$work/callgrind.$1"
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind -q --tool=callgrind --callgrind-out-file="$out" \
    "$PILOTFISH_BIN" sidecar --config "$work/sidecar.yaml" &
  local pid=$!
  wait_port "$sidecar"
  h2load --h1 -n "$1" -c 4 "http://127.0.0.1:$sidecar/" | grep -E '^requests:' >&2
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^totals:/ {print $2}' "$out"
}

one=$(count "$requests")
two=$(count $((2 * requests)))
echo "instructions per request: $(((two - one) / requests)) ($PILOTFISH_BIN, ${requests} and $((2 * requests)) requests)"
