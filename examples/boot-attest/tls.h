/*
 * tls.h - what both boot-attestation programs do to put a vault key into
 * TLS: the certificate chain stored with the key, leaf first, into an
 * SSL_CTX whose private key is the vault key's EVP_PKEY (kv_key_evp_pkey).
 * Example code, not part of the library.
 */
#ifndef BOOT_ATTEST_TLS_H
#define BOOT_ATTEST_TLS_H

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <keyvault.h>

/* The chain stored with the key into the SSL_CTX, leaf first. */
static int use_chain(SSL_CTX *ssl_ctx, kv_key *key)
{
    char *pem = NULL;
    BIO *bio;
    X509 *x;
    int ok = 0;

    if (kv_key_chain_pem(key, &pem) != KV_OK)
        return 0;
    bio = BIO_new_mem_buf(pem, -1);
    if (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        ok = SSL_CTX_use_certificate(ssl_ctx, x) == 1;
        X509_free(x);
        while (ok && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
            ok = SSL_CTX_add0_chain_cert(ssl_ctx, x) == 1;
        ERR_clear_error(); /* the end of the bundle */
    }
    BIO_free(bio);
    kv_string_free(pem);
    return ok;
}

#endif
