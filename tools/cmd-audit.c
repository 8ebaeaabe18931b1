/*
 * cmd-audit.c - keyvault audit verify / tail: check an audit log's chain
 * and seals, show its last records (docs/audit.md).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char audit_help[] =
    "usage: keyvault [-c CONF] audit verify FILE [--pubkey PEM] [--sealed] [--anchor SEQ:HASH]...\n"
    "       keyvault [-c CONF] audit tail [-n N] [FILE] [--json]\n"
    "verify: check every record's hash, the chain of prev hashes and seq numbers,\n"
    "and with --pubkey (the seal key's public key, PEM or DER) every seal's\n"
    "signature. The first bad record is named by its line; exit status 1 then.\n"
    "--sealed: the log must also end with a seal (a log whose writers are done).\n"
    "--anchor SEQ:HASH (repeatable): the log must hold the seal with this seq and\n"
    "hash, as syslog or an earlier verify (its \"last seal\" line) gave it; without\n"
    "one, records cut from the end at a seal, or cut and written again, pass.\n"
    "Without --pubkey only the chain is checked: whoever can write the file can\n"
    "make that pass.\n"
    "tail: the last N records (default 10) of FILE, else of the configured\n"
    "[audit] file, one a line; --json prints them as they are in the file.\n";

/* "SEQ:HASH": a seal's seq and its hash (64 lower-case hex digits). */
static bool parse_anchor(const char *s, kv_audit_anchor *an)
{
    const char *colon = strchr(s, ':');
    char *end;

    if (!colon || colon == s || s[0] < '0' || s[0] > '9' || strlen(colon + 1) != 64)
        return false;
    errno = 0;
    an->seq = strtoull(s, &end, 10);
    if (errno || end != colon || an->seq == 0)
        return false;
    memcpy(an->hash, colon + 1, 65);
    return strspn(an->hash, "0123456789abcdef") == 64;
}

static int audit_verify(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "pubkey", required_argument, NULL, 'p' },
        { "sealed", no_argument, NULL, 's' },
        { "anchor", required_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    kv_audit_anchor *anchors = calloc((size_t)argc, sizeof(*anchors));
    size_t nanchors = 0;
    const char *pubfile = NULL;
    unsigned char *pub = NULL;
    size_t publen = 0;
    unsigned flags = 0;
    kv_audit_report rep;
    int c, ret = EXIT_FAIL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': pubfile = optarg; break;
        case 's': flags |= KV_AUDIT_VERIFY_SEALED; break;
        case 'a':
            if (!anchors || !parse_anchor(optarg, &anchors[nanchors++]))
                die_usage("audit", "--anchor takes SEQ:HASH (a seal's seq and its 64 hex digits)");
            break;
        default: die_usage("audit", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("audit", "verify expects one FILE");
    if (pubfile && !(pub = read_all(pubfile, &publen)))
        return fail_sys("audit", "read", pubfile);
    if (!pub)
        fprintf(stderr, "keyvault audit: warning: chain only: whoever can write the file can "
                        "make this pass; give --pubkey\n");
    rc = kv_audit_verify(ctx, argv[optind], pub, publen, flags, anchors, nanchors, &rep);
    if (rc != KV_OK) {
        ret = fail("audit", ctx, rc);
        goto out;
    }
    printf("%s: %llu records, %llu seals", argv[optind], (unsigned long long)rep.records,
           (unsigned long long)rep.seals);
    if (rep.seals)
        printf(" (%s, the last at line %llu)", pub ? "signatures verified" : "not checked: no --pubkey",
               (unsigned long long)rep.last_seal_line);
    printf("; %llu records after the last seal\n", (unsigned long long)rep.unsealed);
    if (nanchors)
        printf("%zu anchor%s found\n", nanchors, nanchors == 1 ? "" : "s");
    if (rep.last_seal_seq)
        printf("last seal: %llu:%s (keep it outside the file; give it to a later verify as "
               "--anchor)\n", (unsigned long long)rep.last_seal_seq, rep.last_seal_hash);
    ret = EXIT_OK;
out:
    free(anchors);
    free(pub);
    return ret;
}

/* One record as a line of text: time seq op key@version backend result ... */
static void print_record(const char *line, size_t len)
{
    json_t *j = json_loadb(line, len, 0, NULL);
    const char *key = json_string_value(json_object_get(j, "key"));
    const char *msg = json_string_value(json_object_get(j, "message"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    const char *result = json_string_value(json_object_get(j, "result"));

    if (!json_is_object(j)) {
        printf("(not a record: %zu bytes)\n", len);
        return;
    }
    printf("%s %6lld %-10s %s@%lld %s %s pid %lld %s",
           json_string_value(json_object_get(j, "time")),
           (long long)json_integer_value(json_object_get(j, "seq")),
           json_string_value(json_object_get(j, "op")), key ? key : "-",
           (long long)json_integer_value(json_object_get(j, "version")),
           json_string_value(json_object_get(j, "backend")) ?
               json_string_value(json_object_get(j, "backend")) : "-",
           result ? result : "-", (long long)json_integer_value(json_object_get(j, "pid")),
           json_string_value(json_object_get(j, "exe")) ?
               json_string_value(json_object_get(j, "exe")) : "-");
    if (detail)
        printf(" (%s)", detail);
    if (msg)
        printf(": %s", msg);
    printf("\n");
    json_decref(j);
}

static int audit_tail(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' },
        { NULL, 0, NULL, 0 },
    };
    unsigned long n = 10;
    char *text = NULL, *end;
    int c, json = 0;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            n = strtoul(optarg, &end, 10);
            if (end == optarg || *end || n > 1000000)
                die_usage("audit", "-n takes a number of records up to 1000000");
            break;
        case 'j': json = 1; break;
        default: die_usage("audit", "bad option");
        }
    }
    if (optind < argc - 1)
        die_usage("audit", "tail takes at most one FILE");
    rc = kv_audit_tail(ctx, optind < argc ? argv[optind] : NULL, n, &text);
    if (rc != KV_OK)
        return fail("audit", ctx, rc);
    if (json) {
        fputs(text, stdout);
    } else {
        for (char *p = text, *nl; *p; p = nl + 1) {
            if (!(nl = strchr(p, '\n')))
                break;
            print_record(p, (size_t)(nl - p));
        }
    }
    kv_string_free(text);
    return EXIT_OK;
}

int cmd_audit(kv_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        die_usage("audit", "expected a command: verify, tail");
    if (!strcmp(argv[1], "verify"))
        return audit_verify(ctx, argc - 1, argv + 1);
    if (!strcmp(argv[1], "tail"))
        return audit_tail(ctx, argc - 1, argv + 1);
    die_usage("audit", "unknown command (verify, tail)");
}
