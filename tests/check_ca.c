/*
 * check_ca.c - the vault CA (ca.c): every profile, what a request may ask
 * for and what it may not, the SQLite record, revocation and CRLs, and the
 * errors, each with nothing recorded. CA certificates and requests are
 * made here with the toolkit of x509.c, signed by vault keys.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

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

/* A name unique to this test process: the CA records share one home. */
static const char *uniq(const char *base)
{
    static char buf[8][64];
    static int i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s-%ld", base, (long)getpid());
    return buf[i];
}

static void add_exts(X509 *x, const kv_x509_ext_spec *spec)
{
    STACK_OF(X509_EXTENSION) *exts = NULL;

    ck_assert_rc(ctx, kv_x509_exts_build(ctx, spec, &exts), KV_OK);
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
        ck_assert_int_eq(X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1), 1);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

/* A vault key with a self-signed CA certificate stored with it.
 * valid_from/valid_to are offsets from now in seconds; path_len -1: none. */
static kv_key *make_root(const char *name, kv_key_type type, long valid_from, long valid_to,
                         long path_len, unsigned ku)
{
    kv_key *key = NULL;
    X509 *x = X509_new_ex(ctx->libctx, NULL);
    X509_NAME *n = NULL;
    ASN1_INTEGER *serial = NULL;
    kv_x509_ext_spec spec = { 1, path_len, ku, NULL, NULL, 0 };
    unsigned char *der = NULL;
    char subj[128];
    time_t now = time(NULL);
    int len;

    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, "software", &key), KV_OK);
    snprintf(subj, sizeof(subj), "CN=%s,O=Fleet", name);
    ck_assert_rc(ctx, kv_x509_name_parse(ctx, subj, &n), KV_OK);
    ck_assert_rc(ctx, kv_x509_serial_random(ctx, &serial), KV_OK);
    X509_set_version(x, X509_VERSION_3);
    X509_set_serialNumber(x, serial);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    ck_assert_rc(ctx, kv_x509_set_validity(ctx, x, now + valid_from, now + valid_to), KV_OK);
    X509_set_pubkey(x, key->pub);
    add_exts(x, &spec);
    ck_assert_rc(ctx, kv_x509_add_key_ids(ctx, x, NULL), KV_OK);
    ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_ISSUE, KV_ALG_DEFAULT, KV_X509_CERT, x), KV_OK);
    len = i2d_X509(x, &der);
    ck_assert_int_gt(len, 0);
    ck_assert_rc(ctx, kv_key_store_cert(key, der, (size_t)len), KV_OK);
    OPENSSL_free(der);
    ASN1_INTEGER_free(serial);
    X509_NAME_free(n);
    X509_free(x);
    return key;
}

static kv_key *root_ca(const char *name)
{
    return make_root(name, KV_KEY_EC_P256, -60, 10L * 365 * 86400, -1,
                     KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN);
}

/* A request signed by the vault key `key`, with extensions from spec
 * (may be NULL), as DER (OPENSSL_free). */
static unsigned char *make_csr(kv_key *key, const char *subject, const kv_x509_ext_spec *spec,
                               size_t *len)
{
    X509_REQ *req = X509_REQ_new_ex(ctx->libctx, NULL);
    X509_NAME *n = NULL;
    unsigned char *der = NULL;
    int l;

    ck_assert_rc(ctx, kv_x509_name_parse(ctx, subject, &n), KV_OK);
    X509_REQ_set_subject_name(req, n);
    X509_REQ_set_pubkey(req, key->pub);
    if (spec) {
        STACK_OF(X509_EXTENSION) *exts = NULL;
        ck_assert_rc(ctx, kv_x509_exts_build(ctx, spec, &exts), KV_OK);
        ck_assert_int_eq(X509_REQ_add_extensions(req, exts), 1);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    ck_assert_rc(ctx, kv_x509_sign(key, KV_OP_SIGN, KV_ALG_DEFAULT, KV_X509_REQ, req), KV_OK);
    l = i2d_X509_REQ(req, &der);
    ck_assert_int_gt(l, 0);
    *len = (size_t)l;
    X509_NAME_free(n);
    X509_REQ_free(req);
    return der;
}

static GENERAL_NAMES *sans_of(const char *const *texts)
{
    GENERAL_NAMES *g = sk_GENERAL_NAME_new_null();

    for (size_t i = 0; texts[i]; i++) {
        GENERAL_NAME *one = NULL;
        ck_assert_rc(ctx, kv_x509_san_parse(ctx, texts[i], &one), KV_OK);
        sk_GENERAL_NAME_push(g, one);
    }
    return g;
}

static kv_key *leaf_key(const char *base, kv_key_type type)
{
    kv_key *k = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, uniq(base), type, "software", &k), KV_OK);
    return k;
}

/* The first certificate of a PEM string (and the count of them). */
static X509 *first_cert(const char *pem, int *count)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL), *more;
    int n = x ? 1 : 0;

    while ((more = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        n++;
        X509_free(more);
    }
    BIO_free(b);
    if (count)
        *count = n;
    ck_assert_ptr_nonnull(x);
    return x;
}

static X509 *stored_cert(kv_key *key)
{
    unsigned char buf[8192];
    const unsigned char *p = buf;
    size_t len = sizeof(buf);

    ck_assert_rc(ctx, kv_key_cert_der(key, buf, &len), KV_OK);
    return d2i_X509(NULL, &p, (long)len);
}

static long db_count(const char *ca, const char *where)
{
    char path[1024], sql[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long n;

    snprintf(path, sizeof(path), "%s/ca/%s.db", ctx->home, ca);
    if (access(path, F_OK) != 0)
        return 0;
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM issued%s%s", where ? " WHERE " : "",
             where ? where : "");
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
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

static int verify_chain(X509 *root, X509 *mid, X509 *leaf)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int ok;

    X509_STORE_add_cert(store, root);
    if (mid)
        sk_X509_push(untrusted, mid);
    X509_STORE_CTX_init(sctx, store, leaf, untrusted);
    ok = X509_verify_cert(sctx);
    if (ok != 1)
        fprintf(stderr, "verify: %s\n",
                X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    return ok;
}

/* ---- profiles ----------------------------------------------------------------- */

START_TEST(tls_server)
{
    static const kv_key_type types[] = { KV_KEY_EC_P256, KV_KEY_RSA_2048, KV_KEY_ED25519 };
    const char *const san[] = { "dns:gw.example.org", "ip:192.0.2.7", NULL };
    const char *caname = uniq("ca-srv");
    kv_key *ca = root_ca(caname);
    X509 *root = stored_cert(ca);

    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        char base[16];
        kv_key *leaf;

        snprintf(base, sizeof(base), "srv%zu", t);
        leaf = leaf_key(base, types[t]);
        GENERAL_NAMES *g = sans_of(san);
        kv_x509_ext_spec spec = { -1, -1, 0, NULL, g, 0 };
        size_t len = 0;
        unsigned char *csr = make_csr(leaf, "CN=gw.example.org,O=Fleet", &spec, &len);
        char *pem = NULL, *subj = NULL;
        int count = 0;
        X509 *x;
        uint32_t ku;
        GENERAL_NAMES *got;

        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-server", csr, len, NULL, &pem), KV_OK);
        x = first_cert(pem, &count);
        ck_assert_int_eq(count, 1);   /* the root is self-signed: not appended */
        ck_assert_int_eq(X509_get_version(x), X509_VERSION_3);
        ck_assert_int_eq(X509_check_ca(x), 0);
        ck_assert(X509_get_extension_flags(x) & EXFLAG_BCONS);
        ku = X509_get_key_usage(x);
        ck_assert(ku & KU_DIGITAL_SIGNATURE);
        ck_assert_int_eq(!!(ku & KU_KEY_ENCIPHERMENT), types[t] == KV_KEY_RSA_2048);
        ck_assert(has_eku(x, NID_server_auth));
        ck_assert(!has_eku(x, NID_client_auth));
        got = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        ck_assert_int_eq(sk_GENERAL_NAME_num(got), 2);
        GENERAL_NAMES_free(got);
        ck_assert_rc(ctx, kv_x509_name_text(ctx, X509_get_subject_name(x), &subj), KV_OK);
        ck_assert_str_eq(subj, "CN=gw.example.org,O=Fleet");
        ck_assert_ptr_nonnull(X509_get0_subject_key_id(x));
        ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
                                               X509_get0_subject_key_id(root)), 0);
        ck_assert_int_eq(verify_chain(root, NULL, x), 1);
        {   /* 127-bit random serial, validity from a minute ago for 365 days */
            BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
            int days = 0, secs = 0;
            ck_assert_int_le(BN_num_bits(bn), 127);
            BN_free(bn);
            ck_assert_int_eq(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
                                            X509_get0_notAfter(x)), 1);
            ck_assert_int_eq(days, 365);
            ck_assert_int_eq(secs, 60);
        }
        free(subj);
        X509_free(x);
        kv_string_free(pem);
        OPENSSL_free(csr);
        GENERAL_NAMES_free(g);
        kv_key_free(leaf);
    }
    ck_assert_int_eq(db_count(caname, "profile = 'tls-server'"), 3);
    X509_free(root);
    kv_key_free(ca);
}
END_TEST

START_TEST(client_and_device)
{
    const char *const csan[] = { "uri:spiffe://fleet/dev-1", "email:ops@example.org", NULL };
    const char *const dsan[] = { "uri:urn:dev:42", "dns:dev42.example.org", NULL };
    kv_key *ca = root_ca(uniq("ca-cd"));
    kv_key *leaf = leaf_key("cd", KV_KEY_EC_P384);
    GENERAL_NAMES *cg = sans_of(csan), *dg = sans_of(dsan);
    kv_x509_ext_spec cspec = { -1, -1, KV_KU_DIGITAL_SIGNATURE, NULL, cg, 0 };
    kv_x509_ext_spec dspec = { -1, -1, 0, NULL, dg, 0 };
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=dev-1", &cspec, &len);
    char *pem = NULL;
    X509 *x;

    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    x = first_cert(pem, NULL);
    ck_assert(has_eku(x, NID_client_auth));
    ck_assert(!has_eku(x, NID_server_auth));
    ck_assert_uint_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
    X509_free(x);
    kv_string_free(pem);
    /* the same email SAN is not one device-identity allows */
    ck_assert_rc(ctx, kv_ca_issue(ca, "device-identity", csr, len, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "profile device-identity does not allow"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "kind email"));
    ck_assert_ptr_null(pem);
    OPENSSL_free(csr);

    csr = make_csr(leaf, "CN=dev-42", &dspec, &len);
    ck_assert_rc(ctx, kv_ca_issue(ca, "device-identity", csr, len, NULL, &pem), KV_OK);
    x = first_cert(pem, NULL);
    ck_assert(has_eku(x, NID_client_auth) && has_eku(x, NID_server_auth));
    ck_assert_uint_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT);
    X509_free(x);
    kv_string_free(pem);
    /* tls-server needs a dns or ip SAN: the uri alone will not do */
    OPENSSL_free(csr);
    {
        const char *const only_uri[] = { "uri:urn:dev:42", NULL };
        GENERAL_NAMES *ug = sans_of(only_uri);
        kv_x509_ext_spec uspec = { -1, -1, 0, NULL, ug, 0 };
        csr = make_csr(leaf, "CN=dev-42", &uspec, &len);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-server", csr, len, NULL, &pem),
                     KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "tls-server"));
        GENERAL_NAMES_free(ug);
        OPENSSL_free(csr);
        csr = make_csr(leaf, "CN=dev-42", NULL, &len);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-server", csr, len, NULL, &pem),
                     KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "at least one dns or ip"));
    }
    OPENSSL_free(csr);
    GENERAL_NAMES_free(cg);
    GENERAL_NAMES_free(dg);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* root -> sub-CA -> leaf, every key a vault key and every request signed
 * by one; the leaf comes with its issuer. */
START_TEST(sub_ca_chain)
{
    const char *const san[] = { "dns:leaf.example.org", NULL };
    kv_key *root = root_ca(uniq("root"));
    kv_key *sub = leaf_key("sub", KV_KEY_EC_P384);
    kv_key *leaf = leaf_key("leaf", KV_KEY_RSA_2048);
    kv_x509_ext_spec subreq = { 1, -1, KV_KU_KEY_CERT_SIGN, NULL, NULL, 0 };
    GENERAL_NAMES *g = sans_of(san);
    kv_x509_ext_spec leafreq = { -1, -1, 0, NULL, g, 0 };
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    size_t len = 0;
    unsigned char *csr = make_csr(sub, "CN=Fleet Issuing CA,O=Fleet", &subreq, &len);
    char *pem = NULL;
    X509 *rootx = stored_cert(root), *subx, *leafx, *second;
    int count = 0;
    BIO *b;

    ck_assert_rc(ctx, kv_ca_issue(root, "sub-ca", csr, len, NULL, &pem), KV_OK);
    subx = first_cert(pem, &count);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(X509_check_ca(subx), 1);
    ck_assert_int_eq(X509_get_pathlen(subx), 0);
    ck_assert_uint_eq(X509_get_key_usage(subx),
                      KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE);
    ck_assert(!(X509_get_extension_flags(subx) & EXFLAG_XKUSAGE));
    {
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(subx), X509_get0_notAfter(subx));
        ck_assert_int_eq(days, 1825);
    }
    ck_assert_rc(ctx, kv_key_store_cert(sub, (const unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(pem);
    OPENSSL_free(csr);

    /* the sub-CA has path length 0: it issues leaves, never another CA */
    csr = make_csr(leaf, "CN=leaf.example.org", &leafreq, &len);
    ck_assert_rc(ctx, kv_ca_issue(sub, "tls-server", csr, len, NULL, &pem), KV_OK);
    leafx = first_cert(pem, &count);
    ck_assert_int_eq(count, 2);
    b = BIO_new_mem_buf(pem, -1);
    X509_free(PEM_read_bio_X509(b, NULL, NULL, NULL));
    second = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    ck_assert_int_eq(X509_cmp(second, subx), 0);
    ck_assert_int_eq(verify_chain(rootx, subx, leafx), 1);
    ck_assert_int_eq(verify_chain(rootx, NULL, leafx), 0);
    kv_string_free(pem);
    OPENSSL_free(csr);
    csr = make_csr(leaf, "CN=leaf-ca", &subreq, &len);
    ck_assert_rc(ctx, kv_ca_issue(sub, "sub-ca", csr, len, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "path length 0"));
    /* a path length must stay below the CA's own */
    {
        kv_key *r2 = make_root(uniq("root2"), KV_KEY_EC_P256, -60, 86400L * 3650, 1,
                               KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN);
        o.flags = KV_CERT_CA | KV_CERT_PATH_LEN;
        o.path_len = 1;
        ck_assert_rc(ctx, kv_ca_issue(r2, "sub-ca", csr, len, &o, &pem), KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "allows less than 1"));
        o.path_len = 0;
        ck_assert_rc(ctx, kv_ca_issue(r2, "sub-ca", csr, len, &o, &pem), KV_OK);
        kv_string_free(pem);
        kv_key_free(r2);
    }
    OPENSSL_free(csr);
    X509_free(second);
    X509_free(leafx);
    X509_free(subx);
    X509_free(rootx);
    GENERAL_NAMES_free(g);
    kv_key_free(leaf);
    kv_key_free(sub);
    kv_key_free(root);
}
END_TEST

/* The TCG attestation-key profile from a bare public key, field by field. */
START_TEST(tpm_ak)
{
    kv_key *ca = root_ca(uniq("ca-ak"));
    kv_key *ak = leaf_key("ak", KV_KEY_EC_P256);
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char *pub = NULL, *pem = NULL;
    X509 *x;
    GENERAL_NAMES *san;
    const GENERAL_NAME *g;
    X509_EXTENSION *ext;
    static const char *const want_oid[] = { "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3" };
    static const char *const want_val[] = { "id:53544D20", "swtpm", "id:00020000" };

    ck_assert_rc(ctx, kv_key_public_pem(ak, &pub), KV_OK);
    o.tpm_manufacturer = "id:53544D20";
    o.tpm_model = "swtpm";
    o.tpm_version = "id:00020000";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_OK);
    x = first_cert(pem, NULL);
    ck_assert_int_eq(X509_get_version(x), X509_VERSION_3);
    ck_assert_int_eq(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
    ck_assert_int_eq(X509_check_ca(x), 0);
    ck_assert(X509_get_extension_flags(x) & EXFLAG_BCONS);
    ck_assert_uint_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
    {
        EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
        char oid[64];
        ck_assert_int_eq(sk_ASN1_OBJECT_num(eku), 1);
        OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(eku, 0), 1);
        ck_assert_str_eq(oid, "2.23.133.8.3");
        EXTENDED_KEY_USAGE_free(eku);
    }
    ext = X509_get_ext(x, X509_get_ext_by_NID(x, NID_subject_alt_name, -1));
    ck_assert_ptr_nonnull(ext);
    ck_assert_int_eq(X509_EXTENSION_get_critical(ext), 1);
    san = X509V3_EXT_d2i(ext);
    ck_assert_int_eq(sk_GENERAL_NAME_num(san), 1);
    g = sk_GENERAL_NAME_value(san, 0);
    ck_assert_int_eq(g->type, GEN_DIRNAME);
    ck_assert_int_eq(X509_NAME_entry_count(g->d.directoryName), 3);
    for (int i = 0; i < 3; i++) {
        ASN1_OBJECT *obj = OBJ_txt2obj(want_oid[i], 1);
        int at = X509_NAME_get_index_by_OBJ(g->d.directoryName, obj, -1);
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(g->d.directoryName, at);
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
        /* one multi-valued RDN (DER orders its members by their
         * encoding), UTF8String values exactly as given */
        ck_assert_int_ge(at, 0);
        ck_assert_int_eq(X509_NAME_ENTRY_set(e), 0);
        ASN1_OBJECT_free(obj);
        ck_assert_int_eq(ASN1_STRING_type(v), V_ASN1_UTF8STRING);
        ck_assert_int_eq(ASN1_STRING_length(v), (int)strlen(want_val[i]));
        ck_assert(memcmp(ASN1_STRING_get0_data(v), want_val[i], strlen(want_val[i])) == 0);
    }
    GENERAL_NAMES_free(san);
    X509_free(x);
    kv_string_free(pem);

    /* what the profile refuses */
    o.tpm_manufacturer = "53544D20";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "TPM manufacturer"));
    o.tpm_manufacturer = "id:53544D20";
    o.tpm_version = "id:0002000";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "TPM version"));
    o.tpm_version = "id:00020000";
    o.tpm_model = "sw\xfftpm";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not valid UTF-8"));
    o.tpm_model = "sw\ntpm";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "control character"));
    o.tpm_model = "swtpm";
    o.subject = "CN=ak";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "always empty"));
    o.subject = NULL;
    o.tpm_model = NULL;
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", (const unsigned char *)pub, strlen(pub),
                                         &o, &pem), KV_ERR_INVALID_ARG);
    o.tpm_model = "swtpm";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-client", (const unsigned char *)pub,
                                         strlen(pub), &o, &pem), KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "belong to profile tpm-ak"));
    ck_assert_int_eq(db_count(ca->name, NULL), 1);
    kv_string_free(pub);
    kv_key_free(ak);
    kv_key_free(ca);
}
END_TEST

START_TEST(pubkey_subject_and_sans)
{
    const char *caname = uniq("ca-pk");
    kv_key *ca = root_ca(caname);
    kv_key *k = leaf_key("pk", KV_KEY_ED25519);
    unsigned char der[256];
    size_t len = sizeof(der);
    const char *const sans[] = { "dns:svc.example.org", NULL };
    const char *const bad[] = { "email:a@example.org", NULL };
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char *pem = NULL, *subj = NULL;
    X509 *x;

    ck_assert_rc(ctx, kv_key_public_der(k, der, &len), KV_OK);
    o.subject = "CN=svc,O=Fleet";
    o.sans = sans;
    o.days = 30;
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", der, len, &o, &pem), KV_OK);
    x = first_cert(pem, NULL);
    ck_assert_rc(ctx, kv_x509_name_text(ctx, X509_get_subject_name(x), &subj), KV_OK);
    ck_assert_str_eq(subj, "CN=svc,O=Fleet");
    ck_assert_int_eq(EVP_PKEY_eq(X509_get0_pubkey(x), k->pub), 1);
    {
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
        ck_assert_int_eq(days, 30);
    }
    free(subj);
    X509_free(x);
    kv_string_free(pem);
    /* an empty subject: the SAN is critical */
    o.subject = "";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", der, len, &o, &pem), KV_OK);
    x = first_cert(pem, NULL);
    ck_assert_int_eq(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
    ck_assert_int_eq(X509_EXTENSION_get_critical(X509_get_ext(
                         x, X509_get_ext_by_NID(x, NID_subject_alt_name, -1))), 1);
    X509_free(x);
    kv_string_free(pem);
    o.subject = "CN=svc,O=Fleet";
    o.sans = bad;
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", der, len, &o, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "SAN 1 of opts"));
    /* options the profile decides are refused */
    o.sans = sans;
    o.key_usage = KV_KU_KEY_CERT_SIGN;
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", der, len, &o, &pem),
                 KV_ERR_INVALID_ARG);
    o.key_usage = 0;
    o.flags = KV_CERT_CA;
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", der, len, &o, &pem),
                 KV_ERR_INVALID_ARG);
    o.flags = 0;
    /* a key type the CA does not certify */
    {
        EVP_PKEY *small = EVP_RSA_gen(1024);
        unsigned char *sd = NULL;
        int sl = i2d_PUBKEY(small, &sd);
        ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", sd, (size_t)sl, &o, &pem),
                     KV_ERR_WRONG_KEY_TYPE);
        OPENSSL_free(sd);
        EVP_PKEY_free(small);
    }
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tls-server", (const unsigned char *)"junk", 4, &o,
                                         &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_null(pem);
    ck_assert_int_eq(db_count(caname, NULL), 2);
    kv_key_free(k);
    kv_key_free(ca);
}
END_TEST

/* ---- what a request may not ask for ---------------------------------------------- */

START_TEST(request_filtering)
{
    const char *caname = uniq("ca-flt");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("flt", KV_KEY_EC_P256);
    const char *const dns[] = { "dns:a.example.org", NULL };
    const char *const eku_code[] = { "codeSigning", NULL };
    const char *const eku_client[] = { "clientAuth", NULL };
    GENERAL_NAMES *g = sans_of(dns);
    struct {
        kv_x509_ext_spec spec;
        const char *profile, *why;
    } bad[] = {
        { { 1, -1, 0, NULL, NULL, 0 }, "tls-client", "profile tls-client issues no CA certificates; the request asks for CA:TRUE" },
        { { -1, -1, KV_KU_KEY_CERT_SIGN, NULL, NULL, 0 }, "tls-client", "does not grant key usage keyCertSign" },
        { { -1, -1, KV_KU_KEY_ENCIPHERMENT, NULL, g, 0 }, "tls-server", "does not grant key usage keyEncipherment" },
        { { -1, -1, 0, eku_code, g, 0 }, "tls-server", "does not grant extended key usage codeSigning" },
        { { -1, -1, 0, eku_client, NULL, 0 }, "sub-ca", "profile sub-ca does not grant extended key usage clientAuth" },
        { { -1, -1, 0, NULL, g, 0 }, "sub-ca", "does not allow a subject alternative name of kind dns" },
        { { 0, -1, 0, NULL, NULL, 0 }, "sub-ca", "asks for CA:FALSE" },
    };
    size_t len = 0;
    unsigned char *csr;
    char *pem = NULL;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        csr = make_csr(leaf, "CN=x", &bad[i].spec, &len);
        ck_assert_rc(ctx, kv_ca_issue(ca, bad[i].profile, csr, len, NULL, &pem),
                     KV_ERR_BAD_INPUT);
        ck_assert_msg(strstr(kv_errmsg(ctx), bad[i].why), "case %zu: '%s' lacks '%s'", i,
                      kv_errmsg(ctx), bad[i].why);
        ck_assert_ptr_null(pem);
        OPENSSL_free(csr);
    }
    ck_assert_int_eq(db_count(caname, NULL), 0);

    /* what the profile grants may be asked for; other extensions are dropped */
    {
        kv_x509_ext_spec ok = { 0, -1, KV_KU_DIGITAL_SIGNATURE, eku_client, g, 0 };
        X509_REQ *req = X509_REQ_new_ex(ctx->libctx, NULL);
        X509_NAME *n = NULL;
        STACK_OF(X509_EXTENSION) *exts = NULL;
        X509_EXTENSION *ns = X509V3_EXT_conf_nid(NULL, NULL, NID_netscape_comment, "hello");
        unsigned char *der = NULL;
        int l;
        X509 *x;

        ck_assert_rc(ctx, kv_x509_exts_build(ctx, &ok, &exts), KV_OK);
        sk_X509_EXTENSION_push(exts, ns);
        ck_assert_rc(ctx, kv_x509_name_parse(ctx, "CN=ok", &n), KV_OK);
        X509_REQ_set_subject_name(req, n);
        X509_REQ_set_pubkey(req, leaf->pub);
        X509_REQ_add_extensions(req, exts);
        ck_assert_rc(ctx, kv_x509_sign(leaf, KV_OP_SIGN, KV_ALG_DEFAULT, KV_X509_REQ, req),
                     KV_OK);
        l = i2d_X509_REQ(req, &der);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", der, (size_t)l, NULL, &pem), KV_OK);
        x = first_cert(pem, NULL);
        ck_assert_int_lt(X509_get_ext_by_NID(x, NID_netscape_comment, -1), 0);
        ck_assert_int_ge(X509_get_ext_by_NID(x, NID_subject_alt_name, -1), 0);
        X509_free(x);
        kv_string_free(pem);
        OPENSSL_free(der);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        X509_NAME_free(n);
        X509_REQ_free(req);
    }
    ck_assert_int_eq(db_count(caname, NULL), 1);
    GENERAL_NAMES_free(g);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* Broken, malformed and oversized requests, an unknown profile: each an
 * error naming what is wrong, nothing recorded. */
START_TEST(bad_requests)
{
    const char *caname = uniq("ca-bad");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("bad", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=fine", NULL, &len);
    char *pem = NULL;

    /* a flipped bit in the signature */
    csr[len - 3] ^= 0x01;
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_BAD_SIGNATURE);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "signature does not verify"));
    csr[len - 3] ^= 0x01;
    /* truncated DER, trailing bytes, PEM with a damaged body */
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len - 1, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not a PKCS#10"));
    {
        unsigned char *more = OPENSSL_malloc(len + 1);
        memcpy(more, csr, len);
        more[len] = 0;
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", more, len + 1, NULL, &pem),
                     KV_ERR_BAD_INPUT);
        OPENSSL_free(more);
    }
    {
        static const char junk[] = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB!!notbase64\n"
                                   "-----END CERTIFICATE REQUEST-----\n";
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", (const unsigned char *)junk,
                                      sizeof(junk) - 1, NULL, &pem), KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not a PKCS#10"));
    }
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, 0, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_ca_issue(ca, "no-such-profile", csr, len, NULL, &pem),
                 KV_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "unknown certificate profile"));
    ck_assert_ptr_null(strstr(kv_errmsg(ctx), "no-such-profile"));
    OPENSSL_free(csr);
    /* an oversized subject: many attributes, made outside the toolkit */
    {
        X509_REQ *req = X509_REQ_new_ex(ctx->libctx, NULL);
        X509_NAME *n = X509_NAME_new();
        unsigned char *der = NULL;
        int l;
        for (int i = 0; i < 40; i++)
            X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8,
                                       (const unsigned char *)"organisational-unit-name", -1,
                                       -1, 0);
        X509_REQ_set_subject_name(req, n);
        X509_REQ_set_pubkey(req, leaf->pub);
        ck_assert_rc(ctx, kv_x509_sign(leaf, KV_OP_SIGN, KV_ALG_DEFAULT, KV_X509_REQ, req),
                     KV_OK);
        l = i2d_X509_REQ(req, &der);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", der, (size_t)l, NULL, &pem),
                     KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "subject"));
        OPENSSL_free(der);
        X509_NAME_free(n);
        X509_REQ_free(req);
    }
    /* more SANs than a certificate may carry */
    {
        const char *many[KV_X509_SANS_MAX + 2];
        char names[KV_X509_SANS_MAX + 1][32];
        GENERAL_NAMES *g;
        kv_x509_ext_spec spec = { -1, -1, 0, NULL, NULL, 0 };
        for (int i = 0; i <= KV_X509_SANS_MAX; i++) {
            snprintf(names[i], sizeof(names[i]), "dns:h%d.example.org", i);
            many[i] = names[i];
        }
        many[KV_X509_SANS_MAX + 1] = NULL;
        g = sans_of(many);
        spec.san = g;
        csr = make_csr(leaf, "CN=many", &spec, &len);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_BAD_INPUT);
        ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "more than 64 subject alternative names"));
        OPENSSL_free(csr);
        GENERAL_NAMES_free(g);
    }
    /* opts that belong to kv_ca_issue_pubkey */
    {
        kv_cert_opts o = KV_CERT_OPTS_INIT;
        o.subject = "CN=other";
        csr = make_csr(leaf, "CN=fine", NULL, &len);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, &o, &pem), KV_ERR_INVALID_ARG);
        o.subject = NULL;
        o.size = 4;
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, &o, &pem), KV_ERR_INVALID_ARG);
        OPENSSL_free(csr);
    }
    ck_assert_ptr_null(pem);
    ck_assert_int_eq(db_count(caname, NULL), 0);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* The CA's own certificate: missing, expired, not a CA, no keyCertSign. */
START_TEST(bad_ca)
{
    kv_key *leaf = leaf_key("bc", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=x", NULL, &len);
    char *pem = NULL;
    kv_key *ca;
    const char *name;

    name = uniq("nocert");
    ck_assert_rc(ctx, kv_key_generate(ctx, name, KV_KEY_EC_P256, "software", &ca), KV_OK);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "no certificate stored"));
    kv_key_free(ca);

    name = uniq("expired");
    ca = make_root(name, KV_KEY_EC_P256, -86400L * 30, -86400L, -1,
                   KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "expired at"));
    ck_assert_rc(ctx, kv_ca_crl(ca, 0, &pem), KV_ERR_BAD_INPUT);
    ck_assert_int_eq(db_count(name, NULL), 0);
    kv_key_free(ca);

    name = uniq("nosign");
    ca = make_root(name, KV_KEY_EC_P256, -60, 86400L, -1, KV_KU_CRL_SIGN);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "keyCertSign"));
    kv_key_free(ca);

    name = uniq("nocrl");
    ca = make_root(name, KV_KEY_EC_P256, -60, 86400L, -1, KV_KU_KEY_CERT_SIGN);
    ck_assert_rc(ctx, kv_ca_crl(ca, 0, &pem), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "cRLSign"));
    kv_key_free(ca);

    /* a CA certificate valid for a day: what it issues ends with it */
    name = uniq("short");
    ca = make_root(name, KV_KEY_EC_P256, -60, 86400L, -1, KV_KU_KEY_CERT_SIGN);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    {
        X509 *x = first_cert(pem, NULL), *cax = stored_cert(ca);
        ck_assert_int_eq(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(cax)), 0);
        X509_free(cax);
        X509_free(x);
    }
    kv_string_free(pem);
    kv_key_free(ca);
    OPENSSL_free(csr);
    kv_key_free(leaf);
}
END_TEST

/* ---- the record, revocation, CRLs ------------------------------------------------ */

static char *serial_of(const char *pem)
{
    X509 *x = first_cert(pem, NULL);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *h = BN_bn2hex(bn), *s = strdup(h);

    OPENSSL_free(h);
    BN_free(bn);
    X509_free(x);
    return s;
}

START_TEST(revoke_and_crl)
{
    const char *caname = uniq("ca-crl");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("crl", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=r", NULL, &len);
    char *pem[3] = { NULL }, *serial[3], *crlpem = NULL, *lower;
    X509 *cax = stored_cert(ca);
    X509_CRL *crl;
    BIO *b;

    for (int i = 0; i < 3; i++) {
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem[i]), KV_OK);
        serial[i] = serial_of(pem[i]);
    }
    ck_assert_int_eq(db_count(caname, NULL), 3);
    ck_assert_rc(ctx, kv_ca_revoke(ca, serial[0], KV_REVOKE_KEY_COMPROMISE), KV_OK);
    /* lower case and leading zeros name the same serial */
    lower = malloc(strlen(serial[1]) + 3);
    sprintf(lower, "00%s", serial[1]);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    ck_assert_rc(ctx, kv_ca_revoke(ca, lower, KV_REVOKE_UNSPECIFIED), KV_OK);
    ck_assert_rc(ctx, kv_ca_revoke(ca, serial[0], KV_REVOKE_SUPERSEDED), KV_ERR_BAD_INPUT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "already revoked at"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "keyCompromise"));
    ck_assert_rc(ctx, kv_ca_revoke(ca, "0123456789ABCDEF", KV_REVOKE_SUPERSEDED),
                 KV_ERR_KEY_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "serial 0123456789ABCDEF"));
    ck_assert_rc(ctx, kv_ca_revoke(ca, "xyz", KV_REVOKE_SUPERSEDED), KV_ERR_INVALID_ARG);
    ck_assert_rc(ctx, kv_ca_revoke(ca, serial[2], (kv_revoke_reason)7), KV_ERR_INVALID_ARG);
    ck_assert_int_eq(db_count(caname, "revoked_at IS NOT NULL"), 2);

    for (long want = 1; want <= 2; want++) {
        ASN1_INTEGER *num;
        STACK_OF(X509_REVOKED) *revs;
        int days = 0, secs = 0;

        ck_assert_rc(ctx, kv_ca_crl(ca, want == 1 ? 0 : 30, &crlpem), KV_OK);
        b = BIO_new_mem_buf(crlpem, -1);
        crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
        BIO_free(b);
        ck_assert_ptr_nonnull(crl);
        ck_assert_int_eq(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
        ck_assert_int_eq(X509_CRL_verify(crl, X509_get0_pubkey(cax)), 1);
        ck_assert_int_eq(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(cax)), 0);
        ASN1_TIME_diff(&days, &secs, X509_CRL_get0_lastUpdate(crl),
                       X509_CRL_get0_nextUpdate(crl));
        ck_assert_int_eq(days, want == 1 ? 7 : 30);
        num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
        ck_assert_int_eq(ASN1_INTEGER_get(num), want);
        ASN1_INTEGER_free(num);
        {
            AUTHORITY_KEYID *ak = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier,
                                                       NULL, NULL);
            ck_assert_int_eq(ASN1_OCTET_STRING_cmp(ak->keyid, X509_get0_subject_key_id(cax)),
                             0);
            AUTHORITY_KEYID_free(ak);
        }
        revs = X509_CRL_get_REVOKED(crl);
        ck_assert_int_eq(sk_X509_REVOKED_num(revs), 2);
        for (int i = 0; i < 2; i++) {
            X509_REVOKED *r = sk_X509_REVOKED_value(revs, i);
            BIGNUM *bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), NULL);
            char *h = BN_bn2hex(bn);
            ASN1_ENUMERATED *reason = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, NULL, NULL);
            if (strcmp(h, serial[0]) == 0) {
                ck_assert_ptr_nonnull(reason);
                ck_assert_int_eq(ASN1_ENUMERATED_get(reason), 1);
            } else {
                ck_assert_str_eq(h, serial[1]);
                ck_assert_ptr_null(reason);  /* unspecified: no reasonCode */
            }
            ASN1_ENUMERATED_free(reason);
            OPENSSL_free(h);
            BN_free(bn);
        }
        X509_CRL_free(crl);
        kv_string_free(crlpem);
    }
    for (int i = 0; i < 3; i++) {
        kv_string_free(pem[i]);
        free(serial[i]);
    }
    free(lower);
    X509_free(cax);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* The record belongs to its CA: a database of another CA, a link, a file
 * others may write are refused. */
START_TEST(record_trust)
{
    const char *a = uniq("ca-a"), *bname = uniq("ca-b");
    kv_key *ca = root_ca(a), *other = root_ca(bname);
    kv_key *leaf = leaf_key("rt", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=t", NULL, &len);
    char *pem = NULL, pa[1200], pb[1200], dir[1024];
    struct stat st;

    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    ck_assert_rc(ctx, kv_ca_issue(other, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    snprintf(dir, sizeof(dir), "%s/ca", ctx->home);
    snprintf(pa, sizeof(pa), "%s/%s.db", dir, a);
    snprintf(pb, sizeof(pb), "%s/%s.db", dir, bname);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0700);
    ck_assert_int_eq(stat(pa, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);

    /* B's record swapped in for A's */
    ck_assert_int_eq(tu_sh("cp '%s' '%s'", pb, pa), 0);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "belongs to another CA key"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), pa));
    ck_assert_rc(ctx, kv_ca_crl(ca, 0, &pem), KV_ERR_CORRUPT);
    ck_assert_int_eq(db_count(bname, NULL), 1);
    /* a symbolic link */
    ck_assert_int_eq(unlink(pa), 0);
    ck_assert_int_eq(symlink(pb, pa), 0);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "symbolic link"));
    /* writable by others */
    ck_assert_int_eq(chmod(pb, 0666), 0);
    ck_assert_rc(ctx, kv_ca_issue(other, "tls-client", csr, len, NULL, &pem), KV_ERR_PERMISSION);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "writable by others"));
    ck_assert_int_eq(db_count(bname, NULL), 1);
    ck_assert_ptr_null(pem);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(other);
    kv_key_free(ca);
}
END_TEST

/* SQL the next connection to one CA record runs as it opens (an SQLite
 * auto-extension of this test process): TEMP triggers, which live in the
 * connection, not in the file, whose schema libkeyvault checks. */
static char plant_path[1200];
static char plant_sql[1024];

static int plant_ext(sqlite3 *db, char **err, const void *api)
{
    const char *file = sqlite3_db_filename(db, "main");

    (void)err;
    (void)api;
    if (file && plant_path[0] && !strcmp(file, plant_path))
        ck_assert_msg(sqlite3_exec(db, plant_sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s",
                      plant_sql, sqlite3_errmsg(db));
    return SQLITE_OK;
}

static void plant(const char *ca, const char *sql)
{
    snprintf(plant_path, sizeof(plant_path), "%s/ca/%s.db", ctx->home, ca);
    snprintf(plant_sql, sizeof(plant_sql), "%s", sql);
    sqlite3_auto_extension((void (*)(void))plant_ext);
}

/* A serial already in the record is drawn again. A collision of 127
 * random bits cannot be had on demand: a trigger plants a certificate
 * with the serial being inserted (the statement then fails on UNIQUE and
 * the plant is rolled back with it). A trigger in the file is refused
 * (hostile_record): this one is a TEMP trigger of the connection. */
START_TEST(serial_collision)
{
    const char *caname = uniq("ca-coll");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("coll", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=c", NULL, &len);
    char *pem = NULL;
    static const char trigger[] =
        "CREATE TEMP TRIGGER plant BEFORE INSERT ON main.issued WHEN %s BEGIN "
        "INSERT INTO issued (serial, subject, spki_sha256, not_before, not_after, profile, "
        "issued_at) VALUES (NEW.serial, 'planted', '', 0, 0, 'planted', 0); END";
    char sql[512];

    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    /* every serial drawn collides: the CA gives up, nothing recorded */
    snprintf(sql, sizeof(sql), trigger, "1");
    plant(caname, sql);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "9 random serial numbers in a row"));
    ck_assert_ptr_null(pem);
    ck_assert_int_eq(db_count(caname, NULL), 1);
    /* serials ending in 0-3 (a quarter) collide: every issuance succeeds
     * (all nine draws collide once in 260000), with a serial ending in 4-F */
    snprintf(sql, sizeof(sql), trigger, "substr(NEW.serial, -1) < '4'");
    plant(caname, sql);
    for (int i = 0; i < 24; i++) {
        char *serial;
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
        serial = serial_of(pem);
        ck_assert_msg(serial[strlen(serial) - 1] >= '4', "serial %s was planted", serial);
        free(serial);
        kv_string_free(pem);
    }
    ck_assert_int_eq(db_count(caname, NULL), 25);
    ck_assert_int_eq(db_count(caname, "profile = 'planted'"), 0);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* A CA record that is not ours is refused before any query trusts it,
 * naming the file and what is wrong; the files are crafted with the
 * sqlite3 CLI from a good record. */
START_TEST(hostile_record)
{
    const char *caname = uniq("ca-hostile");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("hostile", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=h", NULL, &len);
    char *pem = NULL, path[1200];
    static const struct {
        const char *craft, *says;
        kv_rc rc;
    } cases[] = {
        { "sqlite3 \"$DB\" 'PRAGMA application_id = 1'", "application_id is 0x00000001",
          KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'PRAGMA user_version = 2'", "user_version is 2", KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'ALTER TABLE issued RENAME TO kept; "
          "CREATE VIEW issued AS SELECT * FROM kept'", "'issued' is a view, not a table",
          KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'CREATE TRIGGER wipe AFTER INSERT ON issued BEGIN "
          "DELETE FROM issued; END'", "has a trigger 'wipe'", KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'DROP TABLE issued'", "has no table 'issued'", KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'ALTER TABLE issued ADD COLUMN extra'",
          "table 'issued' is not defined as libkeyvault defines it", KV_ERR_CORRUPT },
        { "sqlite3 \"$DB\" 'CREATE TABLE \"x y\" (a)'",
          "a table '(a name with other characters)'", KV_ERR_CORRUPT },
        { "truncate -s 600M \"$DB\"", "more than 536870912", KV_ERR_CORRUPT },
        { "dd if=/dev/urandom of=\"$DB\" bs=1 seek=100 count=3000 conv=notrunc 2>/dev/null",
          "malformed", KV_ERR_CORRUPT },
        { "head -c 4096 /dev/urandom >\"$DB\"", "not a database", KV_ERR_CORRUPT },
    };

    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    snprintf(path, sizeof(path), "%s/ca/%s.db", ctx->home, caname);
    ck_assert_int_eq(setenv("DB", path, 1), 0);
    ck_assert_int_eq(tu_sh("cp '%s' '%s.good'", path, path), 0);
    ck_assert_int_eq(tu_sh("test \"$(sqlite3 '%s' 'PRAGMA application_id')\" = 1263944513",
                           path), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(tu_sh("cp '%s.good' '%s'", path, path), 0);
        ck_assert_int_eq(tu_sh("%s", cases[i].craft), 0);
        ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), cases[i].rc);
        ck_assert_ptr_null(pem);
        ck_assert_msg(strstr(kv_errmsg(ctx), cases[i].says) && strstr(kv_errmsg(ctx), path),
                      "case %zu: '%s' does not name the file and '%s'", i, kv_errmsg(ctx),
                      cases[i].says);
        ck_assert_rc(ctx, kv_ca_crl(ca, 0, &pem), cases[i].rc);
    }
    /* a record made before the header was stamped: the same tables, id 0 */
    ck_assert_int_eq(tu_sh("cp '%s.good' '%s' && sqlite3 '%s' 'PRAGMA application_id = 0; "
                           "PRAGMA user_version = 0'", path, path, path), 0);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    ck_assert_int_eq(tu_sh("test \"$(sqlite3 '%s' 'PRAGMA application_id; "
                           "PRAGMA user_version')\" = '1263944513\n1'", path), 0);
    ck_assert_int_eq(db_count(caname, NULL), 2);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* A statement that would run for ever (a TEMP trigger counting a cross
 * join of 27 billion rows) is stopped after KV_DB_WORK_MS, naming the
 * record; the record is as it was. */
START_TEST(record_work_bound)
{
    const char *caname = uniq("ca-slow");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("slow", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=s", NULL, &len);
    char *pem = NULL;
    time_t t0;

    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_OK);
    kv_string_free(pem);
    plant(caname, "CREATE TEMP TABLE n AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                  "SELECT x + 1 FROM c LIMIT 3000) SELECT x FROM c; "
                  "CREATE TEMP TRIGGER slow BEFORE INSERT ON main.issued BEGIN "
                  "SELECT count(*) FROM temp.n a, temp.n b, temp.n c; END");
    t0 = time(NULL);
    ck_assert_rc(ctx, kv_ca_issue(ca, "tls-client", csr, len, NULL, &pem), KV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "stopped after 10000 ms of work"));
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), caname));
    ck_assert_int_le(time(NULL) - t0, 30);
    ck_assert_ptr_null(pem);
    plant_path[0] = '\0';
    ck_assert_int_eq(db_count(caname, NULL), 1);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

/* Two processes issuing at once both succeed, with distinct serials. */
START_TEST(concurrent_issuers)
{
    const char *caname = uniq("ca-race");
    kv_key *ca = root_ca(caname);
    kv_key *leaf = leaf_key("race", KV_KEY_EC_P256);
    size_t len = 0;
    unsigned char *csr = make_csr(leaf, "CN=race", NULL, &len);
    pid_t pid[2];
    char conf[600];
    enum { N = 15 };

    snprintf(conf, sizeof(conf), "%s", tu_config(tu_tmpdir(), NULL));

    fflush(NULL);
    for (int c = 0; c < 2; c++) {
        pid[c] = fork();
        ck_assert_int_ge(pid[c], 0);
        if (pid[c] == 0) {
            kv_ctx *cc = NULL;
            kv_key *k = NULL;
            int bad = 0;
            if (kv_ctx_new(&cc, conf) != KV_OK || kv_key_open(cc, caname, &k) != KV_OK)
                bad = -1;
            for (int i = 0; i < N && bad >= 0; i++) {
                char *pem = NULL;
                if (kv_ca_issue(k, "tls-client", csr, len, NULL, &pem) != KV_OK) {
                    fprintf(stderr, "child %d: %s\n", c, kv_errmsg(cc));
                    bad++;
                }
                kv_string_free(pem);
            }
            kv_key_free(k);
            kv_ctx_free(cc);
            /* and what it inherited from the test (valgrind's leak check
             * follows the child) */
            OPENSSL_free(csr);
            kv_key_free(leaf);
            kv_key_free(ca);
            kv_ctx_free(ctx);
            _exit(bad < 0 ? 2 : bad ? 1 : 0);
        }
    }
    for (int c = 0; c < 2; c++) {
        int st = 0;
        ck_assert_int_eq(waitpid(pid[c], &st, 0), pid[c]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "issuer %d failed", c);
    }
    ck_assert_int_eq(db_count(caname, NULL), 2 * N);
    OPENSSL_free(csr);
    kv_key_free(leaf);
    kv_key_free(ca);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ca");
    TCase *tc = tcase_create("ca");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tls_server);
    tcase_add_test(tc, client_and_device);
    tcase_add_test(tc, sub_ca_chain);
    tcase_add_test(tc, tpm_ak);
    tcase_add_test(tc, pubkey_subject_and_sans);
    tcase_add_test(tc, request_filtering);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, bad_ca);
    tcase_add_test(tc, revoke_and_crl);
    tcase_add_test(tc, record_trust);
    tcase_add_test(tc, serial_collision);
    tcase_add_test(tc, hostile_record);
    tcase_add_test(tc, record_work_bound);
    tcase_add_test(tc, concurrent_issuers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
