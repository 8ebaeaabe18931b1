/*
 * webauthn.c - kv_attest_webauthn: the key attestation of a TPM key as a
 * WebAuthn attestation object of fmt "tpm" (WebAuthn Level 2, 8.3), the
 * form ACME device-attest-01 and WebAuthn relying parties consume. CBOR
 * through libcbor; the TPM structures come marshalled from the backend.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <cbor.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "internal.h"

#define WEBAUTHN_OPTS_MIN (offsetof(kv_webauthn_opts, flags) + sizeof(unsigned))
#define WEBAUTHN_OPTS_MAX 4096
#define RP_ID_MAX 253                 /* a DNS name */
#define CREDENTIAL_ID_MAX 1023        /* WebAuthn's limit */
#define FLAG_UP 0x01                  /* user present */
#define FLAG_AT 0x40                  /* attested credential data included */
#define COSE_ES256 6                  /* -7 as a CBOR negative integer: -1 - 6 */
#define COSE_ES384 34                 /* -35 */
#define COSE_PS256 36                 /* -37 */

/* map[k] = v, both released; false when any is NULL or the add fails. */
static bool map_put(cbor_item_t *map, cbor_item_t *k, cbor_item_t *v)
{
    bool ok = map && k && v && cbor_map_add(map, (struct cbor_pair){ .key = k, .value = v });

    if (k)
        cbor_decref(&k);
    if (v)
        cbor_decref(&v);
    return ok;
}

static cbor_item_t *bn_bytes(const EVP_PKEY *pub, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    cbor_item_t *item = NULL;
    int n;

    if (EVP_PKEY_get_bn_param(pub, param, &bn) != 1)
        return NULL;
    if ((size_t)BN_num_bytes(bn) <= (pad ? pad : sizeof(buf))) {
        n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
        if (n > 0)
            item = cbor_build_bytestring(buf, (size_t)n);
    }
    BN_free(bn);
    return item;
}

/* The credential's public key as a COSE_Key (RFC 9053): EC2 or RSA. */
static kv_rc cose_key(const kv_key *key, unsigned char **out, size_t *len)
{
    const kv_ctx *ctx = key->ctx;
    const kv_type_desc *t = kv_type_desc_get(key->type);
    cbor_item_t *map = NULL;
    bool ok;

    *out = NULL;
    if (!t || (key->type != KV_KEY_EC_P256 && key->type != KV_KEY_EC_P384 &&
               t->family != KV_FAMILY_RSA))
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE, "key '%s' (%s): a WebAuthn credential here "
                        "is an EC P-256, EC P-384 or RSA key", key->name,
                        kv_key_type_name(key->type));
    if (t->family == KV_FAMILY_EC) {
        map = cbor_new_definite_map(5);
        ok = map_put(map, cbor_build_uint8(1), cbor_build_uint8(2)) &&        /* kty: EC2 */
             map_put(map, cbor_build_uint8(3),
                     cbor_build_negint8(key->type == KV_KEY_EC_P256 ? COSE_ES256 : COSE_ES384)) &&
             map_put(map, cbor_build_negint8(0),                              /* crv */
                     cbor_build_uint8(key->type == KV_KEY_EC_P256 ? 1 : 2)) &&
             map_put(map, cbor_build_negint8(1),                              /* x */
                     bn_bytes(key->pub, OSSL_PKEY_PARAM_EC_PUB_X, t->field_len)) &&
             map_put(map, cbor_build_negint8(2),                              /* y */
                     bn_bytes(key->pub, OSSL_PKEY_PARAM_EC_PUB_Y, t->field_len));
    } else {
        map = cbor_new_definite_map(4);
        ok = map_put(map, cbor_build_uint8(1), cbor_build_uint8(3)) &&        /* kty: RSA */
             map_put(map, cbor_build_uint8(3), cbor_build_negint8(COSE_PS256)) &&
             map_put(map, cbor_build_negint8(0),                              /* n */
                     bn_bytes(key->pub, OSSL_PKEY_PARAM_RSA_N, 0)) &&
             map_put(map, cbor_build_negint8(1),                              /* e */
                     bn_bytes(key->pub, OSSL_PKEY_PARAM_RSA_E, 0));
    }
    size_t cap = 0;
    *len = ok ? cbor_serialize_alloc(map, out, &cap) : 0;
    if (map)
        cbor_decref(&map);
    if (*len == 0) {
        free(*out);
        *out = NULL;
        return kv_error_ossl(ctx, KV_ERR_NO_MEMORY, "cannot encode the COSE key of '%s'",
                             key->name);
    }
    return KV_OK;
}

static kv_rc read_opts(const kv_ctx *ctx, const kv_webauthn_opts *opts)
{
    if (opts->size < WEBAUTHN_OPTS_MIN || opts->size > WEBAUTHN_OPTS_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_webauthn_opts.size is %zu, not %zu to %d: "
                        "initialise with KV_WEBAUTHN_OPTS_INIT", opts->size, WEBAUTHN_OPTS_MIN,
                        WEBAUTHN_OPTS_MAX);
    for (size_t i = sizeof(*opts); i < opts->size; i++)
        if (((const unsigned char *)opts)[i])
            return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_webauthn_opts has fields this library "
                            "version does not know (size %zu)", opts->size);
    if (!opts->rp_id || !*opts->rp_id || strlen(opts->rp_id) > RP_ID_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_webauthn_opts.rp_id must be 1 to %d bytes",
                        RP_ID_MAX);
    if (!opts->client_data_hash == !opts->acme_key_authorization)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_webauthn_opts needs exactly one of "
                        "client_data_hash and acme_key_authorization");
    if (opts->credential_id &&
        (opts->credential_id_len == 0 || opts->credential_id_len > CREDENTIAL_ID_MAX))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "the credential id must be 1 to %d bytes, "
                        "not %zu", CREDENTIAL_ID_MAX, opts->credential_id_len);
    if (opts->flags & ~KV_WEBAUTHN_SIG_TPMT)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown kv_webauthn_opts flags 0x%x",
                        opts->flags & ~KV_WEBAUTHN_SIG_TPMT);
    return KV_OK;
}

static kv_rc sha256(kv_ctx *ctx, const void *a, size_t alen, const void *b, size_t blen,
                    unsigned char md[32])
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok = h && EVP_DigestInit_ex(h, kv_ctx_md(ctx, "SHA256"), NULL) == 1 &&
              EVP_DigestUpdate(h, a, alen) == 1 && (!b || EVP_DigestUpdate(h, b, blen) == 1) &&
              EVP_DigestFinal_ex(h, md, &n) == 1 && n == 32;

    EVP_MD_CTX_free(h);
    return ok ? KV_OK : kv_error_ossl(ctx, KV_ERR_CRYPTO, "SHA-256 failed");
}

/* authenticatorData: rpIdHash, flags, signCount, then the attested
 * credential data (AAGUID, credential id length and id, COSE_Key). */
static kv_rc auth_data(kv_key *key, const kv_webauthn_opts *opts, unsigned char **out,
                       size_t *len)
{
    kv_ctx *ctx = key->ctx;
    unsigned char *cose = NULL, *der = NULL, cred[32], *p;
    const unsigned char *id = opts->credential_id;
    size_t coselen = 0, idlen = opts->credential_id_len;
    int n;
    kv_rc rc;

    *out = NULL;
    KV_CHECK(rc, cose_key(key, &cose, &coselen));
    if (!id) {
        /* the default credential id: SHA-256 of the SubjectPublicKeyInfo */
        if ((n = i2d_PUBKEY(key->pub, &der)) <= 0)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the public key of '%s'",
                         key->name);
        KV_CHECK(rc, sha256(ctx, der, (size_t)n, NULL, 0, cred));
        id = cred;
        idlen = sizeof(cred);
    }
    *len = 32 + 1 + 4 + 16 + 2 + idlen + coselen;
    if (!(p = *out = calloc(1, *len)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, sha256(ctx, opts->rp_id, strlen(opts->rp_id), NULL, 0, p));
    p += 32;
    *p++ = FLAG_UP | FLAG_AT;
    p += 4;                         /* signCount 0: the TPM keeps no counter for it */
    p += 16;                        /* AAGUID: all zero, no authenticator model claimed */
    *p++ = (unsigned char)(idlen >> 8);
    *p++ = (unsigned char)(idlen & 0xff);
    memcpy(p, id, idlen);
    p += idlen;
    memcpy(p, cose, coselen);
out:
    if (rc != KV_OK) {
        free(*out);
        *out = NULL;
    }
    free(cose);
    OPENSSL_free(der);
    return rc;
}

kv_rc kv_attest_webauthn(kv_key *key, const kv_webauthn_opts *opts, unsigned char **obj,
                         size_t *len)
{
    kv_ctx *ctx = key->ctx;
    kv_backend *be = key->be;
    kv_attestation att = { 0 };
    STACK_OF(X509) *chain = NULL;
    unsigned char *ad = NULL, *area = NULL, extra[32];
    size_t adlen = 0, arealen = 0;
    cbor_item_t *stmt = NULL, *x5c = NULL, *top = NULL;
    size_t cap = 0;
    kv_err_mark mark;
    bool ok;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *obj = NULL;
    *len = 0;
    KV_CHECK(rc, read_opts(ctx, opts));
    if (be->ops->assurance != KV_ASSURANCE_TPM || !be->ops->key_public_area ||
        !be->ops->certify || !be->ops->ak_chain_read)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "key '%s' is in backend %s: only TPM keys have a "
                "TPM attestation", key->name, be->name);
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_ATTEST, key->name, NULL));
    KV_CHECK(rc, kv_version_check(key, KV_OP_ATTEST));
    mark = kv_err_mark_get(ctx);
    rc = kv_tpm_ak_chain_get(ctx, be, &chain);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark);
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "the attestation key has no certificate chain "
                "for x5c: store one with kv_tpm_ak_store_chain");
    }
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, auth_data(key, opts, &ad, &adlen));
    if (opts->client_data_hash)
        KV_CHECK(rc, sha256(ctx, ad, adlen, opts->client_data_hash, 32, extra));
    else
        KV_CHECK(rc, sha256(ctx, opts->acme_key_authorization,
                            strlen(opts->acme_key_authorization), NULL, 0, extra));
    KV_CHECK(rc, be->ops->certify(key, extra, sizeof(extra), &att));
    KV_CHECK(rc, be->ops->key_public_area(key, false, &area, &arealen));

    if (!(x5c = cbor_new_definite_array((size_t)sk_X509_num(chain))))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < sk_X509_num(chain); i++) {
        unsigned char *der = NULL;
        int n = i2d_X509(sk_X509_value(chain, i), &der);
        cbor_item_t *item = n > 0 ? cbor_build_bytestring(der, (size_t)n) : NULL;
        bool pushed = item && cbor_array_push(x5c, item);

        if (item)
            cbor_decref(&item);
        OPENSSL_free(der);
        if (!pushed)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot encode AK certificate %d", i);
    }
    stmt = cbor_new_definite_map(6);
    ok = map_put(stmt, cbor_build_string("ver"), cbor_build_string("2.0")) &&
              map_put(stmt, cbor_build_string("alg"), cbor_build_negint8(COSE_ES256)) &&
              map_put(stmt, cbor_build_string("x5c"), cbor_incref(x5c)) &&
              map_put(stmt, cbor_build_string("sig"),
                      opts->flags & KV_WEBAUTHN_SIG_TPMT
                          ? cbor_build_bytestring(att.signature, att.signature_len)
                          : cbor_build_bytestring(att.signature_der, att.signature_der_len)) &&
              map_put(stmt, cbor_build_string("certInfo"),
                      cbor_build_bytestring(att.attest, att.attest_len)) &&
              map_put(stmt, cbor_build_string("pubArea"), cbor_build_bytestring(area, arealen));
    top = cbor_new_definite_map(3);
    ok = ok && map_put(top, cbor_build_string("fmt"), cbor_build_string("tpm")) &&
         map_put(top, cbor_build_string("attStmt"), cbor_incref(stmt)) &&
         map_put(top, cbor_build_string("authData"), cbor_build_bytestring(ad, adlen));
    if (!ok || (*len = cbor_serialize_alloc(top, obj, &cap)) == 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "cannot encode the attestation object of '%s'",
                key->name);
out:
    kv_audit_event(ctx, KV_AUDIT_ATTEST, key->name, key->version, be->name, rc, "webauthn");
    if (rc != KV_OK) {
        free(*obj);
        *obj = NULL;
        *len = 0;
    }
    if (x5c)
        cbor_decref(&x5c);
    if (stmt)
        cbor_decref(&stmt);
    if (top)
        cbor_decref(&top);
    sk_X509_pop_free(chain, X509_free);
    free(ad);
    OPENSSL_free(area);
    OPENSSL_free(att.attest);
    OPENSSL_free(att.signature);
    OPENSSL_free(att.signature_der);
    return rc;
}
