/*
 * input.c - the file an image is read from: stdin, one file, or a split
 * set (NAME.000, NAME.001, ... as lib/io/outfile.c writes it) read in
 * order as one stream through a socket a thread feeds.
 *
 * A set is the stream cut into pieces, nothing more: the stream's own
 * authentication decides whether the pieces belong together (a piece
 * of another image, or one out of order, fails the chunk it holds).
 * What this file adds is the name of the piece where a stream broke,
 * and the refusals a reader cannot make: a piece that is a symlink or
 * not a regular file, a piece missing below one that exists.
 *
 * Owns: finding, checking and reading the pieces of a set.
 * Must not: interpret the stream.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define COPY_BUF (1u << 20)

struct piece {
    uint64_t size;            /* at open */
    uint64_t start;           /* offset of its first byte in the stream */
    dev_t dev;
    ino_t ino;
};

struct vmc_input {
    int fd;                   /* what readers read */
    int feed;                 /* the thread's end of the socket */
    int dfd;                  /* a set's directory */
    char *given;              /* the path as given */
    char *path;               /* a set: NAME, as given or without .000 */
    char *base;               /* a set: NAME (the directory's entry) */
    int npieces;              /* 0: one file (or stdin) */
    struct piece *pieces;
    uint64_t size;
    pthread_t th;
    int have_th;
    pthread_mutex_t mu;
    int failed;               /* the thread's error, under mu: */
    int fail_piece;
    char fail_msg[512];
    char blame[PATH_MAX + 16];
};

static void piece_path(char *out, size_t n, const struct vmc_input *in, int i)
{
    snprintf(out, n, "%s.%03d", in->path, i);
}

/* NAME.NNN of base: k, or -1. */
static int piece_number(const char *name, const char *base, size_t bl)
{
    const char *s = name + bl;

    if (strncmp(name, base, bl) || s[0] != '.' || strlen(s) != 4)
        return -1;
    for (int i = 1; i < 4; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    return atoi(s + 1);
}

static void thread_fail(struct vmc_input *in, int i, const char *fmt,
                        const char *why)
{
    pthread_mutex_lock(&in->mu);
    if (!in->failed) {
        in->failed = 1;
        in->fail_piece = i;
        snprintf(in->fail_msg, sizeof(in->fail_msg), fmt, why);
    }
    pthread_mutex_unlock(&in->mu);
}

/* Feeds the pieces in order; a piece that cannot be read, or is no longer
 * the file found at open, ends the stream early with its own error. */
static void *feed_thread(void *arg)
{
    struct vmc_input *in = arg;
    uint8_t *buf = malloc(COPY_BUF);
    char name[NAME_MAX + 8];

    for (int i = 0; buf && i < in->npieces; i++) {
        struct stat st;
        int fd;
        snprintf(name, sizeof(name), "%s.%03d", in->base, i);
        fd = openat(in->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            thread_fail(in, i, errno == ELOOP ? "a symbolic link, not a "
                        "piece of the set: refused%s" : "%s", errno == ELOOP ?
                        "" : strerror(errno));
            break;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
            st.st_dev != in->pieces[i].dev || st.st_ino != in->pieces[i].ino) {
            close(fd);
            thread_fail(in, i, "replaced while the set was read%s", "");
            break;
        }
        for (;;) {
            ssize_t r = read(fd, buf, COPY_BUF);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                thread_fail(in, i, "read: %s", strerror(errno));
                i = in->npieces;
                break;
            }
            if (r == 0)
                break;
            if (write_all_nosig(in->feed, buf, (size_t)r) < 0) {
                i = in->npieces;        /* the reader has gone */
                break;
            }
        }
        close(fd);
    }
    if (!buf)
        thread_fail(in, 0, "%s", "out of memory");
    free(buf);
    shutdown(in->feed, SHUT_WR);
    return NULL;
}

/* The pieces of the set NAME in its directory: checked, counted. */
static int find_pieces(struct vmc_ctx *ctx, struct vmc_input *in)
{
    static unsigned char seen[VMC_SPLIT_MAX_PIECES];
    size_t bl = strlen(in->base);
    struct dirent *de;
    DIR *d;
    int n = 0, above = -1, dfd2;

    memset(seen, 0, sizeof(seen));
    if ((dfd2 = dup(in->dfd)) < 0 || !(d = fdopendir(dfd2))) {
        if (dfd2 >= 0)
            close(dfd2);
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", in->path, strerror(errno));
    }
    while ((de = readdir(d))) {
        int k = piece_number(de->d_name, in->base, bl);
        if (k >= 0)
            seen[k] = 1;
    }
    closedir(d);
    while (n < VMC_SPLIT_MAX_PIECES && seen[n])
        n++;
    for (int k = n; k < VMC_SPLIT_MAX_PIECES; k++)
        if (seen[k])
            above = k;
    if (above >= 0)
        return vmc_set_error(ctx, VMC_E_TRUNC, "%s.%03d: missing from the set "
                             "(%s.%03d follows)", in->path, n, in->path, above);
    if (!(in->pieces = calloc((size_t)n, sizeof(*in->pieces))))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    in->npieces = n;
    for (int i = 0; i < n; i++) {
        char name[NAME_MAX + 8];
        struct stat st;
        snprintf(name, sizeof(name), "%s.%03d", in->base, i);
        if (fstatat(in->dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return vmc_set_error(ctx, VMC_E_IO, "%s.%03d: %s", in->path, i,
                                 strerror(errno));
        if (S_ISLNK(st.st_mode))
            return vmc_set_error(ctx, VMC_E_FORMAT, "%s.%03d: a symbolic link, "
                                 "not a piece of the set: refused", in->path, i);
        if (!S_ISREG(st.st_mode))
            return vmc_set_error(ctx, VMC_E_FORMAT, "%s.%03d: not a regular "
                                 "file, not a piece of the set: refused",
                                 in->path, i);
        in->pieces[i].size = (uint64_t)st.st_size;
        in->pieces[i].start = in->size;
        in->pieces[i].dev = st.st_dev;
        in->pieces[i].ino = st.st_ino;
        in->size += (uint64_t)st.st_size;
    }
    return 0;
}

static int open_set(struct vmc_ctx *ctx, struct vmc_input *in)
{
    char *copy = strdup(in->path), *slash;
    const char *dir = ".";
    int sv[2], rc = 0;

    if (!copy)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if ((slash = strrchr(copy, '/'))) {
        *slash = '\0';
        dir = slash == copy ? "/" : copy;
    }
    in->base = strdup(slash ? slash + 1 : copy);
    if (!in->base) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if ((in->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", dir, strerror(errno));
        goto out;
    }
    if ((rc = find_pieces(ctx, in)) < 0)
        goto out;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "socketpair: %s", strerror(errno));
        goto out;
    }
    in->fd = sv[0];
    in->feed = sv[1];
    if (pthread_create(&in->th, NULL, feed_thread, in) != 0) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "cannot start a thread");
        goto out;
    }
    in->have_th = 1;
out:
    free(copy);
    return rc;
}

int vmc_input_open(struct vmc_ctx *ctx, const char *path,
                   struct vmc_input **out)
{
    struct vmc_input *in;
    struct stat st;
    size_t len = strlen(path);
    int rc = 0;

    *out = NULL;
    if (!(in = calloc(1, sizeof(*in))))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    in->fd = in->feed = in->dfd = -1;
    pthread_mutex_init(&in->mu, NULL);
    if (!(in->path = strdup(path)) || !(in->given = strdup(path))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if (!strcmp(path, "-")) {
        in->fd = 0;
        goto out;
    }
    if (len > 4 && !strcmp(path + len - 4, ".000") &&
        (path[len - 5] != '/'))
        in->path[len - 4] = '\0';       /* NAME.000: the set NAME */
    else if (stat(path, &st) == 0 || errno != ENOENT) {
        if ((in->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
        else
            in->size = fstat(in->fd, &st) == 0 && S_ISREG(st.st_mode) ?
                       (uint64_t)st.st_size : 0;
        goto out;
    }
    if ((rc = open_set(ctx, in)) < 0)
        goto out;
    if (!in->npieces)                   /* neither NAME nor NAME.000 */
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(ENOENT));
out:
    if (rc < 0)
        vmc_input_close(in);
    else
        *out = in;
    return rc;
}

int vmc_input_fd(const struct vmc_input *in)
{
    return in->fd;
}

uint64_t vmc_input_size(const struct vmc_input *in)
{
    return in->size;
}

int vmc_input_pieces(const struct vmc_input *in)
{
    return in->npieces;
}

/* The piece that holds byte off of the stream (the last one past it). */
static int piece_at(const struct vmc_input *in, uint64_t off)
{
    int i;

    for (i = 0; i < in->npieces - 1; i++)
        if (off < in->pieces[i].start + in->pieces[i].size)
            break;
    return i;
}

/* Where the chunk whose length word is at off ends: its length word read
 * back from the pieces (format/vmckpt-stream.md, "Payload chunks"). */
static uint64_t chunk_end(const struct vmc_input *in, uint64_t off)
{
    uint8_t b[4];
    uint32_t len;

    for (int k = 0; k < 4; k++) {
        char name[NAME_MAX + 8];
        int i = piece_at(in, off + (uint64_t)k), fd;
        ssize_t r = -1;
        snprintf(name, sizeof(name), "%s.%03d", in->base, i);
        if ((fd = openat(in->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
            r = pread(fd, &b[k], 1, (off_t)(off + (uint64_t)k - in->pieces[i].start));
            close(fd);
        }
        if (r != 1)
            return off + 1;
    }
    len = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
          (uint32_t)b[3] << 24;
    off += 4 + (len & VMC_CHUNK_LEN_MASK);
    return off > in->size ? in->size : off;
}

const char *vmc_input_blame(struct vmc_input *in, struct vmc_ctx *ctx)
{
    struct vmc_where w;
    int i = in->npieces - 1, last, failed;

    if (!in->npieces)
        return !strcmp(in->path, "-") ? "stdin" : in->path;
    pthread_mutex_lock(&in->mu);
    failed = in->failed;
    pthread_mutex_unlock(&in->mu);
    if (failed) {                       /* the piece's own error first */
        piece_path(in->blame, sizeof(in->blame), in, in->fail_piece);
        vmc_ctx_clear(ctx);
        vmc_set_error(ctx, VMC_E_IO, "%s", in->fail_msg);
        return in->blame;
    }
    if (vmc_ctx_errcode(ctx) == VMC_E_TRUNC) {
        piece_path(in->blame, sizeof(in->blame), in, i);
        vmc_ctx_clear(ctx);
        vmc_set_error(ctx, VMC_E_TRUNC, "truncated: the set ends here (a "
                      "piece missing, or this one cut short?)");
        return in->blame;
    }
    if (vmc_ctx_where(ctx, &w) != VMC_AT_CHUNK)
        return in->given;               /* the set's, not a piece's */
    i = piece_at(in, w.offset);
    last = piece_at(in, chunk_end(in, w.offset) - 1);
    piece_path(in->blame, sizeof(in->blame), in, i);
    if (last > i) {                     /* which of them is wrong, no one knows */
        size_t n = strlen(in->blame);
        snprintf(in->blame + n, sizeof(in->blame) - n, " to .%03d", last);
    }
    return in->blame;
}

void vmc_input_close(struct vmc_input *in)
{
    if (!in)
        return;
    if (in->have_th) {
        shutdown(in->fd, SHUT_RDWR);    /* a feeder blocked on a quit reader */
        pthread_join(in->th, NULL);
    }
    if (in->fd > 0)
        close(in->fd);
    if (in->feed >= 0)
        close(in->feed);
    if (in->dfd >= 0)
        close(in->dfd);
    pthread_mutex_destroy(&in->mu);
    free(in->pieces);
    free(in->path);
    free(in->given);
    free(in->base);
    free(in);
}
