#!/usr/bin/env bash
# HTTP load benchmark (issue 6): a bare axum router, the same router behind this crate's
# layer, and behind tower-sessions, over loopback, measured with wrk in alternating rounds.
#
#   bench/http_load.sh                      # 5 rounds x 3 servers x 5 s, unpinned then pinned
#   ROUNDS=3 DURATION=3 bench/http_load.sh  # shorter
#   MODES=pinned bench/http_load.sh         # one setup only
#
# What it does:
#   1. Builds bench/src/bin/load_server.rs (release) and installs Debian's wrk if it is missing.
#   2. For each setup:
#        unpinned: servers and wrk (-t2) on any core, as the scheduler likes;
#        pinned:   every server on core 0 (`taskset -c 0`, so tokio runs one worker) and wrk
#                  (-t1) on core 1 (`taskset -c 1`): the server has one core to itself.
#      it starts the three servers in the background on free loopback ports (recording their
#      PIDs), logs in once per server with curl to get its session cookie, checks that
#      `GET /me` with that cookie answers `alice` (so the authenticated path is what is
#      measured, not a refusal), warms each server up for 2 s, then runs ROUNDS rounds; each
#      round runs wrk for DURATION s against `GET /me` on every server, in an order that
#      rotates from round to round. The bare server gets a layer-shaped cookie (it ignores it),
#      so all three parse requests of about the same size.
#   3. Prints requests/s per round, and per server the median, min/max and relative standard
#      deviation over rounds, the ratio of medians to bare, and the median (min..max) of the
#      per-round ratios to bare (each taken from the same round, which cancels slow drifts).
#      A run with any non-2xx answer or socket error fails.
#   4. Writes bench/target/bench-results/http_load.json (for bench/src/bin/bench_chart.rs) and the raw
#      rounds to bench/target/bench-results/http_load_rounds.tsv.
#
# Bounded: the whole script runs under `timeout` (MAX_SECONDS, default 1200, build included),
# every wrk and curl under its own timeout, and an EXIT trap kills the servers it started by
# their PIDs (and only those).
#
# Settings (environment): ROUNDS (5), DURATION (5, seconds per wrk run), CONNECTIONS (50),
# MODES ("unpinned pinned"), MAX_SECONDS (1200).
set -euo pipefail

if [[ -z "${HTTP_LOAD_BOUNDED:-}" ]]; then
  export HTTP_LOAD_BOUNDED=1
  exec timeout --kill-after=10 "${MAX_SECONDS:-1200}" bash "$0" "$@"
fi

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
CONNECTIONS="${CONNECTIONS:-50}"
MODES="${MODES:-unpinned pinned}"
SERVERS=(bare guard tower-sessions)

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/bench/target}"
OUT="$TARGET/bench-results"
LOGS="$OUT/http_load_logs"
mkdir -p "$OUT" "$LOGS"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is missing: installing Debian's wrk package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
for tool in curl taskset awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done
if [[ "$(nproc)" -lt 2 && "$MODES" == *pinned* ]]; then
  echo "the pinned setup needs 2 cores; this machine has $(nproc)" >&2
  exit 1
fi

echo "building bench/src/bin/load_server.rs (release)"
cargo build --release --manifest-path bench/Cargo.toml --bin load_server
BIN="$TARGET/release/load_server"

# A cookie of the layer's shape for the bare server (43 base64url characters).
BARE_COOKIE="__Host-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

declare -A PORT COOKIE

# start_server NAME PREFIX...: starts a server in the background, waits for its port.
start_server() {
  local name=$1
  shift
  local log="$LOGS/$name.log"
  : >"$log"
  "$@" "$BIN" "$name" 127.0.0.1:0 >"$log" 2>&1 &
  PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if grep -q '^ready ' "$log"; then
      PORT[$name]="$(sed -n 's/^ready .* on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log" | head -1)"
      return 0
    fi
    sleep 0.1
  done
  echo "server $name did not start; see $log" >&2
  exit 1
}

# login NAME: logs in once and records the session cookie, then checks the authenticated GET.
login() {
  local name=$1 port=${PORT[$1]} headers body
  headers="$(timeout 10 curl -sS --max-time 5 -D - -o /dev/null -X POST "http://127.0.0.1:$port/login")"
  if [[ "$name" == bare ]]; then
    COOKIE[$name]="$BARE_COOKIE"
  else
    COOKIE[$name]="$(printf '%s\n' "$headers" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: *\([^;]*\).*/\1/p' | head -1)"
    [[ -n "${COOKIE[$name]}" ]] || { echo "$name issued no cookie at login" >&2; exit 1; }
  fi
  body="$(timeout 10 curl -sS --max-time 5 -H "Cookie: ${COOKIE[$name]}" "http://127.0.0.1:$port/me")"
  [[ "$body" == alice ]] || { echo "$name: GET /me answered '$body', not alice" >&2; exit 1; }
}

# run_wrk NAME SECONDS PREFIX...: one wrk run against NAME; prints requests/s.
run_wrk() {
  local name=$1 secs=$2
  shift 2
  local out rps
  out="$(timeout $((secs + 20)) "$@" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" \
    -H "Cookie: ${COOKIE[$name]}" "http://127.0.0.1:${PORT[$name]}/me")"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$name: wrk saw errors:" >&2
    echo "$out" >&2
    exit 1
  fi
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  [[ -n "$rps" ]] || { echo "$name: no Requests/sec in wrk output:" >&2; echo "$out" >&2; exit 1; }
  echo "$rps"
}

ROUNDS_TSV="$OUT/http_load_rounds.tsv"
printf 'setup\tround\tserver\trequests_per_s\n' >"$ROUNDS_TSV"

for mode in $MODES; do
  case "$mode" in
    unpinned) SERVER_PREFIX=(); WRK_PREFIX=(); WRK_THREADS=2 ;;
    pinned) SERVER_PREFIX=(taskset -c 0); WRK_PREFIX=(taskset -c 1); WRK_THREADS=1 ;;
    *) echo "unknown setup $mode (unpinned or pinned)" >&2; exit 1 ;;
  esac
  echo
  echo "== $mode: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s GET /me, $ROUNDS rounds =="
  for s in "${SERVERS[@]}"; do
    start_server "$s" "${SERVER_PREFIX[@]}"
    login "$s"
  done
  for s in "${SERVERS[@]}"; do
    run_wrk "$s" 2 "${WRK_PREFIX[@]}" >/dev/null # warm-up, not recorded
  done
  for r in $(seq 1 "$ROUNDS"); do
    line="round $r:"
    for k in 0 1 2; do
      s="${SERVERS[$(((k + r - 1) % 3))]}"
      rps="$(run_wrk "$s" "$DURATION" "${WRK_PREFIX[@]}")"
      printf '%s\t%s\t%s\t%s\n' "$mode" "$r" "$s" "$rps" >>"$ROUNDS_TSV"
      line+="  $s $rps"
    done
    echo "$line"
  done
  cleanup
done

echo
awk -F'\t' -v rounds="$ROUNDS" -v json="$OUT/http_load.json" \
  -v dur="$DURATION" -v conns="$CONNECTIONS" '
function median(arr, n,    i, j, t, a) {
  for (i = 1; i <= n; i++) a[i] = arr[i]
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR > 1 {
  m = $1; s = $3; r = $2
  if (!(m in seen)) { seen[m] = 1; order[++nm] = m }
  n[m, s]++; v[m, s, n[m, s]] = $4; byround[m, s, r] = $4
}
END {
  split("bare guard tower-sessions", servers, " ")
  printf "{\n  \"duration_s\": %d, \"connections\": %d, \"rounds\": %d,\n  \"setups\": {", dur, conns, rounds > json
  for (k = 1; k <= nm; k++) {
    m = order[k]
    printf "%s: requests/s per server over %d rounds\n", m, rounds
    printf "  %-15s %10s %10s %10s %8s %9s %22s\n", "server", "median", "min", "max", "rel.sd", "x bare", "per-round x bare"
    printf "%s\n    \"%s\": {", (k > 1 ? "," : ""), m > json
    for (q = 1; q <= 3; q++) {
      s = servers[q]; c = n[m, s]
      delete x; sum = 0; lo = ""; hi = ""
      for (i = 1; i <= c; i++) { x[i] = v[m, s, i]; sum += x[i]; if (lo == "" || x[i] < lo) lo = x[i]; if (hi == "" || x[i] > hi) hi = x[i] }
      mean = sum / c; ss = 0
      for (i = 1; i <= c; i++) ss += (x[i] - mean) ^ 2
      sd = (c > 1) ? sqrt(ss / (c - 1)) : 0
      med[s] = median(x, c)
      delete pr; np = 0; plo = ""; phi = ""
      for (r = 1; r <= rounds; r++) if (((m, "bare", r) in byround) && ((m, s, r) in byround)) {
        pr[++np] = byround[m, s, r] / byround[m, "bare", r]
        if (plo == "" || pr[np] < plo) plo = pr[np]; if (phi == "" || pr[np] > phi) phi = pr[np]
      }
      pmed = median(pr, np)
      printf "  %-15s %10.0f %10.0f %10.0f %7.1f%% %8.3fx %8.3fx (%.3f..%.3f)\n", s, med[s], lo, hi, 100 * sd / mean, med[s] / med["bare"], pmed, plo, phi
      printf "%s\n      \"%s\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f, \"rel_sd\": %.4f, \"ratio_to_bare\": %.4f, \"round_ratio_median\": %.4f, \"round_ratio_min\": %.4f, \"round_ratio_max\": %.4f, \"rounds\": [", (q > 1 ? "," : ""), s, med[s], lo, hi, sd / mean, med[s] / med["bare"], pmed, plo, phi > json
      for (i = 1; i <= c; i++) printf "%s%.1f", (i > 1 ? ", " : ""), x[i] > json
      printf "]}" > json
    }
    printf "\n    }" > json
    print ""
  }
  printf "\n  }\n}\n" > json
}' "$ROUNDS_TSV"
echo "wrote $OUT/http_load.json and $ROUNDS_TSV"
