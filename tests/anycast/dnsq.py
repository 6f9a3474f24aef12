#!/usr/bin/env python3
"""DNS client for tests/anycast/run.sh: real UDP queries with EDNS NSID, standard library only.

  dnsq.py ask SERVER NAME               one A query: prints "<nsid> <first A or ->"
  dnsq.py wait SERVER NSID TIMEOUT      a query every 20 ms until one is answered by NSID;
                                        prints the Unix time of that answer (exit 1 on timeout)
  dnsq.py load SERVER RATE SECONDS      RATE queries/s for SECONDS, each given 1 s to be answered;
                                        prints "sent N answered N lost N" and answers per NSID
"""
import os
import random
import select
import socket
import struct
import sys
import time


def query(qid, name):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1)
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 4) + struct.pack(">HH", 3, 0)  # NSID
    return header + q + struct.pack(">HH", 1, 1) + opt


def skip_name(b, i):
    while True:
        n = b[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def parse(b):
    """(id, rcode, nsid, first A) of a response."""
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", b[:12])
    i = 12
    for _ in range(qd):
        i = skip_name(b, i) + 4
    first_a, nsid = None, "-"
    for k in range(an + ns + ar):
        i = skip_name(b, i)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", b[i:i + 10])
        i += 10
        rdata = b[i:i + rdlen]
        if k < an and rtype == 1 and first_a is None and rdlen == 4:
            first_a = socket.inet_ntoa(rdata)
        if rtype == 41:
            j = 0
            while j + 4 <= len(rdata):
                code, olen = struct.unpack(">HH", rdata[j:j + 4])
                if code == 3:
                    nsid = rdata[j + 4:j + 4 + olen].decode(errors="replace")
                j += 4 + olen
        i += rdlen
    return qid, flags & 0xF, nsid, first_a or "-"


def sock(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.setblocking(False)
    return s


def recv_all(s):
    out = []
    while True:
        try:
            out.append(s.recv(4096))
        except (BlockingIOError, ConnectionRefusedError):
            return out


def ask(server, name):
    s = sock(server)
    for _ in range(3):
        qid = random.randrange(65536)
        s.send(query(qid, name))
        deadline = time.time() + 1
        while time.time() < deadline:
            select.select([s], [], [], 0.1)
            for b in recv_all(s):
                rid, _rc, nsid, a = parse(b)
                if rid == qid:
                    print(nsid, a)
                    return 0
    print("- -")
    return 1


def wait(server, want, timeout):
    s = sock(server)
    end = time.time() + timeout
    qid = 0
    while time.time() < end:
        qid = (qid + 1) % 65536
        s.send(query(qid, "example.net"))
        t = time.time() + 0.02
        while time.time() < t:
            select.select([s], [], [], max(0.0, t - time.time()))
            for b in recv_all(s):
                if parse(b)[2] == want:
                    print("%.3f" % time.time())
                    return 0
    return 1


def load(server, rate, seconds):
    s = sock(server)
    pending = {}  # id -> deadline
    sent = answered = 0
    by_nsid = {}
    start = time.time()
    step = 1.0 / rate
    nxt = start
    qid = 0
    while True:
        now = time.time()
        if now - start < seconds and now >= nxt:
            qid = (qid + 1) % 65536
            s.send(query(qid, "example.net"))
            pending[qid] = now + 1.0
            sent += 1
            nxt += step
        elif now - start >= seconds and not pending:
            break
        for b in recv_all(s):
            rid, _rc, nsid, _a = parse(b)
            if pending.pop(rid, None) is not None:
                answered += 1
                by_nsid[nsid] = by_nsid.get(nsid, 0) + 1
        now = time.time()
        for k in [k for k, d in pending.items() if d < now]:
            del pending[k]
        select.select([s], [], [], max(0.0, min(nxt, now + 0.005) - now))
    lost = sent - answered
    print("sent %d answered %d lost %d %s" % (sent, answered, lost,
          " ".join("%s=%d" % kv for kv in sorted(by_nsid.items()))))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "ask":
        return ask(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "wait":
        return wait(argv[1], argv[2], float(argv[3]))
    if len(argv) >= 4 and argv[0] == "load":
        return load(argv[1], float(argv[2]), float(argv[3]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
