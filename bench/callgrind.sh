#!/usr/bin/env bash
# Instruction counts per request for bench/benches/layer.rs cases, under valgrind's callgrind
# (issue 6: profile before optimizing). Instructions, unlike seconds, do not depend on what
# else the machine is doing: the same binary and inputs give the same counts.
#
#   bench/callgrind.sh                                  # the default cases below
#   bench/callgrind.sh guard_auth tower_sessions_auth   # chosen cases
#   TOP=40 bench/callgrind.sh guard_auth                # longer function lists
#
# Builds the bench with line tables (CARGO_PROFILE_BENCH_DEBUG=line-tables-only) into its own
# target directory (target/profiling), so the timed build in target/ is left alone. Runs each
# case in criterion's --profile-time mode under callgrind, collecting only inside criterion's
# timed loop (`--toggle-collect=*AsyncBencher*iter*`: no setup, prefill or checks), and
# divides by the number of requests (calls of axum's `Router::call_with_state`, one per
# request; `layer::get_request` for the service_fn case).
# Prints instructions per request, the difference to bare_router, and each case's top
# functions by self cost per request; keeps the callgrind files in target/profiling/cg/ for
# `callgrind_annotate`. The 1M cases are slow under valgrind (the prefill runs ~50x slower):
# set LAYER_BENCH_SESSIONS (e.g. 100000) to profile them at a smaller size.
set -euo pipefail

CASES=("$@")
if [[ ${#CASES[@]} -eq 0 ]]; then
  CASES=(bare_router guard_no_cookie guard_auth guard_auth_system_clock tower_sessions_auth)
fi
TOP="${TOP:-25}"
PROFILE_TIME="${PROFILE_TIME:-2}"

cd "$(dirname "$0")/.."
command -v valgrind >/dev/null 2>&1 || {
  echo "valgrind is missing: installing Debian's valgrind package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
}
export CARGO_TARGET_DIR="$(pwd)/target/profiling"
export CARGO_PROFILE_BENCH_DEBUG=line-tables-only
echo "building the bench with line tables into $CARGO_TARGET_DIR"
BIN="$(cargo bench --manifest-path bench/Cargo.toml --bench layer --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[[ -x "$BIN" ]] || { echo "could not build the bench" >&2; exit 1; }
OUT="$CARGO_TARGET_DIR/cg"
mkdir -p "$OUT"

declare -A PER
for case in "${CASES[@]}"; do
  file="$OUT/cg.$case"
  group=authenticated_get
  [[ "$case" == guard_login* || "$case" == guard_guest* ]] && group=write
  (cd "$OUT" && timeout 1800 valgrind --tool=callgrind --callgrind-out-file="$file" \
    --collect-atstart=no '--toggle-collect=*AsyncBencher*iter*' \
    "$BIN" --bench --profile-time "$PROFILE_TIME" "^$group/$case\$" >/dev/null 2>"$file.log")
  total="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file" | head -1)"
  [[ -n "$total" ]] || total="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file" | head -1)"
  calls="$(python3 - "$file" <<'PY'
import re, sys
# Requests = calls of axum's Router::call_with_state (one per request in every router case);
# for the service_fn case, calls of layer::get_request. (Counting get_request alone
# undercounted: part of its calls are recorded under a second, inlined entry.)
fn_names, router, request = {}, 0, 0
cur_cfn = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        ident, name = m.group(1), m.group(2)
        if name is not None:
            fn_names[ident] = name
        if line.startswith("cfn="):
            cur_cfn = fn_names.get(ident, "")
        continue
    m = re.match(r"^calls=(\d+) ", line)
    if m and cur_cfn is not None:
        if re.search(r"axum::routing::Router<S>::call_with_state$", cur_cfn):
            router += int(m.group(1))
        elif re.search(r"(^|::)layer::get_request$", cur_cfn):
            request += int(m.group(1))
        cur_cfn = None
print(router if router > 0 else request)
PY
)"
  if [[ -z "$calls" || "$calls" == 0 ]]; then
    echo "$case: no iterations counted (see $file.log)" >&2
    continue
  fi
  PER[$case]=$((total / calls))
  echo
  echo "== $case: $total instructions over $calls requests = ${PER[$case]} per request =="
  callgrind_annotate --auto=no "$file" 2>/dev/null | awk -v n="$calls" -v top="$TOP" '
    /^-+$/ { dashes++; next }
    dashes == 6 && NF >= 3 && shown < top {
      ir = $1; gsub(/,/, "", ir)
      if (ir !~ /^[0-9]+$/) next
      name = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\)  /, "", name); sub(/ \[.*\]$/, "", name)
      sub(/^.*\/(src|library|sysdeps|malloc|string)\//, "", name)
      printf "  %8.0f  %s\n", ir / n, substr(name, 1, 150); shown++
    }'
done

echo
echo "instructions per request (callgrind, inside criterion's timed loop)"
for case in "${CASES[@]}"; do
  [[ -n "${PER[$case]:-}" ]] || continue
  if [[ -n "${PER[bare_router]:-}" ]]; then
    printf '  %-34s %8d  (%+d vs bare_router)\n' "$case" "${PER[$case]}" $((PER[$case] - PER[bare_router]))
  else
    printf '  %-34s %8d\n' "$case" "${PER[$case]}"
  fi
done
