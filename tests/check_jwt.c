/*
 * check_jwt.c - JWTs (jwt.c): the claims of an RFC 7523 client assertion
 * (iss = sub = client id, aud, exp - iat = ttl, a 128-bit jti unique over
 * 1000 assertions, the evidence claim and its hash, the ttl limits, the
 * header's typ), and kv_jwt_verify's claim checks (expired, not yet valid,
 * the clock-skew edges, aud as a string and as an array, iss, sub, a
 * missing exp, max_ttl, claims that are not an object), each by its rc and
 * the reason kv_errmsg gives. Tokens are signed by software keys and
 * checked against the key's own JWK through the public API.
 * Key names differ between tests, so that CK_FORK=no (valgrind) runs them in one store.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "internal.h"
#include "testutil.h"

#define NOW 1795000000LL /* 2026-11-18T...Z: a fixed clock for the claim checks */
#define AS "https://as.example/token"
#define CLIENT "device-42"

/* base64url (no padding) -> bytes, through OpenSSL's base64; NULL when
 * malformed. */
static unsigned char *unb64url(const char *in, size_t inlen, size_t *outlen)
{
    size_t pad = (4 - inlen % 4) % 4;
    char *t = calloc(1, inlen + 4);
    unsigned char *out = calloc(1, inlen + 4);
    int len;

    ck_assert(t && out);
    for (size_t i = 0; i < inlen; i++)
        t[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    memset(t + inlen, '=', pad);
    len = EVP_DecodeBlock(out, (unsigned char *)t, (int)(inlen + pad));
    free(t);
    if (len < 0 || (size_t)len < pad) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)len - pad; /* EVP_DecodeBlock counts '=' as zero bytes */
    return out;
}

/* The JSON of part (0: header, 1: payload) of a compact token. */
static json_t *token_part(const char *jwt, int part)
{
    const char *p = jwt, *end;
    unsigned char *raw;
    size_t len = 0;
    json_error_t je;
    json_t *j;

    for (int i = 0; i < part; i++) {
        p = strchr(p, '.');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    end = strchr(p, '.');
    ck_assert_ptr_nonnull(end);
    raw = unb64url(p, (size_t)(end - p), &len);
    ck_assert_ptr_nonnull(raw);
    j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(j != NULL, "token part %d is not JSON: %s", part, je.text);
    free(raw);
    return j;
}

static kv_key *soft_key(kv_ctx *ctx, const char *name, kv_key_type type)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, "software", &key), KV_OK);
    return key;
}

static char *jwk_of(kv_key *key)
{
    char *jwk = NULL;

    ck_assert_rc(NULL, kv_jwk_public(key, &jwk), KV_OK);
    return jwk;
}

/* ---- client assertion claims --------------------------------------------- */

static json_t *assertion_claims(kv_ctx *ctx, const kv_client_assertion_opts *o, long long now)
{
    char *s = NULL;
    json_t *j;

    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_jwt_assertion_claims(ctx, o, now, &s), KV_OK);
    j = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
    ck_assert_ptr_nonnull(j);
    kv_secret_free(s);
    return j;
}

static void assertion_refused(kv_ctx *ctx, const kv_client_assertion_opts *o, kv_rc want,
                              const char *reason)
{
    char *s = (char *)"untouched";

    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_jwt_assertion_claims(ctx, o, NOW, &s), want);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(kv_errmsg(ctx), reason), "reason '%s' not in '%s'", reason,
                  kv_errmsg(ctx));
}

START_TEST(assertion_claims_rfc7523)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    unsigned char *jti;
    size_t len = 0;
    json_t *c;

    o.client_id = CLIENT;
    o.aud = AS;
    c = assertion_claims(ctx, &o, NOW);
    ck_assert_str_eq(json_string_value(json_object_get(c, "iss")), CLIENT);
    ck_assert_str_eq(json_string_value(json_object_get(c, "sub")), CLIENT);
    ck_assert_str_eq(json_string_value(json_object_get(c, "aud")), AS);
    ck_assert(json_integer_value(json_object_get(c, "iat")) == NOW);
    ck_assert(json_integer_value(json_object_get(c, "exp")) == NOW + 60); /* ttl 0: 60 */
    ck_assert_ptr_null(json_object_get(c, "nbf"));
    ck_assert_ptr_null(json_object_get(c, "kv_evidence"));
    ck_assert_ptr_null(json_object_get(c, "kv_evidence_s256"));
    /* jti: 16 random bytes, base64url without padding */
    ck_assert_uint_eq(json_string_length(json_object_get(c, "jti")), 22);
    ck_assert_uint_eq(strspn(json_string_value(json_object_get(c, "jti")),
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 22);
    jti = unb64url(json_string_value(json_object_get(c, "jti")), 22, &len);
    ck_assert_ptr_nonnull(jti);
    ck_assert_uint_eq(len, 16);
    free(jti);
    ck_assert_uint_eq(json_object_size(c), 6);
    json_decref(c);

    o.ttl = 300;
    c = assertion_claims(ctx, &o, NOW);
    ck_assert(json_integer_value(json_object_get(c, "exp")) -
                  json_integer_value(json_object_get(c, "iat")) == 300);
    json_decref(c);
    o.ttl = 3600; /* the limit itself */
    c = assertion_claims(ctx, &o, NOW);
    ck_assert(json_integer_value(json_object_get(c, "exp")) == NOW + 3600);
    json_decref(c);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(assertion_limits)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    char big[2050];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    o.client_id = CLIENT;
    o.aud = AS;
    o.ttl = 3601;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "ttl 3601 s is over the 3600 s limit");
    o.ttl = 0;
    o.client_id = NULL;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "client_id must be 1 to 2048 bytes (got 0)");
    o.client_id = "";
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "client_id must be 1 to 2048 bytes (got 0)");
    o.client_id = big;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "client_id must be 1 to 2048 bytes (got 2049)");
    big[2048] = '\0';
    {
        json_t *c = assertion_claims(ctx, &o, NOW); /* 2048 bytes: the limit itself */
        ck_assert_uint_eq(json_string_length(json_object_get(c, "iss")), 2048);
        json_decref(c);
    }
    o.client_id = "dev\xff\xfe";
    assertion_refused(ctx, &o, KV_ERR_BAD_INPUT, "client_id is not valid UTF-8");
    o.client_id = CLIENT;
    o.aud = NULL;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "aud must be 1 to 2048 bytes");
    o.aud = AS;
    o.flags = 0x4;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "unknown client assertion flags 0x4");
    o.flags = KV_ASSERTION_EVIDENCE_HASH;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "KV_ASSERTION_EVIDENCE_HASH without evidence");
    o.flags = 0;
    o.size = sizeof(o) - 1;
    assertion_refused(ctx, &o, KV_ERR_INVALID_ARG, "size must be sizeof(kv_client_assertion_opts)");
    assertion_refused(ctx, NULL, KV_ERR_INVALID_ARG, "client assertion options missing");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(assertion_evidence)
{
    static const char ev[] = "{\"format\":\"keyvault-evidence-1\", \"nonce\":\"AQID\",\"n\":[1,2]}";
    kv_ctx *ctx = tu_ctx(NULL);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    unsigned char md[32], *got;
    size_t len = 0;
    json_t *c, *want = json_loads(ev, 0, NULL);

    o.client_id = CLIENT;
    o.aud = AS;
    o.evidence = ev;
    c = assertion_claims(ctx, &o, NOW);
    ck_assert(json_equal(json_object_get(c, "kv_evidence"), want));
    ck_assert_ptr_null(json_object_get(c, "kv_evidence_s256"));
    json_decref(c);

    /* the hash: SHA-256 of the bytes as given (spaces included) */
    o.flags = KV_ASSERTION_EVIDENCE_HASH;
    c = assertion_claims(ctx, &o, NOW);
    ck_assert_ptr_null(json_object_get(c, "kv_evidence"));
    ck_assert_uint_eq(json_string_length(json_object_get(c, "kv_evidence_s256")), 43);
    got = unb64url(json_string_value(json_object_get(c, "kv_evidence_s256")), 43, &len);
    ck_assert(EVP_Digest(ev, strlen(ev), md, NULL, EVP_sha256(), NULL) == 1);
    ck_assert_uint_eq(len, 32);
    ck_assert(memcmp(got, md, 32) == 0);
    free(got);
    json_decref(c);

    o.flags = 0;
    o.evidence = "[1,2]";
    assertion_refused(ctx, &o, KV_ERR_BAD_INPUT, "the evidence is not a JSON object");
    o.evidence = "{\"a\":1,\"a\":2}";
    assertion_refused(ctx, &o, KV_ERR_BAD_INPUT, "the evidence is not valid JSON: a member appears twice");
    o.evidence = "{\"a\":";
    assertion_refused(ctx, &o, KV_ERR_BAD_INPUT, "the evidence is not valid JSON: it ends early (line 1");
    json_decref(want);
    kv_ctx_free(ctx);
}
END_TEST

/* ---- claim checks ---------------------------------------------------------- */

/* kv_jwt_check_claims of claims (printf format) under o: want, and the reason. */
static void claims_are(kv_ctx *ctx, const kv_jwt_verify_opts *o, kv_rc want, const char *reason,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void claims_are(kv_ctx *ctx, const kv_jwt_verify_opts *o, kv_rc want, const char *reason,
                       const char *fmt, ...)
{
    char claims[1024];
    va_list ap;
    kv_rc rc;

    va_start(ap, fmt);
    vsnprintf(claims, sizeof(claims), fmt, ap);
    va_end(ap);
    kv_err_begin(ctx);
    rc = kv_jwt_check_claims(ctx, claims, strlen(claims), o);
    ck_assert_msg(rc == want, "%s: expected %s, got %s: %s", claims, kv_strerror(want),
                  kv_strerror(rc), kv_errmsg(ctx));
    if (reason)
        ck_assert_msg(strstr(kv_errmsg(ctx), reason), "%s: reason '%s' not in '%s'", claims,
                      reason, kv_errmsg(ctx));
    else
        ck_assert_str_eq(kv_errmsg(ctx), "");
}

START_TEST(times_and_skew)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;

    o.now = NOW;
    /* default skew 60 s: valid while now < exp + 60 */
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld}", NOW + 1);
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld}", NOW - 59);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token expired at 2026-11-18T", "{\"exp\":%lld}", NOW - 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "(now 2026-11-18T", "{\"exp\":%lld}", NOW - 3600);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "skew 60 s)", "{\"exp\":%lld}", NOW - 61);
    /* not yet valid: from nbf - 60 on */
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token not valid before", "{\"exp\":%lld,\"nbf\":%lld}",
               NOW + 600, NOW + 61);
    /* issued in the future */
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld,\"iat\":%lld}", NOW + 600, NOW + 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token issued in the future", "{\"exp\":%lld,\"iat\":%lld}",
               NOW + 600, NOW + 61);
    /* a skew of 5 s */
    o.skew = 5;
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld}", NOW - 4);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "skew 5 s", "{\"exp\":%lld}", NOW - 5);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "not valid before", "{\"exp\":%lld,\"nbf\":%lld}", NOW + 60,
               NOW + 6);
    /* no skew at all: expired at exp itself */
    o.skew = 0;
    o.flags = KV_JWT_NO_SKEW;
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld}", NOW + 1);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "skew 0 s", "{\"exp\":%lld}", NOW);
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 1, NOW);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "not valid before", "{\"exp\":%lld,\"nbf\":%lld}", NOW + 9,
               NOW + 1);
    /* fractional NumericDates count as given */
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld.5}", NOW);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token expired", "{\"exp\":%lld.5}", NOW - 1);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(exp_required_and_typed)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;

    o.now = NOW;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp missing: the token never expires", "{\"iss\":\"a\"}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp is a string, not a NumericDate", "{\"exp\":\"%lld\"}",
               NOW + 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp is null, not a NumericDate", "{\"exp\":null}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp -1 is out of range", "{\"exp\":-1}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "is out of range for a NumericDate", "{\"exp\":1e300}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp 253402300800 is out of range", "{\"exp\":253402300800}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "nbf is a boolean, not a NumericDate",
               "{\"exp\":%lld,\"nbf\":true}", NOW + 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "iat is an object", "{\"exp\":%lld,\"iat\":{}}", NOW + 60);
    o.flags = KV_JWT_ALLOW_NO_EXP;
    claims_are(ctx, &o, KV_OK, NULL, "{\"iss\":\"a\"}");
    /* max_ttl bounds the lifetime: no exp is no bound */
    o.max_ttl = 300;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp missing: the lifetime is unbounded (max_ttl 300 s)",
               "{\"iss\":\"a\"}");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(max_ttl)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;

    o.now = NOW;
    o.max_ttl = 300;
    claims_are(ctx, &o, KV_OK, NULL, "{\"iat\":%lld,\"exp\":%lld}", NOW - 10, NOW + 290);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "lifetime 301 s (exp - iat) is over max_ttl 300 s",
               "{\"iat\":%lld,\"exp\":%lld}", NOW - 10, NOW + 291);
    /* without iat: exp - now */
    claims_are(ctx, &o, KV_OK, NULL, "{\"exp\":%lld}", NOW + 300);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "lifetime 301 s (exp - now) is over max_ttl 300 s",
               "{\"exp\":%lld}", NOW + 301);
    o.max_ttl = 0; /* no limit */
    claims_are(ctx, &o, KV_OK, NULL, "{\"iat\":%lld,\"exp\":%lld}", NOW, NOW + 86400 * 365);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(aud_iss_sub)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;
    char exp[32];

    snprintf(exp, sizeof(exp), "\"exp\":%lld", NOW + 60);
    o.now = NOW;
    o.aud = AS;
    claims_are(ctx, &o, KV_OK, NULL, "{%s,\"aud\":\"%s\"}", exp, AS);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud 'https://rs.example/token' does not match '" AS "'",
               "{%s,\"aud\":\"https://rs.example/token\"}", exp);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud 'https://as.example/token/' does not match",
               "{%s,\"aud\":\"%s/\"}", exp, AS);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud missing (expected '" AS "')", "{%s}", exp);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud is a number, not a string or an array",
               "{%s,\"aud\":1}", exp);
    /* an array: one member must match */
    claims_are(ctx, &o, KV_OK, NULL, "{%s,\"aud\":[\"https://x\",\"%s\"]}", exp, AS);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "no aud of 2 ('https://x', ...) matches '" AS "'",
               "{%s,\"aud\":[\"https://x\",\"https://y\"]}", exp);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud is an empty array", "{%s,\"aud\":[]}", exp);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "aud[0] is a number, not a string",
               "{%s,\"aud\":[7,\"%s\"]}", exp, AS);
    /* a NUL inside a claim is refused with the JSON (jansson without JSON_ALLOW_NUL):
     * never compared as the expected aud cut short */
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "it holds a NUL character", "{%s,\"aud\":\"%s\\u0000x\"}", exp,
               AS);
    /* a claim quoted in a message: cut to 64 characters, each byte that is not printable
     * ASCII (the two of the UTF-8 e-acute too) and the quote as '?' */
    claims_are(ctx, &o, KV_ERR_CLAIMS,
               "aud 'x?y???z" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA...' does not match",
               "{%s,\"aud\":\"x\\ny'\\u00e9zAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
               "AAAAAAAAAAAAAAAAAAAAAA\"}", exp);
    /* no audience asked for: a token meant for one is refused (RFC 7519 4.1.3)
     * unless KV_JWT_ANY_AUD; a token without aud is fine */
    o.aud = NULL;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "the token carries an aud and no audience was given to "
               "check it against", "{%s,\"aud\":\"%s\"}", exp, AS);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "the token carries an aud", "{%s,\"aud\":[]}", exp);
    claims_are(ctx, &o, KV_OK, NULL, "{%s}", exp);
    o.flags = KV_JWT_ANY_AUD;
    claims_are(ctx, &o, KV_OK, NULL, "{%s,\"aud\":\"%s\"}", exp, AS);
    claims_are(ctx, &o, KV_OK, NULL, "{%s,\"aud\":1}", exp); /* any: not checked */
    o.flags = 0;

    o.iss = CLIENT;
    o.sub = CLIENT;
    claims_are(ctx, &o, KV_OK, NULL, "{%s,\"iss\":\"%s\",\"sub\":\"%s\"}", exp, CLIENT, CLIENT);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "iss 'device-43' does not match 'device-42'",
               "{%s,\"iss\":\"device-43\",\"sub\":\"%s\"}", exp, CLIENT);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "iss missing (expected 'device-42')", "{%s,\"sub\":\"%s\"}",
               exp, CLIENT);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "iss is an array, not a string",
               "{%s,\"iss\":[\"%s\"],\"sub\":\"%s\"}", exp, CLIENT, CLIENT);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "sub 'other' does not match 'device-42'",
               "{%s,\"iss\":\"%s\",\"sub\":\"other\"}", exp, CLIENT);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(claims_not_an_object)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;

    o.now = NOW;
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not a JSON object",
               "[{\"exp\":%lld}]", NOW + 60);
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON", "\"x\"");
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON", "%lld", NOW);
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON", "null");
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON: it ends early (line 1", "{\"exp\":");
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON: a member appears twice",
               "{\"exp\":%lld,\"exp\":%lld}", NOW + 60, NOW + 60);
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON: text follows the JSON value",
               "{\"exp\":%lld} {}", NOW + 60);
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON: it is not valid UTF-8",
               "{\"exp\":%lld,\"x\":\"\xff\"}", NOW + 60);
    claims_are(ctx, &o, KV_ERR_BAD_INPUT, "the JWT payload is not valid JSON: it ends early", "%s", "");
    kv_ctx_free(ctx);
}
END_TEST

/* ---- signed tokens, through the public API ---------------------------------- */

START_TEST(assertion_signed_and_verified)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "ec", KV_KEY_EC_P256);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    kv_jwt_verify_opts vo = KV_JWT_VERIFY_OPTS_INIT;
    char *jwt = NULL, *claims = NULL, *jwk = jwk_of(key), *kid = NULL;
    long long before = (long long)time(NULL);
    json_t *h, *c;

    o.client_id = CLIENT;
    o.aud = AS;
    o.ttl = 120;
    ck_assert_rc(ctx, kv_jwt_client_assertion(key, &o, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "ES256");
    ck_assert_rc(ctx, kv_jwk_thumbprint(key, &kid), KV_OK);
    ck_assert_str_eq(json_string_value(json_object_get(h, "kid")), kid);
    ck_assert_ptr_null(json_object_get(h, "x5c"));
    c = token_part(jwt, 1);
    ck_assert(json_integer_value(json_object_get(c, "iat")) >= before);
    ck_assert(json_integer_value(json_object_get(c, "iat")) <= (long long)time(NULL));
    ck_assert(json_integer_value(json_object_get(c, "exp")) -
                  json_integer_value(json_object_get(c, "iat")) == 120);

    vo.aud = AS;
    vo.iss = CLIENT;
    vo.sub = CLIENT;
    vo.max_ttl = 120;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, &claims), KV_OK);
    ck_assert_ptr_nonnull(claims);
    ck_assert_str_eq(kv_errmsg(ctx), "");
    {
        json_t *got = json_loads(claims, 0, NULL);
        ck_assert(json_equal(got, c));
        json_decref(got);
    }
    kv_string_free(claims);
    /* the checks run on the signed claims */
    vo.max_ttl = 119;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, &claims), KV_ERR_CLAIMS);
    ck_assert_ptr_null(claims);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "lifetime 120 s (exp - iat) is over max_ttl 119 s"));
    vo.max_ttl = 0;
    vo.aud = "https://other.example/token";
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, &claims), KV_ERR_CLAIMS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "aud '" AS "' does not match "
                                                 "'https://other.example/token'"));
    vo.aud = AS;
    vo.now = json_integer_value(json_object_get(c, "exp")) + 60;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_ERR_CLAIMS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "token expired at "));
    vo.now = json_integer_value(json_object_get(c, "exp")) + 59;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_OK);
    /* the defaults (opts NULL) check no audience, so a token that carries one
     * is refused; KV_JWT_ANY_AUD takes it, with the clock left to us */
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, NULL, NULL), KV_ERR_CLAIMS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the token carries an aud and no audience "
                                                 "was given to check it against"));
    {
        kv_jwt_verify_opts any = KV_JWT_VERIFY_OPTS_INIT;
        any.flags = KV_JWT_ANY_AUD;
        ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &any, NULL), KV_OK);
        /* a caller built before typ was appended passes the smaller size: what
         * lies beyond it is not read */
        any.size = offsetof(kv_jwt_verify_opts, typ);
        any.typ = "never-read";
        ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &any, NULL), KV_OK);
    }
    /* the size limit is the JWS layer's: a limit under the token refuses it */
    vo.now = 0;
    vo.max_len = strlen(jwt) - 1;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_ERR_BAD_INPUT);
    {
        char why[80];
        snprintf(why, sizeof(why), "token is longer than the %zu-byte limit", strlen(jwt) - 1);
        ck_assert_str_eq(kv_errmsg(ctx), why);
    }
    vo.max_len = 0;
    vo.flags = 0x80;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "unknown flags 0x80"));
    vo.flags = 0;
    vo.size = sizeof(vo) - 1;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "opts->size"));
    /* the size is checked before anything else is read: flags beyond a short
     * size are not looked at */
    vo.size = 8;
    vo.flags = 0x80;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "opts->size 8 is not"));
    vo.flags = 0;
    vo.size = sizeof(vo);
    /* a signature of another key does not verify */
    {
        kv_key *other = soft_key(ctx, "other", KV_KEY_EC_P256);
        char *ojwk = jwk_of(other), *ojwt = NULL;
        ck_assert_rc(ctx, kv_jwt_client_assertion(other, &o, &ojwt), KV_OK);
        char *okid = NULL, why[160];
        ck_assert_rc(ctx, kv_jwk_thumbprint(other, &okid), KV_OK);
        ck_assert_rc(ctx, kv_jwt_verify(ctx, ojwt, jwk, &vo, NULL), KV_ERR_BAD_INPUT);
        snprintf(why, sizeof(why), "kid '%.32s...' is not in the key set", okid);
        ck_assert_str_eq(kv_errmsg(ctx), why);
        ck_assert_rc(ctx, kv_jwt_verify(ctx, ojwt, ojwk, &vo, NULL), KV_OK);
        kv_string_free(okid);
        kv_string_free(ojwt);
        kv_string_free(ojwk);
        kv_key_free(other);
    }
    json_decref(h);
    json_decref(c);
    kv_string_free(kid);
    kv_string_free(jwk);
    kv_string_free(jwt);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(jti_unique)
{
    enum { N = 1000 };
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "ed", KV_KEY_ED25519);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    json_t *seen = json_object();

    o.client_id = CLIENT;
    o.aud = AS;
    for (int i = 0; i < N; i++) {
        char *jwt = NULL;
        json_t *c;
        const char *jti;

        ck_assert_rc(ctx, kv_jwt_client_assertion(key, &o, &jwt), KV_OK);
        c = token_part(jwt, 1);
        jti = json_string_value(json_object_get(c, "jti"));
        ck_assert_ptr_nonnull(jti);
        ck_assert_uint_eq(strlen(jti), 22); /* 128 bits */
        ck_assert_msg(json_object_get(seen, jti) == NULL, "jti %s repeated after %d", jti, i);
        json_object_set_new(seen, jti, json_true());
        json_decref(c);
        kv_string_free(jwt);
    }
    ck_assert_uint_eq(json_object_size(seen), N);
    json_decref(seen);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(jwt_sign_claims)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "rsa", KV_KEY_RSA_2048);
    char *jwt = NULL, *claims = NULL, *jwk = jwk_of(key), text[256];
    json_t *h, *c;

    snprintf(text, sizeof(text), "{ \"iss\": \"svc\", \"exp\": %lld, \"scope\": [\"a\", \"b\"] }",
             (long long)time(NULL) + 300);
    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, text, 0, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "PS256");
    ck_assert_ptr_nonnull(json_object_get(h, "kid"));
    c = token_part(jwt, 1);
    ck_assert_str_eq(json_string_value(json_object_get(c, "iss")), "svc");
    ck_assert_uint_eq(json_array_size(json_object_get(c, "scope")), 2);
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, NULL, &claims), KV_OK);
    ck_assert_ptr_null(strchr(claims, ' ')); /* written again compact */
    kv_string_free(claims);
    kv_string_free(jwt);
    json_decref(h);
    json_decref(c);

    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, text, KV_JWS_NO_KID, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_ptr_null(json_object_get(h, "kid"));
    json_decref(h);
    kv_string_free(jwt);

    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, "[1]", 0, &jwt), KV_ERR_BAD_INPUT);
    ck_assert_ptr_null(jwt);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the claims text is not a JSON object"));
    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, "{\"a\":1,\"a\":2}", 0, &jwt), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the claims text is not valid JSON: a member appears twice"));
    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, "{}", 0x40, &jwt), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "unknown flags 0x40"));
    /* an alg the key can make besides its default, and one it cannot */
    ck_assert_rc(ctx, kv_jwt_sign(key, "RS256", text, 0, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "RS256");
    ck_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    json_decref(h);
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, NULL, NULL), KV_OK);
    kv_string_free(jwt);
    ck_assert_rc(ctx, kv_jwt_sign(key, "ES256", text, 0, &jwt), KV_ERR_BAD_INPUT);
    ck_assert_ptr_null(jwt);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "alg ES256 does not fit key 'rsa'"));
    ck_assert_rc(ctx, kv_jwt_sign(key, "HS256", text, 0, &jwt), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "alg 'HS256' is refused"));
    /* a token without exp verifies only when asked to allow it */
    ck_assert_rc(ctx, kv_jwt_sign(key, NULL, "{\"iss\":\"svc\"}", 0, &jwt), KV_OK);
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, NULL, NULL), KV_ERR_CLAIMS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "exp missing"));
    {
        kv_jwt_verify_opts vo = KV_JWT_VERIFY_OPTS_INIT;
        vo.flags = KV_JWT_ALLOW_NO_EXP;
        ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, jwk, &vo, NULL), KV_OK);
    }
    kv_string_free(jwt);
    kv_string_free(jwk);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(assertion_rs256)
{
    /* an RSA key signs PS256 unless RS256 is asked for; an alg that does not fit the key
     * is refused by the JWS layer */
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "rsa-rs256", KV_KEY_RSA_2048);
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    kv_jwt_verify_opts vo = KV_JWT_VERIFY_OPTS_INIT;
    char *jwt = NULL, *pem = NULL;
    json_t *h;

    o.client_id = CLIENT;
    o.aud = AS;
    ck_assert_rc(ctx, kv_jwt_client_assertion(key, &o, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "PS256");
    json_decref(h);
    kv_string_free(jwt);
    o.alg = "RS256";
    ck_assert_rc(ctx, kv_jwt_client_assertion(key, &o, &jwt), KV_OK);
    h = token_part(jwt, 0);
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "RS256");
    ck_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    json_decref(h);
    /* a PEM public key pins RSA to PS256 or RS256: both verify */
    ck_assert_rc(ctx, kv_key_public_pem(key, &pem), KV_OK);
    vo.aud = AS;
    vo.iss = CLIENT;
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jwt, pem, &vo, NULL), KV_OK);
    kv_string_free(jwt);
    o.alg = "ES256";
    ck_assert_rc(ctx, kv_jwt_client_assertion(key, &o, &jwt), KV_ERR_BAD_INPUT);
    ck_assert_ptr_null(jwt);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "ES256"));
    kv_string_free(pem);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(signed_claims_not_an_object)
{
    /* a JWS whose payload is no JSON object is no JWT: kv_jwt_verify says so */
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "ec-p384", KV_KEY_EC_P384);
    char *jws = NULL, *jwk = jwk_of(key);

    ck_assert_rc(ctx, kv_jws_sign(key, NULL, NULL, (const unsigned char *)"[1,2]", 5, 0, &jws),
                 KV_OK);
    ck_assert_rc(ctx, kv_jwt_verify(ctx, jws, jwk, NULL, NULL), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the JWT payload is not a JSON object"));
    kv_string_free(jws);
    kv_string_free(jwk);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* RFC 8725 3.11: the header typ must be absent or JWT, or what the caller asks */
START_TEST(typ_checked)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = soft_key(ctx, "typ", KV_KEY_ED25519);
    kv_jwt_verify_opts vo = KV_JWT_VERIFY_OPTS_INIT;
    char *jwk = jwk_of(key), claims[64];
    static const struct {
        const char *header;   /* NULL: no typ */
        const char *want;     /* opts.typ */
        kv_rc rc;
        const char *why;
    } cases[] = {
        { NULL, NULL, KV_OK, NULL },
        { "{\"typ\":\"JWT\"}", NULL, KV_OK, NULL },
        { "{\"typ\":\"jwt\"}", NULL, KV_OK, NULL },
        { "{\"typ\":\"application/jwt\"}", NULL, KV_OK, NULL },
        { "{\"typ\":\"at+jwt\"}", NULL, KV_ERR_CLAIMS, "header typ 'at+jwt' is not 'JWT'" },
        { "{\"typ\":\"JWS\"}", NULL, KV_ERR_CLAIMS, "header typ 'JWS' is not 'JWT'" },
        { "{\"typ\":7}", NULL, KV_ERR_CLAIMS, "header typ is a number, not a string" },
        { "{\"typ\":\"at+jwt\"}", "at+jwt", KV_OK, NULL },
        { "{\"typ\":\"AT+JWT\"}", "at+jwt", KV_OK, NULL },
        { "{\"typ\":\"JWT\"}", "at+jwt", KV_ERR_CLAIMS, "header typ 'JWT' is not 'at+jwt'" },
        { NULL, "at+jwt", KV_ERR_CLAIMS, "header typ missing (expected 'at+jwt')" },
    };

    snprintf(claims, sizeof(claims), "{\"exp\":%lld}", (long long)time(NULL) + 300);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *jws = NULL;
        ck_assert_rc(ctx, kv_jws_sign(key, NULL, cases[i].header, (const unsigned char *)claims,
                                      strlen(claims), 0, &jws), KV_OK);
        vo.typ = cases[i].want;
        ck_assert_rc(ctx, kv_jwt_verify(ctx, jws, jwk, &vo, NULL), cases[i].rc);
        if (cases[i].why)
            ck_assert_str_eq(kv_errmsg(ctx), cases[i].why);
        kv_string_free(jws);
    }
    kv_string_free(jwk);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* Numbers in messages: %g (no "-0"), and a caller's huge now is printed, not
 * cast to time_t */
START_TEST(numbers_in_messages)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;

    o.now = NOW;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "exp -0.4 is out of range for a NumericDate",
               "{\"exp\":-0.4}");
    claims_are(ctx, &o, KV_ERR_CLAIMS, "nbf 1e+300 is out of range", "{\"exp\":%lld,\"nbf\":1e300}",
               NOW + 60);
    o.now = LLONG_MAX;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token expired at 2026-", "{\"exp\":%lld}", NOW + 60);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "(now 9.22337e+18, skew 60 s)", "{\"exp\":%lld}", NOW + 60);
    o.now = -5;
    claims_are(ctx, &o, KV_ERR_CLAIMS, "token not valid before ", "{\"exp\":%lld,\"nbf\":%lld}",
               NOW + 60, NOW);
    claims_are(ctx, &o, KV_ERR_CLAIMS, "(now -5, skew 60 s)", "{\"exp\":%lld,\"nbf\":%lld}",
               NOW + 60, NOW);
    kv_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("claims");
    TCase *tv = tcase_create("signed");

    tcase_add_test(tc, assertion_claims_rfc7523);
    tcase_add_test(tc, assertion_limits);
    tcase_add_test(tc, assertion_evidence);
    tcase_add_test(tc, times_and_skew);
    tcase_add_test(tc, exp_required_and_typed);
    tcase_add_test(tc, max_ttl);
    tcase_add_test(tc, aud_iss_sub);
    tcase_add_test(tc, claims_not_an_object);
    tcase_add_test(tc, numbers_in_messages);
    suite_add_tcase(s, tc);
    tcase_set_timeout(tv, 120);
    tcase_add_test(tv, assertion_signed_and_verified);
    tcase_add_test(tv, jti_unique);
    tcase_add_test(tv, jwt_sign_claims);
    tcase_add_test(tv, assertion_rs256);
    tcase_add_test(tv, signed_claims_not_an_object);
    tcase_add_test(tv, typ_checked);
    suite_add_tcase(s, tv);
    return tu_run(s);
}
