/* cli.h - shared command-line plumbing: option tables, messages,
 * passphrases, progress.  Only cmd/ uses this; lib/ never prints. */
#ifndef VMC_CLI_H
#define VMC_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/vmckpt.h"

extern const char *cli_prog;       /* "vmimage" */

/* First thing in every main (the guardian too): decrypted guest memory and
 * keys sit in this process, so no core dump (RLIMIT_CORE 0, not dumpable:
 * no core, no ptrace by other users' processes). */
void cli_harden(void);
/* The start of every tool's main: cli_harden(), the guardian's dispatch
 * (a tool re-executed as the guardian never returns from it), and the
 * names its messages and usage use. */
void cli_begin(int argc, char **argv, const char *prog,
               void (*help)(unsigned mask), const char *synopsis);
extern int cli_quiet;

/* One option, declared once; help and getopt tables are generated. */
struct cli_opt {
    const char *lng;
    int shrt;                      /* 0 if none */
    const char *arg;               /* argument name, NULL if none */
    unsigned mask;                 /* commands it applies to */
    const char *help;
    int id;                        /* what fn gets: the short letter, or a
                                      tool's own value (>= 1000) */
};

/* The tool's help for the commands in mask (on stdout); set by main. */
extern void (*cli_help)(unsigned mask);
struct cli_bad;
#define CLI_ORDERED 1              /* options end at the first operand */
/* Parses argv for the commands in mask; calls fn(id, optarg), except for
 * the options every tool has, handled here: -h (cli_help, exit 0), -V
 * (prints "PROG VERSION", exits 0) and -q (sets cli_quiet).  A bad option
 * goes to bad: "unknown option -x", "missing argument to -r".  Returns
 * optind. */
int cli_parse(int argc, char **argv, const struct cli_opt *tab, unsigned mask,
              int flags, void (*fn)(int id, const char *arg, void *u), void *u,
              struct cli_bad *bad);
void cli_print_options(FILE *f, const struct cli_opt *tab, unsigned mask);
/* The last lines of --help: the backends built, the exit statuses (what
 * failure leaves, e.g. "the domain is left as it was"), the pages. */
void cli_help_tail(const char *failure, const char *pages);

/* Text from an image (a label, names, a config) made safe for a terminal:
 * control characters (C0, DEL, C1), bytes that are not UTF-8 and the
 * backslash become \xNN (\\ for a backslash).  cli_safe: a static buffer
 * (four in turn, each for 1 KiB of text: longer is cut with "..."). */
void cli_put_safe(FILE *f, const char *s, int newlines); /* 1: keep \n */
const char *cli_safe(const char *s);

void cli_err(const char *obj, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "prog: obj: <ctx message>" and clears ctx. */
/* The library's error with the hint (vmc_ctx_hint) in this tool's words:
 * the options it names.  A static buffer. */
const char *cli_ctx_msg(const struct vmc_ctx *ctx);
void cli_ctx_err(const char *obj, struct vmc_ctx *ctx);

/* Passphrases, into sodium memory (caller sodium_free()s). */
int cli_pass_tty(const char *prompt, int confirm, char **pass, size_t *len);
int cli_pass_file(const char *path, char **pass, size_t *len);
int cli_pass_fd(int fd, char **pass, size_t *len);
int cli_have_tty(void);

/* Progress on stderr when it is a tty and not quiet, <= 6 redraws/s. */
/* Progress on a tty (stderr), at most 6 redraws a second: the bytes done,
 * the rate, and with a total the percentage and the ETA.  total counts
 * what the callback counts, unless a reader is set: then the position is
 * the reader's input (the image file) against total (its size), while the
 * bytes shown stay the ones reported. */
struct cli_progress {
    int on;
    const char *what;
    uint64_t total;                /* 0 if unknown */
    uint64_t start, last;
    const struct vmc_reader *reader;
    int estimate;                  /* total is an estimate: never 100 % */
};
void cli_progress_init(struct cli_progress *p, const char *what, uint64_t total);
/* A vmc_save/vmc_restore expect callback: total becomes an estimate. */
void cli_progress_expect(void *arg, uint64_t total);
int cli_progress_cb(void *arg, uint64_t bytes);
void cli_progress_done(struct cli_progress *p);
/* The size of a regular file on fd, 0 for a pipe or a socket. */
uint64_t cli_input_size(int fd);

void cli_human(char *buf, size_t cap, double bytes);
/* Installs SIGINT/SIGTERM/SIGHUP/SIGPIPE handling that removes .partial
 * files and exits 1. */
void cli_signals_unlink_and_exit(void);
int cli_parse_uint(const char *s, unsigned long long max, unsigned long long *v);

/* Usage error: the named problem (why, if not NULL), then cli_synopsis,
 * on stderr; returns 2. */
extern const char *cli_synopsis;   /* "usage: vmsave [options] ...\n" */
int cli_usage(const char *why);
/* The first usage problem met while parsing options. */
struct cli_bad {
    int set;
    char msg[160];
};
void cli_bad_set(struct cli_bad *b, const char *fmt, const char *x);
/* An option's number in lo..hi; otherwise records fmt (with arg) in b and
 * returns 0. */
unsigned long long cli_uint_arg(struct cli_bad *b, const char *arg,
                                unsigned long long lo, unsigned long long hi,
                                const char *fmt);
/* --split SIZE: bytes (K, M, G: powers of 1024) in VMC_SPLIT_MIN..
 * VMC_SPLIT_MAX; otherwise records the problem in b and returns 0. */
uint64_t cli_split_arg(struct cli_bad *b, const char *arg);
#define CLI_OPT_SPLIT(m, id) { "split", 0, "SIZE", (m),                      \
    "write a set FILE.000, FILE.001, ... of SIZE-byte pieces (K, M, G; "    \
    "1M..4G-1: FAT32, USB sticks)", (id) }
/* Adds the passphrase from file, fd or the terminal (ask) to keys; 0 if
 * none was asked for; -1 after printing the problem. */
int cli_add_passphrase(struct vmc_ctx *ctx, struct vmc_keys *keys,
                       const char *file, int fd, int ask, int confirm,
                       const char *prompt);
/* A key option, into keys: -r PUBKEY, -R FILE, -k FILE (a raw key file),
 * -i FILE (an identity or raw key file); 1 if id is one of them, else 0.
 * A key that cannot be added prints the library's message and exits 1,
 * unless a usage problem came first (which main then reports, exit 2). */
int cli_key_opt(struct vmc_ctx *ctx, const struct cli_bad *bad,
                struct vmc_keys *keys, int id, const char *arg);

/* ---- the options of a sealed stream, declared and parsed once ---------
 * A tool that writes one (vmsave, vmimage seal and rekey, vmmigrate's
 * sender) puts the rows it takes into its table, where it wants them in
 * its help, with the commands they apply to (m), and its on_opt hands
 * each option to cli_seal_opt first.  The passphrase rows and --threads
 * are the reading side's too (vmrestore, vmimage's opening commands). */
enum {
    CLI_O_PASSFILE = 500, CLI_O_PASSFD, CLI_O_KDFOPS, CLI_O_KDFMEM,
    CLI_O_LABEL, CLI_O_CHUNK, CLI_O_LEVEL, CLI_O_THREADS, CLI_O_SIGNKEY,
    CLI_O_UNSIGNED, CLI_O_BACKEND, CLI_O_LIVETMO, CLI_O_MAXDOWN,
};
#define CLI_OPT_PASSFILE(m) { "passphrase-file", 0, "FILE", (m),             \
    "read the passphrase from the first line of FILE", CLI_O_PASSFILE }
#define CLI_OPT_PASSFD(m) { "passphrase-fd", 0, "N", (m),                    \
    "read the passphrase from fd N", CLI_O_PASSFD }
#define CLI_OPT_KDFOPS(m) { "kdf-ops", 0, "N", (m),                          \
    "Argon2id passes for new passphrase slots (default 3, max 16)",         \
    CLI_O_KDFOPS }
#define CLI_OPT_KDFMEM(m) { "kdf-mem", 0, "MIB", (m),                        \
    "Argon2id memory for new passphrase slots (default 256, 8..1024)",      \
    CLI_O_KDFMEM }
#define CLI_OPT_LABEL(m) { "label", 0, "TEXT", (m),                          \
    "public label, readable without a key", CLI_O_LABEL }
#define CLI_OPT_CHUNK(m) { "chunk-size", 0, "BYTES", (m),                    \
    "plaintext bytes per chunk (power of 2, 64K..16M; default 2M)",         \
    CLI_O_CHUNK }
#define CLI_OPT_LEVEL(m) { "level", 'l', "N", (m),                           \
    "zstd level 1..19 (default 1)", CLI_O_LEVEL }
#define CLI_OPT_THREADS(m) { "threads", 'T', "N", (m),                       \
    "worker threads (default: CPUs)", CLI_O_THREADS }
#define CLI_OPT_SIGNKEY(m) { "signing-key", 0, "FILE", (m),                  \
    "sign with this key (default " CLI_SIGNING_KEY_FILE ")", CLI_O_SIGNKEY }
#define CLI_OPT_UNSIGNED(m) { "unsigned", 0, NULL, (m),                      \
    "write format 1, unsigned (vmrestore refuses it without "               \
    "--allow-unsigned)", CLI_O_UNSIGNED }
#define CLI_OPT_BACKEND(m) { "backend", 0, "NAME", (m),                      \
    "qemu or xen (default: xen on a Xen dom0, else qemu)", CLI_O_BACKEND }
#define CLI_OPT_LIVETMO(m) { "live-timeout", 0, "S", (m),                    \
    "live: pause the guest after S s of pre-copy (default 30; Xen: PVH "    \
    "with --max-downtime)", CLI_O_LIVETMO }
#define CLI_OPT_MAXDOWN(m) { "max-downtime", 0, "MS", (m),                   \
    "live: the pause to aim for (default 300; Xen: PVH only, through "      \
    "libxenguest)", CLI_O_MAXDOWN }
/* -h and -V, which cli_parse handles: the last rows of every table. */
#define CLI_OPT_HELP_VERSION(m)                                              \
    { "help", 'h', NULL, (m), "show this help", 'h' },                       \
    { "version", 'V', NULL, (m), "show the version", 'V' }

/* What those options say; 0 or NULL: not given (the library's default).
 * cli_seal_init() first. */
struct cli_seal {
    const char *pass_file;         /* --passphrase-file */
    int pass_fd;                   /* --passphrase-fd; -1 if not given */
    unsigned kdf_ops, kdf_mem_kib; /* --kdf-ops, --kdf-mem */
    struct vmc_writer_opts wo;     /* --label, --chunk-size, -l, -T,
                                      --unsigned (label: borrowed argv) */
    const char *sign_key;          /* --signing-key */
    const char *backend;           /* --backend */
    uint32_t max_downtime_ms, live_timeout_s;
};
void cli_seal_init(struct cli_seal *s);
/* 1 if id is one of the CLI_O_* options (a bad value goes to bad, with
 * the option's name and range), 0 if it is the tool's own. */
int cli_seal_opt(struct cli_seal *s, struct cli_bad *bad, int id,
                 const char *arg);
/* The first problem of these options together, or NULL: --signing-key
 * with --unsigned; --max-downtime or --live-timeout on a save that is not
 * live (live 0), in not_live's words ("%s needs --live"). */
const char *cli_seal_problem(const struct cli_seal *s, int live,
                             const char *not_live);
/* The keys of a new image: the passphrase of --passphrase-file,
 * --passphrase-fd or (ask) the terminal (asked twice), then the Argon2id
 * cost.  0, or 1 after printing the problem, or 2 after the usage error
 * of keys that seal to no one. */
int cli_seal_keys(struct vmc_ctx *ctx, struct vmc_keys *keys,
                  const struct cli_seal *s, int ask, const char *prompt);
/* A save's options from s: the writer's, --max-downtime, --live-timeout. */
void cli_seal_save_opts(const struct cli_seal *s, struct vmc_save_opts *so);
/* The backend --backend names, or the default; 0, or 2 after the usage
 * error of a backend not built. */
int cli_seal_backend(const struct cli_seal *s, const struct vmc_backend **be);

/* The restore policy of a restoring tool: the built-in allowed
 * directories, $VMCKPT_ALLOW_DIRS, /etc/vmckpt/allowed_dirs, then each
 * --allow-dir; NULL after printing the problem. */
#define CLI_ALLOWED_DIRS_FILE "/etc/vmckpt/allowed_dirs"
struct cli_dirs {
    const char *dir[64];
    int n;
};
/* One --allow-dir (at most 64: a usage problem into bad beyond). */
void cli_dirs_add(struct cli_dirs *d, struct cli_bad *bad, const char *dir);
struct vmc_policy *cli_policy(struct vmc_ctx *ctx, const struct cli_dirs *d);
/* --disk-dir names a directory (checked before anything is read): 0 after
 * printing the problem. */
int cli_disk_dir_ok(const char *dir);
/* --disk ID=PATH and --net ID=ATTACHMENT (vmrestore, vmmigrate's
 * receiver): at most 64 each; a PATH relative to the working directory
 * is made absolute (the hypervisor runs elsewhere). */
struct cli_remaps {
    struct vmc_remap disk[64], net[64];
    int ndisk, nnet;
    char *owned[192];         /* the ids and absolute paths made here */
    int nowned;
};
void cli_remap_add(struct cli_remaps *m, struct cli_bad *bad, int disk,
                   const char *arg);
void cli_remaps_to(const struct cli_remaps *m, struct vmc_restore_opts *ro);
void cli_remaps_free(struct cli_remaps *m);
/* Signed streams (format 2).  Writers sign with --signing-key FILE, else
 * $VMCKPT_SIGNING_KEY, else /etc/vmckpt/signing.key; readers trust each
 * -t/--trusted-signer and the signers in --trusted-signers FILE, else
 * $VMCKPT_TRUSTED_SIGNERS, else /etc/vmckpt/trusted_signers (a default
 * file that does not exist trusts no one; a named one must exist). */
#define CLI_SIGNING_KEY_FILE "/etc/vmckpt/signing.key"
#define CLI_TRUSTED_SIGNERS_FILE "/etc/vmckpt/trusted_signers"
struct cli_trust {
    const char *signer[32];
    int n;
    const char *file;
};
void cli_trust_add(struct cli_trust *t, struct cli_bad *bad, const char *signer);
/* Adds what t names to keys; -1 after printing the problem. */
int cli_trust_load(struct vmc_ctx *ctx, struct vmc_keys *keys,
                   const struct cli_trust *t);
/* Adds the signing key (path, or the default) to keys; -1 after printing. */
int cli_signing_load(struct vmc_ctx *ctx, struct vmc_keys *keys,
                     const char *path);
const char *cli_trusted_file(const struct cli_trust *t);
/* All of a regular file of at most max bytes (caller frees); -1 after
 * printing the problem. */
int cli_read_file(const char *path, size_t max, uint8_t **buf, size_t *len);

/* Pre-copy rounds of a save, as JSON and as a text line. */
#include <jansson.h>
struct cli_rounds {
    int n;
    struct vmc_round *r;
};
void cli_rounds_add(void *arg, const struct vmc_round *r); /* opts.round */
void cli_rounds_free(struct cli_rounds *c);
json_t *rounds_json(const struct cli_rounds *r);
void print_rounds(FILE *out, const struct cli_rounds *r);

#endif

/* Bridges the terminal (or stdin/stdout) to a console fd until the escape
 * key (^]) on a tty, the console closing, or SIGINT/SIGTERM when stdin is
 * not a tty; on a tty, says so when it connects and detaches, unless
 * cli_quiet.  Returns 0. */
int cli_console(int fd, const char *what);

/* Expands strftime patterns in path (when it holds a '%'). */
int cli_strftime_path(const char *in, char *out, size_t cap);
/* The first conversion of a --keep pattern that cannot be matched
 * exactly ("%u"), or NULL if every one can. */
const char *cli_pattern_inexact(const char *pattern);
/* After a successful save to `written` from `pattern`: keeps the `keep`
 * newest images (by the time in their names) and removes the rest.  Only
 * regular files owned by this user, whose header is a vmckpt image and
 * whose name is exactly one the pattern makes; the others are skipped,
 * with the reason, into r.  Returns the count removed. */
struct cli_retained {
    int nremoved, nskipped;
    char removed[64][256];
    struct {
        char name[256];
        const char *why;
    } skipped[64];
};
int cli_retention(const char *pattern, const char *written, int keep,
                  struct cli_retained *r);

/* Flag set by cli_signals_flag() handlers. */
extern volatile int cli_interrupted;
void cli_signals_flag(void);
int cli_progress_cb_int(void *arg, uint64_t bytes);   /* also checks the flag */
