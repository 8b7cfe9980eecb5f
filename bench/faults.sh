#!/usr/bin/env bash
# Fault runs (issue 13): two layer instances on one private backend under a steady load of
# authenticated requests; the backend is killed with `kill -9` and restarted, and the driver
# (bench/src/bin/fault_probe.rs, whose header says exactly what it measures) reports what the
# clients saw: fail-closed answers, fail-fast waits, heal time, revoked sessions that came
# back, cross-instance revocation latency.
#
#   bench/faults.sh redis              # private redis-server, AOF with appendfsync everysec
#   APPENDFSYNC=always bench/faults.sh redis   # the no-loss setting
#   bench/faults.sh postgres           # private PostgreSQL cluster (initdb + pg_ctl)
#   bench/faults.sh cluster            # 6 local redis-servers, 3 primaries + 1 replica each;
#                                      # kill -9 the primary that holds the sessions' slot,
#                                      # no restart: the failover is the heal
#
# Never touches the machine's shared servers (6379, 5432): everything runs on spare loopback
# ports from PORT_BASE (default 17300) with data under a fresh /tmp directory, removed at the
# end. Bounded: the whole script runs under `timeout` (MAX_SECONDS, default 600), every wait
# loop has a count, the driver bounds every request (5 s) and phase; an EXIT trap kills what
# it started, by PID.
#
# Settings (environment): PORT_BASE (17300), APPENDFSYNC (everysec; redis and cluster),
# STEADY (3 s of load before the kill), OUTAGE (3 s), AFTER (4 s of load after the restart),
# SESSIONS (400), WORKERS (8), PACE_MS (2: one request per worker every 2 ms), REVOKE (40
# logouts just before the kill), TRIALS (200 cross-instance revocations), MAX_SECONDS (600).
# Output: bench/target/bench-results/faults-<backend>.txt, and the driver's `result` JSON
# line in faults-<backend>.json.
set -euo pipefail

# ----- internal entry points the driver calls (kill and restart commands) -----
if [[ "${1:-}" == _kill || "${1:-}" == _restart ]]; then
  : "${FAULTS_WORK:?}" "${FAULTS_KIND:?}" "${FAULTS_PORT:?}"
  case "$FAULTS_KIND:$1" in
    redis:_kill)
      kill -9 "$(cat "$FAULTS_WORK/redis.pid")"
      ;;
    redis:_restart)
      redis-server --port "$FAULTS_PORT" --bind 127.0.0.1 --dir "$FAULTS_WORK" --save "" \
        --appendonly yes --appendfsync "${APPENDFSYNC:-everysec}" \
        >>"$FAULTS_WORK/redis.log" 2>&1 </dev/null &
      echo $! >"$FAULTS_WORK/redis.pid"
      for _ in $(seq 1 500); do
        [[ "$(redis-cli -p "$FAULTS_PORT" ping 2>/dev/null)" == PONG ]] && exit 0
        sleep 0.01
      done
      echo "redis did not come back" >&2; exit 1
      ;;
    postgres:_kill)
      # The postmaster and every backend at once, as a crash of the host would.
      pm="$(head -1 "$FAULTS_WORK/pg/postmaster.pid")"
      # shellcheck disable=SC2046
      kill -9 "$pm" $(pgrep -P "$pm" || true)
      ;;
    postgres:_restart)
      # A killed postmaster can linger as a zombie until this sandbox's init reaps it, and
      # PostgreSQL refuses to start while the PID in its lock file exists: a lock file of a
      # postmaster that is dead or a zombie is stale (we killed it), so it goes.
      pm="$(head -1 "$FAULTS_WORK/pg/postmaster.pid" 2>/dev/null || true)"
      if [[ -n "$pm" ]] && { [[ ! -e "/proc/$pm" ]] || [[ "$(awk '{print $3}' "/proc/$pm/stat" 2>/dev/null)" == Z ]]; }; then
        rm -f "$FAULTS_WORK/pg/postmaster.pid" "$FAULTS_WORK/sock/.s.PGSQL.$FAULTS_PORT.lock"
      fi
      timeout 60 runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$FAULTS_WORK/pg" -l "$FAULTS_WORK/pg.log" \
        -o "-p $FAULTS_PORT -c listen_addresses=127.0.0.1 -k $FAULTS_WORK/sock" -w -t 30 start >/dev/null
      ;;
    cluster:_kill)
      kill -9 "$(cat "$FAULTS_WORK/victim.pid")"
      ;;
    *) echo "unknown $FAULTS_KIND $1" >&2; exit 2 ;;
  esac
  exit 0
fi

KIND="${1:-}"
case "$KIND" in
  redis | postgres | cluster) ;;
  *) echo "usage: bench/faults.sh redis|postgres|cluster" >&2; exit 2 ;;
esac

if [[ -z "${FAULTS_BOUNDED:-}" ]]; then
  export FAULTS_BOUNDED=1
  exec timeout --kill-after=10 "${MAX_SECONDS:-600}" bash "$0" "$@"
fi

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/bench/target}"
OUT="$TARGET/bench-results"
mkdir -p "$OUT"
PORT_BASE="${PORT_BASE:-17300}"
export APPENDFSYNC="${APPENDFSYNC:-everysec}"

for port in $(seq "$PORT_BASE" $((PORT_BASE + 7))); do
  if [[ "$port" == 6379 || "$port" == 5432 ]]; then
    echo "PORT_BASE must keep clear of the shared servers' ports" >&2; exit 2
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: choose another PORT_BASE" >&2; exit 1
  fi
done

WORK="$(mktemp -d /tmp/tsg-faults.XXXXXX)"
chmod 755 "$WORK"
export FAULTS_WORK="$WORK" FAULTS_KIND="$KIND" FAULTS_PORT="$PORT_BASE"
PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)"
export PG_BIN

SERVER_PIDS=()
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
  local pid f
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
  if [[ -f "$WORK/pg/postmaster.pid" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  for f in "$WORK"/*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(head -1 "$f")"
    # Only a redis-server we started (the file holds its PID).
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

echo "building bench/src/bin/fault_probe.rs (release)"
cargo build --release --manifest-path bench/Cargo.toml --bin fault_probe
BIN="$TARGET/release/fault_probe"

# ----- the backend -----
case "$KIND" in
  redis)
    command -v redis-server >/dev/null || { echo "redis-server is required (Debian redis-server)" >&2; exit 1; }
    bash "$0" _restart
    URL="redis://127.0.0.1:$PORT_BASE"
    RESTART="bash $0 _restart"
    echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on $PORT_BASE: appendonly yes, appendfsync $APPENDFSYNC, save off"
    ;;
  postgres)
    [[ -x "$PG_BIN/initdb" ]] || { echo "PostgreSQL binaries are required (Debian postgresql)" >&2; exit 1; }
    mkdir -p "$WORK/pg" "$WORK/sock"
    chown postgres "$WORK/pg" "$WORK/sock"
    timeout 120 runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" --auth=trust -U postgres >"$WORK/initdb.log" 2>&1
    touch "$WORK/pg.log"; chown postgres "$WORK/pg.log"
    bash "$0" _restart
    URL="postgres://postgres@127.0.0.1:$PORT_BASE/postgres"
    RESTART="bash $0 _restart"
    echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on $PORT_BASE (fsync on, synchronous_commit on: the defaults)"
    ;;
  cluster)
    command -v redis-server >/dev/null || { echo "redis-server is required" >&2; exit 1; }
    NODES=()
    for i in 0 1 2 3 4 5; do
      port=$((PORT_BASE + i))
      mkdir -p "$WORK/n$port"
      redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/n$port" --save "" \
        --appendonly yes --appendfsync "$APPENDFSYNC" --cluster-enabled yes \
        --cluster-config-file "$WORK/n$port/nodes.conf" --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 \
        >"$WORK/n$port.log" 2>&1 </dev/null &
      echo $! >"$WORK/n$port.pid"
      NODES+=("127.0.0.1:$port")
    done
    for i in 0 1 2 3 4 5; do
      for _ in $(seq 1 300); do
        [[ "$(redis-cli -p $((PORT_BASE + i)) ping 2>/dev/null)" == PONG ]] && break
        sleep 0.02
      done
    done
    timeout 60 redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes >"$WORK/create.log"
    for _ in $(seq 1 300); do
      ok=1
      for i in 0 1 2 3 4 5; do
        redis-cli -p $((PORT_BASE + i)) cluster info | grep -q 'cluster_state:ok' || ok=0
      done
      [[ "$ok" == 1 ]] && break
      sleep 0.1
    done
    [[ "$ok" == 1 ]] || { echo "the cluster did not become ok" >&2; exit 1; }
    # Every replica in sync with its primary, so a failover has a replica to promote.
    for _ in $(seq 1 300); do
      up=0
      for i in 0 1 2 3 4 5; do
        redis-cli -p $((PORT_BASE + i)) info replication | grep -q 'master_link_status:up' && up=$((up + 1))
      done
      [[ "$up" == 3 ]] && break
      sleep 0.1
    done
    [[ "$up" == 3 ]] || { echo "the replicas did not sync ($up of 3)" >&2; exit 1; }
    # The primary that serves the sessions' slot (every key carries the `{tsg}` hash tag).
    SLOT="$(redis-cli -p "$PORT_BASE" cluster keyslot '{tsg}')"
    VICTIM="$(redis-cli -p "$PORT_BASE" cluster nodes | awk -v slot="$SLOT" '
      $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (slot >= r[1] && slot <= r[2]) { split($2, a, "[:@]"); print a[2] } } }' | head -1)"
    [[ -n "$VICTIM" ]] || { echo "no primary found for slot $SLOT" >&2; exit 1; }
    cp "$WORK/n$VICTIM.pid" "$WORK/victim.pid"
    URL="redis-cluster://$(IFS=,; echo "${NODES[*]}")"
    RESTART=""
    echo "Redis Cluster: 3 primaries + 3 replicas on $PORT_BASE..$((PORT_BASE + 5)), node timeout 1 s, appendfsync $APPENDFSYNC; sessions' slot $SLOT on the primary at $VICTIM"
    ;;
esac

# ----- two layer instances -----
declare -a ADDR
for n in 0 1; do
  log="$WORK/instance$n.log"
  "$BIN" serve "${KIND/cluster/redis}" "$URL" 127.0.0.1:$((PORT_BASE + 6 + n)) >"$log" 2>&1 &
  SERVER_PIDS+=($!)
  for _ in $(seq 1 300); do
    grep -q '^ready on ' "$log" && break
    sleep 0.1
  done
  grep -q '^ready on ' "$log" || { echo "instance $n did not start:" >&2; cat "$log" >&2; exit 1; }
  ADDR[n]="$(sed -n 's/^ready on //p' "$log" | head -1)"
done
echo "instances on ${ADDR[0]} and ${ADDR[1]}"

REPORT="$OUT/faults-$KIND.txt"
set +e
"$BIN" drive a="${ADDR[0]}" b="${ADDR[1]}" kill="bash $0 _kill" restart="$RESTART" \
  sessions="${SESSIONS:-400}" workers="${WORKERS:-8}" pace_ms="${PACE_MS:-2}" \
  steady="${STEADY:-3}" outage="${OUTAGE:-3}" after="${AFTER:-4}" \
  revoke="${REVOKE:-40}" trials="${TRIALS:-200}" | tee "$REPORT"
# The driver's own verdict (exit 1 on a violation: a 500, a revoked session served after the
# restart, a lost session), kept for the end so the report is written either way.
DRIVE_RC="${PIPESTATUS[0]}"
set -e
sed -n 's/^result //p' "$REPORT" >"$OUT/faults-$KIND.json"
if [[ "$KIND" == cluster ]]; then
  # Who serves the sessions' slot now (the failover's outcome), as a surviving node sees it.
  other=$((PORT_BASE + 1)); [[ "$VICTIM" == "$other" ]] && other=$((PORT_BASE + 2))
  echo "after the run, slot $SLOT is served by: $(redis-cli -p "$other" cluster nodes | awk -v slot="$SLOT" '
    $3 ~ /master/ && $3 !~ /fail/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (slot >= r[1] && slot <= r[2]) print $2 } }')" | tee -a "$REPORT"
  grep -h 'Failover\|failover' "$WORK"/n*.log | tail -5 | tee -a "$REPORT" || true
fi
for n in 0 1; do
  if grep -qi 'panick' "$WORK/instance$n.log"; then
    echo "instance $n panicked:" >&2; cat "$WORK/instance$n.log" >&2; exit 1
  fi
done
echo "wrote $REPORT and $OUT/faults-$KIND.json"
exit "$DRIVE_RC"
