/*
 * provider.c - the keyvault OpenSSL provider: init, teardown, the provider
 * context, query_operation, get_params, errors, and the bridge behind
 * kv_key_evp_pkey. Public API and OpenSSL only.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "prov.h"

/* ---- errors --------------------------------------------------------------- */

static const OSSL_ITEM reason_strings[] = {
    { KVP_R_VAULT, "keyvault operation failed" },
    { KVP_R_NO_PRIVATE_KEY, "no private key: the object holds a public key only" },
    { KVP_R_EXPORT_REFUSED, "the private key of a vault key cannot be exported" },
    { KVP_R_UNSUPPORTED, "not supported by vault keys" },
    { KVP_R_BAD_PARAM, "malformed parameter" },
    { KVP_R_INTERNAL, "internal OpenSSL call failed" },
    { 0, NULL },
};

static void raise_v(const kvp_provctx *pc, int reason, const char *fmt, va_list ap)
{
    if (!pc || !pc->new_error || !pc->vset_error)
        return;
    pc->new_error(pc->handle);
    if (pc->set_error_debug)
        pc->set_error_debug(pc->handle, NULL, 0, NULL);
    pc->vset_error(pc->handle, (uint32_t)reason, fmt, ap);
}

void kvp_raise(const kvp_provctx *pc, int reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    raise_v(pc, reason, fmt, ap);
    va_end(ap);
}

void kvp_raise_kv(const kvp_provctx *pc, kv_ctx *kv, kv_rc rc, const char *what)
{
    const char *detail = kv ? kv_errmsg(kv) : "";

    kvp_raise(pc, KVP_R_VAULT, "%s: %s%s%s", what, kv_strerror(rc), detail[0] ? ": " : "",
              detail);
}

/* ---- the provider context ------------------------------------------------- */

kv_rc kvp_provctx_kv(kvp_provctx *pc, kv_ctx **out)
{
    kv_ctx *kv = atomic_load(&pc->kv), *none = NULL;
    kv_rc rc;

    *out = kv;
    if (kv)
        return KV_OK;
    /* made without a lock, which a child forked meanwhile would inherit
     * held: two threads making it at once make one each, and the second
     * to publish frees its own */
    rc = kv_ctx_new(&kv, pc->conf);
    if (rc != KV_OK && (*out = atomic_load(&pc->kv)) != NULL)
        return KV_OK; /* another thread's made it meanwhile */
    if (rc != KV_OK) {
        kvp_raise(pc, KVP_R_VAULT, "kv_ctx_new(%s) failed: %s: %s",
                  pc->conf ? "keyvault_conf" : "default configuration", kv_strerror(rc),
                  kv_errmsg(NULL));
        return rc;
    }
    if (!atomic_compare_exchange_strong(&pc->kv, &none, kv)) {
        kv_ctx_free(kv);
        kv = none;
    }
    *out = kv;
    return KV_OK;
}

/* Set once the process exits: OPENSSL_cleanup tears providers down from
 * its atexit handler, after the PKCS#11 module (SoftHSM) loaded later has
 * run its own destructors, so closing its sessions then crashes it. */
static volatile int exiting;
static void at_exit(void)
{
    exiting = 1;
}

static void forked_child(void);

/* once, before the first use of a lock forked_child makes again */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
static void handlers_register(void)
{
    (void)atexit(at_exit);
    (void)pthread_atfork(NULL, NULL, forked_child);
}

static void provctx_free(kvp_provctx *pc)
{
    if (!pc)
        return;
    if (exiting)
        atomic_store(&pc->kv, NULL); /* the process is going: leave the backends as they are */
    EVP_KEYMGMT_free(pc->km_ec);
    EVP_KEYMGMT_free(pc->km_rsa);
    EVP_KEYMGMT_free(pc->km_ed25519);
    OSSL_PROVIDER_unload(pc->pubdefault);
    OSSL_LIB_CTX_free(pc->publibctx);
    kv_ctx_free(atomic_load(&pc->kv));
    free(pc->conf);
    free(pc);
}

/* ---- the library contexts we serve ---------------------------------------- */

/*
 * OpenSSL 3.0 caches fetched methods by name and property query; a lookup
 * without a provider matches an entry cached for any provider. When OpenSSL
 * prepares an operation with one of our keys it fetches the key management
 * from our provider with the caller's (usually empty) property query, and
 * if that entry is the first one cached for "EC" since the cache was last
 * flushed, every later property-less fetch of "EC" (EVP_PKEY_keygen, TLS's
 * ECDHE share, EVP_PKEY_fromdata) gets ours. kvp_generic_first puts the
 * default provider's entry there first: our key management calls it before
 * every operation with our keys (query_operation_name), and key objects
 * call it when they are made.
 */
#define MAX_LIBCTX 16
static pthread_mutex_t served_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    OSSL_LIB_CTX *lib; /* NULL is OpenSSL's default library context */
    unsigned users;
} served[MAX_LIBCTX];

static void served_add(OSSL_LIB_CTX *lib)
{
    size_t i, free_slot = MAX_LIBCTX;

    pthread_mutex_lock(&served_lock);
    for (i = 0; i < MAX_LIBCTX; i++) {
        if (served[i].users && served[i].lib == lib)
            break;
        if (!served[i].users && free_slot == MAX_LIBCTX)
            free_slot = i;
    }
    if (i == MAX_LIBCTX && free_slot < MAX_LIBCTX) {
        i = free_slot;
        served[i].lib = lib;
    }
    if (i < MAX_LIBCTX)
        served[i].users++;
    pthread_mutex_unlock(&served_lock);
}

static void served_remove(OSSL_LIB_CTX *lib)
{
    pthread_mutex_lock(&served_lock);
    for (size_t i = 0; i < MAX_LIBCTX; i++)
        if (served[i].users && served[i].lib == lib) {
            served[i].users--;
            break;
        }
    pthread_mutex_unlock(&served_lock);
}

void kvp_generic_first(const char *type)
{
    pthread_mutex_lock(&served_lock);
    ERR_set_mark();
    for (size_t i = 0; i < MAX_LIBCTX; i++)
        if (served[i].users)
            EVP_KEYMGMT_free(EVP_KEYMGMT_fetch(served[i].lib, type, NULL));
    ERR_pop_to_mark();
    pthread_mutex_unlock(&served_lock);
}

/* The OSSL_LIB_CTX of the libcrypto this code links (the library's builtin
 * and keyvault.so both use the system's libcrypto); NULL is the default. */
static OSSL_LIB_CTX *core_libctx(const kvp_provctx *pc)
{
    return (OSSL_LIB_CTX *)pc->core_get_libctx(pc->handle);
}

/* ---- algorithms ----------------------------------------------------------- */

/* Key management names are OpenSSL's own, so EVP_PKEY_is_a(pkey, "EC") and
 * TLS's certificate slots see our keys as what they are. */
static const OSSL_ALGORITHM keymgmt_algs[] = {
    { "EC:id-ecPublicKey:1.2.840.10045.2.1", KVP_PROPS, kvp_keymgmt_ec_functions,
      "keyvault EC key" },
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", KVP_PROPS, kvp_keymgmt_rsa_functions,
      "keyvault RSA key" },
    { "ED25519:1.3.101.112", KVP_PROPS, kvp_keymgmt_ed25519_functions, "keyvault Ed25519 key" },
    { NULL, NULL, NULL, NULL },
};

/* Signature and key exchange go by names of our own (prov.h), which our
 * key management gives OpenSSL for our keys alone. */
static const OSSL_ALGORITHM signature_algs[] = {
    { KVP_SIG_ECDSA, KVP_PROPS, kvp_ecdsa_functions, "ECDSA with a vault key" },
    { KVP_SIG_RSA, KVP_PROPS, kvp_rsa_sig_functions, "RSA (PKCS#1 v1.5, PSS) with a vault key" },
    { KVP_SIG_ED25519, KVP_PROPS, kvp_ed25519_sig_functions, "Ed25519 with a vault key" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM keyexch_algs[] = {
    { KVP_EXCH_ECDH, KVP_PROPS, kvp_ecdh_functions, "ECDH with a vault key" },
    { NULL, NULL, NULL, NULL },
};

/*
 * Ordinary keys stay in the default provider, whatever the provider order.
 * Our key management carries OpenSSL's names ("EC", "RSA", "ED25519"), and
 * OpenSSL 3.0 answers a fetch without properties (EVP_PKEY_keygen,
 * EVP_PKEY_fromdata, a decoder's key) with the implementation its method
 * store got first, in the order providers were activated. So when OpenSSL
 * first asks for our key management, we first have the default provider's
 * stored: a fetch restricted to it, during which we answer "nothing yet,
 * ask again" (no_cache); then ours go in behind it.
 */
static const OSSL_ALGORITHM *keymgmt_after_default(kvp_provctx *pc, int *no_cache)
{
    int state = atomic_load(&pc->keymgmt_state);
    EVP_KEYMGMT *km;

    if (state == 2 || !pc->core_get_libctx)
        return keymgmt_algs;
    if (state == 1 || !atomic_compare_exchange_strong(&pc->keymgmt_state, &state, 1)) {
        *no_cache = 1;
        return NULL;
    }
    ERR_set_mark();
    km = EVP_KEYMGMT_fetch(core_libctx(pc), "EC", "provider=default");
    EVP_KEYMGMT_free(km);
    ERR_pop_to_mark();
    atomic_store(&pc->keymgmt_state, 2);
    return keymgmt_algs;
}

static const OSSL_ALGORITHM *query_operation(void *provctx, int id, int *no_cache)
{
    *no_cache = 0;
    switch (id) {
    case OSSL_OP_KEYMGMT:
        return keymgmt_after_default(provctx, no_cache);
    case OSSL_OP_SIGNATURE:
        return signature_algs;
    case OSSL_OP_KEYEXCH:
        return keyexch_algs;
    case OSSL_OP_STORE:
        return kvp_store_algs;
    case OSSL_OP_DECODER:
        return kvp_decoder_algs;
    }
    return NULL;
}

static const OSSL_PARAM *gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
        OSSL_PARAM_END,
    };
    return params;
}

static int get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p && !OSSL_PARAM_set_utf8_ptr(p, "libkeyvault provider"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p && !OSSL_PARAM_set_utf8_ptr(p, kv_version()))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p && !OSSL_PARAM_set_utf8_ptr(p, kv_version()))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ITEM *get_reason_strings(void *provctx)
{
    return reason_strings;
}

static void teardown(void *provctx)
{
    if (((kvp_provctx *)provctx)->core_get_libctx)
        served_remove(core_libctx(provctx));
    provctx_free(provctx);
}

static const OSSL_DISPATCH provider_functions[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))teardown },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))get_params },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))query_operation },
    { OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))get_reason_strings },
    { 0, NULL },
};

/* Read keyvault_conf from the provider's configuration section. */
static int read_conf(kvp_provctx *pc, OSSL_FUNC_core_get_params_fn *core_get_params)
{
    char *conf = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_ptr("keyvault_conf", &conf, 0),
        OSSL_PARAM_END,
    };

    if (!core_get_params)
        return 1;
    if (!core_get_params(pc->handle, params))
        return 0;
    if (conf && conf[0]) {
        pc->conf = strdup(conf);
        if (!pc->conf)
            return 0;
    }
    return 1;
}

int kv_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                     const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *core_get_params = NULL;
    const OSSL_DISPATCH *in0 = in;
    kvp_provctx *pc = NULL;

    if (!handle || !in || !out || !provctx)
        return 0;
    *provctx = NULL;
    pc = calloc(1, sizeof(*pc));
    if (!pc)
        return 0;
    pc->handle = handle;
    (void)pthread_once(&handlers_once, handlers_register);
    for (; in->function_id != 0; in++) {
        switch (in->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            core_get_params = OSSL_FUNC_core_get_params(in);
            break;
        case OSSL_FUNC_CORE_GET_LIBCTX:
            pc->core_get_libctx = OSSL_FUNC_core_get_libctx(in);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            pc->new_error = OSSL_FUNC_core_new_error(in);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            pc->set_error_debug = OSSL_FUNC_core_set_error_debug(in);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            pc->vset_error = OSSL_FUNC_core_vset_error(in);
            break;
        }
    }
    if (!read_conf(pc, core_get_params))
        goto fail;
    /* Public keys, verification and digests live in a library context of
     * our own with the default provider alone: they never reach a backend,
     * another provider, or this one. */
    pc->publibctx = OSSL_LIB_CTX_new_from_dispatch(handle, in0);
    if (!pc->publibctx || !(pc->pubdefault = OSSL_PROVIDER_load(pc->publibctx, "default")))
        goto fail;
    pc->km_ec = EVP_KEYMGMT_fetch(pc->publibctx, "EC", NULL);
    pc->km_rsa = EVP_KEYMGMT_fetch(pc->publibctx, "RSA", NULL);
    pc->km_ed25519 = EVP_KEYMGMT_fetch(pc->publibctx, "ED25519", NULL);
    if (!pc->km_ec || !pc->km_rsa || !pc->km_ed25519)
        goto fail;
    if (pc->core_get_libctx)
        served_add(core_libctx(pc));
    *out = provider_functions;
    *provctx = pc;
    return 1;
fail:
    provctx_free(pc);
    return 0;
}

/* ---- kv_key_evp_pkey's bridge ------------------------------------------- */

static pthread_mutex_t builtin_lock = PTHREAD_MUTEX_INITIALIZER;

/* A child forked while another thread of its parent held served_lock or
 * builtin_lock would wait for that thread, which it does not have: they
 * are made again, unheld (what they guard is a count of users and the
 * order of a cache, harmless when torn). OpenSSL's own locks, which the
 * same thread may hold in EVP_KEYMGMT_fetch or OSSL_PROVIDER_try_load,
 * are OpenSSL's. */
static void forked_child(void)
{
    pthread_mutex_init(&served_lock, NULL);
    pthread_mutex_init(&builtin_lock, NULL);
}

/* Load the provider in libctx (one more load when it is there already),
 * keeping the fallback (default) provider loadable. When it is not there
 * it is registered as a builtin first, so that this copy of the code
 * serves it, not a keyvault.so found on disk. */
static OSSL_PROVIDER *load_provider(OSSL_LIB_CTX *libctx)
{
    OSSL_PROVIDER *prov;

    (void)pthread_once(&handlers_once, handlers_register);
    pthread_mutex_lock(&builtin_lock);
    ERR_set_mark();
    if (!OSSL_PROVIDER_available(libctx, KVP_NAME))
        (void)OSSL_PROVIDER_add_builtin(libctx, KVP_NAME, kv_provider_init);
    prov = OSSL_PROVIDER_try_load(libctx, KVP_NAME, 1);
    if (prov)
        ERR_pop_to_mark();
    else
        ERR_clear_last_mark();
    pthread_mutex_unlock(&builtin_lock);
    return prov;
}

kv_rc kvp_evp_pkey(kv_ctx *kv, kv_key *key, OSSL_LIB_CTX *libctx, EVP_PKEY **out)
{
    OSSL_PROVIDER *prov = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    kvp_key *k = NULL;
    const char *name;
    OSSL_PARAM params[2];
    kv_rc rc = KV_ERR_CRYPTO;

    *out = NULL;
    prov = load_provider(libctx);
    if (!prov) {
        kv_key_free(key);
        return KV_ERR_CRYPTO;
    }
    k = kvp_key_from_vault(OSSL_PROVIDER_get0_provider_ctx(prov), kv, key, 1);
    if (!k) {
        OSSL_PROVIDER_unload(prov);
        return KV_ERR_CRYPTO;
    }
    /* the provider stays loaded as long as the key object (and so the
     * EVP_PKEY and its copies) lives */
    k->loaded = prov;
    name = kvp_key_type_name(k);
    params[0] = OSSL_PARAM_construct_octet_string(KVP_PARAM_KEY_REF, &k, sizeof(k));
    params[1] = OSSL_PARAM_construct_end();
    pctx = EVP_PKEY_CTX_new_from_name(libctx, name, KVP_PROPS);
    if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, out, EVP_PKEY_KEYPAIR, params) != 1) {
        *out = NULL;
        goto out;
    }
    kvp_generic_first(name);
    rc = KV_OK;
out:
    EVP_PKEY_CTX_free(pctx);
    kvp_key_free(k);
    return rc;
}
