/*
 * ca.c - a certificate authority whose key lives in the vault: certificates
 * issued from requests or bare public keys under fixed profiles, recorded
 * in an SQLite database the CA owns, revocation and CRLs.
 *
 * Nothing a request asks for is copied as it is: its subject is parsed
 * again, its SANs are re-checked and kept only for the kinds the profile
 * allows, and key usage, extended key usage and basic constraints come from
 * the profile, a request for more being refused. Certificates and CRLs are
 * built and encoded by OpenSSL and signed through the toolkit of x509.c.
 *
 * The record, HOME/ca/CA_NAME.db:
 *   meta(key, value)    "ca_key_sha256": the CA key's SubjectPublicKeyInfo
 *                       hash, checked on every open (a database swapped in
 *                       from another CA is refused); "crl_number"
 *   issued(serial UNIQUE, subject, spki_sha256, not_before, not_after,
 *          profile, issued_at, revoked_at, reason)
 * Times are seconds since the epoch. A certificate is recorded in a
 * transaction before it is returned: the transaction commits after the
 * signature, so a failure leaves no row and no certificate.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "internal.h"

#define CA_MAX_INPUT (64 * 1024)       /* a request or public key */
#define CA_BUSY_MS 30000               /* SQLite busy timeout: concurrent issuers wait */
#define CA_SERIAL_TRIES 8
#define CA_TPM_MODEL_MAX 64

/* ---- profiles ---------------------------------------------------------------- */

#define SAN_DNS (1u << GEN_DNS)
#define SAN_IP (1u << GEN_IPADD)
#define SAN_URI (1u << GEN_URI)
#define SAN_EMAIL (1u << GEN_EMAIL)

typedef struct ca_profile {
    const char *name;
    bool ca;                   /* basicConstraints CA:TRUE (else CA:FALSE) */
    unsigned ku;               /* keyUsage for every key */
    unsigned ku_rsa, ku_ec;    /* added for RSA, for EC keys */
    const char *const *eku;    /* NULL-terminated OIDs; NULL: none */
    unsigned sans;             /* SAN kinds allowed (SAN_*) */
    unsigned sans_required;    /* at least one of these kinds */
    bool tpm;                  /* empty subject, the TCG directoryName SAN */
    unsigned days;             /* default validity */
} ca_profile;

static const char *const eku_server[] = { "1.3.6.1.5.5.7.3.1", NULL };
static const char *const eku_client[] = { "1.3.6.1.5.5.7.3.2", NULL };
static const char *const eku_device[] = { "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1", NULL };
static const char *const eku_tpm_ak[] = { "2.23.133.8.3", NULL };  /* tcg-kp-AIKCertificate */

static const ca_profile profiles[] = {
    { "tls-server", false, KV_KU_DIGITAL_SIGNATURE, KV_KU_KEY_ENCIPHERMENT, 0, eku_server,
      SAN_DNS | SAN_IP, SAN_DNS | SAN_IP, false, 365 },
    { "tls-client", false, KV_KU_DIGITAL_SIGNATURE, 0, 0, eku_client,
      SAN_DNS | SAN_IP | SAN_URI | SAN_EMAIL, 0, false, 365 },
    { "device-identity", false, KV_KU_DIGITAL_SIGNATURE, 0, KV_KU_KEY_AGREEMENT, eku_device,
      SAN_URI | SAN_DNS, 0, false, 365 },
    { "sub-ca", true, KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN | KV_KU_DIGITAL_SIGNATURE, 0, 0,
      NULL, 0, 0, false, 1825 },
    { "tpm-ak", false, KV_KU_DIGITAL_SIGNATURE, 0, 0, eku_tpm_ak, 0, 0, true, 365 },
};

static kv_rc profile_get(const kv_ctx *ctx, const char *name, const ca_profile **out)
{
    for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
        if (strcmp(profiles[i].name, name) == 0) {
            *out = &profiles[i];
            return KV_OK;
        }
    return kv_error(ctx, KV_ERR_INVALID_ARG,
                    "unknown certificate profile (tls-server, tls-client, device-identity, "
                    "sub-ca, tpm-ak)");
}

static const char *san_kind_name(int type)
{
    switch (type) {
    case GEN_DNS: return "dns";
    case GEN_IPADD: return "ip";
    case GEN_URI: return "uri";
    case GEN_EMAIL: return "email";
    case GEN_DIRNAME: return "directoryName";
    case GEN_OTHERNAME: return "otherName";
    case GEN_RID: return "registeredID";
    case GEN_X400: return "x400Address";
    case GEN_EDIPARTY: return "ediPartyName";
    default: return "unknown";
    }
}

static const char *const ku_names[] = {
    "digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
    "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly",
};

/* ---- what the caller asked for --------------------------------------------- */

/* The fields of opts the caller's `size` covers, after kv_x509_opts_read
 * has checked it (fields are only ever appended). */
static void opts_copy(const kv_cert_opts *in, kv_cert_opts *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out, in, in->size < sizeof(*out) ? in->size : sizeof(*out));
    out->size = sizeof(*out);
}

/* A TCG identifier value: "id:" and eight hex digits. */
static bool tcg_id_valid(const char *s)
{
    if (strncmp(s, "id:", 3) != 0 || strlen(s) != 11)
        return false;
    for (s += 3; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

static kv_rc opts_check(const kv_ctx *ctx, const ca_profile *p, const kv_cert_opts *o,
                        bool from_csr)
{
    const char *fn = from_csr ? "kv_ca_issue" : "kv_ca_issue_pubkey";
    bool tpm_any = o->tpm_manufacturer || o->tpm_model || o->tpm_version;

    if (from_csr && (o->subject || o->sans))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "%s takes the subject and SANs from the request, not from opts", fn);
    if (o->key_usage || o->ext_key_usage)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "profile %s decides key usage and extended key usage: opts may not "
                        "set them", p->name);
    if (o->flags && !p->ca)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "profile %s issues no CA certificates: KV_CERT_CA and "
                        "KV_CERT_PATH_LEN do not apply", p->name);
    if ((o->flags & KV_CERT_PATH_LEN) && o->path_len > 64)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "path length %u: at most 64", o->path_len);
    if (tpm_any && !p->tpm)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "the TPM manufacturer, model and version belong to profile tpm-ak, "
                        "not %s", p->name);
    if (p->tpm) {
        if (!o->tpm_manufacturer || !o->tpm_model || !o->tpm_version)
            return kv_error(ctx, KV_ERR_INVALID_ARG,
                            "profile tpm-ak needs the TPM manufacturer, model and version");
        if (!tcg_id_valid(o->tpm_manufacturer))
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "TPM manufacturer: expected \"id:\" and 8 hex digits "
                            "(id:53544D20)");
        if (!tcg_id_valid(o->tpm_version))
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "TPM version: expected \"id:\" and 8 hex digits (id:00020000)");
        size_t n = strlen(o->tpm_model);
        if (n == 0 || n > CA_TPM_MODEL_MAX)
            return kv_error(ctx, KV_ERR_BAD_INPUT, "TPM model: 1 to %d characters",
                            CA_TPM_MODEL_MAX);
        for (const unsigned char *s = (const unsigned char *)o->tpm_model; *s;) {
            unsigned long c = 0;
            int l = UTF8_getc(s, (int)strlen((const char *)s), &c);
            if (l <= 0)
                return kv_error(ctx, KV_ERR_BAD_INPUT, "TPM model: not valid UTF-8");
            if (c < 0x20 || (c >= 0x7f && c < 0xa0))
                return kv_error(ctx, KV_ERR_BAD_INPUT,
                                "TPM model: holds a control character");
            s += l;
        }
        if (o->subject && *o->subject)
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "profile tpm-ak: the subject is always empty; the TPM is named "
                            "in the SAN");
        if (o->sans && o->sans[0])
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "profile tpm-ak: no SANs besides the TPM's directoryName");
    }
    return KV_OK;
}

/*
 * The caller's opts (NULL: none) checked and converted by the toolkit's
 * reader for an issued certificate (kv_x509_opts_read: size, flags, days,
 * algorithm, subject, SANs), then against the profile. *copy holds the
 * fields the caller's size covers; free xo with kv_x509_opts_clear.
 */
static kv_rc ca_opts(kv_key *ca, const ca_profile *p, const EVP_PKEY *subject_key,
                     const kv_cert_opts *opts, bool from_csr, kv_cert_opts *copy,
                     kv_x509_opts *xo)
{
    static const kv_cert_opts none = KV_CERT_OPTS_INIT;
    const kv_cert_opts *src = opts ? opts : &none;
    kv_rc rc;

    KV_CHECK(rc, kv_x509_opts_read(ca, subject_key, src, KV_X509_FOR_ISSUE, xo));
    opts_copy(src, copy);
    rc = opts_check(ca->ctx, p, copy, from_csr);
out:
    return rc;
}

/* ---- the CA's certificate ---------------------------------------------------- */

static char *time_text(const ASN1_TIME *t)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;

    if (b && ASN1_TIME_print_ex(b, t, ASN1_DTFLGS_ISO8601) == 1)
        s = kv_bio_text(b, NULL);
    BIO_free(b);
    kv_ossl_drop();
    return s ? s : kv_strdup("(unreadable time)");
}

static char *epoch_text(time_t t)
{
    ASN1_TIME *a = ASN1_TIME_set(NULL, t);
    char *s = a ? time_text(a) : kv_strdup("(unreadable time)");

    ASN1_TIME_free(a);
    return s;
}

/* The certificate stored with the CA key, checked for issuing certificates
 * (need KU_KEY_CERT_SIGN) or CRLs (KU_CRL_SIGN). */
static kv_rc ca_cert(kv_key *ca, uint32_t need, X509 **out, STACK_OF(X509) **chain_out)
{
    kv_ctx *ctx = ca->ctx;
    STACK_OF(X509) *chain = NULL;
    kv_err_mark mark = kv_err_mark_get(ctx);
    X509 *x = NULL;
    kv_rc rc;

    *out = NULL;
    if (chain_out)
        *chain_out = NULL;
    rc = kv_chain_get(ca, &chain);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark);   /* say what to do instead */
        return kv_error(ctx, rc,
                        "CA '%s' has no certificate stored with its key (make one with "
                        "'keyvault cert selfsign --ca' or have it issued, then store it)",
                        ca->name);
    }
    if (rc != KV_OK)
        return rc;
    x = sk_X509_value(chain, 0);
    X509_up_ref(x);
    if (EVP_PKEY_eq(X509_get0_pubkey(x), ca->pub) != 1)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "the certificate stored with CA '%s' is not for its key", ca->name);
    if (!(X509_get_extension_flags(x) & EXFLAG_CA))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the certificate of CA '%s' is not a CA certificate (basicConstraints "
                "CA:TRUE)", ca->name);
    if (!(X509_get_extension_flags(x) & EXFLAG_KUSAGE) || !(X509_get_key_usage(x) & need))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the certificate of CA '%s' does not allow %s (keyUsage)", ca->name,
                need == KU_CRL_SIGN ? "cRLSign" : "keyCertSign");
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        char *t = time_text(X509_get0_notAfter(x));
        rc = kv_error(ctx, KV_ERR_BAD_INPUT, "the certificate of CA '%s' expired at %s",
                      ca->name, t ? t : "?");
        free(t);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        char *t = time_text(X509_get0_notBefore(x));
        rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                      "the certificate of CA '%s' is not valid before %s", ca->name,
                      t ? t : "?");
        free(t);
        goto out;
    }
    *out = x;
    x = NULL;
    if (chain_out) {
        *chain_out = chain;
        chain = NULL;
    }
out:
    X509_free(x);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* ---- the record (SQLite) ------------------------------------------------------ */

typedef struct ca_db {
    sqlite3 *db;
    char *path;
    kv_db_guard guard;
} ca_db;

/* PRAGMA application_id of a CA record: "KVCA" */
#define CA_APPLICATION_ID 0x4b564341u
#define CA_USER_VERSION 1

static kv_rc db_error(const kv_ctx *ctx, ca_db *d, int src, const char *what)
{
    return kv_db_error(ctx, d->db, &d->guard, src, what, "CA record", d->path);
}

static kv_rc db_exec(const kv_ctx *ctx, ca_db *d, const char *sql, const char *what)
{
    int r;

    kv_db_arm(&d->guard);
    r = sqlite3_exec(d->db, sql, NULL, NULL, NULL);

    return r == SQLITE_OK ? KV_OK : db_error(ctx, d, r, what);
}

static kv_rc db_prepare(const kv_ctx *ctx, ca_db *d, const char *sql, sqlite3_stmt **st)
{
    int r;

    kv_db_arm(&d->guard);
    r = sqlite3_prepare_v2(d->db, sql, -1, st, NULL);

    return r == SQLITE_OK ? KV_OK : db_error(ctx, d, r, "a query");
}

static void db_close(ca_db *d)
{
    if (d->db)
        sqlite3_close(d->db);
    free(d->path);
    d->db = NULL;
    d->path = NULL;
}

/* Hex SHA-256 of a public key's SubjectPublicKeyInfo. */
static kv_rc spki_sha256(const kv_ctx *ctx, const EVP_PKEY *pub, char hex[65])
{
    unsigned char *der = NULL, md[32];
    size_t mdlen = 0;
    int n = i2d_PUBKEY(pub, &der);

    if (n <= 0 || EVP_Q_digest(ctx->libctx, "SHA256", NULL, der, (size_t)n, md, &mdlen) != 1) {
        OPENSSL_free(der);
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot hash a public key");
    }
    OPENSSL_free(der);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return KV_OK;
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS issued ("
    " serial TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, spki_sha256 TEXT NOT NULL,"
    " not_before INTEGER NOT NULL, not_after INTEGER NOT NULL, profile TEXT NOT NULL,"
    " issued_at INTEGER NOT NULL, revoked_at INTEGER, reason INTEGER);"
    "INSERT OR IGNORE INTO meta VALUES ('crl_number', '0');";

static const kv_db_format ca_format = { "CA record", CA_APPLICATION_ID, CA_USER_VERSION, schema };

/* Open (or make) the CA's record and begin a write transaction in it; the
 * caller commits or rolls back. The CA key's hash must be the record's. */
static kv_rc db_open(kv_key *ca, ca_db *d)
{
    kv_ctx *ctx = ca->ctx;
    char *dir = NULL, hash[65];
    sqlite3_stmt *st = NULL;
    int r;
    kv_rc rc;

    memset(d, 0, sizeof(*d));
    if (!ctx->home)
        return kv_error(ctx, KV_ERR_CONFIG, "no home directory for the CA record");
    dir = kv_asprintf("%s/ca", ctx->home);
    d->path = kv_asprintf("%s/ca/%s.db", ctx->home, ca->name);
    if (!dir || !d->path)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_mkdir_p(ctx, dir));
    rc = kv_dir_check(ctx, dir, "CA directory");
    if (rc == KV_ERR_KEY_NOT_FOUND)
        KV_FAIL(ctx, rc, KV_ERR_IO, "CA directory '%s' vanished", dir);
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, kv_db_file_check(ctx, d->path, "CA record", true));
    KV_CHECK(rc, kv_db_open(ctx, d->path, &ca_format, true, CA_BUSY_MS, &d->guard, &d->db));
    KV_CHECK(rc, spki_sha256(ctx, ca->pub, hash));
    KV_CHECK(rc, db_prepare(ctx, d, "INSERT OR IGNORE INTO meta VALUES ('ca_key_sha256', ?1)",
                            &st));
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    if ((r = sqlite3_step(st)) != SQLITE_DONE)
        KV_CHECK(rc, db_error(ctx, d, r, "recording the CA key"));
    sqlite3_finalize(st);
    KV_CHECK(rc, db_prepare(ctx, d, "SELECT value FROM meta WHERE key = 'ca_key_sha256'", &st));
    if ((r = sqlite3_step(st)) != SQLITE_ROW)
        KV_CHECK(rc, db_error(ctx, d, r, "reading the CA key"));
    if (!sqlite3_column_text(st, 0) ||
        strcmp((const char *)sqlite3_column_text(st, 0), hash) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "CA record '%s' belongs to another CA key than '%s': refusing it", d->path,
                ca->name);
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    if (rc != KV_OK) {
        if (d->db)
            sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        db_close(d);
    }
    free(dir);
    return rc;
}

/* End the transaction: COMMIT, or ROLLBACK when rc is not KV_OK. */
static kv_rc db_finish(const kv_ctx *ctx, ca_db *d, kv_rc rc)
{
    if (!d->db)
        return rc;
    if (rc == KV_OK)
        rc = db_exec(ctx, d, "COMMIT", "committing");
    if (rc != KV_OK)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    db_close(d);
    return rc;
}

/* End a call that hands out what it recorded: commit (or roll back on
 * failure), and only then the PEM written to b; b is freed. */
static kv_rc commit_then_pem(const kv_ctx *ctx, ca_db *d, kv_rc rc, BIO *b, char **pem)
{
    rc = db_finish(ctx, d, rc);
    if (rc == KV_OK && !(*pem = kv_bio_text(b, NULL)))
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    BIO_free(b);
    return rc;
}

/* A serial number as hex, the way `openssl x509 -serial` prints it. */
static kv_rc serial_hex(const kv_ctx *ctx, const ASN1_INTEGER *s, char **out)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(s, NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;

    BN_free(bn);
    *out = h ? kv_strdup(h) : NULL;
    OPENSSL_free(h);
    return *out ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

static time_t asn1_epoch(const ASN1_TIME *t)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return (time_t)-1;
    return timegm(&tm);
}

/* ---- what a request asks for --------------------------------------------------- */

char *kv_x509_san_text(const GENERAL_NAME *g)
{
    const ASN1_IA5STRING *s = NULL;
    const char *prefix = NULL;
    char ip[INET6_ADDRSTRLEN];

    switch (g->type) {
    case GEN_DNS: s = g->d.dNSName; prefix = "dns"; break;
    case GEN_URI: s = g->d.uniformResourceIdentifier; prefix = "uri"; break;
    case GEN_EMAIL: s = g->d.rfc822Name; prefix = "email"; break;
    case GEN_IPADD:
        if (g->d.iPAddress->length == 4 &&
            inet_ntop(AF_INET, g->d.iPAddress->data, ip, sizeof(ip)))
            return kv_asprintf("ip:%s", ip);
        if (g->d.iPAddress->length == 16 &&
            inet_ntop(AF_INET6, g->d.iPAddress->data, ip, sizeof(ip)))
            return kv_asprintf("ip:%s", ip);
        return NULL;
    default:
        return NULL;
    }
    if (!s || s->length <= 0 || memchr(s->data, 0, (size_t)s->length))
        return NULL;
    return kv_asprintf("%s:%.*s", prefix, s->length, (const char *)s->data);
}

/* Whether the profile allows a SAN of g's kind; `where` names the
 * source in messages. */
static kv_rc san_kind_ok(const kv_ctx *ctx, const ca_profile *p, const GENERAL_NAME *g,
                         const char *where)
{
    if (!(p->sans & (1u << g->type)))
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "profile %s does not allow a subject alternative name of kind %s "
                        "(%s)", p->name, san_kind_name(g->type), where);
    return KV_OK;
}

/* A requested SAN parsed again from its text and added, when the profile
 * allows its kind. */
static kv_rc san_add(const kv_ctx *ctx, const ca_profile *p, GENERAL_NAMES *out,
                     const GENERAL_NAME *g, const char *text, const char *where)
{
    GENERAL_NAME *copy = NULL;
    kv_rc rc;

    KV_CHECK(rc, san_kind_ok(ctx, p, g, where));
    if (!text)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "%s: a subject alternative name of kind %s is malformed", where,
                        san_kind_name(g->type));
    KV_CHECK(rc, kv_x509_san_parse(ctx, text, &copy));
    if (!sk_GENERAL_NAME_push(out, copy)) {
        GENERAL_NAME_free(copy);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
out:
    return rc;
}

static kv_rc eku_granted(const kv_ctx *ctx, const ca_profile *p, const ASN1_OBJECT *o)
{
    char txt[80];

    for (size_t i = 0; p->eku && p->eku[i]; i++) {
        ASN1_OBJECT *g = OBJ_txt2obj(p->eku[i], 1);
        int same = g && OBJ_cmp(g, o) == 0;
        ASN1_OBJECT_free(g);
        if (same)
            return KV_OK;
    }
    if (OBJ_obj2nid(o) != NID_undef)
        snprintf(txt, sizeof(txt), "%s", OBJ_nid2sn(OBJ_obj2nid(o)));
    else
        OBJ_obj2txt(txt, sizeof(txt), o, 1);
    return kv_error(ctx, KV_ERR_BAD_INPUT,
                    "profile %s does not grant extended key usage %s, which the request "
                    "asks for", p->name, txt);
}

/* The request's extensions through the profile: SANs re-checked into
 * sans, the rest checked against what the profile grants, anything else
 * dropped. */
static kv_rc request_exts(const kv_ctx *ctx, const ca_profile *p, unsigned granted_ku,
                          X509_REQ *req, GENERAL_NAMES *sans)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    kv_rc rc = KV_OK;

    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
        void *v;

        if (nid != NID_subject_alt_name && nid != NID_basic_constraints &&
            nid != NID_key_usage && nid != NID_ext_key_usage)
            continue;   /* dropped: the profile decides */
        v = X509V3_EXT_d2i(e);
        if (!v)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "the request's %s extension is malformed",
                         OBJ_nid2ln(nid));
        if (nid == NID_subject_alt_name) {
            GENERAL_NAMES *gens = v;
            if (sk_GENERAL_NAME_num(gens) + sk_GENERAL_NAME_num(sans) > KV_X509_SANS_MAX)
                rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                              "the request asks for more than %d subject alternative names",
                              KV_X509_SANS_MAX);
            for (int j = 0; rc == KV_OK && j < sk_GENERAL_NAME_num(gens); j++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, j);
                char *t = kv_x509_san_text(g);
                rc = san_add(ctx, p, sans, g, t, "in the request");
                free(t);
            }
            GENERAL_NAMES_free(gens);
        } else if (nid == NID_basic_constraints) {
            BASIC_CONSTRAINTS *bc = v;
            if (bc->ca && !p->ca)
                rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                              "profile %s issues no CA certificates; the request asks for "
                              "CA:TRUE", p->name);
            else if (!bc->ca && p->ca)
                rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                              "profile %s issues CA certificates; the request asks for "
                              "CA:FALSE", p->name);
            BASIC_CONSTRAINTS_free(bc);
        } else if (nid == NID_key_usage) {
            ASN1_BIT_STRING *ku = v;
            for (int bit = 0; bit < 9 && rc == KV_OK; bit++)
                if (ASN1_BIT_STRING_get_bit(ku, bit) && !(granted_ku & (1u << bit)))
                    rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                                  "profile %s does not grant key usage %s, which the request "
                                  "asks for", p->name, ku_names[bit]);
            ASN1_BIT_STRING_free(ku);
        } else {
            EXTENDED_KEY_USAGE *eku = v;
            for (int j = 0; rc == KV_OK && j < sk_ASN1_OBJECT_num(eku); j++)
                rc = eku_granted(ctx, p, sk_ASN1_OBJECT_value(eku, j));
            EXTENDED_KEY_USAGE_free(eku);
        }
        if (rc != KV_OK)
            goto out;
    }
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/* The largest RSA key the CA certifies, as jose.c verifies: checking a
 * 16384-bit request cost a second (OpenSSL's public key check runs a
 * Miller-Rabin test on n), five for a prime n. */
#define CA_RSA_MAX_BITS 8192

/*
 * An RSA public key, by the cheap checks (as jose.c does): n odd, e odd and
 * above 1 (an exponent of 1 would let anyone sign for the key), e at most
 * 64 bits (a verify costs with the size of e). OpenSSL's
 * EVP_PKEY_public_check adds a primality test of n, whose cost the
 * requester chooses, and nothing a signature check needs.
 */
static kv_rc rsa_public_check(const kv_ctx *ctx, const EVP_PKEY *pub)
{
    BIGNUM *n = NULL, *e = NULL;
    kv_rc rc = KV_OK;

    if (EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
        EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "the subject's RSA key has no n or e");
    if (!BN_is_odd(n) || !BN_is_odd(e) || BN_is_one(e) || BN_num_bits(e) > 64)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the subject's RSA key fails the public key check: %s",
                !BN_is_odd(n) ? "n is even" : "e is even, 1 or over 64 bits");
out:
    BN_free(n);
    BN_free(e);
    return rc;
}

/* Key types the library knows: EC P-256/P-384, RSA 2048-8192, Ed25519. */
static kv_rc subject_key_check(const kv_ctx *ctx, const EVP_PKEY *pub)
{
    kv_family f = kv_family_of_pkey(pub);
    int bits = EVP_PKEY_get_bits(pub);
    EVP_PKEY_CTX *pctx;
    int valid;

    if (!(f == KV_FAMILY_RSA && bits >= 2048 && bits <= CA_RSA_MAX_BITS) &&
        f != KV_FAMILY_ED25519 &&
        !(f == KV_FAMILY_EC &&
          (kv_type_of_pkey(pub) == KV_KEY_EC_P256 || kv_type_of_pkey(pub) == KV_KEY_EC_P384)))
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE,
                        "the subject's key (%s, %d bits) is not one the CA certifies: EC "
                        "P-256 or P-384, RSA of 2048 to 8192 bits, Ed25519",
                        f == KV_FAMILY_RSA ? "RSA" : f == KV_FAMILY_EC ? "EC" : "other type",
                        bits);
    /* RFC 5480: a named curve; verifiers refuse explicit parameters */
    if (f == KV_FAMILY_EC && !kv_pkey_named_curve(pub))
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE,
                        "the subject's EC key spells out its curve parameters; the CA "
                        "certifies keys on named curves only (RFC 5480)");
    if (f == KV_FAMILY_RSA)
        return rsa_public_check(ctx, pub);
    /* the key itself: a point off the curve is no key at all */
    pctx = EVP_PKEY_CTX_new_from_pkey(ctx->libctx, (EVP_PKEY *)pub, NULL);
    valid = pctx ? EVP_PKEY_public_check(pctx) : -1;
    EVP_PKEY_CTX_free(pctx);
    if (valid != 1)
        return kv_error_ossl(ctx, KV_ERR_BAD_INPUT,
                             "the subject's public key fails OpenSSL's public key check");
    return KV_OK;
}

/* A certificate names its subject, or (not a CA) at least has a SAN: a
 * CA's subject is the issuer name of all it signs (RFC 5280 4.1.2.6). */
static kv_rc subject_present(const kv_ctx *ctx, const ca_profile *p, const X509_NAME *subject,
                             const GENERAL_NAMES *sans)
{
    if (X509_NAME_entry_count(subject) > 0)
        return KV_OK;
    if (p->ca)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "profile %s: a CA certificate needs a subject, the issuer name of all "
                        "it signs (RFC 5280 4.1.2.6)", p->name);
    if (sk_GENERAL_NAME_num(sans) == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "profile %s: a certificate needs a subject or a subject alternative "
                        "name", p->name);
    return KV_OK;
}

/* A request, PEM or DER, decoded and its signature checked. */
static kv_rc request_decode(const kv_ctx *ctx, const unsigned char *in, size_t len,
                            X509_REQ **out)
{
    X509_REQ *req = NULL;
    EVP_PKEY *pub;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (len == 0 || len > CA_MAX_INPUT)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "a certificate request of %zu bytes: expected "
                        "1 to %d", len, CA_MAX_INPUT);
    if (len > 11 && !memcmp(in, "-----BEGIN ", 11)) {
        BIO *bio = BIO_new_mem_buf(in, (int)len);
        req = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    } else {
        const unsigned char *p = in;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (req && p != in + len) {
            X509_REQ_free(req);
            req = NULL;
        }
    }
    if (!req)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT,
                     "not a PKCS#10 certificate request (PEM or DER)");
    pub = X509_REQ_get0_pubkey(req);
    if (!pub)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "the request's public key cannot be decoded");
    /* the key's type and size first: they bound what the signature check costs */
    KV_CHECK(rc, subject_key_check(ctx, pub));
    if (X509_REQ_verify_ex(req, pub, ctx->libctx, NULL) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                     "the request's signature does not verify with its public key");
    *out = req;
    req = NULL;
out:
    X509_REQ_free(req);
    return rc;
}

/* The request's subject parsed again through the RFC 4514 rules. */
static kv_rc subject_from(const kv_ctx *ctx, const X509_NAME *in, X509_NAME **out)
{
    char *text = NULL;
    kv_rc rc;

    *out = NULL;
    KV_CHECK(rc, kv_x509_name_text(ctx, in, &text));
    if (strlen(text) > KV_X509_NAME_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the request's subject is longer than %d characters",
                KV_X509_NAME_MAX);
    KV_CHECK(rc, kv_x509_name_parse(ctx, text, out));
out:
    free(text);
    return rc;
}

/* The TCG directoryName: one RDN of manufacturer, model and version,
 * UTF8String values (TCG EK Credential Profile 3.2.9). */
static kv_rc tpm_san(const kv_ctx *ctx, const kv_cert_opts *o, GENERAL_NAMES *sans)
{
    static const char *const oids[] = { "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3" };
    const char *vals[] = { o->tpm_manufacturer, o->tpm_model, o->tpm_version };
    GENERAL_NAME *g = GENERAL_NAME_new();
    X509_NAME *n = X509_NAME_new();
    kv_rc rc = KV_OK;

    if (!g || !n)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < 3; i++) {
        ASN1_OBJECT *obj = OBJ_txt2obj(oids[i], 1);
        int ok = obj && X509_NAME_add_entry_by_OBJ(n, obj, V_ASN1_UTF8STRING,
                                                   (const unsigned char *)vals[i], -1, -1,
                                                   i == 0 ? 0 : -1) == 1;
        ASN1_OBJECT_free(obj);
        if (!ok)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "cannot encode the TPM's directoryName");
    }
    GENERAL_NAME_set0_value(g, GEN_DIRNAME, n);
    n = NULL;
    if (!sk_GENERAL_NAME_push(sans, g))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    g = NULL;
out:
    X509_NAME_free(n);
    GENERAL_NAME_free(g);
    return rc;
}

/* ---- issuing ------------------------------------------------------------------ */

static kv_rc pem_append(const kv_ctx *ctx, BIO *b, X509 *x)
{
    return PEM_write_bio_X509(b, x) == 1
               ? KV_OK
               : kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot encode a certificate as PEM");
}

/* The path length an issued sub-CA gets, within the CA's own. */
static kv_rc sub_ca_path_len(const kv_ctx *ctx, const kv_key *ca, X509 *cacert,
                             const kv_cert_opts *o, long *out)
{
    long have = X509_get_pathlen(cacert);   /* -1: no constraint */
    long want = (o->flags & KV_CERT_PATH_LEN) ? (long)o->path_len : 0;

    if (have == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "CA '%s' has path length 0 (pathLenConstraint): it cannot issue a "
                        "sub-CA", ca->name);
    if (have > 0 && want >= have)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "a sub-CA path length of %ld: CA '%s' allows less than %ld", want,
                        ca->name, have);
    *out = want;
    return KV_OK;
}

/*
 * Issue a certificate for pub with subject and sans (filtered already)
 * under profile p: build, record and sign in one transaction, and hand out
 * the PEM chain. Valid until lifetime seconds from now, when it is not 0,
 * else for o->days or the profile's days.
 */
static kv_rc issue(kv_key *ca, X509 *cacert, const STACK_OF(X509) *cachain,
                   const ca_profile *p, const kv_cert_opts *o, int64_t lifetime,
                   const kv_alg_desc *alg, EVP_PKEY *pub, const X509_NAME *subject, GENERAL_NAMES *sans, char **pem)
{
    kv_ctx *ctx = ca->ctx;
    kv_family fam = kv_family_of_pkey(pub);
    const char *const *eku = p->eku;
    /* an empty subject makes the SAN critical (RFC 5280 4.2.1.6) */
    kv_x509_ext_spec spec = { p->ca ? 1 : 0, -1, p->ku, eku, sans,
                              p->tpm || X509_NAME_entry_count(subject) == 0 };
    STACK_OF(X509_EXTENSION) *exts = NULL;
    X509 *x = X509_new_ex(ctx->libctx, NULL);
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *limit = NULL;
    sqlite3_stmt *st = NULL;
    char *subj_text = NULL, *hex = NULL, hash[65];
    unsigned days = o->days ? o->days : p->days;
    time_t now = time(NULL), nb = now - 60,
           na = now + (lifetime > 0 ? (time_t)lifetime : (time_t)days * 86400);
    ca_db d = { 0 };
    BIO *b = NULL;
    kv_rc rc = KV_OK;
    int r;

    *pem = NULL;
    if (!x)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (fam == KV_FAMILY_RSA)
        spec.key_usage |= p->ku_rsa;
    if (fam == KV_FAMILY_EC)
        spec.key_usage |= p->ku_ec;
    if (p->ca)
        KV_CHECK(rc, sub_ca_path_len(ctx, ca, cacert, o, &spec.path_len));
    if (p->sans_required) {
        bool have = false;
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++)
            have |= (p->sans_required & (1u << sk_GENERAL_NAME_value(sans, i)->type)) != 0;
        if (!have)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "profile %s needs at least one dns or ip subject alternative name",
                    p->name);
    }
    /* never past the CA's own not-after */
    limit = ASN1_TIME_set(NULL, na);
    if (!limit)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (ASN1_TIME_compare(limit, X509_get0_notAfter(cacert)) > 0) {
        time_t ca_na = asn1_epoch(X509_get0_notAfter(cacert));
        if (ca_na == (time_t)-1)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "the not-after of CA '%s' cannot be read",
                    ca->name);
        na = ca_na;
    }
    /* nor before its not-before (a CA made less than a minute ago) */
    {
        time_t ca_nb = asn1_epoch(X509_get0_notBefore(cacert));
        if (ca_nb != (time_t)-1 && ca_nb > nb)
            nb = ca_nb;
    }
    if (X509_set_version(x, X509_VERSION_3) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(cacert)) != 1 ||
        X509_set_subject_name(x, (X509_NAME *)subject) != 1 || X509_set_pubkey(x, pub) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot fill in the certificate");
    KV_CHECK(rc, kv_x509_set_validity(ctx, x, nb, na));
    KV_CHECK(rc, kv_x509_exts_build(ctx, &spec, &exts));
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
        if (X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add an extension");
    KV_CHECK(rc, kv_x509_add_key_ids(ctx, x, cacert));
    KV_CHECK(rc, kv_x509_name_text(ctx, subject, &subj_text));
    KV_CHECK(rc, spki_sha256(ctx, pub, hash));

    KV_CHECK(rc, db_open(ca, &d));
    KV_CHECK(rc, db_prepare(ctx, &d,
                            "INSERT INTO issued (serial, subject, spki_sha256, not_before, "
                            "not_after, profile, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            &st));
    for (int tries = 0;; tries++) {
        ASN1_INTEGER_free(serial);
        serial = NULL;
        free(hex);
        hex = NULL;
        KV_CHECK(rc, kv_x509_serial_random(ctx, &serial));
        KV_CHECK(rc, serial_hex(ctx, serial, &hex));
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, subj_text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)nb);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)na);
        sqlite3_bind_text(st, 6, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)now);
        r = sqlite3_step(st);
        if (r == SQLITE_DONE)
            break;
        if (sqlite3_extended_errcode(d.db) != SQLITE_CONSTRAINT_UNIQUE)
            KV_CHECK(rc, db_error(ctx, &d, r, "recording the certificate"));
        /* a serial issued before: draw again; 127 random bits colliding
         * again and again means a broken generator or a forged record */
        if (tries == CA_SERIAL_TRIES)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "%d random serial numbers in a row are already in CA record '%s'",
                    CA_SERIAL_TRIES + 1, d.path);
    }
    if (X509_set_serialNumber(x, serial) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot set the serial number");
    KV_CHECK(rc, kv_x509_sign(ca, KV_OP_ISSUE, alg->alg, KV_X509_CERT, x));
    b = BIO_new(BIO_s_mem());
    if (!b)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, pem_append(ctx, b, x));
    /* then the CA's own chain, without a self-signed root */
    for (int i = 0; i < sk_X509_num(cachain); i++)
        if (!(X509_get_extension_flags(sk_X509_value(cachain, i)) & EXFLAG_SS))
            KV_CHECK(rc, pem_append(ctx, b, sk_X509_value(cachain, i)));
out:
    sqlite3_finalize(st);
    /* recorded (committed) first, handed out after */
    rc = commit_then_pem(ctx, &d, rc, b, pem);
    free(hex);
    free(subj_text);
    ASN1_TIME_free(limit);
    ASN1_INTEGER_free(serial);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_free(x);
    return rc;
}

kv_rc kv_ca_issue(kv_key *ca, const char *profile, const unsigned char *csr, size_t csrlen,
                  const kv_cert_opts *opts, char **pem)
{
    KV_CALL_BEGIN(ca->ctx);
    return kv_ca_issue_for(ca, profile, csr, csrlen, opts, 0, pem);
}

kv_rc kv_ca_issue_for(kv_key *ca, const char *profile, const unsigned char *csr, size_t csrlen,
                      const kv_cert_opts *opts, int64_t lifetime, char **pem)
{
    kv_ctx *ctx = ca->ctx;
    const ca_profile *p = NULL;
    kv_cert_opts o;
    kv_x509_opts xo;
    X509 *cacert = NULL;
    STACK_OF(X509) *cachain = NULL;
    X509_REQ *req = NULL;
    X509_NAME *subject = NULL;
    GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
    EVP_PKEY *pub;
    unsigned granted;
    kv_rc rc;

    *pem = NULL;
    memset(&xo, 0, sizeof(xo));
    if (!sans)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, profile_get(ctx, profile, &p));
    KV_CHECK(rc, ca_cert(ca, KU_KEY_CERT_SIGN, &cacert, &cachain));
    KV_CHECK(rc, request_decode(ctx, csr, csrlen, &req));
    pub = X509_REQ_get0_pubkey(req);
    KV_CHECK(rc, ca_opts(ca, p, pub, opts, true, &o, &xo));
    granted = p->ku;
    if (kv_family_of_pkey(pub) == KV_FAMILY_RSA)
        granted |= p->ku_rsa;
    if (kv_family_of_pkey(pub) == KV_FAMILY_EC)
        granted |= p->ku_ec;
    KV_CHECK(rc, request_exts(ctx, p, granted, req, sans));
    if (p->tpm) {
        if (!(subject = X509_NAME_new()))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        KV_CHECK(rc, tpm_san(ctx, &o, sans));
    } else {
        KV_CHECK(rc, subject_from(ctx, X509_REQ_get_subject_name(req), &subject));
        KV_CHECK(rc, subject_present(ctx, p, subject, sans));
    }
    rc = issue(ca, cacert, cachain, p, &o, lifetime, xo.alg, pub, subject, sans, pem);
out:
    kv_audit_event(ctx, KV_AUDIT_ISSUE, ca->name, ca->version, ca->be->name, rc, "certificate");
    kv_x509_opts_clear(&xo);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    X509_free(cacert);
    sk_X509_pop_free(cachain, X509_free);
    return rc;
}

kv_rc kv_ca_issue_pubkey(kv_key *ca, const char *profile, const unsigned char *pub,
                         size_t publen, const kv_cert_opts *opts, char **pem)
{
    kv_ctx *ctx = ca->ctx;
    const ca_profile *p = NULL;
    kv_cert_opts o;
    kv_x509_opts xo;
    X509 *cacert = NULL;
    STACK_OF(X509) *cachain = NULL;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = NULL;
    GENERAL_NAMES *sans = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *pem = NULL;
    memset(&xo, 0, sizeof(xo));
    KV_CHECK(rc, profile_get(ctx, profile, &p));
    KV_CHECK(rc, ca_cert(ca, KU_KEY_CERT_SIGN, &cacert, &cachain));
    if (publen == 0 || publen > CA_MAX_INPUT)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "a public key of %zu bytes: expected 1 to %d",
                publen, CA_MAX_INPUT);
    KV_CHECK(rc, kv_pubkey_decode(ctx, pub, publen, &key));
    KV_CHECK(rc, subject_key_check(ctx, key));
    KV_CHECK(rc, ca_opts(ca, p, key, opts, false, &o, &xo));
    /* the SANs of opts, parsed by the reader, of the kinds the profile allows */
    sans = xo.spec.san;
    xo.spec.san = NULL;
    if (!sans && !(sans = sk_GENERAL_NAME_new_null()))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        char where[32];
        snprintf(where, sizeof(where), "SAN %d of opts", i + 1);
        KV_CHECK(rc, san_kind_ok(ctx, p, sk_GENERAL_NAME_value(sans, i), where));
    }
    if (p->tpm)
        KV_CHECK(rc, tpm_san(ctx, &o, sans));
    subject = xo.subject ? xo.subject : X509_NAME_new();
    xo.subject = NULL;
    if (!subject)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!p->tpm)
        KV_CHECK(rc, subject_present(ctx, p, subject, sans));
    rc = issue(ca, cacert, cachain, p, &o, 0, xo.alg, key, subject, sans, pem);
out:
    kv_audit_event(ctx, KV_AUDIT_ISSUE, ca->name, ca->version, ca->be->name, rc, "certificate for a public key");
    kv_x509_opts_clear(&xo);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subject);
    EVP_PKEY_free(key);
    X509_free(cacert);
    sk_X509_pop_free(cachain, X509_free);
    return rc;
}

/* ---- revocation ------------------------------------------------------------------ */

static const char *reason_name(int r)
{
    switch (r) {
    case KV_REVOKE_UNSPECIFIED: return "unspecified";
    case KV_REVOKE_KEY_COMPROMISE: return "keyCompromise";
    case KV_REVOKE_CA_COMPROMISE: return "cACompromise";
    case KV_REVOKE_AFFILIATION_CHANGED: return "affiliationChanged";
    case KV_REVOKE_SUPERSEDED: return "superseded";
    case KV_REVOKE_CESSATION_OF_OPERATION: return "cessationOfOperation";
    case KV_REVOKE_PRIVILEGE_WITHDRAWN: return "privilegeWithdrawn";
    default: return NULL;
    }
}

/* Hex text -> the canonical form serial_hex writes; NULL when not hex. */
static char *serial_canon(const char *in)
{
    BIGNUM *bn = NULL;
    char *h = NULL, *s = NULL;
    size_t n = strlen(in);

    if (n == 0 || n > 40 || strspn(in, "0123456789abcdefABCDEF") != n)
        return NULL;
    if (BN_hex2bn(&bn, in) == (int)n && !BN_is_zero(bn) && (h = BN_bn2hex(bn)))
        s = kv_strdup(h);
    OPENSSL_free(h);
    BN_free(bn);
    return s;
}

kv_rc kv_ca_revoke(kv_key *ca, const char *serial_hex_in, kv_revoke_reason reason)
{
    kv_ctx *ctx = ca->ctx;
    char *serial = NULL;
    sqlite3_stmt *st = NULL;
    ca_db d = { 0 };
    int r;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    if (!reason_name((int)reason))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown revocation reason %d", (int)reason);
    serial = serial_canon(serial_hex_in);
    if (!serial)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "a serial number is 1 to 40 hex digits, not zero");
    KV_CHECK(rc, db_open(ca, &d));
    KV_CHECK(rc, db_prepare(ctx, &d, "SELECT revoked_at, reason FROM issued WHERE serial = ?1",
                            &st));
    sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND,
                "CA '%s' has issued no certificate with serial %s", ca->name, serial);
    if (r != SQLITE_ROW)
        KV_CHECK(rc, db_error(ctx, &d, r, "looking up the serial"));
    if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
        char *when = epoch_text((time_t)sqlite3_column_int64(st, 0));
        const char *why = reason_name(sqlite3_column_int(st, 1));
        rc = kv_error(ctx, KV_ERR_BAD_INPUT,
                      "certificate %s of CA '%s' was already revoked at %s (%s)", serial,
                      ca->name, when ? when : "?", why ? why : "unknown reason");
        free(when);
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    KV_CHECK(rc, db_prepare(ctx, &d,
                            "UPDATE issued SET revoked_at = ?1, reason = ?2 WHERE serial = ?3",
                            &st));
    sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
    sqlite3_bind_int(st, 2, (int)reason);
    sqlite3_bind_text(st, 3, serial, -1, SQLITE_STATIC);
    if ((r = sqlite3_step(st)) != SQLITE_DONE)
        KV_CHECK(rc, db_error(ctx, &d, r, "recording the revocation"));
out:
    sqlite3_finalize(st);
    rc = db_finish(ctx, &d, rc);
    kv_audit_event(ctx, KV_AUDIT_ISSUE, ca->name, ca->version, ca->be->name, rc, "revocation");
    free(serial);
    return rc;
}

/* One revoked entry: serial, date, and the reasonCode unless unspecified. */
static kv_rc crl_entry(const kv_ctx *ctx, X509_CRL *crl, const char *hex, time_t when,
                       int reason)
{
    X509_REVOKED *rev = X509_REVOKED_new();
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *t = ASN1_TIME_set(NULL, when);
    ASN1_ENUMERATED *code = NULL;
    kv_rc rc = KV_OK;

    if (!rev || !t || !BN_hex2bn(&bn, hex) || !(serial = BN_to_ASN1_INTEGER(bn, NULL)) ||
        X509_REVOKED_set_serialNumber(rev, serial) != 1 ||
        X509_REVOKED_set_revocationDate(rev, t) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "cannot list serial %s in the CRL", hex);
    if (reason != KV_REVOKE_UNSPECIFIED &&
        (!(code = ASN1_ENUMERATED_new()) || ASN1_ENUMERATED_set(code, reason) != 1 ||
         X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, code, 0, 0) != 1))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add the reason of serial %s", hex);
    if (X509_CRL_add0_revoked(crl, rev) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rev = NULL;
out:
    X509_REVOKED_free(rev);
    ASN1_ENUMERATED_free(code);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(t);
    BN_free(bn);
    return rc;
}

kv_rc kv_ca_crl(kv_key *ca, unsigned days, char **pem)
{
    kv_ctx *ctx = ca->ctx;
    X509 *cacert = NULL;
    X509_CRL *crl = NULL, *signed_crl = NULL;
    ASN1_TIME *this_update = NULL, *next_update = NULL;
    ASN1_INTEGER *number = NULL;
    AUTHORITY_KEYID *akid = NULL;
    sqlite3_stmt *st = NULL;
    ca_db d = { 0 };
    sqlite3_int64 n = 0;
    time_t now = time(NULL);
    BIO *b = NULL;
    int r;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *pem = NULL;
    if (days == 0)
        days = 7;
    if (days > KV_X509_DAYS_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "a CRL valid for %u days: at most %d", days,
                        KV_X509_DAYS_MAX);
    KV_CHECK(rc, ca_cert(ca, KU_CRL_SIGN, &cacert, NULL));
    crl = X509_CRL_new_ex(ctx->libctx, NULL);
    this_update = ASN1_TIME_set(NULL, now);
    /* a CRL says nothing past its issuer's not-after */
    {
        time_t until = now + (time_t)days * 86400, ca_na = asn1_epoch(X509_get0_notAfter(cacert));
        if (ca_na != (time_t)-1 && ca_na < until)
            until = ca_na;
        next_update = ASN1_TIME_set(NULL, until);
    }
    akid = AUTHORITY_KEYID_new();
    number = ASN1_INTEGER_new();
    if (!crl || !this_update || !next_update || !akid || !number)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_x509_issuer_key_id(ctx, cacert, &akid->keyid));
    if (X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(cacert)) != 1 ||
        X509_CRL_set1_lastUpdate(crl, this_update) != 1 ||
        X509_CRL_set1_nextUpdate(crl, next_update) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot fill in the CRL");

    KV_CHECK(rc, db_open(ca, &d));
    KV_CHECK(rc, db_exec(ctx, &d,
                         "UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                         "WHERE key = 'crl_number'", "counting CRLs"));
    KV_CHECK(rc, db_prepare(ctx, &d, "SELECT CAST(value AS INTEGER) FROM meta "
                                     "WHERE key = 'crl_number'", &st));
    if ((r = sqlite3_step(st)) != SQLITE_ROW)
        KV_CHECK(rc, db_error(ctx, &d, r, "reading the CRL number"));
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (n <= 0 || ASN1_INTEGER_set_int64(number, n) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_authority_key_identifier, akid, 0, 0) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add the CRL's extensions");
    KV_CHECK(rc, db_prepare(ctx, &d, "SELECT serial, revoked_at, reason FROM issued "
                                     "WHERE revoked_at IS NOT NULL ORDER BY serial", &st));
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 0);
        if (!hex)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "CA record '%s' holds an empty serial", d.path);
        if (!reason_name(sqlite3_column_int(st, 2)))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "CA record '%s' holds a revocation with an unknown reason code", d.path);
        KV_CHECK(rc, crl_entry(ctx, crl, hex, (time_t)sqlite3_column_int64(st, 1),
                               sqlite3_column_int(st, 2)));
    }
    if (r != SQLITE_DONE)
        KV_CHECK(rc, db_error(ctx, &d, r, "listing revoked certificates"));
    if (X509_CRL_sort(crl) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot sort the CRL");
    KV_CHECK(rc, kv_x509_sign_crl(ca, KV_OP_ISSUE, KV_ALG_DEFAULT, crl, &signed_crl));
    b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_X509_CRL(b, signed_crl) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the CRL as PEM");
out:
    sqlite3_finalize(st);
    /* the CRL number counted (committed) first, the CRL handed out after */
    rc = commit_then_pem(ctx, &d, rc, b, pem);
    kv_audit_event(ctx, KV_AUDIT_ISSUE, ca->name, ca->version, ca->be->name, rc, "crl");
    AUTHORITY_KEYID_free(akid);
    ASN1_INTEGER_free(number);
    ASN1_TIME_free(this_update);
    ASN1_TIME_free(next_update);
    X509_CRL_free(signed_crl);
    X509_CRL_free(crl);
    X509_free(cacert);
    return rc;
}
