/*
 * meta.c - the files kept beside a key file by the backends that store
 * keys as files (software, tpm): NAME.json, the metadata, and NAME.crt, a
 * certificate stored with the key.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"

#define KV_META_MAX (16 * 1024)

kv_rc kv_meta_write(const kv_ctx *ctx, const char *dir, const char *name, kv_key_type type,
                    const char *backend, unsigned version)
{
    char created[32], *text = NULL, *file = NULL;
    time_t now = time(NULL);
    struct tm tm;
    json_t *meta;
    kv_rc rc = KV_OK;

    gmtime_r(&now, &tm);
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    meta = json_pack("{s:s, s:s, s:s, s:i, s:s}", "name", name, "type", kv_key_type_name(type),
                     "backend", backend, "version", (int)version, "created", created);
    text = meta ? json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    file = kv_asprintf("%s.json", name);
    if (!text || !file)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_write_file_atomic(ctx, dir, file, text, strlen(text), true);
out:
    json_decref(meta);
    free(text);
    free(file);
    return rc;
}

kv_rc kv_meta_read(const kv_ctx *ctx, const char *dir, const char *name, kv_key_type *type,
                   unsigned *version)
{
    char *path = kv_asprintf("%s/%s.json", dir, name), *text = NULL;
    const char *tname = NULL;
    json_error_t jerr;
    json_t *meta = NULL;
    int ver = 1;
    kv_rc rc;

    *type = KV_KEY_UNKNOWN;
    *version = 1;
    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_read_file(ctx, path, KV_META_MAX, &text, NULL);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_begin(ctx);
        rc = KV_OK;
        goto out;
    }
    if (rc != KV_OK)
        goto out;
    meta = json_loads(text, 0, &jerr);
    if (!meta || json_unpack(meta, "{s?s, s?i}", "type", &tname, "version", &ver) != 0 ||
        ver < 1)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "metadata file '%s' is damaged (%s)", path,
                meta ? "unexpected fields" : jerr.text);
    *type = kv_key_type_from_name(tname);
    *version = (unsigned)ver;
out:
    json_decref(meta);
    free(text);
    free(path);
    return rc;
}

/* DIR/NAME.pem -> DIR/NAME.EXT */
char *kv_sibling_path(const char *key_path, const char *ext)
{
    return kv_asprintf("%.*s%s", (int)(strlen(key_path) - 3), key_path, ext);
}

kv_rc kv_key_path_split(const kv_ctx *ctx, const char *path, char **dir,
                        char name[KV_NAME_MAX + 1])
{
    const char *base = strrchr(path, '/');
    size_t blen = base ? strlen(base + 1) : 0;

    *dir = NULL;
    if (path[0] != '/' || blen < 5 || strcmp(base + 1 + blen - 4, ".pem") != 0 ||
        blen - 4 > KV_NAME_MAX)
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "a key file is named by an absolute path ending in NAME.pem");
    memcpy(name, base + 1, blen - 4);
    name[blen - 4] = '\0';
    if (!kv_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "a key file's NAME (of NAME.pem) is not a valid key name: use 1-64 of "
                        "A-Z a-z 0-9 . _ -, not starting with '.'");
    *dir = base == path ? kv_strdup("/") : kv_asprintf("%.*s", (int)(base - path), path);
    if (!*dir)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    return KV_OK;
}

kv_rc kv_key_file_generate_at(kv_backend *be, const char *path, kv_key_type type, kv_key *key,
                              kv_file_generate_fn generate)
{
    char name[KV_NAME_MAX + 1], *dir = NULL;
    kv_rc rc = kv_key_path_split(be->ctx, path, &dir, name);

    if (rc == KV_OK)
        rc = generate(be, dir, name, type, key);
    free(dir);
    return rc;
}

kv_rc kv_cert_file_store(const kv_ctx *ctx, const char *key_path, const unsigned char *der,
                         size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    BIO *bio = BIO_new(BIO_s_mem());
    char *path = kv_sibling_path(key_path, "crt"), *slash, *data;
    long n;
    kv_rc rc;

    if (!x || !bio || !path || PEM_write_bio_X509(bio, x) != 1) {
        rc = kv_error_ossl(ctx, KV_ERR_NO_MEMORY, "cannot write the certificate as PEM");
        goto out;
    }
    n = BIO_get_mem_data(bio, &data);
    slash = strrchr(path, '/');
    *slash = '\0';
    rc = kv_write_file_atomic(ctx, path, slash + 1, data, (size_t)n, true);
out:
    X509_free(x);
    BIO_free(bio);
    free(path);
    return rc;
}

kv_rc kv_cert_file_read(const kv_ctx *ctx, const char *key_path, const char *name,
                        unsigned char **der, size_t *len)
{
    char *path = kv_sibling_path(key_path, "crt"), *text = NULL;
    size_t tlen = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    int n;
    kv_rc rc;

    *der = NULL;
    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_read_file(ctx, path, 64 * 1024, &text, &tlen);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_begin(ctx);
        rc = kv_error(ctx, KV_ERR_KEY_NOT_FOUND, "no certificate stored with key '%s'", name);
    }
    if (rc != KV_OK)
        goto out;
    bio = BIO_new_mem_buf(text, (int)tlen);
    x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    n = x ? i2d_X509(x, der) : -1;
    if (n <= 0) {
        rc = kv_error_ossl(ctx, KV_ERR_CORRUPT, "certificate file '%s' is damaged", path);
        goto out;
    }
    *len = (size_t)n;
out:
    X509_free(x);
    BIO_free(bio);
    free(text);
    free(path);
    return rc;
}

kv_rc kv_key_files_remove(const kv_ctx *ctx, const char *key_path)
{
    char *meta = kv_sibling_path(key_path, "json"), *cert = kv_sibling_path(key_path, "crt");
    kv_rc rc = KV_OK;

    if (!meta || !cert)
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    else if (unlink(key_path) != 0)
        rc = kv_error_errno(ctx, errno, "cannot delete key file '%s'", key_path);
    else if (unlink(meta) != 0 && errno != ENOENT)
        rc = kv_error_errno(ctx, errno, "deleted the key but not its metadata '%s'", meta);
    else if (unlink(cert) != 0 && errno != ENOENT)
        rc = kv_error_errno(ctx, errno, "deleted the key but not its certificate '%s'", cert);
    free(meta);
    free(cert);
    return rc;
}
