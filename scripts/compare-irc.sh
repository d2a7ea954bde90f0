#!/usr/bin/env bash
# Runs the same ringtalk-bench scenarios against ringtalk and three IRC servers from Debian's archive,
# ircd-hybrid, InspIRCd and ngIRCd, and prints the figures side by side with the ratios ringtalk/peer.
#
#   scripts/compare-irc.sh                      # 200 users, 5 s per scenario, every scenario: ~9 min on 2 cores
#   USERS=2000 SECONDS=30 SCENARIOS="firehose bigroom" scripts/compare-irc.sh
#
# Environment:
#   USERS       clients per scenario (default 200)
#   SECONDS     length of each scenario's measured phase (default 5); read from the environment, since
#               bash's own $SECONDS counts the script's run time
#   SCENARIOS   space- or comma-separated bench scenarios, run in this order against each server
#               (default: seed firehose storm logins bigroom slowreaders churn)
#   SERVERS     which servers to run (default: ringtalk hybrid inspircd ngircd; ringtalk, if listed, is
#               the base of the ratios)
#   KEEP=1      keep the temporary directory (configs, server logs, raw JSON) and print where it is
#
# The IRC packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a temporary
# directory (they conflict when installed, and nothing is installed system-wide); a shared library either
# needs that this machine lacks is fetched and unpacked the same way. Each server runs from a config
# written from scripts/irc/*.conf, on 127.0.0.1, with flood/penalty throttles, per-IP and per-class
# connection limits, DNS and ident lookups all off. One server runs at a time, each with the open-files
# limit raised to the hard limit. ircd-hybrid refuses to run as root, loads its modules only from the
# compiled-in /usr/lib/ircd-hybrid and always asks DNS for a client's hostname, so it runs in a private
# user and mount namespace (unshare) under a non-root uid, with the unpacked /usr/lib overlaid on the
# system's and a resolv.conf naming a DNS server on loopback (scripts/irc/nxdomain.py, run as root only)
# that answers every query "no such name" at once.
# The EXIT trap stops every process this script started and removes the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

users=${USERS:-200}
seconds=$(printenv SECONDS || true)
seconds=${seconds:-5}
scenarios=${SCENARIOS:-seed firehose storm logins bigroom slowreaders churn}
scenarios=${scenarios//,/ }
servers=${SERVERS:-ringtalk hybrid inspircd ngircd}
servers=${servers//,/ }
if [[ " $servers " == *" ringtalk "* ]]; then  # ringtalk first: the base of the ratios
    servers=" $servers "
    servers="ringtalk ${servers// ringtalk / }"
fi
read -r -a server_list <<<"$servers"
servers="${server_list[*]}"

say() { printf '%s\n' "$*" >&2; }
die() { say "compare-irc: $*"; exit 1; }

for tool in apt-get apt-cache dpkg dpkg-deb ldd python3 cargo; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
if [[ " $servers " == *" hybrid "* ]]; then
    command -v unshare >/dev/null || die "needs unshare (util-linux) to run hybrid"
fi
[[ $users =~ ^[0-9]+$ && $users -gt 0 ]] || die "USERS must be a positive integer, not '$users'"
[[ $seconds =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SECONDS must be a number, not '$seconds'"
for s in $servers; do
    case $s in ringtalk|hybrid|inspircd|ngircd) ;; *) die "unknown server '$s' in SERVERS" ;; esac
done

# Every client is a socket in the server and in the bench: raise the open-files limit to the hard limit
# (servers and bench inherit it).
ulimit -n "$(ulimit -Hn)"
ulimit -l "$(ulimit -Hl)" 2>/dev/null || true  # ringtalk's executors lock memory
if (( $(ulimit -n) < users + 100 )); then
    say "compare-irc: warning: open-files limit $(ulimit -n) is below USERS=$users plus headroom"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/compare-irc.XXXXXX")
pids=()
stop_pid() {
    local pid=$1
    pkill -TERM -P "$pid" 2>/dev/null || true  # its children first (the bench's worker processes)
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local i
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop_pid "${pids[i]}"; done  # the bench, then the server
    if [[ ${KEEP:-0} == 1 ]]; then
        say "compare-irc: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- IRC servers from Debian's archive, unpacked, not installed --------------------------------------

pkg=$work/pkg
debs=$work/debs
mkdir -p "$pkg" "$debs"
apt_download() {
    # Sandbox user: the temporary directory is private to us, so apt need not switch to _apt.
    (cd "$debs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "$@" >/dev/null)
}
unpack() {
    local deb
    for deb in "$@"; do dpkg -x "$deb" "$pkg"; done
}

irc_packages=()
[[ " $servers " == *" hybrid "* ]] && irc_packages+=(ircd-hybrid)
[[ " $servers " == *" inspircd "* ]] && irc_packages+=(inspircd)
[[ " $servers " == *" ngircd "* ]] && irc_packages+=(ngircd)
# The unpacked packages' library directories (usr/lib/<multiarch>, lib/<multiarch>), as a search path.
pkg_libpath() {
    find "$pkg/lib" "$pkg/usr/lib" -mindepth 1 -maxdepth 1 -type d -name '*-linux-gnu*' 2>/dev/null | paste -sd:
}
if (( ${#irc_packages[@]} > 0 )); then
    if ! apt-cache show "${irc_packages[@]}" >/dev/null 2>&1; then
        say "compare-irc: package lists lack ${irc_packages[*]}; running apt-get update"
        apt-get -q update >/dev/null || die "apt-get update failed (run it as root, then retry)"
    fi
    say "compare-irc: fetching ${irc_packages[*]} from Debian"
    apt_download "${irc_packages[@]}" || die "apt-get download ${irc_packages[*]} failed"
    unpack "$debs"/*.deb

    # Shared libraries the binaries (and InspIRCd's core modules, the only ones loaded) need at run time.
    run_files=()
    [[ " ${irc_packages[*]} " == *" inspircd "* ]] &&
        run_files+=("$pkg/usr/sbin/inspircd" "$pkg"/usr/lib/inspircd/modules/core_*.so)
    [[ " ${irc_packages[*]} " == *" ngircd "* ]] && run_files+=("$pkg/usr/sbin/ngircd")
    [[ " ${irc_packages[*]} " == *" ircd-hybrid "* ]] &&
        run_files+=("$pkg/usr/sbin/ircd-hybrid" "$pkg"/usr/lib/ircd-hybrid/modules/*.so
                    "$pkg"/usr/lib/ircd-hybrid/modules/autoload/*.so)
    missing_libs() {
        LD_LIBRARY_PATH=$(pkg_libpath) ldd "${run_files[@]}" 2>/dev/null | awk '/not found/ { print $1 }' | sort -u
    }
    missing=$(missing_libs)
    if [[ -n $missing ]]; then
        # Fetch the library packages (among the servers' dependencies not installed here) whose names
        # match a missing soname (libident.so.0 -> libident, libhttp_parser.so.2.9 -> libhttp-parser2.9),
        # and unpack them beside the servers.
        deps=()
        for deb in "$debs"/*.deb; do
            for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' |
                         sed -e 's/([^)]*)//g' -e 's/|.*//' -e 's/:any//' -e 's/[[:space:]]//g'); do
                [[ $(dpkg-query -W -f='${db:Status-Status}' "$dep" 2>/dev/null || true) == installed ]] ||
                    deps+=("$dep")
            done
        done
        wanted=()
        for so in $missing; do
            base=${so%%.so*}
            base=${base//_/-}
            for dep in "${deps[@]}"; do
                [[ $dep == "$base"* ]] && wanted+=("$dep")
            done
        done
        if (( ${#wanted[@]} > 0 )); then
            mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)
            say "compare-irc: fetching libraries not installed here: ${wanted[*]}"
            mkdir -p "$debs/libs"
            (cd "$debs/libs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "${wanted[@]}" >/dev/null) ||
                die "apt-get download ${wanted[*]} failed"
            unpack "$debs"/libs/*.deb
        fi
        missing=$(missing_libs)
        [[ -z $missing ]] || die "libraries still missing after unpacking dependencies: $(echo "$missing" | tr '\n' ' ')"
    fi
fi
version_of() { dpkg-deb -f "$debs/$1"_*.deb Version; }

# --- ringtalk and the bench, release builds ------------------------------------------------------------

say "compare-irc: building ringtalk and ringtalk-bench (release)"
cargo build --release -q --bin ringtalk
cargo build --release -q -p ringtalk-bench
bench=$repo/target/release/ringtalk-bench
[[ -x $bench ]] || die "no $bench after the build"

# --- servers ---------------------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts a connection, up to 30 s, failing early if process $2 exits.
wait_port() {
    local port=$1 pid=$2 log=$3 deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "compare-irc: server exited before accepting on port $port; its log ends:"
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        (( SECONDS < deadline )) || die "port $port not accepting after 30 s (log: $log)"
        sleep 0.1
    done
}

# Starts scripts/irc/nxdomain.py (a DNS server answering every query "no such name") for server dir $1
# and waits until it is bound; sets nxdomain_addr to its address, or to nothing if it could not start
# (it needs root).
start_nxdomain() {
    local dir=$1 pid
    nxdomain_addr=
    python3 scripts/irc/nxdomain.py "$dir/nxdomain.addr" >"$dir/nxdomain.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do
        if [[ -s $dir/nxdomain.addr ]]; then
            nxdomain_addr=$(<"$dir/nxdomain.addr")
            return
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    say "compare-irc: warning: no local DNS server for hybrid ($(tail -n 1 "$dir/nxdomain.log")); it will"
    say "compare-irc:   look up every client's hostname with this machine's resolver"
}

# Starts server $1 on a free port; sets server_pid, server_port, server_log, server_protocol.
start_server() {
    local name=$1 dir=$work/$1
    mkdir -p "$dir"
    server_port=$(free_port)
    server_log=$dir/server.log
    case $name in
    ringtalk)
        server_protocol=ringtalk
        ./target/release/ringtalk --listen "127.0.0.1:$server_port" --data-dir "$dir/data" --bcrypt-cost 4 \
            --stats-interval 0 --channel-capacity 0 >"$server_log" 2>&1 &
        ;;
    inspircd)
        server_protocol=irc
        sed -e "s|@PORT@|$server_port|g" -e "s|@RUN@|$dir|g" -e "s|@MODULES@|$pkg/usr/lib/inspircd/modules|g" \
            scripts/irc/inspircd.conf >"$dir/inspircd.conf"
        local root_flag=()
        (( EUID == 0 )) && root_flag=(--runasroot)
        "$pkg/usr/sbin/inspircd" --config "$dir/inspircd.conf" --nofork "${root_flag[@]}" >"$server_log" 2>&1 &
        ;;
    ngircd)
        server_protocol=irc
        sed -e "s|@PORT@|$server_port|g" -e "s|@PKG@|$pkg|g" scripts/irc/ngircd.conf >"$dir/ngircd.conf"
        LD_LIBRARY_PATH=$(pkg_libpath) "$pkg/usr/sbin/ngircd" --nodaemon --config "$dir/ngircd.conf" \
            >"$server_log" 2>&1 &
        ;;
    hybrid)
        server_protocol=irc
        sed -e "s|@PORT@|$server_port|g" -e "s|@RUN@|$dir|g" scripts/irc/hybrid.conf >"$dir/ircd.conf"
        echo "ringtalk comparison run" >"$dir/ircd.motd"
        start_nxdomain "$dir"
        [[ -n $nxdomain_addr ]] && echo "nameserver $nxdomain_addr" >"$dir/resolv.conf"
        # A user namespace mapping us to root, to mount in a private mount namespace: the unpacked
        # /usr/lib under the system's (ircd-hybrid loads its modules from /usr/lib/ircd-hybrid only) and
        # our resolv.conf over /etc/resolv.conf. Then a nested user namespace mapping us to a non-root
        # uid (ircd-hybrid refuses to run as root), still our uid on the files it writes. Each step execs,
        # so $! is ircd-hybrid's PID. Its log goes to server.log, beside its own output (both appending).
        local uid=$EUID
        (( uid == 0 )) && uid=65534
        LD_LIBRARY_PATH=$(pkg_libpath) unshare --user --map-root-user --mount -- /bin/sh -c '
            set -e
            mount -t overlay overlay -o "lowerdir=/usr/lib:$1/usr/lib" /usr/lib
            if [ -f "$2/resolv.conf" ]; then mount --bind "$2/resolv.conf" /etc/resolv.conf; fi
            uid=$3
            shift 3
            exec unshare --user --map-user="$uid" --map-group="$uid" -- "$@"' \
            sh "$pkg" "$dir" "$uid" \
            "$pkg/usr/sbin/ircd-hybrid" -foreground -configfile "$dir/ircd.conf" -logfile "$server_log" \
            -pidfile "$dir/ircd.pid" -klinefile "$dir/kline.db" -dlinefile "$dir/dline.db" \
            -xlinefile "$dir/xline.db" -resvfile "$dir/resv.db" >>"$server_log" 2>&1 &
        ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    wait_port "$server_port" "$server_pid" "$server_log"
}

results=$work/results
mkdir -p "$results"
for name in $servers; do
    start_server "$name"
    say "compare-irc: $name listening on 127.0.0.1:$server_port (pid $server_pid)"
    extra=()
    [[ $name == ringtalk ]] && extra=(--server-log "$server_log")
    for scenario in $scenarios; do
        say "compare-irc:   $name $scenario ($users users, ${seconds} s)"
        # In the background, so a signal to this script is handled at once rather than after the scenario.
        "$bench" "$scenario" --addr "127.0.0.1:$server_port" --protocol "$server_protocol" \
            --users "$users" --seconds "$seconds" --json --server-pid "$server_pid" "${extra[@]}" \
            >"$results/$name.$scenario.json" 2>"$results/$name.$scenario.err" &
        bench_pid=$!
        pids+=("$bench_pid")
        if ! wait "$bench_pid"; then
            say "compare-irc:   $name $scenario: the bench failed (see the table)"
        fi
        unset 'pids[-1]'
        kill -0 "$server_pid" 2>/dev/null || die "$name exited during $scenario; its log ends: $(tail -n 5 "$server_log")"
    done
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop_pid "${pids[i]}"; done  # the server, then any helper
    pids=()
done

# --- the table ---------------------------------------------------------------------------------------------

echo "ringtalk-bench on ${servers// /, }: $users users, ${seconds} s per scenario, $(nproc) CPUs"
for name in $servers; do
    case $name in
    ringtalk) echo "  ringtalk   $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') (this tree)" ;;
    inspircd) echo "  inspircd   Debian package inspircd $(version_of inspircd)" ;;
    ngircd)   echo "  ngircd     Debian package ngircd $(version_of ngircd)" ;;
    hybrid)   echo "  hybrid     Debian package ircd-hybrid $(version_of ircd-hybrid)" ;;
    esac
done
base=${server_list[0]}
echo "Ratios are $base/peer: above 1 means $base's figure is larger (better for rates, worse for"
echo "latencies, times, memory and CPU)."
read -r -a scenario_list <<<"$scenarios"
python3 scripts/irc/table.py "$results" "${server_list[@]}" -- "${scenario_list[@]}"
cat <<'EOF'

Notes:
  - Neither InspIRCd nor ngIRCd sets TCP_NODELAY on client sockets (ringtalk and ircd-hybrid do), so
    their latency figures include Nagle/delayed-ACK stalls (up to ~40 ms on Linux) that any ordinary
    client of theirs also sees.
  - ircd-hybrid cannot be told not to look up a client's hostname: it is given a local DNS server that
    answers "no such name" at once (scripts/irc/nxdomain.py), so each login costs it one UDP round
    trip on loopback. That server holds answers back while ircd-hybrid's resolver socket is a quarter
    full: in a burst of logins, answers sent all at once overflow it, and each lost one costs that
    login ircd-hybrid's 4 s DNS retry. Its client limit is its open-files limit (at most 65,535) less 70.
  - ngIRCd listens with a fixed backlog of 10 and accepts one connection per event-loop pass (not
    configurable): bursts of connections overflow the queue and wait for SYN retransmits (1 s, 3 s, ...),
    which shows in storm, logins and churn. It also closes a client whose unsent output passes 32 KiB
    (compile-time WRITEBUFFER_MAX_LEN), which shows in slowreaders.
  - InspIRCd finishes registering a client (its 001 welcome) on its once-a-second housekeeping pass, by
    design, so each of its logins takes 0-1 s whatever the load.
  - IRC has no accounts: "logged in" means registered (NICK/USER answered with 001), with no password
    hashing, while ringtalk checks a bcrypt hash (cost 4 here) on every login.
EOF
