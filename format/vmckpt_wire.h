/*
 * vmckpt_wire.h - wire types of the vmckpt stream, format version 2
 * (version 1: the same without the signer block and chunk signatures).
 *
 * This header is the codec half of format/vmckpt-stream.md, which is
 * normative.  Every multi-byte field is little-endian.  The structs below
 * document the layout and carry _Static_assert checks on size and offsets;
 * they are never read or written raw: format/wire.c encodes and decodes
 * each field explicitly.
 */
#ifndef VMCKPT_WIRE_H
#define VMCKPT_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* What libvmckpt.so exports (it is built with -fvisibility=hidden). */
#ifndef VMC_API
#define VMC_API __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------ */
/* Envelope header                                                      */
/* ------------------------------------------------------------------ */

/* 0x89 catches 7-bit channels, \r\n catches CRLF<->LF translation,
 * \0 catches C-string truncation. */
#define VMC_MAGIC           "\x89VMCK\r\n\0"
#define VMC_MAGIC_LEN       8
#define VMC_VERSION         2          /* signed */
#define VMC_VERSION_UNSIGNED 1         /* read always; written on request */

#define VMC_AEAD_CHACHA20POLY1305  1   /* IETF, 96-bit nonce */
#define VMC_COMP_ZSTD              1

#define VMC_HDR_FIXED_LEN   64
#define VMC_HDR_MAX_LEN     65536      /* whole header, slots + label + MAC */
#define VMC_HDR_MAC_LEN     32         /* HMAC-SHA-256 */
#define VMC_MAX_SLOTS       32
#define VMC_LABEL_MAX       255
#define VMC_CHUNK_MIN       (64u << 10)
#define VMC_CHUNK_MAX       (16u << 20)
#define VMC_CHUNK_DEFAULT   (2u << 20)

/* Signer block (version 2): right after the fixed part. */
#define VMC_SIGN_PK_LEN     32         /* Ed25519 public key */
#define VMC_SIG_LEN         64         /* Ed25519 signature */
#define VMC_SIGNER_BLOCK_LEN (VMC_SIGN_PK_LEN + VMC_SIG_LEN)
#define VMC_HDR_SIG_CTX     "vmckpt02 header\0"   /* 16 octets */
#define VMC_HDR_SIG_MSG_LEN 80
#define VMC_CHUNK_SIG_CTX   "vmckpt02 chunk\0\0"  /* 16 octets */
#define VMC_CHUNK_SIG_MSG_LEN 60

/* Header flags */
#define VMC_HF_LIVE         0x00000001u /* session stream (live path) */
#define VMC_HF_KNOWN        VMC_HF_LIVE

struct vmc_wire_hdr {
    uint8_t  magic[8];        /* VMC_MAGIC */
    uint32_t version;         /* VMC_VERSION */
    uint32_t header_len;      /* whole header incl. MAC; multiple of 8 */
    uint16_t aead;            /* VMC_AEAD_* */
    uint16_t compression;     /* VMC_COMP_* */
    uint32_t chunk_size;      /* max decompressed bytes per chunk, power of 2 */
    uint16_t nslots;          /* 1..VMC_MAX_SLOTS */
    uint16_t label_len;       /* 0..VMC_LABEL_MAX */
    uint32_t flags;           /* VMC_HF_*, others zero */
    uint8_t  stream_id[16];   /* random; chunk associated data */
    uint64_t reserved[2];     /* zero */
};
_Static_assert(sizeof(struct vmc_wire_hdr) == VMC_HDR_FIXED_LEN, "hdr size");
_Static_assert(offsetof(struct vmc_wire_hdr, version) == 8, "hdr version");
_Static_assert(offsetof(struct vmc_wire_hdr, header_len) == 12, "hdr len");
_Static_assert(offsetof(struct vmc_wire_hdr, aead) == 16, "hdr aead");
_Static_assert(offsetof(struct vmc_wire_hdr, compression) == 18, "hdr comp");
_Static_assert(offsetof(struct vmc_wire_hdr, chunk_size) == 20, "hdr chunk");
_Static_assert(offsetof(struct vmc_wire_hdr, nslots) == 24, "hdr nslots");
_Static_assert(offsetof(struct vmc_wire_hdr, label_len) == 26, "hdr label");
_Static_assert(offsetof(struct vmc_wire_hdr, flags) == 28, "hdr flags");
_Static_assert(offsetof(struct vmc_wire_hdr, stream_id) == 32, "hdr sid");
_Static_assert(offsetof(struct vmc_wire_hdr, reserved) == 48, "hdr rsvd");

/* ------------------------------------------------------------------ */
/* Key slots: an 8-byte slot header, then body_len bytes, padded to 8.   */
/* ------------------------------------------------------------------ */

#define VMC_SLOT_X25519      1  /* crypto_box_seal of the file key */
#define VMC_SLOT_ARGON2ID    2  /* Argon2id-derived key wraps file key */
#define VMC_SLOT_RAWKEY      3  /* 256-bit key file wraps file key */
#define VMC_SLOT_SESSION     4  /* live path: reserved, see spec */

struct vmc_wire_slot_hdr {
    uint16_t type;            /* VMC_SLOT_* */
    uint16_t reserved;        /* zero */
    uint32_t body_len;        /* exact length for the slot type */
};
_Static_assert(sizeof(struct vmc_wire_slot_hdr) == 8, "slot hdr size");
_Static_assert(offsetof(struct vmc_wire_slot_hdr, body_len) == 4, "slot len");

#define VMC_FILE_KEY_LEN     32
#define VMC_WRAP_TAG_LEN     16
#define VMC_WRAP_NONCE_LEN   24   /* XChaCha20-Poly1305 */
#define VMC_WRAPPED_LEN      (VMC_FILE_KEY_LEN + VMC_WRAP_TAG_LEN)

/* X25519: 32-byte ephemeral public key | 16-byte MAC | 32-byte key. */
#define VMC_SLOT_X25519_LEN  (32 + VMC_WRAPPED_LEN)
_Static_assert(VMC_SLOT_X25519_LEN == 80, "x25519 slot");

struct vmc_wire_slot_argon2id {
    uint8_t  salt[16];
    uint32_t opslimit;        /* Argon2id passes (t) */
    uint32_t memlimit_kib;    /* Argon2id memory in KiB (m), lanes = 1 */
    uint8_t  nonce[VMC_WRAP_NONCE_LEN];
    uint8_t  wrapped[VMC_WRAPPED_LEN];
};
_Static_assert(sizeof(struct vmc_wire_slot_argon2id) == 96, "argon2 slot");
_Static_assert(offsetof(struct vmc_wire_slot_argon2id, opslimit) == 16, "a2 t");
_Static_assert(offsetof(struct vmc_wire_slot_argon2id, memlimit_kib) == 20,
               "a2 m");
_Static_assert(offsetof(struct vmc_wire_slot_argon2id, nonce) == 24, "a2 n");
_Static_assert(offsetof(struct vmc_wire_slot_argon2id, wrapped) == 48, "a2 w");

/* Reader caps, checked before any KDF work. */
#define VMC_ARGON2_OPS_MIN     1
#define VMC_ARGON2_OPS_MAX     16
#define VMC_ARGON2_MEM_MIN_KIB 8192u            /* 8 MiB */
#define VMC_ARGON2_MEM_MAX_KIB (1024u * 1024u)  /* 1 GiB */
/* Writer defaults: libsodium's MODERATE limits. */
/* The most Argon2id work (passes x KiB, over every passphrase slot tried
 * with every passphrase given) one open may do: two slots at the maximum
 * cost, or about forty at the default.  More is refused before any work. */
#define VMC_ARGON2_WORK_MAX (2ull * VMC_ARGON2_OPS_MAX * VMC_ARGON2_MEM_MAX_KIB)
#define VMC_ARGON2_OPS_DEFAULT 3
#define VMC_ARGON2_MEM_DEFAULT_KIB (256u * 1024u)

struct vmc_wire_slot_rawkey {
    uint8_t  key_id[16];      /* BLAKE2b-128 keyed with the raw key of "vmckpt rawkey id" */
    uint8_t  nonce[VMC_WRAP_NONCE_LEN];
    uint8_t  wrapped[VMC_WRAPPED_LEN];
};
_Static_assert(sizeof(struct vmc_wire_slot_rawkey) == 88, "rawkey slot");
_Static_assert(offsetof(struct vmc_wire_slot_rawkey, nonce) == 16, "rk n");
_Static_assert(offsetof(struct vmc_wire_slot_rawkey, wrapped) == 40, "rk w");

/* ------------------------------------------------------------------ */
/* Payload chunks: a 4-byte length word, then the sealed chunk.          */
/* ------------------------------------------------------------------ */

#define VMC_CHUNK_FINAL      0x80000000u   /* bit 31 of the length word */
#define VMC_CHUNK_LEN_MASK   0x7fffffffu
#define VMC_AEAD_TAG_LEN     16
#define VMC_AEAD_NONCE_LEN   12

/* ------------------------------------------------------------------ */
/* Records inside the plaintext                                          */
/* ------------------------------------------------------------------ */

#define VMC_REC_OPTIONAL     0x80000000u   /* bit 31: skip if unknown */
#define VMC_REC_MAX_LEN      (16u << 20)   /* hard max body length */
#define VMC_REC_ALIGN        8

#define VMC_REC_IMAGE_INFO      0x00000001u
#define VMC_REC_DOMAIN_CONFIG   0x00000002u
#define VMC_REC_BACKEND_STREAM  0x00000003u
#define VMC_REC_END             0x00000004u
#define VMC_REC_DISK            0x00000005u  /* one disk of the domain */
#define VMC_REC_DISK_EXTENT     0x00000006u  /* content of a carried disk */
#define VMC_REC_DISK_END        0x00000007u  /* a carried disk is complete */
#define VMC_REC_NOTE            0x80000001u  /* optional free text */
#define VMC_REC_PRECOPY_ROUND   0x80000002u  /* optional live statistics */

struct vmc_wire_rec_hdr {
    uint32_t type;
    uint32_t length;          /* body bytes, excluding padding */
};
_Static_assert(sizeof(struct vmc_wire_rec_hdr) == 8, "rec hdr size");
_Static_assert(offsetof(struct vmc_wire_rec_hdr, length) == 4, "rec len");

/* IMAGE_INFO: fixed part, then tagged strings until the body ends. */
#define VMC_BACKEND_NONE     0   /* raw stream sealed by vmimage seal */
#define VMC_BACKEND_XEN      1
#define VMC_BACKEND_QEMU     2

#define VMC_SFMT_OPAQUE      0   /* unknown bytes */
#define VMC_SFMT_LIBXL       1   /* libxl migration stream v2 */
#define VMC_SFMT_QEMU        2   /* QEMU migration stream */
#define VMC_SFMT_XL_SAVE     3   /* whole legacy "xl save" file */

#define VMC_IIF_LIVE         0x1u  /* saved with pre-copy */
#define VMC_IIF_CHECKPOINT   0x2u  /* source kept running */
#define VMC_IIF_KNOWN        (VMC_IIF_LIVE | VMC_IIF_CHECKPOINT)

struct vmc_wire_image_info {
    uint8_t  uuid[16];
    uint64_t memory_kib;
    uint32_t vcpus;
    uint16_t backend;         /* VMC_BACKEND_* */
    uint16_t stream_format;   /* VMC_SFMT_* */
    int64_t  time_unix;       /* seconds since the epoch, UTC */
    uint32_t flags;           /* VMC_IIF_* */
    uint32_t reserved;        /* zero */
};
_Static_assert(sizeof(struct vmc_wire_image_info) == 48, "info size");
_Static_assert(offsetof(struct vmc_wire_image_info, memory_kib) == 16, "i m");
_Static_assert(offsetof(struct vmc_wire_image_info, vcpus) == 24, "i v");
_Static_assert(offsetof(struct vmc_wire_image_info, backend) == 28, "i b");
_Static_assert(offsetof(struct vmc_wire_image_info, stream_format) == 30,
               "i s");
_Static_assert(offsetof(struct vmc_wire_image_info, time_unix) == 32, "i t");
_Static_assert(offsetof(struct vmc_wire_image_info, flags) == 40, "i f");

/* Tagged strings after the fixed part: u16 tag, u16 len, len bytes UTF-8
 * (no NUL), padded to 4.  Unknown tags are skipped. */
#define VMC_INFO_NAME            1
#define VMC_INFO_HOST            2
#define VMC_INFO_BACKEND_VERSION 3
#define VMC_INFO_TOOL_VERSION    4
#define VMC_INFO_GUEST_TYPE      5
#define VMC_INFO_STR_MAX         255

/* DOMAIN_CONFIG: format word, reserved word, then config bytes. */
#define VMC_CFG_LIBXL_JSON   1
#define VMC_CFG_QEMU_JSON    2
struct vmc_wire_domain_config {
    uint32_t format;          /* VMC_CFG_* */
    uint32_t reserved;        /* zero */
};
_Static_assert(sizeof(struct vmc_wire_domain_config) == 8, "cfg size");

/* PRECOPY_ROUND (optional), exactly 24 octets. */
struct vmc_wire_precopy_round {
    uint32_t round;           /* pre-copy round number, 1-based */
    uint32_t reserved;        /* zero */
    uint64_t bytes;           /* octets transferred in the round */
    uint64_t duration_ns;
};
_Static_assert(sizeof(struct vmc_wire_precopy_round) == 24, "round size");

struct vmc_wire_end {
    uint64_t records;         /* records before END */
    uint64_t backend_bytes;   /* sum of BACKEND_STREAM body lengths */
    uint64_t plaintext_bytes; /* record bytes before END, with padding */
    uint64_t total_time_ns;   /* writer's view, 0 if unknown */
    uint64_t downtime_ns;     /* guest not running, 0 if unknown */
};
_Static_assert(sizeof(struct vmc_wire_end) == 40, "end size");
_Static_assert(offsetof(struct vmc_wire_end, backend_bytes) == 8, "e b");
_Static_assert(offsetof(struct vmc_wire_end, plaintext_bytes) == 16, "e p");
_Static_assert(offsetof(struct vmc_wire_end, total_time_ns) == 24, "e t");
_Static_assert(offsetof(struct vmc_wire_end, downtime_ns) == 32, "e d");

/* ---- disks (spec: "Disks") ------------------------------------------- */

#define VMC_DF_CARRIED       0x1u  /* content follows: DISK_EXTENTs, DISK_END */
#define VMC_DF_READONLY      0x2u  /* the guest cannot write it */
#define VMC_DF_REMOVABLE     0x4u  /* removable medium (CD-ROM) */
#define VMC_DF_NOT_CAPTURED  0x8u  /* writable, kept running, not frozen with
                                      the memory (memory-only checkpoint) */
#define VMC_DF_KNOWN         0xfu

#define VMC_DISK_FMT_RAW     1
#define VMC_DISK_FMT_QCOW2   2

#define VMC_DISK_MAX         64          /* disks per image */
#define VMC_DISK_ID_MAX      64          /* guest-facing id, octets */
#define VMC_DISK_PATH_MAX    4095        /* source path, octets */
#define VMC_DISK_GRAIN       65536u      /* extents and the digest in grains */
#define VMC_DISK_SIZE_MAX    (1ull << 50)
#define VMC_DISK_DIGEST_LEN  32          /* SHA-256 */
#define VMC_DISK_DIGEST_CTX  "vmckpt disk v1\0\0"  /* 16 octets */

/* DISK: this fixed part, then id_len octets of id, then path_len octets
 * of path; the body is exactly 48 + id_len + path_len. */
struct vmc_wire_disk {
    uint32_t disk;            /* index, unique in the image, < VMC_DISK_MAX */
    uint32_t flags;           /* VMC_DF_* */
    uint64_t virtual_size;    /* octets, a multiple of 512 */
    uint32_t block_size;      /* logical block size: 512 to 65536, 2^n */
    uint16_t source_format;   /* VMC_DISK_FMT_*, the file it was read from */
    uint16_t id_len;          /* 1 to VMC_DISK_ID_MAX */
    uint8_t  parent[16];      /* zero: the whole disk (incremental: later) */
    uint16_t path_len;        /* 0 to VMC_DISK_PATH_MAX */
    uint16_t reserved0;       /* zero */
    uint32_t reserved1;       /* zero */
};
#define VMC_DISK_FIXED_LEN   48

/* DISK_EXTENT: this head, then the data (grains of the disk from offset). */
struct vmc_wire_disk_extent {
    uint32_t disk;
    uint32_t reserved;        /* zero */
    uint64_t offset;          /* a multiple of VMC_DISK_GRAIN */
};
#define VMC_DISK_EXTENT_HEAD 16

/* DISK_END, exactly 56 octets. */
struct vmc_wire_disk_end {
    uint32_t disk;
    uint32_t reserved;        /* zero */
    uint64_t extents;         /* DISK_EXTENT records of this disk */
    uint64_t data_bytes;      /* their data octets */
    uint8_t  digest[VMC_DISK_DIGEST_LEN];
};
#define VMC_DISK_END_LEN     56

/* ------------------------------------------------------------------ */
/* Little-endian helpers                                                 */
/* ------------------------------------------------------------------ */

static inline void vmc_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void vmc_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void vmc_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t vmc_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t vmc_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t vmc_get64(const uint8_t *p)
{
    return (uint64_t)vmc_get32(p) | ((uint64_t)vmc_get32(p + 4) << 32);
}

#define VMC_PAD8(n) (((n) + 7u) & ~(size_t)7u)

/* ------------------------------------------------------------------ */
/* Codec (format/wire.c).  Decoders check every constraint of the spec  */
/* that the bytes alone can show and return 0 or a negative vmc_err.    */
/* ------------------------------------------------------------------ */

/* Names of the enums above, "unknown" for a value this version does not
 * know: VMC_AEAD_*, VMC_COMP_*, VMC_BACKEND_*, VMC_SLOT_*, VMC_SFMT_*,
 * VMC_CFG_* (record types: vmc_record_name; errors: vmc_strerror). */
VMC_API const char *vmc_aead_name(unsigned aead);
VMC_API const char *vmc_compression_name(unsigned compression);
VMC_API const char *vmc_backend_id_name(unsigned id);
VMC_API const char *vmc_slot_type_name(unsigned type);
VMC_API const char *vmc_stream_format_name(unsigned sformat);
VMC_API const char *vmc_config_format_name(unsigned format);

VMC_API void vmc_hdr_encode(uint8_t out[VMC_HDR_FIXED_LEN],
                    const struct vmc_wire_hdr *h);
/* Decodes and validates the fixed header; *why names the broken rule. */
VMC_API int vmc_hdr_decode(struct vmc_wire_hdr *h, const uint8_t in[VMC_HDR_FIXED_LEN],
                   const char **why);

VMC_API void vmc_image_info_encode(uint8_t out[48],
                           const struct vmc_wire_image_info *ii);
VMC_API void vmc_image_info_decode(struct vmc_wire_image_info *ii, const uint8_t in[48]);

VMC_API void vmc_end_encode(uint8_t out[40], const struct vmc_wire_end *e);
VMC_API void vmc_end_decode(struct vmc_wire_end *e, const uint8_t in[40]);

VMC_API void vmc_domain_config_encode(uint8_t out[8],
                                      const struct vmc_wire_domain_config *c);
/* A DOMAIN_CONFIG body of len octets: its head (0), or VMC_E_FORMAT and
 * *why (shorter than 8, reserved word not zero). */
VMC_API int vmc_domain_config_decode(struct vmc_wire_domain_config *c,
                                     const uint8_t *in, size_t len,
                                     const char **why);
VMC_API void vmc_precopy_round_encode(uint8_t out[24],
                                      const struct vmc_wire_precopy_round *r);
/* VMC_E_FORMAT and *why unless len is 24 and the reserved word zero. */
VMC_API int vmc_precopy_round_decode(struct vmc_wire_precopy_round *r,
                                     const uint8_t *in, size_t len,
                                     const char **why);

/* DISK: *id and *path point into in (not NUL-terminated).  VMC_E_FORMAT
 * and *why for a broken rule of the spec, VMC_E_UNSUPPORTED for a
 * non-zero parent (an incremental disk, not in this version). */
VMC_API void vmc_disk_encode(uint8_t out[VMC_DISK_FIXED_LEN],
                             const struct vmc_wire_disk *d);
VMC_API int vmc_disk_decode(struct vmc_wire_disk *d, const uint8_t *in,
                            size_t len, const uint8_t **id,
                            const uint8_t **path, const char **why);
VMC_API void vmc_disk_extent_encode(uint8_t out[VMC_DISK_EXTENT_HEAD],
                                    const struct vmc_wire_disk_extent *e);
/* The head of a DISK_EXTENT body of len octets (at least one data octet). */
VMC_API int vmc_disk_extent_decode(struct vmc_wire_disk_extent *e,
                                   const uint8_t *in, size_t len,
                                   const char **why);
VMC_API void vmc_disk_end_encode(uint8_t out[VMC_DISK_END_LEN],
                                 const struct vmc_wire_disk_end *e);
VMC_API int vmc_disk_end_decode(struct vmc_wire_disk_end *e, const uint8_t *in,
                                size_t len, const char **why);
VMC_API const char *vmc_disk_format_name(unsigned format);

/* ---- live path (format/vmckpt-stream.md, "Live path") ---------------- */

#define VMC_HELLO_MAGIC     "\x89VMCKLV\n"
#define VMC_HELLO_LEN       80
#define VMC_HELLO_VERSION   1
/* HELLO: each side's first message, in the clear. */
struct vmc_wire_hello {
    uint8_t magic[8];         /* VMC_HELLO_MAGIC */
    uint32_t version;         /* VMC_HELLO_VERSION */
    uint32_t reserved;        /* zero */
    uint8_t epk[32];          /* ephemeral X25519 public key */
    uint8_t spk[32];          /* long-term X25519 public key */
};
VMC_API void vmc_hello_encode(uint8_t out[VMC_HELLO_LEN],
                              const struct vmc_wire_hello *h);
/* VMC_E_FORMAT (bad magic) or VMC_E_UNSUPPORTED (version, reserved), *why
 * set; 0 otherwise. */
VMC_API int vmc_hello_decode(struct vmc_wire_hello *h,
                             const uint8_t in[VMC_HELLO_LEN], const char **why);

#define VMC_REPLY_HEAD_LEN  16
#define VMC_REPLY_MSG_MAX   1024
/* REPLY plaintext (sealed as one FINAL chunk): this head, then msg_len
 * octets of UTF-8 text. */
/* The end of a migration (format 2): READY (loaded, paused) -> COMMIT
 * (sender) -> RUNNING; FAILED at any point the receiver gives up.  The
 * phase is also the AEAD nonce index of the REPLY. */
#define VMC_PHASE_FAILED    0
#define VMC_PHASE_READY     1
#define VMC_PHASE_RUNNING   2
struct vmc_wire_reply {
    int32_t status;           /* 0, or a negative enum vmc_err (FAILED) */
    int32_t domid;            /* the new domain, -1 if none */
    uint32_t msg_len;         /* at most VMC_REPLY_MSG_MAX */
    uint32_t phase;           /* VMC_PHASE_*: READY, RUNNING with status 0 */
};
/* COMMIT, sender -> receiver: a length word (FINAL | 24), then the AEAD
 * under commit_key = KDF(file_key, 3) of these 8 octets, nonce N(0, 1),
 * associated data the stream id. */
#define VMC_COMMIT_MAGIC    "vmcommit"
#define VMC_COMMIT_LEN      8
VMC_API void vmc_reply_encode(uint8_t out[VMC_REPLY_HEAD_LEN],
                              const struct vmc_wire_reply *r);
/* The plaintext of len octets: VMC_E_FORMAT and *why unless msg_len is
 * len - 16 (and at most VMC_REPLY_MSG_MAX), the phase known and a status
 * that fits it (0 for READY and RUNNING, negative for FAILED). */
VMC_API int vmc_reply_decode(struct vmc_wire_reply *r, const uint8_t *in,
                             size_t len, const char **why);

VMC_API void vmc_a2slot_encode(uint8_t out[96], const struct vmc_wire_slot_argon2id *s);
VMC_API void vmc_a2slot_decode(struct vmc_wire_slot_argon2id *s, const uint8_t in[96]);

/* Nonce of chunk `index`: index as u64 LE, three zero bytes, final flag. */
VMC_API void vmc_chunk_nonce(uint8_t nonce[VMC_AEAD_NONCE_LEN], uint64_t index,
                     int final);
/* The message header_sig signs (version 2): context, version, aead,
 * compression, chunk_size, flags, stream_id, signer_pk. */
VMC_API void vmc_hdr_sig_msg(uint8_t out[VMC_HDR_SIG_MSG_LEN],
                             const struct vmc_wire_hdr *h,
                             const uint8_t signer_pk[VMC_SIGN_PK_LEN]);
/* The message chunk_sig signs: context, stream_id, LE64(index), the
 * length word (sealed_len | FINAL) and the AEAD tag. */
VMC_API void vmc_chunk_sig_msg(uint8_t out[VMC_CHUNK_SIG_MSG_LEN],
                               const uint8_t stream_id[16], uint64_t index,
                               uint32_t length_word,
                               const uint8_t tag[VMC_AEAD_TAG_LEN]);

#endif
