#!/bin/sh
# pkcs11-softokn.sh - the PKCS#11 backend on NSS softokn, a module nobody
# here wrote: the API tests (check_api), the module-independent PKCS#11
# tests (check_pkcs11, case "module"), and NSS's certutil seeing what the
# CLI made. softokn 3.87 has no EdDSA (KV_TEST_NO_ED25519: Ed25519 must be
# refused as unsupported); it has ECDH and serves a forked child.
. "$(dirname "$0")/lib.sh"
# The module, its stack and SQLite allocate heavily: under AddressSanitizer the
# slow unwinder, which alone lets tests/lsan.supp recognise a module's leaks,
# made this script take ten minutes. So the suite's fast unwinder serves here,
# memory errors are still caught, and leaks are not looked for: the same
# library code is leak-checked in the SoftHSM runs, and these modules' own
# leaks are not ours to fix.
case "${ASAN_OPTIONS:-}" in
*fast_unwind_on_malloc=*)
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
    export ASAN_OPTIONS
    ;;
esac
. "$(dirname "$0")/softokn.sh"
B=${KV_BUILDDIR:-$(pwd)}
kv() { "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" "$@"; }
nss() { certutil -d "sql:$KV_P11_DIR/db" -f "$KV_P11_PINFILE" "$@"; }
# run_check DESCRIPTION -- COMMAND...: a Check program, its summary and notes shown
run_check() {
    _failed=$fail
    expect 0 "$@"
    [ "$fail" = "$_failed" ] && grep -v '^Running suite' "$T/out" | sed 's/^/    /'
}

run_check "check_api on softokn" -- env KV_TEST_BACKEND=pkcs11 KV_TEST_NO_ED25519=1 \
    KV_TEST_CONF="$KV_P11_DIR/keyvault.conf" "$B/tests/check_api"
run_check "check_pkcs11 (module) on softokn" -- env CK_RUN_CASE=module KV_BUILDDIR="$B" \
    "$B/tests/check_pkcs11"

printf 'signed in softokn\n' >"$T/msg"
expect 0 "keygen on softokn" -- kv keygen nsskey --type ec-p256 --backend pkcs11
contains "$T/out" "assurance: token" "the key is token-backed"
expect 0 "certutil lists the key" -- nss -K
contains "$T/out" "nsskey" "certutil names nsskey"
expect 0 "sign" -- kv sign nsskey -i "$T/msg" -o "$T/sig"
expect 0 "pubkey" -- kv pubkey nsskey -o "$T/pub.pem"
expect 0 "openssl verifies the signature" -- openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
openssl req -new -x509 -days 1 -subj /CN=ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null
for cn in one two; do
    openssl x509 -new -subj "/CN=$cn" -force_pubkey "$T/pub.pem" -CA "$T/ca.crt" -CAkey "$T/ca.key" \
        -days 1 -out "$T/$cn.crt" 2>/dev/null
done
expect 0 "a certificate stored with the key" -- kv cert nsskey --import "$T/one.crt"
expect 0 "the same certificate again" -- kv cert nsskey --import "$T/one.crt"
expect 0 "one with another subject replaces it" -- kv cert nsskey --import "$T/two.crt"
expect 0 "certutil lists the certificates" -- nss -L
contains "$T/out" "nsskey" "certutil sees the certificate under the key's name"
[ "$(grep -c nsskey "$T/out")" = 1 ] && ok "exactly one certificate is left" || not_ok "exactly one certificate is left"
expect 0 "the stored certificate reads back" -- kv cert nsskey -o "$T/back.crt"
expect 0 "it is the second one" -- cmp "$T/back.crt" "$T/two.crt"
expect 0 "destroy" -- kv destroy nsskey
nss -K >"$T/out" 2>&1 # (exit 255 when no key is left)
if grep -q nsskey "$T/out"; then not_ok "certutil no longer lists nsskey"; else ok "certutil no longer lists nsskey"; fi

# --- softokn registered with p11-kit, its init string as x-init-reserved ------
# p11-kit reads per-user module files except as root: as root, this part
# runs as nobody, on a database of its own.
U=$T/registered
mkdir -p "$U/home/.config/pkcs11/modules" "$U/db" "$U/kvhome"
printf '%s\n' "$KV_P11_PIN" >"$U/pin"
chmod 600 "$U/pin"
certutil -N -d "sql:$U/db" -f "$U/pin" >/dev/null
cat >"$U/home/.config/pkcs11/modules/kvsoftokn.module" <<CONF
module: $KV_P11_MODULE
x-init-reserved: configdir='sql:$U/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags=
CONF
printf '[keyvault]\nbackends = pkcs11\n[pkcs11]\nmodule = kvsoftokn\ntoken = %s\npin = file:%s\n' \
    "$KV_P11_TOKEN" "$U/pin" >"$U/byname.conf"
printf '[keyvault]\nbackends = pkcs11\n' >"$U/bare.conf"
# softokn never frees what its C_Initialize allocates; loaded by name,
# p11-kit unloads it at exit, and LeakSanitizer (whose reports cannot name
# an unloaded library) then counts that as leaked: no leak check here (the
# by-name route is leak-checked on SoftHSM in check_pkcs11).
nolsan="ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0"
# the user's own KEYVAULT_HOME (lib.sh's $T/home is root's when root runs this)
as_user() { env HOME="$U/home" KEYVAULT_HOME="$U/kvhome" "$nolsan" "$@"; }
if [ "$(id -u)" = 0 ]; then
    chmod 755 "$T"
    chown -R 65534:65534 "$U"
    as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$U/home" KEYVAULT_HOME="$U/kvhome" "$nolsan" "$@"; }
fi
expect 0 "softokn by its p11-kit name, x-init-reserved from its module file" -- \
    as_user "$KEYVAULT" -c "$U/byname.conf" keygen regkey --type ec-p256 --backend pkcs11
expect 0 "by a module-path= that p11-kit registers" -- as_user "$KEYVAULT" -c "$U/bare.conf" \
    sign "pkcs11:token=NSS%20Certificate%20DB;object=regkey;type=private?module-path=$KV_P11_MODULE&pin-source=file:$U/pin" \
    -i "$T/msg" -o "$U/regsig"
expect 0 "its public key" -- as_user "$KEYVAULT" -c "$U/byname.conf" pubkey regkey -o "$U/regkey.pem"
expect 0 "openssl verifies the signature" -- openssl dgst -sha256 -verify "$U/regkey.pem" -signature "$U/regsig" "$T/msg"
expect 1 "the same path unregistered (no module file) is refused" -- env HOME="$T/nohome" \
    "$KEYVAULT" -c "$U/bare.conf" info "pkcs11:token=NSS%20Certificate%20DB;object=regkey;type=private?module-path=$KV_P11_MODULE"
contains "$T/err" "not registered with p11-kit" "the refusal says why"
finish
