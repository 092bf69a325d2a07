#!/bin/sh
# How the golden images of format version 1 were made, once, with vmckpt
# 0.1.0.  They are NEVER regenerated: a reader that stops accepting them has
# broken compatibility.  This script refuses to overwrite them.
set -eu
cd "$(dirname "$0")"
[ -e v1-x25519.vmimg ] && { echo "golden images exist: never regenerate" >&2; exit 1; }
V=../../build/vmimage
mkdir -p keys
$V keygen -o keys/identity.key > keys/recipient.txt
$V keygen --symmetric -o keys/raw.key
printf 'golden passphrase\n' > keys/passphrase.txt
../../build/tests/gendata 300K 7 > payload.bin
KDF="--kdf-ops 1 --kdf-mem 8"
$V seal -q -R keys/recipient.txt --name golden -o v1-x25519.vmimg payload.bin
$V seal -q --passphrase-file keys/passphrase.txt $KDF --name golden \
    -o v1-passphrase.vmimg payload.bin
$V seal -q -k keys/raw.key --name golden -o v1-rawkey.vmimg payload.bin
$V seal -q -R keys/recipient.txt -k keys/raw.key $KDF \
    --passphrase-file keys/passphrase.txt --label "golden all slots" \
    --chunk-size 65536 -l 3 --name golden -o v1-all.vmimg payload.bin
python3 damage.py
