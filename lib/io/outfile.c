/*
 * outfile.c - durable output: NAME.partial (O_EXCL, 0600, flock), fsync,
 * rename to NAME, fsync of the directory.  Nothing ever appears under NAME
 * unless it is complete.
 *
 * A split set (vmc_outfile_open_split) is the same stream cut into pieces
 * NAME.000, NAME.001, ... of at most piece_size bytes (a FAT32 stick holds
 * no file of 4 GiB): each piece is NAME.NNN.partial until the commit,
 * fsync'd when full; the commit renames the pieces after the first (last
 * first), removes every NAME.NNN above the last (an older, longer set),
 * fsyncs the directory, and only then renames NAME.000, the commit point:
 * a set without its NAME.000 is no image (lib/io/input.c reads from it).
 * The writer's fd stays the same number: io_write_full() sends the bytes
 * written to it here (outfile_split_write), which moves it on to the
 * next piece when one is full.
 *
 * Owns: the output file's life from NAME.partial to NAME.
 * Must not: leave anything under NAME (or NAME.NNN) before the commit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct vmc_outfile {
    int fd;
    int is_stdout;
    int committed;
    int slot;                 /* index in the signal cleanup table */
    char *path;
    char *partial;            /* a set: NAME.000.partial */
    /* a split set */
    uint64_t piece_size;      /* 0: one file */
    uint64_t in_piece;        /* bytes in the piece being written */
    unsigned npieces;         /* pieces created, NAME.NNN.partial each */
    unsigned renamed;         /* a failed commit: NAME.001.. renamed so far */
    int lock_fd;              /* NAME.000.partial, held (and locked) */
};

/* Partial names for the signal handler: fixed storage, no allocation. */
#define MAX_OPEN 8
static char sig_partial[MAX_OPEN][PATH_MAX];
static volatile sig_atomic_t sig_used[MAX_OPEN];
/* A set: sig_partial holds NAME and sig_pieces its pieces so far. */
static volatile sig_atomic_t sig_pieces[MAX_OPEN];

/* The sets being written, found by their fd (io_write_full). */
static struct vmc_outfile *split_of[MAX_OPEN];
int outfile_nsplit;

/* NAME.NNN[.partial] built by hand: async-signal-safe. */
static void piece_name_sig(char *out, const char *base, size_t len,
                           unsigned i, int partial)
{
    memcpy(out, base, len);
    out[len] = '.';
    out[len + 1] = (char)('0' + i / 100 % 10);
    out[len + 2] = (char)('0' + i / 10 % 10);
    out[len + 3] = (char)('0' + i % 10);
    memcpy(out + len + 4, partial ? ".partial" : "", partial ? 9 : 1);
}

void vmc_outfile_cleanup_signal(void)
{
    static char name[PATH_MAX + 16];

    for (int i = 0; i < MAX_OPEN; i++) {
        if (!sig_used[i])
            continue;
        if (!sig_pieces[i]) {
            unlink(sig_partial[i]);
            continue;
        }
        for (unsigned k = 0; k < (unsigned)sig_pieces[i]; k++) {
            piece_name_sig(name, sig_partial[i], strlen(sig_partial[i]), k, 1);
            unlink(name);
        }
    }
}

static void piece_name(char *out, size_t n, const char *base, unsigned i,
                       int partial)
{
    snprintf(out, n, "%s.%03u%s", base, i, partial ? ".partial" : "");
}

/* The guardian's cleanup after a killed save: NAME.partial, or every
 * NAME.NNN.partial of a set (given NAME.000.partial), while they exist. */
void outfile_remove_partial(const char *partial)
{
    static const char tail[] = ".000.partial";
    static char name[PATH_MAX + 16];
    size_t len = strlen(partial), tl = sizeof(tail) - 1;

    unlink(partial);
    if (len <= tl || len >= PATH_MAX || strcmp(partial + len - tl, tail))
        return;
    for (unsigned k = 1; k < VMC_SPLIT_MAX_PIECES; k++) {
        piece_name_sig(name, partial, len - tl, k, 1);
        if (unlink(name) < 0 && errno == ENOENT)
            break;
    }
}

int fsync_parent(struct vmc_ctx *ctx, const char *path)
{
    char *copy = strdup(path);
    int fd, rc = 0;

    if (!copy)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: fsync of directory: %s", path,
                           strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

/* Opens a new partial file; replaces a stale one nobody holds locked. */
static int open_partial(struct vmc_ctx *ctx, const char *partial)
{
    for (int tries = 0; tries < 3; tries++) {
        int fd = open(partial,
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            flock(fd, LOCK_EX | LOCK_NB);
            return fd;
        }
        if (errno != EEXIST)
            return vmc_set_error(ctx, VMC_E_IO, "%s: %s", partial,
                                 strerror(errno));
        fd = open(partial, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            close(fd);
            return vmc_set_error(ctx, VMC_E_EXISTS,
                                 "%s: another vmckpt process is writing it",
                                 partial);
        }
        unlink(partial);          /* stale: left by a killed run */
        close(fd);
    }
    return vmc_set_error(ctx, VMC_E_IO, "%s: cannot create", partial);
}

int vmc_outfile_open(struct vmc_ctx *ctx, const char *path, int overwrite,
                     struct vmc_outfile **out)
{
    struct vmc_outfile *of;
    struct stat st;
    int rc = 0;

    *out = NULL;
    if (!strcmp(path, "-"))
        return vmc_outfile_stream(ctx, 1, out);
    of = calloc(1, sizeof(*of));
    if (!of)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    of->slot = -1;
    of->fd = -1;
    of->lock_fd = -1;
    if (!overwrite && lstat(path, &st) == 0) {
        rc = vmc_set_error(ctx, VMC_E_EXISTS, "%s: already exists", path);
        goto out;
    }
    of->path = strdup(path);
    if (!of->path || asprintf(&of->partial, "%s.partial", path) < 0) {
        of->partial = NULL;
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if (strlen(of->partial) >= PATH_MAX) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: path too long", path);
        goto out;
    }
    for (int i = 0; i < MAX_OPEN; i++)
        if (!sig_used[i]) {
            strcpy(sig_partial[i], of->partial);
            of->slot = i;
            break;
        }
    if ((rc = open_partial(ctx, of->partial)) < 0)
        goto out;
    of->fd = rc;
    rc = 0;
    if (of->slot >= 0)
        sig_used[of->slot] = 1;
out:
    if (rc < 0)
        vmc_outfile_free(of);
    else
        *out = of;
    return rc;
}

int vmc_outfile_open_split(struct vmc_ctx *ctx, const char *path,
                           int overwrite, uint64_t piece_size,
                           struct vmc_outfile **out)
{
    struct vmc_outfile *of;
    struct stat st;
    char first[PATH_MAX + 16];
    int rc = 0, reg = -1;

    *out = NULL;
    if (!strcmp(path, "-"))
        return vmc_set_error(ctx, VMC_E_INVAL, "a split set is files, not "
                             "a stream");
    if (piece_size < VMC_SPLIT_MIN || piece_size > VMC_SPLIT_MAX)
        return vmc_set_error(ctx, VMC_E_INVAL, "piece size %llu outside "
                             "%llu..%llu", (unsigned long long)piece_size,
                             (unsigned long long)VMC_SPLIT_MIN,
                             (unsigned long long)VMC_SPLIT_MAX);
    if (strlen(path) + sizeof(".000.partial") > PATH_MAX)
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: path too long", path);
    piece_name(first, sizeof(first), path, 0, 0);
    if (!overwrite && lstat(first, &st) == 0)
        return vmc_set_error(ctx, VMC_E_EXISTS, "%s: already exists", first);
    if (!overwrite && lstat(path, &st) == 0)   /* it would hide the set */
        return vmc_set_error(ctx, VMC_E_EXISTS, "%s: already exists", path);
    if (!(of = calloc(1, sizeof(*of))))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    of->slot = -1;
    of->fd = -1;
    of->lock_fd = -1;
    of->piece_size = piece_size;
    if (!(of->path = strdup(path)) ||
        asprintf(&of->partial, "%s.partial", first) < 0) {
        of->partial = NULL;
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < MAX_OPEN && reg < 0; i++)
        if (!split_of[i])
            reg = i;
    if (reg < 0) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "%s: too many sets open", path);
        goto out;
    }
    for (int i = 0; i < MAX_OPEN; i++)
        if (!sig_used[i]) {
            strcpy(sig_partial[i], path);
            sig_pieces[i] = 1;
            of->slot = i;
            break;
        }
    if ((rc = open_partial(ctx, of->partial)) < 0)
        goto out;
    of->lock_fd = rc;
    rc = 0;
    if ((of->fd = fcntl(of->lock_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", of->partial,
                           strerror(errno));
        goto out;
    }
    of->npieces = 1;
    if (of->slot >= 0)
        sig_used[of->slot] = 1;
    split_of[reg] = of;
    outfile_nsplit++;
out:
    if (rc < 0)
        vmc_outfile_free(of);
    else
        *out = of;
    return rc;
}

struct vmc_outfile *outfile_split_of(int fd)
{
    for (int i = 0; i < MAX_OPEN; i++)
        if (split_of[i] && split_of[i]->fd == fd)
            return split_of[i];
    return NULL;
}

static void split_unregister(struct vmc_outfile *of)
{
    for (int i = 0; i < MAX_OPEN; i++)
        if (split_of[i] == of) {
            split_of[i] = NULL;
            outfile_nsplit--;
        }
}

/* The full piece made durable, the next one created under the same fd. */
static int next_piece(struct vmc_ctx *ctx, struct vmc_outfile *of)
{
    char name[PATH_MAX + 16];
    int fd;

    piece_name(name, sizeof(name), of->path, of->npieces - 1, 1);
    if (of->npieces >= VMC_SPLIT_MAX_PIECES)
        return vmc_set_error(ctx, VMC_E_LIMIT, "%s: a set has at most %d "
                             "pieces: a larger piece size", of->path,
                             VMC_SPLIT_MAX_PIECES);
    if (fsync(of->fd) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: fsync: %s", name,
                             strerror(errno));
    piece_name(name, sizeof(name), of->path, of->npieces, 1);
    if (of->slot >= 0)
        sig_pieces[of->slot] = (sig_atomic_t)of->npieces + 1;
    if ((fd = open_partial(ctx, name)) < 0)
        return fd;
    if (dup3(fd, of->fd, O_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        unlink(name);
        return vmc_set_error(ctx, VMC_E_IO, "%s: dup: %s", name, strerror(e));
    }
    close(fd);
    of->npieces++;
    of->in_piece = 0;
    return 0;
}

int outfile_split_write(struct vmc_ctx *ctx, struct vmc_outfile *of,
                        const void *buf, size_t n)
{
    const char *p = buf;
    int rc;

    while (n) {
        size_t k = n;
        ssize_t r;
        if (of->in_piece >= of->piece_size && (rc = next_piece(ctx, of)) < 0)
            return rc;
        if (k > of->piece_size - of->in_piece)
            k = (size_t)(of->piece_size - of->in_piece);
        if ((r = write(of->fd, p, k)) < 0) {
            char name[PATH_MAX + 16];
            int e = errno;
            if (e == EINTR)
                continue;
            piece_name(name, sizeof(name), of->path, of->npieces - 1, 1);
            vmc_set_error(ctx, VMC_E_IO, "%s: write: %s", name, strerror(e));
            errno = e;
            return VMC_E_IO;
        }
        of->in_piece += (uint64_t)r;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Removes every NAME.NNN above the new set's last piece: an older, longer
 * set of this NAME (or what a killed commit left) must not follow it. */
static int remove_stale_pieces(struct vmc_ctx *ctx, struct vmc_outfile *of)
{
    char *copy = strdup(of->path), *slash;
    const char *dir = ".", *base = of->path;
    struct dirent *de;
    DIR *d;
    size_t bl;
    int rc = 0;

    if (!copy)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if ((slash = strrchr(copy, '/'))) {
        *slash = '\0';
        dir = slash == copy ? "/" : copy;
        base = of->path + (slash - copy) + 1;
    }
    bl = strlen(base);
    if (!(d = opendir(dir))) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", dir, strerror(errno));
        goto out;
    }
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        unsigned k;
        if (strncmp(s, base, bl) || s[bl] != '.' || strlen(s) != bl + 4 ||
            s[bl + 1] < '0' || s[bl + 1] > '9' || s[bl + 2] < '0' ||
            s[bl + 2] > '9' || s[bl + 3] < '0' || s[bl + 3] > '9')
            continue;
        k = (unsigned)atoi(s + bl + 1);
        if (k < of->npieces)
            continue;
        if (unlinkat(dirfd(d), s, 0) < 0 && errno != ENOENT) {
            rc = vmc_set_error(ctx, VMC_E_IO, "%s.%03u (of an older set): "
                               "cannot remove: %s", of->path, k,
                               strerror(errno));
            break;
        }
    }
    closedir(d);
out:
    free(copy);
    return rc;
}

static int commit_split(struct vmc_ctx *ctx, struct vmc_outfile *of)
{
    char from[PATH_MAX + 16], to[PATH_MAX + 16];
    int rc;

    piece_name(from, sizeof(from), of->path, of->npieces - 1, 1);
    if (fsync(of->fd) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: fsync: %s", from,
                             strerror(errno));
    for (unsigned i = of->npieces - 1; i >= 1; i--) {
        piece_name(from, sizeof(from), of->path, i, 1);
        piece_name(to, sizeof(to), of->path, i, 0);
        if (rename(from, to) < 0)
            return vmc_set_error(ctx, VMC_E_IO, "%s: rename: %s", to,
                                 strerror(errno));
        of->renamed++;
    }
    if ((rc = remove_stale_pieces(ctx, of)) < 0 ||
        (rc = fsync_parent(ctx, of->path)) < 0)
        return rc;
    piece_name(to, sizeof(to), of->path, 0, 0);
    if (rename(of->partial, to) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: rename: %s", to,
                             strerror(errno));
    of->committed = 1;
    if (of->slot >= 0)
        sig_used[of->slot] = 0;
    split_unregister(of);
    if ((rc = fsync_parent(ctx, of->path)) < 0)
        return rc;
    return 0;
}

int vmc_outfile_stream(struct vmc_ctx *ctx, int fd, struct vmc_outfile **out)
{
    struct vmc_outfile *of = calloc(1, sizeof(*of));

    *out = NULL;
    if (!of)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    of->is_stdout = 1;
    of->fd = fd;
    of->lock_fd = -1;
    of->slot = -1;
    *out = of;
    return 0;
}

int vmc_outfile_fd(const struct vmc_outfile *of)
{
    return of->fd;
}

const char *vmc_outfile_partial(const struct vmc_outfile *of)
{
    return of->is_stdout ? NULL : of->partial;
}

int vmc_outfile_commit(struct vmc_ctx *ctx, struct vmc_outfile *of)
{
    int rc;

    if (of->is_stdout) {
        of->committed = 1;
        return 0;
    }
    if (of->piece_size)
        return commit_split(ctx, of);
    if (fsync(of->fd) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: fsync: %s", of->partial,
                             strerror(errno));
    if (rename(of->partial, of->path) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: rename: %s", of->path,
                             strerror(errno));
    of->committed = 1;
    if (of->slot >= 0)
        sig_used[of->slot] = 0;
    if ((rc = fsync_parent(ctx, of->path)) < 0)
        return rc;
    close(of->fd);
    of->fd = -1;
    return 0;
}

void vmc_outfile_abort(struct vmc_outfile *of)
{
    if (!of || of->committed || of->is_stdout)
        return;
    if (of->slot >= 0)
        sig_used[of->slot] = 0;
    if (of->piece_size) {         /* piece 0's lock: every piece is ours */
        char name[PATH_MAX + 16];
        split_unregister(of);
        for (unsigned i = 0; i < of->npieces && of->lock_fd >= 0; i++) {
            piece_name(name, sizeof(name), of->path, i, 1);
            unlink(name);
        }
        for (unsigned i = 0; i < of->renamed && of->lock_fd >= 0; i++) {
            piece_name(name, sizeof(name), of->path, of->npieces - 1 - i, 0);
            unlink(name);
        }
        if (of->lock_fd >= 0)
            close(of->lock_fd);
        of->lock_fd = -1;
    } else if (of->fd >= 0) {
        unlink(of->partial);      /* we hold the lock: it is ours */
    }
    if (of->fd >= 0)
        close(of->fd);
    of->fd = -1;
}

void vmc_outfile_free(struct vmc_outfile *of)
{
    if (!of)
        return;
    vmc_outfile_abort(of);
    split_unregister(of);
    if (of->fd >= 0 && !of->is_stdout)
        close(of->fd);
    if (of->lock_fd >= 0)
        close(of->lock_fd);
    free(of->path);
    free(of->partial);
    free(of);
}
