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
 * When $KV_SHIM_CALLS names a file, each C_Login appends a line "C_Login
 * 0xRV" to it (the CK_RV the module returned; never the PIN), so a test can
 * count what reached the token.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int was_removed;

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
    }
    was_removed = now;
    pthread_mutex_unlock(&lock);
    return now;
}

static CK_RV shim_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    if (removed() && present) {
        *count = 0;
        return CKR_OK;
    }
    return real->C_GetSlotList(present, list, count);
}

static CK_RV shim_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    return removed() ? CKR_TOKEN_NOT_PRESENT : real->C_GetTokenInfo(slot, info);
}

static CK_RV shim_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                              CK_SESSION_HANDLE_PTR h)
{
    return removed() ? CKR_TOKEN_NOT_PRESENT : real->C_OpenSession(slot, flags, app, notify, h);
}

static CK_RV shim_Login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    const char *path = getenv("KV_SHIM_CALLS");
    CK_RV rv = removed() ? CKR_DEVICE_REMOVED : real->C_Login(h, type, pin, len);
    FILE *f = path ? fopen(path, "a") : NULL;

    if (f) {
        fprintf(f, "C_Login 0x%lx\n", (unsigned long)rv);
        fclose(f);
    }
    return rv;
}

static CK_RV shim_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    return removed() ? CKR_DEVICE_REMOVED : real->C_FindObjectsInit(h, t, n);
}

static int control_is(const char *word)
{
    char buf[32];

    read_control(buf, sizeof(buf));
    return strncmp(buf, word, strlen(word)) == 0;
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
    if (removed())
        return CKR_DEVICE_REMOVED;
    if (control_is("ec-point"))
        return CKR_FUNCTION_NOT_SUPPORTED;
    return real->C_SignInit(h, m, k);
}

static CK_RV shim_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
                       CK_ULONG_PTR sl)
{
    return removed() ? CKR_DEVICE_REMOVED : real->C_Sign(h, d, dl, s, sl);
}

static CK_RV shim_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base,
                            CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    return removed() ? CKR_DEVICE_REMOVED : real->C_DeriveKey(h, m, base, t, n, out);
}

static CK_RV shim_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                    CK_ULONG n)
{
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
    return real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV shim_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt,
                                  CK_ULONG pn, CK_ATTRIBUTE_PTR kt, CK_ULONG kn,
                                  CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
    char buf[32];

    if (removed())
        return CKR_DEVICE_REMOVED;
    read_control(buf, sizeof(buf));
    if (strncmp(buf, "write-protected", 15) == 0)
        return CKR_TOKEN_WRITE_PROTECTED;
    CK_RV rv = real->C_GenerateKeyPair(h, m, pt, pn, kt, kn, pub, priv);
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

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    const char *path = getenv("KV_SHIM_MODULE");
    CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
    void *dl;
    CK_RV rv;

    if (!real) {
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
    }
    *list = &shim;
    return CKR_OK;
}
