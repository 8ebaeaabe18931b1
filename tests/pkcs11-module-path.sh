#!/bin/sh
# pkcs11-module-path.sh - a key reference cannot load code: the CLI given a
# pkcs11: URI whose module-path= names a library that p11-kit does not
# register and the configuration does not name refuses to load it (a copy
# of SoftHSM's library, the test shim, the marker module), never maps it
# (the marker module's constructor leaves no file), and loads it once the
# configuration allows it. A symlink to a registered module is that module.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
kv() { "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" "$@"; }
printf 'module path test\n' >"$T/msg"
cp "$KV_P11_MODULE" "$T/copy-of-softhsm.so"
ln -s "$KV_P11_MODULE" "$T/link-to-softhsm.so"
SHIM=${KV_BUILDDIR:-$(pwd)}/tests/.libs/p11shim.so
# p11marker's constructor creates $KV_MARKER_FILE as soon as the library is mapped
MARKER=${KV_BUILDDIR:-$(pwd)}/tests/.libs/p11marker.so
KV_MARKER_FILE=$T/marker-loaded
export KV_MARKER_FILE
# absent MESSAGE / present MESSAGE: whether the marker module was loaded
absent() { if [ -e "$KV_MARKER_FILE" ]; then not_ok "$1"; else ok "$1"; fi; }
present() { if [ -e "$KV_MARKER_FILE" ]; then ok "$1"; else not_ok "$1"; fi; }
# conf FILE [PKCS11 LINES]: a configuration with no token of its own
conf() {
    printf '[keyvault]\nbackends = pkcs11\n' >"$1"
    [ -n "${2:-}" ] && printf '[pkcs11]\n%s\n' "$2" >>"$1"
    return 0
}
uri() { echo "pkcs11:token=$KV_P11_TOKEN;object=mpkey;type=private?module-path=$1&pin-value=$KV_P11_PIN"; }

expect 0 "a key on the SoftHSM token" -- kv keygen mpkey --type ec-p256 --backend pkcs11
expect 0 "its public key" -- kv pubkey mpkey -o "$T/pub.pem"
conf "$T/bare.conf"
for lib in "$T/copy-of-softhsm.so" "$SHIM" "$MARKER"; do
    expect 1 "module-path=$(basename "$lib") is refused" -- "$KEYVAULT" -c "$T/bare.conf" sign "$(uri "$lib")" -i "$T/msg" -o "$T/sig"
    contains "$T/err" "$lib is not registered with p11-kit" "the refusal names the path"
    contains "$T/err" "allowed_modules" "the refusal says how to allow it"
    if grep -q -- "$KV_P11_PIN" "$T/err" "$T/out"; then not_ok "the PIN is not echoed"; else ok "the PIN is not echoed"; fi
done
expect 0 "a symlink to the registered module is accepted" -- "$KEYVAULT" -c "$T/bare.conf" sign "$(uri "$T/link-to-softhsm.so")" -i "$T/msg" -o "$T/sig1"
expect 0 "openssl verifies that signature" -- openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig1" "$T/msg"

conf "$T/listed.conf" "allowed_modules = /nowhere/x.so, $T/copy-of-softhsm.so"
expect 0 "the copy, once listed in allowed_modules" -- "$KEYVAULT" -c "$T/listed.conf" sign "$(uri "$T/copy-of-softhsm.so")" -i "$T/msg" -o "$T/sig2"
expect 0 "openssl verifies that signature" -- openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig2" "$T/msg"
expect 1 "the shim is still refused" -- "$KEYVAULT" -c "$T/listed.conf" sign "$(uri "$SHIM")" -i "$T/msg" -o "$T/sig"
expect 1 "the marker module is still refused" -- "$KEYVAULT" -c "$T/listed.conf" sign "$(uri "$MARKER")" -i "$T/msg" -o "$T/sig"
absent "a refused module-path= is never loaded (no marker file)"
conf "$T/any.conf" "allow_any_module = true"
expect 1 "with allow_any_module = true the marker module is tried (and is no module)" -- "$KEYVAULT" -c "$T/any.conf" sign "$(uri "$MARKER")" -i "$T/msg" -o "$T/sig"
present "with allow_any_module = true the same path is loaded (marker file written)"
expect 0 "any path with allow_any_module = true" -- "$KEYVAULT" -c "$T/any.conf" sign "$(uri "$T/copy-of-softhsm.so")" -i "$T/msg" -o "$T/sig3"
expect 0 "openssl verifies that signature" -- openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig3" "$T/msg"
finish
