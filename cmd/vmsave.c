/* vmsave - suspend a domain to a sealed (encrypted, compressed) image. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cli.h"

enum {
    O_JSON = 1000, O_PAUSED, O_LIVE, O_KEEP, O_DISKS, O_ALLDISKS, O_MEMONLY,
    O_SPLIT,
};

static const struct cli_opt opts[] = {
    CLI_OPT_PASSFILE(1),
    CLI_OPT_PASSFD(1),
    CLI_OPT_KDFOPS(1),
    CLI_OPT_KDFMEM(1),
    CLI_OPT_LABEL(1),
    CLI_OPT_CHUNK(1),
    { "json", 0, NULL, 1, "print a JSON summary on stdout", O_JSON },
    { "paused", 'p', NULL, 1, "leave the domain paused after the save",
          O_PAUSED },
    { "live", 0, NULL, 1, "pre-copy while the guest runs (Xen PV: needs "
                          "shadow paging)", O_LIVE },
    { "keep", 0, "N", 1, "keep the N newest images of FILE's strftime pattern",
          O_KEEP },
    CLI_OPT_SPLIT(1, O_SPLIT),
    CLI_OPT_BACKEND(1),
    CLI_OPT_LIVETMO(1),
    CLI_OPT_MAXDOWN(1),
    { "checkpoint", 'c', NULL, 1, "leave the domain running after the save",
          'c' },
    { "disks", 0, NULL, 1, "carry the domain's writable disks in the image "
                           "(QEMU: also with --checkpoint)", O_DISKS },
    { "all-disks", 0, NULL, 1, "carry read-only media (CD-ROMs) too",
          O_ALLDISKS },
    { "memory-only", 0, NULL, 1, "checkpoint the memory of a domain with "
                                 "writable disks (vmrestore warns)", O_MEMONLY },
    { "recipient", 'r', "PUBKEY", 1, "seal to an X25519 recipient vmc1...",
          'r' },
    { "recipients-file", 'R', "FILE", 1, "seal to every recipient in FILE",
          'R' },
    { "key-file", 'k', "FILE", 1, "seal to a raw 256-bit key file", 'k' },
    { "passphrase", 'P', NULL, 1, "ask for a passphrase (twice) on the terminal",
          'P' },
    CLI_OPT_SIGNKEY(1),
    CLI_OPT_UNSIGNED(1),
    CLI_OPT_LEVEL(1),
    CLI_OPT_THREADS(1),
    { "quiet", 'q', NULL, 1, "no progress, no summary", 'q' },
    { "verbose", 'v', NULL, 1, "print the summary even when not on a tty",
          'v' },
    CLI_OPT_HELP_VERSION(1),
    { NULL, 0, NULL, 0, NULL },
};

#define SYNOPSIS "usage: vmsave [options] DOMAIN FILE|-\n"

struct args {
    struct vmc_ctx *ctx;
    struct vmc_keys *keys;
    struct vmc_save_opts so;
    struct cli_seal seal;
    struct cli_rounds rounds;
    int ask_pass, json, verbose, keep;
    uint64_t split;               /* --split: piece size, 0 = one file */
    int modes;                    /* 1: --checkpoint seen, 2: --paused */
    struct cli_bad bad;
};

static void help(unsigned mask)
{
    (void)mask;
    printf("vmsave %s - suspend a domain to a sealed image\n\n" SYNOPSIS
           "\nDefault: pause, save, make the image durable, destroy the domain."
           "\nFILE may hold strftime patterns (web-%%Y%%m%%dT%%H%%M.vmimg)."
           "\n--split SIZE writes FILE.000, FILE.001, ... (a FAT32 stick: "
           "4095M)."
           "\n\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, 1);
    cli_help_tail("the domain is left as it was", "vmsave(1)");
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;

    if (cli_seal_opt(&a->seal, &a->bad, id, arg) ||
        cli_key_opt(a->ctx, &a->bad, a->keys, id, arg))   /* -r -R -k */
        return;
    switch (id) {
    case 'v': a->verbose = 1; break;
    case 'c': a->so.mode = VMC_SAVE_CHECKPOINT; a->modes |= 1; break;
    case O_PAUSED: a->so.mode = VMC_SAVE_PAUSED; a->modes |= 2; break;
    case O_LIVE: a->so.live = 1; break;
    case O_DISKS:
        if (a->so.disks < VMC_SAVE_DISKS_WRITABLE)
            a->so.disks = VMC_SAVE_DISKS_WRITABLE;
        break;
    case O_ALLDISKS: a->so.disks = VMC_SAVE_DISKS_ALL; break;
    case O_MEMONLY: a->so.memory_only = 1; break;
    case 'P': a->ask_pass = 1; break;
    case O_JSON: a->json = 1; break;
    case O_SPLIT: a->split = cli_split_arg(&a->bad, arg); break;
    case O_KEEP:
        a->keep = (int)cli_uint_arg(&a->bad, arg, 1, 100000,
                                  "bad --keep '%s' (1 or more)");
        break;
    }
}

static void summary(const struct args *a, const char *file,
                    const struct vmc_save_result *r,
                    const struct cli_retained *kept)
{
    int removed = kept ? kept->nremoved : 0;
    /* With FILE "-" stdout carries the image: summaries go to stderr. */
    FILE *out = strcmp(file, "stdout") ? stdout : stderr;

    const char *mode = a->so.mode == VMC_SAVE_CHECKPOINT ? "checkpoint" :
                       a->so.mode == VMC_SAVE_PAUSED ? "paused" : "destroyed";

    if (a->json) {
        json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:b, s:I, s:I, s:I, s:I}",
                              "domain", r->name, "domid", r->domid, "file", file,
                              "after", mode, "live", a->so.live,
                              "total_time_ns", (json_int_t)r->total_ns,
                              "downtime_ns", (json_int_t)r->downtime_ns,
                              "bytes_written", (json_int_t)r->stream_bytes,
                              "backend_bytes", (json_int_t)r->backend_bytes);
        json_object_set_new(j, "rounds", rounds_json(&a->rounds));
        json_object_set_new(j, "forced_stop", json_boolean(r->forced_stop));
        json_object_set_new(j, "disks", json_integer(r->disks));
        json_object_set_new(j, "disks_carried", json_integer(r->disks_carried));
        json_object_set_new(j, "disks_not_captured",
                            json_integer(r->disks_not_captured));
        json_object_set_new(j, "disk_bytes", json_integer((json_int_t)r->disk_bytes));
        json_object_set_new(j, "disk_time_ns", json_integer((json_int_t)r->disk_ns));
        json_object_set_new(j, "removed", json_integer(removed));
        if (kept) {
            json_t *rm = json_array(), *sk = json_array();
            for (int i = 0; i < kept->nremoved && i < 64; i++)
                json_array_append_new(rm, json_string(kept->removed[i]));
            for (int i = 0; i < kept->nskipped && i < 64; i++)
                json_array_append_new(sk, json_pack("{s:s, s:s}", "file",
                                                    kept->skipped[i].name,
                                                    "why", kept->skipped[i].why));
            json_object_set_new(j, "removed_files", rm);
            json_object_set_new(j, "skipped", sk);
        }
        /* the names every tool uses ("file", "bytes_written": kept) */
        json_object_set_new(j, "image", json_string(file));
        json_object_set_new(j, "stream_bytes", json_integer((json_int_t)r->stream_bytes));
        json_dumpf(j, out, JSON_COMPACT);
        fprintf(out, "\n");
        json_decref(j);
        return;
    }
    if (cli_quiet || (!a->verbose && !isatty(fileno(out))))
        return;
    {
        char w[32], b[32];
        cli_human(w, sizeof(w), (double)r->stream_bytes);
        cli_human(b, sizeof(b), (double)r->backend_bytes);
        fprintf(out, "%s: saved to %s (%s)%s\n", r->name, file, mode,
                a->so.live ? ", live" : "");
        fprintf(out, "  total time %.3f s, bytes written %s (stream %s), "
                "downtime %.3f s\n", (double)r->total_ns / 1e9, w, b,
                (double)r->downtime_ns / 1e9);
        if (r->disks_carried) {
            char d[32];
            cli_human(d, sizeof(d), (double)r->disk_bytes);
            fprintf(out, "  disks: %d carried (%s) in %.3f s\n", r->disks_carried,
                    d, (double)r->disk_ns / 1e9);
        }
        print_rounds(out, &a->rounds);
        if (removed)
            fprintf(out, "  removed %d older image%s (--keep %d)\n", removed,
                    removed == 1 ? "" : "s", a->keep);
        for (int i = 0; kept && i < kept->nskipped && i < 64; i++)
            fprintf(out, "  left %s: %s\n", kept->skipped[i].name,
                    kept->skipped[i].why);
    }
}

int main(int argc, char **argv)
{
    struct args a;
    const struct vmc_backend *be;
    struct vmc_outfile *of = NULL;
    struct vmc_save_result res;
    struct cli_progress pr;
    static struct cli_retained kept;
    char file[4096];
    const char *dom, *pattern, *why;
    int n, rc;

    cli_begin(argc, argv, "vmsave", help, SYNOPSIS);
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
    if (argc - n < 2)
        return cli_usage(argc - n == 0 ? "missing DOMAIN and FILE"
                                       : "missing FILE");
    if (argc - n > 2)
        return cli_usage("too many arguments");
    if (a.modes == 3)
        return cli_usage("--checkpoint and --paused exclude each other");
    if ((why = cli_seal_problem(&a.seal, a.so.live, "%s needs --live")))
        return cli_usage(why);
    if (a.so.memory_only && a.so.mode != VMC_SAVE_CHECKPOINT)
        return cli_usage("--memory-only needs --checkpoint (a stopped save "
                         "keeps its disks as they are)");
    if (a.so.memory_only && a.so.disks)
        return cli_usage("--memory-only and --disks exclude each other");
    dom = argv[n];
    pattern = argv[n + 1];
    if ((rc = cli_seal_backend(&a.seal, &be)) ||
        (rc = cli_seal_keys(a.ctx, a.keys, &a.seal, a.ask_pass,
                            "Passphrase for the image: ")))
        return rc;
    if (!a.seal.wo.unsigned_v1 && cli_signing_load(a.ctx, a.keys,
                                                   a.seal.sign_key) < 0)
        return 1;
    if (!strcmp(pattern, "-") && isatty(1))
        return cli_usage("refusing to write an image to a terminal");
    if (a.split && !strcmp(pattern, "-"))
        return cli_usage("--split needs a FILE, not '-'");
    if (a.keep && (!strcmp(pattern, "-") || !strchr(pattern, '%')))
        return cli_usage("--keep needs a FILE with a strftime pattern");
    if (a.keep && cli_pattern_inexact(pattern)) {
        char m[160];
        snprintf(m, sizeof(m), "--keep: %s in the pattern cannot be matched "
                 "exactly (use %%Y %%m %%d %%H %%M %%S %%y %%j %%F %%T)",
                 cli_pattern_inexact(pattern));
        return cli_usage(m);
    }
    if (cli_strftime_path(pattern, file, sizeof(file)) < 0) {
        cli_err(dom, "%s: bad strftime pattern", pattern);
        return 1;
    }
    cli_seal_save_opts(&a.seal, &a.so);
    a.so.keys = a.keys;
    cli_signals_flag();
    if ((a.split ? vmc_outfile_open_split(a.ctx, file, 0, a.split, &of)
                 : vmc_outfile_open(a.ctx, file, 0, &of)) < 0) {
        cli_err(dom, "%s; domain untouched", cli_ctx_msg(a.ctx));
        return 1;
    }
    cli_progress_init(&pr, "saving", 0);
    a.so.progress = cli_progress_cb_int;
    a.so.progress_arg = &pr;
    a.so.expect = cli_progress_expect;
    a.so.round = cli_rounds_add;
    a.so.round_arg = &a.rounds;      /* about the guest's memory */
    rc = vmc_save(a.ctx, be, dom, of, &a.so, &res);
    cli_progress_done(&pr);
    if (rc < 0) {
        const char *done = res.domid < 0 || res.lost ? "nothing written" :
                           res.resumed_after_error ? "domain resumed, nothing written" :
                           res.state_unknown ? "nothing written (the domain's "
                                               "state could not be read: check it)" :
                           res.was_running ? "nothing written (domain NOT running: "
                                             "check it)" :
                           "domain left as it was, nothing written";
        cli_err(dom, "%s; %s", cli_ctx_msg(a.ctx),
                res.destroy_failed ? "image kept" : done);
        vmc_outfile_free(of);
        return 1;
    }
    vmc_outfile_free(of);
    if (res.disks_not_captured && !cli_quiet)
        cli_err(dom, "warning: %d writable disk%s not captured (--memory-only): this "
                 "checkpoint matches them only as long as the domain does not "
                 "write to them", res.disks_not_captured,
                 res.disks_not_captured == 1 ? "" : "s");
    if (a.keep)
        cli_retention(pattern, file, a.keep, &kept);
    summary(&a, strcmp(file, "-") ? file : "stdout", &res, a.keep ? &kept : NULL);
    cli_rounds_free(&a.rounds);
    vmc_keys_free(a.keys);
    vmc_ctx_free(a.ctx);
    return 0;
}
