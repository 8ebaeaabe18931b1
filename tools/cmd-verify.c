/*
 * cmd-verify.c - keyvault verify-evidence: check an evidence document
 * (keyvault attest) against the nonce issued and a policy file.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "cli.h"

const char verify_evidence_help[] =
    "usage: keyvault [-c CONF] verify-evidence FILE --nonce HEX --policy FILE [--json]\n"
    "Verify an evidence document (keyvault attest) against the nonce issued for it\n"
    "(16 to 64 bytes in hex) and a policy file (docs/evidence.md, \"Verification\").\n"
    "Prints every check that ran; the failed ones are named on standard error.\n"
    "--json prints the verdict as JSON instead. FILE may be '-' (standard input).\n"
    "Exit status 0 only when every check passed; 1 when any failed.\n";

static json_t *verdict_json(const kv_verdict *v)
{
    json_t *j = json_object(), *checks = json_array();

    if (!j || !checks) {
        json_decref(j);
        json_decref(checks);
        return NULL;
    }
    json_object_set_new(j, "ok", json_boolean(v->ok));
    json_object_set_new(j, "assurance", json_string(kv_assurance_name(v->assurance)));
    if (v->ak_name)
        json_object_set_new(j, "ak_name", json_string(v->ak_name));
    if (v->device_id)
        json_object_set_new(j, "device_id", json_string(v->device_id));
    for (size_t i = 0; i < v->count; i++) {
        json_t *c = json_pack("{s:s, s:b, s:s}", "name", v->checks[i].name, "passed",
                              v->checks[i].passed, "detail", v->checks[i].detail);
        if (!c || json_array_append_new(checks, c) != 0) {
            json_decref(j);
            json_decref(checks);
            return NULL;
        }
    }
    json_object_set_new(j, "checks", checks);
    return j;
}

int cmd_verify_evidence(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "nonce", required_argument, NULL, 'n' }, { "policy", required_argument, NULL, 'p' },
        { "json", no_argument, NULL, 'j' },         { NULL, 0, NULL, 0 },
    };
    const char *noncehex = NULL, *policyfile = NULL;
    unsigned char *doc = NULL, *nonce = NULL;
    size_t len = 0;
    long nonce_len = 0;
    int c, json = 0, ret = EXIT_FAIL;
    kv_policy *policy = NULL;
    kv_verdict *v = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "n:p:", opts, NULL)) != -1) {
        switch (c) {
        case 'n': noncehex = optarg; break;
        case 'p': policyfile = optarg; break;
        case 'j': json = 1; break;
        default: die_usage("verify-evidence", "bad option");
        }
    }
    if (!noncehex || !policyfile || optind != argc - 1)
        die_usage("verify-evidence", "expected FILE, --nonce HEX and --policy FILE");
    if (!(nonce = OPENSSL_hexstr2buf(noncehex, &nonce_len)) || nonce_len < 16 || nonce_len > 64)
        die_usage("verify-evidence", "--nonce must be 16 to 64 bytes in hex");
    if ((rc = kv_policy_load(ctx, policyfile, &policy)) != KV_OK) {
        ret = fail("verify-evidence", ctx, rc);
        goto out;
    }
    if (!(doc = read_all(argv[optind], &len))) {
        ret = fail_sys("verify-evidence", "read", argv[optind]);
        goto out;
    }
    rc = kv_evidence_verify(ctx, (const char *)doc, len, nonce, (size_t)nonce_len, policy, &v);
    if (!v) {
        ret = fail("verify-evidence", ctx, rc);
        goto out;
    }
    if (json) {
        if (print_json(verdict_json(v)) != EXIT_OK)
            goto out;
    } else {
        for (size_t i = 0; i < v->count; i++)
            printf("%-20s %s  %s\n", v->checks[i].name, v->checks[i].passed ? "ok    " : "FAILED",
                   v->checks[i].detail);
        printf("%s (assurance %s)\n", v->ok ? "evidence accepted" : "evidence rejected",
               kv_assurance_name(v->assurance));
    }
    for (size_t i = 0; i < v->count; i++)
        if (!v->checks[i].passed)
            fprintf(stderr, "%s: verify-evidence: check %s failed: %s\n", prog, v->checks[i].name,
                    v->checks[i].detail);
    ret = rc == KV_OK && v->ok ? EXIT_OK : EXIT_FAIL;
out:
    kv_verdict_free(v);
    kv_policy_free(policy);
    OPENSSL_free(nonce);
    free(doc);
    return ret;
}
