/*
 * attest.c - the attestation entry points: argument checks, then the first
 * available backend that offers the operation (a TPM).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "internal.h"

#define KV_NONCE_MAX 64

void kv_attestation_free(kv_attestation *a)
{
    if (!a)
        return;
    OPENSSL_free(a->attest);
    OPENSSL_free(a->signature);
    OPENSSL_free(a->signature_der);
    free(a);
}

/* The backend that attests: the first available one that can (KV_CAP_ATTEST). */
static kv_backend *attester(kv_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nbackends; i++) {
        kv_backend *be = &ctx->backends[i];
        if (be->available && be->ops && (be->ops->caps & KV_CAP_ATTEST))
            return be;
    }
    kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
             "no available backend can attest: configure a TPM ([tpm] tcti or KEYVAULT_TCTI)");
    return NULL;
}

static kv_rc check_nonce(const kv_ctx *ctx, const unsigned char *nonce, size_t len)
{
    if (!nonce || len == 0 || len > KV_NONCE_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "the nonce must be 1 to %d bytes, not %zu",
                        KV_NONCE_MAX, len);
    return KV_OK;
}

static kv_rc new_evidence(const kv_ctx *ctx, kv_attestation **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

kv_rc kv_tpm_ak_public(kv_ctx *ctx, unsigned char *buf, size_t *len)
{
    kv_backend *be;
    EVP_PKEY *pub = NULL;
    unsigned char *der = NULL;
    int n;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, be->ops->ak_public(be, &pub));
    n = i2d_PUBKEY(pub, &der);
    if (n <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the attestation key");
    rc = kv_copy_out(ctx, "the AK", der, (size_t)n, buf, len);
out:
    OPENSSL_free(der);
    EVP_PKEY_free(pub);
    return rc;
}

kv_rc kv_tpm_quote(kv_ctx *ctx, const char *pcrs, const unsigned char *nonce, size_t nonce_len,
                   kv_attestation **out)
{
    kv_backend *be = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    KV_CHECK(rc, check_nonce(ctx, nonce, nonce_len));
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, new_evidence(ctx, out));
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "quote", NULL));
    rc = be->ops->quote(be, pcrs ? pcrs : "sha256:0-7", nonce, nonce_len, *out);
out:
    kv_audit_event(ctx, KV_AUDIT_ATTEST, NULL, 0, be ? be->name : NULL, rc, "quote");
    if (rc != KV_OK) {
        kv_attestation_free(*out);
        *out = NULL;
    }
    return rc;
}

kv_rc kv_key_certify(kv_key *key, const unsigned char *nonce, size_t nonce_len,
                     kv_attestation **out)
{
    kv_ctx *ctx = key->ctx;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    KV_CHECK(rc, check_nonce(ctx, nonce, nonce_len));
    if (!(key->be->ops->caps & KV_CAP_ATTEST))
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "key '%s' is in backend %s: only TPM keys can be certified by the TPM",
                        key->name, key->be->name);
    KV_CHECK(rc, new_evidence(ctx, out));
    KV_CHECK(rc, kv_policy_check(ctx, key->be, key, KV_OP_ATTEST, key->name, NULL));
    KV_CHECK(rc, kv_version_check(key, KV_OP_ATTEST));
    rc = key->be->ops->certify(key, nonce, nonce_len, *out);
out:
    kv_audit_event(ctx, KV_AUDIT_ATTEST, key->name, key->version, key->be->name, rc, "certify");
    if (rc != KV_OK) {
        kv_attestation_free(*out);
        *out = NULL;
    }
    return rc;
}

kv_rc kv_tpm_pcr_read(kv_ctx *ctx, const char *bank, unsigned index, unsigned char *digest,
                      size_t *len)
{
    kv_backend *be;

    KV_CALL_BEGIN(ctx);
    if (index > 23)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "PCR index %u: the TPM has PCRs 0 to 23", index);
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    return be->ops->pcr_read(be, bank ? bank : "sha256", index, digest, len);
}

kv_rc kv_tpm_pcr_extend(kv_ctx *ctx, const char *bank, unsigned index,
                        const unsigned char *digest, size_t len)
{
    kv_backend *be;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (index > 23)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "PCR index %u: the TPM has PCRs 0 to 23", index);
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "pcr-extend", NULL));
    rc = be->ops->pcr_extend(be, bank ? bank : "sha256", index, digest, len);
out:
    return rc;
}

kv_rc kv_tpm_ek_cert(kv_ctx *ctx, unsigned char *buf, size_t *len)
{
    kv_backend *be;
    unsigned char *der = NULL;
    size_t n = 0;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, be->ops->ek_cert(be, &der, &n));
    rc = kv_copy_out(ctx, "the EK certificate", der, n, buf, len);
out:
    OPENSSL_free(der);
    return rc;
}

kv_rc kv_tpm_ak_public_area(kv_ctx *ctx, unsigned char **buf, size_t *len)
{
    kv_backend *be;
    unsigned char *area = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *buf = NULL;
    *len = 0;
    if (!(be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    if (!be->ops->ak_public_area)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend %s cannot export its AK's public area",
                        be->name);
    KV_CHECK(rc, be->ops->ak_public_area(be, true, &area, len));
    if (!(*buf = malloc(*len)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(*buf, area, *len);
out:
    if (rc != KV_OK)
        *len = 0;
    OPENSSL_free(area);
    return rc;
}

/* The AK's public key and the backend that keeps its chain. */
static kv_rc ak_chain_backend(kv_ctx *ctx, kv_backend **be, EVP_PKEY **pub)
{
    *pub = NULL;
    if (!(*be = attester(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    if (!(*be)->ops->ak_chain_store || !(*be)->ops->ak_chain_read)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend %s cannot keep an AK chain",
                        (*be)->name);
    return (*be)->ops->ak_public(*be, pub);
}

kv_rc kv_tpm_ak_store_chain(kv_ctx *ctx, const char *pem, size_t len)
{
    kv_backend *be;
    EVP_PKEY *pub = NULL;
    STACK_OF(X509) *chain = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    KV_CHECK(rc, ak_chain_backend(ctx, &be, &pub));
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "ak-chain", NULL));
    KV_CHECK(rc, kv_chain_parse(ctx, "the AK chain", KV_ERR_BAD_INPUT,
                                (const unsigned char *)pem, len, &chain));
    KV_CHECK(rc, kv_chain_check(ctx, chain, "the attestation key", pub, KV_ERR_BAD_INPUT));
    rc = be->ops->ak_chain_store(be, chain);
out:
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(pub);
    return rc;
}

kv_rc kv_tpm_ak_chain_get(kv_ctx *ctx, kv_backend *be, STACK_OF(X509) **chain)
{
    EVP_PKEY *pub = NULL;
    kv_rc rc;

    *chain = NULL;
    KV_CHECK(rc, be->ops->ak_public(be, &pub));
    KV_CHECK(rc, be->ops->ak_chain_read(be, chain));
    rc = kv_chain_check(ctx, *chain, "the attestation key", pub, KV_ERR_CORRUPT);
out:
    if (rc != KV_OK) {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
    }
    EVP_PKEY_free(pub);
    return rc;
}

kv_rc kv_tpm_ak_chain_pem(kv_ctx *ctx, char **pem)
{
    kv_backend *be;
    EVP_PKEY *pub = NULL;
    STACK_OF(X509) *chain = NULL;
    size_t len = 0;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *pem = NULL;
    KV_CHECK(rc, ak_chain_backend(ctx, &be, &pub));
    rc = kv_tpm_ak_chain_get(ctx, be, &chain);
    if (rc == KV_ERR_KEY_NOT_FOUND && !kv_err_is_set(ctx))
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "the attestation key has no stored chain "
                "(not enrolled: kv_tpm_ak_store_chain)");
    if (rc != KV_OK)
        goto out;
    rc = kv_chain_pem(ctx, chain, pem, &len);
out:
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(pub);
    return rc;
}
