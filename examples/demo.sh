#!/bin/sh
# demo.sh - what libkeyvault is for, on a scratch PKCS#11 token (SoftHSM) and
# a scratch TPM 2.0 (swtpm): installs what is missing, builds, then
#   1. a key in the TPM and a key on the token, each with its assurance level;
#   2. signs with each, and openssl verifies the signatures;
#   3. ECDH between the token key and the TPM key: both sides agree;
#   4. pkcs11-tool shows the token key is sensitive and never extractable;
#   5. a small CA on the token certifies the TPM key (openssl verifies), then
#      revokes it in a CRL that openssl honours;
#   6. the software fallback last, and require_hardware refusing it.
# The token and the simulator live in a scratch directory and are stopped
# and removed on exit.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)

if [ -n "${KV_BUILDDIR:-}" ]; then
    # from the test suite (tests/demo.sh): that build, as it is
    PATH="$KV_BUILDDIR/tools:$PATH"
else
    sh tests/install-deps.sh
    if [ ! -f build/Makefile ]; then
        ./autogen.sh >/dev/null 2>&1
        mkdir -p build
        (cd build && "$top/configure" -q)
    fi
    make -s -C build -j"$jobs" >/dev/null
    PATH="$top/build/tools:$PATH"   # the keyvault command just built
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/keyvault-demo.XXXXXX")
cleanup() {
    [ -n "${KV_TPM_DIR:-}" ] && swtpm_cleanup
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# runsh CMD: show a shell command line as written, then run it
runsh() { printf '$ %s\n' "$1"; sh -c "$1"; }
# refused COMMAND...: show it, run it, and insist that it fails
refused() {
    printf '$ %s\n' "$*"
    st=0
    "$@" || st=$?
    [ "$st" -ne 0 ] || { echo "demo: that should have been refused" >&2; exit 1; }
    echo "(refused: exit status $st)"
}

step "a scratch PKCS#11 token (SoftHSM) and a scratch TPM 2.0 (swtpm) in $T"
. tests/softhsm.sh   # token "kvtest", PIN in a 0600 file
. tests/swtpm.sh     # swtpm on loopback, with EK certificates
echo "SoftHSM token '$KV_P11_TOKEN' ($KV_P11_MODULE)"
echo "swtpm at $KV_TPM_TCTI"
cat >"$T/keyvault.conf" <<CONF
[keyvault]
backends = tpm, pkcs11, software
home = $T/home

[tpm]
tcti = $KV_TPM_TCTI
keys = $T/tpm-keys

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE

[software]
store = $T/soft
passphrase = file:$KV_TPM_DIR/pass
CONF
export KEYVAULT_CONF="$T/keyvault.conf"
cd "$T"
run cat keyvault.conf
run keyvault backends

step "a key in the TPM: it is created inside the TPM and leaves it only wrapped"
run keyvault keygen demo-tpm --type ec-p256 --backend tpm
run keyvault info demo-tpm

step "a key on the token: created by the token, never exported"
run keyvault keygen demo-token --type ec-p256 --backend pkcs11
run keyvault info demo-token

step "sign with each; openssl, a tool libkeyvault did not write, verifies"
printf 'firmware manifest %s\n' "$(date +%s)" >message
for k in demo-tpm demo-token; do
    run keyvault sign "$k" -i message -o "$k.sig"
    run keyvault pubkey "$k" -o "$k.pub"
    run openssl dgst -sha256 -verify "$k.pub" -signature "$k.sig" message
done

step "ECDH between the token key and the TPM key: each side uses its own private key"
run keyvault ecdh demo-token --peer demo-tpm.pub --hkdf-info demo-session -o token.key
run keyvault ecdh demo-tpm --peer demo-token.pub --hkdf-info demo-session -o tpm.key
run cmp token.key tpm.key
echo "both sides derived the same 32-byte session key"

step "pkcs11-tool (OpenSC) reads the token key's attributes: sensitive, never extractable"
runsh "pkcs11-tool --module $KV_P11_MODULE --token-label $KV_P11_TOKEN --login --pin \"\$(cat softhsm/pin)\" --list-objects --type privkey --label demo-token" \
    >objects 2>&1 || { cat objects; exit 1; }
cat objects
access=$(sed -n 's/^ *Access: *//p' objects)
case ", $access," in
*", sensitive,"*", never extractable,"*) ;;
*) echo "demo: the token key is not sensitive and never extractable ($access)" >&2; exit 1 ;;
esac
case ", $access," in
*", extractable,"*) echo "demo: the token key is extractable" >&2; exit 1 ;;
esac
echo "CKA_SENSITIVE true, CKA_EXTRACTABLE false: the token will not hand out the private key"

step "certificates: a small CA whose key is on the token certifies the TPM key"
run keyvault keygen demo-ca --type ec-p384 --backend pkcs11
run keyvault cert selfsign demo-ca --subject "CN=Demo Fleet Root,O=Demo Fleet" --ca --days 3650 -o ca.crt
run keyvault csr demo-tpm --subject "CN=gw-01,O=Demo Fleet" --san dns:gw-01.demo.example -o gw-01.csr
run openssl req -in gw-01.csr -noout -verify
run keyvault ca sign demo-ca --csr gw-01.csr --profile device-identity --days 90 -o gw-01.crt
run keyvault cert import demo-tpm gw-01.crt
run openssl verify -CAfile ca.crt gw-01.crt
run keyvault cert show demo-tpm
echo "both private keys stayed where they were made: the CA's on the token, the device's in the TPM"

step "revocation: the CA revokes the device certificate and signs a CRL; openssl refuses it now"
serial=$(openssl x509 -in gw-01.crt -noout -serial | cut -d= -f2)
run keyvault ca revoke demo-ca --serial "$serial" --reason superseded
run keyvault ca crl demo-ca --days 7 -o demo.crl
run openssl crl -in demo.crl -CAfile ca.crt -noout -verify
refused openssl verify -crl_check -CRLfile demo.crl -CAfile ca.crt gw-01.crt

step "attestation: the TPM key proves it lives in this TPM; a verifier checks it in C"
run keyvault tpm ak -o ak.pem
akpin=$(openssl pkey -pubin -in ak.pem -outform DER | openssl dgst -sha256 -r | cut -c1-64)
{
    printf '[trust]\nak_pin = %s\n[evidence]\nassurance = tpm\nmax_age = 300\n' "$akpin"
    printf '[pcrs]\nbank = sha256\n'
    for i in 0 1 2 3 4 5 6 7; do printf '%s = %s\n' "$i" "$(keyvault tpm pcr-read "$i")"; done
} >policy.conf
run cat policy.conf
nonce=$(openssl rand -hex 32)
run keyvault attest demo-tpm --nonce "$nonce" -o evidence.json
run keyvault verify-evidence evidence.json --nonce "$nonce" --policy policy.conf
echo "the same document with another nonce is a replay:"
refused keyvault verify-evidence evidence.json --nonce "$(openssl rand -hex 32)" --policy policy.conf
echo "the token key's evidence is genuine, but a token is not a TPM:"
run keyvault attest demo-token --nonce "$nonce" -o token-evidence.json
refused keyvault verify-evidence token-evidence.json --nonce "$nonce" --policy policy.conf

step "the software fallback, last: an encrypted file, and it says it is software"
run keyvault keygen demo-soft --type ec-p256 --backend software
run keyvault info demo-soft
run keyvault sign demo-soft -i message -o demo-soft.sig
run keyvault pubkey demo-soft -o demo-soft.pub
run openssl dgst -sha256 -verify demo-soft.pub -signature demo-soft.sig message
run keyvault list

step "require_hardware = true: software keys are refused, hardware keys still work"
sed 's/^backends = .*/&\nrequire_hardware = true/' keyvault.conf >hardware-only.conf
export KEYVAULT_CONF="$T/hardware-only.conf"
run sed -n '1,3p' hardware-only.conf
refused keyvault sign demo-soft -i message -o refused.sig
refused keyvault keygen demo-soft2 --type ec-p256 --backend software
run keyvault sign demo-tpm -i message -o still.sig
run openssl dgst -sha256 -verify demo-tpm.pub -signature still.sig message

printf '\ndemo finished: a TPM key and a token key signed (verified by openssl) and agreed on an\n'
printf 'ECDH key; the token key is sensitive and never extractable; a CA on the token certified\n'
printf 'the TPM key and revoked it again; the TPM key attested itself and the verifier accepted it\n'
printf '(and refused a replay and a token key); the software key works until require_hardware refuses it.\n'
