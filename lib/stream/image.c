/*
 * image.c - whole-image helpers: drain a reader, copy a byte stream.
 *
 * Owns: reading a stream to its END for verify, info and unseal.
 * Must not: know a hypervisor's file format (an output format wrapped
 * around the raw stream, like xl.c's, comes in as drain_hooks).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define COPY_BUF (1u << 20)

void vmc_summary_free(struct vmc_summary *s)
{
    if (!s)
        return;
    free(s->types);
    s->types = NULL;
    s->ntypes = 0;
}

/* A hostile stream of many distinct types costs a bounded table (and a
 * linear search, as the records are read one by one anyway). */
static void count(struct vmc_summary *s, uint32_t type, uint64_t bytes)
{
    int i;

    for (i = 0; i < s->ntypes; i++)
        if (s->types[i].type == type)
            break;
    if (i == s->ntypes) {
        struct vmc_type_count *t;
        if (s->ntypes == VMC_SUMMARY_TYPES)
            return;
        if (!(s->ntypes & (s->ntypes - 1))) {  /* full at 0, 1, 2, 4 ... */
            size_t cap = s->ntypes ? (size_t)s->ntypes * 2 : 1;
            if (!(t = realloc(s->types, cap * sizeof(*t))))
                return;             /* the listing is best effort */
            s->types = t;
        }
        s->ntypes++;
        memset(&s->types[i], 0, sizeof(s->types[i]));
        s->types[i].type = type;
    }
    s->types[i].count++;
    s->types[i].bytes += bytes;
}

int vmc_reader_drain(struct vmc_reader *r, int outfd, vmc_progress_fn cb,
                     void *arg, struct vmc_summary *sum)
{
    return reader_drain(r, outfd, NULL, NULL, cb, arg, sum);
}

int vmc_reader_drain_disks(struct vmc_reader *r, int outfd,
                           const char *disk_dir, vmc_progress_fn cb, void *arg,
                           struct vmc_summary *sum)
{
    if (!disk_dir || !*disk_dir)
        return vmc_set_error(reader_ctx(r), VMC_E_INVAL, "no disk directory");
    return reader_drain(r, outfd, NULL, disk_dir, cb, arg, sum);
}

/* The files of the carried disks (vmc_reader_drain_disks). */
struct disk_out {
    const char *dir;
    int n, fd[VMC_DISK_MAX];
    char path[VMC_DISK_MAX][PATH_MAX];
};

/* The DISK record just recorded as disk i of t: a new sparse file for it
 * if it is carried. */
static int disk_out_open(struct vmc_ctx *ctx, struct disk_out *o,
                         struct vmc_disks *t, int i)
{
    const struct vmc_disk_info *di = vmc_disks_get(t, i);
    char *p = o->path[o->n];
    int fd;

    if (!o->dir || !(di->flags & VMC_DF_CARRIED))
        return 0;
    if ((size_t)snprintf(p, PATH_MAX, "%s/%s.raw", o->dir, di->id) >= PATH_MAX)
        return vmc_set_error(ctx, VMC_E_INVAL, "disk %s: path too long", di->id);
    if ((fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0600)) < 0) {
        int e = errno;
        return vmc_set_error(ctx, e == EEXIST ? VMC_E_EXISTS : VMC_E_IO,
                             "disk %s: %s: %s", di->id, p, strerror(e));
    }
    o->fd[o->n++] = fd;
    if (ftruncate(fd, (off_t)di->virtual_size) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "disk %s: %s: %s", di->id, p,
                             strerror(errno));
    vmc_disks_set_sink(t, i, fd);
    return 0;
}

/* Success: every file and the directory durable.  Failure: removed. */
static int disk_out_close(struct vmc_ctx *ctx, struct disk_out *o, int ok)
{
    int rc = 0;

    for (int i = 0; i < o->n; i++) {
        if (ok && rc == 0 && fsync(o->fd[i]) < 0)
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: fsync: %s", o->path[i],
                               strerror(errno));
        close(o->fd[i]);
    }
    if (ok && rc == 0 && o->n)
        rc = fsync_parent(ctx, o->path[0]);
    if (!ok || rc < 0)
        for (int i = 0; i < o->n; i++)
            unlink(o->path[i]);
    return rc;
}

/* A BACKEND_STREAM body to outfd; *backend counts its bytes. */
static int body_out(struct vmc_ctx *ctx, struct vmc_reader *r, int outfd,
                    uint64_t *backend)
{
    const void *pb;
    ssize_t n;
    int rc;

    while ((n = vmc_reader_read_ptr(r, &pb, COPY_BUF)) > 0) {
        char what[48];
        snprintf(what, sizeof(what), "output @0x%llx",
                 (unsigned long long)*backend);
        if ((rc = io_write_full(ctx, outfd, pb, (size_t)n, what)) < 0)
            return rc;
        *backend += (uint64_t)n;
    }
    return n < 0 ? (int)n : 0;
}

/* IMAGE_INFO and DOMAIN_CONFIG into the summary, and to the hooks. */
static int meta_in(struct vmc_ctx *ctx, struct vmc_reader *r,
                   const struct vmc_record *rec, int outfd,
                   const struct drain_hooks *h, struct vmc_summary *sum)
{
    uint8_t *b;
    size_t len;
    int rc;

    if ((rc = vmc_reader_read_all(r, &b, &len)) < 0)
        return rc;
    if (rec->type == VMC_REC_IMAGE_INFO) {
        rc = vmc_image_info_parse(ctx, b, len, &sum->meta);
        if (rc < 0)
            vmc_error_locate(ctx, VMC_AT_RECORD, rec->offset, rec->type);
        if (rc == 0 && h)
            rc = h->info(ctx, &sum->meta);
    } else {
        struct vmc_wire_domain_config c;
        const char *why;
        if ((rc = vmc_domain_config_decode(&c, b, len, &why)) < 0) {
            free(b);
            return vmc_set_error_at(ctx, rc, VMC_AT_RECORD, rec->offset,
                                    rec->type, "%s", why);
        }
        sum->config_format = c.format;
        sum->config_len = len - 8;
        if (h)
            rc = h->config(ctx, outfd, c.format, b + 8, len - 8);
    }
    free(b);
    return rc;
}

int reader_drain(struct vmc_reader *r, int outfd, const struct drain_hooks *h,
                 const char *disk_dir, vmc_progress_fn cb, void *arg,
                 struct vmc_summary *sum)
{
    struct disk_out *dout = NULL;
    struct vmc_summary local;
    struct vmc_ctx *ctx = reader_ctx(r);
    struct vmc_record rec;
    struct vmc_disks *disks = NULL;
    uint64_t backend = 0;
    int rc, configured = 0;

    if (!sum)
        sum = &local;
    memset(sum, 0, sizeof(*sum));
    if ((rc = vmc_disks_new(ctx, &disks)) < 0)
        return rc;
    if (disk_dir && !(dout = calloc(1, sizeof(*dout)))) {
        vmc_disks_free(disks);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    if (dout)
        dout->dir = disk_dir;
    while ((rc = vmc_reader_next(r, &rec)) == 1) {
        count(sum, rec.type, rec.length);
        if (rec.type == VMC_REC_DISK || rec.type == VMC_REC_DISK_EXTENT ||
            rec.type == VMC_REC_DISK_END) {
            if (rec.type == VMC_REC_DISK_EXTENT)
                sum->disk_bytes += rec.length - VMC_DISK_EXTENT_HEAD;
            if ((rc = vmc_disks_record(disks, r, &rec)) < 0 ||
                (rec.type == VMC_REC_DISK && dout &&
                 (rc = disk_out_open(ctx, dout, disks,
                                     vmc_disks_count(disks) - 1)) < 0))
                break;
            continue;
        }
        if (rec.type == VMC_REC_IMAGE_INFO ||
            rec.type == VMC_REC_DOMAIN_CONFIG) {
            if ((rc = meta_in(ctx, r, &rec, outfd, h, sum)) < 0)
                break;
            configured |= rec.type == VMC_REC_DOMAIN_CONFIG;
        } else if (rec.type == VMC_REC_BACKEND_STREAM) {
            if (h && !configured) {
                rc = vmc_set_error(ctx, VMC_E_FORMAT, "BACKEND_STREAM @0x%llx "
                                   "before DOMAIN_CONFIG: cannot write %s",
                                   (unsigned long long)rec.offset, h->what);
                break;
            }
            if (outfd < 0)
                backend += rec.length;
            else if ((rc = body_out(ctx, r, outfd, &backend)) < 0)
                break;
            if (cb && cb(arg, backend)) {
                rc = vmc_set_error(ctx, VMC_E_CANCELED, "interrupted");
                break;
            }
        }
    }
    if (rc == 0) {
        vmc_reader_end(r, &sum->end);
        rc = vmc_disks_finish(disks, sum->end.plaintext_bytes);
    }
    if (rc == 0) {
        count(sum, VMC_REC_END, sizeof(struct vmc_wire_end));
    }
    if (dout) {
        int crc = disk_out_close(ctx, dout, rc == 0);
        rc = rc < 0 ? rc : crc;
        free(dout);
    }
    sum->disks = vmc_disks_count(disks);
    for (int i = 0; i < sum->disks; i++) {
        uint32_t f = vmc_disks_get(disks, i)->flags;
        sum->disks_carried += !!(f & VMC_DF_CARRIED);
        sum->disks_not_captured += !!(f & VMC_DF_NOT_CAPTURED);
    }
    vmc_disks_free(disks);
    vmc_reader_stats(r, &sum->stats);
    if (sum == &local)
        vmc_summary_free(&local);
    return rc;
}

int vmc_reader_head(struct vmc_reader *r, struct vmc_image_meta *m,
                    uint32_t *cfg_format, uint8_t **cfg, size_t *cfg_len)
{
    struct vmc_ctx *ctx = reader_ctx(r);
    struct vmc_wire_domain_config head;
    struct vmc_record rec;
    const char *why;
    uint8_t *buf;
    size_t len;
    int rc;

    *cfg = NULL;
    *cfg_len = 0;
    if ((rc = vmc_reader_next(r, &rec)) < 0 ||
        (rc = vmc_reader_read_all(r, &buf, &len)) < 0)
        return rc;
    rc = vmc_image_info_parse(ctx, buf, len, m);
    free(buf);
    if (rc < 0) {
        vmc_error_locate(ctx, VMC_AT_RECORD, rec.offset, rec.type);
        return rc;
    }
    if (m->backend == VMC_BACKEND_NONE)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "a raw stream sealed by "
                             "vmimage seal: it records no domain and can never "
                             "be restored (vmimage unseal gives the stream back)");
    do {
        if ((rc = vmc_reader_next(r, &rec)) < 0)
            return rc;
    } while (rc == 1 && (rec.type & VMC_REC_OPTIONAL));
    if (rc == 0 || rec.type != VMC_REC_DOMAIN_CONFIG)
        return vmc_set_error_at(ctx, VMC_E_FORMAT, VMC_AT_RECORD, rec.offset,
                                rc == 0 ? VMC_REC_END : rec.type,
                                "a restorable image needs DOMAIN_CONFIG here");
    if ((rc = vmc_reader_read_all(r, &buf, &len)) < 0)
        return rc;
    if ((rc = vmc_domain_config_decode(&head, buf, len, &why)) < 0) {
        free(buf);
        return vmc_set_error_at(ctx, rc, VMC_AT_RECORD, rec.offset, rec.type,
                                "%s", why);
    }
    memmove(buf, buf + 8, len - 8);
    *cfg_format = head.format;
    *cfg = buf;
    *cfg_len = len - 8;
    return 0;
}

int vmc_reader_copy_records(struct vmc_reader *r, struct vmc_writer *w,
                            vmc_progress_fn cb, void *arg)
{
    struct vmc_ctx *ctx = reader_ctx(r);
    struct vmc_end_info end;
    struct vmc_record rec;
    uint64_t done = 0;
    int rc;

    while ((rc = vmc_reader_next(r, &rec)) == 1) {
        const void *p;
        ssize_t n;
        if ((rc = vmc_writer_begin(w, rec.type, (uint32_t)rec.length)) < 0)
            return rc;
        while ((n = vmc_reader_read_ptr(r, &p, COPY_BUF)) > 0) {
            if ((rc = vmc_writer_write(w, p, (size_t)n)) < 0)
                return rc;
            done += (uint64_t)n;
            if (cb && cb(arg, done))
                return vmc_set_error(ctx, VMC_E_CANCELED, "interrupted");
        }
        if (n < 0)
            return (int)n;
    }
    if (rc < 0)
        return rc;
    vmc_reader_end(r, &end);
    return vmc_writer_finish(w, end.total_time_ns, end.downtime_ns);
}

int vmc_copy_fd(struct vmc_ctx *ctx, int in, int out, const char *what)
{
    uint8_t *buf = malloc(COPY_BUF);
    int rc = 0;

    if (!buf)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    for (;;) {
        size_t got;
        if ((rc = io_read_full(ctx, in, buf, COPY_BUF, &got, what)) < 0 ||
            got == 0 || (rc = io_write_full(ctx, out, buf, got, what)) < 0)
            break;
    }
    free(buf);
    return rc;
}

/* ---- copy while authenticating (rekey) -----------------------------------
 * The payload goes to out untouched and, through a socket pair, to a
 * reader under the new header: a truncated or damaged payload fails the
 * copy, so nothing is committed. */
struct tee {
    struct vmc_ctx ctx;               /* the tee thread's own error */
    int in, out, sock;
    const char *what;
};

static void *tee_thread(void *arg)
{
    struct tee *t = arg;
    uint8_t *buf = malloc(COPY_BUF);
    size_t got;

    if (!buf)
        vmc_set_error(&t->ctx, VMC_E_NOMEM, "out of memory");
    while (buf && io_read_full(&t->ctx, t->in, buf, COPY_BUF, &got,
                               t->what) == 0 && got &&
           io_write_full(&t->ctx, t->out, buf, got, t->what) == 0 &&
           write_all_nosig(t->sock, buf, got) == 0)
        ;                       /* a reader that quit has its own error */
    shutdown(t->sock, SHUT_WR);
    free(buf);
    return NULL;
}

int vmc_copy_verified(struct vmc_ctx *ctx, struct vmc_header *h, int in,
                      int out, const char *what)
{
    struct tee t = { { 0 }, in, out, -1, what };
    struct vmc_reader *r = NULL;
    pthread_t th;
    int sv[2], rc;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        vmc_header_free(h);
        return vmc_set_error(ctx, VMC_E_IO, "socketpair: %s", strerror(errno));
    }
    t.sock = sv[1];
    if (pthread_create(&th, NULL, tee_thread, &t) != 0) {
        close(sv[0]);
        close(sv[1]);
        vmc_header_free(h);
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot start a thread");
    }
    if ((rc = vmc_reader_new(ctx, sv[0], h, 0, 1, &r)) == 0)
        rc = vmc_reader_drain(r, -1, NULL, NULL, NULL);
    vmc_reader_free(r);
    close(sv[0]);                   /* a tee blocked on a reader that quit */
    pthread_join(th, NULL);
    close(sv[1]);
    if (t.ctx.code) {               /* reading or writing the files failed */
        vmc_ctx_clear(ctx);
        return vmc_set_error(ctx, t.ctx.code, "%s", t.ctx.msg);
    }
    return rc;
}
