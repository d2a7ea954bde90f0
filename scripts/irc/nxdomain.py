#!/usr/bin/env python3
"""A DNS server for scripts/compare-irc.sh that answers every query "no such name" at once.

Usage: nxdomain.py ADDR_FILE

ircd-hybrid looks up every client's hostname and has no switch to stop it; pointed at this server, each
lookup fails at once, as if lookups were off (the client keeps its IP address as its host). Binds UDP
port 53 (which needs root) on a random 127.x.y.z address outside 127.0.0.0/24 (the bench's source
addresses), writes that address to ADDR_FILE once bound, and serves until killed.

Flow control: a burst of connections makes a burst of queries, and answering them all at once would
overflow the asker's socket receive buffer (the system default, since ircd-hybrid does not size it);
the lost answers would then wait for the asker's retry, seconds later. So answers are held back while
the asker's receive queue (from /proc/net/udp) is over a quarter of the default buffer.
"""

import collections
import os
import random
import select
import socket
import sys

ANSWER_COST = 2048  # bytes an answer is assumed to take in the asker's receive queue (skb overhead)


def question_end(query):
    """Where the (single) question of `query` ends: its name's labels, the root label, type and class."""
    i = 12
    while i < len(query) and query[i] and not query[i] & 0xC0:
        i += 1 + query[i]
    return min(i + 5, len(query))


def answer(query):
    """The NXDOMAIN answer to `query`, or None if it is not a query."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    # The same id and question; flags: a response (QR), the query's opcode and RD kept, recursion
    # available (RA), rcode 3 (NXDOMAIN); no answer, authority or additional records.
    flags = bytes([0x80 | (query[2] & 0x79), 0x80 | 3])
    return query[:2] + flags + query[4:6] + bytes(6) + query[12:question_end(query)]


def rx_queues():
    """Receive-queue bytes of this network namespace's IPv4 UDP sockets, by (address, port)."""
    queues = {}
    try:
        with open("/proc/net/udp", encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                addr, port = fields[1].split(":")
                ip = socket.inet_ntoa(int(addr, 16).to_bytes(4, "little"))
                queues[(ip, int(port, 16))] = int(fields[4].split(":")[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return queues


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # room for a burst of queries (root may pass net.core.rmem_max)
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    err = None
    for _ in range(20):
        addr = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        try:
            sock.bind((addr, 53))
            break
        except OSError as e:
            err = e
    else:
        sys.exit(f"nxdomain.py: cannot bind UDP port 53 on loopback: {err}")
    sock.setblocking(False)
    try:
        with open("/proc/sys/net/core/rmem_default", encoding="ascii") as f:
            limit = int(f.read()) // 4
    except (OSError, ValueError):
        limit = 50_000
    with open(argv[1] + ".tmp", "w", encoding="ascii") as f:
        f.write(addr + "\n")
    os.replace(argv[1] + ".tmp", argv[1])  # whole, or not there yet

    held = collections.defaultdict(collections.deque)  # asker -> answers not yet sent
    while True:
        select.select([sock], [], [], 0.001 if held else None)
        while True:
            try:
                query, peer = sock.recvfrom(4096)
            except BlockingIOError:
                break
            reply = answer(query)
            if reply is not None:
                held[peer].append(reply)
        if not held:
            continue
        queues = rx_queues()
        for peer in list(held):
            queued = queues.get(peer, queues.get(("0.0.0.0", peer[1]), 0))
            room = max(0, (limit - queued) // ANSWER_COST)
            replies = held[peer]
            while replies and room:
                try:
                    sock.sendto(replies[0], peer)
                except BlockingIOError:
                    break  # our send buffer is full: try again on the next pass
                except OSError:
                    pass  # the asker is gone: drop the answer
                replies.popleft()
                room -= 1
            if not replies:
                del held[peer]


if __name__ == "__main__":
    try:
        main(sys.argv)
    except KeyboardInterrupt:
        pass
