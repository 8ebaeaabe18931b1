/*
 * check_pkcs11.c - what only the PKCS#11 backend does: token lookup, PINs,
 * RFC 7512 URIs, a bounded session pool, certificates, which modules a URI
 * may load, and recovery after the token is pulled out and put back.
 *
 * Runs against the token a harness makes (KV_P11_* variables): SoftHSMv2
 * (tests/pkcs11-unit.sh), and the test case "module" also on tpm2-pkcs11
 * and NSS softokn (tests/pkcs11-tpm2.sh, tests/pkcs11-softokn.sh). A module
 * that needs C_Initialize arguments has them in KV_P11_INIT_ARGS. The case
 * "softhsm" needs SoftHSM itself: the unplug shim forwards to it, it is
 * registered with p11-kit as "softhsm2", and copies of its library are made.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "testutil.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v && *v, "%s is not set: run through tests/pkcs11-unit.sh", name);
    return v;
}

/* "module = ..." for the harness module, with its init_args if it needs them. */
static const char *module_line(void)
{
    static char buf[1024];
    const char *args = getenv("KV_P11_INIT_ARGS");

    snprintf(buf, sizeof(buf), "module = %s\n%s%s%s", env("KV_P11_MODULE"),
             args && *args ? "init_args = " : "", args && *args ? args : "",
             args && *args ? "\n" : "");
    return buf;
}

/* "pkcs11:token=LABEL" for the harness token, escaped by p11-kit. */
static const char *token_uri(void)
{
    static char buf[256];
    P11KitUri *u = p11_kit_uri_new();
    CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);
    const char *label = env("KV_P11_TOKEN");
    char *s = NULL;

    ck_assert_uint_le(strlen(label), sizeof(ti->label));
    memset(ti->label, ' ', sizeof(ti->label));
    memcpy(ti->label, label, strlen(label));
    ck_assert_int_eq(p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s), P11_KIT_URI_OK);
    snprintf(buf, sizeof(buf), "%s", s);
    free(s);
    p11_kit_uri_free(u);
    return buf;
}

/* A context on the harness token, with [pkcs11] lines replaced by `p11`. */
static kv_ctx *p11_ctx(const char *p11, kv_rc want)
{
    char path[700], text[4096], def[2048];
    kv_ctx *ctx = NULL;
    kv_rc rc;

    snprintf(def, sizeof(def), "%stoken = %s\npin = file:%s\n", module_line(),
             env("KV_P11_TOKEN"), env("KV_P11_PINFILE"));
    snprintf(path, sizeof(path), "%s/p11-%d.conf", tu_tmpdir(), rand());
    snprintf(text, sizeof(text), "[keyvault]\nbackends = pkcs11\n[pkcs11]\n%s", p11 ? p11 : def);
    tu_write(path, text);
    rc = kv_ctx_new(&ctx, path);
    ck_assert_msg(rc == want, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

static const char *kname(const char *base)
{
    static char buf[4][64];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 64, "%s-%ld", base, (long)getpid());
    return b;
}

static void sign_verify(kv_ctx *ctx, kv_key *key)
{
    unsigned char sig[512], pub[600];
    size_t siglen = sizeof(sig), publen = sizeof(pub);

    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"abc", 3, sig, &siglen),
                 KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(key, pub, &publen), KV_OK);
    ck_assert_rc(ctx, kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, (const unsigned char *)"abc",
                                3, sig, siglen), KV_OK);
}

START_TEST(token_not_present_names_what_is)
{
    char p11[1024];
    kv_ctx *ctx;

    snprintf(p11, sizeof(p11), "%stoken = no-such-token\npin = file:%s\n", module_line(),
             env("KV_P11_PINFILE"));
    ctx = p11_ctx(p11, KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "x", KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_TOKEN_NOT_PRESENT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "no-such-token"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), env("KV_P11_TOKEN")));
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(module_not_found_is_named)
{
    kv_ctx *ctx = p11_ctx("module = /nonexistent/module.so\ntoken = t\n", KV_OK);

    ck_assert_rc(ctx, kv_key_generate(ctx, "x", KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "/nonexistent/module.so"));
    kv_ctx_free(ctx);
    ctx = p11_ctx("module = no-such-module\ntoken = t\n", KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "x", KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "no p11-kit module named 'no-such-module'"));
    kv_ctx_free(ctx);
    /* a PIN written into the configuration is refused */
    p11_ctx("module = x\ntoken = t\npin = 1234\n", KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "file:PATH or env:VAR"));
}
END_TEST

START_TEST(wrong_pin_is_tried_once)
{
    kv_ctx *good = p11_ctx(NULL, KV_OK), *bad;
    char p11[1024], pinfile[700];
    const char *kind = NULL;
    kv_key *key = NULL;

    ck_assert_rc(good, kv_key_generate(good, kname("pin"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* login state is per process and token: log out by closing every session */
    kv_ctx_free(good);
    snprintf(pinfile, sizeof(pinfile), "%s/wrong-pin", tu_tmpdir());
    tu_write(pinfile, "999999\n");
    snprintf(p11, sizeof(p11), "%stoken = %s\npin = file:%s\n", module_line(),
             env("KV_P11_TOKEN"), pinfile);
    bad = p11_ctx(p11, KV_OK);
    ck_assert_rc(bad, kv_key_open(bad, kname("pin"), &key), KV_ERR_AUTH_FAILED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bad), "C_Login"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bad), "CKR_PIN_INCORRECT"));
    ck_assert_ptr_null(strstr(kv_errmsg(bad), "999999"));
    ck_assert_uint_eq(kv_backend_code(bad, &kind), CKR_PIN_INCORRECT);
    ck_assert_str_eq(kind, "CK_RV");
    /* the same wrong PIN is not sent to the token again */
    ck_assert_rc(bad, kv_key_open(bad, kname("pin"), &key), KV_ERR_AUTH_FAILED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bad), "not trying it again"));
    /* once the PIN source is fixed, the same context logs in */
    tu_write(pinfile, env("KV_P11_PIN"));
    ck_assert_rc(bad, kv_key_open(bad, kname("pin"), &key), KV_OK);
    sign_verify(bad, key);
    kv_key_free(key);
    ck_assert_rc(bad, kv_key_destroy(bad, kname("pin")), KV_OK);
    kv_ctx_free(bad);
}
END_TEST

/* A context with no [pkcs11] token (a module that needs init_args has
 * them, and only them, configured): URIs bring module and PIN. */
static kv_ctx *bare_ctx(void)
{
    return p11_ctx(getenv("KV_P11_INIT_ARGS") ? module_line() : "", KV_OK);
}

START_TEST(uri_forms)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *bare;
    kv_key *key = NULL, *k2 = NULL;
    kv_key_info info;
    char uri[1024];

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("uri"), KV_KEY_EC_P384, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_int_eq(info.assurance, KV_ASSURANCE_TOKEN);
    ck_assert_ptr_nonnull(strstr(info.uri, "type=private"));
    ck_assert_ptr_nonnull(strstr(info.uri, "id=%"));
    /* the URI the library gives opens the same key */
    ck_assert_rc(ctx, kv_key_open(ctx, info.uri, &k2), KV_OK);
    sign_verify(ctx, k2);
    kv_key_free(k2);
    /* by token and object label */
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private", token_uri(), kname("uri"));
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &k2), KV_OK);
    kv_key_free(k2);
    /* malformed, wrong type, nothing named, unknown object */
    ck_assert_rc(ctx, kv_key_open(ctx, "pkcs11:token=x;id=%ZZ", &k2), KV_ERR_BAD_URI);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not a valid pkcs11: URI"));
    snprintf(uri, sizeof(uri), "pkcs11:object=%s;type=public", kname("uri"));
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &k2), KV_ERR_BAD_URI);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "private key"));
    ck_assert_rc(ctx, kv_key_open(ctx, "pkcs11:token=kvtest", &k2), KV_ERR_BAD_URI);
    ck_assert_rc(ctx, kv_key_open(ctx, "pkcs11:object=nothing-here;type=private", &k2),
                 KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "nothing-here"));

    /* a context with no [pkcs11] token: the URI brings module and PIN */
    bare = bare_ctx();
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-value=%s",
             token_uri(), kname("uri"), env("KV_P11_MODULE"), env("KV_P11_PIN"));
    ck_assert_rc(bare, kv_key_open(bare, uri, &k2), KV_OK);
    sign_verify(bare, k2);
    kv_key_free(k2);
    snprintf(uri, sizeof(uri),
             "%s;object=%s;type=private?module-path=%s&pin-source=file:%s",
             token_uri(), kname("uri"), env("KV_P11_MODULE"), env("KV_P11_PINFILE"));
    ck_assert_rc(bare, kv_key_open(bare, uri, &k2), KV_OK);
    sign_verify(bare, k2);
    kv_key_free(k2);
    /* and without them it says what is missing */
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private", token_uri(), kname("uri"));
    if (getenv("KV_P11_INIT_ARGS")) {
        ck_assert_rc(bare, kv_key_open(bare, uri, &k2), KV_ERR_AUTH_FAILED);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), "needs a PIN"));
    } else {
        ck_assert_rc(bare, kv_key_open(bare, uri, &k2), KV_ERR_BAD_URI);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), "module"));
    }
    /* names need a configured token */
    ck_assert_rc(bare, kv_key_generate(bare, "x", KV_KEY_EC_P256, "pkcs11", NULL),
                 KV_ERR_BACKEND_UNAVAILABLE);
    kv_ctx_free(bare);

    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("uri")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* "id=%xx%yy..." of a key's URI, as the library formatted it. */
static const char *uri_id(kv_key *key)
{
    static char buf[512];
    kv_key_info info;
    const char *p;

    ck_assert_rc(NULL, kv_key_get_info(key, &info), KV_OK);
    p = strstr(info.uri, "id=");
    ck_assert_ptr_nonnull(p);
    snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(p, ";?"), p);
    return buf;
}

/* A long-running service opens the same key by URI, PIN in it, again and
 * again: the token is found again each time, never made anew (there is
 * room for 8 distinct ones). */
START_TEST(uri_reopened_many_times)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *bare;
    kv_key *key = NULL;
    char uri[1024], pinfile[700];

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("again"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    bare = bare_ctx();
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-value=%s",
             token_uri(), kname("again"), env("KV_P11_MODULE"), env("KV_P11_PIN"));
    for (int i = 0; i < 50; i++) {
        ck_assert_msg(kv_key_open(bare, uri, &key) == KV_OK, "open %d: %s", i, kv_errmsg(bare));
        if (i == 49)
            sign_verify(bare, key);
        kv_key_free(key);
        key = NULL;
    }
    /* 8 distinct PIN sources are 8 tokens; a 9th is over the cap, and the
     * first 8 still open (found again) */
    for (int i = 0; i < 8; i++) {
        snprintf(pinfile, sizeof(pinfile), "%s/pin-%d", tu_tmpdir(), i);
        tu_write(pinfile, env("KV_P11_PIN"));
        snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-source=%s",
                 token_uri(), kname("again"), env("KV_P11_MODULE"), pinfile);
        if (i < 7) {
            ck_assert_rc(bare, kv_key_open(bare, uri, &key), KV_OK);
            kv_key_free(key);
            key = NULL;
        } else {
            /* with the pin-value one above, this is the 9th */
            ck_assert_rc(bare, kv_key_open(bare, uri, &key), KV_ERR_UNSUPPORTED);
            ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), "more than 8"));
            ck_assert_ptr_null(strstr(kv_errmsg(bare), env("KV_P11_PIN")));
        }
    }
    for (int i = 0; i < 7; i++) {
        snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-source=%s/pin-%d",
                 token_uri(), kname("again"), env("KV_P11_MODULE"), tu_tmpdir(), i);
        ck_assert_rc(bare, kv_key_open(bare, uri, &key), KV_OK);
        kv_key_free(key);
        key = NULL;
    }
    kv_ctx_free(bare);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("again")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* An object= or id= too long for the search template is refused, never
 * left out of the search (which would open whatever the rest matches). */
START_TEST(uri_overlong_attributes_refused)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK);
    kv_key *key = NULL;
    char uri[2048], longlabel[301], longid[3 * 129 + 1] = "";

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("long"), KV_KEY_EC_P256, NULL, &key), KV_OK);
    memset(longlabel, 'a', 300);
    longlabel[300] = '\0';
    for (int i = 0; i < 129; i++)
        strcat(longid, "%01");
    /* the key's own id, with a label of 300 bytes */
    snprintf(uri, sizeof(uri), "%s;object=%s;%s;type=private", token_uri(), longlabel,
             uri_id(key));
    kv_key_free(key);
    key = NULL;
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_BAD_URI);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "object= is 300 bytes"));
    /* the key's own label, with an id of 129 bytes */
    snprintf(uri, sizeof(uri), "%s;object=%s;id=%s;type=private", token_uri(), kname("long"),
             longid);
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_BAD_URI);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "id= is 129 bytes"));
    /* at the limits, a search like any other: nothing has them */
    snprintf(uri, sizeof(uri), "%s;object=%.256s;type=private", token_uri(), longlabel);
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_KEY_NOT_FOUND);
    snprintf(uri, sizeof(uri), "%s;object=%s;id=%s;type=private", token_uri(), kname("long"),
             longid + 3);
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("long")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

struct worker {
    kv_ctx *ctx;
    kv_key *key;
    int ok;
};

static void *worker(void *p)
{
    struct worker *w = p;
    unsigned char sig[128];

    for (int i = 0; i < 50; i++) {
        size_t siglen = sizeof(sig);
        if (kv_sign(w->key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen) ==
            KV_OK)
            w->ok++;
    }
    return NULL;
}

START_TEST(small_pool_serves_many_threads)
{
    char p11[1024];
    kv_ctx *ctx;
    kv_key *key = NULL;
    pthread_t th[8];
    struct worker w[8];

    snprintf(p11, sizeof(p11), "%stoken = %s\npin = file:%s\nmax_sessions = 2\n",
             module_line(), env("KV_P11_TOKEN"), env("KV_P11_PINFILE"));
    ctx = p11_ctx(p11, KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("pool"), KV_KEY_EC_P256, NULL, &key), KV_OK);
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){ ctx, key, 0 };
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(w[i].ok, 50);
    }
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("pool")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A context on the harness token through the fault shim (tests/p11shim.c),
 * its control file saying `state`; control and shim (700 bytes each) get
 * the control file's and the shim module's paths. */
static kv_ctx *shim_ctx(const char *state, char *control, char *shim)
{
    char p11[1600], line[64];

    snprintf(control, 700, "%s/shim-control", tu_tmpdir());
    snprintf(shim, 700, "%s/tests/.libs/p11shim.so", getenv("KV_BUILDDIR"));
    snprintf(line, sizeof(line), "%s\n", state);
    tu_write(control, line);
    setenv("KV_SHIM_CONTROL", control, 1);
    setenv("KV_SHIM_MODULE", env("KV_P11_MODULE"), 1);
    snprintf(p11, sizeof(p11), "module = %s\ntoken = %s\npin = file:%s\n", shim,
             env("KV_P11_TOKEN"), env("KV_P11_PINFILE"));
    return p11_ctx(p11, KV_OK);
}

/* The token pulled out and plugged back in, through tests/p11shim.c. */
START_TEST(token_removed_and_back)
{
    char control[700], shim[700];
    kv_ctx *ctx;
    kv_key *key = NULL, *peer = NULL;
    unsigned char sig[128], ppub[200], z[64];
    size_t siglen, ppublen = sizeof(ppub), zlen;

    ctx = shim_ctx("present", control, shim);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("plug"), KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("peer"), KV_KEY_EC_P256, NULL, &peer), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(peer, ppub, &ppublen), KV_OK);
    sign_verify(ctx, key);

    tu_write(control, "removed\n");
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"x", 1, sig, &siglen),
                 KV_ERR_TOKEN_NOT_PRESENT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), env("KV_P11_TOKEN")));
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"x", 1, sig, &siglen),
                 KV_ERR_TOKEN_NOT_PRESENT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not present"));

    /* back: old sessions are gone, the library reconnects and logs in again */
    tu_write(control, "present\n");
    sign_verify(ctx, key);
    zlen = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(key, ppub, ppublen, z, &zlen), KV_OK);
    ck_assert_str_eq(kv_errmsg(ctx), "");

    /* a removal between two operations of a running process, once more */
    tu_write(control, "removed\n");
    zlen = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(key, ppub, ppublen, z, &zlen), KV_ERR_TOKEN_NOT_PRESENT);
    tu_write(control, "present\n");
    zlen = sizeof(z);
    ck_assert_rc(ctx, kv_ecdh(key, ppub, ppublen, z, &zlen), KV_OK);

    kv_key_free(key);
    kv_key_free(peer);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("plug")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("peer")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

struct slow_opener {
    kv_ctx *ctx;
    const char *name;
    kv_rc rc;
};

static void *open_and_free(void *p)
{
    struct slow_opener *o = p;
    kv_key *k = NULL;

    o->rc = kv_key_open(o->ctx, o->name, &k);
    kv_key_free(k);
    return NULL;
}

/* Whether the shim's fault log at path has a line beginning with what
 * ("C_Login slow": a slow C_Login began). */
static int fault_logged(const char *path, const char *what)
{
    char line[128];
    FILE *f = fopen(path, "r");
    int seen = 0;

    while (f && !seen && fgets(line, sizeof(line), f))
        seen = strncmp(line, what, strlen(what)) == 0;
    if (f)
        fclose(f);
    return seen;
}

/* A context on the shim with the fault schedule `faults`, logged to log
 * (700 bytes), and an EC key `base` made on it: the key's generation is the
 * process's first C_GetMechanismInfo, so the schedule's second is a sign's. */
static kv_ctx *mech_fault_ctx(const char *faults, const char *base, char *log, kv_key **key)
{
    char control[700], shim[700];
    kv_ctx *ctx;

    snprintf(log, 700, "%s/%s.log", tu_tmpdir(), base);
    setenv("KV_SHIM_FAULTS", faults, 1);
    setenv("KV_SHIM_FAULT_LOG", log, 1);
    ctx = shim_ctx("present", control, shim);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname(base), KV_KEY_EC_P256, NULL, key), KV_OK);
    return ctx;
}

static void mech_fault_done(kv_ctx *ctx, kv_key *key, const char *base)
{
    unsetenv("KV_SHIM_FAULTS");
    unsetenv("KV_SHIM_FAULT_LOG");
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname(base)), KV_OK);
    kv_ctx_free(ctx);
}

/* C_GetMechanismInfo says the token is gone (and it is back at once): the
 * sign reconnects and goes on, as after any other call that meets a lost
 * token. Before the fix the step returned CKR_OK with the error, so the
 * pool was kept and nothing retried: the sign failed, and on a token
 * plugged back under another slot id every later sign failed the same. */
START_TEST(mechanism_query_meets_a_lost_token)
{
    char log[700];
    kv_key *key = NULL;
    kv_ctx *ctx = mech_fault_ctx("C_GetMechanismInfo:CKR_DEVICE_REMOVED:2", "mechlost", log, &key);

    sign_verify(ctx, key);
    ck_assert_msg(fault_logged(log, "C_GetMechanismInfo CKR_DEVICE_REMOVED"),
                  "the sign's mechanism query met no fault");
    ck_assert_str_eq(kv_errmsg(ctx), "");
    mech_fault_done(ctx, key, "mechlost");
}
END_TEST

/* A mechanism query that fails without losing the token fails that call,
 * naming C_GetMechanismInfo, and is asked again by the next. Before the
 * fix the failure was kept as the mechanism's answer, and every sign
 * with the mechanism failed until a reconnect. */
START_TEST(mechanism_query_failure_is_not_kept)
{
    char log[700];
    unsigned char sig[128];
    size_t siglen = sizeof(sig);
    kv_key *key = NULL;
    kv_ctx *ctx = mech_fault_ctx("C_GetMechanismInfo:CKR_DEVICE_MEMORY:2", "mechmem", log, &key);

    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"x", 1, sig, &siglen),
                 KV_ERR_NO_SPACE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "C_GetMechanismInfo"));
    ck_assert(fault_logged(log, "C_GetMechanismInfo CKR_DEVICE_MEMORY"));
    sign_verify(ctx, key);
    mech_fault_done(ctx, key, "mechmem");
}
END_TEST

/* How many lines of the shim's fault log at path begin with what. */
static int fault_count(const char *path, const char *what)
{
    char line[128];
    FILE *f = fopen(path, "r");
    int n = 0;

    while (f && fgets(line, sizeof(line), f))
        n += strncmp(line, what, strlen(what)) == 0;
    if (f)
        fclose(f);
    return n;
}

/* A context on the shim acting as a token that allows `sessions` sessions
 * at once (KV_SHIM_SESSIONS: N, or N/R with R read/write), with the fault
 * schedule `faults` (or none), both logged to log (700 bytes). */
static kv_ctx *few_sessions_ctx(const char *sessions, const char *faults, const char *base,
                                char *log)
{
    char control[700], shim[700];

    snprintf(log, 700, "%s/%s.log", tu_tmpdir(), base);
    setenv("KV_SHIM_SESSIONS", sessions, 1);
    setenv("KV_SHIM_FAULT_LOG", log, 1);
    if (faults)
        setenv("KV_SHIM_FAULTS", faults, 1);
    return shim_ctx("present", control, shim);
}

static void few_sessions_done(kv_ctx *ctx, const char *log)
{
    ck_assert_msg(fault_count(log, "C_OpenSession CKR_SESSION_COUNT") == 0,
                  "the library opened a session past the token's ulMaxSessionCount");
    unsetenv("KV_SHIM_SESSIONS");
    unsetenv("KV_SHIM_FAULT_LOG");
    unsetenv("KV_SHIM_FAULTS");
    kv_ctx_free(ctx);
}

/* The end of a test on a token of few sessions: key b signs, both keys
 * are destroyed, and the shim never refused a session. */
static void two_keys_done(kv_ctx *ctx, kv_key *ka, const char *a, kv_key *kb, const char *b,
                          const char *log)
{
    sign_verify(ctx, kb);
    kv_key_free(ka);
    kv_key_free(kb);
    ck_assert_rc(ctx, kv_key_destroy(ctx, a), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, b), KV_OK);
    few_sessions_done(ctx, log);
}

/* A token that allows one session at a time: a write has the token alone
 * (the pool's session closed, a read/write session logged in), and signs
 * connect again after it. Before the fix every write failed with
 * CKR_SESSION_COUNT: it opened its read/write session beside the pool
 * session it held. */
START_TEST(writes_on_a_token_of_one_session)
{
    char log[700], a[64], b[64];
    kv_key *ka = NULL, *kb = NULL;
    kv_ctx *ctx = few_sessions_ctx("1", NULL, "onesess", log);

    snprintf(a, sizeof(a), "%s", kname("one-a"));
    snprintf(b, sizeof(b), "%s", kname("one-b"));
    ck_assert_rc(ctx, kv_key_generate(ctx, a, KV_KEY_EC_P256, NULL, &ka), KV_OK);
    sign_verify(ctx, ka);
    /* the pool's one session is open and idle now: closed for the write */
    ck_assert_rc(ctx, kv_key_generate(ctx, b, KV_KEY_RSA_2048, NULL, &kb), KV_OK);
    sign_verify(ctx, kb);
    sign_verify(ctx, ka);
    kv_key_free(ka);
    kv_key_free(kb);
    ck_assert_rc(ctx, kv_key_destroy(ctx, a), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, b), KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, a, &ka), KV_ERR_KEY_NOT_FOUND);
    few_sessions_done(ctx, log);
}
END_TEST

struct signer {
    kv_key *key;
    int signs;
    int ok;
};

static void *signer(void *p)
{
    struct signer *g = p;
    unsigned char sig[128];

    for (int i = 0; i < g->signs; i++) {
        size_t siglen = sizeof(sig);
        g->ok += kv_sign(g->key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen) ==
                 KV_OK;
    }
    return NULL;
}

/* A token that allows two sessions, both signing (C_Sign made slow), when
 * a key is generated: the write waits for a sign to end and closes its
 * idle session to make room. Before the fix it took that session and
 * opened a third: CKR_SESSION_COUNT. */
START_TEST(a_write_waits_for_room_on_a_busy_token)
{
    char log[700], a[64], b[64];
    kv_key *ka = NULL, *kb = NULL;
    pthread_t th[2];
    struct signer g[2];
    kv_ctx *ctx = few_sessions_ctx("2", "C_Sign:slow=1500ms", "busysess", log);

    snprintf(a, sizeof(a), "%s", kname("busy-a"));
    snprintf(b, sizeof(b), "%s", kname("busy-b"));
    ck_assert_rc(ctx, kv_key_generate(ctx, a, KV_KEY_EC_P256, NULL, &ka), KV_OK);
    for (int i = 0; i < 2; i++) {
        g[i] = (struct signer){ ka, 1, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, signer, &g[i]), 0);
    }
    /* both signs are in C_Sign, each on a session of its own */
    for (int waited = 0; fault_count(log, "C_Sign slow") < 2; waited += 10) {
        ck_assert_msg(waited < 20000, "the two signs did not start within 20 s");
        usleep(10000);
    }
    ck_assert_rc(ctx, kv_key_generate(ctx, b, KV_KEY_EC_P256, NULL, &kb), KV_OK);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(g[i].ok, 1);
    }
    two_keys_done(ctx, ka, a, kb, b, log);
}
END_TEST

/* A sign's call fails as lost (CKR_DEVICE_ERROR) while another thread signs
 * on the token's second session, and the reconnect fails (the shim's
 * C_GetTokenInfo fails): the pool is dropped, not connected again. When the
 * other sign's slow call fails the same way, its session is closed as it
 * is handed back; that sign then reconnects and succeeds, and a write finds
 * room. Before the fix that session was forgotten but left open in the
 * module (not connected: not closed), so the token's two sessions were
 * taken and the write failed with CKR_SESSION_COUNT. */
START_TEST(a_session_in_use_through_a_failed_reconnect_is_closed)
{
    char log[700], control[700], a[64], b[64];
    unsigned char sig[128];
    size_t siglen = sizeof(sig);
    kv_key *ka = NULL, *kb = NULL;
    pthread_t th;
    struct signer g;
    kv_ctx *ctx = few_sessions_ctx("2", "C_Sign:slow=3000ms:1,C_Sign:CKR_DEVICE_ERROR:1-2",
                                   "dropsess", log);

    snprintf(control, sizeof(control), "%s/shim-control", tu_tmpdir());
    snprintf(a, sizeof(a), "%s", kname("drop-a"));
    snprintf(b, sizeof(b), "%s", kname("drop-b"));
    ck_assert_rc(ctx, kv_key_generate(ctx, a, KV_KEY_EC_P256, NULL, &ka), KV_OK);
    g = (struct signer){ ka, 1, 0 };
    ck_assert_int_eq(pthread_create(&th, NULL, signer, &g), 0);
    for (int waited = 0; fault_count(log, "C_Sign slow") < 1; waited += 10) {
        ck_assert_msg(waited < 20000, "the thread's sign did not start within 20 s");
        usleep(10000);
    }
    tu_write(control, "info-fails\n");
    ck_assert_int_ne(kv_sign(ka, KV_ALG_DEFAULT, 0, (const unsigned char *)"x", 1, sig, &siglen),
                     KV_OK);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "C_GetTokenInfo"));
    /* (the shim logs the thread's fault as its slow call begins) */
    ck_assert_int_eq(fault_count(log, "C_Sign CKR_DEVICE_ERROR"), 2);
    tu_write(control, "present\n");
    pthread_join(th, NULL);
    ck_assert_int_eq(fault_count(log, "C_Sign CKR_DEVICE_ERROR"), 2);
    ck_assert_int_eq(g.ok, 1);
    ck_assert_rc(ctx, kv_key_generate(ctx, b, KV_KEY_EC_P256, NULL, &kb), KV_OK);
    two_keys_done(ctx, ka, a, kb, b, log);
}
END_TEST

struct writer {
    kv_ctx *ctx;
    char name[64];
    int rounds;
    int ok;
};

static void *writer(void *p)
{
    struct writer *w = p;

    for (int i = 0; i < w->rounds; i++) {
        kv_key *k = NULL;
        w->ok += kv_key_generate(w->ctx, w->name, KV_KEY_EC_P256, NULL, &k) == KV_OK &&
                 kv_key_destroy(w->ctx, w->name) == KV_OK;
        kv_key_free(k);
    }
    return NULL;
}

/* Three sessions, one of them read/write, shared by six threads signing
 * and two creating and destroying keys: everything succeeds and the
 * library never asks the token for a session past either limit. */
START_TEST(signs_and_writes_share_a_token_of_few_sessions)
{
    char log[700], a[64];
    kv_key *ka = NULL;
    pthread_t th[8];
    struct signer g[6];
    struct writer w[2];
    kv_ctx *ctx = few_sessions_ctx("3/1", NULL, "fewsess", log);

    snprintf(a, sizeof(a), "%s", kname("few"));
    ck_assert_rc(ctx, kv_key_generate(ctx, a, KV_KEY_EC_P256, NULL, &ka), KV_OK);
    for (int i = 0; i < 6; i++) {
        g[i] = (struct signer){ ka, 30, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, signer, &g[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        w[i] = (struct writer){ ctx, "", 4, 0 };
        snprintf(w[i].name, sizeof(w[i].name), "few-w%d-%ld", i, (long)getpid());
        ck_assert_int_eq(pthread_create(&th[6 + i], NULL, writer, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(g[i].ok, 30);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(w[i].ok, 4);
    kv_key_free(ka);
    ck_assert_rc(ctx, kv_key_destroy(ctx, a), KV_OK);
    few_sessions_done(ctx, log);
}
END_TEST

/*
 * A process forks while another of its threads logs in to the token (the
 * token's lock held through C_Initialize, C_OpenSession and C_Login: the
 * shim makes that C_Login take 3 s, and the fork lands in them). The
 * child, which has only the
 * forking thread, opens the key and signs. Before the fix it inherited the
 * lock held by a thread it does not have, and hung.
 */
START_TEST(a_fork_while_another_thread_logs_in)
{
    char control[700], shim[700];
    kv_ctx *ctx, *ctx2;
    kv_key *key = NULL;
    struct slow_opener o;
    pthread_t th;
    pid_t pid;
    int st = 0, ended;
    char name[80], log[700];

    snprintf(log, sizeof(log), "%s/fork-login.log", tu_tmpdir());
    setenv("KV_SHIM_FAULTS", "C_Login:slow=3000ms:2", 1);
    setenv("KV_SHIM_FAULT_LOG", log, 1);
    snprintf(name, sizeof(name), "%s", kname("forklogin")); /* the child's pid is another */
    ctx = shim_ctx("present", control, shim);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, NULL, &key), KV_OK);
    ctx2 = shim_ctx("present", control, shim); /* a token of its own: login 2 */
    o = (struct slow_opener){ ctx2, name, KV_ERR_BACKEND };
    ck_assert_int_eq(pthread_create(&th, NULL, open_and_free, &o), 0);
    /* the shim logs the slow login as it starts its 3 s: fork inside them */
    for (int waited = 0; !fault_logged(log, "C_Login slow"); waited += 10) {
        ck_assert_msg(waited < 20000, "the thread's login did not start within 20 s");
        usleep(10000);
    }
    usleep(200 * 1000);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        kv_key *k = NULL;
        unsigned char sig[128];
        size_t siglen = sizeof(sig);
        if (kv_key_open(ctx2, name, &k) != KV_OK ||
            kv_sign(k, KV_ALG_DEFAULT, 0, (const unsigned char *)"x", 1, sig, &siglen) != KV_OK) {
            fprintf(stderr, "the child: %s\n", kv_errmsg(ctx2));
            _exit(1);
        }
        _exit(0);
    }
    ended = tu_wait_bounded(pid, 30000, &st);
    pthread_join(th, NULL);
    unsetenv("KV_SHIM_FAULTS");
    unsetenv("KV_SHIM_FAULT_LOG");
    ck_assert_msg(ended, "the child hung in its first use of the token (killed after 30 s)");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status 0x%x)", st);
    ck_assert_rc(ctx2, o.rc, KV_OK);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, name), KV_OK);
    kv_ctx_free(ctx2);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(list_shows_token_keys_only_once)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK);
    kv_key_list *list = NULL;
    int seen = 0;

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("ls"), KV_KEY_RSA_2048, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->keys[i].name, kname("ls")))
            continue;
        seen++;
        ck_assert_str_eq(list->keys[i].backend, "pkcs11");
        ck_assert_int_eq(list->keys[i].type, KV_KEY_RSA_2048);
        ck_assert_int_eq(list->keys[i].assurance, KV_ASSURANCE_TOKEN);
    }
    ck_assert_int_eq(seen, 1);
    kv_key_list_free(list);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("ls")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* The module by its p11-kit name, the token by serial alone. */
START_TEST(module_by_name_and_token_by_serial)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *by_serial, *bare;
    kv_key *key = NULL;
    kv_key_info info;
    char serial[40] = "", p11[1024], uri[1024];
    const char *p;

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("ser"), KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    p = strstr(info.uri, "serial=");
    ck_assert_ptr_nonnull(p);
    sscanf(p + 7, "%32[^;]", serial);
    ck_assert_uint_gt(strlen(serial), 0);
    kv_key_free(key);
    kv_ctx_free(ctx);

    /* Debian registers SoftHSM with p11-kit as "softhsm2" */
    snprintf(p11, sizeof(p11), "module = softhsm2\nserial = %s\npin = file:%s\n", serial,
             env("KV_P11_PINFILE"));
    by_serial = p11_ctx(p11, KV_OK);
    ck_assert_rc(by_serial, kv_key_open(by_serial, kname("ser"), &key), KV_OK);
    sign_verify(by_serial, key);
    kv_key_free(key);
    kv_ctx_free(by_serial);

    /* and in a URI, with no configuration at all */
    bare = p11_ctx("", KV_OK);
    snprintf(uri, sizeof(uri), "pkcs11:serial=%s;object=%s;type=private"
             "?module-name=softhsm2&pin-source=file:%s", serial, kname("ser"),
             env("KV_P11_PINFILE"));
    ck_assert_rc(bare, kv_key_open(bare, uri, &key), KV_OK);
    sign_verify(bare, key);
    kv_key_free(key);
    ck_assert_rc(bare, kv_key_destroy(bare, uri), KV_OK);

    /* the token's label with another serial: the message names the serial
     * given and the token's, and never the PIN the URI carries */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;serial=0bad5e7a1;object=%s;type=private"
             "?module-name=softhsm2&pin-value=%s", env("KV_P11_TOKEN"), kname("ser"),
             env("KV_P11_PIN"));
    ck_assert_rc(bare, kv_key_open(bare, uri, &key), KV_ERR_TOKEN_NOT_PRESENT);
    {
        char want[128];
        const char *msg = kv_errmsg(bare);

        snprintf(want, sizeof(want), "token '%s' (serial '0bad5e7a1') is not present",
                 env("KV_P11_TOKEN"));
        ck_assert_msg(strstr(msg, want), "%s", msg);
        snprintf(want, sizeof(want), "'%s' (serial '%s', not '0bad5e7a1')", env("KV_P11_TOKEN"),
                 serial);
        ck_assert_msg(strstr(msg, want), "%s", msg);
        ck_assert_msg(!strstr(msg, env("KV_P11_PIN")), "%s", msg);
        ck_assert_msg(!strstr(msg, "pin-value"), "%s", msg);
    }
    kv_ctx_free(bare);
}
END_TEST

/* A key URI whose module-path= names `module`, with the harness PIN in it. */
static const char *uri_with_module(const char *module)
{
    static char uri[1536];

    snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-value=%s",
             token_uri(), kname("mp"), module, env("KV_P11_PIN"));
    return uri;
}

/* A copy of the harness module (SoftHSM) under the scratch directory: the
 * same code, but no p11-kit module file names this path. */
static const char *module_copy(void)
{
    static char path[700];

    snprintf(path, sizeof(path), "%s/copy-of-module.so", tu_tmpdir());
    ck_assert_int_eq(tu_sh("cp '%s' '%s'", env("KV_P11_MODULE"), path), 0);
    return path;
}

static void refused(kv_ctx *ctx, const char *module)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, uri_with_module(module), &key), KV_ERR_PERMISSION);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), module));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not registered with p11-kit"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "allowed_modules"));
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), env("KV_P11_PIN")));
}

static void accepted(kv_ctx *ctx, const char *module)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, uri_with_module(module), &key), KV_OK);
    sign_verify(ctx, key);
    kv_key_free(key);
}

/* module-path= in a key URI loads only registered or configured modules. */
START_TEST(module_path_must_be_registered)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *bare;
    char shim[700], link[700], marker[700], mark[700];
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("mp"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    kv_ctx_free(ctx);
    snprintf(shim, sizeof(shim), "%s/tests/.libs/p11shim.so", env("KV_BUILDDIR"));
    snprintf(link, sizeof(link), "%s/link-to-module.so", tu_tmpdir());
    ck_assert_int_eq(symlink(env("KV_P11_MODULE"), link), 0);
    /* p11marker's constructor creates $KV_MARKER_FILE when the library is mapped */
    snprintf(marker, sizeof(marker), "%s/tests/.libs/p11marker.so", env("KV_BUILDDIR"));
    snprintf(mark, sizeof(mark), "%s/marker-loaded", tu_tmpdir());
    (void)unlink(mark);
    ck_assert_int_eq(setenv("KV_MARKER_FILE", mark, 1), 0);

    bare = p11_ctx("", KV_OK);
    refused(bare, marker);
    ck_assert_msg(access(mark, F_OK) != 0, "a refused module-path= was loaded");
    refused(bare, shim);
    refused(bare, module_copy());
    refused(bare, "/nonexistent/module.so"); /* no hint whether a path exists */
    /* a symlink to the module Debian registers (softhsm2.module) resolves to it */
    accepted(bare, link);
    accepted(bare, env("KV_P11_MODULE"));
    kv_ctx_free(bare);

    /* a configured module that is not registered: only its own path */
    bare = p11_ctx("module = /nowhere/configured.so\n", KV_OK);
    refused(bare, shim);
    refused(bare, marker);
    kv_ctx_free(bare);
    ck_assert_msg(access(mark, F_OK) != 0, "a refused module-path= was loaded");
    /* the control: once any path is allowed, the same open maps the library
     * (which then fails, being no module) and the marker appears */
    bare = p11_ctx("allow_any_module = true\n", KV_OK);
    ck_assert_int_ne(kv_key_open(bare, uri_with_module(marker), &key), KV_OK);
    ck_assert_ptr_null(key);
    kv_ctx_free(bare);
    ck_assert_msg(access(mark, F_OK) == 0, "p11marker.so loaded without leaving %s", mark);
    ck_assert_int_eq(unsetenv("KV_MARKER_FILE"), 0);
    /* a bad value of the switch is a configuration error at kv_ctx_new, not a yes */
    bare = p11_ctx("allow_any_module = ture\n", KV_ERR_CONFIG);
    ck_assert_ptr_null(bare);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "allow_any_module"));
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("mp")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* ...unless the configuration allows them: by list, or any path. */
START_TEST(module_path_allowed_by_configuration)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *listed, *any;
    const char *copy = module_copy();
    char p11[1024];

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("mp"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    kv_ctx_free(ctx);
    snprintf(p11, sizeof(p11), "allowed_modules = /nowhere/a.so, %s\n", copy);
    listed = p11_ctx(p11, KV_OK);
    accepted(listed, copy);
    kv_ctx_free(listed);
    listed = p11_ctx("allowed_modules = /nowhere/a.so\n", KV_OK);
    refused(listed, copy);
    kv_ctx_free(listed);
    any = p11_ctx("allow_any_module = true\n", KV_OK);
    accepted(any, copy);
    kv_ctx_free(any);
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("mp")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* Raw PKCS#11, not through libkeyvault: what a generated key looks like. */
START_TEST(generated_key_attributes)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK);
    CK_FUNCTION_LIST *f;
    CK_SLOT_ID slots[8];
    CK_ULONG nslots = 8, count = 0;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE priv = 0, pub = 0;
    CK_OBJECT_CLASS pcls = CKO_PRIVATE_KEY, ucls = CKO_PUBLIC_KEY;
    const char *label = kname("attrs");
    CK_ATTRIBUTE find[] = { { CKA_CLASS, &pcls, sizeof(pcls) },
                            { CKA_LABEL, (void *)label, strlen(label) } };
    CK_BBOOL token = 0, private_ = 0, sensitive = 0, extractable = 1, never = 0;
    unsigned char id[64], pid[64], value[512];
    CK_ATTRIBUTE attrs[] = {
        { CKA_TOKEN, &token, sizeof(token) },           { CKA_PRIVATE, &private_, sizeof(private_) },
        { CKA_SENSITIVE, &sensitive, sizeof(sensitive) }, { CKA_EXTRACTABLE, &extractable, sizeof(extractable) },
        { CKA_NEVER_EXTRACTABLE, &never, sizeof(never) }, { CKA_ID, id, sizeof(id) },
    };
    CK_ATTRIBUTE val = { CKA_VALUE, value, sizeof(value) };
    CK_ATTRIBUTE pubid = { CKA_ID, pid, sizeof(pid) };
    CK_TOKEN_INFO ti;

    ck_assert_rc(ctx, kv_key_generate(ctx, label, KV_KEY_EC_P256, NULL, NULL), KV_OK);
    f = p11_kit_module_load(env("KV_P11_MODULE"), 0);
    ck_assert_ptr_nonnull(f);
    if (getenv("KV_P11_INIT_ARGS")) {
        CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK,
                                      .pReserved = (void *)getenv("KV_P11_INIT_ARGS") };
        ck_assert_uint_eq(f->C_Initialize(&args), CKR_OK);
    } else {
        ck_assert_uint_eq(p11_kit_module_initialize(f), CKR_OK);
    }
    ck_assert_uint_eq(f->C_GetSlotList(CK_TRUE, slots, &nslots), CKR_OK);
    for (CK_ULONG i = 0; i < nslots; i++) {
        ck_assert_uint_eq(f->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        if (!strncmp((char *)ti.label, env("KV_P11_TOKEN"), strlen(env("KV_P11_TOKEN"))))
            slots[0] = slots[i];
    }
    ck_assert_uint_eq(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CK_RV lrv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)env("KV_P11_PIN"), strlen(env("KV_P11_PIN")));
    ck_assert(lrv == CKR_OK || lrv == CKR_USER_ALREADY_LOGGED_IN);
    ck_assert_uint_eq(f->C_FindObjectsInit(h, find, 2), CKR_OK);
    ck_assert_uint_eq(f->C_FindObjects(h, &priv, 1, &count), CKR_OK);
    f->C_FindObjectsFinal(h);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(f->C_GetAttributeValue(h, priv, attrs, 6), CKR_OK);
    ck_assert(token && private_ && sensitive && !extractable && never);
    ck_assert_uint_eq(attrs[5].ulValueLen, 16); /* a random 16-byte CKA_ID */
    /* the private value cannot be read (tpm2-pkcs11 says the attribute is
     * not there at all, the others that it is sensitive) */
    CK_RV vrv = f->C_GetAttributeValue(h, priv, &val, 1);
    ck_assert_msg(vrv == CKR_ATTRIBUTE_SENSITIVE || vrv == CKR_ATTRIBUTE_TYPE_INVALID,
                  "reading CKA_VALUE of the private key gave CK_RV 0x%lx", (unsigned long)vrv);
    ck_assert_uint_eq(val.ulValueLen, CK_UNAVAILABLE_INFORMATION);
    /* the public key object shares label and CKA_ID */
    find[0].pValue = &ucls;
    ck_assert_uint_eq(f->C_FindObjectsInit(h, find, 2), CKR_OK);
    ck_assert_uint_eq(f->C_FindObjects(h, &pub, 1, &count), CKR_OK);
    f->C_FindObjectsFinal(h);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(f->C_GetAttributeValue(h, pub, &pubid, 1), CKR_OK);
    ck_assert_uint_eq(pubid.ulValueLen, 16);
    ck_assert_mem_eq(pid, id, 16);
    f->C_CloseSession(h);
    p11_kit_module_finalize(f);
    p11_kit_module_release(f);
    ck_assert_rc(ctx, kv_key_destroy(ctx, label), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A certificate for the public key `spki`, self-issued by a throwaway key. */
static unsigned char *make_cert(const unsigned char *spki, size_t spkilen, const char *cn,
                                long serial, int *len)
{
    const unsigned char *p = spki;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spkilen);
    EVP_PKEY *ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char *der = NULL;

    ck_assert(pub && ca && x && name);
    ck_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                         -1, 0));
    ck_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), serial));
    ck_assert(X509_set_subject_name(x, name) && X509_set_issuer_name(x, name));
    ck_assert(X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
              X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    ck_assert(X509_set_pubkey(x, pub) && X509_sign(x, ca, EVP_sha256()));
    *len = i2d_X509(x, &der);
    ck_assert_int_gt(*len, 0);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(ca);
    EVP_PKEY_free(pub);
    return der;
}

static void cert_is(kv_ctx *ctx, const char *name, const unsigned char *der, int len)
{
    unsigned char back[4096];
    size_t blen = sizeof(back);
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, name, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_cert_der(key, back, &blen), KV_OK);
    ck_assert_uint_eq(blen, (size_t)len);
    ck_assert_mem_eq(back, der, blen);
    kv_key_free(key);
}

/* Storing a certificate replaces the earlier one on every token, also on
 * one that refuses a second object for the same name (softokn refuses the
 * same certificate twice, and a label used by another subject). */
START_TEST(certificate_replaced)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK);
    kv_key *key = NULL;
    unsigned char pub[600], *a, *b, *c;
    size_t publen = sizeof(pub);
    int la, lb, lc;

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("crt"), KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(key, pub, &publen), KV_OK);
    a = make_cert(pub, publen, "first subject", 1, &la);
    b = make_cert(pub, publen, "another subject", 2, &lb);
    c = make_cert(pub, publen, "first subject", 3, &lc);
    ck_assert_rc(ctx, kv_key_store_cert(key, a, (size_t)la), KV_OK);
    cert_is(ctx, kname("crt"), a, la);
    ck_assert_rc(ctx, kv_key_store_cert(key, a, (size_t)la), KV_OK); /* the same again */
    cert_is(ctx, kname("crt"), a, la);
    ck_assert_rc(ctx, kv_key_store_cert(key, b, (size_t)lb), KV_OK); /* another subject */
    cert_is(ctx, kname("crt"), b, lb);
    ck_assert_rc(ctx, kv_key_store_cert(key, c, (size_t)lc), KV_OK); /* renewed */
    cert_is(ctx, kname("crt"), c, lc);
    ck_assert_rc(ctx, kv_key_store_cert(key, c, (size_t)lc), KV_OK);
    cert_is(ctx, kname("crt"), c, lc);
    OPENSSL_free(a);
    OPENSSL_free(b);
    OPENSSL_free(c);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("crt")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* ---- raw PKCS#11 on the harness token, for what libkeyvault must not do --- */

/* A logged-in read/write session on the harness token. */
static CK_FUNCTION_LIST *raw_open(CK_SESSION_HANDLE *h)
{
    CK_FUNCTION_LIST *f = p11_kit_module_load(env("KV_P11_MODULE"), 0);
    CK_SLOT_ID slots[8], slot = 0;
    CK_ULONG nslots = 8;
    CK_TOKEN_INFO ti;
    int found = 0;
    CK_RV rv;

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(p11_kit_module_initialize(f), CKR_OK);
    ck_assert_uint_eq(f->C_GetSlotList(CK_TRUE, slots, &nslots), CKR_OK);
    for (CK_ULONG i = 0; i < nslots; i++) {
        ck_assert_uint_eq(f->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        if (!strncmp((char *)ti.label, env("KV_P11_TOKEN"), strlen(env("KV_P11_TOKEN")))) {
            slot = slots[i];
            found = 1;
        }
    }
    ck_assert(found);
    ck_assert_uint_eq(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h),
                      CKR_OK);
    rv = f->C_Login(*h, CKU_USER, (CK_UTF8CHAR_PTR)env("KV_P11_PIN"), strlen(env("KV_P11_PIN")));
    ck_assert(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
    return f;
}

static void raw_close(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE h)
{
    f->C_CloseSession(h);
    p11_kit_module_finalize(f);
    p11_kit_module_release(f);
}

/* Every object of a class carrying the label (up to max). */
static CK_ULONG raw_find(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE h, CK_OBJECT_CLASS cls,
                         const char *label, CK_OBJECT_HANDLE *objs, CK_ULONG max)
{
    CK_ATTRIBUTE t[] = { { CKA_CLASS, &cls, sizeof(cls) },
                         { CKA_LABEL, (void *)label, strlen(label) } };
    CK_ULONG n = 0;

    ck_assert_uint_eq(f->C_FindObjectsInit(h, t, 2), CKR_OK);
    ck_assert_uint_eq(f->C_FindObjects(h, objs, max, &n), CKR_OK);
    f->C_FindObjectsFinal(h);
    return n;
}

/* Destroy every object with this label; how many private keys there were. */
static CK_ULONG raw_destroy_label(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE h, const char *label)
{
    CK_OBJECT_CLASS classes[] = { CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE };
    CK_OBJECT_HANDLE objs[16];
    CK_ULONG privs = 0;

    for (int c = 0; c < 3; c++) {
        CK_ULONG n = raw_find(f, h, classes[c], label, objs, 16);
        if (c == 0)
            privs = n;
        for (CK_ULONG i = 0; i < n; i++)
            ck_assert_uint_eq(f->C_DestroyObject(h, objs[i]), CKR_OK);
    }
    return privs;
}

/* ---- keys created at an explicit URI --------------------------------------- */

START_TEST(generate_at_uri)
{
    kv_ctx *bare = p11_ctx("", KV_OK), *ctx;
    const char *pin = env("KV_P11_PIN");
    kv_key *key = NULL;
    kv_key_info info;
    char uri[1024];

    /* no [pkcs11] section: the URI brings module, token and PIN */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?module-path=%s&pin-value=%s",
             env("KV_P11_TOKEN"), kname("at"), env("KV_P11_MODULE"), pin);
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, &key), KV_OK);
    ck_assert_rc(bare, kv_key_get_info(key, &info), KV_OK);
    ck_assert_str_eq(info.name, kname("at"));
    ck_assert_str_eq(info.backend, "pkcs11");
    ck_assert_int_eq(info.type, KV_KEY_EC_P256);
    ck_assert_ptr_nonnull(strstr(info.uri, "type=private"));
    ck_assert_ptr_null(strstr(info.uri, pin));
    sign_verify(bare, key);
    kv_key_free(key);
    /* never twice at one place; the PIN is in no message */
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, NULL), KV_ERR_KEY_EXISTS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), kname("at")));
    ck_assert_ptr_null(strstr(kv_errmsg(bare), pin));
    /* a configured context finds it by name */
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, kname("at"), &key), KV_OK);
    sign_verify(ctx, key);
    kv_key_free(key);

    /* with a chosen CKA_ID, a PIN file and another type */
    snprintf(uri, sizeof(uri),
             "pkcs11:token=%s;object=%s;id=%%01%%02%%03;type=private?module-path=%s"
             "&pin-source=file:%s", env("KV_P11_TOKEN"), kname("at2"), env("KV_P11_MODULE"),
             env("KV_P11_PINFILE"));
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_RSA_2048, &key), KV_OK);
    ck_assert_rc(bare, kv_key_get_info(key, &info), KV_OK);
    ck_assert_ptr_nonnull(strstr(info.uri, "id=%01%02%03"));
    ck_assert_int_eq(info.type, KV_KEY_RSA_2048);
    sign_verify(bare, key);
    kv_key_free(key);
    /* that CKA_ID is taken, whatever the name */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s;id=%%01%%02%%03?module-path=%s"
             "&pin-value=%s", env("KV_P11_TOKEN"), kname("at3"), env("KV_P11_MODULE"), pin);
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, NULL), KV_ERR_KEY_EXISTS);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), "CKA_ID"));

    /* what a new key's URI must say, and nothing echoes the PIN */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s?module-path=%s&pin-value=%s",
             env("KV_P11_TOKEN"), env("KV_P11_MODULE"), pin);
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, NULL), KV_ERR_BAD_URI);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(bare), "object="));
    ck_assert_ptr_null(strstr(kv_errmsg(bare), pin));
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=a%%20b?module-path=%s&pin-value=%s",
             env("KV_P11_TOKEN"), env("KV_P11_MODULE"), pin);
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, NULL), KV_ERR_BAD_URI);
    ck_assert_ptr_null(strstr(kv_errmsg(bare), pin));
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=x;type=public?module-path=%s&pin-value=%s",
             env("KV_P11_TOKEN"), env("KV_P11_MODULE"), pin);
    ck_assert_rc(bare, kv_key_generate_at(bare, uri, KV_KEY_EC_P256, NULL), KV_ERR_BAD_URI);
    ck_assert_ptr_null(strstr(kv_errmsg(bare), pin));
    ck_assert_rc(bare, kv_key_generate_at(bare, "nope:x", KV_KEY_EC_P256, NULL), KV_ERR_BAD_URI);

    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("at")), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("at2")), KV_OK);
    kv_ctx_free(ctx);
    kv_ctx_free(bare);
}
END_TEST

/* A keygen failure reads as its cause: the CK_RV of C_GenerateKeyPair, not
 * the existence check's "no private key labelled ...". */
START_TEST(keygen_failure_names_the_cause)
{
    char control[700], shim[700], uri[1024];
    const char *kind = NULL;
    kv_ctx *ctx;

    ctx = shim_ctx("write-protected", control, shim);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("ro"), KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_BACKEND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "C_GenerateKeyPair"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "CKR_TOKEN_WRITE_PROTECTED"));
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "no private key"));
    ck_assert_uint_eq(kv_backend_code(ctx, &kind), CKR_TOKEN_WRITE_PROTECTED);
    ck_assert_str_eq(kind, "CK_RV");
    /* the same at a URI */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s",
             env("KV_P11_TOKEN"), kname("ro"), shim, env("KV_P11_PINFILE"));
    ck_assert_rc(ctx, kv_key_generate_at(ctx, uri, KV_KEY_EC_P256, NULL), KV_ERR_BACKEND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "CKR_TOKEN_WRITE_PROTECTED"));
    ck_assert_uint_eq(kv_backend_code(ctx, NULL), CKR_TOKEN_WRITE_PROTECTED);
    /* writable again: it works, and a failed attempt left nothing behind */
    tu_write(control, "present\n");
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("ro"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("ro")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* A creator racing this one without its lock purged this one's public key
 * between its storing and the private key's (the shim's "lose-public", what
 * creation_race_without_shared_home met now and then in CI): this creator
 * loses the name cleanly, KV_ERR_KEY_EXISTS, and leaves no private key. */
START_TEST(keygen_public_key_purged_meanwhile)
{
    char control[700], shim[700];
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f;
    kv_ctx *ctx;

    ctx = shim_ctx("lose-public", control, shim);
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("lost"), KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_KEY_EXISTS);
    ck_assert_msg(strstr(kv_errmsg(ctx), "another creator") != NULL, "%s", kv_errmsg(ctx));
    f = raw_open(&h);
    ck_assert_uint_eq(raw_destroy_label(f, h, kname("lost")), 0);
    raw_close(f, h);
    /* the name is free: the next generation (the race over) makes it */
    tu_write(control, "present\n");
    ck_assert_rc(ctx, kv_key_generate(ctx, kname("lost"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_destroy(ctx, kname("lost")), KV_OK);
    kv_ctx_free(ctx);
}
END_TEST

/* Replace the public key object of `victim` by one holding donor's key,
 * under the victim's CKA_ID and label, as a damaged or tampered token would. */
static void swap_public(const char *victim, const char *donor, CK_KEY_TYPE kt)
{
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f = raw_open(&h);
    CK_OBJECT_HANDLE vpub, dpub, made;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    unsigned char id[64], a[1024], b[1024];
    CK_ATTRIBUTE idattr = { CKA_ID, id, sizeof(id) };
    CK_ATTRIBUTE vals[2] = {
        { kt == CKK_RSA ? CKA_MODULUS : CKA_EC_PARAMS, a, sizeof(a) },
        { kt == CKK_RSA ? CKA_PUBLIC_EXPONENT : CKA_EC_POINT, b, sizeof(b) },
    };

    ck_assert_uint_eq(raw_find(f, h, CKO_PUBLIC_KEY, victim, &vpub, 1), 1);
    ck_assert_uint_eq(raw_find(f, h, CKO_PUBLIC_KEY, donor, &dpub, 1), 1);
    ck_assert_uint_eq(f->C_GetAttributeValue(h, vpub, &idattr, 1), CKR_OK);
    ck_assert_uint_eq(f->C_GetAttributeValue(h, dpub, vals, 2), CKR_OK);
    ck_assert_uint_eq(f->C_DestroyObject(h, vpub), CKR_OK);
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },   { CKA_KEY_TYPE, &kt, sizeof(kt) },
        { CKA_TOKEN, &yes, sizeof(yes) },   { CKA_PRIVATE, &no, sizeof(no) },
        { CKA_VERIFY, &yes, sizeof(yes) },  { CKA_LABEL, (void *)victim, strlen(victim) },
        { CKA_ID, id, idattr.ulValueLen },  vals[0], vals[1],
    };
    ck_assert_uint_eq(f->C_CreateObject(h, tmpl, 9, &made), CKR_OK);
    raw_close(f, h);
}

START_TEST(mismatched_public_key_is_refused)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *fresh;
    kv_key *key = NULL;
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f;
    struct { const char *victim, *donor; kv_key_type type; CK_KEY_TYPE kt; } cases[] = {
        /* SoftHSM gives no CKA_EC_POINT on a private key: the signature check */
        { "mm-ec", "mm-ec-other", KV_KEY_EC_P256, CKK_EC },
        /* CKA_MODULUS of the private key */
        { "mm-rsa", "mm-rsa-other", KV_KEY_RSA_2048, CKK_RSA },
    };

    for (size_t i = 0; i < 2; i++) {
        char victim[64], donor[64];
        snprintf(victim, sizeof(victim), "%s", kname(cases[i].victim));
        snprintf(donor, sizeof(donor), "%s", kname(cases[i].donor));
        ck_assert_rc(ctx, kv_key_generate(ctx, victim, cases[i].type, NULL, NULL), KV_OK);
        ck_assert_rc(ctx, kv_key_generate(ctx, donor, cases[i].type, NULL, NULL), KV_OK);
        /* untouched, both open */
        ck_assert_rc(ctx, kv_key_open(ctx, victim, &key), KV_OK);
        kv_key_free(key);
        swap_public(victim, donor, cases[i].kt);
        fresh = p11_ctx(NULL, KV_OK);
        ck_assert_rc(fresh, kv_key_open(fresh, victim, &key), KV_ERR_CORRUPT);
        ck_assert_ptr_null(key);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(fresh), victim));
        ck_assert_ptr_nonnull(strstr(kv_errmsg(fresh), "another key"));
        ck_assert_rc(fresh, kv_key_open(fresh, donor, &key), KV_OK);
        sign_verify(fresh, key);
        kv_key_free(key);
        ck_assert_rc(fresh, kv_key_destroy(fresh, donor), KV_OK);
        kv_ctx_free(fresh);
        f = raw_open(&h);
        ck_assert_uint_eq(raw_destroy_label(f, h, victim), 1);
        raw_close(f, h);
    }
    kv_ctx_free(ctx);
}
END_TEST

/* On a module that offers CKA_EC_POINT on private keys (PKCS#11 3.0; the
 * shim plays one, and refuses to sign), that attribute is what the public
 * key is checked against. */
START_TEST(public_key_checked_by_ec_point)
{
    char control[700], shim[700], victim[64], donor[64], other[64];
    kv_ctx *ctx = shim_ctx("ec-point", control, shim), *fresh;
    kv_key *key = NULL;
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f;

    snprintf(victim, sizeof(victim), "%s", kname("pt-victim"));
    snprintf(donor, sizeof(donor), "%s", kname("pt-donor"));
    snprintf(other, sizeof(other), "%s", kname("pt-other"));
    ck_assert_rc(ctx, kv_key_generate(ctx, victim, KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, donor, KV_KEY_EC_P384, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, other, KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* they open, without a signature (the shim signs nothing) */
    ck_assert_rc(ctx, kv_key_open(ctx, victim, &key), KV_OK);
    kv_key_free(key);
    ck_assert_rc(ctx, kv_key_open(ctx, donor, &key), KV_OK);
    kv_key_free(key);
    kv_ctx_free(ctx);
    /* the victim's public key object replaced by the other pair's */
    swap_public(victim, other, CKK_EC);
    fresh = shim_ctx("ec-point", control, shim);
    ck_assert_rc(fresh, kv_key_open(fresh, victim, &key), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(fresh), victim));
    ck_assert_rc(fresh, kv_key_open(fresh, other, &key), KV_OK);
    kv_key_free(key);
    kv_ctx_free(fresh);
    f = raw_open(&h);
    ck_assert_uint_eq(raw_destroy_label(f, h, victim), 1);
    ck_assert_uint_eq(raw_destroy_label(f, h, donor), 1);
    ck_assert_uint_eq(raw_destroy_label(f, h, other), 1);
    raw_close(f, h);
}
END_TEST

/* The C_Login lines the shim logged (see tests/p11shim.c): all of them, and
 * those that returned CKR_PIN_INCORRECT. */
static int shim_logins(const char *log, int *incorrect)
{
    char line[64];
    FILE *f = fopen(log, "r");
    int n = 0;

    *incorrect = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "C_Login ", 8))
            continue;
        n++;
        *incorrect += strtoul(line + 8, NULL, 16) == CKR_PIN_INCORRECT;
    }
    fclose(f);
    return n;
}

/* A wrong PIN in a URI reaches C_Login once: opened again, through the
 * same URI or another that gives the same PIN, it is refused without a
 * login attempt. */
START_TEST(wrong_uri_pin_tried_once)
{
    char control[700], shim[700], log[700], uri[1536], pinfile[700];
    kv_ctx *ctx = p11_ctx(NULL, KV_OK), *sctx;
    kv_key *key = NULL;
    int incorrect = 0;

    ck_assert_rc(ctx, kv_key_generate(ctx, kname("upin"), KV_KEY_EC_P256, NULL, NULL), KV_OK);
    kv_ctx_free(ctx); /* logged out: every session closed */
    sctx = shim_ctx("present", control, shim);
    snprintf(log, sizeof(log), "%s/shim-calls", tu_tmpdir());
    unlink(log);
    setenv("KV_SHIM_CALLS", log, 1);
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-value=99999999",
             token_uri(), kname("upin"), shim);
    ck_assert_rc(sctx, kv_key_open(sctx, uri, &key), KV_ERR_AUTH_FAILED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(sctx), "CKR_PIN_INCORRECT"));
    ck_assert_int_eq(shim_logins(log, &incorrect), 1);
    ck_assert_int_eq(incorrect, 1);
    for (int i = 0; i < 3; i++) {
        ck_assert_rc(sctx, kv_key_open(sctx, uri, &key), KV_ERR_AUTH_FAILED);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(sctx), "not trying it again"));
        ck_assert_ptr_nonnull(strstr(kv_errmsg(sctx), env("KV_P11_TOKEN")));
        ck_assert_ptr_null(strstr(kv_errmsg(sctx), "99999999"));
    }
    /* the same PIN from a file, for another object: the same token refuses it */
    snprintf(pinfile, sizeof(pinfile), "%s/wrong-uri-pin", tu_tmpdir());
    tu_write(pinfile, "99999999\n");
    snprintf(uri, sizeof(uri), "%s;object=other;type=private?module-path=%s&pin-source=file:%s",
             token_uri(), shim, pinfile);
    ck_assert_rc(sctx, kv_key_open(sctx, uri, &key), KV_ERR_AUTH_FAILED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(sctx), "not trying it again"));
    ck_assert_int_eq(shim_logins(log, &incorrect), 1);
    /* the right PIN logs in, once for any number of opens */
    snprintf(uri, sizeof(uri), "%s;object=%s;type=private?module-path=%s&pin-value=%s",
             token_uri(), kname("upin"), shim, env("KV_P11_PIN"));
    for (int i = 0; i < 3; i++) {
        ck_assert_rc(sctx, kv_key_open(sctx, uri, &key), KV_OK);
        sign_verify(sctx, key);
        kv_key_free(key);
        key = NULL;
    }
    ck_assert_int_eq(shim_logins(log, &incorrect), 2);
    ck_assert_int_eq(incorrect, 1);
    unsetenv("KV_SHIM_CALLS");
    ck_assert_rc(sctx, kv_key_destroy(sctx, kname("upin")), KV_OK);
    kv_ctx_free(sctx);
}
END_TEST

/*
 * A public key object planted under a key's CKA_ID (anyone with a
 * read/write session can make one): generate_at returns the pair it made,
 * and an open refuses the ambiguity rather than taking either.
 */
START_TEST(planted_public_key_is_refused)
{
    kv_ctx *ctx = p11_ctx(NULL, KV_OK);
    kv_key *key = NULL, *donor = NULL;
    kv_key_list *list = NULL;
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f;
    CK_OBJECT_HANDLE dpub, made;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_EC;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    unsigned char id[4], params[64], point[160], dder[200], kder[200];
    size_t dlen = sizeof(dder), klen = sizeof(kder);
    char name[64], planted[64], uri[1024];
    unsigned int pid = (unsigned int)getpid();

    snprintf(name, sizeof(name), "%s", kname("plant"));
    snprintf(planted, sizeof(planted), "%s", kname("planted"));
    ck_assert_rc(ctx, kv_key_generate(ctx, planted, KV_KEY_EC_P256, NULL, &donor), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(donor, dder, &dlen), KV_OK);
    kv_key_free(donor);
    /* the donor's public key again, under the id the next key will get */
    memcpy(id, &pid, sizeof(id));
    f = raw_open(&h);
    ck_assert_uint_eq(raw_find(f, h, CKO_PUBLIC_KEY, planted, &dpub, 1), 1);
    CK_ATTRIBUTE vals[] = { { CKA_EC_PARAMS, params, sizeof(params) },
                            { CKA_EC_POINT, point, sizeof(point) } };
    ck_assert_uint_eq(f->C_GetAttributeValue(h, dpub, vals, 2), CKR_OK);
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },  { CKA_KEY_TYPE, &kt, sizeof(kt) },
        { CKA_TOKEN, &yes, sizeof(yes) },  { CKA_PRIVATE, &no, sizeof(no) },
        { CKA_VERIFY, &yes, sizeof(yes) }, { CKA_LABEL, planted, strlen(planted) },
        { CKA_ID, id, sizeof(id) },        vals[0], vals[1],
    };
    ck_assert_uint_eq(f->C_CreateObject(h, tmpl, 9, &made), CKR_OK);
    raw_close(f, h);

    snprintf(uri, sizeof(uri), "%s;object=%s;id=%%%02x%%%02x%%%02x%%%02x", token_uri(), name,
             id[0], id[1], id[2], id[3]);
    ck_assert_rc(ctx, kv_key_generate_at(ctx, uri, KV_KEY_EC_P256, &key), KV_OK);
    /* the public key returned is the pair's: its signatures verify with it */
    ck_assert_rc(ctx, kv_key_public_der(key, kder, &klen), KV_OK);
    ck_assert(klen != dlen || memcmp(kder, dder, klen) != 0);
    sign_verify(ctx, key);
    kv_key_free(key);
    key = NULL;
    /* opened again, by name or URI: two public keys for one id, refused */
    ck_assert_rc(ctx, kv_key_open(ctx, name, &key), KV_ERR_CORRUPT);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), name));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "more than one public key object"));
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_CORRUPT);
    /* and the list leaves it out */
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    for (size_t i = 0; i < list->count; i++)
        ck_assert_str_ne(list->keys[i].name, name);
    kv_key_list_free(list);
    kv_ctx_free(ctx);
    f = raw_open(&h);
    ck_assert_uint_eq(raw_destroy_label(f, h, name), 1);
    ck_assert_uint_eq(raw_destroy_label(f, h, planted), 1);
    raw_close(f, h);
}
END_TEST

/* An EC pair for ECDH only (CKA_SIGN false), made by raw PKCS#11 on the
 * curve whose DER OID is `oid`. */
static void raw_ecdh_pair(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE h, const char *label,
                          const unsigned char *oid, size_t oidlen, unsigned int id)
{
    CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_HANDLE pubh, privh;
    CK_ATTRIBUTE pub[] = { { CKA_EC_PARAMS, (void *)oid, oidlen },
                           { CKA_TOKEN, &yes, sizeof(yes) },
                           { CKA_LABEL, (void *)label, strlen(label) },
                           { CKA_ID, &id, sizeof(id) } };
    CK_ATTRIBUTE priv[] = { { CKA_TOKEN, &yes, sizeof(yes) },
                            { CKA_PRIVATE, &yes, sizeof(yes) },
                            { CKA_SIGN, &no, sizeof(no) },
                            { CKA_DERIVE, &yes, sizeof(yes) },
                            { CKA_LABEL, (void *)label, strlen(label) },
                            { CKA_ID, &id, sizeof(id) } };

    ck_assert_uint_eq(f->C_GenerateKeyPair(h, &mech, pub, 4, priv, 6, &pubh, &privh), CKR_OK);
}

/* A key that may not sign (ECDH only) and whose token gives no CKA_EC_POINT
 * on private keys (SoftHSM) has its public key checked by an ECDH. */
START_TEST(ecdh_only_key_checked_by_derive)
{
    static const unsigned char p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
    static const unsigned char p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
    char victim[64], other[64], far[64];
    unsigned char vpub[200], ppub[200], *pp = ppub, z[64], want[64];
    size_t vlen = sizeof(vpub), zlen = sizeof(z), wantlen = sizeof(want);
    const unsigned char *vp = vpub;
    unsigned int base = (unsigned int)getpid() << 8;
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), *vkey;
    EVP_PKEY_CTX *dctx;
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f;
    kv_ctx *ctx;
    kv_key *key = NULL;
    int plen;

    snprintf(victim, sizeof(victim), "%s", kname("dh-victim"));
    snprintf(other, sizeof(other), "%s", kname("dh-other"));
    snprintf(far, sizeof(far), "%s", kname("dh-far"));
    f = raw_open(&h);
    raw_ecdh_pair(f, h, victim, p256, sizeof(p256), base + 1);
    raw_ecdh_pair(f, h, other, p256, sizeof(p256), base + 2);
    raw_ecdh_pair(f, h, far, p384, sizeof(p384), base + 3);
    raw_close(f, h);

    /* untouched, it opens, and its ECDH agrees with OpenSSL's */
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, victim, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(key, vpub, &vlen), KV_OK);
    plen = i2d_PUBKEY(peer, &pp);
    ck_assert_int_gt(plen, 0);
    ck_assert_rc(ctx, kv_ecdh(key, ppub, (size_t)plen, z, &zlen), KV_OK);
    vkey = d2i_PUBKEY(NULL, &vp, (long)vlen);
    dctx = EVP_PKEY_CTX_new(peer, NULL);
    ck_assert(vkey && dctx && EVP_PKEY_derive_init(dctx) == 1 &&
              EVP_PKEY_derive_set_peer(dctx, vkey) == 1 &&
              EVP_PKEY_derive(dctx, want, &wantlen) == 1);
    ck_assert_uint_eq(zlen, wantlen);
    ck_assert_mem_eq(z, want, zlen);
    EVP_PKEY_CTX_free(dctx);
    EVP_PKEY_free(vkey);
    EVP_PKEY_free(peer);
    kv_key_free(key);
    key = NULL;
    kv_ctx_free(ctx);

    /* the victim's public key object replaced by another pair's */
    swap_public(victim, other, CKK_EC);
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, victim, &key), KV_ERR_CORRUPT);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), victim));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "another key"));
    ck_assert_rc(ctx, kv_key_open(ctx, other, &key), KV_OK);
    kv_key_free(key);
    key = NULL;
    kv_ctx_free(ctx);
    /* and by a P-384 one: another curve than the private key's */
    swap_public(other, far, CKK_EC);
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_key_open(ctx, other, &key), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), other));
    kv_ctx_free(ctx);

    f = raw_open(&h);
    ck_assert_uint_eq(raw_destroy_label(f, h, victim), 1);
    ck_assert_uint_eq(raw_destroy_label(f, h, other), 1);
    ck_assert_uint_eq(raw_destroy_label(f, h, far), 1);
    raw_close(f, h);
}
END_TEST

START_TEST(list_returns_every_token_key)
{
    enum { N = 300 };
    CK_SESSION_HANDLE h;
    CK_FUNCTION_LIST *f = raw_open(&h);
    CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    unsigned char p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
    CK_BBOOL yes = CK_TRUE;
    static CK_OBJECT_HANDLE made[2 * N];
    kv_key_list *list = NULL;
    kv_ctx *ctx;
    char prefix[64];
    size_t seen = 0;

    snprintf(prefix, sizeof(prefix), "many%ld-", (long)getpid());
    for (int i = 0; i < N; i++) {
        char label[80];
        unsigned int id = (unsigned int)i;
        snprintf(label, sizeof(label), "%s%03d", prefix, i);
        CK_ATTRIBUTE pub[] = { { CKA_EC_PARAMS, p256, sizeof(p256) },
                               { CKA_TOKEN, &yes, sizeof(yes) },
                               { CKA_LABEL, label, strlen(label) },
                               { CKA_ID, &id, sizeof(id) } };
        CK_ATTRIBUTE priv[] = { { CKA_TOKEN, &yes, sizeof(yes) },
                                { CKA_PRIVATE, &yes, sizeof(yes) },
                                { CKA_SIGN, &yes, sizeof(yes) },
                                { CKA_LABEL, label, strlen(label) },
                                { CKA_ID, &id, sizeof(id) } };
        ck_assert_uint_eq(f->C_GenerateKeyPair(h, &mech, pub, 4, priv, 5, &made[2 * i],
                                               &made[2 * i + 1]), CKR_OK);
    }
    ctx = p11_ctx(NULL, KV_OK);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    for (size_t i = 0; i < list->count; i++)
        if (!strncmp(list->keys[i].name, prefix, strlen(prefix))) {
            ck_assert_int_eq(list->keys[i].type, KV_KEY_EC_P256);
            seen++;
        }
    ck_assert_uint_eq(seen, N);
    kv_key_list_free(list);
    kv_ctx_free(ctx);
    for (int i = 0; i < 2 * N; i++)
        ck_assert_uint_eq(f->C_DestroyObject(h, made[i]), CKR_OK);
    raw_close(f, h);
}
END_TEST

/* ---- creation races: two processes, one name, at the same moment ---------- */

/* A configuration for a racer: backends in `order`, home `home`. */
static const char *race_conf(const char *tag, const char *order, const char *home)
{
    static char paths[4][700];
    static int n;
    char *path = paths[n++ % 4], text[4096];

    snprintf(path, 700, "%s/race-%s.conf", tu_tmpdir(), tag);
    snprintf(text, sizeof(text),
             "[keyvault]\nbackends = %s\nhome = %s\n[pkcs11]\nmodule = %s\ntoken = %s\n"
             "pin = file:%s\n[software]\nstore = %s/soft\npassphrase = file:%s\n"
             "kdf_iterations = 1000\n", order, home, env("KV_P11_MODULE"), env("KV_P11_TOKEN"),
             env("KV_P11_PINFILE"), tu_tmpdir(), env("KV_P11_PINFILE"));
    tu_write(path, text);
    return path;
}

/*
 * Two processes, each with its own context on its configuration, create
 * `what` (a name, or a URI with at) once both are ready; rcs[i] is what
 * each got. The parent never loads the module: forks stay simple.
 */
static void race(const char *conf[2], const char *what, int at, int rcs[2])
{
    int ready[2], go[2];
    pid_t pid[2];
    char c;

    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go), 0);
    /* one after the other up to the start line: SoftHSM fails a C_Login
     * (CKR_GENERAL_ERROR) or sees no token while another process logs in */
    for (int i = 0; i < 2; i++) {
        pid[i] = fork();
        ck_assert_int_ge(pid[i], 0);
        if (pid[i] == 0) {
            kv_ctx *ctx = NULL;
            kv_key *warm = NULL;
            kv_rc rc;
            close(ready[0]);
            close(go[1]);
            unsetenv("KEYVAULT_HOME"); /* the configuration's home decides */
            rc = kv_ctx_new(&ctx, conf[i]);
            /* connect and log in before the start */
            if (rc == KV_OK && (rc = kv_key_open(ctx, "race-warm-up", &warm)) ==
                                   KV_ERR_KEY_NOT_FOUND)
                rc = KV_OK;
            if (rc != KV_OK) {
                fprintf(stderr, "racer %d: %s\n", i, kv_errmsg(ctx));
                _exit(write(ready[1], "x", 1) == 1 ? 100 : 101);
            }
            if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 0)
                _exit(101);
            rc = at ? kv_key_generate_at(ctx, what, KV_KEY_EC_P256, NULL)
                    : kv_key_generate(ctx, what, KV_KEY_EC_P256, NULL, NULL);
            if (rc != KV_OK && rc != KV_ERR_KEY_EXISTS)
                fprintf(stderr, "racer %d: %s\n", i, kv_errmsg(ctx));
            kv_ctx_free(ctx);
            _exit((int)rc);
        }
        ck_assert_int_eq(read(ready[0], &c, 1), 1);
        ck_assert_msg(c == 'r', "a racer could not start (see its message)");
    }
    close(ready[1]);
    close(go[0]);
    close(go[1]); /* both start now */
    close(ready[0]);
    for (int i = 0; i < 2; i++) {
        int st = 0;
        ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
        ck_assert(WIFEXITED(st));
        rcs[i] = WEXITSTATUS(st);
    }
}

/* In a child (the parent stays module-free): how many keys named `name`
 * exist on the token and in the racers' software store, all of them
 * removed afterwards. */
static int count_and_clear(const char *name)
{
    char soft[800];
    pid_t pid;
    int st = 0;

    snprintf(soft, sizeof(soft), "%s/soft/%s", tu_tmpdir(), name);
    pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        CK_SESSION_HANDLE h;
        CK_FUNCTION_LIST *f = raw_open(&h);
        char path[820];
        int n = (int)raw_destroy_label(f, h, name);
        raw_close(f, h);
        /* the software store too */
        snprintf(path, sizeof(path), "%s.pem", soft);
        if (unlink(path) == 0)
            n++;
        snprintf(path, sizeof(path), "%s.json", soft);
        (void)unlink(path);
        _exit(n);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_lt(WEXITSTATUS(st), 100);
    return WEXITSTATUS(st);
}

/* rounds per race: 50, or $KV_RACE_ROUNDS from 10 to 1000 (the sanitized build's run in
 * tests/run-suite.sh takes fewer: each round is two process starts) */
static int rounds(void)
{
    const char *v = getenv("KV_RACE_ROUNDS");
    int n = v ? atoi(v) : 0;

    return n >= 10 && n <= 1000 ? n : 50;
}

static void check_round(int round, const int rcs[2], int keys)
{
    int ok = (rcs[0] == KV_OK) + (rcs[1] == KV_OK);
    int exists = (rcs[0] == KV_ERR_KEY_EXISTS) + (rcs[1] == KV_ERR_KEY_EXISTS);

    ck_assert_msg(ok == 1 && exists == 1 && keys == 1,
                  "round %d: results %d and %d, %d keys left (want one KV_OK, one "
                  "KV_ERR_KEY_EXISTS, one key)", round, rcs[0], rcs[1], keys);
}

/* rounds() races between two processes on configurations with these backend
 * orders and one home, each round a new name; with at, the name is the
 * object= of a pkcs11: URI on the harness token. */
static void race_rounds(const char *base, const char *order_a, const char *order_b, int at)
{
    char home[700], name[64], uri[1024];
    const char *conf[2];
    int rcs[2];

    snprintf(home, sizeof(home), "%s/home", tu_tmpdir());
    conf[0] = race_conf("a", order_a, home);
    conf[1] = race_conf("b", order_b, home);
    for (int r = 0; r < rounds(); r++) {
        snprintf(name, sizeof(name), "%s-%d", kname(base), r);
        snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s",
                 env("KV_P11_TOKEN"), name, env("KV_P11_MODULE"), env("KV_P11_PINFILE"));
        race(conf, at ? uri : name, at, rcs);
        check_round(r, rcs, count_and_clear(name));
    }
}

START_TEST(creation_race_on_token)
{
    race_rounds("race", "pkcs11", "pkcs11", 0);
}
END_TEST

/* Each process prefers another backend: without the lock, one name would
 * land in both. */
START_TEST(creation_race_across_backends)
{
    race_rounds("xrace", "pkcs11, software", "software, pkcs11", 0);
}
END_TEST

START_TEST(creation_race_at_uri)
{
    race_rounds("urace", "pkcs11", "pkcs11", 1);
}
END_TEST

struct racer {
    kv_ctx *ctx;
    const char *name;
    pthread_barrier_t *start;
    kv_rc rc;
    char msg[256];
};

static void *racer_thread(void *p)
{
    struct racer *r = p;

    pthread_barrier_wait(r->start);
    r->rc = kv_key_generate(r->ctx, r->name, KV_KEY_EC_P256, NULL, NULL);
    snprintf(r->msg, sizeof(r->msg), "%s", kv_errmsg(r->ctx));
    return NULL;
}

/*
 * Creators that share no home (no lock between them; two threads here, as
 * two processes would be: SoftHSM caches a token per process and can miss
 * another process's new objects, so only creators it shows each other are
 * a fair test): the token check after C_GenerateKeyPair still never
 * leaves two keys of one name. Both may lose (each sees the other's pair
 * and removes its own); never both win.
 */
START_TEST(creation_race_without_shared_home)
{
    char home[2][700], name[64];
    kv_ctx *ctx[2];
    int both_lost = 0, softhsm_errors = 0;

    for (int i = 0; i < 2; i++) {
        kv_key *warm = NULL;
        snprintf(home[i], sizeof(home[i]), "%s/home%d", tu_tmpdir(), i);
        unsetenv("KEYVAULT_HOME");
        ck_assert_rc(NULL, kv_ctx_new(&ctx[i], race_conf(i ? "n2" : "n1", "pkcs11", home[i])),
                     KV_OK);
        ck_assert_rc(ctx[i], kv_key_open(ctx[i], "race-warm-up", &warm), KV_ERR_KEY_NOT_FOUND);
    }
    for (int r = 0; r < rounds(); r++) {
        pthread_barrier_t start;
        pthread_t th[2];
        struct racer rs[2];
        CK_SESSION_HANDLE h;
        CK_FUNCTION_LIST *f;
        int keys, ok;

        snprintf(name, sizeof(name), "%s-%d", kname("nrace"), r);
        pthread_barrier_init(&start, NULL, 2);
        for (int i = 0; i < 2; i++) {
            rs[i] = (struct racer){ ctx[i], name, &start, KV_OK, "" };
            pthread_create(&th[i], NULL, racer_thread, &rs[i]);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        f = raw_open(&h);
        keys = (int)raw_destroy_label(f, h, name);
        raw_close(f, h);
        ok = (rs[0].rc == KV_OK) + (rs[1].rc == KV_OK);
        for (int i = 0; i < 2; i++) {
            /* SoftHSM 2.6 now and then fails one of two C_GenerateKeyPair
             * running at once in one process: tolerated, counted, checked.
             * It says CKR_GENERAL_ERROR; on a loaded machine once
             * CKR_TEMPLATE_INCONSISTENT for the template every other round
             * takes (gen_step's template is the caller's own stack: nothing
             * of it is shared between the threads); and once (round 35 of
             * 50, session 14's suite) CKR_FUNCTION_FAILED, which its
             * generateEC returns when the object store's transaction on the
             * new object fails. The keys check below still holds then. */
            if (rs[i].rc == KV_ERR_BACKEND && strstr(rs[i].msg, "C_GenerateKeyPair") &&
                (strstr(rs[i].msg, "CKR_GENERAL_ERROR") ||
                 strstr(rs[i].msg, "CKR_TEMPLATE_INCONSISTENT") ||
                 strstr(rs[i].msg, "CKR_FUNCTION_FAILED"))) {
                softhsm_errors++;
                continue;
            }
            ck_assert_msg(rs[i].rc == KV_OK || rs[i].rc == KV_ERR_KEY_EXISTS,
                          "round %d: results %d (%s) and %d (%s)", r, rs[0].rc, rs[0].msg,
                          rs[1].rc, rs[1].msg);
        }
        ck_assert_msg(keys <= 1 && ok == keys, "round %d: %d creators won, %d keys left", r, ok,
                      keys);
        both_lost += ok == 0;
    }
    fprintf(stderr, "creation_race_without_shared_home: both lost in %d of %d rounds; "
            "SoftHSM internal errors: %d\n", both_lost, rounds(), softhsm_errors);
    /* SoftHSM's own race (its internal errors) is more likely on a loaded
     * machine: at most one failed result in four rounds, plus one (under
     * rounds / 5, the 12 rounds of a sanitized run allowed only 1) */
    ck_assert_msg(softhsm_errors <= rounds() / 4 + 1,
                  "SoftHSM internal errors in %d results of %d rounds", softhsm_errors, rounds());
    kv_ctx_free(ctx[0]);
    kv_ctx_free(ctx[1]);
}
END_TEST

static Suite *pkcs11_suite(void)
{
    Suite *s = suite_create("pkcs11");
    TCase *tc = tcase_create("module");   /* any module */
    TCase *hsm = tcase_create("softhsm"); /* SoftHSM itself (see the top) */
    TCase *scale = tcase_create("scale");  /* SoftHSM, many keys and rounds */

    tcase_add_test(tc, token_not_present_names_what_is);
    tcase_add_test(tc, module_not_found_is_named);
    tcase_add_test(tc, wrong_pin_is_tried_once);
    tcase_add_test(tc, uri_forms);
    tcase_add_test(tc, uri_reopened_many_times);
    tcase_add_test(tc, uri_overlong_attributes_refused);
    tcase_add_test(tc, small_pool_serves_many_threads);
    tcase_add_test(tc, list_shows_token_keys_only_once);
    tcase_add_test(tc, generated_key_attributes);
    tcase_add_test(tc, certificate_replaced);
    tcase_add_test(hsm, token_removed_and_back);
    tcase_add_test(hsm, mechanism_query_meets_a_lost_token);
    tcase_add_test(hsm, mechanism_query_failure_is_not_kept);
    tcase_add_test(hsm, writes_on_a_token_of_one_session);
    tcase_add_test(hsm, a_write_waits_for_room_on_a_busy_token);
    tcase_add_test(hsm, signs_and_writes_share_a_token_of_few_sessions);
    tcase_add_test(hsm, a_session_in_use_through_a_failed_reconnect_is_closed);
    tcase_add_test(hsm, a_fork_while_another_thread_logs_in);
    tcase_add_test(hsm, module_by_name_and_token_by_serial);
    tcase_add_test(hsm, module_path_must_be_registered);
    tcase_add_test(hsm, module_path_allowed_by_configuration);
    /* raw PKCS#11 on the harness token, the fault shim, SoftHSM's speed */
    tcase_add_test(hsm, generate_at_uri);
    tcase_add_test(hsm, keygen_failure_names_the_cause);
    tcase_add_test(hsm, keygen_public_key_purged_meanwhile);
    tcase_add_test(hsm, mismatched_public_key_is_refused);
    tcase_add_test(hsm, public_key_checked_by_ec_point);
    tcase_add_test(hsm, wrong_uri_pin_tried_once);
    tcase_add_test(hsm, planted_public_key_is_refused);
    tcase_add_test(hsm, ecdh_only_key_checked_by_derive);
    /* many keys and many rounds on SoftHSM: pkcs11-unit.sh runs this case
     * on its own (under AddressSanitizer with the fast unwinder) */
    tcase_add_test(scale, list_returns_every_token_key);
    tcase_add_test(scale, creation_race_on_token);
    tcase_add_test(scale, creation_race_across_backends);
    tcase_add_test(scale, creation_race_at_uri);
    tcase_add_test(scale, creation_race_without_shared_home);
    tcase_set_timeout(tc, 120);
    tcase_set_timeout(hsm, 120);
    tcase_set_timeout(scale, 300);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, hsm);
    suite_add_tcase(s, scale);
    return s;
}

int main(void)
{
    return tu_run(pkcs11_suite());
}
