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
 * FORGE_SIGN=none.  FORGE_DISK=ok|beyond|digest adds a carried disk
 * "virtio0" of 1 MiB recorded at $FORGE_DISK_PATH (default /etc/shadow):
 * one extent of 64 KiB of 0x5a (beyond: at 1 MiB, past its end) and a
 * DISK_END whose digest is right (digest: wrong).
 */

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../lib/vmckpt.h"

static struct vmc_disk_info disk = { .index = 0, .flags = VMC_DF_CARRIED,
                                     .virtual_size = 1 << 20,
                                     .block_size = 512,
                                     .source_format = VMC_DISK_FMT_RAW,
                                     .id = "virtio0" };

static int forge_disk_content(struct vmc_ctx *ctx, struct vmc_writer *w,
                              const char *mode)
{
    static uint8_t ext[16 + 65536];
    struct vmc_wire_disk_extent e = { 0, 0, 0 };
    struct vmc_wire_disk_end de = { 0, 0, 1, 65536, { 0 } };
    uint8_t end[VMC_DISK_END_LEN];
    int fd = memfd_create("disk", 0);

    memset(ext + 16, 0x5a, 65536);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0 ||
        pwrite(fd, ext + 16, 65536, 0) != 65536 ||
        vmc_disk_file_digest(ctx, fd, 1 << 20, de.digest) < 0)
        return -1;
    close(fd);
    if (!strcmp(mode, "beyond"))
        e.offset = 1 << 20;
    if (!strcmp(mode, "digest"))
        de.digest[7] ^= 0x40;
    vmc_disk_extent_encode(ext, &e);
    vmc_disk_end_encode(end, &de);
    return vmc_writer_record(w, VMC_REC_DISK_EXTENT, ext, sizeof(ext)) < 0 ||
           vmc_writer_record(w, VMC_REC_DISK_END, end, sizeof(end)) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *dmode = getenv("FORGE_DISK");
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
    snprintf(disk.path, sizeof(disk.path), "%s", getenv("FORGE_DISK_PATH") ?
             getenv("FORGE_DISK_PATH") : "/etc/shadow");
    fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || vmc_keys_add_recipient(ctx, keys, argv[1]) < 0 ||
        vmc_writer_new(ctx, fd, keys, &wo, &w) < 0 ||
        vmc_writer_describe(w, &m, qemu ? VMC_CFG_QEMU_JSON : VMC_CFG_LIBXL_JSON,
                            (const uint8_t *)argv[4], strlen(argv[4])) < 0 ||
        (dmode && vmc_writer_disk(w, &disk) < 0) ||
        (n && vmc_writer_record(w, VMC_REC_BACKEND_STREAM, junk, n) < 0) ||
        (dmode && forge_disk_content(ctx, w, dmode) < 0) ||
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
