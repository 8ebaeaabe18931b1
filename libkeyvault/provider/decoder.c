/*
 * decoder.c - the keyvault provider's decoders for the two PEM types that
 * name vault keys, so that a program reading its private key from a PEM
 * file (PEM_read_bio_PrivateKey, SSL_CTX_use_PrivateKey_file: nginx, curl,
 * Python's ssl; the openssl tools' file: store loader) gets the vault key
 * once the provider is activated in its openssl.cnf:
 *
 *   "KEYVAULT KEY REFERENCE" (kv_key_reference_pem, `keyvault reference`),
 *       opened with kv_key_open_reference;
 *   "TSS2 PRIVATE KEY" (the TPM backend's key files, tpm2-openssl's),
 *       opened with kv_key_open_tpm_file.
 *
 * Two steps, as OpenSSL's own decoders and tpm2-openssl's go: PEM -> DER
 * with the structure named ("keyvault-reference", "TSS2"), then DER -> our
 * key object, one decoder per key management name. The file: store loader
 * of the openssl tools only chains decoders that end in DER, and it hands
 * the DER on without the structure, so the DER decoders recognise their own
 * DER by its shape and leave anything else alone.
 *
 * Only these two types are ours: any other PEM block is passed over, and
 * any other DER (an ordinary key) leaves these decoders empty-handed, so
 * ordinary keys keep going to the default provider's decoders whatever the
 * provider order. The key is opened in the provider's kv_ctx and goes to
 * our key management as an OSSL_OBJECT_PARAM_REFERENCE.
 */
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "prov.h"

#define KEYREF_PEM_NAME "KEYVAULT KEY REFERENCE"
#define TSS2_PEM_NAME "TSS2 PRIVATE KEY"
#define KEYREF_STRUCTURE "keyvault-reference"
#define TSS2_STRUCTURE "TSS2"
/* The TCG's arc for TSS2 key files (2.23.133.10.1.3 is a loadable key);
 * a key file of another kind in it is ours to refuse clearly. */
#define TSS2_OID_ARC "2.23.133.10.1."
/* What kv_key_open_reference takes (kv_key_open_tpm_file takes less) */
#define DEC_MAX_INPUT (64 * 1024)

static void *dec_newctx(void *provctx)
{
    return provctx; /* no state of its own: the provider context serves */
}

static void dec_freectx(void *vctx)
{
    (void)vctx;
}

static int dec_does_selection(void *provctx, int selection)
{
    (void)provctx;
    /* a key, or anything; never domain parameters alone */
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

/* The whole input, at most DEC_MAX_INPUT + 1 bytes (so that a longer input
 * is refused where it is opened, not cut here); *len its length. NULL when
 * out of memory or unreadable. */
static unsigned char *read_all(BIO *in, size_t *len)
{
    unsigned char *buf = OPENSSL_malloc(DEC_MAX_INPUT + 2);
    size_t used = 0;

    *len = 0;
    if (!buf)
        return NULL;
    while (used < DEC_MAX_INPUT + 1) {
        size_t n = 0;
        if (!BIO_read_ex(in, buf + used, DEC_MAX_INPUT + 1 - used, &n) || n == 0)
            break;
        used += n;
    }
    buf[used] = '\0';
    *len = used;
    return buf;
}

/* ---- PEM -> DER ------------------------------------------------------------ */

static const char *der_kind(const unsigned char *der, size_t len);

/* The first block of one of our PEM types (blocks of other kinds before it,
 * such as a certificate, are passed over) as DER, with its structure name.
 * Returns 1 with *der NULL when the input holds none (not ours). */
static int pem_block(kvp_provctx *pc, const unsigned char *text, size_t len, unsigned char **der,
                     long *derlen, const char **structure)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    char *name = NULL, *header = NULL;
    const char *what = strstr((const char *)text, "-----BEGIN " TSS2_PEM_NAME "-----")
                           ? TSS2_PEM_NAME : KEYREF_PEM_NAME;
    int ok = 0;

    *der = NULL;
    if (!bio) {
        kvp_raise(pc, KVP_R_INTERNAL, "out of memory");
        return 0;
    }
    for (;;) {
        ERR_set_mark();
        int got = PEM_read_bio(bio, &name, &header, der, derlen);
        ERR_pop_to_mark(); /* reported below, in our words */
        if (!got) {
            kvp_raise(pc, KVP_R_BAD_PARAM, "decoder: no PEM \"%s\" block that decodes in the "
                      "input (damaged base64, or no END line)", what);
            goto out;
        }
        *structure = !strcmp(name, TSS2_PEM_NAME)     ? TSS2_STRUCTURE
                     : !strcmp(name, KEYREF_PEM_NAME) ? KEYREF_STRUCTURE
                                                      : NULL;
        OPENSSL_free(name);
        OPENSSL_free(header);
        name = header = NULL;
        if (*structure)
            break;
        OPENSSL_free(*der);
        *der = NULL;
    }
    ok = 1;
out:
    BIO_free(bio);
    return ok;
}

static int pem2der_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                          void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kvp_provctx *pc = vctx;
    BIO *in = NULL;
    unsigned char *text = NULL, *der = NULL;
    size_t len = 0;
    long derlen = 0;
    const char *structure = NULL, *kind;
    OSSL_PARAM params[3];
    int ok = 0;

    (void)selection;
    (void)pw_cb; /* nothing of ours is encrypted */
    (void)pw_cbarg;
    if (!(in = BIO_new_from_core_bio(pc->publibctx, cin))) {
        kvp_raise(pc, KVP_R_INTERNAL, "decoder: cannot read the input (no core BIO)");
        goto out;
    }
    ERR_set_mark(); /* a failed read is the next decoder's business */
    text = read_all(in, &len);
    ERR_pop_to_mark();
    if (!text || (!strstr((char *)text, "-----BEGIN " KEYREF_PEM_NAME "-----") &&
                  !strstr((char *)text, "-----BEGIN " TSS2_PEM_NAME "-----"))) {
        ok = 1; /* not ours: empty-handed, the next decoder tries */
        goto out;
    }
    /* ours from here: a failure is an error the caller sees */
    if (len > DEC_MAX_INPUT) {
        kvp_raise(pc, KVP_R_BAD_PARAM, "decoder: a key file of more than %d bytes",
                  DEC_MAX_INPUT);
        goto out;
    }
    if (!pem_block(pc, text, len, &der, &derlen, &structure)) /* raised */
        goto out;
    kind = der_kind(der, (size_t)derlen);
    if (!kind || strcmp(kind, structure) != 0) {
        const char *t = !strcmp(structure, TSS2_STRUCTURE) ? TSS2_PEM_NAME : KEYREF_PEM_NAME;
        kvp_raise(pc, KVP_R_BAD_PARAM,
                  "decoder: the PEM \"%s\" block does not hold one (its DER does not decode "
                  "as one)", t);
        goto out;
    }
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)derlen);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                                 (char *)structure, 0);
    params[2] = OSSL_PARAM_construct_end();
    ok = data_cb(params, data_cbarg);
out:
    OPENSSL_free(der);
    OPENSSL_free(text);
    BIO_free(in);
    return ok;
}

/* ---- DER -> key -------------------------------------------------------------- */

/* Which of ours a DER is, by its outer shape (the file: store loader does
 * not say): a SEQUENCE whose first element is an OID of the TCG's TSS2 key
 * arc (TSS2), or a SEQUENCE { INTEGER, UTF8String } (a key reference).
 * NULL for anything else, such as an ordinary key's DER. */
static const char *der_kind(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    ASN1_SEQUENCE_ANY *seq;
    const char *kind = NULL;
    char oid[64];

    if (len < 2 || der[0] != 0x30)
        return NULL;
    ERR_set_mark();
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)len);
    ERR_pop_to_mark();
    if (!seq || p != der + len || sk_ASN1_TYPE_num(seq) < 2)
        goto out;
    const ASN1_TYPE *first = sk_ASN1_TYPE_value(seq, 0);
    if (first->type == V_ASN1_OBJECT &&
        OBJ_obj2txt(oid, sizeof(oid), first->value.object, 1) > 0 &&
        !strncmp(oid, TSS2_OID_ARC, strlen(TSS2_OID_ARC)))
        kind = TSS2_STRUCTURE;
    else if (sk_ASN1_TYPE_num(seq) == 2 && first->type == V_ASN1_INTEGER &&
             sk_ASN1_TYPE_value(seq, 1)->type == V_ASN1_UTF8STRING)
        kind = KEYREF_STRUCTURE;
out:
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    return kind;
}

static int der2key_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                          void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kvp_provctx *pc = vctx;
    BIO *in = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    kv_ctx *kv = NULL;
    kv_key *key = NULL;
    kvp_key *k = NULL;
    const char *kind, *type, *what;
    int objtype = OSSL_OBJECT_PKEY, ok = 0;
    OSSL_PARAM params[4];
    kv_rc rc;

    (void)selection; /* checked by does_selection */
    (void)pw_cb;     /* PINs and auth values come from the vault's configuration */
    (void)pw_cbarg;
    if (!(in = BIO_new_from_core_bio(pc->publibctx, cin))) {
        kvp_raise(pc, KVP_R_INTERNAL, "decoder: cannot read the input (no core BIO)");
        goto out;
    }
    ERR_set_mark();
    der = read_all(in, &len);
    ERR_pop_to_mark();
    if (!der || len > DEC_MAX_INPUT || !(kind = der_kind(der, len))) {
        ok = 1; /* not ours: empty-handed, the next decoder tries */
        goto out;
    }
    /* ours from here: a failure is an error the caller sees */
    if (kvp_provctx_kv(pc, &kv) != KV_OK) /* raised */
        goto out;
    if (!strcmp(kind, TSS2_STRUCTURE)) {
        what = "decoder: cannot open the TPM key of a " TSS2_PEM_NAME;
        rc = kv_key_open_tpm_file(kv, der, len, &key);
    } else {
        what = "decoder: cannot open the key a " KEYREF_PEM_NAME " names";
        rc = kv_key_open_reference(kv, der, len, &key);
    }
    if (rc != KV_OK) {
        kvp_raise_kv(pc, kv, rc, what);
        goto out;
    }
    if (!(k = kvp_key_from_vault(pc, kv, key, 1))) /* raised; key freed */
        goto out;
    if (!(type = kvp_key_type_name(k))) {
        kvp_raise(pc, KVP_R_UNSUPPORTED, "decoder: the key is of a type the provider does not offer");
        goto out;
    }
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)type, 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    params[3] = OSSL_PARAM_construct_end();
    /* keymgmt's load takes a reference of its own */
    ok = data_cb(params, data_cbarg);
out:
    kvp_key_free(k);
    OPENSSL_free(der);
    BIO_free(in);
    return ok;
}

static const OSSL_DISPATCH pem2der_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))pem2der_decode },
    { 0, NULL },
};

static const OSSL_DISPATCH der2key_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))der2key_decode },
    { 0, NULL },
};

/* The DER decoders: one entry per key management name and structure, as
 * OpenSSL picks decoders by the key types they may end in and the
 * structure the PEM step named; whichever runs first hands out the key, of
 * whatever type it is (the object's data type names our key management
 * for it). A TPM holds no Ed25519 key. */
#define PEM_PROPS KVP_PROPS ",input=pem"
#define DER_PROPS(s) KVP_PROPS ",input=der,structure=" s
#define DESC(t) "keyvault: DER of a " t
const OSSL_ALGORITHM kvp_decoder_algs[] = {
    { "DER", PEM_PROPS, pem2der_functions,
      "keyvault: PEM " KEYREF_PEM_NAME " and " TSS2_PEM_NAME " to DER" },
    { "EC", DER_PROPS(KEYREF_STRUCTURE), der2key_functions, DESC(KEYREF_PEM_NAME) },
    { "RSA", DER_PROPS(KEYREF_STRUCTURE), der2key_functions, DESC(KEYREF_PEM_NAME) },
    { "ED25519", DER_PROPS(KEYREF_STRUCTURE), der2key_functions, DESC(KEYREF_PEM_NAME) },
    { "EC", DER_PROPS(TSS2_STRUCTURE), der2key_functions, DESC(TSS2_PEM_NAME) },
    { "RSA", DER_PROPS(TSS2_STRUCTURE), der2key_functions, DESC(TSS2_PEM_NAME) },
    { NULL, NULL, NULL, NULL },
};
