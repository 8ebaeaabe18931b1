#!/bin/sh
# chain.sh - certificate chains kept with keys, on the software store, a
# SoftHSM token and swtpm: a root -> intermediate -> leaf made by openssl
# (the leaf for the vault key's public key) is imported, read back byte for
# byte, verified by `openssl verify`, and its facts checked field by field
# (`keyvault cert show --json`, through jq). Bad chains are refused with a
# clear error and leave the stored chain as it was. On the token,
# pkcs11-tool shows the leaf with the key's ID and label and the
# intermediate as an object of its own, never duplicated.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
soft_store 'chain test passphrase'
for tool in jq faketime; do
    command -v "$tool" >/dev/null || { echo "chain.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
p11() { pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_P11_TOKEN" "$@"; }

# ---- the openssl side: root, intermediate, another CA, a stranger's key ----
P=$T/pki
mkdir -p "$P"
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
newkey "$P/root.key"
newkey "$P/inter.key"
newkey "$P/tpl.key"
newkey "$P/stranger.key"
openssl pkey -in "$P/stranger.key" -pubout -out "$P/stranger.pub"
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n' >"$P/ca.ext"
printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:device-42.example,IP:192.0.2.7,URI:urn:dev:42,email:ops@example.com\n' >"$P/leaf.ext"
openssl req -x509 -new -key "$P/root.key" -subj "/O=kv/CN=Chain Test Root" -days 60 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$P/root.crt"
openssl req -new -key "$P/inter.key" -subj "/O=kv/CN=Chain Test Intermediate" -out "$P/inter.csr"
openssl x509 -req -in "$P/inter.csr" -CA "$P/root.crt" -CAkey "$P/root.key" \
    -set_serial 0x1001 -days 50 -extfile "$P/ca.ext" -out "$P/inter.crt" 2>/dev/null
openssl req -new -key "$P/tpl.key" -subj "/O=Fleet/CN=device-42" -out "$P/leaf.csr"
[ -s "$P/inter.crt" ] && ok "openssl made a root and an intermediate" || not_ok "openssl made a root and an intermediate"
# the intermediate with one signature byte changed: it still parses
openssl x509 -in "$P/inter.crt" -outform DER -out "$P/inter.der"
last=$(tail -c 1 "$P/inter.der" | od -An -tu1 | tr -d ' ')
head -c -1 "$P/inter.der" >"$P/badsig.der"
if [ "$last" = 1 ]; then printf '\002' >>"$P/badsig.der"; else printf '\001' >>"$P/badsig.der"; fi
openssl x509 -inform DER -in "$P/badsig.der" -out "$P/badsig.crt"
openssl x509 -in "$P/badsig.crt" -noout 2>/dev/null && ok "the broken intermediate parses" ||
    not_ok "the broken intermediate parses"

# leaf PUB OUT DAYS [faketime offset]: a leaf for PUB issued by the intermediate
leaf() {
    ${4:+faketime -f "$4"} openssl x509 -req -in "$P/leaf.csr" -CA "$P/inter.crt" \
        -CAkey "$P/inter.key" -force_pubkey "$1" -set_serial 0x2002 -days "$3" \
        -extfile "$P/leaf.ext" -out "$2" 2>/dev/null
}
leaf "$P/stranger.pub" "$P/stranger.crt" 30

# cert_is NAME WANT DESCRIPTION: the chain stored with NAME is the file WANT
cert_is() {
    expect 0 "$3: the chain reads back" -- kv cert "$1" -o "$T/now.pem"
    cmp -s "$T/now.pem" "$2" && ok "$3: the stored chain is unchanged" ||
        not_ok "$3: the stored chain is unchanged"
}
# field NAME JQ WANT: one field of `cert show --json`
field() {
    got=$(jq -c "$2" "$T/show.json")
    [ "$got" = "$3" ] && ok "$1: $2 is $3" || not_ok "$1: $2 is $3 (got $got)"
}
# refuse NAME FILE TEXT DESCRIPTION: import refused with TEXT, nothing stored
refuse() {
    expect 1 "$4 is refused" -- kv cert import "$1" "$2"
    contains "$T/err" "$3" "$4: the error says why"
    cert_is "$1" "$B/chain.pem" "after $4"
}

# ---- on one backend -----------------------------------------------------------
run_backend() {
    be=$1
    CONF=$2
    name=c-$be
    B=$T/$be
    mkdir -p "$B"
    kv() { "$KEYVAULT" -c "$CONF" "$@"; }
    expect 0 "$be: keygen" -- kv keygen "$name" --type ec-p256 --backend "$be"
    expect 0 "$be: pubkey" -- kv pubkey "$name" -o "$B/pub.pem"
    leaf "$B/pub.pem" "$B/leaf.crt" 30
    cat "$B/leaf.crt" "$P/inter.crt" >"$B/chain.pem"
    expect 1 "$be: no chain yet" -- kv cert "$name"
    contains "$T/err" "no certificate" "$be: the error says there is none"

    expect 0 "$be: cert import" -- kv cert import "$name" "$B/chain.pem"
    contains "$T/out" "stored the certificate chain with '$name'" "$be: import names the key"
    expect 0 "$be: cert NAME -o" -- kv cert "$name" -o "$B/back.pem"
    expect 0 "$be: the chain reads back byte for byte" -- cmp "$B/back.pem" "$B/chain.pem"
    expect 0 "$be: openssl verifies the chain read back" -- \
        openssl verify -CAfile "$P/root.crt" -untrusted "$B/back.pem" "$B/back.pem"
    t0=$(date +%s)
    expect 0 "$be: cert show --json" -- kv cert show "$name" --json
    t1=$(date +%s)
    cp "$T/out" "$T/show.json"
    field "$be" .subject '"CN=device-42,O=Fleet"'
    field "$be" .issuer '"CN=Chain Test Intermediate,O=kv"'
    field "$be" .serial '"2002"'
    field "$be" .sans '["dns:device-42.example","ip:192.0.2.7","uri:urn:dev:42","email:ops@example.com"]'
    field "$be" '.not_after - .not_before' 2592000
    field "$be" '.renew_after - .not_before' 1728000
    # whole days from the moment of the call to not_after
    na=$(jq .not_after "$T/show.json")
    field "$be" ".days_left >= $(((na - t1) / 86400)) and .days_left <= $(((na - t0) / 86400))" true
    field "$be" .renewal_due false
    field "$be" .expired false
    field "$be" .is_ca false
    field "$be" .chain_len 2
    nb=$(date -u -d "$(openssl x509 -in "$B/leaf.crt" -noout -startdate | cut -d= -f2)" +%s)
    field "$be" .not_before "$nb"
    expect 0 "$be: cert show" -- kv cert show "$name"
    contains "$T/out" "^renewal due: no" "$be: the text form says renewal is not due"
    contains "$T/out" "^san:         ip:192.0.2.7" "$be: the text form lists the SANs"

    # a leaf 20 hours into its day: due at 2/3, not at 90%, and at 80%
    leaf "$B/pub.pem" "$B/old.crt" 1 -20h
    # (on a token, issuers are shared objects a read finds again: the root
    # is stored there after the chain tests)
    if [ "$be" = pkcs11 ]; then
        cat "$B/old.crt" "$P/inter.crt" >"$B/old.pem"
        oldlen=2
    else
        cat "$B/old.crt" "$P/inter.crt" "$P/root.crt" >"$B/old.pem"
        oldlen=3
    fi
    expect 0 "$be: import a dated chain" -- kv cert import "$name" "$B/old.pem"
    expect 0 "$be: cert show (default threshold)" -- kv cert show "$name" --json
    cp "$T/out" "$T/show.json"
    field "$be" .renewal_due true
    field "$be" '.renew_after - .not_before' 57600
    field "$be" .days_left 0
    field "$be" .expired false
    field "$be" .chain_len "$oldlen"
    cp "$CONF" "$B/t90.conf"
    printf '\n[x509]\nrenew_threshold = 90%%\n' >>"$B/t90.conf"
    expect 0 "$be: cert show at 90%" -- "$KEYVAULT" -c "$B/t90.conf" cert show "$name" --json
    cp "$T/out" "$T/show.json"
    field "$be at 90%" .renewal_due false
    field "$be at 90%" '.renew_after - .not_before' 77760
    cp "$CONF" "$B/t80.conf"
    printf '\n[x509]\nrenew_threshold = 80%%\n' >>"$B/t80.conf"
    expect 0 "$be: cert show at 80%" -- "$KEYVAULT" -c "$B/t80.conf" cert show "$name" --json
    cp "$T/out" "$T/show.json"
    field "$be at 80%" .renewal_due true
    cp "$CONF" "$B/bad.conf"
    printf '\n[x509]\nrenew_threshold = 150%%\n' >>"$B/bad.conf"
    expect 1 "$be: a threshold of 150% is refused" -- "$KEYVAULT" -c "$B/bad.conf" cert show "$name"
    contains "$T/err" "renew_threshold.*1% to 99%" "$be: the error names the key and the range"
    cp "$CONF" "$B/typo.conf"
    printf '\n[x509]\nrenew_treshold = 50%%\n' >>"$B/typo.conf"
    expect 1 "$be: an unknown [x509] key is refused" -- "$KEYVAULT" -c "$B/typo.conf" backends
    contains "$T/err" "renew_threshold" "$be: the error names the nearest key"

    # one DER certificate, then the chain again through the old option
    openssl x509 -in "$B/leaf.crt" -outform DER -out "$B/leaf.der"
    # a chain of one; on a token the intermediate stays, and is found again
    expect 0 "$be: import one DER certificate" -- kv cert import "$name" "$B/leaf.der"
    expect 0 "$be: cert show after DER" -- kv cert show "$name" --json
    cp "$T/out" "$T/show.json"
    if [ "$be" = pkcs11 ]; then
        field "$be" .chain_len 2
        cert_is "$name" "$B/chain.pem" "$be: a leaf under an issuer the token holds"
    else
        field "$be" .chain_len 1
        cert_is "$name" "$B/leaf.crt" "$be: a chain of one"
    fi
    expect 0 "$be: cert NAME --import (old form)" -- kv cert "$name" --import "$B/chain.pem"
    cert_is "$name" "$B/chain.pem" "$be: after --import"

    # bad input: each refused, the chain stored before stays
    cat "$P/stranger.crt" "$P/inter.crt" >"$B/stranger.pem"
    refuse "$name" "$B/stranger.pem" "the chain's leaf is not the certificate of key '$name'" \
        "$be: a chain whose leaf is not the key's"
    cat "$B/leaf.crt" "$P/root.crt" "$P/inter.crt" >"$B/order.pem"
    refuse "$name" "$B/order.pem" "certificate 1 of the chain .* is issued by .* not by certificate 2" \
        "$be: certificates out of order"
    cat "$P/inter.crt" "$B/leaf.crt" >"$B/reversed.pem"
    refuse "$name" "$B/reversed.pem" "leaf is not the certificate" "$be: a chain root first"
    cat "$B/leaf.crt" "$P/badsig.crt" "$P/root.crt" >"$B/badsig.pem"
    refuse "$name" "$B/badsig.pem" "signature of certificate 2 of the chain .* does not verify with the public key of certificate 3" \
        "$be: a broken signature in the intermediate"
    sed '3s/[A-Za-z]/*/' "$B/chain.pem" >"$B/mangled.pem"
    refuse "$name" "$B/mangled.pem" "certificate 1: malformed PEM" "$be: malformed PEM"
    sed '/END CERT/q' "$B/chain.pem" | sed '$d' >"$B/cut.pem"
    refuse "$name" "$B/cut.pem" "certificate 1: malformed PEM" "$be: PEM without its END line"
    head -c 200 "$B/leaf.der" >"$B/short.der"
    refuse "$name" "$B/short.der" "neither a PEM bundle nor a DER certificate" "$be: truncated DER"
    cat "$B/leaf.der" "$B/leaf.der" >"$B/twice.der"
    refuse "$name" "$B/twice.der" "bytes follow the DER certificate" "$be: DER with trailing bytes"
    { cat "$B/chain.pem"; echo 'trailing text'; } >"$B/trailing.pem"
    refuse "$name" "$B/trailing.pem" "unexpected text at byte .*after certificate 2" \
        "$be: trailing garbage after a PEM bundle"
    { cat "$B/leaf.crt"; for _ in 1 2 3 4 5 6 7 8; do cat "$P/inter.crt"; done; } >"$B/nine.pem"
    refuse "$name" "$B/nine.pem" "holds more than 8 certificates" "$be: a bundle of 9"
    openssl pkey -in "$P/stranger.key" >"$B/key.pem"
    refuse "$name" "$B/key.pem" "certificate 1: a PEM block of type 'PRIVATE KEY'" "$be: a private key"
    cat "$B/leaf.crt" "$B/leaf.crt" >"$B/self.pem"
    refuse "$name" "$B/self.pem" "certificate 2 of the chain is certificate 1 again" \
        "$be: the leaf twice"
    cat "$B/leaf.crt" "$P/inter.crt" "$P/root.crt" "$P/root.crt" >"$B/root2.pem"
    refuse "$name" "$B/root2.pem" "certificate 4 of the chain is certificate 3 again" \
        "$be: the root twice"
    { cat "$B/chain.pem"; head -c 70000 /dev/zero | tr '\0' '\n'; } >"$B/big.pem"
    refuse "$name" "$B/big.pem" "the chain is 7[0-9]* bytes; at most 65536 are kept" \
        "$be: a chain over 64 KiB"
    expect 1 "$be: an empty file is refused" -- kv cert import "$name" /dev/null
    contains "$T/err" "the chain: certificate 1: neither a PEM bundle nor a DER certificate" \
        "$be: the empty file's error says why"
}

# the same on each backend
run_backend software "$T/kv.conf"
K=$T/store
cmp -s "$K/c-software.crt" "$T/software/chain.pem" && ok "software: NAME.crt is the PEM chain" ||
    not_ok "software: NAME.crt is the PEM chain"
[ "$(stat -c %a "$K/c-software.crt")" = 600 ] && ok "software: NAME.crt is 0600" ||
    not_ok "software: NAME.crt is 0600"
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
expect 0 "software: a second key" -- kv keygen other --type ec-p256
leaf "$P/stranger.pub" "$T/x.crt" 30
cp "$T/software/chain.pem" "$K/other.crt" && chmod 600 "$K/other.crt"
expect 1 "software: another key's chain copied beside a key" -- kv cert other
contains "$T/err" "key 'other': certificate file '$K/other.crt' is for another public key" \
    "software: the error names the key and the file"
expect 1 "software: its facts are refused too" -- kv cert show other
cat "$T/software/leaf.crt" "$P/root.crt" "$P/inter.crt" >"$K/c-software.crt"
expect 1 "software: a NAME.crt edited out of order" -- kv cert c-software
contains "$T/err" "key 'c-software': certificate 1 of the stored chain .* is issued by" \
    "software: the error names the key and the certificate"
expect 1 "software: its facts are refused too" -- kv cert show c-software
printf 'junk\n' >"$K/other.crt"
expect 1 "software: a damaged NAME.crt" -- kv cert other
contains "$T/err" "key 'other': certificate file .* neither a PEM bundle" "software: the error names the file"

run_backend pkcs11 "$KV_P11_DIR/keyvault.conf"
kv() { "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" "$@"; }
expect 0 "pkcs11: pkcs11-tool lists the private key" -- p11 --login --pin "$KV_P11_PIN" --list-objects --type privkey
keyid=$(awk '/label: *c-pkcs11$/ { f = 1 } f && /ID:/ { print $2; exit }' "$T/out")
ski=$(openssl x509 -in "$P/inter.crt" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' | tr A-F a-f)
expect 0 "pkcs11: import the chain again" -- kv cert import c-pkcs11 "$T/pkcs11/chain.pem"
expect 0 "pkcs11: and again" -- kv cert import c-pkcs11 "$T/pkcs11/chain.pem"
expect 0 "pkcs11: pkcs11-tool lists the certificates" -- p11 --list-objects --type cert
cp "$T/out" "$T/certs"
leafid=$(awk '/label: *c-pkcs11$/ { f = 1 } f && /ID:/ { print $2; exit }' "$T/certs")
caid=$(awk '/label: *c-pkcs11-ca1$/ { f = 1 } f && /ID:/ { print $2; exit }' "$T/certs")
[ -n "$keyid" ] && [ "$leafid" = "$keyid" ] && ok "pkcs11: the leaf has the key's ID and label" ||
    not_ok "pkcs11: the leaf has the key's ID and label (key '$keyid', leaf '$leafid')"
[ -n "$ski" ] && [ "$caid" = "$ski" ] && ok "pkcs11: the intermediate's ID is its key identifier" ||
    not_ok "pkcs11: the intermediate's ID is its key identifier ('$caid' vs '$ski')"
# count TEXT FILE N DESCRIPTION: N lines of FILE match TEXT
count() {
    n=$(grep -c -- "$1" "$2")
    [ "$n" = "$3" ] && ok "$4" || { not_ok "$4 ($n, wanted $3)"; sed 's/^/    /' "$2"; }
}
count 'label: *c-pkcs11$' "$T/certs" 1 "pkcs11: one leaf after three imports"
count 'label: *c-pkcs11-ca1$' "$T/certs" 1 "pkcs11: one intermediate after three imports"
count '^Certificate Object' "$T/certs" 2 "pkcs11: two certificate objects on the token"
expect 0 "pkcs11: a second key on the token" -- kv keygen c2 --type ec-p256 --backend pkcs11
expect 0 "pkcs11: its pubkey" -- kv pubkey c2 -o "$T/c2.pub"
leaf "$T/c2.pub" "$T/c2.crt" 30
cat "$T/c2.crt" "$P/inter.crt" >"$T/c2.pem"
expect 0 "pkcs11: its chain under the same intermediate" -- kv cert import c2 "$T/c2.pem"
expect 0 "pkcs11: pkcs11-tool lists the certificates" -- p11 --list-objects --type cert
cp "$T/out" "$T/certs"
count '^Certificate Object' "$T/certs" 3 "pkcs11: the intermediate is shared, not duplicated"
count 'label: *c2$' "$T/certs" 1 "pkcs11: the second leaf has its key's label"
expect 0 "pkcs11: the second chain reads back" -- kv cert c2 -o "$T/c2.back"
expect 0 "pkcs11: the second chain byte for byte" -- cmp "$T/c2.back" "$T/c2.pem"
cert_is c-pkcs11 "$T/pkcs11/chain.pem" "pkcs11: the first key"
# the root stored with one chain is found by the reads of both
cat "$T/pkcs11/chain.pem" "$P/root.crt" >"$T/full.pem"
expect 0 "pkcs11: a chain with its root" -- kv cert import c-pkcs11 "$T/full.pem"
cert_is c-pkcs11 "$T/full.pem" "pkcs11: the chain with its root"
expect 0 "pkcs11: pkcs11-tool lists the certificates" -- p11 --list-objects --type cert
cp "$T/out" "$T/certs"
count '^Certificate Object' "$T/certs" 4 "pkcs11: the root is an object of its own"
count 'label: *c-pkcs11-ca2$' "$T/certs" 1 "pkcs11: labelled after the key"
cat "$T/c2.pem" "$P/root.crt" >"$T/c2full.pem"
cert_is c2 "$T/c2full.pem" "pkcs11: the other key's chain reaches the root too"
expect 0 "pkcs11: openssl verifies it with the root as the only anchor" -- \
    openssl verify -CAfile "$P/root.crt" -untrusted "$T/now.pem" "$T/now.pem"
# two CAs certified by each other: reading stops where the chain comes back
newkey "$P/x.key"
newkey "$P/y.key"
for c in x y; do
    openssl req -new -key "$P/$c.key" -subj "/CN=Cross $c" -out "$P/$c.csr"
    openssl x509 -req -in "$P/$c.csr" -signkey "$P/$c.key" -days 30 -extfile "$P/ca.ext" \
        -out "$P/$c-self.crt" 2>/dev/null
done
openssl x509 -req -in "$P/x.csr" -CA "$P/y-self.crt" -CAkey "$P/y.key" -set_serial 11 -days 30 \
    -extfile "$P/ca.ext" -out "$P/x-by-y.crt" 2>/dev/null
openssl x509 -req -in "$P/y.csr" -CA "$P/x-self.crt" -CAkey "$P/x.key" -set_serial 12 -days 30 \
    -extfile "$P/ca.ext" -out "$P/y-by-x.crt" 2>/dev/null
expect 0 "pkcs11: a third key" -- kv keygen c3 --type ec-p256 --backend pkcs11
expect 0 "pkcs11: its pubkey" -- kv pubkey c3 -o "$T/c3.pub"
openssl x509 -req -in "$P/leaf.csr" -CA "$P/x-self.crt" -CAkey "$P/x.key" -force_pubkey "$T/c3.pub" \
    -set_serial 13 -days 30 -out "$T/c3.crt" 2>/dev/null
cat "$T/c3.crt" "$P/x-by-y.crt" "$P/y-by-x.crt" >"$T/c3.pem"
expect 0 "pkcs11: a chain through cross-certified CAs" -- kv cert import c3 "$T/c3.pem"
cert_is c3 "$T/c3.pem" "pkcs11: the cross-certified chain reads back as stored"
# another tool leaves a certificate under the key's CKA_ID: one for another
# key (c3's), written by pkcs11-tool; the key's own leaf is still the one read
c2id=$(p11 --list-objects --type cert | awk '/label: *c2$/ { f = 1 } f && /ID:/ { print $2; exit }')
openssl x509 -in "$T/c3.crt" -outform DER -out "$T/c3.der"
expect 0 "pkcs11: pkcs11-tool writes c3's certificate under c2's ID" -- \
    p11 --login --pin "$KV_P11_PIN" --write-object "$T/c3.der" --type cert --id "$c2id" --label foreign
cert_is c2 "$T/c2full.pem" "pkcs11: c2's chain still reads as its own beside the foreign one"
expect 0 "pkcs11: cert show still names c2's certificate" -- kv cert show c2 --json
contains "$T/out" "CN=Chain Test Intermediate" "pkcs11: and shows its own issuer, not the foreign one's"
expect 0 "pkcs11: destroy the first key" -- kv destroy c-pkcs11
expect 0 "pkcs11: pkcs11-tool lists the certificates" -- p11 --list-objects --type cert
cp "$T/out" "$T/certs"
count 'label: *c-pkcs11$' "$T/certs" 0 "pkcs11: its leaf went with it"
cert_is c2 "$T/c2full.pem" "pkcs11: the shared issuers stay for the other key"

run_backend tpm "$KV_TPM_DIR/keyvault.conf"
kv() { "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" "$@"; }
cmp -s "$KV_TPM_DIR/keys/c-tpm.crt" "$T/tpm/chain.pem" && ok "tpm: NAME.crt is the PEM chain" ||
    not_ok "tpm: NAME.crt is the PEM chain"
expect 0 "tpm: a key at a persistent handle" -- kv keygen tpm2:handle=0x81000321 --type ec-p256
expect 0 "tpm: its pubkey" -- kv pubkey tpm2:handle=0x81000321 -o "$T/h.pub"
leaf "$T/h.pub" "$T/h.crt" 30
expect 1 "tpm: no chain beside a persistent key" -- kv cert import tpm2:handle=0x81000321 "$T/h.crt"
contains "$T/err" "persistent TPM key .* kept beside key files" "tpm: the error says why"
expect 1 "tpm: nor read from one" -- kv cert tpm2:handle=0x81000321
contains "$T/err" "persistent TPM key" "tpm: the read error says why"

finish
