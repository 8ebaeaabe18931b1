/*
 * prov.h - the keyvault OpenSSL provider's internal header.
 *
 * The provider is built against the public API (<keyvault.h>) and OpenSSL's
 * headers only: whatever it does, a program linking libkeyvault can do too.
 * One file per OpenSSL operation: provider.c (init, teardown, the provider
 * context, errors), keymgmt.c, signature.c, keyexch.c, store.c, decoder.c.
 *
 * Interface for the other operation files (stable: only ever added to):
 *  - kvp_provctx_kv: the provider's own kv_ctx, made on first use.
 *  - kvp_key_from_vault / kvp_key_up_ref / kvp_key_free: the key object.
 *  - kvp_raise / kvp_raise_kv: errors onto OpenSSL's error queue.
 */
#ifndef KV_PROV_H
#define KV_PROV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <keyvault.h>

#define KVP_NAME "keyvault"
#define KVP_PROPS "provider=keyvault"
/* The private parameter of our key management import: an octet string
 * holding a `kvp_key *` (pointer-sized). The import takes a reference of its
 * own (kvp_key_up_ref); the caller keeps and frees its own. */
#define KVP_PARAM_KEY_REF "keyvault-key-ref"
/* Our signature and key exchange algorithms are fetched under these names
 * only (keymgmt's query_operation_name answers them for our keys), so an
 * ordinary key never reaches them, whatever the provider order. */
#define KVP_SIG_ECDSA "KEYVAULT-ECDSA"
#define KVP_SIG_RSA "KEYVAULT-RSA"
#define KVP_SIG_ED25519 "KEYVAULT-ED25519"
#define KVP_EXCH_ECDH "KEYVAULT-ECDH"

/* Reasons of the errors the provider raises (kvp_raise). */
enum {
    KVP_R_VAULT = 1,           /* a libkeyvault call failed: the detail follows */
    KVP_R_NO_PRIVATE_KEY = 2,  /* a private operation on a public-only object */
    KVP_R_EXPORT_REFUSED = 3,  /* the private half of a vault key never leaves it */
    KVP_R_UNSUPPORTED = 4,     /* an algorithm, digest, padding or salt we cannot do */
    KVP_R_BAD_PARAM = 5,       /* a malformed parameter */
    KVP_R_INTERNAL = 6,        /* an OpenSSL call failed */
};

typedef struct kvp_provctx {
    const OSSL_CORE_HANDLE *handle;
    /* our own library context holding only the default provider: public
     * keys, verification, digests (never a backend, never another provider) */
    OSSL_LIB_CTX *publibctx;
    EVP_KEYMGMT *km_ec, *km_rsa, *km_ed25519;  /* the default's, in publibctx */
    _Atomic(kv_ctx *) kv;      /* the provider's kv_ctx (kvp_provctx_kv) */
    char *conf;                /* keyvault_conf from the provider's section, or NULL */
    OSSL_FUNC_core_new_error_fn *new_error;
    OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
    OSSL_FUNC_core_vset_error_fn *vset_error;
    OSSL_FUNC_core_get_libctx_fn *core_get_libctx;
    atomic_int keymgmt_state;  /* 0, 1 while the default's go first, 2 (provider.c) */
    OSSL_PROVIDER *pubdefault; /* the default provider loaded in publibctx */
} kvp_provctx;

/*
 * kvp_provctx_kv - the provider's own kv_ctx, made on first use from the
 * provider parameter keyvault_conf (openssl.cnf), else kv_ctx_new(NULL)
 * ($KEYVAULT_CONF, /etc/keyvault/keyvault.conf, defaults). Thread-safe.
 * On failure raises an error naming the configuration problem.
 */
kv_rc kvp_provctx_kv(kvp_provctx *pc, kv_ctx **out);

/* The provider's key object: a vault key (private operations go to kv_sign
 * and kv_ecdh) or a public-only key (from an import), with its public half
 * in pc->publibctx. Immutable once made; shared by reference. */
#define KVP_KEY_MAGIC 0x6b766b79u
typedef struct kvp_key {
    uint32_t magic;            /* KVP_KEY_MAGIC while alive */
    atomic_uint refs;
    kvp_provctx *pc;
    kv_ctx *kv;                /* the kv_ctx key came from (kv_errmsg); NULL if public-only */
    kv_key *key;               /* NULL: public only */
    int owns_key;              /* kv_key_free(key) on the last reference */
    EVP_PKEY *pub;             /* public half in pc->publibctx; NULL only while new */
    kv_key_type type;          /* KV_KEY_UNKNOWN for a public-only key */
    struct kvp_key *origin;    /* imported by reference: the object whose key this
                                * one uses (one reference held), else NULL */
    OSSL_PROVIDER *loaded;     /* kv_key_evp_pkey's load of the provider in the caller's
                                * library context: unloaded with the object */
} kvp_key;

/*
 * kvp_key_from_vault - a new key object (one reference) for a vault key
 * opened in kv. With own, the object frees key on its last reference, and
 * takes it even when it fails (key is freed then). NULL on failure (raised).
 */
kvp_key *kvp_key_from_vault(kvp_provctx *pc, kv_ctx *kv, kv_key *key, int own);
/* kvp_key_up_ref - one more reference; returns k. */
kvp_key *kvp_key_up_ref(kvp_key *k);
/* kvp_key_free - drop one reference. Accepts NULL. */
void kvp_key_free(kvp_key *k);
/* kvp_key_type_name - our key management's name for k: "EC", "RSA" or
 * "ED25519" (OSSL_OBJECT_PARAM_DATA_TYPE for a store or decoder); NULL when
 * k's type is not one the provider offers. */
const char *kvp_key_type_name(const kvp_key *k);
/* kvp_key_check - k when it points to a live key object, else NULL (for
 * pointers that arrive through parameters). */
kvp_key *kvp_key_check(void *k);

/* Errors onto OpenSSL's error queue, as the provider's. */
void kvp_raise(const kvp_provctx *pc, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a failed libkeyvault call: "what: kv_strerror(rc): kv_errmsg(kv)". */
void kvp_raise_kv(const kvp_provctx *pc, kv_ctx *kv, kv_rc rc, const char *what);

/* kvp_generic_first - have property-less fetches of the key management
 * `type` ("EC", "RSA", "ED25519") answered by the default provider in every
 * library context the provider serves (provider.c says why). Cheap when
 * already so; call it before OpenSSL fetches our key management for a key. */
void kvp_generic_first(const char *type);

/* The bridge for kv_key_evp_pkey (libkeyvault/evp.c): an EVP_PKEY in libctx
 * (NULL: the default one) over the vault key `key` of kv; the EVP_PKEY takes
 * one reference of key, released with kv_key_free when the EVP_PKEY goes.
 * Registers and loads the provider in libctx when it is not yet there. On
 * failure the reference is released too; the OpenSSL error queue says why. */
kv_rc kvp_evp_pkey(kv_ctx *kv, kv_key *key, OSSL_LIB_CTX *libctx, EVP_PKEY **out);

/* Dispatch tables. */
extern const OSSL_DISPATCH kvp_keymgmt_ec_functions[];
extern const OSSL_DISPATCH kvp_keymgmt_rsa_functions[];
extern const OSSL_DISPATCH kvp_keymgmt_ed25519_functions[];
extern const OSSL_DISPATCH kvp_ecdsa_functions[];
extern const OSSL_DISPATCH kvp_rsa_sig_functions[];
extern const OSSL_DISPATCH kvp_ed25519_sig_functions[];
extern const OSSL_DISPATCH kvp_ecdh_functions[];
/* store.c: schemes keyvault, pkcs11, tpm2; decoder.c: PEM KEYVAULT KEY
 * REFERENCE and TSS2 PRIVATE KEY, PEM -> DER -> key (reads its input
 * through a BIO on publibctx, which therefore comes from
 * OSSL_LIB_CTX_new_from_dispatch) */
extern const OSSL_ALGORITHM kvp_store_algs[];
extern const OSSL_ALGORITHM kvp_decoder_algs[];

#endif /* KV_PROV_H */
