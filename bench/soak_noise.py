#!/usr/bin/env python3
"""Malformed and random DNS packets for bench/soak.sh, from one source address at a fixed rate.

usage: soak_noise.py SERVER PORT SOURCE SECONDS RATE

Each packet is one of: random bytes of random length; a valid header with garbage after it;
a real query cut short; a real query with random qtype, class, opcode and flags; a bad EDNS
OPT (unknown version, lying lengths, bad ECS, bad cookie); a compression loop. Replies are
read and counted but not checked: the soak checks that the server lives and stays flat.
Bounded: stops after SECONDS, and only ever sends to SERVER (loopback).
"""
import os
import random
import socket
import struct
import sys
import time


def name(labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"


def query(qname, qtype=1, qclass=1, flags=0x0100, opt=b""):
    ar = 1 if opt else 0
    hdr = struct.pack("!HHHHHH", random.getrandbits(16), flags, 1, 0, 0, ar)
    return hdr + qname + struct.pack("!HH", qtype, qclass) + opt


def opt_rr(options, version=0, payload=1232, rdlen=None):
    data = b"".join(struct.pack("!HH", c, len(d)) + d for c, d in options)
    n = len(data) if rdlen is None else rdlen
    return b"\x00" + struct.pack("!HHBBHH", 41, payload, 0, version, 0, n) + data


NAMES = [
    name([b"www", b"example", b"com"]),
    name([b"example", b"com"]),
    name([b"nx%d" % random.randint(0, 10**6), b"example", b"com"]),
    name([b"host", b"lab", b"example", b"com"]),
    name([b"api", b"EXAMPLE", b"com"]),
]


def packet(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return os.urandom(rng.randrange(0, 600))
    if kind == 1:
        return struct.pack("!HHHHHH", rng.getrandbits(16), rng.getrandbits(16) & 0x7FFF,
                           rng.randrange(4), rng.randrange(4), rng.randrange(4),
                           rng.randrange(4)) + os.urandom(rng.randrange(0, 100))
    if kind == 2:
        q = query(rng.choice(NAMES), opt=opt_rr([(8, b"\x00\x01\x18\x00\x0a\x00\x00")]))
        return q[: rng.randrange(1, len(q))]
    if kind == 3:
        flags = rng.getrandbits(16) & 0x7FFF
        return query(rng.choice(NAMES), rng.getrandbits(16), rng.choice([1, 3, 4, 254, 255, rng.getrandbits(16)]), flags)
    if kind == 4:
        opts = rng.choice([
            [(8, os.urandom(rng.randrange(0, 24)))],     # ECS of any shape
            [(10, os.urandom(rng.randrange(0, 48)))],    # COOKIE of any length
            [(11, os.urandom(rng.randrange(0, 4)))],     # keepalive with data
            [(3, b"")], [(3, b""), (8, b"\x00\x02\x38\x00" + os.urandom(7))],
        ])
        return query(rng.choice(NAMES), 1, 1, 0x0100,
                     opt_rr(opts, version=rng.choice([0, 0, 0, 1, 255]),
                            payload=rng.choice([0, 511, 512, 1232, 65535]),
                            rdlen=rng.choice([None, None, 0, 200])))
    if kind == 5:
        # A question whose name is a compression pointer to itself.
        return struct.pack("!HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    if kind == 6:
        # Two OPTs, or answers in a query.
        q = query(rng.choice(NAMES), opt=opt_rr([]))
        return q[:10] + b"\x00\x02" + q[12:] + opt_rr([])
    labels = [os.urandom(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 6))]
    return query(name(labels + [b"example", b"com"]), rng.choice([1, 28, 15, 16, 6, 255]))


def main():
    server, port, source, seconds, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(23)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.setblocking(False)
    sent = replies = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        for _ in range(rate // 100):
            try:
                s.sendto(packet(rng), (server, port))
                sent += 1
            except OSError:
                pass
        while True:
            try:
                s.recv(65535)
                replies += 1
            except BlockingIOError:
                break
            except OSError:
                break
        time.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
    print(f"noise: sent {sent} packets from {source}, {replies} replies")


if __name__ == "__main__":
    main()
