/*
 * cert.c - certificate requests and self-signed certificates made by a
 * vault key (kv_csr_create, kv_cert_selfsign), on the X.509 toolkit of
 * x509.c: the options are checked and converted there, the objects are
 * built with OpenSSL's X.509 calls, and kv_x509_sign signs and verifies them.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define NOT_BEFORE_SLACK 60   /* seconds: a relying party's clock may be behind */

/* A signed request or certificate as a PEM string for kv_string_free. */
static kv_rc to_pem(const kv_ctx *ctx, kv_x509_kind kind, void *obj, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());

    *out = NULL;
    if (bio && (kind == KV_X509_REQ ? PEM_write_bio_X509_REQ(bio, obj)
                                    : PEM_write_bio_X509(bio, obj)) == 1)
        *out = kv_bio_text(bio, NULL);
    BIO_free(bio);
    if (!*out)
        return kv_error_ossl(ctx, KV_ERR_NO_MEMORY, "cannot write the %s as PEM",
                             kind == KV_X509_REQ ? "certificate request" : "certificate");
    return KV_OK;
}

kv_rc kv_csr_create(kv_key *key, const kv_cert_opts *opts, char **pem)
{
    kv_ctx *ctx = key->ctx;
    kv_x509_opts o;
    X509_REQ *req = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *pem = NULL;
    KV_CHECK(rc, kv_x509_opts_read(key, key->pub, opts, KV_X509_FOR_REQUEST, &o));
    KV_CHECK(rc, kv_x509_exts_build(ctx, &o.spec, &exts));
    req = X509_REQ_new_ex(ctx->libctx, NULL);
    if (!req || X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_subject_name(req, o.subject) != 1 || X509_REQ_set_pubkey(req, key->pub) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot build the certificate request of '%s'",
                     key->name);
    /* requested extensions go in a PKCS#9 extensionRequest attribute */
    if (sk_X509_EXTENSION_num(exts) > 0 && X509_REQ_add_extensions(req, exts) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add the requested extensions");
    KV_CHECK(rc, kv_x509_sign(key, KV_OP_SIGN, o.alg->alg, KV_X509_REQ, req));
    rc = to_pem(ctx, KV_X509_REQ, req, pem);
out:
    kv_audit_event(ctx, KV_AUDIT_SIGN, key->name, key->version, key->be->name, rc, "certificate request");
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    kv_x509_opts_clear(&o);
    return rc;
}

kv_rc kv_cert_selfsign(kv_key *key, const kv_cert_opts *opts, char **pem)
{
    kv_ctx *ctx = key->ctx;
    kv_x509_opts o;
    X509 *x = NULL;
    ASN1_INTEGER *serial = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    time_t now = time(NULL);
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *pem = NULL;
    KV_CHECK(rc, kv_x509_opts_read(key, key->pub, opts, KV_X509_FOR_SELFSIGN, &o));
    KV_CHECK(rc, kv_x509_exts_build(ctx, &o.spec, &exts));
    KV_CHECK(rc, kv_x509_serial_random(ctx, &serial));
    x = X509_new_ex(ctx->libctx, NULL);
    if (!x || X509_set_version(x, X509_VERSION_3) != 1 || X509_set_serialNumber(x, serial) != 1 ||
        X509_set_subject_name(x, o.subject) != 1 || X509_set_issuer_name(x, o.subject) != 1 ||
        X509_set_pubkey(x, key->pub) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot build the certificate of '%s'",
                     key->name);
    KV_CHECK(rc, kv_x509_set_validity(ctx, x, now - NOT_BEFORE_SLACK,
                                      now + (time_t)o.days * 86400));
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
        if (X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add an extension to the certificate");
    KV_CHECK(rc, kv_x509_add_key_ids(ctx, x, NULL));
    KV_CHECK(rc, kv_x509_sign(key, KV_OP_SIGN, o.alg->alg, KV_X509_CERT, x));
    rc = to_pem(ctx, KV_X509_CERT, x, pem);
out:
    kv_audit_event(ctx, KV_AUDIT_ISSUE, key->name, key->version, key->be->name, rc, "self-signed certificate");
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    ASN1_INTEGER_free(serial);
    X509_free(x);
    kv_x509_opts_clear(&o);
    return rc;
}
