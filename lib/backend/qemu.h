/*
 * qemu.h - what the QEMU backend's files share (private to
 * lib/backend/): the instance handle, the registry of instances
 * (qemu_registry.c) that the ops (qemu.c) stand on, and the config
 * helpers of qemu_policy.c.
 * Owns: struct vmc_dom for QEMU.  Must not: be included outside
 * lib/backend/ (the tools reach QEMU through vmckpt_qemu.h).
 */
#ifndef VMC_QEMU_H
#define VMC_QEMU_H

#include <sys/types.h>

#include <jansson.h>

#include "backend.h"
#include "qmp.h"
#include "../vmckpt_qemu.h"

struct vmc_dom {
    int id;
    char dir[512];
    char name[256];
    uint8_t uuid[16];
    pid_t pid;
    int lock_fd;
    json_t *cfg;              /* domain.json */
    struct qmp *q;
    int nview;                /* view_prepare: overlays made */
    const char *ovdir;        /* where the overlay files are (NULL: dir) */
    char view_base[VMC_DISK_MAX][64];   /* ...over these disk nodes */
};

struct find { const char *spec; int id; uint8_t uuid[16]; int by_uuid; };

/* The system user QEMU runs as when vmckpt runs as root. */
#define VMC_QEMU_USER "vmckpt-qemu"

int qemu_alloc_dir(struct vmc_ctx *ctx, struct vmc_dom *d);
const char *qemu_binary(void);
void qemu_dom_free(struct vmc_dom *d);
/* Calls fn for every live instance; stops when fn returns non-zero (its
 * value is returned); an unsafe registry directory is an error. */
int qemu_each(struct vmc_ctx *ctx, int (*fn)(struct vmc_dom *, void *),
              void *arg);
int qemu_find_fn(struct vmc_dom *d, void *arg);
void qemu_kill_and_wait(pid_t pid);
void qemu_last_log_line(const char *dir, char *out, size_t cap);
int qemu_launch(struct vmc_ctx *ctx, struct vmc_dom *d, const char **extra);
/* d's QMP connection, made on first use. */
int qemu_qmp(struct vmc_ctx *ctx, struct vmc_dom *d);
/* The point-in-time view of the carried disks (qemu_view.c): the ops
 * view_prepare, view_take and view_release of backend.h. */
int qemu_view_prepare(struct vmc_ctx *ctx, struct vmc_dom *d,
                      const struct vmc_disk_info *disks, int n);
int qemu_view_take(struct vmc_ctx *ctx, struct vmc_dom *d,
                   const struct vmc_disk_info *disks, int *fds, int n);
int qemu_view_release(struct vmc_ctx *ctx, struct vmc_dom *d);
/* 0 with *live (1: QEMU runs; 0: gone, litter), or VMC_E_BACKEND. */
int qemu_load(struct vmc_ctx *ctx, int id, struct vmc_dom *d, int *live);
int qemu_lock_instance(const char *dir, int create, int *fd);
int qemu_pid_alive(pid_t pid);
int qemu_pid_ours(pid_t pid, const char *dir);
void qemu_rmdir_all(const char *dir);
void qemu_uuid_fmt(char out[37], const uint8_t u[16]);
/* QEMU's run state ("running", "paused", ...) into st (qemu.c). */
int qemu_query_status(struct vmc_ctx *ctx, struct vmc_dom *d, char *st,
                      size_t cap);

#endif
