/*
 * rotate-hold.c - a process that holds a key while another process
 * (the keyvault CLI) rotates it: the held version keeps signing and
 * deriving during the overlap and is refused (KV_ERR_POLICY, naming the
 * version and when it retired) once the overlap ends, without reopening.
 * Public API only. Usage: rotate-hold CONF KEYVAULT_CLI NAME OVERLAP_SECONDS
 * Prints "ok: ..." lines and exits 0 when every step did what it should.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keyvault.h"

static int failures;

static void check(int cond, const char *what, kv_ctx *ctx)
{
    if (cond) {
        printf("ok: %s\n", what);
    } else {
        printf("FAILED: %s (%s)\n", what, ctx ? kv_errmsg(ctx) : "");
        failures++;
    }
}

static kv_rc sign_once(kv_key *key, unsigned char *sig, size_t *len)
{
    static const unsigned char msg[] = "rotate-hold";

    *len = 512;
    return kv_sign(key, KV_ALG_DEFAULT, 0, msg, sizeof(msg) - 1, sig, len);
}

static kv_rc ecdh_once(kv_key *key)
{
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char *der = NULL, secret[64];
    size_t len = sizeof(secret);
    int n = peer ? i2d_PUBKEY(peer, &der) : -1;
    kv_rc rc = n > 0 ? kv_ecdh(key, der, (size_t)n, secret, &len) : KV_ERR_CRYPTO;

    OPENSSL_free(der);
    EVP_PKEY_free(peer);
    return rc;
}

int main(int argc, char **argv)
{
    static const unsigned char msg[] = "rotate-hold";
    unsigned char sig[512], pub[1024];
    size_t siglen = 0, publen = sizeof(pub);
    kv_ctx *ctx = NULL;
    kv_key *held = NULL, *now = NULL;
    kv_key_info info;
    char cmd[4096], want[256];
    int overlap;
    kv_rc rc;

    if (argc != 5) {
        fprintf(stderr, "usage: rotate-hold CONF KEYVAULT_CLI NAME OVERLAP_SECONDS\n");
        return 2;
    }
    overlap = atoi(argv[4]);
    if (kv_ctx_new(&ctx, argv[1]) != KV_OK || kv_key_open(ctx, argv[3], &held) != KV_OK) {
        fprintf(stderr, "rotate-hold: cannot open '%s': %s\n", argv[3], kv_errmsg(ctx));
        return 1;
    }
    check(kv_key_get_info(held, &info) == KV_OK && info.version == 1, "the held key is version 1",
          ctx);
    /* refusals that change nothing */
    {
        kv_rotate_opts bad = KV_ROTATE_OPTS_INIT;
        kv_key_version_list *vl = NULL;
        char versioned[300];

        bad.size = sizeof(bad) - 1;
        check(kv_key_rotate(ctx, argv[3], &bad, NULL) == KV_ERR_INVALID_ARG,
              "a short kv_rotate_opts is refused", ctx);
        bad = (kv_rotate_opts)KV_ROTATE_OPTS_INIT;
        bad.flags = 0x10;
        check(kv_key_rotate(ctx, argv[3], &bad, NULL) == KV_ERR_INVALID_ARG,
              "unknown rotation flags are refused", ctx);
        bad = (kv_rotate_opts)KV_ROTATE_OPTS_INIT;
        bad.overlap = -2;
        check(kv_key_rotate(ctx, argv[3], &bad, NULL) == KV_ERR_INVALID_ARG,
              "a negative overlap is refused", ctx);
        snprintf(versioned, sizeof(versioned), "%s@1", argv[3]);
        check(kv_key_rotate(ctx, versioned, NULL, NULL) == KV_ERR_BAD_URI,
              "NAME@N cannot be rotated", ctx);
        check(kv_key_versions(ctx, "no-such-key", &vl) == KV_ERR_KEY_NOT_FOUND && !vl,
              "versions of a missing key: KV_ERR_KEY_NOT_FOUND", ctx);
        check(kv_key_versions(ctx, argv[3], &vl) == KV_OK && vl->count == 1 && vl->current == 1 &&
                  vl->versions[0].state == KV_VERSION_CURRENT,
              "nothing was rotated by the refused calls", ctx);
        kv_key_version_list_free(vl);
        check(!strcmp(kv_version_state_name(KV_VERSION_RETIRED), "retired") &&
                  !strcmp(kv_version_state_name((kv_version_state)99), "unknown"),
              "kv_version_state_name", NULL);
    }
    check(sign_once(held, sig, &siglen) == KV_OK, "version 1 signs before the rotation", ctx);
    check(ecdh_once(held) == KV_OK, "version 1 derives before the rotation", ctx);
    snprintf(cmd, sizeof(cmd), "'%s' -c '%s' rotate '%s' --overlap %ds >/dev/null", argv[2],
             argv[1], argv[3], overlap);
    time_t ta = time(NULL);
    check(system(cmd) == 0, "another process rotated the key", NULL);
    time_t tb = time(NULL);
    /* when version 1 retires, from the record: the checks within its overlap
     * run only while the clock is still short of it (a loaded machine may
     * spend the overlap before they run; they then say so, and the test
     * asks for a longer overlap rather than passing on what it could not
     * see) */
    time_t retire_at = 0;
    {
        kv_key_version_list *vl = NULL;

        if (kv_key_versions(ctx, argv[3], &vl) == KV_OK)
            for (size_t i = 0; i < vl->count; i++)
                if (vl->versions[i].version == 1)
                    retire_at = (time_t)vl->versions[i].retire_at;
        kv_key_version_list_free(vl);
        /* the overlap asked for, from the rotation's commit (within the
         * call); the second the record keeps may be the one before */
        check(retire_at >= ta + overlap - 1 && retire_at <= tb + overlap,
              "the record retires version 1 OVERLAP_SECONDS after the rotation", ctx);
        if (retire_at < ta + overlap - 1 || retire_at > tb + overlap)
            retire_at = tb + overlap; /* not waited for: the check above failed */
    }
#define IN_OVERLAP(cond, what)                                                                   \
    do {                                                                                         \
        int c_ = (cond);                                                                         \
        if (time(NULL) < retire_at)                                                              \
            check(c_, what, ctx);                                                                \
        else                                                                                     \
            late++;                                                                              \
    } while (0)
    int late = 0;
    /* within the overlap, before and after the holder's next look at the record */
    IN_OVERLAP(sign_once(held, sig, &siglen) == KV_OK, "version 1 signs at once after the rotation");
    usleep(1200 * 1000);
    IN_OVERLAP(sign_once(held, sig, &siglen) == KV_OK, "version 1 signs in its overlap");
    check(kv_key_public_der(held, pub, &publen) == KV_OK &&
              kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, msg, sizeof(msg) - 1, sig,
                        siglen) == KV_OK,
          "its overlap signature verifies with version 1's public key", ctx);
    IN_OVERLAP(ecdh_once(held) == KV_OK, "version 1 derives (ECDH) in its overlap");
#undef IN_OVERLAP
    if (late) {
        /* the overlap ended before a check ran: not a pass */
        printf("FAILED: %d checks within the overlap ran after it ended (at %lld); run with a "
               "longer OVERLAP_SECONDS\n", late, (long long)retire_at);
        failures++;
    }
    check(kv_key_open(ctx, argv[3], &now) == KV_OK && kv_key_get_info(now, &info) == KV_OK &&
              info.version == 2,
          "the name now opens version 2", ctx);
    /* past the overlap (and a look at the record later) */
    while (time(NULL) <= retire_at + 1)
        usleep(100 * 1000);
    rc = sign_once(held, sig, &siglen);
    snprintf(want, sizeof(want), "version 1 of key '%s' was retired at ", argv[3]);
    check(rc == KV_ERR_POLICY, "the held version 1 is refused for signing once retired", ctx);
    check(strstr(kv_errmsg(ctx), want) != NULL && strstr(kv_errmsg(ctx), "sign refused"),
          "the refusal names the version and when it retired", ctx);
    printf("message: %s\n", kv_errmsg(ctx));
    check(ecdh_once(held) == KV_ERR_POLICY, "the held version 1 is refused for ECDH once retired",
          ctx);
    publen = sizeof(pub);
    check(kv_key_public_der(held, pub, &publen) == KV_OK, "its public key is still readable", ctx);
    check(sign_once(now, sig, &siglen) == KV_OK && ecdh_once(now) == KV_OK,
          "version 2 signs and derives", ctx);
    kv_key_free(now);
    kv_key_free(held);
    kv_ctx_free(ctx);
    return failures ? 1 : 0;
}
