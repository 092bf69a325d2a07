/*
 * engine.c - the save and restore engine (lib/engine.c) over a fake
 * backend, no hypervisor: every backend op fails in turn, and each test
 * checks what the failure leaves behind (the domain running again, nothing
 * under the image's final name, no half-built domain), plus the naming
 * rules of a restore (clash, --name, --clone, a source still being saved).
 * Prints "PASS: name" / "FAIL: name: why" lines; tests/run.sh counts them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "check.h"

#define FAKE_ID     0x7e        /* not a wire backend id */
#define STREAM_LEN  (3u << 20)  /* the fake hypervisor's stream */
#define MAXDOM      8

/* ---- the fake hypervisor -------------------------------------------------- */

struct fdom {
    int exists, running, id, dead;
    char name[256];
    uint8_t uuid[16];
};

/* The fake hypervisor's state lives in a shared file mapping, so that the
 * guardian (this program re-executed) sees the same domains. */
static struct fake_state {
    struct fdom dom[MAXDOM];
    int next_id;
    char fail[32];              /* the op that fails, or "" */
    int fail_times;             /* ...that many times (0: always) */
    int precopy_waits;          /* live: pre-copy ends only at stop_copy */
    int stopped;                /* stop_copy was called and worked */
    int dies;                   /* the guest dies at the end of the save */
    int kill_feed;              /* restore: SIGKILL the restorer mid-feed */
    char disk[200];             /* describe: a QEMU config with this disk */
    int view;                   /* 1 prepared, 2 taken (the guest writes
                                   elsewhere), 0 released or none */
    int view_bad;               /* taken while the guest ran, or copied
                                   while it was stopped */
    int kill_on_resume;         /* SIGKILL the saver once the guest runs */
    int view_copy;              /* view_take hands out a frozen copy */
    int saving_id, saving_calls;/* "another process saves domain saving_id" */
    int saving_ends;            /* ...until the second call: then it is gone */
    size_t feed_short;          /* restore: the hypervisor stops reading here */
    int cancelled, aborted, renamed, save_while_running;
} *Fs;
#define F (*Fs)

struct vmc_dom {
    struct fdom *f;
    pthread_t th;
    int th_running, fd, live;
    size_t done;                /* save: bytes written; restore: read */
    int bad;                    /* restore: the stream differed */
};

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 2654435761u >> 13);
}

static void fail_at(const char *op, int times)
{
    snprintf(F.fail, sizeof(F.fail), "%s", op ? op : "");
    F.fail_times = times;
}

static int fails(struct vmc_ctx *ctx, const char *op)
{
    if (!F.fail[0] || strcmp(F.fail, op))
        return 0;
    if (F.fail_times && --F.fail_times == 0)
        F.fail[0] = '\0';              /* the last failure */
    return vmc_set_error(ctx, VMC_E_BACKEND, "fake %s failed", op);
}

static struct fdom *fake_new(const char *name, const uint8_t *uuid)
{
    for (int i = 0; i < MAXDOM; i++) {
        struct fdom *f = &F.dom[i];
        if (f->exists)
            continue;
        memset(f, 0, sizeof(*f));
        f->exists = 1;
        f->id = ++F.next_id;
        snprintf(f->name, sizeof(f->name), "%.250s", name);
        if (uuid)
            memcpy(f->uuid, uuid, 16);
        else
            uuid_random(f->uuid);
        return f;
    }
    return NULL;
}

static int nexisting(void)
{
    int n = 0;

    for (int i = 0; i < MAXDOM; i++)
        n += F.dom[i].exists;
    return n;
}

static struct fdom *by_name(const char *name)
{
    for (int i = 0; i < MAXDOM; i++)
        if (F.dom[i].exists && !strcmp(F.dom[i].name, name))
            return &F.dom[i];
    return NULL;
}

static int fk_probe(void) { return 0; }

/* By name, or by id (the guardian's way). */
static int fk_open(struct vmc_ctx *ctx, const char *spec, int lock,
                   struct vmc_dom **out)
{
    struct fdom *f = by_name(spec);
    char *end;
    long id = strtol(spec, &end, 10);

    for (int i = 0; !f && *spec && !*end && i < MAXDOM; i++)
        if (F.dom[i].exists && F.dom[i].id == id)
            f = &F.dom[i];

    (void)lock;
    *out = NULL;
    if (fails(ctx, "open"))
        return VMC_E_BACKEND;
    if (!f)
        return vmc_set_error(ctx, VMC_E_INVAL, "no such domain");
    *out = calloc(1, sizeof(**out));
    (*out)->f = f;
    (*out)->fd = -1;
    return 0;
}

static void fk_close(struct vmc_dom *d)
{
    if (d && d->th_running)
        pthread_join(d->th, NULL);
    free(d);
}

static int fk_domid(const struct vmc_dom *d) { return d->f->id; }
static const char *fk_name_of(const struct vmc_dom *d) { return d->f->name; }

static int fk_find(struct vmc_ctx *ctx, const char *name, const uint8_t *uuid,
                   int skip, int *id, int *what)
{
    *id = 0;
    *what = VMC_FIND_NONE;
    if (fails(ctx, "find"))
        return VMC_E_BACKEND;
    for (int i = 0; i < MAXDOM && !*what; i++) {
        struct fdom *f = &F.dom[i];
        if (!f->exists || f->id == skip)
            continue;
        if (name && !strcmp(f->name, name))
            *what = VMC_FIND_NAME;
        else if (uuid && !memcmp(f->uuid, uuid, 16))
            *what = VMC_FIND_UUID;
        if (*what)
            *id = f->id;
    }
    return 0;
}

/* The source's save ends between restore_identity and restore_settle. */
static int fk_saving(int id)
{
    if (id != F.saving_id)
        return 0;
    if (++F.saving_calls == 1)
        return 1;
    if (F.saving_ends)
        for (int i = 0; i < MAXDOM; i++)
            if (F.dom[i].id == id)
                F.dom[i].exists = 0;
    return 0;
}

static int fk_describe(struct vmc_ctx *ctx, struct vmc_dom *d,
                       struct vmc_image_meta *m, uint32_t *fmt, uint8_t **cfg,
                       size_t *len)
{
    if (fails(ctx, "describe"))
        return VMC_E_BACKEND;
    memset(m, 0, sizeof(*m));
    memcpy(m->uuid, d->f->uuid, 16);
    m->memory_kib = STREAM_LEN / 1024;
    m->vcpus = 1;
    m->backend = FAKE_ID;
    snprintf(m->name, sizeof(m->name), "%s", d->f->name);
    *fmt = 99;
    *cfg = (uint8_t *)strdup("{\"fake\":1}");
    if (F.disk[0]) {                    /* a config the engine reads disks of */
        char c[400];
        m->backend = VMC_BACKEND_QEMU;
        *fmt = VMC_CFG_QEMU_JSON;
        snprintf(c, sizeof(c), "{\"argv\":[\"-drive\",\"file=%s,if=virtio,"
                 "format=raw\"]}", F.disk);
        free(*cfg);
        *cfg = (uint8_t *)strdup(c);
    }
    *len = strlen((char *)*cfg);
    return 0;
}

static int fk_is_running(struct vmc_ctx *ctx, struct vmc_dom *d, int *running)
{
    if (fails(ctx, "is_running"))
        return VMC_E_BACKEND;
    *running = d->f->running;
    return 0;
}

static int fk_pause(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *w)
{
    if (fails(ctx, "pause"))
        return VMC_E_BACKEND;
    d->f->running = 0;
    if (w)
        *w = (int64_t)(vmc_now_ns() / 1000);
    return 0;
}

static int fk_resume(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *w)
{
    if (fails(ctx, "resume"))
        return VMC_E_BACKEND;
    if (d->f->dead)
        return vmc_set_error(ctx, VMC_E_BACKEND, "fake: no such domain");
    d->f->running = 1;
    if (w)
        *w = (int64_t)(vmc_now_ns() / 1000);
    if (F.kill_on_resume && F.view == 2)
        kill(getpid(), SIGKILL);        /* the saver dies during the copy */
    return 0;
}

static int fk_view_prepare(struct vmc_ctx *ctx, struct vmc_dom *d,
                           const struct vmc_disk_info *disks, int n)
{
    (void)d;
    if (fails(ctx, "view_prepare"))
        return VMC_E_BACKEND;
    if (n != 1 || !(disks[0].flags & VMC_DF_CARRIED))
        return vmc_set_error(ctx, VMC_E_INVAL, "fake: not the one disk");
    F.view = 1;
    return 0;
}

/* With F.view_copy, the frozen copy is another file (as a reflink would
 * be), holding one more grain than the disk: the engine must read it. */
static int fk_view_take(struct vmc_ctx *ctx, struct vmc_dom *d,
                        const struct vmc_disk_info *disks, int *fds, int n)
{
    (void)disks;
    if (fails(ctx, "view_take"))
        return VMC_E_BACKEND;
    F.view_bad |= d->f->running || F.view != 1 || n != 1;
    F.view = 2;
    if (F.view_copy) {
        char p[] = "/tmp/vmc-engine-copy-XXXXXX";
        int fd = mkstemp(p);
        if (fd < 0 || ftruncate(fd, 4 << 20) < 0 ||
            pwrite(fd, "copy", 4, 0) != 4 || pwrite(fd, "copy", 4, 65536) != 4)
            return vmc_set_error(ctx, VMC_E_IO, "fake: no copy");
        unlink(p);
        close(fds[0]);
        fds[0] = fd;
    }
    return 0;
}

static int fk_view_release(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (fails(ctx, "view_release"))
        return VMC_E_BACKEND;
    F.view_bad |= F.view == 2 && !d->f->running;   /* copied while stopped */
    F.view = 0;
    return 0;
}

static void *save_thread(void *arg)
{
    struct vmc_dom *d = arg;
    uint8_t buf[65536];

    while (d->done < STREAM_LEN && !__atomic_load_n(&F.cancelled, __ATOMIC_ACQUIRE)) {
        size_t n = STREAM_LEN - d->done < sizeof(buf) ? STREAM_LEN - d->done
                                                      : sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(d->done + i);
        if (io_write_full(NULL, d->fd, buf, n, "fake") < 0)
            break;                      /* the engine stopped reading */
        __atomic_add_fetch(&d->done, n, __ATOMIC_RELEASE);
        /* a pre-copy that does not converge: it ends when told to */
        while (d->live && F.precopy_waits && d->done >= STREAM_LEN / 2 &&
               !__atomic_load_n(&F.stopped, __ATOMIC_ACQUIRE) &&
               !__atomic_load_n(&F.cancelled, __ATOMIC_ACQUIRE))
            usleep(10000);
    }
    close(d->fd);
    d->fd = -1;
    return NULL;
}

static int fk_save_start(struct vmc_ctx *ctx, struct vmc_dom *d, int fd,
                         const struct vmc_save_tuning *t)
{
    if (fails(ctx, "save_start"))
        return VMC_E_BACKEND;
    if (!t->live && d->f->running)
        F.save_while_running = 1;
    d->live = t->live;
    d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    pthread_create(&d->th, NULL, save_thread, d);
    d->th_running = 1;
    return 0;
}

static int fk_stop_copy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (fails(ctx, "stop_copy"))
        return VMC_E_BACKEND;
    d->f->running = 0;
    __atomic_store_n(&F.stopped, 1, __ATOMIC_RELEASE);
    return 0;
}

static int fk_save_poll(struct vmc_ctx *ctx, struct vmc_dom *d, uint64_t *tr,
                        uint32_t *round)
{
    if (fails(ctx, "save_poll"))
        return VMC_E_BACKEND;
    *tr = __atomic_load_n(&d->done, __ATOMIC_ACQUIRE);
    *round = 1;
    return 0;
}

static int fk_save_wait(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *stop)
{
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    *stop = 0;
    if (d->live)
        d->f->running = 0;              /* stop and copy */
    if (F.dies) {                       /* it triple-faulted meanwhile */
        d->f->dead = 1;
        d->f->running = 0;
        return vmc_set_error(ctx, VMC_E_BACKEND, "fake: hypervisor exited");
    }
    if (fails(ctx, "save_wait"))
        return VMC_E_BACKEND;
    return d->done == STREAM_LEN ? 0 :
           vmc_set_error(ctx, VMC_E_BACKEND, "fake stream cut short");
}

static void fk_save_cancel(struct vmc_dom *d)
{
    __atomic_store_n(&F.cancelled, 1, __ATOMIC_RELEASE);
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
}

static int fk_destroy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (fails(ctx, "destroy"))
        return VMC_E_BACKEND;
    d->f->exists = 0;
    return 0;
}

static void *restore_thread(void *arg)
{
    struct vmc_dom *d = arg;
    uint8_t buf[65536];
    ssize_t n;

    while ((n = read(d->fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(d->done + (size_t)i))
                d->bad = 1;
        d->done += (size_t)n;
        if (F.kill_feed && d->done >= STREAM_LEN / 2)
            kill(getpid(), SIGKILL);    /* the restorer dies mid-feed */
        if (F.feed_short && d->done >= F.feed_short)
            break;                      /* the hypervisor gives up */
    }
    close(d->fd);
    d->fd = -1;
    return NULL;
}

/* The fake's config is opaque bytes: the policy is the real backends'. */
static int fk_config_check(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                           uint32_t fmt, const uint8_t *cfg, size_t len,
                           const struct vmc_policy *pol)
{
    (void)m, (void)fmt, (void)cfg, (void)len, (void)pol;
    return fails(ctx, "config_check") ? VMC_E_INVAL : 0;
}

static int fk_restore_start(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                            uint32_t fmt, const uint8_t *cfg, size_t len,
                            const struct vmc_restore_as *as, int fd,
                            struct vmc_dom **out)
{
    struct vmc_dom *d;

    (void)m;
    *out = NULL;
    if (fails(ctx, "restore_start"))
        return VMC_E_BACKEND;
    if (fmt != 99 || len != 10 || memcmp(cfg, "{\"fake\":1}", 10))
        return vmc_set_error(ctx, VMC_E_FORMAT, "fake: not my config");
    d = calloc(1, sizeof(*d));
    if (!(d->f = fake_new(as->build_name, as->uuid))) {
        free(d);
        return vmc_set_error(ctx, VMC_E_LIMIT, "fake: full");
    }
    if (as->known)
        as->known(as->known_arg, d->f->id);
    d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    pthread_create(&d->th, NULL, restore_thread, d);
    d->th_running = 1;
    *out = d;
    return 0;
}

static int fk_restore_wait(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    if (fails(ctx, "restore_wait"))
        return VMC_E_BACKEND;
    if (d->bad || d->done != STREAM_LEN)
        return vmc_set_error(ctx, VMC_E_BACKEND, "fake: stream %s (%zu bytes)",
                             d->bad ? "differs" : "short", d->done);
    return 0;
}

static int fk_rename(struct vmc_ctx *ctx, struct vmc_dom *d, const char *name)
{
    if (fails(ctx, "rename"))
        return VMC_E_BACKEND;
    snprintf(d->f->name, sizeof(d->f->name), "%.250s", name);
    F.renamed = 1;
    return 0;
}

static void fk_restore_abort(struct vmc_dom *d)
{
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    d->f->exists = 0;
    F.aborted = 1;
}

static int fk_console_open(struct vmc_ctx *ctx, struct vmc_dom *d, int *fd)
{
    (void)d;
    *fd = -1;
    return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "fake: no console");
}

static int fk_died(struct vmc_dom *d, char *w, size_t n, FILE *ev)
{
    if (!d->f->dead) {
        snprintf(w, n, "%s", "");
        return 0;
    }
    snprintf(w, n, "%s", "fake: triple fault");
    fprintf(ev, "fake hypervisor: vCPU 0 triple fault at rip 0x1234\n");
    return 1;
}

static const struct vmc_backend fake = {
    .name = "fake", .id = FAKE_ID, .flags = VMC_BE_UNIQUE_NAMES,
    .probe = fk_probe, .open = fk_open, .close = fk_close, .domid = fk_domid,
    .name_of = fk_name_of, .find = fk_find, .saving = fk_saving,
    .describe = fk_describe, .is_running = fk_is_running, .pause = fk_pause,
    .resume = fk_resume, .save_start = fk_save_start,
    .stop_copy = fk_stop_copy, .save_poll = fk_save_poll,
    .save_wait = fk_save_wait, .save_cancel = fk_save_cancel,
    .view_prepare = fk_view_prepare, .view_take = fk_view_take,
    .view_release = fk_view_release,
    .destroy = fk_destroy, .config_check = fk_config_check,
    .restore_start = fk_restore_start,
    .restore_wait = fk_restore_wait, .rename = fk_rename,
    .restore_abort = fk_restore_abort, .console_open = fk_console_open,
    .died = fk_died,
};

/* ---- harness ---------------------------------------------------------------- */

static struct vmc_keys *keys;
static char dir[] = "/tmp/vmc-engine-XXXXXX";

static void reset(void)
{
    memset(Fs, 0, sizeof(*Fs));
}

/* The state file: made by the first process, inherited by the guardian
 * through VMC_ENGINE_STATE. */
static int state_map(void)
{
    const char *p = getenv("VMC_ENGINE_STATE");
    char tmp[] = "/tmp/vmc-engine-state-XXXXXX";
    int fd;

    if (p)
        fd = open(p, O_RDWR | O_CLOEXEC);
    else if ((fd = mkstemp(tmp)) >= 0 &&
             ftruncate(fd, sizeof(struct fake_state)) == 0) {
        setenv("VMC_ENGINE_STATE", tmp, 1);
        unlink(tmp);                    /* the guardian opens /proc/PID/fd */
    }
    if (fd < 0)
        return -1;
    if (!p) {                           /* a path that outlives the unlink */
        char link[64];
        snprintf(link, sizeof(link), "/proc/%d/fd/%d", (int)getpid(), fd);
        setenv("VMC_ENGINE_STATE", link, 1);
    }
    Fs = mmap(NULL, sizeof(*Fs), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return Fs == MAP_FAILED ? -1 : 0;
}

static int exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

static int confirm_fail(void *arg, struct vmc_ctx *ctx, const uint8_t id[16])
{
    (void)arg, (void)id;
    return vmc_set_error(ctx, VMC_E_IO, "receiver went away");
}

static int confirm_ok(void *arg, struct vmc_ctx *ctx, const uint8_t id[16])
{
    (void)arg, (void)ctx, (void)id;
    return 0;
}

/* The migration's commit, as the receiver answers: 0 RUNNING, 1 nothing
 * (unknown), 2 FAILED (it gave up). */
static int commit_answer;
static int commit_cb(void *arg, struct vmc_ctx *ctx, const uint8_t id[16],
                     int *gave_up)
{
    (void)arg, (void)id;
    *gave_up = commit_answer == 2;
    if (commit_answer == 0)
        return 0;
    return vmc_set_error(ctx, VMC_E_IO, commit_answer == 1 ? "no answer"
                                                           : "it gave up");
}
static int (*save_commit_cb)(void *, struct vmc_ctx *, const uint8_t *, int *);
static uint32_t save_live_timeout;     /* 0: the engine's default */

static int cancel_cb(void *arg, uint64_t bytes)
{
    (void)arg;
    return bytes > STREAM_LEN / 2;
}

/* vmc_save of domain "vm" with opts o into dir/FILE. */
static int save_with(const char *file, const struct vmc_save_opts *o,
                     struct vmc_save_result *res, struct vmc_ctx *ctx)
{
    struct vmc_outfile *of;
    char path[160];
    int rc;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if ((rc = vmc_outfile_open(ctx, path, 1, &of)) < 0)
        return rc;
    rc = vmc_save(ctx, &fake, "vm", of, o, res);
    vmc_outfile_free(of);
    return rc;
}

/* One save of domain "vm" (created running) into dir/NAME.  Returns
 * vmc_save's rc; the image is committed or gone when this returns. */
static int save(const char *file, enum vmc_save_mode mode, int live,
                struct vmc_save_result *res, struct vmc_ctx *ctx,
                int (*confirm)(void *, struct vmc_ctx *, const uint8_t *),
                vmc_progress_fn progress)
{
    struct vmc_save_opts o = { .mode = mode, .live = live, .keys = keys,
                               .confirm = confirm, .progress = progress,
                               .commit = save_commit_cb,
                               .live_timeout_s = save_live_timeout };

    vmc_ctx_clear(ctx);
    return save_with(file, &o, res, ctx);
}

/* The receiver's gate: 0 lets the loaded domain run, else no COMMIT. */
static int activate_answer, activate_saw_running = -1;
static int activate_cb(void *arg, struct vmc_ctx *ctx, int domid)
{
    struct fdom *d = NULL;

    (void)arg;
    for (int i = 0; i < MAXDOM; i++)
        if (F.dom[i].exists && F.dom[i].id == domid)
            d = &F.dom[i];
    activate_saw_running = d ? d->running : -1;
    return activate_answer ? vmc_set_error(ctx, VMC_E_IO, "no COMMIT") : 0;
}
static int (*restore_activate)(void *, struct vmc_ctx *, int);

static int restore(const char *file, const char *name, int clone, int paused,
                   struct vmc_restore_result *res, struct vmc_ctx *ctx,
                   off_t cut)
{
    struct vmc_restore_opts o = { .name = name, .clone = clone,
                                  .paused = paused,
                                  .activate = restore_activate };
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    char path[128];
    int fd, rc;

    vmc_ctx_clear(ctx);
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if ((fd = open(path, O_RDONLY)) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
    if (cut) {                                  /* a truncated copy */
        char cpath[160];
        struct stat st;
        int c;
        snprintf(cpath, sizeof(cpath), "%s.cut", path);
        c = open(cpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
        fstat(fd, &st);
        if (vmc_copy_fd(ctx, fd, c, "copy") < 0 ||
            ftruncate(c, st.st_size - cut) < 0)
            return vmc_set_error(ctx, VMC_E_IO, "cannot cut a copy");
        lseek(c, 0, SEEK_SET);
        close(fd);
        unlink(cpath);
        fd = c;
    }
    if ((rc = vmc_header_read(ctx, fd, &h)) == 0 &&
        (rc = vmc_header_unlock(ctx, h, keys)) == 0 &&
        (rc = vmc_reader_new(ctx, fd, h, 1, 1, &r)) == 0)
        h = NULL;
    if (rc == 0)
        rc = vmc_restore(ctx, r, &o, res);
    vmc_reader_free(r);
    vmc_header_free(h);
    close(fd);
    return rc;
}

/* ---- save: a failure at every op ----------------------------------------- */

static const char *save_ops[] = { "open", "describe", "is_running", "pause",
                                  "save_start", "save_wait", "resume" };

/* The domain was running, the op fails: it runs again, no image. */
static int t_save_fails_at_every_op(void)
{
    for (size_t i = 0; i < sizeof(save_ops) / sizeof(save_ops[0]); i++) {
        for (int live = 0; live < 2; live++) {
            struct vmc_ctx *ctx = vmc_ctx_new();
            struct vmc_save_result res;
            char file[64], path[160], partial[176];
            struct fdom *f;
            int rc;

            reset();
            f = fake_new("vm", NULL);
            f->running = 1;
            /* "resume" fails only where the engine resumes: a checkpoint */
            fail_at(save_ops[i], 0);
            snprintf(file, sizeof(file), "fail-%s-%d.vmimg", save_ops[i], live);
            snprintf(path, sizeof(path), "%s/%s", dir, file);
            snprintf(partial, sizeof(partial), "%s.partial", path);
            rc = save(file, VMC_SAVE_CHECKPOINT, live, &res, ctx, NULL, NULL);
            if (live && !strcmp(save_ops[i], "pause")) {
                /* a live save never pauses: it succeeds */
                REQUIRE(rc == 0, "live, pause failing: %s", vmc_ctx_error(ctx));
                unlink(path);
                vmc_ctx_free(ctx);
                continue;
            }
            REQUIRE(rc < 0, "%s failing (live %d): save succeeded", save_ops[i],
                    live);
            REQUIRE(strstr(vmc_ctx_error(ctx), save_ops[i]),
                    "%s failing: error '%s'", save_ops[i], vmc_ctx_error(ctx));
            REQUIRE(!exists(path) && !exists(partial),
                    "%s failing: an image file is left", save_ops[i]);
            REQUIRE(f->exists, "%s failing: the domain is gone", save_ops[i]);
            if (!strcmp(save_ops[i], "resume")) {
                /* nothing can bring it back: said so, not claimed resumed */
                REQUIRE(!f->running && !res.resumed_after_error,
                        "resume failing: running %d resumed %d", f->running,
                        res.resumed_after_error);
                REQUIRE(!res.lost, "resume failing: reported lost, but the "
                        "domain did not die");
            } else {
                REQUIRE(f->running, "%s failing (live %d): the domain is "
                        "left stopped", save_ops[i], live);
                REQUIRE(strcmp(save_ops[i], "open") &&
                        strcmp(save_ops[i], "describe") &&
                        strcmp(save_ops[i], "is_running") ?
                        res.resumed_after_error : !res.resumed_after_error,
                        "%s failing: resumed_after_error %d (a refusal before the pause resumes nothing)", save_ops[i], res.resumed_after_error);
            }
            REQUIRE(!F.save_while_running, "the guest ran during a cold save");
            REQUIRE(F.cancelled == (strcmp(save_ops[i], "save_start") == 0 ||
                                    strcmp(save_ops[i], "save_wait") == 0 ||
                                    strcmp(save_ops[i], "resume") == 0),
                    "%s failing: save_cancel called %d", save_ops[i],
                    F.cancelled);
            vmc_ctx_free(ctx);
        }
    }
    return 0;
}

/* The image is durable, then destroying the source fails: the image is
 * kept and the result says why (vmsave prints "image kept"). */
static int t_save_destroy_fails(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_save_result res;
    char path[160];
    struct fdom *f;

    reset();
    (f = fake_new("vm", NULL))->running = 1;
    fail_at("destroy", 0);
    REQUIRE(save("d.vmimg", VMC_SAVE_DESTROY, 0, &res, ctx, NULL, NULL) ==
            VMC_E_BACKEND, "destroy failing: %s", vmc_ctx_error(ctx));
    snprintf(path, sizeof(path), "%s/d.vmimg", dir);
    REQUIRE(exists(path) && res.destroy_failed && f->exists && !f->running,
            "image %d destroy_failed %d exists %d running %d", exists(path),
            res.destroy_failed, f->exists, f->running);
    unlink(path);
    vmc_ctx_free(ctx);
    return 0;
}

/* Failures that are not the backend's: a receiver that never confirms
 * (migrate), a caller that interrupts the copy. */
static int t_save_migrate_and_cancel(void)
{
    for (int k = 0; k < 2; k++) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_save_result res;
        struct fdom *f;
        char path[160];
        int rc;

        reset();
        (f = fake_new("vm", NULL))->running = 1;
        rc = k == 0 ? save("m.vmimg", VMC_SAVE_MIGRATE, 1, &res, ctx,
                           confirm_fail, NULL)
                    : save("m.vmimg", VMC_SAVE_DESTROY, 0, &res, ctx, NULL,
                           cancel_cb);
        REQUIRE(rc == (k == 0 ? VMC_E_IO : VMC_E_CANCELED), "case %d: rc %d %s",
                k, rc, vmc_ctx_error(ctx));
        REQUIRE(f->exists && f->running && res.resumed_after_error,
                "case %d: source exists %d running %d", k, f->exists, f->running);
        snprintf(path, sizeof(path), "%s/m.vmimg", dir);
        if (k == 1)
            REQUIRE(!exists(path), "an interrupted save left its image");
        unlink(path);
        vmc_ctx_free(ctx);
    }
    return 0;
}

/* Past READY the source never runs again unless the receiver gave up:
 * RUNNING destroys it, no answer leaves it paused (outcome unknown), a
 * FAILED resumes it. */
static int t_save_migrate_commit(void)
{
    for (int k = 0; k < 3; k++) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_save_result res;
        struct fdom *f;
        char path[160];
        int rc;

        reset();
        (f = fake_new("vm", NULL))->running = 1;
        commit_answer = k;
        save_commit_cb = commit_cb;
        rc = save("c.vmimg", VMC_SAVE_MIGRATE, 1, &res, ctx, confirm_ok, NULL);
        save_commit_cb = NULL;
        if (k == 0)
            REQUIRE(rc == 0 && !f->exists, "RUNNING: rc %d exists %d", rc,
                    f->exists);
        else if (k == 1)
            REQUIRE(rc < 0 && res.outcome_unknown && f->exists && !f->running &&
                    !res.resumed_after_error, "unknown: rc %d unknown %d exists "
                    "%d running %d", rc, res.outcome_unknown, f->exists,
                    f->running);
        else
            REQUIRE(rc < 0 && !res.outcome_unknown && f->exists && f->running,
                    "gave up: rc %d exists %d running %d", rc, f->exists,
                    f->running);
        snprintf(path, sizeof(path), "%s/c.vmimg", dir);
        unlink(path);
        vmc_ctx_free(ctx);
    }
    return 0;
}

/* A paused domain stays paused whatever fails, and a successful save of
 * each mode leaves the source as the mode says. */
static int t_save_modes(void)
{
    static const enum vmc_save_mode modes[] = { VMC_SAVE_DESTROY,
        VMC_SAVE_CHECKPOINT, VMC_SAVE_PAUSED };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_save_result res;
    struct fdom *f;

    for (int i = 0; i < 3; i++) {
        reset();
        (f = fake_new("vm", NULL))->running = 1;
        REQUIRE(save("s.vmimg", modes[i], 0, &res, ctx, NULL, NULL) == 0,
                "mode %d: %s", i, vmc_ctx_error(ctx));
        REQUIRE(res.backend_bytes == STREAM_LEN && res.was_running,
                "mode %d: %llu bytes", i, (unsigned long long)res.backend_bytes);
        REQUIRE(i == 0 ? !f->exists : i == 1 ? f->exists && f->running
                                              : f->exists && !f->running,
                "mode %d: exists %d running %d", i, f->exists, f->running);
    }
    reset();
    f = fake_new("vm", NULL);                   /* paused */
    fail_at("save_start", 0);
    REQUIRE(save("s.vmimg", VMC_SAVE_DESTROY, 0, &res, ctx, NULL, NULL) < 0 &&
            f->exists && !f->running && !res.was_running,
            "paused source: running %d", f->running);
    vmc_ctx_free(ctx);
    return 0;
}

/* ---- restore ---------------------------------------------------------------- */

/* An image of "vm" (saved with checkpoint, so the source still runs). */
static int make_image(struct vmc_ctx *ctx)
{
    struct vmc_save_result res;

    reset();
    fake_new("vm", NULL)->running = 1;
    return save("r.vmimg", VMC_SAVE_CHECKPOINT, 0, &res, ctx, NULL, NULL);
}

static int t_restore_fails_at_every_op(void)
{
    static const char *ops[] = { "config_check", "find", "restore_start",
                                 "restore_wait", "resume" };
    struct vmc_ctx *ctx = vmc_ctx_new();

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        struct vmc_restore_result res;
        F.dom[0].exists = 0;                    /* the source is gone */
        fail_at(ops[i], 0);
        F.aborted = 0;
        REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) < 0,
                "%s failing: restored", ops[i]);
        REQUIRE(strstr(vmc_ctx_error(ctx), ops[i]), "%s failing: '%s'", ops[i],
                vmc_ctx_error(ctx));
        REQUIRE(nexisting() == 0 && res.domid == -1,
                "%s failing: %d domains left, domid %d", ops[i], nexisting(),
                res.domid);
        REQUIRE(F.aborted == (i >= 3), "%s failing: restore_abort %d", ops[i],
                F.aborted);
    }
    vmc_ctx_free(ctx);
    return 0;
}

/* A stream cut short, or a hypervisor that stops reading: torn down. */
static int t_restore_stream_failures(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_restore_result res;

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.dom[0].exists = 0;
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 100) == VMC_E_TRUNC,
            "truncated: %s", vmc_ctx_error(ctx));
    REQUIRE(nexisting() == 0 && F.aborted, "truncated: %d left", nexisting());
    F.aborted = 0;
    F.feed_short = STREAM_LEN / 3;
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == VMC_E_BACKEND &&
            strstr(vmc_ctx_error(ctx), "short"),
            "hypervisor gave up: %s", vmc_ctx_error(ctx));
    REQUIRE(nexisting() == 0 && F.aborted, "gave up: %d left", nexisting());
    vmc_ctx_free(ctx);
    return 0;
}

/* Name and UUID rules: clash refused, --name, --clone, --clone again. */
/* The migration's receiver: the domain is loaded paused before the gate;
 * no COMMIT destroys it, COMMIT lets it run. */
static int t_restore_gate(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_restore_result res;
    struct fdom *n;

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.dom[0].exists = 0;
    restore_activate = activate_cb;
    activate_answer = 1;
    REQUIRE(restore("r.vmimg", "gated", 0, 0, &res, ctx, 0) == VMC_E_IO &&
            activate_saw_running == 0 && !by_name("gated") && nexisting() == 0,
            "no COMMIT: saw running %d, %d left", activate_saw_running,
            nexisting());
    activate_answer = 0;
    REQUIRE(restore("r.vmimg", "gated", 0, 0, &res, ctx, 0) == 0 &&
            activate_saw_running == 0 && (n = by_name("gated")) && n->running,
            "COMMIT: %s", vmc_ctx_error(ctx));
    restore_activate = NULL;
    vmc_ctx_free(ctx);
    return 0;
}

static int t_restore_names(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_restore_result res;
    struct fdom *src, *n;
    uint8_t uuid[16];

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    src = &F.dom[0];
    memcpy(uuid, src->uuid, 16);
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == VMC_E_CLASH &&
            strstr(vmc_ctx_error(ctx), "same name") && nexisting() == 1,
            "clash: %s", vmc_ctx_error(ctx));
    REQUIRE(restore("r.vmimg", "other", 0, 0, &res, ctx, 0) == 0,
            "--name: %s", vmc_ctx_error(ctx));
    n = by_name("other");
    REQUIRE(n && n->running && memcmp(n->uuid, uuid, 16) && !strcmp(res.name,
            "other"), "--name: a running UUID must not be shared");
    REQUIRE(restore("r.vmimg", NULL, 1, 1, &res, ctx, 0) == 0 &&
            (n = by_name("vm-clone")) && !n->running && memcmp(n->uuid, uuid, 16),
            "--clone -p: %s", vmc_ctx_error(ctx));
    REQUIRE(restore("r.vmimg", NULL, 1, 0, &res, ctx, 0) == 0 &&
            by_name("vm-clone2") && !strcmp(res.name, "vm-clone2"),
            "second --clone: %s", vmc_ctx_error(ctx));
    /* the source gone: --name keeps the recorded UUID */
    src->exists = 0;
    REQUIRE(restore("r.vmimg", "again", 0, 0, &res, ctx, 0) == 0 &&
            (n = by_name("again")) && !memcmp(n->uuid, uuid, 16),
            "--name without a clash: %s", vmc_ctx_error(ctx));
    vmc_ctx_free(ctx);
    return 0;
}

/* `vmsave vm - | vmrestore -`: the source is still being saved when the
 * restore starts; built as vm--incoming, renamed once the source is gone,
 * refused if it never goes. */
static int t_restore_pending_source(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_restore_result res;
    struct fdom *n;

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.saving_id = F.dom[0].id;
    F.saving_ends = 1;
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == 0,
            "pending: %s", vmc_ctx_error(ctx));
    REQUIRE(F.renamed && (n = by_name("vm")) && n->running && nexisting() == 1 &&
            !strcmp(res.name, "vm"), "pending: renamed %d, %d domains",
            F.renamed, nexisting());
    /* the source stays */
    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.saving_id = F.dom[0].id;
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == VMC_E_CLASH &&
            strstr(vmc_ctx_error(ctx), "still running"),
            "source stays: %s", vmc_ctx_error(ctx));
    REQUIRE(nexisting() == 1 && F.aborted && !F.renamed,
            "source stays: %d domains", nexisting());
    /* a left-over vm--incoming */
    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.saving_id = F.dom[0].id;
    fake_new("vm--incoming", NULL);
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == VMC_E_EXISTS &&
            nexisting() == 2, "left-over incoming: %s", vmc_ctx_error(ctx));
    /* rename fails: torn down */
    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.saving_id = F.dom[0].id;
    F.saving_ends = 1;
    fail_at("rename", 0);
    REQUIRE(restore("r.vmimg", NULL, 0, 0, &res, ctx, 0) == VMC_E_BACKEND &&
            nexisting() == 0 && F.aborted, "rename failing: %s, %d domains",
            vmc_ctx_error(ctx), nexisting());
    vmc_ctx_free(ctx);
    return 0;
}

/* A live save reports each pre-copy round to opts.round, in order, as
 * many as res.nrounds, their bytes adding up to the hypervisor stream; and
 * writes them as PRECOPY_ROUND records. */
struct seen_rounds { int n; uint64_t bytes; };

static void on_round(void *arg, const struct vmc_round *r)
{
    struct seen_rounds *s = arg;

    s->n++;
    s->bytes += r->bytes;
}

static int t_save_live_rounds(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_save_result res;
    struct seen_rounds seen = { 0 };
    struct vmc_save_opts o = { .mode = VMC_SAVE_CHECKPOINT, .live = 1,
                               .keys = keys, .round = on_round,
                               .round_arg = &seen };
    struct vmc_outfile *of;
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_summary sum = { 0 };
    char path[128];
    uint64_t recs = 0;
    int fd, rc;

    reset();
    fake_new("vm", NULL)->running = 1;
    snprintf(path, sizeof(path), "%s/rounds.vmimg", dir);
    REQUIRE(vmc_outfile_open(ctx, path, 1, &of) == 0, "%s", vmc_ctx_error(ctx));
    rc = vmc_save(ctx, &fake, "vm", of, &o, &res);
    vmc_outfile_free(of);
    REQUIRE(rc == 0, "live save: %s", vmc_ctx_error(ctx));
    REQUIRE(res.nrounds >= 1 && seen.n == res.nrounds,
            "rounds: %d reported, nrounds %d", seen.n, res.nrounds);
    REQUIRE(seen.bytes == res.backend_bytes, "round bytes %llu, stream %llu",
            (unsigned long long)seen.bytes,
            (unsigned long long)res.backend_bytes);
    fd = open(path, O_RDONLY);
    if ((rc = vmc_header_read(ctx, fd, &h)) == 0 &&
        (rc = vmc_header_unlock(ctx, h, keys)) == 0 &&
        (rc = vmc_reader_new(ctx, fd, h, 1, 1, &r)) == 0)
        rc = vmc_reader_drain(r, -1, NULL, NULL, &sum);
    else
        vmc_header_free(h);
    for (int i = 0; i < sum.ntypes; i++)
        if (sum.types[i].type == VMC_REC_PRECOPY_ROUND)
            recs = sum.types[i].count;
    vmc_summary_free(&sum);
    vmc_reader_free(r);
    close(fd);
    unlink(path);
    REQUIRE(rc == 0, "reading it back: %s", vmc_ctx_error(ctx));
    REQUIRE(recs == (uint64_t)res.nrounds, "%llu PRECOPY_ROUND records, %d "
            "rounds", (unsigned long long)recs, res.nrounds);
    vmc_ctx_free(ctx);
    return 0;
}

/* The monitor's ops.  save_poll failing loses the statistics, never the
 * save.  A pre-copy that does not converge is ended with stop_copy once
 * --live-timeout has passed; if stop_copy fails the engine asks again. */
static int t_save_monitor_ops(void)
{
    for (int k = 0; k < 3; k++) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_save_result res;
        char path[160];
        struct fdom *f;
        int rc;

        reset();
        (f = fake_new("vm", NULL))->running = 1;
        if (k == 0) {
            fail_at("save_poll", 0);
        } else {
            F.precopy_waits = 1;
            if (k == 2)
                fail_at("stop_copy", 3);
        }
        save_live_timeout = 1;
        rc = save("mon.vmimg", VMC_SAVE_CHECKPOINT, 1, &res, ctx, NULL, NULL);
        save_live_timeout = 0;
        snprintf(path, sizeof(path), "%s/mon.vmimg", dir);
        REQUIRE(rc == 0 && exists(path), "case %d: %s", k, vmc_ctx_error(ctx));
        REQUIRE(f->running, "case %d: the domain is left stopped", k);
        if (k == 0)
            REQUIRE(res.nrounds == 0 && !res.forced_stop,
                    "save_poll failing: %d rounds", res.nrounds);
        else
            REQUIRE(res.forced_stop && F.stopped && !F.fail[0],
                    "case %d: forced_stop %d stopped %d", k, res.forced_stop,
                    F.stopped);
        unlink(path);
        vmc_ctx_free(ctx);
    }
    return 0;
}

/* The guest dies while it is saved: the save fails, the error says that
 * the domain died with the hypervisor's reason, and the evidence is kept
 * in a 0600 file of VMCKPT_LOGDIR. */
static int t_save_domain_died(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_save_result res;
    char path[160], line[256] = "";
    struct stat st;
    FILE *ev;
    int rc;

    reset();
    fake_new("vm", NULL)->running = 1;
    F.dies = 1;
    rc = save("died.vmimg", VMC_SAVE_CHECKPOINT, 0, &res, ctx, NULL, NULL);
    snprintf(path, sizeof(path), "%s/died.vmimg", dir);
    REQUIRE(rc < 0 && !exists(path), "rc %d, image %d", rc, exists(path));
    REQUIRE(res.lost && !strcmp(res.lost_why, "fake: triple fault"),
            "lost %d why '%s'", res.lost, res.lost_why);
    REQUIRE(strstr(vmc_ctx_error(ctx), "the domain died during the save "
                   "(fake: triple fault); evidence in ") &&
            strstr(vmc_ctx_error(ctx), res.evidence),
            "error '%s'", vmc_ctx_error(ctx));
    REQUIRE(res.evidence[0] && stat(res.evidence, &st) == 0 &&
            (st.st_mode & 0777) == 0600, "evidence '%.300s'", res.evidence);
    REQUIRE((ev = fopen(res.evidence, "r")) != NULL, "%s", res.evidence);
    while (fgets(line, sizeof(line), ev) && !strstr(line, "triple fault"))
        ;
    fclose(ev);
    REQUIRE(strstr(line, "vCPU 0 triple fault"), "evidence lacks the "
            "hypervisor's lines");
    unlink(res.evidence);
    vmc_ctx_free(ctx);
    return 0;
}

/* A checkpoint that carries a disk, cold and live: the view is prepared
 * while the guest runs, taken once the memory is captured and the guest
 * still stopped, copied (from the frozen copy, if the backend hands one
 * out) and released once it runs again.  A failure at each view op
 * leaves the domain running on its own disk (the view released), nothing
 * under the final name. */
/* Waits up to 10 s for cond() to hold (the guardian works on its own). */
static int eventually(int (*cond)(void))
{
    for (int i = 0; i < 1000; i++) {
        if (cond())
            return 1;
        usleep(10000);
    }
    return 0;
}

static int view_save(const char *file, int live, struct vmc_save_result *res,
                     struct vmc_ctx *ctx)
{
    struct vmc_save_opts o = { .mode = VMC_SAVE_CHECKPOINT, .live = live,
                               .keys = keys, .disks = VMC_SAVE_DISKS_WRITABLE };

    return save_with(file, &o, res, ctx);
}

static int t_save_view(void)
{
    static const char *ops[] = { "", "copy", "live", "view_prepare",
                                 "view_take", "view_release" };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_save_result res;
    char disk[160], path[160];
    int fd;

    snprintf(disk, sizeof(disk), "%s/fake-disk.raw", dir);
    snprintf(path, sizeof(path), "%s/view.vmimg", dir);
    REQUIRE((fd = open(disk, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0 &&
            ftruncate(fd, 4 << 20) == 0 && pwrite(fd, "journal", 7, 65536) == 7,
            "%s", disk);
    close(fd);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        struct fdom *f;
        int rc;

        reset();
        snprintf(F.disk, sizeof(F.disk), "%s", disk);
        (f = fake_new("vm", NULL))->running = 1;
        /* release fails once: undo asks again */
        F.view_copy = !strcmp(ops[i], "copy");
        if (strncmp(ops[i], "view_", 5) == 0)
            fail_at(ops[i], !strcmp(ops[i], "view_release"));
        vmc_ctx_clear(ctx);
        rc = view_save("view.vmimg", !strcmp(ops[i], "live"), &res, ctx);
        if (strncmp(ops[i], "view_", 5)) {
            /* the copy has two grains of data, the disk one */
            uint64_t want = F.view_copy ? 2 * 65536 : 65536;
            REQUIRE(rc == 0 && exists(path) && res.disks_carried == 1 &&
                    res.disk_bytes >= want && res.disk_bytes < want + 4096,
                    "checkpoint --disks (%s): %s (%d carried, %llu bytes)",
                    ops[i], vmc_ctx_error(ctx), res.disks_carried,
                    (unsigned long long)res.disk_bytes);
            unlink(path);
        } else {
            REQUIRE(rc < 0 && strstr(vmc_ctx_error(ctx), ops[i]) &&
                    !exists(path), "%s failing: rc %d '%s' image %d", ops[i],
                    rc, vmc_ctx_error(ctx), exists(path));
        }
        REQUIRE(f->running && F.view == 0 && !F.view_bad,
                "%s: running %d view %d bad %d (%s)", ops[i][0] ? ops[i] : "ok",
                f->running, F.view, F.view_bad, vmc_ctx_error(ctx));
    }
    vmc_ctx_free(ctx);
    return 0;
}

static int view_released(void)
{
    return F.view == 0 && F.dom[0].running;
}

/* SIGKILL while the frozen disk is copied: the guardian releases the
 * view (the domain back on its own disk) and the guest runs. */
static int t_save_view_killed(void)
{
    char disk[160], path[160];
    int st, fd;
    pid_t pid;

    snprintf(disk, sizeof(disk), "%s/fake-disk.raw", dir);
    snprintf(path, sizeof(path), "%s/vkill.vmimg", dir);
    REQUIRE((fd = open(disk, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0 &&
            ftruncate(fd, 4 << 20) == 0, "%s", disk);
    close(fd);
    reset();
    snprintf(F.disk, sizeof(F.disk), "%s", disk);
    fake_new("vm", NULL)->running = 1;
    F.kill_on_resume = 1;
    fflush(stdout);
    if ((pid = fork()) == 0) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_save_result res;
        view_save("vkill.vmimg", 0, &res, ctx);
        _exit(0);
    }
    REQUIRE(pid > 0 && waitpid(pid, &st, 0) == pid && WIFSIGNALED(st),
            "the saver was not killed");
    REQUIRE(eventually(view_released), "view %d running %d", F.view,
            F.dom[0].running);
    REQUIRE(!exists(path), "an image is left");
    unlink(disk);
    return 0;
}

static char killed_partial[PATH_MAX];
static int recovered(void)
{
    return F.dom[0].running && F.cancelled && !exists(killed_partial);
}

static int killer(void *arg, uint64_t bytes)
{
    (void)arg;
    if (bytes > STREAM_LEN / 2)
        kill(getpid(), SIGKILL);
    return 0;
}

/* SIGKILL in the middle of a save: the guardian (this program re-executed)
 * cancels the save, resumes the domain if the save had stopped it, and
 * removes the .partial file.  A stopped save, a checkpoint, a live one. */
static int t_save_killed_guardian(void)
{
    static const struct { enum vmc_save_mode mode; int live; } c[] = {
        { VMC_SAVE_DESTROY, 0 }, { VMC_SAVE_CHECKPOINT, 0 },
        { VMC_SAVE_CHECKPOINT, 1 },
    };

    for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
        char path[160];
        int st;
        pid_t pid;

        reset();
        fake_new("vm", NULL)->running = 1;
        snprintf(path, sizeof(path), "%s/killed.vmimg", dir);
        snprintf(killed_partial, sizeof(killed_partial), "%s.partial", path);
        fflush(stdout);
        if ((pid = fork()) == 0) {
            struct vmc_ctx *ctx = vmc_ctx_new();
            struct vmc_save_result res;
            save("killed.vmimg", c[k].mode, c[k].live, &res, ctx, NULL, killer);
            _exit(0);                   /* not reached: the killer */
        }
        REQUIRE(pid > 0 && waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) &&
                WTERMSIG(st) == SIGKILL, "case %zu: the saver was not killed",
                k);
        REQUIRE(eventually(recovered), "case %zu: running %d cancelled %d "
                "partial %d", k, F.dom[0].running, F.cancelled,
                exists(killed_partial));
        REQUIRE(F.dom[0].exists && !exists(path), "case %zu: domain %d image "
                "%d", k, F.dom[0].exists, exists(path));
    }
    return 0;
}

static int none_left(void)
{
    return nexisting() == 1;            /* the image's source only */
}

/* SIGKILL of a restore, while its domain is built and fed: the guardian
 * destroys the half-built domain. */
static int t_restore_killed_guardian(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    int st;
    pid_t pid;

    REQUIRE(make_image(ctx) == 0, "save: %s", vmc_ctx_error(ctx));
    F.kill_feed = 1;
    fflush(stdout);
    if ((pid = fork()) == 0) {
        struct vmc_restore_result res;
        restore("r.vmimg", "vm-restored", 0, 0, &res, ctx, 0);
        _exit(0);                       /* not reached: killed mid-feed */
    }
    REQUIRE(pid > 0 && waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) &&
            WTERMSIG(st) == SIGKILL, "the restorer was not killed");
    REQUIRE(eventually(none_left), "%d domains left (want the source only)",
            nexisting());
    REQUIRE(!by_name("vm-restored") && by_name("vm"), "the wrong one is gone");
    vmc_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    struct vmc_ctx *ctx;
    char cmd[64];

    /* the engine re-executes us as the guardian: the fake first */
    if (state_map() < 0 || backend_register(&fake) < 0) {
        printf("FAIL: setup: the fake's state or registry\n");
        return 1;
    }
    vmc_guard_dispatch(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    ctx = vmc_ctx_new();
    keys = vmc_keys_new();
    if (vmc_init(ctx) < 0 || !mkdtemp(dir) ||
        vmc_keys_add_passphrase(ctx, keys, "engine", 6) < 0) {
        printf("FAIL: setup: %s\n", vmc_ctx_error(ctx));
        return 1;
    }
    vmc_keys_set_kdf(keys, 1, VMC_ARGON2_MEM_MIN_KIB);
    {   /* the images sign with a key of the test's and trust it */
        char sk[600], pub[VMC_RECIPIENT_STRLEN];
        snprintf(sk, sizeof(sk), "%s/signing.key", dir);
        if (vmc_keygen(ctx, sk, VMC_KEYGEN_SIGNING, pub) < 0 ||
            vmc_keys_add_signing_key_file(ctx, keys, sk) < 0 ||
            vmc_keys_add_trusted_signer(ctx, keys, pub) < 0) {
            printf("FAIL: setup: %s\n", vmc_ctx_error(ctx));
            return 1;
        }
    }
    setenv("VMCKPT_LOGDIR", dir, 1);
    run("save_fails_at_every_op", t_save_fails_at_every_op);
    run("save_destroy_fails_image_kept", t_save_destroy_fails);
    run("save_migrate_unconfirmed_and_interrupted", t_save_migrate_and_cancel);
    run("save_migrate_commit", t_save_migrate_commit);
    run("save_modes", t_save_modes);
    run("save_live_rounds", t_save_live_rounds);
    run("save_monitor_ops_fail", t_save_monitor_ops);
    run("save_domain_died_evidence", t_save_domain_died);
    run("save_killed_guardian_resumes", t_save_killed_guardian);
    run("save_checkpoint_disks_view", t_save_view);
    run("save_checkpoint_disks_killed_guardian", t_save_view_killed);
    run("restore_fails_at_every_op", t_restore_fails_at_every_op);
    run("restore_stream_failures", t_restore_stream_failures);
    run("restore_names", t_restore_names);
    run("restore_gate", t_restore_gate);
    run("restore_pending_source", t_restore_pending_source);
    run("restore_killed_guardian_destroys", t_restore_killed_guardian);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("warning: %s failed\n", cmd);
    vmc_keys_free(keys);
    vmc_ctx_free(ctx);
    return failures ? 1 : 0;
}
