/*
 * client-assertion.c - OAuth2 client credentials with private_key_jwt
 * (RFC 7523, RFC 7521 4.2): the client authenticates to the token endpoint
 * with a JWT signed by a vault key, so no client secret exists anywhere.
 *
 *   usage: client-assertion [--aud URL] [--ttl SECONDS] [--alg RS256] [--scope S]
 *                           KEY CLIENT_ID TOKEN_URL
 *
 * KEY is opened through the configuration ($KEYVAULT_CONF or the defaults)
 * by name or URI: a PKCS#11, TPM or software key. The assertion's aud is the
 * token endpoint URL (--aud sends another, which the server must refuse).
 * --alg RS256 signs with an RSA key's PKCS#1 v1.5 alg instead of PS256, for
 * servers that take only RS256. The request body
 *
 *   grant_type=client_credentials
 *   &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
 *   &client_assertion=<the JWT>
 *
 * is posted with libcurl; the server's answer (an access token, or an OAuth2
 * error) is printed. Exit status 0 when the server answered 200.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include <keyvault.h>

#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define RESPONSE_MAX (64 * 1024)

struct response {
    char buf[RESPONSE_MAX + 1];
    size_t len;
};

static size_t collect(char *data, size_t size, size_t n, void *userp)
{
    struct response *r = userp;
    size_t len = size * n;

    if (len > RESPONSE_MAX - r->len)
        return 0; /* too long: libcurl fails the transfer */
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    r->buf[r->len] = '\0';
    return len;
}

/* name=value, with value form-encoded, appended to body after '&' unless first. */
static int append(CURL *curl, char **body, const char *name, const char *value)
{
    char *esc = curl_easy_escape(curl, value, 0), *nb;
    size_t have = *body ? strlen(*body) : 0;
    size_t need = have + strlen(name) + strlen(esc ? esc : "") + 3;

    if (!esc || !(nb = realloc(*body, need))) {
        curl_free(esc);
        return -1;
    }
    snprintf(nb + have, need - have, "%s%s=%s", have ? "&" : "", name, esc);
    *body = nb;
    curl_free(esc);
    return 0;
}

int main(int argc, char **argv)
{
    kv_client_assertion_opts opts = KV_CLIENT_ASSERTION_OPTS_INIT;
    const char *aud = NULL, *scope = NULL;
    char *jwt = NULL, *body = NULL;
    struct response *resp = NULL;
    struct curl_slist *hdrs = NULL;
    kv_ctx *ctx = NULL;
    kv_key *key = NULL;
    CURL *curl = NULL;
    long status = 0;
    int argi = 1, ret = 1;
    unsigned long ttl;
    char *end;
    CURLcode cc;
    kv_rc rc;

    for (; argi + 1 < argc && strncmp(argv[argi], "--", 2) == 0; argi += 2) {
        if (strcmp(argv[argi], "--aud") == 0)
            aud = argv[argi + 1];
        else if (strcmp(argv[argi], "--ttl") == 0) {
            /* digits only, 1 to 3600 (the library's limit) */
            errno = 0;
            ttl = strtoul(argv[argi + 1], &end, 10);
            if (argv[argi + 1][0] < '0' || argv[argi + 1][0] > '9' || *end || errno ||
                ttl < 1 || ttl > 3600) {
                fprintf(stderr, "client-assertion: --ttl must be a number of seconds from 1 "
                                "to 3600\n");
                return 2;
            }
            opts.ttl = (unsigned)ttl;
        }
        else if (strcmp(argv[argi], "--alg") == 0)
            opts.alg = argv[argi + 1];
        else if (strcmp(argv[argi], "--scope") == 0)
            scope = argv[argi + 1];
        else
            break;
    }
    if (argc - argi != 3) {
        fprintf(stderr, "usage: client-assertion [--aud URL] [--ttl SECONDS] [--alg RS256] "
                        "[--scope S] KEY CLIENT_ID TOKEN_URL\n");
        return 2;
    }
    opts.client_id = argv[argi + 1];
    opts.aud = aud ? aud : argv[argi + 2];

    /* libcurl first: curl_global_init is not thread-safe and must run before
     * anything else (the library's backends) may start threads */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "libcurl could not start\n");
        return 1;
    }
    if ((rc = kv_ctx_new(&ctx, NULL)) != KV_OK) {
        fprintf(stderr, "kv_ctx_new: %s\n", kv_errmsg(NULL));
        curl_global_cleanup();
        return 1;
    }
    if ((rc = kv_key_open(ctx, argv[argi], &key)) != KV_OK ||
        (rc = kv_jwt_client_assertion(key, &opts, &jwt)) != KV_OK) {
        fprintf(stderr, "client assertion: %s\n", kv_errmsg(ctx));
        goto out;
    }

    if (!(curl = curl_easy_init()) ||
        !(resp = calloc(1, sizeof(*resp)))) {
        fprintf(stderr, "libcurl could not start\n");
        goto out;
    }
    if (append(curl, &body, "grant_type", "client_credentials") != 0 ||
        append(curl, &body, "client_assertion_type", ASSERTION_TYPE) != 0 ||
        append(curl, &body, "client_assertion", jwt) != 0 ||
        (scope && append(curl, &body, "scope", scope) != 0)) {
        fprintf(stderr, "out of memory for the request body\n");
        goto out;
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, argv[argi + 2]);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body); /* form-encoded: the default type */
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    if ((cc = curl_easy_perform(curl)) != CURLE_OK) {
        fprintf(stderr, "POST to the token endpoint failed: %s\n", curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    printf("HTTP %ld\n%s\n", status, resp->buf);
    ret = status == 200 ? 0 : 1;
out:
    curl_slist_free_all(hdrs);
    if (curl)
        curl_easy_cleanup(curl);
    curl_global_cleanup();
    free(resp);
    free(body);
    kv_string_free(jwt);
    kv_key_free(key);
    kv_ctx_free(ctx);
    return ret;
}
