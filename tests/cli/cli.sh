#!/bin/bash
# cli.sh - vmimage end to end: expected stdout/stderr/exit status, golden
# images, damaged images, big round trips, faults (full disk, kill).
# Prints PASS:/FAIL:/SKIP: lines.  VMC_FAST=1 shrinks the big round trips.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/signing-env.sh"   # a test signing key, trusted
V=$ROOT/build/vmimage
GEN=$ROOT/build/tests/gendata
G=$ROOT/tests/golden
T=$(mktemp -d /tmp/vmc-cli.XXXXXX)
trap 'umount "$T/full" "$T/ro" 2>/dev/null; rm -rf "$T"' EXIT
cd "$T"
# the golden keys as a user keeps them: secret key files 0600 (a clone
# checks them out 0644, which vmckpt refuses for a secret, as ssh does)
GK=$T/golden-keys
mkdir -p "$GK" && cp "$G"/keys/* "$GK"/ && chmod 600 "$GK"/*

pass() { echo "PASS: cli/$1"; }
fail() { echo "FAIL: cli/$1: $2"; }
skip() { echo "SKIP: cli/$1: $2"; }

# run NAME EXPECTED_EXIT CMD... : captures out/err/rc
run() {
    local want=$1; shift
    "$@" >out 2>err
    rc=$?
    [ "$rc" = "$want" ]
}
one_line() { [ "$(wc -l < err)" = 1 ]; }

# ---- keygen ------------------------------------------------------------
t=keygen
if run 0 $V keygen -o id.key && grep -q '^vmc1' out &&
   [ "$(stat -c %a id.key)" = 600 ] && grep -q '^VMCKPT-SECRET-KEY-1' id.key &&
   [ "$(cat out)" = "$($V keygen -y id.key)" ]; then pass $t
else fail $t "rc=$rc $(cat err)"; fi
REC=$(cat out)

t=keygen_no_overwrite
cp id.key id.bak
if run 1 $V keygen -o id.key && one_line && grep -q 'id.key: already exists' err &&
   cmp -s id.key id.bak; then pass $t; else fail $t "rc=$rc $(cat err)"; fi

# Without -o the key goes to stdout (written by vmimage, not the library)
t=keygen_stdout
if run 0 $V keygen && grep -q '^VMCKPT-SECRET-KEY-1' out && cp out stdout.key &&
   chmod 600 stdout.key &&
   run 0 $V keygen -y stdout.key && grep -q '^vmc1' out && [ ! -e ./- ] &&
   run 0 $V keygen --symmetric && grep -q '^VMCKPT-RAW-KEY-1' out; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=keygen_symmetric
if run 0 $V keygen --symmetric -o raw.key && [ "$(stat -c %a raw.key)" = 600 ] &&
   grep -q '^VMCKPT-RAW-KEY-1' raw.key; then pass $t; else fail $t "rc=$rc"; fi
$V keygen -o other.key >/dev/null
printf 'a passphrase\n' > pass.txt

# ---- usage errors: exit 2, a named problem, then the synopsis ----------
t=usage
ok=1
run 2 $V || ok=0
grep -q 'missing command' err || ok=0
run 2 $V frobnicate || ok=0
grep -q "unknown command 'frobnicate'" err || ok=0
run 2 $V verify || ok=0
grep -q 'missing IMAGE' err || ok=0
run 2 $V seal -l 99 -r "$REC" -o x /dev/null || ok=0
grep -q "bad --level '99'" err || ok=0
run 2 $V seal -o x /dev/null || ok=0
grep -q 'no key to seal to' err || ok=0
run 2 $V verify --bogus x || ok=0
grep -q 'unknown option' err || ok=0
grep -q '^usage:' err || ok=0
[ $ok = 1 ] && pass $t || fail $t "$(cat err)"

# A bad option names itself and what is wrong with it; options that make
# no sense together are refused up front (no domain is even looked up).
t=usage_names_the_option
VS=$ROOT/build/vmsave VR=$ROOT/build/vmrestore VM=$ROOT/build/vmmigrate
ok=""
run 2 $VS web01 f -r || ok="$ok vmsave-r"
grep -q '^vmsave: missing argument to -r$' err && grep -q '^usage:' err || ok="$ok msg-r"
run 2 $VS --recipient || ok="$ok vmsave--recipient"
grep -q '^vmsave: missing argument to --recipient$' err || ok="$ok msg--recipient"
run 2 $VS -Z web01 f || ok="$ok vmsave-Z"
grep -q '^vmsave: unknown option -Z$' err || ok="$ok msg-Z"
run 2 $VR --frob=1 x || ok="$ok vmrestore--frob"
grep -q '^vmrestore: unknown option --frob$' err || ok="$ok msg--frob"
run 2 $V verify --bogus x || ok="$ok vmimage--bogus"
grep -q '^vmimage: unknown option --bogus$' err || ok="$ok msg--bogus"
run 2 $VM --backend nope web01 host2 || ok="$ok vmmigrate-backend"
grep -q "^vmmigrate: unknown backend 'nope'" err && grep -q '^usage:' err || ok="$ok msg-backend"
[ -z "$ok" ] && pass $t || fail $t "$ok: rc=$rc $(tr '\n' '|' <err)"

# vmctl is on the same option table: the same words for the same faults,
# -h and -V handled once; start's options end at NAME, so QEMU's own
# options follow it without "--" (a fresh registry: nothing starts).
t=vmctl_options
VC=$ROOT/build/vmctl
ok=""
export VMCKPT_RUNDIR="$PWD/vmctl-rundir"
run 2 $VC list --bogus || ok="$ok list--bogus"
grep -q '^vmctl: unknown option --bogus$' err && grep -q '^usage:' err || ok="$ok msg--bogus"
run 2 $VC start --uuid || ok="$ok start--uuid"
grep -q '^vmctl: missing argument to --uuid$' err || ok="$ok msg--uuid"
run 2 $VC list --uuid x || ok="$ok list--uuid"
grep -q '^vmctl: unknown option --uuid$' err || ok="$ok msg-list--uuid"
run 2 $VC start n1 -- || ok="$ok start-no-args"
grep -q '^vmctl: start: missing QEMU-ARGS$' err || ok="$ok msg-no-args"
run 2 $VC status || ok="$ok status"
grep -q '^vmctl: missing DOMAIN$' err || ok="$ok msg-status"
run 0 $VC -h && grep -q -- '--uuid UUID' out && grep -q -- '-q, --quiet' out ||
    ok="$ok -h"
run 0 $VC list -q && grep -q '^ID ' out || ok="$ok list-q"
run 0 $VC list --help && grep -q -- '^ *--json' out && ! grep -q -- '^ *--uuid' out || ok="$ok list--help"
run 0 $VC -V && grep -q '^vmctl ' out || ok="$ok -V"
run 0 $VC list --json && [ "$(cat out)" = "[]" ] || ok="$ok list--json"
# without "--", -machine belongs to QEMU: vmctl gets as far as QEMU itself
run 1 $VC start n1 -machine no-such-machine -display none || ok="$ok start-qemu-args"
grep -qi 'machine' err || ok="$ok msg-qemu-args($(head -n 1 err))"
unset VMCKPT_RUNDIR
[ -z "$ok" ] && pass $t || fail $t "$ok: rc=$rc $(tr '\n' '|' <err)"

# vmctl list --json names a domain as every tool's JSON does (domid and
# domain, as vmsave and vmrestore say them); a QEMU without a machine is
# enough to be listed.
t=vmctl_list_json_names
export VMCKPT_RUNDIR="$PWD/vmctl-rundir-json"
if ! id=$($VC start listed -machine none -display none -nodefaults -m 16 2>err)
then skip $t "no QEMU to start: $(head -n 1 err)"; id=""
elif run 0 $VC list --json && python3 - out "$id" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert len(j) == 1, j
d = j[0]
assert d["domid"] == int(sys.argv[2]) and d["domain"] == "listed", d
assert "id" not in d and "name" not in d, d
assert set(d) == {"domid", "domain", "uuid", "state", "pid", "rundir"}, d
PY
then pass $t
else fail $t "rc=$rc $(tr '\n' '|' <out) $(tr '\n' '|' <err)"; fi

# vmctl -q, as every tool's: the console on a terminal says nothing of
# connecting and detaching (^]); without it, it says both.
t=vmctl_quiet_console
console_on_pty() {      # console_on_pty [-q]: its terminal's text, in out
    python3 - "$VC" listed "$@" >out 2>err <<'PY'
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "console"] + sys.argv[3:] + [sys.argv[2]])
text = b""
def drain(secs):
    global text
    end = time.time() + secs
    while time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                b = os.read(fd, 4096)
            except OSError:
                return
            if not b:
                return
            text += b
drain(1.5)
os.write(fd, b"\x1d")                 # the escape key
drain(3)
_, st = os.waitpid(pid, 0)
sys.stdout.write(text.decode(errors="replace").replace("\r", ""))
sys.exit(os.waitstatus_to_exitcode(st))
PY
}
if [ -z "$id" ]; then skip $t "no QEMU to start"
elif console_on_pty && grep -q '^Connected to domain listed console' out &&
     grep -q '^Detached from domain listed console' out &&
     console_on_pty -q && ! grep -q 'Connected\|Detached' out; then pass $t
else fail $t "rc=$? $(tr '\n' '|' <out) $(tr '\n' '|' <err)"; fi

# A domain that vmsave --paused left paused: QEMU (postmigrate) saves it
# again only once it has run; said in one line, the domain left as it was
t=vmsave_after_paused_save
if [ -z "$id" ]; then skip $t "no QEMU to start"
elif run 0 "$ROOT/build/vmsave" --paused -q -r "$REC" listed p1.vmimg &&
     run 1 "$ROOT/build/vmsave" -r "$REC" listed p2.vmimg && one_line &&
     grep -q 'an earlier save left it paused.*resume it first' err &&
     [ ! -e p2.vmimg ] && [ "$($VC status listed)" = postmigrate ] &&
     $VC resume listed && run 0 "$ROOT/build/vmsave" --paused -q -r "$REC" listed p2.vmimg
then pass $t
else fail $t "rc=$rc $(tr '\n' '|' <err) status $($VC status listed 2>&1)"; fi
$VC destroy listed >/dev/null 2>&1
unset VMCKPT_RUNDIR

# An argument given to an option that takes none is named as that, in
# one line, not as an unknown option; an abbreviation by its full name.
t=usage_option_takes_no_argument
ok=""
export VMCKPT_RUNDIR="$PWD/vmctl-rundir"
for cmd in "$VS --json=x web01 f" "$VS --jso=1 web01 f" "$VR --json=x f" \
           "$VM --json=x web01 192.0.2.1:1" "$V info --json=x f" \
           "$V verify --json= f" "$VC list --json=x"; do
    tool=$(basename "${cmd%% *}")
    run 2 $cmd || ok="$ok [$cmd: rc=$rc]"
    [ "$(head -n 1 err)" = "$tool: option '--json' takes no argument" ] &&
        [ "$(grep -vc '^usage:\|^	' err)" = 1 ] && grep -q '^usage:' err ||
        ok="$ok [$cmd: $(tr '\n' '|' <err)]"
done
unset VMCKPT_RUNDIR
[ -z "$ok" ] && pass $t || fail $t "$ok"

t=vmsave_conflicting_options
ok=""
for args in "-c --paused|--checkpoint and --paused exclude each other" \
            "--paused --checkpoint|--checkpoint and --paused exclude each other" \
            "--max-downtime 100|--max-downtime needs --live" \
            "--live-timeout 5|--live-timeout needs --live"; do
    run 2 $VS ${args%%|*} -r "$REC" web01 conflict.vmimg || ok="$ok [${args%%|*}: rc=$rc]"
    grep -qxF "vmsave: ${args#*|}" err || ok="$ok [${args%%|*}: $(head -n 1 err)]"
done
[ -e conflict.vmimg ] && ok="$ok wrote-a-file"
[ -z "$ok" ] && pass $t || fail $t "$ok"

# vmmigrate --no-live has no pre-copy to bound: its live options are
# usage errors before anything is looked up or dialled (no network).
t=vmmigrate_conflicting_options
ok=""
for args in "--no-live --max-downtime 100|--max-downtime and --no-live exclude each other" \
            "--max-downtime 100 --no-live|--max-downtime and --no-live exclude each other" \
            "--no-live --live-timeout 5|--live-timeout and --no-live exclude each other"; do
    run 2 $VM ${args%%|*} -i /nonexistent web01 192.0.2.1:1 ||
        ok="$ok [${args%%|*}: rc=$rc]"
    grep -qxF "vmmigrate: ${args#*|}" err && [ "$(grep -vc '^usage:\|^	' err)" = 1 ] &&
        grep -q '^usage:' err || ok="$ok [${args%%|*}: $(tr '\n' '|' <err)]"
done
[ -z "$ok" ] && pass $t || fail $t "$ok"

# The disks options belong to one side each: the other side's use is a
# usage error before anything is dialled or listened on; a --disk-dir that
# is not a directory is one line, before the receiver listens.
t=vmmigrate_disk_options
ok=""
run 2 $VM --disk-dir . -i /nonexistent web01 192.0.2.1:1 || ok="$ok sender:rc=$rc"
grep -qxF "vmmigrate: --disk-dir is the receiver's (a sender takes --disks)" err ||
    ok="$ok sender:$(head -n 1 err)"
run 2 $VM --listen 127.0.0.1:1 --disks || ok="$ok receiver:rc=$rc"
grep -qxF "vmmigrate: --disks is the sender's (a receiver takes --disk-dir)" err ||
    ok="$ok receiver:$(head -n 1 err)"
run 1 $VM --receive --disk-dir ./no-such-dir </dev/null || ok="$ok nodir:rc=$rc"
[ "$(cat err)" = "vmmigrate: ./no-such-dir: --disk-dir: No such file or directory" ] ||
    ok="$ok nodir:$(tr '\n' '|' <err)"
run 2 $VM --net net0=user -i /nonexistent web01 192.0.2.1:1 || ok="$ok sendernet:rc=$rc"
grep -qxF "vmmigrate: --disk and --net are the receiver's" err ||
    ok="$ok sendernet:$(head -n 1 err)"
[ -z "$ok" ] && pass $t || fail $t "$ok"

# vmrestore --disk ID=PATH and --net ID=ATTACHMENT: malformed ones are
# usage errors, before any file is read
t=vmrestore_remap_options
ok=""
for a in "--disk vda" "--disk =/x" "--disk vda=" "--net net0" "--net =user"; do
    run 2 $VR $a -i id.key /nonexistent || ok="$ok [$a]:rc=$rc"
    grep -qE "^vmrestore: --(disk|net) '[^']*': not ID=(PATH|ATTACHMENT)\$" err ||
        ok="$ok [$a]:$(head -n 1 err)"
done
[ -z "$ok" ] && pass $t || fail $t "$ok"

# A raw stream sealed by vmimage seal: info says what it is, vmrestore
# says it can never be restored (not "backend not built in"); a text file
# given as an image is "not a vmckpt image".
t=raw_seal_info_and_restore
head -c 70000 /dev/urandom >raw.bin
ok=""
run 0 $V seal -r "$REC" -o raw.vmimg raw.bin || ok="$ok seal:rc=$rc"
run 0 $V info -i id.key raw.vmimg || ok="$ok info:rc=$rc"
grep -q '^content: *raw.bin, a raw opaque stream sealed by vmimage seal' out || ok="$ok info:$(tr '\n' '|' <out)"
grep -q 'backend: *none' out && ok="$ok info-says-backend-none"
run 1 $VR -i id.key raw.vmimg || ok="$ok restore:rc=$rc"
one_line && grep -q 'vmimage seal: it records no domain and can never be restored' err ||
    ok="$ok restore:$(cat err)"
printf 'hello, I am a text file\n' >text.txt
for cmd in "$V info" "$V verify -i id.key" "$VR -i id.key"; do
    run 1 $cmd text.txt && one_line && grep -q 'not a vmckpt image' err ||
        ok="$ok [${cmd##*/}: rc=$rc $(cat err)]"
done
[ -z "$ok" ] && pass $t || fail $t "$ok"

# verify takes several images like zstd -t: each checked, one OK line
# per good one (the line vmimage(1) shows), exit 1 if any is bad.
t=verify_several
ok=""
run 0 $V verify -i $GK/identity.key $G/v1-x25519.vmimg $G/v1-all.vmimg || ok="$ok rc=$rc"
[ "$(grep -c ': OK ([0-9]* records, [0-9]* backend bytes, [0-9]* chunks), signer none: unsigned (format 1)' out)" = 2 ] || ok="$ok out:$(tr '\n' '|' <out)"
run 1 $V verify -i $GK/identity.key $G/v1-x25519.vmimg $G/v1-bad-flip-payload.vmimg $G/v1-all.vmimg || ok="$ok bad:rc=$rc"
[ "$(grep -c ': OK' out)" = 2 ] && one_line && grep -q 'v1-bad-flip-payload.vmimg' err || ok="$ok bad:$(cat out err)"
run 2 $V verify -i $GK/identity.key - - </dev/null || ok="$ok stdin-twice:rc=$rc"
[ -z "$ok" ] && pass $t || fail $t "$ok"

t=bad_recipient
if run 1 $V seal -r vmc1nonsense -o x /dev/null && one_line &&
   grep -q 'not a valid recipient' err && [ ! -e x ]; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=help_version
if run 0 $V --help && grep -q -- '--recipient' out && grep -q 'keygen' out &&
   run 0 $V seal --help && grep -q -- '--label' out &&
   ! grep -q -- '--remove-slot' out && run 0 $V --version &&
   grep -q '^vmimage [0-9]' out; then pass $t; else fail $t "help"; fi

# ---- golden images: must decode forever ------------------------------
# v1: unsigned; v2: signed by the golden signer, which these runs trust.
GSIGNER=$(cat $G/keys/signer.txt)
for ver in v1 v2; do
  trust=""
  [ $ver = v2 ] && trust="-t $GSIGNER"
  for img in x25519 passphrase rawkey all; do
    for key in "-i $GK/identity.key" "-k $GK/raw.key" \
               "--passphrase-file $GK/passphrase.txt"; do
        case "$img:$key" in
        x25519:-i*|passphrase:--pass*|rawkey:-k*|all:*) want=0 ;;
        *) want=1 ;;
        esac
        t="golden_${ver}_${img}_$(echo "$key" | cut -c1-3 | tr -d ' -')"
        if run $want $V verify -q $trust $key $G/$ver-$img.vmimg; then
            if [ $want = 0 ]; then
                $V unseal $trust $key -o u.bin $G/$ver-$img.vmimg &&
                    cmp -s u.bin $G/payload.bin && pass $t ||
                    fail $t "unseal differs"
                rm -f u.bin
            elif one_line && grep -q 'no key opens it' err; then pass $t
            else fail $t "$(cat err)"; fi
        else fail $t "rc=$rc want $want: $(cat err)"; fi
    done
  done
done

t=golden_v2_signer_reported
if run 0 $V info $G/v2-all.vmimg &&
   grep -qF "signer:      $GSIGNER (signature valid, NOT trusted here)" out &&
   run 0 $V verify -t $GSIGNER -i $GK/identity.key $G/v2-x25519.vmimg &&
   grep -qF "signer $GSIGNER (trusted here)" out &&
   run 0 $V info --json -t $GSIGNER -i $GK/identity.key $G/v2-all.vmimg &&
   python3 -c 'import json,sys; h=json.load(open("out"))["header"]; \
assert h["version"]==2 and h["signed"] and h["signature_ok"] and h["trusted"] \
and h["signer"]==sys.argv[1], h' "$GSIGNER"
then pass $t; else fail $t "rc=$rc $(cat out err)"; fi

t=golden_v2_untrusted_fails_verify_and_unseal
if run 1 $V verify -i $GK/identity.key $G/v2-x25519.vmimg && one_line &&
   grep -qF "signed by $GSIGNER, which is not a trusted signer" err &&
   run 1 $V unseal -i $GK/identity.key -o u.bin $G/v2-x25519.vmimg &&
   one_line && [ ! -e u.bin ] &&
   run 0 $V info -i $GK/identity.key $G/v2-x25519.vmimg &&
   grep -q "NOT trusted here" out; then pass $t
else fail $t "rc=$rc $(cat out err)"; fi

t=golden_v2_rekey_keeps_the_signature
if run 0 $V rekey -i $GK/identity.key --add-key-file $GK/raw.key -o rk.vmimg $G/v2-x25519.vmimg &&
   run 0 $V verify -q -t $GSIGNER -k $GK/raw.key rk.vmimg &&
   run 0 $V info rk.vmimg && grep -qF "$GSIGNER" out; then pass $t
else fail $t "rc=$rc $(cat out err)"; fi
rm -f rk.vmimg

# No key at all: the library hints, the tool names its own options.
t=unseal_without_key_names_the_options
if run 1 $V unseal -o u.bin $G/v1-all.vmimg && one_line &&
   grep -q 'no key given (give -i, -k, -P, --passphrase-file or --passphrase-fd)' err &&
   [ ! -e u.bin ]; then pass $t; else fail $t "rc=$rc $(cat err)"; fi

t=golden_info_nokey
if run 0 $V info $G/v1-all.vmimg && grep -q 'header unverified' out &&
   grep -q 'label:       golden all slots' out && grep -q 'argon2id (t=1, m=8 MiB)' out &&
   grep -q 'x25519' out && grep -q rawkey out && ! grep -q golden\ \ uuid out
then pass $t; else fail $t "$(cat out err)"; fi

t=golden_info_key
if run 0 $V info -i $GK/identity.key $G/v1-all.vmimg &&
   grep -q 'header authenticated' out &&
   grep -q '^content:     golden, a raw opaque stream sealed by vmimage seal' out &&
   grep -q 'BACKEND_STREAM' out && grep -q '<- opened' out; then pass $t
else fail $t "$(cat out err)"; fi

t=golden_info_json
if run 0 $V info --json -k $GK/raw.key $G/v1-all.vmimg &&
   python3 -c 'import json,sys; d=json.load(open("out")); assert d["ok"]; \
assert d["summary"]["image_info"]["name"]=="golden"; \
assert d["summary"]["backend_bytes"]==307200; assert d["header"]["verified"]'
then pass $t; else fail $t "$(cat out err)"; fi

# ---- damaged golden images: one line, exit 1, never a crash ---------
while IFS="$(printf '\t')" read -r f want needle; do
    case "$f" in '#'*|'') continue ;; esac
    t="damaged_${f%.vmimg}"
    if run "$want" $V verify --passphrase-file $GK/passphrase.txt "$G/$f" &&
       one_line && grep -qF -- "$needle" err; then pass "$t"
    else fail "$t" "rc=$rc want $want, '$needle' in: $(cat err)"; fi
done < $G/damaged.tsv
while IFS="$(printf '\t')" read -r f want needle; do
    case "$f" in '#'*|'') continue ;; esac
    t="damaged_${f%.vmimg}"
    if run "$want" $V verify -t "$GSIGNER" --passphrase-file $GK/passphrase.txt \
           "$G/$f" && one_line && grep -qF -- "$needle" err; then pass "$t"
    else fail "$t" "rc=$rc want $want, '$needle' in: $(cat err)"; fi
done < $G/damaged-v2.tsv

t=damaged_json_names_the_chunk
if run 1 $V verify --json --passphrase-file $GK/passphrase.txt \
       $G/v1-bad-flip-payload.vmimg &&
   python3 -c 'import json; d=json.load(open("out")); assert not d["ok"]; \
w=d["where"]; assert w["chunk"]==1 and w["offset"]>0, w; \
assert ("@0x%x:" % w["offset"]) in d["error"], d'
then pass $t; else fail $t "rc=$rc $(cat out err)"; fi

t=damaged_unseal_leaves_nothing
if run 1 $V unseal --passphrase-file $GK/passphrase.txt -o dmg.bin \
       $G/v1-bad-trunc-mid.vmimg && [ ! -e dmg.bin ] && [ ! -e dmg.bin.partial ]
then pass $t; else fail $t "rc=$rc files: $(ls)"; fi

# ---- round trips: passphrase, recipient, both; through pipes -------
if [ "${VMC_FAST:-0}" = 1 ]; then SIZE=64M; else SIZE=1G; fi
$GEN $SIZE 3 > data.bin
for mode in passphrase recipient both; do
    t="roundtrip_${SIZE}_$mode"
    case $mode in
    passphrase) sk="--passphrase-file pass.txt"; ok1="--passphrase-file pass.txt"; ok2=$ok1 ;;
    recipient) sk="-r $REC"; ok1="-i id.key"; ok2=$ok1 ;;
    both) sk="-r $REC --passphrase-file pass.txt"; ok1="-i id.key"
          ok2="--passphrase-file pass.txt" ;;
    esac
    rm -f img.vmimg
    if $V seal -q $sk -o img.vmimg data.bin 2>err &&
       [ "$(stat -c %a img.vmimg)" = 600 ] &&
       $V verify -q $ok1 img.vmimg 2>>err &&
       $V unseal $ok2 img.vmimg 2>>err | cmp -s - data.bin &&
       ! $V verify -q -i other.key img.vmimg 2>/dev/null; then pass $t
    else fail $t "$(cat err)"; fi
done

# On a tty, progress shows the percentage of the image file read and an
# ETA (of the file, not of the decompressed guest); never on a pipe.
t=progress_percent_on_tty
$GEN 96M 5 > prog.bin
$V seal -q -r "$REC" -o prog.vmimg prog.bin
script -q -e -c "$V verify -i id.key prog.vmimg" /dev/null 2>&1 | tr '\r' '\n' > tty.out
if grep -Eq '^vmimage: verifying [0-9.]+ [KMG]?i?B  [0-9.]+ [KMG]?i?B/s  [0-9]{1,2}%  ETA [0-9]+s' tty.out &&
   grep -q 'prog.vmimg: OK' tty.out &&
   $V verify -i id.key prog.vmimg 2>err >/dev/null && [ ! -s err ]; then pass $t
else fail $t "tty: $(tr '\n' '|' < tty.out | cut -c1-300) pipe: $(cat err)"; fi
rm -f prog.bin prog.vmimg

# The bash completion offers every option that each tool's --help lists
# (vmimage: each option in at least one subcommand).
t=completion_knows_every_option
comp_out() {    # comp_out WORDS...: what completing a last "-" offers
    bash -c '. "$1"; shift; COMP_WORDS=("$@" -); COMP_CWORD=$#; COMPREPLY=()
             "_$1"; printf "%s\n" "${COMPREPLY[@]}"' \
        _ "$ROOT/contrib/bash-completion/vmckpt" "$@"
}
help_opts() { "$ROOT/build/$1" --help 2>&1 | grep -oE '^ +(-[A-Za-z], )?--[a-z][a-z-]*' | grep -oE -- '-[A-Za-z]\b|--[a-z][a-z-]*'; }
missing=""
for tool in vmsave vmrestore vmmigrate; do
    offered=$(comp_out $tool)
    for o in $(help_opts $tool); do
        grep -qxF -- "$o" <<<"$offered" || missing="$missing $tool:$o"
    done
done
offered=$(for c in keygen info verify seal unseal rekey config; do comp_out vmimage $c; done)
for o in $(help_opts vmimage); do
    grep -qxF -- "$o" <<<"$offered" || missing="$missing vmimage:$o"
done
[ -z "$missing" ] && pass $t || fail $t "not completed:$missing"

t=pipe_seal_verify
if $GEN 20M 4 | $V seal -r "$REC" | $V verify -q -i id.key - 2>err &&
   $GEN 20M 4 | $V seal -r "$REC" | $V unseal -i id.key - | cmp -s - <($GEN 20M 4)
then pass $t; else fail $t "$(cat err)"; fi

t=passphrase_fd
if $V seal -q --passphrase-fd 3 -o fd.vmimg data.bin 3<pass.txt 2>err &&
   $V verify -q --passphrase-fd 4 fd.vmimg 4<pass.txt 2>>err; then pass $t
else fail $t "$(cat err)"; fi
rm -f fd.vmimg

t=refuse_terminal
if command -v script >/dev/null; then
    script -qec "$V unseal -i id.key img.vmimg" /dev/null > tty.out 2>&1
    if grep -q 'refusing to write the raw stream to a terminal' tty.out
    then pass $t; else fail $t "$(cat tty.out)"; fi
else skip $t "no script(1)"; fi

# ---- rekey: header only, payload bytes untouched -------------------
t=rekey
cp img.vmimg rk.vmimg      # sealed to REC and pass.txt ("both")
hl() { python3 -c 'import struct,sys; print(struct.unpack_from("<I", open(sys.argv[1],"rb").read(64), 12)[0])' "$1"; }
tail -c +$(( $(hl rk.vmimg) + 1 )) rk.vmimg > payload.before
printf 'new pass\n' > new.txt
if $V rekey -q -i id.key --new-passphrase-file new.txt --kdf-mem 8 --kdf-ops 1 \
       --remove-passphrase rk.vmimg 2>err &&
   $V verify -q --passphrase-file new.txt rk.vmimg 2>>err &&
   ! $V verify -q --passphrase-file pass.txt rk.vmimg 2>/dev/null &&
   $V verify -q -i id.key rk.vmimg 2>>err &&
   tail -c +$(( $(hl rk.vmimg) + 1 )) rk.vmimg | cmp -s - payload.before &&
   [ "$(stat -c %a rk.vmimg)" = 600 ]; then pass $t
else fail $t "$(cat err)"; fi

t=rekey_remove_identity
if $V rekey -q --passphrase-file new.txt --remove-identity id.key \
       -o rk2.vmimg rk.vmimg 2>err &&
   ! $V verify -q -i id.key rk2.vmimg 2>/dev/null &&
   $V verify -q --passphrase-file new.txt rk2.vmimg 2>>err &&
   run 1 $V rekey --passphrase-file new.txt --remove-slot 0 -o rk3.vmimg rk2.vmimg &&
   grep -q 'last key slot' err && [ ! -e rk3.vmimg ]; then pass $t
else fail $t "$(cat err)"; fi

# Removing a slot is not revocation: the removed key with an old header
# still opens the payload (vmimage(1) says so).  --rotate is: a new file key
# and stream id, the payload re-encrypted, only the keys given.
t=rekey_remove_is_not_revocation
head -c "$(hl rk.vmimg)" rk.vmimg > old.hdr
tail -c +$(( $(hl rk2.vmimg) + 1 )) rk2.vmimg > rk2.payload
cat old.hdr rk2.payload > spliced.vmimg
if $V verify -q -i id.key spliced.vmimg 2>err; then pass $t "documented: vmimage(1) SECURITY"
else fail $t "the old header no longer opens the payload? $(cat err)"; fi

t=rekey_rotate_revokes
REC2=$($V keygen -y other.key)
if $V rekey -q --rotate --passphrase-file new.txt -r "$REC2" -o rot.vmimg rk2.vmimg 2>err &&
   $V verify -q -i other.key rot.vmimg 2>>err &&
   ! $V verify -q --passphrase-file new.txt rot.vmimg 2>/dev/null &&
   tail -c +$(( $(hl rot.vmimg) + 1 )) rot.vmimg > rot.payload &&
   cat old.hdr rot.payload > spliced2.vmimg &&
   ! $V verify -q -i id.key spliced2.vmimg 2>/dev/null &&
   $V unseal -i other.key rot.vmimg 2>>err | cmp -s - data.bin &&
   [ "$($V info --json -i other.key rot.vmimg | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["stream_id"])')" != \
     "$($V info --json --passphrase-file new.txt rk2.vmimg | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["stream_id"])')" ] &&
   run 2 $V rekey --rotate --passphrase-file new.txt --remove-slot 0 rk2.vmimg &&
   grep -q -- '--rotate keeps no slot' err; then pass $t
else fail $t "$(cat err)"; fi

t=rekey_wrong_key_untouched
cp rk.vmimg rk4.vmimg
if run 1 $V rekey -i other.key -r "$REC" rk4.vmimg && one_line &&
   cmp -s rk.vmimg rk4.vmimg; then pass $t; else fail $t "$(cat err)"; fi

# A rekey that would change nothing is a usage error, --remove-passphrase
# on an image without one fails like --remove-identity matching nothing,
# and an in-place rekey through a symlink rewrites the target, keeping
# the link.  None of the refusals touches the file.
t=rekey_refusals_and_symlink
ok=""
$V seal -q -r "$REC" -o rk5.vmimg raw.bin 2>/dev/null || ok="$ok seal"
cp rk5.vmimg rk5.orig
run 2 $V rekey -i id.key rk5.vmimg || ok="$ok nothing:rc=$rc"
grep -q 'nothing to change' err || ok="$ok nothing:$(head -n 1 err)"
run 1 $V rekey -i id.key --remove-passphrase rk5.vmimg || ok="$ok rmpass:rc=$rc"
one_line && grep -q 'no passphrase key slot to remove' err || ok="$ok rmpass:$(cat err)"
cmp -s rk5.vmimg rk5.orig || ok="$ok file-changed"
ln -s rk5.vmimg rk5.link
run 0 $V rekey -q -i id.key --new-passphrase-file new.txt --kdf-mem 8 --kdf-ops 1 rk5.link ||
    ok="$ok link:rc=$rc $(cat err)"
[ -L rk5.link ] && [ "$(readlink rk5.link)" = rk5.vmimg ] || ok="$ok link-replaced"
$V verify -q --passphrase-file new.txt rk5.vmimg 2>/dev/null || ok="$ok target-not-rekeyed"
[ -z "$ok" ] && pass $t || fail $t "$ok"

# rekey copies the payload untouched but reads it as it copies: a
# truncated or damaged image is refused, never rewritten (in place or -o).
t=rekey_truncated_refused
ok=""
$V seal -q -r "$REC" -o rk6.vmimg raw.bin 2>/dev/null || ok="$ok seal"
head -c $(( $(stat -c %s rk6.vmimg) - 100 )) rk6.vmimg > rk6.cut
cp rk6.cut rk6.orig
run 1 $V rekey -i id.key --new-passphrase-file new.txt --kdf-mem 8 --kdf-ops 1 rk6.cut ||
    ok="$ok inplace:rc=$rc"
one_line && grep -q 'truncated.*rk6.cut left unchanged' err || ok="$ok msg:$(cat err)"
cmp -s rk6.cut rk6.orig || ok="$ok rewritten"
run 1 $V rekey -i id.key --new-passphrase-file new.txt --kdf-mem 8 --kdf-ops 1 \
    -o rk6.out rk6.cut || ok="$ok -o:rc=$rc"
[ ! -e rk6.out ] && [ ! -e rk6.out.partial ] || ok="$ok output-left"
[ -z "$ok" ] && pass $t || fail $t "$ok"

# ---- faults: nothing under the final name ----------------------------
t=full_filesystem
mkdir -p full
if mount -t tmpfs -o size=2m tmpfs full 2>/dev/null; then
    if run 1 $V seal -q -r "$REC" -o full/img.vmimg data.bin && one_line &&
       grep -q 'No space left on device' err && [ ! -e full/img.vmimg ] &&
       [ -z "$(ls full)" ]; then pass $t
    else fail $t "rc=$rc $(cat err) files: $(ls full)"; fi
    umount full
else skip $t "cannot mount a tmpfs (not root?)"; fi

t=unwritable_target
mkdir -p ro
if mount -t tmpfs -o size=1m tmpfs ro 2>/dev/null && mount -o remount,ro ro; then
    if run 1 $V seal -q -r "$REC" -o ro/img data.bin && one_line &&
       grep -q 'Read-only file system' err && [ -z "$(ls ro)" ]; then pass $t
    else fail $t "rc=$rc $(cat err)"; fi
    umount ro
else skip $t "cannot mount a tmpfs (not root?)"; fi

t=existing_target
echo keep > exists.vmimg
if run 1 $V seal -q -r "$REC" -o exists.vmimg data.bin && one_line &&
   grep -q 'already exists' err && [ "$(cat exists.vmimg)" = keep ]; then pass $t
else fail $t "$(cat err)"; fi

t=killed_sigterm
{
( head -c 5M data.bin; sleep 30 ) | $V seal -q -r "$REC" -o term.vmimg 2>err &
sleep 1
pkill -TERM -f "seal -q -r $REC -o term.vmimg"
sleep 0.5
pkill -f "sleep 30" 2>/dev/null
wait 2>/dev/null
if [ ! -e term.vmimg ] && [ ! -e term.vmimg.partial ]; then pass $t
else fail $t "left: $(ls term.*)"; fi
pkill -f "sleep 30" 2>/dev/null
} 2>/dev/null

t=killed_sigkill
{
( head -c 5M data.bin; sleep 30 ) | $V seal -q -r "$REC" -o kill.vmimg 2>err &
sleep 1
pkill -KILL -f "seal -q -r $REC -o kill.vmimg"
sleep 0.5
pkill -f "sleep 30" 2>/dev/null
wait 2>/dev/null
pkill -f "sleep 30" 2>/dev/null
} 2>/dev/null
# SIGKILL cannot clean up: the .partial stays, never the final name, and
# the next run replaces the stale .partial.
if [ ! -e kill.vmimg ] && [ -e kill.vmimg.partial ] &&
   head -c 1M data.bin | $V seal -q -r "$REC" -o kill.vmimg 2>err &&
   [ -e kill.vmimg ] && [ ! -e kill.vmimg.partial ] &&
   $V verify -q -i id.key kill.vmimg; then pass $t
else fail $t "$(ls kill.*) $(cat err)"; fi

t=broken_pipe
set -o pipefail
$V seal -q -r "$REC" data.bin 2>err | head -c 1000 > /dev/null
rc=$?
set +o pipefail
if [ $rc = 1 ] && one_line && grep -q 'Broken pipe' err; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

# ---- split sets: --split SIZE, read back as one stream ------------------
# A FAT32 stick holds no file of 4 GiB: the stream cut into pieces
# NAME.000, NAME.001, ..., each durable, NAME.000 renamed last.
head -c 3500000 /dev/urandom > sp.bin
pieces() { ls "$1".[0-9][0-9][0-9] 2>/dev/null | wc -l; }

t=split_seal_read_back
ok=""
run 0 $V seal -q --split 1M -r "$REC" -o sp.vmimg sp.bin || ok="$ok seal:rc=$rc:$(cat err)"
[ "$(pieces sp.vmimg)" = 4 ] && [ ! -e sp.vmimg ] || ok="$ok pieces:$(ls sp.vmimg*)"
for f in sp.vmimg.000 sp.vmimg.001 sp.vmimg.002; do
    [ "$(stat -c '%s %a' $f)" = "1048576 600" ] || ok="$ok $f:$(stat -c '%s %a' $f)"
done
[ -z "$(ls | grep 'sp.vmimg.*partial')" ] || ok="$ok partial-left"
run 0 $V verify -i id.key sp.vmimg && grep -q '^sp.vmimg: OK' out || ok="$ok verify:$(cat err)"
run 0 $V verify -i id.key sp.vmimg.000 && grep -q '^sp.vmimg.000: OK' out ||
    ok="$ok verify.000:$(cat err)"
run 0 $V info -i id.key sp.vmimg && grep -q '^content: *sp.bin' out || ok="$ok info:$(cat err)"
run 0 $V unseal -i id.key -o sp.back sp.vmimg && cmp -s sp.bin sp.back || ok="$ok unseal:$(cat err)"
run 0 $V unseal -i id.key sp.vmimg.000 && cmp -s sp.bin out || ok="$ok unseal.000"
[ -z "$ok" ] && pass $t || fail $t "$ok"

# The set read is the stream written: byte for byte a plain seal's layout
# (the same header and chunks, cut), so cat of the pieces is an image too.
t=split_is_the_stream_cut
cat sp.vmimg.000 sp.vmimg.001 sp.vmimg.002 sp.vmimg.003 > sp.cat
if run 0 $V verify -i id.key sp.cat && [ "$(stat -c %s sp.cat)" = \
       "$(( $(stat -c %s sp.vmimg.003) + 3 * 1048576 ))" ]; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=split_usage_errors
ok=""
for bad in 1000K 0 4G 5G 1.5G 12X -1M ""; do
    run 2 $V seal --split "$bad" -r "$REC" -o x.vmimg sp.bin ||
        ok="$ok $bad:rc=$rc"
    grep -q "bad --split '$bad' (1M..4G less one byte" err || ok="$ok $bad:$(head -1 err)"
done
run 2 $V seal --split 1M -r "$REC" sp.bin && grep -q -- '--split needs -o FILE' err ||
    ok="$ok stdout:rc=$rc"
run 2 "$ROOT/build/vmsave" --split 1M -r "$REC" dom - &&
    grep -q -- "--split needs a FILE, not '-'" err || ok="$ok vmsave-:rc=$rc $(cat err)"
run 2 "$ROOT/build/vmsave" --split 512K -r "$REC" dom x.vmimg &&
    grep -q "bad --split '512K'" err || ok="$ok vmsave-small:rc=$rc"
run 0 $V seal -q --split 4095M -r "$REC" -o max.vmimg raw.bin && [ -e max.vmimg.000 ] ||
    ok="$ok 4095M:rc=$rc"
run 0 $V seal -q --split 4294967295 -r "$REC" -o max2.vmimg raw.bin || ok="$ok 4G-1:rc=$rc"
ls x.vmimg* >/dev/null 2>&1 && ok="$ok x.vmimg-written"
[ -z "$ok" ] && pass $t || fail $t "$ok"

t=split_missing_middle_piece
mkdir -p spm && cp sp.vmimg.* spm/ && rm spm/sp.vmimg.001
if run 1 $V verify -i id.key spm/sp.vmimg && one_line &&
   grep -q 'spm/sp.vmimg.001: missing from the set (spm/sp.vmimg.003 follows)' err &&
   run 1 $V unseal -i id.key -o spm.out spm/sp.vmimg.000 && one_line &&
   grep -q 'spm/sp.vmimg.001: missing' err && [ ! -e spm.out ]; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=split_missing_last_piece
mkdir -p spl && cp sp.vmimg.* spl/ && rm spl/sp.vmimg.003
if run 1 $V verify -i id.key spl/sp.vmimg && one_line &&
   grep -q '^vmimage: spl/sp.vmimg.002: truncated: the set ends here' err; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=split_piece_symlink_refused
mkdir -p sps && cp sp.vmimg.* sps/ && mv sps/sp.vmimg.002 sps/elsewhere &&
    ln -s elsewhere sps/sp.vmimg.002
if run 1 $V verify -i id.key sps/sp.vmimg && one_line &&
   grep -q 'sps/sp.vmimg.002: a symbolic link, not a piece of the set: refused' err
then pass $t; else fail $t "rc=$rc $(cat err)"; fi

# a piece of another image (same key, same signer) spliced in: the stream's
# own authentication refuses it, naming the pieces its chunk spans
t=split_spliced_piece_refused
mkdir -p spx && cp sp.vmimg.* spx/
$V seal -q --split 1M -r "$REC" -o spo.vmimg sp.bin 2>/dev/null
cp spo.vmimg.002 spx/sp.vmimg.002
if run 1 $V verify -i id.key spx/sp.vmimg && one_line &&
   grep -q '^vmimage: spx/sp.vmimg.00[0-2]\( to .00[1-3]\)\?: chunk [0-9]* @0x' err
then pass $t "$(cat err)"; else fail $t "rc=$rc $(cat err)"; fi

t=split_stale_tail_removed
mkdir -p spt
$V seal -q --split 1M -r "$REC" -o spt/s.vmimg sp.bin 2>/dev/null   # 4 pieces
rm spt/s.vmimg.000                    # an older set, its first piece gone
head -c 1500000 sp.bin > sp.short
if run 0 $V seal -q --split 1M -r "$REC" -o spt/s.vmimg sp.short &&
   [ "$(ls spt)" = "$(printf 's.vmimg.000\ns.vmimg.001')" ] &&
   run 0 $V unseal -i id.key spt/s.vmimg && cmp -s out sp.short; then pass $t
else fail $t "rc=$rc $(cat err) left: $(ls spt)"; fi

t=split_existing_set_refused
if run 1 $V seal -q --split 1M -r "$REC" -o sp.vmimg sp.bin && one_line &&
   grep -q 'sp.vmimg.000: already exists' err && $V verify -q -i id.key sp.vmimg
then pass $t; else fail $t "rc=$rc $(cat err)"; fi

t=split_rekey
ok=""
run 1 $V rekey -i id.key -r "$($V keygen -y other.key)" sp.vmimg && one_line &&
    grep -q 'sp.vmimg: a split set is not rewritten in place: give -o NEW' err ||
    ok="$ok inplace:rc=$rc $(cat err)"
run 0 $V rekey -i id.key -r "$($V keygen -y other.key)" --split 2M -o spr.vmimg sp.vmimg ||
    ok="$ok -o:rc=$rc $(cat err)"
[ "$(pieces spr.vmimg)" = 2 ] || ok="$ok pieces:$(ls spr.vmimg*)"
run 0 $V unseal -i other.key spr.vmimg && cmp -s out sp.bin || ok="$ok unseal:$(cat err)"
[ -z "$ok" ] && pass $t || fail $t "$ok"

t=split_full_filesystem
mkdir -p full
if mount -t tmpfs -o size=1600k tmpfs full 2>/dev/null; then
    if run 1 $V seal -q --split 1M -r "$REC" -o full/img.vmimg sp.bin && one_line &&
       grep -q 'full/img.vmimg.001.partial: write: No space left on device' err &&
       [ -z "$(ls full)" ]; then pass $t
    else fail $t "rc=$rc $(cat err) files: $(ls full)"; fi
    umount full
else skip $t "cannot mount a tmpfs (not root?)"; fi

t=split_killed_sigkill
{
( head -c 3000000 sp.bin; sleep 30 ) |
    $V seal -q --split 1M --chunk-size 65536 -r "$REC" -o skill.vmimg 2>err &
sleep 1
pkill -KILL -f "seal -q --split 1M --chunk-size 65536 -r $REC -o skill.vmimg"
sleep 0.5
pkill -f "sleep 30" 2>/dev/null
wait 2>/dev/null
pkill -f "sleep 30" 2>/dev/null
} 2>/dev/null
# no piece under its final name; the next run replaces the stale pieces
if [ -z "$(ls | grep '^skill.vmimg.[0-9]*$')" ] && [ -e skill.vmimg.000.partial ] &&
   [ -e skill.vmimg.001.partial ] &&
   run 0 $V seal -q --split 1M -r "$REC" -o skill.vmimg sp.bin &&
   [ -z "$(ls | grep '^skill.*partial')" ] && $V verify -q -i id.key skill.vmimg
then pass $t; else fail $t "$(ls skill.*) $(cat err)"; fi

t=split_killed_sigterm
{
( head -c 2500000 sp.bin; sleep 30 ) | $V seal -q --split 1M -r "$REC" -o sterm.vmimg 2>err &
sleep 1
pkill -TERM -f "seal -q --split 1M -r $REC -o sterm.vmimg"
sleep 0.5
pkill -f "sleep 30" 2>/dev/null
wait 2>/dev/null
pkill -f "sleep 30" 2>/dev/null
} 2>/dev/null
if [ -z "$(ls | grep '^sterm')" ]; then pass $t; else fail $t "left: $(ls sterm*)"; fi

# --keep counts a set as one image and removes all of its pieces (a tiny
# QEMU with no guest is the domain: vmsave --checkpoint of it is quick)
t=split_keep_removes_whole_sets
if command -v qemu-system-x86_64 >/dev/null; then
    export VMCKPT_RUNDIR=$T/run VMCKPT_LOGDIR=$T/log
    mkdir -p kp
    for y in 2020 2021; do
        $V seal -q --split 1M -r "$REC" -o kp/db-${y}0101T000000.vmimg sp.bin 2>/dev/null
    done
    $V seal -q -r "$REC" -o kp/db-20190101T000000.vmimg raw.bin 2>/dev/null
    "$ROOT/build/vmctl" start tiny -machine none -display none -nodefaults -m 16 \
        >/dev/null 2>err
    if run 0 "$ROOT/build/vmsave" --checkpoint --split 1M --keep 2 --json -r "$REC" \
           tiny "kp/db-%Y%m%dT%H%M%S.vmimg" &&
       python3 - out kp <<'PY'
import json, os, sys
j = json.loads(open(sys.argv[1]).read())
left = sorted(os.listdir(sys.argv[2]))
assert sorted(j["removed_files"]) == ["db-20190101T000000.vmimg",
                                      "db-20200101T000000.vmimg"], j
assert [f for f in left if f.startswith("db-2021")] == \
    ["db-20210101T000000.vmimg.%03d" % i for i in range(4)], left
assert not [f for f in left if f.startswith(("db-2019", "db-2020"))], left
new = [f for f in left if not f.startswith("db-20")] + \
      [f for f in left if f.startswith("db-2") and f[3:7] > "2021"]
assert new and all(f.endswith(".000") or f[-4] == "." for f in new), left
PY
    then pass $t "$(python3 -c 'import json,sys; print("removed", json.load(open(sys.argv[1]))["removed_files"])' out)"
    else fail $t "rc=$rc $(cat err out) $(ls kp)"; fi
    "$ROOT/build/vmctl" destroy tiny >/dev/null 2>&1
    unset VMCKPT_RUNDIR VMCKPT_LOGDIR
else skip $t "no qemu-system-x86_64"; fi

# ---- legacy xl save files: seal --from-xl, unseal --to-xl ------------
t=xl_roundtrip
python3 - <<'PY'
import struct, json
cfg = json.dumps({"c_info": {"type": "pv", "name": "wl1",
                             "uuid": "0b8f2a44-3c2b-4d0e-9a6c-8c3e2f1d9a77"},
                  "b_info": {"max_vcpus": 1, "max_memkb": 131072}}).encode() + b"\0"
magic = b"Xen saved domain, xl format\n \0 \r"
hdr = magic + struct.pack("<IIII", 0x01020304, 3, 0, 4 + len(cfg)) + \
      struct.pack("<I", len(cfg)) + cfg
open("fake.xl", "wb").write(hdr + b"LibxlFmt" + bytes(range(256)) * 3000)
open("old.xl", "wb").write(magic + struct.pack("<IIII", 0x01020304, 1, 0, 8) +
                           struct.pack("<I", 4) + b"cfg\0" + b"x" * 100)
PY
if $V seal -q --from-xl -r "$REC" -o xl.vmimg fake.xl 2>err &&
   $V info -i id.key xl.vmimg > out 2>>err && grep -q '^domain:      wl1 ' out &&
   grep -q 'stream libxl-v2' out && grep -q 'guest:       128.0 MiB, 1 vCPUs, pv' out &&
   $V unseal --to-xl -i id.key -o back.xl xl.vmimg 2>>err && cmp -s fake.xl back.xl
then pass $t; else fail $t "$(cat err out)"; fi

t=xl_refusals
if run 1 $V seal -q --from-xl -r "$REC" -o old.vmimg old.xl && one_line &&
   grep -q 'only JSON config + libxl stream v2' err && [ ! -e old.vmimg ] &&
   run 1 $V seal -q --from-xl -r "$REC" -o d.vmimg data.bin && one_line &&
   grep -q 'not an xl save file' err &&
   run 1 $V unseal --to-xl -i id.key -o x.xl img.vmimg && one_line &&
   grep -q 'not a Xen libxl image' err && [ ! -e x.xl ]
then pass $t; else fail $t "rc=$rc $(cat err)"; fi
