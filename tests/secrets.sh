#!/bin/sh
# secrets.sh - bad input carrying known secrets (PINs in pkcs11: URIs of a
# missing token, a missing object, objects that are no private key,
# malformed escapes, an ambiguous label, a wrong PIN; a wrong store
# passphrase; a wrong TPM auth value; secrets written inline in a
# configuration) through the library (tests/check_secrets) and the command
# line. No secret may appear in kv_errmsg, standard output, standard error
# or any file under the scratch directory, except the secret files this
# test writes itself (in $S).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
B=${KV_BUILDDIR:-$(pwd)}

# distinctive secrets (letters and digits: percent-encoding leaves them as
# they are), so that grep finds any copy
KV_SEC_PIN=PinReal7f3a9c1e0b5d2a86c4f19e3b7d05a2c8e6f41b9d3a7c05e28f6b1d94a3c7e0f25
KV_SEC_PIN_WRONG=PinWrong41d8e2b6
KV_SEC_PASS=PassReal93be0d57a1c4e8f2b6d09a3e5c7f1b84d2a6e0c9f3b75d1a8e4c06b2f9d
KV_SEC_PASS_WRONG=PassWrong5c7a11f0
KV_SEC_AUTH=AuthReal0e62f4a8c3b7d91e5f2a06b4
KV_SEC_AUTH_WRONG=AuthWrong8d1b37c2
KV_SEC_INLINE=InlineSecret2a9f6d
KV_SEC_SOPIN=SoPin64c0b2e9d
secrets="KV_SEC_PIN KV_SEC_PIN_WRONG KV_SEC_PASS KV_SEC_PASS_WRONG KV_SEC_AUTH KV_SEC_AUTH_WRONG KV_SEC_INLINE KV_SEC_SOPIN"
S=$T/secretfiles
KV_SEC_DIR=$T/sec
KV_SEC_TOKEN=kvsecrets
KV_SEC_PINFILE_WRONG=$S/pin-wrong
mkdir -p "$S" "$KV_SEC_DIR" "$T/cli"
chmod 700 "$S" "$KV_SEC_DIR"
for f in pin:KV_SEC_PIN pin-wrong:KV_SEC_PIN_WRONG pass:KV_SEC_PASS pass-wrong:KV_SEC_PASS_WRONG \
         auth:KV_SEC_AUTH auth-wrong:KV_SEC_AUTH_WRONG; do
    eval "printf '%s\n' \"\$${f#*:}\"" >"$S/${f%%:*}"
    chmod 600 "$S/${f%%:*}"
done
KV_SEC_FILES=$S
export KV_SEC_PIN KV_SEC_PIN_WRONG KV_SEC_PASS KV_SEC_PASS_WRONG KV_SEC_AUTH KV_SEC_AUTH_WRONG \
    KV_SEC_INLINE KV_SEC_DIR KV_SEC_FILES KV_SEC_TOKEN KV_SEC_PINFILE_WRONG

# a token of its own, with a key, two keys of one label, and a public key
# and a certificate that have no private key; the tools' logs count as
# secret files (they are not the library's)
softhsm2-util --init-token --free --label "$KV_SEC_TOKEN" --so-pin "$KV_SEC_SOPIN" \
    --pin "$KV_SEC_PIN" >"$S/tools.log" 2>&1 || { cat "$S/tools.log"; exit 1; }
p11tool() {
    pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_SEC_TOKEN" --login \
        --pin "$KV_SEC_PIN" "$@" >>"$S/tools.log" 2>&1 || { cat "$S/tools.log"; exit 1; }
}
p11tool --keypairgen --key-type EC:prime256v1 --id 01 --label k1
p11tool --keypairgen --key-type EC:prime256v1 --id 02 --label dup
p11tool --keypairgen --key-type EC:prime256v1 --id 03 --label dup
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=other \
    -keyout "$T/other.key" -out "$T/other.crt" -days 1 2>>"$S/tools.log"
openssl x509 -in "$T/other.crt" -outform DER -out "$T/other.der"
openssl pkey -in "$T/other.key" -pubout -outform DER -out "$T/other.pub.der"
openssl pkey -in "$T/other.key" -pubout -out "$T/other.pub"
p11tool --write-object "$T/other.pub.der" --type pubkey --id 04 --label pubonly
p11tool --write-object "$T/other.der" --type cert --id 05 --label certonly

conf() { # conf DIR/NAME BACKENDS LINE...: a configuration
    _f=$1; _b=$2; shift 2
    printf '[keyvault]\nbackends = %s\n' "$_b" >"$_f"
    printf '%s\n' "$@" >>"$_f"
}
C=$KV_SEC_DIR
soft="[software]
store = $KV_SEC_DIR/soft
kdf_iterations = 1000"
p11="[pkcs11]
module = $KV_P11_MODULE
token = $KV_SEC_TOKEN"
# the library's audit records (failures carry the library's message) go to
# a file under $T, which the closing grep reads
audit="[audit]
file = $KV_SEC_DIR/audit.log
flush = record"
conf "$C/p11.conf" "pkcs11, software" "$p11" "pin = file:$S/pin" "$soft" "passphrase = file:$S/pass" "$audit"
conf "$C/p11-wrongpin.conf" pkcs11 "$p11" "pin = file:$S/pin-wrong" "$audit"
conf "$C/soft.conf" software "$soft" "passphrase = file:$S/pass" "$audit"
conf "$C/soft-wrong.conf" software "$soft" "passphrase = file:$S/pass-wrong" "$audit"
# those holding a secret inline are secret files
conf "$S/inline-pin.conf" pkcs11 "$p11" "pin = $KV_SEC_INLINE"
conf "$S/inline-token.conf" pkcs11 "[pkcs11]" "module = $KV_P11_MODULE" \
    "token = pkcs11:token=$KV_SEC_TOKEN?pin-value=$KV_SEC_INLINE"
conf "$S/inline-pass.conf" software "$soft" "passphrase = $KV_SEC_INLINE"
conf "$S/inline-unknown.conf" pkcs11 "$p11" "pin = file:$S/pin" "pin-value = $KV_SEC_INLINE"
# a secret on a line that is no secret's: the messages do not show the value
conf "$S/inline-token-upper.conf" pkcs11 "[pkcs11]" "module = $KV_P11_MODULE" \
    "token = PKCS11:token=$KV_SEC_TOKEN?pin-value=$KV_SEC_INLINE"
conf "$S/inline-token-typo.conf" pkcs11 "[pkcs11]" "module = $KV_P11_MODULE" \
    "token = pkcs11;token=$KV_SEC_TOKEN?pin-value=$KV_SEC_INLINE"
conf "$S/inline-serial.conf" pkcs11 "$p11" "pin = file:$S/pin" "serial = $KV_SEC_INLINE$KV_SEC_INLINE"
conf "$S/inline-bool.conf" pkcs11 "$p11" "pin = file:$S/pin" "allow_any_module = $KV_SEC_INLINE"
conf "$S/inline-number.conf" pkcs11 "$p11" "pin = file:$S/pin" "max_sessions = $KV_SEC_INLINE"

with_tpm=no
if grep -q '^#define KV_WITH_TPM 1' "$B/config.h"; then
    with_tpm=yes
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    KV_SEC_TPM=1
    export KV_SEC_TPM
    tpm="[tpm]
tcti = $KV_TPM_TCTI
keys = $KV_SEC_DIR/tpmkeys"
    conf "$C/tpm.conf" tpm "$tpm" "auth = file:$S/auth" "$audit"
    conf "$C/tpm-wrong.conf" tpm "$tpm" "auth = file:$S/auth-wrong" "$audit"
    conf "$S/inline-auth.conf" tpm "$tpm" "auth = $KV_SEC_INLINE"
    # the EK anchors for check_secrets' enrollment (swtpm's local CA)
    cat "$KV_TPM_DIR/localca/swtpm-localca-rootca-cert.pem" "$KV_TPM_DIR/localca/issuercert.pem" \
        >"$KV_SEC_DIR/ekca.pem"
fi

# a key reference holding the PIN in its URI (DER and PEM; secret files),
# for check_secrets and the command line
printf 'asn1=SEQUENCE:ref\n[ref]\nversion=INTEGER:1\nref=UTF8:%s\n' \
    "pkcs11:token=$KV_SEC_TOKEN;object=k1?module-name=softhsm2&pin-value=$KV_SEC_PIN" >"$S/pinref.cnf"
openssl asn1parse -genconf "$S/pinref.cnf" -out "$S/pinref.der" >/dev/null
{ echo "-----BEGIN KEYVAULT KEY REFERENCE-----"; openssl base64 -in "$S/pinref.der"
  echo "-----END KEYVAULT KEY REFERENCE-----"; } >"$S/pinref.pem"

# ---- the library -----------------------------------------------------------
if ${KV_TEST_RUNNER:-} "$B/tests/check_secrets" >"$T/check_secrets.log" 2>&1; then
    ok "check_secrets"
else
    not_ok "check_secrets"
fi
sed 's/^/    /' "$T/check_secrets.log"

# ---- the command line ------------------------------------------------------
n=0
# run STATUS DESCRIPTION -- COMMAND...: outputs kept in $T/cli for the grep
run() {
    want=$1; desc=$2; shift 3
    n=$((n + 1))
    "$@" >"$T/cli/$n.out" 2>"$T/cli/$n.err"
    got=$?
    cp "$T/cli/$n.out" "$T/out"
    cp "$T/cli/$n.err" "$T/err"
    if [ "$got" = "$want" ]; then ok "$desc"; else
        not_ok "$desc (exit $got, wanted $want)"; sed 's/^/    /' "$T/err" "$T/out"; fi
}
kv() { "$KEYVAULT" -c "$KV_SEC_DIR/p11.conf" "$@"; }
uri() { # uri PATH-ATTRIBUTES PIN
    printf 'pkcs11:token=%s;%s?module-name=softhsm2&pin-value=%s' "$KV_SEC_TOKEN" "$1" "$2"
}
printf 'message\n' >"$T/msg"
good=$(uri object=k1 "$KV_SEC_PIN")

run 1 "info: a missing token" -- kv info "pkcs11:token=nosuch;object=k1?module-name=softhsm2&pin-value=$KV_SEC_PIN"
contains "$T/err" "nosuch" "the message names the token"
run 1 "info --json: a missing object" -- kv info --json "$(uri object=missing "$KV_SEC_PIN")"
contains "$T/err" "object=missing" "the message names the object"
run 1 "sign: a public key object" -- kv sign "$(uri object=pubonly "$KV_SEC_PIN")" -i "$T/msg" -o "$T/x.sig"
run 1 "pubkey: a certificate object" -- kv pubkey "$(uri object=certonly "$KV_SEC_PIN")"
run 1 "info: type=cert" -- kv info "$(uri 'object=certonly;type=cert' "$KV_SEC_PIN")"
contains "$T/err" "type=cert" "the message shows the type"
run 1 "info: a malformed escape in the PIN" -- kv info "$(uri object=k1 "$KV_SEC_PIN%zz")"
run 1 "info: a malformed escape after a PIN in the path" -- kv info "pkcs11:pin-value=$KV_SEC_PIN;object=k%g1"
run 1 "info: an ambiguous label" -- kv info "$(uri object=dup "$KV_SEC_PIN")"
contains "$T/err" "more than one" "the message says it is ambiguous"
run 1 "sign: a wrong PIN" -- kv sign "$(uri object=k1 "$KV_SEC_PIN_WRONG")" -i "$T/msg" -o "$T/x.sig"
contains "$T/err" "CKR_PIN_INCORRECT" "the message decodes the CK_RV"
run 1 "ecdh: a wrong PIN" -- kv ecdh "$(uri object=k1 "$KV_SEC_PIN_WRONG")" --peer "$T/other.pub"
run 1 "destroy: a missing object" -- kv destroy "$(uri object=missing "$KV_SEC_PIN")"
run 1 "info: an unknown scheme" -- kv info "$KV_SEC_PIN:object=k1"
run 1 "info: a name with a query" -- kv info "k1?pin-value=$KV_SEC_PIN"
run 1 "info: a file: URI with a query" -- kv info "file:$T/k.pem?pin-value=$KV_SEC_PIN"
run 1 "info: a tpm2: URI without the backend" -- kv info "tpm2:file=/k.pem?auth=$KV_SEC_PIN"

# the right PIN: the key is named by its own URI, without the PIN
run 0 "info with the PIN in the URI" -- kv info "$good"
contains "$T/out" "object=k1" "info shows the key's URI"
run 0 "info --json with the PIN in the URI" -- kv info --json "$good"
contains "$T/out" '"uri": "pkcs11:' "info --json shows the key's URI"
run 0 "list --json" -- kv list --json
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=ca \
    -keyout "$T/ca.key" -out "$T/ca.crt" -days 1 2>/dev/null
run 0 "pubkey with the PIN in the URI" -- kv pubkey "$good" -o "$T/k1.pub"
openssl x509 -new -subj /CN=k1 -force_pubkey "$T/k1.pub" -CA "$T/ca.crt" -CAkey "$T/ca.key" \
    -days 1 -out "$T/k1.crt" 2>/dev/null
run 0 "cert --import with the PIN in the URI" -- kv cert "$good" --import "$T/k1.crt"
contains "$T/out" "with 'k1'" "cert names the key"
run 0 "keygen on the token" -- kv keygen kcli --backend pkcs11
run 0 "destroy with the PIN in the URI" -- kv destroy "$(uri object=kcli "$KV_SEC_PIN")"
contains "$T/out" "destroyed 'kcli' (pkcs11:" "destroy names the key by its own URI"
# key references: written without the PIN; one carrying a pin-value is refused
run 0 "reference with the PIN in the URI" -- kv reference "$good" -o "$T/k1.ref"
run 1 "reference: a wrong PIN" -- kv reference "$(uri object=k1 "$KV_SEC_PIN_WRONG")"
run 1 "reference --open: a reference with a pin-value" -- kv reference --open "$S/pinref.der"
contains "$T/err" "pin-value" "the message says why"

# usage errors repeat no argument that could be a secret
run 2 "an unknown command" -- kv "$good"
run 2 "list with an argument" -- kv list "$good"
run 2 "an unknown option" -- kv sign "--pin-value=$KV_SEC_PIN" k1 -i "$T/msg" -o "$T/x.sig"
run 2 "an unknown key type" -- kv keygen k --type "$KV_SEC_PIN"
run 2 "an unknown algorithm" -- kv sign k1 --alg "$KV_SEC_PIN" -i "$T/msg" -o "$T/x.sig"
run 2 "an unknown tpm command" -- kv tpm "$KV_SEC_PIN"

# a wrong software-store passphrase
run 0 "keygen in the store" -- "$KEYVAULT" -c "$KV_SEC_DIR/soft.conf" keygen scli
run 1 "sign with a wrong passphrase" -- "$KEYVAULT" -c "$KV_SEC_DIR/soft-wrong.conf" sign scli -i "$T/msg" -o "$T/x.sig"
contains "$T/err" "wrong passphrase" "the message says why"

# secrets written inline in a configuration
for c in inline-pin inline-token inline-pass inline-token-upper; do
    run 1 "$c.conf is refused" -- "$KEYVAULT" -c "$S/$c.conf" list
done
for c in inline-token-typo inline-serial inline-bool inline-number; do
    run 1 "$c.conf is refused" -- "$KEYVAULT" -c "$S/$c.conf" list
    contains "$T/err" "not shown" "  the message says the value is not shown"
done
# a secret under a key that does not exist: refused (strict configuration);
# the grep below looks at what it printed
"$KEYVAULT" -c "$S/inline-unknown.conf" list >"$T/cli/unknown.out" 2>"$T/cli/unknown.err"
[ $? -eq 1 ] && ok "inline-unknown.conf is refused" || not_ok "inline-unknown.conf is refused"

# a wrong TPM auth value
if [ "$with_tpm" = yes ]; then
    tkv() { c=$1; shift; "$KEYVAULT" -c "$KV_SEC_DIR/$c.conf" "$@"; }
    run 0 "keygen on the TPM with an auth value" -- "$KEYVAULT" -c "$KV_SEC_DIR/tpm.conf" keygen tcli
    run 0 "sign with the auth value" -- tkv tpm sign tcli -i "$T/msg" -o "$T/x.sig"
    run 1 "sign with a wrong auth value" -- tkv tpm-wrong sign tcli -i "$T/msg" -o "$T/x.sig"
    contains "$T/err" "wrong auth value" "the message says why"
    run 1 "inline-auth.conf is refused" -- "$KEYVAULT" -c "$S/inline-auth.conf" list
    run 1 "a tpm2: URI with a query" -- "$KEYVAULT" -c "$KV_SEC_DIR/tpm.conf" info "tpm2:file=$KV_SEC_DIR/tpmkeys/tcli.pem?auth=$KV_SEC_AUTH"
fi

# ---- modes of what the stores hold ----------------------------------------
# every file libkeyvault writes (keys, metadata, store secrets, locks, the
# audit log, temporary files a killed writer left) 0600, every directory
# 0700: in the software store, the TPM key directory and the home
stores="$KV_SEC_DIR/soft $KEYVAULT_HOME"
[ "$with_tpm" = yes ] && stores="$stores $KV_SEC_DIR/tpmkeys"
modes() { # modes WHEN: the check, with what is wrong listed
    bad=$(find $stores "$KV_SEC_DIR/audit.log" \( -type f ! -perm 0600 \) -o \( -type d ! -perm 0700 \) \
        -o \( ! -type f ! -type d \) 2>&1 | sed 's/^/    /')
    nf=$(find $stores -type f | wc -l)
    if [ -z "$bad" ] && [ "$nf" -gt 0 ]; then ok "modes 0600/0700 $1 ($nf files)"; else
        not_ok "modes 0600/0700 $1 ($nf files)"; printf '%s\n' "$bad"; find $stores -exec ls -ld {} + | sed 's/^/    /'; fi
}
modes "after the runs above"
# rotations (the previous version kept, and destroyed by prune)
skv() { "$KEYVAULT" -c "$KV_SEC_DIR/soft.conf" "$@"; }
run 0 "rotate in the store" -- skv rotate scli --overlap 0 --grace 0
run 0 "prune in the store" -- skv prune scli
run 0 "rotate in the store, version kept" -- skv rotate scli --overlap 1d
if [ "$with_tpm" = yes ]; then
    run 0 "rotate on the TPM" -- tkv tpm rotate tcli --overlap 1d
fi
modes "after rotations"
# writers killed (SIGKILL) part-way, as a crash loop does: whatever they
# left, temporary files included, is private
# (the CLI itself in the background, not a function: $! must be its pid)
i=0
while [ $i -lt 12 ]; do
    i=$((i + 1))
    "$KEYVAULT" -c "$KV_SEC_DIR/soft.conf" keygen "kill$i" >/dev/null 2>&1 &
    p1=$!
    "$KEYVAULT" -c "$KV_SEC_DIR/soft.conf" rotate scli --overlap 1d >/dev/null 2>&1 &
    p2=$!
    p3=
    if [ "$with_tpm" = yes ]; then
        "$KEYVAULT" -c "$KV_SEC_DIR/tpm.conf" keygen "tkill$i" >/dev/null 2>&1 &
        p3=$!
    fi
    # 0 to 190 ms in
    sleep "0.$(( ($$ + i * 37) % 20 / 10 ))$(( ($$ + i * 37) % 10 ))"
    kill -9 $p1 $p2 $p3 2>/dev/null
    wait $p1 $p2 $p3 2>/dev/null
done
modes "after 12 rounds of writers killed part-way"

# ---- no secret anywhere ----------------------------------------------------
# every output above, the library test's log, the stores, key files and
# metadata, the token and the simulator state: all under $T
for v in $secrets; do
    eval "s=\$$v"
    if found=$(grep -r -l -a -F --exclude-dir=secretfiles -- "$s" "$T"); then
        not_ok "$v appears in: $(echo "$found" | tr '\n' ' ')"
    else
        ok "$v appears in no output and no file written"
    fi
done
# the audit log was written, failures included (their records carry the
# library's message), so the grep above read them
[ -s "$KV_SEC_DIR/audit.log" ] && grep -q '"result":"auth-failed"' "$KV_SEC_DIR/audit.log" &&
    ok "the audit log holds the failures grepped" || not_ok "the audit log holds the failures grepped"
# the grep can find what it looks for
[ "$(grep -r -l -a -F -- "$KV_SEC_PIN" "$S" | wc -l)" -gt 0 ] && ok "the grep finds the PIN file" ||
    not_ok "the grep finds the PIN file"
finish
