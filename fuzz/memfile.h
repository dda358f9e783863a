/* memfile.h — bytes as a path, for loaders that only take paths (the BPE
 * loader): an anonymous memory file (memfd) named /proc/self/fd/N. */
#ifndef TC_FUZZ_MEMFILE_H
#define TC_FUZZ_MEMFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* returns the fd (close it when done) and writes its path into path */
static inline int tc_fuzz_memfile(const uint8_t *data, size_t n, char *path, size_t cap) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
