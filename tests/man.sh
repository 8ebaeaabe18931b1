#!/bin/sh
# man.sh - `make install` installs the man pages and `man` finds them:
# keyvault(1) with every subcommand of the CLI, keyvault.conf(5), libkeyvault(3)
# and a page for every exported function (its own or a .so link).
. "$(dirname "$0")/lib.sh"
SRC=${KV_SRCDIR:-.}
B=${KV_BUILDDIR:-.}

# Skipped when configure was told not to build them (--disable-man, as
# config.status --config reports it), and in a sanitized build: the pages are
# the same in every build, and this test runs no library code for a
# sanitizer to check (tests/run-suite.sh checks them in distcheck's plain
# build). Otherwise lowdown (to build) and man-db (to read) are required:
# tests/install-deps.sh installs both.
case " $("$B/config.status" --config | tr -d "'") " in
*" --disable-man "* | *" --enable-man=no "*)
    echo "SKIP: man pages disabled (configure --disable-man)"
    exit 77 ;;
*" --with-sanitizer="*)
    echo "SKIP: a sanitized build (configure --with-sanitizer): the man pages are checked in a plain one"
    exit 77 ;;
esac
for tool in lowdown man lexgrog; do
    command -v "$tool" >/dev/null 2>&1 ||
        { not_ok "$tool is installed (tests/install-deps.sh installs lowdown and man-db)"; finish; exit 1; }
done
grep -q '^all-local: man-pages' "$B/Makefile" ||
    { not_ok "the build makes man pages (configure did not find lowdown: install it and run configure again, or configure --disable-man)"; finish; exit 1; }

expect 0 "make install DESTDIR=..." -- env -u MAKEFLAGS -u MFLAGS make -s -C "$B" install DESTDIR="$T/dest"
man1=$(find "$T/dest" -path '*/man1/keyvault.1' | head -n 1)
[ -n "$man1" ] && ok "keyvault.1 installed" || { not_ok "keyvault.1 installed"; finish; exit 1; }
MANDIR=$(dirname "$(dirname "$man1")")
chmod -R a+rX "$T" # man-db may read as its own user

# page SECTION NAME: render through the man search path, as a user would; no
# errors (a table cell narrower than a long word is only a layout warning)
page() {
    MANPATH=$MANDIR MANWIDTH=100 man -P cat "$1" "$2" 2>"$T/man.err" >"$T/page.$2.$1" &&
        ! grep -v 'warning.*cannot adjust line' "$T/man.err" | grep -q .
}

if page 1 keyvault; then ok "man keyvault renders"; else not_ok "man keyvault renders"; cat "$T/man.err"; fi
# every command in the CLI's table has its subsection
sed -n '/^static const struct command commands\[\] = {/,/^};/p' "$SRC/tools/keyvault.c" |
    grep -o '{ "[a-z-]*", cmd_[a-z_]*' | sed 's/{ "\([a-z-]*\)".*/\1/' >"$T/commands"
[ "$(wc -l <"$T/commands")" -ge 10 ] && ok "found the CLI's commands" || not_ok "found the CLI's commands"
while read -r c; do
    grep -q "^   $c\$" "$T/page.keyvault.1" && ok "keyvault(1) has '$c'" || not_ok "keyvault(1) has '$c'"
    grep -q "usage: keyvault \[-c CONF\] $c" "$T/page.keyvault.1" && ok "keyvault(1) shows '$c' usage" ||
        not_ok "keyvault(1) shows '$c' usage"
done <"$T/commands"
contains "$T/page.keyvault.1" "keyvault --version" "keyvault(1) names --version"

if page 5 keyvault.conf; then ok "man 5 keyvault.conf renders"; else not_ok "man 5 keyvault.conf renders"; cat "$T/man.err"; fi
contains "$T/page.keyvault.conf.5" "require_hardware" "keyvault.conf(5) lists the keys"
contains "$T/page.keyvault.conf.5" "did you mean" "keyvault.conf(5) says typos are refused"

if page 3 libkeyvault; then ok "man 3 libkeyvault renders"; else not_ok "man 3 libkeyvault renders"; cat "$T/man.err"; fi
sed -n 's/^ *\(kv_[a-z0-9_]*\);$/\1/p' "$SRC/libkeyvault/keyvault.map" >"$T/functions"
[ "$(wc -l <"$T/functions")" -ge 30 ] && ok "found the exported functions" || not_ok "found the exported functions"
while read -r f; do
    if page 3 "$f" && grep -q "^NAME" "$T/page.$f.3" && grep -q "$f" "$T/page.$f.3"; then
        ok "man 3 $f"
    else
        not_ok "man 3 $f"; cat "$T/man.err"
    fi
    grep -q "$f(3)" "$T/page.libkeyvault.3" && ok "libkeyvault(3) lists $f" || not_ok "libkeyvault(3) lists $f"
done <"$T/functions"

# lexgrog (mandb, apropos) reads each page's NAME line
for p in "$MANDIR"/man*/*; do
    head -n 1 "$p" | grep -q '^\.so ' && continue
    lexgrog "$p" >/dev/null 2>&1 || not_ok "lexgrog reads the NAME of $(basename "$p")"
done
ok "lexgrog reads every page's NAME"

expect 0 "make uninstall DESTDIR=..." -- env -u MAKEFLAGS -u MFLAGS make -s -C "$B" uninstall DESTDIR="$T/dest"
left=$(find "$T/dest" -type f | wc -l)
[ "$left" -eq 0 ] && ok "uninstall removes every page" || { not_ok "uninstall removes every page"; find "$T/dest" -type f; }
finish
