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
for page in "$SRC"/docs/api/kv_*.md; do
    sym=$(basename "$page" .md)
    grep -qx "$sym" "$T/mapped" && ok "doc page $sym is a public function" || not_ok "doc page $sym is a public function"
done
finish
