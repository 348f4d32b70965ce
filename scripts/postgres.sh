#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests: loopback TCP only, trust auth,
# no fsync, a fresh data directory, on a port that is free right now. On
# success, and only then, prints on stdout
#   export MCPGATE_TEST_POSTGRES=postgres://mcpgate@127.0.0.1:PORT/postgres
#   export MCPGATE_TEST_PG_RUNDIR=DIR     (the server's directory, to stop it)
# On failure it says why on stderr (with the server log) and exits non-zero.
#
# Usage:  PG_ENV=$(scripts/postgres.sh) && eval "$PG_ENV"
#         scripts/postgres.sh stop "$MCPGATE_TEST_PG_RUNDIR" [--keep]
#             stops that server and removes DIR (--keep: leave DIR, and its
#             server.log, in place)
#
# The port is picked below the kernel's ephemeral range (32768-60999 on Linux),
# where a loopback client connection may hold any port at any moment: a random
# free port in 20000-32000, checked with a bind just before the start, and
# another one if the server still finds it taken (up to 5 attempts).
# Overrides: MCPGATE_TEST_PG_PORT (use exactly that port; fail if it is taken),
# MCPGATE_TEST_PG_DIR (the directory, instead of a fresh mktemp -d under
# ${TMPDIR:-/tmp}; its old contents from an earlier run are removed).
# A server that already answers somewhere is never reused: to test against one,
# set MCPGATE_TEST_POSTGRES yourself (scripts/test.sh then skips this script).
set -euo pipefail

MARKER=.mcpgate-throwaway   # in DIR; holds the bin directory the server runs from

die() { echo "postgres.sh: $*" >&2; exit 1; }

# The server refuses to run as root: run it as the `postgres` user then.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Stop the server whose directory is $1 (if it runs); quiet when it does not.
stop_server() {
    local dir=$1 bin
    bin=$(head -n1 "$dir/$MARKER" 2>/dev/null || true)
    [ -n "$bin" ] || bin=$BIN
    [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ] || return 0
    (cd / && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop) >/dev/null 2>&1 && return 0
    # A stale postmaster.pid (server already gone) makes stop fail: fine then.
    local rc=0
    (cd / && as_owner "$bin/pg_ctl" -D "$dir/data" status) >/dev/null 2>&1 || rc=$?
    [ "$rc" = 3 ]
}

BIN=
if [ "${1:-}" = stop ]; then
    DIR=${2:?usage: postgres.sh stop DIR [--keep]}
    [ -f "$DIR/$MARKER" ] || die "$DIR is not a directory this script created; not touching it"
    if ! stop_server "$DIR"; then
        die "could not stop the PostgreSQL server in $DIR (see $DIR/server.log)"
    fi
    if [ "${3:-}" = --keep ]; then
        echo "postgres.sh: stopped the test PostgreSQL; its log is $DIR/server.log" >&2
    else
        rm -rf -- "$DIR"
    fi
    exit 0
fi
[ $# = 0 ] || die "unknown arguments: $* (usage: postgres.sh | postgres.sh stop DIR [--keep])"

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }
BIN=$(find_bin)
if [ -z "$BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL (Debian package)" >&2
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } >&2 \
        || die "apt-get install postgresql failed"
    BIN=$(find_bin)
fi
[ -n "$BIN" ] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
if [ "$(id -u)" = 0 ] && ! id -u postgres >/dev/null 2>&1; then
    die "running as root, but there is no \`postgres\` user to run the server as"
fi
PSQL=
if [ -x "$BIN/psql" ]; then PSQL=$BIN/psql; elif command -v psql >/dev/null; then PSQL=$(command -v psql); fi

# --- the directory: fresh for every run -------------------------------------
CREATED=        # set once DIR is ours to remove on failure
STARTED=        # set once a server may be running from DIR
SUCCESS=
cleanup() {
    [ -z "$SUCCESS" ] || return 0
    if [ -n "$STARTED" ]; then stop_server "$DIR" || true; fi
    if [ -n "$CREATED" ]; then rm -rf -- "$DIR"; fi
}
trap cleanup EXIT

if [ -n "${MCPGATE_TEST_PG_DIR:-}" ]; then
    mkdir -p -- "$MCPGATE_TEST_PG_DIR"
    DIR=$(cd -- "$MCPGATE_TEST_PG_DIR" && pwd)
    if [ -f "$DIR/$MARKER" ]; then
        # Left over from an earlier run: stop its server if it still runs, then start over.
        stop_server "$DIR" || die "a server from an earlier run still runs in $DIR and would not stop"
        find "$DIR" -mindepth 1 -delete
    elif [ -n "$(ls -A -- "$DIR")" ]; then
        die "MCPGATE_TEST_PG_DIR=$DIR is not empty and was not made by this script; not wiping it"
    fi
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/mcpgate-test-pg.XXXXXX") || die "mktemp -d failed in ${TMPDIR:-/tmp}"
    CREATED=1
fi
echo "$BIN" >"$DIR/$MARKER"
if [ "$(id -u)" = 0 ]; then
    chown postgres "$DIR" || die "cannot chown $DIR to postgres"
    runuser -u postgres -- test -w "$DIR" \
        || die "the postgres user cannot write $DIR (is a parent directory private? set TMPDIR or MCPGATE_TEST_PG_DIR)"
fi
cd "$DIR"   # the server user may not be allowed into the caller's directory
LOG=$DIR/server.log
as_owner "$BIN/initdb" -D "$DIR/data" -U mcpgate --auth=trust --no-sync >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed (log above)"; }

# The Unix socket lives in DIR too, unless that path is too long for one (then TCP only).
SOCKDIR=$DIR
[ ${#DIR} -le 90 ] || SOCKDIR=

# --- the port ---------------------------------------------------------------
# A port below the ephemeral range, free right now: a bind() to 127.0.0.1
# without SO_REUSEADDR fails if anything listens on it, or if a connection
# (even one in TIME_WAIT) uses it as its local port.
pick_port() {  # $@: ports already tried
    python3 - "$@" <<'EOF'
import random, socket, sys
tried = {int(p) for p in sys.argv[1:]}
lo, hi = 20000, 32000
try:
    eph_lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    if lo + 1000 < eph_lo <= hi:
        hi = eph_lo - 1
except (OSError, ValueError, IndexError):
    pass
n = hi - lo
start = random.randrange(n)
for i in range(n):
    port = lo + (start + i) % n
    if port in tried:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit("no free port in %d-%d" % (lo, hi))
EOF
}
port_is_free() {
    python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
case ${MCPGATE_TEST_PG_PORT:-1} in
    '' | *[!0-9]*) die "MCPGATE_TEST_PG_PORT=$MCPGATE_TEST_PG_PORT is not a port number" ;;
esac
command -v python3 >/dev/null || die "python3 is needed to find a free port (or set MCPGATE_TEST_PG_PORT)"

# Unique per run: `show cluster_name` tells our server from any other one.
CLUSTER=mcpgate-test-$$-$RANDOM$RANDOM
ATTEMPTS=5
TRIED=()
PORT=
for attempt in $(seq 1 $ATTEMPTS); do
    if [ -n "${MCPGATE_TEST_PG_PORT:-}" ]; then
        PORT=$MCPGATE_TEST_PG_PORT
        port_is_free "$PORT" \
            || die "MCPGATE_TEST_PG_PORT=$PORT is in use on 127.0.0.1 (unset it to get a free port)"
    else
        PORT=$(pick_port ${TRIED[@]+"${TRIED[@]}"}) || die "could not find a free port on 127.0.0.1"
    fi
    TRIED+=("$PORT")
    rm -f "$LOG"
    STARTED=1
    if (as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$LOG" -w -t 60 start \
            -o "-p $PORT -k '$SOCKDIR' -c listen_addresses=127.0.0.1 -c fsync=off \
                -c max_connections=400 -c cluster_name=$CLUSTER") >/dev/null 2>&1; then
        break
    fi
    stop_server "$DIR" || true   # in case it came half up
    if grep -qE 'Address already in use|could not create any TCP/IP sockets' "$LOG" 2>/dev/null \
        && [ -z "${MCPGATE_TEST_PG_PORT:-}" ] && [ "$attempt" -lt $ATTEMPTS ]; then
        echo "postgres.sh: port $PORT was taken at start; trying another one" >&2
        continue
    fi
    echo "--- $LOG (last 30 lines) ---" >&2
    tail -n 30 "$LOG" >&2 2>/dev/null || echo "(no log)" >&2
    die "the PostgreSQL server did not start on 127.0.0.1:$PORT (attempt $attempt of $ATTEMPTS, ports tried: ${TRIED[*]})"
done

# --- is it up, and is it ours? ----------------------------------------------
URL="postgres://mcpgate@127.0.0.1:$PORT/postgres"
fail_after_start() {
    echo "--- $LOG (last 30 lines) ---" >&2
    tail -n 30 "$LOG" >&2 2>/dev/null || echo "(no log)" >&2
    die "$*"
}
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U mcpgate -d postgres -t 15 \
    || fail_after_start "the server started but does not accept connections on 127.0.0.1:$PORT"
if [ -n "$PSQL" ]; then
    GOT=$(PGCONNECT_TIMEOUT=10 "$PSQL" "$URL" -X -A -t -q -c 'show cluster_name' 2>&1) \
        || fail_after_start "psql $URL failed: $GOT"
    [ "$GOT" = "$CLUSTER" ] \
        || fail_after_start "127.0.0.1:$PORT is answered by another server (cluster_name '$GOT', expected '$CLUSTER')"
fi

SUCCESS=1
echo "postgres.sh: test PostgreSQL on 127.0.0.1:$PORT, data in $DIR (stop: scripts/postgres.sh stop $DIR)" >&2
printf 'export MCPGATE_TEST_POSTGRES=%q\n' "$URL"
printf 'export MCPGATE_TEST_PG_RUNDIR=%q\n' "$DIR"
