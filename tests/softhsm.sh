# softhsm.sh - source it to get a private SoftHSMv2 token for one test run.
# Sets SOFTHSM2_CONF, KV_P11_MODULE, KV_P11_TOKEN, KV_P11_PIN, KV_P11_PINFILE,
# and writes "$KV_P11_DIR/keyvault.conf" for the pkcs11 backend. Needs $T
# (a scratch directory removed by the caller) or makes its own.
KV_P11_DIR=${T:-$(mktemp -d "${TMPDIR:-/tmp}/kvp11.XXXXXX")}/softhsm
# libkeyvault's own files (the creation lock) stay in the scratch directory
KEYVAULT_HOME=${KEYVAULT_HOME:-$KV_P11_DIR/home}
export KEYVAULT_HOME
mkdir -p "$KV_P11_DIR/tokens"
KV_P11_MODULE=${KV_P11_MODULE:-/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so}
[ -f "$KV_P11_MODULE" ] || KV_P11_MODULE=$(find /usr/lib -name libsofthsm2.so 2>/dev/null | head -n 1)
KV_P11_TOKEN=kvtest
KV_P11_PIN=123456
KV_P11_SOPIN=12345678
KV_P11_PINFILE=$KV_P11_DIR/pin
cat >"$KV_P11_DIR/softhsm2.conf" <<CONF
directories.tokendir = $KV_P11_DIR/tokens
objectstore.backend = file
log.level = ERROR
CONF
SOFTHSM2_CONF=$KV_P11_DIR/softhsm2.conf
export SOFTHSM2_CONF KV_P11_MODULE KV_P11_TOKEN KV_P11_PIN KV_P11_PINFILE KV_P11_DIR
printf '%s\n' "$KV_P11_PIN" >"$KV_P11_PINFILE"
chmod 600 "$KV_P11_PINFILE"
softhsm2-util --init-token --free --label "$KV_P11_TOKEN" --so-pin "$KV_P11_SOPIN" \
    --pin "$KV_P11_PIN" >/dev/null || { echo "softhsm.sh: cannot initialise a SoftHSM token" >&2; exit 1; }
cat >"$KV_P11_DIR/keyvault.conf" <<CONF
[keyvault]
backends = pkcs11, software

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE

[software]
store = $KV_P11_DIR/soft
passphrase = file:$KV_P11_PINFILE
kdf_iterations = 1000
CONF
