#!/usr/bin/env python3
"""commitproxy.py - a TCP relay between a vmmigrate sender and receiver that
knows where the end-of-migration messages are, and spoils one of them
(tests/e2e/migrate.sh, scenarios 8-).

    commitproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT ACTION [PIDFILE]

ACTION is pass, or VERB:MSG with MSG one of READY, COMMIT, RUNNING:
  drop:MSG   MSG is not relayed; both connections stay open
  cut:MSG    both connections are closed instead of relaying MSG
  kill:MSG   the process whose pid is in PIDFILE is SIGKILLed, then MSG is
             not relayed (the killed side's peer sees what a crash shows)

It relays one connection.  The framing it follows (format/vmckpt-stream.md):
sender -> receiver: HELLO (80), confirm (32), the header (header_len at
octet 12), chunks (length word, sealed_len octets, a 64-octet signature)
up to the FINAL one, then COMMIT (a length word and 24 octets).  receiver
-> sender: HELLO (80), confirm (32), then REPLYs (a length word and its
octets): READY, then RUNNING.  The REPLYs are encrypted: which is which
is known by order, as on the success path.  Prints one line per event to
stderr ("commitproxy: ...").
"""
import os
import signal
import socket
import struct
import sys
import threading

FINAL = 0x80000000
lock = threading.Lock()
done = threading.Event()


def say(msg):
    print(f"commitproxy: {msg}", file=sys.stderr, flush=True)


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(min(n - len(b), 1 << 20))
        if not c:
            raise EOFError(f"EOF after {len(b)} of {n} octets")
        b += c
    return bytes(b)


class Relay:
    def __init__(self, a, b, action, pidfile):
        self.a, self.b = a, b              # sender side, receiver side
        verb, _, msg = action.partition(":")
        self.verb, self.msg = (verb, msg) if msg else ("pass", "")
        self.pidfile = pidfile
        self.spoiled = False

    def close_all(self):
        for s in (self.a, self.b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        done.set()

    def frame(self, name, data, dst):
        """Relays one message, unless it is the one to spoil."""
        if name != self.msg or self.verb == "pass":
            dst.sendall(data)
            return True
        with lock:
            self.spoiled = True
            if self.verb == "drop":
                say(f"dropped {name} ({len(data)} octets)")
                return True
            if self.verb == "kill":
                pid = int(open(self.pidfile).read().split()[0])
                os.kill(pid, signal.SIGKILL)
                say(f"killed pid {pid} at {name}; {name} not relayed")
                return True
            say(f"cut both connections at {name}")
            self.close_all()
            return False

    def forward(self):
        """sender -> receiver"""
        src, dst = self.a, self.b
        dst.sendall(recv_exact(src, 80))     # HELLO_S
        dst.sendall(recv_exact(src, 32))     # confirm_S, after HELLO_R
        fixed = recv_exact(src, 64)
        hlen = struct.unpack_from("<I", fixed, 12)[0]
        dst.sendall(fixed + recv_exact(src, hlen - 64))
        while True:
            w = recv_exact(src, 4)
            lw = struct.unpack("<I", w)[0]
            body = recv_exact(src, (lw & 0x7fffffff) + 64)
            dst.sendall(w + body)
            if lw & FINAL:
                break
        say("stream relayed up to its FINAL chunk")
        w = recv_exact(src, 4)
        lw = struct.unpack("<I", w)[0]
        if not self.frame("COMMIT", w + recv_exact(src, lw & 0x7fffffff), dst):
            return
        while True:                         # anything else: as it comes
            c = src.recv(65536)
            if not c:
                break
            dst.sendall(c)

    def backward(self):
        """receiver -> sender"""
        src, dst = self.b, self.a
        dst.sendall(recv_exact(src, 80))     # HELLO_R
        dst.sendall(recv_exact(src, 32))     # confirm_R
        for name in ("READY", "RUNNING"):
            w = recv_exact(src, 4)
            lw = struct.unpack("<I", w)[0]
            if not self.frame(name, w + recv_exact(src, lw & 0x7fffffff), dst):
                return
        while True:
            c = src.recv(65536)
            if not c:
                break
            dst.sendall(c)

    def run(self, fn, what):
        try:
            fn()
            say(f"{what}: the peer closed")
        except (EOFError, OSError) as e:
            say(f"{what}: {e}")
        if self.verb != "drop" or not self.spoiled:
            self.close_all()            # one side gone: pass it on


def main():
    port, host, tport, action = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    pidfile = sys.argv[5] if len(sys.argv) > 5 else ""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(port)))
    ls.listen(1)
    say(f"listening on 127.0.0.1:{port}, relaying to {host}:{tport}, {action}")
    a, _ = ls.accept()
    ls.close()
    b = socket.create_connection((host, int(tport)), timeout=30)
    b.settimeout(None)
    r = Relay(a, b, action, pidfile)
    t1 = threading.Thread(target=r.run, args=(r.forward, "sender->receiver"))
    t2 = threading.Thread(target=r.run, args=(r.backward, "receiver->sender"))
    t1.start()
    t2.start()
    t1.join()
    t2.join()


if __name__ == "__main__":
    main()
