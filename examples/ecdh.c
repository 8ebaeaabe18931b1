/*
 * ecdh.c - two vault keys agree on a shared secret.
 *
 *   usage: ecdh NAME_A NAME_B
 *
 * Each side sends only its public key; both derive the same HKDF-SHA256
 * output. Keys are created as EC P-256 when missing.
 */
#include <stdio.h>
#include <string.h>

#include <keyvault.h>

static kv_rc open_or_create(kv_ctx *ctx, const char *name, kv_key **key)
{
    kv_rc rc = kv_key_open(ctx, name, key);

    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, NULL, key);
    return rc;
}

int main(int argc, char **argv)
{
    const char *a_name = argc > 1 ? argv[1] : "example-ecdh-a";
    const char *b_name = argc > 2 ? argv[2] : "example-ecdh-b";
    static const unsigned char info[] = "example session key";
    unsigned char a_pub[256], b_pub[256], a_out[32], b_out[32];
    size_t a_publen = sizeof(a_pub), b_publen = sizeof(b_pub);
    kv_ctx *ctx = NULL;
    kv_key *a = NULL, *b = NULL;
    kv_rc rc;

    if (kv_ctx_new(&ctx, NULL) != KV_OK) {
        fprintf(stderr, "kv_ctx_new: %s\n", kv_errmsg(NULL));
        return 1;
    }
    rc = open_or_create(ctx, a_name, &a);
    if (rc == KV_OK)
        rc = open_or_create(ctx, b_name, &b);
    if (rc == KV_OK)
        rc = kv_key_public_der(a, a_pub, &a_publen);
    if (rc == KV_OK)
        rc = kv_key_public_der(b, b_pub, &b_publen);
    /* each side uses its own private key and the other's public key */
    if (rc == KV_OK)
        rc = kv_ecdh_hkdf(a, b_pub, b_publen, NULL, 0, info, sizeof(info) - 1, a_out,
                          sizeof(a_out));
    if (rc == KV_OK)
        rc = kv_ecdh_hkdf(b, a_pub, a_publen, NULL, 0, info, sizeof(info) - 1, b_out,
                          sizeof(b_out));
    if (rc != KV_OK) {
        fprintf(stderr, "%s: %s\n", kv_strerror(rc), kv_errmsg(ctx));
    } else if (memcmp(a_out, b_out, sizeof(a_out)) != 0) {
        fprintf(stderr, "the two sides derived different keys\n");
        rc = KV_ERR_CRYPTO;
    } else {
        printf("%s and %s derived the same 32-byte session key\n", a_name, b_name);
    }
    kv_key_free(a);
    kv_key_free(b);
    kv_ctx_free(ctx);
    return rc == KV_OK ? 0 : 1;
}
