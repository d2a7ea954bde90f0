#!/usr/bin/env bash
# A local ringtalk cluster: one nats-server with JetStream in a temporary directory and N nodes that
# share one listening port. Prints how to connect; ^C stops everything and removes the directory.
#
#   scripts/cluster.sh          # 2 nodes on 127.0.0.1:5555, NATS on 127.0.0.1:4222
#   PORT=6000 NATS_PORT=4300 scripts/cluster.sh 3
#
# Users connecting to the port land on any node and meet in one chat. NATS's monitoring page is on
# NATS_MONITOR (8222): /varz counts the messages the nodes exchange. EXTRA="--channel-capacity 0"
# passes flags to every node.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${1:-2}
port=${PORT:-5555}
nats_port=${NATS_PORT:-4222}
nats_monitor=${NATS_MONITOR:-8222}
extra=${EXTRA:-}
cost=${BCRYPT_COST:-12}
# shellcheck source=scripts/nats-lib.sh
. scripts/nats-lib.sh
cargo build --release -q -p ringtalk
start_nats "$nats_port" "$nats_monitor"

for i in $(seq 1 "$nodes"); do
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    ./target/release/ringtalk --listen "127.0.0.1:$port" --data-dir "$dir/node$i" \
        --bcrypt-cost "$cost" --cluster "nats://127.0.0.1:$nats_port" --node-name "node$i" \
        --stats-interval 5 $extra 2>"$dir/node$i.log" &
    pids+=($!)
done

echo "$nodes nodes on 127.0.0.1:$port (pids ${pids[*]:1}), NATS on 127.0.0.1:$nats_port; logs in $dir"
echo "connect with: telnet 127.0.0.1 $port      (^C here stops the cluster)"
wait
