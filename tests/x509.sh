#!/bin/sh
# x509.sh - certificate requests and self-signed certificates made by vault
# keys on every backend (the software store, a SoftHSM token, swtpm), for
# each key type the backend holds, checked by the openssl command: `req
# -verify` and `req -text` for requests, `verify -CAfile` and `x509 -text`
# for certificates; the stored certificate read back; bad input refused
# with a clear message, nothing stored and nothing written.
. "$(dirname "$0")/lib.sh"
B=${KV_BUILDDIR:-.}
soft_store 'x509 test passphrase'
SOFT_CONF=$T/kv.conf
have() { grep -q "^#define $1 1" "$B/config.h"; }

# CONF is the configuration of the backend under test
kvc() { "$KEYVAULT" -c "$CONF" "$@"; }

# ext FILE HEADING: the line after an extension's heading in openssl -text, trimmed
ext() { grep -A1 -- "$2" "$1" | sed -n 2p | sed 's/^ *//; s/ *$//'; }
# is DESCRIPTION GOT WANT
is() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (got '$2', wanted '$3')"; fi; }

# one_type BACKEND TYPE: requests and certificates from one key
one_type() {
    b=$1 t=$2 n=$1-$2
    expect 0 "$b $t: keygen" -- kvc keygen "$n" --type "$t" --backend "$b"
    contains "$T/out" "backend $b" "$b $t: the key is in backend $b"
    case $t in
    ec-*) ku=digitalSignature,keyAgreement ku_text="Digital Signature, Key Agreement"
          def_ku="Digital Signature" ;;
    rsa-*) ku=digitalSignature,keyEncipherment ku_text="Digital Signature, Key Encipherment"
           def_ku="Digital Signature, Key Encipherment" ;;
    *) ku=digitalSignature ku_text="Digital Signature" def_ku="Digital Signature" ;;
    esac
    case $t in
    ec-p256) algs="default:ecdsa-with-SHA256" ;;
    ec-p384) algs="default:ecdsa-with-SHA384" ;;
    rsa-*) algs="default:rsassaPss rsa-pkcs1-sha256:sha256WithRSAEncryption" ;;
    ed25519) algs="default:ED25519" ;;
    esac
    expect 0 "$b $t: pubkey" -- kvc pubkey "$n" -o "$T/$n.pub"
    for a in $algs; do
        alg=${a%%:*} sig=${a#*:} f=$T/$n.$alg
        expect 0 "$b $t: csr ($alg)" -- kvc csr "$n" --subject "CN=$n,OU=Edge+L=Berlin,O=Fleet" \
            --san "dns:$n.example.org" --san ip:192.0.2.7 --san ip:2001:db8::7 \
            --san "uri:spiffe://fleet/$n" --san email:ops@example.org --key-usage "$ku" \
            --eku clientAuth,serverAuth --alg "$alg" -o "$f.csr"
        expect 0 "$b $t: openssl req -verify ($alg)" -- openssl req -in "$f.csr" -noout -verify
        openssl req -in "$f.csr" -noout -text >"$f.req.txt" 2>&1
        contains "$f.req.txt" "Signature Algorithm: $sig" "$b $t: request signed with $sig"
        contains "$f.req.txt" "Subject: O = Fleet, OU = Edge + L = Berlin, CN = $n" "$b $t: request subject"
        is "$b $t: requested SANs" "$(ext "$f.req.txt" "Subject Alternative Name")" \
            "DNS:$n.example.org, IP Address:192.0.2.7, IP Address:2001:DB8:0:0:0:0:0:7, URI:spiffe://fleet/$n, email:ops@example.org"
        contains "$f.req.txt" "Key Usage: critical" "$b $t: requested key usage is critical"
        is "$b $t: requested key usage" "$(ext "$f.req.txt" "X509v3 Key Usage")" "$ku_text"
        is "$b $t: requested EKU" "$(ext "$f.req.txt" "Extended Key Usage")" \
            "TLS Web Client Authentication, TLS Web Server Authentication"
        openssl req -in "$f.csr" -noout -pubkey >"$f.req.pub" 2>/dev/null
        expect 0 "$b $t: the request's public key is the key's ($alg)" -- cmp "$f.req.pub" "$T/$n.pub"

        expect 0 "$b $t: cert selfsign ($alg)" -- kvc cert selfsign "$n" --subject "CN=$n,O=Fleet" \
            --san "dns:$n.example.org" --days 30 --eku serverAuth --alg "$alg" -o "$f.crt"
        contains "$T/out" "stored a self-signed certificate with '$n'" "$b $t: it is stored"
        expect 0 "$b $t: openssl verify -CAfile itself ($alg)" -- \
            openssl verify -x509_strict -CAfile "$f.crt" "$f.crt"
        openssl x509 -in "$f.crt" -noout -text >"$f.txt" 2>&1
        contains "$f.txt" "Version: 3 (0x2)" "$b $t: version 3"
        contains "$f.txt" "Signature Algorithm: $sig" "$b $t: certificate signed with $sig"
        contains "$f.txt" "Issuer: O = Fleet, CN = $n" "$b $t: issuer is the subject"
        contains "$f.txt" "Subject: O = Fleet, CN = $n" "$b $t: subject"
        contains "$f.txt" "Basic Constraints: critical" "$b $t: basicConstraints is critical"
        is "$b $t: not a CA" "$(ext "$f.txt" "Basic Constraints")" "CA:FALSE"
        contains "$f.txt" "Key Usage: critical" "$b $t: keyUsage is critical"
        is "$b $t: default key usage" "$(ext "$f.txt" "X509v3 Key Usage")" "$def_ku"
        is "$b $t: EKU" "$(ext "$f.txt" "Extended Key Usage")" "TLS Web Server Authentication"
        is "$b $t: SAN" "$(ext "$f.txt" "Subject Alternative Name")" "DNS:$n.example.org"
        ski=$(ext "$f.txt" "Subject Key Identifier")
        aki=$(ext "$f.txt" "Authority Key Identifier" | sed 's/^keyid://')
        [ -n "$ski" ] && [ "$ski" = "$aki" ] && ok "$b $t: SKI = AKI" || not_ok "$b $t: SKI = AKI ('$ski', '$aki')"
        serial=$(openssl x509 -in "$f.crt" -noout -serial | sed 's/^serial=//')
        case ${#serial}:$serial in
        32:[0-7]* | 2[4-9]:* | 3[01]:*) ok "$b $t: a 127-bit serial ($serial)" ;;
        *) not_ok "$b $t: a 127-bit serial ($serial)" ;;
        esac
        nb=$(date -d "$(openssl x509 -in "$f.crt" -noout -startdate | cut -d= -f2)" +%s)
        na=$(date -d "$(openssl x509 -in "$f.crt" -noout -enddate | cut -d= -f2)" +%s)
        now=$(date +%s)
        [ $((now - nb)) -ge 60 ] && [ $((now - nb)) -le 90 ] && ok "$b $t: valid from a minute ago" ||
            not_ok "$b $t: valid from a minute ago (not before: $((now - nb)) s ago)"
        is "$b $t: valid for 30 days" $((na - nb)) $((30 * 86400 + 60))
        expect 0 "$b $t: keyvault cert -o reads it back" -- kvc cert "$n" -o "$f.back.crt"
        expect 0 "$b $t: the stored certificate is the one made ($alg)" -- cmp "$f.crt" "$f.back.crt"
    done
}

# a CA root: CA:TRUE with a path length, the CA key usage, a trust anchor
ca_root() {
    b=$1 n=$1-ec-p256
    expect 0 "$b: cert selfsign --ca" -- kvc cert selfsign "$n" --subject "CN=$b Root,O=Fleet" \
        --ca --path-len 0 --days 3650 -o "$T/$b.ca.crt"
    expect 0 "$b: openssl verify -CAfile the root" -- openssl verify -x509_strict -CAfile "$T/$b.ca.crt" "$T/$b.ca.crt"
    openssl x509 -in "$T/$b.ca.crt" -noout -text >"$T/$b.ca.txt" 2>&1
    is "$b: CA:TRUE with pathlen 0" "$(ext "$T/$b.ca.txt" "Basic Constraints")" "CA:TRUE, pathlen:0"
    is "$b: CA key usage" "$(ext "$T/$b.ca.txt" "X509v3 Key Usage")" \
        "Digital Signature, Certificate Sign, CRL Sign"
    expect 0 "$b: valid for ten years" -- openssl x509 -in "$T/$b.ca.crt" -noout -checkend $((3649 * 86400))
    expect 1 "$b: and not longer" -- openssl x509 -in "$T/$b.ca.crt" -noout -checkend $((3651 * 86400))
}

# refused STATUS BACKEND DESCRIPTION WORD -- ARGS: a clear error naming WORD;
# the caller's text (marked "leak") is not repeated
refused() {
    st=$1 b=$2 d=$3 w=$4
    shift 5
    expect "$st" "$b: refused: $d" -- kvc "$@"
    contains "$T/err" "$w" "$b: $d: the message says '$w'"
    if grep -q leak "$T/err" "$T/out"; then not_ok "$b: $d: the input is not echoed"; else
        ok "$b: $d: the input is not echoed"; fi
}

bad_input() {
    b=$1 n=bad-$1
    expect 0 "$b: keygen for bad input" -- kvc keygen "$n" --type ec-p256 --backend "$b"
    long=$(printf '%0900d' 0 | tr 0 a)
    refused 1 "$b" "malformed subject" "must be escaped" -- cert selfsign "$n" --subject "CN=leak;x" -o "$T/bad.crt"
    refused 1 "$b" "attribute type" "unknown attribute type" -- csr "$n" --subject "leak=x" -o "$T/bad.csr"
    refused 1 "$b" "bad SAN" "not a valid DNS name" -- cert selfsign "$n" --subject CN=x --san dns:leak..example -o "$T/bad.crt"
    refused 1 "$b" "SAN kind" "expected dns:, ip:, uri: or email:" -- csr "$n" --subject CN=x --san x400:leak -o "$T/bad.csr"
    refused 1 "$b" "bad IP address" "IPv4 or IPv6" -- cert selfsign "$n" --subject CN=x --san ip:leak -o "$T/bad.crt"
    refused 1 "$b" "CN over 64 characters" "attribute CN is not valid" -- \
        cert selfsign "$n" --subject "CN=$(printf '%065d' 0)" -o "$T/bad.crt"
    refused 1 "$b" "oversized subject" "longer than 1024" -- \
        cert selfsign "$n" --subject "O=$long,OU=$long" -o "$T/bad.crt"
    refused 1 "$b" "--alg of another family" "needs an RSA key" -- \
        cert selfsign "$n" --subject CN=x --alg rsa-pss-sha256 -o "$T/bad.crt"
    contains "$T/err" "$n" "$b: --alg of another family: the message names the key"
    refused 1 "$b" "--alg of another family (csr)" "needs an Ed25519 key" -- \
        csr "$n" --subject CN=x --alg ed25519 -o "$T/bad.csr"
    refused 2 "$b" "unknown key usage name" "unknown key usage" -- \
        cert selfsign "$n" --subject CN=x --key-usage digitalSignature,leak -o "$T/bad.crt"
    refused 1 "$b" "key usage the key cannot have" "keyEncipherment needs an RSA key" -- \
        cert selfsign "$n" --subject CN=x --key-usage keyEncipherment -o "$T/bad.crt"
    refused 1 "$b" "keyCertSign without --ca" "keyCertSign needs a CA" -- \
        cert selfsign "$n" --subject CN=x --key-usage keyCertSign -o "$T/bad.crt"
    refused 1 "$b" "unknown EKU" "extended key usage 2" -- \
        cert selfsign "$n" --subject CN=x --eku serverAuth,leak -o "$T/bad.crt"
    refused 1 "$b" "empty subject without a SAN" "non-empty subject" -- \
        cert selfsign "$n" --subject "" -o "$T/bad.crt"
    refused 1 "$b" "empty subject with a SAN (the issuer would be empty)" "RFC 5280 4.1.2.4" -- \
        cert selfsign "$n" --subject "" --san dns:a.example -o "$T/bad.crt"
    refused 1 "$b" "a CA whose key usage lacks keyCertSign" "must include keyCertSign" -- \
        cert selfsign "$n" --subject CN=x --ca --key-usage digitalSignature -o "$T/bad.crt"
    refused 1 "$b" "an IP address with trailing text" "IPv4 or IPv6" -- \
        csr "$n" --subject CN=x --san "ip:1.2.3.4 junk" -o "$T/bad.csr"
    refused 1 "$b" "an IP address with a leading zero" "IPv4 or IPv6" -- \
        csr "$n" --subject CN=x --san "ip:010.1.1.1" -o "$T/bad.csr"
    refused 1 "$b" "an unescaped trailing space in the subject" "trailing space" -- \
        csr "$n" --subject "CN=a ,O=b" -o "$T/bad.csr"
    refused 2 "$b" "--path-len without --ca" "--path-len needs --ca" -- \
        cert selfsign "$n" --subject CN=x --path-len 1 -o "$T/bad.crt"
    refused 2 "$b" "--days 0" "--days must be" -- cert selfsign "$n" --subject CN=x --days 0 -o "$T/bad.crt"
    refused 2 "$b" "--days over a hundred years" "--days must be" -- \
        cert selfsign "$n" --subject CN=x --days 36501 -o "$T/bad.crt"
    refused 2 "$b" "an empty --eku list" "--eku needs at least one" -- \
        cert selfsign "$n" --subject CN=x --eku , -o "$T/bad.crt"
    refused 2 "$b" "--ca on a request" "are for certificates" -- csr "$n" --subject CN=x --ca -o "$T/bad.csr"
    expect 1 "$b: nothing was stored with the key" -- kvc cert "$n" -o "$T/bad.stored"
    [ ! -e "$T/bad.crt" ] && [ ! -e "$T/bad.csr" ] && [ ! -s "$T/bad.stored" ] &&
        ok "$b: nothing was written" || not_ok "$b: nothing was written"
}

# ---- the software store -----------------------------------------------------
CONF=$SOFT_CONF
for t in ec-p256 ec-p384 rsa-2048 ed25519; do one_type software "$t"; done
ca_root software
# a request without a subject: the empty name, its SAN critical
expect 0 "software: csr with only a SAN" -- kvc csr software-ed25519 --san uri:spiffe://fleet/dev-42 -o "$T/nosubj.csr"
expect 0 "software: it verifies" -- openssl req -in "$T/nosubj.csr" -noout -verify
openssl req -in "$T/nosubj.csr" -noout -text >"$T/nosubj.txt" 2>&1
grep -qx ' *Subject: *' "$T/nosubj.txt" && ok "software: the subject is empty" ||
    not_ok "software: the subject is empty ($(grep 'Subject:' "$T/nosubj.txt"))"
contains "$T/nosubj.txt" "Subject Alternative Name: critical" "software: the SAN of an empty subject is critical"
bad_input software

# ---- a SoftHSM token -----------------------------------------------------------
if have KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    CONF=$KV_P11_DIR/keyvault.conf
    for t in ec-p256 ec-p384 rsa-2048; do one_type pkcs11 "$t"; done
    asan_exact_stacks # SoftHSM's Ed25519 code leaks (tests/lsan.supp)
    one_type pkcs11 ed25519
    asan_fast_stacks
    ca_root pkcs11
    # the certificate is a token object beside its key
    p11() { pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_P11_TOKEN" "$@"; }
    p11 --list-objects --type cert >"$T/p11certs" 2>&1
    p11 --login --pin "$KV_P11_PIN" --list-objects --type privkey >"$T/p11keys" 2>&1
    cid=$(awk '/label: *pkcs11-ec-p256$/ { f = 1 } f && /ID:/ { print $2; exit }' "$T/p11certs")
    kid=$(awk '/label: *pkcs11-ec-p256$/ { f = 1 } f && /ID:/ { print $2; exit }' "$T/p11keys")
    [ -n "$cid" ] && [ "$cid" = "$kid" ] && ok "pkcs11-tool: the certificate has its key's ID" ||
        not_ok "pkcs11-tool: the certificate has its key's ID ('$cid', '$kid')"
    bad_input pkcs11
else
    echo "# built without PKCS#11: the token part does not apply"
fi

# ---- swtpm ---------------------------------------------------------------------
if have KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    CONF=$KV_TPM_DIR/keyvault.conf
    for t in ec-p256 ec-p384 rsa-2048; do one_type tpm "$t"; done
    ca_root tpm
    bad_input tpm
else
    echo "# built without the TPM: the swtpm part does not apply"
fi
finish
