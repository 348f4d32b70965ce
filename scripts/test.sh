#!/usr/bin/env bash
# The test command: installs the real MCP peers (npm/PyPI, into ./.peers) if
# missing, starts a throwaway PostgreSQL (scripts/postgres.sh) unless
# MCPGATE_TEST_POSTGRES names one, then runs every test of the workspace on
# the embedded SQLite store, and the multi-gateway suites again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-peers.sh
if [ -z "${MCPGATE_TEST_POSTGRES:-}" ]; then
    eval "$(./scripts/postgres.sh)"
fi
export MCPGATE_TEST_POSTGRES
cargo test --workspace --locked "$@"
# Every suite whose gateways keep state in the store, on PostgreSQL (faults.rs
# breaks the SQLite file on purpose, so it stays SQLite-only). `--workspace`
# keeps the feature set, and so the build, of the run above.
MCPGATE_TEST_BACKEND=postgres cargo test --workspace --locked \
    --test delegation --test write_safety --test hooks --test pii --test classify \
    --test windmill_jobs --test guide --test native --test native_jira --test native_slack \
    --test native_google --test native_bigquery --test native_metabase --test native_windmill "$@"
