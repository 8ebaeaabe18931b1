#!/bin/sh
# jose.sh - JWS, JWK and JWT checked against an implementation nobody here
# wrote: the `jose` npm package (tests/jose-check.mjs, node), on the software
# store, a SoftHSM token and swtpm, every key type each one has:
#  - our JWKs: importJWK of `keyvault jwk` is the key `keyvault pubkey` writes
#    (compared as SPKI), kid = jose's RFC 7638 thumbprint;
#  - our tokens (`jwt sign --claims` and `--client-assertion`, with and
#    without --x5c) verify with jose's jwtVerify against `keyvault jwks`, and
#    with importX509 on the x5c leaf; jose checks iss = sub = client id, aud,
#    exp - iat = ttl, typ, kid, and that no two jti are the same;
#  - jose's tokens, signed with jose's own keys (ES256, ES384, PS256, RS256,
#    EdDSA), verify with `keyvault jwt verify --jwks` and `--pubkey`;
#  - a negative corpus made by jose and node (alg none, algorithm switches,
#    HS256 keyed with the public key, time, audience, issuer, tampering, bad
#    base64url, size, keys offered by the token, crit, duplicate members,
#    broken structure), each refused by `keyvault jwt verify` with its reason.
# tests/install-deps.sh installs node and jose.
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$SRC/tests/softhsm.sh"
. "$SRC/tests/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
KV_NPM_DIR=${KV_NPM_DIR:-/var/cache/libkeyvault-npm}
export KV_NPM_DIR
if ! command -v node >/dev/null 2>&1 || ! [ -f "$KV_NPM_DIR/node_modules/jose/package.json" ]; then
    not_ok "node and jose in $KV_NPM_DIR (run tests/install-deps.sh)"
    finish
    exit 1
fi
for tool in openssl jq; do
    command -v "$tool" >/dev/null 2>&1 || { echo "jose.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
vault_conf "$KV_TPM_TCTI"
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
J() { node "$SRC/tests/jose-check.mjs" "$@"; }
kv_in() { f=$1; shift; kv "$@" <"$f"; }
AUD=https://as.example/token
mkdir -p "$T/tok"

# asan_for KEY: the sanitizer's exact stacks for a SoftHSM Ed25519 key, whose
# signatures reach SoftHSM's known leak (tests/lsan.supp), fast ones otherwise
asan_for() { case $1 in pkcs11-ed25519) asan_exact_stacks ;; *) asan_fast_stacks ;; esac; }

# ---- a CA for the x5c chains -------------------------------------------------
expect 0 "a CA key" -- kv keygen jca --backend software
expect 0 "its self-signed certificate" -- kv cert selfsign jca --subject "CN=JOSE test CA" --ca -o "$T/ca.pem"

# ---- our keys: JWK against the PEM public key, a chain each --------------------
keys=
for be in software pkcs11 tpm; do
    types="ec-p256 ec-p384 rsa-2048 ed25519"
    [ "$be" = tpm ] && types="ec-p256 ec-p384 rsa-2048" # the TPM has no Ed25519
    [ "$be" = software ] && types="$types rsa-3072"
    for type in $types; do
        n=$be-$type
        keys="$keys $n"
        asan_for "$n"
        expect 0 "$n: keygen" -- kv keygen "$n" --backend "$be" --type "$type"
        expect 0 "$n: keyvault jwk" -- kv jwk "$n"
        cp "$T/out" "$T/$n.jwk"
        expect 0 "$n: keyvault pubkey" -- kv pubkey "$n" -o "$T/$n.pub"
        openssl pkey -pubin -in "$T/$n.pub" -out "$T/$n.ossl.pub" 2>"$T/err" || not_ok "$n: openssl reads the public key"
        expect 0 "$n: jose: importJWK of the JWK is the openssl PEM key, kid is its thumbprint" -- \
            J jwk "$T/$n.jwk" "$T/$n.ossl.pub"
        expect 0 "$n: a request" -- kv csr "$n" --subject "CN=$n" -o "$T/$n.csr"
        expect 0 "$n: the CA issues its certificate" -- \
            kv ca sign jca --csr "$T/$n.csr" --profile tls-client -o "$T/$n.crt"
        cat "$T/$n.crt" "$T/ca.pem" >"$T/$n.chain"
        expect 0 "$n: the chain stored with the key" -- kv cert import "$n" "$T/$n.chain"
    done
done
asan_for pkcs11-ed25519 # (opening it reaches SoftHSM's leak too)
# shellcheck disable=SC2086
expect 0 "keyvault jwks of all $(echo $keys | wc -w) keys" -- kv jwks $keys
cp "$T/out" "$T/all.jwks"
asan_fast_stacks
n_keys=$(jq '.keys | length' "$T/all.jwks")
n_kids=$(jq -r '.keys[].kid' "$T/all.jwks" | sort -u | wc -l)
[ "$n_keys" = "$(echo $keys | wc -w)" ] && [ "$n_kids" = "$n_keys" ] &&
    ok "the JWKS holds every key once, each with its own kid" ||
    not_ok "the JWKS holds every key once, each with its own kid ($n_keys keys, $n_kids kids)"
for n in $keys; do
    [ -s "$T/$n.jwk" ] && [ -s "$T/all.jwks" ] &&
        jq -e --slurpfile k "$T/$n.jwk" '.keys | index($k[0]) != null' "$T/all.jwks" >/dev/null &&
        ok "$n: its JWK is in the JWKS as keyvault jwk prints it" ||
        not_ok "$n: its JWK is in the JWKS as keyvault jwk prints it"
done

# ---- our tokens, verified by jose -----------------------------------------------
now=$(date +%s)
cat >"$T/claims.json" <<JSON
{"iss":"device-7","sub":"device-7","aud":["$AUD","https://other.example/"],"iat":$now,"exp":$((now + 86400)),"scope":"read write","n":{"a":[1,2.5,"\u00e9"],"b":null,"c":true}}
JSON
: >"$T/jtis"
# an RSA key without a policy pins no alg in its JWK, so that its PS256 and
# RS256 tokens both verify against the set as keyvault wrote it
if jq -e '[.keys[] | select(.kty == "RSA") | has("alg")] | any | not' "$T/all.jwks" >/dev/null; then
    ok "the RSA keys' JWKs pin no alg"
else
    not_ok "the RSA keys' JWKs pin no alg"
fi
# jose_ok DESC TOKENFILE ARGS...: queue a check that jose verifies TOKENFILE
# against the JWKS $jwks; jose_run runs the queue in one node process
: >"$T/queue"
jose_ok() {
    desc=$1; tokf=$2; shift 2
    (IFS="$(printf '\t')"; echo "$desc	$tokf	$jwks${*:+	$*}") >>"$T/queue"
}
jose_run() {
    J verify-batch "$T/queue" >"$T/jout" 2>&1 || { not_ok "jose-check.mjs verify-batch"; sed 's/^/    /' "$T/jout"; }
    while IFS="$(printf '\t')" read -r res desc info; do
        if [ "$res" = ok ]; then
            ok "$desc"
            [ -n "$info" ] && echo "$info" >>"$T/jtis"
        else
            not_ok "$desc: $info"
        fi
    done <"$T/jout"
    : >"$T/queue"
}
for n in $keys; do
    asan_for "$n"
    case $n in
    *ec-p256) algs=ES256 ;;
    *ec-p384) algs=ES384 ;;
    *ed25519) algs=EdDSA ;;
    *rsa*) algs="PS256 RS256" ;;
    esac
    for alg in $algs; do
        aopt=
        jwks=$T/all.jwks
        [ "$alg" = RS256 ] && aopt="--alg RS256"
        t=$T/tok/$n-$alg
        for x5c in "" --x5c; do
            t0=$(date +%s)
            # shellcheck disable=SC2086
            expect 0 "$n: jwt sign --claims${aopt:+ $aopt}${x5c:+ $x5c}" -- kv jwt sign "$n" --claims "$T/claims.json" $aopt $x5c
            tr -d '\n' <"$T/out" >"$t-claims$x5c.jwt"
            # shellcheck disable=SC2086
            jose_ok "$n: jose verifies the $alg token${x5c:+ (and its x5c leaf and chain)}, its claims are the file's" \
                "$t-claims$x5c.jwt" --alg "$alg" --claims "$T/claims.json" --signed "$t0:$(date +%s)" $x5c
            for i in 1 2; do
                t0=$(date +%s)
                # shellcheck disable=SC2086
                expect 0 "$n: jwt sign --client-assertion${aopt:+ $aopt}${x5c:+ $x5c} ($i)" -- kv jwt sign "$n" --client-assertion \
                    --client-id "client-$n" --aud "$AUD" --ttl 120 $aopt $x5c
                tr -d '\n' <"$T/out" >"$t-ca$i$x5c.jwt"
                # shellcheck disable=SC2086
                jose_ok "$n: jose verifies the $alg client assertion${x5c:+ (and its x5c)}: iss = sub, aud, exp - iat = 120, iat when made, jti, typ, kid" \
                    "$t-ca$i$x5c.jwt" --alg "$alg" --aud "$AUD" --client-id "client-$n" --ttl 120 --signed "$t0:$(date +%s)" $x5c
            done
        done
        t0=$(date +%s)
        expect 0 "$n: jwt sign --client-assertion with the default ttl" -- \
            kv jwt sign "$n" --client-assertion --client-id "client-$n" --aud "$AUD" $aopt
        tr -d '\n' <"$T/out" >"$t-ttl.jwt"
        jose_ok "$n: jose finds exp - iat = 60 by default" "$t-ttl.jwt" --alg "$alg" --aud "$AUD" --client-id "client-$n" --ttl 60 \
            --signed "$t0:$(date +%s)"
    done
    jose_run
done
asan_fast_stacks
# evidence in the client assertion: the document itself, or its SHA-256
jwks=$T/all.jwks
for n in tpm-ec-p256 pkcs11-ec-p256 software-ed25519; do
    expect 0 "$n: keyvault attest" -- kv attest "$n" --nonce "$(openssl rand -hex 32)" -o "$T/$n.ev.json"
    for hash in "" --evidence-hash; do
        evopt=--evidence
        [ -n "$hash" ] && evopt=--evidence-hash
        t0=$(date +%s)
        # shellcheck disable=SC2086
        expect 0 "$n: jwt sign --client-assertion --evidence${hash:+ $hash}" -- kv jwt sign "$n" --client-assertion \
            --client-id "client-$n" --aud "$AUD" --evidence "$T/$n.ev.json" $hash
        tr -d '\n' <"$T/out" >"$T/tok/$n-ev$hash.jwt"
        jose_ok "$n: jose verifies the assertion and finds ${hash:+the hash of }the evidence in it" \
            "$T/tok/$n-ev$hash.jwt" --aud "$AUD" --client-id "client-$n" --ttl 60 \
            --signed "$t0:$(date +%s)" "$evopt" "$T/$n.ev.json"
    done
done
jose_run
n_jti=$(wc -l <"$T/jtis")
n_uniq=$(sort -u "$T/jtis" | wc -l)
[ "$n_jti" -gt 0 ] && [ "$n_jti" = "$n_uniq" ] && ok "all $n_jti jti differ" ||
    not_ok "all jti differ ($n_jti jti, $n_uniq different)"
# jose refuses our token once it is changed (the check can fail)
# our RS256 token back through keyvault jwt verify, with the set as written
# (made here: one made in the loop above may have expired by now on a
# loaded machine)
expect 0 "an RS256 client assertion by the TPM" -- kv jwt sign tpm-rsa-2048 --client-assertion \
    --client-id client-tpm-rsa-2048 --aud "$AUD" --ttl 120 --alg RS256
tr -d '\n' <"$T/out" >"$T/tok/tpm-rs256.jwt"
expect 0 "keyvault verifies its own RS256 client assertion" -- \
    kv jwt verify "$(cat "$T/tok/tpm-rs256.jwt")" --jwks "$T/all.jwks" --aud "$AUD" --iss client-tpm-rsa-2048
expect 0 "a fresh client assertion" -- kv jwt sign software-ec-p256 --client-assertion --client-id client-software-ec-p256 --aud "$AUD" --ttl 120
t=$T/tok/fresh.jwt
tr -d '\n' <"$T/out" >"$t"
tr -d '\n' <"$t" | awk -F. '{ printf "%s.%s.%s", $1, $2, ($3 ~ /^A/ ? "B" : "A") substr($3, 2) }' >"$T/tok/changed.jwt"
expect 0 "jose verifies our token (the control)" -- J verify "$t" "$T/all.jwks" --plain
expect 1 "jose refuses our token with its signature changed" -- J verify "$T/tok/changed.jwt" "$T/all.jwks" --alg ES256
contains "$T/out" "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" "jose says the signature fails"
expect 1 "jose refuses our client assertion for another client id" -- \
    J verify "$t" "$T/all.jwks" --alg ES256 --aud "$AUD" --client-id client-other --ttl 120
contains "$T/out" 'unexpected "iss" claim value' "jose says the iss is not the one wanted"

# ---- jose's tokens, verified by us ------------------------------------------------
now=$(date +%s)
cat >"$T/jclaims.json" <<JSON
{"iss":"jose-client","sub":"jose-client","aud":"$AUD","iat":$now,"exp":$((now + 300)),"jti":"j-$now","x":[1,{"y":"z"}]}
JSON
mkdir -p "$T/jose"
for alg in ES256 ES384 PS256 RS256 EdDSA; do
    expect 0 "jose signs with its own $alg key" -- J sign "$alg" "$T/jclaims.json" "$T/jose"
    tok=$(cat "$T/jose/$alg.jwt")
    expect 0 "$alg: keyvault jwt verify --jwks (jose's JWKS) --aud --iss" -- \
        kv jwt verify "$tok" --jwks "$T/jose/$alg.jwks" --aud "$AUD" --iss jose-client
    jq -S . "$T/out" >"$T/got.json" 2>/dev/null
    jq -S . "$T/jclaims.json" >"$T/want.json"
    cmp -s "$T/got.json" "$T/want.json" && ok "$alg: it prints the claims" ||
        { not_ok "$alg: it prints the claims"; sed 's/^/    /' "$T/out"; }
    expect 0 "$alg: keyvault jwt verify --pubkey (jose's PEM)" -- kv jwt verify "$tok" --pubkey "$T/jose/$alg.pem" --aud "$AUD"
    contains "$T/out" '"iss": *"jose-client"' "$alg: it prints the claims"
    expect 0 "$alg: keyvault jwt verify with a JWKS of the required members only" -- \
        kv jwt verify "$tok" --jwks "$T/jose/$alg-bare.jwks" --aud "$AUD"
    expect 0 "$alg: the token on standard input" -- kv_in "$T/jose/$alg.jwt" jwt verify - --jwks "$T/jose/$alg.jwks" --aud "$AUD"
    expect 0 "$alg: a token without kid, against the one key of the JWKS" -- \
        kv jwt verify "$(cat "$T/jose/$alg-nokid.jwt")" --jwks "$T/jose/$alg.jwks" --aud "$AUD"
    expect 0 "$alg: a token without kid, against the PEM" -- \
        kv jwt verify "$(cat "$T/jose/$alg-nokid.jwt")" --pubkey "$T/jose/$alg.pem" --aud "$AUD"
    expect 1 "$alg: refused for another audience" -- \
        kv jwt verify "$tok" --jwks "$T/jose/$alg.jwks" --aud https://other.example/token
done
# a jose JWKS of several keys: each token finds its own by kid
jq -s '{keys: map(.keys[0])}' "$T"/jose/ES256.jwks "$T"/jose/ES384.jwks "$T"/jose/PS256.jwks \
    "$T"/jose/RS256.jwks "$T"/jose/EdDSA.jwks >"$T/jose/all.jwks"
for alg in ES256 ES384 PS256 RS256 EdDSA; do
    expect 0 "$alg: found by kid in a JWKS of five jose keys" -- \
        kv jwt verify "$(cat "$T/jose/$alg.jwt")" --jwks "$T/jose/all.jwks" --aud "$AUD"
done
expect 1 "a token without kid against five keys is refused" -- \
    kv jwt verify "$(cat "$T/jose/ES256-nokid.jwt")" --jwks "$T/jose/all.jwks" --aud "$AUD"
expect 1 "an RS256 token against a JWK whose alg is PS256 is refused" -- \
    kv jwt verify "$(cat "$T/jose/RS256-nokid.jwt")" --pubkey "$T/jose/PS256.pem" --aud "$AUD"

# ---- the negative corpus ------------------------------------------------------------
C=$T/corpus
mkdir -p "$C"
cnow=$(date +%s)
expect 0 "jose and node write the corpus" -- J corpus "$C" "$cnow"
# the corpus's times (expired, not yet valid, within and past a skew of 10 s)
# are seconds from $cnow: each verify runs on a clock started at $cnow
# (faketime), not on one a loaded machine has moved on by a minute
cstart=$(TZ=UTC date -d "@$cnow" '+%Y-%m-%d %H:%M:%S')
kvc() { TZ=UTC faketime -f "@$cstart" "$KEYVAULT" -c "$T/kv.conf" "$@"; }
kvc_in() { f=$1; shift; kvc "$@" <"$f"; }
: >"$T/checked"
# neg NAME STATUS REASON [OPTIONS...]: keyvault jwt verify of corpus token NAME
# (on standard input) against the corpus JWKS exits with STATUS, and on
# refusal says REASON (a grep -E pattern) on standard error
neg() {
    name=$1; want=$2; reason=$3; shift 3
    echo "$name" >>"$T/checked"
    kvc jwt verify - --jwks "$C/keys.jwks" "$@" <"$C/$name.jwt" >"$T/out" 2>"$T/err"
    got=$?
    if [ "$got" != "$want" ]; then
        not_ok "corpus $name: exit $got, wanted $want"; sed 's/^/    /' "$T/err" "$T/out"
    elif [ "$want" != 0 ] && ! grep -Eqi -- "$reason" "$T/err"; then
        not_ok "corpus $name: refused, but not for /$reason/"; sed 's/^/    /' "$T/err"
    elif [ "$want" != 0 ] && [ -s "$T/out" ]; then
        not_ok "corpus $name: refused, but claims printed"
    elif [ "$want" = 0 ] && ! jq -e .iss "$T/out" >/dev/null 2>&1; then
        not_ok "corpus $name: accepted, but no claims printed"; sed 's/^/    /' "$T/out"
    else
        ok "corpus $name: exit $want${reason:+ ($(head -n 1 "$T/err" | cut -c1-110))}"
    fi
}
A="--aud $AUD --iss client-1"
# shellcheck disable=SC2086
{
# controls: the corpus is otherwise valid
neg good 0 "" $A
neg good-rsa 0 "" $A
neg good-aud-array 0 "" $A
neg skew-exp-inside 0 "" $A
neg skew-nbf-inside 0 "" $A
neg big-inside 0 "" $A
# alg none and its spellings
neg alg-none 1 "alg 'none'" $A
neg alg-none-nokid 1 "alg 'none'" $A
neg alg-None 1 "alg 'None'" $A
neg alg-none-sig 1 "alg 'none'" $A
neg alg-missing 1 "alg is missing|no alg" $A
# the algorithm switched in the header
neg switch-RS256 1 "alg RS256 is not allowed" $A
neg switch-PS256 1 "alg PS256 is not allowed" $A
neg switch-ES384 1 "alg ES384 is not allowed" $A
neg switch-relabel-ES384 1 "alg ES384 is not allowed" $A
neg switch-EdDSA 1 "alg EdDSA is not allowed" $A
neg switch-ES512 1 "alg .ES512. is not supported" $A
neg switch-rsa-RS256 1 "alg RS256 is not allowed" $A
# HMAC with the public key as its secret
neg hs256-pem 1 "alg 'HS256'" $A
neg hs256-pem-rsa 1 "alg 'HS256'" $A
neg hs256-jwk 1 "alg 'HS256'" $A
neg hs256-jwk-rsa 1 "alg 'HS256'" $A
neg hs384-pem 1 "alg 'HS384'" $A
# time: expired, not yet valid, outside the skew, exp missing
neg expired 1 "token expired at" $A
neg skew-exp-outside 1 "token expired at" $A
neg skew-exp-inside 1 "token expired at .*skew 10 s" $A --skew 10
neg not-yet-valid 1 "not valid before" $A
neg skew-nbf-outside 1 "not valid before" $A
neg skew-nbf-inside 1 "not valid before .*skew 10 s" $A --skew 10
neg no-exp 1 "exp missing" $A
neg exp-string 1 "exp is a string" $A
# audience and issuer
neg wrong-aud 1 "aud .* does not match" $A
neg wrong-aud-array 1 "no aud of 2" $A
neg wrong-aud-prefix 1 "aud .* does not match" $A
neg wrong-iss 1 "iss .client-2. does not match" $A
neg good 1 "aud .* does not match .https://as.example/other." --aud https://as.example/other
neg good 1 "iss .client-1. does not match .client-2." --aud "$AUD" --iss client-2
# tampering
neg tampered-payload 1 "signature does not verify" $A
neg tampered-signature 1 "signature does not verify" $A
neg tampered-header 1 "signature does not verify" $A
neg signature-der 1 "must be 64 bytes, has (6[0-9]|7[0-2])" $A  # DER: 70 to 72 bytes, fewer when r or s is short
neg signature-short 1 "must be 64 bytes, has 63" $A
neg signature-empty 1 "must be 64 bytes, has 0" $A
# bad base64url
neg b64-padding 1 "not base64url" $A
neg b64-plus 1 "not base64url" $A
neg b64-slash 1 "not base64url" $A
neg b64-space 1 "not base64url" $A
neg b64-newline 1 "not base64url" $A
neg b64-noncanonical 1 "not canonical base64url" $A
neg b64-sig-65 1 "must be 64 bytes, has 65" $A
neg b64-length-mod4-1 1 "not base64url" $A
neg b64-header-padding 1 "header is not base64url" $A
# size
neg oversized 1 "65536-byte limit" $A
neg oversized-large 1 "65536-byte limit" $A
# keys the token offers
neg jwk-attacker 1 "'jwk'" $A
neg jwk-attacker-kid 1 "'jwk'" $A
neg jwk-attacker-victim-kid 1 "'jwk'" $A
neg jwk-victim-signed 1 "'jwk'" $A
neg jku-attacker 1 "'jku'" $A
neg jku-victim-signed 1 "'jku'" $A
neg x5u-attacker 1 "'x5u'" $A
neg x5u-victim-signed 1 "'x5u'" $A
neg kid-unknown 1 "kid .* is not in the key set" $A
neg kid-unknown-nokid 1 "no kid and the key set holds 2" $A
neg kid-not-string 1 "kid is not a string" $A
# crit, duplicate members, wrong JSON
neg crit 1 "member .crit. is refused" $A
neg crit-exp 1 "member .crit. is refused" $A
neg dup-header-alg 1 "duplicate|appears twice" $A
neg dup-header-alg-same 1 "duplicate|appears twice" $A
neg dup-header-kid 1 "duplicate|appears twice" $A
neg dup-claims-aud 1 "duplicate|appears twice" $A
neg header-array 1 "header is not a JSON object" $A
neg header-not-json 1 "header is not valid JSON" $A
neg payload-array 1 "(claims|payload) (are|is) (an array|not a JSON object)" $A
neg payload-trailing 1 "(claims|payload) (are|is) not valid JSON: text follows" $A
# structure
neg truncated 1 "signature|base64" $A
neg truncated-at-dot 1 "has 2 parts" $A
neg one-dot 1 "has 2 parts" $A
neg no-dots 1 "has 1 part" $A
neg four-parts 1 "has 4 parts" $A
neg jwe-shape 1 "has 5 parts" $A
neg empty 1 "empty|has 1 part" $A
neg header-empty 1 "header is not valid JSON" $A
}
# the corpus against the PEM alone (--pubkey): the same refusals
pneg() {
    name=$1; reason=$2; shift 2
    echo "$name" >>"$T/checked"
    kvc jwt verify - --pubkey "$C/victim.pem" --aud "$AUD" <"$C/$name.jwt" >"$T/out" 2>"$T/err"
    got=$?
    if [ "$got" = 1 ] && grep -Eqi -- "$reason" "$T/err"; then ok "corpus $name with --pubkey: refused ($(head -n 1 "$T/err" | cut -c1-100))"
    else not_ok "corpus $name with --pubkey: exit $got, wanted 1 for /$reason/"; sed 's/^/    /' "$T/err"; fi
}
expect 0 "corpus good with --pubkey" -- kvc jwt verify "$(cat "$C/good.jwt")" --pubkey "$C/victim.pem" --aud "$AUD"
pneg alg-none-nokid "alg 'none'"
pneg hs256-pem-nokid "alg 'HS256'"
pneg switch-RS256 "alg RS256 is not allowed"
pneg switch-relabel-ES384 "alg ES384 is not allowed"
pneg jwk-attacker "'jwk'"
pneg jwk-victim-signed "'jwk'"
pneg jku-victim-signed "'jku'"
pneg x5u-victim-signed "'x5u'"
pneg kid-unknown "kid .* is not in the key set"
pneg kid-unknown-nokid "signature does not verify"
pneg oversized "65536-byte limit"
# the token as an argument rather than on standard input
for name in b64-space b64-newline; do
    expect 1 "corpus $name as an argument: refused" -- kvc jwt verify "$(cat "$C/$name.jwt")" --jwks "$C/keys.jwks"
    contains "$T/err" "base64" "corpus $name as an argument: the reason is the base64url"
done
# standard input: whitespace after the token is not part of it, text after it is
printf '%s \r\n\n' "$(cat "$C/good.jwt")" >"$T/good-ws"
expect 0 "a good token with whitespace after it on standard input" -- kvc_in "$T/good-ws" jwt verify - --jwks "$C/keys.jwks" --aud "$AUD"
printf '%s junk\n' "$(cat "$C/good.jwt")" >"$T/good-junk"
expect 1 "a good token with text after it on standard input is refused" -- kvc_in "$T/good-junk" jwt verify - --jwks "$C/keys.jwks" --aud "$AUD"
printf '%s\n%s\n' "$(cat "$C/good.jwt")" "$(cat "$C/good.jwt")" >"$T/good-twice"
expect 1 "two tokens on standard input are refused" -- kvc_in "$T/good-twice" jwt verify - --jwks "$C/keys.jwks" --aud "$AUD"
# every token of the corpus was put to keyvault
sort -u "$T/checked" >"$T/checked.s"
sort -u "$C/cases" >"$T/cases.s"
missing=$(comm -23 "$T/cases.s" "$T/checked.s" | tr '\n' ' ')
[ -z "$missing" ] && ok "every one of the $(wc -l <"$T/cases.s") corpus tokens was checked" ||
    not_ok "corpus tokens not checked: $missing"
# jose itself refuses the hostile tokens it can parse (a check that the corpus is hostile)
expect 0 "jose verifies corpus good (the control)" -- J verify "$C/good.jwt" "$C/keys.jwks" --plain --aud "$AUD" --signed "$cnow:$cnow"
# (node's base64 decoder ignores the unused bits and jose has no size limit:
# these two differ from a valid token only in what keyvault is stricter about)
expect 0 "jose accepts corpus b64-noncanonical: only its unused bits differ" -- \
    J verify "$C/b64-noncanonical.jwt" "$C/keys.jwks" --plain --aud "$AUD" --signed "$cnow:$cnow"
expect 0 "jose accepts corpus oversized: only its size is wrong" -- \
    J verify "$C/oversized.jwt" "$C/keys.jwks" --plain --aud "$AUD" --signed "$cnow:$cnow"
for name in alg-none hs256-pem switch-RS256 switch-relabel-ES384 tampered-payload \
    jwk-attacker kid-unknown expired wrong-aud; do
    J verify "$C/$name.jwt" "$C/keys.jwks" --plain --aud "$AUD" --signed "$cnow:$cnow" >"$T/out" 2>&1
    got=$?
    if [ "$got" = 1 ] && grep -q '^rejected: ' "$T/out"; then ok "jose refuses corpus $name too ($(cut -c11-90 "$T/out"))"
    else not_ok "jose refuses corpus $name too (exit $got)"; sed 's/^/    /' "$T/out"; fi
done
finish
