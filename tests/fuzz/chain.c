/*
 * chain.c - libFuzzer target for certificates given to a key: a chain
 * (kv_key_store_chain: PEM bundle or one DER certificate, leaf first) or a
 * single certificate (kv_key_store_cert), for a leaf key issued under a
 * sub-CA, and a chain for the sub-CA's own key.
 *
 * Input: byte 0 chooses the call (modulo 3: chain for the leaf, cert for
 * the leaf, chain for the sub-CA), the rest is the data.
 * May accept: a leaf whose public key is the key's, each certificate
 * signed by the next. An accepted chain must read back (kv_key_chain_pem)
 * and its first certificate, parsed by OpenSSL, must hold the key's public
 * key; the issuer links are checked again with X509_verify.
 * The keys are fixtures (tests/fuzz/fixtures/chain/, made with the seeds by
 * make-corpus.sh): a chain seed only fits the key it was issued to.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fuzz.h"

static kv_ctx *ctx;
static kv_key *leaf, *sub;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    static const char *const sans[] = { "dns:leaf.example", NULL };
    char *csr = NULL, *subpem = NULL, *leafpem = NULL, *rootpem = NULL;
    kv_key *root;

    (void)argc;
    (void)argv;
    if (!fz_seeding()) {
        /* the keys the seeds were made for */
        fz_fixture_load("chain");
        ctx = fz_ctx(NULL, NULL);
        if (kv_key_open(ctx, "leaf", &leaf) != KV_OK || kv_key_open(ctx, "sub", &sub) != KV_OK) {
            fprintf(stderr, "fuzz-chain: the fixture keys: %s\n", kv_errmsg(ctx));
            abort();
        }
        return 0;
    }
    ctx = fz_ctx(NULL, NULL);
    root = fz_ca(ctx, "root");
    sub = fz_key(ctx, "sub", KV_KEY_EC_P256, "software");
    leaf = fz_key(ctx, "leaf", KV_KEY_EC_P256, "software");
    opts.subject = "CN=Sub,O=Fuzz";
    opts.flags = KV_CERT_CA;
    if (kv_csr_create(sub, &opts, &csr) != KV_OK ||
        kv_ca_issue(root, "sub-ca", (unsigned char *)csr, strlen(csr), NULL, &subpem) != KV_OK ||
        kv_key_store_chain(sub, (unsigned char *)subpem, strlen(subpem)) != KV_OK)
        abort();
    kv_string_free(csr);
    opts.subject = "CN=leaf";
    opts.sans = sans;
    opts.flags = 0;
    if (kv_csr_create(leaf, &opts, &csr) != KV_OK ||
        kv_ca_issue(sub, "tls-server", (unsigned char *)csr, strlen(csr), NULL, &leafpem) !=
            KV_OK ||
        kv_key_chain_pem(root, &rootpem) != KV_OK)
        abort();
    fz_fixture_save("chain");
    {
        char *all = malloc(strlen(leafpem) + strlen(rootpem) + 1), *end;
        BIO *bio = BIO_new_mem_buf(leafpem, -1);
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        unsigned char *der = NULL;
        int n = x ? i2d_X509(x, &der) : -1;
        if (!all || n <= 0)
            abort();
        fz_seed1("leaf-chain", 0, leafpem, strlen(leafpem));
        strcpy(all, leafpem);
        strcat(all, rootpem);
        fz_seed1("leaf-chain-root", 0, all, strlen(all));
        fz_seed1("leaf-cert-der", 1, (char *)der, (size_t)n);
        fz_seed1("leaf-cert-der-as-chain", 0, (char *)der, (size_t)n);
        fz_seed1("sub-chain", 2, subpem, strlen(subpem));
        /* broken: the leaf alone for the sub-CA, the chain reversed-ish */
        fz_seed1("bad-leaf-for-sub", 2, leafpem, strlen(leafpem));
        end = strstr(leafpem, "-----END CERTIFICATE-----\n");
        if (end) {
            end += strlen("-----END CERTIFICATE-----\n");
            fz_seed1("bad-leaf-without-issuer-root", 0, end, strlen(end));
        }
        fz_seed1("bad-truncated", 0, leafpem, strlen(leafpem) / 2);
        OPENSSL_free(der);
        X509_free(x);
        BIO_free(bio);
        free(all);
    }
    exit(0);
}

/* Each certificate of the PEM bundle is signed by the next one's key, and
 * the first holds the public key der (DER SubjectPublicKeyInfo). */
static int openssl_chain_ok(const unsigned char *der, size_t len, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *prev = NULL, *x;
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)len);
    int ok = 1, first = 1;

    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (first && EVP_PKEY_eq(X509_get0_pubkey(x), pub) != 1)
            ok = 0;
        if (prev && X509_verify(prev, X509_get0_pubkey(x)) != 1)
            ok = 0;
        X509_free(prev);
        prev = x;
        first = 0;
    }
    if (first)
        ok = 0;
    X509_free(prev);
    BIO_free(bio);
    EVP_PKEY_free(pub);
    return ok;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_key *key;
    char *pem = NULL;
    int which;
    kv_rc rc;

    if (size < 1)
        return 0;
    which = data[0] % 3;
    key = which == 2 ? sub : leaf;
    if (which == 1)
        rc = kv_key_store_cert(key, data + 1, size - 1);
    else
        rc = kv_key_store_chain(key, data + 1, size - 1);
    fz_report(which == 1 ? "kv_key_store_cert" : "kv_key_store_chain", ctx, rc);
    if (rc == KV_OK) {
        FZ_ASSERT(kv_key_chain_pem(key, &pem) == KV_OK, "a stored chain does not read back");
        size_t len;
        unsigned char *der = fz_pub(key, &len);
        FZ_ASSERT(FZ_OWN_OPENSSL(openssl_chain_ok(der, len, pem)),
                  "a stored chain OpenSSL finds broken");
        free(der);
        kv_string_free(pem);
    }
    return 0;
}
