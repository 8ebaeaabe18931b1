#!/bin/sh
# policy.sh - key policies and the context's [policy] on a SoftHSM token,
# swtpm and the software store:
#  - the library: check_policy (every rule denies and allows, reopened in a
#    new context, the context's keys/backends/uses/manage, TPM key files
#    away from their metadata);
#  - the CLI: keygen --allow/--algs/--not-before/--not-after/--hardware-only,
#    policy show (text and --json), refusals naming the rule, issue as a CA;
#  - what the tokens themselves enforce, read with tools nobody here wrote:
#    pkcs11-tool (CKA_SIGN/CKA_DERIVE, CKA_ALLOWED_MECHANISMS, the policy
#    object; the token refuses a forbidden C_Sign/C_Derive itself) and
#    tpm2_readpublic (the TPM key's sign/decrypt attributes);
#  - damaged or swapped policies refused (KV_ERR_CORRUPT);
#  - the provider: unmodified openssl commands refused for a key whose
#    policy forbids the use, allowed for one that allows it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
B=${KV_BUILDDIR:-.}
MODDIR=$(cd "$B/libkeyvault/provider/.libs" 2>/dev/null && pwd)
for tool in pkcs11-tool tpm2_readpublic tpm2_load openssl xxd; do
    command -v "$tool" >/dev/null 2>&1 || { echo "policy.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
vault_conf "$KV_TPM_TCTI"
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
p11() { pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_P11_TOKEN" --login --pin "$KV_P11_PIN" "$@"; }
export TPM2TOOLS_TCTI="$KV_TPM_TCTI"

# ---- the library ---------------------------------------------------------
if KV_POLICY_CONF=$T/kv.conf ${KV_TEST_RUNNER:-} "$B/tests/check_policy" >"$T/check.log" 2>&1; then
    ok "check_policy: $(grep -o 'Checks: [0-9]*.*' "$T/check.log")"
else
    not_ok "check_policy"; cat "$T/check.log"
fi

# ---- the CLI on each backend --------------------------------------------
printf 'message\n' >"$T/msg"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.key" 2>/dev/null
openssl pkey -in "$T/peer.key" -pubout -out "$T/peer.pub"
for be in pkcs11 tpm software; do
    expect 0 "$be: keygen --allow sign --algs ecdsa-sha256" -- kv keygen "s-$be" --backend "$be" --allow sign --algs ecdsa-sha256
    expect 0 "$be: policy show" -- kv policy show "s-$be"
    contains "$T/out" "^uses: sign$" "$be: it shows the uses"
    contains "$T/out" "^algorithms: ecdsa-sha256$" "$be: it shows the algorithms"
    expect 0 "$be: policy show --json" -- kv policy show "s-$be" --json
    contains "$T/out" '"policy": true' "$be: the JSON says a policy is stored"
    expect 0 "$be: sign with ecdsa-sha256" -- kv sign "s-$be" -i "$T/msg" -o "$T/s.sig"
    expect 0 "$be: pubkey" -- kv pubkey "s-$be" -o "$T/s-$be.pub"
    expect 0 "$be: openssl verifies the allowed signature" -- openssl dgst -sha256 -verify "$T/s-$be.pub" -signature "$T/s.sig" "$T/msg"
    expect 1 "$be: sign with ecdsa-sha384 is refused" -- kv sign "s-$be" -i "$T/msg" -o "$T/s2.sig" --alg ecdsa-sha384
    contains "$T/err" "policy of key 's-$be': ecdsa-sha384 is not allowed (allowed: ecdsa-sha256)" "$be: the refusal names the rule"
    expect 1 "$be: ECDH is refused" -- kv ecdh "s-$be" --peer "$T/peer.pub" -o "$T/z"
    contains "$T/err" "ecdh is not allowed (allowed: sign)" "$be: the refusal names the use"

    expect 0 "$be: keygen --allow ecdh" -- kv keygen "e-$be" --backend "$be" --allow ecdh
    expect 0 "$be: ECDH allowed" -- kv ecdh "e-$be" --peer "$T/peer.pub" -o "$T/z-$be"
    expect 0 "$be: pubkey" -- kv pubkey "e-$be" -o "$T/e-$be.pub"
    openssl pkeyutl -derive -inkey "$T/peer.key" -peerkey "$T/e-$be.pub" -out "$T/z-ossl" 2>/dev/null
    expect 0 "$be: openssl derives the same secret" -- cmp "$T/z-ossl" "$T/z-$be"
    expect 1 "$be: sign refused" -- kv sign "e-$be" -i "$T/msg" -o "$T/e.sig"
    contains "$T/err" "sign is not allowed (allowed: ecdh)" "$be: the refusal names the use"
    [ ! -s "$T/e.sig" ] && ok "$be: no signature written" || not_ok "$be: no signature written"

    expect 0 "$be: keygen --not-before +1h" -- kv keygen "l-$be" --backend "$be" --not-before +1h
    expect 1 "$be: sign before the window" -- kv sign "l-$be" -i "$T/msg" -o "$T/l.sig"
    contains "$T/err" "not valid before" "$be: the refusal names the window"
    expect 0 "$be: keygen --not-after +10m" -- kv keygen "x-$be" --backend "$be" --not-after +10m
    expect 0 "$be: sign inside the window" -- kv sign "x-$be" -i "$T/msg" -o "$T/x.sig"
done
# after the window: on a clock an hour ahead (faketime), not after a wait that
# a slow machine could spend inside the window (a +2s window used to)
for be in pkcs11 tpm software; do
    expect 1 "$be: sign after the window" -- faketime -f +1h "$KEYVAULT" -c "$T/kv.conf" sign "x-$be" -i "$T/msg" -o "$T/x.sig"
    contains "$T/err" "not valid after" "$be: the refusal names the window"
done
expect 1 "--hardware-only in software is refused" -- kv keygen hw-soft --backend software --hardware-only
contains "$T/err" "hardware only, and backend 'software' is software" "it names the rule"
expect 0 "--hardware-only with no backend named goes to hardware" -- kv keygen hw-any --hardware-only
contains "$T/out" "backend pkcs11" "the first hardware backend"
expect 0 "a key without a policy" -- kv keygen free --backend software
expect 0 "policy show of it" -- kv policy show free
contains "$T/out" "^policy: none" "it has none"
expect 2 "an unknown use is a usage error" -- kv keygen bad --allow fly
expect 2 "an unknown algorithm is a usage error" -- kv keygen bad --algs md5
expect 2 "a malformed time is a usage error" -- kv keygen bad --not-after tomorrow
expect 1 "an algorithm of another family is refused" -- kv keygen bad --type ec-p256 --algs rsa-pss-sha256
contains "$T/err" "does not fit" "it says why"

# issue: signing as a CA is a use of its own
expect 0 "CA key allowed sign only" -- kv keygen ca1 --backend software --allow sign
expect 0 "its self-signed CA certificate (a signature)" -- kv cert selfsign ca1 --subject "CN=CA one" --ca -o "$T/ca1.pem"
expect 0 "a leaf key and its request" -- kv keygen leaf --backend software
expect 0 "csr" -- kv csr leaf --subject "CN=leaf" -o "$T/leaf.csr"
expect 1 "issuing with it is refused" -- kv ca sign ca1 --csr "$T/leaf.csr" --profile tls-client -o "$T/leaf.crt"
contains "$T/err" "issue is not allowed (allowed: sign)" "the refusal names the use"
expect 0 "CA key allowed sign and issue" -- kv keygen ca2 --backend pkcs11 --allow sign,issue
expect 0 "its CA certificate" -- kv cert selfsign ca2 --subject "CN=CA two" --ca -o "$T/ca2.pem"
expect 0 "issuing with it works" -- kv ca sign ca2 --csr "$T/leaf.csr" --profile tls-client -o "$T/leaf.crt"
expect 0 "openssl verifies the issued certificate" -- openssl verify -CAfile "$T/ca2.pem" "$T/leaf.crt"

# ---- what the token and the TPM enforce themselves --------------------------
p11 --list-objects >"$T/objs" 2>&1
awk '/^Private Key Object/ { k = 1 } /^(Public|Data|Certificate)/ { k = 0 } k && /label:/ { l = $2 } k && /Usage:/ { print l ": " $0 } k && /Allowed mechanisms:/ { print l ": " $0 }' "$T/objs" >"$T/usage"
# (pkcs11-tool --sign and --derive choose a key by --id)
id_of() { awk -v l="$1" '/^Private Key Object/ { k = 1 } /^(Public|Data|Certificate)/ { k = 0 } k && /label:/ { n = $2 } k && /ID:/ && n == l { print $2 }' "$T/objs"; }
E_ID=$(id_of e-pkcs11)
S_ID=$(id_of s-pkcs11)
[ -n "$E_ID" ] && [ -n "$S_ID" ] && ok "pkcs11-tool lists the policy keys' ids" || not_ok "pkcs11-tool lists the policy keys' ids"
grep "^s-pkcs11: *Usage" "$T/usage" | grep -q "sign" && ok "pkcs11-tool: the sign-only key has CKA_SIGN" || not_ok "pkcs11-tool: the sign-only key has CKA_SIGN"
grep "^s-pkcs11: *Usage" "$T/usage" | grep -q "derive" && not_ok "pkcs11-tool: the sign-only key has no CKA_DERIVE" || ok "pkcs11-tool: the sign-only key has no CKA_DERIVE"
contains "$T/usage" "^s-pkcs11: *Allowed mechanisms: ECDSA$" "pkcs11-tool: its CKA_ALLOWED_MECHANISMS is ECDSA alone"
grep "^e-pkcs11: *Usage" "$T/usage" | grep -q "derive" && ok "pkcs11-tool: the ECDH-only key has CKA_DERIVE" || not_ok "pkcs11-tool: the ECDH-only key has CKA_DERIVE"
grep "^e-pkcs11: *Usage" "$T/usage" | grep -qw "sign" && not_ok "pkcs11-tool: the ECDH-only key has no CKA_SIGN" || ok "pkcs11-tool: the ECDH-only key has no CKA_SIGN"
contains "$T/usage" "^e-pkcs11: *Allowed mechanisms: ECDH1-DERIVE$" "pkcs11-tool: its CKA_ALLOWED_MECHANISMS is ECDH1-DERIVE alone"
grep -A3 "^Data object" "$T/objs" | grep -q "application: *'libkeyvault'" && ok "pkcs11-tool: the policy objects are there" || not_ok "pkcs11-tool: the policy objects are there"
grep -A5 "^Data object" "$T/objs" | grep -q "private" && ok "pkcs11-tool: they are private" || not_ok "pkcs11-tool: they are private"
# the token refuses what the policy forbids even to a program bypassing libkeyvault
openssl dgst -sha256 -binary "$T/msg" >"$T/md"
expect 1 "pkcs11-tool: the token itself refuses C_Sign with the ECDH-only key" -- p11 --sign -m ECDSA --id "$E_ID" -i "$T/md" -o "$T/p.sig"
contains "$T/err" "CKR_KEY_FUNCTION_NOT_PERMITTED" "the token's code says so"
openssl pkey -in "$T/peer.pub" -pubin -outform DER -out "$T/peer.der"
expect 1 "pkcs11-tool: the token itself refuses C_DeriveKey with the sign-only key" -- p11 --derive -m ECDH1-DERIVE --id "$S_ID" -i "$T/peer.der" -o "$T/p.z"
contains "$T/err" "CKR_KEY_FUNCTION_NOT_PERMITTED" "the token's code says so"
expect 0 "pkcs11-tool: the same token signs with the sign-only key" -- p11 --sign -m ECDSA --id "$S_ID" -i "$T/md" -o "$T/p.sig"
expect 1 "pkcs11-tool: the policy key's attributes cannot be changed (CKA_MODIFIABLE false)" -- p11 --set-id 01 --type privkey --id "$E_ID"
contains "$T/err" "(0x1b)" "the token says CKR_ACTION_PROHIBITED (0x1b)"

# tpm2_readpublic on each TPM key, loaded under the owner's storage key
tpm_attrs() {
    openssl asn1parse -in "$T/tpmkeys/$1.pem" | awk -F'HEX DUMP]:' '/OCTET STRING/ { print $2 }' >"$T/hx"
    sed -n 1p "$T/hx" | xxd -r -p >"$T/$1.tpub"
    sed -n 2p "$T/hx" | xxd -r -p >"$T/$1.tpriv"
    tpm2_flushcontext -t >/dev/null 2>&1
    # (swtpm has three object slots and no resource manager: flush between steps)
    tpm2_createprimary -Q -C o -G ecc256:aes128cfb -c "$T/prim.ctx" \
        -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' &&
        tpm2_flushcontext -t &&
        tpm2_load -Q -C "$T/prim.ctx" -u "$T/$1.tpub" -r "$T/$1.tpriv" -c "$T/$1.ctx" &&
        tpm2_flushcontext -t &&
        tpm2_readpublic -c "$T/$1.ctx" | sed -n '/^attributes:/,/raw:/p' | sed -n 's/^ *value: //p'
    tpm2_flushcontext -t >/dev/null 2>&1
}
a=$(tpm_attrs s-tpm)
case "|$a|" in *"|sign|"*) ok "tpm2_readpublic: the sign-only key has sign ($a)" ;; *) not_ok "tpm2_readpublic: the sign-only key has sign ($a)" ;; esac
case "|$a|" in *"|decrypt|"*) not_ok "tpm2_readpublic: the sign-only key has no decrypt ($a)" ;; *) ok "tpm2_readpublic: the sign-only key has no decrypt" ;; esac
a=$(tpm_attrs e-tpm)
case "|$a|" in *"|decrypt|"*) ok "tpm2_readpublic: the ECDH-only key has decrypt ($a)" ;; *) not_ok "tpm2_readpublic: the ECDH-only key has decrypt ($a)" ;; esac
case "|$a|" in *"|sign|"*) not_ok "tpm2_readpublic: the ECDH-only key has no sign ($a)" ;; *) ok "tpm2_readpublic: the ECDH-only key has no sign" ;; esac
a=$(tpm_attrs x-tpm)
case "|$a|" in *"|sign|"*) case "|$a|" in *"|decrypt|"*) both=1 ;; *) both= ;; esac ;; *) both= ;; esac
[ -n "$both" ] && ok "tpm2_readpublic: a key allowed everything has sign and decrypt" || not_ok "tpm2_readpublic: a key allowed everything has sign and decrypt ($a)"

# RSA on the token: the algorithms choose the padding mechanisms
expect 0 "pkcs11: an RSA key allowed RSA-PSS only" -- kv keygen r-pkcs11 --backend pkcs11 --type rsa-2048 --algs rsa-pss-sha256,rsa-pss-sha384
expect 0 "pkcs11: sign with rsa-pss-sha384" -- kv sign r-pkcs11 -i "$T/msg" -o "$T/r.sig" --alg rsa-pss-sha384
expect 1 "pkcs11: sign with rsa-pkcs1-sha256 is refused" -- kv sign r-pkcs11 -i "$T/msg" -o "$T/r.sig" --alg rsa-pkcs1-sha256
contains "$T/err" "rsa-pkcs1-sha256 is not allowed (allowed: rsa-pss-sha256, rsa-pss-sha384)" "the refusal names the algorithms"
p11 --list-objects --type privkey >"$T/objs2" 2>&1
awk '/label:/ { l = $2 } /Allowed mechanisms:/ { print l ": " $0 }' "$T/objs2" >"$T/mechs"
contains "$T/mechs" "^r-pkcs11: *Allowed mechanisms: RSA-PKCS-PSS$" "pkcs11-tool: its CKA_ALLOWED_MECHANISMS is RSA-PKCS-PSS alone"

# ---- killed generations: never a key without its policy -------------------
# keyvault keygen --allow sign killed at random points: afterwards the name
# holds no key, or a key with its policy, or one that is refused; never one
# that opens without its policy
# (the kill points spread over one uninterrupted keygen's run, measured first:
# with all three backends configured every one starts, 0.1-0.3 s here)
for be in pkcs11 tpm software; do
    t0=$(date +%s%N)
    kv keygen "k0-$be" --backend "$be" --allow sign >/dev/null 2>&1
    max=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    bad=0 kept=0 none=0 refused=0
    for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
        # (runs vary by half their length on a busy machine: around the end)
        delay=$(awk -v s="$i$$" -v m="$max" 'BEGIN { srand(s); printf "%.3f", m * (0.3 + 1.2 * rand()) }')
        kv keygen "k$i-$be" --backend "$be" --allow sign >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        if kv policy show "k$i-$be" >"$T/out" 2>"$T/err"; then
            if grep -q "^uses: sign$" "$T/out"; then kept=$((kept + 1)); else
                bad=$((bad + 1)); echo "    k$i-$be (killed after $delay s) opens without its policy:"; cat "$T/out"; fi
        elif grep -q "no key named" "$T/err"; then none=$((none + 1))
        else
            # refused: metadata missing, a policy without its key, or the
            # token busy with a file a killed process left half-written
            refused=$((refused + 1)); echo "    k$i-$be (killed after $delay s): $(cat "$T/err")"
        fi
    done
    [ "$bad" -eq 0 ] && ok "$be: 12 killed generations (one run: $max s): $kept with their policy, $none none, $refused refused, none without" ||
        not_ok "$be: $bad of 12 killed generations left a key that opens without its policy"
    tpm2_flushcontext -t >/dev/null 2>&1
done

# what a PKCS#11 run killed between its policy object and its key pair leaves:
# an object naming a CKA_ID no key has. It binds nothing, and the next
# generation of that label removes it.
printf '{"format":"libkeyvault key policy 1","key_id":"0102","policy":{"algs":[],"hardware_only":false,"not_after":0,"not_before":0,"uses":["ecdh"]}}' >"$T/stale"
expect 0 "pkcs11-tool writes a leftover policy object for st-pkcs11" -- p11 --write-object "$T/stale" --type data --label st-pkcs11 --application-label libkeyvault --private
expect 0 "pkcs11: st-pkcs11 made without a policy" -- kv keygen st-pkcs11 --backend pkcs11
expect 0 "policy show" -- kv policy show st-pkcs11
contains "$T/out" "^policy: none" "the leftover object did not bind the new key"
expect 0 "sign with it" -- kv sign st-pkcs11 -i "$T/msg" -o "$T/st.sig"
p11 --list-objects --type data >"$T/data" 2>&1
grep -q "label: *'st-pkcs11'" "$T/data" && not_ok "the leftover object was removed" || ok "the leftover object was removed"

# ---- damaged and swapped policies ---------------------------------------
cp "$T/store/e-software.json" "$T/e-software.json.orig"
sed -i 's/"ecdh"/"sign"/' "$T/store/e-software.json"
expect 1 "software: an edited policy is refused" -- kv sign e-software -i "$T/msg" -o "$T/e.sig"
contains "$T/err" "does not authenticate" "it says the metadata was altered"
cp "$T/e-software.json.orig" "$T/store/e-software.json"
expect 0 "software: restored, it opens again" -- kv policy show e-software
# two TPM keys' files swapped with their metadata under each other's name
for f in pem json; do mv "$T/tpmkeys/s-tpm.$f" "$T/s.$f"; done
cp "$T/tpmkeys/e-tpm.pem" "$T/tpmkeys/s-tpm.pem"
cp "$T/s.json" "$T/tpmkeys/s-tpm.json"
expect 1 "tpm: a key file under another key's metadata is refused" -- kv sign s-tpm -i "$T/msg" -o "$T/e.sig"
contains "$T/err" "holds another public key" "it says the files were swapped"
for f in pem json; do mv "$T/s.$f" "$T/tpmkeys/s-tpm.$f"; done
# a policy object that does not decode, on the token
expect 0 "pkcs11: a key for the damage" -- kv keygen j-pkcs11 --backend pkcs11 --allow sign
printf 'not a policy' >"$T/junk"
expect 0 "pkcs11-tool writes a junk policy object with its label" -- p11 --write-object "$T/junk" --type data --label j-pkcs11 --application-label libkeyvault --private
expect 1 "pkcs11: the key with a damaged policy object is refused" -- kv sign j-pkcs11 -i "$T/msg" -o "$T/e.sig"
contains "$T/err" "policy object with its label is damaged" "it names the damage"

# ---- the provider: unmodified openssl refused for a forbidden use ----------
if [ -n "$MODDIR" ] && [ -f "$MODDIR/keyvault.so" ]; then
    # a sanitized module in unsanitized openssl: ASan's runtime first, its
    # leaks at exit are openssl's (as in openssl-provider.sh)
    asan=$(ldd "$MODDIR/keyvault.so" 2>/dev/null | awk '/libasan/ { print $3 }')
    if [ -n "$asan" ]; then
        LD_PRELOAD=$asan${LD_PRELOAD:+:$LD_PRELOAD}
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
        export LD_PRELOAD ASAN_OPTIONS
    fi
    provider_cnf "$T/openssl.cnf" "$T/kv.conf"
    ossl() { OPENSSL_CONF=$T/openssl.cnf openssl "$@"; }
    for be in pkcs11 tpm software; do
        expect 0 "$be: openssl pkeyutl -sign with the sign-only key" -- ossl pkeyutl -sign -inkey "keyvault:s-$be" -in "$T/md" -out "$T/o.sig"
        expect 0 "$be: the signature verifies" -- openssl pkeyutl -verify -pubin -inkey "$T/s-$be.pub" -in "$T/md" -sigfile "$T/o.sig"
        expect 1 "$be: openssl pkeyutl -sign with the ECDH-only key is refused" -- ossl pkeyutl -sign -inkey "keyvault:e-$be" -in "$T/md" -out "$T/o2.sig"
        contains "$T/err" "sign is not allowed" "$be: openssl's error names the rule"
        expect 1 "$be: openssl dgst -sign with the ECDH-only key is refused" -- ossl dgst -sha256 -sign "keyvault:e-$be" -out "$T/o3.sig" "$T/msg"
        expect 0 "$be: openssl pkeyutl -derive with the ECDH-only key" -- ossl pkeyutl -derive -inkey "keyvault:e-$be" -peerkey "$T/peer.pub" -out "$T/oz"
        expect 0 "$be: the same secret as openssl's own" -- cmp "$T/oz" "$T/z-$be"
        expect 1 "$be: openssl pkeyutl -derive with the sign-only key is refused" -- ossl pkeyutl -derive -inkey "keyvault:s-$be" -peerkey "$T/peer.pub" -out "$T/oz2"
        contains "$T/err" "ecdh is not allowed" "$be: openssl's error names the rule"
    done
    # the context's [policy] holds the provider too
    { cat "$T/kv.conf"; printf '[policy]\nkeys = s-*\n'; } >"$T/kv-s.conf"
    sed "s|keyvault_conf = .*|keyvault_conf = $T/kv-s.conf|" "$T/openssl.cnf" >"$T/openssl-s.cnf"
    expect 0 "[policy] keys = s-*: openssl reads keyvault:s-software" -- env OPENSSL_CONF="$T/openssl-s.cnf" openssl pkey -in keyvault:s-software -pubout
    expect 1 "[policy] keys = s-*: openssl is refused keyvault:e-software" -- env OPENSSL_CONF="$T/openssl-s.cnf" openssl pkey -in keyvault:e-software -pubout
    contains "$T/err" "context policy (\[policy\] keys): key 'e-software' is not one of" "openssl's error names the rule"
    # a key reference file read by openssl's file loader: the same rules
    expect 0 "a key reference for the ECDH-only software key" -- kv reference e-software -o "$T/e.ref.pem"
    expect 1 "openssl pkeyutl -sign -inkey REFERENCE is refused" -- ossl pkeyutl -sign -inkey "$T/e.ref.pem" -in "$T/md" -out "$T/o4.sig"
    contains "$T/err" "sign is not allowed" "the refusal names the rule"
    # the TPM key file itself: its authPolicy marks a policy the file alone
    # does not carry (the decoder refuses it; openssl reports only that no
    # decoder took it); a key file without a policy is read as before
    expect 1 "openssl pkeyutl -sign -inkey a policy key's TPM key file is refused" -- ossl pkeyutl -sign -inkey "$T/tpmkeys/s-tpm.pem" -in "$T/md" -out "$T/o5.sig"
    expect 0 "a TPM key without a policy" -- kv keygen f-tpm --backend tpm
    expect 0 "openssl pkeyutl -sign -inkey its key file works" -- ossl pkeyutl -sign -inkey "$T/tpmkeys/f-tpm.pem" -in "$T/md" -out "$T/o6.sig"
else
    not_ok "the provider module was built ($B/libkeyvault/provider/.libs/keyvault.so)"
fi

# ---- open by name asks no backend [policy] backends forbids ----------------
# (a token with a wrong PIN in the configuration: asking it would fail the login)
printf 'not-the-pin\n' >"$T/badpin"
chmod 600 "$T/badpin"
sed "s|^pin = file:.*|pin = file:$T/badpin|" "$T/kv.conf" >"$T/badpin.conf"
printf '\n[policy]\nbackends = software\n' >>"$T/badpin.conf"
expect 0 "policy backends: a software key for the forbidden-token test" -- \
    kv keygen sw-only --backend software
expect 0 "policy backends = software: open by name does not ask the forbidden token" -- \
    "$KEYVAULT" -c "$T/badpin.conf" pubkey sw-only -o "$T/sw-only.pub"
expect 1 "policy backends = software: a key only in the token is refused by the rule" -- \
    "$KEYVAULT" -c "$T/badpin.conf" pubkey s-pkcs11
contains "$T/err" "context policy (\[policy\] backends)" "policy backends: the refusal names the rule"
grep -q -i "pin\|login" "$T/err" && not_ok "policy backends: no login was tried" ||
    ok "policy backends: no login was tried"
finish
