/*
 * xen_policy.c - what a libxl domain config from an image may ask for.
 *
 * The JSON is libxl's own (libxl_domain_config_to_json), read here as data
 * without libxl, so that a host without the Xen backend can still say what
 * an image would ask for.  The check walks every object, whatever its
 * nesting ("type.hvm", devices), and refuses the keys that make the
 * restoring dom0 run a program, pass host hardware or files through, or
 * open host ports; vmckpt(5), "RESTORE POLICY", lists them.
 *
 * Owns: the libxl config keys a restore refuses.
 * Must not: call libxl.
 */
#include <string.h>
#include <strings.h>

#include "backend.h"

/* Keys whose mere presence with a value (non-empty string, list or true)
 * reaches outside the VM. */
static const struct {
    const char *key;
    const char *why;
} deny[] = {
    { "bootloader", "runs a program in dom0 (bootloader)" },
    { "bootloader_args", "runs a program in dom0 (bootloader)" },
    { "device_model", "names the device-model binary" },
    { "device_model_override", "names the device-model binary" },
    { "device_model_user", "chooses the device model's user" },
    { "device_model_stubdomain", "replaces the device model (stub domain)" },
    { "stubdomain_kernel", "loads a host file (stub domain kernel)" },
    { "stubdomain_ramdisk", "loads a host file (stub domain ramdisk)" },
    { "stubdomain_cmdline", "configures a stub domain" },
    { "extra", "adds device-model arguments" },
    { "extra_pv", "adds device-model arguments" },
    { "extra_hvm", "adds device-model arguments" },
    { "script", "runs a hotplug script in dom0" },
    { "pcidevs", "passes host PCI devices through" },
    { "dtdevs", "passes host devices through" },
    { "ioports", "passes host I/O ports through" },
    { "irqs", "passes host interrupts through" },
    { "iomem", "passes host memory through" },
    { "rdms", "passes host memory regions through" },
    { "usbdevs", "passes host USB devices through" },
    { "vtpms", "attaches a TPM back end" },
    { "p9s", "shares a host directory" },
    { "pvcallsifs", "gives the guest host sockets" },
    { "channels", "connects host sockets or files" },
    { "vsnds", "attaches host sound" },
    { "soundhw", "attaches host sound" },
    { "spice", "opens a display port" },
    { "sdl", "opens a display on the host" },
    { "vnc", "opens a display port" },
    { "vfbs", "opens a display port" },
    { "smbios_firmware", "loads a host file" },
    { "acpi_firmware", "loads a host file" },
    { "system_firmware", "loads a host file" },
};

/* A value that asks for something: a non-empty string or list, true, an
 * object with "enable" true, any number but 0. */
static int set(const json_t *v)
{
    const char *s;

    switch (json_typeof(v)) {
    case JSON_STRING:
        s = json_string_value(v);
        return *s && strcmp(s, "False") && strcmp(s, "default");
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_OBJECT: {
        const json_t *e = json_object_get(v, "enable");
        return e ? set(e) : json_object_size(v) > 0;
    }
    case JSON_TRUE:
        return 1;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    default:
        return 0;
    }
}

/* HVM serial ports and USB devices (k: "serial..." or "usbdevice..."),
 * one value or a list of them: the emulated ones only. */
static int emulated_only(struct vmc_ctx *ctx, const char *k, const json_t *v)
{
    size_t i = 0, n = json_is_array(v) ? json_array_size(v) : 1;

    for (; i < n; i++) {
        const char *s = json_string_value(json_is_array(v) ?
                                          json_array_get(v, i) : v);
        int ok = !s || (k[0] == 's' ?
                        !strcmp(s, "pty") || !strcmp(s, "none") ||
                        !strcmp(s, "null") :
                        !strcmp(s, "tablet") || !strcmp(s, "mouse") ||
                        !strcmp(s, "keyboard"));
        if (!ok)
            return vmc_set_error(ctx, VMC_E_INVAL, "libxl config %s: '%s' "
                                 "reaches outside the VM (refused by the "
                                 "restore policy)", k, s);
    }
    return 0;
}

static int walk(struct vmc_ctx *ctx, const struct vmc_policy *pol,
                const json_t *o, const char *where)
{
    const char *k;
    json_t *v;

    if (json_is_array(o)) {
        size_t i;
        json_array_foreach(o, i, v)
            if (walk(ctx, pol, v, where) < 0)
                return VMC_E_INVAL;
        return 0;
    }
    if (!json_is_object(o))
        return 0;
    json_object_foreach((json_t *)o, k, v) {
        for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++)
            if (!strcmp(k, deny[i].key) && set(v))
                return vmc_set_error(ctx, VMC_E_INVAL, "libxl config %s%s%s: "
                                     "%s (refused by the restore policy)",
                                     where, *where ? "." : "", k, deny[i].why);
        if ((!strcmp(k, "serial") || !strcmp(k, "usbdevice") ||
             !strcmp(k, "serial_list") || !strcmp(k, "usbdevice_list")) &&
            emulated_only(ctx, k, v) < 0)
            return VMC_E_INVAL;
        if (!strcmp(k, "pdev_path") && json_string_value(v) &&
            policy_path_ok(ctx, pol, "libxl config disk",
                           json_string_value(v), 0) < 0)
            return VMC_E_INVAL;
        if (walk(ctx, pol, v, k) < 0)
            return VMC_E_INVAL;
    }
    return 0;
}

int xen_policy_check(struct vmc_ctx *ctx, const json_t *cfg,
                     const struct vmc_policy *pol)
{
    return walk(ctx, pol, cfg, "");
}

/* ---- the disks of a libxl config: "disks", each with pdev_path, vdev,
 * format, readwrite, is_cdrom (libxl_device_disk as libxl writes it). */
static int truthy(const json_t *v)
{
    return json_is_true(v) || (json_is_integer(v) && json_integer_value(v));
}

int xen_config_disks(const json_t *cfg, struct vmc_disk_info *out, int max,
                     int *n)
{
    const json_t *disks = json_object_get(cfg, "disks");
    size_t i;
    json_t *d;

    *n = 0;
    json_array_foreach(disks, i, d) {
        const char *p = json_string_value(json_object_get(d, "pdev_path"));
        const char *v = json_string_value(json_object_get(d, "vdev"));
        const char *f = json_string_value(json_object_get(d, "format"));
        struct vmc_disk_info *di;
        if (!p || !*p)
            continue;               /* an empty CD-ROM drive */
        if (*n == max)
            return VMC_E_LIMIT;
        di = &out[*n];
        memset(di, 0, sizeof(*di));
        di->index = (uint32_t)(*n)++;
        snprintf(di->id, sizeof(di->id), "%s", v && *v ? v : "xvd");
        snprintf(di->path, sizeof(di->path), "%s", p);
        if (!truthy(json_object_get(d, "readwrite")))
            di->flags |= VMC_DF_READONLY;
        if (truthy(json_object_get(d, "is_cdrom")))
            di->flags |= VMC_DF_READONLY | VMC_DF_REMOVABLE;
        di->source_format = !f || !strcasecmp(f, "raw") ? VMC_DISK_FMT_RAW :
                            !strcasecmp(f, "qcow2") ? VMC_DISK_FMT_QCOW2 : 0;
        di->block_size = 512;
    }
    return 0;
}

int xen_config_set_disk(json_t *cfg, const char *id, const char *path,
                        int raw)
{
    const json_t *disks = json_object_get(cfg, "disks");
    size_t i;
    json_t *d;

    json_array_foreach(disks, i, d) {
        const char *v = json_string_value(json_object_get(d, "vdev"));
        if (v && !strcmp(v, id))
            return json_object_set_new(d, "pdev_path", json_string(path)) ||
                   (raw && json_object_get(d, "format") &&
                    json_object_set_new(d, "format", json_string("raw"))) ?
                   VMC_E_NOMEM : 0;
    }
    return VMC_E_INVAL;
}

/* ---- the vifs of a libxl config: "nics", each with devid, mac, bridge
 * (libxl_device_nic); the id is the devid, or the vif's ordinal. */
static void nic_id(const json_t *d, size_t i, char *id, size_t n)
{
    const json_t *v = json_object_get(d, "devid");

    snprintf(id, n, "%lld", json_is_integer(v) ?
             (long long)json_integer_value(v) : (long long)i);
}

int xen_config_nets(const json_t *cfg, struct vmc_net_info *out, int max,
                    int *n)
{
    const json_t *nics = json_object_get(cfg, "nics");
    size_t i;
    json_t *d;

    *n = 0;
    json_array_foreach(nics, i, d) {
        const char *b = json_string_value(json_object_get(d, "bridge"));
        const char *mac = json_string_value(json_object_get(d, "mac"));
        struct vmc_net_info *ni;
        if (*n == max)
            return VMC_E_LIMIT;
        ni = &out[(*n)++];
        memset(ni, 0, sizeof(*ni));
        nic_id(d, i, ni->id, sizeof(ni->id));
        snprintf(ni->attachment, sizeof(ni->attachment), "%s", b ? b : "");
        snprintf(ni->mac, sizeof(ni->mac), "%s", mac ? mac : "");
    }
    return 0;
}

/* A bridge name as Linux takes one: 1 to 15 octets, no '/', no space. */
static int bridge_name_ok(const char *b)
{
    size_t l = strlen(b);

    if (!l || l > 15 || !strcmp(b, ".") || !strcmp(b, ".."))
        return 0;
    for (; *b; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
              (*b >= '0' && *b <= '9') || *b == '-' || *b == '_' || *b == '.'))
            return 0;
    return 1;
}

int xen_config_set_net(json_t *cfg, const char *id, const char *bridge)
{
    const json_t *nics = json_object_get(cfg, "nics");
    size_t i;
    json_t *d;

    if (!bridge_name_ok(bridge))
        return VMC_E_FORMAT;
    json_array_foreach(nics, i, d) {
        char me[32];
        nic_id(d, i, me, sizeof(me));
        if (!strcmp(me, id))
            return json_object_set_new(d, "bridge", json_string(bridge)) ?
                   VMC_E_NOMEM : 0;
    }
    return VMC_E_INVAL;
}
