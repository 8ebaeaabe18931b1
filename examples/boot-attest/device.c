/*
 * device.c - run at boot: prove to the gateway which key is this device's
 * identity and that it lives in the TPM, get a certificate for it, then talk
 * to the gateway over mutual TLS with that key.
 *
 *   usage: boot-attest-device KEY SOCKET CA_FILE DEVICE_ID
 *
 * KEY is the identity key (a vault key name or URI, normally a TPM key),
 * SOCKET the gateway's attestation socket (a Unix socket path), CA_FILE the
 * fleet CA's root certificate, provisioned with the device, DEVICE_ID the
 * name the certificate request carries (CN). The exchange:
 *
 *   gateway -> device   a fresh nonce (32 bytes)
 *   device  -> gateway  the evidence (kv_attest) and a CSR by the same key
 *   gateway -> device   "ok PORT" and the certificate chain, or "refused: ..."
 *
 * then a TLS 1.3 connection to 127.0.0.1:PORT, both sides authenticated.
 * Exit status 0 when the gateway answered over TLS.
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
#include <openssl/ssl.h>

#include <keyvault.h>

#include "tls.h"
#include "wire.h"

/* Attest the key to the gateway; on success store the chain it issued and
 * return the gateway's TLS port, else 0. */
static int attest(kv_ctx *ctx, kv_key *key, const char *path, const char *device_id)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char subject[128], *evidence = NULL, *csr = NULL;
    unsigned char *nonce = NULL, *status = NULL, *chain = NULL;
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    size_t nonce_len = 0, len = 0;
    int fd = -1, port = 0;

    if (strlen(path) >= sizeof(sun.sun_path) ||
        (size_t)snprintf(subject, sizeof(subject), "CN=%s", device_id) >= sizeof(subject)) {
        fprintf(stderr, "device: socket path or device id too long\n");
        return 0;
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        perror("device: connect to the gateway");
        goto out;
    }
    if (!(nonce = wire_recv(fd, &nonce_len))) {
        fprintf(stderr, "device: no nonce from the gateway\n");
        goto out;
    }
    opts.subject = subject;
    if (kv_attest(key, nonce, nonce_len, NULL, &evidence) != KV_OK ||
        kv_csr_create(key, &opts, &csr) != KV_OK) {
        fprintf(stderr, "device: %s\n", kv_errmsg(ctx));
        goto out;
    }
    if (wire_send(fd, evidence, strlen(evidence)) != 0 || wire_send(fd, csr, strlen(csr)) != 0 ||
        !(status = wire_recv(fd, &len))) {
        fprintf(stderr, "device: the gateway hung up\n");
        goto out;
    }
    if (strncmp((char *)status, "ok ", 3) != 0) {
        printf("gateway: %s\n", (char *)status);
        goto out;
    }
    if (!(chain = wire_recv(fd, &len)) || kv_key_store_chain(key, chain, len) != KV_OK) {
        fprintf(stderr, "device: no certificate: %s\n", kv_errmsg(ctx));
        goto out;
    }
    port = atoi((char *)status + 3);
    printf("attested; certificate stored; gateway TLS port %d\n", port);
out:
    if (fd >= 0)
        close(fd);
    free(nonce);
    free(status);
    free(chain);
    kv_string_free(evidence);
    kv_string_free(csr);
    return port > 0 && port < 65536 ? port : 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ssl_ctx = NULL;
    SSL *ssl = NULL;
    char msg[160], reply[512];
    int fd = -1, n, port, ok = 0;

    if (argc != 5) {
        fprintf(stderr, "usage: boot-attest-device KEY SOCKET CA_FILE DEVICE_ID\n");
        return 2;
    }
    if (kv_ctx_new(&ctx, NULL) != KV_OK || kv_key_open(ctx, argv[1], &key) != KV_OK) {
        fprintf(stderr, "device: %s\n", kv_errmsg(ctx));
        goto out;
    }
    if (!(port = attest(ctx, key, argv[2], argv[4])))
        goto out;
    /* the attested key, with the certificate the gateway just issued */
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (kv_key_evp_pkey(key, NULL, &pkey) != KV_OK || !ssl_ctx ||
        SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1 || !use_chain(ssl_ctx, key) ||
        SSL_CTX_check_private_key(ssl_ctx) != 1 ||
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_load_verify_file(ssl_ctx, argv[3]) != 1) {
        fprintf(stderr, "device: cannot set up TLS: %s\n", kv_errmsg(ctx));
        goto out;
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    addr.sin_port = htons((unsigned short)port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        perror("device: connect over TLS");
        goto out;
    }
    n = snprintf(msg, sizeof(msg), "%s is up", argv[4]);
    ssl = SSL_new(ssl_ctx);
    if (!ssl || SSL_set1_host(ssl, "localhost") != 1 || SSL_set_fd(ssl, fd) != 1 ||
        SSL_connect(ssl) != 1 || SSL_write(ssl, msg, n) != n)
        goto out;
    n = SSL_read(ssl, reply, sizeof(reply) - 1);
    if (n <= 0)
        goto out;
    reply[n] = '\0';
    printf("gateway over TLS: %s (%s)\n", reply, SSL_get_version(ssl));
    ok = 1;
    SSL_shutdown(ssl);
out:
    if (!ok)
        ERR_print_errors_fp(stderr);
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ssl_ctx);
    EVP_PKEY_free(pkey);
    kv_key_free(key);
    kv_ctx_free(ctx);
    return ok ? 0 : 1;
}
