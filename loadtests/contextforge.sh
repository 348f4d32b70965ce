#!/usr/bin/env bash
# mcpgate vs the same upstream called directly vs IBM ContextForge (issue 18,
# "The peer, side by side"), then the chart. Not part of CI: ContextForge is a
# Python install of its own. Run from the repository root:
#
#   loadtests/contextforge.sh                  # 10 s per point, c = 1, 16, 64
#   SECONDS_PER_POINT=5 CONCURRENCY=1,16 loadtests/contextforge.sh
#
# It installs ContextForge into $CONTEXTFORGE_VENV if it is not there yet,
# builds the release binaries, and writes $OUT.json (the numbers), $OUT.md
# (the tables) and $OUT.svg (the chart).
set -euo pipefail
VENV=${CONTEXTFORGE_VENV:-target/contextforge-venv}
VERSION=${CONTEXTFORGE_VERSION:-1.0.7}
OUT=${OUT:-target/peer-bench}
if [ ! -x "$VENV/bin/gunicorn" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "mcp-contextforge-gateway==$VERSION"
fi
"$VENV/bin/pip" show mcp-contextforge-gateway | grep -i '^version'
cargo build --release --locked -p mcpgate -p loadtests
# 2025-era protocol for all three targets (ContextForge does not speak
# 2026-07-28); keep-alive clients, as the Python and TypeScript SDKs are.
target/release/loadtests --protocol legacy --keep-alive \
  --concurrency "${CONCURRENCY:-1,16,64}" --seconds "${SECONDS_PER_POINT:-10}" \
  --contextforge "$VENV" --contextforge-workers "${WORKERS:-5}" \
  --json "$OUT.json" | tee "$OUT.md"
target/release/chart "$OUT.svg" "$OUT.json"
