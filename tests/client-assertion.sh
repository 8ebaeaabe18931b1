#!/bin/sh
# client-assertion.sh - OAuth2 private_key_jwt end to end: examples/client-assertion
# signs an RFC 7523 client assertion with a vault key and posts the client
# credentials request with libcurl to examples/client-assertion/token-endpoint.mjs,
# which checks it with the `jose` npm package against the JWK set `keyvault jwks`
# wrote. The endpoint accepts a good assertion and refuses a replayed one, a
# wrong aud, another client id, a key it was not given and an expired one,
# with software keys, a SoftHSM key and a swtpm key (whose assertion also
# carries the key's TPM evidence) when those backends are built.
# Also `keyvault jwk`, `jwks`, `jwt sign` and `jwt verify` (exit status, the
# reason on standard error, usage errors). tests/install-deps.sh installs node,
# jose and libcurl.
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-.}
B=${KV_BUILDDIR:-.}
EX=$B/examples/client-assertion/client-assertion
KV_NPM_DIR=${KV_NPM_DIR:-/var/cache/libkeyvault-npm}
export KV_NPM_DIR
AT=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
node_pid=
tpm_up=
trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; [ -n "$tpm_up" ] && swtpm_cleanup; rm -rf "$T"' EXIT
have() { grep -q "^#define $1 1" "$B/config.h"; }
# b64u_dec TEXT: base64url (unpadded) decoded on standard output
b64u_dec() {
    s=$(printf '%s' "$1" | tr '_-' '/+')
    case $((${#s} % 4)) in 2) s="$s==" ;; 3) s="$s=" ;; esac
    printf '%s' "$s" | base64 -d
}

soft_store "client assertion test"
export KEYVAULT_CONF="$T/kv.conf"
expect 0 "keygen an EC P-256 key" -- kv keygen dev-ec --type ec-p256
expect 0 "keygen an Ed25519 key" -- kv keygen dev-ed --type ed25519
expect 0 "keygen an RSA key" -- kv keygen dev-rsa --type rsa-2048
expect 0 "keygen a key the endpoint is not given" -- kv keygen stranger --type ec-p256

# ---- jwk and jwks ------------------------------------------------------------
expect 0 "keyvault jwk" -- kv jwk dev-ec
if jq -e '.kty == "EC" and .crv == "P-256" and .alg == "ES256" and .use == "sig" and
          (.kid | length) == 43 and (.x | length) == 43 and (.y | length) == 43 and
          (has("d") | not)' "$T/out" >/dev/null; then
    ok "the JWK: kty, crv, alg ES256, use sig, kid, x and y, no private member"
else
    not_ok "the JWK: kty, crv, alg ES256, use sig, kid, x and y, no private member"; cat "$T/out"
fi
expect 0 "keyvault jwks of three keys" -- kv jwks dev-ec dev-ed dev-rsa
cp "$T/out" "$T/jwks.json"
if jq -e '[.keys[].kty] == ["EC", "OKP", "RSA"] and [.keys[].alg] == ["ES256", "EdDSA", null]' \
    "$T/jwks.json" >/dev/null; then
    ok "the JWK set holds the three keys in order"
else
    not_ok "the JWK set holds the three keys in order"; cat "$T/jwks.json"
fi
expect 1 "keyvault jwks of a missing key fails" -- kv jwks dev-ec no-such-key
expect 2 "keyvault jwk without a key is a usage error" -- kv jwk
expect 2 "keyvault jwks without a key is a usage error" -- kv jwks

# ---- jwt sign and verify through the CLI -----------------------------------------
now=$(date +%s)
printf '{"iss":"svc","sub":"job-7","aud":"https://api.example","exp":%s,"iat":%s}\n' \
    $((now + 300)) "$now" >"$T/claims.json"
expect 0 "jwt sign --claims" -- kv jwt sign dev-ec --claims "$T/claims.json"
tok=$(cat "$T/out")
cp "$T/out" "$T/out.tok"
expect 0 "jwt verify a valid token (exit 0)" -- kv jwt verify "$tok" --jwks "$T/jwks.json" \
    --aud https://api.example --iss svc --sub job-7 --max-ttl 300
[ "$(jq -r .sub "$T/out")" = job-7 ] && ok "jwt verify prints the claims" ||
    not_ok "jwt verify prints the claims"
expect 0 "jwt verify reads the token from standard input" -- \
    sh -c "printf '%s\n' '$tok' | '$KEYVAULT' jwt verify - --jwks '$T/jwks.json' --aud https://api.example"
expect 0 "keyvault pubkey of the signing key" -- kv pubkey dev-ec -o "$T/dev-ec.pem"
expect 0 "keyvault pubkey of the RSA key" -- kv pubkey dev-rsa -o "$T/dev-rsa.pem"
expect 0 "jwt verify --pubkey PEM" -- kv jwt verify "$tok" --pubkey "$T/dev-ec.pem" --aud https://api.example
# RFC 7519 4.1.3: a token meant for an audience is refused by a verifier that names none
expect 1 "jwt verify without --aud refuses a token that carries an aud" -- \
    kv jwt verify - --jwks "$T/jwks.json" <"$T/out.tok"
contains "$T/err" "the token carries an aud and no audience was given" "the reason: aud not checked"
expect 0 "jwt verify --any-aud takes it" -- kv jwt verify - --jwks "$T/jwks.json" --any-aud <"$T/out.tok"
expect 2 "jwt verify --aud with --any-aud is a usage error" -- \
    kv jwt verify - --jwks "$T/jwks.json" --aud https://api.example --any-aud <"$T/out.tok"
# each option takes its own kind of key text
expect 2 "jwt verify --jwks given a PEM key is refused" -- \
    kv jwt verify - --jwks "$T/dev-ec.pem" --aud https://api.example <"$T/out.tok"
contains "$T/err" "--jwks '$T/dev-ec.pem' is not a JWK set or a JWK (a PEM public key goes with --pubkey)" \
    "the reason: a PEM goes with --pubkey"
expect 2 "jwt verify --pubkey given a JWK set is refused" -- \
    kv jwt verify - --pubkey "$T/jwks.json" --aud https://api.example <"$T/out.tok"
contains "$T/err" "--pubkey '$T/jwks.json' is not a PEM public key (a JWK set or JWK goes with --jwks)" \
    "the reason: a JWK set goes with --jwks"
expect 1 "jwt verify: wrong aud (exit 1)" -- kv jwt verify "$tok" --jwks "$T/jwks.json" \
    --aud https://other.example
contains "$T/err" "aud 'https://api.example' does not match 'https://other.example'" \
    "the reason names both audiences"
[ -s "$T/out" ] && not_ok "nothing on standard output for an invalid token" ||
    ok "nothing on standard output for an invalid token"
expect 1 "jwt verify: wrong iss" -- kv jwt verify "$tok" --jwks "$T/jwks.json" --iss other \
    --aud https://api.example
contains "$T/err" "iss 'svc' does not match 'other'" "the reason names the issuer"
expect 1 "jwt verify: lifetime over --max-ttl" -- kv jwt verify "$tok" --jwks "$T/jwks.json" \
    --max-ttl 299
contains "$T/err" "lifetime 300 s (exp - iat) is over max_ttl 299 s" "the reason names the lifetime"
expect 0 "keyvault pubkey of another key" -- kv pubkey stranger -o "$T/stranger.pem"
expect 1 "jwt verify: a key that did not sign the token" -- kv jwt verify "$tok" --pubkey \
    "$T/stranger.pem"
# the clock now, not at the start: under valgrind the checks above take minutes
printf '{"iss":"svc","exp":%s}\n' $(($(date +%s) - 30)) >"$T/expired.json"
expect 0 "jwt sign a token that expired 30 s ago" -- kv jwt sign dev-ed --claims "$T/expired.json"
old=$(cat "$T/out")
expect 0 "within the default 60 s skew it is still valid" -- kv jwt verify "$old" --jwks "$T/jwks.json"
expect 1 "with --skew 0 it has expired" -- kv jwt verify "$old" --jwks "$T/jwks.json" --skew 0
contains "$T/err" "token expired at .* (now .*, skew 0 s)" "the reason says when it expired"
expect 1 "with --skew 10 it has expired" -- kv jwt verify "$old" --jwks "$T/jwks.json" --skew 10
printf '{"iss":"svc"}\n' >"$T/noexp.json"
expect 0 "jwt sign a token without exp" -- kv jwt sign dev-rsa --claims "$T/noexp.json"
expect 1 "a token without exp is refused" -- kv jwt verify "$(cat "$T/out")" --jwks "$T/jwks.json"
contains "$T/err" "exp missing" "the reason: exp missing"
printf '[1, 2]\n' >"$T/array.json"
expect 1 "jwt sign: claims that are no object" -- kv jwt sign dev-ec --claims "$T/array.json"
contains "$T/err" "the claims text is not a JSON object" "the reason: not an object"
expect 1 "jwt verify: a token that is no JWS" -- kv jwt verify not.a.token --jwks "$T/jwks.json"
printf '%s' "$tok" | sed 's/\./. /2' >"$T/spaced.jwt"
expect 1 "jwt verify -: a space inside the token is not cut off, but refused" -- \
    kv jwt verify - --jwks "$T/jwks.json" <"$T/spaced.jwt"
contains "$T/err" "base64url" "the reason: base64url"
printf '{"iss":"svc","aud":"a","aud":"b","exp":%s}\n' $((now + 300)) >"$T/dup.json"
expect 1 "jwt sign: claims with a duplicate member" -- kv jwt sign dev-ec --claims "$T/dup.json"
contains "$T/err" "the claims text is not valid JSON: a member appears twice (duplicate member) (line 1" \
    "the reason: a duplicate member"
expect 0 "jwt sign --claims --alg RS256 with an RSA key" -- kv jwt sign dev-rsa --claims \
    "$T/claims.json" --alg RS256
rs=$(cat "$T/out")
[ "$(b64u_dec "$(printf '%s' "$rs" | cut -d. -f1)" | jq -r '.alg + " " + .typ')" = "RS256 JWT" ] &&
    ok "its header: alg RS256, typ JWT" || not_ok "its header: alg RS256, typ JWT"
expect 0 "it verifies (the RSA JWK allows RS256 too)" -- kv jwt verify "$rs" --pubkey "$T/dev-rsa.pem" \
    --aud https://api.example
expect 1 "jwt sign --alg ES384 with a P-256 key is refused" -- kv jwt sign dev-ec --claims \
    "$T/claims.json" --alg ES384
contains "$T/err" "ES384" "the reason names the alg"
expect 1 "jwt sign --claims --alg: claims that are no object" -- kv jwt sign dev-rsa --claims \
    "$T/array.json" --alg RS256
contains "$T/err" "the claims text is not a JSON object" "the reason: not an object"
expect 2 "jwt sign with --claims and --client-assertion" -- kv jwt sign dev-ec --claims \
    "$T/claims.json" --client-assertion --client-id a --aud b
expect 2 "jwt sign --client-assertion without --aud" -- kv jwt sign dev-ec --client-assertion \
    --client-id a
expect 2 "jwt sign --evidence-hash without --evidence" -- kv jwt sign dev-ec --client-assertion \
    --client-id a --aud b --evidence-hash
expect 2 "jwt sign --ttl over 3600" -- kv jwt sign dev-ec --client-assertion --client-id a \
    --aud b --ttl 3601
expect 2 "jwt verify without a key set" -- kv jwt verify "$tok"
expect 2 "jwt verify with --jwks and --pubkey" -- kv jwt verify "$tok" --jwks "$T/jwks.json" \
    --pubkey "$T/dev-ec.pem"
expect 2 "jwt with no subcommand" -- kv jwt
expect 2 "jwt verify with a bad option" -- kv jwt verify "$tok" --jwks "$T/jwks.json" --nope
# a usage error after the token (a second TOKEN) must not repeat it: the
# signature part is what only this token holds
expect 2 "jwt verify with two tokens is a usage error" -- kv jwt verify "$tok" "$tok" --jwks "$T/jwks.json"
contains "$T/err" "expected one TOKEN" "the reason: one token"
if grep -qF -- "$(printf '%s' "$tok" | cut -d. -f3 | cut -c1-24)" "$T/err"; then
    not_ok "the usage error repeats no token"
else ok "the usage error repeats no token"; fi

# evidence in the assertion: the object, or its hash
printf '{"format":"example-evidence","nonce":"AQID"}' >"$T/ev.json"
expect 0 "a client assertion carrying evidence" -- kv jwt sign dev-ec --client-assertion \
    --client-id device-42 --aud https://as.example/token --evidence "$T/ev.json"
expect 0 "it verifies" -- kv jwt verify "$(cat "$T/out")" --jwks "$T/jwks.json" \
    --aud https://as.example/token --iss device-42 --sub device-42 --max-ttl 60
[ "$(jq -r .kv_evidence.format "$T/out")" = example-evidence ] &&
    ok "the claim kv_evidence is the evidence object" || not_ok "the claim kv_evidence is the evidence object"
expect 0 "a client assertion carrying the evidence's hash" -- kv jwt sign dev-ec --client-assertion \
    --client-id device-42 --aud https://as.example/token --evidence "$T/ev.json" --evidence-hash
expect 0 "it verifies" -- kv jwt verify "$(cat "$T/out")" --jwks "$T/jwks.json" \
    --aud https://as.example/token
want=$(openssl dgst -sha256 -binary "$T/ev.json" | basenc --base64url | tr -d '=\n')
[ "$(jq -r .kv_evidence_s256 "$T/out")" = "$want" ] &&
    ok "kv_evidence_s256 is the base64url SHA-256 of the file (openssl)" ||
    not_ok "kv_evidence_s256 is the base64url SHA-256 of the file (openssl)"

# ---- hardware keys for the endpoint: SoftHSM and swtpm ---------------------------------
cp "$T/jwks.json" "$T/all.jwks"
if have KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    P=$KV_P11_DIR/keyvault.conf
    expect 0 "pkcs11: keygen an EC P-256 key on the token" -- \
        "$KEYVAULT" -c "$P" keygen p11-ec --backend pkcs11 --type ec-p256
    expect 0 "pkcs11: keyvault jwks" -- "$KEYVAULT" -c "$P" jwks p11-ec
    jq -s '{keys: (.[0].keys + .[1].keys)}' "$T/all.jwks" "$T/out" >"$T/all.tmp" && mv "$T/all.tmp" "$T/all.jwks"
fi
if have KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    tpm_up=1
    Q=$KV_TPM_DIR/keyvault.conf
    expect 0 "tpm: keygen an EC P-256 key in the TPM" -- "$KEYVAULT" -c "$Q" keygen tpm-ec --backend tpm --type ec-p256
    expect 0 "tpm: keyvault jwks" -- "$KEYVAULT" -c "$Q" jwks tpm-ec
    jq -s '{keys: (.[0].keys + .[1].keys)}' "$T/all.jwks" "$T/out" >"$T/all.tmp" && mv "$T/all.tmp" "$T/all.jwks"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/nonce"
    expect 0 "tpm: the key's evidence (keyvault attest)" -- \
        "$KEYVAULT" -c "$Q" attest tpm-ec --nonce "$(cat "$T/nonce")" --no-quote -o "$T/tpm-ev.json"
fi

# ---- the example against the token endpoint ------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! [ -f "$KV_NPM_DIR/node_modules/jose/package.json" ]; then
    not_ok "node and jose in $KV_NPM_DIR (run tests/install-deps.sh)"
    finish
    exit 1
fi
# The endpoint's key set as keyvault wrote it: the RSA key's JWK pins no alg
# (its policy allows PS256 and RS256), so the server takes either from it
cp "$T/all.jwks" "$T/endpoint.jwks"
node "$SRC/examples/client-assertion/token-endpoint.mjs" "$T/endpoint.jwks" device-42 "$T/port" \
    >"$T/endpoint.log" 2>&1 &
node_pid=$!
i=0
while ! [ -s "$T/port" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done  # up to 60 s
if ! [ -s "$T/port" ]; then
    not_ok "the token endpoint listens"; cat "$T/endpoint.log"; finish; exit 1
fi
ok "the token endpoint listens"
URL=http://127.0.0.1:$(cat "$T/port")/token
# log_has TEXT DESCRIPTION: the endpoint's last decision
log_has() { sleep 0.1; tail -n 1 "$T/endpoint.log" | grep -q -- "$1" && ok "$2" ||
    { not_ok "$2 ('$1' not the endpoint's last decision)"; tail -n 3 "$T/endpoint.log"; }; }

# the example is built only with libcurl (configure: KV_WITH_CURL)
if have KV_WITH_CURL; then
    for k in dev-ec dev-ed dev-rsa "--alg RS256 dev-rsa"; do
        # shellcheck disable=SC2086
        expect 0 "examples/client-assertion $k: the endpoint grants a token" -- \
            "$EX" $k device-42 "$URL"
        contains "$T/out" '"token_type":"Bearer"' "$k: a Bearer access token"
        log_has "200 accepted jti" "$k: the endpoint accepted the assertion"
    done
    log_has "alg RS256" "the last one was RS256"
    if have KV_WITH_PKCS11; then
        expect 0 "examples/client-assertion with the SoftHSM key: the endpoint grants a token" -- \
            env KEYVAULT_CONF="$P" "$EX" p11-ec device-42 "$URL"
        log_has "200 accepted jti" "pkcs11: the endpoint accepted the assertion"
    fi
    if have KV_WITH_TPM; then
        expect 0 "examples/client-assertion with the TPM key: the endpoint grants a token" -- \
            env KEYVAULT_CONF="$Q" "$EX" tpm-ec device-42 "$URL"
        log_has "200 accepted jti" "tpm: the endpoint accepted the assertion"
    fi
    expect 1 "an assertion for another audience is refused" -- \
        "$EX" --aud https://other.example/token dev-ec device-42 "$URL"
    contains "$T/out" "HTTP 401" "401 for the wrong aud"
    contains "$T/out" '"error":"invalid_client"' "invalid_client for the wrong aud"
    log_has 'aud' "the endpoint names aud"
    expect 1 "an assertion for another client id is refused" -- "$EX" dev-ec device-43 "$URL"
    log_has 'iss' "the endpoint names iss"
    expect 1 "an assertion by a key not in the endpoint's JWK set is refused" -- \
        "$EX" stranger device-42 "$URL"
    log_has 'ERR_JWKS_NO_MATCHING_KEY' "the endpoint has no key for it"
    expect 1 "an assertion living longer than the endpoint allows is refused" -- \
        "$EX" --ttl 3600 dev-ec device-42 "$URL"
    log_has 'lifetime 3600 s' "the endpoint refuses the lifetime"
    for bad in 5x -5 0 3601 ' 60' 99999999999999999999; do
        expect 2 "examples/client-assertion --ttl '$bad' is a usage error" -- \
            "$EX" --ttl "$bad" dev-ec device-42 "$URL"
    done
else
    echo "SKIP: examples/client-assertion (built without libcurl)"
fi

# replay: the same assertion posted twice (curl, form-encoded as the example does)
post() {
    curl -s -o "$T/resp" -w '%{http_code}' --data-urlencode grant_type=client_credentials \
        --data-urlencode "client_assertion_type=$AT" --data-urlencode "client_assertion@$1" "$URL"
}
expect 0 "keyvault jwt sign --client-assertion" -- kv jwt sign dev-ec --client-assertion \
    --client-id device-42 --aud "$URL"
tr -d '\n' <"$T/out" >"$T/a.jwt"
[ "$(post "$T/a.jwt")" = 200 ] && ok "the CLI's assertion is accepted" ||
    { not_ok "the CLI's assertion is accepted"; cat "$T/resp"; tail -n 2 "$T/endpoint.log"; }
[ "$(post "$T/a.jwt")" = 401 ] && ok "the same assertion again is refused (replay)" ||
    not_ok "the same assertion again is refused (replay)"
log_has 'jti replayed' "the endpoint names the replayed jti"
# a jti that is not a string: the replay check cannot key on it
now=$(date +%s)
printf '{"iss":"device-42","sub":"device-42","aud":"%s","iat":%s,"exp":%s,"jti":17}\n' \
    "$URL" "$now" $((now + 60)) >"$T/numjti.json"
expect 0 "jwt sign an assertion whose jti is a number" -- kv jwt sign dev-ec --claims "$T/numjti.json"
tr -d '\n' <"$T/out" >"$T/c.jwt"
[ "$(post "$T/c.jwt")" = 401 ] && ok "a jti that is not a string is refused (401)" ||
    { not_ok "a jti that is not a string is refused (401)"; cat "$T/resp"; }
log_has 'jti is not a string' "the endpoint names the jti"

if have KV_WITH_TPM; then
    expect 0 "tpm: a client assertion carrying the key's evidence" -- "$KEYVAULT" -c "$Q" jwt sign tpm-ec \
        --client-assertion --client-id device-42 --aud "$URL" --evidence "$T/tpm-ev.json"
    tr -d '\n' <"$T/out" >"$T/ev.jwt"
    [ "$(post "$T/ev.jwt")" = 200 ] && ok "tpm: the endpoint accepts it" ||
        { not_ok "tpm: the endpoint accepts it"; cat "$T/resp"; tail -n 2 "$T/endpoint.log"; }
    expect 0 "tpm: keyvault jwt verify of it" -- kv jwt verify - --jwks "$T/all.jwks" --aud "$URL" <"$T/ev.jwt"
    jq -S .kv_evidence "$T/out" >"$T/ev.claim"
    jq -S . "$T/tpm-ev.json" >"$T/ev.file"
    cmp -s "$T/ev.claim" "$T/ev.file" && ok "tpm: kv_evidence is the evidence document" ||
        not_ok "tpm: kv_evidence is the evidence document"
fi

# expired: a one-second assertion posted two seconds later
expect 0 "a client assertion with --ttl 1" -- kv jwt sign dev-ed --client-assertion \
    --client-id device-42 --aud "$URL" --ttl 1
tr -d '\n' <"$T/out" >"$T/b.jwt"
sleep 2
[ "$(post "$T/b.jwt")" = 401 ] && ok "the expired assertion is refused" ||
    not_ok "the expired assertion is refused"
log_has 'ERR_JWT_EXPIRED' "the endpoint says it expired"
expect 1 "keyvault jwt verify --skew 0 agrees that it expired" -- kv jwt verify - \
    --jwks "$T/jwks.json" --skew 0 <"$T/b.jwt"
contains "$T/err" "token expired at" "the reason: expired"
finish
