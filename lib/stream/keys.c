/*
 * keys.c - key strings, identity files, the key set.
 *
 * Owns: parsing and checking keys, and the set a tool hands to the header.
 * Must not: print: a secret goes only to the fd it is given.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define PFX_RECIPIENT "vmc1"
#define PFX_SECRET    "VMCKPT-SECRET-KEY-1"
#define PFX_RAW       "VMCKPT-RAW-KEY-1"
#define PFX_SIGNER    "vmcs1"
#define PFX_SIGNING   "VMCKPT-SIGNING-KEY-1"
#define KEYFILE_MAX   (64 * 1024)
#define ENC_LEN       48   /* base64url-nopad of 36 bytes */

static void cksum(uint8_t out[4], const char *pfx, const uint8_t key[32])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, NULL, 0, 4);
    crypto_generichash_update(&st, (const uint8_t *)pfx, strlen(pfx));
    crypto_generichash_update(&st, key, 32);
    crypto_generichash_final(&st, out, 4);
}

/* out must hold strlen(pfx) + ENC_LEN + 1 bytes. */
static void key_encode(char *out, size_t cap, const char *pfx,
                       const uint8_t key[32])
{
    uint8_t bin[36];
    size_t pl = strlen(pfx);

    memcpy(bin, key, 32);
    cksum(bin + 32, pfx, key);
    memcpy(out, pfx, pl);
    sodium_bin2base64(out + pl, cap - pl, bin, sizeof(bin),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(bin, sizeof(bin));
}

/* 0 if s (exactly, no trailing junk) is pfx + valid key, key filled;
 * else VMC_E_FORMAT (the caller names the object in its message). */
static int key_decode(const char *s, size_t len, const char *pfx,
                      uint8_t key[32])
{
    uint8_t bin[36], ck[4];
    size_t pl = strlen(pfx), binlen = 0;
    int rc = VMC_E_FORMAT;

    if (len != pl + ENC_LEN || memcmp(s, pfx, pl) != 0)
        return VMC_E_FORMAT;
    if (sodium_base642bin(bin, sizeof(bin), s + pl, ENC_LEN, NULL, &binlen,
                          NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        binlen != sizeof(bin))
        goto out;
    cksum(ck, pfx, bin);
    if (sodium_memcmp(ck, bin + 32, 4) != 0)
        goto out;
    memcpy(key, bin, 32);
    rc = 0;
out:
    sodium_memzero(bin, sizeof(bin));
    return rc;
}

struct vmc_keys *vmc_keys_new(void)
{
    return calloc(1, sizeof(struct vmc_keys));
}

void vmc_keys_free(struct vmc_keys *keys)
{
    if (!keys)
        return;
    for (int i = 0; i < keys->n; i++)
        sodium_free(keys->k[i].sec);     /* wipes */
    free(keys);
}

void vmc_keys_set_kdf(struct vmc_keys *keys, uint32_t ops, uint32_t mem_kib)
{
    keys->kdf_ops = ops;
    keys->kdf_mem_kib = mem_kib;
}

static struct vmc_key *key_slot(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                int kind, size_t seclen)
{
    struct vmc_key *k;

    if (keys->n >= VMC_MAX_KEYS) {
        vmc_set_error(ctx, VMC_E_LIMIT, "too many keys (max %d)", VMC_MAX_KEYS);
        return NULL;
    }
    k = &keys->k[keys->n];
    memset(k, 0, sizeof(*k));
    if (seclen) {
        k->sec = sodium_malloc(seclen);
        if (!k->sec) {
            vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
            return NULL;
        }
    }
    k->kind = kind;
    k->len = seclen;
    keys->n++;
    return k;
}

/* A public key string (pfx...) into pk, or the error: what is "recipient"
 * or "signer", of what it is the public half. */
static int public_decode(struct vmc_ctx *ctx, const char *s, const char *pfx,
                         const char *what, const char *of, uint8_t pk[32])
{
    if (key_decode(s, strlen(s), pfx, pk) == 0)
        return 0;
    /* never echo what may be a secret (cron mail, journals): a key line
     * is named, anything else shown by its first characters */
    if (!strncasecmp(s, "VMCKPT-", 7))
        return vmc_set_error(ctx, VMC_E_INVAL, "a secret key was given where a "
                             "%s belongs: refused, and not shown (a %s is the "
                             "public %s... string of %s)", what, what, pfx, of);
    return vmc_set_error(ctx, VMC_E_INVAL, "'%.6s...' (%zu characters): not a "
                         "valid %s (want %s...)", s, strlen(s), what, pfx);
}

int vmc_keys_add_recipient(struct vmc_ctx *ctx, struct vmc_keys *keys,
                           const char *recipient)
{
    uint8_t pk[32];
    struct vmc_key *k;
    int rc;

    if ((rc = public_decode(ctx, recipient, PFX_RECIPIENT, "recipient",
                            "an identity", pk)) < 0)
        return rc;
    for (int i = 0; i < keys->n; i++)      /* one slot per recipient */
        if (keys->k[i].kind == KEY_RECIPIENT && !memcmp(keys->k[i].pub, pk, 32))
            return 0;
    if (!(k = key_slot(ctx, keys, KEY_RECIPIENT, 0)))
        return vmc_ctx_errcode(ctx);
    memcpy(k->pub, pk, 32);
    return 0;
}

/* What a key file holds, and so who may read or write it. */
enum { FILE_PUBLIC,         /* recipients: anyone may read it */
       FILE_SECRET,         /* identities, raw and signing keys: only us */
       FILE_TRUST };        /* whom to trust: only root or us may write it */

/* Reads a small key file into sodium memory; *buf is NUL-terminated.  A
 * secret one that group or others may read or write is refused, as ssh
 * refuses such a private key; a list of whom to trust is only as good as
 * who may change it.  Both are judged on the file opened. */
static int slurp_key_file(struct vmc_ctx *ctx, const char *path, int kind,
                          char **buf, size_t *len)
{
    int fd, rc = 0;
    struct stat st;
    size_t got = 0;
    char *b = NULL;

    *buf = NULL;
    *len = 0;
    fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : dup(0);
    if (fd < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > KEYFILE_MAX) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "%s: key file too large", path);
        goto out;
    }
    if (kind == FILE_SECRET && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (st.st_mode & 077)) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: a secret key file open to "
                           "group or others (mode %04o): refused; make it 0600",
                           path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (kind == FILE_TRUST && fstat(fd, &st) == 0 &&
        ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022))) {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: writable by another user "
                           "than root or you (mode %04o, owner %u): refused",
                           path, (unsigned)(st.st_mode & 07777),
                           (unsigned)st.st_uid);
        goto out;
    }
    b = sodium_malloc(KEYFILE_MAX + 1);
    if (!b) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        goto out;
    }
    if ((rc = io_read_full(ctx, fd, b, KEYFILE_MAX + 1, &got, path)) < 0)
        goto out;
    if (got > KEYFILE_MAX) {
        rc = vmc_set_error(ctx, VMC_E_LIMIT, "%s: key file too large", path);
        goto out;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    b = NULL;
out:
    sodium_free(b);
    close(fd);
    return rc;
}

/* Calls fn for every key line (not comment, not blank) of text. */
typedef int (*line_fn)(struct vmc_ctx *, struct vmc_keys *, const char *path,
                       int lineno, const char *line, size_t len);

static int each_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                     const char *path, const char *text, line_fn fn, int *nkeys)
{
    const char *p = text;
    int lineno = 0, rc;

    *nkeys = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        size_t l = len;

        lineno++;
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t'))
            l--;
        while (l && (*p == ' ' || *p == '\t')) {
            p++;
            l--;
            len--;
        }
        if (l && *p != '#') {
            if ((rc = fn(ctx, keys, path, lineno, p, l)) < 0)
                return rc;
            (*nkeys)++;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    return 0;
}

/* A public key line, "KEY comment...": the key added with add, which
 * names the kind of key in its error. */
static int public_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                       const char *path, int lineno, const char *line, size_t len,
                       int (*add)(struct vmc_ctx *, struct vmc_keys *,
                                  const char *), const char *what)
{
    char tmp[128];

    for (size_t i = 0; i < len; i++)
        if (line[i] == ' ' || line[i] == '\t') {
            len = i;                /* "vmc1... host-name comment" */
            break;
        }
    if (len >= sizeof(tmp))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s:%d: not a valid %s", path,
                             lineno, what);
    memcpy(tmp, line, len);
    tmp[len] = '\0';
    if (add(ctx, keys, tmp) < 0) {
        vmc_ctx_clear(ctx);
        return vmc_set_error(ctx, VMC_E_INVAL, "%s:%d: not a valid %s", path,
                             lineno, what);
    }
    return 0;
}

static int recipient_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                          const char *path, int lineno, const char *line,
                          size_t len)
{
    return public_line(ctx, keys, path, lineno, line, len,
                       vmc_keys_add_recipient, "recipient");
}

/* Reads a key file of kind FILE_* and feeds its key lines to fn; what
 * names the kind, for a file that must hold one (NULL: may be empty). */
static int load_key_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                         const char *path, line_fn fn, int kind,
                         const char *what)
{
    char *text;
    size_t len;
    int rc, n;

    if ((rc = slurp_key_file(ctx, path, kind, &text, &len)) < 0)
        return rc;
    rc = each_line(ctx, keys, path, text, fn, &n);
    sodium_free(text);
    if (rc == 0 && n == 0 && what)
        rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: no %s", path, what);
    return rc;
}

int vmc_keys_add_recipients_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                 const char *path)
{
    return load_key_file(ctx, keys, path, recipient_line, FILE_PUBLIC,
                         "recipients");
}

static int identity_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                         const char *path, int lineno, const char *line,
                         size_t len)
{
    uint8_t key[32];
    struct vmc_key *k;

    if (key_decode(line, len, PFX_SECRET, key) == 0) {
        if (!(k = key_slot(ctx, keys, KEY_IDENTITY, 32)))
            goto fail;
        memcpy(k->sec, key, 32);
        crypto_scalarmult_base(k->pub, k->sec);
    } else if (key_decode(line, len, PFX_RAW, key) == 0) {
        if (!(k = key_slot(ctx, keys, KEY_RAW, 32)))
            goto fail;
        memcpy(k->sec, key, 32);
    } else {
        sodium_memzero(key, sizeof(key));
        return vmc_set_error(ctx, VMC_E_INVAL,
                             "%s:%d: not a vmckpt identity or key (corrupt or "
                             "truncated?)", path, lineno);
    }
    sodium_memzero(key, sizeof(key));
    return 0;
fail:
    sodium_memzero(key, sizeof(key));
    return vmc_ctx_errcode(ctx);
}

int vmc_keys_add_identity_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                               const char *path)
{
    return load_key_file(ctx, keys, path, identity_line, FILE_SECRET,
                         "identities");
}

int vmc_keys_add_keyfile(struct vmc_ctx *ctx, struct vmc_keys *keys,
                         const char *path)
{
    int before = keys->n, rc;

    if ((rc = vmc_keys_add_identity_file(ctx, keys, path)) < 0)
        return rc;
    for (int i = before; i < keys->n; i++)
        if (keys->k[i].kind != KEY_RAW)
            return vmc_set_error(ctx, VMC_E_INVAL,
                                 "%s: not a raw key file (an X25519 identity, "
                                 "which opens with its own option?)", path);
    return 0;
}

int vmc_keys_add_passphrase(struct vmc_ctx *ctx, struct vmc_keys *keys,
                            const char *pass, size_t len)
{
    struct vmc_key *k;

    if (len == 0)
        return vmc_set_error(ctx, VMC_E_INVAL, "empty passphrase");
    if (!(k = key_slot(ctx, keys, KEY_PASSPHRASE, len)))
        return vmc_ctx_errcode(ctx);
    memcpy(k->sec, pass, len);
    return 0;
}

int vmc_keys_count(const struct vmc_keys *keys)
{
    int n = 0;

    for (int i = 0; i < keys->n; i++)
        n += KEY_IS_SLOT_KEY(keys->k[i].kind);
    return n;
}

int vmc_keys_can_seal(const struct vmc_keys *keys)
{
    for (int i = 0; i < keys->n; i++)
        if (KEY_IS_SLOT_KEY(keys->k[i].kind) && keys->k[i].kind != KEY_IDENTITY)
            return 1;
    return 0;
}

/* ---- signing keys and trusted signers (format 2) -------------------- */

const struct vmc_key *keys_signing(const struct vmc_keys *keys)
{
    for (int i = 0; keys && i < keys->n; i++)
        if (keys->k[i].kind == KEY_SIGNING)
            return &keys->k[i];
    return NULL;
}

int keys_trusts(const struct vmc_keys *keys, const uint8_t pk[32])
{
    for (int i = 0; keys && i < keys->n; i++)
        if (keys->k[i].kind == KEY_SIGNER && !memcmp(keys->k[i].pub, pk, 32))
            return 1;
    return 0;
}

void vmc_keys_set_trust(struct vmc_keys *keys, int flags)
{
    keys->trust = flags;
}

int vmc_keys_trusted_count(const struct vmc_keys *keys)
{
    int n = 0;

    for (int i = 0; i < keys->n; i++)
        n += keys->k[i].kind == KEY_SIGNER;
    return n;
}

static int signing_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                        const char *path, int lineno, const char *line,
                        size_t len)
{
    uint8_t seed[32];
    struct vmc_key *k;

    if (keys_signing(keys))
        return vmc_set_error(ctx, VMC_E_INVAL, "%s:%d: a second signing key "
                             "(one signs)", path, lineno);
    if (key_decode(line, len, PFX_SIGNING, seed) != 0) {
        sodium_memzero(seed, sizeof(seed));
        return vmc_set_error(ctx, VMC_E_INVAL, "%s:%d: not a vmckpt signing key "
                             "(corrupt, truncated, or another kind of key?)",
                             path, lineno);
    }
    if (!(k = key_slot(ctx, keys, KEY_SIGNING, crypto_sign_SECRETKEYBYTES))) {
        sodium_memzero(seed, sizeof(seed));
        return vmc_ctx_errcode(ctx);
    }
    crypto_sign_seed_keypair(k->pub, k->sec, seed);
    sodium_memzero(seed, sizeof(seed));
    return 0;
}

int vmc_keys_add_signing_key_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                  const char *path)
{
    return load_key_file(ctx, keys, path, signing_line, FILE_SECRET,
                         "signing key");
}

int vmc_keys_signer(struct vmc_ctx *ctx, const struct vmc_keys *keys,
                    char out[VMC_RECIPIENT_STRLEN])
{
    const struct vmc_key *k = keys_signing(keys);

    out[0] = '\0';
    if (!k)
        return vmc_set_error(ctx, VMC_E_KEY, "no signing key");
    vmc_signer_string(k->pub, out);
    return 0;
}

int vmc_keys_add_trusted_signer(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                const char *signer)
{
    uint8_t pk[32];
    struct vmc_key *k;
    int rc;

    if ((rc = public_decode(ctx, signer, PFX_SIGNER, "signer", "a signing key",
                            pk)) < 0)
        return rc;
    if (keys_trusts(keys, pk))
        return 0;
    if (!(k = key_slot(ctx, keys, KEY_SIGNER, 0)))
        return vmc_ctx_errcode(ctx);
    memcpy(k->pub, pk, 32);
    return 0;
}

static int signer_line(struct vmc_ctx *ctx, struct vmc_keys *keys,
                       const char *path, int lineno, const char *line,
                       size_t len)
{
    return public_line(ctx, keys, path, lineno, line, len,
                       vmc_keys_add_trusted_signer, "signer (want vmcs1...)");
}

int vmc_keys_add_trusted_signers_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                      const char *path)
{
    return load_key_file(ctx, keys, path, signer_line, FILE_TRUST, NULL);
}

int vmc_keys_has_passphrase(const struct vmc_keys *keys)
{
    for (int i = 0; i < keys->n; i++)
        if (keys->k[i].kind == KEY_PASSPHRASE)
            return 1;
    return 0;
}

/* Creates path 0600, never following or replacing anything. */
static int create_secret_file(struct vmc_ctx *ctx, const char *path,
                              const char *text)
{
    int fd, rc = 0;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)      /* the words vmimage seal uses */
        return vmc_set_error(ctx, VMC_E_EXISTS, "%s: already exists", path);
    if (fd < 0)
        return vmc_set_error(ctx, VMC_E_IO, "%s: %s", path, strerror(errno));
    if ((rc = io_write_full(ctx, fd, text, strlen(text), path)) == 0 &&
        fsync(fd) < 0)
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) < 0 && rc == 0)
        rc = vmc_set_error(ctx, VMC_E_IO, "%s: close: %s", path, strerror(errno));
    if (rc < 0)
        unlink(path);
    return rc;
}

/* A new key file's text in locked memory (*out: sodium_free it). */
static int keygen_text(struct vmc_ctx *ctx, int kind, char **out,
                       char pub[VMC_RECIPIENT_STRLEN])
{
    uint8_t *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    char *text = sodium_malloc(512);
    char line[96], when[64];
    uint8_t pk[32];
    time_t now = time(NULL);
    struct tm tm;
    int rc = 0;

    *out = NULL;
    pub[0] = '\0';
    if (!sk || !text) {
        rc = vmc_set_error(ctx, VMC_E_NOMEM, "cannot allocate secure memory");
        goto out;
    }
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    randombytes_buf(sk, 32);
    if (kind == VMC_KEYGEN_RAW) {
        key_encode(line, sizeof(line), PFX_RAW, sk);
        snprintf(text, 512, "# vmckpt raw key, created: %s\n%s\n", when, line);
    } else if (kind == VMC_KEYGEN_SIGNING) {
        uint8_t seed[32];
        memcpy(seed, sk, 32);               /* sk: the seed, then the pair */
        crypto_sign_seed_keypair(pk, sk, seed);
        key_encode(pub, VMC_RECIPIENT_STRLEN, PFX_SIGNER, pk);
        key_encode(line, sizeof(line), PFX_SIGNING, seed);
        sodium_memzero(seed, sizeof(seed));
        snprintf(text, 512, "# vmckpt signing key, created: %s\n# signer: %s\n"
                 "%s\n", when, pub, line);
    } else if (kind == VMC_KEYGEN_IDENTITY) {
        crypto_scalarmult_base(pk, sk);
        key_encode(pub, VMC_RECIPIENT_STRLEN, PFX_RECIPIENT, pk);
        key_encode(line, sizeof(line), PFX_SECRET, sk);
        snprintf(text, 512, "# vmckpt identity, created: %s\n# recipient: %s\n"
                 "%s\n", when, pub, line);
    } else {
        rc = vmc_set_error(ctx, VMC_E_INVAL, "keygen: unknown key kind %d", kind);
        goto out;
    }
    sodium_memzero(line, sizeof(line));
    *out = text;
    text = NULL;
out:
    sodium_free(sk);
    sodium_free(text);
    return rc;
}

int vmc_keygen(struct vmc_ctx *ctx, const char *path, int kind,
               char pub[VMC_RECIPIENT_STRLEN])
{
    char *text;
    int rc;

    if (!strcmp(path, "-"))          /* stdout is the caller's: vmc_keygen_fd */
        return vmc_set_error(ctx, VMC_E_INVAL, "keygen: '-' is not a file");
    if ((rc = keygen_text(ctx, kind, &text, pub)) < 0)
        return rc;
    rc = create_secret_file(ctx, path, text);
    sodium_free(text);
    return rc;
}

int vmc_keygen_fd(struct vmc_ctx *ctx, int fd, const char *what, int kind,
                  char pub[VMC_RECIPIENT_STRLEN])
{
    char *text;
    int rc;

    if ((rc = keygen_text(ctx, kind, &text, pub)) < 0)
        return rc;
    rc = io_write_full(ctx, fd, text, strlen(text), what);
    sodium_free(text);
    return rc;
}

void vmc_recipient_string(const uint8_t pk[32], char out[VMC_RECIPIENT_STRLEN])
{
    key_encode(out, VMC_RECIPIENT_STRLEN, PFX_RECIPIENT, pk);
}

void vmc_signer_string(const uint8_t pk[32], char out[VMC_RECIPIENT_STRLEN])
{
    key_encode(out, VMC_RECIPIENT_STRLEN, PFX_SIGNER, pk);
}

int vmc_identity_recipient(struct vmc_ctx *ctx, const char *path,
                           char pub[VMC_RECIPIENT_STRLEN])
{
    struct vmc_keys *keys = vmc_keys_new();
    int rc;

    pub[0] = '\0';
    if (!keys)
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if ((rc = vmc_keys_add_identity_file(ctx, keys, path)) < 0)
        goto out;
    for (int i = 0; i < keys->n; i++)
        if (keys->k[i].kind == KEY_IDENTITY) {
            key_encode(pub, VMC_RECIPIENT_STRLEN, PFX_RECIPIENT, keys->k[i].pub);
            goto out;
        }
    rc = vmc_set_error(ctx, VMC_E_INVAL, "%s: no X25519 identity in file", path);
out:
    vmc_keys_free(keys);
    return rc;
}
