/*
 * p11shim.c - a fault-injecting PKCS#11 module for tests (a mock, and only
 * for what a real module cannot do on demand: be unplugged).
 *
 * It forwards every call to the module named by $KV_SHIM_MODULE (SoftHSM in
 * the tests). While the file $KV_SHIM_CONTROL contains "removed", the token
 * behaves as if pulled out: the slot shows no token and calls on sessions
 * fail with CKR_DEVICE_REMOVED. When the file says anything else again, the
 * token is "plugged back in": its old sessions are closed (as a replug
 * does), so a caller must reconnect and log in again. While it contains
 * "write-protected", C_GenerateKeyPair fails with CKR_TOKEN_WRITE_PROTECTED,
 * as on a read-only token. While it contains "ec-point", the shim acts as a
 * PKCS#11 3.0 module that gives CKA_EC_POINT on EC private keys (the point
 * of each pair it saw generated, remembered in this process) and cannot
 * sign, so a caller can only check a public key against that attribute.
 * While it contains "lose-public", each C_GenerateKeyPair that succeeds has
 * its new public key destroyed before it returns, as a creator racing the
 * caller without its lock does when it takes the half-made pair (public key
 * stored, private key not yet) for a destroyed key's leftovers and purges
 * it: SoftHSM shows that race only now and then, between two threads.
 * While it contains "info-fails", C_GetTokenInfo fails with
 * CKR_FUNCTION_FAILED (a token that cannot say what it is: a reconnect
 * fails before it opens a session); nothing else changes.
 * When $KV_SHIM_CALLS names a file, each C_Login appends a line "C_Login
 * 0xRV" to it (the CK_RV the module returned; never the PIN), so a test can
 * count what reached the token.
 *
 * $KV_SHIM_FAULTS is a fault schedule, for what SoftHSM cannot do on demand
 * (run out of device memory, lose a session, fail, be slow): entries
 * separated by commas, each CALL:FAULT[:WHEN].
 *   CALL   a PKCS#11 function the shim wraps (C_Sign, C_FindObjects, ...),
 *          or * for all of them
 *   FAULT  a CK_RV the call returns instead of running: CKR_DEVICE_REMOVED,
 *          CKR_DEVICE_MEMORY, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 *          CKR_FUNCTION_FAILED, CKR_DEVICE_ERROR, CKR_GENERAL_ERROR,
 *          CKR_HOST_MEMORY, CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN;
 *          or slow=MSms: the call runs, MS milliseconds late
 *   WHEN   which calls of that function (counted from 1 per entry, from the
 *          module's C_Initialize): N the Nth only; N-M the Nth to the Mth; N- the Nth and
 *          every later one; /N every Nth (N, 2N, ...); ~P a random fraction
 *          P (0 < P <= 1), drawn from the seed $KV_SHIM_SEED (default 1);
 *          left out, every call
 * for example "C_Sign:CKR_DEVICE_REMOVED:3,C_GenerateKeyPair:CKR_DEVICE_MEMORY,
 * C_FindObjects:CKR_SESSION_HANDLE_INVALID:~0.2,C_Sign:slow=2000ms:/10".
 * The first matching entry that fires decides (a slow entry then still lets
 * a later failing one fire). A schedule the shim cannot read makes
 * C_GetFunctionList fail, with the reason on stderr. When $KV_SHIM_FAULT_LOG
 * names a file, each fault appends "CALL CKR_NAME" (or "CALL slow") to it.
 *
 * $KV_SHIM_ATTR tampers with C_GetAttributeValue answers, for a token that
 * lies about sizes: entries separated by commas, each ATTR:len=N (ATTR one
 * of CKA_KEY_TYPE, CKA_VALUE, CKA_MODULUS, CKA_PUBLIC_EXPONENT,
 * CKA_EC_PARAMS, CKA_EC_POINT, CKA_ID, CKA_LABEL, CKA_SIGN). Every answer
 * for ATTR then says its length is N: a size query (pValue NULL) gets N;
 * a buffer of at least N bytes gets the real value's first N bytes (all of
 * it when shorter) and ulValueLen N; a smaller buffer gets
 * CKR_BUFFER_TOO_SMALL. For example "CKA_KEY_TYPE:len=4" (a key type
 * shorter than a CK_ULONG) or "CKA_VALUE:len=4294967295" (a 4 GiB
 * certificate). An entry the shim cannot read makes C_GetFunctionList fail.
 *
 * $KV_SHIM_SESSIONS=N[/R]: a token that allows N sessions at once, R of them
 * read/write (R left out: N), counted over the process's sessions (the
 * tests use one token). C_GetTokenInfo says so (ulMaxSessionCount N,
 * ulMaxRwSessionCount R, and the counts open), and a C_OpenSession past
 * either fails with CKR_SESSION_COUNT, as PKCS#11 says, logged to
 * $KV_SHIM_FAULT_LOG as "C_OpenSession CKR_SESSION_COUNT". SoftHSM allows
 * any number.
 *
 * $KV_SHIM_FIND=endless: a search that never ends. Each C_FindObjects
 * fills every place it is given (handles 1, 2, 3, ... through the search,
 * not the token's) and never answers 0, for a token that says it holds
 * more objects than any list could.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

#include "fault-when.h"

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int was_removed;

/* ---- the fault schedule ($KV_SHIM_FAULTS) --------------------------------- */

#define MAX_FAULTS 32

static struct fault {
    char call[40];
    CK_RV rv;                 /* what the call returns, when not slow */
    unsigned long slow_ms;    /* > 0: a delay, and the call runs */
    struct fault_when when;
    unsigned long calls;      /* calls of CALL seen by this entry */
} faults[MAX_FAULTS];
static int nfaults;
static unsigned long long seed = 1;

static const struct {
    const char *name;
    CK_RV rv;
} fault_rvs[] = {
    { "CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED },
    { "CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY },
    { "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID },
    { "CKR_SESSION_CLOSED", CKR_SESSION_CLOSED },
    { "CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED },
    { "CKR_DEVICE_ERROR", CKR_DEVICE_ERROR },
    { "CKR_GENERAL_ERROR", CKR_GENERAL_ERROR },
    { "CKR_HOST_MEMORY", CKR_HOST_MEMORY },
    { "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT },
    { "CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN },
};

/* the functions the shim wraps: the only ones a schedule may name */
static const char *const wrapped[] = {
    "C_GetSlotList", "C_GetTokenInfo", "C_GetMechanismInfo", "C_OpenSession",
    "C_CloseSession", "C_Login", "C_FindObjectsInit", "C_FindObjects",
    "C_FindObjectsFinal", "C_GetAttributeValue", "C_SetAttributeValue",
    "C_CreateObject", "C_DestroyObject", "C_SignInit", "C_Sign", "C_DeriveKey",
    "C_GenerateKeyPair",
};

static const char *rv_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof(fault_rvs) / sizeof(fault_rvs[0]); i++)
        if (fault_rvs[i].rv == rv)
            return fault_rvs[i].name;
    return "CKR_?";
}

static int bad_schedule(const char *entry, const char *why)
{
    fprintf(stderr, "p11shim: KV_SHIM_FAULTS entry '%s': %s\n", entry, why);
    return -1;
}

static int parse_when(struct fault *f, const char *w, const char *entry)
{
    const char *why = fault_when_parse(&f->when, w);

    return why ? bad_schedule(entry, why) : 0;
}

static int parse_entry(char *entry)
{
    char shown[128], *what, *when;
    struct fault *f;
    size_t i;

    snprintf(shown, sizeof(shown), "%s", entry);
    if (nfaults == MAX_FAULTS)
        return bad_schedule(shown, "too many entries");
    f = &faults[nfaults];
    memset(f, 0, sizeof(*f));
    what = strchr(entry, ':');
    if (!what)
        return bad_schedule(shown, "not CALL:FAULT[:WHEN]");
    *what++ = '\0';
    when = strchr(what, ':');
    if (when)
        *when++ = '\0';
    for (i = 0; i < sizeof(wrapped) / sizeof(wrapped[0]); i++)
        if (!strcmp(entry, wrapped[i]))
            break;
    if (strcmp(entry, "*") && i == sizeof(wrapped) / sizeof(wrapped[0]))
        return bad_schedule(shown, "the shim does not wrap this call");
    snprintf(f->call, sizeof(f->call), "%s", entry);
    if (!strncmp(what, "slow=", 5)) {
        size_t l = strlen(what);
        if (l < 8 || strcmp(what + l - 2, "ms") ||
            fault_number(what + 5, what + l - 2, 10, &f->slow_ms) ||
            f->slow_ms == 0)
            return bad_schedule(shown, "a delay is slow=MSms, MS > 0");
    } else {
        for (i = 0; i < sizeof(fault_rvs) / sizeof(fault_rvs[0]); i++)
            if (!strcmp(what, fault_rvs[i].name))
                break;
        if (i == sizeof(fault_rvs) / sizeof(fault_rvs[0]))
            return bad_schedule(shown, "not a fault the shim injects");
        f->rv = fault_rvs[i].rv;
    }
    if (when && parse_when(f, when, shown))
        return -1;
    nfaults++;
    return 0;
}

static int parse_schedule(void)
{
    const char *env = getenv("KV_SHIM_FAULTS"), *s = getenv("KV_SHIM_SEED");
    char *copy, *save = NULL;
    int r = 0;

    if (s && *s)
        seed = strtoull(s, NULL, 10);
    if (!env || !*env)
        return 0;
    copy = strdup(env);
    if (!copy)
        return -1;
    for (char *e = strtok_r(copy, ", \t\n", &save); e && r == 0; e = strtok_r(NULL, ", \t\n", &save))
        r = parse_entry(e);
    free(copy);
    return r;
}

/* ---- answers with a false length ($KV_SHIM_ATTR) ---------------------------- */

static const struct {
    const char *name;
    CK_ATTRIBUTE_TYPE type;
} attr_names[] = {
    { "CKA_KEY_TYPE", CKA_KEY_TYPE }, { "CKA_VALUE", CKA_VALUE },
    { "CKA_MODULUS", CKA_MODULUS }, { "CKA_PUBLIC_EXPONENT", CKA_PUBLIC_EXPONENT },
    { "CKA_EC_PARAMS", CKA_EC_PARAMS }, { "CKA_EC_POINT", CKA_EC_POINT },
    { "CKA_ID", CKA_ID }, { "CKA_LABEL", CKA_LABEL }, { "CKA_SIGN", CKA_SIGN },
};

static struct {
    CK_ATTRIBUTE_TYPE type;
    CK_ULONG len;
} tampers[16];
static int ntampers;

static int parse_tampers(void)
{
    const char *env = getenv("KV_SHIM_ATTR");
    char *copy, *save = NULL;
    int r = 0;

    if (!env || !*env)
        return 0;
    copy = strdup(env);
    if (!copy)
        return -1;
    for (char *e = strtok_r(copy, ", \t\n", &save); e && r == 0; e = strtok_r(NULL, ", \t\n", &save)) {
        char *eq = strstr(e, ":len=");
        unsigned long n;
        size_t i = 0;
        if (eq) {
            *eq = '\0';
            for (i = 0; i < sizeof(attr_names) / sizeof(attr_names[0]); i++)
                if (!strcmp(e, attr_names[i].name))
                    break;
        }
        if (!eq || i == sizeof(attr_names) / sizeof(attr_names[0]) || ntampers == 16 ||
            fault_number(eq + 5, eq + strlen(eq + 5) + 5, 10, &n)) {
            fprintf(stderr, "p11shim: KV_SHIM_ATTR entry '%s': not ATTR:len=N\n", e);
            r = -1;
            break;
        }
        tampers[ntampers].type = attr_names[i].type;
        tampers[ntampers++].len = n;
    }
    free(copy);
    return r;
}

/* one attribute through the tampering: -1 when ATTR is not tampered with */
static long long tampered(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t)
{
    CK_ATTRIBUTE q = { t->type, NULL, 0 };
    CK_ULONG want;
    CK_RV rv;
    int i;

    for (i = 0; i < ntampers && tampers[i].type != t->type; i++)
        ;
    if (i == ntampers)
        return -1;
    want = tampers[i].len;
    if (!t->pValue) {
        t->ulValueLen = want;
        return CKR_OK;
    }
    if (t->ulValueLen < want) {
        t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
        return CKR_BUFFER_TOO_SMALL;
    }
    rv = real->C_GetAttributeValue(h, o, &q, 1);
    if (rv != CKR_OK)
        return (long long)rv;
    q.pValue = malloc(q.ulValueLen ? q.ulValueLen : 1);
    if (!q.pValue)
        return CKR_HOST_MEMORY;
    rv = real->C_GetAttributeValue(h, o, &q, 1);
    if (rv == CKR_OK) {
        memcpy(t->pValue, q.pValue, q.ulValueLen < want ? q.ulValueLen : want);
        t->ulValueLen = want;
    }
    free(q.pValue);
    return (long long)rv;
}

static void fault_log(const char *call, const char *what)
{
    const char *path = getenv("KV_SHIM_FAULT_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;

    if (f) {
        fprintf(f, "%s %s\n", call, what);
        fclose(f);
    }
}

/* Whether the schedule fails this call of `call`: CKR_OK to run it (maybe
 * after a delay), or the CK_RV to return instead. */
static CK_RV fault(const char *call)
{
    unsigned long delay = 0;
    CK_RV rv = CKR_OK;

    if (!nfaults)
        return CKR_OK;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nfaults && rv == CKR_OK; i++) {
        struct fault *f = &faults[i];
        unsigned long c;
        int fire;
        if (strcmp(f->call, "*") && strcmp(f->call, call))
            continue;
        c = ++f->calls;
        fire = fault_when_fires(&f->when, c, &seed);
        if (!fire)
            continue;
        if (f->slow_ms) {
            delay += f->slow_ms;
            fault_log(call, "slow");
        } else {
            rv = f->rv;
            fault_log(call, rv_name(rv));
        }
    }
    pthread_mutex_unlock(&lock);
    if (delay) {
        struct timespec ts = { (time_t)(delay / 1000), (long)(delay % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    return rv;
}

#define FAULT(call)                       \
    do {                                  \
        CK_RV frv_ = fault(call);         \
        if (frv_ != CKR_OK)               \
            return frv_;                  \
    } while (0)

/* ---- a token that allows few sessions ($KV_SHIM_SESSIONS) ----------------- */

#define MAX_OPEN 1024

static CK_ULONG max_sessions, max_rw; /* 0: no limit */
static struct {
    CK_SESSION_HANDLE h;
    int rw;
} opened[MAX_OPEN];
static CK_ULONG nopened, nopened_rw;

static int parse_sessions(void)
{
    const char *env = getenv("KV_SHIM_SESSIONS");
    char *end;

    if (!env)
        return 0;
    max_sessions = max_rw = strtoul(env, &end, 10);
    if (*end == '/')
        max_rw = strtoul(end + 1, &end, 10);
    if (*end || max_sessions == 0 || max_rw == 0 || max_sessions > MAX_OPEN) {
        fprintf(stderr, "p11shim: KV_SHIM_SESSIONS '%s': not N or N/R (1 to %d)\n", env,
                MAX_OPEN);
        return -1;
    }
    return 0;
}

/* (with the lock) every session is gone: a replug, C_CloseAllSessions */
static void sessions_forget_locked(void)
{
    nopened = nopened_rw = 0;
}

static void sessions_forget(void)
{
    pthread_mutex_lock(&lock);
    sessions_forget_locked();
    pthread_mutex_unlock(&lock);
}

static void read_control(char *buf, int len)
{
    const char *path = getenv("KV_SHIM_CONTROL");
    FILE *f = path ? fopen(path, "r") : NULL;

    buf[0] = '\0';
    if (f) {
        if (!fgets(buf, len, f))
            buf[0] = '\0';
        fclose(f);
    }
}

static int control_is(const char *word)
{
    char buf[32];

    read_control(buf, sizeof(buf));
    return strncmp(buf, word, strlen(word)) == 0;
}

static int removed(void)
{
    char buf[32];
    int now;

    read_control(buf, sizeof(buf));
    now = strncmp(buf, "removed", 7) == 0;
    pthread_mutex_lock(&lock);
    if (was_removed && !now) {
        /* plugged back in: every session of the old insertion is gone */
        CK_SLOT_ID slots[16];
        CK_ULONG n = 16;
        if (real->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK)
            for (CK_ULONG i = 0; i < n; i++)
                real->C_CloseAllSessions(slots[i]);
        sessions_forget_locked();
    }
    was_removed = now;
    pthread_mutex_unlock(&lock);
    return now;
}

static CK_RV shim_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    FAULT("C_GetSlotList");
    if (removed() && present) {
        *count = 0;
        return CKR_OK;
    }
    return real->C_GetSlotList(present, list, count);
}

static CK_RV shim_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    CK_RV rv;

    FAULT("C_GetTokenInfo");
    if (control_is("info-fails"))
        return CKR_FUNCTION_FAILED;
    rv = removed() ? CKR_TOKEN_NOT_PRESENT : real->C_GetTokenInfo(slot, info);
    if (rv == CKR_OK && max_sessions) {
        pthread_mutex_lock(&lock);
        info->ulMaxSessionCount = max_sessions;
        info->ulMaxRwSessionCount = max_rw;
        info->ulSessionCount = nopened;
        info->ulRwSessionCount = nopened_rw;
        pthread_mutex_unlock(&lock);
    }
    return rv;
}

static CK_RV shim_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                              CK_SESSION_HANDLE_PTR h)
{
    int rw = (flags & CKF_RW_SESSION) != 0;
    CK_RV rv;

    FAULT("C_OpenSession");
    if (removed())
        return CKR_TOKEN_NOT_PRESENT;
    if (!max_sessions)
        return real->C_OpenSession(slot, flags, app, notify, h);
    /* the lock held through the call: two threads never both take the
     * last place */
    pthread_mutex_lock(&lock);
    if (nopened >= max_sessions || (rw && nopened_rw >= max_rw)) {
        pthread_mutex_unlock(&lock);
        fault_log("C_OpenSession", "CKR_SESSION_COUNT");
        return CKR_SESSION_COUNT;
    }
    rv = real->C_OpenSession(slot, flags, app, notify, h);
    if (rv == CKR_OK) {
        opened[nopened].h = *h;
        opened[nopened].rw = rw;
        nopened++;
        nopened_rw += rw;
    }
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV shim_Login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    const char *path = getenv("KV_SHIM_CALLS");
    CK_RV rv = fault("C_Login");
    FILE *f;

    if (rv == CKR_OK)
        rv = removed() ? CKR_DEVICE_REMOVED : real->C_Login(h, type, pin, len);
    f = path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f, "C_Login 0x%lx\n", (unsigned long)rv);
        fclose(f);
    }
    return rv;
}

static CK_RV shim_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    FAULT("C_FindObjectsInit");
    return removed() ? CKR_DEVICE_REMOVED : real->C_FindObjectsInit(h, t, n);
}

/* "ec-point": the public point of each pair generated here, by CKA_ID. */
static struct {
    unsigned char id[64];
    CK_ULONG idlen;
    unsigned char point[160];
    CK_ULONG len;
} points[64];
static int npoints;

static CK_RV shim_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    FAULT("C_SignInit");
    if (removed())
        return CKR_DEVICE_REMOVED;
    if (control_is("ec-point"))
        return CKR_FUNCTION_NOT_SUPPORTED;
    return real->C_SignInit(h, m, k);
}

static CK_RV shim_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
                       CK_ULONG_PTR sl)
{
    FAULT("C_Sign");
    return removed() ? CKR_DEVICE_REMOVED : real->C_Sign(h, d, dl, s, sl);
}

static CK_RV shim_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base,
                            CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    FAULT("C_DeriveKey");
    return removed() ? CKR_DEVICE_REMOVED : real->C_DeriveKey(h, m, base, t, n, out);
}

static CK_RV shim_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                    CK_ULONG n)
{
    FAULT("C_GetAttributeValue");
    if (removed())
        return CKR_DEVICE_REMOVED;
    if (n == 1 && t[0].type == CKA_EC_POINT && control_is("ec-point")) {
        CK_OBJECT_CLASS cls = 0;
        unsigned char id[64];
        CK_ATTRIBUTE q[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, id, sizeof(id) } };
        if (real->C_GetAttributeValue(h, o, q, 2) != CKR_OK || cls != CKO_PRIVATE_KEY)
            return real->C_GetAttributeValue(h, o, t, n);
        pthread_mutex_lock(&lock);
        for (int i = 0; i < npoints; i++) {
            if (points[i].idlen != q[1].ulValueLen || memcmp(points[i].id, id, q[1].ulValueLen))
                continue;
            CK_RV rv = CKR_OK;
            if (t[0].pValue && t[0].ulValueLen < points[i].len)
                rv = CKR_BUFFER_TOO_SMALL;
            else if (t[0].pValue)
                memcpy(t[0].pValue, points[i].point, points[i].len);
            t[0].ulValueLen = points[i].len;
            pthread_mutex_unlock(&lock);
            return rv;
        }
        pthread_mutex_unlock(&lock);
    }
    if (ntampers) {
        CK_RV first = CKR_OK;
        for (CK_ULONG i = 0; i < n; i++) {
            long long r = tampered(h, o, &t[i]);
            CK_RV rv = r >= 0 ? (CK_RV)r : real->C_GetAttributeValue(h, o, &t[i], 1);
            if (first == CKR_OK)
                first = rv;
        }
        return first;
    }
    return real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV shim_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt,
                                  CK_ULONG pn, CK_ATTRIBUTE_PTR kt, CK_ULONG kn,
                                  CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
    FAULT("C_GenerateKeyPair");
    char buf[32];

    if (removed())
        return CKR_DEVICE_REMOVED;
    read_control(buf, sizeof(buf));
    if (strncmp(buf, "write-protected", 15) == 0)
        return CKR_TOKEN_WRITE_PROTECTED;
    CK_RV rv = real->C_GenerateKeyPair(h, m, pt, pn, kt, kn, pub, priv);
    if (rv == CKR_OK && strncmp(buf, "lose-public", 11) == 0)
        (void)real->C_DestroyObject(h, *pub);
    if (rv == CKR_OK && strncmp(buf, "ec-point", 8) == 0) {
        pthread_mutex_lock(&lock);
        if (npoints < 64) {
            CK_ATTRIBUTE a[] = {
                { CKA_EC_POINT, points[npoints].point, sizeof(points[0].point) },
                { CKA_ID, points[npoints].id, sizeof(points[0].id) },
            };
            if (real->C_GetAttributeValue(h, *pub, a, 2) == CKR_OK) {
                points[npoints].len = a[0].ulValueLen;
                points[npoints].idlen = a[1].ulValueLen;
                npoints++;
            }
        }
        pthread_mutex_unlock(&lock);
    }
    return rv;
}

static CK_RV shim_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE m, CK_MECHANISM_INFO_PTR info)
{
    FAULT("C_GetMechanismInfo");
    return real->C_GetMechanismInfo(slot, m, info);
}

static CK_RV shim_CloseSession(CK_SESSION_HANDLE h)
{
    CK_RV rv;

    FAULT("C_CloseSession");
    rv = real->C_CloseSession(h);
    if (rv == CKR_OK && max_sessions) {
        pthread_mutex_lock(&lock);
        for (CK_ULONG i = 0; i < nopened; i++)
            if (opened[i].h == h) {
                nopened_rw -= opened[i].rw;
                opened[i] = opened[--nopened];
                break;
            }
        pthread_mutex_unlock(&lock);
    }
    return rv;
}

static CK_RV shim_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV rv = real->C_CloseAllSessions(slot);

    if (rv == CKR_OK)
        sessions_forget();
    return rv;
}

/* The environment is read again at each initialisation the module sees, so
 * that one process (Check with CK_FORK=no, under valgrind) can run tests
 * that each set their own: p11-kit keeps the shim loaded between them. */
static CK_RV shim_Initialize(CK_VOID_PTR args)
{
    CK_RV rv = real->C_Initialize(args);
    int bad;

    if (rv != CKR_OK)
        return rv;
    pthread_mutex_lock(&lock);
    nfaults = ntampers = 0;
    max_sessions = max_rw = 0;
    seed = 1;
    sessions_forget_locked();
    bad = parse_schedule() != 0 || parse_tampers() != 0 || parse_sessions() != 0;
    pthread_mutex_unlock(&lock);
    if (bad) {
        (void)real->C_Finalize(NULL);
        return CKR_GENERAL_ERROR;
    }
    return CKR_OK;
}

static CK_RV shim_Finalize(CK_VOID_PTR reserved)
{
    CK_RV rv = real->C_Finalize(reserved);

    if (rv == CKR_OK)
        sessions_forget();
    return rv;
}

static CK_RV shim_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG max,
                              CK_ULONG_PTR n)
{
    static _Thread_local CK_OBJECT_HANDLE next = 1;
    const char *find = getenv("KV_SHIM_FIND");

    FAULT("C_FindObjects");
    if (find && !strcmp(find, "endless")) {
        if (!o || !n)
            return CKR_ARGUMENTS_BAD;
        for (CK_ULONG i = 0; i < max; i++)
            o[i] = next++;
        *n = max;
        return CKR_OK;
    }
    return real->C_FindObjects(h, o, max, n);
}

static CK_RV shim_FindObjectsFinal(CK_SESSION_HANDLE h)
{
    FAULT("C_FindObjectsFinal");
    return real->C_FindObjectsFinal(h);
}

static CK_RV shim_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                    CK_ULONG n)
{
    FAULT("C_SetAttributeValue");
    return real->C_SetAttributeValue(h, o, t, n);
}

static CK_RV shim_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                               CK_OBJECT_HANDLE_PTR o)
{
    FAULT("C_CreateObject");
    return real->C_CreateObject(h, t, n, o);
}

static CK_RV shim_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
    FAULT("C_DestroyObject");
    return real->C_DestroyObject(h, o);
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    const char *path = getenv("KV_SHIM_MODULE");
    CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
    void *dl;
    CK_RV rv;

    if (!real) {
        if (parse_schedule() != 0 || parse_tampers() != 0 || parse_sessions() != 0)
            return CKR_GENERAL_ERROR;
        if (!path || !(dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
            return CKR_GENERAL_ERROR;
        get = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(dl, "C_GetFunctionList");
        if (!get || (rv = get(&real)) != CKR_OK)
            return CKR_GENERAL_ERROR;
        shim = *real;
        shim.C_GetSlotList = shim_GetSlotList;
        shim.C_GetTokenInfo = shim_GetTokenInfo;
        shim.C_OpenSession = shim_OpenSession;
        shim.C_Login = shim_Login;
        shim.C_FindObjectsInit = shim_FindObjectsInit;
        shim.C_SignInit = shim_SignInit;
        shim.C_Sign = shim_Sign;
        shim.C_DeriveKey = shim_DeriveKey;
        shim.C_GetAttributeValue = shim_GetAttributeValue;
        shim.C_GenerateKeyPair = shim_GenerateKeyPair;
        shim.C_GetMechanismInfo = shim_GetMechanismInfo;
        shim.C_CloseSession = shim_CloseSession;
        shim.C_CloseAllSessions = shim_CloseAllSessions;
        shim.C_Initialize = shim_Initialize;
        shim.C_Finalize = shim_Finalize;
        shim.C_FindObjects = shim_FindObjects;
        shim.C_FindObjectsFinal = shim_FindObjectsFinal;
        shim.C_SetAttributeValue = shim_SetAttributeValue;
        shim.C_CreateObject = shim_CreateObject;
        shim.C_DestroyObject = shim_DestroyObject;
    }
    *list = &shim;
    return CKR_OK;
}
