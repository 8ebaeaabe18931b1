/*
 * meta.c - the files kept beside a key file by the backends that store
 * keys as files (software, tpm): NAME.json, the metadata, and NAME.crt, a
 * certificate stored with the key.
 *
 * The metadata binds a key file to its name: it records the name, the
 * backend and the SHA-256 of the public key (DER SubjectPublicKeyInfo), and
 * carries an HMAC-SHA256 over all of that under a key only the owner of the
 * store can derive (the backend supplies it: see kv_meta_check). A key file
 * swapped with another key, renamed, or replaced through a link fails the
 * check on open with KV_ERR_CORRUPT naming the key.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"

#define KV_META_MAX (16 * 1024)

/* Domain separation for the MAC key and the MAC input. */
#define KV_META_KDF_INFO "libkeyvault key metadata MAC v1"
#define KV_META_MAC_PREFIX "libkeyvault-metadata-v1\n"

kv_rc kv_meta_mac_key(const kv_ctx *ctx, const void *ikm, size_t len,
                      unsigned char out[KV_MAC_KEY_LEN])
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    EVP_KDF *kdf = EVP_KDF_fetch(libctx, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[4];
    kv_rc rc = KV_OK;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, KV_META_KDF_INFO,
                                                  strlen(KV_META_KDF_INFO));
    params[3] = OSSL_PARAM_construct_end();
    if (!kctx || EVP_KDF_derive(kctx, out, KV_MAC_KEY_LEN, params) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "HKDF-SHA256 for the metadata key failed");
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

/* Upper-case hex of buf (NUL-terminated) in out, which holds 2 * len + 1. */
static bool to_hex(const unsigned char *buf, size_t len, char *out, size_t outlen)
{
    return OPENSSL_buf2hexstr_ex(out, outlen, NULL, buf, len, '\0') == 1;
}

/* Hex SHA-256 of the public key's DER SubjectPublicKeyInfo. */
static kv_rc pub_fingerprint(const kv_ctx *ctx, const EVP_PKEY *pub, char hex[65])
{
    unsigned char *der = NULL, md[32];
    int n = i2d_PUBKEY((EVP_PKEY *)pub, &der);
    kv_rc rc = KV_OK;

    if (n <= 0 || EVP_Q_digest(ctx ? ctx->libctx : NULL, "SHA256", NULL, der, (size_t)n, md,
                               NULL) != 1 || !to_hex(md, sizeof(md), hex, 65))
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot compute the public key's fingerprint");
    OPENSSL_free(der);
    return rc;
}

kv_rc kv_meta_pub_sha256(const kv_ctx *ctx, const EVP_PKEY *pub, char hex[65])
{
    return pub_fingerprint(ctx, pub, hex);
}

/* Hex HMAC-SHA256 of the metadata object without its "mac" member. */
static kv_rc meta_mac(const kv_ctx *ctx, json_t *meta, const unsigned char *key, char hex[65])
{
    return kv_json_mac(ctx, meta, KV_META_MAC_PREFIX, key, hex);
}

kv_rc kv_json_mac(const kv_ctx *ctx, json_t *obj, const char *prefix,
                  const unsigned char key[KV_MAC_KEY_LEN], char hex[65])
{
    json_t *copy = json_copy(obj);
    char *text = NULL, *msg = NULL;
    unsigned char md[32];
    size_t mdlen = sizeof(md);
    kv_rc rc = KV_OK;

    if (copy)
        json_object_del(copy, "mac");
    text = copy ? json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    msg = text ? kv_asprintf("%s%s", prefix, text) : NULL;
    if (!msg)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!EVP_Q_mac(ctx ? ctx->libctx : NULL, "HMAC", NULL, "SHA256", NULL, key,
                   KV_MAC_KEY_LEN, (const unsigned char *)msg, strlen(msg), md, sizeof(md),
                   &mdlen) || !to_hex(md, mdlen, hex, 65))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "HMAC-SHA256 over %.*s failed",
                     (int)strcspn(prefix, "\n"), prefix);
out:
    json_decref(copy);
    free(text);
    free(msg);
    return rc;
}

kv_rc kv_meta_write(const kv_ctx *ctx, const char *dir, const char *name, kv_key_type type,
                    const char *backend, unsigned version, const EVP_PKEY *pub,
                    const kv_key_policy *policy, const unsigned char mac_key[KV_MAC_KEY_LEN])
{
    char created[32], fpr[65], mac[65], *text = NULL, *file = NULL, *cert = NULL;
    time_t now = time(NULL);
    struct tm tm;
    json_t *meta = NULL;
    kv_rc rc = KV_OK;

    /* the key file goes last when a key is made and first when it is
     * destroyed: a certificate file without it is a destroyed key's */
    if (!(cert = kv_asprintf("%s/%s.crt", dir, name)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (unlink(cert) != 0 && errno != ENOENT)
        KV_FAIL_ERRNO(ctx, rc, errno,
                      "cannot remove certificate file '%s' that a destroyed key left", cert);
    gmtime_r(&now, &tm);
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    KV_CHECK(rc, pub_fingerprint(ctx, pub, fpr));
    meta = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "name", name, "type",
                     kv_key_type_name(type), "backend", backend, "version", (int)version,
                     "created", created, "public_key_sha256", fpr);
    if (!meta || (policy && json_object_set_new(meta, "policy", kv_key_policy_json(policy)) != 0))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, meta_mac(ctx, meta, mac_key, mac));
    if (json_object_set_new(meta, "mac", json_string(mac)) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    text = json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS);
    file = kv_asprintf("%s.json", name);
    if (!text || !file)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_write_file_atomic(ctx, dir, file, text, strlen(text), true);
out:
    json_decref(meta);
    free(text);
    free(file);
    free(cert);
    return rc;
}

/* Parse a metadata file's text; NULL with why filled when it is not a
 * metadata object. Records nothing. */
static json_t *meta_parse(const char *text, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *meta = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    const char *s;
    int ver = 1;

    if (!meta) {
        snprintf(why, whylen, "%s", jerr.text);
        return NULL;
    }
    if (json_unpack(meta, "{s?s, s?i}", "type", &s, "version", &ver) != 0 || ver < 1) {
        snprintf(why, whylen, "unexpected fields");
        json_decref(meta);
        return NULL;
    }
    return meta;
}

void kv_meta_peek(const char *dir, const char *name, kv_key_type *type, unsigned *version)
{
    char *path = kv_asprintf("%s/%s.json", dir, name);
    const char *tname = NULL;
    json_error_t jerr;
    json_t *meta = NULL;
    struct stat sb;
    int ver = 1, fd;

    *type = KV_KEY_UNKNOWN;
    *version = 1;
    /* quiet: the list reports nothing about metadata, opening the key does */
    fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW) : -1;
    free(path);
    if (fd < 0)
        return;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size <= KV_META_MAX)
        meta = json_loadfd(fd, JSON_REJECT_DUPLICATES, &jerr);
    close(fd);
    if (meta && json_unpack(meta, "{s?s, s?i}", "type", &tname, "version", &ver) == 0 &&
        ver >= 1) {
        *type = kv_key_type_from_name(tname);
        *version = (unsigned)ver;
    }
    json_decref(meta);
}

/* Whether the directories a and b are the same one. */
static bool same_dir(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Whether dir holds the MAC secret of keys libkeyvault made there. */
static bool dir_has_store_secret(const char *dir)
{
    char *p = kv_asprintf("%s/" KV_STORE_SECRET, dir);
    struct stat sb;
    bool has = p && lstat(p, &sb) == 0;

    free(p);
    return has;
}

kv_rc kv_meta_check(const kv_ctx *ctx, const char *store_dir, const char *key_path,
                    const char *name, const char *backend, const EVP_PKEY *pub,
                    kv_mac_key_fn mac_key, void *arg, unsigned *version,
                    kv_key_policy **policy)
{
    char *path = kv_sibling_path(key_path, "json"), *text = NULL, *kdir = NULL;
    const char *mname = NULL, *mbackend = NULL, *tname = NULL, *mfpr = NULL, *mmac = NULL;
    char fpr[65], mac[65], why[160], what[KV_NAME_MAX + 16];
    unsigned char key[KV_MAC_KEY_LEN];
    json_t *meta = NULL, *jpolicy;
    kv_key_type type;
    struct stat sb;
    int ver = 1;
    kv_rc rc;

    *version = 1;
    *policy = NULL;
    kdir = kv_strdup(key_path);
    if (!path || !kdir)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    *strrchr(kdir, '/') = '\0';
    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        /* a foreign key file (tpm2-openssl's) the caller named outside the
         * store is taken as theirs; in the store, and in any directory where
         * libkeyvault made keys (it holds their MAC secret), every key was
         * made with its metadata */
        if (store_dir && !same_dir(kdir[0] ? kdir : "/", store_dir) &&
            !dir_has_store_secret(kdir[0] ? kdir : "/")) {
            rc = KV_OK;
            goto out;
        }
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': its metadata file '%s' is missing, so the key file cannot be "
                "checked against its name; refusing it", name, path);
    }
    KV_CHECK(rc, kv_read_file_ex(ctx, path, KV_META_MAX, KV_READ_STORE, &text, NULL));
    meta = meta_parse(text, why, sizeof(why));
    if (!meta)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': metadata file '%s' is damaged (%s)", name,
                path, why);
    if (json_unpack(meta, "{s?s, s?s, s?s, s?i, s?s, s?s}", "name", &mname, "backend",
                    &mbackend, "type", &tname, "version", &ver, "public_key_sha256", &mfpr,
                    "mac", &mmac) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': metadata file '%s' is damaged "
                "(unexpected fields)", name, path);
    if (!mmac || !mfpr || !mname)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': metadata file '%s' carries no MAC binding the key file to its name "
                "(made by libkeyvault 0.1, or altered); refusing it", name, path);
    KV_CHECK(rc, mac_key(ctx, arg, key));
    KV_CHECK(rc, meta_mac(ctx, meta, key, mac));
    if (strlen(mmac) != strlen(mac) || CRYPTO_memcmp(mmac, mac, strlen(mac)) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': metadata file '%s' does not authenticate: it was altered, or the "
                "key file is not the key made under this name", name, path);
    if (strcmp(mname, name) != 0 || !mbackend || strcmp(mbackend, backend) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': metadata file '%s' belongs to key '%s' of backend %s: the files "
                "were swapped or renamed", name, path, mname, mbackend ? mbackend : "(none)");
    KV_CHECK(rc, pub_fingerprint(ctx, pub, fpr));
    if (strcmp(mfpr, fpr) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': key file '%s' holds another public key than the one made under "
                "this name (the file was replaced or swapped)", name, key_path);
    type = kv_key_type_from_name(tname);
    if (type != KV_KEY_UNKNOWN && type != kv_type_of_pkey(pub))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': metadata says %s but the key file holds %s",
                name, kv_key_type_name(type), kv_key_type_name(kv_type_of_pkey(pub)));
    if ((jpolicy = json_object_get(meta, "policy"))) {
        snprintf(what, sizeof(what), "key '%s'", name);
        KV_CHECK(rc, kv_key_policy_from_json(ctx, what, jpolicy, policy));
    }
    *version = (unsigned)ver;
    rc = KV_OK;
out:
    kv_wipe(key, sizeof(key));
    json_decref(meta);
    free(text);
    free(kdir);
    free(path);
    return rc;
}

/* DIR/NAME.pem -> DIR/NAME.EXT */
char *kv_sibling_path(const char *key_path, const char *ext)
{
    return kv_asprintf("%.*s%s", (int)(strlen(key_path) - 3), key_path, ext);
}

kv_rc kv_cert_file_store(const kv_ctx *ctx, const char *key_path, const STACK_OF(X509) *chain)
{
    char *path = kv_sibling_path(key_path, "crt"), *slash, *pem = NULL;
    size_t len = 0;
    kv_rc rc;

    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_chain_pem(ctx, chain, &pem, &len));
    slash = strrchr(path, '/');
    *slash = '\0';
    rc = kv_write_file_atomic(ctx, path, slash + 1, pem, len, true);
out:
    free(pem);
    free(path);
    return rc;
}

kv_rc kv_cert_file_read(const kv_ctx *ctx, const char *key_path, const char *name,
                        const EVP_PKEY *pub, STACK_OF(X509) **chain)
{
    char *path = kv_sibling_path(key_path, "crt"), *text = NULL, *what = NULL;
    size_t tlen = 0;
    struct stat sb;
    kv_rc rc;

    *chain = NULL;
    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(path, &sb) != 0 && errno == ENOENT)
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "no certificate stored with key '%s'", name);
    KV_CHECK(rc, kv_read_file_ex(ctx, path, KV_CERT_FILE_MAX, KV_READ_STORE, &text, &tlen));
    what = kv_asprintf("key '%s': certificate file '%s'", name, path);
    if (!what)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_chain_parse(ctx, what, KV_ERR_CORRUPT, (const unsigned char *)text, tlen,
                                chain));
    /* the core checks the whole chain again; this names the file */
    if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(*chain, 0)), pub) != 1) {
        kv_ossl_drop();
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': certificate file '%s' is for another public key; refusing it",
                name, path);
    }
out:
    if (rc != KV_OK) {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
    }
    free(what);
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
