/*
 * cmd-enroll.c - `keyvault enroll`: AK enrollment by credential activation
 * (docs/enrollment.md). request and respond run on the device (its TPM);
 * challenge, finish, revoke and list on the verifier (no TPM).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "cli.h"

const char enroll_help[] =
    "usage: keyvault [-c CONF] enroll COMMAND ...\n"
    "Enroll the TPM's attestation key (AK) with a verifier by credential activation\n"
    "(TPM2_MakeCredential in software / TPM2_ActivateCredential; docs/enrollment.md).\n"
    "On the device (its TPM):\n"
    "  request [--device-id ID] -o REQUEST\n"
    "      every EK certificate of the TPM, the AK's public area and the device id (default:\n"
    "      tpm- and 16 hex digits of the EK's hash)\n"
    "  respond CHALLENGE [--device-id ID] -o RESPONSE\n"
    "      recover the challenge's credentials (one per EK certificate) with\n"
    "      TPM2_ActivateCredential (the response holds them: written 0600); prints the\n"
    "      device id the verifier will record, and refuses another than --device-id\n"
    "On the verifier (no TPM):\n"
    "  challenge REQUEST --ek-ca FILE --registry DB [--ttl SECONDS] -o CHALLENGE\n"
    "      check the EK certificate against the anchors in FILE and the AK's\n"
    "      attributes, protect a random credential to the EK certificate's key and\n"
    "      the AK's name, record it as pending for --ttl seconds (default 300)\n"
    "  finish RESPONSE --ca CA_NAME --registry DB [--replace] -o AK_CHAIN.pem\n"
    "      on a correct answer (each challenge is answered once), the CA key CA_NAME\n"
    "      issues the AK a certificate (profile tpm-ak) and the device is recorded;\n"
    "      an enrolled device gets a new AK only with --replace (the old AK's\n"
    "      certificate is revoked)\n"
    "  revoke DEVICE_ID --registry DB --ca CA_NAME\n"
    "      a revoked device fails the registry check and cannot enroll again through\n"
    "      any EK of its TPM; CA_NAME revokes its AK certificate\n"
    "  allow DEVICE_ID --registry DB\n"
    "      put DEVICE_ID on the allow-list: once it holds any id, only listed devices\n"
    "      may enroll\n"
    "  list --registry DB [--json]\n"
    "A device id stays bound to the TPM (every EK) it enrolled from.\n";

static int enroll_request(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "device-id", required_argument, NULL, 'd' }, { "out", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *dev = NULL, *out = NULL;
    char *req = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dev = optarg; break;
        case 'o': out = optarg; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc || !out)
        die_usage("enroll", "request expects -o REQUEST");
    rc = kv_enroll_request(ctx, dev, &req);
    if (rc != KV_OK)
        ret = fail("enroll", ctx, rc);
    else if (write_all(out, req, strlen(req), 0644) != 0)
        ret = fail_sys("enroll", "write", out);
    kv_string_free(req);
    return ret;
}

/* A document read whole, for the library (which checks everything in it). */
static int read_doc(const char *path, char **data, size_t *len)
{
    *data = (char *)read_all(path, len);
    return *data ? 0 : fail_sys("enroll", "read", path);
}

/* One member of a document the library made, for the summary line. */
static const char *member(json_t *doc, const char *name)
{
    const char *s = json_string_value(json_object_get(doc, name));
    return s ? s : "?";
}

static int enroll_challenge(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "ek-ca", required_argument, NULL, 'e' }, { "registry", required_argument, NULL, 'r' },
        { "ttl", required_argument, NULL, 't' },   { "out", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *anchors = NULL, *reg = NULL, *out = NULL;
    unsigned long ttl = 0;
    char *req = NULL, *chal = NULL, *end;
    size_t len = 0;
    json_t *doc;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'e': anchors = optarg; break;
        case 'r': reg = optarg; break;
        case 'o': out = optarg; break;
        case 't':
            ttl = strtoul(optarg, &end, 10);
            if (end == optarg || *end || ttl < 1 || ttl > 86400)
                die_usage("enroll", "--ttl must be 1 to 86400 seconds");
            break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc - 1 || !anchors || !reg || !out)
        die_usage("enroll", "challenge expects REQUEST, --ek-ca FILE, --registry DB and -o FILE");
    if (read_doc(argv[optind], &req, &len) != 0)
        return EXIT_FAIL;
    rc = kv_enroll_challenge(ctx, req, len, anchors, reg, (unsigned)ttl, &chal);
    free(req);
    if (rc != KV_OK)
        return fail("enroll", ctx, rc);
    if (write_all(out, chal, strlen(chal), 0644) != 0) {
        ret = fail_sys("enroll", "write", out);
    } else if ((doc = json_loads(chal, 0, NULL))) {
        printf("challenge %s for AK %s, expires %s\n", member(doc, "challenge"),
               member(doc, "ak_name"), member(doc, "expires"));
        json_decref(doc);
    }
    kv_string_free(chal);
    return ret;
}

static int enroll_respond(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "out", required_argument, NULL, 'o' },
                                          { "device-id", required_argument, NULL, 'd' },
                                          { NULL, 0, NULL, 0 } };
    const char *out = NULL, *want = NULL, *dev;
    char *chal = NULL, *resp = NULL;
    size_t len = 0;
    json_t *doc;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'd': want = optarg; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc - 1 || !out)
        die_usage("enroll", "respond expects CHALLENGE and -o RESPONSE");
    if (read_doc(argv[optind], &chal, &len) != 0)
        return EXIT_FAIL;
    /* what the verifier will record this device as (the library checks the
     * rest of the document) */
    doc = json_loadb(chal, len, 0, NULL);
    dev = doc ? json_string_value(json_object_get(doc, "device_id")) : NULL;
    if (want && (!dev || strcmp(dev, want) != 0)) {
        fprintf(stderr, "keyvault enroll: the challenge is for device '%s', not '%s': not "
                "answering it\n", dev && strlen(dev) <= 128 ? dev : "?", want);
        json_decref(doc);
        free(chal);
        return EXIT_FAIL;
    }
    if (dev && strlen(dev) <= 128)
        printf("challenge for device %s\n", dev);
    json_decref(doc);
    rc = kv_enroll_respond(ctx, chal, len, &resp);
    free(chal);
    if (rc != KV_OK)
        ret = fail("enroll", ctx, rc);
    else if (write_all(out, resp, strlen(resp), 0600) != 0)
        ret = fail_sys("enroll", "write", out);
    kv_string_free(resp);
    return ret;
}

static int enroll_finish(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "ca", required_argument, NULL, 'c' }, { "registry", required_argument, NULL, 'r' },
        { "out", required_argument, NULL, 'o' }, { "replace", no_argument, NULL, 'R' },
        { NULL, 0, NULL, 0 },
    };
    const char *ca_name = NULL, *reg = NULL, *out = NULL;
    unsigned flags = 0;
    char *resp = NULL, *pem = NULL;
    size_t len = 0;
    kv_key *ca = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ca_name = optarg; break;
        case 'r': reg = optarg; break;
        case 'o': out = optarg; break;
        case 'R': flags |= KV_ENROLL_REPLACE; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc - 1 || !ca_name || !reg || !out)
        die_usage("enroll", "finish expects RESPONSE, --ca CA_NAME, --registry DB and -o FILE");
    if (read_doc(argv[optind], &resp, &len) != 0)
        return EXIT_FAIL;
    rc = kv_key_open(ctx, ca_name, &ca);
    if (rc == KV_OK)
        rc = kv_enroll_finish(ca, resp, len, reg, flags, &pem);
    if (rc != KV_OK)
        ret = fail("enroll", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("enroll", "write", out);
    else
        printf("enrolled: AK certificate chain in %s\n", out);
    if (resp)
        OPENSSL_cleanse(resp, len);
    free(resp);
    kv_string_free(pem);
    kv_key_free(ca);
    return ret;
}

static int enroll_revoke(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "registry", required_argument, NULL, 'r' },
                                          { "ca", required_argument, NULL, 'c' },
                                          { NULL, 0, NULL, 0 } };
    const char *reg = NULL, *ca_name = NULL;
    kv_key *ca = NULL;
    int c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': reg = optarg; break;
        case 'c': ca_name = optarg; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc - 1 || !reg || !ca_name)
        die_usage("enroll", "revoke expects DEVICE_ID, --registry DB and --ca CA_NAME");
    rc = kv_key_open(ctx, ca_name, &ca);
    if (rc == KV_OK)
        rc = kv_registry_revoke(ctx, reg, argv[optind], ca);
    kv_key_free(ca);
    if (rc != KV_OK)
        return fail("enroll", ctx, rc);
    printf("revoked, with its AK certificate\n");
    return EXIT_OK;
}

static int enroll_allow(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "registry", required_argument, NULL, 'r' },
                                          { NULL, 0, NULL, 0 } };
    const char *reg = NULL;
    int c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': reg = optarg; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc - 1 || !reg)
        die_usage("enroll", "allow expects DEVICE_ID and --registry DB");
    rc = kv_registry_allow(ctx, reg, argv[optind]);
    if (rc != KV_OK)
        return fail("enroll", ctx, rc);
    printf("allowed\n");
    return EXIT_OK;
}

static int enroll_list(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "registry", required_argument, NULL, 'r' },
                                          { "json", no_argument, NULL, 'j' },
                                          { NULL, 0, NULL, 0 } };
    const char *reg = NULL;
    char *text = NULL;
    int c, as_json = 0;
    json_t *arr, *o;
    size_t i;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': reg = optarg; break;
        case 'j': as_json = 1; break;
        default: die_usage("enroll", "bad option");
        }
    }
    if (optind != argc || !reg)
        die_usage("enroll", "list expects --registry DB");
    rc = kv_registry_list(ctx, reg, &text);
    if (rc != KV_OK)
        return fail("enroll", ctx, rc);
    if (as_json) {
        printf("%s\n", text);
    } else if ((arr = json_loads(text, 0, NULL))) {
        json_array_foreach(arr, i, o) {
            printf("%s  %s  enrolled %s  AK %.20s...  serial %s\n", member(o, "device_id"),
                   json_is_true(json_object_get(o, "revoked")) ? "revoked" : "active ",
                   member(o, "enrolled"), member(o, "ak_name"), member(o, "ak_serial"));
        }
        json_decref(arr);
    }
    kv_string_free(text);
    return EXIT_OK;
}

int cmd_enroll(kv_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(kv_ctx *, int, char **);
    } subs[] = {
        { "request", enroll_request }, { "challenge", enroll_challenge },
        { "respond", enroll_respond }, { "finish", enroll_finish },
        { "revoke", enroll_revoke },   { "list", enroll_list },
        { "allow", enroll_allow },
    };

    if (argc < 2)
        die_usage("enroll", "expected a command: request, challenge, respond, finish, revoke, "
                            "list, allow");
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (!strcmp(argv[1], subs[i].name))
            return subs[i].fn(ctx, argc - 1, argv + 1);
    die_usage("enroll", "unknown command (request, challenge, respond, finish, revoke, list, allow)");
}
