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
expect 0 "the example keys are listed" -- "$KEYVAULT" list
contains "$T/out" "ex-sign" "the list names ex-sign"
finish
