/*
 * mem.c - wiping, string helpers and crash-safe file writes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "internal.h"

void kv_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

void kv_secret_free(char *s)
{
    if (!s)
        return;
    kv_wipe(s, strlen(s));
    free(s);
}

void kv_string_free(char *s)
{
    kv_secret_free(s);
}

char *kv_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *kv_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

kv_rc kv_mkdir_p(const kv_ctx *ctx, const char *dir)
{
    char *path = kv_strdup(dir);
    kv_rc rc = KV_OK;
    struct stat st;

    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            rc = kv_error_errno(ctx, errno, "cannot create directory '%s'", path);
            goto out;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    if (stat(dir, &st) != 0) {
        rc = kv_error_errno(ctx, errno, "cannot stat directory '%s'", dir);
        goto out;
    }
    if (!S_ISDIR(st.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_IO, "'%s' exists and is not a directory", dir);
out:
    free(path);
    return rc;
}

static kv_rc write_all(const kv_ctx *ctx, int fd, const char *path, const void *data,
                       size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kv_error_errno(ctx, errno, "cannot write '%s'", path);
        }
        p += n;
        len -= (size_t)n;
    }
    return KV_OK;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

kv_rc kv_write_file_atomic(const kv_ctx *ctx, const char *dir, const char *name,
                           const void *data, size_t len, bool replace)
{
    char *tmp = kv_asprintf("%s/.%s.XXXXXX", dir, name);
    char *final = kv_asprintf("%s/%s", dir, name);
    kv_rc rc = KV_OK;
    int fd = -1;

    if (!tmp || !final)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* mkstemp creates the file 0600 with O_EXCL. */
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = kv_error_errno(ctx, errno, "cannot create a temporary file in '%s'", dir);
        free(tmp);
        tmp = NULL;
        goto out;
    }
    if (fchmod(fd, 0600) != 0) {
        rc = kv_error_errno(ctx, errno, "cannot set mode 0600 on '%s'", tmp);
        goto out;
    }
    KV_CHECK(rc, write_all(ctx, fd, final, data, len));
    if (fsync(fd) != 0) {
        rc = kv_error_errno(ctx, errno, "cannot flush '%s' to disk", final);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = kv_error_errno(ctx, errno, "cannot close '%s'", final);
        goto out;
    }
    fd = -1;
    if (replace) {
        if (rename(tmp, final) != 0) {
            rc = kv_error_errno(ctx, errno, "cannot rename '%s' to '%s'", tmp, final);
            goto out;
        }
    } else {
        /* link() never replaces: an existing file makes it fail with EEXIST. */
        if (link(tmp, final) != 0) {
            if (errno == EEXIST)
                rc = kv_error(ctx, KV_ERR_KEY_EXISTS, "'%s' already exists; not overwritten",
                              final);
            else
                rc = kv_error_errno(ctx, errno, "cannot link '%s' to '%s'", tmp, final);
            goto out;
        }
        (void)unlink(tmp);
    }
    free(tmp);
    tmp = NULL;
    fsync_dir(dir);
out:
    if (fd >= 0)
        close(fd);
    if (tmp)
        (void)unlink(tmp);
    free(tmp);
    free(final);
    return rc;
}

kv_rc kv_read_file(const kv_ctx *ctx, const char *path, size_t max, char **out, size_t *len)
{
    kv_rc rc = KV_OK;
    char *buf = NULL;
    size_t used = 0;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return kv_error_code(ctx, KV_ERR_KEY_NOT_FOUND, "errno", ENOENT,
                                 "'%s' does not exist", path);
        return kv_error_errno(ctx, errno, "cannot open '%s'", path);
    }
    buf = malloc(max + 1);
    if (!buf)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (;;) {
        ssize_t n = read(fd, buf + used, max + 1 - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = kv_error_errno(ctx, errno, "cannot read '%s'", path);
            goto out;
        }
        if (n == 0)
            break;
        used += (size_t)n;
        if (used > max)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is larger than %zu bytes", path, max);
    }
    buf[used] = '\0';
    *out = buf;
    if (len)
        *len = used;
    buf = NULL;
out:
    if (buf) {
        kv_wipe(buf, used);
        free(buf);
    }
    close(fd);
    return rc;
}

#define KV_SECRET_MAX 4096

bool kv_secret_source_valid(const char *source)
{
    return (!strncmp(source, "file:", 5) && source[5] != '\0') ||
           (!strncmp(source, "env:", 4) && source[4] != '\0');
}

kv_rc kv_secret_read(const kv_ctx *ctx, const char *source, const char *what, char **out)
{
    char *buf = NULL;
    size_t len = 0, n;
    kv_rc rc;

    *out = NULL;
    /* the source is not shown when malformed: it may be the secret itself */
    if (!kv_secret_source_valid(source))
        return kv_error(ctx, KV_ERR_CONFIG, "%s source: expected file:PATH or env:VAR", what);
    if (source[0] == 'e') {
        const char *v = getenv(source + 4);
        if (!v || !*v)
            return kv_error(ctx, KV_ERR_CONFIG,
                            "%s source %s: the variable is not set or empty", what, source);
        *out = kv_strdup(v);
        return *out ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    rc = kv_read_file(ctx, source + 5, KV_SECRET_MAX, &buf, &len);
    if (rc != KV_OK)
        return rc;
    /* the first line, in a buffer of its own; the whole file's is wiped */
    n = strcspn(buf, "\r\n");
    if (n == 0)
        rc = kv_error(ctx, KV_ERR_CONFIG, "%s source %s: file is empty", what, source);
    else if (!(*out = strndup(buf, n)))
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    kv_wipe(buf, len);
    free(buf);
    return rc;
}

kv_rc kv_key_file_exists(const kv_ctx *ctx, char *path)
{
    struct stat sb;
    kv_rc rc = KV_ERR_KEY_NOT_FOUND;

    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (stat(path, &sb) == 0)
        rc = KV_OK;
    else if (errno != ENOENT && errno != ENOTDIR)
        rc = kv_error_errno(ctx, errno, "cannot look for key file '%s'", path);
    free(path);
    return rc;
}
