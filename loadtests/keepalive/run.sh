#!/usr/bin/env bash
# Keep-alive clients from outside — Python aiohttp and Node's fetch (undici) —
# in the initialize era (Mcp-Session-Id, SSE answers), against a Python SDK
# upstream, called directly and through mcpgate: the measurement of issue 18's
# first defect (a 40 ms Nagle / delayed-ACK stall per call), repeatable.
# The CI guard for the same stall is `loadtests --keep-alive` in .ci/run.
#
# Usage: loadtests/keepalive/run.sh [CALLS] [GATEWAY_BIN]
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${1:-300}
BIN=${2:-target/release/mcpgate}
PY=.peers/venv/bin/python
[ -x "$BIN" ] || { echo "run: $BIN not found (cargo build --release --locked --workspace)" >&2; exit 1; }
[ -x "$PY" ] || { echo "run: $PY not found (./scripts/test.sh installs the peers)" >&2; exit 1; }
"$PY" -c "import aiohttp" 2>/dev/null || .peers/venv/bin/pip install -q aiohttp

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "run: nothing listens on port $1" >&2
  exit 1
}

up=$(free_port)
"$PY" loadtests/keepalive/upstream.py "$up" >"$work/upstream.log" 2>&1 &
wait_port "$up"

gw=$(free_port)
cat >"$work/config.yaml" <<YAML
listen: 127.0.0.1:$gw
data_dir: $work/data
services:
  echo:
    kind: mcp
    url: http://127.0.0.1:$up/mcp
users:
  - email: bench@example.com
    access: { echo: read }
YAML
token=$("$BIN" --config "$work/config.yaml" token create --user bench@example.com)
RUST_LOG=warn "$BIN" --config "$work/config.yaml" serve 2>"$work/gateway.log" &
wait_port "$gw"

echo "| client | target | calls | errors | p50 ms | p99 ms |"
echo "|---|---|---:|---:|---:|---:|"
row() {
  "$PY" -c 'import json, sys
r = json.loads(sys.argv[2])
print("| {} | {} | {} | {} | {} | {} |".format(r["client"], sys.argv[1], r["calls"], r["errors"], r["p50_ms"], r["p99_ms"]))' "$1" "$2"
}
direct="http://127.0.0.1:$up/mcp"
via="http://127.0.0.1:$gw/mcp"
row direct "$("$PY" loadtests/keepalive/client_aiohttp.py "$direct" echo "$CALLS")"
row mcpgate "$("$PY" loadtests/keepalive/client_aiohttp.py "$via" echo_read_actions "$CALLS" "$token" echo)"
row direct "$(node loadtests/keepalive/client_fetch.mjs "$direct" echo "$CALLS")"
row mcpgate "$(node loadtests/keepalive/client_fetch.mjs "$via" echo_read_actions "$CALLS" "$token" echo)"
