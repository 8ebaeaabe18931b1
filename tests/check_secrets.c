/*
 * check_secrets.c - bad input that carries known secrets (PINs in pkcs11:
 * URIs, store passphrases, TPM auth values, secrets written inline in a
 * configuration) goes through the library; no secret may appear in
 * kv_errmsg or in a key's name or URI. Runs from tests/secrets.sh, which
 * makes the SoftHSM token, the swtpm, the configurations and the secret
 * files (KV_SEC_* variables), and greps every file written afterwards.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v && *v, "%s is not set: run through tests/secrets.sh", name);
    return v;
}

/* every secret of the corpus (each one distinctive, letters and digits) */
static const char *const secret_vars[] = {
    "KV_SEC_PIN",  "KV_SEC_PIN_WRONG",  "KV_SEC_PASS",   "KV_SEC_PASS_WRONG",
    "KV_SEC_AUTH", "KV_SEC_AUTH_WRONG", "KV_SEC_INLINE",
};

static void assert_clean(const char *text, const char *what)
{
    for (size_t i = 0; i < sizeof(secret_vars) / sizeof(secret_vars[0]); i++)
        ck_assert_msg(strstr(text, env(secret_vars[i])) == NULL, "%s: %s appears in \"%s\"", what,
                      secret_vars[i], text);
}

static kv_ctx *ctx_on(const char *conf)
{
    char path[1024];
    kv_ctx *ctx = NULL;

    snprintf(path, sizeof(path), "%s/%s", env("KV_SEC_DIR"), conf);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new(%s): %s", path, kv_errmsg(NULL));
    return ctx;
}

/* ref fails to open (and to destroy) with want; the detail is there and
 * clean, and names `names` when given */
static void refused(kv_ctx *ctx, const char *ref, kv_rc want, const char *names)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, ref, &key), want);
    ck_assert_ptr_null(key);
    ck_assert_msg(kv_errmsg(ctx)[0] != '\0', "no detail for %s", kv_strerror(want));
    assert_clean(kv_errmsg(ctx), "kv_key_open");
    if (names)
        ck_assert_msg(strstr(kv_errmsg(ctx), names), "'%s' not in \"%s\"", names,
                      kv_errmsg(ctx));
    ck_assert_rc(ctx, kv_key_destroy(ctx, ref), want);
    assert_clean(kv_errmsg(ctx), "kv_key_destroy");
}

/* printf into one of a few rotating buffers */
static const char *q(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *q(const char *fmt, ...)
{
    static char buf[8][2048];
    static int i;
    char *b = buf[i++ % 8];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(b, sizeof(buf[0]), fmt, ap);
    va_end(ap);
    return b;
}

/* a pkcs11: URI on the corpus token: path attributes, then a query */
static const char *p11_uri(const char *path, const char *query)
{
    return q("pkcs11:token=%s;%s?%s", env("KV_SEC_TOKEN"), path, query);
}

/* the same with the module by name and the PIN in variable pinvar */
static const char *with_pin(const char *path, const char *pinvar)
{
    return p11_uri(path, q("module-name=softhsm2&pin-value=%s", env(pinvar)));
}

START_TEST(p11_missing_token)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, q("pkcs11:token=nosuch;object=k1?module-name=softhsm2&pin-value=%s",
                   env("KV_SEC_PIN")),
            KV_ERR_TOKEN_NOT_PRESENT, "nosuch");
    /* no label to name it by: the token's attributes, formatted */
    refused(ctx, q("pkcs11:serial=nosuch;object=k1?module-name=softhsm2&pin-value=%s",
                   env("KV_SEC_PIN")),
            KV_ERR_TOKEN_NOT_PRESENT, "token 'pkcs11:serial=nosuch'");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_missing_object)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=missing", "KV_SEC_PIN"), KV_ERR_KEY_NOT_FOUND, "object=missing");
    refused(ctx, p11_uri("id=%ff%ee;object=k1", q("pin-value=%s", env("KV_SEC_PIN"))),
            KV_ERR_KEY_NOT_FOUND, "object=k1");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_wrong_object_type)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = "KV_SEC_PIN";

    /* objects that exist, but are no private key */
    refused(ctx, with_pin("object=pubonly", pin), KV_ERR_KEY_NOT_FOUND, "object=pubonly");
    refused(ctx, with_pin("object=certonly", pin), KV_ERR_KEY_NOT_FOUND, "object=certonly");
    refused(ctx, with_pin("object=k1;type=public", pin), KV_ERR_BAD_URI, "type=public");
    refused(ctx, with_pin("object=certonly;type=cert", pin), KV_ERR_BAD_URI, "type=cert");
    refused(ctx, with_pin("token=kvsecrets", pin), KV_ERR_BAD_URI, "names no object");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_malformed_escapes)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = env("KV_SEC_PIN");

    /* the bad escape after the PIN, inside it, and in the path after a
     * pin-value that p11-kit still takes from the path */
    refused(ctx, p11_uri("object=k1", q("pin-value=%s%%zz", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, p11_uri("object=k1", q("pin-value=%s%%4", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, p11_uri("object=k%g1", q("pin-value=%s", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("pkcs11:pin-value=%s;object=k%%g1", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("pkcs11:token=kvsecrets;object=k1?pin-value=%s&=x", pin), KV_ERR_BAD_URI, NULL);
    /* p11-kit takes a pin-value from the path too; a wrong one here */
    refused(ctx, q("pkcs11:token=kvsecrets;object=k1;pin-value=%s", env("KV_SEC_PIN_WRONG")),
            KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
}
END_TEST

/* creating a key at a URI that carries a PIN: every refusal is clean */
static const char *generate_at_case(size_t i, kv_rc *want)
{
    const char *pin = env("KV_SEC_PIN"), *mod = "module-name=softhsm2";

    *want = KV_ERR_BAD_URI;
    switch (i) {
    case 0: /* no module anywhere: the URI is named without its query */
        return q("pkcs11:token=kvsecrets;object=g1?pin-value=%s", pin);
    case 1: /* a PIN typed as pin-source */
        return p11_uri("object=g2", q("%s&pin-source=%s", mod, pin));
    case 2: /* an invalid name */
        return p11_uri("object=.g3", q("%s&pin-value=%s", mod, pin));
    case 3: /* a public-key type */
        return p11_uri("object=g4;type=public", q("%s&pin-value=%s", mod, pin));
    case 4: /* a wrong PIN */
        *want = KV_ERR_AUTH_FAILED;
        return with_pin("object=g5", "KV_SEC_PIN_WRONG");
    }
    return NULL;
}

START_TEST(p11_generate_at)
{
    char path[1024];
    kv_ctx *bare = NULL, *ctx = ctx_on("p11.conf");
    kv_key *key = NULL;
    const char *uri;
    kv_rc want;

    snprintf(path, sizeof(path), "%s/p11-nomodule.conf", tu_tmpdir());
    tu_write(path, "[keyvault]\nbackends = pkcs11\n");
    ck_assert_rc(NULL, kv_ctx_new(&bare, path), KV_OK);
    for (size_t i = 0; (uri = generate_at_case(i, &want)) != NULL; i++) {
        kv_ctx *c = i == 0 ? bare : ctx;
        kv_rc rc = kv_key_generate_at(c, uri, KV_KEY_EC_P256, &key);

        ck_assert_msg(rc == want, "case %zu: expected %s, got %s: %s", i, kv_strerror(want),
                      kv_strerror(rc), kv_errmsg(c));
        ck_assert_ptr_null(key);
        ck_assert_msg(kv_errmsg(c)[0] != '\0', "case %zu: no detail", i);
        assert_clean(kv_errmsg(c), "kv_key_generate_at");
    }
    kv_ctx_free(bare);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_ambiguous)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=dup", "KV_SEC_PIN"), KV_ERR_BAD_URI, "object=dup");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_wrong_pin)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=k1", "KV_SEC_PIN_WRONG"), KV_ERR_AUTH_FAILED,
            "CKR_PIN_INCORRECT");
    refused(ctx,
            p11_uri("object=k1", q("module-path=%s&pin-source=%s", env("KV_P11_MODULE"),
                                   env("KV_SEC_PINFILE_WRONG"))),
            KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
    /* the configured token with a wrong PIN file: tried once, then refused */
    ctx = ctx_on("p11-wrongpin.conf");
    refused(ctx, "k1", KV_ERR_AUTH_FAILED, NULL);
    refused(ctx, "k1", KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_opened_key_names_no_pin)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    kv_key *key = NULL;
    kv_key_list *list = NULL;
    kv_key_info info;
    const char *uri = with_pin("object=k1", "KV_SEC_PIN");

    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    assert_clean(info.name, "name");
    assert_clean(info.uri, "uri");
    ck_assert_ptr_nonnull(strstr(info.uri, "object=k1"));
    kv_key_free(key);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    ck_assert_uint_gt(list->count, 0);
    for (size_t i = 0; i < list->count; i++)
        assert_clean(list->keys[i].uri, "listed uri");
    kv_key_list_free(list);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(core_refs)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = env("KV_SEC_PIN");

    refused(ctx, q("%s:object=k1", pin), KV_ERR_BAD_URI, "unknown URI scheme");
    refused(ctx, q("bogus:object=k1?pin-value=%s", pin), KV_ERR_BAD_URI, "'bogus:'");
    refused(ctx, q("k1?pin-value=%s", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("file:/nonexistent/k.pem?pin-value=%s", pin), KV_ERR_BAD_URI, "/nonexistent");
    refused(ctx, q("file:///nonexistent/k.pem#%s", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("tpm2:file=/x/k.pem?auth=%s", pin), KV_ERR_BACKEND_UNAVAILABLE, NULL);
    ck_assert_rc(ctx, kv_key_generate(ctx, q("x?%s", pin), KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_BAD_URI);
    assert_clean(kv_errmsg(ctx), "kv_key_generate");
    kv_ctx_free(ctx);
}
END_TEST

/* key `name`, made in `backend` under the secret of conf `good`, cannot
 * sign under the wrong secret of conf `bad`; returns a context on `bad` */
static kv_ctx *wrong_secret(const char *good, const char *bad, const char *name,
                            const char *backend)
{
    kv_ctx *ctx = ctx_on(good);
    unsigned char sig[256];
    size_t siglen = sizeof(sig);
    kv_key *key = NULL;
    kv_rc rc;

    rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, backend, NULL);
    ck_assert_msg(rc == KV_OK || rc == KV_ERR_KEY_EXISTS, "%s", kv_errmsg(ctx));
    kv_ctx_free(ctx);
    ctx = ctx_on(bad);
    rc = kv_key_open(ctx, name, &key);
    if (rc == KV_OK)
        rc = kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"abc", 3, sig, &siglen);
    ck_assert_msg(rc == KV_ERR_AUTH_FAILED, "%s: %s", kv_strerror(rc), kv_errmsg(ctx));
    assert_clean(kv_errmsg(ctx), bad);
    kv_key_free(key);
    return ctx;
}

START_TEST(soft_wrong_passphrase)
{
    kv_ctx_free(wrong_secret("soft.conf", "soft-wrong.conf", "sk", "software"));
}
END_TEST

START_TEST(inline_secrets_in_config)
{
    static const char *const confs[] = {
        "inline-pin.conf", "inline-token.conf", "inline-pass.conf",
#ifdef KV_WITH_TPM
        "inline-auth.conf",
#endif
    };
    kv_ctx *ctx = NULL;
    char path[1024];

    for (size_t i = 0; i < sizeof(confs) / sizeof(confs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", env("KV_SEC_FILES"), confs[i]);
        ck_assert_msg(kv_ctx_new(&ctx, path) == KV_ERR_CONFIG, "%s was accepted", confs[i]);
        ck_assert_ptr_null(ctx);
        ck_assert_msg(kv_errmsg(NULL)[0] != '\0', "%s: no detail", confs[i]);
        assert_clean(kv_errmsg(NULL), confs[i]);
    }
    /* a secret under a key that does not exist: refused (strict), never shown */
    snprintf(path, sizeof(path), "%s/inline-unknown.conf", env("KV_SEC_FILES"));
    ck_assert_int_eq(kv_ctx_new(&ctx, path), KV_ERR_CONFIG);
    ck_assert_ptr_null(ctx);
    assert_clean(kv_errmsg(NULL), "inline-unknown.conf");
}
END_TEST

#ifdef KV_WITH_TPM
START_TEST(tpm_wrong_auth)
{
    kv_ctx *ctx = wrong_secret("tpm.conf", "tpm-wrong.conf", "tk", "tpm");

    refused(ctx, q("tpm2:file=%s/tpmkeys/tk.pem?auth=%s", env("KV_SEC_DIR"), env("KV_SEC_AUTH")),
            KV_ERR_BAD_URI, "tk.pem");
    refused(ctx, q("tpm2:handle=0x81000001#%s", env("KV_SEC_AUTH")), KV_ERR_BAD_URI,
            "handle=0x81000001");
    refused(ctx, q("tpm2:%s", env("KV_SEC_AUTH_WRONG")), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("tpm2:handle=%s", env("KV_SEC_AUTH_WRONG")), KV_ERR_BAD_URI, NULL);
    kv_ctx_free(ctx);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("secrets");
    TCase *tc = tcase_create("corpus");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, p11_missing_token);
    tcase_add_test(tc, p11_missing_object);
    tcase_add_test(tc, p11_wrong_object_type);
    tcase_add_test(tc, p11_malformed_escapes);
    tcase_add_test(tc, p11_ambiguous);
    tcase_add_test(tc, p11_generate_at);
    tcase_add_test(tc, p11_wrong_pin);
    tcase_add_test(tc, p11_opened_key_names_no_pin);
    tcase_add_test(tc, core_refs);
    tcase_add_test(tc, soft_wrong_passphrase);
    tcase_add_test(tc, inline_secrets_in_config);
#ifdef KV_WITH_TPM
    if (getenv("KV_SEC_TPM"))
        tcase_add_test(tc, tpm_wrong_auth);
#endif
    suite_add_tcase(s, tc);
    return tu_run(s);
}
