/*
 * gendata.c - deterministic guest-memory-like data for tests and benches.
 *
 *   gendata SIZE [SEED]     SIZE in bytes, or with K/M/G suffix
 *
 * Profile, per 4 KiB page (chosen by a seeded PRNG):
 *   35% zero pages (free memory, BSS),
 *   40% text/code-like pages: words, numbers and x86-like byte sequences
 *       with some entropy (page cache, heap, binaries),
 *   25% random pages (compressed or encrypted data, key material).
 * zstd -1 compresses it to roughly 0.4 of its size, close to the ratio
 * measured on real guests here (labs.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t s;

static uint64_t rnd(void)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static const char *words[] = {
    "the ", "kernel ", "struct ", "page ", "return ", "int ", "if (", ") {\n",
    "memory ", "domain ", "vcpu ", "0x", "ffff", "8000", "static ", "void ",
    "error ", "xen_", "qemu ", "migration ", "buffer ", "= NULL;\n", "for (i = 0; ",
    "i < n; i++)", "\t", "\n", "printf(\"%s\", ", "}\n", "unsigned long ",
    "/usr/lib/x86_64-linux-gnu/", "GLIBC_2.34", ".so.6", "libc", "malloc",
    "\x48\x89\xe5", "\x55\x48\x8b", "\xe8\x00\x00\x00\x00", "\x0f\x1f\x44\x00",
    "\xc3\x90\x90", "\x48\x83\xec\x08", "HTTP/1.1 200 OK\r\n", "Content-Length: ",
    "<div class=\"", "\">", "</div>", "SELECT * FROM ", " WHERE id = ",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static void text_page(uint8_t *p)
{
    size_t off = 0;

    while (off < 4096) {
        uint64_t r = rnd();
        const char *w = words[r % NWORDS];
        size_t l = strlen(w);
        if ((r >> 32) % 8 == 0) {            /* a number: some entropy */
            char num[24];
            l = (size_t)snprintf(num, sizeof(num), "%u ", (unsigned)(r >> 40));
            if (off + l > 4096)
                l = 4096 - off;
            memcpy(p + off, num, l);
        } else {
            if (off + l > 4096)
                l = 4096 - off;
            memcpy(p + off, w, l);
        }
        off += l;
    }
}

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    unsigned long long size;
    char *end;

    if (argc < 2) {
        fprintf(stderr, "usage: gendata SIZE[K|M|G] [SEED]\n");
        return 2;
    }
    size = strtoull(argv[1], &end, 10);
    if (*end == 'K')
        size <<= 10;
    else if (*end == 'M')
        size <<= 20;
    else if (*end == 'G')
        size <<= 30;
    s = argc > 2 ? strtoull(argv[2], NULL, 10) * 2654435761u + 1 : 88172645463325252ull;
    while (size) {
        size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf);
        for (size_t pg = 0; pg < sizeof(buf); pg += 4096) {
            uint64_t kind = rnd() % 100;
            if (kind < 35)
                memset(buf + pg, 0, 4096);
            else if (kind < 75)
                text_page(buf + pg);
            else
                for (size_t i = 0; i < 4096; i += 8) {
                    uint64_t r = rnd();
                    memcpy(buf + pg + i, &r, 8);
                }
        }
        if (fwrite(buf, 1, n, stdout) != n)
            return 1;
        size -= n;
    }
    return 0;
}
