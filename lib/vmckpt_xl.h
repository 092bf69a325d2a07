/*
 * vmckpt_xl.h - Xen's legacy `xl save` file, for importing one into an
 * image (vmimage seal --xl).  No libxl is needed: the file is read as
 * data (xl's header, its JSON config, then the libxl stream v2 untouched).
 * Writing one back is vmc_reader_drain_xl() in vmckpt.h.
 */
#ifndef VMCKPT_XL_H
#define VMCKPT_XL_H

#include "vmckpt.h"

/* Reads xl's header and config from fd and leaves fd at the start of the
 * libxl stream; *cfg is the JSON config without its NUL (caller frees).
 * what names fd in errors.  A hostile file gets VMC_E_FORMAT/VMC_E_LIMIT:
 * lengths are checked before anything is allocated. */
VMC_API int vmc_xl_read_header(struct vmc_ctx *ctx, int fd, const char *what,
                               uint8_t **cfg, size_t *cfg_len);
/* The IMAGE_INFO facts (name, uuid, memory, vcpus, guest type) that a
 * libxl JSON config states. */
VMC_API int vmc_libxl_json_meta(struct vmc_ctx *ctx, const uint8_t *cfg,
                                size_t len, struct vmc_image_meta *m);

#endif
