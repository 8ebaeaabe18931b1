/*
 * p11marker.c - a module that proves it was loaded: its constructor runs
 * when the shared library is mapped (before any PKCS#11 call) and creates
 * the file named by $KV_MARKER_FILE. A refused module-path= must leave no
 * such file. It is no working module: C_GetFunctionList fails.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <p11-kit/pkcs11.h>

__attribute__((constructor)) static void mark_loaded(void)
{
    const char *path = getenv("KV_MARKER_FILE");
    int fd;

    if (!path || !*path)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, "loaded\n", 7) != 7)
            (void)unlink(path);
        (void)close(fd);
    }
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list)
        *list = NULL;
    return CKR_GENERAL_ERROR;
}
