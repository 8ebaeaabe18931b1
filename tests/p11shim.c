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
 * as on a read-only token.
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
    return removed() ? CKR_DEVICE_REMOVED : real->C_Login(h, type, pin, len);
}

static CK_RV shim_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    return removed() ? CKR_DEVICE_REMOVED : real->C_FindObjectsInit(h, t, n);
}

static CK_RV shim_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    return removed() ? CKR_DEVICE_REMOVED : real->C_SignInit(h, m, k);
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
    return removed() ? CKR_DEVICE_REMOVED : real->C_GetAttributeValue(h, o, t, n);
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
    return real->C_GenerateKeyPair(h, m, pt, pn, kt, kn, pub, priv);
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
