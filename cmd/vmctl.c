/* vmctl - start, list, attach to and destroy vmckpt-managed QEMU domains. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "../lib/vmckpt_qemu.h"
#include "cli.h"

#define SYNOPSIS                                                            \
    "usage:\tvmctl start [--uuid UUID] NAME -- QEMU-ARGS...\n"                \
    "\tvmctl list [--json]\n"                                               \
    "\tvmctl status|rundir|console|pause|resume|destroy DOMAIN\n"

static int usage(const char *why)
{
    return cli_usage(SYNOPSIS, why);
}

static void help(void)
{
    printf("vmctl %s - manage QEMU domains for vmsave/vmrestore\n\n" SYNOPSIS
           "\nDOMAIN is a name or a numeric ID.  Instances live in %s\n"
           "(set VMCKPT_RUNDIR to change it).  The console escape is ^].\n"
           "Exit status: 0 success, 1 failure, 2 usage.  See vmctl(1).\n",
           VMC_TOOL_VERSION, vmc_qemu_rundir());
}

struct listctx {
    json_t *arr;
    const char *want;         /* status/rundir: a single domain */
    int found;
    char state[32], dir[512];   /* of the one found (the info is the
                                   library's only during the callback) */
};

static int list_print(const struct vmc_qemu_dom_info *i, void *arg)
{
    struct listctx *l = arg;

    if (l->want) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i->id);
        if (strcmp(l->want, id) && strcmp(l->want, i->name))
            return 0;
        snprintf(l->state, sizeof(l->state), "%s", i->state);
        snprintf(l->dir, sizeof(l->dir), "%s", i->dir);
        l->found = 1;
        return 1;
    }
    if (l->arr) {
        json_array_append_new(l->arr, json_pack("{s:i, s:s, s:s, s:s, s:i, s:s}",
                                                "id", i->id, "name", i->name,
                                                "uuid", i->uuid, "state",
                                                i->state, "pid", i->pid, "rundir",
                                                i->dir));
        return 0;
    }
    printf("%-5d %-20s %-36s %-10s %d\n", i->id, i->name, i->uuid, i->state,
           i->pid);
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));

    return x < y ? -1 : x > y;
}

static int cmd_list(struct vmc_ctx *ctx, int json)
{
    struct listctx l = { .arr = json_array() };
    size_t n;
    json_t **v;

    vmc_qemu_list(ctx, list_print, &l);
    n = json_array_size(l.arr);
    v = calloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(l.arr, i);
    qsort(v, n, sizeof(*v), cmp_id);
    if (json) {
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append(out, v[i]);
        json_dumpf(out, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(out);
    } else {
        printf("%-5s %-20s %-36s %-10s %s\n", "ID", "NAME", "UUID", "STATE",
               "PID");
        for (size_t i = 0; i < n; i++)
            printf("%-5d %-20s %-36s %-10s %d\n",
                   (int)json_integer_value(json_object_get(v[i], "id")),
                   json_string_value(json_object_get(v[i], "name")),
                   json_string_value(json_object_get(v[i], "uuid")),
                   json_string_value(json_object_get(v[i], "state")),
                   (int)json_integer_value(json_object_get(v[i], "pid")));
    }
    free(v);
    json_decref(l.arr);
    return 0;
}

int main(int argc, char **argv)
{
    const struct vmc_backend *be = vmc_backend_get("qemu");
    struct vmc_ctx *ctx = vmc_ctx_new();
    const char *cmd;
    int rc = 1;

    vmc_guard_dispatch(argc, argv);
    cli_prog = "vmctl";
    if (!ctx || vmc_init(ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    if (argc < 2)
        return usage("missing command");
    cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        help();
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("vmctl %s\n", VMC_TOOL_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "start")) {
        const char *uuid = NULL, *name;
        int i = 2, id;
        if (i + 1 < argc && !strcmp(argv[i], "--uuid")) {
            uuid = argv[i + 1];
            i += 2;
        }
        if (i >= argc)
            return usage("start: missing NAME");
        name = argv[i++];
        if (i < argc && !strcmp(argv[i], "--"))
            i++;
        if (i >= argc)
            return usage("start: missing QEMU-ARGS after --");
        if (vmc_qemu_start(ctx, name, uuid, argc - i, argv + i, &id) < 0) {
            cli_ctx_err(name, ctx);
            return 1;
        }
        printf("%d\n", id);
        return 0;
    }
    if (!strcmp(cmd, "list")) {
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "--json")))
            return usage("list takes only --json");
        return cmd_list(ctx, argc == 3);
    }
    if (argc != 3)
        return usage(argc < 3 ? "missing DOMAIN" : "too many arguments");
    if (!strcmp(cmd, "status") || !strcmp(cmd, "rundir")) {
        struct listctx l = { .want = argv[2] };
        vmc_qemu_list(ctx, list_print, &l);
        if (!l.found) {
            cli_err(argv[2], "no such domain (see vmctl list)");
            return 1;
        }
        printf("%s\n", !strcmp(cmd, "status") ? l.state : l.dir);
        return 0;
    }
    if (!strcmp(cmd, "console")) {
        int fd;
        char what[300];
        if (vmc_console_open(ctx, be, argv[2], &fd) < 0) {
            cli_ctx_err(argv[2], ctx);
            return 1;
        }
        cli_signals_flag();
        snprintf(what, sizeof(what), "domain %s", argv[2]);
        cli_console(fd, what);
        close(fd);
        return 0;
    }
    if (!strcmp(cmd, "destroy"))
        rc = vmc_domain_destroy(ctx, be, argv[2]);
    else if (!strcmp(cmd, "pause"))
        rc = vmc_domain_pause(ctx, be, argv[2]);
    else if (!strcmp(cmd, "resume"))
        rc = vmc_domain_resume(ctx, be, argv[2]);
    else {
        char m[96];
        snprintf(m, sizeof(m), "unknown command '%.40s'", cmd);
        return usage(m);
    }
    if (rc < 0) {
        cli_ctx_err(argv[2], ctx);
        return 1;
    }
    vmc_ctx_free(ctx);
    return 0;
}
