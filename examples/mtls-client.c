/*
 * mtls-client.c - a device that talks to the gateway over mutual TLS 1.3,
 * its private key in the vault.
 *
 *   usage: mtls-client KEY CA_FILE PORT MESSAGE
 *
 * KEY is a vault key (name or URI) with its certificate chain stored with
 * it. The client connects to 127.0.0.1:PORT, checks that the server's
 * certificate was issued for "localhost" by the CA in CA_FILE, presents its
 * own, sends MESSAGE and prints the answer. Exit status 0 when it got one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <keyvault.h>

/* The leaf certificate stored with the key (the gateway's CA is our CA,
 * so the leaf is the whole chain the server needs). */
static int use_cert(SSL_CTX *ssl_ctx, kv_key *key)
{
    unsigned char der[8192];
    const unsigned char *p = der;
    size_t len = sizeof(der);
    X509 *x;
    int ok;

    if (kv_key_cert_der(key, der, &len) != KV_OK)
        return 0;
    x = d2i_X509(NULL, &p, (long)len);
    ok = x && SSL_CTX_use_certificate(ssl_ctx, x) == 1;
    X509_free(x);
    return ok;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ssl_ctx = NULL;
    SSL *ssl = NULL;
    char reply[512];
    int fd = -1, n, ok = 0;

    if (argc != 5) {
        fprintf(stderr, "usage: mtls-client KEY CA_FILE PORT MESSAGE\n");
        return 2;
    }
    addr.sin_port = htons((unsigned short)atoi(argv[3]));
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    /* the key may come after SSL_CTX_new as well as before it */
    if (kv_ctx_new(&ctx, NULL) != KV_OK || kv_key_open(ctx, argv[1], &key) != KV_OK ||
        kv_key_evp_pkey(key, NULL, &pkey) != KV_OK) {
        fprintf(stderr, "mtls-client: %s\n", kv_errmsg(ctx));
        goto out;
    }
    if (!ssl_ctx || SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1 || !use_cert(ssl_ctx, key) ||
        SSL_CTX_check_private_key(ssl_ctx) != 1 ||
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_load_verify_file(ssl_ctx, argv[2]) != 1) {
        fprintf(stderr, "mtls-client: cannot set up TLS\n");
        goto out;
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        perror("mtls-client: connect");
        goto out;
    }
    ssl = SSL_new(ssl_ctx);
    if (!ssl || SSL_set1_host(ssl, "localhost") != 1 || SSL_set_fd(ssl, fd) != 1 ||
        SSL_connect(ssl) != 1 || SSL_write(ssl, argv[4], (int)strlen(argv[4])) <= 0)
        goto out;
    /* TLS 1.3: a refusal of our certificate arrives here, as an alert */
    n = SSL_read(ssl, reply, sizeof(reply) - 1);
    if (n <= 0)
        goto out;
    reply[n] = '\0';
    printf("%s (%s)\n", reply, SSL_get_version(ssl));
    ok = 1;
    SSL_shutdown(ssl);
out:
    if (!ok) {
        fprintf(stderr, "mtls-client: no answer from the gateway\n");
        ERR_print_errors_fp(stderr);
    }
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ssl_ctx);
    EVP_PKEY_free(pkey);
    kv_key_free(key);
    kv_ctx_free(ctx);
    return ok ? 0 : 1;
}
