/*
 * session.c - PKCS#11 module loading, token discovery, the session pool,
 * login, recovery after token removal, fork handling and CK_RV decoding.
 *
 * The module is loaded through p11-kit as a managed module, so p11-kit
 * supplies locking to it and tracks forks: in a child, the next call
 * re-initialises the module (never inside an atfork handler), forgets the
 * parent's sessions and logs in again. A module given by path is loaded
 * only when p11-kit registers it or the configuration names it (a key URI
 * must not load code); [pkcs11] init_args, or a registered module's
 * x-init-reserved, reach its C_Initialize in pReserved.
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "p11.h"

#define RV(x) { x, #x }
static const struct { CK_RV rv; const char *name; } rv_names[] = {
    RV(CKR_OK), RV(CKR_CANCEL), RV(CKR_HOST_MEMORY), RV(CKR_SLOT_ID_INVALID),
    RV(CKR_GENERAL_ERROR), RV(CKR_FUNCTION_FAILED), RV(CKR_ARGUMENTS_BAD),
    RV(CKR_NO_EVENT), RV(CKR_NEED_TO_CREATE_THREADS), RV(CKR_CANT_LOCK),
    RV(CKR_ATTRIBUTE_READ_ONLY), RV(CKR_ATTRIBUTE_SENSITIVE), RV(CKR_ATTRIBUTE_TYPE_INVALID),
    RV(CKR_ATTRIBUTE_VALUE_INVALID), RV(CKR_DATA_INVALID), RV(CKR_DATA_LEN_RANGE),
    RV(CKR_DEVICE_ERROR), RV(CKR_DEVICE_MEMORY), RV(CKR_DEVICE_REMOVED),
    RV(CKR_ENCRYPTED_DATA_INVALID), RV(CKR_ENCRYPTED_DATA_LEN_RANGE),
    RV(CKR_FUNCTION_CANCELED), RV(CKR_FUNCTION_NOT_PARALLEL), RV(CKR_FUNCTION_NOT_SUPPORTED),
    RV(CKR_KEY_HANDLE_INVALID), RV(CKR_KEY_SIZE_RANGE), RV(CKR_KEY_TYPE_INCONSISTENT),
    RV(CKR_KEY_NOT_NEEDED), RV(CKR_KEY_CHANGED), RV(CKR_KEY_NEEDED),
    RV(CKR_KEY_INDIGESTIBLE), RV(CKR_KEY_FUNCTION_NOT_PERMITTED), RV(CKR_KEY_NOT_WRAPPABLE),
    RV(CKR_KEY_UNEXTRACTABLE), RV(CKR_MECHANISM_INVALID), RV(CKR_MECHANISM_PARAM_INVALID),
    RV(CKR_OBJECT_HANDLE_INVALID), RV(CKR_OPERATION_ACTIVE), RV(CKR_OPERATION_NOT_INITIALIZED),
    RV(CKR_PIN_INCORRECT), RV(CKR_PIN_INVALID), RV(CKR_PIN_LEN_RANGE), RV(CKR_PIN_EXPIRED),
    RV(CKR_PIN_LOCKED), RV(CKR_SESSION_CLOSED), RV(CKR_SESSION_COUNT),
    RV(CKR_SESSION_HANDLE_INVALID), RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    RV(CKR_SESSION_READ_ONLY), RV(CKR_SESSION_EXISTS), RV(CKR_SESSION_READ_ONLY_EXISTS),
    RV(CKR_SESSION_READ_WRITE_SO_EXISTS), RV(CKR_SIGNATURE_INVALID), RV(CKR_SIGNATURE_LEN_RANGE),
    RV(CKR_TEMPLATE_INCOMPLETE), RV(CKR_TEMPLATE_INCONSISTENT), RV(CKR_TOKEN_NOT_PRESENT),
    RV(CKR_TOKEN_NOT_RECOGNIZED), RV(CKR_TOKEN_WRITE_PROTECTED),
    RV(CKR_USER_ALREADY_LOGGED_IN), RV(CKR_USER_NOT_LOGGED_IN), RV(CKR_USER_PIN_NOT_INITIALIZED),
    RV(CKR_USER_TYPE_INVALID), RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    RV(CKR_USER_TOO_MANY_TYPES), RV(CKR_DOMAIN_PARAMS_INVALID), RV(CKR_CURVE_NOT_SUPPORTED),
    RV(CKR_BUFFER_TOO_SMALL), RV(CKR_SAVED_STATE_INVALID), RV(CKR_INFORMATION_SENSITIVE),
    RV(CKR_STATE_UNSAVEABLE), RV(CKR_CRYPTOKI_NOT_INITIALIZED),
    RV(CKR_CRYPTOKI_ALREADY_INITIALIZED), RV(CKR_MUTEX_BAD), RV(CKR_MUTEX_NOT_LOCKED),
    RV(CKR_FUNCTION_REJECTED),
};

#undef RV

/* what each mechanism is for, so that "not offered" says what is missing */
#define MECH(x, use) { x, #x " (" use ")" }
static const struct { CK_MECHANISM_TYPE m; const char *name; } mech_names[] = {
    MECH(CKM_RSA_PKCS_KEY_PAIR_GEN, "RSA key generation"), MECH(CKM_RSA_PKCS, "RSA PKCS#1 v1.5"),
    MECH(CKM_RSA_PKCS_PSS, "RSA-PSS"), MECH(CKM_EC_KEY_PAIR_GEN, "EC key generation"),
    MECH(CKM_ECDSA, "ECDSA"), MECH(CKM_ECDH1_DERIVE, "ECDH"),
    MECH(CKM_EC_EDWARDS_KEY_PAIR_GEN, "Ed25519 key generation"), MECH(CKM_EDDSA, "Ed25519"),
};
#undef MECH

const char *p11_rv_name(CK_RV rv)
{
    static _Thread_local char buf[32];

    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
        if (rv_names[i].rv == rv)
            return rv_names[i].name;
    snprintf(buf, sizeof(buf), "CKR_0x%08lx", (unsigned long)rv);
    return buf;
}

const char *p11_mech_name(CK_MECHANISM_TYPE m)
{
    static _Thread_local char buf[32];

    for (size_t i = 0; i < sizeof(mech_names) / sizeof(mech_names[0]); i++)
        if (mech_names[i].m == m)
            return mech_names[i].name;
    snprintf(buf, sizeof(buf), "CKM_0x%08lx", (unsigned long)m);
    return buf;
}

const char *p11_token_name(const struct p11_token *tok)
{
    if (tok->label[0])
        return tok->label;
    CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(tok->match);
    static _Thread_local char buf[256];
    size_t n = sizeof(ti->label);
    while (n > 0 && (ti->label[n - 1] == ' ' || ti->label[n - 1] == '\0'))
        n--; /* p11-kit leaves an attribute the URI does not give all zero */
    if (n == 0) {
        /* no label to match: the token's attributes as a URI (serial, ...) */
        char *s = p11_uri_shown(tok->match, P11_KIT_URI_FOR_TOKEN);
        snprintf(buf, sizeof(buf), "%s", s ? s : "(any)");
        free(s);
        return buf;
    }
    snprintf(buf, sizeof(buf), "%.*s", (int)n, ti->label);
    return buf;
}

void p11_uri_free(P11KitUri *uri)
{
    const char *pin;

    if (!uri)
        return;
    pin = p11_kit_uri_get_pin_value(uri);
    if (pin)
        kv_wipe((char *)pin, strlen(pin));
    p11_kit_uri_free(uri);
}

kv_rc p11_uri_take_pin(kv_ctx *ctx, P11KitUri *uri, char **pin)
{
    const char *in = p11_kit_uri_get_pin_value(uri);

    *pin = NULL;
    if (!in)
        return KV_OK;
    *pin = kv_strdup(in);
    kv_wipe((char *)in, strlen(in));
    p11_kit_uri_set_pin_value(uri, NULL); /* frees the wiped copy */
    return *pin ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

char *p11_uri_shown(P11KitUri *uri, P11KitUriType type)
{
    P11KitUri *copy = p11_kit_uri_new();
    CK_ATTRIBUTE *attrs;
    CK_ULONG n = 0;
    char *s = NULL;

    if (!copy)
        return NULL;
    /* a fresh URI with the path attributes only: the query ones stay behind */
    *p11_kit_uri_get_module_info(copy) = *p11_kit_uri_get_module_info(uri);
    *p11_kit_uri_get_slot_info(copy) = *p11_kit_uri_get_slot_info(uri);
    *p11_kit_uri_get_token_info(copy) = *p11_kit_uri_get_token_info(uri);
    p11_kit_uri_set_slot_id(copy, p11_kit_uri_get_slot_id(uri));
    attrs = p11_kit_uri_get_attributes(uri, &n);
    if ((n && p11_kit_uri_set_attributes(copy, attrs, n) != P11_KIT_URI_OK) ||
        p11_kit_uri_format(copy, type, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_uri_free(copy);
    return s;
}

bool p11_rv_lost(CK_RV rv)
{
    switch (rv) {
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_DEVICE_ERROR:
        return true;
    default:
        return false;
    }
}

kv_rc p11_fail(struct p11_token *tok, const char *func, CK_RV rv)
{
    kv_rc rc;

    switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_NOT_LOGGED_IN:
        rc = KV_ERR_AUTH_FAILED;
        break;
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
        rc = KV_ERR_PIN_LOCKED;
        break;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
        rc = KV_ERR_TOKEN_NOT_PRESENT;
        break;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_FUNCTION_NOT_SUPPORTED:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_KEY_SIZE_RANGE:
        rc = KV_ERR_UNSUPPORTED;
        break;
    case CKR_HOST_MEMORY:
        rc = KV_ERR_NO_MEMORY;
        break;
    case CKR_DEVICE_MEMORY:
        rc = KV_ERR_NO_SPACE;
        break;
    default:
        rc = KV_ERR_BACKEND;
        break;
    }
    return kv_error_code(tok->ctx, rc, "CK_RV", rv, "%s on token '%s' failed: %s (%s)", func,
                         p11_token_name(tok), p11_rv_name(rv), p11_kit_strerror(rv));
}

/* Whether `path` (as written, or resolved to `real`) is one of the comma-
 * separated paths in `list`. */
static bool path_listed(const char *list, const char *path, const char *real)
{
    char *copy = kv_strdup(list), *save = NULL;
    bool found = false;

    if (!copy)
        return false;
    for (char *p = strtok_r(copy, ", \t", &save); p && !found; p = strtok_r(NULL, ", \t", &save)) {
        char *r;
        if (!strcmp(p, path)) {
            found = true;
        } else if (real && (r = realpath(p, NULL))) {
            found = !strcmp(r, real);
            free(r);
        }
    }
    free(copy);
    return found;
}

/*
 * Whether the module file `real` (a resolved path) is registered with
 * p11-kit: some enabled module file's `module:` resolves to it. The
 * registered modules are loaded unmanaged (dlopen, no C_Initialize) only to
 * ask p11-kit for their file names; the caller releases *registry after its
 * own load, so a module is not unloaded and loaded again in between. On a
 * match, *reserved gets a copy of the module file's x-init-reserved.
 */
static bool path_registered(const char *real, CK_FUNCTION_LIST ***registry, char **reserved)
{
    CK_FUNCTION_LIST **all = p11_kit_modules_load(NULL, P11_KIT_MODULE_UNMANAGED);
    bool found = false;

    *registry = all;
    for (size_t i = 0; all && all[i] && !found; i++) {
        char *file = p11_kit_module_get_filename(all[i]);
        char *r = file ? realpath(file, NULL) : NULL;
        if (r && !strcmp(r, real)) {
            found = true;
            char *opt = p11_kit_config_option(all[i], "x-init-reserved");
            if (opt && *opt)
                *reserved = kv_strdup(opt);
            free(opt);
        }
        free(r);
        free(file);
    }
    return found;
}

/*
 * Load a module given by path, if it may be loaded: a key URI's module-path=
 * must not let whoever writes key references run code in this process.
 * Allowed: [pkcs11] allow_any_module = true; the path of [pkcs11] module or
 * one of [pkcs11] allowed_modules; a module registered with p11-kit. Paths
 * are compared after resolving symlinks.
 */
static kv_rc load_module_path(struct p11_token *tok, bool configured)
{
    kv_ctx *ctx = tok->ctx;
    const char *allowed = kv_config_get(ctx->cfg, "pkcs11", "allowed_modules");
    CK_FUNCTION_LIST **registry = NULL;
    char *real = realpath(tok->module, NULL), *reserved = NULL;
    bool any = false, ok;
    kv_rc rc;

    KV_CHECK(rc, kv_config_get_bool(ctx, ctx->cfg, "pkcs11", "allow_any_module", false, &any));
    ok = any || configured || (allowed && path_listed(allowed, tok->module, real));
    /* a registered module also brings its x-init-reserved (init_args wins) */
    if (!ok && real)
        ok = path_registered(real, &registry, &reserved);
    if (!ok)
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                "PKCS#11 module %s is not registered with p11-kit and not named in the "
                "configuration: not loading it (register it with a p11-kit module file, or list "
                "it in [pkcs11] allowed_modules)", tok->module);
    if (!tok->init_reserved) {
        tok->init_reserved = reserved;
        reserved = NULL;
    }
    /* the resolved path: a symlink swapped after the check changes nothing */
    tok->fl = p11_kit_module_load(real ? real : tok->module, 0);
    if (!tok->fl)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND_UNAVAILABLE, "cannot load PKCS#11 module '%s': %s",
                tok->module, p11_kit_message() ? p11_kit_message() : "unknown error");
out:
    if (registry)
        p11_kit_modules_release(registry);
    free(reserved);
    free(real);
    return rc;
}

static kv_rc load_module(struct p11_token *tok)
{
    kv_ctx *ctx = tok->ctx;
    const char *cmod = kv_config_get(ctx->cfg, "pkcs11", "module");
    const char *init_args = kv_config_get(ctx->cfg, "pkcs11", "init_args");
    bool configured = false;
    char known[256] = "";

    /* [pkcs11] init_args belong to the configured module, by name or path */
    if (cmod) {
        configured = !strcmp(cmod, tok->module);
        if (!configured && strchr(tok->module, '/') && strchr(cmod, '/')) {
            char *a = realpath(tok->module, NULL), *b = realpath(cmod, NULL);
            configured = a && b && !strcmp(a, b);
            free(a);
            free(b);
        }
    }
    free(tok->init_reserved);
    tok->init_reserved = NULL;
    if (configured && init_args && !(tok->init_reserved = kv_strdup(init_args)))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (strchr(tok->module, '/'))
        return load_module_path(tok, configured);
    /* by name: p11-kit itself passes the module file's x-init-reserved */
    tok->all = p11_kit_modules_load(NULL, 0);
    if (!tok->all)
        return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
                        "cannot load the p11-kit module configuration: %s",
                        p11_kit_message() ? p11_kit_message() : "unknown error");
    tok->fl = p11_kit_module_for_name(tok->all, tok->module);
    if (tok->fl)
        return KV_OK;
    for (size_t i = 0; tok->all[i]; i++) {
        char *n = p11_kit_module_get_name(tok->all[i]);
        size_t used = strlen(known);
        if (n && used + strlen(n) + 3 < sizeof(known))
            snprintf(known + used, sizeof(known) - used, "%s%s", used ? ", " : "", n);
        free(n);
    }
    p11_kit_modules_release(tok->all);
    tok->all = NULL;
    return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
                    "no p11-kit module named '%s' (configured modules: %s); give a path instead",
                    tok->module, known[0] ? known : "none");
}

/* ---- fork ---------------------------------------------------------------- */

/* Every token of the process, for the fork handler. */
static pthread_mutex_t tokens_lock = PTHREAD_MUTEX_INITIALIZER;
static struct p11_token *tokens;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In a child after fork(): a token's lock that a thread of the parent held
 * at the fork (through C_Initialize, C_OpenSession and C_Login, which a
 * token may take seconds over) would stay held for ever, that thread not
 * being in the child, which would hang in its first use of the token. The
 * child has one thread when this runs: free the locks. What they guard is
 * the parent's, and the child starts afresh on it (tok->fork_gen: the
 * module initialised again, the parent's sessions forgotten). */
static void tokens_forked_child(void)
{
    pthread_mutex_init(&tokens_lock, NULL);
    for (struct p11_token *t = tokens; t; t = t->fork_next) {
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->cond, NULL);
    }
}

static void install_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, tokens_forked_child);
}

static void tokens_add(struct p11_token *tok)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&tokens_lock);
    tok->fork_next = tokens;
    tokens = tok;
    pthread_mutex_unlock(&tokens_lock);
}

static void tokens_remove(struct p11_token *tok)
{
    pthread_mutex_lock(&tokens_lock);
    for (struct p11_token **p = &tokens; *p; p = &(*p)->fork_next)
        if (*p == tok) {
            *p = tok->fork_next;
            break;
        }
    pthread_mutex_unlock(&tokens_lock);
}

kv_rc p11_token_new(kv_ctx *ctx, const char *module, P11KitUri *match, const char *pin_source,
                    const char *pin, size_t maxsess, struct p11_rejected *rejected,
                    struct p11_token **out)
{
    struct p11_token *tok = calloc(1, sizeof(*tok));

    *out = NULL;
    if (!tok)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    tok->ctx = ctx;
    tok->module = kv_strdup(module);
    tok->match = match;
    tok->pin_source = kv_strdup(pin_source);
    tok->pin = kv_strdup(pin);
    tok->maxsess = maxsess;
    tok->rejected = rejected;
    tok->sess = calloc(maxsess, sizeof(*tok->sess));
    pthread_mutex_init(&tok->lock, NULL);
    pthread_cond_init(&tok->cond, NULL);
    tokens_add(tok);
    if (!tok->module || !tok->sess || (pin_source && !tok->pin_source) || (pin && !tok->pin)) {
        tok->match = NULL; /* stays the caller's on failure */
        p11_token_free(tok);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    *out = tok;
    return KV_OK;
}

/* Forget every session (after a loss, or before finalizing), closing each
 * first while connected, its result ignored: a module whose token really
 * went has dropped them already (CKR_SESSION_HANDLE_INVALID), but one that
 * reports CKR_DEVICE_REMOVED or CKR_TOKEN_NOT_PRESENT for a moment keeps
 * them, and each forgotten one would stay open in it for the life of the
 * process. (No reconnect has come between: no handle of ours can have been
 * given to a new session yet.) */
static void drop_sessions_locked(struct p11_token *tok)
{
    /* one by one, never C_CloseAllSessions: a session another thread is
     * signing on must not be closed under it (SoftHSM crashes in C_Sign);
     * those are closed when handed back (p11_session_put) */
    for (size_t i = 0; i < tok->maxsess; i++) {
        struct p11_sess *s = &tok->sess[i];
        if (s->busy || !s->open)
            continue;
        if (tok->connected)
            (void)tok->fl->C_CloseSession(s->h);
        s->open = false;
    }
    tok->connected = false;
    tok->nmechs = 0;
    pthread_cond_broadcast(&tok->cond);
}

void p11_token_free(struct p11_token *tok)
{
    if (!tok)
        return;
    tokens_remove(tok);
    if (tok->fl && tok->initialized && tok->fork_gen == kv_fork_generation()) {
        drop_sessions_locked(tok);
        (void)p11_kit_module_finalize(tok->fl);
    }
    if (tok->all)
        p11_kit_modules_release(tok->all);
    else if (tok->fl)
        p11_kit_module_release(tok->fl);
    p11_uri_free(tok->match);
    free(tok->module);
    free(tok->init_reserved);
    free(tok->pin_source);
    kv_secret_free(tok->pin);
    free(tok->sess);
    pthread_mutex_destroy(&tok->lock);
    pthread_cond_destroy(&tok->cond);
    free(tok);
}

static void trim_copy(char *dst, const unsigned char *src, size_t n)
{
    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
        n--;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A token-info field as shown in a message: trimmed of its padding, each
 * byte outside printable ASCII shown as '?'. */
static void field_shown(char *dst, const unsigned char *src, size_t n)
{
    trim_copy(dst, src, n);
    for (char *c = dst; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            *c = '?';
}

static const struct {
    const char *what;
    size_t off, len;
} token_fields[] = {
    { "label", offsetof(CK_TOKEN_INFO, label), sizeof(((CK_TOKEN_INFO *)0)->label) },
    { "manufacturer", offsetof(CK_TOKEN_INFO, manufacturerID),
      sizeof(((CK_TOKEN_INFO *)0)->manufacturerID) },
    { "model", offsetof(CK_TOKEN_INFO, model), sizeof(((CK_TOKEN_INFO *)0)->model) },
    { "serial", offsetof(CK_TOKEN_INFO, serialNumber),
      sizeof(((CK_TOKEN_INFO *)0)->serialNumber) },
};

/* Appended to out: each attribute the URI gives (p11-kit leaves the others
 * all zero) that the token `ti` does not have, "serial '1234' (not
 * '5678')"; with ti NULL, each attribute the URI gives but the label,
 * "serial '5678'". */
static void token_mismatch(P11KitUri *match, const CK_TOKEN_INFO *ti, char *out, size_t len)
{
    const unsigned char *want = (const unsigned char *)p11_kit_uri_get_token_info(match);

    for (size_t i = 0; i < sizeof(token_fields) / sizeof(token_fields[0]); i++) {
        const unsigned char *w = want + token_fields[i].off;
        size_t n = token_fields[i].len, used = strlen(out), z = 0;
        char a[65], b[65];

        while (z < n && w[z] == 0)
            z++;
        if (z == n || (!ti && i == 0))
            continue;   /* not in the URI; or the label, which the message names */
        if (ti && memcmp(w, (const unsigned char *)ti + token_fields[i].off, n) == 0)
            continue;
        field_shown(a, w, n);
        if (ti) {
            field_shown(b, (const unsigned char *)ti + token_fields[i].off, n);
            snprintf(out + used, len - used, "%s%s '%s', not '%s'", used ? ", " : "",
                     token_fields[i].what, b, a);
        } else {
            snprintf(out + used, len - used, "%s%s '%s'", used ? ", " : "",
                     token_fields[i].what, a);
        }
    }
}

/* Find the slot whose token matches; fills tok->slot, label, serial, info. */
static kv_rc find_slot_locked(struct p11_token *tok)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_RV rv, info_rv = CKR_OK;
    char present[768] = "", asked[256] = "";
    int found = 0;

    rv = tok->fl->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK)
        return p11_fail(tok, "C_GetSlotList", rv);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        char label[33];
        rv = tok->fl->C_GetTokenInfo(slots[i], &ti);
        if (rv != CKR_OK) {
            if (info_rv == CKR_OK)
                info_rv = rv;
            continue;
        }
        bool matches = p11_kit_uri_match_token_info(tok->match, &ti);
        char why[320] = "";
        field_shown(label, ti.label, sizeof(ti.label));
        if (!matches)
            token_mismatch(tok->match, &ti, why, sizeof(why));
        size_t used = strlen(present);
        if (used + strlen(label) + strlen(why) + 10 < sizeof(present))
            snprintf(present + used, sizeof(present) - used, "%s'%s'%s%s%s", used ? "; " : "",
                     label, why[0] ? " (" : "", why, why[0] ? ")" : "");
        if (!matches)
            continue;
        if (found++ == 0) {
            tok->slot = slots[i];
            /* label, serial and info are read without the lock (messages,
             * threads signing on sessions of the last connection): a
             * reconnect to the same token leaves them alone, only the first
             * connection or another token writes them. They were rewritten
             * on every reconnect, a data race with a thread formatting its
             * error (ThreadSanitizer, faults.sh's hundred threads). */
            if (tok->epoch == 0 || memcmp(tok->info.label, ti.label, sizeof(ti.label)) != 0 ||
                memcmp(tok->info.serialNumber, ti.serialNumber, sizeof(ti.serialNumber)) != 0) {
                tok->info = ti;
                trim_copy(tok->label, ti.label, sizeof(ti.label));
                trim_copy(tok->serial, ti.serialNumber, sizeof(ti.serialNumber));
            }
        }
    }
    /* a slot that could not say which token it holds may hold this one */
    if (found == 0 && info_rv != CKR_OK)
        return p11_fail(tok, "C_GetTokenInfo", info_rv);
    if (found == 0) {
        /* which attribute of the URI's each token lacks: the serial given
         * against the token's, not only the label (never the PIN: only
         * the token attributes are shown) */
        token_mismatch(tok->match, NULL, asked, sizeof(asked));
        return kv_error(tok->ctx, KV_ERR_TOKEN_NOT_PRESENT,
                        "token '%s'%s%s%s is not present in module %s (tokens present: %s)",
                        p11_token_name(tok), asked[0] ? " (" : "", asked, asked[0] ? ")" : "",
                        tok->module, present[0] ? present : "none");
    }
    if (found > 1)
        return kv_error(tok->ctx, KV_ERR_CONFIG,
                        "%d tokens in module %s match '%s': add a serial to tell them apart",
                        found, tok->module, p11_token_name(tok));
    return KV_OK;
}

/*
 * A rejected PIN is remembered as an HMAC-SHA256 under a random key made
 * once per process: a bare hash of a 6-digit PIN is the PIN (a million
 * guesses), a MAC under a key that never leaves the process is not. A
 * forked child keeps its parent's key, so the MACs it inherits still match.
 */
static kv_mutex pin_mac_lock = KV_MUTEX_INIT;
static unsigned char pin_mac_key[32];
static bool pin_mac_ready;

/* The key lives as long as the library: wiped when it is unloaded or the
 * process exits. */
__attribute__((destructor)) static void pin_mac_wipe(void)
{
    kv_wipe(pin_mac_key, sizeof(pin_mac_key));
    pin_mac_ready = false;
}

kv_rc p11_pin_mac(kv_ctx *ctx, const CK_TOKEN_INFO *ti, const char *pin, unsigned char mac[32])
{
    /* domain separation: a token-bound MAC never equals a PIN-only one */
    static const unsigned char tag_token = 'T', tag_pin = 'P';
    EVP_MAC *hmac = NULL;
    EVP_MAC_CTX *mctx = NULL;
    OSSL_PARAM params[2];
    size_t len = 0;
    bool ready;
    kv_rc rc = KV_OK;

    /* (a child forked while a parent thread made the key makes its own
     * when the flag was not yet set: the flag is set after the key) */
    (void)kv_mutex_lock(&pin_mac_lock);
    if (!pin_mac_ready)
        pin_mac_ready = RAND_priv_bytes_ex(ctx->libctx, pin_mac_key, sizeof(pin_mac_key), 0) == 1;
    ready = pin_mac_ready;
    kv_mutex_unlock(&pin_mac_lock);
    if (!ready)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "random generator failed");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    hmac = EVP_MAC_fetch(ctx->libctx, "HMAC", NULL);
    mctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    if (!mctx || !EVP_MAC_init(mctx, pin_mac_key, sizeof(pin_mac_key), params) ||
        !EVP_MAC_update(mctx, ti ? &tag_token : &tag_pin, 1) ||
        (ti && (!EVP_MAC_update(mctx, ti->label, sizeof(ti->label)) ||
                !EVP_MAC_update(mctx, ti->manufacturerID, sizeof(ti->manufacturerID)) ||
                !EVP_MAC_update(mctx, ti->model, sizeof(ti->model)) ||
                !EVP_MAC_update(mctx, ti->serialNumber, sizeof(ti->serialNumber)))) ||
        !EVP_MAC_update(mctx, (const unsigned char *)pin, strlen(pin)) ||
        !EVP_MAC_final(mctx, mac, &len, 32) || len != 32)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "HMAC-SHA256 failed");
out:
    EVP_MAC_CTX_free(mctx);
    EVP_MAC_free(hmac);
    return rc;
}

void p11_rejected_init(struct p11_rejected *r)
{
    memset(r, 0, sizeof(*r));
    kv_mutex_init(&r->lock);
}

void p11_rejected_fini(struct p11_rejected *r)
{
    kv_wipe(r->mac, sizeof(r->mac));
    kv_mutex_destroy(&r->lock);
}

static bool rejected_has(struct p11_rejected *r, const unsigned char mac[32])
{
    bool found = false;

    /* (an entry a parent thread was writing at fork() may be torn in a
     * child: it matches no PIN, which is then tried once more) */
    (void)kv_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        found |= CRYPTO_memcmp(r->mac[i], mac, 32) == 0;
    kv_mutex_unlock(&r->lock);
    return found;
}

static void rejected_add(struct p11_rejected *r, const unsigned char mac[32])
{
    (void)kv_mutex_lock(&r->lock);
    memcpy(r->mac[r->next], mac, 32);
    r->next = (r->next + 1) % P11_MAX_REJECTED;
    if (r->n < P11_MAX_REJECTED)
        r->n++;
    kv_mutex_unlock(&r->lock);
}

/* Log in on session h, never trying a PIN this token has rejected before
 * (in this context, through any URI or PIN source). */
static kv_rc login_locked(struct p11_token *tok, CK_SESSION_HANDLE h)
{
    unsigned char mac[32];
    char *pin = NULL;
    kv_rc rc = KV_OK;
    CK_RV rv;

    if (!(tok->info.flags & CKF_LOGIN_REQUIRED))
        return KV_OK;
    if (tok->pin) {
        pin = kv_strdup(tok->pin);
        if (!pin)
            return kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
    } else if (tok->pin_source) {
        rc = kv_secret_read(tok->ctx, tok->pin_source, "PIN", &pin);
        if (rc == KV_ERR_KEY_NOT_FOUND)
            rc = kv_error(tok->ctx, KV_ERR_CONFIG, "PIN source %s: file does not exist",
                          tok->pin_source);
        if (rc != KV_OK)
            return rc;
    } else {
        return kv_error(tok->ctx, KV_ERR_AUTH_FAILED,
                        "token '%s' needs a PIN: set [pkcs11] pin, or pin-source in the URI",
                        tok->label);
    }
    KV_CHECK(rc, p11_pin_mac(tok->ctx, &tok->info, pin, mac));
    if (rejected_has(tok->rejected, mac)) {
        rc = kv_error(tok->ctx, KV_ERR_AUTH_FAILED,
                      "token '%s' rejected this PIN before; not trying it again "
                      "(tokens lock after a few failures): fix the PIN source", tok->label);
        goto out;
    }
    rv = tok->fl->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE)
        rejected_add(tok->rejected, mac);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        rc = p11_fail(tok, "C_Login", rv);
out:
    kv_wipe(mac, sizeof(mac));
    kv_secret_free(pin);
    return rc;
}

/* In a forked child: the parent's sessions, and the writes of its other
 * threads, are not ours (forgotten, never closed: the parent uses them). */
static void forked_locked(struct p11_token *tok)
{
    if (!tok->initialized || tok->fork_gen == kv_fork_generation())
        return;
    for (size_t i = 0; i < tok->maxsess; i++)
        tok->sess[i].open = tok->sess[i].busy = false;
    tok->nrw = tok->wroom = 0;
    tok->connected = false;
    tok->initialized = false;
}

/* The sessions this process has open on the token: the pool's, of any
 * epoch (one from before a reconnect may still be open in the module until
 * it is handed back), and the writes'. */
static size_t sessions_open_locked(const struct p11_token *tok)
{
    size_t n = tok->nrw;

    for (size_t i = 0; i < tok->maxsess; i++)
        n += tok->sess[i].open;
    return n;
}

/* Whether one more session would pass the token's ulMaxSessionCount:
 * C_OpenSession would fail with CKR_SESSION_COUNT. */
static bool sessions_full_locked(const struct p11_token *tok)
{
    return tok->limit && sessions_open_locked(tok) >= tok->limit;
}

/* A token's session count from CK_TOKEN_INFO: 0 for none. */
static size_t session_limit(CK_ULONG n)
{
    return n == CK_EFFECTIVELY_INFINITE || n == CK_UNAVAILABLE_INFORMATION ? 0 : (size_t)n;
}

static kv_rc open_session_locked(struct p11_token *tok, struct p11_sess *s)
{
    /* read-only: SoftHSM does more work per operation in read/write
     * sessions, growing with the objects on the token; writes open a
     * read/write session of their own (pkcs11.c) */
    CK_RV rv = tok->fl->C_OpenSession(tok->slot, CKF_SERIAL_SESSION, NULL, NULL, &s->h);
    if (rv != CKR_OK)
        return p11_fail(tok, "C_OpenSession", rv);
    s->open = true;
    s->epoch = tok->epoch;
    return KV_OK;
}

/* Initialise the module if needed, find the token, open a first session and
 * log in (login state is per token: later sessions share it). */
static kv_rc connect_locked(struct p11_token *tok)
{
    kv_rc rc;
    CK_RV rv;

    if (!tok->fl) {
        rc = load_module(tok);
        if (rc != KV_OK)
            return rc;
    }
    forked_locked(tok);
    if (!tok->initialized) {
        if (tok->init_reserved) {
            /* the managed module hands these to the module's C_Initialize
             * in place of its own (the first initialisation in a process
             * wins); CKF_OS_LOCKING_OK as p11-kit's own arguments say */
            CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK,
                                          .pReserved = tok->init_reserved };
            rv = tok->fl->C_Initialize(&args);
        } else {
            rv = p11_kit_module_initialize(tok->fl);
        }
        if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
            return kv_error_code(tok->ctx, KV_ERR_BACKEND_UNAVAILABLE, "CK_RV", rv,
                                 "C_Initialize of module %s failed: %s (%s)", tok->module,
                                 p11_rv_name(rv), p11_kit_strerror(rv));
        tok->initialized = true;
        tok->fork_gen = kv_fork_generation();
    }
    rc = find_slot_locked(tok);
    if (rc != KV_OK)
        return rc;
    /* atomic: key_handle reads it without the lock (a plain ++ was a data
     * race under ThreadSanitizer, faults.sh's hundred threads) */
    __atomic_add_fetch(&tok->epoch, 1, __ATOMIC_RELEASE);
    tok->nmechs = 0;
    /* atomic too: an ECDH on a session of the last connection reads and
     * sets it without the lock (ecdh_step) */
    __atomic_store_n(&tok->ecdh_point_form, 0, __ATOMIC_RELAXED);
    /* the token's own limits: every session counts against the first (the
     * pool's and the writes'), read/write ones against the second too */
    tok->limit = session_limit(tok->info.ulMaxSessionCount);
    tok->rwlimit = session_limit(tok->info.ulMaxRwSessionCount);
    if (tok->maxsess > 1 && tok->limit && tok->limit < tok->maxsess)
        tok->maxsess = tok->limit;
    struct p11_sess *first = NULL;
    for (size_t i = 0; i < tok->maxsess && !first; i++)
        if (!tok->sess[i].busy)
            first = &tok->sess[i];
    if (!first)
        return kv_error(tok->ctx, KV_ERR_BACKEND, "no free session slot on token '%s'",
                        tok->label);
    rc = open_session_locked(tok, first);
    if (rc != KV_OK)
        return rc;
    rc = login_locked(tok, first->h);
    if (rc != KV_OK) {
        (void)tok->fl->C_CloseSession(first->h);
        first->open = false;
        return rc;
    }
    tok->connected = true;
    return KV_OK;
}

/* Not connected: connect, or wait while the token has no room for the
 * first session (a write that has the token alone holds its one). KV_OK
 * when the caller is to look again. */
static kv_rc connect_or_wait_locked(struct p11_token *tok)
{
    if (sessions_full_locked(tok)) {
        pthread_cond_wait(&tok->cond, &tok->lock);
        return KV_OK;
    }
    return connect_locked(tok);
}

/* An idle pool session (open, not in use, of this connection), or NULL. */
static struct p11_sess *idle_session_locked(struct p11_token *tok)
{
    for (size_t i = 0; i < tok->maxsess; i++) {
        struct p11_sess *c = &tok->sess[i];
        if (c->open && !c->busy && c->epoch == tok->epoch)
            return c;
    }
    return NULL;
}

/* Whether a pool session of this connection other than `except` is open:
 * one that keeps the token logged in. */
static bool login_kept_locked(const struct p11_token *tok, const struct p11_sess *except)
{
    for (size_t i = 0; i < tok->maxsess; i++)
        if (&tok->sess[i] != except && tok->sess[i].open && tok->sess[i].epoch == tok->epoch)
            return true;
    return false;
}

kv_rc p11_session_get(struct p11_token *tok, struct p11_sess **out)
{
    struct p11_sess *s = NULL;
    kv_rc rc = KV_OK;

    *out = NULL;
    pthread_mutex_lock(&tok->lock);
    for (;;) {
        forked_locked(tok);
        /* a write waiting for room (p11_rw_get) gets the next idle session:
         * a stream of signs would otherwise keep it waiting for ever */
        if (tok->wroom && sessions_full_locked(tok)) {
            pthread_cond_wait(&tok->cond, &tok->lock);
            continue;
        }
        if (!tok->connected) {
            rc = connect_or_wait_locked(tok);
            if (rc != KV_OK)
                break;
            continue;
        }
        struct p11_sess *empty = NULL;
        s = idle_session_locked(tok);
        for (size_t i = 0; i < tok->maxsess && !s && !empty; i++)
            if (!tok->sess[i].busy)
                empty = &tok->sess[i];
        if (!s && empty && !sessions_full_locked(tok)) {
            rc = open_session_locked(tok, empty);
            if (rc != KV_OK)
                break;
            s = empty;
        }
        if (s) {
            s->busy = true;
            break;
        }
        pthread_cond_wait(&tok->cond, &tok->lock);
    }
    pthread_mutex_unlock(&tok->lock);
    *out = s;
    return rc;
}

/* Whether handle h, of a session from before a reconnect, now names one of
 * this connection's pool sessions (other than `except`): a module plugged
 * back in may give a number out again. */
static bool handle_reused_locked(const struct p11_token *tok, CK_SESSION_HANDLE h,
                                 const struct p11_sess *except)
{
    bool reused = false;

    for (size_t i = 0; i < tok->maxsess; i++)
        reused |= &tok->sess[i] != except && tok->sess[i].open &&
                  tok->sess[i].epoch == tok->epoch && tok->sess[i].h == h;
    return reused;
}

void p11_session_put(struct p11_token *tok, struct p11_sess *s, CK_RV rv)
{
    pthread_mutex_lock(&tok->lock);
    s->busy = false;
    if (s->epoch != tok->epoch || tok->fork_gen != kv_fork_generation()) {
        /* from before a reconnect (closed here: when its call failed as
         * lost too, the module may still keep it - a transient
         * CKR_DEVICE_REMOVED - unless its handle now names one of this
         * connection's sessions, a handle the module gave out again) or a
         * fork (the parent's, never closed by the child) */
        bool reused = p11_rv_lost(rv) && handle_reused_locked(tok, s->h, s);
        if (s->open && tok->fork_gen == kv_fork_generation() && !reused)
            (void)tok->fl->C_CloseSession(s->h);
        s->open = false;
    } else if (p11_rv_lost(rv) || !tok->connected) {
        /* the token went away or logged us out, found by this call or by
         * another while this one ran (the pool was dropped and this
         * session, in use, left open): start again on next use. Closed
         * here whatever the connection's state, or the module keeps it,
         * uncounted: no session has been opened since the drop, so its
         * number is still its own. */
        (void)tok->fl->C_CloseSession(s->h);
        s->open = false;
        if (tok->connected)
            drop_sessions_locked(tok);
    } else if (rv == P11_RV_SPOILED) {
        (void)tok->fl->C_CloseSession(s->h);
        s->open = false;
        /* the login lasts while one session of the token is open: with the
         * last one closed, connect and log in again on next use */
        if (!login_kept_locked(tok, NULL))
            tok->connected = false;
    }
    /* a write waits for something else than a reader does: wake them all */
    if (tok->wroom)
        pthread_cond_broadcast(&tok->cond);
    else
        pthread_cond_signal(&tok->cond);
    pthread_mutex_unlock(&tok->lock);
}

/*
 * The login is the token's, shared by every session the process has open on
 * it, and ends when the last one closes (PKCS#11 3.0, 5.6). A write's session
 * opened while a pool session is open is logged in, and keeps the login
 * while it is open. When the token has no room for it, an idle pool session
 * is closed to make some; when that session was the last, the write has the
 * token alone: it logs in on its own session, and the next reader connects
 * again once the write is done.
 */
kv_rc p11_rw_get(struct p11_token *tok, struct p11_rw *w)
{
    kv_rc rc = KV_OK;
    bool waiting = false, alone = false;
    CK_RV rv;

    w->rv = CKR_OK;
    pthread_mutex_lock(&tok->lock);
    for (;;) {
        forked_locked(tok);
        if (tok->rwlimit && tok->nrw >= tok->rwlimit) {
            pthread_cond_wait(&tok->cond, &tok->lock);
            continue;
        }
        if (!tok->connected) {
            rc = connect_or_wait_locked(tok);
            if (rc != KV_OK)
                break;
            continue; /* the limits are the connection's: look again */
        }
        if (sessions_full_locked(tok)) {
            struct p11_sess *idle = idle_session_locked(tok);
            if (!idle) {
                if (!waiting)
                    tok->wroom++;
                waiting = true;
                pthread_cond_wait(&tok->cond, &tok->lock);
                continue;
            }
            alone = !login_kept_locked(tok, idle);
            (void)tok->fl->C_CloseSession(idle->h);
            idle->open = false;
            if (alone)
                tok->connected = false; /* logged out: readers connect again */
        }
        rv = tok->fl->C_OpenSession(tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                    &w->h);
        if (rv != CKR_OK) {
            rc = p11_fail(tok, "C_OpenSession (read/write)", rv);
            w->rv = rv;
            if (p11_rv_lost(rv))
                drop_sessions_locked(tok);
            break;
        }
        tok->nrw++;
        w->epoch = tok->epoch;
        if (alone && (rc = login_locked(tok, w->h)) != KV_OK) {
            (void)tok->fl->C_CloseSession(w->h);
            tok->nrw--;
        }
        break;
    }
    if (waiting)
        tok->wroom--;
    pthread_cond_broadcast(&tok->cond);
    pthread_mutex_unlock(&tok->lock);
    return rc;
}

void p11_rw_put(struct p11_token *tok, struct p11_rw *w, CK_RV rv)
{
    pthread_mutex_lock(&tok->lock);
    /* a session from before a reconnect whose call failed as lost may have
     * a number the module now gives one of this connection's sessions */
    if (w->epoch == tok->epoch || !p11_rv_lost(rv) || !handle_reused_locked(tok, w->h, NULL))
        (void)tok->fl->C_CloseSession(w->h);
    tok->nrw--;
    /* the token went away or logged us out: start again on next use */
    if (w->epoch == tok->epoch && p11_rv_lost(rv))
        drop_sessions_locked(tok);
    pthread_cond_broadcast(&tok->cond);
    pthread_mutex_unlock(&tok->lock);
}

CK_RV p11_mech_check(struct p11_token *tok, CK_SESSION_HANDLE h, CK_MECHANISM_TYPE m,
                     CK_FLAGS flag, kv_rc *rc)
{
    struct p11_mech found = { m, CKR_OK, { 0, 0, 0 } };
    bool cached = false;

    (void)h;
    *rc = KV_OK;
    pthread_mutex_lock(&tok->lock);
    for (size_t i = 0; i < tok->nmechs; i++)
        if (tok->mechs[i].type == m) {
            found = tok->mechs[i];
            cached = true;
        }
    if (!cached) {
        found.rv = tok->fl->C_GetMechanismInfo(tok->slot, m, &found.info);
        /* a failed query (out of memory, a lost token) says nothing of the
         * mechanism: kept, it would refuse it until the next reconnect */
        if (tok->nmechs < P11_MAX_MECHS &&
            (found.rv == CKR_OK || found.rv == CKR_MECHANISM_INVALID))
            tok->mechs[tok->nmechs++] = found;
    }
    pthread_mutex_unlock(&tok->lock);
    if (found.rv == CKR_MECHANISM_INVALID)
        *rc = kv_error(tok->ctx, KV_ERR_UNSUPPORTED,
                       "mechanism %s not offered by this token ('%s', module %s)",
                       p11_mech_name(m), tok->label, tok->module);
    else if (found.rv != CKR_OK)
        *rc = p11_fail(tok, "C_GetMechanismInfo", found.rv);
    else if (!(found.info.flags & flag))
        *rc = kv_error(tok->ctx, KV_ERR_UNSUPPORTED,
                       "mechanism %s not supported by this token ('%s') for this operation",
                       p11_mech_name(m), tok->label);
    return p11_rv_lost(found.rv) ? found.rv : CKR_OK;
}
