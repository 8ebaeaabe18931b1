/*
 * config.c - the INI configuration file and default locations.
 *
 *   # comment            ; comment
 *   [section]
 *   key = value
 *
 * Keys and section names are case-sensitive; values are trimmed. A key
 * given twice in one section is an error (it is almost always a mistake).
 */
#include "config.h"

#include <ctype.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

#define KV_CONFIG_MAX (256 * 1024)

struct kv_config_entry {
    char *section;
    char *key;
    char *value;
};

struct kv_config {
    size_t n, cap;
    struct kv_config_entry *e;
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
        free(cfg->e[i].section);
        free(cfg->e[i].key);
        /* values may be PINs or passphrases given inline */
        kv_secret_free(cfg->e[i].value);
    }
    free(cfg->e);
    free(cfg);
}

const char *kv_config_get(const kv_config *cfg, const char *section, const char *key)
{
    for (size_t i = 0; cfg && i < cfg->n; i++)
        if (strcmp(cfg->e[i].section, section) == 0 && strcmp(cfg->e[i].key, key) == 0)
            return cfg->e[i].value;
    return NULL;
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

static kv_rc add_entry(const kv_ctx *ctx, kv_config *cfg, const char *section,
                       const char *key, const char *value)
{
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 16;
        struct kv_config_entry *e = realloc(cfg->e, cap * sizeof(*e));
        if (!e)
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        cfg->e = e;
        cfg->cap = cap;
    }
    cfg->e[cfg->n].section = kv_strdup(section);
    cfg->e[cfg->n].key = kv_strdup(key);
    cfg->e[cfg->n].value = kv_strdup(value);
    cfg->n++;
    if (!cfg->e[cfg->n - 1].section || !cfg->e[cfg->n - 1].key || !cfg->e[cfg->n - 1].value)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    return KV_OK;
}

kv_rc kv_config_load(const kv_ctx *ctx, const char *path, kv_config **out)
{
    kv_config *cfg = kv_config_empty();
    char *text = NULL, *line;
    char section[128] = "";
    size_t len = 0;
    unsigned lineno = 0;
    kv_rc rc;

    *out = NULL;
    if (!cfg)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_read_file(ctx, path, KV_CONFIG_MAX, &text, &len);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(ctx, KV_ERR_CONFIG, "configuration file '%s' does not exist", path);
    if (rc != KV_OK)
        goto out;
    if (strlen(text) != len)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s: contains a NUL byte", path);

    /* Split by hand: strtok would skip empty lines and lose line numbers. */
    for (char *p = text; p && *p; ) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        line = p;
        p = nl ? nl + 1 : NULL;
        lineno++;
        line = trim(line);
        if (*line == '\0' || *line == '#' || *line == ';')
            continue;
        if (*line == '[') {
            char *end = strchr(line, ']');
            if (!end || end[1] != '\0')
                KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: section header must be '[name]'",
                        path, lineno);
            *end = '\0';
            char *name = trim(line + 1);
            if (*name == '\0' || strlen(name) >= sizeof(section))
                KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: empty or too long section name",
                        path, lineno);
            strcpy(section, name);
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq)
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: expected 'key = value'", path, lineno);
        if (section[0] == '\0')
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: 'key = value' before any [section]",
                    path, lineno);
        *eq = '\0';
        char *key = trim(line), *value = trim(eq + 1);
        if (*key == '\0')
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: empty key", path, lineno);
        if (kv_config_get(cfg, section, key))
            KV_FAIL(ctx, rc, KV_ERR_CONFIG, "%s:%u: '%s' given twice in [%s]", path,
                    lineno, key, section);
        KV_CHECK(rc, add_entry(ctx, cfg, section, key, value));
    }
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

kv_rc kv_config_get_bool(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, bool def, bool *out)
{
    const char *v = kv_config_get(cfg, section, key);

    *out = def;
    if (!v)
        return KV_OK;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
        !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") ||
             !strcasecmp(v, "off"))
        *out = false;
    else
        return kv_error(ctx, KV_ERR_CONFIG, "[%s] %s = '%s': expected true or false",
                        section, key, v);
    return KV_OK;
}

kv_rc kv_config_get_long(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, long def, long min, long max, long *out)
{
    const char *v = kv_config_get(cfg, section, key);
    char *end;
    long n;

    *out = def;
    if (!v)
        return KV_OK;
    n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < min || n > max)
        return kv_error(ctx, KV_ERR_CONFIG, "[%s] %s = '%s': expected a number from %ld to %ld",
                        section, key, v, min, max);
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
