/*
 * xen.c - the Xen backend, through libxl (built when the Xen headers are
 * present: VMC_HAVE_XEN).
 *
 * Save:    libxl_domain_suspend (LIBXL_SUSPEND_LIVE for --live) writes the
 *          libxl migration stream v2, unmodified, into the engine's pipe;
 *          it runs in a thread because the call is synchronous.
 *          --checkpoint resumes with libxl_domain_resume (what xl save -c
 *          does); a failure resumes the domain the same way.
 *          A live save of a PVH guest with --max-downtime calls libxc's
 *          xc_domain_save directly instead, with a pre-copy policy of our
 *          own (libxl offers none), inside the same libxl stream framing.
 * Restore: libxl_domain_create_restore from the embedded libxl JSON
 *          config, fed by the authenticated reader; the domain is created
 *          paused and unpaused only after END verified.
 *          libxl allows one domain per name (VMC_BE_UNIQUE_NAMES): the
 *          engine has a domain whose clashing source is still being saved
 *          built as NAME--incoming, as xl migrate does on one host, and
 *          renamed (xen_rename) once the source has gone, before it runs.
 * libxl's log goes into vmckpt's error context, never raw to stderr.
 *
 * Owns: every call into libxl, libxenctrl and libxenguest.
 * Must not: decide names, clashes or rollback (the engine's), or print.
 */
#ifdef VMC_HAVE_XEN
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libxl.h>
#include <libxl_utils.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenstore.h>
#include <xentoollog.h>

#include "backend.h"

/* A logger that keeps libxl's first and last error for our messages: the
 * first is usually the cause (libxc's, relayed by libxl-save-helper), the
 * last libxl's summary of it. */
struct xlog {
    xentoollog_logger vtable;
    pthread_mutex_t mu;
    char first[400];
    char last[400];
};

static void xlog_vmessage(xentoollog_logger *lg, xentoollog_level level,
                          int errnoval, const char *context, const char *fmt,
                          va_list al)
{
    struct xlog *l = (struct xlog *)lg;
    char msg[300];

    if (level < XTL_WARN)
        return;
    vsnprintf(msg, sizeof(msg), fmt, al);
    pthread_mutex_lock(&l->mu);
    snprintf(l->last, sizeof(l->last), "%s%s%s%s%s", context ? context : "",
             context ? ": " : "", msg, errnoval > 0 ? ": " : "",
             errnoval > 0 ? strerror(errnoval) : "");
    if (level >= XTL_ERROR && !l->first[0])
        snprintf(l->first, sizeof(l->first), "%s", l->last);
    pthread_mutex_unlock(&l->mu);
}

static void xlog_destroy(xentoollog_logger *lg)
{
    (void)lg;
}

struct vmc_dom {
    libxl_ctx *lx;
    struct xlog log;
    uint32_t domid;
    char name[256];
    uint8_t uuid[16];
    int lock_fd;
    int live;
    int pv;                   /* a PV guest (from describe) */
    int pvh;                  /* a PVH guest (from describe) */
    /* live save of a PVH guest through libxenguest (--max-downtime) */
    int direct;
    uint32_t max_downtime_ms;
    int force_stop;           /* atomic: --live-timeout, stop and copy */
    uint32_t xc_round;        /* atomic: pre-copy round (1-based) */
    uint64_t xc_pages;        /* atomic: pages sent so far */
    uint64_t xc_t0_ns;
    uint64_t xc_p2m;          /* frames scanned by the first pass */
    uint64_t xc_populated;    /* pages it really sends (the guest's memory) */
    /* live save: a thread that notes when the guest stops for good */
    pthread_t watch;
    int watching;
    int watch_stop;           /* atomic: ask it to end */
    int64_t stop_us;          /* atomic: when the guest was seen stopped */
    /* the libxl call running in a thread (save or restore) */
    pthread_t th;
    int th_running;
    int th_rc;
    int fd;                   /* save: write end; restore: read end */
    libxl_domain_config cfg;  /* restore */
    int cfg_init;
    uint32_t new_domid;
    long console_at;          /* save: size of the guest's console log */
};

static void xlog_reset(struct vmc_dom *d)
{
    pthread_mutex_lock(&d->log.mu);
    d->log.first[0] = d->log.last[0] = 0;
    pthread_mutex_unlock(&d->log.mu);
}

static int xerr(struct vmc_ctx *ctx, struct vmc_dom *d, const char *what, int rc)
{
    char msg[400];

    pthread_mutex_lock(&d->log.mu);
    snprintf(msg, sizeof(msg), "%s", d->log.first[0] ? d->log.first
                                                     : d->log.last);
    pthread_mutex_unlock(&d->log.mu);
    return vmc_set_error(ctx, VMC_E_BACKEND, "libxl %s failed (%d)%s%s", what,
                         rc, msg[0] ? ": " : "", msg);
}

static struct vmc_dom *dom_new(struct vmc_ctx *ctx)
{
    struct vmc_dom *d = calloc(1, sizeof(*d));

    if (!d) {
        vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        return NULL;
    }
    d->lock_fd = -1;
    d->fd = -1;
    d->log.vtable.vmessage = xlog_vmessage;
    d->log.vtable.destroy = xlog_destroy;
    pthread_mutex_init(&d->log.mu, NULL);
    if (libxl_ctx_alloc(&d->lx, LIBXL_VERSION, 0,
                        (xentoollog_logger *)&d->log) != 0) {
        vmc_set_error(ctx, VMC_E_BACKEND, "libxl: cannot open a context (not "
                      "a Xen dom0, or xenstored/privcmd missing?)");
        free(d);
        return NULL;
    }
    return d;
}

static void watch_end(struct vmc_dom *d);

static void xen_close(struct vmc_dom *d)
{
    if (!d)
        return;
    if (d->th_running)
        pthread_join(d->th, NULL);
    watch_end(d);
    if (d->cfg_init)
        libxl_domain_config_dispose(&d->cfg);
    libxl_ctx_free(d->lx);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    pthread_mutex_destroy(&d->log.mu);
    free(d);
}

static int fill_identity(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    libxl_dominfo info;
    char *name;

    libxl_dominfo_init(&info);
    if (libxl_domain_info(d->lx, &info, d->domid) != 0) {
        libxl_dominfo_dispose(&info);
        return vmc_set_error(ctx, VMC_E_INVAL, "no such domain %u", d->domid);
    }
    memcpy(d->uuid, libxl_uuid_bytearray(&info.uuid), 16);
    libxl_dominfo_dispose(&info);
    name = libxl_domid_to_name(d->lx, d->domid);
    snprintf(d->name, sizeof(d->name), "%s", name ? name : "");
    free(name);
    return 0;
}

/* Save locks: <run dir>/xen/<domid>.lock (the run dir's numbered entries
 * are the QEMU registry's). */
static void lock_path(char *p, size_t n, uint32_t domid)
{
    snprintf(p, n, "%s/xen/%u.lock", vmc_rundir(), domid);
}

/* Is another process holding domain domid's save lock? */
static int xen_saving(int domid)
{
    char p[600];
    int fd, held;

    lock_path(p, sizeof(p), (uint32_t)domid);
    if ((fd = open(p, O_RDWR | O_CLOEXEC)) < 0)
        return 0;
    held = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static int xen_open(struct vmc_ctx *ctx, const char *spec, int lock,
                    struct vmc_dom **out)
{
    struct vmc_dom *d;
    char *end, p[600];
    unsigned long id = strtoul(spec, &end, 10);
    int rc;

    *out = NULL;
    if (!(d = dom_new(ctx)))
        return vmc_ctx_errcode(ctx);
    if (*spec && !*end) {
        d->domid = (uint32_t)id;
    } else if (libxl_name_to_domid(d->lx, spec, &d->domid) != 0) {
        xen_close(d);
        return vmc_set_error(ctx, VMC_E_INVAL, "no such domain (see xl list)");
    }
    if (d->domid == 0) {
        xen_close(d);
        return vmc_set_error(ctx, VMC_E_INVAL, "refusing to save dom0");
    }
    if ((rc = fill_identity(ctx, d)) < 0) {
        xen_close(d);
        return rc;
    }
    if (lock) {
        snprintf(p, sizeof(p), "%s/xen", vmc_rundir());
        mkdir(vmc_rundir(), 0700);
        mkdir(p, 0700);
        lock_path(p, sizeof(p), d->domid);
        d->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            xen_close(d);
            return vmc_set_error(ctx, VMC_E_EXISTS,
                                 "another vmckpt operation holds the domain lock");
        }
    }
    *out = d;
    return 0;
}

static int xen_domid(const struct vmc_dom *d)
{
    return (int)(d->new_domid ? d->new_domid : d->domid);
}

static const char *xen_name(const struct vmc_dom *d)
{
    return d->name;
}

static int xen_died(struct vmc_dom *d, char *why, size_t n, FILE *ev);

/* Did the domain shut down by itself (crash, reboot: what Xen makes of a
 * triple fault, poweroff), not for a suspend? */
static int shut_by_itself(const libxl_dominfo *info)
{
    return info->shutdown &&
           info->shutdown_reason != LIBXL_SHUTDOWN_REASON_SUSPEND;
}

/* A domain that shut down by itself (it crashed, triple-faulted, powered
 * off: any reason but a suspend) or is being destroyed has no guest left to
 * capture: its save is refused before anything is touched, with Xen's
 * words for what happened.  A domain left suspended can still be saved. */
static int refuse_dead(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    char why[256];
    const char *reason = NULL;
    libxl_dominfo info;
    FILE *sink;
    int dead;

    libxl_dominfo_init(&info);
    if (libxl_domain_info(d->lx, &info, d->domid) != 0)
        reason = "it is gone";
    else if (info.dying)
        reason = "it is being destroyed";
    else if (shut_by_itself(&info))
        reason = libxl_shutdown_reason_to_string(info.shutdown_reason);
    libxl_dominfo_dispose(&info);
    if (!reason)
        return 0;
    sink = fopen("/dev/null", "w");
    dead = sink && xen_died(d, why, sizeof(why), sink) == 1;
    if (sink)
        fclose(sink);
    return vmc_set_error(ctx, VMC_E_BACKEND, "the domain had already shut "
                         "down before the save (reason %s%s%s): there is no "
                         "running guest to save", reason,
                         dead && why[0] ? "; " : "", dead ? why : "");
}

static int xen_describe(struct vmc_ctx *ctx, struct vmc_dom *d,
                        struct vmc_image_meta *m, uint32_t *fmt, uint8_t **cfg,
                        size_t *cfg_len)
{
    libxl_domain_config c;
    const libxl_version_info *v;
    char *json;
    int rc;

    memset(m, 0, sizeof(*m));
    *cfg = NULL;
    *cfg_len = 0;
    if ((rc = refuse_dead(ctx, d)) < 0)
        return rc;
    libxl_domain_config_init(&c);
    xlog_reset(d);
    if ((rc = libxl_retrieve_domain_configuration(d->lx, d->domid, &c, NULL))) {
        libxl_domain_config_dispose(&c);
        return xerr(ctx, d, "retrieve_domain_configuration", rc);
    }
    json = libxl_domain_config_to_json(d->lx, &c);
    snprintf(m->name, sizeof(m->name), "%s", d->name);
    memcpy(m->uuid, d->uuid, 16);
    m->memory_kib = c.b_info.max_memkb;
    m->vcpus = (uint32_t)c.b_info.max_vcpus;
    snprintf(m->guest_type, sizeof(m->guest_type), "%s",
             libxl_domain_type_to_string(c.c_info.type));
    d->pv = c.c_info.type == LIBXL_DOMAIN_TYPE_PV;
    d->pvh = c.c_info.type == LIBXL_DOMAIN_TYPE_PVH;
    libxl_domain_config_dispose(&c);
    if (!json)
        return vmc_set_error(ctx, VMC_E_BACKEND, "libxl: config to JSON failed");
    m->backend = VMC_BACKEND_XEN;
    m->stream_format = VMC_SFMT_LIBXL;
    if ((v = libxl_get_version_info(d->lx)))
        snprintf(m->backend_version, sizeof(m->backend_version), "Xen %d.%d%s",
                 v->xen_version_major, v->xen_version_minor,
                 v->xen_version_extra ? v->xen_version_extra : "");
    *fmt = VMC_CFG_LIBXL_JSON;
    *cfg = (uint8_t *)json;
    *cfg_len = strlen(json);
    return 0;
}

static int64_t wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int xen_is_running(struct vmc_ctx *ctx, struct vmc_dom *d, int *running)
{
    libxl_dominfo info;
    uint32_t id = d->new_domid ? d->new_domid : d->domid;

    libxl_dominfo_init(&info);
    if (libxl_domain_info(d->lx, &info, id) != 0) {
        libxl_dominfo_dispose(&info);
        *running = 0;
        return vmc_set_error(ctx, VMC_E_BACKEND, "domain %u vanished", id);
    }
    *running = !info.paused && !info.shutdown && !info.dying;
    libxl_dominfo_dispose(&info);
    return 0;
}

/* A suspend is itself the pause: libxl asks the guest to suspend.  During
 * a live save there is no pause that libxl could cope with (a paused guest
 * cannot answer the final suspend request), so the engine's --live-timeout
 * stop is refused rather than pretended. */
static int xen_pause(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *w)
{
    int rc;

    xlog_reset(d);
    rc = libxl_domain_pause(d->lx, d->domid, NULL);
    if (w)
        *w = wall();
    return rc ? xerr(ctx, d, "domain_pause", rc) : 0;
}

static int xen_stop_copy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (d->live && d->th_running && d->direct) {
        /* our precopy_policy answers "stop and copy" next time */
        __atomic_store_n(&d->force_stop, 1, __ATOMIC_RELEASE);
        return 0;
    }
    return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "libxl cannot stop a live "
                         "pre-copy early");
}

static int xen_resume(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *w)
{
    libxl_dominfo info;
    uint32_t id = d->new_domid ? d->new_domid : d->domid;
    int rc = 0;

    xlog_reset(d);
    libxl_dominfo_init(&info);
    if (libxl_domain_info(d->lx, &info, id) != 0) {
        libxl_dominfo_dispose(&info);
        return vmc_set_error(ctx, VMC_E_BACKEND, "domain %u vanished", id);
    }
    if (shut_by_itself(&info)) {
        /* crashed, rebooted, powered off: there is nothing to resume (Xen
         * would clear the shutdown and run a dead vCPU again) */
        const char *why = libxl_shutdown_reason_to_string(info.shutdown_reason);
        libxl_dominfo_dispose(&info);
        return vmc_set_error(ctx, VMC_E_BACKEND, "domain %u has shut down "
                             "(reason %s): it cannot be resumed", id,
                             why ? why : "unknown");
    }
    if (info.shutdown)
        rc = libxl_domain_resume(d->lx, id, 1, NULL);     /* like xl save -c */
    else if (info.paused)
        rc = libxl_domain_unpause(d->lx, id, NULL);
    libxl_dominfo_dispose(&info);
    if (w)
        *w = wall();
    return rc ? xerr(ctx, d, "resume", rc) : 0;
}

/* The hypervisor's console ring (what `xl dmesg` prints), whole: libxl
 * hands it out in pieces that are not lines.  NULL if unreadable. */
static char *xen_dmesg(struct vmc_dom *d)
{
    libxl_xen_console_reader *cr = libxl_xen_console_read_start(d->lx, 0);
    char *all = NULL, *piece, *n;
    size_t len = 0;

    if (!cr)
        return NULL;
    while (libxl_xen_console_read_line(d->lx, cr, &piece) > 0 && piece) {
        size_t l = strlen(piece);
        if (!(n = realloc(all, len + l + 1)))
            break;
        all = n;
        memcpy(all + len, piece, l + 1);
        len += l;
    }
    libxl_xen_console_read_finish(d->lx, cr);
    return all;
}

/* Is this line of Xen's log about domain id (d<id>v<n>, d<id>:, "Domain
 * <id> ", dom<id>)? */
static int about_dom(const char *line, uint32_t id)
{
    char pat[4][32];

    snprintf(pat[0], sizeof(pat[0]), " d%uv", id);
    snprintf(pat[1], sizeof(pat[1]), " d%u:", id);
    snprintf(pat[2], sizeof(pat[2]), "omain %u ", id);
    snprintf(pat[3], sizeof(pat[3]), " dom%u ", id);
    for (int i = 0; i < 4; i++)
        if (strstr(line, pat[i]))
            return 1;
    return 0;
}

/* The guest's own last words: xenconsoled's log of its console
 * (xenconsoled --log=guest; $VMCKPT_XEN_CONSOLE_LOGDIR, default
 * /var/log/xen/console), if there is one.  A kernel panic, oops or BUG
 * line written since the save began (the log spans every domain of that
 * name: older lines may be an earlier incarnation's) becomes the reason
 * when Xen's log gave none. */
static void console_path(const struct vmc_dom *d, char *p, size_t n)
{
    const char *dir = getenv("VMCKPT_XEN_CONSOLE_LOGDIR");

    snprintf(p, n, "%s/guest-%s.log", dir && *dir ? dir
             : "/var/log/xen/console", d->name);
}

static void console_evidence(struct vmc_dom *d, char *why, size_t n, FILE *ev)
{
    char p[600], line[512], last[512] = "";
    FILE *f;

    console_path(d, p, sizeof(p));
    if (!d->name[0] || strchr(d->name, '/') || !(f = fopen(p, "r")))
        return;
    fprintf(ev, "\n---- %s (last 8192 bytes)\n", p);
    if (fseek(f, -8192, SEEK_END) < 0)
        rewind(f);
    for (;;) {
        long pos = ftell(f);
        if (!fgets(line, sizeof(line), f))
            break;
        fputs(line, ev);
        line[strcspn(line, "\r\n")] = '\0';
        if (pos >= d->console_at && !last[0] &&
            (strstr(line, "Kernel panic") || strstr(line, "Oops") ||
             strstr(line, "BUG:"))) {
            const char *s = strchr(line, ']');   /* past the timestamp */
            s = s && s[1] == ' ' ? s + 2 : line;
            snprintf(last, sizeof(last), "%s", s);   /* the first says why */
        }
    }
    fclose(f);
    if (!why[0] && last[0])
        snprintf(why, n, "guest console: %s", last);
}

/* A save that failed and could not resume: did the guest die?  It is
 * gone or dying (an xl daemon applied on_crash/on_reboot=destroy), or it
 * shut down for a reason other than the suspend (crash, or reboot: what
 * Xen makes of a triple fault), and stays so where nobody watches it.
 * Xen's own words are its log lines about the domain. */
static int xen_died(struct vmc_dom *d, char *why, size_t n, FILE *ev)
{
    libxl_dominfo info;
    libxl_shutdown_reason reason = LIBXL_SHUTDOWN_REASON_UNKNOWN;
    int gone, dead = 0;
    char *log, *line, *save = NULL;

    why[0] = '\0';
    libxl_dominfo_init(&info);
    gone = libxl_domain_info(d->lx, &info, d->domid) != 0;
    if (!gone) {
        /* A save only ever suspends: a guest that shut down for any other
         * reason stopped by itself.  A triple fault is Xen's "HVM
         * shutdown action" (reboot by default), a panic is crash. */
        dead = info.dying || shut_by_itself(&info);
        reason = info.shutdown ? info.shutdown_reason
                               : LIBXL_SHUTDOWN_REASON_UNKNOWN;
        fprintf(ev, "domain %u: paused=%d shutdown=%d reason=%s dying=%d\n",
                d->domid, info.paused, info.shutdown,
                libxl_shutdown_reason_to_string(info.shutdown_reason),
                info.dying);
    } else {
        fprintf(ev, "domain %u: no longer exists\n", d->domid);
    }
    libxl_dominfo_dispose(&info);
    if (!gone && !dead)
        return 0;
    fprintf(ev, "\nXen's log (xl dmesg), the lines about domain %u:\n",
            d->domid);
    if (!(log = xen_dmesg(d)))
        fprintf(ev, "(unreadable)\n");
    for (line = log ? strtok_r(log, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        line[strcspn(line, "\r")] = '\0';
        if (!about_dom(line, d->domid))
            continue;
        fprintf(ev, "%s\n", line);
        if (strstr(line, "fault") || strstr(line, "crash") ||
            strstr(line, "shutdown") || strstr(line, "Unhandled")) {
            const char *s = line;
            while (*s == ' ')
                s++;
            if (!strncmp(s, "(XEN) ", 6))
                s += 6;
            if (*s == '[' && strchr(s, ']'))       /* a console timestamp */
                s = strchr(s, ']') + 1;
            while (*s == ' ')
                s++;
            if (!why[0])               /* the first says what happened */
                snprintf(why, n, "Xen: %s", s);
        }
    }
    free(log);
    console_evidence(d, why, n, ev);
    if (!why[0] && gone)
        snprintf(why, n, "it vanished");
    else if (!why[0])
        snprintf(why, n, "Xen: it shut down, reason %s",
                 libxl_shutdown_reason_to_string(reason) ?: "unknown");
    return 1;
}

/* ---- PVH live save through libxenguest ---------------------------------
 * libxl runs xc_domain_save in libxl-save-helper and never sets its
 * precopy_policy, so libxc's default (5 rounds, or < 50 dirty pages)
 * decides.  For a PVH guest (no device model, so no emulator records) we
 * call xc_domain_save ourselves with a policy of our own, and write the
 * libxl v2 stream around libxc's exactly as libxl does for PVH: header,
 * LIBXC_CONTEXT, libxc's stream, END.  libxl_domain_create_restore reads
 * it back; resume and destroy stay libxl's. */

#define LIBXL_IDENT 0x4c6962786c466d74ULL   /* "LibxlFmt", big-endian */
#define LIBXL_REC_END 0u
#define LIBXL_REC_LIBXC_CONTEXT 1u

/* 0, or VMC_E_IO with errno kept.  (lib's io_write_full is not exported
 * to a backend module: this file uses only the public API.) */
static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;

    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0)
            errno = EIO;
        if (w <= 0)
            return VMC_E_IO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int libxl_hdr(int fd)
{
    uint8_t h[16] = { 0 };

    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t)(LIBXL_IDENT >> (56 - 8 * i));
    h[11] = 2;                              /* version 2, big-endian */
    return write_all(fd, h, sizeof(h));     /* options 0 */
}

static int libxl_rec(int fd, uint32_t type)
{
    uint8_t r[8] = { (uint8_t)type, (uint8_t)(type >> 8), (uint8_t)(type >> 16),
                     (uint8_t)(type >> 24), 0, 0, 0, 0 };   /* length 0 */

    return write_all(fd, r, sizeof(r));
}

/* What libxl does for a guest without a suspend event channel: ask through
 * xenstore, wait (60 s) until Xen reports it suspended.  1 = suspended;
 * a guest that died or shut down otherwise meanwhile fails at once. */
static int direct_suspend(void *data)
{
    struct vmc_dom *d = data;
    struct xs_handle *xs = xs_open(0);
    char path[64];
    int ok = 0;

    if (!xs)
        return 0;
    snprintf(path, sizeof(path), "/local/domain/%u/control/shutdown",
             d->domid);
    if (xs_write(xs, XBT_NULL, path, "suspend", 7)) {
        int dead = 0;
        for (int i = 0; i < 12000 && !ok && !dead; i++) {
            libxl_dominfo info;
            libxl_dominfo_init(&info);
            if (libxl_domain_info(d->lx, &info, d->domid) != 0 || info.dying)
                dead = 1;                   /* gone: no use waiting */
            else if (info.shutdown &&
                     info.shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND)
                ok = 1;
            else if (info.shutdown)
                dead = 1;                   /* crashed, reset, powered off */
            libxl_dominfo_dispose(&info);
            if (!ok && !dead)
                usleep(5000);
        }
        if (!ok)
            xs_rm(xs, XBT_NULL, path);      /* withdraw the request */
    }
    xs_close(xs);
    return ok;
}

/* Stop when the dirty pages left would take no longer than
 * --max-downtime at the rate seen so far, when the engine's --live-timeout
 * asks (pause), or after 30 rounds. */
static int direct_policy(struct precopy_stats st, void *data)
{
    struct vmc_dom *d = data;
    uint64_t el = vmc_now_ns() - d->xc_t0_ns;

    uint64_t sent = (uint64_t)st.total_written;
    int stop = 0;

    /* The first pass counts every frame of the p2m (up to the highest
     * guest frame, holes included) but sends only populated pages. */
    if (st.iteration == 0)
        d->xc_p2m = st.dirty_count > 0 ? (uint64_t)st.dirty_count : 0;
    else if (sent >= d->xc_p2m && d->xc_populated < d->xc_p2m)
        sent = sent - d->xc_p2m + d->xc_populated;
    if (__atomic_load_n(&d->force_stop, __ATOMIC_ACQUIRE) ||
        st.iteration >= 30) {
        stop = 1;
    } else if (st.dirty_count >= 0 && st.iteration > 0 && sent && el) {
        /* pages per ms so far; the last live pass sends dirty_count */
        double rate = (double)sent / ((double)el / 1e6);
        stop = (double)st.dirty_count / rate <= (double)d->max_downtime_ms;
    }
    if (stop && st.dirty_count > 0)
        sent += (uint64_t)st.dirty_count;   /* still sent before the stop */
    __atomic_store_n(&d->xc_pages, sent, __ATOMIC_RELEASE);
    __atomic_store_n(&d->xc_round, st.iteration + 1, __ATOMIC_RELEASE);
    return stop ? XGS_POLICY_STOP_AND_COPY : XGS_POLICY_CONTINUE_PRECOPY;
}

/* libxc calls this for every HVM-container guest; a PVH guest has no
 * device model whose log-dirty would need switching. */
static int direct_qemu_logdirty(uint32_t domid, unsigned enable, void *data)
{
    (void)domid;
    (void)enable;
    (void)data;
    return 0;
}

static void *direct_thread(void *arg)
{
    struct vmc_dom *d = arg;
    struct save_callbacks cb = { 0 };
    xc_interface *xch;
    int rc = -1;

    cb.suspend = direct_suspend;
    cb.precopy_policy = direct_policy;
    cb.switch_qemu_logdirty = direct_qemu_logdirty;
    cb.data = d;
    d->xc_t0_ns = vmc_now_ns();
    {
        libxl_dominfo info;
        libxl_dominfo_init(&info);
        if (libxl_domain_info(d->lx, &info, d->domid) == 0)
            d->xc_populated = info.current_memkb / 4;
        libxl_dominfo_dispose(&info);
    }
    xch = xc_interface_open((xentoollog_logger *)&d->log, NULL, 0);
    if (xch && libxl_hdr(d->fd) == 0 &&
        libxl_rec(d->fd, LIBXL_REC_LIBXC_CONTEXT) == 0 &&
        xc_domain_save(xch, d->fd, d->domid, XCFLAGS_LIVE, &cb,
                       XC_STREAM_PLAIN, -1) == 0 &&
        libxl_rec(d->fd, LIBXL_REC_END) == 0)
        rc = 0;
    if (xch)
        xc_interface_close(xch);
    d->th_rc = rc;
    close(d->fd);
    d->fd = -1;
    return NULL;
}

static void *suspend_thread(void *arg)
{
    struct vmc_dom *d = arg;

    d->th_rc = libxl_domain_suspend(d->lx, d->domid, d->fd,
                                    d->live ? LIBXL_SUSPEND_LIVE : 0, NULL);
    close(d->fd);                 /* EOF for the engine */
    d->fd = -1;
    return NULL;
}

/* libxl reports nothing of a live save's progress to its caller.  What can
 * be seen is the guest stopping for the last round (suspended, or paused):
 * checked every 10 ms, that is where the downtime starts. */
static void *watch_thread(void *arg)
{
    struct vmc_dom *d = arg;

    while (!__atomic_load_n(&d->watch_stop, __ATOMIC_ACQUIRE)) {
        libxl_dominfo info;
        int stopped = 0;
        libxl_dominfo_init(&info);
        if (libxl_domain_info(d->lx, &info, d->domid) == 0)
            stopped = info.shutdown || info.paused;
        libxl_dominfo_dispose(&info);
        if (stopped) {
            __atomic_store_n(&d->stop_us, wall(), __ATOMIC_RELEASE);
            break;
        }
        usleep(10000);
    }
    return NULL;
}

static void watch_end(struct vmc_dom *d)
{
    if (d->watching) {
        __atomic_store_n(&d->watch_stop, 1, __ATOMIC_RELEASE);
        pthread_join(d->watch, NULL);
        d->watching = 0;
    }
}

static int xen_save_start(struct vmc_ctx *ctx, struct vmc_dom *d, int fd,
                          const struct vmc_save_tuning *t)
{
    d->live = t->live;
    xlog_reset(d);
    if (t->max_bandwidth)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "a bandwidth limit: "
                             "libxl offers no way to set it (see vmsave(1), "
                             "Xen and libxenguest)");
    if (t->max_downtime_ms && !(t->live && d->pvh))
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "a maximum downtime: "
                             "only for a live save of a PVH guest on Xen "
                             "(see vmsave(1), Xen and libxenguest)");
    d->direct = t->live && d->pvh && t->max_downtime_ms;
    d->max_downtime_ms = t->max_downtime_ms;
    {
        char p[600];
        struct stat st;
        console_path(d, p, sizeof(p));
        d->console_at = stat(p, &st) == 0 ? (long)st.st_size : 0;
    }
    if ((d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "dup: %s", strerror(errno));
    if (d->live && pthread_create(&d->watch, NULL, watch_thread, d) == 0)
        d->watching = 1;
    if (pthread_create(&d->th, NULL, d->direct ? direct_thread
                                               : suspend_thread, d) != 0) {
        watch_end(d);
        close(d->fd);
        d->fd = -1;
        return vmc_set_error(ctx, VMC_E_BACKEND, "cannot start a thread");
    }
    d->th_running = 1;
    return 0;
}

static int xen_save_wait(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *stop)
{
    char first[400];

    *stop = 0;
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    watch_end(d);
    if (d->th_rc) {
        pthread_mutex_lock(&d->log.mu);
        snprintf(first, sizeof(first), "%s", d->log.first);
        pthread_mutex_unlock(&d->log.mu);
        if (d->live && d->pv && strstr(first, "logdirty")) {
            vmc_set_error(ctx, VMC_E_UNSUPPORTED, "a live save needs log-dirty "
                          "tracking, which this Xen cannot do for PV guests "
                          "(built without shadow paging): %s", first);
            return vmc_set_hint(ctx, VMC_HINT_NOT_LIVE);
        }
        return xerr(ctx, d, d->direct ? "(libxenguest) xc_domain_save"
                                      : "domain_suspend", d->th_rc);
    }
    *stop = __atomic_load_n(&d->stop_us, __ATOMIC_ACQUIRE);
    return 0;
}

/* No pre-copy rounds or byte counts from libxl: none are recorded.  The
 * libxenguest path knows both (pages, counted as 4 KiB). */
static int xen_save_poll(struct vmc_ctx *ctx, struct vmc_dom *d,
                         uint64_t *transferred, uint32_t *round)
{
    *transferred = 0;
    *round = 0;
    if (d->direct) {
        *round = __atomic_load_n(&d->xc_round, __ATOMIC_ACQUIRE);
        *transferred = __atomic_load_n(&d->xc_pages, __ATOMIC_ACQUIRE) * 4096;
        return 0;
    }
    return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "libxl reports no pre-copy "
                         "progress");
}

static void xen_save_cancel(struct vmc_dom *d)
{
    /* The engine has closed the pipe: the suspend fails with EPIPE. */
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    watch_end(d);
}

static int xen_destroy(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    int rc;

    xlog_reset(d);
    rc = libxl_domain_destroy(d->lx, d->domid, NULL);

    return rc ? xerr(ctx, d, "domain_destroy", rc) : 0;
}

/* ---- restore ---------------------------------------------------------- */

static void *restore_thread(void *arg)
{
    struct vmc_dom *d = arg;
    libxl_domain_restore_params p;

    libxl_domain_restore_params_init(&p);
    p.checkpointed_stream = 0;
    p.stream_version = 2;
    d->th_rc = libxl_domain_create_restore(d->lx, &d->cfg, &d->new_domid, d->fd,
                                           -1, &p, NULL, NULL);
    libxl_domain_restore_params_dispose(&p);
    close(d->fd);
    d->fd = -1;
    return NULL;
}

/* A domain other than dom0 and `skip` named `name` or with the (alive)
 * UUID `uuid`: see backend.h. */
static int find_in(struct vmc_ctx *ctx, struct vmc_dom *d, const char *name,
                   const uint8_t *uuid, int skip, int *id, int *what)
{
    libxl_dominfo *l;
    int n = 0;

    *id = 0;
    *what = VMC_FIND_NONE;
    if (!(l = libxl_list_domain(d->lx, &n)))
        return xerr(ctx, d, "list_domain", -1);
    for (int i = 0; i < n && !*what; i++) {
        char *dn;
        if (l[i].domid == 0 || (int)l[i].domid == skip)
            continue;
        dn = name ? libxl_domid_to_name(d->lx, l[i].domid) : NULL;
        if (dn && !strcmp(dn, name))
            *what = VMC_FIND_NAME;
        else if (uuid && !l[i].dying &&
                 !memcmp(libxl_uuid_bytearray(&l[i].uuid), uuid, 16))
            *what = VMC_FIND_UUID;
        free(dn);
        if (*what)
            *id = (int)l[i].domid;
    }
    libxl_dominfo_list_free(l, n);
    return 0;
}

static int xen_find(struct vmc_ctx *ctx, const char *name, const uint8_t *uuid,
                    int skip, int *id, int *what)
{
    struct vmc_dom *d = dom_new(ctx);
    int rc;

    *id = 0;
    *what = VMC_FIND_NONE;
    if (!d)
        return vmc_ctx_errcode(ctx);
    rc = find_in(ctx, d, name, uuid, skip, id, what);
    xen_close(d);
    return rc;
}

static int xen_restore_start(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                             uint32_t fmt, const uint8_t *cfg, size_t cfg_len,
                             const struct vmc_restore_as *as, int fd,
                             struct vmc_dom **out)
{
    struct vmc_dom *d;
    char *json;
    int rc;

    (void)m;
    *out = NULL;
    if (fmt != VMC_CFG_LIBXL_JSON)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED,
                             "DOMAIN_CONFIG format %u is not libxl JSON", fmt);
    if (!(d = dom_new(ctx)))
        return vmc_ctx_errcode(ctx);
    if (!(json = strndup((const char *)cfg, cfg_len))) {
        xen_close(d);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    libxl_domain_config_init(&d->cfg);
    d->cfg_init = 1;
    if (libxl_domain_config_from_json(d->lx, &d->cfg, json) != 0) {
        free(json);
        xen_close(d);
        return vmc_set_error(ctx, VMC_E_FORMAT, "DOMAIN_CONFIG: libxl cannot "
                             "parse the domain configuration");
    }
    free(json);
    /* Built under as->build_name (libxl allows one domain per name; the
     * engine's rename gives it the final one). */
    snprintf(d->name, sizeof(d->name), "%s", as->name);
    free(d->cfg.c_info.name);
    if (!(d->cfg.c_info.name = strdup(as->build_name))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(libxl_uuid_bytearray(&d->cfg.c_info.uuid), as->uuid, 16);
    xlog_reset(d);
    if ((d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "dup: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&d->th, NULL, restore_thread, d) != 0) {
        close(d->fd);
        d->fd = -1;
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "cannot start a thread");
        goto fail;
    }
    d->th_running = 1;
    *out = d;
    return 0;
fail:
    xen_close(d);
    return rc;
}

/* xenconsoled names a guest's log file (guest-NAME.log) after the domain's
 * name when the console connects: NAME--incoming for a pending clash.
 * SIGHUP makes it reopen every log under the current name, as after
 * logrotate.  Best effort: a missing xenconsoled is not our failure. */
static void console_log_follow(void)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;

    if (!dir)
        return;
    while ((e = readdir(dir))) {
        char p[300], comm[32] = "";
        FILE *f;
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 1)
            continue;
        snprintf(p, sizeof(p), "/proc/%d/comm", (int)pid);
        if (!(f = fopen(p, "re")))
            continue;
        if (!fgets(comm, sizeof(comm), f))
            comm[0] = 0;
        fclose(f);
        if (!strcmp(comm, "xenconsoled\n")) {
            kill(pid, SIGHUP);
            usleep(100000);     /* before the guest runs and prints */
            break;
        }
    }
    closedir(dir);
}

static int xen_restore_wait(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    if (d->th_running) {
        pthread_join(d->th, NULL);
        d->th_running = 0;
    }
    if (d->th_rc)
        return xerr(ctx, d, "domain_create_restore", d->th_rc);
    d->domid = d->new_domid;
    return 0;
}

static int xen_rename(struct vmc_ctx *ctx, struct vmc_dom *d, const char *name)
{
    int rc;

    xlog_reset(d);
    if ((rc = libxl_domain_rename(d->lx, d->new_domid, d->cfg.c_info.name,
                                  name)) != 0)
        return xerr(ctx, d, "domain_rename", rc);
    snprintf(d->name, sizeof(d->name), "%s", name);
    console_log_follow();
    return 0;
}

static void xen_restore_abort(struct vmc_dom *d)
{
    if (!d)
        return;
    if (d->th_running) {
        pthread_join(d->th, NULL);  /* the engine closed the stream */
        d->th_running = 0;
    }
    /* libxl destroys a domain whose create_restore failed; one that was
     * built but must not run (a later failure) is destroyed here. */
    if (d->new_domid)
        libxl_domain_destroy(d->lx, d->new_domid, NULL);
}

static int xen_console_open(struct vmc_ctx *ctx, struct vmc_dom *d, int *fd)
{
    char *path = NULL;
    int rc;

    xlog_reset(d);
    rc = libxl_primary_console_get_tty(d->lx, xen_domid(d), &path);

    *fd = -1;
    if (rc || !path)
        return xerr(ctx, d, "primary_console_get_tty", rc);
    *fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*fd < 0)
        rc = vmc_set_error(ctx, VMC_E_BACKEND, "%s: %s", path, strerror(errno));
    free(path);
    return rc ? rc : 0;
}

/* ---- a checkpoint's disks ---------------------------------------------
 * libxl offers no point-in-time view of a disk, so it is a frozen copy of
 * each disk file, made while the domain is still suspended (its memory
 * saved, blkfront quiesced): a reflink where the filesystem shares blocks
 * (XFS with reflink=1, btrfs: milliseconds), else a sparse copy, whose
 * time the downtime that vmsave reports includes.  The copies are unnamed
 * files: nothing to release, even after a SIGKILL. */
static int xen_view_prepare(struct vmc_ctx *ctx, struct vmc_dom *d,
                            const struct vmc_disk_info *disks, int n)
{
    (void)ctx, (void)d, (void)disks, (void)n;
    return 0;
}

static int xen_view_take(struct vmc_ctx *ctx, struct vmc_dom *d,
                         const struct vmc_disk_info *disks, int *fds, int n)
{
    (void)d;
    for (int i = 0; i < n; i++) {
        int copy, ref, rc;
        uint64_t len = disks[i].virtual_size;
        struct stat st;
        if (!(disks[i].flags & VMC_DF_CARRIED) ||
            (disks[i].flags & VMC_DF_READONLY))
            continue;               /* a read-only medium cannot change */
        if (disks[i].source_format != VMC_DISK_FMT_RAW)   /* qcow2: the file */
            len = fstat(fds[i], &st) == 0 ? (uint64_t)st.st_size : 0;
        if ((rc = vmc_disk_snapshot(ctx, disks[i].path, fds[i], len, &copy,
                                   &ref)) < 0)
            return rc;
        close(fds[i]);
        fds[i] = copy;
    }
    return 0;
}

static int xen_view_release(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    (void)ctx, (void)d;
    return 0;
}

/* A Xen control domain (dom0) is the xen backend's home. */
static int xen_probe(void)
{
    FILE *f = fopen("/proc/xen/capabilities", "re");
    char buf[64] = "";

    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    return strstr(buf, "control_d") != NULL;
}

const struct vmc_backend vmc_backend_xen = {
    .name = "xen",
    .id = VMC_BACKEND_XEN,
    .flags = VMC_BE_UNIQUE_NAMES | VMC_BE_SAVE_STOPS,
    .probe = xen_probe,
    .open = xen_open,
    .close = xen_close,
    .domid = xen_domid,
    .name_of = xen_name,
    .find = xen_find,
    .saving = xen_saving,
    .describe = xen_describe,
    .is_running = xen_is_running,
    .pause = xen_pause,
    .resume = xen_resume,
    .save_start = xen_save_start,
    .stop_copy = xen_stop_copy,
    .save_wait = xen_save_wait,
    .save_poll = xen_save_poll,
    .save_cancel = xen_save_cancel,
    .view_prepare = xen_view_prepare,
    .view_take = xen_view_take,
    .view_release = xen_view_release,
    .destroy = xen_destroy,
    .config_check = vmc_config_check,
    .restore_start = xen_restore_start,
    .restore_wait = xen_restore_wait,
    .rename = xen_rename,
    .restore_abort = xen_restore_abort,
    .console_open = xen_console_open,
    .died = xen_died,
};

#ifdef VMC_XEN_MODULE
VMC_API const struct vmc_backend *vmc_backend_module(unsigned abi, size_t size);

/* The module's one entry point (backend.c loads it; see backend.h). */
const struct vmc_backend *vmc_backend_module(unsigned abi, size_t size)
{
    return abi == VMC_BACKEND_ABI && size == sizeof(struct vmc_backend)
           ? &vmc_backend_xen : NULL;
}
#endif
#endif /* VMC_HAVE_XEN */
