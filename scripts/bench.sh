#!/usr/bin/env bash
# Builds ringtalk and ringtalk-bench in release, starts ringtalk on a temporary data dir (bcrypt cost 4,
# channel capacity 0 so bigroom can run), runs the bench suite against it and prints one table. The bench
# creates the accounts it needs on its first pass. Leaves nothing running.
#
#   scripts/bench.sh                         # every scenario but ceiling, at the bench's defaults
#   SCENARIOS=seed,storm:5000 scripts/bench.sh
#   SCENARIOS=ceiling scripts/bench.sh       # the most users the limits allow (about 19,300 here)
#   JSON=1 scripts/bench.sh                  # one JSON object per scenario instead of the table
#   BCRYPT_COST=8 SCENARIOS=logins scripts/bench.sh   # another bcrypt cost (default 4)
#   METRICS=127.0.0.1:9555 SCENARIOS=ceiling scripts/bench.sh  # with GET /metrics on (see scrape-time.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=${SCENARIOS:-seed,firehose,firehose:60,storm,logins,bigroom,slowreaders,churn}
port=${PORT:-5599}
cost=${BCRYPT_COST:-4}

ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p ringtalk -p ringtalk-bench

data=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

metrics=()
if [ -n "${METRICS:-}" ]; then
    metrics=(--metrics-listen "$METRICS")
fi
./target/release/ringtalk --listen "127.0.0.1:$port" --data-dir "$data" --bcrypt-cost "$cost" \
    --stats-interval 0 --channel-capacity 0 "${metrics[@]}" 2>"$data/server.log" &
server=$!

deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$server" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "ringtalk did not start:" >&2
        cat "$data/server.log" >&2
        exit 1
    fi
    sleep 0.1
done

args=(suite --scenarios "$scenarios" --addr "127.0.0.1:$port" --server-pid "$server" --bcrypt-cost "$cost"
      --server-log "$data/server.log")
if [ -n "${JSON:-}" ]; then
    args+=(--json)
fi
./target/release/ringtalk-bench "${args[@]}"
