/*
 * check_rotate.c - the two halves of a rotation (kv_rotate_prepare and
 * kv_rotate_commit, internal.h) on the software store: a pending version
 * held by a live process is left alone by another rotation, one whose
 * process died is remade, a commit of a version remade in between is
 * refused, the record's commit point, and key names with versions.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

/* The test's configuration, for the processes it forks too (tu_tmpdir
 * gives each process its own directory). */
static char conf[1024];

static kv_ctx *ctx_new(void)
{
    kv_ctx *ctx = NULL;

    if (!conf[0])
        snprintf(conf, sizeof(conf), "%s", tu_config(tu_tmpdir(), NULL));
    ck_assert_msg(kv_ctx_new(&ctx, conf) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

static kv_key_version_list *versions(kv_ctx *ctx, const char *name)
{
    kv_key_version_list *vl = NULL;

    ck_assert_rc(ctx, kv_key_versions(ctx, name, &vl), KV_OK);
    return vl;
}

static kv_version_state state_of(const kv_key_version_list *vl, unsigned v)
{
    for (size_t i = 0; i < vl->count; i++)
        if (vl->versions[i].version == v)
            return vl->versions[i].state;
    return (kv_version_state)-1;
}

/* A signature by key over a fixed digest. */
static kv_rc sign_one(kv_key *key)
{
    unsigned char sig[128], md[32] = { 1 };
    size_t len = sizeof(sig);

    return kv_sign(key, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 32, sig, &len);
}

/* In a child: a fresh context rotating name; its kv_rc as exit status. */
static int child_rotate(const char *name)
{
    pid_t pid = fork();
    int st = 0;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        kv_ctx *c = ctx_new();
        kv_rotate_opts o = KV_ROTATE_OPTS_INIT;
        kv_rc rc;
        o.overlap = 3600;
        rc = c ? kv_key_rotate(c, name, &o, NULL) : KV_ERR_CONFIG;
        if (rc != KV_OK)
            fprintf(stderr, "child: %s\n", kv_errmsg(c));
        _exit((int)rc);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

START_TEST(names)
{
    ck_assert(kv_backend_name_valid("gw"));
    ck_assert(kv_backend_name_valid("gw@2"));
    ck_assert(kv_backend_name_valid("gw@999999999"));
    ck_assert(!kv_backend_name_valid("gw@1"));   /* version 1 is the plain name */
    ck_assert(!kv_backend_name_valid("gw@0"));
    ck_assert(!kv_backend_name_valid("gw@02"));
    ck_assert(!kv_backend_name_valid("gw@"));
    ck_assert(!kv_backend_name_valid("@2"));
    ck_assert(!kv_backend_name_valid("gw@2@3"));
    ck_assert(!kv_backend_name_valid("gw@2x"));
    ck_assert(!kv_backend_name_valid("gw@1000000000"));
    ck_assert(!kv_backend_name_valid(".gw@2"));
    ck_assert_uint_eq(kv_backend_name_version("gw"), 1);
    ck_assert_uint_eq(kv_backend_name_version("gw@17"), 17);
    /* 62 characters + "@2" fits in 64; 63 + "@2" does not */
    ck_assert(kv_backend_name_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@2"));
    ck_assert(!kv_backend_name_valid(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@2"));
}
END_TEST

START_TEST(prepare_commit)
{
    kv_ctx *ctx = ctx_new();
    kv_key *cur = NULL, *pending = NULL, *reopened = NULL;
    kv_key_version_list *vl;
    kv_rotate_opts o = KV_ROTATE_OPTS_INIT;
    kv_key_info info;

    ck_assert_rc(ctx, kv_key_generate(ctx, "pc", KV_KEY_EC_P256, NULL, &cur), KV_OK);
    ck_assert_rc(ctx, kv_rotate_prepare(ctx, "pc", &pending), KV_OK);
    ck_assert_uint_eq(pending->version, 2);
    ck_assert_str_eq(pending->name, "pc@2");
    /* prepared, not committed: the name still opens version 1 */
    vl = versions(ctx, "pc");
    ck_assert_uint_eq(vl->current, 1);
    ck_assert_int_eq(state_of(vl, 2), KV_VERSION_PENDING);
    kv_key_version_list_free(vl);
    ck_assert_rc(ctx, kv_key_open(ctx, "pc", &reopened), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(reopened, &info), KV_OK);
    ck_assert_uint_eq(info.version, 1);
    kv_key_free(reopened);
    /* the pending version signs: a renewal makes its request with it */
    ck_assert_rc(ctx, sign_one(pending), KV_OK);
    /* another process cannot take over a pending version this one holds */
    ck_assert_int_eq(child_rotate("pc"), KV_ERR_IO);
    vl = versions(ctx, "pc");
    ck_assert_uint_eq(vl->current, 1);
    ck_assert_uint_eq(vl->count, 2);
    kv_key_version_list_free(vl);
    o.overlap = 60;
    ck_assert_rc(ctx, kv_rotate_commit(ctx, pending, &o), KV_OK);
    vl = versions(ctx, "pc");
    ck_assert_uint_eq(vl->current, 2);
    ck_assert_int_eq(state_of(vl, 1), KV_VERSION_OVERLAP);
    ck_assert_int_eq(state_of(vl, 2), KV_VERSION_CURRENT);
    ck_assert(vl->versions[0].retire_at - vl->versions[1].activated == 60);
    kv_key_version_list_free(vl);
    /* committing twice is refused and changes nothing */
    ck_assert_rc(ctx, kv_rotate_commit(ctx, pending, &o), KV_ERR_INVALID_ARG);
    /* the old handle is version 1, in its overlap: it still signs */
    ck_assert_rc(ctx, sign_one(cur), KV_OK);
    /* now nothing is pending: another process rotates */
    ck_assert_int_eq(child_rotate("pc"), KV_OK);
    vl = versions(ctx, "pc");
    ck_assert_uint_eq(vl->current, 3);
    kv_key_version_list_free(vl);
    kv_key_free(pending);
    kv_key_free(cur);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(dead_pending_is_remade)
{
    kv_ctx *ctx = ctx_new();
    kv_key *pending = NULL, *key = NULL;
    kv_key_version_list *vl;
    unsigned char pub1[256], pub2[256];
    size_t len1 = sizeof(pub1), len2 = sizeof(pub2);
    pid_t pid;
    int st = 0;

    ck_assert_rc(ctx, kv_key_generate(ctx, "dp", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    /* a process prepares and dies without committing */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        kv_ctx *c = ctx_new();
        kv_key *p = NULL;
        _exit(c && kv_rotate_prepare(c, "dp", &p) == KV_OK && p->version == 2 ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_rc(ctx, kv_key_open(ctx, "dp@2", &key), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(key, pub1, &len1), KV_OK);
    kv_key_free(key);
    /* the next rotation remakes version 2: the dead one's key is gone */
    ck_assert_rc(ctx, kv_rotate_prepare(ctx, "dp", &pending), KV_OK);
    ck_assert_uint_eq(pending->version, 2);
    ck_assert_rc(ctx, kv_key_public_der(pending, pub2, &len2), KV_OK);
    ck_assert(len1 != len2 || memcmp(pub1, pub2, len1) != 0);
    ck_assert_rc(ctx, kv_rotate_commit(ctx, pending, NULL), KV_OK);
    vl = versions(ctx, "dp");
    ck_assert_uint_eq(vl->current, 2);
    ck_assert_uint_eq(vl->count, 2);
    /* the default overlap: 7 days */
    ck_assert(vl->versions[0].retire_at - vl->versions[1].activated == 7 * 86400);
    ck_assert_int_eq(vl->versions[0].destroy_at, 0);
    kv_key_version_list_free(vl);
    kv_key_free(pending);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(retired_handle_refused)
{
    kv_ctx *ctx = ctx_new();
    kv_key *v1 = NULL, *v2 = NULL;
    kv_rotate_opts o = KV_ROTATE_OPTS_INIT;
    unsigned char sig[128], md[32] = { 3 }, secret[32], *peer = NULL;
    size_t len = sizeof(sig), slen = sizeof(secret);
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    int n = i2d_PUBKEY(pk, &peer);

    ck_assert_int_gt(n, 0);
    ck_assert_rc(ctx, kv_key_generate(ctx, "rh", KV_KEY_EC_P256, NULL, &v1), KV_OK);
    o.overlap = 0;
    ck_assert_rc(ctx, kv_key_rotate(ctx, "rh", &o, &v2), KV_OK);
    /* the held handle sees the record at its next look (at most a second) */
    sleep(1);
    usleep(100 * 1000);
    ck_assert_rc(ctx, kv_sign(v1, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 32, sig, &len),
                 KV_ERR_POLICY);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "version 1 of key 'rh' was retired at "));
    ck_assert_uint_eq(len, 0); /* the output is wiped on failure */
    ck_assert_rc(ctx, kv_ecdh(v1, peer, (size_t)n, secret, &slen), KV_ERR_POLICY);
    slen = sizeof(secret);
    ck_assert_rc(ctx, kv_ecdh(v2, peer, (size_t)n, secret, &slen), KV_OK);
    len = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(v2, KV_ALG_ECDSA_SHA256, KV_SIGN_PREHASHED, md, 32, sig, &len),
                 KV_OK);
    /* the name cannot be generated again while it has versions */
    ck_assert_rc(ctx, kv_key_generate(ctx, "rh", KV_KEY_EC_P256, NULL, NULL), KV_ERR_KEY_EXISTS);
    /* destroying the name removes every version and the record */
    ck_assert_rc(ctx, kv_key_destroy(ctx, "rh"), KV_OK);
    ck_assert_rc(ctx, kv_key_versions(ctx, "rh", &(kv_key_version_list *){ NULL }),
                 KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_key_generate(ctx, "rh", KV_KEY_EC_P256, NULL, NULL), KV_OK);
    OPENSSL_free(peer);
    EVP_PKEY_free(pk);
    kv_key_free(v1);
    kv_key_free(v2);
    kv_ctx_free(ctx);
}
END_TEST

/* v1 in the child, and whether its parent's look at v1 was recent enough
 * that only the forced read can show the child the rotation */
struct stale_v1 {
    kv_key *key;
    bool window;
};

/* The child's look at v1: it must see the record rewritten just before
 * the fork, within the second in which its parent would not look again. */
static int child_sign_retired(void *arg)
{
    struct stale_v1 *v = arg;
    kv_rc rc = sign_one(v->key);

    if (rc == KV_ERR_POLICY || (!v->window && rc == KV_OK))
        return 0;
    fprintf(stderr, "the child's sign: %s, not refused as retired\n", kv_strerror(rc));
    return 1;
}

/*
 * A process forks while another of its threads is inside a key's version
 * check (it holds the key's lifecycle lock, as every sign and ECDH does for
 * a moment, and for a record read when the record changed). The child,
 * which has only the forking thread, signs with the key: it must not wait
 * for a thread it does not have (before the fix it hung), and, since what
 * that thread was updating may be half written, it reads the record again
 * at once: here the key was retired a moment before the fork, which the
 * child sees although its parent's last look is less than a second old.
 * (When the rotation took more than half a second, as it may under
 * valgrind, the child's look may be a regular one: only the hang is
 * tested then.)
 */
START_TEST(a_fork_amid_a_version_check)
{
    kv_ctx *ctx = ctx_new();
    kv_rotate_opts o = KV_ROTATE_OPTS_INIT;
    struct stale_v1 v = { NULL, false };
    struct timespec t0, t1;

    ck_assert_rc(ctx, kv_key_generate(ctx, "fk", KV_KEY_EC_P256, NULL, &v.key), KV_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_rc(ctx, sign_one(v.key), KV_OK); /* the handle's last look: now */
    o.overlap = 0;
    ck_assert_rc(ctx, kv_key_rotate(ctx, "fk", &o, NULL), KV_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* well inside the second, and the parent's cache still says current */
    v.window = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 500 &&
               sign_one(v.key) == KV_OK;
    if (!v.window)
        printf("a_fork_amid_a_version_check: the rotation was slow, the forced read not tested\n");
    ck_assert_int_eq(tu_fork_while_held(&((kv_mutex *)v.key->lc)->mu, child_sign_retired, &v, 20000),
                     0);
    kv_key_free(v.key);
    kv_ctx_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rotate");
    TCase *tc = tcase_create("rotate");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, names);
    tcase_add_test(tc, prepare_commit);
    tcase_add_test(tc, dead_pending_is_remade);
    tcase_add_test(tc, retired_handle_refused);
    tcase_add_test(tc, a_fork_amid_a_version_check);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
