# softokn.sh - source it to get a private NSS softokn key database (the
# PKCS#11 module inside libnss3) for one test run. Sets KV_P11_MODULE,
# KV_P11_INIT_ARGS, KV_P11_TOKEN, KV_P11_PIN, KV_P11_PINFILE, KV_P11_DIR and
# writes "$KV_P11_DIR/keyvault.conf" for the pkcs11 backend, like
# softhsm.sh. Needs $T (a scratch directory removed by the caller).
#
# softokn is not registered with p11-kit and cannot start without its
# database: C_Initialize needs pReserved = "configdir='sql:DIR' ..."
# (CKR_ARGUMENTS_BAD otherwise), which the configuration passes as
# [pkcs11] init_args. The key store is the slot "NSS Certificate DB"; its
# PIN is the database password.
# Without $T (a helper run directly, not sourced by a test) its NSS database
# and token files would land at the root of the file system
[ -n "${T:-}" ] && [ -d "$T" ] || { echo "softokn.sh: \$T (a scratch directory) is not set" >&2; exit 2; }
KV_P11_DIR=$T/softokn
mkdir -p "$KV_P11_DIR/db"
KV_P11_MODULE=/usr/lib/x86_64-linux-gnu/libsoftokn3.so
[ -f "$KV_P11_MODULE" ] || KV_P11_MODULE=$(find /usr/lib -name libsoftokn3.so 2>/dev/null | head -n 1)
[ -n "$KV_P11_MODULE" ] || { echo "softokn.sh: libsoftokn3.so (libnss3) is not installed" >&2; exit 1; }
command -v certutil >/dev/null 2>&1 || { echo "softokn.sh: certutil (libnss3-tools) is not installed" >&2; exit 1; }
KV_P11_TOKEN="NSS Certificate DB"
KV_P11_PIN=softokn-test-pin
KV_P11_PINFILE=$KV_P11_DIR/pin
KV_P11_INIT_ARGS="configdir='sql:$KV_P11_DIR/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
printf '%s\n' "$KV_P11_PIN" >"$KV_P11_PINFILE"
chmod 600 "$KV_P11_PINFILE"
certutil -N -d "sql:$KV_P11_DIR/db" -f "$KV_P11_PINFILE" >/dev/null ||
    { echo "softokn.sh: certutil cannot make the database" >&2; exit 1; }
export KV_P11_MODULE KV_P11_INIT_ARGS KV_P11_TOKEN KV_P11_PIN KV_P11_PINFILE KV_P11_DIR
. "$(dirname "$0")/p11conf.sh"
p11_write_conf
