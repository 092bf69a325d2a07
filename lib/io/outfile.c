/*
 * outfile.c - durable output: NAME.partial (O_EXCL, 0600, flock), fsync,
 * rename to NAME, fsync of the directory.  Nothing ever appears under NAME
 * unless it is complete.
 *
 * Owns: the output file's life from NAME.partial to NAME.
 * Must not: leave anything under NAME before the commit.
 */
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
    char *partial;
};

/* Partial names for the signal handler: fixed storage, no allocation. */
#define MAX_OPEN 8
static char sig_partial[MAX_OPEN][PATH_MAX];
static volatile sig_atomic_t sig_used[MAX_OPEN];

void vmc_outfile_cleanup_signal(void)
{
    for (int i = 0; i < MAX_OPEN; i++)
        if (sig_used[i])
            unlink(sig_partial[i]);
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

int vmc_outfile_stream(struct vmc_ctx *ctx, int fd, struct vmc_outfile **out)
{
    struct vmc_outfile *of = calloc(1, sizeof(*of));

    *out = NULL;
    if (!of)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    of->is_stdout = 1;
    of->fd = fd;
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
    if (of->fd >= 0) {
        unlink(of->partial);      /* we hold the lock: it is ours */
        close(of->fd);
        of->fd = -1;
    }
}

void vmc_outfile_free(struct vmc_outfile *of)
{
    if (!of)
        return;
    vmc_outfile_abort(of);
    if (of->fd >= 0 && !of->is_stdout)
        close(of->fd);
    free(of->path);
    free(of->partial);
    free(of);
}
