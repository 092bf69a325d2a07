#!/bin/bash
# shellcheck disable=SC2046,SC2086,SC2317,SC2015,SC2012,SC2116
# (pid and file lists are split on purpose; A && B || C is meant as written)
# qemu.sh - end-to-end tests of the QEMU backend: vmctl, vmsave, vmrestore and
# vmimage driving real guests (tests/guest: a Debian kernel, a busybox
# initramfs and a workload that fills memory with a verifiable pattern, keeps
# rewriting it and prints "VMCKPT-WL boot=<id> count=<n> ..." every 0.5 s).
#
# Prints PASS:/FAIL:/SKIP: lines (tests/run.sh counts them); exits 0 whenever
# it ran to the end, so count the FAIL lines.  SKIPs loudly when QEMU is
# missing or the guest cannot be built.
#
# Env: E2E_ONLY="1 4 7"   run only these scenarios (1..19, 8b, 8c)
#      VMCKPT_ACCEL=tcg|kvm  force the accelerator
#      E2E_KEEP=1         keep the temp dir (images, logs) for a post-mortem
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/signing-env.sh"   # a test signing key, trusted
B=$ROOT/build
VMCTL=$B/vmctl
VMSAVE=$B/vmsave
VMRESTORE=$B/vmrestore
VMIMAGE=$B/vmimage
CONSOLE=$ROOT/tests/guest/console.py
P=e2e/qemu
TOOL_TIMEOUT=180        # no single tool run may take longer than this
FAULT_RAM=768           # the fault guest is big so that a save takes a while
FAULT_WL=512
NFAIL=0 NPASS=0 NSKIP=0 WHY="" RC=0 LEAK="" LEFT="" CONT_INFO="" CHECK_LINE=""

pass() { echo "PASS: $P/$1${2:+ ($2)}"; NPASS=$((NPASS + 1)); }
fail() { echo "FAIL: $P/$1: $2"; NFAIL=$((NFAIL + 1)); SC_FAILED=1; }
skip() { echo "SKIP: $P${1:+/$1}: $2"; NSKIP=$((NSKIP + 1)); }
note() { echo "    $*"; }
loud_skip() {   # the whole suite cannot run
    echo "*****************************************************************" >&2
    echo "***  e2e/qemu SKIPPED: $1" >&2
    echo "*****************************************************************" >&2
    skip "" "$1"
    exit 0
}

# ---- can we run at all? ------------------------------------------------
command -v qemu-system-x86_64 >/dev/null ||
    loud_skip "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
command -v python3 >/dev/null || loud_skip "python3 is missing (tests/guest/console.py)"
if ! gout=$("$ROOT/tests/guest/build.sh" 2>&1); then
    loud_skip "the test guest cannot be built: $(echo "$gout" | tail -n 1)"
fi
KERNEL=$(echo "$gout" | sed -n 's/^kernel: //p')
INITRD=$(echo "$gout" | sed -n 's/^initrd: //p')
[ -f "$KERNEL" ] && [ -f "$INITRD" ] ||
    loud_skip "tests/guest/build.sh printed no kernel/initrd: $gout"
# the restore policy lets a recorded -kernel/-initrd name only files under
# an allowed directory: the test guest's
export VMCKPT_ALLOW_DIRS=$(dirname "$KERNEL")
missing=""
for t in "$VMCTL" "$VMSAVE" "$VMRESTORE" "$VMIMAGE"; do
    [ -x "$t" ] || missing="$missing ${t#"$ROOT"/}"
done
if [ -n "$missing" ]; then
    echo "FAIL: $P: not built:$missing (run make)"
    exit 0
fi

ACCEL=${VMCKPT_ACCEL:-}
if [ -z "$ACCEL" ]; then
    if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in kvm) CPU=host ;; *) ACCEL=tcg CPU=max ;; esac
QEMU_BASE=(-accel "$ACCEL" -cpu "$CPU" -smp 1 -display none -nic none -no-reboot
    -nodefaults -kernel "$KERNEL" -initrd "$INITRD")

T=$(mktemp -d /tmp/vmc-e2e.XXXXXX)
RUN=$T/run
IO=$T/io
mkdir -p "$RUN" "$IO"
export VMCKPT_RUNDIR=$RUN
T_START=$SECONDS

# ---- processes and domains ----------------------------------------------
# Processes this test started: QEMU and the tools (and their guardians),
# recognised by our private runtime dir in their command line or environment.
my_procs() {
    local d p comm
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        comm=$(cat "$d/comm" 2>/dev/null) || continue
        case $comm in qemu-system*|vmsave*|vmrestore*|vmctl*|vmimage*|vmckpt*) ;; *) continue ;; esac
        alive "$p" || continue
        if { tr '\0' '\n' <"$d/cmdline" | grep -qF -- "$RUN"; } 2>/dev/null ||
           { tr '\0' '\n' <"$d/environ" | grep -qxF -- "VMCKPT_RUNDIR=$RUN"; } 2>/dev/null; then
            echo "$p"
        fi
    done
}
my_qemu_pids() {
    local p
    for p in $(my_procs); do
        case $(cat "/proc/$p/comm" 2>/dev/null) in qemu-system*) echo "$p" ;; esac
    done
}
describe_procs() {     # PID... : one line each
    local p
    for p in "$@"; do
        echo "[pid $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160)]"
    done
}
list_ids() { "$VMCTL" list 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {print $1}'; }
dom_field() {   # ID COLUMN (2 NAME, 3 UUID, 4 STATE, 5 PID)
    "$VMCTL" list 2>/dev/null | awk -v id="$1" -v c="$2" '$1 == id {print $c}'
}
dom_listed() { [ -n "$(dom_field "$1" 1)" ]; }
name_listed() {
    "$VMCTL" list 2>/dev/null | awk -v n="$1" '$1 ~ /^[0-9]+$/ && $2 == n {f=1} END {exit !f}'
}

# run NAME CMD... : runs CMD with a timeout; stdout in $IO/NAME.out, stderr
# in $IO/NAME.err, exit status in RC (also returned).
run() {
    local n=$1; shift
    timeout -k 5 "$TOOL_TIMEOUT" "$@" >"$IO/$n.out" 2>"$IO/$n.err"
    RC=$?
    return $RC
}
out() { cat "$IO/$1.out" 2>/dev/null; }
err() { tr '\n' '|' <"$IO/$1.err" 2>/dev/null | sed 's/|$//' | cut -c1-600; }
one_line() { [ "$(grep -c '' "$IO/$1.err")" = 1 ]; }

destroy() {     # ID: vmctl destroy if it still exists
    dom_listed "$1" || return 0
    if ! timeout -k 5 60 "$VMCTL" destroy "$1" >"$IO/destroy.out" 2>&1; then
        fail cleanup "vmctl destroy $1: $(tr '\n' ' ' <"$IO/destroy.out")"
    fi
    if [ -e "$RUN/$1" ]; then fail cleanup "vmctl destroy $1 left $RUN/$1"; fi
}

cleanup() {
    set +e
    trap - EXIT INT TERM
    local j p id m
    for j in $(jobs -p); do kill -9 "$j" 2>/dev/null; done
    for id in $(list_ids); do
        timeout -k 5 30 "$VMCTL" destroy "$id" >/dev/null 2>&1
    done
    for p in $(my_procs); do kill -9 "$p" 2>/dev/null; done
    for m in "$T/full" "$T/ro"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    if [ "${E2E_KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- console.log parsing -------------------------------------------------
# The guest's lines end in \r\n and a line can be cut in two by a pause: only
# complete fields count ("count=N gen=G " needs the space after G).
. "$ROOT/tests/guest/wl-lib.sh"    # alive, wait_ready_rd, last_count, wait_count, log_tail, analyze
n_counts() {    # LOG : number of complete count lines
    tr -d '\r' <"$1" 2>/dev/null | grep -cE '^VMCKPT-WL boot=[0-9a-f]+ count=[0-9]+ gen=[0-9]+ '
}

# console_check ID BOOT : "check" through console.sock; needs result=OK bad=0
# (the first full check after sending; one the workload starts by itself on
# seeing the pause, reason=rtc, is as good)
console_check() {
    local rd
    rd=$("$VMCTL" rundir "$1" 2>&1) || { WHY="vmctl rundir $1: $rd"; return 1; }
    console_check_rd "$rd" "$2" "domain $1"
}

# check_continuity ID BOOT LAST [SRCLOG] [MAXFIRST]
# The restored domain ID continues the workload of boot BOOT after count LAST:
# its (new, initially empty) console.log shows count lines of BOOT from the
# start, consecutive, reaching >= LAST+1 (and starting at <= MAXFIRST); a
# console "check" finds every page intact; no reboot.  With SRCLOG (the whole
# console.log of the saved source), source + restored output must form one
# consecutive count sequence: the guest went on exactly where it stopped.
check_continuity() {
    local id=$1 boot=$2 last=$3 src=${4:-} maxfirst=${5:-} rd log a first
    rd=$("$VMCTL" rundir "$id" 2>&1) || { WHY="vmctl rundir $id: $rd"; return 1; }
    log=$rd/console.log
    if ! wait_count "$log" "$boot" $((last + 1)) 30; then
        WHY="domain $id: no count>=$((last + 1)) of boot $boot within 30 s; console.log: $(log_tail "$log")"
        return 1
    fi
    a=$(analyze 1 "$boot" "$log")
    [ "${a%% *}" = OK ] || { WHY="domain $id console.log: $a"; return 1; }
    first=$(echo "$a" | cut -d' ' -f2)
    if [ "$first" -le "$last" ]; then
        WHY="domain $id starts at count=$first, not after the saved count=$last"; return 1
    fi
    if [ -n "$maxfirst" ] && [ "$first" -gt "$maxfirst" ]; then
        WHY="domain $id starts at count=$first, expected <= $maxfirst (lines lost?)"; return 1
    fi
    if [ -n "$src" ]; then
        a=$(analyze 0 "$boot" "$src" "$log")
        [ "${a%% *}" = OK ] || { WHY="source+restored console: $a"; return 1; }
    fi
    console_check "$id" "$boot" || return 1
    a=$(analyze 1 "$boot" "$log")     # again, with the check's output
    [ "${a%% *}" = OK ] || { WHY="domain $id console.log after the check: $a"; return 1; }
    CONT_INFO="counts $first..$(echo "$a" | cut -d' ' -f3)"
}

wait_status() { # ID WANT SECS
    local end=$((SECONDS + $3)) st
    while :; do
        st=$("$VMCTL" status "$1" 2>&1)
        [ "$st" = "$2" ] && return 0
        if [ $SECONDS -ge $end ]; then
            WHY="vmctl status $1 says '$st' after $3 s, want $2"; return 1
        fi
        sleep 0.5
    done
}

# unprivileged RD : the instance's QEMU is not root and runs under seccomp
unprivileged() {
    local pid uid sec
    pid=$(cat "$1/qemu.pid" 2>/dev/null)
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    sec=$(awk '/^Seccomp:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    if [ "$(id -u)" = 0 ] && [ "$uid" = 0 ]; then WHY="QEMU $pid runs as root"; return 1; fi
    [ "$sec" = 2 ] || { WHY="QEMU $pid: Seccomp '$sec', not under its sandbox"; return 1; }
}

# guest_alive ID BOOT : running (within 10 s), unprivileged, and printing
# new count lines
guest_alive() {
    local rd c
    wait_status "$1" running 10 || return 1
    rd=$("$VMCTL" rundir "$1" 2>&1) || { WHY="vmctl rundir $1: $rd"; return 1; }
    unprivileged "$rd" || return 1
    c=$(last_count "$rd/console.log" "$2")
    if ! wait_count "$rd/console.log" "$2" $((${c:--1} + 2)) 10; then
        WHY="domain $1 is 'running' but prints no new count lines: $(log_tail "$rd/console.log")"
        return 1
    fi
}

# start_guest NAME DIRTY [RAM_MIB WL_MIB] -> GID GBOOT GRD, or WHY
start_guest() {
    local name=$1 dirty=$2 ram=${3:-256} wl=${4:-64}
    run "start.$name" "$VMCTL" start "$name" -- "${QEMU_BASE[@]}" -m "$ram" \
        -append "console=ttyS0 quiet panic=-1 wl.mem=$wl wl.dirty=$dirty"
    if [ "$RC" != 0 ]; then WHY="vmctl start $name: rc=$RC: $(err "start.$name")"; return 1; fi
    GID=$(out "start.$name")
    if ! [[ $GID =~ ^[0-9]+$ ]]; then WHY="vmctl start $name printed '$GID', not an ID"; return 1; fi
    SC_DOMS+=("$GID")
    GRD=$("$VMCTL" rundir "$GID" 2>&1) || { WHY="vmctl rundir $GID: $GRD"; return 1; }
    unprivileged "$GRD" || return 1
    wait_ready_rd "$GRD" "$name" 60 || return 1
    # a few rounds of rewriting before anything is saved
    wait_count "$GRD/console.log" "$GBOOT" 2 10 ||
        { WHY="guest $name prints no count lines"; return 1; }
    if fd_leak "$GID" "$IO/start.$name.out" "$IO/start.$name.err"; then
        WHY="vmctl start: $LEAK (ID=\$(vmctl start ...) would hang)"; return 1
    fi
    return 0
}

# A healthy running guest (dirty=10, 64 MiB workload) handed on from one
# scenario to the next to save boots; booted afresh when there is none.
SPARE_ID="" SPARE_BOOT="" NSPARE=0
get_spare() {
    if [ -n "$SPARE_ID" ] && guest_alive "$SPARE_ID" "$SPARE_BOOT" 2>/dev/null; then
        GID=$SPARE_ID GBOOT=$SPARE_BOOT
        GRD=$("$VMCTL" rundir "$GID")
        SC_DOMS+=("$GID")
        return 0
    fi
    [ -n "$SPARE_ID" ] && destroy "$SPARE_ID"
    SPARE_ID=""
    NSPARE=$((NSPARE + 1))
    start_guest "spare$NSPARE" 10 || return 1
    SPARE_ID=$GID SPARE_BOOT=$GBOOT
}
set_spare() { SPARE_ID=$1 SPARE_BOOT=$2; }

# snapshot / left_behind: nothing new (QEMU, runtime dir, domain) after a
# refused restore.
snap() {
    SNAP_PIDS=$(my_qemu_pids | sort)
    SNAP_DIRS=$(ls -A "$RUN" | grep -vx .exited | sort)
    SNAP_IDS=$(list_ids | sort)
}
left_behind() {
    local try p d i
    for try in 1 2; do
        p=$(comm -13 <(echo "$SNAP_PIDS") <(my_qemu_pids | sort) | grep .)
        d=$(comm -13 <(echo "$SNAP_DIRS") <(ls -A "$RUN" | grep -vx .exited | sort) | grep .)
        i=$(comm -13 <(echo "$SNAP_IDS") <(list_ids | sort) | grep .)
        [ -z "$p$d$i" ] && return 1
        [ $try = 1 ] && sleep 1    # allow a second for a dying QEMU
    done
    LEFT="new QEMU: $(describe_procs $p) new dirs: $(echo $d) new domains: $(echo $i)"
    return 0
}

# The QEMU of a domain must not hold the caller's stdout/stderr (otherwise
# ID=$(vmrestore img) never returns).
fd_leak() {     # ID FILE...
    local qpid f l
    qpid=$(cat "$RUN/$1/qemu.pid" 2>/dev/null) || return 1
    for f in "${@:2}"; do
        for l in /proc/"$qpid"/fd/*; do
            [ "$(readlink "$l" 2>/dev/null)" = "$f" ] &&
                { LEAK="QEMU pid $qpid holds $f open (fd ${l##*/})"; return 0; }
        done
    done
    return 1
}

# ---- keys ------------------------------------------------------------------
KEY=$T/id.key
OTHER=$T/other.key
REC=$("$VMIMAGE" keygen -o "$KEY" 2>"$IO/keygen.err")
"$VMIMAGE" keygen -o "$OTHER" >/dev/null 2>>"$IO/keygen.err"
if [[ $REC != vmc1* ]] || [ ! -s "$OTHER" ]; then
    echo "FAIL: $P: vmimage keygen: $(err keygen)"
    exit 0
fi

echo "e2e/qemu: accel=$ACCEL, tmp=$T, guest=$KERNEL"

# ---- scenarios ---------------------------------------------------------------
want() { [ -z "${E2E_ONLY:-}" ] || [[ " $E2E_ONLY " == *" $1 "* ]]; }
SC_DOMS=() SC_FAILED=0 SC_T0=0
scenario() {    # NUM FUNCTION
    want "$1" || return 0
    SC_DOMS=() SC_FAILED=0 SC_T0=$SECONDS
    echo "--- scenario $1 ($2)"
    "$2"
    local id
    for id in "${SC_DOMS[@]}"; do
        if [ "$id" = "$SPARE_ID" ] && [ "$SC_FAILED" = 0 ]; then continue; fi
        [ "$id" = "$SPARE_ID" ] && SPARE_ID=""
        destroy "$id"
    done
    note "scenario $1: $((SECONDS - SC_T0)) s"
}
took() { echo "$((SECONDS - SC_T0)) s"; }
# start a restore-side domain's bookkeeping
track() { SC_DOMS+=("$1"); }

# Reads the full console.log of a source domain through a descriptor opened
# before the save: the file survives the domain's destruction.
open_src() { exec {SRCFD}<"$1"; }
close_src() { cat <&"$SRCFD" >"$1"; exec {SRCFD}<&-; }

# 1. default save (pause, write, destroy) + restore
s1() {
    local n=1_default_save_restore img=$T/s1.vmimg id boot rd uuid last rid a qpid
    start_guest e1 10 || { fail $n "$WHY"; return; }
    id=$GID boot=$GBOOT rd=$GRD
    uuid=$(dom_field "$id" 3)
    qpid=$(cat "$rd/qemu.pid" 2>/dev/null)
    open_src "$rd/console.log"
    run s1.save "$VMSAVE" -r "$REC" e1 "$img"
    close_src "$T/s1.src.log"
    [ "$RC" = 0 ] || { fail $n "vmsave -r REC e1 $img: rc=$RC: $(err s1.save)"; return; }
    last=$(last_count "$T/s1.src.log" "$boot")
    if dom_listed "$id" || name_listed e1; then
        fail $n "e1 (ID $id) still in vmctl list after vmsave: $("$VMCTL" list | tr '\n' '|')"; return
    fi
    [ -e "$RUN/$id" ] && { fail $n "vmsave left the runtime dir $RUN/$id"; return; }
    [ -n "$qpid" ] && alive "$qpid" && sleep 1 && alive "$qpid" &&
        { fail $n "e1's QEMU survives vmsave: $(describe_procs "$qpid")"; return; }
    [ -f "$img" ] && [ ! -e "$img.partial" ] || { fail $n "image: $(ls -l "$img"*)"; return; }
    a=$(stat -c %a "$img")
    [ "$a" = 600 ] || { fail $n "image mode is $a, not 600"; return; }
    run s1.verify "$VMIMAGE" verify -q -i "$KEY" "$img" ||
        { fail $n "vmimage verify: rc=$RC: $(err s1.verify)"; return; }
    run s1.restore "$VMRESTORE" -i "$KEY" "$img"
    rid=$(out s1.restore)
    [[ "$RC" = 0 && $rid =~ ^[0-9]+$ ]] ||
        { fail $n "vmrestore -i KEY img: rc=$RC out='$rid' err: $(err s1.restore)"; return; }
    track "$rid"
    [ "$rid" != "$id" ] || { fail $n "restored domain has the old ID $id"; return; }
    fd_leak "$rid" "$IO/s1.restore.out" "$IO/s1.restore.err" && { fail $n "$LEAK"; return; }
    [ "$(dom_field "$rid" 2)" = e1 ] || { fail $n "restored name '$(dom_field "$rid" 2)', want e1"; return; }
    [ "$(dom_field "$rid" 3)" = "$uuid" ] ||
        { fail $n "restored UUID '$(dom_field "$rid" 3)', want the saved '$uuid'"; return; }
    [ "$("$VMCTL" status "$rid" 2>&1)" = running ] ||
        { fail $n "restored domain status '$("$VMCTL" status "$rid" 2>&1)'"; return; }
    check_continuity "$rid" "$boot" "$last" "$T/s1.src.log" || { fail $n "$WHY"; return; }
    set_spare "$rid" "$boot"
    pass $n "ID $id -> $rid, saved at count=$last, $CONT_INFO, $(stat -c %s "$img") bytes, $(took)"
    rm -f "$img"
}

# 2. --checkpoint: source keeps running; --clone beside it; plain restore refused
s2() {
    local n=2_checkpoint img=$T/s2.vmimg src boot rd name uuid before after cid cname cuuid
    get_spare || { fail $n "$WHY"; return; }
    src=$GID boot=$GBOOT rd=$GRD
    name=$(dom_field "$src" 2) uuid=$(dom_field "$src" 3)
    before=$(last_count "$rd/console.log" "$boot")
    run s2.save "$VMSAVE" --checkpoint -r "$REC" "$name" "$img" ||
        { fail $n "vmsave --checkpoint: rc=$RC: $(err s2.save)"; return; }
    after=$(last_count "$rd/console.log" "$boot")
    [ -f "$img" ] && [ ! -e "$img.partial" ] || { fail $n "no image after --checkpoint"; return; }
    wait_status "$src" running 5 || { fail $n "source after --checkpoint: $WHY"; return; }
    wait_count "$rd/console.log" "$boot" $((after + 2)) 10 ||
        { fail $n "source count stuck at $after after --checkpoint: $(log_tail "$rd/console.log")"; return; }
    pass "${n}_source_runs" "count $before -> $after at the save, still counting"

    n=2_checkpoint_clone
    run s2.clone "$VMRESTORE" --clone -i "$KEY" "$img"
    cid=$(out s2.clone)
    [[ "$RC" = 0 && $cid =~ ^[0-9]+$ ]] ||
        { fail $n "vmrestore --clone: rc=$RC out='$cid' err: $(err s2.clone)"; return; }
    track "$cid"
    cname=$(dom_field "$cid" 2) cuuid=$(dom_field "$cid" 3)
    [ "$cid" != "$src" ] && [ -n "$cname" ] && [ "$cname" != "$name" ] &&
        [ -n "$cuuid" ] && [ "$cuuid" != "$uuid" ] ||
        { fail $n "clone $cid '$cname' $cuuid vs source $src '$name' $uuid"; return; }
    wait_status "$cid" running 5 || { fail $n "clone: $WHY"; return; }
    [ "$("$VMCTL" status "$src" 2>&1)" = running ] || { fail $n "source no longer running beside the clone"; return; }
    check_continuity "$cid" "$boot" "$before" "" $((after + 2)) || { fail $n "$WHY"; return; }
    guest_alive "$src" "$boot" && console_check "$src" "$boot" ||
        { fail $n "source beside the clone: $WHY"; return; }
    pass $n "clone $cid '$cname' of $src '$name', $CONT_INFO (saved between $before and $after)"

    n=2_checkpoint_plain_restore_refused
    snap
    run s2.plain "$VMRESTORE" -i "$KEY" "$img"
    if [ "$RC" != 1 ] || ! one_line s2.plain; then
        fail $n "want exit 1 and one line: rc=$RC out='$(out s2.plain)' err: $(err s2.plain)"
    elif ! grep -qiF -e "${name:-uuid}" -e "${uuid:-uuid}" -e uuid "$IO/s2.plain.err"; then
        fail $n "the message names neither the name nor the UUID: $(err s2.plain)"
    elif ! grep -qF 'use --name NEW or --clone; no domain created' "$IO/s2.plain.err"; then
        fail $n "no hint of --name/--clone: $(err s2.plain)"
    elif [ -n "$(out s2.plain)" ]; then
        fail $n "printed '$(out s2.plain)' on stdout"
    elif left_behind; then
        fail $n "left behind: $LEFT"
    else
        pass $n "$(err s2.plain)"
    fi
    [ "$("$VMCTL" status "$src" 2>&1)" = running ] ||
        fail $n "the source is '$("$VMCTL" status "$src" 2>&1)' after the refused restore"
    rm -f "$img"
}

# 3. --live while the workload dirties 40 % of its pages per second
s3() {
    local n=3_live img=$T/s3.vmimg id boot rd last rid js
    start_guest e3 40 || { fail $n "$WHY"; return; }
    id=$GID boot=$GBOOT rd=$GRD
    wait_count "$rd/console.log" "$boot" 3 10
    open_src "$rd/console.log"
    run s3.save "$VMSAVE" --live --json -r "$REC" e3 "$img"
    close_src "$T/s3.src.log"
    [ "$RC" = 0 ] || { fail $n "vmsave --live --json: rc=$RC: $(err s3.save)"; return; }
    js=$(python3 - "$IO/s3.save.out" <<'EOF' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("total_time_ns", "stream_bytes", "downtime_ns"):
    v = d.get(k)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        sys.exit("bad or missing %s: %r" % (k, v))
if not (0 < d["downtime_ns"] <= d["total_time_ns"]):
    sys.exit("downtime_ns %d not in (0, total_time_ns %d]" % (d["downtime_ns"], d["total_time_ns"]))
if d.get("bytes_written") != d["stream_bytes"] or d.get("file") != d.get("image"):
    sys.exit("the older names differ: %r" % d)
print("downtime %.1f ms, total %.2f s, %d bytes" % (d["downtime_ns"] / 1e6,
      d["total_time_ns"] / 1e9, d["stream_bytes"]))
EOF
    ) || { fail $n "--json: $js; stdout: $(out s3.save | head -c 400)"; return; }
    last=$(last_count "$T/s3.src.log" "$boot")
    if dom_listed "$id" || name_listed e3; then fail $n "e3 still listed after vmsave --live"; return; fi
    [ -f "$img" ] && [ ! -e "$img.partial" ] || { fail $n "no image"; return; }
    run s3.restore "$VMRESTORE" -i "$KEY" "$img"
    rid=$(out s3.restore)
    [[ "$RC" = 0 && $rid =~ ^[0-9]+$ ]] ||
        { fail $n "vmrestore: rc=$RC out='$rid' err: $(err s3.restore)"; return; }
    track "$rid"
    check_continuity "$rid" "$boot" "$last" "$T/s3.src.log" || { fail $n "$WHY"; return; }
    pass $n "$js, saved at count=$last, $CONT_INFO, $(took)"
    rm -f "$img"
}

# 4. through a pipe: vmsave DOM - | vmrestore -
s4() {
    local n=4_pipe src boot rd last rid rc
    get_spare || { fail $n "$WHY"; return; }
    src=$GID boot=$GBOOT rd=$GRD
    open_src "$rd/console.log"
    timeout -k 5 "$TOOL_TIMEOUT" "$VMSAVE" -r "$REC" "$src" - 2>"$IO/s4.save.err" |
        timeout -k 5 "$TOOL_TIMEOUT" "$VMRESTORE" -i "$KEY" - >"$IO/s4.rest.out" 2>"$IO/s4.rest.err"
    rc="${PIPESTATUS[*]}"
    close_src "$T/s4.src.log"
    rid=$(out s4.rest)
    [[ $rid =~ ^[0-9]+$ ]] && track "$rid"
    [[ "$rc" = "0 0" && $rid =~ ^[0-9]+$ ]] ||
        { fail $n "exit status '$rc', ID '$rid'; vmsave: $(err s4.save); vmrestore: $(err s4.rest)"; return; }
    dom_listed "$src" && { fail $n "source $src still listed after vmsave to a pipe"; return; }
    last=$(last_count "$T/s4.src.log" "$boot")
    check_continuity "$rid" "$boot" "$last" "$T/s4.src.log" || { fail $n "$WHY"; return; }
    set_spare "$rid" "$boot"
    pass $n "ID $src -> $rid, saved at count=$last, $CONT_INFO, $(took)"
}

# 5. vmrestore -p: the restored domain stays paused
s5() {
    local n=5_restore_paused img=$T/s5.vmimg src boot rid rd c1 c2 st before after
    get_spare || { fail $n "$WHY"; return; }
    src=$GID boot=$GBOOT
    before=$(last_count "$GRD/console.log" "$boot")
    run s5.save "$VMSAVE" --checkpoint -r "$REC" "$src" "$img" ||
        { fail $n "vmsave --checkpoint: rc=$RC: $(err s5.save)"; return; }
    after=$(last_count "$GRD/console.log" "$boot")
    run s5.restore "$VMRESTORE" -p --clone -i "$KEY" "$img"
    rid=$(out s5.restore)
    [[ "$RC" = 0 && $rid =~ ^[0-9]+$ ]] ||
        { fail $n "vmrestore -p --clone: rc=$RC out='$rid' err: $(err s5.restore)"; return; }
    track "$rid"
    st=$("$VMCTL" status "$rid" 2>&1)
    [ "$st" = paused ] || { fail $n "vmctl status after -p: '$st'"; return; }
    rd=$("$VMCTL" rundir "$rid")
    c1=$(n_counts "$rd/console.log")
    sleep 2
    c2=$(n_counts "$rd/console.log")
    st=$("$VMCTL" status "$rid" 2>&1)
    [ "$st" = paused ] && [ "$c1" = "$c2" ] ||
        { fail $n "after 2 s: status '$st', count lines $c1 -> $c2: $(log_tail "$rd/console.log")"; return; }
    [ -n "$(dom_field "$rid" 5)" ] && alive "$(dom_field "$rid" 5)" ||
        { fail $n "no live QEMU behind the paused domain"; return; }
    guest_alive "$src" "$boot" || { fail $n "source: $WHY"; return; }
    pass $n "$c2 count lines in 2 s while paused, $(took)"
    rm -f "$img"
    # not in the original plan: vmctl grew a resume command
    n=5_resume_after_paused_restore
    if ! "$VMCTL" --help 2>&1 | grep -qw resume; then skip $n "vmctl has no resume"; return; fi
    run s5.resume "$VMCTL" resume "$rid" ||
        { fail $n "vmctl resume $rid: rc=$RC: $(err s5.resume)"; return; }
    wait_status "$rid" running 5 || { fail $n "$WHY"; return; }
    check_continuity "$rid" "$boot" "$before" "" $((after + 2)) || { fail $n "$WHY"; return; }
    pass $n "$CONT_INFO (saved between $before and $after)"
}

# 6. faults: the guest keeps running, nothing under the final name
F_ID="" F_BOOT="" NF=0
fault_guest() {   # the big fault guest, booted again if an earlier fault killed it
    if [ -n "$F_ID" ] && guest_alive "$F_ID" "$F_BOOT"; then return 0; fi
    [ -n "$F_ID" ] && destroy "$F_ID"
    NF=$((NF + 1))
    start_guest "e6-$NF" 10 "$FAULT_RAM" "$FAULT_WL" || { F_ID=""; return 1; }
    F_ID=$GID F_BOOT=$GBOOT F_NAME=e6-$NF
}
after_fault() {   # FINAL_FILE : guest resumed and running, no FINAL_FILE
    if [ -n "$1" ] && [ -e "$1" ]; then WHY="$1 exists"; return 1; fi
    guest_alive "$F_ID" "$F_BOOT" || { WHY="after the fault: $WHY"; return 1; }
}
vmsave_msg_ok() {     # IOBASE NEEDLE : one line "vmsave: DOMAIN: ...NEEDLE..."
    one_line "$1" && grep -q "^vmsave: $F_NAME: " "$IO/$1.err" &&
        { [ -z "$2" ] || grep -qF -- "$2" "$IO/$1.err"; }
}
kill_file_save() {     # NAME DELAY FILE : vmsave to FILE, SIGKILL after DELAY
    local n=$1 rc vpid psz
    if ! fault_guest; then fail $n "$WHY"; return; fi
    "$VMSAVE" -r "$REC" "$F_NAME" "$3" >"$IO/$n.out" 2>"$IO/$n.err" &
    vpid=$!
    sleep "$2"
    psz=$(stat -c %s "$3.partial" 2>/dev/null || echo no)
    { kill -9 "$vpid"; wait "$vpid"; rc=$?; } 2>/dev/null
    if [ "$rc" != 137 ] && [ "$rc" = 0 ] && [ -f "$3" ]; then
        # too fast a host: the save finished (and destroyed the guest) first
        skip $n "vmsave finished within $2 s, before the SIGKILL"
        rm -f "$3"
    elif [ "$rc" != 137 ]; then
        fail $n "vmsave ended (rc=$rc) before the SIGKILL at $2 s: $(err "$n")"
    elif ! after_fault "$3"; then fail $n "$WHY"
    else pass $n "killed at $2 s with $psz bytes in ${3##*/}.partial; left: $(ls -A "${3%/*}" | tr '\n' ' ')"; fi
}
s6() {
    local n rc vpid rpid f t0
    mkdir -p "$T/s6"

    n=6_fault_full_fs
    if ! fault_guest; then fail $n "$WHY"
    elif [ "$(id -u)" != 0 ]; then skip $n "not root: cannot mount a tmpfs"
    elif mkdir -p "$T/full" && mount -t tmpfs -o size=8m tmpfs "$T/full" 2>"$IO/mount.err"; then
        run s6.full "$VMSAVE" -r "$REC" "$F_NAME" "$T/full/f.vmimg"
        if [ "$RC" != 1 ] || ! vmsave_msg_ok s6.full 'No space left on device'; then
            fail $n "want exit 1 and one line 'vmsave: $F_NAME: ...No space left on device': rc=$RC err: $(err s6.full)"
        elif [ -n "$(ls -A "$T/full")" ]; then
            fail $n "left on the full filesystem: $(ls -A "$T/full")"
        elif ! after_fault "$T/full/f.vmimg"; then fail $n "$WHY"
        else pass $n "$(err s6.full)"; fi
        umount "$T/full" || umount -l "$T/full"
    else skip $n "mount tmpfs: $(cat "$IO/mount.err")"; fi

    n=6_fault_readonly_target
    if ! fault_guest; then fail $n "$WHY"
    elif [ "$(id -u)" != 0 ]; then skip $n "not root: cannot mount a tmpfs"
    elif mkdir -p "$T/ro" && mount -t tmpfs -o size=1m tmpfs "$T/ro" 2>"$IO/mount.err" &&
         mount -o remount,ro "$T/ro" 2>>"$IO/mount.err"; then
        run s6.ro "$VMSAVE" -r "$REC" "$F_NAME" "$T/ro/f.vmimg"
        if [ "$RC" != 1 ] || ! vmsave_msg_ok s6.ro 'Read-only file system'; then
            fail $n "want exit 1 and one line 'vmsave: $F_NAME: ...Read-only file system': rc=$RC err: $(err s6.ro)"
        elif ! after_fault "$T/ro/f.vmimg"; then fail $n "$WHY"
        else pass $n "$(err s6.ro)"; fi
        umount "$T/ro" || umount -l "$T/ro"
    else skip $n "mount tmpfs: $(cat "$IO/mount.err")"; fi

    # SIGKILL while saving to a file: soon after the start, and mid-write,
    # at half the time a save takes here (~2 s for the 512 MiB guest on TCG).
    f=$T/s6/k1.vmimg
    local ms=2000
    if fault_guest; then
        t0=$(date +%s%N)
        run s6.base "$VMSAVE" --checkpoint -r "$REC" "$F_NAME" "$f" &&
            ms=$((($(date +%s%N) - t0) / 1000000))
        note "a --checkpoint save of $F_NAME takes $ms ms"
        rm -f "$f"
    fi
    kill_file_save 6_fault_sigkill_0.3s 0.3 "$f"
    kill_file_save 6_fault_sigkill_midwrite "$(printf '%d.%03d' $((ms / 2000)) $((ms / 2 % 1000)))" "$f"

    # A stale NAME.partial and whatever lock the killed vmsave held must not
    # stop the next save.
    n=6_save_after_sigkill
    if ! fault_guest; then fail $n "$WHY"
    else
        t0=$(date +%s%N)
        run s6.again "$VMSAVE" --checkpoint -r "$REC" "$F_NAME" "$f"
        t0=$((($(date +%s%N) - t0) / 1000000))
        if [ "$RC" != 0 ]; then fail $n "vmsave --checkpoint after the kill: rc=$RC: $(err s6.again)"
        elif [ ! -f "$f" ] || [ -e "$f.partial" ]; then fail $n "files: $(ls "$T/s6" | tr '\n' ' ')"
        elif ! run s6.verify "$VMIMAGE" verify -q -i "$KEY" "$f"; then fail $n "verify: $(err s6.verify)"
        elif ! guest_alive "$F_ID" "$F_BOOT"; then fail $n "$WHY"
        else pass $n "$(stat -c %s "$f") bytes in $t0 ms"; fi
        rm -f "$f" "$f.partial"
    fi

    n=6_fault_sigkill_midstream
    if ! fault_guest; then fail $n "$WHY"
    else
        rm -f "$T/s6/fifo"
        mkfifo "$T/s6/fifo"
        # a slow reader: opens the pipe, sleeps 2 s, then drains it
        (exec <"$T/s6/fifo"; sleep 2; exec timeout 30 cat >"$T/s6/slow.out") &
        rpid=$!
        "$VMSAVE" -r "$REC" "$F_NAME" - >"$T/s6/fifo" 2>"$IO/s6.k2.err" &
        vpid=$!
        sleep 1
        { kill -9 "$vpid"; wait "$vpid"; rc=$?; } 2>/dev/null
        wait "$rpid"; local rrc=$?
        if [ "$rc" != 137 ]; then
            fail $n "vmsave ended (rc=$rc) before the SIGKILL at 1 s: $(err s6.k2)"
        elif [ "$rrc" = 124 ]; then
            fail $n "the pipe reader got no EOF 30 s after vmsave died: someone (the guardian? QEMU?) holds vmsave's stdout: $(describe_procs $(my_procs))"
        elif ! after_fault ""; then fail $n "$WHY"
        else pass $n "reader got $(stat -c %s "$T/s6/slow.out") bytes"; fi
        rm -f "$T/s6/slow.out"
    fi

    n=6_fault_reader_closes_pipe
    if ! fault_guest; then fail $n "$WHY"
    else
        set -o pipefail
        timeout -k 5 "$TOOL_TIMEOUT" "$VMSAVE" -r "$REC" "$F_NAME" - 2>"$IO/s6.pipe.err" |
            head -c 1M >/dev/null
        rc=$?
        set +o pipefail
        if [ "$rc" != 1 ] || ! vmsave_msg_ok s6.pipe ""; then
            fail $n "want exit 1 and one line 'vmsave: $F_NAME: ...': rc=$rc err: $(err s6.pipe)"
        elif ! after_fault ""; then fail $n "$WHY"
        else pass $n "$(err s6.pipe)"; fi
    fi

    n=6_fault_memory_intact
    if ! fault_guest; then fail $n "$WHY"
    elif ! console_check "$F_ID" "$F_BOOT"; then fail $n "$WHY"
    else
        # the fault guest's whole log: no BAD, no reboot, no lost line
        local a
        a=$(analyze 0 "$F_BOOT" "$RUN/$F_ID/console.log")
        if [ "${a%% *}" != OK ]; then fail $n "$a"
        else pass $n "$CHECK_LINE"; fi
    fi
    [ -n "$F_ID" ] && destroy "$F_ID"
    F_ID=""
    rm -rf "$T/s6"
}

# 7. damaged images and a wrong key: one line, exit 1, nothing left behind
bad_restore() {   # NAME IMAGE KEYFILE
    local n=7_bad_$1
    snap
    run "s7.$1" "$VMRESTORE" -i "$3" "$2"
    if [ "$RC" != 1 ] || ! one_line "s7.$1"; then
        fail $n "want exit 1 and one stderr line: rc=$RC out='$(out "s7.$1")' err: $(err "s7.$1")"
    elif ! grep -q '^vmrestore: ' "$IO/s7.$1.err"; then
        fail $n "message does not start with 'vmrestore: ': $(err "s7.$1")"
    elif [ -n "$(out "s7.$1")" ]; then
        fail $n "printed '$(out "s7.$1")' on stdout"
    elif left_behind; then
        fail $n "left behind: $LEFT; err: $(err "s7.$1")"
        local i
        for i in $(comm -13 <(echo "$SNAP_IDS") <(list_ids | sort)); do destroy "$i"; done
    else
        pass $n "$(err "s7.$1")"
    fi
}
# save_spare TAG IMG : vmsave (default: destroy) of the spare guest into IMG,
# its console kept in $T/TAG.src.log; sets the caller's src, boot and last,
# or WHY.
save_spare() {
    get_spare || return 1
    src=$GID boot=$GBOOT
    open_src "$GRD/console.log"
    run "$1.save" "$VMSAVE" -r "$REC" "$src" "$2"
    close_src "$T/$1.src.log"
    [ "$RC" = 0 ] || { WHY="vmsave: rc=$RC: $(err "$1.save")"; return 1; }
    last=$(last_count "$T/$1.src.log" "$boot")
}

s7() {
    local n=7_bad_images img=$T/s7.vmimg src boot last sz rid
    save_spare s7 "$img" || { fail $n "$WHY"; return; }
    sz=$(stat -c %s "$img")
    cp "$img" "$T/s7.corrupt"
    python3 - "$T/s7.corrupt" $((sz / 2)) <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    o = int(sys.argv[2]); f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 0x40]))
EOF
    head -c $((sz / 2)) "$img" >"$T/s7.trunc"
    head -c $((sz - 4096)) "$img" >"$T/s7.trunctail"
    bad_restore corrupt_middle "$T/s7.corrupt" "$KEY"
    bad_restore truncated_half "$T/s7.trunc" "$KEY"
    bad_restore truncated_tail "$T/s7.trunctail" "$KEY"
    bad_restore wrong_key "$img" "$OTHER"
    rm -f "$T/s7.corrupt" "$T/s7.trunc" "$T/s7.trunctail"

    # the intact image still restores, and the guest goes on
    n=7_good_image_after_failures
    run s7.good "$VMRESTORE" -i "$KEY" "$img"
    rid=$(out s7.good)
    [[ "$RC" = 0 && $rid =~ ^[0-9]+$ ]] ||
        { fail $n "vmrestore: rc=$RC out='$rid' err: $(err s7.good)"; return; }
    track "$rid"
    check_continuity "$rid" "$boot" "$last" "$T/s7.src.log" || { fail $n "$WHY"; return; }
    set_spare "$rid" "$boot"
    pass $n "$CONT_INFO"
    rm -f "$img"
}

# 8. vmrestore -c: console attached, stdin not a tty; killing the tool
# leaves the domain running.  KILLHOW: pid (SIGTERM to vmrestore) or group
# (SIGHUP to its whole process group, like a terminal hang-up).
s8_common() {
    local n=$1 how=$2 img=$T/s8.vmimg src boot last rpid rid i rc a
    save_spare s8 "$img" || { fail $n "$WHY"; return; }
    if [ "$how" = group ]; then
        setsid "$VMRESTORE" -c -i "$KEY" "$img" </dev/null >"$IO/s8.out" 2>"$IO/s8.err" &
    else
        "$VMRESTORE" -c -i "$KEY" "$img" </dev/null >"$IO/s8.out" 2>"$IO/s8.err" &
    fi
    rpid=$!
    for ((i = 0; i < 150; i++)); do
        [ -n "$(last_count "$IO/s8.out" "$boot")" ] && break
        alive "$rpid" || break
        sleep 0.2
    done
    rid=$(grep -m1 -xE '[0-9]+' "$IO/s8.out")
    [ -n "$rid" ] && track "$rid"
    if ! alive "$rpid"; then
        wait "$rpid"; rc=$?
        fail $n "vmrestore -c exited (rc=$rc) on its own; out: $(log_tail "$IO/s8.out") err: $(err s8)"
        return
    fi
    if [ -z "$(last_count "$IO/s8.out" "$boot")" ]; then
        kill -9 "$rpid"; wait "$rpid"
        fail $n "no count line of boot $boot on vmrestore -c's stdout in 30 s: $(log_tail "$IO/s8.out") err: $(err s8)"
        return
    fi
    [ -n "$rid" ] || rid=$(list_ids | tail -n 1)
    a=$(analyze 1 "$boot" "$IO/s8.out")
    [ "${a%% *}" = OK ] || { kill -9 "$rpid"; fail $n "vmrestore -c output: $a"; return; }
    if [ "$how" = group ]; then kill -HUP -- "-$rpid"; else kill -TERM "$rpid"; fi
    for ((i = 0; i < 50; i++)); do alive "$rpid" || break; sleep 0.1; done
    if alive "$rpid"; then
        kill -9 "$rpid"; wait "$rpid"
        fail $n "vmrestore -c still alive 5 s after SIG$([ "$how" = group ] && echo HUP || echo TERM)"
        return
    fi
    wait "$rpid"
    guest_alive "$rid" "$boot" || { fail $n "domain $rid after the kill: $WHY"; return; }
    check_continuity "$rid" "$boot" "$last" "$T/s8.src.log" || { fail $n "$WHY"; return; }
    set_spare "$rid" "$boot"
    pass $n "ID $rid, $(n_counts "$IO/s8.out") count lines on the attached console, $CONT_INFO"
    rm -f "$img"
}
# 9. cron style: --checkpoint --keep N with a strftime pattern, raw key file;
# with --json the count of removed images is in the JSON, nothing else on stdout
s9() {
    local n=9_checkpoint_keep_rotation d=$T/keep src boot i made=() new now want
    get_spare || { fail $n "$WHY"; return; }
    src=$GID boot=$GBOOT
    mkdir -p "$d"
    "$VMIMAGE" keygen --symmetric -o "$T/raw.key" >/dev/null 2>"$IO/s9.keygen.err" ||
        { fail $n "vmimage keygen --symmetric: $(err s9.keygen)"; return; }
    echo keep >"$d/notes.txt"
    echo keep >"$d/web-latest.vmimg"                # does not match the pattern
    echo old >"$d/web-20000101T000000.vmimg"        # matches, not an image: left
    for i in 1 2 3; do
        [ $i = 1 ] || sleep 1.1                     # the pattern has seconds
        # the last with --json -v: stdout is one JSON line, with the count
        run "s9.save$i" "$VMSAVE" --checkpoint --keep 2 -k "$T/raw.key" \
            $([ $i = 3 ] && echo --json -v) "$src" "$d/web-%Y%m%dT%H%M%S.vmimg" ||
            { fail $n "save $i: rc=$RC: $(err "s9.save$i")"; return; }
        new=$(printf '%s\n' "$d"/web-* | sed 's|.*/||' | grep -E '^web-[0-9]{8}T[0-9]{6}\.vmimg$' | sort | tail -n 1)
        made+=("$new")
    done
    python3 -c 'import json, sys
lines = open(sys.argv[1]).read().splitlines()
j = json.loads(lines[0])
assert len(lines) == 1 and j["removed"] == 1 and len(j["removed_files"]) == 1, lines
assert {"file": "web-20000101T000000.vmimg", "why": "not a vmckpt image"} in j["skipped"], j' \
        "$IO/s9.save3.out" 2>"$IO/s9.json.err" ||
        { fail $n "--json --keep stdout: $(tr '\n' '|' <"$IO/s9.save3.out")"; return; }
    now=$(ls "$d" | tr '\n' ' ')
    want="notes.txt web-20000101T000000.vmimg ${made[1]} ${made[2]} web-latest.vmimg "
    [ "$now" = "$want" ] || { fail $n "after 3 saves with --keep 2: '$now', want '$want'"; return; }
    [ "${made[0]}" != "${made[1]}" ] && [ "${made[1]}" != "${made[2]}" ] ||
        { fail $n "the saves made ${made[*]}"; return; }
    run s9.verify "$VMIMAGE" verify -q -k "$T/raw.key" "$d/${made[2]}" ||
        { fail $n "verify -k: $(err s9.verify)"; return; }
    guest_alive "$src" "$boot" || { fail $n "$WHY"; return; }
    pass $n "kept ${made[1]} ${made[2]}, $(took)"
    rm -rf "$d"
}

# vmrestore SIGKILLed while its QEMU waits for the rest of the stream (the
# header and the first chunk arrived, then nothing): the half-built domain
# goes (its guardian destroys it; QEMU would also wait forever on an
# incoming stream killed before its first byte).
s10() {
    local n=10_restore_killed_early img=$T/s10.vmimg src before new=() rpid i q hl cl
    get_spare || { fail $n "$WHY"; return; }
    src=$GID
    run s10.save "$VMSAVE" --checkpoint -r "$REC" "$src" "$img" ||
        { fail $n "vmsave --checkpoint: rc=$RC: $(err s10.save)"; return; }
    before=" $(list_ids | tr '\n' ' ')"
    rm -f "$T/s10.fifo"
    mkfifo "$T/s10.fifo"
    "$VMRESTORE" --name s10-restored -i "$KEY" - <"$T/s10.fifo" >"$IO/s10.out" 2>"$IO/s10.err" &
    rpid=$!
    exec 7>"$T/s10.fifo"
    # header_len (LE32 @12), then the first chunk's length word (low 31
    # bits), its sealed data and its 64-octet signature (format 2)
    hl=$(od -An -tu4 -j12 -N4 "$img" | tr -d ' ')
    cl=$(( $(od -An -tu4 -j"$hl" -N4 "$img" | tr -d ' ') & 0x7fffffff ))
    head -c $((hl + 4 + cl + 64)) "$img" >&7  # the config, then the stream stalls
    for ((i = 0; i < 150; i++)); do
        new=()
        for q in $(list_ids); do [[ "$before" == *" $q "* ]] || new+=("$q"); done
        [ ${#new[@]} -gt 0 ] && break
        alive "$rpid" || break
        sleep 0.2
    done
    if [ ${#new[@]} = 0 ]; then
        kill -9 "$rpid" 2>/dev/null; exec 7>&-; wait "$rpid"
        fail $n "no restoring domain appeared: $(err s10)"; return
    fi
    track "${new[0]}"
    sleep 0.5
    q=$(dom_field "${new[0]}" 5)
    kill -9 "$rpid"; wait "$rpid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        ! dom_listed "${new[0]}" && ! alive "$q" && break
        sleep 0.1
    done
    exec 7>&-
    if dom_listed "${new[0]}" || alive "$q"; then
        fail $n "domain ${new[0]} (QEMU $q) still there 10 s after vmrestore was killed: $("$VMCTL" list | tr '\n' '|')"
        return
    fi
    guest_alive "$src" "$GBOOT" || { fail $n "source: $WHY"; return; }
    pass $n "half-built domain ${new[0]} and its QEMU gone after SIGKILL, $(took)"
}

# A guest whose QEMU dies (here: SIGKILL, as a crash) leaves the registry,
# but its console log stays readable in RUNDIR/.exited/.
s11() {
    local n=11_exited_logs_kept q f i
    get_spare || { fail $n "$WHY"; return; }
    q=$(dom_field "$GID" 5)
    [ -n "$q" ] || { fail $n "no QEMU pid for domain $GID"; return; }
    kill -9 "$q"
    for ((i = 0; i < 50; i++)); do alive "$q" || break; sleep 0.1; done
    dom_listed "$GID" && { fail $n "domain $GID still listed after its QEMU died"; return; }
    SPARE_ID=""
    f=$(ls "$RUN/.exited/"*"-$GID-"*.console.log 2>/dev/null | tail -n 1)
    if [ -z "$f" ] || ! grep -q "VMCKPT-WL boot=$GBOOT count=" "$f"; then
        fail $n "no console log of domain $GID in $RUN/.exited: $(ls -A "$RUN/.exited" 2>&1 | tr '\n' ' ')"
        return
    fi
    [ -d "$RUN/$GID" ] && { fail $n "$RUN/$GID still there"; return; }
    pass $n "${f##*/}: $(grep -c "boot=$GBOOT count=" "$f") count lines kept, $(took)"
}

# The reaper leaves alone an instance whose creator still holds its lock
# (a QEMU between fork and exec looks dead: its pid is still the tool's),
# and reaps it, logs kept, once the lock is free.  No guest needed.
s12() {
    local n=12_reaper_respects_lock d=$RUN/99999 sp hp i
    mkdir -m 0700 "$d"
    printf '{"name": "ghost", "uuid": "3f0e4a52-6c1d-4bb1-9d7e-5a0a2b1c9e77", "argv": []}\n' >"$d/domain.json"
    echo "ghost console line" >"$d/console.log"
    sleep 60 & sp=$!                        # a live pid that is not a QEMU
    echo "$sp" >"$d/qemu.pid"
    flock -o -x "$d/lock" sleep 60 & hp=$!   # -o: the lock dies with flock
    for ((i = 0; i < 50; i++)); do flock -n -x "$d/lock" true || break; sleep 0.1; done
    "$VMCTL" list >/dev/null 2>&1
    if [ ! -f "$d/domain.json" ]; then
        kill "$sp" "$hp"; fail $n "vmctl list reaped an instance whose lock is held"; return
    fi
    kill "$hp"; wait "$hp" 2>/dev/null
    "$VMCTL" list >/dev/null 2>&1
    kill "$sp"; wait "$sp" 2>/dev/null
    if [ -d "$d" ]; then
        fail $n "$d still there once its lock was free: $(ls -A "$d" | tr '\n' ' ')"; rm -rf "$d"; return
    fi
    grep -qx "ghost console line" "$RUN/.exited/"*-99999-ghost.console.log 2>/dev/null ||
        { fail $n "its console.log is not in $RUN/.exited"; return; }
    pass $n "kept while locked, reaped with its log once free"
}

# The guest dies during the save (its QEMU SIGKILLed, as a crash would):
# vmsave says so in one line with the cause and where the evidence is,
# exits 1; the evidence file (0600) holds the error and the guest's last
# console lines.  The save writes to a pipe nobody reads for 6 s, so it
# is stalled mid-stream when the guest dies.
s13() {
    local n=13_domain_dies_during_save logs=$T/s13.logs q pid rc ev
    get_spare || { fail $n "$WHY"; return; }
    q=$(dom_field "$GID" 5)
    [ -n "$q" ] || { fail $n "no QEMU pid for domain $GID"; return; }
    { VMCKPT_LOGDIR=$logs "$VMSAVE" -r "$REC" "$GID" - 2>"$IO/s13.err"
      echo $? >"$T/s13.rc"; } | { sleep 6; cat >/dev/null; } &
    pid=$!
    sleep 1.5
    kill -9 "$q"
    SPARE_ID=""
    wait "$pid"
    rc=$(cat "$T/s13.rc")
    ev=$(ls "$logs"/lost-*-"$GID"-*.log 2>/dev/null | head -n 1)
    if [ "$rc" != 1 ]; then fail $n "vmsave exit $rc, not 1: $(err s13)"
    elif ! one_line s13 || ! grep -q "^vmsave: .*: the domain died during the save (QEMU exited.*); evidence in $logs/lost-.*; nothing written$" "$IO/s13.err"; then
        fail $n "message: $(err s13)"
    elif [ -z "$ev" ] || [ "$(stat -c %a "$ev")" != 600 ]; then
        fail $n "no 0600 evidence file in $logs: $(ls -l "$logs" 2>&1 | tr '\n' ' ')"
    elif ! grep -q '^error: ' "$ev" || ! grep -q "VMCKPT-WL boot=$GBOOT count=" "$ev"; then
        fail $n "evidence lacks the error or the console: $(head -c 300 "$ev" | tr '\n' '|')"
    else pass $n "$(err s13 | cut -c1-200), $(took)"; fi
}

# 8c. vmrestore -c whose console cannot be attached (connect() refused,
# through tests/e2e/noconsole.c): the domain is restored and keeps
# running, its ID is on stdout, one line says so, and the exit status is 1
# (vmrestore(1), EXIT STATUS).
s8c() {
    local n=8c_restore_console_unreachable img=$T/s8c.vmimg src boot last rid rc
    local pre=$ROOT/build/tests/noconsole.so
    [ -f "$pre" ] || { fail $n "$pre is not built (make test-bins)"; return; }
    save_spare s8c "$img" || { fail $n "$WHY"; return; }
    boot=$GBOOT
    LD_PRELOAD=$pre "$VMRESTORE" -c -i "$KEY" "$img" </dev/null \
        >"$IO/s8c.out" 2>"$IO/s8c.err"
    rc=$?
    rid=$(grep -m1 -xE '[0-9]+' "$IO/s8c.out")
    [ -n "$rid" ] && track "$rid"
    if [ "$rc" != 1 ]; then
        fail $n "rc=$rc, want 1; err: $(err s8c)"
    elif [ -z "$rid" ]; then
        fail $n "no domain ID on stdout: $(log_tail "$IO/s8c.out")"
    elif ! one_line s8c || ! grep -q "^vmrestore: .*: restored and running, but the console cannot be attached: .*console.sock: Connection refused" "$IO/s8c.err"; then
        fail $n "message: $(err s8c)"
    elif ! guest_alive "$rid" "$boot"; then
        fail $n "domain $rid: $WHY"
    else
        set_spare "$rid" "$boot"
        pass $n "ID $rid running; $(err s8c | cut -c1-160)"
    fi
    rm -f "$img"
}

# 14. The cron story, signed: host A checkpoints with its own signing key
# and seals to an offline recipient whose identity it does not hold; host
# B holds that identity and restores only once it trusts A's signer,
# refusing before any QEMU starts while it does not.
s14() {
    local n=14_cron_story_signed img=$T/s14.vmimg ks=$T/s14 src boot sa off rid
    local before q new=()
    mkdir -p "$ks"
    get_spare || { fail $n "$WHY"; return; }
    src=$GID boot=$GBOOT
    sa=$("$VMIMAGE" keygen --sign -o "$ks/a-signing.key" 2>"$IO/s14.kg.err") &&
        off=$("$VMIMAGE" keygen -o "$ks/offline.key" 2>>"$IO/s14.kg.err") ||
        { fail $n "keygen: $(err s14.kg)"; return; }
    printf '# host B trusts no one yet\n' >"$ks/b-trusted"
    run s14.save "$VMSAVE" --checkpoint --signing-key "$ks/a-signing.key" \
        -r "$off" "$src" "$img" ||
        { fail $n "host A: vmsave: rc=$RC: $(err s14.save)"; return; }
    # host A cannot read what it made: its keys open nothing in it
    if run s14.aread "$VMIMAGE" verify -t "$sa" -i "$KEY" "$img" ||
       ! grep -q "no key opens it" "$IO/s14.aread.err"; then
        fail $n "host A's identity opened the image: rc=$RC $(err s14.aread)"; return
    fi
    before=" $(list_ids | tr '\n' ' ')"
    if run s14.refused "$VMRESTORE" --trusted-signers "$ks/b-trusted" \
           -i "$ks/offline.key" --name s14-b "$img" ||
       ! one_line s14.refused ||
       ! grep -qF "signed by $sa, which is not a trusted signer" "$IO/s14.refused.err"; then
        fail $n "host B, not trusting A: rc=$RC $(err s14.refused)"; return
    fi
    for q in $(list_ids); do [[ "$before" == *" $q "* ]] || new+=("$q"); done
    [ ${#new[@]} = 0 ] || { fail $n "a domain appeared: ${new[*]}"; return; }
    echo "$sa host-a" >>"$ks/b-trusted"
    run s14.restore "$VMRESTORE" --trusted-signers "$ks/b-trusted" \
        -i "$ks/offline.key" --name s14-b "$img" ||
        { fail $n "host B, trusting A: rc=$RC $(err s14.restore)"; return; }
    rid=$(out s14.restore)
    track "$rid"
    guest_alive "$rid" "$boot" || { fail $n "restored domain $rid: $WHY"; return; }
    pass $n "A signs as ${sa:0:12}..., cannot read it; B refused it untrusted, restored it trusted, $(took)"
    rm -f "$img"
}

# disk_verdict RUNDIR BOOT WHAT: a console check; sets DISK_LINE to the
# workload's disk verdict that follows it
# start_disk_guest NAME DEV FILE... : a guest with one virtio disk per FILE
# (in order) whose workload journals to DEV; GID GRD GBOOT once it counts,
# or WHY
# vmsave under gdb, stopped as it is about to send QMP command AT; then
# each GDB-COMMAND, then killed (SIGKILL).  Output in $IO/NAME.out; true if
# it did stop there.
vmsave_stopped_at() {   # AT NAME [GDB-COMMAND...] -- VMSAVE-ARGS...
    local at=$1 o=$IO/$2.out x=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do x+=(-ex "$1"); shift; done
    shift
    timeout -k 5 120 gdb -q -batch -nx -ex 'set pagination off' \
        -ex 'set breakpoint pending on' \
        -ex "break qmp_exec if \$_streq(cmd, \"$at\")" -ex run \
        ${x[@]+"${x[@]}"} -ex kill --args "$VMSAVE" "$@" >"$o" 2>&1 </dev/null
    grep -qE "Breakpoint 1(\.[0-9]+)?, qmp_exec .*\"$at\"" "$o"
}

# Every domain of another registry ("another host") destroyed.
destroy_all_in() {      # RUNDIR
    local id
    for id in $(ls "$1" 2>/dev/null); do
        VMCKPT_RUNDIR=$1 timeout 60 "$VMCTL" destroy "$id" >/dev/null 2>&1
    done
}

DISK_GUEST_EXTRA=()    # more QEMU options for the next start_disk_guest
start_disk_guest() {
    local name=$1 dev=$2 f drives=() dirs=""
    shift 2
    for f in "$@"; do
        drives+=(-drive "file=$f,if=virtio,format=$([[ $f == *.qcow2 ]] && echo qcow2 || echo raw)")
        dirs="$dirs:$(dirname "$f")"
    done
    VMCKPT_ALLOW_DIRS=$VMCKPT_ALLOW_DIRS$dirs run start.$name "$VMCTL" start "$name" -- \
        "${QEMU_BASE[@]}" -m 256 "${drives[@]}" ${DISK_GUEST_EXTRA[@]+"${DISK_GUEST_EXTRA[@]}"} \
        -append "console=ttyS0 quiet panic=-1 wl.mem=32 wl.dirty=10 wl.disk=$dev" ||
        { WHY="vmctl start: rc=$RC: $(err start.$name)"; return 1; }
    GID=$(out start.$name)
    track "$GID"
    GRD=$("$VMCTL" rundir "$GID" 2>&1)
    wait_ready_rd "$GRD" "$name" 60 || return 1
    unprivileged "$GRD" || return 1
    grep -aq "boot=$GBOOT disk dev=$dev journal" "$GRD/console.log" ||
        { WHY="no disk journal: $(log_tail "$GRD/console.log")"; return 1; }
    wait_count "$GRD/console.log" "$GBOOT" 4 20 || { WHY="no count lines"; return 1; }
}

disk_verdict() {
    DISK_LINE=$(timeout 40 python3 "$CONSOLE" "$1/console.sock" --send check \
        --expect 'disk seq=.*result=' --timeout 30 2>&1)
    [[ $DISK_LINE == *"boot=$2 disk seq="* ]] ||
        { WHY="$3: no disk verdict: '$DISK_LINE'"; return 1; }
}

# 15. a domain with a disk: the workload keeps a journal on it.  A memory
# checkpoint is refused, then taken with --memory-only (warned); a stopped
# save --disks carries it to "another host" (its own registry and disk
# directory), where memory and disk agree; the memory-only checkpoint,
# restored after the disk moved on, is warned about, and the guest's own
# check shows why (the disk is ahead of its memory).
s15() {
    local h2=$T/s15-host2 id
    s15_body
    destroy_all_in "$h2/run"        # host 2's, on a failure
    rm -rf "$h2"
}
s15_body() {
    local n=15_disks_carried_and_checked img=$T/s15.vmimg ck=$T/s15-ck.vmimg
    local dd=$T/s15-disks h2=$T/s15-host2 id boot rd rid rd2 a u ckid
    mkdir -p "$dd" "$h2/run" "$h2/disks"
    truncate -s 64M "$dd/d1.raw"
    start_disk_guest s15 /dev/vda "$dd/d1.raw" || { fail $n "$WHY"; return; }
    id=$GID rd=$GRD boot=$GBOOT
    # a checkpoint of the memory alone: refused, the domain runs on
    if run s15.ck0 "$VMSAVE" -c -r "$REC" "$id" "$ck" || ! one_line s15.ck0 ||
       ! grep -q "writable disk virtio0" "$IO/s15.ck0.err" || [ -e "$ck" ]; then
        fail $n "vmsave -c of a domain with a disk: rc=$RC $(err s15.ck0)"; return
    fi
    guest_alive "$id" "$boot" || { fail $n "after the refusal: $WHY"; return; }
    run s15.ck "$VMSAVE" -c --memory-only -r "$REC" "$id" "$ck" ||
        { fail $n "vmsave -c --memory-only: rc=$RC $(err s15.ck)"; return; }
    grep -q "warning: 1 writable disk not captured" "$IO/s15.ck.err" ||
        { fail $n "no warning from vmsave --memory-only: $(err s15.ck)"; return; }
    disk_verdict "$rd" "$boot" "source" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "source after the checkpoint: ${WHY:-$DISK_LINE}"; return; }
    wait_count "$rd/console.log" "$boot" $(($(last_count "$rd/console.log" "$boot") + 4)) 20
    # stopped save with the disk
    run s15.save "$VMSAVE" --disks --json -r "$REC" "$id" "$img" ||
        { fail $n "vmsave --disks: rc=$RC $(err s15.save)"; return; }
    [[ $(out s15.save) == *'"disks_carried":1'* ]] ||
        { fail $n "JSON: $(out s15.save)"; return; }
    dom_listed "$id" && { fail $n "domain $id still listed after vmsave"; return; }
    run s15.verify "$VMIMAGE" info -i "$KEY" "$img" && grep -q "1 carried" "$IO/s15.verify.out" ||
        { fail $n "vmimage info: rc=$RC $(err s15.verify) $(out s15.verify | grep disks)"; return; }
    # the disk out of the image, as any tool reads it: the file as it was
    mkdir -p "$T/s15-unsealed"
    run s15.unseal "$VMIMAGE" unseal -i "$KEY" --disks "$T/s15-unsealed" "$img" &&
        cmp -s "$T/s15-unsealed/virtio0.raw" "$dd/d1.raw" ||
        { fail $n "vmimage unseal --disks: rc=$RC $(err s15.unseal) $(ls -l "$T/s15-unsealed")"; return; }
    # ...and as libarchive packs it: a pax archive without the holes,
    # unpacked sparse by GNU tar, the same file again
    mkdir -p "$T/s15-untar"
    bsdtar --format pax -cSf "$T/s15-disks.tar" -C "$T/s15-unsealed" virtio0.raw &&
        [ "$(stat -c %s "$T/s15-disks.tar")" -lt $((8 << 20)) ] &&
        tar -xSf "$T/s15-disks.tar" -C "$T/s15-untar" &&
        cmp -s "$T/s15-untar/virtio0.raw" "$dd/d1.raw" ||
        { fail $n "the unsealed disk through bsdtar pax and tar -x: $(ls -l "$T/s15-disks.tar" "$T/s15-untar" 2>&1 | tr '\n' ' ')"; return; }
    rm -rf "$T/s15-unsealed" "$T/s15-untar" "$T/s15-disks.tar"
    # the other host: nothing shared but the image
    if VMCKPT_RUNDIR=$h2/run run s15.nodir "$VMRESTORE" -i "$KEY" "$img" ||
       ! grep -q "carries disk virtio0.*--disk-dir" "$IO/s15.nodir.err"; then
        fail $n "restore without --disk-dir: rc=$RC $(err s15.nodir)"; return
    fi
    VMCKPT_RUNDIR=$h2/run run s15.restore "$VMRESTORE" -i "$KEY" --disk-dir "$h2/disks" "$img" ||
        { fail $n "restore on host 2: rc=$RC $(err s15.restore)"; return; }
    rid=$(out s15.restore)
    rd2=$(VMCKPT_RUNDIR=$h2/run "$VMCTL" rundir "$rid" 2>&1)
    a=$(stat -c '%a %s %b %B' "$h2/disks/s15-virtio0.raw" 2>&1)
    u=$(set -- $a; echo $(( $3 * $4 )))
    if [[ $a != "600 67108864 "* ]] || [ "$u" -ge $((8 << 20)) ]; then
        VMCKPT_RUNDIR=$h2/run "$VMCTL" destroy "$rid" >/dev/null 2>&1
        fail $n "restored disk: '$a' ($u octets used): not 0600, 64 MiB, sparse"; return
    fi
    disk_verdict "$rd2" "$boot" "host 2"; local v=$DISK_LINE w=${WHY:-}
    VMCKPT_RUNDIR=$h2/run "$VMCTL" destroy "$rid" >/dev/null 2>&1
    [[ $v == *result=OK* ]] || { fail $n "host 2: memory and disk disagree: ${w:-$v}"; return; }
    # a byte flipped in the image's disk part (its last chunk: disk
    # extents, then END): refused in one line once the chunk fails to
    # authenticate; the disk file it had begun is gone, no domain left
    mkdir -p "$h2/disks3"
    cp "$img" "$T/s15-flip.vmimg"
    printf '\x5a' | dd of="$T/s15-flip.vmimg" bs=1 seek=$(($(stat -c %s "$img") - 4096)) conv=notrunc status=none
    if VMCKPT_RUNDIR=$h2/run run s15.flip "$VMRESTORE" -i "$KEY" --disk-dir "$h2/disks3" "$T/s15-flip.vmimg" ||
       ! one_line s15.flip || [ -n "$(ls -A "$h2/disks3")" ] || [ -n "$(ls "$h2/run")" ]; then
        fail $n "restore of an image with a flipped byte in its disk part: rc=$RC $(err s15.flip) left: $(ls -A "$h2/disks3") $(ls "$h2/run")"; return
    fi
    rm -f "$T/s15-flip.vmimg"
    # the same image again: its disk file is there, refused, removed nothing
    if VMCKPT_RUNDIR=$h2/run run s15.again "$VMRESTORE" -i "$KEY" --disk-dir "$h2/disks" "$img" ||
       ! grep -q "exists" "$IO/s15.again.err" || [ ! -s "$h2/disks/s15-virtio0.raw" ] ||
       [ -n "$(ls "$h2/run")" ]; then
        fail $n "restore over an existing disk file: rc=$RC $(err s15.again)"; return
    fi
    # a restore SIGKILLed once its disk file exists: its guardian removes
    # the half-built domain and the half-written disk
    mkdir -p "$h2/disks2"
    VMCKPT_RUNDIR=$h2/run "$VMRESTORE" -i "$KEY" --disk-dir "$h2/disks2" "$img" \
        >"$IO/s15.kill.out" 2>&1 &
    local kp=$! i
    for ((i = 0; i < 200; i++)); do
        [ -n "$(ls -A "$h2/disks2")" ] && break
        sleep 0.05
    done
    kill -9 "$kp" 2>/dev/null; wait "$kp" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        [ -z "$(ls -A "$h2/disks2")" ] && [ -z "$(ls "$h2/run")" ] && break
        sleep 0.1
    done
    if [ -n "$(ls -A "$h2/disks2")" ] || [ -n "$(ls "$h2/run")" ]; then
        fail $n "a SIGKILLed restore left: disks '$(ls -A "$h2/disks2")' registry '$(ls "$h2/run")': $(ls "$h2/run/"* 2>&1 | tr '\n' ' ') list: $(VMCKPT_RUNDIR=$h2/run "$VMCTL" list 2>&1 | tr '\n' ' ')"
        VMCKPT_RUNDIR=$h2/run "$VMCTL" list >/dev/null 2>&1
        return
    fi
    # the memory-only checkpoint, after its disk moved on: warned, and the
    # guest sees the disk ahead of its memory
    VMCKPT_ALLOW_DIRS=$VMCKPT_ALLOW_DIRS:$dd run s15.ckres "$VMRESTORE" -i "$KEY" "$ck" ||
        { fail $n "restore of the memory-only checkpoint: rc=$RC $(err s15.ckres)"; return; }
    ckid=$(out s15.ckres)
    track "$ckid"
    grep -q "warning: the image is a memory-only checkpoint" "$IO/s15.ckres.err" ||
        { fail $n "no warning restoring a memory-only checkpoint: $(err s15.ckres)"; return; }
    disk_verdict "$("$VMCTL" rundir "$ckid")" "$boot" "memory-only restore"
    [[ $DISK_LINE == *"result=BAD why=disk-ahead-of-memory"* ]] ||
        { fail $n "the guest's check did not see its disk moved on: ${WHY:-$DISK_LINE}"; return; }
    destroy "$ckid"
    pass $n "checkpoint refused, --memory-only warned twice; --disks: $(stat -c %s "$img") bytes, a flipped byte refused ($(cut -c1-80 "$IO/s15.flip.err")), unsealed and through bsdtar pax intact, restored on host 2 with memory and disk agreeing (${v##*disk }); the stale checkpoint's guest: ${DISK_LINE##*why=}, $(took)"
    rm -rf "$img" "$ck" "$dd" "$h2"
}

# 16. offline transport on a FAT32 stick (issue: the user's USB case): a
# domain journaling to its disk is saved --disks --split 16M onto a FAT32
# filesystem (a sparse image file mounted with fusefat: this kernel has no
# vfat), which is unmounted and mounted again read-only elsewhere for
# "host 2" (its own registry and disk directory, nothing shared); the set
# is verified there and restored from, and the guest's memory and disk
# agree.  Without /dev/fuse or fusefat: a loud SKIP.
s16() {
    local h2=$T/s16-host2 id
    if [ ! -c /dev/fuse ] || ! command -v fusefat >/dev/null ||
       ! command -v mkfs.vfat >/dev/null; then
        echo "*** e2e/qemu scenario 16 SKIPPED: needs /dev/fuse, fusefat and mkfs.vfat (tests/deps.sh)" >&2
        skip 16_fat32_split_transport "no /dev/fuse, fusefat or mkfs.vfat"
        return
    fi
    s16_body
    destroy_all_in "$h2/run"        # host 2's, on a failure
    for id in "$T/s16-usb" "$T/s16-usb2"; do
        mountpoint -q "$id" && { fusermount -u "$id" 2>/dev/null || umount "$id"; }
    done
    rm -rf "$h2" "$T/s16-usb" "$T/s16-usb2" "$T/s16-fat.img" "$T/s16-disks"
}
s16_body() {
    local n=16_fat32_split_transport fat=$T/s16-fat.img usb=$T/s16-usb
    local usb2=$T/s16-usb2 dd=$T/s16-disks h2=$T/s16-host2 id boot rd rid rd2
    local p sizes="" big=0 np=0 ts
    mkdir -p "$dd" "$h2/run" "$h2/disks" "$usb" "$usb2"
    truncate -s 512M "$fat" && mkfs.vfat -F 32 "$fat" >"$IO/s16.mkfs" 2>&1 ||
        { fail $n "mkfs.vfat: $(tail -2 "$IO/s16.mkfs")"; return; }
    fusefat -o rw+ "$fat" "$usb" >"$IO/s16.mount" 2>&1 && mountpoint -q "$usb" ||
        { fail $n "fusefat -o rw+: $(tail -2 "$IO/s16.mount")"; return; }
    truncate -s 64M "$dd/d1.raw"
    start_disk_guest s16 /dev/vda "$dd/d1.raw" || { fail $n "$WHY"; return; }
    id=$GID rd=$GRD boot=$GBOOT
    ts=$SECONDS
    run s16.save "$VMSAVE" --disks --split 16M --json -r "$REC" "$id" "$usb/s16.vmimg" ||
        { fail $n "vmsave --disks --split 16M onto FAT32: rc=$RC $(err s16.save)"; return; }
    ts=$((SECONDS - ts))
    [[ $(out s16.save) == *'"disks_carried":1'* ]] ||
        { fail $n "JSON: $(out s16.save)"; return; }
    dom_listed "$id" && { fail $n "domain $id still listed after vmsave"; return; }
    for p in "$usb"/s16.vmimg.*; do
        np=$((np + 1)); sizes="$sizes $(stat -c %s "$p")"
        [ "$(stat -c %s "$p")" -le $((16 << 20)) ] || big=1
    done
    if [ "$np" -lt 2 ] || [ $big = 1 ] || [ -e "$usb/s16.vmimg" ] ||
       ls "$usb" | grep -q partial; then
        fail $n "the set on the stick: $(ls -l "$usb" | tr '\n' ' ')"; return
    fi
    # carried: unmounted here, mounted read-only at another place
    fusermount -u "$usb" || { fail $n "fusermount -u: busy?"; return; }
    fusefat -o ro "$fat" "$usb2" >"$IO/s16.mount2" 2>&1 && mountpoint -q "$usb2" ||
        { fail $n "fusefat -o ro: $(tail -2 "$IO/s16.mount2")"; return; }
    VMCKPT_RUNDIR=$h2/run run s16.verify "$VMIMAGE" verify -i "$KEY" "$usb2/s16.vmimg" ||
        { fail $n "vmimage verify of the set on host 2: rc=$RC $(err s16.verify)"; return; }
    VMCKPT_RUNDIR=$h2/run run s16.restore "$VMRESTORE" -i "$KEY" --disk-dir "$h2/disks" \
        "$usb2/s16.vmimg.000" ||
        { fail $n "restore from the set on host 2: rc=$RC $(err s16.restore)"; return; }
    rid=$(out s16.restore)
    rd2=$(VMCKPT_RUNDIR=$h2/run "$VMCTL" rundir "$rid" 2>&1)
    disk_verdict "$rd2" "$boot" "host 2"; local v=$DISK_LINE w=${WHY:-}
    VMCKPT_RUNDIR=$h2/run "$VMCTL" destroy "$rid" >/dev/null 2>&1
    [[ $v == *result=OK* ]] || { fail $n "host 2: memory and disk disagree: ${w:-$v}"; return; }
    pass $n "--split 16M onto FAT32 (fusefat) in $ts s: $np pieces ($(echo $sizes) bytes); verified and restored on host 2 from the read-only stick, memory and disk agreeing (${v##*disk }), $(took)"
}

s8() { s8_common 8_restore_console_sigterm pid; }
s8b() { s8_common 8b_restore_console_hangup group; }

# 17. checkpoints that carry the disks of a domain that runs on: three
# --checkpoint --disks while the guest keeps journaling (the third one
# --live), each of them the disks as they were when the memory was
# captured (qcow2 overlays taken while the guest is still stopped, merged
# back after the copy).  The first is restored as a clone beside
# the running original, on its own disk file from --disk-dir: both guests'
# disk and memory agree, and the original's disk file moves on.  The
# image's filesystem filling up during the disk copy, and a vmsave
# SIGKILLed while it copies: the overlays are merged back (by its guardian
# for the killed one), the domain runs on, no image and no overlay are left.
s17() {
    local n=17_checkpoint_disks_clone dd=$T/s17-disks cd=$T/s17-clone id boot rd
    local cid crd i d0 d1 v kp dt=""
    mkdir -p "$dd" "$cd"
    # disk 0 holds data and is copied first, so that the journal on disk 1
    # (vdb) is copied a while after the guest runs again: only a view
    # taken inside the pause gives the clone a journal that its memory
    # agrees with
    truncate -s 256M "$dd/d0.raw"
    truncate -s 64M "$dd/d1.raw"
    head -c $((96 << 20)) /dev/urandom |
        dd of="$dd/d0.raw" bs=1M seek=64 conv=notrunc status=none
    start_disk_guest s17 /dev/vdb "$dd/d0.raw" "$dd/d1.raw" ||
        { fail $n "$WHY"; return; }
    id=$GID rd=$GRD boot=$GBOOT
    for i in 1 2 3; do
        # the third one live: the disks' instant is the end of its pre-copy
        run s17.ck$i "$VMSAVE" -c --disks --json $([ $i = 3 ] && echo --live) \
            -r "$REC" "$id" "$T/s17-ck$i.vmimg" ||
            { fail $n "checkpoint $i: rc=$RC $(err s17.ck$i)"; return; }
        [[ $(out s17.ck$i) == *'"disks_carried":2'* ]] ||
            { fail $n "checkpoint $i JSON: $(out s17.ck$i)"; return; }
        v=$(out s17.ck$i | sed -n 's/.*"downtime_ns":\([0-9]*\).*/\1/p')
        dt="$dt $((${v:-0} / 1000000))"
        [ -z "$(ls "$rd" | grep vmc-ov)" ] ||
            { fail $n "checkpoint $i left an overlay: $(ls "$rd")"; return; }
        guest_alive "$id" "$boot" || { fail $n "after checkpoint $i: $WHY"; return; }
    done
    # the image's filesystem fills up while the disks are copied: the
    # domain runs on its own disks, nothing is left
    v=$(out s17.ck1 | sed -n 's/.*"stream_bytes":\([0-9]*\).*/\1/p')
    mkdir -p "$T/s17-full"
    if mount -t tmpfs -o size=$(( (${v:-0} >> 20) - 60 ))m tmpfs "$T/s17-full"; then
        if run s17.full "$VMSAVE" -c --disks -r "$REC" "$id" "$T/s17-full/f.vmimg" ||
           ! one_line s17.full || ! grep -q "No space left" "$IO/s17.full.err" ||
           [ -n "$(ls "$T/s17-full")" ] || [ -n "$(ls "$rd" | grep vmc-ov)" ]; then
            umount "$T/s17-full"
            fail $n "disk full while the disks are copied: rc=$RC $(err s17.full) left: $(ls "$T/s17-full" "$rd" | tr '\n' ' ')"; return
        fi
        umount "$T/s17-full"
        guest_alive "$id" "$boot" || { fail $n "after the full disk: $WHY"; return; }
    else
        fail $n "cannot mount a small tmpfs for the full-disk case"; return
    fi
    # the original writes to its own file again
    d0=$(head -c 1M "$dd/d1.raw" | md5sum)
    wait_count "$rd/console.log" "$boot" $(($(last_count "$rd/console.log" "$boot") + 3)) 20
    d1=$(head -c 1M "$dd/d1.raw" | md5sum)
    [ "$d0" != "$d1" ] || { fail $n "the disk file does not move on after the checkpoints"; return; }
    # the first checkpoint, as a clone beside the original
    run s17.clone "$VMRESTORE" -i "$KEY" --clone --disk-dir "$cd" "$T/s17-ck1.vmimg" ||
        { fail $n "restore --clone: rc=$RC $(err s17.clone)"; return; }
    cid=$(out s17.clone)
    track "$cid"
    crd=$("$VMCTL" rundir "$cid" 2>&1)
    [ -f "$cd/s17-clone-virtio0.raw" ] && [ -f "$cd/s17-clone-virtio1.raw" ] ||
        { fail $n "no clone disk file in $cd: $(ls "$cd")"; return; }
    disk_verdict "$crd" "$boot" "clone" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "clone: memory and disk disagree: ${WHY:-$DISK_LINE}"; return; }
    disk_verdict "$rd" "$boot" "original" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "original: ${WHY:-$DISK_LINE}"; return; }
    v=$DISK_LINE
    destroy "$cid"
    # SIGKILL while the frozen disk is copied: the guardian merges back
    "$VMSAVE" -c --disks -r "$REC" "$id" "$T/s17-kill.vmimg" >"$IO/s17.kill.out" 2>&1 &
    kp=$!
    for ((i = 0; i < 400; i++)); do
        ls "$rd" 2>/dev/null | grep -q vmc-ov && break
        sleep 0.02
    done
    sleep 0.3
    kill -9 "$kp" 2>/dev/null; wait "$kp" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        [ -z "$(ls "$rd" | grep vmc-ov)" ] && break
        sleep 0.1
    done
    if [ -n "$(ls "$rd" | grep vmc-ov)" ] || ls "$T"/s17-kill.vmimg* >/dev/null 2>&1; then
        fail $n "after a SIGKILLed checkpoint: $(ls "$rd" | tr '\n' ' ') $(ls "$T" | grep s17-kill)"; return
    fi
    guest_alive "$id" "$boot" || { fail $n "after the SIGKILLed checkpoint: $WHY"; return; }
    disk_verdict "$rd" "$boot" "original after the kill" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "original after the kill: ${WHY:-$DISK_LINE}"; return; }
    # SIGKILL inside the merge, at an exact point: vmsave runs under gdb and
    # is killed as it is about to complete the commit jobs (each running in
    # QEMU, the guest still writing to its overlay); the guardian finishes
    # them.  The guest's own check then reads its journal from the disk
    # file: what it wrote while on the overlay has been merged in.
    local mk
    for mk in block-job-complete job-dismiss blockdev-del; do
        vmsave_stopped_at "$mk" s17.mkill -- -c --disks -r "$REC" "$id" "$T/s17-mkill.vmimg" ||
            { fail $n "vmsave under gdb did not stop at $mk: $(tail -n 5 "$IO/s17.mkill.out" | tr '\n' '|')"; return; }
        for ((i = 0; i < 100; i++)); do
            [ -z "$(ls "$rd" | grep vmc-ov)" ] && break
            sleep 0.1
        done
        if [ -n "$(ls "$rd" | grep vmc-ov)" ] || ls "$T"/s17-mkill.vmimg* >/dev/null 2>&1; then
            fail $n "vmsave killed at $mk in the merge: $(ls "$rd" | tr '\n' ' ') $(ls "$T" | grep s17-mkill)"; return
        fi
        guest_alive "$id" "$boot" || { fail $n "after a kill at $mk: $WHY"; return; }
        disk_verdict "$rd" "$boot" "original after a kill at $mk" && [[ $DISK_LINE == *result=OK* ]] ||
            { fail $n "original after a kill at $mk in the merge: ${WHY:-$DISK_LINE}"; return; }
    done
    # nothing of those merges is left in QEMU: the next checkpoint works
    run s17.after "$VMSAVE" -c --disks -r "$REC" "$id" "$T/s17-after.vmimg" &&
        [ -z "$(ls "$rd" | grep vmc-ov)" ] ||
        { fail $n "a checkpoint after the killed merges: rc=$RC $(err s17.after)"; return; }
    disk_verdict "$rd" "$boot" "original after it all" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "original after it all: ${WHY:-$DISK_LINE}"; return; }
    rm -f "$T/s17-after.vmimg"
    # vmsave and its guardian both SIGKILLed once the copy is done: the
    # guest writes on in its overlays, nobody merges them; vmctl destroy
    # (pulling the plug) merges them first, so a guest booted afresh on the
    # disk files finds its journal up to what it wrote on the overlay
    local s1 m
    vmsave_stopped_at block-commit s17.orphan 'shell pkill -9 -n -x vmckpt-guard' \
        -- -c --disks -r "$REC" "$id" "$T/s17-orphan.vmimg" &&
        ls "$rd" | grep -q vmc-ov ||
        { fail $n "no orphaned overlay: $(ls "$rd" | tr '\n' ' ') $(tail -n 3 "$IO/s17.orphan.out" | tr '\n' '|')"; return; }
    wait_count "$rd/console.log" "$boot" $(($(last_count "$rd/console.log" "$boot") + 3)) 20
    disk_verdict "$rd" "$boot" "on an orphaned overlay" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "on the orphaned overlay: ${WHY:-$DISK_LINE}"; return; }
    s1=${DISK_LINE##*disk seq=}; s1=${s1%% *}
    run s17.plug "$VMCTL" destroy "$id" ||
        { fail $n "vmctl destroy with an orphaned overlay: rc=$RC $(err s17.plug)"; return; }
    [ ! -e "$rd" ] || { fail $n "left after destroy: $(ls "$rd" | tr '\n' ' ')"; return; }
    start_disk_guest s17b /dev/vdb "$dd/d0.raw" "$dd/d1.raw" ||
        { fail $n "a fresh boot on the disks after destroy: $WHY"; return; }
    m=$(grep -a -o "boot=$GBOOT disk dev=/dev/vdb journal from seq=[0-9]*" "$GRD/console.log" | head -n 1)
    m=${m##*seq=}
    [ -n "$m" ] && [ "$m" -ge "$s1" ] ||
        { fail $n "after destroy the disk journal ends at seq '$m', the guest had written $s1 on its overlay"; return; }
    # QEMU itself SIGKILLed while the frozen disks are copied (vmsave held
    # under gdb once the copy is done, its guardian killed too): nothing can
    # merge the overlays in that QEMU; the next vmctl command that reads the
    # registry merges them offline (a QEMU of its own) and removes the
    # directory, and a guest booted afresh finds every write it made
    local qp s2 grd2=$GRD
    id=$GID boot=$GBOOT
    qp=$(dom_field "$id" 5)
    vmsave_stopped_at block-commit s17.qdie \
        "shell sleep 1; timeout 40 python3 $CONSOLE $grd2/console.sock --send check --expect 'disk seq=.*result=' --timeout 30 >$IO/s17.qdie.check 2>&1" \
        "shell kill -9 $qp; pkill -9 -n -x vmckpt-guard" \
        -- -c --disks -r "$REC" "$id" "$T/s17-qdie.vmimg"
    s2=$(grep -a -o 'disk seq=[0-9]* .*result=OK' "$IO/s17.qdie.check" | head -n 1)
    s2=${s2#disk seq=}; s2=${s2%% *}
    # (a zombie counts as dead: PID 1 here may be slow to reap it)
    [ -n "$s2" ] && ls "$grd2" 2>/dev/null | grep -q 'vmc-ov-.*qcow2' &&
        [ "$(awk '{print $3}' "/proc/$qp/stat" 2>/dev/null || echo gone)" != R ] &&
        ! grep -qs '^State:.*[RSD] ' "/proc/$qp/status" ||
        { fail $n "QEMU (pid '$qp') killed in the copy: check '$(cat "$IO/s17.qdie.check")' dir '$(ls "$grd2" | tr '\n' ' ')' $(tail -n 3 "$IO/s17.qdie.out" | tr '\n' '|')"; return; }
    run s17.reap "$VMCTL" list || { fail $n "vmctl list: rc=$RC $(err s17.reap)"; return; }
    [ ! -e "$grd2" ] ||
        { fail $n "the dead QEMU's directory stays: $(ls -R "$grd2" | tr '\n' ' ') $(cat "$grd2/vmc-merge.failed" 2>/dev/null)"; return; }
    pgrep -f "$grd2/merge" >/dev/null && { fail $n "the merging QEMU is left: $(pgrep -af "$grd2/merge")"; return; }
    start_disk_guest s17c /dev/vdb "$dd/d0.raw" "$dd/d1.raw" ||
        { fail $n "a fresh boot after the offline merge: $WHY"; return; }
    m=$(grep -a -o "boot=$GBOOT disk dev=/dev/vdb journal from seq=[0-9]*" "$GRD/console.log" | head -n 1)
    m=${m##*seq=}
    [ -n "$m" ] && [ "$m" -ge "$s2" ] ||
        { fail $n "after the offline merge the journal ends at seq '$m', the guest had written $s2 on its overlay"; return; }
    destroy "$GID"
    pass $n "3 checkpoints with both disks, the last live (downtimes$dt ms), the first restored as a clone: clone and original agree ($v); one filling its filesystem, one SIGKILLed in the copy and three in the merge (at block-job-complete, job-dismiss, blockdev-del) merged back; an orphaned overlay merged by vmctl destroy (journal at >= $s1); QEMU killed in the copy: merged offline by the next vmctl list (journal at $m >= $s2)"
}

# 18. qcow2: the journal on a qcow2 disk over a backing file (a template
# with data of its own, which the merge must leave alone).  A checkpoint --disks (an overlay over the qcow2
# node; the frozen image read through qemu-nbd) restored as a clone: the
# clone's disk is a raw file with the guest's view of the whole chain, and
# its memory agrees with it; a stopped save, unsealed, is exactly what
# qemu-img converts the chain to.  No qemu-nbd is left.
s18() {
    local n=18_qcow2_disks dd=$T/s18 id rd boot cid crd v z tm t0
    mkdir -p "$dd/clone" "$dd/un"
    # QEMU (unprivileged) opens a backing file itself, by its name: the
    # template's directory must be one it can reach
    tm=$(stat -c %a "$T")
    chmod o+x "$T" && chmod 0755 "$dd"
    qemu-img create -q -f qcow2 "$dd/base.qcow2" 64M &&
        qemu-io -c "write -P 0x5a 32M 4M" "$dd/base.qcow2" >/dev/null &&
        chmod 0666 "$dd/base.qcow2" &&
        qemu-img create -q -f qcow2 -b "$dd/base.qcow2" -F qcow2 "$dd/top.qcow2" ||
        { fail $n "qemu-img cannot make the chain"; return; }
    start_disk_guest s18 /dev/vda "$dd/top.qcow2" || { fail $n "$WHY"; return; }
    id=$GID rd=$GRD boot=$GBOOT
    t0=$(md5sum <"$dd/base.qcow2")
    run s18.ck "$VMSAVE" -c --disks --json -r "$REC" "$id" "$dd/ck.vmimg" ||
        { fail $n "checkpoint: rc=$RC $(err s18.ck)"; return; }
    [[ $(out s18.ck) == *'"disks_carried":1'* ]] ||
        { fail $n "checkpoint JSON: $(out s18.ck)"; return; }
    [ -z "$(ls "$rd" | grep vmc-ov)" ] ||
        { fail $n "the checkpoint left an overlay: $(ls "$rd")"; return; }
    guest_alive "$id" "$boot" || { fail $n "after the checkpoint: $WHY"; return; }
    # the overlay went back into top.qcow2, never into the template
    # (writable here, so a merge down the whole chain would show)
    [ "$(md5sum <"$dd/base.qcow2")" = "$t0" ] ||
        { fail $n "the merge wrote into the backing file"; return; }
    run s18.clone "$VMRESTORE" -i "$KEY" --clone --disk-dir "$dd/clone" "$dd/ck.vmimg" ||
        { fail $n "restore --clone: rc=$RC $(err s18.clone)"; return; }
    cid=$(out s18.clone)
    track "$cid"
    crd=$("$VMCTL" rundir "$cid" 2>&1)
    z=$(dd if="$dd/clone/s18-clone-virtio0.raw" bs=1M skip=32 count=4 status=none | tr -d Z | wc -c)
    [ "$z" = 0 ] || { fail $n "the clone's disk lacks the backing file's data ($z other octets)"; return; }
    disk_verdict "$crd" "$boot" "clone" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "clone: memory and disk disagree: ${WHY:-$DISK_LINE}"; return; }
    v=$DISK_LINE
    destroy "$cid"
    disk_verdict "$rd" "$boot" "original" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "original: ${WHY:-$DISK_LINE}"; return; }
    run s18.save "$VMSAVE" --disks -r "$REC" "$id" "$dd/s.vmimg" ||
        { fail $n "stopped save: rc=$RC $(err s18.save)"; return; }
    qemu-img convert -O raw "$dd/top.qcow2" "$dd/ref.raw" &&
        run s18.unseal "$VMIMAGE" unseal -i "$KEY" --disks "$dd/un" "$dd/s.vmimg" &&
        cmp -s "$dd/un/virtio0.raw" "$dd/ref.raw" ||
        { fail $n "unsealed disk differs from qemu-img convert: rc=$RC $(err s18.unseal)"; return; }
    pgrep -x qemu-nbd >/dev/null && { fail $n "a qemu-nbd is left: $(pgrep -a -x qemu-nbd)"; return; }
    rm -rf "$dd"
    chmod "$tm" "$T"
    pass $n "checkpoint of a qcow2 chain restored as a raw clone ($v); stopped save = qemu-img convert"
}

# 19. another host has other paths and networks: the stopped save of a
# domain with a disk and a user-network back end is restored there with
# --disk virtio0=PATH (the carried disk written to exactly PATH, no
# --disk-dir) and --net net0=... (the back end replaced, the guest's NIC
# kept).  An unknown id and a hostile attachment are refused in one line
# and leave nothing.  Saved again without its disk, the disk moved: the
# restore finds it through --disk; a file of another size there is refused.
s19() {
    local n=19_remap_disk_and_net dd=$T/s19 h2=$T/s19/host2 id boot rid rd2 a pid
    local img=$T/s19/s.vmimg img2=$T/s19/s2.vmimg v
    s19_body
    destroy_all_in "$h2/run"        # host 2's, on a failure
    rm -rf "$dd"
}
s19_body() {
    mkdir -p "$dd/d" "$h2/run" "$h2/elsewhere" "$h2/moved"
    truncate -s 64M "$dd/d/d1.raw"
    DISK_GUEST_EXTRA=(-netdev user,id=net0,restrict=on -device virtio-net-pci,netdev=net0)
    start_disk_guest s19 /dev/vda "$dd/d/d1.raw"; a=$?
    DISK_GUEST_EXTRA=()
    [ $a = 0 ] || { fail $n "$WHY"; return; }
    id=$GID boot=$GBOOT
    run s19.save "$VMSAVE" --disks -r "$REC" "$id" "$img" ||
        { fail $n "vmsave --disks: rc=$RC $(err s19.save)"; return; }
    run s19.config "$VMIMAGE" config -i "$KEY" "$img"     # refused here: d/ not allowed
    grep -q "^disk: *virtio0 .*d1.raw (raw, writable)" "$IO/s19.config.out" &&
        grep -q "^net: *net0 user" "$IO/s19.config.out" ||
        { fail $n "vmimage config does not name the disk and net ids: rc=$RC $(out s19.config | tr '\n' '|')"; return; }
    # an id the config does not have
    if VMCKPT_RUNDIR=$h2/run run s19.nosuch "$VMRESTORE" -i "$KEY" \
           --disk "nosuch=$h2/elsewhere/x.raw" "$img" || ! one_line s19.nosuch ||
       ! grep -q "disk nosuch: the domain config has no such disk" "$IO/s19.nosuch.err" ||
       [ -n "$(ls -A "$h2/elsewhere")$(ls "$h2/run")" ]; then
        fail $n "--disk with an unknown id: rc=$RC $(err s19.nosuch)"; return
    fi
    # a hostile attachment: a tap whose script would run as root here
    printf '#!/bin/sh\ntouch %s/ran\n' "$dd" >"$dd/evil.sh"; chmod +x "$dd/evil.sh"
    if VMCKPT_RUNDIR=$h2/run run s19.evil "$VMRESTORE" -i "$KEY" \
           --disk "virtio0=$h2/elsewhere/web.raw" \
           --net "net0=tap,ifname=vmc19,script=$dd/evil.sh" "$img" ||
       ! one_line s19.evil || ! grep -q "runs a host program" "$IO/s19.evil.err" ||
       [ -e "$dd/ran" ] || [ -n "$(ls -A "$h2/elsewhere")$(ls "$h2/run")" ]; then
        fail $n "a tap script attachment: rc=$RC $(err s19.evil) left: $(ls -A "$h2/elsewhere") $(ls "$h2/run")"; return
    fi
    VMCKPT_RUNDIR=$h2/run run s19.restore "$VMRESTORE" -i "$KEY" \
        --disk "virtio0=$h2/elsewhere/web.raw" --net "net0=user,net=10.77.0.0/24" "$img" ||
        { fail $n "restore with --disk and --net: rc=$RC $(err s19.restore)"; return; }
    rid=$(out s19.restore)
    rd2=$(VMCKPT_RUNDIR=$h2/run "$VMCTL" rundir "$rid" 2>&1)
    a=$(stat -c '%a %s' "$h2/elsewhere/web.raw" 2>&1)
    [ "$a" = "600 67108864" ] || { fail $n "the disk at the --disk path: '$a'"; return; }
    pid=$(VMCKPT_RUNDIR=$h2/run "$VMCTL" list 2>/dev/null | awk -v i="$rid" '$1 == i {print $5}')
    v=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
    [[ $v == *"-netdev user,net=10.77.0.0/24,id=net0 "* && $v == *"virtio-net-pci,netdev=net0"* &&
       $v != *restrict* ]] ||
        { fail $n "QEMU (pid '$pid') does not run the new attachment: $v"; return; }
    disk_verdict "$rd2" "$boot" "host 2" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "host 2: ${WHY:-$DISK_LINE}"; return; }
    v=${DISK_LINE##*disk }
    # saved without its disk (stopped: it cannot move on), the disk moved
    VMCKPT_RUNDIR=$h2/run run s19.save2 "$VMSAVE" -r "$REC" "$rid" "$img2" ||
        { fail $n "vmsave without --disks: rc=$RC $(err s19.save2)"; return; }
    mv "$h2/elsewhere/web.raw" "$h2/moved/web.raw"
    truncate -s 32M "$h2/moved/small.raw"
    if VMCKPT_RUNDIR=$h2/run run s19.gone "$VMRESTORE" -i "$KEY" "$img2" ||
       ! one_line s19.gone || ! grep -q "elsewhere/web.raw" "$IO/s19.gone.err"; then
        fail $n "restore with the recorded disk gone: rc=$RC $(err s19.gone)"; return
    fi
    if VMCKPT_RUNDIR=$h2/run run s19.small "$VMRESTORE" -i "$KEY" \
           --disk "virtio0=$h2/moved/small.raw" "$img2" || ! one_line s19.small ||
       ! grep -q "not the disk it was saved with" "$IO/s19.small.err" ||
       [ -n "$(ls "$h2/run")" ]; then
        fail $n "--disk at a file of another size: rc=$RC $(err s19.small)"; return
    fi
    VMCKPT_RUNDIR=$h2/run run s19.moved "$VMRESTORE" -i "$KEY" \
        --disk "virtio0=$h2/moved/web.raw" "$img2" ||
        { fail $n "restore with the moved disk: rc=$RC $(err s19.moved)"; return; }
    rid=$(out s19.moved)
    rd2=$(VMCKPT_RUNDIR=$h2/run "$VMCTL" rundir "$rid" 2>&1)
    disk_verdict "$rd2" "$boot" "moved" && [[ $DISK_LINE == *result=OK* ]] ||
        { fail $n "after the move: ${WHY:-$DISK_LINE}"; return; }
    VMCKPT_RUNDIR=$h2/run "$VMCTL" destroy "$rid" >/dev/null 2>&1
    pass $n "carried disk to --disk PATH, net0 to user,net=10.77.0.0/24 ($v); unknown id, tap script refused; moved disk found, wrong size refused, $(took)"
}

scenario 1 s1
scenario 2 s2
scenario 3 s3
scenario 4 s4
scenario 5 s5
scenario 6 s6
scenario 7 s7
scenario 8 s8
scenario 8b s8b
scenario 8c s8c
scenario 9 s9
scenario 10 s10
scenario 11 s11
scenario 12 s12
scenario 13 s13
scenario 14 s14
scenario 15 s15
scenario 16 s16
scenario 17 s17
scenario 18 s18
scenario 19 s19

# ---- nothing may survive ---------------------------------------------------
[ -n "$SPARE_ID" ] && destroy "$SPARE_ID"
SPARE_ID=""
sleep 0.5
left=$(my_procs)
dirs=$(ls "$RUN")     # dot files (.last-id, .lock) are the registry's own state
if [ -z "$left" ] && [ -z "$dirs" ]; then
    pass 99_nothing_left "no QEMU, tool or guardian process; no domain dir in $RUN"
else
    fail 99_nothing_left "processes: $(describe_procs $left) runtime dirs: $(echo $dirs) $("$VMCTL" list 2>&1 | tr '\n' '|')"
fi
echo "e2e/qemu: $NPASS passed, $NFAIL failed, $NSKIP skipped in $((SECONDS - T_START)) s (accel=$ACCEL)"
exit 0
