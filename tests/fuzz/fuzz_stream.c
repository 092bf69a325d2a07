/*
 * fuzz_stream.c - libFuzzer target for the header and record readers.
 *
 * The first input byte picks the target:
 *   0: a whole image: header parse, unlock with the fixed raw key below,
 *      then the chunk and record layers (through a pipe-less memfd).
 *   1: the record parser over plaintext bytes (what the chunk layer yields
 *      after authentication), including IMAGE_INFO parsing.
 *   2: the header parser alone (no key).
 * Corpus: tests/fuzz/corpus, replayed by `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* The raw key the corpus images are sealed with (tests/fuzz/fuzz.key). */
static const char fuzz_key_path[] = "tests/fuzz/fuzz.key";
static struct vmc_keys *keys;

struct mem {
    const uint8_t *p;
    size_t n, off;
};

static int mem_read(void *arg, void *buf, size_t n)
{
    struct mem *m = arg;

    if (m->n - m->off < n)
        return VMC_E_TRUNC;
    memcpy(buf, m->p + m->off, n);
    m->off += n;
    return 0;
}

static void records(struct vmc_ctx *ctx, const uint8_t *p, size_t n)
{
    struct mem m = { p, n, 0 };
    struct vmc_recparse *rp = vmc_recparse_new(ctx, mem_read, &m);
    struct vmc_record rec;
    uint8_t buf[4096];

    if (!rp)
        return;
    while (vmc_recparse_next(rp, &rec) == 1) {
        if (rec.type == VMC_REC_IMAGE_INFO && rec.length <= sizeof(buf)) {
            struct vmc_image_meta meta;
            if (vmc_recparse_read(rp, buf, rec.length) == (ssize_t)rec.length)
                vmc_image_info_parse(ctx, buf, rec.length, &meta);
        } else {
            while (vmc_recparse_read(rp, buf, sizeof(buf)) > 0)
                ;
        }
    }
    vmc_recparse_free(rp);
}

static void image(struct vmc_ctx *ctx, const uint8_t *p, size_t n)
{
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    int fd = memfd_create("fuzz", 0);

    if (fd < 0)
        return;
    if (write(fd, p, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) < 0)
        goto out;
    if (vmc_header_read(ctx, fd, &h) < 0 || vmc_header_unlock(ctx, h, keys) < 0)
        goto out;
    if (vmc_reader_new(ctx, fd, h, 1, 1, &r) < 0) {
        h = NULL;
        goto out;
    }
    h = NULL;
    vmc_reader_drain(r, -1, NULL, NULL, NULL);
out:
    vmc_reader_free(r);
    vmc_header_free(h);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vmc_ctx *ctx = vmc_ctx_new();

    if (!keys) {
        const char *dir = getenv("VMC_SRCDIR");
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", fuzz_key_path);
        vmc_init(ctx);
        keys = vmc_keys_new();
        {   /* the checked-out key is 0644, which vmckpt refuses for a
             * secret: load a 0600 copy of it */
            char tmp[] = "/tmp/vmc-fuzz-key-XXXXXX", buf[512];
            FILE *in = fopen(path, "r");
            int fd = mkstemp(tmp);
            size_t n = in ? fread(buf, 1, sizeof(buf), in) : 0;
            if (in)
                fclose(in);
            if (fd < 0 || !n || write(fd, buf, n) != (ssize_t)n)
                abort();
            close(fd);
            if (vmc_keys_add_identity_file(ctx, keys, tmp) < 0) {
                unlink(tmp);
                abort();              /* the harness is broken, not the input */
            }
            unlink(tmp);
        }
        /* any signer, and format 1 too: the input reaches every layer */
        vmc_keys_set_trust(keys, VMC_TRUST_REPORT | VMC_TRUST_UNSIGNED);
        vmc_ctx_clear(ctx);
    }
    if (size >= 1) {
        switch (data[0] % 3) {
        case 0: image(ctx, data + 1, size - 1); break;
        case 1: records(ctx, data + 1, size - 1); break;
        case 2: {
            struct vmc_header *h = NULL;
            if (vmc_header_parse(ctx, data + 1, size - 1, &h) == 0) {
                struct vmc_header_info hi;
                vmc_header_get_info(h, &hi);
            }
            vmc_header_free(h);
            break;
        }
        }
    }
    vmc_ctx_free(ctx);
    return 0;
}
