/*
 * check_x509.c - the X.509 toolkit of the core (x509.c): RFC 4514 names,
 * subject alternative names, extensions, serials, and certificates,
 * requests and CRLs signed by vault keys of every type, each checked by
 * OpenSSL's own verification and, for the files, by the openssl command;
 * certificate options, requests and self-signed certificates.
 */
#include <stddef.h>
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
        { "XX=a", "unknown attribute type at character 1" },
        { "CN=a,Zebra=\\q", "unknown attribute type at character 6" },
        { "cn=a\\q", "attribute CN: bad escape" },
        { "2.5.4.10=a;b", "attribute O: ';'" },
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
        /* the caller's text is not repeated: types are named as OpenSSL knows them */
        ck_assert_msg(!strstr(kv_errmsg(ctx), "XX") && !strstr(kv_errmsg(ctx), "Zebra") &&
                          !strstr(kv_errmsg(ctx), "cn"),
                      "'%s': message '%s' repeats the input", cases[i].in, kv_errmsg(ctx));
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

/* ---- kv_cert_opts, kv_csr_create, kv_cert_selfsign ---------------------------- */

/* A request (req) or a certificate from PEM; the test fails on anything else. */
static void *from_pem(const char *pem, bool req)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    void *obj = req ? (void *)PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL)
                    : (void *)PEM_read_bio_X509(bio, NULL, NULL, NULL);

    BIO_free(bio);
    ck_assert_ptr_nonnull(obj);
    return obj;
}

/* The keyUsage bits of an extension list, as KV_KU_* (-1 when absent). */
static long ku_bits(const STACK_OF(X509_EXTENSION) *exts, int *crit)
{
    int i = X509v3_get_ext_by_NID(exts, NID_key_usage, -1);
    ASN1_BIT_STRING *ku;
    long bits = 0;

    if (i < 0)
        return -1;
    *crit = X509_EXTENSION_get_critical(X509v3_get_ext(exts, i));
    ku = X509V3_EXT_d2i(X509v3_get_ext(exts, i));
    for (int b = 0; b < 9; b++)
        if (ASN1_BIT_STRING_get_bit(ku, b))
            bits |= 1L << b;
    ASN1_BIT_STRING_free(ku);
    return bits;
}

static kv_key *gen(kv_key_type type, const char *prefix)
{
    kv_key *key = NULL;
    char name[40];

    snprintf(name, sizeof(name), "%s-%d", prefix, (int)type);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, "software", &key), KV_OK);
    return key;
}

static const kv_key_type all_types[] = { KV_KEY_EC_P256, KV_KEY_EC_P384, KV_KEY_RSA_2048,
                                         KV_KEY_ED25519, KV_KEY_RSA_2048 };

/* A request from each key type with everything a request can ask for; the
 * last round is RSA with PKCS#1 v1.5 instead of PSS. */
START_TEST(csr_each_type)
{
    static const int sig_nid[] = { NID_ecdsa_with_SHA256, NID_ecdsa_with_SHA384,
                                   NID_rsassaPss, NID_ED25519, NID_sha256WithRSAEncryption };
    kv_key *key = gen(all_types[_i], _i == 4 ? "csr-pkcs1" : "csr");
    const char *const sans[] = { "dns:dev-42.example.org", "ip:192.0.2.7", "ip:2001:db8::7",
                                 "uri:spiffe://fleet/dev-42", "email:ops@example.org", NULL };
    const char *const eku[] = { "clientAuth", "1.3.6.1.5.5.7.3.1", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    STACK_OF(X509_EXTENSION) *exts;
    GENERAL_NAMES *gens;
    EXTENDED_KEY_USAGE *ekus;
    X509_REQ *req;
    char *pem = NULL, *subject = NULL;
    int crit = 0;

    opts.subject = "CN=dev-42,OU=Edge+L=Berlin,O=Fleet";
    opts.sans = sans;
    opts.ext_key_usage = eku;
    opts.key_usage = KV_KU_DIGITAL_SIGNATURE | KV_KU_NON_REPUDIATION;
    if (_i == 4)
        opts.alg = KV_ALG_RSA_PKCS1_SHA256;
    ck_assert_rc(ctx, kv_csr_create(key, &opts, &pem), KV_OK);
    ck_assert_ptr_nonnull(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
    req = from_pem(pem, true);
    ck_assert_int_eq(X509_REQ_verify(req, key->pub), 1);
    ck_assert_int_eq(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), key->pub), 1);
    ck_assert_int_eq(X509_REQ_get_signature_nid(req), sig_nid[_i]);
    ck_assert_rc(ctx, kv_x509_name_text(ctx, X509_REQ_get_subject_name(req), &subject), KV_OK);
    ck_assert_str_eq(subject, "CN=dev-42,L=Berlin+OU=Edge,O=Fleet");
    exts = X509_REQ_get_extensions(req);
    ck_assert_int_eq(ku_bits(exts, &crit), KV_KU_DIGITAL_SIGNATURE | KV_KU_NON_REPUDIATION);
    ck_assert_int_eq(crit, 1);
    ck_assert_int_lt(X509v3_get_ext_by_NID(exts, NID_basic_constraints, -1), 0);
    gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
    ck_assert_int_eq(sk_GENERAL_NAME_num(gens), 5);
    ck_assert_int_eq(crit, 0);
    ekus = X509V3_get_d2i(exts, NID_ext_key_usage, &crit, NULL);
    ck_assert_int_eq(sk_ASN1_OBJECT_num(ekus), 2);
    ck_assert_int_eq(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, 0)), NID_client_auth);
    ck_assert_int_eq(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, 1)), NID_server_auth);

    sk_ASN1_OBJECT_pop_free(ekus, ASN1_OBJECT_free);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    free(subject);
    X509_REQ_free(req);
    kv_string_free(pem);
    kv_key_free(key);
}
END_TEST

/* A request that asks for nothing carries no extensions at all; one for a
 * CA asks for basicConstraints. */
START_TEST(csr_minimal_and_ca)
{
    kv_key *key = gen(KV_KEY_EC_P256, "csr-min");
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    STACK_OF(X509_EXTENSION) *exts;
    BASIC_CONSTRAINTS *bc;
    X509_REQ *req;
    char *pem = NULL;
    int crit = 0;

    opts.subject = "CN=plain";
    ck_assert_rc(ctx, kv_csr_create(key, &opts, &pem), KV_OK);
    req = from_pem(pem, true);
    exts = X509_REQ_get_extensions(req);
    ck_assert_int_eq(sk_X509_EXTENSION_num(exts), 0);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    kv_string_free(pem);

    opts.flags = KV_CERT_CA | KV_CERT_PATH_LEN;
    opts.path_len = 0;
    ck_assert_rc(ctx, kv_csr_create(key, &opts, &pem), KV_OK);
    req = from_pem(pem, true);
    exts = X509_REQ_get_extensions(req);
    bc = X509V3_get_d2i(exts, NID_basic_constraints, &crit, NULL);
    ck_assert_ptr_nonnull(bc);
    ck_assert(bc->ca && crit == 1 && ASN1_INTEGER_get(bc->pathlen) == 0);
    ck_assert_int_eq(ku_bits(exts, &crit), -1);
    BASIC_CONSTRAINTS_free(bc);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    kv_string_free(pem);
    kv_key_free(key);
}
END_TEST

/* A self-signed certificate from each key type: a trust anchor for
 * OpenSSL, with the fields and the default key usage of its type. */
START_TEST(selfsign_each_type)
{
    static const unsigned default_ku[] = {
        KV_KU_DIGITAL_SIGNATURE, KV_KU_DIGITAL_SIGNATURE,
        KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_ENCIPHERMENT, KV_KU_DIGITAL_SIGNATURE,
        KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_ENCIPHERMENT,
    };
    kv_key *key = gen(all_types[_i], _i == 4 ? "self-pkcs1" : "self");
    const char *const sans[] = { "dns:dev-42.example.org", NULL };
    const char *const eku[] = { "serverAuth", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    const STACK_OF(X509_EXTENSION) *exts;
    BASIC_CONSTRAINTS *bc;
    BIGNUM *serial;
    X509 *x;
    char *pem = NULL;
    GENERAL_NAMES *gens;
    time_t now = time(NULL);
    int crit = 0, day = 0, sec = 0;

    opts.subject = "CN=dev-42,O=Fleet";
    opts.sans = sans;
    opts.ext_key_usage = eku;
    opts.days = 30;
    if (_i == 4)
        opts.alg = KV_ALG_RSA_PKCS1_SHA384;
    ck_assert_rc(ctx, kv_cert_selfsign(key, &opts, &pem), KV_OK);
    x = from_pem(pem, false);
    ck_assert_int_eq(X509_get_version(x), X509_VERSION_3);
    ck_assert_int_eq(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    X509_STORE_add_cert(store, x);
    X509_STORE_CTX_init(sctx, store, x, NULL);
    X509_STORE_CTX_set_flags(sctx, X509_V_FLAG_X509_STRICT);
    ck_assert_msg(X509_verify_cert(sctx) == 1, "verify: %s",
                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
    if (_i == 4)
        ck_assert_int_eq(X509_get_signature_nid(x), NID_sha384WithRSAEncryption);
    /* a positive serial of at most 127 bits */
    serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    ck_assert(!BN_is_negative(serial) && !BN_is_zero(serial) && BN_num_bits(serial) <= 127);
    BN_free(serial);
    /* from a minute ago, for 30 days */
    ck_assert_int_eq(X509_cmp_time(X509_get0_notBefore(x), &(time_t){ now - 61 }), 1);
    ck_assert_int_eq(X509_cmp_time(X509_get0_notBefore(x), &(time_t){ now - 55 }), -1);
    ck_assert_int_eq(ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    ck_assert_int_eq(day, 30);
    ck_assert_int_eq(sec, 60);
    exts = X509_get0_extensions(x);
    bc = X509V3_get_d2i(exts, NID_basic_constraints, &crit, NULL);
    ck_assert(bc && !bc->ca && crit == 1);
    BASIC_CONSTRAINTS_free(bc);
    ck_assert_int_eq(X509_check_ca(x), 0);
    ck_assert_int_eq(ku_bits(exts, &crit), default_ku[_i]);
    ck_assert_int_eq(crit, 1);
    ck_assert_int_ge(X509_get_ext_by_NID(x, NID_ext_key_usage, -1), 0);
    gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
    ck_assert(sk_GENERAL_NAME_num(gens) == 1 && crit == 0);
    GENERAL_NAMES_free(gens);
    ck_assert_ptr_nonnull(X509_get0_subject_key_id(x));
    ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_subject_key_id(x),
                                           X509_get0_authority_key_id(x)), 0);
    /* what the caller stores is what comes back */
    ck_assert_rc(ctx, kv_key_store_cert(key, (const unsigned char *)pem, strlen(pem)), KV_OK);

    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    X509_free(x);
    kv_string_free(pem);
    kv_key_free(key);
}
END_TEST

/* A CA root and a subject-less identity: the defaults that follow from the
 * purpose, and the critical SAN of an empty subject. */
START_TEST(selfsign_ca_and_empty_subject)
{
    kv_key *key = gen(KV_KEY_EC_P384, "root");
    const char *const sans[] = { "uri:spiffe://fleet/dev-42", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    BASIC_CONSTRAINTS *bc;
    GENERAL_NAMES *gens;
    X509 *x;
    char *pem = NULL;
    int crit = 0;

    opts.subject = "CN=Fleet Root,O=Fleet";
    opts.flags = KV_CERT_CA | KV_CERT_PATH_LEN;
    opts.path_len = 1;
    ck_assert_rc(ctx, kv_cert_selfsign(key, &opts, &pem), KV_OK);
    x = from_pem(pem, false);
    ck_assert_int_eq(X509_check_ca(x), 1);
    bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    ck_assert(bc && bc->ca && crit == 1 && ASN1_INTEGER_get(bc->pathlen) == 1);
    BASIC_CONSTRAINTS_free(bc);
    ck_assert_int_eq(ku_bits(X509_get0_extensions(x), &crit),
                     KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN | KV_KU_DIGITAL_SIGNATURE);
    ck_assert_int_lt(X509_get_ext_by_NID(x, NID_ext_key_usage, -1), 0);
    ck_assert_int_lt(X509_get_ext_by_NID(x, NID_subject_alt_name, -1), 0);
    /* the default validity: 365 days */
    {
        int day = 0, sec = 0;
        ck_assert_int_eq(ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(x),
                                        X509_get0_notAfter(x)), 1);
        ck_assert_int_eq(day, 365);
    }
    X509_free(x);
    kv_string_free(pem);

    opts = (kv_cert_opts)KV_CERT_OPTS_INIT;
    opts.subject = "";
    opts.sans = sans;
    opts.key_usage = KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_AGREEMENT;
    ck_assert_rc(ctx, kv_cert_selfsign(key, &opts, &pem), KV_OK);
    x = from_pem(pem, false);
    ck_assert_int_eq(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    ck_assert(sk_GENERAL_NAME_num(gens) == 1 && crit == 1);
    GENERAL_NAMES_free(gens);
    ck_assert_int_eq(ku_bits(X509_get0_extensions(x), &crit),
                     KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_AGREEMENT);
    ck_assert_int_eq(X509_verify(x, key->pub), 1);
    X509_free(x);
    kv_string_free(pem);
    kv_key_free(key);
}
END_TEST

/* Options as a newer caller compiled them: a longer struct. */
struct opts_v2 {
    kv_cert_opts o;
    const char *later_field;
};

/* Each bad option: its code, a word of its message, nothing returned. */
START_TEST(opts_refused)
{
    static const char *const no_sans[] = { NULL };
    static const char *const bad_san[] = { "dns:ok.example", "dns:bad..example", NULL };
    static const char *const bad_eku[] = { "serverAuth", "commonName", NULL };
    static const char *const bad_oid[] = { "1..2", NULL };
    static const char *many_sans[KV_X509_SANS_MAX + 2];
    char big_subject[KV_X509_NAME_MAX + 16];
    struct {
        const char *what;
        kv_cert_opts o;
        int selfsign;
        kv_rc rc;
        const char *why;
    } cases[] = {
        { "size 0", { 0 }, 0, KV_ERR_INVALID_ARG, "KV_CERT_OPTS_INIT" },
        { "short size", KV_CERT_OPTS_INIT, 0, KV_ERR_INVALID_ARG, "KV_CERT_OPTS_INIT" },
        { "unknown flag", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "unknown flags 0x8" },
        { "path length without CA", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "KV_CERT_PATH_LEN" },
        { "path_len without its flag", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "path_len" },
        { "unknown key usage bit", KV_CERT_OPTS_INIT, 0, KV_ERR_INVALID_ARG, "key usage bits 0x80" },
        { "keyCertSign without CA", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "keyCertSign" },
        { "101 years", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "36501 days" },
        { "tpm field", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "tpm-ak" },
        { "RSA algorithm on EC", KV_CERT_OPTS_INIT, 0, KV_ERR_WRONG_KEY_TYPE, "bad-opts" },
        { "Ed25519 algorithm on EC", KV_CERT_OPTS_INIT, 1, KV_ERR_WRONG_KEY_TYPE, "needs an Ed25519" },
        { "unknown algorithm", KV_CERT_OPTS_INIT, 0, KV_ERR_INVALID_ARG, "unknown signature" },
        { "keyEncipherment on EC", KV_CERT_OPTS_INIT, 1, KV_ERR_WRONG_KEY_TYPE, "needs an RSA key" },
        { "no subject", KV_CERT_OPTS_INIT, 1, KV_ERR_INVALID_ARG, "needs a subject" },
        { "empty subject, no SAN", KV_CERT_OPTS_INIT, 1, KV_ERR_BAD_INPUT, "subject alternative" },
        { "no subject, no SAN (CSR)", KV_CERT_OPTS_INIT, 0, KV_ERR_BAD_INPUT, "empty subject" },
        { "malformed subject", KV_CERT_OPTS_INIT, 0, KV_ERR_BAD_INPUT, "TYPE=VALUE" },
        { "oversized subject", KV_CERT_OPTS_INIT, 1, KV_ERR_BAD_INPUT, "longer than" },
        { "bad SAN", KV_CERT_OPTS_INIT, 0, KV_ERR_BAD_INPUT, "not a valid DNS name" },
        { "65 SANs", KV_CERT_OPTS_INIT, 1, KV_ERR_BAD_INPUT, "more than 64" },
        { "a name OpenSSL knows is no EKU", KV_CERT_OPTS_INIT, 0, KV_ERR_BAD_INPUT,
          "extended key usage 2" },
        { "broken OID", KV_CERT_OPTS_INIT, 1, KV_ERR_BAD_INPUT, "extended key usage 1" },
    };
    kv_key *key = NULL;
    char *pem = (char *)"untouched";
    size_t n = 0;

    ck_assert_rc(ctx, kv_key_generate(ctx, "bad-opts", KV_KEY_EC_P256, "software", &key), KV_OK);
    memset(big_subject, 'a', sizeof(big_subject) - 1);
    memcpy(big_subject, "O=", 2);
    big_subject[sizeof(big_subject) - 1] = '\0';
    for (size_t i = 0; i <= KV_X509_SANS_MAX; i++)
        many_sans[i] = "dns:a.example";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (cases[i].o.size)
            cases[i].o.subject = "CN=x";
    cases[n++].o.subject = "CN=x";
    cases[n++].o.size = offsetof(kv_cert_opts, path_len);
    cases[n++].o.flags = 0x8;
    cases[n++].o.flags = KV_CERT_PATH_LEN;
    cases[n++].o.path_len = 2;
    cases[n++].o.key_usage = 0x80;
    cases[n++].o.key_usage = KV_KU_KEY_CERT_SIGN;
    cases[n++].o.days = KV_X509_DAYS_MAX + 1;
    cases[n++].o.tpm_model = "swtpm";
    cases[n++].o.alg = KV_ALG_RSA_PSS_SHA256;
    cases[n++].o.alg = KV_ALG_ED25519;
    cases[n++].o.alg = (kv_sign_alg)99;
    cases[n++].o.key_usage = KV_KU_KEY_ENCIPHERMENT;
    cases[n++].o.subject = NULL;
    cases[n].o.sans = no_sans;
    cases[n++].o.subject = "";
    cases[n++].o.subject = NULL;
    cases[n++].o.subject = "CN";
    cases[n++].o.subject = big_subject;
    cases[n++].o.sans = bad_san;
    cases[n++].o.sans = many_sans;
    cases[n++].o.ext_key_usage = bad_eku;
    cases[n++].o.ext_key_usage = bad_oid;
    ck_assert_uint_eq(n, sizeof(cases) / sizeof(cases[0]));

    for (size_t i = 0; i < n; i++) {
        kv_rc rc = cases[i].selfsign ? kv_cert_selfsign(key, &cases[i].o, &pem)
                                     : kv_csr_create(key, &cases[i].o, &pem);
        ck_assert_msg(rc == cases[i].rc, "%s: expected %s, got %s: %s", cases[i].what,
                      kv_strerror(cases[i].rc), kv_strerror(rc), kv_errmsg(ctx));
        ck_assert_msg(pem == NULL, "%s: a result was returned", cases[i].what);
        ck_assert_msg(strstr(kv_errmsg(ctx), cases[i].why), "%s: message '%s' lacks '%s'",
                      cases[i].what, kv_errmsg(ctx), cases[i].why);
        pem = (char *)"untouched";
    }
    /* a newer caller's longer struct: fine while its new fields are zero */
    {
        struct opts_v2 v2;
        memset(&v2, 0, sizeof(v2));
        v2.o.size = sizeof(v2);
        v2.o.subject = "CN=x";
        ck_assert_rc(ctx, kv_csr_create(key, &v2.o, &pem), KV_OK);
        kv_string_free(pem);
        v2.later_field = "something this library cannot honour";
        ck_assert_rc(ctx, kv_csr_create(key, &v2.o, &pem), KV_ERR_INVALID_ARG);
        ck_assert_ptr_null(pem);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "newer libkeyvault"));
    }
    /* nothing was stored by any of it */
    {
        size_t len = 0;
        ck_assert_rc(ctx, kv_key_cert_der(key, NULL, &len), KV_ERR_KEY_NOT_FOUND);
    }
    kv_key_free(key);
}
END_TEST

/* The shared conversion itself, for each purpose (the CA reads opts
 * through it too). */
START_TEST(opts_conversion)
{
    kv_key *ec = gen(KV_KEY_EC_P256, "conv"), *rsa = gen(KV_KEY_RSA_2048, "conv");
    const char *const sans[] = { "ip:192.0.2.1", NULL };
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    kv_x509_opts o;

    ck_assert_rc(ctx, kv_x509_opts_read(ec, ec->pub, NULL, KV_X509_FOR_REQUEST, &o),
                 KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(o.subject);
    kv_x509_opts_clear(&o);

    /* a request: the empty name, nothing but what was asked */
    opts.sans = sans;
    ck_assert_rc(ctx, kv_x509_opts_read(ec, ec->pub, &opts, KV_X509_FOR_REQUEST, &o), KV_OK);
    ck_assert_int_eq(X509_NAME_entry_count(o.subject), 0);
    ck_assert(o.spec.ca == -1 && o.spec.key_usage == 0 && o.spec.san_critical == 1);
    ck_assert_int_eq(sk_GENERAL_NAME_num(o.spec.san), 1);
    ck_assert_int_eq(o.alg->alg, KV_ALG_ECDSA_SHA256);
    ck_assert_uint_eq(o.days, 365);
    kv_x509_opts_clear(&o);

    /* a certificate: CA:FALSE and the key's default usage */
    opts.subject = "CN=a";
    opts.days = 10;
    ck_assert_rc(ctx, kv_x509_opts_read(rsa, rsa->pub, &opts, KV_X509_FOR_SELFSIGN, &o), KV_OK);
    ck_assert(o.spec.ca == 0 && o.spec.san_critical == 0 && o.days == 10);
    ck_assert_uint_eq(o.spec.key_usage, KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_ENCIPHERMENT);
    ck_assert_int_eq(o.alg->alg, KV_ALG_RSA_PSS_SHA256);
    kv_x509_opts_clear(&o);

    /* issued by an RSA CA for an EC key: usage by the subject key, the
     * algorithm by the signer's; no subject, tpm fields left to the CA */
    opts.subject = NULL;
    opts.sans = NULL;
    opts.tpm_manufacturer = "id:53544D20";
    ck_assert_rc(ctx, kv_x509_opts_read(rsa, ec->pub, &opts, KV_X509_FOR_ISSUE, &o), KV_OK);
    ck_assert_ptr_null(o.subject);
    ck_assert_uint_eq(o.spec.key_usage, KV_KU_DIGITAL_SIGNATURE);
    ck_assert_int_eq(o.alg->alg, KV_ALG_RSA_PSS_SHA256);
    kv_x509_opts_clear(&o);
    opts.subject = "";
    ck_assert_rc(ctx, kv_x509_opts_read(rsa, ec->pub, &opts, KV_X509_FOR_ISSUE, &o), KV_OK);
    ck_assert_int_eq(X509_NAME_entry_count(o.subject), 0);
    kv_x509_opts_clear(&o);
    opts.subject = "CN=a";
    opts.key_usage = KV_KU_KEY_ENCIPHERMENT;
    kv_err_begin(ctx);
    ck_assert_rc(ctx, kv_x509_opts_read(rsa, ec->pub, &opts, KV_X509_FOR_ISSUE, &o),
                 KV_ERR_WRONG_KEY_TYPE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "the subject key is ec-p256"));
    kv_x509_opts_clear(&o);

    kv_key_free(ec);
    kv_key_free(rsa);
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
    tcase_add_loop_test(tc, csr_each_type, 0, sizeof(all_types) / sizeof(all_types[0]));
    tcase_add_test(tc, csr_minimal_and_ca);
    tcase_add_loop_test(tc, selfsign_each_type, 0, sizeof(all_types) / sizeof(all_types[0]));
    tcase_add_test(tc, selfsign_ca_and_empty_subject);
    tcase_add_test(tc, opts_refused);
    tcase_add_test(tc, opts_conversion);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
