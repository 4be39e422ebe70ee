# Shared by the benchmark scripts (sourced, not run): the tools they need, the binary they
# measure, a scratch directory whose processes end with the script, and free loopback ports.

# Installs the Debian packages of the commands that are missing: need_tools CMD:PACKAGE...
need_tools() {
  local packages=() p
  for p in "$@"; do
    command -v "${p%%:*}" >/dev/null || packages+=("${p#*:}")
  done
  if ((${#packages[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

# PILOTFISH_BIN=PATH measures that binary (e.g. a build of an older commit); otherwise this
# checkout is built.
if [[ -z ${PILOTFISH_BIN:-} ]]; then
  cargo build --release -q
  PILOTFISH_BIN=target/release/pilotfish
fi

work=$(mktemp -d)
pids=()
# KEEP=DIR keeps the scratch directory's callgrind profiles.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then cp "$work"/callgrind.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "port $1 never opened" >&2
  exit 1
}

# The upstream every benchmark shares: nginx, one worker, a short body, keep-alive without limit,
# on PORT (HTTP/1.1) and, given, HTTP2_PORT (h2c): start_nginx PORT [HTTP2_PORT]
start_nginx() {
  cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    ${2:+listen 127.0.0.1:$2 http2;}
    location / { return 200 "hello from the backend\n"; }
  }
}
CONF
  nginx -c "$work/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  wait_port "$1"
}
