/*
 * keyref.c - libFuzzer target for key files handed over as bytes: key
 * references (kv_key_open_reference: the "KEYVAULT KEY REFERENCE" PEM
 * block or its DER, with the name or URI inside, p11-kit's URI parser) and
 * TSS2 PRIVATE KEY files (kv_key_open_tpm_file: PEM/DER decoding and the
 * TPM2B unmarshalling, which run before the TPM is asked).
 *
 * Input: byte 0 chooses the call (even: reference, odd: TSS2 file), the
 * rest is the data. The context has the keys k1 (software store) and p1
 * (SoftHSM token), and a TPM backend whose TCTI reaches no TPM.
 * May accept: a reference to k1 or p1 (the key opened must be one of
 * them); never a TSS2 file, which would need the TPM to load.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static kv_ctx *ctx;
static unsigned char *pub_k1, *pub_p1;
static size_t len_k1, len_p1;

static void seed_ref(const char *name, kv_key *key, unsigned flags)
{
    char *pem = NULL;
    unsigned char *buf;
    size_t len;

    if (kv_key_reference_pem(key, flags, &pem) != KV_OK)
        abort();
    len = strlen(pem);
    buf = malloc(len + 1);
    if (!buf)
        abort();
    buf[0] = 0;
    memcpy(buf + 1, pem, len);
    fz_seed(name, buf, len + 1);
    kv_string_free(pem);
    free(buf);
}

/* A TSS2 PRIVATE KEY file made on the swtpm make-corpus.sh started. */
static void seed_tss2(void)
{
    char conf[1024], path[512], uri[600];
    unsigned char buf[16384];
    kv_ctx *tctx;
    kv_key *key = NULL;
    size_t n;
    FILE *f;

    snprintf(conf, sizeof(conf), "[tpm]\ntcti = %s\n", getenv("KV_FUZZ_TPM_TCTI"));
    tctx = fz_ctx("tpm", conf);
    snprintf(uri, sizeof(uri), "tpm2:file=%s", fz_path(path, sizeof(path), "tk.pem"));
    if (kv_key_generate_at(tctx, uri, KV_KEY_EC_P256, &key) != KV_OK) {
        fprintf(stderr, "fuzz-keyref: %s: %s\n", uri, kv_errmsg(tctx));
        abort();
    }
    kv_key_free(key);
    kv_ctx_free(tctx);
    if (!(f = fopen(path, "r")))
        abort();
    buf[0] = 1;
    n = fread(buf + 1, 1, sizeof(buf) - 1, f);
    fclose(f);
    fz_seed("tss2-ec", buf, n + 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char extra[1200];
    kv_key *k1, *p1;

    (void)argc;
    (void)argv;
    /* a TCTI nothing answers on: the TPM backend is there but unavailable,
     * and TSS2 data is still parsed before the TPM would load it */
    snprintf(extra, sizeof(extra), "%s[tpm]\ntcti = swtpm:host=127.0.0.1,port=9\n",
             fz_softhsm());
    ctx = fz_ctx("software, pkcs11, tpm", extra);
    k1 = fz_key(ctx, "k1", KV_KEY_EC_P256, "software");
    p1 = fz_key(ctx, "p1", KV_KEY_EC_P256, "pkcs11");
    pub_k1 = fz_pub(k1, &len_k1);
    pub_p1 = fz_pub(p1, &len_p1);
    if (fz_seeding()) {
        static const unsigned char bad_tss2[] =
            "\001-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n";
        seed_ref("ref-k1-name", k1, KV_REF_BY_NAME);
        seed_ref("ref-p1-name", p1, KV_REF_BY_NAME);
        /* by URI: both name the seeding run's token serial and scratch
         * directory, so they are broken seeds in the fuzzing runs */
        seed_ref("bad-ref-p1-uri-other-serial", p1, 0);
        seed_ref("bad-ref-k1-file-uri", k1, 0);
        fz_seed("bad-tss2", bad_tss2, sizeof(bad_tss2) - 1);
        if (getenv("KV_FUZZ_TPM_TCTI"))
            seed_tss2();
        exit(0);
    }
    kv_key_free(k1);
    kv_key_free(p1);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_key *key = NULL;
    bool tss2;
    kv_rc rc;

    if (size < 1)
        return 0;
    tss2 = data[0] & 1;
    rc = tss2 ? kv_key_open_tpm_file(ctx, data + 1, size - 1, &key)
              : kv_key_open_reference(ctx, data + 1, size - 1, &key);
    fz_report(tss2 ? "kv_key_open_tpm_file" : "kv_key_open_reference", ctx, rc);
    if (rc == KV_OK) {
        size_t len;
        unsigned char *pub = fz_pub(key, &len);
        FZ_ASSERT(!tss2, "kv_key_open_tpm_file opened a key without a TPM");
        FZ_ASSERT((len == len_k1 && !memcmp(pub, pub_k1, len)) ||
                      (len == len_p1 && !memcmp(pub, pub_p1, len)),
                  "kv_key_open_reference opened a key that is neither k1 nor p1");
        free(pub);
    } else {
        FZ_ASSERT(key == NULL, "a failed open handed out a key");
    }
    kv_key_free(key);
    return 0;
}
