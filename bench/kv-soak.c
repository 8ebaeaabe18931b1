/*
 * kv-soak - many signatures in one process, watching for what grows.
 *
 *   kv-soak -c CONF [--signs N] [--tpm-signs M] [--threads T] [--backends LIST]
 *           [--rotate-every R] [--reopen-every P] [--ecdh-every E]
 *           [--p11-module PATH] [--rss-bound KIB] [--heap-bound KIB] [--leak heap|fd]
 *
 * It sees libkeyvault as applications do: keyvault.h and the shared library.
 * One ECDSA P-256 key per backend of LIST (default software,pkcs11,tpm; those
 * CONF does not make available are left out) is made, then N signatures
 * (default 1,000,000) are spread over the software and pkcs11 keys, in 100
 * rounds of N/100 by T threads (default 2) sharing the keys, and M more
 * (default 20,000) on the TPM key, M/100 a round. Every E-th signature of a
 * thread (default 100) is preceded by an ECDH with a fixed peer on the same
 * key, its shared secret compared with OpenSSL's derivation from the peer's side;
 * one signature in 1,000 is verified with OpenSSL. Between rounds, every R
 * signatures (default N/10) each key is rotated (overlap 0, grace 0) and
 * pruned, and every P signatures (default N/4) the context is freed and made
 * again; keys are reopened by name after both.
 *
 * Sampled before the first signature, after every 10 rounds (10%) and after
 * the last context is freed: resident memory (VmRSS of /proc/self/status),
 * heap in use (mallinfo2: bytes in allocated chunks, all arenas), open file
 * descriptors (entries of /proc/self/fd) and PKCS#11 sessions open in the
 * module (SoftHSM keeps no count it reports: C_GetTokenInfo gives
 * CK_UNAVAILABLE_INFORMATION, so each handle 1..4096 is asked with
 * C_GetSessionInfo on the module's own function list, the one libkeyvault
 * loaded through p11-kit, found with dlopen(RTLD_NOLOAD); SoftHSM numbers
 * sessions from 1 and reuses the lowest free handle).
 *
 * Pass/fail, from the 10% sample (after warm-up: every thread has run,
 * every arena and the session pool have grown to their working size, a
 * rotation and OpenSSL's lazy tables are done) to the end: resident memory
 * may grow by at most --rss-bound KiB (default 4096), heap in use by at
 * most --heap-bound KiB (default 1024), open descriptors not at all, and
 * sessions not past the 10% sample's count or the number of threads (one
 * session each while they sign at once), whichever is larger. Exit 0 when
 * within bounds and no operation failed, 1 otherwise.
 * --leak heap (64 bytes never freed per signature) and --leak fd (one
 * descriptor never closed per round) are controls: the run must then fail.
 * Built with AddressSanitizer or ThreadSanitizer, or run under valgrind,
 * resident memory and heap are not bounded (see memory_bounded).
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keyvault.h"
#ifdef KV_WITH_PKCS11
#include <p11-kit/pkcs11.h>
#endif

/* Under AddressSanitizer or ThreadSanitizer the allocator is the
 * sanitizer's (its quarantine holds freed memory, mallinfo2 sees nothing),
 * and under valgrind it is valgrind's (tests/sanitizers.sh valgrind runs
 * kv-soak there; valgrind's own bookkeeping grows the resident figure):
 * resident memory and heap are printed but not bounded; descriptors and
 * sessions still are, and the sanitizer or valgrind checks every operation
 * (valgrind's leak check stands for the heap bound). */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define KV_SOAK_VALGRIND_H 1
#endif
#endif

static bool memory_bounded(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return false;
#elif defined(KV_SOAK_VALGRIND_H)
    return !RUNNING_ON_VALGRIND;
#else
    return true;
#endif
}

#define ROUNDS 100
#define NSAMPLES 12 /* start, 10% ... 100%, after the last kv_ctx_free */

enum { B_SOFT, B_P11, B_TPM, NB };
static const char *const backend_names[NB] = { "software", "pkcs11", "tpm" };
static const char *const key_names[NB] = { "soak-software", "soak-pkcs11", "soak-tpm" };

static const char *conf_path, *p11_module;
static long n_signs = 1000000, n_tpm = 20000, rotate_every = -1, reopen_every = -1;
static long ecdh_every = 100, rss_bound = 4096, heap_bound = 1024;
static int n_threads = 2;
static const char *leak; /* a control: "heap" or "fd", leaked on purpose */
static bool wanted[NB] = { true, true, true };

/* the keys in use, one per usable backend, with what checks their results */
struct soak_key {
    kv_key *key;
    EVP_PKEY *pub;
    unsigned char shared[64]; /* the ECDH result OpenSSL expects */
    size_t shared_len;
};
static kv_ctx *ctx;
static struct soak_key keys[NB];
static bool have[NB];
static EVP_PKEY *peer;             /* the ECDH peer, private half here */
static unsigned char peer_der[128]; /* its SubjectPublicKeyInfo */
static size_t peer_der_len;

static const unsigned char msg[32] = "kv-soak message: 32 bytes long.";

/* counts of what was done and what failed */
static atomic_long done_sign[NB], done_ecdh[NB], done_verify, failures;
static long rotations, destroyed, reopens;

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "kv-soak: %s: %s\n", what, ctx ? kv_errmsg(ctx) : kv_errmsg(NULL));
    exit(1);
}

/* rc KV_OK: a result that came back wrong */
static void fail(const char *what, kv_rc rc)
{
    /* the first few failures in full; all are counted */
    if (atomic_fetch_add(&failures, 1) >= 10)
        return;
    if (rc == KV_OK)
        fprintf(stderr, "kv-soak: %s\n", what);
    else
        fprintf(stderr, "kv-soak: %s failed: %s: %s\n", what, kv_strerror(rc), kv_errmsg(ctx));
}

/* ---- samples --------------------------------------------------------------- */

struct sample {
    const char *label;
    long signs;
    long rss_kib, heap_kib, fds, sessions, max_handle;
};
static struct sample samples[NSAMPLES];
static int n_samples;

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* sessions open in the module (see the header); 0 when it is not loaded or
 * not initialized */
static long p11_sessions(long *max_handle)
{
    long n = 0;

    *max_handle = 0;
#ifdef KV_WITH_PKCS11
    void *h = p11_module ? dlopen(p11_module, RTLD_NOW | RTLD_NOLOAD) : NULL;
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST *fl = NULL;
    CK_SESSION_INFO si;

    if (!h)
        return 0;
    *(void **)&get = dlsym(h, "C_GetFunctionList");
    if (get && get(&fl) == CKR_OK && fl)
        for (CK_SESSION_HANDLE s = 1; s <= 4096; s++)
            if (fl->C_GetSessionInfo(s, &si) == CKR_OK) {
                n++;
                *max_handle = (long)s;
            }
    dlclose(h);
#endif
    return n;
}

static void sample(const char *label, long signs)
{
    struct sample *s = &samples[n_samples++];
    struct mallinfo2 mi = mallinfo2();

    s->label = label;
    s->signs = signs;
    s->rss_kib = rss_kib();
    s->heap_kib = (long)(mi.uordblks / 1024);
    s->fds = count_fds();
    s->sessions = p11_sessions(&s->max_handle);
}

/* ---- keys ------------------------------------------------------------------- */

static EVP_PKEY *public_of(kv_key *key)
{
    unsigned char der[256];
    const unsigned char *p = der;
    size_t len = sizeof(der);

    if (kv_key_public_der(key, der, &len) != KV_OK)
        die("kv_key_public_der");
    return d2i_PUBKEY(NULL, &p, (long)len);
}

static void open_key(int b)
{
    struct soak_key *k = &keys[b];
    EVP_PKEY_CTX *c;
    kv_rc rc = kv_key_open(ctx, key_names[b], &k->key);

    if (rc != KV_OK)
        die(key_names[b]);
    k->pub = public_of(k->key);
    c = EVP_PKEY_CTX_new(peer, NULL);
    k->shared_len = sizeof(k->shared);
    if (!k->pub || !c || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, k->pub) != 1 ||
        EVP_PKEY_derive(c, k->shared, &k->shared_len) != 1)
        die("OpenSSL's side of the ECDH");
    EVP_PKEY_CTX_free(c);
}

static void close_key(int b)
{
    kv_key_free(keys[b].key);
    EVP_PKEY_free(keys[b].pub);
    keys[b].key = NULL;
    keys[b].pub = NULL;
}

static void open_ctx(bool first)
{
    if (kv_ctx_new(&ctx, conf_path) != KV_OK)
        die(conf_path);
    for (int b = 0; b < NB; b++) {
        const char *name;
        int avail = 0;

        if (!first)
            continue;
        for (size_t i = 0; kv_ctx_backend(ctx, i, &name, &avail, NULL) == KV_OK; i++)
            if (wanted[b] && !strcmp(name, backend_names[b]) && avail)
                have[b] = true;
    }
    if (first) {
        if (have[B_P11] && !p11_module) {
            fprintf(stderr, "kv-soak: a pkcs11 backend needs --p11-module to count sessions\n");
            exit(2);
        }
        if (!have[B_SOFT] && !have[B_P11]) {
            fprintf(stderr, "kv-soak: neither a software nor a pkcs11 backend is available\n");
            exit(2);
        }
        for (int b = 0; b < NB; b++) {
            kv_rc rc;
            if (!have[b])
                continue;
            rc = kv_key_generate(ctx, key_names[b], KV_KEY_EC_P256, backend_names[b], NULL);
            if (rc != KV_OK && rc != KV_ERR_KEY_EXISTS)
                die(key_names[b]);
        }
    }
    for (int b = 0; b < NB; b++)
        if (have[b])
            open_key(b);
}

static void close_ctx(void)
{
    for (int b = 0; b < NB; b++)
        close_key(b);
    kv_ctx_free(ctx);
    ctx = NULL;
}

static void rotate_all(void)
{
    kv_rotate_opts opts = KV_ROTATE_OPTS_INIT;

    opts.overlap = 0;
    opts.grace = 0;
    for (int b = 0; b < NB; b++) {
        unsigned n = 0;
        kv_rc rc;

        if (!have[b])
            continue;
        close_key(b);
        rc = kv_key_rotate(ctx, key_names[b], &opts, NULL);
        if (rc != KV_OK)
            die("kv_key_rotate");
        rc = kv_key_prune(ctx, key_names[b], &n);
        if (rc != KV_OK)
            die("kv_key_prune");
        destroyed += n;
        open_key(b);
    }
    rotations++;
}

/* ---- the work ----------------------------------------------------------------- */

struct slice {
    int thread;
    long signs, tpm_signs; /* this thread's share of the round */
    long ops;              /* counts this thread's signatures, for ECDH spacing */
};

static void one_op(struct slice *s, int b)
{
    struct soak_key *k = &keys[b];
    unsigned char out[128];
    size_t len = sizeof(out);
    kv_rc rc;

    s->ops++;
    if (ecdh_every > 0 && s->ops % ecdh_every == 0) {
        rc = kv_ecdh(k->key, peer_der, peer_der_len, out, &len);
        if (rc != KV_OK)
            fail("kv_ecdh", rc);
        else if (len != k->shared_len || memcmp(out, k->shared, len) != 0)
            fail("kv_ecdh (the shared secret differs from OpenSSL's)", KV_OK);
        else
            atomic_fetch_add(&done_ecdh[b], 1);
        len = sizeof(out);
    }
    rc = kv_sign(k->key, KV_ALG_DEFAULT, 0, msg, sizeof(msg), out, &len);
    if (leak && !strcmp(leak, "heap")) {
        /* the control: 64 bytes per signature, never freed */
        static void *volatile last;
        last = malloc(64);
        if (last)
            memset(last, 0x5a, 64);
    }
    if (rc != KV_OK) {
        fail("kv_sign", rc);
        return;
    }
    if (atomic_fetch_add(&done_sign[b], 1) % 1000 == 0) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        bool ok = m && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, k->pub) == 1 &&
                  EVP_DigestVerify(m, out, len, msg, sizeof(msg)) == 1;
        EVP_MD_CTX_free(m);
        if (!ok)
            fail("verifying a signature with OpenSSL", KV_OK);
        else
            atomic_fetch_add(&done_verify, 1);
    }
}

static void *worker(void *p)
{
    struct slice *s = p;
    int nb = 0, bs[2];

    if (have[B_SOFT])
        bs[nb++] = B_SOFT;
    if (have[B_P11])
        bs[nb++] = B_P11;
    for (long i = 0; i < s->signs; i++)
        one_op(s, bs[(i + s->thread) % nb]);
    for (long i = 0; i < s->tpm_signs; i++)
        one_op(s, B_TPM);
    return NULL;
}

static void round_run(struct slice *sl, long signs, long tpm_signs)
{
    pthread_t th[64];

    for (int t = 0; t < n_threads; t++) {
        sl[t].thread = t;
        sl[t].signs = signs / n_threads + (t < signs % n_threads);
        sl[t].tpm_signs = tpm_signs / n_threads + (t < tpm_signs % n_threads);
        if (pthread_create(&th[t], NULL, worker, &sl[t]) != 0) {
            fprintf(stderr, "kv-soak: pthread_create failed\n");
            exit(1);
        }
    }
    for (int t = 0; t < n_threads; t++)
        pthread_join(th[t], NULL);
    if (leak && !strcmp(leak, "fd") && !fopen("/dev/null", "r")) /* the control: one a round */
        exit(1);
}

/* ---- options and the table ---------------------------------------------------- */

static long number(const char *opt, const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "kv-soak: %s takes a number, not '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kv-soak -c CONF [--signs N] [--tpm-signs M] [--threads T]\n"
            "               [--backends software,pkcs11,tpm] [--rotate-every R]\n"
            "               [--reopen-every P] [--ecdh-every E] [--p11-module PATH]\n"
            "               [--rss-bound KIB] [--heap-bound KIB] [--leak heap|fd]\n");
    exit(2);
}

static void options(int argc, char **argv)
{
    static const struct option longs[] = {
        { "signs", required_argument, NULL, 'n' },
        { "tpm-signs", required_argument, NULL, 'm' },
        { "threads", required_argument, NULL, 't' },
        { "backends", required_argument, NULL, 'b' },
        { "rotate-every", required_argument, NULL, 'r' },
        { "reopen-every", required_argument, NULL, 'o' },
        { "ecdh-every", required_argument, NULL, 'e' },
        { "p11-module", required_argument, NULL, 'p' },
        { "rss-bound", required_argument, NULL, 'R' },
        { "heap-bound", required_argument, NULL, 'H' },
        { "leak", required_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "c:", longs, NULL)) != -1) {
        switch (c) {
        case 'c': conf_path = optarg; break;
        case 'n': n_signs = number("--signs", optarg); break;
        case 'm': n_tpm = number("--tpm-signs", optarg); break;
        case 't': n_threads = (int)number("--threads", optarg); break;
        case 'r': rotate_every = number("--rotate-every", optarg); break;
        case 'o': reopen_every = number("--reopen-every", optarg); break;
        case 'e': ecdh_every = number("--ecdh-every", optarg); break;
        case 'p': p11_module = optarg; break;
        case 'R': rss_bound = number("--rss-bound", optarg); break;
        case 'H': heap_bound = number("--heap-bound", optarg); break;
        case 'L': leak = optarg; break;
        case 'b': {
            char *list = strdup(optarg), *save = NULL;
            memset(wanted, 0, sizeof(wanted));
            for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                int b = 0;
                while (b < NB && strcmp(w, backend_names[b]))
                    b++;
                if (b == NB) {
                    fprintf(stderr, "kv-soak: unknown backend '%s'\n", w);
                    exit(2);
                }
                wanted[b] = true;
            }
            free(list);
            break;
        }
        default: usage();
        }
    }
    if (!conf_path || optind != argc || n_threads < 1 || n_threads > 64 || n_signs < ROUNDS)
        usage();
    if (leak && strcmp(leak, "heap") && strcmp(leak, "fd"))
        usage();
    if (rotate_every < 0)
        rotate_every = n_signs / 10;
    if (reopen_every < 0)
        reopen_every = n_signs / 4;
}

static void make_peer(void)
{
    unsigned char *p = peer_der;
    int len;

    peer = EVP_EC_gen("P-256");
    len = peer ? i2d_PUBKEY(peer, NULL) : -1;
    if (len <= 0 || (size_t)len > sizeof(peer_der) || i2d_PUBKEY(peer, &p) != len) {
        fprintf(stderr, "kv-soak: cannot make the ECDH peer\n");
        exit(1);
    }
    peer_der_len = (size_t)len;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const char *const pct[] = { "10%", "20%", "30%", "40%", "50%",
                                       "60%", "70%", "80%", "90%", "100%" };
    struct slice sl[64] = { 0 };
    long per_round, tpm_per_round, signed_so_far = 0, next_rotate, next_reopen;
    const struct sample *base, *end;
    long grow_rss = 0, grow_heap = 0, grow_fds = 0, grow_sess = 0, sess_base;
    double t0;
    bool ok, bounded;

    options(argc, argv);
    make_peer();
    open_ctx(true);
    if (!have[B_TPM])
        n_tpm = 0;
    per_round = n_signs / ROUNDS;
    tpm_per_round = n_tpm / ROUNDS;
    next_rotate = rotate_every ? rotate_every : -1;
    next_reopen = reopen_every ? reopen_every : -1;
    printf("# kv-soak: %ld signs over%s%s, %ld on the TPM, %d threads; ECDH every %ld "
           "signs; rotate every %ld, reopen every %ld signs\n",
           per_round * ROUNDS, have[B_SOFT] ? " software" : "", have[B_P11] ? " pkcs11" : "",
           tpm_per_round * ROUNDS, n_threads, ecdh_every, rotate_every, reopen_every);
    fflush(stdout);
    sample("start", 0);
    t0 = now();
    for (int r = 1; r <= ROUNDS; r++) {
        round_run(sl, per_round, tpm_per_round);
        signed_so_far += per_round;
        if (next_rotate > 0 && signed_so_far >= next_rotate) {
            rotate_all();
            next_rotate += rotate_every;
        }
        if (next_reopen > 0 && signed_so_far >= next_reopen && r < ROUNDS) {
            close_ctx();
            open_ctx(false);
            reopens++;
            next_reopen += reopen_every;
        }
        if (r % 10 == 0)
            sample(pct[r / 10 - 1], signed_so_far);
    }
    {
        double secs = now() - t0;
        close_ctx();
        sample("freed", signed_so_far);
        printf("# %.1f s; signs: software %ld, pkcs11 %ld, tpm %ld; ECDH: software %ld, pkcs11 "
               "%ld, tpm %ld; %ld signatures verified; %ld rotations (%ld versions pruned), "
               "%ld reopens; %ld failures\n",
               secs, atomic_load(&done_sign[B_SOFT]), atomic_load(&done_sign[B_P11]),
               atomic_load(&done_sign[B_TPM]), atomic_load(&done_ecdh[B_SOFT]),
               atomic_load(&done_ecdh[B_P11]), atomic_load(&done_ecdh[B_TPM]),
               atomic_load(&done_verify), rotations, destroyed, reopens, atomic_load(&failures));
    }
    printf("%-6s %9s %9s %9s %5s %9s %11s\n", "point", "signs", "rss_kib", "heap_kib", "fds",
           "sessions", "max_handle");
    for (int i = 0; i < n_samples; i++)
        printf("%-6s %9ld %9ld %9ld %5ld %9ld %11ld\n", samples[i].label, samples[i].signs,
               samples[i].rss_kib, samples[i].heap_kib, samples[i].fds, samples[i].sessions,
               samples[i].max_handle);
    /* growth after warm-up: the largest figure from 10% to 100% against 10% */
    base = &samples[1];
    end = &samples[n_samples - 2];
    sess_base = base->sessions > n_threads ? base->sessions : n_threads;
    for (const struct sample *s = base; s <= end; s++) {
        if (s->rss_kib - base->rss_kib > grow_rss)
            grow_rss = s->rss_kib - base->rss_kib;
        if (s->heap_kib - base->heap_kib > grow_heap)
            grow_heap = s->heap_kib - base->heap_kib;
        if (s->fds - base->fds > grow_fds)
            grow_fds = s->fds - base->fds;
        /* the session pool grows to one session per thread signing at the
         * same moment; on a loaded machine two threads may not overlap before
         * the 10% sample (seen once: 1 session there, 2 later), so growth
         * counts from that working size; a leak (a session a round) goes
         * past it within a few rounds */
        if (s->sessions - sess_base > grow_sess)
            grow_sess = s->sessions - sess_base;
    }
    bounded = memory_bounded();
    ok = atomic_load(&failures) == 0 && grow_fds == 0 && grow_sess == 0 &&
         (!bounded || (grow_rss <= rss_bound && grow_heap <= heap_bound));
    if (bounded)
        printf("# growth after the 10%% sample: rss %+ld KiB (bound %ld), heap %+ld KiB (bound "
               "%ld), fds %+ld (bound 0), sessions %+ld past %ld (bound 0): %s\n",
               grow_rss, rss_bound, grow_heap, heap_bound, grow_fds, grow_sess, sess_base,
               ok ? "PASS" : "FAIL");
    else
        printf("# growth after the 10%% sample: rss %+ld KiB, heap %+ld KiB (a sanitizer's "
               "or valgrind's allocator: not bounded), fds %+ld (bound 0), sessions %+ld "
               "past %ld (bound 0): %s\n",
               grow_rss, grow_heap, grow_fds, grow_sess, sess_base, ok ? "PASS" : "FAIL");
    EVP_PKEY_free(peer);
    return ok ? 0 : 1;
}
