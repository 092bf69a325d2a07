/*
 * migrate.c - the two ends of a live migration over the engine and the
 * live path (format/vmckpt-stream.md, "Live path"):
 *
 * Send:    handshake (we must know the receiver's key), the save in
 *          VMC_SAVE_MIGRATE mode sealed to the session, then the commit:
 *          READY (the receiver loaded it, paused) -> COMMIT (from here the
 *          source stays paused) -> RUNNING (the source is destroyed); a
 *          receiver that fails says why (FAILED) before it hangs up.
 * Receive: handshake (the sender must be authorised), the session header,
 *          the restore, paused; READY, the sender's COMMIT, then it runs
 *          and RUNNING; no COMMIT: the new domain is destroyed.
 * At every point at most one copy runs and at least one exists.
 *
 * Owns: the order of that exchange.  Must not: dial or listen (io/
 * endpoint.c), or print.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct confirm {
    int rfd, wfd;
    struct vmc_session *s;
    int timeout_ms;
    int domid;
    char msg[512];
};

/* Replaces the error in ctx with before + it + after (vmc_set_error keeps
 * the first error: the root cause, put in its context here). */
static int wrap_error(struct vmc_ctx *ctx, int code, const char *before,
                      const char *after)
{
    char why[sizeof(ctx->msg)];

    snprintf(why, sizeof(why), "%s", vmc_ctx_error(ctx));
    vmc_ctx_clear(ctx);
    return vmc_set_error(ctx, code, "%s%s%s", before, why, after);
}

/* The engine's confirm: the receiver's READY, after the final chunk. */
static int confirm_reply(void *arg, struct vmc_ctx *ctx, const uint8_t sid[16])
{
    struct confirm *c = arg;
    int phase, status, rc;

    rc = vmc_reply_recv(ctx, c->rfd, c->s, sid, VMC_PHASE_READY, c->timeout_ms,
                        &phase, &status, &c->domid, c->msg, sizeof(c->msg));
    if (rc < 0)
        return rc;
    if (phase != VMC_PHASE_READY)
        return vmc_set_error(ctx, status < 0 ? status : VMC_E_BACKEND,
                             "the receiver failed: %s", c->msg);
    return 0;
}

/* The engine's commit: COMMIT, then the receiver's RUNNING.  Its FAILED
 * means it destroyed its copy: the source may run again.  A receiver
 * gives up waiting for COMMIT after the timeout; the sender waits longer
 * for RUNNING, so that such a receiver's FAILED still reaches it. */
#define COMMIT_GRACE_MS 10000
static int commit_reply(void *arg, struct vmc_ctx *ctx, const uint8_t sid[16],
                        int *gave_up)
{
    struct confirm *c = arg;
    int phase, status, rc;

    *gave_up = 0;
    if ((rc = vmc_commit_send(ctx, c->wfd, c->s, sid)) < 0 ||
        (rc = vmc_reply_recv(ctx, c->rfd, c->s, sid, VMC_PHASE_RUNNING,
                             c->timeout_ms + COMMIT_GRACE_MS, &phase, &status,
                             &c->domid, c->msg, sizeof(c->msg))) < 0)
        return wrap_error(ctx, VMC_E_IO, "outcome unknown: the receiver was "
                          "told to run the domain (COMMIT) but did not say it "
                          "does (", ")");
    if (phase != VMC_PHASE_RUNNING) {
        *gave_up = 1;
        return vmc_set_error(ctx, status < 0 ? status : VMC_E_BACKEND,
                             "the receiver gave up after COMMIT: %s", c->msg);
    }
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
    struct confirm c = { rfd, wfd, NULL, timeout_ms, -1, "" };
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
    so.commit = commit_reply;
    so.confirm_arg = &c;
    rc = vmc_save(ctx, be, spec, of, &so, res);
    if (rc < 0 && vmc_ctx_errcode(ctx) == VMC_E_IO && !c.msg[0]) {
        /* The link broke: a receiver that failed says why first. */
        struct vmc_ctx tmp = { 0 };
        int phase, status, rdom;
        if (vmc_reply_recv(&tmp, rfd, s, res->stream_id, VMC_PHASE_FAILED, 2000,
                           &phase, &status, &rdom, c.msg, sizeof(c.msg)) == 0 &&
            status) {
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

/* The receiver's gate: the domain is loaded and paused; READY, then the
 * sender's COMMIT lets it run.  No COMMIT in time: the engine destroys it
 * (the sender, without READY or without COMMIT sent, keeps its copy). */
struct gate {
    int rfd, wfd, timeout_ms;
    struct vmc_session *s;
    const uint8_t *sid;           /* the stream's, once its header is read */
    int unconfirmed;              /* RUNNING could not be sent: why */
    char why[300];
};

static int gate_activate(void *arg, struct vmc_ctx *ctx, int domid)
{
    struct gate *g = arg;
    int rc;

    if ((rc = vmc_reply_send(ctx, g->wfd, g->s, g->sid, VMC_PHASE_READY, 0,
                             domid, "ready")) < 0)
        return rc;
    if ((rc = vmc_commit_recv(ctx, g->rfd, g->s, g->sid, g->timeout_ms)) < 0)
        return wrap_error(ctx, rc, "no COMMIT from the sender (", "): the new "
                          "domain is destroyed, the source keeps its copy");
    return 0;
}

/* It runs: RUNNING, before a copy of a source on this host waits for the
 * source to go (which it does on RUNNING). */
static void gate_running(void *arg, int domid)
{
    struct gate *g = arg;
    struct vmc_ctx tmp = { 0 };

    if (vmc_reply_send(&tmp, g->wfd, g->s, g->sid, VMC_PHASE_RUNNING, 0, domid,
                       "running") < 0) {
        g->unconfirmed = 1;
        snprintf(g->why, sizeof(g->why), "%s", vmc_ctx_error(&tmp));
    }
}

/* The session header within timeout_ms, then the restore. */
static int receive_stream(struct vmc_ctx *ctx, int rfd, struct vmc_session *s,
                          const struct vmc_keys *trust, int timeout_ms,
                          const struct vmc_restore_opts *ro,
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
    struct vmc_restore_opts o = *ro;
    uint8_t sid[16];
    struct gate g = { .rfd = rfd, .wfd = wfd, .timeout_ms = timeout_ms,
                      .sid = sid };
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
    g.s = s;
    o.activate = gate_activate;
    o.running = gate_running;
    o.activate_arg = &g;
    rc = receive_stream(ctx, rfd, s, auth, timeout_ms, &o, res, sid, &have_sid);
    if (g.unconfirmed) {                /* it runs; the source stays paused */
        mi->unconfirmed = 1;
        if (rc == 0)
            rc = vmc_set_error(ctx, VMC_E_IO, "%s", g.why);
    } else if (res->left_running) {
        /* it runs and RUNNING went out: only its name is not the final one */
    } else if (rc < 0 && have_sid) {
        /* whatever went wrong, our copy is gone: the source may run */
        struct vmc_ctx tmp = { 0 };
        int code = vmc_ctx_errcode(ctx);
        vmc_reply_send(&tmp, wfd, s, sid, VMC_PHASE_FAILED,
                       code < 0 ? code : VMC_E_BACKEND, -1, vmc_ctx_error(ctx));
    }
    vmc_session_free(s);
    return rc;
}
