#!/bin/sh
# mkman.sh - build libkeyvault's man pages from their one source each:
#   keyvault(1)       the CLI's own --help texts (`keyvault --help`, `keyvault CMD --help`)
#   keyvault.conf(5)  docs/config.md
#   libkeyvault(3)    docs/api/README.md (the list of public functions)
#   kv_*(3)           docs/api/kv_*.md, and a .so page for each function that
#                     shares another's page (per docs/api/README.md)
# Markdown becomes roff through lowdown (Debian package lowdown). A page is
# rewritten only when its source is newer, so `make` can run this every time.
#
# usage: mkman.sh SRCDIR OUTDIR KEYVAULT-CLI VERSION
set -eu
src=$1 out=$2 cli=$3 version=$4
LOWDOWN=${LOWDOWN:-lowdown}
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$src/docs/api/README.md")}" +%Y-%m-%d)
mkdir -p "$out/man1" "$out/man3" "$out/man5"

# newer OUT SRC...: whether OUT is missing or older than a SRC (or this script)
newer() {
    o=$1; shift
    [ -f "$o" ] || return 0
    for s in "$@" "$0"; do [ "$s" -nt "$o" ] && return 0; done
    return 1
}

# roff NAME SECTION OUT: markdown on stdin -> a man page
roff() {
    "$LOWDOWN" -s -Tman -M "title=$1" -M "section=$2" -M "date=$date" \
        -M "source=libkeyvault $version" -M "volume=libkeyvault" -o "$3.tmp"
    mv "$3.tmp" "$3"
}

# The first sentence of a page's first paragraph after its code block, for NAME.
summary() {
    awk '/^```/ { fence = !fence; seen = 1; next }
         seen && !fence && NF && !/^#/ { p = p " " $0; got = 1; next }
         got && !NF { exit }
         END { print p }' "$1" |
        sed -e 's/`//g' -e 's/\[\([^]]*\)\]([^)]*)/\1/g' -e 's/^ *//' \
            -e 's/[:;].*//' -e 's/\. .*//' -e 's/\.$//' | md_escape
}

# Plain text -> markdown that stays plain (kv_key_open has no emphasis).
md_escape() {
    sed -e 's/[\\_*]/\\&/g'
}

# "## Errors" -> "# ERRORS": top-level man sections; the first "# title" line is dropped.
sections() {
    awk 'NR == 1 && /^# / { next }
         /^```/ { fence = !fence }
         !fence && /^## / { print "# " toupper(substr($0, 4)); next }
         { print }' "$1"
}

# ---- libkeyvault(3) and one page per function --------------------------------
index="$src/docs/api/README.md"
# "| `kv_x` | [kv_page.md](kv_page.md) |" -> "kv_x kv_page"
sed -n 's/^| `\(kv_[a-z0-9_]*\)` | \[\(kv_[a-z0-9_]*\)\.md\].*/\1 \2/p' "$index" >"$out/.functions"

while read -r fn page; do
    md="$src/docs/api/$page.md"
    if [ "$fn" != "$page" ]; then
        printf '.so man3/%s.3\n' "$page" >"$out/man3/$fn.3"
        continue
    fi
    newer "$out/man3/$fn.3" "$md" "$index" || continue
    names=$(awk -v p="$page" '$2 == p { printf "%s%s", sep, $1; sep = ", " }' "$out/.functions" |
        md_escape)
    {
        printf '# NAME\n\n%s - %s\n\n# SYNOPSIS\n' "$names" "$(summary "$md")"
        sections "$md" | awk '{ print } /^```/ && ++n == 2 { print "\n# DESCRIPTION" }'
        printf '\n# SEE ALSO\n\nlibkeyvault(3)\n'
    } | roff "$fn" 3 "$out/man3/$fn.3"
done <"$out/.functions"

if newer "$out/man3/libkeyvault.3" "$index" "$src/README.md"; then
    {
        printf '# NAME\n\nlibkeyvault - keys in PKCS#11 tokens, a TPM 2.0 or an encrypted software store\n\n'
        printf '# SYNOPSIS\n\n```\n#include <keyvault.h>\n\ncc ... $(pkg-config --cflags --libs libkeyvault)\n```\n\n'
        printf '# DESCRIPTION\n\n'
        awk 'NR > 1 && NF { print; got = 1; next } got { exit }' "$src/README.md"
        printf '\n# FUNCTIONS\n\n'
        while read -r fn page; do
            printf -- '- %s(3): %s\n' "$(echo "$fn" | md_escape)" "$(summary "$src/docs/api/$page.md")"
        done <"$out/.functions"
        printf '\n# SEE ALSO\n\nkeyvault(1), keyvault.conf(5)\n'
    } | roff libkeyvault 3 "$out/man3/libkeyvault.3"
fi

# ---- keyvault.conf(5) --------------------------------------------------------
if newer "$out/man5/keyvault.conf.5" "$src/docs/config.md"; then
    {
        printf '# NAME\n\nkeyvault.conf - the libkeyvault configuration file\n\n# DESCRIPTION\n'
        awk 'NR == 1 && /^# / { next } { print }' "$src/docs/config.md"
        printf '\n# FILES\n\n/etc/keyvault/keyvault.conf\n\n# SEE ALSO\n\nkeyvault(1), libkeyvault(3)\n'
    } | roff keyvault.conf 5 "$out/man5/keyvault.conf.5"
fi

# ---- keyvault(1) ---------------------------------------------------------------
if newer "$out/man1/keyvault.1" "$cli"; then
    "$cli" --help >"$out/.help"
    commands=$(sed -n '/^commands:/,/^$/p' "$out/.help" | awk 'NR > 1 && NF { print $1 }')
    [ -n "$commands" ] || { echo "mkman: no commands in '$cli --help'" >&2; exit 1; }
    {
        printf '# NAME\n\nkeyvault - keys in PKCS#11 tokens, a TPM 2.0 or an encrypted software store\n\n'
        printf '# SYNOPSIS\n\n```\nkeyvault [-c CONF] COMMAND [ARGS]\nkeyvault COMMAND --help\nkeyvault --version\n```\n\n'
        printf '# DESCRIPTION\n\n```\n'
        cat "$out/.help"
        printf '```\n\n# COMMANDS\n'
        for c in $commands; do
            printf '\n## %s\n\n```\n' "$c"
            "$cli" "$c" --help
            printf '```\n'
        done
        printf '\n# EXIT STATUS\n\n0: success; 1: the operation failed (the message names what failed);'
        printf ' 2: the command line is wrong.\n\n'
        printf '# ENVIRONMENT\n\nKEYVAULT_CONF, KEYVAULT_HOME, KEYVAULT_TCTI: see keyvault.conf(5).\n\n'
        printf '# FILES\n\n/etc/keyvault/keyvault.conf\n\n# SEE ALSO\n\nkeyvault.conf(5), libkeyvault(3)\n'
    } | roff keyvault 1 "$out/man1/keyvault.1"
fi
rm -f "$out/.help"
