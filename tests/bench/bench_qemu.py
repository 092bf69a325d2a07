#!/usr/bin/env python3
"""bench_qemu.py - vmsave/vmrestore against QEMU's own migration, measured in
one run on the same guest (make bench).  Prints a table and the ratios with
their targets; asserts nothing (machines here are shared and noisy: compare
ratios, not absolute numbers).

Guest: tests/guest (1024 MiB, the workload fills wl.mem=512 MiB with a
verifiable pattern and rewrites wl.dirty %/s of it), TCG unless the CPU has
vmx/svm and /dev/kvm is writable.  Every image and migration file goes to one
tmpfs directory under /dev/shm, so disks add no noise.

  1. save, guest stopped: vmsave --checkpoint (sealed; pauses, saves,
     resumes) vs QMP stop + migrate exec:zstd -1 -T0 > f  and  exec:cat > f
     (done as migrate fd: into a pipe to that command, started by the bench:
     vmckpt runs QEMU under a sandbox that forbids it to spawn; the work is
     the same)
  2. restore: vmrestore -p (sealed) vs qemu -incoming "exec:zstd -dc f" -S
  3. live: vmsave --live --checkpoint vs QEMU live migration to a second
     local QEMU over TCP (downtime and total time as QEMU reports them), and
     vmmigrate over loopback to a second registry and back, with its
     adaptive level (the default) and with --level 1
  4. the same guest migrated over a shaped link: QEMU native vs vmmigrate,
     from the root namespace to a namespace of ours over a veth pair with
     tc tbf at VMC_BENCH_LINK (default 1gbit, a common migration network;
     '' skips it; needs root)

Env: VMC_BENCH_RUNS        runs per measurement, median taken (default 3)
     VMC_BENCH_LIVE_DIRTY  wl.dirty of the guest of the live phase (default
                           10; a separate boot unless it equals 2)
     VMCKPT_ACCEL          tcg|kvm to force the accelerator
     VMC_BENCH_KEEP=1      keep the tmpfs directory (images, logs)

Memory: on these machines (themselves VMs) the first touch of memory the
host has not backed yet costs ~1 s per GiB in the kernel's page clearing, so
whichever restore or migration happened to get "cold" pages for its new QEMU
took 1.5 s longer (seen on both sides).  Before every restore and migration
the bench touches and frees RAM_MIB + 256 MiB (warm_memory), so each
measurement starts from the same warm state.

A tool that fails or hangs (a live save gets 60 s, anything else 120 s, then
SIGTERM) is reported in the table and under FAILURES, and the bench goes on
(a failed vmsave --live is not retried).  Exit status: 0, 1 when something
failed, 130 when interrupted.  Every QEMU, domain and file it made is gone on
exit, Ctrl-C included.

bench_disk.py (make bench runs it after this one) measures disk capture on
the same guest with a disk attached; it imports this file and calls
setup(), so the two boot, key and clean up alike.
"""
import array
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
B = os.path.join(ROOT, "build")
VMCTL, VMSAVE, VMRESTORE, VMIMAGE = (os.path.join(B, t) for t in
                                     ("vmctl", "vmsave", "vmrestore", "vmimage"))
RUNS = max(1, int(os.environ.get("VMC_BENCH_RUNS", "3")))
# QEMU 7.2 under TCG loses pages when pre-copy needs several passes (seen
# with plain QEMU TCP migration, see tests/e2e/migrate.sh): keep the live
# guest converging in one or two; KVM hosts can raise this.
LIVE_DIRTY = int(os.environ.get("VMC_BENCH_LIVE_DIRTY", "2"))
RAM_MIB, WL_MIB, DIRTY = 1024, 512, 2
TOOL_TIMEOUT = 120       # a stopped save or a restore takes ~1 s here
LIVE_TIMEOUT = 60        # a live save ~1-4 s
HUGE_BW = 1 << 40
TCK = os.sysconf("SC_CLK_TCK")

W = RUN = None          # tmpfs work dir, private VMCKPT_RUNDIR
ENV = dict(os.environ)
DOMS = set()            # vmctl domain ids to destroy
PROCS = []              # native QEMUs we started (Popen)


def log(*a):
    print(*a, flush=True)


def die(msg):
    print(f"bench_qemu: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


class ToolError(Exception):
    pass


# ---- QMP ------------------------------------------------------------------
class QMP:
    def __init__(self, path, timeout=30.0):
        end = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(max(1.0, end - time.monotonic()))
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > end:
                    raise ToolError(f"QMP {path}: cannot connect in {timeout} s")
                time.sleep(0.002)
        self.s = s
        self.f = s.makefile("rb")
        self.events = []
        s.settimeout(60)
        self._read()                       # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ToolError("QMP: connection closed")
        return json.loads(line)

    def cmd(self, name, args=None, check=True):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                if check:
                    raise ToolError(f"QMP {name}: {r['error'].get('desc')}")
                return None
            return r.get("return")

    def getfd(self, name, fd):
        """QMP getfd: hands fd to QEMU under name (SCM_RIGHTS)."""
        msg = json.dumps({"execute": "getfd",
                          "arguments": {"fdname": name}}).encode() + b"\n"
        self.s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                array.array("i", [fd]))])
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise ToolError(f"QMP getfd: {r['error'].get('desc')}")
            return r.get("return")

    def close(self):
        try:
            self.f.close()
            self.s.close()
        except OSError:
            pass


def qmp_of(domid):
    return QMP(os.path.join(RUN, str(domid), "qmp.sock"))


def wait_migration(q, timeout=300, poll=0.01):
    """Polls query-migrate until completed; returns (monotonic time, info)."""
    end = time.monotonic() + timeout
    while True:
        r = q.cmd("query-migrate")
        st = r.get("status")
        if st == "completed":
            return time.monotonic(), r
        if st in ("failed", "cancelled"):
            raise ToolError(f"migration {st}: {r.get('error-desc', '')}")
        if time.monotonic() > end:
            raise ToolError(f"migration still '{st}' after {timeout} s")
        time.sleep(poll)


def final_stats(q, tries=100):
    """query-migrate after completion; QEMU may say completed with
    total-time/downtime still 0 for a moment: query again."""
    r = {}
    for _ in range(tries):
        r = q.cmd("query-migrate")
        if r.get("status") == "completed" and r.get("total-time", 0) > 0 and \
                "downtime" in r:
            return r
        time.sleep(0.01)
    return r


# ---- processes -------------------------------------------------------------
def proc_cpu(pid):
    """(own cpu s, reaped children cpu s) of a process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fl = st[st.rindex(")") + 2:].split()
    # fields 14..17 (utime stime cutime cstime) are fl[11..14]
    return ((int(fl[11]) + int(fl[12])) / TCK, (int(fl[13]) + int(fl[14])) / TCK)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def children_of(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def qemu_pid(domid):
    with open(os.path.join(RUN, str(domid), "qemu.pid")) as f:
        return int(f.read().strip())


def run_tool(argv, timeout=TOOL_TIMEOUT):
    """Runs a vmckpt tool; returns (wall s, stdout, tool cpu s).  A tool that
    overruns gets SIGTERM (it should cancel and resume the domain), then
    SIGKILL 45 s later; its stderr goes into the error."""
    c0 = child_cpu()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=ENV, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        how = "SIGTERM"
        try:
            out, err = p.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            p.kill()
            how = "SIGTERM, then SIGKILL 45 s later"
            out, err = p.communicate()
        raise ToolError(f"{os.path.basename(argv[0])}: no result in {timeout} s "
                        f"({how}; exit {p.returncode}; it said: "
                        f"{err.decode(errors='replace').strip() or '-'})")
    except BaseException:
        p.kill()
        p.wait()
        raise
    t1 = time.monotonic()
    if p.returncode != 0:
        raise ToolError(f"{os.path.basename(argv[0])}: exit {p.returncode}: "
                        f"{err.decode(errors='replace').strip()}")
    return t1 - t0, out.decode(), child_cpu() - c0


def popen_qemu(args, tag, prefix=()):
    lf = open(os.path.join(W, f"{tag}.log"), "ab")
    p = subprocess.Popen(list(prefix) + ["qemu-system-x86_64"] + args, stdin=subprocess.DEVNULL,
                         stdout=lf, stderr=lf, env=ENV, start_new_session=True)
    lf.close()
    PROCS.append(p)
    return p


def end_qemu(p, q=None):
    """quit over QMP (if given), else or then SIGKILL; reaps it."""
    if q is not None:
        try:
            q.cmd("quit", check=False)
        except (OSError, ToolError):
            pass
        q.close()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.kill()
        p.wait()
    if p in PROCS:
        PROCS.remove(p)


def destroy(domid, quiet=False):
    p = subprocess.run([VMCTL, "destroy", str(domid)], env=ENV, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    DOMS.discard(domid)
    if p.returncode and not quiet:
        log(f"  (note: vmctl destroy {domid}: exit {p.returncode}: "
            f"{p.stderr.decode(errors='replace').strip()})")


def my_stray_qemus():
    """QEMU processes whose command line names our private directory."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cl = f.read()
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system") and W and W.encode() in cl:
            out.append(int(d))
    return out


def cleanup():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        link_down()
    except Exception:
        pass
    for p in list(PROCS):
        try:
            end_qemu(p)
        except Exception:
            pass
    for d in list(DOMS):
        try:
            destroy(d, quiet=True)
        except Exception:
            pass
    if RUN and os.path.isdir(RUN):      # restored domains we may not know of
        for d in os.listdir(RUN):
            if d.isdigit():
                try:
                    destroy(int(d), quiet=True)
                except Exception:
                    pass
    for pid in my_stray_qemus():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if W and os.path.isdir(W):
        if os.environ.get("VMC_BENCH_KEEP") == "1":
            print(f"bench_qemu: kept {W}", file=sys.stderr)
        else:
            shutil.rmtree(W, ignore_errors=True)


def on_signal(sig, frame):
    raise KeyboardInterrupt


# ---- guest -----------------------------------------------------------------
def console(domid):
    try:
        with open(os.path.join(RUN, str(domid), "console.log"), "rb") as f:
            return f.read().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""


def start_guest(name, dirty):
    args = QEMU_BASE + ["-append", f"console=ttyS0 quiet panic=-1 wl.mem={WL_MIB} "
                        f"wl.dirty={dirty}"]
    _, out, _ = run_tool([VMCTL, "start", name, "--"] + args, timeout=60)
    domid = int(out.strip())
    DOMS.add(domid)
    t0 = time.monotonic()
    while True:
        m = re.search(r"^VMCKPT-WL boot=(\w+) ready pages=(\d+) .*result=(\w+)",
                      console(domid), re.M)
        if m:
            break
        try:
            os.kill(qemu_pid(domid), 0)
        except OSError:
            raise ToolError(f"QEMU of {name} died while booting")
        if time.monotonic() - t0 > 180:
            raise ToolError(f"guest {name}: no ready line in 180 s: "
                            f"{console(domid)[-300:]!r}")
        time.sleep(0.2)
    if m.group(3) != "OK":
        raise ToolError(f"guest {name}: {m.group(0)}")
    log(f"guest {name} (domain {domid}, wl.dirty={dirty}) ready after "
        f"{time.monotonic() - t0:.1f} s: {m.group(2)} pages")
    settle(domid, m.group(1))
    return domid, m.group(1)


def settle(domid, boot, n=2, timeout=60):
    """Waits until the workload prints n new count lines in a row (it runs
    its normal loop: no full check in progress after a pause)."""
    pat = re.compile(rf"^VMCKPT-WL boot={boot} (count=(\d+) gen|check |ready )", re.M)
    end = time.monotonic() + timeout

    def tail():
        ms = pat.findall(console(domid))
        k = 0
        for m in reversed(ms):
            if not m[0].startswith("count="):
                break
            k += 1
        return k, len(ms)
    k0, l0 = tail()
    while time.monotonic() < end:
        k, l = tail()
        if l - l0 >= n and k >= n:
            return True
        time.sleep(0.1)
    log(f"  (note: domain {domid} did not print {n} new count lines in "
        f"{timeout} s)")
    return False


def verify_restored(domid, boot):
    """A restored (running) guest keeps counting lines of the same boot."""
    return settle(domid, boot, n=2, timeout=20)


# ---- measurements ----------------------------------------------------------
def fsize(p):
    return os.stat(p).st_size


def m_vmsave_stopped(domid, img, extra=()):
    qp = qemu_pid(domid)
    c0 = proc_cpu(qp)
    wall, out, tcpu = run_tool([VMSAVE, "--checkpoint", "--json", "-r", REC,
                                *extra, str(domid), img])
    c1 = proc_cpu(qp)
    j = json.loads(out)
    q = qmp_of(domid)
    try:
        info = q.cmd("query-migrate")
        st = q.cmd("query-status")["status"]
    finally:
        q.close()
    if st != "running":
        log(f"  (note: after vmsave --checkpoint the domain is '{st}', not running)")
    return dict(wall=wall, size=fsize(img), tool=j["total_time_ns"] / 1e9,
                cpu=tcpu + (c1[0] - c0[0]), qemu_t=info.get("total-time", 0) / 1e3,
                written=j["stream_bytes"], backend=j["backend_bytes"])


def m_native_save(domid, writer, path):
    """QEMU's own save into a pipe to `writer` (a shell command): what
    `migrate exec:WRITER` does, with the writer started here, since a
    vmckpt-managed QEMU runs under a sandbox that forbids it to spawn."""
    qp = qemu_pid(domid)
    q = qmp_of(domid)
    child = None
    try:
        q.cmd("migrate-set-parameters", {"max-bandwidth": HUGE_BW})
        rfd, wfd = os.pipe()
        child = subprocess.Popen(["sh", "-c", writer], stdin=rfd)
        os.close(rfd)
        c0 = proc_cpu(qp)
        t0 = time.monotonic()
        q.cmd("stop")
        q.getfd("bench-native", wfd)
        os.close(wfd)
        q.cmd("migrate", {"uri": "fd:bench-native"})
        t1, _ = wait_migration(q)
        # QEMU says "completed" before its cleanup closes the pipe: also
        # time until the writer has exited
        _, _, ru = os.wait4(child.pid, 0)
        child.returncode = 0
        t2 = time.monotonic()
        c1 = proc_cpu(qp)
        info = final_stats(q)
        q.cmd("cont")
    finally:
        if child and child.returncode is None:
            child.kill()
            child.wait()
        q.close()
    return dict(wall=t1 - t0, wall_done=t2 - t0, size=fsize(path),
                cpu=(c1[0] - c0[0]) + ru.ru_utime + ru.ru_stime,
                qemu_t=info.get("total-time", 0) / 1e3)


def m_vmrestore(img, extra=()):
    wall, out, tcpu = run_tool([VMRESTORE, "-p", "--json", "--name", "bench-restored",
                                "-i", KEY, *extra, img])
    j = json.loads(out)
    domid = j["domid"]
    DOMS.add(domid)
    qcpu = proc_cpu(qemu_pid(domid))
    q = qmp_of(domid)
    try:
        st = q.cmd("query-status")["status"]
    finally:
        q.close()
    destroy(domid)
    if st != "paused":
        log(f"  (note: vmrestore -p left the domain '{st}', not paused)")
    return dict(wall=wall, tool=j.get("total_time_ns", 0) / 1e9,
                cpu=tcpu + (qcpu[0] if qcpu else 0))


def native_args(tag, extra):
    sock = os.path.join(W, f"{tag}.qmp")
    if os.path.exists(sock):
        os.unlink(sock)
    return sock, QEMU_BASE + ["-append", APPEND_OF[tag[:4]],
                              "-qmp", f"unix:{sock},server=on,wait=off",
                              "-serial", "null"] + extra


def m_native_restore(path):
    sock, args = native_args("rest", ["-incoming", f"exec:zstd -dc {path}", "-S"])
    t0 = time.monotonic()
    p = popen_qemu(args, "native-restore")
    q = None
    try:
        q = QMP(sock, timeout=30)
        t1, _ = wait_migration(q, poll=0.005)
        c = proc_cpu(p.pid)
        st = q.cmd("query-status")["status"]
    finally:
        end_qemu(p, q)
    if st != "paused":
        log(f"  (note: native restore left QEMU '{st}', not paused)")
    return dict(wall=t1 - t0, cpu=c[0] + c[1])


def warm_memory():
    """Touch and free a guest's worth of huge pages (see the docstring)."""
    import mmap
    n = (RAM_MIB + 256) << 20
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(m, "madvise"):
        m.madvise(mmap.MADV_HUGEPAGE)
    block = b"\1" * (64 << 20)
    for _ in range(n // len(block)):
        m.write(block)
    m.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def m_vmsave_live(domid, img):
    wall, out, tcpu = run_tool([VMSAVE, "--live", "--checkpoint", "--json", "-r",
                                REC, str(domid), img], timeout=LIVE_TIMEOUT)
    j = json.loads(out)
    q = qmp_of(domid)
    try:
        info = q.cmd("query-migrate")
    finally:
        q.close()
    size = fsize(img)
    os.unlink(img)
    return dict(down=j["downtime_ns"] / 1e6, total=j["total_time_ns"] / 1e9,
                wall=wall, qemu_down=info.get("downtime", 0),
                qemu_t=info.get("total-time", 0) / 1e3,
                syncs=info.get("ram", {}).get("dirty-sync-count", 0), size=size)


def in_ns(ns):
    return ["ip", "netns", "exec", ns] if ns else []


def m_native_live(domid, ns=None, addr="127.0.0.1"):
    port = free_port()
    sock, args = native_args("live", ["-incoming", f"tcp:{addr}:{port}"])
    p = popen_qemu(args, "native-live", in_ns(ns))
    dq = q = None
    try:
        dq = QMP(sock, timeout=30)        # greeting: the listener is up
        q = qmp_of(domid)
        q.cmd("migrate-set-parameters", {"max-bandwidth": HUGE_BW,
                                         "downtime-limit": 300})
        t0 = time.monotonic()
        q.cmd("migrate", {"uri": f"tcp:{addr}:{port}"})
        t1, _ = wait_migration(q)
        info = final_stats(q)
        dst = dq.cmd("query-status")["status"]
        end_qemu(p, dq)
        dq = None
        q.cmd("cont")
    finally:
        if q:
            q.close()
        if p in PROCS:
            end_qemu(p, dq)
    if dst != "running":
        log(f"  (note: the TCP destination was '{dst}' after completion)")
    ram = info.get("ram", {})
    return dict(down=info.get("downtime", 0), total=info.get("total-time", 0) / 1e3,
                wall=t1 - t0, syncs=ram.get("dirty-sync-count", 0),
                bytes=ram.get("transferred", 0))


VMMIGRATE = os.path.join(ROOT, "build", "vmmigrate")


def m_vmmigrate(domid, src_run, dst_run, src_ns=None, dst_ns=None,
                addr="127.0.0.1", extra=()):
    """vmmigrate from registry src_run to dst_run (two "hosts" on one
    machine; over loopback, or from namespace src_ns to dst_ns listening on
    addr); returns the metrics and the new domain id."""
    port = free_port()
    auth = os.path.join(W, "authorized")
    with open(auth, "w") as f:
        f.write(REC + "\n")
    renv = dict(ENV, VMCKPT_RUNDIR=dst_run)
    senv = dict(ENV, VMCKPT_RUNDIR=src_run)
    recv = subprocess.Popen(in_ns(dst_ns) + [VMMIGRATE, "--listen", f"{addr}:{port}", "--once",
                             "-i", KEY, "--authorized-senders", auth,
                             "--timeout", "30"], env=renv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        recv.stderr.readline()                # "listening on ...": it is up
        # (a probe connection would be taken as the one migration of --once)
        t0 = time.monotonic()
        p = subprocess.run(in_ns(src_ns) + [VMMIGRATE, "--json", "-i", KEY,
                            "--receiver-key", REC, "--timeout", "30"] + list(extra) +
                           [str(domid), f"{addr}:{port}"],
                           env=senv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=LIVE_TIMEOUT)
        wall = time.monotonic() - t0
        if p.returncode:
            raise ToolError(f"vmmigrate: exit {p.returncode}: "
                            f"{p.stderr.decode(errors='replace').strip()}")
        j = json.loads(p.stdout)
    finally:
        try:
            recv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recv.kill()
            recv.wait()
    return dict(down=j["downtime_ns"] / 1e6, total=j["total_time_ns"] / 1e9,
                wall=wall, bytes=j["stream_bytes"],
                backend=j["backend_bytes"],
                syncs=len(j.get("rounds", [])), new=j["remote_domid"])


def migrate_there_and_back(what, into, gid, boot, run2, extra=(), link=False):
    """vmmigrate gid from RUN to run2 (measured, into `into`), then back
    (not measured); returns (metrics or None, the guest's domain id)."""
    there = dict(src_ns=None, dst_ns=LINK_NS, addr=LINK_B) if link else {}
    back_ = dict(src_ns=LINK_NS, dst_ns=None, addr=LINK_A) if link else {}
    settle(gid, boot)
    warm_memory()
    c = attempt(what, into, m_vmmigrate, gid, RUN, run2, extra=extra, **there)
    if c:
        try:
            warm_memory()
            back = m_vmmigrate(c["new"], run2, RUN, extra=extra, **back_)
        except ToolError as e:
            fail(what + " (back)", str(e))
            return c, gid           # gone from RUN: revive() replaces it
        DOMS.discard(gid)
        gid = back["new"]
        DOMS.add(gid)
    return c, gid


# A link of LINK (tc tbf on both ends of a veth pair): host A is the root
# namespace (LINK_A), host B a namespace of ours (LINK_B).
LINK = os.environ.get("VMC_BENCH_LINK", "1gbit")
LINK_NS = f"vmcbench{os.getpid()}"
LINK_A, LINK_B = "10.233.0.1", "10.233.0.2"
LINK_DEV = f"vbq{os.getpid() % 100000}"
LINK_MADE = False


def link_up():
    """Sets the link up; returns None or why it could not."""
    global LINK_MADE
    dev_b = LINK_DEV + "b"
    cmds = [["ip", "netns", "add", LINK_NS],
            ["ip", "link", "add", LINK_DEV, "type", "veth", "peer", "name", dev_b],
            ["ip", "link", "set", dev_b, "netns", LINK_NS],
            ["ip", "addr", "add", LINK_A + "/24", "dev", LINK_DEV],
            ["ip", "link", "set", LINK_DEV, "up"],
            ["ip", "-n", LINK_NS, "addr", "add", LINK_B + "/24", "dev", dev_b],
            ["ip", "-n", LINK_NS, "link", "set", dev_b, "up"],
            ["ip", "-n", LINK_NS, "link", "set", "lo", "up"],
            ["tc", "qdisc", "add", "dev", LINK_DEV, "root", "tbf", "rate", LINK,
             "burst", "1mb", "latency", "50ms"],
            ["tc", "-n", LINK_NS, "qdisc", "add", "dev", dev_b, "root", "tbf",
             "rate", LINK, "burst", "1mb", "latency", "50ms"]]
    LINK_MADE = True
    for c in cmds:
        try:
            p = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        except OSError as e:
            return f"{c[0]}: {e}"
        if p.returncode:
            return f"{' '.join(c)}: {p.stderr.strip()}"
    return None


def link_down():
    if LINK_MADE:
        subprocess.run(["ip", "netns", "del", LINK_NS], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", LINK_DEV], stderr=subprocess.DEVNULL)


# ---- report ----------------------------------------------------------------
FAILS = []


def fail(what, why):
    FAILS.append((what, why))
    log(f"  FAILED {what}: {why}")


def attempt(what, into, fn, *args, **kw):
    """One measurement; a tool failure is reported, not fatal."""
    try:
        r = fn(*args, **kw)
    except ToolError as e:
        fail(what, str(e))
        return None
    into.append(r)
    return r


def show(r, k, fmt="{:.3f}"):
    return "FAILED" if r is None else fmt.format(r[k])


def ensure_running(domid):
    """After a failed step the guest must run again for the next one; says
    so when it had to resume it."""
    q = qmp_of(domid)
    try:
        st = q.cmd("query-status")["status"]
        if st != "running":
            log(f"  (note: domain {domid} was left '{st}': bench resumes it)")
            if st == "postmigrate" or st == "paused":
                q.cmd("cont")
    finally:
        q.close()


DEATHS = []


def revive(gid, boot):
    """QEMU 7.2's TCG live migration itself sometimes loses guest pages (a
    plain QEMU-to-QEMU TCP migration of this guest panicked its kernel on
    the first try here): a guest that died is noted and replaced by a fresh
    one, so the remaining runs still measure.  Returns (gid, boot)."""
    try:
        os.kill(qemu_pid(gid), 0)
        return gid, boot
    except (OSError, ValueError):
        pass
    DEATHS.append(gid)
    DOMS.discard(gid)
    log(f"  (note: the live guest, domain {gid}, is gone after a migration: "
        f"booting a new one)")
    return start_guest(f"bench-live{len(DEATHS)}", LIVE_DIRTY)


def med(rs, k):
    return statistics.median(r[k] for r in rs) if rs else None


def best(rs, k):
    return min(r[k] for r in rs) if rs else None


def runs_of(rs, k, fmt="{:.3f}"):
    return " ".join(fmt.format(r[k]) for r in rs)


def ratio(a, b):
    return a / b if a is not None and b else None


def setup(prefix="vmc-bq."):
    """Checks the tools, builds the test guest, makes the tmpfs work dir,
    the private registry and the keys; sets the globals every measurement
    uses (bench_disk.py calls it too).  Returns the accelerator."""
    global W, RUN, REC, KEY, QEMU_BASE, APPEND_OF
    for t in (VMCTL, VMSAVE, VMRESTORE, VMIMAGE):
        if not os.access(t, os.X_OK):
            die(f"{t} not built (run make -C {ROOT} all)")
    for t in ("qemu-system-x86_64", "zstd", "cat"):
        if not shutil.which(t):
            die(f"{t} not found (run tests/deps.sh)")
    g = subprocess.run([os.path.join(ROOT, "tests/guest/build.sh")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kernel = re.search(r"^kernel: (.*)$", g.stdout, re.M)
    initrd = re.search(r"^initrd: (.*)$", g.stdout, re.M)
    if g.returncode or not kernel or not initrd:
        die(f"tests/guest/build.sh failed: {g.stderr.strip()[-300:]}")
    # the restore policy: the guest's kernel and initrd lie in an allowed dir
    ENV["VMCKPT_ALLOW_DIRS"] = os.path.dirname(kernel.group(1))
    accel = os.environ.get("VMCKPT_ACCEL", "")
    if not accel:
        with open("/proc/cpuinfo") as f:
            hw = re.search(r"\b(vmx|svm)\b", f.read())
        accel = "kvm" if hw and os.access("/dev/kvm", os.W_OK) else "tcg"
    cpu = "host" if accel == "kvm" else "max"
    QEMU_BASE = ["-accel", accel, "-cpu", cpu, "-m", str(RAM_MIB), "-smp", "1",
                 "-display", "none", "-nic", "none", "-no-reboot", "-nodefaults",
                 "-kernel", kernel.group(1), "-initrd", initrd.group(1)]
    app = "console=ttyS0 quiet panic=-1 wl.mem={} wl.dirty={}"
    APPEND_OF = {"rest": app.format(WL_MIB, DIRTY),
                 "live": app.format(WL_MIB, LIVE_DIRTY)}

    W = tempfile.mkdtemp(prefix=prefix, dir="/dev/shm")
    RUN = os.path.join(W, "run")
    os.mkdir(RUN)
    ENV["VMCKPT_RUNDIR"] = RUN
    KEY = os.path.join(W, "id.key")
    _, REC, _ = run_tool([VMIMAGE, "keygen", "-o", KEY])
    REC = REC.strip()
    # signed images: the bench's own signing key, trusted by its restores
    SIGN = os.path.join(W, "signing.key")
    _, SIGNER, _ = run_tool([VMIMAGE, "keygen", "--sign", "-o", SIGN])
    with open(os.path.join(W, "trusted_signers"), "w") as f:
        f.write(SIGNER)
    ENV["VMCKPT_SIGNING_KEY"] = SIGN
    ENV["VMCKPT_TRUSTED_SIGNERS"] = os.path.join(W, "trusted_signers")
    return accel


def main():
    accel = setup()
    T0 = time.monotonic()

    log(f"vmckpt QEMU bench: accel={accel}, guest {RAM_MIB} MiB with "
        f"wl.mem={WL_MIB} MiB touched, {os.cpu_count()} host CPUs, "
        f"median of {RUNS} runs")
    log(f"all images and migration files in {W} (tmpfs: no disk in the numbers)")
    log(f"load average before: {os.getloadavg()[0]:.2f}")

    # ---- 1. save, guest stopped ----------------------------------------
    gid, boot = start_guest("bench", DIRTY)
    img = os.path.join(W, "save.vmimg")
    zst = os.path.join(W, "save.zst")
    raw = os.path.join(W, "save.raw")
    uimg = os.path.join(W, "save-unsigned.vmimg")
    S_vm, S_z, S_c, S_u = [], [], [], []
    for i in range(RUNS):          # interleaved: noise hits all three alike
        for f in (img, zst, raw, uimg):
            if os.path.exists(f):
                os.unlink(f)
        a = attempt("save: vmsave --checkpoint", S_vm, m_vmsave_stopped, gid, img)
        # the same build with signatures off: format 1
        attempt("save: vmsave --checkpoint --unsigned", S_u, m_vmsave_stopped,
                gid, uimg, ("--unsigned",))
        b = attempt("save: exec:zstd", S_z, m_native_save, gid,
                    f"zstd -1 -T0 > {zst}", zst)
        c = attempt("save: exec:cat", S_c, m_native_save, gid,
                    f"cat > {raw}", raw)
        if os.path.exists(raw):
            os.unlink(raw)
        log(f"  save run {i + 1}: vmsave {show(a, 'wall')} s, zstd "
            f"{show(b, 'wall')} s, cat {show(c, 'wall')} s")
        ensure_running(gid)
    zstd_ok = os.path.exists(zst)
    if zstd_ok:
        t = subprocess.run(["zstd", "-q", "-t", zst], stderr=subprocess.PIPE,
                           text=True)
        if t.returncode:
            zstd_ok = False
            fail("save: exec:zstd", f"zstd -t on QEMU's exec:zstd output: "
                 f"{t.stderr.strip()}")
    img_ok = os.path.exists(img)
    if img_ok:
        v = subprocess.run([VMIMAGE, "verify", "-q", "-i", KEY, img], env=ENV,
                           stderr=subprocess.PIPE, text=True)
        if v.returncode:
            img_ok = False
            fail("save: vmsave --checkpoint", f"vmimage verify -q -i KEY "
                 f"{img}: {v.stderr.strip()}")

    # ---- 2. restore (source paused: its vCPU does not compete) -----------
    q = qmp_of(gid)
    q.cmd("stop")
    q.close()
    R_vm, R_z, R_u = [], [], []
    for i in range(RUNS):
        warm_memory()
        a = attempt("restore: vmrestore -p", R_vm, m_vmrestore, img) \
            if img_ok else None
        warm_memory()
        if os.path.exists(uimg):
            attempt("restore: vmrestore -p --allow-unsigned", R_u, m_vmrestore,
                    uimg, ("--allow-unsigned",))
        warm_memory()
        b = attempt("restore: exec:zstd -dc", R_z, m_native_restore, zst) \
            if zstd_ok else None
        log(f"  restore run {i + 1}: vmrestore {show(a, 'wall')} s, native "
            f"zstd -dc {show(b, 'wall')} s")
    # one restored guest, run for real: does it go on with the same boot?
    cont_ok = None
    if img_ok:
        try:
            _, out, _ = run_tool([VMRESTORE, "--json", "--name", "bench-check",
                                  "-i", KEY, img])
            rid = json.loads(out)["domid"]
            DOMS.add(rid)
            cont_ok = verify_restored(rid, boot)
            destroy(rid)
        except ToolError as e:
            fail("restore: vmrestore (run)", str(e))
    q = qmp_of(gid)
    q.cmd("cont")
    q.close()
    for f in (img, zst):
        if os.path.exists(f):
            os.unlink(f)

    # ---- 3. live ----------------------------------------------------------
    if LIVE_DIRTY != DIRTY:
        destroy(gid)
        gid, boot = start_guest("bench-live", LIVE_DIRTY)
    L_vm, L_n, L_m, L_m1, K_n, K_m = [], [], [], [], [], []
    RUN2 = os.path.join(W, "run2")
    os.mkdir(RUN2, 0o700)
    limg = os.path.join(W, "live.vmimg")
    vm_live_ok = True
    try:
        for i in range(RUNS):
            a = b = None
            gid, boot = revive(gid, boot)
            tried = vm_live_ok
            if tried:                  # a hang costs minutes: do not repeat it
                settle(gid, boot)
                warm_memory()
                a = attempt("live: vmsave --live --checkpoint", L_vm, m_vmsave_live,
                            gid, limg)
                vm_live_ok = a is not None
                ensure_running(gid)
            for f in (limg, limg + ".partial"):
                if os.path.exists(f):
                    os.unlink(f)
            settle(gid, boot)
            warm_memory()
            b = attempt("live: native tcp", L_n, m_native_live, gid)
            ensure_running(gid)
            va = (f"{a['down']:.0f} ms / {a['total']:.3f} s" if a else
                  "FAILED" if tried else "skipped (failed before)")
            nb = f"{b['down']:.0f} ms / {b['total']:.3f} s" if b else "FAILED"
            # vmmigrate to a second registry (a second "host") and back,
            # adaptive (the default) and at a fixed level 1
            c = c1 = None
            if os.path.exists(VMMIGRATE):
                c, gid = migrate_there_and_back("live: vmmigrate loopback",
                                                L_m, gid, boot, RUN2)
                gid, boot = revive(gid, boot)
                c1, gid = migrate_there_and_back("live: vmmigrate --level 1",
                                                 L_m1, gid, boot, RUN2,
                                                 extra=("--level", "1"))
            mc = f"{c['down']:.0f} ms / {c['total']:.3f} s" if c else "FAILED"
            mc1 = f"{c1['down']:.0f} ms / {c1['total']:.3f} s" if c1 else "FAILED"
            log(f"  live run {i + 1}: downtime / total: vmsave {va}, native {nb}, "
                f"vmmigrate {mc}, vmmigrate --level 1 {mc1}")
        # ---- 4. the same over a shaped link (a namespace, a veth pair) ----
        if LINK and os.path.exists(VMMIGRATE):
            why = link_up()
            if why:
                log(f"  (section 4 skipped: {why})")
            for i in range(RUNS if not why else 0):
                gid, boot = revive(gid, boot)
                settle(gid, boot)
                warm_memory()
                b = attempt("link: native tcp", K_n, m_native_live, gid, LINK_NS,
                            LINK_B)
                ensure_running(gid)
                c, gid = migrate_there_and_back("link: vmmigrate", K_m, gid, boot,
                                                RUN2, link=True)
                nb = f"{b['down']:.0f} ms / {b['total']:.3f} s" if b else "FAILED"
                mc = f"{c['down']:.0f} ms / {c['total']:.3f} s" if c else "FAILED"
                log(f"  link run {i + 1}: downtime / total: native {nb}, "
                    f"vmmigrate {mc}")

    except (Exception, SystemExit) as e:   # a dead guest must not lose the report
        fail("live", f"stopped: {e}")
    try:
        gid, boot = revive(gid, boot)
        alive = settle(gid, boot)
        destroy(gid)
    except (Exception, SystemExit) as e:
        alive = False
        fail("live", f"the live guest is gone: {e}")

    # ---- report -------------------------------------------------------------
    report(dict(S_vm=S_vm, S_z=S_z, S_c=S_c, R_vm=R_vm, R_z=R_z, L_vm=L_vm,
                S_u=S_u, R_u=R_u,
                L_n=L_n, L_m=L_m, L_m1=L_m1, K_n=K_n, K_m=K_m, cont_ok=cont_ok, alive=alive, accel=accel,
                secs=time.monotonic() - T0))


def cell(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def report(r):
    S_vm, S_z, S_c, R_vm, R_z, L_vm, L_n = (r[k] for k in (
        "S_vm", "S_z", "S_c", "R_vm", "R_z", "L_vm", "L_n"))
    yn = {True: "yes", False: "NO", None: "not checked"}
    log("")
    log(f"load average after: {os.getloadavg()[0]:.2f}; bench time "
        f"{r['secs']:.0f} s; accel={r['accel']}; medians of {RUNS} runs; "
        f"files on tmpfs ({W})")
    log("")
    h = "{:<40} {:>8} {:>8} {:>11} {:>6}  {}"

    def row(name, rs, k2, size=True):
        if not rs:
            log(h.format(name, "FAILED", "", "", "", ""))
            return
        log(h.format(name, cell(med(rs, "wall")), cell(med(rs, k2) if k2 else None),
                     cell(med(rs, "size") if size else None, "{:.0f}"),
                     cell(med(rs, "cpu"), "{:.2f}"), runs_of(rs, "wall")))
    log(f"1. save, guest stopped ({RAM_MIB} MiB guest, {WL_MIB} MiB touched, "
        f"wl.dirty={DIRTY})")
    log(h.format("", "wall s", "qemu s", "bytes", "cpu s", "each run (wall s)"))
    row("vmsave --checkpoint (sealed, X25519)", S_vm, "qemu_t")
    row("stop; migrate exec:zstd -1 -T0 > f", S_z, "qemu_t")
    row("stop; migrate exec:cat > f", S_c, "qemu_t")
    row("vmsave --checkpoint --unsigned (v1)", r["S_u"], "qemu_t")
    log("   wall s  vmsave: the whole command (QMP, pause, save, resume, "
        "fsync+rename);")
    log("           native: QMP stop .. query-migrate 'completed' (until the "
        f"exec: writer had exited: zstd {cell(med(S_z, 'wall_done'))} s, "
        f"cat {cell(med(S_c, 'wall_done'))} s)")
    log("   qemu s  QEMU's own total-time of that migration (vmsave: its fd: "
        "migration into vmsave's pipe)")
    log("   cpu s   vmsave + QEMU  /  QEMU + its exec: child")
    log(f"   vmsave's own total_time_ns {cell(med(S_vm, 'tool'))} s; QEMU "
        f"stream {cell(med(S_vm, 'backend'), '{:.0f}')} bytes; zstd file / cat "
        f"file = {cell(ratio(med(S_z, 'size'), med(S_c, 'size')))} (the "
        "workload's pages are xorshift output: incompressible)")
    log("")
    log("2. restore (the source guest is paused meanwhile)")
    log(h.format("", "wall s", "tool s", "", "cpu s", "each run (wall s)"))
    row("vmrestore -p (sealed)", R_vm, "tool", size=False)
    row("qemu -incoming 'exec:zstd -dc f' -S", R_z, None, size=False)
    row("vmrestore -p --allow-unsigned (v1)", r["R_u"], "tool", size=False)
    log("   wall s  vmrestore: the whole command (starts QEMU, loads, "
        "authenticates, leaves it paused);")
    log("           native: QEMU process start .. query-migrate 'completed'")
    log("   tool s  vmrestore's own total_time_ns; cpu s  vmrestore + QEMU  /  "
        "QEMU + zstd -dc")
    log(f"   a restored domain, resumed, went on counting with the same boot "
        f"id: {yn[r['cont_ok']]}")
    log("")
    log(f"3. live, the workload rewriting {LIVE_DIRTY} %/s of {WL_MIB} MiB")
    h3 = "{:<40} {:>8} {:>8} {:>8} {:>9} {:>5}  {}"
    log(h3.format("", "down ms", "total s", "wall s", "qemu down", "syncs",
                  "each run (downtime ms)"))
    for name, rs, qd in (("vmsave --live --checkpoint (sealed)", L_vm, True),
                         ("QEMU migrate tcp:127.0.0.1 (2nd QEMU)", L_n, False),
                         ("vmmigrate 127.0.0.1 (sealed, authed)", r["L_m"], False),
                         ("vmmigrate --level 1 127.0.0.1", r["L_m1"], False),
                         (f"QEMU migrate tcp, {LINK} link", r["K_n"], False),
                         (f"vmmigrate, {LINK} link", r["K_m"], False)):
        if not rs:
            log(h3.format(name, "FAILED", "", "", "", "", ""))
            continue
        log(h3.format(name, cell(med(rs, "down"), "{:.0f}"), cell(med(rs, "total")),
                      cell(med(rs, "wall")),
                      cell(med(rs, "qemu_down") if qd else None, "{:.0f}"),
                      cell(med(rs, "syncs"), "{:.0f}"), runs_of(rs, "down", "{:.0f}")))
    log("   down ms  vmsave: downtime_ns (QEMU's STOP event .. resumed);  "
        "native: QEMU's 'downtime' (source side)")
    log("   total s  vmsave: total_time_ns; native: QEMU's 'total-time'.  "
        "wall s: the command / migrate .. completed")
    log("   qemu down: QEMU's own 'downtime' of vmsave's fd: migration;  "
        "syncs: dirty-sync-count (pre-copy rounds)")
    log("   vmmigrate: --level auto (the default) compresses only as much as the "
        "link needs;")
    log(f"   the {LINK} link: tc tbf on both ends of a veth pair into a namespace "
        "(VMC_BENCH_LINK='' skips it)")
    for name, rs in (("loopback", r["L_m"]), ("loopback --level 1", r["L_m1"]),
                     (f"{LINK} link", r["K_m"])):
        if rs:
            log(f"   vmmigrate {name}: {med(rs, 'bytes') / 1e6:.0f} MB sent for "
                f"{med(rs, 'backend') / 1e6:.0f} MB of QEMU stream")
    if r["K_n"]:
        log(f"   QEMU native over the {LINK} link: "
            f"{med(r['K_n'], 'bytes') / 1e6:.0f} MB sent")
    log(f"   the live guest was still counting at the end: {yn[r['alive']]}")
    if DEATHS:
        log(f"   guests that died after a migration and were replaced: "
            f"{len(DEATHS)} (QEMU 7.2 TCG migration; seen with native TCP too)")
    log("")
    log("ratios (target in brackets):")
    rows = [
        ("vmsave wall / exec:zstd -1 -T0 wall", S_vm, S_z, "wall", "[<= 1.0]"),
        ("vmsave image / exec:zstd file", S_vm, S_z, "size", "[<= 1.0]"),
        ("vmsave wall / exec:cat wall", S_vm, S_c, "wall", ""),
        ("vmrestore wall / exec:zstd -dc wall", R_vm, R_z, "wall", "[<= 1.1]"),
        ("signed / unsigned vmsave tool time", S_vm, r["S_u"], "tool", "[<= 1.02]"),
        ("signed / unsigned vmrestore tool time", R_vm, r["R_u"], "tool",
         "[<= 1.02]"),
        ("live downtime, vmsave / native TCP", L_vm, L_n, "down", "[compare]"),
        ("live total time, vmsave / native TCP", L_vm, L_n, "total", "[compare]"),
        ("vmmigrate downtime / native TCP", r["L_m"], L_n, "down", "[<= 1.0]"),
        ("vmmigrate total time / native TCP", r["L_m"], L_n, "total", "[<= 1.2]"),
        ("vmmigrate --level 1 total / native", r["L_m1"], L_n, "total", ""),
        (f"{LINK} link: vmmigrate down / native", r["K_m"], r["K_n"], "down",
         "[<= 1.0]"),
        (f"{LINK} link: vmmigrate total / native", r["K_m"], r["K_n"], "total",
         "[<= 1.2]"),
        (f"{LINK} link: vmmigrate bytes / native", r["K_m"], r["K_n"], "bytes", ""),
    ]
    log(f"  {'':<38}   median  (best runs: min/min; neighbours inflate "
        "medians)")
    for name, a, b, k, tgt in rows:
        v = ratio(med(a, k), med(b, k))
        m = ratio(best(a, k), best(b, k))
        log(f"  {name:<38} = " + (f"{v:6.3f}  ({m:.3f})  {tgt}" if v is not None
                                  else "n/a (failed)"))
    if FAILS:
        log("")
        log(f"FAILURES ({len(FAILS)}):")
        for what, why in FAILS:
            log(f"  {what}: {why}")

if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    rc = 0
    try:
        main()
        if FAILS:
            rc = 1
    except KeyboardInterrupt:
        print("bench_qemu: interrupted", file=sys.stderr)
        rc = 130
    except ToolError as e:
        print(f"bench_qemu: {e}", file=sys.stderr)
        rc = 1
    finally:
        cleanup()
    sys.exit(rc)
