/*
 * key.c - the dispatch point. Every public key operation checks its
 * arguments here, passes kv_policy_check, then calls one backend.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"

#define KV_MAX_DIGEST 64
#define KV_HKDF_MAX (255 * 32)

struct kv_list_builder {
    kv_key_list *list;
    size_t cap;
};

bool kv_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > KV_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

size_t kv_uri_shown_len(const char *uri)
{
    return strcspn(uri, "?#");
}

/* See internal.h; the rules are in keypolicy.c and docs/policy.md. */
kv_rc kv_policy_check(kv_ctx *ctx, kv_backend *be, const kv_key *key, kv_op op,
                      const char *name, const kv_alg_desc *alg)
{
    kv_rc rc;

    if (ctx->require_hardware && be->ops->assurance == KV_ASSURANCE_SOFTWARE &&
        (op == KV_OP_GENERATE || op == KV_OP_OPEN))
        return kv_error(ctx, KV_ERR_HARDWARE_REQUIRED,
                        "require_hardware is set: refusing software key '%s'", name);
    rc = kv_ctx_policy_check(ctx, be, op, name, key != NULL);
    if (rc == KV_OK && key)
        rc = kv_key_policy_check(key, be, op, name, alg);
    return rc;
}

static kv_backend *backend_by_name(kv_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->nbackends; i++)
        if (strcmp(ctx->backends[i].name, name) == 0)
            return &ctx->backends[i];
    return NULL;
}

static kv_backend *backend_by_scheme(kv_ctx *ctx, const char *scheme, size_t len)
{
    for (size_t i = 0; i < ctx->nbackends; i++) {
        const struct kv_backend_ops *ops = ctx->backends[i].ops;
        if (ops && strlen(ops->uri_scheme) == len && strncmp(ops->uri_scheme, scheme, len) == 0)
            return &ctx->backends[i];
    }
    return NULL;
}

/* "tpm (not configured: ...), pkcs11 (...)" for error messages. */
static void describe_unavailable(kv_ctx *ctx, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < ctx->nbackends && used < len; i++) {
        if (ctx->backends[i].available)
            continue;
        int n = snprintf(buf + used, len - used, "%s%s: %s", used ? "; " : "",
                         ctx->backends[i].name, ctx->backends[i].why);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static kv_key *key_alloc(kv_ctx *ctx, kv_backend *be)
{
    kv_key *key = calloc(1, sizeof(*key));

    if (key) {
        key->ctx = ctx;
        key->be = be;
        key->version = 1;
    }
    return key;
}

void kv_key_free(kv_key *key)
{
    unsigned refs;

    if (!key)
        return;
    /* drop an extra reference while there is one; the last goes below */
    refs = atomic_load(&key->extra_refs);
    while (refs > 0)
        if (atomic_compare_exchange_weak(&key->extra_refs, &refs, refs - 1))
            return;
    if (key->be && key->be->ops && key->bk)
        key->be->ops->key_free(key);
    EVP_PKEY_free(key->pub);
    kv_lifecycle_free(key->lc);
    free(key->name);
    free(key->uri);
    free(key->policy);
    free(key);
}

/* Whether be can hold keys of this type at all (its static capability). */
static bool can_hold(const kv_backend *be, kv_key_type type)
{
    return !be->ops->can_hold || be->ops->can_hold(be, type);
}

/*
 * Creation is serialised per home directory: an exclusive flock(2) on
 * HOME/.create.lock is held from the existence check to the end of the
 * creation, so two processes (or threads) sharing a home never create the
 * same name twice, in one backend or in two. It does not reach processes
 * with another home or on another machine; a token shared with those is
 * covered by the PKCS#11 backend's own check after C_GenerateKeyPair.
 */
/* How long a creator waits for another one before giving up: longer than
 * any key generation takes (an RSA-3072 key on a slow TPM: about a minute). */
#define KV_CREATE_LOCK_WAIT_MS (180 * 1000)

static kv_rc create_lock(kv_ctx *ctx, int *fd)
{
    char *path = NULL;
    struct stat sb;
    kv_rc rc;

    *fd = -1;
    KV_CHECK(rc, kv_mkdir_p(ctx, ctx->home));
    KV_CHECK(rc, kv_dir_check(ctx, ctx->home, "home directory"));
    path = kv_asprintf("%s/.create.lock", ctx->home);
    if (!path)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (*fd < 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot open the creation lock '%s'", path);
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION, "creation lock '%s' is not a regular file", path);
    /* someone else's lock file could be held by them forever */
    if ((sb.st_uid != geteuid() && sb.st_uid != 0) || (sb.st_mode & 022))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                "creation lock '%s' belongs to another user or is writable by others "
                "(mode %04o)", path, (unsigned)(sb.st_mode & 07777));
    for (unsigned waited = 0; flock(*fd, LOCK_EX | LOCK_NB) != 0;) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot lock '%s'", path);
        if (waited >= KV_CREATE_LOCK_WAIT_MS)
            KV_FAIL(ctx, rc, KV_ERR_IO,
                    "another creator has held the creation lock '%s' for %u s; giving up",
                    path, waited / 1000);
        usleep(10 * 1000);
        waited += 10;
    }
out:
    if (rc != KV_OK && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    free(path);
    return rc;
}

static void create_unlock(int fd)
{
    if (fd < 0)
        return;
    /* unlock explicitly: a child forked meanwhile shares the open file and
     * would otherwise keep the lock until it exits */
    (void)flock(fd, LOCK_UN);
    close(fd);
}

kv_rc kv_home_lock(kv_ctx *ctx, int *fd)
{
    return create_lock(ctx, fd);
}

void kv_home_unlock(int fd)
{
    create_unlock(fd);
}

kv_key *kv_key_new(kv_ctx *ctx, kv_backend *be)
{
    return key_alloc(ctx, be);
}

/* The backend a URI's scheme names, usable for explicit URIs. */
/* " 'scheme:'" for a message when the scheme is 1-16 letters, else "": the
 * rest of a reference may hold a secret, and so may a malformed scheme. */
static const char *scheme_shown(const char *ref, size_t slen, char shown[24])
{
    size_t letters = 0;

    while (letters < slen && ((ref[letters] >= 'a' && ref[letters] <= 'z') ||
                              (ref[letters] >= 'A' && ref[letters] <= 'Z')))
        letters++;
    shown[0] = '\0';
    if (letters == slen && slen >= 1 && slen <= 16)
        snprintf(shown, 24, " '%.*s:'", (int)slen, ref);
    return shown;
}

static kv_rc uri_backend(kv_ctx *ctx, const char *ref, kv_backend **out)
{
    char shown[24];
    const char *colon = strchr(ref, ':');
    size_t slen = colon ? (size_t)(colon - ref) : 0;
    kv_backend *be = colon ? backend_by_scheme(ctx, ref, slen) : NULL;

    *out = NULL;
    if (!be) {
        if ((slen == 6 && !strncmp(ref, "pkcs11", 6)) || (slen == 4 && !strncmp(ref, "tpm2", 4)))
            return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
                            "'%s:' URIs need the %s backend, which this configuration lacks",
                            ref[0] == 'p' ? "pkcs11" : "tpm2", ref[0] == 'p' ? "pkcs11" : "tpm");
        if (slen == 4 && !strncmp(ref, "file", 4))
            return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
                            "'file:' URIs need the software backend, which this configuration "
                            "lacks");
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "unknown URI scheme%s (expected pkcs11:, tpm2: or file:)",
                        scheme_shown(ref, slen, shown));
    }
    if (!be->available && !be->uri_ok)
        return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend '%s' is unavailable: %s",
                        be->name, be->why);
    *out = be;
    return KV_OK;
}

/* The context's [policy] backends or the new key's hardware-only flag
 * refuse backend b (quietly: for choosing a backend; the rules about the
 * name and the operation are kv_policy_check's, with their own messages). */
static bool generate_refused(kv_ctx *ctx, kv_backend *b, const kv_key_policy *policy,
                             const char *name)
{
    kv_err_mark mark = kv_err_mark_get(ctx);
    /* (as an operation on no key, open is held to the backends rule alone) */
    bool refused = (policy && (policy->flags & KV_POLICY_HARDWARE_ONLY) &&
                    b->ops->assurance == KV_ASSURANCE_SOFTWARE) ||
                   kv_ctx_policy_check(ctx, b, KV_OP_OPEN, name, false) != KV_OK;

    kv_err_rewind(ctx, mark);
    return refused;
}

/* A new kv_key for be carrying a copy of policy (checked) for generate. */
static kv_rc generate_key_new(kv_ctx *ctx, kv_backend *be, kv_key_type type,
                              const kv_key_policy *policy, kv_key **out)
{
    kv_key *key = key_alloc(ctx, be);
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!key)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (policy)
        rc = kv_key_policy_copy(ctx, policy, type, &key->policy);
    if (rc != KV_OK)
        kv_key_free(key);
    else
        *out = key;
    return rc;
}

static kv_rc key_generate(kv_ctx *ctx, const char *name, kv_key_type type, const char *backend,
                          const kv_key_policy *policy, kv_key **out)
{
    const kv_type_desc *t = kv_type_desc_get(type);
    kv_backend *be = NULL;
    kv_key *key = NULL;
    kv_rc rc = KV_OK;
    bool type_skipped = false, policy_skipped = false;
    int lock = -1;
    char why[512];

    if (out)
        *out = NULL;
    if (!kv_name_valid(name))
        KV_FAIL(ctx, rc, KV_ERR_BAD_URI,
                "the key name is invalid (not shown: it may hold a secret): use 1-64 of "
                "A-Z a-z 0-9 . _ -, not starting with '.'");
    if (!t)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "unknown key type %d", (int)type);
    if (backend) {
        be = backend_by_name(ctx, backend);
        if (!be)
            KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE,
                    "backend '%s' is not in this configuration's backend list", backend);
        if (be->ops && !can_hold(be, type))
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "backend '%s' cannot hold %s keys", be->name,
                    t->name);
        if (!be->available)
            KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE, "backend '%s' is unavailable: %s",
                    backend, be->why);
    } else {
        /* the first available backend that can hold the type */
        for (size_t i = 0; i < ctx->nbackends && !be; i++) {
            kv_backend *b = &ctx->backends[i];
            if (!b->available)
                continue;
            if (ctx->require_hardware && b->ops->assurance == KV_ASSURANCE_SOFTWARE)
                continue;
            if (!can_hold(b, type)) {
                type_skipped = true;
                continue;
            }
            if (generate_refused(ctx, b, policy, name)) {
                policy_skipped = true;
                continue;
            }
            be = b;
        }
        if (!be && policy_skipped)
            KV_FAIL(ctx, rc, KV_ERR_POLICY,
                    "no available backend that can hold %s keys is allowed for key '%s' by the "
                    "context's [policy] backends and the key's policy (hardware only: %s)",
                    t->name, name,
                    policy && (policy->flags & KV_POLICY_HARDWARE_ONLY) ? "yes" : "no");
        if (!be && type_skipped)
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                    "no available %sbackend can hold %s keys (for key '%s')",
                    ctx->require_hardware ? "hardware " : "", t->name, name);
        if (!be) {
            describe_unavailable(ctx, why, sizeof(why));
            KV_FAIL(ctx, rc,
                    ctx->require_hardware ? KV_ERR_HARDWARE_REQUIRED
                                          : KV_ERR_BACKEND_UNAVAILABLE,
                    "no %sbackend available for key '%s' (%s)",
                    ctx->require_hardware ? "hardware " : "", name, why);
        }
    }
    KV_CHECK(rc, generate_key_new(ctx, be, type, policy, &key));
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_GENERATE, name, NULL));
    KV_CHECK(rc, create_lock(ctx, &lock));
    for (size_t i = 0; i < ctx->nbackends; i++) {
        kv_backend *b = &ctx->backends[i];
        if (!b->available)
            continue;
        rc = b->ops->exists(b, name); /* quiet when not found */
        if (rc == KV_OK)
            KV_FAIL(ctx, rc, KV_ERR_KEY_EXISTS, "a key named '%s' already exists in backend %s",
                    name, b->name);
        if (rc != KV_ERR_KEY_NOT_FOUND)
            goto out;
    }
    KV_CHECK(rc, kv_version_name_free(ctx, name));
    KV_CHECK(rc, be->ops->generate(be, name, type, key));
    KV_CHECK(rc, kv_version_attach(key, &(struct kv_lifecycle *){ NULL }));
    if (out) {
        *out = key;
        key = NULL;
    }
    rc = KV_OK;
out:
    kv_audit_event(ctx, KV_AUDIT_GENERATE, kv_name_valid(name) ? name : NULL, 1, be ? be->name : NULL, rc, NULL);
    create_unlock(lock);
    kv_key_free(key);
    return rc;
}

kv_rc kv_key_generate(kv_ctx *ctx, const char *name, kv_key_type type, const char *backend,
                      kv_key **out)
{
    KV_CALL_BEGIN(ctx);
    return key_generate(ctx, name, type, backend, NULL, out);
}

static kv_rc key_generate_at(kv_ctx *ctx, const char *uri, kv_key_type type,
                             const kv_key_policy *policy, kv_key **out)
{
    const kv_type_desc *t = kv_type_desc_get(type);
    kv_backend *be = NULL;
    kv_key *key = NULL;
    kv_rc rc = KV_OK;
    int lock = -1;

    if (out)
        *out = NULL;
    if (!t)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "unknown key type %d", (int)type);
    KV_CHECK(rc, uri_backend(ctx, uri, &be));
    if (!be->ops->generate_uri)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "backend '%s' cannot create keys at a URI",
                be->name);
    if (!can_hold(be, type))
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "backend '%s' cannot hold %s keys", be->name,
                t->name);
    if (kv_ctx_policy_names_keys(ctx))
        KV_FAIL(ctx, rc, KV_ERR_POLICY,
                "context policy ([policy] keys): this context makes keys by name only, not at "
                "a URI");
    KV_CHECK(rc, generate_key_new(ctx, be, type, policy, &key));
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_GENERATE, "(new key at a URI)", NULL));
    KV_CHECK(rc, create_lock(ctx, &lock));
    KV_CHECK(rc, be->ops->generate_uri(be, uri, type, key));
    KV_CHECK(rc, kv_version_attach(key, &(struct kv_lifecycle *){ NULL }));
    if (out) {
        *out = key;
        key = NULL;
    }
out:
    kv_audit_event(ctx, KV_AUDIT_GENERATE, key ? key->name : out && *out ? (*out)->name : NULL, 1, be ? be->name : NULL, rc, "at a URI");
    create_unlock(lock);
    kv_key_free(key);
    return rc;
}

kv_rc kv_key_generate_at(kv_ctx *ctx, const char *uri, kv_key_type type, kv_key **out)
{
    KV_CALL_BEGIN(ctx);
    return key_generate_at(ctx, uri, type, NULL, out);
}

kv_rc kv_key_generate_ex(kv_ctx *ctx, const char *name_or_uri, kv_key_type type,
                         const char *backend, const kv_key_policy *policy, kv_key **out)
{
    KV_CALL_BEGIN(ctx);
    if (out)
        *out = NULL;
    if (!strchr(name_or_uri, ':'))
        return key_generate(ctx, name_or_uri, type, backend, policy, out);
    if (backend)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "a key made at a URI takes its backend from the URI's scheme: pass "
                        "backend NULL");
    return key_generate_at(ctx, name_or_uri, type, policy, out);
}

kv_rc kv_key_get_policy(const kv_key *key, kv_key_policy *out)
{
    const kv_key_policy none = KV_KEY_POLICY_INIT;
    const kv_key_policy *p = key->policy ? key->policy : &none;
    size_t size = out->size;

    KV_CALL_BEGIN(key->ctx);
    if (size < sizeof(kv_key_policy))
        return kv_error(key->ctx, KV_ERR_INVALID_ARG,
                        "kv_key_get_policy: out->size %zu is smaller than kv_key_policy (%zu)",
                        size, sizeof(kv_key_policy));
    memcpy(out, p, sizeof(*p));
    out->size = size;
    return KV_OK;
}

/* Open without resetting the error detail (used by open and destroy). */
static kv_rc key_open(kv_ctx *ctx, const char *ref, kv_key **out)
{
    const char *colon = strchr(ref, ':');
    struct kv_lifecycle *lc = NULL;
    char why[512], bname[KV_NAME_MAX + 1];
    kv_backend *be = NULL;
    kv_key *key = NULL;
    bool policy_skipped = false;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (colon) {
        KV_CHECK(rc, uri_backend(ctx, ref, &be));
        key = key_alloc(ctx, be);
        if (!key)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        KV_CHECK(rc, be->ops->open_uri(be, ref, key));
    } else {
        KV_CHECK(rc, kv_version_resolve(ctx, ref, bname, &lc));
        /* a name this context may not touch is refused before any backend */
        KV_CHECK(rc, kv_ctx_policy_check(ctx, NULL, KV_OP_OPEN, ref, true));
        for (size_t i = 0; i < ctx->nbackends; i++) {
            kv_backend *b = &ctx->backends[i];
            if (!b->available)
                continue;
            /* a rotated key lives in the backend its record names */
            if (kv_version_backend(lc) && strcmp(kv_version_backend(lc), b->name) != 0)
                continue;
            /* a backend [policy] backends forbids is not asked (no login) */
            if (generate_refused(ctx, b, NULL, ref)) {
                policy_skipped = true;
                continue;
            }
            key = key_alloc(ctx, b);
            if (!key)
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
            rc = b->ops->open_name(b, bname, key);
            if (rc == KV_OK) {
                be = b;
                break;
            }
            kv_key_free(key);
            key = NULL;
            /* not found here is quiet (the open_name contract): try the next */
            if (rc != KV_ERR_KEY_NOT_FOUND)
                goto out;
        }
        if (!be && policy_skipped)
            KV_FAIL(ctx, rc, KV_ERR_POLICY,
                    "context policy ([policy] backends): no key named '%s' in the backends it "
                    "allows; the others were not asked", ref);
        if (!be) {
            describe_unavailable(ctx, why, sizeof(why));
            KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "no key named '%s'%s%s%s", ref,
                    why[0] ? " (unavailable backends: " : "", why, why[0] ? ")" : "");
        }
    }
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_OPEN, key->name, NULL));
    KV_CHECK(rc, kv_version_attach(key, &lc));
    *out = key;
    key = NULL;
out:
    kv_lifecycle_free(lc);
    kv_key_free(key);
    return rc;
}

kv_rc kv_key_open(kv_ctx *ctx, const char *ref, kv_key **out)
{
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    rc = key_open(ctx, ref, out);
    kv_audit_event(ctx, KV_AUDIT_OPEN, *out ? (*out)->name : kv_name_valid(ref) ? ref : NULL, *out ? (*out)->version : 0, *out ? (*out)->be->name : NULL, rc, NULL);
    return rc;
}

/* What kv_key_open_tpm_file takes: a TSS2 PRIVATE KEY is about 1 KiB. */
#define KV_KEY_FILE_DATA_MAX (16 * 1024)

kv_rc kv_key_open_tpm_file(kv_ctx *ctx, const unsigned char *data, size_t len, kv_key **out)
{
    kv_backend *be = backend_by_scheme(ctx, "tpm2", 4);
    struct kv_lifecycle *lc = NULL;
    kv_key *key = NULL;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    if (len == 0 || len > KV_KEY_FILE_DATA_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "a TSS2 PRIVATE KEY file is 1 to %d bytes, not %zu",
                KV_KEY_FILE_DATA_MAX, len);
    if (!be)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE,
                "a TSS2 PRIVATE KEY needs the tpm backend, which this configuration lacks");
    if (!be->ops->open_data)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "backend '%s' cannot open a key from a file's bytes",
                be->name);
    if (!be->available && !be->uri_ok)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE, "backend '%s' is unavailable: %s", be->name,
                be->why);
    key = key_alloc(ctx, be);
    if (!key)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    key->from_data = true;
    KV_CHECK(rc, be->ops->open_data(be, data, len, key));
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_OPEN, key->name, NULL));
    /* a copy of a version's key file: that version's state, by public key */
    KV_CHECK(rc, kv_version_attach(key, &lc));
    *out = key;
    key = NULL;
out:
    kv_audit_event(ctx, KV_AUDIT_OPEN, *out ? (*out)->name : NULL, *out ? (*out)->version : 0, be ? be->name : NULL, rc, "a TSS2 key file");
    kv_key_free(key);
    return rc;
}

/* No key named `name`: what a destroy that failed part way left of it, removed
 * by the backends that keep such things; *removed, how many objects. */
static kv_rc purge_leftovers(kv_ctx *ctx, const char *name, size_t *removed)
{
    kv_rc rc = KV_OK;

    *removed = 0;
    for (size_t i = 0; i < ctx->nbackends && rc == KV_OK; i++) {
        kv_backend *be = &ctx->backends[i];
        size_t n = 0;

        if (!be->available || !be->ops->purge)
            continue;
        rc = be->ops->purge(be, name, &n);
        *removed += n;
    }
    return rc;
}

kv_rc kv_key_destroy(kv_ctx *ctx, const char *ref)
{
    kv_key *key = NULL;
    int lock = -1;
    size_t purged = 0;
    kv_err_mark mark;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    /* the home's creation lock from before the open to the end: no rotation
     * or prune comes between the versions the open saw and the destroy */
    KV_CHECK(rc, create_lock(ctx, &lock));
    mark = kv_err_mark_get(ctx);
    rc = key_open(ctx, ref, &key);
    if (rc == KV_ERR_KEY_NOT_FOUND && kv_name_valid(ref)) {
        /* a destroy tried again after one that failed once the key was
         * gone: it completes by removing what is left */
        kv_rc prc = purge_leftovers(ctx, ref, &purged);
        if (prc != KV_OK) {
            rc = prc;
        } else if (purged) {
            kv_err_rewind(ctx, mark);
            rc = KV_OK;
        }
        goto out;
    }
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, kv_policy_check(ctx, key->be, key, KV_OP_DESTROY, key->name, NULL));
    rc = kv_version_destroy(ctx, ref, key);
out:
    kv_audit_event(ctx, KV_AUDIT_DESTROY, key ? key->name : kv_name_valid(ref) ? ref : NULL, key ? key->version : 0, key ? key->be->name : NULL, rc, NULL);
    create_unlock(lock);
    kv_key_free(key);
    return rc;
}

kv_rc kv_list_add(kv_list_builder *lb, const char *name, const char *backend, const char *uri,
                  kv_key_type type, kv_assurance assurance, unsigned version)
{
    kv_key_list *l = lb->list;
    kv_key_info *ki;

    if (l->count == lb->cap) {
        size_t cap = lb->cap ? lb->cap * 2 : 16;
        kv_key_info *k = realloc(l->keys, cap * sizeof(*k));
        if (!k)
            return KV_ERR_NO_MEMORY;
        l->keys = k;
        lb->cap = cap;
    }
    ki = &l->keys[l->count];
    memset(ki, 0, sizeof(*ki));
    ki->name = kv_strdup(name);
    ki->backend = kv_strdup(backend);
    ki->uri = kv_strdup(uri);
    ki->type = type;
    ki->assurance = assurance;
    ki->version = strchr(name, '@') ? kv_backend_name_version(name) : version;
    l->count++;
    if (!ki->name || !ki->backend || !ki->uri)
        return KV_ERR_NO_MEMORY;
    return KV_OK;
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const kv_key_info *)a)->name, ((const kv_key_info *)b)->name);
}

void kv_key_list_free(kv_key_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++) {
        free((char *)list->keys[i].name);
        free((char *)list->keys[i].backend);
        free((char *)list->keys[i].uri);
    }
    free(list->keys);
    free(list);
}

kv_rc kv_list_keys(kv_ctx *ctx, kv_key_list **out)
{
    kv_list_builder lb = { NULL, 0 };
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    lb.list = calloc(1, sizeof(*lb.list));
    if (!lb.list)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < ctx->nbackends; i++) {
        kv_backend *be = &ctx->backends[i];
        size_t first = lb.list->count;
        if (!be->available)
            continue;
        rc = be->ops->list(be, &lb);
        if (rc == KV_ERR_NO_MEMORY)
            kv_error(ctx, rc, "out of memory");
        if (rc != KV_OK)
            goto out;
        /* backends in preference order, each one's keys by name */
        if (lb.list->count - first > 1)
            qsort(lb.list->keys + first, lb.list->count - first, sizeof(kv_key_info), info_cmp);
    }
    *out = lb.list;
    lb.list = NULL;
out:
    kv_key_list_free(lb.list);
    return rc;
}

kv_rc kv_key_get_info(const kv_key *key, kv_key_info *info)
{
    KV_CALL_BEGIN(key->ctx);
    info->name = key->from_data ? NULL : key->name; /* in no store: no name */
    info->backend = key->be->name;
    info->uri = key->uri;
    info->type = key->type;
    info->assurance = key->be->ops->assurance;
    info->version = key->version;
    return KV_OK;
}

kv_rc kv_key_public_der(kv_key *key, unsigned char *buf, size_t *len)
{
    unsigned char *der = NULL;
    kv_rc rc = KV_OK;
    int n;

    KV_CALL_BEGIN(key->ctx);
    n = i2d_PUBKEY(key->pub, &der);
    if (n <= 0)
        KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot encode the public key of '%s'",
                     key->name);
    rc = kv_copy_out(key->ctx, "the public key", der, (size_t)n, buf, len);
out:
    OPENSSL_free(der);
    return rc;
}

kv_rc kv_key_public_pem(kv_key *key, char **pem)
{
    BIO *bio = BIO_new(BIO_s_mem());
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(key->ctx);
    *pem = NULL;
    if (!bio || PEM_write_bio_PUBKEY(bio, key->pub) != 1)
        KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot encode the public key of '%s'",
                     key->name);
    if (!(*pem = kv_bio_text(bio, NULL)))
        KV_FAIL(key->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    BIO_free(bio);
    return rc;
}

/* Resolve KV_ALG_DEFAULT and check that alg fits the key's family. */
static kv_rc resolve_alg(const kv_ctx *ctx, const char *what, kv_family family,
                         kv_key_type type, kv_sign_alg alg, const kv_alg_desc **out)
{
    const kv_alg_desc *a;

    if (alg == KV_ALG_DEFAULT) {
        const kv_type_desc *t = kv_type_desc_get(type);
        if (t)
            alg = t->default_alg;
        else if (family == KV_FAMILY_RSA)
            alg = KV_ALG_RSA_PSS_SHA256;
        else if (family == KV_FAMILY_ED25519)
            alg = KV_ALG_ED25519;
        else
            return kv_error(ctx, KV_ERR_UNSUPPORTED,
                            "%s: no default algorithm for this key type", what);
    }
    a = kv_alg_desc_get(alg);
    if (!a)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown signature algorithm %d", (int)alg);
    if (a->family != family)
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE, "%s is %s; %s needs %s", what,
                        type ? kv_key_type_name(type) : "not of a usable type", a->name,
                        a->family == KV_FAMILY_EC    ? "an EC key"
                        : a->family == KV_FAMILY_RSA ? "an RSA key"
                                                     : "an Ed25519 key");
    *out = a;
    return KV_OK;
}

/* What sign/verify operate on: the digest (prehashed or computed), or the
 * message for Ed25519. */
static kv_rc to_be_signed(kv_ctx *ctx, const kv_alg_desc *a, unsigned flags,
                          const unsigned char *in, size_t inlen, unsigned char *md,
                          const unsigned char **tbs, size_t *tbslen)
{
    if (a->family == KV_FAMILY_ED25519) {
        if (flags & KV_SIGN_PREHASHED)
            return kv_error(ctx, KV_ERR_UNSUPPORTED,
                            "Ed25519 signs the message itself: pre-hashed input is not "
                            "supported (Ed25519ph is not offered)");
        *tbs = in;
        *tbslen = inlen;
        return KV_OK;
    }
    if (flags & KV_SIGN_PREHASHED) {
        if (inlen != a->mdlen)
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "pre-hashed input for %s must be %zu bytes, got %zu", a->name,
                            a->mdlen, inlen);
        *tbs = in;
        *tbslen = inlen;
        return KV_OK;
    }
    *tbs = md;
    return kv_digest(ctx, a, in, inlen, md, tbslen);
}

static kv_rc check_flags(const kv_ctx *ctx, const kv_alg_desc *a, unsigned flags)
{
    if (flags & ~(KV_SIGN_PREHASHED | KV_SIGN_RAW))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown flags 0x%x", flags);
    if ((flags & KV_SIGN_RAW) && a->family != KV_FAMILY_EC)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "KV_SIGN_RAW applies to ECDSA only, not %s",
                        a->name);
    return KV_OK;
}

kv_rc kv_key_alg(const kv_key *key, kv_sign_alg alg, const kv_alg_desc **out)
{
    const kv_type_desc *t = kv_type_desc_get(key->type);

    return resolve_alg(key->ctx, key->name, t ? t->family : KV_FAMILY_NONE, key->type, alg,
                       out);
}

/* The size of sig is checked by the caller: *siglen >= kv_sig_max_len. */
kv_rc kv_key_sign_op(kv_key *key, kv_op op, const kv_alg_desc *a, unsigned flags,
                     const unsigned char *in, size_t inlen, unsigned char *sig,
                     size_t *siglen)
{
    kv_ctx *ctx = key->ctx;
    const kv_type_desc *t = kv_type_desc_get(key->type);
    unsigned char md[KV_MAX_DIGEST], der[KV_MAX_DIGEST * 2 + 16];
    const unsigned char *tbs = NULL;
    size_t tbslen = 0, derlen = sizeof(der);
    kv_rc rc;

    KV_CHECK(rc, to_be_signed(ctx, a, flags, in, inlen, md, &tbs, &tbslen));
    KV_CHECK(rc, kv_policy_check(ctx, key->be, key, op, key->name, a));
    KV_CHECK(rc, kv_version_check(key, op));
    if (a->family == KV_FAMILY_EC && (flags & KV_SIGN_RAW)) {
        KV_CHECK(rc, key->be->ops->sign(key, a, tbs, tbslen, der, &derlen));
        KV_CHECK(rc, kv_ecdsa_der_to_raw(ctx, der, derlen, t->field_len, sig, siglen));
    } else {
        KV_CHECK(rc, key->be->ops->sign(key, a, tbs, tbslen, sig, siglen));
    }
out:
    kv_wipe(md, sizeof(md));
    return rc;
}

kv_rc kv_sign(kv_key *key, kv_sign_alg alg, unsigned flags, const unsigned char *in,
              size_t inlen, unsigned char *sig, size_t *siglen)
{
    kv_ctx *ctx = key->ctx;
    const kv_alg_desc *a = NULL;
    size_t max;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (!in && inlen)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "input is NULL with length %zu", inlen);
    KV_CHECK(rc, kv_key_alg(key, alg, &a));
    KV_CHECK(rc, check_flags(ctx, a, flags));
    max = kv_sig_max_len(key->pub, a, flags);
    if (!sig) {
        *siglen = max;
        return KV_OK;
    }
    if (*siglen < max) {
        rc = kv_error(ctx, KV_ERR_BUFFER_TOO_SMALL, "%s signature needs %zu bytes, buffer has %zu",
                      a->name, max, *siglen);
        kv_wipe(sig, *siglen);
        *siglen = max;
        return rc;
    }
    rc = kv_key_sign_op(key, KV_OP_SIGN, a, flags, in, inlen, sig, siglen);
out:
    kv_audit_event(ctx, KV_AUDIT_SIGN, key->name, key->version, key->be->name, rc, NULL);
    if (rc != KV_OK && sig && rc != KV_ERR_BUFFER_TOO_SMALL) {
        kv_wipe(sig, *siglen);
        *siglen = 0;
    }
    return rc;
}

kv_rc kv_verify(kv_ctx *ctx, const unsigned char *pub, size_t publen, kv_sign_alg alg,
                unsigned flags, const unsigned char *in, size_t inlen,
                const unsigned char *sig, size_t siglen)
{
    EVP_PKEY *pkey = NULL;
    const kv_alg_desc *a = NULL;
    unsigned char md[KV_MAX_DIGEST], *der = NULL;
    const unsigned char *tbs = NULL;
    size_t tbslen = 0, derlen = 0;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (!pub || (!in && inlen) || (!sig && siglen))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "NULL public key, input or signature");
    KV_CHECK(rc, kv_pubkey_decode(ctx, pub, publen, &pkey));
    KV_CHECK(rc, resolve_alg(ctx, "public key", kv_family_of_pkey(pkey), kv_type_of_pkey(pkey),
                             alg, &a));
    KV_CHECK(rc, check_flags(ctx, a, flags));
    if (siglen == 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE, "signature is empty");
    KV_CHECK(rc, to_be_signed(ctx, a, flags, in, inlen, md, &tbs, &tbslen));
    if (flags & KV_SIGN_RAW) {
        size_t field = ((size_t)EVP_PKEY_get_bits(pkey) + 7) / 8;
        if (siglen != 2 * field)
            KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                    "raw ECDSA signature must be %zu bytes, got %zu", 2 * field, siglen);
        KV_CHECK(rc, kv_ecdsa_raw_to_der(ctx, sig, siglen, &der, &derlen));
        sig = der;
        siglen = derlen;
    }
    rc = kv_verify_pkey(ctx, ctx ? ctx->libctx : NULL, pkey, a, tbs, tbslen, sig, siglen);
out:
    kv_wipe(md, sizeof(md));
    OPENSSL_free(der);
    EVP_PKEY_free(pkey);
    return rc;
}

/* Checks shared by kv_ecdh and kv_ecdh_hkdf; returns the validated peer. */
static kv_rc ecdh_prepare(kv_key *key, const unsigned char *peer, size_t peerlen,
                          EVP_PKEY **peer_pkey, size_t *field_len)
{
    kv_ctx *ctx = key->ctx;
    const kv_type_desc *t = kv_type_desc_get(key->type);
    kv_rc rc;

    if (!t || t->family != KV_FAMILY_EC)
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE, "key '%s' is %s; ECDH needs an EC key",
                        key->name, kv_key_type_name(key->type));
    if (!key->be->ops->ecdh)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend %s does not offer ECDH",
                        key->be->name);
    *field_len = t->field_len;
    if (!peer_pkey)
        return KV_OK;
    rc = kv_peer_decode(ctx, t->group, peer, peerlen, peer_pkey);
    if (rc == KV_OK)
        rc = kv_policy_check(ctx, key->be, key, KV_OP_ECDH, key->name, NULL);
    if (rc == KV_OK)
        rc = kv_version_check(key, KV_OP_ECDH);
    return rc;
}

kv_rc kv_ecdh(kv_key *key, const unsigned char *peer, size_t peerlen, unsigned char *secret,
              size_t *len)
{
    kv_ctx *ctx = key->ctx;
    EVP_PKEY *pp = NULL;
    size_t field = 0;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (!secret) {
        KV_CHECK(rc, ecdh_prepare(key, peer, peerlen, NULL, &field));
        *len = field;
        return KV_OK;
    }
    KV_CHECK(rc, ecdh_prepare(key, peer, peerlen, &pp, &field));
    if (*len < field) {
        rc = kv_error(ctx, KV_ERR_BUFFER_TOO_SMALL, "ECDH secret needs %zu bytes, buffer has %zu",
                      field, *len);
        kv_wipe(secret, *len);
        *len = field;
        EVP_PKEY_free(pp);
        return rc;
    }
    rc = key->be->ops->ecdh(key, pp, secret, len);
out:
    kv_audit_event(ctx, KV_AUDIT_ECDH, key->name, key->version, key->be->name, rc, NULL);
    if (rc != KV_OK && secret && rc != KV_ERR_BUFFER_TOO_SMALL) {
        kv_wipe(secret, *len);
        *len = 0;
    }
    EVP_PKEY_free(pp);
    return rc;
}

kv_rc kv_ecdh_hkdf(kv_key *key, const unsigned char *peer, size_t peerlen,
                   const unsigned char *salt, size_t saltlen, const unsigned char *info,
                   size_t infolen, unsigned char *out, size_t outlen)
{
    kv_ctx *ctx = key->ctx;
    unsigned char z[128];
    size_t zlen = sizeof(z), field = 0;
    EVP_PKEY *pp = NULL;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;
    OSSL_PARAM params[5], *p = params;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if ((!salt && saltlen) || (!info && infolen))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "salt or info is NULL with a non-zero length");
    if (outlen == 0 || outlen > KV_HKDF_MAX)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "HKDF-SHA256 output length must be 1 to %d, not %zu",
                KV_HKDF_MAX, outlen);
    KV_CHECK(rc, ecdh_prepare(key, peer, peerlen, &pp, &field));
    KV_CHECK(rc, key->be->ops->ecdh(key, pp, z, &zlen));

    kdf = EVP_KDF_fetch(ctx->libctx, "HKDF", NULL);
    kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!kctx)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "OpenSSL offers no HKDF");
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, z, zlen);
    if (saltlen)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                             (void *)(info ? info : (const unsigned char *)""),
                                             infolen);
    *p = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, out, outlen, params) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "HKDF-SHA256 failed");
out:
    kv_audit_event(ctx, KV_AUDIT_ECDH, key->name, key->version, key->be->name, rc, "hkdf-sha256");
    kv_wipe(z, sizeof(z));
    if (rc != KV_OK)
        kv_wipe(out, outlen);
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    EVP_PKEY_free(pp);
    return rc;
}
