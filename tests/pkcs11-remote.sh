#!/bin/sh
# pkcs11-remote.sh - a token shared through p11-kit's remoting: a
# `p11-kit server` on a unix socket serves the SoftHSM token, and
# libkeyvault uses it through p11-kit's client module with the same kind of
# configuration. p11-kit 0.24's RPC does not carry CKM_ECDH1_DERIVE: ECDH
# must fail saying the mechanism is not offered.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
CLIENT=$(find /usr/lib -name p11-kit-client.so -path '*pkcs11*' 2>/dev/null | head -n 1)
if [ -z "$CLIENT" ] || ! command -v p11-kit >/dev/null 2>&1; then
    echo "p11-kit client module or server not installed" >&2
    exit 1
fi
kv() { "$KEYVAULT" -c "$KV_P11_DIR/keyvault.conf" "$@"; }
printf 'signed over RPC\n' >"$T/msg"

expect 0 "a key on the token (direct)" -- kv keygen remote-key --backend pkcs11
expect 0 "a peer key (direct)" -- kv keygen remote-peer --backend pkcs11
kv pubkey remote-key -o "$T/remote.pub"
kv pubkey remote-peer -o "$T/peer.pub"

# the server, in daemon mode; its variables tell the client where it is
# (p11_server_start in lib.sh: it waits until the token is seen through it)
trap 'p11-kit server -k >/dev/null 2>&1; rm -rf "$T"' EXIT
if p11_server_start && [ -n "${P11_KIT_SERVER_ADDRESS:-}" ]; then ok "p11-kit server started"
else not_ok "p11-kit server started"; fi
cat >"$T/client.conf" <<CONF
[keyvault]
backends = pkcs11

[pkcs11]
module = $CLIENT
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE
CONF
rkv() { "$KEYVAULT" -c "$T/client.conf" "$@"; }
expect 0 "the remote token's keys are listed" -- rkv list
contains "$T/out" "remote-key" "list over RPC names remote-key"
expect 0 "sign over RPC" -- rkv sign remote-key -i "$T/msg" -o "$T/rpc.sig"
expect 0 "openssl verifies the RPC signature" -- openssl dgst -sha256 -verify "$T/remote.pub" -signature "$T/rpc.sig" "$T/msg"
expect 0 "sign by URI over RPC" -- rkv sign "pkcs11:token=$KV_P11_TOKEN;object=remote-key;type=private" -i "$T/msg" -o "$T/rpc2.sig"
expect 0 "openssl verifies that too" -- openssl dgst -sha256 -verify "$T/remote.pub" -signature "$T/rpc2.sig" "$T/msg"
expect 1 "ECDH over RPC is refused" -- rkv ecdh remote-key --peer "$T/peer.pub"
contains "$T/err" "CKM_ECDH1_DERIVE (ECDH) not offered by this token" "the error names the missing mechanism"
finish
