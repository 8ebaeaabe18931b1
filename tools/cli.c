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

/* Write a file ("-" is standard output); mode 0600 for secrets. */
int write_all(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = strcmp(path, "-") == 0 ? STDOUT_FILENO
                                    : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    const unsigned char *p = data;

    if (fd < 0)
        return -1;
    /* an existing file keeps its mode through O_TRUNC: a secret must not */
    if (fd != STDOUT_FILENO && mode == 0600 && fchmod(fd, 0600) != 0) {
        close(fd);
        return -1;
    }
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (fd != STDOUT_FILENO)
                close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fd != STDOUT_FILENO && close(fd) != 0)
        return -1;
    return 0;
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
