/*
 * jose-check.c - the JOSE fuzz targets' own verdicts (jose-check.h), from
 * OpenSSL and jansson alone: none of libkeyvault's JOSE code is used, so a
 * token the library accepts is checked by a second implementation.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "jose-check.h"

/* base64url text of n chars (no padding) decoded; NULL when not base64url. */
static unsigned char *b64url_dec(const char *s, size_t n, size_t *outlen)
{
    size_t pad = (4 - n % 4) % 4;
    char *t;
    unsigned char *out;
    int got;

    if (n % 4 == 1)
        return NULL;
    if (!(t = malloc(n + pad + 1)) || !(out = malloc((n + pad) / 4 * 3 + 1))) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            free(t);
            free(out);
            return NULL;
        }
        t[i] = c;
    }
    memset(t + n, '=', pad);
    t[n + pad] = '\0';
    got = EVP_DecodeBlock(out, (unsigned char *)t, (int)(n + pad));
    free(t);
    if (got < 0 || (size_t)got < pad) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)got - pad;
    return out;
}

char *fzj_b64url(const void *data, size_t len)
{
    char *out = malloc(len / 3 * 4 + 8);
    int n;

    if (!out)
        abort();
    n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

char *fzj_token(const char *header, const char *payload, const void *sig, size_t siglen)
{
    char *h = fzj_b64url(header, strlen(header)), *p = fzj_b64url(payload, strlen(payload));
    char *s = fzj_b64url(sig, siglen);
    size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
    char *tok = malloc(n);

    if (!tok)
        abort();
    snprintf(tok, n, "%s.%s.%s", h, p, s);
    free(h);
    free(p);
    free(s);
    return tok;
}

/* The three parts of a compact JWS: dots[0], dots[1] the two dots. */
static int split(const char *jws, const char **dots)
{
    const char *a = strchr(jws, '.'), *b = a ? strchr(a + 1, '.') : NULL;

    if (!a || !b || strchr(b + 1, '.'))
        return 0;
    dots[0] = a;
    dots[1] = b;
    return 1;
}

char *fzj_payload(const char *jws)
{
    const char *d[2];
    unsigned char *p;
    size_t n;

    if (!split(jws, d) || !(p = b64url_dec(d[0] + 1, (size_t)(d[1] - d[0] - 1), &n)))
        return NULL;
    p[n] = '\0';
    return (char *)p;
}

/* r||s of 2*half bytes as a DER ECDSA signature (OPENSSL_free), or NULL. */
static unsigned char *ecdsa_der(const unsigned char *sig, size_t half, int *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    unsigned char *der = NULL;

    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    *derlen = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    return *derlen > 0 ? der : NULL;
}

int fzj_sig_ok(const char *jws, EVP_PKEY *pk)
{
    const char *d[2], *alg, *md = NULL;
    unsigned char *hdr = NULL, *sig = NULL, *der = NULL;
    size_t hlen, siglen, half = 0;
    json_t *h = NULL;
    EVP_MD_CTX *mc = NULL;
    EVP_PKEY_CTX *pc = NULL;
    int ok = 0, pss = 0, derlen = 0;

    if (!split(jws, d) || !(hdr = b64url_dec(jws, (size_t)(d[0] - jws), &hlen)) ||
        !(sig = b64url_dec(d[1] + 1, strlen(d[1] + 1), &siglen)))
        goto out;
    if (!(h = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, NULL)) ||
        !json_is_object(h) || !(alg = json_string_value(json_object_get(h, "alg"))))
        goto out;
    if (!strcmp(alg, "ES256") && EVP_PKEY_is_a(pk, "EC") && EVP_PKEY_get_bits(pk) == 256)
        md = "SHA256", half = 32;
    else if (!strcmp(alg, "ES384") && EVP_PKEY_is_a(pk, "EC") && EVP_PKEY_get_bits(pk) == 384)
        md = "SHA384", half = 48;
    else if (!strcmp(alg, "PS256") && EVP_PKEY_is_a(pk, "RSA"))
        md = "SHA256", pss = 1;
    else if (!strcmp(alg, "RS256") && EVP_PKEY_is_a(pk, "RSA"))
        md = "SHA256";
    else if (!strcmp(alg, "EdDSA") && EVP_PKEY_is_a(pk, "ED25519"))
        md = NULL;
    else
        goto out;
    if (half) {
        if (siglen != 2 * half || !(der = ecdsa_der(sig, half, &derlen)))
            goto out;
    }
    if (!(mc = EVP_MD_CTX_new()) || EVP_DigestVerifyInit_ex(mc, &pc, md, NULL, NULL, pk, NULL) <= 0)
        goto out;
    if (pss && (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0 ||
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0))
        goto out;
    ok = EVP_DigestVerify(mc, der ? der : sig, der ? (size_t)derlen : siglen,
                          (const unsigned char *)jws, (size_t)(d[1] - jws)) == 1;
out:
    EVP_MD_CTX_free(mc);
    OPENSSL_free(der);
    json_decref(h);
    free(hdr);
    free(sig);
    return ok;
}

/* A JSON member's base64url bytes (free), or NULL. */
static unsigned char *member(const json_t *jwk, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(jwk, name));

    return s ? b64url_dec(s, strlen(s), len) : NULL;
}

/* OpenSSL's public key from one JWK (EC, RSA, OKP Ed25519), or NULL. */
static EVP_PKEY *jwk_pkey(const json_t *jwk)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    unsigned char *a = NULL, *b = NULL, *pt = NULL;
    size_t alen = 0, blen = 0;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *pc = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    BIGNUM *n = NULL, *e = NULL;

    if (!kty)
        return NULL;
    if (!strcmp(kty, "OKP") && crv && !strcmp(crv, "Ed25519")) {
        if ((a = member(jwk, "x", &alen)))
            pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a, alen);
        goto out;
    }
    if (!(bld = OSSL_PARAM_BLD_new()))
        goto out;
    if (!strcmp(kty, "EC") && crv && (!strcmp(crv, "P-256") || !strcmp(crv, "P-384"))) {
        if (!(a = member(jwk, "x", &alen)) || !(b = member(jwk, "y", &blen)) ||
            !(pt = malloc(1 + alen + blen)))
            goto out;
        pt[0] = 0x04;
        memcpy(pt + 1, a, alen);
        memcpy(pt + 1 + alen, b, blen);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             !strcmp(crv, "P-256") ? "P-256" : "P-384", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + alen + blen))
            goto out;
        pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else if (!strcmp(kty, "RSA")) {
        if (!(a = member(jwk, "n", &alen)) || !(b = member(jwk, "e", &blen)) ||
            !(n = BN_bin2bn(a, (int)alen, NULL)) || !(e = BN_bin2bn(b, (int)blen, NULL)) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto out;
        pc = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else {
        goto out;
    }
    if (!pc || !(params = OSSL_PARAM_BLD_to_param(bld)) || EVP_PKEY_fromdata_init(pc) <= 0 ||
        EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pk = NULL;
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(pc);
    BN_free(n);
    BN_free(e);
    free(a);
    free(b);
    free(pt);
    return pk;
}

static int jwk_is(const json_t *jwk, EVP_PKEY *pk, const char *alg, const char *kid)
{
    EVP_PKEY *k = json_is_object(jwk) ? jwk_pkey(jwk) : NULL;
    const json_t *a = json_object_get(jwk, "alg"), *id = json_object_get(jwk, "kid");
    int eq = k && EVP_PKEY_eq(k, pk) == 1;

    if (alg && a && !(json_is_string(a) && !strcmp(json_string_value(a), alg)))
        eq = 0;
    if (kid && id && !(json_is_string(id) && !strcmp(json_string_value(id), kid)))
        eq = 0;

    EVP_PKEY_free(k);
    return eq;
}

int fzj_set_holds(const char *keys, EVP_PKEY *pk, const char *alg, const char *kid)
{
    json_t *doc = json_loads(keys, JSON_REJECT_DUPLICATES, NULL), *arr, *v;
    size_t i;
    int held = 0;
    BIO *bio;
    EVP_PKEY *k;

    if (doc) {
        if ((arr = json_object_get(doc, "keys")) && json_is_array(arr)) {
            json_array_foreach (arr, i, v)
                held |= jwk_is(v, pk, alg, kid);
        } else {
            held = jwk_is(doc, pk, alg, kid);
        }
        json_decref(doc);
        return held;
    }
    /* like the JSON parse, PEM may follow white space (OpenSSL's PEM
     * reader wants -----BEGIN at a line's start) */
    keys += strspn(keys, " \t\r\n");
    if (!(bio = BIO_new_mem_buf(keys, -1)))
        abort();
    while (!held && (k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL))) {
        held = EVP_PKEY_eq(k, pk) == 1;
        EVP_PKEY_free(k);
    }
    BIO_free(bio);
    return held;
}

const char *const fzj_names[FZJ_NKEYS] = { "p256", "p384", "rsa", "ed25519" };

kv_ctx *fzj_keys(const char *tag, kv_key **keys, EVP_PKEY **pks)
{
    static const kv_key_type types[FZJ_NKEYS] = { KV_KEY_EC_P256, KV_KEY_EC_P384, KV_KEY_RSA_2048,
                                                  KV_KEY_ED25519 };
    kv_ctx *ctx;

    if (!fz_seeding())
        fz_fixture_load(tag);
    ctx = fz_ctx(NULL, NULL);
    for (size_t i = 0; i < FZJ_NKEYS; i++) {
        unsigned char *der;
        const unsigned char *p;
        size_t len;

        if (fz_seeding()) {
            keys[i] = fz_key(ctx, fzj_names[i], types[i], "software");
        } else if (kv_key_open(ctx, fzj_names[i], &keys[i]) != KV_OK) {
            fprintf(stderr, "fuzz-%s: the fixture key %s: %s\n", tag, fzj_names[i], kv_errmsg(ctx));
            abort();
        }
        p = der = fz_pub(keys[i], &len);
        if (!(pks[i] = d2i_PUBKEY(NULL, &p, (long)len)))
            abort();
        free(der);
    }
    if (fz_seeding())
        fz_fixture_save(tag);
    return ctx;
}

char *fzj_pem(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (!bio || !PEM_write_bio_PUBKEY(bio, pk) || (n = BIO_get_mem_data(bio, &data)) <= 0 ||
        !(out = malloc((size_t)n + 1)))
        abort();
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}
