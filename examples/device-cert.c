/*
 * device-cert.c - a device's certificate from a small CA, both keys in the
 * vault: the CA's root is self-signed by its own key, the device key makes
 * a certificate request, the CA issues a device-identity certificate from
 * it, and the device keeps the chain with its key.
 *
 *   usage: device-cert CA_NAME DEVICE_NAME [DNS_NAME]
 *
 * Keys are opened by name through the configuration ($KEYVAULT_CONF or the
 * defaults) and created when missing: the CA as EC P-384, the device as EC
 * P-256. Running it again issues a fresh certificate for the same keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keyvault.h>

static kv_rc open_or_create(kv_ctx *ctx, const char *name, kv_key_type type, kv_key **key)
{
    kv_rc rc = kv_key_open(ctx, name, key);

    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_key_generate(ctx, name, type, NULL, key);
    return rc;
}

/* The CA's root certificate, made and stored on first use. */
static kv_rc ca_root(kv_key *ca)
{
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    char *pem = NULL;
    size_t len = 0;
    kv_rc rc = kv_key_cert_der(ca, NULL, &len);

    if (rc != KV_ERR_KEY_NOT_FOUND)
        return rc;
    opts.subject = "CN=Example Fleet Root,O=Example Fleet";
    opts.flags = KV_CERT_CA;
    opts.days = 3650;
    rc = kv_cert_selfsign(ca, &opts, &pem);
    if (rc == KV_OK)
        rc = kv_key_store_cert(ca, (const unsigned char *)pem, strlen(pem));
    kv_string_free(pem);
    return rc;
}

int main(int argc, char **argv)
{
    const char *ca_name = argc > 1 ? argv[1] : "example-ca";
    const char *dev_name = argc > 2 ? argv[2] : "example-device";
    const char *dns = argc > 3 ? argv[3] : "device.example.org";
    char subject[128], san[300];
    const char *sans[] = { san, NULL };
    kv_cert_opts req = KV_CERT_OPTS_INIT;
    kv_ctx *ctx = NULL;
    kv_key *ca = NULL, *dev = NULL;
    kv_cert_info *info = NULL;
    char *csr = NULL, *chain = NULL;
    kv_rc rc;

    if (kv_ctx_new(&ctx, NULL) != KV_OK) {
        fprintf(stderr, "kv_ctx_new: %s\n", kv_errmsg(NULL));
        return 1;
    }
    snprintf(subject, sizeof(subject), "CN=%s,O=Example Fleet", dev_name);
    snprintf(san, sizeof(san), "dns:%s", dns);
    req.subject = subject;
    req.sans = sans;

    rc = open_or_create(ctx, ca_name, KV_KEY_EC_P384, &ca);
    if (rc == KV_OK)
        rc = ca_root(ca);
    if (rc == KV_OK)
        rc = open_or_create(ctx, dev_name, KV_KEY_EC_P256, &dev);
    /* the device asks; the CA checks the request's signature and decides */
    if (rc == KV_OK)
        rc = kv_csr_create(dev, &req, &csr);
    if (rc == KV_OK)
        rc = kv_ca_issue(ca, "device-identity", (const unsigned char *)csr, strlen(csr), NULL,
                         &chain);
    if (rc == KV_OK)
        rc = kv_key_store_chain(dev, (const unsigned char *)chain, strlen(chain));
    if (rc == KV_OK)
        rc = kv_key_cert_info(dev, &info);
    if (rc != KV_OK) {
        fprintf(stderr, "%s: %s\n", kv_strerror(rc), kv_errmsg(ctx));
    } else {
        char until[32];
        time_t na = (time_t)info->not_after;
        strftime(until, sizeof(until), "%Y-%m-%d %H:%M:%S", gmtime(&na));
        printf("issued to:  %s\nissued by:  %s\nserial:     %s\n", info->subject, info->issuer,
               info->serial);
        for (size_t i = 0; i < info->nsans; i++)
            printf("alt name:   %s\n", info->sans[i]);
        printf("valid until %s UTC (%ld days), renewal %s\n", until, info->days_left,
               info->renewal_due ? "due" : "not due yet");
    }
    kv_cert_info_free(info);
    kv_string_free(csr);
    kv_string_free(chain);
    kv_key_free(dev);
    kv_key_free(ca);
    kv_ctx_free(ctx);
    return rc == KV_OK ? 0 : 1;
}
