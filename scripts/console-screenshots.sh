#!/usr/bin/env bash
# Regenerates the console screenshots in docs/console/ by running the browser
# tests with MCPGATE_CONSOLE_SHOTS set (each journey saves the pages it sees).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-peers.sh >/dev/null
MCPGATE_CONSOLE_SHOTS="$PWD/docs/console" cargo test --locked --test console -- --test-threads 1
ls docs/console
