/*
 * softkey.c - libFuzzer target for a software store's key files: NAME.pem
 * (encrypted PKCS#8 PEM) and NAME.json (the metadata: name, backend, type,
 * version, public key fingerprint, the key's policy, its MAC), opened with
 * kv_key_open.
 *
 * Internal header: the metadata carries an HMAC keyed from the private key,
 * so fuzzed metadata would never get past the MAC check and the parser
 * behind it (the key policy, the fingerprint and name checks) would go
 * unfuzzed. For metadata inputs the target recomputes the MAC as the
 * library does (kv_meta_mac_key, kv_json_mac: internal.h) before writing.
 *
 * Input: byte 0 chooses the file (even: NAME.pem, the metadata left as
 * made; odd: NAME.json, re-MACed when it is a JSON object, the key file
 * left as made), the rest is its content.
 * May accept: only the key made under the name: an opened key must have
 * its public key (a key file holding another key must fail the metadata's
 * fingerprint), and its policy must read back. The key is a fixture
 * (tests/fuzz/fixtures/softkey/, made with the seeds by make-corpus.sh).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fuzz.h"
#include "internal.h"

/* meta.c's KV_META_MAC_PREFIX */
#define META_MAC_PREFIX "libkeyvault-metadata-v1\n"

static kv_ctx *ctx;
static char key_path[512], meta_path[512];
static unsigned char *pem, *meta, *pub;
static size_t pem_len, meta_len, pub_len;
static unsigned char mac_key[KV_MAC_KEY_LEN];

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    unsigned char *buf = malloc(1 << 16);

    if (!f || !buf)
        abort();
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

/* The metadata MAC key of the key file, as soft.c's pkey_mac_key derives
 * it: from the private scalar (EC) or d (RSA). */
static void derive_mac_key(void)
{
    FILE *f = fopen(key_path, "r");
    EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, (void *)"fuzz store passphrase")
                     : NULL;
    unsigned char buf[1024];
    BIGNUM *bn = NULL;
    int n;

    if (f)
        fclose(f);
    if (!pk || EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &bn) != 1 ||
        (n = BN_bn2bin(bn, buf)) <= 0 || kv_meta_mac_key(ctx, buf, (size_t)n, mac_key) != KV_OK)
        abort();
    OPENSSL_cleanse(buf, sizeof(buf));
    BN_clear_free(bn);
    EVP_PKEY_free(pk);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kv_key *key;
    char *dump;
    json_t *j;

    (void)argc;
    (void)argv;
    if (!fz_seeding())
        fz_fixture_load("softkey"); /* the key the seeds were made for */
    ctx = fz_ctx(NULL, NULL);
    fz_path(key_path, sizeof(key_path), "store/sk.pem");
    fz_path(meta_path, sizeof(meta_path), "store/sk.json");
    if (fz_seeding()) {
        /* a key with a policy, so that the metadata holds one */
        kv_key_policy policy = KV_KEY_POLICY_INIT;
        policy.uses = KV_USE_SIGN;
        if (kv_key_generate_ex(ctx, "sk", KV_KEY_EC_P256, "software", &policy, &key) != KV_OK)
            abort();
        fz_fixture_save("softkey");
    } else if (kv_key_open(ctx, "sk", &key) != KV_OK) {
        fprintf(stderr, "fuzz-softkey: the fixture key: %s\n", kv_errmsg(ctx));
        abort();
    }
    pub = fz_pub(key, &pub_len);
    kv_key_free(key);
    pem = slurp(key_path, &pem_len);
    meta = slurp(meta_path, &meta_len);
    derive_mac_key();
    if (fz_seeding()) {
        fz_seed1("key", 0, pem, pem_len);
        fz_seed1("meta", 1, meta, meta_len);
        fz_seed1("bad-key-truncated", 0, pem, pem_len / 2);
        j = json_loadb((const char *)meta, meta_len, 0, NULL);
        json_object_set_new(j, "name", json_string("other"));
        dump = json_dumps(j, JSON_COMPACT);
        fz_seed1("bad-meta-renamed", 1, dump, strlen(dump));
        free(dump);
        json_decref(j);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_key *key = NULL;
    kv_rc rc;

    if (size < 1)
        return 0;
    if (data[0] & 1) {
        json_t *j = json_loadb((const char *)data + 1, size - 1, 0, NULL);
        char hex[65], *dump = NULL;
        if (j && json_is_object(j) && kv_json_mac(ctx, j, META_MAC_PREFIX, mac_key, hex) == KV_OK &&
            json_object_set_new(j, "mac", json_string(hex)) == 0 &&
            (dump = json_dumps(j, JSON_COMPACT)))
            fz_write(meta_path, dump, strlen(dump));
        else
            fz_write(meta_path, data + 1, size - 1);
        free(dump);
        json_decref(j);
        fz_write(key_path, pem, pem_len);
    } else {
        fz_write(key_path, data + 1, size - 1);
        fz_write(meta_path, meta, meta_len);
    }
    rc = kv_key_open(ctx, "sk", &key);
    fz_report("kv_key_open", ctx, rc);
    if (rc == KV_OK) {
        kv_key_policy policy = KV_KEY_POLICY_INIT;
        size_t len;
        unsigned char *p = fz_pub(key, &len);
        FZ_ASSERT(len == pub_len && !memcmp(p, pub, len), "opened 'sk' with another public key");
        FZ_ASSERT(kv_key_get_policy(key, &policy) == KV_OK, "an opened key without its policy");
        free(p);
    }
    kv_key_free(key);
    return 0;
}
