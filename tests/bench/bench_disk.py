#!/usr/bin/env python3
"""bench_disk.py - disk capture: vmsave --disks against qemu-img convert and
tar -cS of the same sparse raw disk, piped into zstd -1 -T0, measured in one
run on one guest (make bench, make bench-disk).  Prints a table and the
ratios with their targets; asserts nothing (machines here are shared and
noisy: compare ratios, not absolute numbers).

The disk: a sparse raw file of VMC_BENCH_DISK_SIZE (8G) with
VMC_BENCH_DISK_DATA (1G) of gendata pages (35% zero, 40% text/code, 25%
random) written as 16 equal extents, one at the start of each sixteenth
of the disk plus k*4 KiB (so extents do not start on a 64 KiB grain), with
dd conv=notrunc: the zero pages inside an extent are data, the rest of the
file is holes.  It lies in VMC_BENCH_DISK_DIR (default /var/tmp: a real
disk, its filesystem is printed; tmpfs gets a warning), attached to the
bench guest of bench_qemu.py (1024 MiB, wl.mem=512) as -drive
file=DISK,if=virtio,format=raw; the guest never writes to it.  Images and
archives go to the tmpfs work directory: the reads of the disk are what is
measured, not the writes of the outputs.  Before every read of the disk the
page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches, or
POSIX_FADV_DONTNEED on the disk file when that is not writable), the same
for every contender.

  a. vmckpt, the guest paused (QMP stop): vmsave --paused --json, without
     --disks and with it, of the same paused domain (--paused leaves it
     paused: the memory is the same in both).  The disk part of the image =
     the size difference of the two images; its time = disk_time_ns (reading,
     digest, compression, AEAD and signatures of the disk records);
     throughput = disk_bytes / disk_time_ns, and the logical size / the
     same time.  The wall time of the save with --disks minus the one
     without is printed too.
  b. qemu-img convert -O raw DISK, then zstd -1 -T0.  QEMU 7.2's qemu-img
     cannot write into a pipe: /dev/stdout or /dev/fd/1 as the target
     fails with "Cannot grow device files"; with -n, "output file is smaller
     than input file" (a pipe has size 0), and a raw target with size= is
     refused the same way.  So it converts into a sparse file on tmpfs and
     zstd compresses that file: the time is the sum (qemu-img alone is
     printed too).  b'. the pipe form of the same, where libnbd's nbdcopy is
     installed: nbdcopy -- [ qemu-nbd -r -f raw DISK ] - | zstd -1 -T0 (QEMU's
     block layer reads, the raw stream carries the holes as zeros), in the
     first run only: it is the slowest (~25 s) and only shows the pipe form
     of b.
  c. tar -cS -f - DISK | zstd -1 -T0 (GNU tar; holes found with SEEK_HOLE)
  d. bsdtar --format pax -cS -f - DISK | zstd -1 -T0 (libarchive), for the
     record of a design decision: the project carries its own DISK_EXTENT
     records rather than a pax archive inside the stream.
  e. vmsave --checkpoint --disks against vmsave --checkpoint --memory-only
     (a plain checkpoint of a domain with a writable disk is refused) of the
     same running guest: downtime_ns, medians.  While vmsave refuses the
     former ("carried only by a save that stops it") the row says "not
     measured" and why; it measures once the feature lands.

Env: VMC_BENCH_RUNS       runs per measurement, median taken (default 3)
     VMC_BENCH_DISK_SIZE  the disk's virtual size (default 8G)
     VMC_BENCH_DISK_DATA  the data written into it (default 1G; 64M for a
                          quick run)
     VMC_BENCH_DISK_DIR   where the disk file goes (default /var/tmp)
     VMCKPT_ACCEL         tcg|kvm to force the accelerator
     VMC_BENCH_KEEP=1     keep the work directories

Exit status: 0, 1 when something failed (a failed tool is reported under
FAILURES and the bench goes on), 130 when interrupted.  Every QEMU, domain
and file it made is gone on exit, Ctrl-C included.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_qemu as bq                                  # noqa: E402

from bench_qemu import (ToolError, attempt, fail, log, med, best, ratio,
                        runs_of, cell, fsize)            # noqa: E402

RUNS = bq.RUNS
EXTENTS = 16
DISK_DIR = os.environ.get("VMC_BENCH_DISK_DIR", "/var/tmp")
DISK_TIMEOUT = 600
REFUSED = "carried only by a save that stops it"
DD = DISK = None            # the disk's directory and file
DROP = None                 # how the page cache is dropped


def size_arg(name, default):
    v = os.environ.get(name, default).strip()
    m = re.fullmatch(r"(\d+)([KMG]?)", v, re.I)
    if not m:
        bq.die(f"{name}={v!r}: a size in bytes or with K/M/G")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


SIZE = size_arg("VMC_BENCH_DISK_SIZE", "8G")
DATA = size_arg("VMC_BENCH_DISK_DATA", "1G")
PIECE = DATA // EXTENTS // 4096 * 4096


def fs_of(path):
    p = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", path],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return " on ".join(p.stdout.split()) or "unknown"


def make_disk():
    """The sparse disk with DATA octets in EXTENTS extents; returns the
    octets the filesystem allocated."""
    with open(DISK, "wb") as f:
        f.truncate(SIZE)
    gen = os.path.join(bq.B, "tests", "gendata")
    for k in range(EXTENTS):
        off = k * (SIZE // EXTENTS) + k * 4096
        p = subprocess.run(f"'{gen}' {PIECE} {100 + k} | dd of='{DISK}' bs=4k "
                           f"iflag=fullblock seek={off // 4096} conv=notrunc "
                           "status=none", shell=True, stderr=subprocess.PIPE,
                           text=True)
        if p.returncode:
            raise ToolError(f"writing the disk: {p.stderr.strip()}")
    os.sync()
    return os.stat(DISK).st_blocks * 512


def drop_cache():
    """The disk file out of the page cache (the same before every read)."""
    global DROP
    os.sync()
    if DROP in (None, "drop_caches"):
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            DROP = "drop_caches"
            return
        except OSError:
            DROP = "POSIX_FADV_DONTNEED"
    fd = os.open(DISK, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sh(cmd, timeout=DISK_TIMEOUT):
    """Runs a shell pipeline (pipefail); returns (wall s, cpu s of it)."""
    c0 = bq.child_cpu()
    t0 = time.monotonic()
    try:
        p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], timeout=timeout,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{cmd.split()[0]}: no result in {timeout} s")
    wall = time.monotonic() - t0
    if p.returncode:
        raise ToolError(f"{cmd}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return wall, bq.child_cpu() - c0


# ---- measurements ----------------------------------------------------------
def repause(gid):
    """A domain saved with --paused is left in QEMU's 'postmigrate' state,
    and QEMU 7.2 refuses to migrate it again ("Can't migrate the vm that
    was paused due to previous migration"): cont, then stop at once (a few
    ms of guest time; the workload's pages are incompressible either
    way)."""
    q = bq.qmp_of(gid)
    try:
        st = q.cmd("query-status")["status"]
        if st == "postmigrate":
            q.cmd("cont")
            q.cmd("stop")
            return 1
        if st != "paused":
            q.cmd("stop")
    finally:
        q.close()
    return 0


REPAUSED = [0]


def m_vmsave_paused(gid, img, disks):
    REPAUSED[0] += repause(gid)
    drop_cache()
    qp = bq.qemu_pid(gid)
    c0 = bq.proc_cpu(qp)
    argv = [bq.VMSAVE, "--paused", "--json", "-r", bq.REC] + \
        (["--disks"] if disks else []) + [str(gid), img]
    wall, out, tcpu = bq.run_tool(argv, timeout=DISK_TIMEOUT)
    c1 = bq.proc_cpu(qp)
    j = json.loads(out)
    if disks and j.get("disks_carried") != 1:
        raise ToolError(f"vmsave --disks carried {j.get('disks_carried')} disks, "
                        "not 1")
    r = dict(wall=wall, size=fsize(img), cpu=tcpu + (c1[0] - c0[0]),
             dcpu=tcpu, disk_bytes=j.get("disk_bytes", 0),
             disk_t=j.get("disk_time_ns", 0) / 1e9)
    return r


def m_vmckpt(gid, img_m, img_d, first):
    """One pair: the paused domain saved without its disk, then with it."""
    m = m_vmsave_paused(gid, img_m, False)
    d = m_vmsave_paused(gid, img_d, True)
    if first:
        v = subprocess.run([bq.VMIMAGE, "verify", "-q", "-i", bq.KEY, img_d],
                           env=bq.ENV, stderr=subprocess.PIPE, text=True)
        if v.returncode:
            raise ToolError(f"vmimage verify -q {img_d}: {v.stderr.strip()}")
    r = dict(wall=d["disk_t"], size=d["size"] - m["size"], mem_size=m["size"],
             disk_bytes=d["disk_bytes"], wall_diff=d["wall"] - m["wall"],
             cpu=d["dcpu"] - m["dcpu"])
    for f in (img_m, img_d):
        os.unlink(f)
    return r


def m_qemu_img(out):
    tmp = os.path.join(bq.W, "convert.raw")
    drop_cache()
    t1, c1 = sh(f"qemu-img convert -q -f raw -O raw '{DISK}' '{tmp}'")
    t2, c2 = sh(f"zstd -q -1 -T0 -f '{tmp}' -o '{out}'")
    os.unlink(tmp)
    r = dict(wall=t1 + t2, convert=t1, size=fsize(out), cpu=c1 + c2)
    os.unlink(out)
    return r


def m_pipe(cmd, out):
    drop_cache()
    wall, cpu = sh(f"{cmd} | zstd -q -1 -T0 > '{out}'")
    r = dict(wall=wall, size=fsize(out), cpu=cpu)
    os.unlink(out)
    return r


def m_checkpoint(gid, img, disks):
    drop_cache()
    argv = [bq.VMSAVE, "--checkpoint", "--json", "-r", bq.REC] + \
        (["--disks"] if disks else ["--memory-only"]) + [str(gid), img]
    try:
        wall, out, _ = bq.run_tool(argv, timeout=DISK_TIMEOUT)
    finally:
        for f in (img, img + ".partial"):
            if os.path.exists(f):
                os.unlink(f)
    j = json.loads(out)
    bq.ensure_running(gid)
    return dict(down=j["downtime_ns"] / 1e6, total=j["total_time_ns"] / 1e9,
                wall=wall, disk_bytes=j.get("disk_bytes", 0))


# ---- the run -----------------------------------------------------------------
def main():
    global DD, DISK
    if not 0 < PIECE <= SIZE // EXTENTS - EXTENTS * 4096:
        bq.die(f"VMC_BENCH_DISK_DATA={DATA} does not fit {EXTENTS} extents "
               f"into VMC_BENCH_DISK_SIZE={SIZE}")
    for t in ("qemu-img", "tar", "bsdtar", "zstd", "dd", "findmnt"):
        if not shutil.which(t):
            bq.die(f"{t} not found (run tests/deps.sh bench)")
    if not os.access(os.path.join(bq.B, "tests", "gendata"), os.X_OK):
        bq.die(f"build/tests/gendata not built (make -C {bq.ROOT} build/tests/gendata)")
    nbd = shutil.which("nbdcopy") and shutil.which("qemu-nbd")
    accel = bq.setup("vmc-bd.")
    DD = tempfile.mkdtemp(prefix="vmc-bd.", dir=DISK_DIR)
    DISK = os.path.join(DD, "disk.raw")
    fs = fs_of(DD)
    T0 = time.monotonic()
    used = make_disk()
    bq.ENV["VMCKPT_ALLOW_DIRS"] += ":" + DD
    bq.QEMU_BASE = bq.QEMU_BASE + ["-drive", f"file={DISK},if=virtio,format=raw"]
    log(f"vmckpt disk bench: accel={accel}, {os.cpu_count()} host CPUs, median "
        f"of {RUNS} runs")
    log(f"disk {DISK}: {fs}; {SIZE} bytes virtual, {EXTENTS} extents of "
        f"{PIECE} bytes of gendata = {PIECE * EXTENTS} data bytes, "
        f"{used} bytes allocated")
    if fs.startswith("tmpfs"):
        log("  (warning: the disk is on tmpfs: set VMC_BENCH_DISK_DIR to a real "
            "disk)")
    log(f"images and archives in {bq.W} (tmpfs)")
    log(f"load average before: {os.getloadavg()[0]:.2f}")

    gid, boot = bq.start_guest("bench-disk", bq.DIRTY)
    q = bq.qmp_of(gid)
    q.cmd("stop")
    q.close()
    out = os.path.join(bq.W, "out")
    img_m, img_d = (os.path.join(bq.W, f) for f in ("mem.vmimg", "disk.vmimg"))
    A, B_, N, C, D = [], [], [], [], []
    for i in range(RUNS):          # interleaved: noise hits all alike
        a = attempt("a: vmsave --paused [--disks]", A, m_vmckpt, gid, img_m,
                    img_d, i == 0)
        b = attempt("b: qemu-img convert; zstd", B_, m_qemu_img, out)
        n = attempt("b': nbdcopy [qemu-nbd] - | zstd", N, m_pipe,
                    f"nbdcopy -- [ qemu-nbd -r -f raw '{DISK}' ] -", out) \
            if nbd and i == 0 else None
        c = attempt("c: tar -cS | zstd", C, m_pipe, f"tar -cS -f - -C '{DD}' "
                    "disk.raw", out)
        d = attempt("d: bsdtar pax -cS | zstd", D, m_pipe, f"bsdtar --format "
                    f"pax -cS -f - -C '{DD}' disk.raw", out)
        log(f"  run {i + 1}: vmsave disk {bq.show(a, 'wall')} s, qemu-img "
            f"{bq.show(b, 'wall')} s, nbdcopy "
            f"{bq.show(n, 'wall') if nbd and i == 0 else '-'}, tar "
            f"{bq.show(c, 'wall')} s, bsdtar {bq.show(d, 'wall')} s")

    # ---- e. checkpoint downtime, with and without the disk -----------------
    q = bq.qmp_of(gid)
    q.cmd("cont")
    q.close()
    bq.settle(gid, boot)
    E_m, E_d = [], []
    why_not = None
    img = os.path.join(bq.W, "ck.vmimg")
    for i in range(RUNS):
        bq.settle(gid, boot)
        m = attempt("e: vmsave --checkpoint --memory-only", E_m, m_checkpoint,
                    gid, img, False)
        d = None
        if why_not is None:
            bq.settle(gid, boot)
            try:
                d = m_checkpoint(gid, img, True)
                E_d.append(d)
            except ToolError as e:
                if REFUSED in str(e):
                    why_not = re.sub(r"^vmsave: exit \d+: ", "",
                                     str(e)).splitlines()[0]
                else:
                    fail("e: vmsave --checkpoint --disks", str(e))
                bq.ensure_running(gid)
        log(f"  checkpoint run {i + 1}: downtime --memory-only "
            f"{bq.show(m, 'down', '{:.0f}')} ms, --disks " +
            (f"{bq.show(d, 'down', '{:.0f}')} ms" if why_not is None else
             "not measured (refused)"))
    alive = bq.settle(gid, boot)
    bq.destroy(gid)
    report(dict(A=A, B=B_, N=N, C=C, D=D, E_m=E_m, E_d=E_d, why_not=why_not,
                nbd=nbd, fs=fs, alive=alive, accel=accel,
                secs=time.monotonic() - T0))


def report(r):
    A, B_, N, C, D = (r[k] for k in "ABNCD")
    log("")
    log(f"load average after: {os.getloadavg()[0]:.2f}; bench time "
        f"{r['secs']:.0f} s; accel={r['accel']}; medians of {RUNS} runs")
    log(f"disk: {SIZE / 2**30:.3g} GiB sparse raw, {PIECE * EXTENTS / 2**20:.0f} "
        f"MiB of gendata in {EXTENTS} extents, on {r['fs']}; page cache "
        f"dropped ({DROP}) before every read; outputs on tmpfs")
    log("")
    h = "{:<44} {:>8} {:>9} {:>9} {:>12} {:>6}  {}"
    log(h.format("", "seconds", "data MB/s", "logical", "output bytes", "cpu s",
                 "each run (s)"))

    def row(name, rs, data=PIECE * EXTENTS):
        if not rs:
            log(h.format(name, "FAILED", "", "", "", "", ""))
            return
        t = med(rs, "wall")
        log(h.format(name, cell(t), cell(data / t / 1e6, "{:.0f}"),
                     cell(SIZE / t / 1e6, "{:.0f}"), cell(med(rs, "size"), "{:.0f}"),
                     cell(med(rs, "cpu"), "{:.2f}"), runs_of(rs, "wall")))
    row("a. vmsave --paused --disks, the disk part", A,
        med(A, "disk_bytes") if A else 0)
    row("b. qemu-img convert -O raw; zstd -1 -T0", B_)
    if r["nbd"]:
        row("b'. nbdcopy [qemu-nbd] - | zstd -1 -T0 (1 run)", N)
    else:
        log(h.format("b'. nbdcopy [qemu-nbd] - | zstd -1 -T0", "not installed",
                     "", "", "", "", ""))
    row("c. tar -cS | zstd -1 -T0", C)
    row("d. bsdtar --format pax -cS | zstd -1 -T0", D)
    log("   a: seconds = disk_time_ns (read, digest, zstd, AEAD, signatures of "
        "the disk records); data MB/s = disk_bytes / that;")
    log(f"      output = the image with --disks minus the one without "
        f"({cell(med(A, 'mem_size'), '{:.0f}')} bytes of memory); cpu s = "
        "vmsave's cpu, with minus without")
    log(f"      wall of vmsave --disks minus vmsave: {cell(med(A, 'wall_diff'))} s; "
        f"disk_bytes {cell(med(A, 'disk_bytes'), '{:.0f}')} (data extents, "
        "64 KiB grains)")
    if B_:
        log(f"   b: qemu-img convert alone (into a sparse file on tmpfs): "
            f"{cell(med(B_, 'convert'))} s; then zstd reads the {SIZE / 2**30:.3g} "
            "GiB file, holes as zeros")
    log("   logical = the virtual size / seconds; cpu s = the commands' own "
        "(vmsave: its process)")
    log("")
    log("e. downtime of a checkpoint of the running guest (downtime_ns)")
    h3 = "{:<44} {:>8} {:>8}  {}"
    log(h3.format("", "down ms", "total s", "each run (downtime ms)"))
    for name, rs in (("vmsave --checkpoint --memory-only", r["E_m"]),
                     ("vmsave --checkpoint --disks", r["E_d"])):
        if rs:
            log(h3.format(name, cell(med(rs, "down"), "{:.0f}"),
                          cell(med(rs, "total")), runs_of(rs, "down", "{:.0f}")))
        elif rs is r["E_d"] and r["why_not"]:
            log(f"{name:<44} not measured: {r['why_not']}")
        else:
            log(h3.format(name, "FAILED", "", ""))
    log(f"   a plain --checkpoint of a domain with a writable disk is refused: "
        "--memory-only is the checkpoint without disks")
    log(f"   a: the paused domain was resumed and paused again between saves "
        f"({REPAUSED[0]}x: --paused leaves QEMU in 'postmigrate',")
    log("      which refuses a second migrate)")
    log(f"   the guest was still counting at the end: "
        f"{'yes' if r['alive'] else 'NO'}")
    log("")
    # the better qemu-img form, and the better of it and tar
    refs = [x for x in (B_, N, C) if x]
    fastest = min(refs, key=lambda x: med(x, "wall")) if refs else None
    smallest = min(refs, key=lambda x: med(x, "size")) if refs else None
    name_of = {id(B_): "b", id(N): "b'", id(C): "c"}
    log("ratios (target in brackets):")
    log(f"  {'':<46}   median  (best runs: min/min)")

    def line(name, v, m, tgt):
        log(f"  {name:<46} = " + (f"{v:6.3f}  ({m:.3f})  {tgt}" if v is not None
                                  else "n/a (failed)"))
    if fastest:
        line(f"vmckpt disk throughput / best ({name_of[id(fastest)]})",
             ratio(med(fastest, "wall"), med(A, "wall")),
             ratio(best(fastest, "wall"), best(A, "wall")), "[>= 1.0]")
        line(f"vmckpt disk image / smallest ({name_of[id(smallest)]})",
             ratio(med(A, "size"), med(smallest, "size")),
             ratio(best(A, "size"), best(smallest, "size")), "[<= 1.02]")
    line("vmckpt disk throughput / bsdtar pax",
         ratio(med(D, "wall"), med(A, "wall")), ratio(best(D, "wall"),
                                                      best(A, "wall")), "[record]")
    line("vmckpt disk image / bsdtar pax", ratio(med(A, "size"), med(D, "size")),
         ratio(best(A, "size"), best(D, "size")), "[record]")
    line("bsdtar pax / GNU tar, throughput", ratio(med(C, "wall"), med(D, "wall")),
         ratio(best(C, "wall"), best(D, "wall")), "")
    if r["E_d"]:
        line("--checkpoint --disks / --memory-only downtime",
             ratio(med(r["E_d"], "down"), med(r["E_m"], "down")),
             ratio(best(r["E_d"], "down"), best(r["E_m"], "down")), "[<= 1.2]")
    else:
        log(f"  {'--checkpoint --disks / --memory-only downtime':<46} = not "
            f"measured: {'refused (see e.)' if r['why_not'] else 'failed'}  "
            "[<= 1.2]")
    log("  (throughput ratios are time ratios: every contender reads the same "
        "data)")
    if bq.FAILS:
        log("")
        log(f"FAILURES ({len(bq.FAILS)}):")
        for what, why in bq.FAILS:
            log(f"  {what}: {why}")


def cleanup():
    bq.cleanup()
    if DD and os.path.isdir(DD):
        if os.environ.get("VMC_BENCH_KEEP") == "1":
            print(f"bench_disk: kept {DD}", file=sys.stderr)
        else:
            shutil.rmtree(DD, ignore_errors=True)


if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bq.on_signal)
    rc = 0
    try:
        main()
        if bq.FAILS:
            rc = 1
    except KeyboardInterrupt:
        print("bench_disk: interrupted", file=sys.stderr)
        rc = 130
    except ToolError as e:
        print(f"bench_disk: {e}", file=sys.stderr)
        rc = 1
    finally:
        cleanup()
    sys.exit(rc)
