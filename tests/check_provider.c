/*
 * check_provider.c - the keyvault OpenSSL provider through kv_key_evp_pkey,
 * on software-store keys: every signature scheme verified by OpenSSL's
 * default provider, certificates signed with X509_sign, ECDH through
 * EVP_PKEY_derive against the peer's own derivation, the private half
 * never exported, public halves compared and exported, settings the vault
 * cannot honour refused with a clear message, public-only objects refused
 * for private operations, another OSSL_LIB_CTX, and the key's lifetime.
 * (TLS on every backend: tests/provider.sh.)
 */
#include <stdio.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "testutil.h"

static kv_ctx *ctx;

static const struct {
    const char *name;
    kv_key_type type;
    const char *is_a;
} types[] = {
    { "p-ec256", KV_KEY_EC_P256, "EC" },
    { "p-ec384", KV_KEY_EC_P384, "EC" },
    { "p-rsa", KV_KEY_RSA_2048, "RSA" },
    { "p-ed", KV_KEY_ED25519, "ED25519" },
};

static void setup(void)
{
    ctx = tu_ctx(NULL);
}

static void teardown(void)
{
    kv_ctx_free(ctx);
    ctx = NULL;
}

/* A new vault key of the type and its EVP_PKEY; the kv_key is freed at once
 * (the EVP_PKEY keeps its own reference). */
static EVP_PKEY *vault_pkey(int i, OSSL_LIB_CTX *libctx)
{
    kv_key *key = NULL;
    EVP_PKEY *pkey = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, types[i].name, types[i].type, "software", &key), KV_OK);
    ck_assert_rc(ctx, kv_key_evp_pkey(key, libctx, &pkey), KV_OK);
    kv_key_free(key);
    ck_assert_ptr_nonnull(pkey);
    return pkey;
}

/* The public half as an ordinary default-provider key. */
static EVP_PKEY *public_copy(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int n = i2d_PUBKEY(pkey, &der);
    EVP_PKEY *pub;

    ck_assert_int_gt(n, 0);
    p = der;
    pub = d2i_PUBKEY(NULL, &p, n);
    OPENSSL_free(der);
    ck_assert_ptr_nonnull(pub);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pub)), "default");
    return pub;
}

/* Does the first error on the queue mention text? Clears the queue. */
static int error_says(const char *text)
{
    char buf[512] = "";
    const char *data = NULL;
    unsigned long e = ERR_peek_error_data(&data, NULL);
    int found;

    ERR_error_string_n(e, buf, sizeof(buf));
    found = strstr(buf, text) || (data && strstr(data, text));
    if (!found)
        ERR_print_errors_fp(stderr);
    ERR_clear_error();
    return found;
}

START_TEST(key_facts_and_no_private_export)
{
    static const int bits[] = { 256, 384, 2048, 256 };
    EVP_PKEY *pkey = vault_pkey(_i, NULL), *pub;
    OSSL_PARAM *params = NULL;
    unsigned char *der = NULL;
    BIO *b = BIO_new(BIO_s_mem());

    ck_assert_int_eq(EVP_PKEY_is_a(pkey, types[_i].is_a), 1);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)), "keyvault");
    ck_assert_int_eq(EVP_PKEY_get_bits(pkey), bits[_i]);
    ck_assert_int_gt(EVP_PKEY_get_security_bits(pkey), 100);
    ck_assert_int_gt(EVP_PKEY_get_size(pkey), 60);
    /* the private half: refused, and said so */
    ck_assert_int_ne(EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params), 1);
    ck_assert_msg(error_says("cannot be exported"), "EVP_PKEY_todata's refusal is explained");
    ck_assert_int_le(i2d_PrivateKey(pkey, &der), 0);
    ck_assert_ptr_null(der);
    ck_assert_msg(error_says("cannot be exported"), "i2d_PrivateKey's refusal is explained");
    ck_assert_int_ne(PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL), 1);
    ck_assert_int_eq(BIO_pending(b), 0);
    ERR_clear_error();
    /* the public half: exported, and equal to the vault's */
    ck_assert_int_eq(EVP_PKEY_todata(pkey, EVP_PKEY_PUBLIC_KEY, &params), 1);
    ck_assert_ptr_null(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PRIV_KEY));
    ck_assert_ptr_null(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_D));
    OSSL_PARAM_free(params);
    pub = public_copy(pkey);
    ck_assert_int_eq(EVP_PKEY_eq(pub, pkey), 1);
    ck_assert_int_eq(EVP_PKEY_eq(pkey, pub), 1);
    ck_assert_int_eq(ERR_peek_error(), 0);
    EVP_PKEY_free(pub);
    BIO_free(b);
    EVP_PKEY_free(pkey);
}
END_TEST

/* sign with the vault key through EVP, verify with the default provider */
static void sign_verify(EVP_PKEY *pkey, EVP_PKEY *pub, const char *md, int pad, int salt)
{
    static const unsigned char msg[] = "the message";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig), max = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL, *vctx = NULL;

    ck_assert_int_eq(EVP_DigestSignInit_ex(m, &pctx, md, NULL, NULL, pkey, NULL), 1);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(pctx)), "keyvault");
    if (pad) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, pad), 1);
        if (pad == RSA_PKCS1_PSS_PADDING)
            ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt), 1);
    }
    ck_assert_int_eq(EVP_DigestSign(m, NULL, &max, msg, sizeof(msg)), 1);
    ck_assert_uint_le(max, sizeof(sig));
    ck_assert_int_eq(EVP_DigestSign(m, sig, &siglen, msg, sizeof(msg)), 1);
    ck_assert_uint_le(siglen, max);

    ck_assert_int_eq(EVP_DigestVerifyInit_ex(v, &vctx, md, NULL, NULL, pub, NULL), 1);
    if (pad) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(vctx, pad), 1);
        if (pad == RSA_PKCS1_PSS_PADDING) /* the verifier insists on the TLS 1.3 salt */
            ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(vctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    ck_assert_int_eq(EVP_DigestVerify(v, sig, siglen, msg, sizeof(msg)), 1);
    sig[siglen / 2] ^= 1;
    ck_assert_int_ne(EVP_DigestVerify(v, sig, siglen, msg, sizeof(msg)), 1);
    ERR_clear_error();
    EVP_MD_CTX_free(m);
    EVP_MD_CTX_free(v);
}

START_TEST(every_scheme_verifies_in_software)
{
    EVP_PKEY *ec = vault_pkey(0, NULL), *ec384 = vault_pkey(1, NULL);
    EVP_PKEY *rsa = vault_pkey(2, NULL), *ed = vault_pkey(3, NULL);
    EVP_PKEY *ecp = public_copy(ec), *ec384p = public_copy(ec384);
    EVP_PKEY *rsap = public_copy(rsa), *edp = public_copy(ed);
    static const char *const mds[] = { "SHA256", "SHA384", "SHA512" };

    for (int i = 0; i < 3; i++) {
        sign_verify(ec, ecp, mds[i], 0, 0);
        sign_verify(ec384, ec384p, mds[i], 0, 0);
        sign_verify(rsa, rsap, mds[i], RSA_PKCS1_PADDING, 0);
        sign_verify(rsa, rsap, mds[i], RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST);
        /* "auto" lets the signer choose: the digest length */
        sign_verify(rsa, rsap, mds[i], RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_AUTO);
    }
    sign_verify(rsa, rsap, "SHA256", RSA_PKCS1_PSS_PADDING, 32);
    sign_verify(ed, edp, NULL, 0, 0);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec384);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(ecp);
    EVP_PKEY_free(ec384p);
    EVP_PKEY_free(rsap);
    EVP_PKEY_free(edp);
}
END_TEST

START_TEST(prehashed_sign_and_verify_through_the_provider)
{
    EVP_PKEY *pkey = vault_pkey(0, NULL);
    EVP_PKEY_CTX *s = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    unsigned char digest[32], sig[128];
    size_t siglen = sizeof(sig);

    memset(digest, 0x5a, sizeof(digest));
    ck_assert_int_eq(EVP_PKEY_sign_init(s), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(s, EVP_sha256()), 1);
    ck_assert_int_eq(EVP_PKEY_sign(s, sig, &siglen, digest, sizeof(digest)), 1);
    /* verification through our provider runs in software */
    ck_assert_int_eq(EVP_PKEY_verify_init(s), 1);
    ck_assert_int_eq(EVP_PKEY_verify(s, sig, siglen, digest, sizeof(digest)), 1);
    digest[0] ^= 1;
    ck_assert_int_ne(EVP_PKEY_verify(s, sig, siglen, digest, sizeof(digest)), 1);
    ERR_clear_error();
    EVP_PKEY_CTX_free(s);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(x509_sign_with_a_vault_key)
{
    EVP_PKEY *pkey = vault_pkey(_i, NULL);
    X509 *x = X509_new();
    const X509_ALGOR *alg = NULL;
    char name[80];

    ck_assert_int_eq(X509_set_version(x, X509_VERSION_3), 1);
    ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
    ck_assert_int_eq(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                                (const unsigned char *)"vault", -1, -1, 0), 1);
    ck_assert_int_eq(X509_set_issuer_name(x, X509_get_subject_name(x)), 1);
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    ck_assert_int_eq(X509_set_pubkey(x, pkey), 1);
    ck_assert_int_gt(X509_sign(x, pkey, _i == 3 ? NULL : EVP_sha256()), 0);
    X509_get0_signature(NULL, &alg, x);
    OBJ_obj2txt(name, sizeof(name), alg->algorithm, 0);
    ck_assert_msg(strstr(name, _i == 3 ? "ED25519" : _i == 2 ? "sha256WithRSA" : "ecdsa-with-SHA256"),
                  "signature algorithm %s", name);
    ck_assert_int_eq(X509_verify(x, X509_get0_pubkey(x)), 1);
    ck_assert_int_eq(X509_check_private_key(x, pkey), 1);
    X509_free(x);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(ecdh_agrees_with_the_peer)
{
    EVP_PKEY *pkey = vault_pkey(_i, NULL), *pub = public_copy(pkey);
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", _i ? "P-384" : "P-256");
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", _i ? "P-256" : "P-384");
    EVP_PKEY_CTX *d = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    EVP_PKEY_CTX *pd = EVP_PKEY_CTX_new_from_pkey(NULL, peer, NULL);
    unsigned char a[64], b[64];
    size_t alen = sizeof(a), blen = sizeof(b), need = 0;

    ck_assert_ptr_nonnull(peer);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(peer)), "default");
    ck_assert_int_eq(EVP_PKEY_derive_init(d), 1);
    ck_assert_int_eq(EVP_PKEY_derive_set_peer(d, peer), 1);
    ck_assert_int_eq(EVP_PKEY_derive(d, NULL, &need), 1);
    ck_assert_uint_eq(need, _i ? 48 : 32);
    ck_assert_int_eq(EVP_PKEY_derive(d, a, &alen), 1);
    ck_assert_int_eq(EVP_PKEY_derive_init(pd), 1);
    ck_assert_int_eq(EVP_PKEY_derive_set_peer(pd, pub), 1);
    ck_assert_int_eq(EVP_PKEY_derive(pd, b, &blen), 1);
    ck_assert_uint_eq(alen, blen);
    ck_assert_mem_eq(a, b, alen);
    /* a peer on another curve: refused */
    ck_assert_int_eq(EVP_PKEY_derive_init(d), 1);
    ck_assert_int_ne(EVP_PKEY_derive_set_peer(d, other) == 1 &&
                         EVP_PKEY_derive(d, a, &alen) == 1, 1);
    ERR_clear_error();
    EVP_PKEY_CTX_free(d);
    EVP_PKEY_CTX_free(pd);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(other);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(settings_the_vault_cannot_honour)
{
    EVP_PKEY *rsa = vault_pkey(2, NULL), *ec = vault_pkey(0, NULL);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[512];
    size_t siglen = sizeof(sig);

    ck_assert_int_eq(EVP_DigestSignInit_ex(m, &pctx, "SHA256", NULL, NULL, rsa, NULL), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    ck_assert_int_le(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_MAX), 0);
    ck_assert_msg(error_says("salt length 'max' is not offered"), "salt max refused clearly");
    ck_assert_int_le(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 20), 0);
    ck_assert_msg(error_says("salt length 20 is not offered"), "salt 20 refused clearly");
    ck_assert_int_le(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_NO_PADDING), 0);
    ck_assert_msg(error_says("padding mode 3 is not offered"), "no padding refused clearly");
    ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()), 1);
    ck_assert_int_ne(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)"x", 1), 1);
    ck_assert_msg(error_says("MGF1"), "a different MGF1 digest refused clearly");
    ck_assert_int_eq(EVP_DigestSignInit_ex(m, NULL, "SHA1", NULL, NULL, ec, NULL), 1);
    siglen = sizeof(sig);
    ck_assert_int_ne(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)"x", 1), 1);
    ck_assert_msg(error_says("SHA-256, SHA-384 or SHA-512"), "SHA-1 refused clearly");
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(public_only_objects_do_not_sign)
{
    EVP_PKEY *pkey = vault_pkey(0, NULL), *pub = public_copy(pkey), *imported = NULL;
    EVP_PKEY_CTX *pc = NULL, *c = NULL;
    OSSL_PARAM *params = NULL;
    unsigned char sig[128];
    size_t siglen = sizeof(sig);

    /* the public half brought into our provider is public-only */
    ck_assert_int_eq(EVP_PKEY_todata(pub, EVP_PKEY_PUBLIC_KEY, &params), 1);
    pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", "provider=keyvault");
    ck_assert_int_eq(EVP_PKEY_fromdata_init(pc), 1);
    ck_assert_int_eq(EVP_PKEY_fromdata(pc, &imported, EVP_PKEY_PUBLIC_KEY, params), 1);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(imported)), "keyvault");
    ck_assert_int_eq(EVP_PKEY_eq(imported, pkey), 1);
    c = EVP_PKEY_CTX_new_from_pkey(NULL, imported, NULL);
    ck_assert_int_ne(EVP_PKEY_sign_init(c) == 1 &&
                         EVP_PKEY_sign(c, sig, &siglen, sig, 32) == 1, 1);
    ck_assert_msg(error_says("public key only"), "a public-only object refuses to sign");
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(imported);
    imported = NULL;
    OSSL_PARAM_free(params);
    /* of a key pair brought in, only the public half is taken */
    {
        EVP_PKEY *ordinary = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        ck_assert_ptr_nonnull(ordinary);
        ck_assert_int_eq(EVP_PKEY_todata(ordinary, EVP_PKEY_KEYPAIR, &params), 1);
        ck_assert_int_eq(EVP_PKEY_fromdata_init(pc), 1);
        ck_assert_int_eq(EVP_PKEY_fromdata(pc, &imported, EVP_PKEY_KEYPAIR, params), 1);
        ck_assert_int_eq(EVP_PKEY_eq(imported, ordinary), 1);
        OSSL_PARAM_free(params);
        params = NULL;
        ck_assert_int_ne(EVP_PKEY_todata(imported, EVP_PKEY_KEYPAIR, &params) == 1 &&
                             OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL, 1);
        OSSL_PARAM_free(params);
        ERR_clear_error();
        c = EVP_PKEY_CTX_new_from_pkey(NULL, imported, NULL);
        siglen = sizeof(sig);
        ck_assert_int_ne(EVP_PKEY_sign_init(c) == 1 &&
                             EVP_PKEY_sign(c, sig, &siglen, sig, 32) == 1, 1);
        ck_assert_msg(error_says("public key only"), "it cannot sign");
        EVP_PKEY_CTX_free(c);
        EVP_PKEY_free(imported);
        EVP_PKEY_free(ordinary);
    }
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(another_libctx_and_the_key_lifetime)
{
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    EVP_PKEY *pkey = vault_pkey(0, lib), *pub = public_copy(pkey), *dup;

    /* the kv_key is long freed: the EVP_PKEY's reference keeps it usable */
    ck_assert_ptr_eq(EVP_PKEY_get0_provider(pkey) != NULL ? lib : NULL, lib);
    ck_assert_int_eq(OSSL_PROVIDER_available(lib, "keyvault"), 1);
    ck_assert_int_eq(OSSL_PROVIDER_available(lib, "default"), 1);
    dup = EVP_PKEY_dup(pkey);
    ck_assert_ptr_nonnull(dup);
    EVP_PKEY_free(pkey);
    sign_verify(dup, pub, "SHA256", 0, 0);
    {
        /* a second EVP_PKEY of the same libctx loads nothing twice */
        EVP_PKEY *again = vault_pkey(1, lib);
        EVP_PKEY_free(again);
    }
    EVP_PKEY_free(dup);
    EVP_PKEY_free(pub);
    OSSL_LIB_CTX_free(lib);
}
END_TEST

START_TEST(keyvault_loaded_first_leaves_ordinary_keys_alone)
{
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    OSSL_PROVIDER *kv, *def;
    EVP_PKEY *pkey, *ordinary;
    EVP_KEYMGMT *km;

    ck_assert_int_eq(OSSL_PROVIDER_add_builtin(lib, "keyvault", kv_provider_init), 1);
    ck_assert_ptr_nonnull(kv = OSSL_PROVIDER_load(lib, "keyvault"));
    ck_assert_ptr_nonnull(def = OSSL_PROVIDER_load(lib, "default"));
    pkey = vault_pkey(0, lib);
    {
        /* a signature with the vault key first */
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        unsigned char sig[128];
        size_t siglen = sizeof(sig);
        ck_assert_int_eq(EVP_DigestSignInit_ex(m, NULL, "SHA256", lib, NULL, pkey, NULL), 1);
        ck_assert_int_eq(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)"x", 1), 1);
        EVP_MD_CTX_free(m);
    }
    for (int i = 0; i < 3; i++) {
        static const char *const names[] = { "EC", "RSA", "ED25519" };
        km = EVP_KEYMGMT_fetch(lib, names[i], NULL);
        ck_assert_ptr_nonnull(km);
        ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_KEYMGMT_get0_provider(km)), "default");
        EVP_KEYMGMT_free(km);
    }
    ordinary = EVP_PKEY_Q_keygen(lib, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(ordinary);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(ordinary)), "default");
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)), "keyvault");
    EVP_PKEY_free(ordinary);
    EVP_PKEY_free(pkey);
    OSSL_PROVIDER_unload(def);
    OSSL_PROVIDER_unload(kv);
    OSSL_LIB_CTX_free(lib);
}
END_TEST

/* OpenSSL caches the key management it fetched from our provider for our
 * keys under the caller's (empty) property query: that must not make the
 * property-less fetches of ordinary code come to us. */
START_TEST(ordinary_keys_after_vault_signatures)
{
    static const struct {
        const char *type, *arg;
    } gens[] = { { "EC", "P-256" }, { "RSA", "2048" }, { "ED25519", NULL } };
    EVP_PKEY *vault[4];

    for (int i = 0; i < 4; i++) {
        EVP_PKEY *pub;
        vault[i] = vault_pkey(i, NULL);
        pub = public_copy(vault[i]);
        sign_verify(vault[i], pub, i == 3 ? NULL : "SHA256", 0, 0);
        EVP_PKEY_free(pub);
    }
    for (int i = 0; i < 3; i++) {
        EVP_PKEY *k = gens[i].arg && i == 1
                          ? EVP_PKEY_Q_keygen(NULL, NULL, gens[i].type, (size_t)2048)
                          : gens[i].arg ? EVP_PKEY_Q_keygen(NULL, NULL, gens[i].type, gens[i].arg)
                                        : EVP_PKEY_Q_keygen(NULL, NULL, gens[i].type);
        EVP_PKEY *copy = NULL;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, gens[i].type, NULL);
        OSSL_PARAM *params = NULL;
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *sctx = NULL;
        unsigned char sig[512];
        size_t siglen = sizeof(sig);

        ck_assert_msg(k != NULL, "EVP_PKEY_keygen of %s after vault signatures", gens[i].type);
        ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(k)), "default");
        ck_assert_int_eq(EVP_PKEY_todata(k, EVP_PKEY_KEYPAIR, &params), 1);
        ck_assert_int_eq(EVP_PKEY_fromdata_init(pc), 1);
        ck_assert_int_eq(EVP_PKEY_fromdata(pc, &copy, EVP_PKEY_KEYPAIR, params), 1);
        ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(copy)), "default");
        ck_assert_int_eq(EVP_DigestSignInit_ex(m, &sctx, i == 2 ? NULL : "SHA256", NULL, NULL, copy,
                                               NULL), 1);
        ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(sctx)), "default");
        ck_assert_int_eq(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)"x", 1), 1);
        EVP_MD_CTX_free(m);
        OSSL_PARAM_free(params);
        EVP_PKEY_CTX_free(pc);
        EVP_PKEY_free(copy);
        EVP_PKEY_free(k);
    }
    for (int i = 0; i < 4; i++)
        EVP_PKEY_free(vault[i]);
}
END_TEST

static Suite *provider_suite(void)
{
    Suite *s = suite_create("provider");
    TCase *keys = tcase_create("keys"), *sig = tcase_create("signatures");
    TCase *ecdh = tcase_create("ecdh"), *ctxs = tcase_create("contexts");

    tcase_add_checked_fixture(keys, setup, teardown);
    tcase_add_checked_fixture(sig, setup, teardown);
    tcase_add_checked_fixture(ecdh, setup, teardown);
    tcase_add_checked_fixture(ctxs, setup, teardown);
    tcase_add_loop_test(keys, key_facts_and_no_private_export, 0, 4);
    tcase_add_test(keys, public_only_objects_do_not_sign);
    tcase_add_test(sig, every_scheme_verifies_in_software);
    tcase_add_test(sig, prehashed_sign_and_verify_through_the_provider);
    tcase_add_loop_test(sig, x509_sign_with_a_vault_key, 0, 4);
    tcase_add_test(sig, settings_the_vault_cannot_honour);
    tcase_add_loop_test(ecdh, ecdh_agrees_with_the_peer, 0, 2);
    tcase_add_test(ctxs, another_libctx_and_the_key_lifetime);
    tcase_add_test(ctxs, keyvault_loaded_first_leaves_ordinary_keys_alone);
    tcase_add_test(ctxs, ordinary_keys_after_vault_signatures);
    /* Check's 4 s default is short for an RSA-2048 keygen on a loaded machine */
    tcase_set_timeout(keys, 60);
    tcase_set_timeout(sig, 120);
    tcase_set_timeout(ecdh, 60);
    tcase_set_timeout(ctxs, 60);
    suite_add_tcase(s, keys);
    suite_add_tcase(s, sig);
    suite_add_tcase(s, ecdh);
    suite_add_tcase(s, ctxs);
    return s;
}

int main(void)
{
    return tu_run(provider_suite());
}
