/*
 * unit.c - unit tests of libvmckpt: round trips, truncation sweeps, bit
 * flips, chunk reorder/duplicate, keys, record-layer rules, KDF caps.
 * Prints "PASS: name" / "FAIL: name: why" lines; tests/run.sh counts them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "internal.h"
#include "backend/backend.h"
#include "check.h"

/* ---- buffers and memfds -------------------------------------------------- */

struct buf {
    uint8_t *p;
    size_t n;
};

static int memfd_from(const uint8_t *p, size_t n)
{
    int fd = memfd_create("vmc-test", 0);

    if (fd < 0 || io_write_full(NULL, fd, p, n, "memfd") < 0 || lseek(fd, 0, SEEK_SET) < 0)
        abort();
    return fd;
}

static struct buf memfd_take(int fd)
{
    struct buf b;
    off_t end = lseek(fd, 0, SEEK_END);
    size_t got;

    b.n = (size_t)end;
    b.p = malloc(b.n + 1);
    lseek(fd, 0, SEEK_SET);
    if (!b.p || io_read_full(NULL, fd, b.p, b.n, &got, "memfd") < 0 || got != b.n)
        abort();
    close(fd);
    return b;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    /* guest-memory-like: zero runs, text-ish and random runs */
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t page = i / 4096;
        if (page % 3 == 0)
            p[i] = 0;
        else if (page % 3 == 1)
            p[i] = (uint8_t)("abcdefgh ijklmnop\n"[(i + page) % 18]);
        else
            p[i] = (uint8_t)(seed >> 16);
    }
}

/* ---- keys used by the tests ------------------------------------------- */

static struct vmc_keys *k_seal, *k_open, *k_wrong, *k_pass, *k_badpass;
static char wrong_pub[VMC_RECIPIENT_STRLEN];   /* k_wrong's recipient */
static char recipient[VMC_RECIPIENT_STRLEN];
static struct vmc_keys *k_rogue;               /* signs with an untrusted key */
static char signer[VMC_RECIPIENT_STRLEN], rogue_signer[VMC_RECIPIENT_STRLEN];
static char sign_path[] = "/tmp/vmc-unit-sk-XXXXXX";

static void sign_path_rm(void)
{
    unlink(sign_path);
}

/* A key set that signs as the tests' signer and trusts it. */
static struct vmc_keys *keys_new(void)
{
    struct vmc_keys *k = vmc_keys_new();

    if (vmc_keys_add_signing_key_file(NULL, k, sign_path) < 0 ||
        vmc_keys_add_trusted_signer(NULL, k, signer) < 0)
        abort();
    return k;
}

/* Where the chunks and the slots of a test image are (format 2 unless
 * its version word says 1). */
static size_t sig_len(const uint8_t *img)
{
    return vmc_get32(img + 8) == VMC_VERSION ? VMC_SIG_LEN : 0;
}

static size_t slots_at(const uint8_t *img)
{
    return VMC_HDR_FIXED_LEN + (sig_len(img) ? VMC_SIGNER_BLOCK_LEN : 0);
}

static int setup_keys(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    char id[] = "/tmp/vmc-unit-id-XXXXXX", id2[] = "/tmp/vmc-unit-id2-XXXXXX";
    int fd;

    if (vmc_init(ctx) < 0)
        return -1;
    if ((fd = mkstemp(id)) < 0 || (close(fd), unlink(id), 0) ||
        vmc_keygen(ctx, id, 0, recipient) < 0)
        return -1;
    if ((fd = mkstemp(id2)) < 0 || (close(fd), unlink(id2), 0) ||
        vmc_keygen(ctx, id2, 0, wrong_pub) < 0)
        return -1;
    k_seal = vmc_keys_new();
    k_open = vmc_keys_new();
    k_wrong = vmc_keys_new();
    k_pass = vmc_keys_new();
    k_badpass = vmc_keys_new();
    if (vmc_keys_add_recipient(ctx, k_seal, recipient) < 0 ||
        vmc_keys_add_identity_file(ctx, k_open, id) < 0 ||
        vmc_keys_add_identity_file(ctx, k_wrong, id2) < 0 ||
        vmc_keys_add_passphrase(ctx, k_pass, "correct horse", 13) < 0 ||
        vmc_keys_add_passphrase(ctx, k_badpass, "correct hors", 12) < 0)
        return -1;
    vmc_keys_set_kdf(k_pass, 1, VMC_ARGON2_MEM_MIN_KIB);   /* fast tests */
    /* format 2: the writers sign with one key, every reader trusts it; a
     * second key (k_rogue) signs what no reader trusts */
    {
        char *sk = sign_path, sk2[] = "/tmp/vmc-unit-sk2-XXXXXX";
        struct vmc_keys *all[] = { k_seal, k_open, k_wrong, k_pass, k_badpass };
        k_rogue = vmc_keys_new();
        if ((fd = mkstemp(sk)) < 0 || (close(fd), unlink(sk), 0) ||
            vmc_keygen(ctx, sk, VMC_KEYGEN_SIGNING, signer) < 0 ||
            (fd = mkstemp(sk2)) < 0 || (close(fd), unlink(sk2), 0) ||
            vmc_keygen(ctx, sk2, VMC_KEYGEN_SIGNING, rogue_signer) < 0 ||
            vmc_keys_add_recipient(ctx, k_rogue, recipient) < 0 ||
            vmc_keys_add_signing_key_file(ctx, k_rogue, sk2) < 0)
            return -1;
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
            if (vmc_keys_add_signing_key_file(ctx, all[i], sk) < 0 ||
                vmc_keys_add_trusted_signer(ctx, all[i], signer) < 0)
                return -1;
        atexit(sign_path_rm);
        unlink(sk2);
    }
    unlink(id);
    unlink(id2);
    vmc_ctx_free(ctx);
    return 0;
}

/* ---- writing and reading whole images ---------------------------------- */

struct img_spec {
    const uint8_t *backend;
    size_t backend_len;
    uint32_t chunk;
    int level, threads;
    int with_config, with_note, with_unknown_opt, with_unknown_mand;
    const struct vmc_keys *keys;
    int unsigned_v1;          /* write format 1 */
};

static struct buf write_image(const struct img_spec *s)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_writer_opts o = { .chunk_size = s->chunk, .level = s->level,
                                 .threads = s->threads, .label = "unit",
                                 .unsigned_v1 = s->unsigned_v1 };
    struct vmc_image_meta m;
    struct vmc_writer *w;
    uint8_t info[2048];
    size_t ilen;
    int fd = memfd_create("img", 0), src;

    memset(&m, 0, sizeof(m));
    strcpy(m.name, "unit-domain");
    strcpy(m.host, "testhost");
    m.memory_kib = 1 << 20;
    m.vcpus = 2;
    m.backend = VMC_BACKEND_QEMU;
    m.stream_format = VMC_SFMT_QEMU;
    if (vmc_image_info_build(&m, info, sizeof(info), &ilen) < 0 ||
        vmc_writer_new(ctx, fd, s->keys ? s->keys : k_seal, &o, &w) < 0 ||
        vmc_writer_record(w, VMC_REC_IMAGE_INFO, info, ilen) < 0) {
        fprintf(stderr, "write_image: %s\n", vmc_ctx_error(ctx));
        abort();
    }
    if (s->with_config) {
        uint8_t cfg[8 + 13] = { 2, 0, 0, 0, 0, 0, 0, 0 };
        memcpy(cfg + 8, "{\"argv\":[1]}\n", 13);
        if (vmc_writer_record(w, VMC_REC_DOMAIN_CONFIG, cfg, sizeof(cfg)) < 0)
            abort();
    }
    if (s->with_note && vmc_writer_record(w, VMC_REC_NOTE, "hello", 5) < 0)
        abort();
    if (s->with_unknown_opt &&
        vmc_writer_record(w, 0x8000abcdu, "skip me please", 14) < 0)
        abort();
    if (s->with_unknown_mand && vmc_writer_record(w, 0x0000abcdu, "x", 1) < 0)
        abort();
    src = memfd_from(s->backend, s->backend_len);
    if (vmc_writer_copy_backend(w, src, NULL, NULL) < 0 ||
        vmc_writer_finish(w, 123, 45) < 0) {
        fprintf(stderr, "write_image: %s\n", vmc_ctx_error(ctx));
        abort();
    }
    close(src);
    vmc_writer_free(w);
    vmc_ctx_free(ctx);
    return memfd_take(fd);
}

/* Reads an image; returns 0 or the error code; *out gets the backend
 * stream; msg the error message. */
static struct vmc_where last_where;   /* of read_image's error */

static int read_image(const uint8_t *p, size_t n, const struct vmc_keys *keys,
                      struct buf *out, struct vmc_summary *sum, char *msg)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_header *h = NULL;
    struct vmc_reader *r = NULL;
    int in = memfd_from(p, n), ofd = memfd_create("out", 0), rc;
    struct vmc_summary local = { 0 };

    if (!sum)
        sum = &local;
    if ((rc = vmc_header_read(ctx, in, &h)) < 0)
        goto out;
    if ((rc = vmc_header_unlock(ctx, h, keys ? keys : k_open)) < 0)
        goto out;
    if ((rc = vmc_reader_new(ctx, in, h, 2, 1, &r)) < 0) {
        h = NULL;
        goto out;
    }
    h = NULL;
    rc = vmc_reader_drain(r, ofd, NULL, NULL, sum);
out:
    if (msg)
        snprintf(msg, 256, "%s", vmc_ctx_error(ctx));
    vmc_ctx_where(ctx, &last_where);
    if (rc == 0 && (!msg || 1) && strcmp(vmc_ctx_error(ctx), "no error"))
        rc = -99;                       /* success must leave no error */
    if (sum == &local)
        vmc_summary_free(&local);
    vmc_reader_free(r);
    vmc_header_free(h);
    close(in);
    if (out)
        *out = memfd_take(ofd);
    else
        close(ofd);
    vmc_ctx_free(ctx);
    return rc;
}

/* ---- tests ------------------------------------------------------------ */

static int t_roundtrip_sizes(void)
{
    size_t sizes[] = { 0, 1, 7, 8, 4095, 65536, 65537, 300000, 1 << 20,
                       (1 << 20) + 3, 3 << 20 };
    uint8_t *data = malloc(3 << 20);

    fill_pattern(data, 3 << 20, 1);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (int c = 0; c < 2; c++) {
            struct img_spec s = { .backend = data, .backend_len = sizes[i],
                                  .chunk = c ? VMC_CHUNK_MIN : 0 };
            struct buf img = write_image(&s), out;
            char msg[256];
            int rc = read_image(img.p, img.n, NULL, &out, NULL, msg);
            REQUIRE(rc == 0, "size %zu chunk %d: rc %d %s", sizes[i], c, rc, msg);
            REQUIRE(out.n == sizes[i] && !memcmp(out.p, data, out.n),
                    "size %zu: backend stream differs", sizes[i]);
            free(img.p);
            free(out.p);
        }
    free(data);
    return 0;
}

static int t_roundtrip_records(void)
{
    uint8_t data[200000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN, .with_config = 1,
                          .with_note = 1, .with_unknown_opt = 1 };
    struct vmc_summary sum;
    struct buf img, out;
    char msg[256];
    int seen_cfg = 0, seen_note = 0, seen_unknown = 0, rc;

    fill_pattern(data, sizeof(data), 2);
    img = write_image(&s);
    rc = read_image(img.p, img.n, NULL, &out, &sum, msg);
    REQUIRE(rc == 0, "rc %d: %s", rc, msg);
    REQUIRE(!strcmp(sum.meta.name, "unit-domain") &&
            !strcmp(sum.meta.host, "testhost") && sum.meta.vcpus == 2 &&
            sum.meta.memory_kib == 1 << 20 && sum.meta.backend == VMC_BACKEND_QEMU,
            "IMAGE_INFO did not round-trip");
    REQUIRE(sum.config_format == 2 && sum.config_len == 13, "DOMAIN_CONFIG");
    REQUIRE(sum.end.total_time_ns == 123 && sum.end.downtime_ns == 45 &&
            sum.end.backend_bytes == sizeof(data), "END statistics");
    for (int i = 0; i < sum.ntypes; i++) {
        seen_cfg |= sum.types[i].type == VMC_REC_DOMAIN_CONFIG;
        seen_note |= sum.types[i].type == VMC_REC_NOTE;
        seen_unknown |= sum.types[i].type == 0x8000abcdu;
    }
    vmc_summary_free(&sum);
    REQUIRE(seen_cfg && seen_note && !seen_unknown,
            "record types seen: config %d note %d unknown-optional %d", seen_cfg,
            seen_note, seen_unknown);
    REQUIRE(out.n == sizeof(data) && !memcmp(out.p, data, out.n), "backend");
    free(img.p);
    free(out.p);
    return 0;
}

static int t_unknown_mandatory(void)
{
    uint8_t data[1000] = { 1 };
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .with_unknown_mand = 1 };
    struct buf img = write_image(&s);
    char msg[256];
    int rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);

    REQUIRE(rc == VMC_E_UNSUPPORTED && strstr(msg, "unknown mandatory record") &&
            strstr(msg, "0x0000abcd"), "rc %d: %s", rc, msg);
    free(img.p);
    return 0;
}

static int t_keys(void)
{
    uint8_t data[5000];
    struct vmc_keys *both = keys_new(), *none = keys_new();
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct img_spec s = { .backend = data, .backend_len = sizeof(data) };
    struct buf img, out;
    char msg[256];
    int rc;

    fill_pattern(data, sizeof(data), 3);
    /* recipient: right and wrong identity */
    img = write_image(&s);
    rc = read_image(img.p, img.n, k_wrong, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_KEY && strstr(msg, "wrong identity"), "wrong id: %d %s",
            rc, msg);
    rc = read_image(img.p, img.n, none, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_KEY, "no key: %d %s", rc, msg);
    {   /* the library names no option: it hints, the tool says the words */
        struct vmc_header *h = NULL;
        int in = memfd_from(img.p, img.n);
        rc = vmc_header_read(ctx, in, &h);
        if (rc == 0)
            rc = vmc_header_unlock(ctx, h, none);
        REQUIRE(rc == VMC_E_KEY && vmc_ctx_hint(ctx) == VMC_HINT_GIVE_KEY &&
                !strchr(vmc_ctx_error(ctx), '-'), "no key: rc %d hint %d '%s'",
                rc, vmc_ctx_hint(ctx), vmc_ctx_error(ctx));
        vmc_header_free(h);
        close(in);
        vmc_ctx_clear(ctx);
        REQUIRE(vmc_ctx_hint(ctx) == VMC_HINT_NONE, "hint survives a clear");
    }
    free(img.p);
    /* passphrase: right and wrong */
    s.keys = k_pass;
    img = write_image(&s);
    rc = read_image(img.p, img.n, k_badpass, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_KEY && strstr(msg, "wrong passphrase"),
            "wrong pass: %d %s", rc, msg);
    rc = read_image(img.p, img.n, k_pass, &out, NULL, msg);
    REQUIRE(rc == 0 && out.n == sizeof(data), "pass: %d %s", rc, msg);
    free(out.p);
    free(img.p);
    /* both slots: either key opens */
    vmc_keys_add_recipient(ctx, both, recipient);
    vmc_keys_add_passphrase(ctx, both, "correct horse", 13);
    vmc_keys_set_kdf(both, 1, VMC_ARGON2_MEM_MIN_KIB);
    s.keys = both;
    img = write_image(&s);
    REQUIRE(read_image(img.p, img.n, k_open, NULL, NULL, msg) == 0, "%s", msg);
    REQUIRE(read_image(img.p, img.n, k_pass, NULL, NULL, msg) == 0, "%s", msg);
    REQUIRE(read_image(img.p, img.n, k_wrong, NULL, NULL, msg) == VMC_E_KEY,
            "wrong key opened a two-slot image");
    free(img.p);
    vmc_keys_free(both);
    vmc_keys_free(none);
    vmc_ctx_free(ctx);
    return 0;
}

static int t_key_strings(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_keys *k = vmc_keys_new();
    char bad[VMC_RECIPIENT_STRLEN];

    strcpy(bad, recipient);
    bad[10] = bad[10] == 'A' ? 'B' : 'A';          /* checksum catches it */
    REQUIRE(vmc_keys_add_recipient(ctx, k, bad) == VMC_E_INVAL,
            "typo in a recipient accepted");
    vmc_ctx_clear(ctx);
    REQUIRE(vmc_keys_add_recipient(ctx, k, "age1xyz") == VMC_E_INVAL,
            "foreign recipient accepted");
    vmc_ctx_clear(ctx);
    REQUIRE(vmc_keys_add_recipient(ctx, k, recipient) == 0, "good recipient");
    vmc_keys_free(k);
    vmc_ctx_free(ctx);
    return 0;
}

/* Chunk boundaries: offsets of each length word after the header. */
static int chunk_offsets(const struct buf *img, size_t *offs, int max)
{
    size_t off = vmc_get32(img->p + 12);
    int n = 0;

    while (off + 4 <= img->n && n < max) {
        offs[n++] = off;
        off += 4 + (vmc_get32(img->p + off) & VMC_CHUNK_LEN_MASK) +
               sig_len(img->p);
    }
    offs[n] = img->n;
    return n;
}

static int t_truncation(void)
{
    static uint8_t data[600000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN };
    struct buf img;
    size_t offs[256];
    int n, tried = 0;

    fill_pattern(data, sizeof(data), 4);
    img = write_image(&s);
    n = chunk_offsets(&img, offs, 255);
    REQUIRE(n >= 8, "expected many chunks, got %d", n);
    /* every chunk boundary, inside every length word, sampled inside chunks */
    for (int i = 0; i <= n; i++) {
        size_t cuts[6] = { offs[i], offs[i] + 1, offs[i] + 3, offs[i] + 4,
                           offs[i] + 17, 0 };
        if (i < n)
            cuts[5] = offs[i] + (offs[i + 1] - offs[i]) / 2;
        for (int c = 0; c < 6; c++) {
            char msg[256];
            int rc;
            if (cuts[c] == 0 || cuts[c] >= img.n)
                continue;
            rc = read_image(img.p, cuts[c], NULL, NULL, NULL, msg);
            REQUIRE(rc == VMC_E_TRUNC || rc == VMC_E_AUTH,
                    "cut at %zu: rc %d %s", cuts[c], rc, msg);
            tried++;
        }
    }
    /* inside the header */
    for (size_t cut = 0; cut < offs[0]; cut += 7) {
        REQUIRE(read_image(img.p, cut, NULL, NULL, NULL, NULL) == VMC_E_TRUNC,
                "header cut at %zu", cut);
        tried++;
    }
    REQUIRE(tried > 40, "too few cuts");
    free(img.p);
    return 0;
}

/* A small image (header, IMAGE_INFO, DOMAIN_CONFIG, NOTE, four chunks of
 * compressible stream, END) cut at every offset, none skipped: each cut
 * is refused as truncated (or, inside a chunk's sealed bytes, as failing
 * authentication), and only the whole image reads. */
static int t_truncation_every_offset(void)
{
    static uint8_t data[3 * VMC_CHUNK_MIN + 4321];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN, .with_config = 1,
                          .with_note = 1 };
    struct buf img;
    struct vmc_header *h;
    struct vmc_header_info hi;
    struct vmc_ctx *ctx = vmc_ctx_new();
    int trunc = 0, auth = 0;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)("vmckpt "[i % 7] + (i >> 14));
    img = write_image(&s);
    REQUIRE(vmc_header_parse(ctx, img.p, img.n, &h) == 0, "header");
    vmc_header_get_info(h, &hi);
    vmc_header_free(h);
    vmc_ctx_free(ctx);
    REQUIRE(img.n < 16384, "the image is not small: %zu bytes", img.n);
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, NULL) == 0,
            "the whole image does not read");
    for (size_t cut = 0; cut < img.n; cut++) {
        char msg[256];
        int rc = read_image(img.p, cut, NULL, NULL, NULL, msg);
        REQUIRE(rc == VMC_E_TRUNC || rc == VMC_E_AUTH,
                "cut at %zu of %zu: rc %d %s", cut, img.n, rc, msg);
        /* past the header, the error names the chunk where it was met */
        REQUIRE(cut < hi.header_len ||
                (last_where.kind == VMC_AT_CHUNK && last_where.offset <= cut &&
                 last_where.offset >= hi.header_len),
                "cut at %zu: place kind %d @0x%llx (%s)", cut, last_where.kind,
                (unsigned long long)last_where.offset, msg);
        trunc += rc == VMC_E_TRUNC;
        auth += rc == VMC_E_AUTH;
    }
    REQUIRE(trunc > 0, "no cut said truncated");
    free(img.p);
    return 0;
}

static int t_bitflips(void)
{
    static uint8_t data[300000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN, .with_config = 1 };
    struct buf img;
    size_t hlen, step;
    int flips = 0;

    fill_pattern(data, sizeof(data), 5);
    img = write_image(&s);
    hlen = vmc_get32(img.p + 12);
    /* every byte of the header, a spread of the payload, every bit pos */
    step = (img.n - hlen) / 150 + 1;
    for (size_t off = 0; off < img.n; off += off < hlen ? 1 : step) {
        uint8_t save = img.p[off];
        char msg[256];
        int rc;
        img.p[off] ^= (uint8_t)(1u << (off % 8));
        rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
        img.p[off] = save;
        REQUIRE(rc < 0 && rc != -99, "flip at %zu accepted", off);
        REQUIRE(strchr(msg, '\n') == NULL && msg[0], "flip at %zu: bad message",
                off);
        flips++;
    }
    /* last byte */
    img.p[img.n - 1] ^= 0x80;
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, NULL) == VMC_E_AUTH,
            "flip of the last tag byte accepted");
    REQUIRE(flips > 200, "too few flips");
    free(img.p);
    return 0;
}

static struct buf splice_chunks(const struct buf *img, const size_t *offs,
                                const int *order, int n)
{
    struct buf o;
    size_t hlen = offs[0];

    o.p = malloc(img->n * 2);
    memcpy(o.p, img->p, hlen);
    o.n = hlen;
    for (int i = 0; i < n; i++) {
        size_t a = offs[order[i]], b = offs[order[i] + 1];
        memcpy(o.p + o.n, img->p + a, b - a);
        o.n += b - a;
    }
    return o;
}

static int t_reorder_duplicate(void)
{
    static uint8_t data[400000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN };
    struct buf img, bad;
    size_t offs[64];
    int n, order[64];
    char msg[256];

    fill_pattern(data, sizeof(data), 6);
    img = write_image(&s);
    n = chunk_offsets(&img, offs, 63);
    REQUIRE(n >= 4, "chunks %d", n);
    for (int i = 0; i < n; i++)
        order[i] = i;
    /* swap 1 and 2 */
    order[1] = 2;
    order[2] = 1;
    bad = splice_chunks(&img, offs, order, n);
    REQUIRE(read_image(bad.p, bad.n, NULL, NULL, NULL, msg) == VMC_E_AUTH,
            "reorder: %s", msg);
    REQUIRE(strstr(msg, "chunk 1 "), "reorder message: %s", msg);
    free(bad.p);
    /* duplicate chunk 1 */
    for (int i = 0; i < n; i++)
        order[i] = i;
    {
        int dup[65], k = 0;
        for (int i = 0; i < n; i++) {
            dup[k++] = order[i];
            if (i == 1)
                dup[k++] = 1;
        }
        bad = splice_chunks(&img, offs, dup, k);
    }
    REQUIRE(read_image(bad.p, bad.n, NULL, NULL, NULL, msg) == VMC_E_AUTH,
            "duplicate: %s", msg);
    free(bad.p);
    /* drop a middle chunk */
    {
        int drop[64], k = 0;
        for (int i = 0; i < n; i++)
            if (i != 2)
                drop[k++] = i;
        bad = splice_chunks(&img, offs, drop, k);
    }
    REQUIRE(read_image(bad.p, bad.n, NULL, NULL, NULL, msg) == VMC_E_AUTH,
            "drop: %s", msg);
    free(bad.p);
    /* final chunk replaced by... nothing: covered by truncation; the final
     * chunk moved earlier: */
    for (int i = 0; i < n; i++)
        order[i] = i;
    order[n - 2] = n - 1;
    order[n - 1] = n - 2;
    bad = splice_chunks(&img, offs, order, n);
    REQUIRE(read_image(bad.p, bad.n, NULL, NULL, NULL, msg) < 0,
            "final moved: %s", msg);
    free(bad.p);
    /* trailing garbage */
    bad.p = malloc(img.n + 1);
    memcpy(bad.p, img.p, img.n);
    bad.p[img.n] = 0;
    REQUIRE(read_image(bad.p, img.n + 1, NULL, NULL, NULL, msg) == VMC_E_FORMAT &&
            strstr(msg, "after the final chunk"), "trailing: %s", msg);
    free(bad.p);
    free(img.p);
    return 0;
}

/* The final flag in the length word is authenticated. */
static int t_final_flag(void)
{
    uint8_t data[200000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN };
    struct buf img;
    size_t offs[64];
    int n;
    char msg[256];

    fill_pattern(data, sizeof(data), 7);
    img = write_image(&s);
    n = chunk_offsets(&img, offs, 63);
    img.p[offs[1] + 3] |= 0x80;      /* claim chunk 1 is final */
    REQUIRE(read_image(img.p, offs[2], NULL, NULL, NULL, msg) == VMC_E_AUTH,
            "forged final flag accepted: %s", msg);
    /* the whole image, its tail behind the forged FINAL: the tag fails
     * first (the spec's detection table), not "data after the final" */
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == VMC_E_AUTH &&
            strstr(msg, "chunk 1 "), "forged final, whole image: %s", msg);
    img.p[offs[1] + 3] &= 0x7f;
    img.p[offs[n - 1] + 3] &= 0x7f;  /* unmark the real final chunk */
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == VMC_E_AUTH,
            "unmarked final chunk accepted: %s", msg);
    free(img.p);
    return 0;
}

/* Hostile Argon2id parameters are refused before any KDF work. */
static int t_kdf_caps(void)
{
    uint8_t data[100] = { 0 };
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .keys = k_pass };
    struct buf img = write_image(&s);
    size_t slot = slots_at(img.p) + 8;     /* the one Argon2id slot body */
    char msg[256];
    int rc;

    REQUIRE(vmc_get16(img.p + slots_at(img.p)) == VMC_SLOT_ARGON2ID, "slot");
    vmc_put32(img.p + slot + 20, 4u << 20);        /* 4 GiB */
    rc = read_image(img.p, img.n, k_pass, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_LIMIT && strstr(msg, "memory"), "mem: %d %s", rc, msg);
    vmc_put32(img.p + slot + 20, VMC_ARGON2_MEM_MIN_KIB);
    vmc_put32(img.p + slot + 16, 1000);
    rc = read_image(img.p, img.n, k_pass, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_LIMIT && strstr(msg, "opslimit"), "ops: %d %s", rc, msg);
    vmc_put32(img.p + slot + 16, 0);
    rc = read_image(img.p, img.n, k_pass, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_LIMIT, "ops 0: %d %s", rc, msg);
    free(img.p);
    return 0;
}

/* Many passphrase slots, each within the caps, at the maximum cost: the
 * work an open would do is bounded before any of it is done. */
static int t_kdf_work_bound(void)
{
    uint8_t data[100] = { 0 };
    struct vmc_keys *three = keys_new();
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .keys = three };
    struct buf img;
    size_t off = VMC_HDR_FIXED_LEN;
    char msg[256];
    int rc, n = 0;

    vmc_keys_set_kdf(three, VMC_ARGON2_OPS_MIN, VMC_ARGON2_MEM_MIN_KIB);
    REQUIRE(vmc_keys_add_passphrase(NULL, three, "one", 3) == 0 &&
            vmc_keys_add_passphrase(NULL, three, "two", 3) == 0 &&
            vmc_keys_add_passphrase(NULL, three, "three", 5) == 0, "keys");
    img = write_image(&s);
    off = slots_at(img.p);
    for (int i = 0; i < 3; i++) {       /* every slot to 16 passes, 1 GiB */
        uint32_t blen = vmc_get32(img.p + off + 4);
        if (vmc_get16(img.p + off) == VMC_SLOT_ARGON2ID) {
            vmc_put32(img.p + off + 8 + 16, VMC_ARGON2_OPS_MAX);
            vmc_put32(img.p + off + 8 + 20, VMC_ARGON2_MEM_MAX_KIB);
            n++;
        }
        off += 8 + VMC_PAD8(blen);
    }
    REQUIRE(n == 3, "%d Argon2id slots", n);
    rc = read_image(img.p, img.n, k_pass, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_LIMIT && strstr(msg, "refused before any work") &&
            strstr(msg, "3 passphrase slots"), "3 max-cost slots: %d %s", rc, msg);
    free(img.p);
    vmc_keys_free(three);
    return 0;
}

static int t_rekey(void)
{
    uint8_t data[70000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data) };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_header *h = NULL;
    struct buf img, out;
    int in, idx[32], n, rm0 = 0;
    char msg[256];

    fill_pattern(data, sizeof(data), 8);
    img = write_image(&s);
    in = memfd_from(img.p, img.n);
    REQUIRE(vmc_header_read(ctx, in, &h) == 0 &&
            vmc_header_unlock(ctx, h, k_open) == 0, "%s", vmc_ctx_error(ctx));
    n = vmc_header_match_slots(ctx, h, k_open, idx);
    REQUIRE(n == 1 && idx[0] == 0, "match_slots %d", n);
    /* add a passphrase, remove the recipient */
    REQUIRE(vmc_header_rekey(ctx, h, &rm0, 1, k_pass) == 0, "%s",
            vmc_ctx_error(ctx));
    {
        int ofd = memfd_create("rk", 0);
        REQUIRE(vmc_header_write(ctx, h, ofd) == 0 &&
                vmc_copy_fd(ctx, in, ofd, "img") == 0, "copy");
        out = memfd_take(ofd);
    }
    REQUIRE(read_image(out.p, out.n, k_open, NULL, NULL, msg) == VMC_E_KEY,
            "removed recipient still opens: %s", msg);
    REQUIRE(read_image(out.p, out.n, k_pass, NULL, NULL, msg) == 0,
            "added passphrase: %s", msg);
    /* the payload bytes are untouched */
    REQUIRE(img.n - vmc_get32(img.p + 12) == out.n - vmc_get32(out.p + 12) &&
            !memcmp(img.p + vmc_get32(img.p + 12), out.p + vmc_get32(out.p + 12),
                    img.n - vmc_get32(img.p + 12)), "payload changed");
    /* removing the last slot is refused */
    REQUIRE(vmc_header_rekey(ctx, h, &rm0, 1, NULL) == VMC_E_INVAL,
            "removed the last slot");
    vmc_header_free(h);
    close(in);
    free(img.p);
    free(out.p);
    vmc_ctx_free(ctx);
    return 0;
}

/* ---- crafted plaintext: exercise record-layer rules through the
 * authenticated path, with the internal chunk writer. */

static struct buf craft(const uint8_t *plain, size_t n)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_header *h;
    struct chunkw *cw;
    int fd = memfd_create("craft", 0);

    if (hdr_new(ctx, k_seal, VMC_CHUNK_MIN, NULL, 0, VMC_VERSION, &h) < 0 ||
        vmc_header_write(ctx, h, fd) < 0 ||
        chunkw_new(ctx, fd, h, 1, 0, 1, &cw) < 0 || chunkw_write(cw, plain, n) < 0 ||
        chunkw_close(cw) < 0)
        abort();
    chunkw_free(cw);
    vmc_header_free(h);
    vmc_ctx_free(ctx);
    return memfd_take(fd);
}

struct pt {
    uint8_t b[16384];
    size_t n;
    uint64_t records, backend;
};

static void pt_rec(struct pt *p, uint32_t type, const void *body, uint32_t len,
                   int count)
{
    vmc_put32(p->b + p->n, type);
    vmc_put32(p->b + p->n + 4, len);
    memset(p->b + p->n + 8, 0, VMC_PAD8(len));
    memcpy(p->b + p->n + 8, body, len);
    p->n += 8 + VMC_PAD8(len);
    if (count)
        p->records++;
    if (type == VMC_REC_BACKEND_STREAM)
        p->backend += len;
}

static void pt_end(struct pt *p, int64_t dr, int64_t db, int64_t dp)
{
    uint8_t e[40];
    struct vmc_wire_end we = { (uint64_t)((int64_t)p->records + dr),
                               (uint64_t)((int64_t)p->backend + db),
                               (uint64_t)((int64_t)p->n + dp), 0, 0 };
    vmc_end_encode(e, &we);
    pt_rec(p, VMC_REC_END, e, 40, 0);
}

static int expect_craft(struct pt *p, int want, const char *needle)
{
    struct buf img = craft(p->b, p->n);
    char msg[256];
    int rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);

    free(img.p);
    if (rc != want || (needle && !strstr(msg, needle))) {
        snprintf(why, sizeof(why), "want %d '%s', got %d '%s'", want,
                 needle ? needle : "", rc, msg);
        return -1;
    }
    if (want) {                     /* the reader says where, as it says */
        char at[32];
        snprintf(at, sizeof(at), "@0x%llx:",
                 (unsigned long long)last_where.offset);
        if (last_where.kind != VMC_AT_RECORD ||
            (strstr(msg, "@0x") && !strstr(msg, at))) {
            snprintf(why, sizeof(why), "'%s': place kind %d offset 0x%llx",
                     msg, last_where.kind,
                     (unsigned long long)last_where.offset);
            return -1;
        }
    }
    return 0;
}

/* A crafted IMAGE_INFO: 48 octets, then the name "crafted" (7 octets and
 * one of padding).  k: 'I' valid, 'i' 40 octets, 'n' no name, 'p' padding
 * not zero, 'o' the string overruns the body, 'r' reserved word set. */
static void pt_info_kind(struct pt *p, char k)
{
    uint8_t b[60] = { 0 };
    size_t len = sizeof(b);

    vmc_put16(b + 48, VMC_INFO_NAME);
    vmc_put16(b + 50, k == 'o' ? 20 : 7);
    memcpy(b + 52, "crafted", 7);
    if (k == 'p')
        b[59] = 1;
    if (k == 'r')
        vmc_put32(b + 44, 1);
    if (k == 'i')
        len = 40;
    if (k == 'n')
        len = 48;
    pt_rec(p, VMC_REC_IMAGE_INFO, b, (uint32_t)len, 1);
}

/* Disk records for the rules: disk 0 "vda" of 2048 octets (k: not
 * carried; P: a parent; F: an unknown flag), an extent of all of it (O:
 * at 64 KiB, beyond it; a: at 512, off the grain; J: of disk 5), its
 * DISK_END (y: a wrong digest; w: wrong counts; z: 48 octets). */
#define PT_DISK_SIZE 2048
static void pt_disk_data(uint8_t *d)
{
    for (int i = 0; i < PT_DISK_SIZE; i++)
        d[i] = (uint8_t)(i * 7 + 1);
}

static void pt_disk(struct pt *p, char k)
{
    struct vmc_wire_disk d = { .disk = 0, .flags = VMC_DF_CARRIED,
                               .virtual_size = PT_DISK_SIZE,
                               .block_size = 512,
                               .source_format = VMC_DISK_FMT_RAW,
                               .id_len = 3 };
    uint8_t b[VMC_DISK_FIXED_LEN + 3];

    if (k == 'k')
        d.flags = 0;
    if (k == 'F')
        d.flags |= 0x100;
    if (k == 'P')
        d.parent[3] = 1;
    vmc_disk_encode(b, &d);
    memcpy(b + VMC_DISK_FIXED_LEN, "vda", 3);
    pt_rec(p, VMC_REC_DISK, b, sizeof(b), 1);
}

static void pt_extent(struct pt *p, char k)
{
    struct vmc_wire_disk_extent e = { k == 'J' ? 5 : 0, 0,
                                      k == 'O' ? VMC_DISK_GRAIN :
                                      k == 'a' ? 512 : 0 };
    uint8_t b[VMC_DISK_EXTENT_HEAD + PT_DISK_SIZE];

    vmc_disk_extent_encode(b, &e);
    pt_disk_data(b + VMC_DISK_EXTENT_HEAD);
    pt_rec(p, VMC_REC_DISK_EXTENT, b, k == 'a' ? VMC_DISK_EXTENT_HEAD + 512 :
           (uint32_t)sizeof(b), 1);
}

static void pt_disk_end(struct pt *p, char k)
{
    struct vmc_wire_disk_end e = { 0, 0, k == 'w' ? 2 : 1, PT_DISK_SIZE, { 0 } };
    struct vmc_ctx *ctx = vmc_ctx_new();
    uint8_t d[PT_DISK_SIZE], b[VMC_DISK_END_LEN];
    int fd = memfd_create("disk", 0);

    pt_disk_data(d);
    if (write(fd, d, sizeof(d)) != (ssize_t)sizeof(d) ||
        vmc_disk_file_digest(ctx, fd, PT_DISK_SIZE, e.digest) < 0)
        abort();
    close(fd);
    vmc_ctx_free(ctx);
    if (k == 'y')
        e.digest[0] ^= 1;
    vmc_disk_end_encode(b, &e);
    pt_rec(p, VMC_REC_DISK_END, b, k == 'z' ? 48 : VMC_DISK_END_LEN, 1);
}

/* Builds the stream spelled by ops, one character per record. */
static void pt_build(struct pt *p, const char *ops)
{
    uint8_t cfg[8] = { 1 }, round[24] = { 1 };

    memset(p, 0, sizeof(*p));
    for (const char *o = ops; *o; o++) {
        switch (*o) {
        case 'K': case 'k': case 'P': case 'F': pt_disk(p, *o); break;
        case 'X': case 'O': case 'a': case 'J': pt_extent(p, *o); break;
        case 'Y': case 'y': case 'w': case 'z': pt_disk_end(p, *o); break;
        case 'I': case 'i': case 'n': case 'p': case 'o': case 'r':
            pt_info_kind(p, *o);
            break;
        case 'd': {                     /* IMAGE_INFO naming it twice */
            uint8_t b[72] = { 0 };
            for (int k = 0; k < 2; k++) {
                vmc_put16(b + 48 + 12 * k, VMC_INFO_NAME);
                vmc_put16(b + 50 + 12 * k, 7);
                memcpy(b + 52 + 12 * k, k ? "another" : "crafted", 7);
            }
            pt_rec(p, VMC_REC_IMAGE_INFO, b, sizeof(b), 1);
            break;
        }
        case 'C': pt_rec(p, VMC_REC_DOMAIN_CONFIG, cfg, 8, 1); break;
        case 'c':
            vmc_put32(cfg + 4, 7);
            pt_rec(p, VMC_REC_DOMAIN_CONFIG, cfg, 8, 1);
            break;
        case 'h': pt_rec(p, VMC_REC_DOMAIN_CONFIG, cfg, 4, 1); break;
        case 'S': pt_rec(p, VMC_REC_BACKEND_STREAM, "abc", 3, 1); break;
        case 's': pt_rec(p, VMC_REC_BACKEND_STREAM, "", 0, 1); break;
        case 'N': pt_rec(p, VMC_REC_NOTE, "a note", 6, 1); break;
        case 'R': pt_rec(p, VMC_REC_PRECOPY_ROUND, round, 24, 1); break;
        case 'q': pt_rec(p, VMC_REC_PRECOPY_ROUND, round, 16, 1); break;
        case 'Q':
            vmc_put32(round + 4, 1);
            pt_rec(p, VMC_REC_PRECOPY_ROUND, round, 24, 1);
            break;
        case 'U': pt_rec(p, 0x80000077u, "skip me", 7, 1); break;
        case 'M': pt_rec(p, 0x00000077u, "refuse", 6, 1); break;
        case 'Z': p->b[p->n - 1] = 1; break;     /* the last padding octet */
        case 'L':
            vmc_put32(p->b + p->n, VMC_REC_BACKEND_STREAM);
            vmc_put32(p->b + p->n + 4, VMC_REC_MAX_LEN + 1);
            p->n += 8;
            break;
        case 'E': pt_end(p, 0, 0, 0); break;
        case 'e': pt_end(p, 1, 0, 0); break;
        case 'b': pt_end(p, 0, -1, 0); break;
        case 'x': pt_end(p, 0, 0, 8); break;
        case 'l': {
            uint8_t e[32] = { 0 };
            pt_rec(p, VMC_REC_END, e, 32, 0);
            break;
        }
        }
    }
}

/* The record layer's rules (format/vmckpt-stream.md, "Record layer"),
 * one row each: the stream spelled as records (pt_build), what a reader
 * must say. */
static const struct {
    const char *rule, *ops;
    int want;
    const char *needle;
} record_rules[] = {
    { "a minimal stream reads", "IE", 0, NULL },
    { "IMAGE_INFO is the first record", "SE", VMC_E_FORMAT,
      "first record must be IMAGE_INFO" },
    { "no optional record before IMAGE_INFO", "NIE", VMC_E_FORMAT,
      "first record must be IMAGE_INFO" },
    { "IMAGE_INFO exactly once", "IIE", VMC_E_FORMAT, "IMAGE_INFO @0x" },
    { "IMAGE_INFO at least 48 octets", "iE", VMC_E_FORMAT, "< 48" },
    { "IMAGE_INFO has a name", "nE", VMC_E_FORMAT, "no domain name" },
    { "an IMAGE_INFO string stays in the body", "oE", VMC_E_FORMAT,
      "out of range" },
    { "IMAGE_INFO string padding is zero", "pE", VMC_E_FORMAT,
      "string padding not zero" },
    { "IMAGE_INFO reserved word is zero", "rE", VMC_E_FORMAT,
      "reserved field not zero" },
    { "a known IMAGE_INFO string tag at most once", "dE", VMC_E_FORMAT,
      "string tag 1 twice" },
    { "DOMAIN_CONFIG at most once", "ICCE", VMC_E_FORMAT,
      "duplicate or after backend data" },
    { "DOMAIN_CONFIG before BACKEND_STREAM", "ISCE", VMC_E_FORMAT,
      "DOMAIN_CONFIG" },
    { "DOMAIN_CONFIG at least 8 octets", "IhE", VMC_E_FORMAT, "< 8" },
    { "DOMAIN_CONFIG reserved word is zero", "IcE", VMC_E_FORMAT,
      "DOMAIN_CONFIG @0x48: reserved field not zero" },
    { "BACKEND_STREAM at least 1 octet", "IsE", VMC_E_FORMAT, "empty" },
    { "a length above 16 MiB is refused before the body", "IL", VMC_E_FORMAT,
      "> max 0x1000000" },
    { "record padding is zero", "ISZE", VMC_E_FORMAT, "padding not zero" },
    { "END is the last record", "IEN", VMC_E_FORMAT, "data follows END" },
    { "END is there", "IS", VMC_E_TRUNC, "no END" },
    { "END counts the records", "ISe", VMC_E_FORMAT, "counts do not match" },
    { "END counts the backend bytes", "ISb", VMC_E_FORMAT,
      "counts do not match" },
    { "END is at plaintext_bytes", "ISx", VMC_E_FORMAT, "counts do not match" },
    { "END is 40 octets", "ISl", VMC_E_FORMAT, "expected 40" },
    { "an unknown optional record is skipped", "IUSE", 0, NULL },
    { "an unknown mandatory record is refused", "IME", VMC_E_UNSUPPORTED,
      "unknown mandatory record" },
    { "optional records anywhere after IMAGE_INFO", "INCNRSNRE", 0, NULL },
    { "PRECOPY_ROUND is 24 octets", "IqE", VMC_E_FORMAT, "expected 24" },
    { "PRECOPY_ROUND reserved word is zero", "IRQE", VMC_E_FORMAT,
      "PRECOPY_ROUND @0x68: reserved field not zero" },
    /* disks ("Disks") */
    { "a carried disk reads", "ICKSXYE", 0, NULL },
    { "a disk that is not carried reads", "ICkSE", 0, NULL },
    { "DISK before backend data", "ICSKE", VMC_E_FORMAT,
      "after backend or disk data" },
    { "DOMAIN_CONFIG before DISK", "IKCE", VMC_E_FORMAT,
      "duplicate or after backend data" },
    { "DISK index unique", "ICKKE", VMC_E_FORMAT, "index given twice" },
    { "DISK flags known", "ICFE", VMC_E_FORMAT, "unknown flags" },
    { "an incremental DISK is refused", "ICPE", VMC_E_UNSUPPORTED,
      "incremental" },
    { "DISK_EXTENT of a described disk", "ICKJYE", VMC_E_FORMAT,
      "no DISK record describes" },
    { "DISK_EXTENT within the virtual size", "ICKOE", VMC_E_FORMAT,
      "beyond the disk's virtual size" },
    { "DISK_EXTENT offset on the grain", "ICKaE", VMC_E_FORMAT, "64 KiB grain" },
    { "DISK_EXTENT of a carried disk only", "ICkXE", VMC_E_FORMAT,
      "not carried" },
    { "DISK_EXTENTs ascending, not overlapping", "ICKXXYE", VMC_E_FORMAT,
      "overlaps" },
    { "DISK_END counts its extents", "ICKXwE", VMC_E_FORMAT,
      "counts do not match its extents" },
    { "DISK_END digest matches the content", "ICKXyE", VMC_E_FORMAT,
      "content digest does not match" },
    { "a carried disk has its DISK_END", "ICKXE", VMC_E_FORMAT,
      "without its DISK_END" },
    { "no DISK_EXTENT after DISK_END", "ICKXYXE", VMC_E_FORMAT,
      "after its DISK_END" },
    { "DISK_END is 56 octets", "ICKXzE", VMC_E_FORMAT, "expected 56" },
};

static int t_record_rules(void)
{
    for (size_t i = 0; i < sizeof(record_rules) / sizeof(record_rules[0]); i++) {
        struct pt p;
        pt_build(&p, record_rules[i].ops);
        if (expect_craft(&p, record_rules[i].want, record_rules[i].needle)) {
            char w[300];
            snprintf(w, sizeof(w), "%.299s", why);
            snprintf(why, sizeof(why), "rule '%s' (%s): %s",
                     record_rules[i].rule, record_rules[i].ops, w);
            return -1;
        }
    }
    return 0;
}

/* Format 2: who signed is checked before any slot, every chunk's signature
 * before the chunk is opened; format 1 only when the reader allows it. */
static int t_signatures(void)
{
    static uint8_t data[300000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_header *h = NULL;
    struct buf img, out;
    size_t offs[64];
    char msg[256];
    int rc, n, in;

    fill_pattern(data, sizeof(data), 11);
    /* an untrusted signer: refused at the header, before any slot */
    s.keys = k_rogue;
    img = write_image(&s);
    rc = read_image(img.p, img.n, k_open, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_UNTRUSTED && strstr(msg, rogue_signer) &&
            strstr(msg, "not a trusted signer"), "rogue: %d %s", rc, msg);
    in = memfd_from(img.p, img.n);
    REQUIRE(vmc_header_read(ctx, in, &h) == 0 &&
            vmc_header_check_signer(ctx, h, k_open) == VMC_E_UNTRUSTED &&
            vmc_ctx_hint(ctx) == VMC_HINT_TRUST_SIGNER && !vmc_header_trusted(h, k_open),
            "check_signer: %s", vmc_ctx_error(ctx));
    vmc_header_free(h);
    close(in);
    vmc_ctx_clear(ctx);
    free(img.p);
    /* a trusted one, read in full; then each signature damaged */
    s.keys = NULL;
    img = write_image(&s);
    REQUIRE(read_image(img.p, img.n, NULL, &out, NULL, msg) == 0 &&
            out.n == sizeof(data) && !memcmp(out.p, data, out.n), "trusted: %s",
            msg);
    free(out.p);
    n = chunk_offsets(&img, offs, 63);
    REQUIRE(n >= 4, "chunks %d", n);
    for (int i = 0; i < n; i++) {           /* the last octet of each sig */
        img.p[offs[i + 1] - 1] ^= 0x40;
        rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
        img.p[offs[i + 1] - 1] ^= 0x40;
        REQUIRE(rc == VMC_E_AUTH && strstr(msg, "signature does not verify") &&
                last_where.index == (uint64_t)i, "sig %d: %d %s", i, rc, msg);
    }
    img.p[VMC_HDR_FIXED_LEN + 3] ^= 1;      /* the signer's key */
    rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_AUTH && strstr(msg, "signer it names"), "pk: %d %s", rc,
            msg);
    img.p[VMC_HDR_FIXED_LEN + 3] ^= 1;
    vmc_put32(img.p + 20, VMC_CHUNK_MIN * 2);   /* signed content */
    rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
    REQUIRE(rc == VMC_E_AUTH, "chunk_size changed: %d %s", rc, msg);
    vmc_put32(img.p + 20, VMC_CHUNK_MIN);
    vmc_put32(img.p + 8, VMC_VERSION_UNSIGNED);   /* a downgrade */
    vmc_keys_set_trust(k_open, VMC_TRUST_UNSIGNED);
    rc = read_image(img.p, img.n, k_open, NULL, NULL, msg);
    vmc_keys_set_trust(k_open, 0);
    REQUIRE(rc < 0, "downgraded to format 1 accepted");
    vmc_put32(img.p + 8, VMC_VERSION);
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == 0, "restored");
    /* a rogue signature grafted onto a trusted chunk */
    {
        struct buf r2;
        size_t o2[64];
        s.keys = k_rogue;
        r2 = write_image(&s);
        REQUIRE(chunk_offsets(&r2, o2, 63) == n, "same chunking");
        memcpy(img.p + offs[2] - VMC_SIG_LEN, r2.p + o2[2] - VMC_SIG_LEN,
               VMC_SIG_LEN);
        rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
        REQUIRE(rc == VMC_E_AUTH && last_where.index == 1, "graft: %d %s", rc,
                msg);
        free(r2.p);
    }
    free(img.p);
    /* format 1: refused unless allowed, and then read in full */
    {
        s.keys = NULL;
        s.unsigned_v1 = 1;
        img = write_image(&s);
        REQUIRE(vmc_get32(img.p + 8) == 1, "version %u", vmc_get32(img.p + 8));
        rc = read_image(img.p, img.n, NULL, NULL, NULL, msg);
        REQUIRE(rc == VMC_E_UNTRUSTED && strstr(msg, "unsigned"), "v1: %d %s",
                rc, msg);
        vmc_keys_set_trust(k_open, VMC_TRUST_UNSIGNED);
        rc = read_image(img.p, img.n, k_open, &out, NULL, msg);
        vmc_keys_set_trust(k_open, 0);
        REQUIRE(rc == 0 && out.n == sizeof(data), "v1 allowed: %s", msg);
        free(out.p);
        free(img.p);
    }
    vmc_ctx_free(ctx);
    return 0;
}

/* Header fields: bad magic names text-mode mangling; bad version, ids. */
static int t_header_fields(void)
{
    uint8_t data[100] = { 0 };
    struct img_spec s = { .backend = data, .backend_len = sizeof(data) };
    struct buf img = write_image(&s);
    char msg[256];
    uint8_t save[16];

    memcpy(save, img.p, 16);
    img.p[5] = '\n';                 /* CRLF -> LF shifts the magic */
    memmove(img.p + 6, img.p + 7, 1);
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == VMC_E_FORMAT &&
            strstr(msg, "altered in transfer"), "mangled magic: %s", msg);
    memcpy(img.p, save, 16);
    vmc_put32(img.p + 8, 3);
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == VMC_E_UNSUPPORTED &&
            strstr(msg, "version"), "version: %s", msg);
    memcpy(img.p, save, 16);
    REQUIRE(read_image(img.p, img.n, NULL, NULL, NULL, msg) == 0, "restored");
    free(img.p);
    return 0;
}

/* Streaming through a pipe with a concurrent reader process. */
static int t_pipe(void)
{
    static uint8_t data[2500000];
    int pfd[2], status;
    pid_t pid;

    fill_pattern(data, sizeof(data), 9);
    REQUIRE(pipe(pfd) == 0, "pipe");
    pid = fork();
    if (pid == 0) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_header *h;
        struct vmc_reader *r;
        struct vmc_summary sum;
        int ofd = memfd_create("o", 0);
        struct buf out;
        close(pfd[1]);
        if (vmc_header_read(ctx, pfd[0], &h) < 0 ||
            vmc_header_unlock(ctx, h, k_open) < 0 ||
            vmc_reader_new(ctx, pfd[0], h, 2, 1, &r) < 0 ||
            vmc_reader_drain(r, ofd, NULL, NULL, &sum) < 0) {
            fprintf(stderr, "child: %s\n", vmc_ctx_error(ctx));
            _exit(1);
        }
        out = memfd_take(ofd);
        _exit(out.n == sizeof(data) && !memcmp(out.p, data, out.n) ? 0 : 2);
    }
    close(pfd[0]);
    {
        struct vmc_ctx *ctx = vmc_ctx_new();
        struct vmc_writer *w;
        struct vmc_writer_opts o = { .chunk_size = VMC_CHUNK_MIN };
        uint8_t info[512];
        size_t ilen;
        struct vmc_image_meta m;
        int src = memfd_from(data, sizeof(data));
        memset(&m, 0, sizeof(m));
        strcpy(m.name, "pipe");
        vmc_image_info_build(&m, info, sizeof(info), &ilen);
        REQUIRE(vmc_writer_new(ctx, pfd[1], k_seal, &o, &w) == 0 &&
                vmc_writer_record(w, VMC_REC_IMAGE_INFO, info, ilen) == 0 &&
                vmc_writer_copy_backend(w, src, NULL, NULL) == 0 &&
                vmc_writer_flush(w) == 0 && vmc_writer_finish(w, 0, 0) == 0,
                "writer: %s", vmc_ctx_error(ctx));
        vmc_writer_free(w);
        close(src);
        close(pfd[1]);
        vmc_ctx_free(ctx);
    }
    waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %d",
            status);
    return 0;
}

/* The adaptive writer: a sink that never fills (a file) walks the level
 * down to storing; a sink that is always full (a socket or a pipe with a
 * slow reader) keeps the ceiling; every stream reads back whole. */
static struct buf adaptive_image(const uint8_t *data, size_t n, int slow)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_writer_opts o = { .chunk_size = VMC_CHUNK_MIN, .threads = 1,
                                 .adaptive = 1 };
    struct vmc_writer *w;
    struct vmc_image_meta m;
    uint8_t info[512];
    size_t ilen;
    int img = memfd_create("adaptive", 0), pfd[2] = { -1, -1 }, src, status;
    pid_t pid = -1;

    if (slow) {                    /* a child drains a socket, slowly */
        int sb = 65536;
        if ((slow == 2 ? pipe(pfd) :     /* 2: a pipe (ssh's stdin) */
             socketpair(AF_UNIX, SOCK_STREAM, 0, pfd) ||
             setsockopt(pfd[1], SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb))) < 0 ||
            (pid = fork()) < 0)
            abort();
        if (pid == 0) {
            static uint8_t b[16384];
            ssize_t r;
            close(pfd[1]);
            while ((r = read(pfd[0], b, sizeof(b))) > 0) {
                if (write(img, b, (size_t)r) != r)
                    _exit(1);
                usleep(2000);
            }
            _exit(r < 0);
        }
        close(pfd[0]);
    }
    src = memfd_from(data, n);
    memset(&m, 0, sizeof(m));
    strcpy(m.name, "adaptive");
    vmc_image_info_build(&m, info, sizeof(info), &ilen);
    if (vmc_writer_new(ctx, slow ? pfd[1] : img, k_seal, &o, &w) < 0 ||
        vmc_writer_record(w, VMC_REC_IMAGE_INFO, info, ilen) < 0 ||
        vmc_writer_copy_backend(w, src, NULL, NULL) < 0 ||
        vmc_writer_finish(w, 0, 0) < 0) {
        fprintf(stderr, "adaptive_image: %s\n", vmc_ctx_error(ctx));
        abort();
    }
    vmc_writer_free(w);
    close(src);
    if (slow) {
        close(pfd[1]);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status))
            abort();
    }
    vmc_ctx_free(ctx);
    return memfd_take(img);
}

static int t_adaptive(void)
{
    static const char *words[] = { "page ", "kernel ", "vmckpt ", "zero ",
                                   "migrate ", "domain ", "\n", "0x1f ",
                                   "restore ", "the " };
    size_t n = 6u << 20, fill = 0;
    uint8_t *data = malloc(n);
    uint32_t x = 12345;
    struct buf fast, slow, piped, out;
    char msg[256];

    while (fill < n) {              /* text: compresses about 4:1 */
        const char *wd;
        x = x * 1103515245u + 12345u;
        wd = words[(x >> 16) % 10];
        for (; *wd && fill < n; wd++)
            data[fill++] = (uint8_t)*wd;
    }
    fast = adaptive_image(data, n, 0);
    slow = adaptive_image(data, n, 1);
    piped = adaptive_image(data, n, 2);
    REQUIRE(read_image(fast.p, fast.n, NULL, &out, NULL, msg) == 0 &&
            out.n == n && !memcmp(out.p, data, n), "file sink: %s", msg);
    free(out.p);
    REQUIRE(read_image(slow.p, slow.n, NULL, &out, NULL, msg) == 0 &&
            out.n == n && !memcmp(out.p, data, n), "slow socket: %s", msg);
    free(out.p);
    /* 96 chunks: after 16 the file sink stores; the slow socket stays at
     * level 1 (about 4:1) */
    REQUIRE(read_image(piped.p, piped.n, NULL, &out, NULL, msg) == 0 &&
            out.n == n && !memcmp(out.p, data, n), "slow pipe: %s", msg);
    free(out.p);
    REQUIRE(piped.n < n / 2, "slow pipe: %zu of %zu bytes: did not keep "
            "compressing", piped.n, n);
    REQUIRE(fast.n > n * 3 / 4, "file sink: %zu of %zu bytes: did not go down "
            "to storing", fast.n, n);
    REQUIRE(slow.n < n / 2, "slow socket: %zu of %zu bytes: did not keep "
            "compressing", slow.n, n);
    free(fast.p);
    free(slow.p);
    free(piped.p);
    free(data);
    return 0;
}

/* A reader whose consumer goes away must not hang: free with the I/O
 * thread blocked on an open, silent pipe. */
static int t_reader_cancel(void)
{
    uint8_t data[100000];
    struct img_spec s = { .backend = data, .backend_len = sizeof(data),
                          .chunk = VMC_CHUNK_MIN };
    struct buf img;
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_header *h;
    struct vmc_reader *r;
    struct vmc_record rec;
    size_t offs[16];
    int pfd[2];

    fill_pattern(data, sizeof(data), 10);
    img = write_image(&s);
    chunk_offsets(&img, offs, 15);
    REQUIRE(pipe(pfd) == 0, "pipe");
    /* header and the first chunk only, the write end stays open */
    REQUIRE(io_write_full(NULL, pfd[1], img.p, offs[1], "pipe") == 0, "write");
    REQUIRE(vmc_header_read(ctx, pfd[0], &h) == 0 &&
            vmc_header_unlock(ctx, h, k_open) == 0 &&
            vmc_reader_new(ctx, pfd[0], h, 2, 1, &r) == 0, "open");
    REQUIRE(vmc_reader_next(r, &rec) == 1 && rec.type == VMC_REC_IMAGE_INFO,
            "first record");
    vmc_reader_free(r);              /* must return */
    close(pfd[0]);
    close(pfd[1]);
    free(img.p);
    vmc_ctx_free(ctx);
    return 0;
}

/* A writer whose output fails reports the error (EPIPE), never hangs. */
static int t_writer_epipe(void)
{
    static uint8_t data[3000000];
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_writer *w;
    struct vmc_writer_opts o = { .chunk_size = VMC_CHUNK_MIN };
    int pfd[2], src, rc;

    signal(SIGPIPE, SIG_IGN);
    fill_pattern(data, sizeof(data), 11);
    REQUIRE(pipe(pfd) == 0, "pipe");
    close(pfd[0]);
    rc = vmc_writer_new(ctx, pfd[1], k_seal, &o, &w);
    REQUIRE(rc == VMC_E_IO && strstr(vmc_ctx_error(ctx), "Broken pipe"),
            "header write: %d %s", rc, vmc_ctx_error(ctx));
    close(pfd[1]);
    vmc_ctx_clear(ctx);
    /* now fail in the middle of the payload */
    REQUIRE(pipe(pfd) == 0, "pipe");
    if (fork() == 0) {                 /* read 100 KB then quit */
        char b[100000];
        size_t got;
        close(pfd[1]);
        io_read_full(NULL, pfd[0], b, sizeof(b), &got, "pipe");
        _exit(0);
    }
    close(pfd[0]);
    src = memfd_from(data, sizeof(data));
    rc = vmc_writer_new(ctx, pfd[1], k_seal, &o, &w);
    if (rc == 0)
        rc = vmc_writer_copy_backend(w, src, NULL, NULL);
    if (rc == 0)
        rc = vmc_writer_finish(w, 0, 0);
    REQUIRE(rc == VMC_E_IO && strstr(vmc_ctx_error(ctx), "chunk"),
            "payload write: %d %s", rc, vmc_ctx_error(ctx));
    vmc_writer_free(w);
    close(pfd[1]);
    close(src);
    wait(NULL);
    vmc_ctx_free(ctx);
    return 0;
}

static int t_outfile(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_outfile *of;
    char dir[] = "/tmp/vmc-of-XXXXXX", path[64], partial[80];
    struct stat st;

    REQUIRE(mkdtemp(dir), "mkdtemp");
    snprintf(path, sizeof(path), "%s/img", dir);
    snprintf(partial, sizeof(partial), "%s/img.partial", dir);
    REQUIRE(vmc_outfile_open(ctx, path, 0, &of) == 0, "open");
    REQUIRE(stat(partial, &st) == 0 && (st.st_mode & 0777) == 0600, "0600");
    REQUIRE(stat(path, &st) < 0, "final name exists before commit");
    vmc_outfile_free(of);                     /* abort */
    REQUIRE(stat(partial, &st) < 0, "partial left after abort");
    /* a stale partial (not locked) is replaced */
    close(open(partial, O_CREAT | O_WRONLY, 0600));
    REQUIRE(vmc_outfile_open(ctx, path, 0, &of) == 0, "stale: %s",
            vmc_ctx_error(ctx));
    REQUIRE(io_write_full(NULL, vmc_outfile_fd(of), "x", 1, "outfile") == 0 &&
            vmc_outfile_commit(ctx, of) == 0, "commit");
    vmc_outfile_free(of);
    REQUIRE(stat(path, &st) == 0 && st.st_size == 1 && stat(partial, &st) < 0,
            "commit result");
    REQUIRE(vmc_outfile_open(ctx, path, 0, &of) == VMC_E_EXISTS,
            "overwrote an existing image");
    unlink(path);
    rmdir(dir);
    vmc_ctx_free(ctx);
    return 0;
}

/* A split set: pieces of piece_size bytes, each .partial until the
 * commit, none under its final name before; abort, and the guardian's
 * cleanup of a killed save, remove every piece; a set reads back as the
 * stream it was cut from. */
static int t_outfile_split(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_outfile *of;
    struct vmc_input *in;
    char dir[] = "/tmp/vmc-sp-XXXXXX", path[64], name[96];
    static uint8_t buf[(3u << 20) + 100], back[sizeof(buf) + 1];
    struct stat st;
    size_t got;

    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + i / 4096);
    REQUIRE(mkdtemp(dir), "mkdtemp");
    snprintf(path, sizeof(path), "%s/img", dir);
    REQUIRE(vmc_outfile_open_split(ctx, path, 0, VMC_SPLIT_MIN - 1, &of) ==
            VMC_E_INVAL, "too small a piece");
    REQUIRE(vmc_outfile_open_split(ctx, "-", 0, VMC_SPLIT_MIN, &of) ==
            VMC_E_INVAL, "a set on stdout");
    /* abort: nothing left */
    REQUIRE(vmc_outfile_open_split(ctx, path, 0, VMC_SPLIT_MIN, &of) == 0,
            "open: %s", vmc_ctx_error(ctx));
    REQUIRE(io_write_full(ctx, vmc_outfile_fd(of), buf, sizeof(buf), "w") == 0,
            "write: %s", vmc_ctx_error(ctx));
    snprintf(name, sizeof(name), "%s.003.partial", path);
    REQUIRE(stat(name, &st) == 0 && st.st_size == 100, "4th piece");
    snprintf(name, sizeof(name), "%s.000", path);
    REQUIRE(stat(name, &st) < 0, "a final name before the commit");
    vmc_outfile_free(of);
    snprintf(name, sizeof(name), "%s.000.partial", path);
    REQUIRE(stat(name, &st) < 0, "a piece left after abort");
    /* the guardian's cleanup, given NAME.000.partial */
    REQUIRE(vmc_outfile_open_split(ctx, path, 0, VMC_SPLIT_MIN, &of) == 0 &&
            io_write_full(ctx, vmc_outfile_fd(of), buf, sizeof(buf), "w") == 0,
            "open 2");
    outfile_remove_partial(vmc_outfile_partial(of));
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "%s.%03d.partial", path, i);
        REQUIRE(stat(name, &st) < 0, "guardian left %s", name);
    }
    vmc_outfile_free(of);
    /* commit, then read back as one stream */
    REQUIRE(vmc_outfile_open_split(ctx, path, 0, VMC_SPLIT_MIN, &of) == 0 &&
            io_write_full(ctx, vmc_outfile_fd(of), buf, sizeof(buf), "w") == 0 &&
            vmc_outfile_commit(ctx, of) == 0, "commit: %s", vmc_ctx_error(ctx));
    vmc_outfile_free(of);
    REQUIRE(stat(path, &st) < 0, "NAME itself created");
    REQUIRE(vmc_input_open(ctx, path, &in) == 0, "input: %s", vmc_ctx_error(ctx));
    REQUIRE(vmc_input_pieces(in) == 4 && vmc_input_size(in) == sizeof(buf),
            "pieces %d size %llu", vmc_input_pieces(in),
            (unsigned long long)vmc_input_size(in));
    REQUIRE(io_read_full(ctx, vmc_input_fd(in), back, sizeof(back), &got, "r") == 0 &&
            got == sizeof(buf) && !memcmp(buf, back, sizeof(buf)), "read back");
    vmc_input_close(in);
    REQUIRE(vmc_outfile_open_split(ctx, path, 0, VMC_SPLIT_MIN, &of) ==
            VMC_E_EXISTS, "overwrote an existing set");
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "%s.%03d", path, i);
        unlink(name);
    }
    rmdir(dir);
    vmc_ctx_free(ctx);
    return 0;
}

/* The migration endpoints: ssh://USER@HOST:PORT runs the receiver through
 * ssh(1) with the destination after "--" (a fake ssh in PATH echoes the
 * stream back and records its arguments); HOST:PORT dials TCP to a
 * listener; a destination that would be an ssh option is refused. */
static int t_endpoints(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_endpoint *e = NULL;
    char dir[] = "/tmp/vmc-ep-XXXXXX", path[4700], args[256] = "", oldpath[4096];
    char buf[16], from[64] = "";
    const char *op = getenv("PATH");
    size_t got;
    FILE *f;
    int lfd, fd, rc;

    REQUIRE(mkdtemp(dir), "mkdtemp");
    snprintf(path, sizeof(path), "%s/ssh", dir);
    f = fopen(path, "w");
    fprintf(f, "#!/bin/sh\necho \"$*\" > %s/args\nexec cat\n", dir);
    fclose(f);
    chmod(path, 0755);
    snprintf(oldpath, sizeof(oldpath), "%s", op ? op : "/usr/bin:/bin");
    snprintf(path, sizeof(path), "%s:%s", dir, oldpath);
    setenv("PATH", path, 1);
    rc = vmc_endpoint_dial(ctx, "ssh://root@dst.example:2222", "vmmigrate --receive",
                           5, &e);
    setenv("PATH", oldpath, 1);
    REQUIRE(rc == 0, "ssh dial: %s", vmc_ctx_error(ctx));
    REQUIRE(!strcmp(vmc_endpoint_host(e), "dst.example"), "host '%s'",
            vmc_endpoint_host(e));
    REQUIRE(io_write_full(ctx, vmc_endpoint_wfd(e), "hello", 5, "ssh") == 0,
            "write");
    close(vmc_endpoint_wfd(e));         /* EOF for cat: the fake ssh ends */
    rc = io_read_full(ctx, vmc_endpoint_rfd(e), buf, sizeof(buf), &got, "ssh");
    REQUIRE(rc == 0 && got == 5 && !memcmp(buf, "hello", 5), "echo: %zu", got);
    vmc_endpoint_free(e);               /* reaps the child: args written */
    snprintf(path, sizeof(path), "%s/args", dir);
    if ((f = fopen(path, "r"))) {
        if (!fgets(args, sizeof(args), f))
            args[0] = '\0';
        fclose(f);
    }
    REQUIRE(!strcmp(args, "-e none -p 2222 -- root@dst.example vmmigrate "
                    "--receive\n"), "ssh args '%s'", args);
    REQUIRE(vmc_endpoint_dial(ctx, "ssh://-oProxyCommand=x", "c", 5, &e) ==
            VMC_E_INVAL, "an ssh option as the host was accepted");
    vmc_ctx_clear(ctx);
    {   /* the host part, without dialing: what known_hosts is asked */
        static const char *const bad[] = { "ssh://a b", "ssh://h;id", "ssh://u@-o",
                                           "ssh://h:22x", "ssh://a@b@c", "ssh://",
                                           "ssh://h$(id)" };
        char h[256];
        REQUIRE(vmc_endpoint_host_of(ctx, "ssh://root@dst.example:2222", h,
                                     sizeof(h)) == 0 && !strcmp(h, "dst.example"),
                "host_of ssh: '%s'", h);
        REQUIRE(vmc_endpoint_host_of(ctx, "[::1]:8002", h, sizeof(h)) == 0 &&
                !strcmp(h, "::1"), "host_of v6: '%s'", h);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            vmc_ctx_clear(ctx);
            REQUIRE(vmc_endpoint_host_of(ctx, bad[i], h, sizeof(h)) == VMC_E_INVAL,
                    "%s accepted as '%s'", bad[i], h);
        }
        vmc_ctx_clear(ctx);
    }
    REQUIRE(vmc_endpoint_dial(ctx, "nocolon", "c", 5, &e) == VMC_E_INVAL,
            "HOST without :PORT accepted");
    vmc_ctx_clear(ctx);
    /* TCP on loopback */
    REQUIRE(vmc_endpoint_listen(ctx, "127.0.0.1:47913", &lfd) == 0, "listen: %s",
            vmc_ctx_error(ctx));
    REQUIRE(vmc_endpoint_dial(ctx, "127.0.0.1:47913", "c", 5, &e) == 0,
            "tcp dial: %s", vmc_ctx_error(ctx));
    REQUIRE(vmc_endpoint_accept(ctx, lfd, 5, &fd, from, sizeof(from)) == 0 &&
            !strncmp(from, "127.0.0.1:", 10), "accept: %s '%s'",
            vmc_ctx_error(ctx), from);
    REQUIRE(io_write_full(ctx, fd, "tcp!", 4, "tcp") == 0 &&
            io_read_full(ctx, vmc_endpoint_rfd(e), buf, 4, &got, "tcp") == 0 &&
            got == 4 && !memcmp(buf, "tcp!", 4), "tcp echo");
    close(fd);
    close(lfd);
    vmc_endpoint_free(e);
    REQUIRE(vmc_endpoint_dial(ctx, "127.0.0.1:47913", "c", 5, &e) == VMC_E_IO &&
            strstr(vmc_ctx_error(ctx), "cannot connect"), "closed port: %s",
            vmc_ctx_error(ctx));
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    if (system(path) != 0)
        REQUIRE(0, "cleanup");
    vmc_ctx_free(ctx);
    return 0;
}

/* known_hosts: the pinned key of a host; no entry is VMC_E_KEY. */
static int t_known_hosts(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_keys *k = vmc_keys_new();
    char path[] = "/tmp/vmc-kh-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    fprintf(f, "# pinned receivers\nother.example %s\ndst.example %s\n"
            "forged.example vmc1notakey\n", recipient, recipient);
    fclose(f);
    REQUIRE(vmc_known_hosts_find(ctx, path, "dst.example", k) == 0 &&
            vmc_keys_count(k) == 1, "find: %s", vmc_ctx_error(ctx));
    REQUIRE(vmc_known_hosts_find(ctx, path, "dst", k) == VMC_E_KEY &&
            strstr(vmc_ctx_error(ctx), "no entry for dst"), "no entry: %s",
            vmc_ctx_error(ctx));
    vmc_ctx_clear(ctx);
    REQUIRE(vmc_known_hosts_find(ctx, path, "forged.example", k) == VMC_E_INVAL &&
            strstr(vmc_ctx_error(ctx), "not a valid recipient") &&
            vmc_keys_count(k) == 1, "a bad key pinned: %s", vmc_ctx_error(ctx));
    vmc_ctx_clear(ctx);
    unlink(path);
    REQUIRE(vmc_known_hosts_find(ctx, path, "dst.example", k) == VMC_E_IO,
            "missing file");
    vmc_keys_free(k);
    vmc_ctx_free(ctx);
    return 0;
}

/* The content digest's test vector (format/vmckpt-stream.md, DISK_END): a
 * disk of 3 grains and 512 octets; grain 0 is 0xa5, grain 1 is written
 * zeros, grain 2 a hole, the short grain 3 the octets 0..255 twice. */
static int t_disk_digest_vector(void)
{
    static const char want[] =
        "aa5c884f0a2163ff9b8c671bdc325e2ccd17ec1e82ccdc434deedd1d7fdeb455";
    uint8_t g[VMC_DISK_GRAIN], d[VMC_DISK_DIGEST_LEN] = { 0 };
    char hex[2 * VMC_DISK_DIGEST_LEN + 1];
    struct vmc_ctx *ctx = vmc_ctx_new();
    int fd = memfd_create("disk", 0), ok;

    memset(g, 0xa5, sizeof(g));
    ok = fd >= 0 && ftruncate(fd, 3 * VMC_DISK_GRAIN + 512) == 0 &&
         pwrite(fd, g, sizeof(g), 0) == (ssize_t)sizeof(g);
    memset(g, 0, sizeof(g));
    ok = ok && pwrite(fd, g, sizeof(g), VMC_DISK_GRAIN) == (ssize_t)sizeof(g);
    for (int i = 0; i < 512; i++)
        g[i] = (uint8_t)i;
    ok = ok && pwrite(fd, g, 512, 3 * VMC_DISK_GRAIN) == 512 &&
         vmc_disk_file_digest(ctx, fd, 3 * VMC_DISK_GRAIN + 512, d) == 0;
    for (int i = 0; i < VMC_DISK_DIGEST_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (fd >= 0)
        close(fd);
    vmc_ctx_free(ctx);
    REQUIRE(ok, "the vector's disk file");
    REQUIRE(!strcmp(hex, want), "digest %s, the spec says %s", hex, want);
    return 0;
}

/* The codec of format/ for DOMAIN_CONFIG's head, PRECOPY_ROUND, HELLO and
 * REPLY: round trips and the rules each decode enforces. */
static int t_wire_codec(void)
{
    uint8_t b[VMC_HELLO_LEN + 8];
    const char *w;
    struct vmc_wire_domain_config c = { VMC_CFG_QEMU_JSON, 0 }, c2;
    struct vmc_wire_precopy_round r = { 3, 0, 1u << 30, 123456789 }, r2;
    struct vmc_wire_hello h = { .version = VMC_HELLO_VERSION }, h2;
    struct vmc_wire_reply y = { VMC_E_CLASH, -1, 5, 0 }, y2;

    vmc_domain_config_encode(b, &c);
    REQUIRE(vmc_domain_config_decode(&c2, b, 8, &w) == 0 &&
            c2.format == VMC_CFG_QEMU_JSON, "config round trip");
    REQUIRE(vmc_domain_config_decode(&c2, b, 7, &w) == VMC_E_FORMAT && w,
            "config: 7 octets");
    b[5] = 1;
    REQUIRE(vmc_domain_config_decode(&c2, b, 8, &w) == VMC_E_FORMAT &&
            strstr(w, "reserved"), "config: reserved");
    vmc_precopy_round_encode(b, &r);
    REQUIRE(vmc_precopy_round_decode(&r2, b, 24, &w) == 0 && r2.round == 3 &&
            r2.bytes == 1u << 30 && r2.duration_ns == 123456789, "round");
    REQUIRE(vmc_precopy_round_decode(&r2, b, 16, &w) == VMC_E_FORMAT,
            "round: 16 octets");
    b[4] = 1;
    REQUIRE(vmc_precopy_round_decode(&r2, b, 24, &w) == VMC_E_FORMAT,
            "round: reserved");
    memcpy(h.magic, VMC_HELLO_MAGIC, 8);
    memset(h.epk, 0xe1, 32);
    memset(h.spk, 0x5b, 32);
    vmc_hello_encode(b, &h);
    REQUIRE(vmc_hello_decode(&h2, b, &w) == 0 && !memcmp(h2.epk, h.epk, 32) &&
            !memcmp(h2.spk, h.spk, 32), "hello round trip");
    b[8] = 2;
    REQUIRE(vmc_hello_decode(&h2, b, &w) == VMC_E_UNSUPPORTED, "hello: v2");
    b[8] = 1;
    b[0] ^= 1;
    REQUIRE(vmc_hello_decode(&h2, b, &w) == VMC_E_FORMAT && strstr(w, "magic"),
            "hello: magic");
    vmc_reply_encode(b, &y);
    memcpy(b + VMC_REPLY_HEAD_LEN, "clash", 5);
    REQUIRE(vmc_reply_decode(&y2, b, VMC_REPLY_HEAD_LEN + 5, &w) == 0 &&
            y2.status == VMC_E_CLASH && y2.domid == -1 && y2.msg_len == 5,
            "reply round trip");
    REQUIRE(vmc_reply_decode(&y2, b, VMC_REPLY_HEAD_LEN + 4, &w) ==
            VMC_E_FORMAT, "reply: length");
    {   /* the phase and the status fit each other (format 2) */
        static const struct { int32_t status; uint32_t phase; int ok; } pr[] = {
            { VMC_E_CLASH, VMC_PHASE_FAILED, 1 }, { 0, VMC_PHASE_FAILED, 0 },
            { 0, VMC_PHASE_READY, 1 }, { VMC_E_IO, VMC_PHASE_READY, 0 },
            { 0, VMC_PHASE_RUNNING, 1 }, { VMC_E_IO, VMC_PHASE_RUNNING, 0 },
            { 0, 3, 0 }, { VMC_E_IO, 0xffffffffu, 0 },
        };
        for (size_t i = 0; i < sizeof(pr) / sizeof(pr[0]); i++) {
            struct vmc_wire_reply z = { pr[i].status, 7, 0, pr[i].phase };
            vmc_reply_encode(b, &z);
            REQUIRE((vmc_reply_decode(&y2, b, VMC_REPLY_HEAD_LEN, &w) == 0) ==
                    pr[i].ok, "reply phase %u status %d", pr[i].phase,
                    pr[i].status);
        }
    }
    REQUIRE(!strcmp(vmc_backend_id_name(VMC_BACKEND_QEMU), "qemu") &&
            !strcmp(vmc_slot_type_name(VMC_SLOT_ARGON2ID), "argon2id") &&
            !strcmp(vmc_stream_format_name(VMC_SFMT_LIBXL), "libxl-v2") &&
            !strcmp(vmc_config_format_name(99), "unknown") &&
            !strcmp(vmc_aead_name(VMC_AEAD_CHACHA20POLY1305),
                    "chacha20-poly1305") &&
            !strcmp(vmc_compression_name(VMC_COMP_ZSTD), "zstd"), "enum names");
    return 0;
}

/* ---- the disks a config names ----------------------------------------------
 * -drive with a file: ids (id=, else interface + ordinal), read-only and
 * removable media, formats; a drive without a file is no disk; pointing a
 * disk at a path with a comma keeps QEMU's escaping, the others as they
 * were. */
/* A frozen copy of a disk file (a Xen checkpoint's view): the same
 * content, holes kept, unchanged when the disk moves on, and unnamed. */
static int t_disk_snapshot(void)
{
    struct vmc_ctx *ctx = vmc_ctx_new();
    char path[] = "/tmp/vmc-snap-XXXXXX", buf[8];
    struct stat st;
    int fd = mkstemp(path), c = -1, ref = -1;

    REQUIRE(fd >= 0 && ftruncate(fd, 64 << 20) == 0 &&
            pwrite(fd, "one", 3, 1 << 20) == 3 &&
            pwrite(fd, "two", 3, 40 << 20) == 3, "setup");
    REQUIRE(vmc_disk_snapshot(ctx, path, fd, 64 << 20, &c, &ref) == 0,
            "%s", vmc_ctx_error(ctx));
    REQUIRE(pwrite(fd, "new", 3, 1 << 20) == 3, "moving on");
    REQUIRE(fstat(c, &st) == 0 && st.st_size == 64 << 20 && st.st_nlink == 0 &&
            (ref || st.st_blocks * 512 < (8 << 20)),
            "copy: size %lld links %d blocks %lld (reflink %d)",
            (long long)st.st_size, (int)st.st_nlink, (long long)st.st_blocks,
            ref);
    REQUIRE(pread(c, buf, 3, 1 << 20) == 3 && !memcmp(buf, "one", 3) &&
            pread(c, buf, 3, 40 << 20) == 3 && !memcmp(buf, "two", 3),
            "the copy is not the disk as it was");
    close(c);
    close(fd);
    unlink(path);
    vmc_ctx_free(ctx);
    return 0;
}

/* The QEMU launcher's view of one -drive value: its file, read-only or
 * not, and the value pointed at a passed descriptor (commas doubled back,
 * auto-read-only=off added unless the value says otherwise). */
static int t_drive_refile(void)
{
    static const struct { const char *v, *file; int ro; const char *out; } c[] = {
        { "file=/a/b.raw,if=virtio,format=raw", "/a/b.raw", 0,
          "file=/dev/fdset/10,if=virtio,format=raw,auto-read-only=off" },
        { "if=ide,media=cdrom,file=/x,,y.iso", "/x,y.iso", 1,
          "if=ide,media=cdrom,file=/dev/fdset/10,auto-read-only=off" },
        { "file=/d,readonly=on,auto-read-only=on", "/d", 1,
          "file=/dev/fdset/10,readonly=on,auto-read-only=on" },
        { "if=none,id=empty", "", 0, "if=none,id=empty,auto-read-only=off" },
    };
    char file[64], out[128];
    int ro;

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        REQUIRE(qemu_drive_file(c[i].v, file, sizeof(file), &ro) == 0 &&
                !strcmp(file, c[i].file) && ro == c[i].ro,
                "%s: file '%s' ro %d", c[i].v, file, ro);
        REQUIRE(qemu_drive_refile(c[i].v, "/dev/fdset/10", out,
                                  sizeof(out)) == 0 && !strcmp(out, c[i].out),
                "%s: '%s'", c[i].v, out);
    }
    REQUIRE(qemu_drive_file("file=/a/very/long/path/name", file, 8, &ro) ==
            VMC_E_LIMIT, "a file longer than its buffer");
    REQUIRE(qemu_drive_refile("file=/a,if=virtio", "/dev/fdset/10", out, 20) ==
            VMC_E_LIMIT, "a value longer than its buffer");
    return 0;
}

static int t_config_disks(void)
{
    struct vmc_image_meta m = { .backend = VMC_BACKEND_QEMU };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_disk_info d[8];
    const char *cfg = "{\"argv\":[\"-m\",\"64\","
        "\"-drive\",\"file=/a/b.raw,if=virtio,format=raw\","
        "\"-drive\",\"if=none,id=empty\","
        "\"-drive\",\"file=/c.iso,media=cdrom\","
        "\"-drive\",\"file=/d,,e.qcow2,format=qcow2,id=data,if=virtio\"]}";
    uint8_t *c = (uint8_t *)strdup(cfg);
    size_t len = strlen(cfg);
    int n = 0;

    REQUIRE(config_disks(ctx, &m, VMC_CFG_QEMU_JSON, c, len, d, 8, &n) == 0, "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(n == 3, "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(!strcmp(d[0].id, "virtio0") && !strcmp(d[0].path, "/a/b.raw") &&
          d[0].flags == 0 && d[0].source_format == VMC_DISK_FMT_RAW, "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(!strcmp(d[1].id, "ide0") &&
          d[1].flags == (VMC_DF_READONLY | VMC_DF_REMOVABLE), "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(!strcmp(d[2].id, "data") && !strcmp(d[2].path, "/d,e.qcow2") &&
          d[2].source_format == VMC_DISK_FMT_QCOW2, "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(config_set_disk(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "virtio0",
                          "/new,dir/x.raw", 1) == 0, "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(strstr((char *)c, "file=/new,,dir/x.raw,if=virtio,format=raw"), "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(config_disks(ctx, &m, VMC_CFG_QEMU_JSON, c, len, d, 8, &n) == 0 &&
          n == 3 && !strcmp(d[0].path, "/new,dir/x.raw") &&
          !strcmp(d[2].path, "/d,e.qcow2"), "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(config_set_disk(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "nosuch",
                          "/x", 1) == VMC_E_INVAL, "config_disks check at line %d (n=%d)", __LINE__, n);
    free(c);
    /* libxl: disks with pdev_path, vdev, format, readwrite, is_cdrom */
    m.backend = VMC_BACKEND_XEN;
    cfg = "{\"disks\":[{\"pdev_path\":\"/x/d.img\",\"vdev\":\"xvda\","
          "\"format\":\"raw\",\"readwrite\":1},{\"pdev_path\":\"/x/c.iso\","
          "\"vdev\":\"hdc\",\"is_cdrom\":1}]}";
    c = (uint8_t *)strdup(cfg);
    len = strlen(cfg);
    REQUIRE(config_disks(ctx, &m, VMC_CFG_LIBXL_JSON, c, len, d, 8, &n) == 0 &&
          n == 2 && !strcmp(d[0].id, "xvda") && d[0].flags == 0 &&
          (d[1].flags & VMC_DF_REMOVABLE), "config_disks check at line %d (n=%d)", __LINE__, n);
    REQUIRE(config_set_disk(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "xvda",
                          "/y/xvda.raw", 1) == 0 && strstr((char *)c, "/y/xvda.raw"), "config_disks check at line %d (n=%d)", __LINE__, n);
    free(c);
    /* a disk moved, not carried: the path changes, the format stays */
    m.backend = VMC_BACKEND_QEMU;
    cfg = "{\"argv\":[\"-drive\",\"file=/a.qcow2,format=qcow2,id=d0\"]}";
    c = (uint8_t *)strdup(cfg);
    len = strlen(cfg);
    REQUIRE(config_set_disk(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "d0",
                            "/b/a.qcow2", 0) == 0 &&
            strstr((char *)c, "file=/b/a.qcow2,format=qcow2,id=d0"),
            "a moved disk keeps its format: %s", (char *)c);
    free(c);
    m.backend = VMC_BACKEND_XEN;
    cfg = "{\"disks\":[{\"pdev_path\":\"/x/d.qcow2\",\"vdev\":\"xvda\","
          "\"format\":\"qcow2\"}]}";
    c = (uint8_t *)strdup(cfg);
    len = strlen(cfg);
    REQUIRE(config_set_disk(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "xvda",
                            "/y/d.qcow2", 0) == 0 &&
            strstr((char *)c, "\"format\":\"qcow2\"") &&
            strstr((char *)c, "\"/y/d.qcow2\""), "xen moved disk: %s", (char *)c);
    free(c);
    vmc_ctx_free(ctx);
    return 0;
}

/* vmrestore --net: the back end of one -netdev/-nic replaced, its id (and a
 * -nic's model and mac) kept; a Xen vif's bridge; bad ids and attachments
 * refused. */
static int t_config_nets(void)
{
    struct vmc_image_meta m = { .backend = VMC_BACKEND_QEMU };
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_net_info ni[4];
    const char *cfg = "{\"argv\":[\"-netdev\",\"user,id=n0,restrict=on\","
        "\"-device\",\"virtio-net-pci,netdev=n0\",\"-nic\","
        "\"user,id=n1,model=e1000,mac=52:54:00:12:34:56\",\"-nic\",\"none\"]}";
    uint8_t *c = (uint8_t *)strdup(cfg);
    size_t len = strlen(cfg);
    int n = 0;

    REQUIRE(config_nets(ctx, &m, VMC_CFG_QEMU_JSON, c, len, ni, 4, &n) == 0 &&
            n == 2 && !strcmp(ni[0].id, "n0") &&
            !strcmp(ni[0].attachment, "user") && !strcmp(ni[1].id, "n1") &&
            !strcmp(ni[1].mac, "52:54:00:12:34:56"), "qemu nets: n=%d", n);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "n0",
                           "tap,ifname=tap1,script=no") == 0 &&
            strstr((char *)c, "\"tap,ifname=tap1,script=no,id=n0\"") &&
            !strstr((char *)c, "restrict"), "netdev replaced: %s", (char *)c);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "n1",
                           "user,net=10.9.0.0/24") == 0 &&
            strstr((char *)c, "\"user,net=10.9.0.0/24,id=n1,model=e1000,"
                   "mac=52:54:00:12:34:56\""), "nic keeps model, mac: %s",
            (char *)c);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "n9",
                           "user") == VMC_E_INVAL &&
            strstr(vmc_ctx_error(ctx), "no such network device"),
            "unknown id: %s", vmc_ctx_error(ctx));
    vmc_ctx_clear(ctx);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "n0",
                           "user,id=other") == VMC_E_INVAL &&
            strstr(vmc_ctx_error(ctx), "without id="), "id in att: %s",
            vmc_ctx_error(ctx));
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_QEMU_JSON, &c, &len, "n0",
                           "") == VMC_E_INVAL, "empty attachment");
    free(c);
    m.backend = VMC_BACKEND_XEN;
    cfg = "{\"nics\":[{\"devid\":0,\"mac\":\"00:16:3e:00:00:01\","
          "\"bridge\":\"xenbr0\"},{\"bridge\":\"xenbr1\"}]}";
    c = (uint8_t *)strdup(cfg);
    len = strlen(cfg);
    REQUIRE(config_nets(ctx, &m, VMC_CFG_LIBXL_JSON, c, len, ni, 4, &n) == 0 &&
            n == 2 && !strcmp(ni[0].id, "0") && !strcmp(ni[1].id, "1") &&
            !strcmp(ni[1].attachment, "xenbr1"), "xen nets: n=%d", n);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "1",
                           "br-lab") == 0 && strstr((char *)c, "\"br-lab\"") &&
            strstr((char *)c, "\"xenbr0\""), "xen bridge: %s", (char *)c);
    vmc_ctx_clear(ctx);
    REQUIRE(config_set_net(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "0",
                           "../x") == VMC_E_INVAL &&
            strstr(vmc_ctx_error(ctx), "not a bridge name") &&
            config_set_net(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "0",
                           "a-name-too-long-for-linux") == VMC_E_INVAL &&
            config_set_net(ctx, &m, VMC_CFG_LIBXL_JSON, &c, &len, "2",
                           "xenbr0") == VMC_E_INVAL, "xen refusals");
    free(c);
    vmc_ctx_free(ctx);
    return 0;
}

/* ---- the restore policy ---------------------------------------------------
 * One row per rule of vmckpt(5), RESTORE POLICY: a QEMU argv (words split
 * on '|', ALLOWED standing for a file in an allowed directory, OUTSIDE for
 * one outside it) and what a check must say (NULL: accepted). */
static const struct {
    const char *argv, *needle;
} qemu_rules[] = {
    { "-m|256|-smp|1|-accel|tcg|-nodefaults|-display|none|-nic|none", NULL },
    { "-kernel|ALLOWED|-initrd|ALLOWED|-append|console=ttyS0 -x", NULL },
    { "-kernel|OUTSIDE", "outside the allowed directories" },
    { "-initrd|/etc/shadow", "outside the allowed directories" },
    { "-kernel|ALLOWDIR/../../../../etc/passwd", "outside the allowed" },
    { "-L|ALLOWDIR", NULL },
    { "-drive|file=ALLOWED,format=raw,if=virtio", NULL },
    { "-drive|file=/dev/null,format=raw", "not a regular file" },
    { "-drive|file=nbd:evil:1234", "a protocol, not a file" },
    { "-drive|file=ALLOWED,format=host_device", "block driver 'host_device'" },
    { "-drive|file=ALLOWED,backing.file.filename=/etc/shadow", "names another image" },
    { "-blockdev|driver=file,node-name=f,filename=OUTSIDE", "outside the allowed" },
    { "-blockdev|driver=nbd,server.host=x", "block driver 'nbd'" },
    { "-netdev|user,id=n0|-device|virtio-net-pci,netdev=n0", NULL },
    { "-netdev|user,id=n0,hostfwd=tcp::2222-:22", "key 'hostfwd'" },
    { "-netdev|user,id=n0,smb=/", "key 'smb'" },
    { "-netdev|tap,id=t0,script=/bin/sh", "runs a host program" },
    { "-netdev|tap,id=t0", NULL },
    { "-netdev|tap,id=t0,script=no,downscript=no", NULL },
    { "-netdev|socket,id=s,listen=:1234", "network backend 'socket'" },
    { "-nic|user,hostfwd=tcp::1-:1", "key 'hostfwd'" },
    { "-chardev|socket,id=c,path=/tmp/x,server=on", "back end 'socket'" },
    { "-chardev|file,id=c,path=/etc/passwd", "back end 'file'" },
    { "-chardev|null,id=c,logfile=/etc/x", "writes a host file" },
    { "-chardev|ringbuf,id=c", NULL },
    { "-serial|file:/etc/cron.d/x", "only 'none'" },
    { "-monitor|tcp::4444,server", "only 'none'" },
    { "-mon|chardev=c", "adds a monitor" },
    { "-qmp|tcp::4444", "set by vmckpt itself" },
    { "-plugin|/tmp/evil.so", "loads a host library" },
    { "-readconfig|/tmp/x", "reads a host config" },
    { "-add-fd|fd=3,set=1", "host file descriptors" },
    { "-sandbox|off", "set by vmckpt itself" },
    { "-runas|root", "set by vmckpt itself" },
    { "-run-with|user=root", "changes QEMU's user" },
    { "-daemonize", "detaches QEMU" },
    { "-fw_cfg|name=opt/x,file=/etc/shadow", "outside the allowed" },
    { "-fw_cfg|name=opt/x,string=hello", NULL },
    { "-object|memory-backend-file,id=m,mem-path=/dev/shm/x,size=1G", "object 'memory-backend-file'" },
    { "-object|memory-backend-ram,id=m,size=256M", NULL },
    { "-object|rng-random,id=r,filename=/dev/urandom", NULL },
    { "-object|rng-random,id=r,filename=/etc/shadow", "only /dev/urandom" },
    { "-device|vfio-pci,host=01:00.0", "device 'vfio-pci'" },
    { "-device|loader,file=/etc/shadow,addr=0x1000", "device 'loader'" },
    { "-device|virtio-net-pci,romfile=/etc/shadow", "outside the allowed" },
    { "-device|virtio-rng-pci", NULL },
    { "-device|{\"driver\":\"vfio-pci\",\"host\":\"01:00.0\"}", "JSON form" },
    { "-device|driver=vfio-pci,host=01:00.0", "device 'vfio-pci'" },
    { "-global|virtio-net-pci.romfile=/etc/shadow", "outside the allowed" },
    { "-machine|q35,dumpdtb=/etc/x", "machine key 'dumpdtb'" },
    { "-machine|pc,accel=tcg", NULL },
    { "-icount|shift=auto,sleep=off", NULL },
    { "-icount|shift=7,rr=record,rrfile=/etc/cron.d/x", "icount key 'rr'" },
    { "-vnc|:0", "only 'none'" },
    { "-spice|port=5900", "opens a display port" },
    { "-display|gtk", "only 'none'" },
    { "--plugin|/tmp/evil.so", "loads a host library" },
    { "-frobnicate", "not an option the restore policy knows" },
    { "OUTSIDE", "outside the allowed" },
    { "-kernel", "no value" },
    { "-device|virtio-net-pci,,romfile=/etc/shadow", NULL },
};

static void policy_files(char allowed[64], char outside[64])
{
    static char a[64], o[64];

    if (!a[0]) {
        int fd;
        snprintf(a, sizeof(a), "/tmp/vmc-unit-allowed.XXXXXX");
        snprintf(o, sizeof(o), "/tmp/vmc-unit-outside.XXXXXX");
        if (mkdtemp(a) && mkdtemp(o)) {
            char f[96];
            snprintf(f, sizeof(f), "%s/vmlinuz", a);
            if ((fd = open(f, O_CREAT | O_WRONLY, 0600)) >= 0)
                close(fd);
            snprintf(f, sizeof(f), "%s/vmlinuz", o);
            if ((fd = open(f, O_CREAT | O_WRONLY, 0600)) >= 0)
                close(fd);
        }
    }
    snprintf(allowed, 64, "%s", a);
    snprintf(outside, 64, "%s", o);
}

/* Replaces ALLOWED and OUTSIDE in w (cap bytes). */
static void policy_word(char *w, size_t cap, const char *a, const char *o)
{
    const char *tok[3] = { "ALLOWED", "OUTSIDE", "ALLOWDIR" };
    char out[512], f[96];

    for (int t = 0; t < 3; t++) {
        char *p = strstr(w, tok[t]);
        if (!p)
            continue;
        if (t == 2)
            snprintf(f, sizeof(f), "%s", a);
        else
            snprintf(f, sizeof(f), "%s/vmlinuz", t ? o : a);
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(p - w), w, f,
                 p + strlen(tok[t]));
        snprintf(w, cap, "%s", out);
    }
}

static int t_policy_qemu(void)
{
    struct vmc_policy *pol = vmc_policy_new();
    struct vmc_image_meta m = { .backend = VMC_BACKEND_QEMU };
    char a[64], o[64];

    policy_files(a, o);
    REQUIRE(pol && vmc_policy_allow_dir(NULL, pol, a) == 0, "policy");
    for (size_t i = 0; i < sizeof(qemu_rules) / sizeof(qemu_rules[0]); i++) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        json_t *argv = json_array(), *cfg;
        char words[1024], *save = NULL, *s;
        int rc;
        snprintf(words, sizeof(words), "%s", qemu_rules[i].argv);
        for (char *w = strtok_r(words, "|", &save); w;
             w = strtok_r(NULL, "|", &save)) {
            char buf[512];
            snprintf(buf, sizeof(buf), "%s", w);
            policy_word(buf, sizeof(buf), a, o);
            json_array_append_new(argv, json_string(buf));
        }
        cfg = json_pack("{s:o, s:s, s:s}", "argv", argv, "qemu", "/bin/sh",
                        "cwd", "/");
        s = json_dumps(cfg, JSON_COMPACT);
        rc = vmc_config_check(ctx, &m, VMC_CFG_QEMU_JSON, (const uint8_t *)s,
                              strlen(s), pol);
        free(s);
        json_decref(cfg);
        if (qemu_rules[i].needle ? rc != VMC_E_INVAL ||
                                   !strstr(vmc_ctx_error(ctx), qemu_rules[i].needle)
                                 : rc != 0) {
            snprintf(why, sizeof(why), "'%s': want %s, got %d '%s'",
                     qemu_rules[i].argv,
                     qemu_rules[i].needle ? qemu_rules[i].needle : "accepted", rc,
                     vmc_ctx_error(ctx));
            vmc_ctx_free(ctx);
            vmc_policy_free(pol);
            return -1;
        }
        vmc_ctx_free(ctx);
    }
    vmc_policy_free(pol);
    return 0;
}

/* libxl configs: the keys that run, pass through or open something. */
static const struct {
    const char *json, *needle;
} xen_rules[] = {
    { "{\"c_info\":{\"name\":\"g\"},\"b_info\":{\"kernel\":\"/x\","
      "\"type.pv\":{\"kernel\":\"/boot/k\"}},\"nics\":[{\"bridge\":\"br0\"}]}",
      NULL },
    { "{\"b_info\":{\"bootloader\":\"/bin/sh\"}}", "bootloader" },
    { "{\"b_info\":{\"type.pv\":{\"bootloader\":\"pygrub\"}}}",
      "type.pv.bootloader" },
    { "{\"b_info\":{\"device_model\":\"/tmp/qemu\"}}", "device-model binary" },
    { "{\"b_info\":{\"device_model_stubdomain\":\"True\"}}", "stub domain" },
    { "{\"b_info\":{\"device_model_stubdomain\":\"False\"}}", NULL },
    { "{\"b_info\":{\"extra\":[\"-plugin\",\"/x.so\"]}}", "device-model arguments" },
    { "{\"nics\":[{\"script\":\"/tmp/evil\"}]}", "hotplug script" },
    { "{\"disks\":[{\"pdev_path\":\"/etc/shadow\"}]}", "outside the allowed" },
    { "{\"pcidevs\":[{\"bus\":1}]}", "host PCI devices" },
    { "{\"pcidevs\":[]}", NULL },
    { "{\"b_info\":{\"irqs\":[5]}}", "interrupts" },
    { "{\"channels\":[{\"name\":\"c\"}]}", "host sockets" },
    { "{\"vfbs\":[{\"vnc\":{\"enable\":\"True\"}}]}", "display port" },
    { "{\"b_info\":{\"type.hvm\":{\"serial\":\"file:/etc/x\"}}}", "'file:/etc/x'" },
    { "{\"b_info\":{\"type.hvm\":{\"serial\":\"pty\",\"usbdevice_list\":[\"tablet\"]}}}", NULL },
    { "{\"b_info\":{\"type.hvm\":{\"usbdevice\":\"host:1234:5678\"}}}", "host:1234" },
    { "[1,2]", "not a JSON object" },
    { "{\"a\":1,\"a\":2}", "not JSON" },
};

static int t_policy_xen(void)
{
    struct vmc_image_meta m = { .backend = VMC_BACKEND_XEN };

    for (size_t i = 0; i < sizeof(xen_rules) / sizeof(xen_rules[0]); i++) {
        struct vmc_ctx *ctx = vmc_ctx_new();
        const char *j = xen_rules[i].json;
        int rc = vmc_config_check(ctx, &m, VMC_CFG_LIBXL_JSON,
                                  (const uint8_t *)j, strlen(j), NULL);
        if (xen_rules[i].needle ? rc >= 0 ||
                                  !strstr(vmc_ctx_error(ctx), xen_rules[i].needle)
                                : rc != 0) {
            snprintf(why, sizeof(why), "%s: want %s, got %d '%s'", j,
                     xen_rules[i].needle ? xen_rules[i].needle : "accepted", rc,
                     vmc_ctx_error(ctx));
            vmc_ctx_free(ctx);
            return -1;
        }
        vmc_ctx_free(ctx);
    }
    return 0;
}

/* What vmimage config prints: this host's binary, never the image's; the
 * argv quoted for a shell; vmckpt's own options and the sandbox. */
static int t_config_show(void)
{
    struct vmc_image_meta m = { .backend = VMC_BACKEND_QEMU };
    const char *cfg = "{\"argv\":[\"-m\",\"256\",\"-append\",\"a b'c\"],"
                      "\"qemu\":\"/bin/sh\",\"cwd\":\"/\"}";
    char *text = NULL;
    int rc;

    snprintf(m.name, sizeof(m.name), "web01,x=y");
    rc = vmc_config_show(NULL, &m, VMC_CFG_QEMU_JSON, (const uint8_t *)cfg,
                         strlen(cfg), &text);
    REQUIRE(rc == 0 && text, "show: %d", rc);
    REQUIRE(!strstr(text, "/bin/sh") && strstr(text, "qemu-system") &&
            strstr(text, "-m 256 -append 'a b'\\''c' -name guest=web01,,x=y ") &&
            strstr(text, "-sandbox on,obsolete=deny,elevateprivileges=deny,"
                         "spawn=deny,resourcecontrol=deny") &&
            strstr(text, "-incoming defer"), "text: %s", text);
    free(text);
    return 0;
}

/* ---- the live handshake ------------------------------------------------------
 * Receiver: identity k_wrong, authorized senders {k_open's key} (k_seal). */
struct rx { int fd, rc; char err[256]; const struct vmc_keys *auth; };

static void *receiver(void *arg)
{
    struct rx *r = arg;
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_session *s = NULL;

    r->rc = vmc_live_accept(ctx, r->fd, r->fd, k_wrong, r->auth, 5000, &s);
    snprintf(r->err, sizeof(r->err), "%s", vmc_ctx_error(ctx));
    vmc_session_free(s);
    vmc_ctx_free(ctx);
    return NULL;
}

/* A HELLO naming pk, from someone who holds no secret for it; what comes
 * back (an 80-octet HELLO_R, or the count read before EOF). */
static ssize_t probe(const uint8_t pk[32], const struct vmc_keys *auth,
                     struct rx *r)
{
    uint8_t hello[80] = { 0x89, 'V', 'M', 'C', 'K', 'L', 'V', '\n', 1 }, back[80];
    int sv[2];
    pthread_t th;
    ssize_t n = 0, got;

    randombytes_buf(hello + 16, 32);                /* any "ephemeral" key */
    memcpy(hello + 48, pk, 32);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    r->fd = sv[1];
    r->auth = auth;
    pthread_create(&th, NULL, receiver, r);
    if (write(sv[0], hello, sizeof(hello)) != (ssize_t)sizeof(hello))
        n = -1;
    while (n >= 0 && n < (ssize_t)sizeof(back) &&
           (got = read(sv[0], back + n, sizeof(back) - (size_t)n)) > 0)
        n += got;
    shutdown(sv[0], SHUT_RDWR);                     /* no confirmation */
    pthread_join(th, NULL);
    close(sv[0]);
    close(sv[1]);
    return n;
}

static int t_live_handshake(void)
{
    struct vmc_keys *known = vmc_keys_new();
    struct vmc_ctx *ctx = vmc_ctx_new();
    struct vmc_session *s = NULL;
    struct rx r = { 0 };
    uint8_t listed[32], unlisted[32];
    int sv[2];
    pthread_t th;

    REQUIRE(vmc_keys_add_recipient(ctx, known, wrong_pub) == 0, "known");
    /* an authorized sender that holds its key: both ends agree */
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    r.fd = sv[1];
    r.auth = k_seal;
    pthread_create(&th, NULL, receiver, &r);
    REQUIRE(vmc_live_connect(ctx, sv[0], sv[0], k_open, known, 5000, &s) == 0,
            "sender: %s", vmc_ctx_error(ctx));
    pthread_join(th, NULL);
    REQUIRE(r.rc == 0, "receiver: %s", r.err);
    vmc_session_free(s);
    s = NULL;
    close(sv[0]);
    close(sv[1]);
    /* a sender with a key of its own that is not listed: refused by the
     * receiver once it has proven the key */
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    r.fd = sv[1];
    r.auth = k_seal;
    pthread_create(&th, NULL, receiver, &r);
    vmc_ctx_clear(ctx);
    REQUIRE(vmc_live_connect(ctx, sv[0], sv[0], k_wrong, known, 5000, &s) < 0,
            "an unlisted sender got a session");
    pthread_join(th, NULL);
    REQUIRE(r.rc == VMC_E_KEY && strstr(r.err, "is not an authorized sender"),
            "receiver: %d %s", r.rc, r.err);
    close(sv[0]);
    close(sv[1]);
    /* someone who holds neither key: the same answer whether the key named
     * is listed or not, and a refusal for failing to prove it, not for
     * the list */
    memcpy(listed, k_seal->k[0].pub, 32);        /* k_open's public key */
    memcpy(unlisted, k_wrong->k[0].pub, 32);
    REQUIRE(probe(listed, k_seal, &r) == 80 && r.rc == VMC_E_TRUNC,
            "listed key, no secret: %d, %s", r.rc, r.err);
    REQUIRE(probe(unlisted, k_seal, &r) == 80 && r.rc == VMC_E_TRUNC,
            "unlisted key: %d, %s", r.rc, r.err);
    vmc_keys_free(known);
    vmc_ctx_free(ctx);
    return 0;
}

int main(void)
{
    if (setup_keys() < 0) {
        printf("FAIL: setup: keys\n");
        return 1;
    }
    run("roundtrip_sizes", t_roundtrip_sizes);
    run("roundtrip_records", t_roundtrip_records);
    run("unknown_mandatory_refused", t_unknown_mandatory);
    run("keys_wrong_identity_passphrase", t_keys);
    run("key_strings_checksum", t_key_strings);
    run("truncation_sweep", t_truncation);
    run("truncation_every_offset", t_truncation_every_offset);
    run("bitflip_sweep", t_bitflips);
    run("chunk_reorder_duplicate_drop", t_reorder_duplicate);
    run("final_flag_authenticated", t_final_flag);
    run("kdf_caps", t_kdf_caps);
    run("kdf_work_bound", t_kdf_work_bound);
    run("live_handshake", t_live_handshake);
    run("rekey_header_only", t_rekey);
    run("record_layer_rules", t_record_rules);
    run("restore_policy_qemu", t_policy_qemu);
    run("restore_policy_xen", t_policy_xen);
    run("restore_config_show", t_config_show);
    run("header_fields", t_header_fields);
    run("signatures", t_signatures);
    run("pipe_stream", t_pipe);
    run("adaptive_level", t_adaptive);
    run("reader_cancel", t_reader_cancel);
    run("writer_epipe", t_writer_epipe);
    run("outfile_partial", t_outfile);
    run("outfile_split", t_outfile_split);
    run("migration_endpoints", t_endpoints);
    run("known_hosts", t_known_hosts);
    run("wire_codec", t_wire_codec);
    run("disk_digest_vector", t_disk_digest_vector);
    run("config_disks", t_config_disks);
    run("config_nets", t_config_nets);
    run("drive_refile", t_drive_refile);
    run("disk_snapshot", t_disk_snapshot);
    vmc_keys_free(k_seal);
    vmc_keys_free(k_open);
    vmc_keys_free(k_wrong);
    vmc_keys_free(k_pass);
    vmc_keys_free(k_badpass);
    return failures ? 1 : 0;
}
