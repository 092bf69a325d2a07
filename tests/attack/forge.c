/*
 * forge.c - an attacker's image, built with vmckpt's own public writer:
 * anyone who knows a host's recipient string can seal to it.
 *
 *   forge RECIPIENT OUT qemu|xen CONFIG-JSON [BACKEND-BYTES]
 *
 * writes IMAGE_INFO (domain "evil"), DOMAIN_CONFIG with CONFIG-JSON, a
 * BACKEND_STREAM of that many bytes of junk (default 4096) and END, signed
 * with the key in $FORGE_SIGN (default $VMCKPT_SIGNING_KEY: a signer the
 * restoring host trusts, gone rogue), or unsigned (format 1) when
 * FORGE_SIGN=none.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../lib/vmckpt.h"

int main(int argc, char **argv)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_keys *keys = vmc_keys_new();
    struct vmc_writer_opts wo = { 0 };
    struct vmc_image_meta m = { 0 };
    struct vmc_writer *w;
    size_t n = argc > 5 ? strtoul(argv[5], NULL, 10) : 4096;
    uint8_t *junk = calloc(1, n ? n : 1);
    int qemu, fd;

    if (argc < 5 || !ctx || !keys || !junk || vmc_init(ctx) < 0) {
        fprintf(stderr, "usage: forge RECIPIENT OUT qemu|xen CONFIG [N]\n");
        return 2;
    }
    qemu = !strcmp(argv[3], "qemu");
    m.backend = qemu ? VMC_BACKEND_QEMU : VMC_BACKEND_XEN;
    m.stream_format = qemu ? VMC_SFMT_QEMU : VMC_SFMT_LIBXL;
    m.memory_kib = 65536;
    m.vcpus = 1;
    snprintf(m.name, sizeof(m.name), "%s",
             getenv("FORGE_NAME") ? getenv("FORGE_NAME") : "evil");
    memset(junk, 0x5a, n);
    {
        const char *sk = getenv("FORGE_SIGN") ? getenv("FORGE_SIGN")
                                              : getenv("VMCKPT_SIGNING_KEY");
        if (!sk || !strcmp(sk, "none"))
            wo.unsigned_v1 = 1;
        else if (vmc_keys_add_signing_key_file(ctx, keys, sk) < 0) {
            fprintf(stderr, "forge: %s\n", vmc_ctx_error(ctx));
            return 1;
        }
    }
    fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || vmc_keys_add_recipient(ctx, keys, argv[1]) < 0 ||
        vmc_writer_new(ctx, fd, keys, &wo, &w) < 0 ||
        vmc_writer_describe(w, &m, qemu ? VMC_CFG_QEMU_JSON : VMC_CFG_LIBXL_JSON,
                            (const uint8_t *)argv[4], strlen(argv[4])) < 0 ||
        (n && vmc_writer_record(w, VMC_REC_BACKEND_STREAM, junk, n) < 0) ||
        vmc_writer_finish(w, 1, 1) < 0) {
        fprintf(stderr, "forge: %s\n", vmc_ctx_error(ctx));
        return 1;
    }
    vmc_writer_free(w);
    close(fd);
    free(junk);
    vmc_keys_free(keys);
    vmc_ctx_free(ctx);
    return 0;
}
