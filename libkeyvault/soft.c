/*
 * soft.c - the software fallback backend (OpenSSL 3).
 *
 * One key per file: STORE/NAME.pem is an encrypted PKCS#8 private key
 * (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC), readable by `openssl pkey`
 * with the passphrase; STORE/NAME.json holds its metadata, bound to the key
 * file by a MAC under a key derived from the private key (meta.c,
 * filestore.c: the rules the store shares with the TPM backend). Files are 0600
 * in a 0700 directory and are written atomically (mem.c). The passphrase
 * is read from its source on each use and wiped right after.
 *
 * [software]
 * store = DIR                   default: HOME/soft
 * passphrase = machine          a random secret in STORE/.machine-secret (default)
 *            | machine:PATH     the same, at PATH
 *            | file:PATH        first line of PATH
 *            | env:VAR          the environment variable VAR
 * STORE/NAME.crt (PEM) holds the certificate chain stored with the key.
 * kdf_iterations = N            PBKDF2 iterations for new keys (default 100000)
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "internal.h"

#define SOFT_KEY_FILE_MAX (64 * 1024)
#define SOFT_DEFAULT_ITER 100000
/* The most PBKDF2 iterations a key file is opened with (about 1.6 s of
 * work on a 2026 server core), or the configured count when that is
 * higher: see check_kdf. The configured count is at most SOFT_ITER_MAX. */
#define SOFT_READ_ITER_MAX 2000000L
#define SOFT_ITER_MAX 10000000L

struct soft_state {
    char *dir;
    char *pass_source;   /* "machine:PATH", "file:PATH" or "env:VAR" */
    int iterations;
};

static const kv_filestore soft_fs = { "software", "file:", KV_ASSURANCE_SOFTWARE };

struct soft_key {
    EVP_PKEY *pkey;      /* private key: freed with key material cleansed */
    char *path;          /* the .pem file */
};

static struct soft_state *st(kv_backend *be)
{
    return be->state;
}

static kv_rc soft_init(kv_backend *be)
{
    kv_ctx *ctx = be->ctx;
    struct soft_state *s = calloc(1, sizeof(*s));
    const char *pass = kv_config_get(ctx->cfg, "software", "passphrase");
    long iter = 0;
    kv_rc rc = KV_OK;

    if (!s)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    be->state = s;
    KV_CHECK(rc, kv_config_get_long(NULL, ctx->cfg, "software", "kdf_iterations",
                                    SOFT_DEFAULT_ITER, 1000, SOFT_ITER_MAX, &iter));
    s->iterations = (int)iter;
    KV_CHECK(rc, kv_fs_dir_config(ctx, "software", "store", "soft", &s->dir));
    if (!pass || strcmp(pass, "machine") == 0)
        s->pass_source = kv_asprintf("machine:%s/.machine-secret", s->dir);
    else if ((!strncmp(pass, "machine:", 8) && pass[8] == '/') || kv_secret_source_valid(pass))
        s->pass_source = kv_strdup(pass);
    else
        KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                "[software] passphrase: expected machine, machine:PATH, file:PATH or env:VAR "
                "(the value is not shown: a passphrase is never written in the configuration)");
    if (!s->pass_source)
        KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    return rc;
}

static void soft_fini(kv_backend *be)
{
    struct soft_state *s = st(be);

    if (!s)
        return;
    free(s->dir);
    free(s->pass_source);
    free(s);
    be->state = NULL;
}

/* Fetch the passphrase; wipe and free it with kv_secret_free. */
static kv_rc get_passphrase(kv_backend *be, bool create, char **out)
{
    kv_ctx *ctx = be->ctx;
    const char *src = st(be)->pass_source;
    char file_src[4200];
    struct stat sb;
    kv_rc rc;

    if (strncmp(src, "machine:", 8) != 0)
        return kv_secret_read(ctx, src, "passphrase", out);
    snprintf(file_src, sizeof(file_src), "file:%s", src + 8);
    if (lstat(src + 8, &sb) != 0 && errno == ENOENT) {
        if (!create)
            return kv_error(ctx, KV_ERR_CONFIG, "passphrase source %s: file does not exist",
                            src);
        /* made once; racing processes agree on the first */
        rc = kv_secret_file_create(ctx, src + 8);
        if (rc != KV_OK)
            return rc;
    }
    return kv_secret_read(ctx, file_src, "passphrase", out);
}

static kv_rc soft_exists(kv_backend *be, const char *name)
{
    return kv_fs_exists(be->ctx, st(be)->dir, name);
}

/*
 * The metadata MAC key of a software key: HKDF of the private key itself.
 * Forging metadata for a key file then takes that key's private half, which
 * only the passphrase opens. (A key derived from the passphrase alone would
 * let whoever can read the metadata test passphrase guesses at the cost of
 * one HMAC each instead of PBKDF2's.)
 */
static kv_rc pkey_mac_key(const kv_ctx *ctx, void *arg, unsigned char out[KV_MAC_KEY_LEN])
{
    EVP_PKEY *pkey = arg;
    unsigned char buf[1024];
    size_t len = sizeof(buf);
    BIGNUM *bn = NULL;
    int ok;
    kv_rc rc;

    if (EVP_PKEY_is_a(pkey, "ED25519"))
        ok = EVP_PKEY_get_raw_private_key(pkey, buf, &len);
    else
        ok = EVP_PKEY_get_bn_param(pkey, EVP_PKEY_is_a(pkey, "RSA") ? OSSL_PKEY_PARAM_RSA_D
                                                                    : OSSL_PKEY_PARAM_PRIV_KEY,
                                   &bn) == 1 &&
             (size_t)BN_num_bytes(bn) <= sizeof(buf) && (len = (size_t)BN_bn2bin(bn, buf)) > 0;
    rc = ok ? kv_meta_mac_key(ctx, buf, len, out)
            : kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot read the private key for its metadata key");
    BN_clear_free(bn);
    kv_wipe(buf, sizeof(buf));
    return rc;
}

static kv_rc encrypt_key(kv_backend *be, EVP_PKEY *pkey, const char *pass, char **pem,
                         size_t *pemlen)
{
    kv_ctx *ctx = be->ctx;
    PKCS8_PRIV_KEY_INFO *p8inf = NULL;
    X509_ALGOR *pbe = NULL;
    X509_SIG *p8 = NULL;
    BIO *bio = NULL;
    char *data;
    long n;
    kv_rc rc = KV_OK;

    *pem = NULL;
    p8inf = EVP_PKEY2PKCS8(pkey);
    if (!p8inf)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the private key as PKCS#8");
    pbe = PKCS5_pbe2_set_iv_ex(EVP_aes_256_cbc(), st(be)->iterations, NULL, 0, NULL,
                               NID_hmacWithSHA256, ctx->libctx);
    if (!pbe)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot set up PBES2 encryption");
    p8 = PKCS8_set0_pbe_ex(pass, (int)strlen(pass), p8inf, pbe, ctx->libctx, NULL);
    if (!p8)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encrypt the private key");
    pbe = NULL; /* owned by p8 now */
    bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PKCS8(bio, p8) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot write the encrypted key as PEM");
    n = BIO_get_mem_data(bio, &data);
    *pem = malloc((size_t)n);
    if (!*pem)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(*pem, data, (size_t)n);
    *pemlen = (size_t)n;
out:
    BIO_free(bio);
    X509_SIG_free(p8);
    X509_ALGOR_free(pbe);
    PKCS8_PRIV_KEY_INFO_free(p8inf);
    return rc;
}

/*
 * A key file names its own key derivation, and the store's files may come
 * from anyone who could write there: a swapped file asking for 2^31 PBKDF2
 * iterations would hold the caller for hours inside PKCS8_decrypt_ex. So
 * before decrypting: PBES2 with PBKDF2 (what this backend writes), and an
 * iteration count from 1 to SOFT_READ_ITER_MAX (or the configured count).
 */
static kv_rc check_kdf(kv_backend *be, const char *path, const X509_SIG *p8)
{
    kv_ctx *ctx = be->ctx;
    const X509_ALGOR *alg = NULL;
    PBE2PARAM *pbe2 = NULL;
    PBKDF2PARAM *kdf = NULL;
    long iter, max = st(be)->iterations > SOFT_READ_ITER_MAX ? st(be)->iterations
                                                               : SOFT_READ_ITER_MAX;
    char name[80];
    kv_rc rc;

    X509_SIG_get0(p8, &alg, NULL);
    if (OBJ_obj2nid(alg->algorithm) != NID_pbes2) {
        OBJ_obj2txt(name, sizeof(name), alg->algorithm, 0);
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key file '%s' is encrypted with %s, not PBES2 (PBKDF2) as this store writes",
                path, name);
    }
    pbe2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
    if (!pbe2 || OBJ_obj2nid(pbe2->keyfunc->algorithm) != NID_id_pbkdf2)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key file '%s': the PBES2 parameters do not name PBKDF2", path);
    kdf = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), pbe2->keyfunc->parameter);
    if (!kdf)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key file '%s': malformed PBKDF2 parameters", path);
    iter = ASN1_INTEGER_get(kdf->iter);
    if (iter < 1)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key file '%s': the PBKDF2 iteration count is not a positive number", path);
    if (iter > max)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key file '%s' asks for %ld PBKDF2 iterations; at most %ld are run to open a key",
                path, iter, max);
    rc = KV_OK;
out:
    kv_ossl_drop();
    PBKDF2PARAM_free(kdf);
    PBE2PARAM_free(pbe2);
    return rc;
}

/* Decrypt the text of key file path. */
static kv_rc decrypt_key(kv_backend *be, const char *path, const char *text, size_t len,
                         const char *pass, EVP_PKEY **out)
{
    kv_ctx *ctx = be->ctx;
    PKCS8_PRIV_KEY_INFO *p8inf = NULL;
    X509_SIG *p8 = NULL;
    BIO *bio = NULL;
    kv_rc rc;

    *out = NULL;
    bio = BIO_new_mem_buf(text, (int)len);
    if (!bio)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    p8 = PEM_read_bio_PKCS8(bio, NULL, NULL, NULL);
    if (!p8)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT,
                     "key file '%s' is not an encrypted PKCS#8 PEM file", path);
    KV_CHECK(rc, check_kdf(be, path, p8));
    p8inf = PKCS8_decrypt_ex(p8, pass, (int)strlen(pass), ctx->libctx, NULL);
    if (!p8inf) {
        kv_ossl_drop();
        KV_FAIL(ctx, rc, KV_ERR_AUTH_FAILED,
                "cannot decrypt key file '%s': wrong passphrase (or the file is damaged)", path);
    }
    *out = EVP_PKCS82PKEY_ex(p8inf, ctx->libctx, NULL);
    if (!*out)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "key file '%s' holds no usable private key",
                     path);
    rc = KV_OK;
out:
    PKCS8_PRIV_KEY_INFO_free(p8inf);
    X509_SIG_free(p8);
    BIO_free(bio);
    return rc;
}

/* Fill key from an opened private key. Takes ownership of pkey and path. */
static kv_rc fill_key(kv_backend *be, kv_key *key, const char *name, EVP_PKEY *pkey,
                      char *path)
{
    kv_ctx *ctx = be->ctx;
    struct soft_key *sk = calloc(1, sizeof(*sk));
    unsigned char *der = NULL;
    const unsigned char *p;
    int n;
    kv_rc rc = KV_OK;

    if (!sk) {
        EVP_PKEY_free(pkey);
        free(path);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    sk->pkey = pkey;
    sk->path = path;
    key->bk = sk;
    key->type = kv_type_of_pkey(pkey);
    if (key->type == KV_KEY_UNKNOWN)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                "key file '%s' holds a key type libkeyvault does not use", path);
    /* keep a public-only copy for export and the provider */
    n = i2d_PUBKEY(pkey, &der);
    p = der;
    key->pub = n > 0 ? d2i_PUBKEY_ex(NULL, &p, n, ctx->libctx, NULL) : NULL;
    key->name = kv_strdup(name);
    key->uri = kv_asprintf("file:%s", path);
    if (!key->pub || !key->name || !key->uri)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    OPENSSL_free(der);
    return rc;
}

/* Create DIR/NAME.pem and DIR/NAME.json (the store, or a file: URI's
 * directory). */
static kv_rc generate_in(kv_backend *be, const char *dir, const char *name, kv_key_type type,
                         kv_key *key)
{
    kv_ctx *ctx = be->ctx;
    const kv_type_desc *t = kv_type_desc_get(type);
    EVP_PKEY *pkey = NULL;
    char *pass = NULL, *pem = NULL, *file = NULL;
    unsigned char mac_key[KV_MAC_KEY_LEN];
    size_t pemlen = 0;
    kv_rc rc;

    KV_CHECK(rc, kv_fs_prepare(ctx, dir));
    switch (t->family) {
    case KV_FAMILY_EC:
        pkey = EVP_PKEY_Q_keygen(ctx->libctx, NULL, "EC", t->group);
        break;
    case KV_FAMILY_RSA:
        pkey = EVP_PKEY_Q_keygen(ctx->libctx, NULL, "RSA", (size_t)t->bits);
        break;
    default:
        pkey = EVP_PKEY_Q_keygen(ctx->libctx, NULL, "ED25519");
        break;
    }
    if (!pkey)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot generate a %s key", t->name);
    KV_CHECK(rc, get_passphrase(be, true, &pass));
    KV_CHECK(rc, encrypt_key(be, pkey, pass, &pem, &pemlen));
    file = kv_asprintf("%s.pem", name);
    if (!file)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* the metadata first, then the key file: a generation killed between
     * the two leaves metadata without a key, which takes no name (a key
     * file without metadata would be refused and block its name) */
    rc = kv_fs_exists(ctx, dir, name);
    if (rc == KV_OK)
        KV_FAIL(ctx, rc, KV_ERR_KEY_EXISTS, "key file '%s/%s' already exists", dir, file);
    if (rc != KV_ERR_KEY_NOT_FOUND)
        goto out;
    KV_CHECK(rc, pkey_mac_key(ctx, pkey, mac_key));
    KV_CHECK(rc, kv_meta_write(ctx, dir, name, type, "software", 1, pkey, key->policy, mac_key));
    /* the key file is linked, never renamed: an existing key is never replaced */
    rc = kv_write_file_atomic(ctx, dir, file, pem, pemlen, false);
    if (rc != KV_OK) {
        /* no half-made keys: take the metadata back */
        char *meta = kv_asprintf("%s/%s.json", dir, name);
        if (meta)
            (void)unlink(meta);
        free(meta);
        goto out;
    }
    rc = fill_key(be, key, name, pkey, kv_fs_key_path(dir, name));
    pkey = NULL;
out:
    kv_wipe(mac_key, sizeof(mac_key));
    kv_secret_free(pass);
    if (pem) {
        kv_wipe(pem, pemlen);
        free(pem);
    }
    free(file);
    EVP_PKEY_free(pkey);
    return rc;
}

static kv_rc soft_generate(kv_backend *be, const char *name, kv_key_type type, kv_key *key)
{
    return generate_in(be, st(be)->dir, name, type, key);
}

/* file:/abs/dir/NAME.pem or file:///abs/dir/NAME.pem: the path, taken
 * literally (no percent-decoding), or NULL with the error recorded. */
static const char *file_uri_path(kv_backend *be, const char *uri)
{
    const char *path = uri + 5;

    /* below, uri holds no query: messages may show it */
    if (uri[kv_uri_shown_len(uri)]) {
        kv_error(be->ctx, KV_ERR_BAD_URI, "'%.*s...': file URIs take no query or fragment",
                 (int)kv_uri_shown_len(uri), uri);
        return NULL;
    }
    if (!strncmp(path, "//", 2)) {
        path += 2;
        if (*path != '/') {
            kv_error(be->ctx, KV_ERR_BAD_URI,
                     "file: URIs name a local absolute path (file:///path)");
            return NULL;
        }
    }
    return path;
}

static kv_rc soft_generate_uri(kv_backend *be, const char *uri, kv_key_type type, kv_key *key)
{
    const char *path = file_uri_path(be, uri);

    return path ? kv_fs_generate_at(be, path, type, key, generate_in) : KV_ERR_BAD_URI;
}

static kv_rc open_path(kv_backend *be, const char *name, char *path, kv_key *key)
{
    EVP_PKEY *pkey = NULL;
    struct soft_key *sk;
    char *pass = NULL, *text = NULL;
    size_t len = 0;
    kv_rc rc;

    if (!path)
        return kv_error(be->ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_fs_read_key(be->ctx, path, name, SOFT_KEY_FILE_MAX, &text, &len));
    KV_CHECK(rc, get_passphrase(be, false, &pass));
    KV_CHECK(rc, decrypt_key(be, path, text, len, pass, &pkey));
    rc = fill_key(be, key, name, pkey, path);
    path = NULL;
    pkey = NULL;
    if (rc != KV_OK)
        goto out;
    sk = key->bk;
    /* software key files are only ever libkeyvault's: metadata everywhere */
    rc = kv_meta_check(be->ctx, NULL, sk->path, name, "software", key->pub, pkey_mac_key,
                       sk->pkey, &key->version, &key->policy);
out:
    if (text) {
        kv_wipe(text, len);
        free(text);
    }
    kv_secret_free(pass);
    EVP_PKEY_free(pkey);
    free(path);
    return rc;
}

static kv_rc soft_open_name(kv_backend *be, const char *name, kv_key *key)
{
    return open_path(be, name, kv_fs_key_path(st(be)->dir, name), key);
}

/* A key file named by URI; its metadata is the NAME.json beside it. */
static kv_rc soft_open_uri(kv_backend *be, const char *uri, kv_key *key)
{
    const char *path = file_uri_path(be, uri);

    return path ? kv_fs_open_at(be, path, key, open_path) : KV_ERR_BAD_URI;
}

static kv_rc soft_list(kv_backend *be, kv_list_builder *lb)
{
    return kv_fs_list(be->ctx, &soft_fs, st(be)->dir, lb);
}

static kv_rc soft_destroy(kv_backend *be, kv_key *key)
{
    return kv_key_files_remove(be->ctx, ((struct soft_key *)key->bk)->path);
}

static void soft_key_free(kv_key *key)
{
    struct soft_key *sk = key->bk;

    EVP_PKEY_free(sk->pkey);
    free(sk->path);
    free(sk);
    key->bk = NULL;
}

static kv_rc soft_chain_store(kv_key *key, STACK_OF(X509) *chain)
{
    return kv_cert_file_store(key->ctx, ((struct soft_key *)key->bk)->path, chain);
}

static kv_rc soft_chain_read(kv_key *key, STACK_OF(X509) **chain)
{
    return kv_cert_file_read(key->ctx, ((struct soft_key *)key->bk)->path, key->name,
                             key->pub, chain);
}

kv_rc kv_soft_sign_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *pkey,
                        const kv_alg_desc *alg, const unsigned char *tbs, size_t tbslen,
                        unsigned char *sig, size_t *siglen)
{
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *mctx = NULL;
    EVP_MD *md = NULL;
    kv_rc rc = KV_OK;

    if (alg->family == KV_FAMILY_ED25519) {
        mctx = EVP_MD_CTX_new();
        if (!mctx || EVP_DigestSignInit_ex(mctx, NULL, NULL, libctx, NULL, pkey, NULL) != 1 ||
            EVP_DigestSign(mctx, sig, siglen, tbs ? tbs : (const unsigned char *)"",
                           tbslen) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "Ed25519 signing failed");
        goto out;
    }
    pctx = EVP_PKEY_CTX_new_from_pkey(libctx, pkey, NULL);
    /* the context fetched its digests once; fetching per call costs a lock */
    md = ctx ? kv_ctx_md(ctx, alg->md) : NULL;
    if (md)
        EVP_MD_up_ref(md);
    else
        md = EVP_MD_fetch(libctx, alg->md, NULL);
    if (!pctx || !md || EVP_PKEY_sign_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot start %s signing", alg->name);
    if (alg->padding == KV_PAD_PSS &&
        (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot set RSA-PSS parameters");
    }
    if (alg->padding == KV_PAD_PKCS1 &&
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot set RSA PKCS#1 v1.5 padding");
    if (EVP_PKEY_sign(pctx, sig, siglen, tbs, tbslen) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "%s signing failed", alg->name);
out:
    EVP_MD_free(md);
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(pctx);
    return rc;
}

static kv_rc soft_sign(kv_key *key, const kv_alg_desc *alg, const unsigned char *tbs,
                       size_t tbslen, unsigned char *sig, size_t *siglen)
{
    struct soft_key *sk = key->bk;

    return kv_soft_sign_pkey(key->ctx, key->ctx->libctx, sk->pkey, alg, tbs, tbslen, sig,
                             siglen);
}

kv_rc kv_soft_derive_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *priv,
                          EVP_PKEY *peer, unsigned char *secret, size_t *len)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(libctx, priv, NULL);
    kv_rc rc = KV_OK;

    /* the core validated the peer (kv_peer_decode): no second, costlier check */
    if (!pctx || EVP_PKEY_derive_init(pctx) != 1 ||
        EVP_PKEY_derive_set_peer_ex(pctx, peer, 0) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_INVALID_PEER_KEY, "ECDH: peer key refused");
    if (EVP_PKEY_derive(pctx, secret, len) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "ECDH derivation failed");
out:
    EVP_PKEY_CTX_free(pctx);
    return rc;
}

static kv_rc soft_ecdh(kv_key *key, EVP_PKEY *peer, unsigned char *secret, size_t *len)
{
    struct soft_key *sk = key->bk;

    return kv_soft_derive_pkey(key->ctx, key->ctx->libctx, sk->pkey, peer, secret, len);
}

/* The keys of [software] (keyvault.conf(5)). */
static const struct kv_config_key soft_config_keys[] = {
    { "store", 0 },
    { "passphrase", KV_CFG_SECRET | KV_CFG_MACHINE },
    { "kdf_iterations", 0 },
    { NULL, 0 },
};

const struct kv_backend_ops kv_soft_ops = {
    .name = "software",
    .uri_scheme = "file",
    .assurance = KV_ASSURANCE_SOFTWARE,
    .config_keys = soft_config_keys,
    .init = soft_init,
    .fini = soft_fini,
    .generate = soft_generate,
    .generate_uri = soft_generate_uri,
    .open_name = soft_open_name,
    .open_uri = soft_open_uri,
    .exists = soft_exists,
    .list = soft_list,
    .destroy = soft_destroy,
    .key_free = soft_key_free,
    .sign = soft_sign,
    .ecdh = soft_ecdh,
    .chain_store = soft_chain_store,
    .chain_read = soft_chain_read,
};
