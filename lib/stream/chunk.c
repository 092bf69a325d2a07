/*
 * chunk.c - the chunk layer: compress-then-encrypt in parallel.
 *
 * A ring of 2*threads+2 jobs; worker threads compress+seal (writer) or
 * open+decompress (reader) whole chunks, in any order; the collector takes
 * them back strictly in index order.  Memory is bounded by the ring:
 *   jobs * (chunk_size + ZSTD_compressBound(chunk_size) + 20) + contexts,
 * whatever the image size.
 *
 * Owns: chunk framing, nonces, the FINAL bit, chunk signatures (signed in
 * the writer's workers, verified in the reader's before anything is
 * decrypted), compression levels.
 * Must not: know records (record.c frames them over this layer).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <sodium.h>
#include <zstd.h>

#include "internal.h"

enum { J_FREE, J_READY, J_DONE };

struct job {
    int state;
    int rc;                   /* <0: err holds the message */
    int final;
    int level;                /* writer: zstd level of this chunk */
    uint64_t idx;             /* chunk index */
    uint64_t off;             /* stream offset of the length word */
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_len;
    uint64_t trailing;        /* reader: offset of octets after a FINAL
                                 chunk, 0 if none (judged after its tag) */
    uint32_t lw;              /* reader: the length word as read */
    uint64_t err_at;          /* rc < 0: the offset err names */
    char err[256];
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *jobs;
    int njobs;
    uint64_t submit, take, collect;
    pthread_t th[64];
    int nth;
    int stop;
    int reader;               /* direction */
    uint32_t chunk_size;
    size_t sealed_max;        /* max sealed length */
    const uint8_t *key;       /* payload key, borrowed from the header */
    uint8_t ad[16];           /* stream id */
    int is_signed;            /* format 2: a chunk_sig follows each chunk */
    const uint8_t *sign_sk;   /* writer: borrowed from the header */
    uint8_t signer_pk[VMC_SIGN_PK_LEN];
};

static void job_fail(struct job *j, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(struct job *j, int rc, const char *fmt, ...)
{
    va_list ap;

    j->rc = rc;
    j->err_at = j->off;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
    va_end(ap);
}

/* Chunks are independent frames, so a chunk can only refer to itself.
 * The fast levels' defaults are tuned for one long stream (a 512 KiB
 * window, a small hash table); give them the whole chunk as window and a
 * table sized for it, which wins back what cutting the stream into frames
 * costs (about 1 % on guest memory, for about 5 % more time).  Levels 3
 * and up already use at least this; the negative levels of the adaptive
 * writer keep their defaults (0), which are what makes them fast. */
static int cctx_level(ZSTD_CCtx *cc, const struct pool *p, int level)
{
    int wlog = 10, tuned = level >= 1 && level < 3;

    while (wlog < 27 && (1u << wlog) < p->chunk_size)
        wlog++;
    return ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel,
                                               level)) ||
           ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog,
                                               tuned ? wlog : 0)) ||
           ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_hashLog,
                                               tuned ? 17 : 0)) ? -1 : 0;
}

static void seal_job(struct pool *p, struct job *j, ZSTD_CCtx *cc, int *cur)
{
    uint8_t nonce[VMC_AEAD_NONCE_LEN];
    size_t z;

    if (j->level != *cur) {
        if (cctx_level(cc, p, j->level) < 0) {
            *cur = INT32_MIN;
            job_fail(j, VMC_E_INVAL, "chunk %llu: zstd level %d refused",
                     (unsigned long long)j->idx, j->level);
            return;
        }
        *cur = j->level;
    }
    z = ZSTD_compress2(cc, j->out + 4, p->sealed_max - VMC_AEAD_TAG_LEN,
                       j->in, j->in_len);
    if (ZSTD_isError(z)) {
        job_fail(j, VMC_E_INVAL, "chunk %llu: zstd: %s",
                 (unsigned long long)j->idx, ZSTD_getErrorName(z));
        return;
    }
    vmc_chunk_nonce(nonce, j->idx, j->final);
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(
        j->out + 4, j->out + 4 + z, NULL, j->out + 4, z, p->ad, sizeof(p->ad),
        NULL, nonce, p->key);
    vmc_put32(j->out, (uint32_t)(z + VMC_AEAD_TAG_LEN) |
                      (j->final ? VMC_CHUNK_FINAL : 0));
    j->out_len = 4 + z + VMC_AEAD_TAG_LEN;
    if (p->is_signed) {
        uint8_t msg[VMC_CHUNK_SIG_MSG_LEN];
        vmc_chunk_sig_msg(msg, p->ad, j->idx, vmc_get32(j->out), j->out + 4 + z);
        crypto_sign_detached(j->out + j->out_len, NULL, msg, sizeof(msg),
                             p->sign_sk);
        j->out_len += VMC_SIG_LEN;
    }
}

static void open_job(struct pool *p, struct job *j, ZSTD_DCtx *dc)
{
    uint8_t nonce[VMC_AEAD_NONCE_LEN];
    size_t clen = j->in_len - VMC_AEAD_TAG_LEN, fsz;
    unsigned long long content;
    unsigned long long idx = j->idx, off = j->off;

    if (p->is_signed) {         /* proven the signer's before it is opened */
        uint8_t msg[VMC_CHUNK_SIG_MSG_LEN];
        vmc_chunk_sig_msg(msg, p->ad, j->idx, j->lw, j->in + clen);
        if (crypto_sign_verify_detached(j->in + j->in_len, msg, sizeof(msg),
                                        p->signer_pk) != 0) {
            job_fail(j, VMC_E_AUTH,
                     "chunk %llu @0x%llx: signature does not verify (not the "
                     "signer's: forged, spliced, reordered%s or damaged)", idx,
                     off, j->final ? "" : ", truncated");
            return;
        }
    }
    vmc_chunk_nonce(nonce, j->idx, j->final);
    if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(
            j->in, NULL, j->in, clen, j->in + clen, p->ad, sizeof(p->ad), nonce,
            p->key) != 0) {
        job_fail(j, VMC_E_AUTH,
                 "chunk %llu @0x%llx: authentication failed (damaged, "
                 "reordered%s or forged)", idx, off,
                 j->final ? "" : ", truncated");
        return;
    }
    if (j->trailing) {          /* an authentic FINAL chunk, then more */
        job_fail(j, VMC_E_FORMAT, "@0x%llx: data after the final chunk",
                 (unsigned long long)j->trailing);
        j->err_at = j->trailing;
        return;
    }
    fsz = ZSTD_findFrameCompressedSize(j->in, clen);
    content = ZSTD_getFrameContentSize(j->in, clen);
    if (ZSTD_isError(fsz) || fsz != clen ||
        content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
        job_fail(j, VMC_E_FORMAT,
                 "chunk %llu @0x%llx: not exactly one zstd frame with a content "
                 "size", idx, off);
        return;
    }
    if (content > p->chunk_size || (content == 0 && !j->final)) {
        job_fail(j, VMC_E_FORMAT,
                 "chunk %llu @0x%llx: content size %llu outside 1..%u", idx, off,
                 content, p->chunk_size);
        return;
    }
    j->out_len = ZSTD_decompressDCtx(dc, j->out, p->chunk_size, j->in, clen);
    if (ZSTD_isError(j->out_len) || j->out_len != content) {
        job_fail(j, VMC_E_FORMAT, "chunk %llu @0x%llx: zstd: %s", idx, off,
                 ZSTD_isError(j->out_len) ? ZSTD_getErrorName(j->out_len)
                                          : "size mismatch");
        j->out_len = 0;
    }
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    ZSTD_CCtx *cc = p->reader ? NULL : ZSTD_createCCtx();
    ZSTD_DCtx *dc = p->reader ? ZSTD_createDCtx() : NULL;
    int cur = INT32_MIN;                  /* level cc is set to */

    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct job *j;

        while (!p->stop && p->take >= p->submit)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        j = &p->jobs[p->take++ % (uint64_t)p->njobs];
        pthread_mutex_unlock(&p->mu);
        if (j->rc == 0) {
            if (!cc && !dc)
                job_fail(j, VMC_E_NOMEM, "zstd: cannot create context");
            else if (p->reader)
                open_job(p, j, dc);
            else
                seal_job(p, j, cc, &cur);
        }
        pthread_mutex_lock(&p->mu);
        j->state = J_DONE;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    ZSTD_freeCCtx(cc);
    ZSTD_freeDCtx(dc);
    return NULL;
}

static void pool_destroy(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nth; i++)
        pthread_join(p->th[i], NULL);
    for (int i = 0; p->jobs && i < p->njobs; i++) {
        free(p->jobs[i].in);
        free(p->jobs[i].out);
    }
    free(p->jobs);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int pool_new(struct vmc_ctx *ctx, const struct vmc_header *h, int reader,
                    int threads, struct pool **out)
{
    struct pool *p = calloc(1, sizeof(*p));
    size_t inb, outb;

    *out = NULL;
    if (!p)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (threads <= 0)
        threads = vmc_default_threads();
    if (threads > 64)
        threads = 64;
    p->reader = reader;
    p->chunk_size = h->h.chunk_size;
    p->sealed_max = ZSTD_compressBound(p->chunk_size) + VMC_AEAD_TAG_LEN;
    p->key = h->payload_key;
    memcpy(p->ad, h->h.stream_id, 16);
    p->is_signed = h->is_signed;
    p->sign_sk = h->sign_sk;
    memcpy(p->signer_pk, h->signer_pk, VMC_SIGN_PK_LEN);
    if (!reader && p->is_signed && !p->sign_sk) {
        pool_destroy(p);
        return vmc_set_error(ctx, VMC_E_INVAL, "header has no signing key");
    }
    p->njobs = 2 * threads + 2;
    inb = reader ? p->sealed_max + VMC_SIG_LEN : p->chunk_size;
    outb = reader ? p->chunk_size : p->sealed_max + 4 + VMC_SIG_LEN;
    if (!(p->jobs = calloc((size_t)p->njobs, sizeof(struct job))))
        goto nomem;
    for (int i = 0; i < p->njobs; i++)
        if (!(p->jobs[i].in = malloc(inb)) || !(p->jobs[i].out = malloc(outb)))
            goto nomem;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
            pool_destroy(p);
            return vmc_set_error(ctx, VMC_E_NOMEM, "cannot start worker threads");
        }
        p->nth++;
    }
    *out = p;
    return 0;
nomem:
    pool_destroy(p);
    return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory for chunk buffers");
}

/* ======================== writer ======================== */

/* The adaptive level (links, not files): compression is worth its CPU
 * only while the output is the bottleneck.  Before each chunk goes out the
 * writer asks whether the fd's buffer is at least half full (congested():
 * the link or the receiver is slower than we are).
 * Every ADAPT_WINDOW chunks: it was full for at least half of them ->
 * one step up the ladder (compress harder: the link is the bottleneck);
 * never full -> one step down (the link keeps up: spend less CPU), down to
 * zstd's fastest level, which stores.  No clocks: a regular file is never
 * full, so an adaptive writer to a file stores.  The ladder is zstd levels
 * only: every chunk is still one ordinary zstd frame. */
#define ADAPT_WINDOW 4

struct chunkw {
    struct vmc_ctx *ctx;
    int fd;
    struct pool *p;
    uint64_t seq;             /* next chunk index */
    struct job *cur;          /* being filled */
    uint64_t bytes_out;
    uint64_t chunks;
    int rc;                   /* sticky error */
    int closed;
    int ladder[8];            /* levels, fastest first; fixed: one */
    int nladder, step;        /* the current level is ladder[step] */
    int win_chunks, win_full;
    unsigned out_kind;        /* S_IFSOCK, S_IFIFO or 0 */
};

/* Is the output buffer at least half full?  Anything but a socket or a
 * pipe never is. */
static int congested(const struct chunkw *c)
{
    int queued = 0, cap = 0;
    socklen_t sl = sizeof(cap);

    if (c->out_kind == S_IFSOCK) {
        if (ioctl(c->fd, SIOCOUTQ, &queued) < 0 ||
            getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &cap, &sl) < 0)
            return 0;
        cap /= 2;                 /* Linux reports twice what was set */
    } else if (c->out_kind == S_IFIFO) {
        if (ioctl(c->fd, FIONREAD, &queued) < 0 ||
            (cap = fcntl(c->fd, F_GETPIPE_SZ)) < 0)
            return 0;
    } else {
        return 0;
    }
    return cap > 0 && queued * 2 >= cap;
}

static void adapt(struct chunkw *c)
{
    if (c->nladder < 2 || ++c->win_chunks < ADAPT_WINDOW)
        return;
    if (c->win_full * 2 >= ADAPT_WINDOW) {
        if (c->step < c->nladder - 1)
            c->step++;
    } else if (c->win_full == 0 && c->step > 0) {
        c->step--;
    }
    c->win_chunks = 0;
    c->win_full = 0;
}

/* Writes completed jobs in order; blocks for at least `need` of them. */
static int drain(struct chunkw *c, uint64_t need)
{
    struct pool *p = c->p;

    pthread_mutex_lock(&p->mu);
    while (p->collect < p->submit) {
        struct job *j = &p->jobs[p->collect % (uint64_t)p->njobs];
        int rc;

        if (j->state != J_DONE) {
            if (!need)
                break;
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        if (j->rc < 0) {
            c->rc = vmc_set_error(c->ctx, j->rc, "%s", j->err);
            vmc_error_locate(c->ctx, VMC_AT_CHUNK, j->err_at, j->idx);
            return c->rc;
        }
        if (c->nladder > 1 && congested(c))
            c->win_full++;
        if (!c->rc) {
            char what[64];
            snprintf(what, sizeof(what), "chunk %llu @0x%llx",
                     (unsigned long long)j->idx,
                     (unsigned long long)c->bytes_out);
            if ((rc = io_write_full(c->ctx, c->fd, j->out, j->out_len,
                                    what)) < 0)
                return c->rc = rc;
        }
        c->bytes_out += j->out_len;
        c->chunks++;
        pthread_mutex_lock(&p->mu);
        j->state = J_FREE;
        p->collect++;
        if (need)
            need--;
    }
    pthread_mutex_unlock(&p->mu);
    return c->rc;
}

static int acquire(struct chunkw *c)
{
    struct job *j = &c->p->jobs[c->seq % (uint64_t)c->p->njobs];
    int rc;

    while (j->state != J_FREE)
        if ((rc = drain(c, 1)) < 0)
            return rc;
    j->idx = c->seq++;
    j->in_len = 0;
    j->rc = 0;
    j->final = 0;
    adapt(c);
    j->level = c->ladder[c->step];
    c->cur = j;
    return 0;
}

static void submit(struct chunkw *c, int final)
{
    struct pool *p = c->p;

    pthread_mutex_lock(&p->mu);
    c->cur->final = final;
    c->cur->state = J_READY;
    p->submit++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    c->cur = NULL;
}

int chunkw_new(struct vmc_ctx *ctx, int fd, const struct vmc_header *h,
               int level, int adaptive, int threads, struct chunkw **out)
{
    struct chunkw *c = calloc(1, sizeof(*c));
    struct stat st;
    int rc;

    *out = NULL;
    if (!c)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        free(c);
        return vmc_set_error(ctx, VMC_E_INVAL, "zstd level %d out of range",
                             level);
    }
    c->ctx = ctx;
    c->fd = fd;
    if (adaptive) {
        /* store, then the cheap negative levels that already catch most of
         * what level 1 finds in guest memory, then 1..level */
        static const int low[] = { -1000, -100, -10 };
        c->ladder[c->nladder++] = ZSTD_minCLevel();
        for (int i = 0; i < 3; i++)
            if (low[i] < level)
                c->ladder[c->nladder++] = low[i];
        for (int l = 1; l <= level && l <= 3; l++)
            c->ladder[c->nladder++] = l;
        if (level > 3)
            c->ladder[c->nladder++] = level;
        c->step = c->nladder - 1;          /* start at the ceiling */
        if (fstat(fd, &st) == 0 && (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode)))
            c->out_kind = st.st_mode & S_IFMT;
    } else {
        c->ladder[c->nladder++] = level;
    }
    if ((rc = pool_new(ctx, h, 0, threads, &c->p)) < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int chunkw_write(struct chunkw *c, const void *buf, size_t len)
{
    const uint8_t *b = buf;
    int rc;

    if (c->rc)
        return c->rc;
    if (c->closed)
        return vmc_set_error(c->ctx, VMC_E_INVAL, "write after the final chunk");
    while (len) {
        size_t n;

        /* A full chunk goes out only when more data comes, so that the last
         * data chunk can carry the final flag. */
        if (c->cur && c->cur->in_len == c->p->chunk_size) {
            submit(c, 0);
            if ((rc = drain(c, 0)) < 0)
                return rc;
        }
        if (!c->cur && (rc = acquire(c)) < 0)
            return rc;
        n = c->p->chunk_size - c->cur->in_len;
        if (n > len)
            n = len;
        memcpy(c->cur->in + c->cur->in_len, b, n);
        c->cur->in_len += n;
        b += n;
        len -= n;
    }
    return 0;
}

int chunkw_flush(struct chunkw *c)
{
    if (c->rc)
        return c->rc;
    if (c->cur && c->cur->in_len)
        submit(c, 0);
    return drain(c, UINT64_MAX);
}

int chunkw_close(struct chunkw *c)
{
    int rc;

    if (c->rc)
        return c->rc;
    if (c->closed)
        return 0;
    if (!c->cur && (rc = acquire(c)) < 0)
        return rc;
    submit(c, 1);
    c->closed = 1;
    return drain(c, UINT64_MAX);
}

uint64_t chunkw_bytes_out(const struct chunkw *c)
{
    return c->bytes_out;
}

uint64_t chunkw_chunks(const struct chunkw *c)
{
    return c->chunks;
}

void chunkw_free(struct chunkw *c)
{
    if (!c)
        return;
    pool_destroy(c->p);
    free(c);
}

/* ======================== reader ======================== */

struct chunkr {
    struct vmc_ctx *ctx;
    int fd;
    int exact_eof;
    struct pool *p;
    pthread_t io;
    int io_started;
    int wake[2];              /* chunkr_free() -> I/O thread */
    int idle_ms;              /* -1: wait forever for the next bytes */
    uint64_t base;            /* stream offset of the first chunk */
    uint64_t bytes_in;        /* written by the I/O thread */
    uint64_t chunks;
    struct job *cur;
    size_t pos;
    int ended;
    int rc;
};

/* A full read that gives up when chunkr_free() pokes the wake pipe, so a
 * reader blocked on a silent pipe or socket can always be freed.  0, or
 * VMC_E_IO with errno kept (ETIMEDOUT, ECANCELED, or read's): the reader
 * thread reports through its job (job_fail), not a ctx. */
static int io_read(struct chunkr *c, void *buf, size_t n, size_t *got)
{
    size_t done = 0;

    while (done < n) {
        struct pollfd pf[2] = { { c->fd, POLLIN, 0 }, { c->wake[0], POLLIN, 0 } };
        ssize_t r;

        int pr = poll(pf, 2, c->idle_ms);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            *got = done;
            return VMC_E_IO;
        }
        if (pr == 0 || pf[1].revents) {
            *got = done;
            errno = pr == 0 ? ETIMEDOUT : ECANCELED;
            return VMC_E_IO;
        }
        r = read(c->fd, (char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            *got = done;
            return VMC_E_IO;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

static void *io_thread(void *arg)
{
    struct chunkr *c = arg;
    struct pool *p = c->p;
    uint64_t off = c->base;
    uint32_t sig = p->is_signed ? VMC_SIG_LEN : 0;

    for (uint64_t seq = 0;; seq++) {
        struct job *j = &p->jobs[seq % (uint64_t)p->njobs];
        unsigned long long s = seq, o = off;
        uint8_t w[4];
        size_t got;
        uint32_t len;
        int rc, stop_after = 0;

        pthread_mutex_lock(&p->mu);
        while (!p->stop && j->state != J_FREE)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        pthread_mutex_unlock(&p->mu);
        j->idx = seq;
        j->off = off;
        j->rc = 0;
        j->final = 0;
        j->in_len = 0;
        j->out_len = 0;
        j->trailing = 0;
        rc = io_read(c, w, 4, &got);
        if (rc < 0) {
            job_fail(j, VMC_E_IO, "chunk %llu @0x%llx: read: %s", s, o,
                     strerror(errno));
        } else if (got == 0) {
            job_fail(j, VMC_E_TRUNC, "chunk %llu @0x%llx: stream ends before "
                     "the final chunk (truncated)", s, o);
        } else if (got < 4) {
            job_fail(j, VMC_E_TRUNC, "chunk %llu @0x%llx: truncated inside the "
                     "length word", s, o);
        } else {
            j->lw = vmc_get32(w);
            len = j->lw & VMC_CHUNK_LEN_MASK;
            j->final = !!(j->lw & VMC_CHUNK_FINAL);
            if (len <= VMC_AEAD_TAG_LEN || len > p->sealed_max) {
                job_fail(j, VMC_E_FORMAT, "chunk %llu @0x%llx: sealed length %u "
                         "outside 17..%zu", s, o, len, p->sealed_max);
            } else if ((rc = io_read(c, j->in, len + sig, &got)) < 0) {
                job_fail(j, VMC_E_IO, "chunk %llu @0x%llx: read: %s", s, o,
                         strerror(errno));
            } else if (got < len + sig) {
                job_fail(j, VMC_E_TRUNC, "chunk %llu @0x%llx: truncated at %zu "
                         "of %u bytes%s", s, o, got, len + sig,
                         got >= len ? " (inside its signature)" : "");
            } else {
                j->in_len = len;
                off += 4 + len + sig;
                if (j->final && c->exact_eof) {
                    uint8_t extra;
                    rc = io_read(c, &extra, 1, &got);
                    if (rc == 0 && got)     /* a FINAL bit flipped on a */
                        j->trailing = off;  /* middle chunk fails its tag */
                    else if (rc < 0) {
                        job_fail(j, VMC_E_IO, "@0x%llx: read: %s",
                                 (unsigned long long)off, strerror(errno));
                        j->err_at = off;
                    }
                }
            }
        }
        stop_after = j->rc < 0 || j->final;
        pthread_mutex_lock(&p->mu);
        c->bytes_in = off - c->base;
        j->state = J_READY;
        p->submit++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (stop_after)
            break;
    }
    return NULL;
}

int chunkr_new(struct vmc_ctx *ctx, int fd, const struct vmc_header *h,
               int threads, int exact_eof, int idle_ms, struct chunkr **out)
{
    struct chunkr *c = calloc(1, sizeof(*c));
    int rc;

    *out = NULL;
    if (!c)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if (!h->unlocked) {
        free(c);
        return vmc_set_error(ctx, VMC_E_INVAL, "header not unlocked");
    }
    c->ctx = ctx;
    c->fd = fd;
    c->exact_eof = exact_eof;
    c->idle_ms = idle_ms > 0 ? idle_ms : -1;
    c->base = h->raw_len;
    if (pipe2(c->wake, O_CLOEXEC) < 0) {
        free(c);
        return vmc_set_error(ctx, VMC_E_NOMEM, "pipe: %s", strerror(errno));
    }
    if ((rc = pool_new(ctx, h, 1, threads, &c->p)) < 0) {
        chunkr_free(c);
        return rc;
    }
    if (pthread_create(&c->io, NULL, io_thread, c) != 0) {
        chunkr_free(c);
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot start reader thread");
    }
    c->io_started = 1;
    *out = c;
    return 0;
}

/* Makes c->cur the next chunk in order; 0 or an error. */
static int next_chunk(struct chunkr *c)
{
    struct pool *p = c->p;
    struct job *j = &p->jobs[p->collect % (uint64_t)p->njobs];

    pthread_mutex_lock(&p->mu);
    while (j->state != J_DONE)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (j->rc < 0) {
        c->rc = vmc_set_error(c->ctx, j->rc, "%s", j->err);
        vmc_error_locate(c->ctx, VMC_AT_CHUNK, j->err_at, j->idx);
        return c->rc;
    }
    c->cur = j;
    c->pos = 0;
    c->chunks++;
    return 0;
}

static void release(struct chunkr *c)
{
    struct pool *p = c->p;

    if (c->cur->final)
        c->ended = 1;
    pthread_mutex_lock(&p->mu);
    c->cur->state = J_FREE;
    p->collect++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    c->cur = NULL;
}

/* A chunk handed out whole by chunkr_peek() is released on the next call. */
static void release_consumed(struct chunkr *c)
{
    if (c->cur && c->pos == c->cur->out_len && c->cur->out_len)
        release(c);
}

int chunkr_read(void *arg, void *buf, size_t n)
{
    struct chunkr *c = arg;
    uint8_t *b = buf;
    int rc;

    if (c->rc)
        return c->rc;
    release_consumed(c);
    while (n) {
        size_t k;

        if (!c->cur) {
            if (c->ended)
                return VMC_E_TRUNC;     /* authenticated end of the stream */
            if ((rc = next_chunk(c)) < 0)
                return rc;
        }
        k = c->cur->out_len - c->pos;
        if (k > n)
            k = n;
        memcpy(b, c->cur->out + c->pos, k);
        c->pos += k;
        b += k;
        n -= k;
        if (c->pos == c->cur->out_len)
            release(c);
    }
    return 0;
}

int chunkr_peek(void *arg, const void **ptr, size_t n, size_t *got)
{
    struct chunkr *c = arg;
    size_t k;
    int rc;

    *got = 0;
    if (c->rc)
        return c->rc;
    release_consumed(c);
    while (!c->cur || c->pos == c->cur->out_len) {
        if (c->cur)
            release(c);             /* an empty chunk */
        if (c->ended)
            return VMC_E_TRUNC;
        if ((rc = next_chunk(c)) < 0)
            return rc;
    }
    k = c->cur->out_len - c->pos;
    if (k > n)
        k = n;
    *ptr = c->cur->out + c->pos;
    c->pos += k;
    *got = k;
    return 0;
}

int chunkr_at_end(struct chunkr *c)
{
    int rc;

    if (c->rc)
        return c->rc;
    release_consumed(c);
    if (c->ended)
        return 1;
    if (c->cur)
        return 0;
    if ((rc = next_chunk(c)) < 0)
        return rc;
    if (c->cur->out_len == 0) {     /* an empty final chunk */
        release(c);
        return c->ended;
    }
    return 0;
}

uint64_t chunkr_bytes_in(const struct chunkr *c)
{
    return c->bytes_in;
}

uint64_t chunkr_chunks(const struct chunkr *c)
{
    return c->chunks;
}

void chunkr_free(struct chunkr *c)
{
    if (!c)
        return;
    if (c->io_started) {
        pthread_mutex_lock(&c->p->mu);
        c->p->stop = 1;
        pthread_cond_broadcast(&c->p->cv);
        pthread_mutex_unlock(&c->p->mu);
        if (write(c->wake[1], "x", 1) < 0) {
            /* cannot happen: the pipe is empty and ours */
        }
        pthread_join(c->io, NULL);
    }
    pool_destroy(c->p);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c);
}
