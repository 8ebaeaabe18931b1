/*
 * cmd-renew.c - keyvault cert renew: renew one key's certificate through a
 * vault CA (kv_cert_renew), report what is due across every key (--check,
 * for a timer or a monitoring check), or renew everything a CA issued that
 * is due (--all, what examples/renew's systemd service runs).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"

/* --check: at least one certificate is due (or expired) */
#define EXIT_DUE 3

const char cert_renew_help[] =
    "usage: keyvault [-c CONF] cert renew NAME --ca CA [--force] [--rotate-key]\n"
    "                [--profile P] [--lifetime DURATION] [-o FILE]\n"
    "       keyvault [-c CONF] cert renew --all --ca CA [--force] [--rotate-key]\n"
    "       keyvault [-c CONF] cert renew --check [--json]\n"
    "cert renew NAME renews the certificate stored with the key once renewal is\n"
    "due ([x509] renew_threshold of its lifetime, 2/3 by default; --force: now):\n"
    "a request signed by the key keeps the old certificate's subject, subject\n"
    "alternative names and extended key usages, the vault CA issues it under\n"
    "profile P (by default the one the old certificate's usages name:\n"
    "tls-server, tls-client, device-identity, sub-ca), and the new chain\n"
    "replaces the old one with the key (written to FILE with -o).\n"
    "--rotate-key: a new version of the key gets the new certificate and\n"
    "becomes current. --lifetime: 30s, 15m, 12h or 7d from now (default: the old\n"
    "certificate's lifetime). A failure keeps the old certificate and says\n"
    "when it expires.\n"
    "--all renews every certificate CA issued that is due, key by key.\n"
    "--check lists every key with a certificate: due or not, days left.\n"
    "Exit status: 0 done (--check: nothing due), 1 a failure, 2 usage,\n"
    "3 (--check only) at least one certificate is due.\n";

/* "30s", "15m", "12h", "7d" -> seconds; 0 when malformed or out of range. */
static int64_t parse_duration(const char *s)
{
    static const struct { char unit; int64_t secs; } units[] = {
        { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
    };
    char *end;
    unsigned long long n;

    if (*s < '0' || *s > '9')
        return 0;
    n = strtoull(s, &end, 10);
    if (end == s || !end[0] || end[1] || n == 0 || n > 36500ULL * 86400)
        return 0;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (*end == units[i].unit)
            return n <= 36500ULL * 86400 / (unsigned long long)units[i].secs
                       ? (int64_t)n * units[i].secs
                       : 0;
    return 0;
}

/* The listed key `name` open, with its certificate's facts: KV_OK, or
 * KV_ERR_KEY_NOT_FOUND (quietly) when it has no certificate, or another
 * failure reported on standard error. *key is open only on KV_OK. */
static kv_rc key_cert(kv_ctx *ctx, const char *name, kv_key **key, kv_cert_info **ci)
{
    kv_rc rc = kv_key_open(ctx, name, key);

    *ci = NULL;
    if (rc == KV_OK)
        rc = kv_key_cert_info(*key, ci);
    if (rc != KV_OK) {
        kv_key_free(*key);
        *key = NULL;
    }
    if (rc != KV_OK && rc != KV_ERR_KEY_NOT_FOUND)
        fprintf(stderr, "%s cert renew: %s: %s\n", prog, name,
                *kv_errmsg(ctx) ? kv_errmsg(ctx) : kv_strerror(rc));
    return rc;
}

/* The listed keys' base names, each once, in the list's order: a rotated
 * key is listed as NAME@N for each of its versions (and as NAME only while
 * its version 1 is kept), and NAME opens its current version. */
static char **base_names(const kv_key_list *list, size_t *n)
{
    char **names = calloc(list->count + 1, sizeof(*names));

    *n = 0;
    if (!names)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        const char *nm = list->keys[i].name;
        size_t len, j;

        if (!nm)
            continue;
        len = strcspn(nm, "@");
        for (j = 0; j < *n; j++)
            if (strlen(names[j]) == len && !strncmp(names[j], nm, len))
                break;
        if (j < *n)
            continue;
        if (!(names[*n] = strndup(nm, len))) {
            for (j = 0; j < *n; j++)
                free(names[j]);
            free(names);
            return NULL;
        }
        (*n)++;
    }
    return names;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- --check ------------------------------------------------------------------ */

static int renew_check(kv_ctx *ctx, int json)
{
    kv_key_list *list = NULL;
    json_t *arr = json ? json_array() : NULL;
    size_t ndue = 0, nfail = 0, nnames = 0;
    char **names = NULL;
    char b1[32], b2[32];
    kv_rc rc;

    if (json && !arr)
        return fail("cert renew", ctx, KV_ERR_NO_MEMORY);
    rc = kv_list_keys(ctx, &list);
    if (rc != KV_OK) {
        json_decref(arr);
        return fail("cert renew", ctx, rc);
    }
    if (!(names = base_names(list, &nnames))) {
        kv_key_list_free(list);
        json_decref(arr);
        return fail("cert renew", ctx, KV_ERR_NO_MEMORY);
    }
    kv_key_list_free(list);
    for (size_t i = 0; i < nnames; i++) {
        const char *name = names[i];
        kv_cert_info *ci = NULL;
        kv_key *key = NULL;

        /* NAME opens the current version: the one that is renewed */
        rc = key_cert(ctx, name, &key, &ci);
        if (rc != KV_OK) {
            nfail += rc != KV_ERR_KEY_NOT_FOUND;   /* no certificate: nothing to renew */
            continue;
        }
        ndue += ci->renewal_due || ci->expired;
        if (json) {
            kv_key_info cur;
            json_t *o = kv_key_get_info(key, &cur) != KV_OK ? NULL :
                json_pack("{s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:b}", "name",
                                  name, "version", (json_int_t)cur.version, "backend",
                                  cur.backend, "subject", ci->subject,
                                  "issuer", ci->issuer, "not_after", (json_int_t)ci->not_after,
                                  "renew_after", (json_int_t)ci->renew_after, "days_left",
                                  (json_int_t)ci->days_left, "due",
                                  ci->renewal_due || ci->expired, "expired", ci->expired);
            if (!o || json_array_append_new(arr, o) != 0)
                nfail++;
        } else if (ci->expired) {
            printf("%s: expired at %s: due\n", name, utc(ci->not_after, b1));
        } else {
            printf("%s: %s (renew after %s, not after %s, %ld day%s left)\n", name,
                   ci->renewal_due ? "due" : "not due", utc(ci->renew_after, b1),
                   utc(ci->not_after, b2), ci->days_left, ci->days_left == 1 ? "" : "s");
        }
        kv_cert_info_free(ci);
        kv_key_free(key);
    }
    names_free(names, nnames);
    if (json && print_json(json_pack("{s:o, s:I}", "keys", arr, "due", (json_int_t)ndue)))
        return EXIT_FAIL;
    return nfail ? EXIT_FAIL : ndue ? EXIT_DUE : EXIT_OK;
}

/* ---- renewing ------------------------------------------------------------------- */

/* The leaf stored with key, decoded; NULL when there is none or it does
 * not decode. */
static X509 *stored_leaf(kv_key *key)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    X509 *x = NULL;

    if (kv_key_cert_der(key, NULL, &len) == KV_OK && (der = malloc(len)) &&
        kv_key_cert_der(key, der, &len) == KV_OK) {
        p = der;
        x = d2i_X509(NULL, &p, (long)len);
    }
    free(der);
    ERR_clear_error();
    return x;
}

/* Whether the leaf stored with key was issued by the CA's certificate:
 * the issuer name and the signature (OpenSSL's X509_check_issued and
 * X509_verify). */
static int issued_by(kv_key *key, X509 *cacert)
{
    X509 *leaf = stored_leaf(key);
    int r = leaf && X509_check_issued(cacert, leaf) == X509_V_OK &&
            X509_verify(leaf, X509_get0_pubkey(cacert)) == 1;

    ERR_clear_error();
    X509_free(leaf);
    return r;
}

/* The not-after of the first certificate of a PEM chain. */
static int64_t chain_not_after(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    struct tm tm;
    int64_t t = 0;

    if (x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        t = (int64_t)timegm(&tm);
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    return t;
}

/* Renew the key ref (shown as `name`, the library's) with ca; report on
 * standard output or error. */
static int renew_one(kv_ctx *ctx, const char *ref, const char *name, kv_key *ca,
                     const kv_renew_opts *o, const char *out)
{
    char *pem = NULL, b[32];
    int ret = EXIT_OK;
    kv_rc rc = kv_cert_renew(ctx, ref, ca, o, &pem);

    if (rc != KV_OK) {
        fprintf(stderr, "%s cert renew: %s\n", prog,
                *kv_errmsg(ctx) ? kv_errmsg(ctx) : kv_strerror(rc));
        return EXIT_FAIL;
    }
    if (!pem) {
        printf("%s: not due yet, kept (see 'keyvault cert show')\n", name);
        return EXIT_OK;
    }
    printf("%s: renewed, the new certificate is valid until %s", name,
           utc(chain_not_after(pem), b));
    if (o->flags & KV_RENEW_ROTATE) {
        kv_key *key = NULL;
        kv_key_info info;
        if (kv_key_open(ctx, ref, &key) == KV_OK && kv_key_get_info(key, &info) == KV_OK)
            printf("; version %u is current", info.version);
        kv_key_free(key);
    }
    printf("\n");
    if (out && write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("cert renew", "write", out);
    kv_string_free(pem);
    return ret;
}

/* key's public key, decoded by OpenSSL (d2i_PUBKEY); NULL when it cannot
 * be had. */
static EVP_PKEY *public_of(kv_key *key)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    EVP_PKEY *pk = NULL;

    if (kv_key_public_der(key, NULL, &len) == KV_OK && (der = malloc(len)) &&
        kv_key_public_der(key, der, &len) == KV_OK) {
        p = der;
        pk = d2i_PUBKEY(NULL, &p, (long)len);
    }
    free(der);
    ERR_clear_error();
    return pk;
}

/* --all: every key whose certificate the CA issued, but the CA's own
 * (known by its public key: a rotated CA's name is not its key's). */
static int renew_all(kv_ctx *ctx, kv_key *ca, const kv_renew_opts *o)
{
    kv_key_list *list = NULL;
    kv_key_info cainfo;
    X509 *cacert = NULL;
    EVP_PKEY *capub = NULL, *pub;
    char **names = NULL;
    size_t nfail = 0, nnames = 0;
    int ret = EXIT_FAIL;
    kv_rc rc;

    if ((rc = kv_key_get_info(ca, &cainfo)) != KV_OK)
        return fail("cert renew", ctx, rc);
    if (!(capub = public_of(ca))) {
        fprintf(stderr, "%s cert renew: cannot read the public key of CA '%s'\n", prog,
                cainfo.name ? cainfo.name : "?");
        goto out;
    }
    if (!(cacert = stored_leaf(ca))) {
        fprintf(stderr, "%s cert renew: CA '%s' has no readable certificate stored with its "
                "key\n", prog, cainfo.name ? cainfo.name : "?");
        goto out;
    }
    if ((rc = kv_list_keys(ctx, &list)) != KV_OK) {
        ret = fail("cert renew", ctx, rc);
        goto out;
    }
    if (!(names = base_names(list, &nnames))) {
        ret = fail("cert renew", ctx, KV_ERR_NO_MEMORY);
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        const char *name = names[i];
        kv_cert_info *ci = NULL;
        kv_key *key = NULL;
        int mine, self;

        rc = key_cert(ctx, name, &key, &ci);
        if (rc != KV_OK) {
            nfail += rc != KV_ERR_KEY_NOT_FOUND;   /* no certificate: nothing to renew */
            continue;
        }
        pub = public_of(key);
        self = pub && EVP_PKEY_eq(pub, capub) == 1;
        EVP_PKEY_free(pub);
        ERR_clear_error();
        mine = self ? 0 : issued_by(key, cacert);
        kv_key_free(key);
        if (self) {
            /* the CA's own certificate is not the CA's to renew */
        } else if (mine != 1) {
            printf("%s: issued by another CA, left alone\n", name);
        } else if (!ci->renewal_due && !ci->expired && !(o->flags & KV_RENEW_FORCE)) {
            char b[32];
            printf("%s: not due (renew after %s)\n", name, utc(ci->renew_after, b));
        } else if (renew_one(ctx, name, name, ca, o, NULL) != EXIT_OK) {
            nfail++;
        }
        kv_cert_info_free(ci);
    }
    ret = nfail ? EXIT_FAIL : EXIT_OK;
out:
    names_free(names, nnames);
    kv_key_list_free(list);
    X509_free(cacert);
    EVP_PKEY_free(capub);
    return ret;
}

/* The old certificate's expiry, for a failure before the library is asked
 * (the CA key cannot be opened). */
static void say_old_expiry(kv_ctx *ctx, kv_key *key, const char *name)
{
    kv_cert_info *ci = NULL;
    char b[32];

    if (kv_key_cert_info(key, &ci) == KV_OK)
        fprintf(stderr, "%s cert renew: %s: the old certificate %s %s\n", prog, name,
                ci->expired ? "expired at" : "stays in force until", utc(ci->not_after, b));
    kv_cert_info_free(ci);
}

/* cert renew ... (argv[0] is "renew"). */
int cmd_cert_renew(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "ca", required_argument, NULL, 'c' },       { "force", no_argument, NULL, 'f' },
        { "rotate-key", no_argument, NULL, 'r' },     { "profile", required_argument, NULL, 'p' },
        { "lifetime", required_argument, NULL, 'l' }, { "check", no_argument, NULL, 'k' },
        { "json", no_argument, NULL, 'j' },           { "all", no_argument, NULL, 'a' },
        { "out", required_argument, NULL, 'o' },      { NULL, 0, NULL, 0 },
    };
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    const char *ca_name = NULL, *out = NULL;
    int c, check = 0, json = 0, all = 0, ret;
    kv_key *ca = NULL, *key = NULL;
    kv_key_info info;
    char *name = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ca_name = optarg; break;
        case 'f': o.flags |= KV_RENEW_FORCE; break;
        case 'r': o.flags |= KV_RENEW_ROTATE; break;
        case 'p': o.profile = optarg; break;
        case 'l':
            if (!(o.lifetime = parse_duration(optarg)))
                die_usage("cert", "--lifetime: a duration such as 30s, 15m, 12h or 7d "
                                  "(at most 36500d)");
            break;
        case 'k': check = 1; break;
        case 'j': json = 1; break;
        case 'a': all = 1; break;
        case 'o': out = optarg; break;
        default: die_usage("cert", "bad option");
        }
    }
    if (check) {
        if (optind != argc || ca_name || all || o.flags || o.profile || o.lifetime || out)
            die_usage("cert", "renew --check takes only --json");
        return renew_check(ctx, json);
    }
    if (json)
        die_usage("cert", "--json goes with renew --check");
    if (!ca_name)
        die_usage("cert", "renew needs --ca CA_NAME");
    if (all ? optind != argc || o.profile || out : optind != argc - 1)
        die_usage("cert", all ? "renew --all takes no key NAME, --profile or -o"
                              : "renew expects one key NAME or URI");
    if (all) {
        if ((rc = kv_key_open(ctx, ca_name, &ca)) != KV_OK)
            return fail("cert renew", ctx, rc);
        ret = renew_all(ctx, ca, &o);
        kv_key_free(ca);
        return ret;
    }
    /* the key first: its name for messages, its certificate's expiry when
     * the CA cannot be opened */
    if ((rc = kv_key_open(ctx, argv[optind], &key)) != KV_OK ||
        (rc = kv_key_get_info(key, &info)) != KV_OK) {
        kv_key_free(key);
        return fail("cert renew", ctx, rc);
    }
    if (!(name = strdup(info.name ? info.name : "(no name)"))) {
        kv_key_free(key);
        return fail("cert renew", ctx, KV_ERR_NO_MEMORY);
    }
    if ((rc = kv_key_open(ctx, ca_name, &ca)) != KV_OK) {
        ret = fail("cert renew", ctx, rc);
        say_old_expiry(ctx, key, name);
    } else {
        kv_key_free(key);
        key = NULL;
        ret = renew_one(ctx, argv[optind], name, ca, &o, out);
    }
    free(name);
    kv_key_free(key);
    kv_key_free(ca);
    return ret;
}
