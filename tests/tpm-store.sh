#!/bin/sh
# tpm-store.sh - the TPM backend's key files on a fresh swtpm: bound to
# their names and public keys by metadata under the store's secret
# (KEYS/.store-secret), so a swapped or linked key file is refused before
# it reaches the TPM; FIFOs fail at once; the store must be private.
# Damaged metadata lists the same way in the TPM and software stores.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
kv() { "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" "$@"; }
K=$KV_TPM_DIR/keys
export TPM2OPENSSL_TCTI="$KV_TPM_TCTI"
printf 'message\n' >"$T/msg"

expect 0 "keygen a on the TPM" -- kv keygen a --type ec-p256 --backend tpm
expect 0 "keygen b on the TPM" -- kv keygen b --type ec-p256 --backend tpm
mode=$(stat -c %a "$K/.store-secret" 2>/dev/null)
[ "$mode" = 600 ] && ok "the store secret is 0600" || not_ok "the store secret is 0600 (got '$mode')"
# the metadata records the public key's SHA-256, as tpm2-openssl and openssl see it
fpr=$(sed -n 's/.*"public_key_sha256": "\([0-9A-F]*\)".*/\1/p' "$K/a.json")
theirs=$(openssl pkey -provider tpm2 -provider default -in "$K/a.pem" -pubout -outform DER |
         openssl dgst -sha256 -r | cut -c1-64 | tr a-f A-F)
[ -n "$fpr" ] && [ "$fpr" = "$theirs" ] && ok "the fingerprint is the key file's public key" ||
    not_ok "the fingerprint is the key file's public key ('$fpr' vs '$theirs')"
grep -q '"mac": "[0-9A-F]\{64\}"' "$K/a.json" && ok "the metadata carries a MAC" ||
    not_ok "the metadata carries a MAC"
expect 0 "sign with a" -- kv sign a -i "$T/msg" -o "$T/sig"

swap() { mv "$1" "$T/swap.tmp" && mv "$2" "$1" && mv "$T/swap.tmp" "$2"; }
swap "$K/a.pem" "$K/b.pem"
expect 1 "a swapped TPM key file is refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "key 'a'" "the error names the key"
contains "$T/err" "another public key" "and says the key file holds another key"
expect 1 "by its URI too" -- kv sign "tpm2:file=$K/a.pem" -i "$T/msg" -o "$T/x"
swap "$K/a.json" "$K/b.json"
expect 1 "key files and metadata swapped together are refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "belongs to key 'b'" "the error says whose metadata it is"
swap "$K/a.json" "$K/b.json"
swap "$K/a.pem" "$K/b.pem"
expect 0 "swapped back, a signs again" -- kv sign a -i "$T/msg" -o "$T/sig"

mv "$K/a.pem" "$T/a.saved"
ln -s "$K/b.pem" "$K/a.pem"
expect 1 "a symbolic link to another TPM key is refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "symbolic link" "the error says it is a link"
rm "$K/a.pem"
ln "$K/b.pem" "$K/a.pem"
expect 1 "a hard link to another TPM key is refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "key 'a'" "the error names the key"
rm "$K/a.pem"
mkfifo "$K/a.pem"
expect 1 "a FIFO as a TPM key file fails at once" -- timeout 60 "$KEYVAULT" -c "$KV_TPM_DIR/keyvault.conf" sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "not a regular file" "the error says it is not a regular file"
rm "$K/a.pem"
mv "$T/a.saved" "$K/a.pem"

# the store secret: missing, or readable by others
mv "$K/.store-secret" "$T/secret.saved"
expect 1 "without the store secret the metadata cannot be checked" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" ".store-secret" "the error names the secret file"
mv "$T/secret.saved" "$K/.store-secret"
chmod 644 "$K/.store-secret"
expect 1 "a store secret others can read is refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "open to others" "the error says why"
chmod 600 "$K/.store-secret"
chmod 770 "$K"
expect 1 "a group-writable TPM key directory is refused" -- kv sign a -i "$T/msg" -o "$T/x"
contains "$T/err" "writable by its group" "the error says why"
chmod 700 "$K"
expect 0 "all restored, a signs" -- kv sign a -i "$T/msg" -o "$T/sig"
expect 0 "pubkey a" -- kv pubkey a -o "$T/a.pub"
expect 0 "openssl verifies the signature" -- openssl dgst -sha256 -verify "$T/a.pub" -signature "$T/sig" "$T/msg"

# one rule for damaged metadata in both file stores: listed as unknown
expect 0 "keygen s in the software store" -- kv keygen s --type ec-p256 --backend software
printf '{ damaged' >"$KV_TPM_DIR/keys/b.json"
printf '{ damaged' >"$KV_TPM_DIR/soft/s.json"
expect 0 "list with damaged metadata" -- kv list
grep -q '^b  *v1  *current  *unknown  *tpm ' "$T/out" && ok "the TPM key lists as unknown" || not_ok "the TPM key lists as unknown"
grep -q '^s  *v1  *current  *unknown  *software ' "$T/out" && ok "the software key lists as unknown" || not_ok "the software key lists as unknown"
expect 1 "opening it reports the damage" -- kv sign b -i "$T/msg" -o "$T/x"
contains "$T/err" "b.json" "the error names the metadata file"
finish
