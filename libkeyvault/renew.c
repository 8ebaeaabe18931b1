/*
 * renew.c - renewing the certificate stored with a key through the vault
 * CA (kv_cert_renew).
 *
 * What the new certificate says comes from the old one: its subject, its
 * subject alternative names and its extended key usages go into a request
 * signed by the key (or by its next version, KV_RENEW_ROTATE), the CA
 * issues it under the profile asked for or the one the old certificate's
 * usages name, and the issued certificate is checked to keep them before it
 * replaces the old chain. Every step before that replacement leaves the old
 * chain as it was; so does a failed replacement (kv_key_store_chain stores
 * all or nothing), and with KV_RENEW_ROTATE the new chain goes to a new
 * key version that becomes current only once it holds it. A failure's message ends with when the old certificate
 * expires, the one fact an operator needs to judge the hurry.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define NOT_BEFORE_SLACK 60   /* seconds every certificate of the library starts early */
#define EKU_AK "2.23.133.8.3" /* tcg-kp-AIKCertificate */

/* What the request for the new certificate asks for, taken from the old. */
typedef struct renew_req {
    char *subject;                              /* RFC 4514; NULL: empty */
    char *sans[KV_X509_SANS_MAX + 1];           /* NULL-terminated */
    char *ekus[KV_X509_EKU_MAX + 1];            /* dotted OIDs, NULL-terminated */
    size_t nsans, nekus;
    bool ca;
    long path_len;                              /* -1: none */
} renew_req;

static void req_clear(renew_req *r)
{
    free(r->subject);
    for (size_t i = 0; i < r->nsans; i++)
        free(r->sans[i]);
    for (size_t i = 0; i < r->nekus; i++)
        free(r->ekus[i]);
    memset(r, 0, sizeof(*r));
}

/* The caller's opts, the fields its size covers (fields are only appended). */
static kv_rc opts_read(const kv_ctx *ctx, const char *name, const kv_renew_opts *in,
                       kv_renew_opts *out)
{
    static const kv_renew_opts none = KV_RENEW_OPTS_INIT;

    *out = none;
    if (!in)
        return KV_OK;
    if (in->size < offsetof(kv_renew_opts, flags) + sizeof(in->flags))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "kv_renew_opts of %zu bytes: initialise it with KV_RENEW_OPTS_INIT",
                        in->size);
    memcpy(out, in, in->size < sizeof(*out) ? in->size : sizeof(*out));
    out->size = sizeof(*out);
    if (out->flags & ~(KV_RENEW_FORCE | KV_RENEW_ROTATE))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_renew_opts: unknown flags 0x%x",
                        out->flags & ~(KV_RENEW_FORCE | KV_RENEW_ROTATE));
    if (out->lifetime < 0 || out->lifetime > (int64_t)KV_X509_DAYS_MAX * 86400)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "kv_renew_opts: a lifetime of %lld seconds; expected 1 to %lld, or 0 "
                        "for the old certificate's", (long long)out->lifetime,
                        (long long)KV_X509_DAYS_MAX * 86400);
    if ((out->flags & KV_RENEW_ROTATE) && !kv_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "KV_RENEW_ROTATE takes a key name (not shown: it may hold a secret), "
                        "not a URI or NAME@VERSION: 1-64 of A-Z a-z 0-9 . _ -");
    if (!(out->flags & KV_RENEW_ROTATE) && out->rotate)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "kv_renew_opts: rotate options without KV_RENEW_ROTATE");
    return KV_OK;
}

static bool epoch_of(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

static void utc_text(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
}

/* The old certificate's extended key usages as dotted OIDs, and whether it
 * is a CA with which path length. */
static kv_rc req_usages(const kv_ctx *ctx, const char *name, X509 *old, renew_req *r)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(old, NID_ext_key_usage, NULL, NULL);
    kv_rc rc = KV_OK;

    r->ca = (X509_get_extension_flags(old) & EXFLAG_CA) != 0;
    r->path_len = r->ca ? X509_get_pathlen(old) : -1;
    if (sk_ASN1_OBJECT_num(eku) > KV_X509_EKU_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the certificate of '%s' has more than %d extended key usages", name,
                KV_X509_EKU_MAX);
    for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
        char oid[80];
        int n = OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(eku, i), 1);
        if (n <= 0 || (size_t)n >= sizeof(oid))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "the certificate of '%s' has an extended key usage that cannot be read",
                    name);
        if (!(r->ekus[r->nekus] = kv_strdup(oid)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        r->nekus++;
    }
out:
    EXTENDED_KEY_USAGE_free(eku);
    kv_ossl_drop();
    return rc;
}

/* The old certificate's subject alternative names as kv_x509_san_parse's
 * text: a kind a request cannot carry is refused, not dropped. */
static kv_rc req_sans(const kv_ctx *ctx, const char *name, X509 *old, renew_req *r)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(old, NID_subject_alt_name, NULL, NULL);
    kv_rc rc = KV_OK;

    if (sk_GENERAL_NAME_num(gens) > KV_X509_SANS_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the certificate of '%s' has more than %d subject alternative names", name,
                KV_X509_SANS_MAX);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (!(r->sans[r->nsans] = kv_x509_san_text(g)))
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                    "the certificate of '%s' has a subject alternative name (number %d) a "
                    "renewal cannot ask for again: only dns, ip, uri and email names are "
                    "renewed (a TPM attestation key's certificate is renewed by enrollment)",
                    name, i + 1);
        r->nsans++;
    }
out:
    GENERAL_NAMES_free(gens);
    kv_ossl_drop();
    return rc;
}

static bool has_eku(const renew_req *r, const char *oid)
{
    for (size_t i = 0; i < r->nekus; i++)
        if (strcmp(r->ekus[i], oid) == 0)
            return true;
    return false;
}

/* The profile the old certificate's usages name. */
static kv_rc req_profile(const kv_ctx *ctx, const char *name, const renew_req *r,
                         const char **out)
{
    bool server = has_eku(r, "1.3.6.1.5.5.7.3.1"), client = has_eku(r, "1.3.6.1.5.5.7.3.2");

    if (has_eku(r, EKU_AK))
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "the certificate of '%s' is a TPM attestation key's (tpm-ak): it is "
                        "renewed by enrollment, which proves the key is in the TPM", name);
    *out = r->ca ? "sub-ca"
           : server && client ? "device-identity"
           : server ? "tls-server"
           : client ? "tls-client"
                    : NULL;
    if (!*out)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "the certificate of '%s' names no usage a profile follows from "
                        "(serverAuth, clientAuth or CA:TRUE): name the profile", name);
    return KV_OK;
}

/* Everything the request asks for, from the old certificate. */
static kv_rc req_from(const kv_ctx *ctx, const char *name, X509 *old, renew_req *r)
{
    kv_rc rc;

    memset(r, 0, sizeof(*r));
    KV_CHECK(rc, kv_x509_name_text(ctx, X509_get_subject_name(old), &r->subject));
    if (!*r->subject) {
        free(r->subject);
        r->subject = NULL;
    }
    KV_CHECK(rc, req_sans(ctx, name, old, r));
    rc = req_usages(ctx, name, old, r);
out:
    return rc;
}

/* The issued certificate (first of pem) keeps the old one's subject,
 * subject alternative names (as a set) and every extended key usage. */
static kv_rc kept_check(const kv_ctx *ctx, const char *name, const renew_req *want,
                        const char *pem, const char *profile)
{
    STACK_OF(X509) *chain = NULL;
    renew_req got;
    kv_rc rc;

    memset(&got, 0, sizeof(got));
    KV_CHECK(rc, kv_chain_parse(ctx, "the issued chain", KV_ERR_CORRUPT,
                                (const unsigned char *)pem, strlen(pem), &chain));
    KV_CHECK(rc, req_from(ctx, name, sk_X509_value(chain, 0), &got));
    if ((want->subject || got.subject) &&
        (!want->subject || !got.subject || strcmp(want->subject, got.subject) != 0))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the CA issued a certificate for '%s' with another subject than the old one",
                name);
    if (got.nsans != want->nsans)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the CA issued a certificate for '%s' with %zu subject alternative names; "
                "the old one has %zu", name, got.nsans, want->nsans);
    for (size_t i = 0; i < want->nsans; i++) {
        bool found = false;
        for (size_t j = 0; j < got.nsans && !found; j++)
            found = strcmp(want->sans[i], got.sans[j]) == 0;
        if (!found)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "the CA left out subject alternative name %zu of the old certificate "
                    "of '%s'", i + 1, name);
    }
    for (size_t i = 0; i < want->nekus; i++)
        if (!has_eku(&got, want->ekus[i]))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "profile %s does not keep extended key usage %s of the old certificate "
                    "of '%s'", profile, want->ekus[i], name);
out:
    req_clear(&got);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* When renewal of old is due: not_before plus [x509] renew_threshold of
 * its lifetime (2/3 when not set), as kv_key_cert_info says. */
static kv_rc due_time(const kv_ctx *ctx, const char *name, X509 *old, int64_t *not_before,
                      int64_t *not_after, int64_t *renew_after)
{
    int64_t life;
    long pct;
    kv_rc rc;

    KV_CHECK(rc, kv_renew_threshold(ctx, ctx->cfg, &pct));
    if (!epoch_of(X509_get0_notBefore(old), not_before) ||
        !epoch_of(X509_get0_notAfter(old), not_after))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': the certificate's validity cannot be read",
                name);
    life = *not_after > *not_before ? *not_after - *not_before : 0;
    *renew_after = *not_before + (pct ? life / 100 * pct + life % 100 * pct / 100
                                      : life / 3 * 2 + life % 3 * 2 / 3);
out:
    kv_ossl_drop();
    return rc;
}

/* The request signed by signer, issued by ca, checked and stored with signer. */
static kv_rc renew_with(kv_key *signer, kv_key *ca, const char *profile, int64_t lifetime,
                        const renew_req *r, const char *name, char **issued)
{
    kv_ctx *ctx = signer->ctx;
    kv_cert_opts co = KV_CERT_OPTS_INIT;
    char *csr = NULL;
    kv_rc rc;

    co.subject = r->subject;
    co.sans = r->nsans ? (const char *const *)r->sans : NULL;
    co.ext_key_usage = r->nekus ? (const char *const *)r->ekus : NULL;
    if (r->ca) {
        co.flags = KV_CERT_CA;
        if (r->path_len >= 0) {
            co.flags |= KV_CERT_PATH_LEN;
            co.path_len = (unsigned)r->path_len;
        }
    }
    KV_CHECK(rc, kv_csr_create(signer, &co, &csr));
    if (r->ca) {
        /* the CA takes the path length from opts, not from the request */
        kv_cert_opts io = KV_CERT_OPTS_INIT;
        io.flags = co.flags;
        io.path_len = co.path_len;
        KV_CHECK(rc, kv_ca_issue_for(ca, profile, (const unsigned char *)csr, strlen(csr),
                                     &io, lifetime, issued));
    } else {
        KV_CHECK(rc, kv_ca_issue_for(ca, profile, (const unsigned char *)csr, strlen(csr),
                                     NULL, lifetime, issued));
    }
    KV_CHECK(rc, kept_check(ctx, name, r, *issued, profile));
    rc = kv_key_store_chain(signer, (const unsigned char *)*issued, strlen(*issued));
out:
    kv_string_free(csr);
    if (rc != KV_OK) {
        kv_string_free(*issued);
        *issued = NULL;
    }
    return rc;
}

/* KV_RENEW_ROTATE: the next version of the key (kv_rotate_prepare) signs
 * the request and gets the chain; only then does it become current
 * (kv_rotate_commit). A failure before the commit leaves the current
 * version current with its own chain; the pending version is remade by the
 * next rotation. */
static kv_rc renew_rotated(kv_ctx *ctx, const char *name, kv_key *ca, const char *profile,
                           int64_t lifetime, const renew_req *r, const kv_rotate_opts *ro,
                           char **issued)
{
    kv_key *pending = NULL;
    kv_rc rc;

    KV_CHECK(rc, kv_rotate_prepare(ctx, name, &pending));
    KV_CHECK(rc, renew_with(pending, ca, profile, lifetime, r, name, issued));
    rc = kv_rotate_commit(ctx, pending, ro);
out:
    if (rc != KV_OK) {
        kv_string_free(*issued);
        *issued = NULL;
    }
    kv_key_free(pending);
    return rc;
}

kv_rc kv_cert_renew(kv_ctx *ctx, const char *name, kv_key *ca, const kv_renew_opts *opts,
                    char **pem)
{
    kv_renew_opts o;
    kv_key *key = NULL;
    STACK_OF(X509) *chain = NULL;
    renew_req r;
    const char *profile;
    char *issued = NULL, prefix[160], suffix[160], when[32];
    int64_t now = (int64_t)time(NULL), nb = 0, na = 0, due = 0, lifetime;
    bool have_old = false;
    kv_err_mark mark;
    kv_rc rc;

    memset(&r, 0, sizeof(r));
    *pem = NULL;
    KV_CALL_BEGIN(ctx);
    KV_CHECK(rc, opts_read(ctx, name, opts, &o));
    KV_CHECK(rc, kv_key_open(ctx, name, &key));
    mark = kv_err_mark_get(ctx);
    rc = kv_chain_get(key, &chain);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark);   /* say what there is to do instead */
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND,
                "key '%s' has no certificate to renew (have one issued and store it first: "
                "keyvault csr, keyvault ca sign, keyvault cert import)", key->name);
    }
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, due_time(ctx, key->name, sk_X509_value(chain, 0), &nb, &na, &due));
    have_old = true;
    if (now < due && !(o.flags & KV_RENEW_FORCE))
        goto out;   /* not due: KV_OK, *pem NULL */
    if (EVP_PKEY_eq(key->pub, ca->pub) == 1)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "key '%s' is the CA key itself: a CA does not issue its own certificate (make "
                "a new self-signed one, or have its parent CA renew it)", key->name);
    KV_CHECK(rc, req_from(ctx, key->name, sk_X509_value(chain, 0), &r));
    profile = o.profile;
    if (!profile)
        KV_CHECK(rc, req_profile(ctx, key->name, &r, &profile));
    lifetime = o.lifetime;
    if (!lifetime && na - nb > NOT_BEFORE_SLACK)
        lifetime = na - nb - NOT_BEFORE_SLACK;
    if (!lifetime)
        lifetime = (int64_t)KV_X509_DAYS_DEFAULT * 86400;
    if (o.flags & KV_RENEW_ROTATE)
        KV_CHECK(rc, renew_rotated(ctx, name, ca, profile, lifetime, &r, o.rotate, &issued));
    else
        KV_CHECK(rc, renew_with(key, ca, profile, lifetime, &r, key->name, &issued));
    *pem = issued;
    issued = NULL;
out:
    if (rc != KV_OK && have_old) {
        utc_text(na, when);
        snprintf(prefix, sizeof(prefix), "renewing the certificate of '%s': ", key->name);
        if (now > na)
            snprintf(suffix, sizeof(suffix), "; the old certificate expired at %s", when);
        else if (na - now >= 86400)
            snprintf(suffix, sizeof(suffix),
                     "; the old certificate stays in force until %s (%lld days left)", when,
                     (long long)((na - now) / 86400));
        else
            snprintf(suffix, sizeof(suffix),
                     "; the old certificate stays in force until %s (less than a day left)",
                     when);
        kv_err_frame(ctx, rc, prefix, suffix);
    }
    kv_audit_event(ctx, KV_AUDIT_RENEW, key ? key->name : kv_name_valid(name) ? name : NULL,
                   key ? key->version : 0, key ? key->be->name : NULL, rc,
                   *pem ? ((o.flags & KV_RENEW_ROTATE) ? "renewed on a new key version"
                                                        : "renewed")
                        : rc == KV_OK ? "not due" : NULL);
    kv_string_free(issued);
    req_clear(&r);
    sk_X509_pop_free(chain, X509_free);
    kv_key_free(key);
    return rc;
}
