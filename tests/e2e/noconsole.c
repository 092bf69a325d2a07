/*
 * noconsole.c - an LD_PRELOAD for scenario 8c of tests/e2e/qemu.sh: every
 * connect() to a unix socket whose path ends in "/console.sock" fails with
 * ECONNREFUSED, as it does when a console server has gone away.  Every
 * other connect() (QMP, the network) is the real one.
 */
#ifndef _GNU_SOURCE                 /* CPPFLAGS has it */
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

__attribute__((visibility("default")))
int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    const char *tail = "/console.sock";

    if (sa && sa->sa_family == AF_UNIX && len > sizeof(sa_family_t)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = strnlen(un->sun_path, sizeof(un->sun_path));
        if (n >= strlen(tail) && !strcmp(un->sun_path + n - strlen(tail), tail)) {
            errno = ECONNREFUSED;
            return -1;
        }
    }
    if (!real)
        real = (int (*)(int, const struct sockaddr *, socklen_t))
               dlsym(RTLD_NEXT, "connect");
    return real(fd, sa, len);
}
