/* cli.c - shared command-line plumbing. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "../format/vmckpt_wire.h"
#include "cli.h"

const char *cli_prog = "vmckpt";
int cli_quiet;

#define PASS_MAX 1024

void (*cli_help)(unsigned mask);

void cli_begin(int argc, char **argv, const char *prog,
               void (*help)(unsigned mask), const char *synopsis)
{
    cli_harden();
    vmc_guard_dispatch(argc, argv);
    cli_prog = prog;
    cli_help = help;
    cli_synopsis = synopsis;
}

void cli_harden(void)
{
    struct rlimit none = { 0, 0 };

    setrlimit(RLIMIT_CORE, &none);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int cli_parse(int argc, char **argv, const struct cli_opt *tab, unsigned mask,
              int flags, void (*fn)(int id, const char *arg, void *u), void *u,
              struct cli_bad *bad)
{
    struct option lo[128];
    char so[256];
    int n = 0, s = 1, c, idx;

    for (int i = 0; tab[i].lng && n < 127; i++) {
        if (!(tab[i].mask & mask))
            continue;
        lo[n].name = tab[i].lng;
        lo[n].has_arg = tab[i].arg ? required_argument : no_argument;
        lo[n].flag = NULL;
        lo[n].val = tab[i].id;
        n++;
        if (tab[i].shrt && s < 250) {
            so[s++] = (char)tab[i].shrt;
            if (tab[i].arg)
                so[s++] = ':';
        }
    }
    memset(&lo[n], 0, sizeof(lo[n]));
    so[0] = ':';                   /* ':' for a missing argument, '?' else */
    so[s] = '\0';
    if (flags & CLI_ORDERED) {     /* "+:..." */
        memmove(so + 1, so, (size_t)s + 1);
        so[0] = '+';
    }
    opterr = 0;
    while ((c = getopt_long(argc, argv, so, lo, &idx)) != -1) {
        if (c == '?' || c == ':') {
            const char *w = argv[optind - 1];
            char what[64], msg[128];
            if (!strncmp(w, "--", 2) || optopt <= ' ' || optopt > '~')
                snprintf(what, sizeof(what), "%.*s", (int)strcspn(w, "="), w);
            else
                snprintf(what, sizeof(what), "-%c", optopt);
            snprintf(msg, sizeof(msg), c == ':' ? "missing argument to %s"
                                                : "unknown option %s", what);
            /* --json=x: getopt knows the option (optopt), which takes
             * no argument; its full name, not what was abbreviated */
            for (int i = 0; c == '?' && optopt && !strncmp(w, "--", 2) &&
                            strchr(w, '=') && tab[i].lng; i++)
                if (tab[i].id == optopt && (tab[i].mask & mask) &&
                    !tab[i].arg) {
                    snprintf(msg, sizeof(msg), "option '--%s' takes no "
                             "argument", tab[i].lng);
                    break;
                }
            cli_bad_set(bad, "%s", msg);
            continue;
        }
        for (int i = 0; tab[i].lng; i++)    /* a short letter: its id */
            if (tab[i].shrt && tab[i].shrt == c && (tab[i].mask & mask)) {
                c = tab[i].id;
                break;
            }
        if (c == 'h' && cli_help) { /* the options every tool has, once */
            cli_help(mask);
            exit(0);
        }
        if (c == 'V') {
            printf("%s %s\n", cli_prog, VMC_TOOL_VERSION);
            exit(0);
        }
        if (c == 'q') {
            cli_quiet = 1;
            continue;
        }
        fn(c, optarg, u);
    }
    return optind;
}

void cli_help_tail(const char *failure, const char *pages)
{
    printf("\nBackends in this build: %s.\nExit status: 0 success, 1 failure%s"
           "%s%s, 2 usage.  See %s.\n", vmc_backends_built(),
           failure ? " (" : "", failure ? failure : "", failure ? ")" : "",
           pages);
}

void cli_print_options(FILE *f, const struct cli_opt *tab, unsigned mask)
{
    for (int i = 0; tab[i].lng; i++) {
        char left[64];
        if (!(tab[i].mask & mask))
            continue;
        if (tab[i].shrt)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", tab[i].shrt,
                     tab[i].lng, tab[i].arg ? " " : "",
                     tab[i].arg ? tab[i].arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", tab[i].lng,
                     tab[i].arg ? " " : "", tab[i].arg ? tab[i].arg : "");
        fprintf(f, "  %-28s %s\n", left, tab[i].help);
    }
}

/* Length of the well-formed printable UTF-8 sequence at s, or 0. */
static size_t safe_char(const unsigned char *s)
{
    size_t len = *s < 0x80 ? 1 : (*s & 0xe0) == 0xc0 ? 2 :
                 (*s & 0xf0) == 0xe0 ? 3 : (*s & 0xf8) == 0xf0 ? 4 : 0;
    uint32_t c;

    if (!len)
        return 0;
    if (len == 1)
        return *s >= 0x20 && *s != 0x7f && *s != '\\';
    c = *s & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[k] & 0x3f);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
        (len == 4 && c < 0x10000) || c > 0x10ffff ||
        (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c <= 0x9f))
        return 0;
    return len;
}

void cli_put_safe(FILE *f, const char *s, int newlines)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        size_t l = *p == '\n' && newlines ? 1 : safe_char(p);
        if (l) {
            fwrite(p, 1, l, f);
            p += l;
        } else if (*p == '\\') {
            fputs("\\\\", f);
            p++;
        } else {
            fprintf(f, "\\x%02x", *p++);
        }
    }
}

const char *cli_safe(const char *s)
{
    static char bufs[4][4200];
    static int next;
    char *out = bufs[next++ & 3];
    char cut[1025];
    size_t len;
    FILE *f;

    if (!(f = fmemopen(out, sizeof(bufs[0]), "w")))
        return "?";
    snprintf(cut, sizeof(cut), "%s", s);
    cli_put_safe(f, cut, 0);
    if (strlen(s) > 1024)
        fputs("...", f);
    fflush(f);
    len = (size_t)ftell(f);
    fclose(f);
    out[len < sizeof(bufs[0]) ? len : sizeof(bufs[0]) - 1] = '\0';
    return out;
}

/* One line on stderr, escaped as cli_put_safe does: a message may quote
 * an image's own text (an option from its config, a domain name), and it
 * reaches terminals, cron mail and journals. */
void cli_err(const char *obj, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    fprintf(stderr, "%s: ", cli_prog);
    if (obj) {
        cli_put_safe(stderr, obj, 0);
        fputs(": ", stderr);
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_put_safe(stderr, msg, 0);
    fputc('\n', stderr);
}

static const char *trusted_default;   /* for the hint of cli_ctx_msg */

const char *cli_ctx_msg(const struct vmc_ctx *ctx)
{
    static char buf[700];
    const char *words = "";

    switch (vmc_ctx_hint(ctx)) {
    case VMC_HINT_GIVE_KEY:
        words = " (give -i, -k, -P, --passphrase-file or --passphrase-fd)";
        break;
    case VMC_HINT_NOT_LIVE:
        words = strcmp(cli_prog, "vmmigrate") ? "; save it without --live"
                                              : "; migrate it with --no-live";
        break;
    case VMC_HINT_TRUST_SIGNER:
        words = " (trust it with -t KEY, or a line in ";
        break;
    case VMC_HINT_UNSIGNED:
        words = strcmp(cli_prog, "vmrestore") ? "" :
                " (--allow-unsigned restores it anyway: only if you know who "
                "made it, see vmrestore(1))";
        break;
    case VMC_HINT_MEMORY_ONLY:
        words = " (save it stopped with --disks to carry its disks, or give "
                "--memory-only to checkpoint the memory alone: vmrestore will "
                "warn)";
        break;
    case VMC_HINT_DISK_DIR:
        words = " (give --disk-dir DIR: where to write them)";
        break;
    case VMC_HINT_STOPPED_DISKS:
        words = " (save it without --checkpoint to carry them, or give "
                "--memory-only instead of --disks)";
        break;
    case VMC_HINT_ALLOW_DIR:
        words = "; to allow it, give --allow-dir with its directory";
        break;
    case VMC_HINT_SIGNING_KEY:
        words = " (give --signing-key FILE, or make one: vmimage keygen --sign "
                "-o " CLI_SIGNING_KEY_FILE ")";
        break;
    }
    if (vmc_ctx_hint(ctx) == VMC_HINT_TRUST_SIGNER)
        snprintf(buf, sizeof(buf), "%s%s%s)", vmc_ctx_error(ctx), words,
                 trusted_default ? trusted_default : cli_trusted_file(NULL));
    else
        snprintf(buf, sizeof(buf), "%s%s", vmc_ctx_error(ctx), words);
    return buf;
}

void cli_ctx_err(const char *obj, struct vmc_ctx *ctx)
{
    cli_err(obj, "%s", cli_ctx_msg(ctx));
    vmc_ctx_clear(ctx);
}

int cli_have_tty(void)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* Reads one line (without the newline) into sodium memory. */
static int read_line_fd(int fd, char **pass, size_t *len)
{
    char *b = sodium_malloc(PASS_MAX + 1);
    size_t n = 0;

    *pass = NULL;
    *len = 0;
    if (!b)
        return -ENOMEM;
    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            sodium_free(b);
            return -e;
        }
        if (r == 0 || ch == '\n')
            break;
        if (n == PASS_MAX) {
            sodium_free(b);
            return -E2BIG;
        }
        b[n++] = ch;
    }
    if (n && b[n - 1] == '\r')
        n--;
    b[n] = '\0';
    *pass = b;
    *len = n;
    return 0;
}

static int ask(int fd, const char *prompt, char **pass, size_t *len)
{
    struct termios old, noecho;
    int rc, have = tcgetattr(fd, &old) == 0;

    if (write(fd, prompt, strlen(prompt)) < 0)
        return -errno;
    if (have) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        noecho.c_lflag |= ICANON;
        tcsetattr(fd, TCSAFLUSH, &noecho);
    }
    rc = read_line_fd(fd, pass, len);
    if (have)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0)
        rc = rc ? rc : -errno;
    return rc;
}

int cli_pass_tty(const char *prompt, int confirm, char **pass, size_t *len)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY), rc;
    char *again = NULL;
    size_t alen = 0;

    *pass = NULL;
    *len = 0;
    if (fd < 0) {
        cli_err(NULL, "cannot ask for a passphrase: no terminal (use "
                "--passphrase-file or --passphrase-fd)");
        return -1;
    }
    rc = ask(fd, prompt, pass, len);
    if (rc == 0 && confirm) {
        rc = ask(fd, "Confirm passphrase: ", &again, &alen);
        if (rc == 0 && (alen != *len || sodium_memcmp(again, *pass, alen))) {
            cli_err(NULL, "passphrases do not match");
            rc = -1;
        }
        sodium_free(again);
    }
    close(fd);
    if (rc == 0 && *len == 0) {
        cli_err(NULL, "empty passphrase");
        rc = -1;
    }
    if (rc) {
        if (rc < -1)
            cli_err("/dev/tty", "%s", strerror(-rc));
        sodium_free(*pass);
        *pass = NULL;
        return -1;
    }
    return 0;
}

int cli_pass_file(const char *path, char **pass, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

    if (fd < 0) {
        cli_err(path, "%s", strerror(errno));
        return -1;
    }
    rc = read_line_fd(fd, pass, len);
    close(fd);
    if (rc < 0) {
        cli_err(path, "%s", rc == -E2BIG ? "passphrase too long" : strerror(-rc));
        return -1;
    }
    if (*len == 0) {
        cli_err(path, "empty passphrase");
        sodium_free(*pass);
        *pass = NULL;
        return -1;
    }
    return 0;
}

int cli_pass_fd(int fd, char **pass, size_t *len)
{
    int rc = read_line_fd(fd, pass, len);
    char obj[32];

    snprintf(obj, sizeof(obj), "fd %d", fd);
    if (rc < 0) {
        cli_err(obj, "%s", rc == -E2BIG ? "passphrase too long" : strerror(-rc));
        return -1;
    }
    if (*len == 0) {
        cli_err(obj, "empty passphrase");
        sodium_free(*pass);
        *pass = NULL;
        return -1;
    }
    return 0;
}

void cli_human(char *buf, size_t cap, double b)
{
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int i = 0;

    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

void cli_progress_init(struct cli_progress *p, const char *what, uint64_t total)
{
    memset(p, 0, sizeof(*p));
    p->on = !cli_quiet && isatty(2);
    p->what = what;
    p->total = total;
    p->start = vmc_now_ns();
}

void cli_progress_expect(void *arg, uint64_t total)
{
    struct cli_progress *p = arg;

    if (p) {
        p->total = total;
        p->estimate = 1;
    }
}

int cli_progress_cb(void *arg, uint64_t bytes)
{
    struct cli_progress *p = arg;
    uint64_t now, pos = bytes;
    double secs, rate, prate, pct;
    char done[32], r[32], tail[48] = "";

    if (!p || !p->on)
        return 0;
    now = vmc_now_ns();
    if (now - p->last < 1000000000ull / 6)
        return 0;
    p->last = now;
    if (p->reader) {
        struct vmc_stats st;
        vmc_reader_stats(p->reader, &st);
        pos = st.stream_bytes;
    }
    secs = (double)(now - p->start) / 1e9;
    rate = secs > 0 ? (double)bytes / secs : 0;
    prate = secs > 0 ? (double)pos / secs : 0;
    cli_human(done, sizeof(done), (double)bytes);
    cli_human(r, sizeof(r), rate);
    if (p->total && prate > 0 && pos < p->total) {
        pct = 100.0 * (double)pos / (double)p->total;
        snprintf(tail, sizeof(tail), "  %s%.0f%%  ETA %.0fs",
                 p->estimate ? "~" : "", pct,
                 (double)(p->total - pos) / prate);
    } else if (p->total && p->estimate) {
        snprintf(tail, sizeof(tail), "  ~99%%");   /* past the estimate */
    }
    fprintf(stderr, "\r%s: %s %s  %s/s%s\033[K", cli_prog, p->what, done, r,
            tail);
    return 0;
}

void cli_progress_done(struct cli_progress *p)
{
    if (p->on && p->last)
        fprintf(stderr, "\r\033[K");
}

static void on_fatal_signal(int sig)
{
    vmc_outfile_cleanup_signal();      /* unlink(): async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* SIGINT/SIGTERM/SIGHUP go to handler; EPIPE is reported as an error. */
static void on_signals(void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void cli_signals_unlink_and_exit(void)
{
    on_signals(on_fatal_signal);
}

int cli_parse_uint(const char *s, unsigned long long max, unsigned long long *v)
{
    char *end;

    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    *v = strtoull(s, &end, 10);
    if (errno || *end || *v > max)
        return -1;
    return 0;
}

/* ---- console bridge ---------------------------------------------------- */

#include <poll.h>
#include <dirent.h>
#include <libgen.h>
#include <sys/stat.h>
#include <time.h>

volatile int cli_interrupted;

static void on_flag_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_signals_flag(void)
{
    on_signals(on_flag_signal);
}

uint64_t cli_input_size(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

int cli_progress_cb_int(void *arg, uint64_t bytes)
{
    if (cli_interrupted)
        return 1;
    return cli_progress_cb(arg, bytes);
}

int cli_console(int fd, const char *what)
{
    struct termios old, raw;
    int tty = isatty(0) && tcgetattr(0, &old) == 0, in_open = 1;
    char buf[4096];

    if (tty && !cli_quiet)
        fprintf(stderr, "Connected to %s console; escape character is ^]\r\n",
                what);
    if (tty) {
        raw = old;
        cfmakeraw(&raw);
        tcsetattr(0, TCSANOW, &raw);
    }
    while (!cli_interrupted) {
        struct pollfd pf[2] = { { fd, POLLIN, 0 }, { in_open ? 0 : -1, POLLIN, 0 } };
        ssize_t n;

        if (poll(pf, 2, 200) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[0].revents) {
            n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                break;                       /* the domain went away */
            if (write(1, buf, (size_t)n) < 0)
                break;
        }
        if (pf[1].revents) {
            n = read(0, buf, sizeof(buf));
            if (n <= 0) {
                in_open = 0;                 /* keep showing the console */
                continue;
            }
            if (tty) {
                char *esc = memchr(buf, 0x1d, (size_t)n);
                if (esc) {
                    if (esc > buf && write(fd, buf, (size_t)(esc - buf)) < 0)
                        break;
                    break;
                }
            }
            if (write(fd, buf, (size_t)n) < 0)
                break;
        }
    }
    if (tty) {
        tcsetattr(0, TCSANOW, &old);
        if (!cli_quiet)
            fprintf(stderr, "\r\nDetached from %s console\n", what);
    }
    return 0;
}

/* ---- strftime names and retention -------------------------------- */

int cli_strftime_path(const char *in, char *out, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;

    if (!strchr(in, '%')) {
        snprintf(out, cap, "%s", in);
        return 0;
    }
    localtime_r(&now, &tm);
    if (strftime(out, cap, in, &tm) == 0)
        return -1;
    return 0;
}

/* The conversions a --keep pattern may hold: each has one width and one
 * class of characters, so that a name matches it exactly or not at all,
 * and together they give back the time the name was made from. */
static const char exact_conv[] = "YmdHMSyjFT%";

const char *cli_pattern_inexact(const char *pattern)
{
    static char bad[3];
    const char *base = strrchr(pattern, '/');

    base = base ? base + 1 : pattern;
    for (const char *p = base; *p; p++)
        if (*p == '%') {
            if (!p[1] || !strchr(exact_conv, p[1])) {
                snprintf(bad, sizeof(bad), "%%%c", p[1] ? p[1] : ' ');
                return bad;
            }
            p++;
        }
    return NULL;
}

/* The time a name was made from with pattern (its basename), or -1 if
 * the name is not exactly one the pattern makes. */
static time_t name_time(const char *pat, const char *name)
{
    struct tm tm = { .tm_isdst = -1, .tm_mday = 1 };
    const char *end = strptime(name, pat, &tm);
    char back[1024];

    if (!end || *end)
        return -1;
    /* strptime is lenient (widths, spaces): the name must be exactly what
     * strftime makes of the time it read */
    if (strftime(back, sizeof(back), pat, &tm) == 0 || strcmp(back, name))
        return -1;
    return mktime(&tm);
}

struct cand {
    char name[512];
    time_t t;
    int set;                    /* name is a split set's NAME */
};

/* NAME of the first piece NAME.000 of a split set, or 0. */
static int set_stem(const char *name, char *stem, size_t cap)
{
    size_t n = strlen(name);

    if (n <= 4 || strcmp(name + n - 4, ".000") || n - 4 >= cap)
        return 0;
    memcpy(stem, name, n - 4);
    stem[n - 4] = '\0';
    return 1;
}

/* A split set goes first piece first (it is no image from then on), then
 * the pieces after it, while they exist. */
static int remove_image(int dfd, const struct cand *c)
{
    char piece[540];

    if (!c->set)
        return unlinkat(dfd, c->name, 0);
    for (int i = 0; i < VMC_SPLIT_MAX_PIECES; i++) {
        snprintf(piece, sizeof(piece), "%s.%03d", c->name, i);
        if (unlinkat(dfd, piece, 0) < 0)
            return i == 0 || errno != ENOENT ? -1 : 0;
    }
    return 0;
}

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (x->t != y->t)
        return x->t < y->t ? 1 : -1;              /* newest first */
    return -strcmp(x->name, y->name);
}

static void note_skip(struct cli_retained *r, const char *name, const char *why)
{
    if (r->nskipped < (int)(sizeof(r->skipped) / sizeof(r->skipped[0]))) {
        snprintf(r->skipped[r->nskipped].name, sizeof(r->skipped[0].name), "%s",
                 name);
        r->skipped[r->nskipped].why = why;
    }
    r->nskipped++;
}

/* Is dir/name (through dirfd, no symlink followed) one of our images? */
static const char *not_ours(int dfd, const char *name, struct stat *st)
{
    struct vmc_ctx *ctx;
    struct vmc_header *h = NULL;
    int fd, ok;

    if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) < 0)
        return "cannot be read";
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    if (st->st_uid != geteuid())
        return "owned by another user";
    if ((fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) < 0)
        return "cannot be read";
    ctx = vmc_ctx_new();
    ok = ctx && vmc_header_read(ctx, fd, &h) == 0;
    vmc_header_free(h);
    vmc_ctx_free(ctx);
    close(fd);
    return ok ? NULL : "not a vmckpt image";
}

int cli_retention(const char *pattern, const char *written, int keep,
                  struct cli_retained *r)
{
    char *pc = strdup(pattern), *pb = strdup(pattern), *wb = strdup(written);
    const char *dir = dirname(pc), *base = basename(pb), *wbase = basename(wb);
    struct cand *c = NULL;
    DIR *d = NULL;
    struct dirent *e;
    size_t n = 0, cap = 0;
    int dfd = -1;

    memset(r, 0, sizeof(*r));
    if (!strchr(base, '%') || cli_pattern_inexact(base) ||
        !(d = opendir(dir)) || (dfd = dirfd(d)) < 0)
        goto out;
    while ((e = readdir(d))) {
        struct stat st;
        const char *why;
        char stem[512];
        time_t t = name_time(base, e->d_name);
        int set = 0;
        if (t == (time_t)-1 && set_stem(e->d_name, stem, sizeof(stem)) &&
            (t = name_time(base, stem)) != (time_t)-1)
            set = 1;                /* NAME.000: the set NAME, one image */
        if (t == (time_t)-1 || !strcmp(set ? stem : e->d_name, wbase))
            continue;               /* not a name this pattern makes */
        if ((why = not_ours(dfd, e->d_name, &st))) {
            note_skip(r, e->d_name, why);
            continue;
        }
        if (n == cap) {
            struct cand *nc = realloc(c, (cap = cap ? cap * 2 : 16) * sizeof(*c));
            if (!nc)
                break;
            c = nc;
        }
        snprintf(c[n].name, sizeof(c[n].name), "%s", set ? stem : e->d_name);
        c[n].t = t;
        c[n].set = set;
        n++;
    }
    qsort(c, n, sizeof(*c), cand_cmp);
    /* the image just written counts as the newest one kept */
    for (size_t i = (size_t)(keep > 1 ? keep - 1 : 0); i < n; i++) {
        if (remove_image(dfd, &c[i]) < 0) {
            note_skip(r, c[i].name, "cannot be removed");
            continue;
        }
        if (r->nremoved < (int)(sizeof(r->removed) / sizeof(r->removed[0])))
            snprintf(r->removed[r->nremoved], sizeof(r->removed[0]), "%s",
                     c[i].name);
        r->nremoved++;
    }
out:
    if (d)
        closedir(d);
    free(c);
    free(pc);
    free(pb);
    free(wb);
    return r->nremoved;
}

void cli_rounds_add(void *arg, const struct vmc_round *r)
{
    struct cli_rounds *c = arg;
    struct vmc_round *g;

    if (!(c->n & (c->n - 1))) {    /* full at 0, 1, 2, 4 ... */
        if (!(g = realloc(c->r, (c->n ? (size_t)c->n * 2 : 1) * sizeof(*g))))
            return;                 /* the report is best effort */
        c->r = g;
    }
    c->r[c->n++] = *r;
}

void cli_rounds_free(struct cli_rounds *c)
{
    free(c->r);
    c->r = NULL;
    c->n = 0;
}

json_t *rounds_json(const struct cli_rounds *r)
{
    json_t *a = json_array();

    for (int i = 0; i < r->n; i++)
        json_array_append_new(a, json_pack("{s:i, s:I, s:I}", "round", i + 1,
                                           "bytes", (json_int_t)r->r[i].bytes,
                                           "duration_ns",
                                           (json_int_t)r->r[i].duration_ns));
    return a;
}

void print_rounds(FILE *out, const struct cli_rounds *r)
{
    if (!r->n)
        return;
    fprintf(out, "  pre-copy rounds %d:", r->n);
    for (int i = 0; i < r->n && i < 12; i++) {
        char b[32];
        cli_human(b, sizeof(b), (double)r->r[i].bytes);
        fprintf(out, " %s", b);
    }
    fprintf(out, "%s\n", r->n > 12 ? " ..." : "");
}

const char *cli_synopsis = "";

int cli_usage(const char *why)
{
    if (why)
        cli_err(NULL, "%s", why);
    fputs(cli_synopsis, stderr);
    return 2;
}

void cli_bad_set(struct cli_bad *b, const char *fmt, const char *x)
{
    if (!b->set)
        snprintf(b->msg, sizeof(b->msg), fmt, x ? x : "");
    b->set = 1;
}

uint64_t cli_split_arg(struct cli_bad *b, const char *arg)
{
    unsigned long long v, mul = 1;
    char num[32];
    size_t n = strlen(arg);

    if (n && n < sizeof(num)) {
        memcpy(num, arg, n + 1);
        switch (num[n - 1]) {
        case 'K': case 'k': mul = 1ull << 10; break;
        case 'M': case 'm': mul = 1ull << 20; break;
        case 'G': case 'g': mul = 1ull << 30; break;
        }
        if (mul > 1)
            num[n - 1] = '\0';
        if (!cli_parse_uint(num, VMC_SPLIT_MAX, &v) && v && v <= VMC_SPLIT_MAX / mul &&
            v * mul >= VMC_SPLIT_MIN)
            return v * mul;
    }
    cli_bad_set(b, "bad --split '%s' (1M..4G less one byte: FAT32's "
                "largest file)", arg);
    return 0;
}

unsigned long long cli_uint_arg(struct cli_bad *b, const char *arg,
                                unsigned long long lo, unsigned long long hi,
                                const char *fmt)
{
    unsigned long long v;

    if (cli_parse_uint(arg, hi, &v) || v < lo) {
        cli_bad_set(b, fmt, arg);
        return 0;
    }
    return v;
}

int cli_add_passphrase(struct vmc_ctx *ctx, struct vmc_keys *keys,
                       const char *file, int fd, int ask, int confirm,
                       const char *prompt)
{
    char *p = NULL;
    size_t len = 0;
    int rc;

    if (file)
        rc = cli_pass_file(file, &p, &len);
    else if (fd >= 0)
        rc = cli_pass_fd(fd, &p, &len);
    else if (ask)
        rc = cli_pass_tty(prompt, confirm, &p, &len);
    else
        return 0;
    if (rc < 0)
        return -1;
    rc = vmc_keys_add_passphrase(ctx, keys, p, len);
    sodium_free(p);
    if (rc < 0) {
        cli_ctx_err(NULL, ctx);
        return -1;
    }
    return 0;
}

int cli_key_opt(struct vmc_ctx *ctx, const struct cli_bad *bad,
                struct vmc_keys *keys, int id, const char *arg)
{
    int rc;

    switch (id) {
    case 'r': rc = vmc_keys_add_recipient(ctx, keys, arg); break;
    case 'R': rc = vmc_keys_add_recipients_file(ctx, keys, arg); break;
    case 'k': rc = vmc_keys_add_keyfile(ctx, keys, arg); break;
    case 'i': rc = vmc_keys_add_identity_file(ctx, keys, arg); break;
    default: return 0;
    }
    if (rc < 0 && !bad->set) {
        cli_ctx_err(NULL, ctx);
        exit(1);
    }
    return 1;
}

/* ---- the options of a sealed stream ------------------------------------ */

void cli_seal_init(struct cli_seal *s)
{
    memset(s, 0, sizeof(*s));
    s->pass_fd = -1;
}

int cli_seal_opt(struct cli_seal *s, struct cli_bad *bad, int id,
                 const char *arg)
{
    unsigned long long v = 0;

    switch (id) {
    case CLI_O_PASSFILE: s->pass_file = arg; break;
    case CLI_O_PASSFD:
        s->pass_fd = (int)cli_uint_arg(bad, arg, 0, 1 << 20,
                                       "bad --passphrase-fd '%s'");
        break;
    case CLI_O_KDFOPS:
        s->kdf_ops = (unsigned)cli_uint_arg(bad, arg, VMC_ARGON2_OPS_MIN,
                                            VMC_ARGON2_OPS_MAX,
                                            "bad --kdf-ops '%s' (1..16)");
        break;
    case CLI_O_KDFMEM:
        s->kdf_mem_kib = (unsigned)cli_uint_arg(bad, arg, 8, 1024,
                                  "bad --kdf-mem '%s' (8..1024 MiB)") * 1024;
        break;
    case CLI_O_LABEL: s->wo.label = arg; break;
    case CLI_O_CHUNK:
        if (cli_parse_uint(arg, VMC_CHUNK_MAX, &v) || v < VMC_CHUNK_MIN ||
            (v & (v - 1))) {
            cli_bad_set(bad, "bad --chunk-size '%s' (power of 2, "
                        "65536..16777216)", arg);
            v = 0;
        }
        s->wo.chunk_size = (uint32_t)v;
        break;
    case CLI_O_LEVEL:
        s->wo.level = (int)cli_uint_arg(bad, arg, 1, 19,
                                        "bad --level '%s' (1..19)");
        break;
    case CLI_O_THREADS:
        s->wo.threads = (int)cli_uint_arg(bad, arg, 1, 64,
                                          "bad --threads '%s' (1..64)");
        break;
    case CLI_O_SIGNKEY: s->sign_key = arg; break;
    case CLI_O_UNSIGNED: s->wo.unsigned_v1 = 1; break;
    case CLI_O_BACKEND: s->backend = arg; break;
    case CLI_O_MAXDOWN:
        s->max_downtime_ms = (uint32_t)cli_uint_arg(bad, arg, 1, 600000,
                                  "bad --max-downtime '%s' (milliseconds)");
        break;
    case CLI_O_LIVETMO:
        s->live_timeout_s = (uint32_t)cli_uint_arg(bad, arg, 1, 86400,
                                  "bad --live-timeout '%s' (seconds)");
        break;
    default:
        return 0;
    }
    return 1;
}

const char *cli_seal_problem(const struct cli_seal *s, int live,
                             const char *not_live)
{
    static char msg[96];

    if (!live && (s->max_downtime_ms || s->live_timeout_s)) {
        snprintf(msg, sizeof(msg), not_live, s->max_downtime_ms ?
                 "--max-downtime" : "--live-timeout");
        return msg;
    }
    if (s->sign_key && s->wo.unsigned_v1)
        return "--signing-key and --unsigned exclude each other";
    return NULL;
}

int cli_seal_keys(struct vmc_ctx *ctx, struct vmc_keys *keys,
                  const struct cli_seal *s, int ask, const char *prompt)
{
    if (cli_add_passphrase(ctx, keys, s->pass_file, s->pass_fd, ask, 1,
                           prompt) < 0)
        return 1;
    vmc_keys_set_kdf(keys, s->kdf_ops, s->kdf_mem_kib);
    if (!vmc_keys_can_seal(keys))
        return cli_usage("no key to seal to: give -r, -R, -k, -P, "
                         "--passphrase-file or --passphrase-fd (images are "
                         "always encrypted)");
    return 0;
}

void cli_seal_save_opts(const struct cli_seal *s, struct vmc_save_opts *so)
{
    so->wopts = s->wo;
    so->max_downtime_ms = s->max_downtime_ms;
    so->live_timeout_s = s->live_timeout_s;
}

int cli_seal_backend(const struct cli_seal *s, const struct vmc_backend **be)
{
    char m[160];

    *be = s->backend ? vmc_backend_get(s->backend) : vmc_backend_default();
    if (*be || !s->backend)
        return 0;
    snprintf(m, sizeof(m), "unknown backend '%.40s' (built: %s)", s->backend,
             vmc_backends_built());
    return cli_usage(m);
}

/* ---- the restore policy ---------------------------------------------------- */

/* An option's value, else a non-empty $name, else the default. */
static const char *given_env_or(const char *given, const char *name,
                                const char *dflt)
{
    const char *env = secure_getenv(name);

    return given ? given : env && *env ? env : dflt;
}

const char *cli_trusted_file(const struct cli_trust *t)
{
    return given_env_or(t ? t->file : NULL, "VMCKPT_TRUSTED_SIGNERS",
                        CLI_TRUSTED_SIGNERS_FILE);
}

void cli_trust_add(struct cli_trust *t, struct cli_bad *bad, const char *signer)
{
    if (t->n == (int)(sizeof(t->signer) / sizeof(t->signer[0])))
        cli_bad_set(bad, "more than 32 --trusted-signer%s", "");
    else
        t->signer[t->n++] = signer;
}

int cli_trust_load(struct vmc_ctx *ctx, struct vmc_keys *keys,
                   const struct cli_trust *t)
{
    const char *file = cli_trusted_file(t);

    trusted_default = file;
    for (int i = 0; i < t->n; i++)
        if (vmc_keys_add_trusted_signer(ctx, keys, t->signer[i]) < 0) {
            cli_ctx_err("-t", ctx);
            return -1;
        }
    if (vmc_keys_add_trusted_signers_file(ctx, keys, file) < 0) {
        if (!t->file && vmc_ctx_errno(ctx) == ENOENT &&
            vmc_ctx_errcode(ctx) == VMC_E_IO) {
            vmc_ctx_clear(ctx);         /* no file: no one trusted by it */
            return 0;
        }
        cli_ctx_err(NULL, ctx);
        return -1;
    }
    return 0;
}

int cli_signing_load(struct vmc_ctx *ctx, struct vmc_keys *keys, const char *path)
{
    const char *p = given_env_or(path, "VMCKPT_SIGNING_KEY",
                                 CLI_SIGNING_KEY_FILE);

    if (vmc_keys_add_signing_key_file(ctx, keys, p) < 0) {
        int missing = vmc_ctx_errno(ctx) == ENOENT &&
                      vmc_ctx_errcode(ctx) == VMC_E_IO;
        if (missing && !path) {
            vmc_ctx_clear(ctx);
            cli_err(NULL, "no signing key: %s does not exist (make one: "
                    "vmimage keygen --sign -o %s, or give --signing-key FILE)",
                    p, p);
            return -1;
        }
        cli_ctx_err(NULL, ctx);
        return -1;
    }
    return 0;
}

int cli_disk_dir_ok(const char *dir)
{
    struct stat st;
    int bad = stat(dir, &st) < 0 ? errno : 0;

    if (bad || !S_ISDIR(st.st_mode)) {
        cli_err(dir, "--disk-dir: %s", bad ? strerror(bad) : "not a directory");
        return 0;
    }
    return 1;
}

/* path made absolute against the working directory (caller frees). */
static char *abs_path(const char *path)
{
    char cwd[PATH_MAX], *out;

    if (!getcwd(cwd, sizeof(cwd)) ||
        asprintf(&out, "%s/%s", strcmp(cwd, "/") ? cwd : "", path) < 0)
        return NULL;
    return out;
}

void cli_remap_add(struct cli_remaps *m, struct cli_bad *bad, int disk,
                   const char *arg)
{
    const char *opt = disk ? "--disk" : "--net", *eq = strchr(arg, '=');
    struct vmc_remap *r;
    char *id, *abs = NULL;

    if (!eq || eq == arg || !eq[1]) {
        cli_bad_set(bad, disk ? "--disk '%.100s': not ID=PATH" :
                    "--net '%.100s': not ID=ATTACHMENT", arg);
        return;
    }
    if ((disk ? m->ndisk : m->nnet) == 64) {
        cli_bad_set(bad, "more than 64 %s", opt);
        return;
    }
    if (!(id = strndup(arg, (size_t)(eq - arg))) ||
        (disk && eq[1] != '/' && !(abs = abs_path(eq + 1)))) {
        free(id);
        cli_bad_set(bad, "%s: out of memory or no working directory", opt);
        return;
    }
    r = disk ? &m->disk[m->ndisk++] : &m->net[m->nnet++];
    m->owned[m->nowned++] = id;
    if (abs)
        m->owned[m->nowned++] = abs;
    r->id = id;
    r->to = abs ? abs : eq + 1;
}

void cli_remaps_to(const struct cli_remaps *m, struct vmc_restore_opts *ro)
{
    ro->disk_map = m->disk;
    ro->ndisk_map = m->ndisk;
    ro->net_map = m->net;
    ro->nnet_map = m->nnet;
}

void cli_remaps_free(struct cli_remaps *m)
{
    for (int i = 0; i < m->nowned; i++)
        free(m->owned[i]);
    m->nowned = 0;
}

void cli_dirs_add(struct cli_dirs *d, struct cli_bad *bad, const char *dir)
{
    if (d->n == (int)(sizeof(d->dir) / sizeof(d->dir[0])))
        cli_bad_set(bad, "more than 64 --allow-dir%s", "");
    else
        d->dir[d->n++] = dir;
}

struct vmc_policy *cli_policy(struct vmc_ctx *ctx, const struct cli_dirs *d)
{
    struct vmc_policy *p = vmc_policy_new();

    if (!p) {
        cli_err(NULL, "out of memory");
        return NULL;
    }
    if (vmc_policy_load_file(ctx, p, CLI_ALLOWED_DIRS_FILE) < 0) {
        cli_ctx_err(NULL, ctx);
        vmc_policy_free(p);
        return NULL;
    }
    for (int i = 0; i < d->n; i++)
        if (vmc_policy_allow_dir(ctx, p, d->dir[i]) < 0) {
            cli_ctx_err(NULL, ctx);
            vmc_policy_free(p);
            return NULL;
        }
    return p;
}

int cli_read_file(const char *path, size_t max, uint8_t **buf, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    *buf = NULL;
    if (fd < 0 || fstat(fd, &st) < 0) {
        cli_err(path, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        cli_err(path, "%s", S_ISREG(st.st_mode) ? "too large" :
                             "not a regular file");
        close(fd);
        return -1;
    }
    if (!(*buf = malloc((size_t)st.st_size + 1))) {
        cli_err(path, "out of memory");
        close(fd);
        return -1;
    }
    n = read(fd, *buf, (size_t)st.st_size);
    close(fd);
    if (n != st.st_size) {
        cli_err(path, "short read");
        free(*buf);
        *buf = NULL;
        return -1;
    }
    *len = (size_t)n;
    return 0;
}
