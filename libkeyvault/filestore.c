/*
 * filestore.c - the key store both file-backed backends (software, tpm)
 * keep: one directory, 0700, of NAME.pem key files with NAME.json metadata
 * (meta.c) and NAME.crt certificates beside them.
 *
 * One set of rules for both: the directory must be the caller's (or
 * root's) and writable by nobody else; only regular files are read, never
 * through a symbolic link; a listing shows every NAME.pem with a valid
 * name, and metadata that is missing or damaged shows as type "unknown"
 * (opening the key reports the damage).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "internal.h"


kv_rc kv_fs_dir_config(const kv_ctx *ctx, const char *section, const char *key,
                       const char *sub, char **out)
{
    const char *dir = kv_config_get(ctx->cfg, section, key);

    *out = dir ? kv_strdup(dir) : kv_asprintf("%s/%s", ctx->home, sub);
    if (!*out)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    if ((*out)[0] != '/')
        return kv_error(NULL, KV_ERR_CONFIG, "[%s] %s = '%s': must be an absolute path",
                        section, key, *out);
    return KV_OK;
}

char *kv_fs_key_path(const char *dir, const char *name)
{
    return kv_asprintf("%s/%s.pem", dir, name);
}

kv_rc kv_fs_exists(const kv_ctx *ctx, const char *dir, const char *name)
{
    char *path = NULL;
    struct stat sb;
    kv_rc rc;

    rc = kv_dir_check(ctx, dir, "key store");
    if (rc != KV_OK)
        return rc;
    path = kv_fs_key_path(dir, name);
    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    /* lstat: a link or anything else under the name takes the name */
    if (lstat(path, &sb) == 0)
        rc = KV_OK;
    else if (errno == ENOENT || errno == ENOTDIR)
        rc = KV_ERR_KEY_NOT_FOUND;
    else
        rc = kv_error_errno(ctx, errno, "cannot look for key file '%s'", path);
    free(path);
    return rc;
}

kv_rc kv_fs_prepare(const kv_ctx *ctx, const char *dir)
{
    kv_rc rc = kv_mkdir_p(ctx, dir);

    if (rc == KV_OK)
        rc = kv_dir_check(ctx, dir, "key store");
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(ctx, KV_ERR_IO, "key store '%s' vanished while being made", dir);
    return rc;
}

kv_rc kv_fs_read_key(const kv_ctx *ctx, const char *path, const char *name, size_t max,
                     char **text, size_t *len)
{
    char *dir = kv_strdup(path);
    struct stat sb;
    kv_rc rc;

    *text = NULL;
    if (!dir)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    *strrchr(dir, '/') = '\0';
    rc = kv_dir_check(ctx, dir[0] ? dir : "/", "key directory");
    if (rc == KV_OK && lstat(path, &sb) != 0)
        rc = errno == ENOENT || errno == ENOTDIR ? KV_ERR_KEY_NOT_FOUND
             : kv_error_errno(ctx, errno, "cannot look for key file '%s'", path);
    if (rc != KV_OK)
        goto out;
    if (S_ISLNK(sb.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': key file '%s' is a symbolic link "
                "(libkeyvault never makes one); refusing it", name, path);
    if (!S_ISREG(sb.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': key file '%s' is not a regular file; "
                "refusing it", name, path);
    /* it is checked again on the open file: it may change in between */
    rc = kv_read_file_ex(ctx, path, max, KV_READ_STORE, text, len);
out:
    free(dir);
    return rc;
}

kv_rc kv_fs_path_split(const kv_ctx *ctx, const char *path, char **dir,
                       char name[KV_NAME_MAX + 1])
{
    const char *base;
    size_t blen;

    if (dir)
        *dir = NULL;
    if (path[0] != '/')
        return kv_error(ctx, KV_ERR_BAD_URI, "key file path '%.200s' is not absolute", path);
    if (strchr(path, '%'))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "key file path '%.200s': percent-encoded paths are not supported", path);
    base = strrchr(path, '/') + 1;
    blen = strlen(base);
    if (blen < 5 || strcmp(base + blen - 4, ".pem") != 0 || blen - 4 > KV_NAME_MAX)
        return kv_error(ctx, KV_ERR_BAD_URI, "'%.200s' is not a path to a NAME.pem key file",
                        path);
    memcpy(name, base, blen - 4);
    name[blen - 4] = '\0';
    if (!kv_backend_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "'%.200s': NAME (of NAME.pem) is not a valid key name: use 1-64 of "
                        "A-Z a-z 0-9 . _ -, not starting with '.'", path);
    if (!dir)
        return KV_OK;
    *dir = base - 1 == path ? kv_strdup("/") : kv_asprintf("%.*s", (int)(base - 1 - path), path);
    return *dir ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

kv_rc kv_fs_generate_at(kv_backend *be, const char *path, kv_key_type type, kv_key *key,
                        kv_file_generate_fn generate)
{
    char name[KV_NAME_MAX + 1], *dir = NULL;
    kv_rc rc = kv_fs_path_split(be->ctx, path, &dir, name);

    /* NAME@N is a version: only a rotation makes one */
    if (rc == KV_OK && strchr(name, '@'))
        rc = kv_error(be->ctx, KV_ERR_BAD_URI,
                      "'%.200s': NAME@N names a key version, which only a rotation makes", path);
    if (rc == KV_OK)
        rc = generate(be, dir, name, type, key);
    free(dir);
    return rc;
}

kv_rc kv_fs_open_at(kv_backend *be, const char *path, kv_key *key, kv_file_open_fn open)
{
    char name[KV_NAME_MAX + 1];
    kv_rc rc = kv_fs_path_split(be->ctx, path, NULL, name);

    if (rc == KV_OK)
        rc = open(be, name, kv_strdup(path), key);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(be->ctx, rc, "no key file '%s'", path);
    return rc;
}

kv_rc kv_fs_list(const kv_ctx *ctx, const kv_filestore *fs, const char *dir,
                 kv_list_builder *lb)
{
    struct dirent *de;
    kv_rc rc;
    DIR *d;

    rc = kv_dir_check(ctx, dir, "key store");
    if (rc == KV_ERR_KEY_NOT_FOUND)
        return KV_OK; /* nothing generated yet */
    if (rc != KV_OK)
        return rc;
    d = opendir(dir);
    if (!d)
        return kv_error_errno(ctx, errno, "cannot read key store '%s'", dir);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        char name[KV_NAME_MAX + 1], *uri;
        kv_key_type type;
        unsigned version;

        if (n < 5 || n - 4 > KV_NAME_MAX || strcmp(de->d_name + n - 4, ".pem") != 0)
            continue;
        memcpy(name, de->d_name, n - 4);
        name[n - 4] = '\0';
        if (!kv_backend_name_valid(name))
            continue;
        kv_meta_peek(dir, name, &type, &version);
        uri = kv_asprintf("%s%s/%s", fs->uri_prefix, dir, de->d_name);
        rc = uri ? kv_list_add(lb, name, fs->backend, uri, type, fs->assurance, version)
                 : KV_ERR_NO_MEMORY;
        free(uri);
        if (rc != KV_OK)
            break;
    }
    closedir(d);
    if (rc == KV_ERR_NO_MEMORY)
        rc = kv_error(ctx, rc, "out of memory");
    return rc;
}

kv_rc kv_secret_file_create(const kv_ctx *ctx, const char *path)
{
    unsigned char raw[32], b64[64];
    char *dir = kv_strdup(path), *slash;
    kv_rc rc;
    int n;

    if (!dir)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return kv_error(ctx, KV_ERR_CONFIG, "secret file path '%s' must be absolute", path);
    }
    *slash = '\0';
    KV_CHECK(rc, kv_mkdir_p(ctx, dir));
    if (RAND_priv_bytes_ex(ctx ? ctx->libctx : NULL, raw, sizeof(raw), 256) != 1)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "random generator failed");
    n = EVP_EncodeBlock(b64, raw, sizeof(raw));
    b64[n++] = '\n';
    kv_err_mark mark = kv_err_mark_get(ctx);
    rc = kv_write_file_atomic(ctx, dir, slash + 1, b64, (size_t)n, false);
    if (rc == KV_ERR_KEY_EXISTS) {
        /* another process created it first: use theirs */
        kv_err_rewind(ctx, mark);
        rc = KV_OK;
    }
out:
    kv_wipe(raw, sizeof(raw));
    kv_wipe(b64, sizeof(b64));
    free(dir);
    return rc;
}

kv_rc kv_fs_store_mac_key(const kv_ctx *ctx, const char *dir, bool create,
                          unsigned char out[KV_MAC_KEY_LEN])
{
    char *path = kv_asprintf("%s/" KV_STORE_SECRET, dir);
    char *src = path ? kv_asprintf("file:%s", path) : NULL, *secret = NULL;
    struct stat sb;
    kv_rc rc;

    if (!src)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        if (!create)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "the key store's secret '%s' is missing: the metadata of its keys cannot "
                    "be checked", path);
        KV_CHECK(rc, kv_secret_file_create(ctx, path));
    }
    KV_CHECK(rc, kv_secret_read(ctx, src, "key store secret", &secret));
    rc = kv_meta_mac_key(ctx, secret, strlen(secret), out);
out:
    kv_secret_free(secret);
    free(src);
    free(path);
    return rc;
}

kv_rc kv_fs_key_dir_mac_key(const kv_ctx *ctx, void *key_path, unsigned char out[KV_MAC_KEY_LEN])
{
    char *dir = kv_strdup(key_path);
    kv_rc rc;

    if (!dir)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    *strrchr(dir, '/') = '\0';
    rc = kv_fs_store_mac_key(ctx, dir[0] ? dir : "/", false, out);
    free(dir);
    return rc;
}
