/*
 * jwk.c - libFuzzer target for the key-set parser behind kv_jws_verify:
 * JWK sets, single JWKs and PEM public keys, against fixed valid tokens.
 *
 * Input: byte 0 the token (modulo 10: the five algs ES256, ES384, PS256,
 * RS256, EdDSA, each with kid and without), then the key set text.
 * The tokens are signed at start-up by the four keys saved with the seeds
 * (tests/fuzz/fixtures/jwk: P-256, P-384, RSA-2048, Ed25519).
 * May accept: a token only when the set holds the key that signed it.
 * Every acceptance is checked with OpenSSL and jansson alone
 * (jose-check.c): some JWK of the set (or PEM block) is that public key
 * by EVP_PKEY_eq, and its alg and kid, where it has them, are the token's.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "jose-check.h"

#define NTOK 10

static const char *const algs[] = { "ES256", "ES384", "PS256", "RS256", "EdDSA" };
static const int key_of[] = { 0, 1, 2, 2, 3 };

static kv_ctx *ctx;
static kv_key *keys[FZJ_NKEYS];
static EVP_PKEY *pks[FZJ_NKEYS];
static char *tokens[NTOK], *kids[FZJ_NKEYS];

static void make_seeds(void)
{
    char *set = NULL, *one = NULL, *pem, name[64];
    kv_key *two[2] = { keys[1], keys[0] };

    if (kv_jwks(keys, FZJ_NKEYS, &set) != KV_OK)
        abort();
    fz_seed1("set-all", 0, set, strlen(set));
    kv_string_free(set);
    if (kv_jwks(two, 2, &set) != KV_OK)
        abort();
    fz_seed1("set-p384-p256", 0, set, strlen(set));
    for (int i = 0; i < NTOK; i++) {
        int k = key_of[i % 5];
        if (kv_jwk_public(keys[k], &one) != KV_OK)
            abort();
        pem = fzj_pem(pks[k]);
        snprintf(name, sizeof(name), "jwk-%s%s", algs[i % 5], i < 5 ? "" : "-nokid");
        fz_seed1(name, i, one, strlen(one));
        snprintf(name, sizeof(name), "pem-%s%s", algs[i % 5], i < 5 ? "" : "-nokid");
        fz_seed1(name, i, pem, strlen(pem));
        kv_string_free(one);
        free(pem);
    }
    /* broken: the wrong key, a private member, an x cut short, HMAC, a
     * JWK alg the token does not use, a kid that is not the token's */
    fz_seed1("bad-wrong-key", 4, set, strlen(set));
    kv_string_free(set);
    {
        static const char *const bad[] = {
            "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",
            "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}",
            "{\"keys\":[]}",
            "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
             "-----END PUBLIC KEY-----\n"),
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            snprintf(name, sizeof(name), "bad-%02zu", i);
            fz_seed1(name, 5, bad[i], strlen(bad[i]));
        }
    }
    if (kv_jwk_public(keys[2], &one) != KV_OK)
        abort();
    {
        /* RSA's JWK with alg RS256 given a PS256 token; with a private d */
        const char *tail = strrchr(one, '}');
        size_t n = (size_t)(tail - one);
        char buf[4096];
        snprintf(buf, sizeof(buf), "%.*s,\"alg\":\"RS256\"}", (int)n, one);
        fz_seed1("bad-rsa-alg-pinned", 2, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "%.*s,\"d\":\"AQAB\"}", (int)n, one);
        fz_seed1("bad-rsa-private", 2, buf, strlen(buf));
    }
    kv_string_free(one);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const unsigned char payload[] = "a payload the key sets verify";

    (void)argc;
    (void)argv;
    ctx = fzj_keys("jwk", keys, pks);
    for (int i = 0; i < FZJ_NKEYS; i++)
        if (kv_jwk_thumbprint(keys[i], &kids[i]) != KV_OK)
            abort();
    for (int i = 0; i < NTOK; i++)
        if (kv_jws_sign(keys[key_of[i % 5]], algs[i % 5], NULL, payload, sizeof(payload) - 1,
                        i < 5 ? 0 : KV_JWS_NO_KID, &tokens[i]) != KV_OK)
            abort();
    if (fz_seeding()) {
        make_seeds();
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_jws_verify_opts opts = KV_JWS_VERIFY_OPTS_INIT;
    char *set;
    int t, k;
    kv_rc rc;

    if (size < 1)
        return 0;
    t = data[0] % NTOK;
    k = key_of[t % 5];
    set = fz_str(data + 1, size - 1);
    rc = kv_jws_verify(ctx, tokens[t], set, &opts, NULL, NULL, NULL);
    fz_report("kv_jws_verify", ctx, rc);
    if (rc == KV_OK) {
        FZ_ASSERT(FZ_OWN_OPENSSL(fzj_sig_ok(tokens[t], pks[k])), "the fixed token does not verify (OpenSSL)");
        FZ_ASSERT(FZ_OWN_OPENSSL(fzj_set_holds(set, pks[k], algs[t % 5], t < 5 ? kids[k] : NULL)),
                  "kv_jws_verify accepted a key set without the token's key");
    }
    free(set);
    return 0;
}
