/*
 * kv-bench - what a libkeyvault operation costs, as a ratio to the raw
 * backend measured in the same run on the same machine.
 *
 *   kv-bench -c CONF [--backends software,pkcs11,tpm] [--threads 1,2,4,8]
 *            [--seconds S] [--keys 1,100,1000,10000] [--p11-keys 1,100,1000]
 *            [--json FILE] [--plot FILE] [--no-scale] [--reps 5]
 *            [--tcti TCTI] [--p11-module PATH --p11-token LABEL --p11-pin-file FILE]
 *
 * It sees libkeyvault as applications do: keyvault.h and the shared library.
 * What its raw loops need (the TCTI, the module, token and PIN) comes from
 * its own options, the same settings as in CONF.
 *
 * For each backend the configuration makes available it measures sign
 * (ECDSA P-256, P-384, RSA-2048 PSS, Ed25519 where offered) and ECDH P-256
 * at each thread count, through libkeyvault and through the raw backend, in
 * turn five times (--reps), which goes first alternating (medians are
 * reported, the ratio being the median of the ratios of side-by-side runs):
 *   software  OpenSSL EVP_DigestSign / EVP_PKEY_derive on a key of the same type
 *   pkcs11    C_SignInit + C_Sign (C_DeriveKey) on the same token key, one
 *             pre-opened, logged-in session per thread
 *   tpm       on the same key file, loaded once by this program through ESAPI,
 *             under a mutex: Esys_Sign with ESYS_TR_PASSWORD (no session), and
 *             Esys_ECDH_ZGen in a salted HMAC session with parameter
 *             encryption, as libkeyvault authorises each of them
 * Hardware backends are given the digest (KV_SIGN_PREHASHED) as their raw
 * loops are; the software backend hashes the message on both sides.
 * Then the scale run: sign with 1, 100, 1,000, 10,000 keys present in the
 * soft store and the token, raw reference at each count, and key-open
 * latency. Also: TPM commands per operation and how many of them ran in
 * the salted session (kv_ctx_backend_stat), this process's CPU time per
 * operation (getrusage: what the library and the TSS cost, apart from the
 * TPM and the scheduler), peak RSS and heap allocations per operation (a
 * counting malloc in this binary).
 *
 * --attest (a tpm backend in the configuration): TPM commands per kv_attest
 * after warm-up, and kv_evidence_verify on that real document per CPU second
 * of one thread against the raw loop of the three signature checks it
 * contains (same keys, same data), as a cost ratio. --attest-count N runs
 * one side N times without timing, for callgrind (bench/run.sh attest-count).
 *
 * --audit FILE: sign (ECDSA P-256; the software store, and a token when
 * CONF has one and --backends asks for pkcs11) with the audit file sink on
 * (CONF plus [audit] file = FILE, buffered, then flush = record) against
 * the same context configuration without it, side by side as above; the
 * ratio is audit-on / audit-off (bench/run.sh audit). --audit-count N signs N
 * times with the sink on (--audit-off: the same context without it) and no
 * timing, for callgrind (bench/run.sh audit-count).
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyvault.h"
#ifdef KV_WITH_PKCS11
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#endif
#ifdef KV_WITH_TPM
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>
#endif

/* ---- a counting allocator ---------------------------------------------------
 * malloc and friends defined in the executable take the place of glibc's for
 * every library of the process; they count, then call glibc's own. Left out
 * of sanitizer builds, whose allocator must stay in charge. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static atomic_ulong n_allocs;
#define ALLOC_COUNTING 1
#define EXPORT __attribute__((visibility("default")))
EXPORT void *malloc(size_t n);
EXPORT void *calloc(size_t a, size_t b);
EXPORT void *realloc(void *p, size_t n);
EXPORT void free(void *p);
void *malloc(size_t n)
{
    atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}
void free(void *p)
{
    __libc_free(p);
}
static unsigned long allocs(void)
{
    return atomic_load(&n_allocs);
}
#else
#define ALLOC_COUNTING 0
static unsigned long allocs(void)
{
    return 0;
}
#endif

/* ---- options --------------------------------------------------------------- */

static const char *conf_path;
static int threads_list[8] = { 1, 2, 4, 8 };
static int n_threads = 4;
static long keys_list[8] = { 1, 100, 1000, 10000 };
static int n_keys = 4;
/* SoftHSM's file store makes each new object cost more than the last:
 * 1,000 token keys take minutes, 10,000 hours. */
static long p11_keys_list[8] = { 1, 100, 1000 };
static int n_p11_keys = 3;
static double seconds = 1.0;
static bool want[3] = { true, true, true }; /* software, pkcs11, tpm */
static json_t *results;
static FILE *plot;
static bool in_main_table; /* the per-thread table (plotted), not the scale run */
/* the raw loops' settings */
static const char *opt_tcti, *opt_p11_module, *opt_p11_token, *opt_p11_pin_file;

static const unsigned char msg[32] = "kv-bench message: 32 bytes long";
static unsigned char digest[32];

static _Noreturn void die(const char *what, kv_ctx *ctx)
{
    fprintf(stderr, "kv-bench: %s: %s\n", what, ctx ? kv_errmsg(ctx) : "failed");
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the measuring loop -------------------------------------------------------- */

typedef int (*op_fn)(void *arg, int thread);

#define LAT_CAP 200000

struct run {
    op_fn fn;
    void *arg;
    int nthreads;
    double deadline;
    pthread_barrier_t start;
    atomic_int errors;
};

struct worker {
    struct run *run;
    int id;
    unsigned long ops;
    float *lat; /* microseconds */
    size_t nlat;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct run *r = w->run;

    pthread_barrier_wait(&r->start);
    for (;;) {
        double t0 = now(), t1;
        if (t0 >= r->deadline)
            break;
        if (r->fn(r->arg, w->id) != 0) {
            atomic_fetch_add(&r->errors, 1);
            break;
        }
        t1 = now();
        w->ops++;
        if (w->nlat < LAT_CAP)
            w->lat[w->nlat++] = (float)((t1 - t0) * 1e6);
    }
    return NULL;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double ops_per_s, p50_us, p99_us, allocs_per_op;
    double cpu_us_per_op; /* this process's CPU time (all threads), per operation */
    double ratio; /* on a kv result: the median of kv/raw over adjacent pairs */
};

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static struct result measure(op_fn fn, void *arg, int nthreads)
{
    struct run r = { .fn = fn, .arg = arg, .nthreads = nthreads };
    struct worker *w = calloc((size_t)nthreads, sizeof(*w));
    pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
    struct result res = { 0, 0, 0, 0, 0, 0 };
    unsigned long total = 0, a0;
    size_t nlat = 0;
    float *all;
    double t0, elapsed, cpu0;

    for (int i = 0; i < 3; i++) /* warm-up: loads, sessions, caches */
        if (fn(arg, 0) != 0) {
            fprintf(stderr, "kv-bench: warm-up failed\n");
            exit(1);
        }
    pthread_barrier_init(&r.start, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        w[i] = (struct worker){ .run = &r, .id = i, .lat = malloc(LAT_CAP * sizeof(float)) };
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    a0 = allocs();
    cpu0 = cpu_seconds();
    t0 = now();
    r.deadline = t0 + seconds;
    pthread_barrier_wait(&r.start);
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].ops;
        nlat += w[i].nlat;
    }
    elapsed = now() - t0;
    res.cpu_us_per_op = total ? (cpu_seconds() - cpu0) * 1e6 / (double)total : NAN;
    if (atomic_load(&r.errors)) {
        fprintf(stderr, "kv-bench: an operation failed during measurement\n");
        exit(1);
    }
    res.allocs_per_op = ALLOC_COUNTING && total ? (double)(allocs() - a0) / (double)total : NAN;
    all = malloc((nlat ? nlat : 1) * sizeof(float));
    nlat = 0;
    for (int i = 0; i < nthreads; i++) {
        memcpy(all + nlat, w[i].lat, w[i].nlat * sizeof(float));
        nlat += w[i].nlat;
        free(w[i].lat);
    }
    qsort(all, nlat, sizeof(float), cmp_float);
    res.ops_per_s = (double)total / elapsed;
    res.p50_us = nlat ? all[nlat / 2] : 0;
    res.p99_us = nlat ? all[(size_t)((double)nlat * 0.99)] : 0;
    free(all);
    free(w);
    free(th);
    pthread_barrier_destroy(&r.start);
    return res;
}

static void report(const char *backend, const char *op, int nthreads, long nkeys,
                   struct result kv, struct result raw, double tpm_cmds, double tpm_sess)
{
    double ratio = kv.ratio;
    json_t *row;

    printf("%-9s %-15s %4d %6ld %11.0f %11.0f %6.3f %8.1f %8.1f %8.1f %8.1f %6.1f %6.1f",
           backend, op, nthreads, nkeys, kv.ops_per_s, raw.ops_per_s, ratio, kv.p50_us, kv.p99_us,
           raw.p50_us, raw.p99_us, kv.allocs_per_op, raw.allocs_per_op);
    printf(" %7.1f %7.1f", kv.cpu_us_per_op, raw.cpu_us_per_op);
    if (tpm_cmds >= 0)
        printf("  tpm-cmds/op %.2f (in session %.2f)", tpm_cmds, tpm_sess);
    printf("\n");
    fflush(stdout);
    row = json_pack("{s:s, s:s, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "backend", backend,
                    "op", op, "threads", nthreads, "keys", (json_int_t)nkeys, "kv_ops_per_s",
                    kv.ops_per_s, "raw_ops_per_s", raw.ops_per_s, "ratio", ratio, "kv_p50_us",
                    kv.p50_us, "kv_p99_us", kv.p99_us, "raw_p50_us", raw.p50_us, "raw_p99_us",
                    raw.p99_us);
    json_object_set_new(row, "kv_cpu_us_per_op", json_real(kv.cpu_us_per_op));
    json_object_set_new(row, "raw_cpu_us_per_op", json_real(raw.cpu_us_per_op));
    if (!isnan(kv.allocs_per_op)) {
        json_object_set_new(row, "kv_allocs_per_op", json_real(kv.allocs_per_op));
        json_object_set_new(row, "raw_allocs_per_op", json_real(raw.allocs_per_op));
    }
    if (tpm_cmds >= 0) {
        json_object_set_new(row, "tpm_commands_per_op", json_real(tpm_cmds));
        json_object_set_new(row, "tpm_session_commands_per_op", json_real(tpm_sess));
    }
    json_array_append_new(results, row);
    if (plot && in_main_table)
        fprintf(plot, "%s %s %d %.1f %.1f\n", backend, op, nthreads, kv.ops_per_s, raw.ops_per_s);
}

static void header(void)
{
    printf("%-9s %-15s %4s %6s %11s %11s %6s %8s %8s %8s %8s %6s %6s %7s %7s\n", "backend", "op",
           "thr", "keys", "kv ops/s", "raw ops/s", "ratio", "kv p50", "kv p99", "raw p50",
           "raw p99", "kv al", "raw al", "kv cpu", "raw cpu");
    printf("%-9s %-15s %4s %6s %11s %11s %6s %8s %8s %8s %8s %6s %6s %7s %7s\n", "", "", "", "",
           "", "", "kv/raw", "us", "us", "us", "us", "/op", "/op", "us/op", "us/op");
}

/* ---- libkeyvault operations ----------------------------------------------------- */

struct bench_op {
    kv_key *key;
    unsigned flags;
    const unsigned char *in;
    size_t inlen;
    unsigned char peer[200];
    size_t peerlen;
    bool ecdh;
};

static int kv_run(void *p, int thread)
{
    struct bench_op *o = p;
    unsigned char out[600];
    size_t len = sizeof(out);

    (void)thread;
    if (o->ecdh)
        return kv_ecdh(o->key, o->peer, o->peerlen, out, &len) != KV_OK;
    return kv_sign(o->key, KV_ALG_DEFAULT, o->flags, o->in, o->inlen, out, &len) != KV_OK;
}

static kv_key *kv_make(kv_ctx *ctx, const char *backend, const char *name, kv_key_type type)
{
    kv_key *key = NULL;
    kv_rc rc = kv_key_open(ctx, name, &key);

    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_key_generate(ctx, name, type, backend, &key);
    if (rc != KV_OK)
        return NULL;
    return key;
}

static const struct {
    const char *op;
    kv_key_type type;
    bool ecdh;
} ops[] = {
    { "sign-ec-p256", KV_KEY_EC_P256, false },
    { "sign-ec-p384", KV_KEY_EC_P384, false },
    { "sign-rsa2048-pss", KV_KEY_RSA_2048, false },
    { "sign-ed25519", KV_KEY_ED25519, false },
    { "ecdh-p256", KV_KEY_EC_P256, true },
};

/* ---- raw OpenSSL -------------------------------------------------------------- */

struct raw_ossl {
    EVP_PKEY *key;
    kv_key_type type;
    bool ecdh;
    const unsigned char *peer_der;
    size_t peer_len;
};

static int ossl_run(void *p, int thread)
{
    struct raw_ossl *o = p;
    unsigned char out[600];
    size_t len = sizeof(out);
    int ok;

    (void)thread;
    if (o->ecdh) {
        /* the peer arrives as bytes, as it does for libkeyvault */
        const unsigned char *pp = o->peer_der;
        EVP_PKEY *peer = d2i_PUBKEY(NULL, &pp, (long)o->peer_len);
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(o->key, NULL);
        ok = peer && c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, peer) == 1 &&
             EVP_PKEY_derive(c, out, &len) == 1;
        EVP_PKEY_CTX_free(c);
        EVP_PKEY_free(peer);
        return !ok;
    }
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    const char *md = o->type == KV_KEY_ED25519 ? NULL : o->type == KV_KEY_EC_P384 ? "SHA384"
                                                                                  : "SHA256";
    ok = m && EVP_DigestSignInit_ex(m, &pc, md, NULL, NULL, o->key, NULL) == 1;
    if (ok && o->type == KV_KEY_RSA_2048)
        ok = EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) == 1;
    ok = ok && EVP_DigestSign(m, out, &len, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(m);
    return !ok;
}

static EVP_PKEY *ossl_key(kv_key_type type)
{
    switch (type) {
    case KV_KEY_EC_P256: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    case KV_KEY_EC_P384: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    case KV_KEY_RSA_2048: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    default: return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }
}

/* ---- raw PKCS#11 ----------------------------------------------------------------- */

#ifdef KV_WITH_PKCS11
struct raw_p11 {
    CK_FUNCTION_LIST *f;
    CK_SESSION_HANDLE sess[64];
    CK_OBJECT_HANDLE key[64];
    CK_MECHANISM mech;
    const unsigned char *in;
    size_t inlen;
    unsigned char point[100];
    size_t pointlen;
    CK_ULONG field;
    bool ecdh;
};

static int p11_run(void *p, int thread)
{
    struct raw_p11 *r = p;
    CK_SESSION_HANDLE h = r->sess[thread];
    unsigned char out[600];
    CK_ULONG len = sizeof(out);

    if (r->ecdh) {
        CK_ECDH1_DERIVE_PARAMS prm = { CKD_NULL, 0, NULL, r->pointlen, r->point };
        CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &prm, sizeof(prm) };
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE t[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_KEY_TYPE, &kt, sizeof(kt) },
                             { CKA_TOKEN, &no, sizeof(no) }, { CKA_SENSITIVE, &no, sizeof(no) },
                             { CKA_EXTRACTABLE, &yes, sizeof(yes) },
                             { CKA_VALUE_LEN, &r->field, sizeof(r->field) } };
        CK_OBJECT_HANDLE s;
        CK_ATTRIBUTE v = { CKA_VALUE, out, len };
        if (r->f->C_DeriveKey(h, &mech, r->key[thread], t, 6, &s) != CKR_OK)
            return 1;
        CK_RV rv = r->f->C_GetAttributeValue(h, s, &v, 1);
        r->f->C_DestroyObject(h, s);
        return rv != CKR_OK;
    }
    if (r->f->C_SignInit(h, &r->mech, r->key[thread]) != CKR_OK)
        return 1;
    return r->f->C_Sign(h, (CK_BYTE_PTR)r->in, r->inlen, out, &len) != CKR_OK;
}

/* Pre-opened, logged-in sessions and the key's handle for each thread. */
/* The PIN: the first line of --p11-pin-file. */
static char *read_pin(void)
{
    char buf[256];
    FILE *f;
    char *pin = NULL;

    if (!opt_p11_pin_file)
        return NULL;
    f = fopen(opt_p11_pin_file, "r");
    if (!f || !fgets(buf, sizeof(buf), f))
        die("reading --p11-pin-file", NULL);
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    pin = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!pin)
        die("out of memory", NULL);
    return pin;
}

static void p11_open(struct raw_p11 *r, const char *label, int nthreads)
{
    const char *token = opt_p11_token;
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_SLOT_ID slot = 0;
    char *pin = NULL;

    if (!opt_p11_module || !opt_p11_token)
        die("the raw PKCS#11 loop needs --p11-module and --p11-token", NULL);
    if (!r->f) {
        r->f = p11_kit_module_load(opt_p11_module, 0);
        if (!r->f || p11_kit_module_initialize(r->f) != CKR_OK)
            die("loading the PKCS#11 module for the raw loop", NULL);
    }
    r->f->C_GetSlotList(CK_TRUE, slots, &n);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (r->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            !strncmp((char *)ti.label, token, strlen(token)))
            slot = slots[i];
    }
    pin = read_pin();
    for (int t = 0; t < nthreads; t++) {
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) },
                                { CKA_LABEL, (void *)label, strlen(label) } };
        CK_ULONG count = 0;
        if (r->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &r->sess[t]) != CKR_OK)
            die("C_OpenSession for the raw loop", NULL);
        if (t == 0 && pin)
            r->f->C_Login(r->sess[t], CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
        CK_RV rv = r->f->C_FindObjectsInit(r->sess[t], tmpl, 2);
        if (rv == CKR_OK)
            rv = r->f->C_FindObjects(r->sess[t], &r->key[t], 1, &count);
        r->f->C_FindObjectsFinal(r->sess[t]);
        if (rv != CKR_OK || count != 1) {
            fprintf(stderr, "kv-bench: raw loop: key '%s' on slot %lu: rv 0x%lx, %lu found\n",
                    label, (unsigned long)slot, (unsigned long)rv, (unsigned long)count);
            exit(1);
        }
    }
    if (pin) {
        OPENSSL_cleanse(pin, strlen(pin));
        free(pin);
    }
}

static void p11_close(struct raw_p11 *r, int nthreads)
{
    for (int t = 0; t < nthreads; t++)
        r->f->C_CloseSession(r->sess[t]);
}
#endif

/* ---- raw ESYS ------------------------------------------------------------------- */

#ifdef KV_WITH_TPM
struct raw_tpm {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR primary, key, session, auth;
    pthread_mutex_t lock;
    TPMI_ALG_HASH hash;
    TPMI_ALG_SIG_SCHEME scheme;
    TPM2B_DIGEST digest;
    TPM2B_ECC_POINT point;
    bool ecdh;
};

static int tpm_raw_run(void *p, int thread)
{
    struct raw_tpm *r = p;
    TSS2_RC rc;

    (void)thread;
    pthread_mutex_lock(&r->lock);
    if (r->ecdh) {
        TPM2B_ECC_POINT *z = NULL;
        rc = Esys_ECDH_ZGen(r->esys, r->key, r->auth, ESYS_TR_NONE, ESYS_TR_NONE, &r->point, &z);
        Esys_Free(z);
    } else {
        TPMT_SIG_SCHEME s = { .scheme = r->scheme, .details.any.hashAlg = r->hash };
        TPMT_TK_HASHCHECK chk = { .tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL };
        TPMT_SIGNATURE *sig = NULL;
        rc = Esys_Sign(r->esys, r->key, r->auth, ESYS_TR_NONE, ESYS_TR_NONE, &r->digest, &s, &chk,
                       &sig);
        Esys_Free(sig);
    }
    pthread_mutex_unlock(&r->lock);
    return rc != TSS2_RC_SUCCESS;
}

/* The TPM blobs of a key file (TSS2 PRIVATE KEY: type, [0] emptyAuth,
 * parent, pubkey, privkey): its two OCTET STRINGs, read with OpenSSL's DER
 * parser and unmarshalled by tss2-mu. */
static void tss2_key_read(const char *path, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv)
{
    FILE *f = fopen(path, "r");
    char *name = NULL, *hdr = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    long len = 0;
    ASN1_SEQUENCE_ANY *seq = NULL;
    int octets = 0;

    if (!f || PEM_read(f, &name, &hdr, &der, &len) != 1 || strcmp(name, "TSS2 PRIVATE KEY"))
        die("reading the key file for the raw TPM loop", NULL);
    fclose(f);
    p = der;
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, len);
    for (int i = 0; seq && i < sk_ASN1_TYPE_num(seq); i++) {
        const ASN1_TYPE *t = sk_ASN1_TYPE_value(seq, i);
        const ASN1_OCTET_STRING *os;
        size_t off = 0;
        TSS2_RC rc;

        if (ASN1_TYPE_get(t) != V_ASN1_OCTET_STRING)
            continue;
        os = t->value.octet_string;
        rc = octets++ == 0 ? Tss2_MU_TPM2B_PUBLIC_Unmarshal(os->data, (size_t)os->length, &off, pub)
                           : Tss2_MU_TPM2B_PRIVATE_Unmarshal(os->data, (size_t)os->length, &off,
                                                             priv);
        if (rc != TSS2_RC_SUCCESS)
            die("unmarshalling the key file's TPM blobs", NULL);
    }
    if (octets != 2)
        die("the key file does not hold a TPM public and private blob", NULL);
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    OPENSSL_free(name);
    OPENSSL_free(hdr);
    OPENSSL_free(der);
}

/* Load libkeyvault's key file under the storage primary made from the same
 * template; sign by password, ECDH in a salted HMAC session with parameter
 * encryption, as libkeyvault does. */
static void tpm_raw_open(struct raw_tpm *r, const char *key_path, kv_key_type type)
{
    TPM2B_PUBLIC prim = { .publicArea = {
        .type = TPM2_ALG_ECC, .nameAlg = TPM2_ALG_SHA256,
        .objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
                            TPMA_OBJECT_NODA | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                            TPMA_OBJECT_SENSITIVEDATAORIGIN,
        .parameters.eccDetail = { .symmetric = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
                                                 .mode.aes = TPM2_ALG_CFB },
                                  .scheme = { .scheme = TPM2_ALG_NULL },
                                  .curveID = TPM2_ECC_NIST_P256,
                                  .kdf = { .scheme = TPM2_ALG_NULL } } } };
    TPM2B_SENSITIVE_CREATE sens = { 0 };
    TPM2B_DATA outside = { 0 };
    TPML_PCR_SELECTION pcrs = { 0 };
    TPM2B_PUBLIC pub = { 0 };
    TPM2B_PRIVATE priv = { 0 };
    TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB };

    if (!opt_tcti)
        die("the raw TPM loop needs --tcti", NULL);
    tss2_key_read(key_path, &pub, &priv);
    r->scheme = type == KV_KEY_RSA_2048 ? TPM2_ALG_RSAPSS : TPM2_ALG_ECDSA;
    r->hash = type == KV_KEY_EC_P384 ? TPM2_ALG_SHA384 : TPM2_ALG_SHA256;
    r->digest.size = type == KV_KEY_EC_P384 ? 48 : 32;
    memset(r->digest.buffer, 0x5a, r->digest.size);
    r->session = ESYS_TR_NONE;
    pthread_mutex_init(&r->lock, NULL);
    if (Tss2_TctiLdr_Initialize(opt_tcti, &r->tcti) || Esys_Initialize(&r->esys, r->tcti, NULL) ||
        Esys_CreatePrimary(r->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &sens, &prim, &outside, &pcrs, &r->primary, NULL, NULL, NULL, NULL) ||
        (r->ecdh &&
         (Esys_StartAuthSession(r->esys, r->primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256,
                                &r->session) ||
          Esys_TRSess_SetAttributes(r->esys, r->session,
                                    TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_DECRYPT |
                                        TPMA_SESSION_ENCRYPT, 0xff))) ||
        Esys_Load(r->esys, r->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv, &pub,
                  &r->key))
        die("setting up the raw ESYS loop", NULL);
    Esys_FlushContext(r->esys, r->primary);
    r->auth = r->ecdh ? r->session : ESYS_TR_PASSWORD;
    /* a peer point: the key's own public point is on the curve */
    if (r->ecdh)
        r->point.point = pub.publicArea.unique.ecc;
}

static void tpm_raw_close(struct raw_tpm *r)
{
    Esys_FlushContext(r->esys, r->key);
    if (r->session != ESYS_TR_NONE)
        Esys_FlushContext(r->esys, r->session);
    Esys_Finalize(&r->esys);
    Tss2_TctiLdr_Finalize(&r->tcti);
    pthread_mutex_destroy(&r->lock);
}
#endif

/* ---- one backend ------------------------------------------------------------------ */

#define REPS_MAX 15
static int reps = 5; /* --reps */

static int cmp_result(const void *a, const void *b)
{
    double x = ((const struct result *)a)->ops_per_s, y = ((const struct result *)b)->ops_per_s;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Medians of `reps` interleaved runs; the ratio is the median of the ratios
 * of runs made side by side, which a machine's slow spells affect alike. */
static void medians(struct result *kv, struct result *raw, struct result *kv_out,
                    struct result *raw_out)
{
    double ratios[REPS_MAX], kcpu[REPS_MAX], rcpu[REPS_MAX];

    for (int i = 0; i < reps; i++) {
        ratios[i] = raw[i].ops_per_s > 0 ? kv[i].ops_per_s / raw[i].ops_per_s : 0;
        kcpu[i] = kv[i].cpu_us_per_op;
        rcpu[i] = raw[i].cpu_us_per_op;
    }
    qsort(ratios, reps, sizeof(double), cmp_double);
    qsort(kcpu, reps, sizeof(double), cmp_double);
    qsort(rcpu, reps, sizeof(double), cmp_double);
    qsort(kv, reps, sizeof(*kv), cmp_result);
    qsort(raw, reps, sizeof(*raw), cmp_result);
    *kv_out = kv[reps / 2];
    *raw_out = raw[reps / 2];
    kv_out->ratio = ratios[reps / 2];
    /* CPU per operation: each side's own median */
    kv_out->cpu_us_per_op = kcpu[reps / 2];
    raw_out->cpu_us_per_op = rcpu[reps / 2];
}

/* The raw backend's figure for ops[o] at nt threads. For the TPM, the
 * context's connection closes while the raw loop runs (swtpm serves one
 * client) and kop->key is opened again afterwards. */
static struct result measure_raw(const char *backend, size_t o, int nt, struct bench_op *kopp,
                                 kv_ctx **ctxp)
{
    struct bench_op kop = *kopp;
    kv_ctx *ctx = *ctxp;
    struct result raw = { 0, 0, 0, 0, 0, 0 };
    char name[64];

    (void)name;
    if (!strcmp(backend, "software")) {
        struct raw_ossl r = { ossl_key(ops[o].type), ops[o].type, ops[o].ecdh, kop.peer,
                              kop.peerlen };
        raw = measure(ossl_run, &r, nt);
        EVP_PKEY_free(r.key);
    }
#ifdef KV_WITH_PKCS11
    else if (!strcmp(backend, "pkcs11")) {
        static struct raw_p11 r;
        CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
        r.in = kop.in;
        r.inlen = kop.inlen;
        r.ecdh = ops[o].ecdh;
        r.field = 32;
        r.mech = (CK_MECHANISM){ CKM_ECDSA, NULL, 0 };
        if (ops[o].type == KV_KEY_RSA_2048)
            r.mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &pss, sizeof(pss) };
        if (ops[o].type == KV_KEY_ED25519)
            r.mech = (CK_MECHANISM){ CKM_EDDSA, NULL, 0 };
        if (r.ecdh) {
            const unsigned char *pp = kop.peer;
            EVP_PKEY *pk = d2i_PUBKEY(NULL, &pp, (long)kop.peerlen);
            r.pointlen = 0;
            EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, r.point,
                                            sizeof(r.point), &r.pointlen);
            EVP_PKEY_free(pk);
        }
        snprintf(name, sizeof(name), "bench-%s-%s", backend, ops[o].op);
        p11_open(&r, name, nt);
        raw = measure(p11_run, &r, nt);
        p11_close(&r, nt);
    }
#endif
#ifdef KV_WITH_TPM
    else {
        /* swtpm serves one client: our connection closes while the raw loop runs */
        struct raw_tpm r = { .ecdh = ops[o].ecdh };
        kv_key_info info;
        char path[4096];
        if (kv_key_get_info(kop.key, &info) != KV_OK || strncmp(info.uri, "tpm2:file=", 10))
            die("the TPM key's file", ctx);
        snprintf(path, sizeof(path), "%s", info.uri + 10);
        kv_key_free(kop.key);
        kv_ctx_free(ctx);
        tpm_raw_open(&r, path, ops[o].type);
        raw = measure(tpm_raw_run, &r, nt);
        tpm_raw_close(&r);
        if (kv_ctx_new(&ctx, conf_path) != KV_OK)
            die("kv_ctx_new", NULL);
        snprintf(name, sizeof(name), "bench-%s-%s", backend, ops[o].op);
        kop.key = kv_make(ctx, backend, name, ops[o].type);
    }
#else
    else
        raw = measure(kv_run, &kop, nt);
#endif
    *kopp = kop;
    *ctxp = ctx;
    return raw;
}



static bool backend_available(kv_ctx *ctx, const char *name)
{
    const char *n, *why;
    int avail;

    for (size_t i = 0; kv_ctx_backend(ctx, i, &n, &avail, &why) == KV_OK; i++)
        if (!strcmp(n, name))
            return avail;
    return false;
}

static void bench_backend(const char *backend)
{
    kv_ctx *ctx = NULL;

    if (kv_ctx_new(&ctx, conf_path) != KV_OK)
        die("kv_ctx_new", NULL);
    if (!backend_available(ctx, backend)) {
        printf("# %s: not available in this configuration, skipped\n", backend);
        kv_ctx_free(ctx);
        return;
    }
    for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++) {
        bool hw = strcmp(backend, "software") != 0;
        char name[64];
        struct bench_op kop = { 0 };
        kv_key *peer;

        snprintf(name, sizeof(name), "bench-%s-%s", backend, ops[o].op);
        kop.key = kv_make(ctx, backend, name, ops[o].type);
        if (!kop.key) {
            printf("# %s %s: %s\n", backend, ops[o].op, kv_errmsg(ctx));
            continue;
        }
        kop.ecdh = ops[o].ecdh;
        /* hardware: the digest, as the raw loops sign; software: the message */
        kop.flags = hw && ops[o].type != KV_KEY_ED25519 ? KV_SIGN_PREHASHED : 0;
        kop.in = kop.flags ? digest : msg;
        kop.inlen = ops[o].type == KV_KEY_EC_P384 && kop.flags ? 48 : 32;
        static unsigned char d48[48];
        if (kop.inlen == 48)
            kop.in = d48;
        if (kop.ecdh) {
            snprintf(name, sizeof(name), "bench-%s-peer", backend);
            peer = kv_make(ctx, backend, name, KV_KEY_EC_P256);
            kop.peerlen = sizeof(kop.peer);
            if (!peer || kv_key_public_der(peer, kop.peer, &kop.peerlen) != KV_OK)
                die("peer key", ctx);
            kv_key_free(peer);
        }
        for (int t = 0; t < n_threads; t++) {
            int nt = threads_list[t];
            struct result kv, raw, kvr[REPS_MAX], rawr[REPS_MAX];
            double cmds = -1, sess = -1;

            /* kv and raw side by side, `reps` times, which goes first alternating */
            for (int rep = 0; rep < reps; rep++) {
                if (rep % 2)
                    rawr[rep] = measure_raw(backend, o, nt, &kop, &ctx);
                kvr[rep] = measure(kv_run, &kop, nt);
                if (rep % 2 == 0)
                    rawr[rep] = measure_raw(backend, o, nt, &kop, &ctx);
            }
            medians(kvr, rawr, &kv, &raw);
#ifdef KV_WITH_TPM
            if (!strcmp(backend, "tpm")) {
                /* commands per operation after warm-up, counted at the TCTI */
                uint64_t c0 = 0, c1 = 0, s0 = 0, s1 = 0;
                kv_run(&kop, 0);
                if (kv_ctx_backend_stat(ctx, "tpm", "commands", &c0) != KV_OK ||
                    kv_ctx_backend_stat(ctx, "tpm", "session_commands", &s0) != KV_OK)
                    die("kv_ctx_backend_stat", ctx);
                for (int i = 0; i < 100; i++)
                    kv_run(&kop, 0);
                if (kv_ctx_backend_stat(ctx, "tpm", "commands", &c1) != KV_OK ||
                    kv_ctx_backend_stat(ctx, "tpm", "session_commands", &s1) != KV_OK)
                    die("kv_ctx_backend_stat", ctx);
                cmds = (double)(c1 - c0) / 100.0;
                sess = (double)(s1 - s0) / 100.0;
            }
#endif
            report(backend, ops[o].op, nt, 1, kv, raw, cmds, sess);
        }
        kv_key_free(kop.key);
    }
    kv_ctx_free(ctx);
}

/* ---- the audit log's cost (--audit FILE) --------------------------------------------- */

/* The P-256 key of backend's sign runs, opened (made the first time) in
 * ctx: the software store hashes the message, hardware is given the digest,
 * as in the main table. */
static struct bench_op audit_op(kv_ctx *ctx, const char *backend)
{
    struct bench_op kop = { 0 };
    char name[64];

    snprintf(name, sizeof(name), "bench-%s-sign-ec-p256", backend);
    kop.key = kv_make(ctx, backend, name, KV_KEY_EC_P256);
    if (!kop.key)
        die("the P-256 key", ctx);
    kop.flags = strcmp(backend, "software") ? KV_SIGN_PREHASHED : 0;
    kop.in = kop.flags ? digest : msg;
    kop.inlen = 32;
    return kop;
}

/* A configuration: CONF's text plus an [audit] section writing to log. */
static char *audit_conf(const char *log, const char *flush)
{
    static char path[4200];
    FILE *in = fopen(conf_path, "r"), *out;
    char buf[4096];
    size_t n;

    snprintf(path, sizeof(path), "%s.%s.conf", log, flush);
    out = fopen(path, "w");
    if (!in || !out)
        die("writing the audit configuration", NULL);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fprintf(out, "\n[audit]\nfile = %s\nflush = %s\n", log, flush);
    fclose(in);
    fclose(out);
    return path;
}

static void bench_audit(const char *log, const char *backend)
{
    static const char *const modes[] = { "buffered", "record" };
    kv_ctx *off = NULL;
    struct bench_op kop_off;

    if (kv_ctx_new(&off, conf_path) != KV_OK)
        die("kv_ctx_new", NULL);
    if (!backend_available(off, backend)) {
        printf("# %s: not available in this configuration, skipped\n", backend);
        kv_ctx_free(off);
        return;
    }
    kop_off = audit_op(off, backend);
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        kv_ctx *on = NULL;
        struct bench_op kop_on;
        char op[64];

        unlink(log);
        if (kv_ctx_new(&on, audit_conf(log, modes[m])) != KV_OK)
            die("kv_ctx_new with [audit]", NULL);
        kop_on = audit_op(on, backend);
        snprintf(op, sizeof(op), "sign-p256+audit-%s", modes[m]);
        for (int t = 0; t < n_threads; t++) {
            int nt = threads_list[t];
            struct result a, b, ar[REPS_MAX], br[REPS_MAX];
            /* flush = record: a write and fdatasync per signature; one thread says enough */
            if (m == 1 && nt > 1)
                break;
            for (int rep = 0; rep < reps; rep++) {
                if (rep % 2)
                    br[rep] = measure(kv_run, &kop_off, nt);
                ar[rep] = measure(kv_run, &kop_on, nt);
                if (rep % 2 == 0)
                    br[rep] = measure(kv_run, &kop_off, nt);
            }
            medians(ar, br, &a, &b);
            report(backend, op, nt, 1, a, b, -1, -1);
        }
        kv_key_free(kop_on.key);
        kv_ctx_free(on);
    }
    kv_key_free(kop_off.key);
    kv_ctx_free(off);
}

/* --audit-count: n signatures, nothing timed; the context freed (its queue
 * written) before the return. */
static void bench_audit_count(const char *log, long n, bool off)
{
    kv_ctx *ctx = NULL;
    struct bench_op kop;

    unlink(log);
    if (kv_ctx_new(&ctx, off ? conf_path : audit_conf(log, "buffered")) != KV_OK)
        die("kv_ctx_new", NULL);
    kop = audit_op(ctx, "software");
    for (long i = 0; i < n; i++)
        if (kv_run(&kop, 0) != 0)
            die("kv_sign", ctx);
    kv_key_free(kop.key);
    kv_ctx_free(ctx);
}

/* ---- scale: many keys present -------------------------------------------------------- */

static void bench_scale(const char *backend)
{
    kv_ctx *ctx = NULL;
    long have = 0;

    if (kv_ctx_new(&ctx, conf_path) != KV_OK)
        die("kv_ctx_new", NULL);
    if (!backend_available(ctx, backend)) {
        kv_ctx_free(ctx);
        return;
    }
    bool p11 = !strcmp(backend, "pkcs11");
    for (int k = 0; k < (p11 ? n_p11_keys : n_keys); k++) {
        long want_keys = p11 ? p11_keys_list[k] : keys_list[k];
        char name[64];
        double t0, open_us;
        struct bench_op kop = { 0 };
        struct result kv, raw;

        t0 = now();
        for (; have < want_keys; have++) {
            kv_key *key;
            snprintf(name, sizeof(name), "scale-%s-%05ld", backend, have);
            key = kv_make(ctx, backend, name, KV_KEY_EC_P256);
            if (!key)
                die("making keys for the scale run", ctx);
            kv_key_free(key);
        }
        printf("# %s: %ld keys present (made in %.1f s)\n", backend, have, now() - t0);
        /* key-open latency: by name, keys spread over the store */
        t0 = now();
        for (int i = 0; i < 20; i++) {
            kv_key *key;
            snprintf(name, sizeof(name), "scale-%s-%05ld", backend, (have - 1) * i / 19);
            if (kv_key_open(ctx, name, &key) != KV_OK)
                die("opening a key", ctx);
            kv_key_free(key);
        }
        open_us = (now() - t0) / 20 * 1e6;
        snprintf(name, sizeof(name), "scale-%s-00000", backend);
        kop.key = kv_make(ctx, backend, name, KV_KEY_EC_P256);
        kop.flags = strcmp(backend, "software") ? KV_SIGN_PREHASHED : 0;
        kop.in = kop.flags ? digest : msg;
        kop.inlen = 32;
        struct result kvr[REPS_MAX], rawr[REPS_MAX];
        for (int rep = 0; rep < reps; rep++) {
            if (rep % 2 == 0)
                kvr[rep] = measure(kv_run, &kop, 1);
            if (!strcmp(backend, "software")) {
                struct raw_ossl r = { ossl_key(KV_KEY_EC_P256), KV_KEY_EC_P256, false, NULL, 0 };
                rawr[rep] = measure(ossl_run, &r, 1);
                EVP_PKEY_free(r.key);
            }
#ifdef KV_WITH_PKCS11
            else {
                static struct raw_p11 r;
                r.in = digest;
                r.inlen = 32;
                r.mech = (CK_MECHANISM){ CKM_ECDSA, NULL, 0 };
                p11_open(&r, name, 1);
                rawr[rep] = measure(p11_run, &r, 1);
                p11_close(&r, 1);
            }
#else
            else
                rawr[rep] = measure(kv_run, &kop, 1);
#endif
            if (rep % 2)
                kvr[rep] = measure(kv_run, &kop, 1);
        }
        medians(kvr, rawr, &kv, &raw);
        kv_key_free(kop.key);
        report(backend, "sign-ec-p256", 1, have, kv, raw, -1, -1);
        printf("# %s: key open by name with %ld keys: %.0f us\n", backend, have, open_us);
        json_array_append_new(results, json_pack("{s:s, s:s, s:I, s:f}", "backend", backend, "op",
                                                 "key-open", "keys", (json_int_t)have,
                                                 "kv_latency_us", open_us));
    }
    kv_ctx_free(ctx);
}

/* ---- evidence verification (--attest) -------------------------------------------
 * kv_evidence_verify on one real TPM document (kv_attest on the tpm backend,
 * its AK pinned by the policy), against the raw loop of the three signature
 * checks it contains, with the same keys over the same data: the proof of
 * possession by the identity key and the AK's signatures over the certify and
 * the quote (EVP_DigestVerify, SHA-256). The document's fields are read here
 * with jansson, OpenSSL's base64 and tss2-mu, outside the measured loops. */

#ifdef KV_WITH_TPM
#define POP_LABEL "keyvault-evidence-pop-v1"

struct attest_bench {
    kv_ctx *ctx;
    const char *doc;
    size_t len;
    unsigned char nonce[32];
    kv_policy *pol;
    struct {
        EVP_PKEY *key;
        unsigned char *tbs, *sig;
        size_t tbslen, siglen;
    } sv[3];
};

static int verify_run(void *p, int thread)
{
    struct attest_bench *b = p;
    kv_verdict *v = NULL;
    kv_rc rc = kv_evidence_verify(b->ctx, b->doc, b->len, b->nonce, sizeof(b->nonce), b->pol, &v);

    (void)thread;
    kv_verdict_free(v);
    return rc != KV_OK;
}

static int verify_raw_run(void *p, int thread)
{
    struct attest_bench *b = p;

    (void)thread;
    for (int i = 0; i < 3; i++) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        bool ok = m && EVP_DigestVerifyInit_ex(m, NULL, "SHA256", NULL, NULL, b->sv[i].key,
                                               NULL) == 1 &&
                  EVP_DigestVerify(m, b->sv[i].sig, b->sv[i].siglen, b->sv[i].tbs,
                                   b->sv[i].tbslen) == 1;
        EVP_MD_CTX_free(m);
        if (!ok)
            return 1;
    }
    return 0;
}

/* A base64url field of the document (by a path of members), decoded. */
static unsigned char *b64u_field(json_t *doc, const char *const *path, size_t *len)
{
    json_t *j = doc;
    const char *s;
    char *t;
    unsigned char *out;
    size_t n, pad;
    int got;

    for (; *path; path++)
        j = json_object_get(j, *path);
    if (!(s = json_string_value(j)))
        return NULL;
    n = strlen(s);
    pad = (4 - n % 4) % 4;
    if (!(t = malloc(n + pad + 1)) || !(out = OPENSSL_malloc(n / 4 * 3 + 3)))
        die("out of memory", NULL);
    for (size_t i = 0; i < n; i++)
        t[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(t + n, '=', pad);
    got = EVP_DecodeBlock(out, (unsigned char *)t, (int)(n + pad));
    free(t);
    if (got < (int)pad) {
        OPENSSL_free(out);
        return NULL;
    }
    *len = (size_t)got - pad;
    return out;
}

/* A TPMT_SIGNATURE (ECDSA) field as a DER ECDSA-Sig-Value. */
static unsigned char *tpm_sig_der(json_t *doc, const char *const *path, size_t *len)
{
    size_t n = 0, off = 0;
    unsigned char *m = b64u_field(doc, path, &n), *der = NULL;
    TPMT_SIGNATURE sig;
    ECDSA_SIG *es;
    int dl;

    if (!m || Tss2_MU_TPMT_SIGNATURE_Unmarshal(m, n, &off, &sig) != TSS2_RC_SUCCESS ||
        sig.sigAlg != TPM2_ALG_ECDSA || !(es = ECDSA_SIG_new()))
        die("the evidence's TPM signature", NULL);
    ECDSA_SIG_set0(es, BN_bin2bn(sig.signature.ecdsa.signatureR.buffer,
                                 sig.signature.ecdsa.signatureR.size, NULL),
                   BN_bin2bn(sig.signature.ecdsa.signatureS.buffer,
                             sig.signature.ecdsa.signatureS.size, NULL));
    dl = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    OPENSSL_free(m);
    *len = (size_t)dl;
    return der;
}

static EVP_PKEY *spki_key(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);

    if (!k)
        die("a public key of the evidence", NULL);
    return k;
}

/* The raw side's inputs, from the document and the AK's public key. */
static void attest_raw_setup(struct attest_bench *b, kv_ctx *ctx)
{
    static const char *const pub[] = { "key", "public", NULL };
    static const char *const popsig[] = { "pop", "signature", NULL };
    static const char *const cattest[] = { "tpm", "certify", "attest", NULL };
    static const char *const csig[] = { "tpm", "certify", "signature", NULL };
    static const char *const qattest[] = { "tpm", "quote", "attest", NULL };
    static const char *const qsig[] = { "tpm", "quote", "signature", NULL };
    json_t *doc = json_loadb(b->doc, b->len, 0, NULL), *copy;
    unsigned char ak[200], *der;
    size_t aklen = sizeof(ak), n = 0;
    unsigned int hl = 32;
    char *c;

    if (!doc || kv_tpm_ak_public(ctx, ak, &aklen) != KV_OK)
        die("the evidence or the AK", ctx);
    der = b64u_field(doc, pub, &n);
    b->sv[0].key = spki_key(der, n);
    OPENSSL_free(der);
    b->sv[1].key = spki_key(ak, aklen);
    EVP_PKEY_up_ref(b->sv[1].key);
    b->sv[2].key = b->sv[1].key;
    /* the proof of possession: label || 0x00 || SHA-256(document without pop) */
    copy = json_copy(doc);
    json_object_del(copy, "pop");
    c = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    b->sv[0].tbslen = sizeof(POP_LABEL) + 32;
    b->sv[0].tbs = OPENSSL_malloc(b->sv[0].tbslen);
    memcpy(b->sv[0].tbs, POP_LABEL, sizeof(POP_LABEL));
    EVP_Digest(c, strlen(c), b->sv[0].tbs + sizeof(POP_LABEL), &hl, EVP_sha256(), NULL);
    free(c);
    json_decref(copy);
    b->sv[0].sig = b64u_field(doc, popsig, &b->sv[0].siglen);
    b->sv[1].tbs = b64u_field(doc, cattest, &b->sv[1].tbslen);
    b->sv[1].sig = tpm_sig_der(doc, csig, &b->sv[1].siglen);
    b->sv[2].tbs = b64u_field(doc, qattest, &b->sv[2].tbslen);
    b->sv[2].sig = tpm_sig_der(doc, qsig, &b->sv[2].siglen);
    json_decref(doc);
    if (!b->sv[0].sig || !b->sv[1].tbs || !b->sv[2].tbs)
        die("the evidence's fields", NULL);
    if (verify_raw_run(b, 0) != 0)
        die("the raw signature checks of the evidence", NULL);
}

/* A policy pinning this TPM's AK, in a file of its own. */
static kv_policy *attest_policy(kv_ctx *ctx)
{
    unsigned char ak[200], pin[32];
    size_t aklen = sizeof(ak);
    unsigned int pl = 32;
    char path[] = "/tmp/kv-bench-policy.XXXXXX";
    int fd = mkstemp(path);
    FILE *f;
    kv_policy *pol = NULL;

    if (fd < 0 || !(f = fdopen(fd, "w")) || kv_tpm_ak_public(ctx, ak, &aklen) != KV_OK)
        die("the policy file", ctx);
    EVP_Digest(ak, aklen, pin, &pl, EVP_sha256(), NULL);
    fprintf(f, "[trust]\nak_pin = ");
    for (int i = 0; i < 32; i++)
        fprintf(f, "%02x", pin[i]);
    fprintf(f, "\n[evidence]\nassurance = tpm\nmax_age = 3600\n");
    fclose(f);
    if (kv_policy_load(ctx, path, &pol) != KV_OK)
        die("kv_policy_load", ctx);
    unlink(path);
    return pol;
}

/* --attest: TPM commands per kv_attest after warm-up, then verifications per
 * CPU second of one thread against the raw signature checks, side by side.
 * count >= 0 (--attest-count N): no timing, kv_evidence_verify (or with
 * raw, the raw loop) run count times more than in a run of 0, for
 * valgrind's callgrind, whose totals are exact. */
static void bench_attest(long count, bool raw_side)
{
    kv_ctx *ctx = NULL;
    kv_key *key;
    struct attest_bench b = { 0 };
    struct result kv[REPS_MAX], raw[REPS_MAX], k, r;
    uint64_t c0 = 0, c1 = 0;
    char *doc = NULL;
    const int attests = 20;

    if (kv_ctx_new(&ctx, conf_path) != KV_OK)
        die("kv_ctx_new", NULL);
    if (!backend_available(ctx, "tpm") || !(key = kv_make(ctx, "tpm", "bench-attest",
                                                          KV_KEY_EC_P256)))
        die("a TPM key for kv_attest", ctx);
    memcpy(b.nonce, digest, sizeof(b.nonce));
    for (int i = 0; i < 3; i++) { /* warm-up: the AK and the key loaded */
        kv_string_free(doc);
        if (kv_attest(key, b.nonce, sizeof(b.nonce), NULL, &doc) != KV_OK)
            die("kv_attest", ctx);
    }
    if (kv_ctx_backend_stat(ctx, "tpm", "commands", &c0) != KV_OK)
        die("kv_ctx_backend_stat", ctx);
    for (int i = 0; i < attests; i++) {
        kv_string_free(doc);
        if (kv_attest(key, b.nonce, sizeof(b.nonce), NULL, &doc) != KV_OK)
            die("kv_attest", ctx);
    }
    if (kv_ctx_backend_stat(ctx, "tpm", "commands", &c1) != KV_OK)
        die("kv_ctx_backend_stat", ctx);
    printf("# kv_attest (tpm, ec-p256, default PCRs sha256:0-7, %zu-byte document): %.2f TPM "
           "commands per call after warm-up (%d calls)\n", strlen(doc),
           (double)(c1 - c0) / attests, attests);
    b.ctx = ctx;
    b.doc = doc;
    b.len = strlen(doc);
    b.pol = attest_policy(ctx);
    attest_raw_setup(&b, ctx);
    if (verify_run(&b, 0) != 0)
        die("kv_evidence_verify on the document", ctx);
    if (count >= 0) {
        for (long i = 0; i < count; i++)
            if ((raw_side ? verify_raw_run : verify_run)(&b, 0) != 0)
                die("a verification", ctx);
        printf("# %ld %s run (no timing)\n", count,
               raw_side ? "raw loops" : "verifications");
    } else {
        for (int i = 0; i < reps; i++) {
            kv[i] = measure(verify_run, &b, 1);
            raw[i] = measure(verify_raw_run, &b, 1);
        }
        medians(kv, raw, &k, &r);
        printf("%-30s %12s %12s %8s %9s %9s\n", "evidence verification", "kv /cpu-s",
               "raw /cpu-s", "cost", "kv us/op", "raw us/op");
        printf("%-30s %12.0f %12.0f %7.2fx %9.1f %9.1f\n", "tpm ec-p256, 3 signatures",
               1e6 / k.cpu_us_per_op, 1e6 / r.cpu_us_per_op, k.ratio > 0 ? 1 / k.ratio : NAN,
               k.cpu_us_per_op, r.cpu_us_per_op);
        printf("# cost: median over %d side-by-side pairs of raw ops/s / kv ops/s (one thread; "
               "target <= 1.5x)\n", reps);
        json_array_append_new(results, json_pack("{s:s, s:f, s:f, s:f, s:f, s:f}", "op",
                                                 "evidence-verify", "kv_per_cpu_s",
                                                 1e6 / k.cpu_us_per_op, "raw_per_cpu_s",
                                                 1e6 / r.cpu_us_per_op, "cost_ratio",
                                                 k.ratio > 0 ? 1 / k.ratio : 0.0,
                                                 "tpm_commands_per_attest",
                                                 (double)(c1 - c0) / attests, "kv_allocs_per_op",
                                                 k.allocs_per_op));
    }
    for (int i = 0; i < 3; i++) {
        EVP_PKEY_free(b.sv[i].key);
        OPENSSL_free(b.sv[i].tbs);
        OPENSSL_free(b.sv[i].sig);
    }
    kv_policy_free(b.pol);
    kv_string_free(doc);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
#endif

static int parse_list(const char *s, long *out, int max)
{
    int n = 0;
    char *end;

    while (*s && n < max) {
        out[n++] = strtol(s, &end, 10);
        if (end == s || out[n - 1] <= 0)
            return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },  { "backends", required_argument, NULL, 'b' },
        { "threads", required_argument, NULL, 't' }, { "seconds", required_argument, NULL, 's' },
        { "keys", required_argument, NULL, 'k' },    { "json", required_argument, NULL, 'j' },
        { "plot", required_argument, NULL, 'p' },    { "no-scale", no_argument, NULL, 'n' },
        { "p11-keys", required_argument, NULL, 'K' },
        { "tcti", required_argument, NULL, 'T' },    { "p11-module", required_argument, NULL, 'M' },
        { "p11-token", required_argument, NULL, 'L' },
        { "p11-pin-file", required_argument, NULL, 'P' },
        { "reps", required_argument, NULL, 'R' },
        { "attest", no_argument, NULL, 'A' },
        { "attest-count", required_argument, NULL, 'C' },
        { "attest-raw", no_argument, NULL, 'W' },
        { "audit", required_argument, NULL, 'U' },
        { "audit-count", required_argument, NULL, 'N' },
        { "audit-off", no_argument, NULL, 'O' },
        { NULL, 0, NULL, 0 },
    };
    const char *json_path = NULL, *audit_log = NULL;
    bool scale = true, attest = false, attest_raw = false;
    long tl[8], attest_count = -1, audit_count = -1;
    bool audit_off = false;
    struct rusage ru;
    unsigned int dl = 0;
    int c;

    while ((c = getopt_long(argc, argv, "c:b:t:s:k:j:p:nK:T:M:L:P:R:AC:WU:N:O", opts, NULL)) != -1) {
        switch (c) {
        case 'A': attest = true; break;
        case 'W': attest_raw = true; break;
        case 'U': audit_log = optarg; break;
        case 'N':
            if ((audit_count = atol(optarg)) < 0) {
                fprintf(stderr, "kv-bench: --audit-count takes a number\n");
                return 2;
            }
            break;
        case 'O': audit_off = true; break;
        case 'C':
            attest = true;
            if ((attest_count = atol(optarg)) < 0) {
                fprintf(stderr, "kv-bench: --attest-count takes a number\n");
                return 2;
            }
            break;
        case 'T': opt_tcti = optarg; break;
        case 'R':
            reps = atoi(optarg);
            if (reps < 1 || reps > REPS_MAX || reps % 2 == 0) {
                fprintf(stderr, "kv-bench: --reps takes an odd number from 1 to %d\n", REPS_MAX);
                return 2;
            }
            break;
        case 'M': opt_p11_module = optarg; break;
        case 'L': opt_p11_token = optarg; break;
        case 'P': opt_p11_pin_file = optarg; break;
        case 'c': conf_path = optarg; break;
        case 'b':
            want[0] = strstr(optarg, "software") != NULL;
            want[1] = strstr(optarg, "pkcs11") != NULL;
            want[2] = strstr(optarg, "tpm") != NULL;
            break;
        case 't':
            n_threads = parse_list(optarg, tl, 8);
            if (n_threads <= 0) {
                fprintf(stderr, "kv-bench: --threads 1,2,4,8\n");
                return 2;
            }
            for (int i = 0; i < n_threads; i++)
                threads_list[i] = tl[i] > 64 ? 64 : (int)tl[i];
            break;
        case 's': seconds = atof(optarg); break;
        case 'k':
            n_keys = parse_list(optarg, keys_list, 8);
            if (n_keys <= 0) {
                fprintf(stderr, "kv-bench: --keys 1,100,1000\n");
                return 2;
            }
            break;
        case 'K':
            n_p11_keys = parse_list(optarg, p11_keys_list, 8);
            if (n_p11_keys <= 0) {
                fprintf(stderr, "kv-bench: --p11-keys 1,100,1000\n");
                return 2;
            }
            break;
        case 'j': json_path = optarg; break;
        case 'p': plot = fopen(optarg, "w"); break;
        case 'n': scale = false; break;
        default:
            fprintf(stderr, "usage: kv-bench -c CONF [--backends software,pkcs11,tpm] "
                            "[--threads 1,2,4,8] [--seconds S] [--keys 1,100,1000,10000] "
                            "[--p11-keys 1,100,1000] "
                            "[--json FILE] [--plot FILE] [--no-scale] [--reps 5] [--tcti TCTI] "
                            "[--p11-module PATH --p11-token LABEL --p11-pin-file FILE] "
                            "[--attest | --attest-count N [--attest-raw]] "
                            "[--audit FILE [--audit-count N [--audit-off]]]\n");
            return 2;
        }
    }
    EVP_Digest(msg, sizeof(msg), digest, &dl, EVP_sha256(), NULL);
    if (audit_count >= 0) {
        if (!audit_log) {
            fprintf(stderr, "kv-bench: --audit-count needs --audit FILE\n");
            return 2;
        }
        bench_audit_count(audit_log, audit_count, audit_off);
        return 0;
    }
    results = json_array();
    printf("# kv-bench: %d online CPUs, %.2f s per measurement, %d pairs, allocation counting %s\n",
           (int)sysconf(_SC_NPROCESSORS_ONLN), seconds, reps, ALLOC_COUNTING ? "on" : "off");
    if (attest) {
#ifdef KV_WITH_TPM
        bench_attest(attest_count, attest_raw);
        want[0] = want[1] = want[2] = scale = false;
#else
        fprintf(stderr, "kv-bench: --attest needs a build with tpm2-tss\n");
        return 2;
#endif
    } else {
        header();
    }
    if (audit_log) {
        /* the kv columns: audit on; the raw columns: the same without it */
        if (want[0])
            bench_audit(audit_log, "software");
        if (want[1])
            bench_audit(audit_log, "pkcs11");
        want[0] = want[1] = want[2] = scale = false;
    }
    in_main_table = true;
    if (want[0])
        bench_backend("software");
    if (want[1])
        bench_backend("pkcs11");
    if (want[2])
        bench_backend("tpm");
    in_main_table = false;
    if (scale) {
        header();
        if (want[0])
            bench_scale("software");
        if (want[1])
            bench_scale("pkcs11");
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("# peak RSS: %ld KiB\n", ru.ru_maxrss);
    if (json_path) {
        json_t *doc = json_pack("{s:i, s:f, s:I, s:o}", "cpus",
                                (int)sysconf(_SC_NPROCESSORS_ONLN), "seconds", seconds,
                                "peak_rss_kib", (json_int_t)ru.ru_maxrss, "results", results);
        json_dump_file(doc, json_path, JSON_INDENT(2));
        json_decref(doc);
    } else {
        json_decref(results);
    }
    if (plot)
        fclose(plot);
    return 0;
}
