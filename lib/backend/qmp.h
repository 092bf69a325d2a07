/*
 * qmp.h - a small QMP client for the QEMU backend (private to lib/): one
 * unix socket, JSON lines parsed with jansson, descriptors passed with
 * SCM_RIGHTS, the events that arrived while waiting kept for the caller.
 * Owns: the QMP conversation (greeting, capabilities, command, reply).
 * Must not: know what a save, a restore or a domain is.
 */
#ifndef VMC_QMP_H
#define VMC_QMP_H

#include <jansson.h>

#include "internal.h"

#define QMP_MAX_EVENTS 64
struct qmp_event {
    char name[48];
    int64_t ts_us;            /* QEMU's wall-clock timestamp */
};
struct qmp;

/* Connects, reads the greeting, negotiates capabilities. */
int qmp_connect(struct vmc_ctx *ctx, const char *path, int timeout_ms,
                struct qmp **out);
void qmp_close(struct qmp *q);
/* Runs cmd; args is consumed (may be NULL); *ret gets a new reference to
 * the "return" value (may be NULL).  Events seen meanwhile are recorded.
 * Errors go to the ctx of the call (a connection keeps none: it outlives
 * the ctx it was opened with). */
int qmp_exec(struct vmc_ctx *ctx, struct qmp *q, const char *cmd, json_t *args,
             json_t **ret);
/* Same, passing fd with SCM_RIGHTS (for getfd). */
int qmp_exec_fd(struct vmc_ctx *ctx, struct qmp *q, const char *cmd,
                json_t *args, int fd, json_t **ret);
int qmp_wait_event(struct vmc_ctx *ctx, struct qmp *q, const char *name,
                   int timeout_ms, int64_t *ts_us);
const struct qmp_event *qmp_find_event(const struct qmp *q, const char *name,
                                       int last);
void qmp_clear_events(struct qmp *q);
int64_t qmp_wall_us(void);

#endif
