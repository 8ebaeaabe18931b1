#!/bin/sh
# store.sh - the key store's defences seen through the keyvault command:
# a file size limit is an error, not a signal; FIFOs in place of files fail
# at once; no home directory is an error asking for KEYVAULT_HOME; a
# world-readable passphrase file or a group-writable store is refused.
. "$(dirname "$0")/lib.sh"

soft_store 'store test passphrase'
printf 'message\n' >"$T/msg"
expect 0 "keygen" -- kv keygen k --type ec-p256

# a file size limit (ulimit -f) fails the write; SIGXFSZ would kill with 153
expect 1 "keygen under a file size limit fails cleanly" -- \
    sh -c 'ulimit -f 1 && exec "$0" "$@"' "$KEYVAULT" -c "$T/kv.conf" keygen big --type rsa-3072
contains "$T/err" "File too large" "the error says the file is too large"
contains "$T/err" "big.pem" "and names the file"
[ ! -e "$T/store/big.pem" ] && ok "no key file is left" || not_ok "no key file is left"
leftover=$(find "$T/store" -name '.big.*' | wc -l)
[ "$leftover" -eq 0 ] && ok "no temporary file is left" || not_ok "no temporary file is left ($leftover)"
expect 0 "the store still works" -- kv sign k -i "$T/msg" -o "$T/sig"

# FIFOs: the command returns at once with an error, never waits for a writer
mkfifo "$T/fifo.conf"
expect 1 "a FIFO as the configuration file" -- timeout 10 "$KEYVAULT" -c "$T/fifo.conf" list
contains "$T/err" "FIFO" "the error says it is a FIFO"
mkfifo "$T/store/f.pem"
expect 1 "a FIFO as a key file" -- timeout 10 "$KEYVAULT" -c "$T/kv.conf" sign f -i "$T/msg" -o "$T/x"
contains "$T/err" "not a regular file" "the error says it is not a regular file"
mv "$T/pass" "$T/pass.saved"
mkfifo "$T/pass"
expect 1 "a FIFO as the passphrase file" -- timeout 10 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "FIFO" "the error says it is a FIFO"
rm "$T/pass"
mv "$T/pass.saved" "$T/pass"

# a passphrase file others can read, a store others can write to
chmod 644 "$T/pass"
expect 1 "a world-readable passphrase file is refused" -- kv sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "$T/pass" "the error names the file"
contains "$T/err" "open to others" "and the problem"
if grep -q "store test passphrase" "$T/err"; then not_ok "the passphrase is not in the message"; else ok "the passphrase is not in the message"; fi
chmod 600 "$T/pass"
chmod 777 "$T/store"
expect 1 "a world-writable store is refused" -- kv list
contains "$T/err" "writable by others" "the error names the problem"
chmod 700 "$T/store"
expect 0 "and accepted once private again" -- kv sign k -i "$T/msg" -o "$T/sig"

# no home directory: an error asking for KEYVAULT_HOME, never /tmp
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && ! getent passwd 54321 >/dev/null; then
    chmod 755 "$T"
    printf '[keyvault]\nbackends = software\n' >"$T/homeless.conf"
    chmod 644 "$T/homeless.conf"
    expect 1 "no HOME and no passwd entry is an error" -- env -u HOME -u KEYVAULT_HOME \
        -u XDG_DATA_HOME setpriv --reuid 54321 --regid 54321 --clear-groups \
        "$KEYVAULT" -c "$T/homeless.conf" list
    contains "$T/err" "KEYVAULT_HOME" "the error asks for KEYVAULT_HOME"
    if grep -q "/tmp/.local" "$T/err" "$T/out"; then not_ok "no /tmp fallback"; else ok "no /tmp fallback"; fi
    chmod 700 "$T"
elif [ "$(id -u)" != 0 ]; then
    echo "SKIP: no HOME and no passwd entry is an error (needs root)"
elif ! command -v setpriv >/dev/null; then
    not_ok "no HOME and no passwd entry: setpriv (util-linux) is missing"
else
    echo "SKIP: no HOME and no passwd entry is an error (uid 54321 has a passwd entry here)"
fi
finish
