/*
 * qemu.c - the QEMU/KVM backend: managed QEMU instances driven over QMP.
 *
 * Registry: $VMCKPT_RUNDIR (default /run/vmckpt as root, else
 * $XDG_RUNTIME_DIR/vmckpt) holds one directory per instance, named by its
 * numeric domain id (allocated increasing, like Xen domids):
 *   domain.json  name, uuid, id, the QEMU argv given by the user
 *   qmp.sock     QMP;  console.sock  serial console;  console.log  its log
 *   qemu.pid     qemu.log (QEMU's stdout/stderr)   lock (save lock)
 * Save: `stop` (unless live) + getfd + `migrate fd:`.  Restore: relaunch
 * the recorded argv with `-incoming defer -S`, getfd + `migrate-incoming`,
 * and `cont` only after the engine has authenticated the whole image.
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

#include <sodium.h>

#include "backend.h"
#include "qmp.h"

struct vmc_dom {
    int id;
    char dir[512];
    char name[256];
    uint8_t uuid[16];
    pid_t pid;
    int lock_fd;
    json_t *cfg;              /* domain.json */
    struct qmp *q;
};

/* ---- registry ----------------------------------------------------------- */

/* The QEMU registry owns the run directory's numbered entries. */
const char *vmc_qemu_rundir(void)
{
    return vmc_rundir();
}

/* The registry must be ours and not writable by others: another user who
 * created it first could otherwise plant sockets and pid files. */
static int rundir_safe(struct vmc_ctx *ctx)
{
    const char *r = vmc_qemu_rundir();
    struct stat st;

    if (lstat(r, &st) < 0)
        return errno == ENOENT ? 0 : vmc_set_error(ctx, VMC_E_IO, "%s: %s", r,
                                                   strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: registry directory not "
                             "owned by us or writable by others: refusing", r);
    return 0;
}

static int ensure_rundir(struct vmc_ctx *ctx)
{
    const char *r = vmc_qemu_rundir();

    if (mkdir(r, 0700) < 0 && errno != EEXIST)
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", r, strerror(errno));
    return rundir_safe(ctx);
}

static void uuid_fmt(char out[37], const uint8_t u[16])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
}

static int uuid_parse(const char *s, uint8_t u[16])
{
    int n = 0;

    for (; *s && n < 32; s++) {
        int v;
        if (*s == '-')
            continue;
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            v = *s - 'A' + 10;
        else
            return -1;
        if (n % 2 == 0)
            u[n / 2] = (uint8_t)(v << 4);
        else
            u[n / 2] |= (uint8_t)v;
        n++;
    }
    return n == 32 && !*s ? 0 : -1;
}

static pid_t read_pid(const char *dir)
{
    char p[600], b[32] = "";
    FILE *f;

    snprintf(p, sizeof(p), "%s/qemu.pid", dir);
    if (!(f = fopen(p, "r")))
        return 0;
    if (!fgets(b, sizeof(b), f))
        b[0] = '\0';
    fclose(f);
    return (pid_t)atoi(b);
}

/* Alive and not a zombie (our parent may not reap it promptly). */
static int pid_alive(pid_t pid);

/* Is pid the QEMU of instance dir (and not a recycled pid)? */
static int qemu_pid_ours(pid_t pid, const char *dir)
{
    char p[64], buf[8192];
    size_t n = 0;
    FILE *f;

    if (!pid_alive(pid))
        return 0;
    snprintf(p, sizeof(p), "/proc/%d/cmdline", (int)pid);
    if (!(f = fopen(p, "r")))
        return 1;                   /* no /proc: trust the pid file */
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!buf[i])
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, dir) != NULL;
}

static int pid_alive(pid_t pid)
{
    char p[64], st[512];
    FILE *f;
    char *c;

    if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
        return 0;
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    if (!(f = fopen(p, "r")))
        return 1;
    c = fgets(st, sizeof(st), f) ? strrchr(st, ')') : NULL;
    fclose(f);
    return !(c && c[1] == ' ' && (c[2] == 'Z' || c[2] == 'X'));
}

/* Loads RUNDIR/<id> into d; 0 if a live instance, negative otherwise. */
static int load_dom(struct vmc_ctx *ctx, int id, struct vmc_dom *d)
{
    char p[600];
    json_error_t je;
    const char *name, *uuid;

    memset(d, 0, sizeof(*d));
    d->lock_fd = -1;
    d->id = id;
    snprintf(d->dir, sizeof(d->dir), "%s/%d", vmc_qemu_rundir(), id);
    snprintf(p, sizeof(p), "%s/domain.json", d->dir);
    d->cfg = json_load_file(p, 0, &je);
    if (!d->cfg)
        return vmc_set_error(ctx, VMC_E_BACKEND, "%s: %s", p, je.text);
    name = json_string_value(json_object_get(d->cfg, "name"));
    uuid = json_string_value(json_object_get(d->cfg, "uuid"));
    if (!name || !uuid || uuid_parse(uuid, d->uuid) < 0) {
        json_decref(d->cfg);
        d->cfg = NULL;
        return vmc_set_error(ctx, VMC_E_BACKEND, "%s: no name or uuid", p);
    }
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->pid = read_pid(d->dir);
    if (!qemu_pid_ours(d->pid, d->dir)) {
        json_decref(d->cfg);
        d->cfg = NULL;
        return d->pid > 0 ? 1 : VMC_E_BACKEND;    /* 1: QEMU is gone */
    }
    return 0;
}

static void rmdir_all(const char *dir);

/* Takes an instance's lock (DIR/lock, flock(2)) without waiting: the
 * creator of an instance, vmsave and vmctl destroy hold it.  Returns the
 * locked fd, or -errno: -ENOENT without a lock file (create = 0),
 * -EWOULDBLOCK while another process holds it. */
static int lock_instance(const char *dir, int create)
{
    char p[600];
    int fd, e;

    snprintf(p, sizeof(p), "%s/lock", dir);
    if ((fd = open(p, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600)) < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* An instance whose QEMU exited on its own (a guest that powered off or
 * panicked, a QEMU that crashed) is only litter, but its last words are
 * not: console.log and qemu.log move to RUNDIR/.exited/ as
 * <UTC time>-<id>-<name>.{console,qemu}.log, and only the newest
 * EXITED_KEEP files stay there. */
#define EXITED_KEEP 32

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int log_file(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && !strcmp(e->d_name + n - 4, ".log");
}

static void keep_exited_logs(const struct vmc_dom *d)
{
    static const char *logs[][2] = { { "console.log", "console" },
                                     { "qemu.log", "qemu" } };
    char dir[600], from[700], to[1200], stem[128];
    struct dirent **ents;
    int n;

    snprintf(dir, sizeof(dir), "%s/.exited", vmc_qemu_rundir());
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return;
    log_stem(stem, sizeof(stem), d->id, d->name);
    for (size_t i = 0; i < sizeof(logs) / sizeof(logs[0]); i++) {
        struct stat st;
        snprintf(from, sizeof(from), "%s/%s", d->dir, logs[i][0]);
        if (stat(from, &st) < 0 || st.st_size == 0)
            continue;
        snprintf(to, sizeof(to), "%s/%s.%s.log", dir, stem, logs[i][1]);
        if (rename(from, to) < 0) {
            /* best effort: the directory goes anyway */
        }
    }
    if ((n = scandir(dir, &ents, log_file, name_cmp)) < 0)
        return;
    for (int i = 0; i < n; i++) {
        if (i < n - EXITED_KEEP) {
            snprintf(to, sizeof(to), "%s/%s", dir, ents[i]->d_name);
            unlink(to);
        }
        free(ents[i]);
    }
    free(ents);
}

/* Calls fn for every live instance; stops when fn returns non-zero. */
static int each_dom(struct vmc_ctx *ctx, int (*fn)(struct vmc_dom *, void *),
                    void *arg)
{
    DIR *dir;
    struct dirent *e;
    int rc = 0;

    if ((rc = rundir_safe(ctx)) < 0)
        return rc;                  /* never trust a registry others write */
    if (!(dir = opendir(vmc_qemu_rundir())))
        return 0;
    while (!rc && (e = readdir(dir))) {
        struct vmc_dom d;
        char *end;
        long id = strtol(e->d_name, &end, 10);
        if (*end || id <= 0 || end == e->d_name)
            continue;
        switch (load_dom(ctx, (int)id, &d)) {
        case 0:
            rc = fn(&d, arg);
            json_decref(d.cfg);
            break;
        case 1: {                   /* QEMU died (or a killed restore): */
            int lfd = lock_instance(d.dir, 0);  /* its directory is only */
            if (lfd == -EWOULDBLOCK)            /* litter, unless its */
                break;                          /* creator still holds it */
            keep_exited_logs(&d);
            rmdir_all(d.dir);
            if (lfd >= 0)
                close(lfd);
            break;
        }
        }
    }
    closedir(dir);
    vmc_ctx_clear(ctx);
    return rc;
}

struct find { const char *spec; int id; uint8_t uuid[16]; int by_uuid; };

static int find_fn(struct vmc_dom *d, void *arg)
{
    struct find *f = arg;
    char *end;
    long id = strtol(f->spec, &end, 10);

    if (f->by_uuid)
        return !memcmp(d->uuid, f->uuid, 16) ? (f->id = d->id) : 0;
    if ((!*end && id == d->id) || !strcmp(f->spec, d->name))
        return f->id = d->id;
    return 0;
}

static void rmdir_all(const char *dir)
{
    static const char *files[] = { "domain.json", "qmp.sock", "console.sock",
                                    "console.log", "qemu.pid", "qemu.log",
                                    "lock", NULL };
    char p[600];

    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void dom_free(struct vmc_dom *d)
{
    if (!d)
        return;
    qmp_close(d->q);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    json_decref(d->cfg);
    free(d);
}

static int qmp_of(struct vmc_ctx *ctx, struct vmc_dom *d)
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
    if ((rc = each_dom(ctx, find_fn, &f)) < 0)
        return rc;
    if (!rc)
        return vmc_set_error(ctx, VMC_E_INVAL, "no such domain (see vmctl list)");
    if (!(d = calloc(1, sizeof(*d))))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if ((rc = load_dom(ctx, f.id, d)) != 0) {
        free(d);
        return vmc_set_error(ctx, VMC_E_INVAL, "domain went away");
    }
    d->lock_fd = -1;
    if (lock && (d->lock_fd = lock_instance(d->dir, 1)) < 0) {
        d->lock_fd = -1;
        rc = vmc_set_error(ctx, VMC_E_EXISTS,
                           "another vmckpt operation holds the domain lock");
        dom_free(d);
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

static int query_status(struct vmc_ctx *ctx, struct vmc_dom *d, char *st,
                        size_t cap)
{
    json_t *r;
    int rc;

    if ((rc = qmp_of(ctx, d)) < 0 || (rc = qmp_exec(d->q, "query-status", NULL,
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
    int rc = query_status(ctx, d, st, sizeof(st));

    *running = rc == 0 && !strcmp(st, "running");
    return rc;
}

static int qemu_pause(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall)
{
    int rc;

    if ((rc = qmp_of(ctx, d)) < 0)
        return rc;
    qmp_clear_events(d->q);
    if ((rc = qmp_exec(d->q, "stop", NULL, NULL)) < 0)
        return rc;
    if (wall) {
        const struct qmp_event *e;
        qmp_wait_event(d->q, "STOP", 2000, NULL);
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

    if ((rc = qmp_of(ctx, d)) < 0)
        return rc;
    qmp_clear_events(d->q);
    if ((rc = qmp_exec(d->q, "cont", NULL, NULL)) < 0)
        return rc;
    if (wall) {
        const struct qmp_event *e;
        if (qmp_wait_event(d->q, "RESUME", 2000, NULL) < 0)
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
    if ((rc = qmp_of(ctx, d)) < 0)
        return rc;
    snprintf(m->name, sizeof(m->name), "%s", d->name);
    memcpy(m->uuid, d->uuid, 16);
    m->backend = VMC_BACKEND_QEMU;
    m->stream_format = VMC_SFMT_QEMU;
    if (qmp_exec(d->q, "query-version", NULL, &r) == 0) {
        json_t *q = json_object_get(r, "qemu");
        snprintf(m->backend_version, sizeof(m->backend_version),
                 "QEMU %lld.%lld.%lld (%s)",
                 (long long)json_integer_value(json_object_get(q, "major")),
                 (long long)json_integer_value(json_object_get(q, "minor")),
                 (long long)json_integer_value(json_object_get(q, "micro")),
                 json_string_value(json_object_get(r, "package")) ?: "");
        json_decref(r);
    }
    if (qmp_exec(d->q, "query-memory-size-summary", NULL, &r) == 0) {
        m->memory_kib = (uint64_t)json_integer_value(
                            json_object_get(r, "base-memory")) / 1024;
        json_decref(r);
    }
    if (qmp_exec(d->q, "query-cpus-fast", NULL, &r) == 0) {
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
    int rc;

    if ((rc = qmp_of(ctx, d)) < 0)
        return rc;
    /* QEMU throttles even a stopped VM's save to 32 MiB/s by default. */
    args = json_pack("{s:I, s:I}", "max-bandwidth",
                     (json_int_t)(t->max_bandwidth ? t->max_bandwidth
                                                   : (uint64_t)1 << 40),
                     "downtime-limit",
                     (json_int_t)(t->max_downtime_ms ? t->max_downtime_ms
                                                     : t->live ? 300 : 2000));
    if ((rc = qmp_exec(d->q, "migrate-set-parameters", args, NULL)) < 0)
        return rc;
    /* Live: throttle a guest that dirties memory faster than it is sent. */
    qmp_exec(d->q, "migrate-set-capabilities",
             json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                       "auto-converge", "state", t->live), NULL);
    vmc_ctx_clear(ctx);
    qmp_exec(d->q, "closefd", json_pack("{s:s}", "fdname", "vmckpt-save"), NULL);
    vmc_ctx_clear(ctx);
    if ((rc = qmp_exec_fd(d->q, "getfd", json_pack("{s:s}", "fdname",
                                                   "vmckpt-save"), fd, NULL)) < 0)
        return rc;
    qmp_clear_events(d->q);
    return qmp_exec(d->q, "migrate", json_pack("{s:s}", "uri", "fd:vmckpt-save"),
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

        if ((rc = qmp_exec(d->q, "query-migrate", NULL, &r)) < 0)
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
    if ((rc = qmp_of(ctx, d)) < 0 ||
        (rc = qmp_exec(d->q, "query-migrate", NULL, &r)) < 0)
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

    if (qmp_of(&tmp, d) < 0)
        return;
    qmp_exec(d->q, "migrate_cancel", NULL, NULL);
    for (int i = 0; i < 500; i++) {          /* up to 5 s */
        json_t *r;
        const char *st;
        if (qmp_exec(d->q, "query-migrate", NULL, &r) < 0)
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

static void kill_and_wait(pid_t pid)
{
    for (int i = 0; i < 300 && pid_alive(pid); i++) {   /* 3 s grace */
        waitpid(pid, NULL, WNOHANG);
        usleep(10000);
    }
    if (pid_alive(pid)) {
        kill(pid, SIGKILL);
        for (int i = 0; i < 300 && pid_alive(pid); i++) {
            waitpid(pid, NULL, WNOHANG);
            usleep(10000);
        }
    }
}

static int qemu_destroy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    struct vmc_ctx tmp = { 0 };

    (void)ctx;
    if (qmp_of(&tmp, d) == 0)
        qmp_exec(d->q, "quit", NULL, NULL);
    qmp_close(d->q);
    d->q = NULL;
    if (pid_alive(d->pid))
        kill(d->pid, SIGTERM);
    kill_and_wait(d->pid);
    rmdir_all(d->dir);
    return 0;
}

/* ---- launching --------------------------------------------------------- */

static const char *qemu_binary(void)
{
    const char *e = getenv("VMCKPT_QEMU");

    return e && *e ? e : "qemu-system-x86_64";
}

/* Last non-empty line of qemu.log, for error messages. */
static void last_log_line(const char *dir, char *out, size_t cap)
{
    char p[600], line[512];
    FILE *f;

    out[0] = '\0';
    snprintf(p, sizeof(p), "%s/qemu.log", dir);
    if (!(f = fopen(p, "r")))
        return;
    while (fgets(line, sizeof(line), f)) {
        size_t l = strcspn(line, "\r\n");
        line[l] = '\0';
        if (l)
            snprintf(out, cap, "%s", line);
    }
    fclose(f);
}

/* Allocates the next id under the registry lock and creates its dir. */
static int alloc_dir(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    char p[600];
    int lfd, rc = 0, next = 1;
    DIR *dir;
    struct dirent *e;
    FILE *f;

    if ((rc = ensure_rundir(ctx)) < 0)
        return rc;
    snprintf(p, sizeof(p), "%s/.lock", vmc_qemu_rundir());
    lfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", p, strerror(errno));
        goto out;
    }
    snprintf(p, sizeof(p), "%s/.last-id", vmc_qemu_rundir());
    if ((f = fopen(p, "r"))) {
        if (fscanf(f, "%d", &next) == 1)
            next++;
        fclose(f);
    }
    if ((dir = opendir(vmc_qemu_rundir()))) {
        while ((e = readdir(dir))) {
            int id = atoi(e->d_name);
            if (id >= next)
                next = id + 1;
        }
        closedir(dir);
    }
    if ((f = fopen(p, "w"))) {
        fprintf(f, "%d\n", next);
        fclose(f);
    }
    d->id = next;
    snprintf(d->dir, sizeof(d->dir), "%s/%d", vmc_qemu_rundir(), next);
    if (mkdir(d->dir, 0700) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", d->dir, strerror(errno));
        goto out;
    }
    /* The creator holds the instance's lock until it lets go of it: a
     * reaper in another process must not take an instance whose QEMU is
     * not exec'd yet (its pid file names a process that is still us) for
     * a dead one. */
    if ((d->lock_fd = lock_instance(d->dir, 1)) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s/lock: %s", d->dir,
                           strerror(-d->lock_fd));
        d->lock_fd = -1;
    }
out:
    if (lfd >= 0)
        close(lfd);
    return rc;
}

/* Writes domain.json and starts QEMU (setsid, logs to qemu.log); waits for
 * QMP.  extra: NULL-terminated args appended (restore: -incoming...). */
static int launch(struct vmc_ctx *ctx, struct vmc_dom *d, const char **extra)
{
    json_t *argv = json_object_get(d->cfg, "argv");
    size_t n = json_array_size(argv), k = 0;
    const char **av = calloc(n + 32, sizeof(char *));
    char qmp[700], chr[1400], uuid[37], p[600], line[512];
    pid_t pid;
    int rc = 0;

    if (!av)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    snprintf(p, sizeof(p), "%s/domain.json", d->dir);
    json_object_set_new(d->cfg, "id", json_integer(d->id));
    if (json_dump_file(d->cfg, p, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: cannot write", p);
        goto out;
    }
    uuid_fmt(uuid, d->uuid);
    snprintf(qmp, sizeof(qmp), "unix:%s/qmp.sock,server=on,wait=off", d->dir);
    snprintf(chr, sizeof(chr), "socket,id=vmckpt-console,path=%s/console.sock,"
             "server=on,wait=off,logfile=%s/console.log,logappend=on",
             d->dir, d->dir);
    av[k++] = json_string_value(json_object_get(d->cfg, "qemu")) ?: qemu_binary();
    for (size_t i = 0; i < n; i++)
        av[k++] = json_string_value(json_array_get(argv, i));
    av[k++] = "-name";
    av[k++] = d->name;
    av[k++] = "-uuid";
    av[k++] = uuid;
    av[k++] = "-qmp";
    av[k++] = qmp;
    av[k++] = "-chardev";
    av[k++] = chr;
    av[k++] = "-serial";
    av[k++] = "chardev:vmckpt-console";
    for (int i = 0; extra && extra[i]; i++)
        av[k++] = extra[i];
    av[k] = NULL;
    for (size_t i = 0; i < k; i++)
        if (!av[i]) {
            rc = vmc_set_error(ctx, VMC_E_INVAL, "domain config: argv holds a "
                               "non-string");
            goto out;
        }
    snprintf(p, sizeof(p), "%s/qemu.log", d->dir);
    pid = fork();
    if (pid < 0) {
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY), log = open(p, O_WRONLY | O_CREAT |
                                                          O_APPEND, 0600);
        const char *cwd = json_string_value(json_object_get(d->cfg, "cwd"));
        setsid();
        signal(SIGPIPE, SIG_IGN);   /* a dead reader is an error, not death */
        if (cwd && chdir(cwd) < 0) {
            /* relative paths in argv will then fail, visibly, in qemu.log */
        }
        dup2(nul, 0);
        dup2(log, 1);
        dup2(log, 2);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execvp(av[0], (char *const *)av);
        dprintf(2, "vmckpt: cannot run %s: %s\n", av[0], strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    snprintf(p, sizeof(p), "%s/qemu.pid", d->dir);
    {
        FILE *f = fopen(p, "w");
        if (f) {
            fprintf(f, "%d\n", (int)pid);
            fclose(f);
        }
    }
    snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
    for (int i = 0; i < 15000; i++) {                 /* 30 s */
        struct stat st;
        if (stat(p, &st) == 0)
            break;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            last_log_line(d->dir, line, sizeof(line));
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "qemu exited at start: %s",
                               line[0] ? line : "(no output)");
            goto out;
        }
        usleep(2000);
    }
    /* QMP answers once QEMU has initialised; it may also die first. */
    for (int i = 0; i < 150; i++) {
        struct vmc_ctx tmp = { 0 };
        snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
        if ((rc = qmp_connect(&tmp, p, 200, &d->q)) == 0)
            break;
        waitpid(pid, NULL, WNOHANG);
        if (!pid_alive(pid) || i == 149) {
            last_log_line(d->dir, line, sizeof(line));
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "QEMU failed: %s",
                               line[0] ? line : vmc_ctx_error(&tmp));
            break;
        }
    }
out:
    free(av);
    return rc;
}

int vmc_qemu_start(struct vmc_ctx *ctx, const char *name, const char *uuid,
                   int argc, char **argv, int *domid)
{
    struct vmc_dom *d = calloc(1, sizeof(*d));
    struct find f = { .spec = name };
    json_t *av = json_array();
    char u[37];
    int rc;

    *domid = -1;
    if (!d || !av) {
        free(d);
        json_decref(av);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    d->lock_fd = -1;
    if (!*name || strlen(name) >= sizeof(d->name) || strspn(name, "0123456789") ==
        strlen(name)) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "bad domain name (empty, too long "
                           "or all digits)");
        goto fail;
    }
    if ((rc = each_dom(ctx, find_fn, &f)) < 0)
        goto fail;
    if (rc) {
        rc = vmc_set_error(ctx, VMC_E_EXISTS, "a domain with this name is "
                           "running (id %d)", f.id);
        goto fail;
    }
    if (uuid) {
        struct find fu = { .spec = "", .by_uuid = 1 };
        if (uuid_parse(uuid, fu.uuid) == 0 &&
            (rc = each_dom(ctx, find_fn, &fu)) < 0)
            goto fail;
        if (rc > 0) {
            rc = vmc_set_error(ctx, VMC_E_EXISTS, "domain %d runs with UUID %s",
                               fu.id, uuid);
            goto fail;
        }
    }
    snprintf(d->name, sizeof(d->name), "%s", name);
    if (uuid) {
        if (uuid_parse(uuid, d->uuid) < 0) {
            rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: not a UUID", uuid);
            goto fail;
        }
    } else {
        uuid_random(d->uuid);
    }
    for (int i = 0; i < argc; i++) {
        static const char *const managed[] = { "-daemonize", "-serial", "-qmp",
                                               "-pidfile", "-name", "-uuid",
                                               "-incoming", NULL };
        const char *a = argv[i][0] == '-' && argv[i][1] == '-' ? argv[i] + 1
                                                                : argv[i];
        for (int k = 0; managed[k]; k++)
            if (!strcmp(a, managed[k])) {
                rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: vmctl manages this "
                                   "QEMU option itself; leave it out", argv[i]);
                goto fail;
            }
        json_array_append_new(av, json_string(argv[i]));
    }
    uuid_fmt(u, d->uuid);
    {
        char cwd[4096];
        d->cfg = json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", d->name, "uuid",
                           u, "qemu", qemu_binary(), "argv", av, "cwd",
                           getcwd(cwd, sizeof(cwd)) ? cwd : "/");
    }
    av = NULL;
    if ((rc = alloc_dir(ctx, d)) < 0)
        goto fail;
    if ((rc = launch(ctx, d, NULL)) < 0) {
        if (d->pid > 0)
            kill(d->pid, SIGKILL), kill_and_wait(d->pid);
        rmdir_all(d->dir);
        goto fail;
    }
    *domid = d->id;
    dom_free(d);
    return 0;
fail:
    json_decref(av);
    dom_free(d);
    return rc;
}

/* ---- restore ---------------------------------------------------------- */

struct clash { const uint8_t *uuid; const char *name; int id; int what; int skip; };

/* Is another process holding domain id's save lock? */
static int qemu_saving(int id)
{
    char dir[600];
    int fd;

    snprintf(dir, sizeof(dir), "%s/%d", vmc_qemu_rundir(), id);
    if ((fd = lock_instance(dir, 0)) >= 0)
        close(fd);
    return fd == -EWOULDBLOCK;
}

static int clash_fn(struct vmc_dom *d, void *arg)
{
    struct clash *c = arg;

    if (d->id == c->skip)
        return 0;
    if (c->name && !strcmp(d->name, c->name)) {
        c->id = d->id;
        return c->what = 1;
    }
    if (c->uuid && !memcmp(d->uuid, c->uuid, 16)) {
        c->id = d->id;
        return c->what = 2;
    }
    return 0;
}

static int qemu_find(struct vmc_ctx *ctx, const char *name, const uint8_t *uuid,
                     int skip, int *id)
{
    struct clash c = { uuid, name, 0, 0, skip };
    int rc = each_dom(ctx, clash_fn, &c);

    *id = c.id;
    return rc < 0 ? rc : c.what;
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
    uuid_fmt(u, d->uuid);
    json_object_set_new(d->cfg, "name", json_string(d->name));
    json_object_set_new(d->cfg, "uuid", json_string(u));
    if (!json_string_value(json_object_get(d->cfg, "qemu")))
        json_object_set_new(d->cfg, "qemu", json_string(qemu_binary()));
    if ((rc = alloc_dir(ctx, d)) < 0)
        goto fail;
    if ((rc = launch(ctx, d, extra)) < 0)
        goto fail_dir;
    if ((rc = qmp_exec_fd(d->q, "getfd", json_pack("{s:s}", "fdname",
                                                   "vmckpt-restore"), fd,
                          NULL)) < 0 ||
        (rc = qmp_exec(d->q, "migrate-incoming",
                       json_pack("{s:s}", "uri", "fd:vmckpt-restore"), NULL)) < 0)
        goto fail_dir;
    *out = d;
    return 0;
fail_dir:
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        kill_and_wait(d->pid);
    }
    rmdir_all(d->dir);
fail:
    dom_free(d);
    return rc;
}

static int qemu_restore_wait(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    char line[512];
    int rc = migrate_poll(ctx, d, 600, "incoming migration");

    if (rc < 0 && !pid_alive(d->pid)) {
        last_log_line(d->dir, line, sizeof(line));
        vmc_ctx_clear(ctx);
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "qemu refused the stream: %s",
                           line[0] ? line : "(exited)");
    }
    return rc < 0 ? rc : 0;
}

/* QEMU fixes -name at launch; the engine never asks (no VMC_BE_UNIQUE_NAMES). */
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
        kill_and_wait(d->pid);
    }
    rmdir_all(d->dir);
}

/* ---- console, recovery --------------------------------------------- */

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
        if (query_status(&tmp, d, st, sizeof(st)) < 0)
            return 0;                 /* alive; its state is unknown */
        fprintf(ev, "QEMU pid %d: status %s\n", (int)d->pid, st);
        if (strcmp(st, "guest-panicked") && strcmp(st, "internal-error") &&
            strcmp(st, "shutdown"))
            return 0;
        snprintf(why, n, "QEMU: guest status %s", st);
    } else {
        last_log_line(d->dir, last, sizeof(last));
        fprintf(ev, "QEMU pid %d: exited\n", (int)d->pid);
        snprintf(why, n, "QEMU exited%s%s", last[0] ? ": " : "", last);
    }
    tail_into(ev, d->dir, "qemu.log", 8192);
    tail_into(ev, d->dir, "console.log", 8192);
    return 1;
}

static int qemu_recover(struct vmc_ctx *ctx, int domid)
{
    char spec[32];
    struct vmc_dom *d;
    int rc, running = 0;

    snprintf(spec, sizeof(spec), "%d", domid);
    if ((rc = qemu_open(ctx, spec, 0, &d)) < 0)
        return rc;
    qemu_save_cancel(d);
    if ((rc = qemu_is_running(ctx, d, &running)) == 0 && !running)
        rc = qemu_resume(ctx, d, NULL);
    dom_free(d);
    return rc;
}

/* ---- listing for vmctl --------------------------------------------- */

struct list_arg { vmc_qemu_list_fn fn; void *arg; struct vmc_ctx *ctx; };

static int list_fn(struct vmc_dom *d, void *arg)
{
    struct list_arg *la = arg;
    struct vmc_qemu_dom_info i;
    struct vmc_ctx tmp = { 0 };

    memset(&i, 0, sizeof(i));
    i.id = d->id;
    snprintf(i.name, sizeof(i.name), "%s", d->name);
    uuid_fmt(i.uuid, d->uuid);
    i.pid = (int)d->pid;
    snprintf(i.dir, sizeof(i.dir), "%s", d->dir);
    {
        char p[600];
        snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
        if (qmp_connect(&tmp, p, 300, &d->q) < 0 ||
            query_status(&tmp, d, i.state, sizeof(i.state)) < 0)
            snprintf(i.state, sizeof(i.state), "busy");
    }
    qmp_close(d->q);
    d->q = NULL;
    return la->fn(&i, la->arg);
}

int vmc_qemu_list(struct vmc_ctx *ctx, vmc_qemu_list_fn fn, void *arg)
{
    struct list_arg la = { fn, arg, ctx };

    return each_dom(ctx, list_fn, &la);
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
    .close = dom_free,
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
    .destroy = qemu_destroy,
    .restore_start = qemu_restore_start,
    .restore_wait = qemu_restore_wait,
    .rename = qemu_rename,
    .restore_abort = qemu_restore_abort,
    .console_open = qemu_console_open,
    .died = qemu_died,
    .recover = qemu_recover,
};
