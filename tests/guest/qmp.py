#!/usr/bin/env python3
"""Run QMP commands: qmp.py SOCK CMD [JSON_ARGS] [CMD [JSON_ARGS]...]

Prints each command's "return" as JSON; exits 1 on a QMP error.
Example: qmp.py run/qmp.sock stop  query-status  cont
"""
import json, socket, sys

def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(argv[1])
    f = s.makefile("rw")

    def call(cmd, args=None):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        f.write(json.dumps(msg) + "\n")
        f.flush()
        while True:  # skip events
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                return r

    json.loads(f.readline())  # greeting
    call("qmp_capabilities")
    i, rc = 2, 0
    while i < len(argv):
        cmd, args = argv[i], None
        if i + 1 < len(argv) and argv[i + 1].lstrip().startswith("{"):
            args = json.loads(argv[i + 1])
            i += 1
        r = call(cmd, args)
        if "error" in r:
            print(f"qmp.py: {cmd}: {r['error'].get('desc')}", file=sys.stderr)
            rc = 1
        else:
            print(json.dumps(r["return"]))
        i += 1
    sys.exit(rc)

main(sys.argv)
