/*
 * vmmigrate - live migration over the sealed stream, mutually
 * authenticated; the source is destroyed only after the destination says
 * the new domain runs.
 *
 *   vmmigrate [options] DOMAIN HOST:PORT | ssh://[USER@]HOST[:PORT]
 *   vmmigrate --listen ADDR:PORT [--once]      (receiver, TCP)
 *   vmmigrate --receive                        (receiver on stdin/stdout)
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "../format/vmckpt_wire.h"
#include "cli.h"

enum {
    O_LISTEN = 1000, O_RECEIVE, O_ONCE, O_KNOWN, O_RKEY, O_AUTH, O_NOLIVE,
    O_MAXDOWN, O_MAXBW, O_TIMEOUT, O_JSON, O_BACKEND, O_REMOTE, O_LEVEL,
    O_LIVETMO,
};

static const struct cli_opt opts[] = {
    { "listen", 0, "ADDR:PORT", 1, "receive migrations on this TCP address" },
    { "receive", 0, NULL, 1, "receive one migration on stdin/stdout (ssh)" },
    { "once", 0, NULL, 1, "--listen: exit after one migration" },
    { "known-hosts", 0, "FILE", 1, "sender: 'HOST vmc1...' lines (default "
                                   "/etc/vmckpt/known_hosts)" },
    { "receiver-key", 0, "PUBKEY", 1, "sender: accept only this receiver key" },
    { "authorized-senders", 0, "FILE", 1, "receiver: accepted sender keys "
                                          "(default /etc/vmckpt/authorized_senders)" },
    { "no-live", 0, NULL, 1, "stop the guest first (no pre-copy)" },
    { "max-downtime", 0, "MS", 1, "live: pause the hypervisor aims for "
                                  "(default 300)" },
    { "max-bandwidth", 0, "MIB", 1, "MiB/s limit (default none)" },
    { "timeout", 0, "S", 1, "handshake, idle link, TCP send and reply timeout "
                            "(default 60)" },
    { "json", 0, NULL, 1, "print a JSON summary" },
    { "backend", 0, "NAME", 1, "qemu or xen (default: xen on a Xen dom0, else "
                              "qemu)" },
    { "remote-command", 0, "CMD", 1, "ssh:// destination: the receiver "
                                     "command (default vmmigrate --receive)" },
    { "level", 0, "N|auto", 1, "zstd level 1..19, or auto: per chunk, "
                                "from storing up to level 1 as the link "
                                "needs (default auto)" },
    { "live-timeout", 0, "S", 1, "pause the guest after S s of pre-copy "
                                  "(default 30)" },
    { "identity", 'i', "FILE", 1, "this host's identity (default "
                                  "/etc/vmckpt/host.key)" },
    { "quiet", 'q', NULL, 1, "no progress, no summary" },
    { "verbose", 'v', NULL, 1, "print the summary even when not on a tty" },
    { "help", 'h', NULL, 1, "show this help" },
    { "version", 'V', NULL, 1, "show the version" },
    { NULL, 0, NULL, 0, NULL },
};

#define SYNOPSIS                                                              \
    "usage:\tvmmigrate [options] DOMAIN HOST:PORT|ssh://[USER@]HOST[:PORT]\n"   \
    "\tvmmigrate --listen ADDR:PORT [--once] [options]\n"                      \
    "\tvmmigrate --receive [options]\n"

struct args {
    struct vmc_ctx *ctx;
    const char *listen, *identity, *known, *rkey, *auth, *backend, *remote;
    int receive, once, nolive, json, verbose, timeout_s, level;
    unsigned max_down, live_tmo;
    unsigned long long max_bw;
    struct cli_bad bad;
};

static int usage(const char *why)
{
    return cli_usage(SYNOPSIS, why);
}

static void help(void)
{
    printf("vmmigrate %s - live migration over the sealed stream\n\n" SYNOPSIS
           "\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, 1);
    printf("\nThe source is destroyed only after the receiver confirms that "
           "the new domain\nruns; on any failure it keeps running.  Backends "
           "in this build: %s.\nExit status: 0 success, 1 failure, 2 usage.  "
           "See vmmigrate(1).\n", vmc_backends_built());
}

static void bad(struct args *a, const char *fmt, const char *x)
{
    cli_bad_set(&a->bad, fmt, x);
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;
    unsigned long long v;

    switch (id) {
    case '?':
    case ':': bad(a, "%s", arg); break;
    case 'h': help(); exit(0);
    case 'V': printf("vmmigrate %s\n", VMC_TOOL_VERSION); exit(0);
    case 'q': cli_quiet = 1; break;
    case 'v': a->verbose = 1; break;
    case 'i': a->identity = arg; break;
    case O_LISTEN: a->listen = arg; break;
    case O_RECEIVE: a->receive = 1; break;
    case O_ONCE: a->once = 1; break;
    case O_KNOWN: a->known = arg; break;
    case O_RKEY: a->rkey = arg; break;
    case O_AUTH: a->auth = arg; break;
    case O_NOLIVE: a->nolive = 1; break;
    case O_JSON: a->json = 1; break;
    case O_BACKEND: a->backend = arg; break;
    case O_REMOTE: a->remote = arg; break;
    case O_MAXDOWN:
        a->max_down = (unsigned)cli_uint_arg(&a->bad, arg, 1, 600000,
                                  "bad --max-downtime '%s' (milliseconds)");
        break;
    case O_MAXBW:
        if (cli_parse_uint(arg, 1000000, &v) || v < 1)
            bad(a, "bad --max-bandwidth '%s' (MiB/s)", arg);
        a->max_bw = v << 20;
        break;
    case O_TIMEOUT:
        a->timeout_s = (int)cli_uint_arg(&a->bad, arg, 1, 86400,
                                  "bad --timeout '%s' (seconds)");
        break;
    case O_LIVETMO:
        a->live_tmo = (unsigned)cli_uint_arg(&a->bad, arg, 1, 86400,
                                  "bad --live-timeout '%s' (seconds)");
        break;
    case O_LEVEL:
        a->level = strcmp(arg, "auto") ? (int)cli_uint_arg(&a->bad, arg, 1, 19,
                                         "bad --level '%s' (1..19 or auto)") : 0;
        break;
    }
}

/* ---- addresses ----------------------------------------------------------- */

/* Splits HOST:PORT / [V6]:PORT. */
static int split_hostport(const char *s, char *host, size_t hcap, char *port,
                          size_t pcap)
{
    const char *colon;

    if (*s == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':')
            return -1;
        snprintf(host, hcap, "%.*s", (int)(e - s - 1), s + 1);
        snprintf(port, pcap, "%s", e + 2);
    } else {
        if (!(colon = strrchr(s, ':')))
            return -1;
        snprintf(host, hcap, "%.*s", (int)(colon - s), s);
        snprintf(port, pcap, "%s", colon + 1);
    }
    return *port ? 0 : -1;
}

static void tune_socket(int fd, int timeout_s)
{
    int one = 1;
    unsigned tmo = (unsigned)timeout_s * 1000;
    struct timeval tv = { timeout_s, 0 };

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* A cut link fails writes instead of blocking for many minutes. */
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &tmo, sizeof(tmo));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static int tcp_connect(const char *dest, int timeout_s, char *host, size_t hcap)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    char port[32];
    int fd = -1, rc;

    if (split_hostport(dest, host, hcap, port, sizeof(port)) < 0) {
        cli_err(dest, "not HOST:PORT or ssh://HOST");
        return -1;
    }
    if ((rc = getaddrinfo(host, port, &hints, &res))) {
        cli_err(dest, "%s", gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        tune_socket(fd, timeout_s);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        rc = errno;
        close(fd);
        fd = -1;
        errno = rc;
    }
    freeaddrinfo(res);
    if (fd < 0)
        cli_err(dest, "cannot connect: %s", strerror(errno));
    return fd;
}

/* ssh://[user@]host[:port]: runs the receiver through ssh. */
static pid_t ssh_spawn(const struct args *a, const char *dest, int *rfd, int *wfd,
                       char *host, size_t hcap)
{
    char userhost[256], port[32] = "";
    const char *p = dest + 6, *colon = strrchr(p, ':');
    int in[2], out[2];
    pid_t pid;

    if (colon && !strchr(colon, ']')) {
        snprintf(userhost, sizeof(userhost), "%.*s", (int)(colon - p), p);
        snprintf(port, sizeof(port), "%s", colon + 1);
    } else {
        snprintf(userhost, sizeof(userhost), "%s", p);
    }
    snprintf(host, hcap, "%s", strchr(userhost, '@') ? strchr(userhost, '@') + 1
                                                    : userhost);
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (*port)
            execlp("ssh", "ssh", "-e", "none", "-p", port, userhost,
                   a->remote ? a->remote : "vmmigrate --receive", (char *)NULL);
        else
            execlp("ssh", "ssh", "-e", "none", userhost,
                   a->remote ? a->remote : "vmmigrate --receive", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *wfd = in[1];
    *rfd = out[0];
    return pid;
}

/* The known-hosts key for host (or --receiver-key). */
static int known_key(struct args *a, const char *host, struct vmc_keys *known)
{
    const char *path = a->known ? a->known : "/etc/vmckpt/known_hosts";
    char line[512];
    FILE *f;

    if (a->rkey)
        return vmc_keys_add_recipient(a->ctx, known, a->rkey) < 0 ? -1 : 0;
    if (!(f = fopen(path, "r"))) {
        cli_err(path, "%s (give --known-hosts or --receiver-key)",
                strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char h[256], k[128];
        if (line[0] == '#' || sscanf(line, "%255s %127s", h, k) != 2)
            continue;
        if (!strcmp(h, host)) {
            fclose(f);
            return vmc_keys_add_recipient(a->ctx, known, k) < 0 ? -1 : 0;
        }
    }
    fclose(f);
    cli_err(host, "no entry in %s: refusing to migrate to an unknown host", path);
    return -1;
}

/* ---- sender ------------------------------------------------------------ */

struct confirm {
    int rfd;
    struct vmc_session *s;
    int timeout_ms;
    int domid;
    char msg[512];
};

static int confirm_cb(void *arg, struct vmc_ctx *ctx, const uint8_t sid[16])
{
    struct confirm *c = arg;
    int status, rc;

    rc = vmc_reply_recv(ctx, c->rfd, c->s, sid, c->timeout_ms, &status,
                        &c->domid, c->msg, sizeof(c->msg));
    if (rc < 0)
        return rc;
    if (status != 0)
        return vmc_set_error(ctx, status < 0 ? status : VMC_E_BACKEND,
                             "the receiver failed: %s", c->msg);
    return 0;
}

static int sender(struct args *a, const char *dom, const char *dest)
{
    const struct vmc_backend *be = a->backend ? vmc_backend_get(a->backend)
                                              : vmc_backend_default();
    struct vmc_keys *id = vmc_keys_new(), *known = vmc_keys_new();
    struct vmc_session *s = NULL;
    struct vmc_outfile *of = NULL;
    struct vmc_save_opts so;
    struct vmc_save_result res;
    struct confirm c = { 0 };
    struct cli_progress pr;
    char host[256], peer[VMC_RECIPIENT_STRLEN];
    int rfd = -1, wfd = -1, rc = 1;
    pid_t ssh = -1;
    uint64_t t0 = vmc_now_ns();

    if (!be) {
        char m[160];
        snprintf(m, sizeof(m), "unknown backend '%.40s' (built: %s)",
                 a->backend, vmc_backends_built());
        vmc_keys_free(id);
        vmc_keys_free(known);
        return usage(m);
    }
    if (vmc_keys_add_identity_file(a->ctx, id, a->identity ? a->identity
                                   : "/etc/vmckpt/host.key") < 0) {
        cli_ctx_err(dom, a->ctx);
        goto out;
    }
    if (!strncmp(dest, "ssh://", 6)) {
        if ((ssh = ssh_spawn(a, dest, &rfd, &wfd, host, sizeof(host))) < 0) {
            cli_err(dom, "cannot start ssh: %s", strerror(errno));
            goto out;
        }
    } else {
        if ((rfd = tcp_connect(dest, a->timeout_s, host, sizeof(host))) < 0)
            goto out;
        wfd = rfd;
    }
    if (known_key(a, host, known) < 0) {
        if (vmc_ctx_errcode(a->ctx))
            cli_ctx_err(dest, a->ctx);
        goto out;
    }
    if (vmc_live_connect(a->ctx, rfd, wfd, id, known, a->timeout_s * 1000,
                         &s) < 0) {
        cli_err(dom, "%s: %s; domain untouched", dest, cli_ctx_msg(a->ctx));
        goto out;
    }
    if (vmc_outfile_stream(a->ctx, wfd, &of) < 0) {
        cli_ctx_err(dom, a->ctx);
        goto out;
    }
    memset(&so, 0, sizeof(so));
    so.mode = VMC_SAVE_MIGRATE;
    so.live = !a->nolive;
    so.max_downtime_ms = a->max_down;
    so.max_bandwidth = a->max_bw;
    so.live_timeout_s = a->live_tmo;
    so.wopts.session = s;
    so.wopts.level = a->level;
    so.wopts.adaptive = a->level == 0;
    so.confirm = confirm_cb;
    so.confirm_arg = &c;
    c.rfd = rfd;
    c.s = s;
    c.timeout_ms = a->timeout_s * 1000;
    cli_progress_init(&pr, "migrating", 0);
    so.progress = cli_progress_cb_int;
    so.progress_arg = &pr;
    rc = vmc_save(a->ctx, be, dom, of, &so, &res);
    cli_progress_done(&pr);
    if (rc < 0) {
        char why[600];
        int status, rdom;
        snprintf(why, sizeof(why), "%s", cli_ctx_msg(a->ctx));
        /* A receiver that failed says why before it hangs up. */
        if (vmc_ctx_errcode(a->ctx) == VMC_E_IO && c.msg[0] == '\0') {
            vmc_ctx_clear(a->ctx);
            if (vmc_reply_recv(a->ctx, rfd, s, res.stream_id, 2000, &status,
                               &rdom, c.msg, sizeof(c.msg)) == 0 && status)
                snprintf(why, sizeof(why), "the receiver failed: %s", c.msg);
        }
        cli_err(dom, "%s: %s; %s", dest, why,
                res.resumed_after_error ? "the source keeps running"
                : res.domid < 0 ? "domain untouched"
                : res.lost ? "the source is lost"
                : res.state_unknown ? "the source's state could not be read: "
                                      "check it"
                : res.was_running ? "the source is NOT running: check it"
                                  : "the source is left as it was");
        rc = 1;
        goto out;
    }
    rc = 0;
    vmc_session_peer(s, peer);
    if (a->json) {
        json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:s, s:b, s:I, s:I, s:I, s:I}",
                              "domain", res.name, "domid", res.domid,
                              "destination", dest, "remote_domid", c.domid,
                              "receiver_key", peer, "live", so.live,
                              "total_time_ns", (json_int_t)(vmc_now_ns() - t0),
                              "downtime_ns", (json_int_t)res.downtime_ns,
                              "bytes_transferred", (json_int_t)res.stream_bytes,
                              "backend_bytes", (json_int_t)res.backend_bytes);
        json_object_set_new(j, "rounds", rounds_json(&res));
        json_object_set_new(j, "forced_stop", json_boolean(res.forced_stop));
        json_object_set_new(j, "level", a->level ? json_integer(a->level)
                                                 : json_string("auto"));
        json_dumpf(j, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(j);
    } else if (!cli_quiet) {            /* the metrics, on every run */
        char b[32];
        cli_human(b, sizeof(b), (double)res.stream_bytes);
        printf("%s: migrated to %s as domain %d\n", res.name, dest, c.domid);
        printf("  total time %.3f s, bytes transferred %s, downtime %.3f s\n",
               (double)(vmc_now_ns() - t0) / 1e9, b,
               (double)res.downtime_ns / 1e9);
        print_rounds(stdout, &res);
    }
out:
    vmc_outfile_free(of);
    vmc_session_free(s);
    if (rfd >= 0)
        close(rfd);
    if (wfd >= 0 && wfd != rfd)
        close(wfd);
    if (ssh > 0)
        waitpid(ssh, NULL, 0);
    vmc_keys_free(id);
    vmc_keys_free(known);
    return rc;
}

/* ---- receiver ------------------------------------------------------- */

/* One migration on rfd/wfd; logs one line to stderr. */
static int receive_one(struct args *a, int rfd, int wfd, const char *from)
{
    struct vmc_keys *id = vmc_keys_new(), *auth = vmc_keys_new();
    struct vmc_session *s = NULL;
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    struct vmc_restore_opts ro = { 0 };
    struct vmc_restore_result res;
    char peer[VMC_RECIPIENT_STRLEN] = "?";
    uint8_t sid[16];
    int rc = 1, have_sid = 0;

    vmc_ctx_clear(a->ctx);
    if (vmc_keys_add_identity_file(a->ctx, id, a->identity ? a->identity
                                   : "/etc/vmckpt/host.key") < 0 ||
        vmc_keys_add_recipients_file(a->ctx, auth, a->auth ? a->auth
                                     : "/etc/vmckpt/authorized_senders") < 0) {
        cli_ctx_err(from, a->ctx);
        goto out;
    }
    if (vmc_live_accept(a->ctx, rfd, wfd, id, auth, a->timeout_s * 1000, &s) < 0) {
        cli_ctx_err(from, a->ctx);
        goto out;
    }
    vmc_session_peer(s, peer);
    {
        struct pollfd pf = { rfd, POLLIN, 0 };
        if (poll(&pf, 1, a->timeout_s * 1000) <= 0) {
            vmc_set_error(a->ctx, VMC_E_IO, "no stream header within %d s",
                          a->timeout_s);
            goto fail;
        }
    }
    if (vmc_header_read(a->ctx, rfd, &h) < 0 ||
        vmc_header_unlock_session(a->ctx, h, s) < 0)
        goto fail;
    memcpy(sid, vmc_header_stream_id(h), 16);
    have_sid = 1;
    if (vmc_reader_new_timeout(a->ctx, rfd, h, 0, 0, a->timeout_s * 1000, &r) < 0) {
        h = NULL;
        goto fail;
    }
    h = NULL;
    if (vmc_restore(a->ctx, r, &ro, &res) < 0)
        goto fail;
    if (vmc_reply_send(a->ctx, wfd, s, sid, 0, res.domid, "running") < 0) {
        cli_err(from, "domain %s (id %d) runs, but the confirmation could not "
                "be sent: %s", res.name, res.domid, cli_ctx_msg(a->ctx));
        goto out;
    }
    fprintf(stderr, "%s: %s: received domain %s from %s as domain %d "
            "(%.3f s)\n", cli_prog, from, res.name, peer, res.domid,
            (double)res.total_ns / 1e9);
    rc = 0;
    goto out;
fail:
    {
        char msg[600];
        int code = vmc_ctx_errcode(a->ctx);
        snprintf(msg, sizeof(msg), "%s", cli_ctx_msg(a->ctx));
        cli_err(from, "from %s: %s; no domain created", peer, msg);
        if (have_sid) {
            vmc_ctx_clear(a->ctx);
            vmc_reply_send(a->ctx, wfd, s, sid, code ? code : VMC_E_BACKEND, -1,
                           msg);
        }
    }
out:
    vmc_reader_free(r);
    vmc_header_free(h);
    vmc_session_free(s);
    vmc_keys_free(id);
    vmc_keys_free(auth);
    return rc;
}

static int listener(struct args *a)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
                    *res;
    char host[256], port[32];
    int lfd, one = 1, rc;

    if (split_hostport(a->listen, host, sizeof(host), port, sizeof(port)) < 0)
        return usage("--listen wants ADDR:PORT");
    if ((rc = getaddrinfo(*host ? host : NULL, port, &hints, &res))) {
        cli_err(a->listen, "%s", gai_strerror(rc));
        return 1;
    }
    lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(lfd, res->ai_addr, res->ai_addrlen) < 0 || listen(lfd, 4) < 0) {
        cli_err(a->listen, "%s", strerror(errno));
        freeaddrinfo(res);
        return 1;
    }
    freeaddrinfo(res);
    fprintf(stderr, "%s: listening on %s\n", cli_prog, a->listen);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char from[NI_MAXHOST + NI_MAXSERV + 2], h[NI_MAXHOST], s[NI_MAXSERV];
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR && !cli_interrupted)
                continue;
            break;
        }
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(from, sizeof(from), "%s:%s", h, s);
        tune_socket(fd, a->timeout_s);
        rc = receive_one(a, fd, fd, from);
        close(fd);
        if (a->once || cli_interrupted)
            break;
    }
    close(lfd);
    return a->once ? rc : 0;
}

int main(int argc, char **argv)
{
    struct args a;
    int n;

    vmc_guard_dispatch(argc, argv);
    cli_prog = "vmmigrate";
    memset(&a, 0, sizeof(a));
    a.backend = NULL;
    a.timeout_s = 60;
    a.ctx = vmc_ctx_new();
    if (!a.ctx || vmc_init(a.ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    n = cli_parse(argc, argv, opts, 1, on_opt, &a);
    if (a.bad.set)
        return usage(a.bad.msg);
    signal(SIGPIPE, SIG_IGN);
    if (a.listen || a.receive) {
        if (argc - n)
            return usage("a receiver takes no operands");
        if (a.listen && a.receive)
            return usage("--listen and --receive exclude each other");
        cli_signals_flag();
        if (a.receive)
            return receive_one(&a, 0, 1, "stdin") ? 1 : 0;
        return listener(&a);
    }
    if (argc - n != 2)
        return usage(argc - n < 2 ? "missing DOMAIN or DEST" : "too many "
                                                              "arguments");
    cli_signals_flag();
    return sender(&a, argv[n], argv[n + 1]);
}
