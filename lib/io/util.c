/*
 * util.c - error context, I/O helpers, clocks, run and log directories.
 *
 * Owns: the helpers every layer uses.
 * Must not: depend on any other part of lib/.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

struct vmc_ctx *vmc_ctx_new(void)
{
    return calloc(1, sizeof(struct vmc_ctx));
}

void vmc_ctx_free(struct vmc_ctx *ctx)
{
    free(ctx);
}

const char *vmc_ctx_error(const struct vmc_ctx *ctx)
{
    if (!ctx)
        return "no context";
    return ctx->code ? ctx->msg : "no error";
}

int vmc_ctx_errcode(const struct vmc_ctx *ctx)
{
    return ctx ? ctx->code : VMC_E_INVAL;
}

void vmc_ctx_clear(struct vmc_ctx *ctx)
{
    if (ctx) {
        ctx->code = 0;
        ctx->saved_errno = 0;
        ctx->hint = 0;
        memset(&ctx->where, 0, sizeof(ctx->where));
        ctx->msg[0] = '\0';
    }
}

int vmc_set_error(struct vmc_ctx *ctx, int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (!ctx || ctx->code)          /* keep the first, root-cause error */
        return code;
    ctx->code = code;
    ctx->saved_errno = saved;
    va_start(ap, fmt);
    vsnprintf(ctx->msg, sizeof(ctx->msg), fmt, ap);
    va_end(ap);
    errno = saved;
    return code;
}

int vmc_set_error_at(struct vmc_ctx *ctx, int code, int kind, uint64_t offset,
                     uint64_t index, const char *fmt, ...)
{
    int saved = errno;
    size_t n;
    va_list ap;

    if (!ctx || ctx->code)
        return code;
    ctx->code = code;
    ctx->saved_errno = saved;
    ctx->where = (struct vmc_where){ kind, offset, index };
    if (kind == VMC_AT_CHUNK) {
        snprintf(ctx->msg, sizeof(ctx->msg), "chunk %llu @0x%llx: ",
                 (unsigned long long)index, (unsigned long long)offset);
    } else {
        const char *name = vmc_record_name((uint32_t)index);
        if (name)
            snprintf(ctx->msg, sizeof(ctx->msg), "%s @0x%llx: ", name,
                     (unsigned long long)offset);
        else
            snprintf(ctx->msg, sizeof(ctx->msg), "record 0x%08x @0x%llx: ",
                     (unsigned)index, (unsigned long long)offset);
    }
    n = strlen(ctx->msg);
    va_start(ap, fmt);
    vsnprintf(ctx->msg + n, sizeof(ctx->msg) - n, fmt, ap);
    va_end(ap);
    errno = saved;
    return code;
}

void vmc_error_locate(struct vmc_ctx *ctx, int kind, uint64_t offset,
                      uint64_t index)
{
    if (ctx && ctx->code && ctx->where.kind == VMC_AT_NONE)
        ctx->where = (struct vmc_where){ kind, offset, index };
}

int vmc_ctx_where(const struct vmc_ctx *ctx, struct vmc_where *w)
{
    memset(w, 0, sizeof(*w));
    if (ctx && ctx->code)
        *w = ctx->where;
    return w->kind;
}

const char *vmc_strerror(int code)
{
    switch (code) {
    case VMC_OK: return "success";
    case VMC_E_IO: return "I/O error";
    case VMC_E_NOMEM: return "out of memory";
    case VMC_E_FORMAT: return "invalid stream";
    case VMC_E_AUTH: return "authentication failed";
    case VMC_E_KEY: return "no matching key";
    case VMC_E_TRUNC: return "truncated stream";
    case VMC_E_UNSUPPORTED: return "unsupported";
    case VMC_E_LIMIT: return "limit exceeded";
    case VMC_E_INVAL: return "invalid argument";
    case VMC_E_BACKEND: return "backend failure";
    case VMC_E_EXISTS: return "already exists";
    case VMC_E_CANCELED: return "canceled";
    case VMC_E_CLASH: return "name or UUID in use";
    case VMC_E_UNTRUSTED: return "signer not trusted";
    }
    return "unknown error";
}

int vmc_init(struct vmc_ctx *ctx)
{
    if (sodium_init() < 0)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "libsodium: init failed");
    return 0;
}

int vmc_ctx_hint(const struct vmc_ctx *ctx)
{
    return ctx && ctx->code ? ctx->hint : VMC_HINT_NONE;
}

int vmc_set_hint(struct vmc_ctx *ctx, enum vmc_hint hint)
{
    if (!ctx)
        return VMC_E_INVAL;
    if (ctx->code && !ctx->hint)
        ctx->hint = (int)hint;
    return ctx->code;
}

int vmc_ctx_errno(const struct vmc_ctx *ctx)
{
    return ctx && ctx->code ? ctx->saved_errno : 0;
}

/* The error of a failed read or write, errno as it was at the failure. */
static int io_error(struct vmc_ctx *ctx, int err, const char *what,
                    const char *verb)
{
    errno = err;
    vmc_set_error(ctx, VMC_E_IO, "%s: %s: %s", what, verb, strerror(err));
    errno = err;
    return VMC_E_IO;
}

int io_read_full(struct vmc_ctx *ctx, int fd, void *buf, size_t n, size_t *got,
                 const char *what)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            *got = done;
            return io_error(ctx, errno, what, "read");
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

int io_write_full(struct vmc_ctx *ctx, int fd, const void *buf, size_t n,
                  const char *what)
{
    size_t done = 0;
    struct vmc_outfile *of;

    if (outfile_nsplit && (of = outfile_split_of(fd)))
        return outfile_split_write(ctx, of, buf, n);   /* a split set */
    while (done < n) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return io_error(ctx, errno, what, "write");
        }
        done += (size_t)r;
    }
    return 0;
}

int write_all_nosig(int fd, const void *buf, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return VMC_E_IO;            /* errno kept */
        done += (size_t)r;
    }
    return 0;
}

int utf8_ok(const uint8_t *s, size_t n, int no_controls)
{
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i], min;
        size_t len;
        if (c < 0x80) {
            if (no_controls && (c < 0x20 || c == 0x7f))
                return 0;
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) { len = 2; c &= 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; c &= 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; c &= 0x07; min = 0x10000; }
        else return 0;
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) ||
            (no_controls && c >= 0x80 && c <= 0x9f))
            return 0;
        i += len;
    }
    return 1;
}

char *vmc_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

uint64_t vmc_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vmc_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > 64 ? 64 : (int)n;
}

void log_stem(char *out, size_t n, int id, const char *name)
{
    char when[32], safe[64];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(safe, sizeof(safe), "%.63s", name);
    for (char *c = safe; *c; c++)
        if (*c == '/' || (unsigned char)*c < 32)
            *c = '_';
    snprintf(out, n, "%s-%d-%s", when, id, safe);
}

void uuid_random(uint8_t u[16])
{
    randombytes_buf(u, 16);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

const char *vmc_rundir(void)
{
    static char buf[512];
    const char *e = getenv("VMCKPT_RUNDIR");

    if (e && *e)
        return e;
    if (geteuid() == 0)
        return "/run/vmckpt";
    e = getenv("XDG_RUNTIME_DIR");
    if (e && *e) {
        snprintf(buf, sizeof(buf), "%s/vmckpt", e);
        return buf;
    }
    snprintf(buf, sizeof(buf), "/tmp/vmckpt-%u", (unsigned)geteuid());
    return buf;
}

const char *vmc_logdir(void)
{
    static char buf[512];
    const char *e = getenv("VMCKPT_LOGDIR");

    if (e && *e)
        return e;
    if (geteuid() == 0)
        return "/var/log/vmckpt";
    if ((e = getenv("XDG_STATE_HOME")) && *e)
        snprintf(buf, sizeof(buf), "%s/vmckpt", e);
    else if ((e = getenv("HOME")) && *e)
        snprintf(buf, sizeof(buf), "%s/.local/state/vmckpt", e);
    else
        snprintf(buf, sizeof(buf), "/tmp/vmckpt-%u", (unsigned)geteuid());
    return buf;
}

int vmc_disk_snapshot(struct vmc_ctx *ctx, const char *path, int fd,
                     uint64_t size, int *copy, int *reflinked)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    uint64_t off = 0;
    int c;

    *copy = -1;
    *reflinked = 0;
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1,
             slash ? (slash == path ? "/" : path) : ".");
    if ((c = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "disk %s: a frozen copy in %s: %s",
                             path, dir, strerror(errno));
    if (ioctl(c, FICLONE, fd) == 0) {
        *reflinked = 1;
        *copy = c;
        return 0;
    }
    if (ftruncate(c, (off_t)size) < 0)
        goto fail;
    while (off < size) {
        off_t d = lseek(fd, (off_t)off, SEEK_DATA), h;
        if (d < 0 && errno == ENXIO)
            break;                          /* a hole to the end */
        if (d < 0 || (h = lseek(fd, d, SEEK_HOLE)) < 0)
            goto fail;
        if ((uint64_t)h > size)
            h = (off_t)size;
        for (loff_t in = d, out = d; in < h;) {
            ssize_t n = copy_file_range(fd, &in, c, &out, (size_t)(h - in), 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0)
                errno = 0;                  /* the file ended early */
            if (n <= 0)
                goto fail;
        }
        off = (uint64_t)h;
    }
    *copy = c;
    return 0;
fail:
    vmc_set_error(ctx, VMC_E_IO, "disk %s: a frozen copy: %s", path,
                  errno ? strerror(errno) : "short copy");
    close(c);
    return VMC_E_IO;
}
