/*
 * check_api.c - the public API against one backend: generate, open, list,
 * destroy, sign, verify, ECDH, bad input, threads and fork.
 *
 * The backend is $KV_TEST_BACKEND (default "software") with the
 * configuration $KV_TEST_CONF (default: a private software store). The same
 * tests run against every backend the harness can start.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/conf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "testutil.h"

static const char *backend(void)
{
    const char *b = getenv("KV_TEST_BACKEND");
    return b && *b ? b : "software";
}

/* Slow backends (a TPM: milliseconds per command, more under sanitizers)
 * set KV_TEST_SLOW: loops then run a tenth of their iterations. */
static int scaled(int n)
{
    const char *v = getenv("KV_TEST_SLOW");
    return v && *v == '1' ? (n + 9) / 10 : n;
}

/* Backends without Ed25519 (a TPM 2.0) set KV_TEST_NO_ED25519. */
static int has_ed25519(void)
{
    const char *v = getenv("KV_TEST_NO_ED25519");
    return !(v && *v == '1');
}

/* Backends without ECDH (tpm2-pkcs11 1.9) set KV_TEST_NO_ECDH to the
 * reason: ECDH must then fail as unsupported, after the peer checks. */
static const char *no_ecdh(void)
{
    const char *v = getenv("KV_TEST_NO_ECDH");
    return v && *v ? v : NULL;
}

/* Backends whose module cannot serve a forked child beside its parent
 * (tpm2-pkcs11 1.9) set KV_TEST_NO_FORK to the reason: the child then only
 * exits, and the parent must still work. */
static const char *no_fork(void)
{
    const char *v = getenv("KV_TEST_NO_FORK");
    return v && *v ? v : NULL;
}

static kv_ctx *new_ctx(void)
{
    const char *conf = getenv("KV_TEST_CONF");
    kv_ctx *ctx = NULL;

    if (!conf || !*conf)
        return tu_ctx(NULL);
    ck_assert_msg(kv_ctx_new(&ctx, conf) == KV_OK, "kv_ctx_new(%s): %s", conf, kv_errmsg(NULL));
    return ctx;
}

/* Key names unique to this test process: a token may be shared. */
static const char *kname(const char *base)
{
    static char buf[8][64];
    static int i;
    char *b = buf[i++ % 8];

    snprintf(b, 64, "%s-%ld", base, (long)getpid());
    return b;
}

static kv_key *gen(kv_ctx *ctx, const char *name, kv_key_type type)
{
    kv_key *key = NULL;
    kv_rc rc = kv_key_generate(ctx, name, type, backend(), &key);

    ck_assert_msg(rc == KV_OK, "generate %s %s: %s: %s", kv_key_type_name(type), name,
                  kv_strerror(rc), kv_errmsg(ctx));
    return key;
}

static size_t pub_der(kv_ctx *ctx, kv_key *key, unsigned char *buf, size_t len)
{
    ck_assert_rc(ctx, kv_key_public_der(key, buf, &len), KV_OK);
    return len;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_pub_pem(kv_ctx *ctx, kv_key *key, const char *path)
{
    char *pem = NULL;
    ck_assert_rc(ctx, kv_key_public_pem(key, &pem), KV_OK);
    ck_assert_ptr_nonnull(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
    write_bytes(path, pem, strlen(pem));
    kv_string_free(pem);
}

/* Verify with the openssl command: a tool nobody here wrote. */
static int openssl_verify(const char *alg, const char *pub, const char *msg, const char *sig)
{
    const char *md = strstr(alg, "sha512") ? "-sha512" : strstr(alg, "sha384") ? "-sha384"
                                                                               : "-sha256";
    if (!strcmp(alg, "ed25519"))
        return tu_sh("openssl pkeyutl -verify -pubin -inkey %s -rawin -in %s -sigfile %s "
                     ">/dev/null 2>&1", pub, msg, sig);
    if (!strncmp(alg, "rsa-pss", 7))
        return tu_sh("openssl dgst %s -verify %s -sigopt rsa_padding_mode:pss "
                     "-sigopt rsa_pss_saltlen:digest -signature %s %s >/dev/null 2>&1",
                     md, pub, sig, msg);
    return tu_sh("openssl dgst %s -verify %s -signature %s %s >/dev/null 2>&1", md, pub, sig,
                 msg);
}

static const unsigned char msg[] = "libkeyvault test message";

/* What KV_ALG_DEFAULT means for each key type (keyvault.h). */
static kv_sign_alg default_alg(kv_key_type type)
{
    switch (type) {
    case KV_KEY_EC_P384: return KV_ALG_ECDSA_SHA384;
    case KV_KEY_RSA_2048:
    case KV_KEY_RSA_3072: return KV_ALG_RSA_PSS_SHA256;
    case KV_KEY_ED25519: return KV_ALG_ED25519;
    default: return KV_ALG_ECDSA_SHA256;
    }
}

/* Sign msg with alg, verify with the library and with openssl, and show
 * that both reject a changed message. */
static void sign_and_cross_check(kv_ctx *ctx, kv_key *key, kv_sign_alg alg, unsigned flags)
{
    const char *dir = tu_tmpdir(), *name;
    unsigned char sig[1024], pub[1024];
    size_t siglen = sizeof(sig), publen;
    char ppath[600], mpath[600], spath[600], bpath[600];
    kv_key_info info;
    kv_rc rc;

    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    name = kv_sign_alg_name(alg != KV_ALG_DEFAULT ? alg : default_alg(info.type));
    rc = kv_sign(key, alg, flags, msg, sizeof(msg) - 1, sig, &siglen);
    ck_assert_msg(rc == KV_OK, "sign %s: %s", name, kv_errmsg(ctx));
    publen = pub_der(ctx, key, pub, sizeof(pub));
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, alg, flags, msg, sizeof(msg) - 1, sig, siglen),
                 KV_OK);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, alg, flags, msg, sizeof(msg) - 2, sig, siglen),
                 KV_ERR_BAD_SIGNATURE);
    sig[siglen / 2] ^= 0x40;
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, alg, flags, msg, sizeof(msg) - 1, sig, siglen),
                 KV_ERR_BAD_SIGNATURE);
    sig[siglen / 2] ^= 0x40;
    if (flags & KV_SIGN_RAW)
        return; /* openssl dgst takes DER only */
    snprintf(ppath, sizeof(ppath), "%s/pub.pem", dir);
    snprintf(mpath, sizeof(mpath), "%s/msg", dir);
    snprintf(bpath, sizeof(bpath), "%s/badmsg", dir);
    snprintf(spath, sizeof(spath), "%s/sig", dir);
    write_pub_pem(ctx, key, ppath);
    write_bytes(mpath, msg, sizeof(msg) - 1);
    write_bytes(bpath, msg, sizeof(msg) - 2);
    write_bytes(spath, sig, siglen);
    ck_assert_msg(openssl_verify(name, ppath, mpath, spath) == 0,
                  "openssl rejects our %s signature", name);
    ck_assert_msg(openssl_verify(name, ppath, bpath, spath) != 0,
                  "openssl accepts our %s signature on another message", name);
}

START_TEST(sign_each_type_default_alg)
{
    static const kv_key_type types[] = { KV_KEY_EC_P256, KV_KEY_EC_P384, KV_KEY_RSA_2048,
                                         KV_KEY_RSA_3072, KV_KEY_ED25519 };
    kv_ctx *ctx = new_ctx();
    kv_key_type type = types[_i];
    kv_key *key;
    kv_key_info info;

    if (type == KV_KEY_ED25519 && !has_ed25519()) {
        /* a backend without Ed25519 says so, and makes nothing */
        ck_assert_rc(ctx, kv_key_generate(ctx, kname("ed"), type, backend(), &key),
                     KV_ERR_UNSUPPORTED);
        /* naming the type, or the token's missing mechanism */
        ck_assert_msg(strstr(kv_errmsg(ctx), "ed25519") || strstr(kv_errmsg(ctx), "Ed25519") ||
                      strstr(kv_errmsg(ctx), "CKM_EC_EDWARDS_KEY_PAIR_GEN"),
                      "the message names neither Ed25519 nor its mechanism: %s", kv_errmsg(ctx));
        ck_assert_ptr_null(strstr(kv_errmsg(ctx), "no private key"));
        ck_assert_rc(ctx, kv_key_open(ctx, kname("ed"), &key), KV_ERR_KEY_NOT_FOUND);
        kv_ctx_free(ctx);
        return;
    }
    key = gen(ctx, kname(kv_key_type_name(type)), type);

    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_int_eq(info.type, type);
    ck_assert_str_eq(info.backend, backend());
    ck_assert_uint_eq(info.version, 1);
    sign_and_cross_check(ctx, key, KV_ALG_DEFAULT, 0);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname(kv_key_type_name(type))), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(ecdsa_all_hashes_der_and_raw)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("ecdsa"), _i ? KV_KEY_EC_P384 : KV_KEY_EC_P256);
    unsigned char raw[200], der[200];
    size_t rawlen = sizeof(raw), derlen = sizeof(der);

    for (kv_sign_alg a = KV_ALG_ECDSA_SHA256; a <= KV_ALG_ECDSA_SHA512; a++) {
        sign_and_cross_check(ctx, key, a, 0);
        sign_and_cross_check(ctx, key, a, KV_SIGN_RAW);
    }
    /* raw is exactly 2 x field length; DER size query gives the maximum */
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, KV_SIGN_RAW, msg, 3, raw, &rawlen), KV_OK);
    ck_assert_uint_eq(rawlen, _i ? 96 : 64);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, msg, 3, NULL, &derlen), KV_OK);
    ck_assert_uint_eq(derlen, _i ? 104 : 72);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("ecdsa")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(rsa_pss_and_pkcs1_all_hashes)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("rsa"), KV_KEY_RSA_2048);

    for (kv_sign_alg a = KV_ALG_RSA_PSS_SHA256; a <= KV_ALG_RSA_PKCS1_SHA512; a++)
        sign_and_cross_check(ctx, key, a, 0);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("rsa")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(prehashed_equals_message_signing)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("pre"), KV_KEY_EC_P256);
    unsigned char md[32], sig[128], pub[256];
    unsigned int mdlen = 0;
    size_t siglen = sizeof(sig), publen;

    ck_assert_int_eq(EVP_Digest(msg, sizeof(msg) - 1, md, &mdlen, EVP_sha256(), NULL), 1);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 32, sig, &siglen),
                 KV_OK);
    publen = pub_der(ctx, key, pub, sizeof(pub));
    /* a digest signature verifies as a signature over the message */
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_ECDSA_SHA256, 0, msg, sizeof(msg) - 1,
                                sig, siglen), KV_OK);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 32,
                                sig, siglen), KV_OK);
    /* a digest of the wrong length is refused before the backend */
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 31, sig, &siglen),
                 KV_ERR_BAD_INPUT);
    ck_assert_uint_eq(siglen, 0);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "32 bytes"));
    /* the empty message signs and verifies */
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, NULL, 0, sig, &siglen), KV_OK);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, NULL, 0, sig, siglen), KV_OK);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("pre")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(wrong_key_type_and_flags)
{
    kv_ctx *ctx = new_ctx();
    kv_key *rsa = gen(ctx, kname("wt-rsa"), KV_KEY_RSA_2048);
    /* where Ed25519 is missing, a P-384 key stands in for the third type */
    kv_key *ed = gen(ctx, kname("wt-ed"), has_ed25519() ? KV_KEY_ED25519 : KV_KEY_EC_P384);
    kv_key *ec = gen(ctx, kname("wt-ec"), KV_KEY_EC_P256);
    unsigned char sig[512], md[32] = { 0 }, out[64], pub[256];
    size_t siglen = sizeof(sig), len = sizeof(out), publen;

    ck_assert_rc(ctx, kv_sign(rsa, KV_ALG_ECDSA_SHA256, 0, msg, 4, sig, &siglen),
                 KV_ERR_WRONG_KEY_TYPE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "rsa-2048"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "needs an EC key"));
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(ec, KV_ALG_RSA_PSS_SHA256, 0, msg, 4, sig, &siglen),
                 KV_ERR_WRONG_KEY_TYPE);
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(ec, KV_ALG_ED25519, 0, msg, 4, sig, &siglen), KV_ERR_WRONG_KEY_TYPE);
    siglen = sizeof(sig);
    if (has_ed25519()) {
        ck_assert_rc(ctx, kv_sign(ed, KV_ALG_DEFAULT, KV_SIGN_PREHASHED, md, 32, sig, &siglen),
                     KV_ERR_UNSUPPORTED);
        /* naming the type, or the token's missing mechanism */
        ck_assert_msg(strstr(kv_errmsg(ctx), "ed25519") || strstr(kv_errmsg(ctx), "Ed25519") ||
                      strstr(kv_errmsg(ctx), "CKM_EC_EDWARDS_KEY_PAIR_GEN"),
                      "the message names neither Ed25519 nor its mechanism: %s", kv_errmsg(ctx));
        ck_assert_ptr_null(strstr(kv_errmsg(ctx), "no private key"));
    } else {
        ck_assert_rc(ctx, kv_sign(ed, KV_ALG_ED25519, 0, msg, 4, sig, &siglen),
                     KV_ERR_WRONG_KEY_TYPE);
    }
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(rsa, KV_ALG_DEFAULT, KV_SIGN_RAW, msg, 4, sig, &siglen),
                 KV_ERR_INVALID_ARG);
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(ec, KV_ALG_DEFAULT, 0x80, msg, 4, sig, &siglen), KV_ERR_INVALID_ARG);
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(ec, (kv_sign_alg)77, 0, msg, 4, sig, &siglen), KV_ERR_INVALID_ARG);

    /* ECDH needs an EC key */
    publen = pub_der(ctx, ec, pub, sizeof(pub));
    ck_assert_rc(ctx, kv_ecdh(rsa, pub, publen, out, &len), KV_ERR_WRONG_KEY_TYPE);
    ck_assert_uint_eq(len, 0);
    len = sizeof(out);
    if (has_ed25519()) {
        ck_assert_rc(ctx, kv_ecdh(ed, pub, publen, out, &len), KV_ERR_WRONG_KEY_TYPE);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "ed25519"));
    } else {
        /* a P-384 key with a P-256 peer */
        ck_assert_rc(ctx, kv_ecdh(ed, pub, publen, out, &len), KV_ERR_INVALID_PEER_KEY);
    }
    /* verification with a key of the other family */
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(ec, KV_ALG_DEFAULT, 0, msg, 4, sig, &siglen), KV_OK);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_RSA_PSS_SHA256, 0, msg, 4, sig, siglen),
                 KV_ERR_WRONG_KEY_TYPE);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen - 3, KV_ALG_DEFAULT, 0, msg, 4, sig, siglen),
                 KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, msg, 4, sig, 0),
                 KV_ERR_BAD_SIGNATURE);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, KV_SIGN_RAW, msg, 4, sig, 63),
                 KV_ERR_BAD_SIGNATURE);
    kv_key_free(rsa);
    kv_key_free(ed);
    kv_key_free(ec);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("wt-rsa")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("wt-ed")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("wt-ec")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(output_buffer_sizes)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("buf"), KV_KEY_EC_P256);
    unsigned char sig[200], pub[256], z[64];
    size_t len = 0, publen;

    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, msg, 4, NULL, &len), KV_OK);
    ck_assert_uint_eq(len, 72);
    len = 10;
    memset(sig, 0xAA, sizeof(sig));
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, msg, 4, sig, &len), KV_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 72);
    ck_assert_uint_eq(sig[0], 0); /* wiped */
    len = 0;
    ck_assert_rc(ctx, kv_key_public_der(key, NULL, &len), KV_OK);
    ck_assert_uint_eq(len, 91);
    len = 20;
    ck_assert_rc(ctx, kv_key_public_der(key, pub, &len), KV_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 91);
    publen = pub_der(ctx, key, pub, sizeof(pub));
    len = 0;
    ck_assert_rc(ctx, kv_ecdh(key, pub, publen, NULL, &len), KV_OK);
    ck_assert_uint_eq(len, 32);
    len = 31;
    ck_assert_rc(ctx, kv_ecdh(key, pub, publen, z, &len), KV_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 32);
    ck_assert_rc(ctx, kv_ecdh_hkdf(key, pub, publen, NULL, 0, NULL, 0, z, 0), KV_ERR_INVALID_ARG);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("buf")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* SEC1 uncompressed point of a DER SubjectPublicKeyInfo. */
static size_t spki_to_point(const unsigned char *der, size_t len, unsigned char *pt, size_t max)
{
    const unsigned char *p = der;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
    size_t n = 0;

    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(EVP_PKEY_get_octet_string_param(k, "encoded-pub-key", pt, max, &n), 1);
    EVP_PKEY_free(k);
    return n;
}

START_TEST(ecdh_both_sides_agree)
{
    kv_key_type type = _i ? KV_KEY_EC_P384 : KV_KEY_EC_P256;
    size_t field = _i ? 48 : 32;
    kv_ctx *ctx = new_ctx();
    kv_key *a = gen(ctx, kname("dh-a"), type), *b = gen(ctx, kname("dh-b"), type);
    unsigned char apub[256], bpub[256], bpt[128], za[64], zb[64], zc[64], ha[40], hb[40], hc[40];
    size_t apublen, bpublen, bptlen, la = sizeof(za), lb = sizeof(zb), lc = sizeof(zc);
    static const unsigned char salt[] = { 1, 2, 3 }, info1[] = "one", info2[] = "two";

    apublen = pub_der(ctx, a, apub, sizeof(apub));
    bpublen = pub_der(ctx, b, bpub, sizeof(bpub));
    if (no_ecdh()) {
        ck_assert_rc(ctx, kv_ecdh(a, bpub, bpublen, za, &la), KV_ERR_UNSUPPORTED);
        ck_assert_uint_eq(la, 0);
        printf("ecdh on %s: refused as unsupported (%s)\n", backend(), no_ecdh());
        kv_key_free(a);
        kv_key_free(b);
        ck_assert_rc(ctx, kv_key_destroy(ctx, kname("dh-a")), KV_OK);
        ck_assert_rc(ctx, kv_key_destroy(ctx, kname("dh-b")), KV_OK);
        kv_ctx_free(ctx);
        return;
    }
    bptlen = spki_to_point(bpub, bpublen, bpt, sizeof(bpt));
    ck_assert_rc(ctx, kv_ecdh(a, bpub, bpublen, za, &la), KV_OK);
    ck_assert_rc(ctx, kv_ecdh(b, apub, apublen, zb, &lb), KV_OK);
    ck_assert_rc(ctx, kv_ecdh(a, bpt, bptlen, zc, &lc), KV_OK); /* SEC1 point form */
    ck_assert_uint_eq(la, field);
    ck_assert_uint_eq(lb, field);
    ck_assert_mem_eq(za, zb, field);
    ck_assert_mem_eq(za, zc, field);

    /* OpenSSL on the other side, with an ephemeral key of its own */
    EVP_PKEY *eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", _i ? "P-384" : "P-256");
    const unsigned char *p = apub;
    EVP_PKEY *apk = d2i_PUBKEY(NULL, &p, (long)apublen);
    unsigned char *epub = NULL, zo[64];
    int epublen = i2d_PUBKEY(eph, &epub);
    size_t lo = sizeof(zo);
    EVP_PKEY_CTX *dctx = EVP_PKEY_CTX_new(eph, NULL);
    ck_assert_int_eq(EVP_PKEY_derive_init(dctx), 1);
    ck_assert_int_eq(EVP_PKEY_derive_set_peer(dctx, apk), 1);
    ck_assert_int_eq(EVP_PKEY_derive(dctx, zo, &lo), 1);
    la = sizeof(za);
    ck_assert_rc(ctx, kv_ecdh(a, epub, (size_t)epublen, za, &la), KV_OK);
    ck_assert_uint_eq(lo, la);
    ck_assert_mem_eq(za, zo, lo);

    /* HKDF: same inputs agree, another info gives another key */
    ck_assert_rc(ctx, kv_ecdh_hkdf(a, bpub, bpublen, salt, 3, info1, 3, ha, 40), KV_OK);
    ck_assert_rc(ctx, kv_ecdh_hkdf(b, apub, apublen, salt, 3, info1, 3, hb, 40), KV_OK);
    ck_assert_rc(ctx, kv_ecdh_hkdf(b, apub, apublen, salt, 3, info2, 3, hc, 40), KV_OK);
    ck_assert_mem_eq(ha, hb, 40);
    ck_assert_mem_ne(ha, hc, 40);
    /* and it is HKDF-SHA256 of the shared secret, as OpenSSL computes it */
    {
        EVP_PKEY_CTX *k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
        unsigned char ref[40];
        size_t rl = sizeof(ref);
        la = sizeof(za);
        ck_assert_rc(ctx, kv_ecdh(a, bpub, bpublen, za, &la), KV_OK);
        ck_assert_int_eq(EVP_PKEY_derive_init(k), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_hkdf_md(k, EVP_sha256()), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set1_hkdf_salt(k, salt, 3), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set1_hkdf_key(k, za, (int)la), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_add1_hkdf_info(k, info1, 3), 1);
        ck_assert_int_eq(EVP_PKEY_derive(k, ref, &rl), 1);
        ck_assert_mem_eq(ref, ha, 40);
        EVP_PKEY_CTX_free(k);
    }
    EVP_PKEY_CTX_free(dctx);
    EVP_PKEY_free(apk);
    EVP_PKEY_free(eph);
    OPENSSL_free(epub);
    kv_key_free(a);
    kv_key_free(b);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("dh-a")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("dh-b")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(ecdh_rejects_bad_peers)
{
    kv_ctx *ctx = new_ctx();
    kv_key *a = gen(ctx, kname("bad-a"), KV_KEY_EC_P256);
    kv_key *c = gen(ctx, kname("bad-c"), KV_KEY_EC_P384);
    unsigned char apub[256], cpub[256], pt[128], z[64];
    size_t apublen, cpublen, ptlen, len;

    apublen = pub_der(ctx, a, apub, sizeof(apub));
    cpublen = pub_der(ctx, c, cpub, sizeof(cpub));
    ptlen = spki_to_point(apub, apublen, pt, sizeof(pt));
    pt[ptlen - 1] ^= 1; /* off the curve */
    len = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(a, pt, ptlen, z, &len), KV_ERR_INVALID_PEER_KEY);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "P-256"));
    len = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(a, cpub, cpublen, z, &len), KV_ERR_INVALID_PEER_KEY);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "curve"));
    len = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(a, apub, 10, z, &len), KV_ERR_INVALID_PEER_KEY);
    len = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(a, apub, 0, z, &len), KV_ERR_INVALID_PEER_KEY);
    ck_assert_rc(ctx, kv_ecdh_hkdf(a, cpub, cpublen, NULL, 0, NULL, 0, z, 32),
                 KV_ERR_INVALID_PEER_KEY);
    kv_key_free(a);
    kv_key_free(c);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("bad-a")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("bad-c")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* The caller's own error, queued before a call (own) or not. */
static unsigned long queue_mine(int own)
{
    ERR_clear_error();
    if (!own)
        return 0;
    ERR_raise_data(ERR_LIB_USER, 42, "the caller's own");
    return ERR_peek_error();
}

/* After call: the thread's OpenSSL error queue holds what it held before
 * (mine, or nothing), with no mark left on it, and kv_errmsg speaks of the
 * call's failure, not of the caller's error. */
static void queue_as_found(kv_ctx *ctx, unsigned long mine, const char *call)
{
    char text[256];
    unsigned long e = ERR_peek_error();

    if (e != mine) {
        ERR_error_string_n(e, text, sizeof(text));
        ck_abort_msg("%s left the OpenSSL error %s on the caller's queue", call, text);
    }
    ck_assert_msg(ERR_peek_last_error() == mine, "%s left more than the caller's own error",
                  call);
    /* no mark: popping to one empties the queue and says there was none */
    ck_assert_msg(ERR_pop_to_mark() == 0, "%s left an error mark on the caller's queue", call);
    ck_assert_msg(ERR_peek_error() == 0, "%s: the queue is not as it was", call);
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "reason(42)"));
}

/* A failed call leaves no OpenSSL error behind (a TLS caller's next
 * SSL_get_error on the thread would read it as its own) and keeps the
 * caller's own: before KV_CALL_BEGIN the first three emptied the caller's
 * queue (ERR_clear_error), and kv_enroll_challenge left the errors of an
 * EK certificate's failed signature check on it (found by the fuzz
 * targets' queue check, docs/fuzzing.md; the request is that target's
 * regression input). */
START_TEST(failed_calls_leave_the_openssl_error_queue_as_found)
{
    kv_ctx *ctx = new_ctx();
    kv_key *a = gen(ctx, kname("errq"), KV_KEY_EC_P256);
    /* a SEQUENCE whose length runs past the end: "header too long" */
    static const unsigned char long_header[] = { 0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00 };
    static const char not_pem[] = "-----BEGIN CERTIFICATE-----\nnot base64\n";
    unsigned char z[64];
    size_t len;
#ifdef KV_WITH_TPM
    char *req, *chal = NULL, anchors[1024], reg[1024];
    size_t reqlen;
    FILE *f = fopen(tu_srcpath("tests/fuzz/regress/enroll/ek-signature-error-left-queued"), "r");

    ck_assert_ptr_nonnull(f);
    req = malloc(65536);
    ck_assert_ptr_nonnull(req);
    reqlen = fread(req, 1, 65536, f);
    fclose(f);
    ck_assert_uint_gt(reqlen, 1);
    snprintf(anchors, sizeof(anchors), "%s",
             tu_srcpath("tests/fuzz/fixtures/enroll/ek-anchors.pem"));
    snprintf(reg, sizeof(reg), "%s/errq-registry.db", tu_tmpdir());
#endif
    for (int own = 0; own < 2; own++) {
        unsigned long mine = queue_mine(own);
        len = sizeof(z);
        ck_assert_rc(ctx, kv_ecdh(a, long_header, sizeof(long_header), z, &len),
                     KV_ERR_INVALID_PEER_KEY);
        queue_as_found(ctx, mine, "kv_ecdh");
        mine = queue_mine(own);
        ck_assert_rc(ctx, kv_key_store_chain(a, (const unsigned char *)not_pem, strlen(not_pem)),
                     KV_ERR_BAD_INPUT);
        queue_as_found(ctx, mine, "kv_key_store_chain");
        mine = queue_mine(own);
        ck_assert_rc(ctx, kv_key_store_cert(a, long_header, sizeof(long_header)),
                     KV_ERR_BAD_INPUT);
        queue_as_found(ctx, mine, "kv_key_store_cert");
#ifdef KV_WITH_TPM
        /* byte 0 of the fuzz input chose the request */
        mine = queue_mine(own);
        ck_assert_rc(ctx, kv_enroll_challenge(ctx, req + 1, reqlen - 1, anchors, reg, 0, &chal),
                     KV_ERR_PERMISSION);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "does not chain to the EK trust anchors"));
        ck_assert_ptr_null(chal);
        queue_as_found(ctx, mine, "kv_enroll_challenge");
#endif
    }
#ifdef KV_WITH_TPM
    free(req);
#endif
    kv_key_free(a);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("errq")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(lifecycle_open_list_destroy)
{
    kv_ctx *ctx = new_ctx();
    const char *name = kname("life");
    kv_key *key = gen(ctx, name, KV_KEY_EC_P256), *k2 = NULL, *k3 = NULL;
    unsigned char p1[256], p2[256], p3[256];
    size_t l1, l2, l3;
    kv_key_info info;
    kv_key_list *list = NULL;
    int found = 0;

    l1 = pub_der(ctx, key, p1, sizeof(p1));
    /* never overwritten */
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, backend(), NULL),
                 KV_ERR_KEY_EXISTS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), name));
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_RSA_2048, NULL, NULL), KV_ERR_KEY_EXISTS);
    /* by name and by URI: the same key */
    ck_assert_rc(ctx, kv_key_open(ctx, name, &k2), KV_OK);
    l2 = pub_der(ctx, k2, p2, sizeof(p2));
    ck_assert_uint_eq(l1, l2);
    ck_assert_mem_eq(p1, p2, l1);
    ck_assert_rc(ctx, kv_key_get_info(k2, &info), KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, info.uri, &k3), KV_OK);
    l3 = pub_der(ctx, k3, p3, sizeof(p3));
    ck_assert_uint_eq(l1, l3);
    ck_assert_mem_eq(p1, p3, l1);
    /* listed */
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->keys[i].name, name) != 0)
            continue;
        found++;
        ck_assert_int_eq(list->keys[i].type, KV_KEY_EC_P256);
        ck_assert_str_eq(list->keys[i].backend, backend());
        ck_assert_str_eq(list->keys[i].uri, info.uri);
    }
    ck_assert_int_eq(found, 1);
    kv_key_list_free(list);
    /* destroyed: gone for open, list and destroy */
    kv_key_free(k2);
    kv_key_free(k3);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_OK);
    k2 = NULL;
    ck_assert_rc(ctx, kv_key_open(ctx, name, &k2), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_null(k2);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), name));
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    for (size_t i = 0; i < list->count; i++)
        ck_assert_str_ne(list->keys[i].name, name);
    kv_key_list_free(list);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(malformed_names_and_uris)
{
    static const char *bad_names[] = {
        "", ".hidden", "a b", "../etc/passwd", "x/y", "name\n",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    };
    kv_ctx *ctx = new_ctx();
    kv_key *key = NULL;

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        ck_assert_rc(ctx, kv_key_generate(ctx, bad_names[i], KV_KEY_EC_P256, NULL, NULL),
                     KV_ERR_BAD_URI);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "invalid"));
        ck_assert_rc(ctx, kv_key_open(ctx, bad_names[i], &key), KV_ERR_BAD_URI);
    }
    ck_assert_rc(ctx, kv_key_open(ctx, "bogus:thing", &key), KV_ERR_BAD_URI);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "unknown URI scheme"));
    ck_assert_rc(ctx, kv_key_open(ctx, "file:relative/k.pem", &key), KV_ERR_BAD_URI);
    ck_assert_rc(ctx, kv_key_open(ctx, "file://host/k.pem", &key), KV_ERR_BAD_URI);
    ck_assert_rc(ctx, kv_key_open(ctx, "file:/tmp/notakey.txt", &key), KV_ERR_BAD_URI);
    ck_assert_rc(ctx, kv_key_open(ctx, "file:/nonexistent/k.pem", &key), KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_key_open(ctx, "nosuchkey", &key), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "nosuchkey"));
    ck_assert_rc(ctx, kv_key_generate(ctx, "x", KV_KEY_EC_P256, "nosuchbackend", NULL),
                 KV_ERR_BACKEND_UNAVAILABLE);
    ck_assert_rc(ctx, kv_key_generate(ctx, "x", (kv_key_type)42, NULL, NULL), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(key);
    kv_ctx_free(ctx);
}
END_TEST

/* Wycheproof's ECDH peer keys against a key of this backend: every invalid
 * peer is refused before the backend sees it, every valid one is used.
 * (The shared secrets differ from the vectors': the private key is ours.) */
START_TEST(wycheproof_ecdh_peers)
{
    static const char *files[] = { "ecdh_secp256r1_test.json", "ecdh_secp256r1_ecpoint_test.json" };
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("wp"), KV_KEY_EC_P256);
    char rel[200];
    int valid = 0, invalid = 0;
    size_t seen_valid = 0;

    for (size_t f = 0; f < 2; f++) {
        json_error_t jerr;
        json_t *doc, *group, *test;
        size_t gi, ti;

        snprintf(rel, sizeof(rel), "tests/vectors/wycheproof/%s", files[f]);
        doc = json_load_file(tu_srcpath(rel), 0, &jerr);
        ck_assert_msg(doc != NULL, "%s: %s", rel, jerr.text);
        json_array_foreach(json_object_get(doc, "testGroups"), gi, group) {
            json_array_foreach(json_object_get(group, "tests"), ti, test) {
                const char *result = json_string_value(json_object_get(test, "result"));
                long long tc = json_integer_value(json_object_get(test, "tcId"));
                size_t publen, zlen = 64;
                unsigned char z[64], *pub;
                kv_rc rc;

                /* a slow backend uses every tenth valid peer; invalid ones
                 * never reach it, so all of them run */
                if (!strcmp(result, "valid") && seen_valid++ % (size_t)(10 / scaled(10)) != 0)
                    continue;
                pub = tu_unhex(json_string_value(json_object_get(test, "public")), &publen);
                rc = kv_ecdh(key, pub, publen, z, &zlen);
                if (!strcmp(result, "valid") && no_ecdh()) {
                    ck_assert_msg(rc == KV_ERR_UNSUPPORTED, "%s tcId %lld: %s", files[f], tc,
                                  kv_strerror(rc));
                    valid++;
                } else if (!strcmp(result, "valid")) {
                    ck_assert_msg(rc == KV_OK, "%s tcId %lld: %s", files[f], tc, kv_errmsg(ctx));
                    ck_assert_uint_eq(zlen, 32);
                    valid++;
                } else if (!strcmp(result, "invalid")) {
                    ck_assert_msg(rc == KV_ERR_INVALID_PEER_KEY, "%s tcId %lld accepted: %s",
                                  files[f], tc, kv_strerror(rc));
                    invalid++;
                }
                OPENSSL_free(pub);
            }
        }
        json_decref(doc);
    }
    printf("wycheproof ECDH peers on %s: %d valid %s, %d invalid refused\n", backend(), valid,
           no_ecdh() ? "refused as unsupported (no ECDH)" : "used", invalid);
    ck_assert_int_eq(valid, scaled(10) == 10 ? 660 : 66);
    ck_assert_int_eq(invalid, 76);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("wp")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A certificate for `pub`, issued by a throwaway CA, as DER. */
static unsigned char *make_cert(EVP_PKEY *pub, long serial, int *len)
{
    EVP_PKEY *ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char *der = NULL;

    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"kv test", -1,
                               -1, 0);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_set_version(x, 2);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    ck_assert_int_eq(X509_set_pubkey(x, pub), 1);
    ck_assert_int_gt(X509_sign(x, ca, EVP_sha256()), 0);
    *len = i2d_X509(x, &der);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(ca);
    return der;
}

START_TEST(certificate_store_and_read)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("cert"), KV_KEY_EC_P256);
    kv_key *other = gen(ctx, kname("cert-o"), KV_KEY_EC_P256);
    unsigned char pub[256], back[4096], *c1, *c2, *c3;
    size_t publen = pub_der(ctx, key, pub, sizeof(pub)), blen = sizeof(back);
    const unsigned char *p = pub;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)publen), *opk;
    int l1, l2, l3;
    kv_key *again = NULL;

    ck_assert_rc(ctx, kv_key_cert_der(key, back, &blen), KV_ERR_KEY_NOT_FOUND);
    c1 = make_cert(pk, 1, &l1);
    c2 = make_cert(pk, 2, &l2);
    ck_assert_rc(ctx, kv_key_store_cert(key, c1, (size_t)l1), KV_OK);
    blen = 0;
    ck_assert_rc(ctx, kv_key_cert_der(key, NULL, &blen), KV_OK);
    ck_assert_uint_eq(blen, (size_t)l1);
    blen = sizeof(back);
    ck_assert_rc(ctx, kv_key_cert_der(key, back, &blen), KV_OK);
    ck_assert_mem_eq(back, c1, (size_t)l1);
    /* a renewed certificate replaces the first; a new handle sees it */
    ck_assert_rc(ctx, kv_key_store_cert(key, c2, (size_t)l2), KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, kname("cert"), &again), KV_OK);
    blen = sizeof(back);
    ck_assert_rc(ctx, kv_key_cert_der(again, back, &blen), KV_OK);
    ck_assert_uint_eq(blen, (size_t)l2);
    ck_assert_mem_eq(back, c2, (size_t)l2);
    /* a certificate of another key, or no certificate at all, is refused */
    publen = pub_der(ctx, other, pub, sizeof(pub));
    p = pub;
    opk = d2i_PUBKEY(NULL, &p, (long)publen);
    c3 = make_cert(opk, 3, &l3);
    ck_assert_rc(ctx, kv_key_store_cert(key, c3, (size_t)l3), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "is not the certificate of key"));
    ck_assert_rc(ctx, kv_key_store_cert(key, c3, 10), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_key_store_cert(key, (const unsigned char *)"-----BEGIN x", 12),
                 KV_ERR_BAD_INPUT);
    blen = sizeof(back);
    ck_assert_rc(ctx, kv_key_cert_der(again, back, &blen), KV_OK);
    ck_assert_mem_eq(back, c2, (size_t)l2);
    OPENSSL_free(c1);
    OPENSSL_free(c2);
    OPENSSL_free(c3);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(opk);
    kv_key_free(again);
    kv_key_free(key);
    kv_key_free(other);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("cert")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("cert-o")), KV_OK);
    /* destroying the key took its certificate too */
    key = gen(ctx, kname("cert"), KV_KEY_EC_P256);
    blen = sizeof(back);
    ck_assert_rc(ctx, kv_key_cert_der(key, back, &blen), KV_ERR_KEY_NOT_FOUND);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("cert")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

struct thread_arg {
    kv_ctx *ctx;
    kv_key *key;
    const unsigned char *pub;
    size_t publen;
    int ok;
};

static void *sign_thread(void *p)
{
    struct thread_arg *t = p;
    unsigned char m[16], sig[128];

    for (int i = 0; i < scaled(100); i++) {
        size_t siglen = sizeof(sig);
        memset(m, i, sizeof(m));
        if (kv_sign(t->key, KV_ALG_DEFAULT, 0, m, sizeof(m), sig, &siglen) != KV_OK)
            continue;
        if (kv_verify(t->ctx, t->pub, t->publen, KV_ALG_DEFAULT, 0, m, sizeof(m), sig,
                      siglen) == KV_OK)
            t->ok++;
    }
    return NULL;
}

START_TEST(eight_threads_sign_with_one_context)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("thr"), KV_KEY_EC_P256);
    unsigned char pub[256];
    size_t publen = pub_der(ctx, key, pub, sizeof(pub));
    pthread_t th[8];
    struct thread_arg args[8];

    for (int i = 0; i < 8; i++) {
        args[i] = (struct thread_arg){ ctx, key, pub, publen, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, sign_thread, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].ok, scaled(100));
    }
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("thr")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

static int sign_verify_once(kv_ctx *ctx, kv_key *key, const unsigned char *pub, size_t publen)
{
    unsigned char sig[128];
    size_t siglen = sizeof(sig);

    return kv_sign(key, KV_ALG_DEFAULT, 0, msg, 8, sig, &siglen) == KV_OK &&
           kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, msg, 8, sig, siglen) == KV_OK;
}

START_TEST(fork_parent_child_parent)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("fork"), KV_KEY_EC_P256);
    unsigned char pub[256];
    size_t publen = pub_der(ctx, key, pub, sizeof(pub));
    int st = 0;
    pid_t pid;

    ck_assert(sign_verify_once(ctx, key, pub, publen));
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0 && no_fork())
        _exit(0);
    if (pid == 0) {
        int ok = sign_verify_once(ctx, key, pub, publen);

        kv_key_free(key);
        kv_ctx_free(ctx);
        _exit(ok ? 0 : 1);
    }
    if (no_fork())
        printf("fork on %s: the child does not sign (%s)\n", backend(), no_fork());
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child could not sign: status %d", st);
    ck_assert(sign_verify_once(ctx, key, pub, publen));
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("fork")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A pre-forking server: the parent signs, forks 4 children that sign 20
 * times each, all at once (released together by closing a pipe), and signs
 * again while and after they do. */
START_TEST(fork_four_children_sign_at_once)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("fork4"), KV_KEY_EC_P256);
    unsigned char pub[256];
    size_t publen = pub_der(ctx, key, pub, sizeof(pub));
    pid_t pids[4];
    int go[2], ok = 0;

    ck_assert(sign_verify_once(ctx, key, pub, publen));
    ck_assert_int_eq(pipe(go), 0);
    for (int w = 0; w < 4; w++) {
        pids[w] = fork();
        ck_assert_int_ge(pids[w], 0);
        if (pids[w] == 0) {
            char c;
            int n = 0;

            close(go[1]);
            (void)!read(go[0], &c, 1);
            if (no_fork())
                _exit(0);
            for (int i = 0; i < 20; i++)
                n += sign_verify_once(ctx, key, pub, publen);
            if (n != 20)
                fprintf(stderr, "child %d: %d of 20 signed: %s\n", w, n, kv_errmsg(ctx));
            /* the child frees what it inherited: under valgrind
             * (tests/sanitizers.sh) the key was a definite leak at _exit */
            kv_key_free(key);
            kv_ctx_free(ctx);
            _exit(n == 20 ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < 5; i++)
        ok += sign_verify_once(ctx, key, pub, publen);
    for (int w = 0; w < 4; w++) {
        int st = 0;

        ck_assert_int_eq(waitpid(pids[w], &st, 0), pids[w]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d could not sign: status %d",
                      w, st);
    }
    ck_assert_int_eq(ok, 5);
    ck_assert_msg(sign_verify_once(ctx, key, pub, publen), "%s", kv_errmsg(ctx));
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("fork4")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A certificate for pub named subj, issued by issuer_name with ca, valid
 * from now + nb to now + na seconds; ca_cert marks a CA. sans: a
 * subjectAltName value as the openssl config writes it, or NULL. */
static X509 *issue(EVP_PKEY *pub, const char *subj, EVP_PKEY *ca, const X509_NAME *issuer_name,
                   long serial, long nb, long na, int ca_cert, const char *sans)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    char *copy = strdup(subj), *save = NULL;

    for (char *rdn = strtok_r(copy, ",", &save); rdn; rdn = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(rdn, '=');
        *eq = '\0';
        ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, rdn, MBSTRING_ASC,
                                                    (const unsigned char *)eq + 1, -1, -1, 0), 1);
    }
    free(copy);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_set_version(x, 2);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer_name ? issuer_name : name);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    ck_assert_int_eq(X509_set_pubkey(x, pub), 1);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, NULL, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca_cert ? "critical,CA:TRUE"
                                                                       : "CA:FALSE");
    ck_assert_int_eq(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
    if (sans) {
        /* dirName:dir_sect names a section of a configuration */
        CONF *conf = NCONF_new(NULL);
        BIO *sect = BIO_new_mem_buf("[dir_sect]\nO=TCG\nCN=tpm+model\n", -1);
        ck_assert_int_gt(NCONF_load_bio(conf, sect, NULL), 0);
        X509V3_set_nconf(&v3, conf);
        ext = X509V3_EXT_nconf_nid(conf, &v3, NID_subject_alt_name, sans);
        ck_assert_ptr_nonnull(ext);
        ck_assert_int_eq(X509_add_ext(x, ext, -1), 1);
        X509_EXTENSION_free(ext);
        BIO_free(sect);
        NCONF_free(conf);
    }
    ck_assert_int_gt(X509_sign(x, ca, EVP_sha256()), 0);
    X509_NAME_free(name);
    return x;
}

/* The certificates as one PEM bundle (free). */
static char *bundle(X509 *const *certs, int n, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long l;

    for (int i = 0; i < n; i++)
        ck_assert_int_eq(PEM_write_bio_X509(bio, certs[i]), 1);
    l = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)l + 1);
    memcpy(out, data, (size_t)l);
    out[l] = '\0';
    *len = (size_t)l;
    BIO_free(bio);
    return out;
}

/* The chain stored with key is text. */
static void chain_is(kv_ctx *ctx, kv_key *key, const char *text)
{
    char *pem = NULL;

    ck_assert_rc(ctx, kv_key_chain_pem(key, &pem), KV_OK);
    ck_assert_str_eq(pem, text);
    kv_string_free(pem);
}

/* Store leaf and its issuer with key; its facts (free). */
static kv_cert_info *store_leaf(kv_ctx *ctx, kv_key *key, X509 *leaf, X509 *issuer)
{
    X509 *chain[2] = { leaf, issuer };
    kv_cert_info *ci = NULL;
    size_t len;
    char *text = bundle(chain, 2, &len);

    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)text, len), KV_OK);
    free(text);
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_OK);
    return ci;
}

START_TEST(chain_store_read_and_facts)
{
    kv_ctx *ctx = new_ctx();
    kv_key *key = gen(ctx, kname("chain"), KV_KEY_EC_P256);
    unsigned char pub[256], back[4096];
    size_t publen = pub_der(ctx, key, pub, sizeof(pub)), len, blen = sizeof(back);
    const unsigned char *p = pub;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)publen);
    EVP_PKEY *rootk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *interk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *root = issue(rootk, "CN=kv root", rootk, NULL, 1, -86400, 86400 * 10, 1, NULL);
    X509 *inter = issue(interk, "O=kv,CN=kv intermediate", rootk, X509_get_subject_name(root),
                        2, -86400, 86400 * 10, 1, NULL);
    X509 *leaf = issue(pk, "O=Fleet,CN=dev-42", interk, X509_get_subject_name(inter), 0x7A3F,
                       -3000, 6000, 0,
                       "DNS:dev-42.example,IP:192.0.2.7,IP:2001:db8::1,URI:urn:dev:42,"
                       "email:ops@example.com,dirName:dir_sect");
    X509 *due = issue(pk, "CN=dev-42", interk, X509_get_subject_name(inter), 3, -7000, 2000, 0,
                      NULL);
    X509 *old = issue(pk, "CN=dev-42", interk, X509_get_subject_name(inter), 4, -864000, -3600,
                      0, NULL);
    X509 *inter2 = issue(interk, "O=kv,CN=kv intermediate 2", rootk,
                         X509_get_subject_name(root), 5, -86400, 86400 * 10, 1, NULL);
    X509 *leaf2 = issue(pk, "CN=dev-42", interk, X509_get_subject_name(inter2), 6, -60, 3600, 0,
                        NULL);
    X509 *chain[9] = { leaf, inter, root }, *disorder[3] = { leaf, root, inter };
    char *good, *text, *bad;
    kv_cert_info *ci = NULL;
    unsigned char *der = NULL;
    GENERAL_NAMES *gens;
    GENERAL_NAME *gn;
    ASN1_IA5STRING *ia5;
    int dlen;

    (void)dlen;
    good = bundle(chain, 3, &len);
    ck_assert_rc(ctx, kv_key_chain_pem(key, &text), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_null(text);
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_null(ci);
    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)good, len), KV_OK);
    chain_is(ctx, key, good);
    /* kv_key_cert_der gives the leaf */
    dlen = i2d_X509(leaf, &der);
    ck_assert_rc(ctx, kv_key_cert_der(key, back, &blen), KV_OK);
    ck_assert_uint_eq(blen, (size_t)dlen);
    ck_assert_mem_eq(back, der, blen);
    OPENSSL_free(der);
    der = NULL;
    /* the facts of the leaf */
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_OK);
    ck_assert_str_eq(ci->subject, "CN=dev-42,O=Fleet");
    ck_assert_str_eq(ci->issuer, "CN=kv intermediate,O=kv");
    ck_assert_str_eq(ci->serial, "7A3F");
    ck_assert_uint_eq(ci->chain_len, 3);
    ck_assert_int_eq(ci->not_after - ci->not_before, 9000);
    ck_assert_int_eq(ci->renew_after - ci->not_before, 6000);
    ck_assert_int_eq(ci->renewal_due, 0);
    ck_assert_int_eq(ci->expired, 0);
    ck_assert_int_eq(ci->is_ca, 0);
    ck_assert_int_eq(ci->days_left, 0);
    ck_assert_uint_eq(ci->nsans, 6);
    ck_assert_str_eq(ci->sans[0], "dns:dev-42.example");
    ck_assert_str_eq(ci->sans[1], "ip:192.0.2.7");
    ck_assert_str_eq(ci->sans[2], "ip:2001:db8::1");
    ck_assert_str_eq(ci->sans[3], "uri:urn:dev:42");
    ck_assert_str_eq(ci->sans[4], "email:ops@example.com");
    ck_assert_str_eq(ci->sans[5], "dirname:CN=tpm\\+model,O=TCG");
    kv_cert_info_free(ci);
    ci = NULL;
    kv_cert_info_free(NULL);

    /* out of order, a bundle of 9, trailing text, two DER certificates,
     * an empty input: refused, naming the position; the chain stays */
    bad = bundle(disorder, 3, &len);
    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)bad, len), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "certificate 1 of the chain ('CN=dev-42,O=Fleet') "
                                                 "is issued by 'CN=kv intermediate,O=kv', not by "
                                                 "certificate 2 ('CN=kv root')"));
    free(bad);
    for (int i = 1; i < 9; i++)
        chain[i] = inter;
    bad = bundle(chain, 9, &len);
    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)bad, len), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "more than 8 certificates"));
    free(bad);
    bad = malloc(strlen(good) + 8);
    sprintf(bad, "%sjunk\n", good);
    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)bad, strlen(bad)),
                 KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "after certificate 3"));
    free(bad);
    dlen = i2d_X509(leaf, &der);
    der = OPENSSL_realloc(der, (size_t)dlen * 2);
    memcpy(der + dlen, der, (size_t)dlen);
    ck_assert_rc(ctx, kv_key_store_chain(key, der, (size_t)dlen * 2), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "bytes follow the DER certificate"));
    /* one DER certificate is a chain of one; kv_key_store_cert takes no more */
    ck_assert_rc(ctx, kv_key_store_cert(key, (const unsigned char *)good, strlen(good)),
                 KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "takes one certificate, not 3"));
    ck_assert_rc(ctx, kv_key_store_chain(key, (const unsigned char *)"", 0), KV_ERR_BAD_INPUT);
    chain_is(ctx, key, good);
    ck_assert_rc(ctx, kv_key_store_chain(key, der, (size_t)dlen), KV_OK);
    OPENSSL_free(der);
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_OK);
    /* a token finds the issuers it holds again */
    ck_assert_uint_eq(ci->chain_len, strcmp(backend(), "pkcs11") ? 1 : 3);
    kv_cert_info_free(ci);

    /* due: 7000 of 9000 seconds passed, more than 2/3; its DNS name holds
     * control characters, a backslash and a NUL, shown as \xHH */
    gens = GENERAL_NAMES_new();
    gn = GENERAL_NAME_new();
    ia5 = ASN1_IA5STRING_new();
    ck_assert_int_eq(ASN1_STRING_set(ia5, "a\x1b[2J\\b\x00" "c", 9), 1);
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    ck_assert_int_gt(sk_GENERAL_NAME_push(gens, gn), 0);
    ck_assert_int_eq(X509_add1_ext_i2d(due, NID_subject_alt_name, gens, 0, 0), 1);
    GENERAL_NAMES_free(gens);
    ck_assert_int_gt(X509_sign(due, interk, EVP_sha256()), 0);
    ci = store_leaf(ctx, key, due, inter);
    ck_assert_int_eq(ci->renewal_due, 1);
    ck_assert_int_eq(ci->expired, 0);
    ck_assert_int_eq(ci->renew_after - ci->not_before, 6000);
    ck_assert_uint_eq(ci->nsans, 1);
    ck_assert_str_eq(ci->sans[0], "dns:a\\x1B[2J\\x5Cb\\x00c");
    kv_cert_info_free(ci);
    /* renewed under another intermediate: on a token it is an object of
     * its own beside the first (NSS softokn refuses a label used by
     * another subject: it gets one of its own) */
    ci = store_leaf(ctx, key, leaf2, inter2);
    ck_assert_str_eq(ci->issuer, "CN=kv intermediate 2,O=kv");
    ck_assert_uint_eq(ci->chain_len, strcmp(backend(), "pkcs11") ? 2 : 3);
    kv_cert_info_free(ci);
    /* expired an hour ago: stored (dates are not checked), and said so */
    ci = store_leaf(ctx, key, old, inter);
    ck_assert_int_eq(ci->expired, 1);
    ck_assert_int_eq(ci->renewal_due, 1);
    ck_assert_int_eq(ci->days_left, -1);
    kv_cert_info_free(ci);

    free(good);
    X509_free(root);
    X509_free(inter);
    X509_free(leaf);
    X509_free(due);
    X509_free(old);
    X509_free(inter2);
    X509_free(leaf2);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(rootk);
    EVP_PKEY_free(interk);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("chain")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* The public key of key, for comparing two opens of one key. */
static int same_key(kv_ctx *ctx, kv_key *a, kv_key *b)
{
    unsigned char pa[1024], pb[1024];
    size_t la = pub_der(ctx, a, pa, sizeof(pa)), lb = pub_der(ctx, b, pb, sizeof(pb));

    return la == lb && memcmp(pa, pb, la) == 0;
}

/* Open data as a key reference, expecting want; on failure the detail never
 * shows the secret "s3cr3t-pin". */
static void ref_refused(kv_ctx *ctx, const void *data, size_t len, kv_rc want)
{
    kv_key *k = NULL;

    ck_assert_rc(ctx, kv_key_open_reference(ctx, data, len, &k), want);
    ck_assert_ptr_null(k);
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "s3cr3t-pin"));
    ck_assert_str_ne(kv_errmsg(ctx), "");
}

/* A DER KeyvaultKeyReference { version, ref } (short form lengths): the
 * hostile inputs below are built by hand on purpose. */
static size_t ref_der(unsigned char *buf, int version, const char *ref)
{
    size_t rl = strlen(ref);

    ck_assert_uint_lt(rl, 100);
    buf[0] = 0x30;
    buf[1] = (unsigned char)(5 + rl);
    buf[2] = 0x02, buf[3] = 0x01, buf[4] = (unsigned char)version;
    buf[5] = 0x0c, buf[6] = (unsigned char)rl;
    memcpy(buf + 7, ref, rl);
    return 7 + rl;
}

START_TEST(key_reference_round_trip)
{
    kv_ctx *ctx = new_ctx();
    const char *name = kname("ref");
    kv_key *key = gen(ctx, name, KV_KEY_EC_P256), *k2 = NULL;
    char *pem = NULL, *byname = NULL, *bundle_pem;
    unsigned char der[256], *body = NULL, *cert, *big;
    EVP_PKEY *other;
    long bodylen = 0;
    char *pname = NULL, *phdr = NULL;
    kv_key_info info;
    size_t n;
    int certlen;
    BIO *bio;

    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    /* by URI (the default): the PEM holds the URI, and opens the same key */
    ck_assert_rc(ctx, kv_key_reference_pem(key, 0, &pem), KV_OK);
    ck_assert_ptr_nonnull(strstr(pem, "-----BEGIN KEYVAULT KEY REFERENCE-----\n"));
    ck_assert_rc(ctx, kv_key_open_reference(ctx, (unsigned char *)pem, strlen(pem), &k2), KV_OK);
    ck_assert(same_key(ctx, key, k2));
    kv_key_free(k2);
    k2 = NULL;
    bio = BIO_new_mem_buf(pem, -1);
    ck_assert_int_eq(PEM_read_bio(bio, &pname, &phdr, &body, &bodylen), 1);
    BIO_free(bio);
    ck_assert_str_eq(pname, "KEYVAULT KEY REFERENCE");
    if (strlen(info.uri) < 100) { /* short-form lengths: byte for byte what ref_der makes */
        n = ref_der(der, 1, info.uri);
        ck_assert_int_eq(bodylen, (long)n);
        ck_assert_mem_eq(body, der, n);
    }
    /* its DER alone */
    ck_assert_rc(ctx, kv_key_open_reference(ctx, body, (size_t)bodylen, &k2), KV_OK);
    ck_assert(same_key(ctx, key, k2));
    kv_key_free(k2);
    k2 = NULL;
    /* by name; behind a certificate block in the same file */
    ck_assert_rc(ctx, kv_key_reference_pem(key, KV_REF_BY_NAME, &byname), KV_OK);
    bio = BIO_new(BIO_s_mem());
    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cert = make_cert(other, 7, &certlen);
    PEM_write_bio(bio, "CERTIFICATE", "", cert, certlen);
    BIO_puts(bio, byname);
    n = (size_t)BIO_get_mem_data(bio, &bundle_pem);
    ck_assert_rc(ctx, kv_key_open_reference(ctx, (unsigned char *)bundle_pem, n, &k2), KV_OK);
    ck_assert(same_key(ctx, key, k2));
    kv_key_free(k2);
    k2 = NULL;
    BIO_free(bio);
    OPENSSL_free(cert);
    EVP_PKEY_free(other);
    kv_string_free(byname);
    ck_assert_rc(ctx, kv_key_reference_pem(key, 0x80, &byname), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(byname);

    /* hostile input: refused before any backend is asked */
    ref_refused(ctx, "", 0, KV_ERR_BAD_INPUT);
    ref_refused(ctx, "not a reference", 15, KV_ERR_BAD_INPUT);
    ref_refused(ctx, pem, 40, KV_ERR_BAD_INPUT); /* cut short */
    n = ref_der(der, 2, name);
    ref_refused(ctx, der, n, KV_ERR_UNSUPPORTED);
    n = ref_der(der, 1, name);
    der[n] = 0;
    ref_refused(ctx, der, n + 1, KV_ERR_BAD_INPUT); /* a byte after its end */
    ref_refused(ctx, der, n - 1, KV_ERR_BAD_INPUT); /* a byte short */
    n = ref_der(der, 1, "");
    ref_refused(ctx, der, n, KV_ERR_BAD_INPUT);
    n = ref_der(der, 1, "bad name\ns3cr3t-pin");
    ref_refused(ctx, der, n, KV_ERR_BAD_INPUT);
    n = ref_der(der, 1, "pkcs11:token=t;object=o?pin-value=s3cr3t-pin");
#ifdef KV_WITH_PKCS11
    ref_refused(ctx, der, n, KV_ERR_BAD_URI);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "pin-value"));
    n = ref_der(der, 1, "pkcs11:token=%zzs3cr3t-pin");
    ref_refused(ctx, der, n, KV_ERR_BAD_URI);
#else
    ref_refused(ctx, der, n, KV_ERR_BACKEND_UNAVAILABLE);
#endif
    n = ref_der(der, 1, "no-such-key-s3cr3t-pin");
    ck_assert_rc(ctx, kv_key_open_reference(ctx, der, n, &k2), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_null(k2);
    /* the length limit: 64 KiB */
    big = calloc(1, 64 * 1024 + 1);
    ck_assert_ptr_nonnull(big);
    ref_refused(ctx, big, 64 * 1024 + 1, KV_ERR_BAD_INPUT);
    free(big);

    OPENSSL_free(pname);
    OPENSSL_free(phdr);
    OPENSSL_free(body);
    kv_string_free(pem);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create(backend());
    TCase *sign = tcase_create("sign");
    TCase *ecdh = tcase_create("ecdh");
    TCase *keys = tcase_create("keys");
    TCase *conc = tcase_create("concurrency");

    tcase_add_loop_test(sign, sign_each_type_default_alg, 0, 5);
    tcase_add_loop_test(sign, ecdsa_all_hashes_der_and_raw, 0, 2);
    tcase_add_test(sign, rsa_pss_and_pkcs1_all_hashes);
    tcase_add_test(sign, prehashed_equals_message_signing);
    tcase_add_test(sign, wrong_key_type_and_flags);
    tcase_add_test(sign, output_buffer_sizes);
    tcase_add_loop_test(ecdh, ecdh_both_sides_agree, 0, 2);
    tcase_add_test(ecdh, ecdh_rejects_bad_peers);
    tcase_add_test(ecdh, wycheproof_ecdh_peers);
    tcase_add_test(keys, failed_calls_leave_the_openssl_error_queue_as_found);
    tcase_add_test(keys, lifecycle_open_list_destroy);
    tcase_add_test(keys, malformed_names_and_uris);
    tcase_add_test(keys, certificate_store_and_read);
    tcase_add_test(keys, chain_store_read_and_facts);
    tcase_add_test(keys, key_reference_round_trip);
    tcase_add_test(conc, eight_threads_sign_with_one_context);
    tcase_add_test(conc, fork_parent_child_parent);
    tcase_add_test(conc, fork_four_children_sign_at_once);
    tcase_set_timeout(sign, 120);
    tcase_set_timeout(ecdh, 60);
    tcase_set_timeout(keys, 60);
    tcase_set_timeout(conc, 120);
    suite_add_tcase(s, sign);
    suite_add_tcase(s, ecdh);
    suite_add_tcase(s, keys);
    suite_add_tcase(s, conc);
    return s;
}

int main(void)
{
    return tu_run(api_suite());
}
