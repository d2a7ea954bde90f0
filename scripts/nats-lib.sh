# Sourced by cluster.sh and bench-cluster.sh: a temporary directory with a nats-server (JetStream on)
# in it, and everything started from here stopped and removed on exit.
#
#   start_nats PORT MONITOR_PORT    # sets $dir; appends to $pids; returns once NATS is ready
#   pids+=($!)                      # for anything else started in the background

# Debian installs nats-server in /usr/sbin, which a user's PATH may lack.
export PATH="$PATH:/usr/sbin"
if ! command -v nats-server >/dev/null; then
    echo "$(basename "$0") needs nats-server (Debian: apt-get install nats-server)" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_nats() {
    nats-server -a 127.0.0.1 -p "$1" -m "$2" -js -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
    pids+=($!)
    # Ready when its log says so.
    until grep -q "Server is ready" "$dir/nats.log"; do
        if ! kill -0 "${pids[0]}" 2>/dev/null; then
            echo "nats-server did not start:" >&2
            cat "$dir/nats.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
