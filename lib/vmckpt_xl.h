/*
 * vmckpt_xl.h - Xen's legacy `xl save` file: importing one into an image
 * (vmimage seal --from-xl) and writing one back (vmimage unseal --to-xl).  No
 * libxl is needed: the file is data (xl's header, its JSON config, then
 * the libxl stream v2 untouched).
 * Owns: the xl file's layout.  Must not: need libxl or a Xen host.
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
/* Like vmc_reader_drain(), writing a legacy `xl save` file (header +
 * config + libxl stream) that `xl restore` accepts; refuses images that
 * are not Xen/libxl. */
VMC_API int vmc_reader_drain_xl(struct vmc_reader *r, int outfd,
                                vmc_progress_fn cb, void *arg,
                                struct vmc_summary *sum);

#endif
