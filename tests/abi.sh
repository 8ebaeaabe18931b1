#!/bin/sh
# abi.sh - the shared library exports exactly the kv_* functions of the
# version script, each declared in keyvault.h and documented in docs/api/.
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-.}
SO=${KV_BUILDDIR:-.}/libkeyvault/.libs/libkeyvault.so

nm -D --defined-only "$SO" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort >"$T/exported"
sed -n 's/^ *\(kv_[a-z0-9_]*\);$/\1/p' "$SRC/libkeyvault/keyvault.map" | sort >"$T/mapped"
[ -s "$T/exported" ] && ok "libkeyvault.so exports functions" || not_ok "libkeyvault.so exports functions"
if grep -v '^kv_' "$T/exported" >"$T/stray"; then not_ok "only kv_ symbols exported: $(tr '\n' ' ' <"$T/stray")"; else ok "only kv_ symbols exported"; fi
if cmp -s "$T/exported" "$T/mapped"; then ok "exports match keyvault.map"; else
    not_ok "exports match keyvault.map"; diff "$T/mapped" "$T/exported"; fi
while read -r sym; do
    grep -q "[ *]$sym(" "$SRC/libkeyvault/keyvault.h" && ok "$sym declared in keyvault.h" || not_ok "$sym declared in keyvault.h"
    grep -q "\`$sym\`" "$SRC/docs/api/README.md" && ok "$sym has a doc page" || not_ok "$sym has a doc page"
done <"$T/mapped"
# Every public function that does work starts with KV_CALL_BEGIN (internal.h:
# a call leaves OpenSSL's error queue as it found it). These do no OpenSSL
# work: they free, name, or read the per-thread detail (kv_ctx_free's audit
# seal signs through kv_sign, which marks), and kv_provider_init is called by
# OpenSSL, which expects a provider to raise errors on the queue.
unmarked="kv_assurance_name kv_attestation_free kv_backend_code kv_cert_info_free kv_ctx_free
kv_errmsg kv_key_free kv_key_list_free kv_key_type_from_name kv_key_type_name
kv_key_version_list_free kv_policy_free kv_provider_init kv_sign_alg_from_name kv_sign_alg_name
kv_strerror kv_string_free kv_verdict_free kv_version kv_version_state_name"
while read -r sym; do
    case " $(echo $unmarked) " in *" $sym "*) continue ;; esac
    # the body: from the definition (at the start of a line) to the first "}" line
    body=$(awk -v f="$sym" '
        !inbody && $0 ~ "^[a-z].*[ *]" f "\\(" && $0 !~ /;$/ { want = 1 }
        want && /^\{/ { inbody = 1 }
        inbody { print }
        inbody && /^\}/ { exit }' "$SRC"/libkeyvault/*.c)
    case $body in
    "") not_ok "$sym: no definition found in libkeyvault/*.c" ;;
    *KV_CALL_BEGIN*) ok "$sym starts with KV_CALL_BEGIN" ;;
    *) not_ok "$sym starts with KV_CALL_BEGIN (or does no OpenSSL work: tests/abi.sh)" ;;
    esac
done <"$T/mapped"
for page in "$SRC"/docs/api/kv_*.md; do
    sym=$(basename "$page" .md)
    grep -qx "$sym" "$T/mapped" && ok "doc page $sym is a public function" || not_ok "doc page $sym is a public function"
done
finish
