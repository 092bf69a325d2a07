#!/bin/bash
# demo.sh - the main job, end to end (make demo).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
D=$(mktemp -d /tmp/vmckpt-demo.XXXXXX)
trap 'rm -rf "$D"' EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "vmimage keygen -o host.key"
RECIPIENT=$("$B/vmimage" keygen -o "$D/host.key")
echo "$RECIPIENT"
say "gendata 256M > raw.save   # a guest-memory-like raw save stream"
"$B/tests/gendata" 256M > "$D/raw.save"
say "vmimage seal -r $RECIPIENT -o demo.vmimg raw.save"
"$B/vmimage" seal -r "$RECIPIENT" --label demo -o "$D/demo.vmimg" "$D/raw.save"
ls -l "$D/raw.save" "$D/demo.vmimg"
say "vmimage info demo.vmimg   # no key: only the public header"
"$B/vmimage" info "$D/demo.vmimg"
say "vmimage verify -i host.key demo.vmimg"
"$B/vmimage" verify -i "$D/host.key" "$D/demo.vmimg"
say "vmimage unseal -i host.key demo.vmimg | cmp - raw.save"
"$B/vmimage" unseal -i "$D/host.key" "$D/demo.vmimg" | cmp - "$D/raw.save" &&
    echo "identical"
