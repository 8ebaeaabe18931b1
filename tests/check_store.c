/*
 * check_store.c - the software backend's key store: file format, modes,
 * crash safety, passphrase sources, and bad conditions (wrong passphrase,
 * damaged files, unreadable store, full disk) that must lose nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <jansson.h>

#include "testutil.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

/* A path under this test's scratch directory. */
static const char *path_in(const char *rel)
{
    static char buf[4][700];
    static int i;
    char *b = buf[i++ % 4];

    snprintf(b, 700, "%s/%s", tu_tmpdir(), rel);
    return b;
}

/* Names in the store directory that look like leftover temporary files. */
static int leftover_temp_files(void)
{
    DIR *d = opendir(path_in("soft"));
    struct dirent *de;
    int n = 0;

    if (!d)
        return 0;
    while ((de = readdir(d)))
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            strcmp(de->d_name, ".machine-secret"))
            n++;
    closedir(d);
    return n;
}

static void sign_ok(kv_ctx *ctx, const char *name)
{
    kv_key *key = NULL;
    unsigned char sig[600];
    size_t siglen = sizeof(sig);

    ck_assert_rc(ctx, kv_key_open(ctx, name, &key), KV_OK);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen),
                 KV_OK);
    kv_key_free(key);
}

START_TEST(key_file_is_encrypted_pkcs8_openssl_reads)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    char *pem = NULL, *text, *ours;
    const char *kf = path_in("soft/k1.pem"), *out = path_in("openssl.pub"),
               *asn = path_in("asn1.txt");

    ck_assert_rc(ctx, kv_key_generate(ctx, "k1", KV_KEY_EC_P256, NULL, &key), KV_OK);
    text = slurp(kf, NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    free(text);
    /* the openssl command decrypts it with the passphrase and gets our public key */
    ck_assert_int_eq(tu_sh("openssl pkey -in %s -passin file:%s/pass -pubout -out %s", kf,
                           tu_tmpdir(), out), 0);
    ck_assert_rc(ctx, kv_key_public_pem(key, &pem), KV_OK);
    ours = slurp(out, NULL);
    ck_assert_str_eq(ours, pem);
    free(ours);
    kv_string_free(pem);
    /* and refuses it without the right one */
    ck_assert_int_ne(tu_sh("openssl pkey -in %s -passin pass:wrong -pubout >/dev/null 2>&1", kf),
                     0);
    /* PBES2 with PBKDF2-HMAC-SHA256 and AES-256 */
    ck_assert_int_eq(tu_sh("openssl asn1parse -in %s > %s", kf, asn), 0);
    text = slurp(asn, NULL);
    ck_assert_ptr_nonnull(strstr(text, "PBES2"));
    ck_assert_ptr_nonnull(strstr(text, "PBKDF2"));
    ck_assert_ptr_nonnull(strstr(text, "hmacWithSHA256"));
    ck_assert_ptr_nonnull(strstr(text, "aes-256-cbc"));
    free(text);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(modes_metadata_and_no_leftovers)
{
    kv_ctx *ctx = tu_ctx(NULL);
    struct stat sb;
    json_t *meta;
    json_error_t jerr;
    const char *type = NULL, *name = NULL, *be = NULL;
    int version = 0;

    ck_assert_rc(ctx, kv_key_generate(ctx, "m1", KV_KEY_ED25519, NULL, NULL), KV_OK);
    ck_assert_int_eq(stat(path_in("soft"), &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0700);
    ck_assert_int_eq(stat(path_in("soft/m1.pem"), &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    ck_assert_int_eq(stat(path_in("soft/m1.json"), &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    ck_assert_int_eq(leftover_temp_files(), 0);
    meta = json_load_file(path_in("soft/m1.json"), 0, &jerr);
    ck_assert_ptr_nonnull(meta);
    ck_assert_int_eq(json_unpack(meta, "{s:s, s:s, s:s, s:i}", "name", &name, "type", &type,
                                 "backend", &be, "version", &version), 0);
    ck_assert_str_eq(name, "m1");
    ck_assert_str_eq(type, "ed25519");
    ck_assert_str_eq(be, "software");
    ck_assert_int_eq(version, 1);
    json_decref(meta);
    /* destroy removes both files */
    ck_assert_rc(ctx, kv_key_destroy(ctx, "m1"), KV_OK);
    ck_assert_int_ne(access(path_in("soft/m1.pem"), F_OK), 0);
    ck_assert_int_ne(access(path_in("soft/m1.json"), F_OK), 0);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(generate_never_overwrites_a_file)
{
    kv_ctx *ctx = tu_ctx(NULL);
    char *before, *after;

    mkdir(path_in("soft"), 0700);
    tu_write(path_in("soft/taken.pem"), "not ours, keep me\n");
    ck_assert_rc(ctx, kv_key_generate(ctx, "taken", KV_KEY_EC_P256, NULL, NULL), KV_ERR_KEY_EXISTS);
    after = slurp(path_in("soft/taken.pem"), NULL);
    ck_assert_str_eq(after, "not ours, keep me\n");
    free(after);
    /* and a real key survives a second generate untouched */
    ck_assert_rc(ctx, kv_key_generate(ctx, "real", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    before = slurp(path_in("soft/real.pem"), NULL);
    ck_assert_rc(ctx, kv_key_generate(ctx, "real", KV_KEY_EC_P384, "software", NULL),
                 KV_ERR_KEY_EXISTS);
    after = slurp(path_in("soft/real.pem"), NULL);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    ck_assert_int_eq(leftover_temp_files(), 0);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(wrong_passphrase_loses_nothing)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    char *before, *after;
    const char *pass = path_in("pass");

    ck_assert_rc(ctx, kv_key_generate(ctx, "pw", KV_KEY_RSA_2048, NULL, NULL), KV_OK);
    before = slurp(path_in("soft/pw.pem"), NULL);
    tu_write(pass, "another passphrase\n");
    ck_assert_rc(ctx, kv_key_open(ctx, "pw", &key), KV_ERR_AUTH_FAILED);
    ck_assert_ptr_null(key);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "wrong passphrase"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "pw.pem"));
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "another passphrase"));
    ck_assert_rc(ctx, kv_key_destroy(ctx, "pw"), KV_ERR_AUTH_FAILED);
    after = slurp(path_in("soft/pw.pem"), NULL);
    ck_assert_str_eq(before, after);
    tu_write(pass, "test passphrase\n");
    sign_ok(ctx, "pw");
    free(before);
    free(after);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(passphrase_from_environment)
{
    kv_ctx *ctx = NULL;

    unsetenv("KV_TEST_PASS");
    {
        char text[1024];
        snprintf(text, sizeof(text),
                 "[software]\nstore = %s/soft\npassphrase = env:KV_TEST_PASS\n"
                 "kdf_iterations = 1000\n[keyvault]\nbackends = software\n", tu_tmpdir());
        tu_write(path_in("env.conf"), text);
    }
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path_in("env.conf")), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "e1", KV_KEY_EC_P256, NULL, NULL), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "KV_TEST_PASS"));
    ck_assert_int_ne(access(path_in("soft/e1.pem"), F_OK), 0);
    setenv("KV_TEST_PASS", "from the environment", 1);
    ck_assert_rc(ctx, kv_key_generate(ctx, "e1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    sign_ok(ctx, "e1");
    ck_assert_int_eq(tu_sh("openssl pkey -in %s -passin env:KV_TEST_PASS -noout",
                           path_in("soft/e1.pem")), 0);
    kv_ctx_free(ctx);
    /* a bad source is a configuration error naming the forms */
    tu_write(path_in("bad.conf"), "[software]\npassphrase = hunter2\n");
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path_in("bad.conf")), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "env:VAR"));
}
END_TEST

START_TEST(machine_secret_created_once)
{
    kv_ctx *ctx = NULL;
    const char *secret = path_in("soft/.machine-secret");
    char text[1024], *s1, *s2;
    struct stat sb;
    size_t len = 0;

    snprintf(text, sizeof(text), "[software]\nstore = %s/soft\nkdf_iterations = 1000\n",
             tu_tmpdir());
    tu_write(path_in("m.conf"), text);
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path_in("m.conf")), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "a", KV_KEY_EC_P256, "software", NULL), KV_OK);
    ck_assert_int_eq(stat(secret, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    s1 = slurp(secret, &len);
    ck_assert_uint_eq(len, 45); /* base64 of 32 random bytes and a newline */
    ck_assert_rc(ctx, kv_key_generate(ctx, "b", KV_KEY_EC_P256, "software", NULL), KV_OK);
    s2 = slurp(secret, NULL);
    ck_assert_str_eq(s1, s2);
    sign_ok(ctx, "a");
    ck_assert_int_eq(tu_sh("openssl pkey -in %s -passin file:%s -noout",
                           path_in("soft/b.pem"), secret), 0);
    free(s1);
    free(s2);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(damaged_files_are_reported)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    kv_key_list *list = NULL;
    char *text;
    size_t len;

    ck_assert_rc(ctx, kv_key_generate(ctx, "d1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "d2", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* truncated key file */
    text = slurp(path_in("soft/d1.pem"), &len);
    text[len / 2] = '\0';
    tu_write(path_in("soft/d1.pem"), text);
    free(text);
    ck_assert_rc(ctx, kv_key_open(ctx, "d1", &key), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "d1.pem"));
    /* damaged metadata */
    tu_write(path_in("soft/d2.json"), "{ not json");
    ck_assert_rc(ctx, kv_key_open(ctx, "d2", &key), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "d2.json"));
    /* metadata that disagrees with the key file */
    tu_write(path_in("soft/d2.json"), "{\"type\": \"rsa-2048\", \"version\": 1}");
    ck_assert_rc(ctx, kv_key_open(ctx, "d2", &key), KV_ERR_CORRUPT);
    /* the list still shows both */
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    ck_assert_uint_eq(list->count, 2);
    kv_key_list_free(list);
    kv_ctx_free(ctx);
}
END_TEST

/* In a child: files above 300 bytes cannot be written, a full disk on
 * demand. (A child, because the limit would also stop Check's own reports.) */
static int full_disk_child(kv_ctx *ctx)
{
    struct rlimit rl = { 300, 300 };

    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    if (kv_key_generate(ctx, "after", KV_KEY_RSA_2048, NULL, NULL) != KV_ERR_NO_SPACE)
        return 11;
    if (!strstr(kv_errmsg(ctx), "after.pem") || !strstr(kv_errmsg(ctx), "too large"))
        return 12;
    return 0;
}

START_TEST(full_disk_keeps_existing_keys)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key_list *list = NULL;
    int st = 0;
    pid_t pid;

    ck_assert_rc(ctx, kv_key_generate(ctx, "before", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(full_disk_child(ctx));
    waitpid(pid, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed at step %d",
                  WEXITSTATUS(st));
    ck_assert_int_ne(access(path_in("soft/after.pem"), F_OK), 0);
    ck_assert_int_eq(leftover_temp_files(), 0);
    sign_ok(ctx, "before");
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    ck_assert_uint_eq(list->count, 1);
    ck_assert_str_eq(list->keys[0].name, "before");
    kv_key_list_free(list);
    kv_ctx_free(ctx);
}
END_TEST

/* Runs in a child without the right to read the store. */
static int unreadable_child(const char *conf)
{
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    kv_key_list *list = NULL;

    if (kv_ctx_new(&ctx, conf) != KV_OK)
        return 10;
    if (kv_list_keys(ctx, &list) != KV_ERR_PERMISSION || !strstr(kv_errmsg(ctx), "soft"))
        return 11;
    if (kv_key_open(ctx, "u1", &key) != KV_ERR_PERMISSION)
        return 12;
    if (kv_key_generate(ctx, "u2", KV_KEY_EC_P256, NULL, NULL) != KV_ERR_PERMISSION)
        return 13;
    kv_ctx_free(ctx);
    return 0;
}

START_TEST(unreadable_store_is_a_permission_error)
{
    kv_ctx *ctx = tu_ctx(NULL);
    const char *conf = path_in("keyvault.conf");
    int st = 0;
    pid_t pid;

    ck_assert_rc(ctx, kv_key_generate(ctx, "u1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    chmod(conf, 0644);
    if (geteuid() != 0)
        chmod(path_in("soft"), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* root reads everything: drop to an unprivileged user */
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(20);
        _exit(unreadable_child(conf));
    }
    waitpid(pid, &st, 0);
    chmod(path_in("soft"), 0700);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed at step %d",
                  WEXITSTATUS(st));
    sign_ok(ctx, "u1");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(store_path_that_is_a_file)
{
    kv_ctx *ctx = NULL;
    char text[1024];

    tu_config(tu_tmpdir(), NULL);
    tu_write(path_in("notadir"), "x");
    snprintf(text, sizeof(text), "[software]\nstore = %s/notadir\npassphrase = file:%s/pass\n",
             tu_tmpdir(), tu_tmpdir());
    tu_write(path_in("f.conf"), text);
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path_in("f.conf")), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, "software", NULL), KV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "notadir"));
    kv_ctx_free(ctx);
    tu_write(path_in("r.conf"), "[software]\nstore = relative/dir\n");
    ck_assert_rc(NULL, kv_ctx_new(&ctx, path_in("r.conf")), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "absolute"));
}
END_TEST

START_TEST(file_uri_forms)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    kv_key_info info;
    char uri[800];

    ck_assert_rc(ctx, kv_key_generate(ctx, "fu", KV_KEY_EC_P384, NULL, NULL), KV_OK);
    snprintf(uri, sizeof(uri), "file://%s", path_in("soft/fu.pem"));
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_str_eq(info.name, "fu");
    ck_assert_int_eq(info.type, KV_KEY_EC_P384);
    kv_key_free(key);
    snprintf(uri, sizeof(uri), "file:%s", path_in("soft/fu%41.pem"));
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_ERR_BAD_URI);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(list_is_sorted_by_name)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key_list *list = NULL;
    static const char *names[] = { "m", "b", "z", "a" };

    for (size_t i = 0; i < 4; i++)
        ck_assert_rc(ctx, kv_key_generate(ctx, names[i], KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    ck_assert_uint_eq(list->count, 4);
    ck_assert_str_eq(list->keys[0].name, "a");
    ck_assert_str_eq(list->keys[1].name, "b");
    ck_assert_str_eq(list->keys[2].name, "m");
    ck_assert_str_eq(list->keys[3].name, "z");
    kv_key_list_free(list);
    kv_ctx_free(ctx);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");

    tcase_add_test(tc, key_file_is_encrypted_pkcs8_openssl_reads);
    tcase_add_test(tc, modes_metadata_and_no_leftovers);
    tcase_add_test(tc, generate_never_overwrites_a_file);
    tcase_add_test(tc, wrong_passphrase_loses_nothing);
    tcase_add_test(tc, passphrase_from_environment);
    tcase_add_test(tc, machine_secret_created_once);
    tcase_add_test(tc, damaged_files_are_reported);
    tcase_add_test(tc, full_disk_keeps_existing_keys);
    tcase_add_test(tc, unreadable_store_is_a_permission_error);
    tcase_add_test(tc, store_path_that_is_a_file);
    tcase_add_test(tc, file_uri_forms);
    tcase_add_test(tc, list_is_sorted_by_name);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(store_suite());
}
