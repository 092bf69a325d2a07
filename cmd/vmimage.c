/* vmimage - inspect, verify, seal, unseal and rekey vmckpt images. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "../format/vmckpt_wire.h"
#include "../lib/vmckpt_xl.h"
#include "cli.h"

enum {
    C_KEYGEN = 1u << 0, C_INFO = 1u << 1, C_VERIFY = 1u << 2, C_SEAL = 1u << 3,
    C_UNSEAL = 1u << 4, C_REKEY = 1u << 5, C_CONFIG = 1u << 6, C_ALL = 0x7f,
    C_OPEN = C_INFO | C_VERIFY | C_UNSEAL | C_REKEY | C_CONFIG,
};

enum {
    O_SYMMETRIC = 1000, O_NAME, O_JSON, O_ADDPASS, O_NEWPASSFILE, O_NEWPASSFD,
    O_ADDKEY, O_RMPASS, O_RMID, O_RMSLOT, O_FROMXL, O_TOXL, O_ALLOWDIR,
    O_DISKDIR,
    O_ROTATE, O_SIGN, O_TRUSTFILE, O_SPLIT,
};

static const struct cli_opt opts[] = {
    { "symmetric", 0, NULL, C_KEYGEN, "keygen: a raw 256-bit key file",
          O_SYMMETRIC },
    { "sign", 0, NULL, C_KEYGEN, "keygen: an Ed25519 signing key (prints its "
                                 "signer vmcs1...)", O_SIGN },
    CLI_OPT_SIGNKEY(C_SEAL | C_REKEY),
    CLI_OPT_UNSIGNED(C_SEAL),
    { "trusted-signer", 't', "SIGNER", C_OPEN, "trust this signer vmcs1... "
      "(repeatable; verify and unseal refuse others)", 't' },
    { "trusted-signers", 0, "FILE", C_OPEN, "trusted signers, one per line "
      "(default " CLI_TRUSTED_SIGNERS_FILE ")", O_TRUSTFILE },
    CLI_OPT_PASSFILE(C_OPEN | C_SEAL),
    CLI_OPT_PASSFD(C_OPEN | C_SEAL),
    CLI_OPT_KDFOPS(C_SEAL | C_REKEY),
    CLI_OPT_KDFMEM(C_SEAL | C_REKEY),
    CLI_OPT_LABEL(C_SEAL),
    { "name", 0, "NAME", C_SEAL, "domain name recorded in IMAGE_INFO", O_NAME },
    CLI_OPT_CHUNK(C_SEAL),
    { "json", 0, NULL, C_INFO | C_VERIFY | C_CONFIG,
      "print a JSON summary (config: the config itself, for --config)",
      O_JSON },
    { "allow-dir", 0, "DIR", C_CONFIG,
      "judge as vmrestore --allow-dir DIR would (repeatable)", O_ALLOWDIR },
    { "add-passphrase", 0, NULL, C_REKEY, "add a passphrase slot", O_ADDPASS },
    { "new-passphrase-file", 0, "FILE", C_REKEY,
      "the added passphrase, from the first line of FILE", O_NEWPASSFILE },
    { "new-passphrase-fd", 0, "N", C_REKEY, "the added passphrase, from fd N",
          O_NEWPASSFD },
    { "add-key-file", 0, "FILE", C_REKEY, "add a raw key file slot", O_ADDKEY },
    { "remove-passphrase", 0, NULL, C_REKEY, "remove every passphrase slot",
          O_RMPASS },
    { "remove-identity", 0, "FILE", C_REKEY,
      "remove the slots that FILE's identities or keys open", O_RMID },
    { "remove-slot", 0, "N", C_REKEY, "remove slot N (see info)", O_RMSLOT },
    { "rotate", 0, NULL, C_REKEY, "a new file key: the payload re-encrypted, "
                                  "only the keys given open it", O_ROTATE },
    { "from-xl", 0, NULL, C_SEAL, "input is a plaintext `xl save` file",
          O_FROMXL },
    { "to-xl", 0, NULL, C_UNSEAL, "write a file that `xl restore` accepts",
          O_TOXL },
    { "disks", 0, "DIR", C_UNSEAL, "write each carried disk to DIR/ID.raw "
                                   "(sparse; the stream only with -o)",
          O_DISKDIR },
    { "recipient", 'r', "PUBKEY", C_SEAL | C_REKEY,
      "seal to (rekey: add) an X25519 recipient vmc1...", 'r' },
    { "recipients-file", 'R', "FILE", C_SEAL | C_REKEY,
      "seal to (rekey: add) every recipient in FILE", 'R' },
    { "identity", 'i', "FILE", C_OPEN, "open with an identity or raw key file",
          'i' },
    { "key-file", 'k', "FILE", C_OPEN | C_SEAL,
      "raw 256-bit key file (seal: add a slot; open: use it)", 'k' },
    { "passphrase", 'P', NULL, C_OPEN | C_SEAL,
      "ask for a passphrase on the terminal", 'P' },
    { "output", 'o', "FILE", C_KEYGEN | C_SEAL | C_UNSEAL | C_REKEY,
      "write to FILE (via FILE.partial) instead of stdout", 'o' },
    CLI_OPT_SPLIT(C_SEAL | C_REKEY, O_SPLIT),
    CLI_OPT_LEVEL(C_SEAL),
    CLI_OPT_THREADS(C_SEAL | C_OPEN),
    { "quiet", 'q', NULL, C_ALL, "no progress, no summary", 'q' },
    { "print-recipient", 'y', NULL, C_KEYGEN,
      "print the recipient of an identity file", 'y' },
    CLI_OPT_HELP_VERSION(C_ALL),
    { NULL, 0, NULL, 0, NULL },
};

struct args {
    unsigned cmd;
    struct vmc_ctx *ctx;
    struct vmc_keys *open;        /* keys that open an image */
    struct vmc_keys *seal;        /* keys to seal to / add */
    struct cli_seal cs;           /* the options of a sealed stream */
    int ask_pass;                 /* -P */
    int add_pass;
    const char *new_pass_file;
    int new_pass_fd;
    const char *name, *output;
    int json, symmetric, print_recipient;
    int rm_pass;
    const char *rm_id[16];
    int nrm_id;
    int rm_slot[32];
    int nrm_slot;
    int from_xl, to_xl, rotate;
    const char *disk_dir;         /* unseal --disks */
    int sign;
    uint64_t split;               /* --split: piece size of a new set */
    struct cli_trust trust;
    struct cli_dirs dirs;
    struct cli_bad bad;
};

static const struct {
    const char *name;
    unsigned cmd;
    const char *synopsis;
} cmds[] = {
    { "keygen", C_KEYGEN, "keygen [--symmetric|--sign] [-o FILE] | keygen -y [FILE]" },
    { "info", C_INFO, "info [-i FILE|-k FILE|-P] [-t SIGNER] [--json] IMAGE|-" },
    { "verify", C_VERIFY, "verify [-i FILE|-k FILE|-P] [-t SIGNER]... [-q] [--json] IMAGE...|-" },
    { "seal", C_SEAL,
      "seal (-r PUB|-R FILE|-k FILE|-P)... [--signing-key F|--unsigned] [-l N] "
      "[--label T] [--name N] [--from-xl] [-o OUT] [IN|-]" },
    { "unseal", C_UNSEAL, "unseal [-i FILE|-k FILE|-P] [-t SIGNER]... [--to-xl] [--disks DIR] [-o OUT] IMAGE|-" },
    { "config", C_CONFIG,
      "config [-i FILE|-k FILE|-P] [--allow-dir DIR]... [--json] IMAGE|-" },
    { "rekey", C_REKEY,
      "rekey [-i FILE|-k FILE|-P] [-r PUB|--add-passphrase|--add-key-file F|"
      "--remove-...]... [-o OUT] IMAGE" },
};

/* The synopsis of the commands in mask (a static buffer). */
static const char *synopsis(unsigned mask)
{
    static char buf[2048];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "usage:");

    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (cmds[i].cmd & mask && n < sizeof(buf))
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\t%s %s\n",
                                  cli_prog, cmds[i].synopsis);
    return buf;
}

static void help(unsigned mask)
{
    printf("vmimage %s - inspect, verify, seal, unseal and rekey vmckpt "
           "images\n\n", VMC_TOOL_VERSION);
    fputs(synopsis(mask), stdout);
    if (mask & C_OPEN)
        printf("\nIMAGE may be a split set (--split): its NAME or NAME.000.\n");
    printf("\noptions:\n");
    cli_print_options(stdout, opts, mask);
    cli_help_tail(NULL, "vmimage(1), vmckpt(5)");
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;
    /* -r, -R: the keys to seal to; -i: to open with; -k: either */
    struct vmc_keys *k = id == 'i' || (id == 'k' && a->cmd != C_SEAL) ? a->open
                                                                     : a->seal;
    unsigned long long v;

    if (cli_seal_opt(&a->cs, &a->bad, id, arg) ||
        cli_key_opt(a->ctx, &a->bad, k, id, arg))
        return;
    switch (id) {
    case 'y': a->print_recipient = 1; break;
    case 'o': a->output = arg; break;
    case O_ROTATE: a->rotate = 1; break;
    case O_SIGN: a->sign = 1; break;
    case 't': cli_trust_add(&a->trust, &a->bad, arg); break;
    case O_TRUSTFILE: a->trust.file = arg; break;
    case O_ALLOWDIR:
        cli_dirs_add(&a->dirs, &a->bad, arg);
        break;
    case 'P': a->ask_pass = 1; break;
    case O_SYMMETRIC: a->symmetric = 1; break;
    case O_NAME: a->name = arg; break;
    case O_JSON: a->json = 1; break;
    case O_ADDPASS: a->add_pass = 1; break;
    case O_NEWPASSFILE: a->new_pass_file = arg; a->add_pass = 1; break;
    case O_NEWPASSFD:
        a->new_pass_fd = (int)cli_uint_arg(&a->bad, arg, 0, 1 << 20,
                                  "bad --new-passphrase-fd '%s'");
        a->add_pass = 1;
        break;
    case O_ADDKEY: cli_key_opt(a->ctx, &a->bad, a->seal, 'k', arg); break;
    case O_RMPASS: a->rm_pass = 1; break;
    case O_RMID:
        if (a->nrm_id < 16)
            a->rm_id[a->nrm_id++] = arg;
        break;
    case O_FROMXL: a->from_xl = 1; break;
    case O_SPLIT: a->split = cli_split_arg(&a->bad, arg); break;
    case O_TOXL: a->to_xl = 1; break;
    case O_DISKDIR: a->disk_dir = arg; break;
    case O_RMSLOT:
        if (cli_parse_uint(arg, VMC_MAX_SLOTS - 1, &v) || a->nrm_slot >= 32)
            cli_bad_set(&a->bad, "bad --remove-slot '%s'", arg);
        else
            a->rm_slot[a->nrm_slot++] = (int)v;
        break;
    }
}

/* ---- helpers ------------------------------------------------------------- */

/* The image being read: a file, stdin or a split set (one at a time). */
static struct vmc_input *cur_in;

static int open_input(struct args *a, const char *path)
{
    if (vmc_input_open(a->ctx, path, &cur_in) < 0) {
        cli_ctx_err(NULL, a->ctx);      /* the message names the file */
        return -1;
    }
    return vmc_input_fd(cur_in);
}

static void close_input(int fd)
{
    if (cur_in && fd == vmc_input_fd(cur_in)) {
        vmc_input_close(cur_in);
        cur_in = NULL;
    } else if (fd > 0) {
        close(fd);
    }
}

static uint64_t input_size(int fd)
{
    return cur_in ? vmc_input_size(cur_in) : input_size(fd);
}

/* What to name in the message of the error in a->ctx: a set's piece
 * where the stream broke (lib/io/input.c), else obj. */
static const char *blame(struct args *a, const char *obj)
{
    return cur_in && vmc_input_pieces(cur_in) ? vmc_input_blame(cur_in, a->ctx)
                                              : obj;
}

/* The output file, or with --split a set of pieces. */
static int open_output(struct args *a, const char *out, int overwrite,
                       struct vmc_outfile **of)
{
    return a->split ? vmc_outfile_open_split(a->ctx, out, overwrite, a->split, of)
                    : vmc_outfile_open(a->ctx, out, overwrite, of);
}

/* A split set NAME (NAME absent, NAME.000 there) or its NAME.000. */
static int is_set(const char *path)
{
    char first[4200];
    struct stat st;
    size_t n = strlen(path);

    if (n > 4 && !strcmp(path + n - 4, ".000"))
        return 1;
    snprintf(first, sizeof(first), "%s.000", path);
    return lstat(path, &st) < 0 && errno == ENOENT && lstat(first, &st) == 0;
}

/* A reader over fd under the unlocked header *h, which it takes (*h is
 * NULL after, also on failure, which is reported). */
static int open_reader(struct args *a, const char *obj, int fd,
                       struct vmc_header **h, struct vmc_reader **r)
{
    int rc = vmc_reader_new(a->ctx, fd, *h, a->cs.wo.threads, 1, r);

    *h = NULL;
    if (rc < 0)
        cli_ctx_err(blame(a, obj), a->ctx);
    return rc;
}

/* Reads and unlocks the header of image `obj` on fd. */
static int open_header(struct args *a, const char *obj, int fd, int need_key,
                       struct vmc_header **hp)
{
    int rc;

    *hp = NULL;
    if (vmc_header_read(a->ctx, fd, hp) < 0) {
        cli_ctx_err(blame(a, obj), a->ctx);
        return -1;
    }
    if (!need_key && vmc_keys_count(a->open) == 0 && !a->ask_pass &&
        !a->cs.pass_file && a->cs.pass_fd < 0)
        return 0;
    if (cli_add_passphrase(a->ctx, a->open, a->cs.pass_file, a->cs.pass_fd,
                           a->ask_pass, 0, a->cmd == C_REKEY ? "Current passphrase: "
                                                             : "Passphrase: ") < 0)
        goto fail;
    a->cs.pass_file = NULL;       /* read once: kept in a->open for the */
    a->cs.pass_fd = -1;           /* next image of `verify A B ...` */
    a->ask_pass = 0;
    if (vmc_keys_count(a->open) == 0) {
        if (vmc_header_has_passphrase(*hp) && cli_have_tty() &&
            cli_add_passphrase(a->ctx, a->open, NULL, -1, 1, 0,
                               a->cmd == C_REKEY ? "Current passphrase: "
                                                 : "Passphrase: ") < 0)
            goto fail;
    }
    rc = vmc_header_unlock(a->ctx, *hp, a->open);
    if (rc < 0) {
        cli_ctx_err(obj, a->ctx);
        goto fail;
    }
    return 0;
fail:
    vmc_header_free(*hp);
    *hp = NULL;
    return -1;
}

static void hex(char *out, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void uuid_str(char out[37], const uint8_t u[16])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
}

static json_t *header_json(const struct vmc_header *h,
                           const struct vmc_header_info *hi, int trusted)
{
    json_t *o = json_object(), *slots = json_array();
    char sid[33];

    hex(sid, hi->stream_id, 16);
    json_object_set_new(o, "version", json_integer(hi->version));
    json_object_set_new(o, "verified", json_boolean(hi->unlocked));
    json_object_set_new(o, "aead", json_string(
        vmc_aead_name(hi->aead)));
    json_object_set_new(o, "compression", json_string(
        vmc_compression_name(hi->compression)));
    json_object_set_new(o, "chunk_size", json_integer(hi->chunk_size));
    json_object_set_new(o, "header_len", json_integer(hi->header_len));
    json_object_set_new(o, "stream_id", json_string(sid));
    json_object_set_new(o, "label", json_string(hi->label));
    json_object_set_new(o, "signed", json_boolean(hi->is_signed));
    if (hi->is_signed) {
        json_object_set_new(o, "signer", json_string(hi->signer));
        json_object_set_new(o, "signature_ok", json_boolean(hi->signature_ok));
        json_object_set_new(o, "trusted", json_boolean(trusted));
    }
    for (int i = 0; i < hi->nslots; i++) {
        json_t *s = json_object();
        struct vmc_slot_info sl;
        vmc_header_slot(h, i, &sl);
        json_object_set_new(s, "type", json_string(vmc_slot_type_name(sl.type)));
        if (sl.type == VMC_SLOT_ARGON2ID) {
            json_object_set_new(s, "kdf_ops", json_integer(sl.kdf_ops));
            json_object_set_new(s, "kdf_mem_kib",
                                json_integer(sl.kdf_mem_kib));
        }
        json_object_set_new(s, "opened", json_boolean(hi->opened_by == i));
        json_array_append_new(slots, s);
    }
    json_object_set_new(o, "slots", slots);
    return o;
}

static json_t *summary_json(const struct vmc_summary *s)
{
    json_t *o = json_object(), *m = json_object(), *t = json_object();
    char u[37];

    uuid_str(u, s->meta.uuid);
    json_object_set_new(m, "name", json_string(s->meta.name));
    json_object_set_new(m, "uuid", json_string(u));
    json_object_set_new(m, "memory_kib", json_integer((json_int_t)s->meta.memory_kib));
    json_object_set_new(m, "vcpus", json_integer(s->meta.vcpus));
    json_object_set_new(m, "backend", json_string(vmc_backend_id_name(s->meta.backend)));
    json_object_set_new(m, "stream_format",
                        json_string(vmc_stream_format_name(s->meta.stream_format)));
    json_object_set_new(m, "time", json_integer(s->meta.time_unix));
    json_object_set_new(m, "host", json_string(s->meta.host));
    json_object_set_new(m, "backend_version", json_string(s->meta.backend_version));
    json_object_set_new(m, "tool_version", json_string(s->meta.tool_version));
    json_object_set_new(m, "guest_type", json_string(s->meta.guest_type));
    json_object_set_new(m, "live", json_boolean(s->meta.flags & VMC_IIF_LIVE));
    json_object_set_new(m, "checkpoint",
                        json_boolean(s->meta.flags & VMC_IIF_CHECKPOINT));
    json_object_set_new(o, "image_info", m);
    json_object_set_new(o, "disks", json_pack("{s:i, s:i, s:i, s:I}", "count",
                                              s->disks, "carried",
                                              s->disks_carried, "not_captured",
                                              s->disks_not_captured, "bytes",
                                              (json_int_t)s->disk_bytes));
    for (int i = 0; i < s->ntypes; i++) {
        json_t *r = json_object();
        const char *n = vmc_record_name(s->types[i].type);
        char nb[16];
        if (!n) {
            snprintf(nb, sizeof(nb), "0x%08x", s->types[i].type);
            n = nb;
        }
        json_object_set_new(r, "count", json_integer((json_int_t)s->types[i].count));
        json_object_set_new(r, "bytes", json_integer((json_int_t)s->types[i].bytes));
        json_object_set_new(t, n, r);
    }
    json_object_set_new(o, "records", t);
    json_object_set_new(o, "backend_bytes",
                        json_integer((json_int_t)s->end.backend_bytes));
    json_object_set_new(o, "stream_bytes",
                        json_integer((json_int_t)s->stats.stream_bytes));
    json_object_set_new(o, "chunks", json_integer((json_int_t)s->stats.chunks));
    json_object_set_new(o, "total_time_ns",
                        json_integer((json_int_t)s->end.total_time_ns));
    json_object_set_new(o, "downtime_ns",
                        json_integer((json_int_t)s->end.downtime_ns));
    return o;
}

/* Who made it: what a reader without a key can check already. */
static const char *signer_line(const struct vmc_header_info *hi, int trusted)
{
    static char buf[200];

    if (!hi->is_signed)
        return "none: unsigned (format 1), anyone who knows a recipient can "
               "make it";
    snprintf(buf, sizeof(buf), "%s (%s)", hi->signer,
             !hi->signature_ok ? "signature INVALID: forged" :
             trusted ? "trusted here" : "signature valid, NOT trusted here");
    return buf;
}

static void print_header(const struct vmc_header *h,
                         const struct vmc_header_info *hi, int trusted)
{
    printf("format:      vmckpt stream version %u (%s)\n", hi->version,
           hi->unlocked ? "header authenticated" : "header unverified: no key");
    printf("signer:      %s\n", signer_line(hi, trusted));
    printf("algorithms:  %s, %s, chunks of %u bytes\n",
           vmc_aead_name(hi->aead),
           vmc_compression_name(hi->compression), hi->chunk_size);
    if (hi->label[0])
        printf("label:       %s\n", cli_safe(hi->label));
    for (int i = 0; i < hi->nslots; i++) {
        struct vmc_slot_info sl;
        vmc_header_slot(h, i, &sl);
        printf("slot %d:      %s", i, vmc_slot_type_name(sl.type));
        if (sl.type == VMC_SLOT_ARGON2ID)
            printf(" (t=%u, m=%u MiB)", sl.kdf_ops,
                   sl.kdf_mem_kib / 1024);
        if (hi->opened_by == i)
            printf("  <- opened");
        printf("\n");
    }
}

static void print_summary(const struct vmc_summary *s)
{
    char u[37], when[64], mem[32], b[32];
    time_t t = (time_t)s->meta.time_unix;
    struct tm tm;

    uuid_str(u, s->meta.uuid);
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    cli_human(mem, sizeof(mem), (double)s->meta.memory_kib * 1024);
    if (s->meta.backend == VMC_BACKEND_NONE) {
        /* vmimage seal of a raw stream: no domain, nothing to restore */
        printf("content:     %s, a raw %s stream sealed by vmimage seal "
               "(no domain: unseal it, it cannot be restored)\n",
               cli_safe(s->meta.name),
               vmc_stream_format_name(s->meta.stream_format));
    } else {
        printf("domain:      %s  uuid %s\n", cli_safe(s->meta.name), u);
        printf("guest:       %s, %u vCPUs%s%s\n", mem, s->meta.vcpus,
               s->meta.guest_type[0] ? ", " : "", cli_safe(s->meta.guest_type));
        printf("backend:     %s%s%s, stream %s\n", vmc_backend_id_name(s->meta.backend),
               s->meta.backend_version[0] ? " " : "",
               cli_safe(s->meta.backend_version),
               vmc_stream_format_name(s->meta.stream_format));
    }
    printf("saved:       %s on %s by vmckpt %s%s%s\n", when,
           cli_safe(s->meta.host), cli_safe(s->meta.tool_version),
           s->meta.flags & VMC_IIF_LIVE ? ", live" : "",
           s->meta.flags & VMC_IIF_CHECKPOINT ? ", checkpoint" : "");
    if (s->disks) {
        cli_human(b, sizeof(b), (double)s->disk_bytes);
        printf("disks:       %d, %d carried (%s, contents verified)%s\n",
               s->disks, s->disks_carried, b, s->disks_not_captured ?
               ", WRITABLE DISKS NOT CAPTURED (memory-only checkpoint)" : "");
    }
    printf("records:\n");
    for (int i = 0; i < s->ntypes; i++) {
        const char *n = vmc_record_name(s->types[i].type);
        char nb[16];
        if (!n) {
            snprintf(nb, sizeof(nb), "0x%08x", s->types[i].type);
            n = nb;
        }
        cli_human(b, sizeof(b), (double)s->types[i].bytes);
        printf("  %-16s %8llu  %s\n", n, (unsigned long long)s->types[i].count, b);
    }
    cli_human(b, sizeof(b), (double)s->stats.stream_bytes);
    printf("image:       %s in %llu chunks (%.1f%% of the backend stream)\n", b,
           (unsigned long long)s->stats.chunks,
           s->end.backend_bytes ? 100.0 * (double)s->stats.stream_bytes /
                                      (double)s->end.backend_bytes : 0.0);
    if (s->end.total_time_ns || s->end.downtime_ns)
        printf("save:        total %.3f s, downtime %.3f s\n",
               (double)s->end.total_time_ns / 1e9,
               (double)s->end.downtime_ns / 1e9);
}

/* ---- commands --------------------------------------------------------- */

static int cmd_keygen(struct args *a, int argc, char **argv)
{
    char pub[VMC_RECIPIENT_STRLEN];
    const char *out = a->output ? a->output : "-";
    int kind = a->sign ? VMC_KEYGEN_SIGNING :
               a->symmetric ? VMC_KEYGEN_RAW : VMC_KEYGEN_IDENTITY;

    if (a->print_recipient) {
        const char *in = argc > 0 ? argv[0] : "-";
        if (argc > 1)
            return cli_usage("too many arguments");
        if (vmc_identity_recipient(a->ctx, in, pub) < 0) {
            struct vmc_ctx *c2 = vmc_ctx_new();
            struct vmc_keys *k2 = vmc_keys_new();
            int ok = c2 && k2 && vmc_keys_add_signing_key_file(c2, k2, in) == 0 &&
                     vmc_keys_signer(c2, k2, pub) == 0;
            vmc_keys_free(k2);
            vmc_ctx_free(c2);
            if (!ok) {                  /* neither kind: the identity's words */
                cli_ctx_err(NULL, a->ctx);
                return 1;
            }
        }
        printf("%s\n", pub);
        return 0;
    }
    if (argc > 0)
        return cli_usage("keygen takes no operands (use -o FILE)");
    if (!strcmp(out, "-")) {         /* the key itself on stdout */
        fflush(stdout);
        if (vmc_keygen_fd(a->ctx, 1, "stdout", kind, pub) < 0) {
            cli_ctx_err(NULL, a->ctx);
            return 1;
        }
        return 0;
    }
    if (vmc_keygen(a->ctx, out, kind, pub) < 0) {
        cli_ctx_err(NULL, a->ctx);
        return 1;
    }
    if (strcmp(out, "-") && !a->symmetric)
        printf("%s\n", pub);
    else if (strcmp(out, "-") && !cli_quiet)
        fprintf(stderr, "%s: wrote raw key to %s\n", cli_prog, out);
    return 0;
}

/* Where a damaged stream failed: {"chunk": N, "offset": OFF} in the file,
 * or {"record": TYPE, "offset": OFF} in the plaintext; null if unknown. */
static json_t *where_json(const struct vmc_ctx *ctx)
{
    struct vmc_where w;
    char nb[16];
    const char *n;

    switch (vmc_ctx_where(ctx, &w)) {
    case VMC_AT_CHUNK:
        return json_pack("{s:I, s:I}", "chunk", (json_int_t)w.index, "offset",
                         (json_int_t)w.offset);
    case VMC_AT_RECORD:
        if (!(n = vmc_record_name((uint32_t)w.index))) {
            snprintf(nb, sizeof(nb), "0x%08x", (unsigned)w.index);
            n = nb;
        }
        return json_pack("{s:s, s:I}", "record", n, "offset",
                         (json_int_t)w.offset);
    }
    return json_null();
}

static int info_verify_one(struct args *a, const char *path)
{
    const char *obj;
    struct vmc_header *h = NULL;
    struct vmc_header_info hi;
    struct vmc_reader *r = NULL;
    struct vmc_summary sum = { 0 };
    struct cli_progress pr;
    int fd, rc = 1, verify = a->cmd == C_VERIFY, trusted;
    json_t *j = NULL;

    obj = strcmp(path, "-") ? path : "stdin";
    if ((fd = open_input(a, path)) < 0)
        return 1;
    if (open_header(a, obj, fd, verify, &h) < 0)
        goto out;
    vmc_header_get_info(h, &hi);
    trusted = vmc_header_trusted(h, a->open);
    if (a->json) {
        j = json_object();
        json_object_set_new(j, "image", json_string(obj));
        json_object_set_new(j, "header", header_json(h, &hi, trusted));
    } else if (!verify) {
        print_header(h, &hi, trusted);
    }
    if (!hi.unlocked) {
        if (!a->json)
            printf("payload:     sealed; give -i, -k or -P to read the "
                   "metadata\n");
        rc = 0;
        goto out;
    }
    if (open_reader(a, obj, fd, &h, &r) < 0)
        goto out;
    cli_progress_init(&pr, verify ? "verifying" : "reading",
                      input_size(fd));
    pr.reader = r;                  /* the ETA is of the file, not the guest */
    rc = vmc_reader_drain(r, -1, cli_progress_cb, &pr, &sum);
    cli_progress_done(&pr);
    if (rc < 0) {
        obj = blame(a, obj);
        if (a->json) {
            json_object_set_new(j, "ok", json_false());
            json_object_set_new(j, "error", json_string(cli_ctx_msg(a->ctx)));
            json_object_set_new(j, "where", where_json(a->ctx));
            json_dumpf(j, stdout, JSON_COMPACT);
            printf("\n");
        }
        cli_ctx_err(obj, a->ctx);
        rc = 1;
        goto out;
    }
    rc = 0;
    if (a->json) {
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "summary", summary_json(&sum));
    } else if (!verify) {
        print_summary(&sum);
        printf("this build:  backends %s\n", vmc_backends_built());
    } else if (!cli_quiet) {
        printf("%s: OK (%llu records, %llu backend bytes, %llu chunks), "
               "signer %s\n", obj,
               (unsigned long long)sum.end.records + 1,
               (unsigned long long)sum.end.backend_bytes,
               (unsigned long long)sum.stats.chunks, signer_line(&hi, trusted));
    }
out:
    if (j && rc == 0) {
        json_dumpf(j, stdout, JSON_COMPACT);
        printf("\n");
    }
    json_decref(j);
    vmc_summary_free(&sum);
    vmc_reader_free(r);
    vmc_header_free(h);
    close_input(fd);
    return rc;
}

/* info IMAGE; verify IMAGE... (like zstd -t: each one, exit 1 if any is
 * bad; a passphrase is asked or read once for all). */
static int cmd_info_verify(struct args *a, int argc, char **argv)
{
    int bad = 0, stdin_seen = 0;

    if (argc < 1)
        return cli_usage("missing IMAGE");
    if (argc > 1 && a->cmd != C_VERIFY)
        return cli_usage("too many arguments");
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-") && stdin_seen++)
            return cli_usage("'-' (stdin) given twice");
    for (int i = 0; i < argc; i++)
        bad |= info_verify_one(a, argv[i]) != 0;
    return bad;
}

static int cmd_seal(struct args *a, int argc, char **argv)
{
    const char *in = argc ? argv[0] : "-";
    const char *out = a->output ? a->output : "-";
    struct vmc_writer_opts wo = { 0 };
    struct vmc_writer *w = NULL;
    struct vmc_outfile *of = NULL;
    struct vmc_image_meta m;
    struct cli_progress pr;
    uint8_t *xlcfg = NULL;
    size_t xlcfg_len = 0;
    uint64_t t0 = vmc_now_ns();
    int fd = -1, rc = 1, k;

    if (argc > 1)
        return cli_usage("too many arguments");
    if (!strcmp(in, "-") && isatty(0))
        return cli_usage("refusing to read a raw stream from a terminal");
    if (!strcmp(out, "-") && isatty(1))
        return cli_usage("refusing to write an image to a terminal (use -o)");
    if (a->split && !strcmp(out, "-"))
        return cli_usage("--split needs -o FILE, not stdout");
    if ((k = cli_seal_keys(a->ctx, a->seal, &a->cs, a->ask_pass,
                           "Passphrase for the new image: ")))
        return k;
    if ((fd = open_input(a, in)) < 0)
        return 1;
    memset(&m, 0, sizeof(m));
    if (a->name)
        snprintf(m.name, sizeof(m.name), "%s", a->name);
    else if (strcmp(in, "-")) {
        char *copy = strdup(in);
        snprintf(m.name, sizeof(m.name), "%s", copy ? basename(copy) : in);
        free(copy);
    } else
        snprintf(m.name, sizeof(m.name), "stdin");
    m.backend = VMC_BACKEND_NONE;
    m.stream_format = VMC_SFMT_OPAQUE;
    if (a->from_xl) {
        if (vmc_xl_read_header(a->ctx, fd, strcmp(in, "-") ? in : "stdin", &xlcfg,
                               &xlcfg_len) < 0 ||
            vmc_libxl_json_meta(a->ctx, xlcfg, xlcfg_len, &m) < 0) {
            cli_ctx_err(NULL, a->ctx);
            goto out;
        }
        if (a->name)
            snprintf(m.name, sizeof(m.name), "%s", a->name);
        m.backend = VMC_BACKEND_XEN;
        m.stream_format = VMC_SFMT_LIBXL;
        snprintf(m.backend_version, sizeof(m.backend_version),
                 "imported from xl save");
    }
    if (open_output(a, out, 0, &of) < 0) {
        cli_ctx_err(NULL, a->ctx);
        goto out;
    }
    wo = a->cs.wo;
    cli_progress_init(&pr, "sealing", input_size(fd));
    if (vmc_writer_new(a->ctx, vmc_outfile_fd(of), a->seal, &wo, &w) < 0 ||
        vmc_writer_describe(w, &m, VMC_CFG_LIBXL_JSON, xlcfg, xlcfg_len) < 0 ||
        vmc_writer_copy_backend(w, fd, cli_progress_cb, &pr) < 0 ||
        vmc_writer_finish(w, vmc_now_ns() - t0, 0) < 0 ||
        vmc_outfile_commit(a->ctx, of) < 0) {
        cli_progress_done(&pr);
        cli_err(strcmp(out, "-") ? out : "stdout", "%s%s", cli_ctx_msg(a->ctx),
                strcmp(out, "-") ? "; nothing written" : "");
        goto out;
    }
    cli_progress_done(&pr);
    rc = 0;
out:
    vmc_writer_free(w);
    vmc_outfile_free(of);
    free(xlcfg);
    close_input(fd);
    return rc;
}

static int cmd_unseal(struct args *a, int argc, char **argv)
{
    /* --disks without -o: the disks alone */
    const char *out = a->output ? a->output : a->disk_dir ? NULL : "-";
    const char *path, *obj;
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_outfile *of = NULL;
    struct cli_progress pr;
    int fd, rc = 1, ofd = -1;

    if (argc != 1)
        return cli_usage(argc ? "too many arguments" : "missing IMAGE");
    if (a->disk_dir && a->to_xl)
        return cli_usage("--disks and --to-xl exclude each other");
    if (out && !strcmp(out, "-") && isatty(1))
        return cli_usage("refusing to write the raw stream to a terminal "
                               "(use -o FILE or a pipe)");
    path = argv[0];
    obj = strcmp(path, "-") ? path : "stdin";
    if ((fd = open_input(a, path)) < 0)
        return 1;
    if (open_header(a, obj, fd, 1, &h) < 0)
        goto out;
    if (out && vmc_outfile_open(a->ctx, out, 0, &of) < 0) {
        cli_ctx_err(NULL, a->ctx);
        goto out;
    }
    if (of)
        ofd = vmc_outfile_fd(of);
    if (open_reader(a, obj, fd, &h, &r) < 0)
        goto out;
    cli_progress_init(&pr, "unsealing", input_size(fd));
    pr.reader = r;
    if ((a->to_xl ? vmc_reader_drain_xl(r, ofd, cli_progress_cb, &pr, NULL) :
         a->disk_dir ? vmc_reader_drain_disks(r, ofd, a->disk_dir,
                                              cli_progress_cb, &pr, NULL)
                     : vmc_reader_drain(r, ofd, cli_progress_cb, &pr,
                                        NULL)) < 0) {
        cli_progress_done(&pr);
        obj = blame(a, obj);
        cli_err(obj, "%s%s", cli_ctx_msg(a->ctx),
                !out || strcmp(out, "-") ? "; nothing written" : "");
        goto out;
    }
    cli_progress_done(&pr);
    if (of && vmc_outfile_commit(a->ctx, of) < 0) {
        cli_ctx_err(out, a->ctx);
        goto out;
    }
    rc = 0;
out:
    vmc_reader_free(r);
    vmc_header_free(h);
    vmc_outfile_free(of);
    close_input(fd);
    return rc;
}

/* The disks and networks of a config, by the ids that vmrestore --disk and
 * --net take. */
static void print_devices(struct args *a, const struct vmc_image_meta *m,
                          uint32_t fmt, const uint8_t *cfg, size_t len)
{
    static struct vmc_disk_info d[VMC_DISK_MAX];
    struct vmc_net_info nets[64];
    int nd = 0, nn = 0;

    if (vmc_config_devices(a->ctx, m, fmt, cfg, len, d, VMC_DISK_MAX, &nd,
                           nets, 64, &nn) < 0) {
        printf("devices: %s\n", cli_safe(cli_ctx_msg(a->ctx)));
        vmc_ctx_clear(a->ctx);
        return;
    }
    for (int i = 0; i < nd; i++) {
        printf("disk:    %s ", cli_safe(d[i].id));
        printf("%s (%s, %s)\n", cli_safe(d[i].path),
               vmc_disk_format_name(d[i].source_format),
               d[i].flags & VMC_DF_READONLY ? "read-only" : "writable");
    }
    for (int i = 0; i < nn; i++) {
        printf("net:     %s ", cli_safe(nets[i].id));
        printf("%s", *nets[i].attachment ? cli_safe(nets[i].attachment) : "-");
        printf("%s%s\n", *nets[i].mac ? " mac " : "", cli_safe(nets[i].mac));
    }
}

/* config IMAGE: what vmrestore would run on this host, and whether the
 * restore policy lets it (exit 1 and the refusal on stderr if not);
 * --json: the recorded config, which vmrestore --config takes edited. */
static int cmd_config(struct args *a, int argc, char **argv)
{
    const char *obj;
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_policy *pol = NULL;
    struct vmc_image_meta m;
    uint8_t *cfg = NULL;
    size_t len = 0;
    uint32_t fmt;
    char *text = NULL;
    int fd = -1, rc = 1;

    if (argc != 1)
        return cli_usage(argc ? "too many arguments" : "missing IMAGE");
    obj = strcmp(argv[0], "-") ? argv[0] : "stdin";
    if (!(pol = cli_policy(a->ctx, &a->dirs)) ||
        (fd = open_input(a, argv[0])) < 0 || open_header(a, obj, fd, 1, &h) < 0)
        goto out;
    if (open_reader(a, obj, fd, &h, &r) < 0)
        goto out;
    if (vmc_reader_head(r, &m, &fmt, &cfg, &len) < 0) {
        cli_ctx_err(blame(a, obj), a->ctx);
        goto out;
    }
    if (a->json) {                  /* re-encoded: ASCII, escapes and all */
        json_error_t je;
        json_t *j = json_loadb((const char *)cfg, len, 0, &je);
        if (!j) {
            cli_err(obj, "domain config: not JSON: %s", je.text);
            goto out;
        }
        json_dumpf(j, stdout, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
        printf("\n");
        json_decref(j);
        rc = 0;
        goto out;
    }
    if (vmc_config_show(a->ctx, &m, fmt, cfg, len, &text) < 0) {
        cli_ctx_err(obj, a->ctx);
        goto out;
    }
    printf("domain:  %s (backend %s)\n%s\n", cli_safe(m.name),
           vmc_backend_id_name(m.backend),
           m.backend == VMC_BACKEND_QEMU ? "command:" : "libxl config:");
    cli_put_safe(stdout, text, m.backend != VMC_BACKEND_QEMU);
    printf("\n");
    print_devices(a, &m, fmt, cfg, len);
    if (vmc_config_check(a->ctx, &m, fmt, cfg, len, pol) < 0) {
        printf("policy:  refused\n");
        fflush(stdout);
        cli_ctx_err(obj, a->ctx);
        goto out;
    }
    printf("policy:  accepted\n");
    rc = 0;
out:
    free(text);
    free(cfg);
    vmc_reader_free(r);
    vmc_header_free(h);
    vmc_policy_free(pol);
    close_input(fd);
    return rc;
}

/* rekey --rotate: the records re-encrypted under a new file key, a new
 * stream id and only the keys given, in parallel and streaming; the old
 * image is replaced (or -o written) only once the new one is complete.
 * Takes h. */
static int rotate(struct args *a, const char *path, const char *out,
                  int overwrite, int fd, struct vmc_header *h)
{
    struct vmc_writer_opts wo = { .threads = a->cs.wo.threads };
    struct vmc_header_info hi;
    struct vmc_outfile *of = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_writer *w = NULL;
    struct cli_progress pr;
    int rc = 1;

    vmc_header_get_info(h, &hi);
    wo.chunk_size = hi.chunk_size;
    wo.label = hi.label[0] ? hi.label : NULL;
    if (vmc_reader_new(a->ctx, fd, h, a->cs.wo.threads, 1, &r) < 0) {
        cli_ctx_err(path, a->ctx);
        return 1;
    }
    if (open_output(a, out, overwrite, &of) < 0 ||
        vmc_writer_new(a->ctx, vmc_outfile_fd(of), a->seal, &wo, &w) < 0) {
        cli_ctx_err(out, a->ctx);
        goto out;
    }
    cli_progress_init(&pr, "rotating", input_size(fd));
    pr.reader = r;
    if (vmc_reader_copy_records(r, w, cli_progress_cb_int, &pr) < 0 ||
        vmc_outfile_commit(a->ctx, of) < 0) {
        cli_progress_done(&pr);
        cli_err(out, "%s; %s left unchanged", cli_ctx_msg(a->ctx), path);
        goto out;
    }
    cli_progress_done(&pr);
    if (!cli_quiet && isatty(2))
        fprintf(stderr, "%s: %s: a new file key, %d key slot%s\n", cli_prog,
                out, vmc_keys_count(a->seal), vmc_keys_count(a->seal) == 1 ?
                "" : "s");
    rc = 0;
out:
    vmc_writer_free(w);
    vmc_reader_free(r);
    vmc_outfile_free(of);
    return rc;
}

static int cmd_rekey(struct args *a, int argc, char **argv)
{
    struct vmc_header *h = NULL;
    struct vmc_header_info hi;
    struct vmc_outfile *of = NULL;
    struct vmc_keys *rm = NULL;
    int remove[64], nremove = 0, fd = -1, rc = 1, copied;
    const char *path, *out;
    char *real = NULL;

    if (argc != 1)
        return cli_usage(argc ? "too many arguments" : "missing IMAGE");
    path = argv[0];
    out = a->output ? a->output : path;
    if (!strcmp(out, "-") && isatty(1))
        return cli_usage("refusing to write an image to a terminal");
    if (!strcmp(path, "-") && !a->output)
        return cli_usage("rekey of stdin needs -o");
    if (a->split && (!a->output || !strcmp(a->output, "-")))
        return cli_usage("--split needs -o FILE (a new set)");
    if (!a->output && strcmp(path, "-") && is_set(path)) {
        /* a set cannot be replaced at once: the old one stays intact */
        cli_err(path, "a split set is not rewritten in place: give -o NEW "
                "(with --split SIZE for a new set)");
        return 1;
    }
    if (!vmc_keys_count(a->seal) && !a->add_pass && !a->new_pass_file &&
        a->new_pass_fd < 0 && !a->rm_pass && !a->nrm_id && !a->nrm_slot)
        return cli_usage(a->rotate ? "--rotate: give the keys the new "
                     "image opens with (-r, -R, --add-key-file, "
                     "--add-passphrase)" : "nothing to change: give a key to "
                     "add or a slot to remove");
    if (a->rotate && (a->rm_pass || a->nrm_id || a->nrm_slot))
        return cli_usage("--rotate keeps no slot: give only the keys the "
                     "new image opens with");
    /* In place: write where a symlink points, never over the link. */
    if (out == path && strcmp(path, "-") && !(real = realpath(path, NULL))) {
        cli_err(path, "%s", strerror(errno));
        return 1;
    }
    if (real)
        out = real;
    if ((fd = open_input(a, path)) < 0)
        goto out;
    /* the current passphrase first (to open it), then the new one */
    if (open_header(a, path, fd, 1, &h) < 0)
        goto out;
    if (cli_add_passphrase(a->ctx, a->seal, a->new_pass_file, a->new_pass_fd,
                           a->add_pass, 1, "New passphrase: ") < 0)
        goto out;
    vmc_keys_set_kdf(a->seal, a->cs.kdf_ops, a->cs.kdf_mem_kib);
    if (a->rotate) {
        rc = rotate(a, path, out, out == path || out == real, fd, h);
        h = NULL;
        goto out;
    }
    vmc_header_get_info(h, &hi);
    for (int i = 0; i < a->nrm_slot; i++) {
        if (a->rm_slot[i] >= hi.nslots) {
            cli_err(path, "no key slot %d (the image has %d)", a->rm_slot[i],
                    hi.nslots);
            goto out;
        }
        remove[nremove++] = a->rm_slot[i];
    }
    if (a->rm_pass) {
        int before = nremove;
        for (int i = 0; i < hi.nslots; i++) {
            struct vmc_slot_info sl;
            if (vmc_header_slot(h, i, &sl) == 0 &&
                sl.type == VMC_SLOT_ARGON2ID && nremove < 64)
                remove[nremove++] = i;
        }
        if (nremove == before) {    /* as --remove-identity matching nothing */
            cli_err(path, "no passphrase key slot to remove");
            goto out;
        }
    }
    if (a->nrm_id) {
        int idx[32], n;
        if (!(rm = vmc_keys_new()))
            goto out;
        for (int i = 0; i < a->nrm_id; i++)
            if (vmc_keys_add_identity_file(a->ctx, rm, a->rm_id[i]) < 0) {
                cli_ctx_err(NULL, a->ctx);
                goto out;
            }
        if ((n = vmc_header_match_slots(a->ctx, h, rm, idx)) < 0) {
            cli_ctx_err(path, a->ctx);
            goto out;
        }
        if (n == 0) {
            cli_err(path, "no key slot is opened by the identities to remove");
            goto out;
        }
        for (int i = 0; i < n && nremove < 64; i++)
            remove[nremove++] = idx[i];
    }
    if (vmc_header_rekey(a->ctx, h, remove, nremove, a->seal) < 0) {
        cli_ctx_err(path, a->ctx);
        goto out;
    }
    if (open_output(a, out, out == path || out == real, &of) < 0) {
        cli_ctx_err(NULL, a->ctx);
        goto out;
    }
    vmc_header_get_info(h, &hi);
    if (vmc_header_write(a->ctx, h, vmc_outfile_fd(of)) < 0) {
        cli_err(out, "%s; %s left unchanged", cli_ctx_msg(a->ctx), path);
        goto out;
    }
    copied = vmc_copy_verified(a->ctx, h, fd, vmc_outfile_fd(of), path);
    h = NULL;                           /* the copy took it */
    if (copied < 0 || vmc_outfile_commit(a->ctx, of) < 0) {
        cli_err(out, "%s; %s left unchanged", cli_ctx_msg(a->ctx), path);
        goto out;
    }
    if (!cli_quiet && isatty(2))
        fprintf(stderr, "%s: %s: %d key slot%s\n", cli_prog, out, hi.nslots,
                hi.nslots == 1 ? "" : "s");
    rc = 0;
out:
    vmc_keys_free(rm);
    vmc_header_free(h);
    vmc_outfile_free(of);
    free(real);
    close_input(fd);
    return rc;
}

int main(int argc, char **argv)
{
    struct args a;
    unsigned mask = 0;
    const char *why;
    int n, rc;

    cli_begin(argc, argv, "vmimage", help, synopsis(C_ALL));
    memset(&a, 0, sizeof(a));
    cli_seal_init(&a.cs);
    a.new_pass_fd = -1;
    if (argc < 2)
        return cli_usage("missing command");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        help(C_ALL);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("vmimage %s\n", VMC_TOOL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            mask = cmds[i].cmd;
    if (!mask) {
        char msg[96];
        snprintf(msg, sizeof(msg), "unknown command '%.40s'", argv[1]);
        return cli_usage(msg);
    }
    a.cmd = mask;
    cli_synopsis = synopsis(mask);
    a.ctx = vmc_ctx_new();
    a.open = vmc_keys_new();
    a.seal = vmc_keys_new();
    if (!a.ctx || !a.open || !a.seal || vmc_init(a.ctx) < 0) {
        cli_err(NULL, "cannot initialise (out of memory or libsodium failed)");
        return 1;
    }
    cli_signals_unlink_and_exit();
    n = cli_parse(argc - 1, argv + 1, opts, mask, 0, on_opt, &a, &a.bad);
    if (a.bad.set)
        return cli_usage(a.bad.msg);
    argc -= n + 1;
    argv += n + 1;
    if (a.sign + a.symmetric > 1)
        return cli_usage("--sign and --symmetric exclude each other");
    if ((why = cli_seal_problem(&a.cs, 1, NULL)))
        return cli_usage(why);
    if (a.cs.sign_key && mask == C_REKEY && !a.rotate)
        return cli_usage("--signing-key needs --rotate (a rekey keeps the "
                     "signature: slots are not signed)");
    if (mask & C_OPEN) {
        /* verify and unseal hand the payload on: a signer they do not trust
         * fails them; info, config and rekey report it */
        if (cli_trust_load(a.ctx, a.open, &a.trust) < 0)
            return 1;
        vmc_keys_set_trust(a.open, a.rotate ? 0 :   /* signs it as ours */
                           VMC_TRUST_UNSIGNED |
                           (mask & (C_VERIFY | C_UNSEAL) ? 0 : VMC_TRUST_REPORT));
    }
    if ((mask == C_SEAL && !a.cs.wo.unsigned_v1) ||
        (mask == C_REKEY && a.rotate)) {
        if (cli_signing_load(a.ctx, a.seal, a.cs.sign_key) < 0)
            return 1;
    }
    switch (mask) {
    case C_KEYGEN: rc = cmd_keygen(&a, argc, argv); break;
    case C_INFO:
    case C_VERIFY: rc = cmd_info_verify(&a, argc, argv); break;
    case C_SEAL: rc = cmd_seal(&a, argc, argv); break;
    case C_UNSEAL: rc = cmd_unseal(&a, argc, argv); break;
    case C_CONFIG: rc = cmd_config(&a, argc, argv); break;
    default: rc = cmd_rekey(&a, argc, argv); break;
    }
    vmc_keys_free(a.open);
    vmc_keys_free(a.seal);
    vmc_ctx_free(a.ctx);
    return rc;
}
