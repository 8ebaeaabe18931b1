/*
 * policy.c - libFuzzer target for the verifier's policy file
 * (kv_policy_load: [trust], [evidence], [pcrs] and the rest of
 * docs/policy.md). The context's own [policy] section is part of the
 * configuration file and fuzzed by fuzz-config.
 *
 * Input: the file's text. May accept: any policy the library takes; a
 * loaded policy is used once (kv_evidence_verify on a fixed, unsigned
 * document), which must be refused, not crash.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static kv_ctx *ctx;
static char path[512];

static const char *const seeds[] = {
    "[trust]\nak_pin = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
    "[evidence]\nassurance = software\nmax_age = 31622400\n[pcrs]\nbank = sha256\n"
    "0 = 0000000000000000000000000000000000000000000000000000000000000000\n"
    "7 = 0000000000000000000000000000000000000000000000000000000000000000\n",
    "[trust]\nanchors = /nonexistent/roots.pem\nak_anchors = /nonexistent/ak-ca.pem\n[evidence]\nassurance = tpm\nmax_age = 300\n",
    "[evidence]\nassurance = token\n",
    "[pcrs]\nbank = sha1\n23 = 00\n",
    "[trust]\nak_pin = zz\n",
    "[evidence]\nmax_age = -1\n",
    "[unknown]\nx = y\n",
    "[pcrs\n0 =\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_path(path, sizeof(path), "policy.conf");
    if (fz_seeding()) {
        fz_seed_texts(seeds, sizeof(seeds) / sizeof(seeds[0]));
        exit(0);
    }
    ctx = fz_ctx(NULL, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static const char doc[] = "{\"format\":\"keyvault-evidence\",\"version\":1}";
    static const unsigned char nonce[32] = "verifier nonce, 32 bytes long!!";
    kv_policy *policy = NULL;
    kv_verdict *v = NULL;
    kv_rc rc;

    fz_write(path, data, size);
    rc = kv_policy_load(ctx, path, &policy);
    fz_report("kv_policy_load", ctx, rc);
    if (rc == KV_OK) {
        FZ_ASSERT(policy != NULL, "kv_policy_load succeeded without a policy");
        rc = kv_evidence_verify(ctx, doc, sizeof(doc) - 1, nonce, sizeof(nonce), policy, &v);
        FZ_ASSERT(rc != KV_OK, "an unsigned document verified");
    } else {
        FZ_ASSERT(policy == NULL, "kv_policy_load failed but handed out a policy");
    }
    kv_verdict_free(v);
    kv_policy_free(policy);
    return 0;
}
