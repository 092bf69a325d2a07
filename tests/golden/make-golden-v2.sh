#!/bin/sh
# How the golden images of format version 2 (signed) were made, once, with
# vmckpt 0.2.0, from the same keys and payload as version 1 and a signing
# key of their own.  They are NEVER regenerated: a reader that stops
# accepting them has broken compatibility.  This script refuses to
# overwrite them.
set -eu
cd "$(dirname "$0")"
[ -e v2-x25519.vmimg ] && { echo "golden images exist: never regenerate" >&2; exit 1; }
V=../../build/vmimage
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
$V keygen --sign -o keys/signing.key > keys/signer.txt
for k in identity.key raw.key signing.key; do      # 0600 copies to use
    cp keys/$k "$T/$k" && chmod 600 "$T/$k"
done
S="--signing-key $T/signing.key"
KDF="--kdf-ops 1 --kdf-mem 8"
$V seal -q $S -R keys/recipient.txt --name golden -o v2-x25519.vmimg payload.bin
$V seal -q $S --passphrase-file keys/passphrase.txt $KDF --name golden \
    -o v2-passphrase.vmimg payload.bin
$V seal -q $S -k "$T/raw.key" --name golden -o v2-rawkey.vmimg payload.bin
$V seal -q $S -R keys/recipient.txt -k "$T/raw.key" $KDF \
    --passphrase-file keys/passphrase.txt --label "golden all slots" \
    --chunk-size 65536 -l 3 --name golden -o v2-all.vmimg payload.bin
python3 damage-v2.py
