/*
 * check_config.c - the configuration file, context creation, backend order
 * and the require_hardware policy.
 */
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
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(config_suite());
}
