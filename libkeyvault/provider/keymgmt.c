/*
 * keymgmt.c - key management of the keyvault provider: EC (P-256, P-384),
 * RSA and Ed25519 vault keys. The public half is an ordinary EVP_PKEY in the
 * provider's own library context (default provider only); the private half
 * stays in the vault and is never exported.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "prov.h"

/* ---- the key object ------------------------------------------------------- */

static kvp_key *key_alloc(kvp_provctx *pc)
{
    kvp_key *k = calloc(1, sizeof(*k));

    if (!k)
        return NULL;
    k->magic = KVP_KEY_MAGIC;
    atomic_init(&k->refs, 1);
    k->pc = pc;
    return k;
}

kvp_key *kvp_key_up_ref(kvp_key *k)
{
    atomic_fetch_add(&k->refs, 1);
    return k;
}

void kvp_key_free(kvp_key *k)
{
    if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    k->magic = 0;
    if (k->owns_key)
        kv_key_free(k->key);
    EVP_PKEY_free(k->pub);
    kvp_key_free(k->origin);
    if (k->loaded)
        OSSL_PROVIDER_unload(k->loaded);
    free(k);
}

kvp_key *kvp_key_check(void *p)
{
    kvp_key *k = p;

    return k && k->magic == KVP_KEY_MAGIC && k->pub ? k : NULL;
}

static const char *type_name(kv_key_type type)
{
    switch (type) {
    case KV_KEY_EC_P256:
    case KV_KEY_EC_P384:
        return "EC";
    case KV_KEY_RSA_2048:
    case KV_KEY_RSA_3072:
        return "RSA";
    case KV_KEY_ED25519:
        return "ED25519";
    default:
        return NULL;
    }
}

const char *kvp_key_type_name(const kvp_key *k)
{
    if (k->type != KV_KEY_UNKNOWN)
        return type_name(k->type);
    if (k->pub && EVP_PKEY_is_a(k->pub, "EC"))
        return "EC";
    if (k->pub && EVP_PKEY_is_a(k->pub, "RSA"))
        return "RSA";
    if (k->pub && EVP_PKEY_is_a(k->pub, "ED25519"))
        return "ED25519";
    return NULL;
}

kvp_key *kvp_key_from_vault(kvp_provctx *pc, kv_ctx *kv, kv_key *key, int own)
{
    kvp_key *k = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    kv_key_info info;
    kv_rc rc;

    k = key_alloc(pc);
    if (!k) {
        kvp_raise(pc, KVP_R_INTERNAL, "out of memory");
        goto fail;
    }
    rc = kv_key_get_info(key, &info);
    if (rc != KV_OK) {
        kvp_raise_kv(pc, kv, rc, "kv_key_get_info");
        goto fail;
    }
    if (!info.name) /* a key in no store (kv_key_open_tpm_file): its description */
        info.name = info.uri;
    if (!type_name(info.type)) {
        kvp_raise(pc, KVP_R_UNSUPPORTED, "key '%s' is of type %s, which the provider does not offer",
                  info.name, kv_key_type_name(info.type));
        goto fail;
    }
    rc = kv_key_public_der(key, NULL, &len);
    if (rc == KV_OK && !(der = malloc(len)))
        rc = KV_ERR_NO_MEMORY;
    if (rc == KV_OK)
        rc = kv_key_public_der(key, der, &len);
    if (rc != KV_OK) {
        kvp_raise_kv(pc, kv, rc, "kv_key_public_der");
        goto fail;
    }
    p = der;
    k->pub = d2i_PUBKEY_ex(NULL, &p, (long)len, pc->publibctx, NULL);
    if (!k->pub || p != der + len) {
        kvp_raise(pc, KVP_R_INTERNAL, "the public key of '%s' does not decode", info.name);
        goto fail;
    }
    free(der);
    kvp_generic_first(type_name(info.type));
    k->kv = kv;
    k->key = key;
    k->owns_key = own;
    k->type = info.type;
    return k;
fail:
    free(der);
    kvp_key_free(k);
    if (own)
        kv_key_free(key);
    return NULL;
}

/* ---- key management ------------------------------------------------------- */

static void *km_new(void *provctx)
{
    kvp_key *k = key_alloc(provctx);

    if (!k)
        kvp_raise(provctx, KVP_R_INTERNAL, "out of memory");
    return k;
}

static void km_free(void *keydata)
{
    kvp_key_free(keydata);
}

static int km_has(const void *keydata, int selection)
{
    const kvp_key *k = keydata;

    if (!k || !k->pub)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->key)
        return 0;
    return 1;
}

static int km_match(const void *keydata1, const void *keydata2, int selection)
{
    const kvp_key *a = keydata1, *b = keydata2;

    if (!a || !b || !a->pub || !b->pub)
        return 0;
    /* Only public halves are here to compare: a vault key matches the
     * certificate (or other key) with the same public key. */
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
        return EVP_PKEY_eq(a->pub, b->pub) == 1;
    if (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)
        return EVP_PKEY_parameters_eq(a->pub, b->pub) == 1;
    return 1;
}

static int km_get_params(void *keydata, OSSL_PARAM params[])
{
    kvp_key *k = keydata;

    if (!k || !k->pub)
        return 0;
    return EVP_PKEY_get_params(k->pub, params);
}

static int km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    kvp_key *k = keydata;

    if (!k || !k->pub)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->key) {
        kvp_raise(k->pc, KVP_R_EXPORT_REFUSED,
                  "the private half of a vault key never leaves its backend");
        return 0;
    }
    return EVP_PKEY_export(k->pub, selection & ~OSSL_KEYMGMT_SELECT_PRIVATE_KEY, cb, cbarg);
}

static int import_as(kvp_key *k, const char *name, int selection, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, KVP_PARAM_KEY_REF);
    EVP_PKEY_CTX *pctx = NULL;
    const char *src_name;
    kvp_key *src;
    void *ptr = NULL;
    size_t len = 0;
    int ok = 0;

    if (!k || k->pub) {
        kvp_raise(k ? k->pc : NULL, KVP_R_BAD_PARAM, "import into a key object already set");
        return 0;
    }
    if (p) {
        /* a reference to one of our own key objects (kv_key_evp_pkey) */
        if (!OSSL_PARAM_get_octet_string(p, &ptr, 0, &len) || len != sizeof(src) ||
            !(src = kvp_key_check(*(void **)ptr)) || !(src_name = kvp_key_type_name(src)) ||
            strcmp(src_name, name) != 0) {
            kvp_raise(k->pc, KVP_R_BAD_PARAM, "%s is not a %s key reference", KVP_PARAM_KEY_REF,
                      name);
            goto out;
        }
        if (EVP_PKEY_up_ref(src->pub) != 1)
            goto out;
        k->origin = kvp_key_up_ref(src);
        k->pub = src->pub;
        k->kv = src->kv;
        k->key = src->key;
        k->type = src->type;
        ok = 1;
        goto out;
    }
    /* Only the public half comes in (an ECDH peer, a certificate's key to
     * compare): a private half that comes along is not taken. */
    if (!(selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)) {
        kvp_raise(k->pc, KVP_R_UNSUPPORTED, "a %s import without the public key", name);
        goto out;
    }
    pctx = EVP_PKEY_CTX_new_from_name(k->pc->publibctx, name, NULL);
    if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &k->pub, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) != 1) {
        k->pub = NULL;
        kvp_raise(k->pc, KVP_R_INTERNAL, "the %s public key does not import", name);
        goto out;
    }
    ok = 1;
out:
    OPENSSL_free(ptr);
    EVP_PKEY_CTX_free(pctx);
    return ok;
}

static void *km_load(const void *reference, size_t reference_sz)
{
    kvp_key *k;

    if (!reference || reference_sz != sizeof(k))
        return NULL;
    k = kvp_key_check(*(kvp_key *const *)reference);
    return k ? kvp_key_up_ref(k) : NULL;
}

static void *km_dup(const void *keydata, int selection)
{
    kvp_key *k = kvp_key_check((void *)keydata);

    /* immutable: a copy is one more reference */
    return k ? kvp_key_up_ref(k) : NULL;
}

/* ---- per type ------------------------------------------------------------- */

#define KM_TYPE(tag, NAME, km_field, sig_name, exch_name)                                  \
    static int tag##_import(void *keydata, int selection, const OSSL_PARAM params[])      \
    {                                                                                      \
        return import_as(keydata, NAME, selection, params);                                \
    }                                                                                      \
    static const OSSL_PARAM *tag##_gettable_params(void *provctx)                          \
    {                                                                                      \
        return EVP_KEYMGMT_gettable_params(((kvp_provctx *)provctx)->km_field);            \
    }                                                                                      \
    static const OSSL_PARAM *tag##_types(int selection)                                    \
    {                                                                                      \
        (void)selection;                                                                   \
        return tag##_type_list;                                                            \
    }                                                                                      \
    static const char *tag##_query_operation_name(int operation_id)                        \
    {                                                                                      \
        kvp_generic_first(NAME);                                                           \
        switch (operation_id) {                                                            \
        case OSSL_OP_SIGNATURE:                                                            \
            return sig_name;                                                               \
        case OSSL_OP_KEYEXCH:                                                              \
            return exch_name;                                                              \
        }                                                                                  \
        return NULL;                                                                       \
    }                                                                                      \
    const OSSL_DISPATCH kvp_keymgmt_##tag##_functions[] = {                                \
        { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))km_new },                                 \
        { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free },                               \
        { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has },                                 \
        { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match },                             \
        { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params },                   \
        { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))tag##_gettable_params },      \
        { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))tag##_import },                        \
        { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))tag##_types },                   \
        { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export },                           \
        { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))tag##_types },                   \
        { OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))km_load },                               \
        { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))km_dup },                                 \
        { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,                                          \
          (void (*)(void))tag##_query_operation_name },                                    \
        { 0, NULL },                                                                       \
    };

/* The public parameters each type imports and exports. */
static const OSSL_PARAM ec_type_list[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(KVP_PARAM_KEY_REF, NULL, 0),
    OSSL_PARAM_END,
};
static const OSSL_PARAM rsa_type_list[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_octet_string(KVP_PARAM_KEY_REF, NULL, 0),
    OSSL_PARAM_END,
};
static const OSSL_PARAM ed25519_type_list[] = {
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_octet_string(KVP_PARAM_KEY_REF, NULL, 0),
    OSSL_PARAM_END,
};

KM_TYPE(ec, "EC", km_ec, KVP_SIG_ECDSA, KVP_EXCH_ECDH)
KM_TYPE(rsa, "RSA", km_rsa, KVP_SIG_RSA, NULL)
KM_TYPE(ed25519, "ED25519", km_ed25519, KVP_SIG_ED25519, NULL)
