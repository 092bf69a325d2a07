/* cli.c - shared command-line plumbing. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"

const char *cli_prog = "vmckpt";
int cli_quiet;

#define PASS_MAX 1024

int cli_parse(int argc, char **argv, const struct cli_opt *tab, unsigned mask,
              void (*fn)(int id, const char *arg, void *u), void *u)
{
    struct option lo[128];
    char so[256];
    int n = 0, s = 0, c, idx;

    for (int i = 0; tab[i].lng && n < 127; i++) {
        if (!(tab[i].mask & mask))
            continue;
        lo[n].name = tab[i].lng;
        lo[n].has_arg = tab[i].arg ? required_argument : no_argument;
        lo[n].flag = NULL;
        lo[n].val = tab[i].shrt ? tab[i].shrt : 1000 + i;
        n++;
        if (tab[i].shrt && s < 250) {
            so[s++] = (char)tab[i].shrt;
            if (tab[i].arg)
                so[s++] = ':';
        }
    }
    memset(&lo[n], 0, sizeof(lo[n]));
    so[s] = '\0';
    opterr = 0;
    while ((c = getopt_long(argc, argv, so, lo, &idx)) != -1) {
        if (c == '?' || c == ':') {
            char what[64];
            if (optopt >= 1000 || optopt == 0)
                snprintf(what, sizeof(what), "%s", argv[optind - 1]);
            else
                snprintf(what, sizeof(what), "-%c", optopt);
            fn(c, what, u);
            continue;
        }
        fn(c, optarg, u);
    }
    return optind;
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

void cli_err(const char *obj, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", cli_prog);
    if (obj)
        fprintf(stderr, "%s: ", obj);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_ctx_err(const char *obj, struct vmc_ctx *ctx)
{
    cli_err(obj, "%s", vmc_ctx_error(ctx));
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

int cli_progress_cb(void *arg, uint64_t bytes)
{
    struct cli_progress *p = arg;
    uint64_t now;
    double secs, rate;
    char done[32], r[32], eta[32] = "";

    if (!p || !p->on)
        return 0;
    now = vmc_now_ns();
    if (now - p->last < 1000000000ull / 6)
        return 0;
    p->last = now;
    secs = (double)(now - p->start) / 1e9;
    rate = secs > 0 ? (double)bytes / secs : 0;
    cli_human(done, sizeof(done), (double)bytes);
    cli_human(r, sizeof(r), rate);
    if (p->total && rate > 0 && bytes <= p->total)
        snprintf(eta, sizeof(eta), "  ETA %.0fs",
                 (double)(p->total - bytes) / rate);
    fprintf(stderr, "\r%s: %s %s  %s/s%s\033[K", cli_prog, p->what, done, r, eta);
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

void cli_signals_unlink_and_exit(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);          /* EPIPE is reported as an error */
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
