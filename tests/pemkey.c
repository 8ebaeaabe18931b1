/*
 * pemkey.c - what a program does that reads its private key from a PEM
 * file through OpenSSL alone (nginx, curl, Python's ssl): no libkeyvault,
 * only libcrypto with whatever openssl.cnf ($OPENSSL_CONF) activates.
 *
 * usage: pemkey FILE
 *   PEM_read_bio_PrivateKey(FILE); then prints the provider that holds the
 *   key ("provider: NAME"), its public key (PEM), a signature check (sign a
 *   message with the key, verify it with the public key alone), and whether
 *   the private key can be written out ("private key: exported" or
 *   "private key: refused"). Exit 0 when the key loads and signs, 1 when
 *   not (OpenSSL's errors on standard error).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

static int sign_and_verify(EVP_PKEY *key)
{
    static const unsigned char msg[] = "pemkey test message";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY *pub = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    int len, ok = 0;
    /* Ed25519 signs the message itself: no digest */
    const char *digest = EVP_PKEY_is_a(key, "ED25519") ? NULL : "SHA256";

    if (!md || EVP_DigestSignInit_ex(md, NULL, digest, NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) != 1)
        goto out;
    /* the public half, by value, in the default provider */
    if ((len = i2d_PUBKEY(key, &der)) <= 0)
        goto out;
    p = der;
    if (!(pub = d2i_PUBKEY(NULL, &p, len)))
        goto out;
    EVP_MD_CTX_free(md);
    if (!(md = EVP_MD_CTX_new()) ||
        EVP_DigestVerifyInit_ex(md, NULL, digest, NULL, "provider=default", pub, NULL) != 1 ||
        EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) != 1)
        goto out;
    ok = 1;
out:
    OPENSSL_free(der);
    EVP_PKEY_free(pub);
    EVP_MD_CTX_free(md);
    return ok;
}

int main(int argc, char **argv)
{
    BIO *in = NULL, *out = BIO_new_fp(stdout, BIO_NOCLOSE), *priv = BIO_new(BIO_s_mem());
    EVP_PKEY *key = NULL;
    int ret = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: pemkey FILE\n");
        return 2;
    }
    if (!(in = BIO_new_file(argv[1], "r")) || !(key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL))) {
        fprintf(stderr, "pemkey: PEM_read_bio_PrivateKey failed\n");
        goto out;
    }
    printf("provider: %s\n", OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(key)));
    fflush(stdout);
    if (PEM_write_bio_PUBKEY(out, key) != 1)
        goto out;
    BIO_flush(out);
    if (!sign_and_verify(key)) {
        fprintf(stderr, "pemkey: signing with the key failed\n");
        goto out;
    }
    printf("signature: verified\n");
    ERR_set_mark();
    if (PEM_write_bio_PrivateKey(priv, key, NULL, NULL, 0, NULL, NULL) == 1) {
        ERR_pop_to_mark();
        printf("private key: exported\n");
    } else {
        ERR_pop_to_mark();
        printf("private key: refused\n");
    }
    ret = 0;
out:
    if (ret)
        ERR_print_errors_fp(stderr);
    EVP_PKEY_free(key);
    BIO_free(in);
    BIO_free(out);
    BIO_free(priv);
    return ret;
}
