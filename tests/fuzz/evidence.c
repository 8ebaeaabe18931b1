/*
 * evidence.c - libFuzzer target for the evidence parser and verifier
 * (kv_evidence_verify). Built with `./configure CC=clang --enable-fuzz
 * --with-sanitizer=address,undefined`; run e.g.
 *
 *   tests/fuzz/fuzz-evidence -max_len=300000 CORPUS_DIR $SRCDIR/tests/evidence
 *
 * The policy trusts a pinned AK and expects two PCR values, so that TPM
 * documents get through every check; the nonce is the one of the checked-in
 * corpus (tests/evidence/) and of tests/check_verify.c. Nothing may crash,
 * leak or be accepted: an accepted document would have to carry a valid
 * signature by the pinned AK, which no fuzzer can make.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/err.h>

#include "keyvault.h"

static const unsigned char nonce[32] = "verifier nonce, 32 bytes long!!";
static kv_ctx *ctx;
static kv_policy *policy;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/kvfuzz.XXXXXX", conf[64], pol[64];

    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        abort();
    snprintf(conf, sizeof(conf), "%s/verifier.conf", dir);
    snprintf(pol, sizeof(pol), "%s/policy.conf", dir);
    /* a verifier's context: its only backend, a TPM, is not there */
    write_file(conf, "[keyvault]\nbackends = tpm\n[tpm]\ntcti = swtpm:host=127.0.0.1,port=9\n");
    write_file(pol, "[trust]\nak_pin = "
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                    "[evidence]\nassurance = software\nmax_age = 31622400\n"
                    "[pcrs]\nbank = sha256\n"
                    "0 = 0000000000000000000000000000000000000000000000000000000000000000\n"
                    "7 = 0000000000000000000000000000000000000000000000000000000000000000\n");
    if (kv_ctx_new(&ctx, conf) != KV_OK || kv_policy_load(ctx, pol, &policy) != KV_OK)
        abort();
    unlink(conf);
    unlink(pol);
    rmdir(dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_verdict *v = NULL;
    kv_rc rc;

    ERR_clear_error();
    rc = kv_evidence_verify(ctx, (const char *)data, size, nonce, sizeof(nonce), policy, &v);
    /* fail closed: never accepted, and a verdict that says why */
    if (rc == KV_OK || (rc == KV_ERR_EVIDENCE && (!v || v->ok || v->count == 0)))
        abort();
    kv_verdict_free(v);
    /* and nothing left on the caller's OpenSSL error queue (fuzz.h) */
    if (ERR_peek_error() != 0)
        abort();
    return 0;
}
