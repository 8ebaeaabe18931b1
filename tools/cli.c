/*
 * cli.c - what the keyvault commands share: usage errors, error reports,
 * whole-file reads and writes, JSON and PEM output. Each command file
 * (keyvault.c, cmd-*.c) includes cli.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

const char *prog = "keyvault";

/* No message repeats an argument, except a file path: any of them may be a
 * secret typed in the wrong place (a URI with its pin-value, a PIN given as
 * a key type). Keys are named in output by the name and URI the library
 * reports. */
void die_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s %s: ", prog, cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see '%s %s --help')\n", prog, cmd);
    exit(EXIT_USAGE);
}

int fail(const char *cmd, kv_ctx *ctx, kv_rc rc)
{
    const char *msg = kv_errmsg(ctx);

    fprintf(stderr, "%s %s: %s\n", prog, cmd, *msg ? msg : kv_strerror(rc));
    return EXIT_FAIL;
}

int fail_sys(const char *cmd, const char *what, const char *path)
{
    fprintf(stderr, "%s %s: cannot %s '%s': %s\n", prog, cmd, what, path, strerror(errno));
    return EXIT_FAIL;
}

/* Read a whole file ("-" is standard input). */
unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, used = 0;

    if (!f)
        return NULL;
    for (;;) {
        if (used == cap) {
            unsigned char *nb;
            cap = cap ? cap * 2 : 4096;
            if (cap > CLI_MAX_INPUT || !(nb = realloc(buf, cap))) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            buf = nb;
        }
        size_t n = fread(buf + used, 1, cap - used, f);
        used += n;
        if (n == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    *len = used;
    return buf;
}

static int write_fd(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write data to fd (flushed to disk too when sync) and close it; -1 with
 * the first failure's errno. */
static int write_close(int fd, const void *data, size_t len, int sync)
{
    int err;

    if (write_fd(fd, data, len) != 0 || (sync && fsync(fd) != 0)) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return close(fd);
}

/* Write an existing regular file in place (no link followed): where no
 * temporary file can be made beside it or renamed over it. */
static int write_in_place(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC), err;

    if (fd < 0)
        return -1;
    if (mode == 0600 && fchmod(fd, 0600) != 0) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return write_close(fd, data, len, 1);
}

/* Write a file ("-" is standard output). A new file, or a regular file in
 * its place, is replaced atomically: a temporary file in the same directory,
 * written, flushed to disk and renamed over the path. A reader never sees
 * half a file, and a failed write (a full disk) leaves the old file whole.
 * The mode is 0600 for a secret; otherwise an existing file's, or `mode`
 * less the umask for a new one. Where no temporary file can be made beside
 * it or renamed over it (a directory the caller may not write, a file
 * mounted on its own), an existing regular file is written in place.
 * Anything else at the path (a symbolic link, /dev/stdout, a device, a
 * FIFO) is opened and written through, as other tools do, but never with a
 * secret (mode 0600): a link or a FIFO planted under the name would send it
 * elsewhere. */
int write_all(const char *path, const void *data, size_t len, mode_t mode)
{
    const char *slash = strrchr(path, '/');
    char *tmp = NULL;
    struct stat st;
    mode_t mask, want;
    int fd, err, exists;

    if (strcmp(path, "-") == 0) {
        fflush(stdout); /* what the command printed comes first */
        return write_fd(STDOUT_FILENO, data, len);
    }
    exists = lstat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) {
            errno = EISDIR;
            return -1;
        }
        if (mode == 0600) {
            fprintf(stderr,
                    "%s: '%s' is not a regular file (a symbolic link, a device or a FIFO): a "
                    "secret is written only to a file of its own, or to standard output ('-')\n",
                    prog, path);
            errno = EPERM;
            return -1;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        return fd < 0 ? -1 : write_close(fd, data, len, 0);
    }
    /* DIR/.NAME.XXXXXX (mkostemp: a new file, mode 0600, never a link) */
    if (slash && slash[1] == '\0') {
        errno = EISDIR;
        return -1;
    }
    if (asprintf(&tmp, "%.*s.%s.XXXXXX", slash ? (int)(slash - path + 1) : 0, path,
                 slash ? slash + 1 : path) < 0)
        return -1;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        free(tmp);
        if (exists && (err == EACCES || err == EPERM || err == EROFS || err == ENAMETOOLONG))
            return write_in_place(path, data, len, mode);
        errno = err;
        return -1;
    }
    mask = umask(077);
    umask(mask);
    want = mode == 0600 ? 0600 : exists ? st.st_mode & 07777 : mode & ~mask;
    /* a file system without modes (vfat) refuses fchmod: only a secret's matters */
    if (fchmod(fd, want) != 0 && mode == 0600) {
        err = errno;
        close(fd);
        goto fail;
    }
    if (write_close(fd, data, len, 1) != 0) {
        err = errno;
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        if (exists && (err == EBUSY || err == EXDEV)) {
            (void)unlink(tmp);
            free(tmp);
            return write_in_place(path, data, len, mode);
        }
        goto fail;
    }
    /* the rename itself to disk: best effort, the file is whole either way */
    if (slash)
        tmp[slash == path ? 1 : slash - path] = '\0';
    fd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(tmp);
    return 0;
fail:
    unlink(tmp);
    free(tmp);
    errno = err;
    return -1;
}

int want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

int print_json(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

    json_decref(j);
    if (!s) {
        fprintf(stderr, "%s: cannot format JSON\n", prog);
        return EXIT_FAIL;
    }
    printf("%s\n", s);
    free(s);
    return EXIT_OK;
}

/* Write DER as PEM through OpenSSL: a public key or a certificate. */
int write_pem(const char *cmd, const char *out, const unsigned char *der, size_t len,
                     int cert)
{
    BIO *mem = BIO_new(BIO_s_mem());
    const unsigned char *p = der;
    int ok = 0, ret;
    char *pem;
    long n;

    if (cert) {
        X509 *x = d2i_X509(NULL, &p, (long)len);
        ok = mem && x && PEM_write_bio_X509(mem, x) == 1;
        X509_free(x);
    } else {
        EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
        ok = mem && k && PEM_write_bio_PUBKEY(mem, k) == 1;
        EVP_PKEY_free(k);
    }
    if (!ok) {
        fprintf(stderr, "%s %s: cannot encode PEM\n", prog, cmd);
        BIO_free(mem);
        return EXIT_FAIL;
    }
    n = BIO_get_mem_data(mem, &pem);
    ret = write_all(out, pem, (size_t)n, 0644) == 0 ? EXIT_OK : fail_sys(cmd, "write", out);
    BIO_free(mem);
    return ret;
}

const char *utc(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
    return buf;
}
