/*
 * check_config.c - the configuration file, context creation, backend order
 * and the require_hardware policy.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

static kv_rc load(const char *text, kv_config **cfg)
{
    char path[600];

    snprintf(path, sizeof(path), "%s/c.ini", tu_tmpdir());
    tu_write(path, text);
    kv_err_begin(NULL);
    return kv_config_load(NULL, path, cfg);
}

START_TEST(ini_values_comments_and_whitespace)
{
    kv_config *cfg = NULL;
    bool b = false;
    long n = 0;

    ck_assert_rc(NULL, load("# comment\n; other\n\n[a]\n  key =  value with spaces  \n"
                            "flag = yes\nnum = 42\n[b]\nkey=other\n", &cfg), KV_OK);
    ck_assert_str_eq(kv_config_get(cfg, "a", "key"), "value with spaces");
    ck_assert_str_eq(kv_config_get(cfg, "b", "key"), "other");
    ck_assert_ptr_null(kv_config_get(cfg, "a", "missing"));
    ck_assert_ptr_null(kv_config_get(cfg, "c", "key"));
    ck_assert_rc(NULL, kv_config_get_bool(NULL, cfg, "a", "flag", false, &b), KV_OK);
    ck_assert(b);
    ck_assert_rc(NULL, kv_config_get_long(NULL, cfg, "a", "num", 0, 0, 100, &n), KV_OK);
    ck_assert_int_eq(n, 42);
    ck_assert_rc(NULL, kv_config_get_long(NULL, cfg, "a", "absent", 7, 0, 100, &n), KV_OK);
    ck_assert_int_eq(n, 7);
    ck_assert_rc(NULL, kv_config_get_long(NULL, cfg, "a", "num", 0, 0, 10, &n), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "0 to 10"));
    kv_config_free(cfg);
}
END_TEST

START_TEST(ini_errors_name_file_and_line)
{
    kv_config *cfg = NULL;

    ck_assert_rc(NULL, load("[a]\nx = 1\nx = 2\n", &cfg), KV_ERR_CONFIG);
    ck_assert_ptr_null(cfg);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "c.ini:3"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "given twice"));

    ck_assert_rc(NULL, load("x = 1\n", &cfg), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "c.ini:1"));
    ck_assert_rc(NULL, load("[a]\n\n\njust words\n", &cfg), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "c.ini:4"));
    ck_assert_rc(NULL, load("[a\n", &cfg), KV_ERR_CONFIG);
    ck_assert_rc(NULL, load("[a]\n= v\n", &cfg), KV_ERR_CONFIG);
}
END_TEST

START_TEST(bad_bool_is_reported)
{
    kv_ctx *ctx = NULL;
    char path[600];

    snprintf(path, sizeof(path), "%s/k.conf", tu_tmpdir());
    tu_write(path, "[keyvault]\nrequire_hardware = maybe\n");
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path), KV_ERR_CONFIG);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "require_hardware"));
}
END_TEST

START_TEST(missing_config_file_is_an_error)
{
    kv_ctx *ctx = NULL;

    ck_assert_rc(NULL, kv_ctx_new(&ctx, "/nonexistent/keyvault.conf"), KV_ERR_CONFIG);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "/nonexistent/keyvault.conf"));
}
END_TEST

START_TEST(env_config_and_home)
{
    const char *dir = tu_tmpdir();
    char path[600];
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    kv_key_info info;

    /* KEYVAULT_CONF is used when no path is given */
    snprintf(path, sizeof(path), "%s/env.conf", dir);
    tu_write(path, "[keyvault]\nbackends = bogus\n");
    setenv("KEYVAULT_CONF", path, 1);
    ck_assert_rc(NULL, kv_ctx_new(&ctx, NULL), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "bogus"));

    /* no config at all: defaults under $KEYVAULT_HOME, machine secret */
    unsetenv("KEYVAULT_CONF");
    setenv("KEYVAULT_HOME", dir, 1);
    ck_assert_rc(NULL, kv_ctx_new(&ctx, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k1", KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_str_eq(info.backend, "software");
    ck_assert_int_eq(info.assurance, KV_ASSURANCE_SOFTWARE);
    snprintf(path, sizeof(path), "file:%s/soft/k1.pem", dir);
    ck_assert_str_eq(info.uri, path);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(backend_order_and_status)
{
    kv_ctx *ctx = NULL;
    const char *name, *why;
    int avail;
    char path[600];

    snprintf(path, sizeof(path), "%s/o.conf", tu_tmpdir());
    tu_write(path, "[keyvault]\nbackends = software, software\n");
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "named twice"));

    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, kv_ctx_backend(ctx, 0, &name, &avail, &why), KV_OK);
    ck_assert_str_eq(name, "software");
    ck_assert_int_eq(avail, 1);
    ck_assert_rc(ctx, kv_ctx_backend(ctx, 1, &name, &avail, &why), KV_ERR_INVALID_ARG);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(unbuilt_backend_falls_back_to_software)
{
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    kv_key_info info;
    const char *name, *why;
    int avail = 1;
    kv_rc rc;

    /* a backend listed first but unusable here is skipped, and says why */
    {
        char path[600], text[2048];
        const char *dir = tu_tmpdir();
        (void)tu_config(dir, NULL); /* writes dir/pass */
        snprintf(path, sizeof(path), "%s/f.conf", dir);
        snprintf(text, sizeof(text),
                 "[keyvault]\nbackends = tpm, software\n[software]\nstore = %s/soft\n"
                 "passphrase = file:%s/pass\nkdf_iterations = 1000\n[tpm]\ntcti = none\n",
                 dir, dir);
        tu_write(path, text);
        ck_assert_rc(NULL, kv_ctx_new(&ctx, path), KV_OK);
    }
    ck_assert_rc(ctx, kv_ctx_backend(ctx, 0, &name, &avail, &why), KV_OK);
    ck_assert_str_eq(name, "tpm");
    ck_assert_int_eq(avail, 0);
    ck_assert_str_ne(why, "");
    rc = kv_key_generate(ctx, "fallback", KV_KEY_EC_P256, NULL, &key);
    ck_assert_rc(ctx, rc, KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_str_eq(info.backend, "software");
    ck_assert_int_eq(info.assurance, KV_ASSURANCE_SOFTWARE);
    kv_key_free(key);
    /* asking for the unusable backend by name says why it is unusable */
    ck_assert_rc(ctx, kv_key_generate(ctx, "x", KV_KEY_EC_P256, "tpm", NULL),
                 KV_ERR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "tpm"));
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(require_hardware_refuses_software_keys)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_ctx *hw = NULL;
    kv_key *key = NULL;
    char path[600];

    /* a software key made before the policy was switched on */
    ck_assert_rc(ctx, kv_key_generate(ctx, "soft1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    kv_ctx_free(ctx);

    snprintf(path, sizeof(path), "%s/hw.conf", tu_tmpdir());
    {
        char text[2048];
        snprintf(text, sizeof(text),
                 "[keyvault]\nbackends = software\nrequire_hardware = true\n[software]\n"
                 "store = %s/soft\npassphrase = file:%s/pass\n", tu_tmpdir(), tu_tmpdir());
        tu_write(path, text);
    }
    ck_assert_rc(NULL, kv_ctx_new(&hw, path), KV_OK);
    ck_assert_rc(hw, kv_key_generate(hw, "soft2", KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_HARDWARE_REQUIRED);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(hw), "hardware"));
    ck_assert_rc(hw, kv_key_generate(hw, "soft2", KV_KEY_EC_P256, "software", NULL),
                 KV_ERR_HARDWARE_REQUIRED);
    ck_assert_rc(hw, kv_key_open(hw, "soft1", &key), KV_ERR_HARDWARE_REQUIRED);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(hw), "soft1"));
    kv_ctx_free(hw);
}
END_TEST

/* kv_ctx_new on a configuration text; the rc, with the detail in kv_errmsg(NULL). */
static kv_rc ctx_on(const char *text)
{
    kv_ctx *ctx = NULL;
    char path[600];
    kv_rc rc;

    snprintf(path, sizeof(path), "%s/strict.conf", tu_tmpdir());
    tu_write(path, text);
    rc = kv_ctx_new(&ctx, path);
    kv_ctx_free(ctx);
    return rc;
}

#define ck_assert_msg_has(needle) \
    ck_assert_msg(strstr(kv_errmsg(NULL), (needle)) != NULL, "'%s' not in: %s", (needle), \
                  kv_errmsg(NULL))

/* kv_ctx_new refuses text with KV_ERR_CONFIG and a detail holding needle. */
static void config_refused(const char *text, const char *needle)
{
    ck_assert_rc(NULL, ctx_on(text), KV_ERR_CONFIG);
    ck_assert_msg(strstr(kv_errmsg(NULL), needle) != NULL, "'%s' not in: %s (config: %s)",
                  needle, kv_errmsg(NULL), text);
}

START_TEST(unknown_key_names_file_line_and_nearest)
{
    /* a typo must not leave a protection off */
    config_refused("[keyvault]\nbackends = software\n\nrequire-hardware = true\n",
                   "strict.conf:4");
    ck_assert_msg_has("unknown key 'require-hardware' in [keyvault]");
    ck_assert_msg_has("did you mean require_hardware?");
    config_refused("[keyvault]\nrequire_hardwre = yes\n", "did you mean require_hardware?");
    /* a transposition is one typo */
    config_refused("[software]\nstroe = /x\n", "did you mean store?");
    /* a key in the wrong section points to its own */
    config_refused("[keyvault]\nkdf_iterations = 1000\n", "strict.conf:2");
    ck_assert_msg_has("did you mean [software] kdf_iterations?");
    /* nothing near: no guess */
    config_refused("[software]\ncolour = blue\n", "unknown key 'colour' in [software]");
    ck_assert_ptr_null(strstr(kv_errmsg(NULL), "did you mean"));
}
END_TEST

START_TEST(unknown_section_names_file_line_and_nearest)
{
    config_refused("# settings\n[keyvalt]\nbackends = software\n", "strict.conf:2");
    ck_assert_msg_has("unknown section [keyvalt]; did you mean [keyvault]?");
    config_refused("[softwear]\n", "did you mean [software]?");
    config_refused("[tmp]\ntcti = none\n", "did you mean [tpm]?");
    /* an empty unknown section is refused too */
    config_refused("[keyvault]\nbackends = software\n[metrics]\n",
                   "strict.conf:3: unknown section [metrics] (known: [keyvault], [tpm], [pkcs11], "
                   "[software], [x509], [policy], [lifecycle], [audit])");
    /* every key the documentation lists is accepted (unbuilt backends too) */
    ck_assert_rc(NULL, ctx_on("[keyvault]\nbackends = software\nrequire_hardware = false\n"
                              "home = /nonexistent\n"
                              "[software]\nstore = /nonexistent/soft\npassphrase = env:KV_X\n"
                              "kdf_iterations = 1000\n"
                              "[pkcs11]\nmax_sessions = 4\nserial = 1\ntoken = t\n"
                              "module = m.so\npin = env:KV_P\n"
                              "[tpm]\ntcti = none\nkeys = /nonexistent\nparent = 0x81000001\n"
                              "auth = env:KV_A\n"), KV_OK);
}
END_TEST

START_TEST(renew_threshold_is_a_percentage)
{
    static const char *const bad[] = { "0%", "100%", "67", "67 %", "-5%", "2/3", "67%%",
                                       "%", "0x10%", "99.5%" };
    char text[256];
    kv_config *cfg = NULL;
    long pct = -1;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[keyvault]\nbackends = software\n[x509]\n"
                 "renew_threshold = %s\n", bad[i]);
        config_refused(text, "[x509] renew_threshold");
        ck_assert_msg_has("from 1% to 99%");
    }
    ck_assert_rc(NULL, ctx_on("[keyvault]\nbackends = software\n[x509]\nrenew_threshold = 1%\n"),
                 KV_OK);
    ck_assert_rc(NULL, ctx_on("[keyvault]\nbackends = software\n[x509]\nrenew_threshold = 99%\n"),
                 KV_OK);
    config_refused("[keyvault]\nbackends = software\n[x509]\nrenew_treshold = 50%\n",
                   "did you mean renew_threshold");
    ck_assert_rc(NULL, load("[x509]\nrenew_threshold = 67%\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_renew_threshold(NULL, cfg, &pct), KV_OK);
    ck_assert_int_eq(pct, 67);
    kv_config_free(cfg);
    ck_assert_rc(NULL, load("[keyvault]\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_renew_threshold(NULL, cfg, &pct), KV_OK);
    ck_assert_int_eq(pct, 0); /* 2/3 */
    kv_config_free(cfg);
}
END_TEST

START_TEST(documented_keys_are_accepted)
{
    FILE *f = fopen(tu_srcpath("docs/config.md"), "r");
    char line[1024], sec[64], key[64], text[512];
    int rows = 0;

    ck_assert_ptr_nonnull(f);
    /* every "| section | key | ..." row of the table is a key libkeyvault reads */
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "| %63[a-z0-9] | %63[a-z0-9_] |", sec, key) != 2 ||
            !strcmp(sec, "section"))
            continue;
        snprintf(text, sizeof(text), "[keyvault]\nbackends = software\n[%s]\n%s = env:KV_UNSET\n",
                 sec, key);
        if (ctx_on(text) != KV_OK)
            ck_assert_msg(strstr(kv_errmsg(NULL), "unknown") == NULL, "[%s] %s: %s", sec, key,
                          kv_errmsg(NULL));
        rows++;
    }
    fclose(f);
    ck_assert_int_ge(rows, 15);
}
END_TEST

START_TEST(check_against_tables)
{
    static const struct kv_config_key a_keys[] = { { "alpha", 0 }, { "beta", 0 }, { NULL, 0 } };
    static const struct kv_config_key b_keys[] = { { "alpah", 0 }, { NULL, 0 } };
    const struct kv_config_section known[] = { { "a", a_keys }, { "b", b_keys },
                                               { "off", NULL } };
    kv_config *cfg = NULL;

    /* a section whose keys are unknown here (a backend not built) is accepted */
    ck_assert_rc(NULL, load("[off]\nanything = 1\n[a]\nalpha = 1\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_config_check(NULL, cfg, known, 3), KV_OK);
    kv_config_free(cfg);
    /* equally near in two sections: the key's own section wins */
    ck_assert_rc(NULL, load("[a]\nalpha = 1\nalpa = 2\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_config_check(NULL, cfg, known, 3), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:3: unknown key 'alpa' in [a]; did you mean alpha?");
    kv_config_free(cfg);
    /* the first problem in file order is the one reported */
    ck_assert_rc(NULL, load("[a]\nbeta = 1\n[zz]\n[a]\ngamma = 1\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_config_check(NULL, cfg, known, 3), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:3: unknown section [zz]");
    kv_config_free(cfg);
    /* a name is checked whole: no prefix match */
    ck_assert_rc(NULL, load("[b]\nalpah_x = 1\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_config_check(NULL, cfg, known, 3), KV_ERR_CONFIG);
    kv_config_free(cfg);
    /* a header repeated later continues its section; a duplicate across the two is caught */
    ck_assert_rc(NULL, load("[a]\nalpha = 1\n[b]\nalpah = 2\n[a]\nbeta = 3\n", &cfg), KV_OK);
    ck_assert_rc(NULL, kv_config_check(NULL, cfg, known, 3), KV_OK);
    ck_assert_str_eq(kv_config_get(cfg, "a", "beta"), "3");
    kv_config_free(cfg);
    ck_assert_rc(NULL, load("[a]\nalpha = 1\n[b]\n[a]\nalpha = 2\n", &cfg), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:5: 'alpha' given twice in [a]");
}
END_TEST

START_TEST(inline_comments_are_refused)
{
    kv_config *cfg = NULL;

    /* never kept as part of the value ("true  # x" is not a boolean we guess at) */
    config_refused("[keyvault]\nbackends = software\nrequire_hardware = true  # must stay on\n",
                   "strict.conf:3");
    ck_assert_msg_has("comments go on lines of their own");
    ck_assert_rc(NULL, load("[a]\nk = v\t; note\n", &cfg), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:2");
    ck_assert_rc(NULL, load("[a] # the first\n", &cfg), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:1");
    /* '#' and ';' inside a value, not after a space, are part of it */
    ck_assert_rc(NULL, load("[a]\nk = /srv/a#b;c\n", &cfg), KV_OK);
    ck_assert_str_eq(kv_config_get(cfg, "a", "k"), "/srv/a#b;c");
    kv_config_free(cfg);
    /* whole-line comments, indented too */
    ck_assert_rc(NULL, load("[a]\n   # k = 1\n\t; k = 2\nk = 3\n", &cfg), KV_OK);
    ck_assert_str_eq(kv_config_get(cfg, "a", "k"), "3");
    kv_config_free(cfg);
}
END_TEST

START_TEST(names_are_plain)
{
    kv_config *cfg = NULL;

    ck_assert_rc(NULL, load("[a b]\n", &cfg), KV_ERR_CONFIG);
    ck_assert_rc(NULL, load("[a]\nmy key = 1\n", &cfg), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:2: a key is");
    ck_assert_ptr_null(strstr(kv_errmsg(NULL), "my key"));
    ck_assert_rc(NULL, load("[a]\nk\x01 = 1\n", &cfg), KV_ERR_CONFIG);
    /* 65 characters: one too many */
    ck_assert_rc(NULL, load("[a]\nkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                            "k = 1\n", &cfg), KV_ERR_CONFIG);
    ck_assert_rc(NULL, load("[a]\nkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                            " = 1\n", &cfg), KV_OK);
    kv_config_free(cfg);
    ck_assert_rc(NULL, load("[]\n", &cfg), KV_ERR_CONFIG);
}
END_TEST

/* The secret never shows, whatever the error about its line. */
static void refused_without_echo(const char *text, const char *secret, const char *where)
{
    char path[600], err[600];

    ck_assert_rc(NULL, ctx_on(text), KV_ERR_CONFIG);
    ck_assert_msg_has(where);
    ck_assert_msg(strstr(kv_errmsg(NULL), secret) == NULL, "secret in: %s", kv_errmsg(NULL));
    /* the CLI says the same on stderr, and nothing else anywhere */
    snprintf(path, sizeof(path), "%s/strict.conf", tu_tmpdir());
    snprintf(err, sizeof(err), "%s/cli.out", tu_tmpdir());
    ck_assert_int_eq(tu_sh("\"$KEYVAULT_CLI\" -c '%s' list >'%s' 2>&1", path, err), 1);
    ck_assert_int_eq(tu_sh("grep -q 'strict.conf' '%s'", err), 0);
    ck_assert_int_eq(tu_sh("grep -qF '%s' '%s'", secret, err), 1);
}

START_TEST(inline_secrets_are_refused_unseen)
{
    refused_without_echo("[keyvault]\nbackends = software\n[software]\n"
                         "passphrase = hunter2-Passphrase\n",
                         "hunter2", "strict.conf:4: [software] passphrase must name where");
    ck_assert_msg_has("file:PATH");
    ck_assert_msg_has("env:VAR");
    ck_assert_msg_has("machine");
    /* near misses of the accepted forms */
    refused_without_echo("[software]\npassphrase = machine:hunter2\n", "hunter2",
                         "strict.conf:2");
    refused_without_echo("[software]\npassphrase = file hunter2\n", "hunter2", "strict.conf:2");
    ck_assert_rc(NULL, ctx_on("[software]\npassphrase = file:\n"), KV_ERR_CONFIG);
    /* a secret after file: or env: would show later in "cannot open" or "not set" */
    refused_without_echo("[software]\npassphrase = file:hunter2\n", "hunter2", "strict.conf:2");
    refused_without_echo("[software]\npassphrase = env:hunter2 pass\n", "hunter2",
                         "strict.conf:2");
    refused_without_echo("[software]\npassphrase = env:1234\n", "1234", "strict.conf:2");
    /* the same through the other ways a line can be wrong */
    refused_without_echo("[software]\npassphrase = hunter2 # my passphrase\n", "hunter2",
                         "strict.conf:2");
    refused_without_echo("[software]\npassphrase = env:KV_PASS\npassphrase = hunter2\n",
                         "hunter2", "strict.conf:3: 'passphrase' given twice");
    refused_without_echo("[keyvault]\npassphrase = hunter2\n", "hunter2",
                         "did you mean [software] passphrase?");
    refused_without_echo("[software]\npasphrase = hunter2\n", "hunter2",
                         "did you mean passphrase?");
#ifdef KV_WITH_PKCS11
    refused_without_echo("[pkcs11]\nmodule = softhsm2\ntoken = t\npin = 918273\n", "918273",
                         "strict.conf:4: [pkcs11] pin must name where");
    ck_assert_ptr_null(strstr(kv_errmsg(NULL), "machine"));
#endif
#ifdef KV_WITH_TPM
    refused_without_echo("[tpm]\ntcti = none\nauth = s3cr3t-auth\n", "s3cr3t",
                         "strict.conf:3: [tpm] auth must name where");
#endif
    /* the accepted forms */
    ck_assert_rc(NULL, ctx_on("[keyvault]\nbackends = software\n[software]\n"
                              "passphrase = machine:/nonexistent/m\n"), KV_OK);
}
END_TEST

START_TEST(parsing_is_n_log_n)
{
    enum { N = 18000 };
    size_t cap = 16 * N + 64, len = 0;
    char *text = malloc(cap), path[600];
    kv_config *cfg = NULL;
    unsigned long bound, log2n = 0;

    ck_assert_ptr_nonnull(text);
    /* many keys in one section: every one is checked against the others */
    len += (size_t)snprintf(text + len, cap - len, "[a]\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(text + len, cap - len, "k%05d = %d\n", (i * 7919) % N, i);
    ck_assert_rc(NULL, load(text, &cfg), KV_OK);
    /* pairwise duplicate checks would be N * N / 2 = 162 million */
    while ((1ul << log2n) < N)
        log2n++;
    bound = 2 * N * log2n + N;
    ck_assert_msg(kv_config_compares(cfg) <= bound, "%lu comparisons for %d keys (bound %lu)",
                  kv_config_compares(cfg), N, bound);
    ck_assert_str_eq(kv_config_get(cfg, "a", "k00000"), "0");
    ck_assert_ptr_nonnull(kv_config_get(cfg, "a", "k17999"));
    ck_assert_ptr_null(kv_config_get(cfg, "a", "k18000"));
    kv_config_free(cfg);
    /* the last line duplicating the first is still found */
    len += (size_t)snprintf(text + len, cap - len, "k00042 = again\n");
    ck_assert_rc(NULL, load(text, &cfg), KV_ERR_CONFIG);
    snprintf(path, sizeof(path), "c.ini:%d: 'k00042' given twice", N + 2);
    ck_assert_msg_has(path);

    /* 100,000 comment lines, then an error: line numbers stay right */
    len = 0;
    for (int i = 0; i < 100000; i++)
        len += (size_t)snprintf(text + len, cap - len, "#\n");
    snprintf(text + len, cap - len, "[a]\nnot a pair\n");
    ck_assert_rc(NULL, load(text, &cfg), KV_ERR_CONFIG);
    ck_assert_msg_has("c.ini:100002: expected 'key = value'");
    free(text);
}
END_TEST

START_TEST(version_is_the_package_version)
{
    char out[600];

    ck_assert_str_eq(kv_version(), PACKAGE_VERSION);
    snprintf(out, sizeof(out), "%s/version.out", tu_tmpdir());
    ck_assert_int_eq(tu_sh("\"$KEYVAULT_CLI\" --version >'%s'", out), 0);
    ck_assert_int_eq(tu_sh("grep -qx 'keyvault (libkeyvault) %s' '%s'", PACKAGE_VERSION, out),
                     0);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");

    tcase_add_test(tc, ini_values_comments_and_whitespace);
    tcase_add_test(tc, ini_errors_name_file_and_line);
    tcase_add_test(tc, bad_bool_is_reported);
    tcase_add_test(tc, missing_config_file_is_an_error);
    tcase_add_test(tc, env_config_and_home);
    tcase_add_test(tc, backend_order_and_status);
    tcase_add_test(tc, unbuilt_backend_falls_back_to_software);
    tcase_add_test(tc, require_hardware_refuses_software_keys);
    tcase_add_test(tc, unknown_key_names_file_line_and_nearest);
    tcase_add_test(tc, unknown_section_names_file_line_and_nearest);
    tcase_add_test(tc, documented_keys_are_accepted);
    tcase_add_test(tc, renew_threshold_is_a_percentage);
    tcase_add_test(tc, check_against_tables);
    tcase_add_test(tc, inline_comments_are_refused);
    tcase_add_test(tc, names_are_plain);
    tcase_add_test(tc, inline_secrets_are_refused_unseen);
    tcase_add_test(tc, parsing_is_n_log_n);
    tcase_add_test(tc, version_is_the_package_version);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(config_suite());
}
