/*
 * fault-sign.c - threads signing with one key of one context while faults
 * fire (tests/faults.sh): the PKCS#11 shim's schedule, or a TPM simulator
 * killed and restarted. Public API only; every signature that comes back is
 * verified with OpenSSL against the key's public half, every failure must
 * carry a detail naming what failed.
 *
 * Usage: fault-sign CONF NAME THREADS SIGNS [STOPFILE]
 * Each of THREADS threads signs SIGNS times (with STOPFILE: until that file
 * exists, at most SIGNS times, 20 ms apart; and STOPFILE.ready is made at
 * the first signature, for a script to start its outage only once the
 * signing is under way: a slow start, under valgrind, takes seconds; and
 * STOPFILE.recovered at a signature after a failure, for it to end the run
 * only once the signer has recovered).
 * Prints one summary line
 *   ok=N failed=N unclear=N bad=N recovered=N final=ok|failed maxms=N
 * (unclear: a failure whose detail names no failed call; bad: a signature
 * that does not verify; recovered: successes after a failure in the same
 * thread; final: the last call of every thread succeeded, or not; maxms:
 * the slowest call), then each distinct failure detail with its count.
 * Behind the PKCS#11 shim ($KV_SHIM_MODULE names the real module, and it
 * was loaded), a line
 *   sessions=N
 * follows: the sessions open in the real module after the last sign, while
 * the context still holds its own (C_GetSessionInfo on every handle from 1
 * to 4096, as bench/kv-soak.c counts them).
 * Exits 0 when nothing was unclear or bad, 1 otherwise, 2 on a usage or
 * setup error.
 */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keyvault.h"
#ifdef KV_WITH_PKCS11
#include <p11-kit/pkcs11.h>
#endif

#define MAX_DETAILS 16

static kv_ctx *ctx;
static kv_key *key;
static EVP_PKEY *pub;
static const char *stopfile;

/* STOPFILE.ready (at each thread's first signature) and STOPFILE.recovered
 * (at a signature after a failure): made again, harmless */
static void mark(const char *what)
{
    char path[4096];
    FILE *f;

    if (snprintf(path, sizeof(path), "%s.%s", stopfile, what) >= (int)sizeof(path))
        return;
    f = fopen(path, "w");
    if (f)
        fclose(f);
}
static long signs;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long n_ok, n_failed, n_unclear, n_bad, n_recovered, n_final_failed, max_ms;
static struct {
    char text[300];
    long count;
} details[MAX_DETAILS];

/* Sessions open in the module at `path` (already loaded by the shim), or
 * -1 when it is not loaded. */
static long module_sessions(const char *path)
{
    long n = -1;
#ifdef KV_WITH_PKCS11
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST *fl = NULL;
    CK_SESSION_INFO si;

    if (!h)
        return -1;
    *(void **)&get = dlsym(h, "C_GetFunctionList");
    if (get && get(&fl) == CKR_OK && fl) {
        n = 0;
        for (CK_SESSION_HANDLE s = 1; s <= 4096; s++)
            n += fl->C_GetSessionInfo(s, &si) == CKR_OK;
    }
    dlclose(h);
#else
    (void)path;
#endif
    return n;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int verifies(const unsigned char *msg, size_t len, const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
             EVP_DigestVerify(md, sig, siglen, msg, len) == 1;

    EVP_MD_CTX_free(md);
    return ok;
}

/* a failure's detail names the call that failed and why */
static int clear_detail(const char *d)
{
    return strstr(d, " failed: ") || strstr(d, " failed in TPM2_") || strstr(d, "not reachable") ||
           strstr(d, "not present");
}

static void note_failure(const char *d)
{
    int i;

    for (i = 0; i < MAX_DETAILS && details[i].count; i++)
        if (!strcmp(details[i].text, d))
            break;
    if (i < MAX_DETAILS) {
        if (!details[i].count)
            snprintf(details[i].text, sizeof(details[i].text), "%s", d);
        details[i].count++;
    }
}

static void *worker(void *arg)
{
    unsigned char msg[32], sig[1024];
    long ok = 0, failed = 0, unclear = 0, bad = 0, recovered = 0, slowest = 0;
    int last_failed = 0;

    (void)arg;
    for (long i = 0; i < signs; i++) {
        size_t siglen = sizeof(sig);
        double t0;
        long ms;
        kv_rc rc;

        if (stopfile && access(stopfile, F_OK) == 0)
            break;
        /* all 32 bytes are signed: the text does not fill them (valgrind
         * found the tail uninitialised in SoftHSM's ECDSA) */
        memset(msg, 0, sizeof(msg));
        snprintf((char *)msg, sizeof(msg), "fault-sign %p %ld", (void *)&msg, i);
        t0 = now_ms();
        rc = kv_sign(key, KV_ALG_DEFAULT, 0, msg, sizeof(msg), sig, &siglen);
        ms = (long)(now_ms() - t0);
        if (ms > slowest)
            slowest = ms;
        if (rc == KV_OK) {
            if (ok == 0 && stopfile)
                mark("ready");
            if (last_failed && stopfile)
                mark("recovered");
            ok++;
            recovered += last_failed;
            last_failed = 0;
            if (!verifies(msg, sizeof(msg), sig, siglen))
                bad++;
        } else {
            const char *d = kv_errmsg(ctx);
            failed++;
            last_failed = 1;
            if (!clear_detail(d))
                unclear++;
            pthread_mutex_lock(&lock);
            note_failure(d);
            pthread_mutex_unlock(&lock);
        }
        if (stopfile) {
            struct timespec ts = { 0, 20 * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_lock(&lock);
    n_ok += ok;
    n_failed += failed;
    n_unclear += unclear;
    n_bad += bad;
    n_recovered += recovered;
    n_final_failed += last_failed;
    if (slowest > max_ms)
        max_ms = slowest;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned char der[1024];
    const unsigned char *p = der;
    size_t derlen = sizeof(der);
    pthread_t *th;
    long threads;

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: fault-sign CONF NAME THREADS SIGNS [STOPFILE]\n");
        return 2;
    }
    threads = strtol(argv[3], NULL, 10);
    signs = strtol(argv[4], NULL, 10);
    stopfile = argc == 6 ? argv[5] : NULL;
    if (threads < 1 || threads > 1000 || signs < 1) {
        fprintf(stderr, "fault-sign: THREADS is 1 to 1000, SIGNS at least 1\n");
        return 2;
    }
    if (kv_ctx_new(&ctx, argv[1]) != KV_OK) {
        fprintf(stderr, "fault-sign: %s\n", kv_errmsg(NULL));
        return 2;
    }
    if (kv_key_open(ctx, argv[2], &key) != KV_OK ||
        kv_key_public_der(key, der, &derlen) != KV_OK) {
        fprintf(stderr, "fault-sign: %s\n", kv_errmsg(ctx));
        return 2;
    }
    pub = d2i_PUBKEY(NULL, &p, (long)derlen);
    th = calloc((size_t)threads, sizeof(*th));
    if (!pub || !th) {
        fprintf(stderr, "fault-sign: cannot read the public key\n");
        return 2;
    }
    for (long i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "fault-sign: pthread_create failed\n");
            return 2;
        }
    for (long i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    printf("ok=%ld failed=%ld unclear=%ld bad=%ld recovered=%ld final=%s maxms=%ld\n", n_ok,
           n_failed, n_unclear, n_bad, n_recovered, n_final_failed ? "failed" : "ok", max_ms);
    for (int i = 0; i < MAX_DETAILS && details[i].count; i++)
        printf("%ld x %s\n", details[i].count, details[i].text);
    if (getenv("KV_SHIM_MODULE")) {
        long open_sessions = module_sessions(getenv("KV_SHIM_MODULE"));
        if (open_sessions >= 0)
            printf("sessions=%ld\n", open_sessions);
    }
    /* out now: a leak report at exit (LeakSanitizer) ends the process
     * without flushing stdio, and the summary went with it once */
    fflush(stdout);
    free(th);
    EVP_PKEY_free(pub);
    kv_key_free(key);
    kv_ctx_free(ctx);
    return n_unclear || n_bad ? 1 : 0;
}
