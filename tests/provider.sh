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
tls() { "$P" -c "$CONF" "$@"; }

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
        for v in 1.3 1.2; do
            handshake "$b both, TLS $v, Ed25519" \
                "server signed with ED25519, client signed with ED25519" -- \
                -v "$v" pair "$b-ed" "$b-ed"
        done
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

# ---- many at once: threads, and a pre-forking server --------------------------
for b in $backends; do
    handshake "$b: 8 client threads against one server" "handshakes: 80 of 80 succeeded" -- \
        -n 10 -t 8 threads "$b-ec" "$b-ec"
    contains "$T/out" "server: 80 handshakes served, 0 failed" "$b: the server served all 80"
    [ "$b" = tpm ] && continue # below
    handshake "$b: a server that loads and uses its key, then forks 2 workers" \
        "workers: 2 of 2 served all their handshakes" -- -n 16 -t 4 -w 2 fork "$b-ec" software-ec
done

# swtpm has no resource manager and serves one connection: forked workers
# share the inherited connection and must not use it at once (tpm/conn.c),
# so their clients take turns; and a parent that used the key itself has its
# objects loaded in the TPM's three slots, which its workers cannot see
# (TPM_RC_OBJECT_MEMORY): the server here, as nginx's master, loads the key
# and its stored certificate without signing, then forks.
if have KV_WITH_TPM; then
    expect 0 "tpm: a certificate stored with the server key" -- \
        kvc cert selfsign tpm-ec --subject CN=server --san dns:localhost -o "$T/tpm-ec.crt"
    handshake "tpm: a server that loads its key, then forks 2 workers" \
        "workers: 2 of 2 served all their handshakes" -- -C -n 16 -t 1 -w 2 fork tpm-ec software-ec
    contains "$T/out" "tpm commands before the fork: 0" "tpm: the server sent no TPM command before forking"
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
ossl() {
    env OPENSSL_CONF="$T/openssl.cnf" OPENSSL_MODULES="$B/libkeyvault/provider/.libs" \
        LD_LIBRARY_PATH="$B/libkeyvault/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" openssl "$@"
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
