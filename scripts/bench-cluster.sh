#!/usr/bin/env bash
# The cluster's figures (issue 11): a nats-server with JetStream and NODES ringtalk nodes sharing one
# port in a temporary directory, one ringtalk-bench scenario against them, then the NATS messages the
# nodes' bridges exchanged per line posted (from nats-server's /connz: setup's joins and the
# announcements are in it too). Leaves nothing running.
#
#   scripts/bench-cluster.sh seed --users 50000 --workers 4   # 3 nodes (NODES=3 is the default)
#   scripts/bench-cluster.sh firehose
#   scripts/bench-cluster.sh failover                          # SIGKILLs the last node mid-run
#   NODES=1 scripts/bench-cluster.sh seed --users 15000        # one node of a cluster, to compare
#
# Every node gets the server flags in EXTRA (default: bcrypt cost 4); the bench's own flags follow
# the scenario's name. The JSON report is kept in $OUT (default: /tmp/bench-cluster.json), and the
# logs of the nodes and of nats-server beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${NODES:-3}
port=${PORT:-5598}
nats_port=${NATS_PORT:-4298}
monitor=${NATS_MONITOR:-8298}
extra=${EXTRA:---bcrypt-cost 4}
out=${OUT:-/tmp/bench-cluster.json}
scenario=${1:?"usage: scripts/bench-cluster.sh SCENARIO [bench flags]"}
shift
# shellcheck source=scripts/nats-lib.sh
. scripts/nats-lib.sh
cargo build --release -q -p ringtalk -p ringtalk-bench
start_nats "$nats_port" "$monitor"

node_pids=()
for i in $(seq 1 "$nodes"); do
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    ./target/release/ringtalk --listen "127.0.0.1:$port" --data-dir "$dir/node$i" \
        --cluster "nats://127.0.0.1:$nats_port" --node-name "node$i" --stats-interval 5 $extra \
        2>"$dir/node$i.log" &
    pids+=($!)
    node_pids+=($!)
done
for i in $(seq 1 "$nodes"); do
    until grep -q "ringtalk listening on" "$dir/node$i.log"; do
        kill -0 "${node_pids[$((i - 1))]}" 2>/dev/null || { cat "$dir/node$i.log" >&2; exit 1; }
        sleep 0.1
    done
done

# What the nodes' bridges published to NATS and received from it (their connections are named after
# the nodes; the stores' connections, which carry accounts and channels, are left out).
varz() {
    python3 -c 'import json,sys,urllib.request
v=json.load(urllib.request.urlopen(sys.argv[1]))
c=[c for c in v["connections"] if c.get("name","").startswith("node")]
print(*(sum(x[k] for x in c) for k in ("in_msgs","out_msgs","in_bytes","out_bytes")))' \
        "http://127.0.0.1:$monitor/connz?limit=4096"
}

args=("$scenario" --addr "127.0.0.1:$port" --json)
if [ "$scenario" = failover ]; then
    last=$((nodes - 1))
    survivors=$(IFS=,; echo "${node_pids[*]:0:$last}")
    args+=(--kill-pid "${node_pids[$last]}" --server-pid "$survivors")
else
    args+=(--server-pid "$(IFS=,; echo "${node_pids[*]}")")
fi
read -r in0 out0 inb0 outb0 < <(varz)
./target/release/ringtalk-bench "${args[@]}" "$@" | tee "$out"
read -r in1 out1 inb1 outb1 < <(varz)

python3 - "$out" "$((in1 - in0))" "$((out1 - out0))" "$((inb1 - inb0))" "$((outb1 - outb0))" "$nodes" <<'EOF'
import json, sys
path, nin, nout, bin_, bout, nodes = sys.argv[1], *map(int, sys.argv[2:])
sent = 0
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    report = json.loads(line)
    # Every chat line the bench sent in its measured phases (setup and logins send none).
    stack = [report]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("sent"), int) and "delivered" in item:
                sent += item["sent"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
print(f"NATS, the bridges over the run: {nin} messages published ({bin_} B), {nout} received ({bout} B), {nodes} nodes")
if sent:
    print(f"  lines posted by the bench: {sent}; published per line: {nin / sent:.2f}, "
          f"received per line: {nout / sent:.2f} (setup's joins and the announcements included)")
EOF
for i in $(seq 1 "$nodes"); do
    echo "node$i: $(grep heartbeat "$dir/node$i.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g; s/.*heartbeat//' | cut -c1-600)"
done
# What went wrong on the way, if anything: the nodes' warnings and NATS's slow consumers.
for i in $(seq 1 "$nodes"); do
    sed 's/\x1b\[[0-9;]*m//g' "$dir/node$i.log" | grep -E "^[^ ]+ +(WARN|ERROR) " >"$dir/warnings" || true
    if [ -s "$dir/warnings" ]; then
        echo "node$i: $(wc -l <"$dir/warnings") warnings or errors in its log, the commonest:"
        cut -d' ' -f2- "$dir/warnings" | cut -c1-300 | sort | uniq -c | sort -rn | head -5
    fi
done
for i in $(seq 1 "$nodes"); do cp "$dir/node$i.log" "${out%.json}.node$i.log"; done
cp "$dir/nats.log" "${out%.json}.nats.log"
echo "logs: ${out%.json}.node*.log, ${out%.json}.nats.log"
slow=$(grep -c "Slow Consumer" "$dir/nats.log" || true)
[ "$slow" -eq 0 ] || echo "nats-server: $slow slow-consumer lines in its log"
