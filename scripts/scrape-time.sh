#!/usr/bin/env bash
# Times GET /metrics against a running ringtalk started with --metrics-listen ADDR: N scrapes one
# after another (default 50), then the fastest, the median, the 90th percentile and the slowest
# (curl's time_total, connect to last byte), and what the server said its shards took to answer
# on the last scrape (ringtalk_shard_answer_seconds).
#
#   scripts/scrape-time.sh 127.0.0.1:9555 [N]
#
# At the ceiling: in one terminal `METRICS=127.0.0.1:9555 SCENARIOS=ceiling scripts/bench.sh`, and
# once the bench says its users are connected, in another `scripts/scrape-time.sh 127.0.0.1:9555`.
set -euo pipefail

addr=${1:?usage: scripts/scrape-time.sh ADDR [N]}
n=${2:-50}
url="http://$addr/metrics"

times=()
for _ in $(seq "$n"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$url")")
done
printf '%s\n' "${times[@]}" | sort -g | awk -v n="$n" '
    { t[NR] = $1 * 1000 }
    END {
        p90 = int(n * 0.9)
        if (p90 < 1) p90 = 1
        printf "scrapes: %d\n", n
        printf "ms: min %.2f  median %.2f  p90 %.2f  max %.2f\n", t[1], t[int((n + 1) / 2)], t[p90], t[n]
    }'
body=$(curl -s "$url")
echo "$body" | awk '/^ringtalk_shard_answer_seconds / { printf "shards answered the last scrape in %.3f ms\n", $2 * 1000 }'
echo "$body" | awk '/^ringtalk_logged_in_users\{/ { users += $2 } END { printf "logged-in users: %d\n", users }'
echo "$body" | awk '/^ringtalk_shard_up\{/ && $2 != 1 { print "a shard did not answer: " $0 }'
echo "bytes: $(printf '%s' "$body" | wc -c)"
