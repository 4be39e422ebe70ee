#!/usr/bin/env bash
# Mesh-pair benchmark: a request crosses two proxies (the caller's and the callee's) on its way
# to the same nginx backend, as it does between two meshed services. Measured side by side in
# one run: direct (the floor), a Pilotfish pair in plaintext, a Pilotfish pair with mTLS between
# the sidecars, and an HAProxy pair in plaintext and with mTLS between the two HAProxies (the
# peer a user would otherwise build by hand). Prints requests/s, p50/p99, the CPU time per
# request of both proxies together (user + system, from /proc) and their resident memory.
#
#   benches/pair.sh [DURATION_SECONDS] [CONNECTIONS]
#
# PILOTFISH_BIN=PATH measures that binary instead of building this checkout.
#
# wrk keeps its connections alive and the sidecars pool theirs, so TLS handshakes are amortised
# the way they are in a running mesh; the comparison is the steady cost of encryption. Every
# server gets one thread/process. Compare ratios within one run: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
duration=${1:-10}
conns=${2:-50}

need_tools nginx:nginx-light haproxy:haproxy wrk:wrk openssl:openssl
backend=$(port)
a_plain=$(port); a_mtls=$(port); a_admin=$(port); a_outbound=$(port)
b_inbound=$(port); b_admin=$(port); b_outbound=$(port)
ha1_plain=$(port); ha1_tls=$(port); ha2_plain=$(port); ha2_tls=$(port)

start_nginx "$backend"

# One mesh CA and a leaf per side, as the control plane would issue them: ECDSA P-256, the
# SPIFFE ID as the only name, usable as client and server.
td=pilotfish.local
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench root" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
leaf() { # NAME SERVICE-ACCOUNT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/" \
    -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
  printf 'subjectAltName=critical,URI:spiffe://%s/ns/default/sa/%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
    "$td" "$2" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 1 -extfile "$work/$1.ext" -out "$work/$1.pem" 2>/dev/null
  cat "$work/$1.pem" "$work/$1.key" >"$work/$1.haproxy.pem"
}
leaf a client
leaf b backend

# B: the callee's sidecar in front of nginx; permissive and allowing any caller, so the
# plaintext pair and the mTLS pair share it.
cat >"$work/b.yaml" <<CONF
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: backend}
spec:
  admin: 127.0.0.1:$b_admin
  inbound: {listen: 127.0.0.1:$b_inbound, app: 127.0.0.1:$backend, mtls: {mode: permissive}}
  outbound: {listen: 127.0.0.1:$b_outbound}
  authorization: {default: allow}
CONF
# A: the caller's sidecar; one local port dials B in plaintext, the other B's identity over mTLS.
cat >"$work/a.yaml" <<CONF
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: client}
spec:
  admin: 127.0.0.1:$a_admin
  outbound: {listen: 127.0.0.1:$a_outbound}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend-plain}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:$b_inbound}]
  localPort: $a_plain
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: backend}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:$b_inbound, identity: "spiffe://$td/ns/default/sa/backend"}]
  localPort: $a_mtls
CONF
sidecar() { # NAME
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$PILOTFISH_BIN" sidecar --config "$work/$1.yaml" \
    --tls-cert "$work/$1.pem" --tls-key "$work/$1.key" --trust-bundle "$work/ca.pem" &
  pids+=($!)
}
sidecar b
b_pid=$!
sidecar a
a_pid=$!

# One thread, keep-alive both ways: as the sidecars run.
haproxy_preamble() {
  printf '%s\n' global '  nbthread 1' '  maxconn 4096' defaults '  mode http' '  timeout connect 1s' \
    '  timeout client 30s' '  timeout server 30s' '  option http-keep-alive'
}
# The HAProxy pair: HA1 (the caller's side) → HA2 (the callee's side) → nginx, once in
# plaintext and once with mutual TLS 1.3 between the two.
haproxy_preamble >"$work/haproxy1.cfg"
cat >>"$work/haproxy1.cfg" <<CONF
frontend plain
  bind 127.0.0.1:$ha1_plain
  default_backend to_ha2_plain
frontend tls
  bind 127.0.0.1:$ha1_tls
  default_backend to_ha2_tls
backend to_ha2_plain
  server ha2 127.0.0.1:$ha2_plain
backend to_ha2_tls
  server ha2 127.0.0.1:$ha2_tls ssl crt $work/a.haproxy.pem ca-file $work/ca.pem verify required ssl-min-ver TLSv1.3
CONF
haproxy_preamble >"$work/haproxy2.cfg"
cat >>"$work/haproxy2.cfg" <<CONF
frontend plain
  bind 127.0.0.1:$ha2_plain
  default_backend nginx
frontend tls
  bind 127.0.0.1:$ha2_tls ssl crt $work/b.haproxy.pem ca-file $work/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend nginx
backend nginx
  server b1 127.0.0.1:$backend
CONF
haproxy -f "$work/haproxy1.cfg" -db &
pids+=($!)
ha1_pid=$!
haproxy -f "$work/haproxy2.cfg" -db &
pids+=($!)
ha2_pid=$!

for p in $b_inbound $a_plain $a_mtls $ha1_plain $ha1_tls $ha2_plain $ha2_tls; do wait_port "$p"; done
# Both paths answer before anything is measured (a failing mTLS path would otherwise measure
# error pages).
for url in "http://127.0.0.1:$a_plain/" "http://127.0.0.1:$a_mtls/" "http://127.0.0.1:$ha1_tls/"; do
  curl -fsS -o /dev/null "$url" || { echo "$url does not answer 200" >&2; exit 1; }
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

declare -A rps p50 p99 cpu
run() { # name url proxy-pids...
  local name=$1 url=$2 out before requests errors
  shift 2
  before=$(cpu_ticks "$@")
  out=$(wrk -t1 -c"$conns" -d"${duration}s" --latency "$url")
  rps[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu[$name]=-
  if (($#)); then
    cpu[$name]=$(echo "($(cpu_ticks "$@") - $before) / $(getconf CLK_TCK) * 1000000 / $requests" | bc -l | xargs printf "%.2f")
  fi
  p50[$name]=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99[$name]=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  [[ -z $errors ]] || echo "$name: $errors"
}
run direct "http://127.0.0.1:$backend/"
run pf-plain "http://127.0.0.1:$a_plain/" "$a_pid" "$b_pid"
run pf-mtls "http://127.0.0.1:$a_mtls/" "$a_pid" "$b_pid"
run haproxy-plain "http://127.0.0.1:$ha1_plain/" "$ha1_pid" "$ha2_pid"
run haproxy-mtls "http://127.0.0.1:$ha1_tls/" "$ha1_pid" "$ha2_pid"

echo
echo "Two proxies between wrk and nginx, HTTP/1.1 keep-alive, wrk -c$conns -d${duration}s"
echo "(ratio = requests/s vs direct; cpu-us/req: both proxies' CPU time per request)"
printf "%-14s %12s %8s %10s %10s %11s\n" target req/s ratio p50 p99 cpu-us/req
for t in direct pf-plain pf-mtls haproxy-plain haproxy-mtls; do
  printf "%-14s %12s %8.3f %10s %10s %11s\n" "$t" "${rps[$t]}" "$(echo "${rps[$t]} / ${rps[direct]}" | bc -l)" "${p50[$t]}" "${p99[$t]}" "${cpu[$t]}"
done
echo
echo "pf-mtls vs haproxy-mtls: req/s $(echo "${rps[pf-mtls]} / ${rps[haproxy-mtls]}" | bc -l | cut -c1-5)x," \
  "cpu/req $(echo "${cpu[pf-mtls]} / ${cpu[haproxy-mtls]}" | bc -l | cut -c1-5)x"
echo "RSS after load (KiB): pilotfish A $(rss $a_pid) B $(rss $b_pid), haproxy 1 $(rss $ha1_pid) 2 $(rss $ha2_pid)"
