#!/usr/bin/env python3
"""Asks the same DNS queries of meridian's AF_XDP path and of its socket path and compares the
reply bytes (tests/xdp/run.sh, in the client namespace). Standard library only.

usage: dnscmp.py compare V4ADDR V6ADDR XDP_PORT SOCKET_PORT
       dnscmp.py ask ADDR PORT NAME TYPE   (prints the reply's rcode and flags, or "none")

`compare` prints "ok CASE" or "FAIL CASE: why" per case, then "socket-queries v4=N v6=M" (what
the socket path was sent, for the kernel counters run.sh checks) and exits 1 on any failure.
"""
import os
import socket
import struct
import sys
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "TXT": 16, "AAAA": 28, "ANY": 255}
sent_socket = {4: 0, 6: 0}


def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name, qtype, qclass=1, edns=None, options=b"", rd=True):
    flags = 0x0100 if rd else 0
    arcount = 1 if edns is not None else 0
    q = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount)
    q += name_wire(name) + struct.pack(">HH", TYPES[qtype], qclass)
    if edns is not None:
        q += b"\0" + struct.pack(">HHIH", 41, edns, 0, len(options)) + options
    return q


def opt(code, data):
    return struct.pack(">HH", code, len(data)) + data


def ecs(prefix, bits):
    addr = socket.inet_pton(socket.AF_INET, prefix)[: (bits + 7) // 8]
    return opt(8, struct.pack(">HBB", 1, bits, 0) + addr)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def ask(addr, port, q, timeout=1.0):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (addr, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == q[:2]:
                return data
    except (socket.timeout, ConnectionRefusedError):
        return None
    finally:
        s.close()


def server_cookie(reply):
    """The COOKIE option's bytes (client + server cookie) in a reply, or None."""
    if reply is None:
        return None
    i = reply.find(b"\x00\x0a\x00")
    while i >= 0:
        length = struct.unpack(">H", reply[i + 2 : i + 4])[0]
        if 16 <= length <= 40 and i + 4 + length <= len(reply):
            return reply[i + 4 : i + 4 + length]
        i = reply.find(b"\x00\x0a\x00", i + 1)
    return None


def rrl_burst(addr, xport, sport):
    """40 queries for one name at once to each path: (why they differ or None, replies by id of
    the XDP path, its slips, its drops)."""
    seen = {}
    for port in (xport, sport):
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        s.settimeout(0.5)
        for i in range(40):
            s.sendto(query(1000 + i, "rrl.example.net", "A"), (addr, port))
        if port == sport:
            sent_socket[6 if ":" in addr else 4] += 40
        got = {}
        try:
            while True:
                data, _ = s.recvfrom(65535)
                got[struct.unpack(">H", data[:2])[0]] = data
        except socket.timeout:
            pass
        s.close()
        seen[port] = got
    a, b = seen[xport], seen[sport]
    slips = sum(1 for r in a.values() if r[2] & 0x02)
    dropped = 40 - len(a)
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "replies differ for ids %s" % diff, a, slips, dropped
    if slips == 0 or dropped == 0:
        return "%d slips, %d dropped (expected both)" % (slips, dropped), a, slips, dropped
    return None, a, slips, dropped


def compare(v4, v6, xport, sport):
    failures = 0
    client_cookie = os.urandom(8)

    def case(name, addr, q, expect=None):
        nonlocal failures
        # A server cookie carries the second it was made: ask both paths again if the second
        # turned between them (at most twice more).
        for _ in range(3):
            a = ask(addr, xport, q)
            b = ask(addr, sport, q)
            sent_socket[6 if ":" in addr else 4] += 1
            if a == b:
                break
        why = None
        if a != b:
            why = "XDP path %s, socket path %s" % (a and a.hex(), b and b.hex())
        elif expect is not None and not expect(a):
            why = "both paths sent %s, not what the case expects" % (a and a.hex())
        if why:
            failures += 1
            print("FAIL %s: %s" % (name, why))
        else:
            print("ok   %s (%s bytes)" % (name, len(a) if a else "no reply"))
        return a

    rcode = lambda r: r[3] & 0x0F
    answered = lambda r: r is not None and rcode(r) == 0 and struct.unpack(">H", r[6:8])[0] > 0
    for addr in (v4, v6):
        fam = "v6" if ":" in addr else "v4"
        case(fam + " fast path: static A", addr, query(1, "static.example.net", "A"), answered)
        case(fam + " fast path: static AAAA, EDNS", addr, query(2, "static.example.net", "AAAA", edns=1232), answered)
        case(fam + " fast path: NODATA", addr, query(3, "static.example.net", "TXT", edns=1232),
             lambda r: r is not None and rcode(r) == 0)
        case(fam + " fast path: NXDOMAIN", addr, query(4, "nope.example.net", "A"),
             lambda r: r is not None and rcode(r) == 3)
        case(fam + " fast path: balanced name with ECS", addr,
             query(5, "geo.example.net", "A", edns=1232, options=ecs("198.51.100.0", 24)), answered)
        case(fam + " reference: CNAME", addr, query(6, "alias.example.net", "A"), answered)
        case(fam + " reference: wildcard", addr, query(7, "x.wild.example.net", "A", edns=1232), answered)
        case(fam + " reference: referral", addr, query(8, "a.sub.example.net", "A"),
             lambda r: r is not None and rcode(r) == 0)
        case(fam + " reference: NSID", addr, query(9, "static.example.net", "A", edns=1232, options=opt(3, b"")),
             lambda r: r is not None and b"xdp-lab" in r)
        case(fam + " reference: CHAOS id.server", addr, query(10, "id.server", "TXT", qclass=3),
             lambda r: r is not None and b"xdp-lab" in r)
        case(fam + " REFUSED outside our zones", addr, query(11, "example.org", "A"),
             lambda r: r is not None and rcode(r) == 5)
        case(fam + " TC=1: large TXT without EDNS", addr, query(12, "big.example.net", "TXT"),
             lambda r: r is not None and r[2] & 0x02)
        case(fam + " large TXT with EDNS 1232", addr, query(13, "big.example.net", "TXT", edns=1232),
             lambda r: r is not None and not r[2] & 0x02 and len(r) > 512)
        first = case(fam + " cookie: client cookie only", addr,
                     query(14, "static.example.net", "A", edns=1232, options=opt(10, client_cookie)),
                     lambda r: server_cookie(r) is not None and len(server_cookie(r)) > 8)
        full = server_cookie(first)
        if full:
            case(fam + " cookie: valid server cookie", addr,
                 query(15, "static.example.net", "A", edns=1232, options=opt(10, full)),
                 lambda r: server_cookie(r) is not None)
        case(fam + " malformed: question cut short (FORMERR)", addr, query(16, "static.example.net", "A")[:20],
             lambda r: r is None or rcode(r) == 1)

    # RRL: a burst over the rate to each path; the same replies (answers, then slips with TC=1,
    # and drops) must come back for the same query ids. The burst is sent in one go, so that
    # the bucket refills by much less than one response during it on either server.
    for addr in (v4, v6):
        fam = "v6" if ":" in addr else "v4"
        # Twice at most: a burst that the scheduler stretched past a refill (rate 2/s) on one
        # path only is not a difference in the answers; after the window the buckets are full
        # again and the second burst starts from the same state on both paths.
        for attempt in (1, 2):
            why, a, slips, dropped = rrl_burst(addr, xport, sport)
            if why is None or attempt == 2:
                break
            print("note %s RRL burst, first try: %s; again after the 5 s window" % (fam, why))
            time.sleep(6)
        if why:
            failures += 1
            print("FAIL %s RRL burst: %s" % (fam, why))
        else:
            print("ok   %s RRL burst: %d answered, %d slipped (TC=1), %d dropped, same on both paths"
                  % (fam, len(a) - slips, slips, dropped))
    print("socket-queries v4=%d v6=%d" % (sent_socket[4], sent_socket[6]))
    return failures


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "compare":
        _, _, v4, v6, xport, sport = sys.argv
        sys.exit(1 if compare(v4, v6, int(xport), int(sport)) else 0)
    if len(sys.argv) == 6 and sys.argv[1] == "ask":
        _, _, addr, port, name, qtype = sys.argv
        r = ask(addr, int(port), query(77, name, qtype, edns=1232))
        print("none" if r is None else "rcode=%d ancount=%d" % (r[3] & 0x0F, struct.unpack(">H", r[6:8])[0]))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
