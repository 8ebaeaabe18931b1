/*
 * check_jose.c - JWK export, RFC 7638 thumbprints and compact JWS (jose.c):
 * round trips for every key type on the software store, a SoftHSM token
 * and swtpm (run through tests/jose-unit.sh), each signature also checked
 * by OpenSSL's own EVP_DigestVerify; the RFC 7638, RFC 7515 A.3 and
 * RFC 8037 A.4 vectors; x5c from a stored chain; and the negative corpus,
 * each case checked for its result code and the reason kv_errmsg gives.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "internal.h"
#include "testutil.h"

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

#ifdef KV_WITH_PKCS11
static kv_ctx *token_ctx(void)
{
    char path[700];
    kv_ctx *ctx = NULL;
    const char *dir = env_or_null("KV_P11_DIR");

    ck_assert_msg(dir != NULL, "KV_P11_DIR is not set: run through tests/jose-unit.sh");
    snprintf(path, sizeof(path), "%s/keyvault.conf", dir);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}
#endif

#ifdef KV_WITH_TPM
static kv_ctx *tpm_ctx(void)
{
    char path[700], text[2048];
    kv_ctx *ctx = NULL;
    const char *tcti = env_or_null("KV_TPM_TCTI");

    ck_assert_msg(tcti != NULL, "KV_TPM_TCTI is not set: run through tests/jose-unit.sh");
    snprintf(path, sizeof(path), "%s/tpm.conf", tu_tmpdir());
    snprintf(text, sizeof(text), "[keyvault]\nbackends = tpm\n[tpm]\nkeys = %s/tpmkeys\n"
             "tcti = %s\n", tu_tmpdir(), tcti);
    tu_write(path, text);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}
#endif

/* A new key; names are made unique, since a token outlives a test. */
static kv_key *gen(kv_ctx *ctx, const char *stem, kv_key_type type, const char *backend)
{
    static unsigned serial;
    kv_key *key = NULL;
    char name[KV_NAME_MAX + 1];

    snprintf(name, sizeof(name), "jose-%s-%ld-%u", stem, (long)getpid(), serial++);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, backend, &key), KV_OK);
    return key;
}

static char *b64u(const void *data, size_t len)
{
    char *s = kv_b64url_encode(data, len);
    ck_assert_ptr_nonnull(s);
    return s;
}

static char *b64u_str(const char *s)
{
    return b64u(s, strlen(s));
}

/* header.payload from raw JSON text and payload text (for forged tokens). */
static char *signing_input(const char *header, const char *payload)
{
    char *h = b64u_str(header), *p = b64u_str(payload), *in = kv_asprintf("%s.%s", h, p);

    free(h);
    free(p);
    ck_assert_ptr_nonnull(in);
    return in;
}

/* A token of header and payload signed by key with alg (raw r||s for EC). */
static char *forge(kv_key *key, kv_sign_alg alg, const char *header, const char *payload)
{
    char *in = signing_input(header, payload), *s64, *tok;
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    unsigned flags = alg == KV_ALG_ECDSA_SHA256 || alg == KV_ALG_ECDSA_SHA384 ? KV_SIGN_RAW : 0;

    ck_assert_rc(NULL, kv_sign(key, alg, flags, (unsigned char *)in, strlen(in), sig, &siglen),
                 KV_OK);
    s64 = b64u(sig, siglen);
    tok = kv_asprintf("%s.%s", in, s64);
    free(in);
    free(s64);
    return tok;
}

static char *pem_of(kv_key *key)
{
    char *pem = NULL;
    ck_assert_rc(NULL, kv_key_public_pem(key, &pem), KV_OK);
    return pem;
}

/* The JSON text of a member of a JSON object text (NULL when absent). */
static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);

    ck_assert_msg(j != NULL, "not JSON: %s", err.text);
    return j;
}

/* Verify tok against keys; expect rc and, on failure, `why` in the message. */
static void expect(kv_ctx *ctx, const char *tok, const char *keys, kv_rc want, const char *why)
{
    unsigned char *payload = NULL;
    kv_rc rc = kv_jws_verify(ctx, tok, keys, NULL, NULL, &payload, NULL);

    ck_assert_msg(rc == want, "expected %s, got %s: %s", kv_strerror(want), kv_strerror(rc),
                  kv_errmsg(ctx));
    if (want != KV_OK) {
        ck_assert_ptr_null(payload);
        ck_assert_msg(strstr(kv_errmsg(ctx), why) != NULL, "message '%s' lacks '%s'",
                      kv_errmsg(ctx), why);
    }
    kv_string_free((char *)payload);
}

/* ---- OpenSSL's own verification of a JWS --------------------------------------- */

static unsigned char *unb64u(const char *s, size_t len, size_t *outlen)
{
    unsigned char *out = NULL;
    ck_assert_rc(NULL, kv_b64url_decode(NULL, "test", s, len, &out, outlen), KV_OK);
    return out;
}

/* The signature of tok checked with EVP_DigestVerify on the key's PEM; an
 * ES* signature is made DER with ECDSA_SIG here, not by the library. */
static void openssl_verify(const char *tok, const char *pem, const char *alg)
{
    const char *dot2 = strrchr(tok, '.');
    size_t siglen = 0;
    unsigned char *sig = unb64u(dot2 + 1, strlen(dot2 + 1), &siglen), *der = NULL;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const char *md = strcmp(alg, "EdDSA") == 0 ? NULL : strcmp(alg, "ES384") == 0 ? "SHA384"
                                                                                  : "SHA256";
    int derlen = (int)siglen;

    ck_assert_ptr_nonnull(pkey);
    if (alg[0] == 'E' && alg[1] == 'S') {
        ECDSA_SIG *es = ECDSA_SIG_new();
        ck_assert(ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)siglen / 2, NULL),
                                 BN_bin2bn(sig + siglen / 2, (int)siglen / 2, NULL)) == 1);
        derlen = i2d_ECDSA_SIG(es, &der);
        ck_assert_int_gt(derlen, 0);
        ECDSA_SIG_free(es);
    }
    ck_assert_int_eq(EVP_DigestVerifyInit_ex(m, &pctx, md, NULL, NULL, pkey, NULL), 1);
    if (strcmp(alg, "PS256") == 0) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    ck_assert_msg(EVP_DigestVerify(m, der ? der : sig, (size_t)derlen, (const unsigned char *)tok,
                                   (size_t)(dot2 - tok)) == 1,
                  "OpenSSL does not verify the %s JWS", alg);
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    OPENSSL_free(der);
    free(sig);
}

/* ---- round trips ---------------------------------------------------------------- */

static void round_trip(kv_ctx *ctx, kv_key *key, const char *alg, const char *want_alg)
{
    static const char payload[] = "{\"sub\":\"device-7\",\"n\":1}";
    char *jwk = NULL, *set = NULL, *kid = NULL, *tok = NULL, *hdr = NULL, *pem = pem_of(key);
    unsigned char *out = NULL;
    size_t outlen = 0;
    json_t *j;

    ck_assert_rc(ctx, kv_jwk_public(key, &jwk), KV_OK);
    ck_assert_rc(ctx, kv_jwks(&key, 1, &set), KV_OK);
    ck_assert_rc(ctx, kv_jwk_thumbprint(key, &kid), KV_OK);
    ck_assert_uint_eq(strlen(kid), 43);
    j = parse(jwk);
    ck_assert_str_eq(json_string_value(json_object_get(j, "kid")), kid);
    ck_assert_str_eq(json_string_value(json_object_get(j, "use")), "sig");
    ck_assert_ptr_null(json_object_get(j, "d"));
    json_decref(j);
    ck_assert_rc(ctx, kv_jws_sign(key, alg, "{\"typ\":\"JWT\"}", (const unsigned char *)payload,
                                  strlen(payload), 0, &tok), KV_OK);
    /* the JWK, the set and the PEM each verify it (an RSA key without a
     * policy pins no alg in its JWK: PS256 and RS256 both verify) */
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, NULL, NULL, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, set, NULL, NULL, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, pem, NULL, &hdr, &out, &outlen), KV_OK);
    ck_assert_uint_eq(outlen, strlen(payload));
    ck_assert_str_eq((char *)out, payload);
    j = parse(hdr);
    ck_assert_str_eq(json_string_value(json_object_get(j, "alg")), want_alg);
    ck_assert_str_eq(json_string_value(json_object_get(j, "kid")), kid);
    ck_assert_str_eq(json_string_value(json_object_get(j, "typ")), "JWT");
    json_decref(j);
    openssl_verify(tok, pem, want_alg);
    kv_string_free(jwk);
    kv_string_free(set);
    kv_string_free(kid);
    kv_string_free(tok);
    kv_string_free(hdr);
    kv_string_free((char *)out);
    kv_string_free(pem);
}

static void round_trips(kv_ctx *ctx, const char *backend, bool ed25519)
{
    static const struct { kv_key_type type; const char *alg, *want; } cases[] = {
        { KV_KEY_EC_P256, NULL, "ES256" },  { KV_KEY_EC_P256, "ES256", "ES256" },
        { KV_KEY_EC_P384, NULL, "ES384" },  { KV_KEY_RSA_2048, NULL, "PS256" },
        { KV_KEY_RSA_2048, "RS256", "RS256" }, { KV_KEY_ED25519, NULL, "EdDSA" },
    };
    kv_key *keys[KV_KEY_ED25519 + 1] = { NULL };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].type == KV_KEY_ED25519 && !ed25519)
            continue;
        if (!keys[cases[i].type])
            keys[cases[i].type] = gen(ctx, "rt", cases[i].type, backend);
        round_trip(ctx, keys[cases[i].type], cases[i].alg, cases[i].want);
    }
    for (size_t i = 0; i <= KV_KEY_ED25519; i++)
        kv_key_free(keys[i]);
}

START_TEST(test_round_trip_software)
{
    kv_ctx *ctx = tu_ctx(NULL);

    round_trips(ctx, "software", true);
    kv_ctx_free(ctx);
}
END_TEST

#ifdef KV_WITH_PKCS11
START_TEST(test_round_trip_pkcs11)
{
    kv_ctx *ctx = token_ctx();

    round_trips(ctx, "pkcs11", true);
    kv_ctx_free(ctx);
}
END_TEST
#endif

#ifdef KV_WITH_TPM
START_TEST(test_round_trip_tpm)
{
    kv_ctx *ctx = tpm_ctx();

    round_trips(ctx, "tpm", false);
    kv_ctx_free(ctx);
}
END_TEST
#endif

/* An RSA key whose policy allows one of PS256 and RS256: its JWK names that
 * alg, kv_jws_sign uses it by default, and the JWK refuses the other. An RSA
 * key allowed both pins none. */
static void rsa_pinned(kv_ctx *ctx, uint32_t algs, const char *want, const char *other)
{
    kv_key_policy pol = KV_KEY_POLICY_INIT;
    kv_key *key = NULL;
    char name[64], *jwk = NULL, *tok = NULL, *hdr = NULL;
    json_t *j, *a;

    snprintf(name, sizeof(name), "jose-pin-%ld-%s", (long)getpid(), want ? want : "both");
    pol.algs = algs;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, name, KV_KEY_RSA_2048, NULL, &pol, &key), KV_OK);
    ck_assert_rc(ctx, kv_jwk_public(key, &jwk), KV_OK);
    j = parse(jwk);
    a = json_object_get(j, "alg");
    if (want)
        ck_assert_str_eq(json_string_value(a), want);
    else
        ck_assert_ptr_null(a);
    json_decref(j);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, (const unsigned char *)"x", 1, 0, &tok), KV_OK);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, NULL, &hdr, NULL, NULL), KV_OK);
    j = parse(hdr);
    ck_assert_str_eq(json_string_value(json_object_get(j, "alg")), want ? want : "PS256");
    json_decref(j);
    kv_string_free(tok);
    kv_string_free(hdr);
    tok = hdr = NULL;
    if (other) {
        /* the policy refuses the other alg at the signer */
        ck_assert_int_eq(kv_jws_sign(key, other, NULL, (const unsigned char *)"x", 1, 0, &tok),
                         KV_ERR_POLICY);
        ck_assert_ptr_null(tok);
    }
    kv_string_free(jwk);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_OK);
}

START_TEST(test_rsa_policy_pins_jwk_alg)
{
    kv_ctx *ctx = tu_ctx(NULL);

    rsa_pinned(ctx, 1u << KV_ALG_RSA_PKCS1_SHA256, "RS256", "PS256");
    rsa_pinned(ctx, 1u << KV_ALG_RSA_PSS_SHA256, "PS256", "RS256");
    rsa_pinned(ctx, (1u << KV_ALG_RSA_PSS_SHA256) | (1u << KV_ALG_RSA_PKCS1_SHA256), NULL, NULL);
    kv_ctx_free(ctx);
}
END_TEST

/* A set of several keys: the kid picks the key; without kid, refused. */
START_TEST(test_jwks_selects_by_kid)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *keys[3] = { gen(ctx, "set", KV_KEY_EC_P256, NULL), gen(ctx, "set", KV_KEY_EC_P256, NULL),
                        gen(ctx, "set", KV_KEY_ED25519, NULL) };
    char *set = NULL, *tok = NULL;
    json_t *j;

    ck_assert_rc(ctx, kv_jwks(keys, 3, &set), KV_OK);
    j = parse(set);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "keys")), 3);
    json_decref(j);
    for (int i = 0; i < 3; i++) {
        ck_assert_rc(ctx, kv_jws_sign(keys[i], NULL, NULL, (const unsigned char *)"x", 1, 0, &tok),
                     KV_OK);
        expect(ctx, tok, set, KV_OK, NULL);
        kv_string_free(tok);
    }
    ck_assert_rc(ctx, kv_jws_sign(keys[1], NULL, NULL, (const unsigned char *)"x", 1,
                                  KV_JWS_NO_KID, &tok), KV_OK);
    expect(ctx, tok, set, KV_ERR_BAD_INPUT, "has no kid and the key set holds 3 usable keys");
    kv_string_free(tok);
    kv_string_free(set);
    set = NULL;
    ck_assert_rc(ctx, kv_jwks(keys, 0, &set), KV_ERR_INVALID_ARG);
    kv_string_free(set);
    for (int i = 0; i < 3; i++)
        kv_key_free(keys[i]);
    kv_ctx_free(ctx);
}
END_TEST

/* x5c: the stored chain, standard base64 of each DER certificate. */
START_TEST(test_x5c)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "x5c", KV_KEY_EC_P256, NULL);
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char *cert = NULL, *tok = NULL, *hdr = NULL, *pem = pem_of(key);
    unsigned char der[4096], dec[4096];
    size_t derlen = sizeof(der);
    const char *b64;
    json_t *j;
    int n;

    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, NULL, 0, KV_JWS_X5C, &tok),
                 KV_ERR_KEY_NOT_FOUND);
    o.subject = "CN=jose-x5c";
    ck_assert_rc(ctx, kv_cert_selfsign(key, &o, &cert), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(key, (unsigned char *)cert, strlen(cert)), KV_OK);
    ck_assert_rc(ctx, kv_key_cert_der(key, der, &derlen), KV_OK);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, NULL, 0, KV_JWS_X5C | KV_JWS_NO_KID, &tok),
                 KV_OK);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, pem, NULL, &hdr, NULL, NULL), KV_OK);
    j = parse(hdr);
    ck_assert_ptr_null(json_object_get(j, "kid"));
    ck_assert_uint_eq(json_array_size(json_object_get(j, "x5c")), 1);
    b64 = json_string_value(json_array_get(json_object_get(j, "x5c"), 0));
    ck_assert_ptr_nonnull(b64);
    n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)strlen(b64));
    ck_assert_int_ge(n, (int)derlen);
    ck_assert_mem_eq(dec, der, derlen);   /* n counts padding's zero bytes */
    json_decref(j);
    kv_string_free(cert);
    kv_string_free(tok);
    kv_string_free(hdr);
    kv_string_free(pem);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* ---- vectors ---------------------------------------------------------------------- */

#define RFC7638_N "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhD" \
    "R1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65" \
    "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bF" \
    "TWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"

START_TEST(test_rfc7638_thumbprint)
{
    static const char jwk[] = "{\"kty\":\"RSA\",\"n\":\"" RFC7638_N "\",\"e\":\"AQAB\","
                              "\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
    char *kid = NULL;

    ck_assert_rc(NULL, kv_jose_jwk_thumbprint(NULL, jwk, strlen(jwk), &kid), KV_OK);
    ck_assert_str_eq(kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(kid);
}
END_TEST

START_TEST(test_rfc7515_a3)
{
    static const char jwk[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                              "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                              "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";
    static const char tok[] = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogI"
        "mh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmX"
        "FCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    unsigned char *out = NULL;
    size_t len = 0;
    char *bad;

    ck_assert_rc(NULL, kv_jws_verify(NULL, tok, jwk, NULL, NULL, &out, &len), KV_OK);
    ck_assert_str_eq((char *)out, "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n "
                                  "\"http://example.com/is_root\":true}");
    ck_assert_uint_eq(len, strlen((char *)out));
    kv_string_free((char *)out);
    /* one signature bit off does not verify */
    bad = kv_strdup(tok);
    bad[strlen(bad) - 20] = bad[strlen(bad) - 20] == 'A' ? 'B' : 'A';
    expect(NULL, bad, jwk, KV_ERR_BAD_SIGNATURE, "does not verify");
    free(bad);
}
END_TEST

START_TEST(test_rfc8037_a4)
{
    static const char jwk[] = "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                              "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}";
    static const char tok[] = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCj"
        "P0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    unsigned char *out = NULL;

    ck_assert_rc(NULL, kv_jws_verify(NULL, tok, jwk, NULL, NULL, &out, NULL), KV_OK);
    ck_assert_str_eq((char *)out, "Example of Ed25519 signing");
    kv_string_free((char *)out);
}
END_TEST

/* ---- base64url ---------------------------------------------------------------------- */

START_TEST(test_b64url_strict)
{
    static const struct { const char *in; const char *why; } bad[] = {
        { "Zg=", "padding '='" },        { "Zg==", "padding '='" },
        { "Zm9v+A", "outside" },         { "Zm9v/A", "outside" },
        { "Z", "cannot encode whole bytes" }, { "Zm9vY", "cannot encode whole bytes" },
        { "Zh", "unused bits" },
        { "Zm9", "unused bits" },        { "Zm 9v", "outside" },
    };
    unsigned char *out = NULL;
    size_t len;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kv_err_begin(NULL);   /* an internal call: only the first failure is kept otherwise */
        ck_assert_rc(NULL, kv_b64url_decode(NULL, "x", bad[i].in, strlen(bad[i].in), &out, &len),
                     KV_ERR_BAD_INPUT);
        ck_assert_msg(strstr(kv_errmsg(NULL), bad[i].why), "'%s': %s", bad[i].in,
                      kv_errmsg(NULL));
    }
    ck_assert_rc(NULL, kv_b64url_decode(NULL, "x", "Zm8", 3, &out, &len), KV_OK);
    ck_assert_uint_eq(len, 2);
    ck_assert_str_eq((char *)out, "fo");
    free(out);
    ck_assert_rc(NULL, kv_b64url_decode(NULL, "x", "", 0, &out, &len), KV_OK);
    ck_assert_uint_eq(len, 0);
    free(out);
    out = (unsigned char *)kv_b64url_encode((const unsigned char *)"\xfb\xff", 2);
    ck_assert_str_eq((char *)out, "-_8");
    free(out);
}
END_TEST

/* ---- the negative corpus ------------------------------------------------------------ */

static char *with_sig(const char *in, const unsigned char *sig, size_t len)
{
    char *s64 = b64u(sig, len), *tok = kv_asprintf("%s.%s", in, s64);
    free(s64);
    return tok;
}

/* The signature part of tok, decoded. */
static unsigned char *sig_of(const char *tok, size_t *len)
{
    const char *dot2 = strrchr(tok, '.');
    return unb64u(dot2 + 1, strlen(dot2 + 1), len);
}

/* A JWK of an RSA-1024 key made here, and a token it signed with RS256. */
static void small_rsa(char **jwk, char **tok)
{
    EVP_PKEY *pk = EVP_RSA_gen(1024);
    BIGNUM *n = NULL, *e = NULL;
    unsigned char nb[256], eb[8], sig[256];
    size_t siglen = sizeof(sig);
    char *n64, *e64, *in = signing_input("{\"alg\":\"RS256\"}", "{}");
    EVP_MD_CTX *m = EVP_MD_CTX_new();

    ck_assert_ptr_nonnull(pk);
    ck_assert_int_eq(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    ck_assert_int_eq(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e), 1);
    n64 = b64u(nb, (size_t)BN_bn2bin(n, nb));
    e64 = b64u(eb, (size_t)BN_bn2bin(e, eb));
    *jwk = kv_asprintf("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", n64, e64);
    ck_assert_int_eq(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, pk), 1);
    ck_assert_int_eq(EVP_DigestSign(m, sig, &siglen, (unsigned char *)in, strlen(in)), 1);
    *tok = with_sig(in, sig, siglen);
    EVP_MD_CTX_free(m);
    BN_free(n);
    BN_free(e);
    EVP_PKEY_free(pk);
    free(n64);
    free(e64);
    free(in);
}

START_TEST(test_negative_corpus)
{
    static const char payload[] = "{\"sub\":\"device-7\"}";
    static const char b64chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "neg", KV_KEY_EC_P256, NULL);
    kv_key *other = gen(ctx, "neg", KV_KEY_EC_P256, NULL);
    char *jwk = NULL, *kid = NULL, *ojwk = NULL, *pem = pem_of(key), *good = NULL, *tok, *in, *h;
    unsigned char mac[32], *sig, big[70000];
    unsigned int maclen = 0;
    size_t siglen = 0;
    kv_jws_verify_opts o = KV_JWS_VERIFY_OPTS_INIT;
    char *p;

    ck_assert_rc(ctx, kv_jwk_public(key, &jwk), KV_OK);
    ck_assert_rc(ctx, kv_jwk_thumbprint(key, &kid), KV_OK);
    ck_assert_rc(ctx, kv_jwk_public(other, &ojwk), KV_OK);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, (const unsigned char *)payload,
                                  strlen(payload), 0, &good), KV_OK);
    expect(ctx, good, jwk, KV_OK, NULL);
    expect(ctx, good, pem, KV_OK, NULL);
    sig = sig_of(good, &siglen);

    /* alg none, with an empty signature */
    in = signing_input("{\"alg\":\"none\"}", payload);
    tok = kv_asprintf("%s.", in);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "alg 'none' is refused");
    free(tok);
    free(in);

    /* the alg switched in the header, the signature kept: ES384 and EdDSA for a P-256 key */
    h = kv_asprintf("{\"alg\":\"ES384\",\"kid\":\"%s\"}", kid);
    in = signing_input(h, payload);
    tok = with_sig(in, sig, siglen);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "alg ES384 is not allowed for key");
    expect(ctx, tok, pem, KV_ERR_BAD_INPUT, "alg ES384 is not allowed for key");
    free(tok);
    free(in);
    free(h);
    /* an ES384 header honestly signed with the P-256 key (SHA-384) is refused too */
    h = kv_asprintf("{\"alg\":\"ES384\",\"kid\":\"%s\"}", kid);
    tok = forge(key, KV_ALG_ECDSA_SHA384, h, payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "alg ES384 is not allowed for key");
    free(tok);
    free(h);
    h = kv_asprintf("{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", kid);
    in = signing_input(h, payload);
    tok = with_sig(in, sig, siglen);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "alg EdDSA is not allowed for key");
    free(tok);
    free(in);
    free(h);

    /* HS256 with the public key (its PEM text, and its JWK text) as the HMAC secret */
    h = kv_asprintf("{\"alg\":\"HS256\",\"kid\":\"%s\"}", kid);
    in = signing_input(h, payload);
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), pem, (int)strlen(pem), (unsigned char *)in,
                               strlen(in), mac, &maclen));
    tok = with_sig(in, mac, maclen);
    expect(ctx, tok, pem, KV_ERR_BAD_INPUT, "alg 'HS256' is refused");
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "alg 'HS256' is refused");
    free(tok);
    free(in);
    free(h);

    /* tampered payload, tampered signature */
    in = signing_input("{}", "{\"sub\":\"device-8\"}");
    p = strchr(in, '.');
    tok = kv_asprintf("%.*s%s%s", (int)(strchr(good, '.') - good), good, p, strrchr(good, '.'));
    expect(ctx, tok, jwk, KV_ERR_BAD_SIGNATURE, "signature does not verify");
    free(tok);
    free(in);
    tok = kv_strdup(good);
    p = strrchr(tok, '.') + 10;
    *p = *p == 'A' ? 'B' : 'A';
    expect(ctx, tok, jwk, KV_ERR_BAD_SIGNATURE, "signature does not verify");
    free(tok);

    /* bad base64url: '+' in the payload, '=' padding after the signature, a
     * non-canonical last character (unused bits set) */
    tok = kv_strdup(good);
    strchr(tok, '.')[3] = '+';
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "payload is not base64url");
    free(tok);
    tok = kv_asprintf("%s==", good);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "padding '='");
    free(tok);
    tok = kv_strdup(good);
    ck_assert_uint_eq(strlen(strrchr(tok, '.') + 1) % 4, 2);   /* 64 bytes: 86 characters */
    p = tok + strlen(tok) - 1;
    *p = b64chars[(strchr(b64chars, *p) - b64chars) | 1];
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "signature is not canonical base64url");
    free(tok);

    /* oversized: over max_len, and over the default 64 KiB */
    o.max_len = 100;
    ck_assert_rc(ctx, kv_jws_verify(ctx, good, jwk, &o, NULL, NULL, NULL), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "longer than the 100-byte limit"));
    memset(big, 'a', sizeof(big));
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, big, sizeof(big), 0, &tok), KV_OK);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "longer than the 65536-byte limit");
    o.max_len = 200000;
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, &o, NULL, NULL, NULL), KV_OK);
    o.max_len = (size_t)-1;   /* no wrap-around to a limit of 0 */
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, &o, NULL, NULL, NULL), KV_OK);
    free(tok);

    /* headers that bring their own key or extension: jwk (the attacker's key,
     * which also signed), jku, x5u, crit */
    h = kv_asprintf("{\"alg\":\"ES256\",\"jwk\":%s}", ojwk);
    tok = forge(other, KV_ALG_ECDSA_SHA256, h, payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "header member 'jwk' is refused");
    free(tok);
    free(h);
    tok = forge(key, KV_ALG_ECDSA_SHA256, "{\"alg\":\"ES256\",\"jku\":\"https://evil/jwks\"}",
                payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "header member 'jku' is refused");
    free(tok);
    tok = forge(key, KV_ALG_ECDSA_SHA256, "{\"alg\":\"ES256\",\"x5u\":\"https://evil/c.pem\"}",
                payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "header member 'x5u' is refused");
    free(tok);
    tok = forge(key, KV_ALG_ECDSA_SHA256, "{\"alg\":\"ES256\",\"crit\":[\"exp\"],\"exp\":1}",
                payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "header member 'crit' is refused");
    free(tok);

    /* a kid not in the set; the other key's token against this key's set */
    tok = forge(key, KV_ALG_ECDSA_SHA256, "{\"alg\":\"ES256\",\"kid\":\"nope\"}", payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "kid 'nope' is not in the key set");
    free(tok);
    ck_assert_rc(ctx, kv_jws_sign(other, NULL, NULL, NULL, 0, 0, &tok), KV_OK);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "is not in the key set");
    expect(ctx, tok, pem, KV_ERR_BAD_INPUT, "is not in the key set");
    free(tok);

    /* duplicate header members; a header that is not an object */
    tok = forge(key, KV_ALG_ECDSA_SHA256, "{\"alg\":\"ES256\",\"alg\":\"ES256\"}", payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "duplicate member");
    free(tok);
    tok = forge(key, KV_ALG_ECDSA_SHA256, "[\"ES256\"]", payload);
    expect(ctx, tok, jwk, KV_ERR_BAD_INPUT, "header is not a JSON object");
    free(tok);

    /* a signature one byte short */
    in = kv_asprintf("%.*s", (int)(strrchr(good, '.') - good), good);
    tok = with_sig(in, sig, siglen - 1);
    expect(ctx, tok, jwk, KV_ERR_BAD_SIGNATURE, "ES256 signature must be 64 bytes, has 63");
    free(tok);
    free(in);

    /* the wrong number of parts */
    expect(ctx, "a.b", jwk, KV_ERR_BAD_INPUT, "token has 2 parts");
    expect(ctx, "a.b.c.d.e", jwk, KV_ERR_BAD_INPUT, "token has 5 parts");
    free(sig);
    free(jwk);
    free(ojwk);
    free(kid);
    kv_string_free(good);
    kv_string_free(pem);
    kv_key_free(key);
    kv_key_free(other);
    kv_ctx_free(ctx);
}
END_TEST

/* Keys the verifier refuses: RSA under 2048 bits, an EC point off the
 * curve, private members, a secret (oct) key, a JWK use other than sig. */
START_TEST(test_bad_keys)
{
    static const char xy[] = "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\"";
    static const char a3[] = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogI"
        "mh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmX"
        "FCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    char *jwk = NULL, *tok = NULL;

    small_rsa(&jwk, &tok);
    expect(NULL, tok, jwk, KV_ERR_BAD_INPUT, "RSA JWK has a 1024-bit modulus");
    free(jwk);
    free(tok);
    jwk = kv_asprintf("{\"kty\":\"EC\",\"crv\":\"P-256\",%s,"
                      "\"y\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\"}", xy);
    expect(NULL, a3, jwk, KV_ERR_BAD_INPUT, "EC point");
    free(jwk);
    jwk = kv_asprintf("{\"kty\":\"EC\",\"crv\":\"P-256\",%s,"
                      "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\","
                      "\"d\":\"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI\"}", xy);
    expect(NULL, a3, jwk, KV_ERR_BAD_INPUT, "private or secret key member 'd'");
    free(jwk);
    jwk = kv_asprintf("{\"kty\":\"EC\",\"crv\":\"P-256\",%s,"
                      "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\",\"use\":\"enc\"}", xy);
    expect(NULL, a3, jwk, KV_ERR_BAD_INPUT, "JWK use 'enc' is not 'sig'");
    free(jwk);
    jwk = kv_asprintf("{\"kty\":\"EC\",\"crv\":\"P-256\",%s,"
                      "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\",\"alg\":\"ES384\"}", xy);
    expect(NULL, a3, jwk, KV_ERR_BAD_INPUT, "JWK alg 'ES384' does not fit its EC P-256 key");
    free(jwk);
    expect(NULL, a3, "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}", KV_ERR_BAD_INPUT,
           "private or secret key member 'k'");
    expect(NULL, a3, "{\"keys\":[]}", KV_ERR_BAD_INPUT, "not an array of 1 to 64");
    /* the RFC 7638 modulus with its lowest bit cleared: even, so no RSA key */
    jwk = kv_asprintf("{\"kty\":\"RSA\",\"n\":\"%.*sg\",\"e\":\"AQAB\"}",
                      (int)strlen(RFC7638_N) - 1, RFC7638_N);
    kv_err_begin(NULL);   /* an internal call: it does not start a new detail itself */
    ck_assert_rc(NULL, kv_jose_jwk_thumbprint(NULL, jwk, strlen(jwk), &tok), KV_ERR_BAD_INPUT);
    ck_assert_msg(strstr(kv_errmsg(NULL), "RSA JWK n is even"), "%s", kv_errmsg(NULL));
    free(jwk);
    expect(NULL, a3, "not json", KV_ERR_BAD_INPUT, "the key set is not valid JSON");
}
END_TEST

/* A JWK of key with kid replaced (and use, when given), as a json_t. */
static json_t *jwk_with(kv_key *key, const char *kid, const char *use)
{
    char *text = NULL;
    json_t *j;

    ck_assert_rc(NULL, kv_jwk_public(key, &text), KV_OK);
    j = parse(text);
    kv_string_free(text);
    ck_assert_int_eq(json_object_set_new(j, "kid", json_string(kid)), 0);
    if (use)
        ck_assert_int_eq(json_object_set_new(j, "use", json_string(use)), 0);
    return j;
}

/* A JWK set text of n JWKs (their references are taken). */
static char *set_of(json_t **jwks, size_t n)
{
    json_t *arr = json_array(), *set;
    char *text;

    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(json_array_append_new(arr, jwks[i]), 0);
    set = json_pack("{s:o}", "keys", arr);
    text = json_dumps(set, JSON_COMPACT);
    json_decref(set);
    ck_assert_ptr_nonnull(text);
    return text;
}

static char *signed_with_kid(kv_key *key, const char *kid)
{
    char hdr[64], *tok = NULL;

    snprintf(hdr, sizeof(hdr), "{\"kid\":\"%s\"}", kid);
    ck_assert_rc(NULL, kv_jws_sign(key, NULL, hdr, (const unsigned char *)"x", 1, 0, &tok), KV_OK);
    return tok;
}

/* RFC 7517 4.5: keys may share a kid when they differ in kty or one is for
 * encryption. Only keys usable for the header's alg count; two that are
 * both usable are refused, never tried in turn. */
START_TEST(test_shared_kid)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *ec = gen(ctx, "kid-ec", KV_KEY_EC_P256, NULL), *ec2 = gen(ctx, "kid-ec2", KV_KEY_EC_P256, NULL);
    kv_key *ed = gen(ctx, "kid-ed", KV_KEY_ED25519, NULL), *rsa = gen(ctx, "kid-rsa", KV_KEY_RSA_2048, NULL);
    char *set, *tok_ec = signed_with_kid(ec, "k1"), *tok_ed = signed_with_kid(ed, "k1");
    char *tok_ec2 = signed_with_kid(ec2, "k1"), *tok_rsa = signed_with_kid(rsa, "k1");
    json_t *j[3];

    /* EC and OKP under one kid: each token finds its own key */
    j[0] = jwk_with(ec, "k1", NULL);
    j[1] = jwk_with(ed, "k1", NULL);
    set = set_of(j, 2);
    expect(ctx, tok_ec, set, KV_OK, NULL);
    expect(ctx, tok_ed, set, KV_OK, NULL);
    /* a token by neither, with that kid: the key that fits its alg is absent,
     * so the usable key's alg is the reason */
    expect(ctx, tok_rsa, set, KV_ERR_BAD_INPUT, "alg PS256 is not allowed for key 'k1'");
    free(set);
    /* a signing key and an encryption key (use enc) of one kty under one kid */
    j[0] = jwk_with(ec, "k1", NULL);
    j[1] = jwk_with(ec2, "k1", "enc");
    set = set_of(j, 2);
    expect(ctx, tok_ec, set, KV_OK, NULL);
    /* the token of the enc key's private half selects only the signing key,
     * whose signature check fails: no second key is tried */
    expect(ctx, tok_ec2, set, KV_ERR_BAD_SIGNATURE, "");
    free(set);
    /* two signing keys of one kty under one kid: refused, even for the token
     * that one of them signed */
    j[0] = jwk_with(ec, "k1", NULL);
    j[1] = jwk_with(ec2, "k1", NULL);
    j[2] = jwk_with(ed, "k1", NULL);
    set = set_of(j, 3);
    expect(ctx, tok_ec, set, KV_ERR_BAD_INPUT, "kid 'k1' names 2 keys of the key set that take alg ES256");
    expect(ctx, tok_ec2, set, KV_ERR_BAD_INPUT, "kid 'k1' names 2 keys of the key set that take alg ES256");
    expect(ctx, tok_ed, set, KV_OK, NULL);
    free(set);
    /* the token's kid selects only an unusable JWK: its reason is the error */
    j[0] = jwk_with(ec, "k2", NULL);
    j[1] = jwk_with(ec2, "k1", "enc");
    set = set_of(j, 2);
    expect(ctx, tok_ec, set, KV_ERR_BAD_INPUT, "key 'k1': JWK use 'enc' is not 'sig'");
    free(set);
    free(tok_ec);
    free(tok_ec2);
    free(tok_ed);
    free(tok_rsa);
    kv_key_free(ec);
    kv_key_free(ec2);
    kv_key_free(ed);
    kv_key_free(rsa);
    kv_ctx_free(ctx);
}
END_TEST

/* The PEM key text: exactly one PUBLIC KEY block, whitespace around it only,
 * an EC key on a named curve. */
START_TEST(test_pem_strict)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "pem", KV_KEY_EC_P256, NULL), *other = gen(ctx, "pem2", KV_KEY_EC_P256, NULL);
    char *pem = pem_of(key), *pem2 = pem_of(other), *tok = NULL, *text, *p;
    EVP_PKEY *pkey;
    BIO *bio;
    BUF_MEM *mem;

    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, (const unsigned char *)"x", 1, KV_JWS_NO_KID, &tok),
                 KV_OK);
    expect(ctx, tok, pem, KV_OK, NULL);
    text = kv_asprintf(" \n\t%s\n\n", pem);
    expect(ctx, tok, text, KV_OK, NULL);
    free(text);
    /* a second block after the first (PEM_read_bio_PUBKEY would take the first) */
    text = kv_asprintf("%s%s", pem, pem2);
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "more than the one PEM 'PUBLIC KEY' block "
           "(another PEM block follows it)");
    free(text);
    text = kv_asprintf("%s%s", pem2, pem);
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "(another PEM block follows it)");
    free(text);
    text = kv_asprintf("%sjunk\n", pem);
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "more than the one PEM 'PUBLIC KEY' block (text "
           "follows it)");
    free(text);
    /* junk before the block: not PEM, so taken for JSON and refused */
    text = kv_asprintf("junk\n%s", pem);
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "the key set is not valid JSON");
    free(text);
    /* another label */
    text = kv_asprintf("%s", pem);
    while ((p = strstr(text, "PUBLIC KEY")))
        memcpy(p, "PUBLIC_KEY", 10);
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "the key set's PEM block is 'PUBLIC_KEY', not "
           "'PUBLIC KEY'");
    free(text);
    /* the same key with explicit curve parameters */
    ck_assert_ptr_nonnull(bio = BIO_new_mem_buf(pem, -1));
    ck_assert_ptr_nonnull(pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL));
    BIO_free(bio);
    ck_assert_int_eq(EVP_PKEY_set_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_ENCODING,
                                                    OSSL_PKEY_EC_ENCODING_EXPLICIT), 1);
    ck_assert_ptr_nonnull(bio = BIO_new(BIO_s_mem()));
    ck_assert_int_eq(PEM_write_bio_PUBKEY(bio, pkey), 1);
    BIO_get_mem_ptr(bio, &mem);
    text = kv_asprintf("%.*s", (int)mem->length, mem->data);
    ck_assert_ptr_nonnull(strstr(text, "-----BEGIN PUBLIC KEY-----"));
    ck_assert_uint_gt(strlen(text), strlen(pem) + 100); /* the parameters are in it */
    expect(ctx, tok, text, KV_ERR_BAD_INPUT, "the PEM EC key has explicit curve parameters");
    free(text);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    kv_string_free(tok);
    kv_string_free(pem);
    kv_string_free(pem2);
    kv_key_free(key);
    kv_key_free(other);
    kv_ctx_free(ctx);
}
END_TEST

/* text after n spaces, in a new string */
static char *padded(const char *text, size_t n)
{
    char *s = malloc(n + strlen(text) + 1);

    ck_assert_ptr_nonnull(s);
    memset(s, ' ', n);
    strcpy(s + n, text);
    return s;
}

/* The key set has its own size limit (256 KiB), whatever max_len says of the
 * token; the opts size is checked before its flags are read. */
START_TEST(test_limits_and_opts)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "lim", KV_KEY_ED25519, NULL);
    kv_jws_verify_opts o = KV_JWS_VERIFY_OPTS_INIT;
    char *jwk = NULL, *tok = NULL, *big;

    ck_assert_rc(ctx, kv_jwk_public(key, &jwk), KV_OK);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, (const unsigned char *)"x", 1, 0, &tok), KV_OK);
    /* a JWK padded with whitespace past the token limit but under 256 KiB */
    big = padded(jwk, 200 * 1024);
    o.max_len = strlen(tok);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, big, &o, NULL, NULL, NULL), KV_OK);
    free(big);
    big = padded(jwk, 256 * 1024);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, big, NULL, NULL, NULL, NULL), KV_ERR_BAD_INPUT);
    ck_assert_str_eq(kv_errmsg(ctx), "key set is longer than the 262144-byte limit");
    free(big);
    o.max_len = 0;
    o.size = 4;
    o.flags = 0x55;
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, &o, NULL, NULL, NULL), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "kv_jws_verify_opts: size 4 is too small"));
    o.size = sizeof(o);
    ck_assert_rc(ctx, kv_jws_verify(ctx, tok, jwk, &o, NULL, NULL, NULL), KV_ERR_INVALID_ARG);
    ck_assert_str_eq(kv_errmsg(ctx), "kv_jws_verify_opts: unknown flags 0x55");
    kv_string_free(jwk);
    kv_string_free(tok);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* A key whose policy allows none of its type's JWS algs advertises none;
 * kv_jwks refuses a key twice and a NULL first key without a crash. */
START_TEST(test_jwk_policy_and_jwks_args)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key_policy pol = KV_KEY_POLICY_INIT;
    kv_key *ec = NULL, *rsa = NULL, *ok = gen(ctx, "jargs", KV_KEY_EC_P256, NULL);
    kv_key *ok2 = gen(ctx, "jargs2", KV_KEY_ED25519, NULL);
    char name[64], name2[64], *out = NULL;

    snprintf(name, sizeof(name), "jose-nojws-ec-%ld", (long)getpid());
    pol.algs = 1u << KV_ALG_ECDSA_SHA384;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, name, KV_KEY_EC_P256, NULL, &pol, &ec), KV_OK);
    ck_assert_rc(ctx, kv_jwk_public(ec, &out), KV_ERR_POLICY);
    ck_assert_ptr_null(out);
    {
        char want[160];
        snprintf(want, sizeof(want), "key '%s': its policy allows no JWS alg (allowed: "
                 "ecdsa-sha384)", name);
        ck_assert_str_eq(kv_errmsg(ctx), want);
    }
    ck_assert_rc(ctx, kv_jws_sign(ec, NULL, NULL, (const unsigned char *)"x", 1, 0, &out),
                 KV_ERR_POLICY);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "its policy allows no JWS alg"));
    {
        kv_key *two[2] = { ok, ec };
        ck_assert_rc(ctx, kv_jwks(two, 2, &out), KV_ERR_POLICY);
        ck_assert_ptr_null(out);
    }
    snprintf(name2, sizeof(name2), "jose-nojws-rsa-%ld", (long)getpid());
    pol.algs = (1u << KV_ALG_RSA_PSS_SHA384) | (1u << KV_ALG_RSA_PKCS1_SHA512);
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, name2, KV_KEY_RSA_2048, NULL, &pol, &rsa), KV_OK);
    ck_assert_rc(ctx, kv_jwk_public(rsa, &out), KV_ERR_POLICY);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "(allowed: rsa-pss-sha384, rsa-pkcs1-sha512)"));
    /* one key twice: refused, naming both positions */
    {
        kv_key *three[3] = { ok, ok2, ok };
        ck_assert_rc(ctx, kv_jwks(three, 3, &out), KV_ERR_INVALID_ARG);
        ck_assert_ptr_null(out);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "keys 0 and 2 of the set are the same key "
                                                     "(thumbprint "));
    }
    /* a NULL first key: the error goes to the next key's context */
    {
        kv_key *nul[2] = { NULL, ok };
        ck_assert_rc(ctx, kv_jwks(nul, 2, &out), KV_ERR_INVALID_ARG);
        ck_assert_str_eq(kv_errmsg(ctx), "key 0 of the set is NULL");
    }
    kv_key_free(ec);
    kv_key_free(rsa);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name2), KV_OK);
    kv_key_free(ok);
    kv_key_free(ok2);
    kv_ctx_free(ctx);
}
END_TEST

/* What kv_jws_sign refuses. */
START_TEST(test_sign_refusals)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "sr", KV_KEY_EC_P256, NULL);
    char *tok = NULL;

    ck_assert_rc(ctx, kv_jws_sign(key, "ES384", NULL, NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "alg ES384 does not fit key"));
    ck_assert_rc(ctx, kv_jws_sign(key, "none", NULL, NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "alg 'none' is refused"));
    ck_assert_rc(ctx, kv_jws_sign(key, "HS256", NULL, NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_jws_sign(key, "ES512", NULL, NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "alg 'ES512' is not supported"));
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"jwk\":{}}", NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"alg\":\"none\"}", NULL, 0, 0, &tok),
                 KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"a\":1,\"a\":2}", NULL, 0, 0, &tok),
                 KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "duplicate member"));
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "[]", NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    /* a kid in header_json must be a non-empty string */
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"kid\":null}", NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_str_eq(kv_errmsg(ctx), "header_json's kid must be a non-empty string, not null");
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"kid\":7}", NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_str_eq(kv_errmsg(ctx), "header_json's kid must be a non-empty string, not a number");
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, "{\"kid\":\"\"}", NULL, 0, 0, &tok), KV_ERR_BAD_INPUT);
    ck_assert_str_eq(kv_errmsg(ctx), "header_json's kid must be a non-empty string, not an empty one");
    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, NULL, 0, 0x80, &tok), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(tok);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jose");
    TCase *tc = tcase_create("jose");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_b64url_strict);
    tcase_add_test(tc, test_rfc7638_thumbprint);
    tcase_add_test(tc, test_rfc7515_a3);
    tcase_add_test(tc, test_rfc8037_a4);
    tcase_add_test(tc, test_round_trip_software);
    tcase_add_test(tc, test_jwks_selects_by_kid);
    tcase_add_test(tc, test_rsa_policy_pins_jwk_alg);
    tcase_add_test(tc, test_x5c);
    tcase_add_test(tc, test_negative_corpus);
    tcase_add_test(tc, test_bad_keys);
    tcase_add_test(tc, test_sign_refusals);
    tcase_add_test(tc, test_shared_kid);
    tcase_add_test(tc, test_pem_strict);
    tcase_add_test(tc, test_limits_and_opts);
    tcase_add_test(tc, test_jwk_policy_and_jwks_args);
#ifdef KV_WITH_PKCS11
    tcase_add_test(tc, test_round_trip_pkcs11);
#endif
#ifdef KV_WITH_TPM
    tcase_add_test(tc, test_round_trip_tpm);
#endif
    suite_add_tcase(s, tc);
    return tu_run(s);
}
