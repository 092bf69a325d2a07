/*
 * backend.c - the registry of hypervisor backends: which are built, which
 * one a host defaults to (each backend's own probe), and the names of the
 * backend ids that the wire format knows.
 *
 * Built with XEN=module (the Debian packages), the xen backend is not in
 * the library but in BACKEND_DIR/xen.so, loaded on first use when it is
 * installed: a KVM host never needs the Xen libraries.
 *
 * Owns: the table of backends and its lookups, and loading modules.
 * Must not: know any hypervisor's details (those are the backends' probe
 * ops) or be called with a backend's lock held.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

/* In order of preference for the default: the first whose probe says this
 * host is its home.  qemu's probe is always true (TCG runs anywhere). */
static const struct vmc_backend *backends[8] = {
#ifdef VMC_HAVE_XEN
    &vmc_backend_xen,
#endif
    &vmc_backend_qemu,
};

#ifdef VMC_XEN_MODULES
#ifndef VMC_BACKEND_DIR
#define VMC_BACKEND_DIR "/usr/lib/vmckpt/backends"
#endif
static pthread_once_t modules_once = PTHREAD_ONCE_INIT;
static char modules_note[320] = "xen: not installed (the vmckpt-xen package)";

/* BACKEND_DIR/xen.so, or $VMCKPT_BACKEND_DIR/xen.so (ignored in a set-uid
 * process: secure_getenv).  A module that is missing or does not match
 * this library is left out, and vmc_backends_built() says why. */
static void modules_load(void)
{
    const char *dir = secure_getenv("VMCKPT_BACKEND_DIR");
    vmc_backend_module_fn fn;
    const struct vmc_backend *be;
    char path[512];
    void *h;

    snprintf(path, sizeof(path), "%s/xen.so", dir && *dir ? dir
                                                           : VMC_BACKEND_DIR);
    if (!(h = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        if (access(path, F_OK) == 0)
            snprintf(modules_note, sizeof(modules_note), "xen: %.300s", dlerror());
        return;
    }
    fn = (vmc_backend_module_fn)dlsym(h, "vmc_backend_module");
    if (!fn || !(be = fn(VMC_BACKEND_ABI, sizeof(struct vmc_backend))) ||
        backend_register(be) < 0) {
        snprintf(modules_note, sizeof(modules_note), "xen: %.250s was built for "
                 "another libvmckpt", path);
        dlclose(h);
        return;
    }
    modules_note[0] = '\0';                /* stays loaded */
}
#define MODULES() pthread_once(&modules_once, modules_load)
#else
#define MODULES() ((void)0)
#endif

static size_t nbackends(void)
{
    size_t n = 0;

    while (n < sizeof(backends) / sizeof(backends[0]) && backends[n])
        n++;
    return n;
}

int backend_register(const struct vmc_backend *be)
{
    size_t n = nbackends();

    if (n == sizeof(backends) / sizeof(backends[0]))
        return VMC_E_LIMIT;
    for (size_t i = 0; i < n; i++)
        if (backends[i]->id == be->id || !strcmp(backends[i]->name, be->name))
            return VMC_E_EXISTS;
    /* before qemu, which claims every host */
    backends[n] = backends[n - 1];
    backends[n - 1] = be;
    return 0;
}

const struct vmc_backend *vmc_backend_get(const char *name)
{
    MODULES();
    for (size_t i = 0; i < nbackends(); i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

const struct vmc_backend *backend_by_id(uint16_t id)
{
    MODULES();
    for (size_t i = 0; i < nbackends(); i++)
        if (backends[i]->id == id)
            return backends[i];
    return NULL;
}

const struct vmc_backend *vmc_backend_default(void)
{
    MODULES();
    for (size_t i = 0; i < nbackends(); i++)
        if (backends[i]->probe())
            return backends[i];
    return &vmc_backend_qemu;
}

const char *vmc_backends_built(void)
{
#if defined(VMC_HAVE_XEN)
    return "qemu xen";
#elif defined(VMC_XEN_MODULES)
    static char buf[400];

    MODULES();
    if (!modules_note[0])
        return "qemu xen";
    snprintf(buf, sizeof(buf), "qemu (%s)", modules_note);
    return buf;
#else
    return "qemu (xen: not built, no libxl headers)";
#endif
}
