/*
 * tls-bench - full TLS 1.3 handshakes per second with the server's key in
 * the vault, through libkeyvault's provider (kv_key_evp_pkey), against the
 * other ways OpenSSL reaches the same key, measured side by side in one run.
 *
 *   tls-bench -c CONF [--backends pkcs11,tpm] [--seconds S] [--reps N]
 *             [--p11-module PATH --p11-pin-file FILE] [--json FILE]
 *             [--tpm2-pcap FILE] [--tpm-direct CONF2]
 *             [--side NAME --handshakes N]
 *
 *   pkcs11  an EC P-256 key on the token of CONF's [pkcs11] section:
 *           ours (kv_key_evp_pkey), libp11's pkcs11 engine on the same token
 *           key (ENGINE_load_private_key with the key's pkcs11: URI, the
 *           module and PIN from --p11-module and --p11-pin-file), and an
 *           ordinary P-256 key read from PEM (default provider)
 *   tpm     an EC P-256 key of CONF's [tpm] backend: ours, and tpm2-openssl
 *           as its README documents it (the "tpm2" and "default" providers
 *           in a library context of their own, property query
 *           "?provider=tpm2"), loading the TSS2 PRIVATE KEY file our backend
 *           wrote; tpm2-openssl reaches the TPM through $TPM2OPENSSL_TCTI
 *
 * A handshake: the client (main thread) makes a socketpair, hands one end to
 * the server thread, and both run a full TLS 1.3 handshake (no tickets, no
 * session cache, so no resumption), then one byte each way. Group X25519,
 * the server's certificate self-signed and trusted by the client, no client
 * certificate. Each comparison runs its sides in turn --reps times (the
 * order rotating); the table gives each side's median handshakes/s and the
 * median of the side-by-side ratios. For our TPM case, TPM commands per
 * handshake come from kv_ctx_backend_stat("tpm", "commands"); with
 * --tpm2-pcap FILE, tpm2-openssl's are counted too, in two extra runs of its
 * own with tpm2-tss's pcap TCTI recording to FILE in front of
 * $TPM2OPENSSL_TCTI (one handshake, then five: the difference over four).
 * With --tpm-direct CONF2 (a configuration whose [tpm] reaches a TPM with the
 * same seeds without a resource manager), ours also runs on the same key file
 * through CONF2, a third side of the TPM comparison.
 *
 * With --side NAME (ours, engine, pem; tpm, tpm2-openssl, direct) only that
 * side is set up, and it makes N handshakes (--handshakes, default 100)
 * after its first one and prints nothing else: for counting what one side
 * costs (perf stat -e instructions:u, valgrind --tool=callgrind) without the
 * others in the process. Two runs, with N and with 0, give the cost of N
 * handshakes without the setup.
 *
 * It sees libkeyvault as applications do: keyvault.h and the shared library.
 */
#include "config.h"

#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#ifdef KV_HAVE_PCAP
#include <pcap/pcap.h>
#endif

/* libp11's engine is reached through the deprecated ENGINE API: the
 * comparison is the point, so the deprecation warnings are silenced here
 * alone. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <openssl/engine.h>
#pragma GCC diagnostic pop

#include "keyvault.h"

#define REPS_MAX 15

static kv_ctx *ctx;
static double seconds = 2.0;
static int reps = 3;
static const char *opt_p11_module, *opt_p11_pin_file, *opt_tpm2_pcap, *opt_tpm_direct;
static const char *opt_side; /* --side: only this side, opt_handshakes times */
static long opt_handshakes = 100;
static json_t *results;

/* ---- one side of a comparison ----------------------------------------------- */

struct side {
    const char *id; /* for --side */
    const char *name;
    SSL_CTX *server, *client;
    bool usable;
    char why[256];  /* why not, when not usable */
    double hs[REPS_MAX]; /* handshakes per second, per rep */
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "tls-bench: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static _Noreturn void die_kv(const char *what, kv_rc rc)
{
    fprintf(stderr, "tls-bench: %s: %s: %s\n", what, kv_strerror(rc), kv_errmsg(ctx));
    exit(1);
}

/* OpenSSL's first error, as text, for a side that cannot run. */
static void why_not(struct side *s, const char *what)
{
    char err[200] = "no OpenSSL error";
    unsigned long e = ERR_peek_error();

    if (e)
        ERR_error_string_n(e, err, sizeof(err));
    snprintf(s->why, sizeof(s->why), "%s: %s", what, err);
    s->usable = false;
    ERR_clear_error();
}

/* ---- the server thread ------------------------------------------------------ */

struct job {
    int fd;
    SSL_CTX *ctx;
};

static int jobs[2]; /* a pipe of struct job, client -> server thread */

static void *server_main(void *arg)
{
    struct job j;

    (void)arg;
    while (read(jobs[0], &j, sizeof(j)) == (ssize_t)sizeof(j)) {
        SSL *s = SSL_new(j.ctx);
        char b;

        if (s && SSL_set_fd(s, j.fd) == 1 && SSL_accept(s) == 1 && SSL_read(s, &b, 1) == 1)
            (void)SSL_write(s, &b, 1);
        SSL_free(s);
        close(j.fd);
        ERR_clear_error();
    }
    return NULL;
}

/* One full handshake and a byte each way; true when all of it worked. */
static bool handshake(struct side *sd)
{
    int sv[2];
    struct job j;
    SSL *c;
    char b = 'x';
    bool ok;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair");
    j = (struct job){ sv[1], sd->server };
    if (write(jobs[1], &j, sizeof(j)) != (ssize_t)sizeof(j))
        die("cannot hand the connection to the server thread");
    c = SSL_new(sd->client);
    ok = c && SSL_set_fd(c, sv[0]) == 1 && SSL_connect(c) == 1 && SSL_write(c, &b, 1) == 1 &&
         SSL_read(c, &b, 1) == 1 && SSL_session_reused(c) == 0 &&
         SSL_version(c) == TLS1_3_VERSION;
    SSL_free(c);
    close(sv[0]);
    return ok;
}

/* Handshakes per second for `seconds`; 0 (with the reason) on a failure. */
static double measure(struct side *sd)
{
    unsigned long n = 0;
    double t0, deadline;

    t0 = now();
    deadline = t0 + seconds;
    do {
        if (!handshake(sd)) {
            why_not(sd, "a handshake failed");
            return 0;
        }
        n++;
    } while (now() < deadline);
    return (double)n / (now() - t0);
}

/* ---- the sides' TLS contexts ------------------------------------------------------ */

static SSL_CTX *server_ctx(OSSL_LIB_CTX *libctx, const char *propq, EVP_PKEY *pkey, X509 *cert)
{
    SSL_CTX *c = SSL_CTX_new_ex(libctx, propq, TLS_server_method());

    if (!c || SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
        SSL_CTX_use_certificate(c, cert) != 1 || SSL_CTX_use_PrivateKey(c, pkey) != 1 ||
        SSL_CTX_check_private_key(c) != 1 || SSL_CTX_set1_groups_list(c, "X25519") != 1) {
        SSL_CTX_free(c);
        return NULL;
    }
    /* no resumption: every handshake is a full one */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c, 0);
    return c;
}

static SSL_CTX *client_ctx(X509 *trust)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());

    if (!c || SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
        X509_STORE_add_cert(SSL_CTX_get_cert_store(c), trust) != 1 ||
        SSL_CTX_set1_groups_list(c, "X25519") != 1)
        die("the client's SSL_CTX");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    return c;
}

/* Both contexts of a side, or the reason it cannot run. */
static void side_setup(struct side *s, OSSL_LIB_CTX *libctx, const char *propq, EVP_PKEY *pkey,
                       X509 *cert)
{
    s->usable = true;
    s->server = server_ctx(libctx, propq, pkey, cert);
    if (!s->server) {
        why_not(s, "the server's SSL_CTX refused the key");
        return;
    }
    s->client = client_ctx(cert);
    /* one handshake before measuring, to know it works */
    if (!handshake(s))
        why_not(s, "the first handshake failed");
}

static void side_free(struct side *s)
{
    SSL_CTX_free(s->server);
    SSL_CTX_free(s->client);
}

/* A self-signed certificate for the vault key, made by the library. */
static X509 *vault_cert(kv_key *key)
{
    const char *const sans[] = { "dns:localhost", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    char *pem = NULL;
    BIO *b;
    X509 *x;
    kv_rc rc;

    opts.subject = "CN=localhost";
    opts.sans = sans;
    opts.days = 1;
    if ((rc = kv_cert_selfsign(key, &opts, &pem)) != KV_OK)
        die_kv("kv_cert_selfsign", rc);
    b = BIO_new_mem_buf(pem, -1);
    x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    kv_string_free(pem);
    if (!x)
        die("cannot read the certificate");
    return x;
}

static kv_key *vault_key(const char *backend, const char *name)
{
    kv_key *key = NULL;
    kv_rc rc = kv_key_open(ctx, name, &key);

    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, backend, &key);
    if (rc != KV_OK)
        die_kv(name, rc);
    return key;
}

static EVP_PKEY *vault_pkey(kv_key *key)
{
    EVP_PKEY *pkey = NULL;
    kv_rc rc = kv_key_evp_pkey(key, NULL, &pkey);

    if (rc != KV_OK)
        die_kv("kv_key_evp_pkey", rc);
    return pkey;
}

/* An ordinary P-256 key, through PEM, with a self-signed certificate. */
static EVP_PKEY *pem_key(X509 **cert)
{
    EVP_PKEY *gen = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), *pkey = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    X509 *x = X509_new();

    if (!gen || !b || !x || PEM_write_bio_PrivateKey(b, gen, NULL, NULL, 0, NULL, NULL) != 1 ||
        !(pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) ||
        X509_set_version(x, X509_VERSION_3) != 1 || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                    (const unsigned char *)"localhost", -1, -1, 0) ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || X509_set_pubkey(x, pkey) != 1 ||
        X509_sign(x, pkey, EVP_sha256()) <= 0)
        die("cannot make the PEM key and its certificate");
    EVP_PKEY_free(gen);
    BIO_free(b);
    *cert = x;
    return pkey;
}

/* ---- libp11's pkcs11 engine ---------------------------------------------------- */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static ENGINE *engine;

static EVP_PKEY *engine_key(struct side *s, const char *uri)
{
    char pin[256] = { 0 };
    EVP_PKEY *pkey = NULL;
    FILE *f;
    size_t n = 0;

    s->usable = false;
    if (!opt_p11_module || !opt_p11_pin_file) {
        snprintf(s->why, sizeof(s->why), "--p11-module and --p11-pin-file not given");
        return NULL;
    }
    f = fopen(opt_p11_pin_file, "r");
    if (f) {
        n = fread(pin, 1, sizeof(pin) - 1, f);
        fclose(f);
    }
    while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
        pin[--n] = '\0';
    if (n == 0) {
        snprintf(s->why, sizeof(s->why), "cannot read the PIN file %s", opt_p11_pin_file);
        goto out;
    }
    ENGINE_load_builtin_engines();
    engine = ENGINE_by_id("pkcs11");
    if (!engine) {
        why_not(s, "ENGINE_by_id(\"pkcs11\") (package libengine-pkcs11-openssl)");
        goto out;
    }
    if (ENGINE_ctrl_cmd_string(engine, "MODULE_PATH", opt_p11_module, 0) != 1 ||
        ENGINE_init(engine) != 1) {
        why_not(s, "the pkcs11 engine's MODULE_PATH / ENGINE_init");
        ENGINE_free(engine);
        engine = NULL;
        goto out;
    }
    if (ENGINE_ctrl_cmd_string(engine, "PIN", pin, 0) != 1) {
        why_not(s, "the pkcs11 engine's PIN command");
        goto out;
    }
    pkey = ENGINE_load_private_key(engine, uri, NULL, NULL);
    if (!pkey)
        why_not(s, "ENGINE_load_private_key");
out:
    OPENSSL_cleanse(pin, sizeof(pin));
    return pkey;
}

static void engine_done(void)
{
    if (engine) {
        ENGINE_finish(engine);
        ENGINE_free(engine);
    }
}
#pragma GCC diagnostic pop

/* ---- tpm2-openssl ----------------------------------------------------------------- */

#define TPM2_PROPQ "?provider=tpm2"

static OSSL_LIB_CTX *tpm2_libctx;
static OSSL_PROVIDER *tpm2_prov, *tpm2_default;
static void tpm2_done(void);

/* The TSS2 PRIVATE KEY file at path, through tpm2-openssl's decoder. */
static EVP_PKEY *tpm2_key(struct side *s, const char *path)
{
    OSSL_STORE_CTX *st;
    EVP_PKEY *pkey = NULL;

    s->usable = false;
    tpm2_libctx = OSSL_LIB_CTX_new();
    if (!tpm2_libctx)
        die("OSSL_LIB_CTX_new");
    tpm2_prov = OSSL_PROVIDER_load(tpm2_libctx, "tpm2");
    tpm2_default = OSSL_PROVIDER_load(tpm2_libctx, "default");
    if (!tpm2_prov || !tpm2_default) {
        why_not(s, "OSSL_PROVIDER_load(\"tpm2\") (package tpm2-openssl; TPM2OPENSSL_TCTI)");
        return NULL;
    }
    st = OSSL_STORE_open_ex(path, tpm2_libctx, TPM2_PROPQ, NULL, NULL, NULL, NULL, NULL);
    while (st && !pkey && !OSSL_STORE_eof(st)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);
        if (info && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
        if (!info)
            break;
    }
    OSSL_STORE_close(st);
    if (!pkey)
        why_not(s, "tpm2-openssl did not load the key file");
    return pkey;
}

/* The certificate, as an object of tpm2-openssl's library context. */
static X509 *tpm2_cert(X509 *cert)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_X509(cert, &der);
    X509 *x = X509_new_ex(tpm2_libctx, TPM2_PROPQ);

    p = der;
    if (len <= 0 || !x || !d2i_X509(&x, &p, len))
        die("cannot copy the certificate into tpm2-openssl's library context");
    OPENSSL_free(der);
    return x;
}

/* One full handshake in this thread over a BIO pair, for the counting runs
 * (whose library context ends before the server thread does). */
static bool pair_handshake(SSL_CTX *server, SSL_CTX *client)
{
    SSL *s = SSL_new(server), *c = SSL_new(client);
    BIO *bs = NULL, *bc = NULL;
    int rs = 0, rc = 0;

    if (!s || !c || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1) {
        SSL_free(s);
        SSL_free(c);
        return false;
    }
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (int i = 0; i < 64 && (rs != 1 || rc != 1); i++) {
        rc = SSL_do_handshake(c);
        if (rc != 1 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
            break;
        rs = SSL_do_handshake(s);
        if (rs != 1 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
            break;
    }
    SSL_free(s);
    SSL_free(c);
    return rs == 1 && rc == 1;
}

/* Packets in a capture of tpm2-tss's pcap TCTI (a command or a response
 * each); -1 when it cannot be read. */
static long pcap_packets(const char *path)
{
#ifndef KV_HAVE_PCAP
    (void)path;
    return -1; /* built without libpcap */
#else
    char err[PCAP_ERRBUF_SIZE];
    pcap_t *pc = pcap_open_offline(path, err);
    struct pcap_pkthdr *h;
    const u_char *d;
    long n = 0;

    if (!pc)
        return -1;
    while (pcap_next_ex(pc, &h, &d) == 1)
        n++;
    pcap_close(pc);
    return n;
#endif
}

/*
 * TPM commands tpm2-openssl sends: a library context of its own with the
 * tpm2 provider on tpm2-tss's pcap TCTI in front of $TPM2OPENSSL_TCTI,
 * loading the key and making 1 + extra handshakes; the TCTI has written
 * its capture once the provider is unloaded. -1 on a failure.
 */
static long tpm2_pass(const char *keypath, X509 *cert, const char *pcap, int extra)
{
    const char *tcti = getenv("TPM2OPENSSL_TCTI");
    char conf[1024];
    struct side s = { .name = "tpm2-openssl, counting" };
    EVP_PKEY *pkey;
    X509 *x;
    OSSL_LIB_CTX *keep = tpm2_libctx;
    OSSL_PROVIDER *keep_prov = tpm2_prov, *keep_default = tpm2_default;
    long n = -1;
    bool ok = false;

    if (!tcti || snprintf(conf, sizeof(conf), "pcap:%s", tcti) >= (int)sizeof(conf))
        return -1;
    (void)unlink(pcap);
    if (setenv("TCTI_PCAP_FILE", pcap, 1) != 0 || setenv("TPM2OPENSSL_TCTI", conf, 1) != 0)
        return -1;
    pkey = tpm2_key(&s, keypath);
    if (pkey) {
        x = tpm2_cert(cert);
        s.server = server_ctx(tpm2_libctx, TPM2_PROPQ, pkey, x);
        s.client = client_ctx(cert);
        ok = s.server != NULL;
        for (int i = 0; ok && i < 1 + extra; i++)
            ok = pair_handshake(s.server, s.client);
        side_free(&s);
        X509_free(x);
        EVP_PKEY_free(pkey);
    }
    OPENSSL_thread_stop_ex(tpm2_libctx);
    tpm2_done();
    tpm2_libctx = keep;
    tpm2_prov = keep_prov;
    tpm2_default = keep_default;
    (void)setenv("TPM2OPENSSL_TCTI", tcti, 1);
    ERR_clear_error();
    if (ok)
        n = pcap_packets(pcap);
    (void)unlink(pcap);
    return n < 0 ? -1 : n / 2;
}

/* TPM commands per handshake of tpm2-openssl: two counting runs, with one
 * handshake and with 1 + n, the difference over n. */
static double tpm2_commands(const char *keypath, X509 *cert, const char *pcap)
{
    const int n = 4;
    long base = tpm2_pass(keypath, cert, pcap, 0);
    long more = base < 0 ? -1 : tpm2_pass(keypath, cert, pcap, n);

    return more < 0 ? -1 : (double)(more - base) / n;
}

static void tpm2_done(void)
{
    if (tpm2_prov)
        OSSL_PROVIDER_unload(tpm2_prov);
    if (tpm2_default)
        OSSL_PROVIDER_unload(tpm2_default);
    OSSL_LIB_CTX_free(tpm2_libctx);
}

/* ---- comparisons ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[REPS_MAX];

    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return s[n / 2];
}

/* Run the usable sides in turn, `reps` times, the order rotating. */
static void run_sides(struct side *sides, int n)
{
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < n; k++) {
            struct side *s = &sides[(rep + k) % n];
            if (s->usable)
                s->hs[rep] = measure(s);
        }
}

/* Whether --side leaves the side `id` in (every side without --side). */
static bool wanted(const char *id)
{
    return !opt_side || strcmp(opt_side, id) == 0;
}

/* --side: opt_handshakes handshakes on that side alone. */
static void run_one(struct side *sides, int n)
{
    for (int k = 0; k < n; k++) {
        if (strcmp(sides[k].id, opt_side) != 0)
            continue;
        if (!sides[k].usable)
            die(sides[k].why);
        for (long i = 0; i < opt_handshakes; i++)
            if (!handshake(&sides[k]))
                die("a handshake failed");
        printf("%s: %ld handshakes after the first\n", sides[k].name, opt_handshakes);
    }
}

static void report(const char *backend, const struct side *ours, const struct side *ref,
                   double tpm_cmds, double ref_tpm_cmds)
{
    json_t *row = json_pack("{s:s, s:s, s:s}", "backend", backend, "ours", ours->name,
                            "reference", ref->name);

    if (!ours->usable || !ref->usable) {
        const struct side *bad = ours->usable ? ref : ours;
        printf("%-7s %-18s %-30s  not measured: %s: %s\n", backend, ours->name, ref->name,
               bad->name, bad->why);
        json_object_set_new(row, "not_measured", json_string(bad->why));
    } else {
        double ratios[REPS_MAX];
        for (int i = 0; i < reps; i++)
            ratios[i] = ref->hs[i] > 0 ? ours->hs[i] / ref->hs[i] : 0;
        double o = median(ours->hs, reps), r = median(ref->hs, reps), q = median(ratios, reps);
        printf("%-7s %-18s %-30s %10.1f %10.1f %8.2f", backend, ours->name, ref->name, o, r, q);
        if (tpm_cmds >= 0)
            printf("  tpm-cmds/handshake %.2f", tpm_cmds);
        if (ref_tpm_cmds >= 0)
            printf(" (reference %.1f)", ref_tpm_cmds);
        printf("\n");
        json_object_set_new(row, "ours_handshakes_per_s", json_real(o));
        json_object_set_new(row, "reference_handshakes_per_s", json_real(r));
        json_object_set_new(row, "ratio", json_real(q));
        if (tpm_cmds >= 0)
            json_object_set_new(row, "tpm_commands_per_handshake", json_real(tpm_cmds));
        if (ref_tpm_cmds >= 0)
            json_object_set_new(row, "reference_tpm_commands_per_handshake",
                                json_real(ref_tpm_cmds));
    }
    fflush(stdout);
    json_array_append_new(results, row);
}

static void bench_pkcs11(void)
{
    struct side sides[3] = { { .id = "ours", .name = "keyvault provider" },
                             { .id = "engine", .name = "libp11 pkcs11 engine" },
                             { .id = "pem", .name = "PEM key (default prov.)" } };
    kv_key *key = vault_key("pkcs11", "tls-bench-p256");
    kv_key_info info;
    EVP_PKEY *ours = vault_pkey(key), *eng = NULL, *pem = NULL;
    X509 *cert = vault_cert(key), *pem_cert = NULL;
    kv_rc rc;

    if ((rc = kv_key_get_info(key, &info)) != KV_OK)
        die_kv("kv_key_get_info", rc);
    if (wanted("ours")) {
        side_setup(&sides[0], NULL, NULL, ours, cert);
        if (!sides[0].usable)
            die(sides[0].why);
    }
    if (wanted("engine")) {
        eng = engine_key(&sides[1], info.uri);
        if (eng)
            side_setup(&sides[1], NULL, NULL, eng, cert);
    }
    if (wanted("pem")) {
        pem = pem_key(&pem_cert);
        side_setup(&sides[2], NULL, NULL, pem, pem_cert);
    }
    if (opt_side) {
        run_one(sides, 3);
    } else {
        run_sides(sides, 3);
        report("pkcs11", &sides[0], &sides[1], -1, -1);
        report("pkcs11", &sides[0], &sides[2], -1, -1);
    }
    for (int i = 0; i < 3; i++)
        side_free(&sides[i]);
    EVP_PKEY_free(ours);
    EVP_PKEY_free(eng);
    EVP_PKEY_free(pem);
    X509_free(cert);
    X509_free(pem_cert);
    kv_key_free(key);
    engine_done();
}

/* TPM commands per handshake of a side whose key is in c's TPM, after warm-up. */
static double tpm_commands(kv_ctx *c, struct side *s)
{
    const int n = 20;
    uint64_t c0 = 0, c1 = 0;

    if (kv_ctx_backend_stat(c, "tpm", "commands", &c0) != KV_OK)
        return -1;
    for (int i = 0; i < n; i++)
        if (!handshake(s))
            die("a handshake failed while counting TPM commands");
    if (kv_ctx_backend_stat(c, "tpm", "commands", &c1) != KV_OK)
        return -1;
    return (double)(c1 - c0) / n;
}

static void bench_tpm(void)
{
    struct side sides[3] = { { .id = "tpm", .name = "keyvault provider" },
                             { .id = "tpm2-openssl", .name = "tpm2-openssl (" TPM2_PROPQ ")" },
                             { .id = "direct", .name = "keyvault, direct" } };
    kv_key *key = vault_key("tpm", "tls-bench-tpm-p256"), *dkey = NULL;
    kv_ctx *dctx = NULL;
    kv_key_info info;
    EVP_PKEY *ours = vault_pkey(key), *theirs = NULL, *direct = NULL;
    X509 *cert = vault_cert(key), *theirs_cert = NULL;
    double theirs_cmds = -1;
    kv_rc rc;

    if ((rc = kv_key_get_info(key, &info)) != KV_OK)
        die_kv("kv_key_get_info", rc);
    if (strncmp(info.uri, "tpm2:file=", 10) != 0)
        die("the TPM key is not in a file");
    if (wanted("tpm")) {
        side_setup(&sides[0], NULL, NULL, ours, cert);
        if (!sides[0].usable)
            die(sides[0].why);
    }
    if (wanted("tpm2-openssl")) {
        theirs = tpm2_key(&sides[1], info.uri + 10);
        if (theirs) {
            theirs_cert = tpm2_cert(cert);
            side_setup(&sides[1], tpm2_libctx, TPM2_PROPQ, theirs, theirs_cert);
        }
    }
    /* the same key file through a context of opt_tpm_direct's, which talks
     * to a TPM with the same seeds without tpm2-abrmd */
    if (!opt_tpm_direct)
        snprintf(sides[2].why, sizeof(sides[2].why), "--tpm-direct not given");
    if (opt_tpm_direct && wanted("direct")) {
        if ((rc = kv_ctx_new(&dctx, opt_tpm_direct)) != KV_OK)
            die_kv("kv_ctx_new (--tpm-direct)", rc);
        if ((rc = kv_key_open(dctx, info.uri, &dkey)) != KV_OK) {
            fprintf(stderr, "tls-bench: %s: %s\n", info.uri, kv_errmsg(dctx));
            exit(1);
        }
        if ((rc = kv_key_evp_pkey(dkey, NULL, &direct)) != KV_OK)
            die_kv("kv_key_evp_pkey (--tpm-direct)", rc);
        side_setup(&sides[2], NULL, NULL, direct, cert);
    }
    if (opt_side) {
        run_one(sides, 3);
    } else {
        run_sides(sides, opt_tpm_direct ? 3 : 2);
        if (sides[1].usable && opt_tpm2_pcap)
            theirs_cmds = tpm2_commands(info.uri + 10, cert, opt_tpm2_pcap);
        report("tpm", &sides[0], &sides[1], tpm_commands(ctx, &sides[0]), theirs_cmds);
        if (opt_tpm_direct)
            report("tpm", &sides[2], &sides[1], tpm_commands(dctx, &sides[2]), theirs_cmds);
    }
    for (int i = 0; i < 3; i++)
        side_free(&sides[i]);
    EVP_PKEY_free(ours);
    EVP_PKEY_free(theirs);
    EVP_PKEY_free(direct);
    X509_free(cert);
    X509_free(theirs_cert);
    kv_key_free(key);
    kv_key_free(dkey);
    kv_ctx_free(dctx);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "backends", required_argument, NULL, 'b' },
        { "seconds", required_argument, NULL, 's' },
        { "reps", required_argument, NULL, 'R' },
        { "json", required_argument, NULL, 'j' },
        { "p11-module", required_argument, NULL, 'M' },
        { "p11-pin-file", required_argument, NULL, 'P' },
        { "tpm2-pcap", required_argument, NULL, 'C' },
        { "tpm-direct", required_argument, NULL, 'D' },
        { "side", required_argument, NULL, 'S' },
        { "handshakes", required_argument, NULL, 'N' },
        { NULL, 0, NULL, 0 },
    };
    /* --side's names and the comparison each belongs to */
    static const char *const side_ids[][2] = {
        { "ours", "pkcs11" }, { "engine", "pkcs11" },       { "pem", "pkcs11" },
        { "tpm", "tpm" },     { "tpm2-openssl", "tpm" }, { "direct", "tpm" },
    };
    const char *conf = NULL, *json_path = NULL, *backends = "pkcs11,tpm";
    pthread_t server;
    kv_rc rc;
    int c;

    while ((c = getopt_long(argc, argv, "c:b:s:R:j:M:P:C:D:S:N:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': conf = optarg; break;
        case 'b': backends = optarg; break;
        case 's':
            seconds = atof(optarg);
            if (!(seconds > 0 && seconds <= 600)) {
                fprintf(stderr, "tls-bench: --seconds takes a number of seconds up to 600\n");
                return 2;
            }
            break;
        case 'R':
            reps = atoi(optarg);
            if (reps < 1 || reps > REPS_MAX || reps % 2 == 0) {
                fprintf(stderr, "tls-bench: --reps takes an odd number from 1 to %d\n", REPS_MAX);
                return 2;
            }
            break;
        case 'j': json_path = optarg; break;
        case 'M': opt_p11_module = optarg; break;
        case 'P': opt_p11_pin_file = optarg; break;
        case 'C': opt_tpm2_pcap = optarg; break;
        case 'D': opt_tpm_direct = optarg; break;
        case 'S':
            opt_side = optarg;
            backends = NULL;
            for (size_t i = 0; i < sizeof(side_ids) / sizeof(side_ids[0]); i++)
                if (strcmp(opt_side, side_ids[i][0]) == 0)
                    backends = side_ids[i][1];
            if (!backends) {
                fprintf(stderr, "tls-bench: --side takes ours, engine, pem, tpm, tpm2-openssl "
                                "or direct\n");
                return 2;
            }
            break;
        case 'N':
            opt_handshakes = atol(optarg);
            if (opt_handshakes < 0 || opt_handshakes > 1000000) {
                fprintf(stderr, "tls-bench: --handshakes takes a number up to 1000000\n");
                return 2;
            }
            break;
        default:
            fprintf(stderr, "usage: tls-bench -c CONF [--backends pkcs11,tpm] [--seconds S] "
                            "[--reps N] [--p11-module PATH --p11-pin-file FILE] [--json FILE] "
                            "[--tpm2-pcap FILE] [--tpm-direct CONF] "
                            "[--side NAME [--handshakes N]]\n");
            return 2;
        }
    }
    if ((rc = kv_ctx_new(&ctx, conf)) != KV_OK) {
        fprintf(stderr, "tls-bench: kv_ctx_new: %s\n", kv_strerror(rc));
        return 1;
    }
    if (pipe(jobs) != 0 || pthread_create(&server, NULL, server_main, NULL) != 0)
        die("cannot start the server thread");
    results = json_array();
    if (!opt_side) {
        printf("# tls-bench: full TLS 1.3 handshakes/s (X25519, ECDSA P-256 server key, no "
               "resumption), %.1f s per point, %d rounds, median ratio of side-by-side points\n",
               seconds, reps);
        printf("%-7s %-18s %-30s %10s %10s %8s\n", "backend", "ours", "reference", "ours hs/s",
               "ref hs/s", "ratio");
    }
    if (strstr(backends, "pkcs11"))
        bench_pkcs11();
    if (strstr(backends, "tpm"))
        bench_tpm();
    close(jobs[1]);
    pthread_join(server, NULL);
    close(jobs[0]);
    /* after the server thread has ended: its thread-local state refers to
     * tpm2-openssl's library context */
    if (tpm2_libctx)
        tpm2_done();
    if (json_path) {
        json_t *doc = json_pack("{s:f, s:i, s:o}", "seconds", seconds, "reps", reps, "results",
                                results);
        if (json_dump_file(doc, json_path, JSON_INDENT(2)) != 0)
            die("cannot write the JSON file");
        json_decref(doc);
    } else {
        json_decref(results);
    }
    kv_ctx_free(ctx);
    return 0;
}
