#!/usr/bin/env bash
# Memory per live authenticated session (issue 6): builds bench/src/bin/mem_sessions.rs (release)
# and runs it once per store, each in its own process so the numbers don't mix:
#
#   guard               this crate's MemoryStore, records as a login writes them
#   tower-sessions      tower-sessions' MemoryStore, the same facts (user id, roles, groups)
#   tower-sessions-min  tower-sessions' MemoryStore, the user id alone (its lower bound)
#
#   bench/memory.sh                 # 1 000 000 sessions, one user per session
#   SESSIONS=100000 bench/memory.sh
#   USERS=alice bench/memory.sh     # every session belongs to alice
#
# Each run reports VmHWM (peak resident) and VmRSS (resident) from /proc/self/status before
# and after filling, divided by the number of sessions. Prints a table and writes
# bench/target/bench-results/memory.json (for bench/src/bin/bench_chart.rs). Bounded by `timeout`
# (MAX_SECONDS per run, default 300).
set -euo pipefail

SESSIONS="${SESSIONS:-1000000}"
USERS="${USERS:-distinct}"
MAX_SECONDS="${MAX_SECONDS:-300}"

cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$(pwd)/bench/target}"
OUT="$TARGET/bench-results"
mkdir -p "$OUT"

echo "building bench/src/bin/mem_sessions.rs (release)"
cargo build --release --manifest-path bench/Cargo.toml --bin mem_sessions
BIN="$TARGET/release/mem_sessions"

lines=()
for mode in guard tower-sessions tower-sessions-min; do
  line="$(timeout "$MAX_SECONDS" "$BIN" "$mode" "$SESSIONS" "$USERS")"
  lines+=("$line")
done

{
  echo "["
  for i in "${!lines[@]}"; do
    printf '  %s%s\n' "${lines[$i]}" "$([[ $i -lt $((${#lines[@]} - 1)) ]] && echo ,)"
  done
  echo "]"
} >"$OUT/memory.json"

echo
echo "bytes per live session at $SESSIONS sessions (users: $USERS)"
printf '  %-20s %14s %14s %10s\n' store "peak (VmHWM)" "resident (RSS)" "fill s"
for line in "${lines[@]}"; do
  mode="$(sed -n 's/.*"mode":"\([^"]*\)".*/\1/p' <<<"$line")"
  peak="$(sed -n 's/.*"bytes_per_session_peak":\([0-9.]*\).*/\1/p' <<<"$line")"
  rss="$(sed -n 's/.*"bytes_per_session_resident":\([0-9.]*\).*/\1/p' <<<"$line")"
  secs="$(sed -n 's/.*"fill_and_check_seconds":\([0-9.]*\).*/\1/p' <<<"$line")"
  printf '  %-20s %14s %14s %10s\n' "$mode" "$peak" "$rss" "$secs"
done
echo "wrote $OUT/memory.json"
