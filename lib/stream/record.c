/*
 * record.c - the record layer: writer, strict parser, reader, IMAGE_INFO.
 *
 * Owns: records over chunks, and every per-record rule of the spec.
 * Must not: know what a record body means beyond IMAGE_INFO and END.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define BACKEND_PIECE (1u << 20)

static const uint8_t zeros[8];

const char *vmc_record_name(uint32_t type)
{
    switch (type) {
    case VMC_REC_IMAGE_INFO: return "IMAGE_INFO";
    case VMC_REC_DOMAIN_CONFIG: return "DOMAIN_CONFIG";
    case VMC_REC_BACKEND_STREAM: return "BACKEND_STREAM";
    case VMC_REC_END: return "END";
    case VMC_REC_DISK: return "DISK";
    case VMC_REC_DISK_EXTENT: return "DISK_EXTENT";
    case VMC_REC_DISK_END: return "DISK_END";
    case VMC_REC_NOTE: return "NOTE";
    case VMC_REC_PRECOPY_ROUND: return "PRECOPY_ROUND";
    }
    return NULL;
}

static const char *rname(uint32_t type, char buf[24])
{
    const char *n = vmc_record_name(type);

    if (n)
        return n;
    snprintf(buf, 24, "record 0x%08x", type);
    return buf;
}

/* ======================== writer ======================== */

struct vmc_writer {
    struct vmc_ctx *ctx;
    struct vmc_header *h;
    struct chunkw *cw;
    uint64_t off;             /* plaintext bytes written */
    uint64_t records;
    uint64_t backend_bytes;
    uint32_t remaining;       /* body bytes still due for the open record */
    uint32_t pad;
    uint32_t type;
    int finished;
    uint8_t *piece;           /* BACKEND_STREAM copy buffer */
};

int vmc_writer_new(struct vmc_ctx *ctx, int fd, const struct vmc_keys *keys,
                   const struct vmc_writer_opts *o, struct vmc_writer **out)
{
    struct vmc_writer *w = calloc(1, sizeof(*w));
    struct vmc_writer_opts def = { 0 };
    int rc;

    *out = NULL;
    if (!w)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if (!o)
        o = &def;
    w->ctx = ctx;
    if (o->session)
        rc = hdr_new_session(ctx, o->session, keys,
                             o->chunk_size ? o->chunk_size : VMC_CHUNK_DEFAULT,
                             o->label, &w->h);
    else
        rc = hdr_new(ctx, keys, o->chunk_size ? o->chunk_size : VMC_CHUNK_DEFAULT,
                     o->label, o->header_flags,
                     o->unsigned_v1 ? VMC_VERSION_UNSIGNED : VMC_VERSION, &w->h);
    if (rc < 0)
        goto out;
    rc = chunkw_new(ctx, fd, w->h, o->level ? o->level : 1, o->adaptive,
                    o->threads, &w->cw);
    if (rc < 0)
        goto out;
    rc = vmc_header_write(ctx, w->h, fd);
out:
    if (rc < 0)
        vmc_writer_free(w);
    else
        *out = w;
    return rc;
}

static int pwrite_(struct vmc_writer *w, const void *buf, size_t len)
{
    int rc = chunkw_write(w->cw, buf, len);

    if (rc == 0)
        w->off += len;
    return rc;
}

int vmc_writer_begin(struct vmc_writer *w, uint32_t type, uint32_t len)
{
    uint8_t hdr[8];
    char nb[24];
    int rc;

    if (w->finished || w->remaining)
        return vmc_set_error(w->ctx, VMC_E_INVAL,
                             "%s: record begun before the previous one ended",
                             rname(type, nb));
    if (len > VMC_REC_MAX_LEN)
        return vmc_set_error(w->ctx, VMC_E_INVAL,
                             "%s @0x%llx: length 0x%x > max 0x%x",
                             rname(type, nb), (unsigned long long)w->off, len,
                             VMC_REC_MAX_LEN);
    if (type == VMC_REC_END)
        return vmc_set_error(w->ctx, VMC_E_INVAL, "END is written by finish");
    vmc_put32(hdr, type);
    vmc_put32(hdr + 4, len);
    if ((rc = pwrite_(w, hdr, 8)) < 0)
        return rc;
    w->records++;
    if (type == VMC_REC_BACKEND_STREAM)
        w->backend_bytes += len;
    w->type = type;
    w->remaining = len;
    w->pad = (uint32_t)(VMC_PAD8(len) - len);
    if (len == 0 && w->pad == 0)
        return 0;
    if (len == 0)
        return pwrite_(w, zeros, w->pad);
    return 0;
}

int vmc_writer_write(struct vmc_writer *w, const void *buf, size_t len)
{
    int rc;

    if (len > w->remaining)
        return vmc_set_error(w->ctx, VMC_E_INVAL,
                             "record @0x%llx: %zu bytes more than its length",
                             (unsigned long long)w->off, len - w->remaining);
    if ((rc = pwrite_(w, buf, len)) < 0)
        return rc;
    w->remaining -= (uint32_t)len;
    if (w->remaining == 0 && w->pad)
        return pwrite_(w, zeros, w->pad);
    return 0;
}

int vmc_writer_record(struct vmc_writer *w, uint32_t type, const void *body,
                      size_t len)
{
    int rc;

    if (len > VMC_REC_MAX_LEN)
        return vmc_set_error(w->ctx, VMC_E_INVAL,
                             "record 0x%08x: length 0x%zx > max 0x%x", type, len,
                             VMC_REC_MAX_LEN);
    if ((rc = vmc_writer_begin(w, type, (uint32_t)len)) < 0)
        return rc;
    return len ? vmc_writer_write(w, body, len) : 0;
}

int vmc_writer_describe(struct vmc_writer *w, const struct vmc_image_meta *m,
                        uint32_t cfg_format, const uint8_t *cfg, size_t cfg_len)
{
    struct vmc_image_meta sm = *m;
    uint8_t info[2048], head[8];
    size_t ilen;
    int rc;

    gethostname(sm.host, sizeof(sm.host) - 1);
    sm.host[sizeof(sm.host) - 1] = '\0';
    snprintf(sm.tool_version, sizeof(sm.tool_version), "%s", VMC_TOOL_VERSION);
    sm.time_unix = (int64_t)time(NULL);
    if (vmc_image_info_build(&sm, info, sizeof(info), &ilen) < 0)
        return vmc_set_error(w->ctx, VMC_E_LIMIT, "IMAGE_INFO: metadata too "
                             "large");
    if (cfg && cfg_len > VMC_REC_MAX_LEN - sizeof(head))
        return vmc_set_error(w->ctx, VMC_E_LIMIT, "DOMAIN_CONFIG: %zu bytes > "
                             "max", cfg_len);
    if ((rc = vmc_writer_record(w, VMC_REC_IMAGE_INFO, info, ilen)) < 0 || !cfg)
        return rc;
    vmc_domain_config_encode(head, &(struct vmc_wire_domain_config){ cfg_format,
                                                                      0 });
    if ((rc = vmc_writer_begin(w, VMC_REC_DOMAIN_CONFIG,
                               (uint32_t)(cfg_len + sizeof(head)))) < 0 ||
        (rc = vmc_writer_write(w, head, sizeof(head))) < 0)
        return rc;
    return cfg_len ? vmc_writer_write(w, cfg, cfg_len) : 0;
}

int vmc_writer_copy_backend(struct vmc_writer *w, int fd, vmc_progress_fn cb,
                            void *arg)
{
    int rc;

    if (!w->piece && !(w->piece = malloc(BACKEND_PIECE)))
        return vmc_set_error(w->ctx, VMC_E_NOMEM, "out of memory");
    for (;;) {
        size_t got;

        char what[48];

        snprintf(what, sizeof(what), "backend stream @0x%llx",
                 (unsigned long long)w->backend_bytes);
        if ((rc = io_read_full(w->ctx, fd, w->piece, BACKEND_PIECE, &got,
                               what)) < 0)
            return rc;
        if (got == 0)
            return 0;
        if ((rc = vmc_writer_record(w, VMC_REC_BACKEND_STREAM, w->piece, got)) < 0)
            return rc;
        if (cb && cb(arg, w->backend_bytes))
            return vmc_set_error(w->ctx, VMC_E_CANCELED, "interrupted");
        if (got < BACKEND_PIECE)
            return 0;
    }
}

int vmc_writer_flush(struct vmc_writer *w)
{
    return chunkw_flush(w->cw);
}

int vmc_writer_finish(struct vmc_writer *w, uint64_t total_ns, uint64_t down_ns)
{
    struct vmc_wire_end e;
    uint8_t hdr[8], body[40];
    int rc;

    if (w->finished)
        return 0;
    if (w->remaining)
        return vmc_set_error(w->ctx, VMC_E_INVAL,
                             "finish with %u body bytes still due", w->remaining);
    e.records = w->records;
    e.backend_bytes = w->backend_bytes;
    e.plaintext_bytes = w->off;
    e.total_time_ns = total_ns;
    e.downtime_ns = down_ns;
    vmc_end_encode(body, &e);
    vmc_put32(hdr, VMC_REC_END);
    vmc_put32(hdr + 4, sizeof(body));
    if ((rc = pwrite_(w, hdr, 8)) < 0 || (rc = pwrite_(w, body, sizeof(body))) < 0)
        return rc;
    if ((rc = chunkw_close(w->cw)) < 0)
        return rc;
    w->finished = 1;
    return 0;
}

void vmc_writer_stats(const struct vmc_writer *w, struct vmc_stats *st)
{
    st->records = w->records;
    st->backend_bytes = w->backend_bytes;
    st->plaintext_bytes = w->off;
    st->stream_bytes = w->h->raw_len + chunkw_bytes_out(w->cw);
    st->chunks = chunkw_chunks(w->cw);
}

struct vmc_ctx *writer_ctx(const struct vmc_writer *w)
{
    return w->ctx;
}

void vmc_writer_stream_id(const struct vmc_writer *w, uint8_t id[16])
{
    memcpy(id, w->h->h.stream_id, 16);
}

void vmc_writer_free(struct vmc_writer *w)
{
    if (!w)
        return;
    chunkw_free(w->cw);
    vmc_header_free(w->h);
    free(w->piece);
    free(w);
}

/* ======================== strict parser ======================== */

enum { ST_FIRST, ST_CONFIG, ST_DISKS, ST_DATA, ST_END };

struct vmc_recparse {
    struct vmc_ctx *ctx;
    vmc_src_fn fn;
    vmc_peek_fn peek;         /* optional */
    void *src;
    uint64_t off;             /* plaintext bytes consumed */
    int state;
    struct vmc_record cur;
    uint32_t remaining;
    uint8_t head[8];          /* the open body's first octets (its rules) */
    uint64_t records, backend_bytes;
    struct vmc_end_info end;
};

struct vmc_recparse *vmc_recparse_new(struct vmc_ctx *ctx, vmc_src_fn fn,
                                      void *src)
{
    struct vmc_recparse *p = calloc(1, sizeof(*p));

    if (!p) {
        vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        return NULL;
    }
    p->ctx = ctx;
    p->fn = fn;
    p->src = src;
    return p;
}

void vmc_recparse_free(struct vmc_recparse *p)
{
    free(p);
}

/* A source's error, named: running out before END is a truncation. */
static int src_error(struct vmc_recparse *p, int rc, const char *what)
{
    if (rc == VMC_E_TRUNC && p->ctx->code == 0) {
        vmc_set_error(p->ctx, VMC_E_TRUNC, "%s @0x%llx: authenticated stream "
                      "ends early (no END record)", what,
                      (unsigned long long)p->off);
        vmc_error_locate(p->ctx, VMC_AT_RECORD, p->off, p->cur.type);
    }
    return rc;
}

static int src_read(struct vmc_recparse *p, void *buf, size_t n,
                    const char *what)
{
    int rc = p->fn(p->src, buf, n);

    if (rc < 0)
        return src_error(p, rc, what);
    p->off += n;
    return 0;
}

/* The rules on a body's content that the record layer checks itself,
 * whoever reads the body: the reserved word at offset 4 of DOMAIN_CONFIG,
 * PRECOPY_ROUND, DISK_EXTENT and DISK_END is zero (the disk rules that
 * need a DISK's fields are disk.c's). */
static int body_rules(struct vmc_recparse *p)
{
    if ((p->cur.type == VMC_REC_DOMAIN_CONFIG ||
         p->cur.type == VMC_REC_PRECOPY_ROUND ||
         p->cur.type == VMC_REC_DISK_EXTENT ||
         p->cur.type == VMC_REC_DISK_END) && vmc_get32(p->head + 4))
        return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                p->cur.offset, p->cur.type,
                                "reserved field not zero");
    return 0;
}

/* n body octets at b went by: keeps the head, and checks the body's rules
 * once the last one has. */
static int consumed(struct vmc_recparse *p, const void *b, size_t n)
{
    uint32_t pos = p->cur.length - p->remaining;

    if (pos < sizeof(p->head))
        memcpy(p->head + pos, b, n < sizeof(p->head) - pos ? n
                                                           : sizeof(p->head) - pos);
    p->remaining -= (uint32_t)n;
    return p->remaining ? 0 : body_rules(p);
}

/* Consumes the rest of the current body and its zero padding. */
static int skip_rest(struct vmc_recparse *p)
{
    uint8_t buf[4096];
    char nb[24];
    uint32_t pad = (uint32_t)(VMC_PAD8(p->cur.length) - p->cur.length);
    int rc;

    while (p->remaining) {
        uint32_t n = p->remaining < sizeof(buf) ? p->remaining : sizeof(buf);
        if ((rc = src_read(p, buf, n, rname(p->cur.type, nb))) < 0 ||
            (rc = consumed(p, buf, n)) < 0)
            return rc;
    }
    if (p->cur.type == 0 && p->cur.length == 0)
        return 0;                   /* nothing open yet */
    if ((rc = src_read(p, buf, pad, rname(p->cur.type, nb))) < 0)
        return rc;
    for (uint32_t i = 0; i < pad; i++)
        if (buf[i])
            return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                    p->cur.offset, p->cur.type,
                                    "padding not zero");
    p->cur.type = 0;
    p->cur.length = 0;
    return 0;
}

static int parse_end(struct vmc_recparse *p, uint64_t at, uint32_t len)
{
    uint8_t body[40];
    struct vmc_wire_end e;
    int rc;

    if (len != sizeof(body))
        return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD, at,
                                VMC_REC_END, "length %u, expected 40", len);
    if ((rc = src_read(p, body, sizeof(body), "END")) < 0)
        return rc;
    vmc_end_decode(&e, body);
    if (e.records != p->records || e.backend_bytes != p->backend_bytes ||
        e.plaintext_bytes != at)
        return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD, at,
                                VMC_REC_END, "counts do not match the stream "
                                "(records %llu/%llu, backend bytes %llu/%llu)",
                             (unsigned long long)e.records,
                             (unsigned long long)p->records,
                             (unsigned long long)e.backend_bytes,
                             (unsigned long long)p->backend_bytes);
    p->end.records = e.records;
    p->end.backend_bytes = e.backend_bytes;
    p->end.plaintext_bytes = e.plaintext_bytes;
    p->end.total_time_ns = e.total_time_ns;
    p->end.downtime_ns = e.downtime_ns;
    p->state = ST_END;
    return 0;
}

int vmc_recparse_next(struct vmc_recparse *p, struct vmc_record *rec)
{
    uint8_t hdr[8];
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (p->state == ST_END)
        return 0;
    if ((rc = skip_rest(p)) < 0)
        return rc;
    for (;;) {
        uint64_t at = p->off;
        uint32_t type, len;

        if ((rc = src_read(p, hdr, 8, "record header")) < 0)
            return rc;
        type = vmc_get32(hdr);
        len = vmc_get32(hdr + 4);
        if (len > VMC_REC_MAX_LEN)
            return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD, at,
                                    type, "length 0x%x > max 0x%x", len,
                                    VMC_REC_MAX_LEN);
        if (p->state == ST_FIRST && type != VMC_REC_IMAGE_INFO)
            return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD, at,
                                    type, "first record must be IMAGE_INFO");
        switch (type) {
        case VMC_REC_IMAGE_INFO:
            if (p->state != ST_FIRST)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "duplicate");
            if (len < sizeof(struct vmc_wire_image_info))
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u < 48", len);
            p->state = ST_CONFIG;
            break;
        case VMC_REC_DOMAIN_CONFIG:
            if (p->state != ST_CONFIG)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "duplicate or after backend "
                                        "data");
            if (len < sizeof(struct vmc_wire_domain_config))
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u < 8", len);
            p->state = ST_DISKS;
            break;
        case VMC_REC_DISK:
            if (p->state != ST_CONFIG && p->state != ST_DISKS)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "after backend or disk data");
            if (len < VMC_DISK_FIXED_LEN ||
                len > VMC_DISK_FIXED_LEN + VMC_DISK_ID_MAX + VMC_DISK_PATH_MAX)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u outside 48..%u",
                                        len, VMC_DISK_FIXED_LEN +
                                        VMC_DISK_ID_MAX + VMC_DISK_PATH_MAX);
            p->state = ST_DISKS;
            break;
        case VMC_REC_DISK_EXTENT:
            if (len <= VMC_DISK_EXTENT_HEAD)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u holds no data",
                                        len);
            p->state = ST_DATA;
            break;
        case VMC_REC_DISK_END:
            if (len != VMC_DISK_END_LEN)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u, expected 56",
                                        len);
            p->state = ST_DATA;
            break;
        case VMC_REC_BACKEND_STREAM:
            if (len == 0)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "empty");
            p->state = ST_DATA;
            p->backend_bytes += len;
            break;
        case VMC_REC_PRECOPY_ROUND:
            if (len != 24)
                return vmc_set_error_at(p->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                        at, type, "length %u, expected 24",
                                        len);
            break;
        case VMC_REC_END:
            return parse_end(p, at, len);
        default:
            if (!(type & VMC_REC_OPTIONAL))
                return vmc_set_error_at(p->ctx, VMC_E_UNSUPPORTED,
                                        VMC_AT_RECORD, at, type,
                                        "unknown mandatory record: refusing "
                                        "(written by a newer vmckpt?)");
            break;
        }
        p->records++;
        p->cur.type = type;
        p->cur.length = len;
        p->cur.offset = at;
        p->remaining = len;
        memset(p->head, 0, sizeof(p->head));
        if ((type & VMC_REC_OPTIONAL) && !vmc_record_name(type)) {
            if ((rc = skip_rest(p)) < 0)       /* unknown optional */
                return rc;
            continue;
        }
        *rec = p->cur;
        return 1;
    }
}

void vmc_recparse_set_peek(struct vmc_recparse *p, vmc_peek_fn peek)
{
    p->peek = peek;
}

/* Like vmc_recparse_read() without the copy, when the source can lend. */
static ssize_t recparse_read_ptr(struct vmc_recparse *p, const void **ptr,
                                 size_t len)
{
    char nb[24];
    size_t got;
    int rc;

    if (len > p->remaining)
        len = p->remaining;
    if (len == 0)
        return 0;
    if ((rc = p->peek(p->src, ptr, len, &got)) < 0)
        return src_error(p, rc, rname(p->cur.type, nb));
    p->off += got;
    if ((rc = consumed(p, *ptr, got)) < 0)
        return rc;
    return (ssize_t)got;
}

ssize_t vmc_recparse_read(struct vmc_recparse *p, void *buf, size_t len)
{
    char nb[24];
    int rc;

    if (len > p->remaining)
        len = p->remaining;
    if (len == 0)
        return 0;
    if ((rc = src_read(p, buf, len, rname(p->cur.type, nb))) < 0 ||
        (rc = consumed(p, buf, len)) < 0)
        return rc;
    return (ssize_t)len;
}

void vmc_recparse_end(const struct vmc_recparse *p, struct vmc_end_info *e)
{
    *e = p->end;
}

/* ======================== reader ======================== */

struct vmc_reader {
    struct vmc_ctx *ctx;
    struct vmc_header *h;
    struct chunkr *cr;
    struct vmc_recparse *p;
};

int vmc_reader_new(struct vmc_ctx *ctx, int fd, struct vmc_header *h,
                   int threads, int exact_eof, struct vmc_reader **out)
{
    return vmc_reader_new_timeout(ctx, fd, h, threads, exact_eof, -1, out);
}

int vmc_reader_new_timeout(struct vmc_ctx *ctx, int fd, struct vmc_header *h,
                           int threads, int exact_eof, int idle_ms,
                           struct vmc_reader **out)
{
    struct vmc_reader *r = calloc(1, sizeof(*r));
    int rc;

    *out = NULL;
    if (!r) {
        vmc_header_free(h);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    r->ctx = ctx;
    r->h = h;
    if ((rc = chunkr_new(ctx, fd, h, threads, exact_eof, idle_ms, &r->cr)) < 0)
        goto out;
    if ((r->p = vmc_recparse_new(ctx, chunkr_read, r->cr)))
        vmc_recparse_set_peek(r->p, chunkr_peek);
    if (!r->p) {
        rc = VMC_E_NOMEM;
        goto out;
    }
out:
    if (rc < 0)
        vmc_reader_free(r);
    else
        *out = r;
    return rc;
}

int vmc_reader_next(struct vmc_reader *r, struct vmc_record *rec)
{
    int rc = vmc_recparse_next(r->p, rec);

    if (rc != 0)
        return rc;
    rc = chunkr_at_end(r->cr);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return vmc_set_error_at(r->ctx, VMC_E_FORMAT, VMC_AT_RECORD,
                                r->p->end.plaintext_bytes, VMC_REC_END,
                                "data follows END in the stream");
    return 0;
}

ssize_t vmc_reader_read(struct vmc_reader *r, void *buf, size_t len)
{
    return vmc_recparse_read(r->p, buf, len);
}

ssize_t vmc_reader_read_ptr(struct vmc_reader *r, const void **ptr, size_t len)
{
    return recparse_read_ptr(r->p, ptr, len);
}

int vmc_reader_read_all(struct vmc_reader *r, uint8_t **buf, size_t *len)
{
    size_t n = r->p->remaining;
    uint8_t *b = malloc(n + 1);
    ssize_t got;

    *buf = NULL;
    *len = 0;
    if (!b)
        return vmc_set_error(r->ctx, VMC_E_NOMEM, "out of memory");
    got = n ? vmc_recparse_read(r->p, b, n) : 0;
    if (got < 0) {
        free(b);
        return (int)got;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

void vmc_reader_end(const struct vmc_reader *r, struct vmc_end_info *e)
{
    vmc_recparse_end(r->p, e);
}

void vmc_reader_stats(const struct vmc_reader *r, struct vmc_stats *st)
{
    st->records = r->p->records;
    st->backend_bytes = r->p->backend_bytes;
    st->plaintext_bytes = r->p->off;
    st->stream_bytes = r->h->raw_len + chunkr_bytes_in(r->cr);
    st->chunks = chunkr_chunks(r->cr);
}

void vmc_reader_stream_id(const struct vmc_reader *r, uint8_t id[16])
{
    memcpy(id, r->h->h.stream_id, 16);
}

struct vmc_ctx *reader_ctx(const struct vmc_reader *r)
{
    return r->ctx;
}

const struct vmc_header *vmc_reader_header(const struct vmc_reader *r)
{
    return r->h;
}

void vmc_reader_free(struct vmc_reader *r)
{
    if (!r)
        return;
    vmc_recparse_free(r->p);
    chunkr_free(r->cr);
    vmc_header_free(r->h);
    free(r);
}

/* ======================== IMAGE_INFO ======================== */

static int put_str(uint8_t *buf, size_t cap, size_t *off, uint16_t tag,
                   const char *s)
{
    size_t l = strlen(s), need;

    if (!l)
        return 0;
    if (l > VMC_INFO_STR_MAX)
        l = VMC_INFO_STR_MAX;
    need = 4 + ((l + 3) & ~(size_t)3);
    if (*off + need > cap)
        return VMC_E_LIMIT;
    vmc_put16(buf + *off, tag);
    vmc_put16(buf + *off + 2, (uint16_t)l);
    memset(buf + *off + 4, 0, need - 4);
    memcpy(buf + *off + 4, s, l);
    *off += need;
    return 0;
}

int vmc_image_info_build(const struct vmc_image_meta *m, uint8_t *buf,
                         size_t cap, size_t *len)
{
    struct vmc_wire_image_info ii;
    size_t off = sizeof(ii);

    *len = 0;
    if (cap < off)
        return VMC_E_LIMIT;
    memset(&ii, 0, sizeof(ii));
    memcpy(ii.uuid, m->uuid, 16);
    ii.memory_kib = m->memory_kib;
    ii.vcpus = m->vcpus;
    ii.backend = m->backend;
    ii.stream_format = m->stream_format;
    ii.time_unix = m->time_unix;
    ii.flags = m->flags;
    vmc_image_info_encode(buf, &ii);
    if (put_str(buf, cap, &off, VMC_INFO_NAME, m->name) ||
        put_str(buf, cap, &off, VMC_INFO_HOST, m->host) ||
        put_str(buf, cap, &off, VMC_INFO_BACKEND_VERSION, m->backend_version) ||
        put_str(buf, cap, &off, VMC_INFO_TOOL_VERSION, m->tool_version) ||
        put_str(buf, cap, &off, VMC_INFO_GUEST_TYPE, m->guest_type))
        return VMC_E_LIMIT;
    *len = off;
    return 0;
}

static void get_str(char *dst, size_t cap, const uint8_t *s, size_t l)
{
    if (l >= cap)
        l = cap - 1;
    memcpy(dst, s, l);
    dst[l] = '\0';
    for (size_t i = 0; i < l; i++)      /* never print control bytes */
        if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
            dst[i] = '?';
}

int vmc_image_info_parse(struct vmc_ctx *ctx, const uint8_t *buf, size_t len,
                         struct vmc_image_meta *m)
{
    struct vmc_wire_image_info ii;
    size_t off = sizeof(ii);
    unsigned seen = 0;                /* known tags met */

    memset(m, 0, sizeof(*m));
    if (len < sizeof(ii))
        return vmc_set_error(ctx, VMC_E_FORMAT, "IMAGE_INFO: length %zu < 48",
                             len);
    vmc_image_info_decode(&ii, buf);
    if (ii.reserved)
        return vmc_set_error(ctx, VMC_E_FORMAT,
                             "IMAGE_INFO: reserved field not zero");
    memcpy(m->uuid, ii.uuid, 16);
    m->memory_kib = ii.memory_kib;
    m->vcpus = ii.vcpus;
    m->backend = ii.backend;
    m->stream_format = ii.stream_format;
    m->time_unix = ii.time_unix;
    m->flags = ii.flags;
    while (off < len) {
        uint16_t tag, l;
        size_t need;

        if (len - off < 4)
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "IMAGE_INFO +0x%zx: truncated string tag", off);
        tag = vmc_get16(buf + off);
        l = vmc_get16(buf + off + 2);
        need = 4 + (((size_t)l + 3) & ~(size_t)3);
        if (l > VMC_INFO_STR_MAX || need > len - off)
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "IMAGE_INFO +0x%zx: string length %u out of "
                                 "range", off, l);
        for (size_t i = 4 + l; i < need; i++)
            if (buf[off + i])
                return vmc_set_error(ctx, VMC_E_FORMAT,
                                     "IMAGE_INFO +0x%zx: string padding not "
                                     "zero", off);
        if (tag >= VMC_INFO_NAME && tag <= VMC_INFO_GUEST_TYPE) {
            if (seen & (1u << tag))
                return vmc_set_error(ctx, VMC_E_FORMAT, "IMAGE_INFO +0x%zx: "
                                     "string tag %u twice", off, tag);
            seen |= 1u << tag;
        }
        switch (tag) {
        case VMC_INFO_NAME:
            get_str(m->name, sizeof(m->name), buf + off + 4, l);
            break;
        case VMC_INFO_HOST:
            get_str(m->host, sizeof(m->host), buf + off + 4, l);
            break;
        case VMC_INFO_BACKEND_VERSION:
            get_str(m->backend_version, sizeof(m->backend_version),
                    buf + off + 4, l);
            break;
        case VMC_INFO_TOOL_VERSION:
            get_str(m->tool_version, sizeof(m->tool_version), buf + off + 4, l);
            break;
        case VMC_INFO_GUEST_TYPE:
            get_str(m->guest_type, sizeof(m->guest_type), buf + off + 4, l);
            break;
        }
        off += need;
    }
    if (!m->name[0])
        return vmc_set_error(ctx, VMC_E_FORMAT, "IMAGE_INFO: no domain name");
    return 0;
}
