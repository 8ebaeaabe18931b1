/*
 * wire.h - the boot-attestation example's framing: each message is a 4-byte
 * big-endian length and that many bytes, at most WIRE_MAX. Both programs
 * include it; it is example code, not part of the library.
 */
#ifndef BOOT_ATTEST_WIRE_H
#define BOOT_ATTEST_WIRE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WIRE_MAX (1024 * 1024)

static int wire_io(int fd, void *buf, size_t len, int writing)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send one message. */
static int wire_send(int fd, const void *data, size_t len)
{
    unsigned char hdr[4] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len };

    if (len > WIRE_MAX)
        return -1;
    return wire_io(fd, hdr, 4, 1) == 0 && wire_io(fd, (void *)data, len, 1) == 0 ? 0 : -1;
}

/* Receive one message into a new NUL-terminated buffer (free it). */
static unsigned char *wire_recv(int fd, size_t *len)
{
    unsigned char hdr[4], *buf;
    size_t n;

    if (wire_io(fd, hdr, 4, 0) != 0)
        return NULL;
    n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    if (n > WIRE_MAX || !(buf = malloc(n + 1)))
        return NULL;
    if (wire_io(fd, buf, n, 0) != 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

#endif
