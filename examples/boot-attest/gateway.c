/*
 * gateway.c - admit a device at boot: check its evidence against a policy,
 * issue its identity key a certificate from the vault CA, then serve it
 * over mutual TLS.
 *
 *   usage: boot-attest-gateway CA_KEY TLS_KEY POLICY SOCKET CA_FILE
 *
 * CA_KEY is the fleet CA's vault key (its certificate stored with it),
 * TLS_KEY the gateway's own TLS key (its chain stored with it), POLICY the
 * verifier's policy file (docs/evidence.md: trust anchors, the AK registry,
 * PCR values, the assurance floor), SOCKET the Unix socket path devices
 * attest on, CA_FILE the CA's root certificate. It serves one device:
 *
 *   gateway -> device   a fresh nonce (32 bytes)
 *   device  -> gateway  the evidence (kv_attest) and a CSR by the same key
 *   gateway -> device   "ok PORT" and the certificate chain, or "refused: ..."
 *
 * then accepts the device on 127.0.0.1:PORT over TLS 1.3, requiring the
 * certificate it issued, and answers one message. Every check of the
 * evidence is printed. Exit status 0 when the device was admitted and
 * answered over TLS, 1 when it was refused or anything failed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <keyvault.h>

#include "tls.h"
#include "wire.h"

/* Whether the request's key is the attested one: the CSR proves possession
 * of its key, the evidence that this key is the device's identity key. */
static int same_key(const unsigned char *csr, size_t len, const kv_verdict *v)
{
    BIO *bio = BIO_new_mem_buf(csr, (int)len);
    X509_REQ *req = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    int n = req ? i2d_PUBKEY(X509_REQ_get0_pubkey(req), &der) : -1;
    int same = n > 0 && (size_t)n == v->key_public_len && memcmp(der, v->key_public, (size_t)n) == 0;

    OPENSSL_free(der);
    X509_REQ_free(req);
    BIO_free(bio);
    return same;
}

/* One device on the attestation socket: 1 when it was admitted (its chain
 * sent), 0 when refused; *attested gets the attested key (DER). */
static int admit(kv_ctx *ctx, kv_key *ca, const kv_policy *policy, int fd, int port,
                 unsigned char **attested, size_t *attested_len)
{
    unsigned char nonce[32], *evidence = NULL, *csr = NULL;
    size_t evlen = 0, csrlen = 0;
    kv_verdict *v = NULL;
    char *chain = NULL, status[64];
    int ok = 0;
    kv_rc rc;

    if (RAND_bytes(nonce, sizeof(nonce)) != 1 || wire_send(fd, nonce, sizeof(nonce)) != 0 ||
        !(evidence = wire_recv(fd, &evlen)) || !(csr = wire_recv(fd, &csrlen))) {
        fprintf(stderr, "gateway: the device hung up\n");
        goto out;
    }
    rc = kv_evidence_verify(ctx, (char *)evidence, evlen, nonce, sizeof(nonce), policy, &v);
    for (size_t i = 0; v && i < v->count; i++)
        printf("  %-22s %s%s%s\n", v->checks[i].name, v->checks[i].passed ? "ok" : "FAILED",
               v->checks[i].detail ? ": " : "", v->checks[i].detail ? v->checks[i].detail : "");
    if (rc != KV_OK) {
        printf("refused: %s\n", kv_errmsg(ctx));
        wire_send(fd, "refused: the evidence did not verify", 36);
        goto out;
    }
    if (!same_key(csr, csrlen, v)) {
        printf("refused: the request is not for the attested key\n");
        wire_send(fd, "refused: the request is not for the attested key", 48);
        goto out;
    }
    if (kv_ca_issue(ca, "device-identity", csr, csrlen, NULL, &chain) != KV_OK) {
        printf("refused: %s\n", kv_errmsg(ctx));
        wire_send(fd, "refused: no certificate issued", 30);
        goto out;
    }
    snprintf(status, sizeof(status), "ok %d", port);
    if (wire_send(fd, status, strlen(status)) != 0 || wire_send(fd, chain, strlen(chain)) != 0)
        goto out;
    if (!(*attested = malloc(v->key_public_len)))
        goto out;
    memcpy(*attested, v->key_public, v->key_public_len);
    *attested_len = v->key_public_len;
    printf("admitted the device (assurance %s); certificate issued\n",
           kv_assurance_name(v->assurance));
    ok = 1;
out:
    kv_verdict_free(v);
    kv_string_free(chain);
    free(evidence);
    free(csr);
    return ok;
}

/* Serve the admitted device over mutual TLS: its certificate must be the
 * CA's and hold the key it attested. */
static int serve(SSL_CTX *ssl_ctx, int lfd, const unsigned char *attested, size_t attested_len)
{
    SSL *ssl = NULL;
    unsigned char *der = NULL;
    char msg[256], reply[320];
    int fd = accept(lfd, NULL, NULL), n, ok = 0;

    ssl = fd >= 0 ? SSL_new(ssl_ctx) : NULL;
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
        printf("TLS: refused the device\n");
        goto out;
    }
    n = i2d_PUBKEY(X509_get0_pubkey(SSL_get0_peer_certificate(ssl)), &der);
    if (n <= 0 || (size_t)n != attested_len || memcmp(der, attested, (size_t)n) != 0) {
        printf("TLS: the device's certificate is not for the attested key\n");
        goto out;
    }
    n = SSL_read(ssl, msg, sizeof(msg) - 1);
    if (n <= 0)
        goto out;
    msg[n] = '\0';
    printf("device over TLS: %s\n", msg);
    n = snprintf(reply, sizeof(reply), "welcome, attested device (%d bytes received)", n);
    ok = SSL_write(ssl, reply, n) == n;
    SSL_shutdown(ssl);
out:
    OPENSSL_free(der);
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return ok;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t addrlen = sizeof(addr);
    kv_ctx *ctx = NULL;
    kv_key *ca = NULL, *tls_key = NULL;
    kv_policy *policy = NULL;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ssl_ctx = NULL;
    unsigned char *attested = NULL;
    size_t attested_len = 0;
    int ufd = -1, lfd = -1, dfd = -1, ok = 0;

    if (argc != 6) {
        fprintf(stderr, "usage: boot-attest-gateway CA_KEY TLS_KEY POLICY SOCKET CA_FILE\n");
        return 2;
    }
    if (kv_ctx_new(&ctx, NULL) != KV_OK || kv_key_open(ctx, argv[1], &ca) != KV_OK ||
        kv_key_open(ctx, argv[2], &tls_key) != KV_OK ||
        kv_policy_load(ctx, argv[3], &policy) != KV_OK ||
        kv_key_evp_pkey(tls_key, NULL, &pkey) != KV_OK) {
        fprintf(stderr, "gateway: %s\n", kv_errmsg(ctx));
        goto out;
    }
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx || SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1 || !use_chain(ssl_ctx, tls_key) ||
        SSL_CTX_check_private_key(ssl_ctx) != 1 ||
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION) != 1 ||
        X509_STORE_load_file(SSL_CTX_get_cert_store(ssl_ctx), argv[5]) != 1) {
        fprintf(stderr, "gateway: cannot set up TLS\n");
        goto out;
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);

    /* the TLS port first, so that the device learns it with its certificate */
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&addr, &addrlen) != 0) {
        perror("gateway: TLS listen");
        goto out;
    }
    if (strlen(argv[4]) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "gateway: socket path too long\n");
        goto out;
    }
    strcpy(sun.sun_path, argv[4]);
    unlink(argv[4]);
    ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ufd < 0 || bind(ufd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(ufd, 1) != 0) {
        perror("gateway: attestation socket");
        goto out;
    }
    printf("waiting for a device on %s\n", argv[4]);
    fflush(stdout);
    dfd = accept(ufd, NULL, NULL);
    if (dfd < 0 || !admit(ctx, ca, policy, dfd, ntohs(addr.sin_port), &attested, &attested_len))
        goto out;
    close(dfd);
    dfd = -1;
    ok = serve(ssl_ctx, lfd, attested, attested_len);
out:
    if (!ok)
        ERR_print_errors_fp(stderr);
    if (dfd >= 0)
        close(dfd);
    if (ufd >= 0) {
        close(ufd);
        unlink(argv[4]);
    }
    if (lfd >= 0)
        close(lfd);
    free(attested);
    SSL_CTX_free(ssl_ctx);
    EVP_PKEY_free(pkey);
    kv_policy_free(policy);
    kv_key_free(tls_key);
    kv_key_free(ca);
    kv_ctx_free(ctx);
    return ok ? 0 : 1;
}
