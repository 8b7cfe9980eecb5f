#!/usr/bin/env bash
# A million anonymous session-creating requests against 2 000 logged-in users, on the memory
# store and on Redis (tests/flood.rs, ignored by default). Prints the flood rate, how many
# users are still logged in (must be all), and what the store holds afterwards.
# Usage, from the project root: bash bench/flood.sh   (FLOOD_REQUESTS=N for another size)
set -euo pipefail
cd "$(dirname "$0")/.."
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
echo "== $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); Redis at $REDIS_URL"
cargo test --release --test flood -- --ignored --nocapture --test-threads 1
