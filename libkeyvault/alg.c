/*
 * alg.c - algorithm and key-type tables, public key decoding, ECDH peer
 * validation, ECDSA signature encodings and software verification.
 * Everything here is OpenSSL 3; nothing is parsed by hand.
 */
#include "config.h"

#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "internal.h"

static const kv_alg_desc alg_table[] = {
    { KV_ALG_ECDSA_SHA256, "ecdsa-sha256", KV_FAMILY_EC, KV_PAD_NONE, "SHA256", 32 },
    { KV_ALG_ECDSA_SHA384, "ecdsa-sha384", KV_FAMILY_EC, KV_PAD_NONE, "SHA384", 48 },
    { KV_ALG_ECDSA_SHA512, "ecdsa-sha512", KV_FAMILY_EC, KV_PAD_NONE, "SHA512", 64 },
    { KV_ALG_RSA_PSS_SHA256, "rsa-pss-sha256", KV_FAMILY_RSA, KV_PAD_PSS, "SHA256", 32 },
    { KV_ALG_RSA_PSS_SHA384, "rsa-pss-sha384", KV_FAMILY_RSA, KV_PAD_PSS, "SHA384", 48 },
    { KV_ALG_RSA_PSS_SHA512, "rsa-pss-sha512", KV_FAMILY_RSA, KV_PAD_PSS, "SHA512", 64 },
    { KV_ALG_RSA_PKCS1_SHA256, "rsa-pkcs1-sha256", KV_FAMILY_RSA, KV_PAD_PKCS1, "SHA256", 32 },
    { KV_ALG_RSA_PKCS1_SHA384, "rsa-pkcs1-sha384", KV_FAMILY_RSA, KV_PAD_PKCS1, "SHA384", 48 },
    { KV_ALG_RSA_PKCS1_SHA512, "rsa-pkcs1-sha512", KV_FAMILY_RSA, KV_PAD_PKCS1, "SHA512", 64 },
    { KV_ALG_ED25519, "ed25519", KV_FAMILY_ED25519, KV_PAD_NONE, NULL, 0 },
};

static const kv_type_desc type_table[] = {
    { KV_KEY_EC_P256, "ec-p256", KV_FAMILY_EC, "P-256", 256, 32, KV_ALG_ECDSA_SHA256 },
    { KV_KEY_EC_P384, "ec-p384", KV_FAMILY_EC, "P-384", 384, 48, KV_ALG_ECDSA_SHA384 },
    { KV_KEY_RSA_2048, "rsa-2048", KV_FAMILY_RSA, NULL, 2048, 0, KV_ALG_RSA_PSS_SHA256 },
    { KV_KEY_RSA_3072, "rsa-3072", KV_FAMILY_RSA, NULL, 3072, 0, KV_ALG_RSA_PSS_SHA256 },
    { KV_KEY_ED25519, "ed25519", KV_FAMILY_ED25519, NULL, 255, 32, KV_ALG_ED25519 },
};

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))

const kv_alg_desc *kv_alg_desc_get(kv_sign_alg alg)
{
    for (size_t i = 0; i < N_ELEM(alg_table); i++)
        if (alg_table[i].alg == alg)
            return &alg_table[i];
    return NULL;
}

const kv_type_desc *kv_type_desc_get(kv_key_type type)
{
    for (size_t i = 0; i < N_ELEM(type_table); i++)
        if (type_table[i].type == type)
            return &type_table[i];
    return NULL;
}

const char *kv_key_type_name(kv_key_type type)
{
    const kv_type_desc *t = kv_type_desc_get(type);
    return t ? t->name : "unknown";
}

kv_key_type kv_key_type_from_name(const char *name)
{
    for (size_t i = 0; name && i < N_ELEM(type_table); i++)
        if (strcmp(type_table[i].name, name) == 0)
            return type_table[i].type;
    return KV_KEY_UNKNOWN;
}

const char *kv_sign_alg_name(kv_sign_alg alg)
{
    const kv_alg_desc *a = kv_alg_desc_get(alg);

    if (alg == KV_ALG_DEFAULT)
        return "default";
    return a ? a->name : "unknown";
}

int kv_sign_alg_from_name(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "default") == 0)
        return KV_ALG_DEFAULT;
    for (size_t i = 0; i < N_ELEM(alg_table); i++)
        if (strcmp(alg_table[i].name, name) == 0)
            return (int)alg_table[i].alg;
    return -1;
}

const char *kv_assurance_name(kv_assurance a)
{
    switch (a) {
    case KV_ASSURANCE_SOFTWARE: return "software";
    case KV_ASSURANCE_TOKEN: return "token";
    case KV_ASSURANCE_TPM: return "tpm";
    case KV_ASSURANCE_UNKNOWN: break;
    }
    return "unknown";
}

kv_family kv_family_of_pkey(const EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "EC"))
        return KV_FAMILY_EC;
    if (EVP_PKEY_is_a(pkey, "RSA"))
        return KV_FAMILY_RSA;
    if (EVP_PKEY_is_a(pkey, "ED25519"))
        return KV_FAMILY_ED25519;
    return KV_FAMILY_NONE;
}

static bool pkey_group(const EVP_PKEY *pkey, char *buf, size_t len)
{
    size_t got = 0;

    return EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, buf, len,
                                          &got) == 1;
}

/* Whether an EC key names its curve (not explicit parameters, which may
 * hide a modified cofactor or generator behind a known curve's name). */
bool kv_pkey_named_curve(const EVP_PKEY *pkey)
{
    char enc[32];
    size_t got = 0;

    return EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_ENCODING, enc, sizeof(enc),
                                          &got) == 1 &&
           strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) == 0;
}

kv_key_type kv_type_of_pkey(const EVP_PKEY *pkey)
{
    char group[64];

    switch (kv_family_of_pkey(pkey)) {
    case KV_FAMILY_EC:
        if (!pkey_group(pkey, group, sizeof(group)))
            return KV_KEY_UNKNOWN;
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            return KV_KEY_EC_P256;
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            return KV_KEY_EC_P384;
        return KV_KEY_UNKNOWN;
    case KV_FAMILY_RSA:
        switch (EVP_PKEY_get_bits(pkey)) {
        case 2048: return KV_KEY_RSA_2048;
        case 3072: return KV_KEY_RSA_3072;
        default: return KV_KEY_UNKNOWN;
        }
    case KV_FAMILY_ED25519:
        return KV_KEY_ED25519;
    case KV_FAMILY_NONE:
        break;
    }
    return KV_KEY_UNKNOWN;
}

size_t kv_sig_max_len(const EVP_PKEY *pub, const kv_alg_desc *alg, unsigned flags)
{
    size_t field = ((size_t)EVP_PKEY_get_bits(pub) + 7) / 8;

    switch (alg->family) {
    case KV_FAMILY_EC:
        if (flags & KV_SIGN_RAW)
            return 2 * field;
        return (size_t)EVP_PKEY_get_size(pub); /* DER maximum */
    case KV_FAMILY_RSA:
        return (size_t)EVP_PKEY_get_size(pub);
    case KV_FAMILY_ED25519:
        return 64;
    case KV_FAMILY_NONE:
        break;
    }
    return 0;
}

kv_rc kv_pubkey_decode(const kv_ctx *ctx, const unsigned char *in, size_t len,
                       EVP_PKEY **out)
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    EVP_PKEY *pkey = NULL;

    *out = NULL;
    if (!in || len == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "public key is empty");
    if (len > 11 && memcmp(in, "-----BEGIN ", 11) == 0) {
        BIO *bio = BIO_new_mem_buf(in, (int)len);
        if (!bio)
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        pkey = PEM_read_bio_PUBKEY_ex(bio, NULL, NULL, NULL, libctx, NULL);
        BIO_free(bio);
        if (!pkey)
            return kv_error_ossl(ctx, KV_ERR_BAD_INPUT,
                                 "public key PEM is not a valid 'PUBLIC KEY' block");
    } else {
        const unsigned char *p = in;
        pkey = d2i_PUBKEY_ex(NULL, &p, (long)len, libctx, NULL);
        if (!pkey)
            return kv_error_ossl(ctx, KV_ERR_BAD_INPUT,
                                 "public key is not a valid DER SubjectPublicKeyInfo");
        if ((size_t)(p - in) != len) {
            EVP_PKEY_free(pkey);
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "public key DER has %zu trailing bytes", len - (size_t)(p - in));
        }
        /* DER, not BER: the key must encode back to the very same bytes */
        unsigned char *again = NULL;
        int n = i2d_PUBKEY(pkey, &again);
        bool same = n > 0 && (size_t)n == len && memcmp(again, in, len) == 0;
        OPENSSL_free(again);
        if (!same) {
            EVP_PKEY_free(pkey);
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "public key is not canonical DER (BER or non-minimal encoding)");
        }
    }
    *out = pkey;
    return KV_OK;
}

/* Build an EC public key on `group` from a SEC1 point. */
static kv_rc point_to_pkey(const kv_ctx *ctx, const char *group, const unsigned char *pt,
                           size_t len, EVP_PKEY **out)
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *pctx = NULL;
    kv_rc rc = KV_OK;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pt, len);
    params[2] = OSSL_PARAM_construct_end();
    pctx = EVP_PKEY_CTX_new_from_name(libctx, "EC", NULL);
    if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot create an EC key context");
    if (EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                     "peer point (%zu bytes) is not a valid point on %s", len, group);
out:
    EVP_PKEY_CTX_free(pctx);
    return rc;
}

/*
 * SubjectPublicKeyInfo as an OpenSSL ASN.1 template. ECDH peers are read
 * through it rather than d2i_PUBKEY: the key is checked field by field
 * (named curve, canonical DER) and built from its point directly, which
 * costs a fraction of a trip through OpenSSL's decoder framework.
 */
typedef struct {
    X509_ALGOR *alg;
    ASN1_BIT_STRING *key;
} KV_SPKI;

DECLARE_ASN1_FUNCTIONS(KV_SPKI)

ASN1_SEQUENCE(KV_SPKI) = {
    ASN1_SIMPLE(KV_SPKI, alg, X509_ALGOR),
    ASN1_SIMPLE(KV_SPKI, key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(KV_SPKI)

IMPLEMENT_ASN1_FUNCTIONS(KV_SPKI)

static kv_rc point_to_pkey(const kv_ctx *ctx, const char *group, const unsigned char *pt,
                           size_t len, EVP_PKEY **out);

/* The EC point of a DER SubjectPublicKeyInfo on the named curve `group`. */
static kv_rc spki_ec_point(const kv_ctx *ctx, const char *group, const unsigned char *der,
                           size_t len, EVP_PKEY **out)
{
    const unsigned char *p = der;
    KV_SPKI *spki = d2i_KV_SPKI(NULL, &p, (long)len);
    unsigned char *again = NULL;
    const ASN1_OBJECT *oid = NULL;
    const void *param = NULL;
    int ptype = 0, n;
    kv_rc rc = KV_OK;

    if (!spki || (size_t)(p - der) != len)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                "peer public key is not a DER SubjectPublicKeyInfo");
    n = i2d_KV_SPKI(spki, &again);
    if (n <= 0 || (size_t)n != len || memcmp(again, der, len) != 0)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                "peer public key is not canonical DER (BER or non-minimal encoding)");
    X509_ALGOR_get0(&oid, &ptype, &param, spki->alg);
    if (OBJ_obj2nid(oid) != NID_X9_62_id_ecPublicKey)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY, "peer public key is not an EC key");
    if (ptype != V_ASN1_OBJECT)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                "peer public key uses explicit curve parameters; only named curves are "
                "accepted");
    if (OBJ_obj2nid(param) != EC_curve_nist2nid(group))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY, "peer public key is on curve %s, this key is on %s",
                OBJ_nid2sn(OBJ_obj2nid(param)), group);
    if (spki->key->flags & 0x07)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY, "peer public key bit string has unused bits");
    rc = point_to_pkey(ctx, group, ASN1_STRING_get0_data(spki->key),
                       (size_t)ASN1_STRING_length(spki->key), out);
out:
    kv_ossl_drop();
    OPENSSL_free(again);
    KV_SPKI_free(spki);
    return rc;
}

kv_rc kv_peer_decode(const kv_ctx *ctx, const char *group, const unsigned char *in,
                     size_t len, EVP_PKEY **out)
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    EVP_PKEY *peer = NULL;
    EVP_PKEY_CTX *chk = NULL;
    char pgroup[64];
    kv_rc rc = KV_OK;

    *out = NULL;
    if (len == 0)
        return kv_error(ctx, KV_ERR_INVALID_PEER_KEY, "peer public key is empty");
    if (in[0] == 0x02 || in[0] == 0x03 || in[0] == 0x04) {
        KV_CHECK(rc, point_to_pkey(ctx, group, in, len, &peer));
    } else if (in[0] == 0x30) {
        KV_CHECK(rc, spki_ec_point(ctx, group, in, len, &peer));
    } else {
        rc = kv_pubkey_decode(ctx, in, len, &peer);
        if (rc != KV_OK) {
            rc = KV_ERR_INVALID_PEER_KEY;
            goto out;
        }
        if (kv_family_of_pkey(peer) != KV_FAMILY_EC)
            KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY, "peer public key is not an EC key");
        if (!pkey_group(peer, pgroup, sizeof(pgroup)) || !kv_pkey_named_curve(peer))
            KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                    "peer public key uses explicit curve parameters; only named curves "
                    "are accepted");
        if (EC_curve_nist2nid(group) != OBJ_sn2nid(pgroup) &&
            EC_curve_nist2nid(group) != EC_curve_nist2nid(pgroup))
            KV_FAIL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                    "peer public key is on curve %s, this key is on %s", pgroup, group);
    }
    /* On the curve and not the point at infinity. P-256 and P-384 have
     * cofactor 1, so that puts the point in the prime-order group: the
     * full check's extra scalar multiplication by the order proves nothing
     * more and would double the cost of an ECDH. */
    chk = EVP_PKEY_CTX_new_from_pkey(libctx, peer, NULL);
    if (!chk)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (EVP_PKEY_public_check_quick(chk) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_INVALID_PEER_KEY,
                     "peer public key fails validation on %s", group);
    *out = peer;
    peer = NULL;
out:
    kv_ossl_drop();
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_free(peer);
    return rc;
}

kv_rc kv_ecdsa_raw_to_der(const kv_ctx *ctx, const unsigned char *raw, size_t raw_len,
                          unsigned char **der, size_t *der_len)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = NULL, *sv = NULL;
    kv_rc rc = KV_OK;
    int n;

    *der = NULL;
    if (!s)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    r = BN_bin2bn(raw, (int)(raw_len / 2), NULL);
    sv = BN_bin2bn(raw + raw_len / 2, (int)(raw_len / 2), NULL);
    if (!r || !sv || ECDSA_SIG_set0(s, r, sv) != 1) {
        BN_free(r);
        BN_free(sv);
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    n = i2d_ECDSA_SIG(s, der);
    if (n <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot DER-encode an ECDSA signature");
    *der_len = (size_t)n;
out:
    ECDSA_SIG_free(s);
    return rc;
}

kv_rc kv_ecdsa_der_to_raw(const kv_ctx *ctx, const unsigned char *der, size_t der_len,
                          size_t field_len, unsigned char *raw, size_t *raw_len)
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *sv;
    kv_rc rc = KV_OK;

    if (!s || (size_t)(p - der) != der_len)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ECDSA signature is not valid DER");
    ECDSA_SIG_get0(s, &r, &sv);
    if (BN_bn2binpad(r, raw, (int)field_len) < 0 ||
        BN_bn2binpad(sv, raw + field_len, (int)field_len) < 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ECDSA signature values exceed %zu bytes",
                field_len);
    *raw_len = 2 * field_len;
out:
    kv_ossl_drop();
    ECDSA_SIG_free(s);
    return rc;
}

EVP_MD *kv_ctx_md(const kv_ctx *ctx, const char *name)
{
    if (strcmp(name, "SHA256") == 0)
        return ctx->md_sha256;
    if (strcmp(name, "SHA384") == 0)
        return ctx->md_sha384;
    return ctx->md_sha512;
}

kv_rc kv_digest(kv_ctx *ctx, const kv_alg_desc *alg, const unsigned char *in, size_t len,
                unsigned char *md, size_t *mdlen)
{
    unsigned int n = 0;
    EVP_MD *fetched = NULL;
    const EVP_MD *type;
    kv_rc rc = KV_OK;

    if (ctx) {
        type = kv_ctx_md(ctx, alg->md);
    } else {
        fetched = EVP_MD_fetch(NULL, alg->md, NULL);
        type = fetched;
    }
    if (!type || EVP_Digest(in ? in : (const unsigned char *)"", len, md, &n, type, NULL) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "%s digest failed", alg->md);
    else
        *mdlen = n;
    EVP_MD_free(fetched);
    return rc;
}

kv_rc kv_verify_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *pub,
                     const kv_alg_desc *alg, const unsigned char *tbs, size_t tbslen,
                     const unsigned char *sig, size_t siglen)
{
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *mctx = NULL;
    EVP_MD *md = NULL;
    kv_rc rc = KV_OK;
    int ok;

    if (alg->family == KV_FAMILY_ED25519) {
        mctx = EVP_MD_CTX_new();
        if (!mctx || EVP_DigestVerifyInit_ex(mctx, NULL, NULL, libctx, NULL, pub, NULL) != 1)
            KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot start Ed25519 verification");
        ok = EVP_DigestVerify(mctx, sig, siglen, tbs ? tbs : (const unsigned char *)"",
                              tbslen);
    } else {
        md = EVP_MD_fetch(libctx, alg->md, NULL);
        pctx = EVP_PKEY_CTX_new_from_pkey(libctx, pub, NULL);
        if (!md || !pctx || EVP_PKEY_verify_init(pctx) != 1 ||
            EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
            KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot start %s verification", alg->name);
        if (alg->padding == KV_PAD_PSS) {
            if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1 ||
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)
                KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot set RSA-PSS parameters");
        } else if (alg->padding == KV_PAD_PKCS1) {
            if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
                KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot set RSA PKCS#1 v1.5 padding");
        }
        ok = EVP_PKEY_verify(pctx, sig, siglen, tbs, tbslen);
    }
    if (ok != 1)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE, "%s signature does not verify", alg->name);
out:
    kv_ossl_drop();
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(pctx);
    EVP_MD_free(md);
    return rc;
}
