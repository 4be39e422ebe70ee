#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the system packages and the Python
# test clients it needs, then checks formatting and lints and runs every test.
# Run as root (the transparent-mode test creates a network namespace and iptables rules).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and tools the end-to-end tests drive: curl, nghttp/h2load, iptables, ip, setpriv,
# openssl, tcpdump; nginx and HAProxy for the mesh benchmark's smoke run; Chromium for the dashboard.
packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need curl curl
need nghttp nghttp2-client
need h2load nghttp2-client
need iptables iptables
need ip iproute2
need setpriv util-linux
need openssl openssl
need tcpdump tcpdump
need faketime faketime
need nginx nginx-light
need haproxy haproxy
need etcd etcd-server
need protoc protobuf-compiler
# The dashboard's browser test: Debian's Chromium, headless, and its WebDriver.
need chromium chromium
need chromedriver chromium-driver
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's build needs, are only
# a Recommends of protobuf-compiler, and --no-install-recommends leaves them out.
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || packages+=(libprotobuf-dev)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
if ((${#packages[@]})); then
  echo "==> installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Python test clients (grpcio, websockets, prometheus-client, selenium), reinstalled when the list
# changes.
venv=.venv-test
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
  echo "==> setting up $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  echo "$want" >"$stamp"
fi
export PILOTFISH_TEST_PYTHON="$PWD/$venv/bin/python"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The side-by-side benchmark's quick run (debug build, ~1 s per scenario, 20 s in all), so it
# never rots: every scenario must answer, its JSON must have the documented fields, and a sidecar
# with 10 and 1,000 services must get ready.
echo "==> cargo bench --bench mesh -- --quick"
mesh_json=$(mktemp)
cargo bench --profile dev --bench mesh -- --quick --scale --json "$mesh_json"
python3 benches/mesh/check_json.py "$mesh_json"
rm -f "$mesh_json"
echo "==> cargo test"
cargo test --workspace
echo "==> deploy/ tests (kustomize, kubernetes-validate, CRDs, Dockerfile, Grafana)"
"$PILOTFISH_TEST_PYTHON" deploy/test/run.py
