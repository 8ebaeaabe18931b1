/*
 * decoder.c - the keyvault provider's decoder for PEM "KEYVAULT KEY
 * REFERENCE" files (kv_key_reference_pem, `keyvault reference`), so that a
 * program reading its private key from a PEM file (PEM_read_bio_PrivateKey,
 * SSL_CTX_use_PrivateKey_file: nginx, curl, Python's ssl) gets the vault key
 * once the provider is activated in its openssl.cnf.
 *
 * Only that PEM type is ours: any other PEM block is passed over, and an
 * input without our block leaves this decoder empty-handed, so ordinary
 * keys keep going to the default provider's decoders whatever the provider
 * order. The reference itself (its DER, version and ref, no pin-value) is
 * checked and opened by kv_key_open_reference in the provider's kv_ctx; the
 * key goes to our key management as an OSSL_OBJECT_PARAM_REFERENCE.
 *
 * TSS2 PRIVATE KEY files are not decoded here: the public API opens a TPM
 * key file by its path only (tpm2:file=), and a decoder is handed bytes.
 */
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "prov.h"

#define KEYREF_PEM_NAME "KEYVAULT KEY REFERENCE"
/* PEM blocks looked at before giving up: a certificate bundle in front of
 * the reference is fine, a file of thousands is not ours */
#define DEC_MAX_BLOCKS 16
#define DEC_MAX_INPUT (256 * 1024)

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

/* The DER of the first KEYVAULT KEY REFERENCE block in `in`: 1 and *der
 * set when there is one, 1 and *der NULL when there is none (not ours), 0
 * when the input begins one that does not end. The input is read whole
 * (up to DEC_MAX_INPUT) into memory first, so that such a block can be told
 * from input that is not ours. (OpenSSL 3.0's file: store loader hands
 * decoders fragments of a file: a reference read through it, as by
 * `openssl pkey -in FILE`, ends here; docs/provider.md.) */
static int read_reference(BIO *in, unsigned char **der, long *derlen)
{
    char *name = NULL, *header = NULL, *buf = NULL;
    size_t used = 0;
    BIO *mem = NULL;
    int ok = 1;

    *der = NULL;
    if (!(buf = OPENSSL_malloc(DEC_MAX_INPUT + 1)))
        return 0;
    while (used < DEC_MAX_INPUT) {
        size_t n = 0;
        if (!BIO_read_ex(in, buf + used, DEC_MAX_INPUT - used, &n) || n == 0)
            break;
        used += n;
    }
    buf[used] = '\0';
    ERR_set_mark();
    if (used == 0 || !(mem = BIO_new_mem_buf(buf, (int)used)))
        goto out;
    for (int i = 0; i < DEC_MAX_BLOCKS; i++) {
        int ours;
        if (!PEM_read_bio(mem, &name, &header, der, derlen))
            break;
        ours = !strcmp(name, KEYREF_PEM_NAME);
        OPENSSL_free(name);
        OPENSSL_free(header);
        name = header = NULL;
        if (ours)
            goto out;
        OPENSSL_free(*der);
        *der = NULL;
    }
    /* none whole: one that begins is ours to report */
    ok = strstr(buf, "-----BEGIN " KEYREF_PEM_NAME "-----") == NULL;
out:
    ERR_pop_to_mark(); /* not PEM, or its end: not ours to report */
    BIO_free(mem);
    OPENSSL_free(buf);
    return ok;
}

static int dec_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                      void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kvp_provctx *pc = vctx;
    BIO *in = NULL;
    unsigned char *der = NULL;
    long derlen = 0;
    kv_ctx *kv = NULL;
    kv_key *key = NULL;
    kvp_key *k = NULL;
    const char *type;
    int objtype = OSSL_OBJECT_PKEY, ok = 0;
    OSSL_PARAM params[4];
    kv_rc rc;

    (void)selection; /* checked by does_selection */
    (void)pw_cb;     /* PINs and passphrases come from the vault's configuration */
    (void)pw_cbarg;
    if (!(in = BIO_new_from_core_bio(pc->publibctx, cin))) {
        kvp_raise(pc, KVP_R_INTERNAL, "decoder: cannot read the input (no core BIO)");
        goto out;
    }
    if (!read_reference(in, &der, &derlen)) {
        kvp_raise(pc, KVP_R_BAD_PARAM, "decoder: a " KEYREF_PEM_NAME " block begins but does "
                  "not end (a file cut short?)");
        goto out;
    }
    if (!der) { /* not ours: empty-handed, the next decoder tries */
        ok = 1;
        goto out;
    }
    /* ours from here: a failure is an error the caller sees */
    if (kvp_provctx_kv(pc, &kv) != KV_OK) /* raised */
        goto out;
    rc = kv_key_open_reference(kv, der, (size_t)derlen, &key);
    if (rc != KV_OK) {
        kvp_raise_kv(pc, kv, rc, "decoder: cannot open the key a " KEYREF_PEM_NAME " names");
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

static const OSSL_DISPATCH decoder_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_decode },
    { 0, NULL },
};

/* One entry per key management name, as OpenSSL picks decoders by the key
 * types it may end in; whichever runs first hands out the key, of whatever
 * type it is (the object's data type names our key management for it). */
#define DEC_PROPS KVP_PROPS ",input=pem"
const OSSL_ALGORITHM kvp_decoder_algs[] = {
    { "EC", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { "RSA", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { "ED25519", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { NULL, NULL, NULL, NULL },
};
