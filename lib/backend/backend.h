/*
 * backend.h - the hypervisor backend ops table (private to lib/).
 *
 * One const table per hypervisor; the save/restore engine (engine.c) only
 * ever calls through it, and the registry (backend.c) is the only place
 * that lists them.  A backend drives its hypervisor and nothing else: the
 * rules that are the same for every hypervisor (naming a restored domain,
 * clashes, --clone, waiting for a source still being saved, rollback) are
 * the engine's.
 *
 * Every member is required but the three view ops.  Ops returning int
 * return 0 or a negative enum vmc_err with the message set in ctx.  "wall_us" times are
 * CLOCK_REALTIME microseconds (QEMU's QMP events use the same clock).
 * A struct vmc_dom is the backend's handle on one domain: opened by open
 * or restore_start, released by close.
 */
#ifndef VMC_BACKEND_H
#define VMC_BACKEND_H

#include <stdio.h>

#include <jansson.h>

#include "internal.h"

struct vmc_dom;

/* Backend flags. */
#define VMC_BE_UNIQUE_NAMES 0x1   /* the hypervisor refuses two domains of
                                     one name, even for a moment */
#define VMC_BE_SAVE_STOPS   0x2   /* a non-live save_start stops the guest
                                     itself: the engine must not pause it */

/* Who a restored domain will be: decided by the engine (restore_identity). */
struct vmc_restore_as {
    const char *name;                 /* its final name */
    uint8_t uuid[16];
    const char *build_name;           /* the name to build under: name, or a
                                         temporary one until rename */
    /* May be NULL: restore_start calls it as soon as the new domain has
     * an id that open() finds, before its hypervisor process starts (the
     * restore's guardian must know it should the restorer die then). */
    void (*known)(void *arg, int id);
    void *known_arg;
};

enum {                                /* what find() matched */
    VMC_FIND_NONE = 0,
    VMC_FIND_NAME,
    VMC_FIND_UUID,
};

struct vmc_backend {
    const char *name;                 /* "qemu", "xen" */
    uint16_t id;                      /* VMC_BACKEND_* */
    unsigned flags;                   /* VMC_BE_* */

    /* Is this host the backend's home (e.g. a Xen control domain)?  The
     * default backend is the first whose probe says so. */
    int (*probe)(void);

    /* Finds a running domain by name or numeric id.  lock: take the
     * per-domain lock (VMC_E_EXISTS if another vmckpt holds it). */
    int (*open)(struct vmc_ctx *ctx, const char *spec, int lock,
                struct vmc_dom **out);
    void (*close)(struct vmc_dom *d);          /* NULL ok; drops the lock */
    int (*domid)(const struct vmc_dom *d);     /* -1 before it has one */
    const char *(*name_of)(const struct vmc_dom *d);

    /* A domain other than `skip` (an id; -1 for none) named `name` or with
     * UUID `uuid` (either may be NULL): *what says which matched
     * (VMC_FIND_*), *id its id.  Domains being torn down do not count. */
    int (*find)(struct vmc_ctx *ctx, const char *name, const uint8_t *uuid,
                int skip, int *id, int *what);
    /* Is another process saving domain `id` right now (its save lock is
     * held)?  Never fails: 0 when it cannot tell. */
    int (*saving)(int id);

    /* IMAGE_INFO metadata and the backend-native DOMAIN_CONFIG body
     * (*cfg malloc'd, caller frees). */
    int (*describe)(struct vmc_ctx *ctx, struct vmc_dom *d,
                    struct vmc_image_meta *meta, uint32_t *cfg_format,
                    uint8_t **cfg, size_t *cfg_len);
    int (*is_running)(struct vmc_ctx *ctx, struct vmc_dom *d, int *running);
    /* Stops the guest's vCPUs (it stays in memory); *wall_us (may be NULL)
     * gets the moment it stopped.  resume undoes pause, and also brings
     * back a guest that a save left suspended. */
    int (*pause)(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall_us);
    int (*resume)(struct vmc_ctx *ctx, struct vmc_dom *d, int64_t *wall_us);

    /* Starts the hypervisor's save stream into fd (borrowed: the backend
     * hands its own copy to the hypervisor, the caller closes fd).  live:
     * pre-copy while the guest runs; otherwise the caller paused it (or,
     * with VMC_BE_SAVE_STOPS, the hypervisor stops it now). */
    int (*save_start)(struct vmc_ctx *ctx, struct vmc_dom *d, int fd,
                      const struct vmc_save_tuning *t);
    /* While a live save's pre-copy runs: end it now (the guest stops, the
     * hypervisor sends what is left).  Called from the monitor thread. */
    int (*stop_copy)(struct vmc_ctx *ctx, struct vmc_dom *d);
    /* While the stream flows: hypervisor bytes sent so far and the number
     * of the pre-copy round in progress (1-based; 0 if unknown).  Called
     * from the monitor thread. */
    int (*save_poll)(struct vmc_ctx *ctx, struct vmc_dom *d,
                     uint64_t *transferred, uint32_t *round);
    /* After the stream hit EOF: waits for the hypervisor's verdict.
     * *stop_wall_us: when the guest stopped running (live), else 0. */
    int (*save_wait)(struct vmc_ctx *ctx, struct vmc_dom *d,
                     int64_t *stop_wall_us);
    /* Abandons a save in flight (best effort, never fails).  The guardian
     * calls it, then is_running and resume, on a domain it opened after the
     * saving process died: both must work from another process. */
    void (*save_cancel)(struct vmc_dom *d);
    /* A point-in-time view of the carried disks (VMC_DF_CARRIED among
     * disks[0..n)) of a domain that runs on (a checkpoint).  view_prepare
     * readies it while the guest runs; view_take, called once the memory
     * is captured and before the guest runs again (it is stopped or
     * suspended), freezes each disk as it is: the guest's later writes go
     * elsewhere, or fds[i] (the disk file, open read-only) is replaced by
     * a descriptor of a frozen copy (the backend closes the one it
     * replaces, the caller the one it gets); the engine
     * reads fds[i] once the guest runs.  view_release gives the domain its
     * own disk files back with every write since, and removes what
     * prepare and take made.  release must work from another process (the
     * guardian), without the preparer's state, and succeed when there is
     * nothing to release.  All three NULL: a running domain's disks cannot
     * be carried on this backend. */
    int (*view_prepare)(struct vmc_ctx *ctx, struct vmc_dom *d,
                        const struct vmc_disk_info *disks, int n);
    int (*view_take)(struct vmc_ctx *ctx, struct vmc_dom *d,
                     const struct vmc_disk_info *disks, int *fds, int n);
    int (*view_release)(struct vmc_ctx *ctx, struct vmc_dom *d);
    /* Destroys the domain: it is gone when this returns 0. */
    int (*destroy)(struct vmc_ctx *ctx, struct vmc_dom *d);

    /* The restore policy (policy.c): refuses a config that reaches
     * outside the VM, before anything starts.  QEMU and Xen check their
     * config with vmc_config_check(). */
    int (*config_check)(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                        uint32_t cfg_format, const uint8_t *cfg,
                        size_t cfg_len, const struct vmc_policy *pol);
    /* Builds a new domain from the recorded config, paused, named
     * as->build_name with UUID as->uuid, reading the hypervisor stream from
     * fd (borrowed). */
    int (*restore_start)(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                         uint32_t cfg_format, const uint8_t *cfg,
                         size_t cfg_len, const struct vmc_restore_as *as,
                         int fd, struct vmc_dom **out);
    /* After the whole stream was written and authenticated: waits until
     * the hypervisor has loaded it (the domain stays paused). */
    int (*restore_wait)(struct vmc_ctx *ctx, struct vmc_dom *d);
    /* Gives a restored, still paused domain its final name (only called
     * when it was built under another one). */
    int (*rename)(struct vmc_ctx *ctx, struct vmc_dom *d, const char *name);
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

};

/* A backend built as a module (XEN=module: the xen backend in its own
 * package) exports vmc_backend_module(VMC_BACKEND_ABI, sizeof(struct
 * vmc_backend)), which returns its table, or NULL if it was built for
 * another ops table.  Bump VMC_BACKEND_ABI whenever this struct changes. */
#define VMC_BACKEND_ABI 3
typedef const struct vmc_backend *(*vmc_backend_module_fn)(unsigned abi,
                                                           size_t size);

extern const struct vmc_backend vmc_backend_qemu;
#ifdef VMC_HAVE_XEN
extern const struct vmc_backend vmc_backend_xen;
#endif

const struct vmc_backend *backend_by_id(uint16_t id);

/* ---- the restore policy (policy.c, qemu_policy.c, xen_policy.c) ----------
 * A config from an image is data: these run before any hypervisor process
 * starts, and refuse, naming it, an option that reaches outside the VM. */
/* 0 if path is an existing regular file (or, dir_ok, directory) under an
 * allowed directory once every symlink is resolved; opt names it. */
/* A copy to widen (NULL: out of memory). */
struct vmc_policy *policy_dup(const struct vmc_policy *p);
int policy_path_ok(struct vmc_ctx *ctx, const struct vmc_policy *p,
                   const char *opt, const char *path, int dir_ok);
int qemu_policy_check(struct vmc_ctx *ctx, const json_t *argv,
                      const struct vmc_policy *pol);
int xen_policy_check(struct vmc_ctx *ctx, const json_t *cfg,
                     const struct vmc_policy *pol);
/* The disks a config names, in order (index = ordinal), with the path,
 * id, read-only and format the config gives (virtual_size 0: the caller
 * looks at the file); set_disk points disk `id` at path (a new *cfg;
 * raw: the file is raw, whatever the format was). */
int config_disks(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                 uint32_t format, const uint8_t *cfg, size_t len,
                 struct vmc_disk_info *out, int max, int *n);
int config_set_disk(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                    uint32_t format, uint8_t **cfg, size_t *len, const char *id,
                    const char *path, int raw);
/* The network devices a config names (ids as vmc_net_info says); set_net
 * gives network `id` the attachment att (VMC_E_INVAL: no such id,
 * VMC_E_FORMAT: att is not an attachment). */
int config_nets(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                uint32_t format, const uint8_t *cfg, size_t len,
                struct vmc_net_info *out, int max, int *n);
int config_set_net(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                   uint32_t format, uint8_t **cfg, size_t *len, const char *id,
                   const char *att);
int qemu_config_nets(const json_t *argv, struct vmc_net_info *out, int max,
                     int *n);
int qemu_config_set_net(json_t *argv, const char *id, const char *att);
int xen_config_nets(const json_t *cfg, struct vmc_net_info *out, int max,
                    int *n);
int xen_config_set_net(json_t *cfg, const char *id, const char *bridge);
int qemu_config_disks(const json_t *argv, struct vmc_disk_info *out, int max,
                      int *n);
int qemu_config_set_disk(json_t *argv, const char *id, const char *path,
                         int raw);
/* One -drive value: its file (unescaped; "" if none) and whether QEMU
 * opens it read-only (readonly=on, media=cdrom).  refile: the same value
 * with file= set to newfile and auto-read-only=off unless the value sets
 * auto-read-only.  VMC_E_LIMIT: the value does not parse or fit. */
int qemu_drive_file(const char *value, char *file, size_t n, int *ro);
/* Appends v to s (cap octets, *len used) with QEMU's comma doubling. */
void qemu_put_escaped(char *s, size_t cap, size_t *len, const char *v);
int qemu_drive_refile(const char *value, const char *newfile, char *out,
                      size_t n);
int xen_config_disks(const json_t *cfg, struct vmc_disk_info *out, int max,
                     int *n);
int xen_config_set_disk(json_t *cfg, const char *id, const char *path,
                        int raw);
/* The command line a QEMU restore would run (qemu_registry.c), shell-quoted
 * (caller frees); dir: the instance directory, or a placeholder. */
char *qemu_command_text(const json_t *cfg, const char *name, const char *uuid,
                        const char *dir);
/* Adds a backend (a module, a test's fake) ahead of qemu in the default
 * order; VMC_E_EXISTS if its name or id is taken. */
int backend_register(const struct vmc_backend *be);

#endif
