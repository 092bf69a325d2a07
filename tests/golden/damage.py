#!/usr/bin/env python3
"""Derives the damaged golden images from v1-all.vmimg (run once, by
make-golden.sh).  damaged.tsv lists: file, expected exit status, a
substring the one-line error must contain."""
import struct

src = open("v1-all.vmimg", "rb").read()
hlen = struct.unpack_from("<I", src, 12)[0]
offs = []
o = hlen
while o < len(src):
    offs.append(o)
    o += 4 + (struct.unpack_from("<I", src, o)[0] & 0x7fffffff)
assert len(offs) >= 4, offs

rows = []
def bad(name, data, needle):
    open(name, "wb").write(data)
    rows.append((name, "1", needle))

def flip(data, at, bit=0x01):
    b = bytearray(data); b[at] ^= bit; return bytes(b)

mid = offs[1] + (offs[2] - offs[1]) // 2
bad("v1-bad-trunc-mid.vmimg", src[:mid], "truncated")
bad("v1-bad-trunc-boundary.vmimg", src[:offs[2]], "truncated")
bad("v1-bad-trunc-header.vmimg", src[:hlen - 5], "header: truncated")
bad("v1-bad-empty.vmimg", b"", "empty input")
bad("v1-bad-flip-payload.vmimg", flip(src, mid), "chunk 1 @0x")
bad("v1-bad-flip-label.vmimg", flip(src, hlen - 40), "header")
bad("v1-bad-flip-finalbit.vmimg", flip(src, offs[-1] + 3, 0x80),
    "authentication failed")
c = [src[offs[i]:(offs[i + 1] if i + 1 < len(offs) else len(src))]
     for i in range(len(offs))]
bad("v1-bad-reorder.vmimg", src[:hlen] + c[0] + c[2] + c[1] + b"".join(c[3:]),
    "chunk 1 @0x")
bad("v1-bad-duplicate.vmimg", src[:hlen] + c[0] + c[1] + c[1] + b"".join(c[2:]),
    "chunk 2 @0x")
bad("v1-bad-trailing.vmimg", src + b"\n", "data after the final chunk")
bad("v1-bad-crlf.vmimg", src[:5] + b"\n" + src[7:], "altered in transfer")
bad("v1-bad-version.vmimg", src[:8] + struct.pack("<I", 9) + src[12:],
    "unsupported format version")
bad("v1-bad-notimage.vmimg", b"Xen saved domain, xl format\n \0 \r" + src[32:],
    "not a vmckpt image")
# Argon2id slot with 4 GiB of memory: refused before any work.
i, o, a2 = 0, 64, None
nslots = struct.unpack_from("<H", src, 24)[0]
for i in range(nslots):
    t, _, l = struct.unpack_from("<HHI", src, o)
    if t == 2:
        a2 = o + 8
    o += 8 + ((l + 7) & ~7)
assert a2
hostile = bytearray(src)
struct.pack_into("<I", hostile, a2 + 20, 4 << 20)
bad("v1-bad-kdf-mem.vmimg", bytes(hostile), "Argon2id memory")
with open("damaged.tsv", "w") as f:
    f.write("# file\texit\tsubstring of the one-line error (passphrase key)\n")
    for r in rows:
        f.write("\t".join(r) + "\n")
