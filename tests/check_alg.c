/*
 * check_alg.c - names, error strings, ECDSA encodings and ECDH peer-key
 * validation (the core's own checks, before any backend sees the key).
 */
#include <string.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"
#include "testutil.h"

START_TEST(names_round_trip)
{
    for (int t = KV_KEY_EC_P256; t <= KV_KEY_ED25519; t++)
        ck_assert_int_eq(kv_key_type_from_name(kv_key_type_name(t)), t);
    ck_assert_int_eq(kv_key_type_from_name("ec-p521"), KV_KEY_UNKNOWN);
    ck_assert_int_eq(kv_key_type_from_name(NULL), KV_KEY_UNKNOWN);
    for (int a = KV_ALG_DEFAULT; a <= KV_ALG_ED25519; a++)
        ck_assert_int_eq(kv_sign_alg_from_name(kv_sign_alg_name(a)), a);
    ck_assert_int_eq(kv_sign_alg_from_name("md5"), -1);
    ck_assert_str_eq(kv_assurance_name(KV_ASSURANCE_SOFTWARE), "software");
    ck_assert_str_eq(kv_assurance_name(KV_ASSURANCE_TOKEN), "token");
    ck_assert_str_eq(kv_assurance_name(KV_ASSURANCE_TPM), "tpm");
}
END_TEST

START_TEST(every_error_code_has_its_own_text)
{
    for (int a = KV_OK; a <= KV_ERR_CLAIMS; a++) {
        ck_assert_ptr_nonnull(kv_strerror(a));
        ck_assert_str_ne(kv_strerror(a), "unknown error code");
        for (int b = KV_OK; b < a; b++)
            ck_assert_str_ne(kv_strerror(a), kv_strerror(b));
    }
    ck_assert_str_eq(kv_strerror((kv_rc)999), "unknown error code");
}
END_TEST

START_TEST(error_detail_is_per_thread_and_first_wins)
{
    kv_ctx *a = tu_ctx(NULL);

    kv_err_begin(a);
    ck_assert_str_eq(kv_errmsg(a), "");
    ck_assert_int_eq(kv_error_code(a, KV_ERR_BACKEND, "CK_RV", 0xa0, "C_Login failed"),
                     KV_ERR_BACKEND);
    kv_error(a, KV_ERR_IO, "outer layer");
    ck_assert_str_eq(kv_errmsg(a), "C_Login failed");
    const char *kind = NULL;
    ck_assert_uint_eq(kv_backend_code(a, &kind), 0xa0);
    ck_assert_str_eq(kind, "CK_RV");
    /* another context sees nothing */
    ck_assert_str_eq(kv_errmsg(NULL), "");
    ck_assert_uint_eq(kv_backend_code(NULL, &kind), 0);
    kv_ctx_free(a);
}
END_TEST

START_TEST(ecdsa_raw_der_round_trip)
{
    unsigned char raw[64], back[64], *der = NULL;
    size_t derlen = 0, backlen = 0;

    memset(raw, 0, 32);
    raw[31] = 1; /* r = 1: DER drops the leading zeros */
    memset(raw + 32, 0xff, 32);
    ck_assert_rc(NULL, kv_ecdsa_raw_to_der(NULL, raw, 64, &der, &derlen), KV_OK);
    ck_assert_uint_lt(derlen, 72);
    ck_assert_rc(NULL, kv_ecdsa_der_to_raw(NULL, der, derlen, 32, back, &backlen), KV_OK);
    ck_assert_uint_eq(backlen, 64);
    ck_assert_mem_eq(raw, back, 64);
    /* trailing garbage and truncation are refused */
    unsigned char bad[80];
    memcpy(bad, der, derlen);
    bad[derlen] = 0;
    ck_assert_rc(NULL, kv_ecdsa_der_to_raw(NULL, bad, derlen + 1, 32, back, &backlen),
                 KV_ERR_BAD_INPUT);
    ck_assert_rc(NULL, kv_ecdsa_der_to_raw(NULL, der, derlen - 1, 32, back, &backlen),
                 KV_ERR_BAD_INPUT);
    OPENSSL_free(der);
}
END_TEST

/* A fresh P-256 / P-384 public key in the encodings a peer may send. */
static EVP_PKEY *gen(const char *group)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group);
    ck_assert_ptr_nonnull(k);
    return k;
}

static size_t point_of(EVP_PKEY *k, unsigned char *buf, size_t len, int compressed)
{
    size_t n = 0;
    ck_assert_int_eq(EVP_PKEY_get_octet_string_param(k, "encoded-pub-key", buf, len, &n), 1);
    if (compressed) {
        /* SEC1 2.3.3: 02 or 03 by the parity of y, then x */
        buf[0] = (buf[n - 1] & 1) ? 0x03 : 0x02;
        n = 1 + (n - 1) / 2;
    }
    return n;
}

START_TEST(peer_encodings_accepted)
{
    EVP_PKEY *k = gen("P-256"), *out = NULL;
    unsigned char pt[200], *der = NULL;
    size_t n;
    int dlen;
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long pemlen;

    n = point_of(k, pt, sizeof(pt), 0);
    ck_assert_uint_eq(n, 65);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", pt, n, &out), KV_OK);
    ck_assert_int_eq(EVP_PKEY_eq(k, out), 1);
    EVP_PKEY_free(out);

    dlen = i2d_PUBKEY(k, &der);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", der, (size_t)dlen, &out), KV_OK);
    EVP_PKEY_free(out);

    PEM_write_bio_PUBKEY(bio, k);
    pemlen = BIO_get_mem_data(bio, &pem);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", (unsigned char *)pem, (size_t)pemlen, &out),
                 KV_OK);
    EVP_PKEY_free(out);

    n = point_of(k, pt, sizeof(pt), 1);
    ck_assert_uint_eq(n, 33);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", pt, n, &out), KV_OK);
    ck_assert_int_eq(EVP_PKEY_eq(k, out), 1);
    EVP_PKEY_free(out);
    OPENSSL_free(der);
    BIO_free(bio);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(bad_peers_rejected)
{
    EVP_PKEY *k = gen("P-256"), *k384 = gen("P-384"), *out = NULL;
    unsigned char pt[200], *der = NULL;
    size_t n;
    int dlen;

    n = point_of(k, pt, sizeof(pt), 0);
    /* off the curve */
    pt[64] ^= 1;
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", pt, n, &out), KV_ERR_INVALID_PEER_KEY);
    ck_assert_ptr_null(out);
    pt[64] ^= 1;
    /* truncated, empty, point at infinity, unknown prefix */
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", pt, n - 1, &out), KV_ERR_INVALID_PEER_KEY);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", pt, 0, &out), KV_ERR_INVALID_PEER_KEY);
    unsigned char inf[1] = { 0x00 };
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", inf, 1, &out), KV_ERR_INVALID_PEER_KEY);
    /* a P-256 point offered to a P-384 key */
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-384", pt, n, &out), KV_ERR_INVALID_PEER_KEY);
    /* a P-384 SPKI offered to a P-256 key: the message names both curves */
    dlen = i2d_PUBKEY(k384, &der);
    kv_err_begin(NULL);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", der, (size_t)dlen, &out),
                 KV_ERR_INVALID_PEER_KEY);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "P-256"));
    /* DER with trailing bytes */
    unsigned char longer[300];
    memcpy(longer, der, (size_t)dlen);
    longer[dlen] = 0;
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-384", longer, (size_t)dlen + 1, &out),
                 KV_ERR_INVALID_PEER_KEY);
    /* an RSA key is no ECDH peer */
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    unsigned char *rder = NULL;
    int rlen = i2d_PUBKEY(rsa, &rder);
    ck_assert_rc(NULL, kv_peer_decode(NULL, "P-256", rder, (size_t)rlen, &out),
                 KV_ERR_INVALID_PEER_KEY);
    OPENSSL_free(rder);
    EVP_PKEY_free(rsa);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k384);
}
END_TEST

static Suite *alg_suite(void)
{
    Suite *s = suite_create("alg");
    TCase *tc = tcase_create("alg");

    tcase_add_test(tc, names_round_trip);
    tcase_add_test(tc, every_error_code_has_its_own_text);
    tcase_add_test(tc, error_detail_is_per_thread_and_first_wins);
    tcase_add_test(tc, ecdsa_raw_der_round_trip);
    tcase_add_test(tc, peer_encodings_accepted);
    tcase_add_test(tc, bad_peers_rejected);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(alg_suite());
}
