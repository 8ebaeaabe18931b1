/*
 * cmd-rotate.c - keyvault rotate, prune and versions: key versions and
 * their lifecycle (docs/lifecycle.md).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

const char rotate_help[] =
    "usage: keyvault [-c CONF] rotate NAME [--overlap DURATION] [--grace DURATION|keep]\n"
    "Make a new version of key NAME in its backend and make it current. The previous\n"
    "version keeps working for --overlap (default: [lifecycle] overlap, else 7d), then\n"
    "is retired: its public key stays, signing, ECDH, attestation and issuing with it\n"
    "are refused. --grace: how long after retirement 'keyvault prune' may destroy it\n"
    "(default: [lifecycle] grace, else keep). DURATION: seconds, or a number with s,\n"
    "m, h or d (30s, 15m, 12h, 7d). A rotation that is interrupted leaves the previous\n"
    "version current; running it again finishes it. NAME@N opens version N.\n";

const char prune_help[] =
    "usage: keyvault [-c CONF] prune NAME\n"
    "Destroy the versions of key NAME that are retired and past their grace period,\n"
    "and any that an interrupted rotation abandoned.\n";

const char versions_help[] =
    "usage: keyvault [-c CONF] versions NAME [--json]\n"
    "Show each version of key NAME: its state (current, overlap, retired, pending,\n"
    "abandoned), when it was made, became current, retires and may be destroyed.\n";

/* "30s", "15m", "12h", "7d" or plain seconds; -1 for "keep" when keep_ok. */
static int64_t parse_duration(const char *cmd, const char *opt, const char *s, int keep_ok)
{
    char *end = NULL;
    long long n;
    int64_t unit = 1;

    if (keep_ok && !strcmp(s, "keep"))
        return -1;
    errno = 0;
    n = (*s >= '0' && *s <= '9') ? strtoll(s, &end, 10) : -1;
    if (n >= 0 && !errno && end) {
        switch (*end) {
        case 's': end++; break;
        case 'm': unit = 60; end++; break;
        case 'h': unit = 3600; end++; break;
        case 'd': unit = 86400; end++; break;
        default: break;
        }
        if (!*end && n <= INT64_MAX / unit / 4)
            return (int64_t)n * unit;
    }
    die_usage(cmd, "%s takes a duration: seconds, or a number with s, m, h or d%s", opt,
              keep_ok ? ", or keep" : "");
}

static const char *time_text(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!t)
        return "-";
    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
    return buf;
}

int cmd_rotate(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "overlap", required_argument, NULL, 'o' }, { "grace", required_argument, NULL, 'g' },
        { NULL, 0, NULL, 0 },
    };
    kv_rotate_opts ro = KV_ROTATE_OPTS_INIT;
    kv_key_version_list *vl = NULL;
    kv_key *key = NULL;
    kv_key_info info;
    char when[32];
    int c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o': ro.overlap = parse_duration("rotate", "--overlap", optarg, 0); break;
        case 'g':
            ro.grace = parse_duration("rotate", "--grace", optarg, 1);
            if (ro.grace < 0) {
                ro.grace = -1;
                ro.flags |= KV_ROTATE_KEEP;
            }
            break;
        default: die_usage("rotate", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("rotate", "expected one key NAME");
    rc = kv_key_rotate(ctx, argv[optind], &ro, &key);
    if (rc != KV_OK)
        return fail("rotate", ctx, rc);
    /* rotated: what follows only reports, and its failure is a warning */
    if ((rc = kv_key_get_info(key, &info)) != KV_OK) {
        printf("key '%s': rotated\n", argv[optind]);
        fprintf(stderr, "%s rotate: warning: rotated, but the new version cannot be described: "
                "%s\n", prog, *kv_errmsg(ctx) ? kv_errmsg(ctx) : kv_strerror(rc));
        kv_key_free(key);
        return EXIT_OK;
    }
    printf("key '%s': version %u is current (%s)\n", argv[optind], info.version, info.uri);
    if ((rc = kv_key_versions(ctx, argv[optind], &vl)) != KV_OK) {
        fprintf(stderr, "%s rotate: warning: rotated, but the versions cannot be listed: %s\n",
                prog, *kv_errmsg(ctx) ? kv_errmsg(ctx) : kv_strerror(rc));
        kv_key_free(key);
        return EXIT_OK;
    }
    for (size_t i = 0; i < vl->count; i++) {
        const kv_key_version *v = &vl->versions[i];
        if (v->version == info.version)
            continue;
        printf("version %u: %s%s%s\n", v->version, kv_version_state_name(v->state),
               v->state == KV_VERSION_OVERLAP   ? " until "
               : v->state == KV_VERSION_RETIRED ? " since "
                                                : "",
               v->state == KV_VERSION_OVERLAP || v->state == KV_VERSION_RETIRED
                   ? time_text(v->retire_at, when)
                   : "");
    }
    kv_key_version_list_free(vl);
    kv_key_free(key);
    return EXIT_OK;
}

int cmd_prune(kv_ctx *ctx, int argc, char **argv)
{
    unsigned n = 0;
    kv_rc rc;

    if (getopt_long(argc, argv, "", (const struct option[]){ { NULL, 0, NULL, 0 } }, NULL) != -1)
        die_usage("prune", "bad option");
    if (optind != argc - 1)
        die_usage("prune", "expected one key NAME");
    rc = kv_key_prune(ctx, argv[optind], &n);
    if (rc != KV_OK)
        return fail("prune", ctx, rc);
    printf("key '%s': %u version%s destroyed\n", argv[optind], n, n == 1 ? "" : "s");
    return EXIT_OK;
}

int cmd_versions(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 } };
    kv_key_version_list *vl = NULL;
    char t1[32], t2[32], t3[32];
    int json = 0, c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
        if (c != 'j')
            die_usage("versions", "bad option");
        json = 1;
    }
    if (optind != argc - 1)
        die_usage("versions", "expected one key NAME");
    rc = kv_key_versions(ctx, argv[optind], &vl);
    if (rc != KV_OK)
        return fail("versions", ctx, rc);
    if (json) {
        json_t *arr = json_array();
        json_t *j = json_pack("{s:s, s:s, s:i, s:o}", "name", vl->name, "backend", vl->backend,
                              "current", (int)vl->current, "versions", arr);
        for (size_t i = 0; j && i < vl->count; i++) {
            const kv_key_version *v = &vl->versions[i];
            json_t *e = json_pack("{s:i, s:s, s:s, s:I, s:I, s:I, s:I}", "version",
                                  (int)v->version, "name", v->name, "state",
                                  kv_version_state_name(v->state), "created",
                                  (json_int_t)v->created, "activated", (json_int_t)v->activated,
                                  "retire_at", (json_int_t)v->retire_at, "destroy_at",
                                  (json_int_t)v->destroy_at);
            if (!e || json_array_append_new(arr, e) != 0) {
                /* a list missing a version would read as a key without it */
                json_decref(j);
                j = NULL;
            }
        }
        kv_key_version_list_free(vl);
        return print_json(j);
    }
    printf("%-8s %-24s %-9s %-20s %-20s %s\n", "VERSION", "NAME", "STATE", "ACTIVATED",
           "RETIRES", "DESTROY AFTER");
    for (size_t i = 0; i < vl->count; i++) {
        const kv_key_version *v = &vl->versions[i];
        printf("%-8u %-24s %-9s %-20s %-20s %s\n", v->version, v->name,
               kv_version_state_name(v->state), time_text(v->activated, t1),
               time_text(v->retire_at, t2), time_text(v->destroy_at, t3));
    }
    kv_key_version_list_free(vl);
    return EXIT_OK;
}

const char *list_version_state(kv_ctx *ctx, const kv_key_info *k)
{
    char base[80];
    const char *at = strchr(k->name, '@');
    size_t n = at ? (size_t)(at - k->name) : strlen(k->name);
    kv_key_version_list *vl = NULL;
    const char *state = "unknown";

    if (n >= sizeof(base))
        return state;
    memcpy(base, k->name, n);
    base[n] = '\0';
    if (kv_key_versions(ctx, base, &vl) != KV_OK)
        return state;
    for (size_t i = 0; i < vl->count; i++)
        if (vl->versions[i].version == k->version &&
            !strcmp(vl->backend, k->backend))
            state = kv_version_state_name(vl->versions[i].state);
    kv_key_version_list_free(vl);
    return state;
}
