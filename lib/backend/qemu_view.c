/*
 * qemu_view.c - a point-in-time view of a running QEMU domain's disks, for
 * a checkpoint that carries them (vmsave --checkpoint --disks).
 *
 * Before the pause, view_prepare makes one empty qcow2 overlay per carried
 * disk (a file vmckpt creates in the instance directory and passes in with
 * add-fd; QEMU formats it with blockdev-create).  Once the memory is
 * captured, the guest still stopped (a checkpoint's pause, or the end of
 * a live one's pre-copy), view_take puts every overlay above its disk in
 * one transaction (blockdev-snapshot): from then on the guest writes to
 * the overlays and each disk file stays as it was, for the engine to read
 * after the guest runs again.  view_release merges the overlays back
 * (block-commit of the active layer, then block-job-complete: the guest is
 * on its own disk file again), deletes their nodes and fd sets, and
 * removes their files.
 *
 * Why an overlay and not copy-before-write fleecing over NBD: QEMU 7.2
 * cannot run a backup job beside the migration that captures the memory
 * (bdrv_inactivate_all fails, and a completed migration leaves the nodes
 * inactive until cont); the overlay's step inside the pause is one
 * transaction (2-3 ms measured), and the frozen file is read directly.
 * blockdev-snapshot works on the nodes a completed migration left
 * inactive, which is why the take can follow the memory.
 *
 * Release needs no state of the process that prepared: it finds vmckpt's
 * nodes by their names (vmc-ov-J over vmc-ovf-J, fd set 200+J, file
 * vmc-ov-J.qcow2), so the guardian of a killed vmsave and the next save
 * of the domain both merge what was left.  An overlay's file is removed
 * only once its node is gone: until its writes are merged it holds the
 * guest's disk.
 * Owns: the QMP of the view.  Must not: decide when to take one (the
 * engine does), or touch a node that is not vmckpt's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu.h"

#define VIEW_FDSET 200              /* + J: the overlay of disk J */
#define VIEW_MAX VMC_DISK_MAX

static void ov_path(const struct vmc_dom *d, int j, char *p, size_t n)
{
    snprintf(p, n, "%s/vmc-ov-%d.qcow2", d->ovdir ? d->ovdir : d->dir, j);
}

/* Its name once merged (stale: the disk holds all of it and more). */
static void ov_merged_path(const struct vmc_dom *d, int j, char *p, size_t n)
{
    snprintf(p, n, "%s/vmc-ov-%d.merged", d->ovdir ? d->ovdir : d->dir, j);
}

/* Waits until job `id` has status `want` ("ready", "concluded"); a job
 * that concluded with an error, or is gone, fails with its reason. */
static int job_wait(struct vmc_ctx *ctx, struct vmc_dom *d, const char *id,
                    const char *want, int timeout_s, const char *what)
{
    uint64_t deadline = vmc_now_ns() + (uint64_t)timeout_s * 1000000000u;
    useconds_t pause = 1000;

    for (;;) {
        json_t *r, *job = NULL;
        const char *st = NULL, *err = NULL;
        size_t i;
        int rc;

        if ((rc = qmp_exec(ctx, d->q, "query-jobs", NULL, &r)) < 0)
            return rc;
        json_array_foreach(r, i, job) {
            if (!strcmp(json_string_value(json_object_get(job, "id")) ?: "", id))
                break;
            job = NULL;
        }
        if (job) {
            st = json_string_value(json_object_get(job, "status"));
            err = json_string_value(json_object_get(job, "error"));
        }
        if (!job || (st && !strcmp(st, "concluded") && (err || strcmp(want,
                                                                  "concluded")))) {
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "%s: QEMU job %s %s%s%s",
                               what, id, job ? "failed" : "vanished",
                               err ? ": " : "", err ? err : "");
            json_decref(r);
            return rc;
        }
        if (st && !strcmp(st, want)) {
            json_decref(r);
            return 0;
        }
        json_decref(r);
        if (vmc_now_ns() > deadline)
            return vmc_set_error(ctx, VMC_E_BACKEND, "%s: QEMU job %s still %s "
                                 "after %d s", what, id, st ? st : "?", timeout_s);
        usleep(pause);
        if (pause < 20000)
            pause *= 2;
    }
}

/* The status of job id ("" if there is none). */
static int job_status(struct vmc_ctx *ctx, struct vmc_dom *d, const char *id,
                      char *st, size_t n)
{
    json_t *r, *job;
    size_t i;
    int rc;

    st[0] = '\0';
    if ((rc = qmp_exec(ctx, d->q, "query-jobs", NULL, &r)) < 0)
        return rc;
    json_array_foreach(r, i, job)
        if (!strcmp(json_string_value(json_object_get(job, "id")) ?: "", id))
            snprintf(st, n, "%s",
                     json_string_value(json_object_get(job, "status")) ?: "?");
    json_decref(r);
    return 0;
}

/* The node of disk di: the drive on fd set 10+index (the launcher's), or
 * else the device named as di->id. */
static int disk_node(struct vmc_ctx *ctx, struct vmc_dom *d,
                     const struct vmc_disk_info *di, char *node, size_t n)
{
    char set[32];
    json_t *r, *b;
    size_t i;
    int rc;

    snprintf(set, sizeof(set), "/dev/fdset/%u", 10 + di->index);
    if ((rc = qmp_exec(ctx, d->q, "query-block", NULL, &r)) < 0)
        return rc;
    for (int pass = 0; pass < 2; pass++)
        json_array_foreach(r, i, b) {
            json_t *in = json_object_get(b, "inserted");
            const char *f = json_string_value(json_object_get(in, "file"));
            const char *dev = json_string_value(json_object_get(b, "device"));
            const char *nn = json_string_value(json_object_get(in, "node-name"));
            if (!nn || !(pass ? dev && !strcmp(dev, di->id)
                              : f && !strcmp(f, set)))
                continue;
            snprintf(node, n, "%s", nn);
            json_decref(r);
            if (!strncmp(node, "vmc-ov", 6))
                return vmc_set_error(ctx, VMC_E_BACKEND, "disk %s: already "
                                     "on a vmckpt overlay", di->id);
            return 0;
        }
    json_decref(r);
    return vmc_set_error(ctx, VMC_E_BACKEND, "disk %s (%s): QEMU shows no such "
                         "drive", di->id, di->path);
}

/* An empty qcow2 overlay J of size octets: its file, passed in, formatted
 * by QEMU, opened as node vmc-ov-J (no backing yet: the snapshot sets it). */
static int overlay_make(struct vmc_ctx *ctx, struct vmc_dom *d, int j,
                        uint64_t size)
{
    char p[600], file[32], node[32], job[32];
    int fd, rc;

    ov_path(d, j, p, sizeof(p));
    snprintf(file, sizeof(file), "vmc-ovf-%d", j);
    snprintf(node, sizeof(node), "vmc-ov-%d", j);
    snprintf(job, sizeof(job), "vmc-ovc-%d", j);
    if ((fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                   0600)) < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", p, strerror(errno));
    rc = qmp_exec_fd(ctx, d->q, "add-fd", json_pack("{s:i}", "fdset-id",
                                                   VIEW_FDSET + j), fd, NULL);
    close(fd);
    if (rc < 0)
        return rc;
    snprintf(p, sizeof(p), "/dev/fdset/%d", VIEW_FDSET + j);
    if ((rc = qmp_exec(ctx, d->q, "blockdev-add",
                       json_pack("{s:s, s:s, s:s}", "driver", "file",
                                 "node-name", file, "filename", p), NULL)) < 0 ||
        (rc = qmp_exec(ctx, d->q, "blockdev-create",
                       json_pack("{s:s, s:{s:s, s:s, s:I}}", "job-id", job,
                                 "options", "driver", "qcow2", "file", file,
                                 "size", (json_int_t)size), NULL)) < 0 ||
        (rc = job_wait(ctx, d, job, "concluded", 60, "disk overlay")) < 0 ||
        (rc = qmp_exec(ctx, d->q, "job-dismiss", json_pack("{s:s}", "id", job),
                       NULL)) < 0)
        return rc;
    return qmp_exec(ctx, d->q, "blockdev-add",
                    json_pack("{s:s, s:s, s:s, s:n}", "driver", "qcow2",
                              "node-name", node, "file", file, "backing"),
                    NULL);
}

int qemu_view_prepare(struct vmc_ctx *ctx, struct vmc_dom *d,
                      const struct vmc_disk_info *disks, int n)
{
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0 ||
        (rc = qemu_view_release(ctx, d)) < 0)      /* a killed save's */
        return rc;
    d->nview = 0;
    for (int i = 0; i < n && i < VIEW_MAX; i++) {
        const struct vmc_disk_info *di = &disks[i];
        int j = d->nview;
        /* a read-only medium cannot change: its file is its view */
        if (!(di->flags & VMC_DF_CARRIED) || (di->flags & VMC_DF_READONLY))
            continue;
        if ((rc = disk_node(ctx, d, di, d->view_base[j],
                            sizeof(d->view_base[j]))) < 0 ||
            (rc = overlay_make(ctx, d, j, di->virtual_size)) < 0)
            return rc;              /* the caller releases */
        d->nview++;
    }
    return 0;
}

/* The overlays go above the disks: each disk file (fds[i], read by the
 * engine) stays as it is. */
int qemu_view_take(struct vmc_ctx *ctx, struct vmc_dom *d,
                   const struct vmc_disk_info *disks, int *fds, int n)
{
    json_t *acts = json_array();
    char node[32];

    (void)disks, (void)fds, (void)n;
    for (int j = 0; j < d->nview; j++) {
        snprintf(node, sizeof(node), "vmc-ov-%d", j);
        json_array_append_new(acts, json_pack("{s:s, s:{s:s, s:s}}", "type",
                                              "blockdev-snapshot", "data",
                                              "node", d->view_base[j],
                                              "overlay", node));
    }
    return qmp_exec(ctx, d->q, "transaction",
                    json_pack("{s:o}", "actions", acts), NULL);
}

/* Jobs of a killed vmsave: a concluded one is dismissed (its id is free
 * again), a blockdev-create still running is waited for. */
static int jobs_settle(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    json_t *r, *job;
    size_t i;
    int rc;

    if ((rc = qmp_exec(ctx, d->q, "query-jobs", NULL, &r)) < 0)
        return rc;
    json_array_foreach(r, i, job) {
        const char *id = json_string_value(json_object_get(job, "id")) ?: "";
        const char *st = json_string_value(json_object_get(job, "status")) ?: "";
        if (strncmp(id, "vmc-ov", 6))
            continue;
        if (!strncmp(id, "vmc-ovc-", 8) && strcmp(st, "concluded") &&
            (rc = job_wait(ctx, d, id, "concluded", 60, "disk overlay")) < 0)
            vmc_ctx_clear(ctx);     /* failed: concluded all the same */
        if ((!strncmp(id, "vmc-ovc-", 8) || !strcmp(st, "concluded")) &&
            (rc = qmp_exec(ctx, d->q, "job-dismiss",
                           json_pack("{s:s}", "id", id), NULL)) < 0)
            break;
    }
    json_decref(r);
    return rc;
}

/* The node right below overlay nn (its backing child: the disk as the
 * domain had it, which may itself have a backing chain).  Only QEMU's
 * block graph names it (x-debug-query-block-graph: query-block and
 * query-named-block-nodes give the chain's file names, not its nodes). */
static int overlay_base(struct vmc_ctx *ctx, struct vmc_dom *d, const char *nn,
                        char *base, size_t n)
{
    json_t *r, *e, *v;
    json_int_t top = -1, child = -1;
    size_t i;
    int rc;

    base[0] = '\0';
    if ((rc = qmp_exec(ctx, d->q, "x-debug-query-block-graph", NULL, &r)) < 0)
        return rc;
    json_array_foreach(json_object_get(r, "nodes"), i, v)
        if (!strcmp(json_string_value(json_object_get(v, "name")) ?: "", nn))
            top = json_integer_value(json_object_get(v, "id"));
    json_array_foreach(json_object_get(r, "edges"), i, e)
        if (json_integer_value(json_object_get(e, "parent")) == top &&
            !strcmp(json_string_value(json_object_get(e, "name")) ?: "",
                    "backing"))
            child = json_integer_value(json_object_get(e, "child"));
    json_array_foreach(json_object_get(r, "nodes"), i, v)
        if (child >= 0 && json_integer_value(json_object_get(v, "id")) == child)
            snprintf(base, n, "%s",
                     json_string_value(json_object_get(v, "name")) ?: "");
    json_decref(r);
    if (!base[0])
        return vmc_set_error(ctx, VMC_E_BACKEND, "disk overlay %s: QEMU's "
                             "block graph shows no disk below it", nn);
    return 0;
}

/* The switch of a ready merge job back to the disk, with the guest
 * stopped for it (a few ms): once the disk is the active layer again the
 * overlay file is stale, and it is renamed so before the guest writes
 * anything more.  A vmc-ov-J.qcow2 file beside a running guest is thus
 * never older than the disk below it: what an offline merge after QEMU
 * died may commit (qemu_view_offline).  A stop that this process does not
 * live to undo is the guardian's to resume (was_running). */
static int merge_complete(struct vmc_ctx *ctx, struct vmc_dom *d,
                          const char *job, int j)
{
    static const char *what = "merging a disk overlay back";
    char st[64], from[600], to[600];
    int rc, stopped = 0;

    if ((rc = qemu_query_status(ctx, d, st, sizeof(st))) < 0)
        return rc;
    if (!strcmp(st, "running")) {
        if ((rc = qmp_exec(ctx, d->q, "stop", NULL, NULL)) < 0)
            return rc;
        stopped = 1;
    }
    rc = qmp_exec(ctx, d->q, "block-job-complete",
                  json_pack("{s:s}", "device", job), NULL);
    if (rc == 0)
        rc = job_wait(ctx, d, job, "concluded", 600, what);
    ov_path(d, j, from, sizeof(from));
    ov_merged_path(d, j, to, sizeof(to));
    if (rc == 0 && rename(from, to) < 0 && errno != ENOENT)
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: %s", from, strerror(errno));
    if (stopped) {
        struct vmc_ctx tmp = { 0 };
        if (qmp_exec(rc ? &tmp : ctx, d->q, "cont", NULL, NULL) < 0 && !rc)
            rc = VMC_E_BACKEND;
    }
    return rc;
}

/* Merges overlay node nn (vmc-ov-J, the active layer of its drive) back
 * into the disk right below it, never further down its chain (a backing
 * file may be a template that other domains share); a merge that a
 * killed vmsave started goes on from where it is. */
static int merge_one(struct vmc_ctx *ctx, struct vmc_dom *d, const char *nn)
{
    static const char *what = "merging a disk overlay back";
    char job[40], st[32], base[64];
    int rc;

    snprintf(job, sizeof(job), "vmc-ovm-%s", nn + 7);
    if ((rc = job_status(ctx, d, job, st, sizeof(st))) < 0)
        return rc;
    if (!st[0]) {
        if ((rc = overlay_base(ctx, d, nn, base, sizeof(base))) < 0 ||
            (rc = qmp_exec(ctx, d->q, "block-commit",
                           json_pack("{s:s, s:s, s:s, s:b}", "job-id", job,
                                     "device", nn, "base-node", base,
                                     "auto-dismiss", 0), NULL)) < 0)
            return rc;
        snprintf(st, sizeof(st), "running");
    }
    if ((!strcmp(st, "created") || !strcmp(st, "running") ||
         !strcmp(st, "paused")) &&
        (rc = job_wait(ctx, d, job, "ready", 3600, what)) == 0)
        snprintf(st, sizeof(st), "ready");
    if (rc == 0 && !strcmp(st, "ready"))
        rc = merge_complete(ctx, d, job, atoi(nn + 7));
    else if (rc == 0)                   /* completed by a killed save */
        rc = job_wait(ctx, d, job, "concluded", 600, what);
    if (rc == 0)
        rc = qmp_exec(ctx, d->q, "job-dismiss", json_pack("{s:s}", "id", job),
                      NULL);
    return rc;
}

/* Merges every active vmckpt overlay back into the disk below it. */
static int merge_active(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    json_t *r, *b;
    size_t i;
    int rc;

    if ((rc = qmp_exec(ctx, d->q, "query-block", NULL, &r)) < 0)
        return rc;
    json_array_foreach(r, i, b) {
        const char *nn = json_string_value(json_object_get(
                             json_object_get(b, "inserted"), "node-name"));
        if (nn && !strncmp(nn, "vmc-ov-", 7) &&
            (rc = merge_one(ctx, d, nn)) < 0)
            break;
    }
    json_decref(r);
    return rc;
}

/* Bit J of *nodes: node vmc-ov-J exists, of *files: vmc-ovf-J; of *sets:
 * fd set 200+J. */
static int ours(struct vmc_ctx *ctx, struct vmc_dom *d, uint64_t *nodes,
                uint64_t *files, uint64_t *sets)
{
    json_t *r, *b;
    size_t i;
    int rc, j;

    *nodes = *files = *sets = 0;
    if ((rc = qmp_exec(ctx, d->q, "query-named-block-nodes",
                       json_pack("{s:b}", "flat", 1), &r)) < 0)
        return rc;
    json_array_foreach(r, i, b) {
        const char *nn = json_string_value(json_object_get(b, "node-name"));
        if (nn && sscanf(nn, "vmc-ov-%d", &j) == 1 && j >= 0 && j < VIEW_MAX)
            *nodes |= 1ull << j;
        else if (nn && sscanf(nn, "vmc-ovf-%d", &j) == 1 && j >= 0 &&
                 j < VIEW_MAX)
            *files |= 1ull << j;
    }
    json_decref(r);
    if ((rc = qmp_exec(ctx, d->q, "query-fdsets", NULL, &r)) < 0)
        return rc;
    json_array_foreach(r, i, b) {
        j = (int)json_integer_value(json_object_get(b, "fdset-id")) - VIEW_FDSET;
        if (j >= 0 && j < VIEW_MAX)
            *sets |= 1ull << j;
    }
    json_decref(r);
    return 0;
}

int qemu_view_release(struct vmc_ctx *ctx, struct vmc_dom *d)
{
    uint64_t nodes, files, sets;
    int rc;

    if ((rc = qemu_qmp(ctx, d)) < 0 || (rc = jobs_settle(ctx, d)) < 0 ||
        (rc = merge_active(ctx, d)) < 0 ||
        (rc = ours(ctx, d, &nodes, &files, &sets)) < 0)
        return rc;
    for (int j = 0; j < VIEW_MAX; j++) {
        char node[32], p[600];
        snprintf(node, sizeof(node), "vmc-ov-%d", j);
        if ((nodes >> j & 1) &&
            (rc = qmp_exec(ctx, d->q, "blockdev-del",
                           json_pack("{s:s}", "node-name", node), NULL)) < 0)
            return rc;              /* in use: its file stays */
        snprintf(node, sizeof(node), "vmc-ovf-%d", j);
        if ((files >> j & 1) &&
            (rc = qmp_exec(ctx, d->q, "blockdev-del",
                           json_pack("{s:s}", "node-name", node), NULL)) < 0)
            return rc;
        if ((sets >> j & 1) &&
            (rc = qmp_exec(ctx, d->q, "remove-fd",
                           json_pack("{s:i}", "fdset-id", VIEW_FDSET + j),
                           NULL)) < 0)
            return rc;
        ov_path(d, j, p, sizeof(p));
        if (unlink(p) < 0 && errno != ENOENT)
            return vmc_set_error(ctx, VMC_E_IO, "%s: %s", p, strerror(errno));
        ov_merged_path(d, j, p, sizeof(p));
        unlink(p);
    }
    d->nview = 0;
    return 0;
}
