/*
 * jws.c - libFuzzer target for kv_jws_verify and kv_jwt_verify: the
 * compact token and the key set (a JWK set, one JWK, or a PEM public key)
 * both come from the input.
 *
 * Input: byte 0 the call (even: kv_jws_verify, odd: kv_jwt_verify with
 * fixed opts: now 1800000000, aud "fuzz-aud", iss "fuzz-iss"), then
 * TOKEN FZ_SEP KEYS.
 * May accept: only a token signed by one of the four keys this target
 * holds (tests/fuzz/fixtures/jws: P-256, P-384, RSA-2048, Ed25519; the
 * fuzzer has no private key, so it can only reuse their signatures) when
 * the input's key set holds that key. Every accepted token is checked with
 * OpenSSL and jansson alone (jose-check.c): its signature verifies under
 * one of the four for the alg its header names, and the key set holds that
 * key. An accepted JWT's claims are checked against the opts as well: a
 * JSON object, exp a number with now < exp + 60, nbf and iat within the
 * skew, iss and aud the ones asked for.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jose-check.h"

#define NOW 1800000000LL

static kv_ctx *ctx;
static kv_key *keys[FZJ_NKEYS];
static EVP_PKEY *pks[FZJ_NKEYS];

static int claims_ok(const char *jwt)
{
    char *text = fzj_payload(jwt);
    json_t *c = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL, *v, *aud;
    size_t i;
    int ok = 0, aud_ok = 0;

    if (!json_is_object(c) || !json_is_number(v = json_object_get(c, "exp")) ||
        !((double)NOW < json_number_value(v) + 60))
        goto out;
    if ((v = json_object_get(c, "nbf")) &&
        (!json_is_number(v) || (double)NOW < json_number_value(v) - 60))
        goto out;
    if ((v = json_object_get(c, "iat")) &&
        (!json_is_number(v) || json_number_value(v) > (double)NOW + 60))
        goto out;
    if (!(v = json_object_get(c, "iss")) || !json_is_string(v) ||
        strcmp(json_string_value(v), "fuzz-iss") != 0)
        goto out;
    aud = json_object_get(c, "aud");
    if (json_is_string(aud))
        aud_ok = !strcmp(json_string_value(aud), "fuzz-aud");
    json_array_foreach (aud, i, v)
        aud_ok |= json_is_string(v) && !strcmp(json_string_value(v), "fuzz-aud");
    ok = aud_ok;
out:
    json_decref(c);
    free(text);
    return ok;
}

static void seed(const char *name, int call, const char *token, const char *keyset)
{
    size_t tl = strlen(token), kl = strlen(keyset);
    char *buf = malloc(1 + tl + 8 + kl);

    if (!buf)
        abort();
    buf[0] = (char)call;
    memcpy(buf + 1, token, tl);
    memcpy(buf + 1 + tl, FZ_SEP, 8);
    memcpy(buf + 1 + tl + 8, keyset, kl);
    fz_seed(name, buf, 1 + tl + 8 + kl);
    free(buf);
}

static void make_seeds(void)
{
    static const char *const algs[] = { "ES256", "ES384", "PS256", "RS256", "EdDSA" };
    static const int key_of[] = { 0, 1, 2, 2, 3 };
    static const unsigned char payload[] = "a payload the fuzzer verifies";
    static const char claims[] = "{\"iss\":\"fuzz-iss\",\"sub\":\"fuzz-sub\",\"aud\":\"fuzz-aud\","
                                 "\"iat\":1799999990,\"exp\":1800003600}";
    unsigned char junk[64];
    char *set = NULL, *one = NULL, *pem, *tok, *kid = NULL, name[64], hdr[256];

    if (kv_jwks(keys, FZJ_NKEYS, &set) != KV_OK || kv_jwk_thumbprint(keys[0], &kid) != KV_OK)
        abort();
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        kv_key *k = keys[key_of[i]];
        if (kv_jws_sign(k, algs[i], "{\"typ\":\"example\"}", payload, sizeof(payload) - 1, 0,
                        &tok) != KV_OK)
            abort();
        snprintf(name, sizeof(name), "jws-%s", algs[i]);
        seed(name, 0, tok, set);
        if (i == 0) {
            /* the same token against one JWK and a PEM public key, and a
             * signature byte changed */
            pem = fzj_pem(pks[0]);
            if (kv_jwk_public(k, &one) != KV_OK)
                abort();
            seed("jws-ES256-jwk", 0, tok, one);
            seed("jws-ES256-pem", 0, tok, pem);
            {
                char *s = strrchr(tok, '.') + 1;
                *s = *s == 'A' ? 'B' : 'A';
            }
            seed("bad-sig", 0, tok, set);
            seed("bad-jwt-call", 1, tok, set);
            kv_string_free(tok);
            if (kv_jws_sign(k, NULL, NULL, payload, sizeof(payload) - 1, KV_JWS_NO_KID, &tok) !=
                KV_OK)
                abort();
            seed("jws-ES256-nokid-jwk", 0, tok, one);
            seed("bad-nokid-set", 0, tok, set);
            free(pem);
        }
        kv_string_free(tok);
        if (kv_jws_sign(k, algs[i], "{\"typ\":\"JWT\"}", (const unsigned char *)claims,
                        sizeof(claims) - 1, 0, &tok) != KV_OK)
            abort();
        snprintf(name, sizeof(name), "jwt-%s", algs[i]);
        seed(name, 1, tok, set);
        kv_string_free(tok);
    }
    /* the negative corpus's shapes, with a P-256 key's kid */
    memset(junk, 0x5a, sizeof(junk));
    {
        /* name, the header before the kid, after it */
        static const char *const shapes[][3] = {
            { "bad-none", "{\"alg\":\"none\",\"kid\":\"", "\"}" },
            { "bad-hs256", "{\"alg\":\"HS256\",\"kid\":\"", "\"}" },
            { "bad-alg-es384", "{\"alg\":\"ES384\",\"kid\":\"", "\"}" },
            { "bad-jwk-header", "{\"alg\":\"ES256\",\"kid\":\"", "\",\"jwk\":{\"kty\":\"EC\"}}" },
            { "bad-crit", "{\"alg\":\"ES256\",\"kid\":\"", "\",\"crit\":[\"exp\"],\"exp\":1}" },
            { "bad-dup", "{\"alg\":\"ES256\",\"kid\":\"", "\",\"alg\":\"ES256\"}" },
            { "bad-jku", "{\"alg\":\"ES256\",\"kid\":\"", "\",\"jku\":\"https://x/\"}" },
            { "bad-kid", "{\"alg\":\"ES256\",\"kid\":\"no-such-", "\"}" },
        };
        for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
            snprintf(hdr, sizeof(hdr), "%s%s%s", shapes[i][1], kid, shapes[i][2]);
            tok = fzj_token(hdr, (const char *)payload, junk, i == 0 ? 0 : sizeof(junk));
            seed(shapes[i][0], 0, tok, set);
            free(tok);
        }
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
        tok = fzj_token(hdr, "{\"iss\":\"fuzz-iss\",\"aud\":\"fuzz-aud\",\"exp\":1}", junk,
                        sizeof(junk));
        seed("bad-jwt-expired", 1, tok, set);
        free(tok);
        tok = fzj_token(hdr, "[1,2]", junk, sizeof(junk));
        seed("bad-jwt-array", 1, tok, set);
        free(tok);
    }
    kv_string_free(one);
    kv_string_free(set);
    kv_string_free(kid);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctx = fzj_keys("jws", keys, pks);
    if (fz_seeding()) {
        make_seeds();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *t, *k;
    size_t tl, kl;
    char *token, *set, *out = NULL;
    unsigned char *payload = NULL;
    int jwt, signer = -1;
    kv_rc rc;

    if (size < 1)
        return 0;
    jwt = data[0] & 1;
    fz_split(data + 1, size - 1, &t, &tl, &k, &kl);
    token = fz_str(t, tl);
    set = fz_str(k, kl);
    if (jwt) {
        kv_jwt_verify_opts opts = KV_JWT_VERIFY_OPTS_INIT;
        opts.now = NOW;
        opts.aud = "fuzz-aud";
        opts.iss = "fuzz-iss";
        rc = kv_jwt_verify(ctx, token, set, &opts, &out);
        fz_report("kv_jwt_verify", ctx, rc);
    } else {
        kv_jws_verify_opts opts = KV_JWS_VERIFY_OPTS_INIT;
        size_t plen = 0;
        rc = kv_jws_verify(ctx, token, set, &opts, &out, &payload, &plen);
        fz_report("kv_jws_verify", ctx, rc);
        FZ_ASSERT(rc != KV_OK || (payload && strlen((char *)payload) <= plen),
                  "kv_jws_verify gave no payload, or plen short of it");
    }
    if (rc == KV_OK) {
        for (int i = 0; i < FZJ_NKEYS && signer < 0; i++)
            if (FZ_OWN_OPENSSL(fzj_sig_ok(token, pks[i])))
                signer = i;
        FZ_ASSERT(signer >= 0, "accepted a token none of the target's keys signed (OpenSSL)");
        FZ_ASSERT(FZ_OWN_OPENSSL(fzj_set_holds(set, pks[signer], NULL, NULL)),
                  "accepted a token whose signing key is not in the key set");
        FZ_ASSERT(!jwt || claims_ok(token), "kv_jwt_verify accepted claims the opts refuse");
    } else {
        FZ_ASSERT(!out && !payload, "an output set on failure");
    }
    kv_string_free(out);
    kv_string_free((char *)payload);
    free(token);
    free(set);
    return 0;
}
