/*
 * backend.h - the hypervisor backend ops table (private to lib/).
 *
 * One const table per hypervisor; the save/restore engine (engine.c) only
 * ever calls through it.  Every member is required.  All return 0 or a
 * negative enum vmc_err with the message set in ctx; "wall_us" times are
 * CLOCK_REALTIME microseconds (QEMU's QMP events use the same clock).
 */
#ifndef VMC_BACKEND_H
#define VMC_BACKEND_H

#include <stdio.h>

#include "internal.h"

struct vmc_dom;

struct vmc_backend {
    const char *name;                 /* "qemu", "xen" */
    uint16_t id;                      /* VMC_BACKEND_* */

    /* Finds a running domain by name or numeric id.  lock: take the
     * per-domain lock (VMC_E_EXISTS if another vmckpt holds it). */
    int (*open)(struct vmc_ctx *ctx, const char *spec, int lock,
                struct vmc_dom **out);
    void (*close)(struct vmc_dom *d);          /* NULL ok; drops the lock */
    int (*domid)(const struct vmc_dom *d);
    const char *(*name_of)(const struct vmc_dom *d);

    /* IMAGE_INFO metadata and the backend-native DOMAIN_CONFIG body
     * (*cfg malloc'd, caller frees). */
    int (*describe)(struct vmc_ctx *ctx, struct vmc_dom *d,
                    struct vmc_image_meta *meta, uint32_t *cfg_format,
                    uint8_t **cfg, size_t *cfg_len);
    int (*is_running)(struct vmc_ctx *ctx, struct vmc_dom *d, int *running);
    int (*pause)(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall_us);
    int (*resume)(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall_us);

    /* Starts the hypervisor's save stream into fd (borrowed: the backend
     * hands its own copy to the hypervisor, the caller closes fd).  live:
     * pre-copy while the guest runs; otherwise the caller paused it. */
    int (*save_start)(struct vmc_ctx *ctx, struct vmc_dom *d, int fd,
                      const struct vmc_save_tuning *t);
    /* After the stream hit EOF: waits for the hypervisor's verdict.
     * *stop_wall_us: when the guest stopped running (live), else 0. */
    int (*save_wait)(struct vmc_ctx *ctx, struct vmc_dom *d,
                     int64_t *stop_wall_us);
    /* While the stream flows: hypervisor bytes sent so far and the number
     * of the pre-copy round in progress (1-based; 0 if unknown). */
    int (*save_poll)(struct vmc_ctx *ctx, struct vmc_dom *d,
                     uint64_t *transferred, uint32_t *round);
    /* Abandons a save in flight (best effort, never fails). */
    void (*save_cancel)(struct vmc_dom *d);
    int (*destroy)(struct vmc_ctx *ctx, struct vmc_dom *d);

    /* Builds a new domain from the recorded config, paused, reading the
     * hypervisor stream from fd (borrowed).  new_name: NULL to keep the
     * recorded name; clone: also a fresh name and UUID. */
    int (*restore_start)(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                         uint32_t cfg_format, const uint8_t *cfg,
                         size_t cfg_len, const char *new_name, int clone,
                         int fd, struct vmc_dom **out);
    /* After the whole stream was written and authenticated: waits until
     * the hypervisor has loaded it (the domain stays paused). */
    int (*restore_wait)(struct vmc_ctx *ctx, struct vmc_dom *d);
    /* Tears down a half-built domain completely (never fails). */
    void (*restore_abort)(struct vmc_dom *d);

    /* A connected fd to the domain's console (caller closes). */
    int (*console_open)(struct vmc_ctx *ctx, struct vmc_dom *d, int *fd);

    /* After a failed save that left the domain not running: did the guest
     * itself die (crashed, triple-faulted, vanished) rather than stop?
     * Returns 1 and puts the hypervisor's own reason in why (one line,
     * "" if it gave none), writing what it knows (hypervisor log lines,
     * the domain's state and logs) to ev; 0 if the domain still exists in
     * a state that is not a death. */
    int (*died)(struct vmc_dom *d, char *why, size_t n, FILE *ev);

    /* Run by the guardian process after the saving process died: brings
     * domain `domid` back to running (cancelling any save in flight). */
    int (*recover)(struct vmc_ctx *ctx, int domid);
};

extern const struct vmc_backend vmc_backend_qemu;
#ifdef VMC_HAVE_XEN
extern const struct vmc_backend vmc_backend_xen;
#endif

const struct vmc_backend *backend_by_id(uint16_t id);

#endif
