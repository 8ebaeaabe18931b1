#!/bin/sh
# renew.sh - certificate renewal through the CLI on every backend this build
# has (software store, SoftHSM token, swtpm): a certificate with a lifetime
# of seconds is left alone before renewal is due and renewed once it is; the
# new chain verifies with openssl against the CA's certificate and keeps the
# old subject, SANs and extended key usage; `cert renew --check` reports due
# and not due in its output and its exit status; a CA that fails (a missing
# CA key, a CA without a certificate, a CA record swapped for garbage or for
# another CA's, a file size limit) keeps the old chain and says when it
# expires; --rotate-key puts the new chain on a new key version and leaves
# the old version its own, and the old version current when the CA fails;
# --all renews what one CA issued and nothing else; the systemd
# units of examples/renew pass systemd-analyze verify.
. "$(dirname "$0")/lib.sh"
B=${KV_BUILDDIR:-.}
SRC=${KV_SRCDIR:-$(dirname "$0")/..}
with() { grep -q "^#define $1 1" "$B/config.h"; }
cleanup() { if with KV_WITH_TPM; then swtpm_cleanup; fi; rm -rf "$T"; }
trap cleanup EXIT
soft_store "renew test passphrase"
# backend CONF TAG BACKEND: the tests run on CONF's BACKEND too, named TAG.
# Renewal is due at half the lifetime: a certificate valid for 2 minutes from
# now (and, as every certificate, from a minute ago) is due 30 s from now.
# The steps that depend on that window run on a clock of their own (faketime,
# started at a chosen instant for every process): at the instant of issuance
# for "not due yet", a minute after it for "due", so a slow machine never
# moves a certificate across the window; the renewals made on that clock that
# the rest of the test would see are long-lived.
CONFS= TAGS= BACKENDS=
backend() {
    printf '\n[x509]\nrenew_threshold = 50%%\n' >>"$1"
    CONFS="${CONFS:+$CONFS }$1" TAGS="${TAGS:+$TAGS }$2" BACKENDS="${BACKENDS:+$BACKENDS }$3"
}
backend "$T/kv.conf" soft software
if with KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    backend "$KV_P11_DIR/keyvault.conf" p11 pkcs11
fi
if with KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    backend "$KV_TPM_DIR/keyvault.conf" tpm tpm
fi

command -v faketime >/dev/null || { echo "renew.sh: faketime is missing (tests/install-deps.sh installs it)"; exit 1; }
# at SECONDS CMD...: CMD with a clock that starts at SECONDS since the epoch
# (in each process it starts: FAKETIME's "@" form)
at() {
    ts=$1; shift
    TZ=UTC faketime -f "@$(date -u -d "@$ts" '+%Y-%m-%d %H:%M:%S')" "$@"
}
# issued PEM: the instant the certificate in PEM was issued (its notBefore is
# a minute earlier)
issued() { echo $(($(date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s) + 60)); }

# word N LIST...: the Nth word of LIST
word() { n=$1; shift; eval "echo \${$n}"; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
# stored CONF KEY OUT: the chain stored with KEY, written to OUT
stored() { "$KEYVAULT" -c "$1" cert "$2" -o "$3"; }
DB=$KEYVAULT_HOME/ca
# rows CA: certificates the CA recorded
rows() { sqlite3 -readonly "$DB/$1.db" "SELECT count(*) FROM issued"; }
# same_leaf A B: the first certificates of two PEM chains are the same (a
# token's chain read back goes on up to a root the token holds too)
same_leaf() {
    openssl x509 -in "$1" -outform DER -out "$T/leaf-a" && openssl x509 -in "$2" -outform DER -out "$T/leaf-b" &&
        cmp -s "$T/leaf-a" "$T/leaf-b"
}
# facts FILE: subject, SANs and EKU as openssl prints them
facts() {
    openssl x509 -in "$1" -noout -subject -ext subjectAltName,extendedKeyUsage -nameopt RFC2253
}

# early CONF TAG: just issued, not due yet (on a clock at the instant of issuance)
early() {
    c=$1 tag=$2
    now=$(issued "$T/$tag-gw-1.pem")
    k() { at "$now" "$KEYVAULT" -c "$c" "$@"; }
    expect 0 "$tag: not due yet: renew leaves it" -- k cert renew "$tag-gw" --ca "$tag-ca"
    stored "$c" "$tag-gw" "$T/$tag-gw-early.pem"
    [ "$(serial_of "$T/$tag-gw-early.pem")" = "$(serial_of "$T/$tag-gw-1.pem")" ] &&
        ok "$tag: not renewed before it is due" || not_ok "$tag: not renewed before it is due"
    expect 0 "$tag: --check: nothing due, exit 0" -- k cert renew --check
    contains "$T/out" "^$tag-gw: not due" "$tag: --check says not due"
}

# failing CONF TAG BACKEND: CAs that fail keep the old chain, and the message
# says until when it is in force (forced, on the year-long certificate)
failing() {
    c=$1 tag=$2
    k() { "$KEYVAULT" -c "$c" "$@"; }
    stored "$c" "$tag-gw" "$T/$tag-gw-before.pem"
    expect 1 "$tag: a CA key that does not exist" -- k cert renew "$tag-gw" --ca "$tag-missing" --force
    contains "$T/err" "no key named" "$tag: the error names the missing CA key"
    contains "$T/err" "$tag-gw: the old certificate stays in force until 20" "$tag: and says when the old certificate expires"
    expect 0 "$tag: a key without a certificate" -- k keygen "$tag-nocert" --backend "$3"
    expect 1 "$tag: as CA refuses" -- k cert renew "$tag-gw" --ca "$tag-nocert" --force
    contains "$T/err" "has no certificate stored with its key" "$tag: naming what the CA lacks"
    contains "$T/err" "renewing the certificate of '$tag-gw': .*; the old certificate stays in force until 20" "$tag: and when the old one expires"
    db=$DB/$tag-ca.db
    cp "$db" "$T/db.saved"
    echo "not a database" >"$db"
    expect 1 "$tag: a CA record that is not a database" -- k cert renew "$tag-gw" --ca "$tag-ca" --force
    contains "$T/err" "CA record .* failed: file is not a database; the old certificate stays in force until" "$tag: the error names the record and the expiry"
    cp "$T/other-ca.db" "$db"
    expect 1 "$tag: another CA's record swapped in" -- k cert renew "$tag-gw" --ca "$tag-ca" --force
    contains "$T/err" "belongs to another CA key.*stays in force until" "$tag: refused, with the expiry"
    cp "$T/db.saved" "$db"
    # a file size limit: the CA record's journal cannot be written
    expect 1 "$tag: a full disk (file size limit)" -- sh -c "ulimit -f 2; exec \"\$0\" \"\$@\"" "$KEYVAULT" -c "$c" cert renew "$tag-gw" --ca "$tag-ca" --force
    contains "$T/err" "stays in force until" "$tag: with the expiry"
    stored "$c" "$tag-gw" "$T/$tag-gw-after.pem"
    cmp -s "$T/$tag-gw-before.pem" "$T/$tag-gw-after.pem" && ok "$tag: every failure kept the old chain" ||
        not_ok "$tag: every failure kept the old chain"
    [ "$(rows "$tag-ca")" = 1 ] && ok "$tag: the CA recorded none of the failed issuances" ||
        not_ok "$tag: the CA recorded none of the failed issuances ($(rows "$tag-ca") rows)"
}

# setup CONF TAG BACKEND: a root CA, a device key with a certificate the CA
# issued (two SANs, serverAuth), failing CAs, then renewed by force to a
# lifetime of 2 minutes, and not renewed while not due
setup() {
    c=$1 tag=$2 be=$3
    k() { "$KEYVAULT" -c "$c" "$@"; }
    expect 0 "$tag: the CA key" -- k keygen "$tag-ca" --type ec-p256 --backend "$be"
    expect 0 "$tag: the CA's root certificate" -- k cert selfsign "$tag-ca" --subject "CN=$tag Renewal Root,O=Fleet" --ca --days 30 -o "$T/$tag-ca.pem"
    expect 0 "$tag: the device key" -- k keygen "$tag-gw" --type ec-p256 --backend "$be"
    k csr "$tag-gw" --subject "CN=$tag-gw.example.org,O=Fleet" --san "dns:$tag-gw.example.org" --san ip:192.0.2.7 --eku serverAuth -o "$T/$tag-gw.csr" >/dev/null
    expect 0 "$tag: the CA issues it a tls-server certificate" -- k ca sign "$tag-ca" --csr "$T/$tag-gw.csr" --profile tls-server -o "$T/$tag-gw-0.pem"
    expect 0 "$tag: stored with the key" -- k cert import "$tag-gw" "$T/$tag-gw-0.pem"
    facts "$T/$tag-gw-0.pem" >"$T/$tag-facts-0"
    expect 0 "$tag: a year-long certificate is not due: renew does nothing" -- k cert renew "$tag-gw" --ca "$tag-ca"
    contains "$T/out" "not due yet" "$tag: and says so"
    stored "$c" "$tag-gw" "$T/$tag-gw-kept.pem"
    [ "$(serial_of "$T/$tag-gw-kept.pem")" = "$(serial_of "$T/$tag-gw-0.pem")" ] &&
        ok "$tag: the stored certificate is the same" || not_ok "$tag: the stored certificate is the same"
    failing "$c" "$tag" "$be"
    expect 0 "$tag: --force renews it now, with a 2 minute lifetime" -- k cert renew "$tag-gw" --ca "$tag-ca" --force --lifetime 2m -o "$T/$tag-gw-1.pem"
    contains "$T/out" "renewed" "$tag: and says so"
    stored "$c" "$tag-gw" "$T/$tag-gw-1s.pem"
    same_leaf "$T/$tag-gw-1.pem" "$T/$tag-gw-1s.pem" && ok "$tag: what -o wrote is what is stored" ||
        not_ok "$tag: what -o wrote is what is stored"
    life=$(($(date -d "$(openssl x509 -in "$T/$tag-gw-1.pem" -noout -enddate | cut -d= -f2)" +%s) -
            $(date -d "$(openssl x509 -in "$T/$tag-gw-1.pem" -noout -startdate | cut -d= -f2)" +%s)))
    [ "$life" -ge 175 ] && [ "$life" -le 185 ] && ok "$tag: valid for a minute before and 2 minutes after issuance" ||
        not_ok "$tag: valid for a minute before and 2 minutes after issuance ($life s)"
    early "$c" "$tag"
}

# due CONF TAG: renewal is due (on a clock a minute after the 2-minute
# certificate was issued: due 30 s ago, expiring in a minute)
due() {
    c=$1 tag=$2
    now=$(($(issued "$T/$tag-gw-1.pem") + 60))
    k() { at "$now" "$KEYVAULT" -c "$c" "$@"; }
    expect 3 "$tag: --check: exit 3 once a certificate is due" -- k cert renew --check
    contains "$T/out" "^$tag-gw: due" "$tag: --check names it due"
    contains "$T/out" "^$tag-ca: not due" "$tag: and the CA's own not"
    expect 3 "$tag: --check --json" -- k cert renew --check --json
    if command -v jq >/dev/null; then
        [ "$(jq -r ".keys[] | select(.name == \"$tag-gw\") | .due" "$T/out")" = true ] &&
            [ "$(jq -r '.due' "$T/out")" = 1 ] && ok "$tag: the JSON says due, one of them" ||
            { not_ok "$tag: the JSON says due, one of them"; cat "$T/out"; }
    else
        contains "$T/out" '"due": 1' "$tag: the JSON counts one due"
    fi

    # and now it works: on the software store by the systemd service's own
    # command (--all), elsewhere by name
    if [ "$tag" = soft ]; then
        cmd=$(sed -n 's/^ExecStart=//p' "$SRC/examples/renew/keyvault-renew.service" |
            sed "s|/usr/bin/keyvault|$KEYVAULT|; s|\${KEYVAULT_RENEW_CA}|$tag-ca|")
        expect 0 "$tag: due: the service's ExecStart renews it" -- at "$now" env KEYVAULT_CONF="$c" sh -c "$cmd"
        contains "$T/out" "^$tag-gw: renewed" "$tag: --all renewed it"
        contains "$T/out" "^other-leaf: issued by another CA, left alone" "$tag: --all left another CA's alone"
        stored "$c" "$tag-gw" "$T/$tag-gw-2.pem"
    else
        expect 0 "$tag: due: renew renews it" -- k cert renew "$tag-gw" --ca "$tag-ca" -o "$T/$tag-gw-2.pem"
    fi
    stored "$c" "$tag-gw" "$T/$tag-gw-2s.pem"
    same_leaf "$T/$tag-gw-2.pem" "$T/$tag-gw-2s.pem" && ok "$tag: the new chain is stored" ||
        not_ok "$tag: the new chain is stored"
    [ "$(serial_of "$T/$tag-gw-2.pem")" != "$(serial_of "$T/$tag-gw-1.pem")" ] &&
        ok "$tag: a new certificate (serial)" || not_ok "$tag: a new certificate (serial)"
    expect 0 "$tag: openssl verify -CAfile CA new chain" -- at "$now" openssl verify -CAfile "$T/$tag-ca.pem" "$T/$tag-gw-2.pem"
    expect 0 "$tag: openssl verify -x509_strict -purpose sslserver" -- at "$now" openssl verify -x509_strict -purpose sslserver -CAfile "$T/$tag-ca.pem" "$T/$tag-gw-2.pem"
    facts "$T/$tag-gw-2.pem" >"$T/$tag-facts-2"
    cmp -s "$T/$tag-facts-0" "$T/$tag-facts-2" && ok "$tag: subject, SANs and EKU kept" ||
        { not_ok "$tag: subject, SANs and EKU kept"; diff "$T/$tag-facts-0" "$T/$tag-facts-2"; }
    grep -q "IP Address:192.0.2.7" "$T/$tag-facts-2" && grep -q "TLS Web Server Authentication" "$T/$tag-facts-2" &&
        ok "$tag: (the SAN ip:192.0.2.7 and serverAuth among them)" || not_ok "$tag: (the SAN ip:192.0.2.7 and serverAuth among them)"
    expect 0 "$tag: the key signs; its signature verifies with the new certificate's key" -- sh -c "
        printf renewed >'$T/msg' && '$KEYVAULT' -c '$c' sign '$tag-gw' -i '$T/msg' -o '$T/sig' &&
        openssl x509 -in '$T/$tag-gw-2.pem' -noout -pubkey >'$T/pub' &&
        openssl dgst -sha256 -verify '$T/pub' -signature '$T/sig' '$T/msg'"
    expect 0 "$tag: --check after: nothing due" -- k cert renew --check
}

# rotated CONF TAG: --rotate-key: a new version gets the new chain, the old
# one keeps its own; a CA failure after the new version was made leaves the
# old one current (on due's clock: the chains are 2-minute ones until the
# last renewal, which gives the current version a 30-day certificate)
rotated() {
    c=$1 tag=$2
    now=$(($(issued "$T/$tag-gw-1.pem") + 60))
    k() { at "$now" "$KEYVAULT" -c "$c" "$@"; }
    pubhash() { openssl pkey -pubin -in "$1" -outform DER | openssl dgst -sha256 -r | cut -c1-64; }
    stored "$c" "$tag-gw" "$T/$tag-v1.pem"
    k pubkey "$tag-gw" -o "$T/$tag-v1.pub"
    expect 0 "$tag: --rotate-key renews with a new key version" -- k cert renew "$tag-gw" --ca "$tag-ca" --force --rotate-key -o "$T/$tag-rot.pem"
    contains "$T/out" "version 2 is current" "$tag: and says which version is current"
    k list >"$T/$tag-list"
    contains "$T/$tag-list" "^$tag-gw@2 .* v2 *current" "$tag: version 2 is current"
    contains "$T/$tag-list" "^$tag-gw  .* v1 *overlap" "$tag: version 1 in its overlap"
    stored "$c" "$tag-gw" "$T/$tag-cur.pem"
    stored "$c" "$tag-gw@2" "$T/$tag-v2.pem"
    stored "$c" "$tag-gw@1" "$T/$tag-v1-after.pem"
    same_leaf "$T/$tag-rot.pem" "$T/$tag-cur.pem" && same_leaf "$T/$tag-rot.pem" "$T/$tag-v2.pem" &&
        ok "$tag: the new version holds the new chain" || not_ok "$tag: the new version holds the new chain"
    same_leaf "$T/$tag-v1.pem" "$T/$tag-v1-after.pem" && ok "$tag: the old version keeps its old chain" ||
        not_ok "$tag: the old version keeps its old chain"
    k pubkey "$tag-gw" -o "$T/$tag-v2.pub"
    openssl x509 -in "$T/$tag-rot.pem" -noout -pubkey >"$T/$tag-rot.pub"
    [ "$(pubhash "$T/$tag-rot.pub")" = "$(pubhash "$T/$tag-v2.pub")" ] &&
        [ "$(pubhash "$T/$tag-rot.pub")" != "$(pubhash "$T/$tag-v1.pub")" ] &&
        ok "$tag: the new certificate is for the new key" || not_ok "$tag: the new certificate is for the new key"
    expect 0 "$tag: openssl verify the rotated chain" -- at "$now" openssl verify -CAfile "$T/$tag-ca.pem" "$T/$tag-rot.pem"
    facts "$T/$tag-rot.pem" >"$T/$tag-facts-rot"
    cmp -s "$T/$tag-facts-0" "$T/$tag-facts-rot" && ok "$tag: rotated: subject, SANs and EKU kept" ||
        not_ok "$tag: rotated: subject, SANs and EKU kept"
    # the CA fails after kv_rotate_prepare made version 3
    db=$DB/$tag-ca.db
    cp "$db" "$T/db.saved"
    echo "not a database" >"$db"
    expect 1 "$tag: a CA failure during a rotating renewal" -- k cert renew "$tag-gw" --ca "$tag-ca" --force --rotate-key
    contains "$T/err" "stays in force until" "$tag: with the expiry"
    cp "$T/db.saved" "$db"
    k list >"$T/$tag-list"
    contains "$T/$tag-list" "^$tag-gw@2 .* v2 *current" "$tag: version 2 is still current"
    stored "$c" "$tag-gw" "$T/$tag-cur2.pem"
    same_leaf "$T/$tag-rot.pem" "$T/$tag-cur2.pem" && ok "$tag: with its chain" || not_ok "$tag: with its chain"
    expect 0 "$tag: the key still signs" -- k sign "$tag-gw" -i "$T/msg" -o "$T/sig"
    expect 0 "$tag: run again, the renewal rotates" -- k cert renew "$tag-gw" --ca "$tag-ca" --force --rotate-key --lifetime 30d -o "$T/$tag-rot3.pem"
    k list >"$T/$tag-list"
    contains "$T/$tag-list" "^$tag-gw@3 .* v3 *current" "$tag: version 3 is current"
    stored "$c" "$tag-gw" "$T/$tag-cur3.pem"
    same_leaf "$T/$tag-rot3.pem" "$T/$tag-cur3.pem" && ok "$tag: with the new chain" || not_ok "$tag: with the new chain"
    expect 0 "$tag: which verifies" -- at "$now" openssl verify -CAfile "$T/$tag-ca.pem" "$T/$tag-rot3.pem"
}

# a record of another CA, to swap in
kv keygen other-ca >/dev/null
kv cert selfsign other-ca --subject "CN=Other Root" --ca -o "$T/other-ca.pem" >/dev/null
kv keygen other-leaf >/dev/null
kv csr other-leaf --subject "CN=other-leaf" -o "$T/other-leaf.csr" >/dev/null
kv ca sign other-ca --csr "$T/other-leaf.csr" --profile tls-client -o "$T/other-leaf.pem" >/dev/null
kv cert import other-leaf "$T/other-leaf.pem" >/dev/null
cp "$KEYVAULT_HOME/ca/other-ca.db" "$T/other-ca.db"

i=1
for tag in $TAGS; do
    setup "$(word $i $CONFS)" "$tag" "$(word $i $BACKENDS)"
    i=$((i + 1))
done
i=1
for tag in $TAGS; do
    due "$(word $i $CONFS)" "$tag"
    rotated "$(word $i $CONFS)" "$tag"
    i=$((i + 1))
done

# ---- --all, a sub-CA's chain, a CA certificate renewed by its parent (software) --
kv keygen soft-sub >/dev/null
kv csr soft-sub --subject "CN=soft Issuing CA,O=Fleet" -o "$T/sub.csr" >/dev/null
kv ca sign soft-ca --csr "$T/sub.csr" --profile sub-ca -o "$T/sub.pem" >/dev/null
expect 0 "sub-CA: its certificate stored" -- kv cert import soft-sub "$T/sub.pem"
kv keygen soft-dev >/dev/null
kv csr soft-dev --subject "CN=dev-9" --san uri:spiffe://fleet/dev-9 -o "$T/dev.csr" >/dev/null
kv ca sign soft-sub --csr "$T/dev.csr" --profile device-identity -o "$T/dev-0.pem" >/dev/null
expect 0 "sub-CA: a device certificate it issued, stored" -- kv cert import soft-dev "$T/dev-0.pem"
kv keygen soft-other >/dev/null
kv cert selfsign soft-other --subject "CN=other" --eku clientAuth --days 1 -o "$T/other.pem" >/dev/null
expect 0 "--all --force: the sub-CA renews what it issued" -- kv cert renew --all --ca soft-sub --force
contains "$T/out" "^soft-dev: renewed" "--all: renewed the device's"
contains "$T/out" "^soft-other: issued by another CA, left alone" "--all: left a self-signed one alone"
contains "$T/out" "^soft-gw: issued by another CA, left alone" "--all: and one of the root's"
kv cert soft-dev -o "$T/dev-1.pem"
[ "$(grep -c 'BEGIN CERTIFICATE' "$T/dev-1.pem")" = 2 ] && ok "--all: the device's new chain holds the sub-CA" ||
    not_ok "--all: the device's new chain holds the sub-CA"
expect 0 "--all: it verifies: -CAfile root -untrusted chain" -- openssl verify -CAfile "$T/soft-ca.pem" -untrusted "$T/dev-1.pem" "$T/dev-1.pem"
openssl x509 -in "$T/dev-1.pem" -noout -text >"$T/dev-1.txt"
contains "$T/dev-1.txt" "URI:spiffe://fleet/dev-9" "--all: the URI SAN kept"
contains "$T/dev-1.txt" "TLS Web Client Authentication, TLS Web Server Authentication" "--all: device-identity's usages"
expect 0 "--all: not due and not forced: nothing renewed" -- kv cert renew --all --ca soft-sub
contains "$T/out" "^soft-dev: not due" "--all: says not due"
expect 0 "sub-CA: its own certificate renewed by the root (profile from CA:TRUE)" -- kv cert renew soft-sub --ca soft-ca --force -o "$T/sub-1.pem"
openssl x509 -in "$T/sub-1.pem" -noout -text >"$T/sub-1.txt"
contains "$T/sub-1.txt" "CA:TRUE, pathlen:0" "sub-CA: still a CA with path length 0"
expect 0 "sub-CA: the renewed sub-CA verifies under the root" -- openssl verify -CAfile "$T/soft-ca.pem" "$T/sub-1.pem"
expect 0 "sub-CA: and still issues" -- kv cert renew soft-dev --ca soft-sub --force -o "$T/dev-2.pem"
expect 0 "sub-CA: a chain through the renewed sub-CA verifies" -- openssl verify -CAfile "$T/soft-ca.pem" -untrusted "$T/dev-2.pem" "$T/dev-2.pem"

# ---- a rotated CA, and a key whose version 1 was pruned (software) -------------------
cp "$T/kv.conf" "$T/lc0.conf"
printf '\n[lifecycle]\noverlap = 0\ngrace = 0\n' >>"$T/lc0.conf"
l0() { "$KEYVAULT" -c "$T/lc0.conf" "$@"; }
kv keygen ca2 >/dev/null
kv cert selfsign ca2 --subject "CN=Second Root" --ca -o "$T/ca2-1.pem" >/dev/null
expect 0 "rotated CA: rotate ca2" -- kv rotate ca2 --overlap 1h
expect 0 "rotated CA: its new version's own certificate" -- \
    kv cert selfsign ca2 --subject "CN=Second Root" --ca -o "$T/ca2-2.pem"
for leaf in l2 pr-gw; do
    kv keygen "$leaf" >/dev/null
    kv csr "$leaf" --subject "CN=$leaf" -o "$T/$leaf.csr" >/dev/null
    kv ca sign ca2 --csr "$T/$leaf.csr" --profile tls-client -o "$T/$leaf.pem" >/dev/null
    expect 0 "rotated CA: $leaf's certificate from ca2 stored" -- kv cert import "$leaf" "$T/$leaf.pem"
done
expect 0 "pruned v1: renew pr-gw --rotate-key (overlap 0, grace 0)" -- \
    l0 cert renew pr-gw --ca ca2 --force --rotate-key
expect 0 "pruned v1: prune pr-gw" -- l0 prune pr-gw
contains "$T/out" "1 version destroyed" "pruned v1: version 1 is gone"
kv list >"$T/pr-list"
grep -q '^pr-gw ' "$T/pr-list" && not_ok "pruned v1: only pr-gw@2 is listed" ||
    ok "pruned v1: only pr-gw@2 is listed"
expect 0 "pruned v1: --check still sees pr-gw" -- kv cert renew --check
contains "$T/out" "^pr-gw: not due" "pruned v1: --check reports pr-gw by its name"
[ "$(grep -c '^pr-gw' "$T/out")" = 1 ] && ok "pruned v1: --check reports it once" ||
    not_ok "pruned v1: --check reports it once"
expect 0 "pruned v1: --check --json" -- kv cert renew --check --json
[ "$(jq '[.keys[] | select(.name == "pr-gw" and .version == 2)] | length' "$T/out")" = 1 ] &&
    ok "pruned v1: --check --json lists pr-gw, version 2" ||
    not_ok "pruned v1: --check --json lists pr-gw, version 2"
expect 0 "rotated CA: --all --ca ca2 --force (the CA skipped by its key)" -- \
    kv cert renew --all --ca ca2 --force
contains "$T/out" "^pr-gw: renewed" "pruned v1: --all renewed pr-gw"
contains "$T/out" "^l2: renewed" "rotated CA: --all renewed l2"
grep -q "the CA key itself" "$T/out" "$T/err" && not_ok "rotated CA: --all left the CA itself alone" ||
    ok "rotated CA: --all left the CA itself alone"
grep -q "^ca2" "$T/out" && not_ok "rotated CA: and said nothing of it" || ok "rotated CA: and said nothing of it"
kv cert pr-gw -o "$T/pr-gw-1.pem"
expect 0 "pruned v1: the renewed chain verifies under ca2" -- \
    openssl verify -CAfile "$T/ca2-2.pem" "$T/pr-gw-1.pem"

# ---- refusals -----------------------------------------------------------------------
expect 1 "a CA does not renew its own certificate" -- kv cert renew soft-ca --ca soft-ca --force
contains "$T/err" "the CA key itself" "and says why"
expect 1 "a self-signed clientAuth certificate under a profile without clientAuth" -- kv cert renew soft-other --ca soft-ca --force --profile tls-server
contains "$T/err" "does not grant extended key usage clientAuth" "the CA names the usage its profile lacks"
expect 0 "a profile that grants it renews it" -- kv cert renew soft-other --ca soft-ca --force --profile tls-client -o "$T/other-1.pem"
expect 0 "now issued by the CA" -- openssl verify -CAfile "$T/soft-ca.pem" "$T/other-1.pem"
expect 1 "a key without a certificate" -- kv cert renew soft-nocert --ca soft-ca --force
contains "$T/err" "has no certificate to renew" "says so"
expect 2 "--lifetime takes a duration" -- kv cert renew soft-gw --ca soft-ca --lifetime 10y
expect 2 "--check takes no CA" -- kv cert renew --check --ca soft-ca
expect 2 "renew needs --ca" -- kv cert renew soft-gw
expect 1 "an unknown profile" -- kv cert renew soft-gw --ca soft-ca --force --profile nope
contains "$T/err" "unknown certificate profile" "names the problem"
grep -q "nope" "$T/err" && not_ok "the profile's text is not echoed" || ok "the profile's text is not echoed"

# ---- the systemd units of examples/renew ---------------------------------------------
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/bin/keyvault|$KEYVAULT|" "$SRC/examples/renew/keyvault-renew.service" >"$T/keyvault-renew.service"
    cp "$SRC/examples/renew/keyvault-renew.timer" "$T/keyvault-renew.timer"
    expect 0 "systemd-analyze verify accepts the service and the timer" -- \
        systemd-analyze verify --man=no "$T/keyvault-renew.service" "$T/keyvault-renew.timer"
else
    not_ok "systemd-analyze is missing (tests/install-deps.sh installs systemd)"
fi
finish
