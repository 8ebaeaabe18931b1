#!/bin/sh
# pkcs11-tool.sh - interop with OpenSC's pkcs11-tool, in both directions,
# on a fresh SoftHSMv2 token: keys libkeyvault makes look right to
# pkcs11-tool, and keys pkcs11-tool makes work in libkeyvault.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
kv() { "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" "$@"; }
p11() { pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_P11_TOKEN" "$@"; }
p11login() { p11 --login --pin "$KV_P11_PIN" "$@"; }
printf 'interop message\n' >"$T/msg"
openssl dgst -sha256 -binary "$T/msg" >"$T/msg.sha256"

# --- libkeyvault -> pkcs11-tool ---------------------------------------------
expect 0 "keyvault keygen on the token" -- kv keygen kvkey --type ec-p256 --backend pkcs11
contains "$T/out" "assurance: token" "the key is token-backed"
expect 0 "pkcs11-tool lists the private key" -- p11login --list-objects --type privkey
cp "$T/out" "$T/privlist"
contains "$T/privlist" "label:      kvkey" "pkcs11-tool sees label kvkey"
contains "$T/privlist" "sensitive" "the private key is sensitive"
contains "$T/privlist" "never extractable" "the private key was never extractable"
expect 0 "pkcs11-tool lists the public key" -- p11 --list-objects --type pubkey
contains "$T/out" "kvkey" "a public key object has the same label"
# (that CKA_VALUE cannot be read is checked with raw PKCS#11 in check_pkcs11.c)
expect 0 "pkcs11-tool reads the public key" -- p11 --read-object --type pubkey --label kvkey -o "$T/p11pub.der"
expect 0 "keyvault exports the public key" -- kv pubkey kvkey -o "$T/kvpub.pem"
openssl pkey -pubin -inform DER -in "$T/p11pub.der" -out "$T/p11pub.pem" 2>/dev/null
expect 0 "both tools give the same public key" -- cmp "$T/p11pub.pem" "$T/kvpub.pem"
expect 0 "pkcs11-tool signs with our key" -- p11login --sign --mechanism ECDSA --label kvkey \
    --input-file "$T/msg.sha256" --output-file "$T/p11.sig" --signature-format openssl
expect 0 "keyvault verifies pkcs11-tool's signature" -- kv verify kvkey -i "$T/msg" -s "$T/p11.sig"
expect 0 "keyvault signs" -- kv sign kvkey -i "$T/msg" -o "$T/kv.sig"
expect 0 "pkcs11-tool verifies keyvault's signature" -- p11 --verify --mechanism ECDSA --label kvkey \
    --input-file "$T/msg.sha256" --signature-file "$T/kv.sig" --signature-format openssl
expect 0 "openssl verifies keyvault's signature" -- openssl dgst -sha256 -verify "$T/kvpub.pem" -signature "$T/kv.sig" "$T/msg"

# --- pkcs11-tool -> libkeyvault ---------------------------------------------
expect 0 "pkcs11-tool generates an EC key" -- p11login --keypairgen --key-type EC:prime256v1 --id 0a0b0c --label extkey
expect 0 "keyvault opens it by name" -- kv info extkey
contains "$T/out" "backend:   pkcs11" "the external key is on the token"
expect 0 "keyvault signs with it by URI (id only)" -- kv sign "pkcs11:token=$KV_P11_TOKEN;id=%0a%0b%0c;type=private" -i "$T/msg" -o "$T/ext.sig"
p11 --read-object --type pubkey --id 0a0b0c -o "$T/ext.der" >/dev/null 2>&1
openssl pkey -pubin -inform DER -in "$T/ext.der" -out "$T/ext.pem" 2>/dev/null
expect 0 "openssl verifies the signature with pkcs11-tool's public key" -- openssl dgst -sha256 -verify "$T/ext.pem" -signature "$T/ext.sig" "$T/msg"
expect 0 "pkcs11-tool generates an RSA key" -- p11login --keypairgen --key-type rsa:2048 --id 0d0e --label extrsa
expect 0 "keyvault signs RSA-PSS with it" -- kv sign extrsa -i "$T/msg" -o "$T/rsa.sig"
p11 --read-object --type pubkey --id 0d0e -o "$T/rsa.der" >/dev/null 2>&1
openssl pkey -pubin -inform DER -in "$T/rsa.der" -out "$T/rsa.pem" 2>/dev/null
expect 0 "openssl verifies it" -- openssl dgst -sha256 -verify "$T/rsa.pem" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -signature "$T/rsa.sig" "$T/msg"
expect 0 "keyvault signs RSA PKCS#1 v1.5 with it" -- kv sign extrsa --alg rsa-pkcs1-sha256 -i "$T/msg" -o "$T/rsa1.sig"
expect 0 "openssl verifies that too" -- openssl dgst -sha256 -verify "$T/rsa.pem" -signature "$T/rsa1.sig" "$T/msg"
expect 0 "ECDH: keyvault and openssl agree" -- kv ecdh extkey --peer "$T/kvpub.pem" -o "$T/z1"
expect 0 "ECDH from the other side" -- kv ecdh kvkey --peer "$T/ext.pem" -o "$T/z2"
expect 0 "both token keys derive the same secret" -- cmp "$T/z1" "$T/z2"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/eph.key" 2>/dev/null
openssl pkey -in "$T/eph.key" -pubout -out "$T/eph.pub"
openssl pkeyutl -derive -inkey "$T/eph.key" -peerkey "$T/kvpub.pem" -out "$T/z-ossl"
expect 0 "ECDH with an openssl key" -- kv ecdh kvkey --peer "$T/eph.pub" -o "$T/z-kv"
expect 0 "the token and openssl derive the same secret" -- cmp "$T/z-ossl" "$T/z-kv"

# --- a certificate stored by keyvault is a token object pkcs11-tool reads ----
openssl req -new -x509 -days 1 -subj /CN=ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null
openssl x509 -new -subj /CN=kvkey -force_pubkey "$T/kvpub.pem" -CA "$T/ca.crt" -CAkey "$T/ca.key" \
    -days 1 -out "$T/kv.crt" 2>/dev/null
expect 0 "keyvault stores a certificate on the token" -- kv cert kvkey --import "$T/kv.crt"
expect 0 "pkcs11-tool reads it by the key's CKA_ID" -- p11 --read-object --type cert --label kvkey -o "$T/p11.crt.der"
openssl x509 -inform DER -in "$T/p11.crt.der" -out "$T/p11.crt" 2>/dev/null
expect 0 "the token holds the certificate keyvault stored" -- cmp "$T/p11.crt" "$T/kv.crt"
p11 --list-objects --type cert >"$T/certs" 2>&1
p11login --list-objects --type privkey >"$T/keys" 2>&1
cid=$(sed -n 's/^ *ID: *//p' "$T/certs" | head -n 1)
grep -q "ID: *$cid" "$T/keys" && ok "certificate and key share a CKA_ID" || not_ok "certificate and key share a CKA_ID"

# --- a key created at an explicit pkcs11: URI, with no configuration file ----
kvbare() { env -u KEYVAULT_CONF KEYVAULT_HOME="$T/home" "$KEYVAULT" "$@"; }
aturi="pkcs11:token=$KV_P11_TOKEN;object=aturi?module-path=$KV_P11_MODULE&pin-value=$KV_P11_PIN"
expect 0 "keygen at a pkcs11: URI, no configuration" -- kvbare keygen "$aturi" --type ec-p256
contains "$T/out" "object=aturi" "the new key's URI is printed"
if grep -q "pin-value" "$T/out" "$T/err"; then not_ok "the PIN is not printed"; else ok "the PIN is not printed"; fi
expect 0 "pkcs11-tool lists it" -- p11login --list-objects --type privkey
awk '/label: *aturi$/ { f = 1 } f && /Access:/ { print; exit }' "$T/out" >"$T/ataccess"
contains "$T/ataccess" "sensitive" "the key made at a URI is sensitive"
contains "$T/ataccess" "never extractable" "the key made at a URI was never extractable"
expect 0 "sign with it by its URI" -- kvbare sign "$aturi" -i "$T/msg" -o "$T/at.sig"
expect 0 "pkcs11-tool reads its public key" -- p11 --read-object --type pubkey --label aturi -o "$T/at.der"
openssl pkey -pubin -inform DER -in "$T/at.der" -out "$T/at.pem" 2>/dev/null
expect 0 "openssl verifies with the public key pkcs11-tool read" -- openssl dgst -sha256 -verify "$T/at.pem" -signature "$T/at.sig" "$T/msg"
expect 1 "never twice at one place" -- kvbare keygen "$aturi"
contains "$T/err" "already exists" "it says the key exists"
if grep -q "$KV_P11_PIN" "$T/err"; then not_ok "the PIN is not in the error"; else ok "the PIN is not in the error"; fi
expect 2 "--backend does not go with a URI" -- kvbare keygen "$aturi" --backend software
expect 0 "destroy it by its URI" -- kvbare destroy "pkcs11:token=$KV_P11_TOKEN;object=aturi?module-path=$KV_P11_MODULE&pin-source=file:$KV_P11_PINFILE"

# --- destroy removes the whole pair -------------------------------------------
expect 0 "keyvault destroy" -- kv destroy kvkey
expect 0 "pkcs11-tool lists objects" -- p11login --list-objects
if grep -q "kvkey" "$T/out"; then not_ok "no object labelled kvkey is left"; else ok "no object labelled kvkey is left"; fi
contains "$T/out" "extkey" "the other keys are untouched"
finish
