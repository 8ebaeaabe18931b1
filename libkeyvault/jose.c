/*
 * jose.c - JWK export (RFC 7517), thumbprints (RFC 7638) and compact JWS
 * (RFC 7515) with vault keys; verification with keys the caller trusts.
 *
 * JSON is jansson's (duplicate members refused), base64url and the crypto
 * OpenSSL's. A JWS signature is one kv_sign, so the key's policy and the
 * audit log see it as a sign. Verification never takes a key from the
 * token: the key comes from the caller's set by kid, and the key pins the
 * alg (docs/jose.md says why each rule is there).
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "internal.h"

#define JWS_MAX_DEFAULT (64 * 1024)
#define KEYS_MAX (256 * 1024)   /* the key set text, whatever the token limit */
#define JWKS_MAX_KEYS 64
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define WHY_MAX 200

/* ---- base64url (RFC 4648 section 5, no padding) ---------------------------- */

char *kv_b64url_encode(const unsigned char *in, size_t len)
{
    unsigned char *out;
    int n;

    if (len > INT_MAX / 2 || !(out = malloc(4 * ((len + 2) / 3) + 1)))
        return NULL;
    n = EVP_EncodeBlock(out, in ? in : (const unsigned char *)"", (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    out[n < 0 ? 0 : n] = '\0';
    return (char *)out;
}

static int b64u_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* The strict decoder, quiet: the reason goes to why. out gets a NUL after
 * the bytes (a payload is handed out as a string). */
static kv_rc b64u_decode_why(const char *in, size_t len, unsigned char **out, size_t *outlen,
                             char why[WHY_MAX])
{
    size_t pad = (4 - len % 4) % 4, n;
    unsigned char *tmp = NULL, *buf = NULL;
    int last, m;

    *out = NULL;
    *outlen = 0;
    if (len > INT_MAX / 2) {
        snprintf(why, WHY_MAX, "is too long");
        return KV_ERR_BAD_INPUT;
    }
    for (size_t i = 0; i < len; i++) {
        if (b64u_value(in[i]) < 0) {
            snprintf(why, WHY_MAX, "is not base64url: %s at offset %zu",
                     in[i] == '=' ? "padding '='" : "a character outside [A-Za-z0-9_-]", i);
            return KV_ERR_BAD_INPUT;
        }
    }
    if (len % 4 == 1) {
        snprintf(why, WHY_MAX, "is not base64url: %zu characters cannot encode whole bytes", len);
        return KV_ERR_BAD_INPUT;
    }
    /* the bits the last character carries beyond the last byte must be 0 */
    last = len ? b64u_value(in[len - 1]) : 0;
    if ((len % 4 == 2 && (last & 0x0f)) || (len % 4 == 3 && (last & 0x03))) {
        snprintf(why, WHY_MAX, "is not canonical base64url: its last character has unused bits set");
        return KV_ERR_BAD_INPUT;
    }
    if (!(tmp = malloc(len + pad + 1)) || !(buf = malloc(3 * ((len + pad) / 4) + 1))) {
        free(tmp);
        snprintf(why, WHY_MAX, "cannot be decoded: out of memory");
        return KV_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < len; i++)
        tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : (unsigned char)in[i];
    memset(tmp + len, '=', pad);
    m = len ? EVP_DecodeBlock(buf, tmp, (int)(len + pad)) : 0;
    free(tmp);
    if (m < 0 || (size_t)m < pad) {
        free(buf);
        snprintf(why, WHY_MAX, "is not base64url");
        return KV_ERR_BAD_INPUT;
    }
    n = (size_t)m - pad;   /* EVP_DecodeBlock counts the padding's zero bytes */
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return KV_OK;
}

kv_rc kv_b64url_decode(const kv_ctx *ctx, const char *what, const char *in, size_t len,
                       unsigned char **out, size_t *outlen)
{
    char why[WHY_MAX];
    kv_rc rc = b64u_decode_why(in, len, out, outlen, why);

    return rc == KV_OK ? KV_OK : kv_error(ctx, rc, "%s %s", what, why);
}

/* ---- JSON -------------------------------------------------------------------- */

/* Why jansson refused a text, from its error code (its message may quote
 * the text, which is never shown). */
static const char *json_why(const json_error_t *err)
{
    switch (json_error_code(err)) {
    case json_error_duplicate_key:
        return "a member appears twice (duplicate member)";
    case json_error_premature_end_of_input:
        return "it ends early";
    case json_error_end_of_input_expected:
        return "text follows the JSON value";
    case json_error_invalid_utf8:
        return "it is not valid UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "it holds a NUL character";
    case json_error_wrong_type:
        return "it is not a JSON object or array";
    default:
        return "invalid syntax";
    }
}

/* Parse len bytes as one JSON object, duplicates refused; `what` names it. */
kv_rc kv_jose_parse_object(const kv_ctx *ctx, const char *what, const char *text, size_t len,
                           json_t **out)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);

    *out = NULL;
    if (!j)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "%s is not valid JSON: %s (line %d, column %d)",
                        what, json_why(&err), err.line, err.column);
    if (!json_is_object(j)) {
        json_decref(j);
        return kv_error(ctx, KV_ERR_BAD_INPUT, "%s is not a JSON object", what);
    }
    *out = j;
    return KV_OK;
}

/* A short, printable rendering of a value taken from input, for messages. */
static const char *shown(const char *s, char buf[48])
{
    size_t i, n = 0;

    for (i = 0; s[i] && n < 32; i++)
        buf[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'') ? s[i] : '?';
    if (s[i])
        memcpy(buf + n, "...", 3), n += 3;
    buf[n] = '\0';
    return buf;
}

/* ---- algorithms ------------------------------------------------------------- */

typedef struct jws_alg {
    const char *name;
    kv_sign_alg alg;
    kv_family family;
    kv_key_type ec_type;  /* the one curve an ES alg takes */
    size_t field_len;     /* EC coordinate bytes */
} jws_alg;

static const jws_alg jws_algs[] = {
    { "ES256", KV_ALG_ECDSA_SHA256, KV_FAMILY_EC, KV_KEY_EC_P256, 32 },
    { "ES384", KV_ALG_ECDSA_SHA384, KV_FAMILY_EC, KV_KEY_EC_P384, 48 },
    { "PS256", KV_ALG_RSA_PSS_SHA256, KV_FAMILY_RSA, KV_KEY_UNKNOWN, 0 },
    { "RS256", KV_ALG_RSA_PKCS1_SHA256, KV_FAMILY_RSA, KV_KEY_UNKNOWN, 0 },
    { "EdDSA", KV_ALG_ED25519, KV_FAMILY_ED25519, KV_KEY_UNKNOWN, 0 },
};

/* The table entry for an alg name, or KV_ERR_BAD_INPUT naming why not:
 * none and HS* are refused outright, anything else is not supported. */
static kv_rc jws_alg_get(const kv_ctx *ctx, const char *name, const jws_alg **out)
{
    char buf[48];

    *out = NULL;
    for (size_t i = 0; i < sizeof(jws_algs) / sizeof(jws_algs[0]); i++) {
        if (strcmp(name, jws_algs[i].name) == 0) {
            *out = &jws_algs[i];
            return KV_OK;
        }
    }
    if (strcasecmp(name, "none") == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "alg '%s' is refused: an unsigned token proves nothing", shown(name, buf));
    if (strncasecmp(name, "HS", 2) == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "alg '%s' is refused: HMAC needs a shared secret, and keys here are "
                        "public keys", shown(name, buf));
    return kv_error(ctx, KV_ERR_BAD_INPUT,
                    "alg '%s' is not supported (ES256, ES384, PS256, RS256, EdDSA are)",
                    shown(name, buf));
}

/* The alg kv_jws_sign uses by default for a key. *pinned: whether it is the
 * only JWS alg the key may use, so that its JWK names it. An EC or Ed25519
 * key has one alg. An RSA key signs PS256 and RS256 alike unless its policy
 * (kv_key_policy.algs) allows only one of them: then that one is its default
 * and its JWK pins it; otherwise its JWK carries no alg, so that verifiers
 * take either, and PS256 is the default. */
static const jws_alg *jws_alg_default(const kv_key *key, bool *pinned)
{
    uint32_t algs = key->policy ? key->policy->algs : 0;
    bool ps = !algs || (algs & (1u << KV_ALG_RSA_PSS_SHA256));
    bool rs = !algs || (algs & (1u << KV_ALG_RSA_PKCS1_SHA256));

    *pinned = true;
    switch (key->type) {
    case KV_KEY_EC_P256:
        return &jws_algs[0];
    case KV_KEY_EC_P384:
        return &jws_algs[1];
    case KV_KEY_RSA_2048:
    case KV_KEY_RSA_3072:
        *pinned = !(ps && rs);
        return rs && !ps ? &jws_algs[3] : &jws_algs[2];
    case KV_KEY_ED25519:
        return &jws_algs[4];
    default:
        return NULL;
    }
}

/* The key's default JWS alg, or an error when no alg fits its type or its
 * policy (kv_key_policy.algs) allows none of the JWS algs its type takes:
 * such a key must not advertise an alg it may not sign with. */
static kv_rc jws_alg_of_key(const kv_key *key, const jws_alg **out, bool *pinned)
{
    uint32_t algs = key->policy ? key->policy->algs : 0;
    const char *name = key->name ? key->name : "(unnamed)";
    char allowed[160] = "";
    size_t n = 0;

    *out = jws_alg_default(key, pinned);
    if (!*out)
        return kv_error(key->ctx, KV_ERR_WRONG_KEY_TYPE, "key '%s' is %s: no JWS algorithm fits "
                        "it", name, kv_key_type_name(key->type));
    if (!algs || (algs & (1u << (*out)->alg)))
        return KV_OK;
    for (int i = 0; i < 32 && n < sizeof(allowed) - 40; i++) {
        if (algs & (1u << i))
            n += (size_t)snprintf(allowed + n, sizeof(allowed) - n, "%s%s", n ? ", " : "",
                                  kv_sign_alg_name((kv_sign_alg)i) ? kv_sign_alg_name((kv_sign_alg)i)
                                                                   : "?");
    }
    *out = NULL;
    return kv_error(key->ctx, KV_ERR_POLICY, "key '%s': its policy allows no JWS alg (allowed: "
                    "%s)", name, allowed);
}

/* ---- JWK of a public key ------------------------------------------------------ */

static int set_b64u(json_t *obj, const char *name, const unsigned char *data, size_t len)
{
    char *s = kv_b64url_encode(data, len);
    int r = s ? json_object_set_new(obj, name, json_string(s)) : -1;

    free(s);
    return r;
}

static int set_bn(json_t *obj, const char *name, const EVP_PKEY *pkey, const char *param,
                  size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n = -1;

    if (EVP_PKEY_get_bn_param(pkey, param, &bn) == 1 && (size_t)BN_num_bytes(bn) <= sizeof(buf))
        n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    return n < 0 ? -1 : set_b64u(obj, name, buf, (size_t)n);
}

/* The JWK members RFC 7638 requires for a public key, in the order a JWK
 * shows them (the thumbprint sorts them). */
static kv_rc jwk_required(const kv_ctx *ctx, const EVP_PKEY *pkey, json_t **out)
{
    json_t *j = json_object();
    kv_key_type type = kv_type_of_pkey(pkey);
    const kv_type_desc *t = kv_type_desc_get(type);
    kv_family fam = kv_family_of_pkey(pkey);
    unsigned char raw[32];
    size_t rawlen = sizeof(raw);
    int bad = !j;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!bad && fam == KV_FAMILY_EC) {
        if (!t || t->family != KV_FAMILY_EC)
            KV_FAIL(ctx, rc, KV_ERR_WRONG_KEY_TYPE, "EC key is not on P-256 or P-384");
        bad = json_object_set_new(j, "kty", json_string("EC")) ||
              json_object_set_new(j, "crv",
                                  json_string(type == KV_KEY_EC_P256 ? "P-256" : "P-384")) ||
              set_bn(j, "x", pkey, OSSL_PKEY_PARAM_EC_PUB_X, t->field_len) ||
              set_bn(j, "y", pkey, OSSL_PKEY_PARAM_EC_PUB_Y, t->field_len);
    } else if (!bad && fam == KV_FAMILY_RSA) {
        bad = json_object_set_new(j, "kty", json_string("RSA")) ||
              set_bn(j, "n", pkey, OSSL_PKEY_PARAM_RSA_N, 0) ||
              set_bn(j, "e", pkey, OSSL_PKEY_PARAM_RSA_E, 0);
    } else if (!bad && fam == KV_FAMILY_ED25519) {
        bad = EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) != 1 ||
              json_object_set_new(j, "kty", json_string("OKP")) ||
              json_object_set_new(j, "crv", json_string("Ed25519")) ||
              set_b64u(j, "x", raw, rawlen);
    } else if (!bad) {
        KV_FAIL(ctx, rc, KV_ERR_WRONG_KEY_TYPE, "a JWK holds EC, RSA or Ed25519 keys only");
    }
    if (bad)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot build the JWK");
    *out = j;
    j = NULL;
out:
    kv_ossl_drop();
    json_decref(j);
    return rc;
}

/* RFC 7638: base64url SHA-256 of the required members, sorted, compact. */
static kv_rc jwk_thumb(const kv_ctx *ctx, const json_t *req, char **kid)
{
    char *text = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    EVP_MD *sha256 = EVP_MD_fetch(ctx ? ctx->libctx : NULL, "SHA256", NULL);
    unsigned char md[32];
    kv_rc rc = KV_OK;

    *kid = NULL;
    if (!text)
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    else if (!sha256 || EVP_Digest(text, strlen(text), md, NULL, sha256, NULL) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "SHA-256 of the JWK failed");
    else if (!(*kid = kv_b64url_encode(md, sizeof(md))))
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    EVP_MD_free(sha256);
    free(text);
    return rc;
}

static kv_rc pkey_thumbprint(const kv_ctx *ctx, const EVP_PKEY *pkey, char **kid)
{
    json_t *req = NULL;
    kv_rc rc = jwk_required(ctx, pkey, &req);

    if (rc == KV_OK)
        rc = jwk_thumb(ctx, req, kid);
    json_decref(req);
    return rc;
}

/* The key's public JWK: required members, kid, alg, use. */
static kv_rc key_jwk(kv_key *key, json_t **out)
{
    kv_ctx *ctx = key->ctx;
    bool pinned;
    const jws_alg *a = NULL;
    json_t *j = NULL;
    char *kid = NULL;
    kv_rc rc;

    *out = NULL;
    KV_CHECK(rc, jws_alg_of_key(key, &a, &pinned));
    KV_CHECK(rc, jwk_required(ctx, key->pub, &j));
    KV_CHECK(rc, jwk_thumb(ctx, j, &kid));
    if (json_object_set_new(j, "kid", json_string(kid)) ||
        (pinned && json_object_set_new(j, "alg", json_string(a->name))) ||
        json_object_set_new(j, "use", json_string("sig")))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    *out = j;
    j = NULL;
out:
    free(kid);
    json_decref(j);
    return rc;
}

static kv_rc dump_out(const kv_ctx *ctx, json_t *j, char **out)
{
    *out = json_dumps(j, JSON_COMPACT);
    return *out ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

kv_rc kv_jwk_public(kv_key *key, char **json)
{
    json_t *j = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(key->ctx);
    *json = NULL;
    rc = key_jwk(key, &j);
    if (rc == KV_OK)
        rc = dump_out(key->ctx, j, json);
    json_decref(j);
    return rc;
}

kv_rc kv_jwk_thumbprint(kv_key *key, char **kid)
{
    KV_CALL_BEGIN(key->ctx);
    *kid = NULL;
    return pkey_thumbprint(key->ctx, key->pub, kid);
}

kv_rc kv_jwks(kv_key *const *keys, size_t n, char **json)
{
    const kv_ctx *ctx = NULL;
    json_t *set = NULL, *arr = NULL, *one = NULL;
    kv_rc rc = KV_OK;

    /* errors go to the first key's context; with no key there is none
     * (kv_errmsg(NULL) then) */
    for (size_t i = 0; i < n && !ctx; i++)
        ctx = keys[i] ? keys[i]->ctx : NULL;
    KV_CALL_BEGIN(ctx);
    *json = NULL;
    if (n == 0 || n > JWKS_MAX_KEYS)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "a JWK set holds 1 to %d keys, not %zu",
                        JWKS_MAX_KEYS, n);
    if (!(set = json_object()) || !(arr = json_array()) ||
        json_object_set(set, "keys", arr) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!keys[i])
            KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key %zu of the set is NULL", i);
        KV_CHECK(rc, key_jwk(keys[i], &one));
        if (json_array_append_new(arr, one) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        /* RFC 7517 4.5: a set must not hold one key twice (same thumbprint) */
        for (size_t j = 0; j < i; j++) {
            if (json_equal(json_object_get(one, "kid"),
                           json_object_get(json_array_get(arr, j), "kid")))
                KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "keys %zu and %zu of the set are the same "
                        "key (thumbprint %s)", j, i,
                        json_string_value(json_object_get(one, "kid")));
        }
    }
    rc = dump_out(ctx, set, json);
out:
    json_decref(arr);
    json_decref(set);
    return rc;
}

/* ---- signing ------------------------------------------------------------------ */

/* Header members that hand the verifier a key or an extension: refused in
 * what we sign and in what we verify. */
static const char *const refused_members[] = { "jwk", "jku", "x5u", "crit" };

static kv_rc refuse_members(const kv_ctx *ctx, const json_t *hdr)
{
    for (size_t i = 0; i < sizeof(refused_members) / sizeof(refused_members[0]); i++) {
        if (!json_object_get(hdr, refused_members[i]))
            continue;
        if (strcmp(refused_members[i], "crit") == 0)
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "header member 'crit' is refused: no JWS extension is understood");
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "header member '%s' is refused: keys come only from the caller's key "
                        "set", refused_members[i]);
    }
    return KV_OK;
}

/* The stored chain as x5c: standard base64 (with padding) of each DER
 * certificate, leaf first (RFC 7515 section 4.1.6). */
static kv_rc x5c_of(kv_key *key, json_t **out)
{
    STACK_OF(X509) *chain = NULL;
    json_t *arr = json_array();
    unsigned char *der = NULL, *b64 = NULL;
    kv_rc rc = KV_OK;
    int n;

    *out = NULL;
    if (!arr)
        return kv_error(key->ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_chain_get(key, &chain));
    for (int i = 0; i < sk_X509_num(chain); i++) {
        if ((n = i2d_X509(sk_X509_value(chain, i), &der)) <= 0)
            KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot encode certificate %d of the chain",
                         i + 1);
        if (!(b64 = malloc(4 * (((size_t)n + 2) / 3) + 1)))
            KV_FAIL(key->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        EVP_EncodeBlock(b64, der, n);
        if (json_array_append_new(arr, json_string((const char *)b64)) != 0)
            KV_FAIL(key->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        OPENSSL_free(der);
        free(b64);
        der = NULL;
        b64 = NULL;
    }
    *out = arr;
    arr = NULL;
out:
    OPENSSL_free(der);
    free(b64);
    json_decref(arr);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* The protected header: alg first, the caller's members, kid, x5c. */
static kv_rc sign_header(kv_key *key, const jws_alg *a, const char *header_json, unsigned flags,
                         json_t **out)
{
    kv_ctx *ctx = key->ctx;
    json_t *hdr = json_object(), *extra = NULL, *x5c = NULL, *v;
    const char *name;
    char *kid = NULL;
    char buf[48];
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!hdr || json_object_set_new(hdr, "alg", json_string(a->name)) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (header_json) {
        KV_CHECK(rc, kv_jose_parse_object(ctx, "header_json", header_json, strlen(header_json),
                                          &extra));
        KV_CHECK(rc, refuse_members(ctx, extra));
        v = json_object_get(extra, "alg");
        if (v && (!json_is_string(v) || strcmp(json_string_value(v), a->name) != 0))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "header_json's alg '%s' is not the alg signed with (%s)",
                    json_is_string(v) ? shown(json_string_value(v), buf) : "(not a string)",
                    a->name);
        v = json_object_get(extra, "kid");
        if (v && (!json_is_string(v) || json_string_length(v) == 0))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "header_json's kid must be a non-empty string, "
                    "not %s", json_is_string(v) ? "an empty one" : json_is_null(v) ? "null"
                    : json_is_number(v) ? "a number" : "another JSON type");
        json_object_foreach(extra, name, v) {
            if (strcmp(name, "alg") != 0 && json_object_set(hdr, name, v) != 0)
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        }
    }
    if (!(flags & KV_JWS_NO_KID) && !json_object_get(hdr, "kid")) {
        KV_CHECK(rc, pkey_thumbprint(ctx, key->pub, &kid));
        if (json_object_set_new(hdr, "kid", json_string(kid)) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    if (flags & KV_JWS_X5C) {
        KV_CHECK(rc, x5c_of(key, &x5c));
        if (json_object_set_new(hdr, "x5c", x5c) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    *out = hdr;
    hdr = NULL;
out:
    free(kid);
    json_decref(extra);
    json_decref(hdr);
    return rc;
}

kv_rc kv_jws_sign(kv_key *key, const char *alg, const char *header_json,
                  const unsigned char *payload, size_t len, unsigned flags, char **jws)
{
    kv_ctx *ctx = key->ctx;
    const jws_alg *a = NULL;
    json_t *hdr = NULL;
    char *htext = NULL, *h64 = NULL, *p64 = NULL, *s64 = NULL, *input = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    bool pinned;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *jws = NULL;
    if (!payload && len)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "payload is NULL with length %zu", len);
    if (flags & ~(KV_JWS_X5C | KV_JWS_NO_KID))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown JWS flags 0x%x",
                        flags & ~(KV_JWS_X5C | KV_JWS_NO_KID));
    if (len > INT_MAX / 4)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "payload of %zu bytes is too large", len);
    if (alg) {
        KV_CHECK(rc, jws_alg_get(ctx, alg, &a));
    } else {
        KV_CHECK(rc, jws_alg_of_key(key, &a, &pinned));
    }
    if (kv_family_of_pkey(key->pub) != a->family ||
        (a->family == KV_FAMILY_EC && key->type != a->ec_type))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "alg %s does not fit key '%s' (%s)", a->name,
                key->name ? key->name : "(unnamed)", kv_key_type_name(key->type));
    KV_CHECK(rc, sign_header(key, a, header_json, flags, &hdr));
    KV_CHECK(rc, dump_out(ctx, hdr, &htext));
    if (!(h64 = kv_b64url_encode((const unsigned char *)htext, strlen(htext))) ||
        !(p64 = kv_b64url_encode(payload, len)) ||
        !(input = kv_asprintf("%s.%s", h64, p64)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_sign(key, a->alg, a->family == KV_FAMILY_EC ? KV_SIGN_RAW : 0,
                         (const unsigned char *)input, strlen(input), NULL, &siglen));
    if (!(sig = malloc(siglen)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_sign(key, a->alg, a->family == KV_FAMILY_EC ? KV_SIGN_RAW : 0,
                         (const unsigned char *)input, strlen(input), sig, &siglen));
    if (!(s64 = kv_b64url_encode(sig, siglen)) || !(*jws = kv_asprintf("%s.%s", input, s64)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    json_decref(hdr);
    free(htext);
    free(h64);
    free(p64);
    free(s64);
    free(input);
    free(sig);
    return rc;
}

/* ---- verification keys ---------------------------------------------------------- */

/* One key of the caller's set. A JWK that cannot be used stays in the set
 * with the reason, shown when the token's kid selects it. */
typedef struct vkey {
    EVP_PKEY *pkey;       /* NULL: unusable, see why */
    char *kid;            /* its kid, or its thumbprint when it has none */
    const jws_alg *pinned;/* the JWK's alg; NULL: any alg its type allows */
    kv_family family;
    kv_key_type ec_type;  /* EC: KV_KEY_EC_P256 or KV_KEY_EC_P384 */
    kv_rc why_rc;
    char why[WHY_MAX];
} vkey;

typedef struct keyset {
    vkey *k;
    size_t n;
} keyset;

static void keyset_free(keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->k[i].pkey);
        free(ks->k[i].kid);
    }
    free(ks->k);
}

static kv_rc vkey_unusable(vkey *k, kv_rc rc, const char *fmt, ...) KV_PRINTF(3, 4);
static kv_rc vkey_unusable(vkey *k, kv_rc rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(k->why, sizeof(k->why), fmt, ap);
    va_end(ap);
    k->why_rc = rc;
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
    kv_ossl_drop();
    return rc;
}

/* A base64url JWK member, strictly decoded (quiet: the reason goes to k). */
static kv_rc jwk_b64u(vkey *k, const json_t *jwk, const char *member, unsigned char **out,
                      size_t *len)
{
    const json_t *v = json_object_get(jwk, member);
    char why[WHY_MAX];
    kv_rc rc;

    *out = NULL;
    if (!json_is_string(v))
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK member '%s' is missing or not a string",
                             member);
    rc = b64u_decode_why(json_string_value(v), json_string_length(v), out, len, why);
    return rc == KV_OK ? KV_OK : vkey_unusable(k, rc, "JWK member '%s' %s", member, why);
}

/* Build a public key from OSSL_PARAMs (EVP_PKEY_fromdata). An EC point is
 * checked with EVP_PKEY_public_check_quick: on the curve and not the point
 * at infinity, which on P-256 and P-384 (cofactor 1) is membership of the
 * prime-order group. RSA's full check (SP 800-56B, a primality test of n)
 * costs about 20 ms a key; jwk_rsa makes the checks that matter here. */
static kv_rc pkey_fromdata(vkey *k, OSSL_LIB_CTX *libctx, const char *type, OSSL_PARAM_BLD *bld,
                           const char *what)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(libctx, type, NULL);
    EVP_PKEY_CTX *cctx = NULL;
    kv_rc rc = KV_OK;

    if (!params || !pctx || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &k->pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK %s is not a valid public key (%s)", what,
                           ERR_reason_error_string(ERR_peek_last_error()) ?
                               ERR_reason_error_string(ERR_peek_last_error()) : "refused");
    else if (strcmp(type, "EC") == 0 &&
             (!(cctx = EVP_PKEY_CTX_new_from_pkey(libctx, k->pkey, NULL)) ||
              EVP_PKEY_public_check_quick(cctx) != 1))
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK %s is not on the curve", what);
    EVP_PKEY_CTX_free(cctx);
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    kv_ossl_drop();
    return rc;
}

static kv_rc jwk_ec(vkey *k, OSSL_LIB_CTX *libctx, const json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    unsigned char *x = NULL, *y = NULL, point[1 + 2 * 48];
    size_t xlen = 0, ylen = 0, field;
    OSSL_PARAM_BLD *bld = NULL;
    char buf[48];
    kv_rc rc;

    if (!crv)
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "EC JWK has no crv");
    if (strcmp(crv, "P-256") == 0)
        k->ec_type = KV_KEY_EC_P256;
    else if (strcmp(crv, "P-384") == 0)
        k->ec_type = KV_KEY_EC_P384;
    else
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "EC JWK curve '%s' is not supported "
                             "(P-256 and P-384 are)", shown(crv, buf));
    field = kv_type_desc_get(k->ec_type)->field_len;
    KV_CHECK(rc, jwk_b64u(k, jwk, "x", &x, &xlen));
    KV_CHECK(rc, jwk_b64u(k, jwk, "y", &y, &ylen));
    if (xlen != field || ylen != field) {
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "EC JWK on %s needs x and y of %zu bytes each, "
                           "has %zu and %zu", crv, field, xlen, ylen);
        goto out;
    }
    point[0] = 0x04;
    memcpy(point + 1, x, field);
    memcpy(point + 1 + field, y, field);
    if (!(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                         kv_type_desc_get(k->ec_type)->group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * field)) {
        rc = vkey_unusable(k, KV_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    rc = pkey_fromdata(k, libctx, "EC", bld, "EC point");
out:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return rc;
}

static kv_rc jwk_rsa(vkey *k, OSSL_LIB_CTX *libctx, const json_t *jwk)
{
    unsigned char *n = NULL, *e = NULL;
    size_t nlen = 0, elen = 0;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    int bits;
    kv_rc rc;

    KV_CHECK(rc, jwk_b64u(k, jwk, "n", &n, &nlen));
    KV_CHECK(rc, jwk_b64u(k, jwk, "e", &e, &elen));
    if (nlen == 0 || n[0] == 0 || elen == 0 || e[0] == 0 || elen > 8) {
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "RSA JWK %s is empty or has leading zero bytes%s",
                           nlen == 0 || n[0] == 0 ? "n" : "e", elen > 8 ? " or is over 8 bytes" : "");
        goto out;
    }
    bits = (int)nlen * 8;
    for (unsigned char c = n[0]; !(c & 0x80); c <<= 1)
        bits--;
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "RSA JWK has a %d-bit modulus; %d to %d bits are "
                           "accepted", bits, RSA_MIN_BITS, RSA_MAX_BITS);
        goto out;
    }
    if (!(bn = BN_bin2bn(n, (int)nlen, NULL)) || !(be = BN_bin2bn(e, (int)elen, NULL))) {
        rc = vkey_unusable(k, KV_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    if (!BN_is_odd(bn) || !BN_is_odd(be) || BN_is_one(be)) {
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "RSA JWK %s is even or 1: not an RSA public key",
                           BN_is_odd(bn) ? "e" : "n");
        goto out;
    }
    if (!(bld = OSSL_PARAM_BLD_new()) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be)) {
        rc = vkey_unusable(k, KV_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    rc = pkey_fromdata(k, libctx, "RSA", bld, "RSA key");
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return rc;
}

static kv_rc jwk_okp(vkey *k, OSSL_LIB_CTX *libctx, const json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    unsigned char *x = NULL;
    size_t xlen = 0;
    char buf[48];
    kv_rc rc;

    if (!crv || strcmp(crv, "Ed25519") != 0)
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "OKP JWK curve '%s' is not supported "
                             "(Ed25519 is)", crv ? shown(crv, buf) : "(none)");
    KV_CHECK(rc, jwk_b64u(k, jwk, "x", &x, &xlen));
    if (xlen != 32) {
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "Ed25519 JWK x has %zu bytes, not 32", xlen);
        goto out;
    }
    if (!(k->pkey = EVP_PKEY_new_raw_public_key_ex(libctx, "ED25519", NULL, x, xlen)))
        rc = vkey_unusable(k, KV_ERR_BAD_INPUT, "Ed25519 JWK x is not a public key");
out:
    free(x);
    return rc;
}

/* Whether key k takes alg a: the JWK's alg exactly, else the type's algs. */
static bool vkey_allows(const vkey *k, const jws_alg *a)
{
    if (k->pinned)
        return a == k->pinned;
    return a->family == k->family && (a->family != KV_FAMILY_EC || a->ec_type == k->ec_type);
}

static const char *vkey_type(const vkey *k)
{
    switch (k->family) {
    case KV_FAMILY_EC:
        return k->ec_type == KV_KEY_EC_P256 ? "EC P-256" : "EC P-384";
    case KV_FAMILY_RSA:
        return "RSA";
    case KV_FAMILY_ED25519:
        return "Ed25519";
    default:
        return "unknown";
    }
}

/* One JWK into k: usable (k->pkey set) or not (k->why). Only running out
 * of memory fails the call. */
static kv_rc jwk_import(const kv_ctx *ctx, const json_t *jwk, vkey *k)
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    static const char *const private_members[] = { "d", "p", "q", "dp", "dq", "qi", "oth", "k" };
    const char *kty, *use, *alg;
    const json_t *v;
    char buf[48];
    kv_rc rc = KV_OK;

    if (!json_is_object(jwk))
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK is not a JSON object"), KV_OK;
    v = json_object_get(jwk, "kid");
    if (v && !json_is_string(v))
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK kid is not a string"), KV_OK;
    if (v && !(k->kid = kv_strdup(json_string_value(v))))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++) {
        if (json_object_get(jwk, private_members[i]))
            return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK holds private or secret key member "
                                 "'%s': a verifier takes public keys only", private_members[i]),
                   KV_OK;
    }
    use = json_string_value(json_object_get(jwk, "use"));
    if (json_object_get(jwk, "use") && (!use || strcmp(use, "sig") != 0))
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK use '%s' is not 'sig'",
                             use ? shown(use, buf) : "(not a string)"), KV_OK;
    kty = json_string_value(json_object_get(jwk, "kty"));
    if (!kty)
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK has no kty"), KV_OK;
    if (strcmp(kty, "EC") == 0) {
        k->family = KV_FAMILY_EC;
        rc = jwk_ec(k, libctx, jwk);
    } else if (strcmp(kty, "RSA") == 0) {
        k->family = KV_FAMILY_RSA;
        rc = jwk_rsa(k, libctx, jwk);
    } else if (strcmp(kty, "OKP") == 0) {
        k->family = KV_FAMILY_ED25519;
        rc = jwk_okp(k, libctx, jwk);
    } else {
        return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK kty '%s' is not supported (EC, RSA and "
                             "OKP are)", shown(kty, buf)), KV_OK;
    }
    if (rc == KV_ERR_NO_MEMORY)
        return kv_error(ctx, rc, "out of memory");
    if (rc != KV_OK)
        return KV_OK;
    v = json_object_get(jwk, "alg");
    if (v) {
        alg = json_string_value(v);
        for (size_t i = 0; alg && i < sizeof(jws_algs) / sizeof(jws_algs[0]); i++)
            if (strcmp(alg, jws_algs[i].name) == 0)
                k->pinned = &jws_algs[i];
        if (!k->pinned || !vkey_allows(&(vkey){ .family = k->family, .ec_type = k->ec_type },
                                       k->pinned))
            return vkey_unusable(k, KV_ERR_BAD_INPUT, "JWK alg '%s' does not fit its %s key",
                                 alg ? shown(alg, buf) : "(not a string)", vkey_type(k)), KV_OK;
    }
    if (!k->kid)
        return pkey_thumbprint(ctx, k->pkey, &k->kid);
    return KV_OK;
}

/* A PEM public key as the one key of a set: exactly one "PUBLIC KEY"
 * block (text starts with it), no PEM headers, only whitespace after it,
 * canonical DER inside; an EC key must name its curve. */
static kv_rc pem_import(const kv_ctx *ctx, const char *text, size_t len, vkey *k)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    char *name = NULL, *header = NULL, rest[64];
    unsigned char *der = NULL;
    long derlen = 0;
    int got;
    kv_key_type type;
    kv_rc rc = KV_OK;

    if (!bio)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (PEM_read_bio(bio, &name, &header, &der, &derlen) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "the key set is not a valid PEM block");
    if (strcmp(name, "PUBLIC KEY") != 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key set's PEM block is '%.32s', not 'PUBLIC KEY'",
                name);
    if (header && *header)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key set's PEM block has headers");
    while ((got = BIO_read(bio, rest, sizeof(rest))) > 0) {
        for (int i = 0; i < got; i++) {
            if (rest[i] != ' ' && rest[i] != '\n' && rest[i] != '\r' && rest[i] != '\t')
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key set holds more than the one PEM "
                        "'PUBLIC KEY' block (%s follows it)",
                        rest[i] == '-' ? "another PEM block" : "text");
        }
    }
    KV_CHECK(rc, kv_pubkey_decode(ctx, der, (size_t)derlen, &k->pkey));
    k->family = kv_family_of_pkey(k->pkey);
    type = kv_type_of_pkey(k->pkey);
    if (k->family == KV_FAMILY_EC && !kv_pkey_named_curve(k->pkey))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the PEM EC key has explicit curve parameters; a "
                "named curve (P-256, P-384) is required");
    if (k->family == KV_FAMILY_EC && (type == KV_KEY_EC_P256 || type == KV_KEY_EC_P384))
        k->ec_type = type;
    else if (k->family == KV_FAMILY_EC || k->family == KV_FAMILY_NONE)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the PEM public key is not P-256, P-384, RSA or "
                "Ed25519");
    if (k->family == KV_FAMILY_RSA && (EVP_PKEY_get_bits(k->pkey) < RSA_MIN_BITS ||
                                       EVP_PKEY_get_bits(k->pkey) > RSA_MAX_BITS))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the PEM RSA key has a %d-bit modulus; %d to %d bits "
                "are accepted", EVP_PKEY_get_bits(k->pkey), RSA_MIN_BITS, RSA_MAX_BITS);
    rc = pkey_thumbprint(ctx, k->pkey, &k->kid);
out:
    kv_ossl_drop();
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return rc;
}

/* The caller's key text: a JWK set, one JWK, or a PEM public key. */
static kv_rc keyset_load(const kv_ctx *ctx, const char *text, size_t len, keyset *ks)
{
    json_t *doc = NULL, *arr;
    kv_rc rc;

    ks->k = NULL;
    ks->n = 0;
    while (len && (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t'))
        text++, len--;
    if (len >= 11 && memcmp(text, "-----BEGIN ", 11) == 0) {
        if (!(ks->k = calloc(1, sizeof(vkey))))
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        ks->n = 1;
        return pem_import(ctx, text, len, &ks->k[0]);
    }
    KV_CHECK(rc, kv_jose_parse_object(ctx, "the key set", text, len, &doc));
    arr = json_object_get(doc, "keys");
    if (arr) {
        if (!json_is_array(arr) || json_array_size(arr) == 0 ||
            json_array_size(arr) > JWKS_MAX_KEYS)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the JWK set's keys is not an array of 1 to %d "
                    "JWKs", JWKS_MAX_KEYS);
    } else if (!json_object_get(doc, "kty")) {
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key set is neither a JWK set (keys) nor a JWK "
                "(kty) nor a PEM public key");
    }
    ks->n = arr ? json_array_size(arr) : 1;
    if (!(ks->k = calloc(ks->n, sizeof(vkey)))) {
        ks->n = 0;
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < ks->n; i++)
        KV_CHECK(rc, jwk_import(ctx, arr ? json_array_get(arr, i) : doc, &ks->k[i]));
out:
    json_decref(doc);
    return rc;
}

/* Why key k does not take alg a. */
static kv_rc alg_refused(const kv_ctx *ctx, const vkey *k, const jws_alg *a)
{
    char buf[48];

    return kv_error(ctx, KV_ERR_BAD_INPUT, "alg %s is not allowed for key '%s' (%s, allows %s)",
                    a->name, shown(k->kid, buf), vkey_type(k),
                    k->pinned ? k->pinned->name
                    : k->family == KV_FAMILY_RSA ? "PS256 or RS256"
                    : k->family == KV_FAMILY_ED25519 ? "EdDSA"
                    : k->ec_type == KV_KEY_EC_P256 ? "ES256" : "ES384");
}

/* The key the token's kid (NULL: none) selects for alg a. RFC 7517 4.5
 * lets keys of a set share a kid (keys of different kty, a "use":"enc"
 * key beside a signing key): of the keys with that kid, only those usable
 * for alg a count, and more than one of them is refused (keys are never
 * tried in turn). */
static kv_rc keyset_select(const kv_ctx *ctx, const keyset *ks, const char *kid,
                           const jws_alg *a, const vkey **out)
{
    const vkey *found = NULL, *named = NULL;
    size_t hits = 0, fits = 0, usable = 0;
    char buf[48];

    *out = NULL;
    for (size_t i = 0; i < ks->n; i++) {
        const vkey *k = &ks->k[i];

        usable += k->pkey != NULL;
        if (!kid || !k->kid || strcmp(k->kid, kid) != 0)
            continue;
        hits++;
        if (k->pkey && vkey_allows(k, a)) {
            found = k;
            fits++;
        } else if (!named || (!named->pkey && k->pkey)) {
            named = k;    /* the reason shown: a usable key's alg before an unusable key's */
        }
    }
    if (kid && hits == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "kid '%s' is not in the key set", shown(kid, buf));
    if (kid && fits > 1)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "kid '%s' names %zu keys of the key set that take "
                        "alg %s", shown(kid, buf), fits, a->name);
    if (kid && fits == 0 && named->pkey)
        return alg_refused(ctx, named, a);
    if (kid && fits == 0)
        return kv_error(ctx, named->why_rc, "key '%s': %s", shown(kid, buf), named->why);
    if (!kid && ks->n == 1 && !ks->k[0].pkey)
        return kv_error(ctx, ks->k[0].why_rc, "the key: %s", ks->k[0].why);
    if (!kid && usable != 1)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "the token has no kid and the key set holds %zu "
                        "usable keys (a token without kid needs exactly one)", usable);
    for (size_t i = 0; !kid && i < ks->n; i++)
        found = ks->k[i].pkey ? &ks->k[i] : found;
    if (!vkey_allows(found, a))
        return alg_refused(ctx, found, a);
    *out = found;
    return KV_OK;
}

/* ---- verifying ------------------------------------------------------------------ */

/* Check sig over input with key k and alg a. */
static kv_rc jws_check_sig(kv_ctx *ctx, const vkey *k, const jws_alg *a, const char *input,
                           size_t inlen, const unsigned char *sig, size_t siglen)
{
    const kv_alg_desc *d = kv_alg_desc_get(a->alg);
    unsigned char md[EVP_MAX_MD_SIZE], *der = NULL;
    size_t mdlen = 0, derlen = 0, want = 0;
    kv_rc rc;

    if (a->family == KV_FAMILY_EC)
        want = 2 * a->field_len;
    else if (a->family == KV_FAMILY_RSA)
        want = (size_t)EVP_PKEY_get_size(k->pkey);
    else
        want = 64;
    if (siglen != want)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE, "%s signature must be %zu bytes, has %zu",
                a->name, want, siglen);
    if (a->family == KV_FAMILY_ED25519) {
        rc = kv_verify_pkey(ctx, ctx ? ctx->libctx : NULL, k->pkey, d,
                            (const unsigned char *)input, inlen, sig, siglen);
        goto out;
    }
    KV_CHECK(rc, kv_digest(ctx, d, (const unsigned char *)input, inlen, md, &mdlen));
    if (a->family == KV_FAMILY_EC) {
        KV_CHECK(rc, kv_ecdsa_raw_to_der(ctx, sig, siglen, &der, &derlen));
        sig = der;
        siglen = derlen;
    }
    rc = kv_verify_pkey(ctx, ctx ? ctx->libctx : NULL, k->pkey, d, md, mdlen, sig, siglen);
out:
    OPENSSL_free(der);
    return rc;
}

kv_rc kv_jws_verify(kv_ctx *ctx, const char *jws, const char *keys,
                    const kv_jws_verify_opts *opts, char **header_json, unsigned char **payload,
                    size_t *plen)
{
    size_t max = JWS_MAX_DEFAULT, len, klen, parts = 1, hlen = 0, bodylen = 0, siglen = 0;
    const char *dot1, *dot2;
    unsigned char *htext = NULL, *body = NULL, *sig = NULL;
    json_t *hdr = NULL;
    const json_t *v;
    const jws_alg *a = NULL;
    const vkey *k = NULL;
    const char *kid = NULL;
    keyset ks = { NULL, 0 };
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    if (header_json)
        *header_json = NULL;
    if (payload)
        *payload = NULL;
    if (plen)
        *plen = 0;
    if (opts && opts->size < sizeof(*opts))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_jws_verify_opts: size %zu is too small "
                        "(sizeof(kv_jws_verify_opts) is %zu)", opts->size, sizeof(*opts));
    if (opts && opts->flags != 0)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_jws_verify_opts: unknown flags 0x%x",
                        opts->flags);
    if (opts && opts->max_len)
        max = opts->max_len < INT_MAX / 2 ? opts->max_len : INT_MAX / 2;
    if ((len = strnlen(jws, max + 1)) > max)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "token is longer than the %zu-byte limit", max);
    if ((klen = strnlen(keys, KEYS_MAX + 1)) > KEYS_MAX)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "key set is longer than the %d-byte limit",
                        KEYS_MAX);
    for (size_t i = 0; i < len; i++)
        parts += jws[i] == '.';
    if (parts != 3)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "token has %zu parts; a compact JWS has 3", parts);
    dot1 = strchr(jws, '.');
    dot2 = strchr(dot1 + 1, '.');
    KV_CHECK(rc, kv_b64url_decode(ctx, "header", jws, (size_t)(dot1 - jws), &htext, &hlen));
    KV_CHECK(rc, kv_b64url_decode(ctx, "payload", dot1 + 1, (size_t)(dot2 - dot1 - 1), &body,
                                  &bodylen));
    KV_CHECK(rc, kv_b64url_decode(ctx, "signature", dot2 + 1, len - (size_t)(dot2 + 1 - jws), &sig,
                                  &siglen));
    KV_CHECK(rc, kv_jose_parse_object(ctx, "header", (const char *)htext, hlen, &hdr));
    KV_CHECK(rc, refuse_members(ctx, hdr));
    v = json_object_get(hdr, "alg");
    if (!json_is_string(v))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "header alg is %s", v ? "not a string" : "missing");
    KV_CHECK(rc, jws_alg_get(ctx, json_string_value(v), &a));
    v = json_object_get(hdr, "kid");
    if (v && !json_is_string(v))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "header kid is not a string");
    kid = json_string_value(v);
    KV_CHECK(rc, keyset_load(ctx, keys, klen, &ks));
    KV_CHECK(rc, keyset_select(ctx, &ks, kid, a, &k));
    KV_CHECK(rc, jws_check_sig(ctx, k, a, jws, (size_t)(dot2 - jws), sig, siglen));
    if (header_json)
        KV_CHECK(rc, dump_out(ctx, hdr, header_json));
    if (payload) {
        *payload = body;
        body = NULL;
    }
    if (plen)
        *plen = bodylen;
out:
    keyset_free(&ks);
    json_decref(hdr);
    free(htext);
    free(body);
    free(sig);
    return rc;
}

kv_rc kv_jose_jwk_thumbprint(const kv_ctx *ctx, const char *jwk, size_t len, char **kid)
{
    json_t *doc = NULL;
    vkey k;
    kv_rc rc;

    memset(&k, 0, sizeof(k));
    *kid = NULL;
    KV_CHECK(rc, kv_jose_parse_object(ctx, "the JWK", jwk, len, &doc));
    KV_CHECK(rc, jwk_import(ctx, doc, &k));
    if (!k.pkey)
        KV_FAIL(ctx, rc, k.why_rc, "%s", k.why);
    rc = pkey_thumbprint(ctx, k.pkey, kid);
out:
    EVP_PKEY_free(k.pkey);
    free(k.kid);
    json_decref(doc);
    return rc;
}
