/*
 * ctx.c - contexts: configuration, backend registry and fork tracking.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* The directories a context's atomic writes swept last (mem.c), a cache
 * that const users of the context update: it lives behind a pointer. */
struct kv_sweeps {
    kv_mutex lock;            /* first: tests/check_store.c holds it by a cast */
    struct {
        unsigned long long dev, ino;
        long long when;       /* 0: a free slot */
    } dir[8];
};

#define KV_SYSTEM_CONFIG "/etc/keyvault/keyvault.conf"
#define KV_DEFAULT_ORDER "tpm, pkcs11, software"

/* Backends built into this library. */
static const struct kv_backend_ops *const registry[] = {
#ifdef KV_WITH_TPM
    &kv_tpm_ops,
#endif
#ifdef KV_WITH_PKCS11
    &kv_pkcs11_ops,
#endif
    &kv_soft_ops,
};

/* Backends a configuration may name, built or not. */
static const char *const known_backends[] = { "tpm", "pkcs11", "software" };

/* The keys of [keyvault] (keyvault.conf(5)); each backend lists its own. */
static const struct kv_config_key keyvault_config_keys[] = {
    { "backends", 0 },
    { "require_hardware", 0 },
    { "home", 0 },
    { NULL, 0 },
};

/* The keys of [x509]: certificates made and kept with keys. */
static const struct kv_config_key x509_config_keys[] = {
    { "renew_threshold", 0 },
    { NULL, 0 },
};

/* The keys of [lifecycle]: key versions and rotation (docs/lifecycle.md). */
static const struct kv_config_key lifecycle_config_keys[] = {
    { "overlap", 0 },
    { "grace", 0 },
    { NULL, 0 },
};

static atomic_ulong fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
/* serialises the making again of kv_mutexes in a child */
static pthread_mutex_t remake_lock = PTHREAD_MUTEX_INITIALIZER;

static void atfork_child(void)
{
    /* a parent thread may have been making one at fork() */
    pthread_mutex_init(&remake_lock, NULL);
    atomic_fetch_add(&fork_generation, 1);
}

static void install_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, atfork_child);
}

unsigned long kv_fork_generation(void)
{
    return atomic_load(&fork_generation);
}

void kv_mutex_init(kv_mutex *m)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_init(&m->mu, NULL);
    atomic_store(&m->gen, kv_fork_generation());
}

bool kv_mutex_lock(kv_mutex *m)
{
    unsigned long gen;
    bool remade = false;

    /* a static mutex may be the first thing of the library a process uses */
    pthread_once(&atfork_once, install_atfork);
    gen = kv_fork_generation();
    if (atomic_load_explicit(&m->gen, memory_order_acquire) != gen) {
        pthread_mutex_lock(&remake_lock);
        if (atomic_load_explicit(&m->gen, memory_order_relaxed) != gen) {
            pthread_mutex_init(&m->mu, NULL);
            atomic_store_explicit(&m->gen, gen, memory_order_release);
            remade = true;
        }
        pthread_mutex_unlock(&remake_lock);
    }
    pthread_mutex_lock(&m->mu);
    return remade;
}

void kv_mutex_unlock(kv_mutex *m)
{
    pthread_mutex_unlock(&m->mu);
}

void kv_mutex_destroy(kv_mutex *m)
{
    if (atomic_load(&m->gen) == kv_fork_generation())
        pthread_mutex_destroy(&m->mu);
}

static const struct kv_backend_ops *registry_find(const char *name)
{
    for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

static const char *known_backend(const char *name)
{
    for (size_t i = 0; i < sizeof(known_backends) / sizeof(known_backends[0]); i++)
        if (strcmp(known_backends[i], name) == 0)
            return known_backends[i];
    return NULL;
}

/* Hold the configuration against [keyvault] and every known backend's
 * section, built into this library or not. */
static kv_rc config_check(const kv_config *cfg)
{
    /* [keyvault], the backends, then the sections of the core's parts */
    struct kv_config_section known[8 + sizeof(known_backends) / sizeof(known_backends[0])];
    size_t n = 0;

    known[n++] = (struct kv_config_section){ "keyvault", keyvault_config_keys };
    for (size_t i = 0; i < sizeof(known_backends) / sizeof(known_backends[0]); i++) {
        const struct kv_backend_ops *ops = registry_find(known_backends[i]);
        known[n++] = (struct kv_config_section){ known_backends[i],
                                                 ops ? ops->config_keys : NULL };
    }
    known[n++] = (struct kv_config_section){ "x509", x509_config_keys };
    known[n++] = (struct kv_config_section){ "policy", kv_policy_config_keys };
    known[n++] = (struct kv_config_section){ "lifecycle", lifecycle_config_keys };
    known[n++] = (struct kv_config_section){ "audit", kv_audit_config_keys };
    return kv_config_check(NULL, cfg, known, n);
}

/* Parse "tpm, pkcs11, software" into ctx->backends, in order. */
static kv_rc setup_backends(kv_ctx *ctx, const char *order)
{
    char *list = kv_strdup(order), *save = NULL;
    kv_rc rc = KV_OK;

    if (!list)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (char *tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        const char *known = known_backend(tok);
        kv_backend *be;

        if (!known)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                    "[keyvault] backends: unknown backend '%s' (known: tpm, pkcs11, software)",
                    tok);
        for (size_t i = 0; i < ctx->nbackends; i++)
            if (strcmp(ctx->backends[i].name, tok) == 0)
                KV_FAIL(ctx, rc, KV_ERR_CONFIG, "[keyvault] backends: '%s' named twice", tok);
        be = &ctx->backends[ctx->nbackends++];
        be->ctx = ctx;
        be->ops = registry_find(tok);
        be->name = known;
        if (!be->ops) {
            snprintf(be->why, sizeof(be->why),
                     "not built into this libkeyvault (configure --disable-%s)", tok);
            continue;
        }
        be->available = true;
        KV_CHECK(rc, be->ops->init(be));
    }
    if (ctx->nbackends == 0)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "[keyvault] backends names no backend");
out:
    free(list);
    return rc;
}

kv_rc kv_ctx_new(kv_ctx **out, const char *config_path)
{
    kv_ctx *ctx = NULL;
    const char *path = config_path, *order;
    long threshold;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(NULL);
    *out = NULL;
    pthread_once(&atfork_once, install_atfork);
    if (!path) {
        const char *env = getenv("KEYVAULT_CONF");
        if (env && *env)
            path = env;
        else if (access(KV_SYSTEM_CONFIG, F_OK) == 0)
            path = KV_SYSTEM_CONFIG;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->sweeps = calloc(1, sizeof(*ctx->sweeps)))) {
        free(ctx);
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    }
    kv_mutex_init(&ctx->sweeps->lock);
    /* Errors before the context exists are reported on NULL. */
    if (path)
        rc = kv_config_load(NULL, path, &ctx->cfg);
    else if (!(ctx->cfg = kv_config_empty()))
        rc = kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, config_check(ctx->cfg));

    ctx->libctx = OSSL_LIB_CTX_new();
    if (!ctx->libctx)
        KV_FAIL(NULL, rc, KV_ERR_CRYPTO, "cannot create an OpenSSL library context");
    ctx->md_sha256 = EVP_MD_fetch(ctx->libctx, "SHA256", NULL);
    ctx->md_sha384 = EVP_MD_fetch(ctx->libctx, "SHA384", NULL);
    ctx->md_sha512 = EVP_MD_fetch(ctx->libctx, "SHA512", NULL);
    if (!ctx->md_sha256 || !ctx->md_sha384 || !ctx->md_sha512)
        KV_FAIL(NULL, rc, KV_ERR_CRYPTO, "OpenSSL offers no SHA-2 digests");
    KV_CHECK(rc, kv_default_home(ctx->cfg, &ctx->home));
    KV_CHECK(rc, kv_config_get_bool(NULL, ctx->cfg, "keyvault", "require_hardware", false,
                                    &ctx->require_hardware));
    KV_CHECK(rc, kv_renew_threshold(NULL, ctx->cfg, &threshold));
    KV_CHECK(rc, kv_ctx_policy_load(ctx->cfg, &ctx->cpolicy));
    order = kv_config_get(ctx->cfg, "keyvault", "backends");
    KV_CHECK(rc, setup_backends(ctx, order ? order : KV_DEFAULT_ORDER));
    KV_CHECK(rc, kv_audit_setup(ctx));
    *out = ctx;
    ctx = NULL;
out:
    if (rc != KV_OK && ctx && kv_err_is_set(ctx)) {
        /* A backend's init reported on ctx: move the detail to NULL. */
        char msg[768];
        snprintf(msg, sizeof(msg), "%s", kv_errmsg(ctx));
        kv_err_begin(NULL);
        kv_error(NULL, rc, "%s", msg);
    }
    kv_ctx_free(ctx);
    return rc;
}

bool kv_ctx_sweep_due(const kv_ctx *ctx, unsigned long long dev, unsigned long long ino,
                      long long now, long long period)
{
    struct kv_sweeps *sw = ctx ? ctx->sweeps : NULL;
    size_t n = sizeof(sw->dir) / sizeof(sw->dir[0]), slot = 0;
    bool due = true;

    if (!sw)
        return true;
    /* a table half updated by a parent thread at fork() at worst sweeps
     * once more or once less: it is only a cache */
    (void)kv_mutex_lock(&sw->lock);
    for (size_t i = 0; i < n; i++) {
        if (sw->dir[i].when != 0 && sw->dir[i].dev == dev && sw->dir[i].ino == ino) {
            slot = i;
            due = now - sw->dir[i].when >= period || now < sw->dir[i].when;
            break;
        }
        if (sw->dir[i].when < sw->dir[slot].when) /* else the oldest (or a free) slot */
            slot = i;
    }
    if (due) {
        sw->dir[slot].dev = dev;
        sw->dir[slot].ino = ino;
        sw->dir[slot].when = now;
    }
    kv_mutex_unlock(&sw->lock);
    return due;
}

void kv_ctx_free(kv_ctx *ctx)
{
    if (!ctx)
        return;
    kv_audit_free(ctx);
    for (size_t i = 0; i < ctx->nbackends; i++)
        if (ctx->backends[i].ops && ctx->backends[i].state)
            ctx->backends[i].ops->fini(&ctx->backends[i]);
    EVP_MD_free(ctx->md_sha256);
    EVP_MD_free(ctx->md_sha384);
    EVP_MD_free(ctx->md_sha512);
    OSSL_LIB_CTX_free(ctx->libctx);
    kv_config_free(ctx->cfg);
    kv_ctx_policy_free(ctx->cpolicy);
    free(ctx->home);
    if (ctx->sweeps) {
        kv_mutex_destroy(&ctx->sweeps->lock);
        free(ctx->sweeps);
    }
    free(ctx);
}

kv_rc kv_ctx_backend(kv_ctx *ctx, size_t i, const char **name, int *available,
                     const char **why)
{
    KV_CALL_BEGIN(ctx);
    if (i >= ctx->nbackends)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "backend index %zu: only %zu configured", i,
                        ctx->nbackends);
    *name = ctx->backends[i].name;
    *available = ctx->backends[i].available;
    if (why)
        *why = ctx->backends[i].available ? "" : ctx->backends[i].why;
    return KV_OK;
}

const char *kv_version(void)
{
    return PACKAGE_VERSION;
}

kv_rc kv_ctx_backend_stat(kv_ctx *ctx, const char *backend, const char *stat, uint64_t *value)
{
    kv_backend *be = NULL;

    KV_CALL_BEGIN(ctx);
    *value = 0;
    for (size_t i = 0; i < ctx->nbackends && !be; i++)
        if (!strcmp(ctx->backends[i].name, backend))
            be = &ctx->backends[i];
    if (!be)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "kv_ctx_backend_stat: not a backend of this context (see kv_ctx_backend)");
    if (!be->ops || !(be->available || be->uri_ok))
        return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend '%s' is unavailable: %s",
                        be->name, be->why);
    if (!be->ops->stat)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend '%s' keeps no counters", be->name);
    return be->ops->stat(be, stat, value);
}
