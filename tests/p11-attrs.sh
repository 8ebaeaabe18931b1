#!/bin/sh
# p11-attrs.sh - a token that lies about attribute sizes (docs/hardening.md,
# "Hostile input costs"). tests/p11shim.c in front of SoftHSM rewrites
# C_GetAttributeValue answers ($KV_SHIM_ATTR): a CKA_KEY_TYPE shorter or
# longer than a CK_ULONG, and a CKA_VALUE, CKA_EC_POINT or CKA_MODULUS of
# 4 GiB. Each call must fail at once with an error naming the attribute and
# the token, never read past a buffer (the sanitized run catches an
# over-read), never allocate what the token asks for.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
B=${KV_BUILDDIR:-$(pwd)}
SHIM=$B/tests/.libs/p11shim.so
[ -f "$SHIM" ] || { echo "p11-attrs.sh: build tests/p11shim.la first"; exit 1; }
command -v timeout >/dev/null || { echo "p11-attrs.sh: timeout is missing"; exit 1; }
shim_conf "$SHIM" "$T/kv.conf"

expect 0 "an EC key" -- kv keygen ec --type ec-p256
expect 0 "an RSA key" -- kv keygen rsa --type rsa-2048
expect 0 "a certificate on the token" -- kv cert selfsign ec --subject "CN=attrs" -o "$T/ec.crt"
kv pubkey ec -o "$T/ec.pub" >/dev/null

# lie ATTR:len=N WHAT ARGS...: the CLI with that answer fails within 20 s,
# naming ATTR and the token
lie() {
    _a=$1 _d=$2; shift 2
    KV_SHIM_ATTR=$_a timeout -s KILL 20 "$KEYVAULT" -c "$T/kv.conf" "$@" >"$T/out" 2>"$T/err"
    _rc=$?
    _attr=${_a%%:*}
    if [ "$_rc" != 1 ]; then
        not_ok "$_d: exit $_rc, wanted 1"; sed 's/^/    /' "$T/err"
    elif grep -q "AddressSanitizer\|runtime error" "$T/err"; then
        not_ok "$_d: a sanitizer report"; sed 's/^/    /' "$T/err"
    elif ! grep -q "token '$KV_P11_TOKEN'.*$_attr" "$T/err"; then
        not_ok "$_d: the error does not name $_attr and the token"; sed 's/^/    /' "$T/err"
    else
        ok "$_d"
    fi
}
lie CKA_KEY_TYPE:len=4 "a 4-byte CKA_KEY_TYPE is refused" pubkey ec
lie CKA_KEY_TYPE:len=0 "an empty CKA_KEY_TYPE is refused" sign ec -i "$T/ec.pub" -o "$T/sig"
lie CKA_KEY_TYPE:len=16 "a 16-byte CKA_KEY_TYPE is refused" pubkey rsa
lie CKA_EC_POINT:len=4294967295 "a 4 GiB CKA_EC_POINT is refused" pubkey ec
lie CKA_MODULUS:len=4294967295 "a 4 GiB CKA_MODULUS is refused" pubkey rsa
lie CKA_MODULUS:len=4097 "a CKA_MODULUS of 4097 bytes is refused" pubkey rsa
lie CKA_VALUE:len=4294967295 "a 4 GiB certificate (CKA_VALUE) is refused" cert show ec
lie CKA_VALUE:len=65537 "a certificate of 64 KiB + 1 is refused" cert show ec
contains "$T/err" "of 65537 bytes (at most 65536)" "the error gives the size and the bound"
lie CKA_ID:len=4294967295 "a 4 GiB CKA_ID is refused" pubkey ec

# the same token, told the truth, still works
expect 0 "without lies the key opens" -- kv pubkey ec -o "$T/ec2.pub"
if cmp -s "$T/ec.pub" "$T/ec2.pub"; then ok "the same public key"; else not_ok "another public key"; fi
expect 0 "without lies the certificate reads" -- kv cert show ec
# a list's cost does not grow with the keys times the objects: kv_list_keys
# makes two searches (all private keys, all public keys), whatever the
# number of keys. It was
# two searches per key, each of which SoftHSM answers by reading every
# object: 514 keys took 96 s to list.
for i in 1 2 3 4 5 6 7 8; do kv keygen "many$i" --type ec-p256 >/dev/null; done
rm -f "$T/finds"
KV_SHIM_FAULTS=C_FindObjectsInit:slow=1ms KV_SHIM_FAULT_LOG=$T/finds \
    "$KEYVAULT" -c "$T/kv.conf" list >"$T/list" 2>"$T/err"
n=$(grep -c '^C_FindObjectsInit' "$T/finds")
keys=$(grep -c . "$T/list")
[ "$keys" = 10 ] && ok "list shows the 10 keys" || not_ok "list shows the 10 keys ($keys)"
# two for kv_list_keys, one per key for the CLI's version state (kv_key_versions)
[ "$n" -le 12 ] && ok "listing 10 keys takes $n searches" ||
    not_ok "listing 10 keys takes $n searches, wanted at most 12"
# a search that never ends ($KV_SHIM_FIND=endless): the list stops at
# 100,000 handles with an error naming the token and the bound, at once
# and without growing past that (about 800 KB of handles)
KV_SHIM_FIND=endless timeout -s KILL 60 "$KEYVAULT" -c "$T/kv.conf" list >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" = 1 ] && grep -q "token '$KV_P11_TOKEN' holds more than 100000 objects matching one search: libkeyvault reads at most 100000" "$T/err"; then
    ok "a search that never ends stops at 100,000 objects, naming the token"
else not_ok "a search that never ends: exit $rc"; sed 's/^/    /' "$T/err"; fi
finish
