#!/bin/sh
# boot-attest.sh - examples/boot-attest end to end. The device's keys are in
# swtpm, the gateway's (the fleet CA and its TLS key) on a SoftHSM token.
# The device enrolls its AK by credential activation (keyvault enroll), then
# "boots": boot-attest-device attests its identity key to boot-attest-gateway,
# which checks the evidence against a policy file (PCR values, the AK
# registry, the tpm floor), issues the key a certificate from the CA, and the
# two talk over mutual TLS with those keys through the provider. Then the
# refusals: a PCR extended after the policy was taken, a revoked device, and
# a software key presented by the device program. The systemd unit is
# checked by systemd-analyze.
. "$(dirname "$0")/lib.sh"
EX=${KV_BUILDDIR:-$(pwd)}/examples/boot-attest
SRC=${KV_SRCDIR:-$(dirname "$0")/..}
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
GW=$KV_P11_DIR/keyvault.conf
DEV=$KV_TPM_DIR/keyvault.conf
g() { "$KEYVAULT" -c "$GW" "$@"; }
d() { "$KEYVAULT" -c "$DEV" "$@"; }
REG=$T/registry.db
SOCK=$T/attest.sock

# ---- the gateway: a fleet CA on the token, its TLS certificate -------------------
expect 0 "gateway: the fleet CA's key on the token" -- g keygen fleet-ca --backend pkcs11
expect 0 "gateway: the CA's root certificate" -- \
    g cert selfsign fleet-ca --subject "CN=Fleet Root,O=Fleet" --ca --days 3650 -o "$T/ca.pem"
expect 0 "gateway: its TLS key on the token" -- g keygen gw-tls --backend pkcs11
g csr gw-tls --subject "CN=gateway,O=Fleet" --san dns:localhost -o "$T/gw.csr" >/dev/null 2>&1
expect 0 "gateway: the CA issues its TLS certificate" -- \
    g ca sign fleet-ca --csr "$T/gw.csr" --profile tls-server -o "$T/gw.pem"
expect 0 "gateway: the certificate stored with the key" -- g cert import gw-tls "$T/gw.pem"

# ---- enrollment: the device's AK certified by the fleet CA -----------------------
cat "$KV_TPM_DIR/localca/swtpm-localca-rootca-cert.pem" "$KV_TPM_DIR/localca/issuercert.pem" >"$T/ekca.pem"
expect 0 "device: enrollment request" -- d enroll request --device-id dev-7 -o "$T/req.json"
expect 0 "gateway: challenge" -- \
    g enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal.json"
expect 0 "device: TPM2_ActivateCredential" -- d enroll respond "$T/chal.json" -o "$T/resp.json"
expect 0 "gateway: the AK certificate" -- \
    g enroll finish "$T/resp.json" --ca fleet-ca --registry "$REG" -o "$T/ak.pem"
expect 0 "device: the AK's chain installed" -- d tpm ak-chain import "$T/ak.pem"

# ---- the policy: this device's PCRs now, the registry, the tpm floor --------------
expect 0 "device: the identity key in the TPM" -- d keygen device-identity --backend tpm
{
    # no identity-key anchors: at its first boot the device has no certificate yet
    printf '[trust]\nak_anchors = %s\nregistry = %s\n' "$T/ca.pem" "$REG"
    printf '[evidence]\nassurance = tpm\nmax_age = 300\n[pcrs]\nbank = sha256\n'
    for i in 0 1 2 3 4 5 6 7; do printf '%s = %s\n' "$i" "$(d tpm pcr-read "$i")"; done
} >"$T/policy.conf"

# gateway DEVICE-KEY DEVICE-CONF DESCRIPTION: one boot; the gateway's and the
# device's output in $T/gw.out and $T/out; the device's status returned
boot() {
    rm -f "$SOCK"
    KEYVAULT_CONF=$GW "$EX/boot-attest-gateway" fleet-ca gw-tls "$T/policy.conf" "$SOCK" \
        "$T/ca.pem" >"$T/gw.out" 2>&1 &
    gw=$!
    i=0
    # a sanitized build on a loaded machine can take seconds to start
    while [ ! -S "$SOCK" ] && [ $i -lt 600 ] && kill -0 "$gw" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    KEYVAULT_CONF=$2 "$EX/boot-attest-device" "$1" "$SOCK" "$T/ca.pem" dev-7 >"$T/out" 2>&1
    st=$?
    # a gateway left waiting for a device that gave up is stopped, not waited for forever
    i=0
    while kill -0 "$gw" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill "$gw" 2>/dev/null
    wait "$gw"
    gst=$?
    return $st
}

if boot device-identity "$DEV"; then ok "the device booted, attested and spoke over TLS"; else
    not_ok "the device booted, attested and spoke over TLS"; sed 's/^/    /' "$T/out" "$T/gw.out"; fi
[ "$gst" -eq 0 ] && ok "the gateway admitted it" || not_ok "the gateway admitted it (exit $gst)"
contains "$T/gw.out" "admitted the device (assurance tpm)" "the gateway says tpm assurance"
contains "$T/gw.out" "tpm.pcr-policy *ok" "the PCRs matched the policy"
contains "$T/gw.out" "tpm.ak-trusted *ok" "the AK is trusted (its certificate from the enrollment)"
contains "$T/gw.out" "registry *ok" "the AK is enrolled and not revoked"
contains "$T/gw.out" "device over TLS: dev-7 is up" "the gateway heard the device over mutual TLS"
contains "$T/out" "gateway over TLS: welcome" "the device heard the gateway"
expect 0 "the device's certificate, as stored" -- d cert device-identity -o "$T/dev-chain.pem"
expect 0 "openssl verifies it against the fleet root" -- \
    openssl verify -CAfile "$T/ca.pem" "$T/dev-chain.pem"

# ---- refusals ------------------------------------------------------------------------
expect 0 "PCR 7 extended after the policy was taken" -- \
    d tpm pcr-extend 7 --digest "$(printf 'rogue bootloader' | openssl dgst -sha256 -r | cut -c1-64)"
if boot device-identity "$DEV"; then not_ok "a changed PCR 7 is refused"; else ok "a changed PCR 7 is refused"; fi
contains "$T/gw.out" "tpm.pcr-policy *FAILED" "the gateway names tpm.pcr-policy"
contains "$T/out" "refused" "the device is told"
{
    grep -v '^7 = ' "$T/policy.conf"
    printf '7 = %s\n' "$(d tpm pcr-read 7)"
} >"$T/policy2.conf"
mv "$T/policy2.conf" "$T/policy.conf"

expect 0 "a software key on the device" -- d keygen soft-identity --backend software
if boot soft-identity "$DEV"; then not_ok "a software key fails the tpm floor"; else ok "a software key fails the tpm floor"; fi
contains "$T/gw.out" "assurance *FAILED" "the gateway names the assurance check"

expect 0 "the gateway revokes dev-7 (and its AK certificate)" -- \
    g enroll revoke dev-7 --registry "$REG" --ca fleet-ca
if boot device-identity "$DEV"; then not_ok "a revoked device is refused"; else ok "a revoked device is refused"; fi
contains "$T/gw.out" "registry *FAILED" "the gateway names the registry check"

# ---- the systemd unit -------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/boot-attest-device|$EX/boot-attest-device|" \
        "$SRC/examples/boot-attest/keyvault-boot-attest.service" >"$T/keyvault-boot-attest.service"
    expect 0 "systemd-analyze verify accepts the unit" -- \
        systemd-analyze verify --man=no "$T/keyvault-boot-attest.service"
else
    not_ok "systemd-analyze is missing (tests/install-deps.sh installs systemd)"
fi
finish
