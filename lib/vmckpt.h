/*
 * vmckpt.h - public interface of libvmckpt.
 *
 * Conventions (see README and format/vmckpt-stream.md):
 *  - every function that can fail returns int: 0 on success, a negative
 *    enum vmc_err on failure, and records a one-line message in its
 *    struct vmc_ctx (vmc_ctx_error()).
 *  - the library never prints, exits or aborts on bad input.
 *  - _new()/_free() pairs; every free accepts NULL.  Pointers passed in
 *    are borrowed unless the comment says otherwise.
 *  - key material lives in sodium_malloc()'d memory and is wiped on free.
 */
#ifndef VMCKPT_H
#define VMCKPT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmckpt_wire.h"      /* the wire constants: VMC_REC_*, VMC_SLOT_* ... */

#define VMC_TOOL_VERSION "0.1.0"

enum vmc_err {
    VMC_OK = 0,
    VMC_E_IO = -1,          /* read/write/fsync failed (errno kept) */
    VMC_E_NOMEM = -2,
    VMC_E_FORMAT = -3,      /* structurally invalid stream */
    VMC_E_AUTH = -4,        /* authentication failed: damaged or forged */
    VMC_E_KEY = -5,         /* no key given opens any slot */
    VMC_E_TRUNC = -6,       /* stream ends early */
    VMC_E_UNSUPPORTED = -7, /* unknown version, algorithm, mandatory record */
    VMC_E_LIMIT = -8,       /* a limit (KDF caps, sizes) refused */
    VMC_E_INVAL = -9,       /* bad argument from the caller */
    VMC_E_BACKEND = -10,    /* hypervisor backend failure */
    VMC_E_EXISTS = -11,     /* target exists / name clash */
    VMC_E_CANCELED = -12,   /* interrupted by the caller */
    VMC_E_CLASH = -13,      /* restore: a domain of that name or UUID runs */
    VMC_E_UNTRUSTED = -14,  /* signed by a key not trusted, or unsigned */
};

/* ---- context: carries the last error ---------------------------------- */

struct vmc_ctx;
VMC_API struct vmc_ctx *vmc_ctx_new(void);          /* NULL if out of memory */
VMC_API void vmc_ctx_free(struct vmc_ctx *ctx);
VMC_API const char *vmc_ctx_error(const struct vmc_ctx *ctx); /* owned by ctx */
VMC_API int vmc_ctx_errcode(const struct vmc_ctx *ctx);
/* The errno of the system call behind the error, 0 if there was none. */
VMC_API int vmc_ctx_errno(const struct vmc_ctx *ctx);
VMC_API void vmc_ctx_clear(struct vmc_ctx *ctx);
/* Sets the error (keeping the first one unless ctx was cleared) and
 * returns code, so callers write `return vmc_set_error(...)`. */
VMC_API int vmc_set_error(struct vmc_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
VMC_API const char *vmc_strerror(int code);
/* Where in a stream the error was found (a damaged image, a hostile
 * peer), also named at the start of the message.  VMC_AT_CHUNK: offset of
 * the chunk's length word in the sealed stream, index the chunk number;
 * VMC_AT_RECORD: offset of the record in the plaintext, index its type. */
enum vmc_at_kind { VMC_AT_NONE = 0, VMC_AT_CHUNK, VMC_AT_RECORD };
struct vmc_where {
    int kind;                 /* enum vmc_at_kind */
    uint64_t offset;
    uint64_t index;
};
/* Fills w (kind VMC_AT_NONE when the error has no place); returns kind. */
VMC_API int vmc_ctx_where(const struct vmc_ctx *ctx, struct vmc_where *w);
/* What a user can do about the error, for a tool to say in its own words
 * (the library never names a command-line option). */
enum vmc_hint {
    VMC_HINT_NONE = 0,
    VMC_HINT_GIVE_KEY,        /* no key was given to open an image */
    VMC_HINT_NOT_LIVE,        /* this save cannot be live: do it cold */
    VMC_HINT_TRUST_SIGNER,    /* a valid signer this host does not trust */
    VMC_HINT_UNSIGNED,        /* a format-1 (unsigned) stream */
    VMC_HINT_SIGNING_KEY,     /* writing needs a signing key */
    VMC_HINT_MEMORY_ONLY,     /* a checkpoint whose disks would not match */
    VMC_HINT_DISK_DIR,        /* an image carries disks: say where */
    VMC_HINT_STOPPED_DISKS,   /* carrying disks needs a stopped save */
    VMC_HINT_ALLOW_DIR,       /* a host file outside the allowed dirs */
};
VMC_API int vmc_ctx_hint(const struct vmc_ctx *ctx);
/* Adds a hint to the error already set (for backends); returns its code. */
VMC_API int vmc_set_hint(struct vmc_ctx *ctx, enum vmc_hint hint);
/* Must be called once before anything else (sodium_init). */
VMC_API int vmc_init(struct vmc_ctx *ctx);

/* ---- keys ---------------------------------------------------------------- */

#define VMC_RECIPIENT_STRLEN 64   /* buffer size for a public key string */

struct vmc_keys;
VMC_API struct vmc_keys *vmc_keys_new(void);
VMC_API void vmc_keys_free(struct vmc_keys *keys);
/* Sealing: who may open.  Opening: what we hold.  Passphrases and raw
 * keys serve both directions. */
VMC_API int vmc_keys_add_recipient(struct vmc_ctx *ctx, struct vmc_keys *keys,
                           const char *recipient);
VMC_API int vmc_keys_add_recipients_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                 const char *path);
VMC_API int vmc_keys_add_identity_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                               const char *path);
VMC_API int vmc_keys_add_passphrase(struct vmc_ctx *ctx, struct vmc_keys *keys,
                            const char *pass, size_t len);
VMC_API int vmc_keys_add_keyfile(struct vmc_ctx *ctx, struct vmc_keys *keys,
                         const char *path);
/* Signing (format 2): the Ed25519 key this host signs what it writes
 * with (VMCKPT-SIGNING-KEY-1 file, 0600); one per keys. */
VMC_API int vmc_keys_add_signing_key_file(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                          const char *path);
/* Its public signer string (vmcs1...), or VMC_E_KEY if keys holds none. */
VMC_API int vmc_keys_signer(struct vmc_ctx *ctx, const struct vmc_keys *keys,
                            char out[VMC_RECIPIENT_STRLEN]);
/* Reading: the signers whose streams are acted on.  A file lists vmcs1...
 * strings, one per line, # comments; it must not be writable by another
 * user (VMC_E_INVAL); a missing one is VMC_E_IO with errno ENOENT. */
VMC_API int vmc_keys_add_trusted_signer(struct vmc_ctx *ctx, struct vmc_keys *keys,
                                        const char *signer);
VMC_API int vmc_keys_add_trusted_signers_file(struct vmc_ctx *ctx,
                                              struct vmc_keys *keys,
                                              const char *path);
/* What opening with keys requires of the signer (vmc_header_unlock and the
 * live receiver).  0, the default: a format-2 stream by a trusted signer.
 * REPORT: any valid signature (info, rekey); UNSIGNED: format-1 streams,
 * which prove nothing about their writer, are accepted too. */
enum { VMC_TRUST_REPORT = 1, VMC_TRUST_UNSIGNED = 2 };
VMC_API void vmc_keys_set_trust(struct vmc_keys *keys, int flags);
VMC_API int vmc_keys_trusted_count(const struct vmc_keys *keys);
/* Argon2id cost for new passphrase slots (0 = default). */
VMC_API void vmc_keys_set_kdf(struct vmc_keys *keys, uint32_t ops, uint32_t mem_kib);
VMC_API int vmc_keys_count(const struct vmc_keys *keys);
VMC_API int vmc_keys_can_seal(const struct vmc_keys *keys);
VMC_API int vmc_keys_has_passphrase(const struct vmc_keys *keys);

/* Writes a new key of kind VMC_KEYGEN_* to the file path, 0600, never
 * overwriting; the public string (the recipient vmc1... of an identity,
 * the signer vmcs1... of a signing key; empty for a raw key) goes to pub. */
enum { VMC_KEYGEN_IDENTITY = 0, VMC_KEYGEN_RAW = 1, VMC_KEYGEN_SIGNING = 2 };
VMC_API int vmc_keygen(struct vmc_ctx *ctx, const char *path, int kind,
               char pub[VMC_RECIPIENT_STRLEN]);
/* The same key file written to fd (the caller's: the library never
 * writes to a descriptor it was not given); what names fd in errors. */
VMC_API int vmc_keygen_fd(struct vmc_ctx *ctx, int fd, const char *what, int kind,
                  char pub[VMC_RECIPIENT_STRLEN]);
/* Public recipient string of the first X25519 identity in path. */
VMC_API int vmc_identity_recipient(struct vmc_ctx *ctx, const char *path,
                           char pub[VMC_RECIPIENT_STRLEN]);

VMC_API void vmc_recipient_string(const uint8_t pk[32], char out[VMC_RECIPIENT_STRLEN]);
VMC_API void vmc_signer_string(const uint8_t pk[32], char out[VMC_RECIPIENT_STRLEN]);

/* ---- live path: handshake and session (format/vmckpt-stream.md) ----- */

struct vmc_session;
/* Sender: id holds this host's identity, known the one receiver key it
 * accepts.  Receiver: authorized holds the sender keys it accepts.
 * rfd/wfd may be the same socket or the two ends of an ssh pipe. */
VMC_API int vmc_live_connect(struct vmc_ctx *ctx, int rfd, int wfd,
                     const struct vmc_keys *id, const struct vmc_keys *known,
                     int timeout_ms, struct vmc_session **out);
VMC_API int vmc_live_accept(struct vmc_ctx *ctx, int rfd, int wfd,
                    const struct vmc_keys *id, const struct vmc_keys *authorized,
                    int timeout_ms, struct vmc_session **out);
VMC_API void vmc_session_peer(const struct vmc_session *s, char out[VMC_RECIPIENT_STRLEN]);
VMC_API void vmc_session_free(struct vmc_session *s);
/* The end of a migration (format/vmckpt-stream.md, "Commit"): the
 * receiver's REPLY of a phase (VMC_PHASE_READY, _RUNNING with status 0;
 * _FAILED with a negative status and why), the sender's COMMIT. */
VMC_API int vmc_reply_send(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                   const uint8_t stream_id[16], int phase, int status, int domid,
                   const char *msg);
/* Waits for the REPLY of phase want, or a FAILED one (*phase says which). */
VMC_API int vmc_reply_recv(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                   const uint8_t stream_id[16], int want, int timeout_ms,
                   int *phase, int *status, int *domid, char *msg, size_t cap);
VMC_API int vmc_commit_send(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                            const uint8_t stream_id[16]);
VMC_API int vmc_commit_recv(struct vmc_ctx *ctx, int fd, const struct vmc_session *s,
                            const uint8_t stream_id[16], int timeout_ms);

/* ---- envelope header ------------------------------------------------- */

struct vmc_header;
struct vmc_slot_info {
    int type;                 /* VMC_SLOT_* */
    uint32_t kdf_ops;         /* Argon2id only */
    uint32_t kdf_mem_kib;     /* Argon2id only */
    uint8_t key_id[16];       /* raw key only */
};
struct vmc_header_info {
    uint32_t version;
    uint32_t header_len;
    uint16_t aead, compression;
    uint32_t chunk_size;
    uint32_t flags;
    uint8_t stream_id[16];
    char label[VMC_LABEL_MAX + 1];
    int nslots;               /* each one: vmc_header_slot() */
    int unlocked;             /* file key found and header MAC verified */
    int opened_by;            /* index of the slot that opened it, or -1 */
    int is_signed;            /* format 2: names its signer */
    int signature_ok;         /* header_sig verifies with the signer (no key
                               * needed); the chunks are checked as read */
    char signer[VMC_RECIPIENT_STRLEN];  /* vmcs1..., "" when unsigned */
};
/* Reads exactly the header from fd (no more) and parses it. */
VMC_API int vmc_header_read(struct vmc_ctx *ctx, int fd, struct vmc_header **out);
/* Parses a header held in memory; *used gets its length. */
VMC_API int vmc_header_parse(struct vmc_ctx *ctx, const uint8_t *buf, size_t len,
                     struct vmc_header **out);
/* Live: the session's key opens the single SESSION slot; checks the MAC. */
VMC_API int vmc_header_unlock_session(struct vmc_ctx *ctx, struct vmc_header *h,
                                      const struct vmc_session *s,
                                      const struct vmc_keys *trust);
/* Finds a slot that keys opens, unwraps the file key, checks the MAC. */
VMC_API int vmc_header_unlock(struct vmc_ctx *ctx, struct vmc_header *h,
                      const struct vmc_keys *keys);
VMC_API void vmc_header_get_info(const struct vmc_header *h,
                         struct vmc_header_info *info);
/* 1 if h is signed, its header signature verifies, and keys trusts its
 * signer; else 0. */
VMC_API int vmc_header_trusted(const struct vmc_header *h,
                               const struct vmc_keys *keys);
/* What vmc_header_unlock checks first, for a tool that asks for a
 * passphrase only for a stream it would act on: 0, VMC_E_AUTH (the header
 * signature does not verify) or VMC_E_UNTRUSTED (keys' VMC_TRUST_*). */
VMC_API int vmc_header_check_signer(struct vmc_ctx *ctx,
                                    const struct vmc_header *h,
                                    const struct vmc_keys *keys);
/* Slot i (0 .. nslots-1) of the header; VMC_E_INVAL outside. */
VMC_API int vmc_header_slot(const struct vmc_header *h, int i,
                            struct vmc_slot_info *slot);
/* 1 if a passphrase can open it (it has an Argon2id slot): a tool asks for
 * one when it was given no key. */
VMC_API int vmc_header_has_passphrase(const struct vmc_header *h);
VMC_API void vmc_header_free(struct vmc_header *h);
VMC_API const uint8_t *vmc_header_stream_id(const struct vmc_header *h);  /* 16 bytes */

/* Rekey: remove slots, add new ones for keys, re-MAC.  The header must be
 * unlocked.  remove[] lists slot indices (nremove entries). */
VMC_API int vmc_header_rekey(struct vmc_ctx *ctx, struct vmc_header *h,
                     const int *remove, int nremove,
                     const struct vmc_keys *add);
/* Which slots does keys name (recipients, passphrases, raw keys)?  Fills
 * idx (capacity 32) and returns the count, or a negative error.  A
 * passphrase matches a slot only if it opens it. */
VMC_API int vmc_header_match_slots(struct vmc_ctx *ctx, const struct vmc_header *h,
                           const struct vmc_keys *keys, int idx[32]);
VMC_API int vmc_header_write(struct vmc_ctx *ctx, const struct vmc_header *h, int fd);

/* ---- writer: records -> chunks -> fd -------------------------------- */

struct vmc_writer_opts {
    int level;                /* zstd level, 0 = default (1) */
    uint32_t chunk_size;      /* 0 = VMC_CHUNK_DEFAULT */
    int threads;              /* 0 = online CPUs */
    const char *label;        /* public label in the header, may be NULL */
    uint32_t header_flags;    /* VMC_HF_* */
    const struct vmc_session *session;  /* live path: seal to the session */
    int adaptive;             /* per chunk, between store and `level`: up
                               * while the socket or pipe buffer stays half
                               * full (slow link), down while it never is;
                               * for links: a file always stores */
    int unsigned_v1;          /* write format 1: no signer, no signatures
                               * (readers refuse to restore it unless told) */
};
struct vmc_writer;
/* Writes the header at once.  fd is borrowed. */
VMC_API int vmc_writer_new(struct vmc_ctx *ctx, int fd, const struct vmc_keys *keys,
                   const struct vmc_writer_opts *opts, struct vmc_writer **out);
/* A whole record. */
VMC_API int vmc_writer_record(struct vmc_writer *w, uint32_t type, const void *body,
                      size_t len);
struct vmc_image_meta;
/* The records that open every image: IMAGE_INFO from m, stamped with this
 * host's name, the tool version and the time, then DOMAIN_CONFIG of
 * cfg_format and cfg (none if cfg is NULL). */
VMC_API int vmc_writer_describe(struct vmc_writer *w, const struct vmc_image_meta *m,
                                uint32_t cfg_format, const uint8_t *cfg,
                                size_t cfg_len);
/* A record whose body is written in pieces: begin(len), write()* totalling
 * exactly len. */
VMC_API int vmc_writer_begin(struct vmc_writer *w, uint32_t type, uint32_t len);
VMC_API int vmc_writer_write(struct vmc_writer *w, const void *buf, size_t len);
/* Progress callback: total bytes so far; return non-zero to cancel. */
typedef int (*vmc_progress_fn)(void *arg, uint64_t bytes);
/* Copies fd until EOF into BACKEND_STREAM records (1 MiB pieces). */
VMC_API int vmc_writer_copy_backend(struct vmc_writer *w, int fd, vmc_progress_fn cb,
                            void *arg);
/* Seals what is buffered as a (short) chunk, and writes it out. */
VMC_API int vmc_writer_flush(struct vmc_writer *w);
/* Appends END and the final chunk, waits for every chunk to be written. */
VMC_API int vmc_writer_finish(struct vmc_writer *w, uint64_t total_time_ns,
                      uint64_t downtime_ns);
struct vmc_stats {
    uint64_t records;
    uint64_t backend_bytes;
    uint64_t plaintext_bytes;
    uint64_t stream_bytes;    /* bytes on the wire: header + chunks */
    uint64_t chunks;
};
VMC_API void vmc_writer_stats(const struct vmc_writer *w, struct vmc_stats *st);
VMC_API void vmc_writer_stream_id(const struct vmc_writer *w, uint8_t id[16]);
VMC_API void vmc_writer_free(struct vmc_writer *w);

/* ---- image info builder ---------------------------------------------- */

struct vmc_image_meta {
    uint8_t uuid[16];
    uint64_t memory_kib;
    uint32_t vcpus;
    uint16_t backend;
    uint16_t stream_format;
    int64_t time_unix;
    uint32_t flags;
    char name[VMC_INFO_STR_MAX + 1];
    char host[VMC_INFO_STR_MAX + 1];
    char backend_version[VMC_INFO_STR_MAX + 1];
    char tool_version[VMC_INFO_STR_MAX + 1];
    char guest_type[VMC_INFO_STR_MAX + 1];
};
/* Encodes an IMAGE_INFO body; *len gets its size.  buf >= 2048 bytes. */
VMC_API int vmc_image_info_build(const struct vmc_image_meta *m, uint8_t *buf,
                         size_t cap, size_t *len);
VMC_API int vmc_image_info_parse(struct vmc_ctx *ctx, const uint8_t *buf, size_t len,
                         struct vmc_image_meta *m);

/* ---- reader: fd -> chunks -> records --------------------------------- */

struct vmc_record {
    uint32_t type;
    uint32_t length;
    uint64_t offset;          /* of the record header in the plaintext */
};
struct vmc_reader;
/* Takes ownership of h (unlocked).  fd is borrowed; exact_eof asks that
 * nothing follow the final chunk. */
VMC_API int vmc_reader_new(struct vmc_ctx *ctx, int fd, struct vmc_header *h,
                   int threads, int exact_eof, struct vmc_reader **out);
/* Same, failing with VMC_E_IO when no byte arrives for idle_ms (live). */
VMC_API int vmc_reader_new_timeout(struct vmc_ctx *ctx, int fd, struct vmc_header *h,
                           int threads, int exact_eof, int idle_ms,
                           struct vmc_reader **out);
/* Next record header: 1 = a record, 0 = END verified (see
 * vmc_reader_end), negative = error.  The unread body of the previous
 * record is skipped.  Unknown optional records are skipped; unknown
 * mandatory records are refused. */
VMC_API int vmc_reader_next(struct vmc_reader *r, struct vmc_record *rec);
/* Reads up to len body bytes of the current record; returns bytes read
 * (0 at the end of the body) or a negative error. */
VMC_API ssize_t vmc_reader_read(struct vmc_reader *r, void *buf, size_t len);
/* vmc_reader_read() without the copy: *ptr points to up to len bytes of
 * the current record's body (fewer at a chunk boundary), valid until the
 * next call on r.  Returns the count, 0 at the end of the body, or < 0. */
VMC_API ssize_t vmc_reader_read_ptr(struct vmc_reader *r, const void **ptr, size_t len);
/* Reads the whole current body into a new buffer (caller frees). */
VMC_API int vmc_reader_read_all(struct vmc_reader *r, uint8_t **buf, size_t *len);
struct vmc_end_info {
    uint64_t records, backend_bytes, plaintext_bytes;
    uint64_t total_time_ns, downtime_ns;
};
VMC_API void vmc_reader_end(const struct vmc_reader *r, struct vmc_end_info *e);
VMC_API void vmc_reader_stats(const struct vmc_reader *r, struct vmc_stats *st);
/* Keeps only the header: vmc_reader_free frees it. */
VMC_API const struct vmc_header *vmc_reader_header(const struct vmc_reader *r);
VMC_API void vmc_reader_stream_id(const struct vmc_reader *r, uint8_t id[16]);
VMC_API void vmc_reader_free(struct vmc_reader *r);

/* Record parser over any byte source (used by the reader and the fuzz
 * target).  read() fills exactly n bytes, returns 0, VMC_E_TRUNC at a clean
 * end of input, or another negative error. */
struct vmc_recparse;
typedef int (*vmc_src_fn)(void *src, void *buf, size_t n);
VMC_API struct vmc_recparse *vmc_recparse_new(struct vmc_ctx *ctx, vmc_src_fn fn,
                                      void *src);
VMC_API int vmc_recparse_next(struct vmc_recparse *p, struct vmc_record *rec);
VMC_API ssize_t vmc_recparse_read(struct vmc_recparse *p, void *buf, size_t len);
VMC_API void vmc_recparse_end(const struct vmc_recparse *p, struct vmc_end_info *e);
VMC_API void vmc_recparse_free(struct vmc_recparse *p);
VMC_API const char *vmc_record_name(uint32_t type);

/* ---- whole-image helpers -------------------------------------------- */

struct vmc_type_count {
    uint32_t type;
    uint64_t count;
    uint64_t bytes;
};
struct vmc_summary {
    struct vmc_image_meta meta;
    uint32_t config_format;   /* 0 if no DOMAIN_CONFIG */
    uint64_t config_len;
    int ntypes;               /* record types in order of first sight; a
                                 stream with more than VMC_SUMMARY_TYPES
                                 distinct ones lists only the first */
    struct vmc_type_count *types; /* the library's: vmc_summary_free() */
    struct vmc_end_info end;
    struct vmc_stats stats;
    int disks;                /* DISK records */
    int disks_carried;        /* of them carried, each content verified */
    int disks_not_captured;
    uint64_t disk_bytes;      /* DISK_EXTENT data octets */
};
#define VMC_SUMMARY_TYPES 4096
/* Frees what a drain put in sum (not sum itself). */
VMC_API void vmc_summary_free(struct vmc_summary *sum);
/* Reads every record to END: BACKEND_STREAM bodies go to outfd (-1: none),
 * cb sees the backend bytes so far.  Fills sum (may be NULL; free it with
 * vmc_summary_free(), also after a failure).  Returns 0
 * only if the whole stream authenticated and every rule held. */
VMC_API int vmc_reader_drain(struct vmc_reader *r, int outfd, vmc_progress_fn cb,
                     void *arg, struct vmc_summary *sum);
/* Same, and every disk the image carries goes to a new sparse file
 * DISK_DIR/ID.raw (ID: the guest-facing id, [A-Za-z0-9._-] by the
 * format; 0600, never over an existing file nor through a symlink), its
 * content checked against its digest; the files and DISK_DIR are fsync'd
 * once END verified.  A failure removes every file it made. */
VMC_API int vmc_reader_drain_disks(struct vmc_reader *r, int outfd,
                                   const char *disk_dir, vmc_progress_fn cb,
                                   void *arg, struct vmc_summary *sum);
/* The head of a restorable image: IMAGE_INFO into m, optional records
 * skipped, then DOMAIN_CONFIG: its format and body without the 8-octet
 * head (*cfg, caller frees).  A raw stream (backend none) is refused. */
VMC_API int vmc_reader_head(struct vmc_reader *r, struct vmc_image_meta *m,
                            uint32_t *cfg_format, uint8_t **cfg,
                            size_t *cfg_len);
/* ---- disks (stream/disk.c; spec "Disks") ------------------------------ */
/* What a DISK record says (strings bounded by the format, NUL-terminated). */
struct vmc_disk_info {
    uint32_t index;           /* unique in the image */
    uint32_t flags;           /* VMC_DF_* */
    uint64_t virtual_size;
    uint32_t block_size;
    uint16_t source_format;   /* VMC_DISK_FMT_* */
    char id[VMC_DISK_ID_MAX + 1];       /* guest-facing: "virtio0", "xvda" */
    char path[VMC_DISK_PATH_MAX + 1];   /* where the saving host had it */
};
/* A DISK record. */
VMC_API int vmc_writer_disk(struct vmc_writer *w, const struct vmc_disk_info *d);
/* The content of disk d read from fd, the file as vmc_disk_open opened it
 * (its first d->virtual_size guest-visible octets; a qcow2 disk through
 * qemu-nbd, read-only): DISK_EXTENT records of the grains that are not all
 * zero (holes and unallocated clusters are skipped unread), then DISK_END
 * with the counts and the digest.  Each extent goes to the writer straight
 * from the buffer it was read into (at most 1 MiB: the memory it takes). */
VMC_API int vmc_writer_disk_content(struct vmc_writer *w,
                                    const struct vmc_disk_info *d, int fd,
                                    vmc_progress_fn cb, void *arg);
/* The disk records of a stream as a reader meets them: every rule of the
 * spec checked, the digest of each carried disk computed and compared at
 * its DISK_END, and its grains that are not all zero written into the
 * disk's sink (if set) at their offset: a sink starts as a sparse file of
 * the disk's virtual size. */
struct vmc_disks;
VMC_API int vmc_disks_new(struct vmc_ctx *ctx, struct vmc_disks **out);
VMC_API void vmc_disks_free(struct vmc_disks *t);
/* A DISK, DISK_EXTENT or DISK_END record just returned by vmc_reader_next
 * (other types: 0, untouched): reads its body. */
VMC_API int vmc_disks_record(struct vmc_disks *t, struct vmc_reader *r,
                             const struct vmc_record *rec);
/* After END (at end_offset): every carried disk had its DISK_END. */
VMC_API int vmc_disks_finish(struct vmc_disks *t, uint64_t end_offset);
VMC_API int vmc_disks_count(const struct vmc_disks *t);
VMC_API const struct vmc_disk_info *vmc_disks_get(const struct vmc_disks *t,
                                                  int i);
VMC_API void vmc_disks_set_sink(struct vmc_disks *t, int i, int fd);
/* 1 and the digest once disk i's DISK_END verified, else 0. */
VMC_API int vmc_disks_digest(const struct vmc_disks *t, int i,
                             uint8_t out[VMC_DISK_DIGEST_LEN]);
/* The content digest of fd's first size octets, as DISK_END has it. */
VMC_API int vmc_disk_file_digest(struct vmc_ctx *ctx, int fd, uint64_t size,
                                 uint8_t out[VMC_DISK_DIGEST_LEN]);

/* Opens the disk file at path, of a VMC_DISK_FMT_*, read-only: *fd, and
 * its virtual size in *size (raw: the file's size; qcow2: its header's).
 * id names the disk in errors.  Only a regular file is a disk here. */
VMC_API int vmc_disk_open(struct vmc_ctx *ctx, const char *path,
                          unsigned format, const char *id, int *fd,
                          uint64_t *size);
/* A frozen copy of disk file fd (at path, size octets) as it is now, in
 * *copy: an unnamed file (O_TMPFILE) in path's directory, so that
 * nothing of it outlives the process; a reflink (FICLONE) where the
 * filesystem shares blocks (*reflinked 1), else a sparse copy (holes stay
 * holes).  A backend's disk view when its hypervisor has none (Xen). */
VMC_API int vmc_disk_snapshot(struct vmc_ctx *ctx, const char *path, int fd,
                              uint64_t size, int *copy, int *reflinked);

/* Copies every record r reads to w as it is (IMAGE_INFO and all), then
 * finishes w with the END times of r: the same content under w's keys
 * (rekey --rotate).  Unknown optional records, which r skips, are not
 * copied.  0 only if r authenticated to its END. */
VMC_API int vmc_reader_copy_records(struct vmc_reader *r, struct vmc_writer *w,
                                    vmc_progress_fn cb, void *arg);
/* Copies in to out until EOF (rekey copies chunks untouched). */
VMC_API int vmc_copy_fd(struct vmc_ctx *ctx, int in, int out, const char *what);
/* Copies the payload after a header from in to out untouched, and reads it
 * under h (unlocked; taken): 0 only if every chunk authenticated and END
 * verified (rekey: a truncated or damaged payload is never committed). */
VMC_API int vmc_copy_verified(struct vmc_ctx *ctx, struct vmc_header *h,
                              int in, int out, const char *what);

/* ---- output files ------------------------------------------------------ */

/* Creates "path.partial" (O_EXCL|O_NOFOLLOW, 0600, locked); a stale
 * .partial left by a killed run (not locked) is replaced.  "-" means
 * stdout.  Commit: fsync, rename to path, fsync directory.  Abort: unlink.
 * Free aborts unless committed. */
struct vmc_outfile;
VMC_API int vmc_outfile_open(struct vmc_ctx *ctx, const char *path, int overwrite,
                     struct vmc_outfile **out);
VMC_API int vmc_outfile_fd(const struct vmc_outfile *of);
/* A stream outfile over fd (a socket or pipe): nothing to commit. */
VMC_API int vmc_outfile_stream(struct vmc_ctx *ctx, int fd, struct vmc_outfile **out);
/* The .partial path, or NULL for stdout (owned by of). */
VMC_API const char *vmc_outfile_partial(const struct vmc_outfile *of);
VMC_API int vmc_outfile_commit(struct vmc_ctx *ctx, struct vmc_outfile *of);
VMC_API void vmc_outfile_abort(struct vmc_outfile *of);
VMC_API void vmc_outfile_free(struct vmc_outfile *of);
/* Async-signal-safe: unlinks the .partial of every open outfile. */
VMC_API void vmc_outfile_cleanup_signal(void);

/* A split set: the stream cut into pieces path.000, path.001, ... of at
 * most piece_size bytes each (VMC_SPLIT_MIN..VMC_SPLIT_MAX: a FAT32 file
 * holds 4 GiB - 1), at most VMC_SPLIT_MAX_PIECES of them; path itself is
 * not created (and, unless overwrite, neither it nor path.000 may exist).
 * Each piece is path.NNN.partial (as above) until the commit, fsync'd
 * when full.  Commit: the pieces after the first renamed, every path.NNN
 * above the last removed (an older, longer set), the directory fsync'd,
 * then path.000 renamed (a set exists only once its first piece does)
 * and the directory fsync'd.  Abort or a failed commit: every piece
 * removed.  vmc_outfile_fd() is one descriptor for the whole set, written
 * through the library only (vmc_writer_*, vmc_header_write, vmc_reader_drain,
 * vmc_copy_verified); vmc_outfile_partial() names path.000.partial. */
#define VMC_SPLIT_MIN ((uint64_t)1 << 20)
#define VMC_SPLIT_MAX (((uint64_t)4 << 30) - 1)
#define VMC_SPLIT_MAX_PIECES 1000
VMC_API int vmc_outfile_open_split(struct vmc_ctx *ctx, const char *path,
                                   int overwrite, uint64_t piece_size,
                                   struct vmc_outfile **out);

/* ---- input files: one image, or a split set read as one stream ---------
 * vmc_input_open: "-" is stdin; path, when it exists, is that file;
 * otherwise path.000 and the pieces after it (path.000 given: the same
 * set) are read in order as one stream, up to the first missing number,
 * by a thread feeding vmc_input_fd() (a socket).  Every piece is a
 * regular file in path's directory, opened O_NOFOLLOW (a symlink is
 * refused); a piece missing below a piece that exists is refused at open.
 * vmc_input_size: the bytes of the file or set, 0 when not known (a pipe).
 * vmc_input_pieces: the pieces of a set, 0 for one file.
 * vmc_input_blame: after a reader of in failed with ctx's error, the file
 * to name in the message: a set's piece where the stream broke (its
 * error rewritten when the set ended early or a piece could not be read),
 * or the path given (owned by in).
 * vmc_input_close: stops the thread, closes; accepts NULL. */
struct vmc_input;
VMC_API int vmc_input_open(struct vmc_ctx *ctx, const char *path,
                           struct vmc_input **out);
VMC_API int vmc_input_fd(const struct vmc_input *in);
VMC_API uint64_t vmc_input_size(const struct vmc_input *in);
VMC_API int vmc_input_pieces(const struct vmc_input *in);
VMC_API const char *vmc_input_blame(struct vmc_input *in, struct vmc_ctx *ctx);
VMC_API void vmc_input_close(struct vmc_input *in);

/* ---- save / restore engine ---------------------------------------- */

struct vmc_backend;
/* "qemu" (always) or "xen" (when built with libxl); NULL if unknown. */
VMC_API const struct vmc_backend *vmc_backend_get(const char *name);
VMC_API const char *vmc_backends_built(void);       /* e.g. "qemu" */
VMC_API const struct vmc_backend *vmc_backend_default(void);

struct vmc_round {
    uint64_t bytes;           /* hypervisor stream bytes in this round */
    uint64_t duration_ns;
};
enum vmc_save_mode {
    VMC_SAVE_DESTROY = 0,     /* default: destroy after the image is durable */
    VMC_SAVE_CHECKPOINT,      /* leave it running */
    VMC_SAVE_PAUSED,          /* leave it paused */
    VMC_SAVE_MIGRATE,         /* destroy once confirm() says the copy runs */
};
struct vmc_save_tuning {
    int live;                 /* pre-copy while running */
    uint32_t max_downtime_ms; /* live: 0 = backend default */
    uint64_t max_bandwidth;   /* bytes/s, 0 = unlimited */
};
struct vmc_save_opts {
    enum vmc_save_mode mode;
    int live;                 /* pre-copy while running */
    uint32_t max_downtime_ms; /* live: the pause the hypervisor aims for */
    uint64_t max_bandwidth;   /* bytes/s, 0 = unlimited */
    uint32_t live_timeout_s;  /* live: pause the guest after this long in
                                 pre-copy so the save ends (0 = 30 s) */
    const struct vmc_keys *keys;
    struct vmc_writer_opts wopts;
    vmc_progress_fn progress; /* backend bytes so far */
    void *progress_arg;
    /* May be NULL: once the domain is described, the size that the
     * hypervisor stream will be about (its memory), for progress. */
    void (*expect)(void *progress_arg, uint64_t bytes);
    /* May be NULL: live, each pre-copy round in order (the last is the
     * stop-and-copy), called on the caller's thread once the stream has
     * ended; res->nrounds counts them. */
    void (*round)(void *round_arg, const struct vmc_round *r);
    void *round_arg;
    /* VMC_SAVE_MIGRATE: after the final chunk went out, waits for the
     * receiver's READY (the new domain loaded, paused); 0 = ready, else a
     * negative error with ctx set (the source is resumed). */
    int (*confirm)(void *arg, struct vmc_ctx *ctx, const uint8_t stream_id[16]);
    /* MIGRATE, after confirm: the point of no return.  The source stays
     * paused from here on (its guardian too keeps it so); commit says so to
     * the receiver and waits for it to run the domain.  0: it runs there,
     * the source is destroyed; <0: unknown, the source is left paused
     * (result outcome_unknown), or the receiver gave up (result
     * peer_gave_up: the source is resumed). */
    int (*commit)(void *arg, struct vmc_ctx *ctx, const uint8_t stream_id[16],
                  int *peer_gave_up);
    void *confirm_arg;
    /* The domain's disks (spec "Disks"): VMC_SAVE_DISKS_WRITABLE carries
     * every writable disk in the image, read while the guest is stopped
     * (destroy, paused and migrate modes: after its memory; a checkpoint
     * through the backend's view); _ALL read-only media too.  A checkpoint
     * of a domain with writable disks is refused unless memory_only: its
     * disks are then recorded as not captured, and a restore warns. */
    int disks;                /* VMC_SAVE_DISKS_* */
    int memory_only;
};
#define VMC_SAVE_DISKS_NONE     0
#define VMC_SAVE_DISKS_WRITABLE 1
#define VMC_SAVE_DISKS_ALL      2
struct vmc_save_result {
    int domid;
    char name[VMC_INFO_STR_MAX + 1];
    uint64_t total_ns;        /* whole command */
    uint64_t downtime_ns;     /* guest not running (until resumed/durable) */
    uint64_t stream_bytes;    /* image bytes written */
    uint64_t backend_bytes;   /* hypervisor stream bytes */
    int was_running;
    int resumed_after_error;  /* failure path: the domain was resumed */
    int state_unknown;        /* failure path: its state could not be read */
    int lost;                 /* failure path: the guest itself died during
                                 the save (crash, triple fault) or vanished */
    char lost_why[256];       /* lost: the hypervisor's own words, or "" */
    char evidence[512];       /* lost: file keeping the evidence, or "" */
    int destroy_failed;       /* the image is complete (committed) but the
                                 domain could not be destroyed: paused */
    int forced_stop;          /* live: pre-copy did not converge in time */
    uint8_t stream_id[16];    /* of the stream written (REPLY on failure) */
    int nrounds;              /* live: pre-copy rounds seen (last = stop);
                                 each one went to opts->round */
    int outcome_unknown;      /* migrate: committed, but the receiver did not
                                 say it runs the domain: the source is left
                                 paused (neither copy may be lost) */
    int disks;                /* disks the domain has */
    int disks_carried;        /* of them, carried in the image */
    int disks_not_captured;   /* writable ones left out (memory_only) */
    uint64_t disk_bytes;      /* octets of their records: the data that
                                 is neither hole nor zero, and the heads */
    uint64_t disk_ns;         /* reading and sealing them */
};
/* Saves domain `spec` into `of` (borrowed; committed here before the
 * domain is destroyed).  On failure the domain is back as it was, the
 * outfile is left for the caller to free (which removes .partial). */
VMC_API int vmc_save(struct vmc_ctx *ctx, const struct vmc_backend *be,
             const char *spec, struct vmc_outfile *of,
             const struct vmc_save_opts *o, struct vmc_save_result *res);

struct vmc_remap {
    const char *id, *to;
};
struct vmc_restore_opts {
    const char *name;         /* NULL: the recorded name */
    int clone;                /* fresh name and UUID */
    int paused;               /* leave it paused */
    vmc_progress_fn progress;
    void *progress_arg;
    /* May be NULL: once IMAGE_INFO is read, the recorded memory size. */
    void (*expect)(void *progress_arg, uint64_t bytes);
    /* The restore policy (NULL: vmc_policy_new()'s defaults). */
    const struct vmc_policy *policy;
    /* May be NULL: a config (the DOMAIN_CONFIG body's format, e.g. from
     * vmimage config --json) used instead of the recorded one; checked by
     * the same policy. */
    const uint8_t *config;
    size_t config_len;
    /* May be NULL: called with the domain loaded and paused (its id);
     * 0 lets it run (unless paused), <0 destroys it (the migration's
     * receiver: READY, then the sender's COMMIT or not). */
    int (*activate)(void *arg, struct vmc_ctx *ctx, int domid);
    /* May be NULL: once the gated domain runs (the migration's RUNNING);
     * only then does a copy of a source on this host wait for the source
     * to go and take its name. */
    void (*running)(void *arg, int domid);
    void *activate_arg;
    /* Where the disks an image carries are written (NAME-ID.raw, 0600,
     * never over an existing file); required when it carries any. */
    const char *disk_dir;
    /* The admin's remaps, applied to the config (recorded or --config)
     * before the policy judges it, which allows each disk path given:
     * disk_map: disk ID is at PATH on this host (a carried one is written
     * to exactly PATH: a new file, as in disk_dir); net_map: network ID
     * gets the attachment TO (QEMU: a -netdev back end, "user" or
     * "tap,ifname=tap1,script=no"; Xen: a bridge).  An ID the config does
     * not have is refused. */
    const struct vmc_remap *disk_map;
    int ndisk_map;
    const struct vmc_remap *net_map;
    int nnet_map;
};
struct vmc_restore_result {
    int domid;
    char name[VMC_INFO_STR_MAX + 1];
    const struct vmc_backend *backend;
    uint64_t total_ns;
    uint64_t backend_bytes;
    int left_running;         /* it runs: also on an error after that point
                                 (a name not taken: it keeps name) */
    int disks_written;        /* carried disks written into disk_dir */
    int disks_not_captured;   /* writable disks the image says it did not
                                 capture: they may have moved on */
    uint64_t disk_bytes;
};
/* Restores from an open reader (header unlocked): builds the domain as
 * records arrive, unpauses only after END authenticated.  On failure no
 * domain is left behind. */
VMC_API int vmc_restore(struct vmc_ctx *ctx, struct vmc_reader *r,
                const struct vmc_restore_opts *o, struct vmc_restore_result *res);

/* ---- the restore policy (backend/policy.c) ---------------------------
 * A domain config recorded in an image, or given with --config, is data:
 * the hypervisor binary and working directory are this host's, and every
 * option is checked before any hypervisor process starts.  Host files it
 * names must lie under an allowed directory: the built-in ones
 * (/usr/share/qemu, /usr/share/seabios, /usr/lib/ipxe/qemu,
 * /usr/share/ovmf, /usr/share/OVMF, /var/lib/vmckpt), $VMCKPT_ALLOW_DIRS
 * (colon-separated) and what the caller adds. */
struct vmc_policy;
VMC_API struct vmc_policy *vmc_policy_new(void);   /* NULL: out of memory */
VMC_API void vmc_policy_free(struct vmc_policy *p);
/* A directory that does not exist is ignored; "/" is refused. */
VMC_API int vmc_policy_allow_dir(struct vmc_ctx *ctx, struct vmc_policy *p,
                                 const char *dir);
/* One absolute directory per line, # comments; a missing file is no error,
 * a file that a user other than root or the caller can write is refused. */
VMC_API int vmc_policy_load_file(struct vmc_ctx *ctx, struct vmc_policy *p,
                                 const char *path);
/* Checks a DOMAIN_CONFIG body (without its 8-octet head) of an image of
 * m->backend: 0, or VMC_E_INVAL naming the option and why. */
VMC_API int vmc_config_check(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                             uint32_t format, const uint8_t *cfg, size_t len,
                             const struct vmc_policy *p);
/* A network device a config names: its id (QEMU: the -netdev or -nic
 * id=; Xen: the vif's devid), its attachment (QEMU: the back end type;
 * Xen: the bridge) and MAC if the config gives one. */
#define VMC_NET_ID_MAX 63
struct vmc_net_info {
    char id[VMC_NET_ID_MAX + 1];
    char attachment[128];
    char mac[32];
};
/* The disks and network devices of a DOMAIN_CONFIG body (the ids that
 * vmrestore --disk and --net take); at most max of each. */
VMC_API int vmc_config_devices(struct vmc_ctx *ctx,
                               const struct vmc_image_meta *m, uint32_t format,
                               const uint8_t *cfg, size_t len,
                               struct vmc_disk_info *disks, int maxd, int *nd,
                               struct vmc_net_info *nets, int maxn, int *nn);
/* What a restore on this host would run, as text (caller frees): QEMU's
 * command line, or the libxl config; VMC_E_FORMAT if cfg is not JSON. */
VMC_API int vmc_config_show(struct vmc_ctx *ctx, const struct vmc_image_meta *m,
                            uint32_t format, const uint8_t *cfg, size_t len,
                            char **text);

/* ---- live migration (migrate.c, io/endpoint.c) ---------------------- */

/* A link to a receiver: "HOST:PORT" or "[V6]:PORT" (TCP, tuned so that a
 * cut link fails within timeout_s), or "ssh://[USER@]HOST[:PORT]", which
 * runs remote_cmd on HOST through ssh(1) and speaks over its stdin and
 * stdout.  host: the host part (the known_hosts key). */
struct vmc_endpoint;
VMC_API int vmc_endpoint_dial(struct vmc_ctx *ctx, const char *dest,
                              const char *remote_cmd, int timeout_s,
                              struct vmc_endpoint **out);
VMC_API int vmc_endpoint_rfd(const struct vmc_endpoint *e);
VMC_API int vmc_endpoint_wfd(const struct vmc_endpoint *e);
VMC_API const char *vmc_endpoint_host(const struct vmc_endpoint *e);
/* The host part of dest, as dialing it would take it, without dialing:
 * to check known_hosts before anything runs on the other host. */
VMC_API int vmc_endpoint_host_of(struct vmc_ctx *ctx, const char *dest,
                                 char *host, size_t n);
VMC_API void vmc_endpoint_free(struct vmc_endpoint *e); /* closes, reaps ssh */
/* A listening socket on ADDR:PORT (an empty ADDR: every address). */
VMC_API int vmc_endpoint_listen(struct vmc_ctx *ctx, const char *addr, int *lfd);
/* The next connection (VMC_E_CANCELED if a signal interrupts); from gets
 * "ADDR:PORT" of the peer. */
VMC_API int vmc_endpoint_accept(struct vmc_ctx *ctx, int lfd, int timeout_s,
                                int *fd, char *from, size_t n);
/* The key that a known_hosts file ("HOST KEY" lines, # comments) pins for
 * host, added to keys; VMC_E_KEY if the host has no entry. */
VMC_API int vmc_known_hosts_find(struct vmc_ctx *ctx, const char *path,
                                 const char *host, struct vmc_keys *keys);

struct vmc_migrate_info {
    char peer[VMC_RECIPIENT_STRLEN]; /* the other end's key, once known */
    int remote_domid;         /* send: the new domain's id on the receiver */
    int handshake_failed;     /* nothing was sent or received: the domain is
                                 untouched */
    int unconfirmed;          /* receive: the domain runs, but the REPLY
                                 could not be sent */
};
/* Migrates domain spec over rfd/wfd: the handshake as id, pinning the
 * receiver to known; the save (opts: tuning and progress; the mode,
 * session and confirm are set here); the source is destroyed only after
 * the receiver's REPLY says the new domain runs. */
VMC_API int vmc_migrate_send(struct vmc_ctx *ctx, const struct vmc_backend *be,
                             const char *spec, int rfd, int wfd,
                             const struct vmc_keys *id,
                             const struct vmc_keys *known, int timeout_ms,
                             const struct vmc_save_opts *opts,
                             struct vmc_save_result *res,
                             struct vmc_migrate_info *mi);
/* Receives one migration: the handshake as id (the sender must be in
 * auth), the restore (ro), the REPLY (the new domain, or the error). */
VMC_API int vmc_migrate_receive(struct vmc_ctx *ctx, int rfd, int wfd,
                                const struct vmc_keys *id,
                                const struct vmc_keys *auth, int timeout_ms,
                                const struct vmc_restore_opts *ro,
                                struct vmc_restore_result *res,
                                struct vmc_migrate_info *mi);

/* A connected fd to domain `spec`'s console. */
VMC_API int vmc_console_open(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec, int *fd);

/* Guardian: tools call this first in main(); it returns only if this
 * process is not a guardian. */
VMC_API void vmc_guard_dispatch(int argc, char **argv);

/* Where a failed save keeps the evidence of a domain that died during it
 * (lost-<UTC time>-<id>-<name>.log): $VMCKPT_LOGDIR, else /var/log/vmckpt
 * as root, else $XDG_STATE_HOME/vmckpt or ~/.local/state/vmckpt. */
VMC_API const char *vmc_logdir(void);
/* Where running domains' state lives (QEMU registry, save locks):
 * $VMCKPT_RUNDIR, else /run/vmckpt as root, else $XDG_RUNTIME_DIR/vmckpt
 * or /tmp/vmckpt-UID. */
VMC_API const char *vmc_rundir(void);

/* ---- any backend's domains ------------------------------------------ */

VMC_API int vmc_domain_destroy(struct vmc_ctx *ctx, const struct vmc_backend *be,
                       const char *spec);
VMC_API int vmc_domain_resume(struct vmc_ctx *ctx, const struct vmc_backend *be,
                      const char *spec);
VMC_API int vmc_domain_pause(struct vmc_ctx *ctx, const struct vmc_backend *be,
                     const char *spec);

/* ---- misc ----------------------------------------------------------- */

VMC_API uint64_t vmc_now_ns(void);   /* CLOCK_MONOTONIC */
VMC_API int vmc_default_threads(void);

#endif
