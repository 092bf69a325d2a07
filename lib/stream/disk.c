/*
 * disk.c - the disks of a domain in the record stream: DISK, DISK_EXTENT,
 * DISK_END (format/vmckpt-stream.md, "Disks").
 *
 * Owns: reading a disk file into extents with its content digest, and the
 * rules a reader applies to disk records (bounds, order, counts, digest),
 * writing what it accepts into a sink file.
 * Must not: know which hypervisor a disk belongs to, or where a restored
 * disk goes (the engine decides; this file writes into the fd it is given).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "internal.h"

#define EXTENT_MAX (1u << 20)           /* data octets per DISK_EXTENT written */

/* ---- the content digest ------------------------------------------------
 * SHA-256 of the context, LE64(virtual size), then for every grain that is
 * not all zero, in order: LE64(grain index) and the grain's octets.  It
 * depends on the content alone, not on how it was cut into extents.
 * OpenSSL's SHA-256: it uses the CPU's SHA extensions (about 1.8 GB/s
 * here, against 0.3 for libsodium's and 0.6 for its BLAKE2b), and the
 * digest is computed in line with the read of every carried disk. */
struct digest {
    EVP_MD_CTX *md;
    int failed;                 /* an update failed: final says so */
};

static void digest_update(struct digest *d, const void *p, size_t n)
{
    if (EVP_DigestUpdate(d->md, p, n) != 1)
        d->failed = 1;
}

static void digest_free(struct digest *d)
{
    EVP_MD_CTX_free(d->md);
    d->md = NULL;
}

static int digest_init(struct vmc_ctx *ctx, struct digest *d, uint64_t vsize)
{
    uint8_t le[8];

    d->failed = 0;
    if (!(d->md = EVP_MD_CTX_new()) ||
        EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1) {
        digest_free(d);
        return vmc_set_error(ctx, VMC_E_NOMEM, "SHA-256: OpenSSL cannot start "
                             "a digest");
    }
    digest_update(d, VMC_DISK_DIGEST_CTX, 16);
    vmc_put64(le, vsize);
    digest_update(d, le, 8);
    return 0;
}

/* Ends d (freed whatever happens); out is zero on failure. */
static int digest_final(struct vmc_ctx *ctx, struct digest *d,
                        uint8_t out[VMC_DISK_DIGEST_LEN])
{
    unsigned int n = 0;
    int ok = d->md && !d->failed && EVP_DigestFinal_ex(d->md, out, &n) == 1 &&
             n == VMC_DISK_DIGEST_LEN;

    digest_free(d);
    if (ok)
        return 0;
    memset(out, 0, VMC_DISK_DIGEST_LEN);
    return vmc_set_error(ctx, VMC_E_NOMEM, "SHA-256: OpenSSL failed");
}

static int all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t z[256];

    for (; n >= sizeof(z); p += sizeof(z), n -= sizeof(z))
        if (memcmp(p, z, sizeof(z)))
            return 0;
    return memcmp(p, z, n) == 0;
}

static void digest_grain(struct digest *d, uint64_t index, const uint8_t *g,
                         size_t n)
{
    uint8_t le[8];

    vmc_put64(le, index);
    digest_update(d, le, 8);
    digest_update(d, g, n);
}

/* ======================== writing ======================== */

int vmc_writer_disk(struct vmc_writer *w, const struct vmc_disk_info *di)
{
    struct vmc_wire_disk d = { 0 };
    size_t il = strlen(di->id), pl = strlen(di->path);
    uint8_t *body;
    int rc;

    if (il < 1 || il > VMC_DISK_ID_MAX || pl > VMC_DISK_PATH_MAX)
        return vmc_set_error(writer_ctx(w), VMC_E_INVAL, "disk %s: id or path "
                             "too long for the format", di->id);
    d.disk = di->index;
    d.flags = di->flags;
    d.virtual_size = di->virtual_size;
    d.block_size = di->block_size;
    d.source_format = di->source_format;
    d.id_len = (uint16_t)il;
    d.path_len = (uint16_t)pl;
    if (!(body = malloc(VMC_DISK_FIXED_LEN + il + pl)))
        return vmc_set_error(writer_ctx(w), VMC_E_NOMEM, "out of memory");
    vmc_disk_encode(body, &d);
    memcpy(body + VMC_DISK_FIXED_LEN, di->id, il);
    memcpy(body + VMC_DISK_FIXED_LEN + il, di->path, pl);
    rc = vmc_writer_record(w, VMC_REC_DISK, body, VMC_DISK_FIXED_LEN + il + pl);
    free(body);
    return rc;
}

/* Called for every run of grains that are not all zero, as they are read:
 * off is grain aligned, the run lies within one read (at most EXTENT_MAX
 * octets) and ends at a grain boundary or at the end of the disk. */
typedef int (*run_fn)(void *arg, uint64_t off, const uint8_t *p, size_t n);

/* The runs of the len octets at p, read from off. */
static int each_run(const uint8_t *p, size_t len, uint64_t off, run_fn fn,
                    void *arg)
{
    size_t run = 0;                     /* where the open run starts */
    int rc = 0;

    for (size_t g = 0; g < len && rc == 0; g += VMC_DISK_GRAIN) {
        size_t n = len - g < VMC_DISK_GRAIN ? len - g : VMC_DISK_GRAIN;
        if (all_zero(p + g, n)) {
            if (g > run)
                rc = fn(arg, off + run, p + run, g - run);
            run = g + n;
        }
    }
    if (rc == 0 && len > run)
        rc = fn(arg, off + run, p + run, len - run);
    return rc;
}

/* Calls fn for the runs of src's first size octets that are not all zero
 * (holes and unallocated clusters are skipped unread), in order;
 * progress: octets looked at. */
static int scan_runs(struct vmc_ctx *ctx, struct vmc_disk_src *src,
                     uint64_t size, run_fn fn, void *arg, vmc_progress_fn cb,
                     void *cb_arg)
{
    uint8_t *rd = malloc(EXTENT_MAX);
    uint64_t off = 0, done = 0;
    int rc = 0;

    if (!rd)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    while (off < size && rc == 0) {
        uint64_t d, h;
        if ((rc = vmc_disk_src_next(src, off, &d, &h)) < 0)
            break;
        for (off = d; off < h && rc == 0;) {
            size_t want = h - off < EXTENT_MAX ? (size_t)(h - off) : EXTENT_MAX;
            if ((rc = vmc_disk_src_read(src, rd, want, off)) < 0)
                break;
            rc = each_run(rd, want, off, fn, arg);
            off += want;
            done += want;
            if (rc == 0 && cb && cb(cb_arg, done))
                rc = vmc_set_error(ctx, VMC_E_CANCELED, "interrupted");
        }
        off = h > off ? h : off;
    }
    free(rd);
    return rc;
}

/* scan_runs over the disk file fd (vmc_disk_src: raw by fd, else qemu-nbd). */
static int scan_file(struct vmc_ctx *ctx, const struct vmc_disk_info *di,
                     int fd, run_fn fn, void *arg, vmc_progress_fn cb,
                     void *cb_arg)
{
    struct vmc_disk_src *src;
    int rc;

    if ((rc = vmc_disk_src_open(ctx, di, fd, &src)) < 0)
        return rc;
    rc = scan_runs(ctx, src, di->virtual_size, fn, arg, cb, cb_arg);
    vmc_disk_src_close(src);
    return rc;
}

/* The grains of a run, into the digest. */
static void digest_run(struct digest *d, uint64_t off, const uint8_t *p,
                       size_t n)
{
    for (size_t g = 0; g < n; g += VMC_DISK_GRAIN)
        digest_grain(d, (off + g) / VMC_DISK_GRAIN, p + g,
                     n - g < VMC_DISK_GRAIN ? n - g : VMC_DISK_GRAIN);
}

struct capture {
    struct vmc_writer *w;
    uint32_t disk;
    uint64_t extents, bytes;
    struct digest dg;
};

/* A run is one DISK_EXTENT, written from the read buffer itself. */
static int capture_run(void *arg, uint64_t off, const uint8_t *p, size_t n)
{
    struct capture *c = arg;
    struct vmc_wire_disk_extent e = { c->disk, 0, off };
    uint8_t head[VMC_DISK_EXTENT_HEAD];
    int rc;

    digest_run(&c->dg, off, p, n);
    vmc_disk_extent_encode(head, &e);
    if ((rc = vmc_writer_begin(c->w, VMC_REC_DISK_EXTENT,
                               (uint32_t)(sizeof(head) + n))) < 0 ||
        (rc = vmc_writer_write(c->w, head, sizeof(head))) < 0 ||
        (rc = vmc_writer_write(c->w, p, n)) < 0)
        return rc;
    c->extents++;
    c->bytes += n;
    return 0;
}

int vmc_writer_disk_content(struct vmc_writer *w, const struct vmc_disk_info *di,
                            int fd, vmc_progress_fn cb, void *arg)
{
    struct capture c = { .w = w, .disk = di->index };
    struct vmc_wire_disk_end e = { .disk = di->index };
    uint8_t end[VMC_DISK_END_LEN];
    int rc;

    if ((rc = digest_init(writer_ctx(w), &c.dg, di->virtual_size)) < 0)
        return rc;
    if ((rc = scan_file(writer_ctx(w), di, fd, capture_run, &c, cb,
                        arg)) < 0) {
        digest_free(&c.dg);
        return rc;
    }
    e.extents = c.extents;
    e.data_bytes = c.bytes;
    if ((rc = digest_final(writer_ctx(w), &c.dg, e.digest)) < 0)
        return rc;
    vmc_disk_end_encode(end, &e);
    return vmc_writer_record(w, VMC_REC_DISK_END, end, sizeof(end));
}

/* ======================== reading ======================== */

struct dstate {
    struct vmc_disk_info info;
    int seen, ended;
    int sink;                   /* fd to pwrite accepted grains into, or -1 */
    uint64_t next;              /* where the next extent may start */
    uint64_t extents, bytes;
    struct digest dg;
    uint8_t digest[VMC_DISK_DIGEST_LEN];
};

struct vmc_disks {
    struct vmc_ctx *ctx;
    int n;
    struct dstate *d[VMC_DISK_MAX];     /* by order of DISK records */
    uint8_t *grain;                     /* one grain being assembled */
};

int vmc_disks_new(struct vmc_ctx *ctx, struct vmc_disks **out)
{
    struct vmc_disks *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (!t || !(t->grain = malloc(VMC_DISK_GRAIN))) {
        free(t);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    t->ctx = ctx;
    *out = t;
    return 0;
}

void vmc_disks_free(struct vmc_disks *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n; i++) {
        digest_free(&t->d[i]->dg);
        free(t->d[i]);
    }
    free(t->grain);
    free(t);
}

int vmc_disks_count(const struct vmc_disks *t)
{
    return t ? t->n : 0;
}

const struct vmc_disk_info *vmc_disks_get(const struct vmc_disks *t, int i)
{
    return t && i >= 0 && i < t->n ? &t->d[i]->info : NULL;
}

void vmc_disks_set_sink(struct vmc_disks *t, int i, int fd)
{
    if (t && i >= 0 && i < t->n)
        t->d[i]->sink = fd;
}

int vmc_disks_digest(const struct vmc_disks *t, int i,
                     uint8_t out[VMC_DISK_DIGEST_LEN])
{
    if (!t || i < 0 || i >= t->n || !t->d[i]->ended)
        return 0;
    memcpy(out, t->d[i]->digest, VMC_DISK_DIGEST_LEN);
    return 1;
}

static struct dstate *by_index(struct vmc_disks *t, uint32_t idx)
{
    for (int i = 0; i < t->n; i++)
        if (t->d[i]->info.index == idx)
            return t->d[i];
    return NULL;
}

static int disk_fail(struct vmc_disks *t, const struct vmc_record *rec, int code,
                     const struct dstate *s, const char *fmt, const char *why)
{
    if (s)
        return vmc_set_error_at(t->ctx, code, VMC_AT_RECORD, rec->offset,
                                rec->type, "disk %u (%s): %s", s->info.index,
                                s->info.id, why ? why : fmt);
    return vmc_set_error_at(t->ctx, code, VMC_AT_RECORD, rec->offset, rec->type,
                            "%s", why ? why : fmt);
}

static int on_disk(struct vmc_disks *t, struct vmc_reader *r,
                   const struct vmc_record *rec)
{
    struct vmc_wire_disk d;
    const uint8_t *id, *path;
    const char *why;
    struct dstate *s;
    uint8_t *b;
    size_t len;
    int rc;

    if ((rc = vmc_reader_read_all(r, &b, &len)) < 0)
        return rc;
    if ((rc = vmc_disk_decode(&d, b, len, &id, &path, &why)) < 0) {
        free(b);
        return disk_fail(t, rec, rc, NULL, NULL, why);
    }
    if (by_index(t, d.disk) || t->n == VMC_DISK_MAX) {
        free(b);
        return disk_fail(t, rec, VMC_E_FORMAT, NULL, NULL, "DISK index given "
                         "twice");
    }
    if (!(s = calloc(1, sizeof(*s)))) {
        free(b);
        return vmc_set_error(t->ctx, VMC_E_NOMEM, "out of memory");
    }
    s->info.index = d.disk;
    s->info.flags = d.flags;
    s->info.virtual_size = d.virtual_size;
    s->info.block_size = d.block_size;
    s->info.source_format = d.source_format;
    memcpy(s->info.id, id, d.id_len);
    memcpy(s->info.path, path, d.path_len);
    s->sink = -1;
    free(b);
    if ((rc = digest_init(t->ctx, &s->dg, d.virtual_size)) < 0) {
        free(s);
        return rc;
    }
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->d[i]->info.id, s->info.id)) {
            digest_free(&s->dg);
            free(s);
            return disk_fail(t, rec, VMC_E_FORMAT, NULL, NULL, "DISK id given "
                             "twice");
        }
    t->d[t->n++] = s;
    return 0;
}

/* One whole grain (or the disk's last, shorter one) went by at off. */
static int grain_done(struct vmc_disks *t, struct dstate *s, uint64_t off,
                      const uint8_t *g, size_t n)
{
    if (all_zero(g, n))
        return 0;                       /* a sink file is sparse: leave it */
    digest_grain(&s->dg, off / VMC_DISK_GRAIN, g, n);
    if (s->sink >= 0) {
        size_t w = 0;
        while (w < n) {
            ssize_t k = pwrite(s->sink, g + w, n - w, (off_t)(off + w));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return vmc_set_error(t->ctx, VMC_E_IO, "disk %s: write: %s",
                                     s->info.id, k < 0 ? strerror(errno)
                                                       : "no progress");
            w += (size_t)k;
        }
    }
    return 0;
}

static int on_extent(struct vmc_disks *t, struct vmc_reader *r,
                     const struct vmc_record *rec)
{
    struct vmc_wire_disk_extent e;
    uint8_t head[VMC_DISK_EXTENT_HEAD];
    uint64_t len = rec->length - VMC_DISK_EXTENT_HEAD, off;
    const char *why;
    struct dstate *s;
    size_t fill = 0;
    ssize_t n;
    int rc;

    if ((n = vmc_reader_read(r, head, sizeof(head))) < 0)
        return (int)n;
    if ((rc = vmc_disk_extent_decode(&e, head, rec->length, &why)) < 0)
        return disk_fail(t, rec, rc, NULL, NULL, why);
    if (!(s = by_index(t, e.disk)))
        return disk_fail(t, rec, VMC_E_FORMAT, NULL, NULL, "DISK_EXTENT of a "
                         "disk no DISK record describes");
    if (!(s->info.flags & VMC_DF_CARRIED) || s->ended)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, s->ended ?
                         "DISK_EXTENT after its DISK_END" :
                         "DISK_EXTENT of a disk that is not carried");
    if (e.offset < s->next)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, "DISK_EXTENT overlaps "
                         "or precedes the one before it");
    if (e.offset > s->info.virtual_size || len > s->info.virtual_size - e.offset)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, "DISK_EXTENT reaches "
                         "beyond the disk's virtual size");
    if (len % VMC_DISK_GRAIN && e.offset + len != s->info.virtual_size)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, "DISK_EXTENT is not "
                         "whole grains and does not end the disk");
    off = e.offset;
    for (;;) {
        const void *p;
        if ((n = vmc_reader_read_ptr(r, &p, VMC_DISK_GRAIN - fill)) < 0)
            return (int)n;
        if (n == 0)
            break;
        memcpy(t->grain + fill, p, (size_t)n);
        fill += (size_t)n;
        if (fill == VMC_DISK_GRAIN) {
            if ((rc = grain_done(t, s, off, t->grain, fill)) < 0)
                return rc;
            off += fill;
            fill = 0;
        }
    }
    if (fill && (rc = grain_done(t, s, off, t->grain, fill)) < 0)
        return rc;
    s->next = e.offset + len;
    s->extents++;
    s->bytes += len;
    return 0;
}

static int on_end(struct vmc_disks *t, struct vmc_reader *r,
                  const struct vmc_record *rec)
{
    struct vmc_wire_disk_end e;
    uint8_t b[VMC_DISK_END_LEN];
    const char *why;
    struct dstate *s;
    ssize_t n;
    int rc;

    if ((n = vmc_reader_read(r, b, sizeof(b))) < 0)
        return (int)n;
    if ((rc = vmc_disk_end_decode(&e, b, (size_t)n, &why)) < 0)
        return disk_fail(t, rec, rc, NULL, NULL, why);
    if (!(s = by_index(t, e.disk)))
        return disk_fail(t, rec, VMC_E_FORMAT, NULL, NULL, "DISK_END of a disk "
                         "no DISK record describes");
    if (!(s->info.flags & VMC_DF_CARRIED) || s->ended)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, s->ended ?
                         "second DISK_END" : "DISK_END of a disk that is not "
                         "carried");
    if (e.extents != s->extents || e.data_bytes != s->bytes)
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, "DISK_END counts do "
                         "not match its extents");
    if ((rc = digest_final(t->ctx, &s->dg, s->digest)) < 0)
        return rc;
    if (sodium_memcmp(s->digest, e.digest, VMC_DISK_DIGEST_LEN))
        return disk_fail(t, rec, VMC_E_FORMAT, s, NULL, "content digest does "
                         "not match (the disk is not what was saved)");
    s->ended = 1;
    return 0;
}

int vmc_disks_record(struct vmc_disks *t, struct vmc_reader *r,
                     const struct vmc_record *rec)
{
    switch (rec->type) {
    case VMC_REC_DISK: return on_disk(t, r, rec);
    case VMC_REC_DISK_EXTENT: return on_extent(t, r, rec);
    case VMC_REC_DISK_END: return on_end(t, r, rec);
    }
    return 0;
}

int vmc_disks_finish(struct vmc_disks *t, uint64_t end_offset)
{
    for (int i = 0; t && i < t->n; i++)
        if ((t->d[i]->info.flags & VMC_DF_CARRIED) && !t->d[i]->ended)
            return vmc_set_error_at(t->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                    end_offset, VMC_REC_END, "disk %u (%s): "
                                    "carried, but the stream ends without its "
                                    "DISK_END", t->d[i]->info.index,
                                    t->d[i]->info.id);
    return 0;
}

static int digest_only(void *arg, uint64_t off, const uint8_t *p, size_t n)
{
    digest_run(arg, off, p, n);
    return 0;
}

int vmc_disk_file_digest(struct vmc_ctx *ctx, int fd, uint64_t size,
                         uint8_t out[VMC_DISK_DIGEST_LEN])
{
    struct vmc_disk_info di = { .id = "file", .virtual_size = size,
                                .source_format = VMC_DISK_FMT_RAW };
    struct digest dg;
    int rc;

    memset(out, 0, VMC_DISK_DIGEST_LEN);
    if ((rc = digest_init(ctx, &dg, size)) < 0)
        return rc;
    if ((rc = scan_file(ctx, &di, fd, digest_only, &dg, NULL, NULL)) < 0) {
        digest_free(&dg);
        return rc;
    }
    return digest_final(ctx, &dg, out);
}

static int disk_file_size(struct vmc_ctx *ctx, int fd, unsigned format,
                          const char *what, uint64_t *size)
{
    struct stat st;
    uint8_t h[32];

    *size = 0;
    if (fstat(fd, &st) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "disk %s: %s", what, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "disk %s: not a regular "
                             "file (block devices are not carried yet)", what);
    if (format == VMC_DISK_FMT_QCOW2) {
        if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
            memcmp(h, "QFI\xfb", 4))
            return vmc_set_error(ctx, VMC_E_FORMAT, "disk %s: not a qcow2 file",
                                 what);
        for (int i = 0; i < 8; i++)             /* big-endian, offset 24 */
            *size = *size << 8 | h[24 + i];
    } else {
        *size = (uint64_t)st.st_size;
    }
    if (!*size || *size % 512 || *size > VMC_DISK_SIZE_MAX)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "disk %s: size %llu is not "
                             "a non-zero multiple of 512", what,
                             (unsigned long long)*size);
    return 0;
}

int vmc_disk_open(struct vmc_ctx *ctx, const char *path, unsigned format,
                  const char *id, int *fd, uint64_t *size)
{
    int rc;

    *size = 0;
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "disk %s: %s: %s", id, path,
                             strerror(errno));
    if ((rc = disk_file_size(ctx, *fd, format, id, size)) < 0) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}
