/*
 * enroll.c - libFuzzer target for the verifier's side of AK enrollment,
 * which reads what a device sends: the request (kv_enroll_challenge: the
 * JSON document, the EK certificates and their chain to the anchors, the
 * AK's TPM2B_PUBLIC, the device id, the registry's verdict) and the
 * response (kv_enroll_finish: the JSON document, the credential).
 *
 * Input: byte 0 chooses the document (even: request, odd: response), the
 * rest is its text. The EK anchors are the swtpm local CA that issued the
 * seed request's EK certificate (tests/fuzz/fixtures/enroll/, saved by
 * make-corpus.sh with the seeds, which it makes with a swtpm).
 * May accept: a request whose EK certificate chains to the anchors (the
 * challenge made must then be a keyvault-enroll-challenge document);
 * never a response, since no challenge the fuzzer could answer is pending
 * (a challenge is 32 random bytes).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static kv_ctx *ctx;
static kv_key *ca;
static char anchors[1024], registry[512];

static void seed_text(const char *name, int which, const char *text)
{
    fz_seed1(name, which, text, strlen(text));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *fix = getenv("KV_FUZZ_FIXTURES");
    struct stat sb;

    (void)argc;
    (void)argv;
    ctx = fz_ctx(NULL, NULL);
    ca = fz_ca(ctx, "enroll-ca");
    fz_path(registry, sizeof(registry), "registry.db");
    snprintf(anchors, sizeof(anchors), "%s/enroll/ek-anchors.pem",
             fix ? fix : KV_FUZZ_SRCDIR "/tests/fuzz/fixtures");
    if (stat(anchors, &sb) != 0) {
        /* no swtpm when the seeds were made: anchors nothing chains to */
        char *pem = NULL;
        if (kv_key_chain_pem(ca, &pem) != KV_OK)
            abort();
        fz_write(fz_path(anchors, sizeof(anchors), "ek-anchors.pem"), pem, strlen(pem));
        kv_string_free(pem);
    }
    if (fz_seeding()) {
        const char *tcti = getenv("KV_FUZZ_TPM_TCTI");
        seed_text("bad-request-empty-object", 0,
                  "{\"format\":\"keyvault-enroll-request\",\"version\":1,\"device_id\":\"dev-42\","
                  "\"ek_certs\":[],\"ak_public\":\"\"}");
        seed_text("response", 1,
                  "{\"format\":\"keyvault-enroll-response\",\"version\":1,\"challenge\":"
                  "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
                  "\"credential\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}");
        seed_text("bad-response-version", 1,
                  "{\"format\":\"keyvault-enroll-response\",\"version\":2}");
        if (tcti) {
            /* a real request, from the swtpm make-corpus.sh started */
            char conf[1024], *req = NULL, *chal = NULL;
            kv_ctx *tctx = NULL;
            snprintf(conf, sizeof(conf), "[tpm]\ntcti = %s\n", tcti);
            tctx = fz_ctx("tpm, software", conf);
            if (kv_enroll_request(tctx, "dev-42", &req) != KV_OK) {
                fprintf(stderr, "fuzz-enroll: kv_enroll_request: %s\n", kv_errmsg(tctx));
                abort();
            }
            seed_text("request", 0, req);
            /* and the challenge it gets, as a response-shaped broken input */
            if (kv_enroll_challenge(ctx, req, strlen(req), anchors, registry, 0, &chal) ==
                KV_OK)
                seed_text("bad-challenge-as-response", 1, chal);
            kv_string_free(chal);
            kv_string_free(req);
            kv_ctx_free(tctx);
        }
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *out = NULL;
    kv_rc rc;

    if (size < 1)
        return 0;
    if (data[0] & 1) {
        rc = kv_enroll_finish(ca, (const char *)data + 1, size - 1, registry, 0, &out);
        fz_report("kv_enroll_finish", ctx, rc);
        FZ_ASSERT(rc != KV_OK, "kv_enroll_finish accepted a response to no challenge");
    } else {
        rc = kv_enroll_challenge(ctx, (const char *)data + 1, size - 1, anchors, registry, 0,
                                 &out);
        fz_report("kv_enroll_challenge", ctx, rc);
        if (rc == KV_OK)
            FZ_ASSERT(out && strstr(out, "\"keyvault-enroll-challenge\""),
                      "kv_enroll_challenge succeeded without a challenge document");
    }
    FZ_ASSERT(rc == KV_OK || out == NULL, "a failed call handed out a document");
    kv_string_free(out);
    return 0;
}
