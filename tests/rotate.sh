#!/bin/sh
# rotate.sh - key versions and rotation on the software store, a SoftHSM
# token and swtpm (docs/lifecycle.md): signatures by the old version verify
# (openssl) during the overlap and the old version is refused once retired,
# also in a process that held it open since before the rotation
# (rotate-hold); ECDH by the old version works in the overlap (compared
# with openssl's side); certificates stay with their version; a process
# rotating (tests/crash-victim) killed with SIGKILL at random points
# (KV_ROTATE_KILLS times, default 100, per backend) always leaves a current
# version that opens and signs, and a rerun finishes the rotation; a tampered, swapped or
# deleted lifecycle record is refused (KV_ERR_CORRUPT); prune destroys
# retired versions. The refusal of a retired version also through the
# OpenSSL provider (openssl dgst -sign keyvault:NAME@N).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
soft_store 'rotate test passphrase'
KILLS=${KV_ROTATE_KILLS:-100}
HOLD=${KV_BUILDDIR:-.}/tests/rotate-hold
VICTIM=${KV_BUILDDIR:-.}/tests/crash-victim
MODDIR=$(cd "${KV_BUILDDIR:-.}/libkeyvault/provider/.libs" 2>/dev/null && pwd)
# openssl with the provider ($B/openssl.cnf). In a sanitized build the module
# is and openssl is not: ASan's runtime must come first there (as in
# openssl-provider.sh), its leaks at exit are openssl's
asan=$(ldd "$MODDIR/keyvault.so" 2>/dev/null | awk '/libasan/ { print $3 }')
ossl() {
    if [ -n "$asan" ]; then
        LD_PRELOAD=$asan ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
            OPENSSL_CONF="$B/openssl.cnf" openssl "$@"
    else
        OPENSSL_CONF="$B/openssl.cnf" openssl "$@"
    fi
}
command -v jq >/dev/null || { echo "rotate.sh: jq is missing (tests/install-deps.sh)"; exit 1; }
printf 'a message for every version\n' >"$T/msg"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.key" 2>/dev/null
openssl pkey -in "$T/peer.key" -pubout -out "$T/peer.pub"

# verifies PUB SIG DESCRIPTION: openssl checks SIG over $T/msg
verifies() {
    if openssl dgst -sha256 -verify "$1" -signature "$2" "$T/msg" >/dev/null 2>&1; then ok "$3"
    else not_ok "$3"; fi
}
# state NAME VERSION WANT: the version's state as `keyvault versions --json` shows it
state() {
    kv versions "$1" --json >"$T/v.json" 2>"$T/err"
    got=$(jq -r ".versions[] | select(.version == $2) | .state" "$T/v.json")
    [ "$got" = "$3" ] && ok "$1: version $2 is $3" || not_ok "$1: version $2 is $3 (got '$got')"
}

# kill_rotating US: start crash-victim rotating $n-k in a loop (overlap 0,
# grace 0) and SIGKILL it a random 0..US microseconds after it said "begin"
# (its context open, its first rotation under way): a kill timed from a
# launch lands in start-up on a loaded machine (a CI run: 100 such kills,
# none after the record named a pending version). Sets landed to mid (a
# rotation was under way), between, or exited (it ended by itself).
kill_rotating() {
    : >"$B/victim.out"
    "$VICTIM" "$KCONF" rotate "$n-k" 0 >"$B/victim.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 2000); do
        grep -q '^begin' "$B/victim.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.005
    done
    usleep "$(rand_below $(($1 + 1)))"
    if kill -9 "$pid" 2>/dev/null; then
        case $(tail -n 1 "$B/victim.out") in
        "begin "*) landed=mid ;;
        *) landed=between ;;
        esac
    else
        landed=exited
    fi
    wait "$pid" 2>/dev/null
}

# kill_loop (inside run_backend): SIGKILL a process rotating $n-k at random
# points, KILLS times; after each, the current version opens and signs
kill_loop() {
    kk() { "$KEYVAULT" -c "$KCONF" "$@"; }
    expect 0 "$be: keygen for the kill loop" -- kk keygen "$n-k" --backend "$be"
    start=$(date +%s%N)
    kk rotate "$n-k" --overlap 0 --grace 0 >/dev/null 2>&1
    span=$(( ($(date +%s%N) - start) / 1000 ))   # microseconds one rotation takes
    # pending: how many versions are pending, or "?" when that cannot be read
    pending() {
        _p=$(kk versions "$n-k" --json | jq '[.versions[] | select(.state == "pending")] | length')
        case $_p in '' | *[!0-9]*) echo '?' ;; *) echo "$_p" ;; esac
    }
    bad=0 mid=0 other=0 halfdone=0
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        i=$((i + 1))
        kill_rotating "$span"
        if [ "$landed" = mid ]; then mid=$((mid + 1)); else other=$((other + 1)); fi
        # a rotation that fails by itself after a kill is a defect: running
        # it again must finish what the killed one began
        if [ "$landed" = exited ]; then
            bad=$((bad + 1))
            echo "    kill $i: the rotating process ended by itself:"; tail -n 3 "$B/victim.out" | sed 's/^/    /'
        fi
        p=$(pending)
        [ "$p" = '?' ] && { bad=$((bad + 1)); echo "    kill $i: keyvault versions failed"; }
        [ "$p" != '?' ] && [ "$p" -gt 0 ] && halfdone=$((halfdone + 1))
        if ! kk sign "$n-k" -i "$T/msg" -o "$B/k.sig" >"$B/k.err" 2>&1 ||
           ! kk pubkey "$n-k" -o "$B/k.pub" >>"$B/k.err" 2>&1 ||
           ! openssl dgst -sha256 -verify "$B/k.pub" -signature "$B/k.sig" "$T/msg" >/dev/null 2>&1; then
            bad=$((bad + 1))
            [ "$bad" -le 3 ] && { echo "    after kill $i:"; sed 's/^/    /' "$B/k.err"; }
        fi
        [ $((i % 10)) = 0 ] && kk prune "$n-k" >/dev/null 2>&1
    done
    echo "    $be: $KILLS kills within 0..${span} us of a rotation's start: $mid with a rotation under way ($halfdone left a pending version), $other not"
    [ "$bad" = 0 ] && ok "$be: after each of $KILLS kills the current version opens and signs" ||
        not_ok "$be: after each of $KILLS kills the current version opens and signs ($bad did not)"
    [ "$halfdone" -gt 0 ] && ok "$be: the kill loop killed rotations part-way ($halfdone left a pending version)" ||
        not_ok "$be: the kill loop killed rotations part-way (no kill left a pending version)"
    # end on a kill that left a rotation half-done (a pending version)
    tries=0
    while [ "$(pending)" = 0 ] && [ "$tries" -lt 100 ]; do
        tries=$((tries + 1))
        kill_rotating "$span"
    done
    echo "    $be: $tries more kills until one left a pending version"
    p=$(pending)
    [ "$p" != '?' ] && [ "$p" -gt 0 ] && ok "$be: a kill left a rotation half-done" ||
        not_ok "$be: a kill left a rotation half-done"
    expect 0 "$be: the half-done rotation leaves a current version that signs" -- \
        kk sign "$n-k" -i "$T/msg" -o "$B/k.sig"
    kk versions "$n-k" --json >"$B/before.json"
    cur=$(jq -r .current "$B/before.json")
    expect 0 "$be: a rerun completes the rotation" -- kk rotate "$n-k" --overlap 1h
    kk versions "$n-k" --json >"$B/after.json"
    new=$(jq -r .current "$B/after.json")
    [ "$new" -gt "$cur" ] && ok "$be: the rerun made a newer version current ($cur -> $new)" ||
        not_ok "$be: the rerun made a newer version current ($cur -> $new)"
    [ "$(jq '[.versions[] | select(.state == "pending")] | length' "$B/after.json")" = 0 ] &&
        ok "$be: no version is left pending" || not_ok "$be: no version is left pending"
    expect 0 "$be: the new current version signs" -- kk sign "$n-k" -i "$T/msg" -o "$B/k.sig"
    expect 0 "$be: prune after the kill loop" -- kk prune "$n-k"
}

run_backend() {
    be=$1
    CONF=$2
    n=r-$be
    B=$T/$be
    mkdir -p "$B"
    kv() { "$KEYVAULT" -c "$CONF" "$@"; }

    expect 0 "$be: keygen" -- kv keygen "$n" --backend "$be"
    expect 0 "$be: a key never rotated has one version" -- kv versions "$n" --json
    [ "$(jq -r '.versions | length' "$T/out")" = 1 ] && ok "$be: one version, current" ||
        not_ok "$be: one version, current"
    expect 0 "$be: v1 signs" -- kv sign "$n" -i "$T/msg" -o "$B/v1.sig"
    expect 0 "$be: v1 public key" -- kv pubkey "$n" -o "$B/v1.pub"
    expect 0 "$be: a certificate stored with v1" -- kv cert selfsign "$n" --subject "CN=$n v1" \
        -o "$B/v1.crt"

    # ---- rotation with an overlap ----
    expect 0 "$be: rotate --overlap 1h" -- kv rotate "$n" --overlap 1h --grace 0
    contains "$T/out" "version 2 is current" "$be: rotate names the new version"
    state "$n" 1 overlap
    state "$n" 2 current
    expect 0 "$be: the list shows both versions" -- kv list
    contains "$T/out" "^$n  *v1 *overlap" "$be: list: $n v1 in overlap"
    contains "$T/out" "^$n@2  *v2 *current" "$be: list: $n@2 v2 current"
    expect 0 "$be: the name opens v2" -- kv pubkey "$n" -o "$B/v2.pub"
    cmp -s "$B/v1.pub" "$B/v2.pub" && not_ok "$be: v2 is a new key" || ok "$be: v2 is a new key"
    expect 0 "$be: NAME@1 opens v1" -- kv pubkey "$n@1" -o "$B/v1again.pub"
    cmp -s "$B/v1.pub" "$B/v1again.pub" && ok "$be: NAME@1 is the old key" ||
        not_ok "$be: NAME@1 is the old key"
    expect 0 "$be: v1 signs in its overlap" -- kv sign "$n@1" -i "$T/msg" -o "$B/v1o.sig"
    verifies "$B/v1.pub" "$B/v1o.sig" "$be: openssl verifies v1's overlap signature"
    verifies "$B/v1.pub" "$B/v1.sig" "$be: openssl verifies v1's signature from before"
    expect 0 "$be: v2 signs" -- kv sign "$n" -i "$T/msg" -o "$B/v2.sig"
    verifies "$B/v2.pub" "$B/v2.sig" "$be: openssl verifies v2's signature"
    expect 0 "$be: v1 ECDH in its overlap" -- kv ecdh "$n@1" --peer "$T/peer.pub" -o "$B/z1"
    openssl pkeyutl -derive -inkey "$T/peer.key" -peerkey "$B/v1.pub" -out "$B/z1.ossl" 2>/dev/null
    cmp -s "$B/z1" "$B/z1.ossl" && ok "$be: v1's ECDH secret is openssl's" ||
        not_ok "$be: v1's ECDH secret is openssl's"
    # certificates follow their version
    expect 0 "$be: v1 keeps its certificate" -- kv cert "$n@1" -o "$B/v1now.crt"
    cmp -s "$B/v1.crt" "$B/v1now.crt" && ok "$be: v1's certificate is unchanged" ||
        not_ok "$be: v1's certificate is unchanged"
    expect 1 "$be: v2 starts without a certificate" -- kv cert "$n"
    expect 0 "$be: a certificate stored with v2" -- kv cert selfsign "$n" --subject "CN=$n v2" \
        -o "$B/v2.crt"
    expect 0 "$be: v1's certificate after v2 got one" -- kv cert "$n@1" -o "$B/v1now.crt"
    cmp -s "$B/v1.crt" "$B/v1now.crt" && ok "$be: v1's certificate is still its own" ||
        not_ok "$be: v1's certificate is still its own"
    expect 0 "$be: v2's certificate" -- kv cert "$n" -o "$B/v2now.crt"
    cmp -s "$B/v2.crt" "$B/v2now.crt" && ok "$be: v2's certificate is v2's" ||
        not_ok "$be: v2's certificate is v2's"
    expect 1 "$be: a version that does not exist" -- kv pubkey "$n@9"
    contains "$T/err" "has no version 9" "$be: the error names the version"
    expect 1 "$be: keygen of a rotated name is refused" -- kv keygen "$n" --backend "$be"
    expect 1 "$be: NAME@N is no name for keygen" -- kv keygen "$n@5"
    expect 1 "$be: the current version cannot be destroyed alone" -- kv destroy "$n@2"
    contains "$T/err" "is the current version" "$be: the error says why"

    for bad in "$n@0" "$n@01" "$n@" "$n@1x" "@1" "$n@1@2" "$n@9999999999"; do
        expect 1 "$be: '$bad' is not a key version" -- kv pubkey "$bad"
    done
    contains "$T/err" "optionally @VERSION" "$be: the error says what a name may be"

    # ---- retirement ----
    expect 0 "$be: rotate --overlap 0 retires v2 at once" -- kv rotate "$n" --overlap 0 --grace 0
    state "$n" 1 overlap
    state "$n" 2 retired
    state "$n" 3 current
    expect 1 "$be: retired v2 is refused for signing" -- kv sign "$n@2" -i "$T/msg" -o "$B/x.sig"
    contains "$T/err" "version 2 of key '$n' was retired at 20" "$be: the refusal names version and time"
    expect 1 "$be: retired v2 is refused for ECDH" -- kv ecdh "$n@2" --peer "$T/peer.pub"
    contains "$T/err" "ecdh refused" "$be: the ECDH refusal says so"
    expect 0 "$be: retired v2's public key is still there" -- kv pubkey "$n@2" -o "$B/v2r.pub"
    expect 0 "$be: v1 still signs (its own overlap)" -- kv sign "$n@1" -i "$T/msg" -o "$B/x.sig"
    # the same through the OpenSSL provider: an unmodified openssl
    provider_cnf "$B/openssl.cnf" "$CONF"
    expect 0 "$be: openssl signs with v1 through the provider (overlap)" -- \
        ossl dgst -sha256 -sign "keyvault:$n@1" -out "$B/p1.sig" "$T/msg"
    verifies "$B/v1.pub" "$B/p1.sig" "$be: the provider's v1 signature verifies"
    expect 1 "$be: openssl is refused retired v2 through the provider" -- \
        ossl dgst -sha256 -sign "keyvault:$n@2" -out "$B/p2.sig" "$T/msg"
    contains "$T/err" "version 2 of key '$n' was retired" "$be: the provider's refusal names the version"
    # a listed version is not destroyed by URI behind its record's back
    case $be in
    software) vuri="file:$T/store/$n@2.pem" ;;
    tpm) vuri="tpm2:file=$KV_TPM_DIR/keys/$n@2.pem" ;;
    *) vuri= ;;
    esac
    if [ -n "$vuri" ]; then
        expect 1 "$be: destroy by URI of listed version 2 is refused" -- kv destroy "$vuri"
        contains "$T/err" "is version 2 of key '$n': destroy '$n@2'" "$be: the refusal says how"
        expect 0 "$be: version 2 is still there" -- kv pubkey "$n@2" -o "$B/x.pub"
    fi
    if [ "$be" = tpm ]; then
        # a copy of retired v2's key file under another name, in a directory
        # without the store's secret: found by its public key however opened
        cp "$KV_TPM_DIR/keys/$n@2.pem" "$B/old.pem"
        cp "$KV_TPM_DIR/keys/$n@3.pem" "$B/cur.pem"
        kv pubkey "$n@3" -o "$B/v3c.pub" >/dev/null 2>&1
        openssl dgst -sha256 -binary "$T/msg" >"$B/msg.dgst"
        expect 1 "$be: a copy of retired v2's key file is refused (tpm2:file=)" -- \
            kv sign "tpm2:file=$B/old.pem" -i "$T/msg" -o "$B/x.sig"
        contains "$T/err" "version 2 of key '$n' was retired at 20.*sign refused" \
            "$be: the copy's refusal names the version"
        expect 1 "$be: openssl pkeyutl -inkey COPY (the provider's decoder) is refused" -- \
            ossl pkeyutl -sign -inkey "$B/old.pem" -in "$B/msg.dgst" -out "$B/x.sig"
        contains "$T/err" "version 2 of key '$n' was retired" \
            "$be: the decoder's refusal names the version"
        expect 1 "$be: openssl dgst -sign COPY is refused" -- \
            ossl dgst -sha256 -sign "$B/old.pem" -out "$B/x.sig" "$T/msg"
        expect 0 "$be: a copy of current v3's key file signs (tpm2:file=)" -- \
            kv sign "tpm2:file=$B/cur.pem" -i "$T/msg" -o "$B/c3.sig"
        verifies "$B/v3c.pub" "$B/c3.sig" "$be: the copy's signature is v3's"
        expect 0 "$be: openssl pkeyutl -inkey a copy of v3 signs" -- \
            ossl pkeyutl -sign -inkey "$B/cur.pem" -in "$B/msg.dgst" -out "$B/c3p.sig"
        openssl pkeyutl -verify -pubin -inkey "$B/v3c.pub" -in "$B/msg.dgst" \
            -sigfile "$B/c3p.sig" >/dev/null 2>&1 && ok "$be: the decoder's v3 signature verifies" ||
            not_ok "$be: the decoder's v3 signature verifies"
    fi
    # v3's overlap ends in 10 minutes: what follows its end runs on a clock 20
    # minutes ahead (faketime), not after a wait a slow machine could spend
    # inside a 2-second overlap; v1's hour-long overlap is still running then
    expect 0 "$be: rotate --overlap 10m" -- kv rotate "$n" --overlap 10m --grace 0
    expect 0 "$be: v3 public key" -- kv pubkey "$n@3" -o "$B/v3.pub"
    expect 0 "$be: v3 signs in its overlap" -- kv sign "$n@3" -i "$T/msg" -o "$B/v3o.sig"
    kv() { faketime -f +20m "$KEYVAULT" -c "$CONF" "$@"; }
    state "$n" 3 retired
    expect 1 "$be: v3 is refused once its overlap ended" -- kv sign "$n@3" -i "$T/msg" -o "$B/x.sig"
    contains "$T/err" "version 3 of key '$n' was retired" "$be: the refusal names version 3"
    verifies "$B/v3.pub" "$B/v3o.sig" "$be: v3's overlap signature still verifies"
    expect 0 "$be: prune" -- kv prune "$n"
    contains "$T/out" "2 versions destroyed" "$be: prune destroyed v2 and v3"
    expect 1 "$be: a pruned version is gone" -- kv pubkey "$n@2"
    expect 0 "$be: v1, in its overlap, is kept" -- kv pubkey "$n@1" -o "$B/x.pub"
    kv() { "$KEYVAULT" -c "$CONF" "$@"; }
    expect 0 "$be: the current version after prune" -- kv sign "$n" -i "$T/msg" -o "$B/v4.sig"

    # ---- attestation and issuing by a retired version ----
    expect 0 "$be: keygen a CA" -- kv keygen "$n-ca" --backend "$be"
    expect 0 "$be: the CA's certificate" -- kv cert selfsign "$n-ca" --subject "CN=$n CA" --ca -o "$B/ca1.crt"
    openssl req -new -key "$T/peer.key" -subj "/CN=client-$be" -out "$B/client.csr" 2>/dev/null
    expect 0 "$be: the CA issues" -- kv ca sign "$n-ca" --csr "$B/client.csr" --profile tls-client -o "$B/c1.pem"
    expect 0 "$be: rotate the CA, overlap 0" -- kv rotate "$n-ca" --overlap 0
    expect 1 "$be: the retired CA version is refused for issuing" -- \
        kv ca sign "$n-ca@1" --csr "$B/client.csr" --profile tls-client -o "$B/c2.pem"
    contains "$T/err" "version 1 of key '$n-ca' was retired at 20.*issue refused" "$be: the issue refusal names it"
    [ ! -e "$B/c2.pem" ] && ok "$be: no certificate came out" || not_ok "$be: no certificate came out"
    expect 1 "$be: the new CA version has no certificate of its own yet" -- \
        kv ca sign "$n-ca" --csr "$B/client.csr" --profile tls-client -o "$B/c2.pem"
    expect 1 "$be: a retired version is refused for attestation" -- \
        kv attest "$n-ca@1" --nonce 000102030405060708090a0b0c0d0e0f --no-quote -o "$B/ev.json"
    contains "$T/err" "version 1 of key '$n-ca' was retired at 20.*attest refused" \
        "$be: the attest refusal names it"
    expect 0 "$be: the current version attests" -- \
        kv attest "$n-ca" --nonce 000102030405060708090a0b0c0d0e0f --no-quote -o "$B/ev.json"

    # ---- a process holding the key notices retirement without reopening ----
    expect 0 "$be: keygen for the holder" -- kv keygen "$n-h" --backend "$be"
    if "$HOLD" "$CONF" "$KEYVAULT" "$n-h" 15 >"$B/hold.out" 2>&1; then
        ok "$be: the holder's version is refused after its overlap without reopening"
    else
        not_ok "$be: the holder's version is refused after its overlap without reopening"
        sed 's/^/    /' "$B/hold.out"
    fi

    # ---- tampered, swapped, deleted records ----
    R=$KEYVAULT_HOME/lifecycle
    cp "$R/$n.json" "$B/rec.json"
    jq '.versions[0].retire_at += 86400' "$B/rec.json" >"$R/$n.json"
    expect 1 "$be: an edited record is refused" -- kv sign "$n" -i "$T/msg" -o "$B/x.sig"
    contains "$T/err" "does not authenticate" "$be: the edited record does not authenticate"
    expect 1 "$be: kv versions refuses it too" -- kv versions "$n"
    cp "$R/$n-h.json" "$R/$n.json"
    expect 1 "$be: a record swapped in from another key is refused" -- kv pubkey "$n"
    contains "$T/err" "belongs to key '$n-h'" "$be: the swap is named"
    cp "$B/rec.json" "$R/$n.json"
    expect 0 "$be: the restored record is accepted" -- kv sign "$n" -i "$T/msg" -o "$B/x.sig"
    cp "$R/$n-h.json" "$B/rech.json"
    rm "$R/$n-h.json"
    expect 1 "$be: a deleted record is refused" -- kv pubkey "$n-h"
    contains "$T/err" "no lifecycle record" "$be: the deleted record is named"
    cp "$B/rech.json" "$R/$n-h.json"
    expect 0 "$be: the restored record is accepted again" -- kv pubkey "$n-h" -o "$B/x.pub"

    # ---- rotations at once: they wait for each other ----
    expect 0 "$be: keygen for concurrent rotations" -- kv keygen "$n-c" --backend "$be"
    for j in 1 2 3 4; do kv rotate "$n-c" --overlap 1h >"$B/c$j.out" 2>&1 & done
    wait
    cok=0
    for j in 1 2 3 4; do
        if grep -q "is current" "$B/c$j.out"; then cok=$((cok + 1))
        elif ! grep -q "no longer its pending version" "$B/c$j.out"; then sed 's/^/    /' "$B/c$j.out"; fi
    done
    [ "$cok" -ge 1 ] && ok "$be: 4 rotations at once: $cok finished, the others refused cleanly" ||
        not_ok "$be: 4 rotations at once: none finished"
    expect 0 "$be: after them the versions read back" -- kv versions "$n-c" --json
    [ "$(jq '[.versions[] | select(.state == "current")] | length' "$T/out")" = 1 ] &&
        [ "$(jq '[.versions[] | select(.state == "overlap")] | length' "$T/out")" = "$cok" ] &&
        ok "$be: one current version, one overlap per finished rotation" ||
        not_ok "$be: one current version, one overlap per finished rotation"
    expect 0 "$be: the current version signs" -- kv sign "$n-c" -i "$T/msg" -o "$B/c.sig"

    # ---- SIGKILL at random points of a rotation ----
    KCONF=$CONF
    if [ "$be" = pkcs11 ]; then
        # the token in its own process (p11_server_start in lib.sh)
        p11_server_start
        printf '[keyvault]\nbackends = pkcs11\n\n[pkcs11]\nmodule = %s\ntoken = %s\npin = file:%s\n' \
            "$KV_P11_CLIENT" \
            "$KV_P11_TOKEN" "$KV_P11_PINFILE" >"$T/client.conf"
        KCONF=$T/client.conf
    fi
    kill_loop
    [ "$be" = pkcs11 ] && p11_server_stop
    # ---- destroy by name removes every version and the record ----
    expect 0 "$be: destroy a rotated key" -- kv destroy "$n-k"
    [ ! -e "$KEYVAULT_HOME/lifecycle/$n-k.json" ] && ok "$be: its record is gone" ||
        not_ok "$be: its record is gone"
    expect 1 "$be: no version is left" -- kv pubkey "$n-k@$cur"
    expect 0 "$be: the name can be generated again" -- kv keygen "$n-k" --backend "$be"
}

# ---- [lifecycle] in the configuration ----
cp "$T/kv.conf" "$T/lc.conf"
printf '\n[lifecycle]\noverlap = 90m\ngrace = keep\n' >>"$T/lc.conf"
lc() { "$KEYVAULT" -c "$T/lc.conf" "$@"; }
expect 0 "config: keygen" -- lc keygen cfg-key
expect 0 "config: rotate with the configured overlap" -- lc rotate cfg-key
lc versions cfg-key --json >"$T/cfg.json"
[ "$(jq '.versions[0].retire_at - .versions[1].activated' "$T/cfg.json")" = 5400 ] &&
    ok "config: [lifecycle] overlap = 90m gives 5400 s" || not_ok "config: [lifecycle] overlap = 90m gives 5400 s"
[ "$(jq '.versions[0].destroy_at' "$T/cfg.json")" = 0 ] && ok "config: grace = keep: never destroyed" ||
    not_ok "config: grace = keep: never destroyed"
expect 0 "config: --overlap overrides it" -- lc rotate cfg-key --overlap 10s
lc versions cfg-key --json >"$T/cfg.json"
[ "$(jq '.versions[1].retire_at - .versions[2].activated' "$T/cfg.json")" = 10 ] &&
    ok "config: --overlap 10s gives 10 s" || not_ok "config: --overlap 10s gives 10 s"
cp "$T/kv.conf" "$T/bad.conf"
sed 's/^grace = keep/grace = 1d/' "$T/lc.conf" >"$T/lc2.conf"
expect 0 "config: rotate with grace = 1d" -- "$KEYVAULT" -c "$T/lc2.conf" rotate cfg-key
expect 0 "config: rotate with --grace keep over grace = 1d" -- \
    "$KEYVAULT" -c "$T/lc2.conf" rotate cfg-key --grace keep
lc versions cfg-key --json >"$T/cfg.json"
[ "$(jq '.versions[2].destroy_at - .versions[2].retire_at' "$T/cfg.json")" = 86400 ] &&
    ok "config: grace = 1d gives destroy_at = retire_at + 86400" ||
    not_ok "config: grace = 1d gives destroy_at = retire_at + 86400"
[ "$(jq '.versions[3].destroy_at' "$T/cfg.json")" = 0 ] &&
    ok "config: --grace keep (KV_ROTATE_KEEP) overrides it" ||
    not_ok "config: --grace keep (KV_ROTATE_KEEP) overrides it"
printf '\n[lifecycle]\noverlap = 7 days\n' >>"$T/bad.conf"
expect 1 "config: a bad duration is refused" -- "$KEYVAULT" -c "$T/bad.conf" rotate cfg-key
contains "$T/err" "\[lifecycle\] overlap: not a duration" "config: the error names the key"
cp "$T/kv.conf" "$T/typo.conf"
printf '\n[lifecycle]\noverlapp = 1d\n' >>"$T/typo.conf"
expect 1 "config: an unknown [lifecycle] key is refused" -- "$KEYVAULT" -c "$T/typo.conf" list
expect 2 "cli: --overlap needs a duration" -- lc rotate cfg-key --overlap soon

# ---- [policy] holds for versions and prune ----
expect 0 "policy: keygen pp-key" -- "$KEYVAULT" -c "$T/kv.conf" keygen pp-key
expect 0 "policy: rotate pp-key, v1 due for pruning" -- \
    "$KEYVAULT" -c "$T/kv.conf" rotate pp-key --overlap 0 --grace 0
{ cat "$T/kv.conf"; printf '\n[policy]\nkeys = other-*\n'; } >"$T/other.conf"
{ cat "$T/kv.conf"; printf '\n[policy]\nmanage = false\n'; } >"$T/nomanage.conf"
expect 1 "policy: keys = other-*: prune pp-key is refused" -- \
    "$KEYVAULT" -c "$T/other.conf" prune pp-key
contains "$T/err" "\[policy\] keys): key 'pp-key' is not one of" "policy: the prune refusal names the rule"
expect 1 "policy: keys = other-*: versions pp-key is refused" -- \
    "$KEYVAULT" -c "$T/other.conf" versions pp-key
contains "$T/err" "\[policy\] keys)" "policy: the versions refusal names the rule"
expect 1 "policy: manage = false: prune pp-key is refused" -- \
    "$KEYVAULT" -c "$T/nomanage.conf" prune pp-key
contains "$T/err" "manage = false" "policy: the refusal names manage"
"$KEYVAULT" -c "$T/kv.conf" versions pp-key --json >"$T/pp.json"
[ "$(jq '.versions | length' "$T/pp.json")" = 2 ] && ok "policy: the refused prunes destroyed nothing" ||
    not_ok "policy: the refused prunes destroyed nothing"
expect 0 "policy: prune is allowed without [policy]" -- "$KEYVAULT" -c "$T/kv.conf" prune pp-key
contains "$T/out" "1 version destroyed" "policy: then it prunes v1"

# ---- destroy and rotate at once: the destroy sees every version ----
# (either order leaves nothing: no record, no version, nothing that signs)
rk() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
races=${KV_DESTROY_RACES:-30} rbad=0
i=0
while [ "$i" -lt "$races" ]; do
    i=$((i + 1))
    rk keygen race-k >/dev/null 2>&1 || { rbad=$((rbad + 1)); continue; }
    [ $((i % 3)) = 0 ] && rk rotate race-k --overlap 1h >/dev/null 2>&1
    rk rotate race-k --overlap 1h >"$T/race-r.out" 2>&1 &
    rp=$!
    rk destroy race-k >"$T/race-d.out" 2>&1 &
    dp=$!
    wait "$rp"
    rbad0=$rbad
    wait "$dp" || { rbad=$((rbad0 + 1)); [ "$rbad" -le 3 ] && sed 's/^/    destroy: /' "$T/race-d.out"; }
    rk list >"$T/race-l.out" 2>&1
    if grep -q '^race-k' "$T/race-l.out" || [ -e "$KEYVAULT_HOME/lifecycle/race-k.json" ] ||
       rk sign race-k -i "$T/msg" -o "$T/race.sig" >/dev/null 2>&1; then
        rbad=$((rbad0 + 1))
        [ "$rbad" -le 3 ] && { echo "    race $i left:"; grep '^race-k' "$T/race-l.out" | sed 's/^/    /'; }
        # clean up for the next round, whatever is left
        for v in 1 2 3 4 5 6; do rk destroy "race-k@$v" >/dev/null 2>&1; done
        rk destroy race-k >/dev/null 2>&1
        rm -f "$KEYVAULT_HOME/lifecycle/race-k.json"
        for f in "$T"/store/race-k*; do [ -e "$f" ] && rm -f "$f"; done
    fi
done
[ "$rbad" = 0 ] && ok "destroy racing rotate: $races rounds left no version, no record, nothing that signs" ||
    not_ok "destroy racing rotate: $rbad of $races rounds left versions or a record behind"

# audit records of the lifecycle: rotate and prune each leave one, and
# the log's chain holds (the [audit] file of docs/audit.md)
{ cat "$T/kv.conf"; printf '\n[audit]\nfile = %s\nflush = record\n' "$T/lc-audit.log"; } \
    >"$T/kv-audit.conf"
ka() { "$KEYVAULT" -c "$T/kv-audit.conf" "$@"; }
expect 0 "audit: keygen" -- ka keygen au-k
expect 0 "audit: rotate" -- ka rotate au-k --overlap 0 --grace 0
expect 0 "audit: prune" -- ka prune au-k
n_rot=$(jq -c 'select(.op == "rotate" and .key == "au-k" and .version == 2 and .result == "ok")' \
    "$T/lc-audit.log" | wc -l)
[ "$n_rot" = 1 ] && ok "audit: one rotate record naming version 2" ||
    not_ok "audit: one rotate record naming version 2 (got $n_rot)"
contains "$T/lc-audit.log" '"op":"prune","result":"ok","error":0,"detail":"1 version destroyed"' \
    "audit: the prune record says what it destroyed"
expect 0 "audit: the log verifies" -- ka audit verify "$T/lc-audit.log"

run_backend software "$T/kv.conf"
run_backend pkcs11 "$KV_P11_DIR/keyvault.conf"
run_backend tpm "$KV_TPM_DIR/keyvault.conf"
finish
