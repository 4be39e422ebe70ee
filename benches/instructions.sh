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
source benches/common.sh
requests=${1:-2000}

need_tools nginx:nginx-light h2load:nghttp2-client valgrind:valgrind
backend=$(port)

start_nginx "$backend"
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
