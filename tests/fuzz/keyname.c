/*
 * keyname.c - libFuzzer target for key names and URIs (kv_key_open): the
 * name and @VERSION rules, the scheme dispatch, the pkcs11: URI parser
 * (p11-kit's, and the library's checks around it: type=, pin-value,
 * pin-source, the token match) against a SoftHSM token, and file: URIs of
 * the software store. The context has a TPM backend without a TPM (tcti
 * none): tpm2: URIs are refused as unavailable before their own parsing,
 * which needs a TPM and is left to tests/tpm-store.sh.
 *
 * Input: the reference (text up to the first NUL; "@D@" stands for the
 * target's scratch directory, so file: seeds work anywhere).
 * May accept: a name or URI of one of the two keys that exist, k1 (store)
 * and p1 (token); an opened key must be one of them (same public key).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static kv_ctx *ctx;
static unsigned char *pub_k1, *pub_p1;
static size_t len_k1, len_p1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const seeds[] = {
        "k1", "p1", "k1@1", "p1@current", "nosuchkey", "file:@D@/store/k1.pem",
        "file:@D@/store/../store/k1.pem", "pkcs11:token=fuzz;object=p1;type=private",
        "pkcs11:object=p1?pin-value=1234", "pkcs11:token=fuzz;id=%01%02;type=private",
        "pkcs11:object=p1;type=cert", "pkcs11:model=SoftHSM%20v2;object=p1?pin-source=file:@D@/pin",
        "tpm2:handle=0x81000001", "tpm2:file=@D@/tpm/k.pem", "file:relative.pem", ".hidden",
        "k1@", "a:b", "pkcs11:object=%zz",
    };
    kv_key *k;
    (void)argc;
    (void)argv;
    char extra[1200];

    /* the TPM backend exists, without a TPM */
    snprintf(extra, sizeof(extra), "%s[tpm]\ntcti = none\n", fz_softhsm());
    ctx = fz_ctx("software, pkcs11, tpm", extra);
    k = fz_key(ctx, "k1", KV_KEY_EC_P256, "software");
    pub_k1 = fz_pub(k, &len_k1);
    kv_key_free(k);
    k = fz_key(ctx, "p1", KV_KEY_EC_P256, "pkcs11");
    pub_p1 = fz_pub(k, &len_p1);
    kv_key_free(k);
    if (fz_seeding()) {
        fz_seed_texts(seeds, sizeof(seeds) / sizeof(seeds[0]));
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *raw = fz_str(data, size), *ref = fz_subst(raw);
    kv_key *key = NULL;
    kv_rc rc = kv_key_open(ctx, ref, &key);

    if (rc == KV_OK) {
        size_t len;
        unsigned char *pub = fz_pub(key, &len);
        FZ_ASSERT((len == len_k1 && !memcmp(pub, pub_k1, len)) ||
                      (len == len_p1 && !memcmp(pub, pub_p1, len)),
                  "kv_key_open opened a key that is neither k1 nor p1");
        free(pub);
    } else {
        FZ_ASSERT(key == NULL, "kv_key_open failed but handed out a key");
    }
    kv_key_free(key);
    free(ref);
    free(raw);
    return 0;
}
