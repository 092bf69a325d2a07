#!/bin/bash
# attack.sh - vmckpt tried as an attacker would (issue 11, tests/attack/).
#
# The attacker knows the restoring host's public recipient (it is public by
# design) and seals images to it with vmckpt's own writer (forge.c).  Each
# case asserts what the tool says (exit status, one line naming the cause)
# and that nothing was spawned or touched: no marker file written by a
# program the image names, no QEMU started, no instance left in the
# registry.  Prints PASS:/FAIL:/SKIP: lines.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/signing-env.sh"   # a test signing key, trusted
B=$ROOT/build
FORGE=$B/tests/forge
T=$(mktemp -d /tmp/vmc-attack.XXXXXX)
export VMCKPT_RUNDIR=$T/run VMCKPT_LOGDIR=$T/log
unset VMCKPT_ALLOW_DIRS
trap 'for d in "$VMCKPT_RUNDIR"/[0-9]*; do [ -f "$d/qemu.pid" ] && kill -9 "$(cat "$d/qemu.pid")" 2>/dev/null; done; rm -rf "$T"' EXIT
cd "$T"

pass() { echo "PASS: attack/$1${2:+ ($2)}"; }
fail() { echo "FAIL: attack/$1: $2"; }
skip() { echo "SKIP: attack/$1: $2"; }

run() {
    local want=$1; shift
    "$@" >out 2>err
    rc=$?
    [ "$rc" = "$want" ]
}
one_line() { [ "$(grep -c '' err)" = 1 ]; }
MARK=$T/pwned
# nothing spawned, nothing touched: no marker, no instance, no QEMU of ours
untouched() {
    WHY=""
    [ -e "$MARK" ] && WHY="$WHY the marker $MARK exists;"
    [ -n "$(ls "$VMCKPT_RUNDIR" 2>/dev/null | grep -v '^\.')" ] &&
        WHY="$WHY an instance is left in the registry: $(ls "$VMCKPT_RUNDIR");"
    pgrep -f -- "$T" >/dev/null && WHY="$WHY a process names $T: $(pgrep -af -- "$T" | head -2);"
    [ -z "$WHY" ]
}

for t in "$FORGE" "$B/vmrestore" "$B/vmimage"; do
    [ -x "$t" ] || { echo "FAIL: attack/setup: $t is not built (make test-bins)"; exit 0; }
done
REC=$("$B/vmimage" keygen -o host.key)
mkdir -p guest
: > guest/vmlinuz
printf '#!/bin/sh\ntouch %s\n' "$MARK" > evil.sh
chmod 755 evil.sh
BASE='"-m","64","-display","none","-nodefaults","-nic","none"'

# ---- 0. who made it: signatures (format 2) ----------------------------------
# The restoring host trusts the test signer ($VMCKPT_TRUSTED_SIGNERS); an
# attacker holds a throwaway signing key of its own.
ROGUE=$("$B/vmimage" keygen --sign -o rogue.key)
TRUSTED=$(grep -m1 '^vmcs1' "$VMCKPT_TRUSTED_SIGNERS" | cut -d' ' -f1)
GOOD="{\"argv\":[$BASE]}"

t=untrusted_signer_refused_before_anything
FORGE_SIGN=rogue.key "$FORGE" "$REC" rogue.vmimg qemu \
    "{\"qemu\":\"/bin/sh\",\"cwd\":\"/\",\"argv\":[\"-c\",\"touch $MARK\"]}"
if run 1 "$B/vmrestore" -i host.key rogue.vmimg && one_line &&
   grep -qF "vmrestore: rogue.vmimg: signed by $ROGUE, which is not a trusted signer" err &&
   grep -q "no domain created$" err && untouched; then pass $t "$(cut -c1-150 err)"
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=untrusted_signer_asks_no_passphrase
FORGE_SIGN=rogue.key "$FORGE" "$REC" rogue2.vmimg qemu "$GOOD"
if run 1 "$B/vmrestore" -P rogue2.vmimg </dev/null && one_line &&
   grep -q "not a trusted signer" err && untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=unsigned_image_refused
FORGE_SIGN=none "$FORGE" "$REC" v1.vmimg qemu "$GOOD"
if run 1 "$B/vmrestore" -i host.key v1.vmimg && one_line &&
   grep -q "unsigned (format 1).*--allow-unsigned" err && untouched
then pass $t "$(cut -c1-120 err)"
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=unsigned_allowed_still_checks_the_config
FORGE_SIGN=none "$FORGE" "$REC" v1sh.vmimg qemu \
    "{\"qemu\":\"/bin/sh\",\"cwd\":\"/\",\"argv\":[\"-c\",\"touch $MARK\"]}"
if run 1 "$B/vmrestore" --allow-unsigned -i host.key v1sh.vmimg && one_line &&
   grep -q -- "-c: not an option the restore policy knows" err && untouched
then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=golden_v1_needs_the_opt_in
cp "$ROOT/tests/golden/keys/identity.key" gold.key && chmod 600 gold.key
if run 1 "$B/vmrestore" -i gold.key "$ROOT/tests/golden/v1-x25519.vmimg" &&
   one_line && grep -q "unsigned (format 1)" err && untouched &&
   run 0 "$B/vmimage" verify -i gold.key "$ROOT/tests/golden/v1-x25519.vmimg" &&
   grep -q "signer none: unsigned" out; then pass $t
else fail $t "rc=$rc $(cat out err) $WHY"; fi

# A recipient can read a trusted image and seal its own: it then names
# the recipient's key as signer, which the restoring host does not trust.
t=recipient_resigns
"$FORGE" "$REC" good.vmimg qemu "$GOOD"
if "$B/vmimage" rekey --rotate -i host.key -t "$TRUSTED" -r "$REC" \
       --signing-key rogue.key -o resigned.vmimg good.vmimg 2>rk.err &&
   run 1 "$B/vmrestore" -i host.key resigned.vmimg && one_line &&
   grep -qF "signed by $ROGUE, which is not a trusted signer" err && untouched
then pass $t
else fail $t "rc=$rc $(cat rk.err err) $WHY"; fi

# The header names the trusted signer, the signature is the rogue's.
t=signer_key_swapped_in_the_header
python3 - rogue2.vmimg swapped.vmimg "$TRUSTED" <<'PY'
import sys, base64
img = bytearray(open(sys.argv[1], "rb").read())
s = sys.argv[3][len("vmcs1"):]
pk = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))[:32]
img[64:96] = pk
open(sys.argv[2], "wb").write(img)
PY
if run 1 "$B/vmrestore" -i host.key swapped.vmimg && one_line &&
   grep -qF "signature does not verify with the signer it names ($TRUSTED)" err &&
   untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

# Chunks of another stream by the same trusted signer: the stream id in
# every chunk signature tells them apart.
t=chunks_spliced_from_another_stream
"$FORGE" "$REC" other.vmimg qemu "$GOOD"
python3 - good.vmimg other.vmimg spliced.vmimg <<'PY'
import sys, struct
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
ha = struct.unpack_from("<I", a, 12)[0]; hb = struct.unpack_from("<I", b, 12)[0]
open(sys.argv[3], "wb").write(a[:ha] + b[hb:])
PY
if run 1 "$B/vmrestore" -i host.key spliced.vmimg && one_line &&
   grep -q "signature does not verify" err && untouched; then pass $t "$(cut -c1-140 err)"
else fail $t "rc=$rc $(cat err) $WHY"; fi

# The list of whom to trust is only as good as who may change it; a line
# that is no signer is named by its number, never taken as a key.
t=trusted_signers_file_writable_by_others
cp "$VMCKPT_TRUSTED_SIGNERS" loose.trust && chmod 666 loose.trust
printf '# ok\n%s\nvmcs1-not-a-key host\n' "$TRUSTED" > junk.trust
if run 1 "$B/vmrestore" --trusted-signers loose.trust -i host.key good.vmimg &&
   one_line && grep -q "loose.trust: writable by another user than root or you (mode 0666" err &&
   untouched &&
   run 1 "$B/vmrestore" --trusted-signers junk.trust -i host.key good.vmimg &&
   one_line && grep -q "junk.trust:3: not a valid signer" err && untouched &&
   run 1 "$B/vmrestore" --trusted-signers missing.trust -i host.key good.vmimg &&
   one_line && grep -q "missing.trust: No such file" err && untouched
then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=trusted_image_restores_here
if run 0 "$B/vmimage" verify -i host.key good.vmimg &&
   grep -qF "signer $TRUSTED (trusted here)" out; then pass $t
else fail $t "rc=$rc $(cat out err)"; fi

# ---- 1. the reported attack: the image names /bin/sh as its hypervisor ----
t=config_names_a_shell
"$FORGE" "$REC" sh.vmimg qemu \
    "{\"qemu\":\"/bin/sh\",\"cwd\":\"/\",\"argv\":[\"-c\",\"touch $MARK\"]}"
if run 1 "$B/vmrestore" -i host.key sh.vmimg && one_line &&
   grep -q "^vmrestore: sh.vmimg: -c: not an option the restore policy knows (refused); no domain created$" err &&
   untouched; then pass $t "$(cat err)"
else fail $t "rc=$rc $(cat err) $WHY"; fi

# The binary and directory are this host's: an image naming its own QEMU
# (here a script that writes the marker) gets the host's QEMU, which then
# refuses the junk stream.  The script never runs.
t=config_names_its_own_binary
"$FORGE" "$REC" bin.vmimg qemu "{\"qemu\":\"$T/evil.sh\",\"cwd\":\"/\",\"argv\":[$BASE]}"
if run 1 "$B/vmrestore" -i host.key bin.vmimg && one_line &&
   grep -q "qemu refused the stream\|QEMU failed\|qemu exited" err && untouched
then pass $t "$(cut -c1-120 err)"
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=config_json_is_escaped
"$FORGE" "$REC" esc.vmimg qemu "{\"argv\":[$BASE,\"-append\",\"\\u001b[2Jx\\u0085\"]}"
if run 0 "$B/vmimage" config --json -i host.key esc.vmimg && ! grep -q $'\x1b' out &&
   grep -qiF '\u001b[2Jx\u0085' out &&
   run 0 "$B/vmimage" config -i host.key esc.vmimg && ! grep -q $'\x1b' out &&
   grep -qF "'\x1b[2Jx\xc2\x85'" out; then pass $t
else fail $t "rc=$rc $(od -c out | head -5)"; fi

t=refusal_message_is_escaped
"$FORGE" "$REC" esc2.vmimg qemu "{\"argv\":[$BASE,\"-kernel\",\"/x\\u001b]2;owned\\u0007\"]}"
if run 1 "$B/vmrestore" -i host.key esc2.vmimg && one_line && ! grep -q $'\x1b' err &&
   grep -qF -- '-kernel /x\x1b]2;owned\x07' err && untouched; then pass $t
else fail $t "rc=$rc $(od -c err | head -5)"; fi

t=name_cannot_add_qemu_options
FORGE_NAME='evil,debug-threads=on,process=x' "$FORGE" "$REC" nm.vmimg qemu "{\"argv\":[$BASE]}"
if run 0 "$B/vmimage" config -i host.key nm.vmimg &&
   grep -qF -- '-name guest=evil,,debug-threads=on,,process=x ' out; then pass $t
else fail $t "rc=$rc $(cat out err)"; fi

t=config_show_uses_this_hosts_binary
if run 0 "$B/vmimage" config -i host.key bin.vmimg && ! grep -q evil.sh out &&
   grep -q '^qemu-system-x86_64 -m 64 ' out && grep -q -- '-sandbox on,obsolete=deny' out &&
   grep -q '^policy:  accepted$' out; then pass $t
else fail $t "rc=$rc $(cat out err)"; fi

# ---- 2. every option that reaches outside the VM, refused by name ---------
while IFS='|' read -r name opt val needle; do
    case "$name" in '#'*|'') continue ;; esac
    t="qemu_option_$name"
    v=${val//MARK/$MARK}
    v=${v//\"/\\\"}                 # a JSON string
    rm -rf "$VMCKPT_RUNDIR"
    "$FORGE" "$REC" opt.vmimg qemu "{\"argv\":[$BASE,\"$opt\"${v:+,\"$v\"}]}"
    if run 1 "$B/vmrestore" -i host.key opt.vmimg && one_line &&
       grep -qF -- "$needle" err && untouched; then pass "$t"
    else fail "$t" "rc=$rc $(cat err) $WHY"; fi
done <<'EOF'
# name|option|value|substring of the refusal
tap_script|-netdev|tap,id=t0,script=MARK|-netdev tap,id=t0,script=
bridge_helper|-netdev|bridge,id=b0,br=br0|network backend 'bridge'
user_hostfwd|-netdev|user,id=n0,hostfwd=tcp::2222-:22|key 'hostfwd'
user_smb|-netdev|user,id=n0,smb=/|key 'smb'
plugin|-plugin|/tmp/evil.so|-plugin: loads a host library
readconfig|-readconfig|/etc/qemu.conf|-readconfig: reads a host config
add_fd|-add-fd|fd=3,set=1|-add-fd: names host file descriptors
sandbox_off|-sandbox|off|-sandbox: set by vmckpt itself
runas|-runas|root|-runas: set by vmckpt itself
run_with|-run-with|user=root|-run-with: changes QEMU's user
daemonize|-daemonize||-daemonize: detaches QEMU
chardev_socket|-chardev|socket,id=c,path=/run/x.sock,server=on|back end 'socket'
chardev_file|-chardev|file,id=c,path=MARK|back end 'file'
serial_file|-serial|file:MARK|only 'none'
monitor_tcp|-monitor|tcp:127.0.0.1:4444,server=on,wait=off|only 'none'
qmp|-qmp|tcp:127.0.0.1:4444|-qmp: set by vmckpt itself
fw_cfg_file|-fw_cfg|name=opt/x,file=/etc/shadow|outside the allowed directories
drive_host_file|-drive|file=/etc/shadow,format=raw,if=virtio|outside the allowed directories
drive_host_device|-drive|file=/dev/null,format=raw|not a regular file
drive_nbd|-drive|file=nbd:127.0.0.1:10809,format=raw|a protocol, not a file
blockdev_host_device|-blockdev|driver=host_device,node-name=d,filename=/dev/sda|block driver 'host_device'
kernel_outside|-kernel|/etc/shadow|-kernel /etc/shadow: outside the allowed directories
memory_backend_file|-object|memory-backend-file,id=m,mem-path=/dev/shm/x,size=64M|object 'memory-backend-file'
vfio|-device|vfio-pci,host=0000:01:00.0|device 'vfio-pci'
loader|-device|loader,file=/etc/shadow,addr=0x100000|device 'loader'
device_json|-device|{"driver":"vfio-pci","host":"0000:01:00.0"}|the JSON form is refused
gdb|-gdb|tcp::1234|-gdb: opens a debugger port
vnc|-vnc|:0|only 'none'
virtfs|-virtfs|local,path=/,mount_tag=r,security_model=none|-virtfs: shares a host directory
unknown|-frobnicate||not an option the restore policy knows
EOF

# A host file the admin allowed: the check passes, QEMU starts (and refuses
# the junk stream): the allowed directory is the admin's, not the image's.
t=allowed_dir_is_the_admins
"$FORGE" "$REC" k.vmimg qemu "{\"argv\":[$BASE,\"-kernel\",\"$T/guest/vmlinuz\"]}"
if run 1 "$B/vmrestore" -i host.key k.vmimg && grep -q 'outside the allowed directories' err &&
   run 1 "$B/vmrestore" -i host.key --allow-dir "$T/guest" k.vmimg &&
   ! grep -q 'restore policy' err && untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=allowed_dir_symlink_escape
ln -s /etc guest/etc
"$FORGE" "$REC" l.vmimg qemu "{\"argv\":[$BASE,\"-initrd\",\"$T/guest/etc/shadow\"]}"
if run 1 "$B/vmrestore" -i host.key --allow-dir "$T/guest" l.vmimg && one_line &&
   grep -q 'outside the allowed directories' err && untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

# ---- 3. the admin's own config: used instead of the recorded one, and
# checked the same way ----------------------------------------------------
t=local_config_replaces_the_recorded
printf '{"argv":[%s]}\n' "$BASE" > good.json
if run 1 "$B/vmrestore" -i host.key --config good.json sh.vmimg &&
   ! grep -q 'restore policy' err && untouched &&
   printf '{"argv":[%s,"-plugin","/tmp/x.so"]}\n' "$BASE" > bad.json &&
   run 1 "$B/vmrestore" -i host.key --config bad.json sh.vmimg &&
   grep -q -- '-plugin: loads a host library' err && untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=allowed_dirs_file_writable_by_others
# the policy file is root's: one that another user can write widens nothing
if [ -w /etc ] && [ ! -e /etc/vmckpt/allowed_dirs ]; then
    mkdir -p /etc/vmckpt
    printf '%s\n' "$T/guest" > /etc/vmckpt/allowed_dirs
    chmod 666 /etc/vmckpt/allowed_dirs
    run 1 "$B/vmrestore" -i host.key k.vmimg
    ok=$?
    msg=$(cat err)
    rm -f /etc/vmckpt/allowed_dirs
    if [ $ok = 0 ] && grep -q 'allowed_dirs: writable by another user' err; then pass $t
    else fail $t "rc=$rc $msg"; fi
else
    skip $t "/etc/vmckpt/allowed_dirs exists or /etc is not writable"
fi

# ---- 4. Xen: the libxl config keys that run or pass through --------------
while IFS='|' read -r name json needle; do
    case "$name" in '#'*|'') continue ;; esac
    t="xen_config_$name"
    "$FORGE" "$REC" x.vmimg xen "$json"
    if run 1 "$B/vmimage" config -i host.key x.vmimg && grep -qF -- "$needle" err &&
       grep -q '^policy:  refused$' out && untouched; then pass "$t"
    else fail "$t" "rc=$rc $(cat err) $WHY"; fi
    if "$B/vmrestore" --help | grep -q 'Backends in this build: .*xen'; then
        t="xen_restore_$name"
        if run 1 "$B/vmrestore" -i host.key x.vmimg && one_line &&
           grep -qF -- "$needle" err && untouched; then pass "$t"
        else fail "$t" "rc=$rc $(cat err) $WHY"; fi
    fi
done <<'EOF'
bootloader|{"c_info":{"name":"evil"},"b_info":{"type.pv":{"bootloader":"/bin/sh","bootloader_args":["-c","id"]}}}|bootloader: runs a program in dom0
device_model|{"c_info":{"name":"evil"},"b_info":{"device_model":"/tmp/evil"}}|device_model: names the device-model binary
stubdomain|{"c_info":{"name":"evil"},"b_info":{"device_model_stubdomain":"True","stubdomain_kernel":"/etc/shadow"}}|refused by the restore policy
nic_script|{"c_info":{"name":"evil"},"nics":[{"bridge":"xenbr0","script":"/tmp/evil"}]}|nics.script: runs a hotplug script
disk_script|{"c_info":{"name":"evil"},"disks":[{"vdev":"xvda","script":"/tmp/evil"}]}|disks.script: runs a hotplug script
pci|{"c_info":{"name":"evil"},"pcidevs":[{"func":0,"dev":1,"bus":2}]}|passes host PCI devices through
disk_outside|{"c_info":{"name":"evil"},"disks":[{"pdev_path":"/etc/shadow","vdev":"xvda"}]}|outside the allowed directories
EOF

# ---- 5. --keep in a shared sticky directory -------------------------------
# Another user plants names the pattern makes (a "newer" image of theirs, a
# symlink to a file of root's); root's retention must touch only root's own
# images, by the time in their names, and say what it left.
t=retention_sticky_directory
if command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
    S=$T/sticky
    mkdir -p "$S" && chmod 1777 "$S"
    chmod 755 "$T"
    ID=$("$B/vmctl" start tiny -machine none -display none -nodefaults -m 16 2>err)
    "$B/vmsave" --checkpoint -r "$REC" tiny "$S/db-20200101T000000.vmimg" 2>>err
    cp -p "$S/db-20200101T000000.vmimg" "$S/db-20210101T000000.vmimg"
    echo text > "$S/db-20190101T000000.vmimg"
    cp "$S/db-20200101T000000.vmimg" attacker.vmimg && chmod 644 attacker.vmimg
    as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
    as_nobody cp attacker.vmimg "$S/db-20990101T000000.vmimg"
    as_nobody ln -s /etc/passwd "$S/db-20300101T000000.vmimg"
    touch -d 2100-01-01 "$S/db-20200101T000000.vmimg"    # mtime means nothing
    cp -p /etc/passwd passwd.before
    if run 0 "$B/vmsave" --checkpoint --keep 2 --json -r "$REC" tiny \
           "$S/db-%Y%m%dT%H%M%S.vmimg" &&
       python3 - out "$S" <<'PY' && cmp -s /etc/passwd passwd.before
import json, os, sys
j = json.loads(open(sys.argv[1]).read())
left = sorted(os.listdir(sys.argv[2]))
assert j["removed_files"] == ["db-20200101T000000.vmimg"], j
why = {s["file"]: s["why"] for s in j["skipped"]}
assert why == {"db-20990101T000000.vmimg": "owned by another user",
               "db-20300101T000000.vmimg": "not a regular file",
               "db-20190101T000000.vmimg": "not a vmckpt image"}, why
assert "db-20210101T000000.vmimg" in left and "db-20990101T000000.vmimg" in left, left
assert "db-20200101T000000.vmimg" not in left, left
PY
    then pass $t "$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("removed", j["removed_files"], "left", [s["file"] for s in j["skipped"]])' out)"
    else fail $t "rc=$rc $(cat out err) $(ls -l "$S")"; fi
    t=retention_inexact_pattern
    if run 2 "$B/vmsave" --checkpoint --keep 2 -r "$REC" tiny "$S/db-%u-%Y.vmimg" &&
       grep -q -- '--keep: %u in the pattern cannot be matched exactly' err; then pass $t
    else fail $t "rc=$rc $(cat err)"; fi
    "$B/vmctl" destroy tiny >/dev/null 2>&1
else
    skip $t "no setpriv or no user nobody"
fi

# ---- 8. the public label is untrusted text ---------------------------------
# Shown without a key, so anyone who can write the file can set it: escape
# sequences must not reach the terminal, and a label must be UTF-8.
t=label_with_escapes
"$B/vmimage" seal -r "$REC" --label LABELLABELLABELLABEL -o lab.vmimg /dev/null 2>/dev/null
python3 - lab.vmimg <<'PY'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
evil = b"\x1b[1A\x1b[2K\rheader OK\x07\x9b"   # 20 octets: CSI, bell, C1
assert len(evil) == 20
open(p, "wb").write(b.replace(b"LABELLABELLABELLABEL", evil))
PY
if run 1 "$B/vmimage" info lab.vmimg && grep -q 'not valid UTF-8' err; then
    # \x9b alone is not UTF-8: refused.  Valid UTF-8 with the same escapes
    # (the C1 byte now a '!') reads, and is shown escaped
    python3 - lab.vmimg <<'PY'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
i = b.find(b"\x1b[1A")
open(p, "wb").write(b[:i+18] + b"\x07!" + b[i+20:])
PY
    if run 0 "$B/vmimage" info lab.vmimg && ! grep -q $'\x1b' out && ! grep -q $'\a' out &&
       grep -qF 'label:       \x1b[1A\x1b[2K\x0dheader OK\x07!' out; then
        pass $t "$(grep label: out)"
    else fail $t "rc=$rc $(od -c out | head -5) $(cat err)"; fi
else fail $t "invalid UTF-8 label: rc=$rc $(cat out err)"; fi

t=label_writer_refuses_controls
if run 1 "$B/vmimage" seal -r "$REC" --label "$(printf 'a\033b')" -o l2.vmimg /dev/null &&
   grep -q 'label: not UTF-8 text, or holds control characters' err && [ ! -e l2.vmimg ]
then pass $t; else fail $t "rc=$rc $(cat err)"; fi

# ---- 7. secrets stay secret -------------------------------------------------
t=identity_passed_as_recipient
SECRET=$(grep '^VMCKPT-SECRET-KEY-1' host.key)
body=${SECRET#VMCKPT-SECRET-KEY-1}
if run 1 "$B/vmimage" seal -r "$SECRET" -o s.vmimg /dev/null && one_line &&
   grep -q 'a secret key was given where a recipient belongs' err &&
   ! grep -qF -- "${body:0:8}" err && [ ! -e s.vmimg ]; then pass $t "$(cat err)"
else fail $t "rc=$rc $(cat err)"; fi

t=recipient_typo_shows_a_prefix_only
if run 1 "$B/vmimage" seal -r "vmc1thisisnotarecipientatallbutlongenoughtoleak" -o s.vmimg /dev/null &&
   grep -q "'vmc1th\.\.\.' (47 characters): not a valid recipient" err &&
   ! grep -q notarecipient err; then pass $t
else fail $t "rc=$rc $(cat err)"; fi

t=identity_file_open_to_others
cp host.key loose.key && chmod 644 loose.key
if run 1 "$B/vmimage" info -i loose.key sh.vmimg && one_line &&
   grep -q 'loose.key: a secret key file open to group or others (mode 0644): refused' err &&
   run 1 "$B/vmrestore" -i loose.key sh.vmimg && untouched; then pass $t
else fail $t "rc=$rc $(cat err) $WHY"; fi

t=no_core_dumps
"$B/vmctl" start tiny -machine none -display none -nodefaults -m 16 >/dev/null 2>&1
"$B/vmctl" console tiny </dev/zero >/dev/null 2>&1 &
cpid=$!
sleep 0.5
lim=$(awk '/Max core file size/ {print $5, $6}' /proc/$cpid/limits 2>/dev/null)
owner=$(stat -c %U /proc/$cpid/fd 2>/dev/null)
kill $cpid 2>/dev/null; wait $cpid 2>/dev/null
"$B/vmctl" destroy tiny >/dev/null 2>&1
# a non-dumpable process's /proc files belong to root; the limit is 0 0
if [ "$lim" = "0 0" ]; then pass $t "RLIMIT_CORE $lim"
else fail $t "vmctl console: core limit '$lim' (owner of /proc/PID/fd: $owner)"; fi

# ---- 9. QEMU runs unprivileged and sandboxed --------------------------------
# A running domain's QEMU: not uid 0, under seccomp; a guest config (here
# through its monitor, as a hostile device model would) that makes QEMU
# spawn a program gets QEMU killed, and the program never runs.
t=qemu_unprivileged_and_sandboxed
rm -rf "$VMCKPT_RUNDIR"
if "$B/vmctl" start tiny -machine none -display none -nodefaults -m 16 >/dev/null 2>err; then
    rd=$("$B/vmctl" rundir tiny)
    pid=$(cat "$rd/qemu.pid")
    uid=$(awk '/^Uid:/ {print $2}' /proc/$pid/status)
    sec=$(awk '/^Seccomp:/ {print $2}' /proc/$pid/status)
    want=0
    [ "$(id -u)" = 0 ] && want=$(id -u vmckpt-qemu 2>/dev/null)
    python3 - "$rd/qmp.sock" "$MARK" <<'PY' >qmp.out 2>&1
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ({"execute": "qmp_capabilities"},
            {"execute": "migrate", "arguments": {"uri": "exec:touch " + sys.argv[2]}}):
    f.write(json.dumps(cmd) + "\n"); f.flush()
    print(f.readline().strip())
PY
    sleep 0.5
    if [ "$uid" != 0 ] && [ "$uid" = "${want:-x}" ] || { [ "$(id -u)" != 0 ] && [ "$uid" = "$(id -u)" ]; }; then
        state=$(awk '/^State:/ {print $2}' /proc/$pid/status 2>/dev/null)
        if [ "$sec" = 2 ] && [ ! -e "$MARK" ] && { [ -z "$state" ] || [ "$state" = Z ]; }; then
            pass $t "uid $uid ($(id -un "$uid" 2>/dev/null)), seccomp $sec; exec: migration killed QEMU, nothing ran"
        else fail $t "seccomp '$sec', marker $([ -e "$MARK" ] && echo written), QEMU state '$state': $(cat qmp.out)"; fi
    else fail $t "QEMU runs as uid $uid (want ${want:-the caller})"; fi
    "$B/vmctl" destroy tiny >/dev/null 2>&1
    rm -rf "$VMCKPT_RUNDIR"
else
    fail $t "vmctl start: $(cat err)"
fi

t=qemu_never_root
if [ "$(id -u)" = 0 ]; then
    if run 1 env VMCKPT_QEMU_USER=no-such-user-here "$B/vmctl" start t2 -machine none \
           -display none -nodefaults && one_line &&
       grep -q 'QEMU never runs as root, and the system user no-such-user-here does not exist' err &&
       run 1 env VMCKPT_QEMU_USER=root "$B/vmctl" start t3 -machine none -display none \
           -nodefaults && grep -q 'is root' err && untouched; then pass $t
    else fail $t "rc=$rc $(cat err) $WHY"; fi
else
    skip $t "not root"
fi

# ---- 10. ssh:// runs nothing before the receiver's key is known -----------
t=ssh_unknown_host_runs_nothing
mkdir -p fakebin
printf '#!/bin/sh\ntouch %s\nexec cat\n' "$MARK" > fakebin/ssh
chmod 755 fakebin/ssh
printf 'other.example %s\n' "$REC" > known_hosts
"$B/vmctl" start tiny -machine none -display none -nodefaults -m 16 >/dev/null 2>&1
if run 1 env PATH="$T/fakebin:$PATH" "$B/vmmigrate" -i host.key --known-hosts known_hosts \
       tiny ssh://root@dst.example && one_line && grep -q 'dst.example: no entry' err &&
   [ ! -e "$MARK" ] &&
   run 1 env PATH="$T/fakebin:$PATH" "$B/vmmigrate" -i host.key --known-hosts known_hosts \
       tiny 'ssh://-oProxyCommand=touch /tmp/x' && grep -q 'not ssh://' err &&
   [ ! -e "$MARK" ] && [ "$("$B/vmctl" status tiny)" = running ]; then pass $t
else fail $t "rc=$rc $(cat err) marker: $(ls "$MARK" 2>&1)"; fi
"$B/vmctl" destroy tiny >/dev/null 2>&1
rm -rf "$VMCKPT_RUNDIR"

# ---- 5b. disks: the DISK records are data ------------------------------------
# A trusted signer gone rogue carries a disk: its recorded path names a
# host file, its extent lies past the disk's end, or its digest lies.  The
# restore writes only into --disk-dir, checks every offset before a byte
# is written and the digest before the domain runs, and leaves nothing.
mkdir -p dd
truncate -s 1M orig.raw
DGOOD="{\"argv\":[$BASE,\"-drive\",\"file=$T/orig.raw,if=virtio,format=raw\"]}"
sha_shadow=$(sha256sum /etc/shadow 2>/dev/null)
for mode in beyond digest ok; do
    t=disk_$mode
    FORGE_DISK=$mode "$FORGE" "$REC" disk-$mode.vmimg qemu "$DGOOD"
    case $mode in
    beyond) want="beyond the disk's virtual size" ;;
    digest) want="content digest does not match" ;;
    ok) want="" ;;   # the disk is fine: the junk memory stream fails
    esac
    if run 1 env VMCKPT_ALLOW_DIRS=$T "$B/vmrestore" -i host.key --disk-dir dd \
           disk-$mode.vmimg && one_line && grep -qF "$want" err && untouched &&
       [ -z "$(ls -A dd)" ] && [ "$(sha256sum /etc/shadow 2>/dev/null)" = "$sha_shadow" ] &&
       [ "$(stat -c %s orig.raw)" = 1048576 ] && [ -z "$(tr -d '\0' <orig.raw | head -c1)" ]
    then pass $t "$(cut -c1-120 err)"
    else fail $t "rc=$rc $(cat err) $WHY; disk dir: $(ls -A dd)"; fi
done

# vmimage unseal --disks: the same images, the same rules; the good one
# gives a sparse 0600 file with the disk's content, the others nothing
for mode in beyond digest ok; do
    t=unseal_disks_$mode
    rm -rf ud && mkdir ud
    if [ $mode = ok ]; then
        if run 0 "$B/vmimage" unseal -i host.key --disks ud disk-$mode.vmimg &&
           [ "$(ls ud)" = virtio0.raw ] && [ "$(stat -c '%a %s' ud/virtio0.raw)" = "600 1048576" ] &&
           [ "$(head -c 65536 ud/virtio0.raw | tr -d 'Z' | wc -c)" = 0 ] &&
           [ -z "$(tail -c +65537 ud/virtio0.raw | tr -d '\0' | head -c1)" ] &&
           [ "$(stat -c %b ud/virtio0.raw)" -lt 1024 ] &&
           run 1 "$B/vmimage" unseal -i host.key --disks ud disk-$mode.vmimg &&
           grep -q 'virtio0.raw: File exists' err && [ "$(ls ud)" = virtio0.raw ]
        then pass $t "the disk as it was carried, sparse, 0600; never over a file"
        else fail $t "rc=$rc $(cat err) $(ls -l ud)"; fi
    else
        if run 1 "$B/vmimage" unseal -i host.key --disks ud disk-$mode.vmimg && one_line &&
           [ -z "$(ls -A ud)" ]; then pass $t "$(cut -c1-100 err)"
        else fail $t "rc=$rc $(cat err); left: $(ls -A ud)"; fi
    fi
done

# ---- 6. the guardian cannot be reached from a command line ----------------
# It used to be chosen by argv[0] and to remove a path from argv.
t=guardian_from_a_command_line
echo precious > victim
bash -c "exec -a vmckpt-guard \"$B/vmsave\" qemu 1 1 \"$T/victim\"" >out 2>err
rc1=$?
bash -c "exec -a vmckpt-guard \"$B/vmsave\"" >out2 2>err2 3<victim
rc2=$?
if [ -f victim ] && [ "$(cat victim)" = precious ] && [ $rc1 = 2 ] && [ $rc2 = 2 ] &&
   [ ! -s out2 ]; then pass $t "argv: usage error; fd 3 not its pipe: exit 2, nothing done"
else fail $t "rc $rc1/$rc2, victim: $(ls -l victim 2>&1) $(cat err err2)"; fi

echo "attack: done in $T"
