/*
 * check_wycheproof.c - Project Wycheproof vectors (tests/vectors/wycheproof,
 * copied from ../shared/testvectors/wycheproof) through libkeyvault's
 * verification and ECDH peer validation.
 *
 * Every "valid" case must be accepted and every "invalid" case rejected.
 * "acceptable" cases follow the policy in docs/wycheproof.md, which this
 * file asserts for the flags it names and counts for the rest.
 */
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "internal.h"
#include "testutil.h"

enum kind { SIG_DER, SIG_P1363, SIG_ED25519, SIG_RSA_PSS, SIG_RSA_PKCS1, ECDH_ASN, ECDH_POINT };

struct vector_file {
    const char *file;
    enum kind kind;
};

static const struct vector_file files[] = {
    { "ecdsa_secp256r1_sha256_test.json", SIG_DER },
    { "ecdsa_secp256r1_sha256_p1363_test.json", SIG_P1363 },
    { "ecdsa_secp384r1_sha384_test.json", SIG_DER },
    { "ecdsa_secp384r1_sha384_p1363_test.json", SIG_P1363 },
    { "ecdsa_secp384r1_sha256_test.json", SIG_DER },
    { "ed25519_test.json", SIG_ED25519 },
    { "rsa_pss_2048_sha256_mgf1_32_test.json", SIG_RSA_PSS },
    { "rsa_signature_2048_sha256_test.json", SIG_RSA_PKCS1 },
    { "ecdh_secp256r1_test.json", ECDH_ASN },
    { "ecdh_secp256r1_ecpoint_test.json", ECDH_POINT },
    { "ecdh_secp384r1_test.json", ECDH_ASN },
    { "ecdh_secp384r1_ecpoint_test.json", ECDH_POINT },
};

struct tally {
    int total, valid_ok, invalid_ok, acc_yes, acc_no;
    int bad;          /* valid rejected or invalid accepted */
    char bad_ids[256];
    int policy_bad;   /* acceptable case against the written policy */
    char policy_ids[256];
};

static bool has_flag(json_t *test, const char *flag)
{
    json_t *flags = json_object_get(test, "flags"), *f;
    size_t i;

    json_array_foreach(flags, i, f)
        if (!strcmp(json_string_value(f), flag))
            return true;
    return false;
}

static void note(char *ids, size_t len, int tc)
{
    size_t used = strlen(ids);
    if (used + 12 < len)
        snprintf(ids + used, len - used, " %d", tc);
}

static void record(struct tally *t, json_t *test, bool accepted)
{
    const char *result = json_string_value(json_object_get(test, "result"));
    int tc = (int)json_integer_value(json_object_get(test, "tcId"));

    t->total++;
    if (!strcmp(result, "valid")) {
        if (accepted)
            t->valid_ok++;
        else
            t->bad++, note(t->bad_ids, sizeof(t->bad_ids), tc);
    } else if (!strcmp(result, "invalid")) {
        if (!accepted)
            t->invalid_ok++;
        else
            t->bad++, note(t->bad_ids, sizeof(t->bad_ids), tc);
    } else {
        accepted ? t->acc_yes++ : t->acc_no++;
        /* policy (docs/wycheproof.md): compressed points are accepted;
         * explicit curve parameters and non-DER encodings are refused */
        if ((has_flag(test, "CompressedPoint") && !accepted) ||
            (has_flag(test, "UnnamedCurve") && accepted) ||
            (has_flag(test, "InvalidAsn") && accepted) ||
            (has_flag(test, "MissingNull") && accepted))
            t->policy_bad++, note(t->policy_ids, sizeof(t->policy_ids), tc);
    }
}

static kv_sign_alg sig_alg(enum kind kind, const char *sha)
{
    bool s384 = sha && !strcmp(sha, "SHA-384"), s512 = sha && !strcmp(sha, "SHA-512");

    switch (kind) {
    case SIG_ED25519:
        return KV_ALG_ED25519;
    case SIG_RSA_PSS:
        return s512 ? KV_ALG_RSA_PSS_SHA512 : s384 ? KV_ALG_RSA_PSS_SHA384 : KV_ALG_RSA_PSS_SHA256;
    case SIG_RSA_PKCS1:
        return s512 ? KV_ALG_RSA_PKCS1_SHA512
                    : s384 ? KV_ALG_RSA_PKCS1_SHA384 : KV_ALG_RSA_PKCS1_SHA256;
    default:
        return s512 ? KV_ALG_ECDSA_SHA512 : s384 ? KV_ALG_ECDSA_SHA384 : KV_ALG_ECDSA_SHA256;
    }
}

static void run_sig_group(kv_ctx *ctx, enum kind kind, json_t *group, struct tally *t)
{
    const char *sha = json_string_value(json_object_get(group, "sha"));
    kv_sign_alg alg = sig_alg(kind, sha);
    unsigned flags = kind == SIG_P1363 ? KV_SIGN_RAW : 0;
    size_t publen, i;
    unsigned char *pub = tu_unhex(json_string_value(json_object_get(group, "publicKeyDer")),
                                  &publen);
    json_t *test;

    json_array_foreach(json_object_get(group, "tests"), i, test) {
        size_t msglen, siglen;
        unsigned char *m = tu_unhex(json_string_value(json_object_get(test, "msg")), &msglen);
        unsigned char *s = tu_unhex(json_string_value(json_object_get(test, "sig")), &siglen);
        kv_rc rc = kv_verify(ctx, pub, publen, alg, flags, m, msglen, s, siglen);

        /* a rejection must be a verdict on the signature, not a setup failure */
        ck_assert_msg(rc == KV_OK || rc == KV_ERR_BAD_SIGNATURE, "tcId %lld: %s: %s",
                      json_integer_value(json_object_get(test, "tcId")), kv_strerror(rc),
                      kv_errmsg(ctx));
        record(t, test, rc == KV_OK);
        OPENSSL_free(m);
        OPENSSL_free(s);
    }
    OPENSSL_free(pub);
}

static EVP_PKEY *ec_private(const char *group, const unsigned char *d, size_t dlen)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_bin2bn(d, (int)dlen, NULL);
    OSSL_PARAM *params;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *pkey = NULL;

    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn);
    params = OSSL_PARAM_BLD_to_param(bld);
    ck_assert_int_eq(EVP_PKEY_fromdata_init(pctx), 1);
    ck_assert_int_eq(EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEYPAIR, params), 1);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    EVP_PKEY_CTX_free(pctx);
    return pkey;
}

static void run_ecdh_group(kv_ctx *ctx, json_t *group, struct tally *t)
{
    const char *curve = json_string_value(json_object_get(group, "curve"));
    const char *name = !strcmp(curve, "secp256r1") ? "P-256" : "P-384";
    json_t *test;
    size_t i;

    json_array_foreach(json_object_get(group, "tests"), i, test) {
        size_t publen, dlen, zlen, outlen = 64;
        unsigned char *pub = tu_unhex(json_string_value(json_object_get(test, "public")), &publen);
        unsigned char *d = tu_unhex(json_string_value(json_object_get(test, "private")), &dlen);
        unsigned char *z = tu_unhex(json_string_value(json_object_get(test, "shared")), &zlen);
        unsigned char out[64];
        EVP_PKEY *priv = ec_private(name, d, dlen), *peer = NULL;
        bool accepted = false;

        kv_err_begin(ctx);
        if (kv_peer_decode(ctx, name, pub, publen, &peer) == KV_OK &&
            kv_soft_derive_pkey(ctx, ctx->libctx, priv, peer, out, &outlen) == KV_OK) {
            accepted = true;
            /* an accepted case must also give the right secret */
            ck_assert_msg(outlen == zlen && !memcmp(out, z, zlen), "tcId %lld: wrong secret",
                          json_integer_value(json_object_get(test, "tcId")));
        }
        record(t, test, accepted);
        EVP_PKEY_free(priv);
        EVP_PKEY_free(peer);
        OPENSSL_free(pub);
        OPENSSL_free(d);
        OPENSSL_free(z);
    }
}

START_TEST(wycheproof_file)
{
    const struct vector_file *vf = &files[_i];
    char rel[256];
    json_error_t jerr;
    json_t *doc, *group;
    struct tally t;
    kv_ctx *ctx = tu_ctx(NULL);
    size_t i;

    memset(&t, 0, sizeof(t));
    snprintf(rel, sizeof(rel), "tests/vectors/wycheproof/%s", vf->file);
    doc = json_load_file(tu_srcpath(rel), 0, &jerr);
    ck_assert_msg(doc != NULL, "%s: %s", rel, jerr.text);
    json_array_foreach(json_object_get(doc, "testGroups"), i, group) {
        if (vf->kind == ECDH_ASN || vf->kind == ECDH_POINT)
            run_ecdh_group(ctx, group, &t);
        else
            run_sig_group(ctx, vf->kind, group, &t);
    }
    printf("wycheproof %-42s %4d tests: %4d valid accepted, %4d invalid rejected, "
           "%3d acceptable (%d accepted, %d rejected)\n",
           vf->file, t.total, t.valid_ok, t.invalid_ok, t.acc_yes + t.acc_no, t.acc_yes,
           t.acc_no);
    fflush(stdout);
    ck_assert_int_eq(t.total, (int)json_integer_value(json_object_get(doc, "numberOfTests")));
    ck_assert_msg(t.bad == 0, "%s: %d cases decided wrongly, tcIds:%s", vf->file, t.bad,
                  t.bad_ids);
    ck_assert_msg(t.policy_bad == 0, "%s: %d acceptable cases against policy, tcIds:%s",
                  vf->file, t.policy_bad, t.policy_ids);
    json_decref(doc);
    kv_ctx_free(ctx);
}
END_TEST

static Suite *wycheproof_suite(void)
{
    Suite *s = suite_create("wycheproof");
    TCase *tc = tcase_create("vectors");

    tcase_add_loop_test(tc, wycheproof_file, 0, (int)(sizeof(files) / sizeof(files[0])));
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(wycheproof_suite());
}
