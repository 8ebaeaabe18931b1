/*
 * mem.c - wiping, string helpers, crash-safe file writes, and reads that
 * trust only regular files (and, for secrets, only private ones).
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>

#include "internal.h"

/* Seconds after which a temporary file of kv_write_file_atomic is taken
 * for one a killed writer left behind. */
#define KV_STALE_TEMP_AGE (5 * 60)

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

char *kv_bio_text(BIO *bio, size_t *len)
{
    char *data, *s;
    long n = BIO_get_mem_data(bio, &data);

    s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        if (n > 0)   /* an empty BIO has no data pointer at all */
            memcpy(s, data, (size_t)n);
        s[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
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
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot create directory '%s'", path);
        *p = c;
        if (c == '\0')
            break;
    }
    if (stat(dir, &st) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot stat directory '%s'", dir);
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

/* Whether name is a file name this library writes: a key store file
 * (NAME.pem, NAME.json, NAME.crt), one of the store's own files, or the
 * file being written now. */
static bool our_file_name(const char *name, size_t len, const char *writing)
{
    static const char *const own[] = { ".machine-secret", ".store-secret",
                                        ".attestation-key.pem" };
    static const char *const ext[] = { ".pem", ".json", ".crt" };
    char stem[KV_NAME_MAX + 1];

    if (strlen(writing) == len && !memcmp(name, writing, len))
        return true;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strlen(own[i]) == len && !memcmp(name, own[i], len))
            return true;
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        size_t e = strlen(ext[i]);
        if (len > e && len - e <= KV_NAME_MAX && !memcmp(name + len - e, ext[i], e)) {
            memcpy(stem, name, len - e);
            stem[len - e] = '\0';
            return kv_backend_name_valid(stem);
        }
    }
    return false;
}

/* Whether name is ".TARGET.XXXXXX", a temporary file kv_write_file_atomic
 * makes (mkostemp fills XXXXXX from [A-Za-z0-9]) for a file it writes. */
static bool our_temp_name(const char *name, const char *writing)
{
    size_t n = strlen(name);

    if (n < 9 || name[0] != '.' || name[n - 7] != '.')
        return false;
    for (size_t i = n - 6; i < n; i++)
        if (!isalnum((unsigned char)name[i]))
            return false;
    return our_file_name(name + 1, n - 8, writing);
}

/* Remove temporary files a killed writer left in dir: only names this
 * library makes, regular files of this user, older than KV_STALE_TEMP_AGE
 * seconds (a live writer's file is younger). Best effort: a failure here
 * never fails the write. */
static void remove_stale_temps(const char *dir, const char *writing)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    time_t now = time(NULL);
    struct dirent *de;
    DIR *d;

    if (dfd < 0)
        return;
    d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (!our_temp_name(de->d_name, writing) ||
            fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
            st.st_mtime > now - KV_STALE_TEMP_AGE)
            continue;
        (void)unlinkat(dfd, de->d_name, 0);
    }
    closedir(d);
}

/* Whether dir is due a sweep for stale temporary files in ctx: not swept
 * in it for KV_STALE_TEMP_AGE seconds (a temporary file is not stale
 * before then). The sweep reads the whole directory: once per directory
 * per context and period, not once per write (5000 keys made every
 * write cost a scan of 15000 names). Without a ctx, or a directory that
 * cannot be examined, every write is due one. */
static bool sweep_due(const kv_ctx *ctx, const char *dir)
{
    struct stat st;

    if (!ctx || stat(dir, &st) != 0)
        return true;
    return kv_ctx_sweep_due(ctx, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                            (long long)time(NULL), KV_STALE_TEMP_AGE);
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
    if (sweep_due(ctx, dir))
        remove_stale_temps(dir, name);
    /* mkstemp creates the file 0600 with O_EXCL. */
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = kv_error_errno(ctx, errno, "cannot create a temporary file in '%s'", dir);
        free(tmp);
        tmp = NULL;
        goto out;
    }
    if (fchmod(fd, 0600) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot set mode 0600 on '%s'", tmp);
    KV_CHECK(rc, write_all(ctx, fd, final, data, len));
    if (fsync(fd) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot flush '%s' to disk", final);
    if (close(fd) != 0) {
        fd = -1;
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot close '%s'", final);
    }
    fd = -1;
    if (replace) {
        if (rename(tmp, final) != 0)
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot rename '%s' to '%s'", tmp, final);
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

/* Whether st is owned by the caller or by root. */
static bool owner_trusted(const struct stat *st)
{
    return st->st_uid == geteuid() || st->st_uid == 0;
}

static const char *file_kind(mode_t mode)
{
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) ?
           "a character device" : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ?
           "a socket" : S_ISLNK(mode) ? "a symbolic link" : "not a regular file";
}

kv_rc kv_dir_check(const kv_ctx *ctx, const char *dir, const char *what)
{
    struct stat st;

    if (stat(dir, &st) != 0) {
        if (errno == ENOENT)
            return KV_ERR_KEY_NOT_FOUND;
        return kv_error_errno(ctx, errno, "cannot examine %s '%s'", what, dir);
    }
    if (!S_ISDIR(st.st_mode))
        return kv_error(ctx, KV_ERR_IO, "%s '%s' is %s, not a directory", what, dir,
                        file_kind(st.st_mode));
    if (!owner_trusted(&st))
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "%s '%s' is owned by uid %lu, not by this user (uid %lu) or root: "
                        "refusing it", what, dir, (unsigned long)st.st_uid,
                        (unsigned long)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "%s '%s' is writable by %s (mode %04o): refusing it; "
                        "run chmod go-w on it", what, dir,
                        (st.st_mode & S_IWOTH) ? "others" : "its group",
                        (unsigned)(st.st_mode & 07777));
    return KV_OK;
}

/* The directory part of path ("." for a bare name); NULL when out of memory. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return kv_strdup(".");
    if (slash == path)
        return kv_strdup("/");
    return kv_asprintf("%.*s", (int)(slash - path), path);
}

/* A secret file: owned by the caller or root, not open to group or others,
 * in a directory nobody else can write to. */
static kv_rc secret_file_check(const kv_ctx *ctx, const char *path, const struct stat *st)
{
    char *dir;
    kv_rc rc;

    if (!owner_trusted(st))
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "secret file '%s' is owned by uid %lu, not by this user (uid %lu) or "
                        "root: refusing it", path, (unsigned long)st->st_uid,
                        (unsigned long)geteuid());
    if (st->st_mode & (S_IRWXG | S_IRWXO))
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "secret file '%s' is open to %s (mode %04o): refusing it; "
                        "run chmod 600 on it", path,
                        (st->st_mode & S_IRWXO) ? "others" : "its group",
                        (unsigned)(st->st_mode & 07777));
    dir = dir_of(path);
    if (!dir)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_dir_check(ctx, dir, "the directory of secret file");
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(ctx, KV_ERR_IO, "the directory of secret file '%s' vanished", path);
    free(dir);
    return rc;
}

kv_rc kv_read_file_ex(const kv_ctx *ctx, const char *path, size_t max, unsigned flags,
                      char **out, size_t *len)
{
    kv_rc rc = KV_OK;
    char *buf = NULL;
    size_t used = 0, size = 0;
    struct stat st;
    int fd;

    *out = NULL;
    /* O_NONBLOCK: a FIFO without a writer must not hang the open */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK |
                    ((flags & KV_READ_STORE) ? O_NOFOLLOW : 0));
    if (fd < 0) {
        if (errno == ENOENT)
            return kv_error_code(ctx, KV_ERR_KEY_NOT_FOUND, "errno", ENOENT,
                                 "'%s' does not exist", path);
        if (errno == ELOOP && (flags & KV_READ_STORE))
            return kv_error(ctx, KV_ERR_CORRUPT,
                            "'%s' is a symbolic link: libkeyvault never makes one, and does "
                            "not follow one in a key store", path);
        return kv_error_errno(ctx, errno, "cannot open '%s'", path);
    }
    if (fstat(fd, &st) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot examine '%s'", path);
    if (!S_ISREG(st.st_mode))
        KV_FAIL(ctx, rc, (flags & KV_READ_STORE) ? KV_ERR_CORRUPT : KV_ERR_IO,
                "'%s' is %s, not a regular file", path, file_kind(st.st_mode));
    if (flags & KV_READ_SECRET)
        KV_CHECK(rc, secret_file_check(ctx, path, &st));
    if ((flags & KV_READ_STORE) && !owner_trusted(&st))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                "'%s' is owned by uid %lu, not by this user (uid %lu) or root: refusing it",
                path, (unsigned long)st.st_uid, (unsigned long)geteuid());
    if ((flags & KV_READ_STORE) && (st.st_mode & (S_IWGRP | S_IWOTH)))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION, "'%s' is writable by %s (mode %04o): refusing it",
                path, (st.st_mode & S_IWOTH) ? "others" : "its group",
                (unsigned)(st.st_mode & 07777));
    if ((uintmax_t)st.st_size > max)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is larger than %zu bytes", path, max);
    /* The buffer fits the file as fstat saw it, one byte over to see it
     * grow; it grows (up to max + 1) only for a file that grew or that
     * reports no size. It used to be max + 1 bytes at once: a 1 MiB
     * allocation, zeroed by the kernel, for every lifecycle record read. */
    size = (size_t)st.st_size + 1 < 4096 ? 4096 : (size_t)st.st_size + 1;
    if (size > max + 1)
        size = max + 1;
    buf = malloc(size);
    if (!buf)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (;;) {
        ssize_t n;
        if (used == size) {
            size_t bigger = size > (max + 1) / 2 ? max + 1 : size * 2;
            char *more = malloc(bigger);
            if (!more)
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
            memcpy(more, buf, used);
            kv_wipe(buf, size); /* it may hold a secret: no realloc */
            free(buf);
            buf = more;
            size = bigger;
        }
        n = read(fd, buf + used, size - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot read '%s'", path);
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
        kv_wipe(buf, size);
        free(buf);
    }
    close(fd);
    return rc;
}

kv_rc kv_read_file(const kv_ctx *ctx, const char *path, size_t max, char **out, size_t *len)
{
    return kv_read_file_ex(ctx, path, max, 0, out, len);
}

kv_rc kv_copy_out(const kv_ctx *ctx, const char *what, const void *data, size_t n,
                  unsigned char *buf, size_t *len)
{
    if (buf && *len < n) {
        size_t have = *len;
        *len = n;
        return kv_error(ctx, KV_ERR_BUFFER_TOO_SMALL, "%s needs %zu bytes, buffer has %zu",
                        what, n, have);
    }
    if (buf)
        memcpy(buf, data, n);
    *len = n;
    return KV_OK;
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
    rc = kv_read_file_ex(ctx, source + 5, KV_SECRET_MAX, KV_READ_SECRET, &buf, &len);
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

kv_rc kv_db_file_check(const kv_ctx *ctx, const char *path, const char *what, bool create)
{
    struct stat st;
    int fd = open(path, (create ? O_RDWR | O_CREAT : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC |
                            O_NONBLOCK, 0600);

    if (fd < 0) {
        if (errno == ELOOP)
            return kv_error(ctx, KV_ERR_CORRUPT,
                            "%s '%s' is a symbolic link: refusing to follow it", what, path);
        return kv_error_errno(ctx, errno, "cannot open %s '%s'", what, path);
    }
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kv_error_errno(ctx, e, "cannot examine %s '%s'", what, path);
    }
    close(fd);
    if (!S_ISREG(st.st_mode))
        return kv_error(ctx, KV_ERR_CORRUPT, "%s '%s' is not a regular file", what, path);
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "%s '%s' is owned by uid %lu, not by this user (uid %lu) or "
                        "root: refusing it", what, path, (unsigned long)st.st_uid,
                        (unsigned long)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return kv_error(ctx, KV_ERR_PERMISSION,
                        "%s '%s' is writable by %s (mode %04o): refusing it", what, path,
                        (st.st_mode & S_IWOTH) ? "others" : "its group",
                        (unsigned)(st.st_mode & 07777));
    return KV_OK;
}
