#!/usr/bin/env bash
# Fuzz every parser at mcpgate's edges for longer than CI does.
# Usage: scripts/fuzz.sh [seconds-per-target (default 300)] [target]
# Findings (panics, hangs, violated properties) are kept under
# loadtests/fuzz/crashes/<target>/ and the run fails; once fixed, move them to
# loadtests/fuzz/regressions/<target>/ so every later run replays them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-300}
cargo build --release --locked -p loadtests --bin fuzz
args=(--seconds "$SECONDS_PER_TARGET" --seed "$(date +%s)")
if [ -n "${2:-}" ]; then args+=(--target "$2"); fi
target/release/fuzz "${args[@]}"
target/release/fuzz --pii-scaling
