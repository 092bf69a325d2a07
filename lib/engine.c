/*
 * engine.c - the generic save and restore algorithms over a backend ops
 * table, and the guardian that keeps a domain from being lost when the
 * saving process dies.
 *
 * Save:    describe (lock, IMAGE_INFO, DOMAIN_CONFIG), begin (guardian,
 *          writer), stream ([pause], hypervisor stream -> sealed writer),
 *          commit (END, fsync+rename), dispose (destroy / leave running /
 *          leave paused).  Any failure before the commit: undo (cancel,
 *          resume, or report the domain lost).
 * Restore: head (IMAGE_INFO -> backend, DOMAIN_CONFIG), identity (name,
 *          UUID, clashes), build (new paused domain), feed (BACKEND_STREAM
 *          -> hypervisor as chunks authenticate), settle (END verified, the
 *          load, the final name), then unpause.  Any failure: the new
 *          domain is torn down.
 *
 * Owns: the order of operations and every rule that is the same for all
 * hypervisors.  Must not: know a hypervisor by name, print, or exit.
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"

#define PIPE_SIZE (1 << 20)
#define COPY_BUF (1u << 20)

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void big_pipe(int fd)
{
    fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE);       /* best effort */
}

/* ---- guardian ------------------------------------------------------------
 * A separate process (re-executed as "vmckpt-guard", in its own session,
 * deaf to terminal signals) that holds the read end of a pipe.  When the
 * saving process dies without saying "done", the pipe hits EOF and the
 * guardian cancels the save, resumes the domain if it was running, and
 * removes the .partial file: SIGKILL cannot leave a domain paused.
 * A restore has one too (was_running = GUARD_RESTORE): the restorer names
 * the domain it is building ("D<id>;", or while the hypervisor has not
 * said its id, "n<name>\0" with "u<uuid hex>;p<source id>;") and, should
 * it die before "N", the guardian destroys it, by id, by name, or else by
 * UUID (a domain killed before it was named): no half-built domain
 * outlives a killed restore. */
#define GUARD_RESTORE 2
#define GUARD_FILES VMC_DISK_MAX     /* disk files a restore creates */

struct guard {
    pid_t pid;
    int fd;
};

/* After the saver died: cancel the save in flight and, if the domain ran
 * when the save began, bring it back to running (resume also undoes a
 * suspend that the save left behind). */
static int guard_recover(const struct vmc_backend *be, struct vmc_ctx *ctx,
                         int domid, int was_running)
{
    struct vmc_dom *d;
    char spec[16];
    int rc, running = 0;

    snprintf(spec, sizeof(spec), "%d", domid);
    if ((rc = be->open(ctx, spec, 0, &d)) < 0)
        return rc;
    be->save_cancel(d);
    if (be->view_release && (rc = be->view_release(ctx, d)) < 0) {
        be->close(d);               /* its own disks first: asked again */
        return rc;
    }
    if (was_running && (rc = be->is_running(ctx, d, &running)) == 0 &&
        !running)
        rc = be->resume(ctx, d, NULL);
    be->close(d);
    return rc;
}

/* The domain whose UUID (32 hex digits) is hex, but pending (a source
 * being saved), if any: destroyed. */
static void guard_destroy_by_uuid(const struct vmc_backend *be,
                                  struct vmc_ctx *ctx, const char *hex,
                                  int pending)
{
    uint8_t u[16];
    struct vmc_dom *d;
    char spec[16];
    int id = 0, what = 0;

    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return;
        u[i] = (uint8_t)v;
    }
    vmc_ctx_clear(ctx);
    if (be->find(ctx, NULL, u, pending, &id, &what) < 0 ||
        what != VMC_FIND_UUID || id <= 0 || be->saving(id))
        return;
    snprintf(spec, sizeof(spec), "%d", id);
    if (be->open(ctx, spec, 0, &d) == 0) {
        be->destroy(ctx, d);
        be->close(d);
    }
}

static void guard_run(int fd, const char *backend, int domid, int was_running,
                      const char *partial)
{
    const struct vmc_backend *be = vmc_backend_get(backend);
    struct vmc_ctx ctx = { 0 };
    char c = 0, last = 0, num[16], name[300] = "", hex[33] = "";
    static char files[GUARD_FILES][PATH_MAX];
    size_t nn = 0, nl = 0, fl = 0, hl = 0;
    int innum = 0, inname = 0, infile = 0, inuuid = 0, nfiles = 0, keep = 0;
    int pending = -1;
    ssize_t n;

    while ((n = read(fd, &c, 1)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (inname) {                       /* "n<name>\0": not yet an id */
            if (!c)
                inname = 0, name[nl] = '\0';
            else if (nl < sizeof(name) - 1)
                name[nl++] = c;
            continue;
        }
        if (infile) {                       /* "f<path>\0": a new disk file */
            if (!c) {
                infile = 0;
                files[nfiles][fl] = '\0';
                nfiles += fl > 0 && fl < PATH_MAX - 1;
            } else if (fl < PATH_MAX - 1) {
                files[nfiles][fl++] = c;
            }
            continue;
        }
        if (inuuid) {                       /* "u<32 hex>;": its UUID */
            if (c == ';')
                inuuid = 0, hex[hl] = '\0';
            else if (hl < 32)
                hex[hl++] = c;
            continue;
        }
        if (c == 'n') {
            inname = 1;
            nl = 0;
        } else if (c == 'u') {
            inuuid = 1;
            hl = 0;
        } else if (c == 'p') {              /* "p<id>;": a source it may clash with */
            innum = 'p';
            nn = 0;
        } else if (c == 'f' && nfiles < GUARD_FILES) {
            infile = 1;
            fl = 0;
        } else if (c == 'D') {              /* "D<id>;": the domain built */
            innum = 1;
            nn = 0;
        } else if (innum && c == ';') {
            num[nn] = '\0';
            if (innum == 'p')
                pending = atoi(num);
            else
                domid = atoi(num);
            innum = 0;
        } else if (innum && nn < sizeof(num) - 1) {
            num[nn++] = c;
        } else if (c == 'K') {              /* committed: keep it paused */
            keep = 1;
        }
        last = c;
    }
    if (last == 'N' || !be || keep)
        return;
    if (was_running == GUARD_RESTORE) {     /* the restorer died */
        struct vmc_dom *d;
        char spec[320];
        if (domid >= 0)
            snprintf(spec, sizeof(spec), "%d", domid);
        else                                /* named: unique, and new */
            snprintf(spec, sizeof(spec), "%s", name);
        /* the restorer's own locks go with it a moment after its pipe:
         * asked again, a backend also clears what a domain that never
         * started left behind */
        for (int i = 0; i < 3 && (domid >= 0 || name[0]); i++) {
            vmc_ctx_clear(&ctx);
            if (be->open(&ctx, spec, 0, &d) == 0) {
                be->destroy(&ctx, d);
                be->close(d);
                domid = -2;             /* done */
                break;
            }
            usleep(200000);
        }
        /* not found by its name: killed before the hypervisor named it
         * (or after a rename).  Its UUID then says which: the restore
         * made sure no other domain had it, but the source it may come
         * from, which is being saved */
        if (domid == -1 && strlen(hex) == 32)
            guard_destroy_by_uuid(be, &ctx, hex, pending);
        for (int i = 0; i < nfiles; i++)    /* after the domain that used them */
            unlink(files[i]);
        return;
    }
    /* The saver died mid-save. */
    if (partial && *partial)
        outfile_remove_partial(partial);      /* a split set's: every piece */
    for (int i = 0; i < 3; i++) {
        vmc_ctx_clear(&ctx);
        if (guard_recover(be, &ctx, domid, was_running) == 0)
            return;
        sleep(1);
    }
}

/* The guardian's orders come through its pipe, never its command line:
 * "G<backend>\n<domid>\n<was_running>\n<partial>\0" first, from the
 * parent that forked it.  A command line (sudo, a wrapper) can name no
 * file for it to remove and no domain for it to touch: sudo and such
 * close inherited descriptors, and without a pipe on fd 3 holding those
 * orders the process is not a guardian.  VMC_E_FORMAT: no orders. */
static int guard_orders(int fd, char *backend, size_t bn, int *domid,
                        int *was_running, char *partial, size_t pn)
{
    char buf[4200], *f[4];
    size_t n = 0;
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))
        return VMC_E_FORMAT;
    while (n < sizeof(buf) - 1) {           /* byte by byte: D; follows */
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return VMC_E_FORMAT;
        if (buf[n++] == '\0')
            break;
    }
    buf[n] = '\0';
    if (n < 2 || buf[0] != 'G' || buf[n - 1] != '\0')
        return VMC_E_FORMAT;
    f[0] = buf + 1;
    for (int i = 1; i < 4; i++) {
        if (!(f[i] = strchr(f[i - 1], '\n')))
            return VMC_E_FORMAT;
        *f[i]++ = '\0';
    }
    if (strlen(f[0]) >= bn || strlen(f[3]) >= pn)
        return VMC_E_FORMAT;
    snprintf(backend, bn, "%s", f[0]);
    *domid = atoi(f[1]);
    *was_running = atoi(f[2]);
    snprintf(partial, pn, "%s", f[3]);
    return 0;
}

/* The guardian's life, exec'd or not: its orders from fd 3, then its
 * watch; exits 2 without orders (not a guardian after all: nothing done). */
static void guard_serve(void)
{
    char backend[32], partial[4097];
    int domid, was_running;

    if (guard_orders(3, backend, sizeof(backend), &domid, &was_running,
                     partial, sizeof(partial)) < 0)
        _exit(2);
    prctl(PR_SET_NAME, "vmckpt-guard", 0, 0, 0);    /* not "vmsave" in ps */
    guard_run(3, backend, domid, was_running, partial);
    _exit(0);
}

void vmc_guard_dispatch(int argc, char **argv)
{
    if (argc == 1 && !strcmp(argv[0], "vmckpt-guard"))
        guard_serve();
}

static int guard_start(struct vmc_ctx *ctx, const struct vmc_backend *be,
                       int domid, int was_running, const char *partial,
                       struct guard *g)
{
    int p[2];
    pid_t pid;

    g->pid = -1;
    g->fd = -1;
    if (pipe2(p, O_CLOEXEC) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "pipe: %s", strerror(errno));
    pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return vmc_set_error(ctx, VMC_E_IO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        setsid();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        if (p[0] != 3) {
            dup2(p[0], 3);
            close(p[0]);
        } else {
            fcntl(3, F_SETFD, 0);
        }
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        for (int fd = 4; fd < 1024; fd++)
            close(fd);
        execl("/proc/self/exe", "vmckpt-guard", (char *)NULL);
        guard_serve();              /* no exec: the same, in this process */
    }
    close(p[0]);
    g->pid = pid;
    g->fd = p[1];
    {
        char orders[4200];
        int n = snprintf(orders, sizeof(orders), "G%s\n%d\n%d\n%s", be->name,
                         domid, was_running, partial ? partial : "");
        if (n < 0 || (size_t)n >= sizeof(orders) - 1 ||
            write(g->fd, orders, (size_t)n + 1) != n + 1) {
            close(g->fd);           /* EOF before orders: it does nothing */
            g->fd = -1;
            waitpid(pid, NULL, 0);
            g->pid = -1;
            return vmc_set_error(ctx, VMC_E_IO, "cannot start the guardian");
        }
    }
    return 0;
}

/* A migration past its point of no return: should this process die now,
 * the guardian leaves the source paused (the receiver may run it). */
static void guard_keep(struct guard *g)
{
    if (g->fd >= 0 && write(g->fd, "K", 1) != 1) {
        /* the guardian is gone: nothing would resume the source anyway */
    }
}

/* Tells the guardian all is handled, and reaps it. */
static void guard_done(struct guard *g)
{
    if (g->fd >= 0) {
        if (write(g->fd, "N", 1) < 0) {
            /* the guardian is gone: nothing to tell */
        }
        close(g->fd);
        g->fd = -1;
    }
    if (g->pid > 0) {
        waitpid(g->pid, NULL, 0);
        g->pid = -1;
    }
}

/* ---- save ---------------------------------------------------------- */

/* Progress of a live save: a monitor thread samples the backend every
 * 100 ms for pre-copy rounds and ends a pre-copy that does not converge.
 * It must not be the thread that drains the hypervisor's pipe: QEMU holds
 * its big lock while it writes the last pages, so a monitor query can wait
 * for the pipe to drain (a deadlock if the drainer is the one waiting).
 * Rounds are written as PRECOPY_ROUND records after the stream. */
struct saveprog {
    const struct vmc_backend *be;
    struct vmc_dom *d;
    const struct vmc_save_opts *o;
    struct vmc_save_result *res;
    uint64_t round_start_ns, round_start_bytes, start_ns;
    uint32_t round;
    struct vmc_round *rounds; /* seen so far (nrounds in res) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void round_close(struct saveprog *p, uint64_t now, uint64_t bytes)
{
    struct vmc_save_result *r = p->res;
    struct vmc_round *g;

    if (bytes < p->round_start_bytes || r->nrounds >= (1 << 20))
        return;
    if (!(r->nrounds & (r->nrounds - 1))) {    /* full at 0, 1, 2, 4 ... */
        size_t cap = r->nrounds ? (size_t)r->nrounds * 2 : 1;
        if (!(g = realloc(p->rounds, cap * sizeof(*g))))
            return;                 /* the statistics are best effort */
        p->rounds = g;
    }
    p->rounds[r->nrounds].bytes = bytes - p->round_start_bytes;
    p->rounds[r->nrounds].duration_ns = now - p->round_start_ns;
    r->nrounds++;
    p->round_start_ns = now;
    p->round_start_bytes = bytes;
}

static void monitor_sample(struct saveprog *p)
{
    struct vmc_ctx tmp = { 0 };
    uint64_t now = vmc_now_ns(), tr;
    uint32_t round;

    if (p->be->save_poll(&tmp, p->d, &tr, &round) == 0) {
        if (!p->round && round)
            p->round = round;
        while (round > p->round) {          /* a round ended */
            round_close(p, now, tr);
            p->round++;
        }
    }
    /* Pre-copy that does not converge (a guest dirtying memory faster than
     * it can be sent) ends the way virsh migrate --timeout does: pause the
     * guest, and the hypervisor sends the rest. */
    if (p->res->was_running && !p->res->forced_stop &&
        now - p->start_ns > (uint64_t)(p->o->live_timeout_s ? p->o->live_timeout_s
                                                            : 30) * 1000000000u) {
        vmc_ctx_clear(&tmp);
        if (p->be->stop_copy(&tmp, p->d) == 0)
            p->res->forced_stop = 1;
    }
}

static void *monitor_thread(void *arg)
{
    struct saveprog *p = arg;

    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->mu);
        monitor_sample(p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* After the stream: the last round, then the records. */
static int rounds_finish(struct saveprog *p, struct vmc_writer *w)
{
    struct vmc_ctx tmp = { 0 };
    uint64_t tr;
    uint32_t round;
    int rc = 0;

    if (p->be->save_poll(&tmp, p->d, &tr, &round) == 0)
        round_close(p, vmc_now_ns(), tr);   /* stop and copy */
    for (int i = 0; i < p->res->nrounds && rc == 0; i++) {
        struct vmc_wire_precopy_round r = { (uint32_t)i + 1, 0,
                                            p->rounds[i].bytes,
                                            p->rounds[i].duration_ns };
        uint8_t rec[24];
        vmc_precopy_round_encode(rec, &r);
        rc = vmc_writer_record(w, VMC_REC_PRECOPY_ROUND, rec, sizeof(rec));
    }
    return rc;
}

/* ---- a domain lost during a save ---------------------------------------
 * A failed save that could not bring the domain back asks the backend
 * whether the guest itself died (it crashed or triple-faulted while being
 * saved) rather than being left stopped.  If so, the evidence (the error,
 * the hypervisor's log lines about it) goes to a file in vmc_logdir()
 * (0600, never overwritten) and the error becomes one line that says the
 * domain died, with the hypervisor's reason and the file. */

static FILE *evidence_open(const char *name, int domid, char *path, size_t n)
{
    char stem[128];
    int fd;

    log_stem(stem, sizeof(stem), domid, name);
    mkdir(vmc_logdir(), 0700);
    snprintf(path, n, "%s/lost-%s.log", vmc_logdir(), stem);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                   0600)) < 0) {
        path[0] = '\0';
        return NULL;
    }
    return fdopen(fd, "w");
}

static void note_loss(struct vmc_ctx *ctx, const struct vmc_backend *be,
                      struct vmc_dom *d, struct vmc_save_result *res)
{
    char path[512] = "", why[256] = "", err[512];
    FILE *ev = evidence_open(res->name, res->domid, path, sizeof(path));
    FILE *sink = ev ? ev : fopen("/dev/null", "w");
    int code = vmc_ctx_errcode(ctx);
    time_t now = time(NULL);

    snprintf(err, sizeof(err), "%s", vmc_ctx_error(ctx));
    if (sink)
        fprintf(sink, "vmckpt %s: save of domain %s (%s id %d) failed at %s"
                "error: %s\n\n", VMC_TOOL_VERSION, res->name, be->name,
                res->domid, ctime(&now), err);
    if (!sink || be->died(d, why, sizeof(why), sink) != 1) {
        if (sink)
            fclose(sink);
        if (path[0])
            unlink(path);
        return;
    }
    if (fclose(sink) != 0 && path[0]) {
        unlink(path);
        path[0] = '\0';
    }
    res->lost = 1;
    snprintf(res->lost_why, sizeof(res->lost_why), "%s", why);
    snprintf(res->evidence, sizeof(res->evidence), "%s", path);
    vmc_ctx_clear(ctx);
    vmc_set_error(ctx, code ? code : VMC_E_BACKEND, "the domain died during "
                  "the save%s%s%s%s%s", why[0] ? " (" : "", why,
                  why[0] ? ")" : "", res->evidence[0] ? "; evidence in " : "",
                  res->evidence);
}

/* ---- save: the steps ----------------------------------------------------
 * describe -> begin -> stream -> commit -> dispose; any failure before the
 * image is committed: undo.  Each step reads and leaves its state in one
 * struct save. */
struct save {
    struct vmc_ctx *ctx;
    const struct vmc_backend *be;
    const struct vmc_save_opts *o;
    struct vmc_save_result *res;
    struct vmc_outfile *of;
    struct vmc_dom *d;
    struct vmc_writer *w;
    struct guard g;
    struct vmc_image_meta meta;       /* IMAGE_INFO */
    uint32_t cfg_fmt;                 /* DOMAIN_CONFIG */
    uint8_t *cfg;
    size_t cfg_len;
    uint64_t t0;
    int64_t stop_us, end_us;          /* guest stopped / running again */
    int started;                      /* the hypervisor stream was started */
    int committed;                    /* the image is durable (and taken) */
    struct vmc_disk_info *disks;      /* the domain's disks, as recorded */
    int ndisks;
    int disk_fd[VMC_DISK_MAX];        /* a carried disk, opened by the plan */
    int view;                         /* a checkpoint carries disks: their
                                         point-in-time view (view_*) */
    int view_made;                    /* ...prepared: to release */
    int resumed;                      /* a checkpoint's guest runs again */
    int touched;                      /* the save paused it, or began to */
};

/* What the image says of each disk the config names: carried (read while
 * the guest is stopped), or only described, or a writable disk that a
 * checkpoint leaves running and that memory_only lets go uncaptured. */
static int disk_plan_one(struct save *s, struct vmc_disk_info *di)
{
    const struct vmc_save_opts *o = s->o;
    int writable = !(di->flags & VMC_DF_READONLY), fd, rc;
    int carry = o->disks == VMC_SAVE_DISKS_ALL ||
                (o->disks == VMC_SAVE_DISKS_WRITABLE && writable);

    if (!di->source_format)
        return vmc_set_error(s->ctx, VMC_E_UNSUPPORTED, "disk %s (%s): its "
                             "format is neither raw nor qcow2", di->id, di->path);
    if ((rc = vmc_disk_open(s->ctx, di->path, di->source_format, di->id, &fd,
                            &di->virtual_size)) < 0)
        return rc;
    if (carry)
        s->disk_fd[di - s->disks] = fd;     /* read after the memory */
    else
        close(fd);
    /* a migration reads them like a stopped save: the source stays paused
     * once its memory went out, until the receiver runs the copy */
    if (carry && o->mode == VMC_SAVE_CHECKPOINT && !s->be->view_take) {
        vmc_set_error(s->ctx, VMC_E_UNSUPPORTED, "domain %s: its disks are "
                      "carried only by a save that stops it (%s has no "
                      "point-in-time view of a running domain's disks)",
                      s->res->name, s->be->name);
        return vmc_set_hint(s->ctx, VMC_HINT_STOPPED_DISKS);
    }
    if (carry) {
        di->flags |= VMC_DF_CARRIED;
        s->res->disks_carried++;
        s->view = o->mode == VMC_SAVE_CHECKPOINT;
    } else if (writable && o->mode == VMC_SAVE_CHECKPOINT) {
        if (!o->memory_only) {
            vmc_set_error(s->ctx, VMC_E_INVAL, "domain %s has the writable "
                          "disk %s (%s): a checkpoint of its memory alone "
                          "would not match that disk once the domain runs on",
                          s->res->name, di->id, di->path);
            return vmc_set_hint(s->ctx, VMC_HINT_MEMORY_ONLY);
        }
        di->flags |= VMC_DF_NOT_CAPTURED;
        s->res->disks_not_captured++;
    }
    return 0;
}

static int save_disk_plan(struct save *s)
{
    int rc;

    if (!s->cfg)
        return 0;
    if (!(s->disks = calloc(VMC_DISK_MAX, sizeof(*s->disks))))
        return vmc_set_error(s->ctx, VMC_E_NOMEM, "out of memory");
    if ((rc = config_disks(s->ctx, &s->meta, s->cfg_fmt, s->cfg, s->cfg_len,
                           s->disks, VMC_DISK_MAX, &s->ndisks)) < 0)
        return rc;
    s->res->disks = s->ndisks;
    for (int i = 0; i < s->ndisks; i++)
        if ((rc = disk_plan_one(s, &s->disks[i])) < 0)
            return rc;
    return 0;
}

/* The carried disks, read while the guest is stopped (after its memory:
 * a stopped save keeps it stopped until it is destroyed or left paused). */
static int save_disks(struct save *s)
{
    struct vmc_stats st0, st1;
    uint64_t t0 = vmc_now_ns();
    int rc = 0;

    vmc_writer_stats(s->w, &st0);
    for (int i = 0; i < s->ndisks && rc == 0; i++)
        if (s->disks[i].flags & VMC_DF_CARRIED)
            rc = vmc_writer_disk_content(s->w, &s->disks[i], s->disk_fd[i],
                                         NULL, NULL);
    vmc_writer_stats(s->w, &st1);
    s->res->disk_bytes = st1.plaintext_bytes - st0.plaintext_bytes;
    s->res->disk_ns = vmc_now_ns() - t0;
    return rc;
}

/* The domain, locked, and what describes it in the image. */
static int save_describe(struct save *s, const char *spec)
{
    int rc;

    if ((rc = s->be->open(s->ctx, spec, 1, &s->d)) < 0)
        return rc;
    s->res->domid = s->be->domid(s->d);
    snprintf(s->res->name, sizeof(s->res->name), "%s", s->be->name_of(s->d));
    if ((rc = s->be->describe(s->ctx, s->d, &s->meta, &s->cfg_fmt, &s->cfg,
                              &s->cfg_len)) < 0 ||
        (rc = s->be->is_running(s->ctx, s->d, &s->res->was_running)) < 0 ||
        (rc = save_disk_plan(s)) < 0)
        return rc;
    s->meta.flags = (s->o->live ? VMC_IIF_LIVE : 0) |
                    (s->o->mode == VMC_SAVE_CHECKPOINT ? VMC_IIF_CHECKPOINT : 0);
    if (s->o->expect)
        s->o->expect(s->o->progress_arg, s->meta.memory_kib * 1024);
    return 0;
}

/* The guardian first (from here on the domain cannot be lost), then the
 * sealed writer and the records that come before the hypervisor stream. */
static int save_begin(struct save *s)
{
    int rc;

    if ((rc = guard_start(s->ctx, s->be, s->res->domid, !!s->res->was_running,
                          vmc_outfile_partial(s->of), &s->g)) < 0 ||
        (rc = vmc_writer_new(s->ctx, vmc_outfile_fd(s->of), s->o->keys,
                             &s->o->wopts, &s->w)) < 0)
        return rc;
    vmc_writer_stream_id(s->w, s->res->stream_id);
    if ((rc = vmc_writer_describe(s->w, &s->meta, s->cfg_fmt, s->cfg ? s->cfg :
                                  (const uint8_t *)"", s->cfg_len)) < 0)
        return rc;
    for (int i = 0; i < s->ndisks; i++)
        if ((rc = vmc_writer_disk(s->w, &s->disks[i])) < 0)
            return rc;
    if (s->view && s->res->was_running) {
        s->view_made = 1;               /* from here on undo releases it */
        return s->be->view_prepare(s->ctx, s->d, s->disks, s->ndisks);
    }
    return 0;
}

/* A checkpoint's carried disks: frozen while the guest is still stopped
 * (its memory captured: the same instant), read once it runs again, then
 * the domain back on its own files with every write since. */
static int save_view_copy(struct save *s)
{
    int rc;

    if ((rc = s->be->view_take(s->ctx, s->d, s->disks, s->disk_fd,
                               s->ndisks)) < 0)
        return rc;
    s->end_us = wall_us();
    if ((rc = s->be->resume(s->ctx, s->d, &s->end_us)) < 0)
        return rc;
    s->resumed = 1;
    if ((rc = save_disks(s)) < 0 ||
        (rc = s->be->view_release(s->ctx, s->d)) < 0)
        return rc;
    s->view_made = 0;
    return 0;
}

/* Copies the hypervisor stream from fd into the image; a live save has the
 * monitor thread beside it and ends with its PRECOPY_ROUND records. */
static int save_copy(struct save *s, int fd)
{
    struct saveprog sp = { .be = s->be, .d = s->d, .o = s->o, .res = s->res,
                           .round_start_ns = vmc_now_ns(),
                           .start_ns = vmc_now_ns(),
                           .mu = PTHREAD_MUTEX_INITIALIZER,
                           .cv = PTHREAD_COND_INITIALIZER };
    pthread_t mon;
    int have_mon = s->o->live &&
                   pthread_create(&mon, NULL, monitor_thread, &sp) == 0;
    int rc = vmc_writer_copy_backend(s->w, fd, s->o->progress,
                                     s->o->progress_arg);

    close(fd);                  /* before the join: a failed copy must not */
    if (have_mon) {             /* leave the hypervisor blocked on the pipe */
        pthread_mutex_lock(&sp.mu);
        sp.stop = 1;
        pthread_cond_signal(&sp.cv);
        pthread_mutex_unlock(&sp.mu);
        pthread_join(mon, NULL);
    }
    if (rc == 0 && s->o->live)
        rc = rounds_finish(&sp, s->w);
    for (int i = 0; i < s->res->nrounds && s->o->round; i++)
        s->o->round(s->o->round_arg, &sp.rounds[i]);
    free(sp.rounds);
    return rc;
}

/* Stops the guest (unless live), runs the hypervisor's save through a pipe
 * into the image, and waits for the hypervisor's verdict. */
static int save_stream(struct save *s)
{
    struct vmc_save_tuning t = { s->o->live, s->o->max_downtime_ms,
                                 s->o->max_bandwidth };
    int64_t live_stop = 0;
    int rc, pp[2];

    if (pipe2(pp, O_CLOEXEC) < 0)
        return vmc_set_error(s->ctx, VMC_E_IO, "pipe: %s", strerror(errno));
    big_pipe(pp[0]);
    s->touched = 1;
    if (!s->o->live && s->res->was_running) {
        if (s->be->flags & VMC_BE_SAVE_STOPS)
            s->stop_us = wall_us();
        else if ((rc = s->be->pause(s->ctx, s->d, &s->stop_us)) < 0)
            goto fail;
    }
    s->started = 1;
    if ((rc = s->be->save_start(s->ctx, s->d, pp[1], &t)) < 0)
        goto fail;
    close(pp[1]);
    if ((rc = save_copy(s, pp[0])) < 0 ||
        (rc = s->be->save_wait(s->ctx, s->d, &live_stop)) < 0 ||
        (rc = s->view_made ? save_view_copy(s) : save_disks(s)) < 0)
        return rc;
    if (s->o->live && s->res->was_running)
        s->stop_us = live_stop ? live_stop : wall_us();
    return 0;
fail:
    close(pp[0]);
    close(pp[1]);
    return rc;
}

/* The receiver is READY: from here on the source stays paused (its
 * guardian is told first), COMMIT goes out, and only the receiver's
 * RUNNING lets the source go.  No answer: the outcome is unknown and
 * both copies are kept (at most one runs, at least one exists); a
 * receiver that says it gave up gets the source resumed. */
static int save_commit_migration(struct save *s)
{
    int gave_up = 0, rc;

    guard_keep(&s->g);
    if ((rc = s->o->commit(s->o->confirm_arg, s->ctx, s->res->stream_id,
                           &gave_up)) == 0)
        return 0;
    if (gave_up)
        return rc;                  /* nothing runs there: undo resumes here */
    s->committed = 1;               /* no undo: the source stays paused */
    s->res->outcome_unknown = 1;
    guard_done(&s->g);
    return rc;
}

/* Makes the image durable under its final name: a checkpoint's guest runs
 * again first (its state is captured once the stream is complete); a
 * migration also waits for the receiver to take the domain. */
static int save_commit(struct save *s)
{
    struct vmc_stats st;
    uint64_t down_ns;
    int rc;

    if (!s->resumed)
        s->end_us = wall_us();
    if (s->o->mode == VMC_SAVE_CHECKPOINT && s->res->was_running &&
        !s->resumed && (rc = s->be->resume(s->ctx, s->d, &s->end_us)) < 0)
        return rc;
    down_ns = s->stop_us ? (uint64_t)(s->end_us - s->stop_us) * 1000 : 0;
    if ((rc = vmc_writer_finish(s->w, vmc_now_ns() - s->t0, down_ns)) < 0 ||
        (rc = vmc_outfile_commit(s->ctx, s->of)) < 0)
        return rc;
    if (s->o->mode == VMC_SAVE_MIGRATE &&
        (rc = s->o->confirm(s->o->confirm_arg, s->ctx, s->res->stream_id)) < 0)
        return rc;                  /* no READY: the source is resumed by undo */
    if (s->o->mode == VMC_SAVE_MIGRATE && s->o->commit &&
        (rc = save_commit_migration(s)) < 0)
        return rc;
    s->committed = 1;
    vmc_writer_stats(s->w, &st);
    s->res->stream_bytes = st.stream_bytes;
    s->res->backend_bytes = st.backend_bytes;
    return 0;
}

/* What becomes of the source once the image is committed. */
static int save_dispose(struct save *s)
{
    int rc = 0;

    if (s->o->mode != VMC_SAVE_CHECKPOINT)
        s->end_us = wall_us();
    if (s->o->mode == VMC_SAVE_MIGRATE || s->o->mode == VMC_SAVE_DESTROY) {
        guard_done(&s->g);          /* the image is durable: let it go */
        if (s->be->destroy(s->ctx, s->d) < 0) {
            vmc_ctx_clear(s->ctx);
            s->res->destroy_failed = 1;
            rc = vmc_set_error(s->ctx, VMC_E_BACKEND, "%s, but destroying the "
                               "%s failed: it is left paused",
                               s->o->mode == VMC_SAVE_MIGRATE ? "migrated"
                                                              : "image complete",
                               s->o->mode == VMC_SAVE_MIGRATE ? "source"
                                                              : "domain");
        }
    }
    if (s->stop_us)
        s->res->downtime_ns = (uint64_t)(s->end_us - s->stop_us) * 1000;
    return rc;
}

/* A save that failed before its commit: the hypervisor stream is cancelled
 * and a guest that was running runs again; if it cannot be brought back,
 * was it lost (note_loss)? */
static void save_undo(struct save *s)
{
    struct vmc_save_result *res = s->res;
    struct vmc_ctx tmp = { 0 };
    int running = 0;

    if (!s->touched && !s->view_made)
        return;                     /* refused before it touched the domain */
    if (s->started)
        s->be->save_cancel(s->d);
    for (int i = 0; i < 3 && s->view_made; i++) {   /* its own disks back */
        vmc_ctx_clear(&tmp);
        if (s->be->view_release(&tmp, s->d) == 0)
            s->view_made = 0;
    }
    if (!res->was_running)
        return;
    for (int i = 0; i < 3 && !res->resumed_after_error; i++) {
        vmc_ctx_clear(&tmp);
        if (s->be->is_running(&tmp, s->d, &running) == 0 && !running)
            s->be->resume(&tmp, s->d, NULL);
        if (s->be->is_running(&tmp, s->d, &running) == 0)
            res->resumed_after_error = running;
        else
            res->state_unknown = 1;
    }
    if (res->resumed_after_error)
        res->state_unknown = 0;
    else
        note_loss(s->ctx, s->be, s->d, res);
}

int vmc_save(struct vmc_ctx *ctx, const struct vmc_backend *be, const char *spec,
             struct vmc_outfile *of, const struct vmc_save_opts *o,
             struct vmc_save_result *res)
{
    struct save s = { .ctx = ctx, .be = be, .o = o, .res = res, .of = of,
                      .g = { -1, -1 }, .t0 = vmc_now_ns() };
    int rc;

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    for (int i = 0; i < VMC_DISK_MAX; i++)
        s.disk_fd[i] = -1;
    if ((rc = save_describe(&s, spec)) == 0 && (rc = save_begin(&s)) == 0 &&
        (rc = save_stream(&s)) == 0 && (rc = save_commit(&s)) == 0)
        rc = save_dispose(&s);
    if (rc < 0 && !s.committed && s.d)
        save_undo(&s);
    guard_done(&s.g);
    vmc_writer_free(s.w);
    be->close(s.d);
    free(s.cfg);
    free(s.disks);
    for (int i = 0; i < VMC_DISK_MAX; i++)
        if (s.disk_fd[i] >= 0)
            close(s.disk_fd[i]);
    res->total_ns = vmc_now_ns() - s.t0;
    return rc;
}

/* ---- restore: the steps -------------------------------------------------
 * head -> identity -> build -> feed -> settle -> run; any failure: undo
 * (the new domain is torn down). */
struct restore {
    struct vmc_ctx *ctx;
    struct vmc_reader *r;
    const struct vmc_restore_opts *o;
    struct vmc_restore_result *res;
    const struct vmc_backend *be;
    struct vmc_dom *d;
    struct vmc_image_meta m;
    uint8_t *cfg;                     /* DOMAIN_CONFIG body (no head) */
    size_t cfg_len;
    uint32_t cfg_fmt;
    struct vmc_restore_as as;
    char name[256], build_name[280];
    int pending;                      /* id of a clashing source being saved */
    struct guard g;
    int feed;                         /* write end of the hypervisor's pipe */
    struct vmc_disks *disks;          /* the DISK records, and their content */
    struct vmc_record held;           /* read past the DISKs, not yet fed */
    int have_held;
    char (*disk_paths)[PATH_MAX];     /* carried disks written: to remove */
    int *disk_fds;
};

/* IMAGE_INFO names the backend; DOMAIN_CONFIG must follow. */
static int restore_head(struct restore *s)
{
    int rc;

    if ((rc = vmc_reader_head(s->r, &s->m, &s->cfg_fmt, &s->cfg,
                              &s->cfg_len)) < 0)
        return rc;
    if (!(s->be = backend_by_id(s->m.backend)))
        return vmc_set_error(s->ctx, VMC_E_UNSUPPORTED, "image of backend %u "
                             "(%s): not built into this vmckpt (built: %s)",
                             s->m.backend, vmc_backend_id_name(s->m.backend),
                             vmc_backends_built());
    s->res->backend = s->be;
    if (s->o->expect)
        s->o->expect(s->o->progress_arg, s->m.memory_kib * 1024);
    return 0;
}

/* The DISK records that follow the head; the first other record is held
 * for restore_feed. */
static int restore_disk_records(struct restore *s)
{
    int rc;

    if ((rc = vmc_disks_new(s->ctx, &s->disks)) < 0)
        return rc;
    while ((rc = vmc_reader_next(s->r, &s->held)) == 1) {
        if (s->held.type != VMC_REC_DISK) {
            s->have_held = 1;
            return 0;
        }
        if ((rc = vmc_disks_record(s->disks, s->r, &s->held)) < 0)
            return rc;
    }
    return rc;          /* END right after the head: feed finds it so */
}

/* A disk the image does not carry must be the one it was saved with, as
 * far as the image can tell (its size); one it says it did not capture
 * may have moved on: the result says so, for the tool to warn. */
static int disk_present(struct restore *s, const struct vmc_disk_info *di,
                        const struct vmc_disk_info *now)
{
    uint64_t size;
    int fd, rc;

    if (di->flags & VMC_DF_NOT_CAPTURED)
        s->res->disks_not_captured++;
    if ((rc = vmc_disk_open(s->ctx, now->path, di->source_format, di->id,
                            &fd, &size)) < 0)
        return rc;
    close(fd);
    if (size != di->virtual_size)
        rc = vmc_set_error(s->ctx, VMC_E_INVAL, "disk %s: %s is %llu octets, "
                           "the image recorded %llu: not the disk it was saved "
                           "with", di->id, now->path, (unsigned long long)size,
                           (unsigned long long)di->virtual_size);
    return rc;
}

/* Does the image carry a disk?  Then the policy judges the config once it
 * points at the new disk files (restore_disk_files, after the identity
 * that names them); otherwise before anything else, as always. */
static int carried(const struct restore *s)
{
    for (int i = 0; i < vmc_disks_count(s->disks); i++)
        if (vmc_disks_get(s->disks, i)->flags & VMC_DF_CARRIED)
            return 1;
    return 0;
}

/* A file this restore created: the guardian removes it should this
 * process die before the domain runs. */
static void guard_tell_file(struct restore *s, const char *path)
{
    size_t l = strlen(path) + 1;
    char msg[PATH_MAX + 1];

    msg[0] = 'f';
    memcpy(msg + 1, path, l);
    if (s->g.fd < 0 || write(s->g.fd, msg, l + 1) != (ssize_t)(l + 1)) {
        /* no guardian yet or gone: the restore goes on */
    }
}

/* The admin's path for disk id (vmrestore --disk), or NULL. */
static const char *disk_mapped(const struct restore *s, const char *id)
{
    for (int i = 0; i < s->o->ndisk_map; i++)
        if (!strcmp(s->o->disk_map[i].id, id))
            return s->o->disk_map[i].to;
    return NULL;
}

/* A carried disk: a new sparse file, the admin's --disk path or
 * NAME-ID.raw in disk_dir (0600, never over an existing file), the config
 * pointed at it, its content written as its records arrive. */
static int disk_create(struct restore *s, int i, const struct vmc_disk_info *di)
{
    const char *to = disk_mapped(s, di->id);
    char *p = s->disk_paths[i];
    int fd;

    if (!to && !s->o->disk_dir) {
        vmc_set_error(s->ctx, VMC_E_INVAL, "the image carries disk %s (%s)",
                      di->id, vmc_disk_format_name(di->source_format));
        return vmc_set_hint(s->ctx, VMC_HINT_DISK_DIR);
    }
    if ((size_t)(to ? snprintf(p, PATH_MAX, "%s", to) :
                 snprintf(p, PATH_MAX, "%s/%s-%s.raw", s->o->disk_dir, s->name,
                          di->id)) >= PATH_MAX) {
        p[0] = '\0';
        return vmc_set_error(s->ctx, VMC_E_INVAL, "disk %s: path too long",
                             di->id);
    }
    if ((fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0600)) < 0) {
        int e = errno;
        vmc_set_error(s->ctx, e == EEXIST ? VMC_E_EXISTS : VMC_E_IO,
                      "disk %s: %s: %s", di->id, p, strerror(e));
        p[0] = '\0';               /* not ours: never removed */
        return s->ctx->code;
    }
    s->disk_fds[i] = fd;
    guard_tell_file(s, p);
    if (ftruncate(fd, (off_t)di->virtual_size) < 0)
        return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: %s: %s", di->id, p,
                             strerror(errno));
    vmc_disks_set_sink(s->disks, i, fd);
    return config_set_disk(s->ctx, &s->m, s->cfg_fmt, &s->cfg, &s->cfg_len,
                           di->id, p, 1);
}

/* Every recorded disk either written anew (carried) or found as it was. */
static int restore_disk_files(struct restore *s)
{
    struct vmc_disk_info *now = NULL;
    int n = vmc_disks_count(s->disks), nnow = 0, rc = 0;

    if (!n)
        return 0;
    s->disk_paths = calloc((size_t)n, sizeof(*s->disk_paths));
    s->disk_fds = malloc((size_t)n * sizeof(int));
    now = calloc(VMC_DISK_MAX, sizeof(*now));
    if (!s->disk_paths || !s->disk_fds || !now) {
        free(now);
        return vmc_set_error(s->ctx, VMC_E_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++)
        s->disk_fds[i] = -1;
    if (carried(s) && s->g.fd < 0 &&   /* it removes what a death leaves */
        (rc = guard_start(s->ctx, s->be, -1, GUARD_RESTORE, NULL, &s->g)) < 0)
        goto out;
    if ((rc = config_disks(s->ctx, &s->m, s->cfg_fmt, s->cfg, s->cfg_len, now,
                           VMC_DISK_MAX, &nnow)) < 0)
        goto out;
    for (int i = 0; i < n && rc == 0; i++) {
        const struct vmc_disk_info *di = vmc_disks_get(s->disks, i);
        const struct vmc_disk_info *c = NULL;
        for (int j = 0; j < nnow && !c; j++)
            if (!strcmp(now[j].id, di->id))
                c = &now[j];
        if (!c)
            rc = vmc_set_error(s->ctx, VMC_E_INVAL, "disk %s: recorded in the "
                               "image, but the domain config has no such disk",
                               di->id);
        else if (di->flags & VMC_DF_CARRIED)
            rc = disk_create(s, i, di);
        else
            rc = disk_present(s, di, c);
    }
out:
    free(now);
    return rc;
}

/* The carried disks are whole (their digests matched): durable before
 * the domain may run. */
static int restore_disks_sync(struct restore *s)
{
    int n = vmc_disks_count(s->disks), rc;
    struct vmc_end_info end;

    vmc_reader_end(s->r, &end);
    if ((rc = vmc_disks_finish(s->disks, end.plaintext_bytes)) < 0)
        return rc;
    for (int i = 0; i < n; i++) {   /* each in its directory: --disk */
        if (s->disk_fds[i] < 0)
            continue;
        if (fsync(s->disk_fds[i]) < 0)
            return vmc_set_error(s->ctx, VMC_E_IO, "disk %s: fsync: %s",
                                 s->disk_paths[i], strerror(errno));
        if ((rc = fsync_parent(s->ctx, s->disk_paths[i])) < 0)
            return rc;
        s->res->disks_written++;
    }
    return 0;
}

/* The DISK record of disk id, or NULL. */
static const struct vmc_disk_info *disk_recorded(const struct restore *s,
                                                 const char *id)
{
    for (int i = 0; i < vmc_disks_count(s->disks); i++)
        if (!strcmp(vmc_disks_get(s->disks, i)->id, id))
            return vmc_disks_get(s->disks, i);
    return NULL;
}

static int remap_twice(struct vmc_ctx *ctx, const struct vmc_remap *m, int n,
                       const char *what)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(m[i].id, m[j].id))
                return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: remapped twice",
                                     what, m[i].id);
    return 0;
}

/* The config the domain gets: the admin's --config in place of the
 * recorded one, then the admin's remaps: each network's new attachment,
 * each disk the image does not carry at its new path (in its format; a
 * carried one gets its new file in disk_create). */
static int restore_config(struct restore *s)
{
    const struct vmc_restore_opts *o = s->o;
    int rc;

    if (o->config) {                        /* in the recorded format */
        uint8_t *c = malloc(o->config_len + 1);
        if (!c)
            return vmc_set_error(s->ctx, VMC_E_NOMEM, "out of memory");
        memcpy(c, o->config, o->config_len);
        free(s->cfg);
        s->cfg = c;
        s->cfg_len = o->config_len;
    }
    if ((rc = remap_twice(s->ctx, o->net_map, o->nnet_map, "network")) < 0 ||
        (rc = remap_twice(s->ctx, o->disk_map, o->ndisk_map, "disk")) < 0)
        return rc;
    for (int i = 0; i < o->nnet_map; i++)
        if ((rc = config_set_net(s->ctx, &s->m, s->cfg_fmt, &s->cfg,
                                 &s->cfg_len, o->net_map[i].id,
                                 o->net_map[i].to)) < 0)
            return rc;
    for (int i = 0; i < o->ndisk_map; i++) {
        const struct vmc_disk_info *di = disk_recorded(s, o->disk_map[i].id);
        if (!*o->disk_map[i].to)
            return vmc_set_error(s->ctx, VMC_E_INVAL, "disk %s: empty path",
                                 o->disk_map[i].id);
        if ((!di || !(di->flags & VMC_DF_CARRIED)) &&
            (rc = config_set_disk(s->ctx, &s->m, s->cfg_fmt, &s->cfg,
                                  &s->cfg_len, o->disk_map[i].id,
                                  o->disk_map[i].to, 0)) < 0)
            return rc;
    }
    return 0;
}

/* The config, recorded or the admin's and remapped, is checked by the
 * restore policy before anything starts; the disk paths the admin gave
 * are allowed as --disk-dir is. */
static int restore_policy(struct restore *s)
{
    struct vmc_policy *p = NULL;
    int rc = 0;

    if (s->o->ndisk_map) {
        if (!(p = s->o->policy ? policy_dup(s->o->policy) : vmc_policy_new()))
            return vmc_set_error(s->ctx, VMC_E_NOMEM, "out of memory");
        for (int i = 0; i < s->o->ndisk_map && rc == 0; i++)
            rc = vmc_policy_allow_dir(s->ctx, p, s->o->disk_map[i].to);
    }
    if (rc == 0)
        rc = s->be->config_check(s->ctx, &s->m, s->cfg_fmt, s->cfg, s->cfg_len,
                                 p ? p : s->o->policy);
    vmc_policy_free(p);
    return rc;
}

static int clash_error(struct vmc_ctx *ctx, const char *name, int id, int what,
                       const char *still)
{
    if (what == VMC_FIND_NAME)
        return vmc_set_error(ctx, VMC_E_CLASH, "domain %s (id %d) is %srunning "
                             "with the same name", name, id, still);
    return vmc_set_error(ctx, VMC_E_CLASH, "domain id %d is %srunning with the "
                         "same UUID as %s", id, still, name);
}

/* Who the new domain is, by the rules of vmrestore(1): the recorded name
 * and UUID; --name: another name, and a fresh UUID only if the recorded
 * one runs; --clone: the first free NAME-clone, NAME-clone2, ..., always
 * a fresh UUID.  A clash is refused, except with a domain being saved
 * right now (`vmsave dom - | vmrestore -`): that one goes away when its
 * image is complete, and settle checks again before the new one runs. */
static int restore_identity(struct restore *s)
{
    const struct vmc_backend *be = s->be;
    int rc, what, other = 0, more;

    memcpy(s->as.uuid, s->m.uuid, 16);
    snprintf(s->name, sizeof(s->name), "%s", s->o->name ? s->o->name : s->m.name);
    if (s->o->clone) {
        uuid_random(s->as.uuid);
        for (int i = 1; i < 1000; i++) {
            snprintf(s->name, sizeof(s->name), i == 1 ? "%.200s-clone" :
                     "%.200s-clone%d", s->m.name, i);
            if ((rc = be->find(s->ctx, s->name, NULL, -1, &other, &what)) < 0)
                return rc;
            if (what == VMC_FIND_NONE)
                break;
        }
    }
    s->as.name = s->as.build_name = s->name;
    if ((rc = be->find(s->ctx, s->name, s->as.uuid, -1, &other, &what)) < 0)
        return rc;
    if (what == VMC_FIND_UUID && s->o->name) {
        uuid_random(s->as.uuid);
        if ((rc = be->find(s->ctx, s->name, NULL, -1, &other, &what)) < 0)
            return rc;
    }
    if (what == VMC_FIND_NONE)
        return 0;
    if (!be->saving(other))
        return clash_error(s->ctx, s->name, other, what, "");
    s->pending = other;
    if ((rc = be->find(s->ctx, s->name, s->as.uuid, s->pending, &other,
                       &more)) < 0)
        return rc;
    if (more != VMC_FIND_NONE)
        return clash_error(s->ctx, s->name, other, more, "");
    if (be->flags & VMC_BE_UNIQUE_NAMES) {
        snprintf(s->build_name, sizeof(s->build_name), "%s--incoming", s->name);
        s->as.build_name = s->build_name;
        if ((rc = be->find(s->ctx, s->build_name, NULL, -1, &other, &what)) < 0)
            return rc;
        if (what != VMC_FIND_NONE)
            return vmc_set_error(s->ctx, VMC_E_EXISTS, "domain %s (id %d) "
                                 "exists (a restore in progress, or left over)",
                                 s->build_name, other);
    }
    return 0;
}

/* What the restore's guardian destroys should this process die: the
 * domain by id, or, while the hypervisor has not said its id yet, by its
 * build name (unique: checked free before the build). */
static void guard_tell_domid(struct restore *s)
{
    char msg[24];
    int ml = snprintf(msg, sizeof(msg), "D%d;", s->res->domid);

    if (write(s->g.fd, msg, (size_t)ml) != ml) {
        /* a guardian that is gone cannot help; the restore goes on */
    }
}

static void guard_known(void *arg, int id)
{
    struct restore *s = arg;

    s->res->domid = id;
    guard_tell_domid(s);
}

static void guard_tell_name(struct restore *s)
{
    const char *n = s->as.build_name;
    char msg[300];
    size_t ml;

    if (!(s->be->flags & VMC_BE_UNIQUE_NAMES))
        return;                     /* a name would not say which one */
    ml = (size_t)snprintf(msg, sizeof(msg), "n%s", n) + 1;   /* with NUL */
    if (ml > sizeof(msg) || write(s->g.fd, msg, ml) != (ssize_t)ml) {
        /* too long, or the guardian is gone: the restore goes on */
    }
    ml = (size_t)snprintf(msg, sizeof(msg), "u");
    for (int i = 0; i < 16; i++)
        ml += (size_t)snprintf(msg + ml, sizeof(msg) - ml, "%02x", s->as.uuid[i]);
    ml += (size_t)snprintf(msg + ml, sizeof(msg) - ml, ";p%d;", s->pending);
    if (write(s->g.fd, msg, ml) != (ssize_t)ml) {
        /* the guardian is gone: the restore goes on */
    }
}

/* The new domain, paused, reading the hypervisor stream from a pipe; the
 * guardian learns its id (should this process die, it destroys it). */
static int restore_build(struct restore *s)
{
    int rc, pp[2];

    if (pipe2(pp, O_CLOEXEC) < 0)
        return vmc_set_error(s->ctx, VMC_E_IO, "pipe: %s", strerror(errno));
    big_pipe(pp[1]);
    s->feed = pp[1];
    s->as.known = guard_known;
    s->as.known_arg = s;
    if ((s->g.fd >= 0 ||
         (rc = guard_start(s->ctx, s->be, -1, GUARD_RESTORE, NULL, &s->g)) == 0))
        rc = s->be->restore_start(s->ctx, &s->m, s->cfg_fmt, s->cfg,
                                  s->cfg_len, &s->as, pp[0], &s->d);
    close(pp[0]);
    if (rc < 0) {
        s->res->domid = -1;         /* known() may have named one: gone */
        return rc;
    }
    s->res->domid = s->be->domid(s->d);
    if (s->res->domid > 0)
        guard_tell_domid(s);
    else                /* its id comes with the end of the stream (Xen) */
        guard_tell_name(s);
    snprintf(s->res->name, sizeof(s->res->name), "%s", s->be->name_of(s->d));
    return 0;
}

/* A write to the hypervisor failed (errno err): its own reason, if it
 * has one. */
static int feed_error(struct restore *s, int err)
{
    struct vmc_ctx tmp = { 0 };

    if (s->be->restore_wait(&tmp, s->d) < 0 && tmp.code)
        return vmc_set_error(s->ctx, VMC_E_BACKEND, "%s", vmc_ctx_error(&tmp));
    return vmc_set_error(s->ctx, VMC_E_BACKEND, "hypervisor stopped reading the "
                         "stream at 0x%llx: %s",
                         (unsigned long long)s->res->backend_bytes,
                         strerror(err));
}

/* BACKEND_STREAM bodies go to the hypervisor as their chunks authenticate,
 * until END has verified. */
static int restore_feed(struct restore *s)
{
    struct vmc_record rec;
    const void *pb;
    ssize_t n;
    int rc;

    for (;;) {
        if (s->have_held) {
            rec = s->held;
            s->have_held = 0;
        } else if ((rc = vmc_reader_next(s->r, &rec)) != 1) {
            break;
        }
        if (rec.type == VMC_REC_DISK_EXTENT || rec.type == VMC_REC_DISK_END) {
            if ((rc = vmc_disks_record(s->disks, s->r, &rec)) < 0)
                return rc;
            continue;
        }
        if (rec.type != VMC_REC_BACKEND_STREAM)
            continue;
        while ((n = vmc_reader_read_ptr(s->r, &pb, COPY_BUF)) > 0) {
            if (io_write_full(NULL, s->feed, pb, (size_t)n, "feed") < 0)
                return feed_error(s, errno);
            s->res->backend_bytes += (uint64_t)n;
        }
        if (n < 0)
            return (int)n;
        if (s->o->progress && s->o->progress(s->o->progress_arg,
                                             s->res->backend_bytes))
            return vmc_set_error(s->ctx, VMC_E_CANCELED, "interrupted");
    }
    return rc;
}

/* A clash with a source that was being saved must be gone by now (up to
 * 60 s), and the domain takes its final name. */
static int restore_take_name(struct restore *s)
{
    int rc, what, other;

    for (int i = 0; i < 6000 && s->be->saving(s->pending); i++)
        usleep(10000);
    if ((rc = s->be->find(s->ctx, s->name, s->as.uuid, s->res->domid,
                          &other, &what)) < 0)
        return rc;
    if (what != VMC_FIND_NONE)
        return clash_error(s->ctx, s->name, other, what, "still ");
    if (s->as.build_name != s->as.name &&
        (rc = s->be->rename(s->ctx, s->d, s->name)) < 0)
        return rc;
    snprintf(s->res->name, sizeof(s->res->name), "%s", s->name);
    return 0;
}

/* The stream is whole: the hypervisor loads it.  A migration's copy (an
 * activate gate) of a source on this very host takes its name only once
 * it runs and the source is gone (restore_run): the source goes only after
 * RUNNING. */
static int restore_settle(struct restore *s)
{
    int rc;

    close(s->feed);
    s->feed = -1;
    if ((rc = s->be->restore_wait(s->ctx, s->d)) < 0)
        return rc;
    if (s->res->domid <= 0 && (s->res->domid = s->be->domid(s->d)) > 0)
        guard_tell_domid(s);            /* some backends learn it only now */
    if (!s->pending || s->o->activate)
        return 0;
    return restore_take_name(s);
}

/* Lets the domain run: past the gate, unless asked to keep it paused;
 * then says so (o->running), then takes a pending name.  A domain that
 * runs is never undone: a name that cannot be taken is reported, and the
 * domain keeps its build name (res->left_running). */
static int restore_run(struct restore *s)
{
    const struct vmc_restore_opts *o = s->o;
    int rc;

    if (o->activate && (rc = o->activate(o->activate_arg, s->ctx,
                                         s->res->domid)) < 0)
        return rc;
    if (!o->paused && (rc = s->be->resume(s->ctx, s->d, NULL)) < 0)
        return rc;
    s->res->left_running = !o->paused;
    if (s->res->left_running)
        guard_done(&s->g);              /* it runs: nothing to undo now */
    if (o->running)
        o->running(o->activate_arg, s->res->domid);
    if (s->pending && o->activate)
        return restore_take_name(s);
    return 0;
}

/* Closes the carried disks' files; a failed restore removes them (no
 * half-restored disk is left). */
static void restore_disks_close(struct restore *s, int failed)
{
    for (int i = 0; s->disk_fds && i < vmc_disks_count(s->disks); i++) {
        if (s->disk_fds[i] >= 0)
            close(s->disk_fds[i]);
        if (failed && s->disk_paths[i][0])
            unlink(s->disk_paths[i]);
    }
    if (failed)
        s->res->disks_written = 0;
    free(s->disk_fds);
    free(s->disk_paths);
    vmc_disks_free(s->disks);
}

int vmc_restore(struct vmc_ctx *ctx, struct vmc_reader *r,
                const struct vmc_restore_opts *o, struct vmc_restore_result *res)
{
    struct restore s = { .ctx = ctx, .r = r, .o = o, .res = res,
                         .g = { -1, -1 }, .feed = -1 };
    uint64_t t0 = vmc_now_ns();
    int rc;

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    if ((rc = restore_head(&s)) == 0 && (rc = restore_disk_records(&s)) == 0 &&
        (rc = restore_config(&s)) == 0 &&
        (carried(&s) || (rc = restore_policy(&s)) == 0) &&
        (rc = restore_identity(&s)) == 0 &&
        (rc = restore_disk_files(&s)) == 0 &&
        (!carried(&s) || (rc = restore_policy(&s)) == 0) &&
        (rc = restore_build(&s)) == 0 && (rc = restore_feed(&s)) == 0 &&
        (rc = restore_disks_sync(&s)) == 0 && (rc = restore_settle(&s)) == 0)
        rc = restore_run(&s);
    if (s.feed >= 0)
        close(s.feed);
    if (rc < 0 && s.d && !res->left_running) {
        s.be->restore_abort(s.d);       /* undo: nothing half-built remains */
        res->domid = -1;
    }
    guard_done(&s.g);
    if (s.d)
        s.be->close(s.d);
    restore_disks_close(&s, rc < 0 && !res->left_running);
    free(s.cfg);
    res->total_ns = vmc_now_ns() - t0;
    return rc;
}

/* ---- small domain operations -------------------------------------- */

enum dom_op { DOM_CONSOLE, DOM_DESTROY, DOM_RESUME, DOM_PAUSE };

static int dom_do(struct vmc_ctx *ctx, const struct vmc_backend *be,
                  const char *spec, enum dom_op op, int *fd)
{
    struct vmc_dom *d;
    int rc;

    if ((rc = be->open(ctx, spec, op == DOM_DESTROY, &d)) < 0)
        return rc;
    switch (op) {
    case DOM_CONSOLE: rc = be->console_open(ctx, d, fd); break;
    case DOM_DESTROY: rc = be->destroy(ctx, d); break;
    case DOM_RESUME: rc = be->resume(ctx, d, NULL); break;
    case DOM_PAUSE: rc = be->pause(ctx, d, NULL); break;
    }
    be->close(d);
    return rc;
}

int vmc_console_open(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec, int *fd)
{
    *fd = -1;
    return dom_do(ctx, be, spec, DOM_CONSOLE, fd);
}

int vmc_domain_destroy(struct vmc_ctx *ctx, const struct vmc_backend *be,
                       const char *spec)
{
    return dom_do(ctx, be, spec, DOM_DESTROY, NULL);
}

int vmc_domain_resume(struct vmc_ctx *ctx, const struct vmc_backend *be,
                      const char *spec)
{
    return dom_do(ctx, be, spec, DOM_RESUME, NULL);
}

int vmc_domain_pause(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec)
{
    return dom_do(ctx, be, spec, DOM_PAUSE, NULL);
}
