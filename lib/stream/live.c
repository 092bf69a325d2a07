/*
 * live.c - the live path: mutually authenticated handshake, session keys,
 * session header, REPLY (format/vmckpt-stream.md, "Live path").
 *
 * Owns: the handshake's messages and the session key schedule.
 * Must not: open sockets or dial peers (the tool hands it connected fds).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define HELLO_LEN VMC_HELLO_LEN
#define CONFIRM_S "vmckpt live confirm S"
#define CONFIRM_R "vmckpt live confirm R"
#define REPLY_MSG_MAX VMC_REPLY_MSG_MAX

struct vmc_session {
    uint8_t *file_key;        /* sodium_malloc: sender -> receiver */
    uint8_t *reply_key;       /* receiver -> sender */
    uint8_t peer[32];         /* the peer's static public key */
};

void vmc_session_free(struct vmc_session *s)
{
    if (!s)
        return;
    sodium_free(s->file_key);
    sodium_free(s->reply_key);
    free(s);
}

void vmc_session_peer(const struct vmc_session *s, char out[VMC_RECIPIENT_STRLEN])
{
    vmc_recipient_string(s->peer, out);
}

/* Milliseconds left until end (at least 1: read_timed says "no answer"). */
static int left_ms(uint64_t end)
{
    int64_t l = ((int64_t)end - (int64_t)vmc_now_ns()) / 1000000;

    return l > 0 ? (int)l : 1;
}

/* Reads exactly n bytes within timeout_ms (total). */
static int read_timed(struct vmc_ctx *ctx, int fd, void *buf, size_t n,
                      int timeout_ms, const char *what)
{
    uint64_t deadline = vmc_now_ns() + (uint64_t)timeout_ms * 1000000u;
    size_t done = 0;

    while (done < n) {
        int left = (int)(((int64_t)deadline - (int64_t)vmc_now_ns()) / 1000000);
        struct pollfd pf = { fd, POLLIN, 0 };
        ssize_t r;

        if (left <= 0)
            return vmc_set_error(ctx, VMC_E_IO, "%s: no answer in %d s", what,
                                 timeout_ms / 1000);
        if (poll(&pf, 1, left) < 0) {
            if (errno == EINTR)
                continue;
            return vmc_set_error(ctx, VMC_E_IO, "%s: %s", what, strerror(errno));
        }
        if (!pf.revents)
            continue;
        r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            return vmc_set_error(ctx, VMC_E_IO, "%s: %s", what, strerror(errno));
        if (r == 0)
            return vmc_set_error(ctx, VMC_E_TRUNC, "%s: connection closed by "
                                 "the peer", what);
        done += (size_t)r;
    }
    return 0;
}

static int send_all(struct vmc_ctx *ctx, int fd, const void *buf, size_t n,
                    const char *what)
{
    return io_write_full(ctx, fd, buf, n, what);
}

static void hello(uint8_t out[HELLO_LEN], const uint8_t epk[32],
                  const uint8_t spk[32])
{
    struct vmc_wire_hello h = { .version = VMC_HELLO_VERSION };

    memcpy(h.magic, VMC_HELLO_MAGIC, 8);
    memcpy(h.epk, epk, 32);
    memcpy(h.spk, spk, 32);
    vmc_hello_encode(out, &h);
}

static int hello_check(struct vmc_ctx *ctx, const uint8_t in[HELLO_LEN])
{
    struct vmc_wire_hello h;
    const char *why;
    int rc = vmc_hello_decode(&h, in, &why);

    return rc < 0 ? vmc_set_error(ctx, rc, "handshake: %s", why) : 0;
}

/* First X25519 identity in keys. */
static const struct vmc_key *identity(const struct vmc_keys *keys)
{
    for (int i = 0; i < keys->n; i++)
        if (keys->k[i].kind == KEY_IDENTITY)
            return &keys->k[i];
    return NULL;
}

static int recipient_listed(const struct vmc_keys *keys, const uint8_t pk[32])
{
    for (int i = 0; i < keys->n; i++)
        if (keys->k[i].kind == KEY_RECIPIENT &&
            sodium_memcmp(keys->k[i].pub, pk, 32) == 0)
            return 1;
    return 0;
}

/*
 * The handshake, both roles.  sender: peers holds the one expected
 * receiver key (known hosts); receiver: peers holds the authorized senders.
 * timeout_ms bounds the whole handshake, not each read: a peer that
 * trickles bytes holds it no longer.  The receiver answers every HELLO
 * alike and looks at its list only once the sender has proven that it
 * holds the key it names (its confirmation), so that nobody learns from
 * the answer whether a key is authorized without holding that key.
 */
static int handshake(struct vmc_ctx *ctx, int rfd, int wfd, int sender,
                     const struct vmc_keys *id_keys, const struct vmc_keys *peers,
                     int timeout_ms, struct vmc_session **out)
{
    const struct vmc_key *me = identity(id_keys);
    struct vmc_session *s = NULL;
    uint8_t *esk = NULL, *dh = NULL;
    uint8_t epk[32], mine[HELLO_LEN], theirs[HELLO_LEN], th[32];
    uint8_t cs[32], cr[32], got[32];
    char pstr[VMC_RECIPIENT_STRLEN];
    const uint8_t *hs, *hr, *pe, *ps;
    uint64_t end = vmc_now_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc;

    *out = NULL;
    if (!me)
        return vmc_set_error(ctx, VMC_E_KEY, "handshake: no host identity "
                             "(an X25519 key from vmimage keygen) given");
    if (!(s = calloc(1, sizeof(*s))) || !(s->file_key = sodium_malloc(32)) ||
        !(s->reply_key = sodium_malloc(32)) || !(esk = sodium_malloc(32)) ||
        !(dh = sodium_malloc(128))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of secure memory");
        goto out;
    }
    randombytes_buf(esk, 32);
    crypto_scalarmult_base(epk, esk);
    hello(mine, epk, me->pub);
    if (sender) {
        if ((rc = send_all(ctx, wfd, mine, HELLO_LEN, "handshake")) < 0 ||
            (rc = read_timed(ctx, rfd, theirs, HELLO_LEN, left_ms(end),
                             "handshake (refused by the receiver?)")) < 0 ||
            (rc = hello_check(ctx, theirs)) < 0)
            goto out;
    } else {
        if ((rc = read_timed(ctx, rfd, theirs, HELLO_LEN, left_ms(end),
                             "handshake")) < 0 ||
            (rc = hello_check(ctx, theirs)) < 0)
            goto out;
    }
    memcpy(s->peer, theirs + 48, 32);
    vmc_recipient_string(s->peer, pstr);
    if (sender && !recipient_listed(peers, s->peer)) {
        rc = vmc_set_error(ctx, VMC_E_KEY, "receiver key %s does not match "
                           "the known host key: refusing", pstr);
        goto out;
    }
    if (!sender && (rc = send_all(ctx, wfd, mine, HELLO_LEN, "handshake")) < 0)
        goto out;
    hs = sender ? mine : theirs;
    hr = sender ? theirs : mine;
    pe = theirs + 16;
    ps = theirs + 48;
    /* ee, es, se, ss in the spec's order, from each side's view. */
    if (sender) {
        rc = crypto_scalarmult(dh, esk, pe) | crypto_scalarmult(dh + 32, esk, ps) |
             crypto_scalarmult(dh + 64, me->sec, pe) |
             crypto_scalarmult(dh + 96, me->sec, ps);
    } else {
        rc = crypto_scalarmult(dh, esk, pe) |
             crypto_scalarmult(dh + 32, me->sec, pe) |
             crypto_scalarmult(dh + 64, esk, ps) |
             crypto_scalarmult(dh + 96, me->sec, ps);
    }
    if (rc) {
        rc = vmc_set_error(ctx, VMC_E_AUTH, "handshake: peer sent a weak key");
        goto out;
    }
    {
        crypto_generichash_state st;
        uint8_t *k = sodium_malloc(64);
        if (!k) {
            rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of secure memory");
            goto out;
        }
        crypto_generichash_init(&st, NULL, 0, 32);
        crypto_generichash_update(&st, hs, HELLO_LEN);
        crypto_generichash_update(&st, hr, HELLO_LEN);
        crypto_generichash_final(&st, th, 32);
        crypto_generichash(k, 64, dh, 128, th, 32);
        memcpy(s->file_key, k, 32);
        memcpy(s->reply_key, k + 32, 32);
        sodium_free(k);
    }
    crypto_auth_hmacsha256(cs, (const uint8_t *)CONFIRM_S, strlen(CONFIRM_S),
                           s->file_key);
    crypto_auth_hmacsha256(cr, (const uint8_t *)CONFIRM_R, strlen(CONFIRM_R),
                           s->file_key);
    if (sender) {
        if ((rc = send_all(ctx, wfd, cs, 32, "handshake")) < 0 ||
            (rc = read_timed(ctx, rfd, got, 32, left_ms(end),
                             "handshake (refused by the receiver?)")) < 0)
            goto out;
        if (sodium_memcmp(got, cr, 32)) {
            rc = vmc_set_error(ctx, VMC_E_AUTH, "handshake: the receiver could "
                               "not prove its key: refusing");
            goto out;
        }
    } else {
        if ((rc = read_timed(ctx, rfd, got, 32, left_ms(end), "handshake")) < 0)
            goto out;
        if (sodium_memcmp(got, cs, 32)) {
            rc = vmc_set_error(ctx, VMC_E_AUTH, "handshake: sender %s could not "
                               "prove its key: refusing", pstr);
            goto out;
        }
        if (!recipient_listed(peers, s->peer)) {    /* proven, now judged */
            rc = vmc_set_error(ctx, VMC_E_KEY, "sender %s is not an authorized "
                               "sender: refusing", pstr);
            goto out;
        }
        if ((rc = send_all(ctx, wfd, cr, 32, "handshake")) < 0)
            goto out;
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    sodium_free(esk);
    sodium_free(dh);
    vmc_session_free(s);
    return rc;
}

int vmc_live_connect(struct vmc_ctx *ctx, int rfd, int wfd,
                     const struct vmc_keys *id, const struct vmc_keys *known,
                     int timeout_ms, struct vmc_session **out)
{
    return handshake(ctx, rfd, wfd, 1, id, known, timeout_ms, out);
}

int vmc_live_accept(struct vmc_ctx *ctx, int rfd, int wfd,
                    const struct vmc_keys *id, const struct vmc_keys *authorized,
                    int timeout_ms, struct vmc_session **out)
{
    return handshake(ctx, rfd, wfd, 0, id, authorized, timeout_ms, out);
}

/* ---- session header --------------------------------------------------- */

int hdr_new_session(struct vmc_ctx *ctx, const struct vmc_session *s,
                    const struct vmc_keys *signer, uint32_t chunk_size,
                    const char *label, struct vmc_header **out)
{
    return hdr_new_with_key(ctx, s->file_key, signer, chunk_size, label, out);
}

int vmc_header_unlock_session(struct vmc_ctx *ctx, struct vmc_header *h,
                              const struct vmc_session *s,
                              const struct vmc_keys *trust)
{
    uint8_t mac[VMC_HDR_MAC_LEN];
    int rc;

    if (!(h->h.flags & VMC_HF_LIVE) || h->nslots != 1 ||
        h->slot[0].type != VMC_SLOT_SESSION)
        return vmc_set_error(ctx, VMC_E_FORMAT, "header: not a live session "
                             "stream");
    if ((rc = vmc_header_check_signer(ctx, h, trust)) < 0)
        return rc;
    if ((rc = hdr_alloc_keys(ctx, h)) < 0)
        return rc;
    memcpy(h->file_key, s->file_key, 32);
    if ((rc = hdr_derive(ctx, h)) < 0)
        return rc;
    crypto_auth_hmacsha256(mac, h->raw, h->raw_len - VMC_HDR_MAC_LEN, h->mac_key);
    if (sodium_memcmp(mac, h->raw + h->raw_len - VMC_HDR_MAC_LEN,
                      VMC_HDR_MAC_LEN))
        return vmc_set_error(ctx, VMC_E_AUTH, "header: authentication failed");
    h->unlocked = true;
    h->opened_by = 0;
    return 0;
}

/* ---- REPLY ------------------------------------------------------------ */

int vmc_reply_send(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                   const uint8_t stream_id[16], int phase, int status, int domid,
                   const char *msg)
{
    size_t ml = msg ? strlen(msg) : 0;
    uint8_t buf[4 + VMC_REPLY_HEAD_LEN + REPLY_MSG_MAX + 16],
            nonce[VMC_AEAD_NONCE_LEN];
    struct vmc_wire_reply r;
    unsigned long long clen;

    if (ml > REPLY_MSG_MAX)
        ml = REPLY_MSG_MAX;
    if ((phase == VMC_PHASE_FAILED) != (status < 0))
        return vmc_set_error(ctx, VMC_E_INVAL, "reply: status %d does not fit "
                             "phase %d", status, phase);
    r.status = status;
    r.domid = domid;
    r.msg_len = (uint32_t)ml;
    r.phase = (uint32_t)phase;
    vmc_reply_encode(buf + 4, &r);
    memcpy(buf + 4 + VMC_REPLY_HEAD_LEN, msg, ml);
    vmc_chunk_nonce(nonce, (uint64_t)phase, 1);     /* one nonce per phase */
    crypto_aead_chacha20poly1305_ietf_encrypt(buf + 4, &clen, buf + 4, 16 + ml,
                                              stream_id, 16, NULL, nonce,
                                              s->reply_key);
    vmc_put32(buf, (uint32_t)clen | VMC_CHUNK_FINAL);
    return send_all(ctx, fd, buf, 4 + (size_t)clen, "reply");
}

static const char *phase_name(int phase)
{
    return phase == VMC_PHASE_READY ? "READY" :
           phase == VMC_PHASE_RUNNING ? "RUNNING" : "FAILED";
}

int vmc_reply_recv(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                   const uint8_t stream_id[16], int want, int timeout_ms,
                   int *phase, int *status, int *domid, char *msg, size_t cap)
{
    uint8_t buf[VMC_REPLY_HEAD_LEN + REPLY_MSG_MAX + 16], w[4],
            nonce[VMC_AEAD_NONCE_LEN], pt[sizeof(buf)];
    struct vmc_wire_reply r;
    const char *why;
    char what[64];
    uint32_t len;
    int rc, got = -1;

    *phase = -1;
    *status = VMC_E_BACKEND;
    *domid = -1;
    if (cap)
        msg[0] = '\0';
    snprintf(what, sizeof(what), "waiting for the receiver's %s",
             phase_name(want));
    if ((rc = read_timed(ctx, fd, w, 4, timeout_ms, what)) < 0)
        return rc;
    len = vmc_get32(w);
    if (!(len & VMC_CHUNK_FINAL) || (len & VMC_CHUNK_LEN_MASK) < 32 ||
        (len & VMC_CHUNK_LEN_MASK) > sizeof(buf))
        return vmc_set_error(ctx, VMC_E_FORMAT, "reply: bad length word");
    len &= VMC_CHUNK_LEN_MASK;
    if ((rc = read_timed(ctx, fd, buf, len, timeout_ms, "reply")) < 0)
        return rc;
    /* the phase wanted, or FAILED: each has its own nonce */
    for (int k = 0, ph = want; k < 2 && got < 0; k++, ph = VMC_PHASE_FAILED) {
        if (k == 1 && want == VMC_PHASE_FAILED)
            break;                          /* tried already */
        vmc_chunk_nonce(nonce, (uint64_t)ph, 1);
        if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, NULL, NULL, buf, len,
                                                      stream_id, 16, nonce,
                                                      s->reply_key) == 0)
            got = ph;
    }
    if (got < 0)
        return vmc_set_error(ctx, VMC_E_AUTH, "reply: authentication failed "
                             "(not the %s of this session)", phase_name(want));
    if ((rc = vmc_reply_decode(&r, pt, len - 16, &why)) < 0 ||
        (int)r.phase != got)
        return vmc_set_error(ctx, rc < 0 ? rc : VMC_E_FORMAT, "reply: %s",
                             rc < 0 ? why : "phase does not match its nonce");
    *phase = got;
    *status = r.status;
    *domid = r.domid;
    if (cap) {
        size_t n = r.msg_len < cap - 1 ? r.msg_len : cap - 1;
        memcpy(msg, pt + VMC_REPLY_HEAD_LEN, n);
        msg[n] = '\0';
    }
    return 0;
}

/* commit_key = KDF(file_key, 3): the one message the sender sends after
 * the stream. */
static int commit_key(struct vmc_ctx *ctx, const struct vmc_session *s,
                      uint8_t *key)
{
    if (crypto_kdf_derive_from_key(key, 32, 3, "vmckpt01", s->file_key))
        return vmc_set_error(ctx, VMC_E_INVAL, "libsodium: key derivation failed");
    return 0;
}

int vmc_commit_send(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                    const uint8_t stream_id[16])
{
    uint8_t buf[4 + VMC_COMMIT_LEN + 16], nonce[VMC_AEAD_NONCE_LEN], *key;
    int rc;

    if (!(key = sodium_malloc(32)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
    if ((rc = commit_key(ctx, s, key)) == 0) {
        vmc_chunk_nonce(nonce, 0, 1);
        crypto_aead_chacha20poly1305_ietf_encrypt(
            buf + 4, NULL, (const uint8_t *)VMC_COMMIT_MAGIC, VMC_COMMIT_LEN,
            stream_id, 16, NULL, nonce, key);
        vmc_put32(buf, (VMC_COMMIT_LEN + 16) | VMC_CHUNK_FINAL);
        rc = send_all(ctx, fd, buf, sizeof(buf), "commit");
    }
    sodium_free(key);
    return rc;
}

int vmc_commit_recv(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                    const uint8_t stream_id[16], int timeout_ms)
{
    uint8_t buf[VMC_COMMIT_LEN + 16], pt[VMC_COMMIT_LEN], w[4],
            nonce[VMC_AEAD_NONCE_LEN], *key;
    int rc;

    if ((rc = read_timed(ctx, fd, w, 4, timeout_ms, "waiting for the sender's "
                         "COMMIT")) < 0)
        return rc;
    if (vmc_get32(w) != ((VMC_COMMIT_LEN + 16) | VMC_CHUNK_FINAL))
        return vmc_set_error(ctx, VMC_E_FORMAT, "commit: bad length word");
    if ((rc = read_timed(ctx, fd, buf, sizeof(buf), timeout_ms, "commit")) < 0)
        return rc;
    if (!(key = sodium_malloc(32)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
    if ((rc = commit_key(ctx, s, key)) == 0) {
        vmc_chunk_nonce(nonce, 0, 1);
        if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, NULL, NULL, buf,
                                                      sizeof(buf), stream_id, 16,
                                                      nonce, key) != 0 ||
            memcmp(pt, VMC_COMMIT_MAGIC, VMC_COMMIT_LEN) != 0)
            rc = vmc_set_error(ctx, VMC_E_AUTH, "commit: authentication failed");
    }
    sodium_free(key);
    return rc;
}
