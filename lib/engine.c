/*
 * engine.c - the generic save and restore algorithms over a backend ops
 * table, and the guardian that keeps a domain from being lost when the
 * saving process dies.
 *
 * Save:    lock, describe, [pause], hypervisor stream -> sealed writer,
 *          END, fsync+rename, then destroy / resume / leave paused.
 *          Any failure before the image is durable: cancel, resume.
 * Restore: IMAGE_INFO -> backend, DOMAIN_CONFIG -> new paused domain,
 *          BACKEND_STREAM -> hypervisor as chunks authenticate, END
 *          verified -> wait for the load -> unpause.  Any failure: the new
 *          domain is torn down.
 */
#include <errno.h>
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

#include "backend.h"

#define PIPE_SIZE (1 << 20)
#define COPY_BUF (1u << 20)

static const struct vmc_backend *const backends[] = {
    &vmc_backend_qemu,
#ifdef VMC_HAVE_XEN
    &vmc_backend_xen,
#endif
};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

const struct vmc_backend *vmc_backend_get(const char *name)
{
    for (size_t i = 0; i < NBACKENDS; i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

const struct vmc_backend *backend_by_id(uint16_t id)
{
    for (size_t i = 0; i < NBACKENDS; i++)
        if (backends[i]->id == id)
            return backends[i];
    return NULL;
}

/* xen on a Xen control domain (when built), else qemu. */
const struct vmc_backend *vmc_backend_default(void)
{
#ifdef VMC_HAVE_XEN
    FILE *f = fopen("/proc/xen/capabilities", "r");
    char buf[64] = "";

    if (f) {
        if (!fgets(buf, sizeof(buf), f))
            buf[0] = '\0';
        fclose(f);
        if (strstr(buf, "control_d"))
            return &vmc_backend_xen;
    }
#endif
    return &vmc_backend_qemu;
}

const char *vmc_backends_built(void)
{
#ifdef VMC_HAVE_XEN
    return "qemu xen";
#else
    return "qemu (xen: not built, no libxl headers)";
#endif
}

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
 * the domain it is building ("D<id>;") and, should it die before "N", the
 * guardian destroys it: no half-built domain outlives a killed restore. */
#define GUARD_RESTORE 2

struct guard {
    pid_t pid;
    int fd;
};

static void guard_run(int fd, const char *backend, int domid, int was_running,
                      const char *partial)
{
    const struct vmc_backend *be = vmc_backend_get(backend);
    struct vmc_ctx ctx = { 0 };
    char c = 0, last = 0, num[16];
    size_t nn = 0;
    int innum = 0;
    ssize_t n;

    while ((n = read(fd, &c, 1)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (c == 'D') {                     /* "D<id>;": the domain built */
            innum = 1;
            nn = 0;
        } else if (innum && c == ';') {
            num[nn] = '\0';
            domid = atoi(num);
            innum = 0;
        } else if (innum && nn < sizeof(num) - 1) {
            num[nn++] = c;
        }
        last = c;
    }
    if (last == 'N' || !be)
        return;
    if (was_running == GUARD_RESTORE) {     /* the restorer died */
        struct vmc_dom *d;
        char spec[32];
        if (domid < 0)
            return;
        snprintf(spec, sizeof(spec), "%d", domid);
        if (be->open(&ctx, spec, 0, &d) == 0) {
            be->destroy(&ctx, d);
            be->close(d);
        }
        return;
    }
    /* The saver died mid-save. */
    if (partial && *partial)
        unlink(partial);
    if (was_running) {
        for (int i = 0; i < 3; i++) {
            vmc_ctx_clear(&ctx);
            if (be->recover(&ctx, domid) == 0)
                return;
            sleep(1);
        }
    } else {
        struct vmc_dom *d;
        char spec[32];
        snprintf(spec, sizeof(spec), "%d", domid);
        if (be->open(&ctx, spec, 0, &d) == 0) {
            be->save_cancel(d);
            be->close(d);
        }
    }
}

void vmc_guard_dispatch(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[0], "vmckpt-guard"))
        return;
    prctl(PR_SET_NAME, "vmckpt-guard", 0, 0, 0);    /* not "vmsave" in ps */
    guard_run(3, argv[1], atoi(argv[2]), atoi(argv[3]), argc > 4 ? argv[4] : "");
    _exit(0);
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
        char id[16], wr[4];
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
        snprintf(id, sizeof(id), "%d", domid);
        snprintf(wr, sizeof(wr), "%d", was_running);
        execl("/proc/self/exe", "vmckpt-guard", be->name, id, wr,
              partial ? partial : "", (char *)NULL);
        guard_run(3, be->name, domid, was_running, partial);   /* no exec */
        _exit(0);
    }
    close(p[0]);
    g->pid = pid;
    g->fd = p[1];
    return 0;
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
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void round_close(struct saveprog *p, uint64_t now, uint64_t bytes)
{
    struct vmc_save_result *r = p->res;

    if (r->nrounds >= 64 || bytes < p->round_start_bytes)
        return;
    r->rounds[r->nrounds].bytes = bytes - p->round_start_bytes;
    r->rounds[r->nrounds].duration_ns = now - p->round_start_ns;
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
        if (p->be->pause(&tmp, p->d, NULL) == 0)
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
        uint8_t rec[24];
        vmc_put32(rec, (uint32_t)i + 1);
        vmc_put32(rec + 4, 0);
        vmc_put64(rec + 8, p->res->rounds[i].bytes);
        vmc_put64(rec + 16, p->res->rounds[i].duration_ns);
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

int vmc_save(struct vmc_ctx *ctx, const struct vmc_backend *be, const char *spec,
             struct vmc_outfile *of, const struct vmc_save_opts *o,
             struct vmc_save_result *res)
{
    struct guard g = { -1, -1 };
    struct vmc_dom *d = NULL;
    struct vmc_writer *w = NULL;
    struct vmc_image_meta m;
    struct vmc_stats st;
    uint8_t *cfg = NULL, *cfgrec = NULL, info[2048];
    size_t cfg_len = 0, ilen;
    uint32_t cfg_fmt = 0;
    uint64_t t0 = vmc_now_ns();
    int64_t stop_us = 0, end_us;
    int rc, pp[2] = { -1, -1 }, committed = 0, started = 0;

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    if ((rc = be->open(ctx, spec, 1, &d)) < 0)
        goto out;
    res->domid = be->domid(d);
    snprintf(res->name, sizeof(res->name), "%s", be->name_of(d));
    if ((rc = be->describe(ctx, d, &m, &cfg_fmt, &cfg, &cfg_len)) < 0 ||
        (rc = be->is_running(ctx, d, &res->was_running)) < 0)
        goto out;
    gethostname(m.host, sizeof(m.host) - 1);
    snprintf(m.tool_version, sizeof(m.tool_version), "%s", VMC_TOOL_VERSION);
    m.time_unix = (int64_t)time(NULL);
    m.flags = (o->live ? VMC_IIF_LIVE : 0) |
              (o->mode == VMC_SAVE_CHECKPOINT ? VMC_IIF_CHECKPOINT : 0);
    if (vmc_image_info_build(&m, info, sizeof(info), &ilen) < 0) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "IMAGE_INFO: metadata too large");
        goto out;
    }
    if (cfg_len > VMC_REC_MAX_LEN - 8) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "DOMAIN_CONFIG: %zu bytes > max",
                           cfg_len);
        goto out;
    }
    if (!(cfgrec = malloc(cfg_len + 8))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    vmc_put32(cfgrec, cfg_fmt);
    vmc_put32(cfgrec + 4, 0);
    memcpy(cfgrec + 8, cfg, cfg_len);
    /* The guardian first: from here on the domain cannot be lost. */
    if ((rc = guard_start(ctx, be, res->domid, !!res->was_running,
                          vmc_outfile_partial(of), &g)) < 0)
        goto out;
    if ((rc = vmc_writer_new(ctx, vmc_outfile_fd(of), o->keys, &o->wopts,
                             &w)) < 0 ||
        (vmc_writer_stream_id(w, res->stream_id), 0) ||
        (rc = vmc_writer_record(w, VMC_REC_IMAGE_INFO, info, ilen)) < 0 ||
        (rc = vmc_writer_record(w, VMC_REC_DOMAIN_CONFIG, cfgrec,
                                cfg_len + 8)) < 0)
        goto out;
    if (pipe2(pp, O_CLOEXEC) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "pipe: %s", strerror(errno));
        goto out;
    }
    big_pipe(pp[0]);
    if (!o->live && res->was_running) {
        if ((rc = be->pause(ctx, d, &stop_us)) < 0)
            goto out;
    }
    started = 1;
    {
        struct vmc_save_tuning t = { o->live, o->max_downtime_ms,
                                     o->max_bandwidth };
        if ((rc = be->save_start(ctx, d, pp[1], &t)) < 0)
            goto out;
    }
    close(pp[1]);
    pp[1] = -1;
    {
        struct saveprog sp = { be, d, o, res, vmc_now_ns(), 0, vmc_now_ns(), 0,
                               PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                               0 };
        pthread_t mon;
        int have_mon = o->live &&
                       pthread_create(&mon, NULL, monitor_thread, &sp) == 0;
        rc = vmc_writer_copy_backend(w, pp[0], o->progress, o->progress_arg);
        close(pp[0]);               /* before the join: a failed copy must */
        pp[0] = -1;                 /* not leave QEMU blocked on the pipe */
        if (have_mon) {
            pthread_mutex_lock(&sp.mu);
            sp.stop = 1;
            pthread_cond_signal(&sp.cv);
            pthread_mutex_unlock(&sp.mu);
            pthread_join(mon, NULL);
        }
        if (rc == 0 && o->live)
            rc = rounds_finish(&sp, w);
    }
    if (rc < 0)
        goto out;
    {
        int64_t live_stop = 0;
        if ((rc = be->save_wait(ctx, d, &live_stop)) < 0)
            goto out;
        if (o->live && res->was_running) {
            stop_us = live_stop ? live_stop : wall_us();
        }
    }
    end_us = wall_us();
    /* A checkpoint's state is captured once the hypervisor stream is
     * complete: the guest runs again while the image is made durable. */
    if (o->mode == VMC_SAVE_CHECKPOINT && res->was_running) {
        if ((rc = be->resume(ctx, d, &end_us)) < 0)
            goto out;
    }
    if ((rc = vmc_writer_finish(w, vmc_now_ns() - t0,
                                stop_us ? (uint64_t)(end_us - stop_us) * 1000 : 0))
        < 0)
        goto out;
    if ((rc = vmc_outfile_commit(ctx, of)) < 0)
        goto out;
    if (o->mode == VMC_SAVE_MIGRATE) {
        uint8_t sid[16];
        vmc_writer_stream_id(w, sid);
        if ((rc = o->confirm(o->confirm_arg, ctx, sid)) < 0)
            goto out;               /* the source is resumed below */
    }
    committed = 1;
    vmc_writer_stats(w, &st);
    res->stream_bytes = st.stream_bytes;
    res->backend_bytes = st.backend_bytes;
    if (o->mode != VMC_SAVE_CHECKPOINT)
        end_us = wall_us();
    switch (o->mode) {
    case VMC_SAVE_MIGRATE:
    case VMC_SAVE_DESTROY:
        guard_done(&g);              /* the image is durable: let it go */
        if ((rc = be->destroy(ctx, d)) < 0) {
            vmc_ctx_clear(ctx);
            rc = vmc_set_error(ctx, VMC_E_BACKEND, o->mode == VMC_SAVE_MIGRATE ?
                               "migrated, but destroying the source failed: it "
                               "is left paused" :
                               "image complete, but destroying the domain "
                               "failed: it is left paused");
        }
        break;
    case VMC_SAVE_CHECKPOINT:
        break;                       /* resumed above */
    case VMC_SAVE_PAUSED:
        break;
    }
    if (stop_us)
        res->downtime_ns = (uint64_t)(end_us - stop_us) * 1000;
out:
    if (pp[0] >= 0)
        close(pp[0]);
    if (pp[1] >= 0)
        close(pp[1]);
    if (rc < 0 && !committed && d) {
        if (started)
            be->save_cancel(d);
        if (res->was_running) {
            struct vmc_ctx tmp = { 0 };
            int running = 0;
            for (int i = 0; i < 3 && !res->resumed_after_error; i++) {
                vmc_ctx_clear(&tmp);
                if (be->is_running(&tmp, d, &running) == 0 && !running)
                    be->resume(&tmp, d, NULL);
                if (be->is_running(&tmp, d, &running) == 0)
                    res->resumed_after_error = running;
                else
                    res->state_unknown = 1;
            }
            if (res->resumed_after_error)
                res->state_unknown = 0;
            else
                note_loss(ctx, be, d, res);
        }
    }
    guard_done(&g);
    vmc_writer_free(w);
    be->close(d);
    free(cfg);
    free(cfgrec);
    res->total_ns = vmc_now_ns() - t0;
    return rc;
}

/* ---- restore ------------------------------------------------------- */

int vmc_restore(struct vmc_ctx *ctx, struct vmc_reader *r,
                const struct vmc_restore_opts *o, struct vmc_restore_result *res)
{
    const struct vmc_backend *be = NULL;
    struct vmc_dom *d = NULL;
    struct vmc_image_meta m;
    struct vmc_record rec;
    uint8_t *buf = NULL, *cfg = NULL;
    size_t len, cfg_len = 0;
    uint64_t t0 = vmc_now_ns();
    struct guard g = { -1, -1 };
    int rc, pp[2] = { -1, -1 };

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    if ((rc = vmc_reader_next(r, &rec)) < 0)
        goto out;
    if ((rc = vmc_reader_read_all(r, &buf, &len)) < 0 ||
        (rc = vmc_image_info_parse(ctx, buf, len, &m)) < 0)
        goto out;
    free(buf);
    buf = NULL;
    if (m.backend == VMC_BACKEND_NONE) {
        rc = vmc_set_error(ctx, VMC_E_UNSUPPORTED, "a raw stream sealed by "
                           "vmimage seal: it records no domain and can never "
                           "be restored (vmimage unseal gives the stream back)");
        goto out;
    }
    if (!(be = backend_by_id(m.backend))) {
        rc = vmc_set_error(ctx, VMC_E_UNSUPPORTED,
                           "image of backend %u (%s): not built into this "
                           "vmckpt (built: %s)", m.backend,
                           m.backend == VMC_BACKEND_XEN ? "xen" : "unknown",
                           vmc_backends_built());
        goto out;
    }
    res->backend = be;
    do {
        if ((rc = vmc_reader_next(r, &rec)) < 0)
            goto out;
    } while (rc == 1 && (rec.type & VMC_REC_OPTIONAL));
    if (rc == 0 || rec.type != VMC_REC_DOMAIN_CONFIG) {
        rc = vmc_set_error(ctx, VMC_E_FORMAT, "%s @0x%llx: a restorable image "
                           "needs DOMAIN_CONFIG here",
                           rc == 0 ? "END" : vmc_record_name(rec.type) ?: "record",
                           (unsigned long long)rec.offset);
        goto out;
    }
    if ((rc = vmc_reader_read_all(r, &cfg, &cfg_len)) < 0)
        goto out;
    if (pipe2(pp, O_CLOEXEC) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "pipe: %s", strerror(errno));
        goto out;
    }
    big_pipe(pp[1]);
    if ((rc = guard_start(ctx, be, -1, GUARD_RESTORE, NULL, &g)) < 0 ||
        (rc = be->restore_start(ctx, &m, vmc_get32(cfg), cfg + 8, cfg_len - 8,
                                o->name, o->clone, pp[0], &d)) < 0)
        goto out;
    close(pp[0]);
    pp[0] = -1;
    res->domid = be->domid(d);
    if (res->domid > 0) {
        char msg[24];
        int ml = snprintf(msg, sizeof(msg), "D%d;", res->domid);
        if (write(g.fd, msg, (size_t)ml) != ml) {
            /* a guardian that is gone cannot help; the restore goes on */
        }
    }
    snprintf(res->name, sizeof(res->name), "%s", be->name_of(d));
    /* Feed the hypervisor as chunks authenticate; the domain stays paused
     * until END has verified. */
    while ((rc = vmc_reader_next(r, &rec)) == 1) {
        const void *pb;
        ssize_t n;
        if (rec.type != VMC_REC_BACKEND_STREAM)
            continue;
        while ((n = vmc_reader_read_ptr(r, &pb, COPY_BUF)) > 0) {
            int w = write_full(pp[1], pb, (size_t)n);
            if (w < 0) {
                struct vmc_ctx tmp = { 0 };
                errno = -w;
                if (be->restore_wait(&tmp, d) < 0)
                    rc = vmc_set_error(ctx, VMC_E_BACKEND, "%s",
                                       vmc_ctx_error(&tmp));
                else
                    rc = vmc_set_error(ctx, VMC_E_BACKEND,
                                       "hypervisor stopped reading the stream "
                                       "at 0x%llx: %s",
                                       (unsigned long long)res->backend_bytes,
                                       strerror(errno));
                goto out;
            }
            res->backend_bytes += (uint64_t)n;
        }
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        if (o->progress && o->progress(o->progress_arg, res->backend_bytes)) {
            rc = vmc_set_error(ctx, VMC_E_CANCELED, "interrupted");
            goto out;
        }
    }
    if (rc < 0)
        goto out;
    close(pp[1]);                   /* END verified: the stream is whole */
    pp[1] = -1;
    if ((rc = be->restore_wait(ctx, d)) < 0)
        goto out;
    res->domid = be->domid(d);       /* some backends learn it only now */
    if (!o->paused && (rc = be->resume(ctx, d, NULL)) < 0)
        goto out;
out:
    if (pp[0] >= 0)
        close(pp[0]);
    if (pp[1] >= 0)
        close(pp[1]);
    if (rc < 0 && d) {
        be->restore_abort(d);
        res->domid = -1;
    }
    guard_done(&g);
    if (be && d)
        be->close(d);
    free(buf);
    free(cfg);
    res->total_ns = vmc_now_ns() - t0;
    return rc;
}

/* ---- small domain operations -------------------------------------- */

int vmc_console_open(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec, int *fd)
{
    struct vmc_dom *d;
    int rc;

    *fd = -1;
    if ((rc = be->open(ctx, spec, 0, &d)) < 0)
        return rc;
    rc = be->console_open(ctx, d, fd);
    be->close(d);
    return rc;
}

int vmc_domain_destroy(struct vmc_ctx *ctx, const struct vmc_backend *be,
                       const char *spec)
{
    struct vmc_dom *d;
    int rc;

    if ((rc = be->open(ctx, spec, 1, &d)) < 0)
        return rc;
    rc = be->destroy(ctx, d);
    be->close(d);
    return rc;
}

int vmc_domain_resume(struct vmc_ctx *ctx, const struct vmc_backend *be,
                      const char *spec)
{
    struct vmc_dom *d;
    int rc;

    if ((rc = be->open(ctx, spec, 0, &d)) < 0)
        return rc;
    rc = be->resume(ctx, d, NULL);
    be->close(d);
    return rc;
}

int vmc_domain_pause(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec)
{
    struct vmc_dom *d;
    int rc;

    if ((rc = be->open(ctx, spec, 0, &d)) < 0)
        return rc;
    rc = be->pause(ctx, d, NULL);
    be->close(d);
    return rc;
}
