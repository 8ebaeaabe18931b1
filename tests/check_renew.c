/*
 * check_renew.c - kv_cert_renew (renew.c) on the software store: due and
 * not due, what the new certificate keeps, the profile taken from the old
 * certificate's usages, the lifetime, failing CAs keeping the old chain with
 * the expiry in the message, rotation to a new key version, the options
 * refused, and kv_err_frame keeping its suffix when the detail is long.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

static kv_ctx *ctx;

static void setup(void)
{
    /* due at half the lifetime */
    ctx = tu_ctx("[x509]\nrenew_threshold = 50%\n");
}

static void teardown(void)
{
    kv_ctx_free(ctx);
    ctx = NULL;
}

/* A name unique to this test process: the CA records share one home. */
static const char *uniq(const char *base)
{
    static char buf[8][64];
    static int i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s-%ld", base, (long)getpid());
    return buf[i];
}

/* A CA key with a self-signed CA certificate stored with it. */
static kv_key *make_ca(const char *name)
{
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    kv_key *ca = NULL;
    char *pem = NULL;

    o.subject = "CN=Renewal Test Root,O=Fleet";
    o.flags = KV_CERT_CA;
    o.days = 30;
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, "software", &ca), KV_OK);
    ck_assert_rc(ctx, kv_cert_selfsign(ca, &o, &pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(ca, (unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(pem);
    return ca;
}

/* A key with a certificate ca issued under profile for the request opts. */
static kv_key *make_leaf(const char *name, kv_key *ca, const char *profile,
                         const kv_cert_opts *req)
{
    kv_key *key = NULL;
    char *csr = NULL, *pem = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, "software", &key), KV_OK);
    ck_assert_rc(ctx, kv_csr_create(key, req, &csr), KV_OK);
    ck_assert_rc(ctx, kv_ca_issue(ca, profile, (unsigned char *)csr, strlen(csr), NULL, &pem),
                 KV_OK);
    ck_assert_rc(ctx, kv_key_store_chain(key, (unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(csr);
    kv_string_free(pem);
    return key;
}

static X509 *first_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

    BIO_free(b);
    ck_assert_ptr_nonnull(x);
    return x;
}

/* The leaf stored with key `name`, opened afresh. */
static X509 *stored_leaf(const char *name)
{
    kv_key *key = NULL;
    char *pem = NULL;
    X509 *x;

    ck_assert_rc(ctx, kv_key_open(ctx, name, &key), KV_OK);
    ck_assert_rc(ctx, kv_key_chain_pem(key, &pem), KV_OK);
    x = first_cert(pem);
    kv_string_free(pem);
    kv_key_free(key);
    return x;
}

static bool has_eku(X509 *x, int nid)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    bool found = false;

    for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++)
        found |= OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == nid;
    EXTENDED_KEY_USAGE_free(eku);
    return found;
}

static int64_t epoch(const ASN1_TIME *t)
{
    struct tm tm;

    ck_assert_int_eq(ASN1_TIME_to_tm(t, &tm), 1);
    return (int64_t)timegm(&tm);
}

static const char *const tls_sans[] = { "dns:gw.example.org", "ip:192.0.2.7", NULL };
static const char *const eku_server[] = { "serverAuth", NULL };
static const char *const eku_client[] = { "clientAuth", NULL };

START_TEST(not_due_then_forced)
{
    const char *ca_name = uniq("ca"), *name = uniq("gw");
    kv_cert_opts req = KV_CERT_OPTS_INIT;
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key;
    X509 *old, *now, *issued, *got;
    GENERAL_NAMES *a, *b;
    char *pem = (char *)"untouched";

    req.subject = "CN=gw.example.org,O=Fleet";
    req.sans = tls_sans;
    req.ext_key_usage = eku_server;
    key = make_leaf(name, ca, "tls-server", &req);
    old = stored_leaf(name);
    /* a year-long certificate is not due: KV_OK, *pem NULL, nothing changed */
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, NULL, &pem), KV_OK);
    ck_assert_ptr_null(pem);
    now = stored_leaf(name);
    ck_assert_int_eq(X509_cmp(old, now), 0);
    X509_free(now);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_OK);
    ck_assert_ptr_null(pem);

    o.flags = KV_RENEW_FORCE;
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_OK);
    ck_assert_ptr_nonnull(pem);
    issued = first_cert(pem);
    got = stored_leaf(name);
    ck_assert_int_eq(X509_cmp(issued, got), 0);
    ck_assert_int_ne(X509_cmp(issued, old), 0);
    /* kept: subject, SANs, EKU; issued by the CA; the key's own */
    ck_assert_int_eq(X509_NAME_cmp(X509_get_subject_name(issued), X509_get_subject_name(old)), 0);
    a = X509_get_ext_d2i(old, NID_subject_alt_name, NULL, NULL);
    b = X509_get_ext_d2i(issued, NID_subject_alt_name, NULL, NULL);
    ck_assert_int_eq(sk_GENERAL_NAME_num(a), 2);
    ck_assert_int_eq(sk_GENERAL_NAME_num(b), 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(GENERAL_NAME_cmp(sk_GENERAL_NAME_value(a, i),
                                          sk_GENERAL_NAME_value(b, i)), 0);
    GENERAL_NAMES_free(a);
    GENERAL_NAMES_free(b);
    ck_assert(has_eku(issued, NID_server_auth));
    ck_assert(!has_eku(issued, NID_client_auth));
    ck_assert_int_eq(X509_verify(issued, ca->pub), 1);
    ck_assert_int_eq(EVP_PKEY_eq(X509_get0_pubkey(issued), key->pub), 1);
    /* the old lifetime (a CA's default year, cut to the CA's 30 days): cut
     * to the CA's not-after again */
    ck_assert_int_le(llabs((long long)(epoch(X509_get0_notAfter(issued)) -
                                       epoch(X509_get0_notAfter(old)))), 2);
    kv_string_free(pem);
    X509_free(issued);
    X509_free(got);
    X509_free(old);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

/* A lifetime of seconds: due at half of it (plus the minute before now). */
START_TEST(short_lifetime_due)
{
    const char *ca_name = uniq("ca"), *name = uniq("dev");
    kv_cert_opts req = KV_CERT_OPTS_INIT;
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key;
    kv_cert_info *ci = NULL;
    X509 *x, *y;
    char *pem = NULL;
    time_t t0, t1;
    int64_t due_at;

    req.subject = "CN=dev";
    req.ext_key_usage = eku_client;
    key = make_leaf(name, ca, "tls-client", &req);
    o.flags = KV_RENEW_FORCE;
    o.lifetime = 64;   /* valid 124 s from a minute ago: due 2 s from now */
    t0 = time(NULL);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_OK);
    t1 = time(NULL);
    x = first_cert(pem);
    kv_string_free(pem);
    /* 64 s from when it was issued, which is somewhere in the call */
    ck_assert_int_ge(epoch(X509_get0_notAfter(x)), t0 + 64);
    ck_assert_int_le(epoch(X509_get0_notAfter(x)), t1 + 64);
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_OK);
    ck_assert_int_eq(ci->not_after - ci->not_before, 124);
    ck_assert_int_eq(ci->renew_after, ci->not_before + 62);
    due_at = ci->renew_after;
    kv_cert_info_free(ci);
    /* wait for the instant the certificate says, not a fixed time: a slow
     * issuance moves it */
    while (time(NULL) < due_at)
        sleep(1);
    /* due: renewed without force, with the old lifetime (64 s again) */
    t1 = time(NULL);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, NULL, &pem), KV_OK);
    ck_assert_ptr_nonnull(pem);
    y = first_cert(pem);
    kv_string_free(pem);
    ck_assert_int_ne(X509_cmp(x, y), 0);
    ck_assert_int_eq(epoch(X509_get0_notAfter(y)) - epoch(X509_get0_notBefore(y)), 124);
    ck_assert(has_eku(y, NID_client_auth));
    ck_assert(!has_eku(y, NID_server_auth));   /* tls-client, from clientAuth */
    /* and not due again at once: the new certificate is due 2 s after its
     * issuance, which a loaded machine can outlast before the next call, so
     * the window is read from the certificate; the call must leave it alone
     * while it is not due and renew it once it is */
    ck_assert_rc(ctx, kv_key_cert_info(key, &ci), KV_OK);
    ck_assert_int_eq(ci->renew_after, ci->not_before + 62);
    ck_assert_int_gt(ci->renew_after, (int64_t)t1);
    due_at = ci->renew_after;
    kv_cert_info_free(ci);
    t1 = time(NULL);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, NULL, &pem), KV_OK);
    if (t1 < due_at && time(NULL) < due_at)
        ck_assert_ptr_null(pem);
    kv_string_free(pem);
    X509_free(x);
    X509_free(y);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

/* A failing CA keeps the old chain; the message names the failure and the expiry. */
START_TEST(failing_ca_keeps_old)
{
    const char *ca_name = uniq("ca"), *name = uniq("gw"), *bare = uniq("bare");
    kv_cert_opts req = KV_CERT_OPTS_INIT;
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key, *nocert = NULL;
    X509 *old, *now;
    char *pem = NULL, path[512];
    FILE *f;

    req.subject = "CN=gw.example.org";
    req.sans = tls_sans;
    key = make_leaf(name, ca, "tls-server", &req);
    old = stored_leaf(name);
    o.flags = KV_RENEW_FORCE;

    /* a CA key without a certificate */
    ck_assert_rc(ctx, kv_key_generate(ctx, bare, KV_KEY_EC_P256, "software", &nocert), KV_OK);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, nocert, &o, &pem), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_null(pem);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "renewing the certificate of '"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "has no certificate stored with its key"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "; the old certificate stays in force until 20"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "days left)"));

    /* the CA's record not a database */
    snprintf(path, sizeof(path), "%s/ca/%s.db", ctx->home, ca_name);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    fputs("not a database\n", f);
    fclose(f);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_ERR_CORRUPT);
    ck_assert_ptr_null(pem);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "file is not a database"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "stays in force until"));

    /* the CA key itself */
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the CA key itself"));

    now = stored_leaf(name);
    ck_assert_int_eq(X509_cmp(old, now), 0);
    X509_free(now);
    X509_free(old);
    kv_key_free(nocert);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

/* The profile from the old certificate's usages, or refused. */
START_TEST(profile_from_usages)
{
    static const char *const both[] = { "clientAuth", "serverAuth", NULL };
    static const char *const sign[] = { "codeSigning", NULL };
    static const char *const uri[] = { "uri:spiffe://fleet/dev-1", NULL };
    const char *ca_name = uniq("ca"), *dev = uniq("dev"), *code = uniq("code");
    kv_cert_opts req = KV_CERT_OPTS_INIT, ss = KV_CERT_OPTS_INIT;
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key, *k2 = NULL;
    char *pem = NULL;
    X509 *x;

    req.subject = "CN=dev-1";
    req.sans = uri;
    req.ext_key_usage = both;
    key = make_leaf(dev, ca, "device-identity", &req);
    o.flags = KV_RENEW_FORCE;
    ck_assert_rc(ctx, kv_cert_renew(ctx, dev, ca, &o, &pem), KV_OK);
    x = first_cert(pem);
    ck_assert(has_eku(x, NID_client_auth) && has_eku(x, NID_server_auth));
    X509_free(x);
    kv_string_free(pem);
    /* a profile that does not grant an old usage: refused by the CA */
    o.profile = "tls-client";
    ck_assert_rc(ctx, kv_cert_renew(ctx, dev, ca, &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "does not grant extended key usage serverAuth"));
    o.profile = "no-such-profile";
    ck_assert_rc(ctx, kv_cert_renew(ctx, dev, ca, &o, &pem), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "no-such-profile"));   /* not echoed */

    /* codeSigning names no profile */
    ck_assert_rc(ctx, kv_key_generate(ctx, code, KV_KEY_EC_P256, "software", &k2), KV_OK);
    ss.subject = "CN=code";
    ss.ext_key_usage = sign;
    ck_assert_rc(ctx, kv_cert_selfsign(k2, &ss, &pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(k2, (unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(pem);
    o.profile = NULL;
    ck_assert_rc(ctx, kv_cert_renew(ctx, code, ca, &o, &pem), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "name the profile"));
    kv_key_free(k2);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

START_TEST(bad_options)
{
    const char *ca_name = uniq("ca"), *name = uniq("nocert");
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_rotate_opts ro = KV_ROTATE_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key = NULL;
    char *pem = NULL;

    o.size = 0;
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    o.size = sizeof(o);
    o.flags = 0x80;
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    o.flags = 0;
    o.lifetime = -1;
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    o.lifetime = 36501LL * 86400;
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    o.lifetime = 0;
    o.rotate = &ro;
    ck_assert_rc(ctx, kv_cert_renew(ctx, ca_name, ca, &o, &pem), KV_ERR_INVALID_ARG);
    o.rotate = NULL;
    o.flags = KV_RENEW_ROTATE;
    ck_assert_rc(ctx, kv_cert_renew(ctx, "file:/nonexistent/x.pem", ca, &o, &pem),
                 KV_ERR_BAD_URI);
    o.flags = KV_RENEW_FORCE;
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, "software", &key), KV_OK);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "has no certificate to renew"));
    ck_assert_ptr_null(pem);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

/* KV_RENEW_ROTATE: the new version holds the new chain, the old its own; a
 * CA failure after the new version was made leaves the old one current. */
START_TEST(rotate)
{
    const char *ca_name = uniq("ca"), *name = uniq("rot");
    kv_cert_opts req = KV_CERT_OPTS_INIT;
    kv_renew_opts o = KV_RENEW_OPTS_INIT;
    kv_key *ca = make_ca(ca_name), *key, *nocert = NULL, *cur = NULL;
    kv_key_version_list *vl = NULL;
    char *pem = NULL, v1[80], v2[80];
    X509 *old, *issued, *x;

    req.subject = "CN=rot";
    req.ext_key_usage = eku_client;
    key = make_leaf(name, ca, "tls-client", &req);
    old = stored_leaf(name);
    o.flags = KV_RENEW_FORCE | KV_RENEW_ROTATE;
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_OK);
    issued = first_cert(pem);
    kv_string_free(pem);
    ck_assert_rc(ctx, kv_key_versions(ctx, name, &vl), KV_OK);
    ck_assert_uint_eq(vl->current, 2);
    kv_key_version_list_free(vl);
    snprintf(v1, sizeof(v1), "%s@1", name);
    snprintf(v2, sizeof(v2), "%s@2", name);
    x = stored_leaf(name);
    ck_assert_int_eq(X509_cmp(x, issued), 0);
    X509_free(x);
    x = stored_leaf(v2);
    ck_assert_int_eq(X509_cmp(x, issued), 0);
    X509_free(x);
    x = stored_leaf(v1);
    ck_assert_int_eq(X509_cmp(x, old), 0);
    X509_free(x);
    ck_assert_rc(ctx, kv_key_open(ctx, name, &cur), KV_OK);
    ck_assert_int_eq(EVP_PKEY_eq(X509_get0_pubkey(issued), cur->pub), 1);
    ck_assert_int_ne(EVP_PKEY_eq(X509_get0_pubkey(issued), key->pub), 1);
    kv_key_free(cur);

    /* the CA fails after kv_rotate_prepare: version 2 stays current */
    ck_assert_rc(ctx, kv_key_generate(ctx, uniq("bare"), KV_KEY_EC_P256, "software", &nocert),
                 KV_OK);
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, nocert, &o, &pem), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "stays in force until"));
    ck_assert_rc(ctx, kv_key_versions(ctx, name, &vl), KV_OK);
    ck_assert_uint_eq(vl->current, 2);
    kv_key_version_list_free(vl);
    x = stored_leaf(name);
    ck_assert_int_eq(X509_cmp(x, issued), 0);
    X509_free(x);
    /* and again with the CA: the pending version is made again and current */
    ck_assert_rc(ctx, kv_cert_renew(ctx, name, ca, &o, &pem), KV_OK);
    kv_string_free(pem);
    ck_assert_rc(ctx, kv_key_versions(ctx, name, &vl), KV_OK);
    ck_assert_uint_eq(vl->current, 3);
    kv_key_version_list_free(vl);
    X509_free(issued);
    X509_free(old);
    kv_key_free(nocert);
    kv_key_free(key);
    kv_key_free(ca);
}
END_TEST

/* kv_err_frame: a long detail is cut, the suffix kept whole. */
START_TEST(frame_keeps_suffix)
{
    char big[2000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kv_err_begin(ctx);
    (void)kv_error(ctx, KV_ERR_IO, "%s", big);
    kv_err_frame(ctx, KV_ERR_IO, "renewing: ", "; until 2027");
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "renewing: xxx"));
    ck_assert_str_eq(kv_errmsg(ctx) + strlen(kv_errmsg(ctx)) - 12, "; until 2027");
    /* nothing recorded: the code's text */
    kv_err_begin(ctx);
    kv_err_frame(ctx, KV_ERR_NO_SPACE, "a: ", "; b");
    ck_assert_str_eq(kv_errmsg(ctx), "a: no space left (disk full or file size limit); b");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("renew");
    TCase *tc = tcase_create("renew");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, not_due_then_forced);
    tcase_add_test(tc, short_lifetime_due);
    tcase_add_test(tc, failing_ca_keeps_old);
    tcase_add_test(tc, profile_from_usages);
    tcase_add_test(tc, bad_options);
    tcase_add_test(tc, rotate);
    tcase_add_test(tc, frame_keeps_suffix);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
