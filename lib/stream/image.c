/*
 * image.c - whole-image helpers: drain a reader, copy a byte stream.
 *
 * Owns: reading a stream to its END for verify, info and unseal.
 * Must not: know a hypervisor beyond the names of stream formats.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define COPY_BUF (1u << 20)

static void count(struct vmc_summary *s, uint32_t type, uint64_t bytes)
{
    int i;

    for (i = 0; i < s->ntypes; i++)
        if (s->types[i].type == type)
            break;
    if (i == s->ntypes) {
        if (s->ntypes == VMC_SUMMARY_TYPES)
            return;
        s->ntypes++;
        s->types[i].type = type;
    }
    s->types[i].count++;
    s->types[i].bytes += bytes;
}

static int drain(struct vmc_reader *r, int outfd, int to_xl,
                 vmc_progress_fn cb, void *arg, struct vmc_summary *sum);

int vmc_reader_drain(struct vmc_reader *r, int outfd, vmc_progress_fn cb,
                     void *arg, struct vmc_summary *sum)
{
    return drain(r, outfd, 0, cb, arg, sum);
}

int vmc_reader_drain_xl(struct vmc_reader *r, int outfd, vmc_progress_fn cb,
                        void *arg, struct vmc_summary *sum)
{
    return drain(r, outfd, 1, cb, arg, sum);
}

static int drain(struct vmc_reader *r, int outfd, int to_xl,
                 vmc_progress_fn cb, void *arg, struct vmc_summary *sum)
{
    struct vmc_summary local;
    struct vmc_ctx *ctx = NULL;
    struct vmc_record rec;
    uint64_t backend = 0;
    int rc;

    if (!sum)
        sum = &local;
    memset(sum, 0, sizeof(*sum));
    ctx = reader_ctx(r);
    while ((rc = vmc_reader_next(r, &rec)) == 1) {
        count(sum, rec.type, rec.length);
        if (rec.type == VMC_REC_IMAGE_INFO) {
            uint8_t *b;
            size_t len;
            if ((rc = vmc_reader_read_all(r, &b, &len)) < 0)
                goto out;
            rc = vmc_image_info_parse(ctx, b, len, &sum->meta);
            free(b);
            if (rc < 0)
                goto out;
            if (to_xl && (sum->meta.backend != VMC_BACKEND_XEN ||
                          sum->meta.stream_format != VMC_SFMT_LIBXL)) {
                rc = vmc_set_error(ctx, VMC_E_UNSUPPORTED, "not a Xen libxl "
                                   "image: cannot write an xl save file");
                goto out;
            }
        } else if (rec.type == VMC_REC_DOMAIN_CONFIG) {
            uint8_t *b;
            size_t len;
            if ((rc = vmc_reader_read_all(r, &b, &len)) < 0)
                goto out;
            sum->config_format = vmc_get32(b);
            sum->config_len = len - 8;
            if (to_xl) {
                if (sum->config_format != VMC_CFG_LIBXL_JSON)
                    rc = vmc_set_error(ctx, VMC_E_UNSUPPORTED, "DOMAIN_CONFIG "
                                       "is not libxl JSON");
                else
                    rc = vmc_xl_write_header(ctx, outfd, b + 8, len - 8);
                to_xl = 2;          /* header written */
            }
            free(b);
            if (rc < 0)
                goto out;
        } else if (rec.type == VMC_REC_BACKEND_STREAM && to_xl == 1) {
            rc = vmc_set_error(ctx, VMC_E_FORMAT, "BACKEND_STREAM @0x%llx "
                               "before DOMAIN_CONFIG: cannot write an xl save "
                               "file", (unsigned long long)rec.offset);
            goto out;
        } else if (rec.type == VMC_REC_BACKEND_STREAM && outfd >= 0) {
            const void *pb;
            ssize_t n;
            while ((n = vmc_reader_read_ptr(r, &pb, COPY_BUF)) > 0) {
                if ((rc = write_full(outfd, pb, (size_t)n)) < 0) {
                    errno = -rc;
                    rc = vmc_set_error(ctx, VMC_E_IO,
                                       "output @0x%llx: write: %s",
                                       (unsigned long long)backend,
                                       strerror(errno));
                    goto out;
                }
                backend += (uint64_t)n;
            }
            if (n < 0) {
                rc = (int)n;
                goto out;
            }
        } else if (rec.type == VMC_REC_BACKEND_STREAM) {
            backend += rec.length;
        }
        if (cb && rec.type == VMC_REC_BACKEND_STREAM && cb(arg, backend)) {
            rc = vmc_set_error(ctx, VMC_E_CANCELED, "interrupted");
            goto out;
        }
    }
    if (rc == 0) {
        vmc_reader_end(r, &sum->end);
        count(sum, VMC_REC_END, sizeof(struct vmc_wire_end));
    }
out:
    vmc_reader_stats(r, &sum->stats);
    return rc;
}

int vmc_copy_fd(struct vmc_ctx *ctx, int in, int out, const char *what)
{
    uint8_t *buf = malloc(COPY_BUF);
    int rc = 0;

    if (!buf)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    for (;;) {
        size_t got;
        if ((rc = read_full(in, buf, COPY_BUF, &got)) < 0) {
            errno = -rc;
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: read: %s", what,
                               strerror(errno));
            break;
        }
        if (got == 0)
            break;
        if ((rc = write_full(out, buf, got)) < 0) {
            errno = -rc;
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: write: %s", what,
                               strerror(errno));
            break;
        }
    }
    free(buf);
    return rc;
}
