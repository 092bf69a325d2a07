/*
 * endpoint.c - the two ends of a migration link: dialing a receiver
 * (HOST:PORT over TCP, or ssh://[USER@]HOST[:PORT] running the receiver
 * through ssh(1)), listening and accepting, and the known_hosts file that
 * pins each receiver's key.
 *
 * Owns: sockets, their options, the ssh child.  Must not: speak the live
 * protocol (live.c) or print (the tool names the endpoint in its errors).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

struct vmc_endpoint {
    int rfd, wfd;
    pid_t ssh;
    char host[256];
};

/* Splits HOST:PORT / [V6]:PORT. */
static int split_hostport(const char *s, char *host, size_t hcap, char *port,
                          size_t pcap)
{
    const char *colon;

    if (*s == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':')
            return VMC_E_INVAL;
        snprintf(host, hcap, "%.*s", (int)(e - s - 1), s + 1);
        snprintf(port, pcap, "%s", e + 2);
    } else {
        if (!(colon = strrchr(s, ':')))
            return VMC_E_INVAL;
        snprintf(host, hcap, "%.*s", (int)(colon - s), s);
        snprintf(port, pcap, "%s", colon + 1);
    }
    return *port ? 0 : VMC_E_INVAL;
}

/* ssh://[USER@]HOST[:PORT] into user@host and port; the user and host are
 * names or addresses only (never an ssh option, a space or a shell
 * character): what ssh is given is exactly what known_hosts is asked. */
static int split_ssh(struct vmc_ctx *ctx, const char *dest, char *userhost,
                     size_t un, char *port, size_t pn, char *host, size_t hn)
{
    const char *p = dest + 6, *colon = strrchr(p, ':'), *at;

    port[0] = '\0';
    if (colon && !strchr(colon, ']')) {
        snprintf(userhost, un, "%.*s", (int)(colon - p), p);
        snprintf(port, pn, "%s", colon + 1);
    } else {
        snprintf(userhost, un, "%s", p);
    }
    at = strchr(userhost, '@');
    snprintf(host, hn, "%s", at ? at + 1 : userhost);
    if (!userhost[0] || userhost[0] == '-' || !host[0] || host[0] == '-' ||
        strspn(userhost, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789._-@[]:") != strlen(userhost) ||
        (at && strchr(at + 1, '@')) ||
        strspn(port, "0123456789") != strlen(port))
        return vmc_set_error(ctx, VMC_E_INVAL, "not ssh://[USER@]HOST[:PORT]");
    return 0;
}

int vmc_endpoint_host_of(struct vmc_ctx *ctx, const char *dest, char *host,
                         size_t n)
{
    char uh[256], port[32];

    if (!strncmp(dest, "ssh://", 6))
        return split_ssh(ctx, dest, uh, sizeof(uh), port, sizeof(port), host, n);
    if (split_hostport(dest, host, n, port, sizeof(port)) < 0)
        return vmc_set_error(ctx, VMC_E_INVAL, "not HOST:PORT or ssh://HOST");
    return 0;
}

/* No Nagle; a cut link fails writes instead of blocking for minutes. */
static void tune_socket(int fd, int timeout_s)
{
    int one = 1;
    unsigned tmo = (unsigned)timeout_s * 1000;
    struct timeval tv = { timeout_s, 0 };

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &tmo, sizeof(tmo));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static int tcp_dial(struct vmc_ctx *ctx, struct vmc_endpoint *e,
                    const char *dest, int timeout_s)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    char port[32];
    int fd = -1, rc, err = 0;

    if (split_hostport(dest, e->host, sizeof(e->host), port, sizeof(port)) < 0)
        return vmc_set_error(ctx, VMC_E_INVAL, "not HOST:PORT or ssh://HOST");
    if ((rc = getaddrinfo(e->host, port, &hints, &res)))
        return vmc_set_error(ctx, VMC_E_IO, "%s", gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        tune_socket(fd, timeout_s);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = err;
        return vmc_set_error(ctx, VMC_E_IO, "cannot connect: %s", strerror(err));
    }
    e->rfd = e->wfd = fd;
    return 0;
}

static int ssh_dial(struct vmc_ctx *ctx, struct vmc_endpoint *e,
                    const char *dest, const char *remote_cmd)
{
    char userhost[256], port[32] = "";
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, rc;

    if ((rc = split_ssh(ctx, dest, userhost, sizeof(userhost), port,
                        sizeof(port), e->host, sizeof(e->host))) < 0)
        return rc;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        int err = errno;
        close(in[0]);
        close(in[1]);
        return vmc_set_error(ctx, VMC_E_IO, "pipe: %s", strerror(err));
    }
    if ((e->ssh = fork()) < 0) {
        int err = errno;
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return vmc_set_error(ctx, VMC_E_IO, "cannot start ssh: %s",
                             strerror(err));
    }
    if (e->ssh == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (*port)
            execlp("ssh", "ssh", "-e", "none", "-p", port, "--", userhost,
                   remote_cmd, (char *)NULL);
        else
            execlp("ssh", "ssh", "-e", "none", "--", userhost, remote_cmd,
                   (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    e->wfd = in[1];
    e->rfd = out[0];
    return 0;
}

int vmc_endpoint_dial(struct vmc_ctx *ctx, const char *dest,
                      const char *remote_cmd, int timeout_s,
                      struct vmc_endpoint **out)
{
    struct vmc_endpoint *e = calloc(1, sizeof(*e));
    int rc;

    *out = NULL;
    if (!e)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    e->rfd = e->wfd = -1;
    e->ssh = -1;
    rc = strncmp(dest, "ssh://", 6) ? tcp_dial(ctx, e, dest, timeout_s)
                                    : ssh_dial(ctx, e, dest, remote_cmd);
    if (rc < 0) {
        vmc_endpoint_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

int vmc_endpoint_rfd(const struct vmc_endpoint *e)
{
    return e->rfd;
}

int vmc_endpoint_wfd(const struct vmc_endpoint *e)
{
    return e->wfd;
}

const char *vmc_endpoint_host(const struct vmc_endpoint *e)
{
    return e->host;
}

void vmc_endpoint_free(struct vmc_endpoint *e)
{
    if (!e)
        return;
    if (e->rfd >= 0)
        close(e->rfd);
    if (e->wfd >= 0 && e->wfd != e->rfd)
        close(e->wfd);
    if (e->ssh > 0)
        waitpid(e->ssh, NULL, 0);
    free(e);
}

int vmc_endpoint_listen(struct vmc_ctx *ctx, const char *addr, int *lfd)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
                    *res;
    char host[256], port[32];
    int fd, one = 1, rc;

    *lfd = -1;
    if (split_hostport(addr, host, sizeof(host), port, sizeof(port)) < 0)
        return vmc_set_error(ctx, VMC_E_INVAL, "not ADDR:PORT");
    if ((rc = getaddrinfo(*host ? host : NULL, port, &hints, &res)))
        return vmc_set_error(ctx, VMC_E_IO, "%s", gai_strerror(rc));
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4) < 0) {
        rc = vmc_set_error(ctx, VMC_E_IO, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return rc;
    }
    freeaddrinfo(res);
    *lfd = fd;
    return 0;
}

int vmc_endpoint_accept(struct vmc_ctx *ctx, int lfd, int timeout_s, int *fd,
                        char *from, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char h[NI_MAXHOST], s[NI_MAXSERV];

    if ((*fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC)) < 0)
        return vmc_set_error(ctx, errno == EINTR ? VMC_E_CANCELED : VMC_E_IO,
                             "accept: %s", strerror(errno));
    if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(from, n, "?");
    else
        snprintf(from, n, "%s:%s", h, s);
    tune_socket(*fd, timeout_s);
    return 0;
}

int vmc_known_hosts_find(struct vmc_ctx *ctx, const char *path,
                         const char *host, struct vmc_keys *keys)
{
    char line[512];
    FILE *f;

    if (!(f = fopen(path, "re")))
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char h[256], k[128];
        if (line[0] == '#' || sscanf(line, "%255s %127s", h, k) != 2)
            continue;
        if (!strcmp(h, host)) {
            fclose(f);
            return vmc_keys_add_recipient(ctx, keys, k);
        }
    }
    fclose(f);
    return vmc_set_error(ctx, VMC_E_KEY, "no entry for %s in %s: refusing an "
                         "unknown host", host, path);
}
