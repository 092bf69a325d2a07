# signing-env.sh - sourced by the test scripts: the tools sign with a test
# signing key and trust it (VMCKPT_SIGNING_KEY, VMCKPT_TRUSTED_SIGNERS),
# made once in build/test-keys, unless the caller set its own.  A test
# script never depends on this machine's /etc/vmckpt.
if [ -z "${VMCKPT_SIGNING_KEY:-}" ]; then
    _vmc_tk=$ROOT/build/test-keys      # the sourcing script sets ROOT
    if [ ! -s "$_vmc_tk/trusted_signers" ]; then
        mkdir -p "$_vmc_tk" && rm -f "$_vmc_tk/signing.key" &&
        "$_vmc_tk/../vmimage" keygen --sign -o "$_vmc_tk/signing.key" \
            > "$_vmc_tk/trusted_signers.new" &&
        mv "$_vmc_tk/trusted_signers.new" "$_vmc_tk/trusted_signers"
    fi
    export VMCKPT_SIGNING_KEY=$_vmc_tk/signing.key
    export VMCKPT_TRUSTED_SIGNERS=$_vmc_tk/trusted_signers
fi
