/*
 * check_secrets.c - bad input that carries known secrets (PINs in pkcs11:
 * URIs, store passphrases, TPM auth values, secrets written inline in a
 * configuration) goes through the library; no secret may appear in
 * kv_errmsg or in a key's name or URI. Runs from tests/secrets.sh, which
 * makes the SoftHSM token, the swtpm, the configurations and the secret
 * files (KV_SEC_* variables), and greps every file written afterwards.
 */
#include "config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "testutil.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v && *v, "%s is not set: run through tests/secrets.sh", name);
    return v;
}

/* every secret of the corpus (each one distinctive, letters and digits) */
static const char *const secret_vars[] = {
    "KV_SEC_PIN",  "KV_SEC_PIN_WRONG",  "KV_SEC_PASS",   "KV_SEC_PASS_WRONG",
    "KV_SEC_AUTH", "KV_SEC_AUTH_WRONG", "KV_SEC_INLINE",
};

static void assert_clean(const char *text, const char *what)
{
    for (size_t i = 0; i < sizeof(secret_vars) / sizeof(secret_vars[0]); i++)
        ck_assert_msg(strstr(text, env(secret_vars[i])) == NULL, "%s: %s appears in \"%s\"", what,
                      secret_vars[i], text);
}

static kv_ctx *ctx_on(const char *conf)
{
    char path[1024];
    kv_ctx *ctx = NULL;

    snprintf(path, sizeof(path), "%s/%s", env("KV_SEC_DIR"), conf);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new(%s): %s", path, kv_errmsg(NULL));
    return ctx;
}

/* ref fails to open (and to destroy) with want; the detail is there and
 * clean, and names `names` when given */
static void refused(kv_ctx *ctx, const char *ref, kv_rc want, const char *names)
{
    kv_key *key = NULL;

    ck_assert_rc(ctx, kv_key_open(ctx, ref, &key), want);
    ck_assert_ptr_null(key);
    ck_assert_msg(kv_errmsg(ctx)[0] != '\0', "no detail for %s", kv_strerror(want));
    assert_clean(kv_errmsg(ctx), "kv_key_open");
    if (names)
        ck_assert_msg(strstr(kv_errmsg(ctx), names), "'%s' not in \"%s\"", names,
                      kv_errmsg(ctx));
    ck_assert_rc(ctx, kv_key_destroy(ctx, ref), want);
    assert_clean(kv_errmsg(ctx), "kv_key_destroy");
}

/* printf into one of a few rotating buffers */
static const char *q(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *q(const char *fmt, ...)
{
    static char buf[8][2048];
    static int i;
    char *b = buf[i++ % 8];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(b, sizeof(buf[0]), fmt, ap);
    va_end(ap);
    return b;
}

/* a pkcs11: URI on the corpus token: path attributes, then a query */
static const char *p11_uri(const char *path, const char *query)
{
    return q("pkcs11:token=%s;%s?%s", env("KV_SEC_TOKEN"), path, query);
}

/* the same with the module by name and the PIN in variable pinvar */
static const char *with_pin(const char *path, const char *pinvar)
{
    return p11_uri(path, q("module-name=softhsm2&pin-value=%s", env(pinvar)));
}

START_TEST(p11_missing_token)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, q("pkcs11:token=nosuch;object=k1?module-name=softhsm2&pin-value=%s",
                   env("KV_SEC_PIN")),
            KV_ERR_TOKEN_NOT_PRESENT, "nosuch");
    /* no label to name it by: the token's attributes, formatted */
    refused(ctx, q("pkcs11:serial=nosuch;object=k1?module-name=softhsm2&pin-value=%s",
                   env("KV_SEC_PIN")),
            KV_ERR_TOKEN_NOT_PRESENT, "token 'pkcs11:serial=nosuch'");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_missing_object)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=missing", "KV_SEC_PIN"), KV_ERR_KEY_NOT_FOUND, "object=missing");
    refused(ctx, p11_uri("id=%ff%ee;object=k1", q("pin-value=%s", env("KV_SEC_PIN"))),
            KV_ERR_KEY_NOT_FOUND, "object=k1");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_wrong_object_type)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = "KV_SEC_PIN";

    /* objects that exist, but are no private key */
    refused(ctx, with_pin("object=pubonly", pin), KV_ERR_KEY_NOT_FOUND, "object=pubonly");
    refused(ctx, with_pin("object=certonly", pin), KV_ERR_KEY_NOT_FOUND, "object=certonly");
    refused(ctx, with_pin("object=k1;type=public", pin), KV_ERR_BAD_URI, "type=public");
    refused(ctx, with_pin("object=certonly;type=cert", pin), KV_ERR_BAD_URI, "type=cert");
    refused(ctx, with_pin("token=kvsecrets", pin), KV_ERR_BAD_URI, "names no object");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_malformed_escapes)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = env("KV_SEC_PIN");

    /* the bad escape after the PIN, inside it, and in the path after a
     * pin-value that p11-kit still takes from the path */
    refused(ctx, p11_uri("object=k1", q("pin-value=%s%%zz", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, p11_uri("object=k1", q("pin-value=%s%%4", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, p11_uri("object=k%g1", q("pin-value=%s", pin)), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("pkcs11:pin-value=%s;object=k%%g1", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("pkcs11:token=kvsecrets;object=k1?pin-value=%s&=x", pin), KV_ERR_BAD_URI, NULL);
    /* p11-kit takes a pin-value from the path too; a wrong one here */
    refused(ctx, q("pkcs11:token=kvsecrets;object=k1;pin-value=%s", env("KV_SEC_PIN_WRONG")),
            KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
}
END_TEST

/* creating a key at a URI that carries a PIN: every refusal is clean */
static const char *generate_at_case(size_t i, kv_rc *want)
{
    const char *pin = env("KV_SEC_PIN"), *mod = "module-name=softhsm2";

    *want = KV_ERR_BAD_URI;
    switch (i) {
    case 0: /* no module anywhere: the URI is named without its query */
        return q("pkcs11:token=kvsecrets;object=g1?pin-value=%s", pin);
    case 1: /* a PIN typed as pin-source */
        return p11_uri("object=g2", q("%s&pin-source=%s", mod, pin));
    case 2: /* an invalid name */
        return p11_uri("object=.g3", q("%s&pin-value=%s", mod, pin));
    case 3: /* a public-key type */
        return p11_uri("object=g4;type=public", q("%s&pin-value=%s", mod, pin));
    case 4: /* a wrong PIN */
        *want = KV_ERR_AUTH_FAILED;
        return with_pin("object=g5", "KV_SEC_PIN_WRONG");
    }
    return NULL;
}

START_TEST(p11_generate_at)
{
    char path[1024];
    kv_ctx *bare = NULL, *ctx = ctx_on("p11.conf");
    kv_key *key = NULL;
    const char *uri;
    kv_rc want;

    snprintf(path, sizeof(path), "%s/p11-nomodule.conf", tu_tmpdir());
    tu_write(path, "[keyvault]\nbackends = pkcs11\n");
    ck_assert_rc(NULL, kv_ctx_new(&bare, path), KV_OK);
    for (size_t i = 0; (uri = generate_at_case(i, &want)) != NULL; i++) {
        kv_ctx *c = i == 0 ? bare : ctx;
        kv_rc rc = kv_key_generate_at(c, uri, KV_KEY_EC_P256, &key);

        ck_assert_msg(rc == want, "case %zu: expected %s, got %s: %s", i, kv_strerror(want),
                      kv_strerror(rc), kv_errmsg(c));
        ck_assert_ptr_null(key);
        ck_assert_msg(kv_errmsg(c)[0] != '\0', "case %zu: no detail", i);
        assert_clean(kv_errmsg(c), "kv_key_generate_at");
    }
    kv_ctx_free(bare);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_ambiguous)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=dup", "KV_SEC_PIN"), KV_ERR_BAD_URI, "object=dup");
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_wrong_pin)
{
    kv_ctx *ctx = ctx_on("p11.conf");

    refused(ctx, with_pin("object=k1", "KV_SEC_PIN_WRONG"), KV_ERR_AUTH_FAILED,
            "CKR_PIN_INCORRECT");
    refused(ctx,
            p11_uri("object=k1", q("module-path=%s&pin-source=%s", env("KV_P11_MODULE"),
                                   env("KV_SEC_PINFILE_WRONG"))),
            KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
    /* the configured token with a wrong PIN file: tried once, then refused */
    ctx = ctx_on("p11-wrongpin.conf");
    refused(ctx, "k1", KV_ERR_AUTH_FAILED, NULL);
    refused(ctx, "k1", KV_ERR_AUTH_FAILED, NULL);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(p11_opened_key_names_no_pin)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    kv_key *key = NULL;
    kv_key_list *list = NULL;
    kv_key_info info;
    const char *uri = with_pin("object=k1", "KV_SEC_PIN");

    ck_assert_rc(ctx, kv_key_open(ctx, uri, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_get_info(key, &info), KV_OK);
    assert_clean(info.name, "name");
    assert_clean(info.uri, "uri");
    ck_assert_ptr_nonnull(strstr(info.uri, "object=k1"));
    kv_key_free(key);
    ck_assert_rc(ctx, kv_list_keys(ctx, &list), KV_OK);
    ck_assert_uint_gt(list->count, 0);
    for (size_t i = 0; i < list->count; i++)
        assert_clean(list->keys[i].uri, "listed uri");
    kv_key_list_free(list);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(core_refs)
{
    kv_ctx *ctx = ctx_on("p11.conf");
    const char *pin = env("KV_SEC_PIN");

    refused(ctx, q("%s:object=k1", pin), KV_ERR_BAD_URI, "unknown URI scheme");
    refused(ctx, q("bogus:object=k1?pin-value=%s", pin), KV_ERR_BAD_URI, "'bogus:'");
    refused(ctx, q("k1?pin-value=%s", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("file:/nonexistent/k.pem?pin-value=%s", pin), KV_ERR_BAD_URI, "/nonexistent");
    refused(ctx, q("file:///nonexistent/k.pem#%s", pin), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("tpm2:file=/x/k.pem?auth=%s", pin), KV_ERR_BACKEND_UNAVAILABLE, NULL);
    ck_assert_rc(ctx, kv_key_generate(ctx, q("x?%s", pin), KV_KEY_EC_P256, NULL, NULL),
                 KV_ERR_BAD_URI);
    assert_clean(kv_errmsg(ctx), "kv_key_generate");
    kv_ctx_free(ctx);
}
END_TEST

/* key `name`, made in `backend` under the secret of conf `good`, cannot
 * sign under the wrong secret of conf `bad`; returns a context on `bad` */
static kv_ctx *wrong_secret(const char *good, const char *bad, const char *name,
                            const char *backend)
{
    kv_ctx *ctx = ctx_on(good);
    unsigned char sig[256];
    size_t siglen = sizeof(sig);
    kv_key *key = NULL;
    kv_rc rc;

    rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, backend, NULL);
    ck_assert_msg(rc == KV_OK || rc == KV_ERR_KEY_EXISTS, "%s", kv_errmsg(ctx));
    kv_ctx_free(ctx);
    ctx = ctx_on(bad);
    rc = kv_key_open(ctx, name, &key);
    if (rc == KV_OK)
        rc = kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"abc", 3, sig, &siglen);
    ck_assert_msg(rc == KV_ERR_AUTH_FAILED, "%s: %s", kv_strerror(rc), kv_errmsg(ctx));
    assert_clean(kv_errmsg(ctx), bad);
    kv_key_free(key);
    return ctx;
}

START_TEST(soft_wrong_passphrase)
{
    kv_ctx_free(wrong_secret("soft.conf", "soft-wrong.conf", "sk", "software"));
}
END_TEST

START_TEST(inline_secrets_in_config)
{
    static const char *const confs[] = {
        "inline-pin.conf", "inline-token.conf", "inline-pass.conf",
#ifdef KV_WITH_TPM
        "inline-auth.conf",
#endif
    };
    kv_ctx *ctx = NULL;
    char path[1024];

    for (size_t i = 0; i < sizeof(confs) / sizeof(confs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", env("KV_SEC_FILES"), confs[i]);
        ck_assert_msg(kv_ctx_new(&ctx, path) == KV_ERR_CONFIG, "%s was accepted", confs[i]);
        ck_assert_ptr_null(ctx);
        ck_assert_msg(kv_errmsg(NULL)[0] != '\0', "%s: no detail", confs[i]);
        assert_clean(kv_errmsg(NULL), confs[i]);
    }
    /* a secret under a key that does not exist: refused (strict), never shown */
    snprintf(path, sizeof(path), "%s/inline-unknown.conf", env("KV_SEC_FILES"));
    ck_assert_int_eq(kv_ctx_new(&ctx, path), KV_ERR_CONFIG);
    ck_assert_ptr_null(ctx);
    assert_clean(kv_errmsg(NULL), "inline-unknown.conf");
}
END_TEST

#ifdef KV_WITH_TPM
START_TEST(tpm_wrong_auth)
{
    kv_ctx *ctx = wrong_secret("tpm.conf", "tpm-wrong.conf", "tk", "tpm");

    refused(ctx, q("tpm2:file=%s/tpmkeys/tk.pem?auth=%s", env("KV_SEC_DIR"), env("KV_SEC_AUTH")),
            KV_ERR_BAD_URI, "tk.pem");
    refused(ctx, q("tpm2:handle=0x81000001#%s", env("KV_SEC_AUTH")), KV_ERR_BAD_URI,
            "handle=0x81000001");
    refused(ctx, q("tpm2:%s", env("KV_SEC_AUTH_WRONG")), KV_ERR_BAD_URI, NULL);
    refused(ctx, q("tpm2:handle=%s", env("KV_SEC_AUTH_WRONG")), KV_ERR_BAD_URI, NULL);
    kv_ctx_free(ctx);
}
END_TEST
#endif

/* ---- secrets left in memory ------------------------------------------------
 *
 * After a call that used a secret has returned, and again after kv_key_free
 * and kv_ctx_free, the process's memory is searched for it. What is searched
 * ("memory the library controls", and more): every private writable mapping
 * of the process (/proc/self/maps "rw-p": the heap, every anonymous mapping
 * (malloc arenas, mmap'd chunks, thread stacks), the .data and .bss of every
 * loaded object), read through /proc/self/mem, and of the calling thread's
 * stack only the part below this function's frame: the dead frames of the
 * calls that returned. Freed heap chunks are included: a buffer freed without
 * a wipe keeps its bytes (glibc reuses only its first 16 to 32 for its own
 * pointers, so secrets here are 32 and 64 bytes and a hit is any 12-byte
 * window of one at an offset that is a multiple of 4). Not searched: the
 * live part of the caller's stack and the environment above it (secrets.sh
 * passes the secrets in the environment: the test's own copy), read-only and
 * shared mappings (no secret is written there), and this test's workspace
 * (its needles, its read buffer, the ECDH outputs it asked for). Third-party
 * memory lies inside what is searched (OpenSSL's, p11-kit's, SoftHSM's,
 * tpm2-tss's allocations share the heap): a copy one of them keeps is found
 * too, and is named in docs/hardening.md when it is outside the library's
 * reach. While a key is open the library keeps its TPM auth value (it
 * authorises every use), so that one is searched for after kv_key_free.
 */
/* ---- who allocated a block ----------------------------------------------
 * malloc, calloc and realloc defined here take the place of glibc's for the
 * whole process (as bench/kv-bench.c counts them); while `tracking` is set
 * each records its block and the address it was called from, in a ring
 * that keeps the newest entries (the return address only: an unwinder
 * would run deep on the stack at every allocation and overwrite the dead
 * frames this test searches). A copy found in a heap block is charged to
 * the object that called the allocator for it: a third party's when that
 * is libtss2-*, libcrypto, libstdc++ (SoftHSM's operator new), p11-kit or
 * any other library; libkeyvault's when it is this executable (which links
 * the library's core) or libc (strdup, strndup, asprintf: their callers are
 * not known, and libkeyvault copies secrets with them). A block the ring no
 * longer knows, and a copy outside the heap blocks (a stack, another
 * mapping), are charged to libkeyvault too. Left out of sanitizer builds,
 * whose allocator must stay in charge, and with it the memory tests. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define TRACK_ALLOCS 1
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

#define TRACK_N (1u << 17)

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static struct tracked {
    uintptr_t p;
    size_t n;
    unsigned long seq; /* 0: empty */
    void *caller;
} track_ring[TRACK_N];
static unsigned long track_seq;
static atomic_int tracking;
static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;

static void track(void *p, size_t n, void *caller)
{
    struct tracked *t;

    if (!p || !atomic_load_explicit(&tracking, memory_order_relaxed))
        return;
    pthread_mutex_lock(&track_lock);
    t = &track_ring[track_seq++ % TRACK_N];
    t->p = (uintptr_t)p;
    t->n = n;
    t->seq = track_seq;
    t->caller = caller;
    pthread_mutex_unlock(&track_lock);
}

#define EXPORT __attribute__((visibility("default")))
EXPORT void *malloc(size_t n);
EXPORT void *calloc(size_t a, size_t b);
EXPORT void *realloc(void *p, size_t n);
EXPORT void free(void *p);
void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    track(p, n, __builtin_return_address(0));
    return p;
}
void *calloc(size_t a, size_t b)
{
    void *p = __libc_calloc(a, b);
    track(p, a * b, __builtin_return_address(0));
    return p;
}
void *realloc(void *q, size_t n)
{
    void *p = __libc_realloc(q, n);
    track(p, n, __builtin_return_address(0));
    return p;
}
void free(void *p)
{
    __libc_free(p);
}

/* The object a copy at addr is charged to (see above); NULL: libkeyvault. */
static const char *owner_of(uintptr_t addr)
{
    const struct tracked *best = NULL;
    static char name[128];
    const char *base;
    Dl_info info;

    for (size_t i = 0; i < TRACK_N; i++) {
        const struct tracked *t = &track_ring[i];
        if (t->seq && addr >= t->p && addr < t->p + t->n && (!best || t->seq > best->seq))
            best = t;
    }
    if (!best || !dladdr(best->caller, &info) || !info.dli_fname)
        return NULL;
    base = strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname;
    if (!strncmp(base, "libc.so", 7) || strstr(base, "check_secrets") ||
        !strncmp(base, "libkeyvault", 11))
        return NULL;
    snprintf(name, sizeof(name), "%s (a block of %zu bytes, at +%zu)", base, best->n,
             (size_t)(addr - best->p));
    return name;
}
#else
#define TRACK_ALLOCS 0
static int tracking;
static const char *owner_of(uintptr_t addr)
{
    (void)addr;
    return NULL;
}
#endif

#define SCAN_CHUNK (1u << 20)
#define SCAN_MAX_NEEDLES 8
#define SCAN_MAX_MAPS 1024

static struct {
    unsigned char buf[SCAN_CHUNK];
    struct {
        const char *what;
        unsigned char v[128];
        size_t len;
    } needle[SCAN_MAX_NEEDLES];
    size_t n;
    unsigned char shared[3][64]; /* ECDH outputs */
    size_t shared_len[3];
    char cred_b64[200]; /* an enrollment response's credential */
    unsigned char cred[160];
    char uri[512];
    unsigned char ref[8192]; /* a key reference file's bytes */
    struct {
        uintptr_t lo, hi;
        char name[80];
    } map[SCAN_MAX_MAPS];
    size_t nmap;
    char report[2048];
    char others[2048];
} ws;

static void needle_clear(void)
{
    OPENSSL_cleanse(ws.needle, sizeof(ws.needle));
    ws.n = 0;
}

static void needle_add(const char *what, const void *v, size_t len)
{
    ck_assert_uint_lt(ws.n, SCAN_MAX_NEEDLES);
    ck_assert_uint_le(len, sizeof(ws.needle[0].v));
    ck_assert_uint_ge(len, 32);
    ws.needle[ws.n].what = what;
    memcpy(ws.needle[ws.n].v, v, len);
    ws.needle[ws.n].len = len;
    ws.n++;
}

static void needle_env(const char *var)
{
    const char *v = env(var);
    needle_add(var, v, strlen(v));
}

/* the regions to search, parsed before any is read */
static void scan_maps(uintptr_t stack_limit)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];

    ck_assert_ptr_nonnull(f);
    ws.nmap = 0;
    while (fgets(line, sizeof(line), f) && ws.nmap < SCAN_MAX_MAPS) {
        unsigned long lo, hi;
        char perms[8], name[256] = "";

        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255[^\n]", &lo, &hi, perms, name) < 3)
            continue;
        if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p')
            continue;
        if (!strcmp(name, "[stack]")) {
            if (stack_limit <= lo || stack_limit > hi)
                continue;
            hi = stack_limit;
        }
        ws.map[ws.nmap].lo = lo;
        ws.map[ws.nmap].hi = hi;
        snprintf(ws.map[ws.nmap].name, sizeof(ws.map[0].name), "%s",
                 name[0] ? name : "[anonymous]");
        ws.nmap++;
    }
    fclose(f);
}

/* How many copies of the needles' windows memory holds that are charged to
 * libkeyvault (see owner_of); the first few are described in ws.report,
 * those charged to a third party in ws.others (*others counts them). */
static __attribute__((noinline)) size_t scan_memory_ex(size_t *others)
{
    uintptr_t self_lo = (uintptr_t)&ws, self_hi = self_lo + sizeof(ws);
    size_t hits = 0, used = 0, oused = 0;
    int fd;

    scan_maps((uintptr_t)__builtin_frame_address(0) - 512);
    ws.report[0] = ws.others[0] = '\0';
    *others = 0;
    fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    for (size_t m = 0; m < ws.nmap; m++) {
        /* chunks overlap by a window, so that no copy straddles two unseen */
        for (uintptr_t at = ws.map[m].lo; at < ws.map[m].hi; at += SCAN_CHUNK - 16) {
            size_t want = ws.map[m].hi - at < SCAN_CHUNK ? ws.map[m].hi - at : SCAN_CHUNK;
            ssize_t got;

            if (at < self_hi && at + want > self_lo) {
                /* the workspace itself: search only what lies outside it */
                if (at < self_lo)
                    want = self_lo - at;
                else {
                    at = self_hi - (SCAN_CHUNK - 16);
                    continue;
                }
            }
            got = pread(fd, ws.buf, want, (off_t)at);
            if (got <= 0)
                continue; /* a guard or vanished page */
            for (size_t i = 0; i < ws.n; i++)
                for (size_t off = 0; off + 12 <= ws.needle[i].len; off += 4) {
                    const unsigned char *p = ws.buf, *end = ws.buf + got;
                    while ((p = memmem(p, (size_t)(end - p), ws.needle[i].v + off, 12))) {
                        uintptr_t addr = at + (uintptr_t)(p - ws.buf);
                        const char *owner = strcmp(ws.map[m].name, "[heap]") &&
                                                    strcmp(ws.map[m].name, "[anonymous]")
                                                ? NULL
                                                : owner_of(addr);
                        char *r = owner ? ws.others : ws.report;
                        size_t *u = owner ? &oused : &used;

                        if (owner)
                            (*others)++;
                        else
                            hits++;
                        if (*u < sizeof(ws.report) - 200)
                            *u += (size_t)snprintf(r + *u, sizeof(ws.report) - *u,
                                                   "%s[%zu..] at %s+0x%lx%s%s; ",
                                                   ws.needle[i].what, off, ws.map[m].name,
                                                   (unsigned long)(addr - ws.map[m].lo),
                                                   owner ? " in a block of " : "",
                                                   owner ? owner : "");
                        p++;
                    }
                }
        }
    }
    close(fd);
    return hits;
}

static size_t scan_memory(void)
{
    size_t others;
    return scan_memory_ex(&others) + others;
}

/* no copy at all */
static void assert_no_copy(const char *when)
{
    size_t hits = scan_memory();
    ck_assert_msg(hits == 0, "%s: %zu copies in memory: %s%s", when, hits, ws.report, ws.others);
}

/* no copy charged to libkeyvault; those in third parties' blocks are
 * printed (the log shows them) */
static void assert_no_own_copy(const char *when)
{
    size_t others, hits = scan_memory_ex(&others);

    ck_assert_msg(hits == 0, "%s: %zu copies in memory: %s", when, hits, ws.report);
    if (others)
        printf("%s: %zu windows in third-party blocks (outside libkeyvault's reach): %s\n", when,
               others, ws.others);
}

/* the peer for ECDH: secrets.sh's other.pub */
static size_t read_peer(unsigned char *buf, size_t cap)
{
    char path[1024];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/../other.pub", env("KV_SEC_DIR"));
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s", path);
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void ecdh_into(kv_key *key, int slot, const unsigned char *peer, size_t peerlen)
{
    ws.shared_len[slot] = sizeof(ws.shared[slot]);
    ck_assert_rc(NULL, kv_ecdh(key, peer, peerlen, ws.shared[slot], &ws.shared_len[slot]),
                 KV_OK);
    needle_add("ECDH secret", ws.shared[slot], ws.shared_len[slot]);
}

static void track_on(void)
{
    tracking = 1;
}

/* the control: a copy freed without a wipe is found, in the heap */
START_TEST(mem_scan_finds_a_copy)
{
    char *copy;

    needle_clear();
    needle_env("KV_SEC_PASS");
    assert_no_copy("before the copy");
    /* strndup: a copy the compiler cannot leave out */
    copy = strndup((const char *)ws.needle[0].v, ws.needle[0].len);
    ck_assert_ptr_nonnull(copy);
    free(copy);
    ck_assert_uint_gt(scan_memory(), 0);
    ck_assert_ptr_nonnull(strstr(ws.report, "KV_SEC_PASS"));
}
END_TEST

/* the PIN (from a file) and the store passphrase: gone as soon as the calls
 * return; the ECDH secrets (token and store) left only in the caller's buffer */
START_TEST(mem_pin_passphrase_ecdh)
{
    unsigned char peer[1024], sig[256];
    size_t peerlen = read_peer(peer, sizeof(peer)), siglen;
    kv_ctx *ctx = ctx_on("p11.conf");
    kv_key *tok = NULL, *soft = NULL;
    kv_rc rc;

    needle_clear();
    needle_env("KV_SEC_PIN");
    needle_env("KV_SEC_PASS");
    ck_assert_rc(ctx, kv_key_open(ctx, "k1", &tok), KV_OK);
    rc = kv_key_generate(ctx, "msoft", KV_KEY_EC_P256, "software", NULL);
    ck_assert_msg(rc == KV_OK || rc == KV_ERR_KEY_EXISTS, "%s", kv_errmsg(ctx));
    ck_assert_rc(ctx, kv_key_open(ctx, "msoft", &soft), KV_OK);
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(tok, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen),
                 KV_OK);
    siglen = sizeof(sig);
    ck_assert_rc(ctx, kv_sign(soft, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen),
                 KV_OK);
    ecdh_into(tok, 0, peer, peerlen);
    ecdh_into(soft, 1, peer, peerlen);
    assert_no_copy("after the calls, keys open");
    kv_key_free(tok);
    kv_key_free(soft);
    kv_ctx_free(ctx);
    assert_no_copy("after kv_ctx_free");
}
END_TEST

/* secrets.sh's file NAME (in KV_SEC_FILES), read into ws.ref with read(2):
 * no stdio buffer keeps a copy */
static size_t read_secret_file(const char *name)
{
    char path[1024];
    size_t len = 0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", env("KV_SEC_FILES"), name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "%s", path);
    while ((n = read(fd, ws.ref + len, sizeof(ws.ref) - len)) > 0)
        len += (size_t)n;
    close(fd);
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_lt(len, sizeof(ws.ref));
    return len;
}

/* a key reference whose pkcs11: URI carries the PIN is refused, and leaves
 * no copy of it: not the DER's string, not p11-kit's parse, not the DER
 * decoded from the PEM form */
START_TEST(mem_refused_reference)
{
    static const char *const files[] = { "pinref.der", "pinref.pem" };
    kv_ctx *ctx = ctx_on("p11.conf");

    needle_clear();
    needle_env("KV_SEC_PIN");
    for (size_t i = 0; i < 2; i++) {
        size_t len = read_secret_file(files[i]);
        kv_key *key = NULL;

        ck_assert_rc(ctx, kv_key_open_reference(ctx, ws.ref, len, &key), KV_ERR_BAD_URI);
        ck_assert_ptr_null(key);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "pin-value"));
        OPENSSL_cleanse(ws.ref, sizeof(ws.ref));
        assert_no_copy(files[i]);
    }
    kv_ctx_free(ctx);
}
END_TEST

/* a PIN given in a pkcs11: URI is kept (for logging in again) while the
 * token is in use, and gone after kv_ctx_free */
START_TEST(mem_uri_pin)
{
    unsigned char sig[256];
    size_t siglen = sizeof(sig);
    kv_ctx *ctx = ctx_on("p11.conf");
    kv_key *key = NULL;

    needle_clear();
    needle_env("KV_SEC_PIN");
    snprintf(ws.uri, sizeof(ws.uri), "pkcs11:token=%s;object=k1?module-path=%s&pin-value=%s",
             env("KV_SEC_TOKEN"), env("KV_P11_MODULE"), env("KV_SEC_PIN"));
    ck_assert_rc(ctx, kv_key_open(ctx, ws.uri, &key), KV_OK);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen),
                 KV_OK);
    kv_key_free(key);
    kv_ctx_free(ctx);
    assert_no_copy("after kv_ctx_free");
}
END_TEST

#ifdef KV_WITH_TPM
/* the TPM auth value: kept by an open key, gone after kv_key_free; the
 * TPM's ECDH secret left only in the caller's buffer */
START_TEST(mem_tpm_auth_ecdh)
{
    unsigned char peer[1024], sig[256];
    size_t peerlen = read_peer(peer, sizeof(peer)), siglen = sizeof(sig);
    kv_ctx *ctx = ctx_on("tpm.conf");
    kv_key *key = NULL;
    kv_rc rc;

    needle_clear();
    rc = kv_key_generate(ctx, "mtpm", KV_KEY_EC_P256, "tpm", NULL);
    ck_assert_msg(rc == KV_OK || rc == KV_ERR_KEY_EXISTS, "%s", kv_errmsg(ctx));
    ck_assert_rc(ctx, kv_key_open(ctx, "mtpm", &key), KV_OK);
    ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen),
                 KV_OK);
    ecdh_into(key, 2, peer, peerlen);
    assert_no_copy("after the calls, key open");
    needle_env("KV_SEC_AUTH");
    kv_key_free(key);
    assert_no_own_copy("after kv_key_free");
    kv_ctx_free(ctx);
    assert_no_own_copy("after kv_ctx_free");
}
END_TEST

/* The credential of an enrollment response, base64url and decoded, as
 * needles: read with strstr into the workspace (a JSON parser would leave
 * copies of its own behind, and they would be this test's). */
static void needle_credential(const char *resp)
{
    static const char key[] = "\"credential\": \"";
    const char *p = strstr(resp, key), *e;
    size_t n, pad;
    int m;

    ck_assert_msg(p != NULL, "no credential in the response");
    p += sizeof(key) - 1;
    e = strchr(p, '"');
    ck_assert_ptr_nonnull(e);
    n = (size_t)(e - p);
    pad = (4 - n % 4) % 4;
    ck_assert_uint_ge(n, 43);
    ck_assert_uint_lt(n + pad, sizeof(ws.cred_b64));
    /* base64 for EVP_DecodeBlock in cred_b64, base64url kept in the needle */
    memcpy(ws.cred_b64, p, n);
    needle_add("credential (base64url)", ws.cred_b64, n);
    for (size_t i = 0; i < n; i++)
        ws.cred_b64[i] = ws.cred_b64[i] == '-' ? '+' : ws.cred_b64[i] == '_' ? '/' : ws.cred_b64[i];
    memset(ws.cred_b64 + n, '=', pad);
    m = EVP_DecodeBlock(ws.cred, (const unsigned char *)ws.cred_b64, (int)(n + pad));
    ck_assert_int_gt(m, (int)pad);
    needle_add("credential", ws.cred, (size_t)m - pad);
    OPENSSL_cleanse(ws.cred_b64, sizeof(ws.cred_b64));
}

/* An enrollment on this TPM (request, the verifier's challenge, the
 * device's response): the credential TPM2_ActivateCredential recovered is
 * left only in the response, which kv_string_free wipes. */
START_TEST(mem_tpm_enroll_credential)
{
    kv_ctx *ctx = ctx_on("tpm.conf");
    char *req = NULL, *chal = NULL, *resp = NULL;
    char anchors[1024], reg[1024];

    needle_clear();
    snprintf(anchors, sizeof(anchors), "%s/ekca.pem", env("KV_SEC_DIR"));
    snprintf(reg, sizeof(reg), "%s/registry.db", env("KV_SEC_DIR"));
    ck_assert_rc(ctx, kv_enroll_request(ctx, "sec-device", &req), KV_OK);
    ck_assert_rc(ctx, kv_enroll_challenge(ctx, req, strlen(req), anchors, reg, 0, &chal), KV_OK);
    ck_assert_rc(ctx, kv_enroll_respond(ctx, chal, strlen(chal), &resp), KV_OK);
    needle_credential(resp);
    kv_string_free(resp);
    kv_string_free(chal);
    kv_string_free(req);
    assert_no_copy("after kv_enroll_respond");
    kv_ctx_free(ctx);
    assert_no_copy("after kv_ctx_free");
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("secrets");
    TCase *tc = tcase_create("corpus");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, p11_missing_token);
    tcase_add_test(tc, p11_missing_object);
    tcase_add_test(tc, p11_wrong_object_type);
    tcase_add_test(tc, p11_malformed_escapes);
    tcase_add_test(tc, p11_ambiguous);
    tcase_add_test(tc, p11_generate_at);
    tcase_add_test(tc, p11_wrong_pin);
    tcase_add_test(tc, p11_opened_key_names_no_pin);
    tcase_add_test(tc, core_refs);
    tcase_add_test(tc, soft_wrong_passphrase);
    tcase_add_test(tc, inline_secrets_in_config);
#ifdef KV_WITH_TPM
    if (getenv("KV_SEC_TPM"))
        tcase_add_test(tc, tpm_wrong_auth);
#endif
    suite_add_tcase(s, tc);
    /* not under a sanitizer: its shadow memory and allocator regions are
     * terabytes of reserved mappings, and its allocator keeps freed blocks
     * in quarantine in its own way; the plain build runs these */
    if (TRACK_ALLOCS) {
        tc = tcase_create("memory");
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, track_on, NULL);
        tcase_add_test(tc, mem_scan_finds_a_copy);
        tcase_add_test(tc, mem_pin_passphrase_ecdh);
        tcase_add_test(tc, mem_uri_pin);
        tcase_add_test(tc, mem_refused_reference);
#ifdef KV_WITH_TPM
        if (getenv("KV_SEC_TPM")) {
            tcase_add_test(tc, mem_tpm_auth_ecdh);
            tcase_add_test(tc, mem_tpm_enroll_credential);
        }
#endif
        suite_add_tcase(s, tc);
    } else {
        printf("the memory tests are left out of sanitizer builds\n");
    }
    return tu_run(s);
}
