/*
 * config.c - the INI configuration file and default locations.
 *
 *   # comment            ; comment
 *   [section]
 *   key = value
 *
 * Keys and section names are case-sensitive; values are trimmed. A key
 * given twice in one section is an error (it is almost always a mistake).
 * Comments take whole lines: a value holding " #" or " ;" is refused rather
 * than cut (or kept) there. kv_config_check then holds every section and
 * key against the ones the core and the backends read.
 *
 * Linear by construction: lines are read once, then the entries are sorted
 * once by (section, key) to find duplicates; kv_config_get is a binary
 * search.
 */
#include "config.h"

#include <ctype.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

#define KV_CONFIG_MAX (256 * 1024)
/* Longest section or key name; longer ones are refused, never echoed. */
#define KV_CONFIG_NAME_MAX 64

struct kv_config_entry {
    const char *section;  /* owned by the section header it follows */
    size_t header;        /* index of that header in kv_config.headers */
    char *key;
    char *value;
    unsigned line;
};

struct kv_config_header {
    char *name;
    unsigned line;
};

struct kv_config {
    char *path;
    size_t n, cap;
    struct kv_config_entry *e;        /* in file order */
    struct kv_config_entry **sorted;  /* by section, key, line */
    size_t nheaders, capheaders;
    struct kv_config_header *headers; /* in file order */
    unsigned long compares;           /* key comparisons made while loading */
};

kv_config *kv_config_empty(void)
{
    return calloc(1, sizeof(kv_config));
}

void kv_config_free(kv_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->e[i].key);
        /* values may be PINs or passphrases given inline by mistake */
        kv_secret_free(cfg->e[i].value);
    }
    for (size_t i = 0; i < cfg->nheaders; i++)
        free(cfg->headers[i].name);
    free(cfg->headers);
    free(cfg->sorted);
    free(cfg->e);
    free(cfg->path);
    free(cfg);
}

static int entry_cmp(const char *section, const char *key, const struct kv_config_entry *e)
{
    int c = strcmp(section, e->section);

    return c ? c : strcmp(key, e->key);
}

static const struct kv_config_entry *entry_find(const kv_config *cfg, const char *section,
                                                const char *key)
{
    size_t lo = 0, hi = cfg ? cfg->n : 0;

    if (!cfg || !cfg->sorted)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = entry_cmp(section, key, cfg->sorted[mid]);
        if (c == 0)
            return cfg->sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *kv_config_get(const kv_config *cfg, const char *section, const char *key)
{
    const struct kv_config_entry *e = entry_find(cfg, section, key);

    return e ? e->value : NULL;
}

unsigned long kv_config_compares(const kv_config *cfg)
{
    return cfg ? cfg->compares : 0;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Section and key names: letters, digits, '_', '-', '.'; at most 64. */
static bool name_valid(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.");

    return n > 0 && s[n] == '\0' && n <= KV_CONFIG_NAME_MAX;
}

/* Whether s holds a comment after other text: whitespace then '#' or ';'. */
static bool has_inline_comment(const char *s)
{
    for (const char *p = s; *p; p++)
        if ((*p == '#' || *p == ';') && p > s && isspace((unsigned char)p[-1]))
            return true;
    return false;
}

static kv_rc add_header(const kv_ctx *ctx, kv_config *cfg, const char *name, unsigned line)
{
    if (cfg->nheaders == cfg->capheaders) {
        size_t cap = cfg->capheaders ? cfg->capheaders * 2 : 8;
        struct kv_config_header *h = realloc(cfg->headers, cap * sizeof(*h));
        if (!h)
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        cfg->headers = h;
        cfg->capheaders = cap;
    }
    cfg->headers[cfg->nheaders].line = line;
    if (!(cfg->headers[cfg->nheaders].name = kv_strdup(name)))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    cfg->nheaders++;
    return KV_OK;
}

static kv_rc add_entry(const kv_ctx *ctx, kv_config *cfg, const char *key, const char *value,
                       unsigned line)
{
    struct kv_config_entry *e;

    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 16;
        e = realloc(cfg->e, cap * sizeof(*e));
        if (!e)
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        cfg->e = e;
        cfg->cap = cap;
    }
    e = &cfg->e[cfg->n++];
    e->header = cfg->nheaders - 1;
    e->section = cfg->headers[e->header].name;
    e->line = line;
    e->key = kv_strdup(key);
    e->value = kv_strdup(value);
    if (!e->key || !e->value)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    return KV_OK;
}

static int sorted_cmp(const void *a, const void *b, void *arg)
{
    const struct kv_config_entry *x = *(const struct kv_config_entry *const *)a;
    const struct kv_config_entry *y = *(const struct kv_config_entry *const *)b;
    int c = entry_cmp(x->section, x->key, y);

    ((kv_config *)arg)->compares++;
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Sort the entries and refuse a key given twice in one section, naming
 * the earliest second occurrence. */
static kv_rc index_entries(const kv_ctx *ctx, kv_config *cfg)
{
    const struct kv_config_entry *dup = NULL;

    if (cfg->n == 0)
        return KV_OK;
    cfg->sorted = malloc(cfg->n * sizeof(*cfg->sorted));
    if (!cfg->sorted)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < cfg->n; i++)
        cfg->sorted[i] = &cfg->e[i];
    qsort_r(cfg->sorted, cfg->n, sizeof(*cfg->sorted), sorted_cmp, cfg);
    for (size_t i = 1; i < cfg->n; i++) {
        const struct kv_config_entry *b = cfg->sorted[i];
        if (entry_cmp(cfg->sorted[i - 1]->section, cfg->sorted[i - 1]->key, b) == 0 &&
            (!dup || b->line < dup->line))
            dup = b;
    }
    cfg->compares += cfg->n;
    if (dup)
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: '%s' given twice in [%s]", cfg->path,
                        dup->line, dup->key, dup->section);
    return KV_OK;
}

/* One non-empty, non-comment line. */
static kv_rc parse_line(const kv_ctx *ctx, kv_config *cfg, char *line, unsigned lineno)
{
    const char *path = cfg->path;
    char *eq, *key, *value;

    if (*line == '[') {
        char *end = strchr(line, ']');
        if (!end || end[1] != '\0')
            return kv_error(ctx, KV_ERR_CONFIG,
                            "%s:%u: a section header is '[name]' alone on its line (comments "
                            "go on lines of their own)", path, lineno);
        *end = '\0';
        char *name = trim(line + 1);
        if (!name_valid(name))
            return kv_error(ctx, KV_ERR_CONFIG,
                            "%s:%u: a section name is 1 to %d letters, digits, '_', '-' or '.'",
                            path, lineno, KV_CONFIG_NAME_MAX);
        return add_header(ctx, cfg, name, lineno);
    }
    eq = strchr(line, '=');
    if (!eq)
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: expected 'key = value'", path, lineno);
    if (cfg->nheaders == 0)
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: 'key = value' before any [section]", path,
                        lineno);
    *eq = '\0';
    key = trim(line);
    value = trim(eq + 1);
    if (*key == '\0')
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: empty key", path, lineno);
    if (!name_valid(key))
        return kv_error(ctx, KV_ERR_CONFIG,
                        "%s:%u: a key is 1 to %d letters, digits, '_', '-' or '.'", path,
                        lineno, KV_CONFIG_NAME_MAX);
    /* The value is not shown: it may be a secret written here by mistake. */
    if (has_inline_comment(value))
        return kv_error(ctx, KV_ERR_CONFIG,
                        "%s:%u: [%s] %s: the value holds a comment (' #' or ' ;'); comments "
                        "go on lines of their own", path, lineno,
                        cfg->headers[cfg->nheaders - 1].name, key);
    return add_entry(ctx, cfg, key, value, lineno);
}

kv_rc kv_config_load(const kv_ctx *ctx, const char *path, kv_config **out)
{
    kv_config *cfg = kv_config_empty();
    char *text = NULL;
    size_t len = 0;
    unsigned lineno = 0;
    kv_rc rc;

    *out = NULL;
    if (!cfg || !(cfg->path = kv_strdup(path))) {
        kv_config_free(cfg);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    rc = kv_read_file(ctx, path, KV_CONFIG_MAX, &text, &len);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(ctx, KV_ERR_CONFIG, "configuration file '%s' does not exist", path);
    if (rc != KV_OK)
        goto out;
    if (strlen(text) != len)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: contains a NUL byte", path);

    /* Split by hand: strtok would skip empty lines and lose line numbers. */
    for (char *p = text; p && *p; ) {
        char *nl = strchr(p, '\n'), *line;
        if (nl)
            *nl = '\0';
        line = trim(p);
        p = nl ? nl + 1 : NULL;
        lineno++;
        if (*line == '\0' || *line == '#' || *line == ';')
            continue;
        KV_CHECK(rc, parse_line(ctx, cfg, line, lineno));
    }
    KV_CHECK(rc, index_entries(ctx, cfg));
    *out = cfg;
    cfg = NULL;
out:
    if (text) {
        kv_wipe(text, len);
        free(text);
    }
    kv_config_free(cfg);
    return rc;
}

/* ---- checking against the known sections and keys ------------------------ */

/* Optimal string alignment distance (Levenshtein plus adjacent
 * transpositions), SIZE_MAX for names longer than KV_CONFIG_NAME_MAX. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[3][KV_CONFIG_NAME_MAX + 1];

    if (la > KV_CONFIG_NAME_MAX || lb > KV_CONFIG_NAME_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t *cur = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = prev[j - 1] + cost;
            if (prev[j] + 1 < v)
                v = prev[j] + 1;
            if (cur[j - 1] + 1 < v)
                v = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
    }
    return d[la % 3][lb];
}

/* Close enough to be the name meant: a typo or two, more for long names. */
static bool near(const char *typed, size_t dist)
{
    return dist <= 1 + strlen(typed) / 4;
}

static const struct kv_config_section *section_find(const struct kv_config_section *known,
                                                    size_t nknown, const char *name)
{
    for (size_t i = 0; i < nknown; i++)
        if (strcmp(known[i].name, name) == 0)
            return &known[i];
    return NULL;
}

static const struct kv_config_key *key_find(const struct kv_config_key *keys, const char *name)
{
    for (size_t i = 0; keys && keys[i].name; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static kv_rc unknown_section(const kv_ctx *ctx, const kv_config *cfg,
                             const struct kv_config_header *h,
                             const struct kv_config_section *known, size_t nknown)
{
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    char names[256] = "";

    for (size_t i = 0; i < nknown; i++) {
        size_t d = edit_distance(h->name, known[i].name);
        if (d < bestd) {
            bestd = d;
            best = known[i].name;
        }
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s[%s]",
                 i ? ", " : "", known[i].name);
    }
    if (best && near(h->name, bestd))
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: unknown section [%s]; did you mean [%s]?",
                        cfg->path, h->line, h->name, best);
    return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: unknown section [%s] (known: %s)", cfg->path,
                    h->line, h->name, names);
}

static kv_rc unknown_key(const kv_ctx *ctx, const kv_config *cfg,
                         const struct kv_config_entry *e,
                         const struct kv_config_section *known, size_t nknown)
{
    const struct kv_config_section *own = section_find(known, nknown, e->section);
    const struct kv_config_section *bests = NULL;
    const char *best = NULL;
    size_t bestd = SIZE_MAX;

    /* Nearest key over every section; on a tie, the key's own section. */
    for (size_t i = 0; i < nknown; i++)
        for (size_t j = 0; known[i].keys && known[i].keys[j].name; j++) {
            size_t d = edit_distance(e->key, known[i].keys[j].name);
            if (d < bestd || (d == bestd && &known[i] == own)) {
                bestd = d;
                best = known[i].keys[j].name;
                bests = &known[i];
            }
        }
    if (best && bests == own && near(e->key, bestd))
        return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: unknown key '%s' in [%s]; did you mean %s?",
                        cfg->path, e->line, e->key, e->section, best);
    if (best && near(e->key, bestd))
        return kv_error(ctx, KV_ERR_CONFIG,
                        "%s:%u: unknown key '%s' in [%s]; did you mean [%s] %s?", cfg->path,
                        e->line, e->key, e->section, bests->name, best);
    return kv_error(ctx, KV_ERR_CONFIG, "%s:%u: unknown key '%s' in [%s] (see keyvault.conf(5))",
                    cfg->path, e->line, e->key, e->section);
}

/* Whether s is an environment variable's name. */
static bool env_name_valid(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");

    return n > 0 && s[n] == '\0' && !isdigit((unsigned char)s[0]);
}

/*
 * A secret-bearing key names where its secret is; the value is never shown.
 * The forms are narrow (an absolute path, a variable's name) so that a
 * secret typed after "file:" or "env:" is refused here too, rather than
 * shown later in "cannot open" or "not set".
 */
static kv_rc check_secret(const kv_ctx *ctx, const kv_config *cfg,
                          const struct kv_config_entry *e, unsigned flags)
{
    const char *v = e->value;

    if ((strncmp(v, "file:", 5) == 0 && v[5] == '/') ||
        (strncmp(v, "env:", 4) == 0 && env_name_valid(v + 4)))
        return KV_OK;
    if ((flags & KV_CFG_MACHINE) &&
        (strcmp(v, "machine") == 0 || (strncmp(v, "machine:", 8) == 0 && v[8] == '/')))
        return KV_OK;
    return kv_error(ctx, KV_ERR_CONFIG,
                    "%s:%u: [%s] %s must name where the secret is kept (%sfile:PATH or "
                    "env:VAR, PATH absolute), not hold it; the value is not shown",
                    cfg->path, e->line, e->section, e->key,
                    (flags & KV_CFG_MACHINE) ? "machine, machine:PATH, " : "");
}

kv_rc kv_config_check(const kv_ctx *ctx, const kv_config *cfg,
                      const struct kv_config_section *known, size_t nknown)
{
    size_t i = 0;
    kv_rc rc;

    if (!cfg)
        return KV_OK;
    /* Headers and entries in file order, so the first problem is reported. */
    for (size_t h = 0; h < cfg->nheaders; h++) {
        const struct kv_config_section *sec = section_find(known, nknown, cfg->headers[h].name);
        if (!sec)
            return unknown_section(ctx, cfg, &cfg->headers[h], known, nknown);
        for (; i < cfg->n && cfg->e[i].header == h; i++) {
            const struct kv_config_key *k;
            if (!sec->keys)
                continue; /* a backend this build leaves out: nothing reads it */
            k = key_find(sec->keys, cfg->e[i].key);
            if (!k)
                return unknown_key(ctx, cfg, &cfg->e[i], known, nknown);
            if ((k->flags & KV_CFG_SECRET) &&
                (rc = check_secret(ctx, cfg, &cfg->e[i], k->flags)) != KV_OK)
                return rc;
        }
    }
    return KV_OK;
}

/* "FILE:LINE: " of an entry, for messages about its value. */
static void where(const kv_config *cfg, const char *section, const char *key, char *buf,
                  size_t len)
{
    const struct kv_config_entry *e = entry_find(cfg, section, key);

    if (e)
        snprintf(buf, len, "%s:%u: ", cfg->path, e->line);
    else
        buf[0] = '\0';
}

kv_rc kv_config_get_bool(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, bool def, bool *out)
{
    const char *v = kv_config_get(cfg, section, key);
    char at[320];

    *out = def;
    if (!v)
        return KV_OK;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
        !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") ||
             !strcasecmp(v, "off"))
        *out = false;
    else {
        where(cfg, section, key, at, sizeof(at));
        /* the value is not shown: it may be a secret written on the wrong line */
        return kv_error(ctx, KV_ERR_CONFIG,
                        "%s[%s] %s: expected true or false (yes/no, on/off, 1/0); the value is "
                        "not shown", at, section, key);
    }
    return KV_OK;
}

kv_rc kv_config_get_long(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, long def, long min, long max, long *out)
{
    const char *v = kv_config_get(cfg, section, key);
    char *end, at[320];
    long n;

    *out = def;
    if (!v)
        return KV_OK;
    n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < min || n > max) {
        where(cfg, section, key, at, sizeof(at));
        return kv_error(ctx, KV_ERR_CONFIG,
                        "%s[%s] %s: expected a number from %ld to %ld; the value is not shown",
                        at, section, key, min, max);
    }
    *out = n;
    return KV_OK;
}

kv_rc kv_default_home(const kv_config *cfg, char **out)
{
    const char *v = getenv("KEYVAULT_HOME");
    const char *home;
    struct passwd *pw;

    if (v && *v)
        *out = kv_strdup(v);
    else if ((v = kv_config_get(cfg, "keyvault", "home")) && *v)
        *out = kv_strdup(v);
    else if (geteuid() == 0)
        *out = kv_strdup("/var/lib/keyvault");
    else if ((v = getenv("XDG_DATA_HOME")) && *v == '/')
        *out = kv_asprintf("%s/keyvault", v);
    else {
        home = getenv("HOME");
        if ((!home || *home != '/') && (pw = getpwuid(geteuid())) && pw->pw_dir &&
            pw->pw_dir[0] == '/')
            home = pw->pw_dir;
        /* never a shared directory such as /tmp: keys would go where others write */
        if (!home || *home != '/') {
            *out = NULL;
            return kv_error(NULL, KV_ERR_CONFIG,
                            "no home directory for uid %lu (HOME is not set and there is no "
                            "passwd entry): set KEYVAULT_HOME to the directory for "
                            "libkeyvault's keys", (unsigned long)geteuid());
        }
        *out = kv_asprintf("%s/.local/share/keyvault", home);
    }
    return *out ? KV_OK : kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
}
