/*
 * disksrc.c - a disk's guest-visible content, read in order for capture.
 *
 * A raw file is read by its descriptor: SEEK_DATA/SEEK_HOLE skip its holes
 * unread.  Any other format (qcow2) is read through qemu-nbd, read-only,
 * by libnbd: NBD block status (base:allocation) skips unallocated and
 * zero clusters, so a sparse qcow2 costs what its data costs.
 *
 * Owns: the qemu-nbd process of one capture (started here, gone when the
 * connection closes: qemu-nbd without --persistent exits when its last
 * client leaves, so a killed vmsave leaves none behind), its private
 * socket directory, and its error output.
 * Must not: decide when a disk may be read (the engine reads it only while
 * nobody writes to it: the guest stopped, or a frozen point-in-time view)
 * or know which hypervisor it belongs to.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

#include "internal.h"

extern char **environ;

struct vmc_disk_src {
    struct vmc_ctx *ctx;
    const char *id;                 /* the disk's guest-facing id */
    uint64_t size;
    int fd;                         /* raw: the caller's, not owned */
    struct nbd_handle *nbd;         /* else: qemu-nbd's export */
    pid_t pid;                      /* ...served by this qemu-nbd */
    int can_status;                 /* the server reports allocation */
};

/* ---- raw: the file itself ---------------------------------------------- */

static void raw_next(struct vmc_disk_src *s, uint64_t off, uint64_t *d,
                     uint64_t *h)
{
    off_t a = lseek(s->fd, (off_t)off, SEEK_DATA), b;

    if (a < 0) {
        if (errno == ENXIO) {           /* only a hole up to the end */
            *d = *h = s->size;
            return;
        }
        *d = off;                       /* no SEEK_DATA here: all data */
        *h = s->size;
        return;
    }
    b = lseek(s->fd, a, SEEK_HOLE);
    *d = (uint64_t)a;
    *h = b < 0 ? s->size : (uint64_t)b;
}

/* ---- anything qemu-nbd reads -------------------------------------------- */

/* The first line qemu-nbd wrote to its error file, for a one-line error. */
static void nbd_why(int errfd, char *why, size_t n)
{
    ssize_t got = pread(errfd, why, n - 1, 0);

    why[got > 0 ? got : 0] = '\0';
    why[strcspn(why, "\n")] = '\0';
    if (!why[0])
        snprintf(why, n, "no message");
}

/* Starts qemu-nbd on file (read-only, sharing the image's locks: the engine
 * reads only a disk that nobody writes meanwhile) with a UNIX socket in a
 * private directory, and connects once it listens.  The socket and the
 * directory are removed as soon as libnbd is connected; the process is
 * reaped by vmc_disk_src_close. */
static int nbd_start(struct vmc_disk_src *s, const char *file,
                     const char *format, int pass_fd)
{
    char dir[] = "/tmp/vmckpt-nbd.XXXXXX", sock[64], why[256];
    char opts[2 * PATH_MAX + 128];
    char *argv[] = { "qemu-nbd", "--read-only", "--image-opts",
                     "--socket", sock, opts, NULL };
    posix_spawn_file_actions_t fa;
    int errfd, st = 0, rc = 0;
    size_t k;
    pid_t pid;

    /* force-share: the QEMU that runs the domain keeps its write lock on
     * the image (qemu-nbd has no --force-share of its own) */
    k = (size_t)snprintf(opts, sizeof(opts), "driver=%s,read-only=on,"
                         "force-share=on,file.driver=file,file.filename=",
                         format);
    for (const char *c = file; *c && k + 3 < sizeof(opts); c++) {
        if (*c == ',')
            opts[k++] = ',';            /* QEMU's escape of a comma */
        opts[k++] = *c;
    }
    opts[k] = '\0';
    if (!mkdtemp(dir))
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: a socket directory "
                             "for qemu-nbd: %s", s->id, strerror(errno));
    snprintf(sock, sizeof(sock), "%s/sock", dir);
    if ((errfd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) {
        rmdir(dir);
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: /tmp: %s", s->id,
                             strerror(errno));
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, errfd, 1);
    posix_spawn_file_actions_adddup2(&fa, errfd, 2);
    if (pass_fd >= 0)                   /* the image is /dev/fd/3 */
        posix_spawn_file_actions_adddup2(&fa, pass_fd, 3);
    if ((rc = posix_spawnp(&pid, "qemu-nbd", &fa, NULL, argv, environ)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        close(errfd);
        rmdir(dir);
        return vmc_set_error(s->ctx, VMC_E_UNSUPPORTED, "disk %s (%s): "
                             "reading it needs qemu-nbd (Debian: qemu-utils): "
                             "%s", s->id, format, strerror(rc));
    }
    posix_spawn_file_actions_destroy(&fa);
    s->pid = pid;
    /* until it listens (a connect succeeds) or exits with its reason */
    for (int i = 0; i < 3000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            nbd_why(errfd, why, sizeof(why));
            rc = vmc_set_error(s->ctx, VMC_E_IO, "disk %s: qemu-nbd cannot "
                               "read %s: %s", s->id, file, why);
            break;
        }
        if (access(sock, F_OK) == 0) {      /* bound: listening soon */
            struct nbd_handle *h = nbd_create();
            if (!h || nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0) {
                nbd_close(h);
                rc = vmc_set_error(s->ctx, VMC_E_NOMEM, "disk %s: NBD: %s",
                                   s->id, nbd_get_error() ?: "no handle");
                break;
            }
            if (nbd_connect_unix(h, sock) == 0) {
                s->nbd = h;
                break;
            }
            nbd_close(h);
        }
        usleep(10000);
    }
    if (rc == 0 && !s->nbd)
        rc = vmc_set_error(s->ctx, VMC_E_IO, "disk %s: qemu-nbd did not "
                           "listen within 30 s", s->id);
    unlink(sock);
    rmdir(dir);
    close(errfd);
    return rc;
}

static int nbd_open(struct vmc_disk_src *s, const struct vmc_disk_info *di,
                    int fd)
{
    struct stat a, b;
    char file[PATH_MAX];
    int pass = -1, rc;
    int64_t size;

    /* By its path when that is still the file the descriptor is, so that
     * qemu-nbd finds a backing file named relative to it; else the
     * descriptor itself (a frozen copy that has no name). */
    if (fstat(fd, &a) == 0 && stat(di->path, &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        snprintf(file, sizeof(file), "%s", di->path);
    } else if ((pass = fcntl(fd, F_DUPFD_CLOEXEC, 10)) >= 0) {
        snprintf(file, sizeof(file), "/dev/fd/3");
    } else {
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: %s", di->id,
                             strerror(errno));
    }
    rc = nbd_start(s, file, vmc_disk_format_name(di->source_format), pass);
    if (pass >= 0)
        close(pass);
    if (rc < 0)
        return rc;
    if ((size = nbd_get_size(s->nbd)) < 0 || (uint64_t)size != s->size)
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: qemu-nbd exports "
                             "%lld octets, the disk has %llu", di->id,
                             (long long)size, (unsigned long long)s->size);
    s->can_status = nbd_can_meta_context(s->nbd,
                                         LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    return 0;
}

struct status {
    uint64_t off, d, h;             /* [d, h): data found so far */
    int found, ended;               /* ended: a zero run after the data */
};

/* entries: (length, flags) pairs from st->off on; a run with the ZERO flag
 * (a hole reads as zeros too) is skipped. */
static int status_cb(void *arg, const char *ctx, uint64_t off,
                     uint32_t *e, size_t n, int *error)
{
    struct status *st = arg;

    (void)error;
    if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION))
        return 0;
    for (size_t i = 0; i + 1 < n && !st->ended; i += 2) {
        uint64_t len = e[i];
        int zero = (e[i + 1] & LIBNBD_STATE_ZERO) != 0;
        if (!zero && !st->found) {
            st->found = 1;
            st->d = off;
        }
        if (zero && st->found)
            st->ended = 1;
        off += len;
        if (st->found && !st->ended)
            st->h = off;
    }
    st->off = off;
    return 0;
}

static int nbd_next(struct vmc_disk_src *s, uint64_t off, uint64_t *d,
                    uint64_t *h)
{
    struct status st = { .off = off };

    if (!s->can_status) {
        *d = off;
        *h = s->size;
        return 0;
    }
    while (st.off < s->size && !st.ended) {
        uint64_t want = s->size - st.off, was = st.off;
        if (want > (1u << 30))
            want = 1u << 30;
        if (nbd_block_status(s->nbd, want, st.off, (nbd_extent_callback) {
                                 .callback = status_cb, .user_data = &st },
                             0) < 0)
            return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: NBD block "
                                 "status at %llu: %s", s->id,
                                 (unsigned long long)was, nbd_get_error());
        if (st.off <= was)
            return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: NBD block "
                                 "status at %llu says nothing", s->id,
                                 (unsigned long long)was);
    }
    *d = st.found ? st.d : s->size;
    *h = st.found ? st.h : s->size;
    return 0;
}

/* ---- the source --------------------------------------------------------- */

int vmc_disk_src_open(struct vmc_ctx *ctx, const struct vmc_disk_info *di,
                      int fd, struct vmc_disk_src **out)
{
    struct vmc_disk_src *s = calloc(1, sizeof(*s));
    int rc = 0;

    *out = NULL;
    if (!s)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    s->ctx = ctx;
    s->id = di->id;
    s->size = di->virtual_size;
    s->fd = fd;
    if (di->source_format != VMC_DISK_FMT_RAW &&
        (rc = nbd_open(s, di, fd)) < 0) {
        vmc_disk_src_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int vmc_disk_src_next(struct vmc_disk_src *s, uint64_t off, uint64_t *d,
                      uint64_t *h)
{
    int rc = 0;

    if (s->nbd)
        rc = nbd_next(s, off, d, h);
    else
        raw_next(s, off, d, h);
    if (rc < 0)
        return rc;
    *d = *d / VMC_DISK_GRAIN * VMC_DISK_GRAIN;
    if (*d < off)
        *d = off;
    *h = (*h + VMC_DISK_GRAIN - 1) / VMC_DISK_GRAIN * VMC_DISK_GRAIN;
    if (*h > s->size)
        *h = s->size;
    if (*d > s->size)
        *d = s->size;
    return 0;
}

int vmc_disk_src_read(struct vmc_disk_src *s, void *buf, size_t n,
                      uint64_t off)
{
    ssize_t got;

    if (s->nbd) {
        if (nbd_pread(s->nbd, buf, n, off, 0) < 0)
            return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: NBD read at "
                                 "%llu: %s", s->id, (unsigned long long)off,
                                 nbd_get_error());
        return 0;
    }
    while ((got = pread(s->fd, buf, n, (off_t)off)) < 0 && errno == EINTR)
        ;
    if (got != (ssize_t)n)
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: read at %llu: %s",
                             s->id, (unsigned long long)off, got < 0 ?
                             strerror(errno) : "file shorter than the disk");
    return 0;
}

void vmc_disk_src_close(struct vmc_disk_src *s)
{
    if (!s)
        return;
    if (s->nbd) {
        if (nbd_aio_is_ready(s->nbd))
            nbd_shutdown(s->nbd, 0);
        nbd_close(s->nbd);
    }
    if (s->pid > 0) {                   /* done with it either way */
        int st;
        kill(s->pid, SIGTERM);
        while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    free(s);
}
