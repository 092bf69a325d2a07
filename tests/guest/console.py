#!/usr/bin/env python3
"""Talk to the test guest's serial console (a QEMU unix-socket chardev).

console.py SOCK [--log FILE] [--expect REGEX] [--timeout S] [--send TEXT]

Connects (retrying until the timeout), sends TEXT plus a newline if given,
then reads until REGEX matches a line received after connecting. Prints the
matching line. Everything received is appended to FILE.
Exit: 0 matched (or nothing expected), 1 timeout/EOF, 2 cannot connect.
QEMU accepts one console client at a time; output nobody reads is dropped
(boot.sh also logs all of it to RUNDIR/serial.log).
"""
import argparse, re, socket, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("sock")
ap.add_argument("--log")
ap.add_argument("--expect")
ap.add_argument("--timeout", type=float, default=30.0)
ap.add_argument("--send")
a = ap.parse_args()

deadline = time.monotonic() + a.timeout
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
while True:
    try:
        s.connect(a.sock)
        break
    except OSError as e:
        if time.monotonic() >= deadline:
            print(f"console.py: cannot connect to {a.sock}: {e}", file=sys.stderr)
            sys.exit(2)
        time.sleep(0.1)

log = open(a.log, "ab") if a.log else None
if a.send is not None:
    s.sendall(a.send.encode() + (b"" if a.send.endswith("\n") else b"\n"))
if a.expect is None:
    time.sleep(0.2)
    sys.exit(0)

rx = re.compile(a.expect)
buf = b""
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    if not data:
        print("console.py: console closed", file=sys.stderr)
        break
    if log:
        log.write(data)
        log.flush()
    buf += data
    *lines, buf = buf.split(b"\n")
    for ln in lines:
        t = ln.decode(errors="replace").rstrip("\r")
        if rx.search(t):
            print(t)
            sys.exit(0)
print(f"console.py: timeout waiting for {a.expect!r}", file=sys.stderr)
sys.exit(1)
