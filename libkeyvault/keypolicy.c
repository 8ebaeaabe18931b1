/*
 * keypolicy.c - what a key may be used for (its policy, stored with it)
 * and what a context may touch (the configuration's [policy] section),
 * both enforced in kv_policy_check (key.c) before any backend call.
 *
 * A key's policy travels as a JSON object (jansson), the same in a
 * software or TPM key's MAC'd NAME.json and in a PKCS#11 key's policy data
 * object:
 *   {"uses": ["sign", "ecdh"], "algs": ["ecdsa-sha256"], "not_before": 0,
 *    "not_after": 0, "hardware_only": false}
 * Every member is present, nothing else is: anything else is damage
 * (KV_ERR_CORRUPT), never "no policy". docs/policy.md has the rules.
 */
#include "config.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "internal.h"

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))
#define KV_POLICY_DIGEST_PREFIX "libkeyvault key policy v1\n"
#define KV_ALG_LAST KV_ALG_ED25519

static const struct {
    unsigned bit;
    const char *name;
} use_names[] = {
    { KV_USE_SIGN, "sign" },
    { KV_USE_ECDH, "ecdh" },
    { KV_USE_ATTEST, "attest" },
    { KV_USE_ISSUE, "issue" },
};

const char *kv_use_name(unsigned bit)
{
    for (size_t i = 0; i < N_ELEM(use_names); i++)
        if (use_names[i].bit == bit)
            return use_names[i].name;
    return "unknown";
}

unsigned kv_use_of_op(kv_op op)
{
    switch (op) {
    case KV_OP_SIGN: return KV_USE_SIGN;
    case KV_OP_ECDH: return KV_USE_ECDH;
    case KV_OP_ATTEST: return KV_USE_ATTEST;
    case KV_OP_ISSUE: return KV_USE_ISSUE;
    default: return 0;
    }
}

/* "sign, ecdh" for the bits of uses ("none" when 0). */
void kv_uses_text(unsigned uses, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < N_ELEM(use_names) && used < len; i++)
        if (uses & use_names[i].bit) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                             use_names[i].name);
            if (n < 0)
                break;
            used += (size_t)n;
        }
    if (!used)
        snprintf(buf, len, "none");
}

void kv_algs_text(uint32_t algs, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int a = 1; a <= KV_ALG_LAST && used < len; a++)
        if (algs & (1u << a)) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                             kv_sign_alg_name((kv_sign_alg)a));
            if (n < 0)
                break;
            used += (size_t)n;
        }
    if (!used)
        snprintf(buf, len, "any that fits the key");
}

kv_rc kv_key_policy_copy(const kv_ctx *ctx, const kv_key_policy *in, kv_key_type type,
                         kv_key_policy **out)
{
    const kv_type_desc *t = kv_type_desc_get(type);
    kv_key_policy *p = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (in->size < sizeof(kv_key_policy))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "key policy: size %zu is smaller than kv_key_policy (%zu): set it to "
                "sizeof(kv_key_policy) or start from KV_KEY_POLICY_INIT", in->size,
                sizeof(kv_key_policy));
    if (in->size > sizeof(kv_key_policy)) {
        /* a newer caller's fields this library does not know must be unset */
        const unsigned char *extra = (const unsigned char *)in + sizeof(kv_key_policy);
        for (size_t i = 0; i < in->size - sizeof(kv_key_policy); i++)
            if (extra[i])
                KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                        "key policy: fields past the %zu bytes this library knows are set",
                        sizeof(kv_key_policy));
    }
    if (in->uses & ~KV_USE_ALL)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: unknown uses bits 0x%x",
                in->uses & ~KV_USE_ALL);
    if (!in->uses)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "key policy: uses is 0 (a key allowed nothing is of no use)");
    if (t && t->family != KV_FAMILY_EC && in->uses == KV_USE_ECDH)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "key policy: ecdh is the only use, and a %s key cannot do ECDH", t->name);
    if (in->algs & ~(((1u << (KV_ALG_LAST + 1)) - 1) & ~1u))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: unknown algorithm bits 0x%x",
                (unsigned)in->algs);
    for (int a = 1; t && a <= KV_ALG_LAST; a++)
        if ((in->algs & (1u << a)) && kv_alg_desc_get((kv_sign_alg)a)->family != t->family)
            KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: algorithm %s does not fit a %s key",
                    kv_sign_alg_name((kv_sign_alg)a), t->name);
    if (in->not_before < 0 || in->not_after < 0)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "key policy: not_before and not_after are seconds since the epoch (0: none)");
    if (in->not_before && in->not_after && in->not_after <= in->not_before)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: not_after is not after not_before");
    if (in->not_after && in->not_after <= (int64_t)time(NULL))
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: not_after is already past");
    if (in->flags & ~KV_POLICY_HARDWARE_ONLY)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key policy: unknown flags 0x%x",
                in->flags & ~KV_POLICY_HARDWARE_ONLY);
    p = calloc(1, sizeof(*p));
    if (!p)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    p->size = sizeof(*p);
    p->uses = in->uses;
    p->algs = in->algs;
    p->not_before = in->not_before;
    p->not_after = in->not_after;
    p->flags = in->flags;
    *out = p;
out:
    return rc;
}

struct json_t *kv_key_policy_json(const kv_key_policy *p)
{
    json_t *o = json_object(), *uses = json_array(), *algs = json_array();
    bool ok = o && uses && algs;

    for (size_t i = 0; ok && i < N_ELEM(use_names); i++)
        if (p->uses & use_names[i].bit)
            ok = json_array_append_new(uses, json_string(use_names[i].name)) == 0;
    for (int a = 1; ok && a <= KV_ALG_LAST; a++)
        if (p->algs & (1u << a))
            ok = json_array_append_new(algs, json_string(kv_sign_alg_name((kv_sign_alg)a))) == 0;
    ok = ok && json_object_set(o, "uses", uses) == 0 && json_object_set(o, "algs", algs) == 0 &&
         json_object_set_new(o, "not_before", json_integer((json_int_t)p->not_before)) == 0 &&
         json_object_set_new(o, "not_after", json_integer((json_int_t)p->not_after)) == 0 &&
         json_object_set_new(o, "hardware_only",
                             json_boolean(p->flags & KV_POLICY_HARDWARE_ONLY)) == 0;
    json_decref(uses);
    json_decref(algs);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

kv_rc kv_key_policy_from_json(const kv_ctx *ctx, const char *what, const struct json_t *j,
                              kv_key_policy **out)
{
    json_t *uses = NULL, *algs = NULL, *v;
    json_int_t nb = 0, na = 0;
    int hw = 0;
    size_t i;
    kv_key_policy *p = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (json_unpack((json_t *)j, "{s:o, s:o, s:I, s:I, s:b !}", "uses", &uses, "algs", &algs,
                    "not_before", &nb, "not_after", &na, "hardware_only", &hw) != 0 ||
        !json_is_array(uses) || !json_is_array(algs) || nb < 0 || na < 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s: the stored policy is damaged (unexpected fields)",
                what);
    p = calloc(1, sizeof(*p));
    if (!p)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    p->size = sizeof(*p);
    json_array_foreach(uses, i, v) {
        unsigned bit = 0;
        for (size_t k = 0; json_is_string(v) && k < N_ELEM(use_names); k++)
            if (!strcmp(json_string_value(v), use_names[k].name))
                bit = use_names[k].bit;
        if (!bit || (p->uses & bit))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "%s: the stored policy is damaged (an unknown or repeated use)", what);
        p->uses |= bit;
    }
    json_array_foreach(algs, i, v) {
        int a = json_is_string(v) ? kv_sign_alg_from_name(json_string_value(v)) : -1;
        if (a < 1 || a > KV_ALG_LAST || (p->algs & (1u << a)))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "%s: the stored policy is damaged (an unknown or repeated algorithm)", what);
        p->algs |= 1u << a;
    }
    if (!p->uses)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s: the stored policy is damaged (no use)", what);
    p->not_before = (int64_t)nb;
    p->not_after = (int64_t)na;
    p->flags = hw ? KV_POLICY_HARDWARE_ONLY : 0;
    *out = p;
    p = NULL;
out:
    free(p);
    return rc;
}

kv_rc kv_key_policy_digest(const kv_ctx *ctx, const kv_key_policy *p, unsigned char md[32])
{
    json_t *j = kv_key_policy_json(p);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *msg = text ? kv_asprintf("%s%s", KV_POLICY_DIGEST_PREFIX, text) : NULL;
    kv_rc rc = KV_OK;

    if (!msg)
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    else if (EVP_Q_digest(ctx ? ctx->libctx : NULL, "SHA256", NULL, msg, strlen(msg), md,
                          NULL) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "SHA-256 of the key policy failed");
    json_decref(j);
    free(text);
    free(msg);
    return rc;
}

/* ---- the context's [policy] ------------------------------------------- */

struct kv_ctx_policy {
    char *keys;          /* comma-separated fnmatch patterns, as configured; NULL: any */
    char *backends;      /* comma-separated backend names; NULL: any */
    unsigned uses;       /* KV_USE_* this context may use */
    bool uses_set;
    bool manage;         /* may generate and destroy */
};

const struct kv_config_key kv_policy_config_keys[] = {
    { "keys", 0 },
    { "backends", 0 },
    { "uses", 0 },
    { "manage", 0 },
    { NULL, 0 },
};

/* Whether word is one of the comma-separated items of list (each matched
 * as an fnmatch pattern when patterns). */
static bool list_has(const char *list, const char *word, bool patterns)
{
    const char *s = list;

    while (*s) {
        size_t n;
        char item[256];

        s += strspn(s, ", \t");
        n = strcspn(s, ", \t");
        if (n == 0)
            break;
        if (n < sizeof(item)) {
            memcpy(item, s, n);
            item[n] = '\0';
            if (patterns ? fnmatch(item, word, 0) == 0 : strcmp(item, word) == 0)
                return true;
        }
        s += n;
    }
    return false;
}

/* Call fn on each item of a comma-separated list; stop at its first error. */
static kv_rc list_each(const char *list, const char *key, kv_rc (*fn)(const char *, const char *,
                                                                      void *), void *arg)
{
    char *copy = kv_strdup(list), *save = NULL;
    kv_rc rc = KV_OK;

    if (!copy)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    for (char *t = strtok_r(copy, ", \t", &save); t && rc == KV_OK;
         t = strtok_r(NULL, ", \t", &save))
        rc = fn(t, key, arg);
    free(copy);
    return rc;
}

static kv_rc check_backend_item(const char *item, const char *key, void *arg)
{
    (void)arg;
    if (strcmp(item, "tpm") && strcmp(item, "pkcs11") && strcmp(item, "software"))
        return kv_error(NULL, KV_ERR_CONFIG,
                        "[policy] %s: '%.64s' is not a backend (tpm, pkcs11, software)",
                        key, item);
    return KV_OK;
}

static kv_rc check_pattern_item(const char *item, const char *key, void *arg)
{
    (void)arg;
    if (strlen(item) >= 256)
        return kv_error(NULL, KV_ERR_CONFIG, "[policy] %s: a pattern longer than 255", key);
    return KV_OK;
}

static kv_rc use_item(const char *item, const char *key, void *arg)
{
    unsigned *uses = arg;

    for (size_t i = 0; i < N_ELEM(use_names); i++)
        if (!strcmp(item, use_names[i].name)) {
            *uses |= use_names[i].bit;
            return KV_OK;
        }
    return kv_error(NULL, KV_ERR_CONFIG,
                    "[policy] %s: '%.64s' is not a use (sign, ecdh, attest, issue)", key,
                    item);
}

kv_rc kv_ctx_policy_load(const kv_config *cfg, kv_ctx_policy **out)
{
    kv_ctx_policy *p = calloc(1, sizeof(*p));
    const char *keys = kv_config_get(cfg, "policy", "keys");
    const char *backends = kv_config_get(cfg, "policy", "backends");
    const char *uses = kv_config_get(cfg, "policy", "uses");
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!p)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_config_get_bool(NULL, cfg, "policy", "manage", true, &p->manage));
    if (keys) {
        KV_CHECK(rc, list_each(keys, "keys", check_pattern_item, NULL));
        if (!(p->keys = kv_strdup(keys)))
            KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    if (backends) {
        KV_CHECK(rc, list_each(backends, "backends", check_backend_item, NULL));
        if (!(p->backends = kv_strdup(backends)))
            KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    if (uses) {
        p->uses_set = true;
        KV_CHECK(rc, list_each(uses, "uses", use_item, &p->uses));
    }
    *out = p;
    p = NULL;
out:
    kv_ctx_policy_free(p);
    return rc;
}

void kv_ctx_policy_free(kv_ctx_policy *p)
{
    if (!p)
        return;
    free(p->keys);
    free(p->backends);
    free(p);
}

static const char *op_name(kv_op op)
{
    switch (op) {
    case KV_OP_GENERATE: return "generate";
    case KV_OP_OPEN: return "open";
    case KV_OP_DESTROY: return "destroy";
    case KV_OP_SIGN: return "sign";
    case KV_OP_ECDH: return "ecdh";
    case KV_OP_ATTEST: return "attest";
    case KV_OP_ISSUE: return "issue";
    }
    return "use";
}

/* The name a key's versions share: "gw" for "gw@3" (the [policy] keys
 * patterns name keys, not versions). */
static const char *key_base_name(const char *name, char base[KV_NAME_MAX + 1])
{
    const char *at = strrchr(name, '@');
    size_t n = at ? (size_t)(at - name) : 0;

    if (!at || n == 0 || n > KV_NAME_MAX || at[1] == '\0' ||
        strspn(at + 1, "0123456789") != strlen(at + 1))
        return name;
    memcpy(base, name, n);
    base[n] = '\0';
    return base;
}

kv_rc kv_ctx_policy_check(const kv_ctx *ctx, const kv_backend *be, kv_op op, const char *name,
                          bool is_key)
{
    const kv_ctx_policy *p = ctx->cpolicy;
    unsigned use = kv_use_of_op(op);
    char base[KV_NAME_MAX + 1];

    if (!p)
        return KV_OK;
    if (p->backends && be && !list_has(p->backends, be->name, false))
        return kv_error(ctx, KV_ERR_POLICY,
                        "context policy ([policy] backends): backend '%s' is not one of \"%s\" "
                        "(%s refused)", be->name, p->backends, op_name(op));
    if (p->keys && is_key && !list_has(p->keys, key_base_name(name, base), true))
        return kv_error(ctx, KV_ERR_POLICY,
                        "context policy ([policy] keys): key '%s' is not one of \"%s\" "
                        "(%s refused)", name, p->keys, op_name(op));
    if (p->uses_set && use && !(p->uses & use)) {
        char allowed[48];
        kv_uses_text(p->uses, allowed, sizeof(allowed));
        return kv_error(ctx, KV_ERR_POLICY,
                        "context policy ([policy] uses): %s is not allowed in this context "
                        "(allowed: %s)%s%s%s", kv_use_name(use), allowed,
                        is_key ? " for key '" : "", is_key ? name : "", is_key ? "'" : "");
    }
    if (!p->manage && (op == KV_OP_GENERATE || op == KV_OP_DESTROY))
        return kv_error(ctx, KV_ERR_POLICY,
                        "context policy ([policy] manage = false): %s of key '%s' refused",
                        op_name(op), name);
    return KV_OK;
}

bool kv_ctx_policy_names_keys(const kv_ctx *ctx)
{
    return ctx->cpolicy && ctx->cpolicy->keys;
}

/* "2026-11-26T19:00:00Z" */
static void time_text(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
}

kv_rc kv_key_policy_check(const kv_key *key, kv_backend *be, kv_op op, const char *name,
                          const kv_alg_desc *alg)
{
    const kv_ctx *ctx = key->ctx;
    const kv_key_policy *p = key->policy;
    unsigned use = kv_use_of_op(op);
    char who[KV_NAME_MAX + 64], buf[96];
    int64_t now;

    if (!p)
        return KV_OK;
    if (key->version > 1)
        snprintf(who, sizeof(who), "policy of key '%s' (version %u)", name, key->version);
    else
        snprintf(who, sizeof(who), "policy of key '%s'", name);
    if ((p->flags & KV_POLICY_HARDWARE_ONLY) && be->ops->assurance == KV_ASSURANCE_SOFTWARE)
        return kv_error(ctx, KV_ERR_POLICY, "%s: hardware only, and backend '%s' is software "
                        "(%s refused)", who, be->name, op_name(op));
    if (!use)
        return KV_OK;
    if (!(p->uses & use)) {
        kv_uses_text(p->uses, buf, sizeof(buf));
        return kv_error(ctx, KV_ERR_POLICY, "%s: %s is not allowed (allowed: %s)", who,
                        kv_use_name(use), buf);
    }
    now = (int64_t)time(NULL);
    if (p->not_before && now < p->not_before) {
        time_text(p->not_before, buf);
        return kv_error(ctx, KV_ERR_POLICY, "%s: not valid before %s (%s refused)", who, buf,
                        kv_use_name(use));
    }
    if (p->not_after && now > p->not_after) {
        time_text(p->not_after, buf);
        return kv_error(ctx, KV_ERR_POLICY, "%s: not valid after %s (%s refused)", who, buf,
                        kv_use_name(use));
    }
    if (alg && p->algs && !(p->algs & (1u << alg->alg))) {
        kv_algs_text(p->algs, buf, sizeof(buf));
        return kv_error(ctx, KV_ERR_POLICY, "%s: %s is not allowed (allowed: %s)", who,
                        alg->name, buf);
    }
    return KV_OK;
}
