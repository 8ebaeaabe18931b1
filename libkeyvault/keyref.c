/*
 * keyref.c - key references: a PEM "KEYVAULT KEY REFERENCE" that names a
 * vault key without holding anything secret, so that a program reading its
 * key from a PEM file (nginx, curl, Python's ssl) is handed the vault key by
 * the OpenSSL provider's decoder.
 *
 *   KeyvaultKeyReference ::= SEQUENCE {
 *       version INTEGER (1),
 *       ref     UTF8String      -- a key name, or a URI kv_key_open takes
 *   }
 *
 * The ref never carries a secret: a pkcs11: URI with a pin-value is refused
 * both ways (pin-source, a file's path, is allowed).
 */
#include "config.h"

#include <string.h>
#include <strings.h>
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#ifdef KV_WITH_PKCS11
#include <p11-kit/uri.h>
#endif

#include "internal.h"

#define KEYREF_PEM_NAME "KEYVAULT KEY REFERENCE"
#define KEYREF_VERSION 1
#define KEYREF_MAX_REF 4096
#define KEYREF_MAX_INPUT (64 * 1024)

typedef struct kv_keyref_st {
    ASN1_INTEGER *version;
    ASN1_UTF8STRING *ref;
} KV_KEYREF;

ASN1_SEQUENCE(KV_KEYREF) = {
    ASN1_SIMPLE(KV_KEYREF, version, ASN1_INTEGER),
    ASN1_SIMPLE(KV_KEYREF, ref, ASN1_UTF8STRING),
} static_ASN1_SEQUENCE_END(KV_KEYREF)

/* Whether ref may stand in a reference: printable ASCII (a name, or a URI
 * with its percent-encoding), and no pin-value in a pkcs11: URI. Messages
 * never show ref: a PIN typed into it must not come back. */
static kv_rc ref_check(const kv_ctx *ctx, const char *ref, size_t len)
{
    kv_rc rc = KV_OK;

    if (len == 0 || len > KEYREF_MAX_REF)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key reference is %s (1-%d characters)",
                len ? "too long" : "empty", KEYREF_MAX_REF);
    for (size_t i = 0; i < len; i++)
        if (ref[i] <= 0x20 || ref[i] >= 0x7f)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                    "the key reference holds a character other than printable ASCII "
                    "(at offset %zu; not shown)", i);
    if (!strncasecmp(ref, "pkcs11:", 7)) { /* a URI's scheme has no case */
#ifdef KV_WITH_PKCS11
        P11KitUri *uri = p11_kit_uri_new();
        int r;
        if (!uri)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        r = p11_kit_uri_parse(ref, P11_KIT_URI_FOR_ANY, uri);
        if (r == P11_KIT_URI_OK && p11_kit_uri_get_pin_value(uri))
            rc = kv_error(ctx, KV_ERR_BAD_URI,
                          "the key reference's pkcs11: URI carries a pin-value: a reference "
                          "holds no secret (use pin-source, or the configured token's PIN)");
        else if (r != P11_KIT_URI_OK)
            rc = kv_error(ctx, KV_ERR_BAD_URI,
                          "the key reference's pkcs11: URI does not parse: %s (not shown)",
                          p11_kit_uri_message(r));
        /* p11-kit frees its copy of the PIN without wiping it */
        const char *pin = p11_kit_uri_get_pin_value(uri);
        if (pin)
            OPENSSL_cleanse((char *)pin, strlen(pin));
        p11_kit_uri_free(uri);
#else
        KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE,
                "the key reference names a pkcs11: URI, and this build has no PKCS#11 backend");
#endif
    }
out:
    return rc;
}

kv_rc kv_key_reference_pem(kv_key *key, unsigned flags, char **pem)
{
    const char *ref = (flags & KV_REF_BY_NAME) ? key->name : key->uri;
    KV_KEYREF *kr = NULL;
    unsigned char *der = NULL;
    BIO *bio = NULL;
    int derlen = 0;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(key->ctx);
    *pem = NULL;
    if (flags & ~KV_REF_BY_NAME)
        KV_FAIL(key->ctx, rc, KV_ERR_INVALID_ARG, "kv_key_reference_pem: unknown flags 0x%x",
                flags & ~KV_REF_BY_NAME);
    if (key->from_data)
        KV_FAIL(key->ctx, rc, KV_ERR_UNSUPPORTED,
                "the key was opened from a key file's bytes (kv_key_open_tpm_file): it has no "
                "name or URI a reference could hold; reference the file by its tpm2:file= URI");
    KV_CHECK(rc, ref_check(key->ctx, ref, strlen(ref)));
    if (!(kr = (KV_KEYREF *)ASN1_item_new(ASN1_ITEM_rptr(KV_KEYREF))) ||
        !ASN1_INTEGER_set_int64(kr->version, KEYREF_VERSION) ||
        !ASN1_STRING_set(kr->ref, ref, (int)strlen(ref)))
        KV_FAIL_OSSL(key->ctx, rc, KV_ERR_NO_MEMORY, "cannot build the key reference of '%s'",
                     key->name);
    derlen = ASN1_item_i2d((ASN1_VALUE *)kr, &der, ASN1_ITEM_rptr(KV_KEYREF));
    if (derlen <= 0)
        KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot encode the key reference of '%s'",
                     key->name);
    if (!(bio = BIO_new(BIO_s_mem())) || PEM_write_bio(bio, KEYREF_PEM_NAME, "", der, derlen) <= 0)
        KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot write the key reference of '%s'",
                     key->name);
    if (!(*pem = kv_bio_text(bio, NULL)))
        KV_FAIL(key->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    BIO_free(bio);
    OPENSSL_free(der);
    ASN1_item_free((ASN1_VALUE *)kr, ASN1_ITEM_rptr(KV_KEYREF));
    return rc;
}

/* The DER of the first KEYVAULT KEY REFERENCE block in a PEM text (other
 * blocks before it, such as a certificate, are passed over). */
static kv_rc ref_from_pem(const kv_ctx *ctx, const unsigned char *data, size_t len,
                          unsigned char **der, long *derlen)
{
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    char *name = NULL, *header = NULL;
    kv_rc rc = KV_OK;

    *der = NULL;
    if (!bio)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* PEM_FLAG_SECURE: the decoded DER, which may hold a PIN typed into the
     * reference, and OpenSSL's buffers on the way are wiped when freed */
    for (;;) {
        int got = PEM_read_bio_ex(bio, &name, &header, der, derlen,
                                  PEM_FLAG_SECURE | PEM_FLAG_EAY_COMPATIBLE);
        kv_ossl_drop(); /* the end of the text is not an error here */
        if (!got)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "no PEM \"" KEYREF_PEM_NAME "\" block in the input");
        bool ours = !strcmp(name, KEYREF_PEM_NAME);
        OPENSSL_secure_free(name);
        OPENSSL_secure_free(header);
        name = header = NULL;
        if (ours)
            break;
        OPENSSL_secure_clear_free(*der, (size_t)*derlen);
        *der = NULL;
    }
out:
    BIO_free(bio);
    return rc;
}

kv_rc kv_key_open_reference(kv_ctx *ctx, const unsigned char *data, size_t len, kv_key **out)
{
    const unsigned char *p;
    unsigned char *pemder = NULL;
    long derlen = (long)len;
    KV_KEYREF *kr = NULL;
    char *ref = NULL;
    int64_t version;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    if (len == 0 || len > KEYREF_MAX_INPUT)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "a key reference is 1 to %d bytes, not %zu",
                KEYREF_MAX_INPUT, len);
    p = data;
    if (data[0] != 0x30) { /* not a DER SEQUENCE: PEM text */
        KV_CHECK(rc, ref_from_pem(ctx, data, len, &pemder, &derlen));
        p = pemder;
    }
    const unsigned char *end = p + derlen;
    kr = (KV_KEYREF *)ASN1_item_d2i(NULL, &p, derlen, ASN1_ITEM_rptr(KV_KEYREF));
    if (!kr)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "the key reference does not decode");
    if (p != end)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the key reference has %ld bytes after its end",
                (long)(end - p));
    if (!ASN1_INTEGER_get_int64(&version, kr->version) || version != KEYREF_VERSION) {
        kv_ossl_drop();
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                "the key reference's version is not %d, the only one this library reads",
                KEYREF_VERSION);
    }
    size_t reflen = (size_t)ASN1_STRING_length(kr->ref);
    KV_CHECK(rc, ref_check(ctx, (const char *)ASN1_STRING_get0_data(kr->ref), reflen));
    if (!(ref = OPENSSL_strndup((const char *)ASN1_STRING_get0_data(kr->ref), reflen)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_key_open(ctx, ref, out);
out:
    /* a refused reference may hold a PIN (a pkcs11: URI's pin-value): its
     * decoded copies are wiped */
    OPENSSL_free(ref);
    if (pemder)
        OPENSSL_secure_clear_free(pemder, (size_t)derlen);
    if (kr && kr->ref)
        OPENSSL_cleanse((void *)ASN1_STRING_get0_data(kr->ref), (size_t)ASN1_STRING_length(kr->ref));
    ASN1_item_free((ASN1_VALUE *)kr, ASN1_ITEM_rptr(KV_KEYREF));
    return rc;
}
