#!/bin/sh
# attest.sh - evidence on the three backends, checked with tools nobody here
# wrote: check_evidence against SoftHSM and swtpm; then, from the CLI, the
# quote inside the evidence through tpm2_checkquote, the certify signature
# and the proof of possession through openssl, and the WebAuthn registration
# through @simplewebauthn/server (node) with the enrollment CA's root as its
# only TPM root, which must also reject a copy with one byte of certInfo
# changed. tests/install-deps.sh installs node and the package.
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$SRC/tests/softhsm.sh"
. "$SRC/tests/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
KV_NPM_DIR=${KV_NPM_DIR:-/var/cache/libkeyvault-npm}
export KV_NPM_DIR

# ---- the unit tests on software, SoftHSM and swtpm ------------------------------
# (their TPM keys, and their AK with its chain, in a store of their own)
sed "s|^keys = .*|keys = $T/unit-tpm|" "$KV_TPM_DIR/keyvault.conf" >"$T/unit-tpm.conf"
if KV_EVIDENCE_P11_CONF=$KV_P11_DIR/keyvault.conf KV_EVIDENCE_TPM_CONF=$T/unit-tpm.conf \
    "${KV_BUILDDIR:-.}/tests/check_evidence" >"$T/check.log" 2>&1; then
    ok "check_evidence on software, SoftHSM and swtpm"
else
    not_ok "check_evidence on software, SoftHSM and swtpm"; sed 's/^/    /' "$T/check.log"
fi
grep 'TPM commands per kv_attest' "$T/check.log" | sed 's/^/# /'

k() { "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" "$@"; }
# b64u FILE JQPATH: the base64url field decoded to standard output
b64u() {
    jq -r "$2" "$1" | tr '_-' '/+' | awk '{ while (length($0) % 4) $0 = $0 "="; print }' | base64 -d
}
unhex() { tr a-f A-F | basenc --base16 -d; }
N=$(openssl rand -hex 32)
CH=$(printf '%s' "$N" | unhex | basenc --base64url -w0 | tr -d '=')

expect 0 "a TPM identity key" -- k keygen dev -t ec-p256 -b tpm
expect 0 "keyvault attest writes the evidence" -- k attest dev --nonce "$N" -o "$T/ev.json"
# tpm2-tools 5.4's tpm2_checkquote cannot take a values file of 8 or more PCRs
# (tpm2-tools issue 3542): the quote it checks covers seven
expect 0 "keyvault attest --pcrs sha256:0-6" -- \
    k attest dev --nonce "$N" --pcrs sha256:0-6 -o "$T/ev7.json"
expect 0 "the AK's public key" -- k tpm ak -o "$T/ak.pem"
expect 2 "attest without a nonce is a usage error" -- k attest dev -o "$T/x.json"
expect 1 "a nonce of 8 bytes is refused" -- k attest dev --nonce 0011223344556677 -o "$T/x.json"
contains "$T/err" "16 to 64 bytes" "the refusal names the nonce bounds"

# ---- the quote, through tpm2_checkquote ----------------------------------------------
b64u "$T/ev7.json" .tpm.quote.attest >"$T/quote.msg"
b64u "$T/ev7.json" .tpm.quote.signature >"$T/quote.sig"
: >"$T/pcrs.bin"
for i in 0 1 2 3 4 5 6; do
    jq -r ".tpm.quote.pcrs.sha256[\"$i\"]" "$T/ev7.json" | unhex >>"$T/pcrs.bin"
done
checkquote() {
    tpm2_checkquote -u "$T/ak.pem" -m "$T/quote.msg" -s "$T/quote.sig" -f "$1" \
        -l sha256:0,1,2,3,4,5,6 -q "$2" -g sha256
}
expect 0 "tpm2_checkquote verifies the quote, its nonce and the PCR values" -- \
    checkquote "$T/pcrs.bin" "$N"
expect 1 "tpm2_checkquote refuses another nonce" -- checkquote "$T/pcrs.bin" "$(openssl rand -hex 32)"
{ printf '\001'; tail -c +2 "$T/pcrs.bin"; } >"$T/pcrs-edited.bin"
expect 1 "tpm2_checkquote refuses an edited PCR value" -- checkquote "$T/pcrs-edited.bin" "$N"

# ---- the certify signature and the proof of possession, through openssl --------------
b64u "$T/ev.json" .tpm.certify.attest >"$T/certify.msg"
b64u "$T/ev.json" .tpm.certify.signature | basenc --base16 -w0 >"$T/certify.sig.hex"
# TPMT_SIGNATURE (ECDSA): sigAlg, hashAlg, r (size, bytes), s (size, bytes) -> DER
h=$(cat "$T/certify.sig.hex")
rlen=$(( 0x$(echo "$h" | cut -c9-12) * 2 ))
r=$(echo "$h" | cut -c13-$((12 + rlen)))
s=$(echo "$h" | cut -c$((17 + rlen))-)
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "$r" "$s" >"$T/sig.cnf"
openssl asn1parse -genconf "$T/sig.cnf" -out "$T/certify.sig.der" -noout
[ "$(echo "$h" | cut -c1-8)" = 0018000B ] && ok "the certify signature is ECDSA with SHA-256" ||
    not_ok "the certify signature is ECDSA with SHA-256 ($(echo "$h" | cut -c1-8))"
expect 0 "openssl verifies the AK's certify signature" -- \
    openssl dgst -sha256 -verify "$T/ak.pem" -signature "$T/certify.sig.der" "$T/certify.msg"
{ head -c 20 "$T/certify.msg"; printf 'X'; tail -c +22 "$T/certify.msg"; } >"$T/certify-edited.msg"
expect 1 "openssl refuses the certify signature over an edited certInfo" -- \
    openssl dgst -sha256 -verify "$T/ak.pem" -signature "$T/certify.sig.der" "$T/certify-edited.msg"
# tpm2_print 5.4 prints a certification's header, then gives up on its body
tpm2_print -t TPMS_ATTEST "$T/certify.msg" >"$T/print.out" 2>&1
contains "$T/print.out" "magic: ff544347" "tpm2_print: the certification is TPM-generated"
contains "$T/print.out" "type: 8017" "tpm2_print: it is a TPM2_Certify attestation"
contains "$T/print.out" "extraData: $N" "tpm2_print: its extraData is the nonce"

# pop_verifies EVIDENCE PUBKEY: the documented construction, by hand
pop_verifies() {
    jq -cS 'del(.pop)' "$1" | tr -d '\n' | openssl dgst -sha256 -binary >"$T/pop.h"
    { printf 'keyvault-evidence-pop-v1\0'; cat "$T/pop.h"; } >"$T/pop.msg"
    b64u "$1" .pop.signature >"$T/pop.sig"
    openssl dgst -sha256 -verify "$2" -signature "$T/pop.sig" "$T/pop.msg"
}
expect 0 "the identity key's public key" -- k pubkey dev -o "$T/dev.pem"
expect 0 "openssl verifies the proof of possession over the documented bytes" -- \
    pop_verifies "$T/ev.json" "$T/dev.pem"
jq '.created = "2000-01-01T00:00:00Z"' "$T/ev.json" >"$T/ev-edited.json"
expect 1 "the proof of possession does not cover an edited document" -- \
    pop_verifies "$T/ev-edited.json" "$T/dev.pem"

# ---- a software key: no tpm member -----------------------------------------------------
expect 0 "a software key" -- k keygen soft1 -t ec-p256 -b software
expect 0 "keyvault attest on a software key" -- k attest soft1 --nonce "$N" -o "$T/soft.json"
[ "$(jq -r '.assurance + " " + (has("tpm") | tostring)' "$T/soft.json")" = "software false" ] &&
    ok "software evidence claims software and has no tpm member" ||
    not_ok "software evidence claims software and has no tpm member"

# ---- the AK's certificate from the enrollment CA, and WebAuthn --------------------------
expect 0 "the enrollment CA key" -- k keygen enroll-ca -t ec-p256 -b software
expect 0 "its root certificate" -- k cert selfsign enroll-ca --subject "CN=Enrollment CA" --ca -o "$T/root.pem"
expect 1 "webauthn needs the AK's chain" -- \
    k attest dev --nonce "$N" --format webauthn --rp-id example.org -o "$T/reg.json"
contains "$T/err" "kv_tpm_ak_store_chain" "the refusal says how to store the AK's chain"
# the TPM's own vendor id (TPM2_PT_MANUFACTURER) as the TCG registry spells IBM's
# (swtpm's EK certificate says id:00001014, an id outside the registry verifiers check)
man=$(TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_getcap properties-fixed |
    sed -n '/TPM2_PT_MANUFACTURER:/{n;s/.*raw: 0x//p}' | tr A-F a-f)
fw=$(TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_getcap properties-fixed |
    sed -n '/TPM2_PT_FIRMWARE_VERSION_1:/{n;s/.*raw: 0x//p}')
expect 0 "the vault CA issues the AK a tpm-ak certificate" -- \
    k ca sign enroll-ca --pubkey "$T/ak.pem" --profile tpm-ak --tpm-manufacturer "id:$man" \
    --tpm-model swtpm --tpm-version "id:$fw" -o "$T/ak.crt"
expect 1 "the AK chain import refuses a certificate for another key" -- \
    k tpm ak-chain import "$T/root.pem"
expect 0 "keyvault tpm ak-chain import" -- k tpm ak-chain import "$T/ak.crt"
expect 0 "keyvault tpm ak-chain show" -- k tpm ak-chain show -o "$T/ak-shown.crt"
cmp -s "$T/ak.crt" "$T/ak-shown.crt" && ok "the AK chain reads back as imported" ||
    not_ok "the AK chain reads back as imported"
expect 0 "the evidence now carries the AK chain" -- k attest dev --nonce "$N" -o "$T/ev2.json"
b64u "$T/ev2.json" '.tpm.ak.chain[0]' >"$T/ak-from-ev.der"
openssl x509 -in "$T/ak.crt" -outform DER -out "$T/ak.der"
cmp -s "$T/ak.der" "$T/ak-from-ev.der" && ok "tpm.ak.chain[0] is the AK certificate" ||
    not_ok "tpm.ak.chain[0] is the AK certificate"

expect 0 "keyvault attest --format webauthn" -- \
    k attest dev --nonce "$N" --format webauthn --rp-id example.org -o "$T/reg.json"
[ "$(jq -r '.type + " " + .authenticatorAttachment + " " + (.id == .rawId | tostring)' "$T/reg.json")" = \
    "public-key platform true" ] && ok "the RegistrationResponseJSON's id, rawId, type" ||
    not_ok "the RegistrationResponseJSON's id, rawId, type"
b64u "$T/reg.json" .response.clientDataJSON >"$T/cdj.json"
[ "$(jq -r '.type + " " + .challenge + " " + .origin' "$T/cdj.json")" = \
    "webauthn.create $CH https://example.org" ] && ok "clientDataJSON: type, challenge = nonce, origin" ||
    not_ok "clientDataJSON: type, challenge = nonce, origin"

if ! command -v node >/dev/null 2>&1 ||
    ! [ -f "$KV_NPM_DIR/node_modules/@simplewebauthn/server/package.json" ]; then
    not_ok "node and @simplewebauthn/server in $KV_NPM_DIR (run tests/install-deps.sh)"
else
    verify() { node "$SRC/tests/webauthn-verify.mjs" "$1" "$2" "$3" https://example.org example.org; }
    expect 0 "@simplewebauthn/server verifies the registration (TPM root: the enrollment CA)" -- \
        verify "$T/reg.json" "$T/root.pem" "$CH"
    contains "$T/out" "verified tpm" "it verified a tpm attestation"
    # one byte of certInfo changed: find it by its magic and type (ff544347 8017)
    b64u "$T/reg.json" .response.attestationObject | basenc --base16 -w0 >"$T/attobj.hex"
    at=$(awk '{ print index($0, "FF5443478017") }' "$T/attobj.hex")
    if [ "$at" -gt 0 ]; then
        pos=$((at + 20))
        byte=$(cut -c"$pos"-$((pos + 1)) "$T/attobj.hex")
        flip=$(printf '%02X' $(( (0x$byte + 1) % 256 )))
        { cut -c1-$((pos - 1)) "$T/attobj.hex" | tr -d '\n'; printf '%s' "$flip"
          cut -c$((pos + 2))- "$T/attobj.hex"; } | tr -d '\n' | unhex | basenc --base64url -w0 |
            tr -d '=' >"$T/attobj-edited.b64u"
        jq --rawfile o "$T/attobj-edited.b64u" '.response.attestationObject = $o' "$T/reg.json" \
            >"$T/reg-edited.json"
        expect 1 "@simplewebauthn/server rejects a copy with one byte of certInfo changed" -- \
            verify "$T/reg-edited.json" "$T/root.pem" "$CH"
        contains "$T/out" "rejected" "the edited copy is reported rejected"
        sed 's/^/# /' "$T/out"
    else
        not_ok "certInfo found in the attestation object"
    fi
    expect 1 "@simplewebauthn/server rejects another challenge" -- \
        verify "$T/reg.json" "$T/root.pem" "$(openssl rand 32 | basenc --base64url -w0 | tr -d '=')"
    # an RSA identity key: pubArea.unique is the modulus, the COSE key kty RSA
    expect 0 "a TPM RSA identity key" -- k keygen dev-rsa -t rsa-2048 -b tpm
    expect 0 "keyvault attest --format webauthn on it" -- \
        k attest dev-rsa --nonce "$N" --format webauthn --rp-id example.org -o "$T/reg-rsa.json"
    expect 0 "@simplewebauthn/server verifies the RSA key's registration" -- \
        verify "$T/reg-rsa.json" "$T/root.pem" "$CH"
    expect 0 "another CA key" -- k keygen other-ca -t ec-p256 -b software
    expect 0 "another root" -- k cert selfsign other-ca --subject "CN=Enrollment CA" --ca -o "$T/other.pem"
    expect 1 "@simplewebauthn/server rejects the AK chain under another root" -- \
        verify "$T/reg.json" "$T/other.pem" "$CH"
    sed 's/^/# /' "$T/out"
fi
finish
