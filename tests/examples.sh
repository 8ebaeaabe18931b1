#!/bin/sh
# examples.sh - the example programs run against a scratch store with no
# configuration file (defaults under $KEYVAULT_HOME).
. "$(dirname "$0")/lib.sh"
EX=${KV_BUILDDIR:-$(pwd)}/examples
export KEYVAULT_HOME="$T/home"
unset KEYVAULT_CONF

expect 0 "examples/sign creates a key, signs and verifies" -- "$EX/sign" ex-sign "hello"
contains "$T/out" "verified" "examples/sign reports the verification"
expect 0 "examples/sign reuses the key it made" -- "$EX/sign" ex-sign "again"
expect 0 "examples/ecdh: both sides derive the same key" -- "$EX/ecdh" ex-a ex-b
contains "$T/out" "same 32-byte session key" "examples/ecdh reports agreement"
expect 0 "examples/device-cert: a CA root, a request, a device certificate" -- "$EX/device-cert" ex-ca ex-dev dev.example.org
contains "$T/out" "issued to:  CN=ex-dev,O=Example Fleet" "device-cert names the device"
contains "$T/out" "issued by:  CN=Example Fleet Root,O=Example Fleet" "device-cert names the CA"
contains "$T/out" "alt name:   dns:dev.example.org" "device-cert shows the SAN"
contains "$T/out" "renewal not due yet" "a fresh certificate is not due for renewal"
expect 0 "the CA's root certificate" -- "$KEYVAULT" cert ex-ca -o "$T/ex-ca.pem"
expect 0 "the device's chain" -- "$KEYVAULT" cert ex-dev -o "$T/ex-dev.pem"
expect 0 "openssl verifies the device certificate against the CA root" -- openssl verify -CAfile "$T/ex-ca.pem" "$T/ex-dev.pem"
expect 0 "openssl: the device certificate is for the device key" -- sh -c "openssl x509 -in '$T/ex-dev.pem' -noout -pubkey >'$T/x.pub' && '$KEYVAULT' pubkey ex-dev -o '$T/k.pub' && cmp '$T/x.pub' '$T/k.pub'"
expect 0 "examples/device-cert again: a fresh certificate for the same keys" -- "$EX/device-cert" ex-ca ex-dev dev.example.org
expect 0 "the example keys are listed" -- "$KEYVAULT" list
contains "$T/out" "ex-sign" "the list names ex-sign"
finish
