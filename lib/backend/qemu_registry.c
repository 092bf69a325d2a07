/*
 * qemu_registry.c - the QEMU backend's registry of instances, and the
 * launcher behind `vmctl start` and a restore.
 *
 * Registry: the run directory (vmc_rundir(): $VMCKPT_RUNDIR, default
 * /run/vmckpt as root, else $XDG_RUNTIME_DIR/vmckpt) holds one directory
 * per instance, named by its numeric domain id (allocated increasing,
 * like Xen domids):
 *   domain.json  name, uuid, id, the QEMU argv given by the user
 *   qmp.sock     QMP;  console.sock  serial console;  console.log  its log
 *   qemu.pid     qemu.log (QEMU's stdout/stderr)   lock (save lock)
 * An instance whose QEMU is gone is litter: its logs are kept in .exited/
 * and its directory removed the next time anyone lists the registry.
 *
 * Owns: the registry's files, its locks and the QEMU processes it starts.
 * Must not: save or restore anything (qemu.c), or trust a registry
 * directory that another user could write.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemu.h"

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

void qemu_uuid_fmt(char out[37], const uint8_t u[16])
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
            return VMC_E_FORMAT;
        if (n % 2 == 0)
            u[n / 2] = (uint8_t)(v << 4);
        else
            u[n / 2] |= (uint8_t)v;
        n++;
    }
    return n == 32 && !*s ? 0 : VMC_E_FORMAT;
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
/* Is pid the QEMU of instance dir (and not a recycled pid)? */
int qemu_pid_ours(pid_t pid, const char *dir)
{
    char p[64], buf[8192];
    size_t n = 0;
    FILE *f;

    if (!qemu_pid_alive(pid))
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

int qemu_pid_alive(pid_t pid)
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

/* Loads RUNDIR/<id> into d: 0 with *live 1 for a running instance, or
 * *live 0 if its QEMU is gone or never started (d->cfg NULL: litter,
 * unless its creator still holds its lock: QEMU runs only once its pid
 * is on file, see qemu_launch); VMC_E_BACKEND if the directory is not an
 * instance (yet). */
int qemu_load(struct vmc_ctx *ctx, int id, struct vmc_dom *d, int *live)
{
    char p[600];
    json_error_t je;
    const char *name, *uuid;

    memset(d, 0, sizeof(*d));
    *live = 0;
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
        return 0;                       /* gone, or never started */
    }
    *live = 1;
    return 0;
}

/* Takes an instance's lock (DIR/lock, flock(2)) without waiting: the
 * creator of an instance, vmsave and vmctl destroy hold it.  0 with the
 * locked fd in *fd; VMC_E_EXISTS while another process holds it;
 * VMC_E_IO (errno kept: ENOENT without a lock file and create = 0). */
int qemu_lock_instance(const char *dir, int create, int *fd)
{
    char p[600];
    int e;

    snprintf(p, sizeof(p), "%s/lock", dir);
    if ((*fd = open(p, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600)) < 0)
        return VMC_E_IO;
    if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
        e = errno;
        close(*fd);
        *fd = -1;
        errno = e;
        return e == EWOULDBLOCK ? VMC_E_EXISTS : VMC_E_IO;
    }
    return 0;
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

static void reap_overlays(const struct vmc_dom *d);

/* Calls fn for every live instance; stops when fn returns non-zero. */
int qemu_each(struct vmc_ctx *ctx, int (*fn)(struct vmc_dom *, void *),
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
        struct vmc_ctx tmp = { 0 };     /* one unreadable entry is not */
        int live, lfd;                  /* the caller's error */
        if (qemu_load(&tmp, (int)id, &d, &live) < 0)
            continue;
        if (live) {
            rc = fn(&d, arg);
            json_decref(d.cfg);
            continue;
        }
        /* QEMU died (or a killed restore): its directory is only litter,
         * unless its creator still holds it */
        if (qemu_lock_instance(d.dir, 0, &lfd) == VMC_E_EXISTS)
            continue;
        reap_overlays(&d);
        keep_exited_logs(&d);
        qemu_rmdir_all(d.dir);
        json_decref(d.cfg);
        if (lfd >= 0)
            close(lfd);
    }
    closedir(dir);
    vmc_ctx_clear(ctx);
    return rc;
}


int qemu_find_fn(struct vmc_dom *d, void *arg)
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

/* Does dir hold a disk overlay (vmc-ov-J.qcow2, qemu_view.c)?  Until it
 * is merged it holds the guest's latest writes. */
static int overlay_left(const char *dir)
{
    DIR *dd = opendir(dir);
    struct dirent *e;
    int found = 0;

    while (dd && !found && (e = readdir(dd))) {
        size_t l = strlen(e->d_name);
        found = !strncmp(e->d_name, "vmc-ov-", 7) && l > 13 &&
                !strcmp(e->d_name + l - 6, ".qcow2");     /* not .merged */
    }
    if (dd)
        closedir(dd);
    return found;
}

/* The files of an instance, and the directory.  One that still holds a
 * disk overlay (an offline merge failed) keeps it, domain.json (which
 * disk it belongs above) and vmc-merge.failed (why), for the admin
 * (vmctl(1), THE REGISTRY). */
void qemu_rmdir_all(const char *dir)
{
    static const char *files[] = { "qmp.sock", "console.sock", "console.log",
                                    "qemu.pid", "lock", "qemu.log", NULL };
    static const char *kept[] = { "domain.json", "vmc-merge.failed", NULL };
    char p[700];
    DIR *dd;
    struct dirent *e;

    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    if (overlay_left(dir))
        return;
    for (int i = 0; kept[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, kept[i]);
        unlink(p);
    }
    if ((dd = opendir(dir))) {          /* stale overlays: merged */
        while ((e = readdir(dd))) {
            size_t l = strlen(e->d_name);
            if (!strncmp(e->d_name, "vmc-ov-", 7) && l > 7 &&
                !strcmp(e->d_name + l - 7, ".merged")) {
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                unlink(p);
            }
        }
        closedir(dd);
    }
    snprintf(p, sizeof(p), "%s/merge", dir);
    if (strcmp(dir + (strlen(dir) > 6 ? strlen(dir) - 6 : 0), "/merge"))
        qemu_rmdir_all(p);              /* an offline merge's QEMU */
    rmdir(dir);
}

/* The -drive pair of overlay j over disk di, for the merging QEMU. */
static int merge_drives(json_t *argv, const char *ov, int j,
                        const struct vmc_disk_info *di)
{
    char v[2 * PATH_MAX + 200];
    size_t l = (size_t)snprintf(v, sizeof(v), "file=");

    qemu_put_escaped(v, sizeof(v), &l, di->path);
    snprintf(v + l, sizeof(v) - l, ",if=none,id=vmc-bd-%d,node-name=vmc-base-%d,"
             "format=%s", j, j,
             di->source_format == VMC_DISK_FMT_QCOW2 ? "qcow2" : "raw");
    if (json_array_append_new(argv, json_string("-drive")) ||
        json_array_append_new(argv, json_string(v)))
        return VMC_E_NOMEM;
    l = (size_t)snprintf(v, sizeof(v), "file=");
    qemu_put_escaped(v, sizeof(v), &l, ov);
    snprintf(v + l, sizeof(v) - l, ",if=none,id=vmc-ovd-%d,node-name=vmc-ov-%d,"
             "format=qcow2,backing=vmc-base-%d", j, j, j);
    return json_array_append_new(argv, json_string("-drive")) ||
           json_array_append_new(argv, json_string(v)) ? VMC_E_NOMEM : 0;
}

/* QEMU died holding disk overlays (a checkpoint's copy was under way):
 * vmc-ov-J.qcow2 holds what the guest wrote since, over the J-th writable
 * disk of its config, and is never older than that disk (merge_complete
 * renames it the moment it goes stale), so committing it is exact.  A
 * QEMU of vmckpt's own does it, as unprivileged and sandboxed as any
 * (-machine none; the disk and the overlay opened here and passed in),
 * with the merge of qemu_view.c; then the overlays are gone. */
static int merge_offline(struct vmc_ctx *ctx, const struct vmc_dom *dead)
{
    struct vmc_disk_info *disks = calloc(VMC_DISK_MAX, sizeof(*disks));
    struct vmc_dom *h = calloc(1, sizeof(*h));
    json_t *argv = json_pack("[s,s,s,s,s]", "-machine", "none",
                             "-nodefaults", "-display", "none");
    int nd = 0, n = 0, rc = 0, w;
    char ov[600];
    json_t *cfg;
    pid_t old;

    snprintf(ov, sizeof(ov), "%s/domain.json", dead->dir);
    cfg = json_load_file(ov, 0, NULL);  /* qemu_load keeps a live one's */
    if (!disks || !h || !argv) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if (!cfg || qemu_config_disks(json_object_get(cfg, "argv"), disks,
                                  VMC_DISK_MAX, &nd) < 0) {
        rc = vmc_set_error(ctx, VMC_E_FORMAT, "%s/domain.json: unreadable, "
                           "or its -drive options do not parse", dead->dir);
        goto out;
    }
    for (int j = 0; j < VMC_DISK_MAX && rc == 0; j++) {
        const struct vmc_disk_info *di = NULL;
        snprintf(ov, sizeof(ov), "%s/vmc-ov-%d.qcow2", dead->dir, j);
        if (access(ov, F_OK) < 0)
            continue;
        w = -1;
        for (int i = 0; i < nd && !di; i++)
            if (!(disks[i].flags & VMC_DF_READONLY) && ++w == j)
                di = &disks[i];
        if (!di)
            rc = vmc_set_error(ctx, VMC_E_FORMAT, "%s: no writable disk %d "
                               "in domain.json to merge it into", ov, j);
        else if (n == 8)
            rc = vmc_set_error(ctx, VMC_E_LIMIT, "%s: more than 8 overlays "
                               "to merge at once", dead->dir);
        else if ((rc = merge_drives(argv, ov, j, di)) < 0)
            vmc_set_error(ctx, rc, "out of memory");
        n++;
    }
    if (rc < 0 || !n)
        goto out;
    h->id = dead->id;
    h->lock_fd = -1;
    h->ovdir = dead->dir;
    memcpy(h->uuid, dead->uuid, 16);
    snprintf(h->name, sizeof(h->name), "%.200s--merge", dead->name);
    snprintf(h->dir, sizeof(h->dir), "%.500s/merge", dead->dir);
    if (mkdir(h->dir, 0700) < 0 && errno != EEXIST) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", h->dir, strerror(errno));
        goto out;
    }
    if ((old = read_pid(h->dir)) > 0 && qemu_pid_ours(old, h->dir)) {
        kill(old, SIGKILL);             /* a merge whose vmckpt died */
        qemu_kill_and_wait(old);
    }
    h->cfg = json_pack("{s:O}", "argv", argv);
    if (!h->cfg) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = qemu_launch(ctx, h, NULL)) == 0)
        rc = qemu_view_release(ctx, h);
    if (h->q) {
        struct vmc_ctx tmp = { 0 };
        qmp_exec(&tmp, h->q, "quit", NULL, NULL);
        qmp_close(h->q);
        h->q = NULL;
    }
    if (h->pid > 0) {
        if (qemu_pid_alive(h->pid))
            kill(h->pid, SIGTERM);
        qemu_kill_and_wait(h->pid);
    }
    qemu_rmdir_all(h->dir);
out:
    json_decref(argv);
    json_decref(cfg);
    if (h)
        json_decref(h->cfg);
    free(h);
    free(disks);
    return rc;
}

/* A dead instance's overlays, merged offline unless that failed before
 * (vmc-merge.failed says why: the admin's to look at). */
static void reap_overlays(const struct vmc_dom *d)
{
    struct vmc_ctx tmp = { 0 };
    char p[600];
    FILE *f;

    snprintf(p, sizeof(p), "%s/vmc-merge.failed", d->dir);
    if (!overlay_left(d->dir) || access(p, F_OK) == 0 ||
        merge_offline(&tmp, d) == 0)
        return;
    if ((f = fopen(p, "we"))) {
        fprintf(f, "%s\n", vmc_ctx_error(&tmp));
        fclose(f);
    }
}

void qemu_dom_free(struct vmc_dom *d)
{
    if (!d)
        return;
    qmp_close(d->q);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    json_decref(d->cfg);
    free(d);
}

void qemu_kill_and_wait(pid_t pid)
{
    for (int i = 0; i < 300 && qemu_pid_alive(pid); i++) {   /* 3 s grace */
        waitpid(pid, NULL, WNOHANG);
        usleep(10000);
    }
    if (qemu_pid_alive(pid)) {
        kill(pid, SIGKILL);
        for (int i = 0; i < 300 && qemu_pid_alive(pid); i++) {
            waitpid(pid, NULL, WNOHANG);
            usleep(10000);
        }
    }
}

/* ---- launching --------------------------------------------------------- */

const char *qemu_binary(void)
{
    const char *e = getenv("VMCKPT_QEMU");

    return e && *e ? e : "qemu-system-x86_64";
}

/* Last non-empty line of qemu.log, for error messages. */
void qemu_last_log_line(const char *dir, char *out, size_t cap)
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
int qemu_alloc_dir(struct vmc_ctx *ctx, struct vmc_dom *d)
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
    if (qemu_lock_instance(d->dir, 1, &d->lock_fd) < 0)
        rc = vmc_set_error(ctx, VMC_E_IO, "%s/lock: %s", d->dir,
                           strerror(errno));
out:
    if (lfd >= 0)
        close(lfd);
    return rc;
}

/* QEMU's seccomp sandbox, as libvirt runs it: no obsolete system calls,
 * no set*id, no fork or exec (a tap script, a helper, an exec: URI), no
 * scheduler or affinity changes.  A QEMU that tries is killed. */
#define QEMU_SANDBOX \
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

/* The command line of an instance: this host's QEMU binary (never one a
 * config names), the config's argv, then what vmckpt adds (name, UUID,
 * its QMP and console in dir, the sandbox) and extra.  The strings point
 * into cfg, the arguments and bufs (bufs[0]: -add-fd, bufs[1]: -name);
 * NULL if argv holds a non-string.  av has room for 2 x argv + 32. */
static const char **qemu_argv(const json_t *cfg, const char *name,
                              const char *uuid, const char *dir,
                              const char **extra, char bufs[2][1400],
                              size_t *count)
{
    const json_t *argv = json_object_get(cfg, "argv");
    size_t n = json_array_size(argv), k = 0;
    const char **av = calloc(2 * n + 32, sizeof(char *));

    if (!av)
        return NULL;
    /* vmckpt opens its QMP and console sockets and the console log itself
     * and passes them in (fds 3, 4, 5): QEMU, not root, needs no access
     * to the registry directory (dir is in the command line for the
     * registry's pid check) */
    snprintf(bufs[0], 1400, "fd=5,set=1,opaque=%s/console.log", dir);
    av[k++] = qemu_binary();
    for (size_t i = 0; i < n; i++)
        if (!(av[k++] = json_string_value(json_array_get(argv, i)))) {
            free(av);
            return NULL;
        }
    {   /* a name is data: "guest=" and its commas doubled, so that a name
         * from an image cannot add -name's other keys */
        size_t o = (size_t)snprintf(bufs[1], 1400, "guest=");
        for (const char *p = name; *p && o < 1396; p++) {
            if (*p == ',')
                bufs[1][o++] = ',';
            bufs[1][o++] = *p;
        }
        bufs[1][o] = '\0';
    }
    av[k++] = "-name";
    av[k++] = bufs[1];
    av[k++] = "-uuid";
    av[k++] = uuid;
    av[k++] = "-chardev";
    av[k++] = "socket,id=vmckpt-qmp,fd=3,server=on,wait=off";
    av[k++] = "-mon";
    av[k++] = "chardev=vmckpt-qmp,mode=control";
    av[k++] = "-add-fd";
    av[k++] = bufs[0];
    av[k++] = "-chardev";
    av[k++] = "socket,id=vmckpt-console,fd=4,server=on,wait=off,"
              "logfile=/dev/fdset/1,logappend=on";
    av[k++] = "-serial";
    av[k++] = "chardev:vmckpt-console";
    av[k++] = "-sandbox";
    av[k++] = QEMU_SANDBOX;
    for (int i = 0; extra && extra[i] && k < n + 31; i++)
        av[k++] = extra[i];
    av[k] = NULL;
    *count = k;
    return av;
}

/* One word for a POSIX shell: as is when it is safe, else in '...'. */
static void shell_word(FILE *f, const char *w)
{
    if (*w && strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789,._+:@%/=-") == strlen(w)) {
        fputs(w, f);
        return;
    }
    fputc('\'', f);
    for (; *w; w++)
        if (*w == '\'')
            fputs("'\\''", f);
        else
            fputc(*w, f);
    fputc('\'', f);
}

char *qemu_command_text(const json_t *cfg, const char *name, const char *uuid,
                        const char *dir)
{
    static const char *const incoming[] = { "-incoming", "defer", NULL };
    char bufs[2][1400], *text = NULL;
    size_t k, len = 0;
    const char **av = qemu_argv(cfg, name, uuid, dir,
                                (const char **)incoming, bufs, &k);
    FILE *f;

    if (!av || !(f = open_memstream(&text, &len))) {
        free(av);
        return NULL;
    }
    for (size_t i = 0; i < k; i++) {
        if (i)
            fputc(' ', f);
        shell_word(f, av[i]);
    }
    fclose(f);
    free(av);
    return text;
}

/* ---- QEMU runs unprivileged ------------------------------------------------
 * As root, vmckpt starts QEMU as the system user vmckpt-qemu (override:
 * $VMCKPT_QEMU_USER), with the kvm group for /dev/kvm if there is one, no
 * other groups and no new privileges; never as root.  Whatever it runs as,
 * the files it needs are opened by vmckpt and passed in: its sockets and
 * log (above), and the host files its options name (-kernel, -initrd,
 * -dtb, -bios), as /dev/fd/N, so that it reads the file the policy
 * checked and needs no access to the directories on the way. */
#define LAUNCH_FILES 8
#define LAUNCH_DRIVES 16
struct launch {
    int fds[3 + LAUNCH_FILES + LAUNCH_DRIVES];  /* QMP, console, log, files */
    int nfds;
    char paths[LAUNCH_FILES][24];   /* "/dev/fd/N" */
    char drives[LAUNCH_DRIVES][PATH_MAX + 256];  /* -drive ...,file=/dev/fdset/S */
    char addfd[LAUNCH_DRIVES][48];  /* -add-fd fd=N,set=S */
    int drop;
    uid_t uid;
    gid_t gid, groups[1];
    int ngroups;
};

static int listen_unix(struct vmc_ctx *ctx, const char *path, int *fd)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof(sa.sun_path))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: path too long", path);
    memcpy(sa.sun_path, path, strlen(path));
    unlink(path);
    if ((*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(*fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(*fd, 64) < 0) {
        int rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return rc;
    }
    return 0;
}

static int launch_user(struct vmc_ctx *ctx, struct launch *l)
{
    const char *user = secure_getenv("VMCKPT_QEMU_USER");
    struct passwd *pw;
    struct group *gr;

    l->drop = geteuid() == 0;
    if (!l->drop)
        return 0;                   /* QEMU is already unprivileged: us */
    if (!user || !*user)
        user = VMC_QEMU_USER;
    if (!(pw = getpwnam(user)) || pw->pw_uid == 0)
        return vmc_set_error(ctx, VMC_E_BACKEND, "QEMU never runs as root, and "
                             "the system user %s %s (make install and the "
                             "vmckpt package create it)", user,
                             pw ? "is root" : "does not exist");
    l->uid = pw->pw_uid;
    l->gid = pw->pw_gid;
    if ((gr = getgrnam("kvm")))
        l->groups[l->ngroups++] = gr->gr_gid;
    return 0;
}

/* A -drive's disk file, opened here (read-write unless readonly=on or
 * media=cdrom) and passed in as fd set 10+j: the value becomes
 * ...,file=/dev/fdset/S,...,auto-read-only=off (else QEMU first asks the
 * set for a read-only descriptor) and av gets -add-fd.  One descriptor
 * per disk: QEMU's image locks stay on one open file description.  A
 * value without file=, or already on an fd set, is left alone. */
static int launch_drive(struct vmc_ctx *ctx, struct launch *l, const char **av,
                        size_t i, size_t *k, int j)
{
    char file[PATH_MAX], set_path[32];
    int ro = 0, fd, set = 10 + j;

    if (qemu_drive_file(av[i], file, sizeof(file), &ro) < 0 || !file[0] ||
        !strncmp(file, "/dev/fdset/", 11))
        return 0;                   /* QEMU's to judge, as it was given */
    snprintf(set_path, sizeof(set_path), "/dev/fdset/%d", set);
    if (qemu_drive_refile(av[i], set_path, l->drives[j], sizeof(l->drives[j])))
        return vmc_set_error(ctx, VMC_E_LIMIT, "-drive %s: too long", av[i]);
    if ((fd = open(file, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC)) < 0)
        return vmc_set_error(ctx, VMC_E_BACKEND, "-drive file=%s: %s", file,
                             strerror(errno));
    l->fds[l->nfds++] = fd;
    snprintf(l->addfd[j], sizeof(l->addfd[j]), "fd=%d,set=%d", 2 + l->nfds, set);
    av[(*k)++] = "-add-fd";
    av[(*k)++] = l->addfd[j];
    av[i] = l->drives[j];
    av[*k] = NULL;
    return 0;
}

/* Opens the host files of -kernel/-initrd/-dtb/-bios and points av at
 * them as /dev/fd/N, and the disk files of -drive (launch_drive).  A value
 * with a comma or space (multiboot modules) is left as a path. */
static int launch_files(struct vmc_ctx *ctx, struct launch *l, const char **av,
                        size_t *kp)
{
    static const char *const opts[] = { "-kernel", "-initrd", "-dtb", "-bios",
                                        NULL };
    size_t k = *kp;
    int nf = 0, nd = 0, rc;

    for (size_t i = 1; i + 1 < k; i++) {
        const char *o = av[i][0] == '-' && av[i][1] == '-' ? av[i] + 1 : av[i];
        int fd, hit = 0;
        if (!strcmp(o, "-drive")) {
            if (nd < LAUNCH_DRIVES &&
                (rc = launch_drive(ctx, l, av, ++i, kp, nd)) < 0)
                return rc;
            nd += nd < LAUNCH_DRIVES && av[i] == l->drives[nd];
            continue;
        }
        for (int j = 0; opts[j]; j++)
            hit |= !strcmp(o, opts[j]);
        if (!hit || strpbrk(av[i + 1], ", ") || nf == LAUNCH_FILES)
            continue;
        if ((fd = open(av[i + 1], O_RDONLY | O_CLOEXEC)) < 0)
            return vmc_set_error(ctx, VMC_E_BACKEND, "%s %s: %s", av[i],
                                 av[i + 1], strerror(errno));
        l->fds[l->nfds++] = fd;
        snprintf(l->paths[nf], sizeof(l->paths[nf]), "/dev/fd/%d", 2 + l->nfds);
        av[++i] = l->paths[nf++];
    }
    return 0;
}

static void launch_close(struct launch *l)
{
    for (int i = 0; i < l->nfds; i++)
        if (l->fds[i] >= 0)
            close(l->fds[i]);
    l->nfds = 0;
}

/* In the child: the passed fds to 3.., everything else closed, then the
 * unprivileged user.  Only async-signal-safe calls. */
static void launch_child(const struct launch *l)
{
    int hi[3 + LAUNCH_FILES + LAUNCH_DRIVES];

    for (int i = 0; i < l->nfds; i++)           /* out of the way first */
        hi[i] = fcntl(l->fds[i], F_DUPFD, 100);
    for (int i = 0; i < l->nfds; i++)
        if (hi[i] < 0 || dup2(hi[i], 3 + i) < 0)
            _exit(126);
    for (int fd = 3 + l->nfds; fd < 1024; fd++)
        close(fd);
    if (l->drop &&
        (setgroups((size_t)l->ngroups, l->groups) < 0 || setgid(l->gid) < 0 ||
         setuid(l->uid) < 0 || setuid(0) == 0)) {
        static const char m[] = "vmckpt: cannot drop to the QEMU user\n";
        if (write(2, m, sizeof(m) - 1) < 0) {
            /* nothing more to say */
        }
        _exit(126);
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* Writes domain.json and starts QEMU (setsid, logs to qemu.log); waits for
 * QMP.  extra: NULL-terminated args appended (restore: -incoming...). */
int qemu_launch(struct vmc_ctx *ctx, struct vmc_dom *d, const char **extra)
{
    struct launch l = { .nfds = 0 };
    char bufs[2][1400], uuid[37], p[600], line[512];
    const char **av = NULL;
    size_t k;
    pid_t pid;
    int rc = 0, go[2];

    snprintf(p, sizeof(p), "%s/domain.json", d->dir);
    json_object_set_new(d->cfg, "id", json_integer(d->id));
    if (json_dump_file(d->cfg, p, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: cannot write", p);
        goto out;
    }
    qemu_uuid_fmt(uuid, d->uuid);
    if (!(av = qemu_argv(d->cfg, d->name, uuid, d->dir, extra, bufs, &k))) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "domain config: argv holds a "
                           "non-string (or out of memory)");
        goto out;
    }
    {
        char sp[700];
        snprintf(sp, sizeof(sp), "%s/qmp.sock", d->dir);
        if ((rc = launch_user(ctx, &l)) < 0 ||
            (rc = listen_unix(ctx, sp, &l.fds[0])) < 0)
            goto out;
        l.nfds = 1;
        snprintf(sp, sizeof(sp), "%s/console.sock", d->dir);
        if ((rc = listen_unix(ctx, sp, &l.fds[1])) < 0)
            goto out;
        l.nfds = 2;
        snprintf(sp, sizeof(sp), "%s/console.log", d->dir);
        if ((l.fds[2] = open(sp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                             0600)) < 0) {
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", sp, strerror(errno));
            goto out;
        }
        l.nfds = 3;
        if ((rc = launch_files(ctx, &l, av, &k)) < 0)
            goto out;
    }
    snprintf(p, sizeof(p), "%s/qemu.log", d->dir);
    /* QEMU runs only once its pid is on file: should this process die
     * between fork and that, the child sees EOF on go and never starts. */
    if (pipe2(go, O_CLOEXEC) < 0) {
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "pipe: %s", strerror(errno));
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "fork: %s", strerror(errno));
        close(go[0]);
        close(go[1]);
        goto out;
    }
    if (pid == 0) {
        int nul, log;
        ssize_t r;
        char c = 0;
        close(go[1]);
        while ((r = read(go[0], &c, 1)) < 0 && errno == EINTR)
            ;
        if (r != 1 || c != 'g')
            _exit(126);
        nul = open("/dev/null", O_RDONLY);
        log = open(p, O_WRONLY | O_CREAT | O_APPEND, 0600);
        /* the working directory is this process's: a config's "cwd" is
         * only a record of where it was started */
        setsid();
        signal(SIGPIPE, SIG_IGN);   /* a dead reader is an error, not death */
        dup2(nul, 0);
        dup2(log, 1);
        dup2(log, 2);
        launch_child(&l);
        execvp(av[0], (char *const *)av);
        dprintf(2, "vmckpt: cannot run %s: %s\n", av[0], strerror(errno));
        _exit(127);
    }
    launch_close(&l);               /* QEMU holds them now */
    close(go[0]);
    d->pid = pid;
    snprintf(p, sizeof(p), "%s/qemu.pid", d->dir);
    {
        FILE *f = fopen(p, "w");
        int ok = f && fprintf(f, "%d\n", (int)pid) > 0;
        if (f && fclose(f) != 0)
            ok = 0;
        if (!ok || write(go[1], "g", 1) != 1) {
            close(go[1]);           /* the child exits without QEMU */
            waitpid(pid, NULL, 0);
            rc = vmc_set_error(ctx, VMC_E_IO, "%s: cannot write", p);
            goto out;
        }
        close(go[1]);
    }
    snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
    for (int i = 0; i < 15000; i++) {                 /* 30 s */
        struct stat st;
        if (stat(p, &st) == 0)
            break;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            qemu_last_log_line(d->dir, line, sizeof(line));
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
        if (!qemu_pid_alive(pid) || i == 149) {
            qemu_last_log_line(d->dir, line, sizeof(line));
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "QEMU failed: %s",
                               line[0] ? line : vmc_ctx_error(&tmp));
            break;
        }
    }
out:
    launch_close(&l);
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
    if ((rc = qemu_each(ctx, qemu_find_fn, &f)) < 0)
        goto fail;
    if (rc) {
        rc = vmc_set_error(ctx, VMC_E_EXISTS, "a domain with this name is "
                           "running (id %d)", f.id);
        goto fail;
    }
    if (uuid) {
        struct find fu = { .spec = "", .by_uuid = 1 };
        if (uuid_parse(uuid, fu.uuid) == 0 &&
            (rc = qemu_each(ctx, qemu_find_fn, &fu)) < 0)
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
                                               "-incoming", "-sandbox", NULL };
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
    qemu_uuid_fmt(u, d->uuid);
    {
        char cwd[4096];
        d->cfg = json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", d->name, "uuid",
                           u, "qemu", qemu_binary(), "argv", av, "cwd",
                           getcwd(cwd, sizeof(cwd)) ? cwd : "/");
    }
    av = NULL;
    if ((rc = qemu_alloc_dir(ctx, d)) < 0)
        goto fail;
    if ((rc = qemu_launch(ctx, d, NULL)) < 0) {
        if (d->pid > 0)
            kill(d->pid, SIGKILL), qemu_kill_and_wait(d->pid);
        qemu_rmdir_all(d->dir);
        goto fail;
    }
    *domid = d->id;
    qemu_dom_free(d);
    return 0;
fail:
    json_decref(av);
    qemu_dom_free(d);
    return rc;
}

/* ---- listing for vmctl --------------------------------------------- */

struct list_arg { vmc_qemu_list_fn fn; void *arg; struct vmc_ctx *ctx; };

static int list_fn(struct vmc_dom *d, void *arg)
{
    struct list_arg *la = arg;
    struct vmc_qemu_dom_info i = { .id = d->id, .name = d->name,
                                   .pid = (int)d->pid, .dir = d->dir };
    struct vmc_ctx tmp = { 0 };
    char uuid[37], state[32], p[600];

    qemu_uuid_fmt(uuid, d->uuid);
    snprintf(p, sizeof(p), "%s/qmp.sock", d->dir);
    if (qmp_connect(&tmp, p, 300, &d->q) < 0 ||
        qemu_query_status(&tmp, d, state, sizeof(state)) < 0)
        snprintf(state, sizeof(state), "busy");
    i.uuid = uuid;
    i.state = state;
    qmp_close(d->q);
    d->q = NULL;
    return la->fn(&i, la->arg);
}

int vmc_qemu_list(struct vmc_ctx *ctx, vmc_qemu_list_fn fn, void *arg)
{
    struct list_arg la = { fn, arg, ctx };

    return qemu_each(ctx, list_fn, &la);
}
