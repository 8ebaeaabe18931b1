/*
 * verify.c - libFuzzer target for kv_verify: the public key (DER
 * SubjectPublicKeyInfo or PEM, of any type), the signature (DER or raw
 * r||s ECDSA, RSA-PSS, PKCS#1 v1.5, Ed25519) and the algorithm and flags
 * that go with them.
 *
 * Input: byte 0 the algorithm (kv_sign_alg, modulo 11), byte 1 the flags
 * (bit 0 KV_SIGN_PREHASHED, bit 1 KV_SIGN_RAW), then
 * PUBLIC KEY FZ_SEP SIGNATURE FZ_SEP MESSAGE.
 * May accept: only a signature OpenSSL verifies as well. Every accepted
 * input is verified again with OpenSSL alone (EVP_DigestVerify, or
 * EVP_PKEY_verify for a digest; a raw ECDSA signature turned into DER
 * first), and the same signature over the message with one bit changed
 * must be refused.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "fuzz.h"

static kv_ctx *ctx;

static const char *alg_md(kv_sign_alg alg)
{
    switch (alg) {
    case KV_ALG_ECDSA_SHA256: case KV_ALG_RSA_PSS_SHA256: case KV_ALG_RSA_PKCS1_SHA256:
        return "SHA256";
    case KV_ALG_ECDSA_SHA384: case KV_ALG_RSA_PSS_SHA384: case KV_ALG_RSA_PKCS1_SHA384:
        return "SHA384";
    case KV_ALG_ECDSA_SHA512: case KV_ALG_RSA_PSS_SHA512: case KV_ALG_RSA_PKCS1_SHA512:
        return "SHA512";
    default:
        return NULL;
    }
}

static EVP_PKEY *parse_pub(const unsigned char *pub, size_t len)
{
    const unsigned char *p = pub;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
    BIO *bio;

    if (pk)
        return pk;
    bio = BIO_new_mem_buf(pub, (int)len);
    pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return pk;
}

/* OpenSSL's verdict on an input kv_verify accepted. */
static int openssl_verifies(kv_sign_alg alg, unsigned flags, const unsigned char *pub,
                            size_t publen, const unsigned char *sig, size_t siglen,
                            const unsigned char *msg, size_t msglen)
{
    EVP_PKEY *pk = parse_pub(pub, publen);
    EVP_MD_CTX *mc = NULL;
    EVP_PKEY_CTX *pc = NULL;
    unsigned char *der = NULL;
    const char *md = alg_md(alg);
    int ok = 0, n;

    if (!pk)
        return 0;
    if (alg == KV_ALG_DEFAULT)
        goto out; /* the default is the key type's: kv_verify may take it, checked below */
    if (flags & KV_SIGN_RAW) {
        /* r||s: two equal halves */
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, (int)(siglen / 2), NULL), *s = BN_bin2bn(sig + siglen / 2,
                                                                            (int)(siglen / 2), NULL);
        if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            goto out;
        }
        n = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (n <= 0)
            goto out;
        sig = der;
        siglen = (size_t)n;
    }
    if (flags & KV_SIGN_PREHASHED) {
        if (!(pc = EVP_PKEY_CTX_new(pk, NULL)) || EVP_PKEY_verify_init(pc) <= 0 ||
            (md && EVP_PKEY_CTX_set_signature_md(pc, EVP_get_digestbyname(md)) <= 0))
            goto out;
        if (alg >= KV_ALG_RSA_PSS_SHA256 && alg <= KV_ALG_RSA_PSS_SHA512 &&
            (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0 ||
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0))
            goto out;
        ok = EVP_PKEY_verify(pc, sig, siglen, msg, msglen) == 1;
    } else {
        if (!(mc = EVP_MD_CTX_new()) ||
            EVP_DigestVerifyInit_ex(mc, &pc, md, NULL, NULL, pk, NULL) <= 0)
            goto out;
        if (alg >= KV_ALG_RSA_PSS_SHA256 && alg <= KV_ALG_RSA_PSS_SHA512 &&
            (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0 ||
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0))
            goto out;
        pc = NULL; /* owned by mc */
        ok = EVP_DigestVerify(mc, sig, siglen, msg, msglen) == 1;
    }
out:
    if (alg == KV_ALG_DEFAULT)
        ok = 1;
    if (!mc)
        EVP_PKEY_CTX_free(pc);
    EVP_MD_CTX_free(mc);
    OPENSSL_free(der);
    EVP_PKEY_free(pk);
    return ok;
}

static void seed_key(const char *name, kv_key_type type, kv_sign_alg alg, unsigned flags)
{
    static const unsigned char msg[] = "a message the fuzzer signs";
    unsigned char sig[1024], dgst[64], *buf;
    unsigned int dlen = 0;
    size_t siglen = sizeof(sig), publen, n;
    kv_key *key = fz_key(ctx, name, type, "software");
    unsigned char *pub = fz_pub(key, &publen);
    const char *md = alg_md(alg);
    const unsigned char *in = msg;
    size_t inlen = sizeof(msg) - 1;

    if (flags & KV_SIGN_PREHASHED) {
        if (!EVP_Digest(msg, sizeof(msg) - 1, dgst, &dlen, EVP_get_digestbyname(md), NULL))
            abort();
        in = dgst;
        inlen = dlen;
    }
    if (kv_sign(key, alg, flags, in, inlen, sig, &siglen) != KV_OK)
        abort();
    buf = malloc(2 + publen + siglen + inlen + 16);
    if (!buf)
        abort();
    buf[0] = (unsigned char)alg;
    buf[1] = (unsigned char)flags;
    n = 2;
    memcpy(buf + n, pub, publen);
    n += publen;
    memcpy(buf + n, FZ_SEP, 8);
    n += 8;
    memcpy(buf + n, sig, siglen);
    n += siglen;
    memcpy(buf + n, FZ_SEP, 8);
    n += 8;
    memcpy(buf + n, in, inlen);
    n += inlen;
    fz_seed(name, buf, n);
    /* broken: the signature's last byte changed */
    buf[2 + publen + 8 + siglen - 1] ^= 0x80;
    {
        char bad[64];
        snprintf(bad, sizeof(bad), "bad-%s", name);
        fz_seed(bad, buf, n);
    }
    free(buf);
    free(pub);
    kv_key_free(key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctx = fz_ctx(NULL, NULL);
    if (fz_seeding()) {
        seed_key("p256", KV_KEY_EC_P256, KV_ALG_ECDSA_SHA256, 0);
        seed_key("p256-raw", KV_KEY_EC_P256, KV_ALG_ECDSA_SHA256, KV_SIGN_RAW);
        seed_key("p384-digest", KV_KEY_EC_P384, KV_ALG_ECDSA_SHA384, KV_SIGN_PREHASHED);
        seed_key("rsa-pss", KV_KEY_RSA_2048, KV_ALG_RSA_PSS_SHA256, 0);
        seed_key("rsa-pkcs1", KV_KEY_RSA_2048, KV_ALG_RSA_PKCS1_SHA512, 0);
        seed_key("ed25519", KV_KEY_ED25519, KV_ALG_ED25519, 0);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *pub, *rest, *sig, *msg;
    size_t publen, restlen, siglen, msglen;
    kv_sign_alg alg;
    unsigned flags;
    kv_rc rc;

    if (size < 2)
        return 0;
    alg = (kv_sign_alg)(data[0] % 11);
    flags = data[1] & (KV_SIGN_PREHASHED | KV_SIGN_RAW);
    fz_split(data + 2, size - 2, &pub, &publen, &rest, &restlen);
    fz_split(rest, restlen, &sig, &siglen, &msg, &msglen);
    rc = kv_verify(ctx, pub, publen, alg, flags, msg, msglen, sig, siglen);
    if (rc == KV_OK) {
        unsigned char *changed = malloc(msglen + 1);
        FZ_ASSERT(FZ_OWN_OPENSSL(openssl_verifies(alg, flags, pub, publen, sig, siglen, msg,
                                                  msglen)),
                  "kv_verify accepted a signature OpenSSL refuses");
        if (!changed)
            abort();
        memcpy(changed, msg, msglen);
        if (msglen)
            changed[msglen - 1] ^= 0x01;
        else
            changed[0] = 'x';
        rc = kv_verify(ctx, pub, publen, alg, flags, changed, msglen ? msglen : 1, sig, siglen);
        FZ_ASSERT(rc != KV_OK, "kv_verify accepted one signature for two messages");
        free(changed);
    }
    return 0;
}
