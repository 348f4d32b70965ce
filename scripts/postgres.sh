#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests (loopback only, trust auth, no
# fsync) unless one already answers on the port; print its URL on stdout.
# Usage: eval "$(scripts/postgres.sh)"   # exports MCPGATE_TEST_POSTGRES
set -euo pipefail
PORT=${MCPGATE_TEST_PG_PORT:-55432}
DIR=${MCPGATE_TEST_PG_DIR:-/tmp/mcpgate-test-pg}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL (Debian package)" >&2
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } >&2
    BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
if [ -z "$BIN" ]; then
    echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi
URL="postgres://mcpgate@127.0.0.1:$PORT/postgres"
# The server refuses to run as root: run it as the `postgres` user then.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_owner "$BIN/initdb" -D "$DIR/data" -U mcpgate --auth=trust >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" >/dev/null \
        || { cat "$DIR/server.log" >&2; exit 1; }
fi
echo "export MCPGATE_TEST_POSTGRES=$URL"
