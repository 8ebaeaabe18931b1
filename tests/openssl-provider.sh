#!/bin/sh
# openssl-provider.sh - unmodified OpenSSL programs with vault keys through
# the keyvault provider, on the software store, a SoftHSM token and swtpm
# (behind tpm2-abrmd: nginx's workers and the openssl tools reach the TPM
# from several processes at once):
#  - the store loader: `openssl pkey -in keyvault:NAME -pubout` prints the
#    key's public half; without -pubout it prints no private key and fails;
#    a missing key, a malformed reference and a wrong PIN fail clearly,
#    without the PIN;
#  - key reference files (keyvault reference) and TSS2 PRIVATE KEY files
#    (the TPM backend's, and one tpm2-openssl made) read by the decoder, as
#    a program using PEM_read_bio_PrivateKey reads them (tests/pemkey.c)
#    and as the openssl tools' file: loader does (openssl pkey -in FILE
#    gives the public half and refuses the private one); ordinary PEM
#    keys still go to the default provider, in either provider order;
#  - openssl s_server / s_client with -provider keyvault -provider default:
#    mutual TLS 1.3 and 1.2, each backend as server and as client (keys of
#    each type, certificates from a vault CA: keyvault csr, ca sign, cert
#    selfsign); a client with an untrusted certificate is refused;
#  - openssl s_server -key FILE.pem, a TSS2 PRIVATE KEY file of the TPM
#    backend, with the provider activated by openssl.cnf alone;
#  - Debian's nginx, unmodified, serving HTTPS with ssl_certificate_key a
#    KEYVAULT KEY REFERENCE file (SoftHSM, then the TPM) and a TSS2
#    PRIVATE KEY file, mutual TLS
#    (ssl_verify_client on), fetched by curl whose client key is a
#    reference file too.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'stop_servers; swtpm_cleanup; rm -rf "$T"' EXIT
B=${KV_BUILDDIR:-.}
MODDIR=$(cd "$B/libkeyvault/provider/.libs" 2>/dev/null && pwd)
for tool in nginx curl openssl; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "openssl-provider.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
[ -n "$MODDIR" ] && [ -f "$MODDIR/keyvault.so" ] ||
    { echo "openssl-provider.sh: the provider module was not built ($B/libkeyvault/provider/.libs/keyvault.so)"; exit 1; }
abrmd_start || { echo "openssl-provider.sh: tpm2-abrmd did not start" >&2; cat "$KV_TPM_DIR/abrmd.log" >&2; exit 1; }
# In a sanitized build (configure --with-sanitizer) the module is, and the
# programs here are not: ASan's runtime must then come first in them. Their
# leaks at exit are theirs (LSan watches our own programs in the other tests).
asan=$(ldd "$MODDIR/keyvault.so" 2>/dev/null | awk '/libasan/ { print $3 }')
if [ -n "$asan" ]; then
    LD_PRELOAD=$asan${LD_PRELOAD:+:$LD_PRELOAD}
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
    export LD_PRELOAD ASAN_OPTIONS
fi

# servers started here, stopped on exit
SERVER_PIDS=
stop_servers() {
    for p in $SERVER_PIDS; do kill "$p" 2>/dev/null; done
    for p in $SERVER_PIDS; do wait "$p" 2>/dev/null; done
    SERVER_PIDS=
}

# ---- one vault over the three backends, and an openssl.cnf activating us ----
vault_conf "$KV_ABRMD_TCTI"
KEYVAULT_CONF=$T/kv.conf
export KEYVAULT_CONF
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }

# cnf FILE FIRST SECOND: an openssl.cnf loading both providers in that order
cnf() {
    cat >"$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
$2 = $2_sect
$3 = $3_sect
[keyvault_sect]
module = $MODDIR/keyvault.so
keyvault_conf = $T/kv.conf
activate = 1
[default_sect]
activate = 1
CNF
}
cnf "$T/openssl.cnf" keyvault default
cnf "$T/openssl-default-first.cnf" default keyvault
# the openssl tools with the configuration file, and with -provider options
ossl() { OPENSSL_CONF=$T/openssl.cnf openssl "$@"; }
PROV="-provider-path $MODDIR -provider keyvault -provider default"

# the provider offers our store loader and decoder (provider.c registers
# store.c's kvp_store_algs and decoder.c's kvp_decoder_algs)
# shellcheck disable=SC2086
openssl list -store-loaders $PROV >"$T/loaders" 2>&1
for s in keyvault pkcs11 tpm2; do
    contains "$T/loaders" "^ *$s @ keyvault" "the provider offers the store loader for $s:"
done
# shellcheck disable=SC2086
openssl list -decoders $PROV >"$T/decoders" 2>&1
contains "$T/decoders" "@ keyvault (provider=keyvault,input=pem)" "the provider offers its PEM decoder"
if [ "$fail" -gt 0 ]; then
    echo "openssl-provider.sh: without them nothing below can work: provider.c's query_operation" \
        "must answer OSSL_OP_STORE with kvp_store_algs and OSSL_OP_DECODER with kvp_decoder_algs"
    finish
    exit 1
fi

# ---- keys: each backend, two key types, certificates from a vault CA --------
# server keys: soft ec-p384, pkcs11 ec-p256, tpm rsa-2048 (RSA-PSS in TLS 1.3,
# PKCS#1 or PSS in 1.2); client keys: soft ed25519, pkcs11 rsa-2048, tpm ec-p256
expect 0 "keygen the CA (software)" -- kv keygen ca --type ec-p256 --backend software
expect 0 "cert selfsign --ca" -- kv cert selfsign ca --subject "CN=Provider Test CA,O=kv" --ca -o "$T/ca.pem"
for k in srv-soft:software:ec-p384 srv-p11:pkcs11:ec-p256 srv-tpm:tpm:rsa-2048 \
    cli-soft:software:ed25519 cli-p11:pkcs11:rsa-2048 cli-tpm:tpm:ec-p256; do
    name=${k%%:*} rest=${k#*:}
    be=${rest%%:*} type=${rest#*:}
    case $name in srv-*) profile=tls-server san="--san dns:localhost --san ip:127.0.0.1" ;;
                  *) profile=tls-client san= ;; esac
    expect 0 "$name: keygen $type in $be" -- kv keygen "$name" --type "$type" --backend "$be"
    # shellcheck disable=SC2086
    expect 0 "$name: csr" -- kv csr "$name" --subject "CN=$name,O=kv" $san -o "$T/$name.csr"
    expect 0 "$name: ca sign ($profile)" -- kv ca sign ca --csr "$T/$name.csr" --profile "$profile" -o "$T/$name.crt"
    expect 0 "$name: the chain is stored with the key" -- kv cert import "$name" "$T/$name.crt"
    expect 0 "$name: openssl verifies its certificate" -- openssl verify -CAfile "$T/ca.pem" "$T/$name.crt"
done
# an ordinary PEM key with a certificate from the same CA, and a stranger
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/plain.key" 2>/dev/null
openssl pkey -in "$T/plain.key" -pubout -out "$T/plain.pub"
expect 0 "a certificate for a plain key" -- kv ca sign ca --pubkey "$T/plain.pub" --subject "CN=plain,O=kv" --profile tls-client -o "$T/plain.crt"
openssl req -x509 -new -key "$T/plain.key" -subj "/CN=stranger" -days 2 -out "$T/stranger.crt" 2>/dev/null

# ---- the store loader -------------------------------------------------------------
for name in srv-soft srv-p11 srv-tpm cli-soft; do
    kv pubkey "$name" -o "$T/$name.pub" >/dev/null
    expect 0 "$name: openssl pkey -in keyvault:$name -pubout" -- \
        openssl pkey $PROV -in "keyvault:$name" -pubout -out "$T/$name.ossl.pub"
    expect 0 "$name: the store's public key is the vault's" -- cmp "$T/$name.pub" "$T/$name.ossl.pub"
    expect 0 "$name: openssl pkey -pubin -in keyvault:$name (the public key alone)" -- \
        openssl pkey $PROV -pubin -in "keyvault:$name" -pubout -out "$T/$name.pubin.pub"
    expect 0 "$name:   the same public key" -- cmp "$T/$name.pub" "$T/$name.pubin.pub"
    expect 1 "$name: openssl pkey -in keyvault:$name (the private key) fails" -- \
        openssl pkey $PROV -in "keyvault:$name"
    if grep -q "PRIVATE KEY" "$T/out" "$T/err"; then not_ok "$name: no private key printed"; else ok "$name: no private key printed"; fi
    contains "$T/err" "private key of a vault key cannot be exported" "$name:   the error says why"
done
p11uri=$(kv info srv-p11 | sed -n 's/^uri: *//p')
tpmuri=$(kv info srv-tpm | sed -n 's/^uri: *//p')
clitpmuri=$(kv info cli-tpm | sed -n 's/^uri: *//p')
expect 0 "a pkcs11: URI through the store" -- openssl pkey $PROV -in "$p11uri" -pubout -out "$T/p11uri.pub"
expect 0 "  is the same key" -- cmp "$T/srv-p11.pub" "$T/p11uri.pub"
expect 0 "a tpm2: URI through the store" -- openssl pkey $PROV -in "$tpmuri" -pubout -out "$T/tpmuri.pub"
expect 0 "  is the same key" -- cmp "$T/srv-tpm.pub" "$T/tpmuri.pub"
expect 0 "keyvault:URI through the store" -- openssl pkey $PROV -in "keyvault:$p11uri" -pubout -out "$T/kvuri.pub"
expect 0 "  is the same key" -- cmp "$T/srv-p11.pub" "$T/kvuri.pub"
expect 0 "the chain through the store (-cert keyvault:NAME)" -- openssl x509 $PROV -in keyvault:srv-p11 -noout -subject
contains "$T/out" "CN *= *srv-p11" "  is the key's certificate"
expect 1 "a missing key" -- openssl pkey $PROV -in keyvault:no-such-key -pubout
contains "$T/err" "no key named 'no-such-key'" "  the error names the missing key"
expect 1 "a malformed name" -- openssl pkey $PROV -in "keyvault:bad name" -pubout
contains "$T/err" "key name is invalid" "  the error says the name is invalid"
expect 1 "a wrong PIN in a pkcs11: URI" -- openssl pkey $PROV -in "$p11uri?pin-value=987654" -pubout
contains "$T/err" "CKR_PIN_INCORRECT" "  the error names CKR_PIN_INCORRECT"
# (OpenSSL itself first tries the URI as a file name, and says so with the
# whole URI: docs/provider.md. Our provider's lines never show it.)
if grep ':keyvault:' "$T/err" | grep -q 987654; then not_ok "  the PIN is not in the provider's errors"; else ok "  the PIN is not in the provider's errors"; fi

# ---- key reference files and the decoder ---------------------------------------
expect 0 "reference srv-p11 (by URI)" -- kv reference srv-p11 -o "$T/srv-p11.ref"
expect 0 "reference srv-tpm (by name)" -- kv reference srv-tpm --by-name -o "$T/srv-tpm.ref"
expect 0 "reference srv-soft" -- kv reference srv-soft -o "$T/srv-soft.ref"
for c in cli-soft cli-p11 cli-tpm; do
    expect 0 "reference $c" -- kv reference "$c" -o "$T/$c.ref"
done
PEMKEY=$B/tests/pemkey
# pemkey_ok CNF FILE NAME: pemkey (PEM_read_bio_PrivateKey, libcrypto alone)
# takes FILE as the vault key NAME: our provider's, the same public key, it
# signs, and its private half is refused
pemkey_ok() {
    expect 0 "$1: PEM_read_bio_PrivateKey($(basename "$2"))" -- env OPENSSL_CONF="$T/$1" "$PEMKEY" "$2"
    contains "$T/out" "^provider: keyvault" "$1:   the key is the keyvault provider's"
    sed -n '/BEGIN PUBLIC KEY/,/END PUBLIC KEY/p' "$T/out" >"$T/pemkey.pub"
    if cmp -s "$T/pemkey.pub" "$T/$3.pub"; then ok "$1:   it is $3's public key"; else not_ok "$1:   it is $3's public key"; fi
    contains "$T/out" "^signature: verified" "$1:   it signs (verified with its public key)"
    contains "$T/out" "^private key: refused" "$1:   its private half is not exported"
}
kv pubkey cli-p11 -o "$T/cli-p11.pub" >/dev/null
kv pubkey cli-tpm -o "$T/cli-tpm.pub" >/dev/null
cat "$T/srv-p11.crt" "$T/srv-p11.ref" >"$T/srv-p11.bundle"
for f in openssl.cnf openssl-default-first.cnf; do
    pemkey_ok "$f" "$T/srv-p11.ref" srv-p11
    pemkey_ok "$f" "$T/srv-tpm.ref" srv-tpm
    pemkey_ok "$f" "$T/srv-soft.ref" srv-soft
    pemkey_ok "$f" "$T/cli-soft.ref" cli-soft
    pemkey_ok "$f" "$T/srv-p11.bundle" srv-p11
    # an ordinary key is the default provider's: its private half exports
    expect 0 "$f: PEM_read_bio_PrivateKey(an ordinary PEM key)" -- env OPENSSL_CONF="$T/$f" "$PEMKEY" "$T/plain.key"
    contains "$T/out" "^provider: default" "$f:   the key is the default provider's"
    contains "$T/out" "^private key: exported" "$f:   its private half exports as ever"
    expect 0 "$f: openssl pkey -in an ordinary PEM key" -- env OPENSSL_CONF="$T/$f" openssl pkey -in "$T/plain.key"
    contains "$T/out" "BEGIN PRIVATE KEY" "$f:   prints it"
    for name in srv-p11 srv-tpm; do
        expect 1 "$f: openssl pkey -in $name.ref fails" -- env OPENSSL_CONF="$T/$f" openssl pkey -in "$T/$name.ref"
        if grep -q "PRIVATE KEY" "$T/out" "$T/err"; then not_ok "$f:   no private key printed"; else ok "$f:   no private key printed"; fi
        contains "$T/err" "private key of a vault key cannot be exported" "$f:   the error says why"
        expect 0 "$f: openssl pkey -in $name.ref -pubout (the file: loader)" -- \
            env OPENSSL_CONF="$T/$f" openssl pkey -in "$T/$name.ref" -pubout -out "$T/ref.pub"
        expect 0 "$f:   is $name's public key" -- cmp "$T/ref.pub" "$T/$name.pub"
    done
done
# TSS2 PRIVATE KEY files: the TPM backend's own key files, and one that
# tpm2-openssl made (under the owner primary: the same template as ours),
# read as they are by PEM_read_bio_PrivateKey and by the openssl tools
TPMKEYS=$T/tpmkeys
expect 0 "tpm2-openssl makes a key file" -- env TPM2OPENSSL_TCTI="$KV_ABRMD_TCTI" \
    openssl genpkey -provider tpm2 -algorithm EC -pkeyopt group:P-256 -out "$T/ossl-tpm.pem"
expect 0 "  tpm2-openssl's public key of it" -- env TPM2OPENSSL_TCTI="$KV_ABRMD_TCTI" \
    openssl pkey -provider tpm2 -provider default -in "$T/ossl-tpm.pem" -pubout -out "$T/ossl-tpm.pub"
for f in openssl.cnf openssl-default-first.cnf; do
    pemkey_ok "$f" "$TPMKEYS/srv-tpm.pem" srv-tpm
    pemkey_ok "$f" "$TPMKEYS/cli-tpm.pem" cli-tpm
    pemkey_ok "$f" "$T/ossl-tpm.pem" ossl-tpm
    expect 0 "$f: openssl pkey -in srv-tpm.pem -pubout (the file: loader)" -- \
        env OPENSSL_CONF="$T/$f" openssl pkey -in "$TPMKEYS/srv-tpm.pem" -pubout -out "$T/tss2.pub"
    expect 0 "$f:   is srv-tpm's public key" -- cmp "$T/tss2.pub" "$T/srv-tpm.pub"
    expect 1 "$f: openssl pkey -in srv-tpm.pem fails" -- env OPENSSL_CONF="$T/$f" openssl pkey -in "$TPMKEYS/srv-tpm.pem"
    if grep -q "PRIVATE KEY" "$T/out"; then not_ok "$f:   no private key printed"; else ok "$f:   no private key printed"; fi
    contains "$T/err" "private key of a vault key cannot be exported" "$f:   the error says why"
done
# a damaged TSS2 file is refused clearly, by us
sed 's/^M/N/' "$TPMKEYS/cli-tpm.pem" >"$T/damaged.tss2"
expect 1 "a TSS2 file with damaged DER" -- env OPENSSL_CONF="$T/openssl.cnf" "$PEMKEY" "$T/damaged.tss2"
contains "$T/err" "block does not hold one (its DER does not decode as one)" "  the error says so"
# ref_file NAME TEXT: a reference file holding TEXT, built with openssl
ref_file() {
    printf 'asn1=SEQUENCE:ref\n[ref]\nversion=INTEGER:1\nref=UTF8:%s\n' "$2" >"$T/$1.cnf"
    openssl asn1parse -genconf "$T/$1.cnf" -out "$T/$1.der" >/dev/null
    { echo "-----BEGIN KEYVAULT KEY REFERENCE-----"; openssl base64 -in "$T/$1.der"
      echo "-----END KEYVAULT KEY REFERENCE-----"; } >"$T/$1.ref"
}
# a reference holding a pin-value is refused before any token is asked
ref_file pin "$p11uri?pin-value=987654"
expect 1 "a reference with a pin-value" -- env OPENSSL_CONF="$T/openssl.cnf" "$PEMKEY" "$T/pin.ref"
contains "$T/err" "pin-value" "  the error says why"
if grep -q 987654 "$T/err" "$T/out"; then not_ok "  the PIN is not shown"; else ok "  the PIN is not shown"; fi
ref_file missing no-such-key
expect 1 "a reference to a missing key" -- env OPENSSL_CONF="$T/openssl.cnf" "$PEMKEY" "$T/missing.ref"
contains "$T/err" "no key named 'no-such-key'" "  the error names the missing key"
head -n 2 "$T/srv-p11.ref" >"$T/cut.ref"
expect 1 "a reference cut short" -- env OPENSSL_CONF="$T/openssl.cnf" "$PEMKEY" "$T/cut.ref"
contains "$T/err" "no PEM \"KEYVAULT KEY REFERENCE\" block" "  the error says so"

# ---- openssl s_server / s_client: mutual TLS ----------------------------------------
# free_port: a loopback port nobody listens on
free_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        p=$(( ($(date +%N | sed 's/^0*//;s/^$/0/') % 20000) + 30000 ))
        ss -Htan | awk '{ print $4 }' | grep -q ":$p\$" || { echo "$p"; return 0; }
    done
    echo 0
}
# wait_port PORT: until something listens there (30 s: a sanitized build on a loaded machine is slow to start)
wait_port() {
    for _ in $(seq 1 600); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
    return 1
}
# tls DESC PROTO SERVER_KEY SERVER_CRT CLIENT_KEY CLIENT_CRT WANT: one
# handshake and a GET of s_server's status page; WANT ok or refused
tls() {
    desc=$1 proto=$2 skey=$3 scrt=$4 ckey=$5 ccrt=$6 want=$7
    port=$(free_port)
    # shellcheck disable=SC2086
    openssl s_server $PROV -accept "127.0.0.1:$port" -naccept 1 -www -key "$skey" -cert "$scrt" \
        -CAfile "$T/ca.pem" -Verify 2 -verify_return_error >"$T/srv.out" 2>&1 &
    spid=$!
    SERVER_PIDS="$SERVER_PIDS $spid"
    if ! wait_port "$port"; then
        not_ok "$desc: s_server listens"; sed 's/^/    /' "$T/srv.out"; kill "$spid" 2>/dev/null; return
    fi
    # shellcheck disable=SC2086
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 20 openssl s_client $PROV "-$proto" \
        -connect "127.0.0.1:$port" -servername localhost -verify_return_error -CAfile "$T/ca.pem" \
        -key "$ckey" -cert "$ccrt" -ign_eof >"$T/cli.out" 2>&1
    ( sleep 10; kill "$spid" 2>/dev/null ) &
    wait "$spid" 2>/dev/null
    if [ "$want" = ok ]; then
        if grep -q "Verify return code: 0 (ok)" "$T/cli.out" && grep -q "Client certificate" "$T/cli.out" &&
            grep -q "Protocol *: *$(echo "$proto" | sed 's/tls1_\([23]\)/TLSv1.\1/')" "$T/cli.out"; then
            ok "$desc"
        else
            not_ok "$desc"; sed 's/^/    cli: /' "$T/cli.out"; sed 's/^/    srv: /' "$T/srv.out"
        fi
    else
        if grep -q "Client certificate" "$T/cli.out"; then
            not_ok "$desc"; sed 's/^/    cli: /' "$T/cli.out"
        elif grep -qi "verify error\|certificate verify failed\|unknown ca" "$T/srv.out"; then
            ok "$desc"
        else
            not_ok "$desc (no verification error from the server)"; sed 's/^/    srv: /' "$T/srv.out"
        fi
    fi
}
for proto in tls1_3 tls1_2; do
    tls "$proto: server soft (P-384, its certificate through the store too), client pkcs11 (RSA)" $proto \
        keyvault:srv-soft keyvault:srv-soft keyvault:cli-p11 "$T/cli-p11.crt" ok
    tls "$proto: server pkcs11 (P-256), client tpm (P-256)" $proto \
        keyvault:srv-p11 "$T/srv-p11.crt" keyvault:cli-tpm "$T/cli-tpm.crt" ok
    tls "$proto: server tpm (RSA), client soft (Ed25519)" $proto \
        keyvault:srv-tpm "$T/srv-tpm.crt" keyvault:cli-soft "$T/cli-soft.crt" ok
    tls "$proto: server tpm (RSA) by its tpm2: URI, client a plain PEM key" $proto \
        "$tpmuri" "$T/srv-tpm.crt" "$T/plain.key" "$T/plain.crt" ok
    tls "$proto: server pkcs11 by its pkcs11: URI, client tpm by keyvault:tpm2:file=..." $proto \
        "$p11uri" "$T/srv-p11.crt" "keyvault:$clitpmuri" "$T/cli-tpm.crt" ok
    tls "$proto: a client with an untrusted certificate is refused" $proto \
        keyvault:srv-p11 "$T/srv-p11.crt" "$T/plain.key" "$T/stranger.crt" refused
done

# the TPM key file itself as s_server's -key, the provider activated by
# openssl.cnf alone (no -provider options): TLS 1.3 and 1.2
for proto in tls1_3 tls1_2; do
    PROV_SAVED=$PROV PROV=
    OPENSSL_CONF=$T/openssl.cnf
    export OPENSSL_CONF
    tls "$proto: s_server -key srv-tpm.pem (a TSS2 PRIVATE KEY file; openssl.cnf), client the TPM file cli-tpm.pem" \
        $proto "$TPMKEYS/srv-tpm.pem" "$T/srv-tpm.crt" "$TPMKEYS/cli-tpm.pem" "$T/cli-tpm.crt" ok
    unset OPENSSL_CONF
    PROV=$PROV_SAVED
done

# ---- nginx, unmodified, with reference files --------------------------------------------
N=$T/nginx
mkdir -p "$N/tmp" "$N/logs"
P11_PORT=$(free_port)
TPM_PORT=$(free_port)
while [ "$TPM_PORT" = "$P11_PORT" ]; do TPM_PORT=$(free_port); done
TSS2_PORT=$(free_port)
while [ "$TSS2_PORT" = "$P11_PORT" ] || [ "$TSS2_PORT" = "$TPM_PORT" ]; do TSS2_PORT=$(free_port); done
user_line=
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$N/nginx.conf" <<NGINX
$user_line
daemon off;
master_process on;
worker_processes 2;
pid $N/nginx.pid;
error_log stderr notice;
env OPENSSL_CONF;
env KEYVAULT_CONF;
env KEYVAULT_HOME;
env SOFTHSM2_CONF;
env DBUS_SESSION_BUS_ADDRESS;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    ssl_client_certificate $T/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:$P11_PORT ssl;
        ssl_certificate $T/srv-p11.crt;
        ssl_certificate_key $T/srv-p11.ref;
        location / { return 200 "pkcs11 key, client \$ssl_client_s_dn\n"; }
    }
    server {
        listen 127.0.0.1:$TPM_PORT ssl;
        ssl_certificate $T/srv-tpm.crt;
        ssl_certificate_key $T/srv-tpm.ref;
        location / { return 200 "tpm key, client \$ssl_client_s_dn\n"; }
    }
    server {
        listen 127.0.0.1:$TSS2_PORT ssl;
        ssl_certificate $T/srv-tpm.crt;
        ssl_certificate_key $TPMKEYS/srv-tpm.pem;
        location / { return 200 "tss2 key file, client \$ssl_client_s_dn\n"; }
    }
}
NGINX
expect 0 "nginx -t accepts the configuration with reference files" -- \
    env OPENSSL_CONF="$T/openssl.cnf" nginx -p "$N" -c "$N/nginx.conf" -e stderr -t
OPENSSL_CONF=$T/openssl.cnf nginx -p "$N" -c "$N/nginx.conf" -e stderr >"$N/logs/out" 2>&1 &
NGINX_PID=$!
SERVER_PIDS="$SERVER_PIDS $NGINX_PID"
if wait_port "$P11_PORT" && wait_port "$TPM_PORT" && wait_port "$TSS2_PORT"; then ok "nginx listens"; else
    not_ok "nginx listens"; sed 's/^/    /' "$N/logs/out"; fi
# get PORT PROTO CERT KEY-FILE KEY-URI: a GET, the reply in $T/out. curl
# reads the key file (PEM_read_bio_PrivateKey: a reference file for a
# vault key). In a sanitized build curl, with ASan's runtime preloaded,
# hangs in its first setlocale: openssl s_client stands in there, with the
# key by its URI. PROTO: 1.2 or 1.3; CERT and KEY empty for none.
get() {
    port=$1 proto=$2 crt=$3 keyfile=$4 keyuri=$5
    if [ -z "$asan" ]; then
        set -- --tlsv"$proto" --tls-max "$proto"
        [ -n "$crt" ] && set -- "$@" --cert "$crt" --key "$keyfile"
        OPENSSL_CONF=$T/openssl.cnf timeout 30 curl -sS --max-time 20 --cacert "$T/ca.pem" "$@" \
            "https://localhost:$port/" >"$T/out" 2>&1
    else
        set -- -tls"$(echo "$proto" | tr . _)"
        [ -n "$crt" ] && set -- "$@" -cert "$crt" -key "$keyuri"
        # shellcheck disable=SC2086
        printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' | timeout 30 openssl s_client $PROV \
            -connect "127.0.0.1:$port" -servername localhost -CAfile "$T/ca.pem" -quiet "$@" \
            >"$T/out" 2>&1
    fi
}
# fetch DESC PORT WANT GET-ARGS...: a GET whose reply holds WANT
fetch() {
    desc=$1 want=$3
    get "$2" "$4" "$5" "$6" "$7"
    if grep -q "$want" "$T/out"; then ok "$desc"; else not_ok "$desc"; sed 's/^/    /' "$T/out"; fi
}
client="curl (its key a reference file)"
[ -n "$asan" ] && client="openssl s_client (sanitized build)"
for i in 1 2 3; do
    fetch "nginx on SoftHSM, $client with a pkcs11 client key, round $i" "$P11_PORT" \
        "pkcs11 key, client CN=cli-p11,O=kv" 1.3 "$T/cli-p11.crt" "$T/cli-p11.ref" keyvault:cli-p11
    fetch "nginx on the TPM, $client with a software client key, round $i" "$TPM_PORT" \
        "tpm key, client CN=cli-soft,O=kv" 1.3 "$T/cli-soft.crt" "$T/cli-soft.ref" keyvault:cli-soft
done
for proto in 1.3 1.2; do
    fetch "nginx with ssl_certificate_key a TSS2 PRIVATE KEY file, TLS $proto, $client" "$TSS2_PORT" \
        "tss2 key file, client CN=cli-soft,O=kv" $proto "$T/cli-soft.crt" "$T/cli-soft.ref" keyvault:cli-soft
done
fetch "nginx on the TPM, TLS 1.2, a plain client key" "$TPM_PORT" "tpm key, client CN=plain,O=kv" \
    1.2 "$T/plain.crt" "$T/plain.key" "$T/plain.key"
fetch "nginx on SoftHSM, TLS 1.2, a TPM client key" "$P11_PORT" "pkcs11 key, client CN=cli-tpm,O=kv" \
    1.2 "$T/cli-tpm.crt" "$T/cli-tpm.ref" keyvault:cli-tpm
fetch "nginx refuses a client without a certificate" "$P11_PORT" "No required SSL certificate was sent" \
    1.2 "" "" ""
fetch "nginx refuses a client with an untrusted certificate" "$TPM_PORT" "The SSL certificate error" \
    1.2 "$T/stranger.crt" "$T/plain.key" "$T/plain.key"
if grep -q "PRIVATE KEY" "$N/logs/out"; then not_ok "nginx's log shows no key"; else ok "nginx's log shows no key"; fi
stop_servers
finish
