/*
 * xl.c - legacy plaintext "xl save" files: read their header and config
 * (to seal them) and write them back (to unseal for `xl restore`).
 *
 * Layout (Xen's tools/xl): 32-byte magic "Xen saved domain, xl format\n
 * \0 \r", then u32 byteorder (0x01020304 in the writer's order), u32
 * mandatory_flags (bit0 config is JSON, bit1 libxl stream v2), u32
 * optional_flags, u32 optional_data_len; optional data = u32 config
 * length + config bytes (JSON with a NUL); then the libxl stream.
 * Always built: it needs no Xen library.
 *
 * Owns: the xl file format, on both sides.
 * Must not: call libxl (xen.c does), or be needed by a non-Xen image.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "internal.h"
#include "../vmckpt_xl.h"

#define XL_MAGIC "Xen saved domain, xl format\n \0 \r"
#define XL_HDR_LEN 48
#define XL_FLAG_JSON 1u
#define XL_FLAG_STREAMV2 2u
#define XL_CONFIG_MAX (16u << 20)

int vmc_xl_read_header(struct vmc_ctx *ctx, int fd, const char *what,
                       uint8_t **cfg, size_t *cfg_len)
{
    uint8_t h[XL_HDR_LEN], w[4];
    uint32_t mand, opt, optlen, clen;
    size_t got;
    uint8_t *c = NULL;
    int rc;

    *cfg = NULL;
    *cfg_len = 0;
    if ((rc = io_read_full(ctx, fd, h, sizeof(h), &got, what)) < 0)
        return rc;
    if (got < sizeof(h))
        return vmc_set_error(ctx, VMC_E_TRUNC, "%s: too short for an xl save "
                             "header", what);
    if (memcmp(h, XL_MAGIC, 32))
        return vmc_set_error(ctx, VMC_E_FORMAT, "%s: not an xl save file (bad "
                             "magic)", what);
    if (vmc_get32(h + 32) != 0x01020304u)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "%s: xl save file of the "
                             "other byte order", what);
    mand = vmc_get32(h + 36);
    opt = vmc_get32(h + 40);
    optlen = vmc_get32(h + 44);
    if (mand != (XL_FLAG_JSON | XL_FLAG_STREAMV2))
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "%s: xl save flags 0x%x: "
                             "only JSON config + libxl stream v2 (Xen >= 4.6) "
                             "are supported", what, mand);
    if (opt)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "%s: unknown optional "
                             "flags 0x%x", what, opt);
    if (optlen < 4 || optlen > XL_CONFIG_MAX + 4)
        return vmc_set_error(ctx, VMC_E_FORMAT, "%s: optional data length %u "
                             "out of range", what, optlen);
    if ((rc = io_read_full(ctx, fd, w, 4, &got, what)) < 0)
        return rc;
    if (got < 4)
        return vmc_set_error(ctx, VMC_E_TRUNC, "%s: truncated config", what);
    clen = vmc_get32(w);
    if (clen == 0 || clen > optlen - 4)
        return vmc_set_error(ctx, VMC_E_FORMAT, "%s: config length %u does not "
                             "fit optional data %u", what, clen, optlen);
    if (!(c = malloc(clen + 1)))
        return vmc_set_error(ctx, VMC_E_NOMEM, "out of memory");
    if ((rc = io_read_full(ctx, fd, c, clen, &got, what)) < 0 || got < clen) {
        free(c);
        return rc < 0 ? rc : vmc_set_error(ctx, VMC_E_TRUNC, "%s: truncated "
                                           "config", what);
    }
    /* skip optional data we do not understand */
    for (uint32_t left = optlen - 4 - clen; left;) {
        uint8_t skip[256];
        size_t n = left < sizeof(skip) ? left : sizeof(skip);
        if ((rc = io_read_full(ctx, fd, skip, n, &got, what)) < 0 || got < n) {
            free(c);
            return rc < 0 ? rc : vmc_set_error(ctx, VMC_E_TRUNC, "%s: "
                                               "truncated header", what);
        }
        left -= (uint32_t)n;
    }
    if (c[clen - 1] == '\0')        /* xl stores the JSON with its NUL */
        clen--;
    c[clen] = '\0';
    *cfg = c;
    *cfg_len = clen;
    return 0;
}

static int xl_write_header(struct vmc_ctx *ctx, int fd, const uint8_t *cfg,
                        size_t cfg_len)
{
    uint8_t h[XL_HDR_LEN + 4];
    int rc;

    if (cfg_len + 1 > XL_CONFIG_MAX)
        return vmc_set_error(ctx, VMC_E_LIMIT, "config too large for xl");
    memcpy(h, XL_MAGIC, 32);
    vmc_put32(h + 32, 0x01020304u);
    vmc_put32(h + 36, XL_FLAG_JSON | XL_FLAG_STREAMV2);
    vmc_put32(h + 40, 0);
    vmc_put32(h + 44, (uint32_t)(4 + cfg_len + 1));
    vmc_put32(h + 48, (uint32_t)(cfg_len + 1));
    if ((rc = io_write_full(ctx, fd, h, sizeof(h), "xl header")) < 0 ||
        (rc = io_write_full(ctx, fd, cfg, cfg_len, "xl header")) < 0)
        return rc;
    return io_write_full(ctx, fd, "", 1, "xl header");
}

/* IMAGE_INFO facts from a libxl domain configuration (JSON). */
int vmc_libxl_json_meta(struct vmc_ctx *ctx, const uint8_t *cfg, size_t len,
                        struct vmc_image_meta *m)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)cfg, len, 0, &je), *ci, *bi;
    const char *s;

    if (!j)
        return vmc_set_error(ctx, VMC_E_FORMAT, "libxl config: %s", je.text);
    ci = json_object_get(j, "c_info");
    bi = json_object_get(j, "b_info");
    if ((s = json_string_value(json_object_get(ci, "name"))))
        snprintf(m->name, sizeof(m->name), "%s", s);
    if ((s = json_string_value(json_object_get(ci, "type"))))
        snprintf(m->guest_type, sizeof(m->guest_type), "%s", s);
    if ((s = json_string_value(json_object_get(ci, "uuid")))) {
        int n = 0;
        for (; *s && n < 32; s++) {
            int v = *s >= '0' && *s <= '9' ? *s - '0' :
                    *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
            if (*s == '-')
                continue;
            if (v < 0)
                break;
            m->uuid[n / 2] = (uint8_t)(n % 2 ? m->uuid[n / 2] | v : v << 4);
            n++;
        }
    }
    m->memory_kib = (uint64_t)json_integer_value(json_object_get(bi, "max_memkb"));
    m->vcpus = (uint32_t)json_integer_value(json_object_get(bi, "max_vcpus"));
    json_decref(j);
    if (!m->name[0])
        return vmc_set_error(ctx, VMC_E_FORMAT, "libxl config: no c_info.name");
    return 0;
}

/* ---- unseal to an xl save file ----------------------------------------- */

static int xl_info(struct vmc_ctx *ctx, const struct vmc_image_meta *m)
{
    if (m->backend != VMC_BACKEND_XEN || m->stream_format != VMC_SFMT_LIBXL)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "not a Xen libxl image: "
                             "cannot write an xl save file");
    return 0;
}

static int xl_config(struct vmc_ctx *ctx, int outfd, uint32_t format,
                     const uint8_t *cfg, size_t len)
{
    if (format != VMC_CFG_LIBXL_JSON)
        return vmc_set_error(ctx, VMC_E_UNSUPPORTED, "DOMAIN_CONFIG is not "
                             "libxl JSON");
    return xl_write_header(ctx, outfd, cfg, len);
}

int vmc_reader_drain_xl(struct vmc_reader *r, int outfd, vmc_progress_fn cb,
                        void *arg, struct vmc_summary *sum)
{
    static const struct drain_hooks xl = { xl_info, xl_config,
                                           "an xl save file" };

    return reader_drain(r, outfd, &xl, NULL, cb, arg, sum);
}
