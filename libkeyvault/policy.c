/*
 * policy.c - the verification policy file (kv_policy_load).
 *
 *   [trust]
 *   anchors = roots.pem          # the identity key's chain must reach one of these
 *   ak_anchors = ak-ca.pem       # CAs whose tpm-ak certificates make an AK trusted
 *   ak_pin = HEX[, HEX...]       # SHA-256 of trusted AKs' SubjectPublicKeyInfo
 *   registry = registry.db       # AKs enrolled by credential activation (kv_registry_*)
 *   [evidence]
 *   assurance = tpm              # the floor: tpm, token or software (default tpm)
 *   max_age = 300                # seconds between "created" and now (default 300)
 *   [pcrs]
 *   bank = sha256
 *   0 = HEX                      # expected values; PCRs not listed are not checked
 *
 * The file is parsed by config.c (errors name the file and line) and held
 * against the keys above; certificate files are read once, here.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/x509_vfy.h>

#include "policy.h"

static const struct kv_config_key trust_keys[] = {
    { "anchors", 0 }, { "ak_anchors", 0 }, { "ak_pin", 0 }, { "registry", 0 }, { NULL, 0 },
};
static const struct kv_config_key evidence_keys[] = {
    { "assurance", 0 }, { "max_age", 0 }, { NULL, 0 },
};
static const struct kv_config_key pcr_keys[] = {
    { "bank", 0 }, { "0", 0 },  { "1", 0 },  { "2", 0 },  { "3", 0 },  { "4", 0 },
    { "5", 0 },    { "6", 0 },  { "7", 0 },  { "8", 0 },  { "9", 0 },  { "10", 0 },
    { "11", 0 },   { "12", 0 }, { "13", 0 }, { "14", 0 }, { "15", 0 }, { "16", 0 },
    { "17", 0 },   { "18", 0 }, { "19", 0 }, { "20", 0 }, { "21", 0 }, { "22", 0 },
    { "23", 0 },   { NULL, 0 },
};
static const struct kv_config_section policy_sections[] = {
    { "trust", trust_keys },
    { "evidence", evidence_keys },
    { "pcrs", pcr_keys },
};

size_t kv_pcr_bank_size(const char *bank)
{
    static const struct { const char *name; size_t len; } banks[] = {
        { "sha1", 20 }, { "sha256", 32 }, { "sha384", 48 }, { "sha512", 64 },
    };

    for (size_t i = 0; i < sizeof(banks) / sizeof(banks[0]); i++)
        if (strcmp(bank, banks[i].name) == 0)
            return banks[i].len;
    return 0;
}

void kv_policy_free(kv_policy *policy)
{
    if (!policy)
        return;
    X509_STORE_free(policy->anchors);
    X509_STORE_free(policy->ak_anchors);
    free(policy->registry);
    free(policy->path);
    free(policy);
}

/* A path from the policy: absolute, or relative to the policy file's directory. */
static char *policy_relative(const char *policy_path, const char *file)
{
    const char *slash = strrchr(policy_path, '/');

    if (file[0] == '/' || !slash)
        return kv_strdup(file);
    return kv_asprintf("%.*s/%s", (int)(slash - policy_path), policy_path, file);
}

/* [trust] key: a PEM file of one or more CA certificates, as a store. */
static kv_rc load_anchors(kv_ctx *ctx, const kv_config *cfg, const char *policy_path,
                          const char *key, X509_STORE **out)
{
    const char *v = kv_config_get(cfg, "trust", key);
    char *file = NULL;
    X509_STORE *store = NULL;
    char what[PATH_MAX + 64];
    int n;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!v)
        return KV_OK;
    if (!*v)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [trust] %s is empty", policy_path, key);
    if (!(file = policy_relative(policy_path, v)) || !(store = X509_STORE_new()))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    snprintf(what, sizeof(what), "%s: [trust] %s", policy_path, key);
    KV_CHECK(rc, kv_anchors_load(ctx, what, file, store, &n));
    if (n <= 0)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [trust] %s: '%s' holds no certificate",
                policy_path, key, file);
    *out = store;
    store = NULL;
out:
    X509_STORE_free(store);
    free(file);
    return rc;
}

/* Exactly 2 * len hex digits (either case) into out. */
static bool hex_exact(const char *s, unsigned char *out, size_t len)
{
    size_t got = 0;

    if (strlen(s) != 2 * len || strspn(s, "0123456789abcdefABCDEF") != 2 * len)
        return false;
    return OPENSSL_hexstr2buf_ex(out, len, &got, s, '\0') == 1 && got == len;
}

/* [trust] ak_pin: SHA-256 values separated by commas or white space. */
static kv_rc load_pins(kv_ctx *ctx, const kv_config *cfg, kv_policy *p)
{
    const char *v = kv_config_get(cfg, "trust", "ak_pin");
    char *list = NULL, *save = NULL;
    kv_rc rc = KV_OK;

    if (!v)
        return KV_OK;
    if (!(list = kv_strdup(v)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (char *t = strtok_r(list, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (p->npins == KV_POLICY_PINS)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [trust] ak_pin lists more than %d keys",
                    p->path, KV_POLICY_PINS);
        if (!hex_exact(t, p->pins[p->npins], 32))
            KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                    "%s: [trust] ak_pin: entry %zu is not a SHA-256 value (64 hex digits)",
                    p->path, p->npins + 1);
        p->npins++;
    }
    if (p->npins == 0)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [trust] ak_pin is empty", p->path);
out:
    free(list);
    return rc;
}

static kv_rc load_pcrs(kv_ctx *ctx, const kv_config *cfg, kv_policy *p)
{
    const char *bank = kv_config_get(cfg, "pcrs", "bank");
    char key[4];
    kv_rc rc = KV_OK;

    for (unsigned i = 0; i < KV_POLICY_PCRS; i++) {
        const char *v;
        snprintf(key, sizeof(key), "%u", i);
        if (!(v = kv_config_get(cfg, "pcrs", key)))
            continue;
        if (!bank)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [pcrs] lists PCR %u but no bank", p->path, i);
        if (p->npcrs == 0) {
            if (!(p->pcr_len = kv_pcr_bank_size(bank)))
                KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                        "%s: [pcrs] bank: expected sha1, sha256, sha384 or sha512", p->path);
            snprintf(p->bank, sizeof(p->bank), "%s", bank);
        }
        if (!hex_exact(v, p->pcrs[p->npcrs].value, p->pcr_len))
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [pcrs] %u: expected %zu hex digits (a %s value)",
                    p->path, i, 2 * p->pcr_len, p->bank);
        p->pcrs[p->npcrs++].index = i;
    }
    if (bank && p->npcrs == 0)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [pcrs] names a bank but no PCR value", p->path);
out:
    return rc;
}

kv_rc kv_policy_load(kv_ctx *ctx, const char *path, kv_policy **out)
{
    kv_config *cfg = NULL;
    kv_policy *p = NULL;
    const char *v;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    if (!(p = calloc(1, sizeof(*p))) || !(p->path = kv_strdup(path)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_config_load(ctx, path, &cfg));
    KV_CHECK(rc, kv_config_check(ctx, cfg, policy_sections,
                                 sizeof(policy_sections) / sizeof(policy_sections[0])));
    /* the registry is opened by each verification (read only, its own
     * transaction), so that enrollments and revocations count at once */
    if ((v = kv_config_get(cfg, "trust", "registry"))) {
        if (!*v)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: [trust] registry is empty", path);
        if (!(p->registry = policy_relative(path, v)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    KV_CHECK(rc, load_anchors(ctx, cfg, path, "anchors", &p->anchors));
    KV_CHECK(rc, load_anchors(ctx, cfg, path, "ak_anchors", &p->ak_anchors));
    KV_CHECK(rc, load_pins(ctx, cfg, p));

    v = kv_config_get(cfg, "evidence", "assurance");
    if (!v || strcmp(v, "tpm") == 0)
        p->floor = KV_ASSURANCE_TPM;
    else if (strcmp(v, "token") == 0)
        p->floor = KV_ASSURANCE_TOKEN;
    else if (strcmp(v, "software") == 0)
        p->floor = KV_ASSURANCE_SOFTWARE;
    else
        KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                "%s: [evidence] assurance: expected tpm, token or software", path);
    KV_CHECK(rc, kv_config_get_long(ctx, cfg, "evidence", "max_age", 300, 1, 366L * 86400,
                                    &p->max_age));
    KV_CHECK(rc, load_pcrs(ctx, cfg, p));
    if (p->floor == KV_ASSURANCE_TPM && !p->ak_anchors && p->npins == 0 && !p->registry)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                "%s: the assurance floor is tpm but [trust] names no way to trust an AK "
                "(ak_anchors, ak_pin or registry)", path);
    *out = p;
    p = NULL;
out:
    kv_config_free(cfg);
    kv_policy_free(p);
    return rc;
}
