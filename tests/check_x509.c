/*
 * check_x509.c - the X.509 toolkit of the core (x509.c): RFC 4514 names,
 * subject alternative names, extensions, serials, and certificates,
 * requests and CRLs signed by vault keys of every type, each checked by
 * OpenSSL's own verification and, for the files, by the openssl command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "testutil.h"

static kv_ctx *ctx;

static void setup(void)
{
    ctx = tu_ctx(NULL);
}

static void teardown(void)
{
    kv_ctx_free(ctx);
    ctx = NULL;
}

static char *name_text(const char *in)
{
    X509_NAME *n = NULL;
    char *text = NULL;

    ck_assert_rc(ctx, kv_x509_name_parse(ctx, in, &n), KV_OK);
    ck_assert_rc(ctx, kv_x509_name_text(ctx, n, &text), KV_OK);
    X509_NAME_free(n);
    return text;
}

START_TEST(name_round_trip)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "CN=dev-42,O=Fleet", "CN=dev-42,O=Fleet" },
        { "CN=dev-42, O=Fleet, C=DE", "CN=dev-42,O=Fleet,C=DE" },
        { "cn=a,o=b", "CN=a,O=b" },
        { "CN=Smith\\, J.,O=Fleet", "CN=Smith\\, J.,O=Fleet" },
        { "CN=a\\2Bb", "CN=a\\+b" },
        { "OU=x+CN=y,O=z", "CN=y+OU=x,O=z" }, /* DER sorts a SET OF */
        { "2.5.4.3=oid", "CN=oid" },
        { "CN=Gr\xc3\xbc\xc3\x9f" "e", "CN=Gr\xc3\xbc\xc3\x9f" "e" },
        { "DC=example,DC=org", "DC=example,DC=org" },
        { "", "" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = name_text(cases[i].in);
        ck_assert_msg(strcmp(t, cases[i].out) == 0, "'%s' printed as '%s', wanted '%s'",
                      cases[i].in, t, cases[i].out);
        free(t);
    }
}
END_TEST

/* The first RDN of the string is the last of the DER sequence. */
START_TEST(name_order)
{
    X509_NAME *n = NULL;

    ck_assert_rc(ctx, kv_x509_name_parse(ctx, "CN=leaf,O=Org,C=DE", &n), KV_OK);
    ck_assert_int_eq(X509_NAME_entry_count(n), 3);
    ck_assert_int_eq(OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(n, 0))),
                     NID_countryName);
    ck_assert_int_eq(OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(n, 2))),
                     NID_commonName);
    X509_NAME_free(n);
}
END_TEST

START_TEST(name_refused)
{
    static const struct {
        const char *in, *why;
    } cases[] = {
        { "CN", "expected TYPE=VALUE" },
        { "=x", "expected TYPE=VALUE" },
        { "CN=", "empty value" },
        { "CN=a,", "ends with a separator" },
        { "XX=a", "unknown attribute type 'XX'" },
        { "CN=a\\q", "bad escape" },
        { "CN=a;b", "must be escaped" },
        { "CN=#0403616263", "not supported" },
        { "C=Germany", "attribute C" },
        { "CN=a\\00b", "NUL" },
        { "C\x01=a", "bad attribute type" },
    };
    X509_NAME *n = NULL;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_rc(ctx, kv_x509_name_parse(ctx, cases[i].in, &n), KV_ERR_BAD_INPUT);
        ck_assert_ptr_null(n);
        ck_assert_msg(strstr(kv_errmsg(ctx), cases[i].why), "'%s': message '%s' lacks '%s'",
                      cases[i].in, kv_errmsg(ctx), cases[i].why);
        kv_err_begin(ctx);
    }
}
END_TEST

START_TEST(name_limits)
{
    char big[KV_X509_NAME_MAX + 8], cn[80];
    X509_NAME *n = NULL;

    memset(cn, 'a', 65);
    strcpy(cn + 65, "");
    snprintf(big, sizeof(big), "CN=%s", cn);
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, big, &n), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "attribute CN"));
    kv_err_begin(ctx);
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "O=", 2);
    big[sizeof(big) - 1] = '\0';
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, big, &n), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "longer than"));
    kv_err_begin(ctx);
    big[0] = '\0';
    for (int i = 0; i < KV_X509_NAME_ATTRS + 1; i++)
        strcat(big, i ? ",OU=x" : "OU=x");
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, big, &n), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "more than"));
    ck_assert_ptr_null(n);
}
END_TEST

START_TEST(san_kinds)
{
    static const struct {
        const char *in;
        int type;
    } good[] = {
        { "dns:gw.example.org", GEN_DNS },  { "DNS:*.example.org", GEN_DNS },
        { "ip:192.0.2.1", GEN_IPADD },      { "ip:2001:db8::1", GEN_IPADD },
        { "uri:spiffe://fleet/dev-42", GEN_URI }, { "email:ops@example.org", GEN_EMAIL },
    };
    static const char *const bad[] = {
        "gw.example.org", "dns:", "dns:-bad.example", "dns:a..b", "dns:a b",
        "dns:exa*mple.org", "ip:300.1.1.1", "ip:gw", "uri:no-scheme", "uri:http://a b",
        "email:nobody", "email:a@b@c", "x400:whatever",
    };
    GENERAL_NAME *g = NULL;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_rc(ctx, kv_x509_san_parse(ctx, good[i].in, &g), KV_OK);
        ck_assert_int_eq(g->type, good[i].type);
        GENERAL_NAME_free(g);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(kv_x509_san_parse(ctx, bad[i], &g) == KV_ERR_BAD_INPUT, "'%s' accepted",
                      bad[i]);
        ck_assert_ptr_null(g);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "subject alternative name"));
        kv_err_begin(ctx);
    }
}
END_TEST

START_TEST(serials)
{
    ASN1_INTEGER *a = NULL, *b = NULL;
    BIGNUM *bn;

    ck_assert_rc(ctx, kv_x509_serial_random(ctx, &a), KV_OK);
    ck_assert_rc(ctx, kv_x509_serial_random(ctx, &b), KV_OK);
    ck_assert_int_ne(ASN1_INTEGER_cmp(a, b), 0);
    bn = ASN1_INTEGER_to_BN(a, NULL);
    ck_assert(!BN_is_negative(bn) && !BN_is_zero(bn));
    ck_assert_int_le(BN_num_bits(bn), 127);
    BN_free(bn);
    ASN1_INTEGER_free(a);
    ASN1_INTEGER_free(b);
}
END_TEST

static const kv_key_type types[] = { KV_KEY_EC_P256, KV_KEY_EC_P384, KV_KEY_RSA_2048,
                                     KV_KEY_ED25519 };

/* A self-signed CA certificate from a software key of each type, with the
 * extensions the toolkit builds, checked by OpenSSL's verifier and the
 * openssl command. */
START_TEST(sign_certificate)
{
    kv_key_type type = types[_i];
    kv_key *key = NULL;
    X509 *x = X509_new_ex(ctx->libctx, NULL);
    X509_NAME *n = NULL;
    ASN1_INTEGER *serial = NULL;
    GENERAL_NAMES *san = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    const char *const eku[] = { "serverAuth", "clientAuth", NULL };
    kv_x509_ext_spec spec = { 1, -1, KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN, eku, san, 0 };
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    char name[32], path[600];
    FILE *f;
    time_t now = time(NULL);

    snprintf(name, sizeof(name), "ca-%d", (int)type);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, "software", &key), KV_OK);
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, "CN=Root,O=Fleet", &n), KV_OK);
    ck_assert_rc(ctx, kv_x509_san_parse(ctx, "dns:ca.example.org", &g), KV_OK);
    sk_GENERAL_NAME_push(san, g);
    ck_assert_rc(ctx, kv_x509_serial_random(ctx, &serial), KV_OK);
    ck_assert_int_eq(X509_set_version(x, X509_VERSION_3), 1);
    ck_assert_int_eq(X509_set_serialNumber(x, serial), 1);
    ck_assert_int_eq(X509_set_subject_name(x, n), 1);
    ck_assert_int_eq(X509_set_issuer_name(x, n), 1);
    ck_assert_rc(ctx, kv_x509_set_validity(ctx, x, now - 60, now + 86400), KV_OK);
    ck_assert_int_eq(X509_set_pubkey(x, key->pub), 1);
    ck_assert_rc(ctx, kv_x509_exts_build(ctx, &spec, &exts), KV_OK);
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
        ck_assert_int_eq(X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1), 1);
    ck_assert_rc(ctx, kv_x509_add_key_ids(ctx, x, NULL), KV_OK);
    ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_ISSUE, KV_ALG_DEFAULT, KV_X509_CERT, x), KV_OK);

    /* OpenSSL's own path validation accepts it as a trust anchor */
    X509_STORE_add_cert(store, x);
    X509_STORE_CTX_init(sctx, store, x, NULL);
    ck_assert_msg(X509_verify_cert(sctx) == 1, "verify: %s",
                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
    ck_assert_int_eq(X509_check_ca(x), 1);
    ck_assert_ptr_nonnull(X509_get0_subject_key_id(x));
    ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_subject_key_id(x),
                                           X509_get0_authority_key_id(x)), 0);
    /* and so does the openssl command, on the PEM file */
    snprintf(path, sizeof(path), "%s/%s.crt", tu_tmpdir(), name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, x);
    fclose(f);
    ck_assert_int_eq(tu_sh("openssl verify -CAfile %s %s", path, path), 0);
    ck_assert_int_eq(tu_sh("openssl x509 -in %s -noout -text | grep -q 'CA:TRUE'", path), 0);

    /* a second signature with another algorithm where the key has one */
    if (type == KV_KEY_RSA_2048) {
        ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_ISSUE, KV_ALG_RSA_PKCS1_SHA256, KV_X509_CERT, x),
                     KV_OK);
        ck_assert_int_eq(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
    }
    /* an algorithm of another family is refused and changes nothing */
    ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_ISSUE,
                                   type == KV_KEY_ED25519 ? KV_ALG_ECDSA_SHA256 : KV_ALG_ED25519,
                                   KV_X509_CERT, x),
                 KV_ERR_WRONG_KEY_TYPE);
    ck_assert_int_eq(X509_verify(x, key->pub), 1);

    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(san);
    ASN1_INTEGER_free(serial);
    X509_NAME_free(n);
    X509_free(x);
    kv_key_free(key);
}
END_TEST

/* A request and a CRL, checked by OpenSSL and by the openssl command. */
START_TEST(sign_request_and_crl)
{
    kv_key_type type = types[_i];
    kv_key *key = NULL;
    X509_REQ *req = X509_REQ_new_ex(ctx->libctx, NULL);
    X509_CRL *crl = X509_CRL_new_ex(ctx->libctx, NULL), *signed_crl = NULL;
    X509_REVOKED *rev = X509_REVOKED_new();
    X509_NAME *n = NULL;
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *t = ASN1_TIME_set(NULL, time(NULL));
    char name[32], path[600];
    FILE *f;

    snprintf(name, sizeof(name), "req-%d", (int)type);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, "software", &key), KV_OK);
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, "CN=dev-42,O=Fleet", &n), KV_OK);
    ck_assert_int_eq(X509_REQ_set_subject_name(req, n), 1);
    ck_assert_int_eq(X509_REQ_set_pubkey(req, key->pub), 1);
    ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_SIGN, KV_ALG_DEFAULT, KV_X509_REQ, req), KV_OK);
    ck_assert_int_eq(X509_REQ_verify_ex(req, key->pub, ctx->libctx, NULL), 1);
    snprintf(path, sizeof(path), "%s/%s.csr", tu_tmpdir(), name);
    f = fopen(path, "w");
    PEM_write_X509_REQ(f, req);
    fclose(f);
    ck_assert_int_eq(tu_sh("openssl req -in %s -noout -verify", path), 0);

    ck_assert_int_eq(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
    ck_assert_int_eq(X509_CRL_set_issuer_name(crl, n), 1);
    ck_assert_int_eq(X509_CRL_set1_lastUpdate(crl, t), 1);
    ck_assert_int_eq(X509_CRL_set1_nextUpdate(crl, t), 1);
    ck_assert_rc(ctx, kv_x509_serial_random(ctx, &serial), KV_OK);
    ck_assert_int_eq(X509_REVOKED_set_serialNumber(rev, serial), 1);
    ck_assert_int_eq(X509_REVOKED_set_revocationDate(rev, t), 1);
    ck_assert_int_eq(X509_CRL_add0_revoked(crl, rev), 1);
    ck_assert_int_eq(X509_CRL_sort(crl), 1);
    ck_assert_rc(ctx, kv_x509_sign_crl(key, KV_OP_ISSUE, KV_ALG_DEFAULT, crl, &signed_crl), KV_OK);
    ck_assert_int_eq(X509_CRL_verify(signed_crl, key->pub), 1);
    ck_assert_int_eq(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(signed_crl)), 1);
    snprintf(path, sizeof(path), "%s/%s.crl", tu_tmpdir(), name);
    f = fopen(path, "w");
    PEM_write_X509_CRL(f, signed_crl);
    fclose(f);
    ck_assert_int_eq(tu_sh("openssl crl -in %s -noout -text | grep -q 'Revoked Certificates'",
                           path), 0);

    X509_CRL_free(signed_crl);
    X509_CRL_free(crl);
    ASN1_TIME_free(t);
    ASN1_INTEGER_free(serial);
    X509_NAME_free(n);
    X509_REQ_free(req);
    kv_key_free(key);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("x509");
    TCase *tc = tcase_create("toolkit");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, name_round_trip);
    tcase_add_test(tc, name_order);
    tcase_add_test(tc, name_refused);
    tcase_add_test(tc, name_limits);
    tcase_add_test(tc, san_kinds);
    tcase_add_test(tc, serials);
    tcase_add_loop_test(tc, sign_certificate, 0, sizeof(types) / sizeof(types[0]));
    tcase_add_loop_test(tc, sign_request_and_crl, 0, sizeof(types) / sizeof(types[0]));
    suite_add_tcase(s, tc);
    return tu_run(s);
}
