/*
 * check_store.c - the software backend's key store: file format, modes,
 * crash safety, passphrase sources, and bad conditions (wrong passphrase,
 * damaged files, unreadable store, full disk) that must lose nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "internal.h"
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
    if (pid == 0) {
        /* the child frees what it inherited (valgrind: a definite leak at _exit) */
        int step = full_disk_child(ctx);

        kv_ctx_free(ctx);
        _exit(step);
    }
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

/* Whether the root-only part named `what` can run. Check cannot skip part
 * of a test, so without root the test says on stderr what it left out
 * instead of passing in silence (CI runs as root and checks it). */
static bool as_root(const char *what)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "NOTE: not checked (needs root): %s\n", what);
    return false;
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
        kv_ctx_free(ctx); /* the child's copy (valgrind: a definite leak at _exit) */
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

/* Expect rc from opening name, with each of the words in the message. */
static void open_fails(kv_ctx *ctx, const char *ref, kv_rc want, const char *w1, const char *w2)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, ref, &key), want);
    ck_assert_ptr_null(key);
    if (w1)
        ck_assert_msg(strstr(kv_errmsg(ctx), w1), "'%s' not in: %s", w1, kv_errmsg(ctx));
    if (w2)
        ck_assert_msg(strstr(kv_errmsg(ctx), w2), "'%s' not in: %s", w2, kv_errmsg(ctx));
}

static void swap_files(const char *a, const char *b)
{
    const char *t = path_in("swap.tmp");

    ck_assert_int_eq(rename(a, t), 0);
    ck_assert_int_eq(rename(b, a), 0);
    ck_assert_int_eq(rename(t, b), 0);
}

START_TEST(store_directory_must_be_private)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key_list *list = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, "g1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(chmod(path_in("soft"), 0770), 0);
    open_fails(ctx, "g1", KV_ERR_PERMISSION, path_in("soft"), "writable by its group");
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_ERR_PERMISSION);
    ck_assert_rc(ctx, kv_key_generate(ctx, "g2", KV_KEY_EC_P256, NULL, NULL), KV_ERR_PERMISSION);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), path_in("soft")));
    ck_assert_int_ne(access(path_in("soft/g2.pem"), F_OK), 0);
    ck_assert_int_eq(chmod(path_in("soft"), 0702), 0);
    open_fails(ctx, "g1", KV_ERR_PERMISSION, "writable by others", NULL);
    ck_assert_int_eq(chmod(path_in("soft"), 0755), 0); /* readable by others is fine */
    sign_ok(ctx, "g1");
    if (as_root("a store directory and a key file owned by another user")) {
        /* owned by another user (root's own files are trusted) */
        ck_assert_int_eq(chown(path_in("soft"), 65534, 65534), 0);
        open_fails(ctx, "g1", KV_ERR_PERMISSION, "owned by uid 65534", path_in("soft"));
        ck_assert_int_eq(chown(path_in("soft"), 0, 0), 0);
        ck_assert_int_eq(chown(path_in("soft/g1.pem"), 65534, 65534), 0);
        open_fails(ctx, "g1", KV_ERR_PERMISSION, "owned by uid 65534", "g1.pem");
        ck_assert_int_eq(chown(path_in("soft/g1.pem"), 0, 0), 0);
    }
    sign_ok(ctx, "g1");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(secret_files_must_be_private)
{
    kv_ctx *ctx = tu_ctx(NULL);
    const char *pass = path_in("pass"), *sub = path_in("secrets"),
               *inner = path_in("secrets/pin");
    char src[800], *secret = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, "s1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(chmod(pass, 0644), 0);
    open_fails(ctx, "s1", KV_ERR_PERMISSION, pass, "open to others");
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "test passphrase"));
    ck_assert_int_eq(chmod(pass, 0640), 0);
    open_fails(ctx, "s1", KV_ERR_PERMISSION, pass, "open to its group");
    ck_assert_int_eq(chmod(pass, 0600), 0);
    sign_ok(ctx, "s1");
    if (as_root("a passphrase file owned by another user")) {
        ck_assert_int_eq(chown(pass, 65534, 65534), 0);
        open_fails(ctx, "s1", KV_ERR_PERMISSION, pass, "owned by uid 65534");
        ck_assert_int_eq(chown(pass, 0, 0), 0);
    }
    /* PINs and TPM auth values come through the same reader: a private file
     * in a directory others can write to is refused too */
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    tu_write(inner, "123456\n");
    snprintf(src, sizeof(src), "file:%s", inner);
    ck_assert_rc(ctx, kv_secret_read(ctx, src, "PIN", &secret), KV_OK);
    ck_assert_str_eq(secret, "123456");
    kv_secret_free(secret);
    secret = NULL;
    ck_assert_int_eq(chmod(sub, 0730), 0);
    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_secret_read(ctx, src, "PIN", &secret), KV_ERR_PERMISSION);
    ck_assert_ptr_null(secret);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), sub));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "writable by its group"));
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "123456"));
    ck_assert_int_eq(chmod(sub, 0700), 0);
    ck_assert_int_eq(chmod(inner, 0604), 0);
    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_secret_read(ctx, src, "TPM key auth value", &secret),
                 KV_ERR_PERMISSION);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "open to others"));
    kv_ctx_free(ctx);
}
END_TEST

/* In a child with a uid that has no passwd entry, and no HOME. */
static int homeless_child(const char *conf)
{
    kv_ctx *ctx = NULL;
    kv_rc rc;

    if (setgid(54321) != 0 || setuid(54321) != 0)
        return 10;
    if (getpwuid(54321) != NULL)
        return 11;
    unsetenv("HOME");
    unsetenv("XDG_DATA_HOME");
    unsetenv("KEYVAULT_HOME");
    rc = kv_ctx_new(&ctx, conf);
    if (rc != KV_ERR_CONFIG || ctx)
        return 12;
    if (!strstr(kv_errmsg(NULL), "KEYVAULT_HOME") || strstr(kv_errmsg(NULL), "/tmp"))
        return 13;
    /* with KEYVAULT_HOME the same context works */
    setenv("KEYVAULT_HOME", "/nonexistent/kv", 1);
    if (kv_ctx_new(&ctx, conf) != KV_OK)
        return 14;
    kv_ctx_free(ctx);
    return 0;
}

START_TEST(no_home_is_an_error_not_tmp)
{
    const char *conf = path_in("homeless.conf");
    int st = 0;
    pid_t pid;

    if (!as_root("no HOME and no passwd entry is an error, not /tmp"))
        return; /* needs a uid without a passwd entry: root can become one */
    tu_write(conf, "[keyvault]\nbackends = software\n");
    ck_assert_int_eq(chmod(conf, 0644), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(homeless_child(conf));
    waitpid(pid, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed at step %d",
                  WEXITSTATUS(st));
}
END_TEST

START_TEST(swapped_and_linked_key_files_are_detected)
{
    kv_ctx *ctx = tu_ctx(NULL);
    char a[700], b[700], aj[700], bj[700], uri[800], *text, *cut;
    json_t *meta;
    json_error_t jerr;
    const char *fpr = NULL, *mac = NULL;

    /* path_in's buffers are few: keep these four */
    snprintf(a, sizeof(a), "%s", path_in("soft/a.pem"));
    snprintf(b, sizeof(b), "%s", path_in("soft/b.pem"));
    snprintf(aj, sizeof(aj), "%s", path_in("soft/a.json"));
    snprintf(bj, sizeof(bj), "%s", path_in("soft/b.json"));
    ck_assert_rc(ctx, kv_key_generate(ctx, "a", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "b", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* the metadata records the public key's SHA-256, as openssl computes it */
    meta = json_load_file(aj, 0, &jerr);
    ck_assert_ptr_nonnull(meta);
    ck_assert_int_eq(json_unpack(meta, "{s:s, s:s}", "public_key_sha256", &fpr, "mac", &mac), 0);
    ck_assert_uint_eq(strlen(mac), 64);
    ck_assert_int_eq(tu_sh("openssl pkey -in %s -passin file:%s -pubout -outform DER | "
                           "openssl dgst -sha256 -r | cut -c1-64 | tr a-f A-F | "
                           "grep -qx %s", a, path_in("pass"), fpr), 0);
    json_decref(meta);

    /* the two key files swapped: each name refuses the other's key */
    swap_files(a, b);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", NULL);
    open_fails(ctx, "b", KV_ERR_CORRUPT, "key 'b'", NULL);
    snprintf(uri, sizeof(uri), "file:%s", a);
    open_fails(ctx, uri, KV_ERR_CORRUPT, "key 'a'", NULL);
    ck_assert_rc(ctx, kv_key_destroy(ctx, "a"), KV_ERR_CORRUPT);
    /* key files and metadata swapped together: the names give it away */
    swap_files(aj, bj);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", "belongs to key 'b'");
    swap_files(aj, bj);
    swap_files(a, b);
    sign_ok(ctx, "a");
    sign_ok(ctx, "b");

    /* a symbolic link to the other key, and a hard link */
    ck_assert_int_eq(rename(a, path_in("a.saved")), 0);
    ck_assert_int_eq(symlink(b, a), 0);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", "symbolic link");
    ck_assert_int_eq(unlink(a), 0);
    ck_assert_int_eq(link(b, a), 0);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", NULL);
    ck_assert_int_eq(unlink(a), 0);
    ck_assert_int_eq(rename(path_in("a.saved"), a), 0);
    sign_ok(ctx, "a");

    /* metadata without its MAC (a downgrade), missing, altered, or a link */
    text = slurp(aj, NULL);
    ck_assert_int_eq(rename(aj, path_in("a.json.saved")), 0);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", "missing");
    cut = strstr(text, "\"mac\"");
    ck_assert_ptr_nonnull(cut);
    memcpy(cut, "\"xyz\"", 5);
    tu_write(aj, text);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", "no MAC");
    memcpy(cut, "\"mac\"", 5);
    cut = strstr(text, "\"version\": 1");
    ck_assert_ptr_nonnull(cut);
    cut[11] = '7';
    tu_write(aj, text);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "key 'a'", "does not authenticate");
    ck_assert_int_eq(unlink(aj), 0);
    ck_assert_int_eq(symlink(path_in("a.json.saved"), aj), 0);
    open_fails(ctx, "a", KV_ERR_CORRUPT, "symbolic link", NULL);
    ck_assert_int_eq(unlink(aj), 0);
    ck_assert_int_eq(rename(path_in("a.json.saved"), aj), 0);
    sign_ok(ctx, "a");
    free(text);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(certificate_beside_a_key_is_checked)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    unsigned char der[4096];
    size_t len = sizeof(der);
    char *pem;

    ck_assert_rc(ctx, kv_key_generate(ctx, "c1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "c2", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(tu_sh("openssl req -new -x509 -key %s -passin file:%s -subj /CN=c1 "
                           "-days 1 -out %s 2>/dev/null", path_in("soft/c1.pem"),
                           path_in("pass"), path_in("c1.cert")), 0);
    pem = slurp(path_in("c1.cert"), &len);
    ck_assert_rc(ctx, kv_key_open(ctx, "c1", &key), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(key, (const unsigned char *)pem, len), KV_OK);
    len = sizeof(der);
    ck_assert_rc(ctx, kv_key_cert_der(key, der, &len), KV_OK);
    kv_key_free(key);
    free(pem);
    /* c1's certificate put beside c2 */
    ck_assert_int_eq(tu_sh("cp -p %s %s", path_in("soft/c1.crt"), path_in("soft/c2.crt")), 0);
    ck_assert_rc(ctx, kv_key_open(ctx, "c2", &key), KV_OK);
    len = sizeof(der);
    ck_assert_rc(ctx, kv_key_cert_der(key, der, &len), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "key 'c2'"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "c2.crt"));
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* A destroy killed after it removed the key file, before the certificate
 * file (crashloop.sh found it): the name's next key started with the old
 * key's certificate and was refused as damaged. The new key has none. */
START_TEST(killed_destroy_leaves_no_certificate_to_the_next_key)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    size_t len = 0;
    char *pem = NULL;

    o.subject = "CN=k1";
    ck_assert_rc(ctx, kv_key_generate(ctx, "k1", KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_cert_selfsign(key, &o, &pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(key, (const unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(pem);
    kv_key_free(key);
    key = NULL;
    /* what kv_key_destroy leaves when killed after its first unlink */
    ck_assert_int_eq(unlink(path_in("soft/k1.pem")), 0);
    ck_assert_int_eq(access(path_in("soft/k1.crt"), F_OK), 0);
    ck_assert_rc(ctx, kv_key_open(ctx, "k1", &key), KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k1", KV_KEY_EC_P256, NULL, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_cert_der(key, NULL, &len), KV_ERR_KEY_NOT_FOUND);
    ck_assert_int_eq(access(path_in("soft/k1.crt"), F_OK), -1);
    kv_key_free(key);
    sign_ok(ctx, "k1");
    kv_ctx_free(ctx);
}
END_TEST

/* kv_read_file_ex sizes its buffer from the file; every length up to the
 * bound reads back whole, one byte over is refused naming the bound, and a
 * file that reports no size (a /proc file) still reads whole. */
START_TEST(files_read_whole_up_to_their_bound)
{
    static const size_t lens[] = { 0, 1, 4095, 4096, 4097, 20000, 65535, 65536, 65537 };
    const size_t max = 65536;
    kv_ctx *ctx = tu_ctx(NULL);
    char *text = NULL, *want = malloc(max + 2);
    size_t len = 0;

    ck_assert_ptr_nonnull(want);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        FILE *f = fopen(path_in("sized"), "w");
        ck_assert_ptr_nonnull(f);
        for (size_t j = 0; j < lens[i]; j++)
            want[j] = (char)('a' + (i + j) % 26);
        ck_assert_uint_eq(fwrite(want, 1, lens[i], f), lens[i]);
        ck_assert_int_eq(fclose(f), 0);
        kv_err_begin(ctx); /* an internal call: a public entry would do this */
        kv_rc rc = kv_read_file(ctx, path_in("sized"), max, &text, &len);
        if (lens[i] > max) {
            ck_assert_rc(ctx, rc, KV_ERR_CORRUPT);
            ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "larger than 65536 bytes"));
            ck_assert_ptr_null(text);
            continue;
        }
        ck_assert_rc(ctx, rc, KV_OK);
        ck_assert_uint_eq(len, lens[i]);
        ck_assert_int_eq(memcmp(text, want, len), 0);
        ck_assert_int_eq(text[len], '\0');
        free(text);
    }
    /* st_size 0, content well past the first 4 KiB: the buffer grows */
    ck_assert_rc(ctx, kv_read_file(ctx, "/proc/self/maps", 1 << 20, &text, &len), KV_OK);
    ck_assert_uint_gt(len, 4096);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_nonnull(strstr(text, "\n"));
    free(text);
    /* and is still bounded */
    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_read_file(ctx, "/proc/self/maps", 100, &text, &len), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "larger than 100 bytes"));
    free(want);
    kv_ctx_free(ctx);
}
END_TEST

static void alarm_fail(int sig)
{
    (void)sig;
    _exit(99); /* the test process dies: Check reports it */
}

START_TEST(only_regular_files_are_read)
{
    kv_ctx *ctx = tu_ctx(NULL), *other = NULL;
    kv_key *key = NULL;
    unsigned char der[4096];
    size_t len = sizeof(der);
    char text[1024];

    signal(SIGALRM, alarm_fail);
    alarm(20); /* a FIFO that is waited on hangs forever: fail instead */
    ck_assert_rc(ctx, kv_key_generate(ctx, "r1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* a FIFO or a directory in place of a key file */
    ck_assert_int_eq(mkfifo(path_in("soft/f1.pem"), 0600), 0);
    open_fails(ctx, "f1", KV_ERR_CORRUPT, "key 'f1'", "not a regular file");
    snprintf(text, sizeof(text), "file:%s", path_in("soft/f1.pem"));
    open_fails(ctx, text, KV_ERR_CORRUPT, "key 'f1'", NULL);
    ck_assert_int_eq(mkdir(path_in("soft/d1.pem"), 0700), 0);
    open_fails(ctx, "d1", KV_ERR_CORRUPT, "key 'd1'", "not a regular file");
    /* the name is taken all the same */
    ck_assert_rc(ctx, kv_key_generate(ctx, "f1", KV_KEY_EC_P256, NULL, NULL), KV_ERR_KEY_EXISTS);
    /* in place of metadata */
    ck_assert_int_eq(rename(path_in("soft/r1.json"), path_in("r1.json")), 0);
    ck_assert_int_eq(mkfifo(path_in("soft/r1.json"), 0600), 0);
    open_fails(ctx, "r1", KV_ERR_CORRUPT, "r1.json", "a FIFO");
    ck_assert_int_eq(unlink(path_in("soft/r1.json")), 0);
    ck_assert_int_eq(rename(path_in("r1.json"), path_in("soft/r1.json")), 0);
    /* in place of a certificate */
    ck_assert_int_eq(mkfifo(path_in("soft/r1.crt"), 0600), 0);
    ck_assert_rc(ctx, kv_key_open(ctx, "r1", &key), KV_OK);
    ck_assert_rc(ctx, kv_key_cert_der(key, der, &len), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "a FIFO"));
    kv_key_free(key);
    /* in place of the passphrase file */
    ck_assert_int_eq(rename(path_in("pass"), path_in("pass.saved")), 0);
    ck_assert_int_eq(mkfifo(path_in("pass"), 0600), 0);
    open_fails(ctx, "r1", KV_ERR_IO, path_in("pass"), "a FIFO");
    ck_assert_int_eq(unlink(path_in("pass")), 0);
    ck_assert_int_eq(rename(path_in("pass.saved"), path_in("pass")), 0);
    sign_ok(ctx, "r1");
    /* in place of the configuration file, and a device */
    ck_assert_int_eq(mkfifo(path_in("fifo.conf"), 0600), 0);
    ck_assert_rc(NULL, kv_ctx_new(&other, path_in("fifo.conf")), KV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "a FIFO"));
    ck_assert_rc(NULL, kv_ctx_new(&other, "/dev/zero"), KV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "character device"));
    alarm(0);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(stale_temporary_files_are_removed)
{
    kv_ctx *ctx = tu_ctx(NULL);
    static const char *const stale[] = { ".k1.pem.AbC123", ".k1.json.zz9ZZ9", ".k1.crt.000000",
                                         "..machine-secret.Qw3rty" };
    static const char *const kept[] = { ".k1.pem.Fresh1",     /* young: a live writer's */
                                        ".notours.AbC123",    /* not a file we write */
                                        ".k1.pem.AbC12",      /* not mkstemp's pattern */
                                        ".k1.pem.AbC-23",     /* nor this */
                                        "k1.pem.AbC123" };    /* nor this */
    struct timespec old[2] = { { time(NULL) - 3600, 0 }, { time(NULL) - 3600, 0 } };

    ck_assert_rc(ctx, kv_key_generate(ctx, "k0", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        char rel[100];
        snprintf(rel, sizeof(rel), "soft/%s", stale[i]);
        tu_write(path_in(rel), "left by a killed writer");
        ck_assert_int_eq(utimensat(AT_FDCWD, path_in(rel), old, 0), 0);
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        char rel[100];
        snprintf(rel, sizeof(rel), "soft/%s", kept[i]);
        tu_write(path_in(rel), "keep me");
        if (i > 0)
            ck_assert_int_eq(utimensat(AT_FDCWD, path_in(rel), old, 0), 0);
    }
    /* a context sweeps a directory once (per KV_STALE_TEMP_AGE), at its
     * first write there: k0 was it, so k1 leaves them, as a write in this
     * context would for five minutes; with 5000 keys a sweep per write
     * cost each write a scan of 15000 names */
    ck_assert_rc(ctx, kv_key_generate(ctx, "k1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        char rel[100];
        snprintf(rel, sizeof(rel), "soft/%s", stale[i]);
        ck_assert_msg(access(path_in(rel), F_OK) == 0, "%s was removed by a second write",
                      stale[i]);
    }
    /* the next process (a new context) removes them at its first write */
    kv_ctx_free(ctx);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k2", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        char rel[100];
        snprintf(rel, sizeof(rel), "soft/%s", stale[i]);
        ck_assert_msg(access(path_in(rel), F_OK) != 0, "%s was not removed", stale[i]);
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        char rel[100];
        snprintf(rel, sizeof(rel), "soft/%s", kept[i]);
        ck_assert_msg(access(path_in(rel), F_OK) == 0, "%s was removed", kept[i]);
    }
    sign_ok(ctx, "k2");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(key_file_outside_the_store)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = NULL;
    char uri[800];

    ck_assert_rc(ctx, kv_key_generate(ctx, "o1", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "o2", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(mkdir(path_in("elsewhere"), 0700), 0);
    /* a software key file is only ever libkeyvault's: without its metadata
     * it is refused outside the store too (deleting NAME.json would
     * otherwise switch the binding off) */
    ck_assert_int_eq(tu_sh("cp -p %s %s", path_in("soft/o1.pem"), path_in("elsewhere/o1.pem")), 0);
    snprintf(uri, sizeof(uri), "file:%s", path_in("elsewhere/o1.pem"));
    open_fails(ctx, uri, KV_ERR_CORRUPT, "missing", NULL);
    /* with metadata beside it, the metadata is checked */
    ck_assert_int_eq(tu_sh("cp -p %s %s", path_in("soft/o2.json"), path_in("elsewhere/o1.json")),
                     0);
    open_fails(ctx, uri, KV_ERR_CORRUPT, "key 'o1'", NULL);
    ck_assert_int_eq(tu_sh("cp -p %s %s", path_in("soft/o1.json"), path_in("elsewhere/o1.json")),
                     0);
    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_OK);
    kv_key_free(key);
    /* in the store, by name or by URI, metadata is required */
    ck_assert_int_eq(unlink(path_in("soft/o1.json")), 0);
    open_fails(ctx, "o1", KV_ERR_CORRUPT, "missing", NULL);
    snprintf(uri, sizeof(uri), "file://%s", path_in("soft/o1.pem"));
    open_fails(ctx, uri, KV_ERR_CORRUPT, "missing", NULL);
    kv_ctx_free(ctx);
}
END_TEST

/* Forks a child that sleeps, at the moment someone holds the creation lock. */
struct forker {
    const char *lock;
    /* atomic: the thread and the test read and write both (a plain int
     * was a data race under ThreadSanitizer, tests/sanitizers.sh tsan) */
    atomic_int stop;
    _Atomic pid_t child;
};

static void *fork_while_locked(void *p)
{
    struct forker *f = p;
    int fd = open(f->lock, O_RDWR | O_CLOEXEC);

    while (fd >= 0 && !f->stop && f->child == 0) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            flock(fd, LOCK_UN);
            continue;
        }
        if (errno != EWOULDBLOCK)
            break;
        f->child = fork();
        if (f->child == 0) {
            sleep(30);
            _exit(0);
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* The child's creation: a key generated in the store and signing. */
static int child_generates(void *ctx)
{
    kv_key *key = NULL;
    unsigned char sig[128];
    size_t siglen = sizeof(sig);
    kv_rc rc = kv_key_generate(ctx, "forked", KV_KEY_EC_P256, NULL, &key);

    if (rc == KV_OK)
        rc = kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen);
    if (rc != KV_OK)
        fprintf(stderr, "the child: %s\n", kv_errmsg(ctx));
    kv_key_free(key);
    return rc == KV_OK ? 0 : 1;
}

/*
 * A process forks while another of its threads is in an atomic file write
 * (it holds the context's table of swept directories for a moment, at
 * every key, record or certificate written). The child, which has only the
 * forking thread, generates a key in the store: it must not wait for the
 * thread it does not have (before the fix it hung).
 */
START_TEST(a_fork_amid_a_file_write)
{
    kv_ctx *ctx = tu_ctx(NULL);

    ck_assert_rc(ctx, kv_key_generate(ctx, "k0", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(tu_fork_while_held(&((kv_mutex *)ctx->sweeps)->mu, child_generates, ctx, 20000),
                     0);
    sign_ok(ctx, "forked");
    kv_ctx_free(ctx);
}
END_TEST

/* The creation lock in the home directory is the caller's own: one that
 * others could write (and hold forever) is refused. And a child forked
 * while the lock is held does not keep it after the creation ends. */
START_TEST(creation_lock_is_private)
{
    kv_ctx *ctx = tu_ctx(NULL);
    struct forker f = { 0 };
    char lock[1200], name[16];
    pthread_t th;
    int status, fd;

    snprintf(lock, sizeof(lock), "%s/.create.lock", getenv("KEYVAULT_HOME"));
    ck_assert_rc(ctx, kv_key_generate(ctx, "l0", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    ck_assert_int_eq(chmod(lock, 0666), 0);
    ck_assert_rc(ctx, kv_key_generate(ctx, "lx", KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_PERMISSION);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), ".create.lock"));
    ck_assert_int_eq(chmod(lock, 0600), 0);

    f.lock = lock;
    ck_assert_int_eq(pthread_create(&th, NULL, fork_while_locked, &f), 0);
    for (int i = 1; i <= 200 && f.child == 0; i++) {
        snprintf(name, sizeof(name), "l%d", i);
        ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, NULL, NULL), KV_OK);
    }
    f.stop = 1;
    pthread_join(th, NULL);
    ck_assert_msg(f.child > 0, "no child was forked while the lock was held");
    /* the creation is over and the child lives on: the lock is free */
    fd = open(lock, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(flock(fd, LOCK_EX | LOCK_NB) == 0, "the forked child keeps the lock");
    close(fd);
    kill(f.child, SIGKILL);
    ck_assert_int_eq(waitpid(f.child, &status, 0), f.child);
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
    tcase_add_test(tc, store_directory_must_be_private);
    tcase_add_test(tc, secret_files_must_be_private);
    tcase_add_test(tc, no_home_is_an_error_not_tmp);
    tcase_add_test(tc, swapped_and_linked_key_files_are_detected);
    tcase_add_test(tc, certificate_beside_a_key_is_checked);
    tcase_add_test(tc, killed_destroy_leaves_no_certificate_to_the_next_key);
    tcase_add_test(tc, only_regular_files_are_read);
    tcase_add_test(tc, stale_temporary_files_are_removed);
    tcase_add_test(tc, key_file_outside_the_store);
    tcase_add_test(tc, creation_lock_is_private);
    tcase_add_test(tc, a_fork_amid_a_file_write);
    tcase_add_test(tc, files_read_whole_up_to_their_bound);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(store_suite());
}
