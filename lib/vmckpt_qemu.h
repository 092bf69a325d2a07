/*
 * vmckpt_qemu.h - the QEMU backend's own API: the registry of the QEMU
 * instances that vmckpt manages (what vmctl(1) drives).  Save, restore
 * and migration of any backend's domains are in vmckpt.h; this header
 * holds only what exists for QEMU alone.
 * Owns: the registry's public calls.  Must not: expose the instance
 * handle or QMP (both stay in lib/backend/).
 */
#ifndef VMCKPT_QEMU_H
#define VMCKPT_QEMU_H

#include "vmckpt.h"

/* The registry: vmc_rundir() plus one directory per instance. */
VMC_API const char *vmc_qemu_rundir(void);
/* Starts QEMU with argv (its arguments, without the program) as domain
 * name, under a fresh id (*domid); uuid NULL: a random one. */
VMC_API int vmc_qemu_start(struct vmc_ctx *ctx, const char *name,
                           const char *uuid, int argc, char **argv,
                           int *domid);
/* One instance, as vmc_qemu_list() shows it.  The strings belong to the
 * library and are valid only during the callback: copy what you keep. */
struct vmc_qemu_dom_info {
    int id;
    const char *name;
    const char *uuid;         /* canonical text form */
    const char *state;        /* QEMU's run state, or "busy" */
    int pid;
    const char *dir;          /* its directory in the registry */
};
/* Calls fn for every live instance, until fn returns non-zero. */
typedef int (*vmc_qemu_list_fn)(const struct vmc_qemu_dom_info *, void *);
VMC_API int vmc_qemu_list(struct vmc_ctx *ctx, vmc_qemu_list_fn fn, void *arg);

#endif
