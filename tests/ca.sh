#!/bin/sh
# ca.sh - the vault CA through the CLI on every backend (software store,
# SoftHSM token, swtpm), checked by openssl: a chain root -> sub-CA -> leaf
# whose private keys all live in the vault, the TCG attestation-key profile
# field by field, revocation and CRLs, and bad input refused with nothing
# recorded (the CA's SQLite record read with the sqlite3 command).
. "$(dirname "$0")/lib.sh"
B=${KV_BUILDDIR:-.}
with() { grep -q "^#define $1 1" "$B/config.h"; }
cleanup() { if with KV_WITH_TPM; then swtpm_cleanup; fi; rm -rf "$T"; }
trap cleanup EXIT
soft_store "ca test passphrase"
DB=$KEYVAULT_HOME/ca

# rows CA [WHERE]: certificates the CA recorded
rows() {
    [ -e "$DB/$1.db" ] || { echo 0; return; }
    sqlite3 -readonly "$DB/$1.db" "SELECT count(*) FROM issued${2:+ WHERE $2}"
}
# same_rows CA BEFORE DESCRIPTION: nothing was recorded
same_rows() {
    now=$(rows "$1")
    [ "$now" = "$2" ] && ok "$3: nothing recorded" || not_ok "$3: nothing recorded ($2 -> $now rows)"
}
# first_cert IN OUT: the first certificate of a PEM chain
first_cert() { openssl x509 -in "$1" -out "$2"; }
ncerts() { grep -c 'BEGIN CERTIFICATE' "$1"; }

# chain CONF TAG ROOT_TYPE SUB_TYPE LEAF_TYPE BACKEND: root -> sub-CA -> leaf,
# every key made in BACKEND, the sub-CA's and the leaf's requests signed by
# their vault keys
chain() {
    c=$1 tag=$2 be=$6
    k() { "$KEYVAULT" -c "$c" "$@"; }
    expect 0 "$tag: root key" -- k keygen "$tag-root" --type "$3" --backend "$be"
    expect 0 "$tag: self-signed root (cert selfsign --ca)" -- k cert selfsign "$tag-root" --subject "CN=$tag Root,O=Fleet" --ca --days 3650 -o "$T/$tag-root.pem"
    expect 0 "$tag: sub-CA key" -- k keygen "$tag-sub" --type "$4" --backend "$be"
    expect 0 "$tag: the sub-CA's request, signed by its vault key" -- k csr "$tag-sub" --subject "CN=$tag Issuing CA,O=Fleet" -o "$T/$tag-sub.csr"
    expect 0 "$tag: openssl req -verify accepts it" -- openssl req -in "$T/$tag-sub.csr" -noout -verify
    expect 0 "$tag: root issues the sub-CA" -- k ca sign "$tag-root" --csr "$T/$tag-sub.csr" --profile sub-ca -o "$T/$tag-sub.pem"
    expect 0 "$tag: the sub-CA's certificate stored with its key" -- k cert "$tag-sub" --import "$T/$tag-sub.pem"
    expect 0 "$tag: leaf key" -- k keygen "$tag-leaf" --type "$5" --backend "$be"
    expect 0 "$tag: the leaf's request" -- k csr "$tag-leaf" --subject "CN=$tag-leaf.example.org" --san "dns:$tag-leaf.example.org" --san ip:192.0.2.10 -o "$T/$tag-leaf.csr"
    expect 0 "$tag: the sub-CA issues the leaf" -- k ca sign "$tag-sub" --csr "$T/$tag-leaf.csr" --profile tls-server --days 30 -o "$T/$tag-leaf-chain.pem"
    [ "$(ncerts "$T/$tag-leaf-chain.pem")" = 2 ] && ok "$tag: the leaf comes with its issuer" || not_ok "$tag: the leaf comes with its issuer"
    first_cert "$T/$tag-leaf-chain.pem" "$T/$tag-leaf.pem"
    expect 0 "$tag: openssl verify -CAfile root -untrusted sub leaf" -- openssl verify -CAfile "$T/$tag-root.pem" -untrusted "$T/$tag-sub.pem" "$T/$tag-leaf.pem"
    expect 2 "$tag: not without the sub-CA" -- openssl verify -CAfile "$T/$tag-root.pem" "$T/$tag-leaf.pem"
    openssl x509 -in "$T/$tag-leaf.pem" -noout -text >"$T/$tag-leaf.txt"
    contains "$T/$tag-leaf.txt" "TLS Web Server Authentication" "$tag: leaf has EKU serverAuth"
    contains "$T/$tag-leaf.txt" "DNS:$tag-leaf.example.org, IP Address:192.0.2.10" "$tag: leaf has its SANs"
    contains "$T/$tag-leaf.txt" "CA:FALSE" "$tag: leaf is not a CA"
    openssl x509 -in "$T/$tag-sub.pem" -noout -text >"$T/$tag-sub.txt"
    contains "$T/$tag-sub.txt" "CA:TRUE, pathlen:0" "$tag: sub-CA has path length 0"
    contains "$T/$tag-sub.txt" "Certificate Sign, CRL Sign" "$tag: sub-CA may sign certificates and CRLs"
    [ "$(rows "$tag-root")" = 1 ] && [ "$(rows "$tag-sub" "profile = 'tls-server'")" = 1 ] &&
        ok "$tag: both issuances recorded" || not_ok "$tag: both issuances recorded"
    serial=$(openssl x509 -in "$T/$tag-leaf.pem" -noout -serial | cut -d= -f2)
    [ "$(rows "$tag-sub" "serial = '$serial'")" = 1 ] && ok "$tag: the record holds the leaf's serial" ||
        not_ok "$tag: the record holds the leaf's serial"
    spki=$(openssl x509 -in "$T/$tag-leaf.pem" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -c1-64)
    [ "$(rows "$tag-sub" "spki_sha256 = '$spki' AND subject = 'CN=$tag-leaf.example.org'")" = 1 ] &&
        ok "$tag: and its subject and public key hash" || not_ok "$tag: and its subject and public key hash"
}

# tpm_ak CONF TAG PUBKEY: the tpm-ak profile checked field by field
tpm_ak() {
    c=$1 tag=$2
    k() { "$KEYVAULT" -c "$c" "$@"; }
    expect 0 "$tag: tpm-ak certificate for a bare public key" -- k ca sign "$tag-root" --pubkey "$3" --profile tpm-ak --tpm-manufacturer id:53544D20 --tpm-model swtpm --tpm-version id:00020000 -o "$T/$tag-ak.pem"
    openssl x509 -in "$T/$tag-ak.pem" -noout -text >"$T/$tag-ak.txt"
    contains "$T/$tag-ak.txt" "Version: 3 (0x2)" "$tag: tpm-ak is X.509 v3"
    grep -q '^ *Subject: *$' "$T/$tag-ak.txt" && ok "$tag: tpm-ak subject is empty" || { not_ok "$tag: tpm-ak subject is empty"; grep Subject: "$T/$tag-ak.txt"; }
    contains "$T/$tag-ak.txt" "X509v3 Subject Alternative Name: critical" "$tag: tpm-ak SAN is critical"
    grep -A1 'Subject Alternative Name' "$T/$tag-ak.txt" | tail -n 1 >"$T/$tag-san.txt"
    contains "$T/$tag-san.txt" "DirName:" "$tag: the SAN is a directoryName"
    contains "$T/$tag-san.txt" "2.23.133.2.1=id:53544D20" "$tag: tcg-at-tpmManufacturer"
    contains "$T/$tag-san.txt" "2.23.133.2.2=swtpm" "$tag: tcg-at-tpmModel"
    contains "$T/$tag-san.txt" "2.23.133.2.3=id:00020000" "$tag: tcg-at-tpmVersion"
    [ "$(grep -o '+' "$T/$tag-san.txt" | wc -l)" = 2 ] && ok "$tag: the three in one RDN" || not_ok "$tag: the three in one RDN"
    grep -A1 'Extended Key Usage' "$T/$tag-ak.txt" | grep -q '^ *2\.23\.133\.8\.3$' && ok "$tag: EKU 2.23.133.8.3 alone" || not_ok "$tag: EKU 2.23.133.8.3 alone"
    grep -A1 'Basic Constraints' "$T/$tag-ak.txt" | grep -q 'CA:FALSE' && ok "$tag: CA:FALSE" || not_ok "$tag: CA:FALSE"
    grep -A1 'X509v3 Key Usage: critical' "$T/$tag-ak.txt" | grep -q '^ *Digital Signature$' && ok "$tag: KU digitalSignature" || not_ok "$tag: KU digitalSignature"
    contains "$T/$tag-ak.txt" "X509v3 Subject Key Identifier" "$tag: tpm-ak has an SKI"
    contains "$T/$tag-ak.txt" "X509v3 Authority Key Identifier" "$tag: tpm-ak has an AKI"
    openssl asn1parse -in "$T/$tag-ak.pem" -strparse "$(openssl asn1parse -in "$T/$tag-ak.pem" | grep -A2 'Subject Alternative Name' | grep 'OCTET STRING' | cut -d: -f1 | tr -d ' ')" >"$T/$tag-san.asn1"
    [ "$(grep -c 'SET' "$T/$tag-san.asn1")" = 1 ] && [ "$(grep -c 'UTF8STRING' "$T/$tag-san.asn1")" = 3 ] &&
        ok "$tag: one SET of three UTF8String attributes" || { not_ok "$tag: one SET of three UTF8String attributes"; cat "$T/$tag-san.asn1"; }
    expect 0 "$tag: tpm-ak certificate verifies" -- openssl verify -CAfile "$T/$tag-root.pem" "$T/$tag-ak.pem"
}

# ---- the software store -------------------------------------------------------
chain "$T/kv.conf" soft ec-p256 ec-p384 ed25519 software
kv keygen ak-soft --type ec-p256 >/dev/null
kv pubkey ak-soft -o "$T/ak-soft.pub"

# two CA levels under the root: what a CA hands out is the new certificate
# and the CA's own stored chain without the root, ready to import as is
kv keygen l2-mid --type ec-p256 >/dev/null
kv keygen l2-issuing --type ec-p256 >/dev/null
kv keygen l2-dev --type ec-p256 >/dev/null
kv csr l2-mid --subject "CN=L2 Mid CA" -o "$T/l2-mid.csr"
expect 0 "l2: the root issues a sub-CA that may have one more CA under it" -- kv ca sign soft-root --csr "$T/l2-mid.csr" --profile sub-ca --path-len 1 -o "$T/l2-mid.pem"
expect 0 "l2: stored with its key" -- kv cert import l2-mid "$T/l2-mid.pem"
kv csr l2-issuing --subject "CN=L2 Issuing CA" -o "$T/l2-issuing.csr"
expect 0 "l2: the mid CA issues the issuing CA" -- kv ca sign l2-mid --csr "$T/l2-issuing.csr" --profile sub-ca -o "$T/l2-issuing-chain.pem"
[ "$(ncerts "$T/l2-issuing-chain.pem")" = 2 ] && ok "l2: the issuing CA comes with the mid CA" || not_ok "l2: the issuing CA comes with the mid CA"
expect 0 "l2: its chain stored with its key" -- kv cert import l2-issuing "$T/l2-issuing-chain.pem"
kv csr l2-dev --subject "CN=l2-dev" --san dns:l2-dev.example.org -o "$T/l2-dev.csr"
expect 0 "l2: the issuing CA issues a device certificate" -- kv ca sign l2-issuing --csr "$T/l2-dev.csr" --profile device-identity -o "$T/l2-dev-chain.pem"
[ "$(ncerts "$T/l2-dev-chain.pem")" = 3 ] && ok "l2: leaf, issuing CA and mid CA, no root" || not_ok "l2: leaf, issuing CA and mid CA, no root ($(ncerts "$T/l2-dev-chain.pem"))"
expect 0 "l2: the whole chain imports with the device key" -- kv cert import l2-dev "$T/l2-dev-chain.pem"
first_cert "$T/l2-dev-chain.pem" "$T/l2-dev.pem"
expect 0 "l2: openssl verify -CAfile root -untrusted (what the CA handed out)" -- openssl verify -CAfile "$T/soft-root.pem" -untrusted "$T/l2-dev-chain.pem" "$T/l2-dev.pem"
kv csr l2-dev --subject "CN=l2-deeper" -o "$T/l2-deeper.csr"
expect 1 "l2: the issuing CA (path length 0) cannot make another CA" -- kv ca sign l2-issuing --csr "$T/l2-deeper.csr" --profile sub-ca
contains "$T/err" "path" "l2: the refusal names the path length"
tpm_ak "$T/kv.conf" soft "$T/ak-soft.pub"

# revocation and the CRL
expect 0 "a client certificate to revoke" -- kv ca sign soft-root --pubkey "$T/ak-soft.pub" --subject CN=revoked --san uri:urn:dev:1 --profile tls-client -o "$T/revoked.pem"
kv keygen other --type ec-p256 >/dev/null
kv pubkey other -o "$T/other.pub"
expect 0 "and one to keep" -- kv ca sign soft-root --pubkey "$T/other.pub" --subject CN=kept --profile device-identity -o "$T/kept.pem"
rserial=$(openssl x509 -in "$T/revoked.pem" -noout -serial | cut -d= -f2)
expect 0 "revoke it (keyCompromise)" -- kv ca revoke soft-root --serial "$rserial" --reason keyCompromise
expect 1 "revoke it again" -- kv ca revoke soft-root --serial "$rserial"
contains "$T/err" "already revoked at" "it says when it was revoked"
expect 1 "an unknown serial" -- kv ca revoke soft-root --serial 0123456789ABCDEF
contains "$T/err" "no certificate with serial 0123456789ABCDEF" "it names the serial"
expect 2 "an unknown reason" -- kv ca revoke soft-root --serial "$rserial" --reason bored
expect 0 "CRL" -- kv ca crl soft-root -o "$T/crl1.pem"
expect 0 "second CRL" -- kv ca crl soft-root --days 30 -o "$T/crl.pem"
expect 0 "openssl crl -verify -CAfile accepts it" -- openssl crl -in "$T/crl.pem" -CAfile "$T/soft-root.pem" -verify -noout
openssl crl -in "$T/crl.pem" -noout -text >"$T/crl.txt"
contains "$T/crl.txt" "Version 2" "CRL is v2"
contains "$T/crl.txt" "X509v3 CRL Number: *$" "CRL has a number"
grep -A1 'CRL Number' "$T/crl.txt" | grep -q '^ *2$' && ok "cRLNumber counts CRLs (2)" || not_ok "cRLNumber counts CRLs (2)"
contains "$T/crl.txt" "Serial Number: $rserial" "CRL lists the revoked serial"
contains "$T/crl.txt" "Key Compromise" "with its reason"
contains "$T/crl.txt" "X509v3 Authority Key Identifier" "CRL has the AKI"
ski=$(openssl x509 -in "$T/soft-root.pem" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' ')
aki=$(grep -A1 'Authority Key Identifier' "$T/crl.txt" | tail -n 1 | sed 's/^ *\(keyid:\)\{0,1\}//' | tr -d ' ')
[ -n "$ski" ] && [ "$aki" = "$ski" ] && ok "the CRL's AKI is the CA's key identifier" ||
    not_ok "the CRL's AKI is the CA's key identifier ('$aki' vs '$ski')"
expect 2 "openssl verify -crl_check refuses the revoked certificate" -- openssl verify -crl_check -CAfile "$T/soft-root.pem" -CRLfile "$T/crl.pem" "$T/revoked.pem"
cat "$T/out" "$T/err" >"$T/both"
contains "$T/both" "certificate revoked" "openssl says it is revoked"
expect 0 "and accepts the other" -- openssl verify -crl_check -CAfile "$T/soft-root.pem" -CRLfile "$T/crl.pem" "$T/kept.pem"

# two processes issuing at once: both succeed, with distinct serials
before=$(rows soft-root)
for p in 1 2; do
    ( for i in 1 2 3 4 5 6; do kv ca sign soft-root --csr "$T/soft-leaf.csr" --profile tls-client -o "$T/race.$p.$i.pem" || echo fail; done ) >"$T/race.$p" 2>&1 &
done
wait
if grep -q fail "$T/race.1" "$T/race.2"; then not_ok "concurrent issuers all succeed"; cat "$T/race.1" "$T/race.2"; else ok "concurrent issuers all succeed"; fi
[ "$(rows soft-root)" = $((before + 12)) ] && ok "twelve more rows" || not_ok "twelve more rows"
[ "$(for f in "$T"/race.*.pem; do openssl x509 -in "$f" -noout -serial; done | sort -u | wc -l)" = 12 ] &&
    ok "twelve distinct serials" || not_ok "twelve distinct serials"

# bad input: each a clear error with nothing recorded
n=$(rows soft-root)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/o.key" 2>/dev/null
openssl req -new -key "$T/o.key" -subj /CN=bad -outform DER -out "$T/good.der"
# one bit of the signature flipped
cp "$T/good.der" "$T/badsig.der"
at=$(($(stat -c %s "$T/good.der") - 3))
byte=$(od -An -tu1 -j "$at" -N1 "$T/good.der" | tr -d ' ')
printf "\\$(printf %o $((byte ^ 1)))" | dd of="$T/badsig.der" bs=1 seek="$at" conv=notrunc 2>/dev/null
cmp -s "$T/good.der" "$T/badsig.der" && not_ok "the request was damaged"
expect 1 "a request with a broken signature" -- kv ca sign soft-root --csr "$T/badsig.der" --profile tls-client
contains "$T/err" "signature does not verify" "it says the signature does not verify"
same_rows soft-root "$n" "broken signature"
openssl req -new -key "$T/o.key" -subj /CN=sneaky -addext basicConstraints=critical,CA:TRUE -out "$T/ca-true.csr"
expect 1 "a request for CA:TRUE under tls-client" -- kv ca sign soft-root --csr "$T/ca-true.csr" --profile tls-client
contains "$T/err" "profile tls-client issues no CA certificates; the request asks for CA:TRUE" "it names the profile and the request"
same_rows soft-root "$n" "CA:TRUE under tls-client"
openssl req -new -key "$T/o.key" -subj /CN=x -addext extendedKeyUsage=codeSigning -out "$T/eku.csr"
expect 1 "a request for an EKU the profile does not grant" -- kv ca sign soft-root --csr "$T/eku.csr" --profile tls-client
contains "$T/err" "does not grant extended key usage codeSigning" "it names the usage"
head -c $(($(stat -c %s "$T/good.der") - 10)) "$T/good.der" >"$T/trunc.der"
expect 1 "a malformed DER request" -- kv ca sign soft-root --csr "$T/trunc.der" --profile tls-client
contains "$T/err" "not a PKCS#10 certificate request" "it says what is wrong"
printf -- '-----BEGIN CERTIFICATE REQUEST-----\nMIIBnotbase64!!\n-----END CERTIFICATE REQUEST-----\n' >"$T/bad.pem"
expect 1 "a malformed PEM request" -- kv ca sign soft-root --csr "$T/bad.pem" --profile tls-client
contains "$T/err" "not a PKCS#10 certificate request" "it says what is wrong"
subj=""
for i in $(seq 1 40); do subj="$subj/OU=organisational-unit-$i"; done
openssl req -new -key "$T/o.key" -subj "$subj/CN=big" -out "$T/big.csr"
expect 1 "an oversized subject" -- kv ca sign soft-root --csr "$T/big.csr" --profile tls-client
contains "$T/err" "subject" "it names the subject"
expect 1 "an unknown profile" -- kv ca sign soft-root --csr "$T/soft-leaf.csr" --profile nonesuch
contains "$T/err" "unknown certificate profile" "it says the profile is unknown"
if grep -q nonesuch "$T/err"; then not_ok "the message does not echo the argument"; else ok "the message does not echo the argument"; fi
expect 1 "an email SAN under tls-server" -- kv ca sign soft-root --pubkey "$T/other.pub" --subject CN=x --san email:a@example.org --san dns:x.example.org --profile tls-server
contains "$T/err" "does not allow a subject alternative name of kind email" "it names the SAN kind"
expect 1 "a bad TPM manufacturer" -- kv ca sign soft-root --pubkey "$T/ak-soft.pub" --profile tpm-ak --tpm-manufacturer STM --tpm-model swtpm --tpm-version id:00020000
contains "$T/err" "TPM manufacturer" "it names the field"
openssl req -new -newkey rsa:1024 -nodes -keyout "$T/small.key" -subj /CN=small -out "$T/small.csr" 2>/dev/null
expect 1 "a request for a 1024-bit RSA key" -- kv ca sign soft-root --csr "$T/small.csr" --profile tls-client
contains "$T/err" "not one the CA certifies" "it names the key type"
# a 16384-bit RSA request (tests/csr/rsa16384.csr, made once with openssl
# genrsa 16384 and openssl req -new: the key took minutes to make): refused by
# its size before its signature is checked (OpenSSL's public key check cost
# a second on it)
t0=$(date +%s%N)
expect 1 "a request for a 16384-bit RSA key" -- kv ca sign soft-root --csr "$(dirname "$0")/csr/rsa16384.csr" --profile tls-client
echo "# refused in $((($(date +%s%N) - t0) / 1000000)) ms"
contains "$T/err" "(RSA, 16384 bits) is not one the CA certifies" "it names the key type and size"
contains "$T/err" "RSA of 2048 to 8192 bits" "and the sizes it certifies"
openssl req -new -key "$T/o.key" -subj / -out "$T/nosubj.csr" 2>/dev/null
expect 1 "a request without a subject under sub-ca" -- kv ca sign soft-root --csr "$T/nosubj.csr" --profile sub-ca
contains "$T/err" "a CA certificate needs a subject" "it says a CA needs a subject"
expect 1 "a request without a subject or a SAN under tls-client" -- kv ca sign soft-root --csr "$T/nosubj.csr" --profile tls-client
contains "$T/err" "needs a subject or a subject alternative name" "it says a name is needed"
openssl req -new -key "$T/o.key" -subj / -addext "subjectAltName=dirName:dir_sect" -config /dev/stdin -out "$T/dirname.csr" 2>/dev/null <<CNF || true
[req]
distinguished_name = dn
[dn]
[dir_sect]
CN = smuggled
CNF
if [ -s "$T/dirname.csr" ]; then
    expect 1 "a request for a directoryName SAN under device-identity" -- kv ca sign soft-root --csr "$T/dirname.csr" --profile device-identity
    contains "$T/err" "does not allow a subject alternative name" "it refuses the SAN kind"
else
    not_ok "openssl made a request with a directoryName SAN"
fi
# keys no CA should certify: explicit curve parameters, an RSA exponent of 1
openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout -out "$T/explicit.key" 2>/dev/null
openssl pkey -in "$T/explicit.key" -pubout -out "$T/explicit.pub"
expect 1 "an EC key with explicit curve parameters" -- kv ca sign soft-root --pubkey "$T/explicit.pub" --subject CN=x --profile tls-client
contains "$T/err" "named curves only" "it names the problem"
openssl req -new -key "$T/explicit.key" -subj /CN=x -out "$T/explicit.csr" 2>/dev/null
expect 1 "a request for such a key" -- kv ca sign soft-root --csr "$T/explicit.csr" --profile tls-client
contains "$T/err" "named curves only" "it names the problem"
openssl genrsa -out "$T/rsa.key" 2048 2>/dev/null
printf 'asn1=SEQUENCE:spki\n[spki]\nalg=SEQUENCE:alg\nkey=BITWRAP,SEQUENCE:rsa\n[alg]\noid=OID:rsaEncryption\np=NULL\n[rsa]\nn=INTEGER:0x%s\ne=INTEGER:1\n' \
    "$(openssl rsa -in "$T/rsa.key" -noout -modulus | cut -d= -f2)" >"$T/e1.cnf"
openssl asn1parse -genconf "$T/e1.cnf" -out "$T/e1.der" >/dev/null
expect 1 "an RSA key with public exponent 1" -- kv ca sign soft-root --pubkey "$T/e1.der" --subject CN=x --profile tls-client
contains "$T/err" "public key check" "it says the key fails the check"
same_rows soft-root "$n" "every refused request"
expect 2 "--csr and --pubkey together" -- kv ca sign soft-root --csr "$T/good.der" --pubkey "$T/other.pub" --profile tls-client

# an expired CA certificate: issued to a vault key by an openssl CA, in 2020
mkdir -p "$T/oca"
: >"$T/oca/index.txt"
echo 01 >"$T/oca/serial"
openssl req -x509 -new -key "$T/o.key" -subj /CN=Old-Root -days 3650 -out "$T/oca/root.pem"
cat >"$T/oca/ca.cnf" <<CNF
[ca]
default_ca = old
[old]
database = $T/oca/index.txt
serial = $T/oca/serial
new_certs_dir = $T/oca
certificate = $T/oca/root.pem
private_key = $T/o.key
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF
kv keygen expired --type ec-p256 >/dev/null
kv csr expired --subject CN=Expired-CA -o "$T/expired.csr"
expect 0 "an openssl CA certifies a vault key for January 2020" -- openssl ca -batch -notext -config "$T/oca/ca.cnf" -extensions v3_ca -startdate 20200101000000Z -enddate 20200201000000Z -in "$T/expired.csr" -out "$T/expired.pem"
expect 0 "stored with the key" -- kv cert expired --import "$T/expired.pem"
expect 1 "an expired CA certificate" -- kv ca sign expired --csr "$T/soft-leaf.csr" --profile tls-client
contains "$T/err" "expired at 2020-02-01" "it names the CA's not-after"
[ ! -e "$DB/expired.db" ] || [ "$(rows expired)" = 0 ] && ok "expired CA: nothing recorded" || not_ok "expired CA: nothing recorded"
expect 1 "no CRL from it either" -- kv ca crl expired -o "$T/x.crl"
expect 1 "a CA key without a certificate" -- kv ca sign other --csr "$T/soft-leaf.csr" --profile tls-client
contains "$T/err" "no certificate stored" "it says the CA has no certificate"
expect 0 "store a leaf certificate with the leaf key" -- kv cert soft-leaf --import "$T/soft-leaf.pem"
expect 1 "a leaf certificate cannot issue" -- kv ca sign soft-leaf --csr "$T/soft-sub.csr" --profile tls-client
contains "$T/err" "is not a CA certificate" "it says so"

# the record: modes, and refused when swapped in from another CA
[ "$(stat -c %a "$DB")" = 700 ] && ok "CA directory is 0700" || not_ok "CA directory is 0700"
[ "$(stat -c %a "$DB/soft-root.db")" = 600 ] && ok "CA record is 0600" || not_ok "CA record is 0600"
cp "$DB/soft-root.db" "$T/root.db.saved"
cp "$DB/soft-sub.db" "$DB/soft-root.db"
expect 1 "a record of another CA swapped in" -- kv ca crl soft-root -o "$T/x.crl"
contains "$T/err" "belongs to another CA key" "it is refused"
contains "$T/err" "$DB/soft-root.db" "naming the file"
cp "$T/root.db.saved" "$DB/soft-root.db"

# ---- a SoftHSM token ---------------------------------------------------------
if with KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    chain "$KV_P11_DIR/keyvault.conf" p11 ec-p256 rsa-2048 ec-p384 pkcs11
    "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" keygen p11-ak --type ec-p256 --backend pkcs11 >/dev/null
    "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" pubkey p11-ak -o "$T/p11-ak.pub"
    tpm_ak "$KV_P11_DIR/keyvault.conf" p11 "$T/p11-ak.pub"
    expect 0 "p11: revoke" -- "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" ca revoke p11-sub --serial "$(openssl x509 -in "$T/p11-leaf.pem" -noout -serial | cut -d= -f2)" --reason superseded
    expect 0 "p11: the sub-CA's CRL, signed on the token" -- "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" ca crl p11-sub -o "$T/p11.crl"
    cat "$T/p11-root.pem" "$T/p11-sub.pem" >"$T/p11-cas.pem"
    expect 0 "p11: openssl crl -verify" -- openssl crl -in "$T/p11.crl" -CAfile "$T/p11-cas.pem" -verify -noout
    expect 2 "p11: openssl verify -crl_check refuses the revoked leaf" -- openssl verify -crl_check -CAfile "$T/p11-root.pem" -untrusted "$T/p11-sub.pem" -CRLfile "$T/p11.crl" "$T/p11-leaf.pem"
fi

# ---- swtpm -------------------------------------------------------------------
if with KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    chain "$KV_TPM_DIR/keyvault.conf" tpm ec-p256 rsa-2048 ec-p256 tpm
    "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" tpm ak -o "$T/tpm-ak.pub"
    tpm_ak "$KV_TPM_DIR/keyvault.conf" tpm "$T/tpm-ak.pub"
    # the TCG attributes as swtpm writes them in its own EK certificate
    expect 0 "tpm: the EK certificate" -- "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" tpm ek-cert -o "$T/ek.pem"
    openssl x509 -in "$T/ek.pem" -noout -text >"$T/ek.txt"
    contains "$T/ek.txt" "X509v3 Subject Alternative Name: critical" "swtpm's EK certificate has a critical SAN too"
    for oid in 2.23.133.2.1 2.23.133.2.2 2.23.133.2.3; do
        grep -A1 'Subject Alternative Name' "$T/ek.txt" | grep -q "$oid=" && grep -q "$oid=" "$T/tpm-san.txt" &&
            ok "tpm: $oid in both" || not_ok "tpm: $oid in both"
    done
fi
finish
