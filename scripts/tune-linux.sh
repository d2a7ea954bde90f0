#!/bin/sh
# The kernel settings a server with tens of thousands of telnet users needs, each with why.
# Prints the current and the suggested value of each; with --apply (as root) sets those that are
# lower than suggested, for now, and says how to keep them across reboots.
#
#   scripts/tune-linux.sh           # look
#   sudo scripts/tune-linux.sh --apply
set -eu

apply=no
case "${1:-}" in
    --apply) apply=yes ;;
    "") ;;
    *) echo "usage: $0 [--apply]" >&2; exit 2 ;;
esac

# name, suggested value, why (one line)
settings='
net.core.somaxconn|65535|the longest accept queue a listener may ask for: a reconnect storm of thousands queues here, not in SYN retries
net.ipv4.tcp_max_syn_backlog|65535|half-open connections kept while a storm of clients connects at once
net.ipv4.ip_local_port_range|10000 65535|outgoing ports: load generators and a cluster'"'"'s nodes on one machine open one per connection (kept above the ports servers listen on)
fs.file-max|2097152|descriptors for the whole machine: one per user, plus what every other process holds
fs.nr_open|1048576|the most a process may be allowed (the unit'"'"'s LimitNOFILE cannot go above it)
fs.epoll.max_user_watches|4194304|sockets one user id may watch through epoll: every user'"'"'s socket is in a shard'"'"'s epoll set
'

# Whether the current value is below the suggested one (the port range: its low end above).
below() {
    name=$1 current=$2 suggested=$3
    if [ "$name" = net.ipv4.ip_local_port_range ]; then
        set -- $current
        [ "$1" -gt 10000 ] || [ "$2" -lt 65535 ]
    else
        [ "$current" -lt "$suggested" ]
    fi
}

printf '%s\n' "$settings" | while IFS='|' read -r name suggested why; do
    [ -n "$name" ] || continue
    if ! current=$(sysctl -n "$name" 2>/dev/null | tr -s '\t ' '  '); then
        printf '%-30s (not on this kernel)  # %s\n' "$name" "$why"
        continue
    fi
    if below "$name" "$current" "$suggested"; then
        mark='->'
    else
        mark='ok'
    fi
    printf '%-30s %-12s %s %-12s # %s\n' "$name" "$current" "$mark" "$suggested" "$why"
    if [ "$apply" = yes ] && [ "$mark" = '->' ]; then
        sysctl -q -w "$name=$suggested"
    fi
done

if [ "$apply" = yes ]; then
    echo
    echo "Set for now. To keep them, put the lines above as 'name = value' in /etc/sysctl.d/90-ringtalk.conf."
else
    echo
    echo "Nothing changed. Run with --apply (as root) to set those marked '->'."
fi
echo "The process limit itself (LimitNOFILE, LimitMEMLOCK) is set in dist/ringtalk.service."
