#!/bin/sh
# tpm-tools.sh - the TPM backend through the keyvault CLI, cross-checked
# with tools nobody here wrote: tpm2_checkquote, openssl, and openssl with
# tpm2-openssl's provider, on a fresh swtpm.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
kv() { "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" "$@"; }
export TPM2OPENSSL_TCTI="$KV_TPM_TCTI"
printf 'measured boot report\n' >"$T/msg"

expect 0 "keygen on the TPM" -- kv keygen dev --type ec-p256
contains "$T/out" "assurance: tpm" "the key is TPM-backed"
expect 0 "sign" -- kv sign dev -i "$T/msg" -o "$T/sig"
expect 0 "pubkey" -- kv pubkey dev -o "$T/dev.pub"
expect 0 "openssl verifies the TPM signature" -- openssl dgst -sha256 -verify "$T/dev.pub" -signature "$T/sig" "$T/msg"
expect 0 "tpm2-openssl reads the key file" -- openssl pkey -provider tpm2 -provider default -in "$KV_TPM_DIR/keys/dev.pem" -pubout -out "$T/prov.pub"
expect 0 "and finds the same public key" -- cmp "$T/prov.pub" "$T/dev.pub"
expect 0 "KEYVAULT_TCTI and KEYVAULT_HOME are enough" -- env -u KEYVAULT_CONF KEYVAULT_HOME="$T/home" KEYVAULT_TCTI="$KV_TPM_TCTI" "$KEYVAULT" keygen envkey --backend tpm
[ -f "$T/home/tpm/envkey.pem" ] && ok "the key file went under KEYVAULT_HOME" || not_ok "the key file went under KEYVAULT_HOME"

# a key made at an explicit place, with no configuration file
expect 0 "keygen at tpm2:file= with KEYVAULT_TCTI alone" -- env -u KEYVAULT_CONF KEYVAULT_HOME="$T/home" KEYVAULT_TCTI="$KV_TPM_TCTI" "$KEYVAULT" keygen "tpm2:file=$T/at/atkey.pem" --type ec-p256
contains "$T/out" "tpm2:file=$T/at/atkey.pem" "the new key's URI is printed"
expect 0 "tpm2-openssl reads the key made at a URI" -- openssl pkey -provider tpm2 -provider default -in "$T/at/atkey.pem" -pubout -out "$T/at.prov.pub"
expect 0 "sign with it by its URI" -- kv sign "tpm2:file=$T/at/atkey.pem" -i "$T/msg" -o "$T/at.sig"
expect 0 "openssl verifies it with tpm2-openssl's public key" -- openssl dgst -sha256 -verify "$T/at.prov.pub" -signature "$T/at.sig" "$T/msg"
expect 1 "never twice at one place" -- kv keygen "tpm2:file=$T/at/atkey.pem"
contains "$T/err" "already exists" "it says the key exists"
expect 1 "no Ed25519 on the TPM" -- kv keygen edkey --type ed25519 --backend tpm
contains "$T/err" "backend 'tpm' cannot hold ed25519" "the TPM says it cannot hold Ed25519"
expect 0 "Ed25519 with no backend named goes to one that can hold it" -- kv keygen edkey --type ed25519
contains "$T/out" "backend software" "that is the software backend"

# ECDH: the TPM and openssl agree
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/eph.key" 2>/dev/null
openssl pkey -in "$T/eph.key" -pubout -out "$T/eph.pub"
openssl pkeyutl -derive -inkey "$T/eph.key" -peerkey "$T/dev.pub" -out "$T/z-ossl"
expect 0 "ECDH in the TPM" -- kv ecdh dev --peer "$T/eph.pub" -o "$T/z-tpm"
expect 0 "the TPM and openssl derive the same secret" -- cmp "$T/z-ossl" "$T/z-tpm"

# attestation
expect 0 "attestation key" -- kv tpm ak -o "$T/ak.pem"
expect 0 "the same attestation key next time" -- kv tpm ak -o "$T/ak2.pem"
expect 0 "AK is kept" -- cmp "$T/ak.pem" "$T/ak2.pem"
expect 0 "quote" -- kv tpm quote --nonce 00112233445566778899 --pcrs sha256:0-7 -m "$T/q.msg" -s "$T/q.sig" --sig-der "$T/q.der"
expect 0 "tpm2_checkquote accepts the quote" -- tpm2_checkquote -u "$T/ak.pem" -m "$T/q.msg" -s "$T/q.sig" -q 00112233445566778899 -g sha256
expect 1 "tpm2_checkquote refuses another nonce" -- tpm2_checkquote -u "$T/ak.pem" -m "$T/q.msg" -s "$T/q.sig" -q 00112233445566778800 -g sha256
expect 0 "openssl verifies the quote signature (DER)" -- openssl dgst -sha256 -verify "$T/ak.pem" -signature "$T/q.der" "$T/q.msg"
expect 0 "certify the device key" -- kv tpm certify dev --nonce cafe -m "$T/c.msg" -s "$T/c.sig" --sig-der "$T/c.der"
expect 0 "openssl verifies the certification" -- openssl dgst -sha256 -verify "$T/ak.pem" -signature "$T/c.der" "$T/c.msg"
expect 0 "EK certificate" -- kv tpm ek-cert -o "$T/ek.pem"
expect 0 "the EK certificate chains to the simulator's CA" -- openssl verify -partial_chain -CAfile "$KV_TPM_DIR/localca/issuercert.pem" "$T/ek.pem"
expect 0 "PCR 16 read" -- kv tpm pcr-read 16
cp "$T/out" "$T/pcr.before"
expect 0 "PCR 16 extend" -- kv tpm pcr-extend 16 --digest "$(printf 'boot stage' | openssl dgst -sha256 -r | cut -c1-64)"
expect 0 "PCR 16 read again" -- kv tpm pcr-read 16
if cmp -s "$T/out" "$T/pcr.before"; then not_ok "the PCR changed"; else ok "the PCR changed"; fi
# (that the new value is SHA-256(old || measurement) is checked in check_tpm.c)
expect 2 "a bad PCR index is a usage error" -- kv tpm pcr-read 24
expect 1 "a bad PCR selection" -- kv tpm quote --nonce 00 --pcrs sha999:0 -m "$T/x" -s "$T/y"
contains "$T/err" "unknown bank" "the error names the bank"
finish
