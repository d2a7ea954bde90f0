#!/usr/bin/env bash
# Starts ringtalk on a scratch data dir and opens inetutils telnet to it inside tmux, so a change can be
# tried the way a user meets it. Leaves nothing running: quitting telnet stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-5599}
data=$(mktemp -d)
cargo build --release -q
./target/release/ringtalk --listen "127.0.0.1:$port" --data-dir "$data" --bcrypt-cost 4 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
telnet 127.0.0.1 "$port"
