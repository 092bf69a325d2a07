/*
 * backend.c - the registry of hypervisor backends: which are built, which
 * one a host defaults to (each backend's own probe), and the names of the
 * backend ids that the wire format knows.
 *
 * Owns: the table of backends and its lookups.  Must not: know any
 * hypervisor's details (those are the backends' probe ops) or be called
 * with a backend's lock held.
 */
#include <string.h>

#include "backend.h"

/* In order of preference for the default: the first whose probe says this
 * host is its home.  qemu's probe is always true (TCG runs anywhere). */
static const struct vmc_backend *backends[8] = {
#ifdef VMC_HAVE_XEN
    &vmc_backend_xen,
#endif
    &vmc_backend_qemu,
};

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
    for (size_t i = 0; i < nbackends(); i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

const struct vmc_backend *backend_by_id(uint16_t id)
{
    for (size_t i = 0; i < nbackends(); i++)
        if (backends[i]->id == id)
            return backends[i];
    return NULL;
}

const struct vmc_backend *vmc_backend_default(void)
{
    for (size_t i = 0; i < nbackends(); i++)
        if (backends[i]->probe())
            return backends[i];
    return &vmc_backend_qemu;
}

const char *vmc_backends_built(void)
{
#ifdef VMC_HAVE_XEN
    return "qemu xen";
#else
    return "qemu (xen: not built, no libxl headers)";
#endif
}

const char *vmc_backend_id_name(unsigned id)
{
    switch (id) {
    case VMC_BACKEND_NONE: return "none";
    case VMC_BACKEND_XEN: return "xen";
    case VMC_BACKEND_QEMU: return "qemu";
    }
    return "unknown";
}
