#!/usr/bin/env bash
# The test command: installs the real MCP peers (npm/PyPI, into ./.peers) if
# missing, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-peers.sh
cargo test --workspace --locked "$@"
