/*
 * policy.c - the restore policy's allowed directories: where a domain
 * config from an image (or an admin's --config) may name host files.
 * qemu_policy.c and xen_policy.c check each hypervisor's options.
 *
 * Owns: the allowed directories and the check of a host path.
 * Must not: accept a path before every symlink in it is resolved.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemu.h"

struct vmc_policy {
    int ndirs;
    char *dirs[64];           /* realpath()s */
};

/* Where firmware, kernels and disks of a restored domain usually live;
 * the admin adds more (vmc_policy_allow_dir, VMCKPT_ALLOW_DIRS,
 * /etc/vmckpt/allowed_dirs). */
static const char *const builtin_dirs[] = {
    "/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu",
    "/usr/share/ovmf", "/usr/share/OVMF", "/var/lib/vmckpt",
};

struct vmc_policy *vmc_policy_new(void)
{
    struct vmc_policy *p = calloc(1, sizeof(*p));
    const char *env;

    if (!p)
        return NULL;
    for (size_t i = 0; i < sizeof(builtin_dirs) / sizeof(builtin_dirs[0]); i++)
        vmc_policy_allow_dir(NULL, p, builtin_dirs[i]);
    if ((env = secure_getenv("VMCKPT_ALLOW_DIRS"))) {
        char *copy = vmc_strdup(env), *save = NULL;
        for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d;
             d = strtok_r(NULL, ":", &save))
            vmc_policy_allow_dir(NULL, p, d);
        free(copy);
    }
    return p;
}

struct vmc_policy *policy_dup(const struct vmc_policy *p)
{
    struct vmc_policy *d = calloc(1, sizeof(*d));

    for (int i = 0; d && i < p->ndirs; i++) {
        if (!(d->dirs[i] = vmc_strdup(p->dirs[i]))) {
            vmc_policy_free(d);
            return NULL;
        }
        d->ndirs++;
    }
    return d;
}

void vmc_policy_free(struct vmc_policy *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->ndirs; i++)
        free(p->dirs[i]);
    free(p);
}

/* A directory that does not exist is skipped (the built-in ones are only
 * where a package may put files). */
int vmc_policy_allow_dir(struct vmc_ctx *ctx, struct vmc_policy *p,
                         const char *dir)
{
    char real[PATH_MAX];

    if (!realpath(dir, real)) {
        if (errno == ENOENT)
            return 0;
        return vmc_set_error(ctx, VMC_E_IO, "allowed directory %s: %s", dir,
                             strerror(errno));
    }
    if (!strcmp(real, "/"))
        return vmc_set_error(ctx, VMC_E_INVAL, "allowed directory %s: the "
                             "whole file system is not a directory to allow",
                             dir);
    for (int i = 0; i < p->ndirs; i++)
        if (!strcmp(p->dirs[i], real))
            return 0;
    if (p->ndirs == (int)(sizeof(p->dirs) / sizeof(p->dirs[0])))
        return vmc_set_error(ctx, VMC_E_LIMIT, "more than 64 allowed "
                             "directories");
    if (!(p->dirs[p->ndirs] = vmc_strdup(real)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    p->ndirs++;
    return 0;
}

/* The admin's list: one absolute directory per line, # comments.  A file
 * that another user can write is refused (it would widen the policy). */
int vmc_policy_load_file(struct vmc_ctx *ctx, struct vmc_policy *p,
                         const char *path)
{
    char line[PATH_MAX + 2];
    struct stat st;
    FILE *f = fopen(path, "re");
    int rc = 0, n = 0;

    if (!f)
        return errno == ENOENT ? 0 : vmc_set_error(ctx, VMC_E_IO, "%s: %s",
                                                   path, strerror(errno));
    if (fstat(fileno(f), &st) < 0 || (st.st_uid != 0 && st.st_uid != geteuid()) ||
        (st.st_mode & 022)) {
        fclose(f);
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: writable by another user "
                             "(or not owned by root or you): refused", path);
    }
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        size_t l = strcspn(line, "\r\n");
        char *s = line;
        n++;
        line[l] = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        if (*s != '/')
            rc = vmc_set_error(ctx, VMC_E_INVAL, "%s:%d: not an absolute "
                               "directory", path, n);
        else
            rc = vmc_policy_allow_dir(ctx, p, s);
    }
    fclose(f);
    return rc;
}

/* 0 if path names an existing regular file (or, dir_ok, a directory)
 * under an allowed directory, after every symlink is resolved. */
int policy_path_ok(struct vmc_ctx *ctx, const struct vmc_policy *p,
                   const char *opt, const char *path, int dir_ok)
{
    char real[PATH_MAX];
    struct stat st;

    if (!*path)
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: empty path", opt);
    /* "nbd:host", "json:{...}", "http://...": a protocol, not a file */
    if (path[0] != '/' && path[0] != '.' && strchr(path, ':') &&
        strchr(path, ':') < (strchr(path, '/') ? strchr(path, '/')
                                               : path + strlen(path)))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: a protocol, not a file "
                             "(refused by the restore policy)", opt, path);
    if (!realpath(path, real) || stat(real, &st) < 0)
        return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: %s", opt, path,
                             strerror(errno));
    if (!S_ISREG(st.st_mode) && !(dir_ok && S_ISDIR(st.st_mode)))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: not a regular file "
                             "(host devices are refused by the restore "
                             "policy)", opt, path);
    for (int i = 0; i < p->ndirs; i++) {
        size_t l = strlen(p->dirs[i]);
        if (!strncmp(real, p->dirs[i], l) && (real[l] == '/' || real[l] == '\0'))
            return 0;
    }
    vmc_set_error(ctx, VMC_E_INVAL, "%s %s: outside the allowed directories "
                  "(restore policy)", opt, path);
    return vmc_set_hint(ctx, VMC_HINT_ALLOW_DIR);
}


/* ---- a DOMAIN_CONFIG body, whichever backend ------------------------------ */

static int config_json(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                       uint32_t format, const uint8_t *cfg, size_t len,
                       json_t **out)
{
    json_error_t je;
    uint32_t want = m->backend == VMC_BACKEND_QEMU ? VMC_CFG_QEMU_JSON :
                    m->backend == VMC_BACKEND_XEN ? VMC_CFG_LIBXL_JSON : 0;

    *out = NULL;
    if (!want)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "an image of backend %s "
                             "records no domain config",
                             vmc_backend_id_name(m->backend));
    if (format != want)
        return vmc_set_error(ctx, VMC_E_FORMAT, "domain config format %u is "
                             "not %s's", format, vmc_backend_id_name(m->backend));
    if (!(*out = json_loadb((const char *)cfg, len, JSON_REJECT_DUPLICATES, &je)))
        return vmc_set_error(ctx, VMC_E_FORMAT, "domain config: not JSON: %s "
                             "(line %d)", je.text, je.line);
    if (!json_is_object(*out) ||
        (want == VMC_CFG_QEMU_JSON &&
         !json_is_array(json_object_get(*out, "argv")))) {
        json_decref(*out);
        *out = NULL;
        return vmc_set_error(ctx, VMC_E_FORMAT, "domain config: %s",
                             want == VMC_CFG_QEMU_JSON ? "no \"argv\" list"
                                                       : "not a JSON object");
    }
    return 0;
}

int vmc_config_check(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                     uint32_t format, const uint8_t *cfg, size_t len,
                     const struct vmc_policy *p)
{
    struct vmc_policy *own = NULL;
    json_t *j;
    int rc;

    if ((rc = config_json(ctx, m, format, cfg, len, &j)) < 0)
        return rc;
    if (!p && !(p = own = vmc_policy_new())) {
        json_decref(j);
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    }
    rc = m->backend == VMC_BACKEND_QEMU ?
         qemu_policy_check(ctx, json_object_get(j, "argv"), p) :
         xen_policy_check(ctx, j, p);
    vmc_policy_free(own);
    json_decref(j);
    return rc;
}

int vmc_config_show(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                    uint32_t format, const uint8_t *cfg, size_t len, char **text)
{
    json_t *j;
    char u[37];
    int rc;

    *text = NULL;
    if ((rc = config_json(ctx, m, format, cfg, len, &j)) < 0)
        return rc;
    if (m->backend == VMC_BACKEND_QEMU) {
        qemu_uuid_fmt(u, m->uuid);
        *text = qemu_command_text(j, m->name, u, "RUNDIR/ID");
    } else {
        *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    }
    json_decref(j);
    return *text ? 0 : vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
}

/* ---- the disks a config names ------------------------------------------- */

/* The disks (or, nets, the network devices) of a config. */
static int config_list(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                       uint32_t format, const uint8_t *cfg, size_t len,
                       int nets, void *out, int max, int *n)
{
    const char *what;
    json_t *j, *argv;
    int rc;

    *n = 0;
    if (m->backend != VMC_BACKEND_QEMU && m->backend != VMC_BACKEND_XEN)
        return 0;                   /* a config vmckpt cannot read: none */
    if ((rc = config_json(ctx, m, format, cfg, len, &j)) < 0)
        return rc;
    argv = json_object_get(j, "argv");
    if (m->backend == VMC_BACKEND_QEMU)
        rc = nets ? qemu_config_nets(argv, out, max, n) :
                    qemu_config_disks(argv, out, max, n);
    else
        rc = nets ? xen_config_nets(j, out, max, n) :
                    xen_config_disks(j, out, max, n);
    json_decref(j);
    if (rc == VMC_E_LIMIT)
        what = nets ? "too many network devices" : "more than 64 disks";
    else
        what = nets ? "a -netdev that does not parse" :
                      "a -drive that does not parse";
    return rc < 0 ? vmc_set_error(ctx, rc, "domain config: %s", what) : 0;
}

int config_disks(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                 uint32_t format, const uint8_t *cfg, size_t len,
                 struct vmc_disk_info *out, int max, int *n)
{
    return config_list(ctx, m, format, cfg, len, 0, out, max, n);
}

int config_nets(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                uint32_t format, const uint8_t *cfg, size_t len,
                struct vmc_net_info *out, int max, int *n)
{
    return config_list(ctx, m, format, cfg, len, 1, out, max, n);
}

/* One edit of a config in place: parsed, edited by fn (rc < 0: refused),
 * written back compact.  *told: ctx says why it failed (the config does
 * not parse, or out of memory); else the caller names fn's refusal. */
static int config_edit(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                       uint32_t format, uint8_t **cfg, size_t *len,
                       int (*fn)(json_t *j, int qemu, const void *arg),
                       const void *arg, int *told)
{
    json_t *j;
    char *text;
    int rc;

    *told = 1;
    if ((rc = config_json(ctx, m, format, *cfg, *len, &j)) < 0)
        return rc;
    rc = fn(j, m->backend == VMC_BACKEND_QEMU, arg);
    text = rc < 0 ? NULL : json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (rc == VMC_E_NOMEM || (rc == 0 && !text))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if (rc < 0) {
        *told = 0;
        return rc;
    }
    free(*cfg);
    *cfg = (uint8_t *)text;
    *len = strlen(text);
    return 0;
}

struct set_arg {
    const char *id, *to;
    int raw;
};

static int set_disk(json_t *j, int qemu, const void *arg)
{
    const struct set_arg *a = arg;

    return qemu ? qemu_config_set_disk(json_object_get(j, "argv"), a->id,
                                       a->to, a->raw) :
                  xen_config_set_disk(j, a->id, a->to, a->raw);
}

static int set_net(json_t *j, int qemu, const void *arg)
{
    const struct set_arg *a = arg;

    return qemu ? qemu_config_set_net(json_object_get(j, "argv"), a->id, a->to)
                : xen_config_set_net(j, a->id, a->to);
}

int config_set_disk(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                    uint32_t format, uint8_t **cfg, size_t *len, const char *id,
                    const char *path, int raw)
{
    struct set_arg a = { id, path, raw };
    int told, rc = config_edit(ctx, m, format, cfg, len, set_disk, &a, &told);

    if (told || rc == 0)
        return rc;
    if (rc == VMC_E_INVAL)
        return vmc_set_error(ctx, rc, "disk %s: the domain config has no such "
                             "disk (vmimage config lists them)", id);
    return vmc_set_error(ctx, rc, "domain config: disk %s: cannot point it "
                         "at %s", id, path);
}

int config_set_net(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                   uint32_t format, uint8_t **cfg, size_t *len, const char *id,
                   const char *att)
{
    struct set_arg a = { id, att, 0 };
    int told, rc = config_edit(ctx, m, format, cfg, len, set_net, &a, &told);

    if (told || rc == 0)
        return rc;
    if (rc == VMC_E_INVAL)
        return vmc_set_error(ctx, rc, "network %s: the domain config has no "
                             "such network device (vmimage config lists them)",
                             id);
    if (rc == VMC_E_FORMAT)
        return vmc_set_error(ctx, VMC_E_INVAL, "network %s: '%s' is not %s", id,
                             att, m->backend == VMC_BACKEND_QEMU ?
                             "a -netdev back end (TYPE[,KEY=VALUE...], without "
                             "id=)" : "a bridge name");
    return vmc_set_error(ctx, rc, "domain config: network %s: cannot attach "
                         "it to %s", id, att);
}

int vmc_config_devices(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                       uint32_t format, const uint8_t *cfg, size_t len,
                       struct vmc_disk_info *disks, int maxd, int *nd,
                       struct vmc_net_info *nets, int maxn, int *nn)
{
    int rc = config_disks(ctx, m, format, cfg, len, disks, maxd, nd);

    return rc < 0 ? rc : config_nets(ctx, m, format, cfg, len, nets, maxn, nn);
}
