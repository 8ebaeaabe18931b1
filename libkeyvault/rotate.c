/*
 * rotate.c - key versions, rotation and retirement (docs/lifecycle.md).
 *
 * Version 1 of NAME is the backend key NAME; version N >= 2 the backend
 * key NAME@N. Which version is current, and the state of the others, is
 * kept in one file, HOME/lifecycle/NAME.json, authenticated with an
 * HMAC-SHA256 under HOME/lifecycle/.store-secret and replaced atomically:
 * its rename is the one commit point of a rotation. A name without a
 * record has one version, current.
 *
 * A rotation writes the record three times: the next version as
 * "pending" (before the backend key exists), its public key's hash (after
 * it is made), and the switch (pending -> current, current -> overlap).
 * Killed before the switch, the old version stays current and the next
 * run remakes the pending version (or abandons one it cannot open, for
 * kv_key_prune to destroy).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "internal.h"

#define LC_FORMAT 1
#define LC_FILE_MAX (1024 * 1024)
#define LC_VERSIONS_MAX 4096      /* entries in one record */
#define LC_VERSION_MAX 999999999u /* the largest N of NAME@N */
#define LC_MAC_PREFIX "libkeyvault-lifecycle-v1\n"
#define LC_DEFAULT_OVERLAP (7 * 24 * 3600)

static const char *const state_names[] = { "current", "overlap", "retired", "pending",
                                           "abandoned" };

const char *kv_version_state_name(kv_version_state state)
{
    if ((unsigned)state < sizeof(state_names) / sizeof(state_names[0]))
        return state_names[state];
    return "unknown";
}

/* ---- names ------------------------------------------------------------ */

/* NAME or NAME@N (N 1..LC_VERSION_MAX, no leading zero): the base name and
 * the version (0 when none is given). */
static bool name_split(const char *ref, char base[KV_NAME_MAX + 1], unsigned *version)
{
    const char *at = strchr(ref, '@');
    size_t blen = at ? (size_t)(at - ref) : strlen(ref);
    unsigned long v = 0;

    *version = 0;
    if (blen == 0 || blen > KV_NAME_MAX)
        return false;
    memcpy(base, ref, blen);
    base[blen] = '\0';
    if (!kv_name_valid(base))
        return false;
    if (!at)
        return true;
    at++;
    if (*at < '1' || *at > '9' || strlen(at) > 9)
        return false;
    for (const char *p = at; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    *version = (unsigned)v;
    return true;
}

bool kv_backend_name_valid(const char *name)
{
    char base[KV_NAME_MAX + 1];
    unsigned v;

    if (!strchr(name, '@'))
        return kv_name_valid(name);
    return strlen(name) <= KV_NAME_MAX && name_split(name, base, &v) && v >= 2;
}

unsigned kv_backend_name_version(const char *name)
{
    char base[KV_NAME_MAX + 1];
    unsigned v;

    return name_split(name, base, &v) && v >= 2 ? v : 1;
}

/* The backend name of version v of base; false when it is too long. */
static bool backend_name(const char *base, unsigned v, char out[KV_NAME_MAX + 1])
{
    int n = v == 1 ? snprintf(out, KV_NAME_MAX + 1, "%s", base)
                   : snprintf(out, KV_NAME_MAX + 1, "%s@%u", base, v);

    return n > 0 && n <= KV_NAME_MAX;
}

static void time_text(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "%lld", (long long)t);
}

/* ---- the record ---------------------------------------------------------- */

struct lc_ver {
    unsigned version;
    kv_version_state state;  /* as stored (an overlap may be past retire_at) */
    int64_t created, activated, retire_at, destroy_at;
    char fpr[65];            /* hex SHA-256 of the public key; "" not yet known */
};

struct lc_rec {
    char name[KV_NAME_MAX + 1];
    char backend[32];
    unsigned current;
    size_t count;
    struct lc_ver *v;        /* ascending versions */
};

static void rec_clear(struct lc_rec *r)
{
    free(r->v);
    memset(r, 0, sizeof(*r));
}

static struct lc_ver *rec_find(const struct lc_rec *r, unsigned version)
{
    for (size_t i = 0; i < r->count; i++)
        if (r->v[i].version == version)
            return &r->v[i];
    return NULL;
}

static struct lc_ver *rec_add(struct lc_rec *r, unsigned version)
{
    struct lc_ver *v = realloc(r->v, (r->count + 1) * sizeof(*v));

    if (!v)
        return NULL;
    r->v = v;
    v = &r->v[r->count++];
    memset(v, 0, sizeof(*v));
    v->version = version;
    return v;
}

static unsigned rec_max(const struct lc_rec *r)
{
    unsigned m = 0;

    for (size_t i = 0; i < r->count; i++)
        if (r->v[i].version > m)
            m = r->v[i].version;
    return m;
}

/* The state a version has now: an overlap past its retire_at is retired. */
static kv_version_state state_now(const struct lc_ver *v, int64_t now)
{
    if (v->state == KV_VERSION_OVERLAP && v->retire_at <= now)
        return KV_VERSION_RETIRED;
    return v->state;
}

static char *lc_dir(const kv_ctx *ctx)
{
    return kv_asprintf("%s/lifecycle", ctx->home);
}

static char *lc_path(const kv_ctx *ctx, const char *name)
{
    return kv_asprintf("%s/lifecycle/%s.json", ctx->home, name);
}

static kv_version_state state_from_name(const char *s)
{
    for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++)
        if (!strcmp(s, state_names[i]))
            return (kv_version_state)i;
    return (kv_version_state)-1;
}

static bool hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'F')))
            return false;
    return true;
}

/* Parse a record's versions; why says what is wrong. */
static bool parse_versions(json_t *arr, struct lc_rec *r, char *why, size_t whylen)
{
    size_t i;
    json_t *e;
    unsigned ncur = 0;

    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > LC_VERSIONS_MAX) {
        snprintf(why, whylen, "\"versions\" is not a list of 1 to %d versions", LC_VERSIONS_MAX);
        return false;
    }
    json_array_foreach(arr, i, e) {
        json_int_t ver = 0, created = 0, activated = 0, retire_at = 0, destroy_at = 0;
        const char *state = NULL, *fpr = NULL;
        struct lc_ver *v;

        if (json_unpack(e, "{s:I, s:s, s:I, s:I, s:I, s:I, s?s !}", "version", &ver, "state",
                        &state, "created", &created, "activated", &activated, "retire_at",
                        &retire_at, "destroy_at", &destroy_at, "public_key_sha256",
                        &fpr) != 0) {
            snprintf(why, whylen, "version entry %zu has unexpected fields", i + 1);
            return false;
        }
        if (ver < 1 || ver > LC_VERSION_MAX || (r->count && (unsigned)ver <= r->v[r->count - 1].version) ||
            created < 0 || activated < 0 || retire_at < 0 || destroy_at < 0) {
            snprintf(why, whylen, "version entry %zu is out of range or order", i + 1);
            return false;
        }
        if ((int)state_from_name(state) < 0 || (fpr && !hex64(fpr))) {
            snprintf(why, whylen, "version %lld has an unknown state or a bad key hash",
                     (long long)ver);
            return false;
        }
        if (!(v = rec_add(r, (unsigned)ver))) {
            snprintf(why, whylen, "out of memory");
            return false;
        }
        v->state = state_from_name(state);
        v->created = created;
        v->activated = activated;
        v->retire_at = retire_at;
        v->destroy_at = destroy_at;
        if (fpr)
            memcpy(v->fpr, fpr, 65);
        if (v->state == KV_VERSION_CURRENT)
            ncur++;
        if ((v->state == KV_VERSION_CURRENT || v->state == KV_VERSION_OVERLAP ||
             v->state == KV_VERSION_RETIRED) && !v->fpr[0]) {
            snprintf(why, whylen, "version %u has no public key hash", v->version);
            return false;
        }
    }
    if (ncur != 1 || !rec_find(r, r->current) ||
        rec_find(r, r->current)->state != KV_VERSION_CURRENT) {
        snprintf(why, whylen, "it does not name exactly one current version");
        return false;
    }
    return true;
}

/*
 * Read NAME's record: *found false (KV_OK, nothing recorded) when there is
 * none. sb (when not NULL) gets the file's identity, taken before reading
 * so that a change after it shows at the next look.
 */
static kv_rc rec_read(const kv_ctx *ctx, const char *name, struct lc_rec *r, bool *found,
                      struct stat *sb)
{
    char *path = lc_path(ctx, name), *dir = lc_dir(ctx), *text = NULL;
    const char *mname = NULL, *mbackend = NULL, *mmac = NULL;
    unsigned char key[KV_MAC_KEY_LEN];
    char mac[65], why[160];
    json_int_t format = 0, current = 0;
    json_t *j = NULL, *versions = NULL;
    json_error_t jerr;
    struct stat st;
    kv_rc rc = KV_OK;

    memset(r, 0, sizeof(*r));
    *found = false;
    if (!path || !dir)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot look for the lifecycle record '%s'", path);
        if (sb)
            memset(sb, 0, sizeof(*sb));
        goto out;
    }
    if (sb)
        *sb = st;
    *found = true;
    KV_CHECK(rc, kv_dir_check(ctx, dir, "lifecycle directory"));
    KV_CHECK(rc, kv_read_file_ex(ctx, path, LC_FILE_MAX, KV_READ_STORE, &text, NULL));
    j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': lifecycle record '%s' is damaged (%s)",
                name, path, jerr.text);
    if (json_unpack(j, "{s:I, s:s, s:s, s:I, s:o, s:s !}", "format", &format, "name", &mname,
                    "backend", &mbackend, "current", &current, "versions", &versions, "mac",
                    &mmac) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': lifecycle record '%s' is damaged (unexpected fields)", name, path);
    if (format != LC_FORMAT)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': lifecycle record '%s' has format %lld; this library reads %d",
                name, path, (long long)format, LC_FORMAT);
    KV_CHECK(rc, kv_fs_store_mac_key(ctx, dir, false, key));
    KV_CHECK(rc, kv_json_mac(ctx, j, LC_MAC_PREFIX, key, mac));
    if (strlen(mmac) != 64 || CRYPTO_memcmp(mmac, mac, 64) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': lifecycle record '%s' does not authenticate: it was altered or "
                "not made in this home; refusing it", name, path);
    if (strcmp(mname, name) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': lifecycle record '%s' belongs to key '%.64s': the records were "
                "swapped or renamed", name, path, mname);
    if (strlen(mbackend) >= sizeof(r->backend) || current < 1 || current > LC_VERSION_MAX)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': lifecycle record '%s' is damaged (backend or current version)",
                name, path);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->backend, sizeof(r->backend), "%s", mbackend);
    r->current = (unsigned)current;
    if (!parse_versions(versions, r, why, sizeof(why)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "key '%s': lifecycle record '%s' is damaged (%s)",
                name, path, why);
out:
    if (rc != KV_OK)
        rec_clear(r);
    kv_wipe(key, sizeof(key));
    json_decref(j);
    free(text);
    free(dir);
    free(path);
    return rc;
}

static kv_rc rec_write(const kv_ctx *ctx, const struct lc_rec *r)
{
    char *dir = lc_dir(ctx), *file = kv_asprintf("%s.json", r->name), *text = NULL;
    unsigned char key[KV_MAC_KEY_LEN];
    json_t *j = NULL, *arr = json_array();
    char mac[65];
    kv_rc rc = KV_OK;

    if (!dir || !file || !arr)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < r->count; i++) {
        const struct lc_ver *v = &r->v[i];
        json_t *e = json_pack("{s:I, s:s, s:I, s:I, s:I, s:I}", "version",
                              (json_int_t)v->version, "state", kv_version_state_name(v->state),
                              "created", (json_int_t)v->created, "activated",
                              (json_int_t)v->activated, "retire_at", (json_int_t)v->retire_at,
                              "destroy_at", (json_int_t)v->destroy_at);
        if (!e || (v->fpr[0] && json_object_set_new(e, "public_key_sha256",
                                                     json_string(v->fpr)) != 0) ||
            json_array_append_new(arr, e) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    j = json_pack("{s:i, s:s, s:s, s:I, s:O}", "format", LC_FORMAT, "name", r->name, "backend",
                  r->backend, "current", (json_int_t)r->current, "versions", arr);
    if (!j)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_fs_prepare(ctx, dir));
    KV_CHECK(rc, kv_fs_store_mac_key(ctx, dir, true, key));
    KV_CHECK(rc, kv_json_mac(ctx, j, LC_MAC_PREFIX, key, mac));
    if (json_object_set_new(j, "mac", json_string(mac)) != 0 ||
        !(text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_write_file_atomic(ctx, dir, file, text, strlen(text), true);
out:
    kv_wipe(key, sizeof(key));
    json_decref(arr);
    json_decref(j);
    free(text);
    free(file);
    free(dir);
    return rc;
}

/* ---- a key's view of its version ------------------------------------------ */

struct kv_lifecycle {
    kv_mutex lock;            /* first: tests/check_rotate.c holds it by a cast */
    char base[KV_NAME_MAX + 1];
    char backend[32];        /* the record's, "" when none */
    unsigned version;
    bool strict;             /* opened by name: a record that disagrees is corruption */
    bool by_key;             /* opened by URI or from bytes: found by public key hash in
                              * any record; watches the lifecycle directory */
    bool had_record;         /* a record applied to this key once */
    char keyfpr[65];         /* the key's own public key hash ("" before attach) */
    kv_version_state state;
    bool gone;               /* the record no longer lists this version */
    int64_t retire_at;
    struct stat seen;        /* the record file at the last look (st_ino 0: none) */
    struct timespec last;    /* CLOCK_MONOTONIC of the last look */
    int pending_fd;          /* a pending version's hold on HOME/lifecycle/NAME.lock */
    bool reload;             /* read the record at the next look, changed or not */
};

void kv_lifecycle_free(struct kv_lifecycle *lc)
{
    if (!lc)
        return;
    /* close, not LOCK_UN: a child forked meanwhile shares the hold, which
     * ends when the last copy is closed */
    if (lc->pending_fd >= 0)
        close(lc->pending_fd);
    kv_mutex_destroy(&lc->lock);
    free(lc);
}

static struct kv_lifecycle *lc_new(const char *base, unsigned version, bool strict)
{
    struct kv_lifecycle *lc = calloc(1, sizeof(*lc));

    if (!lc)
        return NULL;
    kv_mutex_init(&lc->lock);
    snprintf(lc->base, sizeof(lc->base), "%s", base);
    lc->version = version;
    lc->strict = strict;
    lc->state = KV_VERSION_CURRENT;
    lc->pending_fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &lc->last);
    return lc;
}

const char *kv_version_backend(const struct kv_lifecycle *lc)
{
    return lc && lc->backend[0] ? lc->backend : NULL;
}

/* What record r (found or not) says about lc's version; keyfpr must be set. */
static kv_rc lc_apply(const kv_ctx *ctx, struct kv_lifecycle *lc, const struct lc_rec *r,
                      bool found)
{
    const struct lc_ver *v = found ? rec_find(r, lc->version) : NULL;

    lc->gone = false;
    if (!found) {
        if (lc->had_record)
            return kv_error(ctx, KV_ERR_CORRUPT,
                            "key '%s': its lifecycle record vanished while version %u was in "
                            "use; refusing it", lc->base, lc->version);
        lc->state = KV_VERSION_CURRENT;
        lc->retire_at = 0;
        return KV_OK;
    }
    lc->had_record = true;
    if (!v) {
        lc->gone = true;
        return KV_OK;
    }
    if (v->fpr[0] && strcmp(v->fpr, lc->keyfpr) != 0)
        return kv_error(ctx, KV_ERR_CORRUPT,
                        "key '%s' version %u: the backend key is not the one its lifecycle "
                        "record names (replaced or swapped); refusing it", lc->base,
                        lc->version);
    lc->state = v->state;
    lc->retire_at = v->retire_at;
    return KV_OK;
}

kv_rc kv_version_resolve(kv_ctx *ctx, const char *ref, char bname[KV_NAME_MAX + 1],
                         struct kv_lifecycle **out)
{
    char base[KV_NAME_MAX + 1];
    struct lc_rec r;
    bool found = false;
    unsigned v;
    kv_rc rc;

    *out = NULL;
    memset(&r, 0, sizeof(r));
    if (!name_split(ref, base, &v))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "the key name is invalid (not shown: it may hold a secret): use 1-64 "
                        "of A-Z a-z 0-9 . _ -, optionally @VERSION, or a URI");
    KV_CHECK(rc, rec_read(ctx, base, &r, &found, NULL));
    if (v == 0)
        v = found ? r.current : 1;
    if (found && !rec_find(&r, v))
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND,
                "key '%s' has no version %u (current: %u; pruned versions are gone)", base, v,
                r.current);
    if (!backend_name(base, v, bname))
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "key '%s' has no version %u", base, v);
    if (!(*out = lc_new(base, v, true)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (found)
        snprintf((*out)->backend, sizeof((*out)->backend), "%s", r.backend);
out:
    rec_clear(&r);
    return rc;
}

/*
 * The record that lists public key hash fpr, whichever its name: every
 * HOME/lifecycle/NAME.json, each authenticated (a damaged one fails the
 * look: it might be the one that retires this key). *found false when
 * none lists it.
 */
static kv_rc rec_find_key(const kv_ctx *ctx, const char *fpr, struct lc_rec *r, unsigned *ver,
                          bool *found)
{
    char *dir = lc_dir(ctx), stem[KV_NAME_MAX + 1];
    struct dirent *de;
    DIR *d = NULL;
    kv_rc rc = KV_OK;

    memset(r, 0, sizeof(*r));
    *found = false;
    *ver = 0;
    if (!dir)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!(d = opendir(dir))) {
        if (errno != ENOENT && errno != ENOTDIR)
            KV_FAIL_ERRNO(ctx, rc, errno, "cannot read the lifecycle directory '%s'", dir);
        goto out;
    }
    while (!*found && (errno = 0, de = readdir(d))) {
        size_t len = strlen(de->d_name);
        bool f = false;

        /* NAME.json of a base name; not .store-secret, NAME.lock or temporaries */
        if (de->d_name[0] == '.' || len <= 5 || len - 5 > KV_NAME_MAX ||
            strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        memcpy(stem, de->d_name, len - 5);
        stem[len - 5] = '\0';
        if (!kv_name_valid(stem))
            continue;
        KV_CHECK(rc, rec_read(ctx, stem, r, &f, NULL));
        for (size_t i = 0; f && i < r->count && !*found; i++)
            if (r->v[i].fpr[0] && !strcmp(r->v[i].fpr, fpr)) {
                *ver = r->v[i].version;
                *found = true;
            }
        if (!*found)
            rec_clear(r);
    }
    if (!*found && errno)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot read the lifecycle directory '%s'", dir);
out:
    if (d)
        closedir(d);
    free(dir);
    return rc;
}

/* lc_load for a key found by its public key: the directory's identity,
 * then the record listing the key, if any. */
static kv_rc lc_load_by_key(const kv_ctx *ctx, struct kv_lifecycle *lc)
{
    char *dir = lc_dir(ctx);
    struct lc_rec r;
    struct stat sb;
    bool found = false;
    unsigned ver = 0;
    kv_rc rc = KV_OK;

    memset(&r, 0, sizeof(r));
    if (!dir)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(dir, &sb) != 0)
        memset(&sb, 0, sizeof(sb));
    KV_CHECK(rc, rec_find_key(ctx, lc->keyfpr, &r, &ver, &found));
    if (found) {
        snprintf(lc->base, sizeof(lc->base), "%s", r.name);
        snprintf(lc->backend, sizeof(lc->backend), "%s", r.backend);
        lc->version = ver;
        KV_CHECK(rc, lc_apply(ctx, lc, &r, true));
    } else if (lc->had_record) {
        /* its version was pruned or its key destroyed while held */
        lc->gone = true;
    } else {
        lc->state = KV_VERSION_CURRENT;
        lc->retire_at = 0;
    }
    lc->seen = sb;
out:
    rec_clear(&r);
    free(dir);
    return rc;
}

/* A fresh look at the record for lc: its identity, then what it says. */
static kv_rc lc_load(const kv_ctx *ctx, struct kv_lifecycle *lc)
{
    struct lc_rec r;
    struct stat sb;
    bool found = false;
    kv_rc rc;

    if (lc->by_key)
        return lc_load_by_key(ctx, lc);
    rc = rec_read(ctx, lc->base, &r, &found, &sb);

    if (rc == KV_OK)
        rc = lc_apply(ctx, lc, &r, found);
    if (rc == KV_OK)
        lc->seen = sb;
    rec_clear(&r);
    return rc;
}

kv_rc kv_version_attach(kv_key *key, struct kv_lifecycle **lcp)
{
    kv_ctx *ctx = key->ctx;
    struct kv_lifecycle *lc = *lcp;
    char probe[KV_NAME_MAX + 1];
    kv_rc rc = KV_OK;

    *lcp = NULL;
    if (!lc) {
        /* by URI or from a key file's bytes: the name says nothing (a copy
         * of NAME@2.pem may be called anything), the public key does */
        if (!(lc = lc_new("", 1, false)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        lc->by_key = true;
    }
    KV_CHECK(rc, kv_meta_pub_sha256(ctx, key->pub, lc->keyfpr));
    KV_CHECK(rc, lc_load(ctx, lc));
    if (lc->strict && !lc->seen.st_ino) {
        /* no record: version 1 alone. A NAME@2 without one means the
         * record was deleted, which would bring retired versions back */
        if (lc->version >= 2)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "key '%s' version %u exists but its lifecycle record is missing; "
                    "refusing it", lc->base, lc->version);
        if (backend_name(lc->base, 2, probe) && key->be->ops->exists(key->be, probe) == KV_OK)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "key '%s' has a version 2 in backend %s but no lifecycle record (it was "
                    "deleted?); refusing the key", lc->base, key->be->name);
    }
    key->version = lc->by_key && !lc->had_record && key->name
                       ? kv_backend_name_version(key->name) : lc->version;
    key->lc = lc;
    lc = NULL;
out:
    kv_lifecycle_free(lc);
    return rc;
}

static const char *op_name(kv_op op)
{
    switch (op) {
    case KV_OP_SIGN: return "sign";
    case KV_OP_ECDH: return "ecdh";
    case KV_OP_ATTEST: return "attest";
    case KV_OP_ISSUE: return "issue";
    default: return "use";
    }
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

kv_rc kv_version_check(kv_key *key, kv_op op)
{
    struct kv_lifecycle *lc = key->lc;
    kv_version_state state;
    struct timespec now;
    int64_t retire_at, t;
    char *path = NULL, when[32], base[KV_NAME_MAX + 1];
    unsigned version;
    struct stat sb;
    bool gone;
    kv_rc rc = KV_OK;

    if (!lc)
        return KV_OK;
    /* the first look in a forked child whose parent had a thread in here
     * at fork(): what it was writing may be half written */
    if (kv_mutex_lock(&lc->lock))
        lc->reload = true;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (lc->reload || now.tv_sec - lc->last.tv_sec > 1 ||
        (now.tv_sec - lc->last.tv_sec == 1 && now.tv_nsec >= lc->last.tv_nsec)) {
        /* at most one stat a second; the record is read only when it changed */
        path = lc->by_key ? lc_dir(key->ctx) : lc_path(key->ctx, lc->base);
        if (!path) {
            rc = kv_error(key->ctx, KV_ERR_NO_MEMORY, "out of memory");
        } else if (lstat(path, &sb) != 0) {
            memset(&sb, 0, sizeof(sb));
            if (lc->seen.st_ino || lc->reload)
                rc = lc_load(key->ctx, lc);
        } else if (lc->reload || !lc->seen.st_ino || !same_file(&sb, &lc->seen)) {
            rc = lc_load(key->ctx, lc);
        }
        /* a failed look is tried again at the next call, not a second later */
        if (rc == KV_OK) {
            lc->last = now;
            lc->reload = false;
        }
    }
    state = lc->state;
    retire_at = lc->retire_at;
    gone = lc->gone;
    /* for the messages: a handle found by its public key has them rewritten
     * by the next look, in another thread */
    version = lc->version;
    memcpy(base, lc->base, sizeof(base));
    kv_mutex_unlock(&lc->lock);
    free(path);
    if (rc != KV_OK)
        return rc;
    t = (int64_t)time(NULL);
    if (gone)
        return kv_error(key->ctx, KV_ERR_POLICY,
                        "version %u of key '%s' is no longer in its lifecycle record (pruned): "
                        "%s refused", version, base, op_name(op));
    if (state == KV_VERSION_OVERLAP && retire_at <= t)
        state = KV_VERSION_RETIRED;
    if (state == KV_VERSION_RETIRED) {
        time_text(retire_at, when);
        return kv_error(key->ctx, KV_ERR_POLICY, "version %u of key '%s' was retired at %s: %s "
                        "refused", version, base, when, op_name(op));
    }
    if (state == KV_VERSION_ABANDONED)
        return kv_error(key->ctx, KV_ERR_POLICY,
                        "version %u of key '%s' was abandoned by an interrupted rotation: %s "
                        "refused", version, base, op_name(op));
    return KV_OK;
}

kv_rc kv_version_name_free(kv_ctx *ctx, const char *name)
{
    char *path = lc_path(ctx, name);
    struct stat sb;
    kv_rc rc = KV_OK;

    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(path, &sb) == 0)
        rc = kv_error(ctx, KV_ERR_KEY_EXISTS,
                      "key '%s' has versions (its lifecycle record '%s' exists): rotate it, "
                      "or destroy it first", name, path);
    free(path);
    return rc;
}

/* ---- rotation ------------------------------------------------------------ */

static kv_backend *backend_named(kv_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->nbackends; i++)
        if (!strcmp(ctx->backends[i].name, name))
            return &ctx->backends[i];
    return NULL;
}

/* Open backend key bname in be, quietly when it is not there. */
static kv_rc open_in(kv_ctx *ctx, kv_backend *be, const char *bname, kv_key **out)
{
    kv_key *key = kv_key_new(ctx, be);
    kv_rc rc;

    *out = NULL;
    if (!key)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = be->ops->open_name(be, bname, key);
    if (rc == KV_OK)
        *out = key;
    else
        kv_key_free(key);
    return rc;
}

/* Remove a leftover backend key of an interrupted rotation: KV_OK when it
 * is gone (or never was), KV_ERR_CORRUPT (nothing recorded) when it is
 * there but cannot be opened, so not destroyed. */
static kv_rc leftover_remove(kv_ctx *ctx, kv_backend *be, const char *bname)
{
    kv_err_mark mark = kv_err_mark_get(ctx);
    kv_key *old = NULL;
    kv_rc rc = be->ops->exists(be, bname);

    if (rc == KV_ERR_KEY_NOT_FOUND)
        return KV_OK;
    if (rc == KV_OK)
        rc = open_in(ctx, be, bname, &old);
    if (rc == KV_OK)
        rc = be->ops->destroy(be, old);
    kv_key_free(old);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = KV_OK;
    if (rc != KV_OK && rc != KV_ERR_NO_MEMORY) {
        kv_err_rewind(ctx, mark);
        rc = KV_ERR_CORRUPT;
    }
    return rc;
}

/*
 * The hold a pending version keeps on HOME/lifecycle/NAME.lock (an
 * flock, which ends with the process): a rotation that finds a pending
 * version nobody holds knows its maker died and remakes it; one that is
 * held belongs to a live rotation (kv_rotate_prepare, then a renewal's
 * request and issue, then kv_rotate_commit) and is left alone.
 */
static kv_rc pending_hold(kv_ctx *ctx, const char *name, int *fd)
{
    char *dir = lc_dir(ctx), *path = kv_asprintf("%s/lifecycle/%s.lock", ctx->home, name);
    struct stat sb;
    kv_rc rc = KV_OK;

    *fd = -1;
    if (!dir || !path)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_fs_prepare(ctx, dir));
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (*fd < 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot open the rotation lock '%s'", path);
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION, "rotation lock '%s' is not a regular file", path);
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            KV_FAIL(ctx, rc, KV_ERR_IO,
                    "a rotation of key '%s' is in progress in a live process (it holds the "
                    "pending version); run again when it has finished", name);
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot lock '%s'", path);
    }
out:
    if (rc != KV_OK && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    free(path);
    free(dir);
    return rc;
}

/* kv_rotate_prepare with the home's creation lock held by the caller. */
static kv_rc prepare_locked(kv_ctx *ctx, const char *name, kv_key **pending)
{
    char bname[KV_NAME_MAX + 1];
    kv_key *cur = NULL, *key = NULL;
    struct lc_ver *v;
    struct lc_rec r;
    kv_backend *be;
    bool found = false;
    unsigned next = 0;
    int hold = -1;
    kv_rc rc;

    *pending = NULL;
    memset(&r, 0, sizeof(r));
    KV_CHECK(rc, kv_key_open(ctx, name, &cur));
    KV_CHECK(rc, pending_hold(ctx, name, &hold));
    be = cur->be;
    KV_CHECK(rc, rec_read(ctx, name, &r, &found, NULL));
    if (!found) {
        snprintf(r.name, sizeof(r.name), "%s", name);
        snprintf(r.backend, sizeof(r.backend), "%s", be->name);
        r.current = 1;
        if (!(v = rec_add(&r, 1)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        v->state = KV_VERSION_CURRENT;
        KV_CHECK(rc, kv_meta_pub_sha256(ctx, cur->pub, v->fpr));
    }
    /* a pending version a killed run left: remake it under its number, or
     * abandon it when what is there cannot be opened (a half-made key) */
    for (size_t i = 0; i < r.count; i++)
        if (r.v[i].state == KV_VERSION_PENDING)
            next = r.v[i].version;
    if (!next)
        next = rec_max(&r) + 1;
    for (;;) {
        if (next > LC_VERSION_MAX || !backend_name(name, next, bname))
            KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                    "key '%s' cannot have a version %u: NAME@N must be at most %d characters",
                    name, next, KV_NAME_MAX);
        rc = leftover_remove(ctx, be, bname);
        if (rc == KV_OK)
            break;
        if (rc != KV_ERR_CORRUPT)
            goto out;
        if (!(v = rec_find(&r, next)) && !(v = rec_add(&r, next)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        v->state = KV_VERSION_ABANDONED;
        next = rec_max(&r) + 1;
    }
    if (!(v = rec_find(&r, next)) && !(v = rec_add(&r, next)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memset(v, 0, sizeof(*v));
    v->version = next;
    v->state = KV_VERSION_PENDING;
    v->created = (int64_t)time(NULL);
    /* first the record names the pending version, so that a key made and
     * then orphaned by a kill is found again */
    KV_CHECK(rc, rec_write(ctx, &r));
    if (!(key = kv_key_new(ctx, be)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* the new version is held to the current version's policy */
    if (cur->policy)
        KV_CHECK(rc, kv_key_policy_copy(ctx, cur->policy, cur->type, &key->policy));
    KV_CHECK(rc, kv_policy_check(ctx, be, key, KV_OP_GENERATE, bname, NULL));
    KV_CHECK(rc, be->ops->generate(be, bname, cur->type, key));
    v = rec_find(&r, next);
    KV_CHECK(rc, kv_meta_pub_sha256(ctx, key->pub, v->fpr));
    KV_CHECK(rc, rec_write(ctx, &r));
    if (!(key->lc = lc_new(name, next, true)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(key->lc->keyfpr, v->fpr, sizeof(v->fpr));
    KV_CHECK(rc, lc_load(ctx, key->lc));
    key->lc->pending_fd = hold;
    hold = -1;
    key->version = next;
    *pending = key;
    key = NULL;
out:
    if (hold >= 0)
        close(hold);
    rec_clear(&r);
    kv_key_free(cur);
    kv_key_free(key);
    return rc;
}

kv_rc kv_rotate_prepare(kv_ctx *ctx, const char *name, kv_key **pending)
{
    int lock = -1;
    kv_rc rc = kv_home_lock(ctx, &lock);

    *pending = NULL;
    if (rc == KV_OK)
        rc = prepare_locked(ctx, name, pending);
    kv_home_unlock(lock);
    return rc;
}

/* A duration of [lifecycle]: seconds, or a number with s, m, h or d. */
static bool duration_parse(const char *s, int64_t *out)
{
    char *end = NULL;
    long long n;
    int64_t unit = 1;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno || n < 0)
        return false;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        unit = 60, end++;
    else if (*end == 'h')
        unit = 3600, end++;
    else if (*end == 'd')
        unit = 86400, end++;
    if (*end || n > INT64_MAX / unit / 4)
        return false;
    *out = (int64_t)n * unit;
    return true;
}

/* opts' overlap or grace, -1 resolved from [lifecycle] key; grace may be
 * "keep" (*out -1: never destroyed). */
static kv_rc lifecycle_time(kv_ctx *ctx, int64_t given, const char *key, int64_t def,
                            int64_t *out)
{
    const char *v = given >= 0 ? NULL : kv_config_get(ctx->cfg, "lifecycle", key);

    *out = given >= 0 ? given : def;
    if (!v)
        return KV_OK;
    if (!strcmp(key, "grace") && !strcmp(v, "keep")) {
        *out = -1;
        return KV_OK;
    }
    if (!duration_parse(v, out))
        return kv_error(ctx, KV_ERR_CONFIG,
                        "[lifecycle] %s: not a duration (seconds, or a number with s, m, h "
                        "or d%s)", key, !strcmp(key, "grace") ? ", or keep" : "");
    return KV_OK;
}

static kv_rc opts_check(kv_ctx *ctx, const kv_rotate_opts *opts)
{
    if (!opts)
        return KV_OK;
    if (opts->size < sizeof(kv_rotate_opts))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_rotate_opts.size is %zu, expected %zu",
                        opts->size, sizeof(kv_rotate_opts));
    if (opts->overlap < -1 || opts->grace < -1 || opts->overlap > INT64_MAX / 4 ||
        opts->grace > INT64_MAX / 4)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "kv_rotate_opts: overlap and grace are seconds, or -1 for the "
                        "configuration's");
    if (opts->flags & ~KV_ROTATE_KEEP)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_rotate_opts: unknown flags 0x%x",
                        opts->flags & ~KV_ROTATE_KEEP);
    return KV_OK;
}

/* kv_rotate_commit with the home's creation lock held by the caller. */
static kv_rc commit_locked(kv_ctx *ctx, kv_key *pending, const kv_rotate_opts *opts)
{
    const char *name = pending->lc ? pending->lc->base : pending->name;
    struct lc_ver *v, *old;
    int64_t overlap = 0, grace = 0, now;
    struct lc_rec r;
    char fpr[65];
    bool found = false;
    kv_rc rc;

    memset(&r, 0, sizeof(r));
    KV_CHECK(rc, opts_check(ctx, opts));
    KV_CHECK(rc, lifecycle_time(ctx, opts ? opts->overlap : -1, "overlap", LC_DEFAULT_OVERLAP,
                                &overlap));
    if (opts && (opts->flags & KV_ROTATE_KEEP))
        grace = -1;
    else
        KV_CHECK(rc, lifecycle_time(ctx, opts ? opts->grace : -1, "grace", -1, &grace));
    if (!pending->lc || !pending->lc->strict)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "key '%s' is not a version kv_rotate_prepare made",
                pending->name);
    KV_CHECK(rc, rec_read(ctx, name, &r, &found, NULL));
    KV_CHECK(rc, kv_meta_pub_sha256(ctx, pending->pub, fpr));
    v = found ? rec_find(&r, pending->version) : NULL;
    if (!v || v->state != KV_VERSION_PENDING || strcmp(v->fpr, fpr) != 0)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                "version %u of key '%s' is no longer its pending version (another rotation "
                "remade or committed it); nothing changed", pending->version, name);
    old = rec_find(&r, r.current);
    now = (int64_t)time(NULL);
    old->state = overlap > 0 ? KV_VERSION_OVERLAP : KV_VERSION_RETIRED;
    old->retire_at = now + overlap;
    old->destroy_at = grace < 0 ? 0 : old->retire_at + grace;
    v->state = KV_VERSION_CURRENT;
    v->activated = now;
    r.current = v->version;
    /* the commit point */
    KV_CHECK(rc, rec_write(ctx, &r));
    (void)kv_mutex_lock(&pending->lc->lock); /* reloads in any case */
    rc = lc_load(ctx, pending->lc);
    if (rc != KV_OK)
        pending->lc->reload = true;
    if (pending->lc->pending_fd >= 0) {
        /* no longer pending: forgotten before it is closed, so that a child
         * forked in between keeps a hold (as one forked a moment earlier
         * does) rather than a number that may be another file's */
        int fd = pending->lc->pending_fd;
        __atomic_store_n(&pending->lc->pending_fd, -1, __ATOMIC_SEQ_CST);
        close(fd);
    }
    kv_mutex_unlock(&pending->lc->lock);
out:
    rec_clear(&r);
    return rc;
}

kv_rc kv_rotate_commit(kv_ctx *ctx, kv_key *pending, const kv_rotate_opts *opts)
{
    int lock = -1;
    kv_rc rc = kv_home_lock(ctx, &lock);

    if (rc == KV_OK)
        rc = commit_locked(ctx, pending, opts);
    kv_home_unlock(lock);
    kv_audit_event(ctx, KV_AUDIT_ROTATE, pending->name, pending->version, pending->be->name, rc,
                   "the prepared version made current");
    return rc;
}

kv_rc kv_key_rotate(kv_ctx *ctx, const char *name, const kv_rotate_opts *opts, kv_key **out)
{
    kv_key *pending = NULL;
    const char *bename = NULL;
    unsigned version = 0;
    int lock = -1;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (out)
        *out = NULL;
    if (!kv_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "kv_key_rotate takes a key name (not shown: it may hold a secret), "
                        "not a URI or NAME@VERSION: 1-64 of A-Z a-z 0-9 . _ -");
    KV_CHECK(rc, opts_check(ctx, opts));
    /* one lock over both halves: rotations in one home follow each other */
    KV_CHECK(rc, kv_home_lock(ctx, &lock));
    KV_CHECK(rc, prepare_locked(ctx, name, &pending));
    version = pending->version;
    bename = pending->be->name;
    KV_CHECK(rc, commit_locked(ctx, pending, opts));
    if (out) {
        *out = pending;
        pending = NULL;
    }
out:
    kv_home_unlock(lock);
    kv_key_free(pending);
    /* the version made current (0 when none was made) */
    kv_audit_event(ctx, KV_AUDIT_ROTATE, name, version, bename, rc, NULL);
    return rc;
}

/* ---- versions, prune, destroy -------------------------------------------- */

void kv_key_version_list_free(kv_key_version_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        free((char *)list->versions[i].name);
    free(list->versions);
    free((char *)list->name);
    free((char *)list->backend);
    free(list);
}

kv_rc kv_key_versions(kv_ctx *ctx, const char *name, kv_key_version_list **out)
{
    kv_key_version_list *l = NULL;
    char bname[KV_NAME_MAX + 1];
    struct lc_rec r;
    bool found = false;
    int64_t now = (int64_t)time(NULL);
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    memset(&r, 0, sizeof(r));
    if (!kv_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "kv_key_versions takes a key name (not shown: it may hold a secret), "
                        "not a URI or NAME@VERSION: 1-64 of A-Z a-z 0-9 . _ -");
    /* a name this context may not touch is not even listed */
    KV_CHECK(rc, kv_ctx_policy_check(ctx, NULL, KV_OP_OPEN, name, true));
    KV_CHECK(rc, rec_read(ctx, name, &r, &found, NULL));
    if (!found) {
        /* never rotated: its one version, if the key exists (looked for
         * as key generation does: no login, no decryption) */
        const char *in = NULL;
        struct lc_ver *v;
        for (size_t i = 0; i < ctx->nbackends && !in; i++) {
            kv_backend *b = &ctx->backends[i];
            if (!b->available)
                continue;
            rc = b->ops->exists(b, name);
            if (rc == KV_OK)
                in = b->name;
            else if (rc != KV_ERR_KEY_NOT_FOUND)
                goto out;
        }
        if (!in)
            KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "no key named '%s'", name);
        rc = KV_OK;
        snprintf(r.name, sizeof(r.name), "%s", name);
        snprintf(r.backend, sizeof(r.backend), "%s", in);
        r.current = 1;
        if (!(v = rec_add(&r, 1)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        v->state = KV_VERSION_CURRENT;
    }
    l = calloc(1, sizeof(*l));
    if (l)
        l->versions = calloc(r.count, sizeof(*l->versions));
    if (!l || !l->versions || !(l->name = kv_strdup(name)) ||
        !(l->backend = kv_strdup(r.backend)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    l->current = r.current;
    for (size_t i = 0; i < r.count; i++) {
        kv_key_version *kv = &l->versions[l->count];
        const struct lc_ver *v = &r.v[i];
        if (!backend_name(name, v->version, bname) || !(kv->name = kv_strdup(bname)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        l->count++;
        kv->version = v->version;
        kv->state = state_now(v, now);
        kv->created = v->created;
        kv->activated = v->activated;
        kv->retire_at = v->retire_at;
        kv->destroy_at = v->destroy_at;
    }
    *out = l;
    l = NULL;
out:
    kv_key_version_list_free(l);
    rec_clear(&r);
    return rc;
}

/* Whether key's public key hash is fpr ("": not recorded, nothing to
 * compare); KV_ERR_CORRUPT naming the version when it is not. */
static kv_rc fpr_matches(kv_ctx *ctx, const kv_key *key, const char *name, unsigned ver,
                         const char *fpr)
{
    char have[65];
    kv_rc rc;

    if (!fpr[0])
        return KV_OK;
    if ((rc = kv_meta_pub_sha256(ctx, key->pub, have)) != KV_OK)
        return rc;
    if (strcmp(have, fpr) != 0)
        return kv_error(ctx, KV_ERR_CORRUPT,
                        "key '%s' version %u: the backend key is not the one its lifecycle "
                        "record names (replaced or swapped); not destroying it", name, ver);
    return KV_OK;
}

/* Destroy version ver of name's key in be, when it is the key the record
 * names (fpr): KV_OK also when it is gone already. */
static kv_rc version_destroy(kv_ctx *ctx, kv_backend *be, const char *name, unsigned ver,
                             const char *fpr)
{
    char bname[KV_NAME_MAX + 1];
    kv_key *key = NULL;
    kv_rc rc;

    if (!backend_name(name, ver, bname))
        return KV_OK;
    rc = open_in(ctx, be, bname, &key);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        return KV_OK;
    if (rc == KV_OK)
        rc = fpr_matches(ctx, key, name, ver, fpr);
    if (rc == KV_OK)
        rc = be->ops->destroy(be, key);
    kv_key_free(key);
    return rc;
}

kv_rc kv_key_prune(kv_ctx *ctx, const char *name, unsigned *destroyed)
{
    int64_t now = (int64_t)time(NULL);
    struct lc_rec r;
    kv_backend *be = NULL;
    char detail[48];
    bool found = false;
    unsigned count = 0;
    size_t keep = 0;
    int lock = -1;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (destroyed)
        *destroyed = 0;
    memset(&r, 0, sizeof(r));
    if (!kv_name_valid(name))
        return kv_error(ctx, KV_ERR_BAD_URI,
                        "kv_key_prune takes a key name (not shown: it may hold a secret), not "
                        "a URI or NAME@VERSION: 1-64 of A-Z a-z 0-9 . _ -");
    KV_CHECK(rc, kv_home_lock(ctx, &lock));
    KV_CHECK(rc, rec_read(ctx, name, &r, &found, NULL));
    if (!found)
        goto out; /* never rotated: nothing to prune */
    be = backend_named(ctx, r.backend);
    if (!be || !be->available)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE,
                "key '%s' lives in backend '%s', which is not available", name, r.backend);
    /* [policy] keys, backends and manage hold for pruning as for destroying */
    KV_CHECK(rc, kv_ctx_policy_check(ctx, be, KV_OP_DESTROY, name, true));
    for (size_t i = 0; i < r.count; i++) {
        struct lc_ver *v = &r.v[i];
        kv_version_state s = state_now(v, now);
        bool due = s == KV_VERSION_ABANDONED ||
                   (s == KV_VERSION_RETIRED && v->destroy_at && v->destroy_at <= now);
        kv_err_mark mark = kv_err_mark_get(ctx);

        if (due && s == KV_VERSION_ABANDONED) {
            /* a half-made key may not open: it stays listed for a later try */
            if (version_destroy(ctx, be, name, v->version, v->fpr) != KV_OK) {
                kv_err_rewind(ctx, mark);
                due = false;
            }
        } else if (due && rc == KV_OK) {
            rc = version_destroy(ctx, be, name, v->version, v->fpr);
            due = rc == KV_OK;
        } else {
            due = false; /* after a failure: kept for the next run */
        }
        if (due)
            count++;
        else
            r.v[keep++] = *v;
    }
    r.count = keep;
    if (count) {
        /* what was destroyed leaves the record even when a later one failed */
        kv_rc wrc = rec_write(ctx, &r);
        if (rc == KV_OK)
            rc = wrc;
    }
    if (destroyed)
        *destroyed = count;
out:
    kv_home_unlock(lock);
    rec_clear(&r);
    snprintf(detail, sizeof(detail), "%u version%s destroyed", count, count == 1 ? "" : "s");
    kv_audit_event(ctx, KV_AUDIT_PRUNE, kv_name_valid(name) ? name : NULL, 0,
                   be ? be->name : NULL, rc, detail);
    return rc;
}

kv_rc kv_version_destroy(kv_ctx *ctx, const char *ref, kv_key *key)
{
    struct kv_lifecycle *lc = key->lc;
    char base[KV_NAME_MAX + 1];
    struct lc_rec r;
    struct lc_ver *v;
    bool found = false;
    unsigned ver;
    kv_rc rc;

    memset(&r, 0, sizeof(r));
    if (lc && lc->by_key && lc->had_record)
        /* by URI or bytes, a version a record lists: destroyed behind the
         * record's back, the record would list a key that is gone */
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "the key at that URI is version %u of key '%s': destroy '%s@%u' (not "
                        "the current version) or '%s' (every version) by name", lc->version,
                        lc->base, lc->base, lc->version, lc->base);
    if (strchr(ref, ':') || !lc || !lc->strict || !name_split(ref, base, &ver))
        return key->be->ops->destroy(key->be, key); /* no versions */
    /* the caller holds the creation lock since before the open: the record
     * read now is the one the open saw */
    KV_CHECK(rc, rec_read(ctx, base, &r, &found, NULL));
    if (!found) {
        if (lc->seen.st_ino)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "key '%s': its lifecycle record vanished while it was being destroyed",
                    base);
        rc = key->be->ops->destroy(key->be, key); /* never rotated: its one version */
        goto out;
    }
    if (!(v = rec_find(&r, key->version)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': version %u is no longer in its lifecycle record", base, key->version);
    KV_CHECK(rc, fpr_matches(ctx, key, base, v->version, v->fpr));
    if (ver) {
        /* one version: never the current one (the name would open nothing) */
        if (ver == r.current)
            KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                    "version %u is the current version of key '%s': destroy '%s' to remove "
                    "every version, or rotate first", ver, base, base);
        KV_CHECK(rc, key->be->ops->destroy(key->be, key));
        {
            size_t at = (size_t)(v - r.v);
            memmove(v, v + 1, (r.count - at - 1) * sizeof(*v));
            r.count--;
        }
        rc = rec_write(ctx, &r);
        goto out;
    }
    if (key->version != r.current)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "key '%s': the open found version %u but the record's current version is %u",
                base, key->version, r.current);
    /* the whole key: every other version, the current one, then the record */
    for (size_t i = 0; i < r.count; i++) {
        kv_err_mark mark = kv_err_mark_get(ctx);
        if (r.v[i].version == r.current)
            continue;
        rc = version_destroy(ctx, key->be, base, r.v[i].version, r.v[i].fpr);
        if (rc != KV_OK && r.v[i].state == KV_VERSION_ABANDONED) {
            /* a half-made key of an interrupted rotation that does not
             * open: nothing of it is usable; leave it to the backend's tools */
            kv_err_rewind(ctx, mark);
            rc = KV_OK;
        }
        if (rc != KV_OK)
            goto out;
    }
    KV_CHECK(rc, key->be->ops->destroy(key->be, key));
    {
        char *path = lc_path(ctx, base);
        if (!path)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        if (unlink(path) != 0 && errno != ENOENT)
            rc = kv_error_errno(ctx, errno, "destroyed key '%s' but not its lifecycle record "
                                "'%s'", base, path);
        free(path);
    }
out:
    rec_clear(&r);
    return rc;
}
