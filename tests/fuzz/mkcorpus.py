#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_stream.c (run once; the corpus is
committed and grown by `make fuzz`).  Needs build/vmimage."""
import os, struct, subprocess, sys

root = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(root, "corpus")
vmimage = os.path.join(root, "..", "..", "build", "vmimage")
key = os.path.join(root, "fuzz.key")
os.makedirs(out, exist_ok=True)

def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def seal(payload, *extra):
    p = subprocess.run([vmimage, "seal", "-q", "-k", key, "--name", "fz",
                        *extra], input=payload, stdout=subprocess.PIPE,
                       check=True)
    return p.stdout

def rec(t, body):
    pad = (-len(body)) % 8
    return struct.pack("<II", t, len(body)) + body + b"\0" * pad

def info(name=b"fz"):
    fixed = bytes(16) + struct.pack("<QIHHqII", 1 << 20, 1, 2, 2, 0, 0, 0)
    s = struct.pack("<HH", 1, len(name)) + name + b"\0" * ((-len(name)) % 4)
    return rec(1, fixed + s)

def end(records, backend, plain):
    return rec(4, struct.pack("<QQQQQ", records, backend, plain, 0, 0))

small = seal(b"hello fuzz\n" * 50)
multi = seal(bytes(range(256)) * 1200, "--chunk-size", "65536")
put("img-small", b"\0" + small)
put("img-multi", b"\0" + multi)
put("img-label", b"\0" + seal(b"x", "--label", "nightly"))
hlen = struct.unpack_from("<I", small, 12)[0]
put("hdr-small", b"\2" + small[:hlen])

body = info()
body += rec(2, struct.pack("<II", 2, 0) + b'{"argv":[]}')
body += rec(3, b"backend bytes")
body += rec(0x80000001, b"a note")
body += rec(0x8000abcd, b"unknown optional")
body += end(5, 13, len(body))
put("rec-valid", b"\1" + body)
put("rec-mandatory", b"\1" + info() + rec(0xabcd, b"x"))
put("rec-noend", b"\1" + info() + rec(3, b"abc"))
put("rec-badpad", b"\1" + info() + struct.pack("<II", 3, 3) + b"abc\1\0\0\0\0")
print("corpus:", len(os.listdir(out)), "files")
