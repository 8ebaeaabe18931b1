/*
 * registry.c - the verifier's registry of enrolled devices (SQLite): one
 * record per EK (its public key's hash, its certificate, the AK's name and
 * certificate serial, the device id, when, whether revoked), and the
 * challenges of enrollments under way. Everything read back is checked as
 * if an attacker had written the file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <sqlite3.h>

#include "internal.h"

#define REG_BUSY_MS 5000
#define REG_FORMAT "keyvault-registry-2"
#define REG_PENDING_PER_EK 8
#define REG_BLOB_MAX (64 * 1024)

struct kv_registry {
    sqlite3 *db;
    char *path;
    kv_db_guard guard;
};

/* PRAGMA application_id of a registry: "KVRG" */
#define REG_APPLICATION_ID 0x4b565247u
#define REG_USER_VERSION 1

bool kv_device_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > KV_DEVICE_ID_MAX || id[0] == '-')
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._:@-", *p))
            return false;
    return true;
}

void kv_pending_clear(kv_pending *p)
{
    OPENSSL_free(p->ek_certs);
    OPENSSL_free(p->ak_public);
    memset(p, 0, sizeof(*p));
}

kv_rc kv_sqlite_error(const kv_ctx *ctx, sqlite3 *db, int src, const char *what,
                      const char *kind, const char *path)
{
    int ext = db ? sqlite3_extended_errcode(db) : src;
    int base = src & 0xff;
    kv_rc rc = base == SQLITE_FULL                              ? KV_ERR_NO_SPACE
               : base == SQLITE_CORRUPT || base == SQLITE_NOTADB ? KV_ERR_CORRUPT
               : base == SQLITE_NOMEM                           ? KV_ERR_NO_MEMORY
               : base == SQLITE_PERM || base == SQLITE_READONLY  ? KV_ERR_PERMISSION
                                                                 : KV_ERR_IO;

    return kv_error_code(ctx, rc, "sqlite", (unsigned long)ext, "%s of %s '%s' failed: %s",
                         what, kind, path, sqlite3_errstr(ext));
}

/* ---- databases of ours: opened as if an attacker had written them ------------- */

/* A registry or CA record larger than this is refused before SQLite reads
 * it (a million issued certificates take about 300 MiB... and a CA that
 * issues more keeps more than one record); a value (text, blob) read back
 * is at most KV_DB_VALUE_MAX. */
#define KV_DB_SIZE_MAX ((long long)512 << 20)
#define KV_DB_VALUE_MAX (1 << 20)
#define KV_DB_PROGRESS_OPS 1000 /* VM instructions between two looks at the clock */
#define KV_DB_OBJECTS_MAX 32    /* schema rows: ours have fewer than 10 */

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kv_db_arm(kv_db_guard *g)
{
    g->deadline_ms = monotonic_ms() + KV_DB_WORK_MS;
    g->expired = 0;
}

static int db_progress(void *arg)
{
    kv_db_guard *g = arg;

    if (g->deadline_ms == 0 || monotonic_ms() <= g->deadline_ms)
        return 0;
    g->expired = 1;
    return 1;
}

kv_rc kv_db_error(const kv_ctx *ctx, sqlite3 *db, const kv_db_guard *g, int src,
                  const char *what, const char *kind, const char *path)
{
    if (g && g->expired && (src & 0xff) == SQLITE_INTERRUPT)
        return kv_error_code(ctx, KV_ERR_IO, "sqlite", (unsigned long)src,
                             "%s of %s '%s' was stopped after %d ms of work: refusing a "
                             "database that costs this much", what, kind, path, KV_DB_WORK_MS);
    return kv_sqlite_error(ctx, db, src, what, kind, path);
}

/* One row of sqlite_master. */
typedef struct db_object {
    char *type, *name, *tbl_name, *sql;
} db_object;

static void objects_free(db_object *o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(o[i].type);
        free(o[i].name);
        free(o[i].tbl_name);
        free(o[i].sql);
    }
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);

    return kv_strdup(s ? s : "");
}

/* The rows of db's sqlite_master, at most KV_DB_OBJECTS_MAX (*n set to
 * one more when there are more). */
static int db_objects(sqlite3 *db, db_object *o, size_t *n)
{
    sqlite3_stmt *st = NULL;
    int e = sqlite3_prepare_v2(db, "SELECT type, name, tbl_name, sql FROM main.sqlite_master "
                                   "ORDER BY name", -1, &st, NULL);

    *n = 0;
    while (e == SQLITE_OK || e == SQLITE_ROW) {
        if ((e = sqlite3_step(st)) != SQLITE_ROW)
            break;
        if (*n == KV_DB_OBJECTS_MAX) {
            (*n)++;
            e = SQLITE_DONE;
            break;
        }
        o[*n] = (db_object){ col_dup(st, 0), col_dup(st, 1), col_dup(st, 2), col_dup(st, 3) };
        (*n)++;
        if (!o[*n - 1].type || !o[*n - 1].name || !o[*n - 1].tbl_name || !o[*n - 1].sql) {
            e = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    return e == SQLITE_DONE ? SQLITE_OK : e;
}

/* A name from the file, for a message: shown only when it is a plain
 * identifier of a sane length. */
static const char *shown(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 64)
        return "(a name of another length)";
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return "(a name with other characters)";
    return name;
}

/* "a table", "an index", ... for a type shown(). */
static const char *article(const char *type)
{
    return strchr("aeiou", type[0]) && type[0] ? "an" : "a";
}

/* The file's schema against the one f makes (learnt from an in-memory
 * database: SQLite stores CREATE statements as it normalises them). */
static kv_rc schema_check(const kv_ctx *ctx, sqlite3 *db, const char *path,
                          const kv_db_format *f, const kv_db_guard *g)
{
    db_object want[KV_DB_OBJECTS_MAX], have[KV_DB_OBJECTS_MAX];
    size_t nw = 0, nh = 0;
    sqlite3 *mem = NULL;
    int e;
    kv_rc rc = KV_OK;

    if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(mem, f->schema, NULL, NULL, NULL) != SQLITE_OK ||
        db_objects(mem, want, &nw) != SQLITE_OK || nw > KV_DB_OBJECTS_MAX)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "cannot make the %s schema in memory", f->kind);
    if ((e = db_objects(db, have, &nh)) != SQLITE_OK)
        KV_CHECK(rc, kv_db_error(ctx, db, g, e, "reading the schema", f->kind, path));
    if (nh > KV_DB_OBJECTS_MAX)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: more than %d tables, "
                "indexes, views and triggers", path, f->kind, KV_DB_OBJECTS_MAX);
    for (size_t i = 0; i < nh; i++) {
        const db_object *w = NULL;
        for (size_t j = 0; j < nw && !w; j++)
            if (!strcmp(want[j].name, have[i].name))
                w = &want[j];
        if (!w)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: it has %s %s '%s' "
                    "that libkeyvault does not make", path, f->kind,
                    article(shown(have[i].type)), shown(have[i].type), shown(have[i].name));
        if (strcmp(w->type, have[i].type) != 0)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: '%s' is %s %s, "
                    "not %s %s", path, f->kind, w->name, article(shown(have[i].type)),
                    shown(have[i].type), article(w->type), w->type);
        if (strcmp(w->tbl_name, have[i].tbl_name) != 0 || strcmp(w->sql, have[i].sql) != 0)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: %s '%s' is not "
                    "defined as libkeyvault defines it", path, f->kind, w->type, w->name);
    }
    for (size_t j = 0; j < nw; j++) {
        bool found = false;
        for (size_t i = 0; i < nh && !found; i++)
            found = !strcmp(want[j].name, have[i].name);
        if (!found)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: it has no %s '%s'",
                    path, f->kind, want[j].type, want[j].name);
    }
out:
    objects_free(want, nw > KV_DB_OBJECTS_MAX ? KV_DB_OBJECTS_MAX : nw);
    objects_free(have, nh > KV_DB_OBJECTS_MAX ? KV_DB_OBJECTS_MAX : nh);
    sqlite3_close(mem);
    return rc;
}

/* One integer PRAGMA of db; a statement stopped by g's bound says so. */
static kv_rc pragma_int(const kv_ctx *ctx, sqlite3 *db, const kv_db_guard *g, const char *sql,
                        const char *what, const kv_db_format *f, const char *path,
                        long long *out)
{
    sqlite3_stmt *st = NULL;
    int e = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    kv_rc rc = KV_OK;

    if (e == SQLITE_OK && (e = sqlite3_step(st)) == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        rc = kv_db_error(ctx, db, g, e == SQLITE_DONE ? SQLITE_CORRUPT : e, what, f->kind, path);
    sqlite3_finalize(st);
    return rc;
}

kv_rc kv_db_open(const kv_ctx *ctx, const char *path, const kv_db_format *f, bool write,
                 int busy_ms, kv_db_guard *g, sqlite3 **out)
{
    sqlite3 *db = NULL;
    long long app = 0, version = 0, pages = 0, page_size = 0, objects = 0;
    struct stat st;
    char *stamp = NULL;
    int e;
    kv_rc rc = KV_OK;

    *out = NULL;
    memset(g, 0, sizeof(*g));
    if (lstat(path, &st) != 0)
        return kv_error_errno(ctx, errno, "cannot examine %s '%s'", f->kind, path);
    if ((long long)st.st_size > KV_DB_SIZE_MAX)
        return kv_error(ctx, KV_ERR_CORRUPT, "%s '%s' is %lld bytes, more than %lld: refusing "
                        "it", f->kind, path, (long long)st.st_size, KV_DB_SIZE_MAX);
    e = sqlite3_open_v2(path, &db, (write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) |
                                       SQLITE_OPEN_NOFOLLOW, NULL);
    if (e != SQLITE_OK)
        KV_CHECK(rc, kv_sqlite_error(ctx, db, e, "opening", f->kind, path));
    /* before the first read: no schema-defined code runs with our rights,
     * no view is expanded, the file cannot be rewritten underneath SQLite,
     * damaged cells are caught, no value grows past KV_DB_VALUE_MAX, and
     * no statement runs for ever. Triggers stay on for temporary ones; the
     * schema check refuses any in the file. */
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, KV_DB_VALUE_MAX);
    sqlite3_busy_timeout(db, busy_ms);
    sqlite3_progress_handler(db, KV_DB_PROGRESS_OPS, db_progress, g);
    if ((e = sqlite3_exec(db, "PRAGMA cell_size_check = ON", NULL, NULL, NULL)) != SQLITE_OK ||
        (e = sqlite3_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL)) !=
            SQLITE_OK)
        KV_CHECK(rc, kv_sqlite_error(ctx, db, e, "a transaction", f->kind, path));
    kv_db_arm(g);
    KV_CHECK(rc, pragma_int(ctx, db, g, "PRAGMA application_id", "reading the header", f, path,
                            &app));
    KV_CHECK(rc, pragma_int(ctx, db, g, "PRAGMA user_version", "reading the header", f, path,
                            &version));
    KV_CHECK(rc, pragma_int(ctx, db, g, "PRAGMA page_count", "reading the header", f, path,
                            &pages));
    KV_CHECK(rc, pragma_int(ctx, db, g, "PRAGMA page_size", "reading the header", f, path,
                            &page_size));
    if (pages > KV_DB_SIZE_MAX / (page_size > 0 ? page_size : 1))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s '%s' holds %lld pages of %lld bytes, more than "
                "%lld bytes: refusing it", f->kind, path, pages, page_size, KV_DB_SIZE_MAX);
    KV_CHECK(rc, pragma_int(ctx, db, g, "SELECT COUNT(*) FROM main.sqlite_master",
                            "reading the schema", f, path, &objects));
    if (app == 0 && version == 0 && objects == 0) {
        /* a new file: ours to make */
        if (!write)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: it is empty",
                    path, f->kind);
        if ((e = sqlite3_exec(db, f->schema, NULL, NULL, NULL)) != SQLITE_OK)
            KV_CHECK(rc, kv_db_error(ctx, db, g, e, "making the tables", f->kind, path));
    } else {
        if (app != 0 && app != (long long)f->application_id)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s: its application_id "
                    "is 0x%08llx, not 0x%08lx", path, f->kind, (unsigned long long)app & 0xffffffffULL,
                    (unsigned long)f->application_id);
        /* a file from before the header (application_id 0) has user_version 0 */
        if (version != (app == 0 ? 0 : f->user_version))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault %s of this version: "
                    "its user_version is %lld, this library reads %d%s", path, f->kind, version,
                    app == 0 ? 0 : f->user_version,
                    app == 0 ? " in a file without its application_id" : "");
        KV_CHECK(rc, schema_check(ctx, db, path, f, g));
    }
    if (write && app == 0) {
        stamp = kv_asprintf("PRAGMA application_id = %ld; PRAGMA user_version = %d",
                            (long)(int32_t)f->application_id, f->user_version);
        if (!stamp)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        if ((e = sqlite3_exec(db, stamp, NULL, NULL, NULL)) != SQLITE_OK)
            KV_CHECK(rc, kv_db_error(ctx, db, g, e, "marking the header", f->kind, path));
    }
    *out = db;
    db = NULL;
out:
    free(stamp);
    if (db) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    return rc;
}

static kv_rc reg_error(const kv_ctx *ctx, const kv_registry *r, int src, const char *what)
{
    return kv_db_error(ctx, r->db, &r->guard, src, what, "registry", r->path);
}

static kv_rc reg_exec(const kv_ctx *ctx, kv_registry *r, const char *sql, const char *what)
{
    int e;

    kv_db_arm(&r->guard);
    e = sqlite3_exec(r->db, sql, NULL, NULL, NULL);

    return e == SQLITE_OK ? KV_OK : reg_error(ctx, r, e, what);
}

static kv_rc reg_prepare(const kv_ctx *ctx, kv_registry *r, const char *sql, sqlite3_stmt **st)
{
    int e;

    kv_db_arm(&r->guard);
    e = sqlite3_prepare_v2(r->db, sql, -1, st, NULL);

    return e == SQLITE_OK ? KV_OK : reg_error(ctx, r, e, "a query");
}

/* Run a statement with one text parameter that returns no rows. */
static kv_rc reg_exec_text(const kv_ctx *ctx, kv_registry *r, const char *sql, const char *arg,
                           const char *what)
{
    sqlite3_stmt *st = NULL;
    int e;
    kv_rc rc = reg_prepare(ctx, r, sql, &st);

    if (rc == KV_OK) {
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
        if ((e = sqlite3_step(st)) != SQLITE_DONE)
            rc = reg_error(ctx, r, e, what);
    }
    sqlite3_finalize(st);
    return rc;
}

static kv_rc damaged(const kv_ctx *ctx, const kv_registry *r, const char *what)
{
    return kv_error(ctx, KV_ERR_CORRUPT, "registry '%s' is damaged: %s", r->path, what);
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES ('format', '" REG_FORMAT "');"
    "CREATE TABLE IF NOT EXISTS devices ("
    " device_id TEXT PRIMARY KEY, ek_sha256 TEXT NOT NULL, ek_cert BLOB NOT NULL,"
    " ak_name TEXT NOT NULL, ak_serial TEXT NOT NULL, enrolled INTEGER NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS devices_ak ON devices (ak_name);"
    /* every EK certificate a device's TPM presented (and activated), bound to it */
    "CREATE TABLE IF NOT EXISTS eks (ek_sha256 TEXT PRIMARY KEY, device_id TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS allowed (device_id TEXT PRIMARY KEY);"
    "CREATE TABLE IF NOT EXISTS pending ("
    " id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, ek_sha256 TEXT NOT NULL,"
    " ek_certs BLOB NOT NULL, ak_public BLOB NOT NULL, ak_name TEXT NOT NULL,"
    " device_id TEXT NOT NULL, expires INTEGER NOT NULL);";

static const kv_db_format reg_format = { "registry", REG_APPLICATION_ID, REG_USER_VERSION,
                                         schema };

/* The registry's directory: writable by others (without the sticky bit),
 * anyone could replace the file between our check and SQLite's open, or
 * swap its journal. */
static kv_rc dir_check(const kv_ctx *ctx, const char *path)
{
    char *copy = kv_strdup(path);
    struct stat st;
    kv_rc rc = KV_OK;

    if (!copy)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (stat(dirname(copy), &st) != 0)
        rc = kv_error_errno(ctx, errno, "cannot examine the directory of registry '%s'", path);
    else if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
        rc = kv_error(ctx, KV_ERR_PERMISSION,
                      "the directory of registry '%s' is writable by others (mode %04o): "
                      "refusing it", path, (unsigned)(st.st_mode & 07777));
    free(copy);
    return rc;
}

/* Open the registry and begin a transaction: a write transaction (the
 * tables made when missing) or, for !write, a read of an existing file. */
static kv_rc reg_open(const kv_ctx *ctx, const char *path, bool write, kv_registry **out)
{
    kv_registry *r = calloc(1, sizeof(*r));
    sqlite3_stmt *st = NULL;
    const unsigned char *fmt;
    int e;
    kv_rc rc;

    *out = NULL;
    if (!r || !(r->path = kv_strdup(path)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, dir_check(ctx, path));
    KV_CHECK(rc, kv_db_file_check(ctx, path, "registry", write));
    KV_CHECK(rc, kv_db_open(ctx, path, &reg_format, write, REG_BUSY_MS, &r->guard, &r->db));
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT value FROM meta WHERE key = 'format'", &st));
    e = sqlite3_step(st);
    fmt = e == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    if (e != SQLITE_ROW && e != SQLITE_DONE)
        KV_CHECK(rc, reg_error(ctx, r, e, "reading the format"));
    if (!fmt || strcmp((const char *)fmt, REG_FORMAT) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "'%s' is not a libkeyvault registry (format %s)",
                path, REG_FORMAT);
    *out = r;
    r = NULL;
out:
    sqlite3_finalize(st);
    if (r) {
        if (r->db)
            sqlite3_close(r->db);
        free(r->path);
        free(r);
    }
    return rc;
}

kv_rc kv_registry_begin(const kv_ctx *ctx, const char *path, kv_registry **out)
{
    return reg_open(ctx, path, true, out);
}

kv_rc kv_registry_end(const kv_ctx *ctx, kv_registry *r, kv_rc rc)
{
    if (!r)
        return rc;
    if (rc == KV_OK)
        rc = reg_exec(ctx, r, "COMMIT", "committing");
    if (rc != KV_OK)
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(r->db);
    free(r->path);
    free(r);
    return rc;
}

/* A text column that must be lowercase hex of 1..max characters (or any
 * device id when hex is false). */
static const char *col_text(sqlite3_stmt *st, int i, size_t max, bool hex)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    size_t n;

    if (sqlite3_column_type(st, i) != SQLITE_TEXT || !s)
        return NULL;
    n = strlen(s);
    if (n == 0 || n > max || (size_t)sqlite3_column_bytes(st, i) != n)
        return NULL;
    if (!hex)
        return kv_device_id_valid(s) ? s : NULL;
    for (const char *p = s; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
            return NULL;
    return s;
}

/* The number of 64-digit EK hashes in a concatenation of them (0 when it is
 * not one). */
static size_t ek_count(const char *eks)
{
    size_t n = strlen(eks);

    if (n == 0 || n % 64 != 0 || n / 64 > KV_EK_MAX)
        return 0;
    for (const char *p = eks; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
            return 0;
    return n / 64;
}

/* One integer from a query with up to two text parameters. */
static kv_rc reg_count(const kv_ctx *ctx, kv_registry *r, const char *sql, const char *a,
                       const char *b, sqlite3_int64 *out)
{
    sqlite3_stmt *st = NULL;
    int e;
    kv_rc rc = reg_prepare(ctx, r, sql, &st);

    if (rc == KV_OK) {
        if (a)
            sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
        if (b)
            sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
        e = sqlite3_step(st);
        if (e != SQLITE_ROW || sqlite3_column_type(st, 0) != SQLITE_INTEGER)
            rc = e == SQLITE_ROW ? damaged(ctx, r, "a count is not an integer")
                                 : reg_error(ctx, r, e, "a lookup");
        else
            *out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return rc;
}

kv_rc kv_registry_may_enroll(const kv_ctx *ctx, kv_registry *r, const char *eks,
                             const char *device_id, int replace)
{
    sqlite3_stmt *st = NULL;
    size_t n = ek_count(eks);
    sqlite3_int64 count = 0, mine = 0;
    char ek[65];
    int e;
    kv_rc rc;

    if (n == 0)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "no EK hashes to look up");
    /* an allow-list, when there is one, names every device that may enroll */
    KV_CHECK(rc, reg_count(ctx, r, "SELECT COUNT(*) FROM allowed", NULL, NULL, &count));
    if (count > 0) {
        KV_CHECK(rc, reg_count(ctx, r, "SELECT COUNT(*) FROM allowed WHERE device_id = ?1",
                               device_id, NULL, &count));
        if (count == 0)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION, "device '%s' is not on the allow-list of "
                    "registry '%s' (keyvault enroll allow)", device_id, r->path);
    }
    /* every EK of the TPM: unbound, or bound to this device id */
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT device_id FROM eks WHERE ek_sha256 = ?1", &st));
    for (size_t i = 0; i < n; i++) {
        const char *dev;
        snprintf(ek, sizeof(ek), "%.64s", eks + 64 * i);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, ek, -1, SQLITE_TRANSIENT);
        e = sqlite3_step(st);
        if (e == SQLITE_DONE)
            continue;
        if (e != SQLITE_ROW)
            KV_CHECK(rc, reg_error(ctx, r, e, "looking up an EK"));
        if (!(dev = col_text(st, 0, KV_DEVICE_ID_MAX, false)))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: EK %.16s... is bound "
                    "to a malformed device id", r->path, ek);
        if (strcmp(dev, device_id) != 0)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "this TPM (EK %.16s...) is enrolled as device '%s', not '%s'", ek, dev,
                    device_id);
        mine++;
    }
    sqlite3_finalize(st);
    st = NULL;
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT revoked FROM devices WHERE device_id = ?1", &st));
    sqlite3_bind_text(st, 1, device_id, -1, SQLITE_STATIC);
    e = sqlite3_step(st);
    if (e == SQLITE_ROW) {
        sqlite3_int64 revoked = sqlite3_column_int64(st, 0);
        if (sqlite3_column_type(st, 0) != SQLITE_INTEGER || (revoked != 0 && revoked != 1))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: device '%s' has no "
                    "valid revoked flag", r->path, device_id);
        if (revoked)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "device '%s' is revoked: it cannot enroll again", device_id);
        if (mine == 0)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "device '%s' is enrolled with another TPM: it cannot be enrolled from this "
                    "one (EK %.16s...)", device_id, eks);
        if (replace == 0)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "device '%s' is enrolled already: replacing its AK needs the verifier's "
                    "consent (KV_ENROLL_REPLACE, keyvault enroll finish --replace)", device_id);
    } else if (e != SQLITE_DONE) {
        KV_CHECK(rc, reg_error(ctx, r, e, "looking up the device"));
    } else if (mine != 0) {
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: an EK is bound to device "
                "'%s', which has no record", r->path, device_id);
    }
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    return rc;
}

kv_rc kv_registry_pending_add(const kv_ctx *ctx, kv_registry *r, const kv_pending *p)
{
    sqlite3_stmt *st = NULL;
    size_t n = ek_count(p->ek_sha256);
    sqlite3_int64 count = 0;
    char ek[65];
    int e;
    kv_rc rc;

    /* forget challenges nobody answered in time */
    KV_CHECK(rc, reg_prepare(ctx, r, "DELETE FROM pending WHERE expires < ?1", &st));
    sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
    if ((e = sqlite3_step(st)) != SQLITE_DONE)
        KV_CHECK(rc, reg_error(ctx, r, e, "dropping expired challenges"));
    sqlite3_finalize(st);
    st = NULL;
    /* a few challenges per EK at a time: a request replayed in a loop fills nothing */
    for (size_t i = 0; i < n; i++) {
        snprintf(ek, sizeof(ek), "%.64s", p->ek_sha256 + 64 * i);
        KV_CHECK(rc, reg_count(ctx, r, "SELECT COUNT(*) FROM pending WHERE "
                               "instr(ek_sha256, ?1) > 0", ek, NULL, &count));
        if (count >= REG_PENDING_PER_EK)
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "EK %.16s... has %lld challenges waiting already (at most %d): answer one "
                    "or let them expire", ek, (long long)count, REG_PENDING_PER_EK);
    }
    KV_CHECK(rc, reg_prepare(ctx, r, "INSERT INTO pending VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                             &st));
    sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->secret_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p->ek_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, p->ek_certs, (int)p->ek_certs_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, p->ak_public, (int)p->ak_public_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, p->ak_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, p->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)p->expires);
    if ((e = sqlite3_step(st)) != SQLITE_DONE)
        KV_CHECK(rc, reg_error(ctx, r, e, "recording the challenge"));
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    return rc;
}

static kv_rc col_blob(const kv_ctx *ctx, const kv_registry *r, sqlite3_stmt *st, int i,
                      unsigned char **out, size_t *len)
{
    const void *b = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);

    if (sqlite3_column_type(st, i) != SQLITE_BLOB || !b || n <= 0 || n > REG_BLOB_MAX)
        return damaged(ctx, r, "a challenge's EK certificates or AK are not a blob of a sane "
                       "size");
    if (!(*out = OPENSSL_memdup(b, (size_t)n)))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    *len = (size_t)n;
    return KV_OK;
}

static void copy_text(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

kv_rc kv_registry_pending_take(const kv_ctx *ctx, kv_registry *r, const char *id,
                               kv_pending *out)
{
    sqlite3_stmt *st = NULL;
    const char *secret, *ek, *name, *dev;
    int e;
    kv_rc rc;

    memset(out, 0, sizeof(*out));
    KV_CHECK(rc, reg_prepare(ctx, r,
                             "SELECT secret_sha256, ek_sha256, ek_certs, ak_public, ak_name, "
                             "device_id, expires FROM pending WHERE id = ?1", &st));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    e = sqlite3_step(st);
    if (e == SQLITE_DONE)
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND,
                "no challenge %s is waiting in registry '%s': never issued, or answered "
                "already (a challenge is answered once)", id, r->path);
    if (e != SQLITE_ROW)
        KV_CHECK(rc, reg_error(ctx, r, e, "looking up the challenge"));
    secret = col_text(st, 0, 64, true);
    ek = col_text(st, 1, sizeof(out->ek_sha256) - 1, true);
    name = col_text(st, 4, sizeof(out->ak_name) - 1, true);
    dev = col_text(st, 5, KV_DEVICE_ID_MAX, false);
    if (!secret || strlen(secret) != 64 || !ek || ek_count(ek) == 0 || !name || !dev ||
        sqlite3_column_type(st, 6) != SQLITE_INTEGER)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: challenge %s has "
                "malformed fields", r->path, id);
    copy_text(out->id, sizeof(out->id), id);
    copy_text(out->secret_sha256, sizeof(out->secret_sha256), secret);
    copy_text(out->ek_sha256, sizeof(out->ek_sha256), ek);
    copy_text(out->ak_name, sizeof(out->ak_name), name);
    copy_text(out->device_id, sizeof(out->device_id), dev);
    out->expires = (int64_t)sqlite3_column_int64(st, 6);
    KV_CHECK(rc, col_blob(ctx, r, st, 2, &out->ek_certs, &out->ek_certs_len));
    KV_CHECK(rc, col_blob(ctx, r, st, 3, &out->ak_public, &out->ak_public_len));
    /* single use: gone whatever the answer */
    rc = reg_exec_text(ctx, r, "DELETE FROM pending WHERE id = ?1", id, "removing the challenge");
out:
    sqlite3_finalize(st);
    if (rc != KV_OK)
        kv_pending_clear(out);
    return rc;
}

kv_rc kv_registry_record(const kv_ctx *ctx, kv_registry *r, const kv_pending *p,
                         const unsigned char *ek_cert, size_t ek_cert_len, const char *ak_serial,
                         int64_t now, char old_serial[KV_SERIAL_HEX_MAX + 1])
{
    sqlite3_stmt *st = NULL;
    size_t n = ek_count(p->ek_sha256);
    const char *old;
    int e;
    kv_rc rc;

    old_serial[0] = '\0';
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT ak_serial FROM devices WHERE device_id = ?1", &st));
    sqlite3_bind_text(st, 1, p->device_id, -1, SQLITE_STATIC);
    e = sqlite3_step(st);
    if (e == SQLITE_ROW) {
        if (!(old = col_text(st, 0, KV_SERIAL_HEX_MAX, true)))
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: device '%s' has a "
                    "malformed AK certificate serial", r->path, p->device_id);
        copy_text(old_serial, KV_SERIAL_HEX_MAX + 1, old);
    } else if (e != SQLITE_DONE) {
        KV_CHECK(rc, reg_error(ctx, r, e, "looking up the device"));
    }
    sqlite3_finalize(st);
    st = NULL;
    /* one record per device: a new AK replaces the old one (the caller has
     * checked kv_registry_may_enroll in this transaction) */
    KV_CHECK(rc, reg_prepare(ctx, r,
                             "INSERT INTO devices (device_id, ek_sha256, ek_cert, ak_name, "
                             "ak_serial, enrolled, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) "
                             "ON CONFLICT (device_id) DO UPDATE SET ek_sha256 = ?2, "
                             "ek_cert = ?3, ak_name = ?4, ak_serial = ?5, enrolled = ?6 "
                             "WHERE revoked = 0", &st));
    sqlite3_bind_text(st, 1, p->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->ek_sha256, 64, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, ek_cert, (int)ek_cert_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, p->ak_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, ak_serial, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)now);
    e = sqlite3_step(st);
    if (e != SQLITE_DONE)
        KV_CHECK(rc, reg_error(ctx, r, e, "recording the device"));
    if (sqlite3_changes(r->db) != 1)
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                "device '%s' cannot be recorded: it is revoked", p->device_id);
    sqlite3_finalize(st);
    st = NULL;
    /* every EK the TPM proved it holds is bound to the device */
    KV_CHECK(rc, reg_prepare(ctx, r, "INSERT INTO eks VALUES (?1, ?2) ON CONFLICT (ek_sha256) "
                             "DO NOTHING", &st));
    for (size_t i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, p->ek_sha256 + 64 * i, 64, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, p->device_id, -1, SQLITE_STATIC);
        if ((e = sqlite3_step(st)) != SQLITE_DONE)
            KV_CHECK(rc, reg_error(ctx, r, e, "binding an EK to the device"));
    }
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- public calls ------------------------------------------------------------ */

static kv_rc hex_name(const kv_ctx *ctx, const unsigned char *name, size_t len, char *hex,
                      size_t size)
{
    if (len < 4 || 2 * len + 1 > size)
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "an AK name is 2 bytes of algorithm and a digest, 4 to %zu bytes, "
                        "not %zu", (size - 1) / 2, len);
    for (size_t i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", name[i]);
    return KV_OK;
}

kv_rc kv_registry_ak_status(kv_ctx *ctx, const char *db, const unsigned char *ak_name,
                            size_t name_len, char **device_id, int *revoked)
{
    kv_registry *r = NULL;
    sqlite3_stmt *st = NULL;
    char hex[2 * 66 + 1];
    const char *dev;
    int e;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *device_id = NULL;
    *revoked = 0;
    KV_CHECK(rc, hex_name(ctx, ak_name, name_len, hex, sizeof(hex)));
    KV_CHECK(rc, reg_open(ctx, db, false, &r));
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT device_id, revoked FROM devices WHERE ak_name = ?1",
                             &st));
    sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC);
    e = sqlite3_step(st);
    if (e == SQLITE_DONE)
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "AK %.20s... is not enrolled in registry '%s'",
                hex, db);
    if (e != SQLITE_ROW)
        KV_CHECK(rc, reg_error(ctx, r, e, "looking up the AK"));
    dev = col_text(st, 0, KV_DEVICE_ID_MAX, false);
    if (!dev || sqlite3_column_type(st, 1) != SQLITE_INTEGER ||
        (sqlite3_column_int64(st, 1) != 0 && sqlite3_column_int64(st, 1) != 1))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: the record of AK %.20s... "
                "has no valid device id or revoked flag", db, hex);
    if (!(*device_id = kv_strdup(dev)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    *revoked = (int)sqlite3_column_int64(st, 1);
    /* an AK name is unique to its key: two records holding it is tampering */
    if ((e = sqlite3_step(st)) != SQLITE_DONE)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: AK %.20s... is recorded "
                "twice", db, hex);
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    rc = kv_registry_end(ctx, r, rc);
    if (rc != KV_OK) {
        free(*device_id);
        *device_id = NULL;
        *revoked = 0;
    }
    return rc;
}

static kv_rc id_check(const kv_ctx *ctx, const char *device_id)
{
    return kv_device_id_valid(device_id)
               ? KV_OK
               : kv_error(ctx, KV_ERR_INVALID_ARG, "a device id is 1 to %d of A-Z a-z 0-9 . _ "
                          ": @ -, not starting with -", KV_DEVICE_ID_MAX);
}

kv_rc kv_registry_revoke(kv_ctx *ctx, const char *db, const char *device_id, kv_key *ca)
{
    kv_registry *r = NULL;
    sqlite3_stmt *st = NULL;
    char serial[KV_SERIAL_HEX_MAX + 1];
    const char *s;
    int e;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    KV_CHECK(rc, id_check(ctx, device_id));
    if (ca && ca->ctx != ctx)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "the CA key belongs to another context");
    KV_CHECK(rc, kv_registry_begin(ctx, db, &r));
    KV_CHECK(rc, reg_prepare(ctx, r, "SELECT revoked, ak_serial FROM devices "
                             "WHERE device_id = ?1", &st));
    sqlite3_bind_text(st, 1, device_id, -1, SQLITE_STATIC);
    e = sqlite3_step(st);
    if (e == SQLITE_DONE)
        KV_FAIL(ctx, rc, KV_ERR_KEY_NOT_FOUND, "device '%s' is not enrolled in registry '%s'",
                device_id, db);
    if (e != SQLITE_ROW)
        KV_CHECK(rc, reg_error(ctx, r, e, "looking up the device"));
    if (sqlite3_column_int64(st, 0) != 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "device '%s' is revoked already", device_id);
    if (!(s = col_text(st, 1, KV_SERIAL_HEX_MAX, true)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: device '%s' has a "
                "malformed AK certificate serial", db, device_id);
    copy_text(serial, sizeof(serial), s);
    KV_CHECK(rc, reg_exec_text(ctx, r, "UPDATE devices SET revoked = 1 WHERE device_id = ?1",
                               device_id, "revoking the device"));
    /* a challenge under way for it dies too */
    KV_CHECK(rc, reg_exec_text(ctx, r, "DELETE FROM pending WHERE device_id = ?1", device_id,
                               "dropping its challenges"));
    /* and its AK certificate, before the registry commits: a failure leaves
     * the device as it was */
    if (ca) {
        kv_err_mark mark = kv_err_mark_get(ctx);
        rc = kv_ca_revoke(ca, serial, KV_REVOKE_PRIVILEGE_WITHDRAWN);
        if (rc == KV_ERR_BAD_INPUT) {
            /* revoked already: by the CA's operator, or by an earlier revoke
             * whose registry commit then failed (the CA's database is
             * another file, committed first). The certificate is withdrawn;
             * the device's revocation goes on, or it could never be done. */
            kv_err_rewind(ctx, mark);
            rc = KV_OK;
        }
        if (rc != KV_OK)
            goto out;
    }
out:
    sqlite3_finalize(st);
    return kv_registry_end(ctx, r, rc);
}

kv_rc kv_registry_allow(kv_ctx *ctx, const char *db, const char *device_id)
{
    kv_registry *r = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    KV_CHECK(rc, id_check(ctx, device_id));
    KV_CHECK(rc, kv_registry_begin(ctx, db, &r));
    rc = reg_exec_text(ctx, r, "INSERT INTO allowed VALUES (?1) ON CONFLICT DO NOTHING",
                       device_id, "adding to the allow-list");
out:
    return kv_registry_end(ctx, r, rc);
}

static char *rfc3339(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[32];

    if (!gmtime_r(&tt, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
        return NULL;
    return kv_strdup(buf);
}

kv_rc kv_registry_list(kv_ctx *ctx, const char *db, char **json)
{
    kv_registry *r = NULL;
    sqlite3_stmt *st = NULL;
    json_t *arr = json_array();
    int e;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *json = NULL;
    if (!arr)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, reg_open(ctx, db, false, &r));
    KV_CHECK(rc, reg_prepare(ctx, r,
                             "SELECT device_id, ek_sha256, ak_name, ak_serial, enrolled, revoked "
                             "FROM devices ORDER BY device_id", &st));
    while ((e = sqlite3_step(st)) == SQLITE_ROW) {
        const char *dev = col_text(st, 0, KV_DEVICE_ID_MAX, false);
        const char *ek = col_text(st, 1, 64, true), *name = col_text(st, 2, 2 * 66, true);
        const char *serial = col_text(st, 3, 64, true);
        char *when = sqlite3_column_type(st, 4) == SQLITE_INTEGER
                         ? rfc3339((int64_t)sqlite3_column_int64(st, 4)) : NULL;
        sqlite3_int64 revoked = sqlite3_column_int64(st, 5);
        json_t *o;

        if (!dev || !ek || !name || !serial || !when || (revoked != 0 && revoked != 1)) {
            free(when);
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: a device record has "
                    "malformed fields", db);
        }
        o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "device_id", dev, "ek_sha256", ek,
                      "ak_name", name, "ak_serial", serial, "enrolled", when, "revoked",
                      (int)revoked);
        free(when);
        if (!o || json_array_append_new(arr, o) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    if (e != SQLITE_DONE)
        KV_CHECK(rc, reg_error(ctx, r, e, "listing the devices"));
    if (!(*json = json_dumps(arr, JSON_INDENT(2) | JSON_ENSURE_ASCII)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = KV_OK;
out:
    sqlite3_finalize(st);
    json_decref(arr);
    rc = kv_registry_end(ctx, r, rc);
    if (rc != KV_OK) {
        free(*json);
        *json = NULL;
    }
    return rc;
}
