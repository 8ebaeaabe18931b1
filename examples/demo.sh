#!/bin/sh
# demo.sh - the libkeyvault demo: installs what is missing, builds, then in
# a scratch directory creates a configuration and a software key store,
# generates keys, signs, verifies with the openssl command, and runs an
# ECDH between two keys showing both sides agree.
#
# No hardware is needed: the demo uses the software backend, which always
# reports itself as "software" so a verifier can refuse its keys.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)

sh tests/install-deps.sh
./autogen.sh >/dev/null 2>&1
mkdir -p build
(cd build && { [ -f Makefile ] || "$top/configure" -q; } && make -s -j"$jobs" >/dev/null)
KEYVAULT="$top/build/tools/keyvault"

demo=$(mktemp -d "${TMPDIR:-/tmp}/keyvault-demo.XXXXXX")
step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "configuration: software backend, store and passphrase file in $demo"
head -c 32 /dev/urandom | base64 >"$demo/passphrase"
chmod 600 "$demo/passphrase"
cat >"$demo/keyvault.conf" <<CONF
[keyvault]
backends = tpm, pkcs11, software

[software]
store = $demo/store
passphrase = file:$demo/passphrase
CONF
cat "$demo/keyvault.conf"
export KEYVAULT_CONF="$demo/keyvault.conf"
run "$KEYVAULT" backends

step "generate an EC P-256 signing key (falls back to software: no TPM or token configured)"
run "$KEYVAULT" keygen demo-sign --type ec-p256
run "$KEYVAULT" info demo-sign
run ls -l "$demo/store"

step "sign a message; the signature is DER, as openssl expects"
printf 'boot-time attestation nonce %s\n' "$(date +%s)" >"$demo/message"
run "$KEYVAULT" sign demo-sign -i "$demo/message" -o "$demo/message.sig"
run "$KEYVAULT" pubkey demo-sign -o "$demo/demo-sign.pub"
run "$KEYVAULT" verify demo-sign -i "$demo/message" -s "$demo/message.sig"

step "verify with the openssl command: a tool libkeyvault did not write"
run openssl dgst -sha256 -verify "$demo/demo-sign.pub" -signature "$demo/message.sig" "$demo/message"

step "the key file is standard encrypted PKCS#8: openssl reads it with the passphrase"
run openssl pkey -in "$demo/store/demo-sign.pem" -passin "file:$demo/passphrase" -pubout -out "$demo/from-file.pub"
run cmp "$demo/from-file.pub" "$demo/demo-sign.pub"

step "ECDH between two keys: each side uses its own key and the other's public key"
run "$KEYVAULT" keygen alice --type ec-p256
run "$KEYVAULT" keygen bob --type ec-p256
"$KEYVAULT" pubkey alice -o "$demo/alice.pub"
"$KEYVAULT" pubkey bob -o "$demo/bob.pub"
a=$("$KEYVAULT" ecdh alice --peer "$demo/bob.pub" --hkdf-info "demo session" --length 32)
b=$("$KEYVAULT" ecdh bob --peer "$demo/alice.pub" --hkdf-info "demo session" --length 32)
echo "alice derives: $a"
echo "bob derives:   $b"
if [ "$a" != "$b" ]; then echo "demo: the two sides disagree" >&2; exit 1; fi
echo "both sides agree on the session key"

step "keys in the store"
run "$KEYVAULT" list

rm -rf "$demo"
printf '\ndemo finished: generated 3 keys, signed and verified (libkeyvault and openssl), ECDH agreed.\n'
