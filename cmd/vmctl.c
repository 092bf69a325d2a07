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
    "usage:\tvmctl start [--uuid UUID] NAME [--] QEMU-ARGS...\n"              \
    "\tvmctl list [--json]\n"                                               \
    "\tvmctl status|rundir|console|pause|resume|destroy DOMAIN\n"

enum { C_START = 1, C_LIST = 2, C_DOM = 4, C_ALL = 7 };
enum { O_UUID = 1000, O_JSON };

static const struct cli_opt opts[] = {
    { "uuid", 0, "UUID", C_START, "start: the domain's UUID (default random)",
      O_UUID },
    { "json", 0, NULL, C_LIST, "list: one JSON array on stdout", O_JSON },
    { "quiet", 'q', NULL, C_ALL, "no informational messages (the console's "
                                 "banner); errors still", 'q' },
    CLI_OPT_HELP_VERSION(C_ALL),
    { NULL, 0, NULL, 0, NULL, 0 },
};

static const struct {
    const char *name;
    unsigned cmd;
} cmds[] = {
    { "start", C_START }, { "list", C_LIST }, { "status", C_DOM },
    { "rundir", C_DOM }, { "console", C_DOM }, { "pause", C_DOM },
    { "resume", C_DOM }, { "destroy", C_DOM },
};

struct args {
    const char *uuid;
    int json;
    struct cli_bad bad;
};

static void help(unsigned mask)
{
    printf("vmctl %s - manage QEMU domains for vmsave/vmrestore\n\n" SYNOPSIS
           "\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, mask);
    printf("\nDOMAIN is a name or a numeric ID.  QEMU-ARGS start at the first "
           "word after NAME\n(-- before them is optional).  Instances live in "
           "%s\n(set VMCKPT_RUNDIR to change it).  The console escape is ^].\n"
           "Exit status: 0 success, 1 failure, 2 usage.  See vmctl(1).\n",
           vmc_qemu_rundir());
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;

    switch (id) {
    case O_UUID: a->uuid = arg; break;
    case O_JSON: a->json = 1; break;
    }
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
        /* the names every tool's JSON uses for a domain */
        json_array_append_new(l->arr,
                              json_pack("{s:i, s:s, s:s, s:s, s:i, s:s}",
                                        "domid", i->id, "domain", i->name,
                                        "uuid", i->uuid, "state", i->state,
                                        "pid", i->pid, "rundir", i->dir));
        return 0;
    }
    printf("%-5d %-20s %-36s %-10s %d\n", i->id, i->name, i->uuid, i->state,
           i->pid);
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    json_t *const *ja = a, *const *jb = b;
    json_int_t x = json_integer_value(json_object_get(*ja, "domid"));
    json_int_t y = json_integer_value(json_object_get(*jb, "domid"));

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
                   (int)json_integer_value(json_object_get(v[i], "domid")),
                   json_string_value(json_object_get(v[i], "domain")),
                   json_string_value(json_object_get(v[i], "uuid")),
                   json_string_value(json_object_get(v[i], "state")),
                   (int)json_integer_value(json_object_get(v[i], "pid")));
    }
    free(v);
    json_decref(l.arr);
    return 0;
}

static int cmd_start(struct vmc_ctx *ctx, const struct args *a, int argc,
                     char **argv)
{
    int id;

    if (argc < 1)
        return cli_usage("start: missing NAME");
    if (argc > 1 && !strcmp(argv[1], "--")) {
        argv[1] = argv[0];
        argc--;
        argv++;
    }
    if (argc < 2)
        return cli_usage("start: missing QEMU-ARGS");
    if (vmc_qemu_start(ctx, argv[0], a->uuid, argc - 1, argv + 1, &id) < 0) {
        cli_ctx_err(argv[0], ctx);
        return 1;
    }
    printf("%d\n", id);
    return 0;
}

static int cmd_domain(struct vmc_ctx *ctx, const char *cmd, const char *dom)
{
    const struct vmc_backend *be = vmc_backend_get("qemu");
    int rc;

    if (!strcmp(cmd, "status") || !strcmp(cmd, "rundir")) {
        struct listctx l = { .want = dom };
        vmc_qemu_list(ctx, list_print, &l);
        if (!l.found) {
            cli_err(dom, "no such domain (see vmctl list)");
            return 1;
        }
        printf("%s\n", !strcmp(cmd, "status") ? l.state : l.dir);
        return 0;
    }
    if (!strcmp(cmd, "console")) {
        int fd;
        char what[300];
        if (vmc_console_open(ctx, be, dom, &fd) < 0) {
            cli_ctx_err(dom, ctx);
            return 1;
        }
        cli_signals_flag();
        snprintf(what, sizeof(what), "domain %s", dom);
        cli_console(fd, what);
        close(fd);
        return 0;
    }
    rc = !strcmp(cmd, "destroy") ? vmc_domain_destroy(ctx, be, dom) :
         !strcmp(cmd, "pause") ? vmc_domain_pause(ctx, be, dom) :
                                 vmc_domain_resume(ctx, be, dom);
    if (rc < 0) {
        cli_ctx_err(dom, ctx);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct args a = { 0 };
    unsigned cmd = 0;
    int n, rc;

    cli_begin(argc, argv, "vmctl", help, SYNOPSIS);
    if (!ctx || vmc_init(ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    if (argc < 2)
        return cli_usage("missing command");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            cmd = cmds[i].cmd;
    if (!cmd && argv[1][0] != '-') {
        char m[96];
        snprintf(m, sizeof(m), "unknown command '%.40s'", argv[1]);
        return cli_usage(m);
    }
    /* the command is argv[0] of its own options; start's end at NAME, so
     * that QEMU's own options follow it as they are */
    n = cmd ? 1 + cli_parse(argc - 1, argv + 1, opts, cmd, CLI_ORDERED, on_opt,
                            &a, &a.bad)
            : cli_parse(argc, argv, opts, C_ALL, CLI_ORDERED, on_opt, &a,
                        &a.bad);
    if (a.bad.set)
        return cli_usage(a.bad.msg);
    if (!cmd)
        return cli_usage("missing command");
    if (cmd == C_START)
        rc = cmd_start(ctx, &a, argc - n, argv + n);
    else if (cmd == C_LIST)
        rc = argc > n ? cli_usage("list takes no operands")
                      : cmd_list(ctx, a.json);
    else if (argc - n != 1)
        rc = cli_usage(argc == n ? "missing DOMAIN" : "too many arguments");
    else
        rc = cmd_domain(ctx, argv[1], argv[n]);
    vmc_ctx_free(ctx);
    return rc;
}
