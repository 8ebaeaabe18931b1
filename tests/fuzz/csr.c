/*
 * csr.c - libFuzzer target for what the CA is given to sign: certificate
 * requests (kv_ca_issue, PEM or DER PKCS#10, every profile) and bare public
 * keys (kv_ca_issue_pubkey).
 *
 * Input: byte 0 chooses the profile (low 3 bits, modulo 5: tls-server,
 * tls-client, device-identity, sub-ca, tpm-ak) and with bit 3 set the
 * public-key call; the rest is the request or public key.
 * May accept: a request whose self-signature OpenSSL verifies too
 * (X509_REQ_verify on OpenSSL's own parse), or a public key OpenSSL
 * parses; the certificate issued must hold that same public key.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fuzz.h"

static kv_key *ca;
static const char *const profiles[] = { "tls-server", "tls-client", "device-identity", "sub-ca",
                                        "tpm-ak" };

/* OpenSSL's parse of the request (DER or PEM): its public key, when its
 * signature verifies. */
static EVP_PKEY *openssl_csr_key(const unsigned char *data, size_t len)
{
    const unsigned char *p = data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    EVP_PKEY *pk = NULL;

    if (!req) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        req = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    }
    if (req && X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) == 1)
        pk = X509_REQ_get_pubkey(req);
    X509_REQ_free(req);
    return pk;
}

static EVP_PKEY *openssl_pub(const unsigned char *data, size_t len)
{
    const unsigned char *p = data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);

    if (!pk) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    }
    return pk;
}

static void seed_csr(kv_ctx *ctx, const char *name, int profile, kv_key_type type,
                     const char *subject, const char *const *sans, unsigned flags)
{
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    kv_key *key = fz_key(ctx, name, type, "software");
    char *pem = NULL;
    unsigned char *buf;
    size_t len;

    opts.subject = subject;
    opts.sans = sans;
    opts.flags = flags;
    if (kv_csr_create(key, &opts, &pem) != KV_OK)
        abort();
    len = strlen(pem);
    buf = malloc(len + 1);
    if (!buf)
        abort();
    buf[0] = (unsigned char)profile;
    memcpy(buf + 1, pem, len);
    fz_seed(name, buf, len + 1);
    /* broken: a byte of the base64 changed */
    buf[len / 2] = buf[len / 2] == 'A' ? 'B' : 'A';
    {
        char bad[64];
        snprintf(bad, sizeof(bad), "bad-%s", name);
        fz_seed(bad, buf, len + 1);
    }
    kv_string_free(pem);
    free(buf);
    /* the bare public key, for kv_ca_issue_pubkey */
    if (profile == 4) {
        unsigned char *der = fz_pub(key, &len);
        buf = malloc(len + 1);
        if (!buf)
            abort();
        buf[0] = 8 | 4;
        memcpy(buf + 1, der, len);
        fz_seed("pubkey-tpm-ak", buf, len + 1);
        buf[0] = 8 | 1;
        fz_seed("pubkey-tls-client", buf, len + 1);
        free(der);
        free(buf);
    }
    kv_key_free(key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const server_sans[] = { "dns:gw.example", "ip:192.0.2.1", NULL };
    static const char *const client_sans[] = { "uri:urn:dev:42", "email:a@example.org", NULL };
    static const char *const device_sans[] = { "uri:spiffe://fleet/dev-42", NULL };
    kv_ctx *ctx;

    (void)argc;
    (void)argv;
    ctx = fz_ctx(NULL, NULL);
    ca = fz_ca(ctx, "ca");
    if (fz_seeding()) {
        seed_csr(ctx, "server", 0, KV_KEY_EC_P256, "CN=gw.example,O=Fleet", server_sans, 0);
        seed_csr(ctx, "client", 1, KV_KEY_ED25519, "CN=client", client_sans, 0);
        seed_csr(ctx, "device", 2, KV_KEY_EC_P384, "CN=dev-42", device_sans, 0);
        seed_csr(ctx, "subca", 3, KV_KEY_EC_P256, "CN=Sub CA,O=Fuzz", NULL, KV_CERT_CA);
        seed_csr(ctx, "ak", 4, KV_KEY_RSA_2048, "CN=ak", NULL, 0);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    static const char *const sans[] = { "dns:pub.example", NULL };
    const char *profile;
    char *pem = NULL;
    bool pubkey;
    kv_rc rc;

    if (size < 1)
        return 0;
    profile = profiles[(data[0] & 7) % 5];
    pubkey = data[0] & 8;
    if (!strcmp(profile, "tpm-ak")) {
        opts.tpm_manufacturer = "id:53544D20";
        opts.tpm_model = "swtpm";
        opts.tpm_version = "id:00020000";
    } else if (pubkey) {
        opts.subject = "CN=pub";
        opts.sans = sans;
    }
    if (pubkey)
        rc = kv_ca_issue_pubkey(ca, profile, data + 1, size - 1, &opts, &pem);
    else
        rc = kv_ca_issue(ca, profile, data + 1, size - 1, &opts, &pem);
    if (rc == KV_OK) {
        /* the cross-check's own OpenSSL errors are dropped below */
        (void)ERR_set_mark();
        EVP_PKEY *want = pubkey ? openssl_pub(data + 1, size - 1)
                                : openssl_csr_key(data + 1, size - 1);
        BIO *bio = BIO_new_mem_buf(pem, -1);
        X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        FZ_ASSERT(want, pubkey ? "kv_ca_issue_pubkey took a key OpenSSL cannot parse"
                               : "kv_ca_issue took a request whose signature OpenSSL refuses");
        FZ_ASSERT(cert && EVP_PKEY_eq(X509_get0_pubkey(cert), want) == 1,
                  "the certificate issued holds another public key");
        X509_free(cert);
        BIO_free(bio);
        EVP_PKEY_free(want);
        ERR_pop_to_mark();
    } else {
        FZ_ASSERT(pem == NULL, "kv_ca_issue failed but handed out a certificate");
    }
    kv_string_free(pem);
    return 0;
}
