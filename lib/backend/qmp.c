/*
 * qmp.c - a small QMP client (QEMU Machine Protocol: JSON lines over a
 * unix socket), with jansson for the JSON and SCM_RIGHTS for getfd.
 * Errors are translated here, once: "qmp migrate: GenericError: ...".
 *
 * Owns: the QMP socket, its greeting, commands, events and replies.
 * Must not: know what a save or a restore is.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"

struct qmp {
    int fd;
    char *buf;
    size_t len, cap;
    struct qmp_event ev[QMP_MAX_EVENTS];
    int nev;
};

static int64_t ts_us(json_t *ts)
{
    json_t *s = json_object_get(ts, "seconds");
    json_t *u = json_object_get(ts, "microseconds");

    if (!json_is_integer(s) || !json_is_integer(u))
        return 0;
    return json_integer_value(s) * 1000000 + json_integer_value(u);
}

/* Next JSON line, within timeout_ms (negative = forever). */
static int read_msg(struct vmc_ctx *ctx, struct qmp *q, int timeout_ms, json_t **out)
{
    *out = NULL;
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            json_error_t je;
            size_t l = (size_t)(nl - q->buf) + 1;
            json_t *j = json_loadb(q->buf, l - 1, 0, &je);
            memmove(q->buf, q->buf + l, q->len - l);
            q->len -= l;
            if (!j)
                return vmc_set_error(ctx, VMC_E_BACKEND,
                                     "qmp: malformed reply: %s", je.text);
            *out = j;
            return 0;
        }
        if (q->cap - q->len < 4096) {
            size_t nc = q->cap ? q->cap * 2 : 65536;
            char *nb;
            if (nc > (64u << 20) || !(nb = realloc(q->buf, nc)))
                return vmc_set_error(ctx, VMC_E_BACKEND,
                                     "qmp: reply too large");
            q->buf = nb;
            q->cap = nc;
        }
        {
            struct pollfd pf = { q->fd, POLLIN, 0 };
            int r = poll(&pf, 1, timeout_ms);
            ssize_t n;
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                return vmc_set_error(ctx, VMC_E_BACKEND,
                                     "qmp: no answer from QEMU in %d ms",
                                     timeout_ms);
            n = read(q->fd, q->buf + q->len, q->cap - q->len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return vmc_set_error(ctx, VMC_E_BACKEND,
                                     "qmp: QEMU closed the connection%s%s",
                                     n < 0 ? ": " : "",
                                     n < 0 ? strerror(errno) : "");
            q->len += (size_t)n;
        }
    }
}

static void note_event(struct qmp *q, json_t *j)
{
    const char *name = json_string_value(json_object_get(j, "event"));

    if (!name || q->nev == QMP_MAX_EVENTS)
        return;
    snprintf(q->ev[q->nev].name, sizeof(q->ev[0].name), "%s", name);
    q->ev[q->nev].ts_us = ts_us(json_object_get(j, "timestamp"));
    q->nev++;
}

static int send_line(struct vmc_ctx *ctx, struct qmp *q, json_t *msg, int fd)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    size_t l;
    int rc = 0;

    if (!s)
        return vmc_set_error(ctx, VMC_E_NOMEM, "qmp: out of memory");
    l = strlen(s);
    {
        char *t = realloc(s, l + 2);
        if (!t) {
            free(s);
            return vmc_set_error(ctx, VMC_E_NOMEM, "qmp: out of memory");
        }
        s = t;
    }
    s[l++] = '\n';
    s[l] = '\0';
    if (fd >= 0) {
        struct msghdr mh = { 0 };
        struct iovec iov = { s, l };
        union {
            char b[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct cmsghdr *c;
        ssize_t n;

        memset(&cm, 0, sizeof(cm));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cm.b;
        mh.msg_controllen = sizeof(cm.b);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        do
            n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            rc = VMC_E_IO;
        else if ((size_t)n < l)
            rc = write_all_nosig(q->fd, s + n, l - (size_t)n);
    } else {
        rc = write_all_nosig(q->fd, s, l);
    }
    free(s);
    if (rc < 0)
        return vmc_set_error(ctx, VMC_E_BACKEND, "qmp: send: %s",
                             strerror(errno));
    return 0;
}


int qmp_exec_fd(struct vmc_ctx *ctx, struct qmp *q, const char *cmd,
                json_t *args, int fd, json_t **ret)
{
    json_t *msg = json_object(), *j = NULL;
    int rc;

    if (ret)
        *ret = NULL;
    json_object_set_new(msg, "execute", json_string(cmd));
    if (args)
        json_object_set(msg, "arguments", args);
    rc = send_line(ctx, q, msg, fd);
    json_decref(msg);
    json_decref(args);
    if (rc < 0)
        return rc;
    for (;;) {
        json_t *r, *e;
        if ((rc = read_msg(ctx, q, 30000, &j)) < 0)
            return vmc_set_error(ctx, rc, "qmp %s: %s", cmd,
                                 vmc_ctx_error(ctx));
        if (json_object_get(j, "event")) {
            note_event(q, j);
            json_decref(j);
            continue;
        }
        if ((r = json_object_get(j, "return"))) {
            if (ret)
                *ret = json_incref(r);
            json_decref(j);
            return 0;
        }
        if ((e = json_object_get(j, "error"))) {
            const char *cls = json_string_value(json_object_get(e, "class"));
            const char *desc = json_string_value(json_object_get(e, "desc"));
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "qmp %s: %s: %s", cmd,
                               cls ? cls : "Error", desc ? desc : "?");
            json_decref(j);
            return rc;
        }
        json_decref(j);             /* greeting or something unknown */
    }
}

int qmp_exec(struct vmc_ctx *ctx, struct qmp *q, const char *cmd, json_t *args,
             json_t **ret)
{
    return qmp_exec_fd(ctx, q, cmd, args, -1, ret);
}

int qmp_connect(struct vmc_ctx *ctx, const char *path, int timeout_ms,
                struct qmp **out)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct qmp *q = calloc(1, sizeof(*q));
    uint64_t deadline = vmc_now_ns() + (uint64_t)timeout_ms * 1000000u;
    json_t *greet = NULL;
    int rc;

    *out = NULL;
    if (!q)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    q->fd = -1;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        free(q);
        return vmc_set_error(ctx, VMC_E_INVAL, "%s: socket path too long", path);
    }
    strcpy(sa.sun_path, path);
    for (;;) {
        q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (q->fd < 0) {
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "socket: %s", strerror(errno));
            goto fail;
        }
        if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        rc = errno;
        close(q->fd);
        q->fd = -1;
        if (vmc_now_ns() >= deadline) {
            errno = rc;
            rc = vmc_set_error(ctx, VMC_E_BACKEND, "%s: cannot connect: %s",
                               path, strerror(errno));
            goto fail;
        }
        usleep(20000);
    }
    /* QMP serves one client at a time: a second one gets its greeting
     * only when the first leaves.  Wait for it within the timeout. */
    if ((rc = read_msg(ctx, q, timeout_ms, &greet)) < 0 ||
        !json_object_get(greet, "QMP")) {
        json_decref(greet);
        vmc_ctx_clear(ctx);
        rc = vmc_set_error(ctx, VMC_E_BACKEND,
                           "%s: no QMP greeting (is another client connected?)",
                           path);
        goto fail;
    }
    json_decref(greet);
    if ((rc = qmp_exec(ctx, q, "qmp_capabilities", NULL, NULL)) < 0)
        goto fail;
    *out = q;
    return 0;
fail:
    qmp_close(q);
    return rc;
}

int qmp_wait_event(struct vmc_ctx *ctx, struct qmp *q, const char *name,
                   int timeout_ms, int64_t *ts_us_out)
{
    uint64_t deadline = vmc_now_ns() + (uint64_t)timeout_ms * 1000000u;

    for (;;) {
        json_t *j;
        int rc, left;
        for (int i = 0; i < q->nev; i++)
            if (!strcmp(q->ev[i].name, name)) {
                if (ts_us_out)
                    *ts_us_out = q->ev[i].ts_us;
                return 0;
            }
        left = (int)(((int64_t)deadline - (int64_t)vmc_now_ns()) / 1000000);
        if (left <= 0)
            return vmc_set_error(ctx, VMC_E_BACKEND,
                                 "qmp: no %s event in %d ms", name, timeout_ms);
        if ((rc = read_msg(ctx, q, left, &j)) < 0)
            return rc;
        if (json_object_get(j, "event"))
            note_event(q, j);
        json_decref(j);
    }
}

const struct qmp_event *qmp_find_event(const struct qmp *q, const char *name,
                                       int last)
{
    const struct qmp_event *found = NULL;

    for (int i = 0; i < q->nev; i++)
        if (!strcmp(q->ev[i].name, name)) {
            found = &q->ev[i];
            if (!last)
                break;
        }
    return found;
}

void qmp_clear_events(struct qmp *q)
{
    q->nev = 0;
}

void qmp_close(struct qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->buf);
    free(q);
}

int64_t qmp_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
