/*
 * qemu.c - the QEMU/KVM backend's ops over QMP (the ops table of
 * backend.h; the instances come from qemu_registry.c).
 *
 * Save: `stop` (unless live) + getfd + `migrate fd:`.  Restore: relaunch
 * the recorded argv with `-incoming defer -S`, getfd + `migrate-incoming`,
 * and `cont` only after the engine has authenticated the whole image.
 *
 * Owns: what QEMU is told, and how its answers become errors.  Must not:
 * decide names, clashes or rollback (the engine's), or print.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemu.h"

int qemu_qmp(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    char p[600];

    if (d->q)
        return 0;
    snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
    return qmp_connect(ctx, p, 10000, &d->q);
}

static int qemu_open(struct vmc_ctx *ctx, const char *spec, int lock,
                     struct vmc_dom **out)
{
    struct find f = { .spec = spec };
    struct vmc_dom *d;
    int rc;

    *out = NULL;
    if ((rc = qemu_each(ctx, qemu_find_fn, &f)) < 0)
        return rc;
    if (!rc)
        return vmc_set_error(ctx, VMC_E_INVAL, "no such domain (see vmctl list)");
    if (!(d = calloc(1, sizeof(*d))))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    {
        struct vmc_ctx tmp = { 0 };
        int live;
        if (qemu_load(&tmp, f.id, d, &live) < 0 || !live) {
            free(d);
            return vmc_set_error(ctx, VMC_E_INVAL, "domain went away");
        }
    }
    d->lock_fd = -1;
    if (lock && (rc = qemu_lock_instance(d->dir, 1, &d->lock_fd)) < 0) {
        rc = rc == VMC_E_EXISTS ?
             vmc_set_error(ctx, VMC_E_EXISTS, "another vmckpt operation holds "
                           "the domain lock") :
             vmc_set_error(ctx, VMC_E_IO, "%s/lock: %s", d->dir, strerror(errno));
        qemu_dom_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

static int qemu_domid(const struct vmc_dom *d)
{
    return d->id;
}

static const char *qemu_name(const struct vmc_dom *d)
{
    return d->name;
}

/* ---- runtime queries ------------------------------------------------- */

int qemu_query_status(struct vmc_ctx *ctx, struct vmc_dom *d, char *st,
                        size_t cap)
{
    json_t *r;
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0 || (rc = qmp_exec(ctx, d->q, "query-status", NULL,
                                                    &r)) < 0)
        return rc;
    snprintf(st, cap, "%s",
             json_string_value(json_object_get(r, "status")) ?: "unknown");
    json_decref(r);
    return 0;
}

static int qemu_is_running(struct vmc_ctx *ctx, struct vmc_dom *d, int *running)
{
    char st[64];
    int rc = qemu_query_status(ctx, d, st, sizeof(st));

    *running = rc == 0 && !strcmp(st, "running");
    return rc;
}

static int qemu_pause(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall)
{
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0)
        return rc;
    qmp_clear_events(d->q);
    if ((rc = qmp_exec(ctx, d->q, "stop", NULL, NULL)) < 0)
        return rc;
    if (wall) {
        const struct qmp_event *e;
        qmp_wait_event(ctx, d->q, "STOP", 2000, NULL);
        e = qmp_find_event(d->q, "STOP", 1);
        *wall = e ? e->ts_us : qmp_wall_us();
        vmc_ctx_clear(ctx);
    }
    return 0;
}

/* QEMU's pre-copy converges once the guest stops dirtying memory. */
static int qemu_stop_copy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    return qemu_pause(ctx, d, NULL);
}

static int qemu_resume(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall)
{
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0)
        return rc;
    qmp_clear_events(d->q);
    if ((rc = qmp_exec(ctx, d->q, "cont", NULL, NULL)) < 0)
        return rc;
    if (wall) {
        const struct qmp_event *e;
        if (qmp_wait_event(ctx, d->q, "RESUME", 2000, NULL) < 0)
            vmc_ctx_clear(ctx);
        e = qmp_find_event(d->q, "RESUME", 1);
        *wall = e ? e->ts_us : qmp_wall_us();
    }
    return 0;
}

static int qemu_describe(struct vmc_ctx *ctx, struct vmc_dom *d,
                         struct vmc_image_meta *m, uint32_t *fmt, uint8_t **cfg,
                         size_t *cfg_len)
{
    json_t *r = NULL, *c;
    char *s;
    int rc;

    memset(m, 0, sizeof(*m));
    *cfg = NULL;
    *cfg_len = 0;
    if ((rc = qemu_qmp(ctx, d)) < 0)
        return rc;
    snprintf(m->name, sizeof(m->name), "%s", d->name);
    memcpy(m->uuid, d->uuid, 16);
    m->backend = VMC_BACKEND_QEMU;
    m->stream_format = VMC_SFMT_QEMU;
    if (qmp_exec(ctx, d->q, "query-version", NULL, &r) == 0) {
        json_t *q = json_object_get(r, "qemu");
        snprintf(m->backend_version, sizeof(m->backend_version),
                 "QEMU %lld.%lld.%lld (%s)",
                 (long long)json_integer_value(json_object_get(q, "major")),
                 (long long)json_integer_value(json_object_get(q, "minor")),
                 (long long)json_integer_value(json_object_get(q, "micro")),
                 json_string_value(json_object_get(r, "package")) ?: "");
        json_decref(r);
    }
    if (qmp_exec(ctx, d->q, "query-memory-size-summary", NULL, &r) == 0) {
        m->memory_kib = (uint64_t)json_integer_value(
                            json_object_get(r, "base-memory")) / 1024;
        json_decref(r);
    }
    if (qmp_exec(ctx, d->q, "query-cpus-fast", NULL, &r) == 0) {
        m->vcpus = (uint32_t)json_array_size(r);
        if (json_array_size(r))
            snprintf(m->guest_type, sizeof(m->guest_type), "%s",
                     json_string_value(json_object_get(json_array_get(r, 0),
                                                       "target")) ?: "");
        json_decref(r);
    }
    vmc_ctx_clear(ctx);          /* the facts above are informational */
    c = json_deep_copy(d->cfg);
    json_object_del(c, "id");
    s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    if (!s)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    *cfg = (uint8_t *)s;
    *cfg_len = strlen(s);
    *fmt = VMC_CFG_QEMU_JSON;
    return 0;
}

/* ---- save ---------------------------------------------------------------- */

static int qemu_save_start(struct vmc_ctx *ctx, struct vmc_dom *d, int fd,
                           const struct vmc_save_tuning *t)
{
    json_t *args;
    char st[64];
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0 ||
        (rc = qemu_query_status(ctx, d, st, sizeof(st))) < 0)
        return rc;
    if (!strcmp(st, "postmigrate"))
        return vmc_set_error(ctx, VMC_E_BACKEND, "an earlier save left it "
                             "paused, and QEMU saves it again only once it has "
                             "run (resume it first)");
    /* QEMU throttles even a stopped VM's save to 32 MiB/s by default. */
    args = json_pack("{s:I, s:I}", "max-bandwidth",
                     (json_int_t)(t->max_bandwidth ? t->max_bandwidth
                                                   : (uint64_t)1 << 40),
                     "downtime-limit",
                     (json_int_t)(t->max_downtime_ms ? t->max_downtime_ms
                                                     : t->live ? 300 : 2000));
    if ((rc = qmp_exec(ctx, d->q, "migrate-set-parameters", args, NULL)) < 0)
        return rc;
    /* Live: throttle a guest that dirties memory faster than it is sent. */
    qmp_exec(ctx, d->q, "migrate-set-capabilities",
             json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                       "auto-converge", "state", t->live), NULL);
    vmc_ctx_clear(ctx);
    qmp_exec(ctx, d->q, "closefd", json_pack("{s:s}", "fdname", "vmckpt-save"), NULL);
    vmc_ctx_clear(ctx);
    if ((rc = qmp_exec_fd(ctx, d->q, "getfd", json_pack("{s:s}", "fdname",
                                                   "vmckpt-save"), fd, NULL)) < 0)
        return rc;
    qmp_clear_events(d->q);
    return qmp_exec(ctx, d->q, "migrate", json_pack("{s:s}", "uri", "fd:vmckpt-save"),
                    NULL);
}

/* Polls query-migrate until a final state; 1 = completed.  Callers come
 * when the stream has ended and completion is near: poll after 1 ms, then
 * back off to every 10 ms. */
static int migrate_poll(struct vmc_ctx *ctx, struct vmc_dom *d, int timeout_s,
                        const char *what)
{
    uint64_t deadline = vmc_now_ns() + (uint64_t)timeout_s * 1000000000u;
    useconds_t pause = 1000;

    for (;;) {
        json_t *r;
        const char *st;
        int rc;

        if ((rc = qmp_exec(ctx, d->q, "query-migrate", NULL, &r)) < 0)
            return rc;
        st = json_string_value(json_object_get(r, "status"));
        if (st && !strcmp(st, "completed")) {
            json_decref(r);
            return 1;
        }
        if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            const char *desc = json_string_value(json_object_get(r, "error-desc"));
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "qemu %s %s%s%s", what, st,
                               desc ? ": " : "", desc ? desc : "");
            json_decref(r);
            return rc;
        }
        json_decref(r);
        if (vmc_now_ns() > deadline)
            return vmc_set_error(ctx, VMC_E_BACKEND, "qemu %s: still %s after "
                                 "%d s", what, st ? st : "pending", timeout_s);
        usleep(pause);
        if (pause < 10000)
            pause *= 2;
    }
}

static int qemu_save_wait(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *stop)
{
    const struct qmp_event *e;
    int rc = migrate_poll(ctx, d, 600, "migration");

    *stop = 0;
    if (rc < 0)
        return rc;
    e = qmp_find_event(d->q, "STOP", 1);
    if (e)
        *stop = e->ts_us;
    return 0;
}

static int qemu_save_poll(struct vmc_ctx *ctx, struct vmc_dom *d,
                          uint64_t *transferred, uint32_t *round)
{
    json_t *r, *ram;
    int rc;

    *transferred = 0;
    *round = 0;
    if ((rc = qemu_qmp(ctx, d)) < 0 ||
        (rc = qmp_exec(ctx, d->q, "query-migrate", NULL, &r)) < 0)
        return rc;
    ram = json_object_get(r, "ram");
    *transferred = (uint64_t)json_integer_value(json_object_get(ram, "transferred"));
    *round = (uint32_t)json_integer_value(json_object_get(ram, "dirty-sync-count"));
    json_decref(r);
    return 0;
}

static void qemu_save_cancel(struct vmc_dom *d)
{
    struct vmc_ctx tmp = { 0 };

    if (qemu_qmp(&tmp, d) < 0)
        return;
    qmp_exec(&tmp, d->q, "migrate_cancel", NULL, NULL);
    for (int i = 0; i < 500; i++) {          /* up to 5 s */
        json_t *r;
        const char *st;
        if (qmp_exec(&tmp, d->q, "query-migrate", NULL, &r) < 0)
            return;
        st = json_string_value(json_object_get(r, "status"));
        if (!st || (strcmp(st, "active") && strcmp(st, "cancelling") &&
                    strcmp(st, "setup") && strcmp(st, "device") &&
                    strcmp(st, "pre-switchover"))) {
            json_decref(r);
            return;
        }
        json_decref(r);
        usleep(10000);
    }
}

/* Destroying is pulling the plug: every write the guest completed stays
 * on its disks, so the overlays of a checkpoint under way (or of a killed
 * one) are merged back first; should that fail, an overlay stays in the
 * domain's directory with domain.json (qemu_rmdir_all), not lost. */
static int qemu_destroy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    struct vmc_ctx tmp = { 0 };

    (void)ctx;
    if (qemu_qmp(&tmp, d) == 0) {
        qemu_view_release(&tmp, d);
        qmp_exec(&tmp, d->q, "quit", NULL, NULL);
    }
    qmp_close(d->q);
    d->q = NULL;
    if (qemu_pid_alive(d->pid))
        kill(d->pid, SIGTERM);
    qemu_kill_and_wait(d->pid);
    qemu_rmdir_all(d->dir);
    return 0;
}

/* ---- restore ---------------------------------------------------------- */

struct clash { const uint8_t *uuid; const char *name; int id; int what; int skip; };

/* Is another process holding domain id's save lock? */
static int qemu_saving(int id)
{
    char dir[600];
    int fd, rc;

    snprintf(dir, sizeof(dir), "%s/%d", vmc_qemu_rundir(), id);
    if ((rc = qemu_lock_instance(dir, 0, &fd)) == 0)
        close(fd);
    return rc == VMC_E_EXISTS;
}

static int clash_fn(struct vmc_dom *d, void *arg)
{
    struct clash *c = arg;

    if (d->id == c->skip)
        return 0;
    if (c->name && !strcmp(d->name, c->name)) {
        c->id = d->id;
        return c->what = VMC_FIND_NAME;
    }
    if (c->uuid && !memcmp(d->uuid, c->uuid, 16)) {
        c->id = d->id;
        return c->what = VMC_FIND_UUID;
    }
    return 0;
}

static int qemu_find(struct vmc_ctx *ctx, const char *name, const uint8_t *uuid,
                     int skip, int *id, int *what)
{
    struct clash c = { uuid, name, 0, VMC_FIND_NONE, skip };
    int rc = qemu_each(ctx, clash_fn, &c);

    *id = c.id;
    *what = c.what;
    return rc < 0 ? rc : 0;
}

static int qemu_restore_start(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                              uint32_t fmt, const uint8_t *cfgb, size_t cfg_len,
                              const struct vmc_restore_as *as, int fd,
                              struct vmc_dom **out)
{
    static const char *extra[] = { "-incoming", "defer", "-S", NULL };
    struct vmc_dom *d = NULL;
    json_error_t je;
    json_t *cfg;
    char u[37];
    int rc;

    (void)m;
    *out = NULL;
    if (fmt != VMC_CFG_QEMU_JSON)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED,
                             "DOMAIN_CONFIG format %u is not QEMU's", fmt);
    cfg = json_loadb((const char *)cfgb, cfg_len, 0, &je);
    if (!cfg || !json_is_array(json_object_get(cfg, "argv")))
        return vmc_set_error(ctx, VMC_E_FORMAT, "DOMAIN_CONFIG: bad QEMU JSON: "
                             "%s", cfg ? "no argv" : je.text);
    if (!(d = calloc(1, sizeof(*d)))) {
        json_decref(cfg);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    d->lock_fd = -1;
    d->cfg = cfg;
    memcpy(d->uuid, as->uuid, 16);
    snprintf(d->name, sizeof(d->name), "%s", as->build_name);
    qemu_uuid_fmt(u, d->uuid);
    json_object_set_new(d->cfg, "name", json_string(d->name));
    json_object_set_new(d->cfg, "uuid", json_string(u));
    {   /* the binary and directory are this host's: record what runs */
        char cwd[4096];
        json_object_set_new(d->cfg, "qemu", json_string(qemu_binary()));
        if (getcwd(cwd, sizeof(cwd)))
            json_object_set_new(d->cfg, "cwd", json_string(cwd));
        else
            json_object_del(d->cfg, "cwd");
    }
    if ((rc = qemu_alloc_dir(ctx, d)) < 0)
        goto fail;
    if (as->known)
        as->known(as->known_arg, d->id);
    if ((rc = qemu_launch(ctx, d, extra)) < 0)
        goto fail_dir;
    if ((rc = qmp_exec_fd(ctx, d->q, "getfd", json_pack("{s:s}", "fdname",
                                                   "vmckpt-restore"), fd,
                          NULL)) < 0 ||
        (rc = qmp_exec(ctx, d->q, "migrate-incoming",
                       json_pack("{s:s}", "uri", "fd:vmckpt-restore"), NULL)) < 0)
        goto fail_dir;
    *out = d;
    return 0;
fail_dir:
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        qemu_kill_and_wait(d->pid);
    }
    qemu_rmdir_all(d->dir);
fail:
    qemu_dom_free(d);
    return rc;
}

static int qemu_restore_wait(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    char line[512];
    int rc = migrate_poll(ctx, d, 600, "incoming migration");

    /* A QEMU that refuses a stream exits; its QMP socket may close a
     * moment before the process is gone.  Give it 2 s to say why. */
    for (int i = 0; rc < 0 && i < 200 && qemu_pid_alive(d->pid); i++) {
        waitpid(d->pid, NULL, WNOHANG);
        usleep(10000);
    }
    if (rc < 0 && !qemu_pid_alive(d->pid)) {
        qemu_last_log_line(d->dir, line, sizeof(line));
        vmc_ctx_clear(ctx);
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "qemu refused the stream: %s",
                           line[0] ? line : "(exited)");
    }
    return rc < 0 ? rc : 0;
}

/* QEMU fixes -name at qemu_launch; the engine never asks (no VMC_BE_UNIQUE_NAMES). */
static int qemu_rename(struct vmc_ctx *ctx, struct vmc_dom *d, const char *name)
{
    (void)d;
    return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "QEMU cannot rename a "
                         "running instance (to %s)", name);
}

static void qemu_restore_abort(struct vmc_dom *d)
{
    if (!d)
        return;
    qmp_close(d->q);
    d->q = NULL;
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        qemu_kill_and_wait(d->pid);
    }
    qemu_rmdir_all(d->dir);
}

/* ---- console, death ------------------------------------------------ */

static int qemu_console_open(struct vmc_ctx *ctx, struct vmc_dom *d, int *fd)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(d->dir) + 14 >= sizeof(sa.sun_path))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: path too long", d->dir);
    memcpy(sa.sun_path, d->dir, strlen(d->dir));
    strcat(sa.sun_path, "/console.sock");
    *fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0 || connect(*fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        errno = e;
        return vmc_set_error(ctx, VMC_E_BACKEND, "%s: %s", sa.sun_path,
                             strerror(errno));
    }
    return 0;
}

/* Copies the last `max` bytes of DIR/name into ev, under a heading. */
static void tail_into(FILE *ev, const char *dir, const char *name, long max)
{
    char p[700], buf[4096];
    FILE *f;
    size_t n;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    if (!(f = fopen(p, "r")))
        return;
    fprintf(ev, "\n---- %s (last %ld bytes)\n", p, max);
    if (fseek(f, -max, SEEK_END) < 0)
        rewind(f);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, ev);
    fclose(f);
}

/* A failed save that could not resume: did the guest die?  Its QEMU
 * exited (a crash, a guest that triple-faulted with -no-reboot), or QEMU
 * reports a panicked guest or an internal error. */
static int qemu_died(struct vmc_dom *d, char *why, size_t n, FILE *ev)
{
    struct vmc_ctx tmp = { 0 };
    char st[64] = "", last[400];

    why[0] = '\0';
    if (qemu_pid_ours(d->pid, d->dir)) {
        if (qemu_query_status(&tmp, d, st, sizeof(st)) < 0)
            return 0;                 /* alive; its state is unknown */
        fprintf(ev, "QEMU pid %d: status %s\n", (int)d->pid, st);
        if (strcmp(st, "guest-panicked") && strcmp(st, "internal-error") &&
            strcmp(st, "shutdown"))
            return 0;
        snprintf(why, n, "QEMU: guest status %s", st);
    } else {
        qemu_last_log_line(d->dir, last, sizeof(last));
        fprintf(ev, "QEMU pid %d: exited\n", (int)d->pid);
        snprintf(why, n, "QEMU exited%s%s", last[0] ? ": " : "", last);
    }
    tail_into(ev, d->dir, "qemu.log", 8192);
    tail_into(ev, d->dir, "console.log", 8192);
    return 1;
}

/* ---- the table --------------------------------------------------------- */

/* QEMU runs anywhere (TCG when there is no KVM). */
static int qemu_probe(void)
{
    return 1;
}

const struct vmc_backend vmc_backend_qemu = {
    .name = "qemu",
    .id = VMC_BACKEND_QEMU,
    .flags = 0,
    .probe = qemu_probe,
    .open = qemu_open,
    .close = qemu_dom_free,
    .domid = qemu_domid,
    .name_of = qemu_name,
    .find = qemu_find,
    .saving = qemu_saving,
    .describe = qemu_describe,
    .is_running = qemu_is_running,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .save_start = qemu_save_start,
    .stop_copy = qemu_stop_copy,
    .save_wait = qemu_save_wait,
    .save_poll = qemu_save_poll,
    .save_cancel = qemu_save_cancel,
    .view_prepare = qemu_view_prepare,
    .view_take = qemu_view_take,
    .view_release = qemu_view_release,
    .destroy = qemu_destroy,
    .config_check = vmc_config_check,
    .restore_start = qemu_restore_start,
    .restore_wait = qemu_restore_wait,
    .rename = qemu_rename,
    .restore_abort = qemu_restore_abort,
    .console_open = qemu_console_open,
    .died = qemu_died,
};
