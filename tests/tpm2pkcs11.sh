# tpm2pkcs11.sh - source it to get a private tpm2-pkcs11 token for one test
# run: a swtpm (tests/swtpm.sh) behind tpm2-abrmd, a tpm2-pkcs11 store made
# by tpm2_ptool, and one token in it. Sets KV_P11_MODULE, KV_P11_TOKEN,
# KV_P11_PIN, KV_P11_PINFILE, KV_P11_DIR and writes
# "$KV_P11_DIR/keyvault.conf", like softhsm.sh, plus TPM2_PKCS11_STORE and
# TPM2_PKCS11_TCTI for the module. Needs $T; the caller's EXIT trap, set
# before sourcing this, calls swtpm_cleanup.
#
# tpm2-pkcs11 keeps a primary key and the token's objects loaded: on a bare
# swtpm (three transient slots) it fails with TPM_RC 0x902, so it talks to
# the simulator through the resource manager.
. "$(dirname "$0")/swtpm.sh"
command -v tpm2_ptool >/dev/null 2>&1 || { echo "tpm2pkcs11.sh: tpm2_ptool (libtpm2-pkcs11-tools) is not installed" >&2; exit 1; }
KV_P11_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so
[ -f "$KV_P11_MODULE" ] || KV_P11_MODULE=$(find /usr/lib -name libtpm2_pkcs11.so 2>/dev/null | head -n 1)
[ -n "$KV_P11_MODULE" ] || { echo "tpm2pkcs11.sh: libtpm2_pkcs11.so (libtpm2-pkcs11-1) is not installed" >&2; exit 1; }
abrmd_start || { echo "tpm2pkcs11.sh: tpm2-abrmd did not start" >&2; cat "$KV_TPM_DIR/abrmd.log" >&2; exit 1; }
KV_P11_DIR=$T/tpm2pkcs11
mkdir -p "$KV_P11_DIR/store"
KV_P11_TOKEN=kvtpm
KV_P11_PIN=314159
KV_P11_PINFILE=$KV_P11_DIR/pin
TPM2_PKCS11_STORE=$KV_P11_DIR/store
TPM2_PKCS11_TCTI=$KV_ABRMD_TCTI
# the tests fail logins on purpose; keep tss2's logs of them out of the
# test output (libkeyvault's messages carry the CK_RV)
TSS2_LOG=all+none
export KV_P11_MODULE KV_P11_TOKEN KV_P11_PIN KV_P11_PINFILE KV_P11_DIR
export TPM2_PKCS11_STORE TPM2_PKCS11_TCTI TSS2_LOG
printf '%s\n' "$KV_P11_PIN" >"$KV_P11_PINFILE"
chmod 600 "$KV_P11_PINFILE"
{ TPM2TOOLS_TCTI=$KV_ABRMD_TCTI tpm2_ptool init &&
  TPM2TOOLS_TCTI=$KV_ABRMD_TCTI tpm2_ptool addtoken --pid 1 --label "$KV_P11_TOKEN" \
      --userpin "$KV_P11_PIN" --sopin 27182818; } >"$KV_P11_DIR/ptool.log" 2>&1 ||
    { echo "tpm2pkcs11.sh: tpm2_ptool cannot make the token" >&2; cat "$KV_P11_DIR/ptool.log" >&2; exit 1; }
. "$(dirname "$0")/p11conf.sh"
p11_write_conf
