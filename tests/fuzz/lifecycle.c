/*
 * lifecycle.c - libFuzzer target for a key's lifecycle record
 * (HOME/lifecycle/NAME.json: format, name, backend, current version, the
 * versions with their states and times, MAC), read by kv_key_versions and
 * by kv_key_open of the name and of NAME@VERSION.
 *
 * Internal header: the record carries an HMAC keyed by the lifecycle
 * directory's secret, so fuzzed records would stop at the MAC check and
 * the versions parser behind it would go unfuzzed. The target recomputes
 * the MAC as the library does (kv_fs_store_mac_key, kv_json_mac:
 * internal.h) for every input that is a JSON object.
 *
 * Input: the record's text. The key rk is a fixture with three versions
 * (tests/fuzz/fixtures/lifecycle/, made with the seeds by make-corpus.sh).
 * May accept: any record that parses; the versions listed must be numbered
 * 1 to 999999999 with a known state, and a key opened under the name must be
 * one of rk's three versions.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "internal.h"

/* rotate.c's LC_MAC_PREFIX */
#define LC_MAC_PREFIX "libkeyvault-lifecycle-v1\n"

static kv_ctx *ctx;
static char rec_path[512];
static unsigned char mac_key[KV_MAC_KEY_LEN];
static unsigned char *pubs[3];
static size_t pub_lens[3];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[512];
    kv_key *key;

    (void)argc;
    (void)argv;
    if (!fz_seeding())
        fz_fixture_load("lifecycle");
    ctx = fz_ctx(NULL, NULL);
    if (fz_seeding()) {
        kv_rotate_opts opts = KV_ROTATE_OPTS_INIT;
        opts.flags = KV_ROTATE_KEEP;
        kv_key_free(fz_key(ctx, "rk", KV_KEY_EC_P256, "software"));
        for (int i = 0; i < 2; i++)
            if (kv_key_rotate(ctx, "rk", &opts, NULL) != KV_OK)
                abort();
        fz_fixture_save("lifecycle");
    }
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "rk@%d", i + 1);
        if (kv_key_open(ctx, name, &key) != KV_OK) {
            fprintf(stderr, "fuzz-lifecycle: %s: %s\n", name, kv_errmsg(ctx));
            abort();
        }
        pubs[i] = fz_pub(key, &pub_lens[i]);
        kv_key_free(key);
    }
    fz_path(rec_path, sizeof(rec_path), "home/lifecycle/rk.json");
    if (kv_fs_store_mac_key(ctx, fz_path(dir, sizeof(dir), "home/lifecycle"), false, mac_key) !=
        KV_OK)
        abort();
    if (fz_seeding()) {
        FILE *f = fopen(rec_path, "r");
        char buf[65536];
        size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
        json_t *j;
        if (f)
            fclose(f);
        fz_seed("record", buf, n);
        j = json_loadb(buf, n, 0, NULL);
        json_object_set_new(j, "current", json_integer(7));
        {
            char *dump = json_dumps(j, JSON_COMPACT);
            fz_seed("bad-current", dump, strlen(dump));
            free(dump);
        }
        json_decref(j);
        fz_seed("bad-truncated", buf, n / 2);
        exit(0);
    }
    return 0;
}

static bool known_pub(kv_key *key)
{
    size_t len;
    unsigned char *p = fz_pub(key, &len);
    bool ok = false;

    for (int i = 0; i < 3; i++)
        ok |= len == pub_lens[i] && !memcmp(p, pubs[i], len);
    free(p);
    return ok;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static const char *const refs[] = { "rk", "rk@2" };
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    kv_key_version_list *list = NULL;
    char hex[65], *dump = NULL;
    kv_rc rc;

    if (j && json_is_object(j) && kv_json_mac(ctx, j, LC_MAC_PREFIX, mac_key, hex) == KV_OK &&
        json_object_set_new(j, "mac", json_string(hex)) == 0 && (dump = json_dumps(j, 0)))
        fz_write(rec_path, dump, strlen(dump));
    else
        fz_write(rec_path, data, size);
    free(dump);
    json_decref(j);
    rc = kv_key_versions(ctx, "rk", &list);
    fz_report("kv_key_versions", ctx, rc);
    if (rc == KV_OK) {
        for (size_t i = 0; i < list->count; i++)
            FZ_ASSERT(list->versions[i].version >= 1 &&
                          list->versions[i].version <= 999999999u &&
                          strcmp(kv_version_state_name(list->versions[i].state), "unknown"),
                      "a version out of range or in an unknown state");
    }
    kv_key_version_list_free(list);
    for (size_t i = 0; i < 2; i++) {
        kv_key *key = NULL;
        rc = kv_key_open(ctx, refs[i], &key);
        fz_report("kv_key_open", ctx, rc);
        if (rc == KV_OK)
            FZ_ASSERT(known_pub(key), "opened a key that is none of rk's versions");
        kv_key_free(key);
    }
    return 0;
}
