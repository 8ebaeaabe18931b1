/*
 * cmd-policy.c - key policies on the command line: keygen's policy
 * options (--allow, --algs, --not-before, --not-after, --hardware-only)
 * and `keyvault policy show NAME [--json]`.
 */
#define _GNU_SOURCE /* timegm */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const struct {
    const char *name;
    unsigned bit;
} uses[] = {
    { "sign", KV_USE_SIGN },
    { "ecdh", KV_USE_ECDH },
    { "attest", KV_USE_ATTEST },
    { "issue", KV_USE_ISSUE },
};
#define N_USES (sizeof(uses) / sizeof(uses[0]))

/* "2026-11-26T19:00:00Z", "@SECONDS" or "+DURATION" (30s, 15m, 12h, 7d) */
static int64_t parse_time(const char *opt, const char *s)
{
    struct tm tm;
    const char *end;
    char *num_end;
    long long v;

    if (s[0] == '@' || s[0] == '+') {
        errno = 0;
        v = strtoll(s + 1, &num_end, 10);
        if (s[1] < '0' || s[1] > '9' || errno || v < 0 || v > 100LL * 366 * 86400 * 100)
            die_usage("keygen", "%s: expected YYYY-MM-DDTHH:MM:SSZ, @SECONDS or +DURATION", opt);
        if (s[0] == '@') {
            if (*num_end)
                die_usage("keygen", "%s: @SECONDS is a number", opt);
            return (int64_t)v;
        }
        if (!strcmp(num_end, "s"))
            ;
        else if (!strcmp(num_end, "m"))
            v *= 60;
        else if (!strcmp(num_end, "h"))
            v *= 3600;
        else if (!strcmp(num_end, "d"))
            v *= 86400;
        else
            die_usage("keygen", "%s: a duration ends in s, m, h or d", opt);
        return (int64_t)time(NULL) + (int64_t)v;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end)
        die_usage("keygen", "%s: expected YYYY-MM-DDTHH:MM:SSZ (UTC), @SECONDS or +DURATION",
                  opt);
    return (int64_t)timegm(&tm);
}

int policy_option(int opt, char *arg, kv_key_policy *p, int *set)
{
    char *save = NULL;

    *set = 1;
    switch (opt) {
    case POLICY_OPT_ALLOW:
        p->uses = 0;
        for (char *t = strtok_r(arg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            unsigned bit = 0;
            for (size_t i = 0; i < N_USES; i++)
                if (!strcmp(t, uses[i].name))
                    bit = uses[i].bit;
            if (!bit)
                die_usage("keygen", "--allow: unknown use (sign, ecdh, attest, issue)");
            p->uses |= bit;
        }
        if (!p->uses)
            die_usage("keygen", "--allow needs at least one use");
        return 0;
    case POLICY_OPT_ALGS:
        p->algs = 0;
        for (char *t = strtok_r(arg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int a = kv_sign_alg_from_name(t);
            if (a <= 0 || a > 31)
                die_usage("keygen", "--algs: unknown algorithm (ecdsa-sha256, ecdsa-sha384, "
                                    "ecdsa-sha512, rsa-pss-sha256, ..., rsa-pkcs1-sha256, ..., "
                                    "ed25519)");
            p->algs |= 1u << a;
        }
        if (!p->algs)
            die_usage("keygen", "--algs needs at least one algorithm");
        return 0;
    case POLICY_OPT_NOT_BEFORE:
        p->not_before = parse_time("--not-before", arg);
        return 0;
    case POLICY_OPT_NOT_AFTER:
        p->not_after = parse_time("--not-after", arg);
        return 0;
    case POLICY_OPT_HARDWARE_ONLY:
        p->flags |= KV_POLICY_HARDWARE_ONLY;
        return 0;
    }
    *set = 0;
    return -1;
}

static void time_text(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
}

static json_t *policy_json(const kv_key_policy *p, int stored)
{
    json_t *j = json_object(), *ju = json_array(), *ja = json_array();
    char nb[32], na[32];

    if (!j || !ju || !ja) {
        json_decref(j);
        json_decref(ju);
        json_decref(ja);
        return NULL;
    }
    for (size_t i = 0; i < N_USES; i++)
        if (p->uses & uses[i].bit)
            json_array_append_new(ju, json_string(uses[i].name));
    for (int a = 1; a < 32; a++)
        if (p->algs & (1u << a))
            json_array_append_new(ja, json_string(kv_sign_alg_name((kv_sign_alg)a)));
    time_text(p->not_before, nb);
    time_text(p->not_after, na);
    json_object_set_new(j, "policy", json_boolean(stored));
    json_object_set_new(j, "uses", ju);
    json_object_set_new(j, "algs", ja);
    json_object_set_new(j, "not_before", p->not_before ? json_string(nb) : json_null());
    json_object_set_new(j, "not_after", p->not_after ? json_string(na) : json_null());
    json_object_set_new(j, "hardware_only", json_boolean(p->flags & KV_POLICY_HARDWARE_ONLY));
    return j;
}

const char policy_help[] =
    "usage: keyvault [-c CONF] policy show NAME|URI [--json]\n"
    "Show the policy stored with a key: the uses it allows (sign, ecdh, attest, issue),\n"
    "its algorithms, its validity window and whether it must stay in hardware. A key\n"
    "made without one allows everything (\"policy: none\"). Policies are set at\n"
    "creation: keyvault keygen NAME --allow sign --algs ecdsa-sha256 --not-after TIME\n"
    "--hardware-only (see keyvault keygen --help).\n";

int cmd_policy(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
                                          { NULL, 0, NULL, 0 } };
    kv_key_policy p = KV_KEY_POLICY_INIT, none = KV_KEY_POLICY_INIT;
    kv_key_info info;
    kv_key *key = NULL;
    int json = 0, c, stored;
    char text[128], nb[32], na[32];
    kv_rc rc;

    if (argc < 2 || strcmp(argv[1], "show") != 0)
        die_usage("policy", "expected a command: show");
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 'j')
            die_usage("policy", "bad option");
        json = 1;
    }
    if (optind != argc - 1)
        die_usage("policy", "show expects one key NAME or URI");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_get_policy(key, &p);
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc != KV_OK) {
        kv_key_free(key);
        return fail("policy", ctx, rc);
    }
    stored = p.uses != none.uses || p.algs != none.algs || p.not_before != none.not_before ||
             p.not_after != none.not_after || p.flags != none.flags;
    if (json) {
        json_t *j = policy_json(&p, stored);
        if (j && info.name)
            json_object_set_new(j, "name", json_string(info.name));
        if (j)
            json_object_set_new(j, "backend", json_string(info.backend));
        kv_key_free(key);
        return j ? print_json(j) : EXIT_FAIL;
    }
    printf("key: %s (backend %s)\n", info.name ? info.name : "(in no store)", info.backend);
    printf("policy: %s\n", stored ? "stored with the key" : "none (everything allowed)");
    text[0] = '\0';
    for (size_t i = 0; i < N_USES; i++)
        if (p.uses & uses[i].bit)
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s",
                     text[0] ? ", " : "", uses[i].name);
    printf("uses: %s\n", text);
    text[0] = '\0';
    for (int a = 1; a < 32; a++)
        if (p.algs & (1u << a))
            snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s",
                     text[0] ? ", " : "", kv_sign_alg_name((kv_sign_alg)a));
    printf("algorithms: %s\n", text[0] ? text : "any that fits the key");
    time_text(p.not_before, nb);
    time_text(p.not_after, na);
    printf("not before: %s\n", p.not_before ? nb : "-");
    printf("not after: %s\n", p.not_after ? na : "-");
    printf("hardware only: %s\n", (p.flags & KV_POLICY_HARDWARE_ONLY) ? "yes" : "no");
    kv_key_free(key);
    return EXIT_OK;
}
