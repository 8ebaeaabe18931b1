/*
 * audit.c - libFuzzer target for audit log records: kv_audit_verify (each
 * JSON line, the hash chain, the seals and their signatures) and
 * kv_audit_tail on the same file.
 *
 * Input: PUBLIC KEY FZ_SEP LOG; an empty public key checks the chain only.
 * May accept: a log whose chain holds (cutting records from its end keeps
 * it valid: that is the documented limit without anchors). An accepted log
 * must report no bad line and no more seals than records, and with a
 * public key at least one seal.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static kv_ctx *ctx;
static char log_path[512];

static void make_seeds(void)
{
    char extra[1024], *text = NULL;
    unsigned char sig[256], *pub;
    size_t publen, siglen, len;
    kv_ctx *actx;
    kv_key *seal, *k;
    FILE *f;

    snprintf(extra, sizeof(extra),
             "[audit]\nfile = %s\nseal_key = audit-seal\nseal_every = 4\nflush = record\n",
             log_path);
    actx = fz_ctx(NULL, extra);
    seal = fz_key(actx, "audit-seal", KV_KEY_EC_P256, "software");
    pub = fz_pub(seal, &publen);
    k = fz_key(actx, "signer", KV_KEY_ED25519, "software");
    for (int i = 0; i < 6; i++) {
        siglen = sizeof(sig);
        if (kv_sign(k, KV_ALG_DEFAULT, 0, (const unsigned char *)"m", 1, sig, &siglen) != KV_OK)
            abort();
    }
    kv_key_free(k);
    kv_key_free(seal);
    kv_ctx_free(actx);
    if (!(f = fopen(log_path, "r")) || !(text = calloc(1, 1 << 20)))
        abort();
    len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    fz_seed2("sealed", pub, publen, text, len);
    fz_seed2("chain-only", "", 0, text, len);
    fz_seed2("bad-truncated-line", pub, publen, text, len - 10);
    /* broken: a digit of the first record changed */
    for (size_t i = 0; i < len; i++)
        if (text[i] >= '0' && text[i] <= '8') {
            text[i]++;
            break;
        }
    fz_seed2("bad-edited", pub, publen, text, len);
    free(text);
    free(pub);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_path(log_path, sizeof(log_path), "audit.log");
    if (fz_seeding()) {
        make_seeds();
        exit(0);
    }
    ctx = fz_ctx(NULL, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *pub, *log;
    size_t publen, loglen;
    kv_audit_report rep;
    char *tail = NULL;
    kv_rc rc;

    fz_split(data, size, &pub, &publen, &log, &loglen);
    fz_write(log_path, log, loglen);
    memset(&rep, 0, sizeof(rep));
    rc = kv_audit_verify(ctx, log_path, publen ? pub : NULL, publen, 0, NULL, 0, &rep);
    fz_report("kv_audit_verify", ctx, rc);
    if (rc == KV_OK) {
        FZ_ASSERT(rep.bad_line == 0, "an accepted log with a bad line");
        FZ_ASSERT(rep.seals <= rep.records, "more seals than records");
        FZ_ASSERT(!publen || rep.seals > 0, "a log accepted under a public key without a seal");
    }
    if (kv_audit_tail(ctx, log_path, 3, &tail) == KV_OK)
        FZ_ASSERT(tail != NULL, "kv_audit_tail succeeded without text");
    kv_string_free(tail);
    return 0;
}
