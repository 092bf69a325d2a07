/* vmrestore - authenticate a sealed image and restore it as a new domain. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "../format/vmckpt_wire.h"
#include "cli.h"

enum { O_NAME = 1000, O_CLONE, O_JSON, O_CONFIG, O_ALLOWDIR, O_TRUSTFILE,
       O_UNSIGNED, O_DISKDIR, O_DISK, O_NET };

static const struct cli_opt opts[] = {
    CLI_OPT_PASSFILE(1),
    CLI_OPT_PASSFD(1),
    { "name", 0, "NAME", 1, "name of the new domain (and a fresh UUID if "
                            "needed)", O_NAME },
    { "clone", 0, NULL, 1, "a second instance: NAME-clone, fresh UUID",
          O_CLONE },
    { "json", 0, NULL, 1, "print a JSON summary instead of the domain ID",
          O_JSON },
    { "config", 0, "FILE", 1, "restore with this domain config (JSON, as "
                              "vmimage config --json prints it)", O_CONFIG },
    { "allow-dir", 0, "DIR", 1, "let the config name host files under DIR "
                                "(repeatable)", O_ALLOWDIR },
    { "disk-dir", 0, "DIR", 1, "write the disks the image carries into DIR "
                               "(NAME-ID.raw)", O_DISKDIR },
    { "disk", 0, "ID=PATH", 1, "disk ID is at PATH on this host (a carried "
                               "one: written there; repeatable)", O_DISK },
    { "net", 0, "ID=ATTACHMENT", 1, "attach network ID to ATTACHMENT (QEMU: "
                                    "a -netdev back end; Xen: a bridge)",
          O_NET },
    { "trusted-signer", 't', "SIGNER", 1, "restore what this signer (vmcs1...)"
                                           " made (repeatable)", 't' },
    { "trusted-signers", 0, "FILE", 1, "trusted signers, one per line "
                                       "(default " CLI_TRUSTED_SIGNERS_FILE ")",
          O_TRUSTFILE },
    { "allow-unsigned", 0, NULL, 1, "DANGEROUS: also restore a format-1 image,"
                                    " which anyone who knows a recipient can "
                                    "make", O_UNSIGNED },
    { "identity", 'i', "FILE", 1, "open with an identity or raw key file",
          'i' },
    { "key-file", 'k', "FILE", 1, "open with a raw 256-bit key file", 'k' },
    { "passphrase", 'P', NULL, 1, "ask for the passphrase on the terminal",
          'P' },
    { "console", 'c', NULL, 1, "attach the console after the restore (^] "
                               "detaches)", 'c' },
    { "paused", 'p', NULL, 1, "leave the new domain paused", 'p' },
    CLI_OPT_THREADS(1),
    { "quiet", 'q', NULL, 1, "no progress", 'q' },
    CLI_OPT_HELP_VERSION(1),
    { NULL, 0, NULL, 0, NULL },
};

#define SYNOPSIS "usage: vmrestore [options] FILE|-\n"

struct args {
    struct vmc_ctx *ctx;
    struct vmc_keys *keys;
    struct vmc_restore_opts ro;
    struct cli_seal seal;         /* its passphrase rows and --threads */
    int ask_pass, console, json;
    const char *config;
    struct cli_dirs dirs;
    struct cli_remaps maps;
    struct cli_trust trust;
    int allow_unsigned;
    struct cli_bad bad;
};

static void help(unsigned mask)
{
    (void)mask;
    printf("vmrestore %s - restore a sealed image as a new domain\n\n" SYNOPSIS
           "\nPrints the new domain ID.  Only an image signed by a trusted "
           "signer is\nrestored, and the domain runs only after the whole image "
           "has authenticated.\nFILE may be a split set (vmsave --split): its "
           "NAME or NAME.000.\n\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, 1);
    cli_help_tail("no domain left behind", "vmrestore(1)");
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;

    if (cli_seal_opt(&a->seal, &a->bad, id, arg) ||
        cli_key_opt(a->ctx, &a->bad, a->keys, id, arg))   /* -i -k */
        return;
    switch (id) {
    case 'c': a->console = 1; break;
    case 'p': a->ro.paused = 1; break;
    case 'P': a->ask_pass = 1; break;
    case O_NAME:
        if (!*arg || strspn(arg, "0123456789") == strlen(arg))
            cli_bad_set(&a->bad, "bad --name '%s' (empty or all digits)", arg);
        a->ro.name = arg;
        break;
    case O_CLONE: a->ro.clone = 1; break;
    case O_JSON: a->json = 1; break;
    case O_CONFIG: a->config = arg; break;
    case O_ALLOWDIR:
        cli_dirs_add(&a->dirs, &a->bad, arg);
        break;
    case O_DISKDIR:                 /* the admin's own: the policy allows it */
        a->ro.disk_dir = arg;
        cli_dirs_add(&a->dirs, &a->bad, arg);
        break;
    case O_DISK: cli_remap_add(&a->maps, &a->bad, 1, arg); break;
    case O_NET: cli_remap_add(&a->maps, &a->bad, 0, arg); break;
    case 't': cli_trust_add(&a->trust, &a->bad, arg); break;
    case O_TRUSTFILE: a->trust.file = arg; break;
    case O_UNSIGNED: a->allow_unsigned = 1; break;
    }
}

/* The passphrase options, or a prompt when the image has a passphrase slot
 * and nothing else was given. */
static int get_pass(struct args *a, const struct vmc_header *h)
{
    return cli_add_passphrase(a->ctx, a->keys, a->seal.pass_file,
                              a->seal.pass_fd,
                              a->ask_pass || (vmc_header_has_passphrase(h) &&
                                              vmc_keys_count(a->keys) == 0 &&
                                              cli_have_tty()),
                              0, "Passphrase: ");
}

/* The new domain on stdout: its ID, or --json; and the warning of a
 * memory-only checkpoint. */
static void report(const struct args *a, const char *obj,
                   const struct vmc_restore_result *res)
{
    if (res->disks_not_captured)
        cli_err(obj, "warning: the image is a memory-only checkpoint: %d "
                "writable disk%s of %s were not captured with it and may have "
                "moved on since (the guest may see a corrupt filesystem)",
                res->disks_not_captured, res->disks_not_captured == 1 ? "" : "s",
                res->name);
    if (a->json) {
        json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:b, s:I, s:I, s:i, s:i}",
                              "domid",
                              res->domid, "domain", res->name, "name", res->name,
                              "image", obj,
                              "paused", a->ro.paused, "total_time_ns",
                              (json_int_t)res->total_ns, "backend_bytes",
                              (json_int_t)res->backend_bytes, "disks_written",
                              res->disks_written, "disks_not_captured",
                              res->disks_not_captured);
        json_dumpf(j, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(j);
    } else {
        printf("%d\n", res->domid);
    }
    fflush(stdout);
}

/* -c: the console of the restored domain; 1 if it cannot be attached
 * (vmrestore(1): EXIT STATUS). */
static int console(struct args *a, const struct vmc_restore_result *res)
{
    char spec[32], what[300];
    int cfd;

    snprintf(spec, sizeof(spec), "%d", res->domid);
    snprintf(what, sizeof(what), "domain %d (%s)", res->domid, res->name);
    if (vmc_console_open(a->ctx, res->backend, spec, &cfd) < 0) {
        cli_err(res->name, "restored and running, but the console cannot "
                "be attached: %s", cli_ctx_msg(a->ctx));
        return 1;
    }
    cli_console(cfd, what);
    close(cfd);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_restore_result res;
    struct cli_progress pr;
    const char *path, *obj;
    struct vmc_policy *pol = NULL;
    uint8_t *cfg = NULL;
    struct vmc_input *in = NULL;
    int n, fd = -1, rc = 1;

    cli_begin(argc, argv, "vmrestore", help, SYNOPSIS);
    memset(&a, 0, sizeof(a));
    cli_seal_init(&a.seal);
    a.ctx = vmc_ctx_new();
    a.keys = vmc_keys_new();
    if (!a.ctx || !a.keys || vmc_init(a.ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    n = cli_parse(argc, argv, opts, 1, 0, on_opt, &a, &a.bad);
    if (a.bad.set)
        return cli_usage(a.bad.msg);
    if (argc - n != 1)
        return cli_usage(argc - n ? "too many arguments" : "missing FILE");
    if (a.ro.name && a.ro.clone)
        return cli_usage("--name and --clone exclude each other");
    path = argv[n];
    obj = strcmp(path, "-") ? path : "stdin";
    if (a.ro.disk_dir && !cli_disk_dir_ok(a.ro.disk_dir))
        return 1;
    if (cli_trust_load(a.ctx, a.keys, &a.trust) < 0)
        return 1;
    vmc_keys_set_trust(a.keys, a.allow_unsigned ? VMC_TRUST_UNSIGNED : 0);
    if (!(pol = cli_policy(a.ctx, &a.dirs)))
        return 1;
    a.ro.policy = pol;
    cli_remaps_to(&a.maps, &a.ro);
    if (a.config && cli_read_file(a.config, VMC_REC_MAX_LEN - 8, &cfg,
                                  &a.ro.config_len) < 0) {
        vmc_policy_free(pol);
        return 1;
    }
    a.ro.config = cfg;
    if (vmc_input_open(a.ctx, path, &in) < 0) {  /* a file or a split set */
        cli_ctx_err(NULL, a.ctx);       /* the message names the file */
        return 1;
    }
    fd = vmc_input_fd(in);
    cli_signals_flag();
    if (vmc_header_read(a.ctx, fd, &h) < 0) {
        cli_ctx_err(vmc_input_blame(in, a.ctx), a.ctx);
        goto out;
    }
    if (vmc_header_check_signer(a.ctx, h, a.keys) < 0) {
        cli_err(obj, "%s; no domain created", cli_ctx_msg(a.ctx));
        goto out;
    }
    if (get_pass(&a, h) < 0)
        goto out;
    if (vmc_header_unlock(a.ctx, h, a.keys) < 0) {
        cli_ctx_err(obj, a.ctx);
        goto out;
    }
    if (vmc_reader_new(a.ctx, fd, h, a.seal.wo.threads, 1, &r) < 0) {
        h = NULL;
        cli_ctx_err(vmc_input_blame(in, a.ctx), a.ctx);
        goto out;
    }
    h = NULL;
    /* From a file: how much of it is read; from a pipe: the guest's memory
     * (IMAGE_INFO) against the stream restored so far, an estimate. */
    cli_progress_init(&pr, "restoring", vmc_input_size(in));
    a.ro.progress = cli_progress_cb_int;
    a.ro.progress_arg = &pr;
    if (pr.total)
        pr.reader = r;
    else
        a.ro.expect = cli_progress_expect;
    if (vmc_restore(a.ctx, r, &a.ro, &res) < 0) {
        cli_progress_done(&pr);
        obj = vmc_input_blame(in, a.ctx);   /* a set: the piece, first */
        cli_err(obj, "%s; %sno domain created", cli_ctx_msg(a.ctx),
                vmc_ctx_errcode(a.ctx) == VMC_E_CLASH ? "use --name NEW or "
                                                        "--clone; " : "");
        goto out;
    }
    cli_progress_done(&pr);
    report(&a, obj, &res);
    rc = a.console ? console(&a, &res) : 0;
out:
    vmc_reader_free(r);
    vmc_header_free(h);
    vmc_policy_free(pol);
    free(cfg);
    cli_remaps_free(&a.maps);
    vmc_keys_free(a.keys);
    vmc_ctx_free(a.ctx);
    vmc_input_close(in);
    return rc;
}
