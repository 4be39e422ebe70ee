#!/usr/bin/env bash
# Load benchmark: the same nginx backend measured directly (the baseline), through a Pilotfish
# sidecar, and through HAProxy (a peer plain proxy), side by side in one run, with wrk (HTTP/1.1
# keep-alive) and h2load (HTTP/2, many streams on few connections). Prints requests/s and latency
# per target and the ratio to the direct baseline, the proxies' CPU time per request (user +
# system, from /proc), and their resident memory.
#
#   benches/load.sh [DURATION_SECONDS] [CONNECTIONS]
#
# PILOTFISH_BIN=PATH measures that binary instead of building this checkout (e.g. to compare a
# build of an older commit with this one, run after run).
#
# Every server gets one thread/process (the machine has 2 cores; the load generator gets the
# other one). Numbers from a shared machine are noisy: compare ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
duration=${1:-10}
conns=${2:-50}

need_tools nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client
backend=$(port); backend_h2=$(port); sidecar=$(port); sidecar_h2=$(port); sidecar_full=$(port); admin=$(port); outbound=$(port); haproxy_port=$(port)

start_nginx "$backend" "$backend_h2"

cat >"$work/sidecar.yaml" <<CONF
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: bench}
spec:
  admin: 127.0.0.1:$admin
  outbound: {listen: 127.0.0.1:$outbound}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:$backend}]
  localPort: $sidecar
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend-h2}
spec:
  ports: [{port: 80, protocol: http2}]
  endpoints: [{address: 127.0.0.1:$backend_h2}]
  localPort: $sidecar_h2
---
# The same backend with every per-request policy on: route match with a header filter, route and
# per-try timeouts, retries (with body replay and budget), a rate limit, breaker and P2C-EWMA.
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend-full}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:$backend}]
  localPort: $sidecar_full
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-full}
spec:
  parentRefs: [{name: backend-full}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}, method: GET}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-bench, value: "on"}]}}]
    timeouts: {request: 5s, backendRequest: 2s}
    retry: {attempts: 2, backoff: 25ms, codes: [502, 503]}
---
apiVersion: pilotfish.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-full}
spec:
  targetRef: {kind: HTTPRoute, name: backend-full}
  perSecond: 10000000
---
apiVersion: pilotfish.io/v1alpha1
kind: BackendPolicy
metadata: {name: backend-full}
spec:
  targetRef: {kind: Service, name: backend-full}
  loadBalancer: p2c-ewma
CONF
TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$PILOTFISH_BIN" sidecar --config "$work/sidecar.yaml" &
pids+=($!)
sidecar_pid=$!

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$haproxy_port
  default_backend be
backend be
  server b1 127.0.0.1:$backend
CONF
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!)
haproxy_pid=$!

for p in $backend $backend_h2 $sidecar $sidecar_h2 $sidecar_full $haproxy_port; do wait_port "$p"; done

rss() { awk '/VmRSS/ {print $2 " KiB"}' "/proc/$1/status"; }
echo "idle RSS: pilotfish $(rss $sidecar_pid), haproxy $(rss $haproxy_pid)"

declare -A rps p50 p99 cpu
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wrk_run() { # name url [pid of the proxy, whose CPU per request is measured]
  local out before
  [[ -z ${3:-} ]] || before=$(cpu_ticks "$3")
  out=$(wrk -t1 -c"$conns" -d"${duration}s" --latency "$2")
  rps[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  cpu[$1]=-
  if [[ -n ${3:-} ]]; then
    local requests
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu[$1]=$(echo "($(cpu_ticks "$3") - $before) / $(getconf CLK_TCK) * 1000000 / $requests" | bc -l | xargs printf "%.2f")
  fi
  p50[$1]=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99[$1]=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errors
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  [[ -z $errors ]] || echo "$1: $errors"
}
wrk_run direct "http://127.0.0.1:$backend/"
wrk_run pilotfish "http://127.0.0.1:$sidecar/" "$sidecar_pid"
wrk_run pf-policies "http://127.0.0.1:$sidecar_full/" "$sidecar_pid"
wrk_run haproxy "http://127.0.0.1:$haproxy_port/" "$haproxy_pid"

echo
echo "HTTP/1.1 keep-alive, wrk -c$conns -d${duration}s (ratio = requests/s vs direct)"
echo "(pilotfish: default route; pf-policies: route + filter + timeouts + retries + rate limit;"
echo " cpu-us/req: the proxy's CPU time per request)"
printf "%-12s %12s %8s %10s %10s %11s\n" target req/s ratio p50 p99 cpu-us/req
for t in direct pilotfish pf-policies haproxy; do
  printf "%-12s %12s %8.3f %10s %10s %11s\n" "$t" "${rps[$t]}" "$(echo "${rps[$t]} / ${rps[direct]}" | bc -l)" "${p50[$t]}" "${p99[$t]}" "${cpu[$t]}"
done

h2_run() { # name url
  local out
  out=$(h2load -c4 -m100 -D"$duration" "$2" 2>&1)
  rps[$1]=$(awk '/^finished in/ {print $4}' <<<"$out")
  grep -E "^requests:" <<<"$out" | sed "s/^/$1 /"
}
echo
h2_run h2-direct "http://127.0.0.1:$backend_h2/"
h2_run h2-pilotfish "http://127.0.0.1:$sidecar_h2/"
echo "HTTP/2, h2load -c4 -m100 -D$duration: direct ${rps[h2-direct]} req/s, pilotfish ${rps[h2-pilotfish]} req/s, ratio $(echo "${rps[h2-pilotfish]} / ${rps[h2-direct]}" | bc -l | cut -c1-5)"
echo
echo "RSS after load: pilotfish $(rss $sidecar_pid), haproxy $(rss $haproxy_pid)"
