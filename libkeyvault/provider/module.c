/*
 * module.c - keyvault.so, the loadable "keyvault" provider module: OpenSSL
 * finds it in its modules directory (or through openssl.cnf) and calls
 * OSSL_provider_init, the one symbol it exports, which hands over to the
 * library's kv_provider_init.
 */
#include <openssl/core.h>

#include <keyvault.h>

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
    __attribute__((visibility("default")));

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    return kv_provider_init(handle, in, out, provctx);
}
