#!/usr/bin/env bash
# The test command: installs the real MCP peers (npm/PyPI, into ./.peers) if
# missing, starts a throwaway PostgreSQL (scripts/postgres.sh) unless
# MCPGATE_TEST_POSTGRES names one, then runs every test of the workspace on
# the embedded SQLite store, and the multi-gateway suites again on PostgreSQL.
# The throwaway server is stopped when this script exits (its directory is
# kept, for server.log, if the tests failed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-peers.sh
if [ -z "${MCPGATE_TEST_POSTGRES:-}" ]; then
    # Captured first: a failure inside `eval "$(...)"` would not stop this script.
    PG_ENV=$(./scripts/postgres.sh) || {
        echo "test.sh: could not start PostgreSQL (scripts/postgres.sh failed, reason above);" \
            "set MCPGATE_TEST_POSTGRES to use a running server instead" >&2
        exit 1
    }
    eval "$PG_ENV"
    PG_STOP=("$PWD/scripts/postgres.sh" stop "$MCPGATE_TEST_PG_RUNDIR")
    stop_postgres() {
        local status=$?
        if [ "$status" = 0 ]; then "${PG_STOP[@]}" || true; else "${PG_STOP[@]}" --keep || true; fi
        exit "$status"
    }
    trap stop_postgres EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    [ -n "${MCPGATE_TEST_POSTGRES:-}" ] || { echo "test.sh: scripts/postgres.sh printed no URL" >&2; exit 1; }
fi
export MCPGATE_TEST_POSTGRES
# tests/metrics.rs lints /metrics with promtool (installed above): here a
# missing promtool fails the test instead of skipping the check.
export MCPGATE_REQUIRE_PROMTOOL=1
cargo test --workspace --locked "$@"
# Every suite whose gateways keep state in the store, on PostgreSQL (faults.rs
# breaks the SQLite file on purpose, so it stays SQLite-only). `--workspace`
# keeps the feature set, and so the build, of the run above.
MCPGATE_TEST_BACKEND=postgres cargo test --workspace --locked \
    --test delegation --test write_safety --test hooks --test pii --test classify \
    --test windmill_jobs --test guide --test oauth --test oauth_oidc --test native --test native_jira --test native_slack \
    --test native_google --test native_bigquery --test native_metabase --test native_windmill "$@"
