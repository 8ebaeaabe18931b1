/*
 * x509.c - the X.509 toolkit the certificate calls are built from: signing
 * of certificates, requests and CRLs by a vault key, RFC 4514 names,
 * subject alternative names, extensions and serial numbers.
 *
 * All encoding is OpenSSL's. The one step OpenSSL cannot do for us is the
 * signature itself, because the private key stays in its backend: the
 * algorithm identifier comes from OpenSSL (a verification context on the
 * public key reports it), the to-be-signed part is encoded by OpenSSL, the
 * backend signs it through the core, and the finished object is decoded
 * again and verified before anyone sees it.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

/* ---- signing -------------------------------------------------------------- */

/*
 * RFC 5280's CertificateList, described to OpenSSL's template encoder.
 * OpenSSL 3.0 offers no way to set a CRL's inner signature algorithm other
 * than signing with an EVP_PKEY; so a CRL built with the X509_CRL calls is
 * re-read through this description, signed, and read back as an X509_CRL.
 * The encoding is still OpenSSL's; X509_REVOKED, X509_NAME and the rest
 * are its own items.
 */
typedef struct {
    ASN1_INTEGER *version;
    X509_ALGOR *sig_alg;
    X509_NAME *issuer;
    ASN1_TIME *this_update;
    ASN1_TIME *next_update;
    STACK_OF(X509_REVOKED) *revoked;
    STACK_OF(X509_EXTENSION) *extensions;
} KV_CRL_INFO;

typedef struct {
    KV_CRL_INFO *info;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *signature;
} KV_CRL;

ASN1_SEQUENCE(KV_CRL_INFO) = {
    ASN1_OPT(KV_CRL_INFO, version, ASN1_INTEGER),
    ASN1_SIMPLE(KV_CRL_INFO, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(KV_CRL_INFO, issuer, X509_NAME),
    ASN1_SIMPLE(KV_CRL_INFO, this_update, ASN1_TIME),
    ASN1_OPT(KV_CRL_INFO, next_update, ASN1_TIME),
    ASN1_SEQUENCE_OF_OPT(KV_CRL_INFO, revoked, X509_REVOKED),
    ASN1_EXP_SEQUENCE_OF_OPT(KV_CRL_INFO, extensions, X509_EXTENSION, 0),
} static_ASN1_SEQUENCE_END(KV_CRL_INFO)

ASN1_SEQUENCE(KV_CRL) = {
    ASN1_SIMPLE(KV_CRL, info, KV_CRL_INFO),
    ASN1_SIMPLE(KV_CRL, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(KV_CRL, signature, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(KV_CRL)

static void KV_CRL_free(KV_CRL *a)
{
    ASN1_item_free((ASN1_VALUE *)a, ASN1_ITEM_rptr(KV_CRL));
}
static int i2d_KV_CRL_INFO(const KV_CRL_INFO *a, unsigned char **out)
{
    return ASN1_item_i2d((const ASN1_VALUE *)a, out, ASN1_ITEM_rptr(KV_CRL_INFO));
}
static int i2d_KV_CRL(const KV_CRL *a, unsigned char **out)
{
    return ASN1_item_i2d((const ASN1_VALUE *)a, out, ASN1_ITEM_rptr(KV_CRL));
}


/* The AlgorithmIdentifier of alg for pub, as OpenSSL writes it (RSA-PSS
 * parameters included). */
static kv_rc algorithm_id(const kv_ctx *ctx, EVP_PKEY *pub, const kv_alg_desc *a,
                          X509_ALGOR **out)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char buf[256];
    const unsigned char *p = buf;
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, buf, sizeof(buf)),
        OSSL_PARAM_construct_end(),
    };
    kv_rc rc;

    *out = NULL;
    if (!mctx)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (EVP_DigestVerifyInit_ex(mctx, &pctx, a->md, ctx->libctx, NULL, pub, NULL) != 1 ||
        (a->padding == KV_PAD_PSS &&
         (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
        EVP_PKEY_CTX_get_params(pctx, params) != 1 || !OSSL_PARAM_modified(&params[0]))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "no X.509 algorithm identifier for %s", a->name);
    *out = d2i_X509_ALGOR(NULL, &p, (long)params[0].return_size);
    if (!*out)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot decode the algorithm identifier of %s",
                     a->name);
    rc = KV_OK;
out:
    EVP_MD_CTX_free(mctx);
    return rc;
}

/* Set a signature BIT STRING to sig, with no unused bits. */
static kv_rc set_signature(const kv_ctx *ctx, ASN1_BIT_STRING *bs, const unsigned char *sig,
                           size_t len)
{
    if (ASN1_BIT_STRING_set(bs, (unsigned char *)sig, (int)len) != 1)
        return kv_error_ossl(ctx, KV_ERR_NO_MEMORY, "cannot set the signature");
    bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
    bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    return KV_OK;
}

/* Decode the finished DER again and verify it with pub: what leaves the
 * library is exactly what a relying party will parse. */
static kv_rc check_signed(const kv_ctx *ctx, kv_x509_kind kind, void *obj, EVP_PKEY *pub,
                          const char *what)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int n, ok = 0;

    switch (kind) {
    case KV_X509_CERT: n = i2d_X509(obj, &der); break;
    case KV_X509_REQ: n = i2d_X509_REQ(obj, &der); break;
    default: n = i2d_X509_CRL(obj, &der); break;
    }
    if (n <= 0)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot encode the signed %s", what);
    p = der;
    if (kind == KV_X509_CERT) {
        X509 *x = d2i_X509(NULL, &p, n);
        ok = x && X509_verify(x, pub) == 1;
        X509_free(x);
    } else if (kind == KV_X509_REQ) {
        X509_REQ *r = d2i_X509_REQ(NULL, &p, n);
        ok = r && X509_REQ_verify_ex(r, pub, ctx->libctx, NULL) == 1;
        X509_REQ_free(r);
    } else {
        X509_CRL *c = d2i_X509_CRL(NULL, &p, n);
        ok = c && X509_CRL_verify(c, pub) == 1;
        X509_CRL_free(c);
    }
    ok = ok && p == der + n;   /* nothing after the object */
    OPENSSL_free(der);
    if (!ok)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO,
                             "the signed %s does not verify with the signer's public key", what);
    return KV_OK;
}

static kv_rc x509_sign(kv_key *key, kv_op op, kv_sign_alg alg, kv_x509_kind kind, void *obj)
{
    static const char *const what[] = { "certificate", "certificate request", "CRL" };
    const kv_ctx *ctx = key->ctx;
    const kv_alg_desc *a = NULL;
    X509_ALGOR *algor = NULL;
    unsigned char *tbs = NULL, *sig = NULL;
    size_t siglen = 0;
    int n = -1;
    kv_rc rc;

    KV_CHECK(rc, kv_key_alg(key, alg, &a));
    KV_CHECK(rc, algorithm_id(ctx, key->pub, a, &algor));
    /* Both algorithm fields first: the tbs encoding includes the inner one. */
    if (kind == KV_X509_CERT) {
        X509 *x = obj;
        const X509_ALGOR *outer = NULL;
        X509_get0_signature(NULL, &outer, x);
        /* OpenSSL 3.0 has no setter for a certificate's two algorithm
         * fields; they are the object's own and are written in place. */
        if (X509_ALGOR_copy((X509_ALGOR *)X509_get0_tbs_sigalg(x), algor) != 1 ||
            X509_ALGOR_copy((X509_ALGOR *)outer, algor) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot set the signature algorithm");
        n = i2d_re_X509_tbs(x, &tbs);
    } else if (kind == KV_X509_REQ) {
        if (X509_REQ_set1_signature_algo(obj, algor) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot set the signature algorithm");
        n = i2d_re_X509_REQ_tbs(obj, &tbs);
    } else {
        KV_CRL *c = obj;
        if (X509_ALGOR_copy(c->info->sig_alg, algor) != 1 ||
            X509_ALGOR_copy(c->sig_alg, algor) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_NO_MEMORY, "cannot set the signature algorithm");
        n = i2d_KV_CRL_INFO(c->info, &tbs);
    }
    if (n <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "cannot encode the %s to sign", what[kind]);
    siglen = kv_sig_max_len(key->pub, a, 0);
    sig = OPENSSL_malloc(siglen);
    if (!sig)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_key_sign_op(key, op, a, 0, tbs, (size_t)n, sig, &siglen));
    if (kind == KV_X509_CERT) {
        const ASN1_BIT_STRING *bs = NULL;
        X509_get0_signature(&bs, NULL, obj);
        rc = set_signature(ctx, (ASN1_BIT_STRING *)bs, sig, siglen);
    } else if (kind == KV_X509_REQ) {
        ASN1_BIT_STRING *bs = ASN1_BIT_STRING_new();
        rc = bs ? set_signature(ctx, bs, sig, siglen)
                : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        if (rc == KV_OK)
            X509_REQ_set0_signature(obj, bs);
        else
            ASN1_BIT_STRING_free(bs);
    } else {
        rc = set_signature(ctx, ((KV_CRL *)obj)->signature, sig, siglen);
    }
    if (rc == KV_OK && kind != KV_X509_CRL)
        rc = check_signed(ctx, kind, obj, key->pub, what[kind]);
out:
    X509_ALGOR_free(algor);
    OPENSSL_free(tbs);
    OPENSSL_free(sig);
    return rc;
}

kv_rc kv_x509_sign(kv_key *key, kv_op op, kv_sign_alg alg, kv_x509_kind kind, void *obj)
{
    if (kind == KV_X509_CRL)
        return kv_error(key->ctx, KV_ERR_INVALID_ARG, "CRLs are signed by kv_x509_sign_crl");
    return x509_sign(key, op, alg, kind, obj);
}

/* The fields of an unsigned X509_CRL copied into the template (an
 * X509_CRL without its algorithm cannot be encoded). */
static kv_rc crl_info(const kv_ctx *ctx, const X509_CRL *crl, KV_CRL **out)
{
    KV_CRL *c = (KV_CRL *)ASN1_item_new(ASN1_ITEM_rptr(KV_CRL));
    KV_CRL_INFO *i = c ? c->info : NULL;
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    const STACK_OF(X509_EXTENSION) *exts = X509_CRL_get0_extensions(crl);
    STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED((X509_CRL *)crl);
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!c)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    X509_NAME_free(i->issuer);
    ASN1_TIME_free(i->this_update);
    if (X509_CRL_get_version(crl) > 0 &&
        (!(i->version = ASN1_INTEGER_new()) ||
         ASN1_INTEGER_set(i->version, X509_CRL_get_version(crl)) != 1))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!(i->issuer = X509_NAME_dup(X509_CRL_get_issuer(crl))) ||
        !(i->this_update = ASN1_TIME_dup(X509_CRL_get0_lastUpdate(crl))) ||
        (next && !(i->next_update = ASN1_TIME_dup(next))) ||
        (rev && !(i->revoked = sk_X509_REVOKED_deep_copy(rev, X509_REVOKED_dup,
                                                         X509_REVOKED_free))) ||
        (exts && !(i->extensions = sk_X509_EXTENSION_deep_copy(exts, X509_EXTENSION_dup,
                                                               X509_EXTENSION_free))))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "cannot copy the CRL to sign");
    *out = c;
    c = NULL;
out:
    KV_CRL_free(c);
    return rc;
}

kv_rc kv_x509_sign_crl(kv_key *key, kv_op op, kv_sign_alg alg, const X509_CRL *crl,
                       X509_CRL **out)
{
    const kv_ctx *ctx = key->ctx;
    unsigned char *der = NULL;
    const unsigned char *p;
    KV_CRL *c = NULL;
    int n;
    kv_rc rc;

    *out = NULL;
    KV_CHECK(rc, crl_info(ctx, crl, &c));
    KV_CHECK(rc, x509_sign(key, op, alg, KV_X509_CRL, c));
    n = i2d_KV_CRL(c, &der);
    p = der;
    if (n <= 0 || !(*out = d2i_X509_CRL(NULL, &p, n)))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the signed CRL");
    rc = check_signed(ctx, KV_X509_CRL, *out, key->pub, "CRL");
    if (rc != KV_OK) {
        X509_CRL_free(*out);
        *out = NULL;
    }
out:
    KV_CRL_free(c);
    OPENSSL_free(der);
    return rc;
}

/* ---- names (RFC 4514) ------------------------------------------------------ */

/* Attribute types of RFC 4514 section 3, which are case-insensitive. */
static const struct {
    const char *name;
    int nid;
} name_types[] = {
    { "CN", NID_commonName },         { "L", NID_localityName },
    { "ST", NID_stateOrProvinceName }, { "O", NID_organizationName },
    { "OU", NID_organizationalUnitName }, { "C", NID_countryName },
    { "STREET", NID_streetAddress },  { "DC", NID_domainComponent },
    { "UID", NID_userId },            { "serialNumber", NID_serialNumber },
    { "emailAddress", NID_pkcs9_emailAddress }, { "title", NID_title },
    { "GN", NID_givenName },          { "SN", NID_surname },
    { "pseudonym", NID_pseudonym },   { "initials", NID_initials },
    { "generationQualifier", NID_generationQualifier },
    { "dnQualifier", NID_dnQualifier }, { "postalCode", NID_postalCode },
    { "businessCategory", NID_businessCategory },
    { "organizationIdentifier", NID_organizationIdentifier },
};

static ASN1_OBJECT *name_type(const char *t)
{
    bool numeric = true;

    for (size_t i = 0; i < sizeof(name_types) / sizeof(name_types[0]); i++)
        if (strcasecmp(t, name_types[i].name) == 0)
            return OBJ_nid2obj(name_types[i].nid);
    for (const char *p = t; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            numeric = false;
    /* else only a dotted OID: OpenSSL's other names include objects that
     * are no attribute types at all (basicConstraints, rsaEncryption) */
    return numeric ? OBJ_txt2obj(t, 1) : NULL;
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* One attribute value at *p up to an unescaped ',' or '+' or the end, with
 * its escapes undone, into val (of size KV_X509_NAME_MAX + 1). */
static kv_rc name_value(const kv_ctx *ctx, const char **p, const char *type, char *val,
                        size_t *len)
{
    const char *s = *p;
    size_t n = 0;

    bool last_plain_space = false;

    if (*s == '#')
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "subject: attribute %s: BER-encoded values (#hex) are not supported", type);
    if (*s == ' ')
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "subject: attribute %s: a leading space must be escaped ('\\ ', "
                        "RFC 4514)", type);
    while (*s && *s != ',' && *s != '+') {
        int c = (unsigned char)*s++;
        last_plain_space = c == ' ';
        if (c == '\\') {
            int h = hexval((unsigned char)s[0]), l = h >= 0 ? hexval((unsigned char)s[1]) : -1;
            if (h >= 0 && l >= 0) {
                c = h * 16 + l;
                s += 2;
            } else if (*s && strchr(" \"#+,;<=>\\", *s)) {
                c = (unsigned char)*s++;
            } else {
                return kv_error(ctx, KV_ERR_BAD_INPUT, "subject: attribute %s: bad escape", type);
            }
            if (c == 0)
                return kv_error(ctx, KV_ERR_BAD_INPUT, "subject: attribute %s holds a NUL byte",
                                type);
        } else if (strchr("\";<>", c)) {
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "subject: attribute %s: '%c' must be escaped", type, c);
        }
        val[n++] = (char)c;
    }
    val[n] = '\0';
    *p = s;
    *len = n;
    if (n == 0)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "subject: attribute %s has an empty value", type);
    if (last_plain_space)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "subject: attribute %s: a trailing space must be escaped ('\\ ', "
                        "RFC 4514)", type);
    return KV_OK;
}

/* An attribute type's short name, or its dotted OID. */
static void obj_name(const ASN1_OBJECT *obj, char *buf, size_t len)
{
    int nid = OBJ_obj2nid(obj);

    if (nid != NID_undef)
        snprintf(buf, len, "%s", OBJ_nid2sn(nid));
    else
        OBJ_obj2txt(buf, (int)len, obj, 1);
}

struct name_attr {
    ASN1_OBJECT *obj;
    char *val;
    size_t len;
    bool new_rdn;      /* the first attribute of its RDN */
};

kv_rc kv_x509_name_parse(const kv_ctx *ctx, const char *text, X509_NAME **out)
{
    struct name_attr attrs[KV_X509_NAME_ATTRS];
    size_t nattrs = 0, tlen = strlen(text);
    const char *p = text;
    X509_NAME *name = X509_NAME_new();
    char val[KV_X509_NAME_MAX + 1];
    ASN1_OBJECT *obj;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!name)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (tlen > KV_X509_NAME_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "subject: longer than %d characters",
                KV_X509_NAME_MAX);
    while (*p) {
        char type[65];
        size_t tl = 0, vl = 0;
        bool new_rdn = nattrs == 0 || p[-1] == ',';

        while (*p == ' ')
            p++;
        while (*p && *p != '=' && tl < sizeof(type) - 1)
            type[tl++] = *p++;
        type[tl] = '\0';
        while (tl > 0 && type[tl - 1] == ' ')
            type[--tl] = '\0';
        if (*p != '=' || tl == 0)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "subject: expected TYPE=VALUE at character %zu", (size_t)(p - text) + 1);
        for (size_t i = 0; i < tl; i++)
            if (!isalnum((unsigned char)type[i]) && type[i] != '-' && type[i] != '.')
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                        "subject: bad attribute type at character %zu", (size_t)(p - text) - tl + 1);
        if (nattrs == KV_X509_NAME_ATTRS)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "subject: more than %d attributes",
                    KV_X509_NAME_ATTRS);
        /* messages name the type as OpenSSL knows it, never as written */
        if (!(obj = name_type(type))) {
            kv_ossl_drop();
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "subject: unknown attribute type at character %zu",
                    (size_t)(p - text) - tl + 1);
        }
        attrs[nattrs].obj = obj;
        attrs[nattrs].val = NULL;
        attrs[nattrs].new_rdn = new_rdn;
        nattrs++;
        obj_name(obj, type, sizeof(type));
        p++;
        KV_CHECK(rc, name_value(ctx, &p, type, val, &vl));
        attrs[nattrs - 1].val = OPENSSL_memdup(val, vl + 1);
        attrs[nattrs - 1].len = vl;
        if (!attrs[nattrs - 1].val)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        if (*p == ',' || *p == '+') {
            p++;
            if (!*p)
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "subject: ends with a separator");
        }
    }
    /* RFC 4514 writes the most specific RDN first: add them in reverse. */
    for (size_t end = nattrs; end > 0;) {
        size_t start = end - 1;
        while (!attrs[start].new_rdn)
            start--;
        for (size_t i = start; i < end; i++) {
            char tname[80];
            if (X509_NAME_add_entry_by_OBJ(name, attrs[i].obj, MBSTRING_UTF8,
                                           (unsigned char *)attrs[i].val, (int)attrs[i].len, -1,
                                           i == start ? 0 : -1) != 1) {
                obj_name(attrs[i].obj, tname, sizeof(tname));
                KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "subject: attribute %s is not valid",
                             tname);
            }
        }
        end = start;
    }
    *out = name;
    name = NULL;
out:
    for (size_t i = 0; i < nattrs; i++) {
        ASN1_OBJECT_free(attrs[i].obj);
        OPENSSL_free(attrs[i].val);
    }
    X509_NAME_free(name);
    return rc;
}

kv_rc kv_x509_name_text(const kv_ctx *ctx, const X509_NAME *name, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());

    *out = NULL;
    /* RFC 4514 with UTF-8 kept as it is (only controls are escaped) */
    if (!bio || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0 ||
        !(*out = kv_bio_text(bio, NULL))) {
        BIO_free(bio);
        return kv_error_ossl(ctx, KV_ERR_NO_MEMORY, "cannot print a name");
    }
    BIO_free(bio);
    return KV_OK;
}

/* ---- subject alternative names ---------------------------------------------- */

static bool dns_name_valid(const char *s)
{
    size_t n = strlen(s), label = 0;

    if (n == 0 || n > 253)
        return false;
    if (s[0] == '*' && s[1] == '.')   /* one wildcard label, leftmost */
        s += 2;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return false;
            if (!*p)
                return true;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && !(*p == '-' && label > 0) && *p != '_')
            return false;
        label++;
    }
}

static bool ascii_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

kv_rc kv_x509_san_parse(const kv_ctx *ctx, const char *text, GENERAL_NAME **out)
{
    static const struct {
        const char *prefix;
        const char *openssl;   /* the type a2i_GENERAL_NAME knows */
        int gen;
    } kinds[] = {
        { "dns:", "DNS", GEN_DNS },
        { "ip:", "IP", GEN_IPADD },
        { "uri:", "URI", GEN_URI },
        { "email:", "email", GEN_EMAIL },
    };
    const char *v = NULL;
    size_t k, nk = sizeof(kinds) / sizeof(kinds[0]);
    X509V3_EXT_METHOD *m = (X509V3_EXT_METHOD *)X509V3_EXT_get_nid(NID_subject_alt_name);

    *out = NULL;
    for (k = 0; k < nk; k++)
        if (strncasecmp(text, kinds[k].prefix, strlen(kinds[k].prefix)) == 0) {
            v = text + strlen(kinds[k].prefix);
            break;
        }
    if (!v)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "subject alternative name: expected dns:, ip:, uri: or email:");
    if (strlen(v) > KV_X509_NAME_MAX)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "subject alternative name: %s value too long",
                        kinds[k].openssl);
    switch (kinds[k].gen) {
    case GEN_DNS:
        if (!dns_name_valid(v))
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "subject alternative name: not a valid DNS name");
        break;
    case GEN_URI: {
        const char *colon = strchr(v, ':');
        bool scheme = colon && colon > v && isalpha((unsigned char)v[0]);
        for (const char *q = v; scheme && q < colon; q++)
            scheme = isalnum((unsigned char)*q) || *q == '+' || *q == '-' || *q == '.';
        if (!scheme || !ascii_printable(v))
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "subject alternative name: not an absolute URI (scheme:...)");
        break;
    }
    case GEN_EMAIL: {
        const char *at = strchr(v, '@');
        if (!at || at == v || strchr(at + 1, '@') || at[1] == '*' || !dns_name_valid(at + 1) ||
            !ascii_printable(v))
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "subject alternative name: not a valid email address");
        break;
    }
    case GEN_IPADD: {
        /* inet_pton, not OpenSSL's reader: that one stops at a space and
         * reads 010.1.1.1 as 10.1.1.1, so the certificate would name an
         * address other than the one given */
        unsigned char addr[16];
        int alen = inet_pton(AF_INET, v, addr) == 1    ? 4
                   : inet_pton(AF_INET6, v, addr) == 1 ? 16
                                                       : 0;
        ASN1_OCTET_STRING *os = alen ? ASN1_OCTET_STRING_new() : NULL;
        if (!alen)
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "subject alternative name: not a valid IPv4 or IPv6 address");
        if (!os || ASN1_OCTET_STRING_set(os, addr, alen) != 1 || !(*out = GENERAL_NAME_new())) {
            ASN1_OCTET_STRING_free(os);
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        }
        GENERAL_NAME_set0_value(*out, GEN_IPADD, os);
        return KV_OK;
    }
    default:
        break;
    }
    *out = a2i_GENERAL_NAME(NULL, m, NULL, kinds[k].gen, v, 0);
    if (!*out)
        return kv_error_ossl(ctx, KV_ERR_BAD_INPUT, "subject alternative name: not a valid %s",
                             kinds[k].openssl);
    return KV_OK;
}

/* ---- extensions ------------------------------------------------------------- */

static kv_rc push_ext(const kv_ctx *ctx, STACK_OF(X509_EXTENSION) *exts, int nid, int crit,
                      void *value)
{
    X509_EXTENSION *ext = X509V3_EXT_i2d(nid, crit, value);

    if (!ext || !sk_X509_EXTENSION_push(exts, ext)) {
        X509_EXTENSION_free(ext);
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot encode the %s extension",
                             OBJ_nid2ln(nid));
    }
    return KV_OK;
}

kv_rc kv_x509_exts_build(const kv_ctx *ctx, const kv_x509_ext_spec *spec,
                         STACK_OF(X509_EXTENSION) **out)
{
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    BASIC_CONSTRAINTS *bc = NULL;
    ASN1_BIT_STRING *ku = NULL;
    EXTENDED_KEY_USAGE *eku = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!exts)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (spec->ca >= 0) {
        if (!(bc = BASIC_CONSTRAINTS_new()))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        bc->ca = spec->ca ? 0xff : 0;
        if (spec->ca && spec->path_len >= 0) {
            bc->pathlen = ASN1_INTEGER_new();
            if (!bc->pathlen || ASN1_INTEGER_set(bc->pathlen, spec->path_len) != 1)
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        }
        KV_CHECK(rc, push_ext(ctx, exts, NID_basic_constraints, 1, bc));
    }
    if (spec->key_usage) {
        if (!(ku = ASN1_BIT_STRING_new()))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        for (int bit = 0; bit < 9; bit++)
            if ((spec->key_usage & (1u << bit)) && ASN1_BIT_STRING_set_bit(ku, bit, 1) != 1)
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        KV_CHECK(rc, push_ext(ctx, exts, NID_key_usage, 1, ku));
    }
    if (spec->eku && spec->eku[0]) {
        if (!(eku = sk_ASN1_OBJECT_new_null()))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        for (size_t i = 0; spec->eku[i]; i++) {
            ASN1_OBJECT *o = OBJ_txt2obj(spec->eku[i], 0);
            if (!o) {
                kv_ossl_drop();
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "extended key usage %zu: unknown purpose",
                        i + 1);
            }
            if (!sk_ASN1_OBJECT_push(eku, o)) {
                ASN1_OBJECT_free(o);
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
            }
        }
        KV_CHECK(rc, push_ext(ctx, exts, NID_ext_key_usage, 0, eku));
    }
    if (spec->san && sk_GENERAL_NAME_num(spec->san) > 0)
        KV_CHECK(rc, push_ext(ctx, exts, NID_subject_alt_name, spec->san_critical, spec->san));
    *out = exts;
    exts = NULL;
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/* The RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits. */
static kv_rc key_id(const kv_ctx *ctx, X509_PUBKEY *pub, ASN1_OCTET_STRING **out)
{
    const unsigned char *bits = NULL;
    int blen = 0;
    unsigned char md[20];
    size_t mdlen = 0;

    *out = NULL;
    if (X509_PUBKEY_get0_param(NULL, &bits, &blen, NULL, pub) != 1 ||
        EVP_Q_digest(ctx->libctx, "SHA1", NULL, bits, (size_t)blen, md, &mdlen) != 1)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot compute a key identifier");
    *out = ASN1_OCTET_STRING_new();
    if (!*out || ASN1_OCTET_STRING_set(*out, md, (int)mdlen) != 1) {
        ASN1_OCTET_STRING_free(*out);
        *out = NULL;
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    return KV_OK;
}

kv_rc kv_x509_issuer_key_id(const kv_ctx *ctx, X509 *issuer, ASN1_OCTET_STRING **out)
{
    const ASN1_OCTET_STRING *have = X509_get0_subject_key_id(issuer);

    /* the issuer's own identifier when it has one, else RFC 5280 method 1 */
    if (!have)
        return key_id(ctx, X509_get_X509_PUBKEY(issuer), out);
    if (!(*out = ASN1_OCTET_STRING_dup(have)))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    return KV_OK;
}

kv_rc kv_x509_add_key_ids(const kv_ctx *ctx, X509 *x, X509 *issuer)
{
    ASN1_OCTET_STRING *ski = NULL, *iski = NULL;
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    kv_rc rc;

    if (!akid)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, key_id(ctx, X509_get_X509_PUBKEY(x), &ski));
    if (X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_REPLACE) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add the subject key identifier");
    if (issuer) {
        KV_CHECK(rc, kv_x509_issuer_key_id(ctx, issuer, &iski));
    } else if (!(iski = ASN1_OCTET_STRING_dup(ski))) {
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    akid->keyid = iski;
    if (X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_REPLACE) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot add the authority key identifier");
    rc = KV_OK;
out:
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID_free(akid);
    return rc;
}

/* ---- serial numbers and validity ------------------------------------------- */

kv_rc kv_x509_serial_random(const kv_ctx *ctx, ASN1_INTEGER **out)
{
    unsigned char b[16];
    BIGNUM *bn = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    do {
        if (RAND_bytes_ex(ctx->libctx, b, sizeof(b), 0) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "no random bytes for a serial number");
        b[0] &= 0x7f;   /* 127 random bits: positive in 16 DER bytes at most */
        BN_free(bn);
        bn = BN_bin2bn(b, sizeof(b), NULL);
        if (!bn)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    } while (BN_is_zero(bn));
    *out = BN_to_ASN1_INTEGER(bn, NULL);
    if (!*out)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    BN_free(bn);
    return rc;
}

kv_rc kv_x509_set_validity(const kv_ctx *ctx, X509 *x, time_t not_before, time_t not_after)
{
    ASN1_TIME *nb = ASN1_TIME_set(NULL, not_before), *na = ASN1_TIME_set(NULL, not_after);
    kv_rc rc = KV_OK;

    if (!nb || !na || X509_set1_notBefore(x, nb) != 1 || X509_set1_notAfter(x, na) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_BAD_INPUT, "cannot set the validity period");
    ASN1_TIME_free(nb);
    ASN1_TIME_free(na);
    return rc;
}

/* ---- certificate options (kv_cert_opts) ------------------------------------ */

/* The fields every reader of kv_cert_opts reads: size .. path_len. */
#define CERT_OPTS_MIN (offsetof(kv_cert_opts, path_len) + sizeof(unsigned))
#define CERT_OPTS_TPM_END (offsetof(kv_cert_opts, tpm_version) + sizeof(const char *))
/* A larger size is a newer caller's: its extra fields must be zero. */
#define CERT_OPTS_MAX 4096
#define KU_KNOWN (KV_KU_DIGITAL_SIGNATURE | KV_KU_NON_REPUDIATION | KV_KU_KEY_ENCIPHERMENT | \
                  KV_KU_DATA_ENCIPHERMENT | KV_KU_KEY_AGREEMENT | KV_KU_KEY_CERT_SIGN |      \
                  KV_KU_CRL_SIGN)

static const char *const eku_names[] = {
    "serverAuth", "clientAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning",
};

static kv_rc opts_size(const kv_ctx *ctx, const kv_cert_opts *opts)
{
    if (!opts)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "certificate options are NULL");
    if (opts->size < CERT_OPTS_MIN || opts->size > CERT_OPTS_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: size %zu is not between %zu and %d "
                        "(initialise with KV_CERT_OPTS_INIT)",
                        opts->size, (size_t)CERT_OPTS_MIN, CERT_OPTS_MAX);
    for (size_t i = sizeof(*opts); i < opts->size; i++)
        if (((const unsigned char *)opts)[i] != 0)
            return kv_error(ctx, KV_ERR_INVALID_ARG,
                            "certificate options: fields past the %zu bytes this library "
                            "knows are set (a newer libkeyvault is needed)", sizeof(*opts));
    return KV_OK;
}

static kv_rc opts_flags(const kv_ctx *ctx, const kv_cert_opts *opts, kv_x509_purpose purpose)
{
    bool ca = opts->flags & KV_CERT_CA;

    if (opts->flags & ~(KV_CERT_CA | KV_CERT_PATH_LEN))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "certificate options: unknown flags 0x%x",
                        opts->flags & ~(KV_CERT_CA | KV_CERT_PATH_LEN));
    if ((opts->flags & KV_CERT_PATH_LEN) && !ca)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: KV_CERT_PATH_LEN applies to a CA (KV_CERT_CA) only");
    if (opts->path_len && !(opts->flags & KV_CERT_PATH_LEN))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: path_len is set without KV_CERT_PATH_LEN");
    if (opts->path_len > INT_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "certificate options: path_len %u is too large",
                        opts->path_len);
    if (opts->key_usage & ~KU_KNOWN)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "certificate options: unknown key usage bits 0x%x",
                        opts->key_usage & ~KU_KNOWN);
    if ((opts->key_usage & KV_KU_KEY_CERT_SIGN) && !ca)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: key usage keyCertSign needs a CA (KV_CERT_CA; "
                        "RFC 5280 4.2.1.3)");
    if (ca && opts->key_usage && !(opts->key_usage & KV_KU_KEY_CERT_SIGN))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: a CA's key usage must include keyCertSign, or no "
                        "verifier accepts what it issues (RFC 5280 4.2.1.3)");
    if (opts->days > KV_X509_DAYS_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: %u days of validity is more than %d", opts->days,
                        KV_X509_DAYS_MAX);
    if (purpose != KV_X509_FOR_ISSUE && opts->size >= CERT_OPTS_TPM_END &&
        (opts->tpm_manufacturer || opts->tpm_model || opts->tpm_version))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "certificate options: tpm_manufacturer, tpm_model and tpm_version "
                        "belong to a CA's tpm-ak profile");
    return KV_OK;
}

/* The key usage asked for, or the default for the key and purpose; a usage
 * the key's algorithm cannot serve is refused. */
static kv_rc opts_key_usage(const kv_ctx *ctx, const EVP_PKEY *pub, const kv_cert_opts *opts,
                            kv_x509_purpose purpose, unsigned *out)
{
    kv_family f = kv_family_of_pkey(pub);
    unsigned ku = opts->key_usage, bad;
    const char *need = NULL;

    *out = 0;
    if (!ku) {
        if (purpose == KV_X509_FOR_REQUEST)
            return KV_OK;     /* a request asks only for what the caller asked */
        if (opts->flags & KV_CERT_CA)
            ku = KV_KU_KEY_CERT_SIGN | KV_KU_CRL_SIGN | KV_KU_DIGITAL_SIGNATURE;
        else if (f == KV_FAMILY_RSA)
            ku = KV_KU_DIGITAL_SIGNATURE | KV_KU_KEY_ENCIPHERMENT;
        else
            ku = KV_KU_DIGITAL_SIGNATURE;
    }
    /* RSA encrypts; EC agrees keys; Ed25519 only signs */
    bad = ku & (f == KV_FAMILY_RSA ? KV_KU_KEY_AGREEMENT
                : f == KV_FAMILY_EC ? KV_KU_KEY_ENCIPHERMENT | KV_KU_DATA_ENCIPHERMENT
                                    : KV_KU_KEY_AGREEMENT | KV_KU_KEY_ENCIPHERMENT |
                                          KV_KU_DATA_ENCIPHERMENT);
    if (bad & KV_KU_KEY_AGREEMENT)
        need = "keyAgreement needs an EC key";
    else if (bad & KV_KU_KEY_ENCIPHERMENT)
        need = "keyEncipherment needs an RSA key";
    else if (bad)
        need = "dataEncipherment needs an RSA key";
    if (need)
        return kv_error(ctx, KV_ERR_WRONG_KEY_TYPE, "key usage %s; the subject key is %s", need,
                        f == KV_FAMILY_NONE ? "of an unknown type"
                                            : kv_key_type_name(kv_type_of_pkey(pub)));
    *out = ku;
    return KV_OK;
}

/* A known purpose name or a dotted OID, each entry numbered in messages. */
static kv_rc opts_eku(const kv_ctx *ctx, const char *const *eku)
{
    size_t n = 0;

    for (; eku && eku[n]; n++) {
        const char *s = eku[n];
        bool known = false, dotted = *s != '\0' && strlen(s) <= 128;

        if (n == KV_X509_EKU_MAX)
            return kv_error(ctx, KV_ERR_BAD_INPUT, "more than %d extended key usages",
                            KV_X509_EKU_MAX);
        for (size_t i = 0; i < sizeof(eku_names) / sizeof(eku_names[0]); i++)
            known = known || strcmp(s, eku_names[i]) == 0;
        for (const char *p = s; dotted && *p; p++)
            dotted = isdigit((unsigned char)*p) || (*p == '.' && p > s && p[1] && p[1] != '.');
        if (!known && dotted) {
            ASN1_OBJECT *o = OBJ_txt2obj(s, 1);
            dotted = o != NULL;
            ASN1_OBJECT_free(o);
            kv_ossl_drop();
        }
        if (!known && !dotted)
            return kv_error(ctx, KV_ERR_BAD_INPUT,
                            "extended key usage %zu: not serverAuth, clientAuth, codeSigning, "
                            "emailProtection, timeStamping, OCSPSigning or a dotted OID", n + 1);
    }
    return KV_OK;
}

static kv_rc opts_sans(const kv_ctx *ctx, const char *const *sans, GENERAL_NAMES **out)
{
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!names)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; sans && sans[i]; i++) {
        if (i == KV_X509_SANS_MAX)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "more than %d subject alternative names",
                    KV_X509_SANS_MAX);
        KV_CHECK(rc, kv_x509_san_parse(ctx, sans[i], &g));
        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        }
    }
    *out = names;
    names = NULL;
out:
    GENERAL_NAMES_free(names);
    return rc;
}

kv_rc kv_x509_opts_read(const kv_key *signer, const EVP_PKEY *subject_key,
                        const kv_cert_opts *opts, kv_x509_purpose purpose, kv_x509_opts *out)
{
    const kv_ctx *ctx = signer->ctx;
    const char *subject;
    kv_rc rc;

    memset(out, 0, sizeof(*out));
    out->spec.ca = -1;
    out->spec.path_len = -1;
    KV_CHECK(rc, opts_size(ctx, opts));
    KV_CHECK(rc, opts_flags(ctx, opts, purpose));
    KV_CHECK(rc, kv_key_alg(signer, opts->alg, &out->alg));
    KV_CHECK(rc, opts_key_usage(ctx, subject_key, opts, purpose, &out->spec.key_usage));
    KV_CHECK(rc, opts_eku(ctx, opts->ext_key_usage));
    KV_CHECK(rc, opts_sans(ctx, opts->sans, &out->spec.san));
    subject = opts->subject;
    if (!subject && purpose == KV_X509_FOR_SELFSIGN)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "a self-signed certificate needs a subject");
    if (purpose == KV_X509_FOR_SELFSIGN && !subject[0])
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "a self-signed certificate needs a non-empty subject: it is also the issuer, "
                "which may not be empty (RFC 5280 4.1.2.4)");
    if (subject || purpose == KV_X509_FOR_REQUEST) {
        KV_CHECK(rc, kv_x509_name_parse(ctx, subject ? subject : "", &out->subject));
        if (X509_NAME_entry_count(out->subject) == 0) {
            if (sk_GENERAL_NAME_num(out->spec.san) == 0 && purpose != KV_X509_FOR_ISSUE)
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                        "an empty subject needs a subject alternative name (RFC 5280 4.2.1.6)");
            out->spec.san_critical = 1;
        }
    }
    if (opts->flags & KV_CERT_CA) {
        out->spec.ca = 1;
        if (opts->flags & KV_CERT_PATH_LEN)
            out->spec.path_len = (long)opts->path_len;
    } else if (purpose != KV_X509_FOR_REQUEST) {
        out->spec.ca = 0;
    }
    out->spec.eku = opts->ext_key_usage;
    out->days = opts->days ? opts->days : KV_X509_DAYS_DEFAULT;
    rc = KV_OK;
out:
    return rc;
}

void kv_x509_opts_clear(kv_x509_opts *o)
{
    X509_NAME_free(o->subject);
    GENERAL_NAMES_free(o->spec.san);
    memset(o, 0, sizeof(*o));
}
