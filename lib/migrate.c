/*
 * migrate.c - the two ends of a live migration over the engine and the
 * live path (format/vmckpt-stream.md, "Live path"):
 *
 * Send:    handshake (we must know the receiver's key), the save in
 *          VMC_SAVE_MIGRATE mode sealed to the session, and the commit
 *          only once the receiver's REPLY says the new domain runs; a
 *          receiver that fails says why before it hangs up.
 * Receive: handshake (the sender must be authorised), the session header,
 *          the restore, and the REPLY: the new domain, or the error.
 *
 * Owns: the order of that exchange.  Must not: dial or listen (io/
 * endpoint.c), or print.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct confirm {
    int rfd;
    struct vmc_session *s;
    int timeout_ms;
    int domid;
    char msg[512];
};

/* The engine's confirm: the receiver's REPLY, after the final chunk. */
static int confirm_reply(void *arg, struct vmc_ctx *ctx, const uint8_t sid[16])
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

int vmc_migrate_send(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec, int rfd, int wfd,
                     const struct vmc_keys *id, const struct vmc_keys *known,
                     int timeout_ms, const struct vmc_save_opts *opts,
                     struct vmc_save_result *res, struct vmc_migrate_info *mi)
{
    struct vmc_save_opts so = *opts;
    struct vmc_session *s = NULL;
    struct vmc_outfile *of = NULL;
    struct confirm c = { rfd, NULL, timeout_ms, -1, "" };
    int rc;

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    memset(mi, 0, sizeof(*mi));
    mi->remote_domid = -1;
    if ((rc = vmc_live_connect(ctx, rfd, wfd, id, known, timeout_ms, &s)) < 0) {
        mi->handshake_failed = 1;
        return rc;
    }
    vmc_session_peer(s, mi->peer);
    if ((rc = vmc_outfile_stream(ctx, wfd, &of)) < 0)
        goto out;
    c.s = s;
    so.mode = VMC_SAVE_MIGRATE;
    so.wopts.session = s;
    so.confirm = confirm_reply;
    so.confirm_arg = &c;
    rc = vmc_save(ctx, be, spec, of, &so, res);
    if (rc < 0 && vmc_ctx_errcode(ctx) == VMC_E_IO && !c.msg[0]) {
        /* The link broke: a receiver that failed says why first. */
        struct vmc_ctx tmp = { 0 };
        int status, rdom;
        if (vmc_reply_recv(&tmp, rfd, s, res->stream_id, 2000, &status, &rdom,
                           c.msg, sizeof(c.msg)) == 0 && status) {
            vmc_ctx_clear(ctx);
            vmc_set_error(ctx, status < 0 ? status : VMC_E_BACKEND,
                          "the receiver failed: %s", c.msg);
        }
    }
    mi->remote_domid = c.domid;
out:
    vmc_outfile_free(of);
    vmc_session_free(s);
    return rc;
}

/* The session header within timeout_ms, then the restore. */
static int receive_stream(struct vmc_ctx *ctx, int rfd, struct vmc_session *s,
                          const struct vmc_keys *trust, int timeout_ms, const struct vmc_restore_opts *ro,
                          struct vmc_restore_result *res, uint8_t sid[16],
                          int *have_sid)
{
    struct pollfd pf = { rfd, POLLIN, 0 };
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    int rc;

    if (poll(&pf, 1, timeout_ms) <= 0)
        return vmc_set_error(ctx, VMC_E_IO, "no stream header within %d s",
                             timeout_ms / 1000);
    if ((rc = vmc_header_read(ctx, rfd, &h)) < 0 ||
        (rc = vmc_header_unlock_session(ctx, h, s, trust)) < 0) {
        vmc_header_free(h);
        return rc;
    }
    memcpy(sid, vmc_header_stream_id(h), 16);
    *have_sid = 1;
    if ((rc = vmc_reader_new_timeout(ctx, rfd, h, 0, 0, timeout_ms, &r)) < 0)
        return rc;
    rc = vmc_restore(ctx, r, ro, res);
    vmc_reader_free(r);
    return rc;
}

int vmc_migrate_receive(struct vmc_ctx *ctx, int rfd, int wfd,
                        const struct vmc_keys *id, const struct vmc_keys *auth,
                        int timeout_ms, const struct vmc_restore_opts *ro,
                        struct vmc_restore_result *res,
                        struct vmc_migrate_info *mi)
{
    struct vmc_session *s = NULL;
    uint8_t sid[16];
    int rc, have_sid = 0;

    memset(res, 0, sizeof(*res));
    res->domid = -1;
    memset(mi, 0, sizeof(*mi));
    mi->remote_domid = -1;
    snprintf(mi->peer, sizeof(mi->peer), "?");
    if ((rc = vmc_live_accept(ctx, rfd, wfd, id, auth, timeout_ms, &s)) < 0) {
        mi->handshake_failed = 1;
        return rc;
    }
    vmc_session_peer(s, mi->peer);
    rc = receive_stream(ctx, rfd, s, auth, timeout_ms, ro, res, sid, &have_sid);
    if (rc == 0) {
        if ((rc = vmc_reply_send(ctx, wfd, s, sid, 0, res->domid,
                                 "running")) < 0)
            mi->unconfirmed = 1;        /* the domain runs regardless */
    } else if (have_sid) {
        struct vmc_ctx tmp = { 0 };
        int code = vmc_ctx_errcode(ctx);
        vmc_reply_send(&tmp, wfd, s, sid, code ? code : VMC_E_BACKEND, -1,
                       vmc_ctx_error(ctx));
    }
    vmc_session_free(s);
    return rc;
}
