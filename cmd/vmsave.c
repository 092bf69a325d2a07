/* vmsave - suspend a domain to a sealed (encrypted, compressed) image. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "../format/vmckpt_wire.h"
#include "cli.h"

enum {
    O_PASSFILE = 1000, O_PASSFD, O_KDFOPS, O_KDFMEM, O_LABEL, O_CHUNK, O_JSON,
    O_PAUSED, O_LIVE, O_KEEP, O_BACKEND, O_LIVETMO, O_MAXDOWN, O_SIGNKEY,
    O_UNSIGNED, O_DISKS, O_ALLDISKS, O_MEMONLY,
};

static const struct cli_opt opts[] = {
    { "passphrase-file", 0, "FILE", 1, "read the passphrase from FILE",
          O_PASSFILE },
    { "passphrase-fd", 0, "N", 1, "read the passphrase from fd N", O_PASSFD },
    { "kdf-ops", 0, "N", 1, "Argon2id passes (default 3, max 16)", O_KDFOPS },
    { "kdf-mem", 0, "MIB", 1, "Argon2id memory (default 256, 8..1024)",
          O_KDFMEM },
    { "label", 0, "TEXT", 1, "public label, readable without a key", O_LABEL },
    { "chunk-size", 0, "BYTES", 1, "bytes per chunk (power of 2, 64K..16M)",
          O_CHUNK },
    { "json", 0, NULL, 1, "print a JSON summary on stdout", O_JSON },
    { "paused", 'p', NULL, 1, "leave the domain paused after the save",
          O_PAUSED },
    { "live", 0, NULL, 1, "pre-copy while the guest runs (Xen PV: needs "
                          "shadow paging)", O_LIVE },
    { "keep", 0, "N", 1, "keep the N newest images of FILE's strftime pattern",
          O_KEEP },
    { "backend", 0, "NAME", 1, "qemu or xen (default: xen on a Xen dom0, else "
                              "qemu)", O_BACKEND },
    { "live-timeout", 0, "S", 1, "live: pause the guest after S s of pre-copy "
                                  "(default 30; Xen: PVH with --max-downtime)",
                                        O_LIVETMO },
    { "max-downtime", 0, "MS", 1, "live: the pause to aim for (default 300; "
                                  "Xen: PVH only, through libxenguest)",
                                        O_MAXDOWN },
    { "checkpoint", 'c', NULL, 1, "leave the domain running after the save",
          'c' },
    { "disks", 0, NULL, 1, "carry the domain's writable disks in the image "
                           "(a save that stops it)", O_DISKS },
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
    { "signing-key", 0, "FILE", 1, "sign with this key (default "
                                   CLI_SIGNING_KEY_FILE ")", O_SIGNKEY },
    { "unsigned", 0, NULL, 1, "write format 1, unsigned (restoring it needs "
                              "--allow-unsigned)", O_UNSIGNED },
    { "level", 'l', "N", 1, "zstd level 1..19 (default 1)", 'l' },
    { "threads", 'T', "N", 1, "worker threads (default: CPUs)", 'T' },
    { "quiet", 'q', NULL, 1, "no progress, no summary", 'q' },
    { "verbose", 'v', NULL, 1, "print the summary even when not on a tty",
          'v' },
    { "help", 'h', NULL, 1, "show this help", 'h' },
    { "version", 'V', NULL, 1, "show the version", 'V' },
    { NULL, 0, NULL, 0, NULL },
};

#define SYNOPSIS "usage: vmsave [options] DOMAIN FILE|-\n"

struct args {
    struct vmc_ctx *ctx;
    struct vmc_keys *keys;
    struct vmc_save_opts so;
    struct cli_rounds rounds;
    int ask_pass, pass_fd, json, verbose, keep;
    int modes;                    /* 1: --checkpoint seen, 2: --paused */
    const char *pass_file, *backend, *sign_key;
    unsigned kdf_ops, kdf_mem_kib;
    struct cli_bad bad;
};

static int usage(const char *why)
{
    return cli_usage(SYNOPSIS, why);
}

static void help(unsigned mask)
{
    (void)mask;
    printf("vmsave %s - suspend a domain to a sealed image\n\n" SYNOPSIS
           "\nDefault: pause, save, make the image durable, destroy the domain."
           "\nFILE may hold strftime patterns (web-%%Y%%m%%dT%%H%%M.vmimg)."
           "\n\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, 1);
    printf("\nBackends in this build: %s.\nExit status: 0 success, 1 failure "
           "(the domain is left as it was), 2 usage.  See vmsave(1).\n",
           vmc_backends_built());
}

static void bad(struct args *a, const char *fmt, const char *x)
{
    cli_bad_set(&a->bad, fmt, x);
}

static void key_rc(struct args *a, int rc)
{
    if (rc < 0) {
        cli_ctx_err(NULL, a->ctx);
        exit(1);
    }
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;
    unsigned long long v;

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
    case 'r': key_rc(a, vmc_keys_add_recipient(a->ctx, a->keys, arg)); break;
    case 'R': key_rc(a, vmc_keys_add_recipients_file(a->ctx, a->keys, arg)); break;
    case 'k': key_rc(a, vmc_keys_add_keyfile(a->ctx, a->keys, arg)); break;
    case 'P': a->ask_pass = 1; break;
    case O_PASSFILE: a->pass_file = arg; break;
    case O_PASSFD:
        a->pass_fd = (int)cli_uint_arg(&a->bad, arg, 0, 1 << 20,
                                  "bad --passphrase-fd '%s'");
        break;
    case O_KDFOPS:
        a->kdf_ops = (unsigned)cli_uint_arg(&a->bad, arg, 1, VMC_ARGON2_OPS_MAX,
                                  "bad --kdf-ops '%s' (1..16)");
        break;
    case O_KDFMEM:
        a->kdf_mem_kib = (unsigned)cli_uint_arg(&a->bad, arg, 8, 1024,
                                  "bad --kdf-mem '%s' (8..1024 MiB)") * 1024;
        break;
    case O_LABEL: a->so.wopts.label = arg; break;
    case O_SIGNKEY: a->sign_key = arg; break;
    case O_UNSIGNED: a->so.wopts.unsigned_v1 = 1; break;
    case O_CHUNK:
        if (cli_parse_uint(arg, VMC_CHUNK_MAX, &v) || v < VMC_CHUNK_MIN ||
            (v & (v - 1)))
            bad(a, "bad --chunk-size '%s' (power of 2, 65536..16777216)", arg);
        a->so.wopts.chunk_size = (uint32_t)v;
        break;
    case 'l':
        a->so.wopts.level = (int)cli_uint_arg(&a->bad, arg, 1, 19,
                                  "bad --level '%s' (1..19)");
        break;
    case 'T':
        a->so.wopts.threads = (int)cli_uint_arg(&a->bad, arg, 1, 64,
                                  "bad --threads '%s' (1..64)");
        break;
    case O_JSON: a->json = 1; break;
    case O_KEEP:
        a->keep = (int)cli_uint_arg(&a->bad, arg, 1, 100000,
                                  "bad --keep '%s' (1 or more)");
        break;
    case O_BACKEND: a->backend = arg; break;
    case O_MAXDOWN:
        a->so.max_downtime_ms = (uint32_t)cli_uint_arg(&a->bad, arg, 1, 600000,
                                  "bad --max-downtime '%s' (milliseconds)");
        break;
    case O_LIVETMO:
        a->so.live_timeout_s = (uint32_t)cli_uint_arg(&a->bad, arg, 1, 86400,
                                  "bad --live-timeout '%s' (seconds)");
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
            fprintf(out, "  disks: %d carried (%s)\n", r->disks_carried, d);
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
    const char *dom, *pattern;
    int n, rc;

    cli_harden();
    vmc_guard_dispatch(argc, argv);
    cli_prog = "vmsave";
    cli_help = help;
    memset(&a, 0, sizeof(a));
    a.pass_fd = -1;
    a.backend = NULL;               /* xen on a Xen dom0, else qemu */
    a.ctx = vmc_ctx_new();
    a.keys = vmc_keys_new();
    if (!a.ctx || !a.keys || vmc_init(a.ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    n = cli_parse(argc, argv, opts, 1, 0, on_opt, &a, &a.bad);
    if (a.bad.set)
        return usage(a.bad.msg);
    if (argc - n < 2)
        return usage(argc - n == 0 ? "missing DOMAIN and FILE" : "missing FILE");
    if (argc - n > 2)
        return usage("too many arguments");
    if (a.modes == 3)
        return usage("--checkpoint and --paused exclude each other");
    if (!a.so.live && a.so.max_downtime_ms)
        return usage("--max-downtime needs --live");
    if (!a.so.live && a.so.live_timeout_s)
        return usage("--live-timeout needs --live");
    if (a.so.memory_only && a.so.mode != VMC_SAVE_CHECKPOINT)
        return usage("--memory-only needs --checkpoint (a stopped save keeps "
                     "its disks as they are)");
    if (a.so.memory_only && a.so.disks)
        return usage("--memory-only and --disks exclude each other");
    dom = argv[n];
    pattern = argv[n + 1];
    if (!a.backend)
        be = vmc_backend_default();
    else if (!(be = vmc_backend_get(a.backend))) {
        char m[160];
        snprintf(m, sizeof(m), "unknown backend '%.40s' (built: %s)", a.backend,
                 vmc_backends_built());
        return usage(m);
    }
    if (cli_add_passphrase(a.ctx, a.keys, a.pass_file, a.pass_fd, a.ask_pass, 1,
                           "Passphrase for the image: ") < 0)
        return 1;
    vmc_keys_set_kdf(a.keys, a.kdf_ops, a.kdf_mem_kib);
    if (!vmc_keys_can_seal(a.keys))
        return usage("no key to seal to: give -r, -R, -k, -P, --passphrase-file or --passphrase-fd (images are "
                     "always encrypted)");
    if (a.sign_key && a.so.wopts.unsigned_v1)
        return usage("--signing-key and --unsigned exclude each other");
    if (!a.so.wopts.unsigned_v1 && cli_signing_load(a.ctx, a.keys,
                                                    a.sign_key) < 0)
        return 1;
    if (!strcmp(pattern, "-") && isatty(1))
        return usage("refusing to write an image to a terminal");
    if (a.keep && (!strcmp(pattern, "-") || !strchr(pattern, '%')))
        return usage("--keep needs a FILE with a strftime pattern");
    if (a.keep && cli_pattern_inexact(pattern)) {
        char m[160];
        snprintf(m, sizeof(m), "--keep: %s in the pattern cannot be matched "
                 "exactly (use %%Y %%m %%d %%H %%M %%S %%y %%j %%F %%T)",
                 cli_pattern_inexact(pattern));
        return usage(m);
    }
    if (cli_strftime_path(pattern, file, sizeof(file)) < 0) {
        cli_err(dom, "%s: bad strftime pattern", pattern);
        return 1;
    }
    a.so.keys = a.keys;
    cli_signals_flag();
    if (vmc_outfile_open(a.ctx, file, 0, &of) < 0) {
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
