/*
 * check_policy.c - key policies and the context's [policy] through the
 * library, on every backend of $KV_POLICY_CONF (tests/policy.sh: a SoftHSM
 * token, swtpm and the software store): each rule denies what it should
 * (KV_ERR_POLICY naming the rule) and allows what it should; the policy
 * survives a reopen in a new context; damaged or misplaced policies are
 * refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "internal.h"
#include "testutil.h"

static const char *const backends[] = { "pkcs11", "tpm", "software" };
#define N_BACKENDS 3

static const char *conf(void)
{
    const char *c = getenv("KV_POLICY_CONF");

    ck_assert_msg(c && *c, "KV_POLICY_CONF is not set (run tests/policy.sh)");
    return c;
}

static kv_ctx *ctx_on(const char *path)
{
    kv_ctx *ctx = NULL;

    ck_assert_rc(NULL, kv_ctx_new(&ctx, path), KV_OK);
    return ctx;
}

/* A config: $KV_POLICY_CONF's text plus `extra` (a [policy] section). */
static const char *conf_with(const char *extra)
{
    static char path[4096];
    char *text = NULL;
    size_t n = 0;
    FILE *f = fopen(conf(), "r");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(getdelim(&text, &n, '\0', f) > 0, 1);
    fclose(f);
    snprintf(path, sizeof(path), "%s/policy-%d.conf", tu_tmpdir(), rand());
    {
        char *all = malloc(strlen(text) + strlen(extra) + 2);
        ck_assert_ptr_nonnull(all);
        sprintf(all, "%s\n%s", text, extra);
        tu_write(path, all);
        free(all);
    }
    free(text);
    return path;
}

/* A unique key name for this test and backend. */
static const char *key_name(const char *what, const char *be)
{
    static char name[64];

    snprintf(name, sizeof(name), "%s-%s-%ld-%d", what, be, (long)getpid(), rand() % 100000);
    return name;
}

static void expect_refused(kv_ctx *ctx, kv_rc rc, const char *says)
{
    ck_assert_msg(rc == KV_ERR_POLICY, "expected refused by policy, got %s: %s", kv_strerror(rc),
                  kv_errmsg(ctx));
    ck_assert_msg(strstr(kv_errmsg(ctx), says), "'%s' not in '%s'", says, kv_errmsg(ctx));
}

static kv_rc sign_with(kv_key *key, kv_sign_alg alg)
{
    unsigned char sig[512];
    size_t len = sizeof(sig);

    return kv_sign(key, alg, 0, (const unsigned char *)"policy", 6, sig, &len);
}

/* ECDH with a fresh P-256 peer. */
static kv_rc ecdh_with(kv_key *key)
{
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char *der = NULL, z[66];
    size_t zlen = sizeof(z);
    int n = i2d_PUBKEY(peer, &der);
    kv_rc rc;

    ck_assert_int_gt(n, 0);
    rc = kv_ecdh(key, der, (size_t)n, z, &zlen);
    OPENSSL_free(der);
    EVP_PKEY_free(peer);
    return rc;
}

static kv_key *make(kv_ctx *ctx, const char *name, const char *be, kv_key_type type,
                    const kv_key_policy *p)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_generate_ex(ctx, name, type, be, p, &key), KV_OK);
    return key;
}

/* sign only: ECDH refused (by the core, naming the rule), sign allowed,
 * in this context and after a reopen in a new one */
START_TEST(uses_sign_only)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf()), *ctx2;
    kv_key_policy p = KV_KEY_POLICY_INIT, got = KV_KEY_POLICY_INIT;
    char name[64];
    kv_key *key;

    p.uses = KV_USE_SIGN;
    snprintf(name, sizeof(name), "%s", key_name("signonly", be));
    key = make(ctx, name, be, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    expect_refused(ctx, ecdh_with(key), "ecdh is not allowed (allowed: sign)");
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), name));
    ck_assert_rc(ctx, kv_key_get_policy(key, &got), KV_OK);
    ck_assert_uint_eq(got.uses, KV_USE_SIGN);
    kv_key_free(key);
    /* a new context reads the stored policy */
    ctx2 = ctx_on(conf());
    ck_assert_rc(ctx2, kv_key_open(ctx2, name, &key), KV_OK);
    memset(&got, 0, sizeof(got));
    got.size = sizeof(got);
    ck_assert_rc(ctx2, kv_key_get_policy(key, &got), KV_OK);
    ck_assert_uint_eq(got.uses, KV_USE_SIGN);
    ck_assert_uint_eq(got.algs, 0);
    ck_assert_rc(ctx2, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    expect_refused(ctx2, ecdh_with(key), "ecdh is not allowed");
    /* by its URI, and through a key reference: the same policy */
    {
        kv_key_info info;
        char uri[4096], *ref = NULL;
        kv_key *k2 = NULL, *k3 = NULL;

        ck_assert_rc(ctx2, kv_key_get_info(key, &info), KV_OK);
        snprintf(uri, sizeof(uri), "%s", info.uri);
        ck_assert_rc(ctx2, kv_key_reference_pem(key, 0, &ref), KV_OK);
        ck_assert_rc(ctx2, kv_key_open(ctx2, uri, &k2), KV_OK);
        expect_refused(ctx2, ecdh_with(k2), "ecdh is not allowed");
        ck_assert_rc(ctx2, kv_key_open_reference(ctx2, (const unsigned char *)ref, strlen(ref),
                                                 &k3), KV_OK);
        expect_refused(ctx2, ecdh_with(k3), "ecdh is not allowed");
        ck_assert_rc(ctx2, sign_with(k3, KV_ALG_DEFAULT), KV_OK);
        kv_string_free(ref);
        kv_key_free(k3);
        kv_key_free(k2);
    }
    kv_key_free(key);
    kv_ctx_free(ctx2);
    kv_ctx_free(ctx);
}
END_TEST

/* ECDH only: sign refused, ECDH allowed, after a reopen too */
START_TEST(uses_ecdh_only)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    char name[64];
    kv_key *key;

    p.uses = KV_USE_ECDH;
    snprintf(name, sizeof(name), "%s", key_name("ecdhonly", be));
    key = make(ctx, name, be, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, ecdh_with(key), KV_OK);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "sign is not allowed (allowed: ecdh)");
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_open(ctx, name, &key), KV_OK);
    ck_assert_rc(ctx, ecdh_with(key), KV_OK);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "sign is not allowed");
    /* a self-signed certificate is a signature too */
    {
        kv_cert_opts o = KV_CERT_OPTS_INIT;
        char *pem = NULL;
        o.subject = "CN=ecdh only";
        expect_refused(ctx, kv_cert_selfsign(key, &o, &pem), "sign is not allowed");
        ck_assert_ptr_null(pem);
    }
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* algorithms: ECDSA with SHA-384 only on a P-256 key */
START_TEST(algs)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    kv_key *key;

    p.algs = 1u << KV_ALG_ECDSA_SHA384;
    key = make(ctx, key_name("algs", be), be, KV_KEY_EC_P256, &p);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT),
                   "ecdsa-sha256 is not allowed (allowed: ecdsa-sha384)");
    expect_refused(ctx, sign_with(key, KV_ALG_ECDSA_SHA512), "ecdsa-sha512 is not allowed");
    ck_assert_rc(ctx, sign_with(key, KV_ALG_ECDSA_SHA384), KV_OK);
    ck_assert_rc(ctx, ecdh_with(key), KV_OK); /* algorithms limit signatures only */
    kv_key_free(key);
    /* an algorithm of another family is refused at generation */
    p.algs = 1u << KV_ALG_RSA_PSS_SHA256;
    key = NULL;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, key_name("badalg", be), KV_KEY_EC_P256, be, &p,
                                         &key), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "rsa-pss-sha256 does not fit"));
    ck_assert_ptr_null(key);
    kv_ctx_free(ctx);
}
END_TEST

/* the validity window: not yet valid, valid, expired */
START_TEST(window)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    kv_key *key;

    p.not_before = (int64_t)time(NULL) + 3600;
    key = make(ctx, key_name("later", be), be, KV_KEY_EC_P256, &p);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "not valid before");
    expect_refused(ctx, ecdh_with(key), "not valid before");
    kv_key_free(key);
    p.not_before = 0;
    p.not_after = (int64_t)time(NULL) + 3600;
    key = make(ctx, key_name("open", be), be, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);   /* inside the window */
    kv_key_free(key);
    /* a window that ends 3 s from now: refused once the clock is past it
     * (waited for by the clock, not a fixed sleep a slow generation eats) */
    p.not_after = (int64_t)time(NULL) + 3;
    key = make(ctx, key_name("soon", be), be, KV_KEY_EC_P256, &p);
    while ((int64_t)time(NULL) <= p.not_after)
        sleep(1);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "not valid after");
    kv_key_free(key);
    /* a window already past cannot be made */
    p.not_after = (int64_t)time(NULL) - 1;
    key = NULL;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, key_name("past", be), KV_KEY_EC_P256, be, &p,
                                         &key), KV_ERR_INVALID_ARG);
    kv_ctx_free(ctx);
}
END_TEST

/* hardware only: refused in software, made in hardware (and never falls
 * back to software when no backend is named) */
START_TEST(hardware_only)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT, got = KV_KEY_POLICY_INIT;
    kv_key *key = NULL;
    kv_key_info info;

    p.flags = KV_POLICY_HARDWARE_ONLY;
    if (!strcmp(be, "software")) {
        expect_refused(ctx, kv_key_generate_ex(ctx, key_name("hw", be), KV_KEY_EC_P256, be, &p,
                                               &key), "hardware only");
        ck_assert_ptr_null(key);
        kv_ctx_free(ctx);
        /* with no backend named, software is passed over; with only software
         * allowed by the context, nothing is left */
        ctx = ctx_on(conf_with("[policy]\nbackends = software\n"));
        expect_refused(ctx, kv_key_generate_ex(ctx, key_name("hwany", be), KV_KEY_EC_P256, NULL,
                                               &p, &key), "hardware only: yes");
        ck_assert_ptr_null(key);
        kv_ctx_free(ctx);
        return;
    }
    /* no backend named: the first hardware one */
    key = make(ctx, key_name("hwany", be), NULL, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_int_ne(info.assurance, KV_ASSURANCE_SOFTWARE);
    kv_key_free(key);
    key = make(ctx, key_name("hw", be), be, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_key_get_policy(key, &got), KV_OK);
    ck_assert_uint_eq(got.flags, KV_POLICY_HARDWARE_ONLY);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_int_ne(info.assurance, KV_ASSURANCE_SOFTWARE);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* no policy: every use, and KV_KEY_POLICY_INIT's values */
START_TEST(no_policy)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy got, init = KV_KEY_POLICY_INIT;
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, key_name("free", be), KV_KEY_EC_P256, be, &key),
                 KV_OK);
    memset(&got, 0xa5, sizeof(got));
    got.size = sizeof(got);
    ck_assert_rc(ctx, kv_key_get_policy(key, &got), KV_OK);
    ck_assert_uint_eq(got.size, init.size);
    ck_assert_uint_eq(got.uses, init.uses);
    ck_assert_uint_eq(got.algs, init.algs);
    ck_assert_int_eq(got.not_before, init.not_before);
    ck_assert_int_eq(got.not_after, init.not_after);
    ck_assert_uint_eq(got.flags, init.flags);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_ECDSA_SHA512), KV_OK);
    ck_assert_rc(ctx, ecdh_with(key), KV_OK);
    got.size = 8;
    ck_assert_rc(ctx, kv_key_get_policy(key, &got), KV_ERR_INVALID_ARG);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* what a policy may not be */
START_TEST(bad_policies)
{
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    kv_key *key = NULL;

    p.uses = 0;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad0", KV_KEY_EC_P256, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    p.uses = 0x10;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad1", KV_KEY_EC_P256, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    p.uses = KV_USE_ECDH;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad2", KV_KEY_ED25519, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    p.uses = KV_USE_ALL;
    p.flags = 0x2;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad3", KV_KEY_EC_P256, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    p.flags = 0;
    p.size = sizeof(p) - 1;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad4", KV_KEY_EC_P256, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    p.size = sizeof(p);
    p.not_before = 2000;
    p.not_after = 1000;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "bad5", KV_KEY_EC_P256, "software", &p, &key),
                 KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(key);
    /* a URI takes no backend */
    p.not_before = p.not_after = 0;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "file:/tmp/x.pem", KV_KEY_EC_P256, "software", &p,
                                         &key), KV_ERR_INVALID_ARG);
    kv_ctx_free(ctx);
}
END_TEST

/* attestation is a use of its own: evidence (its proof of possession is a
 * signature) needs attest, and attest alone signs nothing else */
START_TEST(attest_use)
{
    const char *be = backends[_i];
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    unsigned char nonce[16] = { 9, 8, 7 };
    char *ev = NULL;
    kv_key *key;

    o.flags = KV_ATTEST_NO_QUOTE;
    p.uses = KV_USE_SIGN;
    key = make(ctx, key_name("sgn", be), be, KV_KEY_EC_P256, &p);
    expect_refused(ctx, kv_attest(key, nonce, sizeof(nonce), &o, &ev),
                   "attest is not allowed (allowed: sign)");
    ck_assert_ptr_null(ev);
    kv_key_free(key);
    p.uses = KV_USE_ATTEST;
    key = make(ctx, key_name("att", be), be, KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_attest(key, nonce, sizeof(nonce), &o, &ev), KV_OK);
    ck_assert_ptr_nonnull(ev);
    kv_string_free(ev);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "sign is not allowed (allowed: attest)");
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* the TPM: attestation is a use of its own; a policy needs a key file */
START_TEST(tpm_attest)
{
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    unsigned char nonce[16] = { 1, 2, 3 };
    kv_attestation *att = NULL;
    char *ev = NULL;
    kv_key *key;

    p.uses = KV_USE_SIGN;
    key = make(ctx, key_name("noattest", "tpm"), "tpm", KV_KEY_EC_P256, &p);
    expect_refused(ctx, kv_key_certify(key, nonce, sizeof(nonce), &att),
                   "attest is not allowed (allowed: sign)");
    expect_refused(ctx, kv_attest(key, nonce, sizeof(nonce), NULL, &ev), "attest is not allowed");
    ck_assert_ptr_null(ev);
    kv_key_free(key);
    p.uses = KV_USE_ATTEST;
    key = make(ctx, key_name("attest", "tpm"), "tpm", KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_key_certify(key, nonce, sizeof(nonce), &att), KV_OK);
    kv_attestation_free(att);
    expect_refused(ctx, sign_with(key, KV_ALG_DEFAULT), "sign is not allowed (allowed: attest)");
    kv_key_free(key);
    key = NULL;
    ck_assert_rc(ctx, kv_key_generate_ex(ctx, "tpm2:handle=0x81000123", KV_KEY_EC_P256, NULL, &p,
                                         &key), KV_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "no metadata to keep a key policy"));
    kv_ctx_free(ctx);
}
END_TEST

/* a TPM policy key's file away from its metadata: by bytes, by a copy */
START_TEST(tpm_file_without_metadata)
{
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT;
    const char *dir = tu_tmpdir();
    char name[64], uri[4200];
    kv_key_info info;
    kv_key *key, *k2 = NULL;
    unsigned char *data;
    size_t len = 0;
    FILE *f;

    p.uses = KV_USE_ECDH;
    snprintf(name, sizeof(name), "%s", key_name("away", "tpm"));
    key = make(ctx, name, "tpm", KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_int_eq(strncmp(info.uri, "tpm2:file=", 10), 0);
    f = fopen(info.uri + 10, "rb");
    ck_assert_ptr_nonnull(f);
    data = malloc(16384);
    len = fread(data, 1, 16384, f);
    fclose(f);
    expect_refused(ctx, kv_key_open_tpm_file(ctx, data, len, &k2), "carries an authPolicy");
    ck_assert_ptr_null(k2);
    /* a copy of the key file alone, in a directory of its own */
    snprintf(uri, sizeof(uri), "%s/%s.pem", dir, name);
    f = fopen(uri, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
    snprintf(uri, sizeof(uri), "tpm2:file=%s/%s.pem", dir, name);
    expect_refused(ctx, kv_key_open(ctx, uri, &k2), "carries an authPolicy");
    free(data);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* a TPM key's policy is bound into the key itself (its authPolicy): metadata
 * remade with a wider policy and a valid MAC (by someone holding the store's
 * secret) is refused */
START_TEST(tpm_policy_bound)
{
    kv_ctx *ctx = ctx_on(conf());
    kv_key_policy p = KV_KEY_POLICY_INIT, wide = KV_KEY_POLICY_INIT;
    unsigned char mac[KV_MAC_KEY_LEN], der[1024];
    const unsigned char *q = der;
    size_t len = sizeof(der);
    char name[64], dir[4096], *slash;
    EVP_PKEY *pub;
    kv_key_info info;
    kv_key *key, *k2 = NULL;

    p.uses = KV_USE_ECDH;
    snprintf(name, sizeof(name), "%s", key_name("bound", "tpm"));
    key = make(ctx, name, "tpm", KV_KEY_EC_P256, &p);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    snprintf(dir, sizeof(dir), "%s", info.uri + strlen("tpm2:file="));
    slash = strrchr(dir, '/');
    ck_assert_ptr_nonnull(slash);
    *slash = '\0';
    ck_assert_rc(ctx, kv_key_public_der(key, der, &len), KV_OK);
    pub = d2i_PUBKEY(NULL, &q, (long)len);
    ck_assert_ptr_nonnull(pub);
    ck_assert_rc(ctx, kv_fs_store_mac_key(ctx, dir, false, mac), KV_OK);
    ck_assert_rc(ctx, kv_meta_write(ctx, dir, name, KV_KEY_EC_P256, "tpm", 1, pub, &wide, mac),
                 KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, name, &k2), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "its authPolicy differs"));
    /* metadata without a policy: the key file's authPolicy still says it has one */
    ck_assert_rc(ctx, kv_meta_write(ctx, dir, name, KV_KEY_EC_P256, "tpm", 1, pub, NULL, mac),
                 KV_OK);
    expect_refused(ctx, kv_key_open(ctx, name, &k2), "carries an authPolicy");
    /* its own policy again: it opens */
    ck_assert_rc(ctx, kv_meta_write(ctx, dir, name, KV_KEY_EC_P256, "tpm", 1, pub, &p, mac),
                 KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, name, &k2), KV_OK);
    ck_assert_rc(ctx, ecdh_with(k2), KV_OK);
    kv_wipe(mac, sizeof(mac));
    EVP_PKEY_free(pub);
    kv_key_free(k2);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* the context's [policy]: keys, backends, uses, manage */
START_TEST(context_policy)
{
    const char *be = backends[_i];
    kv_ctx *admin = ctx_on(conf()), *ctx;
    kv_key *key = NULL, *other = NULL;
    char gw[96], db[96], extra[256];

    snprintf(gw, sizeof(gw), "gw-%s", key_name("k", be));
    snprintf(db, sizeof(db), "db-%s", key_name("k", be));
    ck_assert_rc(admin, kv_key_generate(admin, db, KV_KEY_EC_P256, be, &other), KV_OK);
    kv_key_free(other);
    other = NULL;

    /* keys: only gw-*, everything else refused, naming the rule */
    ctx = ctx_on(conf_with("[policy]\nkeys = gw-*, web\n"));
    ck_assert_rc(ctx, kv_key_generate(ctx, gw, KV_KEY_EC_P256, be, &key), KV_OK);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    kv_key_free(key);
    key = NULL;
    expect_refused(ctx, kv_key_open(ctx, db, &other), "context policy ([policy] keys)");
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "is not one of \"gw-*, web\""));
    expect_refused(ctx, kv_key_destroy(ctx, db), "[policy] keys");
    expect_refused(ctx, kv_key_generate(ctx, "db-new", KV_KEY_EC_P256, be, &key), "[policy] keys");
    kv_ctx_free(ctx);

    /* uses: sign only in this context, whatever the key allows */
    ctx = ctx_on(conf_with("[policy]\nuses = sign\n"));
    ck_assert_rc(ctx, kv_key_open(ctx, gw, &key), KV_OK);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    expect_refused(ctx, ecdh_with(key), "context policy ([policy] uses): ecdh is not allowed");
    kv_key_free(key);
    key = NULL;
    kv_ctx_free(ctx);

    /* manage = false: use, but neither make nor destroy */
    ctx = ctx_on(conf_with("[policy]\nmanage = false\n"));
    ck_assert_rc(ctx, kv_key_open(ctx, gw, &key), KV_OK);
    ck_assert_rc(ctx, sign_with(key, KV_ALG_DEFAULT), KV_OK);
    kv_key_free(key);
    key = NULL;
    expect_refused(ctx, kv_key_destroy(ctx, gw), "[policy] manage = false");
    expect_refused(ctx, kv_key_generate(ctx, "gw-new", KV_KEY_EC_P256, be, &key),
                   "[policy] manage = false");
    kv_ctx_free(ctx);

    /* backends: every backend but this one */
    snprintf(extra, sizeof(extra), "[policy]\nbackends = %s\n",
             !strcmp(be, "software") ? "tpm, pkcs11" : "software");
    ctx = ctx_on(conf_with(extra));
    expect_refused(ctx, kv_key_open(ctx, gw, &key), "context policy ([policy] backends)");
    expect_refused(ctx, kv_key_generate(ctx, "gw-b", KV_KEY_EC_P256, be, &key),
                   "[policy] backends");
    kv_ctx_free(ctx);

    /* a bad [policy] is a configuration error */
    ck_assert_rc(NULL, kv_ctx_new(&ctx, conf_with("[policy]\nuses = sign, fly\n")),
                 KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "'fly' is not a use"));
    ck_assert_rc(NULL, kv_ctx_new(&ctx, conf_with("[policy]\nbackends = hsm\n")), KV_ERR_CONFIG);
    ck_assert_rc(NULL, kv_ctx_new(&ctx, conf_with("[policy]\nkey = gw\n")), KV_ERR_CONFIG);

    ck_assert_rc(admin, kv_key_destroy(admin, gw), KV_OK);
    ck_assert_rc(admin, kv_key_destroy(admin, db), KV_OK);
    kv_ctx_free(admin);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("policy");

    srand((unsigned)getpid());
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, uses_sign_only, 0, N_BACKENDS);
    tcase_add_loop_test(tc, uses_ecdh_only, 0, N_BACKENDS);
    tcase_add_loop_test(tc, algs, 0, N_BACKENDS);
    tcase_add_loop_test(tc, window, 0, N_BACKENDS);
    tcase_add_loop_test(tc, hardware_only, 0, N_BACKENDS);
    tcase_add_loop_test(tc, no_policy, 0, N_BACKENDS);
    tcase_add_loop_test(tc, context_policy, 0, N_BACKENDS);
    tcase_add_loop_test(tc, attest_use, 0, N_BACKENDS);
    tcase_add_test(tc, bad_policies);
    tcase_add_test(tc, tpm_attest);
    tcase_add_test(tc, tpm_file_without_metadata);
    tcase_add_test(tc, tpm_policy_bound);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
