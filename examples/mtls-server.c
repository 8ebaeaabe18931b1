/*
 * mtls-server.c - a gateway that serves one client over mutual TLS 1.3 with
 * its private key in the vault.
 *
 *   usage: mtls-server KEY CA_FILE [CRL_FILE]
 *
 * KEY is a vault key (name or URI) with its certificate chain stored with it
 * (keyvault cert import). The server listens on a free loopback port,
 * prints it, accepts one client, and requires a client certificate issued
 * by the CA in CA_FILE (and, given CRL_FILE, not revoked). It reads the
 * client's message and answers it. Exit status 0 when the exchange worked,
 * 1 when the client was refused or anything failed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <keyvault.h>

/* The certificate chain stored with the key, leaf first, into the SSL_CTX. */
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

/* Trust the CA; with a CRL, refuse the certificates it revokes. */
static int trust(SSL_CTX *ssl_ctx, const char *ca_file, const char *crl_file)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);

    if (X509_STORE_load_file(store, ca_file) != 1)
        return 0;
    if (crl_file) {
        if (X509_STORE_load_file(store, crl_file) != 1)
            return 0;
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t addrlen = sizeof(addr);
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ssl_ctx = NULL;
    SSL *ssl = NULL;
    char msg[256], reply[512], peer[256] = "?";
    int lfd = -1, fd = -1, n, ok = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: mtls-server KEY CA_FILE [CRL_FILE]\n");
        return 2;
    }
    if (kv_ctx_new(&ctx, NULL) != KV_OK || kv_key_open(ctx, argv[1], &key) != KV_OK ||
        kv_key_evp_pkey(key, NULL, &pkey) != KV_OK) {
        fprintf(stderr, "mtls-server: %s\n", kv_errmsg(ctx));
        goto out;
    }
    /* the two lines that put a vault key into TLS */
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx || SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1 || !use_chain(ssl_ctx, key) ||
        SSL_CTX_check_private_key(ssl_ctx) != 1 ||
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION) != 1 ||
        !trust(ssl_ctx, argv[2], argc > 3 ? argv[3] : NULL)) {
        fprintf(stderr, "mtls-server: cannot set up TLS\n");
        goto out;
    }

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &addrlen) != 0) {
        perror("mtls-server: listen");
        goto out;
    }
    printf("listening on port %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    fd = accept(lfd, NULL, NULL);
    ssl = fd >= 0 ? SSL_new(ssl_ctx) : NULL;
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
        long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        printf("refused the client: %s\n",
               v != X509_V_OK ? X509_verify_cert_error_string(v) : "handshake failed");
        goto out;
    }
    X509_NAME_oneline(X509_get_subject_name(SSL_get0_peer_certificate(ssl)), peer, sizeof(peer));
    n = SSL_read(ssl, msg, sizeof(msg) - 1);
    if (n <= 0)
        goto out;
    msg[n] = '\0';
    printf("client %s said: %s\n", peer, msg);
    n = snprintf(reply, sizeof(reply), "gateway received %d bytes", n);
    ok = SSL_write(ssl, reply, n) == n;
    SSL_shutdown(ssl);
out:
    if (!ok)
        ERR_print_errors_fp(stderr);
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    if (lfd >= 0)
        close(lfd);
    SSL_CTX_free(ssl_ctx);
    EVP_PKEY_free(pkey);
    kv_key_free(key);
    kv_ctx_free(ctx);
    return ok ? 0 : 1;
}
