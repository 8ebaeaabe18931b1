/*
 * chain.c - certificate chains kept with keys, and a key's certificate facts.
 *
 * The core checks a chain once, here, before any backend sees it: it parses
 * the input (one PEM bundle of CERTIFICATE blocks, or one DER certificate),
 * holds the leaf against the key's public key and each certificate against
 * the next (issuer name and signature). Backends keep a checked chain
 * (chain_store) and hand it back (chain_read); what they hand back is held
 * against the key again, since a file or a token object may have been swapped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define PEM_BEGIN "-----BEGIN "

/* ---- parsing ------------------------------------------------------------- */

/* A name as RFC 4514 text (X509_NAME_print_ex, XN_FLAG_RFC2253), in a new
 * string; NULL when out of memory. */
static char *name_text(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;

    if (bio && X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0)
        s = kv_bio_text(bio, NULL);
    BIO_free(bio);
    return s;
}

/* One certificate from DER that must be used up exactly; NULL when it is
 * not one (the OpenSSL error stays queued), *trailing set when bytes follow. */
static X509 *der_cert(const kv_ctx *ctx, const unsigned char *der, size_t len, size_t *trailing)
{
    const unsigned char *p = der;
    X509 *x = X509_new_ex(ctx->libctx, NULL);

    *trailing = 0;
    if (!x || len > LONG_MAX || !d2i_X509(&x, &p, (long)len)) {
        X509_free(x);
        return NULL;
    }
    *trailing = len - (size_t)(p - der);
    return x;
}

/* Offset of the first byte from off that is not white space. */
static size_t skip_blank(const char *p, size_t n, size_t off)
{
    while (off < n && (p[off] == ' ' || p[off] == '\t' || p[off] == '\r' || p[off] == '\n'))
        off++;
    return off;
}

/* Whether a PEM type name is plain enough to show ("PRIVATE KEY"). */
static bool plain_label(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 40)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == ' '))
            return false;
    return true;
}

/* Parse a PEM bundle: CERTIFICATE blocks only, nothing but white space
 * around and between them. */
static kv_rc parse_pem(const kv_ctx *ctx, const char *what, kv_rc bad,
                       const unsigned char *data, size_t len, STACK_OF(X509) *chain)
{
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    char *pname = NULL, *header = NULL;
    unsigned char *der = NULL;
    long derlen = 0;
    size_t off, trailing, pos;
    X509 *x = NULL;
    kv_rc rc = KV_OK;

    if (!bio)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (pos = 1;; pos++) {
        off = skip_blank((const char *)data, len, len - (size_t)BIO_pending(bio));
        if (off == len)
            break;
        if (len - off < strlen(PEM_BEGIN) || memcmp(data + off, PEM_BEGIN, strlen(PEM_BEGIN)))
            KV_FAIL(ctx, rc, bad, "%s: unexpected text at byte %zu, %s certificate %zu, where "
                    "a PEM '-----BEGIN CERTIFICATE-----' line or the end belongs", what, off,
                    pos > 1 ? "after" : "before", pos > 1 ? pos - 1 : pos);
        if (pos > KV_CHAIN_MAX)
            KV_FAIL(ctx, rc, bad, "%s holds more than %d certificates", what, KV_CHAIN_MAX);
        if (PEM_read_bio(bio, &pname, &header, &der, &derlen) != 1)
            KV_FAIL_OSSL(ctx, rc, bad, "%s: certificate %zu: malformed PEM", what, pos);
        if (strcmp(pname, "CERTIFICATE") != 0)
            KV_FAIL(ctx, rc, bad, "%s: certificate %zu: a PEM block of type '%s', not "
                    "CERTIFICATE", what, pos, plain_label(pname) ? pname : "(unusual)");
        if (header[0] != '\0')
            KV_FAIL(ctx, rc, bad, "%s: certificate %zu: PEM headers (an encrypted block?) "
                    "are not taken", what, pos);
        x = der_cert(ctx, der, (size_t)derlen, &trailing);
        if (!x)
            KV_FAIL_OSSL(ctx, rc, bad, "%s: certificate %zu: not an X.509 certificate", what,
                         pos);
        if (trailing)
            KV_FAIL(ctx, rc, bad, "%s: certificate %zu: %zu bytes follow the certificate "
                    "inside its PEM block", what, pos, trailing);
        if (!sk_X509_push(chain, x))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        x = NULL;
        OPENSSL_free(pname);
        OPENSSL_free(header);
        OPENSSL_free(der);
        pname = header = NULL;
        der = NULL;
    }
    if (sk_X509_num(chain) == 0)
        KV_FAIL(ctx, rc, bad, "%s holds no certificate", what);
out:
    X509_free(x);
    OPENSSL_free(pname);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(bio);
    return rc;
}

kv_rc kv_chain_parse(const kv_ctx *ctx, const char *what, kv_rc bad, const unsigned char *data,
                     size_t len, STACK_OF(X509) **out)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    size_t off = skip_blank((const char *)data, len, 0), trailing = 0;
    X509 *x = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!chain)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (len > KV_CERT_FILE_MAX)
        KV_FAIL(ctx, rc, bad, "%s is %zu bytes; at most %d are kept", what, len,
                KV_CERT_FILE_MAX);
    if (len - off >= strlen(PEM_BEGIN) && !memcmp(data + off, PEM_BEGIN, strlen(PEM_BEGIN))) {
        KV_CHECK(rc, parse_pem(ctx, what, bad, data, len, chain));
    } else {
        x = der_cert(ctx, data, len, &trailing);
        if (!x)
            KV_FAIL_OSSL(ctx, rc, bad, "%s: certificate 1: neither a PEM bundle nor a DER "
                         "certificate", what);
        if (trailing)
            KV_FAIL(ctx, rc, bad, "%s: certificate 1: %zu bytes follow the DER certificate "
                    "(a chain is given as a PEM bundle)", what, trailing);
        if (!sk_X509_push(chain, x))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        x = NULL;
    }
    *out = chain;
    chain = NULL;
out:
    kv_ossl_drop();
    X509_free(x);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

kv_rc kv_chain_pem(const kv_ctx *ctx, const STACK_OF(X509) *chain, char **pem, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    kv_rc rc = KV_OK;

    *pem = NULL;
    *len = 0;
    for (int i = 0; bio && i < sk_X509_num(chain); i++)
        if (PEM_write_bio_X509(bio, sk_X509_value(chain, i)) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot write certificate %d as PEM", i + 1);
    if (!bio || !(*pem = kv_bio_text(bio, len)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    BIO_free(bio);
    return rc;
}

/* ---- checks -------------------------------------------------------------- */

kv_rc kv_chain_check(const kv_ctx *ctx, const STACK_OF(X509) *chain, const char *name,
                     const EVP_PKEY *pub, kv_rc bad)
{
    int n = sk_X509_num(chain);
    char *subj = NULL, *iss = NULL, *next = NULL;
    /* what is checked: input, or what a backend kept */
    const char *the = bad == KV_ERR_CORRUPT ? "the stored chain" : "the chain";
    kv_rc rc = KV_OK;

    if (n < 1 || n > KV_CHAIN_MAX)
        KV_FAIL(ctx, rc, bad, "key '%s': a chain holds 1 to %d certificates, not %d", name,
                KV_CHAIN_MAX, n);
    if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(chain, 0)), pub) != 1)
        KV_FAIL(ctx, rc, bad, "%s's leaf is not the certificate of key '%s' (it holds another "
                "public key)%s", the, name,
                bad == KV_ERR_CORRUPT ? ": it was swapped or altered" : "");
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            if (X509_cmp(sk_X509_value(chain, i), sk_X509_value(chain, j)) == 0)
                KV_FAIL(ctx, rc, bad, "key '%s': certificate %d of %s is certificate %d again",
                        name, i + 1, the, j + 1);
    for (int i = 0; i + 1 < n; i++) {
        X509 *x = sk_X509_value(chain, i), *up = sk_X509_value(chain, i + 1);
        EVP_PKEY *uppub = X509_get0_pubkey(up);

        subj = name_text(X509_get_subject_name(x));
        iss = name_text(X509_get_issuer_name(x));
        next = name_text(X509_get_subject_name(up));
        if (!subj || !iss || !next)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        if (uppub && EVP_PKEY_eq(uppub, pub) == 1)
            KV_FAIL(ctx, rc, bad, "key '%s': certificate %d of %s ('%s') holds the key's "
                    "own public key; a chain holds it in its leaf only", name, i + 2, the, next);
        if (X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(up)) != 0)
            KV_FAIL(ctx, rc, bad, "key '%s': certificate %d of %s ('%s') is issued by '%s', "
                    "not by certificate %d ('%s'): a chain goes leaf first, each certificate "
                    "followed by its issuer", name, i + 1, the, subj, iss, i + 2, next);
        if (!uppub || X509_verify(x, uppub) != 1)
            KV_FAIL_OSSL(ctx, rc, bad, "key '%s': the signature of certificate %d of %s ('%s') "
                         "does not verify with the public key of certificate %d ('%s')", name,
                         i + 1, the, subj, i + 2, next);
        free(subj);
        free(iss);
        free(next);
        subj = iss = next = NULL;
    }
out:
    kv_ossl_drop(); /* EVP_PKEY_eq of two key types */
    free(subj);
    free(iss);
    free(next);
    return rc;
}

/* The key's chain from its backend, checked again (KV_ERR_CORRUPT). */
kv_rc kv_chain_get(kv_key *key, STACK_OF(X509) **chain)
{
    kv_ctx *ctx = key->ctx;
    kv_rc rc;

    *chain = NULL;
    if (!key->be->ops->chain_read)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend %s cannot keep certificates",
                        key->be->name);
    KV_CHECK(rc, key->be->ops->chain_read(key, chain));
    rc = kv_chain_check(ctx, *chain, key->name, key->pub, KV_ERR_CORRUPT);
out:
    if (rc != KV_OK) {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
    }
    return rc;
}

/* Parse, check and store; `one` asks for exactly one certificate. */
static kv_rc chain_put(kv_key *key, const unsigned char *data, size_t len, bool one)
{
    kv_ctx *ctx = key->ctx;
    STACK_OF(X509) *chain = NULL;
    char *pem = NULL;
    size_t pemlen = 0;
    kv_rc rc;

    if (!key->be->ops->chain_store)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend %s cannot keep certificates",
                        key->be->name);
    KV_CHECK(rc, kv_chain_parse(ctx, one ? "the certificate" : "the chain", KV_ERR_BAD_INPUT,
                                data, len, &chain));
    if (one && sk_X509_num(chain) != 1)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "kv_key_store_cert takes one certificate, not %d "
                "(kv_key_store_chain takes a chain)", sk_X509_num(chain));
    KV_CHECK(rc, kv_chain_check(ctx, chain, key->name, key->pub, KV_ERR_BAD_INPUT));
    /* as kept in a file, the chain must fit the cap it is read back under */
    KV_CHECK(rc, kv_chain_pem(ctx, chain, &pem, &pemlen));
    if (pemlen > KV_CERT_FILE_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the chain takes %zu bytes as PEM; at most %d are "
                "kept", pemlen, KV_CERT_FILE_MAX);
    rc = key->be->ops->chain_store(key, chain);
out:
    free(pem);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* ---- public functions ------------------------------------------------------ */

kv_rc kv_key_store_cert(kv_key *key, const unsigned char *cert, size_t len)
{
    kv_rc rc;

    KV_CALL_BEGIN(key->ctx);
    rc = chain_put(key, cert, len, true);
    kv_audit_event(key->ctx, KV_AUDIT_CERT_STORE, key->name, key->version, key->be->name, rc, "certificate");
    return rc;
}

kv_rc kv_key_store_chain(kv_key *key, const unsigned char *data, size_t len)
{
    kv_rc rc;

    KV_CALL_BEGIN(key->ctx);
    rc = chain_put(key, data, len, false);
    kv_audit_event(key->ctx, KV_AUDIT_CERT_STORE, key->name, key->version, key->be->name, rc, "chain");
    return rc;
}

kv_rc kv_key_cert_der(kv_key *key, unsigned char *buf, size_t *len)
{
    kv_ctx *ctx = key->ctx;
    STACK_OF(X509) *chain = NULL;
    unsigned char *der = NULL;
    int n;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    KV_CHECK(rc, kv_chain_get(key, &chain));
    n = i2d_X509(sk_X509_value(chain, 0), &der);
    if (n <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the certificate of '%s'", key->name);
    rc = kv_copy_out(ctx, "the certificate", der, (size_t)n, buf, len);
out:
    if (rc != KV_OK && rc != KV_ERR_BUFFER_TOO_SMALL)
        *len = 0;
    OPENSSL_free(der);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

kv_rc kv_key_chain_pem(kv_key *key, char **pem)
{
    STACK_OF(X509) *chain = NULL;
    size_t len;
    kv_rc rc;

    KV_CALL_BEGIN(key->ctx);
    *pem = NULL;
    KV_CHECK(rc, kv_chain_get(key, &chain));
    rc = kv_chain_pem(key->ctx, chain, pem, &len);
out:
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* ---- certificate facts ------------------------------------------------------ */

kv_rc kv_renew_threshold(const kv_ctx *ctx, const kv_config *cfg, long *percent)
{
    const char *v = kv_config_get(cfg, "x509", "renew_threshold");
    char *end;
    long n;

    *percent = 0;
    if (!v)
        return KV_OK;
    n = strtol(v, &end, 10);
    if (end == v || v[0] < '0' || v[0] > '9' || strcmp(end, "%") != 0 || n < 1 || n > 99)
        return kv_error(ctx, KV_ERR_CONFIG, "[x509] renew_threshold = '%.32s': expected a "
                        "percentage of the certificate's lifetime from 1%% to 99%%, such as "
                        "67%%", v);
    *percent = n;
    return KV_OK;
}

/* Seconds since the epoch of an ASN1_TIME. */
static bool time_of(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* Append text to a growing string; false when out of memory. */
static bool append(char **s, size_t *n, const char *text, size_t len)
{
    char *more = realloc(*s, *n + len + 1);

    if (!more)
        return false;
    memcpy(more + *n, text, len);
    *n += len;
    more[*n] = '\0';
    *s = more;
    return true;
}

/* prefix + an IA5String from a certificate, with bytes outside printable
 * ASCII written as \xHH: a hostile certificate cannot put control
 * characters into what a program prints. */
static char *san_ia5(const char *prefix, const ASN1_STRING *str)
{
    const unsigned char *d = ASN1_STRING_get0_data(str);
    int len = ASN1_STRING_length(str);
    char *s = NULL, hex[5];
    size_t n = 0;

    if (!append(&s, &n, prefix, strlen(prefix)))
        return NULL;
    for (int i = 0; i < len; i++) {
        bool ok = d[i] >= 0x20 && d[i] < 0x7f && d[i] != '\\';
        if (!ok)
            snprintf(hex, sizeof(hex), "\\x%02X", d[i]);
        if (!(ok ? append(&s, &n, (const char *)&d[i], 1) : append(&s, &n, hex, 4))) {
            free(s);
            return NULL;
        }
    }
    return s;
}

/* One subject alternative name as "kind:value"; NULL when out of memory. */
static char *san_text(const GENERAL_NAME *g)
{
    char buf[INET6_ADDRSTRLEN], oid[80], *dn, *s;
    const ASN1_OCTET_STRING *ip;

    switch (g->type) {
    case GEN_DNS:
        return san_ia5("dns:", g->d.dNSName);
    case GEN_URI:
        return san_ia5("uri:", g->d.uniformResourceIdentifier);
    case GEN_EMAIL:
        return san_ia5("email:", g->d.rfc822Name);
    case GEN_IPADD:
        ip = g->d.iPAddress;
        if ((ip->length == 4 && inet_ntop(AF_INET, ip->data, buf, sizeof(buf))) ||
            (ip->length == 16 && inet_ntop(AF_INET6, ip->data, buf, sizeof(buf))))
            return kv_asprintf("ip:%s", buf);
        return kv_asprintf("ip:(%d bytes, not an address)", ip->length);
    case GEN_DIRNAME:
        dn = name_text(g->d.directoryName);
        s = dn ? kv_asprintf("dirname:%s", dn) : NULL;
        free(dn);
        return s;
    case GEN_OTHERNAME:
        OBJ_obj2txt(oid, sizeof(oid), g->d.otherName->type_id, 1);
        return kv_asprintf("othername:%s", oid);
    case GEN_RID:
        OBJ_obj2txt(oid, sizeof(oid), g->d.registeredID, 1);
        return kv_asprintf("rid:%s", oid);
    default:
        return kv_asprintf("other:%d", g->type);
    }
}

void kv_cert_info_free(kv_cert_info *info)
{
    if (!info)
        return;
    free(info->subject);
    free(info->issuer);
    free(info->serial);
    for (size_t i = 0; i < info->nsans; i++)
        free(info->sans[i]);
    free(info->sans);
    free(info);
}

kv_rc kv_key_cert_info(kv_key *key, kv_cert_info **out)
{
    kv_ctx *ctx = key->ctx;
    STACK_OF(X509) *chain = NULL;
    GENERAL_NAMES *gens = NULL;
    kv_cert_info *info = NULL;
    BIGNUM *bn = NULL;
    char *hex = NULL;
    X509 *x;
    int64_t now = (int64_t)time(NULL), life, left;
    long pct;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    KV_CHECK(rc, kv_renew_threshold(ctx, ctx->cfg, &pct));
    KV_CHECK(rc, kv_chain_get(key, &chain));
    x = sk_X509_value(chain, 0);
    info = calloc(1, sizeof(*info));
    if (!info)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    info->subject = name_text(X509_get_subject_name(x));
    info->issuer = name_text(X509_get_issuer_name(x));
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    hex = bn ? BN_bn2hex(bn) : NULL;
    info->serial = kv_strdup(hex);
    if (!info->subject || !info->issuer || !info->serial)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (gens && sk_GENERAL_NAME_num(gens) > 0) {
        info->sans = calloc((size_t)sk_GENERAL_NAME_num(gens), sizeof(*info->sans));
        if (!info->sans)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
            if (!(info->sans[info->nsans] = san_text(sk_GENERAL_NAME_value(gens, i))))
                KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
            info->nsans++;
        }
    }
    if (!time_of(X509_get0_notBefore(x), &info->not_before) ||
        !time_of(X509_get0_notAfter(x), &info->not_after))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "key '%s': the certificate's validity cannot be "
                     "read", key->name);
    life = info->not_after > info->not_before ? info->not_after - info->not_before : 0;
    /* 2/3 of the lifetime by default, as aziot-certd's auto_renew */
    info->renew_after = info->not_before + (pct ? life / 100 * pct + life % 100 * pct / 100
                                                : life / 3 * 2 + life % 3 * 2 / 3);
    left = info->not_after - now;
    info->days_left = (long)(left >= 0 ? left / 86400 : -((-left + 86399) / 86400));
    info->renewal_due = now >= info->renew_after;
    info->expired = now > info->not_after;
    info->is_ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;
    info->chain_len = (size_t)sk_X509_num(chain);
    *out = info;
    info = NULL;
out:
    kv_ossl_drop();
    kv_cert_info_free(info);
    GENERAL_NAMES_free(gens);
    OPENSSL_free(hex);
    BN_free(bn);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/*
 * Trust anchors from a PEM file (a policy's [trust] files, enrollment's EK
 * anchors). Read with the library's capped reader: a regular file of at
 * most KV_ANCHORS_FILE_MAX bytes (a FIFO or a device is refused, not waited
 * on), parsed from memory, at most KV_ANCHORS_MAX certificates. Other PEM
 * blocks are passed over, as X509_STORE_load_file does. Every failure is
 * KV_ERR_CONFIG, its message starting with `what`.
 */
kv_rc kv_anchors_load(kv_ctx *ctx, const char *what, const char *path, X509_STORE *store, int *n)
{
    char *buf = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    unsigned long e;
    kv_err_mark mark = kv_err_mark_get(ctx);
    kv_rc rc = KV_OK;

    *n = 0;
    if (kv_read_file(ctx, path, KV_ANCHORS_FILE_MAX, &buf, &len) != KV_OK) {
        /* the reader's detail (it names the file and the problem), as a
         * configuration error of `what` */
        char detail[512];
        snprintf(detail, sizeof(detail), "%s", kv_errmsg(ctx));
        kv_err_rewind(ctx, mark);
        return kv_error(ctx, KV_ERR_CONFIG, "%s: %s", what, detail);
    }
    if (!(bio = BIO_new_mem_buf(buf, (int)len)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (*n == KV_ANCHORS_MAX)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: '%s' holds more than %d certificates", what,
                    path, KV_ANCHORS_MAX);
        if (X509_STORE_add_cert(store, x) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CONFIG, "%s: cannot add a certificate of '%s'", what,
                         path);
        X509_free(x);
        x = NULL;
        (*n)++;
    }
    /* the end of the PEM blocks, or a certificate that does not parse */
    e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
        kv_ossl_drop();
    else
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CONFIG, "%s: '%s': certificate %d does not parse", what,
                     path, *n + 1);
out:
    X509_free(x);
    BIO_free(bio);
    free(buf);
    return rc;
}
