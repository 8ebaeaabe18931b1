/*
 * ecdh.c - libFuzzer target for ECDH peer keys (kv_ecdh with a software
 * key): DER SubjectPublicKeyInfo, PEM, and SEC1 points, compressed or not,
 * on P-256 and P-384.
 *
 * Input: one byte choosing the key (even: P-256, odd: P-384), then the
 * peer key.
 * May accept: only a point on the key's curve. Every accepted peer is
 * parsed again with OpenSSL alone (d2i_PUBKEY, PEM, or the curve's
 * EC_POINT_oct2point) and must be a valid public key on that curve
 * (EVP_PKEY_public_check), and the secret must be the curve's size.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fuzz.h"

static kv_key *keys[2];
static const char *const curves[2] = { "P-256", "P-384" };

/* OpenSSL's own view: is peer a valid public key on curve? */
static int openssl_accepts(const char *curve, const unsigned char *peer, size_t len)
{
    const unsigned char *p = peer;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
    EVP_PKEY_CTX *pc = NULL;
    char group[64];
    int ok = 0;

    if (pk && p != peer + len) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    if (!pk) {
        BIO *bio = BIO_new_mem_buf(peer, (int)len);
        pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    }
    if (!pk) {
        OSSL_PARAM params[3];
        pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)curve, 0);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)peer, len);
        params[2] = OSSL_PARAM_construct_end();
        if (!pc || EVP_PKEY_fromdata_init(pc) <= 0 ||
            EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
            pk = NULL;
        EVP_PKEY_CTX_free(pc);
        pc = NULL;
    }
    if (!pk)
        return 0;
    if (EVP_PKEY_is_a(pk, "EC") &&
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       NULL) == 1 &&
        (!strcmp(group, curve) || !strcmp(group, !strcmp(curve, "P-256") ? "prime256v1"
                                                                         : "secp384r1")) &&
        (pc = EVP_PKEY_CTX_new(pk, NULL)) && EVP_PKEY_public_check(pc) == 1)
        ok = 1;
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pk);
    return ok;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kv_ctx *ctx;

    (void)argc;
    (void)argv;
    ctx = fz_ctx(NULL, NULL);
    keys[0] = fz_key(ctx, "e256", KV_KEY_EC_P256, "software");
    keys[1] = fz_key(ctx, "e384", KV_KEY_EC_P384, "software");
    if (fz_seeding()) {
        /* peers for key i: its own public key (ECDH with oneself is
         * valid) as DER, PEM and SEC1 points */
        for (int i = 0; i < 2; i++) {
            size_t len, ptlen;
            unsigned char *der = fz_pub(keys[i], &len), pt[200];
            const unsigned char *p = der;
            EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
            char *pem = NULL, name[48];
            if (!pk || kv_key_public_pem(keys[i], &pem) != KV_OK)
                abort();
            snprintf(name, sizeof(name), "der-%d", i);
            fz_seed1(name, i, der, len);
            snprintf(name, sizeof(name), "pem-%d", i);
            fz_seed1(name, i, pem, strlen(pem));
            for (int form = 0; form < 2; form++) {
                EVP_PKEY_set_utf8_string_param(pk, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                               form ? "compressed" : "uncompressed");
                if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
                                                    sizeof(pt), &ptlen) != 1)
                    abort();
                snprintf(name, sizeof(name), "sec1-%d-%s", i, form ? "compressed" : "plain");
                fz_seed1(name, i, pt, ptlen);
                /* broken: the point with its last byte changed */
                pt[ptlen - 1] ^= 0x01;
                snprintf(name, sizeof(name), "bad-sec1-%d-%s", i, form ? "compressed" : "plain");
                fz_seed1(name, i, pt, ptlen);
            }
            EVP_PKEY_free(pk);
            kv_string_free(pem);
            free(der);
        }
        fz_seed("bad-empty", "\0", 1);
        fz_seed("bad-infinity", "\0\0", 2);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    unsigned char secret[64];
    size_t len = sizeof(secret);
    int k;
    kv_rc rc;

    if (size < 1)
        return 0;
    k = data[0] & 1;
    rc = kv_ecdh(keys[k], data + 1, size - 1, secret, &len);
    if (rc == KV_OK) {
        FZ_ASSERT(len == (k ? 48u : 32u), "kv_ecdh: a secret of the wrong size");
        FZ_ASSERT(FZ_OWN_OPENSSL(openssl_accepts(curves[k], data + 1, size - 1)),
                  "kv_ecdh accepted a peer key OpenSSL says is not on the curve");
    }
    return 0;
}
