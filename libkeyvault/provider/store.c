/*
 * store.c - the keyvault provider's OSSL_STORE loader, so that OSSL_STORE
 * and every `-key` argument of the openssl tools take vault key references:
 *
 *   pkcs11:...            an RFC 7512 URI (a pin-value in it is used, never shown)
 *   tpm2:file=/path.pem   tpm2:handle=0x81...
 *   keyvault:NAME         a vault key name, looked up in the configured backends;
 *   keyvault:URI          or any URI kv_key_open takes (keyvault:file:/path/k.pem)
 *
 * Keys are opened in the provider's own kv_ctx and handed out as an
 * OSSL_OBJECT_PARAM_REFERENCE to our key management (keymgmt.c's load), so
 * the private half never leaves its backend. The certificate chain stored
 * with the key comes first as certificates when certificates are asked for
 * (OSSL_STORE_expect CERT, or nothing expected): `-cert keyvault:NAME`.
 * When only a public key is asked for, it comes by value, for the default
 * provider.
 * Only these three schemes reach this loader; file: stays OpenSSL's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/store.h>

#include "prov.h"

#define STORE_MAX_CERTS 8

typedef struct store_ctx {
    kvp_provctx *pc;
    kv_ctx *kv;
    kv_key *key;          /* opened at open; handed to the key object at load */
    char *what;           /* for messages: the scheme and the key's name, never the URI */
    int expect;           /* OSSL_STORE_INFO_* asked for, 0 for anything */
    unsigned char *certs[STORE_MAX_CERTS]; /* the stored chain, DER, leaf first */
    size_t certlens[STORE_MAX_CERTS];
    size_t ncerts, next_cert;
    int certs_read;       /* the chain was read (or need not be) */
    int key_done;         /* the key was handed out (or need not be) */
    int failed;
} store_ctx;

/* The scheme of uri when it is one of ours (OpenSSL matches schemes
 * without regard to case); else NULL. */
static const char *scheme_of(const char *uri)
{
    static const char *const schemes[] = { "pkcs11:", "tpm2:", "keyvault:" };

    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (!strncasecmp(uri, schemes[i], strlen(schemes[i])))
            return schemes[i];
    return NULL;
}

static void store_free(store_ctx *sc)
{
    if (!sc)
        return;
    kv_key_free(sc->key);
    for (size_t i = 0; i < sc->ncerts; i++)
        OPENSSL_free(sc->certs[i]);
    free(sc->what);
    free(sc);
}

static void *store_open(void *provctx, const char *uri)
{
    kvp_provctx *pc = provctx;
    store_ctx *sc = NULL;
    const char *scheme = uri ? scheme_of(uri) : NULL;
    const char *ref;
    kv_key_info info;
    kv_rc rc;

    if (!scheme) { /* OpenSSL fetches us by scheme: not reached for other URIs */
        kvp_raise(pc, KVP_R_BAD_PARAM, "store: not a keyvault:, pkcs11: or tpm2: URI");
        return NULL;
    }
    /* keyvault:NAME and keyvault:URI hand the rest to kv_key_open */
    ref = !strcmp(scheme, "keyvault:") ? uri + strlen(scheme) : uri;
    if (!(sc = calloc(1, sizeof(*sc)))) {
        kvp_raise(pc, KVP_R_INTERNAL, "out of memory");
        return NULL;
    }
    sc->pc = pc;
    if (kvp_provctx_kv(pc, &sc->kv) != KV_OK) /* raised */
        goto fail;
    rc = kv_key_open(sc->kv, ref, &sc->key);
    if (rc != KV_OK) {
        /* kv_errmsg names the key by what the library parsed, never the
         * URI's query (pin-value) */
        char what[64];
        snprintf(what, sizeof(what), "store: cannot open the key of a %.*s URI",
                 (int)strlen(scheme) - 1, scheme);
        kvp_raise_kv(pc, sc->kv, rc, what);
        goto fail;
    }
    rc = kv_key_get_info(sc->key, &info);
    if (rc != KV_OK) {
        kvp_raise_kv(pc, sc->kv, rc, "store: kv_key_get_info");
        goto fail;
    }
    size_t whatlen = strlen("keyvault key ") + strlen(info.name) + 1;
    if (!(sc->what = malloc(whatlen))) {
        kvp_raise(pc, KVP_R_INTERNAL, "out of memory");
        goto fail;
    }
    snprintf(sc->what, whatlen, "keyvault key %s", info.name);
    return sc;
fail:
    store_free(sc);
    return NULL;
}

static const OSSL_PARAM *store_settable_ctx_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
        OSSL_PARAM_END,
    };

    (void)provctx;
    return params;
}

static int store_set_ctx_params(void *loaderctx, const OSSL_PARAM params[])
{
    store_ctx *sc = loaderctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);

    if (p && !OSSL_PARAM_get_int(p, &sc->expect)) {
        kvp_raise(sc->pc, KVP_R_BAD_PARAM, "store: %s is not an integer",
                  OSSL_STORE_PARAM_EXPECT);
        return 0;
    }
    /* subject, issuer, serial, fingerprint or alias searches are not ours:
     * OpenSSL asks for them only when the loader says it can */
    return 1;
}

static int wants(const store_ctx *sc, int type)
{
    return sc->expect == 0 || sc->expect == type;
}

/* Hand out the key as a reference to a new key object. */
static int load_key(store_ctx *sc, OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    int type = OSSL_OBJECT_PKEY, ok;
    const char *name;
    kvp_key *k;
    OSSL_PARAM params[5];

    k = kvp_key_from_vault(sc->pc, sc->kv, sc->key, 1); /* takes sc->key */
    sc->key = NULL;
    if (!k) /* raised */
        return 0;
    if (!(name = kvp_key_type_name(k))) {
        kvp_raise(sc->pc, KVP_R_UNSUPPORTED, "store: %s is of a type the provider does not offer",
                  sc->what);
        kvp_key_free(k);
        return 0;
    }
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)name, 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    params[3] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, sc->what, 0);
    params[4] = OSSL_PARAM_construct_end();
    /* keymgmt's load takes a reference of its own */
    ok = object_cb(params, object_cbarg);
    kvp_key_free(k);
    return ok;
}

/* Hand out the public key alone, by value (DER SubjectPublicKeyInfo), when
 * only a public key is asked for (openssl pkey -pubin): OpenSSL decodes it
 * with the default provider, and no backend is asked again. */
static int load_pubkey(store_ctx *sc, OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    int type = OSSL_OBJECT_PKEY, ok = 0;
    unsigned char *der = NULL;
    size_t len = 0;
    OSSL_PARAM params[5];
    kv_rc rc;

    rc = kv_key_public_der(sc->key, NULL, &len);
    if (rc == KV_OK && !(der = OPENSSL_malloc(len)))
        rc = KV_ERR_NO_MEMORY;
    if (rc == KV_OK)
        rc = kv_key_public_der(sc->key, der, &len);
    if (rc != KV_OK) {
        kvp_raise_kv(sc->pc, sc->kv, rc, "store: kv_key_public_der");
        goto out;
    }
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, len);
    params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                                 "SubjectPublicKeyInfo", 0);
    params[3] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, sc->what, 0);
    params[4] = OSSL_PARAM_construct_end();
    ok = object_cb(params, object_cbarg);
out:
    OPENSSL_free(der);
    return ok;
}

/* Read the chain stored with the key, leaf first, as DER certificates. A
 * key without a chain has none to give: that is not an error. */
static int read_certs(store_ctx *sc)
{
    char *pem = NULL, *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long derlen = 0;
    BIO *bio = NULL;
    int ok = 1;
    kv_rc rc;

    rc = kv_key_chain_pem(sc->key, &pem);
    if (rc == KV_ERR_KEY_NOT_FOUND || rc == KV_ERR_UNSUPPORTED)
        return 1;
    if (rc != KV_OK) {
        kvp_raise_kv(sc->pc, sc->kv, rc, "store: kv_key_chain_pem");
        return 0;
    }
    if (!(bio = BIO_new_mem_buf(pem, -1))) {
        kvp_raise(sc->pc, KVP_R_INTERNAL, "out of memory");
        ok = 0;
    }
    while (ok && sc->ncerts < STORE_MAX_CERTS) {
        ERR_set_mark();
        if (!PEM_read_bio(bio, &name, &header, &der, &derlen)) {
            ERR_pop_to_mark(); /* the end of the bundle */
            break;
        }
        ERR_clear_last_mark();
        if (!strcmp(name, PEM_STRING_X509)) {
            sc->certs[sc->ncerts] = der;
            sc->certlens[sc->ncerts++] = (size_t)derlen;
            der = NULL;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
        name = header = NULL;
        der = NULL;
    }
    BIO_free(bio);
    kv_string_free(pem);
    return ok;
}

/* One certificate of the chain, by value. */
static int load_cert(store_ctx *sc, size_t i, OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    int type = OSSL_OBJECT_CERT;
    OSSL_PARAM params[4];

    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, sc->certs[i],
                                                  sc->certlens[i]);
    params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, sc->what, 0);
    params[3] = OSSL_PARAM_construct_end();
    return object_cb(params, object_cbarg);
}

/* One object a call, as OSSL_STORE_load takes them: the chain's
 * certificates first (read through the key before the key goes to its
 * object, which owns it from then on), then the key. */
static int store_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    store_ctx *sc = loaderctx;
    int ok = 0;

    (void)pw_cb; /* PINs and passphrases come from the vault's configuration */
    (void)pw_cbarg;
    if (sc->failed)
        return 0;
    if (!sc->certs_read) {
        sc->certs_read = 1;
        if (wants(sc, OSSL_STORE_INFO_CERT) && !read_certs(sc))
            goto out;
    }
    if (sc->next_cert < sc->ncerts) {
        ok = load_cert(sc, sc->next_cert++, object_cb, object_cbarg);
        goto out;
    }
    if (!sc->key_done) {
        sc->key_done = 1;
        if (sc->expect == OSSL_STORE_INFO_PUBKEY) {
            ok = load_pubkey(sc, object_cb, object_cbarg);
            goto out;
        }
        if (wants(sc, OSSL_STORE_INFO_PKEY)) {
            ok = load_key(sc, object_cb, object_cbarg);
            goto out;
        }
    }
    ok = 1;
out:
    if (!ok)
        sc->failed = 1;
    return ok;
}

static int store_eof(void *loaderctx)
{
    store_ctx *sc = loaderctx;

    return sc->failed || (sc->certs_read && sc->next_cert >= sc->ncerts && sc->key_done);
}

static int store_close(void *loaderctx)
{
    store_free(loaderctx);
    return 1;
}

static const OSSL_DISPATCH store_functions[] = {
    { OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open },
    { OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable_ctx_params },
    { OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_ctx_params },
    { OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load },
    { OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof },
    { OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close },
    { 0, NULL },
};

const OSSL_ALGORITHM kvp_store_algs[] = {
    { "keyvault", KVP_PROPS, store_functions, "keyvault: vault key names and URIs" },
    { "pkcs11", KVP_PROPS, store_functions, "pkcs11: URIs of vault keys on PKCS#11 tokens" },
    { "tpm2", KVP_PROPS, store_functions, "tpm2: URIs of vault keys in a TPM 2.0" },
    { NULL, NULL, NULL, NULL },
};
