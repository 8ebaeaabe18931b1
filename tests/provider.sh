#!/bin/sh
# provider.sh - the keyvault OpenSSL provider with vault keys on every
# backend this build has (software store, SoftHSM token, swtpm), through
# kv_key_evp_pkey and tests/provider-tls: mutual TLS 1.3 and 1.2 with each
# backend as server and as client (ECDSA; RSA-PSS, and RSA PKCS#1 for 1.2;
# Ed25519 where the backend holds it), a client without a trusted
# certificate refused, 8 client threads against one server, a pre-forking
# server, ordinary keys left to the default provider when ours is loaded
# first, the TPM commands a handshake costs, and the module keyvault.so:
# one exported symbol, loaded by the openssl command from an openssl.cnf.
. "$(dirname "$0")/lib.sh"
B=${KV_BUILDDIR:-.}
P=$B/tests/provider-tls
have() { grep -q "^#define $1 1" "$B/config.h"; }
soft_store 'provider test passphrase'
backends=software
if have KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    backends="$backends pkcs11"
fi
if have KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    backends="$backends tpm"
fi

# one configuration with every backend: keys are opened by name
CONF=$T/all.conf
{
    printf '[keyvault]\nbackends = %s\n\n' "$(echo "$backends" | sed 's/ /, /g')"
    sed -n '/^\[software\]/,$p' "$T/kv.conf"
    if have KV_WITH_PKCS11; then
        printf '\n[pkcs11]\nmodule = %s\ntoken = %s\npin = file:%s\n' \
            "$KV_P11_MODULE" "$KV_P11_TOKEN" "$KV_P11_PINFILE"
    fi
    if have KV_WITH_TPM; then
        printf '\n[tpm]\ntcti = %s\nkeys = %s\n' "$KV_TPM_TCTI" "$KV_TPM_DIR/keys"
    fi
} >"$CONF"
kvc() { "$KEYVAULT" -c "$CONF" "$@"; }
# provider-tls has no socket timeouts of its own: a worker that died early
# would leave a client in SSL_connect, and the test waiting on it for ever
tls() { timeout 600 "$P" -c "$CONF" "$@"; }

for b in $backends; do
    expect 0 "$b: an EC P-256 key" -- kvc keygen "$b-ec" --type ec-p256 --backend "$b"
    expect 0 "$b: an RSA-2048 key" -- kvc keygen "$b-rsa" --type rsa-2048 --backend "$b"
    if [ "$b" != tpm ]; then
        expect 0 "$b: an Ed25519 key" -- kvc keygen "$b-ed" --type ed25519 --backend "$b"
    fi
done
expect 0 "software: an EC P-384 key" -- kvc keygen software-p384 --type ec-p384 --backend software
expect 0 "a key nobody trusts" -- kvc keygen stranger --type ec-p256 --backend software

# handshake DESC WANT -- ARGS: a provider-tls run that succeeds and prints WANT
handshake() {
    d=$1 w=$2
    shift 3
    expect 0 "$d" -- tls "$@"
    contains "$T/out" "$w" "$d: $w"
}

# ---- each backend as server and as client, TLS 1.3 and 1.2 ---------------------
for b in $backends; do
    for v in 1.3 1.2; do
        handshake "$b server, TLS $v, ECDSA" "server signed with id-ecPublicKey+SHA256" -- \
            -v "$v" -n 3 pair "$b-ec" software-ec
        handshake "$b client, TLS $v, ECDSA" "client signed with id-ecPublicKey+SHA256" -- \
            -v "$v" -n 3 pair software-ec "$b-ec"
    done
    handshake "$b server, TLS 1.3, RSA-PSS" "server signed with RSASSA-PSS+SHA256" -- \
        -v 1.3 pair "$b-rsa" software-ec
    handshake "$b client, TLS 1.3, RSA-PSS" "client signed with RSASSA-PSS+SHA256" -- \
        -v 1.3 pair software-ec "$b-rsa"
    handshake "$b both, TLS 1.2, RSA PKCS#1" \
        "server signed with rsaEncryption+SHA256, client signed with rsaEncryption+SHA256" -- \
        -v 1.2 -s RSA+SHA256:RSA+SHA384 pair "$b-rsa" "$b-rsa"
    handshake "$b both, TLS 1.2, RSA-PSS with SHA-384" \
        "server signed with RSASSA-PSS+SHA384, client signed with RSASSA-PSS+SHA384" -- \
        -v 1.2 -s rsa_pss_rsae_sha384 pair "$b-rsa" "$b-rsa"
    if [ "$b" != tpm ]; then
        [ "$b" = pkcs11 ] && asan_exact_stacks # SoftHSM's Ed25519 code leaks (tests/lsan.supp)
        for v in 1.3 1.2; do
            handshake "$b both, TLS $v, Ed25519" \
                "server signed with ED25519, client signed with ED25519" -- \
                -v "$v" pair "$b-ed" "$b-ed"
        done
        asan_fast_stacks
    fi
    expect 0 "$b client: refused without a trusted certificate" -- \
        tls -u stranger refuse software-ec "$b-ec"
    contains "$T/out" "refused: 1 of 1" "$b client: the server refused it"
    contains "$T/out" "server's verification: self-signed certificate" \
        "$b client: the server names why"
    # TLS 1.3: the client finishes first; the refusal reaches it afterwards
    expect 0 "$b client: refused over TLS 1.2 too" -- \
        tls -v 1.2 -u stranger refuse software-ec "$b-ec"
done
handshake "software P-384 server, TLS 1.3" "server signed with id-ecPublicKey+SHA384" -- \
    pair software-p384 software-ec
# ECDHE on P-256 and P-384: ephemeral EC keys made by OpenSSL after vault signatures
for v in 1.3 1.2; do
    handshake "TLS $v with ECDHE on P-256, then P-384" "handshakes: 3 of 3 succeeded" -- \
        -v "$v" -g P-256:P-384 -n 3 pair software-ec software-rsa
done

# ---- many at once: threads, and a pre-forking server --------------------------
for b in $backends; do
    handshake "$b: 8 client threads against one server" "handshakes: 80 of 80 succeeded" -- \
        -n 10 -t 8 threads "$b-ec" "$b-ec"
    contains "$T/out" "server: 80 handshakes served, 0 failed" "$b: the server served all 80"
    [ "$b" = tpm ] && continue # below
    handshake "$b: a server that loads and uses its key, then forks 2 workers" \
        "workers: 2 of 2 served all their handshakes" -- -n 16 -t 4 -w 2 fork "$b-ec" software-ec
done

# swtpm has no resource manager and three transient slots, which the server
# and its workers share (tpm/conn.c, docs/tpm.md "Fork"): the server, as
# nginx's master, loads its key and signs with it (one handshake), then forks
# more workers than the TPM has slots, which serve 4 clients at once; it
# signs again once they are done, and the TPM holds no more objects than
# before.
if have KV_WITH_TPM; then
    transient() { TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_getcap handles-transient | grep -c '^- 0x'; }
    expect 0 "tpm: a certificate stored with the server key" -- \
        kvc cert selfsign tpm-ec --subject CN=server --san dns:localhost -o "$T/tpm-ec.crt"
    slots=$(transient)
    handshake "tpm: a server that signs, then forks 6 workers serving 4 clients at once" \
        "workers: 6 of 6 served all their handshakes" -- -C -P -n 48 -t 4 -w 6 fork tpm-ec software-ec
    contains "$T/out" "handshakes: 48 of 48 succeeded" "tpm: every handshake of the forked workers succeeded"
    if grep -q "tpm commands before the fork: [1-9]" "$T/out"; then
        ok "tpm: the server used the TPM before forking"
    else
        not_ok "tpm: the server used the TPM before forking"; sed 's/^/    /' "$T/out"
    fi
    contains "$T/out" "the parent's handshake after its workers: succeeded" \
        "tpm: the server signs again after its workers"
    left=$(transient)
    if [ "$left" = "$slots" ]; then ok "tpm: $left transient objects after the workers, as before"
    else not_ok "tpm: $left transient objects after the workers, $slots before"; fi
fi

# ---- ordinary keys stay in the default provider --------------------------------
for first in "" -p; do
    handshake "ordinary PEM key as server${first:+, keyvault provider loaded first}" \
        "handshakes: 3 of 3 succeeded" -- $first -n 3 pair ordinary software-ec
    contains "$T/out" "ordinary key, read from PEM: key in provider default, signed by provider default" \
        "an ordinary key read from PEM signs in the default provider${first:+ (keyvault first)}"
    contains "$T/out" "ordinary key, generated: key in provider default" \
        "EVP_PKEY_keygen makes ordinary keys in the default provider${first:+ (keyvault first)}"
    contains "$T/out" "vault key: key in provider keyvault, signed by provider keyvault" \
        "beside it, a vault key signs in the keyvault provider${first:+ (keyvault first)}"
done

# ---- TPM commands per handshake ----------------------------------------------
if have KV_WITH_TPM; then
    for v in 1.3 1.2; do
        handshake "tpm server, TLS $v: 20 handshakes" "handshakes: 20 of 20 succeeded" -- \
            -v "$v" -n 20 pair tpm-ec software-ec
        per=$(sed -n 's/^tpm commands: .* (\(.*\) per handshake)$/\1/p' "$T/out")
        echo "# TLS $v, server key in swtpm: $per TPM commands per handshake"
        [ "$per" = "1.00" ] && ok "TLS $v: one TPM command per server handshake" ||
            not_ok "TLS $v: one TPM command per server handshake (measured $per)"
    done
    handshake "ordinary server key with a software client: no TPM command" "tpm commands: 0 for 3" -- \
        -p -n 3 pair ordinary software-ec
fi

# ---- examples/mtls-server and mtls-client: a vault CA issues both certificates --
EX=$B/examples
GW_B=software DEV_B=software
have KV_WITH_PKCS11 && GW_B=pkcs11
have KV_WITH_TPM && DEV_B=tpm
expect 0 "mtls: the CA key" -- kvc keygen mtls-ca --type ec-p384 --backend software
expect 0 "mtls: the CA's root" -- kvc cert selfsign mtls-ca --subject "CN=Example mTLS CA" --ca \
    --days 30 -o "$T/mtls-ca.pem"
# issue NAME BACKEND PROFILE: a key, its request, the CA's certificate, stored with the key
issue() {
    expect 0 "mtls: $1 on $2" -- kvc keygen "$1" --type ec-p256 --backend "$2"
    expect 0 "mtls: $1's request" -- kvc csr "$1" --subject "CN=$1,O=Example" --san dns:localhost \
        -o "$T/$1.csr"
    expect 0 "mtls: the CA issues $1 a $3 certificate" -- \
        kvc ca sign mtls-ca --csr "$T/$1.csr" --profile "$3" -o "$T/$1.crt"
    expect 0 "mtls: $1 keeps it" -- kvc cert import "$1" "$T/$1.crt"
}
issue mtls-gw "$GW_B" tls-server
issue mtls-dev "$DEV_B" tls-client
issue mtls-old software tls-client
expect 0 "mtls: a key with a certificate nobody issued" -- kvc keygen mtls-stranger --type ec-p256
expect 0 "mtls: its self-signed certificate" -- kvc cert selfsign mtls-stranger --subject CN=stranger \
    -o "$T/stranger.crt"
# mtls CLIENT_KEY WANT_CLIENT WANT_SERVER DESC [CRL]: one gateway run, one client
mtls() {
    c=$1 wc=$2 ws=$3 d=$4
    shift 4
    # empty before the server starts: the loop below must not read the
    # previous run's port (the redirection happens in the child, later)
    : >"$T/srv.out"
    # bounded: a client that fails before it connects leaves the gateway in
    # accept() (exit 124 from timeout is then the server's wrong status)
    KEYVAULT_CONF=$CONF timeout 300 "$EX/mtls-server" mtls-gw "$T/mtls-ca.pem" "$@" >"$T/srv.out" 2>"$T/srv.err" &
    spid=$!
    port=
    # a sanitized build on a loaded machine can take seconds to start: wait up
    # to a minute, and never leave the server waiting for a client that is
    # not coming (the wait below would hang)
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^listening on port //p' "$T/srv.out")
        [ -n "$port" ] && break
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { kill "$spid" 2>/dev/null; not_ok "$d: the gateway never listened"; }
    expect "$wc" "$d: the client" -- env KEYVAULT_CONF="$CONF" timeout 120 "$EX/mtls-client" "$c" \
        "$T/mtls-ca.pem" "${port:-1}" "reading 21.5 C"
    cp "$T/out" "$T/cli.out"
    wait "$spid"
    st=$?
    [ "$st" = "$ws" ] && ok "$d: the server (exit $st)" ||
        { not_ok "$d: the server (exit $st, wanted $ws)"; sed 's/^/    /' "$T/srv.out" "$T/srv.err"; }
}
mtls mtls-dev 0 0 "mtls: gateway on $GW_B, device on $DEV_B, TLS 1.3"
contains "$T/cli.out" "gateway received 14 bytes (TLSv1.3)" "mtls: the device got the gateway's answer"
contains "$T/srv.out" "said: reading 21.5 C" "mtls: the gateway got the device's message"
contains "$T/srv.out" "client /O=Example/CN=mtls-dev said" "mtls: the gateway names the device"
mtls mtls-stranger 1 1 "mtls: a client without a certificate from the CA is refused"
contains "$T/srv.out" "refused the client: self-signed certificate" "mtls: the gateway says why"
serial=$(openssl x509 -in "$T/mtls-old.crt" -noout -serial | sed 's/^serial=//')
expect 0 "mtls: the CA revokes mtls-old" -- kvc ca revoke mtls-ca --serial "$serial" --reason keyCompromise
expect 0 "mtls: the CA's CRL" -- kvc ca crl mtls-ca -o "$T/mtls.crl"
mtls mtls-old 0 0 "mtls: without the CRL, the revoked device still gets in"
mtls mtls-old 1 1 "mtls: with the CRL, the revoked device is refused" "$T/mtls.crl"
contains "$T/srv.out" "refused the client: certificate revoked" "mtls: the gateway says it is revoked"
mtls mtls-dev 0 0 "mtls: with the CRL, the device still gets in" "$T/mtls.crl"

# ---- the module -----------------------------------------------------------------
MOD=$B/libkeyvault/provider/.libs/keyvault.so
syms=$(nm -D --defined-only "$MOD" | awk '$2 == "T" { print $3 }' | tr '\n' ' ')
[ "$syms" = "OSSL_provider_init " ] && ok "keyvault.so exports only OSSL_provider_init" ||
    not_ok "keyvault.so exports only OSSL_provider_init (it exports: $syms)"
cat >"$T/openssl.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
keyvault = keyvault_sect
default = default_sect
[keyvault_sect]
activate = 1
keyvault_conf = $CONF
[default_sect]
activate = 1
CNF
# In a sanitized build the module is instrumented and openssl is not: the
# runtime (libasan, or libtsan in build-tsan) must then come first in it
# (openssl's own leaks at exit are not ours).
asan=$(ldd "$B/libkeyvault/provider/.libs/keyvault.so" 2>/dev/null | awk '/libasan|libtsan/ { print $3 }')
ossl() {
    env OPENSSL_CONF="$T/openssl.cnf" OPENSSL_MODULES="$B/libkeyvault/provider/.libs" \
        LD_LIBRARY_PATH="$B/libkeyvault/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ${asan:+LD_PRELOAD="$asan" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"} \
        openssl "$@"
}
expect 0 "openssl loads keyvault.so from an openssl.cnf" -- ossl list -providers
contains "$T/out" "libkeyvault provider" "openssl lists the keyvault provider"
expect 0 "openssl list -signature-algorithms" -- ossl list -signature-algorithms
contains "$T/out" "KEYVAULT-ECDSA @ keyvault" "the provider offers its ECDSA"
expect 0 "with keyvault first in openssl.cnf, openssl genpkey still makes EC keys" -- \
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ordinary.pem"
expect 0 "and signs a certificate with it" -- \
    ossl req -new -x509 -key "$T/ordinary.pem" -subj /CN=ordinary -days 1 -out "$T/ordinary.crt"
expect 0 "openssl verifies that certificate" -- \
    ossl verify -CAfile "$T/ordinary.crt" "$T/ordinary.crt"
finish
