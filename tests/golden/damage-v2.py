#!/usr/bin/env python3
"""Derives the damaged golden images of format 2 from v2-all.vmimg (run
once, by make-golden-v2.sh): the signature cases.  damaged-v2.tsv lists:
file, expected exit status, a substring the one-line error must contain
(verified trusting keys/signer.txt, opened with the passphrase)."""
import base64
import struct

src = open("v2-all.vmimg", "rb").read()
hlen = struct.unpack_from("<I", src, 12)[0]
SIG = 64
offs = []
o = hlen
while o < len(src):
    offs.append(o)
    o += 4 + (struct.unpack_from("<I", src, o)[0] & 0x7fffffff) + SIG
assert len(offs) >= 4, offs
ends = offs[1:] + [len(src)]

rows = []
def bad(name, data, needle):
    open(name, "wb").write(data)
    rows.append((name, "1", needle))

def flip(data, at, bit=0x01):
    b = bytearray(data); b[at] ^= bit; return bytes(b)

# a chunk signature damaged: refused before the chunk is opened
bad("v2-bad-flip-chunksig.vmimg", flip(src, ends[1] - 10),
    "chunk 1 @0x%x: signature does not verify" % offs[1])
# the header signature damaged
bad("v2-bad-flip-headersig.vmimg", flip(src, 64 + 32 + 5),
    "the signature does not verify with the signer it names")
# another signer named in the header, its signature kept
other = bytearray(src)
other[64:96] = bytes(32 - i for i in range(32))
bad("v2-bad-other-signer.vmimg", bytes(other), "header")
# cut inside the final chunk's signature
bad("v2-bad-trunc-sig.vmimg", src[:len(src) - 20], "inside its signature")
# claimed to be format 1: the signer block is read as slots, or the MAC fails
bad("v2-bad-as-v1.vmimg", src[:8] + struct.pack("<I", 1) + src[12:], "header")
# the final chunk's signature moved onto the chunk before it
c = [src[offs[i]:ends[i]] for i in range(len(offs))]
swap = c[-2][:-SIG] + c[-1][-SIG:]
bad("v2-bad-sig-moved.vmimg", src[:hlen] + b"".join(c[:-2]) + swap,
    "signature does not verify")

with open("damaged-v2.tsv", "w") as f:
    f.write("# file\texit\tsubstring of the one-line error (passphrase key,"
            " trusting keys/signer.txt)\n")
    for r in rows:
        f.write("\t".join(r) + "\n")
