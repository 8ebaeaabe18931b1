/*
 * provider-tls.c - TLS with vault keys through kv_key_evp_pkey, for
 * tests/provider.sh: mutual TLS handshakes between two keys of one
 * configuration (any backends), in one process over a BIO pair, over
 * loopback sockets with client threads, and with a pre-forking server.
 * Public API and OpenSSL only, as an application would use them.
 *
 *   provider-tls [options] MODE SERVER_KEY CLIENT_KEY
 *     -c CONF        the libkeyvault configuration (default: as kv_ctx_new(NULL))
 *     -v 1.2|1.3     the TLS version (default 1.3)
 *     -s SIGALGS     signature algorithms both sides offer (SSL_CTX_set1_sigalgs_list)
 *     -g GROUPS      key exchange groups both sides offer (SSL_CTX_set1_groups_list)
 *     -n N           handshakes (per thread in `threads`; in all in `fork`)
 *     -t T           client threads (`threads`, `fork`)
 *     -w W           forked workers (`fork`)
 *     -u KEY         the server trusts KEY's certificate instead of the client's
 *     -p             load the keyvault provider explicitly, before the default one
 *     -C             the server uses the certificate stored with its key
 *                    (kv_key_cert_der) instead of making one
 *     -P             `fork`: the parent signs too, a handshake over a BIO pair
 *                    before the fork and one after its workers end
 *   SERVER_KEY `ordinary` is an EC key made by OpenSSL and read back from
 *   PEM, with a certificate it signs itself: it must stay in the default
 *   provider, whatever the provider order.
 *   MODE
 *     pair           N handshakes in one thread over a BIO pair, a message each way
 *     threads        a server thread per connection, T client threads x N handshakes
 *     fork           the server loads its key, forks W workers serving N/W each
 *     refuse         one handshake the server must refuse (use -u)
 *   It prints the negotiated signature schemes, and with a tpm backend in
 *   the configuration the TPM commands the handshakes cost.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <keyvault.h>

static kv_ctx *ctx;
static int version = TLS1_3_VERSION;
static const char *sigalgs, *groups;
static SSL_CTX *server_ctx, *client_ctx;
static atomic_int good, bad;

static void die(const char *what)
{
    fprintf(stderr, "provider-tls: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void die_kv(const char *what, kv_rc rc)
{
    fprintf(stderr, "provider-tls: %s: %s: %s\n", what, kv_strerror(rc), kv_errmsg(ctx));
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* A self-signed certificate for the key, made by the library. */
static X509 *self_cert(kv_key *key, const char *cn)
{
    const char *const sans[] = { "dns:localhost", NULL };
    const char *const ekus[] = { "serverAuth", "clientAuth", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    char subject[128], *pem = NULL;
    X509 *x;
    BIO *b;
    kv_rc rc;

    snprintf(subject, sizeof(subject), "CN=%s", cn);
    opts.subject = subject;
    opts.sans = sans;
    opts.ext_key_usage = ekus;
    opts.days = 1;
    rc = kv_cert_selfsign(key, &opts, &pem);
    if (rc != KV_OK)
        die_kv("kv_cert_selfsign", rc);
    b = BIO_new_mem_buf(pem, -1);
    x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    kv_string_free(pem);
    if (!x)
        die("cannot read the certificate");
    return x;
}

/* The provider behind an EVP_PKEY, and behind a signature made with it. */
static void check_provider(EVP_PKEY *pkey, const char *want, const char *what)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const char *key_prov = OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey));
    const char *sig_prov = NULL;
    const char *md = EVP_PKEY_is_a(pkey, "ED25519") ? NULL : "SHA256";
    unsigned char sig[512];
    size_t siglen = sizeof(sig);

    if (m && EVP_DigestSignInit_ex(m, &pctx, md, NULL, NULL, pkey, NULL) == 1 &&
        EVP_DigestSign(m, sig, &siglen, (const unsigned char *)"x", 1) == 1)
        sig_prov = OSSL_PROVIDER_get0_name(EVP_PKEY_CTX_get0_provider(pctx));
    EVP_MD_CTX_free(m);
    printf("%s: key in provider %s, signed by provider %s\n", what, key_prov,
           sig_prov ? sig_prov : "(none: signing failed)");
    if (!sig_prov || strcmp(key_prov, want) || strcmp(sig_prov, want))
        die("the key is not where it belongs");
}

/* An ordinary EC key: made by OpenSSL, through PEM, certified by itself. */
static EVP_PKEY *ordinary_key(X509 **cert)
{
    EVP_PKEY *gen = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), *pkey = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    X509 *x = X509_new();

    if (!gen || !b || !x || PEM_write_bio_PrivateKey(b, gen, NULL, NULL, 0, NULL, NULL) != 1 ||
        !(pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)))
        die("cannot make an ordinary key");
    check_provider(gen, "default", "ordinary key, generated");
    check_provider(pkey, "default", "ordinary key, read from PEM");
    if (X509_set_version(x, X509_VERSION_3) != 1 || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                    (const unsigned char *)"localhost", -1, -1, 0) ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || X509_set_pubkey(x, pkey) != 1 ||
        X509_sign(x, pkey, EVP_sha256()) <= 0)
        die("cannot certify the ordinary key");
    EVP_PKEY_free(gen);
    BIO_free(b);
    *cert = x;
    return pkey;
}

/* The certificate stored with the key. */
static X509 *stored_cert(kv_key *key)
{
    unsigned char buf[8192];
    const unsigned char *p = buf;
    size_t len = sizeof(buf);
    X509 *x;
    kv_rc rc = kv_key_cert_der(key, buf, &len);

    if (rc != KV_OK)
        die_kv("kv_key_cert_der", rc);
    x = d2i_X509(NULL, &p, (long)len);
    if (!x)
        die("the stored certificate does not decode");
    return x;
}

static kv_key *open_key(const char *ref)
{
    kv_key *key = NULL;
    kv_rc rc = kv_key_open(ctx, ref, &key);

    if (rc != KV_OK)
        die_kv(ref, rc);
    return key;
}

/*
 * A TLS context with the vault key `ref` and its certificate, trusting
 * `trust`. The server takes its EVP_PKEY before SSL_CTX_new, the client
 * after: both orders must work.
 */
static SSL_CTX *tls_ctx(int server, kv_key *key, EVP_PKEY *pkey, X509 *cert, X509 *trust)
{
    SSL_CTX *c;
    kv_rc rc;

    if (pkey && !EVP_PKEY_up_ref(pkey))
        die("EVP_PKEY_up_ref");
    if (server && !pkey && (rc = kv_key_evp_pkey(key, NULL, &pkey)) != KV_OK)
        die_kv("kv_key_evp_pkey", rc);
    c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c)
        die("SSL_CTX_new");
    if (!server && !pkey && (rc = kv_key_evp_pkey(key, NULL, &pkey)) != KV_OK)
        die_kv("kv_key_evp_pkey", rc);
    if (SSL_CTX_set_min_proto_version(c, version) != 1 ||
        SSL_CTX_set_max_proto_version(c, version) != 1)
        die("cannot set the TLS version");
    if (SSL_CTX_use_certificate(c, cert) != 1 || SSL_CTX_use_PrivateKey(c, pkey) != 1)
        die("SSL_CTX_use_certificate / SSL_CTX_use_PrivateKey");
    if (SSL_CTX_check_private_key(c) != 1)
        die("SSL_CTX_check_private_key");
    if (X509_check_private_key(cert, pkey) != 1)
        die("X509_check_private_key");
    if (ERR_peek_error() != 0)
        die("errors left on the queue after loading the key");
    EVP_PKEY_free(pkey);
    if (X509_STORE_add_cert(SSL_CTX_get_cert_store(c), trust) != 1)
        die("X509_STORE_add_cert");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    if (sigalgs && (SSL_CTX_set1_sigalgs_list(c, sigalgs) != 1 ||
                    (server && SSL_CTX_set1_client_sigalgs_list(c, sigalgs) != 1)))
        die("cannot set the signature algorithms");
    if (groups && SSL_CTX_set1_groups_list(c, groups) != 1)
        die("cannot set the groups");
    return c;
}

/* The signature scheme the peer of s signed its handshake with. */
static const char *sig_name(SSL *s, char *buf, size_t size)
{
    int type = NID_undef, md = NID_undef;

    SSL_get_peer_signature_type_nid(s, &type);
    SSL_get_peer_signature_nid(s, &md);
    snprintf(buf, size, "%s%s%s", OBJ_nid2sn(type), md != NID_undef ? "+" : "",
             md != NID_undef ? OBJ_nid2sn(md) : "");
    return buf;
}

/* ---- one process, a BIO pair ------------------------------------------------ */

static int pump(SSL *s, int rc)
{
    int e = SSL_get_error(s, rc);

    return rc == 1 || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* One handshake and a message each way; 1 when all of it worked. */
static int pair_once(int print)
{
    SSL *s = SSL_new(server_ctx), *c = SSL_new(client_ctx);
    BIO *bs = NULL, *bc = NULL;
    char buf[16], sname[64], cname[64];
    int rs = 0, rc = 0, ok = 0;

    if (!s || !c || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
        die("SSL_new / BIO_new_bio_pair");
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (int i = 0; i < 64 && (rs != 1 || rc != 1); i++) {
        rc = SSL_do_handshake(c);
        if (!pump(c, rc))
            goto out;
        rs = SSL_do_handshake(s);
        if (!pump(s, rs))
            goto out;
    }
    if (rs != 1 || rc != 1)
        goto out;
    /* TLS 1.3: the server checks the client's certificate after the client
     * thinks it is done; the message exchange settles it */
    if (SSL_write(c, "ping", 4) != 4)
        goto out;
    for (int i = 0; i < 8; i++) {
        int n = SSL_read(s, buf, sizeof(buf));
        if (n == 4 && !memcmp(buf, "ping", 4))
            break;
        if (!pump(s, n) || i == 7)
            goto out;
        (void)SSL_read(c, buf, sizeof(buf));
    }
    if (SSL_write(s, "pong", 4) != 4 || SSL_read(c, buf, sizeof(buf)) != 4 || memcmp(buf, "pong", 4))
        goto out;
    if (print)
        printf("%s: server signed with %s, client signed with %s\n", SSL_get_version(c),
               sig_name(c, sname, sizeof(sname)), sig_name(s, cname, sizeof(cname)));
    ok = 1;
out:
    if (!ok && print) {
        long v = SSL_get_verify_result(s);
        printf("handshake failed; server's verification: %s\n", X509_verify_cert_error_string(v));
    }
    SSL_free(s);
    SSL_free(c);
    return ok;
}

/* ---- sockets ---------------------------------------------------------------- */

static int listen_loopback(unsigned short *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot listen on loopback");
    *port = ntohs(a.sin_port);
    return fd;
}

/* Serve one connection: handshake, read "ping", answer "pong PID". */
static int serve(int fd)
{
    SSL *s = SSL_new(server_ctx);
    char buf[32];
    int ok = 0;

    if (s && SSL_set_fd(s, fd) == 1 && SSL_accept(s) == 1 && SSL_read(s, buf, sizeof(buf)) == 4 &&
        !memcmp(buf, "ping", 4)) {
        int n = snprintf(buf, sizeof(buf), "pong %ld", (long)getpid());
        ok = SSL_write(s, buf, n) == n;
    }
    if (ok)
        SSL_shutdown(s);
    SSL_free(s);
    close(fd);
    ERR_clear_error();
    return ok;
}

static void *serve_thread(void *arg)
{
    if (serve((int)(intptr_t)arg))
        atomic_fetch_add(&good, 1);
    else
        atomic_fetch_add(&bad, 1);
    return NULL;
}

static unsigned short port;

/* One client connection; 1 when the server answered. */
static int connect_once(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    SSL *c = NULL;
    char buf[32];

    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        goto out;
    c = SSL_new(client_ctx);
    if (c && SSL_set_fd(c, fd) == 1 && SSL_connect(c) == 1 && SSL_write(c, "ping", 4) == 4 &&
        SSL_read(c, buf, sizeof(buf)) > 5 && !memcmp(buf, "pong ", 5))
        ok = 1;
    if (ok)
        SSL_shutdown(c);
out:
    SSL_free(c);
    if (fd >= 0)
        close(fd);
    if (!ok)
        ERR_print_errors_fp(stderr);
    return ok;
}

static int per_thread;

static void *client_thread(void *arg)
{
    int *ok = arg;

    for (int i = 0; i < per_thread; i++)
        *ok += connect_once();
    return NULL;
}

/* T client threads, N handshakes each; returns the handshakes that worked. */
static int run_clients(int threads, int n)
{
    pthread_t tid[64];
    int ok[64] = { 0 }, total = 0;

    per_thread = n;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, client_thread, &ok[i]) != 0)
            die("pthread_create");
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += ok[i];
    }
    return total;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;

    for (;;) {
        pthread_t t;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        if (pthread_create(&t, NULL, serve_thread, (void *)(intptr_t)fd) != 0)
            die("pthread_create");
        pthread_detach(t);
    }
}

/* ---- main ----------------------------------------------------------------- */

static uint64_t tpm_commands(int *have)
{
    uint64_t v = 0;

    *have = kv_ctx_backend_stat(ctx, "tpm", "commands", &v) == KV_OK;
    return v;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *untrusted = NULL, *mode;
    int n = 1, threads = 1, workers = 2, opt, have_tpm, total = 0, keyvault_first = 0;
    int stored = 0, parent_signs = 0;
    kv_key *skey = NULL, *ckey;
    EVP_PKEY *spkey = NULL;
    OSSL_PROVIDER *kvprov = NULL, *defprov = NULL;
    X509 *scert, *ccert, *trust;
    uint64_t t0, t1;
    kv_rc rc;

    while ((opt = getopt(argc, argv, "c:v:s:g:n:t:w:u:pCP")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 'v': version = strcmp(optarg, "1.2") ? TLS1_3_VERSION : TLS1_2_VERSION; break;
        case 's': sigalgs = optarg; break;
        case 'g': groups = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'w': workers = atoi(optarg); break;
        case 'u': untrusted = optarg; break;
        case 'p': keyvault_first = 1; break;
        case 'C': stored = 1; break;
        case 'P': parent_signs = 1; break;
        default: return 2;
        }
    }
    if (argc - optind != 3 || n < 1 || threads < 1 || threads > 64 || workers < 1) {
        fprintf(stderr, "usage: provider-tls [-c CONF] [-v 1.2|1.3] [-s SIGALGS] [-g GROUPS] [-n N] [-t T] "
                        "[-w W] [-u KEY] [-p] [-C] [-P] pair|threads|fork|refuse SERVER_KEY CLIENT_KEY\n");
        return 2;
    }
    mode = argv[optind];
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (keyvault_first &&
        (OSSL_PROVIDER_add_builtin(NULL, "keyvault", kv_provider_init) != 1 ||
         !(kvprov = OSSL_PROVIDER_load(NULL, "keyvault")) ||
         !(defprov = OSSL_PROVIDER_load(NULL, "default"))))
        die("cannot load the keyvault provider, then the default one");
    if ((rc = kv_ctx_new(&ctx, conf)) != KV_OK) {
        fprintf(stderr, "provider-tls: kv_ctx_new: %s\n", kv_errmsg(NULL));
        return 1;
    }
    if (!strcmp(argv[optind + 1], "ordinary")) {
        spkey = ordinary_key(&scert);
    } else {
        skey = open_key(argv[optind + 1]);
        scert = stored ? stored_cert(skey) : self_cert(skey, "server");
    }
    ckey = open_key(argv[optind + 2]);
    ccert = self_cert(ckey, "client");
    trust = ccert;
    if (untrusted) {
        kv_key *other = open_key(untrusted);
        trust = self_cert(other, "client");
        kv_key_free(other);
    }
    server_ctx = tls_ctx(1, skey, spkey, scert, trust);
    client_ctx = tls_ctx(0, ckey, NULL, ccert, scert);
    if (spkey) {
        /* a vault key beside it still signs in the vault */
        EVP_PKEY *vault = NULL;
        if ((rc = kv_key_evp_pkey(ckey, NULL, &vault)) != KV_OK)
            die_kv("kv_key_evp_pkey", rc);
        check_provider(vault, "keyvault", "vault key");
        EVP_PKEY_free(vault);
        check_provider(spkey, "default", "ordinary key, in the server's SSL_CTX");
    }
    /* the EVP_PKEYs hold their own references */
    kv_key_free(skey);
    kv_key_free(ckey);

    t0 = tpm_commands(&have_tpm);
    if (!strcmp(mode, "pair") || !strcmp(mode, "refuse")) {
        for (int i = 0; i < n; i++)
            total += pair_once(i == 0);
        if (!strcmp(mode, "refuse")) {
            printf("refused: %d of %d handshakes\n", n - total, n);
            total = n - total;
        }
    } else if (!strcmp(mode, "threads")) {
        pthread_t t;
        int lfd = listen_loopback(&port);
        if (pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)lfd) != 0)
            die("pthread_create");
        total = run_clients(threads, n);
        n *= threads;
        for (int i = 0; i < 100 && atomic_load(&good) + atomic_load(&bad) < n; i++)
            usleep(10000);
        printf("server: %d handshakes served, %d failed\n", atomic_load(&good), atomic_load(&bad));
        if (atomic_load(&bad))
            total = 0;
    } else if (!strcmp(mode, "fork")) {
        int lfd = listen_loopback(&port), quota = n / workers, failed = 0;
        pid_t pids[64];
        if (quota < 1 || workers > 64 || (quota * workers) % threads)
            die("fork: -n must be at least -w, and the handshakes a multiple of -t");
        n = quota * workers;
        /* the key was loaded above, before the fork, as nginx does */
        if (parent_signs && !pair_once(0))
            die("the parent's handshake before the fork failed");
        t0 = tpm_commands(&have_tpm);
        if (have_tpm)
            printf("tpm commands before the fork: %llu\n", (unsigned long long)t0);
        for (int w = 0; w < workers; w++) {
            pids[w] = fork();
            if (pids[w] < 0)
                die("fork");
            if (pids[w] == 0) {
                int served = 0;
                for (int i = 0; i < quota; i++) {
                    int fd = accept(lfd, NULL, NULL);
                    served += fd >= 0 && serve(fd);
                }
                _exit(served == quota ? 0 : 1);
            }
        }
        close(lfd);
        total = run_clients(threads, n / threads);
        for (int w = 0; w < workers; w++) {
            int st = 0;
            if (waitpid(pids[w], &st, 0) != pids[w] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                failed++;
        }
        printf("workers: %d of %d served all their handshakes\n", workers - failed, workers);
        if (parent_signs)
            printf("the parent's handshake after its workers: %s\n",
                   pair_once(0) ? "succeeded" : "failed");
        if (failed)
            total = 0;
    } else {
        fprintf(stderr, "provider-tls: unknown mode '%s'\n", mode);
        return 2;
    }
    t1 = tpm_commands(&have_tpm);
    if (strcmp(mode, "refuse"))
        printf("handshakes: %d of %d succeeded\n", total, n);
    if (have_tpm && strcmp(mode, "fork"))
        printf("tpm commands: %llu for %d handshakes (%.2f per handshake)\n",
               (unsigned long long)(t1 - t0), n, (double)(t1 - t0) / n);
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
    EVP_PKEY_free(spkey);
    X509_free(scert);
    X509_free(ccert);
    if (trust != ccert)
        X509_free(trust);
    OSSL_PROVIDER_unload(defprov);
    OSSL_PROVIDER_unload(kvprov);
    kv_ctx_free(ctx);
    return total == n ? 0 : 1;
}
