/*
 * header.c - envelope header: parse, signer, key slots, MAC, build, rekey.
 *
 * Owns: the header of format/vmckpt-stream.md, the file key it guards and
 * the signer it names (whom keys trust: vmc_header_check_signer).
 * Must not: touch a chunk, or keep key material outside sodium_malloc.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define KDF_CTX "vmckpt01"
#define RAWKEY_ID_MSG "vmckpt rawkey id"
#define RAWKEY_WRAP_MSG "vmckpt rawkey wrap"

/* One slot to serialize: type, body (borrowed), length. */
struct slotref {
    uint16_t type;
    uint32_t len;
    const uint8_t *body;
};

static size_t slot_size(uint32_t body_len)
{
    return sizeof(struct vmc_wire_slot_hdr) + VMC_PAD8(body_len);
}

int hdr_alloc_keys(struct vmc_ctx *ctx, struct vmc_header *h)
{
    if (!h->file_key)
        h->file_key = sodium_malloc(VMC_FILE_KEY_LEN);
    if (!h->payload_key)
        h->payload_key = sodium_malloc(32);
    if (!h->mac_key)
        h->mac_key = sodium_malloc(crypto_auth_hmacsha256_KEYBYTES);
    if (!h->file_key || !h->payload_key || !h->mac_key)
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
    return 0;
}

int hdr_derive(struct vmc_ctx *ctx, struct vmc_header *h)
{
    if (crypto_kdf_derive_from_key(h->payload_key, 32, 1, KDF_CTX, h->file_key) ||
        crypto_kdf_derive_from_key(h->mac_key, crypto_auth_hmacsha256_KEYBYTES,
                                   2, KDF_CTX, h->file_key))
        return vmc_set_error(ctx, VMC_E_INVAL, "libsodium: key derivation failed");
    return 0;
}

void vmc_header_free(struct vmc_header *h)
{
    if (!h)
        return;
    sodium_free(h->file_key);
    sodium_free(h->payload_key);
    sodium_free(h->mac_key);
    sodium_free(h->sign_sk);
    free(h->raw);
    free(h);
}

const uint8_t *vmc_header_stream_id(const struct vmc_header *h)
{
    return h->h.stream_id;
}

/* ---- parsing ---------------------------------------------------------- */

static int known_len(uint16_t type, uint32_t *len)
{
    switch (type) {
    case VMC_SLOT_X25519: *len = VMC_SLOT_X25519_LEN; return 1;
    case VMC_SLOT_ARGON2ID: *len = sizeof(struct vmc_wire_slot_argon2id); return 1;
    case VMC_SLOT_RAWKEY: *len = sizeof(struct vmc_wire_slot_rawkey); return 1;
    case VMC_SLOT_SESSION: *len = 0; return 1;
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* The signer block of a format-2 header: header_sig checked at once (it
 * needs no key), so that even a reader without one knows who signed. */
static void parse_signer(struct vmc_header *h)
{
    uint8_t msg[VMC_HDR_SIG_MSG_LEN];

    h->is_signed = h->h.version == VMC_VERSION;
    if (!h->is_signed)
        return;
    memcpy(h->signer_pk, h->raw + VMC_HDR_FIXED_LEN, VMC_SIGN_PK_LEN);
    memcpy(h->header_sig, h->raw + VMC_HDR_FIXED_LEN + VMC_SIGN_PK_LEN,
           VMC_SIG_LEN);
    vmc_hdr_sig_msg(msg, &h->h, h->signer_pk);
    h->sig_ok = crypto_sign_verify_detached(h->header_sig, msg, sizeof(msg),
                                            h->signer_pk) == 0;
}

/* Parses h->raw (h->raw_len bytes); the fixed part was decoded already. */
static int parse_body(struct vmc_ctx *ctx, struct vmc_header *h)
{
    const uint8_t *p = h->raw;
    size_t off = VMC_HDR_FIXED_LEN, end = h->raw_len - VMC_HDR_MAC_LEN;

    parse_signer(h);
    if (h->is_signed)
        off += VMC_SIGNER_BLOCK_LEN;
    h->nslots = h->h.nslots;
    for (int i = 0; i < h->nslots; i++) {
        uint16_t type, rsv;
        uint32_t blen, want;

        if (end - off < sizeof(struct vmc_wire_slot_hdr))
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "header @0x%zx: key slot %d runs past the header",
                                 off, i);
        type = vmc_get16(p + off);
        rsv = vmc_get16(p + off + 2);
        blen = vmc_get32(p + off + 4);
        if (rsv)
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "header @0x%zx: key slot %d: reserved field not "
                                 "zero", off, i);
        if (known_len(type, &want) && blen != want)
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "header @0x%zx: key slot %d (type %u): length %u,"
                                 " expected %u", off, i, type, blen, want);
        if (blen > end - off - 8 || slot_size(blen) > end - off)
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "header @0x%zx: key slot %d length %u runs past "
                                 "the header", off, i, blen);
        if (!all_zero(p + off + 8 + blen, VMC_PAD8(blen) - blen))
            return vmc_set_error(ctx, VMC_E_FORMAT,
                                 "header @0x%zx: key slot %d padding not zero",
                                 off, i);
        h->slot[i].type = type;
        h->slot[i].off = (uint32_t)off;
        h->slot[i].body_len = blen;
        off += slot_size(blen);
    }
    if (VMC_PAD8(h->h.label_len) != end - off)
        return vmc_set_error(ctx, VMC_E_FORMAT,
                             "header @0x%zx: label length %u does not fit header "
                             "length %u", off, h->h.label_len, h->h.header_len);
    memcpy(h->label, p + off, h->h.label_len);
    h->label[h->h.label_len] = '\0';
    if (!utf8_ok(p + off, h->h.label_len, 0))
        return vmc_set_error(ctx, VMC_E_FORMAT, "header @0x%zx: the label is "
                             "not valid UTF-8", off);
    if (memchr(p + off, 0, h->h.label_len) ||
        !all_zero(p + off + h->h.label_len,
                  VMC_PAD8(h->h.label_len) - h->h.label_len))
        return vmc_set_error(ctx, VMC_E_FORMAT,
                             "header @0x%zx: label contains NUL or padding not "
                             "zero", off);
    return 0;
}

static int decode_fixed(struct vmc_ctx *ctx, struct vmc_header *h,
                        const uint8_t *buf)
{
    const char *why;
    int rc = vmc_hdr_decode(&h->h, buf, &why);

    if (rc < 0)
        return vmc_set_error(ctx, rc, "header: %s", why);
    return 0;
}

/* A short input whose first bytes are not even the magic is not a
 * truncated image but something else (a text file, another format). */
static int short_header(struct vmc_ctx *ctx, const uint8_t *buf, size_t len)
{
    size_t n = len < VMC_MAGIC_LEN ? len : VMC_MAGIC_LEN;

    if (memcmp(buf, VMC_MAGIC, n) != 0)
        return vmc_set_error(ctx, VMC_E_FORMAT, "header: not a vmckpt image "
                             "(bad magic)");
    return vmc_set_error(ctx, VMC_E_TRUNC, "header: truncated at %zu of %d "
                         "bytes", len, VMC_HDR_FIXED_LEN);
}

int vmc_header_parse(struct vmc_ctx *ctx, const uint8_t *buf, size_t len,
                     struct vmc_header **out)
{
    struct vmc_header *h = calloc(1, sizeof(*h));
    int rc;

    *out = NULL;
    if (!h)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    h->opened_by = -1;
    if (len < VMC_HDR_FIXED_LEN) {
        rc = short_header(ctx, buf, len);
        goto out;
    }
    if ((rc = decode_fixed(ctx, h, buf)) < 0)
        goto out;
    if (len < h->h.header_len) {
        rc = vmc_set_error(ctx, VMC_E_TRUNC,
                           "header: truncated at %zu of %u bytes", len,
                           h->h.header_len);
        goto out;
    }
    h->raw_len = h->h.header_len;
    if (!(h->raw = malloc(h->raw_len))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(h->raw, buf, h->raw_len);
    rc = parse_body(ctx, h);
out:
    if (rc < 0)
        vmc_header_free(h);
    else
        *out = h;
    return rc;
}

int vmc_header_read(struct vmc_ctx *ctx, int fd, struct vmc_header **out)
{
    uint8_t fixed[VMC_HDR_FIXED_LEN];
    struct vmc_header *h = NULL;
    uint8_t *buf = NULL;
    size_t got;
    int rc;

    *out = NULL;
    if ((rc = io_read_full(ctx, fd, fixed, sizeof(fixed), &got, "header")) < 0)
        return rc;
    if (got == 0)
        return vmc_set_error(ctx, VMC_E_TRUNC, "header: empty input");
    if (got < sizeof(fixed))
        return short_header(ctx, fixed, got);
    {
        struct vmc_header tmp;
        if ((rc = decode_fixed(ctx, &tmp, fixed)) < 0)
            return rc;
        if (!(buf = malloc(tmp.h.header_len)))
            return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        memcpy(buf, fixed, sizeof(fixed));
        if ((rc = io_read_full(ctx, fd, buf + sizeof(fixed),
                               tmp.h.header_len - sizeof(fixed), &got,
                               "header")) < 0)
            goto out;
        got += sizeof(fixed);
    }
    rc = vmc_header_parse(ctx, buf, got, &h);
out:
    free(buf);
    *out = h;
    return rc;
}

/* ---- slots --------------------------------------------------------- */

static void rawkey_ids(const uint8_t *raw, uint8_t id[16], uint8_t *wrap)
{
    crypto_generichash(id, 16, (const uint8_t *)RAWKEY_ID_MSG,
                       strlen(RAWKEY_ID_MSG), raw, 32);
    if (wrap)
        crypto_generichash(wrap, 32, (const uint8_t *)RAWKEY_WRAP_MSG,
                           strlen(RAWKEY_WRAP_MSG), raw, 32);
}

static int check_kdf(struct vmc_ctx *ctx, int slot, uint32_t ops, uint32_t mem)
{
    if (ops < VMC_ARGON2_OPS_MIN || ops > VMC_ARGON2_OPS_MAX)
        return vmc_set_error(ctx, VMC_E_LIMIT,
                             "key slot %d: Argon2id opslimit %u outside %d..%d: "
                             "refused", slot, ops, VMC_ARGON2_OPS_MIN,
                             VMC_ARGON2_OPS_MAX);
    if (mem < VMC_ARGON2_MEM_MIN_KIB || mem > VMC_ARGON2_MEM_MAX_KIB)
        return vmc_set_error(ctx, VMC_E_LIMIT,
                             "key slot %d: Argon2id memory %u KiB outside "
                             "%u..%u KiB: refused", slot, mem,
                             VMC_ARGON2_MEM_MIN_KIB, VMC_ARGON2_MEM_MAX_KIB);
    return 0;
}

/* Tries to unwrap slot i with key k into fk: 0 with *opened 1 if k opens
 * it (0: not this key), or an error (limits, memory). */
static int slot_try(struct vmc_ctx *ctx, const struct vmc_header *h, int i,
                    const struct vmc_key *k, uint8_t *fk, int *opened)
{
    const uint8_t *sh = h->raw + h->slot[i].off, *b = sh + 8;
    uint8_t ad[8 + 24];
    int rc;

    *opened = 0;
    switch (h->slot[i].type) {
    case VMC_SLOT_X25519:
        if (k->kind != KEY_IDENTITY)
            return 0;
        *opened = crypto_box_seal_open(fk, b, VMC_SLOT_X25519_LEN, k->pub,
                                       k->sec) == 0;
        return 0;
    case VMC_SLOT_RAWKEY: {
        uint8_t id[16], *wrap;
        if (k->kind != KEY_RAW)
            return 0;
        rawkey_ids(k->sec, id, NULL);
        if (sodium_memcmp(id, b, 16) != 0)
            return 0;
        if (!(wrap = sodium_malloc(32)))
            return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        rawkey_ids(k->sec, id, wrap);
        memcpy(ad, sh, 8);
        memcpy(ad + 8, b, 16);
        *opened = crypto_aead_xchacha20poly1305_ietf_decrypt(
                      fk, NULL, NULL, b + 40, VMC_WRAPPED_LEN, ad, 24, b + 16,
                      wrap) == 0;
        sodium_free(wrap);
        return 0;
    }
    case VMC_SLOT_ARGON2ID: {
        struct vmc_wire_slot_argon2id s;
        uint8_t *wk;
        if (k->kind != KEY_PASSPHRASE)
            return 0;
        vmc_a2slot_decode(&s, b);
        if ((rc = check_kdf(ctx, i, s.opslimit, s.memlimit_kib)) < 0)
            return rc;
        if (!(wk = sodium_malloc(32)))
            return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        if (crypto_pwhash(wk, 32, (const char *)k->sec, k->len, s.salt,
                          s.opslimit, (size_t)s.memlimit_kib * 1024,
                          crypto_pwhash_ALG_ARGON2ID13) != 0) {
            sodium_free(wk);
            return vmc_set_error(ctx, VMC_E_NOMEM,
                                 "key slot %d: Argon2id: out of memory", i);
        }
        memcpy(ad, sh, 8);
        memcpy(ad + 8, b, 24);
        *opened = crypto_aead_xchacha20poly1305_ietf_decrypt(
                      fk, NULL, NULL, s.wrapped, VMC_WRAPPED_LEN, ad, 32,
                      s.nonce, wk) == 0;
        sodium_free(wk);
        return 0;
    }
    }
    return 0;
}

static int slot_cost(uint16_t type)
{
    return type == VMC_SLOT_ARGON2ID;   /* try cheap slots first */
}

/* A hostile header may hold 32 passphrase slots at the maximum cost: the
 * Argon2id work that the passphrases given would cost is bounded before
 * any of it is done (VMC_ARGON2_WORK_MAX). */
static int argon2_budget(struct vmc_ctx *ctx, const struct vmc_header *h,
                         const struct vmc_keys *keys)
{
    uint64_t work = 0;
    int npass = 0, nslots = 0;

    for (int j = 0; j < keys->n; j++)
        npass += keys->k[j].kind == KEY_PASSPHRASE;
    for (int i = 0; i < h->nslots && npass; i++) {
        const uint8_t *b = h->raw + h->slot[i].off + 8;
        if (h->slot[i].type != VMC_SLOT_ARGON2ID)
            continue;
        nslots++;
        work += (uint64_t)vmc_get32(b + 16) * vmc_get32(b + 20) * (uint64_t)npass;
    }
    if (work > VMC_ARGON2_WORK_MAX)
        return vmc_set_error(ctx, VMC_E_LIMIT, "header: %d passphrase slot%s "
                             "would cost %llu MiB-passes of Argon2id for %d "
                             "passphrase%s, more than the bound of %llu: "
                             "refused before any work", nslots,
                             nslots == 1 ? "" : "s",
                             (unsigned long long)(work / 1024), npass,
                             npass == 1 ? "" : "s",
                             (unsigned long long)(VMC_ARGON2_WORK_MAX / 1024));
    return 0;
}

int vmc_header_check_signer(struct vmc_ctx *ctx, const struct vmc_header *h,
                            const struct vmc_keys *keys)
{
    char who[VMC_RECIPIENT_STRLEN];
    int trust = keys ? keys->trust : 0;

    if (!h->is_signed) {
        if (trust & VMC_TRUST_UNSIGNED)
            return 0;
        vmc_set_error(ctx, VMC_E_UNTRUSTED, "unsigned (format 1): anyone who "
                      "knows a recipient can make such an image");
        return vmc_set_hint(ctx, VMC_HINT_UNSIGNED);
    }
    vmc_signer_string(h->signer_pk, who);
    if (!h->sig_ok)
        return vmc_set_error(ctx, VMC_E_AUTH, "header: the signature does not "
                             "verify with the signer it names (%s): forged", who);
    if ((trust & VMC_TRUST_REPORT) || keys_trusts(keys, h->signer_pk))
        return 0;
    vmc_set_error(ctx, VMC_E_UNTRUSTED, "signed by %s, which is not a trusted "
                  "signer", who);
    return vmc_set_hint(ctx, VMC_HINT_TRUST_SIGNER);
}

int vmc_header_unlock(struct vmc_ctx *ctx, struct vmc_header *h,
                      const struct vmc_keys *keys)
{
    int rc, limit_rc = 0, npass = 0;
    uint8_t mac[VMC_HDR_MAC_LEN];

    if (h->unlocked)
        return 0;
    if (h->h.flags & VMC_HF_LIVE)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED,
                             "header: live session stream cannot be opened with "
                             "a key");
    if ((rc = vmc_header_check_signer(ctx, h, keys)) < 0)
        return rc;
    if ((rc = argon2_budget(ctx, h, keys)) < 0)
        return rc;
    if ((rc = hdr_alloc_keys(ctx, h)) < 0)
        return rc;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < h->nslots; i++) {
            if (slot_cost(h->slot[i].type) != pass)
                continue;
            for (int j = 0; j < keys->n; j++) {
                struct vmc_ctx tmp = { 0 };
                if (keys->k[j].kind == KEY_PASSPHRASE &&
                    h->slot[i].type == VMC_SLOT_ARGON2ID)
                    npass++;
                int opened;
                rc = slot_try(&tmp, h, i, &keys->k[j], h->file_key, &opened);
                if (rc < 0) {
                    if (!limit_rc) {
                        vmc_set_error(ctx, rc, "%s", tmp.msg);
                        limit_rc = rc;
                    }
                    break;          /* this slot is refused for all keys */
                }
                if (opened) {
                    h->opened_by = i;
                    goto opened;
                }
            }
        }
    if (limit_rc)
        return limit_rc;
    if (vmc_keys_count(keys) == 0) {
        vmc_set_error(ctx, VMC_E_KEY, "no key given");
        return vmc_set_hint(ctx, VMC_HINT_GIVE_KEY);
    }
    if (npass)
        return vmc_set_error(ctx, VMC_E_KEY,
                             "no key opens it (wrong passphrase?)");
    return vmc_set_error(ctx, VMC_E_KEY, "no key opens it (wrong identity?)");
opened:
    if ((rc = hdr_derive(ctx, h)) < 0)
        return rc;
    crypto_auth_hmacsha256(mac, h->raw, h->raw_len - VMC_HDR_MAC_LEN, h->mac_key);
    if (sodium_memcmp(mac, h->raw + h->raw_len - VMC_HDR_MAC_LEN,
                      VMC_HDR_MAC_LEN) != 0) {
        h->opened_by = -1;
        return vmc_set_error(ctx, VMC_E_AUTH,
                             "header: authentication failed (header altered)");
    }
    h->unlocked = true;
    return 0;
}

int vmc_header_has_passphrase(const struct vmc_header *h)
{
    for (int i = 0; i < h->h.nslots; i++)
        if (h->slot[i].type == VMC_SLOT_ARGON2ID)
            return 1;
    return 0;
}

void vmc_header_get_info(const struct vmc_header *h, struct vmc_header_info *in)
{
    memset(in, 0, sizeof(*in));
    in->version = h->h.version;
    in->header_len = h->h.header_len;
    in->aead = h->h.aead;
    in->compression = h->h.compression;
    in->chunk_size = h->h.chunk_size;
    in->flags = h->h.flags;
    memcpy(in->stream_id, h->h.stream_id, 16);
    memcpy(in->label, h->label, sizeof(h->label));
    in->nslots = h->nslots;
    in->unlocked = h->unlocked;
    in->opened_by = h->opened_by;
    in->is_signed = h->is_signed;
    in->signature_ok = h->sig_ok;
    if (h->is_signed)
        vmc_signer_string(h->signer_pk, in->signer);
}

int vmc_header_trusted(const struct vmc_header *h, const struct vmc_keys *keys)
{
    return h->is_signed && h->sig_ok && keys_trusts(keys, h->signer_pk);
}

int vmc_header_slot(const struct vmc_header *h, int i, struct vmc_slot_info *s)
{
    const uint8_t *b;

    if (i < 0 || i >= h->nslots)
        return VMC_E_INVAL;
    b = h->raw + h->slot[i].off + 8;
    memset(s, 0, sizeof(*s));
    s->type = h->slot[i].type;
    if (s->type == VMC_SLOT_ARGON2ID) {
        s->kdf_ops = vmc_get32(b + 16);
        s->kdf_mem_kib = vmc_get32(b + 20);
    } else if (s->type == VMC_SLOT_RAWKEY) {
        memcpy(s->key_id, b, 16);
    }
    return 0;
}

/* ---- building -------------------------------------------------------- */

/* Makes a slot body for key k wrapping h->file_key.  body >= 96 bytes. */
static int slot_make(struct vmc_ctx *ctx, const struct vmc_header *h,
                     const struct vmc_keys *keys, const struct vmc_key *k,
                     uint16_t *type, uint32_t *len, uint8_t *body)
{
    uint8_t hdr[8], ad[32];

    switch (k->kind) {
    case KEY_RECIPIENT:
        *type = VMC_SLOT_X25519;
        *len = VMC_SLOT_X25519_LEN;
        if (crypto_box_seal(body, h->file_key, VMC_FILE_KEY_LEN, k->pub) != 0)
            return vmc_set_error(ctx, VMC_E_INVAL,
                                 "recipient: not a usable X25519 public key");
        return 0;
    case KEY_RAW: {
        uint8_t *wrap = sodium_malloc(32);
        if (!wrap)
            return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        *type = VMC_SLOT_RAWKEY;
        *len = sizeof(struct vmc_wire_slot_rawkey);
        rawkey_ids(k->sec, body, wrap);
        randombytes_buf(body + 16, VMC_WRAP_NONCE_LEN);
        vmc_put16(hdr, *type);
        vmc_put16(hdr + 2, 0);
        vmc_put32(hdr + 4, *len);
        memcpy(ad, hdr, 8);
        memcpy(ad + 8, body, 16);
        crypto_aead_xchacha20poly1305_ietf_encrypt(body + 40, NULL, h->file_key,
                                                   VMC_FILE_KEY_LEN, ad, 24, NULL,
                                                   body + 16, wrap);
        sodium_free(wrap);
        return 0;
    }
    case KEY_PASSPHRASE: {
        struct vmc_wire_slot_argon2id s;
        memset(&s, 0, sizeof(s));
        uint8_t *wk = sodium_malloc(32);
        int rc;
        if (!wk)
            return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        *type = VMC_SLOT_ARGON2ID;
        *len = sizeof(s);
        randombytes_buf(s.salt, sizeof(s.salt));
        s.opslimit = keys->kdf_ops ? keys->kdf_ops : VMC_ARGON2_OPS_DEFAULT;
        s.memlimit_kib = keys->kdf_mem_kib ? keys->kdf_mem_kib
                                           : VMC_ARGON2_MEM_DEFAULT_KIB;
        if ((rc = check_kdf(ctx, 0, s.opslimit, s.memlimit_kib)) < 0) {
            sodium_free(wk);
            return rc;
        }
        randombytes_buf(s.nonce, sizeof(s.nonce));
        if (crypto_pwhash(wk, 32, (const char *)k->sec, k->len, s.salt,
                          s.opslimit, (size_t)s.memlimit_kib * 1024,
                          crypto_pwhash_ALG_ARGON2ID13) != 0) {
            sodium_free(wk);
            return vmc_set_error(ctx, VMC_E_NOMEM, "Argon2id: out of memory");
        }
        vmc_a2slot_encode(body, &s);     /* wrapped filled below */
        vmc_put16(ad, *type);
        vmc_put16(ad + 2, 0);
        vmc_put32(ad + 4, *len);
        memcpy(ad + 8, body, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(body + 48, NULL, h->file_key,
                                                   VMC_FILE_KEY_LEN, ad, 32, NULL,
                                                   s.nonce, wk);
        sodium_free(wk);
        return 0;
    }
    }
    return vmc_set_error(ctx, VMC_E_INVAL, "key of this kind cannot seal");
}

/* Serializes fixed fields of h->h, the slots and the label into a new raw
 * buffer, computes the MAC, and re-parses slot offsets. */
static int serialize(struct vmc_ctx *ctx, struct vmc_header *h,
                     const struct slotref *s, int n)
{
    size_t len = VMC_HDR_FIXED_LEN, off;
    size_t ll = strlen(h->label);
    uint8_t *raw;

    if (h->is_signed)
        len += VMC_SIGNER_BLOCK_LEN;
    if (n < 1)
        return vmc_set_error(ctx, VMC_E_INVAL, "an image needs at least one key slot");
    if (n > VMC_MAX_SLOTS)
        return vmc_set_error(ctx, VMC_E_LIMIT, "too many key slots (max %d)",
                             VMC_MAX_SLOTS);
    for (int i = 0; i < n; i++)
        len += slot_size(s[i].len);
    len += VMC_PAD8(ll) + VMC_HDR_MAC_LEN;
    if (len > VMC_HDR_MAX_LEN)
        return vmc_set_error(ctx, VMC_E_LIMIT, "header too large");
    if (!(raw = calloc(1, len)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    h->h.header_len = (uint32_t)len;
    h->h.nslots = (uint16_t)n;
    h->h.label_len = (uint16_t)ll;
    vmc_hdr_encode(raw, &h->h);
    off = VMC_HDR_FIXED_LEN;
    if (h->is_signed) {         /* signed once; a rekey copies it */
        memcpy(raw + off, h->signer_pk, VMC_SIGN_PK_LEN);
        memcpy(raw + off + VMC_SIGN_PK_LEN, h->header_sig, VMC_SIG_LEN);
        off += VMC_SIGNER_BLOCK_LEN;
    }
    for (int i = 0; i < n; i++) {
        vmc_put16(raw + off, s[i].type);
        vmc_put32(raw + off + 4, s[i].len);
        memcpy(raw + off + 8, s[i].body, s[i].len);
        off += slot_size(s[i].len);
    }
    memcpy(raw + off, h->label, ll);
    crypto_auth_hmacsha256(raw + len - VMC_HDR_MAC_LEN, raw,
                           len - VMC_HDR_MAC_LEN, h->mac_key);
    free(h->raw);
    h->raw = raw;
    h->raw_len = len;
    return parse_body(ctx, h);
}

static int hdr_build(struct vmc_ctx *ctx, const struct vmc_keys *keys,
                     const struct vmc_keys *signer, const uint8_t *session_key,
                     uint32_t chunk_size, const char *label, uint32_t flags,
                     uint32_t version, struct vmc_header **out);

int hdr_new(struct vmc_ctx *ctx, const struct vmc_keys *keys,
            uint32_t chunk_size, const char *label, uint32_t flags,
            uint32_t version, struct vmc_header **out)
{
    return hdr_build(ctx, keys, keys, NULL, chunk_size, label, flags,
                     version, out);
}

/* A live session header: flag LIVE, one SESSION slot, the session's key;
 * always signed. */
int hdr_new_with_key(struct vmc_ctx *ctx, const uint8_t *file_key,
                     const struct vmc_keys *signer, uint32_t chunk_size,
                     const char *label, struct vmc_header **out)
{
    return hdr_build(ctx, NULL, signer, file_key, chunk_size, label,
                     VMC_HF_LIVE, VMC_VERSION, out);
}

/* The signer block: signer_pk and header_sig over the fixed fields. */
static int sign_header(struct vmc_ctx *ctx, struct vmc_header *h,
                       const struct vmc_keys *signer)
{
    const struct vmc_key *k = keys_signing(signer);
    uint8_t msg[VMC_HDR_SIG_MSG_LEN];

    if (!k) {
        vmc_set_error(ctx, VMC_E_KEY, "no signing key to sign the stream with");
        return vmc_set_hint(ctx, VMC_HINT_SIGNING_KEY);
    }
    if (!(h->sign_sk = sodium_malloc(crypto_sign_SECRETKEYBYTES)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
    memcpy(h->sign_sk, k->sec, crypto_sign_SECRETKEYBYTES);
    memcpy(h->signer_pk, k->pub, VMC_SIGN_PK_LEN);
    vmc_hdr_sig_msg(msg, &h->h, h->signer_pk);
    crypto_sign_detached(h->header_sig, NULL, msg, sizeof(msg), h->sign_sk);
    h->is_signed = h->sig_ok = true;
    return 0;
}

static int hdr_build(struct vmc_ctx *ctx, const struct vmc_keys *keys,
                     const struct vmc_keys *signer, const uint8_t *session_key,
                     uint32_t chunk_size, const char *label, uint32_t flags,
                     uint32_t version, struct vmc_header **out)
{
    struct vmc_header *h = calloc(1, sizeof(*h));
    struct slotref s[VMC_MAX_SLOTS];
    uint8_t (*bodies)[96] = calloc(VMC_MAX_SLOTS, 96);
    int n = 0, rc;

    *out = NULL;
    if (!h || !bodies) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    if (label && (strlen(label) > VMC_LABEL_MAX)) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "label longer than %d bytes",
                           VMC_LABEL_MAX);
        goto out;
    }
    if (label && !utf8_ok((const uint8_t *)label, strlen(label), 1)) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "label: not UTF-8 text, or holds "
                           "control characters");
        goto out;
    }
    if (chunk_size < VMC_CHUNK_MIN || chunk_size > VMC_CHUNK_MAX ||
        (chunk_size & (chunk_size - 1))) {
        rc = vmc_set_error(ctx, VMC_E_INVAL,
                           "chunk size %u: must be a power of two in 64K..16M",
                           chunk_size);
        goto out;
    }
    if ((rc = hdr_alloc_keys(ctx, h)) < 0)
        goto out;
    memcpy(h->h.magic, VMC_MAGIC, VMC_MAGIC_LEN);
    h->h.version = version ? version : VMC_VERSION;
    h->h.aead = VMC_AEAD_CHACHA20POLY1305;
    h->h.compression = VMC_COMP_ZSTD;
    h->h.chunk_size = chunk_size;
    h->h.flags = flags;
    randombytes_buf(h->h.stream_id, 16);
    if (h->h.version == VMC_VERSION && (rc = sign_header(ctx, h, signer)) < 0)
        goto out;
    snprintf(h->label, sizeof(h->label), "%s", label ? label : "");
    if (session_key)
        memcpy(h->file_key, session_key, VMC_FILE_KEY_LEN);
    else
        randombytes_buf(h->file_key, VMC_FILE_KEY_LEN);
    if ((rc = hdr_derive(ctx, h)) < 0)
        goto out;
    if (session_key) {
        s[0].type = VMC_SLOT_SESSION;
        s[0].len = 0;
        s[0].body = bodies[0];
        n = 1;
    }
    for (int i = 0; keys && i < keys->n; i++) {
        if (!KEY_IS_SLOT_KEY(keys->k[i].kind) || keys->k[i].kind == KEY_IDENTITY)
            continue;
        if (n == VMC_MAX_SLOTS) {
            rc = vmc_set_error(ctx, VMC_E_LIMIT, "too many key slots (max %d)",
                               VMC_MAX_SLOTS);
            goto out;
        }
        if ((rc = slot_make(ctx, h, keys, &keys->k[i], &s[n].type, &s[n].len,
                            bodies[n])) < 0)
            goto out;
        s[n].body = bodies[n];
        n++;
    }
    if (n == 0) {
        rc = vmc_set_error(ctx, VMC_E_KEY,
                           "no recipient, passphrase or key file to seal to");
        goto out;
    }
    if ((rc = serialize(ctx, h, s, n)) < 0)
        goto out;
    h->unlocked = true;
out:
    free(bodies);
    if (rc < 0)
        vmc_header_free(h);
    else
        *out = h;
    return rc;
}

int vmc_header_match_slots(struct vmc_ctx *ctx, const struct vmc_header *h,
                           const struct vmc_keys *keys, int idx[32])
{
    uint8_t *fk = sodium_malloc(VMC_FILE_KEY_LEN);
    int n = 0, rc = 0;

    if (!fk)
        return vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
    for (int i = 0; i < h->nslots; i++)
        for (int j = 0; j < keys->n; j++) {
            int opened;
            rc = slot_try(ctx, h, i, &keys->k[j], fk, &opened);
            if (rc < 0)
                goto out;
            if (opened) {
                idx[n++] = i;
                break;
            }
        }
    rc = n;
out:
    sodium_free(fk);
    return rc;
}

int vmc_header_rekey(struct vmc_ctx *ctx, struct vmc_header *h,
                     const int *remove, int nremove, const struct vmc_keys *add)
{
    struct slotref s[VMC_MAX_SLOTS];
    uint8_t (*bodies)[96] = NULL;
    uint8_t *old = NULL;
    int n = 0, rc = 0;

    if (!h->unlocked)
        return vmc_set_error(ctx, VMC_E_INVAL, "header not unlocked");
    if (!(old = malloc(h->raw_len)) ||
        !(bodies = calloc(VMC_MAX_SLOTS, 96))) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(old, h->raw, h->raw_len);        /* slot bodies point here */
    for (int i = 0; i < h->nslots; i++) {
        int drop = 0;
        for (int j = 0; j < nremove; j++)
            drop |= remove[j] == i;
        if (drop)
            continue;
        s[n].type = h->slot[i].type;
        s[n].len = h->slot[i].body_len;
        s[n].body = old + h->slot[i].off + 8;
        n++;
    }
    for (int i = 0; add && i < add->n; i++) {
        if (!KEY_IS_SLOT_KEY(add->k[i].kind) || add->k[i].kind == KEY_IDENTITY)
            continue;
        if (n == VMC_MAX_SLOTS) {
            rc = vmc_set_error(ctx, VMC_E_LIMIT, "too many key slots (max %d)",
                               VMC_MAX_SLOTS);
            goto out;
        }
        if ((rc = slot_make(ctx, h, add, &add->k[i], &s[n].type, &s[n].len,
                            bodies[n])) < 0)
            goto out;
        s[n].body = bodies[n];
        n++;
    }
    if (n == 0) {
        rc = vmc_set_error(ctx, VMC_E_INVAL,
                           "refusing to remove the last key slot");
        goto out;
    }
    rc = serialize(ctx, h, s, n);
    h->opened_by = -1;
out:
    free(bodies);
    free(old);
    return rc;
}

int vmc_header_write(struct vmc_ctx *ctx, const struct vmc_header *h, int fd)
{
    return io_write_full(ctx, fd, h->raw, h->raw_len, "header");
}
