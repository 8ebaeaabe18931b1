/*
 * jwt.c - JSON Web Tokens (RFC 7519) on the compact JWS of jose.c:
 * kv_jwt_sign, RFC 7523 client assertions (private_key_jwt) and the claim
 * checks of kv_jwt_verify (exp, nbf, iat, aud, iss, sub, lifetime).
 *
 * The signature and the key set are jose.c's business (kv_jws_sign,
 * kv_jws_verify); this file only builds and checks claims, with jansson.
 * Messages quote parsed claim values cut short and stripped of anything
 * unprintable, never the token's text.
 */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "internal.h"

#define JWT_TTL_DEFAULT 60u
#define JWT_TTL_MAX 3600u
#define JWT_SKEW_DEFAULT 60u
#define JWT_JTI_BYTES 16
#define JWT_ID_MAX 2048                 /* bytes of a client id or audience URL */
#define JWT_DATE_MAX 253402300799.0     /* 9999-12-31T23:59:59Z */
#define JWT_SHOW_MAX 64                 /* characters of a claim value quoted in a message */

static const char jwt_header[] = "{\"typ\":\"JWT\"}";

/* A value quoted in a message: at most JWT_SHOW_MAX printable ASCII
 * characters, anything else as '?', "..." when cut. */
static const char *shown(const char *s, char buf[JWT_SHOW_MAX + 4])
{
    size_t i = 0;

    for (; s[i] && i < JWT_SHOW_MAX; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' ? s[i] : '?';
    if (s[i])
        memcpy(buf + i, "...", 3), i += 3;
    buf[i] = '\0';
    return buf;
}

/* A number from a claim or the caller, for a message: whole numbers in
 * full (253402300800), others with %g (-0.4, 1e+300; never "-0"). */
static const char *num(double t, char buf[32])
{
    if (t == 0)
        snprintf(buf, 32, "0");
    else if (t == floor(t) && fabs(t) < 1e17)
        snprintf(buf, 32, "%.0f", t);
    else
        snprintf(buf, 32, "%g", t);
    return buf;
}

/* A NumericDate as ISO 8601 UTC ("2026-11-26T21:00:00Z"); a time outside
 * 0 to year 9999 (a caller's opts.now may be anything) as the number. */
static const char *iso(double t, char buf[32])
{
    struct tm tm;
    time_t tt;

    if (!(t >= 0 && t <= JWT_DATE_MAX))
        return num(t, buf);
    tt = (time_t)t; /* t >= 0: truncation is floor */
    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return num(t, buf);
    return buf;
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "of no known type";
}

/* A caller's string as a JSON string: 1 to JWT_ID_MAX bytes of UTF-8. */
static kv_rc id_string(const kv_ctx *ctx, const char *what, const char *s, json_t **out)
{
    size_t len = s ? strlen(s) : 0;

    *out = NULL;
    if (len == 0 || len > JWT_ID_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "%s must be 1 to %d bytes (got %zu)", what,
                        JWT_ID_MAX, len);
    if (!(*out = json_stringn(s, len)))
        return kv_error(ctx, KV_ERR_BAD_INPUT, "%s is not valid UTF-8", what);
    return KV_OK;
}

/* The evidence claim: the evidence object itself ("kv_evidence") or the
 * base64url SHA-256 of its bytes as given ("kv_evidence_s256"). */
static kv_rc evidence_claim(const kv_ctx *ctx, json_t *claims, const char *evidence, bool hash)
{
    EVP_MD *sha256 = NULL;
    unsigned char md[32];
    json_t *ev = NULL;
    char *s = NULL;
    kv_rc rc = KV_OK;

    if (hash) {
        if (!(sha256 = EVP_MD_fetch(ctx ? ctx->libctx : NULL, "SHA256", NULL)) ||
            EVP_Digest(evidence, strlen(evidence), md, NULL, sha256, NULL) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 of the evidence failed");
        if (!(s = kv_b64url_encode(md, sizeof(md))) || !(ev = json_string(s)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the evidence claim");
        if (json_object_set_new(claims, "kv_evidence_s256", ev) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the evidence claim");
        ev = NULL;
        goto out;
    }
    KV_CHECK(rc, kv_jose_parse_object(ctx, "the evidence", evidence, strlen(evidence), &ev));
    if (json_object_set(claims, "kv_evidence", ev) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the evidence claim");
out:
    EVP_MD_free(sha256);
    json_decref(ev);
    free(s);
    return rc;
}

kv_rc kv_jwt_assertion_claims(const kv_ctx *ctx, const kv_client_assertion_opts *opts,
                              long long now, char **out)
{
    kv_client_assertion_opts o = KV_CLIENT_ASSERTION_OPTS_INIT;
    unsigned char jti[JWT_JTI_BYTES];
    json_t *claims = NULL, *iss = NULL, *aud = NULL;
    char *jtis = NULL;
    unsigned ttl;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!opts || opts->size < sizeof(o))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "client assertion options missing or too small "
                "(size must be sizeof(kv_client_assertion_opts))");
    memcpy(&o, opts, sizeof(o));
    if (o.flags & ~(KV_JWS_X5C | KV_ASSERTION_EVIDENCE_HASH))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "unknown client assertion flags 0x%x",
                o.flags & ~(KV_JWS_X5C | KV_ASSERTION_EVIDENCE_HASH));
    if ((o.flags & KV_ASSERTION_EVIDENCE_HASH) && !o.evidence)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "KV_ASSERTION_EVIDENCE_HASH without evidence");
    ttl = o.ttl ? o.ttl : JWT_TTL_DEFAULT;
    if (ttl > JWT_TTL_MAX)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "client assertion ttl %u s is over the %u s limit",
                ttl, JWT_TTL_MAX);
    KV_CHECK(rc, id_string(ctx, "client_id", o.client_id, &iss));
    KV_CHECK(rc, id_string(ctx, "aud", o.aud, &aud));
    if (RAND_bytes(jti, sizeof(jti)) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "RAND_bytes for the jti failed");
    if (!(jtis = kv_b64url_encode(jti, sizeof(jti))))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the jti");
    /* RFC 7523 3: iss = sub = the client id, aud = the token endpoint */
    if (!(claims = json_pack("{s:O, s:O, s:O, s:I, s:I, s:s}", "iss", iss, "sub", iss, "aud", aud,
                             "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jtis)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the claims");
    if (o.evidence)
        KV_CHECK(rc, evidence_claim(ctx, claims, o.evidence, o.flags & KV_ASSERTION_EVIDENCE_HASH));
    if (!(*out = json_dumps(claims, JSON_COMPACT)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the claims");
out:
    json_decref(claims);
    json_decref(iss);
    json_decref(aud);
    free(jtis);
    return rc;
}

/* The claims as given, checked to be a JSON object and written compact. */
static kv_rc claims_compact(const kv_ctx *ctx, const char *claims_json, char **out)
{
    json_t *c = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    KV_CHECK(rc, kv_jose_parse_object(ctx, "the claims text", claims_json, strlen(claims_json), &c));
    if (!(*out = json_dumps(c, JSON_COMPACT)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory for the claims");
out:
    json_decref(c);
    return rc;
}

kv_rc kv_jwt_sign(kv_key *key, const char *alg, const char *claims_json, unsigned flags,
                  char **jwt)
{
    char *payload = NULL;
    kv_rc rc;

    *jwt = NULL;
    KV_CALL_BEGIN(key->ctx);
    if (flags & ~(KV_JWS_X5C | KV_JWS_NO_KID))
        return kv_error(key->ctx, KV_ERR_INVALID_ARG, "kv_jwt_sign: unknown flags 0x%x",
                        flags & ~(KV_JWS_X5C | KV_JWS_NO_KID));
    KV_CHECK(rc, claims_compact(key->ctx, claims_json, &payload));
    rc = kv_jws_sign(key, alg, jwt_header, (const unsigned char *)payload, strlen(payload), flags,
                     jwt);
out:
    kv_secret_free(payload);
    return rc;
}

kv_rc kv_jwt_client_assertion(kv_key *key, const kv_client_assertion_opts *opts, char **jwt)
{
    char *payload = NULL;
    kv_rc rc;

    *jwt = NULL;
    KV_CALL_BEGIN(key->ctx);
    KV_CHECK(rc, kv_jwt_assertion_claims(key->ctx, opts, (long long)time(NULL), &payload));
    rc = kv_jws_sign(key, opts->alg, jwt_header, (const unsigned char *)payload, strlen(payload),
                     opts->flags & KV_JWS_X5C, jwt);
out:
    kv_secret_free(payload);
    return rc;
}

/* A NumericDate claim (RFC 7519 2): a JSON number from 0 to year 9999.
 * *present false when the claim is absent. */
static kv_rc numeric_date(const kv_ctx *ctx, const json_t *claims, const char *name,
                          bool *present, double *t)
{
    const json_t *v = json_object_get(claims, name);
    char buf[32];

    *present = v != NULL;
    *t = 0;
    if (!v)
        return KV_OK;
    if (!json_is_number(v))
        return kv_error(ctx, KV_ERR_CLAIMS, "%s is %s, not a NumericDate", name,
                        json_type_name(v));
    *t = json_number_value(v);
    if (!isfinite(*t) || *t < 0 || *t > JWT_DATE_MAX)
        return kv_error(ctx, KV_ERR_CLAIMS, "%s %s is out of range for a NumericDate", name,
                        num(*t, buf));
    return KV_OK;
}

/* A string claim that must equal want. */
static kv_rc string_claim(const kv_ctx *ctx, const json_t *claims, const char *name,
                          const char *want)
{
    const json_t *v = json_object_get(claims, name);
    char a[JWT_SHOW_MAX + 4], b[JWT_SHOW_MAX + 4];

    if (!v)
        return kv_error(ctx, KV_ERR_CLAIMS, "%s missing (expected '%s')", name, shown(want, b));
    if (!json_is_string(v))
        return kv_error(ctx, KV_ERR_CLAIMS, "%s is %s, not a string", name, json_type_name(v));
    if (strlen(want) != json_string_length(v) || memcmp(json_string_value(v), want, strlen(want)))
        return kv_error(ctx, KV_ERR_CLAIMS, "%s '%s' does not match '%s'", name,
                        shown(json_string_value(v), a), shown(want, b));
    return KV_OK;
}

/* aud: a string, or an array of strings one of which is want (RFC 7519 4.1.3). */
static kv_rc aud_claim(const kv_ctx *ctx, const json_t *claims, const char *want)
{
    const json_t *v = json_object_get(claims, "aud"), *e;
    char a[JWT_SHOW_MAX + 4], b[JWT_SHOW_MAX + 4];
    size_t i;

    if (!v || json_is_string(v))
        return string_claim(ctx, claims, "aud", want);
    if (!json_is_array(v))
        return kv_error(ctx, KV_ERR_CLAIMS, "aud is %s, not a string or an array",
                        json_type_name(v));
    json_array_foreach(v, i, e) {
        if (!json_is_string(e))
            return kv_error(ctx, KV_ERR_CLAIMS, "aud[%zu] is %s, not a string", i,
                            json_type_name(e));
        if (json_string_length(e) == strlen(want) && !memcmp(json_string_value(e), want, strlen(want)))
            return KV_OK;
    }
    if (json_array_size(v) == 0)
        return kv_error(ctx, KV_ERR_CLAIMS, "aud is an empty array (expected '%s')",
                        shown(want, b));
    return kv_error(ctx, KV_ERR_CLAIMS, "no aud of %zu ('%s'%s) matches '%s'", json_array_size(v),
                    shown(json_string_value(json_array_get(v, 0)), a),
                    json_array_size(v) > 1 ? ", ..." : "", shown(want, b));
}

kv_rc kv_jwt_check_claims(const kv_ctx *ctx, const char *payload, size_t len,
                          const kv_jwt_verify_opts *o)
{
    char t1[32], t2[32];
    double exp, nbf, iat, now = o->now ? (double)o->now : (double)time(NULL);
    double skew = (o->flags & KV_JWT_NO_SKEW) ? 0 : o->skew ? o->skew : JWT_SKEW_DEFAULT;
    bool has_exp, has_nbf, has_iat;
    json_t *c = NULL;
    kv_rc rc = KV_OK;

    KV_CHECK(rc, kv_jose_parse_object(ctx, "the JWT payload", payload, len, &c));
    KV_CHECK(rc, numeric_date(ctx, c, "exp", &has_exp, &exp));
    KV_CHECK(rc, numeric_date(ctx, c, "nbf", &has_nbf, &nbf));
    KV_CHECK(rc, numeric_date(ctx, c, "iat", &has_iat, &iat));
    if (!has_exp && !(o->flags & KV_JWT_ALLOW_NO_EXP))
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "exp missing: the token never expires");
    /* valid while now < exp + skew (RFC 7519 4.1.4), from nbf - skew on */
    if (has_exp && now >= exp + skew)
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "token expired at %s (now %s, skew %.0f s)", iso(exp, t1),
                iso(now, t2), skew);
    if (has_nbf && now + skew < nbf)
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "token not valid before %s (now %s, skew %.0f s)",
                iso(nbf, t1), iso(now, t2), skew);
    if (has_iat && now + skew < iat)
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "token issued in the future, at %s (now %s, skew %.0f s)",
                iso(iat, t1), iso(now, t2), skew);
    if (o->max_ttl) {
        if (!has_exp)
            KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "exp missing: the lifetime is unbounded (max_ttl %u s)",
                    o->max_ttl);
        if (exp - (has_iat ? iat : now) > o->max_ttl)
            KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "lifetime %.0f s (exp - %s) is over max_ttl %u s",
                    exp - (has_iat ? iat : now), has_iat ? "iat" : "now", o->max_ttl);
    }
    if (o->aud)
        KV_CHECK(rc, aud_claim(ctx, c, o->aud));
    else if (json_object_get(c, "aud") && !(o->flags & KV_JWT_ANY_AUD))
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "the token carries an aud and no audience was given to "
                "check it against (RFC 7519 4.1.3; KV_JWT_ANY_AUD accepts any)");
    if (o->iss)
        KV_CHECK(rc, string_claim(ctx, c, "iss", o->iss));
    if (o->sub)
        KV_CHECK(rc, string_claim(ctx, c, "sub", o->sub));
out:
    json_decref(c);
    return rc;
}

/* The header's typ (RFC 8725 3.11): want NULL takes it absent or JWT
 * (RFC 7519 5.1, case-insensitive, also "application/jwt"); else typ must
 * be want, case-insensitive (RFC 7515 4.1.9). */
static kv_rc typ_check(const kv_ctx *ctx, const char *header_json, const char *want)
{
    const json_t *v;
    const char *typ;
    json_t *h = NULL;
    char a[JWT_SHOW_MAX + 4], b[JWT_SHOW_MAX + 4];
    kv_rc rc = KV_OK;

    KV_CHECK(rc, kv_jose_parse_object(ctx, "the header", header_json, strlen(header_json), &h));
    v = json_object_get(h, "typ");
    if (!v && !want)
        goto out;
    if (v && !json_is_string(v))
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "header typ is %s, not a string", json_type_name(v));
    typ = v ? json_string_value(v) : NULL;
    if (!want && (strcasecmp(typ, "JWT") == 0 || strcasecmp(typ, "application/jwt") == 0))
        goto out;
    if (want && typ && strcasecmp(typ, want) == 0)
        goto out;
    if (!typ)
        KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "header typ missing (expected '%s')", shown(want, b));
    KV_FAIL(ctx, rc, KV_ERR_CLAIMS, "header typ '%s' is not '%s'", shown(typ, a),
            want ? shown(want, b) : "JWT");
out:
    json_decref(h);
    return rc;
}

kv_rc kv_jwt_verify(kv_ctx *ctx, const char *jwt, const char *keys,
                    const kv_jwt_verify_opts *opts, char **claims_json)
{
    kv_jwt_verify_opts o = KV_JWT_VERIFY_OPTS_INIT;
    kv_jws_verify_opts jo = KV_JWS_VERIFY_OPTS_INIT;
    unsigned char *payload = NULL;
    char *header = NULL;
    size_t plen = 0;
    kv_rc rc;

    if (claims_json)
        *claims_json = NULL;
    KV_CALL_BEGIN(ctx);
    if (opts) {
        /* size first: a caller built before typ was added passes the smaller size */
        if (opts->size != sizeof(o) && opts->size != offsetof(kv_jwt_verify_opts, typ))
            return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_jwt_verify: opts->size %zu is not "
                            "sizeof(kv_jwt_verify_opts)", opts->size);
        memcpy(&o, opts, opts->size);
    }
    if (o.flags & ~(KV_JWT_NO_SKEW | KV_JWT_ALLOW_NO_EXP | KV_JWT_ANY_AUD))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_jwt_verify: unknown flags 0x%x",
                        o.flags & ~(KV_JWT_NO_SKEW | KV_JWT_ALLOW_NO_EXP | KV_JWT_ANY_AUD));
    jo.max_len = o.max_len;
    KV_CHECK(rc, kv_jws_verify(ctx, jwt, keys, &jo, &header, &payload, &plen));
    KV_CHECK(rc, typ_check(ctx, header, o.typ));
    KV_CHECK(rc, kv_jwt_check_claims(ctx, (const char *)payload, plen, &o));
    if (claims_json) {
        *claims_json = (char *)payload;
        payload = NULL;
    }
out:
    kv_string_free(header);
    kv_string_free((char *)payload);
    return rc;
}
