/*
 * evp.c - kv_key_evp_pkey: a vault key as an EVP_PKEY of the keyvault
 * provider (libkeyvault/provider/). The provider sees only the public API;
 * this is the one place that hands it a key's kv_ctx and a reference.
 */
#include <openssl/err.h>

#include "internal.h"
#include "provider/prov.h"

kv_rc kv_key_evp_pkey(kv_key *key, OSSL_LIB_CTX *libctx, EVP_PKEY **out)
{
    kv_ctx *ctx = key->ctx;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    /* the EVP_PKEY's reference; kvp_evp_pkey releases it on failure */
    atomic_fetch_add(&key->extra_refs, 1);
    rc = kvp_evp_pkey(ctx, key, libctx, out);
    if (rc != KV_OK)
        return kv_error_ossl(ctx, rc, "cannot make an EVP_PKEY of key '%s' in the keyvault "
                             "provider", key->name);
    return KV_OK;
}
