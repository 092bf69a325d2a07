/*
 * qemu_policy.c - what a QEMU command line from an image may ask for.
 *
 * A recorded (or an admin's --config) QEMU argv is data.  Before any QEMU
 * starts for a restore, every option in it is looked up here: an option
 * that only shapes the virtual machine passes; an option that reaches
 * outside it (host files, host devices, sockets, scripts, monitors,
 * plugins, the process itself) is refused, naming the option, unless it
 * is one of the few with a checked form (a host file under an allowed
 * directory, a network backend without scripts or host ports).  An
 * option that the table does not know is refused: the table is an
 * allow-list, so a QEMU option added after it was written cannot slip
 * through.  vmckpt(5), "RESTORE POLICY", is the user's copy of this table.
 *
 * Owns: the option table and the checks of option values.
 * Must not: start anything, or trust a path before it resolved it.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "qemu.h"

#define path_ok policy_path_ok

/* ---- QEMU's key=value,... option strings ---------------------------------- */

/* Calls fn for each key and value of s (",," is a comma in a value); the
 * first element without '=' gets key implied (NULL: a flag "on").  Stops
 * at fn's first non-zero answer and returns it; VMC_E_LIMIT for a key too
 * long to be one. */
static int kv_each(const char *s, const char *implied,
                   int (*fn)(void *arg, const char *k, const char *v), void *arg)
{
    char key[PATH_MAX + 64], val[PATH_MAX + 64];
    int first = 1;

    while (*s) {
        size_t kl = 0, vl = 0;
        const char *eq = NULL, *p = s;
        int rc;
        for (; *p && !(*p == ',' && p[1] != ','); p++) {
            if (*p == ',')          /* ",," */
                p++;
            if (*p == '=' && !eq)
                eq = p;
        }
        if (eq) {
            kl = (size_t)(eq - s);
            if (kl >= sizeof(key))
                return VMC_E_LIMIT;         /* no such key: unparseable */
            memcpy(key, s, kl);
            key[kl] = '\0';
            for (const char *q = eq + 1; q < p && vl < sizeof(val) - 1; q++) {
                val[vl++] = *q;
                if (*q == ',')
                    q++;            /* ",," -> "," */
            }
        } else {
            const char *k = first && implied ? implied : NULL;
            for (const char *q = s; q < p && vl < sizeof(val) - 1; q++) {
                val[vl++] = *q;
                if (*q == ',')
                    q++;
            }
            val[vl] = '\0';
            if (k) {
                snprintf(key, sizeof(key), "%s", k);
            } else {                /* a bare flag: "key" means key=on */
                snprintf(key, sizeof(key), "%s", val);
                snprintf(val, sizeof(val), "on");
                vl = 2;
            }
        }
        val[vl] = '\0';
        if ((rc = fn(arg, key, val)) != 0)
            return rc;
        first = 0;
        s = *p ? p + 1 : p;
    }
    return 0;
}

/* ---- the checks of one option's value ------------------------------------- */

struct chk {
    struct vmc_ctx *ctx;
    const struct vmc_policy *pol;
    const char *opt;          /* "-netdev", for messages */
    const char *type;         /* the implied key's value once seen */
    const char *why;          /* set by a refusing callback */
    char whybuf[160];
    int rc;
};

static int in(const char *s, const char *const *list)
{
    for (; *list; list++) {
        size_t l = strlen(*list);
        if (l && (*list)[l - 1] == '*' ? !strncmp(s, *list, l - 1)
                                       : !strcmp(s, *list))
            return 1;
    }
    return 0;
}

static int refuse(struct chk *c, const char *fmt, const char *a)
{
    snprintf(c->whybuf, sizeof(c->whybuf), fmt, a);
    c->why = c->whybuf;
    return 1;
}

/* Keys naming a host file: checked against the allowed directories. */
static int file_key(struct chk *c, const char *k, const char *v)
{
    char what[200];

    snprintf(what, sizeof(what), "%s %s=", c->opt, k);
    if (path_ok(c->ctx, c->pol, what, v, 0) < 0) {
        c->rc = VMC_E_INVAL;
        return 1;
    }
    return 0;
}

static const char *const block_drivers[] = {
    "raw", "qcow2", "qcow", "qed", "vdi", "vmdk", "vhdx", "vpc", "file",
    "null-co", "null-aio", "throttle", "copy-on-read", "compress",
    "preallocate", NULL,
};

/* -drive and -blockdev: image files under allowed directories, image
 * formats only (no host_device, nbd, ssh, http, vvfat, blkdebug ...). */
static int block_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;
    size_t l = strlen(k);

    if (!strncmp(k, "backing", 7) || !strcmp(k, "data-file") ||
        strstr(k, "x-data-file") || !strcmp(k, "config"))
        return refuse(c, "'%s' names another image (refused)", k);
    if (!strcmp(k, "driver") || !strcmp(k, "format") ||
        (l > 7 && !strcmp(k + l - 7, ".driver")))
        return in(v, block_drivers) ? 0 :
               refuse(c, "block driver '%s' reaches outside the VM", v);
    if (!strcmp(k, "file") || !strcmp(k, "filename") ||
        (l > 9 && !strcmp(k + l - 9, ".filename")))
        return file_key(c, k, v);
    if (!strcmp(k, "locking") || !strcmp(k, "aio") || strstr(k, "cache") ||
        !strcmp(k, "if") || !strcmp(k, "media") || !strcmp(k, "index") ||
        !strcmp(k, "id") || !strcmp(k, "node-name") || !strcmp(k, "bus") ||
        !strcmp(k, "unit") || !strcmp(k, "readonly") ||
        !strcmp(k, "read-only") || !strcmp(k, "auto-read-only") ||
        !strcmp(k, "snapshot") || !strcmp(k, "serial") || !strcmp(k, "werror") ||
        !strcmp(k, "rerror") || !strcmp(k, "discard") ||
        !strcmp(k, "detect-zeroes") || !strcmp(k, "copy-on-read") ||
        !strcmp(k, "force-share") || !strncmp(k, "throttling.", 11) ||
        !strncmp(k, "bps", 3) || !strncmp(k, "iops", 4) ||
        !strcmp(k, "group") || !strcmp(k, "throttle-group") ||
        !strcmp(k, "addr") || !strcmp(k, "cyls") || !strcmp(k, "heads") ||
        !strcmp(k, "secs") || !strcmp(k, "trans") || !strcmp(k, "file.aio") ||
        !strcmp(k, "file.locking"))
        return 0;
    return refuse(c, "key '%s' is not in the restore policy", k);
}

/* -netdev / -nic: no scripts, helpers, passed fds or host ports. */
static int net_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;
    static const char *const user_ok[] = {
        "id", "type", "net", "host", "dhcpstart", "dns", "dnssearch",
        "domainname", "ipv4", "ipv6", "ipv6-net", "ipv6-prefix",
        "ipv6-prefixlen", "ipv6-host", "ipv6-dns", "hostname", "restrict",
        "mac", "model", "romfile", NULL,
    };
    static const char *const tap_ok[] = {
        "id", "type", "ifname", "script", "downscript", "queues", "vnet_hdr",
        "sndbuf", "vhost", "poll-us", "mac", "model", "romfile", NULL,
    };

    if (!strcmp(k, "type")) {
        if (strcmp(v, "user") && strcmp(v, "tap") && strcmp(v, "none"))
            return refuse(c, "network backend '%s' reaches outside the VM", v);
        c->type = strcmp(v, "user") ? strcmp(v, "tap") ? "none" : "tap" : "user";
        return 0;
    }
    if (!c->type)
        return refuse(c, "%s", "no network backend type first");
    if (!strcmp(k, "romfile"))
        return file_key(c, k, v);
    if (!strcmp(c->type, "tap")) {
        if ((!strcmp(k, "script") || !strcmp(k, "downscript")) &&
            strcmp(v, "no"))
            return refuse(c, "tap %s= runs a host program: only 'no'", k);
        if (!strcmp(k, "vhost") && strcmp(v, "off"))
            return refuse(c, "%s", "tap vhost= needs /dev/vhost-net: only 'off'");
        return in(k, tap_ok) ? 0 :
               refuse(c, "tap key '%s' reaches outside the VM", k);
    }
    return in(k, user_ok) ? 0 :
           refuse(c, "user-network key '%s' reaches outside the VM (host "
                  "ports, host files or programs)", k);
}

/* -device: host pass-through and host-side back ends are refused. */
static int device_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;
    static const char *const host_drivers[] = {
        "vfio-*", "usb-host", "u2f-passthru", "vhost-*", "*vhost-user*",
        "ivshmem*", "virtio-9p*", "scsi-generic", "scsi-block", "loader",
        "guest-loader", "virtio-input-host*", "tpm-*", "xen-*", "pci-assign",
        "kvm-pci-assign", "vmgenid", "usb-redir", "spapr-*", "virtio-vhost*",
        "vhost-vdpa*", "virtio-fs*", NULL,
    };

    if (!strcmp(k, "driver")) {
        if (in(v, host_drivers))
            return refuse(c, "device '%s' reaches the host (pass-through or "
                          "a host back end)", v);
        return 0;
    }
    if (!strcmp(k, "romfile"))
        return file_key(c, k, v);
    return 0;
}

/* -object: the QOM types that shape the VM only. */
static int object_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;
    static const char *const ok[] = {
        "memory-backend-ram", "memory-backend-memfd", "rng-builtin",
        "rng-random", "iothread", "throttle-group", "main-loop",
        "thread-context", NULL,
    };

    if (!strcmp(k, "qom-type")) {
        if (!in(v, ok))
            return refuse(c, "object '%s' reaches outside the VM", v);
        c->type = !strcmp(v, "rng-random") ? "rng-random" : "other";
        return 0;
    }
    if (!strcmp(k, "filename") && c->type && !strcmp(c->type, "rng-random"))
        return strcmp(v, "/dev/urandom") && strcmp(v, "/dev/random") ?
               refuse(c, "rng-random filename '%s': only /dev/urandom or "
                      "/dev/random", v) : 0;
    if (!strcmp(k, "mem-path") || !strcmp(k, "filename") || !strcmp(k, "file") ||
        !strcmp(k, "dir") || !strcmp(k, "chardev"))
        return refuse(c, "object key '%s' reaches outside the VM", k);
    return 0;
}

/* -chardev: back ends with no host side. */
static int chardev_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;
    static const char *const ok[] = { "null", "ringbuf", "memory", "msmouse",
                                      "wctablet", NULL };

    if (!strcmp(k, "backend"))
        return in(v, ok) ? 0 :
               refuse(c, "character device back end '%s' reaches outside the "
                      "VM (files, sockets, terminals)", v);
    if (!strcmp(k, "logfile") || !strcmp(k, "path"))
        return refuse(c, "chardev key '%s' writes a host file", k);
    if (!strcmp(k, "id") && !strncmp(v, "vmckpt", 6))
        return refuse(c, "chardev id '%s' is vmckpt's own", v);
    return 0;
}

/* -machine: everything but the keys that write or read host files. */
static int machine_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;

    (void)v;
    if (!strcmp(k, "dumpdtb") || !strcmp(k, "dtb") || !strcmp(k, "firmware") ||
        !strcmp(k, "memory-backend-file"))
        return refuse(c, "machine key '%s' names a host file", k);
    return 0;
}

/* -icount: record/replay reads or writes a host file. */
static int icount_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;

    (void)v;
    if (!strcmp(k, "rr") || !strcmp(k, "rrfile") || !strcmp(k, "rrsnapshot"))
        return refuse(c, "icount key '%s' records or replays a host file", k);
    return 0;
}

/* -boot, -fw_cfg, -smbios, -acpitable: their file keys are host files. */
static int filekeys_kv(void *arg, const char *k, const char *v)
{
    struct chk *c = arg;

    if (!strcmp(k, "file") || !strcmp(k, "splash") || !strcmp(k, "data"))
        return file_key(c, k, v);
    return 0;
}

/* -global DRIVER.PROP=VALUE: a romfile is a host file; the drivers are
 * checked where they are created (-device). */
static int check_global(struct chk *c, const char *v)
{
    const char *dot = strchr(v, '.'), *eq = strchr(v, '=');

    if (!dot || !eq || eq < dot)
        return refuse(c, "%s", "not DRIVER.PROP=VALUE");
    if (!strncmp(dot + 1, "romfile=", 8))
        return file_key(c, "romfile", eq + 1);
    return 0;
}

/* ---- the table ------------------------------------------------------------ */

enum kind {
    ANY,                      /* the value (if any) only shapes the VM */
    PATH,                     /* a host file under an allowed directory */
    DIRPATH,                  /* a host directory under one */
    NONE_ONLY,                /* only "none" (or "null") */
    KV,                       /* key=value,... through fn */
    GLOBAL,
    DENY,                     /* reaches outside the VM */
    OURS,                     /* vmckpt sets it itself */
};

struct qopt {
    const char *name;
    int arg;                  /* takes a value */
    enum kind kind;
    const char *implied;      /* KV: the key of a first bare element */
    int (*fn)(void *, const char *, const char *);
    const char *why;          /* DENY: what it reaches */
};

static const struct qopt qopts[] = {
    /* the machine itself */
    { "m", 1, ANY, NULL, NULL, NULL },
    { "smp", 1, ANY, NULL, NULL, NULL },
    { "cpu", 1, ANY, NULL, NULL, NULL },
    { "machine", 1, KV, "type", machine_kv, NULL },
    { "M", 1, KV, "type", machine_kv, NULL },
    { "accel", 1, ANY, NULL, NULL, NULL },
    { "enable-kvm", 0, ANY, NULL, NULL, NULL },
    { "numa", 1, ANY, NULL, NULL, NULL },
    { "rtc", 1, ANY, NULL, NULL, NULL },
    { "overcommit", 1, ANY, NULL, NULL, NULL },
    { "mem-prealloc", 0, ANY, NULL, NULL, NULL },
    { "icount", 1, KV, "shift", icount_kv, NULL },
    { "global", 1, GLOBAL, NULL, NULL, NULL },
    { "k", 1, ANY, NULL, NULL, NULL },
    { "vga", 1, ANY, NULL, NULL, NULL },
    { "usb", 0, ANY, NULL, NULL, NULL },
    { "nodefaults", 0, ANY, NULL, NULL, NULL },
    { "no-user-config", 0, ANY, NULL, NULL, NULL },
    { "no-reboot", 0, ANY, NULL, NULL, NULL },
    { "no-shutdown", 0, ANY, NULL, NULL, NULL },
    { "no-acpi", 0, ANY, NULL, NULL, NULL },
    { "no-hpet", 0, ANY, NULL, NULL, NULL },
    { "action", 1, ANY, NULL, NULL, NULL },
    { "watchdog-action", 1, ANY, NULL, NULL, NULL },
    { "msg", 1, ANY, NULL, NULL, NULL },
    { "seed", 1, ANY, NULL, NULL, NULL },
    { "snapshot", 0, ANY, NULL, NULL, NULL },
    { "S", 0, ANY, NULL, NULL, NULL },
    { "d", 1, ANY, NULL, NULL, NULL },
    { "append", 1, ANY, NULL, NULL, NULL },
    { "boot", 1, KV, "order", filekeys_kv, NULL },
    { "fw_cfg", 1, KV, NULL, filekeys_kv, NULL },
    { "smbios", 1, KV, NULL, filekeys_kv, NULL },
    { "acpitable", 1, KV, NULL, filekeys_kv, NULL },
    /* host files the VM reads */
    { "kernel", 1, PATH, NULL, NULL, NULL },
    { "initrd", 1, PATH, NULL, NULL, NULL },
    { "dtb", 1, PATH, NULL, NULL, NULL },
    { "bios", 1, PATH, NULL, NULL, NULL },
    { "pflash", 1, PATH, NULL, NULL, NULL },
    { "L", 1, DIRPATH, NULL, NULL, NULL },
    { "cdrom", 1, PATH, NULL, NULL, NULL },
    { "hda", 1, PATH, NULL, NULL, NULL },
    { "hdb", 1, PATH, NULL, NULL, NULL },
    { "hdc", 1, PATH, NULL, NULL, NULL },
    { "hdd", 1, PATH, NULL, NULL, NULL },
    { "fda", 1, PATH, NULL, NULL, NULL },
    { "fdb", 1, PATH, NULL, NULL, NULL },
    { "drive", 1, KV, NULL, block_kv, NULL },
    { "blockdev", 1, KV, NULL, block_kv, NULL },
    /* devices and their back ends */
    { "device", 1, KV, "driver", device_kv, NULL },
    { "netdev", 1, KV, "type", net_kv, NULL },
    { "nic", 1, KV, "type", net_kv, NULL },
    { "object", 1, KV, "qom-type", object_kv, NULL },
    { "chardev", 1, KV, "backend", chardev_kv, NULL },
    { "net", 1, NONE_ONLY, NULL, NULL, NULL },
    { "display", 1, NONE_ONLY, NULL, NULL, NULL },
    { "vnc", 1, NONE_ONLY, NULL, NULL, NULL },
    { "serial", 1, NONE_ONLY, NULL, NULL, NULL },
    { "parallel", 1, NONE_ONLY, NULL, NULL, NULL },
    { "monitor", 1, NONE_ONLY, NULL, NULL, NULL },
    { "audiodev", 1, NONE_ONLY, NULL, NULL, NULL },
    /* vmckpt's own */
    { "name", 1, OURS, NULL, NULL, NULL },
    { "uuid", 1, OURS, NULL, NULL, NULL },
    { "qmp", 1, OURS, NULL, NULL, NULL },
    { "incoming", 1, OURS, NULL, NULL, NULL },
    { "sandbox", 1, OURS, NULL, NULL, NULL },
    { "runas", 1, OURS, NULL, NULL, NULL },
    /* outside the VM */
    { "plugin", 1, DENY, NULL, NULL, "loads a host library into QEMU" },
    { "readconfig", 1, DENY, NULL, NULL, "reads a host config file" },
    { "writeconfig", 1, DENY, NULL, NULL, "writes a host file" },
    { "add-fd", 1, DENY, NULL, NULL, "names host file descriptors" },
    { "daemonize", 0, DENY, NULL, NULL, "detaches QEMU from vmckpt" },
    { "pidfile", 1, DENY, NULL, NULL, "writes a host file" },
    { "D", 1, DENY, NULL, NULL, "writes a host file" },
    { "trace", 1, DENY, NULL, NULL, "writes host files" },
    { "chroot", 1, DENY, NULL, NULL, "changes QEMU's root" },
    { "run-with", 1, DENY, NULL, NULL, "changes QEMU's user or root" },
    { "mon", 1, DENY, NULL, NULL, "adds a monitor" },
    { "gdb", 1, DENY, NULL, NULL, "opens a debugger port" },
    { "s", 0, DENY, NULL, NULL, "opens a debugger port" },
    { "spice", 1, DENY, NULL, NULL, "opens a display port" },
    { "nographic", 0, DENY, NULL, NULL, "puts a monitor on QEMU's stdio" },
    { "mem-path", 1, DENY, NULL, NULL, "maps host files as guest memory" },
    { "virtfs", 1, DENY, NULL, NULL, "shares a host directory" },
    { "fsdev", 1, DENY, NULL, NULL, "shares a host directory" },
    { "tpmdev", 1, DENY, NULL, NULL, "passes a host TPM through" },
    { "set", 1, DENY, NULL, NULL, "rewrites other options" },
    { "loadvm", 1, DENY, NULL, NULL, "loads a host snapshot" },
    { "option-rom", 1, DENY, NULL, NULL, "loads a host file" },
    { "usbdevice", 1, DENY, NULL, NULL, "may pass a host device through" },
    { "semihosting", 0, DENY, NULL, NULL, "gives the guest host calls" },
    { "semihosting-config", 1, DENY, NULL, NULL, "gives the guest host calls" },
    { "iscsi", 1, DENY, NULL, NULL, "connects to a host network target" },
    { "xen-domid", 1, DENY, NULL, NULL, "attaches to Xen" },
    { "xen-attach", 0, DENY, NULL, NULL, "attaches to Xen" },
    { NULL, 0, ANY, NULL, NULL, NULL },
};

static const struct qopt *qopt_find(const char *name)
{
    for (const struct qopt *o = qopts; o->name; o++)
        if (!strcmp(o->name, name))
            return o;
    return NULL;
}

/* One option and its value (NULL if it takes none). */
static int check_one(struct vmc_ctx *ctx, const struct vmc_policy *pol,
                     const struct qopt *o, const char *opt, const char *v)
{
    struct chk c = { .ctx = ctx, .pol = pol, .opt = opt };
    int r;

    switch (o->kind) {
    case ANY:
        return 0;
    case PATH:
    case DIRPATH:
        return path_ok(ctx, pol, opt, v, o->kind == DIRPATH);
    case NONE_ONLY:
        if (!strcmp(v, "none") || !strcmp(v, "null"))
            return 0;
        return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: only 'none' is allowed "
                             "by the restore policy (it reaches outside the "
                             "VM; vmckpt gives the console itself)", opt, v);
    case GLOBAL:
        r = check_global(&c, v);
        break;
    case KV:
        if (v[0] == '{')            /* QEMU's JSON form: not parsed here */
            return vmc_set_error(ctx, VMC_E_INVAL, "%s: the JSON form is "
                                 "refused by the restore policy (write "
                                 "key=value,...)", opt);
        r = kv_each(v, o->implied, o->fn, &c);
        if (r < 0)
            return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: cannot be parsed",
                                 opt, v);
        break;
    case OURS:
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: set by vmckpt itself, not "
                             "by a domain config", opt);
    case DENY:
    default:
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: %s (refused by the "
                             "restore policy)", opt, o->why);
    }
    if (c.rc)
        return c.rc;                /* file_key set ctx */
    if (r)
        return vmc_set_error(ctx, VMC_E_INVAL, "%s %s: %s (refused by the "
                             "restore policy)", opt, v, c.why);
    return 0;
}

int qemu_policy_check(struct vmc_ctx *ctx, const json_t *argv,
                      const struct vmc_policy *pol)
{
    size_t n = json_array_size(argv);

    if (!json_is_array(argv))
        return vmc_set_error(ctx, VMC_E_INVAL, "domain config: no argv");
    for (size_t i = 0; i < n; i++) {
        const char *a = json_string_value(json_array_get(argv, i)), *name, *v;
        const struct qopt *o;
        if (!a)
            return vmc_set_error(ctx, VMC_E_INVAL, "domain config: argv[%zu] "
                                 "is not a string", i);
        if (a[0] != '-') {          /* a bare file: QEMU's -hda */
            if (path_ok(ctx, pol, "disk image", a, 0) < 0)
                return VMC_E_INVAL;
            continue;
        }
        name = a + 1 + (a[1] == '-');
        if (!(o = qopt_find(name)))
            return vmc_set_error(ctx, VMC_E_INVAL, "%s: not an option the "
                                 "restore policy knows (refused)", a);
        v = NULL;
        if (o->arg) {
            if (i + 1 >= n || !(v = json_string_value(json_array_get(argv, i + 1))))
                return vmc_set_error(ctx, VMC_E_INVAL, "%s: no value", a);
            i++;
        }
        if (check_one(ctx, pol, o, a, v) < 0)
            return VMC_E_INVAL;
    }
    return 0;
}

/* ---- the disks of a QEMU config ------------------------------------------
 * Each -drive with a file= is a disk.  Its guest-facing id is its id=, or
 * the interface (if=, ide by default) and its ordinal among the drives of
 * that interface ("virtio0", "ide1"). */
struct drive {
    char file[PATH_MAX], ifc[32], id[VMC_DISK_ID_MAX + 1], format[32];
    int ro, cdrom;
};

static int drive_kv(void *arg, const char *k, const char *v)
{
    struct drive *d = arg;

    if (!strcmp(k, "file"))
        snprintf(d->file, sizeof(d->file), "%s", v);
    else if (!strcmp(k, "if"))
        snprintf(d->ifc, sizeof(d->ifc), "%s", v);
    else if (!strcmp(k, "id"))
        snprintf(d->id, sizeof(d->id), "%s", v);
    else if (!strcmp(k, "format"))
        snprintf(d->format, sizeof(d->format), "%s", v);
    else if (!strcmp(k, "readonly") || !strcmp(k, "read-only"))
        d->ro = !strcmp(v, "on");
    else if (!strcmp(k, "media"))
        d->cdrom = !strcmp(v, "cdrom");
    return 0;
}

/* Visits the disks of argv in order: fn(arg, index in argv of the value,
 * the drive). */
static int drives_each(const json_t *argv,
                       int (*fn)(void *arg, size_t at, const struct drive *d),
                       void *arg)
{
    char ifs[8][32];
    int counts[8] = { 0 }, nifs = 0, rc;
    size_t n = json_array_size(argv);

    for (size_t i = 0; i + 1 < n; i++) {
        const char *o = json_string_value(json_array_get(argv, i));
        const char *v = json_string_value(json_array_get(argv, i + 1));
        struct drive d = { .ifc = "ide" };
        int k;
        if (!o || !v || (strcmp(o, "-drive") && strcmp(o, "--drive")))
            continue;
        if (kv_each(v, NULL, drive_kv, &d) < 0)
            return VMC_E_INVAL;
        for (k = 0; k < nifs && strcmp(ifs[k], d.ifc); k++)
            ;
        if (k == nifs && nifs < 8)
            snprintf(ifs[nifs++], sizeof(ifs[0]), "%s", d.ifc);
        if (k < 8 && !d.id[0])
            snprintf(d.id, sizeof(d.id), "%.31s%d", d.ifc, counts[k]);
        if (k < 8)
            counts[k]++;
        i++;
        if (d.file[0] && (rc = fn(arg, i, &d)) != 0)
            return rc;
    }
    return 0;
}

struct disk_list {
    struct vmc_disk_info *out;
    int max, n;
};

static int list_one(void *arg, size_t at, const struct drive *d)
{
    struct disk_list *l = arg;
    struct vmc_disk_info *di;

    (void)at;
    if (l->n == l->max)
        return VMC_E_LIMIT;
    di = &l->out[l->n];
    memset(di, 0, sizeof(*di));
    di->index = (uint32_t)l->n++;
    snprintf(di->id, sizeof(di->id), "%s", d->id);
    snprintf(di->path, sizeof(di->path), "%s", d->file);
    di->flags = d->ro || d->cdrom ? VMC_DF_READONLY : 0;
    if (d->cdrom)
        di->flags |= VMC_DF_REMOVABLE;
    di->source_format = !strcmp(d->format, "qcow2") ? VMC_DISK_FMT_QCOW2 :
                        !d->format[0] || !strcmp(d->format, "raw") ?
                        VMC_DISK_FMT_RAW : 0;
    di->block_size = 512;
    return 0;
}

int qemu_config_disks(const json_t *argv, struct vmc_disk_info *out, int max,
                      int *n)
{
    struct disk_list l = { out, max, 0 };
    int rc = drives_each(argv, list_one, &l);

    *n = l.n;
    return rc;
}

struct remap {
    const char *id, *path;
    json_t *argv;
    int raw, done;
};

void qemu_put_escaped(char *s, size_t cap, size_t *len, const char *v)
{
    for (; *v && *len + 2 < cap; v++) {
        s[(*len)++] = *v;
        if (*v == ',')
            s[(*len)++] = ',';
    }
    s[*len] = '\0';
}

struct rebuild {
    char s[2 * PATH_MAX + 512];
    size_t len;
    const char *path;
    int overflow, auto_ro;
    int raw;                    /* the new file is raw: format=raw */
};

static int rebuild_kv(void *arg, const char *k, const char *v)
{
    struct rebuild *b = arg;

    b->auto_ro |= !strcmp(k, "auto-read-only");

    if (b->len && b->len + 1 < sizeof(b->s))
        b->s[b->len++] = ',';
    qemu_put_escaped(b->s, sizeof(b->s), &b->len, k);
    if (b->len + 1 < sizeof(b->s))
        b->s[b->len++] = '=';
    qemu_put_escaped(b->s, sizeof(b->s), &b->len,
                     !strcmp(k, "file") ? b->path :
                     b->raw && !strcmp(k, "format") ? "raw" : v);
    b->overflow |= b->len + 4 >= sizeof(b->s);
    return 0;
}

static int remap_one(void *arg, size_t at, const struct drive *d)
{
    struct remap *r = arg;
    struct rebuild b = { .path = r->path, .raw = r->raw };

    if (strcmp(d->id, r->id))
        return 0;
    if (kv_each(json_string_value(json_array_get(r->argv, at)), NULL,
                rebuild_kv, &b) < 0 || b.overflow)
        return VMC_E_LIMIT;
    json_array_set_new(r->argv, at, json_string(b.s));
    r->done = 1;
    return 1;
}

int qemu_config_set_disk(json_t *argv, const char *id, const char *path,
                         int raw)
{
    struct remap r = { id, path, argv, raw, 0 };
    int rc = drives_each(argv, remap_one, &r);

    return rc < 0 ? rc : r.done ? 0 : VMC_E_INVAL;
}

/* ---- the network back ends of a QEMU config --------------------------------
 * Each -netdev (and each -nic) with an id= is an attachment the admin may
 * change on another host: its back end (user, tap ...) is replaced, its id
 * and, for -nic, the guest-facing model= and mac= stay. */
struct netdev {
    char id[VMC_NET_ID_MAX + 1], type[32], model[64], mac[32];
};

static int netdev_kv(void *arg, const char *k, const char *v)
{
    struct netdev *n = arg;

    if (!strcmp(k, "id"))
        snprintf(n->id, sizeof(n->id), "%s", v);
    else if (!strcmp(k, "type"))
        snprintf(n->type, sizeof(n->type), "%s", v);
    else if (!strcmp(k, "model"))
        snprintf(n->model, sizeof(n->model), "%s", v);
    else if (!strcmp(k, "mac"))
        snprintf(n->mac, sizeof(n->mac), "%s", v);
    return 0;
}

/* Visits each -netdev/-nic of argv that has an id: fn(arg, index of the
 * value, nic?, its keys). */
static int netdevs_each(const json_t *argv,
                        int (*fn)(void *arg, size_t at, int nic,
                                  const struct netdev *n), void *arg)
{
    size_t n = json_array_size(argv);

    for (size_t i = 0; i + 1 < n; i++) {
        const char *o = json_string_value(json_array_get(argv, i));
        const char *v = json_string_value(json_array_get(argv, i + 1));
        struct netdev d = { .id = "" };
        int nic, rc;
        if (!o || !v)
            continue;
        o += o[0] == '-' && o[1] == '-';
        nic = !strcmp(o, "-nic");
        if (!nic && strcmp(o, "-netdev"))
            continue;
        i++;
        if (v[0] == '{' || kv_each(v, "type", netdev_kv, &d) < 0)
            return VMC_E_INVAL;
        if (d.id[0] && (rc = fn(arg, i, nic, &d)) != 0)
            return rc;
    }
    return 0;
}

struct net_list {
    struct vmc_net_info *out;
    int max, n;
};

static int net_list_one(void *arg, size_t at, int nic, const struct netdev *d)
{
    struct net_list *l = arg;
    struct vmc_net_info *ni;

    (void)at;
    (void)nic;
    if (l->n == l->max)
        return VMC_E_LIMIT;
    ni = &l->out[l->n++];
    memset(ni, 0, sizeof(*ni));
    snprintf(ni->id, sizeof(ni->id), "%s", d->id);
    snprintf(ni->attachment, sizeof(ni->attachment), "%s", d->type);
    snprintf(ni->mac, sizeof(ni->mac), "%s", d->mac);
    return 0;
}

int qemu_config_nets(const json_t *argv, struct vmc_net_info *out, int max,
                     int *n)
{
    struct net_list l = { out, max, 0 };
    int rc = netdevs_each(argv, net_list_one, &l);

    *n = l.n;
    return rc;
}

/* The keys a new attachment may not set: the id it replaces is kept. */
static int att_kv(void *arg, const char *k, const char *v)
{
    struct netdev *n = arg;

    (void)v;
    if (!strcmp(k, "id"))
        return 1;
    return netdev_kv(n, k, v);
}

struct renet {
    const char *id, *att;
    json_t *argv;
    int done;
};

static int renet_one(void *arg, size_t at, int nic, const struct netdev *d)
{
    struct renet *r = arg;
    struct netdev a = { .id = "" };
    char s[1024];
    size_t len = 0;

    if (strcmp(d->id, r->id))
        return 0;
    if (kv_each(r->att, "type", att_kv, &a) != 0 || !a.type[0])
        return VMC_E_FORMAT;
    len = (size_t)snprintf(s, sizeof(s), "%s", r->att);
    if (len + 4 >= sizeof(s))
        return VMC_E_LIMIT;
    s[len++] = ',';
    memcpy(s + len, "id=", 4);
    len += 3;
    qemu_put_escaped(s, sizeof(s), &len, d->id);
    if (nic && d->model[0] && !a.model[0]) {
        snprintf(s + len, sizeof(s) - len, ",model=");
        len += strlen(s + len);
        qemu_put_escaped(s, sizeof(s), &len, d->model);
    }
    if (nic && d->mac[0] && !a.mac[0]) {
        snprintf(s + len, sizeof(s) - len, ",mac=");
        len += strlen(s + len);
        qemu_put_escaped(s, sizeof(s), &len, d->mac);
    }
    if (len + 4 >= sizeof(s))
        return VMC_E_LIMIT;
    json_array_set_new(r->argv, at, json_string(s));
    r->done = 1;
    return 1;
}

int qemu_config_set_net(json_t *argv, const char *id, const char *att)
{
    struct renet r = { id, att, argv, 0 };
    int rc = netdevs_each(argv, renet_one, &r);

    return rc < 0 ? rc : r.done ? 0 : VMC_E_INVAL;
}

int qemu_drive_file(const char *value, char *file, size_t n, int *ro)
{
    struct drive d = { .ifc = "ide" };

    if (kv_each(value, NULL, drive_kv, &d) < 0 || strlen(d.file) >= n)
        return VMC_E_LIMIT;
    snprintf(file, n, "%s", d.file);
    *ro = d.ro || d.cdrom;
    return 0;
}

int qemu_drive_refile(const char *value, const char *newfile, char *out,
                      size_t n)
{
    struct rebuild b = { .path = newfile };

    if (kv_each(value, NULL, rebuild_kv, &b) < 0 || b.overflow ||
        (size_t)snprintf(out, n, "%s%s", b.s,
                         b.auto_ro ? "" : ",auto-read-only=off") >= n)
        return VMC_E_LIMIT;
    return 0;
}
