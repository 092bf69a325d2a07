/*
 * internal.h - what the files of lib/ share and nobody else sees: the
 * error context's layout, the I/O and clock helpers of io/util.c, the
 * key set's and the stream layers' internals.  Not installed; nothing
 * declared here is VMC_API.
 * Owns: the layout of struct vmc_ctx and the helpers' contracts (each
 * returns 0 or a negative enum vmc_err with the message in ctx).
 * Must not: become public API by the back door (a tool in cmd/ includes
 * only vmckpt.h, vmckpt_qemu.h, vmckpt_xl.h and the wire header).
 */
#ifndef VMC_INTERNAL_H
#define VMC_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "vmckpt.h"
#include "../format/vmckpt_wire.h"

struct vmc_ctx {
    int code;
    int saved_errno;
    int hint;                 /* enum vmc_hint */
    struct vmc_where where;
    char msg[512];
};
/* vmc_set_error at a place in the stream: the message starts "chunk N
 * @0xOFF: " (VMC_AT_CHUNK) or "TYPE @0xOFF: " (VMC_AT_RECORD), and
 * vmc_ctx_where() tells it apart. */
int vmc_set_error_at(struct vmc_ctx *ctx, int code, int kind, uint64_t offset,
                     uint64_t index, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Gives the error already set a place, if it has none (message as is). */
void vmc_error_locate(struct vmc_ctx *ctx, int kind, uint64_t offset,
                      uint64_t index);

/* Key material: one sodium_malloc'd block per key, wiped on free. */
#define VMC_MAX_KEYS 64
enum { KEY_RECIPIENT = 1, KEY_IDENTITY, KEY_PASSPHRASE, KEY_RAW,
       KEY_SIGNING,          /* Ed25519: sec = 64-byte secret key, pub = pk */
       KEY_SIGNER };         /* a trusted signer: pub = its Ed25519 pk */
/* Does a key of this kind make or open key slots? */
#define KEY_IS_SLOT_KEY(kind) ((kind) >= KEY_RECIPIENT && (kind) <= KEY_RAW)
struct vmc_key {
    int kind;
    size_t len;               /* passphrase length */
    uint8_t *sec;             /* sodium_malloc: identity sk, raw key, pass */
    uint8_t pub[32];          /* recipient pk, identity pk, raw key id */
};
struct vmc_keys {
    int n;
    struct vmc_key k[VMC_MAX_KEYS];
    uint32_t kdf_ops, kdf_mem_kib;
    int trust;                /* VMC_TRUST_* flags; 0 = strict */
};
/* The signing key of keys (NULL if none). */
const struct vmc_key *keys_signing(const struct vmc_keys *keys);
/* Is pk a trusted signer of keys? */
int keys_trusts(const struct vmc_keys *keys, const uint8_t pk[32]);

struct vmc_header {
    struct vmc_wire_hdr h;
    uint8_t *raw;             /* header_len bytes as read/written */
    size_t raw_len;
    int nslots;
    struct {
        uint16_t type;
        uint32_t off;         /* offset of the slot header in raw */
        uint32_t body_len;
    } slot[VMC_MAX_SLOTS];
    char label[VMC_LABEL_MAX + 1];
    bool is_signed;           /* format 2: the signer block below */
    bool sig_ok;              /* header_sig verifies with signer_pk */
    uint8_t signer_pk[VMC_SIGN_PK_LEN];
    uint8_t header_sig[VMC_SIG_LEN];
    uint8_t *sign_sk;         /* writer: sodium_malloc copy of the signing key */
    bool unlocked;
    int opened_by;
    uint8_t *file_key;        /* sodium_malloc, 32 bytes, when unlocked */
    uint8_t *payload_key;     /* derived */
    uint8_t *mac_key;         /* derived */
};

int hdr_derive(struct vmc_ctx *ctx, struct vmc_header *h);
int hdr_alloc_keys(struct vmc_ctx *ctx, struct vmc_header *h);
/* New header for writing, with a fresh file key and slots for keys. */
int hdr_new(struct vmc_ctx *ctx, const struct vmc_keys *keys,
            uint32_t chunk_size, const char *label, uint32_t flags,
            uint32_t version, struct vmc_header **out);
int hdr_new_with_key(struct vmc_ctx *ctx, const uint8_t *file_key,
                     const struct vmc_keys *signer, uint32_t chunk_size,
                     const char *label, struct vmc_header **out);
int hdr_new_session(struct vmc_ctx *ctx, const struct vmc_session *s,
                    const struct vmc_keys *signer, uint32_t chunk_size,
                    const char *label, struct vmc_header **out);


/* ---- chunk layer ------------------------------------------------------ */
struct chunkw;
/* adaptive: the level moves per chunk between store and level, up while
 * the fd's buffer stays half full, down while it never is (see chunk.c) */
int chunkw_new(struct vmc_ctx *ctx, int fd, const struct vmc_header *h,
               int level, int adaptive, int threads, struct chunkw **out);
int chunkw_write(struct chunkw *c, const void *buf, size_t len);
int chunkw_flush(struct chunkw *c);           /* seals a short chunk */
int chunkw_close(struct chunkw *c);           /* final chunk + drain */
uint64_t chunkw_bytes_out(const struct chunkw *c);
uint64_t chunkw_chunks(const struct chunkw *c);
void chunkw_free(struct chunkw *c);

struct chunkr;
int chunkr_new(struct vmc_ctx *ctx, int fd, const struct vmc_header *h,
               int threads, int exact_eof, int idle_ms, struct chunkr **out);
/* Fills exactly n bytes; VMC_E_TRUNC if the authenticated stream ends
 * first (after the final chunk). */
int chunkr_read(void *c, void *buf, size_t n);
/* Up to n bytes without a copy: *ptr points into the current chunk, valid
 * until the next call on c. */
int chunkr_peek(void *c, const void **ptr, size_t n, size_t *got);
/* 1 if the final chunk has been consumed completely (and EOF checked). */
int chunkr_at_end(struct chunkr *c);
/* A record parser over a source that can also lend its bytes (no copy). */
typedef int (*vmc_peek_fn)(void *src, const void **ptr, size_t n, size_t *got);
void vmc_recparse_set_peek(struct vmc_recparse *p, vmc_peek_fn peek);
uint64_t chunkr_bytes_in(const struct chunkr *c);
uint64_t chunkr_chunks(const struct chunkr *c);
void chunkr_free(struct chunkr *c);

struct vmc_ctx *reader_ctx(const struct vmc_reader *r);
struct vmc_ctx *writer_ctx(const struct vmc_writer *w);
/* fsync of the directory that holds path (outfile.c). */
int fsync_parent(struct vmc_ctx *ctx, const char *path);
/* A split set's writes (outfile.c): io_write_full() hands the bytes for
 * a set's fd to outfile_split_write (outfile_nsplit: sets open). */
extern int outfile_nsplit;
struct vmc_outfile *outfile_split_of(int fd);
int outfile_split_write(struct vmc_ctx *ctx, struct vmc_outfile *of,
                        const void *buf, size_t n);
/* The guardian's cleanup of a killed save's partial (a set's: all). */
void outfile_remove_partial(const char *partial);

/* ---- draining a reader (image.c) ---------------------------------------
 * An output format wrapped around the raw hypervisor stream (xl.c's xl
 * save file): info checks IMAGE_INFO, config writes what goes before the
 * stream; BACKEND_STREAM before DOMAIN_CONFIG is refused ("cannot write
 * <what>"). */
struct drain_hooks {
    int (*info)(struct vmc_ctx *ctx, const struct vmc_image_meta *m);
    int (*config)(struct vmc_ctx *ctx, int outfd, uint32_t format,
                  const uint8_t *cfg, size_t len);
    const char *what;
};
int reader_drain(struct vmc_reader *r, int outfd, const struct drain_hooks *h,
                 const char *disk_dir, vmc_progress_fn cb, void *arg,
                 struct vmc_summary *sum);

/* ---- a disk's content, read for capture (io/disksrc.c) -----------------
 * A raw disk by the descriptor fd (SEEK_DATA/SEEK_HOLE skip holes; fd stays
 * the caller's); any other format through qemu-nbd (read-only) and libnbd,
 * whose block status skips unallocated and zero clusters.  next: the next
 * data region at or after off, [*d, *h), grain aligned, *d == size when
 * there is none.  read: all n octets at off.  Both 0 or an error in ctx. */
struct vmc_disk_src;
int vmc_disk_src_open(struct vmc_ctx *ctx, const struct vmc_disk_info *di,
                      int fd, struct vmc_disk_src **out);
int vmc_disk_src_next(struct vmc_disk_src *s, uint64_t off, uint64_t *d,
                      uint64_t *h);
int vmc_disk_src_read(struct vmc_disk_src *s, void *buf, size_t n,
                      uint64_t off);
void vmc_disk_src_close(struct vmc_disk_src *s);

/* ---- helpers -------------------------------------------------------------- */
/* The one error convention of lib/: ctx in (may be NULL), 0 or a negative
 * enum vmc_err out, the message in ctx and errno kept (vmc_ctx_errno).
 * Full reads and writes, EINTR retried; "WHAT: read: <strerror>" (or
 * write).  io_read_full's *got is short only at EOF. */
int io_read_full(struct vmc_ctx *ctx, int fd, void *buf, size_t n, size_t *got,
                 const char *what);
int io_write_full(struct vmc_ctx *ctx, int fd, const void *buf, size_t n,
                  const char *what);

/* send() it all on a socket, no SIGPIPE: 0, or VMC_E_IO with errno kept
 * (EPIPE when the peer has gone). */
int write_all_nosig(int fd, const void *buf, size_t n);
char *vmc_strdup(const char *s);
/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF); with no_controls, also free of C0, DEL and C1. */
int utf8_ok(const uint8_t *s, size_t n, int no_controls);
/* "<UTC time>-<id>-<name>" for a log file named after a domain, whatever
 * its name holds ('/' and control characters become '_'). */
void log_stem(char *out, size_t n, int id, const char *name);
/* A random (version 4) UUID. */
void uuid_random(uint8_t u[16]);

#endif
