/*
 * wire.c - the explicit little-endian codec of the wire types of
 * vmckpt_wire.h: one encode and one decode per struct, field by field.
 * Owns: the octets of every fixed-size wire struct.
 * Must not: check a rule (a reader's job: lib/stream/), allocate, or
 * read a struct raw from memory.
 */
#include <string.h>

#include "vmckpt_wire.h"
#include "../lib/vmckpt.h"

void vmc_hdr_encode(uint8_t out[VMC_HDR_FIXED_LEN], const struct vmc_wire_hdr *h)
{
    memset(out, 0, VMC_HDR_FIXED_LEN);
    memcpy(out, h->magic, 8);
    vmc_put32(out + 8, h->version);
    vmc_put32(out + 12, h->header_len);
    vmc_put16(out + 16, h->aead);
    vmc_put16(out + 18, h->compression);
    vmc_put32(out + 20, h->chunk_size);
    vmc_put16(out + 24, h->nslots);
    vmc_put16(out + 26, h->label_len);
    vmc_put32(out + 28, h->flags);
    memcpy(out + 32, h->stream_id, 16);
    vmc_put64(out + 48, h->reserved[0]);
    vmc_put64(out + 56, h->reserved[1]);
}

int vmc_hdr_decode(struct vmc_wire_hdr *h, const uint8_t in[VMC_HDR_FIXED_LEN],
                   const char **why)
{
    *why = NULL;
    memcpy(h->magic, in, 8);
    h->version = vmc_get32(in + 8);
    h->header_len = vmc_get32(in + 12);
    h->aead = vmc_get16(in + 16);
    h->compression = vmc_get16(in + 18);
    h->chunk_size = vmc_get32(in + 20);
    h->nslots = vmc_get16(in + 24);
    h->label_len = vmc_get16(in + 26);
    h->flags = vmc_get32(in + 28);
    memcpy(h->stream_id, in + 32, 16);
    h->reserved[0] = vmc_get64(in + 48);
    h->reserved[1] = vmc_get64(in + 56);

    if (memcmp(h->magic, VMC_MAGIC, VMC_MAGIC_LEN) != 0) {
        /* Name the common manglings so the user knows what happened. */
        if (memcmp(in + 1, "VMCK", 4) == 0)
            *why = "bad magic: file was altered in transfer (text mode, "
                   "CRLF or 7-bit conversion?)";
        else
            *why = "not a vmckpt image (bad magic)";
        return VMC_E_FORMAT;
    }
    if (h->version != VMC_VERSION && h->version != VMC_VERSION_UNSIGNED) {
        *why = "unsupported format version";
        return VMC_E_UNSUPPORTED;
    }
    if (h->aead != VMC_AEAD_CHACHA20POLY1305) {
        *why = "unknown AEAD algorithm id";
        return VMC_E_UNSUPPORTED;
    }
    if (h->compression != VMC_COMP_ZSTD) {
        *why = "unknown compression id";
        return VMC_E_UNSUPPORTED;
    }
    if (h->header_len < VMC_HDR_FIXED_LEN + VMC_HDR_MAC_LEN +
                        (h->version == VMC_VERSION ? VMC_SIGNER_BLOCK_LEN : 0) ||
        h->header_len > VMC_HDR_MAX_LEN || h->header_len % 8) {
        *why = "header length out of range";
        return VMC_E_FORMAT;
    }
    if (h->chunk_size < VMC_CHUNK_MIN || h->chunk_size > VMC_CHUNK_MAX ||
        (h->chunk_size & (h->chunk_size - 1))) {
        *why = "chunk size out of range";
        return VMC_E_FORMAT;
    }
    if (h->nslots < 1 || h->nslots > VMC_MAX_SLOTS) {
        *why = "key slot count out of range";
        return VMC_E_FORMAT;
    }
    if (h->label_len > VMC_LABEL_MAX) {
        *why = "label too long";
        return VMC_E_FORMAT;
    }
    if (h->flags & ~VMC_HF_KNOWN) {
        *why = "unknown header flags";
        return VMC_E_UNSUPPORTED;
    }
    if (h->reserved[0] || h->reserved[1]) {
        *why = "reserved header field not zero";
        return VMC_E_FORMAT;
    }
    return 0;
}

void vmc_image_info_encode(uint8_t out[48], const struct vmc_wire_image_info *ii)
{
    memcpy(out, ii->uuid, 16);
    vmc_put64(out + 16, ii->memory_kib);
    vmc_put32(out + 24, ii->vcpus);
    vmc_put16(out + 28, ii->backend);
    vmc_put16(out + 30, ii->stream_format);
    vmc_put64(out + 32, (uint64_t)ii->time_unix);
    vmc_put32(out + 40, ii->flags);
    vmc_put32(out + 44, ii->reserved);
}

void vmc_image_info_decode(struct vmc_wire_image_info *ii, const uint8_t in[48])
{
    memcpy(ii->uuid, in, 16);
    ii->memory_kib = vmc_get64(in + 16);
    ii->vcpus = vmc_get32(in + 24);
    ii->backend = vmc_get16(in + 28);
    ii->stream_format = vmc_get16(in + 30);
    ii->time_unix = (int64_t)vmc_get64(in + 32);
    ii->flags = vmc_get32(in + 40);
    ii->reserved = vmc_get32(in + 44);
}

void vmc_end_encode(uint8_t out[40], const struct vmc_wire_end *e)
{
    vmc_put64(out, e->records);
    vmc_put64(out + 8, e->backend_bytes);
    vmc_put64(out + 16, e->plaintext_bytes);
    vmc_put64(out + 24, e->total_time_ns);
    vmc_put64(out + 32, e->downtime_ns);
}

void vmc_end_decode(struct vmc_wire_end *e, const uint8_t in[40])
{
    e->records = vmc_get64(in);
    e->backend_bytes = vmc_get64(in + 8);
    e->plaintext_bytes = vmc_get64(in + 16);
    e->total_time_ns = vmc_get64(in + 24);
    e->downtime_ns = vmc_get64(in + 32);
}

void vmc_a2slot_encode(uint8_t out[96], const struct vmc_wire_slot_argon2id *s)
{
    memcpy(out, s->salt, 16);
    vmc_put32(out + 16, s->opslimit);
    vmc_put32(out + 20, s->memlimit_kib);
    memcpy(out + 24, s->nonce, VMC_WRAP_NONCE_LEN);
    memcpy(out + 48, s->wrapped, VMC_WRAPPED_LEN);
}

void vmc_a2slot_decode(struct vmc_wire_slot_argon2id *s, const uint8_t in[96])
{
    memcpy(s->salt, in, 16);
    s->opslimit = vmc_get32(in + 16);
    s->memlimit_kib = vmc_get32(in + 20);
    memcpy(s->nonce, in + 24, VMC_WRAP_NONCE_LEN);
    memcpy(s->wrapped, in + 48, VMC_WRAPPED_LEN);
}

void vmc_chunk_nonce(uint8_t nonce[VMC_AEAD_NONCE_LEN], uint64_t index, int final)
{
    vmc_put64(nonce, index);
    nonce[8] = nonce[9] = nonce[10] = 0;
    nonce[11] = final ? 1 : 0;
}

void vmc_hdr_sig_msg(uint8_t out[VMC_HDR_SIG_MSG_LEN], const struct vmc_wire_hdr *h,
                     const uint8_t signer_pk[VMC_SIGN_PK_LEN])
{
    memcpy(out, VMC_HDR_SIG_CTX, 16);
    vmc_put32(out + 16, h->version);
    vmc_put16(out + 20, h->aead);
    vmc_put16(out + 22, h->compression);
    vmc_put32(out + 24, h->chunk_size);
    vmc_put32(out + 28, h->flags);
    memcpy(out + 32, h->stream_id, 16);
    memcpy(out + 48, signer_pk, VMC_SIGN_PK_LEN);
}

void vmc_chunk_sig_msg(uint8_t out[VMC_CHUNK_SIG_MSG_LEN],
                       const uint8_t stream_id[16], uint64_t index,
                       uint32_t length_word, const uint8_t tag[VMC_AEAD_TAG_LEN])
{
    memcpy(out, VMC_CHUNK_SIG_CTX, 16);
    memcpy(out + 16, stream_id, 16);
    vmc_put64(out + 32, index);
    vmc_put32(out + 40, length_word);
    memcpy(out + 44, tag, VMC_AEAD_TAG_LEN);
}

/* ---- DOMAIN_CONFIG head, PRECOPY_ROUND, HELLO, REPLY ------------------ */

void vmc_domain_config_encode(uint8_t out[8], const struct vmc_wire_domain_config *c)
{
    vmc_put32(out, c->format);
    vmc_put32(out + 4, c->reserved);
}

int vmc_domain_config_decode(struct vmc_wire_domain_config *c, const uint8_t *in,
                             size_t len, const char **why)
{
    *why = NULL;
    if (len < 8) {
        *why = "shorter than its 8-octet head";
        return VMC_E_FORMAT;
    }
    c->format = vmc_get32(in);
    c->reserved = vmc_get32(in + 4);
    if (c->reserved) {
        *why = "reserved field not zero";
        return VMC_E_FORMAT;
    }
    return 0;
}

void vmc_precopy_round_encode(uint8_t out[24], const struct vmc_wire_precopy_round *r)
{
    vmc_put32(out, r->round);
    vmc_put32(out + 4, r->reserved);
    vmc_put64(out + 8, r->bytes);
    vmc_put64(out + 16, r->duration_ns);
}

int vmc_precopy_round_decode(struct vmc_wire_precopy_round *r, const uint8_t *in,
                             size_t len, const char **why)
{
    *why = NULL;
    if (len != 24) {
        *why = "PRECOPY_ROUND is not 24 octets";
        return VMC_E_FORMAT;
    }
    r->round = vmc_get32(in);
    r->reserved = vmc_get32(in + 4);
    r->bytes = vmc_get64(in + 8);
    r->duration_ns = vmc_get64(in + 16);
    if (r->reserved) {
        *why = "PRECOPY_ROUND reserved field not zero";
        return VMC_E_FORMAT;
    }
    return 0;
}

void vmc_hello_encode(uint8_t out[VMC_HELLO_LEN], const struct vmc_wire_hello *h)
{
    memcpy(out, h->magic, 8);
    vmc_put32(out + 8, h->version);
    vmc_put32(out + 12, h->reserved);
    memcpy(out + 16, h->epk, 32);
    memcpy(out + 48, h->spk, 32);
}

int vmc_hello_decode(struct vmc_wire_hello *h, const uint8_t in[VMC_HELLO_LEN],
                     const char **why)
{
    *why = NULL;
    memcpy(h->magic, in, 8);
    h->version = vmc_get32(in + 8);
    h->reserved = vmc_get32(in + 12);
    memcpy(h->epk, in + 16, 32);
    memcpy(h->spk, in + 48, 32);
    if (memcmp(h->magic, VMC_HELLO_MAGIC, 8)) {
        *why = "not a vmckpt live peer (bad magic)";
        return VMC_E_FORMAT;
    }
    if (h->version != VMC_HELLO_VERSION || h->reserved) {
        *why = "unsupported version";
        return VMC_E_UNSUPPORTED;
    }
    return 0;
}

void vmc_reply_encode(uint8_t out[VMC_REPLY_HEAD_LEN], const struct vmc_wire_reply *r)
{
    vmc_put32(out, (uint32_t)r->status);
    vmc_put32(out + 4, (uint32_t)r->domid);
    vmc_put32(out + 8, r->msg_len);
    vmc_put32(out + 12, r->phase);
}

int vmc_reply_decode(struct vmc_wire_reply *r, const uint8_t *in, size_t len,
                     const char **why)
{
    *why = NULL;
    if (len < VMC_REPLY_HEAD_LEN) {
        *why = "malformed";
        return VMC_E_FORMAT;
    }
    r->status = (int32_t)vmc_get32(in);
    r->domid = (int32_t)vmc_get32(in + 4);
    r->msg_len = vmc_get32(in + 8);
    r->phase = vmc_get32(in + 12);
    if (r->msg_len != len - VMC_REPLY_HEAD_LEN ||
        r->msg_len > VMC_REPLY_MSG_MAX || r->phase > VMC_PHASE_RUNNING ||
        (r->phase == VMC_PHASE_FAILED) != (r->status < 0)) {
        *why = "malformed";
        return VMC_E_FORMAT;
    }
    return 0;
}

/* ---- the names of the wire enums (what vmimage info shows) ---------- */

const char *vmc_backend_id_name(unsigned id)
{
    switch (id) {
    case VMC_BACKEND_NONE: return "none";
    case VMC_BACKEND_XEN: return "xen";
    case VMC_BACKEND_QEMU: return "qemu";
    }
    return "unknown";
}

const char *vmc_slot_type_name(unsigned type)
{
    switch (type) {
    case VMC_SLOT_X25519: return "x25519";
    case VMC_SLOT_ARGON2ID: return "argon2id";
    case VMC_SLOT_RAWKEY: return "rawkey";
    case VMC_SLOT_SESSION: return "session";
    }
    return "unknown";
}

const char *vmc_stream_format_name(unsigned sformat)
{
    switch (sformat) {
    case VMC_SFMT_OPAQUE: return "opaque";
    case VMC_SFMT_LIBXL: return "libxl-v2";
    case VMC_SFMT_QEMU: return "qemu";
    case VMC_SFMT_XL_SAVE: return "xl-save";
    }
    return "unknown";
}

const char *vmc_aead_name(unsigned aead)
{
    return aead == VMC_AEAD_CHACHA20POLY1305 ? "chacha20-poly1305" : "unknown";
}

const char *vmc_compression_name(unsigned compression)
{
    return compression == VMC_COMP_ZSTD ? "zstd" : "unknown";
}

const char *vmc_config_format_name(unsigned format)
{
    switch (format) {
    case VMC_CFG_LIBXL_JSON: return "libxl-json";
    case VMC_CFG_QEMU_JSON: return "qemu-json";
    }
    return "unknown";
}

const char *vmc_disk_format_name(unsigned format)
{
    switch (format) {
    case VMC_DISK_FMT_RAW: return "raw";
    case VMC_DISK_FMT_QCOW2: return "qcow2";
    }
    return "unknown";
}

/* ---- DISK, DISK_EXTENT, DISK_END --------------------------------------- */

void vmc_disk_encode(uint8_t out[VMC_DISK_FIXED_LEN], const struct vmc_wire_disk *d)
{
    memset(out, 0, VMC_DISK_FIXED_LEN);
    vmc_put32(out, d->disk);
    vmc_put32(out + 4, d->flags);
    vmc_put64(out + 8, d->virtual_size);
    vmc_put32(out + 16, d->block_size);
    vmc_put16(out + 20, d->source_format);
    vmc_put16(out + 22, d->id_len);
    memcpy(out + 24, d->parent, 16);
    vmc_put16(out + 40, d->path_len);
    vmc_put16(out + 42, d->reserved0);
    vmc_put32(out + 44, d->reserved1);
}

static int id_char_ok(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

static int is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int vmc_disk_decode(struct vmc_wire_disk *d, const uint8_t *in, size_t len,
                    const uint8_t **id, const uint8_t **path, const char **why)
{
    uint32_t bs;

    *why = NULL;
    if (len < VMC_DISK_FIXED_LEN) {
        *why = "DISK shorter than its 48-octet fixed part";
        return VMC_E_FORMAT;
    }
    d->disk = vmc_get32(in);
    d->flags = vmc_get32(in + 4);
    d->virtual_size = vmc_get64(in + 8);
    d->block_size = bs = vmc_get32(in + 16);
    d->source_format = vmc_get16(in + 20);
    d->id_len = vmc_get16(in + 22);
    memcpy(d->parent, in + 24, 16);
    d->path_len = vmc_get16(in + 40);
    d->reserved0 = vmc_get16(in + 42);
    d->reserved1 = vmc_get32(in + 44);
    *id = in + VMC_DISK_FIXED_LEN;
    *path = *id + d->id_len;
    if (d->reserved0 || d->reserved1)
        *why = "DISK reserved field not zero";
    else if (len != (size_t)VMC_DISK_FIXED_LEN + d->id_len + d->path_len)
        *why = "DISK length is not 48 + id_len + path_len";
    else if (d->disk >= VMC_DISK_MAX)
        *why = "DISK index out of range";
    else if (d->flags & ~VMC_DF_KNOWN)
        *why = "DISK has unknown flags";
    else if ((d->flags & VMC_DF_CARRIED) && (d->flags & VMC_DF_NOT_CAPTURED))
        *why = "DISK both carried and not captured";
    else if ((d->flags & VMC_DF_READONLY) && (d->flags & VMC_DF_NOT_CAPTURED))
        *why = "DISK read-only yet not captured";
    else if (!d->virtual_size || d->virtual_size % 512 ||
             d->virtual_size > VMC_DISK_SIZE_MAX)
        *why = "DISK virtual size is 0, not a multiple of 512 or above 2^50";
    else if (bs < 512 || bs > 65536 || (bs & (bs - 1)))
        *why = "DISK block size is not a power of two from 512 to 65536";
    else if (d->source_format != VMC_DISK_FMT_RAW &&
             d->source_format != VMC_DISK_FMT_QCOW2)
        *why = "DISK source format unknown";
    else if (d->id_len < 1 || d->id_len > VMC_DISK_ID_MAX)
        *why = "DISK id empty or longer than 64";
    else if (d->path_len > VMC_DISK_PATH_MAX)
        *why = "DISK path longer than 4095";
    if (*why)
        return VMC_E_FORMAT;
    for (uint16_t i = 0; i < d->id_len; i++)
        if (!id_char_ok((*id)[i])) {
            *why = "DISK id holds a character outside [A-Za-z0-9._-]";
            return VMC_E_FORMAT;
        }
    for (uint16_t i = 0; i < d->path_len; i++)
        if ((*path)[i] < 0x20 || (*path)[i] == 0x7f) {
            *why = "DISK path holds a control character";
            return VMC_E_FORMAT;
        }
    if (!is_zero(d->parent, 16)) {
        *why = "DISK is incremental (a parent image): not in this version";
        return VMC_E_UNSUPPORTED;
    }
    return 0;
}

void vmc_disk_extent_encode(uint8_t out[VMC_DISK_EXTENT_HEAD],
                            const struct vmc_wire_disk_extent *e)
{
    vmc_put32(out, e->disk);
    vmc_put32(out + 4, e->reserved);
    vmc_put64(out + 8, e->offset);
}

int vmc_disk_extent_decode(struct vmc_wire_disk_extent *e, const uint8_t *in,
                           size_t len, const char **why)
{
    *why = NULL;
    if (len <= VMC_DISK_EXTENT_HEAD) {
        *why = "DISK_EXTENT holds no data";
        return VMC_E_FORMAT;
    }
    e->disk = vmc_get32(in);
    e->reserved = vmc_get32(in + 4);
    e->offset = vmc_get64(in + 8);
    if (e->reserved)
        *why = "DISK_EXTENT reserved field not zero";
    else if (e->offset % VMC_DISK_GRAIN)
        *why = "DISK_EXTENT offset is not a multiple of the 64 KiB grain";
    return *why ? VMC_E_FORMAT : 0;
}

void vmc_disk_end_encode(uint8_t out[VMC_DISK_END_LEN], const struct vmc_wire_disk_end *e)
{
    vmc_put32(out, e->disk);
    vmc_put32(out + 4, e->reserved);
    vmc_put64(out + 8, e->extents);
    vmc_put64(out + 16, e->data_bytes);
    memcpy(out + 24, e->digest, VMC_DISK_DIGEST_LEN);
}

int vmc_disk_end_decode(struct vmc_wire_disk_end *e, const uint8_t *in,
                        size_t len, const char **why)
{
    *why = NULL;
    if (len != VMC_DISK_END_LEN) {
        *why = "DISK_END is not 56 octets";
        return VMC_E_FORMAT;
    }
    e->disk = vmc_get32(in);
    e->reserved = vmc_get32(in + 4);
    e->extents = vmc_get64(in + 8);
    e->data_bytes = vmc_get64(in + 16);
    memcpy(e->digest, in + 24, VMC_DISK_DIGEST_LEN);
    if (e->reserved) {
        *why = "DISK_END reserved field not zero";
        return VMC_E_FORMAT;
    }
    return 0;
}
