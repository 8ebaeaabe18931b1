#!/bin/sh
# demo.sh - the README's first command, examples/demo.sh, runs against this
# build (SoftHSM and swtpm started and stopped by the demo) and shows what
# it says it shows.
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-.}
B=${KV_BUILDDIR:-.}

if ! grep -q '^#define KV_WITH_PKCS11 1' "$B/config.h" || ! grep -q '^#define KV_WITH_TPM 1' "$B/config.h"; then
    echo "SKIP: the demo needs the PKCS#11 and TPM backends (configured without one)"
    exit 77
fi
expect 0 "sh examples/demo.sh" -- env KV_BUILDDIR="$B" TMPDIR="$T" sh "$SRC/examples/demo.sh"
out="$T/out"
[ "$(grep -c '^Verified OK$' "$out")" -eq 4 ] && ok "openssl verified the TPM, token and software signatures, and the TPM's under require_hardware" ||
    not_ok "four signatures verified by openssl"
contains "$out" "^assurance: tpm$" "the TPM key's assurance"
contains "$out" "^assurance: token$" "the token key's assurance"
contains "$out" "both sides derived the same" "ECDH between token and TPM key agreed"
contains "$out" "Access: *sensitive, always sensitive, never extractable" "pkcs11-tool shows the token key sensitive, never extractable"
[ "$(grep -c '^(refused: exit status 1)$' "$out")" -eq 4 ] &&
    [ "$(cat "$out" "$T/err" | grep -c "require_hardware is set: refusing software key 'demo-soft2\{0,1\}'")" -eq 2 ] &&
    ok "require_hardware refused the software key twice" ||
    not_ok "require_hardware refused the software key twice"
contains "$out" "^gw-01.crt: OK$" "openssl verified the TPM key's certificate from the token CA"
cat "$out" "$T/err" | grep -q "self-signature verify OK" && ok "openssl verified the TPM key's request" ||
    not_ok "openssl verified the TPM key's request"
contains "$out" "renewal" "cert show reports the renewal state"
cat "$out" "$T/err" | grep -q "certificate revoked" && ok "openssl refused the revoked certificate with the CRL" ||
    not_ok "openssl refused the revoked certificate with the CRL"
contains "$out" "^(refused: exit status 2)$" "the revoked certificate's verification failed"
contains "$out" "^assurance: software$" "the software key says it is software"
contains "$out" "^evidence accepted (assurance tpm)$" "the verifier accepted the TPM key's evidence"
contains "$out" "^tpm.pcr-policy *ok" "the PCRs were checked against the policy"
contains "$out" "^nonce *FAILED" "a replayed document failed the nonce check"
contains "$out" "^assurance *FAILED" "the token key's evidence failed the tpm floor"
contains "$out" "^demo finished" "the demo ran to its end"
# everything it started is gone: no demo directory, no swtpm serving one
left=$(find "$T" -maxdepth 1 -name 'keyvault-demo.*' | wc -l)
[ "$left" -eq 0 ] && ok "the demo removed its scratch directory" || not_ok "the demo removed its scratch directory"
if pgrep -f "swtpm socket.*$T/keyvault-demo" >/dev/null 2>&1; then not_ok "the demo stopped swtpm"; else ok "the demo stopped swtpm"; fi
finish
