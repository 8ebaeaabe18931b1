/*
 * credtool.c - libkeyvault's credential protection in tpm2-tools' file
 * format, so tests/enroll.sh can cross-check it with tpm2_makecredential
 * and tpm2_activatecredential (tools nobody here wrote):
 *   credtool make CONF EK.pem NAME_HEX SECRET_FILE OUT   kv_credential_make -> OUT
 *   credtool activate CONF CRED_FILE OUT                 kv_tpm_activate_credential
 *   credtool status CONF REGISTRY AK_NAME_HEX            kv_registry_ak_status
 * The file: BE32 0xBADCC0DE, BE32 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>

#include "internal.h"

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(65536);

    *len = f && buf ? fread(buf, 1, 65536, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

static int put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;

    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : 1;
}

static int make(kv_ctx *ctx, char **argv)
{
    FILE *f = fopen(argv[0], "r");
    EVP_PKEY *ek = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
    unsigned char name[80], *id = NULL, *sec = NULL, *secret, out[4096];
    size_t nlen = strlen(argv[1]) / 2, idlen = 0, seclen = 0, slen = 0, off = 0;
    kv_rc rc;

    if (f)
        fclose(f);
    secret = slurp(argv[2], &slen);
    if (!ek || nlen > sizeof(name) || !secret) {
        fprintf(stderr, "credtool make: bad EK, name or secret\n");
        return 1;
    }
    for (size_t i = 0; i < nlen; i++)
        sscanf(argv[1] + 2 * i, "%2hhx", &name[i]);
    rc = kv_credential_make(ctx, ek, name, nlen, secret, slen, &id, &idlen, &sec, &seclen);
    EVP_PKEY_free(ek);
    free(secret);
    if (rc != KV_OK) {
        fprintf(stderr, "credtool make: %s\n", kv_errmsg(ctx));
        return 1;
    }
    Tss2_MU_UINT32_Marshal(0xBADCC0DE, out, sizeof(out), &off);
    Tss2_MU_UINT32_Marshal(1, out, sizeof(out), &off);
    memcpy(out + off, id, idlen);
    memcpy(out + off + idlen, sec, seclen);
    OPENSSL_free(id);
    OPENSSL_free(sec);
    return put(argv[3], out, off + idlen + seclen);
}

static int activate(kv_ctx *ctx, char **argv)
{
    size_t len = 0, off = 0, id_at, sec_at, n;
    unsigned char *buf = slurp(argv[0], &len), cred[64];
    TPM2B_ID_OBJECT id;
    TPM2B_ENCRYPTED_SECRET sec;
    UINT32 magic = 0, version = 0;
    kv_rc rc;

    if (!buf || Tss2_MU_UINT32_Unmarshal(buf, len, &off, &magic) ||
        Tss2_MU_UINT32_Unmarshal(buf, len, &off, &version) || magic != 0xBADCC0DE ||
        version != 1 || (id_at = off, Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(buf, len, &off, &id)) ||
        (sec_at = off, Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(buf, len, &off, &sec)) ||
        off != len) {
        fprintf(stderr, "credtool activate: not a tpm2-tools credential file\n");
        free(buf);
        return 1;
    }
    n = sizeof(cred);
    rc = kv_tpm_activate_credential(ctx, buf + id_at, sec_at - id_at, buf + sec_at, len - sec_at,
                                    cred, &n);
    free(buf);
    if (rc != KV_OK) {
        fprintf(stderr, "credtool activate: %s\n", kv_errmsg(ctx));
        return 1;
    }
    return put(argv[1], cred, n);
}

static int status(kv_ctx *ctx, char **argv)
{
    unsigned char name[80];
    size_t nlen = strlen(argv[1]) / 2;
    char *dev = NULL;
    int revoked = 0;
    kv_rc rc;

    if (nlen > sizeof(name))
        return 2;
    for (size_t i = 0; i < nlen; i++)
        sscanf(argv[1] + 2 * i, "%2hhx", &name[i]);
    rc = kv_registry_ak_status(ctx, argv[0], name, nlen, &dev, &revoked);
    if (rc != KV_OK) {
        fprintf(stderr, "credtool status: %s\n", kv_errmsg(ctx));
        return 1;
    }
    printf("%s %s\n", dev, revoked ? "revoked" : "active");
    kv_string_free(dev);
    return 0;
}

int main(int argc, char **argv)
{
    kv_ctx *ctx = NULL;
    int ret;

    if (argc < 3 || ((strcmp(argv[1], "make") || argc != 7) &&
                     (strcmp(argv[1], "activate") || argc != 5) &&
                     (strcmp(argv[1], "status") || argc != 5))) {
        fprintf(stderr, "usage: credtool make CONF EK.pem NAME_HEX SECRET OUT | "
                        "activate CONF CRED OUT | status CONF REGISTRY AK_NAME_HEX\n");
        return 2;
    }
    if (kv_ctx_new(&ctx, argv[2]) != KV_OK) {
        fprintf(stderr, "credtool: %s\n", kv_errmsg(NULL));
        return 1;
    }
    ret = !strcmp(argv[1], "make")       ? make(ctx, argv + 3)
          : !strcmp(argv[1], "activate") ? activate(ctx, argv + 3)
                                         : status(ctx, argv + 3);
    kv_ctx_free(ctx);
    return ret;
}
