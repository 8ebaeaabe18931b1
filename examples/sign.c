/*
 * sign.c - sign a message with a vault key and verify it.
 *
 *   usage: sign KEYNAME [MESSAGE]
 *
 * The key is opened by name through the configuration ($KEYVAULT_CONF or
 * the defaults) and created as an EC P-256 key if it does not exist yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keyvault.h>

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "example-sign";
    const char *msg = argc > 2 ? argv[2] : "hello from libkeyvault";
    unsigned char sig[512], pub[1024];
    size_t siglen = sizeof(sig), publen = sizeof(pub);
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    kv_key_info info;
    kv_rc rc;

    rc = kv_ctx_new(&ctx, NULL);
    if (rc != KV_OK) {
        fprintf(stderr, "kv_ctx_new: %s\n", kv_errmsg(NULL));
        return 1;
    }
    rc = kv_key_open(ctx, name, &key);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, NULL, &key);
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc == KV_OK)
        rc = kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)msg, strlen(msg), sig,
                     &siglen);
    if (rc == KV_OK)
        rc = kv_key_public_der(key, pub, &publen);
    if (rc == KV_OK)
        rc = kv_verify(ctx, pub, publen, KV_ALG_DEFAULT, 0, (const unsigned char *)msg,
                       strlen(msg), sig, siglen);
    if (rc != KV_OK) {
        fprintf(stderr, "%s: %s\n", kv_strerror(rc), kv_errmsg(ctx));
    } else {
        printf("key %s (%s, %s, assurance %s) signed %zu bytes: %zu-byte signature, verified\n",
               info.name, kv_key_type_name(info.type), info.backend,
               kv_assurance_name(info.assurance), strlen(msg), siglen);
    }
    kv_key_free(key);
    kv_ctx_free(ctx);
    return rc == KV_OK ? 0 : 1;
}
