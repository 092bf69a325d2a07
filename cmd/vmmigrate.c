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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "../format/vmckpt_wire.h"
#include "cli.h"

enum {
    O_LISTEN = 1000, O_RECEIVE, O_ONCE, O_KNOWN, O_RKEY, O_AUTH, O_NOLIVE,
    O_MAXBW, O_TIMEOUT, O_JSON, O_REMOTE, O_LEVEL, O_ALLOWDIR, O_TRUSTFILE,
    O_DISKS, O_ALLDISKS, O_DISKDIR, O_DISK, O_NET,
};

static const struct cli_opt opts[] = {
    { "listen", 0, "ADDR:PORT", 1, "receive migrations on this TCP address",
          O_LISTEN },
    { "receive", 0, NULL, 1, "receive one migration on stdin/stdout (ssh)",
          O_RECEIVE },
    { "once", 0, NULL, 1, "--listen: exit after one migration", O_ONCE },
    { "known-hosts", 0, "FILE", 1, "sender: 'HOST vmc1...' lines (default "
                                   "/etc/vmckpt/known_hosts)", O_KNOWN },
    { "receiver-key", 0, "PUBKEY", 1, "sender: accept only this receiver key",
          O_RKEY },
    { "authorized-senders", 0, "FILE", 1, "receiver: accepted sender keys "
                                          "(default /etc/vmckpt/authorized_senders)",
                                                O_AUTH },
    { "allow-dir", 0, "DIR", 1, "receiver: let the domain config name host "
                                "files under DIR (repeatable)", O_ALLOWDIR },
    { "disk-dir", 0, "DIR", 1, "receiver: write the disks a sender carries "
                               "into DIR (NAME-ID.raw)", O_DISKDIR },
    { "disk", 0, "ID=PATH", 1, "receiver: disk ID is at PATH on this host "
                               "(repeatable)", O_DISK },
    { "net", 0, "ID=ATTACHMENT", 1, "receiver: attach network ID to "
                                    "ATTACHMENT (repeatable)", O_NET },
    { "disks", 0, NULL, 1, "sender: carry the writable disks (no shared "
                           "storage; copied in the final pause)", O_DISKS },
    { "all-disks", 0, NULL, 1, "sender: carry read-only media (CD-ROMs) too",
          O_ALLDISKS },
    CLI_OPT_SIGNKEY(1),
    { "trusted-signer", 't', "SIGNER", 1, "receiver: accept streams this "
                                           "signer vmcs1... made (repeatable)",
          't' },
    { "trusted-signers", 0, "FILE", 1, "receiver: trusted signers (default "
                                       CLI_TRUSTED_SIGNERS_FILE ")",
          O_TRUSTFILE },
    { "no-live", 0, NULL, 1, "stop the guest first (no pre-copy)", O_NOLIVE },
    CLI_OPT_MAXDOWN(1),
    { "max-bandwidth", 0, "MIB", 1, "MiB/s limit (default none)", O_MAXBW },
    { "timeout", 0, "S", 1, "handshake, idle link, TCP send and reply timeout "
                            "(default 60)", O_TIMEOUT },
    { "json", 0, NULL, 1, "print a JSON summary", O_JSON },
    CLI_OPT_BACKEND(1),
    { "remote-command", 0, "CMD", 1, "ssh:// destination: the receiver "
                                     "command (default vmmigrate --receive)",
                                           O_REMOTE },
    { "level", 'l', "N|auto", 1, "zstd level 1..19, or auto: per chunk, "
                                "from storing up to level 1 as the link "
                                "needs (default auto)", O_LEVEL },
    CLI_OPT_LIVETMO(1),
    { "identity", 'i', "FILE", 1, "this host's identity (default "
                                  "/etc/vmckpt/host.key)", 'i' },
    { "quiet", 'q', NULL, 1, "no progress, no summary", 'q' },
    { "verbose", 'v', NULL, 1, "print the summary even when not on a tty",
          'v' },
    CLI_OPT_HELP_VERSION(1),
    { NULL, 0, NULL, 0, NULL },
};

#define SYNOPSIS                                                              \
    "usage:\tvmmigrate [options] DOMAIN HOST:PORT|ssh://[USER@]HOST[:PORT]\n"   \
    "\tvmmigrate --listen ADDR:PORT [--once] [options]\n"                      \
    "\tvmmigrate --receive [options]\n"

struct args {
    struct vmc_ctx *ctx;
    const char *listen, *identity, *known, *rkey, *auth, *remote, *disk_dir;
    int receive, once, nolive, json, verbose, timeout_s, level, disks;
    struct cli_seal seal;         /* --signing-key, --backend, live */
    struct cli_dirs dirs;
    struct cli_remaps maps;
    struct cli_trust trust;
    unsigned long long max_bw;
    struct cli_bad bad;
};

static void help(unsigned mask)
{
    (void)mask;
    printf("vmmigrate %s - live migration over the sealed stream\n\n" SYNOPSIS
           "\noptions:\n", VMC_TOOL_VERSION);
    cli_print_options(stdout, opts, 1);
    printf("\nThe receiver loads the domain paused and says READY; the "
           "source then commits\n(it stays paused from here on) and the "
           "receiver runs the domain and says\nRUNNING; only then is the "
           "source destroyed.  Before the commit any failure\nresumes the "
           "source; after it, a receiver that does not answer leaves the "
           "source\npaused (exit 3).  Backends in this build: %s.\n"
           "Exit status: 0 success, 1 failure, 2 usage, 3 outcome unknown "
           "(the source left\npaused).  See vmmigrate(1).\n",
           vmc_backends_built());
}

static void on_opt(int id, const char *arg, void *u)
{
    struct args *a = u;
    unsigned long long v = 0;

    if (cli_seal_opt(&a->seal, &a->bad, id, arg))
        return;
    switch (id) {
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
    case O_REMOTE: a->remote = arg; break;
    case O_DISKDIR:                 /* the admin's own: the policy allows it */
        a->disk_dir = arg;
        cli_dirs_add(&a->dirs, &a->bad, arg);
        break;
    case O_DISKS:
        if (a->disks < VMC_SAVE_DISKS_WRITABLE)
            a->disks = VMC_SAVE_DISKS_WRITABLE;
        break;
    case O_ALLDISKS: a->disks = VMC_SAVE_DISKS_ALL; break;
    case O_DISK: cli_remap_add(&a->maps, &a->bad, 1, arg); break;
    case O_NET: cli_remap_add(&a->maps, &a->bad, 0, arg); break;
    case O_ALLOWDIR:
        cli_dirs_add(&a->dirs, &a->bad, arg);
        break;
    case 't': cli_trust_add(&a->trust, &a->bad, arg); break;
    case O_TRUSTFILE: a->trust.file = arg; break;
    case O_MAXBW:
        if (cli_parse_uint(arg, 1000000, &v) || v < 1)
            cli_bad_set(&a->bad, "bad --max-bandwidth '%s' (MiB/s)", arg);
        a->max_bw = v << 20;
        break;
    case O_TIMEOUT:
        a->timeout_s = (int)cli_uint_arg(&a->bad, arg, 1, 86400,
                                  "bad --timeout '%s' (seconds)");
        break;
    case O_LEVEL:
        a->level = strcmp(arg, "auto") ? (int)cli_uint_arg(&a->bad, arg, 1, 19,
                                         "bad --level '%s' (1..19 or auto)") : 0;
        break;
    }
}

/* The receiver's pinned key: --receiver-key, or its known_hosts entry. */
static int known_key(struct args *a, const char *host, struct vmc_keys *known)
{
    const char *path = a->known ? a->known : "/etc/vmckpt/known_hosts";
    int rc;

    rc = a->rkey ? vmc_keys_add_recipient(a->ctx, known, a->rkey)
                 : vmc_known_hosts_find(a->ctx, path, host, known);
    if (rc == 0)
        return 0;
    if (!a->rkey && rc == VMC_E_IO)         /* the file itself */
        cli_err(NULL, "%s (give --known-hosts or --receiver-key)",
                cli_ctx_msg(a->ctx));
    else if (!a->rkey && rc == VMC_E_KEY)   /* no line for this host */
        cli_err(host, "no entry in %s: refusing to migrate to an unknown host",
                path);
    else
        cli_ctx_err(host, a->ctx);
    return rc;
}

/* ---- sender ------------------------------------------------------------ */

static void sent_json(const struct args *a, const char *dest,
                      const struct vmc_save_result *res,
                      const struct cli_rounds *rounds,
                      const struct vmc_migrate_info *mi, int live, uint64_t t0)
{
    json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:s, s:b, s:I, s:I, s:I, s:I}",
                          "domain", res->name, "domid", res->domid,
                          "destination", dest, "remote_domid", mi->remote_domid,
                          "receiver_key", mi->peer, "live", live,
                          "total_time_ns", (json_int_t)(vmc_now_ns() - t0),
                          "downtime_ns", (json_int_t)res->downtime_ns,
                          "bytes_transferred", (json_int_t)res->stream_bytes,
                          "backend_bytes", (json_int_t)res->backend_bytes);

    json_object_set_new(j, "rounds", rounds_json(rounds));
    /* the name every tool uses ("bytes_transferred": kept) */
    json_object_set_new(j, "stream_bytes",
                        json_integer((json_int_t)res->stream_bytes));
    json_object_set_new(j, "forced_stop", json_boolean(res->forced_stop));
    json_object_set_new(j, "disks_carried", json_integer(res->disks_carried));
    json_object_set_new(j, "disk_bytes", json_integer((json_int_t)res->disk_bytes));
    json_object_set_new(j, "disk_time_ns", json_integer((json_int_t)res->disk_ns));
    json_object_set_new(j, "level", a->level ? json_integer(a->level)
                                             : json_string("auto"));
    json_dumpf(j, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(j);
}

static int sender(struct args *a, const char *dom, const char *dest)
{
    const struct vmc_backend *be;
    struct vmc_keys *id = NULL, *known = NULL;
    struct vmc_endpoint *e = NULL;
    struct vmc_save_opts so;
    struct vmc_save_result res;
    struct vmc_migrate_info mi;
    struct cli_progress pr;
    struct cli_rounds rounds = { 0 };
    int rc = 1;
    uint64_t t0 = vmc_now_ns();

    if (cli_seal_backend(&a->seal, &be))
        return 2;
    id = vmc_keys_new();
    known = vmc_keys_new();
    if (vmc_keys_add_identity_file(a->ctx, id, a->identity ? a->identity
                                   : "/etc/vmckpt/host.key") < 0) {
        cli_ctx_err(dom, a->ctx);
        goto out;
    }
    if (cli_signing_load(a->ctx, id, a->seal.sign_key) < 0)
        goto out;
    {   /* the receiver's key is known before anything runs over there */
        char host[256];
        if (vmc_endpoint_host_of(a->ctx, dest, host, sizeof(host)) < 0) {
            cli_ctx_err(dest, a->ctx);
            goto out;
        }
        if (known_key(a, host, known) < 0)
            goto out;
    }
    if (vmc_endpoint_dial(a->ctx, dest, a->remote ? a->remote
                          : "vmmigrate --receive", a->timeout_s, &e) < 0) {
        cli_ctx_err(dest, a->ctx);
        goto out;
    }
    memset(&so, 0, sizeof(so));
    cli_seal_save_opts(&a->seal, &so);
    so.live = !a->nolive;
    so.max_bandwidth = a->max_bw;
    so.wopts.level = a->level;
    so.wopts.adaptive = a->level == 0;
    so.keys = id;                   /* signs the session stream */
    so.disks = a->disks;
    cli_progress_init(&pr, "migrating", 0);
    so.progress = cli_progress_cb_int;
    so.progress_arg = &pr;
    so.expect = cli_progress_expect;
    so.round = cli_rounds_add;
    so.round_arg = &rounds;
    rc = vmc_migrate_send(a->ctx, be, dom, vmc_endpoint_rfd(e),
                          vmc_endpoint_wfd(e), id, known, a->timeout_s * 1000,
                          &so, &res, &mi);
    cli_progress_done(&pr);
    if (rc < 0 && res.outcome_unknown) {
        /* committed: neither copy may be lost, at most one may run */
        int xen = be == vmc_backend_get("xen");
        cli_err(dom, "%s: %s; domain %d is left PAUSED here: if it runs on the "
                "receiver, destroy it here (%s %d), else resume it here (%s %d)",
                dest, cli_ctx_msg(a->ctx), res.domid,
                xen ? "xl destroy" : "vmctl destroy", res.domid,
                xen ? "xl unpause" : "vmctl resume", res.domid);
        rc = 3;
        goto out;
    }
    if (rc < 0) {
        cli_err(dom, "%s: %s; %s", dest, cli_ctx_msg(a->ctx),
                mi.handshake_failed || res.domid < 0 ? "domain untouched"
                : res.resumed_after_error ? "the source keeps running"
                : res.lost ? "the source is lost"
                : res.state_unknown ? "the source's state could not be read: "
                                      "check it"
                : res.was_running ? "the source is NOT running: check it"
                                  : "the source is left as it was");
        rc = 1;
        goto out;
    }
    rc = 0;
    if (a->json) {
        sent_json(a, dest, &res, &rounds, &mi, so.live, t0);
    } else if (!cli_quiet) {            /* the metrics, on every run */
        char b[32];
        cli_human(b, sizeof(b), (double)res.stream_bytes);
        printf("%s: migrated to %s as domain %d\n", res.name, dest,
               mi.remote_domid);
        printf("  total time %.3f s, bytes transferred %s, downtime %.3f s\n",
               (double)(vmc_now_ns() - t0) / 1e9, b,
               (double)res.downtime_ns / 1e9);
        if (res.disks_carried) {
            cli_human(b, sizeof(b), (double)res.disk_bytes);
            printf("  disks: %d carried (%s) in %.3f s, inside the downtime\n",
                   res.disks_carried, b, (double)res.disk_ns / 1e9);
        }
        print_rounds(stdout, &rounds);
    }
out:
    cli_rounds_free(&rounds);
    vmc_endpoint_free(e);
    vmc_keys_free(id);
    vmc_keys_free(known);
    return rc;
}

/* ---- receiver ------------------------------------------------------- */

/* A connection that never got past the handshake (a stranger, a peer
 * that stalled or could not prove its key): --once waits on. */
#define RECV_STRANGER 3
/* Connections handled at once; more are closed at once. */
#define RECV_MAX 4

/* One migration on rfd/wfd; logs one line to stderr. */
static int receive_one(struct args *a, int rfd, int wfd, const char *from)
{
    struct vmc_keys *id = vmc_keys_new(), *auth = vmc_keys_new();
    struct vmc_restore_opts ro = { 0 };
    struct vmc_restore_result res;
    struct vmc_migrate_info mi;
    struct vmc_policy *pol = NULL;
    int rc = 1;

    vmc_ctx_clear(a->ctx);
    if (!(ro.policy = pol = cli_policy(a->ctx, &a->dirs)))
        goto out;
    ro.disk_dir = a->disk_dir;
    cli_remaps_to(&a->maps, &ro);
    if (vmc_keys_add_identity_file(a->ctx, id, a->identity ? a->identity
                                   : "/etc/vmckpt/host.key") < 0 ||
        vmc_keys_add_recipients_file(a->ctx, auth, a->auth ? a->auth
                                     : "/etc/vmckpt/authorized_senders") < 0) {
        cli_ctx_err(from, a->ctx);
        goto out;
    }
    if (cli_trust_load(a->ctx, auth, &a->trust) < 0)
        goto out;
    if (vmc_migrate_receive(a->ctx, rfd, wfd, id, auth, a->timeout_s * 1000,
                            &ro, &res, &mi) == 0) {
        fprintf(stderr, "%s: %s: received domain %s from %s as domain %d "
                "(%.3f s)", cli_prog, from, res.name, mi.peer, res.domid,
                (double)res.total_ns / 1e9);
        if (res.disks_written)
            fprintf(stderr, ", %d disk%s written", res.disks_written,
                    res.disks_written == 1 ? "" : "s");
        fprintf(stderr, "\n");
        rc = 0;
    } else if (mi.handshake_failed) {
        cli_ctx_err(from, a->ctx);
        rc = RECV_STRANGER;
    } else if (mi.unconfirmed) {
        cli_err(from, "domain %s (id %d) runs here, but RUNNING could not be "
                "sent (%s): the sender keeps its copy PAUSED; destroy it there",
                res.name, res.domid, cli_ctx_msg(a->ctx));
    } else if (res.left_running) {
        cli_err(from, "domain %s (id %d) from %s runs here, but: %s", res.name,
                res.domid, mi.peer, cli_ctx_msg(a->ctx));
    } else {
        cli_err(from, "from %s: %s; no domain created", mi.peer,
                cli_ctx_msg(a->ctx));
    }
out:
    vmc_policy_free(pol);
    vmc_keys_free(id);
    vmc_keys_free(auth);
    return rc;
}

static void on_child(int sig)
{
    (void)sig;                      /* only to interrupt accept() */
}

/* Reaps finished connections; with --once, *done gets the status of the
 * first one that got past its handshake. */
static void reap(pid_t *kids, int *nkids, int *done)
{
    for (int i = 0; i < *nkids;) {
        int st;
        if (waitpid(kids[i], &st, WNOHANG) != kids[i]) {
            i++;
            continue;
        }
        if (*done < 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == RECV_STRANGER))
            *done = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        kids[i] = kids[--*nkids];
    }
}

/* Serves each connection in a process of its own, at most RECV_MAX at a
 * time, each handshake within --timeout in all: a peer that stalls or
 * trickles holds one place for that long and delays no one else. */
static int listener(struct args *a)
{
    struct sigaction sa = { .sa_handler = on_child };
    pid_t kids[RECV_MAX];
    int lfd, nkids = 0, done = -1;

    if (vmc_endpoint_listen(a->ctx, a->listen, &lfd) < 0) {
        if (vmc_ctx_errcode(a->ctx) == VMC_E_INVAL)
            return cli_usage("--listen wants ADDR:PORT");
        cli_ctx_err(a->listen, a->ctx);
        return 1;
    }
    sigaction(SIGCHLD, &sa, NULL);  /* no SA_RESTART: accept() returns */
    fprintf(stderr, "%s: listening on %s\n", cli_prog, a->listen);
    for (;;) {
        char from[NI_MAXHOST + NI_MAXSERV + 2] = "?";
        int fd;
        pid_t pid;

        reap(kids, &nkids, &done);
        if (cli_interrupted || (a->once && done >= 0))
            break;
        vmc_ctx_clear(a->ctx);
        if (vmc_endpoint_accept(a->ctx, lfd, a->timeout_s, &fd, from,
                                sizeof(from)) < 0) {
            if (vmc_ctx_errcode(a->ctx) == VMC_E_CANCELED && !cli_interrupted)
                continue;
            break;
        }
        if (nkids == RECV_MAX) {
            cli_err(from, "%d connections already being served: closed",
                    RECV_MAX);
            close(fd);
            continue;
        }
        if ((pid = fork()) < 0) {
            cli_err(from, "fork: %s", strerror(errno));
            close(fd);
            continue;
        }
        if (pid == 0) {
            /* killing the receiver kills what it is receiving (the
             * restore's guardian then removes the half-built domain) */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1)
                _exit(1);
            signal(SIGCHLD, SIG_DFL);
            close(lfd);
            _exit(receive_one(a, fd, fd, from));
        }
        kids[nkids++] = pid;
        close(fd);
    }
    close(lfd);
    reap(kids, &nkids, &done);
    if (nkids)                          /* strangers still in a handshake */
        fprintf(stderr, "%s: %d unfinished connection%s closed\n", cli_prog,
                nkids, nkids == 1 ? "" : "s");
    for (int i = 0; i < nkids; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    return a->once ? (done >= 0 ? done : 1) : 0;
}

int main(int argc, char **argv)
{
    struct args a;
    const char *why;
    int n;

    cli_begin(argc, argv, "vmmigrate", help, SYNOPSIS);
    memset(&a, 0, sizeof(a));
    cli_seal_init(&a.seal);
    a.timeout_s = 60;
    a.ctx = vmc_ctx_new();
    if (!a.ctx || vmc_init(a.ctx) < 0) {
        cli_err(NULL, "cannot initialise");
        return 1;
    }
    n = cli_parse(argc, argv, opts, 1, 0, on_opt, &a, &a.bad);
    if (a.bad.set)
        return cli_usage(a.bad.msg);
    signal(SIGPIPE, SIG_IGN);
    if (a.listen || a.receive) {
        if (argc - n)
            return cli_usage("a receiver takes no operands");
        if (a.listen && a.receive)
            return cli_usage("--listen and --receive exclude each other");
        if (a.disks)
            return cli_usage("--disks is the sender's (a receiver takes "
                             "--disk-dir)");
        if (a.disk_dir && !cli_disk_dir_ok(a.disk_dir))
            return 1;
        cli_signals_flag();
        if (a.receive)
            return receive_one(&a, 0, 1, "stdin") ? 1 : 0;
        return listener(&a);
    }
    if (argc - n != 2)
        return cli_usage(argc - n < 2 ? "missing DOMAIN or DEST" : "too many "
                                                              "arguments");
    if (a.disk_dir || a.maps.ndisk || a.maps.nnet)
        return cli_usage(a.disk_dir ? "--disk-dir is the receiver's (a sender "
                         "takes --disks)" : "--disk and --net are the "
                         "receiver's");
    if ((why = cli_seal_problem(&a.seal, !a.nolive,
                                "%s and --no-live exclude each other")))
        return cli_usage(why);
    cli_signals_flag();
    return sender(&a, argv[n], argv[n + 1]);
}
